//! Who is in a room, on every node that serves it: the contract between a
//! room and the store that keeps its sessions.
//!
//! Every room holds a [`Directory`] and asks it, never which one it has:
//! names unique in the room, sessions live until they end or lapse, each
//! session's own rate limit, and a `join` and a `leave` written exactly
//! once. On one node (memory, `--data-dir`) that is a [`LocalDirectory`],
//! the default every store without sessions of its own hands out, and the
//! node is the whole truth. When several nodes share a room's log
//! (`--redis`), [`crate::store::redis`] keeps the sessions beside it, as
//! leases that the nodes holding their connections renew, and whichever
//! node ends or reaps a session first writes its `leave`. Either way, each
//! node's [`crate::core::presence::Presence`] holds the sessions it has
//! seen, with their connections and cursors.
//!
//! This module is the contract and its local implementation. It knows
//! nothing of HTTP, of Redis, of the room registry or of the room.

mod local;

pub use local::LocalDirectory;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytestring::ByteString;
use futures_util::future::BoxFuture;

use crate::core::error::ApiError;
use crate::core::log::{Event, EventBody, LogError, Seq};
use crate::core::names::{Name, RoomName};
use crate::core::presence::SessionId;

/// The most names a `join` lists ([`Joined::names`]), so a welcome stays
/// small; `online` says how many there are in all, and the rest show up as
/// they move or speak.
pub const WELCOME_USERS: usize = 200;

/// How many of a session's last chat message ids its directory remembers,
/// with the seq each was stored under: a message sent again with one of
/// them is not stored again (see [`Directory::append`]).
pub const SENT_IDS: usize = 64;

/// The most bytes of ids remembered per session: the oldest go first past
/// it, or past [`SENT_IDS`]. An id is at most 64 characters, so the last 64
/// ids fit unless they are long and not ASCII.
pub const SENT_ID_BYTES: usize = 4 * 1024;

/// The idempotency key of an event: the `id` of a chat message, if it has
/// a non-empty one.
pub fn idempotency_key(body: &EventBody) -> Option<&str> {
    match body {
        EventBody::Message { id: Some(id), .. } if !id.is_empty() => Some(id),
        _ => None,
    }
}

/// A session the directory admitted: its `join`, and who was online.
#[derive(Debug, Clone)]
pub struct Joined {
    /// The session's `join`, as stored.
    pub event: Arc<Event>,
    /// The names online at the join, the new one included: all of them, or
    /// at most [`WELCOME_USERS`] of them when there are more.
    pub names: Vec<Name>,
    /// How many sessions are online in all.
    pub online: usize,
}

/// What the directory knows of a session id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Live in this room, under this name.
    Live(Name),
    /// Live in another room (known only to a directory that sees every
    /// room; on one node, the room registry knows).
    Elsewhere(RoomName),
    /// Never registered, ended, or its lease ran out.
    Unknown,
}

