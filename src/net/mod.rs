//! What sits under every connection: the connection itself (its socket,
//! bytes counted, the send timeout), the simulated delay, TLS and its
//! certificate, HTTP/2's frames counted per stream, and the limits on
//! connections and open files. Nothing here knows of HTTP routes or rooms.

pub mod conn;
pub mod delay;
pub mod frames;
pub mod limits;
pub mod open_files;
pub mod read_ahead;
pub mod tls;
pub mod traffic;
