//! The rooms: many independent chats and canvases on one server, each its
//! own log, presence, seq space and epoch.
//!
//! [`Rooms`] sits above the log and presence. Every transport asks it for a
//! room once per request or connection ([`Rooms::enter`]); from then on the
//! room is all it talks to. A room is opened on first use, within
//! `--max-rooms` in all and `--ip-rooms` per client address, and reclaimed
//! once it has had no session and no reader for `--room-idle-timeout`. The
//! lobby is always there; a room a store kept from an earlier run opens
//! only when used again, and its kept log is deleted once unused for
//! `--room-retention`. Each room's log and sessions come from the
//! [`LogStore`] it was given, and it never asks which one that is. Every
//! store call may block (disk, network), so it runs on tokio's blocking
//! pool, never on the caller's thread. This module knows nothing of HTTP.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::core::error::ApiError;
use crate::core::log::{Epoch, Seq};
use crate::core::log_store::LogStore;
use crate::core::names::RoomName;
use crate::core::presence::{Addresses, Presence, SessionId, SessionLimits};
use crate::core::room::{reaper_period, Room};

/// The longest between two sweeps for kept logs past their retention.
const SWEEP_PERIOD: Duration = Duration::from_secs(3600);

/// The bounds on rooms.
#[derive(Debug, Clone, Copy)]
pub struct RoomLimits {
    /// Rooms open at once, the lobby included, and those being opened.
    pub max_rooms: usize,
    /// Rooms one client address may have opened (or be opening) that are
    /// still open; 0 for no limit.
    pub ip_rooms: u32,
    /// How long a room with no session and no reader stays open.
    pub idle: Duration,
    /// How long a closed room's kept log (its journal) stays unused before
    /// it is deleted; `None` keeps it forever. The lobby's never goes.
    pub retention: Option<Duration>,
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
    /// Shared with the blocking tasks that open and delete logs.
    store: Arc<dyn LogStore>,
    limits: RoomLimits,
    session_limits: SessionLimits,
    /// Per-address accounting, shared by every room's presence.
    addresses: Addresses,
    /// Every room that is open, being opened or having its kept log
    /// deleted. Never held across an `.await` or a store call.
    rooms: RwLock<HashMap<RoomName, Slot>>,
}

/// What the registry holds under a room's name.
enum Slot {
    /// The room is open.
    Open(Entry),
    /// Its log is being opened off the workers. It holds its place under
    /// `--max-rooms` and `--ip-rooms` from the moment it was claimed, so
    /// two opens cannot both pass the caps.
    Opening {
        opened_by: Option<IpAddr>,
        /// Closed when the opening settles; whoever wants the room waits
        /// on it, then looks again.
        done: watch::Receiver<()>,
    },
    /// It was reclaimed and its log is being closed off the workers (a
    /// journal's writer finishing). It keeps its place, and cannot open
    /// again until then, so one journal never has two writers.
    Closing {
        opened_by: Option<IpAddr>,
        done: watch::Receiver<()>,
    },
    /// Its kept log is being deleted (retention); it cannot open until
    /// that is done. Holds no place under the caps.
    Deleting { done: watch::Receiver<()> },
}

struct Entry {
    room: Room,
    /// The address that opened it, for `--ip-rooms`; `None` for the lobby
    /// and the demo room.
    opened_by: Option<IpAddr>,
    /// Since when the reaper has seen it unused.
    idle_since: Option<Instant>,
}

impl Slot {
    /// Who holds a place under the caps: `Some(opened_by)` for an open or
    /// opening room.
    fn place(&self) -> Option<Option<IpAddr>> {
        match self {
            Slot::Open(entry) => Some(entry.opened_by),
            Slot::Opening { opened_by, .. } | Slot::Closing { opened_by, .. } => Some(*opened_by),
            Slot::Deleting { .. } => None,
        }
    }

    fn open(&self) -> Option<&Room> {
        match self {
            Slot::Open(entry) => Some(&entry.room),
            _ => None,
        }
    }
}

impl Rooms {
    /// Opens the lobby. Every other room, kept by `store` or not, opens on
    /// first use ([`Rooms::open`]).
    pub fn new(
        store: Box<dyn LogStore>,
        limits: RoomLimits,
        session_limits: SessionLimits,
    ) -> io::Result<Rooms> {
        let rooms = Rooms {
            shared: Arc::new(Shared {
                store: Arc::from(store),
                limits,
                session_limits,
                addresses: Addresses::default(),
                rooms: RwLock::new(HashMap::new()),
            }),
        };
        let lobby = RoomName::lobby();
        let room = rooms.build(&lobby)?;
        rooms.shared.rooms.write().insert(
            lobby,
            Slot::Open(Entry {
                room,
                opened_by: None,
                idle_since: None,
            }),
        );
        Ok(rooms)
    }

