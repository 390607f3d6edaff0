//! The soak's clients and its history checker (issue 21): Tidings under faults, every delivery
//! recorded and judged afterwards.
//!
//! ```text
//! soak run   --url URL --out DIR [--secs S] [--drain S] [--pid NAME=PIDFILE]… [--faults FILE]
//! soak check DIR [--break drop|duplicate]
//! ```
//!
//! `run` signs up its users (`soak_admin`, whose signup needs `SOAK_SETUP_TOKEN`, and
//! `soak_1` … `soak_5`), makes two public rooms and a private one, checks that a non-member is
//! refused the private one, writes `DIR/started`, and then for S seconds (default 600) runs:
//! - three WebSocket clients in one to three rooms each, posting with `clientId` acks, each
//!   resuming after a drop by rejoining with its last ids, asking `notifications-since` and
//!   sending its unacknowledged messages again (the server keeps them once);
//! - an HTTP poster with `Idempotency-Key` (a retry of an unanswered post sends the same key);
//! - an SSE room stream and a multi-topic `/api/events` stream resuming with
//!   `Last-Event-ID`, a long poller (`?once=true`) and a poller (`?after=`);
//! - jobs, each watched over SSE to its terminal event; exports of the audit log, resumed
//!   with `after=` when cut; a notification to everyone every 2 s;
//! - a cutter that leaves a WebSocket mid-frame and an event stream mid-stream, and a TCP
//!   proxy in front of two subscribers (`ws-2`, `events-2`) that cuts their connections in
//!   the middle of what the server sends, every 10 s.
//!
//! The posters then stop; the subscribers run on until each has everything acknowledged
//! (the drain, at most `--drain` seconds, default 60), and everything recorded is written to
//! `DIR/history.json` with the faults of `--faults` (lines `START_MS END_MS NAME`, from
//! `scripts/soak.sh`'s chaos loop) and one sample a second (deliveries, latency, and the RSS
//! of each `--pid` instance, read from its pid file so a restarted one is followed). Then it
//! checks, as `check` does: `DIR/report.json`, `DIR/soak.svg`, the verdict on stdout, exit 1
//! on a failure.
//!
//! `check --break` first damages the history as a broken server would have: one delivery
//! dropped from a client, or one message delivered twice. The checker must then fail; the
//! integration tests do the same on a small history (`tests/it/soak_check.rs`).

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc, Mutex,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use eventsource_stream::Eventsource;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tidings::protocol::chat::{ChatMessage, ClientMsg, MessagePage, Notification, ServerMsg};
use tokio::{io::AsyncWriteExt, time::timeout};
use tokio_tungstenite::{
    connect_async,
    tungstenite::{client::IntoClientRequest, http::HeaderValue, Error as WsError, Message},
    MaybeTlsStream,
};
use tokio_util::sync::CancellationToken;

#[path = "soak/check.rs"]
mod check;
mod common;

use check::{Client, Export, Failure, Fault, History, Job, Post, Sample, Seen};

const PASSWORD: &str = "soak-password";
const ROOM_A: &str = "soak-a";
const ROOM_B: &str = "soak-b";
const PRIVATE: &str = "soak-p";
/// How long a request may take before it counts as unanswered.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Unacknowledged messages a WebSocket client has out at once.
const IN_FLIGHT: usize = 4;
/// A stream silent this long is treated as dead (the server pings every 15–30 s).
const SILENCE: Duration = Duration::from_secs(45);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as u64
}

fn die(msg: &str) -> ! {
    eprintln!("soak: {msg}");
    std::process::exit(2)
}

/// What every client shares: the stop signals and what is recorded centrally.
struct Shared {
    base: String,
    /// Cancelled when the posters stop (the drain begins).
    posting: CancellationToken,
    /// Cancelled when everything stops.
    stop: CancellationToken,
    posts: Mutex<Vec<Post>>,
    notifications: Mutex<Vec<i64>>,
    errors: Mutex<Vec<Failure>>,
    refusals: Mutex<Vec<Failure>>,
    faults: Mutex<Vec<Fault>>,
    requests: AtomicU64,
    /// Deliveries to WebSocket clients in the current second, and their latencies (µs).
    deliveries: AtomicU64,
    latencies: Mutex<Vec<u64>>,
    /// Per client, per room (or `@notifications`): the newest id it has.
    progress: Mutex<HashMap<String, HashMap<String, i64>>>,
    /// Jobs whose watcher has not seen the end yet.
    jobs_open: AtomicU64,
}

impl Shared {
    fn error(&self, status: u16, what: String) {
        self.errors.lock().unwrap().push(Failure {
            at_ms: now_ms(),
            status,
            what,
        });
    }

    /// Sends `req`; a 5xx or no answer within [`REQUEST_TIMEOUT`] is recorded and `None`.
    async fn send(&self, what: &str, req: reqwest::RequestBuilder) -> Option<reqwest::Response> {
        self.requests.fetch_add(1, Relaxed);
        match timeout(REQUEST_TIMEOUT, req.send()).await {
            Ok(Ok(res)) if res.status().is_server_error() => {
                self.error(res.status().as_u16(), what.to_string());
                None
            }
            Ok(Ok(res)) => Some(res),
            Ok(Err(e)) => {
                self.error(0, format!("{what}: {e}"));
                None
            }
            Err(_) => {
                self.error(0, format!("{what}: no answer in {REQUEST_TIMEOUT:?}"));
                None
            }
        }
    }

    /// A request the server refused with a reason (a 4xx, `Slow down.`): not a failure, but
    /// what was refused was never acknowledged.
    fn refused(&self, what: String) {
        self.refusals.lock().unwrap().push(Failure {
            at_ms: now_ms(),
            status: 0,
            what,
        });
    }

