//! Logins while a burst of signups arrives: does a flood of new accounts, each an
//! Argon2 hash, hold up the people who already have one?
//!
//! 1. Signs up `BENCH_USERS` accounts (default 8), then measures their logins alone: the
//!    baseline.
//! 2. Sends `BENCH_SIGNUPS` signups (default 200) at once, each from its own address (the
//!    server trusts this client as a proxy, so `X-Forwarded-For` tells them apart). Each is a
//!    client that, told 503 busy, waits its `Retry-After` and tries again, until its account
//!    exists. Meanwhile the same users keep logging in, four at a time, until the last signup
//!    is answered. Prints login p50/p99 during the burst next to the baseline, and what the
//!    signups got.
//!
//! Run by `scripts/bench-signup.sh` against the release server (`BENCH_URL`). Target: login
//! p99 under 1 s during the burst.

use std::time::{Duration, Instant};

use serde_json::json;

const PASSWORD: &str = "correct horse battery";

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

async fn login(client: &reqwest::Client, base: &str, user: &str) -> Duration {
    let started = Instant::now();
    let res = client
        .post(format!("{base}/api/auth/login"))
        .header("x-forwarded-for", "192.0.2.1")
        .json(&json!({"username": user, "password": PASSWORD}))
        .send()
        .await
        .expect("the server answers");
    assert_eq!(res.status(), 200, "login of {user}");
    started.elapsed()
}

#[tokio::main]
async fn main() {
    let base = std::env::var("BENCH_URL").expect("BENCH_URL");
    let users = env("BENCH_USERS", 8);
    let signups = env("BENCH_SIGNUPS", 200);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .pool_max_idle_per_host(512)
        .build()
        .unwrap();

    let names: Vec<String> = (0..users).map(|i| format!("member{i}")).collect();
    for (i, name) in names.iter().enumerate() {
        let res = client
            .post(format!("{base}/api/auth/signup"))
            .header("x-forwarded-for", format!("192.0.2.{}", 100 + i))
            .json(&json!({"username": name, "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201, "signup of {name}");
    }

    // Baseline: logins alone, four at a time.
    let mut alone = Vec::new();
    for round in 0..10 {
        let batch = futures::future::join_all(
            (0..4).map(|k| login(&client, &base, &names[(round * 4 + k) % users])),
        )
        .await;
        alone.extend(batch);
    }
    alone.sort();

    // The burst: every signup at once, from its own address, while logins go on. Each
    // signup is a client that honours `Retry-After` on a 503 and tries again until it gets an
    // answer that is not "busy", so the burst lasts until every account exists (or is refused).
    let started = Instant::now();
    let burst = futures::future::join_all((0..signups).map(|i| {
        let client = client.clone();
        let base = base.clone();
        async move {
            let mut busy = 0u32;
            let mut retry_after_missing = 0u32;
            loop {
                let res = client
                    .post(format!("{base}/api/auth/signup"))
                    .header(
                        "x-forwarded-for",
                        format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256),
                    )
                    .json(&json!({"username": format!("new{i}"), "password": PASSWORD}))
                    .send()
                    .await
                    .expect("the server answers");
                let status = res.status().as_u16();
                if status != 503 {
                    return (status, busy, retry_after_missing, started.elapsed());
                }
                busy += 1;
                let wait = res
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
                if wait.is_none() {
                    retry_after_missing += 1;
                }
                // Spread the retries over the second, as real clients' clocks would be.
                let jitter = Duration::from_millis((i as u64 * 37) % 500);
                tokio::time::sleep(Duration::from_secs(wait.unwrap_or(1)) + jitter).await;
            }
        }
    }));
    let done = std::sync::atomic::AtomicBool::new(false);
    let logins = async {
        let mut during = Vec::new();
        let mut round = 0;
        while !done.load(std::sync::atomic::Ordering::Relaxed) || during.len() < 40 {
            let batch = futures::future::join_all(
                (0..4).map(|k| login(&client, &base, &names[(round * 4 + k) % users])),
            )
            .await;
            during.extend(batch);
            round += 1;
        }
        during
    };
    let signed = async {
        let r = burst.await;
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        r
    };
    let (answers, mut during) = tokio::join!(signed, logins);
    during.sort();

    let count = |code: u16| answers.iter().filter(|(c, ..)| *c == code).count();
    let busy: u32 = answers.iter().map(|(_, b, ..)| *b).sum();
    let missing: u32 = answers.iter().map(|(_, _, m, _)| *m).sum();
    let last_answer = answers.iter().map(|(.., t)| *t).max().unwrap_or_default();
    let other = answers
        .iter()
        .filter(|(c, ..)| ![201, 429].contains(c))
        .count();
    println!("signup burst: {signups} signups at once from distinct addresses (each retrying after Retry-After on 503), {users} users logging in 4 at a time");
    println!(
        "  logins alone:        n={:>4}  p50 {:>7}  p99 {:>7}",
        alone.len(),
        ms(percentile(&alone, 0.5)),
        ms(percentile(&alone, 0.99))
    );
    println!(
        "  logins during burst: n={:>4}  p50 {:>7}  p99 {:>7}   (target: p99 under 1 s)",
        during.len(),
        ms(percentile(&during, 0.5)),
        ms(percentile(&during, 0.99))
    );
    println!(
        "  signups: {} created, {} over the hourly limit (429), {} other; {} busy answers (503) on the way, {} without Retry-After; the last created after {}",
        count(201),
        count(429),
        other,
        busy,
        missing,
        ms(last_answer)
    );
    assert_eq!(other, 0, "every signup ends in 201 or 429");
    assert_eq!(missing, 0, "every 503 says when to retry");
}
