//! Who is online in a room across every node that serves it, when its log
//! is shared (`--redis`).
//!
//! On one node, [`crate::core::presence::Presence`] is the whole truth. When
//! several nodes share a room's log, a session registered on one node may
//! send, read or connect through any other, so the room's sessions are kept
//! beside its log by a [`Directory`]: names unique across nodes, sessions as
//! leases that the nodes holding their connections renew, and a `leave`
//! written exactly once, by whichever node ends or reaps the session first.
//! Each node's `Presence` then holds only the sessions it has seen, as a
//! cache of the directory.
//!
//! This module is the contract; [`crate::store::redis`] implements it. It
//! knows nothing of HTTP or of Redis.

use std::sync::Arc;
use std::time::Duration;

use bytestring::ByteString;
use futures_util::future::BoxFuture;

use crate::core::error::ApiError;
use crate::core::log::{Event, EventBody, LogError};
use crate::core::names::{Name, RoomName};
use crate::core::presence::SessionId;

/// A session the directory admitted: its `join`, and who was online.
#[derive(Debug, Clone)]
pub struct Joined {
    /// The session's `join`, as stored.
    pub event: Arc<Event>,
    /// The names online at the join, the new one included: all of them, or a
    /// sample when there are very many.
    pub names: Vec<Name>,
    /// How many sessions are online in all.
    pub online: usize,
}

/// What the directory knows of a session id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Live in this room, under this name.
    Live(Name),
    /// Live in another room.
    Elsewhere(RoomName),
    /// Never registered, ended, or its lease ran out.
    Unknown,
}

/// The sessions of one room, shared by every node that serves it. Every
/// call is one atomic step in the shared store, so two nodes never both
/// admit a name, and never both write a session's `leave`.
pub trait Directory: Send + Sync + 'static {
    /// Admits `session` under `name` with a lease of `lease` and writes its
    /// `join`; refuses with `name_taken` if the name is online on any node.
    /// A holder of the name whose lease ran out is ended first.
    fn join(
        &self,
        session: SessionId,
        name: &Name,
        lease: Duration,
    ) -> BoxFuture<'static, Result<Joined, ApiError>>;

    /// Finds `session`, for a node that has not seen it yet.
    fn lookup(&self, session: SessionId) -> BoxFuture<'static, Result<Lookup, ApiError>>;

    /// Appends an event from `session`: refused with `unknown_session` if
    /// the session is no longer live anywhere, and with `rate_limited` past
    /// `rate` events a second per session (bursts of twice that; 0 for no
    /// limit) counted across every node. Renews the lease. As with
    /// [`crate::core::log::EventLog::append`], the event's place in line is taken
    /// when this is called.
    fn append(
        &self,
        session: SessionId,
        name: Name,
        body: EventBody,
        lease: Duration,
        rate: u32,
    ) -> BoxFuture<'static, Result<Arc<Event>, ApiError>>;

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

    /// Ends every session whose lease has run out, writing each one's
    /// `leave`, and says how many it ended and how many are still online.
    fn reap(&self) -> BoxFuture<'static, Result<Reaped, LogError>>;

    /// Passes a WebRTC signal's `frame` to the user `to` on whichever node
    /// holds its signal socket; `unknown_target` if `to` is not online in
    /// the room on any node. Whether a socket took it is not known here.
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
