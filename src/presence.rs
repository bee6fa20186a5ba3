//! Who is online: sessions, their names, their cursors, their rate limits and
//! how long each has gone without a connection.
//!
//! Presence only keeps state; [`crate::room::Room`] decides when a session
//! begins and ends and writes the matching events to the log. No lock here is
//! ever held across an `.await`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;
use uuid::Uuid;

use crate::error::ApiError;
use crate::names::Name;
use crate::protocol::UserView;

/// A session id: a random v4 UUID, the only credential a client holds.
pub type SessionId = Uuid;

/// The table of sessions. Cheap to clone; every clone is the same table.
#[derive(Clone)]
pub struct Presence {
    shared: Arc<Mutex<Table>>,
    /// Events per second per session; 0 means no limit.
    rate_limit: u32,
}

#[derive(Default)]
struct Table {
    sessions: HashMap<SessionId, Session>,
    /// Lower-cased name → session, so names are unique without case.
    names: HashMap<String, SessionId>,
}

struct Session {
    name: Name,
    /// Last cursor position, unknown until the first mousemove.
    cursor: Option<(f64, f64)>,
    /// Open streams, sockets and held long-polls for this session.
    connections: u32,
    /// When the session was last active; only meaningful with no connection.
    last_seen: Instant,
    /// Set once the session is ending: it accepts nothing more, but its name
    /// stays taken until its `leave` is in the log, so a new user of the same
    /// name cannot join before the old one has left.
    ending: bool,
    bucket: TokenBucket,
    /// Wakes the long-poll this session holds, if any, when another replaces it.
    long_poll: Option<Arc<Notify>>,
}

/// A token bucket: `rate` tokens a second, holding at most twice that.
struct TokenBucket {
    tokens: f64,
    refilled: Instant,
}

impl TokenBucket {
    fn new(rate: u32, now: Instant) -> Self {
        TokenBucket {
            tokens: f64::from(rate) * 2.0,
            refilled: now,
        }
    }

    fn take(&mut self, rate: u32, now: Instant) -> bool {
        let burst = f64::from(rate) * 2.0;
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * f64::from(rate)).min(burst);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl Presence {
    /// An empty table; `rate_limit` is events per second per session, 0 for none.
    pub fn new(rate_limit: u32) -> Self {
        Presence {
            shared: Arc::new(Mutex::new(Table::default())),
            rate_limit,
        }
    }

    /// Creates a session under `name`, or refuses if someone online has it.
    pub fn open(&self, name: Name) -> Result<SessionId, ApiError> {
        let mut table = self.shared.lock();
        let key = name.key();
        if table.names.contains_key(&key) {
            return Err(ApiError::NameTaken(name.to_string()));
        }
        let id = Uuid::new_v4();
        let now = Instant::now();
        table.names.insert(key, id);
        table.sessions.insert(
            id,
            Session {
                name,
                cursor: None,
                connections: 0,
                last_seen: now,
                ending: false,
                bucket: TokenBucket::new(self.rate_limit, now),
                long_poll: None,
            },
        );
        Ok(id)
    }

    /// The session's name, if it is live; counts as activity.
    pub fn touch(&self, id: SessionId) -> Result<Name, ApiError> {
        let mut table = self.shared.lock();
        let session = live(&mut table, id)?;
        session.last_seen = Instant::now();
        Ok(session.name.clone())
    }

    /// Takes one event from the session's rate limit, returning its name.
    pub fn spend(&self, id: SessionId) -> Result<Name, ApiError> {
        let mut table = self.shared.lock();
        let session = live(&mut table, id)?;
        let now = Instant::now();
        session.last_seen = now;
        if self.rate_limit > 0 && !session.bucket.take(self.rate_limit, now) {
            return Err(ApiError::RateLimited);
        }
        Ok(session.name.clone())
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

    /// Removes an ended session and frees its name.
    pub fn finish_end(&self, id: SessionId) {
        let mut table = self.shared.lock();
        if let Some(session) = table.sessions.remove(&id) {
            table.names.remove(&session.name.key());
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

    /// Everyone online, sorted by name.
    pub fn users(&self) -> Vec<UserView> {
        let table = self.shared.lock();
        let mut users: Vec<UserView> = table
            .sessions
            .values()
            .filter(|s| !s.ending)
            .map(|s| UserView {
                name: s.name.clone(),
                x: s.cursor.map(|c| c.0),
                y: s.cursor.map(|c| c.1),
            })
            .collect();
        users.sort_by_key(|u| u.name.key());
        users
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

fn live(table: &mut Table, id: SessionId) -> Result<&mut Session, ApiError> {
    match table.sessions.get_mut(&id) {
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

    #[test]
    fn names_are_unique_without_case_until_the_session_is_gone() {
        let presence = Presence::new(0);
        let id = presence.open(name("Alice")).unwrap();
        assert_eq!(
            presence.open(name("aLiCe")).unwrap_err().code(),
            "name_taken"
        );
        assert_eq!(presence.begin_end(id), Some(name("Alice")));
        // Still taken while its leave is being written.
        assert_eq!(
            presence.open(name("alice")).unwrap_err().code(),
            "name_taken"
        );
        assert_eq!(presence.touch(id).unwrap_err().code(), "unknown_session");
        presence.finish_end(id);
        assert!(presence.open(name("alice")).is_ok());
    }

    #[test]
    fn a_session_ends_only_once() {
        let presence = Presence::new(0);
        let id = presence.open(name("a")).unwrap();
        assert!(presence.begin_end(id).is_some());
        assert!(presence.begin_end(id).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_limit_allows_bursts_of_twice_the_rate_then_refills() {
        let presence = Presence::new(10);
        let id = presence.open(name("a")).unwrap();
        for _ in 0..20 {
            presence.spend(id).unwrap();
        }
        assert_eq!(presence.spend(id).unwrap_err().code(), "rate_limited");
        tokio::time::advance(Duration::from_millis(500)).await;
        for _ in 0..5 {
            presence.spend(id).unwrap();
        }
        assert!(presence.spend(id).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_rate_limit_is_no_limit() {
        let presence = Presence::new(0);
        let id = presence.open(name("a")).unwrap();
        for _ in 0..10_000 {
            presence.spend(id).unwrap();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn sessions_go_idle_only_without_connections() {
        let presence = Presence::new(0);
        let id = presence.open(name("a")).unwrap();
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
        let id = presence.open(name("a")).unwrap();
        let (one, other) = (presence.attach(id).unwrap(), presence.attach(id).unwrap());
        let first = one.hold_long_poll().unwrap();
        let _second = other.hold_long_poll().unwrap();
        tokio::time::timeout(Duration::from_secs(1), first.notified())
            .await
            .expect("the first long-poll was told to answer");
    }

    #[test]
    fn users_lists_everyone_online_with_their_cursor() {
        let presence = Presence::new(0);
        let b = presence.open(name("bob")).unwrap();
        presence.open(name("Alice")).unwrap();
        presence.set_cursor(b, 0.25, 0.75);
        let users = presence.users();
        assert_eq!(users.len(), 2);
        assert_eq!(users[0].name.as_str(), "Alice");
        assert_eq!(users[0].x, None);
        assert_eq!((users[1].x, users[1].y), (Some(0.25), Some(0.75)));
    }
}
