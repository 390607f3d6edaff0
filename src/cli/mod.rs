//! The command-line clients: subcommands of the `tidings` binary that talk to a running
//! Tidings server over HTTP, with the same `protocol` types as the server and the browser.
//!
//! - `tidings export`: streams the audit log to a file, verifies it, resumes after drops
//!   ([`export`]).
//! - `tidings tail`: follows any Server-Sent Events URL, resuming with `Last-Event-ID` after
//!   drops and restarts ([`tail`]).
//! - `tidings chat`: a terminal chat over the WebSocket (tokio-tungstenite) that reconnects
//!   and resumes after the last message shown ([`chat`]).
//! - `tidings keys`: an admin's API keys for other servers ([`keys`]).
//! - `tidings ask`: an AI answer streamed to the terminal, through Tidings or straight from a
//!   provider ([`ask`]).
//!
//! These import only `protocol` and `retry`, never the server or a feature. (`tidings users
//! add` and `tidings seed` talk to the database, not to a server: they live with their
//! features, `auth::users` and `export::seed`.)
//!
//! Shared here: the HTTP client, signing in, and the refusal sentence. The retry policy
//! every consumer follows (jittered exponential backoff; 4xx other than 408 and 429 are final)
//! is `crate::retry`, which the import job follows too.
//!
//! Tests: `tests/it/export_cli.rs` and `tests/it/tail_cli.rs` run the real binary through a proxy
//! that cuts its connection; the retry policy's unit tests are in `crate::retry`.

pub mod ask;
pub mod chat;
pub mod export;
pub mod keys;
pub mod tail;

pub use crate::retry::{backoff, retryable};

use std::time::Duration;

use anyhow::Context;

use crate::protocol::{AuthRequest, ErrorBody, UserEnvelope};

/// Where and as whom a client connects.
#[derive(Clone, Debug, clap::Args)]
pub struct Connection {
    /// The server's base URL.
    #[arg(long, env = "TIDINGS_SERVER", default_value = "http://127.0.0.1:3000")]
    pub server: String,
    /// The account to sign in as.
    #[arg(long, env = "TIDINGS_USERNAME")]
    pub username: String,
    /// Its password (better given in the environment than on the command line).
    #[arg(long, env = "TIDINGS_PASSWORD", hide_env_values = true)]
    pub password: String,
}

impl Connection {
    /// `server` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.server.trim_end_matches('/'), path)
    }
}

/// An HTTP client that keeps the session cookie. No overall timeout (exports are long), but
/// a connection that goes silent for `idle` is given up on, so a dead link cannot hang us.
pub fn http_client(idle: Duration) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .cookie_store(true)
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(idle)
        .user_agent(concat!("tidings-cli/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("cannot build the HTTP client")
}

/// Signs in as `conn` says; the client keeps the session cookie.
pub async fn login(client: &reqwest::Client, conn: &Connection) -> anyhow::Result<UserEnvelope> {
    sign_in(client, &conn.server, &conn.username, &conn.password).await
}

/// Signs in to `server` as `username`; the client keeps the session cookie.
pub async fn sign_in(
    client: &reqwest::Client,
    server: &str,
    username: &str,
    password: &str,
) -> anyhow::Result<UserEnvelope> {
    let res = client
        .post(format!("{}/api/auth/login", server.trim_end_matches('/')))
        .json(&AuthRequest {
            username: username.to_string(),
            password: password.to_string(),
            setup_token: None,
        })
        .send()
        .await
        .with_context(|| format!("cannot reach {server}"))?;
    if !res.status().is_success() {
        anyhow::bail!("signing in as {username} failed: {}", refusal(res).await);
    }
    res.json()
        .await
        .context("the login answer is not the expected JSON")
}

/// The sentence a refused request carries: the documented `message`, or the status.
pub async fn refusal(res: reqwest::Response) -> String {
    let status = res.status();
    match res.json::<ErrorBody>().await {
        Ok(body) => format!("{} ({status})", body.message),
        Err(_) => status.to_string(),
    }
}
