//! An SSE client made for AI providers (issue 19): the one way Tidings reads another server's
//! event stream for a model's answer, for the server's relay and the command-line client.
//!
//! - A request with a method, a JSON body and headers (the provider's key among them: never
//!   logged here, and [`UpstreamError`] never carries a header).
//! - A connect timeout, and an idle timeout between chunks: a provider that goes quiet ends
//!   the stream with [`UpstreamError::Idle`] instead of hanging.
//! - 429 and 503 are tried again after their `Retry-After` (seconds, at most
//!   [`RETRY_AFTER_MAX`]; without one, 1 s), at most [`TRIES`] tries in all; any other
//!   refusal is final and comes back with the provider's own sentence (`error.message`).
//! - A 2xx that is not `text/event-stream` is an error with what its body says.
//! - The events are read by the WHATWG parser (`eventsource-stream`): comments (`: ping`),
//!   CRLF line endings and data lines without an `event:` are handled there. They are
//!   decoded by `protocol::ai`, and the stream ends at `data: [DONE]` or the provider's stop
//!   event. A stream that breaks off before that is [`UpstreamError::BrokenOff`]: what
//!   arrived before it is the caller's to keep.
//!
//! Tests: the integration tests in `tests/it/upstream.rs` run it against a local server that
//! sends the recorded transcripts split at every byte boundary, a 429 with `Retry-After`, a
//! 401, a non-SSE error body and a stream cut short.

use std::{pin::Pin, time::Duration};

use futures::{Stream, StreamExt};

use crate::protocol::ai::{decode, Format, Piece};

/// Tries in all for a 429 or 503.
pub const TRIES: u32 = 3;
/// The longest `Retry-After` honoured; a longer one is waited this long.
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(30);

/// One request to a provider.
#[derive(Clone, Debug)]
pub struct Upstream {
    pub url: String,
    pub method: reqwest::Method,
    pub headers: Vec<(String, String)>,
    /// The request's body (sent as JSON unless a `content-type` header says otherwise).
    pub body: Option<String>,
    pub format: Format,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
}

