//! The `/chat` page's browser half: one room followed over one of three transports, with
//! reconnect and resume.
//!
//! A [`Link`] opens the chosen transport and keeps it open until dropped:
//! - **WebSocket** (`/ws`): joins with `lastMessageId`, so a reconnect resumes exactly after
//!   the last message shown; sends over the socket.
//! - **SSE + POST**: the shared [`EventStream`] on `/api/rooms/{room}/events?lastEventId=…`
//!   (the browser reconnects by itself after a drop and sends `Last-Event-ID`); sends with
//!   `POST`.
//! - **Polling**: `GET /api/rooms/{room}/messages?after=…` every second; sends with `POST`.
//!
//! Sending never loses a message silently: each gets a `clientId` and is shown as pending
//! ([`News::Pending`]) until the server says it is stored (`chat-ack` on the socket, the 201
//! of a `POST` with the id as `Idempotency-Key`). Unacknowledged messages are kept across a
//! reconnect and sent again with the same id (so the server stores each once); a refusal
//! (too long, not a member, slow down) drops it and says why.
//!
//! Whatever the transport, a message is passed on once (ids only rise), its state is told as
//! the shared [`LinkState`], and a broken connection (a refused event stream included) is
//! retried with exponential backoff (1 s, 2 s, 4 s … 15 s) until the link is dropped.
//! Compiled everywhere so the view needs no `cfg`; only ever called in the browser.

use std::{
    cell::{Cell, RefCell},
    rc::{Rc, Weak},
};

use gloo_net::http::Request;
use wasm_bindgen::{closure::Closure, JsCast};
use web_sys::{CloseEvent, MessageEvent, WebSocket};

use crate::{
    events::{sleep, EventStream, LinkState},
    fetch::{refusal, UNREACHABLE},
    protocol::chat::{
        ChatGap, ChatMessage, ChatPresence, ClientMsg, MessagePage, PostMessage, ServerMsg,
        POLL_LIMIT_DEFAULT,
    },
};

/// What an SSE event's data does to the link (one per event name).
type OnData = fn(&Rc<Inner>, String);

/// How long the browser waits before reconnecting a dropped room stream: the stream's `retry:`
/// (docs/interface.md, "Server-Sent Events").
const ROOM_STREAM_RETRY_MS: u32 = 3000;
/// How often the polling transport asks.
const POLL_EVERY_MS: u32 = 1000;
/// The longest wait between reconnect attempts.
const BACKOFF_MAX_MS: u32 = 15_000;

/// The three ways to follow a room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    WebSocket,
    Sse,
    Polling,
}

impl Transport {
    pub const ALL: [Transport; 3] = [Self::WebSocket, Self::Sse, Self::Polling];

    /// The short name tests and the DOM use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WebSocket => "ws",
            Self::Sse => "sse",
            Self::Polling => "poll",
        }
    }

    /// What the switch says.
    pub fn label(self) -> &'static str {
        match self {
            Self::WebSocket => "WebSocket",
            Self::Sse => "SSE + POST",
            Self::Polling => "Polling",
        }
    }
}

/// What the link tells the page.
#[derive(Clone, Debug)]
pub enum News {
    /// Connecting, open, or broken with the next attempt due (never closed: the link retries
    /// until dropped).
    State(LinkState),
    /// In the room (again): its members, and the history since the last message (WebSocket).
    Joined(Vec<String>),
    /// A message newer than every one passed on before.
    Message(ChatMessage),
    Presence(ChatPresence),
    Gap(ChatGap),
    /// The room's members, as a poll saw them.
    Members(Vec<String>),
    /// Something the user should read (a refused message, a closed socket's reason).
    Problem(String),
    /// Someone else in the room is typing.
    Typing(String),
    /// A message was deleted (show it as such).
    Deleted(i64),
    /// My read position in a room moved (another tab, say).
    Read(String, i64),
    /// The messages sent but not yet stored, oldest first.
    Pending(Vec<String>),
}

