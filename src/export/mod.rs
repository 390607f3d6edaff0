//! The audit log export: HTTP streaming of NDJSON or CSV, its live viewer, and its
//! command-line consumer.
//!
//! - `server` (ssr): `GET /api/audit/export` and `GET /api/audit/count`.
//! - `cache` (ssr): closed stretches of the log kept as NDJSON files for the next export.
//! - `format` (ssr): the row writer both the server and the CLI use.
//! - `seed` (ssr): `tidings seed --audit-rows N`.
//! - `cli` (ssr): `tidings export`, the command-line consumer.
//! - `view` and `client`: the `/export` page and its fetch stream (browser).
//!
//! The wire types and the NDJSON line decoder are in `protocol`.
//! Tests: unit tests in each file; `tests/it/export.rs`; `end2end/tests/export.spec.ts`.

#[cfg(feature = "ssr")]
pub mod cache;
mod client;
#[cfg(feature = "ssr")]
pub mod format;
#[cfg(feature = "ssr")]
pub mod seed;
#[cfg(feature = "ssr")]
mod server;
#[cfg(feature = "ssr")]
pub mod settings;
#[cfg(feature = "ssr")]
pub mod store;
mod view;

#[cfg(feature = "ssr")]
pub use server::{fuzz_query, router, start, Exports};
pub use view::ExportPage;
