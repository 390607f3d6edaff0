//! Wake-ups between instances that share a PostgreSQL database: `NOTIFY` on a channel, and a
//! listener that calls back for each notification.
//!
//! They are hints, not data: a notification sent while a listener's connection is down is
//! lost, so the listener calls back once after every reconnect too (whoever listens then
//! looks for itself), and features keep a slow poll as the fallback. On SQLite (one process
//! per file) both are no-ops.
//!
//! Tests: `tests/it/jobs.rs` (a job queued on a worker-less instance starts on another one
//! at once, with polling set to ten minutes), run against PostgreSQL by `scripts/test.sh`.

use std::time::Duration;

use sqlx::postgres::PgListener;

use super::{redact, Backend, Store};
use crate::{retry, server::Shutdown};

/// The database URL a listener connects with. Its `Debug` hides the password.
#[derive(Clone)]
pub(crate) struct ListenUrl(pub(super) String);

impl std::fmt::Debug for ListenUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redact(&self.0))
    }
}

impl Store {
    /// Sends `payload` to every listener of `channel` (every instance, this one included), on
    /// PostgreSQL; does nothing on SQLite.
    pub async fn notify(&self, channel: &str, payload: &str) -> sqlx::Result<()> {
        if self.backend != Backend::Postgres {
            return Ok(());
        }
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(channel)
            .bind(payload)
            .execute(&self.pool)
            .await
            .map(|_| ())
    }

    /// On PostgreSQL, listens on `channel` until shutdown on a connection of its own, calling
    /// `on_notify` with each payload, and with `None` after each (re)connection, when
    /// notifications may have been missed. Returns at once on SQLite.
    pub async fn listen(
        &self,
        channel: &str,
        shutdown: Shutdown,
        on_notify: impl Fn(Option<&str>) + Send,
    ) {
        let Some(url) = &self.listen_url else {
            return;
        };
        let mut attempt = 0u32;
        while !shutdown.is_triggered() {
            let connected = async {
                let mut listener = PgListener::connect(&url.0).await?;
                listener.listen(channel).await?;
                Ok::<_, sqlx::Error>(listener)
            };
            let mut listener = tokio::select! {
                l = connected => l,
                _ = shutdown.cancelled() => return,
            };
            match &mut listener {
                Ok(listener) => {
                    attempt = 0;
                    if let Err(e) = self.follow(listener, &shutdown, &on_notify).await {
                        tracing::warn!(channel, error = %e, "listening for wake-ups failed; reconnecting (polling covers the gap)");
                    }
                }
                Err(e) => {
                    attempt += 1;
                    tracing::warn!(channel, attempt, error = %e, "cannot listen for wake-ups; trying again (polling covers the gap)");
                }
            }
            let wait = retry::backoff(
                attempt.max(1),
                Duration::from_millis(200),
                Duration::from_secs(10),
            );
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// Passes one connection's notifications on until it fails or shutdown.
    async fn follow(
        &self,
        listener: &mut PgListener,
        shutdown: &Shutdown,
        on_notify: &(impl Fn(Option<&str>) + Send),
    ) -> sqlx::Result<()> {
        // Anything sent before this connection listened was missed.
        on_notify(None);
        let stopped = shutdown.cancelled();
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                got = listener.try_recv() => match got? {
                    Some(n) => on_notify(Some(n.payload())),
                    // Lost and reconnected (eagerly, the default): look again.
                    None => on_notify(None),
                },
                _ = &mut stopped => return Ok(()),
            }
        }
    }
}
