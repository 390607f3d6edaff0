//! Storage: one interface that SQLite (the embedded default) and PostgreSQL both serve.
//!
//! Built on sqlx's `Any` driver: one pool type, one set of queries written with `$1`-style
//! placeholders (which both engines accept), and one migration folder per engine
//! (`migrations/sqlite`, `migrations/postgres`) holding the same schema. Times are stored
//! as milliseconds since the epoch (`BIGINT`), which both engines compare natively.
//! Features call the methods here; none of them sees SQL dialects. A hot path that measures
//! too slow through `Any` may get an engine-specific method here, behind the same interface.
//!
//! Tests: `cargo test --features ssr server::storage` runs against a temporary SQLite file.

pub mod audit_pages;
pub mod chat;
pub mod jobs;

use std::{
    path::{Path, PathBuf},
    str::FromStr,
    sync::Arc,
    time::Duration,
};

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

/// A stored account.
#[derive(Clone, Debug)]
pub struct UserRow {
    pub id: i64,
    pub username: String,
    pub password_hash: String,
    /// Created as an admin (`tidings users add NAME --admin`); `TIDINGS_ADMINS` adds more.
    pub admin: bool,
}

/// A live session joined with its user.
#[derive(Clone, Debug)]
pub struct SessionRow {
    /// The session's row id: stream tokens name it, so logout revokes them too.
    pub session_id: i64,
    pub user_id: i64,
    pub username: String,
    pub expires_at: i64,
    /// The account was created as an admin.
    pub admin: bool,
}

