//! The small HTTP endpoints (`/register`, `/send`, `/stats`, `/config`,
//! `/healthz`), and
//! the query and body shapes every endpoint shares.

use actix_web::error::{JsonPayloadError, QueryPayloadError};
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::core::error::ApiError;
use crate::core::log::{Cursor, Seq};
use crate::core::names::RoomName;
use crate::core::protocol::{self, MAX_BODY_BYTES};
use crate::http::admission::ClientIp;
use crate::http::http_error::HttpError;
use crate::http::state::AppState;

/// The query every read endpoint takes.
#[derive(Debug, Deserialize)]
pub struct ReadQuery {
    /// Deliver events with seq greater than this.
    #[serde(default)]
    pub since: Seq,
    /// The epoch the cursor came from.
    pub epoch: Option<String>,
    /// The reader's session, if it is registered.
    pub session: Option<Uuid>,
    /// Long-poll only: seconds to hold the request.
    pub timeout: Option<f64>,
    /// The room to read; the lobby when absent.
    pub room: Option<String>,
    /// WebSocket only: whether the socket takes WebRTC signals for its
    /// session (`signals=true`).
    #[serde(default)]
    pub signals: bool,
}

impl ReadQuery {
    /// Where the reader stands: `since` in `epoch`.
    pub fn cursor(&self) -> Cursor {
        Cursor {
            seq: self.since,
            epoch: self.epoch.clone(),
        }
    }

    /// Parses a raw query string, as the upgrade path and the long-poll
    /// that skips the router must do without an extractor, to the same
    /// query and the same refusal as the extractor gives.
    pub fn parse(query: &str) -> Result<ReadQuery, ApiError> {
        if let Some(plain) = ReadQuery::parse_plain(query) {
            return Ok(plain);
        }
        web::Query::<ReadQuery>::from_query(query)
            .map(web::Query::into_inner)
            .map_err(|err| bad_query(&err))
    }

    /// The query as the readers send it, read without the general parser,
    /// which decodes every pair and walks serde's machinery for each: each
    /// field at most once, and every key and value of characters that
    /// decode to themselves (no `%`, no `+`). Values are read as the
    /// general parser reads them (`str::parse`), and other keys ignored as
    /// it ignores them. Anything else, and a value that does not parse,
    /// gives `None`: the general parser reads it and words the refusal.
    fn parse_plain(query: &str) -> Option<ReadQuery> {
        let plain = |text: &str| {
            text.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
        };
        let mut read = ReadQuery {
            since: 0,
            epoch: None,
            session: None,
            timeout: None,
            room: None,
            signals: false,
        };
        let mut seen = [false; 6];
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (key, value) = pair.split_once('=')?;
            if !plain(key) || !plain(value) {
                return None;
            }
            let field = match key {
                "since" => 0,
                "epoch" => 1,
                "session" => 2,
                "timeout" => 3,
                "room" => 4,
                "signals" => 5,
                _ => continue,
            };
            if std::mem::replace(&mut seen[field], true) {
                return None;
            }
            match field {
                0 => read.since = value.parse().ok()?,
                1 => read.epoch = Some(value.to_owned()),
                2 => read.session = Some(value.parse().ok()?),
                3 => read.timeout = Some(value.parse().ok()?),
                4 => read.room = Some(value.to_owned()),
                _ => read.signals = value.parse().ok()?,
            }
        }
        Some(read)
    }
}

/// The query of `POST /send`.
#[derive(Debug, Deserialize)]
pub struct SendQuery {
    /// The sender's session.
    pub session: Uuid,
    /// The session's room; the lobby when absent.
    pub room: Option<String>,
}

/// The query of `POST /register` and `GET /stats`.
#[derive(Debug, Deserialize)]
pub struct RoomQuery {
    /// The room; the lobby when absent.
    pub room: Option<String>,
}

fn bad_query(err: &QueryPayloadError) -> ApiError {
    ApiError::BadRequest(format!("bad query string: {err}"))
}

/// How query strings are read: a bad one is `bad_request` JSON.
pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|err, _req| bad_query(&err).into())
}

