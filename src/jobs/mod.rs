//! Durable jobs watched over Server-Sent Events (issue 4): the queue and its workers, the
//! contract's Jobs routes, the `/jobs` page with its progress bar, and polling beside SSE.
//!
//! - `runner` (ssr): workers, the event writer (stored, then published), the demo job.
//! - `server` (ssr): `POST/GET /api/jobs`, `GET /api/jobs/{id}` (JSON + ETag, or SSE),
//!   `POST /api/jobs/{id}/cancel`, `GET /api/jobs/{id}/events`.
//! - `import` (ssr): the `import` job kind.
//!
//! The SSE encoder is `server::sse`, the bus `server::bus`, the storage
//! `server::storage::jobs`, the wire types `protocol::jobs`.
//! Tests: unit tests in each file; `tests/jobs.rs`.
#[cfg(feature = "ssr")]
mod import;
#[cfg(feature = "ssr")]
pub mod runner;
#[cfg(feature = "ssr")]
mod server;

#[cfg(feature = "ssr")]
pub use server::router;
