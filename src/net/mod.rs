//! What sits under every connection: the socket itself, its bytes counted,
//! the send timeout, the simulated delay, and the limits on connections and
//! open files. Nothing here knows of HTTP routes or rooms.

pub mod delay;
pub mod limits;
pub mod open_files;
pub mod send_timeout;
pub mod traffic;
