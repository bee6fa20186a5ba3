//! Feeds arbitrary bytes to the client-message parser and validator, the
//! first code every byte from a client reaches on every transport.
//!
//! Beyond "never panics", it checks that whatever is accepted obeys the
//! contract, and that whatever is refused gets a code from the contract.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pushlab::protocol::{parse_client_message, parse_register_request, ClientMessage, Name, MAX_TEXT_CHARS};

const CODES: &[&str] = &["bad_json", "bad_request", "invalid_name", "too_large"];

fuzz_target!(|data: &[u8]| {
    match parse_client_message(data) {
        Ok(ClientMessage::Register(name)) => assert!(Name::parse(name.as_str()).is_ok()),
        Ok(ClientMessage::Message { text, id }) => {
            let text = text.into_string();
            assert_eq!(text.trim(), text, "text is stored trimmed");
            assert!((1..=MAX_TEXT_CHARS).contains(&text.chars().count()));
            assert!(id.is_none_or(|id| id.chars().count() <= 64));
        }
        Ok(ClientMessage::Mousemove { x, y }) => {
            assert!((0.0..=1.0).contains(&x) && (0.0..=1.0).contains(&y));
        }
        Ok(ClientMessage::Leave) => {}
        Ok(ClientMessage::Signal(signal)) => {
            assert!(Name::parse(signal.to.as_str()).is_ok());
            assert!(signal.data.get().len() <= pushlab::signals::MAX_SIGNAL_BYTES);
        }
        Err(err) => {
            assert!(CODES.contains(&err.code()), "unexpected code {}", err.code());
            if err.code() == "bad_json" {
                assert!(serde_json::from_slice::<serde_json::Value>(data).is_err());
            }
        }
    }
    if let Err(err) = parse_register_request(data) {
        assert!(CODES.contains(&err.code()), "unexpected code {}", err.code());
    }
});
