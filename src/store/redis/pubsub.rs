//! The WebRTC signals relayed between nodes: one Redis pub/sub channel,
//! [`SIGNALS`], which every node follows on a connection of its own, handing
//! each signal to the room it is for if this node has that room open.
//!
//! It owns the channel and the message's shape; publishing a signal is a
//! script (`SIGNAL`), run by the directory, which checks its target is online.
//! It knows nothing of rooms beyond where to deliver.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use bytestring::ByteString;
use parking_lot::Mutex;
use redis::Client;

use crate::core::directory::SignalSink;
use crate::core::names::{Name, RoomName};
use crate::store::redis::RETRY;

/// Room → where this node delivers the signals relayed to its users.
pub(super) type SignalSinks = Arc<Mutex<HashMap<RoomName, Weak<SignalSink>>>>;

/// The channel every node's WebRTC signals go through, each message
/// `ROOM\nTO\nFRAME`: room and user names have no line breaks, and the frame
/// is compact JSON.
pub const SIGNALS: &str = "pushlab:signals";

/// Follows [`SIGNALS`] on a connection of its own and hands each signal to
/// the room it is for, if this node has that room open; reconnects after a
/// failure, until the store's runtime stops. A signal relayed while this
/// node is not subscribed is lost, as a WebRTC signal on a broken socket is:
/// the peers' negotiation times out and the page tries again.
pub(super) async fn follow_signals(client: Client, sinks: SignalSinks) {
    use futures_util::StreamExt as _;
    loop {
        match client.get_async_pubsub().await {
            Ok(mut pubsub) => match pubsub.subscribe(SIGNALS).await {
                Ok(()) => {
                    let mut messages = pubsub.into_on_message();
                    while let Some(message) = messages.next().await {
                        match message.get_payload::<String>() {
                            Ok(payload) => dispatch_signal(&sinks, &payload),
                            Err(err) => tracing::warn!(%err, "a relayed signal is not text"),
                        }
                    }
                    tracing::warn!("lost the signal channel in Redis; reconnecting");
                }
                Err(err) => tracing::warn!(%err, "cannot subscribe to signals in Redis"),
            },
            Err(err) => tracing::warn!(%err, "cannot connect to Redis for signals"),
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// Delivers one relayed signal on this node, to its room's sink.
fn dispatch_signal(sinks: &SignalSinks, payload: &str) {
    let mut parts = payload.splitn(3, '\n');
    let (Some(room), Some(to), Some(frame)) = (parts.next(), parts.next(), parts.next()) else {
        tracing::warn!("a relayed signal is malformed");
        return;
    };
    let (Ok(room), Ok(to)) = (RoomName::parse(room), Name::parse(to)) else {
        tracing::warn!("a relayed signal names no valid room or user");
        return;
    };
    let sink = {
        let mut sinks = sinks.lock();
        let sink = sinks.get(&room).and_then(Weak::upgrade);
        if sink.is_none() {
            // A room closed on this node: forget it.
            sinks.remove(&room);
        }
        sink
    };
    if let Some(deliver) = sink {
        deliver(&to, ByteString::from(frame.to_owned()));
    }
}
