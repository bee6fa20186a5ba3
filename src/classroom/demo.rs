//! The demo bot (`--demo`): a named user that moves its cursor along a
//! figure-of-eight at a steady rate and says a line every few seconds, so the
//! transports can be compared without a second person at the keyboard.
//!
//! It goes through [`Room`] like any client, so it is rate-limited, shows in
//! presence and leaves when the server stops.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::core::error::ApiError;
use crate::core::names::{MessageText, Name};
use crate::core::protocol::ClientMessage;
use crate::core::room::Room;

/// What the bot says, in turn.
const LINES: &[&str] = &[
    "Hello! I move my cursor many times a second. Watch how each transport keeps up.",
    "Short polling only sees my moves once per interval: the dot jumps.",
    "Long polling answers as soon as I move, then the browser asks again.",
    "Server-Sent Events keep one response open and stream every move.",
    "WebSocket frames are a few bytes each: compare the bytes per event.",
];

/// About how often the bot says something instead of moving.
const CHAT_EVERY_SECONDS: u32 = 5;

/// Starts the bot. It publishes `rate` events a second (a chat line instead
/// of a move every [`CHAT_EVERY_SECONDS`]), and follows every change of
/// `rate` at once (`POST /demo`): at 0 it leaves the room, and a rate above
/// 0 brings it back under its name.
pub fn spawn(
    room: Room,
    mut rate: watch::Receiver<u32>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let started = Instant::now();
        let mut session = None;
        let mut step: u64 = 0;
        let mut line = 0;
        'rates: loop {
            let per_second = *rate.borrow_and_update();
            if per_second == 0 {
                if let Some(gone) = session.take() {
                    room.end(gone).await;
                }
                tokio::select! {
                    _ = stop.cancelled() => break 'rates,
                    changed = rate.changed() => if changed.is_err() { break 'rates },
                }
                continue;
            }
            let joined = match session {
                Some(joined) => joined,
                None => match join(&room).await {
                    Some(joined) => *session.insert(joined),
                    None => {
                        tracing::warn!("the demo bot could not find a free name");
                        return;
                    }
                },
            };
            // A tick missed on a busy machine is made up at once, so the
            // rate holds over any second, as the compare page measures it.
            let mut ticks = tokio::time::interval(Duration::from_secs(1) / per_second);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let chat_every = u64::from((per_second * CHAT_EVERY_SECONDS).max(2));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break 'rates,
                    changed = rate.changed() => {
                        if changed.is_err() { break 'rates }
                        continue 'rates;
                    }
                    _ = ticks.tick() => {}
                }
                step += 1;
                let message = if step.is_multiple_of(chat_every) {
                    line = (line + 1) % LINES.len();
                    let text = MessageText::parse(LINES[line]).expect("the bot's lines are valid");
                    ClientMessage::Message { text, id: None }
                } else {
                    let (x, y) = figure_of_eight(started.elapsed().as_secs_f64());
                    ClientMessage::Mousemove { x, y }
                };
                match room.submit(joined, message).await {
                    // Making up many missed ticks at once can pass the
                    // rate limit's burst: those few are dropped.
                    Ok(_) | Err(ApiError::RateLimited) => {}
                    Err(err) => {
                        tracing::warn!(%err, "the demo bot was refused; it stops");
                        return;
                    }
                }
            }
        }
        if let Some(joined) = session {
            room.end(joined).await;
        }
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

    /// The kinds of the room's events, in order.
    fn kinds(room: &Room) -> Vec<&'static str> {
        let events = room.log().read_since(0, None).events;
        events.iter().map(|e| e.body.kind()).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn the_bot_joins_publishes_its_rate_with_a_line_now_and_then_and_leaves() {
        let room = Room::new(Arc::new(MemoryLog::new(10_000)), 60);
        let stop = CancellationToken::new();
        let (_rate, watched) = watch::channel(20);
        let bot = spawn(room.clone(), watched, stop.clone());
        tokio::time::sleep(Duration::from_millis(5990)).await;
        stop.cancel();
        bot.await.unwrap();
        let kinds = kinds(&room);
        assert_eq!(kinds.first(), Some(&"join"));
        assert_eq!(kinds.last(), Some(&"leave"));
        // 20 a second for 6 s, the first at once: a line is one of them.
        assert_eq!(kinds.len() - 2, 120, "{kinds:?}");
        assert_eq!(kinds.iter().filter(|k| **k == "message").count(), 1);
        let events = room.log().read_since(0, None).events;
        assert!(events.iter().all(|e| e.name.as_str() == "demobot"));
    }

    #[tokio::test(start_paused = true)]
    async fn the_bot_follows_a_new_rate_at_once_and_leaves_at_zero() {
        let room = Room::new(Arc::new(MemoryLog::new(10_000)), 60);
        let stop = CancellationToken::new();
        let (rate, watched) = watch::channel(1);
        let bot = spawn(room.clone(), watched, stop.clone());
        tokio::time::sleep(Duration::from_millis(1500)).await;
        // join, then a move at 0 s and at 1 s
        assert_eq!(kinds(&room).len(), 3);

        rate.send_replace(50);
        tokio::time::sleep(Duration::from_millis(1990)).await;
        let at_fifty = kinds(&room).len() - 3;
        assert_eq!(at_fifty, 100, "50 a second for 2 s");

        rate.send_replace(0);
        tokio::time::sleep(Duration::from_millis(10)).await;
        let idle = kinds(&room);
        assert_eq!(idle.last(), Some(&"leave"), "idle: the bot leaves");
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(kinds(&room).len(), idle.len(), "and publishes nothing");

        rate.send_replace(5);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(&kinds(&room)[idle.len()..], ["join", "mousemove"]);
        stop.cancel();
        bot.await.unwrap();
    }
}
