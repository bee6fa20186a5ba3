//! One error type for every rejection, with its HTTP status and its machine
//! `code`. Over HTTP it becomes `{"error", "code"}` JSON; over a WebSocket,
//! an `error` frame (see [`crate::protocol::Control`]).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

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
    /// The server is at a configured limit.
    #[error("{0}")]
    Unavailable(String),
    /// A POST whose body is not declared as `application/json`.
    #[error("send the body as application/json")]
    UnsupportedMediaType,
    /// No such path.
    #[error("no such endpoint: {0}")]
    NotFound(String),
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
            ApiError::TooLarge(_) => "too_large",
            ApiError::NameTaken(_) => "name_taken",
            ApiError::UnknownSession => "unknown_session",
            ApiError::ForbiddenOrigin(_) => "forbidden_origin",
            ApiError::RateLimited => "rate_limited",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::NotFound(_) => "not_found",
            ApiError::Internal => "internal",
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadJson(_) | ApiError::BadRequest(_) | ApiError::InvalidName(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NameTaken(_) => StatusCode::CONFLICT,
            ApiError::UnknownSession => StatusCode::UNAUTHORIZED,
            ApiError::ForbiddenOrigin(_) => StatusCode::FORBIDDEN,
            ApiError::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status_code())
            .insert_header(("Cache-Control", "no-store"))
            .json(serde_json::json!({ "error": self.to_string(), "code": self.code() }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_its_status() {
        let cases = [
            (ApiError::BadJson(String::new()), 400),
            (ApiError::BadRequest(String::new()), 400),
            (ApiError::InvalidName(String::new()), 400),
            (ApiError::TooLarge(String::new()), 413),
            (ApiError::NameTaken("a".into()), 409),
            (ApiError::UnknownSession, 401),
            (ApiError::ForbiddenOrigin("o".into()), 403),
            (ApiError::RateLimited, 429),
            (ApiError::Unavailable(String::new()), 503),
        ];
        for (err, status) in cases {
            assert_eq!(err.status_code().as_u16(), status, "{}", err.code());
        }
    }
}