/// The sessions of one room, as every node that serves it sees them. Every
/// call is one atomic step, so two callers (or nodes) never both admit a
/// name, and never both write a session's `leave`.
pub trait Directory: Send + Sync + 'static {
    /// Admits `session` under `name` with a lease of `lease` and writes its
    /// `join`; refuses with `name_taken` if the name is online on any node,
    /// or still ending: a name stays taken until its `leave` is in the log.
    /// A holder of the name whose lease ran out is ended first. An
    /// `observer`'s `join` is marked so, and a local directory leaves it out
    /// of [`Joined::names`] and [`Directory::online`].
    fn join(
        &self,
        session: SessionId,
        name: &Name,
        lease: Duration,
        observer: bool,
    ) -> BoxFuture<'static, Result<Joined, ApiError>>;

    /// Finds `session`, for a node that has not seen it yet.
    fn lookup(&self, session: SessionId) -> BoxFuture<'static, Result<Lookup, ApiError>>;

    /// Appends an event from `session`: refused with `unknown_session` if
    /// the session is no longer live anywhere, and with `rate_limited` past
    /// `rate` events a second per session (bursts of twice that; 0 for no
    /// limit) counted across every node. Renews the lease. As with
    /// [`crate::core::log::EventLog::append`], the event's place in line is
    /// taken when this is called. This is every message's path: see
    /// [`Appending`] for why it is no boxed future.
    ///
    /// A chat message whose [`idempotency_key`] the session already sent,
    /// among its last [`SENT_IDS`] (and [`SENT_ID_BYTES`]), is not appended
    /// again: it answers with the seq of the first, once that is stored,
    /// and spends nothing of the rate limit. So a client may send a message
    /// again after `store_unavailable` (which cannot tell whether it was
    /// stored) and it is stored once.
    fn append(
        &self,
        session: SessionId,
        name: Name,
        body: EventBody,
        lease: Duration,
        rate: u32,
    ) -> Appending;

    /// Ends `session` and writes its `leave`; `None` if it had ended already
    /// (by another node, say).
    fn leave(&self, session: SessionId)
        -> BoxFuture<'static, Result<Option<Arc<Event>>, ApiError>>;

    /// Extends the leases of `sessions` to `lease` from now, and returns
    /// those that are no longer live.
    fn renew(
        &self,
        sessions: Vec<SessionId>,
        lease: Duration,
    ) -> BoxFuture<'static, Result<Vec<SessionId>, LogError>>;

    /// Hears that `sessions` have had no connection and no request on this
    /// node for the idle timeout (`--presence-timeout`). A directory shared
    /// by several nodes leaves them to their leases, since another node may
    /// be using them; a directory of one node ends them, writing each one's
    /// `leave`. Says how many it ended. As with
    /// [`Directory::append`], the leaves take their place in line when this
    /// is called.
    fn went_idle(&self, sessions: Vec<SessionId>) -> BoxFuture<'static, Result<usize, LogError>>;

    /// Ends every session whose lease has run out, writing each one's
    /// `leave`, and says how many it ended and how many are still online.
    fn reap(&self) -> BoxFuture<'static, Result<Reaped, LogError>>;

    /// How many sessions are online, on every node, as last counted: at the
    /// last `join` or `reap` when that takes the shared store, now when the
    /// directory is the whole truth.
    fn online(&self) -> usize;

    /// Passes a WebRTC signal's `frame` to the user `to`, whose socket takes
    /// no signals on this node (the room tried there first), on whichever
    /// node holds its signal socket; `unknown_target` if `to` is not online
    /// in the room on any node. Whether a socket took it is not known here;
    /// with one node there is no other, and the answer is
    /// `target_not_listening` when `to` is online.
    fn relay_signal(
        &self,
        to: &Name,
        frame: ByteString,
    ) -> BoxFuture<'static, Result<(), ApiError>>;

    /// Hands the signals other nodes relay to this room's users to
    /// `deliver`, on this node, for as long as `deliver` lives: the
    /// directory keeps only a weak reference.
    fn deliver_signals(&self, deliver: &Arc<SignalSink>);
}

/// Delivers a signal's frame, relayed from another node, to the user it
/// names on this node.
pub type SignalSink = dyn Fn(&Name, ByteString) + Send + Sync;

/// What a [`Directory::reap`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reaped {
    /// Sessions it ended, each with its `leave` written.
    pub ended: usize,
    /// Sessions still online, on every node.
    pub online: usize,
}

/// An event on its way into a room's log through its [`Directory`]: the
/// `Future` of [`Directory::append`], which resolves to its seq. It is a type of its own, not a boxed
/// future, so that a directory that admits the event at once (on one node)
/// hands over the log's own append as it is, and sending costs no more
/// allocations than appending.
#[must_use = "an event is stored only if its append is awaited"]
pub struct Appending(Stage);

enum Stage {
    /// Answered before it reached the log (refused, or sent before);
    /// taken when first polled.
    Answered(Option<Result<Seq, ApiError>>),
    /// Admitted, and on its way into the log.
    Admitted(BoxFuture<'static, Result<Arc<Event>, LogError>>),
    /// Admitted or refused where it is stored, as one step.
    Deciding(BoxFuture<'static, Result<Seq, ApiError>>),
}

impl Appending {
    /// An event refused with `err`.
    pub fn refused(err: ApiError) -> Self {
        Appending(Stage::Answered(Some(Err(err))))
    }

    /// A chat message sent before and stored as `seq`: not appended again.
    pub fn repeated(seq: Seq) -> Self {
        Appending(Stage::Answered(Some(Ok(seq))))
    }

    /// An event admitted by the directory, being appended to the log.
    pub fn admitted(append: BoxFuture<'static, Result<Arc<Event>, LogError>>) -> Self {
        Appending(Stage::Admitted(append))
    }

    /// An event that the store admits or refuses where it stores it.
    pub fn deciding(append: BoxFuture<'static, Result<Seq, ApiError>>) -> Self {
        Appending(Stage::Deciding(append))
    }
}

impl Future for Appending {
    type Output = Result<Seq, ApiError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.0 {
            // Polled again after it answered, it answers as a fused future
            // would not: with an internal error rather than a panic.
            Stage::Answered(answer) => {
                Poll::Ready(answer.take().unwrap_or(Err(ApiError::Internal)))
            }
            Stage::Admitted(append) => append.as_mut().poll(cx).map(|appended| Ok(appended?.seq)),
            Stage::Deciding(append) => append.as_mut().poll(cx),
        }
    }
}
