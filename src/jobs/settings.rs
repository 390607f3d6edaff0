//! The job queue's settings: workers, per-user limits, retention and where imports may read,
//! read through the server's one loader ([`Env`]).
//!
//! Tests: `cargo test --features ssr jobs::settings`.

use std::time::Duration;

use crate::server::config::Env;

/// How the queue runs. Defaults are the safe ones; tests and benchmarks open the limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobsConfig {
    /// `TIDINGS_JOB_WORKERS` (0–256): jobs run at once on this instance. Unset: the
    /// queue's default. 0: this instance queues jobs and serves their events but runs none
    /// (another instance on the same PostgreSQL database does).
    pub workers: Option<usize>,
    /// `TIDINGS_JOB_POLL_MS` (default 2000): how often idle workers look for queued jobs
    /// without being woken, and how often expired leases are swept. A new job wakes a worker
    /// at once (on every instance of a PostgreSQL database, through `NOTIFY`): this is only
    /// the fallback.
    pub poll: Duration,
    /// `TIDINGS_IMPORT_SOURCES`: URL prefixes imports may read from. Empty: this server's
    /// own origin only (the public origins, else the address it listens on).
    pub import_sources: Vec<String>,
    /// `TIDINGS_MAX_ACTIVE_JOBS_PER_USER` (default 20; 0: no limit): queued or running jobs
    /// per user.
    pub active_per_user: u32,
    /// `TIDINGS_MAX_RUNNING_JOBS_PER_USER`: jobs of one user running at once, counted over
    /// every instance (the claim counts the database's running jobs). `None`: half of this
    /// instance's workers (at least one), so one user's backlog never takes every worker from
    /// the others.
    pub running_per_user: Option<u32>,
    /// `TIDINGS_JOB_RETENTION_DAYS` (default 7): jobs that ended longer ago are deleted with
    /// their events.
    pub retention: Duration,
}

impl Default for JobsConfig {
    fn default() -> Self {
        Self {
            workers: None,
            poll: Duration::from_secs(2),
            import_sources: Vec::new(),
            active_per_user: 20,
            running_per_user: None,
            retention: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

impl JobsConfig {
    /// Reads the queue's variables; unset ones keep their defaults.
    pub fn from(vars: &Env<'_>) -> anyhow::Result<Self> {
        let d = Self::default();
        Ok(Self {
            workers: match vars.get("TIDINGS_JOB_WORKERS") {
                None => None,
                Some(_) => Some(vars.number("TIDINGS_JOB_WORKERS", 16, 0, 256)? as usize),
            },
            poll: Duration::from_millis(vars.number("TIDINGS_JOB_POLL_MS", 2000, 50, 3_600_000)?),
            import_sources: vars.list("TIDINGS_IMPORT_SOURCES"),
            active_per_user: vars.number(
                "TIDINGS_MAX_ACTIVE_JOBS_PER_USER",
                d.active_per_user.into(),
                0,
                1_000_000,
            )? as u32,
            running_per_user: match vars.get("TIDINGS_MAX_RUNNING_JOBS_PER_USER") {
                None => None,
                Some(_) => {
                    Some(vars.number("TIDINGS_MAX_RUNNING_JOBS_PER_USER", 1, 1, 256)? as u32)
                }
            },
            retention: Duration::from_secs(
                vars.number("TIDINGS_JOB_RETENTION_DAYS", 7, 1, 36_500)? * 24 * 3600,
            ),
        })
    }

    /// The settings tests start from: four workers, no per-user limit on active jobs.
    pub fn for_tests() -> Self {
        Self {
            workers: Some(4),
            active_per_user: 0,
            ..Self::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pairs: &'static [(&'static str, &'static str)]) -> anyhow::Result<JobsConfig> {
        JobsConfig::from(&Env::from_pairs(pairs))
    }

    #[test]
    fn defaults_are_the_safe_ones_and_values_are_checked() {
        let d = read(&[]).unwrap();
        assert_eq!(d, JobsConfig::default());
        assert_eq!(d.active_per_user, 20);
        assert_eq!(d.retention, Duration::from_secs(7 * 86_400));
        let c = read(&[
            ("TIDINGS_MAX_ACTIVE_JOBS_PER_USER", "5"),
            ("TIDINGS_MAX_RUNNING_JOBS_PER_USER", "2"),
            ("TIDINGS_JOB_RETENTION_DAYS", "1"),
            ("TIDINGS_JOB_WORKERS", "0"),
            ("TIDINGS_JOB_POLL_MS", "600000"),
        ])
        .unwrap();
        assert_eq!(
            (
                c.active_per_user,
                c.running_per_user,
                c.retention,
                c.workers,
                c.poll
            ),
            (
                5,
                Some(2),
                Duration::from_secs(86_400),
                Some(0),
                Duration::from_secs(600)
            )
        );
        assert_eq!(d.poll, Duration::from_secs(2));
        let e = read(&[("TIDINGS_JOB_POLL_MS", "10")])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("TIDINGS_JOB_POLL_MS"), "{e}");
        let e = read(&[("TIDINGS_JOB_RETENTION_DAYS", "0")])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("TIDINGS_JOB_RETENTION_DAYS"), "{e}");
    }
}
