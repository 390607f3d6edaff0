//! The rooms' shared machinery, whatever the transport: storing messages (one writer task,
//! batched), presence (one entry per user per room, with a grace period before `left`),
//! the per-user rate limit, and reading history back for resumes.
//!
//! Every broadcast goes through the [`Bus`] on topic `room:<name>`: a message is stored first
//! (so it has its id), then published as the `ServerMsg` JSON every transport forwards as is.
//! The WebSocket, SSE and polling handlers differ only in how they deliver; they all
//! subscribe here, resume with [`Hub::since`], and hold a [`Presence`] while connected.
//!
//! Presence is kept in this process (one instance); the bus carries its events, so every
//! transport hears them. Scale-out (issue 7) moves the member table to Redis.
//!
//! Tests: the unit tests below (presence grace, rate limit, resume with gap).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::sync::{mpsc, oneshot};

use super::store::{ChatRow, NewChatMessage};
use crate::{
    protocol::chat::{
        room_name_problem, text_problem, ChatGap, ChatMessage, ChatPresence, PresenceAction,
        ServerMsg, SLOW_DOWN,
    },
    retry,
    server::{
        access::limiter::SharedLimiter,
        clock,
        config::ChatConfig,
        fanout::bus::{Bus, Envelope, Received, Subscription, PRESENCE},
        observe::metrics,
        shutdown::Shutdown,
        storage::Store,
    },
};

/// Messages stored per transaction at most.
const WRITE_BATCH: usize = 256;
/// Messages waiting to be stored at most; senders wait beyond it.
const WRITE_QUEUE: usize = 4096;
/// How long a poll (or a long poll) keeps its user present after it ends.
pub const POLL_LEASE: Duration = Duration::from_secs(10);

/// The bus topic of a room.
pub fn topic(room: &str) -> String {
    format!("room:{room}")
}

/// The wire form of a stored message.
pub fn message_of(row: &ChatRow) -> ChatMessage {
    ChatMessage {
        id: row.id,
        room: row.room.clone(),
        display_name: row.author.clone(),
        text: row.text.clone(),
        timestamp: clock::rfc3339(row.created_at),
    }
}

/// The JSON every transport sends for a server message.
pub fn json(msg: &ServerMsg) -> String {
    serde_json::to_string(msg).expect("server messages serialize")
}

/// Why a message was not posted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostError {
    /// Bad room name or text: the sentence says what.
    Invalid(String),
    /// Over the per-user rate (`Slow down.`).
    SlowDown,
    /// The database did not take it (or the server is stopping).
    Unavailable,
}

