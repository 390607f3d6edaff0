//! Server infrastructure that knows no feature, in a few rooms:
//! - [`storage`]: the database (connecting, checkpoints, migrations per engine), accounts and
//!   sessions, audit writes. Each feature keeps its own queries in its `store.rs`.
//! - [`access`]: who is asking (sessions, stream tokens, the signing secret), sliding-window
//!   limits, and the registry of live streams per session and user.
//! - [`edge`]: the HTTP server and its connection limits, trusted proxies, the host and origin
//!   checks, security headers, the body limit.
//! - [`fanout`]: the bus (in process, or across instances through Redis), the reorderer, the
//!   SSE encoder, WebSocket plumbing.
//! - [`observe`]: logging, the log ring behind the admin's tail, live metrics, health.
//! - Beside them: [`state`] (what every handler shares), [`config`] (the shared settings and
//!   the one environment loader), [`error`], [`clock`], [`random`], [`shutdown`].
//!
//! Features build on these pieces and meet only through them and `protocol`; nothing here
//! imports a feature. See docs/architecture.md. Unit tests live beside each piece (`cargo test
//! --features ssr server::`); `tests/it/` starts the whole server on `127.0.0.1:0`.

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
