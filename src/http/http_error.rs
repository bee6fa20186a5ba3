//! How a refusal goes over HTTP: each [`ApiError`] gets its status, and its
//! body is `{"error": "...", "code": "..."}` JSON. [`HttpError`] adds the
//! refusals that only the HTTP edge makes, before any core call.
//!
//! The core's error type stays free of actix; this is the one place that
//! knows which status each code answers with.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};

use crate::core::error::ApiError;

/// A refusal at the HTTP edge: a core refusal, or one that only HTTP can
/// make. Every variant has its machine `code`, like [`ApiError`]'s.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HttpError {
    /// A refusal of the core's.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The request's `Host` is not one this server answers to.
    #[error("host {0:?} is not served here; start pushlab with --allowed-host {0}")]
    ForbiddenHost(String),
    /// A POST whose body is not declared as `application/json`.
    #[error("send the body as application/json")]
    UnsupportedMediaType,
    /// A body in a content coding (gzip, br, …): pushlab decodes none.
    #[error("send the body without a Content-Encoding; {0:?} is not decoded here")]
    UnsupportedEncoding(String),
    /// No such path.
    #[error("no such endpoint: {0}")]
    NotFound(String),
    /// A known path asked with a method it does not take.
    #[error("this endpoint does not take that method")]
    MethodNotAllowed,
    /// The request body did not arrive in full within `--body-timeout`.
    #[error("the request body did not arrive in time")]
    BodyTimeout,
}

impl HttpError {
    /// The machine-readable code clients switch on.
    pub fn code(&self) -> &'static str {
        match self {
            HttpError::Api(err) => err.code(),
            HttpError::ForbiddenHost(_) => "forbidden_host",
            HttpError::UnsupportedMediaType => "unsupported_media_type",
            HttpError::UnsupportedEncoding(_) => "unsupported_encoding",
            HttpError::NotFound(_) => "not_found",
            HttpError::MethodNotAllowed => "method_not_allowed",
            HttpError::BodyTimeout => "body_timeout",
        }
    }
}

impl ResponseError for HttpError {
    fn status_code(&self) -> StatusCode {
        match self {
            HttpError::Api(err) => err.status_code(),
            HttpError::ForbiddenHost(_) => StatusCode::FORBIDDEN,
            HttpError::UnsupportedMediaType | HttpError::UnsupportedEncoding(_) => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            HttpError::NotFound(_) => StatusCode::NOT_FOUND,
            HttpError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            HttpError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            HttpError::Api(err) => err.error_response(),
            edge => json_refusal(edge.status_code(), &edge.to_string(), edge.code(), false),
        }
    }
}

/// A refusal's response: its status, `{"error", "code"}` JSON, never cached,
/// with `Retry-After` when it is a limit that frees up.
fn json_refusal(status: StatusCode, error: &str, code: &str, retry: bool) -> HttpResponse {
    let mut response = HttpResponse::build(status);
    response.insert_header((header::CACHE_CONTROL, "no-store"));
    if retry {
        response.insert_header((header::RETRY_AFTER, "1"));
    }
    response.json(serde_json::json!({ "error": error, "code": code }))
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadJson(_)
            | ApiError::BadRequest(_)
            | ApiError::InvalidName(_)
            | ApiError::InvalidRoom(_) => StatusCode::BAD_REQUEST,
            ApiError::WrongRoom(_) => StatusCode::FORBIDDEN,
            ApiError::TooManyRooms(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NameTaken(_) => StatusCode::CONFLICT,
            ApiError::UnknownSession => StatusCode::UNAUTHORIZED,
            ApiError::ForbiddenOrigin(_) => StatusCode::FORBIDDEN,
            ApiError::RateLimited | ApiError::IpLimit(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::UnknownTarget(_) => StatusCode::NOT_FOUND,
            ApiError::TargetNotListening(_) => StatusCode::CONFLICT,
            ApiError::Unavailable(_)
            | ApiError::StoreUnavailable
            | ApiError::StoreFull
            | ApiError::TargetBusy(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        // Every such 503 is a limit that frees up: say when to come back.
        let retry = matches!(
            self,
            ApiError::Unavailable(_)
                | ApiError::TooManyRooms(_)
                | ApiError::StoreUnavailable
                | ApiError::StoreFull
        );
        json_refusal(self.status_code(), &self.to_string(), self.code(), retry)
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
            (ApiError::InvalidRoom(String::new()), 400),
            (ApiError::WrongRoom("r".into()), 403),
            (ApiError::TooManyRooms(String::new()), 503),
            (ApiError::TooLarge(String::new()), 413),
            (ApiError::NameTaken("a".into()), 409),
            (ApiError::UnknownSession, 401),
            (ApiError::ForbiddenOrigin("o".into()), 403),
            (ApiError::RateLimited, 429),
            (ApiError::IpLimit(String::new()), 429),
            (ApiError::Unavailable(String::new()), 503),
            (ApiError::UnknownTarget("t".into()), 404),
            (ApiError::TargetNotListening("t".into()), 409),
            (ApiError::TargetBusy("t".into()), 503),
            (ApiError::StoreUnavailable, 503),
            (ApiError::StoreFull, 503),
            (ApiError::Internal, 500),
        ];
        for (err, status) in cases {
            assert_eq!(err.status_code().as_u16(), status, "{}", err.code());
        }
    }

    #[test]
    fn every_edge_refusal_has_its_status_and_code() {
        let cases = [
            (HttpError::ForbiddenHost("h".into()), 403, "forbidden_host"),
            (
                HttpError::UnsupportedMediaType,
                415,
                "unsupported_media_type",
            ),
            (
                HttpError::UnsupportedEncoding("gzip".into()),
                415,
                "unsupported_encoding",
            ),
            (HttpError::NotFound(String::new()), 404, "not_found"),
            (HttpError::MethodNotAllowed, 405, "method_not_allowed"),
            (HttpError::BodyTimeout, 408, "body_timeout"),
            (
                HttpError::Api(ApiError::StoreUnavailable),
                503,
                "store_unavailable",
            ),
        ];
        for (err, status, code) in cases {
            assert_eq!(err.status_code().as_u16(), status, "{code}");
            assert_eq!(err.code(), code);
        }
    }
}
