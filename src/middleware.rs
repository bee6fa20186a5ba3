//! Request-level policies that wrap every endpoint: the connection limit and
//! CORS grants for listed origins.
//!
//! CORS is written out here rather than taken from actix-cors because the
//! policy is deliberately smaller: pushlab grants nothing by default and
//! leaves unlisted origins to the browser's same-origin rules, instead of
//! answering them with a (non-JSON) rejection.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method};
use actix_web::web::Bytes;
use actix_web::{HttpResponse, ResponseError as _};

use crate::config::Config;
use crate::error::ApiError;

/// Counts requests in flight, held long-polls and open streams and sockets
/// included, against `--max-connections`.
#[derive(Debug)]
pub struct ConnectionLimit {
    open: AtomicUsize,
    max: usize,
}

impl ConnectionLimit {
    /// A limit of `max` requests in flight at once.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(ConnectionLimit {
            open: AtomicUsize::new(0),
            max,
        })
    }

    /// Takes a place, or `None` at the limit.
    pub fn acquire(self: &Arc<Self>) -> Option<Permit> {
        let mut open = self.open.load(Ordering::Relaxed);
        loop {
            if open >= self.max {
                return None;
            }
            match self.open.compare_exchange_weak(
                open,
                open + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(Permit(self.clone())),
                Err(now) => open = now,
            }
        }
    }

    /// Requests in flight now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

/// A place under the limit, given back when the response body is done.
#[derive(Debug)]
pub struct Permit(Arc<ConnectionLimit>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that holds a [`Permit`] for as long as it is being sent,
/// so a stream or socket counts until it ends.
pub struct PermitBody {
    body: BoxBody,
    _permit: Permit,
}

impl MessageBody for PermitBody {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_next(cx)
    }
}

/// The 503 answer for a request over `--max-connections`.
pub fn at_capacity() -> HttpResponse {
    let err =
        ApiError::Unavailable("the server is at its connection limit; try again shortly".into());
    let mut response = err.error_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    response
}

/// Ties the permit to the response body.
pub fn hold_permit(response: ServiceResponse<BoxBody>, permit: Permit) -> ServiceResponse<BoxBody> {
    response.map_body(|_, body| {
        BoxBody::new(PermitBody {
            body,
            _permit: permit,
        })
    })
}

/// The origin a request names, if it is one listed in `--allowed-origin`.
pub fn granted_origin(req: &ServiceRequest, config: &Config) -> Option<header::HeaderValue> {
    let origin = req.headers().get(header::ORIGIN)?;
    let text = origin.to_str().ok()?;
    config.origin_allowed(text).then(|| origin.clone())
}

/// Whether a request is a CORS preflight.
pub fn is_preflight(req: &ServiceRequest) -> bool {
    req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// The answer to a CORS preflight from a listed origin.
pub fn preflight_response(origin: header::HeaderValue) -> HttpResponse {
    HttpResponse::NoContent()
        .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, origin))
        .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, "GET, POST"))
        .insert_header((
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            "Content-Type, Last-Event-ID",
        ))
        .insert_header((header::ACCESS_CONTROL_MAX_AGE, "600"))
        .insert_header((header::VARY, "Origin"))
        .finish()
}

/// Adds the CORS grant to an answer for a listed origin.
pub fn grant(response: &mut ServiceResponse<BoxBody>, origin: header::HeaderValue) {
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.append(header::VARY, header::HeaderValue::from_static("Origin"));
}
