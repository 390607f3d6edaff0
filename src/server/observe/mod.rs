//! Watching the server run: logging, the log ring behind the admin tail, live metrics, health.

pub mod health;
pub mod logs;
pub mod metrics;
pub mod telemetry;
