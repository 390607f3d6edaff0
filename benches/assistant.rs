//! AI token streams through the relay (issue 19): N concurrent generations at R tokens/s each,
//! every one read by its own SSE stream, as a browser would.
//!
//! This process is both ends. It serves an OpenAI-format provider on 127.0.0.1:0 (one chunk per
//! token, paced at R per second, like the built-in model, but each token's text carries the
//! microsecond it was emitted at), and it reads the answers as the browser does
//! (`GET /api/assistant/chats/{id}/events`). So the added latency of a token is exactly
//! "provider emits it → reader receives it", on one clock.
//!
//! Two phases, side by side in one run:
//! 1. **reference**: the same N streams read straight from the provider by this process's own
//!    upstream client: what reading the provider costs without Tidings in between;
//! 2. **relay**: N chats created on the Tidings server given as `BENCH_URL` (whose
//!    `TIDINGS_AI_BASE_URL` is this provider, see `scripts/bench-assistant.sh`), each read over
//!    its own SSE stream; the server stores every token as it relays it.
//!
//! Every token is checked: ids 1..=T in order with no gap or repeat, the text each carried, and
//! the `done` event's counts. Prints tokens/s, latency p50/p99/max for both phases, and the
//! server's RSS (peak, and at the end).
//!
//! Every stream waits, before its first token, until all N are open, so the figures are of N
//! streams running at once, not of a ramp.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use axum::{
    body::Body,
    extract::State,
    http::header,
    response::{IntoResponse, Response},
    routing::post,
    Router,
};
use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::sync::watch;

mod common;
use common::{cpu_secs, env, percentile, sign_in, status_mb};

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// The provider: how many requests came, and the gate every stream waits at.
#[derive(Clone)]
struct Provider {
    tokens: usize,
    pace: Duration,
    arrived: Arc<AtomicUsize>,
    go: watch::Receiver<bool>,
}

