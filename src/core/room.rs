//! A room: its message log, who is in it, and the rules that tie them
//! together.
//!
//! Every transport hands validated client messages to [`Room`], so a message
//! means the same thing over HTTP and WebSocket. The room decides when a
//! session starts and ends; its [`Directory`] admits names, counts each
//! session's own rate limit and writes `join` and `leave` to the log, and
//! its [`Presence`] holds what this node sees of each session. The room
//! never asks which directory it has: one node's, or one shared through a
//! store with other nodes. It knows nothing of HTTP, sockets or stores.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use tokio::time::Instant;

pub use crate::core::directory::WELCOME_USERS;
use crate::core::directory::{Directory, Lookup, SignalSink};
use crate::core::error::ApiError;
use crate::core::log::{Cursor, EventBody, EventLog, Reader, Seq};
use crate::core::log_store::OpenedLog;
use crate::core::names::{Name, RoomName};
pub use crate::core::presence::Attachment;
use crate::core::presence::{Presence, SessionId, SessionLimits};
use crate::core::protocol::{ClientMessage, Registration, UserView, Welcome};
use crate::core::signals::{self, Inbox, Signal, SignalHub};

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
    /// Who is in the room on every node, behind one pointer so a clone
    /// stays cheap.
    sessions: Arc<Sessions>,
    /// Open streams, sockets and requests reading the log now.
    readers: Arc<AtomicUsize>,
}

/// What the room keeps of its [`Directory`].
struct Sessions {
    directory: Arc<dyn Directory>,
    /// How long a session lives with no connection and no request: the
    /// length of its lease, where the directory keeps leases.
    lease: Duration,
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
/// the users it lists; one not found there is given the last one this node
/// saw.
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
    /// The lobby over `log`, alone on this node, with a per-session rate
    /// limit in events per second.
    pub fn new(log: Arc<dyn EventLog>, rate_limit: u32) -> Self {
        Self::with_limits(log, SessionLimits::per_session(rate_limit))
    }

    /// The lobby over `log`, alone on this node, enforcing `limits` per
    /// session and per address.
    pub fn with_limits(log: Arc<dyn EventLog>, limits: SessionLimits) -> Self {
        Self::open(
            RoomName::lobby(),
            OpenedLog::here(log),
            Presence::with_limits(limits),
        )
    }

    /// The room `name` over the log and directory a store `opened`, with
    /// `presence` for the sessions this node serves. Its limits say how many
    /// signals a second each session may send
    /// ([`SessionLimits::signal_rate`]) and how long a session's lease is
    /// ([`SessionLimits::lease`]).
    pub fn open(name: RoomName, opened: OpenedLog, presence: Presence) -> Self {
        let limits = presence.limits();
        let signals = SignalHub::new(limits.signal_rate);
        let sink: Arc<SignalSink> = {
            let (presence, signals) = (presence.clone(), signals.clone());
            Arc::new(move |to: &Name, frame| {
                let delivered = presence
                    .live_session(to)
                    .ok_or_else(|| ApiError::UnknownTarget(to.to_string()))
                    .and_then(|session| signals.deliver(session, to, frame));
                if let Err(err) = delivered {
                    // Most often the target listens on another node.
                    tracing::trace!(%err, "a relayed signal is not for this node");
                }
            })
        };
        opened.directory.deliver_signals(&sink);
        Room {
            name,
            log: opened.log,
            presence,
            signals,
            sessions: Arc::new(Sessions {
                directory: opened.directory,
                lease: limits.lease(),
                renewed: Mutex::new(Instant::now()),
                _signal_sink: sink,
            }),
            readers: Arc::default(),
        }
    }

