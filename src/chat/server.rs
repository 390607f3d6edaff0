//! The documented Chat routes: one set of rooms over three transports.
//!
//! - `GET /ws`: the WebSocket (`session::run`); the origin middleware already refused a
//!   foreign `Origin`, and the session cookie names the user.
//! - `GET /api/rooms/{room}/events`: SSE. Replays after `Last-Event-ID` (or `lastEventId`),
//!   a `gap` event first when that is older than the history, then live `chat-message`
//!   (SSE id = message id) and `chat-presence` events. `?once=true` is long polling over
//!   EventSource: what is newer, or the first message within 25 s, then the end.
//! - `GET /api/rooms/{room}/messages?after=&limit=`: polling; `POST` publishes.
//! - `GET /api/rooms`: the public rooms and mine, with my read position and unread count;
//!   `POST /api/rooms` makes one (public or private, with me as owner).
//! - `GET|PUT|DELETE /api/rooms/{room}/members[/{username}]`: a private room's members (the
//!   owner adds and removes; a removed member's streams of the room end at once).
//! - `POST /api/rooms/{room}/read`: my read position (my other connections hear `chat-read`).
//! - `DELETE /api/rooms/{room}/messages/{id}`: its author or an admin makes it a tombstone.
//!
//! Every transport asks [`Hub::admit`] first (`chat::access`: 403 `not_a_member` for a
//! private room's outsiders), subscribes before it reads history and skips ids it already
//! sent, so a message reaches each allowed client exactly once, in order.
//! Tests: `tests/it/chat.rs`, `tests/it/rooms.rs`.

use std::time::Duration;

