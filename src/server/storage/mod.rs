//! Storage: one interface that SQLite (the embedded default) and PostgreSQL both serve.
//!
//! Built on sqlx's `Any` driver: one pool type, one set of queries written with `$1`-style
//! placeholders (which both engines accept), and one migration folder per engine
//! (`migrations/sqlite`, `migrations/postgres`) holding the same schema (but for SQLite's
//! `audit_log_epoch` and its triggers: the export cache's change counter, SQLite only; see
//! `export::cache`). Times are stored
//! as milliseconds since the epoch (`BIGINT`), which both engines compare natively.
//! Features call the methods here; none of them sees SQL dialects. A hot path that measures
//! too slow through `Any` may get an engine-specific method here, behind the same interface.
//!
//! Tests: `cargo test --features ssr server::storage` runs against a temporary SQLite file.

use std::{
    path::{Path, PathBuf},
    str::FromStr,
    sync::Arc,
    time::Duration,
};

pub mod accounts;
pub mod api_keys;
pub mod audit;
pub mod notify;

pub use accounts::{SessionRow, UserRow};

use sqlx::{
    any::{AnyConnectOptions, AnyPoolOptions},
    AnyPool, Executor,
};

/// Which engine a `DATABASE_URL` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// `sqlite://…`: a file (or memory) in this process.
    Sqlite,
    /// `postgres://…` or `postgresql://…`: a shared server.
    Postgres,
}

impl Backend {
    /// The engine for a URL, or a sentence saying what is wrong with it.
    pub fn of_url(url: &str) -> anyhow::Result<Self> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else {
            anyhow::bail!(
                "DATABASE_URL must start with sqlite:// or postgres://, not {:?}",
                redact(url)
            )
        }
    }
}

/// Hides a password in a database URL before it is logged or shown.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &creds[..colon],
                    &url[at..]
                ),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Rows per multi-row `INSERT`. sqlx's SQLite driver looks up each parameter's name, which
/// SQLite finds by a linear search: binding costs grow with the square of the parameters in a
/// statement. At 250 rows that search was half of `tidings seed`'s time; 32 rows keep
/// statements few and the search short.
pub(crate) const ROWS_PER_STATEMENT: usize = 32;

/// `($1, $2, $3), ($4, $5, $6)…`: the `VALUES` list of `rows` rows of `columns` parameters.
pub(crate) fn placeholders(rows: usize, columns: usize) -> String {
    let mut out = String::with_capacity(rows * columns * 5);
    for r in 0..rows {
        if r > 0 {
            out.push_str(", ");
        }
        out.push('(');
        for c in 0..columns {
            if c > 0 {
                out.push_str(", ");
            }
            out.push('$');
            out.push_str(&(r * columns + c + 1).to_string());
        }
        out.push(')');
    }
    out
}

/// How often ended records past their retention are looked for, and how many go per
/// transaction.
pub(crate) const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);
pub(crate) const PRUNE_BATCH: i64 = 500;

