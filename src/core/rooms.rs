//! The rooms: many independent chats and canvases on one server, each its
//! own log, presence, seq space and epoch.
//!
//! [`Rooms`] sits above the log and presence. Every transport asks it for a
//! room once per request or connection ([`Rooms::enter`]); from then on the
//! room is all it talks to. A room is opened on first use, within
//! `--max-rooms` in all and `--ip-rooms` per client address, and reclaimed
//! once it has had no session and no reader for `--room-idle-timeout`. The
//! lobby is always there. Each room's log and sessions come from the
//! [`LogStore`] it was given, and it never asks which one that is. This
//! module knows nothing of HTTP.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::core::error::ApiError;
use crate::core::log::{Epoch, Seq};
use crate::core::log_store::LogStore;
use crate::core::names::RoomName;
use crate::core::presence::{Addresses, Presence, SessionId, SessionLimits};
use crate::core::room::{reaper_period, Room};

/// The bounds on rooms.
#[derive(Debug, Clone, Copy)]
pub struct RoomLimits {
    /// Rooms open at once, the lobby included.
    pub max_rooms: usize,
    /// Rooms one client address may have opened that are still open; 0 for
    /// no limit.
    pub ip_rooms: u32,
    /// How long a room with no session and no reader stays open.
    pub idle: Duration,
}

/// A room as listed by `GET /rooms` and `/stats`.
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct RoomView {
    /// Its name.
    pub name: RoomName,
    /// Users online in it.
    pub online: usize,
    /// The seq of its newest event.
    pub head: Seq,
    /// Its log's epoch.
    pub epoch: Epoch,
    /// Open streams, sockets and requests reading it now.
    pub readers: usize,
}

/// Every open room. Cheap to clone; every clone is the same registry.
#[derive(Clone)]
pub struct Rooms {
    shared: Arc<Shared>,
}

struct Shared {
    store: Box<dyn LogStore>,
    limits: RoomLimits,
    session_limits: SessionLimits,
    /// Per-address accounting, shared by every room's presence.
    addresses: Addresses,
    rooms: RwLock<HashMap<RoomName, Entry>>,
}

struct Entry {
    room: Room,
    /// The address that opened it, for `--ip-rooms`; `None` for the lobby
    /// and for rooms restored at start.
    opened_by: Option<IpAddr>,
    /// Since when the reaper has seen it unused.
    idle_since: Option<Instant>,
}

impl Rooms {
    /// Opens the lobby and every room `store` kept.
    pub fn new(
        store: Box<dyn LogStore>,
        limits: RoomLimits,
        session_limits: SessionLimits,
    ) -> io::Result<Rooms> {
        let rooms = Rooms {
            shared: Arc::new(Shared {
                store,
                limits,
                session_limits,
                addresses: Addresses::default(),
                rooms: RwLock::new(HashMap::new()),
            }),
        };
        let mut names = vec![RoomName::lobby()];
        names.extend(rooms.shared.store.kept()?);
        for name in names {
            let room = rooms.build(&name)?;
            rooms.shared.rooms.write().entry(name).or_insert(Entry {
                room,
                opened_by: None,
                idle_since: None,
            });
        }
        Ok(rooms)
    }

    fn build(&self, name: &RoomName) -> io::Result<Room> {
        let opened = self.shared.store.open(name)?;
        let presence = Presence::sharing(self.shared.session_limits, self.shared.addresses.clone());
        Ok(Room::open(name.clone(), opened, presence))
    }

    /// The lobby, which is always open.
    pub fn lobby(&self) -> Room {
        self.get(&RoomName::lobby())
            .expect("the lobby is opened at start and never reclaimed")
    }

    /// The room `name`, if it is open.
    pub fn get(&self, name: &RoomName) -> Option<Room> {
        self.shared.rooms.read().get(name).map(|e| e.room.clone())
    }

