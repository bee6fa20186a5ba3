//! The one shared room: the message log plus presence, and the rules that
//! tie them together.
//!
//! Every transport hands validated client messages to [`Room`], so a message
//! means the same thing over HTTP and WebSocket. The room decides when a
//! session starts and ends and writes `join` and `leave` to the log. It knows
//! nothing of HTTP or sockets.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use tokio::time::Instant;

use crate::core::directory::{Directory, Lookup, SignalSink};
use crate::core::error::ApiError;
use crate::core::log::{Cursor, Event, EventBody, EventLog, Reader, Seq};
use crate::core::names::{Name, RoomName};
pub use crate::core::presence::Attachment;
use crate::core::presence::{Presence, SessionId, SessionLimits};
use crate::core::protocol::{ClientMessage, UserView, Welcome};
use crate::core::signals::{self, Inbox, Signal, SignalHub};

/// The most users a welcome lists; `online` says how many there are in all,
/// and the rest show up as they move or speak.
pub const WELCOME_USERS: usize = 200;

/// The most bytes of chat history a welcome carries: the newest messages
/// that fit.
pub const WELCOME_HISTORY_BYTES: usize = 64 * 1024;

/// The log and who is in it. Cheap to clone.
#[derive(Clone)]
pub struct Room {
    name: RoomName,
    log: Arc<dyn EventLog>,
    presence: Presence,
    /// Passes WebRTC signals between its sessions, outside the log.
    signals: SignalHub,
    /// Its sessions on every node, when its log is shared; then `presence`
    /// holds only those this node has seen.
    shared: Option<Arc<Shared>>,
    /// Open streams, sockets and requests reading the log now.
    readers: Arc<AtomicUsize>,
}

/// What a room whose sessions live in a [`Directory`] keeps on this node.
struct Shared {
    directory: Arc<dyn Directory>,
    /// How long a session lives with no connection and no request: the
    /// length of its lease.
    lease: Duration,
    /// Sessions online on every node, as last counted.
    online: AtomicUsize,
    /// When this node last renewed the leases of the sessions it holds.
    renewed: Mutex<Instant>,
    /// Delivers the signals other nodes relay to this room's users here;
    /// the directory holds it weakly, so it goes with the room.
    _signal_sink: Arc<SignalSink>,
}

/// An event on its way into the log: see [`Room::send`].
pub type Sending = BoxFuture<'static, Result<Seq, ApiError>>;

/// A [`Sending`] that has already failed.
fn refused(err: ApiError) -> Sending {
    Box::pin(std::future::ready(Err(err)))
}

/// How many of the newest events a welcome looks through for the cursors of
/// users that registered on other nodes.
const CURSOR_LOOKBACK: u64 = 2_000;

impl std::fmt::Debug for Room {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Room")
            .field("name", &self.name)
            .field("head", &self.log.head())
            .finish_non_exhaustive()
    }
}

impl Room {
    /// The lobby over `log`, with a per-session rate limit in events per
    /// second.
    pub fn new(log: Arc<dyn EventLog>, rate_limit: u32) -> Self {
        Self::with_limits(log, SessionLimits::per_session(rate_limit))
    }

    /// The lobby over `log` enforcing `limits` per session and per address.
    pub fn with_limits(log: Arc<dyn EventLog>, limits: SessionLimits) -> Self {
        Self::open(
            RoomName::lobby(),
            log,
            Presence::with_limits(limits),
            limits.signal_rate,
        )
    }

    /// The room `name` over `log`, with `presence` for its sessions, each
    /// of which may send `signal_rate` signals a second (0 for no limit).
    pub fn open(
        name: RoomName,
        log: Arc<dyn EventLog>,
        presence: Presence,
        signal_rate: u32,
    ) -> Self {
        Room {
            name,
            log,
            presence,
            signals: SignalHub::new(signal_rate),
            shared: None,
            readers: Arc::default(),
        }
    }

