//! Short polling: `GET /poll` answers at once with whatever is newer than the
//! cursor, often nothing. The client asks again after its interval.

use actix_web::http::header;
use actix_web::{web, HttpResponse};

use super::Transport;
use crate::core::error::ApiError;
use crate::core::log::{Epoch, Read, Reader, Seq};
use crate::http::admission::ClientIp;
use crate::http::api::ReadQuery;
use crate::http::state::AppState;

/// The most bytes of events one poll or long-poll answer carries (besides
/// the MAX_BATCH events a read takes at most). A client with more to catch
/// up sees `more: true` and asks again at once.
pub const POLL_ANSWER_BYTES: usize = 256 * 1024;

/// `GET /poll?since=N[&epoch=E][&session=S][&room=R]` → `{events, cursor, epoch, gap, more}`.
///
/// The session is attached only while the answer is made, which marks it
/// active.
pub async fn poll(
    state: web::Data<AppState>,
    query: web::Query<ReadQuery>,
    ip: web::ReqData<ClientIp>,
) -> Result<HttpResponse, ApiError> {
    let opened = super::open(&state, Transport::Poll, &query, ip.0).await?;
    let mut reader = opened.room.reader(query.cursor());
    let read = reader.next(POLL_ANSWER_BYTES);
    Ok(batch_response(&state, Transport::Poll, &reader, &read))
}

/// The JSON body of a poll answer: `{events, cursor, epoch, gap, more}`.
///
/// The events are already JSON, so they are spliced in rather than
/// serialised again.
pub fn batch_body(read: &Read, cursor: Seq, epoch: &Epoch) -> String {
    let events_len: usize = read.events.iter().map(|e| e.json().len() + 1).sum();
    let mut body = String::with_capacity(events_len + 96);
    body.push_str("{\"events\":[");
    for (i, event) in read.events.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(event.json());
    }
    body.push_str("],\"cursor\":");
    body.push_str(itoa::Buffer::new().format(cursor));
    body.push_str(",\"epoch\":\"");
    // An epoch is a hex UUID: nothing in it needs escaping.
    body.push_str(epoch.as_str());
    body.push_str("\",\"gap\":");
    body.push_str(if read.gap.is_some() { "true" } else { "false" });
    body.push_str(",\"more\":");
    body.push_str(if read.more { "true" } else { "false" });
    body.push('}');
    body
}

/// Answers a poll or long-poll with what the reader read, and counts it.
/// Requests that read the same events share one body
/// ([`crate::http::answers`]).
pub fn batch_response(
    state: &AppState,
    transport: Transport,
    reader: &Reader,
    read: &Read,
) -> HttpResponse {
    let (cursor, epoch) = (reader.cursor(), reader.epoch());
    let body = state
        .answers
        .body(read, cursor, &epoch, || batch_body(read, cursor, &epoch));
    let counters = state.counters(transport);
    counters.sent(read.events.len(), body.len());
    if read.events.is_empty() {
        counters.empty();
    }
    HttpResponse::Ok()
        .content_type("application/json")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(body)
}
