//! The one shared room: the message log plus presence, and the rules that
//! tie them together.
//!
//! Every transport hands validated client messages to [`Room`], so a message
//! means the same thing over HTTP and WebSocket. The room decides when a
//! session starts and ends and writes `join` and `leave` to the log. It knows
//! nothing of HTTP or sockets.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::error::ApiError;
use crate::log::{EventBody, EventLog, Seq};
use crate::names::{Name, RoomName};
pub use crate::presence::Attachment;
use crate::presence::{Presence, SessionId, SessionLimits};
use crate::protocol::{ClientMessage, Welcome};
use crate::signals::{Inbox, Signal, SignalHub};

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
}

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

    /// Whether `session` is one of this room's, live or ending.
    pub fn has_session(&self, session: SessionId) -> bool {
        self.presence.has(session)
    }

    /// Whether the room has no session at all, ending ones included.
    pub fn is_empty(&self) -> bool {
        self.presence.is_empty()
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
    /// it names. Nothing goes into the log.
    pub fn signal(&self, from: SessionId, signal: &Signal) -> Result<(), ApiError> {
        let from_name = self.presence.touch(from)?;
        if from_name.key() == signal.to.key() {
            return Err(ApiError::BadRequest(
                "a signal goes to another session, not to its sender".into(),
            ));
        }
        let to = self
            .presence
            .live_session(&signal.to)
            .ok_or_else(|| ApiError::UnknownTarget(signal.to.to_string()))?;
        self.signals.relay(from, &from_name, to, signal)
    }

    /// Counts a request as the session's activity; refuses an unknown or
    /// ended session.
    pub fn touch(&self, session: SessionId) -> Result<(), ApiError> {
        self.presence.touch(session).map(drop)
    }

    /// How many users are online.
    pub fn online(&self) -> usize {
        self.presence.users().len()
    }

    /// Brings `name` online for the server itself (the demo bot, tests),
    /// outside every per-address limit. See [`Room::register_from`].
    pub async fn register(&self, name: Name) -> Result<Welcome, ApiError> {
        self.register_from(name, None).await
    }

    /// Brings `name` online for a client at `ip`: a new session, a `join` in
    /// the log, and what a late joiner needs to catch up, bounded in size.
    pub async fn register_from(&self, name: Name, ip: Option<IpAddr>) -> Result<Welcome, ApiError> {
        let session = self.presence.open(name.clone(), ip)?;
        let join = match self.log.append(name.clone(), EventBody::Join).await {
            Ok(event) => event,
            Err(err) => {
                tracing::error!(%err, "could not append a join");
                self.presence.finish_end(session);
                return Err(err.into());
            }
        };
        let cursor = join.seq;
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
        let (users, online) = self.presence.some_users(session, WELCOME_USERS);
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

    /// Acts on a message from a registered session and returns the seq of the
    /// event it produced.
    pub async fn submit(
        &self,
        session: SessionId,
        message: ClientMessage,
    ) -> Result<Seq, ApiError> {
        let body = match message {
            ClientMessage::Register(_) => {
                return Err(ApiError::BadRequest(
                    "this session is already registered; register once per session".into(),
                ))
            }
            ClientMessage::Leave => return self.end(session).await.ok_or(ApiError::UnknownSession),
            ClientMessage::Message { text, id } => EventBody::Message {
                text: text.into_string(),
                id,
            },
            ClientMessage::Mousemove { x, y } => EventBody::Mousemove { x, y },
            ClientMessage::Signal(_) => {
                return Err(ApiError::BadRequest(
                    "signals go over a WebSocket opened with signals=true, not into the log".into(),
                ))
            }
        };
        let name = self.presence.spend(session)?;
        if let EventBody::Mousemove { x, y } = body {
            self.presence.set_cursor(session, x, y);
        }
        let event = self.log.append(name, body).await.map_err(|err| {
            tracing::error!(%err, "could not append an event");
            ApiError::from(err)
        })?;
        Ok(event.seq)
    }

    /// Ends a session: its `leave` goes into the log and its name is freed.
    /// Returns the seq of the `leave`, or `None` if the session was not live.
    pub async fn end(&self, session: SessionId) -> Option<Seq> {
        let name = self.presence.begin_end(session)?;
        let result = self.log.append(name.clone(), EventBody::Leave).await;
        self.presence.finish_end(session);
        match result {
            Ok(event) => {
                tracing::debug!(%name, %session, seq = event.seq, "left");
                Some(event.seq)
            }
            Err(err) => {
                tracing::error!(%err, %name, "could not append a leave");
                None
            }
        }
    }

    /// Ends every session that has had no connection and no request for
    /// `timeout`.
    pub async fn end_idle(&self, timeout: Duration) {
        for session in self.presence.idle_sessions(timeout) {
            self.end(session).await;
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
    use crate::log::MemoryLog;
    use crate::names::MessageText;

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
