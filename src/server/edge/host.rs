//! Which `Host` values this server answers for (the defence against DNS rebinding).
//!
//! With `TIDINGS_PUBLIC_ORIGIN` set, only its origins' hosts are served. Without it, only a
//! `Host` that is an IP literal or `localhost`: a page on `evil.example` whose DNS name is
//! made to point at 127.0.0.1 then reaches us with `Host: evil.example` and is refused, so it
//! can never read a local Tidings as if it were its own origin. Anything else gets 421
//! `misdirected_request`. The health checks answer whatever the `Host` (a load balancer's
//! probe names the instance by its address).
//!
//! Tests: the unit tests below; `tests/it/deploy.rs` over the real server.

use std::net::IpAddr;

use axum::{
    extract::{Request, State},
    http::{header, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};

use crate::server::{
    config::{split_host_port, PublicOrigin},
    ApiError, AppState,
};

/// Middleware: 421 for a `Host` this server does not answer for.
pub async fn check_host(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if matches!(req.uri().path(), "/healthz" | "/readyz") {
        return next.run(req).await;
    }
    let host = request_host(&req);
    if host_allowed(host.as_deref(), &state.config.public_origins) {
        return next.run(req).await;
    }
    let shown: String = host
        .as_deref()
        .unwrap_or("")
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(100)
        .collect();
    tracing::info!(host = %shown, path = %req.uri().path(), "request for another host refused");
    let message = if state.config.public_origins.is_empty() {
        format!(
            "This server does not answer for the host {shown:?}: without TIDINGS_PUBLIC_ORIGIN it \
             answers only for IP addresses and localhost."
        )
    } else {
        let served: Vec<&str> = state
            .config
            .public_origins
            .iter()
            .map(|o| o.origin.as_str())
            .collect();
        format!(
            "This server does not answer for the host {shown:?}; it serves {}.",
            served.join(", ")
        )
    };
    ApiError::refused(
        StatusCode::MISDIRECTED_REQUEST,
        "misdirected_request",
        message,
    )
    .into_response()
}

/// The host a request names: its `Host` header, or the URI's authority (HTTP/2).
pub fn request_host(req: &Request) -> Option<String> {
    req.headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
}

/// Whether `host` (a `Host` value, `None` when the request names none) is served.
pub fn host_allowed(host: Option<&str>, public: &[PublicOrigin]) -> bool {
    let Some(host) = host else {
        // Browsers always send a Host; a request without one (HTTP/1.0) cannot come from a
        // rebinding page. With public origins set, every request must name one of them.
        return public.is_empty();
    };
    if !public.is_empty() {
        return public.iter().any(|o| o.matches_host(host));
    }
    match split_host_port(host) {
        Some((name, _)) => {
            name.eq_ignore_ascii_case("localhost")
                || name.parse::<IpAddr>().is_ok()
                || name
                    .strip_prefix('[')
                    .and_then(|n| n.strip_suffix(']'))
                    .is_some_and(|n| n.parse::<std::net::Ipv6Addr>().is_ok())
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::Config;

    #[test]
    fn without_public_origins_only_addresses_and_localhost_are_served() {
        for ok in [
            "127.0.0.1:3000",
            "127.0.0.1",
            "[::1]:3000",
            "localhost:3000",
            "LOCALHOST",
            "10.1.2.3:80",
        ] {
            assert!(host_allowed(Some(ok), &[]), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:3000",
            "localhost.evil.example",
            "127.0.0.1.nip.io",
            "[::1",
            "1.2.3.4:x",
            "",
        ] {
            assert!(!host_allowed(Some(bad), &[]), "{bad}");
        }
        assert!(host_allowed(None, &[]));
    }

    #[test]
    fn with_public_origins_only_they_are_served() {
        let c = Config::from_vars(|n| {
            (n == "TIDINGS_PUBLIC_ORIGIN").then(|| "https://chat.example.com".to_string())
        })
        .unwrap();
        let public = &c.public_origins;
        assert!(host_allowed(Some("chat.example.com"), public));
        assert!(!host_allowed(Some("127.0.0.1:3000"), public));
        assert!(!host_allowed(Some("localhost"), public));
        assert!(!host_allowed(None, public));
    }
}
