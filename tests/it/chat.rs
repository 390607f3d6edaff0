//! Chat through the real server (docs/interface.md, "WebSocket", "Chat over HTTP" and
//! "Notifications"):
//!
//! - the three transports (WebSocket, SSE + `POST`, polling) see each other's messages, with
//!   ids rising 1, 2, 3… within a room;
//! - every bad WebSocket message gets its documented sentence and the socket survives; the rate
//!   limit (`Slow down.` on the socket, 429 `slow_down` on `POST`); the 64 KiB frame limit
//!   (close 1009); a foreign `Origin` (403) and a missing session (401) on the upgrade;
//! - presence: one entry per user however many sockets, no `left` while a socket remains,
//!   `left` only after the grace period, none for a reload, and a peer that vanished without
//!   closing found by the server's pings;
//! - resuming after an id on every transport, with the gap notice when the kept history no
//!   longer reaches back; long polling over SSE (`?once=true`);
//! - notifications to sockets and to the notification stream, replayed after a reconnect;
//! - HTML-looking text round-trips verbatim, and a client that stops reading does not hold up
//!   the room; an event stream that stops reading is cut off at its send limit and counted
//!   (`slowClients` in the live metrics, `GET /metrics`).
//!
//! Run: `cargo test --features ssr --test chat`.

use crate::common;

use std::time::{Duration, Instant};

use common::{error_code, get_json, plain_client, post_json, Got, Sse, TestServer, User};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tidings::protocol::chat::{
    ChatGap, ChatMessage, ChatPresence, MessagePage, Notification, NotificationSent,
    PresenceAction, RoomList, ServerMsg, FRAME_MAX_BYTES, JOIN_FIRST, NOT_JSON, SLOW_DOWN,
    TEXT_MAX_CHARS, UNKNOWN_TYPE,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
    time::timeout,
};
use tokio_tungstenite::{
    connect_async,
    tungstenite::{
        client::IntoClientRequest,
        http::{HeaderValue, Request},
        protocol::frame::coding::CloseCode,
        Error as WsError, Message,
    },
    MaybeTlsStream, WebSocketStream,
};

/// How long any expected message, event or reply may take.
pub(crate) const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Accounts and HTTP
// ---------------------------------------------------------------------------------------------

/// `POST /api/rooms/{room}/messages {"text"}` as `user`.
pub(crate) async fn post(
    server: &TestServer,
    user: &User,
    room: &str,
    text: &str,
) -> reqwest::Response {
    post_json(
        &user.http,
        &server.url(&format!("/api/rooms/{room}/messages")),
        json!({ "text": text }),
    )
    .await
}

/// Posts and expects 201 with the stored message.
pub(crate) async fn post_ok(
    server: &TestServer,
    user: &User,
    room: &str,
    text: &str,
) -> ChatMessage {
    let res = post(server, user, room, text).await;
    let status = res.status();
    let body = res.text().await.unwrap();
    assert_eq!(status, 201, "POST by {}: {body}", user.name);
    serde_json::from_str(&body).expect("the stored chat-message")
}

/// `GET /api/rooms/{room}/messages{query}` as `user`: the raw JSON (to see which keys are
/// present) and the parsed page.
pub(crate) async fn poll(
    server: &TestServer,
    user: &User,
    room: &str,
    query: &str,
) -> (Value, MessagePage) {
    let res = user
        .http
        .get(server.url(&format!("/api/rooms/{room}/messages{query}")))
        .send()
        .await
        .expect("the server answers");
    let status = res.status();
    let body: Value = res.json().await.expect("a JSON body");
    assert_eq!(status, 200, "poll {query}: {body}");
    let page = serde_json::from_value(body.clone()).expect("a message page");
    (body, page)
}

/// How many members `GET /api/rooms` counts in `room` (which must have a message).
async fn room_members(server: &TestServer, user: &User, room: &str) -> u32 {
    let list: RoomList =
        serde_json::from_value(get_json(&user.http, &server.url("/api/rooms")).await)
            .expect("a room list");
    list.rooms
        .iter()
        .find(|r| r.name == room)
        .unwrap_or_else(|| panic!("{room} is listed in {list:?}"))
        .members
}

/// `POST /api/notifications` as `admin`; expects 200.
pub(crate) async fn notify(
    server: &TestServer,
    admin: &User,
    kind: &str,
    message: &str,
) -> NotificationSent {
    let res = post_json(
        &admin.http,
        &server.url("/api/notifications"),
        json!({ "kind": kind, "message": message }),
    )
    .await;
    let status = res.status();
    let body = res.text().await.unwrap();
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("the notification reply")
}

fn ids(messages: &[ChatMessage]) -> Vec<i64> {
    messages.iter().map(|m| m.id).collect()
}

fn is_rfc3339(timestamp: &str) -> bool {
    chrono::DateTime::parse_from_rfc3339(timestamp).is_ok()
}

// ---------------------------------------------------------------------------------------------
// Server messages
// ---------------------------------------------------------------------------------------------

fn server_msg(v: &Value) -> ServerMsg {
    serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("not a server message ({e}): {v}"))
}

/// A `chat-message` (WebSocket message or SSE data, both carry `"type"`).
pub(crate) fn chat_message(v: &Value) -> ChatMessage {
    match server_msg(v) {
        ServerMsg::ChatMessage(m) => m,
        _ => panic!("expected a chat-message, got {v}"),
    }
}

fn presence(v: &Value) -> ChatPresence {
    match server_msg(v) {
        ServerMsg::ChatPresence(p) => p,
        _ => panic!("expected a chat-presence, got {v}"),
    }
}

pub(crate) fn notification(v: &Value) -> Notification {
    match server_msg(v) {
        ServerMsg::Notification(n) => n,
        _ => panic!("expected a notification, got {v}"),
    }
}

/// The presence messages about `name` among `heard`.
fn presence_of<'a>(heard: &'a [Value], name: &str) -> Vec<&'a Value> {
    heard
        .iter()
        .filter(|v| v["type"] == "chat-presence" && v["displayName"] == name)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// WebSocket
// ---------------------------------------------------------------------------------------------

pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The upgrade request for `GET /ws`, with an optional `Cookie` and `Origin`.
fn ws_request(server: &TestServer, cookie: Option<&str>, origin: Option<&str>) -> Request<()> {
    let url = format!("{}/ws", server.base.replacen("http://", "ws://", 1));
    let mut request = url.into_client_request().expect("a WebSocket request");
    let headers = request.headers_mut();
    if let Some(cookie) = cookie {
        headers.insert("cookie", HeaderValue::from_str(cookie).unwrap());
    }
    if let Some(origin) = origin {
        headers.insert("origin", HeaderValue::from_str(origin).unwrap());
    }
    request
}

/// Opens `/ws`; the handshake's error when refused.
async fn try_connect(
    server: &TestServer,
    cookie: Option<&str>,
    origin: Option<&str>,
) -> Result<Ws, WsError> {
    timeout(WAIT, connect_async(ws_request(server, cookie, origin)))
        .await
        .expect("the handshake ends in time")
        .map(|(ws, _)| ws)
}

