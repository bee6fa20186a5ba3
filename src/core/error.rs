//! One error type for every rejection, with its machine `code`.
//!
//! This is the core's vocabulary of refusals: it knows nothing of HTTP. The
//! HTTP layer ([`crate::http::http_error`]) gives each variant a status and
//! turns it into `{"error", "code"}` JSON, and adds the refusals only HTTP
//! can make (no such path, wrong method, a bad `Host`); a WebSocket sends a
//! core refusal as an `error` frame (see [`crate::core::protocol::Control`]).

/// Why a request or a client message was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON at all.
    #[error("{0}")]
    BadJson(String),
    /// Valid JSON of the wrong shape, a field out of range, or a bad query parameter.
    #[error("{0}")]
    BadRequest(String),
    /// The name breaks the naming rules.
    #[error("{0}")]
    InvalidName(String),
    /// The room name breaks the naming rules.
    #[error("{0}")]
    InvalidRoom(String),
    /// The session belongs to another room than the one named.
    #[error("this session belongs to room {0:?}; use it there, or register in this room")]
    WrongRoom(String),
    /// The server already has `--max-rooms` rooms.
    #[error("{0}")]
    TooManyRooms(String),
    /// Text or body over its limit.
    #[error("{0}")]
    TooLarge(String),
    /// Someone online already has this name (compared without case).
    #[error("the name {0:?} is taken by someone online")]
    NameTaken(String),
    /// The session id is unknown or has expired.
    #[error("unknown or expired session; register again")]
    UnknownSession,
    /// A WebSocket upgrade from a page on another origin.
    #[error("origin {0:?} is not allowed")]
    ForbiddenOrigin(String),
    /// The session sent faster than its rate limit allows.
    #[error("too many events; slow down")]
    RateLimited,
    /// One client address is at one of its limits (connections, sessions,
    /// registrations or events per second).
    #[error("{0}")]
    IpLimit(String),
    /// A signal named someone who is not online in this room.
    #[error("no one named {0:?} is online in this room")]
    UnknownTarget(String),
    /// A signal named someone online whose page takes no signals (it is on
    /// another transport, or its socket did not ask for them).
    #[error("{0:?} is online but takes no signals: no peer-to-peer with them, use the server")]
    TargetNotListening(String),
    /// A signal's target has too many signals waiting to be written.
    #[error("{0:?} is not reading its signals; try again shortly")]
    TargetBusy(String),
    /// The server is at a configured limit.
    #[error("{0}")]
    Unavailable(String),
    /// The shared store (Redis) cannot be reached: nothing was stored, and
    /// the client may try again.
    #[error("the message store is unreachable; try again shortly")]
    StoreUnavailable,
    /// The node's event windows hold `--total-bytes` between them and this
    /// room has nothing left to trim: nothing was stored, and the client
    /// may try again once other rooms trim or close.
    #[error("the server's message memory is full; try again shortly")]
    StoreFull,
    /// Something failed inside the server; the detail is logged, not sent.
    #[error("internal error")]
    Internal,
}

impl ApiError {
    /// The machine-readable code clients switch on.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadJson(_) => "bad_json",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::InvalidName(_) => "invalid_name",
            ApiError::InvalidRoom(_) => "invalid_room",
            ApiError::WrongRoom(_) => "wrong_room",
            ApiError::TooManyRooms(_) => "too_many_rooms",
            ApiError::TooLarge(_) => "too_large",
            ApiError::NameTaken(_) => "name_taken",
            ApiError::UnknownSession => "unknown_session",
            ApiError::ForbiddenOrigin(_) => "forbidden_origin",
            ApiError::RateLimited => "rate_limited",
            ApiError::IpLimit(_) => "ip_limit",
            ApiError::UnknownTarget(_) => "unknown_target",
            ApiError::TargetNotListening(_) => "target_not_listening",
            ApiError::TargetBusy(_) => "target_busy",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::StoreUnavailable => "store_unavailable",
            ApiError::StoreFull => "store_full",
            ApiError::Internal => "internal",
        }
    }
}