    /// Opens `name`'s log from the store: blocking, so never on a worker.
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
        self.shared
            .rooms
            .read()
            .get(name)
            .and_then(Slot::open)
            .cloned()
    }

    /// The room `name`, opened for a client at `ip` if it is not open yet.
    ///
    /// The caps are checked and a place claimed in one step under the lock;
    /// the log is then opened on the blocking pool, never on the caller's
    /// thread, and the place is given back if that fails. Concurrent opens
    /// of one room wait for the first and share its room.
    pub async fn open(&self, name: &RoomName, ip: Option<IpAddr>) -> Result<Room, ApiError> {
        loop {
            let claimed = {
                let mut rooms = self.shared.rooms.write();
                match rooms.get(name) {
                    Some(Slot::Open(entry)) => return Ok(entry.room.clone()),
                    Some(
                        Slot::Opening { done, .. }
                        | Slot::Closing { done, .. }
                        | Slot::Deleting { done },
                    ) => Waiting::On(done.clone()),
                    None => {
                        self.check_caps(&rooms, ip)?;
                        let (settled, done) = watch::channel(());
                        rooms.insert(
                            name.clone(),
                            Slot::Opening {
                                opened_by: ip,
                                done,
                            },
                        );
                        Waiting::Claimed(settled)
                    }
                }
            };
            match claimed {
                Waiting::Claimed(settled) => return self.open_claimed(name, ip, settled).await,
                // Closed (an error) when the opening or deletion settles.
                Waiting::On(mut done) => {
                    let _ = done.changed().await;
                }
            }
        }
    }

    /// Opens the room whose place the caller claimed, on the blocking pool.
    /// The task settles the claim even if the caller goes away meanwhile.
    async fn open_claimed(
        &self,
        name: &RoomName,
        ip: Option<IpAddr>,
        settled: watch::Sender<()>,
    ) -> Result<Room, ApiError> {
        let claim = Claim {
            rooms: self.clone(),
            name: name.clone(),
            opened_by: ip,
            room: None,
            _settled: settled,
        };
        let built = tokio::task::spawn_blocking(move || {
            let mut claim = claim;
            let room = claim.rooms.build(&claim.name)?;
            claim.room = Some(room.clone());
            Ok::<_, io::Error>(room)
        })
        .await
        .unwrap_or_else(|panicked| Err(io::Error::other(panicked.to_string())));
        built.map_err(|err| {
            tracing::error!(%err, room = %name, "could not open a room's log");
            // A shared store that cannot be reached says so; see `LogStore`.
            if err.kind() == io::ErrorKind::NotConnected {
                ApiError::StoreUnavailable
            } else {
                ApiError::Internal
            }
        })
    }

    fn check_caps(
        &self,
        rooms: &HashMap<RoomName, Slot>,
        ip: Option<IpAddr>,
    ) -> Result<(), ApiError> {
        let limits = self.shared.limits;
        let places = || rooms.values().filter_map(Slot::place);
        if places().count() >= limits.max_rooms {
            return Err(too_many_rooms(limits.max_rooms));
        }
        if let (Some(ip), true) = (ip, limits.ip_rooms > 0) {
            let opened = places().filter(|by| *by == Some(ip)).count();
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
            return self.open(name, ip).await;
        };
        if let Some(room) = self.get(name).filter(|r| r.has_session(session)) {
            return Ok(room);
        }
        if let Some(other) = self.find_session(session) {
            return Err(ApiError::WrongRoom(other.to_string()));
        }
        let room = self.open(name, ip).await?;
        room.adopt(session, ip).await?;
        Ok(room)
    }

    /// The room a session belongs to, if any.
    pub fn find_session(&self, session: SessionId) -> Option<RoomName> {
        self.shared
            .rooms
            .read()
            .values()
            .filter_map(Slot::open)
            .find(|room| room.has_session(session))
            .map(|room| room.name().clone())
    }

    /// Every open room, busiest first.
    pub fn list(&self) -> Vec<RoomView> {
        let mut views: Vec<RoomView> = self.all().iter().map(view).collect();
        views.sort_by(|a, b| b.online.cmp(&a.online).then_with(|| a.name.cmp(&b.name)));
        views
    }

    /// How many rooms are open.
    pub fn len(&self) -> usize {
        self.shared
            .rooms
            .read()
            .values()
            .filter_map(Slot::open)
            .count()
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
            .filter_map(Slot::open)
            .cloned()
            .collect()
    }

    /// Closes rooms that have had no session and no reader for the idle
    /// timeout, so their memory comes back, and with it their log's
    /// threads and files (a journal's writer), which are released on the
    /// blocking pool before this returns. Returns how many it closed.
    pub async fn reclaim_idle(&self) -> usize {
        let idle = self.shared.limits.idle;
        let now = Instant::now();
        let (closed, settled) = {
            let mut rooms = self.shared.rooms.write();
            let mut expired = Vec::new();
            for (name, slot) in rooms.iter_mut() {
                let Slot::Open(entry) = slot else { continue };
                let unused = name.as_str() != RoomName::LOBBY
                    && entry.room.is_empty()
                    // Every reader and every request holds a reference to
                    // the log; only the registry's own is left when none
                    // does.
                    && Arc::strong_count(entry.room.log()) == 1;
                if !unused {
                    entry.idle_since = None;
                    continue;
                }
                let since = *entry.idle_since.get_or_insert(now);
                if now.duration_since(since) >= idle {
                    expired.push(name.clone());
                }
            }
            let (settled, done) = watch::channel(());
            let closed: Vec<(RoomName, Room)> = expired
                .into_iter()
                .filter_map(|name| {
                    tracing::debug!(room = %name, "room reclaimed");
                    let Some(Slot::Open(entry)) = rooms.remove(&name) else {
                        return None;
                    };
                    // Keeps its place under the caps until its log is closed.
                    let closing = Slot::Closing {
                        opened_by: entry.opened_by,
                        done: done.clone(),
                    };
                    rooms.insert(name.clone(), closing);
                    Some((name, entry.room))
                })
                .collect();
            (closed, settled)
        };
        let count = closed.len();
        if count > 0 {
            // Closing a log may wait for its writer to finish: off the
            // workers, and outside the lock; then the names are free.
            let registry = self.clone();
            let _ = tokio::task::spawn_blocking(move || {
                let names: Vec<RoomName> = closed.iter().map(|(name, _)| name.clone()).collect();
                // Each room's log closes here: a journal joins its writer.
                drop(closed);
                let mut rooms = registry.shared.rooms.write();
                for name in names {
                    if matches!(rooms.get(&name), Some(Slot::Closing { .. })) {
                        rooms.remove(&name);
                    }
                }
                drop(settled);
            })
            .await;
        }
        count
    }

    /// Deletes the kept logs of rooms that are not open and have not been
    /// used for the retention (`--room-retention`), never the lobby's.
    /// Each room is held shut while its log is deleted. Runs on the
    /// blocking pool; returns how many it deleted.
    pub async fn delete_expired(&self) -> usize {
        let Some(retention) = self.shared.limits.retention else {
            return 0;
        };
        let rooms = self.clone();
        tokio::task::spawn_blocking(move || rooms.delete_expired_now(retention))
            .await
            .unwrap_or(0)
    }

    fn delete_expired_now(&self, retention: Duration) -> usize {
        let kept = match self.shared.store.kept() {
            Ok(kept) => kept,
            Err(err) => {
                tracing::warn!(%err, "could not list the kept rooms to apply their retention");
                return 0;
            }
        };
        let mut deleted = 0;
        for name in kept {
            if name.as_str() == RoomName::LOBBY {
                continue;
            }
            // Hold the room shut: an open room's log is never deleted, and
            // none opens while this one is.
            let _settled = {
                let mut rooms = self.shared.rooms.write();
                if rooms.contains_key(&name) {
                    continue;
                }
                let (settled, done) = watch::channel(());
                rooms.insert(name.clone(), Slot::Deleting { done });
                settled
            };
            match self.shared.store.delete_if_unused(&name, retention) {
                Ok(true) => {
                    tracing::info!(room = %name, "deleted a room's log, unused past its retention");
                    deleted += 1;
                }
                Ok(false) => {}
                Err(err) => tracing::warn!(%err, room = %name, "could not delete a room's log"),
            }
            self.shared.rooms.write().remove(&name);
        }
        deleted
    }

    /// Ends idle sessions in every room, closes idle rooms and forgets idle
    /// addresses, and now and then deletes kept logs past their retention
    /// (first at start), until `stop` is cancelled.
    pub fn spawn_reaper(
        &self,
        presence_timeout: Duration,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let rooms = self.clone();
        let period = reaper_period(presence_timeout).min(reaper_period(self.shared.limits.idle));
        let sweep_period = self
            .shared
            .limits
            .retention
            .map_or(SWEEP_PERIOD, |retention| retention.min(SWEEP_PERIOD));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut swept: Option<Instant> = None;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => {
                        for room in rooms.all() {
                            room.end_idle(presence_timeout).await;
                        }
                        rooms.reclaim_idle().await;
                        rooms.shared.addresses.forget_idle(rooms.shared.session_limits);
                        if swept.is_none_or(|at| at.elapsed() >= sweep_period) {
                            swept = Some(Instant::now());
                            rooms.delete_expired().await;
                        }
                    }
                }
            }
        })
    }
}

