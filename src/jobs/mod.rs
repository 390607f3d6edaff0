//! Durable jobs watched over Server-Sent Events: the queue and its workers, the
//! Jobs routes (docs/interface.md, "Jobs"), the `/jobs` page with its progress bar, and polling beside SSE.
//!
//! - `runner` (ssr): workers, the event writer (stored, then published), the demo job.
//! - `server` (ssr): `POST/GET /api/jobs`, `GET /api/jobs/{id}` (JSON + ETag, or SSE),
//!   `POST /api/jobs/{id}/cancel`, `GET /api/jobs/{id}/events`.
//! - `import` (ssr): the `import` job kind.
//! - `view` and `client`: the `/jobs` page (progress bar, event log, SSE or polling) and its
//!   browser calls; [`jobs_page`] gives the page its first render.
//!
//! The SSE encoder is `server::fanout::sse`, the bus `server::fanout::bus`, the storage
//! `jobs::store`, the wire types `protocol::jobs`.
//! Tests: unit tests in each file; `tests/it/jobs.rs`.
mod client;
#[cfg(feature = "ssr")]
mod import;
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
pub use server::{router, start, JobTopic};
pub use view::JobsPage;

use leptos::prelude::*;

use crate::protocol::jobs::JobsSnapshot;

/// Events the page shows at most (the latest ones).
pub const LOG_WINDOW: i64 = 200;

/// The `/jobs` page's first render: job `id` (if the signed-in user may see it) with its
/// latest events, and the user's recent jobs.
#[server(prefix = "/sf", endpoint = "jobs_page")]
pub async fn jobs_page(id: Option<i64>) -> Result<JobsSnapshot, ServerFnError> {
    use crate::{
        protocol::jobs::{JobEvent, JobEventKind},
        server::{access::identity::MaybeUser, error::server_fn_failed, AppState},
    };
    let empty = JobsSnapshot {
        user: None,
        admin: false,
        job: None,
        events: Vec::new(),
        recent: Vec::new(),
    };
    let Some(state) = use_context::<AppState>() else {
        return Ok(empty);
    };
    let user = MaybeUser::in_server_fn(&state).await?;
    let Some(user) = user else {
        return Ok(empty);
    };
    let store = &state.store;
    let recent = store
        .jobs_of(user.user_id, 20)
        .await
        .map_err(server_fn_failed)?;
    let job = match id {
        Some(id) => store
            .job(id)
            .await
            .map_err(server_fn_failed)?
            .filter(|j| j.owner_id == user.user_id || user.user.is_admin()),
        None => None,
    };
    let mut events = Vec::new();
    if let Some(job) = &job {
        // Exactly the events up to the job's `last_event_id` as read above (ids run 1, 2, 3…),
        // even if more were stored meanwhile: the live stream continues after that id, so an
        // event read here as well would be shown twice.
        let from = (job.last_event_id - LOG_WINDOW).max(0);
        for e in store
            .job_events_after(job.id, from, job.last_event_id - from)
            .await
            .map_err(server_fn_failed)?
        {
            if let (Some(event), Ok(data)) =
                (JobEventKind::parse(&e.event), serde_json::from_str(&e.data))
            {
                events.push(JobEvent {
                    id: e.id,
                    event,
                    data,
                });
            }
        }
    }
    Ok(JobsSnapshot {
        user: Some(user.user.username.clone()),
        admin: user.user.is_admin(),
        job: job.as_ref().map(server::status_of),
        events,
        recent: recent.iter().map(server::status_of).collect(),
    })
}
