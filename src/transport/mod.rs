//! The HTTP face of pushlab: shared state, query parsing, and the small
//! endpoints (`/register`, `/send`, `/stats`, `/healthz`). Each transport
//! module turns the same three log calls into its own wire shape.

pub mod longpoll;
pub mod poll;
pub mod sse;
pub mod ws;
pub mod ws_stream;

use std::sync::Arc;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt as _;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::Config;
use crate::error::ApiError;
use crate::log::{Batch, EventLog, Seq};
use crate::protocol::{self, MAX_BODY_BYTES};
use crate::room::Room;
use crate::stats::{Counters, Stats, Transport};

/// What every handler shares. Built once, before the workers start, so every
/// worker serves the same log.
pub struct AppState {
    /// The log and who is in it.
    pub room: Room,
    /// The settings the server started with.
    pub config: Arc<Config>,
    /// Counters per transport.
    pub stats: Arc<Stats>,
    /// Requests in flight, against `--max-connections`.
    pub limit: Arc<crate::middleware::ConnectionLimit>,
    /// Cancelled when the server begins to shut down: held long-polls answer,
    /// streams end and sockets close with 1001.
    pub shutdown: CancellationToken,
}

impl AppState {
    /// The message log.
    pub fn log(&self) -> &Arc<dyn EventLog> {
        self.room.log()
    }

    /// The counters of one transport.
    pub fn counters(&self, transport: Transport) -> &Counters {
        self.stats.of(transport)
    }
}

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
}

impl ReadQuery {
    /// The epoch, treating an empty one as absent.
    pub fn epoch(&self) -> Option<&str> {
        self.epoch.as_deref().filter(|e| !e.is_empty())
    }
}

/// The query of `POST /send`.
#[derive(Debug, Deserialize)]
pub struct SendQuery {
    /// The sender's session.
    pub session: Uuid,
}

/// Turns actix's query-string errors into `bad_request` JSON.
pub fn query_error(
    err: actix_web::error::QueryPayloadError,
    _req: &HttpRequest,
) -> actix_web::Error {
    ApiError::BadRequest(format!("bad query string: {err}")).into()
}

/// The JSON body of a batch of events: `{events, cursor, epoch, gap}`.
///
/// The events are already JSON, so they are spliced in rather than
/// serialised again.
pub fn batch_body(batch: &Batch, log: &dyn EventLog) -> String {
    let events_len: usize = batch.events.iter().map(|e| e.json().len() + 1).sum();
    let mut body = String::with_capacity(events_len + 96);
    body.push_str("{\"events\":[");
    for (i, event) in batch.events.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(event.json());
    }
    body.push_str("],\"cursor\":");
    body.push_str(&batch.cursor.to_string());
    body.push_str(",\"epoch\":\"");
    // An epoch is a hex UUID: nothing in it needs escaping.
    body.push_str(log.epoch().as_str());
    body.push_str("\",\"gap\":");
    body.push_str(if batch.gap { "true" } else { "false" });
    body.push('}');
    body
}

/// Answers a poll or long-poll with a batch, and counts it.
pub fn batch_response(state: &AppState, transport: Transport, batch: &Batch) -> HttpResponse {
    let body = batch_body(batch, state.log().as_ref());
    let counters = state.counters(transport);
    counters.sent(batch.events.len(), body.len());
    if batch.events.is_empty() {
        counters.empty();
    }
    HttpResponse::Ok()
        .content_type("application/json")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(body)
}

/// Reads a JSON request body of at most [`MAX_BODY_BYTES`].
async fn read_json_body(
    req: &HttpRequest,
    mut payload: web::Payload,
) -> Result<web::Bytes, ApiError> {
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(ApiError::UnsupportedMediaType);
    }
    let too_large = || ApiError::TooLarge(format!("the body is over {MAX_BODY_BYTES} bytes"));
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > MAX_BODY_BYTES) {
        return Err(too_large());
    }
    let mut body = web::BytesMut::with_capacity(declared.unwrap_or(256));
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|err| ApiError::BadRequest(format!("could not read the body: {err}")))?;
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// `POST /register`: `{name}` → the welcome.
pub async fn register(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_json_body(&req, payload).await?;
    let name = protocol::parse_register_request(&body)?;
    let welcome = state.room.register(name).await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(welcome))
}

/// `POST /send?session=S`: one client message → `{seq}` of its event.
pub async fn send(
    state: web::Data<AppState>,
    query: web::Query<SendQuery>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_json_body(&req, payload).await?;
    let message = protocol::parse_client_message(&body)?;
    let seq = state.room.submit(query.session, message).await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(serde_json::json!({ "seq": seq })))
}

/// `GET /stats`: counters per transport, plus the log's head and who is online.
pub async fn stats(state: web::Data<AppState>) -> HttpResponse {
    let log = state.log();
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(serde_json::json!({
            "transports": state.stats.view(),
            "head": log.head(),
            "epoch": log.epoch(),
            "online": state.room.presence().users().len(),
            "connections": state.limit.open(),
        }))
}

/// `GET /healthz`: 200 while the server is serving.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(serde_json::json!({ "status": "ok" }))
}
