//! The four ways pushlab serves the log, each a thin adapter that turns a
//! [`crate::core::log::Reader`]'s reads into its own wire shape.

pub mod longpoll;
pub mod poll;
pub mod sse;
pub mod ws;

/// The four transports, as counted in `/stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `GET /poll`
    Poll,
    /// `GET /longpoll`
    LongPoll,
    /// `GET /sse`
    Sse,
    /// `GET /ws`
    Ws,
}
