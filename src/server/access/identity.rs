//! Who is asking: the session cookie, stream tokens, and the extractors handlers take.
//!
//! - [`CurrentUser`]: a valid session cookie, else 401. For every `/api/*` route.
//! - [`StreamUser`]: the cookie, or on GET a `?token=` from `POST /api/auth/stream-token`
//!   (for an EventSource on another origin). For GET stream routes only.
//! - [`AdminUser`]: a `CurrentUser` with the admin role, else 403.
//! - [`MaybeUser`]: never refuses; pages use it to show who is signed in.
//! - [`Publisher`]: a signed-in user, or another server with an API key
//!   (`Authorization: Bearer tdk_…`). Only the routes that publish take it, so a key is never
//!   a session for anything else (it cannot make keys or jobs).
//!
//! The cookie holds 32 random bytes; the database keeps only their SHA-256, so a leaked
//! database holds no usable session. Each request looks its session up once (cached in the
//! request's extensions). Tests: `tests/it/auth.rs` drives these through the real server.

use std::net::SocketAddr;

use axum::{
    extract::{ConnectInfo, FromRequestParts, Query},
    http::{request::Parts, Method},
};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use sha2::{Digest, Sha256};

use crate::protocol::UserView;
use crate::server::{
    clock, edge::forwarded::Client, error::ApiError, state::AppState, storage::SessionRow,
};

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "tidings_session";

/// A signed-in user, as resolved from the request.
#[derive(Clone, Debug)]
pub struct CurrentUser {
    /// The session's row id (stream tokens name it).
    pub session_id: i64,
    /// The account's row id.
    pub user_id: i64,
    /// When the session expires (milliseconds since the epoch): its live connections close
    /// then.
    pub expires_at: i64,
    /// Username and role.
    pub user: UserView,
}

impl CurrentUser {
    fn from_row(row: SessionRow, state: &AppState) -> Self {
        Self {
            session_id: row.session_id,
            user_id: row.user_id,
            expires_at: row.expires_at,
            user: UserView {
                role: state.role_of(&row.username, row.admin),
                username: row.username,
            },
        }
    }
}

/// The cookie-resolved identity, cached per request.
#[derive(Clone)]
struct Resolved(Option<CurrentUser>);

async fn from_cookie(parts: &mut Parts, state: &AppState) -> Result<Option<CurrentUser>, ApiError> {
    if let Some(Resolved(user)) = parts.extensions.get::<Resolved>() {
        return Ok(user.clone());
    }
    let jar = CookieJar::from_headers(&parts.headers);
    let user = match jar.get(SESSION_COOKIE) {
        Some(cookie) => state
            .store
            .session_by_token(&hash_token(cookie.value()), clock::now_ms())
            .await?
            .map(|row| CurrentUser::from_row(row, state)),
        None => None,
    };
    parts.extensions.insert(Resolved(user.clone()));
    Ok(user)
}

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        from_cookie(parts, state)
            .await?
            .ok_or(ApiError::Unauthorized)
    }
}

/// The signed-in user, if any. Never refuses (but a database failure is still a 500).
#[derive(Clone, Debug)]
pub struct MaybeUser(pub Option<CurrentUser>);

impl FromRequestParts<AppState> for MaybeUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self(from_cookie(parts, state).await?))
    }
}

impl MaybeUser {
    /// The signed-in user of the request a server function is answering. A failure (the
    /// database, say) is logged and reaches the browser as one plain sentence, never the
    /// database's own text.
    pub async fn in_server_fn(
        state: &AppState,
    ) -> Result<Option<CurrentUser>, leptos::prelude::ServerFnError> {
        leptos_axum::extract_with_state::<Self, _>(state)
            .await
            .map(|Self(user)| user)
            .map_err(crate::server::error::server_fn_failed)
    }
}

/// A signed-in user with the admin role; 401 without a session, 403 for other roles.
#[derive(Clone, Debug)]
pub struct AdminUser(pub CurrentUser);

impl FromRequestParts<AppState> for AdminUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let user = CurrentUser::from_request_parts(parts, state).await?;
        if user.user.is_admin() {
            Ok(Self(user))
        } else {
            Err(ApiError::Forbidden("Only admins may do this.".into()))
        }
    }
}

/// Who publishes a message or a notification: a signed-in user, or an API key.
#[derive(Clone, Debug)]
pub enum Publisher {
    User(CurrentUser),
    /// Another server, by its key (the key's name signs what it publishes).
    Key(crate::server::storage::api_keys::ApiKeyRow),
}

impl Publisher {
    /// The name its messages carry: the username, or the key's name.
    pub fn name(&self) -> &str {
        match self {
            Self::User(u) => &u.user.username,
            Self::Key(k) => &k.name,
        }
    }

    /// A key, or a user with the admin role; else 403.
    pub fn admin_or_key(self) -> Result<Self, ApiError> {
        match &self {
            Self::User(u) if !u.user.is_admin() => {
                Err(ApiError::Forbidden("This needs the admin role.".into()))
            }
            _ => Ok(self),
        }
    }
}

