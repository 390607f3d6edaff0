//! Server infrastructure that knows no feature: configuration, state, storage, errors,
//! identity (sessions and stream tokens), the edge of every request (trusted proxies, the
//! host and origin checks, security headers), the HTTP server itself, live connections,
//! shutdown, health, logging.
//!
//! Features (`auth`, and later `export`, `jobs`, `chat`) build on these pieces and meet only
//! through them and `protocol`. Unit tests live beside each piece (`cargo test --features ssr
//! server::`); `tests/` starts the whole server on `127.0.0.1:0`.

pub mod body_limit;
pub mod bus;
pub mod clock;
pub mod config;
pub mod error;
pub mod forwarded;
pub mod headers;
pub mod health;
pub mod host;
pub mod http;
pub mod identity;
pub mod limiter;
pub mod logs;
pub mod metrics;
pub mod origin;
pub mod redis_bus;
pub mod reorder;
pub mod retry;
pub mod secret;
pub mod shutdown;
pub mod sse;
pub mod state;
pub mod storage;
pub mod streams;
pub mod telemetry;
pub mod token;
pub mod ws;

pub use config::Config;
pub use error::{ApiError, ApiJson};
pub use identity::{CurrentUser, StreamUser};
pub use shutdown::Shutdown;
pub use state::AppState;
