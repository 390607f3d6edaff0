//! Notifications as the notify feature stores them: one table, ids in order, read back after
//! an id for a reconnecting subscriber.
//!
//! Tests: `cargo test --features ssr notify::` (the feature's routes exercise these queries).

use sqlx::Row;

use crate::server::storage::Store;

/// A stored notification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotificationRow {
    pub id: i64,
    pub kind: String,
    pub title: String,
    pub message: String,
    pub sender: String,
    pub created_at: i64,
}

impl Store {
    /// The newest notification's id (0: none yet).
    pub async fn last_notification_id(&self) -> sqlx::Result<i64> {
        let row = sqlx::query("SELECT MAX(id) FROM notifications")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<Option<i64>, _>(0)?.unwrap_or(0))
    }

    /// Up to `limit` notifications after id `after`, oldest first.
    pub async fn notifications_after(
        &self,
        after: i64,
        limit: i64,
    ) -> sqlx::Result<Vec<NotificationRow>> {
        sqlx::query(
            "SELECT id, kind, title, message, sender, created_at FROM notifications
             WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| {
            Ok(NotificationRow {
                id: r.try_get(0)?,
                kind: r.try_get(1)?,
                title: r.try_get(2)?,
                message: r.try_get(3)?,
                sender: r.try_get(4)?,
                created_at: r.try_get(5)?,
            })
        })
        .collect()
    }

    /// Stores a notification and returns it with its id.
    pub async fn create_notification(
        &self,
        kind: &str,
        title: &str,
        message: &str,
        sender: &str,
        at: i64,
    ) -> sqlx::Result<NotificationRow> {
        let id: i64 = sqlx::query(
            "INSERT INTO notifications (kind, title, message, sender, created_at)
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(kind)
        .bind(title)
        .bind(message)
        .bind(sender)
        .bind(at)
        .fetch_one(&self.pool)
        .await?
        .try_get(0)?;
        Ok(NotificationRow {
            id,
            kind: kind.into(),
            title: title.into(),
            message: message.into(),
            sender: sender.into(),
            created_at: at,
        })
    }
}
