//! Admission: where every request and every WebSocket upgrade enters, in
//! one function, [`admit`], which the router's middleware ([`admission`])
//! and the WebSocket upgrade path both call. It charges the
//! request's bytes, checks the `Host`, answers a listed origin's preflight,
//! finds the client's IP, takes a place under the connection limits and
//! applies the route's 404 or 405, all as the endpoint table
//! ([`crate::http::endpoints`]) says; and here are the origin check for
//! WebSocket upgrades and the CORS grants for listed origins.
//!
//! CORS is written out here rather than taken from actix-cors because the
//! policy is deliberately smaller: pushlab grants nothing by default and
//! leaves unlisted origins to the browser's same-origin rules, instead of
//! answering them with a (non-JSON) rejection.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use actix_http::{Request, Response};
use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{RequestHead, ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderMap};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::web::{self, Bytes};
use actix_web::{HttpMessage as _, HttpResponse, ResponseError as _};
use futures_util::future::{Either, FutureExt as _};
use serde::Deserialize;

use crate::config::Config;
use crate::core::error::ApiError;
use crate::http::body_timeout::{body_on_wire, has_body, read_body_in_time};
use crate::http::endpoints::{self, Endpoint, Limit};
use crate::http::http_error::HttpError;
use crate::http::state::AppState;
use crate::net::limits::{client_address, Permit};
use crate::net::traffic::{Charge, ClientId, Clients, ConnectionMeter};

/// A request that passed admission's checks, with its route.
#[derive(Debug)]
pub struct Admitted {
    /// The endpoint that serves it, or the route's 404 or 405. The caller
    /// answers that refusal like any other answer to the request: holding
    /// the place, and with the CORS grant.
    pub route: Result<Endpoint, HttpError>,
    /// The client's IP (see [`client_ip`]).
    pub ip: IpAddr,
    /// Its place under the connection limits, to hold until its answer (or
    /// socket) is done; `None` for an endpoint the limits leave out.
    pub permit: Option<Permit>,
    /// Its `Origin`, if that is listed in `--allowed-origin`.
    pub granted: Option<header::HeaderValue>,
}

/// Why admission answers a request itself instead of passing it on.
#[derive(Debug)]
pub enum Answer {
    /// Refused: the `Host` or the limits, the route, or (on the upgrade
    /// path) what the endpoint itself checks.
    Refused(HttpError),
    /// A CORS preflight from this listed origin.
    Preflight(header::HeaderValue),
}

impl Answer {
    /// The response that says it.
    pub fn into_response(self) -> HttpResponse {
        match self {
            Answer::Refused(refused) => refused.error_response(),
            Answer::Preflight(origin) => preflight_response(origin),
        }
    }
}

impl From<HttpError> for Answer {
    fn from(refused: HttpError) -> Self {
        Answer::Refused(refused)
    }
}

impl From<ApiError> for Answer {
    fn from(refused: ApiError) -> Self {
        Answer::Refused(refused.into())
    }
}

/// Admits a request or upgrade, in this order:
///
/// 1. its bytes are charged, through the connection's `meter`, to the node
///    and to the client its `client=` names, on its endpoint's transport,
///    so that refusals are charged too;
/// 2. its `Host` must be one this server answers to;
/// 3. a listed origin's CORS preflight is answered;
/// 4. the client's IP is found, behind `--trusted-proxy`;
/// 5. it takes a place under its endpoint's limit ([`Endpoint::limit`]):
///    the connection limits, the scrapes' own, or none;
/// 6. the route: its endpoint, or the 404 or 405, from
///    [`endpoints::resolve`] ([`Admitted::route`]).
pub fn admit(
    state: &AppState,
    head: &RequestHead,
    meter: Option<&ConnectionMeter>,
) -> Result<Admitted, Answer> {
    let target = Endpoint::at(&head.uri);
    if let Some(meter) = meter {
        let query = head.uri.query().unwrap_or("");
        meter.begin(
            Some(charge(&state.clients, target, query)),
            body_on_wire(&head.headers),
        );
    }
    check_host(head, &state.config)?;
    let granted = granted_origin(&head.headers, &state.config);
    if let Some(origin) = &granted {
        if is_preflight(head) {
            return Err(Answer::Preflight(origin.clone()));
        }
    }
    check_encoding(&head.headers)?;
    let ip = client_ip(head.peer_addr, &head.headers, &state.config);
    let permit = match target.map_or(Limit::Connections, Endpoint::limit) {
        Limit::Connections => Some(state.limit.admit(ip)?),
        Limit::Scrapes => Some(state.scrapes.admit(ip)?),
        Limit::None => None,
    };
    Ok(Admitted {
        route: endpoints::resolve(&head.method, &head.uri),
        ip,
        permit,
        granted,
    })
}