/// Deletes what ended longer ago than `keep`, [`PRUNE_BATCH`] at a time through
/// `prune(before, batch)` (which returns how many went): at start, then every
/// [`PRUNE_EVERY`], until shutdown. `what` names them in the log.
pub(crate) async fn prune_periodically<F, Fut>(
    shutdown: crate::server::Shutdown,
    keep: std::time::Duration,
    what: &'static str,
    mut prune: F,
) where
    F: FnMut(i64, i64) -> Fut,
    Fut: std::future::Future<Output = sqlx::Result<u64>>,
{
    loop {
        let before = crate::server::clock::now_ms() - keep.as_millis() as i64;
        let mut removed = 0;
        loop {
            match prune(before, PRUNE_BATCH).await {
                Ok(n) => {
                    removed += n;
                    if n < PRUNE_BATCH as u64 || shutdown.is_triggered() {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "pruning {what} failed; trying again later");
                    break;
                }
            }
        }
        if removed > 0 {
            tracing::info!(removed, "{what} past the retention deleted");
        }
        tokio::select! {
            _ = tokio::time::sleep(PRUNE_EVERY) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// The database. Cheap to clone (a pool handle).
#[derive(Clone, Debug)]
pub struct Store {
    /// Every query's connections. Features' own `impl Store` blocks (`chat/store.rs`,
    /// `jobs/store.rs`, …) use it directly.
    pub(crate) pool: AnyPool,
    /// Where the hot write paths run ([`Store::writer`]): on an SQLite file, one connection
    /// of its own; otherwise the same pool.
    writer: AnyPool,
    /// Which engine answers, for the few statements the two write differently.
    pub(crate) backend: Backend,
    /// The SQLite file, when there is one (not PostgreSQL, not `:memory:`): the export's
    /// rusqlite reader opens it directly.
    pub(crate) sqlite_file: Option<PathBuf>,
    /// PostgreSQL's URL, for the connections that `LISTEN` ([`notify`]).
    listen_url: Option<notify::ListenUrl>,
    /// The SQLite file's background checkpoints, stopped with the last clone of the store.
    _checkpoints: Option<Arc<Checkpoints>>,
}

/// How often an SQLite file's write-ahead log is copied back into the database, off the
/// commit path (see [`checkpoint_loop`]).
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// WAL pages after which a commit checkpoints by itself: only reached if the background
/// checkpoints fall behind, so the log stays bounded (16 MiB of 4 KiB pages) whatever happens.
const AUTOCHECKPOINT_PAGES: u32 = 4096;

/// Stops the background checkpoint task when dropped.
#[derive(Debug)]
struct Checkpoints(tokio::task::AbortHandle);

impl Drop for Checkpoints {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Checkpoints the write-ahead log every [`CHECKPOINT_EVERY`], on a connection of its own.
///
/// SQLite's own checkpoint runs inside the commit that crosses the threshold (1000 pages by
/// default), and it syncs the database file to disk: on a busy disk that held the chat's
/// writer, and every message queued behind it, for hundreds of milliseconds every few seconds
/// (WebSocket p99 290 ms on disk against 57 ms on tmpfs in `scripts/bench-chat.sh`). A
/// `PASSIVE` checkpoint here takes no lock that writers need, so commits only append to the
/// log; they checkpoint themselves only past [`AUTOCHECKPOINT_PAGES`].
async fn checkpoint_loop(pool: AnyPool) {
    let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if pool.is_closed() {
            return;
        }
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_optional(&pool)
            .await
        {
            tracing::debug!(error = %e, "a background checkpoint failed; the next one retries");
        }
    }
}

impl Store {
    /// The pool for the hot write paths (claims, job events, audit rows): on an SQLite
    /// file its one writing connection, so those writers take turns in order; on PostgreSQL
    /// (row locks, many writers at once) and in-memory SQLite, the one pool. A method that
    /// holds it must not wait for it again (it has one connection).
    pub(crate) fn writer(&self) -> &AnyPool {
        &self.writer
    }

    /// Deletes the rows whose `column` is in `ids` from each `table column` pair, in that
    /// order and in one transaction (children before parents). The features' pruning uses it.
    pub(crate) async fn delete_ids(&self, ids: &[i64], tables: &[&str]) -> sqlx::Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for chunk in ids.chunks(ROWS_PER_STATEMENT * 8) {
            let list = placeholders(1, chunk.len());
            for table_column in tables {
                let sql = format!("DELETE FROM {table_column} IN {list}");
                let mut query = sqlx::query(&sql);
                for id in chunk {
                    query = query.bind(*id);
                }
                query.execute(&mut *tx).await?;
            }
        }
        tx.commit().await
    }

    /// Connects, creates the SQLite file's folder if needed, and applies migrations.
    /// Fails fast with a clear message when the database cannot be reached.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of_url(url)?;
        if backend == Backend::Sqlite {
            ensure_sqlite_folder(url)?;
        }
        let options = AnyConnectOptions::from_str(url).map_err(|e| {
            anyhow::anyhow!("DATABASE_URL {:?} is not a valid URL: {e}", redact(url))
        })?;
        if backend != Backend::Sqlite {
            // One connection on its own first: a server that refuses or rejects us is named
            // with its reason at once, instead of the pool retrying until its timeout.
            use sqlx::Connection;
            let probe = tokio::time::timeout(
                std::time::Duration::from_secs(5),
                sqlx::AnyConnection::connect_with(&options),
            )
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "cannot open the database at {}: no answer in 5 s",
                    redact(url)
                )
            })?
            .map_err(|e| anyhow::anyhow!("cannot open the database at {}: {e}", redact(url)))?;
            let _ = probe.close().await;
        }
        let pool_of = |connections: u32| {
            AnyPoolOptions::new()
                .max_connections(connections)
                .acquire_timeout(std::time::Duration::from_secs(10))
                .after_connect(move |conn, _meta| {
                    Box::pin(async move {
                        if backend == Backend::Sqlite {
                            // Durable enough with WAL, and much faster than FULL.
                            conn.execute("PRAGMA synchronous = NORMAL").await?;
                            // Checkpoints run in the background (see `checkpoint_loop`).
                            conn.execute(
                                format!("PRAGMA wal_autocheckpoint = {AUTOCHECKPOINT_PAGES}")
                                    .as_str(),
                            )
                            .await?;
                        }
                        Ok(())
                    })
                })
        };
        let pool = pool_of(if backend == Backend::Sqlite { 8 } else { 16 })
            .connect_with(options.clone())
            .await
            .map_err(|e| anyhow::anyhow!("cannot open the database at {}: {e}", redact(url)))?;
        if backend == Backend::Sqlite {
            // Readers never block the writer; persists in the file.
            sqlx::query("PRAGMA journal_mode = WAL")
                .fetch_optional(&pool)
                .await?;
        }
        let migrator = match backend {
            Backend::Sqlite => sqlx::migrate!("src/server/storage/migrations/sqlite"),
            Backend::Postgres => sqlx::migrate!("src/server/storage/migrations/postgres"),
        };
        migrator
            .run(&pool)
            .await
            .map_err(|e| anyhow::anyhow!("cannot migrate the database at {}: {e}", redact(url)))?;
        let sqlite_file = match backend {
            Backend::Sqlite => sqlite_file(url),
            Backend::Postgres => None,
        };
        let writer = match sqlite_file {
            // One connection that writes: writers queue for it in order (the pool hands it
            // over the moment it is free) instead of colliding in SQLite, whose busy handler
            // sleeps 1, 2, 5, 10, 15, 20 … ms between tries. With 200 workers claiming at
            // once those sleeps were most of a short job's life (scripts/bench-jobs.sh).
            Some(_) => pool_of(1)
                .connect_with(options)
                .await
                .map_err(|e| anyhow::anyhow!("cannot open the database at {}: {e}", redact(url)))?,
            None => pool.clone(),
        };
        let checkpoints = sqlite_file.is_some().then(|| {
            let task = tokio::spawn(checkpoint_loop(pool.clone()));
            Arc::new(Checkpoints(task.abort_handle()))
        });
        Ok(Self {
            pool,
            writer,
            backend,
            sqlite_file,
            listen_url: (backend == Backend::Postgres).then(|| notify::ListenUrl(url.to_string())),
            _checkpoints: checkpoints,
        })
    }

    /// The SQLite file, when there is one (not PostgreSQL, not an in-memory database).
    pub fn sqlite_file(&self) -> Option<&Path> {
        self.sqlite_file.as_deref()
    }

    /// Which engine this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Whether the database answers a trivial query (for `/readyz`).
    pub async fn ping(&self) -> bool {
        // A database that is down would hold the answer for the pool's whole acquire timeout
        // (10 s); a health check wants it sooner.
        let query = sqlx::query("SELECT 1").fetch_one(&self.pool);
        matches!(
            tokio::time::timeout(Duration::from_secs(2), query).await,
            Ok(Ok(_))
        )
    }

    /// Closes every connection (at shutdown).
    pub async fn close(&self) {
        self.pool.close().await
    }

    /// The setting `key`, if stored.
    pub async fn setting(&self, key: &str) -> sqlx::Result<Option<String>> {
        sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
    }

    /// Forgets the setting `key`.
    pub async fn delete_setting(&self, key: &str) -> sqlx::Result<()> {
        sqlx::query("DELETE FROM settings WHERE key = $1")
            .bind(key)
            .execute(&self.pool)
            .await
            .map(|_| ())
    }

    /// The setting `key`, stored as `proposed` if it was absent. Every instance on the same
    /// database gets the same value, whichever stored it first.
    pub async fn setting_or_insert(&self, key: &str, proposed: &str) -> sqlx::Result<String> {
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(proposed)
        .execute(&self.pool)
        .await?;
        sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
            .bind(key)
            .fetch_one(&self.pool)
            .await
    }
}

