//! The body timeout: a request body that has not fully arrived within
//! `--body-timeout` is answered 408 (`body_timeout`) and its connection
//! closed, so a client that announces a body and never sends it cannot keep
//! a place under `--max-connections`. (actix-http's request timeout covers
//! the head only.)
//!
//! [`read_body_in_time`] reads the body before the handler runs, under one
//! deadline for the whole body, and hands the handler the same bytes. It
//! reads at most one byte past [`MAX_BODY_BYTES`], so the extractor's own
//! limit still decides on oversized bodies.

use std::time::Duration;

use actix_http::ConnectionType;
use actix_web::body::BoxBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::header::{self, HeaderMap};
use actix_web::web::{Bytes, BytesMut};
use actix_web::{HttpMessage as _, ResponseError as _};
use futures_util::StreamExt as _;

use crate::core::protocol::MAX_BODY_BYTES;
use crate::http::http_error::HttpError;
use crate::http::state::AppState;

/// Reads a request's body within `--body-timeout` and gives the request
/// back with that body to replay to the handler, or gives the 408 that
/// closes the connection. Admission calls it on every request it passes
/// on; one without a body to read comes straight back.
pub async fn read_body_in_time(
    mut req: ServiceRequest,
    state: &AppState,
) -> Result<ServiceRequest, ServiceResponse<BoxBody>> {
    if !has_body_to_read(req.headers()) {
        return Ok(req);
    }
    let limit = Duration::from_secs_f64(state.config.body_timeout);
    let mut payload = req.take_payload();
    let Ok(read) = tokio::time::timeout(limit, read_capped(&mut payload)).await else {
        let mut response = HttpError::BodyTimeout.error_response();
        // The rest of the body may still come: the connection cannot be
        // reused, and closing it gives the place back.
        response
            .head_mut()
            .set_connection_type(ConnectionType::Close);
        return Err(req.into_response(response));
    };
    req.set_payload(replay(read));
    Ok(req)
}

/// Whether a request has a body for [`read_body_in_time`] to read.
pub fn has_body(req: &ServiceRequest) -> bool {
    has_body_to_read(req.headers())
}

/// Whether the head announces a body that is worth reading here: one with
/// a length up to [`MAX_BODY_BYTES`], or a chunked one. A body declared
/// larger is left to the extractor, which refuses it without reading it.
fn has_body_to_read(headers: &HeaderMap) -> bool {
    if headers.contains_key(header::TRANSFER_ENCODING) {
        return true;
    }
    matches!(declared_length(headers), Some(len) if len > 0 && len <= MAX_BODY_BYTES as u64)
}

/// The body's length as its `Content-Length` declares it.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok())
}

/// How many bytes of body a request may still need read off the wire, so
/// that its connection reads that far ahead of it (`net::read_ahead`): the
/// length it declares, up to one byte past [`MAX_BODY_BYTES`], which is all
/// that is read of it; for a chunked body, twice [`MAX_BODY_BYTES`], room
/// for the chunks' framing. A chunked body framed more wastefully than that
/// runs into `--body-timeout`.
pub fn body_on_wire(headers: &HeaderMap) -> u64 {
    let most = MAX_BODY_BYTES as u64 + 1;
    if headers.contains_key(header::TRANSFER_ENCODING) {
        return 2 * most;
    }
    declared_length(headers).map_or(0, |len| len.min(most))
}

/// What was read of a body: the bytes, and the error that ended it early.
struct Read {
    body: BytesMut,
    error: Option<PayloadError>,
}

/// Reads the body until it ends, fails, or goes past [`MAX_BODY_BYTES`].
async fn read_capped(payload: &mut Payload) -> Read {
    let mut body = BytesMut::new();
    while body.len() <= MAX_BODY_BYTES {
        match payload.next().await {
            Some(Ok(chunk)) => body.extend_from_slice(&chunk),
            Some(Err(error)) => {
                return Read {
                    body,
                    error: Some(error),
                }
            }
            None => break,
        }
    }
    Read { body, error: None }
}

/// A payload that gives the handler what was read, as it arrived.
fn replay(read: Read) -> Payload {
    let mut items = vec![Ok::<Bytes, PayloadError>(read.body.freeze())];
    items.extend(read.error.map(Err));
    let stream: actix_http::BoxedPayloadStream = Box::pin(futures_util::stream::iter(items));
    Payload::from(stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderValue;

    fn headers(pairs: &[(header::HeaderName, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(name.clone(), HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn only_bodies_that_will_be_read_are_read_here() {
        assert!(!has_body_to_read(&headers(&[])));
        assert!(!has_body_to_read(&headers(&[(
            header::CONTENT_LENGTH,
            "0"
        )])));
        assert!(has_body_to_read(&headers(&[(
            header::CONTENT_LENGTH,
            "12"
        )])));
        assert!(has_body_to_read(&headers(&[(
            header::TRANSFER_ENCODING,
            "chunked"
        )])));
        // Too large: the extractor refuses it from the head alone.
        assert!(!has_body_to_read(&headers(&[(
            header::CONTENT_LENGTH,
            "10000000"
        )])));
    }
}