/// Whom a request is charged to: the node, and the client its `client=`
/// names, on its endpoint's transport. [`admit`] charges an HTTP/1.1
/// request through its connection's meter; an HTTP/2 request is bound to
/// its stream by the server, before admission runs.
pub fn charge_for(state: &AppState, head: &RequestHead) -> Charge {
    let query = head.uri.query().unwrap_or("");
    charge(&state.clients, Endpoint::at(&head.uri), query)
}

/// Whom a request to `target` with `query` is charged to, on `target`'s
/// transport: the node, and the client it names with a valid `client=` if
/// the endpoint charges it ([`Endpoint::charges_named_client`]).
fn charge(clients: &Clients, target: Option<Endpoint>, query: &str) -> Charge {
    let transport = target.and_then(Endpoint::transport);
    let named = target
        .is_some_and(Endpoint::charges_named_client)
        .then(|| client_named(query))
        .flatten();
    match named {
        Some(client) => clients.charge(&client, transport),
        None => clients.charge_node(transport),
    }
}

/// The query that names a client.
#[derive(Debug, Deserialize)]
struct ClientQuery {
    client: Option<String>,
}

/// The client a query names with a valid `client=`, if any.
fn client_named(query: &str) -> Option<ClientId> {
    // Most requests name none: they are not parsed a second time (the
    // handler parses the query too) only to find that out.
    if !query.contains("client=") {
        return None;
    }
    let raw = web::Query::<ClientQuery>::from_query(query)
        .ok()?
        .into_inner()
        .client?;
    ClientId::parse(&raw)
}

/// Wraps every routed request in [`admit`]: an answer it gives is sent as
/// it is; an admitted request is answered its route's 404 or 405 here, or
/// goes on to the router with its [`ClientIp`] for the handlers, once its
/// body, if it has one, is read in time ([`read_body_in_time`]). Either way
/// it holds its place until its response body is done, and a listed origin
/// gets its CORS grant; and the connection's meter is told when the answer
/// is complete.
pub async fn admission(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .cloned()
        .ok_or_else(|| actix_web::Error::from(ApiError::Internal))?;
    let meter = req.conn_data::<Arc<ConnectionMeter>>().cloned();
    let (response, permit) = match admit(&state, req.head(), meter.as_deref()) {
        Err(answer) => (req.into_response(answer.into_response()), None),
        Ok(admitted) => {
            let mut response = match admitted.route {
                Err(unrouted) => req.into_response(unrouted.error_response()),
                Ok(endpoint) => {
                    req.extensions_mut().insert(ClientIp(admitted.ip));
                    release_headers(&mut req, endpoint);
                    // The body is read here rather than in a middleware of
                    // its own: most requests have none, and a layer more
                    // would cost every request its call and its future.
                    // Boxed, so that a held request's future keeps no room
                    // for a read it never did.
                    let req = if has_body(&req) {
                        Box::pin(read_body_in_time(req, &state)).await
                    } else {
                        Ok(req)
                    };
                    match req {
                        Ok(req) => next.call(req).await?.map_into_boxed_body(),
                        Err(timed_out) => timed_out,
                    }
                }
            };
            if let Some(origin) = admitted.granted {
                grant(response.headers_mut(), origin);
            }
            (response, admitted.permit)
        }
    };
    Ok(response.map_body(|_, body| {
        BoxBody::new(HeldBody {
            body,
            _permit: permit,
            _end: meter.map(EndOnDrop),
        })
    }))
}

