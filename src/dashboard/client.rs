//! The browser half of the dashboard: its topics on the page's one shared stream
//! ([`EventStream::topic`]), parsed into the shared wire types. Compiled everywhere; only ever called
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

/// Follows the dashboard's topics on the page's shared stream (`/api/events`): `metrics`,
/// and `logs:<level>` when given (admins); `news` hears everything they bring.
pub fn open(
    logs: Option<LogLevel>,
    news: impl Fn(News) + 'static,
) -> Result<Vec<EventStream>, String> {
    let news = std::rc::Rc::new(news);
    let mut streams = vec![follow("metrics", news.clone())?];
    if let Some(level) = logs {
        streams.push(follow(&format!("logs:{}", level.as_str()), news)?);
    }
    Ok(streams)
}

fn follow(topic: &str, news: std::rc::Rc<impl Fn(News) + 'static>) -> Result<EventStream, String> {
    let on_state = news.clone();
    EventStream::topic(
        topic,
        None,
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
