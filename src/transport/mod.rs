//! The four ways pushlab serves the log, each a thin adapter that turns a
//! [`crate::core::log::Reader`]'s reads into its own wire shape.

pub mod longpoll;
pub mod poll;
pub mod sse;
pub mod ws;

/// The four transports: one enum, kept where the traffic is counted so that
/// the layers below this one can name a transport too; the endpoint table
/// says which endpoint is which.
pub use crate::net::traffic::Transport;
