//! `/api/auth/*`: signup, login, logout, me, stream-token.
//!
//! Passwords are hashed with Argon2id (the `argon2` crate's defaults: 19 MiB, 2 passes) on a
//! blocking thread. Login is refused with 429 once the username or the client address has 10
//! failures in 5 minutes; an unknown username costs the same hashing time as a wrong password,
//! so response times do not tell which usernames exist. Every login issues a new session id.

use std::sync::OnceLock;

use argon2::{Argon2, PasswordHash};
use axum::{
    extract::{FromRequest, Request, State},
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
    Form, Router,
};
use axum_extra::extract::cookie::CookieJar;
use password_hash::{rand_core::OsRng, SaltString};
use serde_json::json;

use crate::{
    protocol::{
        auth::{check_password, check_username},
        AuthRequest, StreamToken, UserEnvelope, UserView,
    },
    server::{
        clock,
        identity::{self, ClientAddr, CurrentUser, MaybeUser},
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

/// The hash an unknown username is checked against, so that it costs a wrong password's time.
fn dummy_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| hash_password("not-a-real-password").expect("hashing a constant works"))
}

fn hash_password(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    let argon2 = Argon2::default();
    let mut raw_salt = [0u8; 64];
    let raw_salt = salt
        .as_salt()
        .decode_b64(&mut raw_salt)
        .map_err(|e| anyhow::anyhow!("hashing failed: {e}"))?;
    let hash = with_memory(argon2.params().block_count(), |memory| {
        password_hash::Output::init_with(argon2::Params::DEFAULT_OUTPUT_LEN, |out| {
            argon2
                .hash_password_into_with_memory(password.as_bytes(), raw_salt, out, memory)
                .map_err(password_hash::Error::from)
        })
    })
    .map_err(|e| anyhow::anyhow!("hashing failed: {e}"))?;
    let phc = PasswordHash {
        algorithm: argon2::Algorithm::Argon2id.ident(),
        version: Some(argon2::Version::V0x13.into()),
        params: argon2
            .params()
            .try_into()
            .map_err(|e| anyhow::anyhow!("hashing failed: {e}"))?,
        salt: Some(salt.as_salt()),
        hash: Some(hash),
    };
    Ok(phc.to_string())
}

fn verify_password(password: &str, hash: &str) -> bool {
    let check = || -> Option<bool> {
        let parsed = PasswordHash::new(hash).ok()?;
        let algorithm = argon2::Algorithm::try_from(parsed.algorithm).ok()?;
        let version = match parsed.version {
            Some(v) => argon2::Version::try_from(v).ok()?,
            None => argon2::Version::default(),
        };
        let params = argon2::Params::try_from(&parsed).ok()?;
        let expected = parsed.hash?;
        let mut raw_salt = [0u8; 64];
        let raw_salt = parsed.salt?.decode_b64(&mut raw_salt).ok()?;
        let argon2 = Argon2::new(algorithm, version, params);
        let computed = with_memory(argon2.params().block_count(), |memory| {
            password_hash::Output::init_with(expected.len(), |out| {
                argon2
                    .hash_password_into_with_memory(password.as_bytes(), raw_salt, out, memory)
                    .map_err(password_hash::Error::from)
            })
        })
        .ok()?;
        // `Output`'s comparison takes the same time wherever the outputs differ.
        Some(computed == expected)
    };
    check().unwrap_or(false)
}

/// Argon2's working memory (19 MiB with the default parameters), kept for the next hash.
///
/// Letting argon2 allocate it per hash left the freed blocks in whichever malloc arena the
/// blocking thread used: after 200 logins the server held 1.2 GB it no longer used. At most
/// [`MAX_CONCURRENT_HASHES`] hashes run at once, so at most that many buffers are ever kept.
static MEMORY: std::sync::Mutex<Vec<Vec<argon2::Block>>> = std::sync::Mutex::new(Vec::new());

/// Runs `f` with `blocks` blocks of working memory from [`MEMORY`] (new if none fits).
fn with_memory<T>(blocks: usize, f: impl FnOnce(&mut [argon2::Block]) -> T) -> T {
    let kept = {
        let mut pool = MEMORY.lock().unwrap_or_else(|e| e.into_inner());
        pool.iter()
            .position(|m| m.len() == blocks)
            .map(|i| pool.swap_remove(i))
    };
    let mut memory = kept.unwrap_or_else(|| vec![argon2::Block::default(); blocks]);
    let result = f(&mut memory);
    let mut pool = MEMORY.lock().unwrap_or_else(|e| e.into_inner());
    if pool.len() < MAX_CONCURRENT_HASHES {
        pool.push(memory);
    }
    result
}

/// At most this many password hashes run at once: each takes 19 MiB and a core for tens of
/// milliseconds, so a burst of logins or signups waits in line instead of exhausting memory.
const MAX_CONCURRENT_HASHES: usize = 4;
static HASHING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_CONCURRENT_HASHES);

