//! Two instances on one database and one Redis: what is published on one reaches the
//! clients of the other, and an instance cut off from Redis says so and catches up after.
//!
//! Each test starts its own `redis-server` (Debian's, which `scripts/setup.sh` installs) on a
//! free loopback port and stops it at the end. The instances share a fresh PostgreSQL database
//! when `TIDINGS_TEST_POSTGRES` is set (`scripts/test.sh`'s second run), else one SQLite file.

use crate::common;

use std::{sync::Arc, time::Duration};

use common::{fresh_database, Redis, Sse, TestServer, Ws};
use futures::{SinkExt, StreamExt};
use reqwest::cookie::CookieStore;
use serde_json::{json, Value};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(15);
/// Long enough for a dead instance's job lease (15 s) to run out and another to resume it.
const TAKEOVER: Duration = Duration::from_secs(60);

/// Two instances on one fresh database and `redis`.
async fn two_instances(redis: &Redis) -> (TestServer, TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let database = fresh_database(dir.path()).await;
    let url = redis.url();
    let a = TestServer::start_on(&database, |c| c.server.redis_url = Some(url.clone())).await;
    let b = TestServer::start_on(&database, |c| c.server.redis_url = Some(url.clone())).await;
    (a, b, dir)
}

/// Joins `room` after message `after` (`None`: the latest), returning `chat-joined`.
async fn join(ws: &mut Ws, room: &str, after: Option<i64>) -> Value {
    ws.send(Message::text(
        json!({"type": "chat-join", "room": room, "lastMessageId": after}).to_string(),
    ))
    .await
    .unwrap();
    next_of(ws, "chat-joined").await
}

/// The next text frame of type `kind`, parsed.
async fn next_of(ws: &mut Ws, kind: &str) -> Value {
    loop {
        let v = next_of_any(ws).await;
        if v["type"] == kind {
            return v;
        }
    }
}

/// An event stream's events as (name, id, data).
#[tokio::test]
async fn a_message_on_one_instance_reaches_every_transport_on_the_other() {
    if common::skip_without_redis() {
        return;
    }
    let redis = Redis::start();
    let (a, b, _db) = two_instances(&redis).await;
    let ann = a.user("scale_ann").await;
    let bob = b.user("scale_bob").await;

    // Ann on A over WebSocket; Bob on B over SSE.
    let mut ws = a.ws(&ann.cookie).await;
    join(&mut ws, "scale", None).await;
    let mut sse = Sse::open(bob.http.get(b.url("/api/rooms/scale/events"))).await;
    sse.next_named("chat-joined").await;

    ws.send(Message::text(
        json!({"type": "chat-message", "text": "from A"}).to_string(),
    ))
    .await
    .unwrap();
    let got = sse.next_named("chat-message").await;
    let (id, data) = (got.id, got.data);
    assert_eq!(data["text"], "from A");
    assert_eq!(id, data["id"].to_string());

    let posted = bob
        .http
        .post(b.url("/api/rooms/scale/messages"))
        .json(&json!({"text": "from B"}))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 201);
    loop {
        let m = next_of(&mut ws, "chat-message").await;
        if m["text"] == "from B" {
            assert_eq!(m["displayName"], "scale_bob");
            break;
        }
    }
    // A notification sent on B reaches the socket on A.
    let admin = b.user("admin").await;
    let sent = admin
        .http
        .post(b.url("/api/notifications"))
        .json(&json!({"kind": "info", "message": "to every instance"}))
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 200, "{}", sent.text().await.unwrap());
    let n = next_of(&mut ws, "notification").await;
    assert_eq!(n["message"], "to every instance");
}

