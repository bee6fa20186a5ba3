//! The contract every backend implements to keep rooms: [`LogStore`] opens
//! a room's log together with the [`Directory`] of its sessions.
//!
//! It lives below the room registry ([`crate::core::rooms`]) so that a
//! backend in [`crate::store`] imports only the core's traits, never the
//! registry or the room. It knows nothing of HTTP, of a particular backend,
//! or of which one the configuration picked.

use std::io;
use std::sync::Arc;

use crate::core::directory::{Directory, LocalDirectory};
use crate::core::log::EventLog;
use crate::core::names::RoomName;

/// Where rooms keep their logs and sessions.
pub trait LogStore: Send + Sync + 'static {
    /// Opens the log of `room`: empty, or as it was kept. A store that
    /// cannot reach its storage fails with [`io::ErrorKind::NotConnected`],
    /// which clients see as `store_unavailable`.
    fn open(&self, room: &RoomName) -> io::Result<OpenedLog>;

    /// The rooms whose logs were kept by an earlier run, to restore at start.
    fn kept(&self) -> io::Result<Vec<RoomName>>;
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
