//! One WebSocket connection: the documented `chat-*` messages over any `Sink`/`Stream` of
//! frames, so unit tests drive it with channels and the server with an axum socket.
//!
//! One loop owns the connection, reading and writing both:
//! - it reads the client's frames and answers each in turn: mistakes get `chat-error` (the
//!   connection survives every bad message), joins and leaves change its rooms (holding the
//!   [`Presence`]), posts go through the hub. The next frame is read once the last is
//!   answered; the answer runs beside the deliveries, which do not wait for it;
//! - it owns everything outbound: the answers, the joined rooms' (up to 32) bus
//!   subscriptions and the notifications. It writes whatever is waiting as one burst and
//!   flushes once (a thousand sockets in a busy room cost a write each per burst, not per
//!   message), pings an idle peer, and closes a peer that stopped answering.
//!
//! One loop rather than a reader and a writer joined: an idle socket is its task's memory, and
//! two loops cost two futures, a queue between them and the socket split behind a lock
//! (about 2 kB of every idle socket).
//!
//! Backpressure: a room's messages wait in the bus's bounded ring. A socket that falls more
//! than the ring behind is told nothing is lost: the missed messages are read back from
//! history (a `chat-gap` first if they are no longer kept), a page of [`READBACK_PAGE`] at a
//! time, and the drop is counted. A socket that takes longer than the slow-client limit to
//! accept one burst is closed with 1008 and counted; it never holds up the others, which write
//! from their own rings.
//!
//! Memory is bounded in bytes, not only in messages: nothing is read from a client while a
//! burst waits for it to take it, so a client that keeps joining while it never reads stops
//! being read itself; a `chat-joined` carries at most [`JOINED_MAX_BYTES`] of history, and the
//! rest follows page by page as the socket takes it.
//!
//! Access: a join asks the hub's gate (`chat::access`) like every transport; a private room's
//! outsider gets `chat-error` `You are not a member of #NAME.` and the socket stays open. A
//! member the owner removes gets `chat-removed` and the room's stream ends there.
//!
//! Notifications: every socket follows the user's notifications (to everyone or to them)
//! from where the bus was when it opened; `notifications-since` replays from an id (a
//! `notifications-gap` first when some are no longer kept), and a socket that falls behind
//! reads back what it missed. Read positions (`chat-read`) and inbox marks
//! (`notifications-read`) of the user's other connections come the same way.
//!
//! Ending: the server stopping closes with 1001; the session ending (logout, expiry, an
//! admin's disconnect) with 1008 `Signed out.`; a frame that breaks the protocol (an unmasked
//! client frame, RFC 6455 §5.1) with 1002.
//!
//! Tests: the unit tests below; `tests/it/chat.rs` over real sockets.
//!
//! Length: over 800 lines, a third of them tests run over channels. One socket's life
//! (join with its history pages, live delivery with hole read-back, the write batching and
//! slow-client limit, ping, close codes) is one state machine; split, its pieces would pass
//! the same state back and forth.

use std::{future::Future, sync::Arc, time::Duration};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use futures::{Sink, SinkExt, Stream, StreamExt};
use tokio_util::sync::CancellationToken;

use super::hub::{json, Hub, Presence, RoomPass};
use crate::{
    notify::replay,
    protocol::chat::{
        client_id_problem, parse_client_frame, too_many_rooms, ClientMsg, ServerMsg, JOIN_FIRST,
        JOIN_HISTORY, NOT_JSON, ROOMS_PER_SOCKET,
    },
    server::{
        access::streams::Held,
        clock,
        fanout::bus::{Received, Subscription},
        fanout::ws,
        observe::metrics,
        shutdown::Shutdown,
    },
};

/// Now in `room`: send `joined`, then the room's live messages after `last_id`.
struct Joined {
    pass: RoomPass,
    presence: Presence,
    subscription: Subscription,
    joined: Message,
    gap: Option<Message>,
    last_id: i64,
    /// The history did not all fit in `joined`: read the rest back before going live.
    behind: bool,
}

/// Frames written per burst at most.
const BURST: usize = 64;
/// History a `chat-joined` carries at most, in bytes of JSON (the rest follows as messages).
pub const JOINED_MAX_BYTES: usize = 256 * 1024;
/// Messages a join reads from history at once.
const JOIN_PAGE: i64 = 200;
/// Messages read back at once when a socket catches up.
pub const READBACK_PAGE: i64 = 100;

/// Close codes (RFC 6455).
pub const CLOSE_GOING_AWAY: u16 = 1001;
pub const CLOSE_PROTOCOL: u16 = 1002;
pub const CLOSE_INVALID_DATA: u16 = 1007;
pub const CLOSE_POLICY: u16 = 1008;
pub const CLOSE_TOO_BIG: u16 = 1009;

/// What answering a client frame leads to, besides nothing.
enum Out {
    /// A reply to send as is.
    Frame(Message),
    /// Now in a room (boxed: the largest by far).
    Join(Box<Joined>),
    /// Out of this room.
    Leave(String),
    /// Replay the user's notifications after this id.
    NotesSince(i64),
}

fn text(msg: &ServerMsg) -> Message {
    Message::Text(Utf8Bytes::from(json(msg)))
}

fn error(message: impl Into<String>) -> Message {
    text(&ServerMsg::ChatError {
        message: message.into(),
        client_id: None,
    })
}

