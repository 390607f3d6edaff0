//! What a connection that missed notifications reads back: everything of the user's after
//! an id, a page at a time, with a gap first when some are no longer kept. Shared by the
//! event stream (`Last-Event-ID`, or after falling behind) and the WebSocket
//! (`notifications-since`, or after falling behind).
//!
//! Tests: the unit tests below; `tests/it/notify.rs` over both transports.

use super::store::NotificationRow;
use crate::{
    protocol::chat::{Notification, NotificationGap},
    server::{clock, storage::Store},
};

/// Notifications read back at once.
pub const PAGE: i64 = 100;

/// The wire form of a stored notification.
pub fn wire(row: &NotificationRow) -> Notification {
    Notification {
        id: row.id,
        kind: row.kind.clone(),
        title: row.title.clone(),
        message: row.message.clone(),
        timestamp: clock::rfc3339(row.created_at),
    }
}

/// One page of a read-back.
#[derive(Debug, Default)]
pub struct Page {
    /// Set on the first page when notifications after `after` are no longer kept.
    pub gap: Option<NotificationGap>,
    pub rows: Vec<NotificationRow>,
    /// The id to read on from (the last row's, or `after`).
    pub last_id: i64,
    /// The page came full: read the next one.
    pub more: bool,
}

/// `user`'s notifications after `after`: one page, the gap (if any) with the first.
pub async fn page(store: &Store, user: &str, after: i64, first: bool) -> sqlx::Result<Page> {
    let gap = if first {
        match store.first_notification_id().await? {
            Some(kept) if after + 1 < kept => Some(NotificationGap {
                after_id: after,
                first_available_id: kept,
            }),
            _ => None,
        }
    } else {
        None
    };
    let rows = store.notifications_for(user, after, PAGE).await?;
    Ok(Page {
        gap,
        last_id: rows.last().map_or(after, |r| r.id),
        more: rows.len() as i64 == PAGE,
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_user_reads_back_theirs_with_a_gap_past_what_is_kept() {
        let (_dir, store) = crate::server::storage::temp_store().await;
        let to_bob = vec!["bob".to_string()];
        for i in 0..6 {
            let to = (i % 2 == 1).then_some(to_bob.as_slice());
            store
                .create_notification("info", "Info", &format!("n{i}"), "admin", 1, to, 4)
                .await
                .unwrap();
        }
        // Ids 1..6 made, 3..6 kept; 4 and 6 are bob's only.
        let alice = page(&store, "alice", 0, true).await.unwrap();
        assert_eq!(
            alice.gap,
            Some(NotificationGap {
                after_id: 0,
                first_available_id: 3
            })
        );
        assert_eq!(alice.rows.iter().map(|r| r.id).collect::<Vec<_>>(), [3, 5]);
        let bob = page(&store, "bob", 3, true).await.unwrap();
        assert_eq!(bob.gap, None);
        assert_eq!(bob.rows.iter().map(|r| r.id).collect::<Vec<_>>(), [4, 5, 6]);
        assert_eq!((bob.last_id, bob.more), (6, false));
        assert_eq!(store.inbox_state("bob").await.unwrap(), (0, 4));
        assert_eq!(store.mark_notifications_read("bob", 5).await.unwrap(), 5);
        assert_eq!(store.mark_notifications_read("bob", 1).await.unwrap(), 5);
        assert_eq!(store.inbox_state("bob").await.unwrap(), (5, 1));
    }
}
