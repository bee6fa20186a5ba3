//! The HTTP layer: the table of endpoints, admission, the shared state every
//! handler sees, and the handlers that are not transports.

pub mod admission;
pub mod answers;
pub mod api;
pub mod assets;
pub mod body_timeout;
pub mod endpoints;
pub mod http_error;
pub mod ice;
pub mod log_throttle;
pub mod metrics;

pub mod state;
pub mod stats;
