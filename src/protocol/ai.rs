//! AI token streams (docs/interface.md, "AI token streams"; issue 19): what the two provider
//! formats a relay reads mean, decoded the same way for the server's relay and the
//! command-line client.
//!
//! - **OpenAI chat completions** (`stream: true`): unnamed events whose data is a
//!   `chat.completion.chunk`; the text is `choices[0].delta.content`, the end
//!   `choices[0].finish_reason`, the token counts a last chunk's `usage` (with
//!   `stream_options.include_usage`); the stream ends with `data: [DONE]`. An error is a JSON
//!   body with `error.message`, also when it arrives as a stream event.
//! - **Anthropic Messages** (`stream: true`): named events whose data carries the same `type`:
//!   `message_start` (input tokens), `content_block_delta` with a `text_delta`, `message_delta`
//!   (`stop_reason`, output tokens), `message_stop` (the end), `error`; `ping`,
//!   `content_block_start` and `content_block_stop` say nothing a reader needs. An event
//!   without a name is read by its data's `type`.
//!
//! [`decode`] turns one event into [`Piece`]s; the SSE framing itself (comments, CRLF,
//! chunk boundaries) is the SSE parser's job. Tests: the recorded transcripts below (written
//! from the providers' published streaming documentation, byte for byte), split at every
//! byte boundary and read through the independent WHATWG parser (`eventsource-stream`).

use serde::{Deserialize, Serialize};

/// The two wire formats a provider streams in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    OpenAi,
    Anthropic,
}

/// What one event of a provider's stream says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    /// The next text of the answer.
    Text(String),
    /// Why the model stopped (`stop`, `length`, `end_turn`, `max_tokens`, …).
    Stop(String),
    /// Token counts, as far as this event tells them.
    Usage {
        input: Option<u32>,
        output: Option<u32>,
    },
    /// The provider reports an error in the stream (its sentence).
    Error(String),
    /// The stream is complete.
    Done,
}

/// The pieces of one event named `name` (`""` for an unnamed one) with `data`; `Err` with a
/// sentence when the data is not what the format sends.
pub fn decode(format: Format, name: &str, data: &str) -> Result<Vec<Piece>, String> {
    match format {
        Format::OpenAi => openai(data),
        Format::Anthropic => anthropic(name, data),
    }
}

fn json(data: &str) -> Result<serde_json::Value, String> {
    serde_json::from_str(data).map_err(|e| format!("the provider sent data that is not JSON: {e}"))
}

fn count(v: &serde_json::Value) -> Option<u32> {
    v.as_u64().and_then(|n| u32::try_from(n).ok())
}

fn error_sentence(error: &serde_json::Value) -> String {
    let message = error["message"].as_str().unwrap_or("no message");
    match error["type"].as_str() {
        Some(kind) => format!("{kind}: {message}"),
        None => message.to_string(),
    }
}

fn openai(data: &str) -> Result<Vec<Piece>, String> {
    if data.trim() == "[DONE]" {
        return Ok(vec![Piece::Done]);
    }
    let v = json(data)?;
    if v.get("error").is_some_and(|e| !e.is_null()) {
        return Ok(vec![Piece::Error(error_sentence(&v["error"]))]);
    }
    let mut pieces = Vec::new();
    if let Some(choice) = v["choices"].get(0) {
        if let Some(text) = choice["delta"]["content"]
            .as_str()
            .filter(|t| !t.is_empty())
        {
            pieces.push(Piece::Text(text.to_string()));
        }
        if let Some(reason) = choice["finish_reason"].as_str() {
            pieces.push(Piece::Stop(reason.to_string()));
        }
    }
    if let Some(usage) = v.get("usage").filter(|u| u.is_object()) {
        pieces.push(Piece::Usage {
            input: count(&usage["prompt_tokens"]),
            output: count(&usage["completion_tokens"]),
        });
    }
    Ok(pieces)
}