/// Opens `/ws` as `user` (no `Origin`, like a command-line client).
pub(crate) async fn connect(server: &TestServer, user: &User) -> Ws {
    try_connect(server, Some(&user.cookie), None)
        .await
        .unwrap_or_else(|e| panic!("{} connects: {e}", user.name))
}

/// The status an upgrade was refused with.
fn refused(result: Result<Ws, WsError>) -> u16 {
    match result {
        Ok(_) => panic!("the upgrade was accepted"),
        Err(WsError::Http(res)) => res.status().as_u16(),
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
    }
}

pub(crate) async fn send_json<S>(ws: &mut WebSocketStream<S>, value: Value)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    ws.send(Message::text(value.to_string()))
        .await
        .expect("the frame goes out");
}

/// The next text message, parsed; pings and pongs are skipped. Panics if none comes in time
/// or the connection ends.
pub(crate) async fn next_text<S>(ws: &mut WebSocketStream<S>) -> Value
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        match timeout(WAIT, ws.next()).await.expect("a message in time") {
            Some(Ok(Message::Text(t))) => {
                return serde_json::from_str(t.as_str()).expect("server messages are JSON")
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(other)) => panic!("expected a text message, got {other:?}"),
            Some(Err(e)) => panic!("the connection broke: {e}"),
            None => panic!("the connection ended"),
        }
    }
}

/// The next message of type `kind`, skipping any others (presence, notifications…).
pub(crate) async fn next_of<S>(ws: &mut WebSocketStream<S>, kind: &str) -> Value
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        let v = next_text(ws).await;
        if v["type"] == kind {
            return v;
        }
    }
}

async fn next_message<S>(ws: &mut WebSocketStream<S>) -> ChatMessage
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    chat_message(&next_of(ws, "chat-message").await)
}

async fn next_presence(ws: &mut Ws) -> ChatPresence {
    presence(&next_of(ws, "chat-presence").await)
}

/// Joins `room` and reads the `chat-joined` reply (which must come next, but for a
/// `room-activity`: the hub tells every connection about busy rooms once a second, so one can
/// land between a join and its reply): members, history.
pub(crate) async fn join<S>(
    ws: &mut WebSocketStream<S>,
    room: &str,
    last_message_id: Option<i64>,
) -> (Vec<String>, Vec<ChatMessage>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    send_json(
        ws,
        json!({"type": "chat-join", "room": room, "lastMessageId": last_message_id}),
    )
    .await;
    let mut v = next_text(ws).await;
    while v["type"] == "room-activity" {
        v = next_text(ws).await;
    }
    match server_msg(&v) {
        ServerMsg::ChatJoined {
            room: joined,
            members,
            history,
        } => {
            assert_eq!(joined, room);
            (members, history)
        }
        _ => panic!("expected chat-joined, got {v}"),
    }
}

/// Sends `frame` and expects a `chat-error` as the very next message; returns its sentence.
pub(crate) async fn error_for(ws: &mut Ws, frame: Message) -> String {
    ws.send(frame).await.expect("the frame goes out");
    let v = next_text(ws).await;
    assert_eq!(v["type"], "chat-error", "{v}");
    let sentence = v["message"].as_str().expect("a sentence").to_string();
    assert!(!sentence.is_empty());
    sentence
}

/// Every text message that arrives within `window` (a bounded wait, only used to show that
/// something does *not* arrive). The connection must stay open.
pub(crate) async fn collect_for(ws: &mut Ws, window: Duration) -> Vec<Value> {
    let until = tokio::time::Instant::now() + window;
    let mut heard = Vec::new();
    loop {
        match tokio::time::timeout_at(until, ws.next()).await {
            Err(_) => return heard,
            Ok(Some(Ok(Message::Text(t)))) => {
                heard.push(serde_json::from_str(t.as_str()).expect("server messages are JSON"))
            }
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            Ok(other) => panic!("the connection should stay open, got {other:?}"),
        }
    }
}

