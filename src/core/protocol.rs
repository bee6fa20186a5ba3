//! The wire contract: what clients send, what the server sends back besides
//! log events, and the validation that turns raw input into domain values.
//!
//! Every transport parses client input through [`parse_client_message`], so
//! the same bytes get the same answer over HTTP and WebSocket. This module
//! knows nothing of actix.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::core::error::ApiError;
use crate::core::log::{Epoch, Event, Reader, Seq};
pub use crate::core::names::{MessageText, Name, MAX_NAME_CHARS, MAX_TEXT_CHARS};
pub use crate::core::presence::UserView;
pub use crate::core::signals::{Signal, SignalData, SignalKind};

/// The longest client-chosen message id, in characters.
pub const MAX_ID_CHARS: usize = 64;
/// The largest request body or WebSocket frame, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A client message as it arrives, before validation.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum RawClientMessage {
    Register {
        name: String,
        #[serde(default)]
        observer: bool,
    },
    Message {
        text: String,
        id: Option<String>,
    },
    Mousemove {
        x: f64,
        y: f64,
    },
    Leave {},
    Signal {
        to: String,
        kind: SignalKind,
        data: serde_json::Value,
    },
}

/// A validated client message, the same over every transport.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMessage {
    /// Asks to come online under a name.
    Register(Registration),
    /// A chat line, with the client's optional id for it.
    Message {
        /// The trimmed text.
        text: MessageText,
        /// Echoed back in the event.
        id: Option<String>,
    },
    /// The sender's cursor, as fractions of the shared canvas.
    Mousemove {
        /// In [0, 1].
        x: f64,
        /// In [0, 1].
        y: f64,
    },
    /// Ends the session at once.
    Leave,
    /// An SDP offer, answer or ICE candidate for another session of the
    /// room, passed on by the server and never logged (WebSocket only).
    Signal(Signal),
}

/// Parses and validates one client message from JSON bytes.
///
/// Malformed JSON is `bad_json`; JSON of the wrong shape or with a field out
/// of range is `bad_request`; the specific rules give `invalid_name` and
/// `too_large`.
pub fn parse_client_message(bytes: &[u8]) -> Result<ClientMessage, ApiError> {
    let raw: RawClientMessage = from_json(bytes)?;
    match raw {
        RawClientMessage::Register { name, observer } => {
            Ok(ClientMessage::Register(Registration {
                name: Name::parse(&name)?,
                observer,
            }))
        }
        RawClientMessage::Message { text, id } => {
            let text = MessageText::parse(&text)?;
            if let Some(id) = &id {
                if id.chars().count() > MAX_ID_CHARS {
                    return Err(ApiError::BadRequest(format!(
                        "id is longer than {MAX_ID_CHARS} characters"
                    )));
                }
            }
            Ok(ClientMessage::Message { text, id })
        }
        RawClientMessage::Mousemove { x, y } => {
            let in_range = |v: f64| v.is_finite() && (0.0..=1.0).contains(&v);
            if !in_range(x) || !in_range(y) {
                return Err(ApiError::BadRequest(
                    "x and y must be numbers in [0, 1]".into(),
                ));
            }
            Ok(ClientMessage::Mousemove { x, y })
        }
        RawClientMessage::Leave {} => Ok(ClientMessage::Leave),
        RawClientMessage::Signal { to, kind, data } => Ok(ClientMessage::Signal(Signal {
            to: Name::parse(&to).map_err(|_| {
                ApiError::UnknownTarget(to.chars().take(MAX_NAME_CHARS + 1).collect())
            })?,
            kind,
            data: SignalData::parse(&data)?,
        })),
    }
}

/// What a registration asks for: a name, and whether the session is an
/// observer.
#[derive(Debug, Clone, PartialEq)]
pub struct Registration {
    /// The name to come online under.
    pub name: Name,
    /// An observer (`"observer": true`) is a page's own helper, such as the
    /// compare page's bot: it may read and send like any user, its `join`
    /// says `"observer": true`, and it is left out of who is online
    /// (`users` and `online` in welcomes, `/rooms` and `/stats`).
    pub observer: bool,
}

impl From<Name> for Registration {
    /// A user who counts as online.
    fn from(name: Name) -> Self {
        Registration {
            name,
            observer: false,
        }
    }
}

/// Parses the body of `POST /register`: `{"name": ...}`, with an optional
/// `"type": "register"` so the same object works over every transport, and
/// an optional `"observer": true`.
pub fn parse_register_request(bytes: &[u8]) -> Result<Registration, ApiError> {
    #[derive(Deserialize)]
    struct RegisterRequest {
        name: String,
        #[serde(rename = "type")]
        kind: Option<String>,
        #[serde(default)]
        observer: bool,
    }
    let request: RegisterRequest = from_json(bytes)?;
    if request
        .kind
        .as_deref()
        .is_some_and(|kind| kind != "register")
    {
        return Err(ApiError::BadRequest(
            "POST /register takes a register message".into(),
        ));
    }
    Ok(Registration {
        name: Name::parse(&request.name)?,
        observer: request.observer,
    })
}

