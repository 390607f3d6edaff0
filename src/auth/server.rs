//! `/api/auth/*`: signup, login, logout, me, stream-token; and [`create_account`] for
//! `tidings users add`.
//!
//! Passwords are hashed in `super::password` (Argon2id, a few at once: logins wait their
//! turn, signups never wait and never take the last slots). Login is refused with 429 once the username or the
//! client address has 10 failures in 5 minutes; an unknown username costs the same hashing
//! time as a wrong password, so response times do not tell which usernames exist. Signups are
//! limited per client address per hour (`TIDINGS_SIGNUP_PER_HOUR`), and a username listed in
//! `TIDINGS_ADMINS` needs the setup token. Every login issues a new session id; logout ends
//! the session's live connections on every instance.

use axum::{
    extract::{FromRequest, Request, State},
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
    Form, Router,
};
use axum_extra::extract::cookie::CookieJar;
use serde_json::json;

use super::password::{dummy_hash, hash_password, verify_password, HashFor, HASHING};
use crate::{
    protocol::{
        auth::{check_password, check_username},
        AuthRequest, StreamToken, UserEnvelope, UserView,
    },
    server::{
        access::identity::{self, ClientAddr, CurrentUser, MaybeUser},
        clock,
        edge::forwarded::Client,
        storage::Store,
        ApiError, ApiJson, AppState,
    },
};

/// The account routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/auth/signup", post(signup))
        .route("/api/auth/login", post(login))
        .route("/api/auth/logout", post(logout))
        .route("/api/auth/me", get(me))
        .route("/api/auth/stream-token", post(stream_token))
}

/// A signup or login body: JSON, or an HTML form when the page runs without JavaScript.
struct AuthInput {
    body: AuthRequest,
    /// Came from a plain `<form>`: answer with redirects, not JSON.
    html_form: bool,
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"))
}

impl<S: Send + Sync> FromRequest<S> for AuthInput {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if is_form(req.headers()) {
            let Form(body) = Form::<AuthRequest>::from_request(req, state)
                .await
                .map_err(|e| ApiError::bad_request("invalid_form", e.body_text()))?;
            Ok(Self {
                body,
                html_form: true,
            })
        } else {
            let ApiJson(body) = ApiJson::<AuthRequest>::from_request(req, state).await?;
            Ok(Self {
                body,
                html_form: false,
            })
        }
    }
}

/// Answers signup or login: `{"user"}` with `status` for JSON clients; for a plain form, a
/// redirect home on success, or back to `page` with the error's code on a failure the user
/// can fix (an internal error stays a JSON 500 either way: there is nothing to fix there).
fn answer(
    result: Result<(CookieJar, UserView), ApiError>,
    html_form: bool,
    status: StatusCode,
    page: &str,
    username: &str,
) -> Response {
    match result {
        Ok((jar, _)) if html_form => (jar, Redirect::to("/")).into_response(),
        Ok((jar, user)) => (status, jar, ApiJson(UserEnvelope { user })).into_response(),
        Err(e) if html_form && !matches!(e, ApiError::Internal(_)) => back_to(page, &e, username),
        Err(e) => e.into_response(),
    }
}

/// Where a plain form goes back to after a failure: the page, with the error's code and the
/// username typed (never the password, never free text an attacker could plant).
fn back_to(page: &str, err: &ApiError, username: &str) -> Response {
    let username = if check_username(username).is_ok() {
        username
    } else {
        ""
    };
    Redirect::to(&format!("{page}?error={}&username={username}", err.code())).into_response()
}

/// Starts a session for `user_id`: stores it, returns the cookie jar that carries it.
async fn start_session(
    state: &AppState,
    client: &Client,
    jar: CookieJar,
    user_id: i64,
) -> Result<CookieJar, ApiError> {
    let token = identity::new_session_token();
    let now = clock::now_ms();
    let ttl = state.config.session_ttl;
    state
        .store
        .create_session(
            &identity::hash_token(&token),
            user_id,
            now,
            now + ttl.as_millis() as i64,
        )
        .await?;
    Ok(jar.add(identity::session_cookie(
        token,
        ttl,
        state.secure_cookies(client),
    )))
}

async fn audit(state: &AppState, action: &str, username: &str, detail: serde_json::Value) {
    if let Err(e) = state
        .store
        .audit(action, username, &detail, clock::now_ms())
        .await
    {
        tracing::warn!(error = %e, action, "could not write the audit row");
    }
}

async fn signup(
    State(state): State<AppState>,
    client: Client,
    ClientAddr(addr): ClientAddr,
    jar: CookieJar,
    input: AuthInput,
) -> Response {
    let username = input.body.username.clone();
    let result = do_signup(&state, &client, &addr, jar, input.body).await;
    answer(
        result,
        input.html_form,
        StatusCode::CREATED,
        "/signup",
        &username,
    )
}

