//! The documented Chat routes: one set of rooms over three transports.
//!
//! - `GET /ws`: the WebSocket (`session::run`); the origin middleware already refused a
//!   foreign `Origin`, and the session cookie names the user.
//! - `GET /api/rooms/{room}/events`: SSE. Replays after `Last-Event-ID` (or `lastEventId`),
//!   a `gap` event first when that is older than the history, then live `chat-message`
//!   (SSE id = message id) and `chat-presence` events. `?once=true` is long polling over
//!   EventSource: what is newer, or the first message within 25 s, then the end.
//! - `GET /api/rooms/{room}/messages?after=&limit=`: polling; `POST` publishes.
//! - `GET /api/rooms`: the rooms and how many are in each.
//!
//! Every transport subscribes before it reads history and skips ids it already sent, so a
//! message reaches each client exactly once, in order. Tests: `tests/it/chat.rs`.

use std::time::Duration;

use axum::{
    extract::{ws::WebSocketUpgrade, Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Extension, Json, Router,
};
use futures::StreamExt;

use super::settings::ChatConfig;
use super::{
    hub::{json, Hub, Resume},
    session::{self, READBACK_PAGE},
};
use crate::{
    protocol::chat::{
        room_name_problem, ChatMessage, MessagePage, PostMessage, RoomInfo, RoomList, ServerMsg,
        JOIN_HISTORY, POLL_LIMIT_DEFAULT, POLL_LIMIT_MAX,
    },
    server::{
        access::identity::{CurrentUser, StreamUser},
        error::number_param,
        fanout::bus::Received,
        fanout::sse::{self, Event, SseOptions},
        fanout::ws,
        ApiError, ApiJson, AppState,
    },
};

/// How long a long poll (`?once=true`) waits for the first new message.
const LONG_POLL: Duration = Duration::from_secs(25);
/// How soon the browser comes back after a long poll ends.
const LONG_POLL_RETRY: Duration = Duration::from_millis(500);
/// Rooms listed at most.
const ROOMS_LISTED: i64 = 100;

/// The routes, with the hub (writer, presence) started on `state`.
pub fn router(hub: Hub) -> Router<AppState> {
    Router::new()
        .route("/ws", get(socket))
        .route("/api/rooms", get(rooms))
        .route("/api/rooms/{room}/events", get(events))
        .route("/api/rooms/{room}/messages", get(poll).post(publish))
        .layer(Extension(hub))
}

/// Starts the chat's hub (its writer and presence) for `state` with `chat`: once per process,
/// at start-up.
pub fn start(state: &AppState, chat: &ChatConfig) -> Hub {
    // One window for every instance with Redis; a message waits at most 250 ms for it.
    let rate = state
        .limiter(chat.rate_per_second, Duration::from_secs(1), "chat-rate")
        .answer_within(Duration::from_millis(250));
    Hub::start_with_rate(
        state.store.clone(),
        state.bus.clone(),
        state.shutdown.clone(),
        chat.clone(),
        rate,
    )
}

fn checked_room(room: &str) -> Result<(), ApiError> {
    match room_name_problem(room) {
        Some(problem) => Err(ApiError::bad_request("invalid_room", problem)),
        None => Ok(()),
    }
}

fn unavailable(e: sqlx::Error) -> ApiError {
    ApiError::Internal(anyhow::anyhow!("reading chat history failed: {e}"))
}

/// `GET /ws`. Over the user's quota the upgrade is refused with 429, before it happens.
async fn socket(
    State(state): State<AppState>,
    Extension(hub): Extension<Hub>,
    user: CurrentUser,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let held = state.streams.hold(&user)?;
    let ends = session::Ends {
        shutdown: state.shutdown.clone(),
        signed_out: held.ended().clone(),
        slow_client: state.config.slow_client,
    };
    let name = user.user.username;
    Ok(ws::configure(upgrade).on_upgrade(move |socket| async move {
        let _held = held;
        let (sink, stream) = socket.split();
        session::run(hub, name, sink, stream, ends).await;
    }))
}

/// `GET /api/rooms`.
async fn rooms(
    State(state): State<AppState>,
    Extension(hub): Extension<Hub>,
    _user: CurrentUser,
) -> Result<Json<RoomList>, ApiError> {
    let rows = state.store.chat_rooms(ROOMS_LISTED).await?;
    Ok(Json(RoomList {
        rooms: rows
            .into_iter()
            .map(|r| RoomInfo {
                members: hub.members(&r.name).len() as u32,
                name: r.name,
                last_id: r.last_id,
            })
            .collect(),
    }))
}

/// `POST /api/rooms/{room}/messages {"text"}` → 201 the stored message.
async fn publish(
    Extension(hub): Extension<Hub>,
    user: CurrentUser,
    Path(room): Path<String>,
    ApiJson(body): ApiJson<PostMessage>,
) -> Result<Response, ApiError> {
    checked_room(&room)?;
    let message = hub
        .post(&room, &user.user.username, &body.text)
        .await
        .map_err(|e| match e {
            super::hub::PostError::Invalid(s) => ApiError::bad_request("invalid_message", s),
            super::hub::PostError::SlowDown => ApiError::SlowDown(e.sentence()),
            super::hub::PostError::Unavailable => ApiError::Unavailable(e.sentence()),
        })?;
    Ok((StatusCode::CREATED, Json::<ChatMessage>(message)).into_response())
}

/// `GET /api/rooms/{room}/messages?after=&limit=`: up to `limit` messages after `after`
/// (without `after`: the latest ones), `gap` when `after` is older than the history. Each
/// poll keeps the poller present for a while.
async fn poll(
    Extension(hub): Extension<Hub>,
    user: CurrentUser,
    Path(room): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Json<MessagePage>, ApiError> {
    checked_room(&room)?;
    let mut after = None;
    let mut limit = POLL_LIMIT_DEFAULT;
    for (k, v) in &query {
        match k.as_str() {
            "after" if !v.trim().is_empty() => {
                after = Some(number_param("after", v, 0..=i64::MAX)?)
            }
            "limit" => limit = number_param("limit", v, 1..=POLL_LIMIT_MAX)?,
            _ => {}
        }
    }
    hub.lease(&room, &user.user.username, &user.session_id.to_string());
    let resume = hub
        .since(&room, after, limit, limit)
        .await
        .map_err(unavailable)?;
    Ok(Json(MessagePage {
        gap: resume.gap.is_some(),
        messages: resume.messages,
        members: hub.members(&room),
        last_id: resume.last_id,
    }))
}

/// `GET /api/rooms/{room}/events`: see the module docs.
async fn events(
    State(state): State<AppState>,
    Extension(hub): Extension<Hub>,
    user: StreamUser,
    Path(room): Path<String>,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    checked_room(&room)?;
    let after = sse::last_event_id(&headers, &query)?;
    let once = query
        .iter()
        .any(|(k, v)| k == "once" && matches!(v.as_str(), "true" | "1"));
    // Counted (429 past the quota) before the user is shown as present.
    let base = SseOptions::for_user(&state, &user.0)?;
    let username = user.0.user.username.clone();
    // Enter, then subscribe before reading history: nothing published in between is missed.
    let presence = hub.enter(&room, &username);
    // A long poll keeps its user present between polls with a lease taken as it ends.
    let lease = once.then(|| LeaseOnExit {
        hub: hub.clone(),
        room: room.clone(),
        user: username.clone(),
        key: user.0.session_id.to_string(),
    });
    let mut subscription = hub.subscribe(&room);
    let options = SseOptions {
        timeout: Some(if once {
            LONG_POLL
        } else {
            state.config.sse_max
        }),
        retry: Some(if once {
            LONG_POLL_RETRY
        } else {
            SseOptions::default().retry.unwrap_or_default()
        }),
        send_limit: Some(state.config.slow_client),
        ..base
    };
    let page = READBACK_PAGE.min(hub.config().history);
    Ok(sse::stream(
        options,
        state.shutdown.clone(),
        move |tx| async move {
            let _presence = presence;
            // Declared after the presence, so dropped before it: the lease holds the user.
            let _lease = lease;
            let resume = match hub.since(&room, after, JOIN_HISTORY as i64, page).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, room, "reading chat history failed");
                    return;
                }
            };
            // The members, with the id the replay follows: a client that drops before the first
            // message still reconnects with the right Last-Event-ID.
            let members = ServerMsg::ChatJoined {
                room: room.clone(),
                members: hub.members(&room),
                history: Vec::new(),
            };
            let joined = Event::new(json(&members))
                .id(resume.after_id)
                .name("chat-joined");
            if tx.send(&joined).await.is_err() {
                return;
            }
            let mut last = match send_pages(&hub, &tx, &room, resume, after.is_some(), page).await {
                Ok((_, sent)) if once && sent > 0 => return,
                Ok((last, _)) => last,
                Err(()) => return,
            };
            loop {
                let received = tokio::select! {
                    r = subscription.recv() => r,
                    _ = tx.gone() => return,
                };
                match received {
                    Received::Message(m) if m.kind != "chat-message" => {
                        let event = Event::new(m.text()).name(&m.kind);
                        if tx.send(&event).await.is_err() {
                            return;
                        }
                    }
                    Received::Message(m) if m.id <= last => {}
                    Received::Message(m) if m.id == last + 1 => {
                        let event = Event::new(m.text()).id(m.id).name("chat-message");
                        if tx.send(&event).await.is_err() {
                            return;
                        }
                        last = m.id;
                        if once {
                            return;
                        }
                    }
                    Received::Message(_) | Received::Lagged(_) => {
                        if let Received::Lagged(n) = received {
                            ws::record_drops(n);
                        }
                        match replay(&hub, &tx, &room, last, page).await {
                            Ok((l, sent)) => {
                                last = l;
                                if once && sent > 0 {
                                    return;
                                }
                            }
                            Err(()) => return,
                        }
                    }
                    Received::Closed => return,
                }
            }
        },
    ))
}

