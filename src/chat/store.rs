//! Chat rooms and their messages, as the chat stores them.
//!
//! [`Store::append_chat_messages`] stores a batch of messages from any rooms in one
//! transaction: per room, one upsert that advances `chat_rooms.last_id` by the batch's count
//! (which hands out the ids, under the row's lock, so instances sharing a database never
//! collide), one multi-row insert, and one delete that trims the room to its history bound.
//! The chat's writer task calls it with whatever arrived meanwhile, so a busy room costs one
//! transaction per batch, not per message.
//!
//! Tests: `cargo test --features ssr chat::store`.

use sqlx::Row;

use crate::server::storage::{placeholders, Store, ROWS_PER_STATEMENT};

/// A message about to be stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewChatMessage {
    pub room: String,
    pub author: String,
    pub text: String,
    pub at: i64,
    /// The sender's `clientId` or `Idempotency-Key`: a repeat within [`SEND_KEY_MS`] of the
    /// first is not stored again; its row comes back with `repeat` set.
    pub key: Option<String>,
}

/// How long a send key is remembered (24 h).
pub const SEND_KEY_MS: i64 = 24 * 60 * 60 * 1000;

/// A stored message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatRow {
    pub room: String,
    /// Rises by one per message within the room.
    pub id: i64,
    pub author: String,
    pub text: String,
    pub created_at: i64,
    /// Deleted (a tombstone: the text is gone).
    pub deleted: bool,
    /// Not stored now: the sender's key was used before, and this is the first message.
    pub repeat: bool,
}

/// The first message of a repeated send key.
#[derive(Clone)]
enum First {
    /// Stored before this batch.
    Stored(ChatRow),
    /// Earlier in this batch, at this position.
    InBatch(usize),
}

/// What a room holds: the first kept id (`None` while empty) and the last id handed out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RoomBounds {
    pub first_id: Option<i64>,
    pub last_id: i64,
}

/// A room and its newest message id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomRow {
    pub name: String,
    pub last_id: i64,
}

fn chat_from(row: &sqlx::any::AnyRow) -> sqlx::Result<ChatRow> {
    Ok(ChatRow {
        room: row.try_get(0)?,
        id: row.try_get(1)?,
        author: row.try_get(2)?,
        text: row.try_get(3)?,
        created_at: row.try_get(4)?,
        deleted: row.try_get::<i64, _>(5)? != 0,
        repeat: false,
    })
}

/// Who may use a room: anyone (public) or its members.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomAccessRow {
    pub private: bool,
    pub owner: Option<String>,
    /// The members of a private room, sorted (empty for a public one).
    pub members: Vec<String>,
}

/// A room as one user sees it in the room list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomListRow {
    pub name: String,
    pub private: bool,
    pub owner: Option<String>,
    pub last_id: i64,
    pub last_read_id: i64,
    pub unread: i64,
}