/// Whether a request is answered without the router, by
/// [`admit_directly`]: a `GET /longpoll` that announces no body. The many
/// held long-polls are most of what a server under load is asked, and the
/// router's share of each (its request, its path match, its extractors and
/// extensions) cost as much as the long-poll itself. Every other request,
/// a long-poll with a body too, goes through the router and [`admission`].
pub fn served_directly(head: &RequestHead) -> bool {
    head.method == Method::GET
        && Endpoint::at(&head.uri) == Some(Endpoint::LongPoll)
        && body_on_wire(&head.headers) == 0
}

/// Admits and answers a request that skips the router
/// ([`served_directly`]) exactly as [`admission`] and the router's handler
/// would: the same [`admit`], the same refusals, then `serve` with the
/// raw query and the client's IP, which reads the query (refusing a bad one
/// as the router's extractor does) and returns the answer's future; the
/// place is held, the CORS grant given and the meter told as there.
///
/// All of that but `serve` is done before the future is made, and the
/// request let go of: nothing of it is read after admission, so a held
/// long-poll keeps neither its head nor its headers, and the future holds
/// `serve`'s future and what the answer needs, no more. (An `async fn`
/// would keep room for its arguments, the request among them, as long as
/// it is held.)
pub fn admit_directly<F, Fut>(
    state: web::Data<AppState>,
    req: Request,
    serve: F,
) -> impl Future<Output = Response<BoxBody>>
where
    F: FnOnce(web::Data<AppState>, &str, IpAddr) -> Result<Fut, ApiError>,
    Fut: Future<Output = Result<HttpResponse, ApiError>>,
{
    let meter = req.conn_data::<Arc<ConnectionMeter>>().cloned();
    let (served, permit, granted) = match admit(&state, req.head(), meter.as_deref()) {
        Err(answer) => (Err(answer.into_response()), None, None),
        Ok(admitted) => {
            let served = match admitted.route {
                Err(unrouted) => Err(unrouted.error_response()),
                Ok(_) => serve(state, req.uri().query().unwrap_or(""), admitted.ip)
                    .map_err(|refused| refused.error_response()),
            };
            (served, admitted.permit, admitted.granted)
        }
    };
    drop(req);
    let finish = move |mut response: HttpResponse| -> Response<BoxBody> {
        if let Some(origin) = granted {
            grant(response.headers_mut(), origin);
        }
        response
            .map_body(|_, body| {
                BoxBody::new(HeldBody {
                    body,
                    _permit: permit,
                    _end: meter.map(EndOnDrop),
                })
            })
            .into()
    };
    // Combinators rather than an `async` block, which would hold `serve`'s
    // future twice over: once as it captured it, once as it awaits it.
    match served {
        Ok(answer) => {
            Either::Left(answer.map(move |answer| {
                finish(answer.unwrap_or_else(|refused| refused.error_response()))
            }))
        }
        Err(refused) => Either::Right(std::future::ready(finish(refused))),
    }
}

/// Lets go of the headers of a request that is about to park and reads
/// them no more ([`Endpoint::parks_without_headers`]), once admission has
/// checked them. Not if it announces a body: the body timeout reads that
/// by its length, and every limit on it stays.
fn release_headers(req: &mut ServiceRequest, endpoint: Endpoint) {
    if endpoint.parks_without_headers() && body_on_wire(req.headers()) == 0 {
        *req.headers_mut() = HeaderMap::new();
    }
}

/// A response body that holds what its request took while it is being
/// sent: its [`Permit`], so a stream counts until it ends, and the end of
/// the request on its connection's meter.
struct HeldBody {
    body: BoxBody,
    _permit: Option<Permit>,
    _end: Option<EndOnDrop>,
}

