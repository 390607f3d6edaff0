//! `tidings ask "question"`: an AI answer streamed to the terminal as it is written (issue 19).
//!
//! - Through Tidings (the default): signs in, starts a chat (`POST /api/assistant/chats`) and
//!   follows its `token` events, printing each text as it comes. A dropped connection is
//!   resumed with `Last-Event-ID`, so nothing is printed twice and nothing is missed (the
//!   server keeps generating meanwhile). Ctrl-C asks the server to stop the answer
//!   (`POST …/cancel`), which aborts the provider's request, and prints what came until
//!   its end; a second Ctrl-C leaves at once.
//! - Straight to a provider: `--upstream URL --api-key-env VAR` sends the request itself
//!   through [`crate::upstream`] (the client the server's relay uses), in OpenAI's format or
//!   with `--provider anthropic` Anthropic's. The key is read from the environment variable
//!   named, never from the command line, and never printed.
//!
//! The answer goes to stdout; the figures at its end (tokens, tokens/s, why it ended) go to
//! stderr, so `tidings ask … > answer.md` keeps only the answer. An `error` event, a refusal or
//! a broken stream exit with code 1 and the sentence, after what arrived was printed.
//!
//! Tests: `tests/it/assistant.rs` runs the real binary through a server and straight at the
//! built-in model.

use std::{
    io::Write,
    time::{Duration, Instant},
};

use anyhow::Context;
use eventsource_stream::Eventsource;
use futures::StreamExt;

use super::{backoff, http_client, refusal, sign_in};
use crate::{
    protocol::{
        ai::{Format, Piece},
        assistant::{ChatCreated, DoneData, ErrorData, NewChat, TokenData, DONE, ERROR, TOKEN},
    },
    upstream::{connect, open, Upstream, UpstreamError},
};

/// `tidings ask`: stream an answer to the terminal.
#[derive(Clone, Debug, clap::Args)]
pub struct AskArgs {
    /// The question (`-` reads it from stdin).
    pub prompt: String,
    /// The Tidings server to ask.
    #[arg(long, env = "TIDINGS_SERVER", default_value = "http://127.0.0.1:3000")]
    pub server: String,
    /// The account to ask as (through Tidings).
    #[arg(long, env = "TIDINGS_USERNAME")]
    pub username: Option<String>,
    /// Its password (better given in the environment).
    #[arg(long, env = "TIDINGS_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Ask a provider straight away instead of Tidings: its base URL, such as
    /// `https://api.openai.com/v1` (or a Tidings server's `/v1`, the built-in model).
    #[arg(long, value_name = "URL")]
    pub upstream: Option<String>,
    /// With `--upstream`: the environment variable that holds the provider's key.
    #[arg(long, value_name = "VAR")]
    pub api_key_env: Option<String>,
    /// With `--upstream`: the provider's stream format, `openai` or `anthropic`.
    #[arg(long, default_value = "openai", value_parser = ["openai", "anthropic"])]
    pub provider: String,
    /// With `--upstream`: the model to ask.
    #[arg(long, default_value = "tidings-guide-1")]
    pub model: String,
    /// With `--upstream`: the longest answer, in tokens.
    #[arg(long, default_value_t = 1024)]
    pub max_tokens: u32,
    /// Give up on a connection that sends nothing for this many seconds (through Tidings it
    /// is resumed like a drop).
    #[arg(long, default_value_t = 90)]
    pub timeout: u64,
    /// Through Tidings: reconnections in all before giving up.
    #[arg(long, default_value_t = 20)]
    pub max_reconnects: u32,
}

/// How an answer ended, for the closing figures.
#[derive(Debug, Default, PartialEq)]
pub struct Ending {
    pub tokens: u64,
    pub finish_reason: String,
    pub completion_tokens: Option<u32>,
    pub tokens_per_second: f64,
}

/// Runs `tidings ask`.
pub async fn run(args: AskArgs) -> anyhow::Result<Ending> {
    let prompt = if args.prompt == "-" {
        std::io::read_to_string(std::io::stdin()).context("cannot read the question from stdin")?
    } else {
        args.prompt.clone()
    };
    if prompt.trim().is_empty() {
        anyhow::bail!("the question is empty");
    }
    let mut out = std::io::stdout().lock();
    let ending = match &args.upstream {
        Some(base) => direct(&args, base, &prompt, &mut out).await?,
        None => through_tidings(&args, &prompt, &mut out).await?,
    };
    let _ = writeln!(out);
    drop(out);
    eprintln!(
        "{} tokens, {:.1} tokens/s, finish: {}",
        ending.completion_tokens.map_or(ending.tokens, u64::from),
        ending.tokens_per_second,
        ending.finish_reason
    );
    Ok(ending)
}

fn print(out: &mut impl Write, text: &str) -> anyhow::Result<()> {
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("cannot write the answer")
}

