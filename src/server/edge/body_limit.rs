//! One request-body limit for every route, server functions included.
//!
//! axum's `DefaultBodyLimit` only binds axum's own extractors; Leptos server functions read
//! their bodies themselves. This middleware refuses a declared `Content-Length` over the limit
//! at once (JSON 413), and wraps every other body in `http_body_util::Limited`, so a chunked
//! body stops being read at the limit too.

use axum::{
    body::Body,
    extract::Request,
    http::header,
    middleware::Next,
    response::{IntoResponse, Response},
};

use crate::server::error::ApiError;

/// Largest request body any route accepts (JSON commands are small).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Middleware: refuses or caps bodies over [`MAX_BODY_BYTES`].
pub async fn limit_request_body(req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return ApiError::PayloadTooLarge.into_response();
    }
    let (parts, body) = req.into_parts();
    let limited = Body::new(http_body_util::Limited::new(body, MAX_BODY_BYTES));
    next.run(Request::from_parts(parts, limited)).await
}