/// How a connection ends besides its peer closing it.
#[derive(Clone, Debug)]
pub struct Ends {
    /// The server is stopping (1001).
    pub shutdown: Shutdown,
    /// The session ended (1008 `Signed out.`): `server::access::streams`.
    pub signed_out: CancellationToken,
    /// A socket that takes longer than this to accept one batch of writes is closed as too
    /// slow (`TIDINGS_SLOW_CLIENT_MS`).
    pub slow_client: Duration,
    /// Its place among the user's connections, told which room it follows.
    pub held: Option<Arc<Held>>,
}

impl Default for Ends {
    fn default() -> Self {
        Self {
            shutdown: Shutdown::default(),
            signed_out: CancellationToken::default(),
            slow_client: Duration::from_secs(10),
            held: None,
        }
    }
}

/// The close a read error calls for: 1009 for an oversized message, 1007 for a text frame
/// that is not UTF-8, 1002 for a frame that breaks the protocol (an unmasked client frame);
/// `None` when the connection simply broke.
fn close_for(e: axum::Error) -> Option<(u16, &'static str)> {
    use tokio_tungstenite::tungstenite::{
        error::{CapacityError, ProtocolError},
        Error,
    };
    let inner = e.into_inner();
    match inner.downcast_ref::<Error>() {
        Some(Error::Capacity(CapacityError::MessageTooLong { .. })) => {
            Some((CLOSE_TOO_BIG, "Messages are at most 65536 bytes."))
        }
        Some(Error::Utf8(_)) => Some((CLOSE_INVALID_DATA, "Text frames must be UTF-8.")),
        Some(Error::Protocol(ProtocolError::UnmaskedFrameFromClient)) => Some((
            CLOSE_PROTOCOL,
            "Frames from a client must be masked (RFC 6455, section 5.1).",
        )),
        Some(Error::Protocol(
            ProtocolError::ResetWithoutClosingHandshake | ProtocolError::SendAfterClosing,
        )) => None,
        Some(Error::Protocol(_)) => {
            Some((CLOSE_PROTOCOL, "That frame breaks the WebSocket protocol."))
        }
        _ => None,
    }
}

/// The joined room a message names (`None`: the one joined last), or the sentence saying why
/// there is none.
fn named<'a>(joined: &'a [RoomPass], room: Option<&str>) -> Result<&'a RoomPass, String> {
    match room {
        None => joined.last().ok_or_else(|| JOIN_FIRST.to_string()),
        Some(room) => joined
            .iter()
            .find(|p| p.room() == room)
            .ok_or_else(|| format!("Join #{room} first: this connection is not in it.")),
    }
}

/// Answers one text frame: `None` when there is nothing to send back directly.
async fn handle(hub: &Hub, user: &str, frame: &str, joined: &mut Vec<RoomPass>) -> Option<Out> {
    let reply = |m: Message| Some(Out::Frame(m));
    let msg = match parse_client_frame(frame) {
        Ok(m) => m,
        Err(why) => return reply(error(why)),
    };
    match msg {
        ClientMsg::ChatJoin {
            room,
            last_message_id,
        } => {
            // The gate first: a bad name or a private room's outsider is told, and the socket
            // stays open (and in its old room, if any).
            let pass = match hub.admit(&room, user).await {
                Ok(pass) => pass,
                Err(refused) => return reply(error(refused.sentence())),
            };
            let rejoin = joined.iter().any(|p| p.room() == room);
            if !rejoin && joined.len() >= ROOMS_PER_SOCKET {
                return reply(error(too_many_rooms()));
            }
            // Enter first (so the joiner's own `joined` is not echoed to it; the members
            // list says it), then subscribe before reading history: nothing published in
            // between is missed. Entering before leaving the old room keeps a rejoin of the
            // same room from flapping.
            let presence = hub.enter(&pass);
            let subscription = hub.subscribe(&pass);
            let resume = match hub
                .since(
                    &pass,
                    last_message_id,
                    JOIN_HISTORY as i64,
                    JOIN_PAGE.min(hub.config().history),
                )
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    // Still in the old room, if any: `presence` leaves again as it drops.
                    tracing::warn!(error = %e, %room, "reading chat history failed");
                    return reply(error(
                        "The room's history could not be read; try joining again.",
                    ));
                }
            };
            // A full page, or more bytes than a joined frame carries: the rest follows.
            let mut behind = last_message_id.is_some() && resume.messages.len() as i64 == JOIN_PAGE;
            let mut history = resume.messages;
            let mut last_id = resume.last_id;
            let kept = fitting(&history, JOINED_MAX_BYTES);
            if kept < history.len() {
                history.truncate(kept);
                last_id = history.last().map_or(resume.after_id, |m| m.id);
                behind = true;
            }
            let joined_frame = text(&ServerMsg::ChatJoined {
                room: room.clone(),
                members: hub.members(&room),
                history,
            });
            joined.retain(|p| p.room() != room);
            joined.reserve_exact(1);
            joined.push(pass.clone());
            Some(Out::Join(Box::new(Joined {
                pass,
                presence,
                subscription,
                joined: joined_frame,
                gap: resume.gap.map(|g| text(&ServerMsg::ChatGap(g))),
                last_id,
                behind,
            })))
        }
        ClientMsg::ChatMessage {
            text: body,
            room,
            client_id,
        } => {
            let pass = match named(joined, room.as_deref()) {
                Ok(pass) => pass,
                Err(sentence) => return reply(error(sentence)),
            };
            if let Some(problem) = client_id
                .as_deref()
                .and_then(|id| client_id_problem(id, "clientId"))
            {
                return reply(error(problem));
            }
            // A refusal names the clientId, so the sender stops waiting for its ack.
            let refused = |message: String, client_id: Option<String>| {
                Some(Out::Frame(text(&ServerMsg::ChatError {
                    message,
                    client_id,
                })))
            };
            let sent = hub.send(pass, &body, client_id.as_deref()).await;
            // A repeat (a resend of a stored message) is not counted again.
            if matches!(sent, Ok((_, false))) {
                metrics::record_received(metrics::Inbound::WebSocket);
            }
            match sent {
                // Everyone, the sender included, gets it from the room's subscription; the
                // sender's ack comes straight back (a repeat's too: its first was lost).
                Ok((message, _)) => client_id.map(|client_id| {
                    Out::Frame(text(&ServerMsg::ChatAck {
                        client_id,
                        id: message.id,
                        room: message.room,
                    }))
                }),
                Err(e) => refused(e.sentence(), client_id),
            }
        }
        ClientMsg::ChatLeave { room } => {
            let at = match room.as_deref() {
                None if joined.is_empty() => None,
                None => Some(joined.len() - 1),
                Some(r) => joined.iter().position(|p| p.room() == r),
            };
            let Some(at) = at else {
                return reply(error(match room {
                    Some(r) => format!("This connection is not in #{r}."),
                    None => JOIN_FIRST.to_string(),
                }));
            };
            Some(Out::Leave(joined.remove(at).room().to_string()))
        }
        ClientMsg::ChatTyping { room } => {
            let pass = match named(joined, room.as_deref()) {
                Ok(pass) => pass,
                Err(sentence) => return reply(error(sentence)),
            };
            // Held back past one every 2 s: typing is a hint, so nothing is said.
            hub.typing(pass).await;
            None
        }
        ClientMsg::NotificationsSince {
            last_notification_id,
        } => {
            if last_notification_id < 0 {
                return reply(error(
                    "`lastNotificationId` is a notification id, 0 or more.",
                ));
            }
            Some(Out::NotesSince(last_notification_id))
        }
    }
}