    /// The same room with its sessions in `directory`, shared with every
    /// node that serves it, each a lease of `lease` renewed while it is in
    /// use.
    pub fn sharing(mut self, directory: Arc<dyn Directory>, lease: Duration) -> Self {
        let (presence, signals) = (self.presence.clone(), self.signals.clone());
        let sink: Arc<SignalSink> = Arc::new(move |to: &Name, frame| {
            let delivered = presence
                .live_session(to)
                .ok_or_else(|| ApiError::UnknownTarget(to.to_string()))
                .and_then(|session| signals.deliver(session, to, frame));
            if let Err(err) = delivered {
                // Most often the target listens on another node.
                tracing::trace!(%err, "a relayed signal is not for this node");
            }
        });
        directory.deliver_signals(&sink);
        self.shared = Some(Arc::new(Shared {
            directory,
            lease,
            online: AtomicUsize::new(0),
            renewed: Mutex::new(Instant::now()),
            _signal_sink: sink,
        }));
        self
    }

    /// Whether its sessions are shared with other nodes.
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// Makes a session that registered on another node known here, so this
    /// node can serve its requests and connections: `unknown_session` if it
    /// is not live, `wrong_room` if it is another room's.
    pub async fn adopt(&self, session: SessionId, ip: Option<IpAddr>) -> Result<(), ApiError> {
        if self.presence.has(session) {
            return Ok(());
        }
        let Some(shared) = &self.shared else {
            return Err(ApiError::UnknownSession);
        };
        match shared.directory.lookup(session).await? {
            Lookup::Live(name) => {
                self.presence.insert(session, name, ip, false);
                Ok(())
            }
            Lookup::Elsewhere(room) => Err(ApiError::WrongRoom(room.to_string())),
            Lookup::Unknown => Err(ApiError::UnknownSession),
        }
    }

    /// The room's name.
    pub fn name(&self) -> &RoomName {
        &self.name
    }

    /// The message log.
    pub fn log(&self) -> &Arc<dyn EventLog> {
        &self.log
    }

    /// A reader of the log from `from`, counted among the room's readers
    /// while it lives.
    pub fn reader(&self, from: Cursor) -> Reader {
        Reader::new(self.log.clone(), from).counted_in(&self.readers)
    }

    /// How many streams, sockets and requests read the log now.
    pub fn readers(&self) -> usize {
        self.readers.load(Ordering::Relaxed)
    }

    /// Whether `session` is one of this room's, live or ending.
    pub fn has_session(&self, session: SessionId) -> bool {
        self.presence.has(session)
    }

    /// Whether the room has no session at all, ending ones included, on
    /// this node nor (as last counted) on any other.
    pub fn is_empty(&self) -> bool {
        self.presence.is_empty()
            && self
                .shared
                .as_ref()
                .is_none_or(|s| s.online.load(Ordering::Relaxed) == 0)
    }

    /// Attaches a connection (a stream, socket or held long-poll) to a live
    /// session until the returned guard is dropped. While any connection is
    /// attached the session never times out.
    pub fn attach(&self, session: SessionId) -> Result<Attachment, ApiError> {
        self.presence.attach(session)
    }

    /// Closes a connection cleanly: the session ends at once if this was its
    /// last connection, and lives on if another is still attached.
    pub async fn close(&self, attachment: Attachment) {
        let session = attachment.session();
        if self.presence.detach(attachment) {
            self.end(session).await;
        }
    }

    /// Starts taking WebRTC signals for a live session, on one socket, until
    /// the inbox is dropped.
    pub fn listen_signals(&self, session: SessionId) -> Result<Inbox, ApiError> {
        self.presence.touch(session)?;
        Ok(self.signals.listen(session))
    }

