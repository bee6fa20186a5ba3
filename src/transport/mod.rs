//! The four ways pushlab serves the log, each a thin adapter that turns a
//! [`crate::log::Reader`]'s reads into its own wire shape.

pub mod longpoll;
pub mod poll;
pub mod sse;
pub mod ws;
pub mod ws_stream;

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