impl Store {
    /// Stores `batch` (in order; rooms may be mixed) and returns the stored rows in the same
    /// order. Each room keeps its latest `keep` messages.
    pub async fn append_chat_messages(
        &self,
        batch: &[NewChatMessage],
        keep: i64,
    ) -> sqlx::Result<Vec<ChatRow>> {
        let mut ids = vec![0i64; batch.len()];
        let mut tx = self.pool.begin().await?;
        // Keys first: a key used before names its first message, and that message is not
        // stored again (`firsts[i]`: the repeat's first, as a stored row or a batch position).
        let mut firsts: Vec<Option<First>> = vec![None; batch.len()];
        let mut claimed: Vec<(&str, &str, usize)> = Vec::new();
        for (i, m) in batch.iter().enumerate() {
            let Some(key) = m.key.as_deref() else {
                continue;
            };
            if let Some(&(_, _, at)) = claimed.iter().find(|(a, k, _)| *a == m.author && *k == key)
            {
                firsts[i] = Some(First::InBatch(at));
                continue;
            }
            sqlx::query("DELETE FROM chat_sends WHERE author = $1 AND send_key = $2 AND at < $3")
                .bind(m.author.as_str())
                .bind(key)
                .bind(m.at - SEND_KEY_MS)
                .execute(&mut *tx)
                .await?;
            let fresh = sqlx::query(
                "INSERT INTO chat_sends (author, send_key, room, message_id, at) VALUES ($1, $2, $3, 0, $4)
                 ON CONFLICT (author, send_key) DO NOTHING",
            )
            .bind(m.author.as_str())
            .bind(key)
            .bind(m.room.as_str())
            .bind(m.at)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if fresh {
                claimed.push((&m.author, key, i));
                continue;
            }
            let row = sqlx::query(
                "SELECT s.room, s.message_id, m.author, m.text, m.created_at, m.deleted
                 FROM chat_sends s LEFT JOIN chat_messages m ON m.room = s.room AND m.id = s.message_id
                 WHERE s.author = $1 AND s.send_key = $2",
            )
            .bind(m.author.as_str())
            .bind(key)
            .fetch_one(&mut *tx)
            .await?;
            let room: String = row.try_get(0)?;
            let id: i64 = row.try_get(1)?;
            // Trimmed from the history since: the ack needs only the id.
            let stored = ChatRow {
                id,
                author: row
                    .try_get::<Option<String>, _>(2)?
                    .unwrap_or_else(|| m.author.clone()),
                text: row.try_get::<Option<String>, _>(3)?.unwrap_or_default(),
                created_at: row.try_get::<Option<i64>, _>(4)?.unwrap_or(m.at),
                deleted: row.try_get::<Option<i64>, _>(5)?.is_some_and(|d| d != 0),
                room,
                repeat: true,
            };
            firsts[i] = Some(First::Stored(stored));
        }
        // Rooms in order of first appearance, each with the positions of its messages.
        let mut rooms: Vec<(&str, Vec<usize>)> = Vec::new();
        for (i, m) in batch.iter().enumerate() {
            if firsts[i].is_some() {
                continue;
            }
            match rooms.iter_mut().find(|(r, _)| *r == m.room) {
                Some((_, at)) => at.push(i),
                None => rooms.push((&m.room, vec![i])),
            }
        }
        // Rooms in name order: two instances writing the same rooms lock them in the same
        // order, so they cannot deadlock.
        rooms.sort_by(|a, b| a.0.cmp(b.0));
        for (room, positions) in &rooms {
            let count = positions.len() as i64;
            let last: i64 = sqlx::query(
                "INSERT INTO chat_rooms (name, last_id, created_at) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO UPDATE SET last_id = chat_rooms.last_id + $2
                 RETURNING last_id",
            )
            .bind(*room)
            .bind(count)
            .bind(batch[positions[0]].at)
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
            for (k, &i) in positions.iter().enumerate() {
                ids[i] = last - count + 1 + k as i64;
            }
            for chunk in positions.chunks(ROWS_PER_STATEMENT) {
                let sql = format!(
                    "INSERT INTO chat_messages (room, id, author, text, created_at) VALUES {}",
                    placeholders(chunk.len(), 5)
                );
                let mut query = sqlx::query(&sql);
                for &i in chunk {
                    let m = &batch[i];
                    query = query
                        .bind(m.room.as_str())
                        .bind(ids[i])
                        .bind(m.author.as_str())
                        .bind(m.text.as_str())
                        .bind(m.at);
                }
                query.execute(&mut *tx).await?;
            }
            sqlx::query("DELETE FROM chat_messages WHERE room = $1 AND id <= $2")
                .bind(*room)
                .bind(last - keep)
                .execute(&mut *tx)
                .await?;
        }
        for &(author, key, i) in &claimed {
            sqlx::query(
                "UPDATE chat_sends SET message_id = $3 WHERE author = $1 AND send_key = $2",
            )
            .bind(author)
            .bind(key)
            .bind(ids[i])
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        let stored = |i: usize| {
            let m = &batch[i];
            ChatRow {
                room: m.room.clone(),
                id: ids[i],
                author: m.author.clone(),
                text: m.text.clone(),
                created_at: m.at,
                deleted: false,
                repeat: false,
            }
        };
        Ok(firsts
            .into_iter()
            .enumerate()
            .map(|(i, first)| match first {
                None => stored(i),
                Some(First::Stored(row)) => row,
                Some(First::InBatch(at)) => ChatRow {
                    repeat: true,
                    ..stored(at)
                },
            })
            .collect())
    }

    /// Forgets send keys older than [`SEND_KEY_MS`] before `now`; returns how many.
    pub async fn forget_send_keys(&self, now: i64) -> sqlx::Result<u64> {
        Ok(sqlx::query("DELETE FROM chat_sends WHERE at < $1")
            .bind(now - SEND_KEY_MS)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    /// Up to `limit` messages of `room` after id `after`, oldest first.
    pub async fn chat_messages_after(
        &self,
        room: &str,
        after: i64,
        limit: i64,
    ) -> sqlx::Result<Vec<ChatRow>> {
        sqlx::query(
            "SELECT room, id, author, text, created_at, deleted FROM chat_messages
             WHERE room = $1 AND id > $2 ORDER BY id LIMIT $3",
        )
        .bind(room)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(chat_from)
        .collect()
    }

    /// The latest `limit` messages of `room`, oldest first.
    pub async fn latest_chat_messages(&self, room: &str, limit: i64) -> sqlx::Result<Vec<ChatRow>> {
        let mut rows = sqlx::query(
            "SELECT room, id, author, text, created_at, deleted FROM chat_messages
             WHERE room = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(room)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(chat_from)
        .collect::<sqlx::Result<Vec<_>>>()?;
        rows.reverse();
        Ok(rows)
    }

    /// The first kept and the last handed-out id of `room` (zeros for a room never used).
    pub async fn chat_room_bounds(&self, room: &str) -> sqlx::Result<RoomBounds> {
        let row = sqlx::query(
            "SELECT (SELECT MIN(id) FROM chat_messages WHERE room = $1),
                    (SELECT last_id FROM chat_rooms WHERE name = $1)",
        )
        .bind(room)
        .fetch_one(&self.pool)
        .await?;
        Ok(RoomBounds {
            first_id: row.try_get::<Option<i64>, _>(0)?,
            last_id: row.try_get::<Option<i64>, _>(1)?.unwrap_or(0),
        })
    }

    /// Rooms that have had messages, busiest (highest id) first, at most `limit`.
    pub async fn chat_rooms(&self, limit: i64) -> sqlx::Result<Vec<RoomRow>> {
        sqlx::query("SELECT name, last_id FROM chat_rooms ORDER BY last_id DESC, name LIMIT $1")
            .bind(limit)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| {
                Ok(RoomRow {
                    name: r.try_get(0)?,
                    last_id: r.try_get(1)?,
                })
            })
            .collect()
    }

    /// Who may use `room`; `None` for a room that does not exist yet.
    pub async fn room_access(&self, room: &str) -> sqlx::Result<Option<RoomAccessRow>> {
        let Some(row) = sqlx::query("SELECT private, owner FROM chat_rooms WHERE name = $1")
            .bind(room)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let private = row.try_get::<i64, _>(0)? != 0;
        let owner: Option<String> = row.try_get(1)?;
        let members = if private {
            self.room_members(room).await?
        } else {
            Vec::new()
        };
        Ok(Some(RoomAccessRow {
            private,
            owner,
            members,
        }))
    }

    /// The members of a private room, sorted.
    pub async fn room_members(&self, room: &str) -> sqlx::Result<Vec<String>> {
        sqlx::query("SELECT username FROM chat_members WHERE room = $1 ORDER BY username")
            .bind(room)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| r.try_get(0))
            .collect()
    }

    /// Creates `room` (private: with `owner` as its first member). `false` when the name is
    /// taken.
    pub async fn create_room(
        &self,
        room: &str,
        private: bool,
        owner: Option<&str>,
        at: i64,
    ) -> sqlx::Result<bool> {
        let mut tx = self.pool.begin().await?;
        let made = sqlx::query(
            "INSERT INTO chat_rooms (name, last_id, created_at, private, owner)
             VALUES ($1, 0, $2, $3, $4) ON CONFLICT (name) DO NOTHING",
        )
        .bind(room)
        .bind(at)
        .bind(i64::from(private))
        .bind(owner)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if made && private {
            if let Some(owner) = owner {
                sqlx::query(
                    "INSERT INTO chat_members (room, username, added_at) VALUES ($1, $2, $3)",
                )
                .bind(room)
                .bind(owner)
                .bind(at)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(made)
    }

    /// Adds `user` to `room`'s members; `false` when already one.
    pub async fn add_member(&self, room: &str, user: &str, at: i64) -> sqlx::Result<bool> {
        Ok(sqlx::query(
            "INSERT INTO chat_members (room, username, added_at) VALUES ($1, $2, $3)
             ON CONFLICT (room, username) DO NOTHING",
        )
        .bind(room)
        .bind(user)
        .bind(at)
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1)
    }

    /// Removes `user` from `room`'s members; `false` when not one.
    pub async fn remove_member(&self, room: &str, user: &str) -> sqlx::Result<bool> {
        Ok(
            sqlx::query("DELETE FROM chat_members WHERE room = $1 AND username = $2")
                .bind(room)
                .bind(user)
                .execute(&self.pool)
                .await?
                .rows_affected()
                == 1,
        )
    }

    /// The public rooms and `user`'s private ones, busiest first, at most `limit`, with
    /// `user`'s read position and unread count in each.
    pub async fn rooms_for(&self, user: &str, limit: i64) -> sqlx::Result<Vec<RoomListRow>> {
        sqlx::query(
            "SELECT r.name, r.private, r.owner, r.last_id, COALESCE(rd.last_read_id, 0),
                    (SELECT COUNT(*) FROM chat_messages m
                      WHERE m.room = r.name AND m.id > COALESCE(rd.last_read_id, 0)
                        AND m.author <> $1 AND m.deleted = 0)
             FROM chat_rooms r
             LEFT JOIN chat_reads rd ON rd.room = r.name AND rd.username = $1
             WHERE r.private = 0
                OR EXISTS (SELECT 1 FROM chat_members cm WHERE cm.room = r.name AND cm.username = $1)
             ORDER BY r.last_id DESC, r.name LIMIT $2",
        )
        .bind(user)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| {
            Ok(RoomListRow {
                name: r.try_get(0)?,
                private: r.try_get::<i64, _>(1)? != 0,
                owner: r.try_get(2)?,
                last_id: r.try_get(3)?,
                last_read_id: r.try_get(4)?,
                unread: r.try_get(5)?,
            })
        })
        .collect()
    }

    /// Moves `user`'s read position in `room` forward to `id` (never back); returns where
    /// it is now.
    pub async fn set_read(&self, user: &str, room: &str, id: i64) -> sqlx::Result<i64> {
        sqlx::query(
            "INSERT INTO chat_reads (username, room, last_read_id) VALUES ($1, $2, $3)
             ON CONFLICT (username, room) DO UPDATE SET last_read_id =
               CASE WHEN excluded.last_read_id > chat_reads.last_read_id
                    THEN excluded.last_read_id ELSE chat_reads.last_read_id END
             RETURNING last_read_id",
        )
        .bind(user)
        .bind(room)
        .bind(id)
        .fetch_one(&self.pool)
        .await?
        .try_get(0)
    }

    /// The author of message `id` in `room` (`None`: no such message kept).
    pub async fn chat_message_author(&self, room: &str, id: i64) -> sqlx::Result<Option<String>> {
        sqlx::query("SELECT author FROM chat_messages WHERE room = $1 AND id = $2")
            .bind(room)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| r.try_get(0))
            .transpose()
    }

    /// Turns message `id` of `room` into a tombstone: the id stays, the text goes.
    pub async fn delete_chat_message(&self, room: &str, id: i64) -> sqlx::Result<bool> {
        Ok(sqlx::query(
            "UPDATE chat_messages SET deleted = 1, text = '' WHERE room = $1 AND id = $2",
        )
        .bind(room)
        .bind(id)
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(room: &str, text: &str) -> NewChatMessage {
        NewChatMessage {
            room: room.into(),
            author: "alice".into(),
            text: text.into(),
            at: 1_000,
            key: None,
        }
    }

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let store = Store::connect(&url).await.unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn ids_rise_per_room_across_mixed_batches() {
        let (_dir, store) = store().await;
        let rows = store
            .append_chat_messages(&[new("a", "1"), new("b", "1"), new("a", "2")], 1000)
            .await
            .unwrap();
        let ids: Vec<(&str, i64)> = rows.iter().map(|r| (r.room.as_str(), r.id)).collect();
        assert_eq!(ids, vec![("a", 1), ("b", 1), ("a", 2)]);
        let rows = store
            .append_chat_messages(&[new("a", "3")], 1000)
            .await
            .unwrap();
        assert_eq!(rows[0].id, 3);
        let after = store.chat_messages_after("a", 1, 10).await.unwrap();
        assert_eq!(
            after.iter().map(|r| r.text.as_str()).collect::<Vec<_>>(),
            vec!["2", "3"]
        );
        let rooms = store.chat_rooms(10).await.unwrap();
        assert_eq!(rooms[0].name, "a");
        assert_eq!(rooms[0].last_id, 3);
    }

    #[tokio::test]
    async fn private_rooms_members_reads_and_tombstones() {
        let (_dir, store) = store().await;
        assert!(store
            .create_room("club", true, Some("alice"), 1)
            .await
            .unwrap());
        assert!(
            !store.create_room("club", false, None, 1).await.unwrap(),
            "taken"
        );
        let access = store.room_access("club").await.unwrap().unwrap();
        assert!(access.private);
        assert_eq!(access.owner.as_deref(), Some("alice"));
        assert_eq!(access.members, ["alice"]);
        assert!(store.add_member("club", "bob", 2).await.unwrap());
        assert!(!store.add_member("club", "bob", 2).await.unwrap());
        assert_eq!(store.room_members("club").await.unwrap(), ["alice", "bob"]);
        store
            .append_chat_messages(&[new("club", "1"), new("club", "2"), new("open", "x")], 100)
            .await
            .unwrap();
        let bobs = store.rooms_for("bob", 10).await.unwrap();
        let club = bobs.iter().find(|r| r.name == "club").unwrap();
        assert_eq!((club.last_id, club.last_read_id, club.unread), (2, 0, 2));
        assert_eq!(store.set_read("bob", "club", 1).await.unwrap(), 1);
        assert_eq!(
            store.set_read("bob", "club", 0).await.unwrap(),
            1,
            "never back"
        );
        assert!(store.delete_chat_message("club", 2).await.unwrap());
        let bobs = store.rooms_for("bob", 10).await.unwrap();
        assert_eq!(bobs.iter().find(|r| r.name == "club").unwrap().unread, 0);
        let gone = store.chat_messages_after("club", 1, 10).await.unwrap();
        assert!(gone[0].deleted && gone[0].text.is_empty());
        assert!(store.remove_member("club", "bob").await.unwrap());
        let carol = store.rooms_for("bob", 10).await.unwrap();
        assert!(
            carol.iter().all(|r| r.name != "club"),
            "not listed to non-members"
        );
        assert_eq!(
            store
                .chat_message_author("club", 1)
                .await
                .unwrap()
                .as_deref(),
            Some("alice")
        );
        assert_eq!(store.chat_message_author("club", 9).await.unwrap(), None);
    }

    #[tokio::test]
    async fn rooms_keep_a_bounded_history() {
        let (_dir, store) = store().await;
        let batch: Vec<_> = (0..40).map(|i| new("r", &i.to_string())).collect();
        store.append_chat_messages(&batch, 25).await.unwrap();
        let bounds = store.chat_room_bounds("r").await.unwrap();
        assert_eq!(
            bounds,
            RoomBounds {
                first_id: Some(16),
                last_id: 40
            }
        );
        let latest = store.latest_chat_messages("r", 3).await.unwrap();
        assert_eq!(
            latest.iter().map(|r| r.id).collect::<Vec<_>>(),
            vec![38, 39, 40]
        );
        assert_eq!(
            store.chat_room_bounds("nowhere").await.unwrap(),
            RoomBounds::default()
        );
    }

    #[tokio::test]
    async fn a_repeated_send_key_stores_once_and_answers_with_the_first_message() {
        let (_dir, store) = store().await;
        let keyed = |text: &str, key: &str| NewChatMessage {
            key: Some(key.into()),
            ..new("general", text)
        };
        // In one batch: the second use of "k1" is the first's message.
        let rows = store
            .append_chat_messages(
                &[
                    keyed("one", "k1"),
                    keyed("one again", "k1"),
                    new("general", "plain"),
                ],
                100,
            )
            .await
            .unwrap();
        assert_eq!(
            rows.iter()
                .map(|r| (r.id, r.repeat, r.text.as_str()))
                .collect::<Vec<_>>(),
            [(1, false, "one"), (1, true, "one"), (2, false, "plain")]
        );
        // In a later batch, and from another room: still the first message.
        let again = store
            .append_chat_messages(
                &[NewChatMessage {
                    room: "other".into(),
                    ..keyed("x", "k1")
                }],
                100,
            )
            .await
            .unwrap();
        assert_eq!(
            (
                again[0].room.as_str(),
                again[0].id,
                again[0].repeat,
                again[0].text.as_str()
            ),
            ("general", 1, true, "one")
        );
        // Another author's "k1" is theirs.
        let bob = store
            .append_chat_messages(
                &[NewChatMessage {
                    author: "bob".into(),
                    ..keyed("bob's", "k1")
                }],
                100,
            )
            .await
            .unwrap();
        assert_eq!((bob[0].id, bob[0].repeat), (3, false));
        assert_eq!(
            store
                .chat_messages_after("general", 0, 10)
                .await
                .unwrap()
                .len(),
            3
        );
        // A day later the key is free again.
        let later = store
            .append_chat_messages(
                &[NewChatMessage {
                    at: 1_000 + SEND_KEY_MS + 1,
                    ..keyed("new day", "k1")
                }],
                100,
            )
            .await
            .unwrap();
        assert_eq!((later[0].id, later[0].repeat), (4, false));
        assert_eq!(
            store
                .forget_send_keys(1_000 + SEND_KEY_MS + 2)
                .await
                .unwrap(),
            1,
            "bob's old key goes"
        );
    }
}
