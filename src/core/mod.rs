//! The core: rooms, their message logs and who is in them. Nothing here
//! knows of HTTP, sockets or a particular store; the layers above call in,
//! and the stores in [`crate::store`] implement its traits.

pub mod directory;
pub mod error;
pub mod log;
pub mod log_store;
pub mod names;
pub mod presence;
pub mod protocol;
mod rate;
pub mod room;
pub mod rooms;
pub mod signals;
