//! Short polling: `GET /poll` answers at once with whatever is newer than the
//! cursor, often nothing. The client asks again after its interval.

use actix_web::{web, HttpResponse};

use super::{batch_response, AppState, ReadQuery};
use crate::error::ApiError;
use crate::stats::Transport;

/// `GET /poll?since=N[&epoch=E][&session=S]` → `{events, cursor, epoch, gap}`.
pub async fn poll(
    state: web::Data<AppState>,
    query: web::Query<ReadQuery>,
) -> Result<HttpResponse, ApiError> {
    state.counters(Transport::Poll).request();
    if let Some(session) = query.session {
        state.room.presence().touch(session)?;
    }
    let batch = state.log().read_since(query.since, query.epoch());
    Ok(batch_response(&state, Transport::Poll, &batch))
}
