//! Watching the server run: logging, the log ring behind the admin tail, live metrics,
//! Prometheus, health.

pub mod health;
pub mod logs;
pub mod metrics;
pub mod prometheus;
pub mod telemetry;
