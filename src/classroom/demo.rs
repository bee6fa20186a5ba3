//! The demo bot (`--demo`): a named user that moves its cursor along a
//! figure-of-eight at a steady rate and says a line every few seconds, so the
//! transports can be compared without a second person at the keyboard.
//!
//! It goes through [`Room`] like any client, so it is rate-limited, shows in
//! presence and leaves when the server stops.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::core::names::{MessageText, Name};
use crate::core::protocol::ClientMessage;
use crate::core::room::Room;

/// What the bot says, in turn.
const LINES: &[&str] = &[
    "Hello! I move my cursor 20 times a second. Watch how each transport keeps up.",
    "Short polling only sees my moves once per interval: the dot jumps.",
    "Long polling answers as soon as I move, then the browser asks again.",
    "Server-Sent Events keep one response open and stream every move.",
    "WebSocket frames are a few bytes each: compare the bytes per event.",
];

/// How often the bot says something.
const CHAT_EVERY: Duration = Duration::from_secs(5);

/// Starts the bot: `moves_per_second` cursor moves, a chat line every 5 s.
pub fn spawn(
    room: Room,
    moves_per_second: u32,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Some(session) = join(&room).await else {
            tracing::warn!("the demo bot could not find a free name");
            return;
        };
        let rate = moves_per_second.max(1);
        let mut moves = tokio::time::interval(Duration::from_secs(1) / rate);
        moves.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut chat = tokio::time::interval(CHAT_EVERY);
        let mut step: u64 = 0;
        let mut line = 0;
        loop {
            let message = tokio::select! {
                _ = stop.cancelled() => break,
                _ = moves.tick() => {
                    step += 1;
                    let (x, y) = figure_of_eight(step as f64 / f64::from(rate));
                    ClientMessage::Mousemove { x, y }
                }
                _ = chat.tick() => {
                    line = (line + 1) % LINES.len();
                    let text = MessageText::parse(LINES[line]).expect("the bot's lines are valid");
                    ClientMessage::Message { text, id: None }
                }
            };
            if let Err(err) = room.submit(session, message).await {
                tracing::warn!(%err, "the demo bot was refused; it stops");
                return;
            }
        }
        room.end(session).await;
    })
}

async fn join(room: &Room) -> Option<crate::core::presence::SessionId> {
    for suffix in ["", "-2", "-3", "-4"] {
        let name = Name::parse(&format!("demobot{suffix}")).ok()?;
        if let Ok(welcome) = room.register(name).await {
            return Some(welcome.session);
        }
    }
    None
}

/// A point on a figure-of-eight inside [0.1, 0.9]², one lap every 8 s.
fn figure_of_eight(seconds: f64) -> (f64, f64) {
    let t = seconds * std::f64::consts::TAU / 8.0;
    (0.5 + 0.4 * t.sin(), 0.5 + 0.4 * (t.sin() * t.cos()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::log::MemoryLog;
    use std::sync::Arc;

    #[test]
    fn the_path_stays_on_the_canvas() {
        for i in 0..1000 {
            let (x, y) = figure_of_eight(f64::from(i) / 37.0);
            assert!((0.0..=1.0).contains(&x) && (0.0..=1.0).contains(&y));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_bot_joins_moves_chats_and_leaves() {
        let room = Room::new(Arc::new(MemoryLog::new(10_000)), 60);
        let stop = CancellationToken::new();
        let bot = spawn(room.clone(), 20, stop.clone());
        tokio::time::sleep(Duration::from_millis(5500)).await;
        stop.cancel();
        bot.await.unwrap();
        let events = room.log().read_since(0, None).events;
        let kinds: Vec<&str> = events.iter().map(|e| e.body.kind()).collect();
        assert_eq!(kinds.first(), Some(&"join"));
        assert_eq!(kinds.last(), Some(&"leave"));
        let moves = kinds.iter().filter(|k| **k == "mousemove").count();
        assert!(
            (100..=115).contains(&moves),
            "about 20 moves a second, got {moves}"
        );
        assert_eq!(kinds.iter().filter(|k| **k == "message").count(), 2);
        assert!(events.iter().all(|e| e.name.as_str() == "demobot"));
    }
}