/// How many of `messages` (from the first) fit in `max` bytes of JSON; at least one.
fn fitting(messages: &[crate::protocol::chat::ChatMessage], max: usize) -> usize {
    let mut bytes = 0;
    for (i, m) in messages.iter().enumerate() {
        // The JSON of a message: its text escaped, plus the fixed fields (about 120 bytes).
        bytes += serde_json::to_string(&m.text).map_or(m.text.len(), |t| t.len()) + 160;
        if bytes > max && i > 0 {
            return i;
        }
    }
    messages.len()
}

/// The joined room, as the writer follows it.
struct Room {
    pass: RoomPass,
    /// Held while the writer follows the room: a removed member leaves with it.
    _presence: Presence,
    subscription: Subscription,
    /// The newest message id sent; live messages at or below it are skipped.
    last_id: i64,
    /// More history than was sent is waiting: read the next page before going live.
    behind: bool,
    /// When this socket last fell behind the room's ring (the latest few).
    lags: Vec<tokio::time::Instant>,
}

/// A socket that falls behind this many times within [`LAG_WINDOW`] is closed: reading its
/// missed messages back keeps it whole, but it cannot keep up with the room.
const LAGS_MAX: usize = 3;
const LAG_WINDOW: Duration = Duration::from_secs(30);

