//! The fan-out bus: the one seam every broadcast goes through (job events, chat messages,
//! presence, notifications, and the signals that end a session's streams).
//!
//! Publishers call [`Bus::publish`] after the message is stored; subscribers get a bounded
//! [`Subscription`] per topic. The bus carries no history: stored ids are the source of
//! truth, so a subscriber that lagged (its queue overflowed) or that missed messages while it
//! reconnected reads them back from the database. That is also what lets a Redis bus replace
//! [`LocalBus`] for several instances without touching jobs, rooms or notifications:
//! they only see the trait.
//!
//! Subscribe *before* reading the backlog from storage, then skip what the backlog already
//! covered: that order leaves no gap between "read from the database" and "live".
//!
//! Tests: `cargo test --features ssr server::fanout::bus`.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use tokio::sync::broadcast;

/// Messages a subscriber may fall behind by before it is told it lagged (one shared ring per
/// topic, so this costs a slot per message, not per subscriber: a second of a busy room).
pub const SUBSCRIBER_QUEUE: usize = 1024;

/// The topic every notification goes to (docs/interface.md, "Notifications").
pub const NOTIFICATIONS: &str = "notifications";

/// The topic on which every instance hears of ended sessions (`server::access::streams`).
pub const SESSIONS: &str = "sessions";

/// The topic on which instances tell each other who is present where (the chat hub's own).
pub const PRESENCE: &str = "presence";

/// The topic on which instances tell each other a room's access changed (`chat::access`).
pub const ROOMS: &str = "rooms";

/// The kind of an envelope that says "messages may have been missed here: read back from
/// storage" (the Redis bus sends it after it was cut off). Subscribers never see it as a
/// message: [`Subscription::recv`] turns it into `Lagged(0)`.
pub const RESYNC: &str = "resync";

/// One message on a topic: the stored id it was given (0 for messages that are not stored,
/// such as presence), its kind (an SSE event name or a WebSocket message type) and its JSON
/// data.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Envelope {
    pub topic: String,
    pub id: i64,
    pub kind: String,
    /// UTF-8 JSON, held as `Bytes` so a thousand WebSocket frames can share one copy.
    #[serde(with = "text_bytes")]
    pub data: Bytes,
    /// The topic's stored ids run 1, 2, 3… without holes (a chat room's messages): a bus that
    /// relays between instances puts them back in id order before delivering (see
    /// [`crate::server::fanout::reorder`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ordered: bool,
    /// Only these users' connections take it (a notification to some users, a read
    /// position, a removal); `None`: every subscriber.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Vec<String>>,
    /// The user it came from, whose own connections skip it (typing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Its event-stream form, made by the first stream that sends it (see
    /// [`Envelope::sse_event`]); never on the wire between instances.
    #[serde(skip)]
    sse: SseForm,
}

/// An envelope's event-stream bytes, made once and shared by every stream it goes to (a
/// thousand streams of a room, one encoding). Not part of what an envelope is: equal always.
#[derive(Clone, Debug, Default)]
struct SseForm(std::sync::OnceLock<Bytes>);

impl PartialEq for SseForm {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for SseForm {}

impl Envelope {
    /// A message of `kind` on `topic` with stored id `id` and JSON `data`.
    pub fn new(topic: impl Into<String>, id: i64, kind: impl Into<String>, data: String) -> Self {
        Self {
            topic: topic.into(),
            id,
            kind: kind.into(),
            data: Bytes::from(data),
            ordered: false,
            to: None,
            from: None,
            sse: SseForm::default(),
        }
    }

    /// Its own event: `event: <kind>`, the data and `id: <id>`.
    pub fn event(&self) -> super::sse::Event {
        super::sse::Event::new(self.text())
            .id(self.id)
            .name(&self.kind)
    }

    /// [`Envelope::event`] encoded, once for all the streams that pass it on as it is (a
    /// room's streams: `sse::Sender::send_envelope`).
    pub fn sse_event(&self) -> Bytes {
        self.sse.0.get_or_init(|| self.event().encode()).clone()
    }

    /// The same, for `users`' connections only.
    pub fn to_users(mut self, users: Vec<String>) -> Self {
        self.to = Some(users);
        self
    }

    /// The same, skipped by `user`'s own connections.
    pub fn from_user(mut self, user: &str) -> Self {
        self.from = Some(user.to_string());
        self
    }