impl PostError {
    /// The sentence a client sees.
    pub fn sentence(&self) -> String {
        match self {
            Self::Invalid(s) => s.clone(),
            Self::SlowDown => SLOW_DOWN.into(),
            Self::Unavailable => "The message could not be stored; try again.".into(),
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

/// One room member (a user), however many connections they have.
#[derive(Debug)]
struct Member {
    connections: usize,
    /// Bumped by every enter and leave: a pending `left` fires only if nothing happened since.
    generation: u64,
}

struct Pending {
    message: NewChatMessage,
    reply: oneshot::Sender<Option<ChatRow>>,
}

struct Inner {
    store: Store,
    bus: Arc<dyn Bus>,
    shutdown: Shutdown,
    config: ChatConfig,
    writer: mpsc::Sender<Pending>,
    /// Messages per user per second (`Slow down.`), shared by every instance with Redis.
    rate: SharedLimiter,
    /// room → user → member.
    members: Mutex<HashMap<String, HashMap<String, Member>>>,
    /// (room, lease key) → (expiry, presence) for pollers, who hold no connection.
    leases: Mutex<HashMap<(String, String), (Instant, Presence)>>,
    /// room → user → instance → when that instance last said so: who is present anywhere.
    /// This instance's own entries are kept by `enter`/`leave`; the others' by what they
    /// publish on the bus's presence topic. Locked after `members`, never before.
    everyone: Mutex<Everyone>,
}

type Everyone = HashMap<String, HashMap<String, HashMap<String, Instant>>>;

/// How often an instance tells the others everyone present on it (a missed change is mended
/// by the next one).
const PRESENCE_SNAPSHOT: Duration = Duration::from_secs(5);
/// Another instance's presence that was not repeated for this long is gone (the instance
/// died): its users leave unless present elsewhere.
const PRESENCE_EXPIRY: Duration = Duration::from_secs(15);

/// What instances tell each other on the presence topic.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
enum InstancePresence {
    /// `user` came (`present`) into `room` on `instance`, or left it there for good.
    Change {
        instance: String,
        room: String,
        user: String,
        present: bool,
    },
    /// Everyone present on `instance`, room by room.
    Snapshot {
        instance: String,
        rooms: HashMap<String, Vec<String>>,
    },
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
    /// Starts the writer and the lease sweeper; both end at shutdown. The rate limit counts
    /// in this process only (see [`start_with_rate`](Self::start_with_rate)).
    pub fn start(store: Store, bus: Arc<dyn Bus>, shutdown: Shutdown, config: ChatConfig) -> Self {
        let rate = SharedLimiter::local(config.rate_per_second, Duration::from_secs(1));
        Self::start_with_rate(store, bus, shutdown, config, rate)
    }

    /// The same, with the rate limit `rate` (one shared through Redis, across instances).
    pub fn start_with_rate(
        store: Store,
        bus: Arc<dyn Bus>,
        shutdown: Shutdown,
        config: ChatConfig,
        rate: SharedLimiter,
    ) -> Self {
        let (writer, rx) = mpsc::channel(WRITE_QUEUE);
        let hub = Self {
            inner: Arc::new(Inner {
                store,
                bus,
                shutdown,
                config,
                writer,
                rate,
                members: Mutex::new(HashMap::new()),
                leases: Mutex::new(HashMap::new()),
                everyone: Mutex::new(HashMap::new()),
            }),
        };
        // Alone (the in-process bus), nobody else is there to tell or to hear.
        if hub.inner.bus.spans_instances() {
            let presence = hub.inner.bus.subscribe(PRESENCE);
            tokio::spawn(presence_loop(
                Arc::downgrade(&hub.inner),
                presence,
                hub.inner.shutdown.clone(),
            ));
        }
        let inner = &hub.inner;
        inner.shutdown.spawn(write_loop(
            inner.store.clone(),
            inner.bus.clone(),
            inner.shutdown.clone(),
            inner.config.history,
            rx,
        ));
        let weak = Arc::downgrade(&hub.inner);
        let shutdown = inner.shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let Some(inner) = weak.upgrade() else { break };
                let now = Instant::now();
                // Expired leases are removed under the lock but dropped after it: dropping a
                // Presence takes the members lock.
                let expired: Vec<_> = {
                    let mut leases = inner.leases.lock().expect("leases lock");
                    let keys: Vec<_> = leases
                        .iter()
                        .filter(|(_, (until, _))| *until <= now)
                        .map(|(k, _)| k.clone())
                        .collect();
                    keys.into_iter().filter_map(|k| leases.remove(&k)).collect()
                };
                drop(expired);
            }
        });
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

    /// Subscribes to a room's live messages and presence.
    pub fn subscribe(&self, room: &str) -> Subscription {
        self.inner.bus.subscribe(&topic(room))
    }

    /// Checks, rate-limits and stores a message by `author` in `room`; it is published to
    /// every member once stored. Returns the stored message.
    pub async fn post(
        &self,
        room: &str,
        author: &str,
        text: &str,
    ) -> Result<ChatMessage, PostError> {
        if let Some(problem) = room_name_problem(room) {
            return Err(PostError::Invalid(problem));
        }
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
            },
            reply,
        };
        self.inner
            .writer
            .send(pending)
            .await
            .map_err(|_| PostError::Unavailable)?;
        match stored.await {
            Ok(Some(row)) => Ok(message_of(&row)),
            _ => Err(PostError::Unavailable),
        }
    }

    /// What a client that has everything up to `after` (`None`: nothing) should get: up to
    /// `limit` messages since (`None`: the latest `fresh` ones), and a gap notice first when
    /// some of them are no longer kept. An `after` beyond the room's last id (a client of a
    /// database since reset) counts as `None`.
    pub async fn since(
        &self,
        room: &str,
        after: Option<i64>,
        fresh: i64,
        limit: i64,
    ) -> Result<Resume, sqlx::Error> {
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

    /// The room's members (usernames) on every instance, sorted.
    pub fn members(&self, room: &str) -> Vec<String> {
        let everyone = self.inner.everyone.lock().expect("presence lock");
        let mut names: Vec<String> = everyone
            .get(room)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        names.sort();
        names
    }

    /// Marks `user` present in `room` while the returned guard lives. The first connection
    /// announces `joined`; the last one leaving announces `left` after the grace period,
    /// unless the user is back by then.
    pub fn enter(&self, room: &str, user: &str) -> Presence {
        let mut members = self.inner.members.lock().expect("members lock");
        let room_members = members.entry(room.to_string()).or_default();
        match room_members.get_mut(user) {
            Some(m) => {
                m.connections += 1;
                m.generation += 1;
            }
            None => {
                room_members.insert(
                    user.to_string(),
                    Member {
                        connections: 1,
                        generation: 0,
                    },
                );
                self.here(room, user, true);
            }
        }
        Presence {
            hub: self.clone(),
            room: room.to_string(),
            user: user.to_string(),
        }
    }

    /// Keeps `user` present in `room` for [`POLL_LEASE`] from now, under `key` (a poller's
    /// session): polls hold no connection, so presence lasts as long as they keep polling.
    pub fn lease(&self, room: &str, user: &str, key: &str) {
        let until = Instant::now() + POLL_LEASE;
        let mut leases = self.inner.leases.lock().expect("leases lock");
        let k = (room.to_string(), key.to_string());
        if let Some((expiry, _)) = leases.get_mut(&k) {
            *expiry = until;
            return;
        }
        drop(leases);
        let presence = self.enter(room, user);
        let mut leases = self.inner.leases.lock().expect("leases lock");
        if let Some((expiry, _)) = leases.get_mut(&k) {
            // Another poll of the same session got here first; `presence` drops after the
            // lock is released (dropping takes the members lock, never the leases lock).
            *expiry = until;
            drop(leases);
            drop(presence);
        } else {
            leases.insert(k, (until, presence));
        }
    }

    fn leave(&self, room: &str, user: &str) {
        let generation = {
            let mut members = self.inner.members.lock().expect("members lock");
            let Some(m) = members.get_mut(room).and_then(|r| r.get_mut(user)) else {
                return;
            };
            m.connections = m.connections.saturating_sub(1);
            m.generation += 1;
            if m.connections > 0 {
                return;
            }
            m.generation
        };
        let hub = self.clone();
        let (room, user) = (room.to_string(), user.to_string());
        let grace = self.inner.config.presence_grace;
        let shutdown = self.inner.shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(grace) => {}
                _ = shutdown.cancelled() => return,
            }
            let mut members = hub.inner.members.lock().expect("members lock");
            let Some(room_members) = members.get_mut(&room) else {
                return;
            };
            if room_members
                .get(&user)
                .is_some_and(|m| m.connections == 0 && m.generation == generation)
            {
                room_members.remove(&user);
                if room_members.is_empty() {
                    members.remove(&room);
                }
                hub.here(&room, &user, false);
            }
        });
    }

    /// `user` came into (`present`) or left `room` on this instance: the other instances are
    /// told, and this instance's clients hear `joined` or `left` if that changed whether the
    /// user is present anywhere. Called with the members lock held, so a user's changes go out
    /// in the order they happened.
    fn here(&self, room: &str, user: &str, present: bool) {
        let me = self.inner.bus.instance().to_string();
        if self.inner.bus.spans_instances() {
            let change = InstancePresence::Change {
                instance: me.clone(),
                room: room.to_string(),
                user: user.to_string(),
                present,
            };
            self.tell(&change);
        }
        let mut everyone = self.inner.everyone.lock().expect("presence lock");
        if let Some(action) = set_present(&mut everyone, room, user, &me, present) {
            self.announce(room, user, action);
        }
    }

    /// Tells the other instances `news`.
    fn tell(&self, news: &InstancePresence) {
        let data = serde_json::to_string(news).expect("serializable");
        self.inner
            .bus
            .publish(Envelope::new(PRESENCE, 0, "presence", data));
    }

    /// Tells this instance's clients of a presence change (each instance works it out for
    /// itself, so nobody hears it twice).
    fn announce(&self, room: &str, user: &str, action: PresenceAction) {
        let message = match action {
            PresenceAction::Joined => format!("{user} joined #{room}."),
            PresenceAction::Left => format!("{user} left #{room}."),
        };
        let msg = ServerMsg::ChatPresence(ChatPresence {
            action,
            room: room.to_string(),
            display_name: user.to_string(),
            message,
            timestamp: clock::rfc3339(clock::now_ms()),
        });
        self.inner
            .bus
            .publish_local(Envelope::new(topic(room), 0, "chat-presence", json(&msg)));
    }
}