/// The bearer credential of a request, if it has an `Authorization` header: `Err` when the
/// header is there but is not `Bearer <key>`.
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<Result<&str, ()>> {
    let value = headers.get(axum::http::header::AUTHORIZATION)?;
    Some(
        value
            .to_str()
            .ok()
            .and_then(|v| {
                let (scheme, key) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
            })
            .filter(|k| !k.is_empty())
            .ok_or(()),
    )
}

impl FromRequestParts<AppState> for Publisher {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let refused = |message: &str| {
            ApiError::refused(axum::http::StatusCode::UNAUTHORIZED, "invalid_key", message)
        };
        match bearer(&parts.headers) {
            None => Ok(Self::User(
                CurrentUser::from_request_parts(parts, state).await?,
            )),
            Some(Err(())) => Err(refused(
                "`Authorization` must be `Bearer <key>` with an API key from an admin.",
            )),
            Some(Ok(key)) => match state.store.use_api_key(key, clock::now_ms()).await? {
                Some(row) => Ok(Self::Key(row)),
                None => Err(refused("That API key is unknown or was revoked.")),
            },
        }
    }
}

/// The user of a GET stream route: the session cookie, or a valid `?token=`.
#[derive(Clone, Debug)]
pub struct StreamUser(pub CurrentUser);

#[derive(serde::Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

impl FromRequestParts<AppState> for StreamUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if let Some(user) = from_cookie(parts, state).await? {
            return Ok(Self(user));
        }
        let token = Query::<TokenQuery>::try_from_uri(&parts.uri)
            .ok()
            .and_then(|q| q.0.token);
        let Some(token) = token else {
            return Err(ApiError::Unauthorized);
        };
        if !matches!(parts.method, Method::GET | Method::HEAD) {
            return Err(ApiError::InvalidToken(
                "Stream tokens are accepted on GET stream routes only.".into(),
            ));
        }
        let now = clock::now_ms();
        let session_id = state
            .signer
            .verify(&token, now / 1000)
            .map_err(|e| ApiError::InvalidToken(format!("The stream token was refused: {e}.")))?;
        let row = state
            .store
            .session_by_id(session_id, now)
            .await?
            .ok_or_else(|| {
                ApiError::InvalidToken(
                    "The stream token's session has ended; sign in again.".into(),
                )
            })?;
        Ok(Self(CurrentUser::from_row(row, state)))
    }
}

/// The client's address as rate limits and audit rows count it (see [`address_key`]): the
/// peer, or what trusted proxies say (`server::edge::forwarded`); `unknown` when the server was
/// not started with connect info, as in `oneshot` tests. Never refuses.
#[derive(Clone, Debug)]
pub struct ClientAddr(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let client = Client::from_request_parts(parts, state).await?;
        Ok(Self(
            client
                .ip
                .map(address_key)
                .unwrap_or_else(|| "unknown".into()),
        ))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Client {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(parts.extensions.get::<Client>().copied().unwrap_or(Client {
            ip: parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ci| ci.0.ip()),
            https: false,
        }))
    }
}

/// An address as rate limits count it: IPv4 as is, IPv6 by its /64 prefix.
pub fn address_key(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        std::net::IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(|v4| v4.to_string())
            .unwrap_or_default(),
        v4 => v4.to_string(),
    }
}

/// A new random session token (32 bytes, base64url).
pub fn new_session_token() -> String {
    crate::server::random::base64url::<32>()
}

/// What the database stores for a session token.
pub fn hash_token(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The session cookie: HttpOnly, SameSite=Lax, Secure over https, living `max_age`.
pub fn session_cookie(
    token: String,
    max_age: std::time::Duration,
    secure: bool,
) -> Cookie<'static> {
    Cookie::build((SESSION_COOKIE, token))
        .path("/")
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(secure)
        .max_age(cookie::time::Duration::seconds(max_age.as_secs() as i64))
        .build()
}

/// A cookie that tells the browser to forget the session.
pub fn expired_session_cookie(secure: bool) -> Cookie<'static> {
    let mut c = session_cookie(String::new(), std::time::Duration::ZERO, secure);
    c.make_removal();
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hashed() {
        let a = new_session_token();
        let b = new_session_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert_eq!(hash_token(&a).len(), 64);
        assert_ne!(hash_token(&a), a);
    }

    #[test]
    fn cookie_flags() {
        let c = session_cookie("t".into(), std::time::Duration::from_secs(60), true).to_string();
        for flag in ["HttpOnly", "SameSite=Lax", "Secure", "Path=/", "Max-Age=60"] {
            assert!(c.contains(flag), "{c} lacks {flag}");
        }
        let plain =
            session_cookie("t".into(), std::time::Duration::from_secs(60), false).to_string();
        assert!(!plain.contains("Secure"));
    }

    #[test]
    fn addresses_group_ipv6_by_64() {
        assert_eq!(address_key("203.0.113.9".parse().unwrap()), "203.0.113.9");
        assert_eq!(
            address_key("2001:db8:1:2:aaaa::1".parse().unwrap()),
            "2001:db8:1:2::/64"
        );
        assert_eq!(
            address_key("2001:db8:1:2:bbbb::9".parse().unwrap()),
            "2001:db8:1:2::/64"
        );
        assert_eq!(
            address_key("::ffff:192.0.2.1".parse().unwrap()),
            "192.0.2.1"
        );
    }
}
