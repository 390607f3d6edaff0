//! The browser's one `EventSource` wrapper: named events to one callback, the connection's
//! state to another, closed when dropped (so a page's `on_cleanup` ends its stream).
//!
//! The browser reconnects by itself after a network error (state [`LinkState::Connecting`],
//! sending `Last-Event-ID`); after a refusal (a non-200 answer) it gives up
//! ([`LinkState::Closed`]) and the page decides when to open a new one.
//!
//! Compiled everywhere so the views need no `cfg`; only ever called in the browser. Like
//! `fetch`, it sits below the features.

use std::rc::Rc;

use wasm_bindgen::{closure::Closure, JsCast};
use web_sys::{EventSource, MessageEvent};

/// Where an event stream stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkState {
    /// Opening, or reconnecting after a drop (the browser retries by itself).
    Connecting,
    /// Open: events flow.
    Open,
    /// Refused or closed for good: only a new stream will do.
    Closed,
}

type Listener = Closure<dyn FnMut(web_sys::Event)>;

/// An open event stream; closed when dropped.
pub struct EventStream {
    source: EventSource,
    _listeners: Vec<Listener>,
}

impl EventStream {
    /// Opens `url`. `on_event(name, data)` hears every event named in `names`; `on_state`
    /// hears the connection open, drop (reconnecting) and close.
    pub fn open(
        url: &str,
        names: &[&'static str],
        on_event: impl Fn(&'static str, String) + 'static,
        on_state: impl Fn(LinkState) + 'static,
    ) -> Result<Self, String> {
        let source = EventSource::new(url)
            .map_err(|_| "This browser cannot open an event stream.".to_string())?;
        let on_event = Rc::new(on_event);
        let on_state = Rc::new(on_state);
        let mut listeners = Vec::with_capacity(names.len() + 2);
        let add = |name: &str, listener: Listener| -> Result<Listener, String> {
            source
                .add_event_listener_with_callback(name, listener.as_ref().unchecked_ref())
                .map_err(|_| "This browser refused an event listener.".to_string())?;
            Ok(listener)
        };
        for &name in names {
            let on_event = on_event.clone();
            let listener = Listener::new(move |e: web_sys::Event| {
                if let Some(data) = e
                    .dyn_ref::<MessageEvent>()
                    .and_then(|m| m.data().as_string())
                {
                    on_event(name, data);
                }
            });
            listeners.push(add(name, listener)?);
        }
        let opened = on_state.clone();
        listeners.push(add(
            "open",
            Listener::new(move |_| opened(LinkState::Open)),
        )?);
        let watched = source.clone();
        listeners.push(add(
            "error",
            Listener::new(move |_| {
                on_state(if watched.ready_state() == EventSource::CLOSED {
                    LinkState::Closed
                } else {
                    LinkState::Connecting
                })
            }),
        )?);
        Ok(Self {
            source,
            _listeners: listeners,
        })
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.source.close();
    }
}
