//! The seam between the rooms and where they keep them: the [`LogStore`]
//! trait the room registry opens each room's log through, together with the
//! [`Directory`] of its sessions ([`OpenedLog`]), and the counters a store
//! may keep of its own for `/metrics` ([`StoreMetrics`], read as
//! [`RoundTrips`]).
//!
//! It lives below the room registry ([`crate::core::rooms`]) so that a
//! backend in [`crate::store`] imports only the core's traits, never the
//! registry or the room. It knows nothing of HTTP, of a particular backend,
//! or of which one the configuration picked.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use crate::core::directory::{Directory, LocalDirectory};
use crate::core::log::{EventLog, LogBudget};
use crate::core::names::RoomName;

/// Where rooms keep their logs and sessions.
pub trait LogStore: Send + Sync + 'static {
    /// Opens the log of `room`: empty, or as it was kept. It may block (a
    /// journal replays from disk, Redis waits for a snapshot), so the
    /// registry calls it off the async workers. A store that cannot reach
    /// its storage fails with [`io::ErrorKind::NotConnected`], which
    /// clients see as `store_unavailable`.
    fn open(&self, room: &RoomName) -> io::Result<OpenedLog>;

    /// The rooms whose logs this store keeps on its own, open or not: the
    /// candidates for [`LogStore::delete_if_unused`]. Nothing is opened
    /// from this list; a kept room opens on first use.
    fn kept(&self) -> io::Result<Vec<RoomName>>;

    /// Deletes the kept log of `room` if nothing has used it for
    /// `unused_for`, and says whether it did. The registry calls it only
    /// for a room that is not open, and keeps the room from opening
    /// meanwhile. It may block. The default keeps nothing of its own to
    /// delete.
    fn delete_if_unused(&self, room: &RoomName, unused_for: Duration) -> io::Result<bool> {
        let _ = (room, unused_for);
        Ok(false)
    }

    /// The bytes its rooms' windows may keep, each and in all; its node
    /// total is served at `/metrics`.
    fn budget(&self) -> &LogBudget;

    /// The counters the store keeps of its own, for `/metrics`; `None`
    /// (the default) for a store with nothing to count.
    fn metrics(&self) -> Option<Arc<dyn StoreMetrics>> {
        None
    }
}

/// A room's log as a store opened it, and who is in the room.
pub struct OpenedLog {
    /// The log.
    pub log: Arc<dyn EventLog>,
    /// Where the room's sessions live: this node's [`LocalDirectory`], or a
    /// directory the store shares with other nodes.
    pub directory: Arc<dyn Directory>,
}

impl OpenedLog {
    /// A log only this node serves, with its sessions in a
    /// [`LocalDirectory`].
    pub fn here(log: Arc<dyn EventLog>) -> OpenedLog {
        let directory = Arc::new(LocalDirectory::over(&log));
        OpenedLog { log, directory }
    }
}

/// A store's own counters, read each time `/metrics` is scraped.
pub trait StoreMetrics: Send + Sync + 'static {
    /// Its round trips to the storage it reaches over the network, now.
    fn round_trips(&self) -> RoundTrips;
}

/// A store's round trips to its storage, at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundTrips {
    /// The storage as family names say it, lower case: `redis` is served
    /// as `pushlab_redis_calls_total` and so on.
    pub storage: &'static str,
    /// The storage as help texts say it, such as `Redis`.
    pub title: &'static str,
    /// Commands sent.
    pub calls: u64,
    /// Of those, how many failed.
    pub errors: u64,
    /// Their round-trip times added up, in seconds.
    pub rtt_sum_seconds: f64,
    /// Round trips per bucket, not cumulative: each bucket's upper bound in
    /// seconds and how many fell in it; the last bound is infinite.
    pub rtt_buckets: Vec<(f64, u64)>,
    /// Bytes of writes waiting for the storage now, bounded by the store.
    pub queued_bytes: u64,
}

impl RoundTrips {
    /// The round trips in every bucket. A call is counted in its bucket
    /// just after `calls`, so a read between the two may see this one
    /// lower than `calls`.
    pub fn rtt_count(&self) -> u64 {
        self.rtt_buckets.iter().map(|(_, count)| count).sum()
    }
}
