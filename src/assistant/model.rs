//! The built-in model: what answers when no provider is configured, so the assistant works
//! offline and every test runs without a network (docs/interface.md, "AI token streams").
//!
//! - [`answer`] is deterministic: the prompt picks where to start in a few paragraphs of the
//!   guide's own prose (one of them with a fenced code block), taken until the answer has at
//!   least [`MIN_TOKENS`] tokens, cut at `max_tokens` (then it ends with `length`).
//! - [`pieces`] paces those tokens at the configured rate, as the same [`Piece`]s the upstream
//!   client decodes from a provider, so the relay handles both alike; the in-process path skips
//!   only the HTTP.
//! - [`completions`] serves them at `POST /v1/chat/completions` in OpenAI's streaming format
//!   (a role chunk, one chunk per token, the `finish_reason` chunk, a usage chunk, then
//!   `data: [DONE]`), so `TIDINGS_AI_BASE_URL` can point at this server to run the real client
//!   path end to end. It takes no key (it only ever says these paragraphs) and streams at most
//!   `TIDINGS_AI_MODEL_STREAMS` answers at once.
//!
//! Tests: unit tests below; `tests/it/assistant.rs` reads the endpoint through the upstream
//! client.

use std::{sync::Arc, time::Duration};

use axum::{
    body::Body,
    extract::State,
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use futures::StreamExt;
use serde_json::json;
use tokio::sync::Semaphore;

use crate::{
    protocol::ai::Piece,
    server::{clock, Shutdown},
    upstream::Pieces,
};

/// The shortest answer, unless the request's `max_tokens` asks for fewer.
pub const MIN_TOKENS: usize = 100;

/// What the model knows: the guide's prose.
const PARAGRAPHS: &[&str] = &[
    "Server-Sent Events are one response that never ends: text/event-stream, named events with ids, one way from server to browser. The browser reconnects by itself and sends Last-Event-ID, so a server that stores what it sent can replay exactly what was missed.",
    "To follow a stream from a terminal, ask for it without buffering:\n```sh\ncurl -N -H 'Accept: text/event-stream' http://127.0.0.1:3000/api/assistant/chats/1/events\n```\nEach block ends with a blank line; a line that starts with a colon is a comment, often a keep-alive.",
    "An AI answer is a stream of tokens. Relay it through your server, never from the browser: the API key stays on the server, every token is stored as it arrives, and a reload resumes at the next token instead of starting over.",
    "WebSockets carry messages both ways on one upgraded connection. Reach for them when both sides talk often, as in a chat room with presence; when only the server talks, Server-Sent Events are simpler and resume by themselves.",
    "Polling asks again every few seconds and the server answers at once. With ETag and If-None-Match an unchanged answer is a 304 with no body, which keeps rare updates cheap and works through every proxy.",
    "HTTP streaming writes one large response as it is produced: NDJSON rows flushed in batches, read by fetch() as they arrive. A broken download resumes where it stopped when each row carries its id.",
    "A durable job queue answers the request at once and does the work on a worker pool. Every event is stored before it is sent, so progress survives the tab closing and the server restarting.",
];

/// A 64-bit FNV-1a hash (stable across builds: the answer must not change between runs).
fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Splits text into tokens: each word with the whitespace before it.
fn tokenize(text: &str, out: &mut Vec<String>) {
    let mut current = String::new();
    let mut in_word = false;
    for c in text.chars() {
        if c.is_whitespace() && in_word {
            out.push(std::mem::take(&mut current));
            in_word = false;
        } else if !c.is_whitespace() {
            in_word = true;
        }
        current.push(c);
    }
    if !current.is_empty() {
        out.push(current);
    }
}

/// Roughly how many tokens a prompt is (its words; at least one).
pub fn prompt_tokens(prompt: &str) -> u32 {
    prompt.split_whitespace().count().max(1) as u32
}

/// The answer to `prompt`, as tokens, and why it ends (`stop`, or `length` when `max_tokens`
/// cut it).
pub fn answer(prompt: &str, max_tokens: u32) -> (Vec<String>, &'static str) {
    let mut tokens = Vec::new();
    let topic: String = prompt
        .split_whitespace()
        .take(12)
        .collect::<Vec<_>>()
        .join(" ");
    tokenize(&format!("You asked: “{topic}”.\n\n"), &mut tokens);
    let start = (fnv(prompt) % PARAGRAPHS.len() as u64) as usize;
    let mut i = 0;
    while tokens.len() < MIN_TOKENS {
        let paragraph = PARAGRAPHS[(start + i) % PARAGRAPHS.len()];
        if i > 0 {
            tokenize("\n\n", &mut tokens);
            // The blank line belongs to the next paragraph's first word.
            let gap = tokens.pop().unwrap_or_default();
            let mut next = Vec::new();
            tokenize(paragraph, &mut next);
            if let Some(first) = next.first_mut() {
                first.insert_str(0, &gap);
            }
            tokens.extend(next);
        } else {
            tokenize(paragraph, &mut tokens);
        }
        i += 1;
    }
    let max = max_tokens as usize;
    if tokens.len() > max {
        tokens.truncate(max);
        (tokens, "length")
    } else {
        (tokens, "stop")
    }
}

/// The answer's pieces, one token every `pace`, then the stop reason, the usage and the end.
pub fn pieces(prompt: &str, max_tokens: u32, pace: Duration) -> Pieces {
    let (tokens, finish) = answer(prompt, max_tokens);
    let input = prompt_tokens(prompt);
    let output = tokens.len() as u32;
    let stream = futures::stream::unfold(
        (ticks_for(pace), tokens.into_iter(), 0u8),
        move |(mut ticks, mut tokens, stage)| async move {
            match stage {
                0 => match tokens.next() {
                    Some(t) => {
                        ticks.tick().await;
                        Some((Ok(Piece::Text(t)), (ticks, tokens, 0)))
                    }
                    None => Some((Ok(Piece::Stop(finish.to_string())), (ticks, tokens, 1))),
                },
                1 => Some((
                    Ok(Piece::Usage {
                        input: Some(input),
                        output: Some(output),
                    }),
                    (ticks, tokens, 2),
                )),
                2 => Some((Ok(Piece::Done), (ticks, tokens, 3))),
                _ => None,
            }
        },
    );
    Box::pin(stream)
}

/// A timer whose first tick waits a whole `pace` (a model takes a moment to start too).
fn ticks_for(pace: Duration) -> tokio::time::Interval {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + pace, pace);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks
}

