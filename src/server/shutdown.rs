//! Graceful shutdown: one token that every long-lived loop selects on.
//!
//! `main` cancels it on SIGTERM or Ctrl-C; the HTTP server stops accepting, and every SSE,
//! NDJSON, WebSocket and worker loop that holds a clone ends its work and returns.
//!
//! Work that must finish its bookkeeping before the process exits (an export writing its
//! audit row, a worker marking its job) is started with [`Shutdown::spawn_blocking`] or
//! [`Shutdown::spawn`]; after the HTTP server stops, [`Shutdown::drain`] waits a bounded time
//! for it before the database is closed and the runtime dropped. Built on `tokio_util`'s
//! `CancellationToken` and `TaskTracker`.

use std::{future::Future, time::Duration};

use tokio::task::JoinHandle;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// Cloneable shutdown signal. `shutdown.cancelled().await` resolves once shutdown began.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    token: CancellationToken,
    tasks: TaskTracker,
}

impl Shutdown {
    /// A signal that has not fired.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts shutdown; every waiter wakes.
    pub fn trigger(&self) {
        self.token.cancel();
    }

    /// Whether shutdown has begun.
    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves when shutdown begins; use it in `tokio::select!`.
    pub async fn cancelled(&self) {
        self.token.cancelled().await
    }

    /// The same as [`cancelled`](Self::cancelled), as a future that owns its handle: pin it
    /// once outside a loop and `select!` on `&mut` it. Every socket's loop wakes thousands of
    /// times a second; a fresh `cancelled()` each time would register (and drop) a waiter
    /// on the one token all of them share, under its lock.
    pub fn cancelled_owned(&self) -> tokio_util::sync::WaitForCancellationFutureOwned {
        self.token.clone().cancelled_owned()
    }

    /// The next batch of a writer's queue (at most `max`, appended to `batch`): what is there,
    /// or the next to arrive. After shutdown began it keeps draining, until nothing arrives
    /// for `linger`. 0: the queue is closed, or shutdown began and it is drained.
    pub async fn recv_batch<T>(
        &self,
        rx: &mut tokio::sync::mpsc::Receiver<T>,
        batch: &mut Vec<T>,
        max: usize,
        linger: Duration,
    ) -> usize {
        loop {
            if self.is_triggered() {
                return tokio::time::timeout(linger, rx.recv_many(batch, max))
                    .await
                    .unwrap_or(0);
            }
            tokio::select! {
                n = rx.recv_many(batch, max) => return n,
                _ = self.cancelled() => {}
            }
        }
    }

    /// Spawns a task that [`drain`](Self::drain) waits for.
    pub fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tasks.spawn(task)
    }

    /// Runs `work` on a thread of the blocking pool; [`drain`](Self::drain) waits for it.
    /// Such work may drive async code with `Handle::block_on`, which must end before the
    /// runtime is dropped: that is what the wait guarantees.
    pub fn spawn_blocking<F, R>(&self, work: F) -> JoinHandle<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        self.tasks.spawn_blocking(work)
    }

    /// Waits up to `limit` for every task spawned through this signal to end; returns
    /// whether they all did. Call it after the server stopped (shutdown triggered).
    pub async fn drain(&self, limit: Duration) -> bool {
        self.tasks.close();
        let left = self.tasks.len();
        if left > 0 {
            tracing::info!(tasks = left, "waiting for background work to finish");
        }
        let done = tokio::time::timeout(limit, self.tasks.wait()).await.is_ok();
        if !done {
            tracing::warn!(
                tasks = self.tasks.len(),
                "background work still running after {limit:?}; stopping anyway"
            );
        }
        done
    }

    /// Fires this signal on SIGTERM or Ctrl-C (spawns a task; returns at once).
    pub fn trigger_on_signals(&self) {
        let this = self.clone();
        tokio::spawn(async move {
            let ctrl_c = tokio::signal::ctrl_c();
            #[cfg(unix)]
            let term = async {
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(mut s) => {
                        s.recv().await;
                    }
                    Err(_) => std::future::pending::<()>().await,
                }
            };
            #[cfg(not(unix))]
            let term = std::future::pending::<()>();
            tokio::select! {
                _ = ctrl_c => tracing::info!("Ctrl-C received, shutting down"),
                _ = term => tracing::info!("SIGTERM received, shutting down"),
            }
            this.trigger();
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_wake_on_trigger() {
        let s = Shutdown::new();
        let waiter = tokio::spawn({
            let s = s.clone();
            async move { s.cancelled().await }
        });
        assert!(!s.is_triggered());
        s.trigger();
        waiter.await.unwrap();
        assert!(s.is_triggered());
    }

    #[tokio::test]
    async fn drain_waits_for_tracked_work_and_gives_up_at_its_limit() {
        let s = Shutdown::new();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let runtime = tokio::runtime::Handle::current();
        let signal = s.clone();
        s.spawn_blocking(move || {
            runtime.block_on(signal.cancelled());
            rx.recv().ok();
        });
        s.trigger();
        assert!(!s.drain(Duration::from_millis(50)).await, "still blocked");
        tx.send(()).unwrap();
        assert!(s.drain(Duration::from_secs(10)).await, "ended");
    }
}
