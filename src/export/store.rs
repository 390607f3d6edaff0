//! Reading the audit log page by page, for the streaming export.
//!
//! Pages are read by keyset (`id > $after … ORDER BY id LIMIT $n`), never OFFSET, so every
//! page costs the same however deep the export is, and a resumed export (`after=<last id>`)
//! starts exactly where the broken one stopped. Each page is its own short statement: no
//! transaction or cursor stays open while the client reads at its own pace.
//!
//! Two readers serve one interface, [`AuditPages::read`]:
//! - **rusqlite** on an SQLite file: a dedicated read-only connection used from a blocking
//!   thread, handing each row to the sink as borrowed `&str` columns (no allocation per row).
//!   The export benchmark (`scripts/bench-export.sh`) measured it 12 times as fast as the
//!   sqlx path (1,000,000 rows: 2,600,000 rows/s against 214,000); it is the one hot path
//!   that justifies rusqlite beside sqlx.
//! - **sqlx** everywhere else (PostgreSQL, in-memory SQLite, or `TIDINGS_EXPORT_READER=sqlx`).
//!
//! Rows go to an [`AuditSink`] rather than into a `Vec`, so the export formats each row
//! straight into its output buffer.
//!
//! Tests: `cargo test --features ssr export::store` runs both readers on the
//! same rows and filters and compares what they produce.

use std::path::PathBuf;

use sqlx::{AnyPool, Row};

use crate::server::storage::Store;

/// Which rows an export (or a count) covers, besides `after`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Only these actions (none: all).
    pub actions: Vec<String>,
    /// Only this acting user.
    pub user: Option<String>,
    /// Only rows at or after this time (ms).
    pub since_ms: Option<i64>,
    /// Only rows before this time (ms).
    pub until_ms: Option<i64>,
    /// Only ids up to this one: the export's snapshot of the log when it started, so rows
    /// written meanwhile (its own EXPORT row included) do not make it run forever.
    pub max_id: i64,
}

impl AuditFilter {
    /// Whether every row (up to `max_id`) matches: no action, user or time filter.
    pub fn selects_all(&self) -> bool {
        self.actions.is_empty()
            && self.user.is_none()
            && self.since_ms.is_none()
            && self.until_ms.is_none()
    }

    /// The `WHERE` clause for these filters, with `$1` = after and `$2` = max id, and the
    /// number of the next free placeholder.
    fn where_clause(&self) -> (String, usize) {
        let mut sql = String::from("id > $1 AND id <= $2");
        let mut n = 3;
        if !self.actions.is_empty() {
            let marks: Vec<String> = (0..self.actions.len())
                .map(|i| format!("${}", n + i))
                .collect();
            n += self.actions.len();
            sql.push_str(&format!(" AND action IN ({})", marks.join(", ")));
        }
        for (present, clause) in [
            (self.user.is_some(), "username ="),
            (self.since_ms.is_some(), "at >="),
            (self.until_ms.is_some(), "at <"),
        ] {
            if present {
                sql.push_str(&format!(" AND {clause} ${n}"));
                n += 1;
            }
        }
        (sql, n)
    }

    /// The values for the placeholders after `$1` and `$2`, in order.
    fn extra_binds(&self) -> Vec<Bind> {
        let mut binds: Vec<Bind> = self.actions.iter().cloned().map(Bind::Text).collect();
        binds.extend(self.user.clone().map(Bind::Text));
        binds.extend(self.since_ms.map(Bind::Int));
        binds.extend(self.until_ms.map(Bind::Int));
        binds
    }
}

/// One placeholder value.
#[derive(Clone, Debug)]
enum Bind {
    Int(i64),
    Text(String),
}

/// Receives rows as they are read, oldest first.
pub trait AuditSink: Send + 'static {
    /// One row: its id, time (ms), action, acting user, and detail (JSON text). Text columns
    /// come as the bytes stored, UTF-8 when the app wrote them; the sink decides what to do
    /// with anything else, so the reader does not validate every byte on the hot path.
    fn row(&mut self, id: i64, at_ms: i64, action: &[u8], user: &[u8], detail: &[u8]);
}

/// What one page read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Page {
    /// Rows handed to the sink.
    pub rows: u32,
    /// Id of the last of them (`after` when there were none).
    pub last_id: i64,
}

/// A reader of audit pages for one export. See the module docs.
pub struct AuditPages {
    reader: Reader,
    /// `SELECT … WHERE … ORDER BY id LIMIT $n`.
    sql: String,
    max_id: i64,
    extra: Vec<Bind>,
    /// Whether `read` may block its thread (see [`AuditPages::on_own_thread`]).
    on_own_thread: bool,
}

