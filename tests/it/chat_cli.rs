//! `tidings chat`, the real binary: it signs in, joins, prints what others send, sends what
//! is typed, and after its connection is severed reconnects by itself and resumes after the
//! last message it printed: the messages sent meanwhile appear once each, in order.
//!
//! Run: `cargo test --features ssr --test chat_cli`.

use crate::common;

use std::{process::Stdio, sync::Arc, time::Duration};

use common::{post_json, TestServer, PASSWORD};
use serde_json::{json, Value};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
    sync::Notify,
};

/// A loopback proxy to `upstream`; notifying the returned `Notify` severs every connection
/// open at that moment (later ones pass).
async fn severing_proxy(upstream: String) -> (String, Arc<Notify>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let sever = Arc::new(Notify::new());
    let signal = sever.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                return;
            };
            let upstream = upstream.trim_start_matches("http://").to_string();
            let signal = signal.clone();
            tokio::spawn(async move {
                let mut server = TcpStream::connect(upstream).await.unwrap();
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                    _ = signal.notified() => {}
                }
            });
        }
    });
    (addr, sever)
}

/// The next stdout line containing `needle`, within 10 s; the lines passed on the way are
/// kept in `seen`.
async fn line_with(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    needle: &str,
    seen: &mut Vec<String>,
) -> String {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let line = lines
                .next_line()
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("stdout ended before {needle:?}; saw {seen:?}"));
            seen.push(line.clone());
            if line.contains(needle) {
                return line;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no line with {needle:?} in time; saw {seen:?}"))
}

#[tokio::test]
async fn the_terminal_client_chats_and_resumes_after_its_connection_is_severed() {
    let srv = TestServer::start().await;
    let ann = srv.client();
    srv.signup(&ann, "ann").await;
    let bob = srv.client();
    srv.signup(&bob, "bob").await;
    let (proxy, sever) = severing_proxy(srv.base.clone()).await;

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tidings"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TIDINGS_PASSWORD", PASSWORD)
        .env("RUST_LOG", "warn")
        .args([
            "chat",
            "--server",
            &proxy,
            "--username",
            "ann",
            "--room",
            "terminal",
            "--retry-ms",
            "100",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    line_with(&mut lines, "joined #terminal", &mut seen).await;

    let post = |text: &'static str| {
        let bob = bob.clone();
        let url = srv.url("/api/rooms/terminal/messages");
        async move {
            let res = post_json(&bob, &url, json!({ "text": text })).await;
            assert_eq!(res.status(), 201);
        }
    };
    post("one \u{1b}[2J").await;
    let first = line_with(&mut lines, "bob: one", &mut seen).await;
    assert!(
        !first.contains('\u{1b}'),
        "control characters are not printed: {first:?}"
    );

    stdin.write_all(b"typed in a terminal\n").await.unwrap();
    line_with(&mut lines, "ann: typed in a terminal", &mut seen).await;

    // Sever the connection, send while the client is away, and watch it catch up.
    sever.notify_waiters();
    post("two").await;
    post("three").await;
    line_with(&mut lines, "bob: three", &mut seen).await;
    let printed: Vec<&String> = seen.iter().filter(|l| l.contains(": ")).collect();
    let texts: Vec<&str> = printed
        .iter()
        .filter_map(|l| l.split_once("] ").map(|(_, rest)| rest))
        .collect();
    assert_eq!(
        texts,
        vec![
            "bob: one \u{FFFD}[2J",
            "ann: typed in a terminal",
            "bob: two",
            "bob: three"
        ],
        "each message once, in order: {seen:?}"
    );
    let page: Value = common::get_json(&bob, &srv.url("/api/rooms/terminal/messages")).await;
    assert_eq!(page["messages"].as_array().unwrap().len(), 4);

    stdin.write_all(b"/quit\n").await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("the client quits")
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn a_wrong_password_is_refused_at_once() {
    let srv = TestServer::start().await;
    let ann = srv.client();
    srv.signup(&ann, "ann").await;
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_tidings"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TIDINGS_PASSWORD", "not the password")
        .args(["chat", "--server", &srv.base, "--username", "ann"])
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("Wrong username or password"), "{stderr}");
}

/// `tidings chat` with `args` as `username`; its output.
async fn chat_cli(srv: &TestServer, username: &str, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_tidings"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TIDINGS_PASSWORD", PASSWORD)
        .args(["chat", "--server", &srv.base, "--username", username])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_terminal_client_makes_a_private_room_adds_a_member_and_shows_unread_counts() {
    let srv = TestServer::start().await;
    let ann = srv.user("ann").await;
    srv.user("bob").await;
    let made = chat_cli(
        &srv,
        "ann",
        &["--room", "vault", "--private", "--add", "bob", "--rooms"],
    )
    .await;
    let stderr = String::from_utf8_lossy(&made.stderr);
    assert!(made.status.success(), "{stderr}");
    assert!(
        stderr.contains("made #vault, private") && stderr.contains("added bob to #vault"),
        "{stderr}"
    );
    for text in ["one", "two"] {
        let res = post_json(
            &ann.http,
            &srv.url("/api/rooms/vault/messages"),
            json!({"text": text}),
        )
        .await;
        assert_eq!(res.status(), 201);
    }
    let listed = chat_cli(&srv, "bob", &["--rooms"]).await;
    let stdout = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    assert!(stdout.contains("#vault [private]  2 unread"), "{stdout}");
    // Taken now: refused with the server's sentence.
    let again = chat_cli(&srv, "bob", &["--room", "vault", "--private"]).await;
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"));
}
