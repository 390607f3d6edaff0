//! Accounts and sessions: the rows behind signup, login and every request's identity.
//!
//! Tests: `cargo test --features ssr server::storage::accounts`.

use super::{placeholders, Store};

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

impl Store {
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

    /// Ends every session of `user_id` (an admin's disconnect); returns how many.
    pub async fn delete_sessions_of(&self, user_id: i64) -> sqlx::Result<u64> {
        let done = sqlx::query("DELETE FROM sessions WHERE user_id = $1")
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// Removes sessions that expired before `now_ms`; returns how many.
    pub async fn delete_expired_sessions(&self, now_ms: i64) -> sqlx::Result<u64> {
        let done = sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
            .bind(now_ms)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::super::temp_store;

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
}