use axum::{
    extract::{ws::WebSocketUpgrade, Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{any, delete, get, post, put},
    Extension, Json, Router,
};
use futures::future::BoxFuture;

use super::settings::ChatConfig;
use super::{
    hub::{json, Hub, Presence, Resume, RoomPass},
    session::{self, READBACK_PAGE},
};
use crate::{
    protocol::chat::{
        room_name_problem, ChatMessage, CreateRoom, MarkRead, MessagePage, PostMessage,
        RoomCreated, RoomInfo, RoomList, RoomMembers, RoomView, ServerMsg, JOIN_HISTORY,
        POLL_LIMIT_DEFAULT, POLL_LIMIT_MAX,
    },
    server::{
        access::identity::{CurrentUser, Publisher, StreamUser},
        clock,
        error::number_param,
        fanout::bus::Received,
        fanout::bus::Subscription,
        fanout::sse::{self, Event, SseOptions},
        fanout::topics::{Producer, TopicKind},
        fanout::ws,
        observe::metrics,
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
        .route("/ws", any(socket))
        .route("/api/rooms", get(rooms).post(create))
        .route("/api/rooms/{room}/events", get(events))
        .route("/api/rooms/{room}/messages", get(poll).post(publish))
        .route("/api/rooms/{room}/messages/{id}", delete(delete_message))
        .route("/api/rooms/{room}/members", get(members))
        .route(
            "/api/rooms/{room}/members/{username}",
            put(add_member).delete(remove_member),
        )
        .route("/api/rooms/{room}/read", post(mark_read))
        .route("/chat/send", post(send_form))
        .layer(Extension(hub))
}

/// Starts the chat's hub (its writer and presence) for `state` with `chat`: once per process,
/// at start-up.
pub fn start(state: &AppState, chat: &ChatConfig) -> Hub {
    // One window for every instance with Redis; a message waits at most 250 ms for it.
    let rate = state
        .limiter(chat.rate_per_second, Duration::from_secs(1), "chat-rate")
        .answer_within(Duration::from_millis(250));
    let typing = state
        .limiter(
            1,
            Duration::from_millis(crate::protocol::chat::TYPING_EVERY_MS),
            "chat-typing",
        )
        .answer_within(Duration::from_millis(250));
    Hub::start_with_limits(
        state.store.clone(),
        state.bus.clone(),
        state.shutdown.clone(),
        chat.clone(),
        rate,
        typing,
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
    let held = std::sync::Arc::new(state.streams.hold(
        &user,
        "websocket",
        vec!["notifications".into()],
    )?);
    let ends = session::Ends {
        shutdown: state.shutdown.clone(),
        signed_out: held.ended().clone(),
        slow_client: state.config.slow_client,
        held: Some(held.clone()),
    };
    let name = user.user.username;
    // `ends` holds the socket's place (`held`) for as long as the session runs. The session's
    // future is handed to axum as it is (an `async` block around it would keep the
    // `WebSocket` twice), and the socket is not split: one loop reads and writes it.
    Ok(ws::configure(upgrade).on_upgrade(move |socket| session::run(hub, name, socket, ends)))
}

/// `GET /api/rooms`: the public rooms and my private ones.
async fn rooms(
    State(state): State<AppState>,
    Extension(hub): Extension<Hub>,
    user: CurrentUser,
) -> Result<Json<RoomList>, ApiError> {
    let rows = state
        .store
        .rooms_for(&user.user.username, ROOMS_LISTED)
        .await?;
    Ok(Json(RoomList {
        rooms: rows
            .into_iter()
            .map(|r| RoomInfo {
                members: hub.members(&r.name).len() as u32,
                name: r.name,
                last_id: r.last_id,
                private: r.private,
                owner: r.owner,
                last_message_id: r.last_id,
                last_read_id: r.last_read_id,
                unread: r.unread,
            })
            .collect(),
    }))
}

/// `POST /api/rooms {"name","private"}` → 201, or 409 `room_exists`.
async fn create(
    State(state): State<AppState>,
    Extension(hub): Extension<Hub>,
    user: CurrentUser,
    ApiJson(body): ApiJson<CreateRoom>,
) -> Result<Response, ApiError> {
    checked_room(&body.name)?;
    let owner = &user.user.username;
    let made = state
        .store
        .create_room(&body.name, body.private, Some(owner), clock::now_ms())
        .await?;
    if !made {
        return Err(ApiError::Conflict {
            code: "room_exists",
            message: format!(
                "A room named #{} exists already; pick another name.",
                body.name
            ),
        });
    }
    hub.access().changed(&body.name);
    let room = RoomView {
        name: body.name,
        private: body.private,
        owner: Some(owner.clone()),
    };
    Ok((StatusCode::CREATED, Json(RoomCreated { room })).into_response())
}

/// The room `room` as its owner manages it: 404 when unknown, 403 naming the owner when
/// `user` is not it.
async fn owned(
    hub: &Hub,
    room: &str,
    user: &CurrentUser,
) -> Result<crate::chat::store::RoomAccessRow, ApiError> {
    checked_room(room)?;
    let Some(access) = hub.store().room_access(room).await? else {
        return Err(ApiError::NotFound(format!(
            "There is no room named #{room}."
        )));
    };
    if !access.private {
        return Err(ApiError::bad_request(
            "public_room",
            format!("#{room} is public: everyone may join it, so it has no member list to change."),
        ));
    }
    if access.owner.as_deref() != Some(user.user.username.as_str()) {
        return Err(ApiError::Forbidden(format!(
            "Only the owner of #{room}, {}, may change its members.",
            access.owner.as_deref().unwrap_or("nobody")
        )));
    }
    Ok(access)
}

/// `GET /api/rooms/{room}/members`: a private room's members (for its members), or who is
/// present in a public one.
async fn members(
    Extension(hub): Extension<Hub>,
    user: CurrentUser,
    Path(room): Path<String>,
) -> Result<Json<RoomMembers>, ApiError> {
    let pass = hub.admit(&room, &user.user.username).await?;
    let access = hub.access().lookup(pass.room()).await?;
    Ok(Json(RoomMembers {
        room: RoomView {
            name: room.clone(),
            private: access.private,
            owner: access.owner.clone(),
        },
        members: if access.private {
            access.members.clone()
        } else {
            hub.members(&room)
        },
    }))
}

/// `PUT /api/rooms/{room}/members/{username}` (the owner) → 204.
async fn add_member(
    State(state): State<AppState>,
    Extension(hub): Extension<Hub>,
    user: CurrentUser,
    Path((room, username)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    owned(&hub, &room, &user).await?;
    if state.store.user_by_name(&username).await?.is_none() {
        return Err(ApiError::NotFound(format!(
            "No account is named {username}."
        )));
    }
    state
        .store
        .add_member(&room, &username, clock::now_ms())
        .await?;
    hub.access().changed(&room);
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /api/rooms/{room}/members/{username}` (the owner) → 204; their live streams of
/// the room end with `chat-removed` / `removed`, on every instance.
async fn remove_member(
    Extension(hub): Extension<Hub>,
    user: CurrentUser,
    Path((room, username)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let access = owned(&hub, &room, &user).await?;
    if access.owner.as_deref() == Some(username.as_str()) {
        return Err(ApiError::bad_request(
            "owner_stays",
            format!("{username} owns #{room} and stays its member."),
        ));
    }
    if !hub.store().remove_member(&room, &username).await? {
        return Err(ApiError::NotFound(format!(
            "{username} is not a member of #{room}."
        )));
    }
    // Forget the access first, then tell the member's connections: every instance refuses
    // them from here on, and their open streams of the room end as they hear it.
    hub.access().changed(&room);
    hub.tell_room(
        &room,
        "chat-removed",
        &ServerMsg::ChatRemoved { room: room.clone() },
        Some(&username),
    );
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/rooms/{room}/read {"lastReadId"}` → 204; my other connections hear `chat-read`.
async fn mark_read(
    Extension(hub): Extension<Hub>,
    user: CurrentUser,
    Path(room): Path<String>,
    ApiJson(body): ApiJson<MarkRead>,
) -> Result<StatusCode, ApiError> {
    let pass = hub.admit(&room, &user.user.username).await?;
    if body.last_read_id < 0 {
        return Err(ApiError::bad_parameter(
            "lastReadId",
            "is a message id, 0 or more.",
        ));
    }
    let last = hub.store().chat_room_bounds(&room).await?.last_id;
    if body.last_read_id > last {
        return Err(ApiError::bad_parameter(
            "lastReadId",
            format!("is past the room's last message, {last}."),
        ));
    }
    let now = hub
        .store()
        .set_read(pass.user(), &room, body.last_read_id)
        .await?;
    hub.tell_user(
        pass.user(),
        "chat-read",
        &ServerMsg::ChatRead {
            room,
            last_read_id: now,
        },
    );
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /api/rooms/{room}/messages/{id}` (its author or an admin) → 204; every
/// transport hears `chat-delete`, and the history keeps the id without the text.
async fn delete_message(
    Extension(hub): Extension<Hub>,
    user: CurrentUser,
    Path((room, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    checked_room(&room)?;
    let id = number_param("id", &id, 1..=i64::MAX)?;
    let me = &user.user.username;
    if !user.user.is_admin() {
        hub.admit(&room, me).await?;
    }
    let Some(author) = hub.store().chat_message_author(&room, id).await? else {
        return Err(ApiError::NotFound(format!(
            "#{room} has no message {id} (it may be older than the kept history)."
        )));
    };
    if &author != me && !user.user.is_admin() {
        return Err(ApiError::Forbidden(format!(
            "Only its author, {author}, or an admin may delete message {id}."
        )));
    }
    hub.store().delete_chat_message(&room, id).await?;
    hub.tell_room(
        &room,
        "chat-delete",
        &ServerMsg::ChatDelete {
            room: room.clone(),
            id,
        },
        None,
    );
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/rooms/{room}/messages {"text"}` → 201 the stored message.
async fn publish(
    Extension(hub): Extension<Hub>,
    publisher: Publisher,
    Path(room): Path<String>,
    headers: axum::http::HeaderMap,
    ApiJson(body): ApiJson<PostMessage>,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    // A user, or another server by its API key (the key's name signs the message).
    let pass = hub.admit(&room, publisher.name()).await?;
    // A repeat of the key gets the first 201 body, and nothing is stored again.
    let (message, repeat) = hub.send(&pass, &body.text, key.as_deref()).await?;
    if !repeat {
        metrics::record_received(metrics::Inbound::Http);
    }
    Ok((StatusCode::CREATED, Json::<ChatMessage>(message)).into_response())
}

/// The `Idempotency-Key` header, checked like a `clientId` (1–64 characters).
fn idempotency_key(headers: &axum::http::HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value.to_str().map_err(|_| {
        ApiError::bad_request(
            "invalid_idempotency_key",
            "`Idempotency-Key` must be visible ASCII.",
        )
    })?;
    match crate::protocol::chat::client_id_problem(key, "Idempotency-Key") {
        Some(problem) => Err(ApiError::bad_request("invalid_idempotency_key", problem)),
        None => Ok(Some(key.to_string())),
    }
}

/// The `/chat` page's composer without JavaScript.
#[derive(serde::Deserialize)]
struct SendForm {
    room: String,
    text: String,
}

/// `POST /chat/send` (a plain form, for browsers without JavaScript): posts like the JSON
/// route, then sends the browser back to the room, where the new message is rendered; a
/// refusal comes back as `?error=` with its sentence.
async fn send_form(
    Extension(hub): Extension<Hub>,
    user: CurrentUser,
    axum::Form(form): axum::Form<SendForm>,
) -> Response {
    let room = if room_name_problem(&form.room).is_none() {
        form.room.clone()
    } else {
        crate::protocol::chat::DEFAULT_ROOM.to_string()
    };
    let refused = match hub.admit(&form.room, &user.user.username).await {
        Ok(pass) => hub
            .post(&pass, &form.text)
            .await
            .err()
            .map(|e| e.sentence()),
        Err(r) => Some(r.sentence()),
    };
    let mut to = url::form_urlencoded::Serializer::new(String::new());
    to.append_pair("room", &room);
    if let Some(sentence) = refused {
        to.append_pair("error", &sentence);
    }
    axum::response::Redirect::to(&format!("/chat?{}", to.finish())).into_response()
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
    let pass = hub.admit(&room, &user.user.username).await?;
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
    hub.lease(&pass, &user.session_id.to_string());
    let resume = hub
        .since(&pass, after, limit, limit)
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
    let pass = hub.admit(&room, &user.0.user.username).await?;
    let after = sse::last_event_id(&headers, &query)?;
    let once = query
        .iter()
        .any(|(k, v)| k == "once" && matches!(v.as_str(), "true" | "1"));
    // Counted (429 past the quota) before the user is shown as present.
    let base = SseOptions::for_stream(&state, &user.0, vec![format!("room:{room}")])?;
    let username = user.0.user.username.clone();
    // Enter, then subscribe before reading history: nothing published in between is missed.
    let presence = hub.enter(&pass);
    // A long poll keeps its user present between polls with a lease taken as it ends.
    let lease = once.then(|| LeaseOnExit {
        hub: hub.clone(),
        pass: pass.clone(),
        key: user.0.session_id.to_string(),
    });
    let subscription = hub.subscribe(&pass);
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
    let produce = follow(
        hub,
        pass,
        username,
        after,
        once,
        presence,
        lease,
        subscription,
    );
    Ok(sse::stream(options, state.shutdown.clone(), produce))
}

/// The `room:<name>` topic of `GET /api/events`: the same stream as
/// `GET /api/rooms/{room}/events` (a private room's outsider is refused), and the user is
/// present in the room while it lasts.
pub struct RoomTopic(pub Hub);

impl TopicKind for RoomTopic {
    fn name(&self) -> &'static str {
        "room"
    }

    fn problem(&self, arg: Option<&str>) -> Option<String> {
        match arg {
            None => Some("`room:` takes a room name, like `room:general`.".into()),
            Some(room) => room_name_problem(room),
        }
    }

    fn open<'a>(
        &'a self,
        _state: &'a AppState,
        user: &'a CurrentUser,
        arg: Option<&'a str>,
        after: Option<i64>,
    ) -> BoxFuture<'a, Result<Producer, ApiError>> {
        Box::pin(async move {
            let hub = self.0.clone();
            let pass = hub
                .admit(arg.unwrap_or_default(), &user.user.username)
                .await?;
            let presence = hub.enter(&pass);
            let subscription = hub.subscribe(&pass);
            let username = user.user.username.clone();
            Ok(follow(
                hub,
                pass,
                username,
                after,
                false,
                presence,
                None,
                subscription,
            ))
        })
    }
}

/// The producer of a room's stream: `chat-joined` (its id: where the replay starts), the
/// messages after `after` (or the latest), then live ones; with `once`, it ends after the
/// first message sent.
#[allow(clippy::too_many_arguments)]
fn follow(
    hub: Hub,
    pass: RoomPass,
    username: String,
    after: Option<i64>,
    once: bool,
    presence: Presence,
    lease: Option<LeaseOnExit>,
    mut subscription: Subscription,
) -> Producer {
    let page = READBACK_PAGE.min(hub.config().history);
    let room = pass.room().to_string();
    Box::new(move |tx: sse::Sender| {
        Box::pin(async move {
            let _presence = presence;
            // Declared after the presence, so dropped before it: the lease holds the user.
            let _lease = lease;
            // The database reads are boxed, here and below: an idle stream's task keeps only
            // the loop's state, not room for a query (heaptrack: 1.2 kB a stream, was 1.8).
            let resume = match Box::pin(hub.since(&pass, after, JOIN_HISTORY as i64, page)).await {
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
            let mut last =
                match Box::pin(send_pages(&hub, &tx, &pass, resume, after.is_some(), page)).await {
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
                    Received::Message(m) if !m.is_for(&username) => {}
                    Received::Message(m) if m.kind == "chat-removed" => {
                        // Removed from the room by its owner: say so and end; a reconnect is
                        // refused with 403.
                        let _ = tx.send(&Event::new(m.text()).name("removed")).await;
                        return;
                    }
                    Received::Message(m) if m.kind != "chat-message" => {
                        let event = Event::new(m.text()).name(&m.kind);
                        if tx.send(&event).await.is_err() {
                            return;
                        }
                    }
                    Received::Message(m) if m.id <= last => {}
                    Received::Message(m) if m.id == last + 1 => {
                        // `event: chat-message`, encoded once for all the room's streams.
                        if tx.send_envelope(&m).await.is_err() {
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
                        match Box::pin(replay(&hub, &tx, &pass, last, page)).await {
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
        }) as BoxFuture<'static, ()>
    })
}

/// Renews a poller's presence lease when its long poll ends.
struct LeaseOnExit {
    hub: Hub,
    pass: RoomPass,
    key: String,
}

impl Drop for LeaseOnExit {
    fn drop(&mut self) {
        self.hub.lease(&self.pass, &self.key);
    }
}

/// Sends the messages after `after`, a `gap` first if some are no longer kept, a page of
/// `page` at a time. Returns the last id sent (or known) and how many went out.
async fn replay(
    hub: &Hub,
    tx: &sse::Sender,
    pass: &RoomPass,
    after: i64,
    page: i64,
) -> Result<(i64, usize), ()> {
    // Every stream of the room that saw the same hole asks at once: one read serves them.
    let resume = hub.since_shared(pass, after, page).await.map_err(
        |e| tracing::warn!(error = %e, room = pass.room(), "replaying chat messages failed"),
    )?;
    send_pages(hub, tx, pass, resume, true, page).await
}

/// Sends `first`, then (when `resuming` and a page came full) the pages after it, one at a
/// time: a replay of the whole history never sits in memory at once.
async fn send_pages(
    hub: &Hub,
    tx: &sse::Sender,
    pass: &RoomPass,
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
        resume = hub.since(pass, Some(last), 0, page).await.map_err(
            |e| tracing::warn!(error = %e, room = pass.room(), "replaying chat messages failed"),
        )?;
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
