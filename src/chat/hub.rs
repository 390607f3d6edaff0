//! The chat's facade, whatever the transport: posting a message (checked, rate-limited, handed
//! to the writer), reading history back for resumes, subscribing to a room, and presence.
//!
//! Every broadcast goes through the [`Bus`] on topic `room:<name>`: a message is stored first
//! (so it has its id), then published as the `ServerMsg` JSON every transport forwards as is.
//! The WebSocket, SSE and polling handlers differ only in how they deliver; they all
//! subscribe here, resume with [`Hub::since`], and hold a [`Presence`] while connected.
//!
//! The parts: [`super::writer`] stores and publishes in batches; [`super::presence`] keeps
//! who is in which room, across instances through the bus; [`super::wire`] is what both send.
//!
//! Tests: the unit tests below (presence grace, rate limit, resume with gap).

use std::{
    sync::{
        atomic::{AtomicI64, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::sync::{mpsc, oneshot};

pub use super::access::{Refused, RoomPass};
pub use super::presence::{Presence, POLL_LEASE};
pub use super::wire::{json, message_of, topic};
use super::{
    access::Access,
    presence::Presences,
    settings::ChatConfig,
    store::NewChatMessage,
    writer::{write_loop, Activity, Pending, WRITE_QUEUE},
};
use crate::{
    protocol::chat::{text_problem, ChatGap, ChatMessage, ServerMsg, SLOW_DOWN, TYPING_EVERY_MS},
    server::{
        access::limiter::SharedLimiter,
        clock,
        fanout::bus::{Bus, Envelope, Received, Subscription, NOTIFICATIONS},
        shutdown::Shutdown,
        storage::Store,
    },
};

/// Why a message was not posted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostError {
    /// Bad room name or text: the sentence says what.
    Invalid(String),
    /// Over the per-user rate (`Slow down.`).
    SlowDown,
    /// The database did not take it (or the server is stopping).
    Unavailable,
    /// Not (or no longer) allowed in the room.
    Refused(Refused),
}

impl PostError {
    /// The sentence a client sees.
    pub fn sentence(&self) -> String {
        match self {
            Self::Invalid(s) => s.clone(),
            Self::SlowDown => SLOW_DOWN.into(),
            Self::Unavailable => "The message could not be stored; try again.".into(),
            Self::Refused(r) => r.sentence(),
        }
    }
}

impl From<PostError> for crate::server::ApiError {
    fn from(e: PostError) -> Self {
        use crate::server::ApiError;
        match e {
            PostError::Invalid(s) => ApiError::bad_request("invalid_message", s),
            PostError::SlowDown => ApiError::SlowDown(e.sentence()),
            PostError::Unavailable => ApiError::Unavailable(e.sentence()),
            PostError::Refused(r) => r.into(),
        }
    }
}

/// What a client resuming after some id gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    /// Set when messages after the client's id are no longer kept.
    pub gap: Option<ChatGap>,
    /// The messages to send, oldest first.
    pub messages: Vec<ChatMessage>,
    /// The newest id the client has after these (skip live messages up to it).
    pub last_id: i64,
    /// The id these messages follow: a stream that names it first (an SSE `id`) lets a
    /// client that drops before the first message still resume from the right place.
    pub after_id: i64,
}

/// A read-back from storage, as one future that many can await.
type Reading = futures::future::BoxFuture<'static, Result<Arc<Resume>, Arc<sqlx::Error>>>;
/// One read-back from storage, awaited by every subscriber that asked for it.
type Readback = futures::future::Shared<Reading>;
/// Read-backs in progress, held weakly: one whose askers all went away is dropped with them.
type Readbacks = std::sync::Mutex<
    std::collections::HashMap<(String, i64, i64), futures::future::WeakShared<Reading>>,
>;

/// A caller's share of a read-back; when it is dropped (the read done, or the caller gone),
/// the read is forgotten if it is done or nobody else waits for it.
struct Asking<'a> {
    reads: &'a Readbacks,
    key: (String, i64, i64),
    read: Option<Readback>,
}

