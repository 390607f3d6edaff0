//! The SSE client for AI providers (`tidings::upstream`) against a local server playing the
//! provider: the recorded transcripts of both formats (`tests/fixtures/ai/`) sent in two
//! chunks split at every byte boundary, a 429 with `Retry-After`, a provider busy for good, a
//! 401 with the provider's sentence, an HTML error page, and a stream cut short.

use std::{
    convert::Infallible,
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use axum::{
    body::Body,
    extract::Query,
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
    Router,
};
use futures::StreamExt;
use serde_json::json;
use tidings::{
    protocol::ai::{Format, Piece},
    upstream::{open, Upstream, UpstreamError},
};

const OPENAI: &str = include_str!("../fixtures/ai/openai-chat.sse");
const ANTHROPIC: &str = include_str!("../fixtures/ai/anthropic-messages.sse");

#[derive(serde::Deserialize)]
struct Split {
    at: Option<usize>,
}

/// `wire` as an event stream in two chunks split at `at`.
fn stream_of(wire: &'static str, at: usize) -> Response {
    let at = at.min(wire.len());
    let chunks = vec![
        Ok::<_, Infallible>(bytes::Bytes::from_static(&wire.as_bytes()[..at])),
        Ok(bytes::Bytes::from_static(&wire.as_bytes()[at..])),
    ];
    (
        [(header::CONTENT_TYPE, "text/event-stream")],
        Body::from_stream(futures::stream::iter(chunks)),
    )
        .into_response()
}

/// A local provider; returns its base URL.
async fn provider() -> String {
    let busy_once = Arc::new(AtomicU32::new(0));
    let app = Router::new()
        .route(
            "/openai",
            post(|Query(s): Query<Split>| async move { stream_of(OPENAI, s.at.unwrap_or(0)) }),
        )
        .route(
            "/anthropic",
            post(|Query(s): Query<Split>| async move { stream_of(ANTHROPIC, s.at.unwrap_or(0)) }),
        )
        .route(
            "/busy-once",
            post(move || {
                let n = busy_once.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n == 0 {
                        (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, "1")], "slow down")
                            .into_response()
                    } else {
                        stream_of(OPENAI, 0)
                    }
                }
            }),
        )
        .route(
            "/busy",
            post(|| async {
                (StatusCode::SERVICE_UNAVAILABLE, [(header::RETRY_AFTER, "0")], "busy").into_response()
            }),
        )
        .route(
            "/unauthorized",
            post(|| async {
                (
                    StatusCode::UNAUTHORIZED,
                    [(header::CONTENT_TYPE, "application/json")],
                    r#"{"error":{"message":"Incorrect API key provided.","type":"invalid_request_error"}}"#,
                )
                    .into_response()
            }),
        )
        .route(
            "/html",
            post(|| async {
                ([(header::CONTENT_TYPE, "text/html")], "<html>upstream maintenance</html>").into_response()
            }),
        )
        .route(
            "/cut",
            post(|| async {
                // The first two events only: no finish, no [DONE].
                let cut = OPENAI.match_indices("\n\n").nth(1).map_or(0, |(i, _)| i + 2);
                stream_of(&OPENAI[..cut], cut)
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

async fn read_all(base: &str, path: &str, format: Format) -> (Vec<Piece>, Option<UpstreamError>) {
    let client = reqwest::Client::new();
    let up = Upstream::post(&format!("{base}{path}"), format, json!({"stream": true}))
        .header("authorization", "Bearer sk-test-never-shown");
    let mut pieces = match open(&client, &up).await {
        Ok(p) => p,
        Err(e) => return (Vec::new(), Some(e)),
    };
    let mut got = Vec::new();
    while let Some(next) = pieces.next().await {
        match next {
            Ok(p) => got.push(p),
            Err(e) => return (got, Some(e)),
        }
    }
    (got, None)
}

#[tokio::test]
async fn both_transcripts_read_the_same_split_at_every_byte() {
    let base = provider().await;
    let text = |pieces: &[Piece]| {
        pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Text(t) => Some(t.as_str()),
                _ => None,
            })
            .collect::<String>()
    };
    for at in 0..=OPENAI.len() {
        let (pieces, err) = read_all(&base, &format!("/openai?at={at}"), Format::OpenAi).await;
        assert_eq!(err, None, "split at {at}");
        assert_eq!(text(&pieces), "Hello world\n```rs", "split at {at}");
        assert_eq!(pieces.last(), Some(&Piece::Done));
    }
    for at in 0..=ANTHROPIC.len() {
        let (pieces, err) =
            read_all(&base, &format!("/anthropic?at={at}"), Format::Anthropic).await;
        assert_eq!(err, None, "split at {at}");
        assert_eq!(text(&pieces), "Hello!", "split at {at}");
        assert!(pieces.contains(&Piece::Stop("end_turn".into())));
        assert_eq!(pieces.last(), Some(&Piece::Done));
    }
}

#[tokio::test]
async fn a_429_is_tried_again_after_retry_after_and_failures_say_why() {
    let base = provider().await;
    let started = Instant::now();
    let (pieces, err) = read_all(&base, "/busy-once", Format::OpenAi).await;
    assert_eq!(err, None);
    assert_eq!(pieces.last(), Some(&Piece::Done));
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited as Retry-After said"
    );

    let (_, err) = read_all(&base, "/busy", Format::OpenAi).await;
    assert_eq!(err, Some(UpstreamError::Busy { status: 503 }));
    let (_, err) = read_all(&base, "/unauthorized", Format::OpenAi).await;
    let err = err.unwrap();
    assert_eq!(
        err,
        UpstreamError::Refused {
            status: 401,
            message: "Incorrect API key provided.".into()
        }
    );
    assert!(
        !err.to_string().contains("sk-test"),
        "the key is never in an error"
    );
    let (_, err) = read_all(&base, "/html", Format::OpenAi).await;
    assert!(
        matches!(err, Some(UpstreamError::NotAStream { ref content_type, .. }) if content_type == "text/html"),
        "{err:?}"
    );
    // Cut short: what arrived is kept, then the stream says it broke off.
    let (pieces, err) = read_all(&base, "/cut", Format::OpenAi).await;
    assert_eq!(pieces, [Piece::Text("Hello".into())]);
    assert_eq!(err, Some(UpstreamError::BrokenOff));
}
