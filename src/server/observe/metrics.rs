//! Live metrics: the counters features bump on their hot paths, and the sampler that turns
//! them into one [`Metrics`] a second for `GET /api/metrics/events`.
//!
//! Counting costs one relaxed atomic add where it happens: a chat batch adds its size once,
//! an export adds each chunk's rows, a stream adds one on open and one on close. Connections
//! are counted by the transports themselves ([`ws::live_connections`],
//! [`sse::live_connections`], the export guard here). The [`Sampler`] reads them once a
//! second, with the job counts (one query) and the resident memory (`/proc/self/status`),
//! and publishes the sample on a `watch` channel: every dashboard shares that one sample, so a
//! hundred open dashboards cost the server no more than one.
//!
//! Tests: `cargo test --features ssr server::observe::metrics`; `tests/it/dashboard.rs` reads the stream.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use tokio::sync::watch;

use crate::protocol::metrics::{Connections, JobCounts, Metrics, SlowClients};
use crate::server::{clock, fanout::sse, fanout::ws, storage::Store, Shutdown};

/// How often a sample is taken (documented: every second).
pub const INTERVAL: Duration = Duration::from_secs(1);

/// How long the job count may take before a sample goes out with the last one.
const JOB_COUNT_LIMIT: Duration = Duration::from_millis(800);

static MESSAGES: AtomicU64 = AtomicU64::new(0);
/// Chat messages accepted from clients, per transport they came in on.
static RECEIVED_WS: AtomicU64 = AtomicU64::new(0);
static RECEIVED_HTTP: AtomicU64 = AtomicU64::new(0);
static ROWS_EXPORTED: AtomicU64 = AtomicU64::new(0);
static EXPORTS_LIVE: AtomicU64 = AtomicU64::new(0);

/// Counts `n` messages published to users (chat messages, notifications).
pub fn record_messages(n: u64) {
    MESSAGES.fetch_add(n, Ordering::Relaxed);
}

/// The transport a chat message came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inbound {
    WebSocket,
    Http,
}

/// Counts one chat message accepted from a client over `via`.
pub fn record_received(via: Inbound) {
    match via {
        Inbound::WebSocket => &RECEIVED_WS,
        Inbound::Http => &RECEIVED_HTTP,
    }
    .fetch_add(1, Ordering::Relaxed);
}

/// Chat messages accepted over the WebSocket and over HTTP since start.
pub fn received() -> (u64, u64) {
    (
        RECEIVED_WS.load(Ordering::Relaxed),
        RECEIVED_HTTP.load(Ordering::Relaxed),
    )
}

/// Counts `n` audit rows sent by an export.
pub fn record_rows_exported(n: u64) {
    ROWS_EXPORTED.fetch_add(n, Ordering::Relaxed);
}

/// Messages published since start.
pub fn messages() -> u64 {
    MESSAGES.load(Ordering::Relaxed)
}

/// Export rows sent since start.
pub fn rows_exported() -> u64 {
    ROWS_EXPORTED.load(Ordering::Relaxed)
}

/// Exports being written now.
pub fn live_exports() -> u64 {
    EXPORTS_LIVE.load(Ordering::Relaxed)
}

/// Counts one export stream while it lives.
pub fn live_export() -> Live {
    Live::new(&EXPORTS_LIVE)
}

