//! The account calls from the hydrated page, over `fetch` (gloo-net).
//!
//! Compiled everywhere so the views need no `cfg`, but only ever called from browser event
//! handlers. Errors come back as the server's sentence, ready to show.

use gloo_net::http::{Request, Response};

use crate::protocol::{AuthRequest, ErrorBody, UserEnvelope, UserView};

/// What the page shows when the server cannot be reached at all.
const UNREACHABLE: &str = "The server could not be reached. Check your connection and try again.";

/// `POST path` with a JSON `AuthRequest`; the signed-in user, or the sentence to show.
pub async fn post_credentials(path: &str, body: &AuthRequest) -> Result<UserView, String> {
    let response = Request::post(path)
        .json(body)
        .map_err(|e| e.to_string())?
        .send()
        .await
        .map_err(|_| UNREACHABLE.to_string())?;
    if !response.ok() {
        return Err(error_sentence(response).await);
    }
    response
        .json::<UserEnvelope>()
        .await
        .map(|env| env.user)
        .map_err(|_| "The server sent an answer this page does not understand.".to_string())
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
        Err(error_sentence(response).await)
    }
}

async fn error_sentence(response: Response) -> String {
    let status = response.status();
    match response.json::<ErrorBody>().await {
        Ok(body) => body.message,
        Err(_) => format!("The server answered with status {status}."),
    }
}
