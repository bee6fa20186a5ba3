//! How a refusal goes over HTTP: each [`ApiError`] gets its status, and its
//! body is `{"error": "...", "code": "..."}` JSON.
//!
//! The core's error type stays free of actix; this is the one place that
//! knows which status each code answers with.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};

use crate::error::ApiError;

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
            ApiError::ForbiddenOrigin(_) | ApiError::ForbiddenHost(_) => StatusCode::FORBIDDEN,
            ApiError::RateLimited | ApiError::IpLimit(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::UnknownTarget(_) => StatusCode::NOT_FOUND,
            ApiError::TargetNotListening(_) => StatusCode::CONFLICT,
            ApiError::Unavailable(_) | ApiError::StoreUnavailable | ApiError::TargetBusy(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        response.insert_header((header::CACHE_CONTROL, "no-store"));
        if matches!(
            self,
            ApiError::Unavailable(_) | ApiError::TooManyRooms(_) | ApiError::StoreUnavailable
        ) {
            // Every 503 is a limit that frees up: say when to come back.
            response.insert_header((header::RETRY_AFTER, "1"));
        }
        response.json(serde_json::json!({ "error": self.to_string(), "code": self.code() }))
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
            (ApiError::ForbiddenHost("h".into()), 403),
            (ApiError::Unavailable(String::new()), 503),
            (ApiError::UnknownTarget("t".into()), 404),
            (ApiError::TargetNotListening("t".into()), 409),
            (ApiError::TargetBusy("t".into()), 503),
            (ApiError::UnsupportedMediaType, 415),
            (ApiError::NotFound(String::new()), 404),
            (ApiError::MethodNotAllowed, 405),
            (ApiError::BodyTimeout, 408),
            (ApiError::StoreUnavailable, 503),
            (ApiError::Internal, 500),
        ];
        for (err, status) in cases {
            assert_eq!(err.status_code().as_u16(), status, "{}", err.code());
        }
    }
}
