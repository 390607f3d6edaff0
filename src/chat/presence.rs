//! Who is in which room: one entry per user per room however many connections they have,
//! a grace period before `left` (a reload reconnects well within it), leases for pollers who
//! hold no connection, and, with several instances, what the others say on the bus's presence
//! topic (changes as they happen, a snapshot every few seconds, and the presence of an
//! instance that went quiet retired).
//!
//! Tests: `chat::hub`'s unit tests (grace period); `tests/it/scale.rs` (two instances).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use super::wire::{json, topic};
use crate::{
    protocol::chat::{ChatPresence, PresenceAction, ServerMsg},
    server::{
        clock,
        fanout::bus::{Bus, Envelope, Received, Subscription, PRESENCE},
        Shutdown,
    },
};

/// How long a poll (or a long poll) keeps its user present after it ends.
pub const POLL_LEASE: Duration = Duration::from_secs(10);

/// One room member (a user), however many connections they have.
#[derive(Debug)]
struct Member {
    connections: usize,
    /// Bumped by every enter and leave: a pending `left` fires only if nothing happened since.
    generation: u64,
}

/// Everyone present, on this instance and (as they said) on the others.
pub(super) struct Presences {
    bus: Arc<dyn Bus>,
    shutdown: Shutdown,
    /// How long after a user's last connection closes before the room hears `left`.
    grace: Duration,
    /// room → user → member.
    members: Mutex<HashMap<String, HashMap<String, Member>>>,
    /// (room, lease key) → (expiry, presence) for pollers, who hold no connection.
    leases: Mutex<HashMap<(String, String), (Instant, Presence)>>,
    /// room → user → instance → when that instance last said so: who is present anywhere.
    /// This instance's own entries are kept by `enter`/`leave`; the others' by what they
    /// publish on the bus's presence topic. Locked after `members`, never before.
    everyone: Mutex<Everyone>,
}

impl std::fmt::Debug for Presences {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Presences").finish_non_exhaustive()
    }
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

impl Presences {
    /// Starts keeping presence: the lease sweeper, and (with several instances) the loop that
    /// hears the others and tells them ours. Both end at shutdown.
    pub(super) fn start(bus: Arc<dyn Bus>, shutdown: Shutdown, grace: Duration) -> Arc<Self> {
        let presences = Arc::new(Self {
            bus,
            shutdown,
            grace,
            members: Mutex::new(HashMap::new()),
            leases: Mutex::new(HashMap::new()),
            everyone: Mutex::new(HashMap::new()),
        });
        // Alone (the in-process bus), nobody else is there to tell or to hear.
        if presences.bus.spans_instances() {
            let heard = presences.bus.subscribe(PRESENCE);
            tokio::spawn(presence_loop(
                Arc::downgrade(&presences),
                heard,
                presences.shutdown.clone(),
            ));
        }
        let weak = Arc::downgrade(&presences);
        let shutdown = presences.shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let Some(presences) = weak.upgrade() else {
                    break;
                };
                presences.sweep_leases();
            }
        });
        presences
    }

    /// Ends the leases that ran out.
    fn sweep_leases(&self) {
        let now = Instant::now();
        // Expired leases are removed under the lock but dropped after it: dropping a
        // Presence takes the members lock.
        let expired: Vec<_> = {
            let mut leases = self.leases.lock().expect("leases lock");
            let keys: Vec<_> = leases
                .iter()
                .filter(|(_, (until, _))| *until <= now)
                .map(|(k, _)| k.clone())
                .collect();
            keys.into_iter().filter_map(|k| leases.remove(&k)).collect()
        };
        drop(expired);
    }

    /// The room's members (usernames) on every instance, sorted.
    pub fn members(&self, room: &str) -> Vec<String> {
        let everyone = self.everyone.lock().expect("presence lock");
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
    pub fn enter(self: &Arc<Self>, room: &str, user: &str) -> Presence {
        let mut members = self.members.lock().expect("members lock");
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
            presences: self.clone(),
            room: room.to_string(),
            user: user.to_string(),
        }
    }

    /// Keeps `user` present in `room` for [`POLL_LEASE`] from now, under `key` (a poller's
    /// session): polls hold no connection, so presence lasts as long as they keep polling.
    pub fn lease(self: &Arc<Self>, room: &str, user: &str, key: &str) {
        let until = Instant::now() + POLL_LEASE;
        let mut leases = self.leases.lock().expect("leases lock");
        let k = (room.to_string(), key.to_string());
        if let Some((expiry, _)) = leases.get_mut(&k) {
            *expiry = until;
            return;
        }
        drop(leases);
        let presence = self.enter(room, user);
        let mut leases = self.leases.lock().expect("leases lock");
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

    fn leave(self: &Arc<Self>, room: &str, user: &str) {
        let generation = {
            let mut members = self.members.lock().expect("members lock");
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
        let presences = self.clone();
        let (room, user) = (room.to_string(), user.to_string());
        let grace = self.grace;
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(grace) => {}
                _ = shutdown.cancelled() => return,
            }
            let mut members = presences.members.lock().expect("members lock");
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
                presences.here(&room, &user, false);
            }
        });
    }

    /// `user` came into (`present`) or left `room` on this instance: the other instances are
    /// told, and this instance's clients hear `joined` or `left` if that changed whether the
    /// user is present anywhere. Called with the members lock held, so a user's changes go out
    /// in the order they happened.
    fn here(&self, room: &str, user: &str, present: bool) {
        let me = self.bus.instance().to_string();
        if self.bus.spans_instances() {
            let change = InstancePresence::Change {
                instance: me.clone(),
                room: room.to_string(),
                user: user.to_string(),
                present,
            };
            self.tell(&change);
        }
        let mut everyone = self.everyone.lock().expect("presence lock");
        if let Some(action) = set_present(&mut everyone, room, user, &me, present) {
            self.announce(room, user, action);
        }
    }

    /// Tells the other instances `news`.
    fn tell(&self, news: &InstancePresence) {
        let data = serde_json::to_string(news).expect("serializable");
        self.bus
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
        self.bus
            .publish_local(Envelope::new(topic(room), 0, "chat-presence", json(&msg)));
    }

    /// Applies another instance's presence message.
    fn heard(&self, text: &str) {
        let Ok(news) = serde_json::from_str::<InstancePresence>(text) else {
            tracing::warn!("an unreadable presence message on the bus");
            return;
        };
        let me = self.bus.instance();
        let mut everyone = self.everyone.lock().expect("presence lock");
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
        let me = self.bus.instance().to_string();
        let rooms: HashMap<String, Vec<String>> = {
            let members = self.members.lock().expect("members lock");
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
        let mut everyone = self.everyone.lock().expect("presence lock");
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

/// Keeps [`Presences::everyone`] up to date with the other instances: applies their changes and
/// snapshots, tells them ours every [`PRESENCE_SNAPSHOT`], and retires what an instance stopped
/// repeating for [`PRESENCE_EXPIRY`] (it died).
pub(super) async fn presence_loop(
    presences: std::sync::Weak<Presences>,
    mut heard: Subscription,
    shutdown: Shutdown,
) {
    let mut tick = tokio::time::interval(PRESENCE_SNAPSHOT);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = heard.recv() => {
                let Some(presences) = presences.upgrade() else { return };
                match r {
                    Received::Message(m) => presences.heard(m.text()),
                    // Missed changes are mended by the next snapshots.
                    Received::Lagged(_) => {}
                    Received::Closed => return,
                }
            }
            _ = tick.tick() => {
                let Some(presences) = presences.upgrade() else { return };
                presences.tell_and_retire();
            }
        }
    }
}

