//! The five ways pushlab serves the log, each a thin adapter that turns a
//! [`crate::core::log::Reader`]'s reads into its own wire shape. Each opens
//! the same way, through [`open`].

pub mod longpoll;
pub mod poll;
pub mod sse;
pub mod webtransport;
pub mod ws;

use std::net::IpAddr;

use crate::core::error::ApiError;
use crate::core::room::{Attachment, Room};
use crate::http::api::ReadQuery;
use crate::http::state::AppState;

/// The four transports: one enum, kept where the traffic is counted so that
/// the layers below this one can name a transport too; the endpoint table
/// says which endpoint is which.
pub use crate::net::traffic::Transport;

/// What a reader opens with: the room it reads, and its session attached
/// for as long as the request or connection lasts (detached on drop).
pub struct Opened {
    /// The room named by the query.
    pub room: Room,
    /// The query's session, if it names one.
    pub attached: Option<Attachment>,
}

/// The opening every transport shares, once its own parameters are read:
/// the request (or connection) counted for `transport`, the room entered
/// for `ip`, and the session attached, which must belong to it.
pub async fn open(
    state: &AppState,
    transport: Transport,
    query: &ReadQuery,
    ip: IpAddr,
) -> Result<Opened, ApiError> {
    state.counters(transport).request();
    let room = state
        .enter(query.room.as_deref(), query.session, ip)
        .await?;
    let attached = query.session.map(|s| room.attach(s)).transpose()?;
    Ok(Opened { room, attached })
}
