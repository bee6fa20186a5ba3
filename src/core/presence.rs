//! Who this node serves in a room: the sessions it has seen, their names,
//! their cursors, their connections and held long-poll, how long each has
//! gone without one, and the per-address limits.
//!
//! Presence is this node's view. Whether a name is free, whether a session
//! is still live and its own rate limit are the room's
//! [`crate::core::directory::Directory`]'s to say; presence holds the
//! sessions that directory admitted and this node has used since.
//! [`crate::core::room::Room`] decides when a session begins and ends. No
//! lock here is ever held across an `.await`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::core::error::ApiError;
use crate::core::names::Name;
use crate::core::rate::{event_allowance, TokenBucket};

pub use crate::core::names::SessionId;

/// Someone online, as listed in a welcome.
#[derive(Debug, Clone, serde::Serialize, PartialEq)]
pub struct UserView {
    /// Their name.
    pub name: Name,
    /// Their last cursor position, or null before they first move.
    pub x: Option<f64>,
    /// Their last cursor position, or null before they first move.
    pub y: Option<f64>,
}

/// The limits presence enforces, per session and per client address.
/// Every number is 0 for "no limit".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionLimits {
    /// Events per second per session, bursts of twice that.
    pub rate: u32,
    /// Events per second for all sessions of one address together, bursts
    /// of twice that.
    pub ip_rate: u32,
    /// Live sessions per address.
    pub ip_sessions: u32,
    /// Registrations per address per minute, all of them at once at most.
    pub ip_registrations: u32,
    /// WebRTC signals per second each session may send, with bursts of
    /// twice that. Presence does not count them; the room's signal hub does.
    pub signal_rate: u32,
    /// How long a session lives with no connection and no request
    /// (`--presence-timeout`); when sessions are shared across nodes, the
    /// length of each one's lease. Zero for [`DEFAULT_LEASE`].
    pub timeout: Duration,
}

/// A shared session's lease when [`SessionLimits::timeout`] is not set.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);

impl SessionLimits {
    /// How long a shared session's lease lasts.
    pub fn lease(&self) -> Duration {
        if self.timeout.is_zero() {
            DEFAULT_LEASE
        } else {
            self.timeout
        }
    }
}

impl SessionLimits {
    /// Only the per-session event rate.
    pub fn per_session(rate: u32) -> Self {
        SessionLimits {
            rate,
            ..Default::default()
        }
    }
}

/// The table of sessions of one room. Cheap to clone; every clone is the
/// same table.
#[derive(Clone)]
pub struct Presence {
    shared: Arc<Mutex<Table>>,
    limits: SessionLimits,
    /// What each client address holds and has spent, shared by every room.
    addresses: Addresses,
}

#[derive(Default)]
struct Table {
    sessions: HashMap<SessionId, Session>,
    /// Lower-cased name → session, so names are unique without case.
    names: HashMap<String, SessionId>,
}

/// What each client address holds and has spent, across every room: its
/// live sessions, its registrations and its events. Cheap to clone; every
/// clone is the same table. An entry goes once it holds no session and its
/// registration allowance has refilled. Lock order: a room's table first,
/// then this one.
#[derive(Clone, Default)]
pub struct Addresses {
    shared: Arc<Mutex<HashMap<IpAddr, Address>>>,
}

struct Session {
    name: Name,
    /// The address it came from: the one that registered it, or the first
    /// one that used it on this node; `None` for the server's own bot.
    ip: Option<IpAddr>,
    /// Whether it holds one of its address's places under `--ip-sessions`
    /// here: only on the node that registered it.
    holds_place: bool,
    /// Registered as an observer (`observer: true`): a page's helper, left
    /// out of who is online. Known only on the node that registered it.
    observer: bool,
    /// Last cursor position, unknown until the first mousemove.
    cursor: Option<(f64, f64)>,
    /// Open streams, sockets and held long-polls for this session.
    connections: u32,
    /// When the session was last active; only meaningful with no connection.
    last_seen: Instant,
    /// Set once the session is ending: it accepts nothing more here, and it
    /// keeps the room from being reclaimed until its `leave` is in the log.
    ending: bool,
    /// Wakes the long-poll this session holds, if any, when another replaces it.
    long_poll: Option<Arc<Notify>>,
}

/// One client address: its live sessions and its shared allowances.
struct Address {
    sessions: u32,
    /// Events for all its sessions together.
    events: TokenBucket,
    /// Registrations.
    registrations: TokenBucket,
}

