//! Server infrastructure that knows no feature: configuration, state, storage, errors,
//! identity (sessions and stream tokens), the edge of every request (trusted proxies, the
//! host and origin checks, security headers), the HTTP server itself, live connections,
//! shutdown, health, logging.
//!
//! Features (`auth`, and later `export`, `jobs`, `chat`) build on these pieces and meet only
//! through them and `protocol`. Unit tests live beside each piece (`cargo test --features ssr
//! server::`); `tests/` starts the whole server on `127.0.0.1:0`.

pub mod access;
pub mod clock;
pub mod config;
pub mod edge;
pub mod error;
pub mod fanout;
pub mod observe;
pub mod random;
pub mod shutdown;
pub mod state;
pub mod storage;

pub use access::identity::{CurrentUser, StreamUser};
pub use config::Config;
pub use error::{ApiError, ApiJson};
pub use shutdown::Shutdown;
pub use state::AppState;