/// How JSON bodies are read: `application/json` only, at most
/// [`MAX_BODY_BYTES`], and malformed JSON is `bad_json`. The body is kept as
/// raw JSON, so that the protocol's own parser judges its shape and every
/// transport gives the same bytes the same answer.
pub fn json_config() -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(MAX_BODY_BYTES)
        .content_type_required(true)
        .content_type(|mime| mime.essence_str().eq_ignore_ascii_case("application/json"))
        .error_handler(json_error)
}

fn json_error(err: JsonPayloadError, _req: &HttpRequest) -> actix_web::Error {
    let refusal: HttpError = match err {
        JsonPayloadError::OverflowKnownLength { .. } | JsonPayloadError::Overflow { .. } => {
            ApiError::TooLarge(format!("the body is over {MAX_BODY_BYTES} bytes")).into()
        }
        JsonPayloadError::ContentType => HttpError::UnsupportedMediaType,
        JsonPayloadError::Deserialize(err) => {
            ApiError::BadJson(format!("the body is not valid JSON: {err}")).into()
        }
        other => ApiError::BadRequest(format!("could not read the body: {other}")).into(),
    };
    refusal.into()
}

/// A JSON body, checked for syntax only.
pub type JsonBody = web::Json<Box<RawValue>>;

fn no_store(mut response: actix_web::HttpResponseBuilder) -> actix_web::HttpResponseBuilder {
    response.insert_header((header::CACHE_CONTROL, "no-store"));
    response
}

/// `POST /register[?room=R]`: `{name, observer?}` → the welcome.
pub async fn register(
    state: web::Data<AppState>,
    query: web::Query<RoomQuery>,
    ip: web::ReqData<ClientIp>,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    let registration = protocol::parse_register_request(body.get().as_bytes())?;
    let room = state.enter(query.room.as_deref(), None, ip.0).await?;
    let welcome = room.register_from(registration, Some(ip.0)).await?;
    Ok(no_store(HttpResponse::Ok()).json(welcome))
}

/// `POST /send?session=S[&room=R]`: one client message → `{seq}` of its event.
pub async fn send(
    state: web::Data<AppState>,
    query: web::Query<SendQuery>,
    ip: web::ReqData<ClientIp>,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    let message = protocol::parse_client_message(body.get().as_bytes())?;
    let room = state
        .enter(query.room.as_deref(), Some(query.session), ip.0)
        .await?;
    let seq = room.submit(query.session, message).await?;
    Ok(no_store(HttpResponse::Ok()).json(serde_json::json!({ "seq": seq })))
}

/// `GET /rooms`: the listed rooms (not those whose name starts with `_`),
/// busiest first, with who is online and their head seq.
pub async fn rooms(state: web::Data<AppState>) -> HttpResponse {
    let rooms: Vec<_> = state
        .rooms
        .list()
        .into_iter()
        .filter(|room| room.name.is_listed())
        .map(|room| serde_json::json!({ "name": room.name, "online": room.online, "head": room.head }))
        .collect();
    no_store(HttpResponse::Ok()).json(serde_json::json!({ "rooms": rooms }))
}

/// `GET /stats[?room=R]`: counters per transport in total; the head, epoch
/// and who is online in one room (the lobby by default, or any room asked
/// for by name); and every open listed room. Unlisted rooms (`_` names)
/// are only counted together: a room's name is its only secret.
pub async fn stats(
    state: web::Data<AppState>,
    query: web::Query<RoomQuery>,
) -> Result<HttpResponse, HttpError> {
    let name = match &query.room {
        Some(room) => RoomName::parse(room)?,
        None => RoomName::lobby(),
    };
    let rooms = state.rooms.list();
    let room = rooms
        .iter()
        .find(|room| room.name == name)
        .ok_or_else(|| HttpError::NotFound(format!("room {name}")))?;
    let (listed, unlisted): (Vec<_>, Vec<_>) = rooms.iter().partition(|r| r.name.is_listed());
    Ok(no_store(HttpResponse::Ok()).json(serde_json::json!({
        "transports": state.stats.view(),
        "signals": state.stats.signals.view(),
        "room": room.name,
        "head": room.head,
        "epoch": room.epoch,
        "online": room.online,
        "connections": state.limit.open(),
        "total": {
            "rooms": rooms.len(),
            "online": rooms.iter().map(|r| r.online).sum::<usize>(),
        },
        "rooms": listed,
        "unlisted": {
            "rooms": unlisted.len(),
            "online": unlisted.iter().map(|r| r.online).sum::<usize>(),
            "readers": unlisted.iter().map(|r| r.readers).sum::<usize>(),
        },
        "server": {
            "delay_ms": state.config.delay_ms,
            "walkthrough": state.config.walkthrough,
            "demo": state.demo.as_ref().map(|demo| serde_json::json!({
                "room": demo.room,
                "rate": demo.now(),
            })),
            "clients": state.clients.len(),
        },
    })))
}