impl Address {
    /// An address seen for the first time: no session, full allowances.
    fn new(limits: SessionLimits, now: Instant) -> Address {
        Address {
            sessions: 0,
            events: TokenBucket::full(event_allowance(limits.ip_rate).1, now),
            registrations: TokenBucket::full(
                registration_allowance(limits.ip_registrations).1,
                now,
            ),
        }
    }
}

/// Registrations a second and burst for `per_minute` registrations a minute.
fn registration_allowance(per_minute: u32) -> (f64, f64) {
    (f64::from(per_minute) / 60.0, f64::from(per_minute))
}

impl Presence {
    /// An empty table with only a per-session rate limit (0 for none).
    pub fn new(rate_limit: u32) -> Self {
        Self::with_limits(SessionLimits::per_session(rate_limit))
    }

    /// An empty table enforcing `limits`, with its own address table.
    pub fn with_limits(limits: SessionLimits) -> Self {
        Self::sharing(limits, Addresses::default())
    }

    /// An empty table enforcing `limits`, counting per-address limits in
    /// `addresses` together with every other room that shares it.
    pub fn sharing(limits: SessionLimits, addresses: Addresses) -> Self {
        Presence {
            shared: Arc::new(Mutex::new(Table::default())),
            limits,
            addresses,
        }
    }

    /// Charges a registration to `ip` and counts a session for it, or
    /// refuses at either of its limits; before the room's directory admits
    /// the session ([`crate::core::directory::Directory::join`]).
    pub fn reserve(&self, ip: Option<IpAddr>) -> Result<(), ApiError> {
        match ip {
            Some(ip) => self
                .addresses
                .reserve_session(ip, self.limits, Instant::now()),
            None => Ok(()),
        }
    }

    /// Gives back what [`Presence::reserve`] took, for a session that was
    /// not admitted after all.
    pub fn release(&self, ip: Option<IpAddr>) {
        if let Some(ip) = ip {
            self.addresses.release_session(ip);
        }
    }

    /// Adds a session the room's directory admitted: registered through this
    /// node, with its place under `ip`'s limit already reserved
    /// (`holds_place`), or seen here for the first time after registering on
    /// another node (or before this node forgot it), used from `ip`. Either
    /// way its events count against `ip`'s rate here. A session this node
    /// still holds under the same name is stale (the directory has just
    /// admitted the name) and is dropped.
    pub fn insert(&self, id: SessionId, name: Name, ip: Option<IpAddr>, holds_place: bool) {
        let mut table = self.shared.lock();
        if table.sessions.contains_key(&id) {
            return;
        }
        if let Some(stale) = table.names.get(&name.key()).copied() {
            if let Some(session) = table.sessions.remove(&stale) {
                if let Some(waiter) = session.long_poll {
                    waiter.notify_one();
                }
                if session.holds_place {
                    self.release(session.ip);
                }
            }
        }
        self.insert_into(&mut table, id, name, ip, holds_place);
    }

    fn insert_into(
        &self,
        table: &mut Table,
        id: SessionId,
        name: Name,
        ip: Option<IpAddr>,
        holds_place: bool,
    ) {
        let now = Instant::now();
        table.names.insert(name.key(), id);
        table.sessions.insert(
            id,
            Session {
                name,
                ip,
                holds_place,
                observer: false,
                cursor: None,
                connections: 0,
                last_seen: now,
                ending: false,
                long_poll: None,
            },
        );
    }

    /// Marks a session as an observer: it no longer counts as online here.
    pub fn mark_observer(&self, id: SessionId) {
        if let Some(session) = self.shared.lock().sessions.get_mut(&id) {
            session.observer = true;
        }
    }

    /// The limits this table enforces.
    pub fn limits(&self) -> SessionLimits {
        self.limits
    }

    /// The session's name, if it is live; counts as activity.
    pub fn touch(&self, id: SessionId) -> Result<Name, ApiError> {
        let mut table = self.shared.lock();
        let session = live(&mut table, id)?;
        session.last_seen = Instant::now();
        Ok(session.name.clone())
    }

    /// Takes one event from the allowance of the session's address and
    /// records its cursor (`at`, for a mousemove), returning its name. The
    /// session's own rate limit is the directory's to count.
    pub fn spend_address(&self, id: SessionId, at: Option<(f64, f64)>) -> Result<Name, ApiError> {
        let now = Instant::now();
        let mut table = self.shared.lock();
        let session = live(&mut table, id)?;
        session.last_seen = now;
        if let Some(ip) = session.ip {
            self.addresses.spend(ip, self.limits, now)?;
        }
        if at.is_some() {
            session.cursor = at;
        }
        Ok(session.name.clone())
    }

