//! The real `tidings` binary: it serves, stops cleanly on SIGTERM, and refuses a bad
//! configuration at start with a message that names the problem.

use crate::common;

use std::{process::Command, time::Duration};

use common::{binary as tidings, wait_for_listening, wait_for_listening_logged, PASSWORD};
use serde_json::{json, Value};

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

/// Ends the process when dropped (a failing test must not leave it running).
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_listed_admin_signs_up_with_the_token_the_log_printed() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/t.db?mode=rwc", dir.path().display());
    // No TIDINGS_SETUP_TOKEN, no TIDINGS_SECRET: the server makes both up.
    let mut child = tidings(&[
        ("DATABASE_URL", &url),
        ("TIDINGS_ADMINS", "eric"),
        ("TIDINGS_SETUP_TOKEN", ""),
        ("TIDINGS_SECRET", ""),
    ])
    .spawn()
    .unwrap();
    let (base, log) = wait_for_listening_logged(&mut child);
    let _running = Running(child);
    let line = log
        .iter()
        .find(|l| l.contains("admin setup"))
        .unwrap_or_else(|| panic!("the token is printed: {log:?}"));
    let token = line
        .split("setup token ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .expect("a token in the line")
        .to_string();
    assert!(token.len() >= 16, "{line}");

    let signup = |body: Value| {
        let base = base.clone();
        async move {
            http()
                .post(format!("{base}/api/auth/signup"))
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    let res = signup(json!({"username": "eric", "password": PASSWORD})).await;
    assert_eq!(res.status(), 403, "the first to come is not admin any more");
    let res = signup(json!({"username": "eric", "password": PASSWORD, "setupToken": token})).await;
    assert_eq!(res.status(), 201);
    assert_eq!(res.json::<Value>().await.unwrap()["user"]["role"], "admin");

    // The signing key went to a file beside the database, readable by its owner only.
    use std::os::unix::fs::PermissionsExt;
    let key = dir.path().join("t.key");
    let mode = std::fs::metadata(&key)
        .expect("a key file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test]
async fn users_add_creates_an_account_in_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/t.db?mode=rwc", dir.path().display());
    let add = |name: &str, password: &str, admin: bool| {
        let mut cmd = tidings(&[("DATABASE_URL", &url), ("TIDINGS_PASSWORD", password)]);
        cmd.args(["users", "add", name]);
        if admin {
            cmd.arg("--admin");
        }
        cmd.output().unwrap()
    };
    let out = add("root", PASSWORD, true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("created root, an admin"));
    for (name, password, why) in [
        ("root", PASSWORD, "taken"),
        ("Bad Name", PASSWORD, "Usernames"),
        ("short", "1234567", "at least 8"),
    ] {
        let out = add(name, password, false);
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(why), "{name}: {stderr}");
    }
    let mut no_password = tidings(&[("DATABASE_URL", &url)]);
    let out = no_password
        .args(["users", "add", "someone"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("TIDINGS_PASSWORD"));

    let mut child = tidings(&[("DATABASE_URL", &url)]).spawn().unwrap();
    let base = wait_for_listening(&mut child);
    let _running = Running(child);
    let res = http()
        .post(format!("{base}/api/auth/login"))
        .json(&json!({"username": "root", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.json::<Value>().await.unwrap()["user"]["role"],
        "admin",
        "not in TIDINGS_ADMINS, yet admin"
    );
}

#[test]
fn unsafe_settings_fail_the_start_naming_their_variable() {
    for (name, value, says) in [
        (
            "TIDINGS_SECRET",
            "short",
            "TIDINGS_SECRET must be at least 32 bytes",
        ),
        (
            "TIDINGS_ALLOWED_ORIGINS",
            "*",
            "TIDINGS_ALLOWED_ORIGINS entries must be origins",
        ),
        (
            "TIDINGS_ALLOWED_ORIGINS",
            "null",
            "TIDINGS_ALLOWED_ORIGINS entries must be origins",
        ),
        (
            "TIDINGS_ALLOWED_ORIGINS",
            "https://a.example/app",
            "TIDINGS_ALLOWED_ORIGINS entries must be origins",
        ),
        (
            "TIDINGS_PUBLIC_ORIGIN",
            "chat.example.com",
            "TIDINGS_PUBLIC_ORIGIN entries must be origins",
        ),
        (
            "TIDINGS_TRUSTED_PROXIES",
            "proxy",
            "TIDINGS_TRUSTED_PROXIES entries must be IP addresses",
        ),
        (
            "TIDINGS_MAX_CONNECTIONS",
            "0",
            "TIDINGS_MAX_CONNECTIONS must be a whole number",
        ),
    ] {
        let out = tidings(&[(name, value)]).output().unwrap();
        assert!(!out.status.success(), "{name}={value}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{name}={value}: {stderr}");
    }
}

#[test]
fn postgres_without_a_secret_refuses_to_start() {
    let out = tidings(&[
        ("DATABASE_URL", "postgres://tidings@127.0.0.1:1/tidings"),
        ("TIDINGS_SECRET", ""),
    ])
    .output()
    .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("TIDINGS_SECRET must be set on PostgreSQL"),
        "{stderr}"
    );
}
