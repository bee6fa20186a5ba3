//! WebSocket: `GET /ws` upgrades to a persistent two-way connection, one JSON
//! text frame per message in each direction.
//!
//! The handler only checks the request and does the handshake; one task per
//! socket then runs a single `select!` over client frames, new log events,
//! the ping timer and shutdown, and closes the socket once, with a reason.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::{
    AggregatedMessage, AggregatedMessageStream, CloseCode, CloseReason, Closed, Session,
};
use tokio::time::{interval_at, Instant};

use super::{AppState, ReadQuery};
use crate::config::{Config, WS_MISSED_PONGS, WS_PING_INTERVAL};
use crate::error::ApiError;
use crate::log::Seq;
use crate::presence::ConnectionGuard;
use crate::protocol::{self, ClientMessage, Control, MAX_BODY_BYTES};
use crate::stats::Transport;

/// `GET /ws[?session=S&since=N&epoch=E]`.
///
/// Without a session the socket observes, and its first frame may be a
/// `register`. With one, it attaches to that session and first receives the
/// events after `since`.
pub async fn websocket(
    state: web::Data<AppState>,
    query: web::Query<ReadQuery>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    check_origin(&req, &state.config)?;
    state.counters(Transport::Ws).request();
    let attached = query
        .session
        .map(|s| state.room.presence().connect(s))
        .transpose()?;
    let (response, out, frames) = actix_ws::handle(&req, body)
        .map_err(|_| ApiError::BadRequest("GET /ws expects a WebSocket upgrade".into()))?;
    let frames = frames
        .max_frame_size(MAX_BODY_BYTES)
        .aggregate_continuations()
        .max_continuation_size(MAX_BODY_BYTES);
    let socket = Socket {
        cursor: query.since,
        epoch: query.epoch().map(str::to_owned),
        attached,
        out,
        state,
    };
    actix_web::rt::spawn(socket.run(frames));
    Ok(response)
}

/// Refuses an upgrade from a page on another origin unless it is allowed.
/// Clients that send no Origin (not browsers) are not affected.
fn check_origin(req: &HttpRequest, config: &Config) -> Result<(), ApiError> {
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin
        .to_str()
        .map_err(|_| ApiError::ForbiddenOrigin("(not text)".into()))?;
    if config.origin_allowed(origin) {
        return Ok(());
    }
    let own_host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok());
    let origin_host = origin.split_once("://").map(|(_, host)| host);
    match (own_host, origin_host) {
        (Some(own), Some(theirs)) if own.eq_ignore_ascii_case(theirs) => Ok(()),
        _ => Err(ApiError::ForbiddenOrigin(origin.to_owned())),
    }
}

/// What the loop does after handling a client frame.
enum Next {
    Continue,
    Close(Option<CloseReason>),
}

struct Socket {
    state: web::Data<AppState>,
    /// The last seq sent on this socket.
    cursor: Seq,
    /// The client's epoch, checked on the first read only.
    epoch: Option<String>,
    /// The session this socket speaks for, once it has one.
    attached: Option<ConnectionGuard>,
    out: Session,
}

impl Socket {
    async fn run(mut self, mut frames: AggregatedMessageStream) {
        let _open = self.state.stats.open(Transport::Ws);
        let reason = self.serve(&mut frames).await;
        if let Ok(reason) = reason {
            let _ = self.out.close(reason).await;
        }
    }

    /// Runs until the socket should close; `Err` means it is already gone.
    async fn serve(
        &mut self,
        frames: &mut AggregatedMessageStream,
    ) -> Result<Option<CloseReason>, Closed> {
        let log = self.state.log().clone();
        let hello = Control::Hello {
            epoch: log.epoch().clone(),
            cursor: self.cursor,
        };
        self.send_control(&hello).await?;
        let mut ping = interval_at(Instant::now() + WS_PING_INTERVAL, WS_PING_INTERVAL);
        let mut missed_pongs = 0;
        loop {
            self.flush().await?;
            tokio::select! {
                biased;
                _ = self.state.shutdown.cancelled() => {
                    return Ok(Some(CloseReason {
                        code: CloseCode::Away,
                        description: Some("server shutting down".into()),
                    }));
                }
                frame = frames.recv() => {
                    let next = match frame {
                        None => return Err(Closed),
                        Some(Err(err)) => {
                            tracing::debug!(%err, "websocket protocol error");
                            Next::Close(Some(protocol_close(&err)))
                        }
                        Some(Ok(AggregatedMessage::Text(text))) => self.on_text(text.as_bytes()).await?,
                        Some(Ok(AggregatedMessage::Binary(_))) => {
                            let err = ApiError::BadRequest("send JSON in text frames".into());
                            self.send_control(&Control::from(&err)).await?;
                            Next::Continue
                        }
                        Some(Ok(AggregatedMessage::Ping(payload))) => {
                            self.out.pong(&payload).await?;
                            Next::Continue
                        }
                        Some(Ok(AggregatedMessage::Pong(_))) => {
                            missed_pongs = 0;
                            Next::Continue
                        }
                        Some(Ok(AggregatedMessage::Close(_))) => {
                            // A clean close ends the session at once.
                            if let Some(guard) = self.attached.take() {
                                self.state.room.end(guard.session()).await;
                            }
                            Next::Close(None)
                        }
                    };
                    if let Next::Close(reason) = next {
                        return Ok(reason);
                    }
                }
                _ = log.wait_after(self.cursor) => {}
                _ = ping.tick() => {
                    if missed_pongs >= WS_MISSED_PONGS {
                        return Ok(Some(CloseReason {
                            code: CloseCode::Policy,
                            description: Some("no pong".into()),
                        }));
                    }
                    missed_pongs += 1;
                    self.out.ping(b"").await?;
                }
            }
        }
    }

