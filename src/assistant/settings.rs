//! The assistant's settings (docs/interface.md, "AI token streams"): which provider answers,
//! how the built-in model paces itself, and the per-user limits. Read through the server's
//! one loader ([`Env`]).
//!
//! The API key is kept out of `Debug` (and so out of every log line that prints the
//! settings).
//!
//! Tests: `cargo test --features ssr assistant::settings`.

use crate::{protocol::ai::Format, server::config::Env};

/// How the assistant answers. Defaults are the safe ones; tests and benchmarks open the limits.
#[derive(Clone, PartialEq, Eq)]
pub struct AssistantConfig {
    /// `TIDINGS_AI_BASE_URL` (`https://api.openai.com/v1`, `https://api.anthropic.com/v1`, or
    /// this server's own `http://127.0.0.1:3000/v1`). Unset: the built-in model, in process.
    pub base_url: Option<String>,
    /// `TIDINGS_AI_API_KEY`: sent to the provider only (`Authorization: Bearer`, or
    /// `x-api-key` for Anthropic).
    pub api_key: Option<String>,
    /// `TIDINGS_AI_MODEL`: the model the provider is asked for.
    pub model: String,
    /// `TIDINGS_AI_PROVIDER` (`openai`, the default, or `anthropic`): the wire format.
    pub provider: Format,
    /// `TIDINGS_AI_TOKENS_PER_SEC` (default 30, 1–1000): the built-in model's pace.
    pub tokens_per_sec: u32,
    /// `TIDINGS_AI_MAX_TOKENS` (default 1024, 1–32768): the longest answer asked for.
    pub max_tokens: u32,
    /// `TIDINGS_AI_PROMPT_MAX_CHARS` (default 4000, 1–100000): the longest prompt accepted.
    pub prompt_max_chars: u32,
    /// `TIDINGS_AI_RUNNING_PER_USER` (default 3; 0: no limit): answers one user has
    /// generating at once.
    pub running_per_user: u32,
    /// `TIDINGS_AI_MODEL_STREAMS` (default 256; 0: no limit): answers the built-in model's
    /// HTTP endpoint streams at once (more get 503 with `Retry-After`).
    pub model_streams: u32,
    /// `TIDINGS_AI_RETENTION_DAYS` (default 30, 1–36500): ended chats are deleted, with their
    /// answers, this long after they ended.
    pub retention_days: u32,
}

impl std::fmt::Debug for AssistantConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AssistantConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("model", &self.model)
            .field("provider", &self.provider)
            .field("tokens_per_sec", &self.tokens_per_sec)
            .finish_non_exhaustive()
    }
}

/// The built-in model's name.
pub const BUILT_IN_MODEL: &str = "tidings-guide-1";

impl Default for AssistantConfig {
    fn default() -> Self {
        Self {
            base_url: None,
            api_key: None,
            model: BUILT_IN_MODEL.to_string(),
            provider: Format::OpenAi,
            tokens_per_sec: 30,
            max_tokens: 1024,
            prompt_max_chars: 4000,
            running_per_user: 3,
            model_streams: 256,
            retention_days: 30,
        }
    }
}

impl AssistantConfig {
    /// Reads the assistant's variables; unset ones keep their defaults.
    pub fn from(vars: &Env<'_>) -> anyhow::Result<Self> {
        let d = Self::default();
        let base_url = vars.get("TIDINGS_AI_BASE_URL");
        if let Some(url) = &base_url {
            let parsed = reqwest::Url::parse(url).map_err(|_| {
                anyhow::anyhow!("TIDINGS_AI_BASE_URL must be an http(s) URL, not {url:?}")
            })?;
            if !matches!(parsed.scheme(), "http" | "https") {
                anyhow::bail!("TIDINGS_AI_BASE_URL must be an http(s) URL, not {url:?}");
            }
        }
        let provider = match vars.get("TIDINGS_AI_PROVIDER").as_deref() {
            None | Some("openai") => Format::OpenAi,
            Some("anthropic") => Format::Anthropic,
            Some(other) => {
                anyhow::bail!("TIDINGS_AI_PROVIDER must be openai or anthropic, not {other:?}")
            }
        };
        Ok(Self {
            model: vars.get("TIDINGS_AI_MODEL").unwrap_or(d.model),
            base_url,
            api_key: vars.get("TIDINGS_AI_API_KEY"),
            provider,
            tokens_per_sec: vars.number(
                "TIDINGS_AI_TOKENS_PER_SEC",
                d.tokens_per_sec.into(),
                1,
                1000,
            )? as u32,
            max_tokens: vars.number("TIDINGS_AI_MAX_TOKENS", d.max_tokens.into(), 1, 32_768)?
                as u32,
            prompt_max_chars: vars.number(
                "TIDINGS_AI_PROMPT_MAX_CHARS",
                d.prompt_max_chars.into(),
                1,
                100_000,
            )? as u32,
            running_per_user: vars.number(
                "TIDINGS_AI_RUNNING_PER_USER",
                d.running_per_user.into(),
                0,
                1_000_000,
            )? as u32,
            model_streams: vars.number(
                "TIDINGS_AI_MODEL_STREAMS",
                d.model_streams.into(),
                0,
                1_000_000,
            )? as u32,
            retention_days: vars.number(
                "TIDINGS_AI_RETENTION_DAYS",
                d.retention_days.into(),
                1,
                36_500,
            )? as u32,
        })
    }

    /// The settings tests start from: the built-in model at 200 tokens/s, no per-user limit.
    pub fn for_tests() -> Self {
        Self {
            tokens_per_sec: 200,
            running_per_user: 0,
            ..Self::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pairs: &'static [(&'static str, &'static str)]) -> anyhow::Result<AssistantConfig> {
        AssistantConfig::from(&Env::from_pairs(pairs))
    }

    #[test]
    fn defaults_are_the_built_in_model_and_values_are_checked() {
        assert_eq!(read(&[]).unwrap(), AssistantConfig::default());
        let c = read(&[
            ("TIDINGS_AI_BASE_URL", "https://api.anthropic.com/v1"),
            ("TIDINGS_AI_PROVIDER", "anthropic"),
            ("TIDINGS_AI_API_KEY", "sk-ant-secret"),
            ("TIDINGS_AI_TOKENS_PER_SEC", "50"),
        ])
        .unwrap();
        assert_eq!(
            (c.provider, c.tokens_per_sec, c.api_key.as_deref()),
            (Format::Anthropic, 50, Some("sk-ant-secret"))
        );
        assert!(!format!("{c:?}").contains("sk-ant-secret"), "{c:?}");
        for (name, value) in [
            ("TIDINGS_AI_PROVIDER", "gemini"),
            ("TIDINGS_AI_BASE_URL", "ftp://x"),
            ("TIDINGS_AI_TOKENS_PER_SEC", "0"),
            ("TIDINGS_AI_RETENTION_DAYS", "0"),
        ] {
            let e = AssistantConfig::from(&Env::from_fn(move |n| {
                (n == name).then(|| value.to_string())
            }))
            .unwrap_err()
            .to_string();
            assert!(e.starts_with(name), "{e}");
        }
    }
}