/// Reads until the server's Close frame; returns its code.
pub(crate) async fn close_code(ws: &mut Ws) -> u16 {
    loop {
        match timeout(WAIT, ws.next())
            .await
            .expect("the server closes in time")
        {
            Some(Ok(Message::Close(Some(frame)))) => return frame.code.into(),
            Some(Ok(Message::Close(None))) => panic!("closed without a code"),
            Some(Ok(Message::Text(t))) => panic!("expected the close, got {t}"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("the connection broke before a Close frame: {e}"),
            None => panic!("the connection ended without a Close frame"),
        }
    }
}

/// Reads whatever was left in the buffers until the connection ends (the server dropped it).
pub(crate) async fn ends(ws: &mut Ws) {
    loop {
        match timeout(WAIT, ws.next())
            .await
            .expect("the server ended the connection")
        {
            None | Some(Err(_)) => return,
            Some(Ok(_)) => continue,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// SSE
// ---------------------------------------------------------------------------------------------

impl Got {
    /// A `chat-message` event whose SSE id is the message id.
    fn message(&self) -> ChatMessage {
        assert_eq!(self.event, "chat-message", "{self:?}");
        let m = chat_message(&self.data);
        assert_eq!(self.id, m.id.to_string(), "SSE id = message id");
        m
    }
}

/// `GET /api/rooms/{room}/events{query}` as `user`, with an optional `Last-Event-ID`.
pub(crate) fn room_events(
    server: &TestServer,
    user: &User,
    room: &str,
    query: &str,
    last_event_id: Option<&str>,
) -> reqwest::RequestBuilder {
    let mut request = user
        .http
        .get(server.url(&format!("/api/rooms/{room}/events{query}")));
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id);
    }
    request
}

async fn sse_presence(sse: &mut Sse) -> ChatPresence {
    presence(&sse.next_named("chat-presence").await.data)
}

// ---------------------------------------------------------------------------------------------
// Transports
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_message_on_any_transport_reaches_every_transport_with_ids_rising_in_the_room() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let dave = server.user("dave").await;

    // alice and bob on WebSockets, carol on SSE, dave polling.
    let mut a = connect(&server, &alice).await;
    let (members, history) = join(&mut a, "general", None).await;
    assert_eq!(members, ["alice"]);
    assert!(history.is_empty());
    let mut b = connect(&server, &bob).await;
    let (members, _) = join(&mut b, "general", None).await;
    assert_eq!(members, ["alice", "bob"]);
    let mut c = Sse::open(room_events(&server, &carol, "general", "", None)).await;
    let joined = c.next().await.expect("a first event");
    assert_eq!(joined.event, "chat-joined");
    assert_eq!(joined.data["type"], "chat-joined");
    assert_eq!(joined.data["room"], "general");
    assert_eq!(joined.data["members"], json!(["alice", "bob", "carol"]));
    assert_eq!(joined.data["history"], json!([]));
    let (_, page) = poll(&server, &dave, "general", "").await;
    assert!(page.messages.is_empty());
    assert_eq!(page.last_id, 0);
    assert!(page.members.contains(&"dave".to_string()), "{page:?}");

    // 1: over a WebSocket. The sender gets its own message back too.
    send_json(
        &mut a,
        json!({"type": "chat-message", "text": "hello from a socket"}),
    )
    .await;
    let first = next_message(&mut a).await;
    assert_eq!(
        (
            first.id,
            first.room.as_str(),
            first.display_name.as_str(),
            first.text.as_str()
        ),
        (1, "general", "alice", "hello from a socket")
    );
    assert!(is_rfc3339(&first.timestamp), "{}", first.timestamp);
    assert_eq!(next_message(&mut b).await, first);
    assert_eq!(c.next_named("chat-message").await.message(), first);
    let (_, page) = poll(&server, &dave, "general", "?after=0").await;
    assert_eq!(page.messages, std::slice::from_ref(&first));
    assert_eq!(page.last_id, 1);

    // 2: POSTed by the poller; 3: POSTed by the SSE subscriber.
    let second = post_ok(&server, &dave, "general", "hello from a poller").await;
    assert_eq!((second.id, second.display_name.as_str()), (2, "dave"));
    let third = post_ok(&server, &carol, "general", "hello from a stream").await;
    assert_eq!((third.id, third.display_name.as_str()), (3, "carol"));
    for ws in [&mut a, &mut b] {
        assert_eq!(next_message(ws).await, second);
        assert_eq!(next_message(ws).await, third);
    }
    assert_eq!(c.next_named("chat-message").await.message(), second);
    assert_eq!(c.next_named("chat-message").await.message(), third);
    let (_, page) = poll(&server, &dave, "general", "?after=1").await;
    assert_eq!(page.messages, [second.clone(), third.clone()]);
    let (_, page) = poll(&server, &dave, "general", "?after=0").await;
    assert_eq!(ids(&page.messages), [1, 2, 3]);
    assert_eq!(page.last_id, 3);
    assert_eq!(page.members, ["alice", "bob", "carol", "dave"]);

    // The room list agrees; another room counts its own ids from 1.
    assert_eq!(room_members(&server, &bob, "general").await, 4);
    let elsewhere = post_ok(&server, &bob, "random", "elsewhere").await;
    assert_eq!((elsewhere.id, elsewhere.room.as_str()), (1, "random"));
    let list: RoomList =
        serde_json::from_value(get_json(&bob.http, &server.url("/api/rooms")).await).unwrap();
    let last_ids: Vec<(&str, i64)> = list
        .rooms
        .iter()
        .map(|r| (r.name.as_str(), r.last_id))
        .collect();
    assert!(last_ids.contains(&("general", 3)), "{last_ids:?}");
    assert!(last_ids.contains(&("random", 1)), "{last_ids:?}");
}

// ---------------------------------------------------------------------------------------------
// WebSocket errors and limits
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn every_bad_websocket_message_gets_its_sentence_and_the_socket_survives() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let mut ws = connect(&server, &alice).await;

    // Not JSON, in any form; binary frames are never read as JSON.
    for frame in [
        Message::text("hello"),
        Message::text("{\"type\":"),
        Message::text(""),
        Message::binary(vec![1u8, 2, 3]),
        Message::binary(br#"{"type":"chat-join","room":"general"}"#.to_vec()),
    ] {
        let shown = format!("{frame:?}");
        assert_eq!(error_for(&mut ws, frame).await, NOT_JSON, "{shown}");
    }
    // JSON, but no known type.
    for value in [
        json!({"type": "chat-dance"}),
        json!({"text": "no type at all"}),
        json!({"type": 5}),
        json!([1, 2]),
        json!("chat-join"),
    ] {
        assert_eq!(
            error_for(&mut ws, Message::text(value.to_string())).await,
            UNKNOWN_TYPE,
            "{value}"
        );
    }
    // Talking or leaving before joining.
    for value in [
        json!({"type": "chat-message", "text": "anyone?"}),
        json!({"type": "chat-leave"}),
    ] {
        assert_eq!(
            error_for(&mut ws, Message::text(value.to_string())).await,
            JOIN_FIRST,
            "{value}"
        );
    }
    // Bad room names.
    for room in ["General", "two words", "", "a_b", "é", &"x".repeat(33)] {
        let sentence = error_for(
            &mut ws,
            Message::text(json!({"type": "chat-join", "room": room}).to_string()),
        )
        .await;
        assert!(sentence.contains("Room names"), "{room:?}: {sentence}");
    }
    // A known type in the wrong shape.
    let sentence = error_for(
        &mut ws,
        Message::text(json!({"type": "chat-join"}).to_string()),
    )
    .await;
    assert!(sentence.contains("room"), "{sentence}");
    assert_ne!(sentence, UNKNOWN_TYPE);
    let sentence = error_for(
        &mut ws,
        Message::text(json!({"type": "chat-message", "text": 5}).to_string()),
    )
    .await;
    assert_ne!(sentence, UNKNOWN_TYPE);

    // Still open: join, then the text checks.
    let (members, history) = join(&mut ws, "general", None).await;
    assert_eq!(members, ["alice"]);
    assert!(history.is_empty());
    for text in ["", "   \n\t"] {
        let sentence = error_for(
            &mut ws,
            Message::text(json!({"type": "chat-message", "text": text}).to_string()),
        )
        .await;
        assert_eq!(sentence, "A message needs some text.", "{text:?}");
    }
    let too_long = "x".repeat(TEXT_MAX_CHARS + 1);
    let sentence = error_for(
        &mut ws,
        Message::text(json!({"type": "chat-message", "text": too_long}).to_string()),
    )
    .await;
    assert!(
        sentence.contains("Messages are at most 2000 characters"),
        "{sentence}"
    );
    // The limit counts characters, not bytes: 2000 two-byte characters pass.
    let longest = "é".repeat(TEXT_MAX_CHARS);
    send_json(&mut ws, json!({"type": "chat-message", "text": longest})).await;
    let stored = chat_message(&next_text(&mut ws).await);
    assert_eq!((stored.id, stored.text), (1, longest));

    // After leaving, talking needs a join again; a rejoin works and so does a message.
    send_json(&mut ws, json!({"type": "chat-leave"})).await;
    assert_eq!(
        error_for(
            &mut ws,
            Message::text(json!({"type": "chat-message", "text": "hi"}).to_string())
        )
        .await,
        JOIN_FIRST
    );
    let (_, history) = join(&mut ws, "general", None).await;
    assert_eq!(ids(&history), [1]);
    send_json(
        &mut ws,
        json!({"type": "chat-message", "text": "still here"}),
    )
    .await;
    let last = chat_message(&next_text(&mut ws).await);
    assert_eq!((last.id, last.text.as_str()), (2, "still here"));
}

#[tokio::test]
async fn more_than_ten_messages_a_second_get_slow_down_on_the_socket_and_429_on_post() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;

    // Over the WebSocket: 11 at once; each is either stored (and echoed) or refused.
    let mut ws = connect(&server, &alice).await;
    join(&mut ws, "general", None).await;
    for i in 1..=11 {
        send_json(
            &mut ws,
            json!({"type": "chat-message", "text": format!("quick {i}")}),
        )
        .await;
    }
    let (mut stored, mut slowed) = (Vec::new(), 0);
    while stored.len() + slowed < 11 {
        let v = next_text(&mut ws).await;
        match v["type"].as_str() {
            Some("chat-message") => stored.push(chat_message(&v)),
            Some("chat-error") => {
                assert_eq!(v["message"], SLOW_DOWN, "{v}");
                slowed += 1;
            }
            _ => panic!("unexpected {v}"),
        }
    }
    assert!(slowed >= 1, "no Slow down. for 11 messages at once");
    assert_eq!(ids(&stored), (1..=10).collect::<Vec<_>>());
    // The socket is still open.
    assert_eq!(
        error_for(&mut ws, Message::text("still there?")).await,
        NOT_JSON
    );
    let (_, page) = poll(&server, &alice, "general", "").await;
    assert_eq!(ids(&page.messages), (1..=10).collect::<Vec<_>>());

    // Over POST: 11 at once from bob; ten are stored, one is 429 slow_down.
    let (srv, poster) = (&server, &bob);
    let replies =
        futures::future::join_all((1..=11).map(move |i| async move {
            post(srv, poster, "general", &format!("posted {i}")).await
        }))
        .await;
    let (mut created, mut refused) = (0, 0);
    for res in replies {
        match res.status().as_u16() {
            201 => created += 1,
            429 => {
                let body: Value = res.json().await.expect("a JSON error");
                assert_eq!(body["error"], "slow_down", "{body}");
                assert_eq!(body["message"], SLOW_DOWN, "{body}");
                refused += 1;
            }
            other => panic!("POST answered {other}: {}", res.text().await.unwrap()),
        }
    }
    assert_eq!((created, refused), (10, 1));
    // The limit is per user: carol is not held back by bob.
    let hers = post_ok(&server, &carol, "general", "my first").await;
    assert_eq!(hers.id, 21);
    let (_, page) = poll(&server, &alice, "general", "").await;
    assert_eq!(ids(&page.messages), (1..=21).collect::<Vec<_>>());
}

