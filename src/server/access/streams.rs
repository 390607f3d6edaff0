//! Every open WebSocket and event stream, by session and by user: the per-user quota, and
//! ending them when their session ends.
//!
//! A route that opens a long-lived connection first takes a [`Held`] from [`Streams::hold`]:
//! that counts it against `TIDINGS_MAX_STREAMS_PER_USER` on this instance (429
//! `too_many_streams` past it, before any upgrade) and gives it a token that fires when its
//! session ends. The WebSocket then closes with 1008 `Signed out.`; the event stream ends (its
//! browser's reconnect gets 401). Dropping the `Held` (the connection closed) gives the place
//! back.
//!
//! A session ends by logout, by expiry, or by an admin's disconnect:
//! - logout calls [`Streams::end_session`], which publishes on the bus's [`SESSIONS`] topic,
//!   so every instance (Redis carries it) ends that session's connections at once;
//! - expiry is watched here, once a second, against each connection's session expiry;
//! - every [`RECONCILE`] (and whenever the bus says it was cut off and may have lost
//!   messages), the sessions still held are checked against the database, so a logout heard
//!   by nobody is caught within that time.
//!
//! It is also what an admin sees of who is connected: [`Streams::list_everywhere`] asks every
//! instance over the bus for its connections (username, transport, since, topics).
//!
//! Tests: the unit tests below; `tests/it/auth.rs` (logout closes a socket and a stream, on two
//! instances in `tests/it/scale.rs`); `tests/it/admin.rs` (the list, a disconnect).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio_util::sync::CancellationToken;

use crate::{
    protocol::chat::ConnectionView,
    server::{
        clock,
        fanout::bus::{Bus, Envelope, Received, SESSIONS},
        storage::Store,
        ApiError, CurrentUser, Shutdown,
    },
};

/// How often held sessions are checked against the database.
pub const RECONCILE: Duration = Duration::from_secs(30);
/// How often expiries are looked at.
const EXPIRY_TICK: Duration = Duration::from_secs(1);

/// The bus kinds on [`SESSIONS`]: the envelope's id names the session, or the user.
const SESSION_ENDED: &str = "session-ended";
const USER_ENDED: &str = "user-ended";
/// "Every instance: report your connections on the topic in the data."
const CONNECTIONS_QUERY: &str = "connections-query";
/// How long the connection list waits for other instances' reports.
const REPORT_WAIT: Duration = Duration::from_millis(500);

/// The registry of live connections. Cheap to clone.
#[derive(Clone)]
pub struct Streams {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Streams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streams").finish_non_exhaustive()
    }
}

struct Inner {
    bus: Arc<dyn Bus>,
    /// This instance's id, as the connection list names it.
    instance: Arc<str>,
    /// Open connections per user at most (0: no limit).
    per_user_max: u32,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    next: u64,
    held: HashMap<u64, Entry>,
    per_user: HashMap<i64, u32>,
}

struct Entry {
    session_id: i64,
    user_id: i64,
    username: String,
    transport: &'static str,
    since: i64,
    topics: Vec<String>,
    /// Milliseconds since the epoch at which the session expires.
    expires_at: i64,
    ended: CancellationToken,
}

/// One open connection's place; dropping it gives the place back.
#[derive(Debug)]
pub struct Held {
    inner: Arc<Inner>,
    key: u64,
    ended: CancellationToken,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner").finish_non_exhaustive()
    }
}

impl Held {
    /// Fires when the connection's session has ended: close the connection.
    pub fn ended(&self) -> &CancellationToken {
        &self.ended
    }

    /// What the connection follows now (a WebSocket joining a room).
    pub fn set_topics(&self, topics: Vec<String>) {
        let mut state = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = state.held.get_mut(&self.key) {
            entry.topics = topics;
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut state = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = state.held.remove(&self.key) {
            if let Some(n) = state.per_user.get_mut(&entry.user_id) {
                *n -= 1;
                if *n == 0 {
                    state.per_user.remove(&entry.user_id);
                }
            }
        }
    }
}

impl Streams {
    /// The registry, listening on `bus` for ended sessions and watching expiries until
    /// `shutdown`.
    pub fn start(
        store: Store,
        bus: Arc<dyn Bus>,
        instance: Arc<str>,
        shutdown: Shutdown,
        per_user_max: u32,
    ) -> Self {
        let streams = Self {
            inner: Arc::new(Inner {
                bus: bus.clone(),
                instance,
                per_user_max,
                state: Mutex::new(State::default()),
            }),
        };
        let heard = bus.subscribe(SESSIONS);
        tokio::spawn(watch(
            Arc::downgrade(&streams.inner),
            store,
            heard,
            shutdown,
        ));
        streams
    }

