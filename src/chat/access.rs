//! Who may use a room: the one check every transport goes through.
//!
//! A public room is anyone's; a private one is its members' only (the owner is one). Every
//! way into a room (WebSocket join and post, SSE and long polling, polling, publishing over
//! HTTP, the `/chat` page's first render) asks [`decide`], through [`Access::admit`] where a
//! connection is involved. What `admit` hands back, a [`RoomPass`], is what the hub's reads,
//! subscriptions and posts take: a transport cannot reach a room's messages without one.
//!
//! Rooms' access is cached per instance (a lookup per post would cost a query per message).
//! Every change (a room made, a member added or removed) is published on the bus's [`ROOMS`]
//! topic, so every instance forgets that room at once; a bus that was cut off forgets them
//! all, and entries older than [`CACHE_FOR`] are read again anyway.
//!
//! Tests: the unit tests below; `tests/it/rooms.rs` on every transport.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use super::store::RoomAccessRow;
use crate::{
    protocol::chat::{not_a_member, room_name_problem},
    server::{
        clock,
        fanout::bus::{Bus, Envelope, Received, ROOMS},
        shutdown::Shutdown,
        storage::Store,
        ApiError,
    },
};

/// How long a cached room's access is trusted without a word on the bus.
pub const CACHE_FOR: Duration = Duration::from_secs(30);
/// Rooms cached at most (past it the cache starts again).
const CACHE_MAX: usize = 10_000;
/// The bus kind that says "forget this room's access" (the data is the room's name).
const ROOM_CHANGED: &str = "room-changed";

/// Leave to use one room as one user: only [`Access::admit`] makes one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomPass {
    room: String,
    user: String,
}

impl RoomPass {
    pub fn room(&self) -> &str {
        &self.room
    }
    pub fn user(&self) -> &str {
        &self.user
    }
    /// A pass for tests of the parts below the check.
    #[cfg(test)]
    pub fn for_test(room: &str, user: &str) -> Self {
        Self {
            room: room.into(),
            user: user.into(),
        }
    }
}

/// Why a room was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refused {
    /// A bad room name: the sentence says what.
    Invalid(String),
    /// A private room, and the user is not a member.
    NotAMember { room: String, owner: Option<String> },
    /// The database did not answer.
    Unavailable,
}

impl Refused {
    /// The sentence a WebSocket client gets.
    pub fn sentence(&self) -> String {
        match self {
            Self::Invalid(s) => s.clone(),
            Self::NotAMember { room, .. } => not_a_member(room),
            Self::Unavailable => "The room could not be looked up; try again.".into(),
        }
    }
}

impl From<Refused> for ApiError {
    fn from(r: Refused) -> Self {
        match r {
            Refused::Invalid(s) => ApiError::bad_request("invalid_room", s),
            Refused::NotAMember { room, owner } => ApiError::Refused {
                status: axum::http::StatusCode::FORBIDDEN,
                code: "not_a_member",
                retry_after: None,
                message: match owner {
                    Some(owner) => format!(
                        "{} Only its members may read or write it; its owner, {owner}, can add you.",
                        not_a_member(&room)
                    ),
                    None => format!("{} Only its members may read or write it.", not_a_member(&room)),
                },
            },
            Refused::Unavailable => ApiError::Unavailable(r.sentence()),
        }
    }
}

/// The rule itself: may `user` use a room whose access is `access`?
pub fn decide(room: &str, access: &RoomAccessRow, user: &str) -> Result<(), Refused> {
    if !access.private || access.members.iter().any(|m| m == user) {
        Ok(())
    } else {
        Err(Refused::NotAMember {
            room: room.to_string(),
            owner: access.owner.clone(),
        })
    }
}

struct Cached {
    access: Arc<RoomAccessRow>,
    at: Instant,
}

/// The cached gate in front of every room. Cheap to share (`Arc`).
pub struct Access {
    store: Store,
    bus: Arc<dyn Bus>,
    cache: Mutex<HashMap<String, Cached>>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access").finish_non_exhaustive()
    }
}

