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
//! **One stream per tab.** [`EventStream::topic`] does not open a connection: it joins the
//! page's one shared stream, `GET /api/events?topic=…` (docs/interface.md, "One connection
//! per page"), which carries every topic the page's parts follow (the toasts'
//! `notifications`, a chat room, a job, the dashboard's metrics). Parts subscribe and drop
//! their handles as they come and go; the set of topics is worked out once per tick and the
//! stream reopened only when it changed, with the last cursor (`?lastEventId=`) so the topics
//! it keeps lose nothing, and each subscription's own start (`?start=<id>:<topic>`) for the
//! topics it adds. Each part hears only its topic's events, with the topic's own id (the
//! data's `eventId`) as [`Received::id`], as if it had its own stream. When the stream is
//! refused, the refusal is read: a topic the user may not read (403 or 400 naming it) is
//! closed for its parts alone and the stream goes on with the rest; signed out (401) closes
//! them all; anything else is tried again in 3 s.
//!
//! A connection the page holds anyway can carry a topic instead ([`provide`]): the chat's
//! WebSocket already brings the user's notifications, so while it is open the shared stream
//! leaves `notifications` out (and closes when nothing else is followed) and the socket hands
//! those events to the same subscribers ([`deliver`]). A page stays at one connection either
//! way.
//!
//! Compiled everywhere so the views need no `cfg`; only ever called in the browser. Like
//! `fetch`, it sits below the features.

use std::{cell::RefCell, rc::Rc};

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

/// An open event stream (its own connection, or a topic of the page's shared one); closed
/// when dropped.
pub struct EventStream {
    own: Option<Own>,
    /// The subscription to the shared stream, for a topic.
    shared: Option<u32>,
}

/// A connection of its own.
struct Own {
    source: EventSource,
    /// Each listener with the event it listens to, so a drop can take them off.
    listeners: Vec<(&'static str, Listener)>,
}

/// Waits `ms` milliseconds (a `setTimeout` as a future).
pub async fn sleep(ms: u32) {
    let ms = i32::try_from(ms).unwrap_or(i32::MAX);
    let promise = js_sys::Promise::new(&mut |resolve, _| {
        if let Some(w) = web_sys::window() {
            let _ = w.set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms);
        }
    });
    let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
}

/// While held, `topic` comes from another connection of the page (see [`provide`]).
pub struct Provided(u32);

impl Drop for Provided {
    fn drop(&mut self) {
        shared::unprovide(self.0);
    }
}

/// Says that another connection of the page now brings `topic`'s events (handed over with
/// [`deliver`]): the shared stream leaves it out until the returned guard is dropped.
pub fn provide(topic: &str) -> Provided {
    Provided(shared::provide(topic))
}

/// Hands an event of `topic` that arrived on another connection to the topic's subscribers.
pub fn deliver(topic: &str, name: &'static str, data: String) {
    shared::deliver(topic, name, data);
}

impl EventStream {
    /// Follows `topic` on the page's shared stream (see the module docs): `on_event` hears
    /// the topic's events named in `names`, `on_state` the shared connection's state (and
    /// [`LinkState::Closed`] when this topic is refused). `start`: the topic's id already
    /// shown (the page's server render), so it continues after it.
    pub fn topic(
        topic: &str,
        start: Option<i64>,
        names: &[&'static str],
        on_event: impl Fn(Received) + 'static,
        on_state: impl Fn(LinkState) + 'static,
    ) -> Result<Self, String> {
        let id = shared::subscribe(shared::Sub {
            id: 0,
            topic: topic.to_string(),
            start,
            names: names.to_vec(),
            on_event: Rc::new(on_event),
            on_state: Rc::new(on_state),
        });
        Ok(Self {
            own: None,
            shared: Some(id),
        })
    }

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
        let mut stream = Own {
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
        Ok(Self {
            own: Some(stream),
            shared: None,
        })
    }

    /// Closes the connection now; the browser will not reconnect and nothing more is heard.
    /// For a listener that learns the stream is done: it cannot drop the stream it runs in.
    pub fn close(&self) {
        if let Some(own) = &self.own {
            own.source.close();
        }
        if let Some(id) = self.shared {
            shared::unsubscribe(id);
        }
    }
}

impl Own {
    fn listen(&mut self, name: &'static str, listener: Listener) -> Result<(), String> {
        self.source
            .add_event_listener_with_callback(name, listener.as_ref().unchecked_ref())
            .map_err(|_| "This browser refused an event listener.".to_string())?;
        self.listeners.push((name, listener));
        Ok(())
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        if let Some(id) = self.shared {
            shared::unsubscribe(id);
        }
    }
}

impl Drop for Own {
    fn drop(&mut self) {
        self.source.close();
        for (name, listener) in &self.listeners {
            let _ = self
                .source
                .remove_event_listener_with_callback(name, listener.as_ref().unchecked_ref());
        }
    }
}

/// The page's one shared stream (see the module docs).
mod shared {
    use super::*;