    /// Makes a session this node has not seen (registered on another node,
    /// say) known here, so this node can serve its requests and
    /// connections: `unknown_session` if it is not live, `wrong_room` if it
    /// is another room's.
    pub async fn adopt(&self, session: SessionId, ip: Option<IpAddr>) -> Result<(), ApiError> {
        if self.presence.has(session) {
            return Ok(());
        }
        match self.sessions.directory.lookup(session).await? {
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
        self.presence.is_empty() && self.sessions.directory.online() == 0
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
    /// it names. Nothing goes into the log. A target that takes no signals
    /// on this node is the directory's: it passes the signal to whichever
    /// node the target takes them on, or says why it cannot.
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
        match here {
            Some(to) => self.signals.relay(from, &from_name, to, signal),
            None => {
                self.signals.charge(from)?;
                self.sessions
                    .directory
                    .relay_signal(&signal.to, signals::frame(&from_name, signal))
                    .await
            }
        }
    }

    /// Counts a request as the session's activity; refuses an unknown or
    /// ended session.
    pub fn touch(&self, session: SessionId) -> Result<(), ApiError> {
        self.presence.touch(session).map(drop)
    }

    /// How many users are online: on every node, as last counted.
    pub fn online(&self) -> usize {
        self.presence.online().max(self.sessions.directory.online())
    }

    /// Brings `name` online for the server itself (the demo bot, tests),
    /// outside every per-address limit. See [`Room::register_from`].
    pub async fn register(&self, name: Name) -> Result<Welcome, ApiError> {
        self.register_from(name.into(), None).await
    }

    /// Brings a registration's name online for a client at `ip`: a new
    /// session, a `join` in the log, and what a late joiner needs to catch
    /// up, bounded in size. An observer is left out of who is online.
    pub async fn register_from(
        &self,
        registration: Registration,
        ip: Option<IpAddr>,
    ) -> Result<Welcome, ApiError> {
        let Registration { name, observer } = registration;
        let sessions = &self.sessions;
        self.presence.reserve(ip)?;
        let session = uuid::Uuid::new_v4();
        let joined = match sessions
            .directory
            .join(session, &name, sessions.lease, observer)
            .await
        {
            Ok(joined) => joined,
            Err(err) => {
                self.presence.release(ip);
                return Err(err);
            }
        };
        self.presence.insert(session, name.clone(), ip, true);
        if observer {
            self.presence.mark_observer(session);
        }
        let cursor = joined.event.seq;
        let users = self.with_cursors(joined.names, cursor);
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
            online: joined.online,
        })
    }

    /// `names` as users, each with the last cursor position the newest
    /// events up to `seq` show for it, or else the last one this node saw.
    fn with_cursors(&self, names: Vec<Name>, seq: Seq) -> Vec<UserView> {
        let mut wanted: HashMap<String, Option<(f64, f64)>> =
            names.iter().map(|n| (n.key(), None)).collect();
        let mut missing = wanted.len();
        let recent = self
            .log
            .read_since(seq.saturating_sub(CURSOR_LOOKBACK), None)
            .events;
        for event in recent.iter().rev().filter(|e| e.seq <= seq) {
            if missing == 0 {
                break;
            }
            let EventBody::Mousemove { x, y } = event.body else {
                continue;
            };
            if let Some(at @ None) = wanted.get_mut(&event.name.key()) {
                *at = Some((x, y));
                missing -= 1;
            }
        }
        names
            .into_iter()
            .map(|name| {
                let at = wanted
                    .get(&name.key())
                    .copied()
                    .flatten()
                    .or_else(|| self.presence.cursor_of(&name));
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
            ClientMessage::Leave => self.leave(session).await,
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
        // The session's own rate limit is the directory's to count (across
        // nodes, when it is shared); its address's is this node's.
        let at = match body {
            EventBody::Mousemove { x, y } => Some((x, y)),
            _ => None,
        };
        let name = match self.presence.spend_address(session, at) {
            Ok(name) => name,
            Err(err) => return refused(err),
        };
        let rate = self.presence.limits().rate;
        let appended =
            self.sessions
                .directory
                .append(session, name, body, self.sessions.lease, rate);
        let presence = self.presence.clone();
        Box::pin(async move {
            match appended.await {
                Ok(seq) => Ok(seq),
                Err(err) => {
                    match &err {
                        // Ended on another node, or its lease ran out.
                        ApiError::UnknownSession => presence.forget(session),
                        ApiError::RateLimited => presence.refund_address(session),
                        ApiError::Internal | ApiError::StoreUnavailable => {
                            tracing::error!(code = err.code(), "could not append an event");
                        }
                        _ => {}
                    }
                    Err(err)
                }
            }
        })
    }

    /// Ends a session at its own request (`leave`): its `leave` goes into
    /// the log and its name is freed, and this returns the leave's seq.
    /// Refused with `unknown_session` if the session was not live (or had
    /// already ended on another node), and with `store_unavailable` if the
    /// store cannot be reached: then the session stays live, so the client
    /// may leave again, and if it does not, it times out and its leave is
    /// written then (shared, by whichever node reaps its lease).
    pub async fn leave(&self, session: SessionId) -> Result<Seq, ApiError> {
        self.end_session(session)
            .await?
            .ok_or(ApiError::UnknownSession)
    }

    /// Ends a session whose last connection closed, or that the server
    /// ends: as [`Room::leave`], returning the seq of the `leave`, or `None`
    /// if the session was not live or its `leave` could not be written now.
    pub async fn end(&self, session: SessionId) -> Option<Seq> {
        self.end_session(session).await.ok().flatten()
    }

    /// Writes the `leave` of `session` and forgets it here, unless the store
    /// is unreachable: then the session is live again (see [`Room::leave`]).
    async fn end_session(&self, session: SessionId) -> Result<Option<Seq>, ApiError> {
        let Some(name) = self.presence.begin_end(session) else {
            return Ok(None);
        };
        let result = self.sessions.directory.leave(session).await;
        if let Err(ApiError::StoreUnavailable) = result {
            // Nothing was ended in the store: ending it here too would lose
            // the leave until its lease ran out, and refuse the client's
            // retry with `unknown_session`.
            self.presence.cancel_end(session);
            tracing::warn!(%name, %session, "could not write a leave; the session stays live");
            return Err(ApiError::StoreUnavailable);
        }
        self.presence.finish_end(session);
        match result {
            Ok(Some(event)) => {
                tracing::debug!(%name, %session, seq = event.seq, "left");
                Ok(Some(event.seq))
            }
            Ok(None) => Ok(None),
            Err(err) => {
                tracing::error!(%err, %name, "could not append a leave");
                Err(err)
            }
        }
    }

    /// The room's upkeep, about once a second: tells the directory which
    /// sessions have had no connection and no request here for `timeout`
    /// (on one node they end; shared, another node may be using them, and
    /// this node only forgets them), renews the leases of the sessions in
    /// use here, and ends those whose lease ran out, on whichever node they
    /// were.
    pub async fn end_idle(&self, timeout: Duration) {
        let sessions = &self.sessions;
        // Marked as ending first, so nothing here uses them while the
        // directory decides; dropped from this node once it has.
        let idle: Vec<SessionId> = self
            .presence
            .idle_sessions(timeout)
            .into_iter()
            .filter(|session| self.presence.begin_end(*session).is_some())
            .collect();
        if !idle.is_empty() {
            let ended = sessions.directory.went_idle(idle.clone()).await;
            for session in idle {
                self.presence.finish_end(session);
            }
            if let Err(err) = ended {
                tracing::error!(%err, room = %self.name, "could not append a leave");
            }
        }
        let since = std::mem::replace(&mut *sessions.renewed.lock(), Instant::now());
        let active = self.presence.active_since(since);
        if !active.is_empty() {
            match sessions.directory.renew(active, sessions.lease).await {
                Ok(gone) => {
                    for session in gone {
                        self.presence.forget(session);
                    }
                }
                Err(err) => tracing::warn!(%err, room = %self.name, "could not renew leases"),
            }
        }
        if let Err(err) = sessions.directory.reap().await {
            tracing::warn!(%err, room = %self.name, "could not end expired sessions");
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