impl Access {
    /// The gate, forgetting rooms as the bus says they changed, until `shutdown`.
    pub fn start(store: Store, bus: Arc<dyn Bus>, shutdown: Shutdown) -> Arc<Self> {
        let access = Arc::new(Self {
            store,
            bus: bus.clone(),
            cache: Mutex::new(HashMap::new()),
        });
        let mut heard = bus.subscribe(ROOMS);
        let weak = Arc::downgrade(&access);
        shutdown.clone().spawn(async move {
            loop {
                let r = tokio::select! {
                    r = heard.recv() => r,
                    _ = shutdown.cancelled() => return,
                };
                let Some(access) = weak.upgrade() else { return };
                match r {
                    Received::Message(m) if m.kind == ROOM_CHANGED => access.forget(m.text()),
                    Received::Message(_) => {}
                    // Something may have been missed: forget them all.
                    Received::Lagged(_) => access.lock().clear(),
                    Received::Closed => return,
                }
            }
        });
        access
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Cached>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn forget(&self, room: &str) {
        self.lock().remove(room);
    }

    /// Says on every instance that `room`'s access changed (call after storing the change).
    pub fn changed(&self, room: &str) {
        self.forget(room);
        self.bus
            .publish(Envelope::new(ROOMS, 0, ROOM_CHANGED, room.to_string()));
    }

    /// `room`'s access: cached, read, or (a name never used) a public room made now, as
    /// joining an unknown room does on every transport.
    pub async fn lookup(&self, room: &str) -> Result<Arc<RoomAccessRow>, Refused> {
        if let Some(c) = self.lock().get(room) {
            if c.at.elapsed() < CACHE_FOR {
                return Ok(c.access.clone());
            }
        }
        let unavailable = |e: sqlx::Error| {
            tracing::warn!(error = %e, room, "looking up a room failed");
            Refused::Unavailable
        };
        let row = match self.store.room_access(room).await.map_err(unavailable)? {
            Some(row) => row,
            None => {
                // Made public now; if another request made it first, read what it made.
                self.store
                    .create_room(room, false, None, clock::now_ms())
                    .await
                    .map_err(unavailable)?;
                self.store
                    .room_access(room)
                    .await
                    .map_err(unavailable)?
                    .unwrap_or(RoomAccessRow {
                        private: false,
                        owner: None,
                        members: Vec::new(),
                    })
            }
        };
        let access = Arc::new(row);
        let mut cache = self.lock();
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(
            room.to_string(),
            Cached {
                access: access.clone(),
                at: Instant::now(),
            },
        );
        Ok(access)
    }

    /// Checks again that a pass still holds (a member removed since is refused): a cached
    /// lookup, without making a new pass, for the post path.
    pub async fn recheck(&self, pass: &RoomPass) -> Result<(), Refused> {
        let access = self.lookup(&pass.room).await?;
        decide(&pass.room, &access, &pass.user)
    }

    /// Checks `user` may use `room`: the pass every room read, subscription and post takes.
    pub async fn admit(&self, room: &str, user: &str) -> Result<RoomPass, Refused> {
        if let Some(problem) = room_name_problem(room) {
            return Err(Refused::Invalid(problem));
        }
        let access = self.lookup(room).await?;
        decide(room, &access, user)?;
        Ok(RoomPass {
            room: room.to_string(),
            user: user.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::fanout::bus::LocalBus;

    #[test]
    fn private_rooms_are_their_members_only() {
        let open = RoomAccessRow {
            private: false,
            owner: None,
            members: vec![],
        };
        assert_eq!(decide("a", &open, "anyone"), Ok(()));
        let club = RoomAccessRow {
            private: true,
            owner: Some("alice".into()),
            members: vec!["alice".into(), "bob".into()],
        };
        assert_eq!(decide("club", &club, "bob"), Ok(()));
        let refused = decide("club", &club, "carol").unwrap_err();
        assert_eq!(refused.sentence(), "You are not a member of #club.");
        let api: ApiError = refused.into();
        assert_eq!(api.code(), "not_a_member");
        assert!(api.to_string().contains("alice"), "{api}");
    }

    #[tokio::test]
    async fn a_change_on_the_bus_is_seen_at_once() {
        let (_dir, store) = crate::server::storage::temp_store().await;
        let bus: Arc<dyn Bus> = Arc::new(LocalBus::new());
        let access = Access::start(store.clone(), bus.clone(), Shutdown::new());
        let other = Access::start(store.clone(), bus, Shutdown::new());
        assert!(matches!(
            access.admit("Bad", "x").await,
            Err(Refused::Invalid(_))
        ));
        store
            .create_room("club", true, Some("alice"), 1)
            .await
            .unwrap();
        assert!(other.admit("club", "bob").await.is_err());
        store.add_member("club", "bob", 2).await.unwrap();
        access.changed("club");
        // The other instance's gate hears it on the bus.
        let deadline = Instant::now() + Duration::from_secs(2);
        while other.admit("club", "bob").await.is_err() {
            assert!(
                Instant::now() < deadline,
                "the change reaches the other gate"
            );
            tokio::task::yield_now().await;
        }
        let pass = access.admit("fresh", "carol").await.unwrap();
        assert_eq!((pass.room(), pass.user()), ("fresh", "carol"));
        assert!(
            store.room_access("fresh").await.unwrap().is_some(),
            "joining an unknown room makes it, public"
        );
    }
}