    /// One part of the page following one topic.
    pub struct Sub {
        pub id: u32,
        pub topic: String,
        /// The topic's last id this part has (its start, then each event's).
        pub start: Option<i64>,
        pub names: Vec<&'static str>,
        pub on_event: Rc<dyn Fn(Received)>,
        pub on_state: Rc<dyn Fn(LinkState)>,
    }

    #[derive(Default)]
    struct Shared {
        next: u32,
        subs: Vec<Sub>,
        /// The connection, and the topics it was opened with.
        stream: Option<(EventStream, Vec<String>)>,
        /// The stream's last cursor (the SSE id of the last event).
        cursor: String,
        /// A reopen is due at the end of this tick.
        scheduled: bool,
        /// Topics refused: left out until their parts are gone.
        refused: Vec<String>,
        /// Bumped on every (re)open: a diagnosis of an older stream's refusal is ignored.
        generation: u32,
        /// Topics another connection brings (see [`super::provide`]).
        provided: Vec<(u32, String)>,
    }

    thread_local! {
        static SHARED: RefCell<Shared> = RefCell::new(Shared::default());
    }

    /// The tag the server puts first in each event's data.
    #[derive(serde::Deserialize)]
    struct Tag {
        topic: String,
        #[serde(rename = "eventId")]
        event_id: Option<String>,
    }

    pub fn subscribe(mut sub: Sub) -> u32 {
        let id = SHARED.with(|s| {
            let mut s = s.borrow_mut();
            s.next += 1;
            sub.id = s.next;
            let id = sub.id;
            s.subs.push(sub);
            id
        });
        schedule();
        id
    }

    pub fn unsubscribe(id: u32) {
        let known = SHARED.with(|s| {
            let mut s = s.borrow_mut();
            let before = s.subs.len();
            s.subs.retain(|sub| sub.id != id);
            let topics: Vec<String> = s.subs.iter().map(|sub| sub.topic.clone()).collect();
            s.refused.retain(|t| topics.contains(t));
            before != s.subs.len()
        });
        if known {
            schedule();
        }
    }

    pub fn provide(topic: &str) -> u32 {
        let id = SHARED.with(|s| {
            let mut s = s.borrow_mut();
            s.next += 1;
            let id = s.next;
            s.provided.push((id, topic.to_string()));
            id
        });
        schedule();
        id
    }

    pub fn unprovide(id: u32) {
        SHARED.with(|s| s.borrow_mut().provided.retain(|(i, _)| *i != id));
        schedule();
    }

    pub fn deliver(topic: &str, name: &'static str, data: String) {
        let hearers: Vec<Rc<dyn Fn(Received)>> = SHARED.with(|s| {
            s.borrow()
                .subs
                .iter()
                .filter(|sub| sub.topic == topic && sub.names.contains(&name))
                .map(|sub| sub.on_event.clone())
                .collect()
        });
        for hear in hearers {
            hear(Received {
                name,
                id: String::new(),
                data: data.clone(),
            });
        }
    }

    /// Reopens at the end of this tick if the set of topics changed.
    fn schedule() {
        let due = SHARED.with(|s| !std::mem::replace(&mut s.borrow_mut().scheduled, true));
        if due {
            wasm_bindgen_futures::spawn_local(async { reopen(false) });
        }
    }

    /// The topics wanted now, sorted and distinct (refused ones left out).
    fn wanted(s: &Shared) -> Vec<String> {
        let mut topics: Vec<String> = s
            .subs
            .iter()
            .map(|sub| sub.topic.clone())
            .filter(|t| !s.refused.contains(t) && !s.provided.iter().any(|(_, p)| p == t))
            .collect();
        topics.sort();
        topics.dedup();
        topics
    }

