//! The `/assistant` page's browser half: ask and stop with `fetch`, and follow an answer's
//! tokens on the page's shared [`EventStream`] (topic `assistant:<id>`), continuing after the
//! token the server's render ended with.
//!
//! Compiled everywhere so the view needs no `cfg`; only ever called in the browser.

use crate::{
    events::{EventStream, LinkState},
    fetch::{post_json, send, Method},
    protocol::assistant::{
        ChatCreated, DoneData, ErrorData, NewChat, TokenData, DONE, ERROR, TOKEN,
    },
};

/// `POST /api/assistant/chats`.
pub async fn ask(prompt: &str) -> Result<ChatCreated, String> {
    let body = NewChat {
        prompt: Some(prompt.to_string()),
    };
    post_json("/api/assistant/chats", &body).await
}

/// `POST /api/assistant/chats/{id}/cancel`.
pub async fn stop(id: i64) -> Result<(), String> {
    send::<()>(
        Method::Post,
        &format!("/api/assistant/chats/{id}/cancel"),
        None,
    )
    .await
}

/// What the stream brings the page.
pub enum News {
    /// Token `id`.
    Token(i64, String),
    Done(DoneData),
    Error(String),
    Link(LinkState),
}

/// Follows chat `id`'s answer after token `after`; `news` hears everything. Stops when
/// dropped.
pub fn follow(id: i64, after: i64, news: impl Fn(News) + 'static) -> Result<EventStream, String> {
    let news = std::rc::Rc::new(news);
    let on_state = news.clone();
    EventStream::topic(
        &format!("assistant:{id}"),
        Some(after),
        &[TOKEN, DONE, ERROR],
        move |received| match received.name {
            TOKEN => {
                if let (Ok(id), Ok(t)) = (
                    received.id.parse::<i64>(),
                    serde_json::from_str::<TokenData>(&received.data),
                ) {
                    news(News::Token(id, t.text));
                }
            }
            DONE => {
                if let Ok(d) = serde_json::from_str::<DoneData>(&received.data) {
                    news(News::Done(d));
                }
            }
            _ => {
                let message = serde_json::from_str::<ErrorData>(&received.data)
                    .map(|e| e.message)
                    .unwrap_or_else(|_| "The answer ended with an error.".into());
                news(News::Error(message));
            }
        },
        move |state| on_state(News::Link(state)),
    )
}