/// Runs CPU-heavy hashing off the async workers, a few at a time.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    let _permit = HASHING
        .acquire()
        .await
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("hashing queue closed: {e}")))?;
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("hashing task failed: {e}")))
}

/// Starts a session for `user_id`: stores it, returns the cookie jar that carries it.
async fn start_session(
    state: &AppState,
    headers: &HeaderMap,
    jar: CookieJar,
    user_id: i64,
) -> Result<CookieJar, ApiError> {
    let token = identity::new_session_token()?;
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
        identity::is_https(headers),
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
    headers: HeaderMap,
    jar: CookieJar,
    input: AuthInput,
) -> Response {
    let username = input.body.username.clone();
    let result = do_signup(&state, &headers, jar, input.body).await;
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
    headers: &HeaderMap,
    jar: CookieJar,
    body: AuthRequest,
) -> Result<(CookieJar, UserView), ApiError> {
    check_username(&body.username).map_err(|m| ApiError::bad_request("invalid_username", m))?;
    check_password(&body.password).map_err(|m| ApiError::bad_request("invalid_password", m))?;
    if state.store.user_by_name(&body.username).await?.is_some() {
        return Err(taken());
    }
    let password = body.password;
    let hash = blocking(move || hash_password(&password)).await??;
    let user_id = state
        .store
        .create_user(&body.username, &hash, clock::now_ms())
        .await?
        .ok_or_else(taken)?;
    let jar = start_session(state, headers, jar, user_id).await?;
    audit(state, "SIGNUP", &body.username, json!({})).await;
    tracing::info!(username = %body.username, "signed up");
    let user = UserView {
        role: state.role_of(&body.username),
        username: body.username,
    };
    Ok((jar, user))
}

fn taken() -> ApiError {
    ApiError::Conflict {
        code: "username_taken",
        message: "That username is taken; choose another.".into(),
    }
}

async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    ClientAddr(addr): ClientAddr,
    jar: CookieJar,
    input: AuthInput,
) -> Response {
    let username = input.body.username.clone();
    let result = do_login(&state, &headers, &addr, jar, input.body).await;
    answer(result, input.html_form, StatusCode::OK, "/login", &username)
}

async fn do_login(
    state: &AppState,
    headers: &HeaderMap,
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
    let matches = blocking(move || match &hash {
        Some(hash) => verify_password(&password, hash),
        None => verify_password(&password, dummy_hash()),
    })
    .await?;

    let Some(account) = account.filter(|_| matches) else {
        audit(
            state,
            "LOGIN_FAILED",
            &body.username,
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
    let jar = start_session(state, headers, jar, account.id).await?;
    audit(state, "LOGIN", &account.username, json!({})).await;
    let user = UserView {
        role: state.role_of(&account.username),
        username: account.username,
    };
    Ok((jar, user))
}

async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    jar: CookieJar,
    MaybeUser(user): MaybeUser,
) -> Response {
    let html_form = is_form(&headers);
    let Some(user) = user else {
        if html_form {
            return (
                jar.add(identity::expired_session_cookie(identity::is_https(
                    &headers,
                ))),
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
    audit(&state, "LOGOUT", &user.user.username, json!({})).await;
    let jar = jar.add(identity::expired_session_cookie(identity::is_https(
        &headers,
    )));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_differ() {
        let a = hash_password("correct horse").unwrap();
        let b = hash_password("correct horse").unwrap();
        assert_ne!(a, b, "salted");
        assert!(a.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &a));
        assert!(!verify_password("wrong horse", &a));
        assert!(!verify_password("x", "not a hash"));
    }

    #[test]
    fn hashes_agree_with_the_argon2_crates_own_hasher() {
        use argon2::{PasswordHasher, PasswordVerifier};
        // Ours, checked by the crate's verifier.
        let ours = hash_password("correct horse").unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(Argon2::default()
            .verify_password(b"correct horse", &parsed)
            .is_ok());
        assert!(Argon2::default()
            .verify_password(b"wrong horse", &parsed)
            .is_err());
        // The crate's (as stored by earlier versions), checked by ours, with other parameters too.
        let salt = SaltString::generate(&mut OsRng);
        let theirs = Argon2::default()
            .hash_password(b"battery staple", &salt)
            .unwrap()
            .to_string();
        assert!(verify_password("battery staple", &theirs));
        assert!(!verify_password("battery stapler", &theirs));
        let params = argon2::Params::new(8 * 1024, 2, 1, None).unwrap();
        let small = Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
            .hash_password(b"battery staple", &salt)
            .unwrap()
            .to_string();
        assert!(verify_password("battery staple", &small));
        assert!(!verify_password("battery stapler", &small));
        assert!(
            MEMORY.lock().unwrap().len() <= MAX_CONCURRENT_HASHES,
            "working memory kept is bounded"
        );
    }
}
