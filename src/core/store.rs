//! The seam between the rooms and where they keep their logs: the
//! [`LogStore`] trait the room registry opens each room's log through, what
//! it hands back ([`OpenedLog`]), and the counters a store may keep of its
//! own for `/metrics` ([`StoreMetrics`]).
//!
//! The core defines these; the backends in [`crate::store`] (memory, journal,
//! Redis) implement them. This module knows no backend, and nothing of HTTP.

use std::io;
use std::sync::Arc;

use crate::core::directory::Directory;
use crate::core::log::EventLog;
use crate::core::names::RoomName;

/// Where rooms keep their logs.
pub trait LogStore: Send + Sync + 'static {
    /// Opens the log of `room`: empty, or as it was kept. A store that
    /// cannot reach its storage fails with [`io::ErrorKind::NotConnected`],
    /// which clients see as `store_unavailable`.
    fn open(&self, room: &RoomName) -> io::Result<OpenedLog>;

    /// The rooms whose logs were kept by an earlier run, to restore at start.
    fn kept(&self) -> io::Result<Vec<RoomName>>;
}

/// A room's log as a store opened it.
pub struct OpenedLog {
    /// The log.
    pub log: Arc<dyn EventLog>,
    /// Where the room's sessions live when other nodes share the log;
    /// `None` when this node alone serves it.
    pub directory: Option<Arc<dyn Directory>>,
}

impl OpenedLog {
    /// A log only this node serves.
    pub fn here(log: Arc<dyn EventLog>) -> OpenedLog {
        OpenedLog {
            log,
            directory: None,
        }
    }
}
