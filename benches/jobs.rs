//! Job events over SSE under load, in three phases (`BENCH_PHASES`, default all three):
//!
//! - `start`: with every worker idle, `BENCH_SAMPLES` one-step jobs one after another. For
//!   each: from sending `POST /api/jobs` to the first event in hand (the client's view, which
//!   includes the POST's round trip and opening the stream), and from the job's `createdAt` to
//!   its first event's `at` (the server's view: queue to first event, millisecond stamps).
//! - `cold`: N demo jobs of S steps with no step delay, all queued at once onto idle workers
//!   and each watched over its own SSE stream, as a user would: events/s from the first POST
//!   sent to the last event's arrival. Start-up delay counts here.
//! - `live`: the same, but every worker is first held by a one-step "gate" job; the measured
//!   jobs are queued and watched meanwhile and start when the gates end, so delivery is
//!   measured live rather than replayed. Events/s from the first event's making to the last
//!   one's arrival; latency from the event's `at` (stamped when the worker made it) to its
//!   arrival.
//!
//! Every phase checks that every event arrived exactly once and in order (ids 1..=S+2, the
//! last one `complete`). Prints the server's peak RSS at the end.
//!
//! Run by `scripts/bench-jobs.sh`, which starts the release server with
//! `TIDINGS_JOB_WORKERS=N` and passes `BENCH_URL` (where jobs are watched), `BENCH_QUEUE_URL`
//! (where they are queued, if elsewhere) and `BENCH_SERVER_PID`.

use std::time::Duration;

use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde_json::{json, Value};

mod common;
use common::{env, percentile as pct, sign_in, status_mb};

async fn create(client: &reqwest::Client, base: &str, steps: i64, step_ms: i64) -> i64 {
    let res = client
        .post(format!("{base}/api/jobs"))
        .json(&json!({"kind": "demo", "steps": steps, "stepMs": step_ms}))
        .send()
        .await
        .expect("create");
    assert_eq!(res.status(), 201, "creating a job");
    res.json::<Value>().await.unwrap()["id"].as_i64().unwrap()
}

/// What one watcher saw, in arrival order: (event id, made at, arrived at), times in µs
/// since the epoch. The stream ends after the job's terminal event.
async fn watch(client: reqwest::Client, base: String, id: i64) -> Vec<(i64, i64, i64)> {
    let res = client
        .get(format!("{base}/api/jobs/{id}/events"))
        .send()
        .await
        .expect("watch");
    assert_eq!(res.status(), 200);
    let mut events = res.bytes_stream().eventsource();
    let mut seen = Vec::new();
    while let Some(e) = events.next().await {
        let e = e.expect("a well-formed event");
        let now = chrono::Utc::now().timestamp_micros();
        let data: Value = serde_json::from_str(&e.data).unwrap();
        let at = chrono::DateTime::parse_from_rfc3339(data["at"].as_str().unwrap())
            .unwrap()
            .timestamp_micros();
        seen.push((e.id.parse().unwrap(), at, now));
    }
    seen
}

/// Checks one job's events: ids 1..=per_job, each once, in order.
fn check(seen: &[(i64, i64, i64)], per_job: usize) {
    let ids: Vec<i64> = seen.iter().map(|s| s.0).collect();
    assert_eq!(
        ids,
        (1..=per_job as i64).collect::<Vec<_>>(),
        "every event once, in order"
    );
}

fn micros_of(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .unwrap()
        .timestamp_micros()
}