async fn do_signup(
    state: &AppState,
    client: &Client,
    addr: &str,
    jar: CookieJar,
    body: AuthRequest,
) -> Result<(CookieJar, UserView), ApiError> {
    check_username(&body.username).map_err(|m| ApiError::bad_request("invalid_username", m))?;
    check_password(&body.password).map_err(|m| ApiError::bad_request("invalid_password", m))?;
    if state.config.admins.contains(&body.username) {
        check_setup_token(state, &body)?;
    }
    if state.store.user_by_name(&body.username).await?.is_some() {
        return Err(taken());
    }
    let key = format!("ip:{addr}");
    let attempt = state
        .signup_limiter
        .check_and_record(&[&key])
        .await
        .map_err(|wait| {
            let per_hour = state.config.limits.signups_per_hour;
            ApiError::too_many(
                "too_many_signups",
                format!(
                    "{per_hour} accounts were created from this address in the last hour, the \
                     most allowed (TIDINGS_SIGNUP_PER_HOUR); try again in {} minutes.",
                    wait.div_ceil(60)
                ),
            )
            .retry_after(wait)
        })?;
    let created = create_and_sign_in(state, client, jar, &body).await;
    if created.is_err() {
        // Refused after all (busy, or the name was taken meanwhile): it does not count.
        state.signup_limiter.forgive(&key, &attempt).await;
    }
    let (jar, user) = created?;
    audit(state, "SIGNUP", &body.username, json!({ "address": addr })).await;
    tracing::info!(username = %body.username, "signed up");
    Ok((jar, user))
}

async fn create_and_sign_in(
    state: &AppState,
    client: &Client,
    jar: CookieJar,
    body: &AuthRequest,
) -> Result<(CookieJar, UserView), ApiError> {
    let password = body.password.clone();
    let hash = HASHING
        .run(HashFor::Signup, move || hash_password(&password))
        .await??;
    let user_id = state
        .store
        .create_user(&body.username, &hash, clock::now_ms())
        .await?
        .ok_or_else(taken)?;
    let jar = start_session(state, client, jar, user_id).await?;
    let user = UserView {
        role: state.role_of(&body.username, false),
        username: body.username.clone(),
    };
    Ok((jar, user))
}

/// A listed admin's name needs the setup token: 403 `reserved_username` without it.
fn check_setup_token(state: &AppState, body: &AuthRequest) -> Result<(), ApiError> {
    use sha2::{Digest, Sha256};
    let given = body.setup_token.as_deref().map(str::trim).unwrap_or("");
    let right = state.setup_token.as_deref().is_some_and(|token| {
        // Compared as digests: the time taken says nothing about how much of it was right.
        !given.is_empty() && Sha256::digest(given.as_bytes()) == Sha256::digest(token.as_bytes())
    });
    if right {
        return Ok(());
    }
    let why = if given.is_empty() {
        "it needs the setup token"
    } else {
        "that setup token is not the right one"
    };
    Err(ApiError::refused(
        StatusCode::FORBIDDEN,
        "reserved_username",
        format!(
            "The username {} is reserved for an administrator, and {why}: the one printed in the \
             server's log at start (or TIDINGS_SETUP_TOKEN). An operator can also run \
             `tidings users add {} --admin`.",
            body.username, body.username
        ),
    ))
}

/// Creates an account straight in the database (`tidings users add`): the same checks and
/// hash as a signup, no limits. Fails with a sentence when the name or password is refused
/// or the name is taken.
pub async fn create_account(
    store: &Store,
    username: &str,
    password: &str,
    admin: bool,
) -> anyhow::Result<()> {
    check_username(username).map_err(|m| anyhow::anyhow!("{m}"))?;
    check_password(password).map_err(|m| anyhow::anyhow!("{m}"))?;
    let password = password.to_string();
    let hash = tokio::task::spawn_blocking(move || hash_password(&password)).await??;
    let now = clock::now_ms();
    store
        .create_account(username, &hash, now, admin)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the username {username} is taken"))?;
    let detail = json!({ "admin": admin, "by": "tidings users add" });
    store.audit("USER_ADD", username, &detail, now).await?;
    Ok(())
}

fn taken() -> ApiError {
    ApiError::Conflict {
        code: "username_taken",
        message: "That username is taken; choose another.".into(),
    }
}

async fn login(
    State(state): State<AppState>,
    client: Client,
    ClientAddr(addr): ClientAddr,
    jar: CookieJar,
    input: AuthInput,
) -> Response {
    let username = input.body.username.clone();
    let result = do_login(&state, &client, &addr, jar, input.body).await;
    answer(result, input.html_form, StatusCode::OK, "/login", &username)
}