/// Asks the provider at `base` straight away.
async fn direct(
    args: &AskArgs,
    base: &str,
    prompt: &str,
    out: &mut impl Write,
) -> anyhow::Result<Ending> {
    let key = match &args.api_key_env {
        Some(var) => Some(
            std::env::var(var)
                .ok()
                .filter(|k| !k.is_empty())
                .with_context(|| format!("--api-key-env {var}: that variable is not set"))?,
        ),
        None => None,
    };
    let format = if args.provider == "anthropic" {
        Format::Anthropic
    } else {
        Format::OpenAi
    };
    let mut up = Upstream::chat(
        base,
        format,
        &args.model,
        key.as_deref(),
        args.max_tokens,
        prompt,
    );
    up.idle_timeout = Duration::from_secs(args.timeout.max(1));
    let client = http_client(up.idle_timeout)?;
    let started = Instant::now();
    let mut pieces = open(&client, &up).await?;
    let mut ending = Ending::default();
    let mut first: Option<Instant> = None;
    while let Some(piece) = pieces.next().await {
        match piece.map_err(anyhow::Error::from)? {
            Piece::Text(text) => {
                first.get_or_insert_with(Instant::now);
                ending.tokens += 1;
                print(out, &text)?;
            }
            Piece::Stop(reason) => ending.finish_reason = reason,
            Piece::Usage { output, .. } => {
                if output.is_some() {
                    ending.completion_tokens = output;
                }
            }
            Piece::Error(why) => anyhow::bail!("the provider reported an error: {why}"),
            Piece::Done => break,
        }
    }
    let secs = first.unwrap_or(started).elapsed().as_secs_f64();
    ending.tokens_per_second = if secs > 0.0 {
        ending.tokens as f64 / secs
    } else {
        0.0
    };
    if ending.finish_reason.is_empty() {
        ending.finish_reason = "stop".into();
    }
    Ok(ending)
}

/// Asks through a Tidings server, resuming its stream after drops.
async fn through_tidings(
    args: &AskArgs,
    prompt: &str,
    out: &mut impl Write,
) -> anyhow::Result<Ending> {
    let (Some(username), Some(password)) = (&args.username, &args.password) else {
        anyhow::bail!(
            "asking through Tidings needs --username and TIDINGS_PASSWORD (or --upstream URL \
             to ask a provider straight away)"
        );
    };
    let idle = Duration::from_secs(args.timeout.max(1));
    let client = http_client(idle)?;
    let server = args.server.trim_end_matches('/');
    sign_in(&client, server, username, password).await?;
    let res = client
        .post(format!("{server}/api/assistant/chats"))
        .json(&NewChat {
            prompt: Some(prompt.to_string()),
        })
        .send()
        .await
        .with_context(|| format!("cannot reach {server}"))?;
    if !res.status().is_success() {
        anyhow::bail!("the question was refused: {}", refusal(res).await);
    }
    let chat: ChatCreated = res
        .json()
        .await
        .context("the answer to the question is not the expected JSON")?;

    let stream = Upstream {
        url: format!("{server}{}", chat.events_url),
        method: reqwest::Method::GET,
        headers: Vec::new(),
        body: None,
        format: Format::OpenAi,
        connect_timeout: Duration::from_secs(10).min(idle),
        idle_timeout: idle,
    };
    let cancel_url = format!("{server}/api/assistant/chats/{}/cancel", chat.id);
    let mut last: u64 = 0;
    let mut reconnects = 0u32;
    let mut failures = 0u32;
    let mut stopping = false;
    let mut ctrl_c = Box::pin(tokio::signal::ctrl_c());
    loop {
        let res = match connect(
            &client,
            &stream,
            (last > 0).then(|| last.to_string()).as_deref(),
        )
        .await
        {
            Ok(res) => res,
            Err(UpstreamError::Over) => {
                anyhow::bail!("the answer's stream ended without its closing event")
            }
            Err(e @ UpstreamError::Refused { .. }) => return Err(e.into()),
            Err(e) => {
                failures += 1;
                reconnects += 1;
                if reconnects > args.max_reconnects {
                    return Err(anyhow::Error::from(e).context("giving up on the answer's stream"));
                }
                tokio::time::sleep(backoff(failures, Duration::from_millis(500), idle)).await;
                continue;
            }
        };
        let mut events = Box::pin(res.bytes_stream().eventsource());
        loop {
            let next = tokio::select! {
                next = tokio::time::timeout(idle, events.next()) => next,
                _ = &mut ctrl_c => {
                    if stopping {
                        // A second Ctrl-C: leave without waiting for the server.
                        let _ = writeln!(out);
                        anyhow::bail!("stopped; {last} tokens arrived");
                    }
                    // Ctrl-C: the server stops the answer (and the provider's request); its
                    // `done` with `cancelled` still comes through this stream.
                    stopping = true;
                    ctrl_c = Box::pin(tokio::signal::ctrl_c());
                    let _ = client.post(&cancel_url).send().await;
                    continue;
                }
            };
            let event = match next {
                Ok(Some(Ok(event))) => event,
                // Silence, a cut or a clean end before the closing event: resume.
                _ => break,
            };
            failures = 0;
            let id: u64 = event.id.parse().unwrap_or(0);
            match event.event.as_str() {
                TOKEN => {
                    // A token is printed once: a replay after a resume starts after `last`.
                    if id <= last {
                        continue;
                    }
                    let token: TokenData = serde_json::from_str(&event.data)
                        .context("a token event is not the expected JSON")?;
                    print(out, &token.text)?;
                    last = id;
                }
                DONE => {
                    let done: DoneData = serde_json::from_str(&event.data)
                        .context("the done event is not the expected JSON")?;
                    return Ok(Ending {
                        tokens: last,
                        finish_reason: done.finish_reason,
                        completion_tokens: Some(done.usage.completion_tokens),
                        tokens_per_second: done.tokens_per_second,
                    });
                }
                ERROR => {
                    let error: ErrorData = serde_json::from_str(&event.data)
                        .context("the error event is not the expected JSON")?;
                    let _ = writeln!(out);
                    anyhow::bail!("the answer ended early: {}", error.message);
                }
                _ => {}
            }
        }
        reconnects += 1;
        if reconnects > args.max_reconnects {
            anyhow::bail!(
                "the answer's stream kept dropping ({} reconnections); {last} tokens arrived",
                args.max_reconnects
            );
        }
        tokio::time::sleep(backoff(1, Duration::from_millis(200), idle)).await;
    }
}