    /// The room `name`, opened for a client at `ip` if it is not open yet.
    pub fn open(&self, name: &RoomName, ip: Option<IpAddr>) -> Result<Room, ApiError> {
        if let Some(room) = self.get(name) {
            return Ok(room);
        }
        self.check_caps(ip)?;
        // Opening may touch the disk: not under the lock. Two clients opening
        // the same room at once both build it; the first one in wins.
        let room = self.build(name).map_err(|err| {
            tracing::error!(%err, room = %name, "could not open a room's log");
            // A shared store that cannot be reached says so; see `LogStore`.
            if err.kind() == io::ErrorKind::NotConnected {
                ApiError::StoreUnavailable
            } else {
                ApiError::Internal
            }
        })?;
        let mut rooms = self.shared.rooms.write();
        if let Some(entry) = rooms.get(name) {
            return Ok(entry.room.clone());
        }
        if rooms.len() >= self.shared.limits.max_rooms {
            return Err(too_many_rooms(self.shared.limits.max_rooms));
        }
        tracing::debug!(room = %name, "room opened");
        rooms.insert(
            name.clone(),
            Entry {
                room: room.clone(),
                opened_by: ip,
                idle_since: None,
            },
        );
        Ok(room)
    }

    fn check_caps(&self, ip: Option<IpAddr>) -> Result<(), ApiError> {
        let limits = self.shared.limits;
        let rooms = self.shared.rooms.read();
        if rooms.len() >= limits.max_rooms {
            return Err(too_many_rooms(limits.max_rooms));
        }
        if let (Some(ip), true) = (ip, limits.ip_rooms > 0) {
            let opened = rooms.values().filter(|e| e.opened_by == Some(ip)).count();
            if opened >= limits.ip_rooms as usize {
                return Err(ApiError::IpLimit(format!(
                    "this address has opened {} rooms that are still open, its limit",
                    limits.ip_rooms
                )));
            }
        }
        Ok(())
    }

    /// The room a request or connection uses: `name`, opened if need be.
    /// A `session` must belong to it: one of another room is refused with
    /// `wrong_room`, and an unknown one with `unknown_session`. A session
    /// this node has not seen in any room is the room's directory's to
    /// find (registered on another node, say), and from then on known here
    /// too.
    pub async fn enter(
        &self,
        name: &RoomName,
        session: Option<SessionId>,
        ip: Option<IpAddr>,
    ) -> Result<Room, ApiError> {
        let Some(session) = session else {
            return self.open(name, ip);
        };
        if let Some(room) = self.get(name).filter(|r| r.has_session(session)) {
            return Ok(room);
        }
        if let Some(other) = self.find_session(session) {
            return Err(ApiError::WrongRoom(other.to_string()));
        }
        let room = self.open(name, ip)?;
        room.adopt(session, ip).await?;
        Ok(room)
    }

    /// The room a session belongs to, if any.
    pub fn find_session(&self, session: SessionId) -> Option<RoomName> {
        self.shared
            .rooms
            .read()
            .values()
            .find(|e| e.room.has_session(session))
            .map(|e| e.room.name().clone())
    }

    /// Every open room, busiest first.
    pub fn list(&self) -> Vec<RoomView> {
        let mut views: Vec<RoomView> = self
            .shared
            .rooms
            .read()
            .values()
            .map(|e| view(&e.room))
            .collect();
        views.sort_by(|a, b| b.online.cmp(&a.online).then_with(|| a.name.cmp(&b.name)));
        views
    }

    /// How many rooms are open.
    pub fn len(&self) -> usize {
        self.shared.rooms.read().len()
    }

    /// Whether no room is open (never: the lobby always is).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every open room.
    pub fn all(&self) -> Vec<Room> {
        self.shared
            .rooms
            .read()
            .values()
            .map(|e| e.room.clone())
            .collect()
    }

    /// Closes rooms that have had no session and no reader for the idle
    /// timeout, so their memory comes back. Returns how many it closed.
    pub fn reclaim_idle(&self) -> usize {
        let idle = self.shared.limits.idle;
        let now = Instant::now();
        let mut rooms = self.shared.rooms.write();
        let before = rooms.len();
        rooms.retain(|name, entry| {
            let unused = name.as_str() != RoomName::LOBBY
                && entry.room.is_empty()
                // Every reader and every request holds a reference to the
                // log; only the registry's own is left when none does.
                && Arc::strong_count(entry.room.log()) == 1;
            if !unused {
                entry.idle_since = None;
                return true;
            }
            let since = *entry.idle_since.get_or_insert(now);
            let keep = now.duration_since(since) < idle;
            if !keep {
                tracing::debug!(room = %name, "room reclaimed");
            }
            keep
        });
        before - rooms.len()
    }

