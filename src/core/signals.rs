//! The signal hub: how two sessions of one room that want to talk peer to
//! peer (WebRTC) pass each other their SDP offers, answers and ICE
//! candidates through the server.
//!
//! The server is only the introducer. A signal goes from one live session to
//! one other live session of the same room, over the sockets that asked to
//! take signals, and nowhere else: it is never written to the log, never
//! replayed, and a socket that opens later never sees it. Each room has one
//! hub per node; it knows which of its sessions listen here and keeps, per
//! session, a rate limit and, per socket, a bounded queue. A signal for a
//! session that listens on another node goes through the room's
//! [`crate::core::directory::Directory`]. The hub knows nothing of HTTP or of
//! sockets: a socket holds an [`Inbox`] and forwards what arrives in it.

use std::collections::HashMap;
use std::sync::Arc;

use bytestring::ByteString;
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::core::error::ApiError;
use crate::core::names::Name;
use crate::core::names::SessionId;

/// The most bytes a signal's `data` may take: a data-channel offer is under
/// 1 KiB, one with audio and video a few KiB.
pub const MAX_SIGNAL_BYTES: usize = 16 * 1024;

/// Signals each socket may have waiting to be written; past it, signals to
/// that socket are refused with `target_busy` until it reads.
pub const SIGNAL_QUEUE: usize = 64;

/// What a signal carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignalKind {
    /// An SDP offer.
    Offer,
    /// An SDP answer.
    Answer,
    /// One ICE candidate.
    Candidate,
}

/// A signal's payload: any JSON value, passed through as the sender wrote
/// it, at most [`MAX_SIGNAL_BYTES`].
#[derive(Debug, Clone)]
pub struct SignalData(Box<RawValue>);

impl SignalData {
    /// Takes a signal's `data`, or refuses it as missing or too large.
    pub fn parse(value: &serde_json::Value) -> Result<SignalData, ApiError> {
        if value.is_null() {
            return Err(ApiError::BadRequest("a signal needs its data".into()));
        }
        // Any JSON value serialises.
        let raw = serde_json::value::to_raw_value(value).expect("a JSON value serialises");
        let len = raw.get().len();
        if len > MAX_SIGNAL_BYTES {
            return Err(ApiError::TooLarge(format!(
                "the signal's data is {len} bytes; the limit is {MAX_SIGNAL_BYTES}"
            )));
        }
        Ok(SignalData(raw))
    }

    /// The JSON text.
    pub fn get(&self) -> &str {
        self.0.get()
    }
}

impl PartialEq for SignalData {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

/// A signal as a client sends it: to whom (by name: a session id is a
/// credential and is never shown to others), what kind, and its data.
#[derive(Debug, Clone, PartialEq)]
pub struct Signal {
    /// The name of the session it is for.
    pub to: Name,
    /// What it carries.
    pub kind: SignalKind,
    /// The SDP or candidate.
    pub data: SignalData,
}

/// A signal as its target receives it.
#[derive(Serialize)]
struct Delivered<'a> {
    #[serde(rename = "type")]
    kind_of_message: &'static str,
    from: &'a Name,
    kind: SignalKind,
    data: &'a RawValue,
}

/// One room's signal hub. Cheap to clone; every clone is the same hub.
#[derive(Clone)]
pub struct SignalHub {
    shared: Arc<Mutex<HashMap<SessionId, Listener>>>,
    /// Signals a second each session may send, with bursts of twice that;
    /// 0 for no limit.
    rate: u32,
}

/// A session that takes signals: its open inboxes and its allowance.
///
/// The allowance belongs to the session, not to a socket: an entry whose
/// last inbox closed stays until its allowance has refilled, so reopening
/// the signals socket never buys a fresh burst. A refilled allowance is the
/// same as a new one, so such an entry is dropped then (see
/// [`SignalHub::listen`]), and the map holds at most the sessions that
/// listen or have spent signals in the last two seconds.
struct Listener {
    inboxes: Vec<(u64, mpsc::Sender<ByteString>)>,
    /// Numbers the inboxes, so each one can find itself to leave.
    next_inbox: u64,
    tokens: f64,
    refilled: Instant,
}

impl Listener {
    /// Whether it has no inbox and an allowance as full as a new one's, so
    /// forgetting it changes nothing.
    fn is_spent_out(&self, rate: u32, now: Instant) -> bool {
        let burst = f64::from(rate) * 2.0;
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.inboxes.is_empty() && (rate == 0 || self.tokens + elapsed * f64::from(rate) >= burst)
    }
}

/// Where a socket receives the signals for its session, until it is
/// dropped.
pub struct Inbox {
    hub: SignalHub,
    session: SessionId,
    id: u64,
    receiver: mpsc::Receiver<ByteString>,
}

