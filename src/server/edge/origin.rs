//! Cross-site request refusal: a state-changing request (anything but GET, HEAD, OPTIONS) or
//! a WebSocket upgrade whose `Origin` header is present and foreign gets 403.
//!
//! Own origins are `TIDINGS_PUBLIC_ORIGIN`'s when it is set, else the request's `Host` as
//! `http://` or `https://` (a `Host` the host check let through: an address or `localhost`);
//! plus `TIDINGS_ALLOWED_ORIGINS` either way. Requests without `Origin` (command-line clients) pass: the
//! SameSite=Lax cookie already keeps browsers from sending the session cross-site on those.
//! This is the defence against CSRF and cross-site WebSocket hijacking. A request that carries
//! `Authorization: Bearer` and no cookie passes too: an API key is not sent by a browser on
//! its own, so there is nothing to forge (the key routes take no cookie from it).
//!
//! Tests: the unit tests below, and `tests/it/auth.rs` over the real server.

use axum::{
    extract::{Request, State},
    http::{header, HeaderMap, Method},
    middleware::Next,
    response::{IntoResponse, Response},
};

use crate::server::{config::PublicOrigin, error::ApiError, state::AppState};

/// Middleware: refuses foreign-origin writes and WebSocket upgrades.
pub async fn refuse_foreign_origins(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let host = crate::server::edge::host::request_host(&req);
    match foreign_origin(
        req.method(),
        req.headers(),
        host.as_deref(),
        &state.config.allowed_origins,
        &state.config.public_origins,
    ) {
        Some(origin) => {
            tracing::warn!(%origin, method = %req.method(), path = %req.uri().path(), "foreign origin refused");
            ApiError::ForeignOrigin(origin).into_response()
        }
        None => next.run(req).await,
    }
}

/// The foreign origin that must be refused, if any.
pub fn foreign_origin(
    method: &Method,
    headers: &HeaderMap,
    host: Option<&str>,
    allowed: &[String],
    public: &[PublicOrigin],
) -> Option<String> {
    let is_upgrade = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let safe = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) && !is_upgrade;
    if safe {
        return None;
    }
    let bearer_only = matches!(
        crate::server::access::identity::bearer(headers),
        Some(Ok(_))
    ) && !headers.contains_key(header::COOKIE);
    if bearer_only && !is_upgrade {
        return None;
    }
    let origin = headers.get(header::ORIGIN)?;
    let origin = String::from_utf8_lossy(origin.as_bytes())
        .trim_end_matches('/')
        .to_ascii_lowercase();
    let own = if public.is_empty() {
        host.is_some_and(|host| {
            let host = host.to_ascii_lowercase();
            origin == format!("http://{host}") || origin == format!("https://{host}")
        })
    } else {
        public.iter().any(|o| o.origin == origin)
    };
    if own || allowed.iter().any(|a| a.eq_ignore_ascii_case(&origin)) {
        None
    } else {
        Some(origin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    const HOST: Option<&str> = Some("tidings.test:3000");

    #[test]
    fn reads_and_originless_requests_pass() {
        let evil = headers(&[("origin", "https://evil.example")]);
        assert_eq!(foreign_origin(&Method::GET, &evil, HOST, &[], &[]), None);
        assert_eq!(
            foreign_origin(&Method::POST, &HeaderMap::new(), HOST, &[], &[]),
            None
        );
    }

    #[test]
    fn own_and_allowed_origins_pass() {
        for o in [
            "http://tidings.test:3000",
            "https://tidings.test:3000",
            "HTTP://Tidings.test:3000",
        ] {
            assert_eq!(
                foreign_origin(&Method::POST, &headers(&[("origin", o)]), HOST, &[], &[]),
                None,
                "{o}"
            );
        }
        let allowed = vec!["https://app.example".to_string()];
        assert_eq!(
            foreign_origin(
                &Method::POST,
                &headers(&[("origin", "https://app.example")]),
                HOST,
                &allowed,
                &[]
            ),
            None
        );
    }

    #[test]
    fn foreign_writes_and_upgrades_are_refused() {
        let evil = headers(&[("origin", "https://evil.example")]);
        assert!(foreign_origin(&Method::POST, &evil, HOST, &[], &[]).is_some());
        assert!(foreign_origin(&Method::DELETE, &evil, HOST, &[], &[]).is_some());
        // Another port is another origin.
        let port = headers(&[("origin", "http://tidings.test:4000")]);
        assert!(foreign_origin(&Method::POST, &port, HOST, &[], &[]).is_some());
        let ws = headers(&[("origin", "https://evil.example"), ("upgrade", "websocket")]);
        assert!(foreign_origin(&Method::GET, &ws, HOST, &[], &[]).is_some());
        let null = headers(&[("origin", "null")]);
        assert!(foreign_origin(&Method::POST, &null, HOST, &[], &[]).is_some());
    }

    #[test]
    fn a_bearer_key_without_a_cookie_passes_but_not_with_one() {
        let post = Method::POST;
        let key = headers(&[
            ("origin", "https://ci.example"),
            ("authorization", "Bearer tdk_x"),
        ]);
        assert_eq!(
            foreign_origin(&post, &key, Some("localhost:3000"), &[], &[]),
            None
        );
        let with_cookie = headers(&[
            ("origin", "https://ci.example"),
            ("authorization", "Bearer tdk_x"),
            ("cookie", "tidings_session=abc"),
        ]);
        assert!(foreign_origin(&post, &with_cookie, Some("localhost:3000"), &[], &[]).is_some());
    }

    #[test]
    fn with_public_origins_they_are_our_own() {
        let c = crate::server::Config::from_vars(|n| {
            (n == "TIDINGS_PUBLIC_ORIGIN").then(|| "https://chat.example.com".to_string())
        })
        .unwrap();
        let public = &c.public_origins;
        let host = Some("chat.example.com");
        let ours = headers(&[("origin", "https://chat.example.com")]);
        assert_eq!(
            foreign_origin(&Method::POST, &ours, host, &[], public),
            None
        );
        // Plain http is another origin.
        let plain = headers(&[("origin", "http://chat.example.com")]);
        assert!(foreign_origin(&Method::POST, &plain, host, &[], public).is_some());
    }
}
