//! Property tests: any client input gets the right answer and never panics,
//! and any interleaving of appends and reads gives every reader one order.

use std::sync::Arc;

use proptest::prelude::*;
use pushlab::log::{EventBody, EventLog as _, MemoryLog};
use pushlab::protocol::{parse_client_message, ClientMessage, Name};
use pushlab::room::Room;
use serde_json::{json, Value};

/// A client message as a generator sees it: any type, any field values.
#[derive(Debug, Clone)]
enum Candidate {
    Register { name: String },
    Message { text: String, id: Option<String> },
    Mousemove { x: f64, y: f64 },
    Leave,
    Unknown { kind: String },
    MissingField { kind: &'static str },
}

impl Candidate {
    fn to_json(&self) -> Value {
        match self {
            Candidate::Register { name } => json!({"type": "register", "name": name}),
            Candidate::Message { text, id: Some(id) } => {
                json!({"type": "message", "text": text, "id": id})
            }
            Candidate::Message { text, id: None } => json!({"type": "message", "text": text}),
            Candidate::Mousemove { x, y } => json!({"type": "mousemove", "x": x, "y": y}),
            Candidate::Leave => json!({"type": "leave"}),
            Candidate::Unknown { kind } => json!({"type": kind}),
            Candidate::MissingField { kind } => json!({"type": kind}),
        }
    }

    /// What the contract says the answer must be: `Ok` or the error code.
    fn expected(&self) -> Result<(), &'static str> {
        match self {
            Candidate::Register { name } => {
                let mut chars = name.chars();
                let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
                let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                if first_ok && rest_ok && name.chars().count() <= 24 {
                    Ok(())
                } else {
                    Err("invalid_name")
                }
            }
            Candidate::Message { text, id } => {
                let trimmed = text.trim();
                if trimmed.is_empty() {
                    Err("bad_request")
                } else if trimmed.chars().count() > 2000 {
                    Err("too_large")
                } else if id.as_ref().is_some_and(|id| id.chars().count() > 64) {
                    Err("bad_request")
                } else {
                    Ok(())
                }
            }
            Candidate::Mousemove { x, y } => {
                let ok = |v: &f64| v.is_finite() && (0.0..=1.0).contains(v);
                if ok(x) && ok(y) {
                    Ok(())
                } else {
                    Err("bad_request")
                }
            }
            Candidate::Leave => Ok(()),
            Candidate::Unknown { .. } | Candidate::MissingField { .. } => Err("bad_request"),
        }
    }
}

fn coordinate() -> impl Strategy<Value = f64> {
    prop_oneof![
        0.0..=1.0f64,
        -10.0..10.0f64,
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(1.0000001)
    ]
}