impl Drop for Asking<'_> {
    fn drop(&mut self) {
        // Ours first, so a read only we waited for cannot be upgraded below.
        drop(self.read.take());
        let mut reads = self.reads.lock().unwrap_or_else(|e| e.into_inner());
        let forget = reads
            .get(&self.key)
            .is_some_and(|w| w.upgrade().is_none_or(|r| r.peek().is_some()));
        if forget {
            reads.remove(&self.key);
        }
    }
}

struct Inner {
    store: Store,
    bus: Arc<dyn Bus>,
    shutdown: Shutdown,
    config: ChatConfig,
    writer: mpsc::Sender<Pending>,
    /// Messages per user per second (`Slow down.`), shared by every instance with Redis.
    rate: SharedLimiter,
    /// Who is in which room, here and on the other instances.
    presence: Arc<Presences>,
    /// Who may use which room.
    access: Arc<Access>,
    /// `chat-typing` passed on per user and room (one every 2 s).
    typing: SharedLimiter,
    /// The newest notification id heard on the bus: where a new connection's notifications
    /// start (it reads back from there when it falls behind).
    notes_seen: Arc<AtomicI64>,
    /// Read-backs in progress ([`Hub::since_shared`]), by room, id and page size.
    readbacks: Readbacks,
    /// Read-backs that went to storage (read by the tests).
    readbacks_run: std::sync::atomic::AtomicU64,
}

/// The chat's shared state. Cheap to clone.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").finish_non_exhaustive()
    }
}

impl Hub {
    /// Starts the writer and presence (see [`Presences::start`]); they end at shutdown. The rate limit counts
    /// in this process only (see [`start_with_rate`](Self::start_with_rate)).
    pub fn start(store: Store, bus: Arc<dyn Bus>, shutdown: Shutdown, config: ChatConfig) -> Self {
        let rate = SharedLimiter::local(config.rate_per_second, Duration::from_secs(1));
        let typing = SharedLimiter::local(1, Duration::from_millis(TYPING_EVERY_MS));
        Self::start_with_limits(store, bus, shutdown, config, rate, typing)
    }

    /// The same, with the rate limit `rate` and the typing limit `typing` (shared through
    /// Redis, across instances).
    pub fn start_with_limits(
        store: Store,
        bus: Arc<dyn Bus>,
        shutdown: Shutdown,
        config: ChatConfig,
        rate: SharedLimiter,
        typing: SharedLimiter,
    ) -> Self {
        let (writer, rx) = mpsc::channel(WRITE_QUEUE);
        let presence = Presences::start(bus.clone(), shutdown.clone(), config.presence_grace);
        let access = Access::start(store.clone(), bus.clone(), shutdown.clone());
        let notes_seen = Arc::new(AtomicI64::new(0));
        let mut notes = bus.subscribe(NOTIFICATIONS);
        let seen = notes_seen.clone();
        let stop = shutdown.clone();
        shutdown.spawn(async move {
            loop {
                tokio::select! {
                    r = notes.recv() => match r {
                        Received::Message(m) => { seen.fetch_max(m.id, Ordering::Relaxed); }
                        Received::Lagged(_) => {}
                        Received::Closed => return,
                    },
                    _ = stop.cancelled() => return,
                }
            }
        });
        let hub = Self {
            inner: Arc::new(Inner {
                store,
                bus,
                shutdown,
                config,
                writer,
                rate,
                presence,
                access,
                typing,
                notes_seen,
                readbacks: Default::default(),
                readbacks_run: Default::default(),
            }),
        };
        let inner = &hub.inner;
        let activity = Activity::default();
        inner.shutdown.spawn(write_loop(
            inner.store.clone(),
            inner.bus.clone(),
            inner.shutdown.clone(),
            inner.config.history,
            rx,
            activity.clone(),
        ));
        inner.shutdown.spawn(tell_activity(
            Arc::downgrade(&hub.inner),
            activity,
            inner.shutdown.clone(),
        ));
        hub
    }

    /// The settings this hub runs with.
    pub fn config(&self) -> &ChatConfig {
        &self.inner.config
    }

    /// The database.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Subscribes to the notifications every connection gets.
    pub fn subscribe_notifications(&self) -> Subscription {
        self.inner
            .bus
            .subscribe(crate::server::fanout::bus::NOTIFICATIONS)
    }

    /// The newest notification id heard: where a connection opened now starts.
    pub fn notifications_seen(&self) -> i64 {
        self.inner.notes_seen.load(Ordering::Relaxed)
    }

