//! The error type of every JSON route, and a JSON extractor whose rejections use it.
//!
//! `ApiError` renders as the documented `{"error","message"}` with the right status. Internal
//! failures are logged with their cause and shown to the user only as a plain sentence: no
//! stack trace, no SQL, no panic text ever reaches a response.

use axum::{
    extract::{rejection::JsonRejection, FromRequest},
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};

use crate::protocol::ErrorBody;

/// Everything a JSON route can answer besides success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed; `code` names the problem, `message` says what to fix.
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    /// 401: no valid session (or stream token).
    #[error("Sign in first.")]
    Unauthorized,
    /// 401: a `?token=` that is malformed, altered, expired, or whose session has ended.
    #[error("{0}")]
    InvalidToken(String),
    /// 401 on login: the username or password is wrong (never says which).
    #[error("Wrong username or password.")]
    BadCredentials,
    /// 403: signed in, but this needs another role.
    #[error("{0}")]
    Forbidden(String),
    /// 403: a state-changing request or WebSocket from a foreign `Origin`.
    #[error("Requests from the origin {0} are not allowed here.")]
    ForeignOrigin(String),
    /// 404: nothing here (also what another user's private object looks like).
    #[error("{0}")]
    NotFound(String),
    /// 405: the route exists, but not for this method.
    #[error("This route does not accept that method.")]
    MethodNotAllowed,
    /// 409: the thing exists already (a taken username); `code` names what.
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// 413: the body is larger than the route accepts.
    #[error("The request body is too large.")]
    PayloadTooLarge,
    /// 415: the body is not JSON (or a form where forms are accepted).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 429: too many attempts; retry after the given seconds.
    #[error("Too many failed attempts. Try again in {0} seconds.")]
    RateLimited(u64),
    /// 429: sending faster than a per-user limit allows (the chat's `Slow down.`).
    #[error("{0}")]
    SlowDown(String),
    /// 503: a dependency (the database) does not answer.
    #[error("{0}")]
    Unavailable(String),
    /// Any other refusal with its own status and machine code: a quota (429
    /// `too_many_streams`), a reserved username (403), a host this server does not answer for
    /// (421), a saturated hasher (503 with `Retry-After`). The sentence names the limit or the
    /// reason.
    #[error("{message}")]
    Refused {
        status: StatusCode,
        code: &'static str,
        message: String,
        /// Seconds for a `Retry-After` header, when waiting helps.
        retry_after: Option<u64>,
    },
    /// 500: a bug or an unexpected failure. Logged in full; the user sees one sentence.
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    /// A 400 with a machine code and a sentence.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            message: message.into(),
        }
    }

    /// A 400 `invalid_parameter` naming the parameter: "`param` message" (every route's
    /// wording for a bad query parameter or body field).
    pub fn bad_parameter(param: &str, message: impl std::fmt::Display) -> Self {
        Self::bad_request("invalid_parameter", format!("`{param}` {message}"))
    }

    /// A refusal with `status` and `code` (see [`ApiError::Refused`]).
    pub fn refused(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self::Refused {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 429 `code`: a per-user or per-address limit was reached.
    pub fn too_many(code: &'static str, message: impl Into<String>) -> Self {
        Self::refused(StatusCode::TOO_MANY_REQUESTS, code, message)
    }

    /// The same error, telling the client to retry after `secs` seconds.
    pub fn retry_after(mut self, secs: u64) -> Self {
        if let Self::Refused { retry_after, .. } = &mut self {
            *retry_after = Some(secs);
        }
        self
    }

    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthorized | Self::InvalidToken(_) | Self::BadCredentials => {
                StatusCode::UNAUTHORIZED
            }
            Self::Forbidden(_) | Self::ForeignOrigin(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::RateLimited(_) | Self::SlowDown(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Refused { status, .. } => *status,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The machine code of the body's `error` field.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest { code, .. } => code,
            Self::Unauthorized => "unauthorized",
            Self::InvalidToken(_) => "invalid_token",
            Self::BadCredentials => "bad_credentials",
            Self::Forbidden(_) => "forbidden",
            Self::ForeignOrigin(_) => "foreign_origin",
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Conflict { code, .. } => code,
            Self::PayloadTooLarge => "payload_too_large",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::RateLimited(_) => "rate_limited",
            Self::SlowDown(_) => "slow_down",
            Self::Unavailable(_) => "unavailable",
            Self::Refused { code, .. } => code,
            Self::Internal(_) => "internal",
        }
    }

    /// The user-facing sentence.
    pub fn message(&self) -> String {
        match self {
            Self::Internal(_) => "Something went wrong on our side; it has been logged.".into(),
            other => other.to_string(),
        }
    }

    /// The documented error body.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: self.code().to_string(),
            message: self.message(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Internal(cause) = &self {
            tracing::error!(error = ?cause, "internal error");
        }
        let mut res = (self.status(), axum::Json(self.body())).into_response();
        let retry = match self {
            Self::RateLimited(secs) => Some(secs),
            Self::Refused { retry_after, .. } => retry_after,
            _ => None,
        };
        if let Some(secs) = retry {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                res.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        res
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        Self::Internal(e.into())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::MissingJsonContentType(_) => Self::UnsupportedMediaType(
                "Send the body as JSON, with Content-Type: application/json.".into(),
            ),
            JsonRejection::JsonSyntaxError(e) => Self::bad_request(
                "malformed_json",
                format!("The body is not valid JSON: {}.", inner_cause(&e)),
            ),
            JsonRejection::JsonDataError(e) => Self::bad_request(
                "invalid_body",
                format!(
                    "The body does not have the expected fields: {}.",
                    inner_cause(&e)
                ),
            ),
            JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Self::PayloadTooLarge
            }
            other => Self::bad_request("invalid_body", other.body_text()),
        }
    }
}