/// Records that `user` is (or is no longer) present in `room` on `instance`; returns the
/// change to announce when that made them present anywhere, or nowhere.
fn set_present(
    everyone: &mut Everyone,
    room: &str,
    user: &str,
    instance: &str,
    present: bool,
) -> Option<PresenceAction> {
    if present {
        let users = everyone.entry(room.to_string()).or_default();
        let instances = users.entry(user.to_string()).or_default();
        let was_absent = instances.is_empty();
        instances.insert(instance.to_string(), Instant::now());
        return was_absent.then_some(PresenceAction::Joined);
    }
    let users = everyone.get_mut(room)?;
    let instances = users.get_mut(user)?;
    instances.remove(instance)?;
    if !instances.is_empty() {
        return None;
    }
    users.remove(user);
    if users.is_empty() {
        everyone.remove(room);
    }
    Some(PresenceAction::Left)
}

/// Keeps [`Inner::everyone`] up to date with the other instances: applies their changes and
/// snapshots, tells them ours every [`PRESENCE_SNAPSHOT`], and retires what an instance stopped
/// repeating for [`PRESENCE_EXPIRY`] (it died).
async fn presence_loop(inner: std::sync::Weak<Inner>, mut heard: Subscription, shutdown: Shutdown) {
    let mut tick = tokio::time::interval(PRESENCE_SNAPSHOT);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = heard.recv() => {
                let Some(inner) = inner.upgrade() else { return };
                let hub = Hub { inner };
                match r {
                    Received::Message(m) => hub.heard(m.text()),
                    // Missed changes are mended by the next snapshots.
                    Received::Lagged(_) => {}
                    Received::Closed => return,
                }
            }
            _ = tick.tick() => {
                let Some(inner) = inner.upgrade() else { return };
                let hub = Hub { inner };
                hub.tell_and_retire();
            }
        }
    }
}