/// The backoff before attempt `n` (0-based): 1 s, 2 s, 4 s … at most 15 s.
fn backoff(attempt: u32) -> u32 {
    (1000u32.saturating_mul(1 << attempt.min(4))).min(BACKOFF_MAX_MS)
}

type Listener = Closure<dyn FnMut(web_sys::Event)>;

struct Inner {
    transport: Transport,
    room: String,
    /// The newest message id passed on: resumes start after it, older ids are dropped.
    last_id: Cell<i64>,
    alive: Cell<bool>,
    /// Whether the current WebSocket has been answered `chat-joined`.
    joined: Cell<bool>,
    attempts: Cell<u32>,
    news: Box<dyn Fn(News)>,
    socket: RefCell<Option<(WebSocket, Vec<Listener>)>>,
    source: RefCell<Option<EventStream>>,
    /// Sent but not acknowledged: `(clientId, text)`, oldest first.
    unacked: RefCell<Vec<(String, String)>>,
    /// This page's prefix for client ids, and the next number.
    id_prefix: String,
    next_id: Cell<u32>,
    /// A resend over HTTP is under way (one at a time keeps the order).
    resending: Cell<bool>,
    /// While the socket is open it brings the page's notifications: the shared stream
    /// leaves them out, so the page keeps one connection.
    provided: RefCell<Option<crate::events::Provided>>,
}

impl Inner {
    fn tell(&self, news: News) {
        if self.alive.get() {
            (self.news)(news);
        }
    }

    /// Passes `m` on if it is new.
    fn message(&self, m: ChatMessage) {
        if m.id > self.last_id.get() {
            self.last_id.set(m.id);
            self.tell(News::Message(m));
        }
    }

    fn tell_pending(&self) {
        let texts = self
            .unacked
            .borrow()
            .iter()
            .map(|(_, t)| t.clone())
            .collect();
        self.tell(News::Pending(texts));
    }

    /// The message with this client id is stored (or refused): stop waiting for it.
    fn settled(&self, client_id: &str) {
        self.unacked.borrow_mut().retain(|(id, _)| id != client_id);
        self.tell_pending();
    }

    /// Sends every unacknowledged message over the socket, if it is joined.
    fn resend_on_socket(&self) {
        let socket = self.socket.borrow();
        let Some((socket, _)) = socket
            .as_ref()
            .filter(|(s, _)| s.ready_state() == WebSocket::OPEN && self.joined.get())
        else {
            return;
        };
        for (id, text) in self.unacked.borrow().iter() {
            let _ = socket.send_with_str(&frame(&self.room, text, id));
        }
    }

    fn close_all(&self) {
        drop(self.provided.borrow_mut().take());
        if let Some((socket, _)) = self.socket.borrow_mut().take() {
            socket.set_onopen(None);
            socket.set_onmessage(None);
            socket.set_onclose(None);
            let _ = socket.close();
        }
        // Dropping the stream closes it.
        drop(self.source.borrow_mut().take());
    }
}

/// One room followed over one transport; closed when dropped.
pub struct Link {
    inner: Rc<Inner>,
}

impl Link {
    /// Starts following `room` after message `last_id` (0: the latest few).
    pub fn open(
        transport: Transport,
        room: &str,
        last_id: i64,
        news: impl Fn(News) + 'static,
    ) -> Self {
        let inner = Rc::new(Inner {
            transport,
            room: room.to_string(),
            last_id: Cell::new(last_id),
            alive: Cell::new(true),
            joined: Cell::new(false),
            attempts: Cell::new(0),
            news: Box::new(news),
            socket: RefCell::new(None),
            source: RefCell::new(None),
            unacked: RefCell::new(Vec::new()),
            id_prefix: format!("{:08x}", (js_sys::Math::random() * 4_294_967_295.0) as u32),
            next_id: Cell::new(0),
            resending: Cell::new(false),
            provided: RefCell::new(None),
        });
        connect(&inner);
        Self { inner }
    }

