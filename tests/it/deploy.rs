//! Safe to deploy (docs/operations.md and docs/interface.md, "Hosts and origins"), over the real server: the Host
//! check, trusted proxies, admin bootstrap, signup limits, security headers, per-user quotas,
//! ended sessions ending their connections, fair and bounded jobs, and protocol errors on the
//! socket. Through a real nginx: `tests/it/proxy.rs`.

use crate::common;

use std::{net::IpAddr, time::Duration};

use common::{error_code, post_json, Sse, TestServer, PASSWORD};
use futures::StreamExt;
use reqwest::{header, StatusCode};
use serde_json::{json, Value};
use tidings::server::config::TEST_SETUP_TOKEN;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::{self, Message};

/// How long a closed session's connections may take to end (documented: 2 s), with slack
/// for a loaded machine.
const ENDS_WITHIN: Duration = Duration::from_secs(5);

fn loopback(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

/// A client connecting from `from` (any 127.x address reaches a server on 127.0.0.1).
fn client_from(from: IpAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(from)
        .cookie_store(true)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

async fn login(
    client: &reqwest::Client,
    srv: &TestServer,
    user: &str,
    password: &str,
    xff: Option<&str>,
) -> reqwest::Response {
    let mut req = client
        .post(srv.url("/api/auth/login"))
        .json(&json!({"username": user, "password": password}));
    if let Some(xff) = xff {
        req = req.header("x-forwarded-for", xff);
    }
    req.send().await.unwrap()
}

fn trusting_loopback(c: &mut tidings::settings::Settings) {
    c.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
}

// ---------------------------------------------------------------------------------------------
// Hosts

#[tokio::test]
async fn only_ip_literals_and_localhost_are_served_without_a_public_origin() {
    let srv = TestServer::start().await;
    let port = srv.base.rsplit(':').next().unwrap().to_string();
    let c = common::plain_client();
    for (host, ok) in [
        (format!("127.0.0.1:{port}"), true),
        (format!("localhost:{port}"), true),
        ("evil.example".to_string(), false),
        (format!("rebind.evil.example:{port}"), false),
    ] {
        let res = c
            .get(srv.url("/api/auth/me"))
            .header(header::HOST, &host)
            .send()
            .await
            .unwrap();
        if ok {
            assert_eq!(res.status(), 401, "{host}: served (and asks for a session)");
        } else {
            assert_eq!(res.status(), StatusCode::MISDIRECTED_REQUEST, "{host}");
            let body: Value = res.json().await.unwrap();
            assert_eq!(body["error"], "misdirected_request");
            assert!(
                body["message"]
                    .as_str()
                    .unwrap()
                    .contains("TIDINGS_PUBLIC_ORIGIN"),
                "{body}"
            );
        }
    }
    // Pages too; health checks answer whatever the host.
    let page = c
        .get(srv.url("/"))
        .header(header::HOST, "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 421);
    let health = c
        .get(srv.url("/healthz"))
        .header(header::HOST, "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn with_a_public_origin_only_it_is_served_and_it_decides_secure_cookies_and_origins() {
    let srv = TestServer::start_with(|c| {
        c.server.public_origins = tidings::server::Config::from_vars(|n| {
            (n == "TIDINGS_PUBLIC_ORIGIN").then(|| "https://chat.example.com".to_string())
        })
        .unwrap()
        .public_origins;
    })
    .await;
    let c = common::plain_client();
    let direct = c.get(srv.url("/api/auth/me")).send().await.unwrap();
    assert_eq!(
        direct.status(),
        421,
        "the address itself is not a public origin"
    );
    let signup = common::send(
        c.post(srv.url("/api/auth/signup"))
            .header(header::HOST, "chat.example.com")
            .header(header::ORIGIN, "https://chat.example.com")
            .json(&json!({"username": "pub", "password": PASSWORD})),
    )
    .await;
    assert_eq!(signup.status(), 201);
    let cookie = signup.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        cookie.contains("Secure"),
        "the public origin is https: {cookie}"
    );
    // The request's own host as http is not an own origin any more.
    let foreign = common::send(
        c.post(srv.url("/api/auth/signup"))
            .header(header::HOST, "chat.example.com")
            .header(header::ORIGIN, "http://chat.example.com")
            .json(&json!({"username": "pub2", "password": PASSWORD})),
    )
    .await;
    assert_eq!(foreign.status(), 403);
}

// ---------------------------------------------------------------------------------------------
// Trusted proxies

#[tokio::test]
async fn behind_a_trusted_proxy_one_guesser_does_not_lock_out_the_others() {
    let srv = TestServer::start_with(trusting_loopback).await;
    let bob = srv.client();
    srv.signup(&bob, "bob").await;
    let proxy = client_from(loopback(1));
    // The guesser, behind the proxy, tries ten wrong passwords against several names.
    for i in 0..10 {
        let res = login(
            &proxy,
            &srv,
            &format!("victim{i}"),
            "wrong password",
            Some("203.0.113.9"),
        )
        .await;
        assert_eq!(res.status(), 401);
    }
    let res = login(
        &proxy,
        &srv,
        "victim",
        "wrong password",
        Some("203.0.113.9"),
    )
    .await;
    assert_eq!(res.status(), 429, "the guesser's address is at its limit");
    assert!(res.headers().contains_key(header::RETRY_AFTER));
    // Bob, behind the same proxy from another address, still logs in.
    let res = login(&proxy, &srv, "bob", PASSWORD, Some("198.51.100.4")).await;
    assert_eq!(res.status(), 200);
    // The audit rows name the client, not the proxy.
    let failed = audit_details(&srv, "LOGIN_FAILED").await;
    assert_eq!(
        failed.len(),
        10,
        "the refused eleventh is not a failure: {failed:?}"
    );
    assert!(
        failed.iter().all(|d| d["address"] == "203.0.113.9"),
        "{failed:?}"
    );
    let logins = audit_details_again(&srv, "LOGIN").await;
    assert!(
        logins.iter().any(|d| d["address"] == "198.51.100.4"),
        "{logins:?}"
    );
}

#[tokio::test]
async fn forwarded_headers_from_an_untrusted_peer_are_ignored() {
    let srv = TestServer::start_with(trusting_loopback).await;
    // 127.0.0.2 is not a trusted proxy: whatever it writes in X-Forwarded-For, it is itself.
    let stranger = client_from(loopback(2));
    for i in 0..10 {
        let xff = format!("192.0.2.{i}");
        let res = login(
            &stranger,
            &srv,
            &format!("nobody{i}"),
            "wrong password",
            Some(&xff),
        )
        .await;
        assert_eq!(res.status(), 401);
    }
    let res = login(
        &stranger,
        &srv,
        "nobody",
        "wrong password",
        Some("192.0.2.200"),
    )
    .await;
    assert_eq!(res.status(), 429, "the peer's own address is counted");
    // The proxy's clients are untouched.
    let proxy = client_from(loopback(1));
    let res = login(
        &proxy,
        &srv,
        "nobody",
        "wrong password",
        Some("192.0.2.200"),
    )
    .await;
    assert_eq!(res.status(), 401);
    let failed: Vec<Value> = audit_details(&srv, "LOGIN_FAILED").await;
    assert!(
        failed.iter().any(|d| d["address"] == "127.0.0.2"),
        "{failed:?}"
    );
    assert!(
        failed.iter().any(|d| d["address"] == "192.0.2.200"),
        "{failed:?}"
    );
}

/// The `detail` of the audit rows of `action`, read through the export (signs the admin up).
async fn audit_details(srv: &TestServer, action: &str) -> Vec<Value> {
    let admin = srv.client();
    srv.signup(&admin, "admin").await;
    export_details(srv, &admin, action).await
}

/// The same, signing the admin in again.
async fn audit_details_again(srv: &TestServer, action: &str) -> Vec<Value> {
    let admin = srv.client();
    assert_eq!(
        login(&admin, srv, "admin", PASSWORD, None).await.status(),
        200
    );
    export_details(srv, &admin, action).await
}

async fn export_details(srv: &TestServer, admin: &reqwest::Client, action: &str) -> Vec<Value> {
    let text = admin
        .get(srv.url(&format!("/api/audit/export?action={action}")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["detail"].clone())
        .collect()
}

#[tokio::test]
async fn failed_login_names_are_stored_bounded() {
    let srv = TestServer::start().await;
    let typed = format!("=HYPERLINK(\"x\")<script>{}", "y".repeat(500));
    let res = login(&srv.client(), &srv, &typed, "wrong password", None).await;
    assert_eq!(res.status(), 401);
    let rows = srv.state.store.recent_audit(10).await.unwrap();
    let user = &rows
        .iter()
        .find(|r| r.action == "LOGIN_FAILED")
        .unwrap()
        .username;
    assert!(user.chars().count() <= 65, "{user}");
    assert!(!user.contains(['<', '"', '(', '=']), "{user}");
    assert!(user.starts_with("?HYPERLINK??x???script?"), "{user}");
}

// ---------------------------------------------------------------------------------------------
// Admin bootstrap and signups

#[tokio::test]
async fn a_listed_admin_name_needs_the_setup_token() {
    let srv = TestServer::start().await;
    let url = srv.url("/api/auth/signup");
    let c = common::plain_client();
    for body in [
        json!({"username": "admin", "password": PASSWORD}),
        json!({"username": "admin", "password": PASSWORD, "setupToken": "guess-guess-guess-guess"}),
    ] {
        let res = post_json(&c, &url, body).await;
        assert_eq!(res.status(), 403);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"], "reserved_username");
        assert!(
            body["message"].as_str().unwrap().contains("setup token"),
            "{body}"
        );
    }
    assert!(srv
        .state
        .store
        .user_by_name("admin")
        .await
        .unwrap()
        .is_none());
    let res = post_json(
        &c,
        &url,
        json!({"username": "admin", "password": PASSWORD, "setupToken": TEST_SETUP_TOKEN}),
    )
    .await;
    assert_eq!(res.status(), 201);
    assert_eq!(res.json::<Value>().await.unwrap()["user"]["role"], "admin");
    // Anyone else signs up as before; a token they send changes nothing.
    let res = post_json(
        &c,
        &url,
        json!({"username": "plain", "password": PASSWORD, "setupToken": TEST_SETUP_TOKEN}),
    )
    .await;
    assert_eq!(res.json::<Value>().await.unwrap()["user"]["role"], "user");
}

#[tokio::test]
async fn signups_are_limited_per_address_per_hour() {
    let srv = TestServer::start_with(|c| {
        trusting_loopback(c);
        c.server.limits.signups_per_hour = 3;
    })
    .await;
    let proxy = client_from(loopback(1));
    let signup = |name: String, xff: &'static str| {
        common::send(
            proxy
                .post(srv.url("/api/auth/signup"))
                .header("x-forwarded-for", xff)
                .json(&json!({"username": name, "password": PASSWORD})),
        )
    };
    for i in 0..3 {
        assert_eq!(signup(format!("s{i}"), "203.0.113.1").await.status(), 201);
    }
    // A refused signup (a taken name) does not count; the fourth new account does not pass.
    assert_eq!(signup("s0".into(), "203.0.113.1").await.status(), 409);
    let res = signup("s3".into(), "203.0.113.1").await;
    assert_eq!(res.status(), 429);
    assert!(res.headers().contains_key(header::RETRY_AFTER));
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "too_many_signups");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("TIDINGS_SIGNUP_PER_HOUR"),
        "{body}"
    );
    assert_eq!(
        signup("t0".into(), "203.0.113.2").await.status(),
        201,
        "per address"
    );
}

// ---------------------------------------------------------------------------------------------
// Security headers

#[tokio::test]
async fn pages_carry_a_content_security_policy_with_their_scripts_nonce() {
    let srv = TestServer::start().await;
    let c = common::plain_client();
    let mut nonces = Vec::new();
    for path in ["/", "/login", "/chat", "/nowhere"] {
        let res = c.get(srv.url(path)).send().await.unwrap();
        let h = res.headers().clone();
        assert_eq!(h[header::X_FRAME_OPTIONS], "DENY", "{path}");
        assert_eq!(h[header::REFERRER_POLICY], "same-origin", "{path}");
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{path}");
        let csp = h[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .to_string();
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        let nonce = csp
            .split("'nonce-")
            .nth(1)
            .and_then(|r| r.split('\'').next())
            .expect("a nonce")
            .to_string();
        let html = res.text().await.unwrap();
        let scripts = html.matches("<script").count();
        assert!(scripts > 0, "{path} has scripts");
        assert_eq!(
            html.matches(&format!("nonce=\"{nonce}\"")).count(),
            scripts,
            "{path}: every script carries the page's nonce"
        );
        nonces.push(nonce);
    }
    nonces.dedup();
    assert_eq!(nonces.len(), 4, "a fresh nonce per response");
    let api = c.get(srv.url("/api/auth/me")).send().await.unwrap();
    assert_eq!(api.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    assert!(!api.headers().contains_key(header::CONTENT_SECURITY_POLICY));
}

// ---------------------------------------------------------------------------------------------
// Quotas

#[tokio::test]
async fn streams_and_sockets_over_the_quota_are_refused_with_429() {
    let srv = TestServer::start_with(|c| c.server.limits.streams_per_user = 2).await;
    let ann = srv.user("ann").await;
    let first = Sse::open(ann.http.get(srv.url("/api/rooms/q/events"))).await;
    let _second = srv.ws(&ann.cookie).await;
    let res = ann
        .http
        .get(srv.url("/api/notifications/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "too_many_streams");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("TIDINGS_MAX_STREAMS_PER_USER"),
        "{body}"
    );
    // The WebSocket upgrade is refused before it happens.
    match ws_attempt(&srv, &ann.cookie).await {
        Err(tungstenite::Error::Http(res)) => assert_eq!(res.status(), 429),
        other => panic!("expected 429, got {other:?}"),
    }
    // Another user is not affected; a closed stream gives its place back.
    let bob = srv.user("bob").await;
    let _bobs = srv.ws(&bob.cookie).await;
    drop(first);
    let deadline = tokio::time::Instant::now() + ENDS_WITHIN;
    loop {
        let res = ann
            .http
            .get(srv.url("/api/notifications/events"))
            .send()
            .await
            .unwrap();
        if res.status() == 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the place never came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn ws_attempt(srv: &TestServer, cookie: &str) -> Result<common::Ws, tungstenite::Error> {
    use tungstenite::{client::IntoClientRequest, http::HeaderValue};
    let mut request = format!("{}/ws", srv.base.replacen("http://", "ws://", 1))
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("cookie", HeaderValue::from_str(cookie).unwrap());
    tokio_tungstenite::connect_async(request)
        .await
        .map(|(ws, _)| ws)
}

#[tokio::test]
async fn active_jobs_are_limited_per_user() {
    let srv = TestServer::start_with(|c| c.jobs.active_per_user = 2).await;
    let ann = srv.user("ann").await;
    let job = json!({"kind": "demo", "steps": 50, "stepMs": 1000});
    for _ in 0..2 {
        assert_eq!(
            post_json(&ann.http, &srv.url("/api/jobs"), job.clone())
                .await
                .status(),
            201
        );
    }
    let res = post_json(&ann.http, &srv.url("/api/jobs"), job.clone()).await;
    assert_eq!(res.status(), 429);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "too_many_jobs");
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("TIDINGS_MAX_ACTIVE_JOBS_PER_USER"));
    let bob = srv.user("bob").await;
    assert_eq!(
        post_json(&bob.http, &srv.url("/api/jobs"), job)
            .await
            .status(),
        201
    );
}

#[tokio::test]
async fn one_users_backlog_does_not_hold_up_another_users_new_job() {
    // Two workers, so one user may run one job at a time.
    let srv = TestServer::start_with(|c| c.jobs.workers = Some(2)).await;
    let ann = srv.user("ann").await;
    let long = json!({"kind": "demo", "steps": 100, "stepMs": 1000});
    for _ in 0..6 {
        assert_eq!(
            post_json(&ann.http, &srv.url("/api/jobs"), long.clone())
                .await
                .status(),
            201
        );
    }
    let bob = srv.user("bob").await;
    let res = post_json(
        &bob.http,
        &srv.url("/api/jobs"),
        json!({"kind": "demo", "steps": 1, "stepMs": 0}),
    )
    .await;
    let id = res.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    let mut events = Sse::open(bob.http.get(srv.url(&format!("/api/jobs/{id}/events")))).await;
    let done = events
        .next_named_within("complete", Duration::from_secs(10))
        .await;
    assert_eq!(done.data["percent"], 100);
    let running = srv.state.store.count_jobs("running").await.unwrap();
    assert!(running <= 1, "Ann runs at most half the workers: {running}");
}

#[tokio::test]
async fn ended_jobs_past_the_retention_are_deleted_with_their_events() {
    let dir = tempfile::tempdir().unwrap();
    let database = common::fresh_database(dir.path()).await;
    let srv = TestServer::start_on(&database, |_| {}).await;
    let ann = srv.user("ann").await;
    let res = post_json(
        &ann.http,
        &srv.url("/api/jobs"),
        json!({"kind": "demo", "steps": 1, "stepMs": 0}),
    )
    .await;
    let id = res.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    let events = Sse::open(ann.http.get(srv.url(&format!("/api/jobs/{id}/events")))).await;
    assert_eq!(events.rest().await.last().unwrap().event, "complete");
    // Eight days pass (the job's end moves back; the default retention is 7 days).
    {
        use sqlx::{Connection, Executor};
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect(&database).await.unwrap();
        let old = chrono::Utc::now().timestamp_millis() - 8 * 86_400_000;
        conn.execute(format!("UPDATE jobs SET updated_at = {old} WHERE id = {id}").as_str())
            .await
            .unwrap();
    }
    // The next instance to start prunes at once.
    let next = TestServer::start_on(&database, |_| {}).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let res = ann
            .http
            .get(next.url(&format!("/api/jobs/{id}")))
            .send()
            .await
            .unwrap();
        if res.status() == 404 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the old job was not deleted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(next
        .state
        .store
        .job_events_after(id, 0, 10)
        .await
        .unwrap()
        .is_empty());
    let res = ann
        .http
        .get(next.url(&format!("/api/jobs/{id}/events")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
}

// ---------------------------------------------------------------------------------------------
// Ended sessions

#[tokio::test]
async fn logout_closes_that_sessions_sockets_and_streams_and_no_others() {
    let srv = TestServer::start().await;
    let ann = srv.user("ann").await;
    let mut ws = srv.ws(&ann.cookie).await;
    let mut stream = Sse::open(ann.http.get(srv.url("/api/rooms/bye/events"))).await;
    assert_eq!(stream.next().await.unwrap().event, "chat-joined");
    let token = srv.stream_token(&ann.http).await;
    let mut by_token = Sse::open(
        common::plain_client().get(srv.url(&format!("/api/notifications/events?token={token}"))),
    )
    .await;
    // Ann's other session (another browser) stays.
    let other = srv.client();
    assert_eq!(
        login(&other, &srv, "ann", PASSWORD, None).await.status(),
        200
    );
    let other_cookie = srv.stream_token(&other).await;
    let mut kept = Sse::open(
        common::plain_client()
            .get(srv.url(&format!("/api/notifications/events?token={other_cookie}"))),
    )
    .await;
    assert_eq!(kept.next().await.unwrap().event, "ready");

    let res = ann
        .http
        .post(srv.url("/api/auth/logout"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let started = tokio::time::Instant::now();
    let close = closed_with(&mut ws).await;
    assert_eq!(close, (1008, "Signed out.".to_string()));
    let rest = tokio::time::timeout(ENDS_WITHIN, stream.rest())
        .await
        .expect("the stream ends");
    assert!(rest.is_empty(), "{rest:?}");
    assert_eq!(by_token.next().await.unwrap().event, "ready");
    let rest = tokio::time::timeout(ENDS_WITHIN, by_token.rest())
        .await
        .expect("the token's stream ends");
    assert!(rest.is_empty());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "within 2 s: {:?}",
        started.elapsed()
    );
    // The other session's stream lives on: a notification still reaches it.
    let admin = srv.user("admin").await;
    let sent = post_json(
        &admin.http,
        &srv.url("/api/notifications"),
        json!({"kind": "info", "message": "still here"}),
    )
    .await;
    assert_eq!(sent.status(), 200);
    assert_eq!(
        kept.next_named("notification").await.data["message"],
        "still here"
    );
}

/// The close code and reason the server ends `ws` with (within [`ENDS_WITHIN`]).
async fn closed_with(ws: &mut common::Ws) -> (u16, String) {
    loop {
        match tokio::time::timeout(ENDS_WITHIN, ws.next())
            .await
            .expect("closed in time")
        {
            Some(Ok(Message::Close(Some(frame)))) => {
                return (frame.code.into(), frame.reason.to_string())
            }
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn an_expiring_session_closes_its_socket() {
    let srv = TestServer::start_with(|c| c.server.session_ttl = Duration::from_secs(2)).await;
    let ann = srv.user("ann").await;
    let mut ws = srv.ws(&ann.cookie).await;
    let started = tokio::time::Instant::now();
    assert_eq!(
        closed_with(&mut ws).await,
        (1008, "Signed out.".to_string())
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        ann.http
            .get(srv.url("/api/auth/me"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
}

// ---------------------------------------------------------------------------------------------
// The socket's protocol

#[tokio::test]
async fn an_unmasked_client_frame_closes_the_socket_with_1002() {
    let srv = TestServer::start().await;
    let ann = srv.user("ann").await;
    let addr = srv.base.trim_start_matches("http://");
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let handshake = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Cookie: {}\r\n\r\n",
        ann.cookie
    );
    tcp.write_all(handshake.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        tcp.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    // A text frame "hi" without the mask bit (RFC 6455 §5.1: a server must close on it).
    tcp.write_all(&[0x81, 0x02, b'h', b'i']).await.unwrap();
    let mut frame = Vec::new();
    let read = tokio::time::timeout(ENDS_WITHIN, tcp.read_to_end(&mut frame)).await;
    assert!(read.is_ok(), "the server closes the connection");
    assert!(frame.len() >= 4, "a close frame: {frame:?}");
    assert_eq!(frame[0], 0x88, "a close frame: {frame:?}");
    assert_eq!(u16::from_be_bytes([frame[2], frame[3]]), 1002);
}

// ---------------------------------------------------------------------------------------------
// Bad input everywhere has the documented shape

#[tokio::test]
async fn refusals_have_the_documented_shape() {
    let srv = TestServer::start_with(|c| c.server.limits.streams_per_user = 1).await;
    let ann = srv.user("ann").await;
    let _held = srv.ws(&ann.cookie).await;
    let res = ann
        .http
        .get(srv.url("/api/metrics/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    assert_eq!(error_code(res).await, "too_many_streams");
    let res = common::plain_client()
        .get(srv.url("/api/notifications/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(error_code(res).await, "unauthorized");
}
