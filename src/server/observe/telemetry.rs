//! Structured logs with `tracing`: `RUST_LOG` picks the console's levels (default
//! [`CONSOLE_DEFAULT`]: `info`, with sqlx's per-query lines only at `warn`), and
//! `TIDINGS_LOG_FORMAT=json` switches it to one JSON object per line for log collectors.
//!
//! The admin's log tail (`server::observe::logs`) has a filter of its own, `TIDINGS_LOG_TAIL` (same
//! syntax, default [`TAIL_DEFAULT`]): a console kept quiet at `warn` still leaves the dashboard the
//! server's requests and events.

use tracing_subscriber::{fmt, layer::SubscriberExt, util::SubscriberInitExt, EnvFilter, Layer};

use crate::server::observe::logs::RingLayer;

/// What the console shows unless `RUST_LOG` says otherwise.
const CONSOLE_DEFAULT: &str = "info,sqlx=warn,tower_http=info";
/// What the log tail keeps unless `TIDINGS_LOG_TAIL` says otherwise.
const TAIL_DEFAULT: &str = "info,sqlx=warn";

/// Installs the global subscriber once; later calls do nothing (tests call it freely).
pub fn init() {
    let console_filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(CONSOLE_DEFAULT));
    let tail_filter = EnvFilter::try_from_env("TIDINGS_LOG_TAIL")
        .unwrap_or_else(|_| EnvFilter::new(TAIL_DEFAULT));
    let json = std::env::var("TIDINGS_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let console = if json {
        fmt::layer().with_target(true).json().boxed()
    } else {
        fmt::layer().with_target(true).boxed()
    };
    let _ = tracing_subscriber::registry()
        .with(console.with_filter(console_filter))
        .with(RingLayer.with_filter(tail_filter))
        .try_init();
}
