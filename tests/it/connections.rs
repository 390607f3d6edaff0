//! One connection per page, and other servers (docs/interface.md, "One connection per page"
//! and "Publishing from other servers"), through the real server:
//!
//! - one WebSocket in several rooms, `room` on every message, a 33rd room refused;
//! - `clientId` acks, and a resend on a new socket after a drop stored once;
//! - `Idempotency-Key` on `POST`: the repeat gets the first 201 body;
//! - API keys (the dashboard's routes and `tidings keys`): a key publishes to rooms and sends
//!   notifications with no cookie and a foreign `Origin`, is nothing else, and stops at once
//!   when revoked;
//! - `GET /metrics` for an admin or the metrics token;
//! - `GET /api/events`: rooms, notifications, a job and metrics on one stream, every event
//!   tagged with its topic, one cursor resuming them all (with a room's gap told), and every
//!   topic checked (400 or 403 naming it).

use crate::chat::{collect_for, connect, join, next_of, poll, post_ok, send_json};
use crate::common::{
    error_code, get_json, plain_client, post_json, Got, Sse, TestServer, PASSWORD,
};

use std::time::Duration;

use serde_json::{json, Value};
use tidings::protocol::chat::ROOMS_PER_SOCKET;

#[tokio::test]
async fn one_socket_hears_several_rooms_and_a_resent_client_id_is_stored_once() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let mut a = connect(&server, &alice).await;
    join(&mut a, "ops", None).await;
    join(&mut a, "dev", None).await;
    let mut b = connect(&server, &bob).await;
    join(&mut b, "ops", None).await;
    // Alice sends to `ops` (not the room joined last) with a clientId: acked, and Bob hears
    // it in `ops`.
    send_json(
        &mut a,
        json!({"type":"chat-message","room":"ops","text":"deploying","clientId":"a-1"}),
    )
    .await;
    let ack = next_of(&mut a, "chat-ack").await;
    assert_eq!(
        (ack["clientId"].as_str(), ack["room"].as_str()),
        (Some("a-1"), Some("ops"))
    );
    let heard = next_of(&mut b, "chat-message").await;
    assert_eq!(
        (heard["room"].as_str(), heard["id"].clone()),
        (Some("ops"), ack["id"].clone())
    );
    // The connection drops before the ack could be read: the client resends on a new socket
    // with the same clientId, gets the first id, and nothing new is stored or delivered.
    drop(a);
    let mut again = connect(&server, &alice).await;
    join(&mut again, "ops", ack["id"].as_i64()).await;
    send_json(
        &mut again,
        json!({"type":"chat-message","room":"ops","text":"deploying","clientId":"a-1"}),
    )
    .await;
    assert_eq!(next_of(&mut again, "chat-ack").await["id"], ack["id"]);
    let later: Vec<Value> = collect_for(&mut b, Duration::from_millis(500)).await;
    assert!(
        later.iter().all(|v| v["type"] != "chat-message"),
        "{later:?}"
    );
    let (_, page) = poll(&server, &bob, "ops", "").await;
    assert_eq!(page.messages.len(), 1);
    // Up to 32 rooms; the 33rd is refused and the socket stays.
    for n in 1..ROOMS_PER_SOCKET {
        join(&mut again, &format!("room-{n}"), None).await;
    }
    send_json(&mut again, json!({"type":"chat-join","room":"one-more"})).await;
    let refused = next_of(&mut again, "chat-error").await;
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("at most 32 rooms"),
        "{refused}"
    );
    send_json(
        &mut again,
        json!({"type":"chat-message","room":"room-7","text":"still here"}),
    )
    .await;
    let m = next_of(&mut again, "chat-message").await;
    assert_eq!(
        (m["room"].as_str(), m["text"].as_str()),
        (Some("room-7"), Some("still here"))
    );
}