    /// Passes `signal` from `from` to the live session of this room that
    /// it names. Nothing goes into the log. When the room is shared and the
    /// target takes no signals on this node, the signal goes through the
    /// directory to whichever node it takes them on.
    pub async fn signal(&self, from: SessionId, signal: &Signal) -> Result<(), ApiError> {
        let from_name = self.presence.touch(from)?;
        if from_name.key() == signal.to.key() {
            return Err(ApiError::BadRequest(
                "a signal goes to another session, not to its sender".into(),
            ));
        }
        let here = self
            .presence
            .live_session(&signal.to)
            .filter(|to| self.signals.is_listening(*to));
        match (&self.shared, here) {
            (Some(shared), None) => {
                self.signals.charge(from)?;
                shared
                    .directory
                    .relay_signal(&signal.to, signals::frame(&from_name, signal))
                    .await
            }
            _ => {
                let to = self
                    .presence
                    .live_session(&signal.to)
                    .ok_or_else(|| ApiError::UnknownTarget(signal.to.to_string()))?;
                self.signals.relay(from, &from_name, to, signal)
            }
        }
    }

    /// Counts a request as the session's activity; refuses an unknown or
    /// ended session.
    pub fn touch(&self, session: SessionId) -> Result<(), ApiError> {
        self.presence.touch(session).map(drop)
    }

    /// How many users are online: on every node, as last counted, when
    /// the room is shared.
    pub fn online(&self) -> usize {
        let here = self.presence.users().len();
        match &self.shared {
            Some(shared) => here.max(shared.online.load(Ordering::Relaxed)),
            None => here,
        }
    }

    /// Brings `name` online for the server itself (the demo bot, tests),
    /// outside every per-address limit. See [`Room::register_from`].
    pub async fn register(&self, name: Name) -> Result<Welcome, ApiError> {
        self.register_from(name, None).await
    }

    /// Brings `name` online for a client at `ip`: a new session, a `join` in
    /// the log, and what a late joiner needs to catch up, bounded in size.
    pub async fn register_from(&self, name: Name, ip: Option<IpAddr>) -> Result<Welcome, ApiError> {
        let (session, cursor, users, online) = match &self.shared {
            None => self.join_here(name.clone(), ip).await?,
            Some(shared) => self.join_shared(shared, name.clone(), ip).await?,
        };
        // Messages newer than the join reach the client as events; leave them
        // out here so nothing arrives twice.
        let mut budget = WELCOME_HISTORY_BYTES;
        let mut history: Vec<_> = self
            .log
            .recent_messages()
            .into_iter()
            .filter(|m| m.seq <= cursor)
            .rev()
            .take_while(|m| {
                let fits = m.json().len() <= budget;
                budget = budget.saturating_sub(m.json().len());
                fits
            })
            .collect();
        history.reverse();
        tracing::debug!(%name, %session, seq = cursor, "joined");
        Ok(Welcome {
            session,
            name,
            epoch: self.log.epoch(),
            cursor,
            history,
            users,
            online,
        })
    }

    /// A session of this node only: its `join`, and who is online here.
    async fn join_here(
        &self,
        name: Name,
        ip: Option<IpAddr>,
    ) -> Result<(SessionId, Seq, Vec<UserView>, usize), ApiError> {
        let session = self.presence.open(name.clone(), ip)?;
        let join = match self.log.append(name, EventBody::Join).await {
            Ok(event) => event,
            Err(err) => {
                tracing::error!(%err, "could not append a join");
                self.presence.finish_end(session);
                return Err(err.into());
            }
        };
        let (users, online) = self.presence.some_users(session, WELCOME_USERS);
        Ok((session, join.seq, users, online))
    }

    /// A session admitted by the directory, with its name unique on every
    /// node; the users it lists carry the cursors this node's log shows.
    async fn join_shared(
        &self,
        shared: &Shared,
        name: Name,
        ip: Option<IpAddr>,
    ) -> Result<(SessionId, Seq, Vec<UserView>, usize), ApiError> {
        self.presence.reserve(ip)?;
        let session = uuid::Uuid::new_v4();
        let joined = match shared.directory.join(session, &name, shared.lease).await {
            Ok(joined) => joined,
            Err(err) => {
                self.presence.release(ip);
                return Err(err);
            }
        };
        self.presence.insert(session, name, ip, true);
        shared.online.store(joined.online, Ordering::Relaxed);
        let users = self.with_cursors(joined.names, joined.event.seq);
        Ok((session, joined.event.seq, users, joined.online))
    }