/// The innermost error's text: serde's sentence without axum's prefixes.
fn inner_cause(e: &dyn std::error::Error) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// What a server function says when the database (or anything internal) failed: the cause
/// is logged, the browser gets one plain sentence, never the database's own text.
pub fn server_fn_failed<E: std::fmt::Display>(cause: E) -> leptos::prelude::ServerFnError {
    tracing::error!(error = %cause, "a server function failed");
    leptos::prelude::ServerFnError::new(ApiError::Internal(anyhow::anyhow!("hidden")).message())
}

/// `axum::Json`, but a rejected body is an [`ApiError`] in the documented shape.
#[derive(Debug, Clone, Copy, Default, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

impl<T: serde::Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// Answers a known `/api/*` path called with the wrong method.
pub async fn api_method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Answers unknown `/api/*` paths with a JSON 404 instead of the HTML page.
pub async fn api_not_found() -> ApiError {
    ApiError::NotFound("There is no API route at this path.".into())
}

/// A whole number in `range` read from a query parameter, or a 400 naming `param`
/// ("`limit` must be a whole number from 1 to 500, not \"x\".").
pub fn number_param<T>(
    param: &str,
    value: &str,
    range: std::ops::RangeInclusive<T>,
) -> Result<T, ApiError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    value
        .trim()
        .parse::<T>()
        .ok()
        .filter(|n| range.contains(n))
        .ok_or_else(|| {
            ApiError::bad_parameter(
                param,
                format!(
                    "must be a whole number from {} to {}, not {value:?}.",
                    range.start(),
                    range.end()
                ),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_hide_their_cause() {
        let e = ApiError::Internal(anyhow::anyhow!("SELECT secret FROM users failed"));
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!e.message().contains("SELECT"));
    }

    #[test]
    fn refusals_carry_their_status_code_and_retry_after() {
        let e = ApiError::too_many("too_many_streams", "Close one first.");
        assert_eq!(
            (e.status(), e.code()),
            (StatusCode::TOO_MANY_REQUESTS, "too_many_streams")
        );
        let res = ApiError::refused(StatusCode::SERVICE_UNAVAILABLE, "busy", "Try again.")
            .retry_after(2)
            .into_response();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(res.headers()[header::RETRY_AFTER], "2");
    }

    #[test]
    fn server_functions_never_show_the_cause() {
        let e = server_fn_failed("no such table: users_secret");
        assert!(!e.to_string().contains("users_secret"), "{e}");
    }

    #[test]
    fn rate_limited_sets_retry_after() {
        let res = ApiError::RateLimited(42).into_response();
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(res.headers()[header::RETRY_AFTER], "42");
    }
}
