//! What a lecturer's page needs besides the four transports: each client's
//! exact traffic (`GET /traffic`), the server's clock (`GET /time`), the URL
//! students should open (`GET /join`) and a QR code of it (`GET /qr.svg`);
//! the lecture notes ([`lecture`]: `GET /lecture.md`, `/lecture.html`); and
//! the `--demo` bot's publish rate (`POST /demo`). What `GET /traffic`
//! reports is charged by admission ([`crate::http::admission`]) and counted
//! in [`crate::net::traffic`].

pub mod demo;
pub mod lecture;

use std::net::{IpAddr, SocketAddr};

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use serde::Deserialize;

use crate::core::error::ApiError;
use crate::core::log::now_millis;
use crate::core::names::RoomName;
use crate::http::api::{JsonBody, RoomQuery};
use crate::http::http_error::HttpError;
use crate::http::state::AppState;
use crate::net::traffic::ClientId;

/// The longest text `GET /qr.svg` draws, in bytes: a URL with a room fits
/// many times over.
pub const MAX_QR_TEXT: usize = 512;

fn no_store(mut response: actix_web::HttpResponseBuilder) -> actix_web::HttpResponseBuilder {
    response.insert_header((header::CACHE_CONTROL, "no-store"));
    response
}

/// The query of `GET /traffic`.
#[derive(Debug, Deserialize)]
pub struct TrafficQuery {
    /// The client asked about.
    pub client: String,
}

/// `GET /traffic?client=ID`: what that client's requests have cost, per
/// channel, counted on the socket: `{client, poll, longpoll, sse, ws, other}`,
/// each `{requests, bytes_in, bytes_out}`.
pub async fn traffic(
    state: web::Data<AppState>,
    query: web::Query<TrafficQuery>,
) -> Result<HttpResponse, ApiError> {
    let client = ClientId::parse(&query.client).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "client must be 1 to {} characters from A-Z a-z 0-9 _ -",
            crate::net::traffic::MAX_CLIENT_ID
        ))
    })?;
    let view = state.clients.view(&client);
    let mut body = serde_json::to_value(view).map_err(|_| ApiError::Internal)?;
    body["client"] = client.as_str().into();
    Ok(no_store(HttpResponse::Ok()).json(body))
}

/// The highest rate `POST /demo` sets when `--rate-limit` is 0 (no limit):
/// the highest `--demo-rate` takes.
pub const MAX_DEMO_RATE: u32 = 1000;

/// The body of `POST /demo`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DemoBody {
    /// Events a second.
    rate: u32,
}

/// `POST /demo[?room=R]` `{"rate": N}`: sets the `--demo` bot's publish
/// rate, live, so that a page's "idle", "1/s" or "50/s" is what really
/// happens in the bot's room: N events a second, chat lines included; 0
/// for none (the bot leaves until a rate above 0 brings it back). Answers
/// `{room, rate}`. Like sending, it needs no session: the bot is the
/// class's shared demo. The rate is at most `--rate-limit`, past which the
/// bot's own sends would be refused.
pub async fn demo_rate(
    state: web::Data<AppState>,
    query: web::Query<RoomQuery>,
    body: JsonBody,
) -> Result<HttpResponse, HttpError> {
    let room = match query.room.as_deref() {
        Some(raw) => RoomName::parse(raw)?,
        None => RoomName::lobby(),
    };
    let demo = state
        .demo
        .as_ref()
        .filter(|demo| demo.room == room)
        .ok_or_else(|| {
            HttpError::NotFound(format!(
                "the demo bot of room {room} (start pushlab with --demo --demo-room {room})"
            ))
        })?;
    let DemoBody { rate } = serde_json::from_str(body.get()).map_err(|err| {
        ApiError::BadRequest(format!(
            "expected {{\"rate\": N}}, N events a second: {err}"
        ))
    })?;
    let max = match state.config.rate_limit {
        0 => MAX_DEMO_RATE,
        limit => limit.min(MAX_DEMO_RATE),
    };
    if rate > max {
        return Err(ApiError::BadRequest(format!(
            "rate {rate} is above {max} events a second, the bot's limit (--rate-limit)"
        ))
        .into());
    }
    demo.rate.send_replace(rate);
    Ok(no_store(HttpResponse::Ok()).json(serde_json::json!({ "room": room, "rate": rate })))
}