    /// Who may use which room.
    pub fn access(&self) -> &Access {
        &self.inner.access
    }

    /// Checks `user` may use `room` (see `chat::access`): every transport asks this first.
    pub async fn admit(&self, room: &str, user: &str) -> Result<RoomPass, Refused> {
        self.inner.access.admit(room, user).await
    }

    /// Subscribes to a room's live messages and presence.
    pub fn subscribe(&self, pass: &RoomPass) -> Subscription {
        self.inner.bus.subscribe(&topic(pass.room()))
    }

    /// Publishes `msg` to `user`'s connections only (every instance), on the topic every
    /// connection follows.
    pub fn tell_user(&self, user: &str, kind: &str, msg: &ServerMsg) {
        self.inner.bus.publish(
            Envelope::new(NOTIFICATIONS, 0, kind, json(msg)).to_users(vec![user.to_string()]),
        );
    }

    /// Publishes `msg` to everyone in `room`, but only `to`'s connections if given.
    pub fn tell_room(&self, room: &str, kind: &str, msg: &ServerMsg, to: Option<&str>) {
        let mut envelope = Envelope::new(topic(room), 0, kind, json(msg));
        if let Some(user) = to {
            envelope = envelope.to_users(vec![user.to_string()]);
        }
        self.inner.bus.publish(envelope);
    }

    /// Passes `chat-typing` on to the room's other members, at most one per user and room
    /// every 2 s; `false` when this one was held back.
    pub async fn typing(&self, pass: &RoomPass) -> bool {
        let key = format!("{}\n{}", pass.user(), pass.room());
        if self.inner.typing.check_and_record(&[&key]).await.is_err() {
            return false;
        }
        let msg = ServerMsg::ChatTyping {
            room: pass.room().to_string(),
            display_name: pass.user().to_string(),
        };
        self.inner.bus.publish(
            Envelope::new(topic(pass.room()), 0, "chat-typing", json(&msg)).from_user(pass.user()),
        );
        true
    }

    /// Checks, rate-limits and stores a message by the pass's user in its room; it is
    /// published to every member once stored. Returns the stored message. The room's access
    /// is looked at again (cached): a member removed since the pass was made is refused.
    pub async fn post(&self, pass: &RoomPass, text: &str) -> Result<ChatMessage, PostError> {
        self.send(pass, text, None).await.map(|(m, _)| m)
    }

    /// [`Hub::post`] with the sender's `clientId` or `Idempotency-Key`: the same key from the
    /// same user within 24 h stores nothing new and returns the first message, with `true`
    /// (a repeat, published already).
    pub async fn send(
        &self,
        pass: &RoomPass,
        text: &str,
        key: Option<&str>,
    ) -> Result<(ChatMessage, bool), PostError> {
        let (room, author) = (pass.room(), pass.user());
        self.inner
            .access
            .recheck(pass)
            .await
            .map_err(PostError::Refused)?;
        if let Some(problem) = text_problem(text) {
            return Err(PostError::Invalid(problem));
        }
        if self.inner.rate.check_and_record(&[author]).await.is_err() {
            return Err(PostError::SlowDown);
        }
        let (reply, stored) = oneshot::channel();
        let pending = Pending {
            message: NewChatMessage {
                room: room.to_string(),
                author: author.to_string(),
                text: text.to_string(),
                at: clock::now_ms(),
                key: key.map(str::to_string),
            },
            reply,
        };
        self.inner
            .writer
            .send(pending)
            .await
            .map_err(|_| PostError::Unavailable)?;
        match stored.await {
            Ok(Some(row)) => Ok((message_of(&row), row.repeat)),
            _ => Err(PostError::Unavailable),
        }
    }