fn chunk(delta: Value, finish: Option<&str>) -> String {
    format!(
        "data: {}\n\n",
        json!({"id": "bench", "object": "chat.completion.chunk", "model": "bench",
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    )
}

/// `POST /v1/chat/completions`: T tokens `"{seq}@{emitted µs} "` at the pace, then the finish
/// chunk, usage and `[DONE]`.
async fn completions(State(p): State<Provider>) -> Response {
    p.arrived.fetch_add(1, Ordering::SeqCst);
    let mut go = p.go.clone();
    let stream = async_stream(p.tokens, p.pace, async move {
        let _ = go.wait_for(|g| *g).await;
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(stream.map(Ok::<_, std::convert::Infallible>)),
    )
        .into_response()
}

/// The provider's stream of SSE blocks, starting once `start` resolves.
fn async_stream(
    tokens: usize,
    pace: Duration,
    start: impl std::future::Future<Output = ()> + Send + 'static,
) -> impl futures::Stream<Item = String> + Send {
    futures::stream::once(start).flat_map(move |()| {
        let mut ticks = tokio::time::interval(pace);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let first = futures::stream::iter([chunk(json!({"role": "assistant"}), None)]);
        let body = futures::stream::unfold((ticks, 1usize), move |(mut ticks, seq)| async move {
            if seq > tokens {
                return None;
            }
            ticks.tick().await;
            let text = format!("{seq}@{} ", now_us());
            Some((chunk(json!({"content": text}), None), (ticks, seq + 1)))
        });
        let end = futures::stream::iter([
            chunk(json!({}), Some("stop")),
            format!(
                "data: {}\n\n",
                json!({"id": "bench", "object": "chat.completion.chunk", "choices": [],
                       "usage": {"prompt_tokens": 3, "completion_tokens": tokens,
                                 "total_tokens": tokens + 3}})
            ),
            "data: [DONE]\n\n".to_string(),
        ]);
        first.chain(body).chain(end)
    })
}

/// A token's text → (its sequence number, emitted µs).
fn stamp(text: &str) -> (usize, i64) {
    let (seq, at) = text.trim_end().split_once('@').expect("a stamped token");
    (seq.parse().unwrap(), at.parse().unwrap())
}

/// What one reader saw: latencies in µs, and when its first and last tokens arrived.
struct Seen {
    latencies: Vec<i64>,
    first_emit: i64,
    last_arrival: i64,
}

impl Seen {
    fn new(tokens: usize) -> Self {
        Self {
            latencies: Vec::with_capacity(tokens),
            first_emit: i64::MAX,
            last_arrival: i64::MIN,
        }
    }

    fn token(&mut self, expected: usize, text: &str) {
        let arrived = now_us();
        let (seq, at) = stamp(text);
        assert_eq!(seq, expected, "tokens in order, none missing or repeated");
        self.latencies.push(arrived - at);
        self.first_emit = self.first_emit.min(at);
        self.last_arrival = self.last_arrival.max(arrived);
    }
}

/// Reads one answer straight from the provider with the library's upstream client.
async fn read_direct(client: reqwest::Client, base: String, tokens: usize) -> Seen {
    use tidings::{
        protocol::ai::{Format, Piece},
        upstream::{open, Upstream},
    };
    let up = Upstream::chat(&base, Format::OpenAi, "bench", None, 4096, "bench");
    let mut pieces = open(&client, &up).await.expect("the provider answers");
    let mut seen = Seen::new(tokens);
    let mut n = 0;
    while let Some(piece) = pieces.next().await {
        match piece.expect("a whole stream") {
            Piece::Text(text) => {
                n += 1;
                seen.token(n, &text);
            }
            Piece::Done => break,
            _ => {}
        }
    }
    assert_eq!(n, tokens, "every token read straight from the provider");
    seen
}

/// Reads chat `id` over its SSE stream, as a browser does.
async fn read_relayed(
    client: reqwest::Client,
    base: String,
    id: i64,
    tokens: usize,
    opened: Arc<AtomicUsize>,
) -> Seen {
    let res = client
        .get(format!("{base}/api/assistant/chats/{id}/events"))
        .send()
        .await
        .expect("the stream opens");
    assert_eq!(res.status(), 200, "chat {id}'s stream");
    opened.fetch_add(1, Ordering::SeqCst);
    let mut events = res.bytes_stream().eventsource();
    let mut seen = Seen::new(tokens);
    let mut n = 0;
    while let Some(event) = events.next().await {
        let event = event.expect("a well-formed event");
        match event.event.as_str() {
            "token" => {
                n += 1;
                assert_eq!(event.id, n.to_string(), "ids 1, 2, 3…");
                let data: Value = serde_json::from_str(&event.data).unwrap();
                seen.token(n, data["text"].as_str().unwrap());
            }
            "done" => {
                let data: Value = serde_json::from_str(&event.data).unwrap();
                assert_eq!(data["finishReason"], "stop");
                assert_eq!(data["usage"]["completionTokens"], tokens);
                break;
            }
            "error" => panic!("chat {id} ended in error: {}", event.data),
            _ => {}
        }
    }
    assert_eq!(n, tokens, "every token of chat {id} delivered");
    seen
}

fn report(name: &str, seen: Vec<Seen>) {
    let mut lat: Vec<i64> = seen
        .iter()
        .flat_map(|s| s.latencies.iter().copied())
        .collect();
    lat.sort_unstable();
    let first = seen.iter().map(|s| s.first_emit).min().unwrap();
    let last = seen.iter().map(|s| s.last_arrival).max().unwrap();
    let secs = ((last - first) as f64 / 1e6).max(1e-3);
    let pct = |p: f64| percentile(&lat, p) as f64 / 1000.0;
    println!(
        "  {name:<9} {} tokens in {secs:.2} s = {:.0} tokens/s   added latency p50 {:.1} ms  \
         p99 {:.1} ms  max {:.1} ms",
        lat.len(),
        lat.len() as f64 / secs,
        pct(0.50),
        pct(0.99),
        *lat.last().unwrap() as f64 / 1000.0
    );
}

/// Opens the gate once `n` requests reached the provider and `n` readers are listening.
async fn when_all_arrived(
    arrived: &AtomicUsize,
    listening: &AtomicUsize,
    n: usize,
    go: &watch::Sender<bool>,
) {
    while arrived.load(Ordering::SeqCst) < n || listening.load(Ordering::SeqCst) < n {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    go.send_replace(true);
}

#[tokio::main]
async fn main() {
    let n: usize = env("BENCH_CHATS", "1000").parse().unwrap();
    let rate: f64 = env("BENCH_TOKENS_PER_SEC", "50").parse().unwrap();
    let tokens: usize = env("BENCH_TOKENS", "250").parse().unwrap();
    let server = env("BENCH_URL", "");
    let pid = env("BENCH_SERVER_PID", "");
    let provider_addr = env("BENCH_PROVIDER_ADDR", "127.0.0.1:0");

    let (go_tx, go_rx) = watch::channel(false);
    let provider = Provider {
        tokens,
        pace: Duration::from_secs_f64(1.0 / rate),
        arrived: Arc::new(AtomicUsize::new(0)),
        go: go_rx,
    };
    let listener = tokio::net::TcpListener::bind(&provider_addr).await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/v1/chat/completions", post(completions))
        .with_state(provider.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let provider_base = format!("http://{addr}/v1");
    println!(
        "assistant relay: {n} concurrent answers x {tokens} tokens at {rate} tokens/s each \
         ({:.0} tokens/s offered)",
        n as f64 * rate
    );

    let client = reqwest::Client::builder()
        .cookie_store(true)
        .pool_max_idle_per_host(n + 16)
        .build()
        .unwrap();

    // 1. The reference: straight from the provider.
    let readers: Vec<_> = (0..n)
        .map(|_| tokio::spawn(read_direct(client.clone(), provider_base.clone(), tokens)))
        .collect();
    when_all_arrived(&provider.arrived, &provider.arrived, n, &go_tx).await;
    let mut seen = Vec::new();
    for r in readers {
        seen.push(r.await.expect("a reader"));
    }
    report("reference", seen);

    if server.is_empty() {
        println!("  (no BENCH_URL: the relay phase is skipped)");
        return;
    }
    // 2. Through Tidings. The provider's gate closes again and its count restarts.
    go_tx.send_replace(false);
    provider.arrived.store(0, Ordering::SeqCst);
    sign_in(&client, &server, "bench_ai").await;
    let mut readers = Vec::with_capacity(n);
    let opened = Arc::new(AtomicUsize::new(0));
    for i in 0..n {
        let res = client
            .post(format!("{server}/api/assistant/chats"))
            .json(&json!({"prompt": format!("bench question {i}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201, "chat {i}: {}", res.text().await.unwrap());
        let id = res.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
        readers.push(tokio::spawn(read_relayed(
            client.clone(),
            server.clone(),
            id,
            tokens,
            opened.clone(),
        )));
    }
    when_all_arrived(&provider.arrived, &opened, n, &go_tx).await;
    let cpu_before = cpu_secs(&pid);
    let started = std::time::Instant::now();
    let mut seen = Vec::new();
    for r in readers {
        seen.push(
            tokio::time::timeout(Duration::from_secs(300), r)
                .await
                .expect("every answer ends")
                .expect("a reader"),
        );
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu = cpu_secs(&pid)
        .zip(cpu_before)
        .map(|(after, before)| after - before);
    report("relay", seen);
    if let Some(cpu) = cpu {
        println!(
            "  server CPU {cpu:.2} s in {wall:.2} s ({:.2} cores; {:.1} µs a token)",
            cpu / wall,
            cpu * 1e6 / (n * tokens) as f64
        );
    }
    println!(
        "  every token delivered once, in order ({} answers checked)",
        n
    );
    if let (Some(peak), Some(now)) = (status_mb(&pid, "VmHWM"), status_mb(&pid, "VmRSS")) {
        println!("  server RSS peak {peak:.1} MB, at the end {now:.1} MB");
    }
}
