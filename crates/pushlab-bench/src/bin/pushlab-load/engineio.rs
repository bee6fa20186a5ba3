//! Just enough of engine.io v4 and socket.io v4 to talk to the socket.io peer.
//!
//! Engine.io packets are a type digit and data: `0` open (with a JSON
//! handshake), `1` close, `2` ping, `3` pong, `4` message, `6` noop. Over
//! WebSocket each text frame is one packet; over HTTP long-polling one body
//! holds several, separated by the record separator `\x1e`. A socket.io packet
//! rides in an engine.io message: `40` connects to the main namespace, `41`
//! disconnects, `42["event",payload]` is an event.

use serde::Deserialize;

/// What separates packets in a polling body.
pub const RECORD_SEPARATOR: char = '\x1e';

/// The query every engine.io request carries, by transport.
pub fn query(transport: &str, sid: Option<&str>) -> String {
    match sid {
        Some(sid) => format!("/socket.io/?EIO=4&transport={transport}&sid={sid}"),
        None => format!("/socket.io/?EIO=4&transport={transport}"),
    }
}

/// Socket.io connect to the main namespace, in an engine.io message.
pub const CONNECT: &str = "40";
/// An engine.io pong, the answer to the server's ping.
pub const PONG: &str = "3";

/// The handshake in an engine.io `open` packet.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Open {
    pub sid: String,
}

/// One engine.io packet, as far as the load generator cares.
#[derive(Debug, PartialEq)]
pub enum Packet<'a> {
    /// `0{...}`: the handshake.
    Open(&'a str),
    /// `1`: the server closes the session.
    Close,
    /// `2`: answer with a pong.
    Ping,
    /// `40{...}`: the namespace is connected.
    Connected,
    /// `41`: the namespace was disconnected.
    Disconnected,
    /// `42[...]`: an event; the JSON array of name and arguments.
    Event(&'a str),
    /// Anything else: pongs, noops, acks.
    Other,
}

/// Reads one packet.
pub fn parse(packet: &str) -> Packet<'_> {
    let bytes = packet.as_bytes();
    match (bytes.first(), bytes.get(1)) {
        (Some(b'0'), _) => Packet::Open(&packet[1..]),
        (Some(b'1'), _) => Packet::Close,
        (Some(b'2'), _) => Packet::Ping,
        (Some(b'4'), Some(b'0')) => Packet::Connected,
        (Some(b'4'), Some(b'1')) => Packet::Disconnected,
        (Some(b'4'), Some(b'2')) => Packet::Event(&packet[2..]),
        _ => Packet::Other,
    }
}

/// The packets of a polling body.
pub fn packets(body: &str) -> impl Iterator<Item = Packet<'_>> {
    body.split(RECORD_SEPARATOR)
        .filter(|p| !p.is_empty())
        .map(parse)
}

/// `42["msg",<payload>]`: the event the peer fans out.
pub fn event(name: &str, payload_json: &str) -> String {
    format!("42[\"{name}\",{payload_json}]")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_are_split_on_the_record_separator() {
        let body = "40{\"sid\":\"x\"}\x1e2\x1e42[\"msg\",{\"id\":\"1.2\"}]";
        let all: Vec<_> = packets(body).collect();
        assert_eq!(
            all,
            vec![
                Packet::Connected,
                Packet::Ping,
                Packet::Event("[\"msg\",{\"id\":\"1.2\"}]")
            ]
        );
    }

    #[test]
    fn an_open_packet_carries_the_session_id() {
        let Packet::Open(json) = parse("0{\"sid\":\"abc\",\"upgrades\":[],\"pingInterval\":25000}")
        else {
            panic!("not an open packet");
        };
        let open: Open = serde_json::from_str(json).unwrap();
        assert_eq!(open.sid, "abc");
    }
}
