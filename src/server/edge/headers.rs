//! Security headers on every response, and a Content-Security-Policy with a fresh nonce on
//! every page.
//!
//! [`security_headers`] gives each request that may render a page a random [`CspNonce`] in
//! its extensions; the Leptos renderer hands it to `use_nonce()` (see `routes.rs`), so the
//! hydration script and every streamed `<script>` carry it. Once the response is ready, an
//! HTML page gets the policy naming that nonce: scripts only from this origin or with the
//! nonce, WebAssembly allowed to compile, no framing. Every response gets
//! `X-Frame-Options: DENY`, `Referrer-Policy: same-origin` and `X-Content-Type-Options: nosniff`.
//!
//! Tests: the unit tests below; `tests/it/auth.rs` reads the headers; `end2end/tests/shell.spec.ts`
//! checks that every page hydrates with no policy violation in the console.

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    http::{header, HeaderValue, Method},
    middleware::Next,
    response::Response,
};

use crate::server::AppState;

/// The nonce of one page response.
#[derive(Clone, Debug)]
pub struct CspNonce(pub Arc<str>);

impl CspNonce {
    /// 16 random bytes, base64url (22 characters).
    fn new() -> Self {
        Self(crate::server::random::base64url::<16>().into())
    }
}

/// The policy for a page whose scripts carry `nonce`. `dev_reload`: the port of
/// `cargo leptos watch`'s reload socket, which the page opens in development.
pub fn policy(nonce: &str, dev_reload: Option<u32>) -> String {
    let reload = dev_reload
        .map(|port| format!(" ws://localhost:{port} ws://127.0.0.1:{port}"))
        .unwrap_or_default();
    format!(
        "default-src 'self'; script-src 'self' 'nonce-{nonce}' 'wasm-unsafe-eval'; \
         style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'{reload}; \
         object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
}

/// Whether a request may be answered with a page (worth a nonce).
fn may_render(req: &Request) -> bool {
    let path = req.uri().path();
    matches!(*req.method(), Method::GET | Method::HEAD)
        && !["/api/", "/pkg/", "/sf/"]
            .iter()
            .any(|p| path.starts_with(p))
        && path != "/ws"
}

/// Middleware: see the module docs.
pub async fn security_headers(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let nonce = may_render(&req).then(CspNonce::new);
    if let Some(n) = &nonce {
        req.extensions_mut().insert(n.clone());
    }
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    let html = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if let (true, Some(n)) = (html, nonce) {
        let reload = std::env::var_os("LEPTOS_WATCH")
            .is_some()
            .then_some(state.leptos_options.reload_port);
        if let Ok(v) = HeaderValue::from_str(&policy(&n.0, reload)) {
            h.insert(header::CONTENT_SECURITY_POLICY, v);
        }
    }
    h.entry(header::X_FRAME_OPTIONS)
        .or_insert(HeaderValue::from_static("DENY"));
    h.entry(header::REFERRER_POLICY)
        .or_insert(HeaderValue::from_static("same-origin"));
    h.entry(header::X_CONTENT_TYPE_OPTIONS)
        .or_insert(HeaderValue::from_static("nosniff"));
    res
}

/// For the Leptos renderer: the request's nonce as `use_nonce()` gives it (called in the
/// render's context, where the request's parts are).
pub fn provide_request_nonce() {
    use leptos::prelude::{provide_context, use_context};
    let nonce = use_context::<axum::http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<CspNonce>().cloned());
    if let Some(CspNonce(n)) = nonce {
        provide_context(leptos::nonce::Nonce::from_value(n));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_names_the_nonce_and_forbids_framing() {
        let p = policy("abc", None);
        assert!(p.contains("script-src 'self' 'nonce-abc' 'wasm-unsafe-eval'"));
        assert!(p.contains("frame-ancestors 'none'"));
        assert!(
            !p.contains(" 'unsafe-eval'"),
            "only WebAssembly may compile"
        );
        assert!(!p.contains("script-src 'self' 'unsafe-inline'"));
        assert!(policy("abc", Some(3001)).contains("ws://localhost:3001"));
    }

    #[test]
    fn nonces_differ() {
        let (a, b) = (CspNonce::new(), CspNonce::new());
        assert_ne!(a.0, b.0);
        assert_eq!(a.0.len(), 22);
    }
}