enum Reader {
    /// The connection (`None` only while a page is being read on the blocking pool) and the
    /// file it reads, for [`AuditPages::twin`].
    Rusqlite(Option<rusqlite::Connection>, PathBuf),
    Sqlx(AnyPool),
}

impl Store {
    /// The highest audit id (0 when the log is empty).
    pub async fn audit_max_id(&self) -> sqlx::Result<i64> {
        sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM audit_log")
            .fetch_one(&self.pool)
            .await
    }

    /// How many rows after `after` match `filter` (up to its `max_id`).
    pub async fn audit_count_matching(
        &self,
        after: i64,
        filter: &AuditFilter,
    ) -> sqlx::Result<u64> {
        let (clause, _) = filter.where_clause();
        let sql = format!("SELECT COUNT(*) FROM audit_log WHERE {clause}");
        let mut query = sqlx::query_scalar::<_, i64>(&sql)
            .bind(after)
            .bind(filter.max_id);
        for bind in filter.extra_binds() {
            query = match bind {
                Bind::Int(v) => query.bind(v),
                Bind::Text(v) => query.bind(v),
            };
        }
        Ok(query.fetch_one(&self.pool).await?.max(0) as u64)
    }

    /// A page reader for `filter`: rusqlite on an SQLite file unless `portable`, sqlx
    /// otherwise.
    pub fn audit_pages(&self, filter: &AuditFilter, portable: bool) -> anyhow::Result<AuditPages> {
        let (clause, n) = filter.where_clause();
        let sql = format!(
            "SELECT id, at, action, username, detail FROM audit_log WHERE {clause} ORDER BY id LIMIT ${n}"
        );
        let reader = match (&self.sqlite_file, portable) {
            (Some(path), false) => Reader::Rusqlite(Some(open_read_only(path)?), path.clone()),
            _ => Reader::Sqlx(self.pool.clone()),
        };
        Ok(AuditPages {
            reader,
            sql,
            max_id: filter.max_id,
            extra: filter.extra_binds(),
            on_own_thread: false,
        })
    }
}

/// A read-only connection to the SQLite file behind the pool.
fn open_read_only(path: &PathBuf) -> anyhow::Result<rusqlite::Connection> {
    use rusqlite::OpenFlags;
    let conn = rusqlite::Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| anyhow::anyhow!("cannot open {} for reading: {e}", path.display()))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}