    /// Whether a connection of `user` takes it (see [`Envelope::to`], [`Envelope::from`]).
    pub fn is_for(&self, user: &str) -> bool {
        self.to
            .as_ref()
            .is_none_or(|to| to.iter().any(|u| u == user))
            && self.from.as_deref() != Some(user)
    }

    /// The same, marked as one of its topic's gapless run of ids ([`Envelope::ordered`]).
    pub fn in_order(mut self) -> Self {
        self.ordered = true;
        self
    }

    /// The data as text (it is always built from a `String`).
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.data).unwrap_or_default()
    }
}

/// Serializes `Bytes` as a JSON string (for buses that carry envelopes as JSON).
mod text_bytes {
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(data: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(std::str::from_utf8(data).map_err(serde::ser::Error::custom)?)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        Ok(Bytes::from(String::deserialize(d)?))
    }
}

/// What a subscriber receives next.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    Message(Arc<Envelope>),
    /// The subscriber fell behind and this many messages were dropped for it: read them
    /// back from storage. `Lagged(0)`: the bus itself was cut off for a while (Redis), so
    /// some may be missing: read back too (but the subscriber was not slow).
    Lagged(u64),
    /// The bus is gone (shutdown).
    Closed,
}

/// A subscription to one topic. Dropping the last one of a topic forgets the topic.
pub struct Subscription {
    rx: Option<broadcast::Receiver<Arc<Envelope>>>,
    /// Where to forget the topic when this was its last subscriber (the local bus).
    home: Option<(Arc<Topics>, String)>,
}

type Topics = Mutex<HashMap<String, broadcast::Sender<Arc<Envelope>>>>;

impl Subscription {
    /// A subscription fed by `rx` (for other bus implementations).
    pub fn new(rx: broadcast::Receiver<Arc<Envelope>>) -> Self {
        Self {
            rx: Some(rx),
            home: None,
        }
    }

    /// The next message, a lag notice, or the end.
    pub async fn recv(&mut self) -> Received {
        let Some(rx) = self.rx.as_mut() else {
            return Received::Closed;
        };
        match rx.recv().await {
            Ok(m) if m.kind == RESYNC => Received::Lagged(0),
            Ok(m) => Received::Message(m),
            Err(broadcast::error::RecvError::Lagged(n)) => Received::Lagged(n),
            Err(broadcast::error::RecvError::Closed) => Received::Closed,
        }
    }

    /// The next message if one is waiting now (for writing a burst at once), else `None`.
    pub fn try_recv(&mut self) -> Option<Received> {
        use broadcast::error::TryRecvError;
        match self.rx.as_mut()?.try_recv() {
            Ok(m) if m.kind == RESYNC => Some(Received::Lagged(0)),
            Ok(m) => Some(Received::Message(m)),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Lagged(n)) => Some(Received::Lagged(n)),
            Err(TryRecvError::Closed) => Some(Received::Closed),
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        drop(self.rx.take());
        if let Some((topics, topic)) = self.home.take() {
            let mut topics = topics.lock().expect("bus lock");
            if topics
                .get(&topic)
                .is_some_and(|tx| tx.receiver_count() == 0)
            {
                topics.remove(&topic);
            }
        }
    }
}

/// Broadcasts stored messages to every subscriber of a topic, on every instance.
pub trait Bus: Send + Sync + std::fmt::Debug + 'static {
    /// Delivers `message` to the current subscribers of its topic (none: dropped).
    fn publish(&self, message: Envelope);
    /// Starts receiving the topic's messages published from now on.
    fn subscribe(&self, topic: &str) -> Subscription;
    /// Delivers `message` to this instance's subscribers only (what every instance works out
    /// for itself, such as who joined a room, so nobody hears it twice).
    fn publish_local(&self, message: Envelope) {
        self.publish(message)
    }
    /// Whether other instances may be on the bus (the in-process bus: never).
    fn spans_instances(&self) -> bool {
        false
    }
    /// This instance's id among the instances on the bus.
    fn instance(&self) -> &str {
        "local"
    }
    /// Whether messages reach every instance now (`/readyz`); the in-process bus always does.
    fn ready(&self) -> bool {
        true
    }
    /// WebSocket and SSE connections open on the other instances, as they last reported them
    /// (for counts that span the deployment); the in-process bus has no other instances.
    fn connections_elsewhere(&self) -> futures::future::BoxFuture<'_, u64> {
        Box::pin(async { 0 })
    }
}