impl Hub {
    /// Applies another instance's presence message.
    fn heard(&self, text: &str) {
        let Ok(news) = serde_json::from_str::<InstancePresence>(text) else {
            tracing::warn!("an unreadable presence message on the bus");
            return;
        };
        let me = self.inner.bus.instance();
        let mut everyone = self.inner.everyone.lock().expect("presence lock");
        match news {
            InstancePresence::Change { instance, .. } if instance == me => {}
            InstancePresence::Change {
                instance,
                room,
                user,
                present,
            } => {
                if let Some(action) = set_present(&mut everyone, &room, &user, &instance, present) {
                    self.announce(&room, &user, action);
                }
            }
            InstancePresence::Snapshot { instance, .. } if instance == me => {}
            InstancePresence::Snapshot { instance, rooms } => {
                // What the instance no longer lists, it left (a change we missed).
                let gone: Vec<(String, String)> = everyone
                    .iter()
                    .flat_map(|(room, users)| {
                        users
                            .iter()
                            .filter(|(user, instances)| {
                                instances.contains_key(&instance)
                                    && !rooms.get(room).is_some_and(|u| u.contains(user))
                            })
                            .map(|(user, _)| (room.clone(), user.clone()))
                            .collect::<Vec<_>>()
                    })
                    .collect();
                for (room, user) in gone {
                    if let Some(action) = set_present(&mut everyone, &room, &user, &instance, false)
                    {
                        self.announce(&room, &user, action);
                    }
                }
                for (room, users) in rooms {
                    for user in users {
                        if let Some(action) =
                            set_present(&mut everyone, &room, &user, &instance, true)
                        {
                            self.announce(&room, &user, action);
                        }
                    }
                }
            }
        }
    }