    /// Says "I am typing" to the room (over a WebSocket only: the other transports have no
    /// way to say it without storing a message). The server passes on one every 2 s.
    pub fn typing(&self) {
        if self.inner.transport != Transport::WebSocket {
            return;
        }
        if let Some((socket, _)) = self.inner.socket.borrow().as_ref() {
            if socket.ready_state() == WebSocket::OPEN {
                let frame = serde_json::to_string(&ClientMsg::ChatTyping {
                    room: Some(self.inner.room.clone()),
                })
                .expect("serializable");
                let _ = socket.send_with_str(&frame);
            }
        }
    }

    /// A handle that sends on this link while it lives (for async send from the page).
    pub fn sender(&self) -> LinkSender {
        LinkSender {
            inner: Rc::downgrade(&self.inner),
        }
    }
}

/// Sends on a [`Link`] while it is open.
pub struct LinkSender {
    inner: Weak<Inner>,
}

impl LinkSender {
    /// Sends a message: over the socket, or with `POST` for the other transports. It is
    /// pending until stored; while the link is down it waits and goes out on reconnect.
    /// `Err`: refused, with the sentence to show.
    pub async fn send(&self, text: &str) -> Result<(), String> {
        let inner = self
            .inner
            .upgrade()
            .ok_or_else(|| "The connection was closed; try again.".to_string())?;
        inner.next_id.set(inner.next_id.get() + 1);
        let id = format!("{}-{}", inner.id_prefix, inner.next_id.get());
        inner
            .unacked
            .borrow_mut()
            .push((id.clone(), text.to_string()));
        inner.tell_pending();
        if inner.transport == Transport::WebSocket {
            // Sent now if joined, else on the next `chat-joined`.
            let socket = inner.socket.borrow();
            if let Some((socket, _)) = socket
                .as_ref()
                .filter(|(s, _)| s.ready_state() == WebSocket::OPEN && inner.joined.get())
            {
                let _ = socket.send_with_str(&frame(&inner.room, text, &id));
            }
            return Ok(());
        }
        post_pending(&inner, &id, text).await
    }
}

/// A `chat-message` frame with its client id.
fn frame(room: &str, text: &str, client_id: &str) -> String {
    serde_json::to_string(&ClientMsg::ChatMessage {
        text: text.to_string(),
        room: Some(room.to_string()),
        client_id: Some(client_id.to_string()),
    })
    .expect("serializable")
}

/// `POST`s one pending message with its id as `Idempotency-Key`. Stored: settled. Refused
/// (4xx): dropped, and the sentence returned. Not reached or a 5xx: kept, and all pending
/// ones are sent again in 2 s.
async fn post_pending(inner: &Rc<Inner>, id: &str, text: &str) -> Result<(), String> {
    let body = PostMessage {
        text: text.to_string(),
    };
    let request = Request::post(&format!("/api/rooms/{}/messages", inner.room))
        .header("Idempotency-Key", id)
        .json(&body)
        .map_err(|e| e.to_string())?;
    match request.send().await {
        Ok(res) if res.ok() => {
            inner.settled(id);
            if inner.transport == Transport::Polling {
                // Show it without waiting for the next tick.
                poll_once(inner).await;
            }
            Ok(())
        }
        Ok(res) if res.status() < 500 => {
            inner.settled(id);
            Err(refusal(res).await)
        }
        _ => {
            let weak = Rc::downgrade(inner);
            leptos::task::spawn_local(async move {
                sleep(2000).await;
                if let Some(inner) = live(&weak) {
                    resend_posts(&inner).await;
                }
            });
            Ok(())
        }
    }
}