/// `GET /time`: the server's clock in Unix milliseconds (the clock of every
/// event's `ts`), for a client to estimate its own clock's offset.
pub async fn time() -> HttpResponse {
    no_store(HttpResponse::Ok()).json(serde_json::json!({ "now": now_millis() }))
}

/// `GET /join`: the URLs students can open, from the address the server is
/// bound to.
pub async fn join(state: web::Data<AppState>) -> HttpResponse {
    let bound = state.addr;
    let mut urls = join_urls(bound, &local_addresses());
    if state.certificate.is_some() {
        for url in &mut urls {
            *url = url.replacen("http://", "https://", 1);
        }
    }
    no_store(HttpResponse::Ok()).json(serde_json::json!({
        "bound": bound.to_string(),
        "reachable": !bound.ip().is_loopback(),
        "urls": urls,
    }))
}

/// This machine's addresses, read from its interfaces (nothing is sent).
pub fn local_addresses() -> Vec<IpAddr> {
    if_addrs::get_if_addrs()
        .map(|interfaces| interfaces.into_iter().map(|i| i.ip()).collect())
        .unwrap_or_default()
}

/// The base URLs of a server bound to `bound`: that address itself, or,
/// bound to every address (`0.0.0.0` or `::`), each of `local` that another
/// machine could reach (not loopback, not IPv6 link-local), IPv4 first.
pub fn join_urls(bound: SocketAddr, local: &[IpAddr]) -> Vec<String> {
    let url = |ip: IpAddr| match ip {
        IpAddr::V4(v4) => format!("http://{v4}:{}/", bound.port()),
        IpAddr::V6(v6) => format!("http://[{v6}]:{}/", bound.port()),
    };
    if !bound.ip().is_unspecified() {
        return vec![url(bound.ip())];
    }
    let mut reachable: Vec<IpAddr> = local
        .iter()
        .copied()
        .filter(|ip| !ip.is_loopback())
        .filter(|ip| match ip {
            IpAddr::V4(_) => true,
            // Only `::` listens on IPv6; a link-local address needs a zone.
            IpAddr::V6(v6) => bound.is_ipv6() && (v6.segments()[0] & 0xffc0) != 0xfe80,
        })
        .collect();
    reachable.sort_by_key(|ip| ip.is_ipv6());
    reachable.dedup();
    if reachable.is_empty() {
        return vec![url(IpAddr::from([127, 0, 0, 1]))];
    }
    reachable.into_iter().map(url).collect()
}

/// The query of `GET /qr.svg`.
#[derive(Debug, Deserialize)]
pub struct QrQuery {
    /// What to encode.
    pub text: String,
}

/// `GET /qr.svg?text=T`: `T` as a QR code, drawn here as SVG.
pub async fn qr(query: web::Query<QrQuery>) -> Result<HttpResponse, ApiError> {
    if query.text.is_empty() || query.text.len() > MAX_QR_TEXT {
        return Err(ApiError::BadRequest(format!(
            "text must be 1 to {MAX_QR_TEXT} bytes"
        )));
    }
    let code = qrcode::QrCode::new(query.text.as_bytes())
        .map_err(|err| ApiError::BadRequest(format!("cannot encode that text: {err}")))?;
    let svg = code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(200, 200)
        .quiet_zone(true)
        .build();
    Ok(no_store(HttpResponse::Ok())
        .content_type("image/svg+xml")
        .body(svg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_bound_to_every_address_is_joined_at_each_reachable_one() {
        let local: Vec<IpAddr> = ["127.0.0.1", "192.168.1.20", "::1", "fe80::1", "2001:db8::5"]
            .iter()
            .map(|ip| ip.parse().unwrap())
            .collect();
        let v4: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert_eq!(join_urls(v4, &local), ["http://192.168.1.20:8080/"]);
        let v6: SocketAddr = "[::]:8080".parse().unwrap();
        assert_eq!(
            join_urls(v6, &local),
            ["http://192.168.1.20:8080/", "http://[2001:db8::5]:8080/"]
        );
        let own: SocketAddr = "10.0.0.7:9000".parse().unwrap();
        assert_eq!(join_urls(own, &local), ["http://10.0.0.7:9000/"]);
        assert_eq!(join_urls(v4, &[]), ["http://127.0.0.1:8080/"]);
    }
}
