//! Structured logs with `tracing`: `RUST_LOG` picks levels (default `info`), and
//! `TIDINGS_LOG_FORMAT=json` switches to one JSON object per line for log collectors.

use tracing_subscriber::{fmt, EnvFilter};

/// Installs the global subscriber once; later calls do nothing (tests call it freely).
pub fn init() {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=info"));
    let json = std::env::var("TIDINGS_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let builder = fmt().with_env_filter(filter).with_target(true);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