/// What an open found under the room's name, once the lock is released.
enum Waiting {
    /// Another open or a deletion: wait for it to settle, then look again.
    On(watch::Receiver<()>),
    /// A place this open claimed; it settles it.
    Claimed(watch::Sender<()>),
}

/// A place claimed under the caps for a room being opened. Dropped, it
/// settles: the room goes in if it was built, the place is given back if
/// not, and whoever waits for the room looks again.
struct Claim {
    rooms: Rooms,
    name: RoomName,
    opened_by: Option<IpAddr>,
    room: Option<Room>,
    /// Dropped last, after the registry is updated: wakes the waiters.
    _settled: watch::Sender<()>,
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut rooms = self.rooms.shared.rooms.write();
        match self.room.take() {
            Some(room) => {
                tracing::debug!(room = %self.name, "room opened");
                rooms.insert(
                    self.name.clone(),
                    Slot::Open(Entry {
                        room,
                        opened_by: self.opened_by,
                        idle_since: None,
                    }),
                );
            }
            None => {
                rooms.remove(&self.name);
            }
        }
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
                retention: None,
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
        let a = rooms.open(&room("a"), HOME).await.unwrap();
        let b = rooms.open(&room("b"), HOME).await.unwrap();

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
        let a = rooms.open(&room("a"), HOME).await.unwrap();
        rooms.open(&room("b"), HOME).await.unwrap();
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
        rooms.open(&room("mine"), HOME).await.unwrap();

