//! What the load generators share: settings from the environment, the server's memory and
//! CPU from `/proc`, percentiles, signing in, and a server's WebSocket URL. Each bench
//! includes it with `mod common;` (a folder, so cargo does not take it for a bench of its
//! own) and uses what it needs.

#![allow(dead_code)]

use serde_json::json;

/// `name` from the environment, or `default`.
pub fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// Field `key` (`VmRSS`, `VmHWM`, …) of `/proc/<pid>/status`, in kB.
pub fn status_kb(pid: &str, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| {
        l.strip_prefix(key)?
            .strip_prefix(':')?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

/// Field `key` of `/proc/<pid>/status` in MB.
pub fn status_mb(pid: &str, key: &str) -> Option<f64> {
    status_kb(pid, key).map(|kb| kb as f64 / 1024.0)
}

/// CPU seconds (user + system) process `pid` has used (`self`: this one).
pub fn cpu_secs(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may hold spaces): state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0) // USER_HZ is 100 on Linux
}

/// The `p` quantile (0 to 1) of `sorted`, which must not be empty.
pub fn percentile<T: Copy>(sorted: &[T], p: f64) -> T {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

/// Signs `username` up (or, when it exists, just in) on `client`, whose cookie store then
/// holds the session. Panics if the login is refused.
pub async fn sign_in(client: &reqwest::Client, base: &str, username: &str) {
    let creds = json!({"username": username, "password": "bench-password"});
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
        .expect("login");
    assert_eq!(res.status(), 200, "login as {username}");
}

/// The WebSocket URL (`/ws`) of the server at `base` (`http://…` → `ws://…`, `https://` →
/// `wss://`).
pub fn ws_url(base: &str) -> String {
    let origin = if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else {
        base.to_string()
    };
    format!("{}/ws", origin.trim_end_matches('/'))
}
