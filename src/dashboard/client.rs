//! The browser half of the dashboard: the one stream the page holds (on the shared
//! [`EventStream`]), parsed into the shared wire types. Compiled everywhere; only ever called
//! in the browser.

use crate::{
    events::{EventStream, LinkState},
    protocol::metrics::{
        LogGap, LogLevel, LogReady, LogRecord, Metrics, LOG_EVENT, LOG_GAP_EVENT, LOG_READY_EVENT,
        METRICS_EVENT,
    },
};

/// What the stream brings.
pub enum News {
    Metrics(Metrics),
    Log(LogRecord),
    Gap(LogGap),
    Ready(LogReady),
    Link(LinkState),
}

/// `/api/metrics/events`, with the log tail at `logs` or above when given (admins).
pub fn url(logs: Option<LogLevel>) -> String {
    match logs {
        Some(level) => format!("/api/metrics/events?logs={}", level.as_str()),
        None => "/api/metrics/events".to_string(),
    }
}

/// Opens the dashboard's stream; `news` hears everything it brings.
pub fn open(logs: Option<LogLevel>, news: impl Fn(News) + 'static) -> Result<EventStream, String> {
    let news = std::rc::Rc::new(news);
    let on_state = news.clone();
    EventStream::open(
        &url(logs),
        &[METRICS_EVENT, LOG_EVENT, LOG_GAP_EVENT, LOG_READY_EVENT],
        move |received| {
            let data = received.data;
            let parsed = match received.name {
                METRICS_EVENT => serde_json::from_str(&data).ok().map(News::Metrics),
                LOG_EVENT => serde_json::from_str(&data).ok().map(News::Log),
                LOG_READY_EVENT => serde_json::from_str(&data).ok().map(News::Ready),
                _ => serde_json::from_str(&data).ok().map(News::Gap),
            };
            if let Some(n) = parsed {
                news(n);
            }
        },
        move |state| on_state(News::Link(state)),
    )
}