/// Deserialises JSON, telling malformed JSON (`bad_json`) from JSON of the
/// wrong shape (`bad_request`).
fn from_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.len() > MAX_BODY_BYTES {
        return Err(ApiError::TooLarge(format!(
            "the message is {} bytes; the limit is {MAX_BODY_BYTES}",
            bytes.len()
        )));
    }
    serde_json::from_slice(bytes).map_err(|err| {
        use serde_json::error::Category;
        match err.classify() {
            Category::Syntax | Category::Eof | Category::Io => {
                ApiError::BadJson(format!("the body is not valid JSON: {err}"))
            }
            // serde can reject the shape before it reaches a syntax error
            // further on, so check the syntax before blaming the shape.
            Category::Data => match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
                Err(syntax) => ApiError::BadJson(format!("the body is not valid JSON: {syntax}")),
                Ok(_) => ApiError::BadRequest(describe_shape_error(&err)),
            },
        }
    })
}

fn describe_shape_error(err: &serde_json::Error) -> String {
    let text = err.to_string();
    // serde's messages are clear, but they end with a position that means
    // little to a client sending one small object.
    let text = text.split(" at line ").next().unwrap_or(&text);
    format!("not a valid client message: {text}; expected an object with \"type\" one of register, message, mousemove, leave, signal")
}

/// The answer to a registration, over `POST /register` or as a WebSocket
/// `welcome`.
#[derive(Debug, Clone, Serialize)]
pub struct Welcome {
    /// The session id, a random v4 UUID: the only credential.
    pub session: uuid::Uuid,
    /// The name as registered.
    pub name: Name,
    /// The log's epoch, to send back with the cursor.
    pub epoch: Epoch,
    /// The seq of this user's own join: read from here on.
    pub cursor: Seq,
    /// The last chat messages, oldest first.
    pub history: Vec<Arc<Event>>,
    /// Who is online, this user included: everyone, or the first
    /// [`crate::core::directory::WELCOME_USERS`] by name when more are.
    pub users: Vec<UserView>,
    /// How many users are online in all.
    pub online: usize,
}

/// Messages from the server that are not log events. They never carry `seq`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Control {
    /// Sent on a WebSocket after `register`, with the registration's fields.
    Welcome(Welcome),
    /// A rejected client message; the connection stays open.
    Error {
        /// The machine-readable code.
        code: &'static str,
        /// A sentence for humans.
        error: String,
        /// The `id` of the chat message that was refused, if it had one.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// The target of the signal that was refused.
        #[serde(skip_serializing_if = "Option::is_none")]
        to: Option<Name>,
    },
    /// Events after the reader's cursor are gone; what follows starts at the
    /// oldest event still kept. The client should reload its state.
    Gap {
        /// The log's current epoch.
        epoch: Epoch,
        /// The seq just before the first event that follows.
        cursor: Seq,
    },
    /// Sent first on a stream so an observer learns the epoch and where the
    /// stream starts.
    Hello {
        /// The log's epoch.
        epoch: Epoch,
        /// The stream delivers the events after this seq.
        cursor: Seq,
    },
}

impl Control {
    /// The `hello` a stream opens with: the reader's epoch and cursor.
    pub fn hello(reader: &Reader) -> Control {
        Control::Hello {
            epoch: reader.epoch(),
            cursor: reader.cursor(),
        }
    }

    /// The `gap` a stream sends when a read reports one at `cursor`.
    pub fn gap(reader: &Reader, cursor: Seq) -> Control {
        Control::Gap {
            epoch: reader.epoch(),
            cursor,
        }
    }

    /// The control message as JSON text.
    pub fn to_json(&self) -> String {
        // Only strings, integers and finite numbers: serialisation cannot fail.
        serde_json::to_string(self).expect("a control message always serialises")
    }
}