/// A `chat-message` frame of exactly `len` bytes (its text is far too long).
fn frame_of(len: usize) -> String {
    let head = "{\"type\":\"chat-message\",\"text\":\"";
    let tail = "\"}";
    let frame = format!("{head}{}{tail}", "x".repeat(len - head.len() - tail.len()));
    assert_eq!(frame.len(), len);
    frame
}

#[tokio::test]
async fn a_frame_over_64_kib_closes_with_1009_and_one_at_the_limit_is_answered() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let mut ws = connect(&server, &alice).await;
    join(&mut ws, "general", None).await;

    // Exactly 65,536 bytes is within the limit: an ordinary error (the text is too long).
    let sentence = error_for(&mut ws, Message::text(frame_of(FRAME_MAX_BYTES))).await;
    assert!(
        sentence.contains(&format!("at most {TEXT_MAX_CHARS} characters")),
        "{sentence}"
    );
    send_json(
        &mut ws,
        json!({"type": "chat-message", "text": "small again"}),
    )
    .await;
    let m = chat_message(&next_text(&mut ws).await);
    assert_eq!((m.id, m.text.as_str()), (1, "small again"));

    // One byte more closes the connection with 1009 (message too big). The send itself may
    // race the server's close; the Close frame is what counts.
    let _ = ws.send(Message::text(frame_of(FRAME_MAX_BYTES + 1))).await;
    let code = close_code(&mut ws).await;
    assert_eq!(code, u16::from(CloseCode::Size));
    assert_eq!(code, 1009);
}

#[tokio::test]
async fn the_upgrade_refuses_a_foreign_origin_and_a_missing_session() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;

    let evil = try_connect(&server, Some(&alice.cookie), Some("http://evil.example")).await;
    assert_eq!(refused(evil), 403);
    assert_eq!(refused(try_connect(&server, None, None).await), 401);
    let forged = try_connect(&server, Some("tidings_session=forged"), None).await;
    assert_eq!(refused(forged), 401);

    // An allowed origin and the server's own origin are fine.
    for origin in ["http://allowed.example", server.base.as_str()] {
        let mut ws = try_connect(&server, Some(&alice.cookie), Some(origin))
            .await
            .unwrap_or_else(|e| panic!("{origin}: {e}"));
        let (members, _) = join(&mut ws, "general", None).await;
        assert_eq!(members, ["alice"], "{origin}");
    }
}

// ---------------------------------------------------------------------------------------------
// Presence
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn presence_counts_a_user_once_and_left_comes_only_after_the_grace_never_on_reload() {
    // A longer grace than the tests' default, so that a reconnect is surely within it.
    let grace = Duration::from_secs(1);
    let server = TestServer::start_with(move |c| c.chat.presence_grace = grace).await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    // `GET /api/rooms` lists a room from its first message.
    post_ok(&server, &bob, "general", "anyone here?").await;
    let mut b = connect(&server, &bob).await;
    join(&mut b, "general", None).await;

    // bob hears alice arrive; alice does not hear herself.
    let mut a1 = connect(&server, &alice).await;
    let (members, _) = join(&mut a1, "general", None).await;
    assert_eq!(members, ["alice", "bob"]);
    let p = next_presence(&mut b).await;
    assert_eq!(
        (p.action, p.room.as_str(), p.display_name.as_str()),
        (PresenceAction::Joined, "general", "alice")
    );
    assert!(!p.message.is_empty());
    assert!(is_rfc3339(&p.timestamp), "{}", p.timestamp);

    // A second socket (a second tab) counts once.
    let mut a2 = connect(&server, &alice).await;
    let (members, _) = join(&mut a2, "general", None).await;
    assert_eq!(members, ["alice", "bob"]);
    assert_eq!(room_members(&server, &bob, "general").await, 2);

    // Closing one of the two: no `left` (and no second `joined` either).
    a1.close(None).await.expect("a close frame goes out");
    drop(a1);
    let heard = collect_for(&mut b, 2 * grace).await;
    let about_alice = presence_of(&heard, "alice");
    assert!(about_alice.is_empty(), "{about_alice:?}");
    assert_eq!(room_members(&server, &bob, "general").await, 2);

    // Closing the last: `left`, but only once the grace has passed.
    let closed = Instant::now();
    a2.close(None).await.expect("a close frame goes out");
    drop(a2);
    let p = next_presence(&mut b).await;
    let waited = closed.elapsed();
    assert_eq!(
        (p.action, p.display_name.as_str()),
        (PresenceAction::Left, "alice")
    );
    assert!(
        waited >= grace,
        "left after {waited:?}, within the {grace:?} grace"
    );
    assert_eq!(room_members(&server, &bob, "general").await, 1);

    // A reload (close, reconnect at once) is neither a `left` nor a `joined`.
    let mut a3 = connect(&server, &alice).await;
    join(&mut a3, "general", None).await;
    let p = next_presence(&mut b).await;
    assert_eq!(
        (p.action, p.display_name.as_str()),
        (PresenceAction::Joined, "alice")
    );
    a3.close(None).await.expect("a close frame goes out");
    drop(a3);
    let mut a4 = connect(&server, &alice).await;
    let (members, _) = join(&mut a4, "general", None).await;
    assert_eq!(members, ["alice", "bob"]);
    let heard = collect_for(&mut b, 2 * grace).await;
    let about_alice = presence_of(&heard, "alice");
    assert!(about_alice.is_empty(), "a reload flapped: {about_alice:?}");
    assert_eq!(room_members(&server, &bob, "general").await, 2);
}

