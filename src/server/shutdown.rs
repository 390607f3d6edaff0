//! Graceful shutdown: one token that every long-lived loop selects on.
//!
//! `main` cancels it on SIGTERM or Ctrl-C; the HTTP server stops accepting, and every SSE,
//! NDJSON, WebSocket and worker loop that holds a clone ends its work and returns. Built on
//! `tokio_util`'s `CancellationToken`.

use tokio_util::sync::CancellationToken;

/// Cloneable shutdown signal. `shutdown.cancelled().await` resolves once shutdown began.
#[derive(Clone, Debug, Default)]
pub struct Shutdown(CancellationToken);

impl Shutdown {
    /// A signal that has not fired.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts shutdown; every waiter wakes.
    pub fn trigger(&self) {
        self.0.cancel();
    }

    /// Whether shutdown has begun.
    pub fn is_triggered(&self) -> bool {
        self.0.is_cancelled()
    }

    /// Resolves when shutdown begins; use it in `tokio::select!`.
    pub async fn cancelled(&self) {
        self.0.cancelled().await
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
}
