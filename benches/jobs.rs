//! Job events over SSE under load: N demo jobs of S steps with no step delay, each
//! watched over its own SSE stream, run to completion. Prints events/s delivered, the event
//! latency (from the event's `at`, stamped when the worker made it, to its arrival) and the
//! server's peak RSS; checks that every event arrived exactly once and in order.
//!
//! Run by `scripts/bench-jobs.sh`, which starts the release server with
//! `TIDINGS_JOB_WORKERS=N` and passes `BENCH_URL` and `BENCH_SERVER_PID`. To measure live
//! delivery rather than replay, every worker is first held by a one-step "gate" job; the
//! measured jobs are queued and watched meanwhile, and start when the gates end.

use std::time::Duration;

use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde_json::{json, Value};

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

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
/// since the epoch.
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

fn peak_rss_mb(pid: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

#[tokio::main]
async fn main() {
    let base = env("BENCH_URL", "http://127.0.0.1:3000");
    let jobs: usize = env("BENCH_JOBS", "200").parse().unwrap();
    let steps: i64 = env("BENCH_STEPS", "20").parse().unwrap();
    let gates: usize = env("BENCH_GATES", &jobs.to_string()).parse().unwrap();
    let pid = env("BENCH_SERVER_PID", "");

    let client = reqwest::Client::builder()
        .cookie_store(true)
        .pool_max_idle_per_host(jobs + 16)
        .build()
        .unwrap();
    let creds = json!({"username": "bench_jobs", "password": "bench-password"});
    let _ = client
        .post(format!("{base}/api/auth/signup"))
        .json(&creds)
        .send()
        .await;
    let res = client
        .post(format!("{base}/api/auth/login"))
        .json(&creds)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "login");

    // Hold every worker, queue and watch the measured jobs, then let them go.
    let gate_ms = 1500 + 10 * jobs as i64;
    for _ in 0..gates {
        create(&client, &base, 1, gate_ms).await;
    }
    let mut ids = Vec::with_capacity(jobs);
    for _ in 0..jobs {
        ids.push(create(&client, &base, steps, 0).await);
    }
    let watchers: Vec<_> = ids
        .iter()
        .map(|&id| tokio::spawn(watch(client.clone(), base.clone(), id)))
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
        let ids: Vec<i64> = seen.iter().map(|s| s.0).collect();
        assert_eq!(
            ids,
            (1..=per_job as i64).collect::<Vec<_>>(),
            "every event once, in order"
        );
        events += seen.len();
        for &(_, at, arrived) in &seen {
            // `at` has millisecond precision: latency is good to about a millisecond.
            latencies.push((arrived - at) as f64 / 1000.0);
            first_made = first_made.min(at);
            last_arrived = last_arrived.max(arrived);
        }
    }
    latencies.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    // The window: from the first measured event's making to the last one's arrival.
    let window = ((last_arrived - first_made) as f64 / 1e6).max(1e-3);
    println!(
        "jobs {jobs} x {steps} steps, {events} events delivered, each exactly once and in order"
    );
    println!(
        "  events/s {:.0} (in {:.3} s)   latency p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
        events as f64 / window,
        window,
        pct(0.50),
        pct(0.99),
        latencies.last().unwrap()
    );
    if let Some(mb) = peak_rss_mb(&pid) {
        println!("  server peak RSS {mb:.1} MB");
    }
}
