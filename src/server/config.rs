//! Configuration from the environment (and a `.env` file, read by `main`).
//!
//! Every variable the contract names is read here and nowhere else, so the rest of the
//! server takes a `Config` and tests build one by hand (`Config::for_tests`).

use std::{collections::HashSet, time::Duration};

/// Where SQLite lives when `DATABASE_URL` is unset.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://data/tidings.db?mode=rwc";

/// Longest session or token lifetime accepted: one year, in seconds.
pub const MAX_TTL_SECS: u64 = 365 * 24 * 3600;

/// Settings that come from the environment.
#[derive(Clone, Debug)]
pub struct Config {
    /// `DATABASE_URL`: `sqlite://path?mode=rwc` (default under `data/`) or `postgres://…`.
    pub database_url: String,
    /// `REDIS_URL` (`redis://host:port`): set, the fan-out bus goes over Redis so several
    /// instances serve one set of rooms, jobs and notifications; unset, one process.
    pub redis_url: Option<String>,
    /// `TIDINGS_ADMINS`: usernames that get the admin role.
    pub admins: HashSet<String>,
    /// `TIDINGS_ALLOWED_ORIGINS`: origins besides the request's own that may call state-changing
    /// routes and open WebSockets (and that CORS answers for). Normalised, no trailing slash.
    pub allowed_origins: Vec<String>,
    /// `TIDINGS_SECRET`: key for signing stream tokens. Unset: a random key kept in the database,
    /// so every instance on the same database shares it and restarts keep tokens valid. Then
    /// whoever can read the database can also mint stream tokens: set it in production.
    pub secret: Option<String>,
    /// `TIDINGS_STREAM_TOKEN_TTL` (seconds, default 300): how long a stream token lives.
    pub stream_token_ttl: Duration,
    /// `TIDINGS_SESSION_TTL` (seconds, default 30 days): how long a session lives.
    pub session_ttl: Duration,
    /// `TIDINGS_EXPORT_READER`: how exports read SQLite. `auto` (default): a dedicated
    /// rusqlite connection, the measured fast path; `sqlx`: the portable sqlx path that
    /// PostgreSQL always uses (for comparing the two).
    pub export_reader: ExportReader,
    /// `TIDINGS_JOB_WORKERS` (1–256): jobs run at once. Unset: the queue's default.
    pub job_workers: Option<usize>,
    /// `TIDINGS_IMPORT_SOURCES`: URL prefixes imports may read from. Empty: this server's
    /// own origin only.
    pub import_sources: Vec<String>,
    /// `TIDINGS_SSE_MAX_SECS` (default 600): an event stream ends after this long and the
    /// browser reconnects with `Last-Event-ID`, so no connection is pinned to one instance
    /// (or one proxy) forever. The end-to-end tests set it short to exercise reconnects.
    pub sse_max: Duration,
    /// Chat tuning (rooms, presence, WebSocket health); see [`ChatConfig`].
    pub chat: ChatConfig,
}

/// How the chat behaves. Defaults suit people; tests shorten the waits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatConfig {
    /// `TIDINGS_CHAT_RATE` (default 10): messages a user may send per second (the contract's
    /// `Slow down.` limit). Load tests that need one user to send more may raise it.
    pub rate_per_second: u32,
    /// `TIDINGS_CHAT_HISTORY` (default 1000): messages a room keeps.
    pub history: i64,
    /// `TIDINGS_PRESENCE_GRACE_MS` (default 5000): how long after a user's last connection
    /// closes before the room hears `left` (a reload reconnects well within it).
    pub presence_grace: Duration,
    /// `TIDINGS_WS_PING_MS` (default 20000): a WebSocket is pinged after this long without
    /// traffic, and closed when nothing arrives for twice as long (a vanished peer).
    pub ping_interval: Duration,
    /// `TIDINGS_SLOW_CLIENT_MS` (default 10000): a socket that takes longer than this to accept
    /// one batch of writes is closed as too slow (it would otherwise hold its queue forever).
    pub slow_client: Duration,
}

impl Default for ChatConfig {
    fn default() -> Self {
        Self {
            rate_per_second: 10,
            history: 1000,
            presence_grace: Duration::from_secs(5),
            ping_interval: Duration::from_secs(20),
            slow_client: Duration::from_secs(10),
        }
    }
}

/// How the audit export reads an SQLite database (PostgreSQL always goes through sqlx).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ExportReader {
    /// rusqlite on SQLite files, sqlx otherwise.
    #[default]
    Auto,
    /// sqlx everywhere.
    Sqlx,
}