/// The file an SQLite URL names, unless it is an in-memory database.
fn sqlite_file(url: &str) -> Option<PathBuf> {
    if url.contains(":memory:") || url.contains("mode=memory") {
        return None;
    }
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(url).ok()?;
    Some(options.get_filename().to_path_buf())
}

/// Creates the folder an SQLite URL's file lives in (`sqlite://data/tidings.db` → `data/`).
fn ensure_sqlite_folder(url: &str) -> anyhow::Result<()> {
    let rest = url.trim_start_matches("sqlite:").trim_start_matches("//");
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() || path.starts_with(":memory:") {
        return Ok(());
    }
    if let Some(parent) = Path::new(path)
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent).map_err(|e| {
            anyhow::anyhow!(
                "cannot create the database folder {}: {e}",
                parent.display()
            )
        })?;
    }
    Ok(())
}

/// A store on a fresh SQLite file in a temporary folder (nested, to exercise folder creation),
/// for unit tests anywhere in the crate. Keep the folder alive as long as the store.
#[cfg(test)]
pub(crate) async fn temp_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/nested/t.db?mode=rwc", dir.path().display());
    let store = Store::connect(&url).await.unwrap();
    (dir, store)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_number_every_column_of_every_row() {
        assert_eq!(placeholders(2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(placeholders(1, 1), "($1)");
    }

    #[tokio::test]
    async fn the_write_ahead_log_is_checkpointed_in_the_background() {
        let (_dir, store) = temp_store().await;
        let file = store.sqlite_file.clone().expect("a file");
        let before = std::fs::metadata(&file).unwrap().len();
        // About 1 MB: far below the commit's own threshold, so only the background task
        // copies it into the database file.
        let detail = "x".repeat(500);
        let rows: Vec<_> = (0..2000)
            .map(|i| audit::NewAuditRow {
                at: i,
                action: "SEED".to_string(),
                username: "u".to_string(),
                detail: format!("\"{detail}\""),
            })
            .collect();
        store.audit_many(&rows).await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let now = std::fs::metadata(&file).unwrap().len();
            if now >= before + 1_000_000 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the database file stayed at {now} bytes (from {before}): no checkpoint ran"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[test]
    fn backends_and_redaction() {
        assert_eq!(
            Backend::of_url("sqlite://data/x.db?mode=rwc").unwrap(),
            Backend::Sqlite
        );
        assert_eq!(
            Backend::of_url("postgres://u:p@h/db").unwrap(),
            Backend::Postgres
        );
        assert!(Backend::of_url("mysql://x").is_err());
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("sqlite://data/x.db"), "sqlite://data/x.db");
    }

    #[tokio::test]
    async fn settings_keep_the_first_value() {
        let (_dir, store) = temp_store().await;
        assert_eq!(store.setting_or_insert("k", "one").await.unwrap(), "one");
        assert_eq!(store.setting_or_insert("k", "two").await.unwrap(), "one");
    }
}