fn candidate() -> impl Strategy<Value = Candidate> {
    prop_oneof![
        prop_oneof!["[A-Za-z][A-Za-z0-9_-]{0,30}", "\\PC{0,30}", "[0-9_-].{0,5}"]
            .prop_map(|name| Candidate::Register { name }),
        (
            prop_oneof![
                "\\PC{0,50}",
                "\\s{0,5}",
                "x{1995,2005}",
                " {0,3}é{1998,2002} {0,3}"
            ],
            proptest::option::of(prop_oneof!["[a-z0-9]{0,64}", "[a-z]{65,70}"])
        )
            .prop_map(|(text, id)| Candidate::Message { text, id }),
        (coordinate(), coordinate()).prop_map(|(x, y)| Candidate::Mousemove { x, y }),
        Just(Candidate::Leave),
        "[a-z]{1,10}"
            .prop_filter("not a known type", |k| ![
                "register",
                "message",
                "mousemove",
                "leave"
            ]
            .contains(&k.as_str()))
            .prop_map(|kind| Candidate::Unknown { kind }),
        prop_oneof![Just("register"), Just("message"), Just("mousemove")]
            .prop_map(|kind| Candidate::MissingField { kind }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_client_message_gets_the_contracted_answer(candidate in candidate()) {
        let bytes = serde_json::to_vec(&candidate.to_json()).unwrap();
        let got = parse_client_message(&bytes).map(|_| ()).map_err(|e| e.code());
        prop_assert_eq!(got, candidate.expected(), "{}", String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn any_bytes_get_an_answer_and_never_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        match parse_client_message(&bytes) {
            Ok(_) => prop_assert!(serde_json::from_slice::<Value>(&bytes).is_ok()),
            Err(err) => {
                let is_json = serde_json::from_slice::<Value>(&bytes).is_ok();
                prop_assert_eq!(err.code() == "bad_json", !is_json, "{}", err.code());
            }
        }
    }

    #[test]
    fn any_sequence_of_messages_keeps_the_session_rules(
        candidates in proptest::collection::vec(candidate(), 1..40),
        rate in prop_oneof![Just(0u32), 1u32..5],
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
        runtime.block_on(async {
            let room = Room::new(Arc::new(MemoryLog::new(1000)), rate);
            let session = room.register(Name::parse("prop").unwrap()).await.unwrap().session;
            let mut left = false;
            let mut spent = 0u32;
            let mut last_seq = room.log().head();
            // Fewer than 40 messages: every id sent is still remembered.
            let mut sent_ids = std::collections::HashMap::new();
            for candidate in &candidates {
                let bytes = serde_json::to_vec(&candidate.to_json()).unwrap();
                let answer = match parse_client_message(&bytes) {
                    Err(err) => Err(err.code()),
                    Ok(message) => room.submit(session, message.clone()).await.map_err(|e| e.code()).map(|seq| (seq, message)),
                };
                match (answer, candidate.expected()) {
                    (Err(code), Err(expected)) => prop_assert_eq!(code, expected),
                    (Err(code), Ok(())) => {
                        // A session never registers again, whatever its state.
                        let allowed: &[&str] = if matches!(candidate, Candidate::Register { .. }) {
                            &["bad_request"]
                        } else if left {
                            &["unknown_session"]
                        } else {
                            &["rate_limited"]
                        };
                        prop_assert!(allowed.contains(&code), "{code} after {candidate:?}, left={left}");
                        if code == "rate_limited" {
                            prop_assert!(rate > 0 && spent >= 2 * rate);
                        }
                    }
                    (Ok((seq, message)), Ok(())) => {
                        prop_assert!(!left, "accepted after leave");
                        let id = match &message {
                            ClientMessage::Message { id: Some(id), .. } if !id.is_empty() => Some(id.clone()),
                            _ => None,
                        };
                        if let Some(first) = id.as_ref().and_then(|id| sent_ids.get(id)) {
                            prop_assert_eq!(seq, *first, "an id sent again answers its first seq");
                            continue;
                        }
                        prop_assert_eq!(seq, last_seq + 1, "one event, the next seq");
                        if let Some(id) = id {
                            sent_ids.insert(id, seq);
                        }
                        last_seq = seq;
                        if message == ClientMessage::Leave {
                            left = true;
                        } else {
                            spent += 1;
                        }
                    }
                    (Ok(_), Err(expected)) => prop_assert!(false, "accepted, expected {expected}"),
                }
            }
            prop_assert_eq!(room.log().head(), last_seq);
            Ok(())
        })?;
    }

    #[test]
    fn concurrent_appends_and_reads_give_every_reader_one_gap_free_order(
        writers in proptest::collection::vec(1usize..60, 1..6),
        readers in 1usize..5,
    ) {
        let log = MemoryLog::new(100_000);
        let total: usize = writers.iter().sum();
        std::thread::scope(|scope| {
            let reading: Vec<_> = (0..readers)
                .map(|_| {
                    let log = log.clone();
                    scope.spawn(move || {
                        let mut seen = Vec::new();
                        let mut cursor = 0;
                        while seen.len() < total {
                            let batch = log.read_since(cursor, None);
                            assert!(!batch.gap);
                            seen.extend(batch.events.iter().map(|e| (e.seq, e.name.to_string(), e.body.clone())));
                            cursor = batch.cursor;
                            std::thread::yield_now();
                        }
                        seen
                    })
                })
                .collect();
            for (w, count) in writers.iter().enumerate() {
                let log = log.clone();
                scope.spawn(move || {
                    let name = Name::parse(&format!("w{w}")).unwrap();
                    for i in 0..*count {
                        log.append_now(name.clone(), EventBody::Message { text: i.to_string(), id: None }).unwrap();
                    }
                });
            }
            let orders: Vec<_> = reading.into_iter().map(|r| r.join().unwrap()).collect();
            for order in &orders {
                let seqs: Vec<u64> = order.iter().map(|(seq, _, _)| *seq).collect();
                assert_eq!(seqs, (1..=total as u64).collect::<Vec<_>>());
                assert_eq!(order, &orders[0]);
            }
            for (w, count) in writers.iter().enumerate() {
                let mine: Vec<String> = orders[0]
                    .iter()
                    .filter(|(_, name, _)| *name == format!("w{w}"))
                    .map(|(_, _, body)| match body {
                        EventBody::Message { text, .. } => text.clone(),
                        _ => unreachable!("only messages were appended"),
                    })
                    .collect();
                assert_eq!(mine, (0..*count).map(|i| i.to_string()).collect::<Vec<_>>());
            }
        });
    }
}