/// What a room delivery leads to.
enum Next {
    Go,
    /// The room's stream ended (the bus closed, or this user was removed from it).
    RoomEnded,
    /// Close the socket with this code and reason (counted as a slow client).
    Close(u16, &'static str),
}

/// The next delivery of any joined room, with the room's place in `rooms`.
async fn next_in(rooms: &mut [Room]) -> (usize, Received) {
    match rooms {
        [] => std::future::pending().await,
        // The common case without an allocation per wakeup.
        [one] => (0, one.subscription.recv().await),
        many => {
            let (r, i, _) = futures::future::select_all(
                many.iter_mut().map(|r| Box::pin(r.subscription.recv())),
            )
            .await;
            (i, r)
        }
    }
}

/// Tells the stream registry which topics this socket follows now.
fn follow(held: &Option<Arc<Held>>, rooms: &[Room]) {
    if let Some(held) = held {
        let mut topics: Vec<String> = rooms
            .iter()
            .map(|r| format!("room:{}", r.pass.room()))
            .collect();
        topics.push("notifications".into());
        held.set_topics(topics);
    }
}

/// Runs one connection of `user` until either side ends it, the session ends or the server
/// stops: see the module docs.
// A plain `fn` returning an `async move` block, not an `async fn`: an async fn stores its
// arguments twice in its future (as captured and as locals), and the future is every idle
// socket's memory.
#[allow(clippy::manual_async_fn)]
pub fn run<W>(hub: Hub, user: String, mut socket: W, ends: Ends) -> impl Future<Output = ()> + Send
where
    W: Sink<Message> + Stream<Item = Result<Message, axum::Error>> + Unpin + Send,
{
    let live = ws::live_socket();
    // Notifications are followed from where the bus is when the socket opens.
    let notifications = hub.subscribe_notifications();
    async move {
        // Counted while the loop runs; the socket's place among the user's connections
        // (`ends.held`) is given up with it.
        let _live = live;
        let interval = hub.config().ping_interval;
        let slow = ends.slow_client;
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        // When the peer last sent anything (a pong included).
        let mut last_seen = clock::now_ms();
        let mut rooms: Vec<Room> = Vec::new();
        // The rooms joined, the last joined last, as the client's messages name them: handed
        // to the frame being answered while it runs.
        let mut joined: Vec<RoomPass> = Vec::new();
        // The client frame being answered, if any; the next is read once it is.
        let mut answering: Option<Answering> = None;
        // Grown on the first frame written, and given back after each burst (below).
        let mut burst: Vec<Message> = Vec::new();
        // Both kept across iterations (see `Shutdown::cancelled_owned`): the notification
        // subscription is shared by every socket, and a `recv()` future dropped each time
        // another branch won would take its lock twice per wakeup.
        let mut stop = std::pin::pin!(ends.shutdown.cancelled_owned());
        let mut signed_out = std::pin::pin!(ends.signed_out.cancelled_owned());
        let mut notes =
            std::pin::pin!(futures::stream::unfold(notifications, |mut s| async move {
                Some((s.recv().await, s))
            }));
        let mut notes_open = true;
        // The newest notification of this user's sent (or known when the socket opened): live
        // ones at or below it are skipped, and a fall behind reads back from it.
        let mut last_note = hub.notifications_seen();
        // A client resuming asks `notifications-since` first thing. Until that is answered (or
        // for NOTES_HOLD after the socket opens, for clients that never ask), live
        // notifications wait here, so a reconnecting client gets the replay and then these,
        // each once and in order (held ones the replay already sent are dropped).
        let mut held_notes: Option<Vec<(i64, Message)>> = Some(Vec::new());
        let mut hold = std::pin::pin!(tokio::time::sleep(NOTES_HOLD));
        loop {
            let mut close: Option<(u16, &'static str)> = None;
            if let Some(at) = rooms.iter().position(|r| r.behind) {
                // Catching up, a page at a time: each page is written before the next is read.
                let next = Box::pin(take(
                    &hub,
                    &user,
                    &mut rooms[at],
                    Received::Lagged(0),
                    &mut burst,
                ))
                .await;
                match next {
                    Next::Go => {}
                    Next::RoomEnded => {
                        rooms.remove(at);
                        follow(&ends.held, &rooms);
                    }
                    Next::Close(code, reason) => close = Some((code, reason)),
                }
            } else {
                // Biased: the ends first, then the client (read before the rooms, or a busy
                // room would keep its pongs and posts waiting), then what goes out.
                tokio::select! {
                    biased;
                    _ = &mut stop => close = Some((CLOSE_GOING_AWAY, RESTARTING)),
                    _ = &mut signed_out => close = Some((CLOSE_POLICY, "Signed out.")),
                    (back, out) = answered(&mut answering) => {
                        joined = back;
                        match out {
                            None => {}
                            Some(Out::Frame(m)) => burst.push(m),
                            Some(Out::Join(j)) => {
                                let Joined { pass, presence, subscription, joined, gap, last_id, behind } = *j;
                                // The gap first, as before every replay (the contract's order).
                                burst.extend(gap);
                                burst.push(joined);
                                // A rejoin replaces the room in place (its presence was
                                // entered again first, so it does not flap).
                                let room = Room {
                                    pass,
                                    _presence: presence,
                                    subscription,
                                    last_id,
                                    behind,
                                    lags: Vec::new(),
                                };
                                match rooms.iter().position(|r| r.pass.room() == room.pass.room()) {
                                    Some(at) => rooms[at] = room,
                                    None => {
                                        // Room by room: a first push would make room for
                                        // four (about 0.7 kB on every socket in one room).
                                        rooms.reserve_exact(1);
                                        rooms.push(room);
                                    }
                                }
                                follow(&ends.held, &rooms);
                            }
                            Some(Out::Leave(name)) => {
                                rooms.retain(|r| r.pass.room() != name);
                                follow(&ends.held, &rooms);
                            }
                            Some(Out::NotesSince(after)) => {
                                match Box::pin(notes_back(&hub, &user, after, true, &mut burst)).await {
                                    Ok(last) => {
                                        release(&mut held_notes, last, &mut burst);
                                        last_note = last_note.max(last);
                                    }
                                    Err(()) => close = Some((1011, NOTES_UNREAD)),
                                }
                            }
                        }
                    }
                    _ = &mut hold, if held_notes.is_some() => release(&mut held_notes, 0, &mut burst),
                    frame = socket.next(), if answering.is_none() => {
                        last_seen = clock::now_ms();
                        match frame {
                            None | Some(Ok(Message::Close(_))) => close = Some((1000, "")),
                            Some(Err(e)) => match close_for(e) {
                                Some(closing) => close = Some(closing),
                                // The connection broke: there is no one to tell.
                                None => return,
                            },
                            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                            Some(Ok(Message::Binary(_))) => burst.push(error(NOT_JSON)),
                            Some(Ok(Message::Text(t))) => {
                                // Boxed: the handler's future (database reads, the post)
                                // exists only while it runs, instead of inflating every idle
                                // socket's task. Deliveries go on meanwhile.
                                let (hub, user) = (hub.clone(), user.clone());
                                let mut rooms_named = std::mem::take(&mut joined);
                                answering = Some(Box::pin(async move {
                                    let out = handle(&hub, &user, t.as_str(), &mut rooms_named).await;
                                    (rooms_named, out)
                                }));
                            }
                        }
                    }
                    (at, r) = next_in(&mut rooms) => {
                        let mut next = Box::pin(take(&hub, &user, &mut rooms[at], r, &mut burst)).await;
                        // Whatever else is already waiting goes out in the same write.
                        while matches!(next, Next::Go) && burst.len() < BURST {
                            let Some(r) = rooms[at].subscription.try_recv() else {
                                break;
                            };
                            next = Box::pin(take(&hub, &user, &mut rooms[at], r, &mut burst)).await;
                        }
                        match next {
                            Next::Go => {}
                            Next::RoomEnded => {
                                rooms.remove(at);
                                follow(&ends.held, &rooms);
                            }
                            Next::Close(code, reason) => {
                                if code == CLOSE_POLICY {
                                    ws::record_slow_disconnect();
                                }
                                close = Some((code, reason));
                            }
                        }
                    }
                    n = notes.next(), if notes_open => match n {
                        Some(Received::Message(m)) if !m.is_for(&user) => {}
                        Some(Received::Message(m)) if m.kind == "notification" => {
                            if m.id > last_note {
                                match held_notes.as_mut() {
                                    Some(held) if held.len() < NOTES_HELD_MAX => held.push((m.id, frame(&m.data))),
                                    _ => {
                                        release(&mut held_notes, 0, &mut burst);
                                        burst.push(frame(&m.data));
                                    }
                                }
                                last_note = m.id;
                            }
                        }
                        Some(Received::Message(m)) => burst.push(frame(&m.data)),
                        Some(Received::Lagged(n)) => {
                            // Fell behind the bus: read back what this user missed.
                            ws::record_drops(n);
                            release(&mut held_notes, 0, &mut burst);
                            match Box::pin(notes_back(&hub, &user, last_note, false, &mut burst)).await {
                                Ok(last) => last_note = last,
                                Err(()) => close = Some((1011, NOTES_UNREAD)),
                            }
                        }
                        Some(Received::Closed) | None => notes_open = false,
                    },
                    _ = ping.tick() => {
                        let quiet = clock::now_ms() - last_seen;
                        if quiet > 2 * interval.as_millis() as i64 {
                            // No pong, no frame: the peer is gone without a word.
                            tracing::info!(quiet_ms = quiet, "closing a WebSocket that stopped answering");
                            return;
                        }
                        burst.push(Message::Ping(Default::default()));
                    }
                }
            }
            if let Some((code, reason)) = close {
                burst.push(Message::Close(Some(CloseFrame {
                    code,
                    reason: Utf8Bytes::from_static(reason),
                })));
            }
            if !burst.is_empty() {
                ws::record_deliveries(
                    burst
                        .iter()
                        .filter(|m| matches!(m, Message::Text(_)))
                        .count() as u64,
                );
                // Most writes finish at once (the kernel takes them): only one that has to wait
                // gets a timer. Boxed: it exists only while writing, not in every idle task.
                // Nothing is read meanwhile: a client that does not take what it is sent is
                // not read either, so what waits for it is at most this burst.
                let written = {
                    let mut write = Box::pin(async {
                        for m in burst.drain(..) {
                            socket.feed(m).await.map_err(|_| ())?;
                        }
                        socket.flush().await.map_err(|_| ())
                    });
                    match futures::poll!(&mut write) {
                        std::task::Poll::Ready(r) => Ok(r),
                        std::task::Poll::Pending => tokio::time::timeout(slow, write).await,
                    }
                };
                match written {
                    Ok(Ok(())) => {}
                    Ok(Err(())) => return,
                    Err(_) => {
                        ws::record_slow_disconnect();
                        tracing::info!("closing a WebSocket too slow to take its messages");
                        let _ = tokio::time::timeout(
                            Duration::from_millis(100),
                            socket.send(Message::Close(Some(CloseFrame {
                                code: CLOSE_POLICY,
                                reason: Utf8Bytes::from_static(
                                    "Too slow to keep up; reconnect to resume.",
                                ),
                            }))),
                        )
                        .await;
                        return;
                    }
                }
                // Given back: a socket that was sent something once does not keep a burst's
                // room for the rest of its life (one allocation per burst, beside a write).
                burst = Vec::new();
            }
            if close.is_some() {
                let _ = tokio::time::timeout(Duration::from_secs(1), socket.close()).await;
                return;
            }
        }
    }
}

/// The reason given when a socket closes for the server stopping.
const RESTARTING: &str = "The server is restarting; reconnect to resume.";
/// The reason given when missed notifications could not be read back.
const NOTES_UNREAD: &str = "Missed notifications could not be read; reconnect to resume.";

/// A client frame being answered (boxed: it exists only while it runs), with the rooms the
/// client has joined, which it takes while it runs and hands back.
type Answering = std::pin::Pin<Box<dyn Future<Output = (Vec<RoomPass>, Option<Out>)> + Send>>;

/// The answer of the frame being answered, once it is ready; never, when none is.
async fn answered(answering: &mut Option<Answering>) -> (Vec<RoomPass>, Option<Out>) {
    match answering {
        None => std::future::pending().await,
        Some(running) => {
            let done = running.await;
            *answering = None;
            done
        }
    }
}

/// A frame sharing the envelope's bytes (no copy per socket).
fn frame(data: &bytes::Bytes) -> Message {
    Message::Text(Utf8Bytes::try_from(data.clone()).unwrap_or_default())
}

/// How long after a socket opens live notifications wait for its `notifications-since`, and
/// how many at most.
const NOTES_HOLD: Duration = Duration::from_millis(500);
const NOTES_HELD_MAX: usize = 64;

/// Sends the held live notifications newer than `after` (the replay sent the rest), in order,
/// and stops holding.
fn release(held: &mut Option<Vec<(i64, Message)>>, after: i64, burst: &mut Vec<Message>) {
    for (id, m) in held.take().unwrap_or_default() {
        if id > after {
            burst.push(m);
        }
    }
}

/// Adds `user`'s notifications after `after` to `burst` (a `notifications-gap` first when
/// `first` and some are no longer kept), every page; returns the last id.
async fn notes_back(
    hub: &Hub,
    user: &str,
    after: i64,
    first: bool,
    burst: &mut Vec<Message>,
) -> Result<i64, ()> {
    let mut last = after;
    let mut first = first;
    loop {
        let page = replay::page(hub.store(), user, last, first)
            .await
            .map_err(|e| tracing::warn!(error = %e, "reading missed notifications failed"))?;
        first = false;
        if let Some(gap) = page.gap {
            burst.push(text(&ServerMsg::NotificationsGap(gap)));
        }
        for row in &page.rows {
            burst.push(text(&ServerMsg::Notification(replay::wire(row))));
        }
        last = page.last_id;
        if !page.more {
            return Ok(last);
        }
    }
}

/// Adds what a room delivery calls for to `burst`.
async fn take(
    hub: &Hub,
    user: &str,
    current: &mut Room,
    r: Received,
    burst: &mut Vec<Message>,
) -> Next {
    match r {
        Received::Message(m) if !m.is_for(user) => {}
        Received::Message(m) if m.kind == "chat-removed" => {
            // Removed by the owner: say so, and stop following the room (its presence goes).
            burst.push(frame(&m.data));
            return Next::RoomEnded;
        }
        Received::Message(m) if m.kind != "chat-message" => burst.push(frame(&m.data)),
        Received::Message(m) if m.id <= current.last_id => {}
        Received::Message(m) if m.id == current.last_id + 1 => {
            burst.push(frame(&m.data));
            current.last_id = m.id;
        }
        // A message beyond the next one (some were missed: the bus already waited for them,
        // see server/reorder.rs), or dropped ones: read them back.
        Received::Message(_) | Received::Lagged(_) => {
            // `Lagged(0)`: the bus was cut off, not this socket slow; only real lags count.
            if let Received::Lagged(n @ 1..) = r {
                ws::record_drops(n);
                let now = tokio::time::Instant::now();
                current.lags.retain(|t| now.duration_since(*t) < LAG_WINDOW);
                current.lags.push(now);
                if current.lags.len() >= LAGS_MAX {
                    return Next::Close(CLOSE_POLICY, "Too slow to keep up; reconnect to resume.");
                }
            }
            let page = READBACK_PAGE.min(hub.config().history);
            // Every socket of the room that saw the same hole asks at once: one read serves them.
            match hub.since_shared(&current.pass, current.last_id, page).await {
                Ok(resume) => {
                    if let Some(gap) = resume.gap {
                        burst.push(text(&ServerMsg::ChatGap(gap)));
                    }
                    current.behind = resume.messages.len() as i64 == page;
                    for m in resume.messages {
                        burst.push(text(&ServerMsg::ChatMessage(m)));
                    }
                    current.last_id = current.last_id.max(resume.last_id);
                }
                Err(e) => {
                    // Without them the socket would skip messages: better to say so and let
                    // the client resume from its last id.
                    tracing::warn!(error = %e, "reading missed chat messages failed");
                    return Next::Close(
                        1011,
                        "Missed messages could not be read; reconnect to resume.",
                    );
                }
            }
        }
        Received::Closed => return Next::RoomEnded,
    }
    Next::Go
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::settings::ChatConfig;
    use crate::protocol::chat::UNKNOWN_TYPE;
    use crate::server::{fanout::bus::LocalBus, storage::Store};
    use futures::channel::mpsc as fmpsc;

    /// A connection's two directions as one socket: frames written go to `sink`, frames read
    /// come from `stream`.
    struct Duplex<S, R> {
        sink: S,
        stream: R,
    }

    impl<S: Sink<Message> + Unpin, R: Unpin> Sink<Message> for Duplex<S, R> {
        type Error = S::Error;
        fn poll_ready(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), S::Error>> {
            self.sink.poll_ready_unpin(cx)
        }
        fn start_send(mut self: std::pin::Pin<&mut Self>, m: Message) -> Result<(), S::Error> {
            self.sink.start_send_unpin(m)
        }
        fn poll_flush(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), S::Error>> {
            self.sink.poll_flush_unpin(cx)
        }
        fn poll_close(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), S::Error>> {
            self.sink.poll_close_unpin(cx)
        }
    }

    impl<S: Unpin, R: Stream + Unpin> Stream for Duplex<S, R> {
        type Item = R::Item;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<R::Item>> {
            self.stream.poll_next_unpin(cx)
        }
    }

    struct Client {
        to_server: fmpsc::UnboundedSender<Result<Message, axum::Error>>,
        from_server: fmpsc::UnboundedReceiver<Message>,
    }

    impl Client {
        fn send(&self, json: serde_json::Value) {
            self.to_server
                .unbounded_send(Ok(Message::Text(json.to_string().into())))
                .unwrap();
        }

        async fn next(&mut self) -> serde_json::Value {
            loop {
                let m = tokio::time::timeout(Duration::from_secs(5), self.from_server.next())
                    .await
                    .expect("a reply in time")
                    .expect("the connection is open");
                if let Message::Text(t) = m {
                    return serde_json::from_str(t.as_str()).unwrap();
                }
            }
        }
    }

    async fn hub() -> (tempfile::TempDir, Hub) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let store = Store::connect(&url).await.unwrap();
        let config = ChatConfig {
            presence_grace: Duration::from_millis(50),
            ..ChatConfig::default()
        };
        (
            dir,
            Hub::start(store, Arc::new(LocalBus::new()), Shutdown::new(), config),
        )
    }

    /// A hub with the default settings whose store and bus the test also drives (as another
    /// instance would).
    async fn hub_on_bus() -> (tempfile::TempDir, Store, Arc<LocalBus>, Hub) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let store = Store::connect(&url).await.unwrap();
        let bus = Arc::new(LocalBus::new());
        let hub = Hub::start(
            store.clone(),
            bus.clone(),
            Shutdown::new(),
            ChatConfig::default(),
        );
        (dir, store, bus, hub)
    }