impl Inbox {
    /// The next signal for this socket, as the JSON text to write.
    pub async fn recv(&mut self) -> Option<ByteString> {
        self.receiver.recv().await
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        let mut listeners = self.hub.shared.lock();
        if let Some(listener) = listeners.get_mut(&self.session) {
            listener.inboxes.retain(|(id, _)| *id != self.id);
            if listener.is_spent_out(self.hub.rate, Instant::now()) {
                listeners.remove(&self.session);
            }
        }
    }
}

impl SignalHub {
    /// A hub where each session may send `rate` signals a second, with
    /// bursts of twice that (0 for no limit).
    pub fn new(rate: u32) -> Self {
        SignalHub {
            shared: Arc::default(),
            rate,
        }
    }

    /// Starts taking signals for `session` on one more socket.
    pub fn listen(&self, session: SessionId) -> Inbox {
        let (sender, receiver) = mpsc::channel(SIGNAL_QUEUE);
        let mut listeners = self.shared.lock();
        // Forget the sessions whose sockets all closed once their allowance
        // has refilled: they would start afresh anyway.
        let now = Instant::now();
        listeners.retain(|_, listener| !listener.is_spent_out(self.rate, now));
        let listener = listeners.entry(session).or_insert_with(|| Listener {
            inboxes: Vec::new(),
            next_inbox: 0,
            tokens: self.burst(),
            refilled: Instant::now(),
        });
        let id = listener.next_inbox;
        listener.next_inbox += 1;
        listener.inboxes.push((id, sender));
        Inbox {
            hub: self.clone(),
            session,
            id,
            receiver,
        }
    }

    /// Whether `session` has a socket that takes signals.
    pub fn is_listening(&self, session: SessionId) -> bool {
        self.shared
            .lock()
            .get(&session)
            .is_some_and(|listener| !listener.inboxes.is_empty())
    }

    fn burst(&self) -> f64 {
        f64::from(self.rate) * 2.0
    }

    /// Passes `signal` from `from` (named `from_name`) to `to`, the live
    /// session its target name belongs to, on every socket of `to` that
    /// takes signals. The sender must itself listen, so the answer can come
    /// back; it pays one token of its rate limit for every attempt.
    pub fn relay(
        &self,
        from: SessionId,
        from_name: &Name,
        to: SessionId,
        signal: &Signal,
    ) -> Result<(), ApiError> {
        self.charge(from)?;
        self.deliver(to, &signal.to, frame(from_name, signal))
    }

    /// Takes one signal from `from`'s rate limit; refuses a sender whose
    /// socket does not take signals, which could never get an answer.
    pub fn charge(&self, from: SessionId) -> Result<(), ApiError> {
        let mut listeners = self.shared.lock();
        let Some(sender) = listeners.get_mut(&from).filter(|l| !l.inboxes.is_empty()) else {
            return Err(ApiError::BadRequest(
                "this socket does not take signals; open it with signals=true to send them".into(),
            ));
        };
        if self.rate > 0 {
            let now = Instant::now();
            let elapsed = now.saturating_duration_since(sender.refilled).as_secs_f64();
            sender.tokens = (sender.tokens + elapsed * f64::from(self.rate)).min(self.burst());
            sender.refilled = now;
            if sender.tokens < 1.0 {
                return Err(ApiError::RateLimited);
            }
            sender.tokens -= 1.0;
        }
        Ok(())
    }

    /// Puts a signal's `frame` in every inbox of `to` (named `name`).
    pub fn deliver(&self, to: SessionId, name: &Name, frame: ByteString) -> Result<(), ApiError> {
        let listeners = self.shared.lock();
        let Some(target) = listeners.get(&to).filter(|l| !l.inboxes.is_empty()) else {
            return Err(ApiError::TargetNotListening(name.to_string()));
        };
        let mut delivered = false;
        for (_, inbox) in &target.inboxes {
            delivered |= inbox.try_send(frame.clone()).is_ok();
        }
        if delivered {
            Ok(())
        } else {
            Err(ApiError::TargetBusy(name.to_string()))
        }
    }
}