    /// A place for one more connection of `user` over `transport` (`websocket`, `sse`)
    /// following `topics`, or 429 `too_many_streams`.
    pub fn hold(
        &self,
        user: &CurrentUser,
        transport: &'static str,
        topics: Vec<String>,
    ) -> Result<Held, ApiError> {
        let mut state = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
        let open = state.per_user.get(&user.user_id).copied().unwrap_or(0);
        let max = self.inner.per_user_max;
        if max > 0 && open >= max {
            return Err(ApiError::too_many(
                "too_many_streams",
                format!(
                    "You have {open} live connections open, the most one user may hold \
                     (TIDINGS_MAX_STREAMS_PER_USER is {max}); close a tab or a stream first."
                ),
            ));
        }
        state.next += 1;
        let key = state.next;
        let ended = CancellationToken::new();
        state.held.insert(
            key,
            Entry {
                session_id: user.session_id,
                user_id: user.user_id,
                username: user.user.username.clone(),
                transport,
                since: clock::now_ms(),
                topics,
                expires_at: user.expires_at,
                ended: ended.clone(),
            },
        );
        *state.per_user.entry(user.user_id).or_default() += 1;
        Ok(Held {
            inner: self.inner.clone(),
            key,
            ended,
        })
    }

    /// Ends every connection of session `session_id`, on every instance.
    pub fn end_session(&self, session_id: i64) {
        self.inner.bus.publish(Envelope::new(
            SESSIONS,
            session_id,
            SESSION_ENDED,
            "{}".into(),
        ));
    }

    /// Ends every connection of user `user_id`, on every instance.
    pub fn end_user(&self, user_id: i64) {
        self.inner
            .bus
            .publish(Envelope::new(SESSIONS, user_id, USER_ENDED, "{}".into()));
    }

    /// This instance's connections.
    pub fn list_here(&self) -> Vec<ConnectionView> {
        self.inner.list()
    }

    /// Every instance's connections: this one's, and what the others report over the bus
    /// within [`REPORT_WAIT`]. Sorted by username, then age.
    pub async fn list_everywhere(&self) -> Vec<ConnectionView> {
        let bus = &self.inner.bus;
        let mut all = if !bus.spans_instances() {
            self.inner.list()
        } else {
            let reply = format!("connections-reply:{}", crate::server::random::hex::<8>());
            let mut replies = bus.subscribe(&reply);
            bus.publish(Envelope::new(SESSIONS, 0, CONNECTIONS_QUERY, reply));
            let mut all = Vec::new();
            let deadline = tokio::time::Instant::now() + REPORT_WAIT;
            while let Ok(r) = tokio::time::timeout_at(deadline, replies.recv()).await {
                match r {
                    Received::Message(m) => {
                        if let Ok(list) = serde_json::from_str::<Vec<ConnectionView>>(m.text()) {
                            all.extend(list);
                        }
                    }
                    Received::Lagged(_) => {}
                    Received::Closed => break,
                }
            }
            all
        };
        all.sort_by(|a, b| (&a.username, &a.since).cmp(&(&b.username, &b.since)));
        all
    }

    /// Connections `user_id` holds on this instance.
    pub fn held_by(&self, user_id: i64) -> u32 {
        let state = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
        state.per_user.get(&user_id).copied().unwrap_or(0)
    }
}

impl Inner {
    /// The connections held here.
    fn list(&self) -> Vec<ConnectionView> {
        let instance = self.instance.to_string();
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state
            .held
            .values()
            .filter(|e| !e.ended.is_cancelled())
            .map(|e| ConnectionView {
                username: e.username.clone(),
                transport: e.transport.into(),
                instance: instance.clone(),
                since: clock::rfc3339(e.since),
                topics: e.topics.clone(),
            })
            .collect()
    }

    /// Fires the token of every connection `which` picks; returns how many.
    fn end_where(&self, which: impl Fn(&Entry) -> bool) -> usize {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut n = 0;
        for entry in state.held.values().filter(|e| which(e)) {
            if !entry.ended.is_cancelled() {
                entry.ended.cancel();
                n += 1;
            }
        }
        n
    }