    #[tokio::test]
    async fn a_message_past_a_hole_makes_the_socket_read_the_hole_back() {
        let (_dir, store, bus, hub) = hub_on_bus().await;
        let mut c = connect(&hub, "alice");
        c.send(serde_json::json!({"type":"chat-join","room":"order","lastMessageId":null}));
        assert_eq!(c.next().await["type"], "chat-joined");
        // Three messages stored (by another instance, say) but only the third heard: the
        // socket reads 1 and 2 back from storage and sends all three, in order, once.
        let new = |text: &str| crate::chat::store::NewChatMessage {
            room: "order".into(),
            author: "bob".into(),
            text: text.into(),
            at: 0,
            key: None,
        };
        let rows = store
            .append_chat_messages(&[new("one"), new("two"), new("three")], 100)
            .await
            .unwrap();
        use crate::server::fanout::bus::Bus;
        let third = ServerMsg::ChatMessage(crate::chat::hub::message_of(&rows[2]));
        bus.publish(
            crate::server::fanout::bus::Envelope::new(
                crate::chat::hub::topic("order"),
                rows[2].id,
                "chat-message",
                serde_json::to_string(&third).unwrap(),
            )
            .in_order(),
        );
        let mut texts = Vec::new();
        while texts.len() < 3 {
            let m = c.next().await;
            if m["type"] == "chat-message" {
                texts.push(m["text"].as_str().unwrap().to_string());
            }
        }
        assert_eq!(texts, ["one", "two", "three"]);
    }