#[tokio::test]
async fn a_client_that_vanishes_without_closing_is_dropped_by_the_pings_and_announced_as_left() {
    let ping = Duration::from_millis(200);
    let grace = Duration::from_millis(300);
    let server = TestServer::start_with(move |c| {
        c.chat.ping_interval = ping;
        c.chat.presence_grace = grace;
    })
    .await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;

    // bob watches over SSE (no pings to answer there).
    let mut watch = Sse::open(room_events(&server, &bob, "general", "", None)).await;
    assert_eq!(
        watch.next().await.expect("chat-joined").event,
        "chat-joined"
    );

    // alice joins, then her socket is never read again: the server's pings go unanswered,
    // as with a laptop whose lid was shut.
    let mut silent = connect(&server, &alice).await;
    send_json(
        &mut silent,
        json!({"type": "chat-join", "room": "general", "lastMessageId": null}),
    )
    .await;
    let joined_at = Instant::now();
    let p = sse_presence(&mut watch).await;
    assert_eq!(
        (p.action, p.display_name.as_str()),
        (PresenceAction::Joined, "alice")
    );
    let p = sse_presence(&mut watch).await;
    let waited = joined_at.elapsed();
    assert_eq!(
        (p.action, p.display_name.as_str()),
        (PresenceAction::Left, "alice")
    );
    // Quiet for more than two ping intervals, then the grace.
    assert!(
        waited >= 2 * ping + grace,
        "left after only {waited:?}: not from missed pings"
    );
    // The server did drop the connection.
    ends(&mut silent).await;
}

// ---------------------------------------------------------------------------------------------
// Resume and long polling
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn resuming_after_an_id_replays_exactly_what_came_after_on_every_transport() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let mut sent = Vec::new();
    for i in 1..=5 {
        sent.push(post_ok(&server, &alice, "general", &format!("message {i}")).await);
    }
    assert_eq!(ids(&sent), [1, 2, 3, 4, 5]);

    // WebSocket: after 2, after the newest, and fresh (the latest, here all of them).
    let mut ws = connect(&server, &alice).await;
    let (_, history) = join(&mut ws, "general", Some(2)).await;
    assert_eq!(history, sent[2..]);
    let (_, history) = join(&mut ws, "general", Some(5)).await;
    assert!(history.is_empty(), "{history:?}");
    let (_, history) = join(&mut ws, "general", None).await;
    assert_eq!(history, sent);
    // Live messages continue right after the history: no gap notice, no repeat.
    send_json(
        &mut ws,
        json!({"type": "chat-message", "text": "message 6"}),
    )
    .await;
    let sixth = chat_message(&next_text(&mut ws).await);
    assert_eq!(sixth.id, 6);
    sent.push(sixth);

    // SSE: Last-Event-ID as a header or as `?lastEventId=`; none: the latest.
    for (query, header) in [("", Some("3")), ("?lastEventId=3", None)] {
        let mut sse = Sse::open(room_events(&server, &alice, "general", query, header)).await;
        assert_eq!(sse.next().await.expect("chat-joined").event, "chat-joined");
        for want in &sent[3..] {
            let got = sse.next().await.expect("a replayed message");
            assert_eq!(got.message(), *want, "{query} {header:?}");
        }
    }
    let mut sse = Sse::open(room_events(&server, &alice, "general", "", None)).await;
    assert_eq!(sse.next().await.expect("chat-joined").event, "chat-joined");
    for want in &sent {
        assert_eq!(sse.next().await.expect("a message").message(), *want);
    }

    // Polling: after an id, the latest `limit`, and a page of `limit` after an id.
    let (raw, page) = poll(&server, &alice, "general", "?after=3").await;
    assert_eq!(page.messages, sent[3..]);
    assert_eq!(page.last_id, 6);
    assert!(raw.get("gap").is_none(), "{raw}");
    let (_, page) = poll(&server, &alice, "general", "?limit=2").await;
    assert_eq!(page.messages, sent[4..]);
    assert_eq!(page.last_id, 6);
    let (_, page) = poll(&server, &alice, "general", "?after=1&limit=2").await;
    assert_eq!(page.messages, sent[1..3]);
    assert_eq!(page.last_id, 3);
    let (_, page) = poll(&server, &alice, "general", "?after=6").await;
    assert!(page.messages.is_empty());
    assert_eq!(page.last_id, 6);
}

#[tokio::test]
async fn a_resume_older_than_the_kept_history_is_told_of_the_gap_on_every_transport() {
    let server = TestServer::start_with(|c| {
        c.chat.history = 20;
        c.chat.rate_per_second = 1_000;
    })
    .await;
    let alice = server.user("alice").await;
    for i in 1..=30 {
        post_ok(&server, &alice, "general", &format!("message {i}")).await;
    }
    let kept: Vec<i64> = (11..=30).collect();
    let gap = ChatGap {
        room: "general".into(),
        after_id: 2,
        first_available_id: 11,
    };

    // WebSocket: chat-gap before the replay, then chat-joined with what is kept.
    let mut ws = connect(&server, &alice).await;
    send_json(
        &mut ws,
        json!({"type": "chat-join", "room": "general", "lastMessageId": 2}),
    )
    .await;
    let v = next_text(&mut ws).await;
    match server_msg(&v) {
        ServerMsg::ChatGap(g) => assert_eq!(g, gap),
        _ => panic!("expected chat-gap first, got {v}"),
    }
    let v = next_text(&mut ws).await;
    match server_msg(&v) {
        ServerMsg::ChatJoined { history, .. } => assert_eq!(ids(&history), kept),
        _ => panic!("expected chat-joined, got {v}"),
    }

    // SSE: a `gap` event before the replay.
    let mut sse = Sse::open(room_events(&server, &alice, "general", "", Some("2"))).await;
    assert_eq!(sse.next().await.expect("chat-joined").event, "chat-joined");
    let told = sse.next().await.expect("a gap event");
    assert_eq!(told.event, "gap");
    assert_eq!(
        told.data,
        json!({"room": "general", "afterId": 2, "firstAvailableId": 11})
    );
    let mut replayed = Vec::new();
    for _ in &kept {
        replayed.push(sse.next().await.expect("a replayed message").message().id);
    }
    assert_eq!(replayed, kept);

    // Polling: "gap": true, and no "gap" key when nothing was lost.
    let (raw, page) = poll(&server, &alice, "general", "?after=2").await;
    assert_eq!(raw["gap"], true, "{raw}");
    assert!(page.gap);
    assert_eq!(ids(&page.messages), kept);
    assert_eq!(page.last_id, 30);
    let (raw, page) = poll(&server, &alice, "general", "?after=10").await;
    assert!(raw.get("gap").is_none(), "{raw}");
    assert_eq!(ids(&page.messages), kept);

    // Resuming from just before the oldest kept message is no gap, and live messages follow.
    let (_, history) = join(&mut ws, "general", Some(10)).await;
    assert_eq!(ids(&history), kept);
    send_json(
        &mut ws,
        json!({"type": "chat-message", "text": "message 31"}),
    )
    .await;
    let next = next_text(&mut ws).await;
    assert_eq!(chat_message(&next).id, 31, "{next}");
}