/// The in-process bus: one broadcast channel per topic with subscribers. Clones share it.
#[derive(Clone, Debug, Default)]
pub struct LocalBus {
    topics: Arc<Topics>,
}

impl LocalBus {
    pub fn new() -> Self {
        Self::default()
    }

    /// Tells every subscriber of every topic to read back from storage (a [`RESYNC`]).
    pub fn publish_everywhere(&self, kind: &str) {
        let topics = self.topics.lock().expect("bus lock");
        for (topic, tx) in topics.iter() {
            let _ = tx.send(Arc::new(Envelope::new(
                topic.clone(),
                0,
                kind,
                String::new(),
            )));
        }
    }

    /// Topics with a channel (a topic is forgotten when its last subscriber leaves).
    pub fn topic_count(&self) -> usize {
        self.topics.lock().expect("bus lock").len()
    }
}

impl Bus for LocalBus {
    fn publish(&self, message: Envelope) {
        // A topic without subscribers is not in the map (the last one leaving removes it).
        if let Some(tx) = self.topics.lock().expect("bus lock").get(&message.topic) {
            let _ = tx.send(Arc::new(message));
        }
    }

    fn subscribe(&self, topic: &str) -> Subscription {
        let mut topics = self.topics.lock().expect("bus lock");
        let tx = topics
            .entry(topic.to_string())
            .or_insert_with(|| broadcast::channel(SUBSCRIBER_QUEUE).0);
        Subscription {
            rx: Some(tx.subscribe()),
            home: Some((self.topics.clone(), topic.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(topic: &str, id: i64) -> Envelope {
        Envelope::new(topic, id, "progress", "{}".into())
    }

    #[tokio::test]
    async fn subscribers_get_their_topics_messages_in_order() {
        let bus = LocalBus::new();
        let mut a = bus.subscribe("job:1");
        let mut b = bus.subscribe("job:1");
        let mut other = bus.subscribe("job:2");
        bus.publish(msg("job:1", 1));
        bus.publish(msg("job:1", 2));
        bus.publish(msg("job:3", 1));
        for sub in [&mut a, &mut b] {
            assert_eq!(
                sub.recv().await,
                Received::Message(Arc::new(msg("job:1", 1)))
            );
            assert_eq!(
                sub.recv().await,
                Received::Message(Arc::new(msg("job:1", 2)))
            );
        }
        bus.publish(msg("job:2", 7));
        assert_eq!(
            other.recv().await,
            Received::Message(Arc::new(msg("job:2", 7)))
        );
    }

    #[tokio::test]
    async fn a_slow_subscriber_is_told_it_lagged_and_idle_topics_are_dropped() {
        let bus = LocalBus::new();
        let mut slow = bus.subscribe("t");
        for id in 0..(SUBSCRIBER_QUEUE as i64 + 10) {
            bus.publish(msg("t", id));
        }
        assert_eq!(slow.recv().await, Received::Lagged(10));
        assert_eq!(slow.recv().await, Received::Message(Arc::new(msg("t", 10))));
        let other = bus.subscribe("t");
        drop(slow);
        assert_eq!(bus.topic_count(), 1, "a subscriber is left");
        drop(other);
        assert_eq!(
            bus.topic_count(),
            0,
            "the last one leaving forgets the topic"
        );
    }

    #[test]
    fn envelopes_for_some_users_skip_the_others() {
        let all = msg("t", 1);
        assert!(all.is_for("alice"));
        let some = msg("t", 1).to_users(vec!["alice".into()]);
        assert!(some.is_for("alice") && !some.is_for("bob"));
        let typed = msg("t", 0).from_user("alice");
        assert!(!typed.is_for("alice") && typed.is_for("bob"));
        let wire = serde_json::to_string(&some).unwrap();
        assert_eq!(serde_json::from_str::<Envelope>(&wire).unwrap(), some);
        assert!(!serde_json::to_string(&all).unwrap().contains("\"to\""));
    }

    #[tokio::test]
    async fn a_resync_reaches_every_topic_as_a_lag_of_zero() {
        let bus = LocalBus::new();
        let mut a = bus.subscribe("room:a");
        let mut b = bus.subscribe("job:1");
        bus.publish_everywhere(RESYNC);
        assert_eq!(a.recv().await, Received::Lagged(0));
        assert_eq!(b.try_recv(), Some(Received::Lagged(0)));
        bus.publish(msg("room:a", 1));
        assert_eq!(
            a.recv().await,
            Received::Message(Arc::new(msg("room:a", 1)))
        );
    }
}