/// The built-in model's endpoint: its pace and how many answers it streams at once.
#[derive(Clone)]
pub struct BuiltIn {
    pub pace: Duration,
    pub max_tokens: u32,
    /// `None`: no limit.
    pub streams: Option<Arc<Semaphore>>,
    pub shutdown: Shutdown,
}

/// An error in OpenAI's shape.
fn refuse(status: StatusCode, kind: &str, message: &str) -> Response {
    let mut response = (
        status,
        Json(json!({"error": {"message": message, "type": kind}})),
    )
        .into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

/// The prompt of a chat-completions request: its last user message's text.
fn prompt_of(body: &serde_json::Value) -> Option<String> {
    let messages = body["messages"].as_array()?;
    let last = messages.iter().rev().find(|m| m["role"] == "user")?;
    match &last["content"] {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Array(parts) => Some(
            parts
                .iter()
                .filter_map(|p| p["text"].as_str())
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        _ => None,
    }
    .filter(|s| !s.trim().is_empty())
}

/// `POST /v1/chat/completions` (streaming only).
pub async fn completions(State(model): State<BuiltIn>, body: axum::body::Bytes) -> Response {
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "The body must be a JSON chat-completions request.",
        );
    };
    if body["stream"] != true {
        return refuse(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "The built-in model only streams: set \"stream\": true.",
        );
    }
    let Some(prompt) = prompt_of(&body) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "`messages` must end with a user message that has some text.",
        );
    };
    let max_tokens = body["max_tokens"]
        .as_u64()
        .or(body["max_completion_tokens"].as_u64())
        .map_or(model.max_tokens, |n| n.clamp(1, 32_768) as u32);
    let permit = match &model.streams {
        None => None,
        Some(s) => match s.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => {
                return refuse(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "server_error",
                    "The built-in model is streaming as many answers as it may; try again.",
                )
            }
        },
    };
    let name = body["model"]
        .as_str()
        .unwrap_or(super::settings::BUILT_IN_MODEL)
        .to_string();
    let id = format!("chatcmpl-tidings-{:016x}", fnv(&prompt));
    let created = clock::now_ms() / 1000;
    let chunk = move |delta: serde_json::Value, finish: Option<&str>| {
        json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": name,
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    let usage_chunk = chunk(json!({}), None);
    let first = chunk(json!({"role": "assistant", "content": ""}), None);
    let events = pieces(&prompt, max_tokens, model.pace).map(move |piece| {
        let data = match piece {
            Ok(Piece::Text(t)) => chunk(json!({ "content": t }), None).to_string(),
            Ok(Piece::Stop(reason)) => chunk(json!({}), Some(&reason)).to_string(),
            Ok(Piece::Usage { input, output }) => {
                let mut u = usage_chunk.clone();
                u["choices"] = json!([]);
                let (i, o) = (input.unwrap_or(0), output.unwrap_or(0));
                u["usage"] =
                    json!({"prompt_tokens": i, "completion_tokens": o, "total_tokens": i + o});
                u.to_string()
            }
            _ => "[DONE]".to_string(),
        };
        Ok::<_, std::convert::Infallible>(bytes::Bytes::from(format!("data: {data}\n\n")))
    });
    let opening =
        futures::stream::once(async move { Ok(bytes::Bytes::from(format!("data: {first}\n\n"))) });
    let shutdown = model.shutdown.clone();
    let body = opening
        .chain(events)
        .take_until(async move { shutdown.cancelled().await })
        .chain(futures::stream::once(async move {
            drop(permit);
            Ok(bytes::Bytes::new())
        }));
    let mut response = Body::from_stream(body).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_deterministic_long_enough_and_cut_at_max_tokens() {
        let (a, why) = answer("How does SSE resume?", 1024);
        assert_eq!(why, "stop");
        assert!(a.len() >= MIN_TOKENS, "{}", a.len());
        assert_eq!(answer("How does SSE resume?", 1024).0, a);
        assert!(a[0].starts_with("You"));
        let text: String = a.concat();
        assert!(text.contains("“How does SSE resume?”"), "{text}");
        // Tokens keep every character, so their concatenation is the text.
        assert!(!text.contains("  "), "{text}");
        let (short, why) = answer("How does SSE resume?", 5);
        assert_eq!((short.len(), why), (5, "length"));
        // Some prompt lands on the paragraph with a code block.
        assert!((0..20).any(|i| answer(&format!("q{i}"), 1024)
            .0
            .concat()
            .contains("```sh\n")));
    }

    #[test]
    fn tokens_carry_the_whitespace_before_them() {
        let mut t = Vec::new();
        tokenize("Hello world\n\nNext  one", &mut t);
        assert_eq!(t, vec!["Hello", " world", "\n\nNext", "  one"]);
        assert_eq!(prompt_tokens("  "), 1);
        assert_eq!(prompt_tokens("a b c"), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn pieces_come_at_the_pace_then_stop_usage_and_done() {
        let started = tokio::time::Instant::now();
        let all: Vec<_> = pieces("hi", 3, Duration::from_millis(100)).collect().await;
        assert_eq!(started.elapsed(), Duration::from_millis(300));
        let all: Vec<Piece> = all.into_iter().map(Result::unwrap).collect();
        assert_eq!(all.len(), 6);
        assert!(matches!(&all[0], Piece::Text(t) if t == "You"));
        assert_eq!(all[3], Piece::Stop("length".into()));
        assert_eq!(
            all[4],
            Piece::Usage {
                input: Some(1),
                output: Some(3)
            }
        );
        assert_eq!(all[5], Piece::Done);
    }
}