/// Sends every pending message again over HTTP, oldest first (one resend at a time).
async fn resend_posts(inner: &Rc<Inner>) {
    if inner.resending.replace(true) {
        return;
    }
    let pending = inner.unacked.borrow().clone();
    for (id, text) in pending {
        if let Err(why) = post_pending(inner, &id, &text).await {
            inner.tell(News::Problem(why));
        }
        if !inner.unacked.borrow().iter().any(|(i, _)| *i == id) {
            continue;
        }
        // Still pending: the server is not reachable; the retry is already planned.
        break;
    }
    inner.resending.set(false);
}

impl Drop for Link {
    fn drop(&mut self) {
        self.inner.alive.set(false);
        self.inner.close_all();
    }
}

fn connect(inner: &Rc<Inner>) {
    if !inner.alive.get() {
        return;
    }
    inner.tell(News::State(LinkState::Connecting));
    let opened = match inner.transport {
        Transport::WebSocket => open_socket(inner),
        Transport::Sse => open_source(inner),
        Transport::Polling => {
            let weak = Rc::downgrade(inner);
            leptos::task::spawn_local(poll_loop(weak));
            Ok(())
        }
    };
    if let Err(why) = opened {
        inner.tell(News::Problem(why));
        retry_later(inner);
    }
}

/// Schedules the next attempt after the backoff.
/// Called from the listeners themselves, so the old connection (and those listeners) is
/// dropped in the task, after the listener has returned.
fn retry_later(inner: &Rc<Inner>) {
    let wait = backoff(inner.attempts.get());
    inner.attempts.set(inner.attempts.get() + 1);
    inner.tell(News::State(LinkState::Reconnecting(Some(wait))));
    let weak = Rc::downgrade(inner);
    leptos::task::spawn_local(async move {
        if let Some(inner) = weak.upgrade() {
            inner.close_all();
        }
        sleep(wait).await;
        if let Some(inner) = weak.upgrade() {
            connect(&inner);
        }
    });
}

/// The link behind `weak`, unless it is gone or dropped.
fn live(weak: &Weak<Inner>) -> Option<Rc<Inner>> {
    weak.upgrade().filter(|inner| inner.alive.get())
}

fn listener(weak: &Weak<Inner>, f: impl Fn(&Rc<Inner>, web_sys::Event) + 'static) -> Listener {
    let weak = weak.clone();
    Closure::new(move |e: web_sys::Event| {
        if let Some(inner) = live(&weak) {
            f(&inner, e);
        }
    })
}

fn data_of(e: &web_sys::Event) -> Option<String> {
    e.dyn_ref::<MessageEvent>()?.data().as_string()
}

