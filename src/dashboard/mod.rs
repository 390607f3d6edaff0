//! The live dashboard: the server's metrics once a second and, for admins, its own
//! log, both over Server-Sent Events, drawn as plots and a log tail on `/dashboard`.
//!
//! - `server` (ssr): `GET /api/metrics/events` (every signed-in user; with `?logs=<level>` an
//!   admin gets the log records on the same stream, so the page holds one stream, not two) and
//!   `GET /api/logs/events` (admins). Counters: `server::observe::metrics`; the log ring:
//!   `server::observe::logs`.
//! - `view` and `client`: the `/dashboard` page; [`dashboard_page`] gives its first render.
//!
//! - `keys` (ssr): the admin's API keys for other servers (`/api/keys`).
//!
//! Wire types: `protocol::metrics`, `protocol::keys`.
//! Tests: unit tests in `server::observe::metrics`, `server::observe::logs` and `view`; `tests/it/dashboard.rs`;
//! `end2end/tests/dashboard.spec.ts`.

#[cfg(feature = "ssr")]
mod keys;
#[cfg(feature = "ssr")]
mod server;
#[cfg(feature = "ssr")]
pub use server::{LogsTopic, MetricsTopic};

/// The dashboard's routes: its streams, the admin's connection list, and the API keys.
#[cfg(feature = "ssr")]
pub fn router() -> axum::Router<crate::server::AppState> {
    server::router().merge(keys::router())
}

mod client;
mod view;

pub use view::DashboardPage;

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::protocol::metrics::Metrics;

/// What the dashboard's first render needs: who is asking, and the newest sample.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DashboardSnapshot {
    /// Signed in at all (the streams need a session).
    pub signed_in: bool,
    /// An admin (the log tail is theirs).
    pub admin: bool,
    /// The newest sample, if one was taken yet.
    pub metrics: Option<Metrics>,
}

/// The `/dashboard` page's first render.
#[server(prefix = "/sf", endpoint = "dashboard_page")]
pub async fn dashboard_page() -> Result<DashboardSnapshot, ServerFnError> {
    use crate::server::{access::identity::MaybeUser, AppState};
    let Some(state) = use_context::<AppState>() else {
        return Ok(DashboardSnapshot::default());
    };
    let user = MaybeUser::in_server_fn(&state).await?;
    let Some(user) = user else {
        return Ok(DashboardSnapshot::default());
    };
    let latest = state.metrics.latest();
    Ok(DashboardSnapshot {
        signed_in: true,
        admin: user.user.is_admin(),
        metrics: (!latest.at.is_empty()).then(|| (*latest).clone()),
    })
}
