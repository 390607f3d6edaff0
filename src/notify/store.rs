//! Notifications as the notify feature stores them: ids in order across everyone's; one to
//! some users names them in `notification_recipients`; each user's inbox is read up to an id
//! (`notification_reads`). The table keeps the latest [`Store::create_notification`]'s `keep`:
//! a subscriber resuming from before the oldest kept is told there is a gap.
//!
//! Tests: the unit tests below; `tests/it/notify.rs`.

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

/// "Mine": to everyone since my account was made (a new account does not start with the
/// whole history unread), or to `$1` by name.
const MINE: &str = "((n.to_all = 1 AND n.created_at >=
                       COALESCE((SELECT u.created_at FROM users u WHERE u.username = $1), 0))
                     OR EXISTS (SELECT 1 FROM notification_recipients r
                     WHERE r.notification_id = n.id AND r.username = $1))";

fn row_of(r: &sqlx::any::AnyRow) -> sqlx::Result<NotificationRow> {
    Ok(NotificationRow {
        id: r.try_get(0)?,
        kind: r.try_get(1)?,
        title: r.try_get(2)?,
        message: r.try_get(3)?,
        sender: r.try_get(4)?,
        created_at: r.try_get(5)?,
    })
}

impl Store {
    /// Up to `limit` of `user`'s notifications after id `after`, oldest first.
    pub async fn notifications_for(
        &self,
        user: &str,
        after: i64,
        limit: i64,
    ) -> sqlx::Result<Vec<NotificationRow>> {
        let sql = format!(
            "SELECT n.id, n.kind, n.title, n.message, n.sender, n.created_at FROM notifications n
             WHERE n.id > $2 AND {MINE} ORDER BY n.id LIMIT $3"
        );
        sqlx::query(&sql)
            .bind(user)
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(row_of)
            .collect()
    }

    /// `user`'s latest `limit` notifications, oldest first.
    pub async fn latest_notifications_for(
        &self,
        user: &str,
        limit: i64,
    ) -> sqlx::Result<Vec<NotificationRow>> {
        let sql = format!(
            "SELECT n.id, n.kind, n.title, n.message, n.sender, n.created_at FROM notifications n
             WHERE {MINE} ORDER BY n.id DESC LIMIT $2"
        );
        let mut rows = sqlx::query(&sql)
            .bind(user)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(row_of)
            .collect::<sqlx::Result<Vec<_>>>()?;
        rows.reverse();
        Ok(rows)
    }

    /// The id `user` has read up to (0: none), and how many of theirs are newer.
    pub async fn inbox_state(&self, user: &str) -> sqlx::Result<(i64, i64)> {
        let sql = format!(
            "SELECT COALESCE((SELECT up_to FROM notification_reads WHERE username = $1), 0),
                    (SELECT COUNT(*) FROM notifications n WHERE {MINE} AND n.id >
                       COALESCE((SELECT up_to FROM notification_reads WHERE username = $1), 0))"
        );
        let row = sqlx::query(&sql).bind(user).fetch_one(&self.pool).await?;
        Ok((row.try_get(0)?, row.try_get(1)?))
    }

    /// Marks `user`'s inbox read up to `up_to` (never back); returns where it is now.
    pub async fn mark_notifications_read(&self, user: &str, up_to: i64) -> sqlx::Result<i64> {
        sqlx::query(
            "INSERT INTO notification_reads (username, up_to) VALUES ($1, $2)
             ON CONFLICT (username) DO UPDATE SET up_to =
               CASE WHEN excluded.up_to > notification_reads.up_to
                    THEN excluded.up_to ELSE notification_reads.up_to END
             RETURNING up_to",
        )
        .bind(user)
        .bind(up_to)
        .fetch_one(&self.pool)
        .await?
        .try_get(0)
    }

    /// The oldest kept notification's id (`None`: none kept).
    pub async fn first_notification_id(&self) -> sqlx::Result<Option<i64>> {
        sqlx::query("SELECT MIN(id) FROM notifications")
            .fetch_one(&self.pool)
            .await?
            .try_get(0)
    }

    /// The newest notification's id (0: none yet).
    pub async fn last_notification_id(&self) -> sqlx::Result<i64> {
        let row = sqlx::query("SELECT MAX(id) FROM notifications")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<Option<i64>, _>(0)?.unwrap_or(0))
    }

    /// Stores a notification to `to` (`None`: everyone) and returns it with its id; the
    /// table then keeps the latest `keep`.
    #[allow(clippy::too_many_arguments)]
    pub async fn create_notification(
        &self,
        kind: &str,
        title: &str,
        message: &str,
        sender: &str,
        at: i64,
        to: Option<&[String]>,
        keep: i64,
    ) -> sqlx::Result<NotificationRow> {
        let mut tx = self.pool.begin().await?;
        let id: i64 = sqlx::query(
            "INSERT INTO notifications (kind, title, message, sender, created_at, to_all)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(kind)
        .bind(title)
        .bind(message)
        .bind(sender)
        .bind(at)
        .bind(i64::from(to.is_none()))
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
        for chunk in to
            .unwrap_or_default()
            .chunks(crate::server::storage::ROWS_PER_STATEMENT)
        {
            let sql = format!(
                "INSERT INTO notification_recipients (notification_id, username) VALUES {}",
                crate::server::storage::placeholders(chunk.len(), 2)
            );
            let mut query = sqlx::query(&sql);
            for user in chunk {
                query = query.bind(id).bind(user.as_str());
            }
            query.execute(&mut *tx).await?;
        }
        if id > keep {
            sqlx::query("DELETE FROM notification_recipients WHERE notification_id <= $1")
                .bind(id - keep)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM notifications WHERE id <= $1")
                .bind(id - keep)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
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
