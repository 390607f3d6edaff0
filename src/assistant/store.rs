//! The assistant's chats and their stored tokens.
//!
//! A chat row holds the prompt, its state, how it ended, and who generates it (`claimed_by`,
//! `lease_until`: the instance renews its claims in one statement, and a chat whose claim ran
//! out, its instance gone, is ended with an error by whoever finds it). Tokens are stored in
//! chunks: one row per chat per write batch holding tokens `first_id..=last_id` as a JSON
//! array of their texts. [`Store::store_assistant_batch`] writes a whole batch (many chats'
//! chunks, and the chats that ended) in one transaction: the end of a chat is stored with its
//! last tokens, so a chat marked ended has every token stored.
//!
//! Tests: `cargo test --features ssr assistant::store`.

use sqlx::Row;

use crate::server::storage::{placeholders, Backend, Store, ROWS_PER_STATEMENT};

/// A stored chat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatRow {
    pub id: i64,
    pub owner_id: i64,
    pub prompt: String,
    /// `running`, `completed`, `cancelled` or `failed`.
    pub status: String,
    pub finish_reason: Option<String>,
    pub error: Option<String>,
    /// The last token's id, once ended (while running, see [`Store::stored_tokens`]).
    pub tokens: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    /// Tokens per second × 100.
    pub speed_centi: i64,
    pub created_at: i64,
}

const CHAT_COLUMNS: &str = "id, owner_id, prompt, status, finish_reason, error, tokens, \
     prompt_tokens, completion_tokens, speed_centi, created_at";

fn chat_from(row: &sqlx::any::AnyRow) -> sqlx::Result<ChatRow> {
    Ok(ChatRow {
        id: row.try_get(0)?,
        owner_id: row.try_get(1)?,
        prompt: row.try_get(2)?,
        status: row.try_get(3)?,
        finish_reason: row.try_get(4)?,
        error: row.try_get(5)?,
        tokens: row.try_get(6)?,
        prompt_tokens: row.try_get(7)?,
        completion_tokens: row.try_get(8)?,
        speed_centi: row.try_get(9)?,
        created_at: row.try_get(10)?,
    })
}

/// Tokens `first_id..` of one chat, about to be stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    pub chat_id: i64,
    pub first_id: i64,
    pub texts: Vec<String>,
}

/// How a chat ended, about to be stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ending {
    pub chat_id: i64,
    /// `completed`, `cancelled` or `failed`.
    pub status: String,
    pub finish_reason: Option<String>,
    pub error: Option<String>,
    pub tokens: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub speed_centi: i64,
    pub at: i64,
}

