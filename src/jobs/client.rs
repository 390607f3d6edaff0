//! The `/jobs` page's browser half: create and cancel jobs with `fetch`, watch one over the
//! shared [`EventStream`] (the browser reconnects by itself and sends `Last-Event-ID`; each
//! event's numeric id is what a later watch resumes after), or poll its status with
//! `If-None-Match`.
//!
//! Compiled everywhere so the view needs no `cfg`; only ever called in the browser.

use std::rc::Rc;

use gloo_net::http::Request;

use crate::{
    events::{EventStream, LinkState},
    fetch::{post_json, refusal, send, Method, UNREACHABLE},
    protocol::jobs::{
        CreateJob, ImportRequest, JobCreated, JobEvent, JobEventData, JobEventKind, JobStatus,
    },
};

/// The events a job's stream carries.
const KINDS: [JobEventKind; 6] = [
    JobEventKind::Started,
    JobEventKind::Progress,
    JobEventKind::Warning,
    JobEventKind::Complete,
    JobEventKind::Failed,
    JobEventKind::Cancelled,
];

/// `POST /api/jobs`.
pub async fn create(request: &CreateJob) -> Result<JobCreated, String> {
    post_json("/api/jobs", request).await
}

/// `POST /api/audit/import`.
pub async fn import(source: &str) -> Result<JobCreated, String> {
    let request = ImportRequest {
        source: source.to_string(),
    };
    post_json("/api/audit/import", &request).await
}

/// `POST /api/jobs/{id}/cancel`.
pub async fn cancel(id: i64) -> Result<(), String> {
    send::<()>(Method::Post, &format!("/api/jobs/{id}/cancel"), None).await
}

/// What one poll found.
pub enum Polled {
    /// 304: nothing changed since the `ETag` sent.
    Unchanged,
    /// The job's state, and its new `ETag`.
    Changed(JobStatus, String),
}

/// `GET /api/jobs/{id}` with `If-None-Match: etag`.
pub async fn poll(id: i64, etag: &str) -> Result<Polled, String> {
    let mut request = Request::get(&format!("/api/jobs/{id}"));
    if !etag.is_empty() {
        request = request.header("If-None-Match", etag);
    }
    let response = request.send().await.map_err(|_| UNREACHABLE.to_string())?;
    match response.status() {
        304 => Ok(Polled::Unchanged),
        200 => {
            let tag = response.headers().get("etag").unwrap_or_default();
            let status = response
                .json()
                .await
                .map_err(|_| "The server sent a status this page does not understand.")?;
            Ok(Polled::Changed(status, tag))
        }
        _ => Err(refusal(response).await),
    }
}

/// What the watch reports to the page.
pub enum WatchNews {
    /// An event arrived.
    Event(JobEvent),
    /// The connection opened, dropped (the browser retries by itself) or was refused.
    Link(LinkState),
}

/// Follows the `job:<id>` topic of the page's shared stream (`/api/events`) after event
/// `after` (the browser sends `Last-Event-ID` on its own reconnects); `news` hears
/// everything. It stops when dropped.
pub fn watch(
    id: i64,
    after: i64,
    news: impl Fn(WatchNews) + 'static,
) -> Result<EventStream, String> {
    let news = Rc::new(news);
    let on_state = news.clone();
    EventStream::topic(
        &format!("job:{id}"),
        Some(after),
        &KINDS.map(JobEventKind::as_str),
        move |received| {
            let (Some(kind), Ok(id), Ok(data)) = (
                JobEventKind::parse(received.name),
                received.id.parse::<i64>(),
                serde_json::from_str::<JobEventData>(&received.data),
            ) else {
                return;
            };
            news(WatchNews::Event(JobEvent {
                id,
                event: kind,
                data,
            }));
        },
        move |state| on_state(WatchNews::Link(state)),
    )
}