/// `GET /config`: what a page needs to know of the server's settings: the
/// ICE servers for its WebRTC peer connections, the bounds on signals, and
/// whether it is served over TLS, with the certificate's SHA-256 when it is
/// pushlab's own self-signed one (what WebTransport's
/// `serverCertificateHashes` pins; a certificate from a CA needs no pin),
/// where WebTransport is (`null` without `--webtransport`), and the port of
/// the plain HTTP/1.1 listener beside HTTPS (`null` without
/// `--http1-addr`), for the page that compares HTTP/1.1 with HTTP/2.
pub async fn client_config(state: web::Data<AppState>) -> HttpResponse {
    let pinned = state
        .certificate
        .as_ref()
        .filter(|certificate| certificate.self_signed)
        .map(|certificate| certificate.sha256_hex());
    no_store(HttpResponse::Ok()).json(serde_json::json!({
        "tls": state.certificate.is_some(),
        "certificate_sha256": pinned,
        "ice_servers": crate::http::ice::for_page(&state.config, std::time::SystemTime::now()),
        "signals": {
            "max_bytes": crate::core::signals::MAX_SIGNAL_BYTES,
            "per_second": state.config.signal_rate,
        },
        "webtransport": state.webtransport,
        "http1": state.http1.map(|addr| serde_json::json!({ "port": addr.port() })),
    }))
}

/// `GET /healthz`: 200 while the server is serving.
pub async fn healthz() -> HttpResponse {
    no_store(HttpResponse::Ok()).json(serde_json::json!({ "status": "ok" }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The general parser alone, as the extractor reads a query.
    fn general(query: &str) -> Result<ReadQuery, String> {
        web::Query::<ReadQuery>::from_query(query)
            .map(web::Query::into_inner)
            .map_err(|err| bad_query(&err).to_string())
    }

    #[test]
    fn a_query_is_read_as_the_extractor_reads_it_whichever_parser_reads_it() {
        let session = "67e55044-10b1-426f-9247-bb680e5fe0c8";
        let queries = [
            String::new(),
            "since=5".into(),
            format!("since=12&epoch=ab-c.d_e~f&session={session}&timeout=2.5&room=r1&signals=true"),
            "since=3&client=someone&_=12345".into(),
            "since=1&&timeout=0".into(),
            "timeout=NaN".into(),
            "timeout=1e20".into(),
            "epoch=".into(),
            // Each of these is left to the general parser.
            "since=1&since=2".into(),
            "since=-1".into(),
            "since=".into(),
            "since".into(),
            "since=%35".into(),
            "%73ince=4".into(),
            "room=a+b".into(),
            "session=not-a-uuid".into(),
            "signals=yes".into(),
            "since=1&other=%zz".into(),
        ];
        for query in &queries {
            let read = ReadQuery::parse(query).map_err(|err| err.to_string());
            assert_eq!(
                format!("{read:?}"),
                format!("{:?}", general(query)),
                "{query}"
            );
        }
    }

    #[test]
    fn the_plain_reading_takes_what_readers_send_and_leaves_the_rest() {
        assert!(ReadQuery::parse_plain("since=4&epoch=e1&timeout=25").is_some());
        assert!(ReadQuery::parse_plain("since=1&since=2").is_none());
        assert!(ReadQuery::parse_plain("room=a%20b").is_none());
        assert!(ReadQuery::parse_plain("since=x").is_none());
    }
}