impl Upstream {
    /// A `POST` of `body` to `url` in `format`, with 10 s to connect and 60 s of silence
    /// allowed.
    pub fn post(url: &str, format: Format, body: serde_json::Value) -> Self {
        Self {
            url: url.to_string(),
            method: reqwest::Method::POST,
            headers: Vec::new(),
            body: Some(body.to_string()),
            format,
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// A provider's chat request for `prompt`: OpenAI's `POST {base}/chat/completions` (the
    /// key as `Authorization: Bearer`, usage asked for) or Anthropic's `POST {base}/messages`
    /// (the key as `x-api-key`, with its version header). The server's relay and
    /// `tidings ask --upstream` both send this.
    pub fn chat(
        base: &str,
        format: Format,
        model: &str,
        key: Option<&str>,
        max_tokens: u32,
        prompt: &str,
    ) -> Self {
        let base = base.trim_end_matches('/');
        let messages = serde_json::json!([{"role": "user", "content": prompt}]);
        let up = match format {
            Format::OpenAi => Self::post(
                &format!("{base}/chat/completions"),
                format,
                serde_json::json!({"model": model, "messages": messages, "stream": true,
                    "max_tokens": max_tokens, "stream_options": {"include_usage": true}}),
            ),
            Format::Anthropic => Self::post(
                &format!("{base}/messages"),
                format,
                serde_json::json!({"model": model, "messages": messages, "stream": true,
                    "max_tokens": max_tokens}),
            )
            .header("anthropic-version", "2023-06-01"),
        };
        match (key, format) {
            (Some(key), Format::OpenAi) => up.header("authorization", &format!("Bearer {key}")),
            (Some(key), Format::Anthropic) => up.header("x-api-key", key),
            (None, _) => up,
        }
    }
}

/// Why a provider's stream failed, as a sentence fit to show (never a header or a key).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UpstreamError {
    #[error("the server says the stream is over (204)")]
    Over,
    #[error("could not reach the provider: {0}")]
    Unreachable(String),
    #[error("the provider refused the request ({status}): {message}")]
    Refused { status: u16, message: String },
    #[error("the provider is busy ({status}) and still was after {TRIES} tries")]
    Busy { status: u16 },
    #[error("the provider answered with {content_type}, not an event stream: {body}")]
    NotAStream { content_type: String, body: String },
    #[error("the provider sent nothing for {0:?}")]
    Idle(Duration),
    #[error("the provider's stream broke off before its end")]
    BrokenOff,
    #[error("the provider's stream could not be read: {0}")]
    Malformed(String),
    #[error("the provider reported an error: {0}")]
    Provider(String),
}

/// The provider's sentence in an error body (`error.message`, or the start of the text).
fn sentence(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v["error"]["message"]
                .as_str()
                .or(v["message"].as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| {
            body.chars()
                .take(200)
                .collect::<String>()
                .trim()
                .to_string()
        })
}

/// The `Retry-After` wait of a response (seconds), capped; 1 s without one.
fn retry_after(res: &reqwest::Response) -> Duration {
    res.headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(Duration::from_secs(1), Duration::from_secs)
        .min(RETRY_AFTER_MAX)
}

/// The pieces of the provider's answer, as they arrive; ends after [`Piece::Done`] (or the
/// stop that the format ends with), or with an error.
pub type Pieces = Pin<Box<dyn Stream<Item = Result<Piece, UpstreamError>> + Send>>;

/// Sends the request (trying a 429 or 503 again as the provider asks) and returns its pieces.
pub async fn open(client: &reqwest::Client, up: &Upstream) -> Result<Pieces, UpstreamError> {
    let res = connect(client, up, None).await?;
    Ok(pieces(res, up.format, up.idle_timeout))
}

/// Sends the request, with `Last-Event-ID` when given, trying a 429 or 503 again as the
/// server asks, and returns the response once it is an event stream: a 204 is
/// [`UpstreamError::Over`], any other refusal [`UpstreamError::Refused`] with the server's
/// sentence. `tidings tail` follows any stream with it.
pub async fn connect(
    client: &reqwest::Client,
    up: &Upstream,
    last_event_id: Option<&str>,
) -> Result<reqwest::Response, UpstreamError> {
    let mut tries = 0;
    let res = loop {
        tries += 1;
        let mut req = client
            .request(up.method.clone(), &up.url)
            .header(reqwest::header::ACCEPT, "text/event-stream");
        for (k, v) in &up.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        if let Some(body) = &up.body {
            if !up
                .headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
            {
                req = req.header(reqwest::header::CONTENT_TYPE, "application/json");
            }
            req = req.body(body.clone());
        }
        let res = tokio::time::timeout(up.connect_timeout, req.send())
            .await
            .map_err(|_| {
                UpstreamError::Unreachable(format!("no answer within {:?}", up.connect_timeout))
            })?
            // Only the kind of failure: reqwest's text may hold the URL, never a header.
            .map_err(|e| {
                UpstreamError::Unreachable(if e.is_connect() {
                    "the connection was refused".into()
                } else {
                    "the request failed".into()
                })
            })?;
        let status = res.status().as_u16();
        if status == 204 {
            return Err(UpstreamError::Over);
        }
        if status == 429 || status == 503 {
            if tries >= TRIES {
                return Err(UpstreamError::Busy { status });
            }
            tokio::time::sleep(retry_after(&res)).await;
            continue;
        }
        if !res.status().is_success() {
            let body = res.text().await.unwrap_or_default();
            return Err(UpstreamError::Refused {
                status,
                message: sentence(&body),
            });
        }
        break res;
    };
    let content_type = res
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if !content_type.starts_with("text/event-stream") {
        let body = res.text().await.unwrap_or_default();
        return Err(UpstreamError::NotAStream {
            content_type,
            body: sentence(&body),
        });
    }
    Ok(res)
}

fn pieces(res: reqwest::Response, format: Format, idle: Duration) -> Pieces {
    use eventsource_stream::Eventsource;
    let events = res.bytes_stream().eventsource();
    let stream = futures::stream::unfold(
        (Box::pin(events), std::collections::VecDeque::new(), false),
        move |(mut events, mut queued, mut done)| async move {
            loop {
                if let Some(piece) = queued.pop_front() {
                    return Some((Ok(piece), (events, queued, done)));
                }
                if done {
                    return None;
                }
                let next = match tokio::time::timeout(idle, events.next()).await {
                    Err(_) => {
                        return Some((Err(UpstreamError::Idle(idle)), (events, queued, true)))
                    }
                    Ok(next) => next,
                };
                let event = match next {
                    None => return Some((Err(UpstreamError::BrokenOff), (events, queued, true))),
                    Some(Err(e)) => {
                        let err = UpstreamError::Malformed(match e {
                            eventsource_stream::EventStreamError::Transport(_) => {
                                "the connection broke".to_string()
                            }
                            other => other.to_string(),
                        });
                        return Some((Err(err), (events, queued, true)));
                    }
                    Some(Ok(event)) => event,
                };
                let name = if event.event == "message" {
                    ""
                } else {
                    event.event.as_str()
                };
                match decode(format, name, &event.data) {
                    Err(why) => {
                        return Some((Err(UpstreamError::Malformed(why)), (events, queued, true)))
                    }
                    Ok(found) => {
                        for piece in found {
                            match piece {
                                Piece::Error(why) => {
                                    return Some((
                                        Err(UpstreamError::Provider(why)),
                                        (events, queued, true),
                                    ))
                                }
                                Piece::Done => {
                                    queued.push_back(Piece::Done);
                                    done = true;
                                }
                                other => queued.push_back(other),
                            }
                        }
                    }
                }
            }
        },
    );
    Box::pin(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_carry_the_providers_sentence_and_retry_after_is_capped() {
        assert_eq!(
            sentence(
                r#"{"error":{"message":"Incorrect API key provided.","type":"invalid_request_error"}}"#
            ),
            "Incorrect API key provided."
        );
        assert_eq!(
            sentence("<html>Bad gateway</html>"),
            "<html>Bad gateway</html>"
        );
        let e = UpstreamError::Refused {
            status: 401,
            message: "Incorrect API key provided.".into(),
        };
        assert_eq!(
            e.to_string(),
            "the provider refused the request (401): Incorrect API key provided."
        );
    }
}