impl AuditPages {
    /// Which reader this is: `"rusqlite"` or `"sqlx"`.
    pub fn engine(&self) -> &'static str {
        match self.reader {
            Reader::Rusqlite(..) => "rusqlite",
            Reader::Sqlx(_) => "sqlx",
        }
    }

    /// Promises that [`read`](Self::read) is polled on a thread that may block (one taken
    /// from the blocking pool for the whole export, driving it with `Handle::block_on`), so
    /// the rusqlite reader reads each page right there. Otherwise every page hops to the
    /// blocking pool and back: the benchmark measured that hop at about a sixth of the
    /// export's time with 500-row pages.
    pub fn on_own_thread(mut self) -> Self {
        self.on_own_thread = true;
        self
    }

    /// The last id this reader covers (the export's snapshot).
    pub fn max_id(&self) -> i64 {
        self.max_id
    }

    /// Whether [`read_here`](Self::read_here) works: the rusqlite reader, on a thread that
    /// may block (see [`on_own_thread`](Self::on_own_thread)).
    pub fn reads_here(&self) -> bool {
        self.on_own_thread && matches!(self.reader, Reader::Rusqlite(Some(_), _))
    }

    /// A second reader of the same rows on its own connection, for reading pages on another
    /// thread with [`read_here`](Self::read_here): `None` for the sqlx reader.
    pub fn twin(&self) -> anyhow::Result<Option<AuditPages>> {
        let Reader::Rusqlite(_, path) = &self.reader else {
            return Ok(None);
        };
        Ok(Some(AuditPages {
            reader: Reader::Rusqlite(Some(open_read_only(path)?), path.clone()),
            sql: self.sql.clone(),
            max_id: self.max_id,
            extra: self.extra.clone(),
            on_own_thread: true,
        }))
    }

    /// The placeholder values for rows in `(after, upto]`, at most `limit` of them.
    fn binds(&self, after: i64, upto: i64, limit: u32) -> Vec<Bind> {
        let mut binds = Vec::with_capacity(self.extra.len() + 3);
        binds.push(Bind::Int(after));
        binds.push(Bind::Int(upto.min(self.max_id)));
        binds.extend(self.extra.iter().cloned());
        binds.push(Bind::Int(i64::from(limit)));
        binds
    }

    /// Reads the rows with ids in `(after, upto]` (and at most the snapshot's last id), at
    /// most `limit` of them, into `sink` on this thread, which may block: the rusqlite reader
    /// only (a [`twin`](Self::twin) is one).
    pub fn read_here<S: AuditSink>(
        &self,
        after: i64,
        upto: i64,
        limit: u32,
        sink: &mut S,
    ) -> anyhow::Result<Page> {
        let binds = self.binds(after, upto, limit);
        read_rusqlite(self.conn_here()?, &self.sql, &binds, after, sink)
    }

    /// The rusqlite connection, for the `…_here` methods (on a thread that may block).
    fn conn_here(&self) -> anyhow::Result<&rusqlite::Connection> {
        match &self.reader {
            Reader::Rusqlite(Some(conn), _) => Ok(conn),
            Reader::Rusqlite(None, _) => anyhow::bail!("an earlier page read failed"),
            Reader::Sqlx(_) => anyhow::bail!("the sqlx reader reads on the runtime"),
        }
    }

    /// The first id above `after` (and at most the snapshot's last id) of any row, filtered
    /// or not: one seek down the table's b-tree. `None` when there is none. The rusqlite
    /// reader only, on a thread that may block.
    pub fn next_id_here(&self, after: i64) -> anyhow::Result<Option<i64>> {
        use rusqlite::OptionalExtension;
        let mut stmt = self.conn_here()?.prepare_cached(
            "SELECT id FROM audit_log WHERE id > ?1 AND id <= ?2 ORDER BY id LIMIT 1",
        )?;
        Ok(stmt
            .query_row([after, self.max_id], |row| row.get(0))
            .optional()?)
    }

    /// The log's change counter (`audit_log_epoch`, see `export::cache`): the rusqlite reader
    /// only, on a thread that may block.
    pub fn epoch_here(&self) -> anyhow::Result<i64> {
        let mut stmt = self
            .conn_here()?
            .prepare_cached("SELECT epoch FROM audit_log_epoch")?;
        Ok(stmt.query_row([], |row| row.get(0))?)
    }

    /// Reads up to `limit` rows with ids above `after` into `sink`, and gives the sink back.
    pub async fn read<S: AuditSink>(
        &mut self,
        after: i64,
        limit: u32,
        mut sink: S,
    ) -> anyhow::Result<(S, Page)> {
        if self.reads_here() {
            let page = self.read_here(after, self.max_id, limit, &mut sink)?;
            return Ok((sink, page));
        }
        let binds = self.binds(after, self.max_id, limit);
        match &mut self.reader {
            Reader::Rusqlite(slot, _) => {
                let conn = slot
                    .take()
                    .ok_or_else(|| anyhow::anyhow!("an earlier page read failed"))?;
                let sql = self.sql.clone();
                let (conn, result) = tokio::task::spawn_blocking(move || {
                    let result = read_rusqlite(&conn, &sql, &binds, after, &mut sink);
                    (conn, result.map(|page| (sink, page)))
                })
                .await?;
                *slot = Some(conn);
                Ok(result?)
            }
            Reader::Sqlx(pool) => {
                let mut query = sqlx::query(&self.sql);
                for bind in binds {
                    query = match bind {
                        Bind::Int(v) => query.bind(v),
                        Bind::Text(v) => query.bind(v),
                    };
                }
                let mut page = Page {
                    rows: 0,
                    last_id: after,
                };
                for row in query.fetch_all(&*pool).await? {
                    let id: i64 = row.try_get(0)?;
                    let at: i64 = row.try_get(1)?;
                    let action: String = row.try_get(2)?;
                    let user: String = row.try_get(3)?;
                    let detail: String = row.try_get(4)?;
                    sink.row(
                        id,
                        at,
                        action.as_bytes(),
                        user.as_bytes(),
                        detail.as_bytes(),
                    );
                    page.rows += 1;
                    page.last_id = id;
                }
                Ok((sink, page))
            }
        }
    }
}