    /// `names` as users, each with the last cursor position the newest
    /// events up to `seq` show for it.
    fn with_cursors(&self, names: Vec<Name>, seq: Seq) -> Vec<UserView> {
        let recent = self
            .log
            .read_since(seq.saturating_sub(CURSOR_LOOKBACK), None)
            .events;
        let cursor = |name: &Name| {
            recent
                .iter()
                .rev()
                .filter(|e| e.seq <= seq && e.name.key() == name.key())
                .find_map(|e: &Arc<Event>| match e.body {
                    EventBody::Mousemove { x, y } => Some((x, y)),
                    _ => None,
                })
        };
        names
            .into_iter()
            .map(|name| {
                let at = cursor(&name);
                UserView {
                    x: at.map(|c| c.0),
                    y: at.map(|c| c.1),
                    name,
                }
            })
            .collect()
    }

    /// Acts on a message from a registered session and returns the seq of the
    /// event it produced.
    pub async fn submit(
        &self,
        session: SessionId,
        message: ClientMessage,
    ) -> Result<Seq, ApiError> {
        match message {
            ClientMessage::Leave => self.end(session).await.ok_or(ApiError::UnknownSession),
            message => self.send(session, message).await,
        }
    }

    /// Starts appending a chat message or a cursor move from `session`, and
    /// returns what is left of it: the seq of the event, once it is stored.
    ///
    /// The event's place in line is taken now, before the future is first
    /// polled: events sent one after another are stored in that order, so a
    /// socket may send its next message before the last one is stored.
    pub fn send(&self, session: SessionId, message: ClientMessage) -> Sending {
        let body = match message {
            ClientMessage::Message { text, id } => EventBody::Message {
                text: text.into_string(),
                id,
            },
            ClientMessage::Mousemove { x, y } => EventBody::Mousemove { x, y },
            ClientMessage::Register(_) => {
                return refused(ApiError::BadRequest(
                    "this session is already registered; register once per session".into(),
                ))
            }
            ClientMessage::Leave => {
                return refused(ApiError::BadRequest(
                    "a leave ends the session; it is not sent into the log".into(),
                ))
            }
            ClientMessage::Signal(_) => {
                return refused(ApiError::BadRequest(
                    "signals go over a WebSocket opened with signals=true, not into the log".into(),
                ))
            }
        };
        let Some(shared) = &self.shared else {
            let name = match self.presence.spend(session) {
                Ok(name) => name,
                Err(err) => return refused(err),
            };
            if let EventBody::Mousemove { x, y } = body {
                self.presence.set_cursor(session, x, y);
            }
            let appended = self.log.append(name, body);
            return Box::pin(async move {
                let event = appended.await.map_err(|err| {
                    tracing::error!(%err, "could not append an event");
                    ApiError::from(err)
                })?;
                Ok(event.seq)
            });
        };
        // The session's own rate limit is counted in the directory, across
        // nodes; its address's, here.
        let name = match self.presence.spend_address(session) {
            Ok(name) => name,
            Err(err) => return refused(err),
        };
        if let EventBody::Mousemove { x, y } = body {
            self.presence.set_cursor(session, x, y);
        }
        let rate = self.presence.limits().rate;
        let appended = shared
            .directory
            .append(session, name, body, shared.lease, rate);
        let presence = self.presence.clone();
        Box::pin(async move {
            match appended.await {
                Ok(event) => Ok(event.seq),
                Err(ApiError::UnknownSession) => {
                    // Ended on another node, or its lease ran out.
                    presence.forget(session);
                    Err(ApiError::UnknownSession)
                }
                Err(err) => {
                    if err.code() == "store_unavailable" {
                        tracing::error!("could not append an event: the store is unavailable");
                    }
                    Err(err)
                }
            }
        })
    }

