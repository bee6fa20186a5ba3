//! What a lecturer's page needs besides the four transports: each client's
//! exact traffic (`GET /traffic`), the server's clock (`GET /time`), the URL
//! students should open (`GET /join`) and a QR code of it (`GET /qr.svg`);
//! and the lecture notes ([`lecture`]: `GET /lecture.md`, `/lecture.html`).
//! What `GET /traffic` reports is charged by admission
//! ([`crate::http::admission`]) and counted in [`crate::net::traffic`].

pub mod demo;
pub mod lecture;

use std::net::{IpAddr, SocketAddr};

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use serde::Deserialize;

use crate::core::error::ApiError;
use crate::core::log::now_millis;
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