    /// What a client that has everything up to `after` (`None`: nothing) should get: up to
    /// `limit` messages since (`None`: the latest `fresh` ones), and a gap notice first when
    /// some of them are no longer kept. An `after` beyond the room's last id (a client of a
    /// database since reset) counts as `None`.
    pub async fn since(
        &self,
        pass: &RoomPass,
        after: Option<i64>,
        fresh: i64,
        limit: i64,
    ) -> Result<Resume, sqlx::Error> {
        let room = pass.room();
        let store = &self.inner.store;
        let bounds = store.chat_room_bounds(room).await?;
        let after = after.filter(|a| *a >= 0 && *a <= bounds.last_id);
        let rows = match after {
            None => store.latest_chat_messages(room, fresh).await?,
            Some(after) => store.chat_messages_after(room, after, limit).await?,
        };
        let gap = match (after, rows.first()) {
            (Some(after), Some(first)) if first.id > after + 1 => Some(ChatGap {
                room: room.to_string(),
                after_id: after,
                first_available_id: first.id,
            }),
            _ => None,
        };
        let last_id = rows
            .last()
            .map(|r| r.id)
            .unwrap_or(after.unwrap_or(bounds.last_id))
            .max(after.unwrap_or(0));
        let after_id = after.unwrap_or_else(|| rows.first().map_or(bounds.last_id, |r| r.id - 1));
        Ok(Resume {
            gap,
            messages: rows.iter().map(message_of).collect(),
            last_id,
            after_id,
        })
    }

    /// [`since`](Self::since) for a subscriber that fell behind or found a hole: callers
    /// asking for the same room, id and page while a read is in progress share that one
    /// read. A hole (a message the bus gave up waiting for, see `server::fanout::reorder`)
    /// or a stall is seen by every socket of the room at once, each at the same id: without
    /// this, each of them queried storage for the same page, a thousand queries where one
    /// does, and the database's slowdown made more sockets fall behind (the two-instance
    /// benchmark, stalled for a moment, went from p99 0.1 s to 9 s this way).
    ///
    /// Only for subscribers whose subscription began before the hole: a read that began
    /// before the caller subscribed could miss what was published in between (joins use
    /// [`since`](Self::since)).
    pub async fn since_shared(
        &self,
        pass: &RoomPass,
        after: i64,
        limit: i64,
    ) -> Result<Resume, sqlx::Error> {
        let key = (pass.room().to_string(), after, limit);
        let read = {
            let mut reads = self
                .inner
                .readbacks
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            match reads.get(&key).and_then(|w| w.upgrade()) {
                Some(read) => read,
                None => {
                    let hub = self.clone();
                    let pass = pass.clone();
                    let read = futures::FutureExt::shared(Box::pin(async move {
                        hub.inner.readbacks_run.fetch_add(1, Ordering::Relaxed);
                        let read = hub.since(&pass, Some(after), 0, limit).await;
                        read.map(Arc::new).map_err(Arc::new)
                    }) as Reading);
                    let weak = read.downgrade().expect("a new read has not run");
                    reads.insert(key.clone(), weak);
                    read
                }
            }
        };
        let mut asking = Asking {
            reads: &self.inner.readbacks,
            key,
            read: Some(read),
        };
        let result = asking.read.as_mut().expect("just set").await;
        drop(asking);
        match result {
            Ok(resume) => Ok(Resume::clone(&resume)),
            Err(e) => Err(sqlx::Error::Protocol(format!("reading back: {e}"))),
        }
    }