impl From<&ApiError> for Control {
    fn from(err: &ApiError) -> Self {
        Control::Error {
            code: err.code(),
            error: err.to_string(),
            id: None,
            to: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(bytes: &str) -> &'static str {
        parse_client_message(bytes.as_bytes()).unwrap_err().code()
    }

    #[test]
    fn client_messages_parse_over_one_shape() {
        assert_eq!(
            parse_client_message(br#"{"type":"mousemove","x":0,"y":1}"#).unwrap(),
            ClientMessage::Mousemove { x: 0.0, y: 1.0 }
        );
        assert_eq!(
            parse_client_message(br#"{"type":"leave"}"#).unwrap(),
            ClientMessage::Leave
        );
        assert!(matches!(
            parse_client_message(br#"{"type":"message","text":"hi","id":"m-1"}"#).unwrap(),
            ClientMessage::Message { id: Some(id), .. } if id == "m-1"
        ));
    }

    #[test]
    fn bad_input_gets_the_right_code() {
        assert_eq!(code("{"), "bad_json");
        assert_eq!(code(""), "bad_json");
        assert_eq!(code("[1,2"), "bad_json");
        assert_eq!(code("[]"), "bad_request");
        assert_eq!(code("42"), "bad_request");
        assert_eq!(code(r#"{"type":"dance"}"#), "bad_request");
        assert_eq!(code(r#"{"text":"no type"}"#), "bad_request");
        assert_eq!(code(r#"{"type":"message"}"#), "bad_request");
        assert_eq!(code(r#"{"type":"message","text":5}"#), "bad_request");
        assert_eq!(code(r#"{"type":"mousemove","x":1.5,"y":0}"#), "bad_request");
        assert_eq!(
            code(r#"{"type":"mousemove","x":-0.1,"y":0}"#),
            "bad_request"
        );
        assert_eq!(code(r#"{"type":"mousemove","x":"a","y":0}"#), "bad_request");
        assert_eq!(
            code(r#"{"type":"register","name":"9lives"}"#),
            "invalid_name"
        );
        let long_id = format!(
            r#"{{"type":"message","text":"hi","id":"{}"}}"#,
            "i".repeat(65)
        );
        assert_eq!(code(&long_id), "bad_request");
        let long_text = format!(r#"{{"type":"message","text":"{}"}}"#, "t".repeat(2001));
        assert_eq!(code(&long_text), "too_large");
        let huge = format!(
            r#"{{"type":"message","text":"{}"}}"#,
            " ".repeat(MAX_BODY_BYTES)
        );
        assert_eq!(code(&huge), "too_large");
    }

    #[test]
    fn signals_parse_with_a_target_name_a_kind_and_data() {
        let parsed = parse_client_message(
            br#"{"type":"signal","to":"bob","kind":"candidate","data":{"candidate":"c"}}"#,
        )
        .unwrap();
        let ClientMessage::Signal(signal) = parsed else {
            panic!("a signal")
        };
        assert_eq!(signal.to.as_str(), "bob");
        assert_eq!(signal.kind, SignalKind::Candidate);
        assert_eq!(signal.data.get(), r#"{"candidate":"c"}"#);
        assert_eq!(
            code(r#"{"type":"signal","to":"bob","kind":"hug","data":1}"#),
            "bad_request"
        );
        assert_eq!(
            code(r#"{"type":"signal","to":"bob","kind":"offer"}"#),
            "bad_request"
        );
        assert_eq!(
            code(r#"{"type":"signal","to":"9 lives","kind":"offer","data":"x"}"#),
            "unknown_target"
        );
    }

    #[test]
    fn register_requests_take_a_name_and_an_optional_type() {
        assert_eq!(
            parse_register_request(br#"{"name":"ann"}"#).unwrap(),
            Registration {
                name: Name::parse("ann").unwrap(),
                observer: false
            }
        );
        assert!(
            parse_register_request(br#"{"name":"bot-k3x9","observer":true}"#)
                .unwrap()
                .observer
        );
        let ClientMessage::Register(over_ws) =
            parse_client_message(br#"{"type":"register","name":"w","observer":true}"#).unwrap()
        else {
            panic!("a register message")
        };
        assert!(over_ws.observer);
        assert!(parse_register_request(br#"{"type":"register","name":"ann"}"#).is_ok());
        let code = |b: &str| parse_register_request(b.as_bytes()).unwrap_err().code();
        assert_eq!(code(r#"{"type":"message","name":"ann"}"#), "bad_request");
        assert_eq!(code(r#"{"name":""}"#), "invalid_name");
        assert_eq!(code(r#"{}"#), "bad_request");
        assert_eq!(code(r#"{"name":"#), "bad_json");
    }

    #[test]
    fn control_messages_carry_no_seq() {
        let json = Control::Gap {
            epoch: Epoch::from_string("e".into()),
            cursor: 4,
        }
        .to_json();
        assert_eq!(json, r#"{"type":"gap","epoch":"e","cursor":4}"#);
        let err = ApiError::RateLimited;
        let json: serde_json::Value = serde_json::from_str(&Control::from(&err).to_json()).unwrap();
        assert_eq!(json["type"], "error");
        assert_eq!(json["code"], "rate_limited");
        assert!(json.get("seq").is_none());
    }
}