        let second = rooms.open(&room("again"), HOME).await.unwrap_err();
        rooms.open(&room("theirs"), None).await.unwrap();
        let full = rooms.open(&room("more"), None).await.unwrap_err();

        assert_eq!(second.code(), "ip_limit");
        assert_eq!(full.code(), "too_many_rooms");
        assert!(
            rooms.open(&room("mine"), HOME).await.is_ok(),
            "an open room is not counted again"
        );
    }

    #[tokio::test]
    async fn concurrent_opens_of_one_room_share_one_room() {
        // Arrange
        let rooms = rooms(10, 1);
        let same = room("same");

        // Act
        let opens = (0..50).map(|_| rooms.open(&same, HOME));
        let opened = futures_util::future::join_all(opens).await;

        // Assert
        let first = opened[0].as_ref().unwrap().log().clone();
        for room in opened {
            assert!(Arc::ptr_eq(room.unwrap().log(), &first));
        }
        assert_eq!(rooms.len(), 2, "it and the lobby");
    }

    #[tokio::test(start_paused = true)]
    async fn an_unused_room_is_reclaimed_after_the_idle_timeout_and_the_lobby_never_is() {
        let rooms = rooms(10, 0);
        let busy = rooms.open(&room("busy"), HOME).await.unwrap();
        let session = busy
            .register(Name::parse("bo").unwrap())
            .await
            .unwrap()
            .session;
        let reader = rooms.open(&room("read"), HOME).await.unwrap().log().clone();
        drop(rooms.open(&room("empty"), HOME).await.unwrap());

        rooms.reclaim_idle().await;
        tokio::time::advance(Duration::from_secs(61)).await;
        let reclaimed = rooms.reclaim_idle().await;

        assert_eq!(reclaimed, 1);
        assert!(rooms.get(&room("empty")).is_none());
        assert!(rooms.get(&room("read")).is_some(), "a reader keeps it");
        assert!(rooms.get(&room("busy")).is_some(), "a session keeps it");
        assert!(rooms.get(&RoomName::lobby()).is_some());
        busy.end(session).await;
        drop((busy, reader));
        rooms.reclaim_idle().await;
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(rooms.reclaim_idle().await, 2);
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
                retention: None,
            },
            SessionLimits {
                ip_sessions: 1,
                ..Default::default()
            },
        )
        .unwrap();
        let a = rooms.open(&room("a"), HOME).await.unwrap();
        let b = rooms.open(&room("b"), HOME).await.unwrap();
        a.register_from(Name::parse("x").unwrap().into(), HOME)
            .await
            .unwrap();

        let refused = b
            .register_from(Name::parse("y").unwrap().into(), HOME)
            .await;

        assert_eq!(refused.unwrap_err().code(), "ip_limit");
    }

    #[tokio::test]
    async fn a_journal_store_reopens_each_kept_room_on_first_use_with_its_epoch() {
        // Arrange: three rooms written by an earlier run.
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
            retention: None,
        };
        let epochs: Vec<Epoch> = {
            let rooms = Rooms::new(Box::new(store()), limits, SessionLimits::default()).unwrap();
            let mut epochs = Vec::new();
            for name in ["lobby", "a", "_b"] {
                let room = rooms.open(&room(name), None).await.unwrap();
                room.register(Name::parse("z").unwrap()).await.unwrap();
                epochs.push(room.log().epoch().clone());
            }
            epochs
        };

        // Act
        let rooms = Rooms::new(Box::new(store()), limits, SessionLimits::default()).unwrap();
        let open_at_start = rooms.len();

        // Assert: only the lobby opens at start; the others on first use.
        assert_eq!(open_at_start, 1);
        for (name, epoch) in ["lobby", "a", "_b"].iter().zip(epochs) {
            let room = rooms.open(&room(name), None).await.unwrap();
            assert_eq!(room.log().epoch(), epoch, "{name}");
            assert_eq!(room.log().head(), 1, "{name}");
        }
        assert_eq!(rooms.len(), 3);
    }

    /// Sets every file of the journal in `dir`, and `dir`, as last changed
    /// `ago`.
    fn backdate(dir: &std::path::Path, ago: Duration) {
        let then = std::time::SystemTime::now() - ago;
        for entry in std::fs::read_dir(dir).unwrap() {
            let file = std::fs::File::open(entry.unwrap().path()).unwrap();
            file.set_modified(then).unwrap();
        }
        std::fs::File::open(dir)
            .unwrap()
            .set_modified(then)
            .unwrap();
    }

    #[tokio::test]
    async fn retention_deletes_a_closed_room_s_old_journal_but_never_an_open_one() {
        // Arrange: two rooms unused for eight days, one closed, one open.
        let dir = tempfile::tempdir().unwrap();
        let week = Duration::from_secs(7 * 24 * 3600);
        let rooms = Rooms::new(
            Box::new(JournalStore {
                dir: dir.path().to_owned(),
                history: 100,
                budget: crate::core::log::LogBudget::unlimited(),
                recover: false,
            }),
            RoomLimits {
                max_rooms: 10,
                ip_rooms: 0,
                idle: Duration::ZERO,
                retention: Some(week),
            },
            SessionLimits::default(),
        )
        .unwrap();
        drop(rooms.open(&room("old"), None).await.unwrap());
        let open = rooms.open(&room("open"), None).await.unwrap();
        let reader = open.log().clone();
        assert_eq!(rooms.reclaim_idle().await, 1, "the old room closed");
        let journals = dir.path().join("rooms");
        for name in ["old", "open"] {
            backdate(&journals.join(name), week + Duration::from_secs(86_400));
        }
        backdate(dir.path(), week * 2);

        // Act
        let deleted = rooms.delete_expired().await;

        // Assert
        assert_eq!(deleted, 1);
        assert!(!journals.join("old").exists(), "the closed room's went");
        assert!(
            journals.join("open").join("epoch").exists(),
            "the open room's stays"
        );
        assert!(dir.path().join("epoch").exists(), "the lobby's stays");
        let kept = reader
            .append(Name::parse("z").unwrap(), EventBody::Leave)
            .await
            .unwrap();
        assert_eq!(kept.seq, 1, "the open room still writes its journal");
        let again = rooms.open(&room("old"), None).await.unwrap();
        assert_eq!(again.log().head(), 0, "the old room opens afresh");
    }
}
