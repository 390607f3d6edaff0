//! The command-line clients: subcommands of the `tidings` binary that talk to a running
//! Tidings server over HTTP, with the same `protocol` types as the server and the browser.
//!
//! - `tidings export`: streams the audit log to a file, verifies it, resumes after drops
//!   ([`export`]).
//! - `tidings tail`: follows any Server-Sent Events URL, resuming with `Last-Event-ID` after
//!   drops and restarts ([`tail`]).
//!
//! Shared here: the HTTP client, signing in, and the retry policy every consumer follows
//! (jittered exponential backoff; 4xx other than 408 and 429 are final).
//!
//! Tests: unit tests below; `tests/export_cli.rs` runs the real binary through a proxy that
//! cuts its connection.

pub mod export;
pub mod tail;

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

/// Signs in; the client keeps the session cookie.
pub async fn login(client: &reqwest::Client, conn: &Connection) -> anyhow::Result<UserEnvelope> {
    let res = client
        .post(conn.url("/api/auth/login"))
        .json(&AuthRequest {
            username: conn.username.clone(),
            password: conn.password.clone(),
        })
        .send()
        .await
        .with_context(|| format!("cannot reach {}", conn.server))?;
    if !res.status().is_success() {
        anyhow::bail!(
            "signing in as {} failed: {}",
            conn.username,
            refusal(res).await
        );
    }
    res.json()
        .await
        .context("the login answer is not the expected JSON")
}

/// The sentence a refused request carries: the contract's `message`, or the status.
pub async fn refusal(res: reqwest::Response) -> String {
    let status = res.status();
    match res.json::<ErrorBody>().await {
        Ok(body) => format!("{} ({status})", body.message),
        Err(_) => status.to_string(),
    }
}

/// Whether a request that got `status` may be tried again: server errors, 408 and 429.
pub fn retryable(status: reqwest::StatusCode) -> bool {
    status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429
}

/// Jittered exponential backoff: the wait before attempt `attempt` (1-based), from `base`
/// doubling up to `max`, each wait a random 50–100 % of that (so clients that dropped together
/// do not come back together).
pub fn backoff(attempt: u32, base: Duration, max: Duration) -> Duration {
    let full = base
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(max);
    let mut byte = [0u8; 1];
    let _ = getrandom::getrandom(&mut byte);
    full.mul_f64(0.5 + f64::from(byte[0]) / 510.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let (base, max) = (Duration::from_millis(100), Duration::from_secs(5));
        for attempt in 1..=20 {
            let full = (base * 2u32.pow((attempt - 1).min(16))).min(max);
            let wait = backoff(attempt, base, max);
            assert!(
                wait >= full / 2 && wait <= full,
                "attempt {attempt}: {wait:?}"
            );
        }
    }

    #[test]
    fn only_server_errors_408_and_429_are_retried() {
        use reqwest::StatusCode;
        assert!(retryable(StatusCode::SERVICE_UNAVAILABLE));
        assert!(retryable(StatusCode::TOO_MANY_REQUESTS));
        assert!(retryable(StatusCode::REQUEST_TIMEOUT));
        assert!(!retryable(StatusCode::BAD_REQUEST));
        assert!(!retryable(StatusCode::FORBIDDEN));
    }
}