fn anthropic(name: &str, data: &str) -> Result<Vec<Piece>, String> {
    let v = json(data)?;
    let kind = if name.is_empty() || name == "message" {
        v["type"].as_str().unwrap_or_default()
    } else {
        name
    };
    Ok(match kind {
        "message_start" => vec![Piece::Usage {
            input: count(&v["message"]["usage"]["input_tokens"]),
            output: count(&v["message"]["usage"]["output_tokens"]),
        }],
        "content_block_delta" if v["delta"]["type"] == "text_delta" => v["delta"]["text"]
            .as_str()
            .filter(|t| !t.is_empty())
            .map(|t| vec![Piece::Text(t.to_string())])
            .unwrap_or_default(),
        "message_delta" => {
            let mut pieces = Vec::new();
            if let Some(reason) = v["delta"]["stop_reason"].as_str() {
                pieces.push(Piece::Stop(reason.to_string()));
            }
            if let Some(output) = count(&v["usage"]["output_tokens"]) {
                pieces.push(Piece::Usage {
                    input: None,
                    output: Some(output),
                });
            }
            pieces
        }
        "message_stop" => vec![Piece::Done],
        "error" => vec![Piece::Error(error_sentence(&v["error"]))],
        // ping, content_block_start, content_block_stop, other deltas (tool input): nothing
        // a text reader needs.
        _ => Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An OpenAI chat-completions stream with `stream_options: {"include_usage": true}`, as
    /// its streaming documentation shows it: a role chunk, content chunks, the finish chunk,
    /// the usage chunk, `[DONE]` (byte for byte in `tests/fixtures/ai/`, which the upstream
    /// client's integration tests serve too).
    const OPENAI: &str = include_str!("../../tests/fixtures/ai/openai-chat.sse");

    /// An Anthropic Messages stream as its streaming documentation shows it, with a `ping`.
    const ANTHROPIC: &str = include_str!("../../tests/fixtures/ai/anthropic-messages.sse");

    /// The events of `wire` as the WHATWG parser reads it when it arrives in two chunks split
    /// at byte `at`.
    fn events_split_at(wire: &[u8], at: usize) -> Vec<(String, String)> {
        use eventsource_stream::Eventsource;
        use futures::StreamExt;
        let chunks: Vec<Result<bytes::Bytes, std::convert::Infallible>> = vec![
            Ok(bytes::Bytes::copy_from_slice(&wire[..at])),
            Ok(bytes::Bytes::copy_from_slice(&wire[at..])),
        ];
        futures::executor::block_on(
            futures::stream::iter(chunks)
                .eventsource()
                .map(|e| {
                    let e = e.expect("a well-formed stream");
                    (e.event, e.data)
                })
                .collect(),
        )
    }

    fn pieces_of(format: Format, wire: &str, at: usize) -> Vec<Piece> {
        events_split_at(wire.as_bytes(), at)
            .into_iter()
            .flat_map(|(name, data)| {
                let name = if name == "message" {
                    String::new()
                } else {
                    name
                };
                decode(format, &name, &data).expect("decodable")
            })
            .collect()
    }

    #[test]
    fn an_openai_transcript_reads_the_same_at_every_split() {
        let expected = vec![
            Piece::Text("Hello".into()),
            Piece::Text(" world\n```rs".into()),
            Piece::Stop("stop".into()),
            Piece::Usage {
                input: Some(9),
                output: Some(12),
            },
            Piece::Done,
        ];
        for at in 0..=OPENAI.len() {
            assert_eq!(
                pieces_of(Format::OpenAi, OPENAI, at),
                expected,
                "split at {at}"
            );
        }
        // CRLF line endings and a comment line change nothing.
        let crlf = format!(": keep-alive\r\n\r\n{}", OPENAI.replace('\n', "\r\n"));
        assert_eq!(pieces_of(Format::OpenAi, &crlf, 7), expected);
    }

    #[test]
    fn an_anthropic_transcript_reads_the_same_at_every_split() {
        let expected = vec![
            Piece::Usage {
                input: Some(25),
                output: Some(1),
            },
            Piece::Text("Hello".into()),
            Piece::Text("!".into()),
            Piece::Stop("end_turn".into()),
            Piece::Usage {
                input: None,
                output: Some(15),
            },
            Piece::Done,
        ];
        for at in 0..=ANTHROPIC.len() {
            assert_eq!(
                pieces_of(Format::Anthropic, ANTHROPIC, at),
                expected,
                "split at {at}"
            );
        }
        // Without the `event:` lines, the data's `type` says the same.
        let unnamed: String = ANTHROPIC
            .lines()
            .filter(|l| !l.starts_with("event:"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(pieces_of(Format::Anthropic, &unnamed, 0), expected);
    }

    #[test]
    fn errors_in_the_stream_are_told_with_their_sentence() {
        let overloaded =
            r#"{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}"#;
        assert_eq!(
            decode(Format::Anthropic, "error", overloaded).unwrap(),
            [Piece::Error("overloaded_error: Overloaded".into())]
        );
        let openai = r#"{"error":{"message":"The server had an error while processing your request.","type":"server_error","param":null,"code":null}}"#;
        assert_eq!(
            decode(Format::OpenAi, "", openai).unwrap(),
            [Piece::Error(
                "server_error: The server had an error while processing your request.".into()
            )]
        );
        assert!(decode(Format::OpenAi, "", "not json").is_err());
    }
}