    fn progress(&self, client: &str, key: &str, id: i64) {
        let mut p = self.progress.lock().unwrap();
        let v = p
            .entry(client.to_string())
            .or_default()
            .entry(key.to_string())
            .or_insert(0);
        *v = (*v).max(id);
    }

    fn register(&self, client: &str, keys: &[String]) {
        for k in keys {
            self.progress(client, k, 0);
        }
    }

    /// Every client has every acknowledged message of its rooms and every notification.
    fn caught_up(&self) -> bool {
        let mut newest: HashMap<&str, i64> = HashMap::new();
        let posts = self.posts.lock().unwrap();
        for p in posts.iter() {
            let v = newest.entry(p.room.as_str()).or_insert(0);
            *v = (*v).max(p.id);
        }
        let notified = self
            .notifications
            .lock()
            .unwrap()
            .iter()
            .copied()
            .max()
            .unwrap_or(0);
        newest.insert("@notifications", notified);
        let progress = self.progress.lock().unwrap();
        progress.values().all(|rooms| {
            rooms
                .iter()
                .all(|(room, have)| newest.get(room.as_str()).is_none_or(|want| have >= want))
        }) && self.jobs_open.load(Relaxed) == 0
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

/// A signed-in user: an HTTP client with its cookie, and the cookie for WebSockets.
#[derive(Clone)]
struct User {
    name: String,
    http: reqwest::Client,
    cookie: String,
}

async fn sign_up(base: &str, name: &str, setup_token: Option<&str>) -> User {
    let jar = Arc::new(reqwest::cookie::Jar::default());
    let http = reqwest::Client::builder()
        .cookie_provider(jar.clone())
        .build()
        .expect("an HTTP client");
    let mut body = json!({"username": name, "password": PASSWORD});
    if let Some(token) = setup_token {
        body["setupToken"] = json!(token);
    }
    for attempt in 0.. {
        let res = http
            .post(format!("{base}/api/auth/signup"))
            .json(&body)
            .send()
            .await;
        match res.map(|r| r.status().as_u16()) {
            Ok(201) | Ok(409) => break,
            Ok(503) | Ok(502) | Err(_) if attempt < 20 => {
                tokio::time::sleep(Duration::from_millis(300)).await
            }
            other => die(&format!("signing up {name}: {other:?}")),
        }
    }
    let res = http
        .post(format!("{base}/api/auth/login"))
        .json(&json!({"username": name, "password": PASSWORD}))
        .send()
        .await
        .unwrap_or_else(|e| die(&format!("logging in {name}: {e}")));
    if res.status() != 200 {
        die(&format!("logging in {name}: {}", res.status()));
    }
    use reqwest::cookie::CookieStore;
    let cookie = jar
        .cookies(&base.parse().expect("the base URL"))
        .and_then(|v| v.to_str().ok().map(str::to_string))
        .unwrap_or_else(|| die(&format!("{name} got no session cookie")));
    User {
        name: name.to_string(),
        http,
        cookie,
    }
}

/// The soak text of a message: its token (`client-seq-µs`) after `soak `.
fn token_of(text: &str) -> Option<&str> {
    text.strip_prefix("soak ")
}

/// Records a received chat message for `rec`; WebSocket clients also count it for the sample.
fn on_message(sh: &Shared, rec: &mut Client, m: &ChatMessage, live: bool) {
    let Some(token) = token_of(&m.text) else {
        return;
    };
    rec.seen.push(Seen::Message {
        room: m.room.clone(),
        id: m.id,
        token: token.to_string(),
    });
    sh.progress(&rec.name, &m.room, m.id);
    if live {
        if let Some(sent) = token.rsplit('-').next().and_then(|t| t.parse::<u64>().ok()) {
            sh.deliveries.fetch_add(1, Relaxed);
            sh.latencies
                .lock()
                .unwrap()
                .push(now_us().saturating_sub(sent));
        }
    }
}

/// A ticker that, after a stall (a paused server), goes on at its pace instead of catching up
/// in a burst.
fn every(period: Duration) -> tokio::time::Interval {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick
}

/// What a WebSocket client knows across its connections.
struct WsState {
    rec: Client,
    /// The newest message id per room, to rejoin from.
    last: HashMap<String, i64>,
    last_notification: i64,
    /// clientId → (room, text): sent, not yet acknowledged (sent again on a new connection).
    pending: BTreeMap<String, (String, String)>,
}

impl WsState {
    /// What a new connection sends first: ask for the notifications after the last one,
    /// rejoin every room after its last id, send the unacknowledged messages again.
    fn hello(&self) -> Vec<ClientMsg> {
        let mut hello = vec![ClientMsg::NotificationsSince {
            last_notification_id: self.last_notification,
        }];
        for room in &self.rec.rooms {
            hello.push(ClientMsg::ChatJoin {
                room: room.clone(),
                last_message_id: Some(self.last[room]),
            });
        }
        for (id, (room, text)) in &self.pending {
            hello.push(ClientMsg::ChatMessage {
                text: text.clone(),
                room: Some(room.clone()),
                client_id: Some(id.clone()),
            });
        }
        hello
    }

    fn message(&mut self, sh: &Shared, m: &ChatMessage, live: bool) {
        if let Some(last) = self.last.get_mut(&m.room) {
            *last = (*last).max(m.id);
            on_message(sh, &mut self.rec, m, live);
        }
    }

    fn frame(&mut self, sh: &Shared, msg: ServerMsg) {
        let name = &self.rec.name;
        match msg {
            ServerMsg::ChatJoined { history, .. } => {
                for m in &history {
                    self.message(sh, m, false);
                }
            }
            ServerMsg::ChatMessage(m) => self.message(sh, &m, true),
            ServerMsg::ChatGap(g) => self.rec.seen.push(Seen::Gap {
                room: Some(g.room),
                after: g.after_id,
                first: g.first_available_id,
            }),
            // A repeat's ack (after a resend) finds nothing pending: acknowledged once.
            ServerMsg::ChatAck {
                client_id,
                id,
                room,
            } if self.pending.remove(&client_id).is_some() => {
                sh.posts.lock().unwrap().push(Post {
                    room,
                    id,
                    token: client_id,
                    at_ms: now_ms(),
                    via: "ws".into(),
                });
            }
            ServerMsg::ChatError { message, client_id } => {
                if let Some(id) = client_id {
                    self.pending.remove(&id);
                }
                sh.refused(format!("{name}: chat-error {message}"));
            }
            ServerMsg::Notification(n) => {
                self.rec.seen.push(Seen::Notification { id: n.id });
                self.last_notification = self.last_notification.max(n.id);
                sh.progress(name, "@notifications", n.id);
            }
            ServerMsg::NotificationsGap(g) => self.rec.seen.push(Seen::Gap {
                room: None,
                after: g.after_id,
                first: g.first_available_id,
            }),
            _ => {}
        }
    }
}

/// A WebSocket client in `rooms`, posting `per_sec` messages a second over them (while the
/// posters run), resuming after every drop.
async fn ws_client(
    sh: Arc<Shared>,
    base: String,
    user: User,
    name: String,
    rooms: Vec<String>,
    per_sec: f64,
) -> Client {
    let mut keys = rooms.clone();
    keys.push("@notifications".into());
    sh.register(&name, &keys);
    let mut st = WsState {
        last: rooms.iter().map(|r| (r.clone(), 0)).collect(),
        rec: Client {
            name: name.clone(),
            transport: "ws".into(),
            rooms,
            notifications: true,
            seen: Vec::new(),
        },
        last_notification: 0,
        pending: BTreeMap::new(),
    };
    let mut seq = 0u64;
    let mut tick = every(Duration::from_secs_f64(1.0 / per_sec));
    let mut backoff = Duration::from_millis(100);
    'connection: while !sh.stop.is_cancelled() {
        let mut request = common::ws_url(&base)
            .into_client_request()
            .expect("a WebSocket URL");
        request
            .headers_mut()
            .insert("cookie", HeaderValue::from_str(&user.cookie).unwrap());
        sh.requests.fetch_add(1, Relaxed);
        let failed = match timeout(REQUEST_TIMEOUT, connect_async(request)).await {
            Ok(Ok((ws, _))) => Ok(ws),
            Ok(Err(WsError::Http(res))) if res.status().is_server_error() => {
                Err((res.status().as_u16(), "upgrade refused".to_string()))
            }
            Ok(Err(WsError::Http(res))) => die(&format!(
                "{name}: the WebSocket upgrade was refused: {}",
                res.status()
            )),
            Ok(Err(e)) => Err((0, e.to_string())),
            Err(_) => Err((0, "no answer".to_string())),
        };
        let mut ws = match failed {
            Ok(ws) => ws,
            Err((status, why)) => {
                sh.error(status, format!("{name}: WebSocket connect: {why}"));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        let mut hello_failed = None;
        for m in st.hello() {
            let text = serde_json::to_string(&m).unwrap();
            if let Err(e) = ws.send(Message::Text(text.into())).await {
                hello_failed = Some(format!("send: {e}"));
                break;
            }
        }
        let reason = if let Some(reason) = hello_failed {
            reason
        } else {
            loop {
                tokio::select! {
                    biased;
                    _ = sh.stop.cancelled() => {
                        let _ = ws.close(None).await;
                        break 'connection;
                    }
                    // Like a real client waiting on acks: a few in flight at most (a paused
                    // server is not sent a burst it would refuse as too fast).
                    _ = tick.tick(), if !sh.posting.is_cancelled() && st.pending.len() < IN_FLIGHT => {
                        seq += 1;
                        let room = st.rec.rooms[seq as usize % st.rec.rooms.len()].clone();
                        let token = format!("{name}-{seq}-{}", now_us());
                        let text = format!("soak {token}");
                        st.pending.insert(token.clone(), (room.clone(), text.clone()));
                        let m = ClientMsg::ChatMessage { text, room: Some(room), client_id: Some(token) };
                        let m = serde_json::to_string(&m).unwrap();
                        if let Err(e) = ws.send(Message::Text(m.into())).await {
                            break format!("send: {e}");
                        }
                    }
                    frame = timeout(SILENCE, ws.next()) => match frame {
                        Err(_) => break format!("silent for {SILENCE:?}"),
                        Ok(None) => break "ended".to_string(),
                        Ok(Some(Err(e))) => break e.to_string(),
                        Ok(Some(Ok(Message::Close(f)))) => {
                            break format!("closed: {}", f.map(|f| format!("{} {}", u16::from(f.code), f.reason)).unwrap_or_default());
                        }
                        Ok(Some(Ok(Message::Text(text)))) => {
                            backoff = Duration::from_millis(100);
                            if let Ok(msg) = serde_json::from_str::<ServerMsg>(&text) {
                                st.frame(&sh, msg);
                            }
                        }
                        Ok(Some(Ok(_))) => {}
                    },
                }
            }
        };
        st.rec.seen.push(Seen::Disconnect {
            reason,
            at_ms: now_ms(),
        });
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
    st.rec
}

/// An event-stream client of `path`, resuming with `Last-Event-ID`. `once`: long polling
/// (each response ends after its first messages; the next request goes at once).
async fn sse_client(
    sh: Arc<Shared>,
    base: String,
    user: User,
    rec: Client,
    path: String,
    once: bool,
    first_id: Option<&'static str>,
) -> Client {
    let mut rec = rec;
    let mut keys = rec.rooms.clone();
    if rec.notifications {
        keys.push("@notifications".into());
    }
    sh.register(&rec.name, &keys);
    let mut last_event_id: Option<String> = first_id.map(str::to_string);
    while !sh.stop.is_cancelled() {
        let mut req = user
            .http
            .get(format!("{base}{path}"))
            .header("accept", "text/event-stream");
        if let Some(id) = &last_event_id {
            req = req.header("last-event-id", id.as_str());
        }
        let what = format!("{}: GET {path}", rec.name);
        let Some(res) = sh.send(&what, req).await else {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        if !res.status().is_success() {
            die(&format!("{what}: {}", res.status()));
        }
        let mut events = res.bytes_stream().eventsource();
        let reason = loop {
            tokio::select! {
                _ = sh.stop.cancelled() => return rec,
                ev = timeout(SILENCE, events.next()) => match ev {
                    Err(_) => break format!("silent for {SILENCE:?}"),
                    Ok(None) => break "ended".to_string(),
                    Ok(Some(Err(e))) => break e.to_string(),
                    Ok(Some(Ok(ev))) => {
                        if !ev.id.is_empty() {
                            last_event_id = Some(ev.id.clone());
                        }
                        on_event(&sh, &mut rec, &ev.event, &ev.data);
                    }
                }
            }
        };
        if !(once && reason == "ended") {
            rec.seen.push(Seen::Disconnect {
                reason,
                at_ms: now_ms(),
            });
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    rec
}

fn on_event(sh: &Shared, rec: &mut Client, name: &str, data: &str) {
    match name {
        "chat-message" => {
            if let Ok(m) = serde_json::from_str::<ChatMessage>(data) {
                on_message(sh, rec, &m, false);
            }
        }
        "gap" => {
            let Ok(v) = serde_json::from_str::<Value>(data) else {
                return;
            };
            rec.seen.push(Seen::Gap {
                room: v["room"].as_str().map(str::to_string),
                after: v["afterId"].as_i64().unwrap_or(0),
                first: v["firstAvailableId"].as_i64().unwrap_or(0),
            });
        }
        "notification" => {
            if let Ok(n) = serde_json::from_str::<Notification>(data) {
                rec.seen.push(Seen::Notification { id: n.id });
                sh.progress(&rec.name, "@notifications", n.id);
            }
        }
        _ => {}
    }
}

/// Polls `room` with `?after=` every half second.
async fn poller(sh: Arc<Shared>, user: User, name: String, room: String) -> Client {
    let mut rec = Client {
        name: name.clone(),
        transport: "poll".into(),
        rooms: vec![room.clone()],
        notifications: false,
        seen: Vec::new(),
    };
    sh.register(&name, &rec.rooms);
    let mut after = 0i64;
    let mut tick = every(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = sh.stop.cancelled() => return rec,
            _ = tick.tick() => {}
        }
        let url = sh.url(&format!(
            "/api/rooms/{room}/messages?after={after}&limit=100"
        ));
        let Some(res) = sh.send(&format!("{name}: poll"), user.http.get(url)).await else {
            continue;
        };
        let Ok(page) = res.json::<MessagePage>().await else {
            continue;
        };
        if page.gap {
            rec.seen.push(Seen::Gap {
                room: Some(room.clone()),
                after,
                first: page.messages.first().map_or(page.last_id + 1, |m| m.id),
            });
        }
        for m in &page.messages {
            on_message(&sh, &mut rec, m, false);
            after = after.max(m.id);
        }
        if page.messages.is_empty() && page.last_id > after {
            after = page.last_id;
        }
    }
}

/// Posts over HTTP to `rooms` in turn, one a second; an unanswered post is retried with the
/// same `Idempotency-Key`.
async fn http_poster(sh: Arc<Shared>, user: User, rooms: Vec<String>) {
    let mut tick = every(Duration::from_secs(1));
    let mut seq = 0u64;
    loop {
        tokio::select! {
            _ = sh.posting.cancelled() => return,
            _ = tick.tick() => {}
        }
        seq += 1;
        let room = &rooms[seq as usize % rooms.len()];
        let token = format!("{}-http-{seq}-{}", user.name, now_us());
        // Retried until answered, for at most a minute (a fault that never heals must not
        // keep the run from ending).
        let give_up = tokio::time::Instant::now() + Duration::from_secs(60);
        while !sh.stop.is_cancelled() && tokio::time::Instant::now() < give_up {
            let req = user
                .http
                .post(sh.url(&format!("/api/rooms/{room}/messages")))
                .header("idempotency-key", token.as_str())
                .json(&json!({"text": format!("soak {token}")}));
            let Some(res) = sh.send("http post", req).await else {
                tokio::time::sleep(Duration::from_millis(300)).await;
                continue;
            };
            if res.status() == 201 {
                if let Ok(m) = res.json::<ChatMessage>().await {
                    sh.posts.lock().unwrap().push(Post {
                        room: m.room,
                        id: m.id,
                        token: token.clone(),
                        at_ms: now_ms(),
                        via: "http".into(),
                    });
                }
            } else {
                sh.refused(format!("http post: {}", res.status()));
            }
            break;
        }
    }
}

/// Starts a short job every 3 s and watches each to its terminal event.
async fn jobs(sh: Arc<Shared>, user: User) -> Vec<Job> {
    let mut watchers = Vec::new();
    let mut tick = every(Duration::from_secs(3));
    loop {
        tokio::select! {
            _ = sh.posting.cancelled() => break,
            _ = tick.tick() => {}
        }
        let req = user
            .http
            .post(sh.url("/api/jobs"))
            .json(&json!({"kind": "demo", "steps": 8, "stepMs": 150}));
        let Some(res) = sh.send("create job", req).await else {
            continue;
        };
        if res.status() != 201 {
            sh.refused(format!("create job: {}", res.status()));
            continue;
        }
        let Ok(v) = res.json::<Value>().await else {
            continue;
        };
        let id = v["id"].as_i64().unwrap_or(0);
        sh.jobs_open.fetch_add(1, Relaxed);
        watchers.push(tokio::spawn(watch_job(sh.clone(), user.clone(), id)));
    }
    let mut out = Vec::new();
    for w in watchers {
        out.push(w.await.expect("a job watcher"));
    }
    out
}

async fn watch_job(sh: Arc<Shared>, user: User, id: i64) -> Job {
    let mut job = Job {
        id,
        events: Vec::new(),
    };
    let path = format!("/api/jobs/{id}/events");
    'watch: while !sh.stop.is_cancelled() {
        let mut req = user.http.get(sh.url(&path));
        if let Some((last, _)) = job.events.last() {
            req = req.header("last-event-id", last.to_string());
        }
        let Some(res) = sh.send("watch job", req).await else {
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        };
        if res.status() == 204 {
            break;
        }
        let mut events = res.bytes_stream().eventsource();
        loop {
            tokio::select! {
                _ = sh.stop.cancelled() => break 'watch,
                ev = timeout(SILENCE, events.next()) => match ev {
                    Ok(Some(Ok(ev))) => {
                        if let Ok(n) = ev.id.parse::<i64>() {
                            job.events.push((n, ev.event.clone()));
                        }
                        if matches!(ev.event.as_str(), "complete" | "failed" | "cancelled") {
                            break 'watch;
                        }
                    }
                    _ => break,
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    sh.jobs_open.fetch_sub(1, Relaxed);
    job
}

/// A notification to everyone every 2 s.
async fn notifier(sh: Arc<Shared>, admin: User) {
    let mut tick = every(Duration::from_secs(2));
    let mut n = 0;
    loop {
        tokio::select! {
            _ = sh.posting.cancelled() => return,
            _ = tick.tick() => {}
        }
        n += 1;
        let req = admin
            .http
            .post(sh.url("/api/notifications"))
            .json(&json!({"kind": "info", "message": format!("soak notification {n}")}));
        let Some(res) = sh.send("notify", req).await else {
            continue;
        };
        if let Ok(v) = res.json::<Value>().await {
            if let Some(id) = v["notification"]["id"].as_i64() {
                sh.notifications.lock().unwrap().push(id);
            }
        }
    }
}

/// Exports the whole audit log every 8 s, resuming with `after=` when a stream breaks.
async fn exporter(sh: Arc<Shared>, admin: User) -> Vec<Export> {
    let mut out = Vec::new();
    let mut tick = every(Duration::from_secs(8));
    loop {
        tokio::select! {
            _ = sh.posting.cancelled() => return out,
            _ = tick.tick() => {}
        }
        let mut e = Export {
            at_ms: now_ms(),
            ..Export::default()
        };
        'stream: while e.resumed <= 20 && !sh.stop.is_cancelled() {
            let url = sh.url(&format!(
                "/api/audit/export?after={}&batch=500&flushEvery=500&delayMs=5",
                e.last_id
            ));
            let Some(res) = sh.send("export", admin.http.get(url)).await else {
                e.resumed += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            };
            let mut body = res.bytes_stream();
            let mut line = Vec::new();
            loop {
                match timeout(SILENCE, body.next()).await {
                    Ok(Some(Ok(bytes))) => {
                        for &b in bytes.iter() {
                            if b != b'\n' {
                                line.push(b);
                                continue;
                            }
                            let id = serde_json::from_slice::<Value>(&line)
                                .ok()
                                .and_then(|v| v["id"].as_i64());
                            line.clear();
                            match id {
                                Some(id) if id > e.last_id => {
                                    e.last_id = id;
                                    e.rows += 1;
                                }
                                Some(id) => {
                                    e.problem =
                                        Some(format!("row {id} came after row {}", e.last_id));
                                    break 'stream;
                                }
                                None => {
                                    e.problem = Some("a line that is not a row".into());
                                    break 'stream;
                                }
                            }
                        }
                    }
                    Ok(None) if line.is_empty() => {
                        e.finished = true;
                        break 'stream;
                    }
                    _ => {
                        // Cut mid-stream (perhaps mid-line): resume after the last whole row.
                        e.resumed += 1;
                        continue 'stream;
                    }
                }
            }
        }
        out.push(e);
    }
}

/// Every 5 s: a WebSocket left after half a frame, then an event stream left mid-stream.
async fn cutter(sh: Arc<Shared>, user: User) {
    let mut tick = every(Duration::from_secs(5));
    let mut n = 0u32;
    loop {
        tokio::select! {
            _ = sh.posting.cancelled() => return,
            _ = tick.tick() => {}
        }
        n += 1;
        let start = now_ms();
        if n % 2 == 1 {
            let mut request = common::ws_url(&sh.base).into_client_request().unwrap();
            request
                .headers_mut()
                .insert("cookie", HeaderValue::from_str(&user.cookie).unwrap());
            let Ok(Ok((mut ws, _))) = timeout(REQUEST_TIMEOUT, connect_async(request)).await else {
                continue;
            };
            let join = serde_json::to_string(&ClientMsg::ChatJoin {
                room: ROOM_A.into(),
                last_message_id: None,
            })
            .unwrap();
            let _ = ws.send(Message::Text(join.into())).await;
            // A masked text frame announcing 100 bytes, and only 10 of them.
            if let MaybeTlsStream::Plain(tcp) = ws.get_mut() {
                let mut frame = vec![0x81, 0x80 | 100, 1, 2, 3, 4];
                frame.extend_from_slice(b"{\"type\":\"c");
                let _ = tcp.write_all(&frame).await;
            }
            drop(ws);
            sh.faults.lock().unwrap().push(Fault {
                start_ms: start,
                end_ms: now_ms(),
                name: "cut ws mid-frame".into(),
            });
        } else {
            let req = user
                .http
                .get(sh.url(&format!("/api/rooms/{ROOM_A}/events")));
            if let Some(res) = sh.send("cut sse", req).await {
                let mut body = res.bytes_stream();
                let _ = timeout(Duration::from_secs(2), body.next()).await;
            }
            sh.faults.lock().unwrap().push(Fault {
                start_ms: start,
                end_ms: now_ms(),
                name: "cut sse mid-stream".into(),
            });
        }
    }
}

/// A TCP proxy in front of the server for some clients: every 10 s (while the posters run),
/// each connection through it is cut in the middle of the next bytes the server sends (half
/// of them forwarded, then the connection closed), so a WebSocket frame or an event arrives
/// cut short and the client must resume without losing or doubling anything. Returns the
/// base URL to use instead of the server's.
async fn cutting_proxy(sh: Arc<Shared>, base: &str) -> String {
    let upstream = base
        .strip_prefix("http://")
        .unwrap_or_else(|| die("the soak runs over http://"))
        .to_string();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port for the cutting proxy");
    let addr = listener.local_addr().expect("its address");
    let (cut, _) = tokio::sync::watch::channel(0u64);
    let cut = Arc::new(cut);
    let ticker = cut.clone();
    let sh2 = sh.clone();
    tokio::spawn(async move {
        let mut tick = every(Duration::from_secs(10));
        tick.tick().await;
        loop {
            tokio::select! {
                _ = sh2.posting.cancelled() => return,
                _ = tick.tick() => {}
            }
            let at = now_ms();
            ticker.send_modify(|g| *g += 1);
            sh2.faults.lock().unwrap().push(Fault {
                start_ms: at,
                end_ms: at,
                name: "cut proxy mid-frame".into(),
            });
        }
    });
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                continue;
            };
            let upstream = upstream.clone();
            let cut = cut.subscribe();
            tokio::spawn(async move {
                if let Ok(server) = tokio::net::TcpStream::connect(&upstream).await {
                    pipe(client, server, cut).await;
                }
            });
        }
    });
    format!("http://{addr}")
}

/// Copies both ways until either side ends, or a cut is asked for: then half of the
/// server's next bytes go through and both sides are closed.
async fn pipe(
    client: tokio::net::TcpStream,
    server: tokio::net::TcpStream,
    mut cut: tokio::sync::watch::Receiver<u64>,
) {
    use tokio::io::AsyncReadExt;
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let up = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
    });
    cut.borrow_and_update();
    let mut cutting = false;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            read = server_read.read(&mut buf) => {
                let n = match read {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                if cutting {
                    let _ = client_write.write_all(&buf[..n.div_ceil(2)]).await;
                    break;
                }
                if client_write.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
            changed = cut.changed(), if !cutting => {
                if changed.is_err() {
                    break;
                }
                cutting = true;
            }
        }
    }
    up.abort();
}

/// One sample a second until everything stops.
async fn sampler(sh: Arc<Shared>, pids: Vec<(String, String)>) -> Vec<Sample> {
    let mut out = Vec::new();
    let mut tick = every(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = sh.stop.cancelled() => return out,
            _ = tick.tick() => {}
        }
        let mut lat = std::mem::take(&mut *sh.latencies.lock().unwrap());
        lat.sort_unstable();
        let mut s = Sample {
            at_ms: now_ms(),
            deliveries: sh.deliveries.swap(0, Relaxed),
            p99_ms: (!lat.is_empty()).then(|| common::percentile(&lat, 0.99) as f64 / 1000.0),
            rss_kb: BTreeMap::new(),
        };
        for (name, file) in &pids {
            let Ok(pid) = std::fs::read_to_string(file) else {
                continue;
            };
            let pid = pid.trim();
            if let (Ok(n), Some(kb)) = (pid.parse::<u32>(), common::status_kb(pid, "VmRSS")) {
                s.rss_kb.insert(name.clone(), (n, kb));
            }
        }
        out.push(s);
    }
}

struct Opts {
    url: String,
    out: std::path::PathBuf,
    secs: u64,
    drain: u64,
    pids: Vec<(String, String)>,
    faults: Option<String>,
}

async fn run(o: Opts) -> History {
    let setup_token = std::env::var("SOAK_SETUP_TOKEN")
        .unwrap_or_else(|_| die("SOAK_SETUP_TOKEN (the servers' TIDINGS_SETUP_TOKEN) is needed"));
    let base = o.url.trim_end_matches('/').to_string();
    let admin = sign_up(&base, "soak_admin", Some(&setup_token)).await;
    let mut users = Vec::new();
    for i in 1..=5 {
        users.push(sign_up(&base, &format!("soak_{i}"), None).await);
    }
    let [u1, u2, u3, u4, u5] = <[User; 5]>::try_from(users).ok().unwrap();
    // The private room: soak_1 owns it, soak_2 and soak_3 are members, soak_5 is not.
    let res = u1
        .http
        .post(format!("{base}/api/rooms"))
        .json(&json!({"name": PRIVATE, "private": true}))
        .send()
        .await
        .unwrap_or_else(|e| die(&format!("creating #{PRIVATE}: {e}")));
    if !matches!(res.status().as_u16(), 201 | 409) {
        die(&format!("creating #{PRIVATE}: {}", res.status()));
    }
    for member in [&u2, &u3] {
        let res = u1
            .http
            .put(format!(
                "{base}/api/rooms/{PRIVATE}/members/{}",
                member.name
            ))
            .send()
            .await
            .unwrap_or_else(|e| die(&format!("adding {}: {e}", member.name)));
        if res.status() != 204 {
            die(&format!(
                "adding {} to #{PRIVATE}: {}",
                member.name,
                res.status()
            ));
        }
    }
    let res = u5
        .http
        .get(format!("{base}/api/rooms/{PRIVATE}/messages"))
        .send()
        .await
        .unwrap_or_else(|e| die(&format!("reading #{PRIVATE}: {e}")));
    if res.status() != 403 {
        die(&format!(
            "a non-member read the private room #{PRIVATE}: {}",
            res.status()
        ));
    }

    let sh = Arc::new(Shared {
        base: base.clone(),
        posting: CancellationToken::new(),
        stop: CancellationToken::new(),
        posts: Mutex::default(),
        notifications: Mutex::default(),
        errors: Mutex::default(),
        refusals: Mutex::default(),
        faults: Mutex::default(),
        requests: AtomicU64::new(0),
        deliveries: AtomicU64::new(0),
        latencies: Mutex::default(),
        progress: Mutex::default(),
        jobs_open: AtomicU64::new(0),
    });
    let rooms = |r: &[&str]| r.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let client = |name: &str, transport: &str, r: &[&str], notifications: bool| Client {
        name: name.into(),
        transport: transport.into(),
        rooms: rooms(r),
        notifications,
        seen: Vec::new(),
    };
    // ws-2 and events-2 go through a proxy that cuts them mid-frame every 10 s.
    let cut = cutting_proxy(sh.clone(), &base).await;
    let mut subscribers = Vec::new();
    subscribers.push(tokio::spawn(ws_client(
        sh.clone(),
        base.clone(),
        u1.clone(),
        "ws-1".into(),
        rooms(&[ROOM_A, ROOM_B, PRIVATE]),
        2.0,
    )));
    subscribers.push(tokio::spawn(ws_client(
        sh.clone(),
        cut.clone(),
        u2.clone(),
        "ws-2".into(),
        rooms(&[ROOM_A, PRIVATE]),
        2.0,
    )));
    subscribers.push(tokio::spawn(ws_client(
        sh.clone(),
        base.clone(),
        u3.clone(),
        "ws-3".into(),
        rooms(&[ROOM_B, PRIVATE]),
        2.0,
    )));
    subscribers.push(tokio::spawn(sse_client(
        sh.clone(),
        base.clone(),
        u4.clone(),
        client("sse-4", "sse", &[ROOM_A], false),
        format!("/api/rooms/{ROOM_A}/events"),
        false,
        Some("0"),
    )));
    subscribers.push(tokio::spawn(sse_client(
        sh.clone(),
        cut.clone(),
        u2.clone(),
        client("events-2", "events", &[ROOM_A, PRIVATE], true),
        format!(
            "/api/events?topic=room:{ROOM_A}&topic=room:{PRIVATE}&topic=notifications\
             &start=0:room:{ROOM_A}&start=0:room:{PRIVATE}&start=0:notifications"
        ),
        false,
        None,
    )));
    subscribers.push(tokio::spawn(sse_client(
        sh.clone(),
        base.clone(),
        u5.clone(),
        client("long-poll-5", "long-poll", &[ROOM_B], false),
        format!("/api/rooms/{ROOM_B}/events?once=true"),
        true,
        Some("0"),
    )));
    subscribers.push(tokio::spawn(poller(
        sh.clone(),
        u3.clone(),
        "poll-3".into(),
        PRIVATE.into(),
    )));
    let poster = tokio::spawn(http_poster(
        sh.clone(),
        u4.clone(),
        rooms(&[ROOM_A, ROOM_B]),
    ));
    let jobs = tokio::spawn(jobs(sh.clone(), u5.clone()));
    let notifier = tokio::spawn(notifier(sh.clone(), admin.clone()));
    let exporter = tokio::spawn(exporter(sh.clone(), admin.clone()));
    let cutter = tokio::spawn(cutter(sh.clone(), u1.clone()));
    let sampler = tokio::spawn(sampler(sh.clone(), o.pids.clone()));

    let started_ms = now_ms();
    std::fs::write(o.out.join("started"), started_ms.to_string()).expect("writing started");
    eprintln!("soak: running for {} s against {base}", o.secs);
    for s in 0..o.secs {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if (s + 1) % 10 == 0 {
            eprintln!(
                "soak: {} s, {} messages acknowledged, {} errors",
                s + 1,
                sh.posts.lock().unwrap().len(),
                sh.errors.lock().unwrap().len()
            );
        }
    }
    sh.posting.cancel();
    let stopped_ms = now_ms();
    let _ = poster.await;
    let _ = notifier.await;
    let _ = cutter.await;
    let exports = exporter.await.expect("the exporter");
    eprintln!("soak: posting stopped; draining (at most {} s)", o.drain);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(o.drain);
    while !sh.caught_up() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!(
        "soak: drained in {:.1} s{}",
        (now_ms() - stopped_ms) as f64 / 1000.0,
        if sh.caught_up() {
            ""
        } else {
            " (not caught up: the check will say where)"
        }
    );
    sh.stop.cancel();
    let mut clients = Vec::new();
    for s in subscribers {
        clients.push(s.await.expect("a subscriber"));
    }
    let jobs = jobs.await.expect("the jobs");
    let samples = sampler.await.expect("the sampler");
    let mut faults = std::mem::take(&mut *sh.faults.lock().unwrap());
    if let Some(file) = &o.faults {
        for line in std::fs::read_to_string(file).unwrap_or_default().lines() {
            let mut parts = line.splitn(3, ' ');
            if let (Some(a), Some(b), Some(name)) = (parts.next(), parts.next(), parts.next()) {
                if let (Ok(a), Ok(b)) = (a.parse(), b.parse()) {
                    faults.push(Fault {
                        start_ms: a,
                        end_ms: b,
                        name: name.to_string(),
                    });
                }
            }
        }
    }
    faults.sort_by_key(|f| f.start_ms);
    let posts = std::mem::take(&mut *sh.posts.lock().unwrap());
    let notifications = std::mem::take(&mut *sh.notifications.lock().unwrap());
    let errors = std::mem::take(&mut *sh.errors.lock().unwrap());
    let refused = std::mem::take(&mut *sh.refusals.lock().unwrap());
    History {
        started_ms,
        ended_ms: now_ms(),
        stopped_ms,
        posts,
        clients,
        jobs,
        notifications,
        exports,
        requests: sh.requests.load(Relaxed),
        errors,
        refused,
        faults,
        samples,
    }
}

/// Damages `h` as a broken server would have (`check --break`).
fn damage(h: &mut History, how: &str) {
    let acked: std::collections::HashSet<(String, i64)> =
        h.posts.iter().map(|p| (p.room.clone(), p.id)).collect();
    for c in h.clients.iter_mut() {
        let at = c.seen.iter().position(
            |s| matches!(s, Seen::Message { room, id, .. } if acked.contains(&(room.clone(), *id))),
        );
        if let Some(at) = at {
            let s = c.seen[at].clone();
            match how {
                "drop" => {
                    c.seen.remove(at);
                }
                "duplicate" => c.seen.insert(at + 1, s.clone()),
                _ => die("--break takes drop or duplicate"),
            }
            eprintln!("soak: damaged the history: {how} {s:?} at {}", c.name);
            return;
        }
    }
    die("nothing to damage: no client received an acknowledged message");
}

/// Writes the history, the report and the picture into `dir`; prints the verdict.
fn judge(h: &History, dir: &std::path::Path, write: bool) -> bool {
    let report = check::check(h);
    print!("{}", check::summary(&report));
    if !write {
        return report.ok;
    }
    std::fs::write(
        dir.join("report.json"),
        serde_json::to_vec_pretty(&report).unwrap(),
    )
    .expect("writing report.json");
    std::fs::write(dir.join("soak.svg"), check::svg(h)).expect("writing soak.svg");
    println!(
        "report: {}, picture: {}",
        dir.join("report.json").display(),
        dir.join("soak.svg").display()
    );
    report.ok
}

fn main() {
    let mut args = std::env::args().skip(1).collect::<Vec<_>>();
    // `cargo bench` passes --bench; nothing else here takes it.
    args.retain(|a| a != "--bench");
    let usage = "usage: soak run --url URL --out DIR [--secs S] [--drain S] [--pid NAME=PIDFILE]… [--faults FILE]\n       soak check DIR [--break drop|duplicate]";
    let Some(mode) = args.first().cloned() else {
        die(usage)
    };
    match mode.as_str() {
        "check" => {
            let dir = std::path::PathBuf::from(args.get(1).unwrap_or_else(|| die(usage)));
            let text = std::fs::read_to_string(dir.join("history.json"))
                .unwrap_or_else(|e| die(&format!("reading {}/history.json: {e}", dir.display())));
            let mut h: History =
                serde_json::from_str(&text).unwrap_or_else(|e| die(&format!("history.json: {e}")));
            // A damaged history's verdict is printed only: the run's own files stay.
            let damaged = args.get(2).map(String::as_str) == Some("--break");
            if damaged {
                damage(&mut h, args.get(3).map_or("", String::as_str));
            }
            std::process::exit(if judge(&h, &dir, !damaged) { 0 } else { 1 });
        }
        "run" => {
            let mut o = Opts {
                url: String::new(),
                out: std::path::PathBuf::new(),
                secs: 600,
                drain: 60,
                pids: Vec::new(),
                faults: None,
            };
            let mut it = args[1..].iter();
            while let Some(flag) = it.next() {
                let value = it
                    .next()
                    .unwrap_or_else(|| die(&format!("{flag} needs a value")))
                    .clone();
                let number = |v: &str| {
                    v.parse::<u64>()
                        .unwrap_or_else(|_| die(&format!("{flag}: {v} is not a number")))
                };
                match flag.as_str() {
                    "--url" => o.url = value,
                    "--out" => o.out = value.into(),
                    "--secs" => o.secs = number(&value),
                    "--drain" => o.drain = number(&value),
                    "--faults" => o.faults = Some(value),
                    "--pid" => {
                        let (name, file) = value
                            .split_once('=')
                            .unwrap_or_else(|| die("--pid takes NAME=PIDFILE"));
                        o.pids.push((name.to_string(), file.to_string()));
                    }
                    _ => die(&format!("unknown option {flag}\n{usage}")),
                }
            }
            if o.url.is_empty() || o.out.as_os_str().is_empty() {
                die(usage);
            }
            std::fs::create_dir_all(&o.out).expect("creating --out");
            let out = o.out.clone();
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a runtime");
            let h = rt.block_on(run(o));
            std::fs::write(out.join("history.json"), serde_json::to_vec(&h).unwrap())
                .expect("writing history.json");
            rt.shutdown_timeout(Duration::from_secs(1));
            std::process::exit(if judge(&h, &out, true) { 0 } else { 1 });
        }
        _ => die(usage),
    }
}