    fn reopen(force: bool) {
        let opened = SHARED.with(|cell| {
            let mut s = cell.borrow_mut();
            s.scheduled = false;
            let topics = wanted(&s);
            if !force && s.stream.as_ref().is_some_and(|(_, open)| *open == topics) {
                return None;
            }
            s.stream = None;
            if topics.is_empty() {
                return None;
            }
            s.generation += 1;
            let mut url = String::from("/api/events?");
            let mut query = url::Query::default();
            for t in &topics {
                query.pair("topic", t);
            }
            if !s.cursor.is_empty() {
                query.pair("lastEventId", &s.cursor);
            }
            for sub in &s.subs {
                if let Some(start) = sub.start {
                    query.pair("start", &format!("{start}:{}", sub.topic));
                }
            }
            url.push_str(&query.0);
            let mut names: Vec<&'static str> = s
                .subs
                .iter()
                .flat_map(|sub| sub.names.iter().copied())
                .collect();
            names.push("gap");
            names.sort();
            names.dedup();
            Some((url, names, topics, s.generation))
        });
        let Some((url, names, topics, generation)) = opened else {
            return;
        };
        let diagnose_url = url.clone();
        let stream = EventStream::open(&url, &names, dispatch, move |state| {
            if state == LinkState::Closed {
                let url = diagnose_url.clone();
                wasm_bindgen_futures::spawn_local(async move { diagnose(url, generation).await });
            }
            tell_all(state);
        });
        match stream {
            Ok(stream) => SHARED.with(|s| s.borrow_mut().stream = Some((stream, topics))),
            Err(_) => tell_all(LinkState::Closed),
        }
    }

    fn tell_all(state: LinkState) {
        let listeners: Vec<Rc<dyn Fn(LinkState)>> = SHARED.with(|s| {
            s.borrow()
                .subs
                .iter()
                .map(|sub| sub.on_state.clone())
                .collect()
        });
        for l in listeners {
            l(state);
        }
    }

    fn dispatch(received: Received) {
        let Ok(tag) = serde_json::from_str::<Tag>(&received.data) else {
            return;
        };
        let id = tag.event_id.unwrap_or_default();
        let position = id.parse::<i64>().ok();
        let hearers: Vec<Rc<dyn Fn(Received)>> = SHARED.with(|cell| {
            let mut s = cell.borrow_mut();
            if !received.id.is_empty() {
                s.cursor = received.id.clone();
            }
            s.subs
                .iter_mut()
                .filter(|sub| sub.topic == tag.topic && sub.names.contains(&received.name))
                .map(|sub| {
                    if position.is_some() {
                        sub.start = position;
                    }
                    sub.on_event.clone()
                })
                .collect()
        });
        for hear in hearers {
            hear(Received {
                name: received.name,
                id: id.clone(),
                data: received.data.clone(),
            });
        }
    }

    /// Why the stream was refused: a topic named in a 400 or 403 is closed for its parts and
    /// the rest go on; 401 closes everything; anything else is tried again in 3 s.
    async fn diagnose(url: String, generation: u32) {
        let controller = web_sys::AbortController::new().ok();
        let signal = controller.as_ref().map(|c| c.signal());
        let answer = gloo_net::http::Request::get(&url)
            .abort_signal(signal.as_ref())
            .send()
            .await;
        let current = SHARED.with(|s| s.borrow().generation == generation);
        if !current {
            return;
        }
        let refusal = match answer {
            Ok(res) if res.status() == 400 || res.status() == 403 => {
                let body = res.json::<crate::protocol::ErrorBody>().await.ok();
                body.map(|b| b.message)
            }
            Ok(res) if res.status() == 401 => return,
            _ => None,
        };
        if let Some(c) = controller {
            c.abort();
        }
        let refused: Vec<Rc<dyn Fn(LinkState)>> = SHARED.with(|cell| {
            let mut s = cell.borrow_mut();
            let Some(message) = refusal else {
                return Vec::new();
            };
            let topics = wanted(&s);
            let named: Vec<String> = topics
                .into_iter()
                .filter(|t| message.contains(t.as_str()))
                .collect();
            s.refused.extend(named.iter().cloned());
            s.subs
                .iter()
                .filter(|sub| named.contains(&sub.topic))
                .map(|sub| sub.on_state.clone())
                .collect()
        });
        for tell in &refused {
            tell(LinkState::Closed);
        }
        if refused.is_empty() {
            super::sleep(3000).await;
        }
        reopen(true);
    }

    mod url {
        /// A query string, percent-encoded.
        #[derive(Default)]
        pub struct Query(pub String);

        impl Query {
            pub fn pair(&mut self, key: &str, value: &str) {
                if !self.0.is_empty() {
                    self.0.push('&');
                }
                self.0.push_str(key);
                self.0.push('=');
                self.0
                    .push_str(&String::from(js_sys::encode_uri_component(value)));
            }
        }
    }
}
