//! Structured logs with `tracing`: `RUST_LOG` picks levels (default `info`), and
//! `TIDINGS_LOG_FORMAT=json` switches to one JSON object per line for log collectors. Every
//! record that passes the filter is also kept in the log tail's ring (`server::logs`).

use tracing_subscriber::{fmt, layer::SubscriberExt, util::SubscriberInitExt, EnvFilter, Layer};

use super::logs::RingLayer;

/// Installs the global subscriber once; later calls do nothing (tests call it freely).
pub fn init() {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=info"));
    let json = std::env::var("TIDINGS_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let console = if json {
        fmt::layer().with_target(true).json().boxed()
    } else {
        fmt::layer().with_target(true).boxed()
    };
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(console)
        .with(RingLayer)
        .try_init();
}