/// `signal` from `from_name` as its target receives it.
pub fn frame(from_name: &Name, signal: &Signal) -> ByteString {
    let frame = serde_json::to_string(&Delivered {
        kind_of_message: "signal",
        from: from_name,
        kind: signal.kind,
        data: &signal.data.0,
    })
    // A name, a kind and JSON that already parsed: it always serialises.
    .expect("a signal always serialises");
    ByteString::from(frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signal(to: &str) -> Signal {
        Signal {
            to: Name::parse(to).unwrap(),
            kind: SignalKind::Offer,
            data: SignalData::parse(&serde_json::json!("v=0")).unwrap(),
        }
    }

    fn ids() -> (SessionId, SessionId) {
        (uuid::Uuid::new_v4(), uuid::Uuid::new_v4())
    }

    #[tokio::test]
    async fn a_signal_reaches_every_socket_of_its_target_and_no_other() {
        let hub = SignalHub::new(0);
        let (ann, bob) = ids();
        let _ann_inbox = hub.listen(ann);
        let mut bob_one = hub.listen(bob);
        let mut bob_two = hub.listen(bob);

        hub.relay(ann, &Name::parse("ann").unwrap(), bob, &signal("bob"))
            .unwrap();

        let expected = r#"{"type":"signal","from":"ann","kind":"offer","data":"v=0"}"#;
        assert_eq!(&*bob_one.recv().await.unwrap(), expected);
        assert_eq!(&*bob_two.recv().await.unwrap(), expected);
    }

    #[tokio::test]
    async fn a_target_that_stopped_listening_is_refused() {
        let hub = SignalHub::new(0);
        let (ann, bob) = ids();
        let _ann_inbox = hub.listen(ann);
        drop(hub.listen(bob));

        let refused = hub.relay(ann, &Name::parse("ann").unwrap(), bob, &signal("bob"));

        assert_eq!(refused.unwrap_err().code(), "target_not_listening");
        assert!(!hub.is_listening(bob));
    }

    #[tokio::test]
    async fn a_full_inbox_refuses_with_target_busy() {
        let hub = SignalHub::new(0);
        let (ann, bob) = ids();
        let _ann_inbox = hub.listen(ann);
        let _bob_inbox = hub.listen(bob);
        let name = Name::parse("ann").unwrap();
        for _ in 0..SIGNAL_QUEUE {
            hub.relay(ann, &name, bob, &signal("bob")).unwrap();
        }

        let refused = hub.relay(ann, &name, bob, &signal("bob"));

        assert_eq!(refused.unwrap_err().code(), "target_busy");
    }

    #[tokio::test(start_paused = true)]
    async fn each_sender_has_a_rate_limit_that_refills() {
        let hub = SignalHub::new(5);
        let (ann, bob) = ids();
        let _ann_inbox = hub.listen(ann);
        let mut bob_inbox = hub.listen(bob);
        let name = Name::parse("ann").unwrap();
        for _ in 0..10 {
            hub.relay(ann, &name, bob, &signal("bob")).unwrap();
        }

        let refused = hub.relay(ann, &name, bob, &signal("bob"));
        tokio::time::advance(std::time::Duration::from_millis(200)).await;
        let again = hub.relay(ann, &name, bob, &signal("bob"));

        assert_eq!(refused.unwrap_err().code(), "rate_limited");
        assert!(again.is_ok());
        assert!(bob_inbox.recv().await.is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn reopening_the_signals_socket_does_not_refill_the_allowance() {
        // Arrange: ann spends her whole burst on one socket.
        let hub = SignalHub::new(5);
        let (ann, bob) = ids();
        let _bob_inbox = hub.listen(bob);
        let name = Name::parse("ann").unwrap();
        let first = hub.listen(ann);
        for _ in 0..10 {
            hub.relay(ann, &name, bob, &signal("bob")).unwrap();
        }

        // Act: she closes it and opens another at once, many times.
        drop(first);
        let mut refused = 0;
        for _ in 0..20 {
            let again = hub.listen(ann);
            refused += usize::from(hub.relay(ann, &name, bob, &signal("bob")).is_err());
            drop(again);
        }

        // Assert: no new burst; only the refill over 200 ms would pass one.
        assert_eq!(refused, 20);
        tokio::time::advance(std::time::Duration::from_millis(200)).await;
        let _socket = hub.listen(ann);
        assert!(hub.relay(ann, &name, bob, &signal("bob")).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_whose_sockets_closed_is_forgotten_once_its_allowance_refilled() {
        let hub = SignalHub::new(5);
        let (ann, bob) = ids();
        let _bob_inbox = hub.listen(bob);
        let inbox = hub.listen(ann);
        hub.relay(ann, &Name::parse("ann").unwrap(), bob, &signal("bob"))
            .unwrap();
        drop(inbox);
        assert_eq!(hub.shared.lock().len(), 2, "kept while it refills");
        assert!(!hub.is_listening(ann));

        tokio::time::advance(std::time::Duration::from_secs(1)).await;
        let _carol = hub.listen(uuid::Uuid::new_v4());

        assert!(!hub.shared.lock().contains_key(&ann));
    }

    #[test]
    fn data_over_the_limit_is_too_large() {
        let big = serde_json::json!("a".repeat(MAX_SIGNAL_BYTES));
        assert_eq!(SignalData::parse(&big).unwrap_err().code(), "too_large");
        let null = serde_json::Value::Null;
        assert_eq!(SignalData::parse(&null).unwrap_err().code(), "bad_request");
    }
}