    #[tokio::test]
    async fn a_reconnecting_socket_gets_missed_and_live_notifications_once_in_order() {
        // Found by the soak: a client reconnecting asks `notifications-since` its last id, and
        // a notification sent meanwhile is heard live before that is answered. The client
        // must get what it missed, then that one: each once, in order.
        let (_dir, store, bus, hub) = hub_on_bus().await;
        let create = |text: &'static str| {
            let store = store.clone();
            async move {
                store
                    .create_notification("info", "Info", text, "admin", 1, None, 100)
                    .await
                    .unwrap()
            }
        };
        let publish = |n: &crate::notify::store::NotificationRow| {
            use crate::server::fanout::bus::{Bus, Envelope, NOTIFICATIONS};
            let msg = ServerMsg::Notification(replay::wire(n));
            bus.publish(Envelope::new(
                NOTIFICATIONS,
                n.id,
                "notification",
                serde_json::to_string(&msg).unwrap(),
            ));
        };
        // Sent while the client was away: stored, never heard on its new socket.
        let missed = create("missed").await;
        let mut c = connect(&hub, "alice");
        // The session runs (and follows the notifications) once it answers a join.
        c.send(serde_json::json!({"type":"chat-join","room":"lobby","lastMessageId":null}));
        assert_eq!(c.next().await["type"], "chat-joined");
        let live = create("live").await;
        publish(&live);
        // The socket has heard it (its frames are answered in turn) before the client asks.
        c.send(serde_json::json!({"type":"chat-shout"}));
        let mut ids = Vec::new();
        loop {
            let m = c.next().await;
            if m["type"] == "notification" {
                ids.push(m["id"].as_i64().unwrap());
            }
            if m["type"] == "chat-error" {
                break;
            }
        }
        c.send(serde_json::json!({"type":"notifications-since","lastNotificationId":0}));
        let after = create("after").await;
        publish(&after);
        while ids.len() < 3 {
            let m = c.next().await;
            if m["type"] == "notification" {
                ids.push(m["id"].as_i64().unwrap());
            }
        }
        assert_eq!(ids, [missed.id, live.id, after.id]);
    }

    fn connect(hub: &Hub, user: &str) -> Client {
        let (to_server, server_in) = fmpsc::unbounded();
        let (server_out, from_server) = fmpsc::unbounded();
        tokio::spawn(run(
            hub.clone(),
            user.to_string(),
            Duplex {
                sink: server_out,
                stream: server_in,
            },
            Ends::default(),
        ));
        Client {
            to_server,
            from_server,
        }
    }

    #[tokio::test]
    async fn bad_messages_get_the_documented_sentences_and_the_connection_survives() {
        let (_dir, hub) = hub().await;
        let mut c = connect(&hub, "alice");
        c.to_server
            .unbounded_send(Ok(Message::Text("not json".into())))
            .unwrap();
        assert_eq!(c.next().await["message"], NOT_JSON);
        c.to_server
            .unbounded_send(Ok(Message::Binary(vec![1, 2, 3].into())))
            .unwrap();
        assert_eq!(c.next().await["message"], NOT_JSON);
        c.send(serde_json::json!({"type":"chat-dance"}));
        assert_eq!(c.next().await["message"], UNKNOWN_TYPE);
        c.send(serde_json::json!({"type":"chat-message","text":"hi"}));
        assert_eq!(c.next().await["message"], JOIN_FIRST);
        c.send(serde_json::json!({"type":"chat-join","room":"No Spaces"}));
        let e = c.next().await;
        assert_eq!(e["type"], "chat-error");
        assert!(e["message"].as_str().unwrap().contains("Room names"));
        c.send(serde_json::json!({"type":"chat-join"}));
        assert!(c.next().await["message"].as_str().unwrap().contains("room"));
        c.send(serde_json::json!({"type":"chat-join","room":"general","lastMessageId":null}));
        let joined = c.next().await;
        assert_eq!(joined["type"], "chat-joined");
        assert_eq!(joined["members"], serde_json::json!(["alice"]));
        c.send(serde_json::json!({"type":"chat-message","text":""}));
        assert_eq!(c.next().await["type"], "chat-error");
        c.send(serde_json::json!({"type":"chat-message","text":"hello"}));
        loop {
            let m = c.next().await;
            if m["type"] == "chat-message" {
                assert_eq!(
                    (m["id"].as_i64(), m["text"].as_str()),
                    (Some(1), Some("hello"))
                );
                break;
            }
        }
    }

    /// A sink that never takes anything: a peer whose socket stopped reading.
    struct Stuck;
    impl Sink<Message> for Stuck {
        type Error = ();
        fn poll_ready(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), ()>> {
            std::task::Poll::Pending
        }
        fn start_send(self: std::pin::Pin<&mut Self>, _: Message) -> Result<(), ()> {
            Ok(())
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), ()>> {
            std::task::Poll::Pending
        }
        fn poll_close(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), ()>> {
            std::task::Poll::Pending
        }
    }

    #[tokio::test]
    async fn a_stuck_socket_is_closed_and_counted_without_holding_up_others() {
        let (_dir, hub) = hub().await;
        let before = ws::slow_disconnects();
        let (to_server, server_in) = fmpsc::unbounded::<Result<Message, axum::Error>>();
        let stuck = tokio::spawn(run(
            hub.clone(),
            "slow".into(),
            Duplex {
                sink: Stuck,
                stream: server_in,
            },
            Ends {
                slow_client: Duration::from_millis(300),
                ..Ends::default()
            },
        ));
        to_server
            .unbounded_send(Ok(Message::Text(
                r#"{"type":"chat-join","room":"busy"}"#.into(),
            )))
            .unwrap();
        let mut fast = connect(&hub, "fast");
        fast.send(serde_json::json!({"type":"chat-join","room":"busy"}));
        assert_eq!(fast.next().await["type"], "chat-joined");
        tokio::time::timeout(Duration::from_secs(5), stuck)
            .await
            .expect("the stuck socket is closed")
            .unwrap();
        assert!(ws::slow_disconnects() > before);
        let pass = hub.admit("busy", "someone").await.unwrap();
        hub.post(&pass, "still flowing").await.unwrap();
        loop {
            let m = fast.next().await;
            if m["type"] == "chat-message" {
                assert_eq!(m["text"], "still flowing");
                break;
            }
        }
    }

    #[tokio::test]
    async fn one_socket_follows_many_rooms_acks_sends_and_refuses_a_33rd_room() {
        let (_dir, hub) = hub().await;
        let mut c = connect(&hub, "alice");
        for n in 0..ROOMS_PER_SOCKET {
            c.send(serde_json::json!({"type":"chat-join","room":format!("r{n}")}));
            assert_eq!(c.next().await["type"], "chat-joined");
        }
        c.send(serde_json::json!({"type":"chat-join","room":"one-too-many"}));
        assert_eq!(c.next().await["message"], too_many_rooms());
        // A rejoin is not a new room.
        c.send(serde_json::json!({"type":"chat-join","room":"r0"}));
        assert_eq!(c.next().await["type"], "chat-joined");
        // A message to a room not joined, a bad clientId: chat-error, the socket stays.
        c.send(serde_json::json!({"type":"chat-message","room":"nope","text":"x"}));
        assert!(c.next().await["message"]
            .as_str()
            .unwrap()
            .contains("#nope"));
        c.send(serde_json::json!({"type":"chat-message","room":"r3","text":"x","clientId":"x".repeat(65)}));
        assert!(c.next().await["message"]
            .as_str()
            .unwrap()
            .contains("clientId"));
        // Sent to r3 (not the last joined) with a clientId: acked, and heard in r3; the same
        // clientId again is acked with the same id and heard nowhere.
        for _ in 0..2 {
            c.send(serde_json::json!({"type":"chat-message","room":"r3","text":"hello","clientId":"c-1"}));
        }
        let (mut acks, mut heard) = (Vec::new(), Vec::new());
        while acks.len() < 2 || heard.is_empty() {
            let m = c.next().await;
            match m["type"].as_str() {
                Some("chat-ack") => {
                    acks.push((m["clientId"].clone(), m["id"].clone(), m["room"].clone()))
                }
                Some("chat-message") => heard.push((m["room"].clone(), m["id"].clone())),
                _ => {}
            }
        }
        let ack = (
            serde_json::json!("c-1"),
            serde_json::json!(1),
            serde_json::json!("r3"),
        );
        assert_eq!(acks, [ack.clone(), ack]);
        assert_eq!(heard, [(serde_json::json!("r3"), serde_json::json!(1))]);
        // Leaving r3 by name: its messages stop; the others still come.
        c.send(serde_json::json!({"type":"chat-leave","room":"r3"}));
        c.send(serde_json::json!({"type":"chat-leave","room":"r3"}));
        assert!(c.next().await["message"]
            .as_str()
            .unwrap()
            .contains("not in #r3"));
        let bob = |room: &str| {
            let (hub, room) = (hub.clone(), room.to_string());
            async move {
                let pass = hub.admit(&room, "bob").await.unwrap();
                hub.post(&pass, &format!("to {room}")).await.unwrap();
            }
        };
        bob("r3").await;
        bob("r4").await;
        loop {
            let m = c.next().await;
            if m["type"] == "chat-message" {
                assert_eq!(m["text"], "to r4", "nothing from the room left");
                break;
            }
        }
    }
}
