//! The browser's one `EventSource` wrapper, used by every page that follows a stream (a job's
//! events, a chat room over SSE, the notifications behind the toasts, the dashboard): each
//! named event, with its id and its data ([`Received`]), to one callback; the connection's
//! state ([`LinkState`]) to another; closed when dropped (so a page's `on_cleanup` ends its
//! stream).
//!
//! The browser reconnects by itself after a network error (state
//! [`LinkState::Reconnecting`], after the wait the stream's `retry:` line set, sending
//! `Last-Event-ID`: docs/interface.md, "Server-Sent Events"); after a refusal (a non-200
//! answer) it gives up ([`LinkState::Closed`]) and the page decides when to open a new one.
//! [`LinkState`] is also what the chat's other transports (a WebSocket, polling) report, so
//! every page speaks of its link the same way.
//!
//! Compiled everywhere so the views need no `cfg`; only ever called in the browser. Like
//! `fetch`, it sits below the features.

use std::rc::Rc;

use wasm_bindgen::{closure::Closure, JsCast};
use web_sys::{EventSource, MessageEvent};

/// Where a link (an event stream, or any other connection a page keeps) stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkState {
    /// Not open yet: the first connection is being made (a page's state before any news; an
    /// [`EventStream`] never reports it).
    Connecting,
    /// Open: events flow.
    Open,
    /// Dropped, and another attempt follows: in this many milliseconds (a page's own backoff),
    /// or `None` when the browser retries an event stream by itself, after the stream's
    /// `retry:` (which the browser does not tell).
    Reconnecting(Option<u32>),
    /// Refused or closed for good: only a new stream will do.
    Closed,
}

/// One event as it arrived.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// Its name (the `event:` field): one of the names the stream was opened with.
    pub name: &'static str,
    /// Its id (the `id:` field, the event's `lastEventId`): the stream's last id, so the one
    /// before when this event has none, and empty when no event has had one yet.
    pub id: String,
    /// Its data (the `data:` lines).
    pub data: String,
}

type Listener = Closure<dyn FnMut(web_sys::Event)>;

/// An open event stream; closed when dropped.
pub struct EventStream {
    source: EventSource,
    /// Each listener with the event it listens to, so a drop can take them off.
    listeners: Vec<(&'static str, Listener)>,
}

impl EventStream {
    /// Opens `url`. `on_event` hears every event named in `names`; `on_state` hears the
    /// connection open ([`LinkState::Open`]), drop ([`LinkState::Reconnecting`]: the browser
    /// retries) and be refused ([`LinkState::Closed`]: it does not).
    pub fn open(
        url: &str,
        names: &[&'static str],
        on_event: impl Fn(Received) + 'static,
        on_state: impl Fn(LinkState) + 'static,
    ) -> Result<Self, String> {
        let source = EventSource::new(url)
            .map_err(|_| "This browser cannot open an event stream.".to_string())?;
        // Made first, so an error below drops (and so closes) the stream.
        let mut stream = Self {
            source,
            listeners: Vec::with_capacity(names.len() + 2),
        };
        let on_event = Rc::new(on_event);
        for &name in names {
            let on_event = on_event.clone();
            stream.listen(
                name,
                Listener::new(move |e: web_sys::Event| {
                    let Some(message) = e.dyn_ref::<MessageEvent>() else {
                        return;
                    };
                    if let Some(data) = message.data().as_string() {
                        on_event(Received {
                            name,
                            id: message.last_event_id(),
                            data,
                        });
                    }
                }),
            )?;
        }
        let on_state = Rc::new(on_state);
        let opened = on_state.clone();
        stream.listen("open", Listener::new(move |_| opened(LinkState::Open)))?;
        // An error event says the connection broke; whether the browser will try again shows
        // only in the state it leaves the source in.
        let watched = stream.source.clone();
        stream.listen(
            "error",
            Listener::new(move |_| {
                on_state(if watched.ready_state() == EventSource::CLOSED {
                    LinkState::Closed
                } else {
                    LinkState::Reconnecting(None)
                })
            }),
        )?;
        Ok(stream)
    }

    fn listen(&mut self, name: &'static str, listener: Listener) -> Result<(), String> {
        self.source
            .add_event_listener_with_callback(name, listener.as_ref().unchecked_ref())
            .map_err(|_| "This browser refused an event listener.".to_string())?;
        self.listeners.push((name, listener));
        Ok(())
    }

    /// Closes the connection now; the browser will not reconnect and nothing more is heard.
    /// For a listener that learns the stream is done: it cannot drop the stream it runs in.
    pub fn close(&self) {
        self.source.close();
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.source.close();
        for (name, listener) in &self.listeners {
            let _ = self
                .source
                .remove_event_listener_with_callback(name, listener.as_ref().unchecked_ref());
        }
    }
}