    /// Gives back the event [`Presence::spend_address`] took from the
    /// session's address, for an event the directory refused after all: an
    /// event refused by the session's own limit takes nothing from its
    /// address.
    pub fn refund_address(&self, id: SessionId) {
        let ip = self.shared.lock().sessions.get(&id).and_then(|s| s.ip);
        if let Some(ip) = ip {
            self.addresses.refund(ip, self.limits);
        }
    }

    /// Drops a session from this table without it ending: it ended on
    /// another node, or it lives on there while this node has not seen it
    /// for a while.
    pub fn forget(&self, id: SessionId) {
        if self.begin_end(id).is_some() {
            self.finish_end(id);
        }
    }

    /// Sessions with a connection, or seen since `since`: those whose
    /// leases this node renews.
    pub fn active_since(&self, since: Instant) -> Vec<SessionId> {
        self.shared
            .lock()
            .sessions
            .iter()
            .filter(|(_, s)| !s.ending && (s.connections > 0 || s.last_seen >= since))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Records where the session's cursor is.
    pub fn set_cursor(&self, id: SessionId, x: f64, y: f64) {
        if let Some(session) = self.shared.lock().sessions.get_mut(&id) {
            session.cursor = Some((x, y));
        }
    }

    /// Marks a live session as ending and returns its name; `None` if it is
    /// unknown or already ending, so only one caller ever ends a session.
    pub fn begin_end(&self, id: SessionId) -> Option<Name> {
        let mut table = self.shared.lock();
        let session = table.sessions.get_mut(&id)?;
        if session.ending {
            return None;
        }
        session.ending = true;
        if let Some(waiter) = session.long_poll.take() {
            waiter.notify_one();
        }
        Some(session.name.clone())
    }

    /// Makes a session that [`Presence::begin_end`] marked as ending live
    /// again, because its `leave` could not be written (the store is
    /// unreachable): it may leave again, and until then it times out like
    /// any other session.
    pub fn cancel_end(&self, id: SessionId) {
        if let Some(session) = self.shared.lock().sessions.get_mut(&id) {
            session.ending = false;
            session.last_seen = Instant::now();
        }
    }

    /// Removes an ended session and frees its name and its place under its
    /// address's limit.
    pub fn finish_end(&self, id: SessionId) {
        let mut table = self.shared.lock();
        if let Some(session) = table.sessions.remove(&id) {
            table.names.remove(&session.name.key());
            if session.holds_place {
                self.release(session.ip);
            }
        }
    }

    /// Counts a connection for the session until the attachment is dropped.
    /// While any is open the session never times out.
    pub fn attach(&self, id: SessionId) -> Result<Attachment, ApiError> {
        let mut table = self.shared.lock();
        let session = live(&mut table, id)?;
        session.connections += 1;
        session.last_seen = Instant::now();
        Ok(Attachment {
            presence: self.clone(),
            id,
        })
    }

    fn claim_long_poll(&self, id: SessionId) -> Result<Arc<Notify>, ApiError> {
        let mut table = self.shared.lock();
        let session = live(&mut table, id)?;
        let mine = Arc::new(Notify::new());
        if let Some(previous) = session.long_poll.replace(mine.clone()) {
            previous.notify_one();
        }
        Ok(mine)
    }

    /// The live session online under `name` (compared without case).
    pub fn live_session(&self, name: &Name) -> Option<SessionId> {
        let table = self.shared.lock();
        let id = *table.names.get(&name.key())?;
        table.sessions.get(&id).filter(|s| !s.ending).map(|_| id)
    }

    /// Whether nobody is in the room, ending sessions included.
    pub fn is_empty(&self) -> bool {
        self.shared.lock().sessions.is_empty()
    }

    /// Whether `id` is a session of this room, live or ending.
    pub fn has(&self, id: SessionId) -> bool {
        self.shared.lock().sessions.contains_key(&id)
    }

    /// Everyone online, observers left out, sorted by name.
    pub fn users(&self) -> Vec<UserView> {
        let table = self.shared.lock();
        let mut users: Vec<UserView> = table
            .sessions
            .values()
            .filter(|s| !s.ending && !s.observer)
            .map(view)
            .collect();
        users.sort_by_key(|u| u.name.key());
        users
    }

    /// How many of its sessions are live, observers left out.
    pub fn online(&self) -> usize {
        self.shared
            .lock()
            .sessions
            .values()
            .filter(|s| !s.ending && !s.observer)
            .count()
    }

    /// The last cursor position this node saw for the session online under
    /// `name`, if it has moved.
    pub fn cursor_of(&self, name: &Name) -> Option<(f64, f64)> {
        let table = self.shared.lock();
        let id = table.names.get(&name.key())?;
        table.sessions.get(id)?.cursor
    }

    /// Detaches a connection and says whether it was the session's last
    /// one, so that a clean close ends the session only when nothing else
    /// of it is still connected.
    pub fn detach(&self, attachment: Attachment) -> bool {
        let last = self
            .shared
            .lock()
            .sessions
            .get(&attachment.id)
            .is_some_and(|s| s.connections <= 1);
        // Dropping takes the lock again, so only once it is released.
        drop(attachment);
        last
    }

    /// Sessions with no connection that have been quiet longer than `timeout`.
    pub fn idle_sessions(&self, timeout: Duration) -> Vec<SessionId> {
        let now = Instant::now();
        let table = self.shared.lock();
        table
            .sessions
            .iter()
            .filter(|(_, s)| {
                !s.ending && s.connections == 0 && now.duration_since(s.last_seen) >= timeout
            })
            .map(|(id, _)| *id)
            .collect()
    }
}

impl Addresses {
    /// Charges a registration to `ip` and, if it may hold another session,
    /// counts one for it; refuses at either limit.
    fn reserve_session(
        &self,
        ip: IpAddr,
        limits: SessionLimits,
        now: Instant,
    ) -> Result<(), ApiError> {
        let mut table = self.shared.lock();
        let (per_second, burst) = registration_allowance(limits.ip_registrations);
        let address = table.entry(ip).or_insert_with(|| Address::new(limits, now));
        if limits.ip_registrations > 0 {
            // Every attempt counts, so names cannot be probed for free.
            if address.registrations.refill(per_second, burst, now) < 1.0 {
                return Err(ApiError::IpLimit(format!(
                    "this address registered {} times in the last minute, its limit; try again shortly",
                    limits.ip_registrations
                )));
            }
            address.registrations.tokens -= 1.0;
        }
        if limits.ip_sessions > 0 && address.sessions >= limits.ip_sessions {
            return Err(ApiError::IpLimit(format!(
                "this address has {} sessions online, its limit",
                limits.ip_sessions
            )));
        }
        address.sessions += 1;
        Ok(())
    }

