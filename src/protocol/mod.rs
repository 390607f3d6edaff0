//! Wire types: every JSON shape that crosses the network, defined once.
//!
//! The server (axum handlers), the WASM client (hydrated pages) and the command-line
//! client all serialize and parse these same types, so the interface (docs/interface.md)
//! cannot drift between them. This module builds for `wasm32` and native alike: no leptos,
//! axum or tokio here, no `cfg` (but the test-only `Arbitrary` derives of the property
//! tests), fixed-size integers only (the Leptos book warns against `usize` on the wire),
//! camelCase field names as the interface has them.
//!
//! Test with `cargo test --features ssr protocol` (round trips against the documented JSON).

pub mod ai;
pub mod assistant;
pub mod audit;
pub mod auth;
pub mod chat;
pub mod csv;
pub mod error;
pub mod export_read;
pub mod jobs;
pub mod keys;
pub mod metrics;
pub mod ndjson;

pub use audit::{
    AuditRow, AuditRowRef, ExportCount, ExportFormat, ExportLine, ExportLineRef, ExportQuery,
    ExportTrailer,
};
pub use auth::{AuthRequest, Role, StreamToken, UserEnvelope, UserView};
pub use error::ErrorBody;