#[tokio::test]
async fn long_polling_over_sse_sends_what_is_newer_or_waits_for_the_next_then_ends() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let mut sent = Vec::new();
    for i in 1..=3 {
        sent.push(post_ok(&server, &alice, "general", &format!("message {i}")).await);
    }
    let once = |last: &str| room_events(&server, &alice, "general", "?once=true", Some(last));

    // Something newer: sent at once, then the response ends.
    let got = Sse::open(once("1")).await.rest().await;
    let names: Vec<&str> = got.iter().map(|g| g.event.as_str()).collect();
    assert_eq!(names, ["chat-joined", "chat-message", "chat-message"]);
    let messages: Vec<ChatMessage> = got[1..].iter().map(Got::message).collect();
    assert_eq!(messages, sent[1..]);

    // Nothing newer: it waits, delivers the next message and ends.
    let mut waiting = Sse::open(once("3")).await;
    assert_eq!(
        waiting.next().await.expect("chat-joined").event,
        "chat-joined"
    );
    let fourth = post_ok(&server, &bob, "general", "message 4").await;
    let rest = waiting.rest().await;
    let messages: Vec<ChatMessage> = rest
        .iter()
        .filter(|g| g.event == "chat-message")
        .map(Got::message)
        .collect();
    assert_eq!(messages, [fourth]);
}

// ---------------------------------------------------------------------------------------------
// HTTP input
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_http_chat_routes_refuse_bad_input_with_the_documented_codes() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let long_room = "x".repeat(33);

    // Bad room names, on every route.
    for room in ["General", "a_b", "two%20words", long_room.as_str()] {
        for path in [
            format!("/api/rooms/{room}/events"),
            format!("/api/rooms/{room}/messages"),
        ] {
            let res = alice.http.get(server.url(&path)).send().await.unwrap();
            assert_eq!(res.status(), 400, "{path}");
            assert_eq!(error_code(res).await, "invalid_room", "{path}");
        }
        let res = post(&server, &alice, room, "hi").await;
        assert_eq!(res.status(), 400, "POST {room}");
        assert_eq!(error_code(res).await, "invalid_room");
    }

    // A malformed Last-Event-ID, as a header or a query parameter.
    for (query, header) in [("", Some("soon")), ("?lastEventId=-1", None)] {
        let res = room_events(&server, &alice, "general", query, header)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{query} {header:?}");
        assert_eq!(error_code(res).await, "invalid_parameter");
    }

    // Bad polling parameters.
    for query in [
        "?limit=0",
        "?limit=1001",
        "?limit=x",
        "?after=x",
        "?after=-1",
    ] {
        let res = alice
            .http
            .get(server.url(&format!("/api/rooms/general/messages{query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{query}");
        assert_eq!(error_code(res).await, "invalid_parameter", "{query}");
    }
    poll(&server, &alice, "general", "?limit=1000").await;

    // Bad texts and bodies.
    for text in [
        "".to_string(),
        "  \n ".to_string(),
        "é".repeat(TEXT_MAX_CHARS + 1),
    ] {
        let res = post(&server, &alice, "general", &text).await;
        assert_eq!(res.status(), 400, "{text:?}");
        assert_eq!(error_code(res).await, "invalid_message");
    }
    let url = server.url("/api/rooms/general/messages");
    for body in [json!({"txt": "hi"}), json!({"text": 5}), json!({})] {
        let res = post_json(&alice.http, &url, body.clone()).await;
        assert_eq!(res.status(), 400, "{body}");
        error_code(res).await;
    }
    let longest = post_ok(&server, &alice, "general", &"é".repeat(TEXT_MAX_CHARS)).await;
    assert_eq!(longest.id, 1);

    // No session: 401 everywhere.
    let stranger = plain_client();
    for path in [
        "/api/rooms",
        "/api/rooms/general/messages",
        "/api/rooms/general/events",
    ] {
        let res = stranger.get(server.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 401, "{path}");
    }
    let res = post_json(&stranger, &url, json!({"text": "hi"})).await;
    assert_eq!(res.status(), 401);
}

#[tokio::test]
async fn html_in_a_message_is_stored_and_returned_verbatim() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let mut ws = connect(&server, &bob).await;
    join(&mut ws, "general", None).await;
    let mut sse = Sse::open(room_events(&server, &bob, "general", "", None)).await;
    assert_eq!(sse.next().await.expect("chat-joined").event, "chat-joined");

    let texts = [
        "<img src=x onerror=alert(1)>",
        "<script>alert(\"hi\")</script> & &amp; 'quotes' \\ back\\slash",
        "ünïcødé 🎉 \u{202e}rtl",
    ];
    for text in texts {
        let stored = post_ok(&server, &alice, "general", text).await;
        assert_eq!(stored.text, text);
        assert_eq!(next_message(&mut ws).await.text, text);
        assert_eq!(sse.next_named("chat-message").await.message().text, text);
    }
    let (_, page) = poll(&server, &alice, "general", "?after=0").await;
    let polled: Vec<&str> = page.messages.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(polled, texts);

    // Sent over the socket, the same.
    send_json(&mut ws, json!({"type": "chat-message", "text": texts[0]})).await;
    assert_eq!(next_message(&mut ws).await.text, texts[0]);
}

// ---------------------------------------------------------------------------------------------
// Notifications
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn notifications_reach_sockets_and_streams_and_are_replayed_after_a_reconnect() {
    let server = TestServer::start().await;
    let admin = server.user("admin").await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;

    // alice's socket is in no room; a reply to a bad frame shows its session is running.
    let mut lobby = connect(&server, &alice).await;
    assert_eq!(error_for(&mut lobby, Message::text("sync")).await, NOT_JSON);
    let mut roomed = connect(&server, &bob).await;
    join(&mut roomed, "general", None).await;
    let events_url = server.url("/api/notifications/events");
    // The notification stream needs a session, like every /api/* route.
    let refused = plain_client().get(&events_url).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(error_code(refused).await, "unauthorized");
    let mut stream = Sse::open(alice.http.get(&events_url)).await;

    let sent = notify(&server, &admin, "deploy", "v2 is out").await;
    assert!(sent.sent);
    assert!(sent.connection_count >= 2, "{sent:?}");
    let first = sent.notification;
    assert_eq!(
        (
            first.kind.as_str(),
            first.title.as_str(),
            first.message.as_str()
        ),
        ("deploy", "Deploy", "v2 is out")
    );
    assert!(is_rfc3339(&first.timestamp), "{}", first.timestamp);
    for ws in [&mut lobby, &mut roomed] {
        assert_eq!(notification(&next_of(ws, "notification").await), first);
    }
    let got = stream.next_named("notification").await;
    assert_eq!(got.id, first.id.to_string());
    assert_eq!(notification(&got.data), first);

    // While the stream is away, two more; a reconnect with Last-Event-ID gets both, in order,
    // then the live ones.
    drop(stream);
    let second = notify(&server, &admin, "info", "coffee in the kitchen")
        .await
        .notification;
    let third = notify(&server, &admin, "maintenance", "down at noon")
        .await
        .notification;
    assert!(first.id < second.id && second.id < third.id);
    let mut again = Sse::open(
        alice
            .http
            .get(&events_url)
            .header("last-event-id", first.id.to_string()),
    )
    .await;
    for want in [&second, &third] {
        let got = again.next_named("notification").await;
        assert_eq!(got.id, want.id.to_string());
        assert_eq!(notification(&got.data), *want);
    }
    let fourth = notify(&server, &admin, "info", "back to normal")
        .await
        .notification;
    let got = again.next_named("notification").await;
    assert_eq!(notification(&got.data), fourth);
}

