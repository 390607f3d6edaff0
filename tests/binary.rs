//! The real `tidings` binary: it serves, stops cleanly on SIGTERM, and refuses a bad
//! configuration at start with a message that names the problem.

mod common;

use std::{process::Command, time::Duration};

use common::{binary as tidings, wait_for_listening};

#[tokio::test]
async fn serves_then_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/data/t.db?mode=rwc", dir.path().display());
    let mut child = tidings(&[("DATABASE_URL", &url)]).spawn().unwrap();
    let base = wait_for_listening(&mut child);

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let health = client.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.text().await.unwrap(), "ok");
    assert!(
        dir.path().join("data/t.db").exists(),
        "the database file and its folder were created"
    );

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "a clean exit after SIGTERM, got {status}");
}

#[test]
fn a_bad_database_url_fails_fast_with_a_clear_message() {
    let out = tidings(&[("DATABASE_URL", "mysql://localhost/x")])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("DATABASE_URL must start with sqlite:// or postgres://"),
        "{stderr}"
    );
}

#[test]
fn an_unreachable_postgres_fails_at_start_with_a_clear_message() {
    // Port 1 on loopback: nothing listens there, so the connection is refused at once.
    let out = tidings(&[(
        "DATABASE_URL",
        "postgres://tidings:secret@127.0.0.1:1/tidings",
    )])
    .output()
    .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot open the database at postgres://"),
        "{stderr}"
    );
    assert!(
        stderr.contains("refused"),
        "the reason, not a pool timeout: {stderr}"
    );
    assert!(
        !stderr.contains("secret"),
        "the password is not shown: {stderr}"
    );
}

#[test]
fn a_bad_setting_names_its_variable() {
    let out = tidings(&[("TIDINGS_STREAM_TOKEN_TTL", "soon")])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("TIDINGS_STREAM_TOKEN_TTL"), "{stderr}");
}

#[tokio::test]
async fn seed_adds_exactly_the_rows_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/seed.db?mode=rwc", dir.path().display());
    let out = tidings(&[("DATABASE_URL", &url)])
        .args(["seed", "--audit-rows", "12345"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("seeded 12345 audit rows"));
    let store = tidings::server::storage::Store::connect(&url)
        .await
        .unwrap();
    assert_eq!(store.audit_count().await.unwrap(), 12345);

    let bad = tidings(&[("DATABASE_URL", &url)])
        .args(["seed", "--audit-rows", "many"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--audit-rows"));
}

#[test]
fn help_lists_the_commands() {
    let out = tidings(&[]).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("serve") && help.contains("seed"), "{help}");
}