    /// The sessions held here (each once).
    fn sessions(&self) -> Vec<i64> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut ids: Vec<i64> = state.held.values().map(|e| e.session_id).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

/// Ends connections whose session ended (heard on the bus, expired, or gone from the
/// database), until shutdown or the registry is dropped.
async fn watch(
    inner: std::sync::Weak<Inner>,
    store: Store,
    mut heard: crate::server::fanout::bus::Subscription,
    shutdown: Shutdown,
) {
    let mut expiry = tokio::time::interval(EXPIRY_TICK);
    expiry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reconcile = tokio::time::interval(RECONCILE);
    reconcile.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    reconcile.tick().await;
    loop {
        let check_database = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = heard.recv() => {
                let Some(inner) = inner.upgrade() else { return };
                match r {
                    Received::Message(m) => {
                        let ended = match m.kind.as_str() {
                            SESSION_ENDED => inner.end_where(|e| e.session_id == m.id),
                            USER_ENDED => inner.end_where(|e| e.user_id == m.id),
                            CONNECTIONS_QUERY => {
                                let list = serde_json::to_string(&inner.list()).expect("serializable");
                                inner.bus.publish(Envelope::new(m.text(), 0, "connections-report", list));
                                0
                            }
                            _ => 0,
                        };
                        if ended > 0 {
                            tracing::info!(kind = %m.kind, id = m.id, connections = ended, "connections of an ended session closed");
                        }
                        false
                    }
                    // Something may have been missed: ask the database.
                    Received::Lagged(_) => true,
                    Received::Closed => return,
                }
            }
            _ = expiry.tick() => {
                let Some(inner) = inner.upgrade() else { return };
                let now = clock::now_ms();
                let ended = inner.end_where(|e| e.expires_at <= now);
                if ended > 0 {
                    tracing::info!(connections = ended, "connections of expired sessions closed");
                }
                false
            }
            _ = reconcile.tick() => true,
        };
        if check_database {
            let Some(inner) = inner.upgrade() else { return };
            let held = inner.sessions();
            if held.is_empty() {
                continue;
            }
            match store.live_session_ids(&held, clock::now_ms()).await {
                Ok(live) => {
                    let live: std::collections::HashSet<i64> = live.into_iter().collect();
                    let ended = inner.end_where(|e| !live.contains(&e.session_id));
                    if ended > 0 {
                        tracing::info!(
                            connections = ended,
                            "connections of sessions ended elsewhere closed"
                        );
                    }
                }
                Err(e) => tracing::warn!(error = %e, "checking held sessions failed; next time"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        protocol::{Role, UserView},
        server::fanout::bus::LocalBus,
    };

    fn user(user_id: i64, session_id: i64, expires_at: i64) -> CurrentUser {
        CurrentUser {
            session_id,
            user_id,
            expires_at,
            user: UserView {
                username: format!("u{user_id}"),
                role: Role::User,
            },
        }
    }

    async fn streams(max: u32) -> (tempfile::TempDir, Streams) {
        let (dir, store) = crate::server::storage::temp_store().await;
        let s = Streams::start(
            store,
            Arc::new(LocalBus::new()),
            "local".into(),
            Shutdown::new(),
            max,
        );
        (dir, s)
    }

    impl Streams {
        fn hold_test(&self, user: &CurrentUser) -> Result<Held, ApiError> {
            self.hold(user, "sse", vec!["notifications".into()])
        }
    }

    #[tokio::test]
    async fn the_list_says_who_is_connected_how_and_to_what() {
        let (_dir, s) = streams(0).await;
        let far = clock::now_ms() + 3_600_000;
        let held = s.hold(&user(1, 10, far), "websocket", vec![]).unwrap();
        held.set_topics(vec!["room:general".into()]);
        let list = s.list_everywhere().await;
        assert_eq!(list.len(), 1);
        assert_eq!(
            (
                list[0].username.as_str(),
                list[0].transport.as_str(),
                list[0].instance.as_str()
            ),
            ("u1", "websocket", "local")
        );
        assert_eq!(list[0].topics, ["room:general"]);
        drop(held);
        assert!(s.list_here().is_empty());
    }

    async fn fires(token: &CancellationToken) {
        tokio::time::timeout(Duration::from_secs(3), token.cancelled())
            .await
            .expect("the connection is told to close");
    }

    #[tokio::test]
    async fn the_quota_counts_open_connections_per_user() {
        let (_dir, s) = streams(2).await;
        let far = clock::now_ms() + 3_600_000;
        let a = s.hold_test(&user(1, 10, far)).unwrap();
        let _b = s.hold_test(&user(1, 11, far)).unwrap();
        let e = s.hold_test(&user(1, 12, far)).unwrap_err();
        assert_eq!(e.code(), "too_many_streams");
        assert!(
            e.to_string().contains("TIDINGS_MAX_STREAMS_PER_USER is 2"),
            "{e}"
        );
        assert!(s.hold_test(&user(2, 20, far)).is_ok(), "per user");
        drop(a);
        assert_eq!(s.held_by(1), 1);
        assert!(
            s.hold_test(&user(1, 12, far)).is_ok(),
            "a closed one gives its place back"
        );
    }

    #[tokio::test]
    async fn ending_a_session_or_a_user_fires_only_theirs() {
        let (_dir, s) = streams(0).await;
        let far = clock::now_ms() + 3_600_000;
        let mine = s.hold_test(&user(1, 10, far)).unwrap();
        let mine_too = s.hold_test(&user(1, 10, far)).unwrap();
        let other_tab = s.hold_test(&user(1, 11, far)).unwrap();
        let other = s.hold_test(&user(2, 20, far)).unwrap();
        s.end_session(10);
        fires(mine.ended()).await;
        fires(mine_too.ended()).await;
        assert!(!other_tab.ended().is_cancelled());
        s.end_user(1);
        fires(other_tab.ended()).await;
        assert!(!other.ended().is_cancelled());
    }

    #[tokio::test]
    async fn an_expired_session_ends_within_the_tick() {
        let (_dir, s) = streams(0).await;
        let soon = s.hold_test(&user(1, 10, clock::now_ms() + 300)).unwrap();
        fires(soon.ended()).await;
    }
}
