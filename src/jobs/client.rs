//! The `/jobs` page's browser half: create and cancel jobs with `fetch`, watch one with an
//! `EventSource` (the browser reconnects by itself and sends `Last-Event-ID`), or poll its
//! status with `If-None-Match`.
//!
//! Compiled everywhere so the view needs no `cfg`; only ever called in the browser.

use gloo_net::http::Request;
use wasm_bindgen::{closure::Closure, JsCast};
use web_sys::{EventSource, MessageEvent};

use crate::{
    fetch::{post_json, refusal, UNREACHABLE},
    protocol::jobs::{
        CreateJob, ImportRequest, JobCreated, JobEvent, JobEventData, JobEventKind, JobStatus,
    },
};

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
    let response = Request::post(&format!("/api/jobs/{id}/cancel"))
        .send()
        .await
        .map_err(|_| UNREACHABLE.to_string())?;
    if response.ok() {
        Ok(())
    } else {
        Err(refusal(response).await)
    }
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

/// An open `EventSource` on a job, with its listeners; closed when dropped.
pub struct Watch {
    source: EventSource,
    _listeners: Vec<Closure<dyn FnMut(web_sys::Event)>>,
}

/// What the watch reports to the page.
pub enum WatchNews {
    /// A connection opened (the first, or a reconnect).
    Open,
    /// An event arrived.
    Event(JobEvent),
    /// The connection broke; `closed`: the browser gave up (else it retries by itself).
    Error { closed: bool },
}

impl Watch {
    /// Opens `/api/jobs/{id}/events?lastEventId=<after>`; `news` hears everything.
    pub fn open(id: i64, after: i64, news: impl Fn(WatchNews) + 'static) -> Result<Self, String> {
        let url = format!("/api/jobs/{id}/events?lastEventId={after}");
        let source = EventSource::new(&url)
            .map_err(|_| "This browser cannot open an event stream.".to_string())?;
        let news = std::rc::Rc::new(news);
        let mut listeners = Vec::new();
        let on_open = {
            let news = news.clone();
            Closure::<dyn FnMut(web_sys::Event)>::new(move |_| news(WatchNews::Open))
        };
        source.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        listeners.push(on_open);
        let on_error = {
            let news = news.clone();
            let source = source.clone();
            Closure::<dyn FnMut(web_sys::Event)>::new(move |_| {
                news(WatchNews::Error {
                    closed: source.ready_state() == EventSource::CLOSED,
                })
            })
        };
        source.set_onerror(Some(on_error.as_ref().unchecked_ref()));
        listeners.push(on_error);
        for kind in [
            JobEventKind::Started,
            JobEventKind::Progress,
            JobEventKind::Warning,
            JobEventKind::Complete,
            JobEventKind::Failed,
            JobEventKind::Cancelled,
        ] {
            let news = news.clone();
            let listener = Closure::<dyn FnMut(web_sys::Event)>::new(move |e: web_sys::Event| {
                let Some(message) = e.dyn_ref::<MessageEvent>() else {
                    return;
                };
                let id = message.last_event_id().parse::<i64>();
                let data = message
                    .data()
                    .as_string()
                    .and_then(|d| serde_json::from_str::<JobEventData>(&d).ok());
                if let (Ok(id), Some(data)) = (id, data) {
                    news(WatchNews::Event(JobEvent {
                        id,
                        event: kind,
                        data,
                    }));
                }
            });
            source
                .add_event_listener_with_callback(kind.as_str(), listener.as_ref().unchecked_ref())
                .map_err(|_| "This browser refused an event listener.".to_string())?;
            listeners.push(listener);
        }
        Ok(Self {
            source,
            _listeners: listeners,
        })
    }
}

impl Watch {
    /// Closes the connection; the browser will not reconnect.
    pub fn close(&self) {
        self.source.close();
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.source.close();
        self.source.set_onopen(None);
        self.source.set_onerror(None);
    }
}