#[tokio::test]
async fn a_job_created_on_one_instance_is_watched_on_the_other() {
    if common::skip_without_redis() {
        return;
    }
    let redis = Redis::start();
    let (a, b, _db) = two_instances(&redis).await;
    let ann = a.user("scale_jobs").await;
    let created: Value = ann
        .http
        .post(a.url("/api/jobs"))
        .json(&json!({"kind": "demo", "steps": 6, "stepMs": 100}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_i64().unwrap();
    // The same session on B (one database): every event, in order, to the end.
    let mut watch = Sse::open(ann.http.get(b.url(&format!("/api/jobs/{id}/events")))).await;
    let mut ids = Vec::new();
    loop {
        let got = watch
            .next_within(WAIT)
            .await
            .expect("the stream goes on until the job ends");
        let event = got.event;
        ids.push(got.id.parse::<i64>().unwrap());
        if event == "complete" {
            break;
        }
        assert_ne!(event, "failed");
    }
    let want: Vec<i64> = (1..=ids.len() as i64).collect();
    assert_eq!(ids, want, "every event once, in order");
}

#[tokio::test]
async fn an_instance_cut_off_from_redis_says_so_and_catches_up_after() {
    if common::skip_without_redis() {
        return;
    }
    let mut redis = Redis::start();
    let (a, b, _db) = two_instances(&redis).await;
    let ann = a.user("scale_cut").await;
    let bob = b.user("scale_cut_b").await;
    let ready = |s: &TestServer| {
        let url = s.url("/readyz");
        async move { reqwest::get(url).await.unwrap().status().as_u16() }
    };
    assert_eq!(ready(&a).await, 200);

    let mut ws = a.ws(&ann.cookie).await;
    join(&mut ws, "cut", None).await;

    redis.stop();
    // Both say they are not ready while Redis is away (the subscriber notices the drop).
    let deadline = tokio::time::Instant::now() + WAIT;
    while ready(&a).await != 503 || ready(&b).await != 503 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz still 200 without Redis"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // B still serves its own clients: a message posted there is stored.
    let posted = bob
        .http
        .post(b.url("/api/rooms/cut/messages"))
        .json(&json!({"text": "while Redis was away"}))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 201);

    redis.resume();
    let deadline = tokio::time::Instant::now() + WAIT;
    while ready(&a).await != 200 || ready(&b).await != 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz not back after Redis"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The socket on A reads back what it missed from the database.
    let m = next_of(&mut ws, "chat-message").await;
    assert_eq!(m["text"], "while Redis was away");
    // And the bus works again, from B to A.
    let posted = bob
        .http
        .post(b.url("/api/rooms/cut/messages"))
        .json(&json!({"text": "after"}))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 201);
    let m = next_of(&mut ws, "chat-message").await;
    assert_eq!(m["text"], "after");
}

#[tokio::test]
async fn a_wrong_redis_url_fails_fast_with_a_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let database = fresh_database(dir.path()).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = tidings::server::Config::for_tests(&database);
    config.redis_url = Some(format!("redis://127.0.0.1:{port}"));
    let options = leptos::config::get_configuration(Some("Cargo.toml"))
        .unwrap()
        .leptos_options;
    let started = std::time::Instant::now();
    let err = tidings::server::AppState::new(config, options, tidings::server::Shutdown::new())
        .await
        .expect_err("no Redis there");
    assert!(started.elapsed() < Duration::from_secs(10), "fails fast");
    assert!(
        err.to_string()
            .contains("cannot reach Redis at redis://127.0.0.1"),
        "{err}"
    );
    let mut config = tidings::server::Config::for_tests(&database);
    config.redis_url = Some("mysql://nope".into());
    let options = leptos::config::get_configuration(Some("Cargo.toml"))
        .unwrap()
        .leptos_options;
    let err = tidings::server::AppState::new(config, options, tidings::server::Shutdown::new())
        .await
        .expect_err("not a Redis URL");
    assert!(err.to_string().contains("REDIS_URL"), "{err}");
}

/// A real `tidings` process on `database` and `redis`, and its base URL.
fn instance(database: &str, redis: &Redis) -> (std::process::Child, String) {
    let url = redis.url();
    let mut child = common::binary(&[
        ("DATABASE_URL", database),
        ("REDIS_URL", &url),
        ("TIDINGS_ADMINS", "admin"),
    ])
    .spawn()
    .expect("the tidings binary starts");
    let base = common::wait_for_listening(&mut child);
    (child, base)
}

