//! The account calls from the hydrated page, over `fetch` (gloo-net).
//!
//! Compiled everywhere so the views need no `cfg`, but only ever called from browser event
//! handlers. Errors come back as the server's sentence, ready to show.

use gloo_net::http::Request;

use crate::{
    fetch::{post_json, refusal, UNREACHABLE},
    protocol::{AuthRequest, UserEnvelope, UserView},
};

/// `POST path` with a JSON `AuthRequest`; the signed-in user, or the sentence to show.
pub async fn post_credentials(path: &str, body: &AuthRequest) -> Result<UserView, String> {
    post_json::<_, UserEnvelope>(path, body)
        .await
        .map(|env| env.user)
}

/// `POST /api/auth/logout`.
pub async fn logout() -> Result<(), String> {
    let response = Request::post("/api/auth/logout")
        .send()
        .await
        .map_err(|_| UNREACHABLE.to_string())?;
    // 401: the session had already ended, which is what logging out wants anyway.
    if response.ok() || response.status() == 401 {
        Ok(())
    } else {
        Err(refusal(response).await)
    }
}