impl Store {
    /// Stores a new running chat claimed by `instance` until `lease_until`, unless `owner_id`
    /// already has `max_running` running (then `Err` with that count).
    pub async fn create_chat(
        &self,
        owner_id: i64,
        prompt: &str,
        instance: &str,
        lease_until: i64,
        at: i64,
        max_running: Option<i64>,
    ) -> sqlx::Result<Result<ChatRow, i64>> {
        // As for jobs: the count and the insert must see the same chats.
        let mut tx = match self.backend() {
            Backend::Sqlite if max_running.is_some() => {
                self.pool.begin_with("BEGIN IMMEDIATE").await?
            }
            _ => self.pool.begin().await?,
        };
        if let Some(max) = max_running {
            if self.backend() == Backend::Postgres {
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(owner_id)
                    .execute(&mut *tx)
                    .await?;
            }
            let running: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM assistant_chats WHERE owner_id = $1 AND status = 'running'",
            )
            .bind(owner_id)
            .fetch_one(&mut *tx)
            .await?;
            if running >= max {
                return Ok(Err(running));
            }
        }
        let sql = format!(
            "INSERT INTO assistant_chats (owner_id, prompt, status, claimed_by, lease_until, created_at)
             VALUES ($1, $2, 'running', $3, $4, $5) RETURNING {CHAT_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(owner_id)
            .bind(prompt)
            .bind(instance)
            .bind(lease_until)
            .bind(at)
            .fetch_one(&mut *tx)
            .await?;
        let chat = chat_from(&row)?;
        tx.commit().await?;
        Ok(Ok(chat))
    }

    /// The chat with this id.
    pub async fn chat(&self, id: i64) -> sqlx::Result<Option<ChatRow>> {
        let sql = format!("SELECT {CHAT_COLUMNS} FROM assistant_chats WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(chat_from).transpose()
    }

    /// A user's latest `limit` chats, newest first.
    pub async fn chats_of(&self, owner_id: i64, limit: i64) -> sqlx::Result<Vec<ChatRow>> {
        let sql = format!(
            "SELECT {CHAT_COLUMNS} FROM assistant_chats WHERE owner_id = $1 ORDER BY id DESC LIMIT $2"
        );
        let rows = sqlx::query(&sql)
            .bind(owner_id)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(chat_from).collect()
    }

    /// The id of a chat's last stored token (0: none yet).
    pub async fn stored_tokens(&self, chat_id: i64) -> sqlx::Result<i64> {
        sqlx::query_scalar(
            "SELECT COALESCE(MAX(last_id), 0) FROM assistant_tokens WHERE chat_id = $1",
        )
        .bind(chat_id)
        .fetch_one(&self.pool)
        .await
    }

    /// A chat's stored tokens with ids above `after`, as `(id, text)`, oldest first: at most
    /// the chunks holding `limit` tokens past `after` (a chunk is never cut).
    pub async fn chat_tokens_after(
        &self,
        chat_id: i64,
        after: i64,
        limit: i64,
    ) -> sqlx::Result<Vec<(i64, String)>> {
        let rows = sqlx::query(
            "SELECT first_id, texts FROM assistant_tokens
             WHERE chat_id = $1 AND last_id > $2 AND first_id <= $3 ORDER BY first_id",
        )
        .bind(chat_id)
        .bind(after)
        .bind(after.saturating_add(limit))
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::new();
        for row in rows {
            let first: i64 = row.try_get(0)?;
            let texts: String = row.try_get(1)?;
            let texts: Vec<String> =
                serde_json::from_str(&texts).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
            for (i, text) in texts.into_iter().enumerate() {
                let id = first + i as i64;
                if id > after {
                    out.push((id, text));
                }
            }
        }
        Ok(out)
    }

    /// Stores `chunks` and then `endings` in one transaction. A chat already ended keeps its
    /// first ending (a cancel racing an error).
    pub async fn store_assistant_batch(
        &self,
        chunks: &[Chunk],
        endings: &[Ending],
    ) -> sqlx::Result<()> {
        if chunks.is_empty() && endings.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for rows in chunks.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO assistant_tokens (chat_id, first_id, last_id, texts) VALUES {}
                 ON CONFLICT (chat_id, first_id) DO NOTHING",
                placeholders(rows.len(), 4)
            );
            let mut query = sqlx::query(&sql);
            for c in rows {
                let texts = serde_json::to_string(&c.texts).unwrap_or_else(|_| "[]".into());
                query = query
                    .bind(c.chat_id)
                    .bind(c.first_id)
                    .bind(c.first_id + c.texts.len() as i64 - 1)
                    .bind(texts);
            }
            query.execute(&mut *tx).await?;
        }
        for e in endings {
            sqlx::query(
                "UPDATE assistant_chats SET status = $1, finish_reason = $2, error = $3,
                 tokens = $4, prompt_tokens = $5, completion_tokens = $6, speed_centi = $7,
                 ended_at = $8, claimed_by = NULL, lease_until = NULL
                 WHERE id = $9 AND status = 'running'",
            )
            .bind(e.status.as_str())
            .bind(e.finish_reason.as_deref())
            .bind(e.error.as_deref())
            .bind(e.tokens)
            .bind(e.prompt_tokens)
            .bind(e.completion_tokens)
            .bind(e.speed_centi)
            .bind(e.at)
            .bind(e.chat_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
    }

    /// Asks for a chat to stop (for the instance generating it). Returns its status before.
    pub async fn request_chat_cancel(&self, id: i64) -> sqlx::Result<Option<String>> {
        let status: Option<String> =
            sqlx::query_scalar("SELECT status FROM assistant_chats WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        if status.as_deref() == Some("running") {
            sqlx::query("UPDATE assistant_chats SET cancel_requested = 1 WHERE id = $1")
                .bind(id)
                .execute(&self.pool)
                .await?;
        }
        Ok(status)
    }

    /// Renews `instance`'s claims on the chats it generates until `until`; returns those of
    /// them that were asked to stop (by a request on another instance).
    pub async fn renew_chat_claims(&self, instance: &str, until: i64) -> sqlx::Result<Vec<i64>> {
        sqlx::query(
            "UPDATE assistant_chats SET lease_until = $1
             WHERE claimed_by = $2 AND status = 'running'",
        )
        .bind(until)
        .bind(instance)
        .execute(&self.pool)
        .await?;
        sqlx::query_scalar(
            "SELECT id FROM assistant_chats
             WHERE claimed_by = $1 AND status = 'running' AND cancel_requested <> 0",
        )
        .bind(instance)
        .fetch_all(&self.pool)
        .await
    }

    /// Running chats nobody generates any more: every running one when `sole` (this process
    /// is the database's only one, starting), else those whose claim ran out before `now`;
    /// never those `instance` (the caller) claims, which it ends itself. Returns each with the
    /// id of its last stored token.
    pub async fn orphaned_chats(
        &self,
        now: i64,
        sole: bool,
        instance: &str,
    ) -> sqlx::Result<Vec<(i64, i64)>> {
        sqlx::query_as(
            "SELECT c.id, COALESCE((SELECT MAX(t.last_id) FROM assistant_tokens t
                                    WHERE t.chat_id = c.id), 0)
             FROM assistant_chats c
             WHERE c.status = 'running' AND ($1 OR c.lease_until < $2)
               AND (c.claimed_by IS NULL OR c.claimed_by <> $3)",
        )
        .bind(sole)
        .bind(now)
        .bind(instance)
        .fetch_all(&self.pool)
        .await
    }