#[tokio::test]
async fn only_admins_send_notifications_and_only_of_the_known_kinds() {
    let server = TestServer::start().await;
    let admin = server.user("admin").await;
    let alice = server.user("alice").await;
    let url = server.url("/api/notifications");
    let good = json!({"kind": "info", "message": "hello"});

    let res = post_json(&alice.http, &url, good.clone()).await;
    assert_eq!(res.status(), 403);
    error_code(res).await;
    let res = post_json(&plain_client(), &url, good.clone()).await;
    assert_eq!(res.status(), 401);

    let res = post_json(&admin.http, &url, json!({"kind": "party", "message": "hi"})).await;
    assert_eq!(res.status(), 400);
    assert_eq!(error_code(res).await, "invalid_notification");
    for body in [
        json!({"kind": "info", "message": "   "}),
        json!({"kind": "info", "message": "x".repeat(501)}),
        json!({"kind": "info"}),
    ] {
        let res = post_json(&admin.http, &url, body.clone()).await;
        assert_eq!(res.status(), 400, "{body}");
        error_code(res).await;
    }
    let res = post_json(&admin.http, &url, good).await;
    assert_eq!(res.status(), 200);
}

// ---------------------------------------------------------------------------------------------
// Backpressure
// ---------------------------------------------------------------------------------------------

/// A connection to `server` with a tiny receive buffer (4 KiB): a client that stops reading
/// fills it, and then the server's send buffer, at once.
async fn tiny_buffered(server: &TestServer) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(server.addr()).await.expect("connects")
}

#[tokio::test]
async fn a_client_that_stops_reading_does_not_hold_up_the_room() {
    // The slow-client limit is far beyond the test, so the stuck socket stays connected (and
    // stuck) throughout: the others must flow regardless.
    let server = TestServer::start_with(|c| {
        c.chat.rate_per_second = 100_000;
        c.server.slow_client = Duration::from_secs(60);
    })
    .await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;

    // bob's socket has a tiny receive buffer and is not read after joining.
    let tcp = tiny_buffered(&server).await;
    let (mut stuck, _) =
        tokio_tungstenite::client_async(ws_request(&server, Some(&bob.cookie), None), tcp)
            .await
            .expect("bob's handshake");
    join(&mut stuck, "general", None).await;

    let mut c = connect(&server, &carol).await;
    join(&mut c, "general", None).await;

    // About 400 kB for bob, far more than his buffers hold, while carol reads along.
    const COUNT: i64 = 200;
    let filler = "x".repeat(TEXT_MAX_CHARS - 8);
    let send = async {
        for i in 1..=COUNT {
            post_ok(&server, &alice, "general", &format!("{i:>8}{filler}")).await;
        }
    };
    let receive = async {
        let mut got = Vec::new();
        while got.len() < COUNT as usize {
            let m = next_message(&mut c).await;
            assert_eq!(m.text.len(), TEXT_MAX_CHARS);
            got.push(m.id);
        }
        got
    };
    let ((), got) = tokio::join!(send, receive);
    assert_eq!(got, (1..=COUNT).collect::<Vec<_>>());
    drop(stuck);
}

/// `tidings_slow_client_disconnects_total{transport="sse"}` from `GET /metrics`.
async fn sse_slow_counter(server: &TestServer) -> u64 {
    let token = format!("Bearer {}", tidings::server::config::TEST_METRICS_TOKEN);
    let scrape = plain_client()
        .get(server.url("/metrics"))
        .header("authorization", token);
    let text = common::send(scrape).await.text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("tidings_slow_client_disconnects_total{transport=\"sse\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no SSE slow-client counter in\n{text}"))
}