    /// Read-backs remembered as in progress (for tests).
    #[cfg(test)]
    fn readbacks_pending(&self) -> usize {
        self.inner
            .readbacks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// How many read-backs of [`since_shared`](Self::since_shared) went to storage.
    #[cfg(test)]
    fn readbacks_run(&self) -> u64 {
        self.inner.readbacks_run.load(Ordering::Relaxed)
    }

    /// The room's members (usernames) on every instance, sorted.
    pub fn members(&self, room: &str) -> Vec<String> {
        self.inner.presence.members(room)
    }

    /// Marks `user` present in `room` while the returned guard lives. The first connection
    /// announces `joined`; the last one leaving announces `left` after the grace period,
    /// unless the user is back by then.
    pub fn enter(&self, pass: &RoomPass) -> Presence {
        self.inner.presence.enter(pass.room(), pass.user())
    }

    /// Keeps `user` present in `room` for [`POLL_LEASE`] from now, under `key` (a poller's
    /// session): polls hold no connection, so presence lasts as long as they keep polling.
    pub fn lease(&self, pass: &RoomPass, key: &str) {
        self.inner.presence.lease(pass.room(), pass.user(), key)
    }
}

/// How often rooms' activity is told (at most one `room-activity` per room per tick).
pub const ACTIVITY_EVERY: Duration = Duration::from_secs(1);

/// Tells the readers of every room that had new messages, once a tick: public rooms to
/// everyone, private ones to their members, on the topic every connection follows. Pages
/// move their unread badges with it, without following those rooms.
async fn tell_activity(inner: std::sync::Weak<Inner>, activity: Activity, shutdown: Shutdown) {
    let mut tick = tokio::time::interval(ACTIVITY_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let rooms = activity.take();
        if rooms.is_empty() {
            continue;
        }
        let Some(inner) = inner.upgrade() else { return };
        for (room, last) in rooms {
            let Ok(access) = inner.access.lookup(&room).await else {
                continue;
            };
            let msg = ServerMsg::RoomActivity {
                room,
                last_message_id: last,
                private: access.private,
            };
            let mut envelope = Envelope::new(NOTIFICATIONS, 0, "room-activity", json(&msg));
            if access.private {
                envelope = envelope.to_users(access.members.clone());
            }
            inner.bus.publish(envelope);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::chat::ServerMsg;
    use crate::server::fanout::bus::{LocalBus, Received};

    async fn hub(grace_ms: u64) -> (tempfile::TempDir, Hub) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let store = Store::connect(&url).await.unwrap();
        let config = ChatConfig {
            presence_grace: Duration::from_millis(grace_ms),
            history: 20,
            ..ChatConfig::default()
        };
        let hub = Hub::start(store, Arc::new(LocalBus::new()), Shutdown::new(), config);
        (dir, hub)
    }

    /// Posts as `user` in `room`, through the gate like every transport.
    async fn say(hub: &Hub, room: &str, user: &str, text: &str) -> Result<ChatMessage, PostError> {
        let pass = hub.admit(room, user).await.map_err(PostError::Refused)?;
        hub.post(&pass, text).await
    }

    /// A hub whose room `r` holds `count` messages (ids 1..=count), from different users.
    async fn room_of(count: usize) -> (tempfile::TempDir, Hub) {
        let (dir, hub) = hub(10).await;
        for i in 0..count {
            say(&hub, "r", &format!("u{i}"), "x").await.unwrap();
        }
        (dir, hub)
    }

    fn pass(room: &str) -> RoomPass {
        RoomPass::for_test(room, "reader")
    }

    #[tokio::test]
    async fn messages_are_stored_published_and_rate_limited() {
        let (_dir, hub) = hub(10).await;
        let mut sub = hub.subscribe(&pass("r"));
        let m = say(&hub, "r", "bob", "hello").await.unwrap();
        assert_eq!((m.id, m.display_name.as_str()), (1, "bob"));
        let Received::Message(e) = sub.recv().await else {
            panic!()
        };
        assert_eq!((e.id, e.kind.as_str()), (1, "chat-message"));
        assert!(matches!(
            serde_json::from_str::<ServerMsg>(e.text()).unwrap(),
            ServerMsg::ChatMessage(ChatMessage { id: 1, .. })
        ));
        for _ in 1..10 {
            say(&hub, "r", "bob", "again").await.unwrap();
        }
        assert_eq!(
            say(&hub, "r", "bob", "one more").await,
            Err(PostError::SlowDown)
        );
        assert!(
            say(&hub, "r", "carol", "mine").await.is_ok(),
            "the limit is per user"
        );
        assert!(matches!(
            say(&hub, "Bad Room", "carol", "x").await,
            Err(PostError::Refused(Refused::Invalid(_)))
        ));
        assert!(matches!(
            say(&hub, "r", "carol", "   ").await,
            Err(PostError::Invalid(_))
        ));
    }

    #[tokio::test]
    async fn messages_queued_when_the_server_stops_are_still_stored() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let store = Store::connect(&url).await.unwrap();
        let shutdown = Shutdown::new();
        let config = ChatConfig {
            rate_per_second: 100_000,
            ..ChatConfig::default()
        };
        let hub = Hub::start(
            store.clone(),
            Arc::new(LocalBus::new()),
            shutdown.clone(),
            config,
        );
        // Admitted once (the room's access is cached from here), as a socket is at its join.
        let pass = hub.admit("r", "bob").await.unwrap();
        let posts: Vec<_> = (0..300)
            .map(|i| {
                let (hub, pass) = (hub.clone(), pass.clone());
                tokio::spawn(async move { hub.post(&pass, &format!("m{i}")).await })
            })
            .collect();
        // Stop while they are on their way: every post is answered, and every one answered
        // as stored is in the database.
        tokio::task::yield_now().await;
        shutdown.trigger();
        let mut stored = 0;
        for p in posts {
            match p.await.unwrap() {
                Ok(_) => stored += 1,
                Err(e) => assert_eq!(e, PostError::Unavailable),
            }
        }
        assert!(
            shutdown.drain(Duration::from_secs(10)).await,
            "the writer ends"
        );
        let kept = store.chat_room_bounds("r").await.unwrap().last_id;
        assert_eq!(kept, stored, "nothing acknowledged is lost");
        assert!(stored > 0);
    }

    #[tokio::test]
    async fn resuming_from_before_the_history_reports_a_gap() {
        let (_dir, hub) = room_of(30).await;
        let fresh = hub.since(&pass("r"), None, 5, 20).await.unwrap();
        assert_eq!(
            fresh.messages.iter().map(|m| m.id).collect::<Vec<_>>(),
            vec![26, 27, 28, 29, 30]
        );
        assert_eq!((fresh.gap, fresh.last_id), (None, 30));
        let resumed = hub.since(&pass("r"), Some(27), 5, 20).await.unwrap();
        assert_eq!(resumed.messages.len(), 3);
        assert_eq!(resumed.gap, None);
        let old = hub.since(&pass("r"), Some(2), 5, 20).await.unwrap();
        assert_eq!(
            old.gap,
            Some(ChatGap {
                room: "r".into(),
                after_id: 2,
                first_available_id: 11
            })
        );
        assert_eq!(old.messages.len(), 20);
        let current = hub.since(&pass("r"), Some(30), 5, 20).await.unwrap();
        assert!(current.messages.is_empty());
        assert_eq!(current.last_id, 30);
        let reset = hub.since(&pass("r"), Some(900), 5, 20).await.unwrap();
        assert_eq!(
            reset.messages.len(),
            5,
            "an id from the future starts fresh"
        );
    }

    #[tokio::test]
    async fn subscribers_asking_for_the_same_read_back_at_once_share_one_read() {
        let (_dir, hub) = room_of(12).await;
        let alone = hub.since(&pass("r"), Some(4), 0, 5).await.unwrap();
        // Fifty sockets of the room saw the same hole after id 4 at the same moment.
        let asking: Vec<_> = (0..50)
            .map(|_| {
                let hub = hub.clone();
                tokio::spawn(async move { hub.since_shared(&pass("r"), 4, 5).await })
            })
            .collect();
        for a in asking {
            assert_eq!(a.await.unwrap().unwrap(), alone, "each gets the same page");
        }
        let reads = hub.readbacks_run();
        assert!(
            (1..10).contains(&reads),
            "{reads} reads went to storage for 50 subscribers asking at once"
        );
        // Done, it is forgotten: the next to ask reads afresh, and sees what came since.
        say(&hub, "r", "late", "x").await.unwrap();
        let again = hub.since_shared(&pass("r"), 8, 10).await.unwrap();
        assert_eq!(
            again.messages.iter().map(|m| m.id).collect::<Vec<_>>(),
            vec![9, 10, 11, 12, 13]
        );
        assert_eq!(hub.readbacks_run(), reads + 1);
        assert_eq!(
            hub.readbacks_pending(),
            0,
            "nothing is remembered once done"
        );
    }

    #[tokio::test]
    async fn a_read_back_whose_askers_all_left_is_forgotten() {
        let (_dir, hub) = room_of(6).await;
        let asking = {
            let hub = hub.clone();
            tokio::spawn(async move { hub.since_shared(&pass("r"), 2, 5).await })
        };
        // Let it start its read, then take the socket away.
        tokio::task::yield_now().await;
        asking.abort();
        let _ = asking.await;
        assert_eq!(hub.readbacks_pending(), 0, "an abandoned read is not kept");
        // And the next to ask reads for itself.
        let resume = hub.since_shared(&pass("r"), 2, 5).await.unwrap();
        assert_eq!(
            resume.messages.iter().map(|m| m.id).collect::<Vec<_>>(),
            vec![3, 4, 5, 6]
        );
    }
}