    /// Tells the other instances everyone present here, and retires the presence of
    /// instances that went quiet.
    fn tell_and_retire(&self) {
        let me = self.inner.bus.instance().to_string();
        let rooms: HashMap<String, Vec<String>> = {
            let members = self.inner.members.lock().expect("members lock");
            members
                .iter()
                .map(|(room, users)| (room.clone(), users.keys().cloned().collect()))
                .collect()
        };
        let snapshot = InstancePresence::Snapshot {
            instance: me.clone(),
            rooms,
        };
        self.tell(&snapshot);
        let now = Instant::now();
        let mut everyone = self.inner.everyone.lock().expect("presence lock");
        let mut quiet: Vec<(String, String, String)> = Vec::new();
        for (room, users) in everyone.iter() {
            for (user, instances) in users {
                for (instance, seen) in instances {
                    if *instance != me && now.duration_since(*seen) > PRESENCE_EXPIRY {
                        quiet.push((room.clone(), user.clone(), instance.clone()));
                    }
                }
            }
        }
        for (room, user, instance) in quiet {
            if let Some(action) = set_present(&mut everyone, &room, &user, &instance, false) {
                self.announce(&room, &user, action);
            }
        }
    }
}

/// A user's presence in a room through one connection; dropping it is that connection
/// leaving.
#[derive(Debug)]
pub struct Presence {
    hub: Hub,
    room: String,
    user: String,
}

impl Presence {
    /// The room this presence is in.
    pub fn room(&self) -> &str {
        &self.room
    }
}

impl Drop for Presence {
    fn drop(&mut self) {
        self.hub.leave(&self.room, &self.user);
    }
}

/// Stores queued messages in batches, then publishes each (in id order) and answers its
/// sender. A failed batch is retried with backoff a few times before its senders hear
/// `Unavailable`. At shutdown it takes no more, but stores what was already queued: a
/// message a sender handed over is either stored or refused, never dropped unanswered.
async fn write_loop(
    store: Store,
    bus: Arc<dyn Bus>,
    shutdown: Shutdown,
    keep: i64,
    mut rx: mpsc::Receiver<Pending>,
) {
    let mut batch: Vec<Pending> = Vec::with_capacity(WRITE_BATCH);
    let mut stop = std::pin::pin!(shutdown.cancelled_owned());
    let mut closing = false;
    loop {
        let first = tokio::select! {
            biased;
            _ = &mut stop, if !closing => {
                // No new messages from here on; the ones queued are still stored below.
                rx.close();
                closing = true;
                continue;
            }
            p = rx.recv() => p,
        };
        let Some(first) = first else { break };
        batch.push(first);
        while batch.len() < WRITE_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let messages: Vec<NewChatMessage> = batch.iter().map(|p| p.message.clone()).collect();
        match store.append_chat_messages(&messages, keep).await {
            Ok(rows) => {
                for (pending, row) in batch.drain(..).zip(rows) {
                    publish(&*bus, &row);
                    let _ = pending.reply.send(Some(row));
                }
            }
            Err(e) => {
                // One at a time, so a message the database refuses fails alone, and a
                // passing failure is retried with backoff.
                tracing::warn!(error = %e, messages = batch.len(), "storing a chat batch failed; storing one by one");
                for pending in batch.drain(..) {
                    let mut stored = None;
                    for attempt in 0..3u32 {
                        match store
                            .append_chat_messages(std::slice::from_ref(&pending.message), keep)
                            .await
                        {
                            Ok(mut rows) => {
                                stored = rows.pop();
                                break;
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, attempt, "storing a chat message failed");
                                tokio::time::sleep(retry::backoff(
                                    attempt,
                                    Duration::from_millis(50),
                                    Duration::from_millis(500),
                                ))
                                .await;
                            }
                        }
                    }
                    if let Some(row) = &stored {
                        publish(&*bus, row);
                    }
                    let _ = pending.reply.send(stored);
                }
            }
        }
    }
}