    /// Deletes up to `limit` chats that ended before `before`, with their tokens; returns how
    /// many went.
    pub async fn prune_ended_chats(&self, before: i64, limit: i64) -> sqlx::Result<u64> {
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM assistant_chats WHERE status <> 'running' AND ended_at < $1
             ORDER BY id LIMIT $2",
        )
        .bind(before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        self.delete_ids(
            &ids,
            &["assistant_tokens WHERE chat_id", "assistant_chats WHERE id"],
        )
        .await?;
        Ok(ids.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::storage::temp_store;

    #[tokio::test]
    async fn tokens_are_stored_in_chunks_and_read_back_from_any_id() {
        let (_dir, store) = temp_store().await;
        let owner = store.create_user("ada", "hash", 1).await.unwrap().unwrap();
        let chat = store
            .create_chat(owner, "why?", "i1", 10_000, 1, Some(1))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(chat.status, "running");
        // A second one is refused while the first runs.
        assert_eq!(
            store
                .create_chat(owner, "again", "i1", 10_000, 1, Some(1))
                .await
                .unwrap(),
            Err(1)
        );
        let texts = |r: std::ops::Range<i64>| r.map(|i| format!("t{i} ")).collect::<Vec<_>>();
        store
            .store_assistant_batch(
                &[Chunk {
                    chat_id: chat.id,
                    first_id: 1,
                    texts: texts(1..4),
                }],
                &[],
            )
            .await
            .unwrap();
        store
            .store_assistant_batch(
                &[Chunk {
                    chat_id: chat.id,
                    first_id: 4,
                    texts: texts(4..6),
                }],
                &[],
            )
            .await
            .unwrap();
        assert_eq!(store.stored_tokens(chat.id).await.unwrap(), 5);
        let after2 = store.chat_tokens_after(chat.id, 2, 100).await.unwrap();
        assert_eq!(
            after2,
            vec![(3, "t3 ".into()), (4, "t4 ".into()), (5, "t5 ".into())]
        );
        assert!(store
            .chat_tokens_after(chat.id, 5, 100)
            .await
            .unwrap()
            .is_empty());
        // Orphaned at start (this process is alone), with 5 tokens stored; never to the
        // instance that claims it.
        assert_eq!(
            store.orphaned_chats(0, true, "i2").await.unwrap(),
            vec![(chat.id, 5)]
        );
        assert!(store
            .orphaned_chats(0, true, "i1")
            .await
            .unwrap()
            .is_empty());
        assert!(store
            .orphaned_chats(5_000, false, "i2")
            .await
            .unwrap()
            .is_empty());
        assert_eq!(
            store.orphaned_chats(10_001, false, "i2").await.unwrap(),
            vec![(chat.id, 5)]
        );
        assert!(store
            .renew_chat_claims("i1", 20_000)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(
            store.request_chat_cancel(chat.id).await.unwrap().as_deref(),
            Some("running")
        );
        assert_eq!(
            store.renew_chat_claims("i1", 20_000).await.unwrap(),
            vec![chat.id]
        );
        let ending = Ending {
            chat_id: chat.id,
            status: "cancelled".into(),
            finish_reason: Some("cancelled".into()),
            error: None,
            tokens: 5,
            prompt_tokens: 2,
            completion_tokens: 5,
            speed_centi: 2950,
            at: 9,
        };
        store
            .store_assistant_batch(&[], std::slice::from_ref(&ending))
            .await
            .unwrap();
        // The first ending stays.
        let mut later = ending;
        later.status = "failed".into();
        store.store_assistant_batch(&[], &[later]).await.unwrap();
        let ended = store.chat(chat.id).await.unwrap().unwrap();
        assert_eq!((ended.status.as_str(), ended.tokens), ("cancelled", 5));
        assert_eq!(store.chats_of(owner, 10).await.unwrap().len(), 1);

        // Past the retention it goes, with its tokens; a running chat stays whatever its age.
        let running = store
            .create_chat(owner, "still going", "i1", 10_000, 1, None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(store.prune_ended_chats(9, 100).await.unwrap(), 0);
        assert_eq!(store.prune_ended_chats(10, 100).await.unwrap(), 1);
        assert!(store.chat(chat.id).await.unwrap().is_none());
        assert!(store
            .chat_tokens_after(chat.id, 0, 100)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(store.prune_ended_chats(i64::MAX, 100).await.unwrap(), 0);
        assert!(store.chat(running.id).await.unwrap().is_some());
    }
}
