//! The audit log export (issue 3): HTTP streaming of NDJSON or CSV, its viewer, its
//! command-line consumer. So far: the seeding command that fills the log for demos and
//! benchmarks. The wire types and the NDJSON line decoder are in `protocol`.
//!
//! Tests: `seed` unit tests below; `tests/binary.rs` runs `tidings seed` for real.

#[cfg(feature = "ssr")]
pub mod seed;
