//! Notifications (docs/interface.md, "Notifications"): an admin sends one, every WebSocket and every
//! subscriber of `/api/notifications/events` gets it, and every page shows it as a toast.
//!
//! - `server` (ssr): `POST /api/notifications`, `GET /api/notifications/events`.
//! - `view` and `client`: `<Toasts/>` (in the app shell) and the admin's `<NotifyForm/>`.
//!
//! Tests: `tests/it/chat.rs`; `end2end/tests/chat.spec.ts`.

#[cfg(feature = "ssr")]
pub mod replay;
#[cfg(feature = "ssr")]
mod server;
#[cfg(feature = "ssr")]
pub mod store;

#[cfg(feature = "ssr")]
pub use server::{router, NotificationsTopic};

mod client;
mod view;

pub use client::Heard;
pub use view::{Bell, Feed, NotifyPage, Toasts};

use leptos::prelude::*;

/// Who is asking, for the notifications page: `None` signed out, else whether an admin.
#[server(prefix = "/sf", endpoint = "notify_role")]
pub async fn notify_role() -> Result<Option<bool>, ServerFnError> {
    use crate::server::{access::identity::MaybeUser, AppState};
    let Some(state) = use_context::<AppState>() else {
        return Ok(None);
    };
    let user = MaybeUser::in_server_fn(&state).await?;
    Ok(user.map(|u| u.user.is_admin()))
}