    /// Sends every event after the cursor.
    async fn flush(&mut self) -> Result<(), Closed> {
        let log = self.state.log().clone();
        let state = self.state.clone();
        let counters = state.counters(Transport::Ws);
        loop {
            let batch = log.read_since(self.cursor, self.epoch.take().as_deref());
            if batch.gap {
                let cursor = batch.events.first().map_or(batch.cursor, |e| e.seq - 1);
                let epoch = log.epoch().clone();
                self.send_control(&Control::Gap { epoch, cursor }).await?;
            }
            if batch.events.is_empty() {
                self.cursor = batch.cursor;
                return Ok(());
            }
            for event in &batch.events {
                counters.sent(1, event.json().len());
                self.out.text(event.json_shared()).await?;
                self.cursor = event.seq;
            }
        }
    }

    async fn on_text(&mut self, bytes: &[u8]) -> Result<Next, Closed> {
        let message = match protocol::parse_client_message(bytes) {
            Ok(message) => message,
            Err(err) => {
                let control = Control::Error {
                    code: err.code(),
                    error: err.to_string(),
                    id: refused_message_id(bytes),
                };
                self.send_control(&control).await?;
                return Ok(Next::Continue);
            }
        };
        let room = self.state.room.clone();
        match (message, &self.attached) {
            (ClientMessage::Register(name), None) => match room.register(name).await {
                Ok(welcome) => match room.presence().connect(welcome.session) {
                    Ok(guard) => {
                        self.attached = Some(guard);
                        // The welcome's history and users describe the room
                        // up to its cursor; events resume after it.
                        self.cursor = self.cursor.max(welcome.cursor);
                        self.send_control(&Control::Welcome(welcome)).await?;
                    }
                    Err(err) => self.send_control(&Control::from(&err)).await?,
                },
                Err(err) => self.send_control(&Control::from(&err)).await?,
            },
            (ClientMessage::Leave, Some(guard)) => {
                room.end(guard.session()).await;
                self.attached = None;
                return Ok(Next::Close(Some(CloseReason {
                    code: CloseCode::Normal,
                    description: Some("left".into()),
                })));
            }
            (_, None) => {
                self.send_control(&Control::from(&ApiError::UnknownSession))
                    .await?;
            }
            (message, Some(guard)) => {
                let id = match &message {
                    ClientMessage::Message { id, .. } => id.clone(),
                    _ => None,
                };
                if let Err(err) = room.submit(guard.session(), message).await {
                    let control = Control::Error {
                        code: err.code(),
                        error: err.to_string(),
                        id,
                    };
                    self.send_control(&control).await?;
                }
            }
        }
        Ok(Next::Continue)
    }

    async fn send_control(&mut self, control: &Control) -> Result<(), Closed> {
        let json = control.to_json();
        self.state.counters(Transport::Ws).sent(0, json.len());
        self.out.text(json).await
    }
}

/// The `id` of a refused chat message, when it can still be read, so the
/// client can mark that message as failed.
fn refused_message_id(bytes: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct WithId {
        id: String,
    }
    serde_json::from_slice::<WithId>(bytes)
        .ok()
        .map(|m| m.id)
        .filter(|id| id.chars().count() <= protocol::MAX_ID_CHARS)
}

fn protocol_close(err: &actix_ws::ProtocolError) -> CloseReason {
    let code = match err {
        actix_ws::ProtocolError::Overflow => CloseCode::Size,
        _ => CloseCode::Protocol,
    };
    CloseReason {
        code,
        description: Some(err.to_string()),
    }
}
