//! Request-level policies: the client's IP, the `Host` check, the connection
//! limits, the origin check for WebSocket upgrades, and CORS grants for
//! listed origins. The router runs
//! them through [`admission`]; the upgrade path, which never reaches the
//! router, calls the same functions.
//!
//! CORS is written out here rather than taken from actix-cors because the
//! policy is deliberately smaller: pushlab grants nothing by default and
//! leaves unlisted origins to the browser's same-origin rules, instead of
//! answering them with a (non-JSON) rejection.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderMap};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::web::{self, Bytes};
use actix_web::{HttpMessage as _, HttpResponse, ResponseError as _};

use crate::config::Config;
use crate::core::error::ApiError;
use crate::http::endpoints::Endpoint;
use crate::http::http_error::HttpError;
use crate::http::state::AppState;
use crate::net::limits::Permit;

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

/// The client's IP as [`admission`] found it, for handlers to take with
/// `web::ReqData<ClientIp>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// The client's IP: the peer's address, or, when the peer is a trusted
/// proxy, the nearest address in `X-Forwarded-For` that is not one (the
/// ones further left could have been written by anyone).
pub fn client_ip(peer: Option<SocketAddr>, headers: &HeaderMap, config: &Config) -> IpAddr {
    let Some(peer) = peer.map(|p| p.ip()) else {
        // Only a test harness serves requests without a peer address.
        return IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    };
    if !config.trusted_proxies.contains(&peer) {
        return peer;
    }
    let forwarded = headers
        .get_all("x-forwarded-for")
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|hop| hop.trim().parse::<IpAddr>().ok())
        .collect::<Vec<_>>();
    forwarded
        .into_iter()
        .rev()
        .find(|hop| !config.trusted_proxies.contains(hop))
        .unwrap_or(peer)
}

/// Refuses a request whose `Host` is not one this server answers to, so a
/// page on a DNS name rebound to this machine cannot use it. A request
/// without a `Host` (HTTP/1.0, not a browser) passes.
pub fn check_host(headers: &HeaderMap, config: &Config) -> Result<(), HttpError> {
    let Some(host) = headers.get(header::HOST) else {
        return Ok(());
    };
    match host.to_str() {
        Ok(host) if config.host_allowed(host) => Ok(()),
        Ok(host) => Err(HttpError::ForbiddenHost(host.to_owned())),
        Err(_) => Err(HttpError::ForbiddenHost("(not text)".into())),
    }
}

/// Refuses a WebSocket upgrade from a page on another origin unless it is
/// listed. Clients that send no Origin (not browsers) are not affected.
pub fn check_origin(headers: &HeaderMap, config: &Config) -> Result<(), ApiError> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin
        .to_str()
        .map_err(|_| ApiError::ForbiddenOrigin("(not text)".into()))?;
    if config.origin_allowed(origin) {
        return Ok(());
    }
    let own_host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin.split_once("://").map(|(_, host)| host);
    match (own_host, origin_host) {
        (Some(own), Some(theirs)) if own.eq_ignore_ascii_case(theirs) => Ok(()),
        _ => Err(ApiError::ForbiddenOrigin(origin.to_owned())),
    }
}

/// Wraps every routed request: the `Host` check, then a listed origin's
/// preflight is answered here, and everything else but `/healthz` and
/// `/metrics` takes a place under the connection limits (held until its
/// response body is done) and gets its CORS grant.
pub async fn admission(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .cloned()
        .ok_or_else(|| actix_web::Error::from(ApiError::Internal))?;
    if let Err(refused) = check_host(req.headers(), &state.config) {
        return Ok(req.into_response(refused.error_response()));
    }
    let origin = granted_origin(&req, &state.config);
    if let Some(origin) = &origin {
        if is_preflight(&req) {
            return Ok(req.into_response(preflight_response(origin.clone())));
        }
    }
    let ip = client_ip(req.peer_addr(), req.headers(), &state.config);
    req.extensions_mut().insert(ClientIp(ip));
    // Health checks and scrapes must be answered even when the server is
    // full: that is when they matter most.
    let counted = ![Endpoint::Healthz, Endpoint::Metrics]
        .iter()
        .any(|endpoint| req.path() == endpoint.pattern());
    let permit = if counted {
        match state.limit.admit(ip) {
            Ok(permit) => Some(permit),
            Err(refused) => return Ok(req.into_response(refused.error_response())),
        }
    } else {
        None
    };
    let response = next.call(req).await?.map_into_boxed_body();
    let mut response = match permit {
        Some(permit) => hold_permit(response, permit),
        None => response,
    };
    if let Some(origin) = origin {
        grant(&mut response, origin);
    }
    Ok(response)
}
