//! The audit log as every feature writes it: one row per thing the app did, many rows at once
//! for seeding, rows with their own ids for an import. Reading it back for the export lives
//! with the export (`export/store.rs`).
//!
//! Tests: `cargo test --features ssr server::storage::audit`.

use super::{placeholders, Backend, Store, ROWS_PER_STATEMENT};

/// An audit row about to be written; the database gives it its id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewAuditRow {
    /// When it happened (ms since the epoch).
    pub at: i64,
    /// What happened (`LOGIN`, `SIGNUP`, …).
    pub action: String,
    /// Who did it.
    pub username: String,
    /// Details, as JSON text.
    pub detail: String,
}

/// An audit row with its own id (one read from another server's export, for an import).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRecord {
    /// The id it had where it came from, kept.
    pub id: i64,
    /// The rest of the row.
    pub row: NewAuditRow,
}

/// A recent audit row, as tests and the audit page glance at it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecentAudit {
    pub id: i64,
    pub action: String,
    pub username: String,
}

/// Appends an audit row through `executor`: the pool, or the transaction of the write it
/// records (so both are stored, or neither, in one commit); returns its id.
pub(crate) async fn insert_audit<'e, E>(
    executor: E,
    action: &str,
    username: &str,
    detail: &serde_json::Value,
    now_ms: i64,
) -> sqlx::Result<i64>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    sqlx::query_scalar(
        "INSERT INTO audit_log (at, action, username, detail) VALUES ($1, $2, $3, $4) RETURNING id",
    )
    .bind(now_ms)
    .bind(action)
    .bind(username)
    .bind(detail.to_string())
    .fetch_one(executor)
    .await
}

impl Store {
    /// Appends an audit row for something the app did; returns its id.
    pub async fn audit(
        &self,
        action: &str,
        username: &str,
        detail: &serde_json::Value,
        now_ms: i64,
    ) -> sqlx::Result<i64> {
        insert_audit(self.writer(), action, username, detail, now_ms).await
    }

    /// Appends many audit rows in one transaction, several hundred per statement; returns how
    /// many were written.
    pub async fn audit_many(&self, rows: &[NewAuditRow]) -> sqlx::Result<u64> {
        let mut tx = self.writer().begin().await?;
        let mut written = 0;
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO audit_log (at, action, username, detail) VALUES {}",
                placeholders(chunk.len(), 4)
            );
            let mut query = sqlx::query(&sql);
            for row in chunk {
                query = query
                    .bind(row.at)
                    .bind(row.action.as_str())
                    .bind(row.username.as_str())
                    .bind(row.detail.as_str());
            }
            written += query.execute(&mut *tx).await?.rows_affected();
        }
        tx.commit().await?;
        Ok(written)
    }

    /// Inserts rows with their own ids (an import), skipping ids already present; returns
    /// how many were new. Idempotent: importing the same rows again adds nothing.
    pub async fn audit_import(&self, rows: &[AuditRecord]) -> sqlx::Result<u64> {
        let mut tx = self.writer().begin().await?;
        let mut inserted = 0;
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO audit_log (id, at, action, username, detail) VALUES {}
                 ON CONFLICT (id) DO NOTHING",
                placeholders(chunk.len(), 5)
            );
            let mut query = sqlx::query(&sql);
            for AuditRecord { id, row } in chunk {
                query = query
                    .bind(*id)
                    .bind(row.at)
                    .bind(row.action.as_str())
                    .bind(row.username.as_str())
                    .bind(row.detail.as_str());
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
    pub async fn recent_audit(&self, limit: i64) -> sqlx::Result<Vec<RecentAudit>> {
        let rows: Vec<(i64, String, String)> =
            sqlx::query_as("SELECT id, action, username FROM audit_log ORDER BY id DESC LIMIT $1")
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .into_iter()
            .map(|(id, action, username)| RecentAudit {
                id,
                action,
                username,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::super::temp_store;
    use super::*;

    #[tokio::test]
    async fn imports_keep_ids_count_new_rows_and_leave_ids_for_later_rows() {
        let (_dir, store) = temp_store().await;
        store
            .audit("SIGNUP", "admin", &serde_json::json!({}), 1)
            .await
            .unwrap();
        let rows: Vec<_> = (0..5000)
            .map(|i| AuditRecord {
                id: 10_000 + i,
                row: NewAuditRow {
                    at: i,
                    action: "LOGIN".to_string(),
                    username: "u".to_string(),
                    detail: "{}".to_string(),
                },
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
        assert_eq!(rows[0].action, "LOGOUT");

        let many: Vec<_> = (0..600)
            .map(|i| NewAuditRow {
                at: i,
                action: "SEED".to_string(),
                username: format!("u{i}"),
                detail: "{}".to_string(),
            })
            .collect();
        assert_eq!(store.audit_many(&many).await.unwrap(), 600);
        assert_eq!(store.audit_count().await.unwrap(), 602);
        let newest = store.recent_audit(1).await.unwrap();
        assert_eq!(
            (newest[0].action.as_str(), newest[0].username.as_str()),
            ("SEED", "u599"),
            "order kept"
        );
    }
}