/// Renews a poller's presence lease when its long poll ends.
struct LeaseOnExit {
    hub: Hub,
    room: String,
    user: String,
    key: String,
}

impl Drop for LeaseOnExit {
    fn drop(&mut self) {
        self.hub.lease(&self.room, &self.user, &self.key);
    }
}

/// Sends the messages after `after`, a `gap` first if some are no longer kept, a page of
/// `page` at a time. Returns the last id sent (or known) and how many went out.
async fn replay(
    hub: &Hub,
    tx: &sse::Sender,
    room: &str,
    after: i64,
    page: i64,
) -> Result<(i64, usize), ()> {
    let resume = hub
        .since(room, Some(after), 0, page)
        .await
        .map_err(|e| tracing::warn!(error = %e, room, "replaying chat messages failed"))?;
    send_pages(hub, tx, room, resume, true, page).await
}

/// Sends `first`, then (when `resuming` and a page came full) the pages after it, one at a
/// time: a replay of the whole history never sits in memory at once.
async fn send_pages(
    hub: &Hub,
    tx: &sse::Sender,
    room: &str,
    first: Resume,
    resuming: bool,
    page: i64,
) -> Result<(i64, usize), ()> {
    let mut resume = first;
    let mut total = 0;
    loop {
        let full = resuming && resume.messages.len() as i64 == page;
        let (last, sent) = send_resume(tx, resume).await?;
        total += sent;
        if !full {
            return Ok((last, total));
        }
        resume = hub
            .since(room, Some(last), 0, page)
            .await
            .map_err(|e| tracing::warn!(error = %e, room, "replaying chat messages failed"))?;
    }
}

/// Sends a resume: the `gap` event if any, then the messages.
async fn send_resume(tx: &sse::Sender, resume: Resume) -> Result<(i64, usize), ()> {
    if let Some(gap) = &resume.gap {
        let data = serde_json::to_string(gap).expect("serializable");
        tx.send(&Event::new(data).name("gap"))
            .await
            .map_err(|_| ())?;
    }
    let sent = resume.messages.len();
    for m in resume.messages {
        let id = m.id;
        let event = Event::new(json(&ServerMsg::ChatMessage(m)))
            .id(id)
            .name("chat-message");
        tx.send(&event).await.map_err(|_| ())?;
    }
    Ok((resume.last_id, sent))
}