impl Config {
    /// Reads the environment. Fails with a sentence naming the variable on a bad value.
    pub fn from_env() -> anyhow::Result<Self> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        // Capped at a year: larger values would overflow millisecond timestamps.
        let seconds = |name: &str, default: u64| -> anyhow::Result<Duration> {
            match var(name) {
                None => Ok(Duration::from_secs(default)),
                Some(v) => v
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|n| (1..=MAX_TTL_SECS).contains(n))
                    .map(Duration::from_secs)
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "{name} must be a whole number of seconds from 1 to {MAX_TTL_SECS}, not {v:?}"
                        )
                    }),
            }
        };
        Ok(Self {
            database_url: var("DATABASE_URL").unwrap_or_else(|| DEFAULT_DATABASE_URL.to_string()),
            redis_url: var("REDIS_URL"),
            admins: split_list(var("TIDINGS_ADMINS").as_deref())
                .into_iter()
                .collect(),
            allowed_origins: split_list(var("TIDINGS_ALLOWED_ORIGINS").as_deref())
                .into_iter()
                .map(|o| o.trim_end_matches('/').to_string())
                .collect(),
            secret: var("TIDINGS_SECRET"),
            stream_token_ttl: seconds("TIDINGS_STREAM_TOKEN_TTL", 300)?,
            session_ttl: seconds("TIDINGS_SESSION_TTL", 30 * 24 * 3600)?,
            export_reader: match var("TIDINGS_EXPORT_READER").as_deref().map(str::trim) {
                None | Some("auto") => ExportReader::Auto,
                Some("sqlx") => ExportReader::Sqlx,
                Some(other) => {
                    anyhow::bail!("TIDINGS_EXPORT_READER must be auto or sqlx, not {other:?}")
                }
            },
            job_workers: match var("TIDINGS_JOB_WORKERS") {
                None => None,
                Some(v) => Some(
                    v.trim()
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=256).contains(n))
                        .ok_or_else(|| {
                            anyhow::anyhow!(
                                "TIDINGS_JOB_WORKERS must be a whole number from 1 to 256, not {v:?}"
                            )
                        })?,
                ),
            },
            import_sources: split_list(var("TIDINGS_IMPORT_SOURCES").as_deref()),
            sse_max: seconds("TIDINGS_SSE_MAX_SECS", 600)?,
            chat: {
                let d = ChatConfig::default();
                let number = |name: &str, default: u64, max: u64| -> anyhow::Result<u64> {
                    match var(name) {
                        None => Ok(default),
                        Some(v) => v
                            .trim()
                            .parse::<u64>()
                            .ok()
                            .filter(|n| (1..=max).contains(n))
                            .ok_or_else(|| {
                                anyhow::anyhow!(
                                    "{name} must be a whole number from 1 to {max}, not {v:?}"
                                )
                            }),
                    }
                };
                let ms = |name: &str, default: Duration| -> anyhow::Result<Duration> {
                    number(name, default.as_millis() as u64, 3_600_000).map(Duration::from_millis)
                };
                ChatConfig {
                    rate_per_second: number("TIDINGS_CHAT_RATE", d.rate_per_second.into(), 100_000)?
                        as u32,
                    history: number("TIDINGS_CHAT_HISTORY", d.history as u64, 1_000_000)? as i64,
                    presence_grace: ms("TIDINGS_PRESENCE_GRACE_MS", d.presence_grace)?,
                    ping_interval: ms("TIDINGS_WS_PING_MS", d.ping_interval)?,
                    slow_client: ms("TIDINGS_SLOW_CLIENT_MS", d.slow_client)?,
                }
            },
        })
    }

    /// A configuration for tests: the given database, one admin called `admin`.
    pub fn for_tests(database_url: &str) -> Self {
        Self {
            database_url: database_url.to_string(),
            redis_url: None,
            admins: ["admin".to_string()].into_iter().collect(),
            allowed_origins: vec!["http://allowed.example".to_string()],
            secret: None,
            stream_token_ttl: Duration::from_secs(300),
            session_ttl: Duration::from_secs(3600),
            export_reader: ExportReader::Auto,
            job_workers: Some(4),
            import_sources: Vec::new(),
            sse_max: Duration::from_secs(600),
            chat: ChatConfig {
                presence_grace: Duration::from_millis(300),
                ..ChatConfig::default()
            },
        }
    }
}

/// Splits a comma-separated list, trimming blanks.
fn split_list(value: Option<&str>) -> Vec<String> {
    value
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_trimmed() {
        assert_eq!(split_list(Some(" a, b ,,c")), vec!["a", "b", "c"]);
        assert!(split_list(None).is_empty());
    }
}