/// Publishes a stored message to its room.
fn publish(bus: &dyn Bus, row: &ChatRow) {
    metrics::record_messages(1);
    let msg = ServerMsg::ChatMessage(message_of(row));
    bus.publish(Envelope::new(topic(&row.room), row.id, "chat-message", json(&msg)).in_order());
}

#[cfg(test)]
mod tests {
    use super::*;
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

    fn presence_of(r: Received) -> (PresenceAction, String) {
        let Received::Message(m) = r else {
            panic!("expected a message, got {r:?}")
        };
        match serde_json::from_str::<ServerMsg>(m.text()).unwrap() {
            ServerMsg::ChatPresence(p) => (p.action, p.display_name),
            other => panic!("expected presence, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn presence_is_one_entry_per_user_and_waits_out_the_grace_period() {
        let (_dir, hub) = hub(150).await;
        let mut sub = hub.subscribe("lobby");
        let tab1 = hub.enter("lobby", "alice");
        let tab2 = hub.enter("lobby", "alice");
        assert_eq!(hub.members("lobby"), vec!["alice"]);
        assert_eq!(
            presence_of(sub.recv().await),
            (PresenceAction::Joined, "alice".into())
        );
        // A reload: the last tab closes and a new one opens within the grace period.
        drop(tab1);
        drop(tab2);
        let tab3 = hub.enter("lobby", "alice");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(sub.try_recv().is_none(), "no left/joined flap on reload");
        assert_eq!(hub.members("lobby"), vec!["alice"]);
        drop(tab3);
        assert_eq!(
            hub.members("lobby"),
            vec!["alice"],
            "still there during the grace"
        );
        assert_eq!(
            presence_of(sub.recv().await),
            (PresenceAction::Left, "alice".into())
        );
        assert!(hub.members("lobby").is_empty());
    }

    #[tokio::test]
    async fn messages_are_stored_published_and_rate_limited() {
        let (_dir, hub) = hub(10).await;
        let mut sub = hub.subscribe("r");
        let m = hub.post("r", "bob", "hello").await.unwrap();
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
            hub.post("r", "bob", "again").await.unwrap();
        }
        assert_eq!(
            hub.post("r", "bob", "one more").await,
            Err(PostError::SlowDown)
        );
        assert!(
            hub.post("r", "carol", "mine").await.is_ok(),
            "the limit is per user"
        );
        assert!(matches!(
            hub.post("Bad Room", "carol", "x").await,
            Err(PostError::Invalid(_))
        ));
        assert!(matches!(
            hub.post("r", "carol", "   ").await,
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
        let posts: Vec<_> = (0..300)
            .map(|i| {
                let hub = hub.clone();
                tokio::spawn(async move { hub.post("r", "bob", &format!("m{i}")).await })
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
        let (_dir, hub) = hub(10).await;
        for i in 0..30 {
            hub.post("r", &format!("u{i}"), "x").await.unwrap();
        }
        let fresh = hub.since("r", None, 5, 20).await.unwrap();
        assert_eq!(
            fresh.messages.iter().map(|m| m.id).collect::<Vec<_>>(),
            vec![26, 27, 28, 29, 30]
        );
        assert_eq!((fresh.gap, fresh.last_id), (None, 30));
        let resumed = hub.since("r", Some(27), 5, 20).await.unwrap();
        assert_eq!(resumed.messages.len(), 3);
        assert_eq!(resumed.gap, None);
        let old = hub.since("r", Some(2), 5, 20).await.unwrap();
        assert_eq!(
            old.gap,
            Some(ChatGap {
                room: "r".into(),
                after_id: 2,
                first_available_id: 11
            })
        );
        assert_eq!(old.messages.len(), 20);
        let current = hub.since("r", Some(30), 5, 20).await.unwrap();
        assert!(current.messages.is_empty());
        assert_eq!(current.last_id, 30);
        let reset = hub.since("r", Some(900), 5, 20).await.unwrap();
        assert_eq!(
            reset.messages.len(),
            5,
            "an id from the future starts fresh"
        );
    }
}
