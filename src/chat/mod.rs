//! Chat rooms over three transports: WebSocket, SSE + POST, and polling, with
//! presence, resume after a drop, backpressure and limits.
//!
//! - `hub` (ssr): storing (batched writer), presence with a grace period, rate limit,
//!   history for resumes. Every broadcast goes through `server::fanout::bus`.
//! - `session` (ssr): one WebSocket connection, generic over `Sink`/`Stream`.
//! - `server` (ssr): `GET /ws`, `GET /api/rooms`, `GET /api/rooms/{room}/events`,
//!   `GET|POST /api/rooms/{room}/messages`.
//! - `view` and `client`: the `/chat` page and its three transports in the browser;
//!   [`chat_page`] gives it its first render.
//!
//! Wire types: `protocol::chat`. Storage: `store` (this folder).
//! Tests: unit tests in each file; `tests/it/chat.rs`; `end2end/tests/chat.spec.ts`.

#[cfg(feature = "ssr")]
pub mod access;
#[cfg(feature = "ssr")]
pub mod hub;
#[cfg(feature = "ssr")]
mod presence;
#[cfg(feature = "ssr")]
mod server;
#[cfg(feature = "ssr")]
pub mod session;
#[cfg(feature = "ssr")]
pub mod settings;
#[cfg(feature = "ssr")]
pub mod store;
#[cfg(feature = "ssr")]
mod wire;
#[cfg(feature = "ssr")]
mod writer;

#[cfg(feature = "ssr")]
pub use server::{router, start, RoomTopic};

mod client;
mod view;

pub use view::ChatPage;

use leptos::prelude::*;

use crate::protocol::chat::ChatSnapshot;

/// The `/chat` page's first render: the rooms, and `room`'s latest messages with the id the
/// live connection continues after (members arrive with the connection).
#[server(prefix = "/sf", endpoint = "chat_page")]
pub async fn chat_page(room: String) -> Result<ChatSnapshot, ServerFnError> {
    use crate::{
        protocol::chat::{room_name_problem, RoomInfo, JOIN_HISTORY},
        server::{access::identity::MaybeUser, error::server_fn_failed, AppState},
    };
    /// Rooms the page lists at most.
    const ROOMS_SHOWN: i64 = 30;
    let mut snapshot = ChatSnapshot {
        user: None,
        admin: false,
        rooms: Vec::new(),
        room: room.clone(),
        members: Vec::new(),
        history: Vec::new(),
        last_id: 0,
    };
    let Some(state) = use_context::<AppState>() else {
        return Ok(snapshot);
    };
    let user = MaybeUser::in_server_fn(&state).await?;
    let Some(user) = user else {
        return Ok(snapshot);
    };
    if let Some(problem) = room_name_problem(&room) {
        return Err(ServerFnError::new(problem));
    }
    let store = &state.store;
    let failed = server_fn_failed::<sqlx::Error>;
    snapshot.user = Some(user.user.username.clone());
    snapshot.admin = user.user.is_admin();
    // The same rule as every transport (`access::decide`): a private room's outsider sees
    // no history.
    if let Some(access) = store.room_access(&room).await.map_err(failed)? {
        access::decide(&room, &access, &user.user.username)
            .map_err(|refused| ServerFnError::new(refused.sentence()))?;
    }
    snapshot.rooms = store
        .rooms_for(&user.user.username, ROOMS_SHOWN)
        .await
        .map_err(failed)?
        .into_iter()
        .map(|r| RoomInfo {
            name: r.name,
            last_id: r.last_id,
            members: 0,
            private: r.private,
            owner: r.owner,
            last_message_id: r.last_id,
            last_read_id: r.last_read_id,
            unread: r.unread,
        })
        .collect();
    // The history up to the room's last id as read here: the live connection resumes
    // after it, so a message stored meanwhile comes once, over the connection.
    let bounds = store.chat_room_bounds(&room).await.map_err(failed)?;
    let from = (bounds.last_id - JOIN_HISTORY as i64).max(0);
    snapshot.history = store
        .chat_messages_after(&room, from, bounds.last_id - from)
        .await
        .map_err(failed)?
        .iter()
        .map(hub::message_of)
        .collect();
    snapshot.last_id = bounds.last_id;
    Ok(snapshot)
}
