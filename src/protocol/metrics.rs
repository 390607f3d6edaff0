//! The live dashboard's two streams (docs/interface.md, "Server-Sent Events"): the `metrics` event sent every
//! second by `GET /api/metrics/events`, and the `log` events of the admin's log tail
//! (`GET /api/logs/events`), with the level filter both take.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// SSE event name of a metrics sample.
pub const METRICS_EVENT: &str = "metrics";
/// SSE event name of a log record.
pub const LOG_EVENT: &str = "log";
/// SSE event name sent before a replay that starts after records the ring no longer holds.
pub const LOG_GAP_EVENT: &str = "gap";

/// One second of the server, as measured (documented fields first, then Tidings' own).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metrics {
    /// Connections open now, per transport.
    pub connections: Connections,
    /// Chat messages and notifications published per second, over the last interval.
    pub messages_per_second: f64,
    /// Jobs waiting and running now (in the database: every instance's).
    pub jobs: JobCounts,
    /// Audit rows sent by exports since the server started.
    pub rows_exported: u64,
    /// The server process's resident memory.
    pub rss_bytes: u64,
    /// When the sample was taken (RFC 3339 UTC).
    pub at: String,
    /// Export rows sent per second, over the last interval.
    #[serde(default)]
    pub rows_exported_per_second: f64,
    /// Slow clients since the server started.
    #[serde(default)]
    pub slow_clients: SlowClients,
    /// Seconds since the server started.
    #[serde(default)]
    pub uptime_seconds: u64,
}

/// Connections open now, per transport.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Connections {
    /// WebSockets (chat, and their notifications).
    pub websocket: u64,
    /// Server-Sent Event streams (jobs, rooms, notifications, these metrics, the log tail).
    pub sse: u64,
    /// HTTP streaming responses: audit exports being written.
    pub streams: u64,
}

/// Jobs by state, now.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobCounts {
    pub queued: u64,
    pub running: u64,
}

/// What happened to clients that could not keep up, since the server started.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlowClients {
    /// Messages dropped from a slow client's queue (each then read back from history).
    pub queue_drops: u64,
    /// Connections closed because they could not take their messages in time.
    pub disconnects: u64,
}

/// How severe a log record is, least first (so `>=` means "at least as severe").
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Trace,
    Debug,
    #[default]
    Info,
    Warn,
    Error,
}

impl LogLevel {
    /// Every level, least severe first.
    pub const ALL: [LogLevel; 5] = [
        LogLevel::Trace,
        LogLevel::Debug,
        LogLevel::Info,
        LogLevel::Warn,
        LogLevel::Error,
    ];

    /// The level's name on the wire and in `?level=`.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }

    /// The level a `?level=` value names (any case), or `None`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|l| l.as_str().eq_ignore_ascii_case(name.trim()))
    }
}

/// One record of the server's own log.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogRecord {
    /// Rises by one per record since the server started (the SSE `id`).
    pub id: u64,
    pub level: LogLevel,
    /// Where it came from (a module path such as `tidings::chat::hub`).
    pub target: String,
    pub message: String,
    /// The record's other fields, as text, secrets replaced by `[redacted]`.
    pub fields: BTreeMap<String, String>,
    /// When it was logged (RFC 3339 UTC).
    pub at: String,
}

/// The `ready` event that opens a log tail: how far the log goes, the level sent, and the
/// log's epoch (when the server process started, ms; ids start again at 1 with each one).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogReady {
    pub last_id: u64,
    pub level: LogLevel,
    pub epoch: i64,
}

/// SSE event name of a [`LogReady`].
pub const LOG_READY_EVENT: &str = "ready";

/// Sent as `gap` before a replay when records after `afterId` are no longer kept: the
/// replay starts at `firstAvailableId`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogGap {
    pub after_id: u64,
    pub first_available_id: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_carry_the_documented_fields() {
        let m = Metrics {
            connections: Connections {
                websocket: 3,
                sse: 2,
                streams: 1,
            },
            messages_per_second: 12.5,
            jobs: JobCounts {
                queued: 4,
                running: 1,
            },
            rows_exported: 1000,
            rss_bytes: 1 << 20,
            at: "2026-11-23T10:00:00.000Z".into(),
            ..Metrics::default()
        };
        let v = serde_json::to_value(&m).unwrap();
        for path in [
            "/connections/websocket",
            "/connections/sse",
            "/connections/streams",
            "/messagesPerSecond",
            "/jobs/queued",
            "/jobs/running",
            "/rowsExported",
            "/rssBytes",
            "/at",
        ] {
            assert!(v.pointer(path).is_some(), "{path} missing in {v}");
        }
        assert_eq!(v["connections"]["websocket"], 3);
        let back: Metrics = serde_json::from_value(v).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn levels_order_by_severity_and_parse_by_name() {
        assert!(LogLevel::Error > LogLevel::Warn && LogLevel::Warn > LogLevel::Info);
        assert_eq!(LogLevel::parse("WARN"), Some(LogLevel::Warn));
        assert_eq!(LogLevel::parse("verbose"), None);
        assert_eq!(
            serde_json::to_string(&LogLevel::Debug).unwrap(),
            "\"debug\""
        );
    }
}