    /// Ends idle sessions in every room, closes idle rooms and forgets idle
    /// addresses, until `stop` is cancelled.
    pub fn spawn_reaper(
        &self,
        presence_timeout: Duration,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let rooms = self.clone();
        let period = reaper_period(presence_timeout).min(reaper_period(self.shared.limits.idle));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => {
                        for room in rooms.all() {
                            room.end_idle(presence_timeout).await;
                        }
                        rooms.reclaim_idle();
                        rooms.shared.addresses.forget_idle(rooms.shared.session_limits);
                    }
                }
            }
        })
    }
}

fn view(room: &Room) -> RoomView {
    RoomView {
        name: room.name().clone(),
        online: room.online(),
        head: room.log().head(),
        epoch: room.log().epoch(),
        readers: room.readers(),
    }
}

fn too_many_rooms(max: usize) -> ApiError {
    ApiError::TooManyRooms(format!(
        "the server has {max} rooms open, its limit; join an open one or try again later"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::log::EventBody;
    use crate::core::names::Name;
    use crate::store::journal::JournalStore;
    use crate::store::memory::MemoryStore;

    const HOME: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1)));

    fn rooms(max_rooms: usize, ip_rooms: u32) -> Rooms {
        Rooms::new(
            Box::new(MemoryStore {
                history: 100,
                budget: crate::core::log::LogBudget::unlimited(),
            }),
            RoomLimits {
                max_rooms,
                ip_rooms,
                idle: Duration::from_secs(60),
            },
            SessionLimits::default(),
        )
        .unwrap()
    }

    fn room(name: &str) -> RoomName {
        RoomName::parse(name).unwrap()
    }

    #[tokio::test]
    async fn each_room_has_its_own_seqs_epoch_and_names() {
        let rooms = rooms(10, 0);
        let a = rooms.open(&room("a"), HOME).unwrap();
        let b = rooms.open(&room("b"), HOME).unwrap();

        let alice_a = a.register(Name::parse("alice").unwrap()).await.unwrap();
        let alice_b = b.register(Name::parse("alice").unwrap()).await;
        a.log()
            .append(Name::parse("alice").unwrap(), EventBody::Leave)
            .await
            .unwrap();

        assert!(alice_b.is_ok(), "the same name in another room");
        assert_eq!((a.log().head(), b.log().head()), (2, 1));
        assert_ne!(a.log().epoch(), b.log().epoch());
        assert_eq!(alice_a.cursor, 1);
    }

    #[tokio::test]
    async fn a_session_enters_only_its_own_room() {
        let rooms = rooms(10, 0);
        let a = rooms.open(&room("a"), HOME).unwrap();
        rooms.open(&room("b"), HOME).unwrap();
        let session = a
            .register(Name::parse("ann").unwrap())
            .await
            .unwrap()
            .session;

        assert!(rooms.enter(&room("a"), Some(session), HOME).await.is_ok());
        let wrong = rooms
            .enter(&room("b"), Some(session), HOME)
            .await
            .unwrap_err();
        let unknown = rooms
            .enter(&room("a"), Some(uuid::Uuid::new_v4()), HOME)
            .await
            .unwrap_err();

        assert_eq!(wrong.code(), "wrong_room");
        assert_eq!(unknown.code(), "unknown_session");
    }

    #[tokio::test]
    async fn rooms_are_capped_in_all_and_per_address() {
        let rooms = rooms(3, 1);
        rooms.open(&room("mine"), HOME).unwrap();

        let second = rooms.open(&room("again"), HOME).unwrap_err();
        rooms.open(&room("theirs"), None).unwrap();
        let full = rooms.open(&room("more"), None).unwrap_err();

        assert_eq!(second.code(), "ip_limit");
        assert_eq!(full.code(), "too_many_rooms");
        assert!(
            rooms.open(&room("mine"), HOME).is_ok(),
            "an open room is not counted again"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_unused_room_is_reclaimed_after_the_idle_timeout_and_the_lobby_never_is() {
        let rooms = rooms(10, 0);
        let busy = rooms.open(&room("busy"), HOME).unwrap();
        let session = busy
            .register(Name::parse("bo").unwrap())
            .await
            .unwrap()
            .session;
        let reader = rooms.open(&room("read"), HOME).unwrap().log().clone();
        drop(rooms.open(&room("empty"), HOME).unwrap());

        rooms.reclaim_idle();
        tokio::time::advance(Duration::from_secs(61)).await;
        let reclaimed = rooms.reclaim_idle();

        assert_eq!(reclaimed, 1);
        assert!(rooms.get(&room("empty")).is_none());
        assert!(rooms.get(&room("read")).is_some(), "a reader keeps it");
        assert!(rooms.get(&room("busy")).is_some(), "a session keeps it");
        assert!(rooms.get(&RoomName::lobby()).is_some());
        busy.end(session).await;
        drop((busy, reader));
        rooms.reclaim_idle();
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(rooms.reclaim_idle(), 2);
        assert_eq!(rooms.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_reaper_ends_idle_sessions_with_a_leave() {
        let rooms = rooms(10, 0);
        let room = rooms.lobby();
        let stop = CancellationToken::new();
        let alice = room.register(Name::parse("alice").unwrap()).await.unwrap();
        let bob = room.register(Name::parse("bob").unwrap()).await.unwrap();
        let _bob_is_connected = room.attach(bob.session).unwrap();

        let reaper = rooms.spawn_reaper(Duration::from_secs(10), stop.clone());
        tokio::time::sleep(Duration::from_secs(9)).await;
        assert_eq!(room.log().head(), 2);
        tokio::time::sleep(Duration::from_secs(2)).await;

        let last = room.log().read_since(2, None).events;
        assert_eq!(
            last.iter()
                .map(|e| (e.body.kind(), e.name.as_str()))
                .collect::<Vec<_>>(),
            [("leave", "alice")]
        );
        assert_eq!(
            room.touch(alice.session).unwrap_err().code(),
            "unknown_session"
        );
        assert!(room.touch(bob.session).is_ok());
        stop.cancel();
        reaper.await.unwrap();
    }

    #[tokio::test]
    async fn addresses_count_across_rooms() {
        let rooms = Rooms::new(
            Box::new(MemoryStore {
                history: 100,
                budget: crate::core::log::LogBudget::unlimited(),
            }),
            RoomLimits {
                max_rooms: 10,
                ip_rooms: 0,
                idle: Duration::from_secs(60),
            },
            SessionLimits {
                ip_sessions: 1,
                ..Default::default()
            },
        )
        .unwrap();
        let a = rooms.open(&room("a"), HOME).unwrap();
        let b = rooms.open(&room("b"), HOME).unwrap();
        a.register_from(Name::parse("x").unwrap(), HOME)
            .await
            .unwrap();

        let refused = b.register_from(Name::parse("y").unwrap(), HOME).await;

        assert_eq!(refused.unwrap_err().code(), "ip_limit");
    }

    #[tokio::test]
    async fn a_journal_store_restores_every_room_with_its_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let store = || JournalStore {
            dir: dir.path().to_owned(),
            history: 100,
            budget: crate::core::log::LogBudget::unlimited(),
            recover: false,
        };
        let limits = RoomLimits {
            max_rooms: 10,
            ip_rooms: 0,
            idle: Duration::from_secs(60),
        };
        let epochs: Vec<Epoch> = {
            let rooms = Rooms::new(Box::new(store()), limits, SessionLimits::default()).unwrap();
            let mut epochs = Vec::new();
            for name in ["lobby", "a", "_b"] {
                let room = rooms.open(&room(name), None).unwrap();
                room.register(Name::parse("z").unwrap()).await.unwrap();
                epochs.push(room.log().epoch().clone());
            }
            epochs
        };

        let rooms = Rooms::new(Box::new(store()), limits, SessionLimits::default()).unwrap();

        assert_eq!(rooms.len(), 3);
        for (name, epoch) in ["lobby", "a", "_b"].iter().zip(epochs) {
            let room = rooms.get(&room(name)).unwrap();
            assert_eq!(room.log().epoch(), epoch, "{name}");
            assert_eq!(room.log().head(), 1, "{name}");
        }
    }
}