    /// Ends a session: its `leave` goes into the log and its name is freed.
    /// Returns the seq of the `leave`, or `None` if the session was not live
    /// (or, shared, had already ended on another node).
    pub async fn end(&self, session: SessionId) -> Option<Seq> {
        let name = self.presence.begin_end(session)?;
        let result = match &self.shared {
            None => self
                .log
                .append(name.clone(), EventBody::Leave)
                .await
                .map(Some)
                .map_err(ApiError::from),
            Some(shared) => shared.directory.leave(session).await,
        };
        self.presence.finish_end(session);
        match result {
            Ok(Some(event)) => {
                tracing::debug!(%name, %session, seq = event.seq, "left");
                Some(event.seq)
            }
            Ok(None) => None,
            Err(err) => {
                // Shared, the lease runs out and the leave is written then.
                tracing::error!(%err, %name, "could not append a leave");
                None
            }
        }
    }

    /// Ends every session that has had no connection and no request for
    /// `timeout`. Shared, a session idle here may be busy on another node:
    /// this node only forgets it, renews the leases of the sessions in use
    /// here, and ends those whose lease ran out, on whichever node they were.
    pub async fn end_idle(&self, timeout: Duration) {
        let Some(shared) = &self.shared else {
            for session in self.presence.idle_sessions(timeout) {
                self.end(session).await;
            }
            return;
        };
        for session in self.presence.idle_sessions(timeout) {
            self.presence.forget(session);
        }
        let since = std::mem::replace(&mut *shared.renewed.lock(), Instant::now());
        let active = self.presence.active_since(since);
        if !active.is_empty() {
            match shared.directory.renew(active, shared.lease).await {
                Ok(gone) => {
                    for session in gone {
                        self.presence.forget(session);
                    }
                }
                Err(err) => tracing::warn!(%err, room = %self.name, "could not renew leases"),
            }
        }
        match shared.directory.reap().await {
            Ok(reaped) => shared.online.store(reaped.online, Ordering::Relaxed),
            Err(err) => tracing::warn!(%err, room = %self.name, "could not end expired sessions"),
        }
    }
}

/// How often a reaper looks for sessions idle longer than `timeout`: a few
/// times per timeout, so a session ends close to its deadline, but never
/// more often than 20 times a second.
pub fn reaper_period(timeout: Duration) -> Duration {
    (timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::log::MemoryLog;
    use crate::core::names::MessageText;

    fn room() -> Room {
        Room::new(Arc::new(MemoryLog::new(1000)), 0)
    }

    fn kinds(room: &Room) -> Vec<(&'static str, String)> {
        room.log()
            .read_since(0, None)
            .events
            .iter()
            .map(|e| (e.body.kind(), e.name.to_string()))
            .collect()
    }

    #[tokio::test]
    async fn register_writes_a_join_and_returns_history_and_users() {
        let room = room();
        let alice = room.register(Name::parse("alice").unwrap()).await.unwrap();
        let text = MessageText::parse("hello").unwrap();
        room.submit(alice.session, ClientMessage::Message { text, id: None })
            .await
            .unwrap();
        let bob = room.register(Name::parse("bob").unwrap()).await.unwrap();
        assert_eq!(bob.cursor, 3);
        assert_eq!(bob.history.len(), 1);
        assert_eq!(
            bob.users
                .iter()
                .map(|u| u.name.as_str())
                .collect::<Vec<_>>(),
            ["alice", "bob"]
        );
        assert_eq!(kinds(&room)[2], ("join", "bob".into()));
    }

    #[tokio::test]
    async fn leave_ends_the_session_once_and_frees_the_name() {
        let room = room();
        let alice = room.register(Name::parse("alice").unwrap()).await.unwrap();
        let seq = room
            .submit(alice.session, ClientMessage::Leave)
            .await
            .unwrap();
        assert_eq!(seq, 2);
        assert_eq!(
            room.submit(alice.session, ClientMessage::Leave)
                .await
                .unwrap_err()
                .code(),
            "unknown_session"
        );
        assert!(room.register(Name::parse("ALICE").unwrap()).await.is_ok());
        assert_eq!(
            kinds(&room),
            [
                ("join", "alice".into()),
                ("leave", "alice".into()),
                ("join", "ALICE".into())
            ]
        );
    }
}