/// An event stream of `general` for `user` on a socket with a tiny receive buffer, read up
/// to its first event (and then no more, by the caller). `after_another`: the stream is the
/// connection's second request, after a `GET /healthz` (so hyper writes it, not `sse_h1`).
async fn stuck_stream(
    server: &TestServer,
    user: &User,
    after_another: bool,
) -> (tokio::net::TcpStream, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = server.addr();
    let mut tcp = tiny_buffered(server).await;
    let mut seen = Vec::new();
    let read_until = async |tcp: &mut tokio::net::TcpStream, seen: &mut Vec<u8>, what: &str| {
        while !String::from_utf8_lossy(seen).contains(what) {
            let mut buf = [0u8; 1024];
            let n = timeout(WAIT, tcp.read(&mut buf))
                .await
                .expect("the server answers")
                .unwrap();
            assert!(n > 0, "ended early: {}", String::from_utf8_lossy(seen));
            seen.extend_from_slice(&buf[..n]);
        }
    };
    if after_another {
        let head = format!("GET /healthz HTTP/1.1\r\nhost: {addr}\r\n\r\n");
        tcp.write_all(head.as_bytes()).await.unwrap();
        read_until(&mut tcp, &mut seen, "\r\n\r\nok").await;
        seen.clear();
    }
    let head = format!(
        "GET /api/rooms/general/events HTTP/1.1\r\nhost: {addr}\r\ncookie: {}\r\n\
         accept: text/event-stream\r\n\r\n",
        user.cookie
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    read_until(&mut tcp, &mut seen, "event: chat-joined").await;
    assert!(String::from_utf8_lossy(&seen).starts_with("HTTP/1.1 200"));
    (tcp, seen)
}

/// The ids of the whole `chat-message` events in `bytes` (a cut one at the end is left out).
fn message_ids(bytes: &[u8]) -> Vec<i64> {
    let text = String::from_utf8_lossy(bytes);
    let whole = &text[..text.rfind("\n\n").map_or(0, |i| i + 2)];
    whole
        .split("\n\n")
        .filter(|event| event.contains("event: chat-message\n"))
        .map(|event| {
            let id = event.lines().find_map(|l| l.strip_prefix("id: "));
            id.expect("a message's id").parse().expect("a number")
        })
        .collect()
}

#[tokio::test]
async fn an_event_stream_that_stops_reading_is_cut_off_at_its_send_limit_and_counted() {
    use tokio::io::AsyncReadExt;
    let server = TestServer::start_with(|c| {
        c.chat.rate_per_second = 100_000;
        c.server.slow_client = Duration::from_secs(1);
    })
    .await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let mut metrics = Sse::open(alice.http.get(server.url("/api/metrics/events"))).await;
    let sample: tidings::protocol::metrics::Metrics =
        serde_json::from_value(metrics.next_named("metrics").await.data).unwrap();
    // The counters are the process's: other tests may add to them, never take away.
    let (counted, scraped) = (
        sample.slow_clients.disconnects,
        sse_slow_counter(&server).await,
    );

    // Two streams that stop reading after their first event: bob's is his connection's first
    // request (written by `sse_h1`, the producer inside the body, the cut-off on the write);
    // carol's comes after another request on her connection (written by hyper, the producer
    // on its own task, the cut-off on its send).
    let before = tidings::server::fanout::sse::slow_disconnects();
    let (mut bob_tcp, mut bob_seen) = stuck_stream(&server, &bob, false).await;
    let (mut carol_tcp, mut carol_seen) = stuck_stream(&server, &carol, true).await;

    // alice posts long messages until the server gives up on both (a few hundred kB fill
    // their buffers; then a write, or a send, waits past the limit).
    let filler = "x".repeat(TEXT_MAX_CHARS);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut posted = 0;
    while tidings::server::fanout::sse::slow_disconnects() < before + 2 {
        assert!(
            Instant::now() < deadline,
            "the streams were not cut off after {posted} posts"
        );
        post_ok(&server, &alice, "general", &filler).await;
        posted += 1;
    }
    assert!(
        sse_slow_counter(&server).await >= scraped + 2,
        "GET /metrics counts them"
    );
    // The live metrics show it within a few samples.
    let mut shown = false;
    for _ in 0..15 {
        let sample: tidings::protocol::metrics::Metrics =
            serde_json::from_value(metrics.next_named("metrics").await.data).unwrap();
        if sample.slow_clients.disconnects >= counted + 2 {
            shown = true;
            break;
        }
    }
    assert!(shown, "slowClients.disconnects did not move in 15 samples");

    // Both read again: what was already on its way, then the end of the stream (cut
    // mid-write for bob; after the queued events and the last chunk for carol), not
    // everything alice posted. What arrived is the room's first messages, in order.
    for (who, tcp, seen) in [
        ("bob", &mut bob_tcp, &mut bob_seen),
        ("carol", &mut carol_tcp, &mut carol_seen),
    ] {
        // Until the connection closes (a reset after the data is an end too) or, on a
        // connection hyper keeps open for the next request, the last chunk.
        let ended = async {
            let mut buf = [0u8; 16 * 1024];
            while !seen.ends_with(b"0\r\n\r\n") {
                match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
        };
        timeout(WAIT, ended)
            .await
            .unwrap_or_else(|_| panic!("{who}'s stream ends"));
        let ids = message_ids(seen);
        assert!(
            !ids.is_empty(),
            "{who} got the first messages before he stopped"
        );
        assert_eq!(ids, (1..=ids.len() as i64).collect::<Vec<_>>(), "{who}");
        assert!(
            ids.len() < posted,
            "{} of {posted} messages reached {who}",
            ids.len()
        );
    }
    assert!(
        carol_seen.ends_with(b"0\r\n\r\n"),
        "carol's stream ends cleanly"
    );
}

#[tokio::test]
async fn joins_to_a_socket_that_does_not_read_pin_a_bounded_amount_of_memory() {
    let server = TestServer::start_with(|c| {
        c.server.slow_client = Duration::from_secs(2);
        c.server.limits.streams_per_user = 0;
    })
    .await;
    // A room with 1,000 long messages (about 8 MB of JSON).
    let long = "\u{1F980}".repeat(TEXT_MAX_CHARS);
    let rows: Vec<_> = (0..1000)
        .map(|i| tidings::chat::store::NewChatMessage {
            room: "heavy".into(),
            author: format!("u{i}"),
            text: long.clone(),
            at: 0,
            key: None,
        })
        .collect();
    for chunk in rows.chunks(100) {
        server
            .state
            .store
            .append_chat_messages(chunk, 1000)
            .await
            .unwrap();
    }
    let ann = server.user("ann").await;
    // Ten sockets that never read, each asking for the whole history again and again: without
    // a byte bound each would queue 32 joins of 8 MB.
    const SOCKETS: usize = 10;
    let before = tidings::server::observe::metrics::rss_bytes();
    let slow_before = tidings::server::fanout::ws::slow_disconnects();
    let mut stuck = Vec::new();
    for _ in 0..SOCKETS {
        let tcp = tiny_buffered(&server).await;
        let (mut ws, _) =
            tokio_tungstenite::client_async(ws_request(&server, Some(&ann.cookie), None), tcp)
                .await
                .unwrap();
        let join = json!({"type": "chat-join", "room": "heavy", "lastMessageId": 0}).to_string();
        for _ in 0..40 {
            // The server stops reading once its budget is spent: a send may wait; don't.
            let send = ws.send(Message::text(join.clone()));
            if tokio::time::timeout(Duration::from_millis(200), send)
                .await
                .is_err()
            {
                break;
            }
        }
        stuck.push(ws);
    }
    // Until every one of them has been closed as too slow, the server's memory is watched.
    let mut peak = before;
    let deadline = Instant::now() + Duration::from_secs(30);
    while tidings::server::fanout::ws::slow_disconnects() < slow_before + SOCKETS as u64 {
        peak = peak.max(tidings::server::observe::metrics::rss_bytes());
        assert!(
            Instant::now() < deadline,
            "the stuck sockets were not closed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let grown = peak.saturating_sub(before);
    assert!(
        grown < 150 * 1024 * 1024,
        "{SOCKETS} stuck sockets grew the server by {} MB",
        grown / 1024 / 1024
    );
    // (Nothing is read from a socket while a burst waits for it: what each one pins is one
    // `chat-joined` of at most JOINED_MAX_BYTES and the socket's write buffer.)
    drop(stuck);
}

#[tokio::test]
async fn a_long_resume_arrives_whole_and_in_order_page_by_page() {
    let server = TestServer::start_with(|c| c.chat.rate_per_second = 100_000).await;
    let ann = server.user("ann").await;
    const COUNT: i64 = 450;
    for i in 1..=COUNT {
        post_ok(&server, &ann, "pages", &format!("m{i}")).await;
    }
    // WebSocket: the joined frame's history, then the rest as messages.
    let mut ws = connect(&server, &ann).await;
    let (_, history) = join(&mut ws, "pages", Some(0)).await;
    let mut ids: Vec<i64> = history.iter().map(|m| m.id).collect();
    while (ids.len() as i64) < COUNT {
        ids.push(next_message(&mut ws).await.id);
    }
    assert_eq!(ids, (1..=COUNT).collect::<Vec<_>>());
    // SSE: every message after Last-Event-ID, then live.
    let mut sse = Sse::open(
        ann.http
            .get(server.url("/api/rooms/pages/events"))
            .header("last-event-id", "0"),
    )
    .await;
    let mut got = Vec::new();
    while (got.len() as i64) < COUNT {
        got.push(
            sse.next_named("chat-message")
                .await
                .id
                .parse::<i64>()
                .unwrap(),
        );
    }
    assert_eq!(got, (1..=COUNT).collect::<Vec<_>>());
    post_ok(&server, &ann, "pages", "live").await;
    assert_eq!(sse.next_named("chat-message").await.data["text"], "live");
}