    /// Gives back a session place of `ip`.
    fn release_session(&self, ip: IpAddr) {
        if let Some(address) = self.shared.lock().get_mut(&ip) {
            address.sessions = address.sessions.saturating_sub(1);
        }
    }

    /// Takes one event from `ip`'s allowance, or refuses.
    fn spend(&self, ip: IpAddr, limits: SessionLimits, now: Instant) -> Result<(), ApiError> {
        if limits.ip_rate == 0 {
            return Ok(());
        }
        let (per_second, burst) = event_allowance(limits.ip_rate);
        let mut table = self.shared.lock();
        // An address with no session registered here, using one registered
        // on another node, is counted from its first event.
        let address = table.entry(ip).or_insert_with(|| Address::new(limits, now));
        if address.events.refill(per_second, burst, now) < 1.0 {
            return Err(ApiError::RateLimited);
        }
        address.events.tokens -= 1.0;
        Ok(())
    }

    /// Gives `ip` back one event of its allowance, up to its burst.
    fn refund(&self, ip: IpAddr, limits: SessionLimits) {
        if limits.ip_rate == 0 {
            return;
        }
        let (_, burst) = event_allowance(limits.ip_rate);
        if let Some(address) = self.shared.lock().get_mut(&ip) {
            address.events.tokens = (address.events.tokens + 1.0).min(burst);
        }
    }

    /// Forgets addresses that hold no session and whose allowances have
    /// refilled, so the table stays as small as who is online.
    pub fn forget_idle(&self, limits: SessionLimits) {
        let (per_second, burst) = registration_allowance(limits.ip_registrations);
        let (events_per_second, events_burst) = event_allowance(limits.ip_rate);
        let now = Instant::now();
        self.shared.lock().retain(|_, address| {
            address.sessions > 0
                || (limits.ip_registrations > 0
                    && address.registrations.refill(per_second, burst, now) < burst)
                || (limits.ip_rate > 0
                    && address.events.refill(events_per_second, events_burst, now) < events_burst)
        });
    }

