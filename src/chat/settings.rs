//! The chat's settings: its rate limit, history, presence grace and WebSocket ping, read
//! from the environment through the server's one loader ([`Env`]).
//!
//! Tests: `cargo test --features ssr chat::settings`.

use std::time::Duration;

use crate::server::config::Env;

/// How the chat behaves. Defaults suit people; tests shorten the waits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatConfig {
    /// `TIDINGS_CHAT_RATE` (default 10): messages a user may send per second (the
    /// `Slow down.` limit), across every instance when `REDIS_URL` is set. Load tests that
    /// need one user to send more may raise it.
    pub rate_per_second: u32,
    /// `TIDINGS_CHAT_HISTORY` (default 1000): messages a room keeps.
    pub history: i64,
    /// `TIDINGS_PRESENCE_GRACE_MS` (default 5000): how long after a user's last connection
    /// closes before the room hears `left` (a reload reconnects well within it).
    pub presence_grace: Duration,
    /// `TIDINGS_WS_PING_MS` (default 20000): a WebSocket is pinged after this long without
    /// traffic, and closed when nothing arrives for twice as long (a vanished peer).
    pub ping_interval: Duration,
}

impl Default for ChatConfig {
    fn default() -> Self {
        Self {
            rate_per_second: 10,
            history: 1000,
            presence_grace: Duration::from_secs(5),
            ping_interval: Duration::from_secs(20),
        }
    }
}

impl ChatConfig {
    /// Reads `TIDINGS_CHAT_RATE`, `TIDINGS_CHAT_HISTORY`, `TIDINGS_PRESENCE_GRACE_MS` and
    /// `TIDINGS_WS_PING_MS`; unset ones keep their defaults.
    pub fn from(vars: &Env<'_>) -> anyhow::Result<Self> {
        let d = Self::default();
        Ok(Self {
            rate_per_second: vars.number(
                "TIDINGS_CHAT_RATE",
                d.rate_per_second.into(),
                1,
                100_000,
            )? as u32,
            history: vars.number("TIDINGS_CHAT_HISTORY", d.history as u64, 1, 1_000_000)? as i64,
            presence_grace: vars.millis("TIDINGS_PRESENCE_GRACE_MS", d.presence_grace)?,
            ping_interval: vars.millis("TIDINGS_WS_PING_MS", d.ping_interval)?,
        })
    }

    /// The settings tests start from: a short presence grace.
    pub fn for_tests() -> Self {
        Self {
            presence_grace: Duration::from_millis(300),
            ..Self::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_and_checked() {
        let env = Env::from_fn(|n| match n {
            "TIDINGS_CHAT_RATE" => Some("5".into()),
            "TIDINGS_PRESENCE_GRACE_MS" => Some("750".into()),
            _ => None,
        });
        let c = ChatConfig::from(&env).unwrap();
        assert_eq!(c.rate_per_second, 5);
        assert_eq!(c.presence_grace, Duration::from_millis(750));
        assert_eq!(c.history, ChatConfig::default().history);
        let bad = Env::from_fn(|n| (n == "TIDINGS_CHAT_RATE").then(|| "0".to_string()));
        let e = ChatConfig::from(&bad).unwrap_err().to_string();
        assert!(
            e.starts_with("TIDINGS_CHAT_RATE must be a whole number"),
            "{e}"
        );
    }
}