fn open_socket(inner: &Rc<Inner>) -> Result<(), String> {
    let location = web_sys::window().ok_or("No window.")?.location();
    let scheme = match location.protocol().as_deref() {
        Ok("https:") => "wss",
        _ => "ws",
    };
    let host = location.host().map_err(|_| "No host.".to_string())?;
    let socket = WebSocket::new(&format!("{scheme}://{host}/ws"))
        .map_err(|_| "This browser cannot open a WebSocket.".to_string())?;
    let weak = Rc::downgrade(inner);
    let on_open = {
        let socket = socket.clone();
        listener(&weak, move |inner, _| {
            inner.joined.set(false);
            *inner.provided.borrow_mut() = Some(crate::events::provide("notifications"));
            let last = inner.last_id.get();
            let join = ClientMsg::ChatJoin {
                room: inner.room.clone(),
                last_message_id: (last > 0).then_some(last),
            };
            let _ = socket.send_with_str(&serde_json::to_string(&join).expect("serializable"));
        })
    };
    let on_message = listener(&weak, |inner, e| {
        let Some(data) = data_of(&e) else {
            return;
        };
        let Ok(msg) = serde_json::from_str::<ServerMsg>(&data) else {
            return;
        };
        match msg {
            ServerMsg::ChatJoined {
                members, history, ..
            } => {
                inner.attempts.set(0);
                inner.joined.set(true);
                inner.tell(News::State(LinkState::Open));
                inner.tell(News::Joined(members));
                for m in history {
                    inner.message(m);
                }
                // What was sent into the old connection and not acknowledged goes again
                // (the same ids: stored once).
                inner.resend_on_socket();
            }
            ServerMsg::ChatAck { client_id, .. } => inner.settled(&client_id),
            ServerMsg::ChatMessage(m) => inner.message(m),
            ServerMsg::ChatPresence(p) => inner.tell(News::Presence(p)),
            ServerMsg::ChatGap(g) => inner.tell(News::Gap(g)),
            ServerMsg::ChatError { message, client_id } => {
                if let Some(id) = client_id {
                    inner.settled(&id);
                }
                inner.tell(News::Problem(message));
                if !inner.joined.get() {
                    // The join itself was refused (the history could not be read): try again.
                    retry_later(inner);
                }
            }
            ServerMsg::ChatRemoved { room } => {
                inner.tell(News::Problem(format!("You were removed from #{room}.")));
            }
            // The toasts, the bell and the badges hear these from the socket while it is
            // open (the shared stream leaves `notifications` out meanwhile).
            ServerMsg::Notification(_) => {
                crate::events::deliver("notifications", "notification", data)
            }
            ServerMsg::NotificationsRead { .. } => {
                crate::events::deliver("notifications", "notifications-read", data)
            }
            ServerMsg::RoomActivity { .. } => {
                crate::events::deliver("notifications", "room-activity", data)
            }
            ServerMsg::NotificationsGap(_) => {}
            ServerMsg::ChatTyping { display_name, .. } => inner.tell(News::Typing(display_name)),
            ServerMsg::ChatDelete { id, .. } => inner.tell(News::Deleted(id)),
            ServerMsg::ChatRead { room, last_read_id } => {
                inner.tell(News::Read(room, last_read_id))
            }
        }
    });
    let on_close = listener(&weak, |inner, e| {
        // The shared stream brings the notifications again.
        drop(inner.provided.borrow_mut().take());
        if let Some(close) = e.dyn_ref::<CloseEvent>() {
            let reason = close.reason();
            if !reason.is_empty() {
                inner.tell(News::Problem(reason));
            }
        }
        retry_later(inner);
    });
    socket.set_onopen(Some(on_open.as_ref().unchecked_ref()));
    socket.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    socket.set_onclose(Some(on_close.as_ref().unchecked_ref()));
    *inner.socket.borrow_mut() = Some((socket, vec![on_open, on_message, on_close]));
    Ok(())
}