/// One page through rusqlite: columns are borrowed from SQLite's own buffers.
fn read_rusqlite<S: AuditSink>(
    conn: &rusqlite::Connection,
    sql: &str,
    binds: &[Bind],
    after: i64,
    sink: &mut S,
) -> anyhow::Result<Page> {
    use rusqlite::types::Value;
    let mut stmt = conn.prepare_cached(sql)?;
    let values = binds.iter().map(|b| match b {
        Bind::Int(v) => Value::Integer(*v),
        Bind::Text(v) => Value::Text(v.clone()),
    });
    let mut rows = stmt.query(rusqlite::params_from_iter(values))?;
    let mut page = Page {
        rows: 0,
        last_id: after,
    };
    while let Some(row) = rows.next()? {
        let id: i64 = row.get(0)?;
        let at: i64 = row.get(1)?;
        let action = row.get_ref(2)?.as_bytes()?;
        let user = row.get_ref(3)?.as_bytes()?;
        let detail = row.get_ref(4)?.as_bytes()?;
        sink.row(id, at, action, user, detail);
        page.rows += 1;
        page.last_id = id;
    }
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Collect(Vec<(i64, i64, String, String, String)>);

    impl AuditSink for Collect {
        fn row(&mut self, id: i64, at_ms: i64, action: &[u8], user: &[u8], detail: &[u8]) {
            let text = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
            self.0
                .push((id, at_ms, text(action), text(user), text(detail)));
        }
    }

    async fn read_all(store: &Store, filter: &AuditFilter, portable: bool, batch: u32) -> Vec<i64> {
        let mut pages = store.audit_pages(filter, portable).unwrap();
        assert_eq!(pages.engine(), if portable { "sqlx" } else { "rusqlite" });
        let (mut after, mut ids) = (0, Vec::new());
        loop {
            let (sink, page) = pages.read(after, batch, Collect::default()).await.unwrap();
            ids.extend(sink.0.iter().map(|r| r.0));
            if page.rows < batch {
                return ids;
            }
            after = page.last_id;
        }
    }

    #[tokio::test]
    async fn both_readers_page_the_same_rows_under_every_filter() {
        let (_dir, store) = crate::server::storage::temp_store().await;
        let rows: Vec<_> = (0..1000)
            .map(|i: i64| {
                let action = ["LOGIN", "LOGOUT", "EXPORT"][(i % 3) as usize].to_string();
                crate::server::storage::audit::NewAuditRow {
                    at: i * 10,
                    action,
                    username: format!("u{}", i % 7),
                    detail: format!("{{\"i\":{i}}}"),
                }
            })
            .collect();
        store.audit_many(&rows).await.unwrap();
        let max_id = store.audit_max_id().await.unwrap();
        assert_eq!(max_id, 1000);
        store
            .audit("LOGIN", "late", &serde_json::json!({}), 1)
            .await
            .unwrap();

        let filters = [
            AuditFilter {
                max_id,
                ..Default::default()
            },
            AuditFilter {
                max_id,
                actions: vec!["LOGIN".into(), "EXPORT".into()],
                ..Default::default()
            },
            AuditFilter {
                max_id,
                user: Some("u3".into()),
                ..Default::default()
            },
            AuditFilter {
                max_id,
                since_ms: Some(2000),
                until_ms: Some(5000),
                ..Default::default()
            },
        ];
        let expected: [usize; 4] = [1000, 667, 143, 300];
        for (filter, want) in filters.iter().zip(expected) {
            let fast = read_all(&store, filter, false, 64).await;
            let portable = read_all(&store, filter, true, 64).await;
            assert_eq!(fast, portable, "{filter:?}");
            assert_eq!(fast.len(), want, "{filter:?}");
            assert!(fast.windows(2).all(|w| w[0] < w[1]), "ascending");
            assert!(fast.iter().all(|id| *id <= max_id), "snapshot kept");
            assert_eq!(
                store.audit_count_matching(0, filter).await.unwrap(),
                want as u64
            );
        }
        assert_eq!(
            store
                .audit_count_matching(
                    990,
                    &AuditFilter {
                        max_id,
                        ..Default::default()
                    }
                )
                .await
                .unwrap(),
            10
        );

        let mut pages = store.audit_pages(&filters[0], false).unwrap();
        let (sink, page) = pages.read(500, 2, Collect::default()).await.unwrap();
        assert_eq!(
            page,
            Page {
                rows: 2,
                last_id: 502
            }
        );
        assert_eq!(
            sink.0[0],
            (
                501,
                5000,
                "EXPORT".into(),
                "u3".into(),
                "{\"i\":500}".into()
            )
        );
    }
}
