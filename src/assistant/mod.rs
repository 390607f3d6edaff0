//! The assistant (issue 19): an AI model's answer streamed token by token, relayed through
//! the server so the provider's key stays there, stored as it streams so a reload or another
//! instance resumes mid-answer (docs/interface.md, "AI token streams").
//!
//! - `runner` (ssr): each answer's task (built-in model or provider, through
//!   `crate::upstream`), the token writer, stop, claims and restarts.
//! - `server` (ssr): `POST/GET /api/assistant/chats`, `GET /api/assistant/chats/{id}` (with the
//!   answer so far), `GET …/{id}/events` (SSE, `Last-Event-ID`), `POST …/{id}/cancel`, the
//!   `assistant:<id>` topic of `GET /api/events`, and the built-in model's
//!   `POST /v1/chat/completions`.
//! - `model` (ssr): the built-in model. `settings` (ssr): its variables. `store` (ssr): chats
//!   and their token chunks.
//! - `view` and `client`: the `/assistant` page and its browser calls; [`assistant_page`]
//!   gives the page its first render, with the answer so far.
//!
//! The provider formats are `protocol::ai`, the wire types `protocol::assistant`.
//! Tests: unit tests in each file; `tests/it/assistant.rs`; `end2end/tests/assistant.spec.ts`.
mod client;
#[cfg(feature = "ssr")]
pub mod model;
#[cfg(feature = "ssr")]
pub mod runner;
#[cfg(feature = "ssr")]
mod server;
#[cfg(feature = "ssr")]
pub mod settings;
#[cfg(feature = "ssr")]
pub mod store;

mod view;

#[cfg(feature = "ssr")]
pub use server::{router, start, ChatTopic};
pub use view::AssistantPage;

use leptos::prelude::*;

use crate::protocol::assistant::AssistantSnapshot;

/// Chats the page lists.
pub const LIST: i64 = 20;

/// The `/assistant` page's first render: the signed-in user's chats, and chat `id` (if it is
/// theirs) with its answer as stored now.
#[server(prefix = "/sf", endpoint = "assistant_page")]
pub async fn assistant_page(id: Option<i64>) -> Result<AssistantSnapshot, ServerFnError> {
    use crate::server::{access::identity::MaybeUser, error::server_fn_failed, AppState};
    let empty = AssistantSnapshot {
        user: None,
        chats: Vec::new(),
        chat: None,
    };
    let Some(state) = use_context::<AppState>() else {
        return Ok(empty);
    };
    let Some(user) = MaybeUser::in_server_fn(&state).await? else {
        return Ok(empty);
    };
    let store = &state.store;
    let chats = server::summaries(store, user.user_id, LIST)
        .await
        .map_err(server_fn_failed)?;
    let chat = match id {
        Some(id) => match store.chat(id).await.map_err(server_fn_failed)? {
            Some(chat) if chat.owner_id == user.user_id => Some(
                server::view_of(store, &chat)
                    .await
                    .map_err(server_fn_failed)?,
            ),
            _ => None,
        },
        None => None,
    };
    Ok(AssistantSnapshot {
        user: Some(user.user.username.clone()),
        chats,
        chat,
    })
}
