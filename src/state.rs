//! What every handler shares, built once before the workers start so that
//! every worker serves the same log.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::limits::ConnectionLimit;
use crate::log::EventLog;
use crate::room::Room;
use crate::stats::{Counters, Stats};
use crate::transport::Transport;

/// The server's shared state.
pub struct AppState {
    /// The log and who is in it.
    pub room: Room,
    /// The settings the server started with.
    pub config: Arc<Config>,
    /// Counters per transport.
    pub stats: Arc<Stats>,
    /// Requests in flight, against `--max-connections`.
    pub limit: Arc<ConnectionLimit>,
    /// Cancelled when the server begins to shut down: held long-polls answer,
    /// streams end and sockets close with 1001.
    pub shutdown: CancellationToken,
}

impl AppState {
    /// The message log.
    pub fn log(&self) -> &Arc<dyn EventLog> {
        self.room.log()
    }

    /// The counters of one transport.
    pub fn counters(&self, transport: Transport) -> &Counters {
        self.stats.of(transport)
    }
}