impl MessageBody for HeldBody {
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

/// Ends the request on the meter when the response body is dropped: by
/// then the HTTP/1 dispatcher has taken its last byte.
struct EndOnDrop(Arc<ConnectionMeter>);

impl Drop for EndOnDrop {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// The origin a request names, if it is one listed in `--allowed-origin`.
fn granted_origin(headers: &HeaderMap, config: &Config) -> Option<header::HeaderValue> {
    let origin = headers.get(header::ORIGIN)?;
    let text = origin.to_str().ok()?;
    config.origin_allowed(text).then(|| origin.clone())
}

/// Whether a request is a CORS preflight.
fn is_preflight(head: &RequestHead) -> bool {
    head.method == Method::OPTIONS
        && head
            .headers
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// The answer to a CORS preflight from a listed origin.
fn preflight_response(origin: header::HeaderValue) -> HttpResponse {
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
fn grant(headers: &mut HeaderMap, origin: header::HeaderValue) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.append(header::VARY, header::HeaderValue::from_static("Origin"));
}

/// The client's IP as [`admit`] found it, for handlers to take with
/// `web::ReqData<ClientIp>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// The client's IP: the peer's address, or, when the peer is a trusted
/// proxy, the nearest address in `X-Forwarded-For` that is not one (the
/// ones further left could have been written by anyone).
///
/// Every address is taken in its canonical form first, so a dual-stack
/// listener's `::ffff:127.0.0.1` is the `127.0.0.1` a `--trusted-proxy`
/// names, and the result is what the per-address limits count
/// ([`client_address`]: an IPv6 client by its /64).
fn client_ip(peer: Option<SocketAddr>, headers: &HeaderMap, config: &Config) -> IpAddr {
    let Some(peer) = peer.map(|p| p.ip().to_canonical()) else {
        // Only a test harness serves requests without a peer address.
        return IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    };
    let trusted = |ip: &IpAddr| {
        config
            .trusted_proxies
            .iter()
            .any(|p| p.to_canonical() == *ip)
    };
    if !trusted(&peer) {
        return client_address(peer);
    }
    let forwarded = headers
        .get_all("x-forwarded-for")
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|hop| hop.trim().parse::<IpAddr>().ok())
        .map(|hop| hop.to_canonical())
        .collect::<Vec<_>>();
    let client = forwarded
        .into_iter()
        .rev()
        .find(|hop| !trusted(hop))
        .unwrap_or(peer);
    client_address(client)
}

/// Refuses a body in any content coding but `identity`: pushlab decodes
/// none, so a gzip body would otherwise be read as its compressed bytes.
fn check_encoding(headers: &HeaderMap) -> Result<(), HttpError> {
    for value in headers.get_all(header::CONTENT_ENCODING) {
        let text = value.to_str().unwrap_or("(not text)");
        let coded = text
            .split(',')
            .map(str::trim)
            .any(|coding| !coding.is_empty() && !coding.eq_ignore_ascii_case("identity"));
        if coded {
            return Err(HttpError::UnsupportedEncoding(text.to_owned()));
        }
    }
    Ok(())
}

/// Refuses a request whose `Host` is not one this server answers to, so a
/// page on a DNS name rebound to this machine cannot use it. An HTTP/2
/// request names its host in `:authority`, which is the URI's authority
/// here; a `Host` header, if it also sends one, must pass as well. A
/// request that names no host at all (HTTP/1.0, not a browser) passes.
fn check_host(head: &RequestHead, config: &Config) -> Result<(), HttpError> {
    if let Some(authority) = head.uri.authority() {
        let host = authority.as_str();
        // Userinfo is no part of a host a browser sends.
        if host.contains('@') || !config.host_allowed(host) {
            return Err(HttpError::ForbiddenHost(host.to_owned()));
        }
    }
    let Some(host) = head.headers.get(header::HOST) else {
        return Ok(());
    };
    match host.to_str() {
        Ok(host) => check_host_of(host, config),
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
    let own_host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    check_origin_of(origin, own_host, config)
}

/// The origin rule for a connection that is not an HTTP/1 request (a
/// WebTransport session's CONNECT, which names `:authority` and `origin`):
/// a page on `origin` may use this server if the origin is listed, or if
/// its host and port are the ones the client asked for (`own_host`).
pub fn check_origin_of(
    origin: &str,
    own_host: Option<&str>,
    config: &Config,
) -> Result<(), ApiError> {
    if config.origin_allowed(origin) {
        return Ok(());
    }
    let origin_host = origin.split_once("://").map(|(_, host)| host);
    match (own_host, origin_host) {
        (Some(own), Some(theirs)) if own.eq_ignore_ascii_case(theirs) => Ok(()),
        _ => Err(ApiError::ForbiddenOrigin(origin.to_owned())),
    }
}

/// The host rule for a connection that is not an HTTP/1 request: whether
/// this server answers to `host` (a WebTransport session's `:authority`),
/// the same rule as the `Host` check of every request.
pub fn check_host_of(host: &str, config: &Config) -> Result<(), HttpError> {
    if config.host_allowed(host) {
        Ok(())
    } else {
        Err(HttpError::ForbiddenHost(host.to_owned()))
    }
}

/// The client's IP for a connection that came straight from it (QUIC,
/// where no proxy stands between): its address as the per-address limits
/// count it.
pub fn direct_client_ip(peer: SocketAddr) -> IpAddr {
    client_address(peer.ip().to_canonical())
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    #[test]
    fn a_parking_long_poll_lets_go_of_its_headers_and_other_requests_keep_theirs() {
        // Arrange
        let mut long_poll = TestRequest::get()
            .uri("/longpoll?since=0")
            .insert_header(("x-anything", "a value"))
            .to_srv_request();
        let mut sse = TestRequest::get()
            .uri("/sse")
            .insert_header(("last-event-id", "3"))
            .to_srv_request();

        // Act
        release_headers(&mut long_poll, Endpoint::LongPoll);
        release_headers(&mut sse, Endpoint::Sse);

        // Assert
        assert!(long_poll.headers().is_empty());
        assert_eq!(
            long_poll.headers().capacity(),
            0,
            "the map's memory is gone"
        );
        assert_eq!(sse.headers().get("last-event-id").unwrap(), "3");
    }

    #[test]
    fn only_a_long_poll_without_a_body_skips_the_router() {
        // Arrange
        let plain = TestRequest::get().uri("/longpoll?since=3").to_srv_request();
        let with_body = TestRequest::get()
            .uri("/longpoll")
            .insert_header((header::CONTENT_LENGTH, "5"))
            .to_srv_request();
        let chunked = TestRequest::get()
            .uri("/longpoll")
            .insert_header((header::TRANSFER_ENCODING, "chunked"))
            .to_srv_request();
        let posted = TestRequest::post().uri("/longpoll").to_srv_request();
        let poll = TestRequest::get().uri("/poll").to_srv_request();

        // Act
        let direct = |req: &ServiceRequest| served_directly(req.head());

        // Assert
        assert!(direct(&plain));
        assert!(!direct(&with_body), "the body timeout reads it");
        assert!(!direct(&chunked), "the body timeout reads it");
        assert!(!direct(&posted), "the router answers its 405");
        assert!(!direct(&poll));
    }

    #[test]
    fn a_long_poll_that_announces_a_body_keeps_its_headers_for_the_body_timeout() {
        // Arrange
        let mut with_body = TestRequest::get()
            .uri("/longpoll")
            .insert_header((header::CONTENT_LENGTH, "5"))
            .to_srv_request();

        // Act
        release_headers(&mut with_body, Endpoint::LongPoll);

        // Assert
        assert_eq!(body_on_wire(with_body.headers()), 5);
    }
}