async fn do_login(
    state: &AppState,
    client: &Client,
    addr: &str,
    jar: CookieJar,
    body: AuthRequest,
) -> Result<(CookieJar, UserView), ApiError> {
    // Only a well-formed username gets its own counter (junk names would only fill memory).
    let user_key = check_username(&body.username)
        .is_ok()
        .then(|| format!("user:{}", body.username));
    let addr_key = format!("ip:{addr}");
    let keys: Vec<&str> = user_key
        .iter()
        .map(String::as_str)
        .chain([addr_key.as_str()])
        .collect();
    // The attempt counts as a failure from the start, in the same locked step as the limit
    // check, so parallel guesses cannot slip past the limit while their hashes run.
    let attempt = state
        .login_limiter
        .check_and_record(&keys)
        .await
        .map_err(ApiError::RateLimited)?;

    // Over-long input cannot match an account; refuse it before hashing anything.
    let plausible =
        check_username(&body.username).is_ok() && check_password(&body.password).is_ok();
    let account = if plausible {
        state.store.user_by_name(&body.username).await?
    } else {
        None
    };
    let hash = account.as_ref().map(|a| a.password_hash.clone());
    let password = body.password;
    let matches = HASHING
        .run(HashFor::Login, move || match &hash {
            Some(hash) => verify_password(&password, hash),
            None => verify_password(&password, dummy_hash()),
        })
        .await?;

    let Some(account) = account.filter(|_| matches) else {
        // The name as typed is an attacker's text: stored bounded, never raw.
        audit(
            state,
            "LOGIN_FAILED",
            &bounded_name(&body.username),
            json!({ "address": addr }),
        )
        .await;
        return Err(ApiError::BadCredentials);
    };
    // The right password: forgive this attempt, and the username's earlier failures.
    state.login_limiter.forgive(&addr_key, &attempt).await;
    if let Some(user_key) = &user_key {
        state.login_limiter.clear(user_key).await;
    }
    let jar = start_session(state, client, jar, account.id).await?;
    audit(
        state,
        "LOGIN",
        &account.username,
        json!({ "address": addr }),
    )
    .await;
    let user = UserView {
        role: state.role_of(&account.username, account.admin),
        username: account.username,
    };
    Ok((jar, user))
}

async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    client: Client,
    jar: CookieJar,
    MaybeUser(user): MaybeUser,
) -> Response {
    let html_form = is_form(&headers);
    let secure = state.secure_cookies(&client);
    let Some(user) = user else {
        if html_form {
            return (
                jar.add(identity::expired_session_cookie(secure)),
                Redirect::to("/"),
            )
                .into_response();
        }
        return ApiError::Unauthorized.into_response();
    };
    if let Some(cookie) = jar.get(identity::SESSION_COOKIE) {
        if let Err(e) = state
            .store
            .delete_session(&identity::hash_token(cookie.value()))
            .await
        {
            return ApiError::from(e).into_response();
        }
    }
    // Its WebSockets and event streams end too, on every instance.
    state.streams.end_session(user.session_id);
    audit(&state, "LOGOUT", &user.user.username, json!({})).await;
    let jar = jar.add(identity::expired_session_cookie(secure));
    if html_form {
        (jar, Redirect::to("/")).into_response()
    } else {
        (StatusCode::NO_CONTENT, jar).into_response()
    }
}

async fn me(user: CurrentUser) -> ApiJson<UserEnvelope> {
    ApiJson(UserEnvelope { user: user.user })
}

async fn stream_token(State(state): State<AppState>, user: CurrentUser) -> ApiJson<StreamToken> {
    let now_ms = clock::now_ms();
    let expires_ms = now_ms + state.config.stream_token_ttl.as_millis() as i64;
    ApiJson(StreamToken {
        token: state.signer.issue(user.session_id, expires_ms / 1000),
        expires_at: clock::rfc3339(expires_ms / 1000 * 1000),
    })
}

/// A username as typed, fit to store: at most 64 characters, anything but letters, digits and
/// `_.-@+` shown as `?`, and `…` when it was longer.
fn bounded_name(typed: &str) -> String {
    const MAX: usize = 64;
    let mut out: String = typed
        .chars()
        .take(MAX)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '@' | '+') {
                c
            } else {
                '?'
            }
        })
        .collect();
    if typed.chars().count() > MAX {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_names_are_stored_bounded() {
        assert_eq!(bounded_name("eric"), "eric");
        assert_eq!(bounded_name("=cmd|' /C calc'!A0"), "?cmd????C?calc??A0");
        assert_eq!(bounded_name("a\nb\u{0}c<script>"), "a?b?c?script?");
        let long = bounded_name(&"x".repeat(10_000));
        assert_eq!(long.chars().count(), 65);
        assert!(long.ends_with('…'));
    }
}
