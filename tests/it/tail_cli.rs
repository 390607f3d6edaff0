//! `tidings tail`, the real binary, on a job's event stream: it resumes with `Last-Event-ID`
//! after its connection is cut, stops on 204, keeps its place in a state file across
//! restarts, and does not retry a 4xx.

use crate::common;

use std::{process::Stdio, sync::atomic::Ordering};

use common::{cutting_proxy, post_json, TestServer, PASSWORD};
use serde_json::{json, Value};

fn tidings_tail(server: &str, args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_tidings"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TIDINGS_PASSWORD", PASSWORD)
        .args([
            "tail",
            "--server",
            server,
            "--retry-ms",
            "100",
            "--max-retries",
            "5",
        ])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// A server with `ann`, and a demo job of hers; returns the job's id.
async fn job(srv: &TestServer, steps: i64, step_ms: i64) -> i64 {
    let ann = srv.client();
    srv.signup(&ann, "ann").await;
    let res = post_json(
        &ann,
        &srv.url("/api/jobs"),
        json!({"kind": "demo", "steps": steps, "stepMs": step_ms}),
    )
    .await;
    assert_eq!(res.status(), 201);
    res.json::<Value>().await.unwrap()["id"].as_i64().unwrap()
}

/// The `id`s of `--json` output lines.
fn ids(stdout: &[u8]) -> Vec<i64> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("a JSON line");
            v["id"].as_str().unwrap().parse().unwrap()
        })
        .collect()
}

#[tokio::test]
async fn a_cut_stream_resumes_after_the_last_id_and_204_ends_it() {
    let srv = TestServer::start().await;
    let id = job(&srv, 30, 20).await;
    let (proxy, cut) = cutting_proxy(srv.base.clone(), 2_000).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("last-id");
    let path = format!("/api/jobs/{id}/events");
    let output = tidings_tail(
        &proxy,
        &[
            &path,
            "--username",
            "ann",
            "--json",
            "--state-file",
            state.to_str().unwrap(),
        ],
    )
    .output()
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(cut.load(Ordering::SeqCst), "the proxy cut the stream");
    assert!(stderr.contains("reconnecting"), "{stderr}");
    // The server's `retry: 3000` is honoured (with jitter: 1.5 to 3 s), not `--retry-ms 100`.
    let waits: Vec<f64> = stderr
        .lines()
        .filter_map(|l| l.split("reconnecting in ").nth(1))
        .map(|w| w.split(' ').next().unwrap().parse().unwrap())
        .collect();
    assert!(
        !waits.is_empty() && waits.iter().all(|w| *w >= 1.4),
        "{stderr}"
    );
    assert_eq!(ids(&output.stdout), (1..=32).collect::<Vec<_>>());
    assert_eq!(std::fs::read_to_string(&state).unwrap().trim(), "32");
}

#[tokio::test]
async fn a_restarted_consumer_continues_from_its_state_file() {
    let srv = TestServer::start().await;
    let id = job(&srv, 10, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("last-id");
    let path = format!("/api/jobs/{id}/events");
    let args = [
        path.as_str(),
        "--username",
        "ann",
        "--json",
        "--state-file",
        state.to_str().unwrap(),
    ];
    let first = tidings_tail(&srv.base, &[&args[..], &["--count", "5"]].concat())
        .output()
        .await
        .unwrap();
    assert!(first.status.success());
    assert_eq!(ids(&first.stdout), [1, 2, 3, 4, 5]);
    assert_eq!(std::fs::read_to_string(&state).unwrap().trim(), "5");
    let second = tidings_tail(&srv.base, &args).output().await.unwrap();
    assert!(second.status.success());
    assert_eq!(ids(&second.stdout), (6..=12).collect::<Vec<_>>());
    // Once the stream is over, a restarted consumer hears 204 and stops at once.
    let third = tidings_tail(&srv.base, &args).output().await.unwrap();
    assert!(third.status.success());
    assert!(third.stdout.is_empty());
}

#[tokio::test]
async fn a_4xx_is_final_and_said_clearly() {
    let srv = TestServer::start().await;
    let id = job(&srv, 3, 0).await;
    srv.signup(&srv.client(), "bob").await;
    let path = format!("/api/jobs/{id}/events");
    let output = tidings_tail(&srv.base, &[&path, "--username", "bob"])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains(&format!("There is no job {id}.")),
        "{stderr}"
    );
    assert!(stderr.contains("404"), "{stderr}");
    assert!(
        !stderr.contains("reconnecting"),
        "no retry on a 404: {stderr}"
    );
}
