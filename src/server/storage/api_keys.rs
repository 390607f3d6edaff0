//! API keys for other servers (a deploy script, a billing service): made by an admin, shown
//! once, kept only as the SHA-256 of the key. A key is `tdk_` and 32 random bytes, so a fast
//! hash is enough (there is nothing to guess, unlike a password). Every use looks the key up
//! in the database, so a revocation holds at once on every instance sharing it, with no cache
//! to forget.
//!
//! Tests: `cargo test --features ssr server::storage::api_keys`; `tests/it/connections.rs`.

use sqlx::Row;

use super::Store;
use crate::server::{access::identity::hash_token, random};

/// What every key starts with (so a leaked one is easy to recognise in logs and scanners).
pub const KEY_PREFIX: &str = "tdk_";

/// A key as listed (never the key itself).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKeyRow {
    pub id: String,
    pub name: String,
    pub created_by: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

/// A use is written back at most this often per key (a busy key does not write per request).
const USED_EVERY_MS: i64 = 60_000;

fn key_from(row: &sqlx::any::AnyRow) -> sqlx::Result<ApiKeyRow> {
    Ok(ApiKeyRow {
        id: row.try_get(0)?,
        name: row.try_get(1)?,
        created_by: row.try_get(2)?,
        created_at: row.try_get(3)?,
        last_used_at: row.try_get(4)?,
    })
}

impl Store {
    /// Makes a key named `name`; returns its row and the key (to show once).
    pub async fn create_api_key(
        &self,
        name: &str,
        created_by: &str,
        now: i64,
    ) -> sqlx::Result<(ApiKeyRow, String)> {
        let id = format!("key_{}", random::hex::<6>());
        let key = format!("{KEY_PREFIX}{}", random::base64url::<32>());
        sqlx::query(
            "INSERT INTO api_keys (id, name, hash, created_by, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&id)
        .bind(name)
        .bind(hash_token(&key))
        .bind(created_by)
        .bind(now)
        .execute(&self.pool)
        .await?;
        let row = ApiKeyRow {
            id,
            name: name.to_string(),
            created_by: created_by.to_string(),
            created_at: now,
            last_used_at: None,
        };
        Ok((row, key))
    }

    /// The keys not revoked, oldest first.
    pub async fn api_keys(&self) -> sqlx::Result<Vec<ApiKeyRow>> {
        sqlx::query(
            "SELECT id, name, created_by, created_at, last_used_at FROM api_keys
             WHERE revoked_at IS NULL ORDER BY created_at, id",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(key_from)
        .collect()
    }

    /// Whether a live key has this name.
    pub async fn api_key_named(&self, name: &str) -> sqlx::Result<bool> {
        Ok(
            sqlx::query("SELECT 1 FROM api_keys WHERE name = $1 AND revoked_at IS NULL")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?
                .is_some(),
        )
    }

    /// Revokes a key; `false` when there is no live key with this id.
    pub async fn revoke_api_key(&self, id: &str, now: i64) -> sqlx::Result<bool> {
        Ok(
            sqlx::query("UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
                .bind(id)
                .bind(now)
                .execute(&self.pool)
                .await?
                .rows_affected()
                == 1,
        )
    }

    /// The live key that `key` is, noting the use (at most once a minute).
    pub async fn use_api_key(&self, key: &str, now: i64) -> sqlx::Result<Option<ApiKeyRow>> {
        if !key.starts_with(KEY_PREFIX) {
            return Ok(None);
        }
        let hash = hash_token(key);
        let row = sqlx::query(
            "SELECT id, name, created_by, created_at, last_used_at FROM api_keys
             WHERE hash = $1 AND revoked_at IS NULL",
        )
        .bind(&hash)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row.as_ref().map(key_from).transpose()? else {
            return Ok(None);
        };
        if row.last_used_at.is_none_or(|at| at < now - USED_EVERY_MS) {
            sqlx::query("UPDATE api_keys SET last_used_at = $2 WHERE id = $1")
                .bind(&row.id)
                .bind(now)
                .execute(&self.pool)
                .await?;
        }
        Ok(Some(row))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_works_until_revoked_and_only_its_hash_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let store = Store::connect(&url).await.unwrap();
        let (row, key) = store.create_api_key("deploy", "root", 1_000).await.unwrap();
        assert!(key.starts_with(KEY_PREFIX) && key.len() > 40, "{key}");
        let kept: String = sqlx::query("SELECT hash FROM api_keys")
            .fetch_one(&store.pool)
            .await
            .unwrap()
            .get(0);
        assert!(!kept.contains(&key[KEY_PREFIX.len()..]));
        let used = store.use_api_key(&key, 2_000).await.unwrap().unwrap();
        assert_eq!(used.name, "deploy");
        assert_eq!(store.api_keys().await.unwrap()[0].last_used_at, Some(2_000));
        assert!(store
            .use_api_key("tdk_nope", 2_000)
            .await
            .unwrap()
            .is_none());
        assert!(store.api_key_named("deploy").await.unwrap());
        assert!(store.revoke_api_key(&row.id, 3_000).await.unwrap());
        assert!(!store.revoke_api_key(&row.id, 3_000).await.unwrap());
        assert!(store.use_api_key(&key, 4_000).await.unwrap().is_none());
        assert!(store.api_keys().await.unwrap().is_empty());
    }
}