/// The database. Cheap to clone (a pool handle).
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// The SQLite file, when there is one (not PostgreSQL, not `:memory:`): the export's
    /// rusqlite reader opens it directly.
    sqlite_file: Option<PathBuf>,
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
        let pool = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 8 } else { 16 })
            .acquire_timeout(std::time::Duration::from_secs(10))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // Durable enough with WAL, and much faster than FULL.
                        conn.execute("PRAGMA synchronous = NORMAL").await?;
                        // Checkpoints run in the background (see `checkpoint_loop`).
                        conn.execute(
                            format!("PRAGMA wal_autocheckpoint = {AUTOCHECKPOINT_PAGES}").as_str(),
                        )
                        .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(|e| anyhow::anyhow!("cannot open the database at {}: {e}", redact(url)))?;
        if backend == Backend::Sqlite {
            // Readers never block the writer; persists in the file.
            sqlx::query("PRAGMA journal_mode = WAL")
                .fetch_optional(&pool)
                .await?;
        }
        let migrator = match backend {
            Backend::Sqlite => sqlx::migrate!("src/server/migrations/sqlite"),
            Backend::Postgres => sqlx::migrate!("src/server/migrations/postgres"),
        };
        migrator
            .run(&pool)
            .await
            .map_err(|e| anyhow::anyhow!("cannot migrate the database at {}: {e}", redact(url)))?;
        let sqlite_file = match backend {
            Backend::Sqlite => sqlite_file(url),
            Backend::Postgres => None,
        };
        let checkpoints = sqlite_file.is_some().then(|| {
            let task = tokio::spawn(checkpoint_loop(pool.clone()));
            Arc::new(Checkpoints(task.abort_handle()))
        });
        Ok(Self {
            pool,
            backend,
            sqlite_file,
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

    /// Creates an account. `None` when the username is taken.
    pub async fn create_user(
        &self,
        username: &str,
        password_hash: &str,
        now_ms: i64,
    ) -> sqlx::Result<Option<i64>> {
        self.create_account(username, password_hash, now_ms, false)
            .await
    }

    /// Creates an account, an admin one when `admin`. `None` when the username is taken.
    pub async fn create_account(
        &self,
        username: &str,
        password_hash: &str,
        now_ms: i64,
        admin: bool,
    ) -> sqlx::Result<Option<i64>> {
        sqlx::query_scalar(
            "INSERT INTO users (username, password_hash, created_at, admin) VALUES ($1, $2, $3, $4)
             ON CONFLICT (username) DO NOTHING RETURNING id",
        )
        .bind(username)
        .bind(password_hash)
        .bind(now_ms)
        .bind(i64::from(admin))
        .fetch_optional(&self.pool)
        .await
    }

    /// Which of `names` have no account yet (in the order given).
    pub async fn names_without_accounts(&self, names: &[&str]) -> sqlx::Result<Vec<String>> {
        let mut missing = Vec::new();
        for name in names {
            if self.user_by_name(name).await?.is_none() {
                missing.push(name.to_string());
            }
        }
        Ok(missing)
    }

    /// Looks an account up by username.
    pub async fn user_by_name(&self, username: &str) -> sqlx::Result<Option<UserRow>> {
        let row: Option<(i64, String, String, i64)> = sqlx::query_as(
            "SELECT id, username, password_hash, admin FROM users WHERE username = $1",
        )
        .bind(username)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(id, username, password_hash, admin)| UserRow {
            id,
            username,
            password_hash,
            admin: admin != 0,
        }))
    }

    /// Stores a new session; returns its row id.
    pub async fn create_session(
        &self,
        token_hash: &str,
        user_id: i64,
        now_ms: i64,
        expires_ms: i64,
    ) -> sqlx::Result<i64> {
        sqlx::query_scalar(
            "INSERT INTO sessions (token_hash, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(token_hash)
        .bind(user_id)
        .bind(now_ms)
        .bind(expires_ms)
        .fetch_one(&self.pool)
        .await
    }

    /// The live session whose cookie hashes to `token_hash`.
    pub async fn session_by_token(
        &self,
        token_hash: &str,
        now_ms: i64,
    ) -> sqlx::Result<Option<SessionRow>> {
        self.live_session("token_hash", token_hash.to_string(), now_ms)
            .await
    }

    /// The live session with this row id (stream tokens name sessions this way).
    pub async fn session_by_id(
        &self,
        session_id: i64,
        now_ms: i64,
    ) -> sqlx::Result<Option<SessionRow>> {
        self.live_session("id", session_id, now_ms).await
    }

    /// The unexpired session whose `column` equals `key`, with its user.
    async fn live_session<T>(
        &self,
        column: &'static str,
        key: T,
        now_ms: i64,
    ) -> sqlx::Result<Option<SessionRow>>
    where
        T: for<'q> sqlx::Encode<'q, sqlx::Any> + sqlx::Type<sqlx::Any> + Send + 'static,
    {
        let sql = format!(
            "SELECT s.id, s.user_id, u.username, s.expires_at, u.admin FROM sessions s JOIN users u ON u.id = s.user_id
             WHERE s.{column} = $1 AND s.expires_at > $2"
        );
        let row: Option<(i64, i64, String, i64, i64)> = sqlx::query_as(&sql)
            .bind(key)
            .bind(now_ms)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(
            |(session_id, user_id, username, expires_at, admin)| SessionRow {
                session_id,
                user_id,
                username,
                expires_at,
                admin: admin != 0,
            },
        ))
    }

    /// Ends a session (logout). Returns whether one was found.
    pub async fn delete_session(&self, token_hash: &str) -> sqlx::Result<bool> {
        let done = sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
            .bind(token_hash)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Which of the sessions `ids` are still live at `now_ms` (neither ended nor expired).
    pub async fn live_session_ids(&self, ids: &[i64], now_ms: i64) -> sqlx::Result<Vec<i64>> {
        let mut live = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(500) {
            let list = placeholders(1, chunk.len());
            let sql = format!(
                "SELECT id FROM sessions WHERE id IN {list} AND expires_at > ${}",
                chunk.len() + 1
            );
            let mut query = sqlx::query_scalar::<_, i64>(&sql);
            for id in chunk {
                query = query.bind(*id);
            }
            live.extend(query.bind(now_ms).fetch_all(&self.pool).await?);
        }
        Ok(live)
    }

    /// Removes sessions that expired before `now_ms`; returns how many.
    pub async fn delete_expired_sessions(&self, now_ms: i64) -> sqlx::Result<u64> {
        let done = sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
            .bind(now_ms)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
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

    /// Appends an audit row for something the app did; returns its id.
    pub async fn audit(
        &self,
        action: &str,
        username: &str,
        detail: &serde_json::Value,
        now_ms: i64,
    ) -> sqlx::Result<i64> {
        sqlx::query_scalar("INSERT INTO audit_log (at, action, username, detail) VALUES ($1, $2, $3, $4) RETURNING id")
            .bind(now_ms)
            .bind(action)
            .bind(username)
            .bind(detail.to_string())
            .fetch_one(&self.pool)
            .await
    }

    /// Appends many audit rows in one transaction, several hundred per statement; returns how
    /// many were written. Rows are `(at ms, action, username, detail JSON text)`.
    pub async fn audit_many(&self, rows: &[(i64, String, String, String)]) -> sqlx::Result<u64> {
        let mut tx = self.pool.begin().await?;
        let mut written = 0;
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO audit_log (at, action, username, detail) VALUES {}",
                placeholders(chunk.len(), 4)
            );
            let mut query = sqlx::query(&sql);
            for (at, action, username, detail) in chunk {
                query = query
                    .bind(*at)
                    .bind(action.as_str())
                    .bind(username.as_str())
                    .bind(detail.as_str());
            }
            written += query.execute(&mut *tx).await?.rows_affected();
        }
        tx.commit().await?;
        Ok(written)
    }

    /// Inserts rows with their own ids (an import), skipping ids already present; returns
    /// how many were new. Idempotent: importing the same rows again adds nothing.
    pub async fn audit_import(
        &self,
        rows: &[(i64, i64, String, String, String)],
    ) -> sqlx::Result<u64> {
        let mut tx = self.pool.begin().await?;
        let mut inserted = 0;
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO audit_log (id, at, action, username, detail) VALUES {}
                 ON CONFLICT (id) DO NOTHING",
                placeholders(chunk.len(), 5)
            );
            let mut query = sqlx::query(&sql);
            for (id, at, action, username, detail) in chunk {
                query = query
                    .bind(*id)
                    .bind(*at)
                    .bind(action.as_str())
                    .bind(username.as_str())
                    .bind(detail.as_str());
            }
            inserted += query.execute(&mut *tx).await?.rows_affected();
        }
        if self.backend == Backend::Postgres {
            // Explicit ids do not move an identity column's sequence: move it past them, so
            // the app's own next row does not collide.
            sqlx::query(
                "SELECT setval(pg_get_serial_sequence('audit_log', 'id'), (SELECT MAX(id) FROM audit_log))",
            )
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(inserted)
    }

    /// How many audit rows there are.
    pub async fn audit_count(&self) -> sqlx::Result<i64> {
        sqlx::query_scalar("SELECT COUNT(*) FROM audit_log")
            .fetch_one(&self.pool)
            .await
    }

    /// The most recent audit rows, newest first (for tests and the audit page).
    pub async fn recent_audit(&self, limit: i64) -> sqlx::Result<Vec<(i64, String, String)>> {
        sqlx::query_as("SELECT id, action, username FROM audit_log ORDER BY id DESC LIMIT $1")
            .bind(limit)
            .fetch_all(&self.pool)
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
            .map(|i| {
                (
                    i,
                    "SEED".to_string(),
                    "u".to_string(),
                    format!("\"{detail}\""),
                )
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

    #[tokio::test]
    async fn imports_keep_ids_count_new_rows_and_leave_ids_for_later_rows() {
        let (_dir, store) = temp_store().await;
        store
            .audit("SIGNUP", "admin", &serde_json::json!({}), 1)
            .await
            .unwrap();
        let rows: Vec<_> = (0..5000)
            .map(|i| {
                (
                    10_000 + i,
                    i,
                    "LOGIN".to_string(),
                    "u".to_string(),
                    "{}".to_string(),
                )
            })
            .collect();
        assert_eq!(store.audit_import(&rows[..2000]).await.unwrap(), 2000);
        assert_eq!(
            store.audit_import(&rows).await.unwrap(),
            3000,
            "only the new ones"
        );
        assert_eq!(store.audit_import(&rows).await.unwrap(), 0);
        let next = store
            .audit("IMPORT", "admin", &serde_json::json!({}), 2)
            .await
            .unwrap();
        assert_eq!(next, 15_000);
        assert_eq!(store.audit_count().await.unwrap(), 5002);
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
    async fn users_and_sessions_round_trip() {
        let (_dir, store) = temp_store().await;
        let id = store
            .create_user("eric", "h", 1)
            .await
            .unwrap()
            .expect("created");
        assert_eq!(
            store.create_user("eric", "h2", 2).await.unwrap(),
            None,
            "taken"
        );
        assert_eq!(store.user_by_name("eric").await.unwrap().unwrap().id, id);

        let sid = store.create_session("th", id, 10, 100).await.unwrap();
        let s = store
            .session_by_token("th", 50)
            .await
            .unwrap()
            .expect("live");
        assert_eq!((s.session_id, s.username.as_str()), (sid, "eric"));
        assert!(store.session_by_id(sid, 50).await.unwrap().is_some());
        assert!(
            store.session_by_token("th", 100).await.unwrap().is_none(),
            "expired"
        );
        assert!(store.delete_session("th").await.unwrap());
        assert!(
            store.session_by_id(sid, 50).await.unwrap().is_none(),
            "deleted"
        );
    }

    #[tokio::test]
    async fn settings_keep_the_first_value() {
        let (_dir, store) = temp_store().await;
        assert_eq!(store.setting_or_insert("k", "one").await.unwrap(), "one");
        assert_eq!(store.setting_or_insert("k", "two").await.unwrap(), "one");
    }

    #[tokio::test]
    async fn audit_ids_rise() {
        let (_dir, store) = temp_store().await;
        let a = store
            .audit("LOGIN", "eric", &serde_json::json!({}), 1)
            .await
            .unwrap();
        let b = store
            .audit("LOGOUT", "eric", &serde_json::json!({"x": 1}), 2)
            .await
            .unwrap();
        assert!(b > a);
        let rows = store.recent_audit(10).await.unwrap();
        assert_eq!(rows[0].1, "LOGOUT");

        let many: Vec<_> = (0..600)
            .map(|i| (i, "SEED".to_string(), format!("u{i}"), "{}".to_string()))
            .collect();
        assert_eq!(store.audit_many(&many).await.unwrap(), 600);
        assert_eq!(store.audit_count().await.unwrap(), 602);
        let newest = store.recent_audit(1).await.unwrap();
        assert_eq!(
            (newest[0].1.as_str(), newest[0].2.as_str()),
            ("SEED", "u599"),
            "order kept"
        );
    }
}