/// A user's presence in a room through one connection; dropping it is that connection
/// leaving.
#[derive(Debug)]
pub struct Presence {
    presences: Arc<Presences>,
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
        self.presences.leave(&self.room, &self.user);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::fanout::bus::LocalBus;

    fn presence_of(r: Received) -> (PresenceAction, String) {
        let Received::Message(m) = r else {
            panic!("not a message: {r:?}")
        };
        match serde_json::from_str::<ServerMsg>(m.text()).unwrap() {
            ServerMsg::ChatPresence(p) => (p.action, p.display_name),
            other => panic!("not presence: {other:?}"),
        }
    }

    // On tokio's paused clock: the grace period passes when the test waits, at once.
    #[tokio::test(start_paused = true)]
    async fn presence_is_one_entry_per_user_and_waits_out_the_grace_period() {
        let bus = Arc::new(LocalBus::new());
        let presences = Presences::start(bus.clone(), Shutdown::new(), Duration::from_millis(150));
        let mut sub = bus.subscribe(&topic("lobby"));
        let tab1 = presences.enter("lobby", "alice");
        let tab2 = presences.enter("lobby", "alice");
        assert_eq!(presences.members("lobby"), vec!["alice"]);
        assert_eq!(
            presence_of(sub.recv().await),
            (PresenceAction::Joined, "alice".into())
        );
        // A reload: the last tab closes and a new one opens within the grace period.
        drop(tab1);
        drop(tab2);
        let tab3 = presences.enter("lobby", "alice");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(sub.try_recv().is_none(), "no left/joined flap on reload");
        assert_eq!(presences.members("lobby"), vec!["alice"]);
        drop(tab3);
        let left_at = tokio::time::Instant::now();
        assert_eq!(
            presences.members("lobby"),
            vec!["alice"],
            "still there during the grace"
        );
        assert_eq!(
            presence_of(sub.recv().await),
            (PresenceAction::Left, "alice".into())
        );
        assert!(
            left_at.elapsed() >= Duration::from_millis(150),
            "not before the grace period ends"
        );
        assert!(presences.members("lobby").is_empty());
    }
}
