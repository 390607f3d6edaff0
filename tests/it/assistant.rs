//! The assistant (docs/interface.md, "AI token streams") through the real server: an answer
//! streams, is stored, and resumes at the next token after a drop, after the end (204), on
//! another instance, and after a restart; Stop closes the provider's request within a second;
//! a provider that refuses, is busy, or breaks off ends the stream with `error` and keeps what
//! arrived; bad prompts are 400s with a sentence; another user's chat is 404; and the
//! built-in model answers through the real client path at `POST /v1/chat/completions`.

use crate::common;

use std::{
    convert::Infallible,
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use axum::{
    body::Body,
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
    Router,
};
use common::{error_code, fresh_database, post_json, Got, Redis, Sse, TestServer, User};
use serde_json::{json, Value};

const ANTHROPIC: &str = include_str!("../fixtures/ai/anthropic-messages.sse");

/// Starts a chat for `user`; returns its id.
async fn ask(server: &TestServer, user: &User, prompt: &str) -> i64 {
    let res = post_json(
        &user.http,
        &server.url("/api/assistant/chats"),
        json!({ "prompt": prompt }),
    )
    .await;
    assert_eq!(res.status(), 201);
    let body: Value = res.json().await.unwrap();
    let id = body["id"].as_i64().expect("an id");
    assert_eq!(
        body["eventsUrl"],
        format!("/api/assistant/chats/{id}/events")
    );
    id
}

/// Opens chat `id`'s stream after event `after`.
async fn stream(server: &TestServer, user: &User, id: i64, after: Option<i64>) -> Sse {
    let mut req = user
        .http
        .get(server.url(&format!("/api/assistant/chats/{id}/events")));
    if let Some(after) = after {
        req = req.header("last-event-id", after.to_string());
    }
    Sse::open(req).await
}

/// Reads tokens until the stream's end; checks their ids run on from `after` one by one.
async fn read_to_end(sse: Sse, after: i64) -> (String, Got) {
    let mut all = sse.rest().await;
    let end = all.pop().expect("an end event");
    let mut text = String::new();
    for (i, got) in all.iter().enumerate() {
        assert_eq!(got.event, "token", "{got:?}");
        assert_eq!(
            got.id,
            (after + 1 + i as i64).to_string(),
            "ids run on without a hole"
        );
        text.push_str(got.data["text"].as_str().unwrap());
    }
    assert!(end.event == "done" || end.event == "error", "{end:?}");
    assert_eq!(end.id, (after + all.len() as i64 + 1).to_string());
    (text, end)
}

/// `POST /api/assistant/chats/{id}/cancel`'s status.
async fn cancel(server: &TestServer, user: &User, id: i64) -> StatusCode {
    user.http
        .post(server.url(&format!("/api/assistant/chats/{id}/cancel")))
        .send()
        .await
        .unwrap()
        .status()
}

/// The chat as `GET /api/assistant/chats/{id}` shows it.
async fn chat(server: &TestServer, user: &User, id: i64) -> Value {
    common::get_json(
        &user.http,
        &server.url(&format!("/api/assistant/chats/{id}")),
    )
    .await
}

#[tokio::test]
async fn an_answer_streams_is_stored_and_resumes_at_the_next_token() {
    let server = TestServer::start().await;
    let ada = server.user("ai_ada").await;
    let id = ask(&server, &ada, "How does SSE resume after a drop?").await;

    // The first ten tokens, then the connection drops.
    let mut sse = stream(&server, &ada, id, None).await;
    let mut head = String::new();
    for n in 1..=10 {
        let got = sse.next_named("token").await;
        assert_eq!(got.id, n.to_string());
        head.push_str(got.data["text"].as_str().unwrap());
    }
    drop(sse);
    let (tail, end) = read_to_end(stream(&server, &ada, id, Some(10)).await, 10).await;
    assert_eq!(end.event, "done");
    assert_eq!(end.data["finishReason"], "stop");
    let completion = end.data["usage"]["completionTokens"].as_i64().unwrap();
    assert!(completion >= 100, "{end:?}");
    assert!(end.data["usage"]["promptTokens"].as_i64().unwrap() >= 1);
    assert!(end.data["tokensPerSecond"].as_f64().unwrap() > 0.0);
    assert_eq!(end.id, (completion + 1).to_string());

    // Stored exactly as streamed.
    let stored = chat(&server, &ada, id).await;
    assert_eq!(stored["status"], "completed");
    assert_eq!(stored["text"], format!("{head}{tail}"));
    assert_eq!(stored["lastEventId"], completion);
    assert!(stored["text"].as_str().unwrap().starts_with("You asked:"));

    // Whoever has the end gets 204; a fresh request replays the whole answer and ends.
    let res = ada
        .http
        .get(server.url(&format!("/api/assistant/chats/{id}/events")))
        .header("last-event-id", end.id.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let (again, _) = read_to_end(stream(&server, &ada, id, None).await, 0).await;
    assert_eq!(again, format!("{head}{tail}"));

    // Listed among mine; nobody else's.
    let list = common::get_json(&ada.http, &server.url("/api/assistant/chats")).await;
    assert_eq!(list["chats"][0]["id"], id);
    assert_eq!(list["chats"][0]["tokens"], completion);
    let bob = server.user("ai_bob").await;
    for res in [
        bob.http
            .get(server.url(&format!("/api/assistant/chats/{id}")))
            .send()
            .await
            .unwrap(),
        bob.http
            .get(server.url(&format!("/api/assistant/chats/{id}/events")))
            .send()
            .await
            .unwrap(),
        bob.http
            .post(server.url(&format!("/api/assistant/chats/{id}/cancel")))
            .send()
            .await
            .unwrap(),
    ] {
        assert_eq!(res.status(), 404);
    }
    let list = common::get_json(&bob.http, &server.url("/api/assistant/chats")).await;
    assert_eq!(list["chats"], json!([]));
    // Ended: a cancel is a conflict.
    let res = ada
        .http
        .post(server.url(&format!("/api/assistant/chats/{id}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 409);
    assert_eq!(error_code(res).await, "chat_finished");
}

#[tokio::test]
async fn bad_prompts_and_strangers_are_refused_with_a_sentence() {
    let server = TestServer::start_with(|s| {
        s.assistant.prompt_max_chars = 20;
        s.assistant.running_per_user = 1;
        s.assistant.tokens_per_sec = 5;
    })
    .await;
    let ada = server.user("ai_limits").await;
    let url = server.url("/api/assistant/chats");
    for (body, code) in [
        (json!({}), "missing_prompt"),
        (json!({"prompt": "   "}), "empty_prompt"),
        (json!({"prompt": "x".repeat(21)}), "prompt_too_long"),
    ] {
        let res = post_json(&ada.http, &url, body).await;
        assert_eq!(res.status(), 400);
        assert_eq!(error_code(res).await, code);
    }
    let res = common::send(ada.http.post(&url).body("not json")).await;
    assert!(res.status().is_client_error(), "{}", res.status());
    // Signed out: 401.
    let res = post_json(&common::plain_client(), &url, json!({"prompt": "hi"})).await;
    assert_eq!(res.status(), 401);
    // One answer running at a time for this user.
    let id = ask(&server, &ada, "first").await;
    let res = post_json(&ada.http, &url, json!({"prompt": "second"})).await;
    assert_eq!(res.status(), 429);
    assert_eq!(error_code(res).await, "too_many_answers");
    assert_eq!(cancel(&server, &ada, id).await, 202);
    // Unknown and malformed ids.
    for path in [
        "/api/assistant/chats/999999",
        "/api/assistant/chats/x/events",
    ] {
        let res = ada.http.get(server.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 404, "{path}");
    }
}

/// What the fake provider saw and when its stream was dropped.
#[derive(Default)]
struct Seen {
    authorization: Mutex<Option<String>>,
    dropped_at: Mutex<Option<Instant>>,
    calls: AtomicU32,
}

/// Sets `dropped_at` when the response body is dropped (the client closed the connection).
struct OnDrop(Arc<Seen>);

impl Drop for OnDrop {
    fn drop(&mut self) {
        *self.0.dropped_at.lock().unwrap() = Some(Instant::now());
    }
}

fn chunk(content: &str) -> String {
    format!(
        "data: {}\n\n",
        json!({"id":"c","object":"chat.completion.chunk","created":1,"model":"m",
               "choices":[{"index":0,"delta":{"content":content},"finish_reason":null}]})
    )
}

fn sse_body(stream: impl futures::Stream<Item = String> + Send + 'static) -> Response {
    use futures::StreamExt;
    (
        [(header::CONTENT_TYPE, "text/event-stream")],
        Body::from_stream(stream.map(|s| Ok::<_, Infallible>(bytes::Bytes::from(s)))),
    )
        .into_response()
}

/// A local provider: `/endless` streams a token every 20 ms until dropped, `/cut` sends five
/// then breaks off, `/refuse` is a 401, `/busy-once` a 429 then a stream, `/anthropic` the
/// recorded Anthropic transcript.
async fn provider(seen: Arc<Seen>) -> String {
    let endless = {
        let seen = seen.clone();
        move |headers: HeaderMap| {
            let seen = seen.clone();
            async move {
                seen.calls.fetch_add(1, Ordering::SeqCst);
                *seen.authorization.lock().unwrap() = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let guard = OnDrop(seen);
                let ticks = tokio_stream_ticks(Duration::from_millis(20));
                sse_body(futures::StreamExt::map(ticks, move |n| {
                    let _ = &guard;
                    chunk(&format!(" t{n}"))
                }))
            }
        }
    };
    let busy = Arc::new(AtomicU32::new(0));
    let app = Router::new()
        .route("/endless/chat/completions", post(endless))
        .route(
            "/cut/chat/completions",
            post(|| async {
                let five: Vec<String> = (1..=5).map(|n| chunk(&format!(" c{n}"))).collect();
                sse_body(futures::stream::iter(five))
            }),
        )
        .route(
            "/refuse/chat/completions",
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
            "/busy-once/chat/completions",
            post(move || {
                let n = busy.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n == 0 {
                        (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, "1")], "slow down")
                            .into_response()
                    } else {
                        sse_body(futures::stream::iter(vec![
                            chunk("late"),
                            chunk(" but here"),
                            "data: [DONE]\n\n".to_string(),
                        ]))
                    }
                }
            }),
        )
        .route(
            "/anthropic/messages",
            post(|headers: HeaderMap| async move {
                assert_eq!(headers["x-api-key"], "sk-ant-test");
                assert_eq!(headers["anthropic-version"], "2023-06-01");
                sse_body(futures::stream::iter(vec![ANTHROPIC.to_string()]))
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

/// 1, 2, 3… every `every`.
fn tokio_stream_ticks(every: Duration) -> impl futures::Stream<Item = u64> + Send {
    futures::stream::unfold(0u64, move |n| async move {
        tokio::time::sleep(every).await;
        Some((n + 1, n + 1))
    })
}

/// A server whose provider is `base` + `path`.
async fn relay(base: &str, path: &str, anthropic: bool) -> TestServer {
    let url = format!("{base}{path}");
    TestServer::start_with(move |s| {
        s.assistant.base_url = Some(url);
        if anthropic {
            s.assistant.provider = tidings::protocol::ai::Format::Anthropic;
            s.assistant.api_key = Some("sk-ant-test".into());
        } else {
            s.assistant.api_key = Some("sk-test-secret".into());
        }
    })
    .await
}

#[tokio::test]
async fn stop_closes_the_providers_request_within_a_second() {
    let seen = Arc::new(Seen::default());
    let base = provider(seen.clone()).await;
    let server = relay(&base, "/endless", false).await;
    let ada = server.user("ai_stopper").await;
    let id = ask(&server, &ada, "Count for ever").await;
    let mut sse = stream(&server, &ada, id, None).await;
    for _ in 0..3 {
        sse.next_named("token").await;
    }
    // The key went to the provider, and to nobody else.
    assert_eq!(
        seen.authorization.lock().unwrap().as_deref(),
        Some("Bearer sk-test-secret")
    );
    let shown = chat(&server, &ada, id).await.to_string();
    assert!(!shown.contains("sk-test-secret"), "{shown}");

    let asked = Instant::now();
    assert_eq!(cancel(&server, &ada, id).await, 202);
    let end = sse.next_named("done").await;
    assert_eq!(end.data["finishReason"], "cancelled");
    // The provider's response was dropped: its connection closed.
    let deadline = asked + Duration::from_secs(5);
    let dropped = loop {
        if let Some(at) = *seen.dropped_at.lock().unwrap() {
            break at;
        }
        assert!(
            Instant::now() < deadline,
            "the provider's stream was never dropped"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let took = dropped.saturating_duration_since(asked);
    assert!(took < Duration::from_secs(1), "stopped after {took:?}");
    let stored = chat(&server, &ada, id).await;
    assert_eq!(stored["status"], "cancelled");
    assert!(
        stored["text"].as_str().unwrap().starts_with(" t1 t2 t3"),
        "{stored}"
    );
    assert_eq!(seen.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn provider_failures_end_in_error_and_keep_what_arrived() {
    let seen = Arc::new(Seen::default());
    let base = provider(seen).await;

    // Broken off after five tokens: they stay, and the stream says why it ended.
    let server = relay(&base, "/cut", false).await;
    let ada = server.user("ai_cut").await;
    let id = ask(&server, &ada, "Tell me").await;
    let (text, end) = read_to_end(stream(&server, &ada, id, None).await, 0).await;
    assert_eq!(text, " c1 c2 c3 c4 c5");
    assert_eq!(end.event, "error");
    assert!(
        end.data["message"].as_str().unwrap().contains("broke off"),
        "{end:?}"
    );
    let stored = chat(&server, &ada, id).await;
    assert_eq!(
        (stored["status"].as_str(), stored["text"].as_str()),
        (Some("failed"), Some(" c1 c2 c3 c4 c5"))
    );
    drop(server);

    // Refused: the provider's own sentence, and no key in it.
    let server = relay(&base, "/refuse", false).await;
    let ada = server.user("ai_refused").await;
    let id = ask(&server, &ada, "Tell me").await;
    let (text, end) = read_to_end(stream(&server, &ada, id, None).await, 0).await;
    assert_eq!((text.as_str(), end.event.as_str()), ("", "error"));
    let message = end.data["message"].as_str().unwrap();
    assert!(message.contains("Incorrect API key provided."), "{message}");
    assert!(!message.contains("sk-test-secret"), "{message}");
    drop(server);

    // A 429 with Retry-After is tried again.
    let server = relay(&base, "/busy-once", false).await;
    let ada = server.user("ai_busy").await;
    let id = ask(&server, &ada, "Tell me").await;
    let (text, end) = read_to_end(stream(&server, &ada, id, None).await, 0).await;
    assert_eq!(
        (text.as_str(), end.event.as_str()),
        ("late but here", "done")
    );
    drop(server);

    // Anthropic's format, with its key header.
    let server = relay(&base, "/anthropic", true).await;
    let ada = server.user("ai_claude").await;
    let id = ask(&server, &ada, "Tell me").await;
    let (text, end) = read_to_end(stream(&server, &ada, id, None).await, 0).await;
    assert_eq!(end.event, "done", "{end:?}");
    assert_eq!(end.data["finishReason"], "end_turn");
    assert!(!text.is_empty());
    assert_eq!(chat(&server, &ada, id).await["text"], text);
}

#[tokio::test]
async fn the_built_in_model_answers_through_the_real_client_path() {
    // One server is the model; the other relays it as it would a provider.
    let model = TestServer::start_with(|s| s.assistant.tokens_per_sec = 500).await;
    let url = model.url("/v1");
    let server = TestServer::start_with(move |s| s.assistant.base_url = Some(url)).await;
    let ada = server.user("ai_loop").await;
    let prompt = "What is a keep-alive comment?";
    let id = ask(&server, &ada, prompt).await;
    let (text, end) = read_to_end(stream(&server, &ada, id, None).await, 0).await;
    assert_eq!(end.event, "done");
    let (tokens, why) = tidings::assistant::model::answer(prompt, 1024);
    assert_eq!(text, tokens.concat());
    assert_eq!(end.data["finishReason"], why);
    assert_eq!(end.data["usage"]["completionTokens"], tokens.len());

    // The endpoint itself: streaming only, and `max_tokens` cuts the answer.
    let http = common::plain_client();
    let res = post_json(
        &http,
        &model.url("/v1/chat/completions"),
        json!({"model": "x", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("stream"));
    let res = post_json(
        &http,
        &model.url("/v1/chat/completions"),
        json!({"model": "x", "stream": true, "max_tokens": 3,
               "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let wire = res.text().await.unwrap();
    assert!(wire.ends_with("data: [DONE]\n\n"), "{wire}");
    assert!(wire.contains(r#""finish_reason":"length""#), "{wire}");
    assert!(wire.contains(r#""completion_tokens":3"#), "{wire}");
}

#[tokio::test]
async fn an_answer_cut_by_a_restart_keeps_what_arrived() {
    let dir = tempfile::tempdir().unwrap();
    let database = fresh_database(dir.path()).await;
    let first = TestServer::start_on(&database, |s| s.assistant.tokens_per_sec = 20).await;
    let ada = first.user("ai_restart").await;
    let id = ask(&first, &ada, "A long one, please").await;
    let mut sse = stream(&first, &ada, id, None).await;
    for _ in 0..5 {
        sse.next_named("token").await;
    }
    drop(sse);
    first.state.shutdown.trigger();
    assert!(first.state.shutdown.drain(Duration::from_secs(20)).await);
    // The next process finds it ended (by the first at shutdown, or as orphaned at start),
    // with at least the five tokens read kept.
    let second = TestServer::start_on(&database, |_| {}).await;
    let http = second.client();
    second.signup(&http, "ai_other").await;
    let res = common::send(
        http.post(second.url("/api/auth/login"))
            .json(&json!({"username": "ai_restart", "password": common::PASSWORD})),
    )
    .await;
    assert_eq!(res.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(15);
    let stored = loop {
        let v = common::get_json(&http, &second.url(&format!("/api/assistant/chats/{id}"))).await;
        if v["status"] != "running" {
            break v;
        }
        assert!(Instant::now() < deadline, "still running: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(stored["status"], "failed");
    assert!(stored["lastEventId"].as_i64().unwrap() >= 5, "{stored}");
    let events = Sse::open(
        http.get(second.url(&format!("/api/assistant/chats/{id}/events")))
            .header("last-event-id", "5"),
    )
    .await
    .rest()
    .await;
    let end = events.last().unwrap();
    assert_eq!(end.event, "error");
    assert!(end.data["message"]
        .as_str()
        .unwrap()
        .contains("what arrived is kept"));
}

#[tokio::test]
async fn another_instance_resumes_the_stream_and_stops_the_answer() {
    if common::skip_without_redis() {
        return;
    }
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let database = fresh_database(dir.path()).await;
    let url = redis.url();
    let a = TestServer::start_on(&database, |s| {
        s.server.redis_url = Some(url.clone());
        s.assistant.tokens_per_sec = 100;
    })
    .await;
    let b = TestServer::start_on(&database, |s| s.server.redis_url = Some(url.clone())).await;
    let ada = a.user("ai_scale").await;
    let id = ask(&a, &ada, "Which instance am I on?").await;
    let mut sse = stream(&a, &ada, id, None).await;
    for _ in 0..5 {
        sse.next_named("token").await;
    }
    drop(sse);
    // The same session on B (one database), after token 5.
    let (text, end) = read_to_end(stream(&b, &ada, id, Some(5)).await, 5).await;
    assert_eq!(end.event, "done");
    let whole = chat(&a, &ada, id).await["text"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(whole.ends_with(&text) && whole.len() > text.len());

    // A stop asked on B stops A's answer within a second.
    let id = ask(&a, &ada, "Another one").await;
    let mut sse = stream(&b, &ada, id, None).await;
    sse.next_named("token").await;
    let asked = Instant::now();
    assert_eq!(cancel(&b, &ada, id).await, 202);
    let end = sse.next_named("done").await;
    assert_eq!(end.data["finishReason"], "cancelled");
    assert!(
        asked.elapsed() < Duration::from_millis(1500),
        "{:?}",
        asked.elapsed()
    );
}

/// The real `tidings` binary with a clean environment.
fn tidings(args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_tidings"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    cmd
}

#[tokio::test]
async fn tidings_ask_streams_an_answer_through_tidings_and_straight_from_a_provider() {
    let server = TestServer::start_with(|s| s.assistant.tokens_per_sec = 500).await;
    server.user("ai_cli").await;
    let prompt = "How does a stream resume?";
    let (tokens, _) = tidings::assistant::model::answer(prompt, 1024);

    // Through Tidings: signed in, the whole answer on stdout, the figures on stderr.
    let out = tidings(&[
        "ask",
        prompt,
        "--server",
        &server.base,
        "--username",
        "ai_cli",
    ])
    .env("TIDINGS_PASSWORD", common::PASSWORD)
    .output()
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), tokens.concat() + "\n");
    assert!(
        stderr.contains(&format!("{} tokens", tokens.len())) && stderr.contains("finish: stop"),
        "{stderr}"
    );

    // Straight to a provider (here the built-in model), the key read from the variable named.
    let base = server.url("/v1");
    let out = tidings(&[
        "ask",
        prompt,
        "--upstream",
        &base,
        "--api-key-env",
        "MY_KEY",
        "--max-tokens",
        "7",
    ])
    .env("MY_KEY", "sk-cli-secret")
    .output()
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        tokens[..7].concat() + "\n"
    );
    assert!(
        stderr.contains("7 tokens") && stderr.contains("finish: length"),
        "{stderr}"
    );
    assert!(!stderr.contains("sk-cli-secret"));

    // A variable that is not set, and a Tidings question without an account: a sentence.
    let out = tidings(&["ask", "hi", "--upstream", &base, "--api-key-env", "NOT_SET"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("NOT_SET: that variable is not set"));
    let out = tidings(&["ask", " ", "--server", &server.base])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("the question is empty"));
}

#[tokio::test]
async fn tidings_tail_posts_to_a_provider_and_stops_at_the_done_marker() {
    let server = TestServer::start_with(|s| s.assistant.tokens_per_sec = 500).await;
    let body = json!({"model": "m", "stream": true, "max_tokens": 4,
                      "messages": [{"role": "user", "content": "hi"}]})
    .to_string();
    let url = server.url("/v1/chat/completions");
    let out = tidings(&[
        "tail",
        &url,
        "--method",
        "post",
        "--header",
        "Authorization: Bearer sk-tail",
        "--data",
        &body,
        "--done-marker",
        "[DONE]",
        "--json",
        "--timeout",
        "10",
        "--max-reconnects",
        "1",
    ])
    .output()
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let text: String = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["data"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .filter_map(|d| {
            serde_json::from_str::<Value>(&d).ok()?["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    let (tokens, _) = tidings::assistant::model::answer("hi", 4);
    assert_eq!(text, tokens.concat());
    assert!(!String::from_utf8_lossy(&out.stdout).contains("[DONE]"));

    // A refused POST is final, with the server's sentence.
    let out = tidings(&[
        "tail",
        &url,
        "--method",
        "POST",
        "--data",
        "{}",
        "--max-reconnects",
        "1",
    ])
    .output()
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("stream") && stderr.contains("400"),
        "{stderr}"
    );
    // A header without a colon is named, its value never printed.
    let out = tidings(&["tail", &url, "--header", "Bearer-sk-zzz"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("must be `Name: value`") && !stderr.contains("sk-zzz"),
        "{stderr}"
    );
}

#[tokio::test]
async fn an_answer_whose_instance_died_is_ended_by_another_with_what_arrived() {
    let dir = tempfile::tempdir().unwrap();
    let database = fresh_database(dir.path()).await;
    let a = TestServer::start_on(&database, |_| {}).await;
    let ada = a.user("ai_ghost").await;
    // A chat claimed by an instance that died: its lease ran out, three tokens were stored.
    let store = &a.state.store;
    let owner = store.user_by_name("ai_ghost").await.unwrap().unwrap().id;
    let ghost = store
        .create_chat(owner, "Who was here?", "a-dead-instance", 1, 1, None)
        .await
        .unwrap()
        .unwrap();
    let texts: Vec<String> = ["One", " two", " three"].map(String::from).to_vec();
    store
        .store_assistant_batch(
            &[tidings::assistant::store::Chunk {
                chat_id: ghost.id,
                first_id: 1,
                texts,
            }],
            &[],
        )
        .await
        .unwrap();
    // Another instance's sweep (at its start when it is alone on the database, else every few
    // seconds) ends it with `error`, keeping the three tokens.
    let b = TestServer::start_on(&database, |_| {}).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let stored = loop {
        let v = chat(&b, &ada, ghost.id).await;
        if v["status"] != "running" {
            break v;
        }
        assert!(Instant::now() < deadline, "still running: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(stored["status"], "failed");
    assert_eq!(stored["text"], "One two three");
    let (text, end) = read_to_end(stream(&b, &ada, ghost.id, None).await, 0).await;
    assert_eq!(text, "One two three");
    assert_eq!(end.event, "error");
    assert_eq!(end.id, "4");
    assert!(end.data["message"]
        .as_str()
        .unwrap()
        .contains("what arrived is kept"));
}

#[tokio::test]
async fn ctrl_c_in_tidings_ask_stops_the_answer_on_the_server() {
    use tokio::io::AsyncReadExt;
    let server = TestServer::start_with(|s| s.assistant.tokens_per_sec = 10).await;
    let ada = server.user("ai_ctrl_c").await;
    let mut child = tidings(&[
        "ask",
        "Slowly, please",
        "--server",
        &server.base,
        "--username",
        "ai_ctrl_c",
    ])
    .env("TIDINGS_PASSWORD", common::PASSWORD)
    .spawn()
    .unwrap();
    // Once the first tokens are on the terminal, Ctrl-C.
    let mut stdout = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&seen).contains("asked:") {
        let n = stdout.read(&mut buf).await.unwrap();
        assert!(n > 0, "the answer stopped before its first tokens");
        seen.extend_from_slice(&buf[..n]);
    }
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .expect("tidings ask ends after Ctrl-C")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("finish: cancelled"), "{stderr}");
    // The server ended the answer as cancelled, long before its 100 tokens.
    let list: Value = common::get_json(&ada.http, &server.url("/api/assistant/chats")).await;
    let chat = &list["chats"][0];
    assert_eq!(chat["status"], "cancelled", "{list}");
    assert!(chat["tokens"].as_i64().unwrap() < 100, "{list}");
}