#[tokio::test]
async fn an_idempotency_key_makes_a_repeated_post_return_the_first_message() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let post = |key: &str| {
        alice
            .http
            .post(server.url("/api/rooms/general/messages"))
            .header("idempotency-key", key)
            .json(&json!({"text": "once"}))
            .send()
    };
    let first = post("deploy-42").await.unwrap();
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let repeat = post("deploy-42").await.unwrap();
    assert_eq!(repeat.status(), 201);
    assert_eq!(repeat.json::<Value>().await.unwrap(), first);
    let (_, page) = poll(&server, &alice, "general", "").await;
    assert_eq!(page.messages.len(), 1);
    let too_long = post(&"k".repeat(65)).await.unwrap();
    assert_eq!(too_long.status(), 400);
    assert_eq!(error_code(too_long).await, "invalid_idempotency_key");
}

/// `tidings keys ARGS…` as `admin` against `server`; stdout on success.
async fn keys_cli(server: &TestServer, args: &[&str]) -> String {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tidings"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TIDINGS_PASSWORD", PASSWORD)
        .env("RUST_LOG", "warn")
        .args(["keys", "--server", &server.base, "--username", "admin"])
        .args(args)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "tidings keys {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn an_api_key_publishes_without_a_cookie_until_it_is_revoked_and_is_nothing_else() {
    let server = TestServer::start().await;
    let admin = server.user("admin").await;
    let alice = server.user("alice").await;
    // Made with the CLI: the key alone on stdout.
    let key = keys_cli(&server, &["create", "deploy-bot"])
        .await
        .trim()
        .to_string();
    assert!(key.starts_with("tdk_"), "{key}");
    let listed = keys_cli(&server, &["list"]).await;
    assert!(
        listed.contains("deploy-bot") && !listed.contains(&key),
        "{listed}"
    );
    // Not an admin: 403; a bad name and a taken one: 400 and 409.
    let res = post_json(
        &alice.http,
        &server.url("/api/keys"),
        json!({"name":"mine"}),
    )
    .await;
    assert_eq!(res.status(), 403);
    let res = post_json(
        &admin.http,
        &server.url("/api/keys"),
        json!({"name":"Bad Name"}),
    )
    .await;
    assert_eq!(error_code(res).await, "invalid_key_name");
    let res = post_json(
        &admin.http,
        &server.url("/api/keys"),
        json!({"name":"alice"}),
    )
    .await;
    assert_eq!(error_code(res).await, "name_taken");

    // A plain client, no cookie, a foreign Origin: posts to a room and sends a notification.
    let mut ws = connect(&server, &alice).await;
    join(&mut ws, "deploys", None).await;
    let plain = plain_client();
    let bearer = |req: reqwest::RequestBuilder, key: &str| {
        req.header("authorization", format!("Bearer {key}"))
            .header("origin", "https://ci.example.net")
    };
    let res = bearer(plain.post(server.url("/api/rooms/deploys/messages")), &key)
        .json(&json!({"text":"v1.2.3 is live"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let heard = next_of(&mut ws, "chat-message").await;
    assert_eq!(
        (heard["displayName"].as_str(), heard["text"].as_str()),
        (Some("deploy-bot"), Some("v1.2.3 is live"))
    );
    let res = bearer(plain.post(server.url("/api/notifications")), &key)
        .json(&json!({"kind":"deploy","message":"v1.2.3 is live"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(next_of(&mut ws, "notification").await["kind"], "deploy");

    // The key is nothing else: not a session for jobs or keys, and not accepted as a cookie.
    for (path, body) in [
        ("/api/jobs", json!({"kind":"sleep"})),
        ("/api/keys", json!({"name":"more"})),
    ] {
        let res = bearer(plain.post(server.url(path)), &key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401, "{path}");
    }
    let res = plain
        .get(server.url("/api/keys"))
        .header("cookie", format!("tidings_session={key}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    // Unknown, malformed: 401 `invalid_key`.
    for bad in ["Bearer tdk_unknown", "Basic abc", "Bearer "] {
        let res = plain
            .post(server.url("/api/rooms/deploys/messages"))
            .header("authorization", bad)
            .json(&json!({"text":"x"}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401, "{bad}");
        assert_eq!(error_code(res).await, "invalid_key", "{bad}");
    }

    // Revoked with the CLI: refused at once; the list no longer has it.
    let list: Value = get_json(&admin.http, &server.url("/api/keys")).await;
    let id = list["keys"][0]["id"].as_str().unwrap().to_string();
    assert!(list["keys"][0]["lastUsedAt"].is_string(), "{list}");
    keys_cli(&server, &["revoke", &id]).await;
    let res = bearer(plain.post(server.url("/api/rooms/deploys/messages")), &key)
        .json(&json!({"text":"again"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let list: Value = get_json(&admin.http, &server.url("/api/keys")).await;
    assert_eq!(list["keys"], json!([]));
    let res = admin
        .http
        .delete(server.url(&format!("/api/keys/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
}

#[tokio::test]
async fn metrics_are_in_the_prometheus_format_for_an_admin_or_the_token_only() {
    let server = TestServer::start().await;
    let admin = server.user("admin").await;
    let alice = server.user("alice").await;
    // Some traffic to count: a message over HTTP and one over the WebSocket.
    let mut ws = connect(&server, &alice).await;
    join(&mut ws, "general", None).await;
    send_json(
        &mut ws,
        json!({"type":"chat-message","text":"over the socket"}),
    )
    .await;
    next_of(&mut ws, "chat-message").await;
    let res = post_json(
        &alice.http,
        &server.url("/api/rooms/general/messages"),
        json!({"text":"over http"}),
    )
    .await;
    assert_eq!(res.status(), 201);

    let plain = plain_client();
    let scrape = |auth: Option<&str>| {
        let mut req = plain.get(server.url("/metrics"));
        if let Some(auth) = auth {
            req = req.header("authorization", auth);
        }
        req.send()
    };
    let token = format!("Bearer {}", tidings::server::config::TEST_METRICS_TOKEN);
    let res = scrape(Some(&token)).await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let text = res.text().await.unwrap();
    for needle in [
        "tidings_messages_total{transport=\"websocket\"}",
        "tidings_messages_total{transport=\"http\"}",
        "tidings_deliveries_total{transport=\"websocket\"}",
        "tidings_deliveries_total{transport=\"sse\"}",
        "tidings_slow_client_disconnects_total{transport=\"sse\"}",
        "tidings_slow_client_drops_total{transport=\"websocket\"}",
        "tidings_rows_exported_total",
        "# TYPE tidings_jobs gauge",
        "# TYPE tidings_http_request_duration_seconds histogram",
        "method=\"POST\",route=\"/api/rooms/{room}/messages\",status=\"2xx\"",
        "tidings_rss_bytes",
        "# EOF",
    ] {
        assert!(text.contains(needle), "no {needle:?} in\n{text}");
    }
    // The counters are the process's: other tests' sockets may add to them.
    let sockets: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("tidings_connections{transport=\"websocket\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no websocket gauge in\n{text}"));
    assert!(sockets >= 1, "{text}");
    // An admin session may scrape; another user may not; a wrong token is 401.
    assert_eq!(
        admin
            .http
            .get(server.url("/metrics"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        alice
            .http
            .get(server.url("/metrics"))
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(scrape(None).await.unwrap().status(), 401);
    assert_eq!(
        scrape(Some("Bearer not-the-token")).await.unwrap().status(),
        401
    );
}

/// `GET /api/events` with these topics as `user`, resuming from `cursor`.
fn events_request(
    server: &TestServer,
    user: &crate::common::User,
    topics: &[&str],
    cursor: Option<&str>,
) -> reqwest::RequestBuilder {
    let query: Vec<(&str, &str)> = topics.iter().map(|t| ("topic", *t)).collect();
    let mut req = user.http.get(server.url("/api/events")).query(&query);
    if let Some(cursor) = cursor {
        req = req.header("last-event-id", cursor);
    }
    req
}

/// Reads events until `done` says so; returns them all.
async fn read_until(sse: &mut Sse, mut done: impl FnMut(&[Got]) -> bool) -> Vec<Got> {
    let mut got = Vec::new();
    while !done(&got) {
        let e = sse
            .next_within(Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("the stream ended or went quiet; so far {got:?}"));
        got.push(e);
    }
    got
}

fn texts_of(got: &[Got], topic: &str) -> Vec<String> {
    got.iter()
        .filter(|e| e.event == "chat-message" && e.data["topic"] == topic)
        .map(|e| e.data["text"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn one_event_stream_carries_rooms_notifications_and_a_job_and_resumes_them_all_at_once() {
    let server = TestServer::start_with(|s| {
        s.chat.history = 5;
        s.chat.rate_per_second = 1000;
    })
    .await;
    let admin = server.user("admin").await;
    let alice = server.user("alice").await;
    let job = post_json(
        &alice.http,
        &server.url("/api/jobs"),
        json!({"kind":"demo","steps":3,"stepMs":20}),
    )
    .await;
    assert_eq!(job.status(), 201);
    let job_id = job.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    let job_topic = format!("job:{job_id}");
    let topics = [
        "room:ops",
        "room:dev",
        "notifications",
        job_topic.as_str(),
        "metrics",
    ];
    let mut sse = Sse::open(events_request(&server, &alice, &topics, None)).await;
    // Every topic speaks: the rooms' joins, the job to its end, a metrics sample.
    let first = read_until(&mut sse, |got| {
        got.iter().any(|e| e.event == "complete")
            && got.iter().any(|e| e.event == "metrics")
            && got.iter().filter(|e| e.event == "chat-joined").count() == 2
            && got.iter().any(|e| e.event == "ready")
    })
    .await;
    for e in &first {
        assert!(topics.contains(&e.data["topic"].as_str().unwrap()), "{e:?}");
    }
    let progress: Vec<&Got> = first
        .iter()
        .filter(|e| e.data["topic"] == job_topic.as_str())
        .collect();
    assert!(progress.len() >= 4, "{progress:?}");
    post_ok(&server, &alice, "ops", "ops one").await;
    post_ok(&server, &alice, "dev", "dev one").await;
    let live = read_until(&mut sse, |got| {
        texts_of(got, "room:dev").len() == 1 && texts_of(got, "room:ops").len() == 1
    })
    .await;
    let cursor = live.last().unwrap().id.clone();
    assert!(!cursor.is_empty() && cursor.len() < 40, "{cursor}");
    drop(sse);

    // While away: two more in ops, eight in dev (past its kept history of 5), a notification.
    for t in ["ops two", "ops three"] {
        post_ok(&server, &alice, "ops", t).await;
    }
    for n in 2..10 {
        post_ok(&server, &alice, "dev", &format!("dev {n}")).await;
    }
    let res = post_json(
        &admin.http,
        &server.url("/api/notifications"),
        json!({"kind":"info","message":"while you were away","to":["alice"]}),
    )
    .await;
    assert_eq!(res.status(), 200);

    // One reconnect with the browser's Last-Event-ID resumes every topic.
    let mut sse = Sse::open(events_request(&server, &alice, &topics, Some(&cursor))).await;
    let back = read_until(&mut sse, |got| {
        texts_of(got, "room:dev").contains(&"dev 9".to_string())
            && texts_of(got, "room:ops").len() == 2
            && got.iter().any(|e| e.event == "notification")
    })
    .await;
    assert_eq!(
        texts_of(&back, "room:ops"),
        ["ops two", "ops three"],
        "exactly what was missed"
    );
    let gap = back
        .iter()
        .find(|e| e.event == "gap")
        .expect("dev's gap is told");
    assert_eq!(
        (gap.data["topic"].as_str(), gap.data["afterId"].as_i64()),
        (Some("room:dev"), Some(1))
    );
    assert_eq!(
        texts_of(&back, "room:dev"),
        ["dev 5", "dev 6", "dev 7", "dev 8", "dev 9"]
    );
    let note = back.iter().find(|e| e.event == "notification").unwrap();
    assert_eq!(
        (note.data["topic"].as_str(), note.data["message"].as_str()),
        (Some("notifications"), Some("while you were away"))
    );
    assert!(
        back.iter().all(|e| e.event != "complete"),
        "the finished job is not replayed"
    );
}

#[tokio::test]
async fn every_topic_is_checked_and_a_refusal_names_it() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let res = post_json(
        &alice.http,
        &server.url("/api/rooms"),
        json!({"name":"secret","private":true}),
    )
    .await;
    assert_eq!(res.status(), 201);
    let job = post_json(
        &alice.http,
        &server.url("/api/jobs"),
        json!({"kind":"demo","steps":1}),
    )
    .await;
    let job_id = job.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    let refused = |topics: Vec<String>, cursor: Option<&'static str>| {
        let topics: Vec<String> = topics;
        let req = {
            let t: Vec<&str> = topics.iter().map(String::as_str).collect();
            events_request(&server, &bob, &t, cursor)
        };
        async move {
            let res = req.send().await.unwrap();
            let status = res.status().as_u16();
            let body: Value = res.json().await.unwrap();
            (
                status,
                body["error"].as_str().unwrap_or("").to_string(),
                body["message"].as_str().unwrap_or("").to_string(),
            )
        }
    };
    let t = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    for (topics, status, code, named) in [
        (t(&["room:Bad Name"]), 400, "invalid_topic", "room:Bad Name"),
        (t(&["weather"]), 400, "invalid_topic", "weather"),
        (t(&["job:abc"]), 400, "invalid_topic", "job:abc"),
        (t(&["metrics:x"]), 400, "invalid_topic", "metrics:x"),
        (t(&[]), 400, "invalid_topic", "topic"),
        (
            t(&["room:secret", "metrics"]),
            403,
            "forbidden_topic",
            "room:secret",
        ),
        (
            vec!["metrics".to_string(), format!("job:{job_id}")],
            403,
            "forbidden_topic",
            "job:",
        ),
        (t(&["logs"]), 403, "forbidden_topic", "logs"),
    ] {
        let (s, c, m) = refused(topics.clone(), None).await;
        assert_eq!((s, c.as_str()), (status, code), "{topics:?}: {m}");
        assert!(m.contains(named), "{topics:?}: {m}");
    }
    let many: Vec<String> = (0..33).map(|i| format!("room:r{i}")).collect();
    let (s, c, _) = refused(many, None).await;
    assert_eq!((s, c.as_str()), (400, "too_many_topics"));
    let (s, c, _) = refused(t(&["metrics"]), Some("not a cursor")).await;
    assert_eq!((s, c.as_str()), (400, "invalid_cursor"));
}

#[tokio::test]
async fn a_cursor_from_one_instance_resumes_on_another() {
    // Two instances of one deployment share the database; the cursor holds no instance state.
    let dir = tempfile::tempdir().unwrap();
    let url = crate::common::fresh_database(dir.path()).await;
    let a = TestServer::start_on(&url, |_| {}).await;
    let b = TestServer::start_on(&url, |_| {}).await;
    let alice = a.user("alice").await;
    let topics = ["room:handover", "notifications"];
    let mut sse = Sse::open(events_request(&a, &alice, &topics, None)).await;
    post_ok(&a, &alice, "handover", "before").await;
    let got = read_until(&mut sse, |got| texts_of(got, "room:handover").len() == 1).await;
    let cursor = got.last().unwrap().id.clone();
    drop(sse);
    post_ok(&a, &alice, "handover", "while away").await;
    // The same user's client, now at the other instance, with the same Last-Event-ID.
    let mut sse = Sse::open(events_request(&b, &alice, &topics, Some(&cursor))).await;
    let back = read_until(&mut sse, |got| !texts_of(got, "room:handover").is_empty()).await;
    assert_eq!(texts_of(&back, "room:handover"), ["while away"]);
}