    /// How many client addresses are being kept track of.
    pub fn len(&self) -> usize {
        self.shared.lock().len()
    }

    /// Whether no address is being kept track of.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn view(session: &Session) -> UserView {
    UserView {
        name: session.name.clone(),
        x: session.cursor.map(|c| c.0),
        y: session.cursor.map(|c| c.1),
    }
}

fn live(table: &mut Table, id: SessionId) -> Result<&mut Session, ApiError> {
    live_in(&mut table.sessions, id)
}

fn live_in(
    sessions: &mut HashMap<SessionId, Session>,
    id: SessionId,
) -> Result<&mut Session, ApiError> {
    match sessions.get_mut(&id) {
        Some(session) if !session.ending => Ok(session),
        _ => Err(ApiError::UnknownSession),
    }
}

/// One connection attached to a session: while it lives the session never
/// times out. Dropping it detaches the connection and marks the session as
/// seen now, so its idle timeout starts from the moment it disconnected.
pub struct Attachment {
    presence: Presence,
    id: SessionId,
}

impl Attachment {
    /// The session this connection speaks for.
    pub fn session(&self) -> SessionId {
        self.id
    }

    /// Makes this connection the session's only held long-poll. One the
    /// session was already holding is woken to answer at once, empty. The
    /// returned notify fires when this one is replaced in turn, or the
    /// session ends.
    pub fn hold_long_poll(&self) -> Result<Arc<Notify>, ApiError> {
        self.presence.claim_long_poll(self.id)
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        let mut table = self.presence.shared.lock();
        if let Some(session) = table.sessions.get_mut(&self.id) {
            session.connections = session.connections.saturating_sub(1);
            session.last_seen = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &str) -> Name {
        Name::parse(n).unwrap()
    }

    /// A session registered through this node at `ip`, as the room adds one
    /// its directory admitted.
    fn open(presence: &Presence, n: &str, ip: Option<IpAddr>) -> Result<SessionId, ApiError> {
        presence.reserve(ip)?;
        let id = SessionId::new_v4();
        presence.insert(id, name(n), ip, true);
        Ok(id)
    }

    #[test]
    fn a_session_ends_only_once() {
        let presence = Presence::new(0);
        let id = open(&presence, "a", None).unwrap();
        assert!(presence.begin_end(id).is_some());
        assert!(presence.begin_end(id).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn sessions_go_idle_only_without_connections() {
        let presence = Presence::new(0);
        let id = open(&presence, "a", None).unwrap();
        let guard = presence.attach(id).unwrap();
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(presence.idle_sessions(Duration::from_secs(10)).is_empty());
        drop(guard);
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(presence.idle_sessions(Duration::from_secs(10)).is_empty());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(presence.idle_sessions(Duration::from_secs(10)), vec![id]);
    }

    #[tokio::test]
    async fn a_second_long_poll_wakes_the_first() {
        let presence = Presence::new(0);
        let id = open(&presence, "a", None).unwrap();
        let (one, other) = (presence.attach(id).unwrap(), presence.attach(id).unwrap());
        let first = one.hold_long_poll().unwrap();
        let _second = other.hold_long_poll().unwrap();
        tokio::time::timeout(Duration::from_secs(1), first.notified())
            .await
            .expect("the first long-poll was told to answer");
    }

    const HOME: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1)));
    const AWAY: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2)));

    #[tokio::test(start_paused = true)]
    async fn one_address_holds_at_most_its_share_of_live_sessions() {
        let presence = Presence::with_limits(SessionLimits {
            ip_sessions: 2,
            ..Default::default()
        });
        let first = open(&presence, "a", HOME).unwrap();
        open(&presence, "b", HOME).unwrap();

        let refused = open(&presence, "c", HOME).unwrap_err();
        let elsewhere = open(&presence, "d", AWAY);

        assert_eq!(refused.code(), "ip_limit");
        assert!(elsewhere.is_ok());
        presence.begin_end(first);
        presence.finish_end(first);
        assert!(open(&presence, "c", HOME).is_ok(), "a place came free");
    }

    #[tokio::test(start_paused = true)]
    async fn registrations_per_minute_are_counted_per_address_and_refill() {
        let presence = Presence::with_limits(SessionLimits {
            ip_registrations: 3,
            ..Default::default()
        });
        open(&presence, "a", HOME).unwrap();
        // Refused by the directory (a name taken, say), but it counts.
        presence.reserve(HOME).unwrap();
        presence.release(HOME);
        open(&presence, "b", HOME).unwrap();

        assert_eq!(open(&presence, "c", HOME).unwrap_err().code(), "ip_limit");
        assert!(open(&presence, "c", AWAY).is_ok());
        tokio::time::advance(Duration::from_secs(20)).await;
        assert!(open(&presence, "d", HOME).is_ok(), "one refilled in 20 s");
    }

    #[tokio::test(start_paused = true)]
    async fn spreading_events_over_sessions_does_not_multiply_an_address_rate() {
        let presence = Presence::with_limits(SessionLimits {
            rate: 10,
            ip_rate: 10,
            ..Default::default()
        });
        let sessions: Vec<_> = ["a", "b", "c"]
            .iter()
            .map(|n| open(&presence, n, HOME).unwrap())
            .collect();
        let other = open(&presence, "z", AWAY).unwrap();

        let allowed = (0..30)
            .filter(|i| presence.spend_address(sessions[i % 3], None).is_ok())
            .count();

        assert_eq!(allowed, 20, "the address's burst, shared");
        assert!(
            presence.spend_address(other, None).is_ok(),
            "another address is unaffected"
        );
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(presence.spend_address(sessions[0], None).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn addresses_are_forgotten_once_they_hold_nothing() {
        let presence = Presence::with_limits(SessionLimits {
            ip_registrations: 60,
            ..Default::default()
        });
        let id = open(&presence, "a", HOME).unwrap();
        let limits = presence.limits;
        presence.addresses.forget_idle(limits);
        assert_eq!(presence.addresses.len(), 1);
        presence.begin_end(id);
        presence.finish_end(id);
        presence.addresses.forget_idle(limits);
        assert_eq!(presence.addresses.len(), 1, "its registrations still count");
        tokio::time::advance(Duration::from_secs(2)).await;
        presence.addresses.forget_idle(limits);
        assert!(presence.addresses.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_from_another_node_spends_its_address_rate_but_takes_no_place() {
        // Arrange: one place per address, 5 events a second per address.
        let presence = Presence::with_limits(SessionLimits {
            ip_sessions: 1,
            ip_rate: 5,
            ..Default::default()
        });
        let adopted = SessionId::new_v4();

        // Act
        presence.insert(adopted, name("far"), HOME, false);
        let allowed = (0..20)
            .filter(|_| presence.spend_address(adopted, None).is_ok())
            .count();
        let own = open(&presence, "near", HOME);
        presence.forget(adopted);
        let second = open(&presence, "next", HOME);

        // Assert
        assert_eq!(allowed, 10, "the address's burst");
        assert!(own.is_ok(), "the adopted session held no place");
        assert_eq!(second.unwrap_err().code(), "ip_limit", "nor gave one back");
    }

    #[tokio::test(start_paused = true)]
    async fn an_event_refunded_after_its_session_limit_refused_it_is_not_lost_to_its_address() {
        // Arrange: 5 events a second per address, bursts of 10.
        let presence = Presence::with_limits(SessionLimits {
            ip_rate: 5,
            ..Default::default()
        });
        let id = open(&presence, "a", HOME).unwrap();

        // Act: 5 refused by the session's own limit, in the directory.
        for _ in 0..5 {
            presence.spend_address(id, None).unwrap();
            presence.refund_address(id);
        }
        let allowed = (0..20)
            .filter(|_| presence.spend_address(id, None).is_ok())
            .count();

        // Assert
        assert_eq!(allowed, 10, "the whole burst is left");
    }

    #[test]
    fn spending_records_a_mousemove_as_the_cursor_the_node_saw() {
        let presence = Presence::new(0);
        let id = open(&presence, "bob", None).unwrap();

        presence.spend_address(id, Some((0.5, 0.25))).unwrap();
        presence.spend_address(id, None).unwrap();

        assert_eq!(presence.cursor_of(&name("BOB")), Some((0.5, 0.25)));
        assert_eq!(presence.online(), 1);
    }

    #[test]
    fn users_lists_everyone_online_with_their_cursor() {
        let presence = Presence::new(0);
        let b = open(&presence, "bob", None).unwrap();
        open(&presence, "Alice", None).unwrap();
        presence.set_cursor(b, 0.25, 0.75);
        let users = presence.users();
        assert_eq!(users.len(), 2);
        assert_eq!(users[0].name.as_str(), "Alice");
        assert_eq!(users[0].x, None);
        assert_eq!((users[1].x, users[1].y), (Some(0.25), Some(0.75)));
    }
}