/// Counts one in a gauge while it lives (an open WebSocket, SSE stream or export).
#[derive(Debug)]
pub struct Live(&'static AtomicU64);

impl Live {
    pub fn new(gauge: &'static AtomicU64) -> Self {
        gauge.fetch_add(1, Ordering::Relaxed);
        Self(gauge)
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How long this process has run (from the first time anything asked).
pub fn uptime() -> Duration {
    static STARTED: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    STARTED.get_or_init(Instant::now).elapsed()
}

/// This process's resident memory in bytes (`VmRSS`), or 0 where `/proc` is missing.
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| vm_rss(&s))
        .unwrap_or(0)
}

/// The `VmRSS:` line of a `/proc/<pid>/status` text, in bytes.
fn vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// A per-second rate from two readings of a counter `elapsed` apart.
fn rate(before: u64, now: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 {
        return 0.0;
    }
    // One decimal: the dashboard shows it as is.
    ((now.saturating_sub(before)) as f64 / secs * 10.0).round() / 10.0
}

/// The open connections per transport, counted now.
pub fn connections_now() -> Connections {
    Connections {
        websocket: ws::live_connections(),
        sse: sse::live_connections(),
        streams: live_exports(),
    }
}

/// The latest sample, shared by every metrics stream.
#[derive(Clone, Debug)]
pub struct Sampler {
    latest: watch::Receiver<Arc<Metrics>>,
}

impl Sampler {
    /// Starts sampling every [`INTERVAL`] until `shutdown`.
    pub fn start(store: Store, shutdown: Shutdown) -> Self {
        let (tx, rx) = watch::channel(Arc::new(Metrics::default()));
        tokio::spawn(sample_loop(store, shutdown, tx));
        Self { latest: rx }
    }

    /// The newest sample (all zeros with an empty `at` before the first).
    pub fn latest(&self) -> Arc<Metrics> {
        self.latest.borrow().clone()
    }

    /// A receiver of the samples. The current one counts as unseen once one was taken, so
    /// a new stream starts with it instead of waiting up to a second.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Metrics>> {
        let mut rx = self.latest.clone();
        if !rx.borrow().at.is_empty() {
            rx.mark_changed();
        }
        rx
    }
}

async fn sample_loop(store: Store, shutdown: Shutdown, tx: watch::Sender<Arc<Metrics>>) {
    let _ = uptime();
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = (Instant::now(), messages(), rows_exported());
    let mut jobs = JobCounts::default();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        // One indexed query a second, watched or not, so the first sample a new dashboard
        // gets is fresh. A failure keeps the last counts (and is logged).
        // A database that does not answer in time must not stop the samples.
        match tokio::time::timeout(JOB_COUNT_LIMIT, store.job_counts()).await {
            Ok(Ok((queued, running))) => {
                jobs = JobCounts {
                    queued: queued.max(0) as u64,
                    running: running.max(0) as u64,
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "counting jobs for the metrics failed"),
            Err(_) => {
                tracing::warn!("counting jobs for the metrics took too long; kept the last counts")
            }
        }
        let now = (Instant::now(), messages(), rows_exported());
        let elapsed = now.0 - last.0;
        let sample = Metrics {
            connections: connections_now(),
            messages_per_second: rate(last.1, now.1, elapsed),
            jobs: jobs.clone(),
            rows_exported: now.2,
            rss_bytes: rss_bytes(),
            at: clock::rfc3339(clock::now_ms()),
            rows_exported_per_second: rate(last.2, now.2, elapsed),
            slow_clients: SlowClients {
                queue_drops: ws::queue_drops(),
                disconnects: ws::slow_disconnects() + sse::slow_disconnects(),
            },
            uptime_seconds: uptime().as_secs(),
        };
        last = now;
        tx.send_replace(Arc::new(sample));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resident_memory_comes_from_proc_status() {
        let status = "Name:\ttidings\nVmPeak:\t  900 kB\nVmRSS:\t   12345 kB\nThreads:\t4\n";
        assert_eq!(vm_rss(status), Some(12345 * 1024));
        assert_eq!(vm_rss("Name: x\n"), None);
        if cfg!(target_os = "linux") {
            assert!(
                rss_bytes() > 1024 * 1024,
                "this test process has some memory"
            );
        }
    }

    #[test]
    fn rates_are_per_second_with_one_decimal() {
        assert_eq!(rate(100, 250, Duration::from_millis(1000)), 150.0);
        assert_eq!(rate(0, 10, Duration::from_millis(3000)), 3.3);
        assert_eq!(rate(5, 5, Duration::from_secs(1)), 0.0);
        assert_eq!(rate(9, 5, Duration::from_secs(1)), 0.0, "never negative");
        assert_eq!(rate(0, 5, Duration::ZERO), 0.0);
    }

    #[test]
    fn export_streams_are_counted_while_they_live() {
        let before = live_exports();
        let a = live_export();
        let b = live_export();
        assert!(live_exports() >= before + 2);
        drop((a, b));
        record_rows_exported(7);
        assert!(rows_exported() >= 7);
    }
}