fn open_source(inner: &Rc<Inner>) -> Result<(), String> {
    let last = inner.last_id.get();
    let named: [(&'static str, OnData); 7] = [
        ("chat-joined", |inner, d| {
            if let Ok(ServerMsg::ChatJoined { members, .. }) = serde_json::from_str(&d) {
                inner.tell(News::Joined(members));
            }
        }),
        ("chat-message", |inner, d| {
            if let Ok(ServerMsg::ChatMessage(m)) = serde_json::from_str(&d) {
                inner.message(m);
            }
        }),
        ("chat-presence", |inner, d| {
            if let Ok(ServerMsg::ChatPresence(p)) = serde_json::from_str(&d) {
                inner.tell(News::Presence(p));
            }
        }),
        ("gap", |inner, d| {
            if let Ok(g) = serde_json::from_str::<ChatGap>(&d) {
                inner.tell(News::Gap(g));
            }
        }),
        ("chat-typing", |inner, d| {
            if let Ok(ServerMsg::ChatTyping { display_name, .. }) = serde_json::from_str(&d) {
                inner.tell(News::Typing(display_name));
            }
        }),
        ("chat-delete", |inner, d| {
            if let Ok(ServerMsg::ChatDelete { id, .. }) = serde_json::from_str(&d) {
                inner.tell(News::Deleted(id));
            }
        }),
        ("removed", |inner, _| {
            inner.tell(News::Problem(format!(
                "You were removed from #{}.",
                inner.room
            )));
        }),
    ];
    let weak = Rc::downgrade(inner);
    let on_state = weak.clone();
    // The room is a topic of the page's one shared stream (`/api/events`), not a stream of
    // its own: the toasts, the badges and the room share one connection.
    let stream = EventStream::topic(
        &format!("room:{}", inner.room),
        (last > 0).then_some(last),
        &named.map(|(name, _)| name),
        move |received| {
            let Some(inner) = live(&weak) else { return };
            // A message's id is in its data too: that is the one `last_id` follows.
            if let Some((_, handle)) = named.iter().find(|(name, _)| *name == received.name) {
                handle(&inner, received.data);
            }
        },
        move |state| {
            let Some(inner) = live(&on_state) else { return };
            match state {
                LinkState::Open => {
                    inner.attempts.set(0);
                    inner.tell(News::State(LinkState::Open));
                    if !inner.unacked.borrow().is_empty() {
                        let inner = inner.clone();
                        leptos::task::spawn_local(async move { resend_posts(&inner).await });
                    }
                }
                // Refused (signed out, a bad room): the browser gave up, so try again later.
                LinkState::Closed => retry_later(&inner),
                // Dropped: the browser reconnects by itself after the stream's `retry:`,
                // sending Last-Event-ID.
                LinkState::Reconnecting(None) => inner.tell(News::State(LinkState::Reconnecting(
                    Some(ROOM_STREAM_RETRY_MS),
                ))),
                LinkState::Connecting | LinkState::Reconnecting(Some(_)) => {
                    inner.tell(News::State(state))
                }
            }
        },
    )?;
    *inner.source.borrow_mut() = Some(stream);
    Ok(())
}

/// One poll: new messages, a gap notice, the members. `Some(full)` when it worked (`full`:
/// the page was full, so more are waiting), `None` when it failed.
async fn poll_once(inner: &Inner) -> Option<bool> {
    let last = inner.last_id.get();
    let url = if last > 0 {
        format!("/api/rooms/{}/messages?after={last}", inner.room)
    } else {
        format!("/api/rooms/{}/messages", inner.room)
    };
    let response = match Request::get(&url).send().await {
        Ok(r) => r,
        Err(_) => {
            inner.tell(News::Problem(UNREACHABLE.into()));
            return None;
        }
    };
    if !response.ok() {
        let why = refusal(response).await;
        inner.tell(News::Problem(why));
        return None;
    }
    let Ok(page) = response.json::<MessagePage>().await else {
        inner.tell(News::Problem(
            "The server sent messages this page does not understand.".into(),
        ));
        return None;
    };
    let full = page.messages.len() as i64 >= POLL_LIMIT_DEFAULT;
    if page.gap {
        if let Some(first) = page.messages.first() {
            inner.tell(News::Gap(ChatGap {
                room: inner.room.clone(),
                after_id: last,
                first_available_id: first.id,
            }));
        }
    }
    for m in page.messages {
        inner.message(m);
    }
    inner.tell(News::Members(page.members));
    Some(full)
}

async fn poll_loop(weak: Weak<Inner>) {
    let mut failures = 0u32;
    loop {
        let Some(inner) = weak.upgrade() else { return };
        if !inner.alive.get() {
            return;
        }
        let wait = if let Some(full) = poll_once(&inner).await {
            failures = 0;
            inner.tell(News::State(LinkState::Open));
            // A full page means more are waiting: ask again at once.
            if full {
                0
            } else {
                POLL_EVERY_MS
            }
        } else {
            let wait = backoff(failures);
            failures += 1;
            inner.tell(News::State(LinkState::Reconnecting(Some(wait))));
            wait
        };
        drop(inner);
        sleep(wait).await;
    }
}
