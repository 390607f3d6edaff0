//! The browser's `fetch` helpers that every page's client shares: the sentence for a server
//! that cannot be reached, the sentence a refused request carries, and a JSON `POST`.
//!
//! Compiled everywhere so the views need no `cfg`; only ever called in the browser. Like
//! `protocol`, it sits below the features: they all call it, it knows none of them.

use gloo_net::http::{Request, Response};
use serde::{de::DeserializeOwned, Serialize};

use crate::protocol::ErrorBody;

/// What a page shows when the server cannot be reached at all.
pub const UNREACHABLE: &str =
    "The server could not be reached. Check your connection and try again.";

/// The sentence a refused request carries: the documented `message`, or the status.
pub async fn refusal(response: Response) -> String {
    let status = response.status();
    match response.json::<ErrorBody>().await {
        Ok(body) => body.message,
        Err(_) => format!("The server answered with status {status}."),
    }
}

/// `POST path` with `body` as JSON; the 2xx answer parsed, or the sentence to show.
pub async fn post_json<B: Serialize, T: DeserializeOwned>(
    path: &str,
    body: &B,
) -> Result<T, String> {
    let response = Request::post(path)
        .json(body)
        .map_err(|e| e.to_string())?
        .send()
        .await
        .map_err(|_| UNREACHABLE.to_string())?;
    parsed(response).await
}

/// `GET path`; the 2xx answer parsed as JSON, or the sentence to show.
pub async fn get_json<T: DeserializeOwned>(path: &str) -> Result<T, String> {
    let response = Request::get(path)
        .send()
        .await
        .map_err(|_| UNREACHABLE.to_string())?;
    parsed(response).await
}

/// A 2xx answer parsed as JSON; any other, the sentence it carries.
pub async fn parsed<T: DeserializeOwned>(response: Response) -> Result<T, String> {
    if !response.ok() {
        return Err(refusal(response).await);
    }
    response
        .json()
        .await
        .map_err(|_| "The server sent an answer this page does not understand.".to_string())
}

/// The methods [`send`] uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Post,
    Put,
    Delete,
}

/// `method path` with an optional JSON `body`, for routes that answer 2xx without one
/// (204); `Ok` on any 2xx, else the sentence to show.
pub async fn send<B: Serialize>(
    method: Method,
    path: &str,
    body: Option<&B>,
) -> Result<(), String> {
    let builder = match method {
        Method::Post => Request::post(path),
        Method::Put => Request::put(path),
        Method::Delete => Request::delete(path),
    };
    let request = match body {
        Some(b) => builder.json(b).map_err(|e| e.to_string())?,
        None => builder.build().map_err(|e| e.to_string())?,
    };
    let response = request.send().await.map_err(|_| UNREACHABLE.to_string())?;
    if response.ok() {
        Ok(())
    } else {
        Err(refusal(response).await)
    }
}