/// `start`: queue-to-first-event with idle workers, one job at a time.
async fn start_phase(client: &reqwest::Client, base: &str, queue: &str, samples: usize) {
    let (mut client_ms, mut server_ms) = (Vec::new(), Vec::new());
    for _ in 0..samples {
        let sent = chrono::Utc::now().timestamp_micros();
        let id = create(client, queue, 1, 0).await;
        let seen = watch(client.clone(), base.to_string(), id).await;
        client_ms.push((seen[0].2 - sent) as f64 / 1000.0);
        check(&seen, 3);
        let status: Value = client
            .get(format!("{base}/api/jobs/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let created = micros_of(status["createdAt"].as_str().unwrap());
        server_ms.push((seen[0].1 - created) as f64 / 1000.0);
    }
    client_ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    server_ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!("start: {samples} one-step jobs queued one at a time onto idle workers");
    println!(
        "  POST sent -> first event received   p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
        pct(&client_ms, 0.5),
        pct(&client_ms, 0.99),
        client_ms.last().unwrap()
    );
    println!(
        "  createdAt -> first event's at       p50 {:.0} ms  p99 {:.0} ms  max {:.0} ms (ms stamps)",
        pct(&server_ms, 0.5),
        pct(&server_ms, 0.99),
        server_ms.last().unwrap()
    );
}

/// `cold` and `live`: `jobs` jobs of `steps` steps, all watched; `gates` holds the workers
/// first (live) or not (cold).
async fn load_phase(
    client: &reqwest::Client,
    (base, queue): (&str, &str),
    jobs: usize,
    steps: i64,
    gates: usize,
) {
    let gate_ms = 1500 + 10 * jobs as i64;
    for _ in 0..gates {
        create(client, queue, 1, gate_ms).await;
    }
    let began = chrono::Utc::now().timestamp_micros();
    let watchers: Vec<_> = (0..jobs)
        .map(|_| {
            let (client, base, queue) = (client.clone(), base.to_string(), queue.to_string());
            tokio::spawn(async move {
                let id = create(&client, &queue, steps, 0).await;
                watch(client, base, id).await
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let (mut first_made, mut last_arrived) = (i64::MAX, i64::MIN);
    let mut events = 0usize;
    let per_job = steps as usize + 2;
    for w in watchers {
        let seen = tokio::time::timeout(Duration::from_secs(120), w)
            .await
            .expect("the jobs finish")
            .unwrap();
        check(&seen, per_job);
        events += seen.len();
        for &(_, at, arrived) in &seen {
            // `at` has millisecond precision: latency is good to about a millisecond.
            latencies.push((arrived - at) as f64 / 1000.0);
            first_made = first_made.min(at);
            last_arrived = last_arrived.max(arrived);
        }
    }
    latencies.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let (name, from, what) = if gates > 0 {
        ("live", first_made, "the first event's making")
    } else {
        ("cold", began, "the first POST")
    };
    let window = ((last_arrived - from) as f64 / 1e6).max(1e-3);
    println!(
        "{name}: {jobs} jobs x {steps} steps, {events} events delivered, each exactly once and in order"
    );
    println!(
        "  events/s {:.0} (in {:.3} s from {what})   latency p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
        events as f64 / window,
        window,
        pct(&latencies, 0.50),
        pct(&latencies, 0.99),
        latencies.last().unwrap()
    );
}

#[tokio::main]
async fn main() {
    let base = env("BENCH_URL", "http://127.0.0.1:3000");
    // Where jobs are queued (default: where they are watched). `scripts/bench-jobs.sh` with
    // `BENCH_DB=postgres` queues them on a second instance that runs none, so every start
    // goes through PostgreSQL's NOTIFY.
    let queue = env("BENCH_QUEUE_URL", &base);
    let jobs: usize = env("BENCH_JOBS", "200").parse().unwrap();
    let steps: i64 = env("BENCH_STEPS", "20").parse().unwrap();
    let gates: usize = env("BENCH_GATES", &jobs.to_string()).parse().unwrap();
    let samples: usize = env("BENCH_SAMPLES", "200").parse().unwrap();
    let phases = env("BENCH_PHASES", "start,cold,live");
    let pid = env("BENCH_SERVER_PID", "");

    let client = reqwest::Client::builder()
        .cookie_store(true)
        .pool_max_idle_per_host(jobs + 16)
        .build()
        .unwrap();
    sign_in(&client, &base, "bench_jobs").await;

    for phase in phases.split(',') {
        match phase.trim() {
            "start" => start_phase(&client, &base, &queue, samples).await,
            "cold" => load_phase(&client, (&base, &queue), jobs, steps, 0).await,
            "live" => load_phase(&client, (&base, &queue), jobs, steps, gates.max(1)).await,
            other => panic!("unknown phase {other:?} (start, cold, live)"),
        }
    }
    if let Some(mb) = status_mb(&pid, "VmHWM") {
        println!("server peak RSS {mb:.1} MB");
    }
}