/// The process is gone for good when this is dropped (a test that fails must not leave it).
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn kill_9_of_an_instance_mid_job_loses_nothing() {
    if common::skip_without_redis() {
        return;
    }
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let database = fresh_database(dir.path()).await;
    let (a, base_a) = instance(&database, &redis);
    let mut a = Killed(a);

    // One account (one database: its session works on both instances).
    let jar = Arc::new(reqwest::cookie::Jar::default());
    let http = reqwest::Client::builder()
        .cookie_provider(jar.clone())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let signup = http
        .post(format!("{base_a}/api/auth/signup"))
        .json(&json!({"username": "scale_kill", "password": common::PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(signup.status(), 201);
    let cookie = jar
        .cookies(&base_a.parse().unwrap())
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();

    // A job on A, running there before B exists (so A's worker holds it).
    let created: Value = http
        .post(format!("{base_a}/api/jobs"))
        .json(&json!({"kind": "demo", "steps": 30, "stepMs": 300}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let job = created["id"].as_i64().unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let status: Value = http
            .get(format!("{base_a}/api/jobs/{job}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if status["status"] == "running" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the job never ran on A"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (b, base_b) = instance(&database, &redis);
    let _b = Killed(b);

    // Watchers: the job's events on B; a chat socket on A.
    let mut watch = Sse::open(http.get(format!("{base_b}/api/jobs/{job}/events"))).await;
    let mut ws = common::open_ws(&base_a, &cookie).await;
    join(&mut ws, "kill", None).await;
    ws.send(Message::text(
        json!({"type": "chat-message", "text": "before"}).to_string(),
    ))
    .await
    .unwrap();
    let last_seen = next_of(&mut ws, "chat-message").await["id"]
        .as_i64()
        .unwrap();
    // B's watcher sees the job move, published by A through Redis.
    let first = watch.next_named("progress").await.id;

    // A notification sent on B counts the connections of both processes: B's own (the job
    // watcher) and A's socket, which A reports through Redis every 2 s.
    let admin = reqwest::Client::builder()
        .cookie_store(true)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let signup = admin
        .post(format!("{base_b}/api/auth/signup"))
        .json(&json!({"username": "admin", "password": common::PASSWORD, "setupToken": tidings::server::config::TEST_SETUP_TOKEN}))
        .send()
        .await
        .unwrap();
    assert_eq!(signup.status(), 201);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let sent: Value = admin
            .post(format!("{base_b}/api/notifications"))
            .json(&json!({"kind": "info", "message": "counting"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if sent["connectionCount"].as_u64().unwrap() >= 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "A's socket never counted on B: {sent}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // kill -9 A mid-job.
    a.0.kill().expect("SIGKILL");
    let _ = a.0.wait();
    drop(ws);

    // Meanwhile the room goes on, on B.
    let posted = http
        .post(format!("{base_b}/api/rooms/kill/messages"))
        .json(&json!({"text": "while A was dead"}))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 201);

    // The chat client moves to B and resumes after the last message it saw: the missed one,
    // once, and nothing before it.
    let mut ws = common::open_ws(&base_b, &cookie).await;
    let joined = join(&mut ws, "kill", Some(last_seen)).await;
    let texts: Vec<&str> = joined["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["while A was dead"]);

    // B takes the job over once A's lease runs out, and the watcher sees every event once, in
    // order, to the end.
    let mut ids = vec![first.parse::<i64>().unwrap()];
    loop {
        let got = watch
            .next_within(TAKEOVER)
            .await
            .expect("the stream goes on until the job ends");
        let event = got.event;
        ids.push(got.id.parse().unwrap());
        assert_ne!(event, "failed");
        if event == "complete" {
            break;
        }
    }
    let want: Vec<i64> = (ids[0]..ids[0] + ids.len() as i64).collect();
    assert_eq!(ids, want, "no event lost or repeated across the takeover");
    let status: Value = http
        .get(format!("{base_b}/api/jobs/{job}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["status"], "completed");
    assert_eq!(status["percent"], 100);
}

#[tokio::test]
async fn the_failed_login_limit_is_shared_by_the_instances() {
    if common::skip_without_redis() {
        return;
    }
    let redis = Redis::start();
    let (a, b, _db) = two_instances(&redis).await;
    a.user("scale_guess").await;
    let guess = |server: &TestServer| {
        let url = server.url("/api/auth/login");
        async move {
            reqwest::Client::new()
                .post(url)
                .json(&json!({"username": "scale_guess", "password": "not the password"}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    for _ in 0..10 {
        assert_eq!(guess(&a).await, 401);
    }
    // The eleventh, on the other instance: refused there too.
    assert_eq!(guess(&b).await, 429);
    // The right password on B is refused as well while the limit holds (no guessing around it).
    let res = reqwest::Client::new()
        .post(b.url("/api/auth/login"))
        .json(&json!({"username": "scale_guess", "password": common::PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    assert!(res.headers().contains_key("retry-after"));
}

/// The next `chat-presence` on an SSE room stream: (action, user).
async fn next_presence(events: &mut Sse) -> (String, String) {
    presence_of(events.next_named("chat-presence").await.data)
}

/// (action, user) of a `chat-presence` event's data.
fn presence_of(data: Value) -> (String, String) {
    (
        data["action"].as_str().unwrap().to_string(),
        data["displayName"].as_str().unwrap().to_string(),
    )
}

#[tokio::test]
async fn presence_is_one_entry_per_user_across_instances() {
    if common::skip_without_redis() {
        return;
    }
    let redis = Redis::start();
    let (a, b, _db) = two_instances(&redis).await;
    let ann = a.user("scale_ann_p").await;
    let bob = b.user("scale_bob_p").await;
    let mut watch = Sse::open(bob.http.get(b.url("/api/rooms/meet/events"))).await;
    watch.next_named("chat-joined").await;

    // Ann comes in on A: Bob, on B, hears it; Ann's member list has Bob, who is on B.
    let mut on_a = a.ws(&ann.cookie).await;
    let joined = join(&mut on_a, "meet", None).await;
    assert_eq!(
        next_presence(&mut watch).await,
        ("joined".to_string(), "scale_ann_p".to_string())
    );
    let members: Vec<&str> = joined["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    assert!(members.contains(&"scale_bob_p"), "{members:?}");

    // A second tab on B, then the first one closes: Ann is still there, so nobody hears
    // anything. When the last one closes, Bob hears `left`, once.
    let mut on_b = b.ws(&ann.cookie).await;
    join(&mut on_b, "meet", None).await;
    on_a.close(None).await.unwrap();
    drop(on_a);
    // Nothing for well past the grace period (300 ms in tests): Ann is still on B.
    assert!(
        timeout(Duration::from_secs(2), next_presence(&mut watch))
            .await
            .is_err(),
        "a presence change while Ann still had a tab open"
    );
    on_b.close(None).await.unwrap();
    assert_eq!(
        next_presence(&mut watch).await,
        ("left".to_string(), "scale_ann_p".to_string()),
        "no joined or left in between"
    );
}

#[tokio::test]
async fn the_users_of_an_instance_that_died_leave_after_its_presence_expires() {
    if common::skip_without_redis() {
        return;
    }
    let redis = Redis::start();
    let (a, b, _db) = two_instances(&redis).await;
    let ann = a.user("scale_gone").await;
    let bob = b.user("scale_stays").await;
    let mut watch = Sse::open(bob.http.get(b.url("/api/rooms/gone/events"))).await;
    watch.next_named("chat-joined").await;
    let mut on_a = a.ws(&ann.cookie).await;
    join(&mut on_a, "gone", None).await;
    assert_eq!(
        next_presence(&mut watch).await,
        ("joined".to_string(), "scale_gone".to_string())
    );
    // A stops without a word (its sockets close, nothing more comes from it).
    a.state.shutdown.trigger();
    // Up to 15 s of silence, then B's next check (every 5 s) retires A's presence.
    let (action, who) = presence_of(
        watch
            .next_named_within("chat-presence", Duration::from_secs(40))
            .await
            .data,
    );
    assert_eq!((action.as_str(), who.as_str()), ("left", "scale_gone"));
}

#[tokio::test]
async fn logout_on_one_instance_closes_the_sessions_socket_on_the_other() {
    if common::skip_without_redis() {
        return;
    }
    let redis = Redis::start();
    let (a, b, _dir) = two_instances(&redis).await;
    let ann = a.user("scale_bye").await;
    let mut on_b = b.ws(&ann.cookie).await;
    join(&mut on_b, "bye", None).await;
    let mut stream_b = Sse::open(ann.http.get(b.url("/api/rooms/bye/events"))).await;
    assert_eq!(stream_b.next().await.unwrap().event, "chat-joined");
    let started = tokio::time::Instant::now();
    let res = ann
        .http
        .post(a.url("/api/auth/logout"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let close = close_frame(&mut on_b).await;
    assert_eq!(
        (u16::from(close.code), close.reason.as_str()),
        (1008, "Signed out.")
    );
    let rest = timeout(WAIT, stream_b.rest())
        .await
        .expect("the stream ends");
    assert!(rest.iter().all(|e| e.event != "chat-message"), "{rest:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "within 2 s on the other instance: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn the_chat_rate_limit_holds_across_instances() {
    if common::skip_without_redis() {
        return;
    }
    let redis = Redis::start();
    let (a, b, _dir) = two_instances(&redis).await;
    // Ten messages in one second, alternating instances; the eleventh, on either, is refused.
    // The limit is about one second: a run that took longer (a loaded machine) proves nothing
    // either way and is tried again with a fresh user.
    for attempt in 0..5 {
        let ann = a.user(&format!("scale_fast{attempt}")).await;
        let post = |server: &TestServer, i: usize| {
            ann.http
                .post(server.url("/api/rooms/fast/messages"))
                .json(&json!({"text": format!("m{i}")}))
                .send()
        };
        let started = tokio::time::Instant::now();
        for i in 0..10 {
            let server = if i % 2 == 0 { &a } else { &b };
            assert_eq!(post(server, i).await.unwrap().status(), 201, "message {i}");
        }
        let refused = post(&b, 10).await.unwrap();
        if started.elapsed() >= Duration::from_millis(900) {
            continue;
        }
        assert_eq!(refused.status(), 429);
        let body: Value = refused.json().await.unwrap();
        assert_eq!(body["message"], "Slow down.");
        return;
    }
    panic!("eleven messages never fit in one second");
}

/// `PUT`/`DELETE /api/rooms/{room}/members/{who}` on `server` as `user`; expects 204.
async fn change_member(server: &TestServer, user: &common::User, add: bool, room: &str, who: &str) {
    let url = server.url(&format!("/api/rooms/{room}/members/{who}"));
    let req = if add {
        user.http.put(url)
    } else {
        user.http.delete(url)
    };
    assert_eq!(req.send().await.unwrap().status(), 204);
}

#[tokio::test]
async fn a_membership_change_on_one_instance_holds_on_the_others_sockets_within_two_seconds() {
    if common::skip_without_redis() {
        return;
    }
    let redis = Redis::start();
    let (a, b, _dir) = two_instances(&redis).await;
    let owner = a.user("scale_owner").await;
    let guest = b.user("scale_guest").await;
    let res = owner
        .http
        .post(a.url("/api/rooms"))
        .json(&json!({"name": "vault", "private": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);

    // B refuses the guest (and caches that), then A adds them: B lets them in at once.
    let mut on_b = b.ws(&guest.cookie).await;
    on_b.send(Message::text(
        json!({"type": "chat-join", "room": "vault"}).to_string(),
    ))
    .await
    .unwrap();
    assert_eq!(
        next_of(&mut on_b, "chat-error").await["message"],
        "You are not a member of #vault."
    );
    let started = tokio::time::Instant::now();
    change_member(&a, &owner, true, "vault", "scale_guest").await;
    loop {
        on_b.send(Message::text(
            json!({"type": "chat-join", "room": "vault"}).to_string(),
        ))
        .await
        .unwrap();
        let reply = timeout(WAIT, async {
            loop {
                let v = next_of_any(&mut on_b).await;
                if v["type"] == "chat-joined" || v["type"] == "chat-error" {
                    return v;
                }
            }
        })
        .await
        .unwrap();
        if reply["type"] == "chat-joined" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "B still refuses: {reply}"
        );
    }
    let mut stream_b = Sse::open(guest.http.get(b.url("/api/rooms/vault/events"))).await;
    stream_b.next_named("chat-joined").await;

    // Removed on A: B's socket and stream end their room within 2 s.
    let started = tokio::time::Instant::now();
    change_member(&a, &owner, false, "vault", "scale_guest").await;
    assert_eq!(next_of(&mut on_b, "chat-removed").await["room"], "vault");
    stream_b.next_named("removed").await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let res = guest
        .http
        .get(b.url("/api/rooms/vault/messages"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
}

async fn next_of_any(ws: &mut Ws) -> Value {
    loop {
        let frame = timeout(WAIT, ws.next())
            .await
            .expect("a frame in time")
            .expect("the socket stays open")
            .expect("a frame");
        if let Message::Text(t) = frame {
            return serde_json::from_str(t.as_str()).unwrap();
        }
    }
}

#[tokio::test]
async fn the_admin_sees_and_disconnects_connections_on_every_instance() {
    if common::skip_without_redis() {
        return;
    }
    let redis = Redis::start();
    let (a, b, _dir) = two_instances(&redis).await;
    let admin = a.user("admin").await;
    let user = b.user("scale_far").await;
    let mut on_b = b.ws(&user.cookie).await;
    join(&mut on_b, "far", None).await;

    let list: Value = admin
        .http
        .get(a.url("/api/admin/connections"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let theirs: Vec<&Value> = list["connections"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["username"] == "scale_far")
        .collect();
    assert_eq!(theirs.len(), 1, "{list}");
    assert_eq!(theirs[0]["topics"], json!(["room:far", "notifications"]));
    assert_eq!(
        theirs[0]["instance"].as_str(),
        Some(&*b.state.instance),
        "named by the instance holding it"
    );

    let started = tokio::time::Instant::now();
    let res = admin
        .http
        .post(a.url("/api/admin/users/scale_far/disconnect"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let close = close_frame(&mut on_b).await;
    assert_eq!(u16::from(close.code), 1008);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

/// Reads until the server's Close frame (within [`WAIT`]); returns it.
async fn close_frame(ws: &mut Ws) -> tokio_tungstenite::tungstenite::protocol::CloseFrame {
    loop {
        match timeout(WAIT, ws.next()).await.expect("closed in time") {
            Some(Ok(Message::Close(Some(frame)))) => return frame,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}
