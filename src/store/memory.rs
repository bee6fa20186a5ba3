//! The in-memory store, the default: each room's log a [`MemoryLog`] in
//! this process, gone when the room is reclaimed or the server stops.
//!
//! It implements the core's [`LogStore`] and knows nothing of the rooms
//! above it, of other stores, or of HTTP.

use std::io;
use std::sync::Arc;

use crate::core::log::{LogBudget, MemoryLog};
use crate::core::log_store::{LogStore, OpenedLog};
use crate::core::names::RoomName;

/// Logs in memory only: a reclaimed room is gone, and opens again empty
/// under a new epoch.
pub struct MemoryStore {
    /// Events each log keeps (`--history`).
    pub history: usize,
    /// Bytes each log keeps (`--room-bytes`), and the node's total
    /// (`--total-bytes`) they share.
    pub budget: LogBudget,
}

impl LogStore for MemoryStore {
    fn budget(&self) -> &LogBudget {
        &self.budget
    }

    fn open(&self, _room: &RoomName) -> io::Result<OpenedLog> {
        Ok(OpenedLog::here(Arc::new(MemoryLog::bounded(
            self.history,
            self.budget.clone(),
        ))))
    }

    fn kept(&self) -> io::Result<Vec<RoomName>> {
        Ok(Vec::new())
    }
}
