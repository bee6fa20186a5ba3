//! The domain's small values: a user's [`Name`], a [`RoomName`] and a chat
//! [`MessageText`], each with the `parse` that is the only way to make one.
//!
//! Both the log (which stores names in events) and the protocol (which parses
//! client input) use these, so they live below both. Nothing here knows of
//! HTTP, sockets or the log.

use std::sync::Arc;

use serde::Serialize;

/// A session id: a random v4 UUID, the only credential a client holds.
pub type SessionId = uuid::Uuid;

use crate::core::error::ApiError;

/// The longest name, in characters.
pub const MAX_NAME_CHARS: usize = 24;
/// The longest chat text after trimming, in characters.
pub const MAX_TEXT_CHARS: usize = 2000;

/// A user's display name: 1–24 characters from `A–Z a–z 0–9 _ -`, starting
/// with a letter, so it is safe as an HTML id and in a CSS selector.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Name(Arc<str>);

impl Name {
    /// Checks a proposed name against the rules above.
    pub fn parse(raw: &str) -> Result<Name, ApiError> {
        let mut chars = raw.chars();
        let starts_with_letter = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
        let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !starts_with_letter || !rest_ok || raw.len() > MAX_NAME_CHARS {
            return Err(ApiError::InvalidName(format!(
                "a name is 1 to {MAX_NAME_CHARS} characters from A-Z a-z 0-9 _ -, starting with a letter"
            )));
        }
        Ok(Name(raw.into()))
    }

    /// The name as typed.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The form used to compare names: two names that differ only in case
    /// cannot be online at once.
    pub fn key(&self) -> String {
        self.0.to_ascii_lowercase()
    }
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A room's name: a user name's rule (1–24 characters from
/// `A–Z a–z 0–9 _ -`, starting with a letter), optionally after one `_`,
/// which marks a room as unlisted. Kept in lower case, so `Physics` and
/// `physics` are one room, and safe in URLs, file names and store keys.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct RoomName(Arc<str>);

impl RoomName {
    /// The room everyone is in unless they name another.
    pub const LOBBY: &'static str = "lobby";

    /// The lobby.
    pub fn lobby() -> RoomName {
        RoomName(Self::LOBBY.into())
    }

    /// Checks a proposed room name against the rules above.
    pub fn parse(raw: &str) -> Result<RoomName, ApiError> {
        let bare = raw.strip_prefix('_').unwrap_or(raw);
        if Name::parse(bare).is_err() {
            return Err(ApiError::InvalidRoom(format!(
                "a room name is 1 to {MAX_NAME_CHARS} characters from A-Z a-z 0-9 _ -, starting with a letter, optionally after one _ (unlisted)"
            )));
        }
        Ok(RoomName(raw.to_ascii_lowercase().into()))
    }

    /// The name as used everywhere: lower case.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `GET /rooms` lists the room: not when its name starts with `_`.
    pub fn is_listed(&self) -> bool {
        !self.0.starts_with('_')
    }
}

impl std::fmt::Display for RoomName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A chat message's text, trimmed, 1–2000 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageText(String);

impl MessageText {
    /// Trims and checks a chat text.
    pub fn parse(raw: &str) -> Result<MessageText, ApiError> {
        let text = raw.trim();
        if text.is_empty() {
            return Err(ApiError::BadRequest("text is empty".into()));
        }
        let chars = text.chars().count();
        if chars > MAX_TEXT_CHARS {
            return Err(ApiError::TooLarge(format!(
                "text is {chars} characters; the limit is {MAX_TEXT_CHARS}"
            )));
        }
        Ok(MessageText(text.to_owned()))
    }

    /// The text itself.
    pub fn into_string(self) -> String {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names_follow_the_name_rule_with_an_optional_unlisted_mark() {
        for (raw, name, listed) in [
            ("lobby", "lobby", true),
            ("Physics-2", "physics-2", true),
            ("_secret", "_secret", false),
        ] {
            let room = RoomName::parse(raw).unwrap();
            assert_eq!((room.as_str(), room.is_listed()), (name, listed), "{raw}");
        }
        for bad in [
            "",
            "_",
            "__a",
            "1a",
            "a b",
            "a/b",
            "..",
            "a.b",
            &"r".repeat(25),
        ] {
            assert_eq!(
                RoomName::parse(bad).unwrap_err().code(),
                "invalid_room",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn names_follow_the_rules() {
        for ok in ["a", "Alice", "bob_2", "x-y", "A23456789012345678901234"] {
            assert!(Name::parse(ok).is_ok(), "{ok} should be valid");
        }
        for bad in [
            "",
            "1abc",
            "_a",
            "-a",
            "a b",
            "a<b",
            "é",
            "A234567890123456789012345",
            "a\n",
        ] {
            assert!(Name::parse(bad).is_err(), "{bad:?} should be invalid");
        }
    }

    #[test]
    fn names_compare_without_case() {
        assert_eq!(
            Name::parse("Alice").unwrap().key(),
            Name::parse("aLICE").unwrap().key()
        );
    }

    #[test]
    fn text_is_trimmed_and_bounded() {
        assert_eq!(MessageText::parse("  hi \n").unwrap().into_string(), "hi");
        assert_eq!(MessageText::parse("   ").unwrap_err().code(), "bad_request");
        assert!(MessageText::parse(&"é".repeat(2000)).is_ok());
        assert_eq!(
            MessageText::parse(&"a".repeat(2001)).unwrap_err().code(),
            "too_large"
        );
    }
}
