//! Long polling: `GET /longpoll` answers at once if something is newer than
//! the cursor; otherwise it holds the request until something is, or until
//! its timeout. Waiting is a notification from the log, never a re-check.

use std::future::Future;
use std::net::IpAddr;
use std::time::Duration;

use actix_web::{web, HttpResponse};

use super::poll::{batch_response, POLL_ANSWER_BYTES};
use super::{Opened, Transport};
use crate::config::DEFAULT_LONGPOLL_SECS;
use crate::core::error::ApiError;
use crate::http::admission::ClientIp;
use crate::http::api::ReadQuery;
use crate::http::state::AppState;

/// `GET /longpoll?since=N[&epoch=E][&session=S][&timeout=T][&room=R]`.
///
/// A session holds at most one long-poll: a second one answers the first at
/// once, empty. While held, the request counts as the session's activity.
///
/// The router's handler; a long-poll without a body skips the router and
/// is answered by [`answer_query`] straight from admission (see `server`).
pub async fn long_poll(
    state: web::Data<AppState>,
    query: web::Query<ReadQuery>,
    ip: web::ReqData<ClientIp>,
) -> Result<HttpResponse, ApiError> {
    answer(state, query.into_inner(), ip.0).await
}

/// The long-poll for the raw `query` from the client at `ip`, once
/// admitted without the router: the query read as the router's extractor
/// reads it ([`ReadQuery::parse`], the same refusal), then [`answer`].
pub fn answer_query(
    state: web::Data<AppState>,
    query: &str,
    ip: IpAddr,
) -> Result<impl Future<Output = Result<HttpResponse, ApiError>>, ApiError> {
    let query = ReadQuery::parse(query)?;
    Ok(answer(state, query, ip))
}

/// The long-poll for `query` from the client at `ip`, once admitted: what
/// [`long_poll`] answers, for either way in.
pub async fn answer(
    state: web::Data<AppState>,
    query: ReadQuery,
    ip: IpAddr,
) -> Result<HttpResponse, ApiError> {
    let hold = hold_for(query.timeout, state.config.longpoll_cap())?;
    let Opened { room, attached } = super::open(&state, Transport::LongPoll, &query, ip).await?;
    let replaced = attached.as_ref().map(|a| a.hold_long_poll()).transpose()?;

    let mut reader = room.reader(query.cursor());
    let mut read = reader.next(POLL_ANSWER_BYTES);
    if read.events.is_empty() && read.gap.is_none() {
        let _open = state.stats.open(Transport::LongPoll);
        let superseded = async {
            match &replaced {
                Some(notify) => notify.notified().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = reader.newer() => read = reader.next(POLL_ANSWER_BYTES),
            _ = tokio::time::sleep(hold) => {}
            _ = superseded => {}
            _ = state.shutdown.cancelled() => {}
        }
    }
    Ok(batch_response(&state, Transport::LongPoll, &reader, &read))
}

/// How long to hold: the client's `timeout` in seconds (default 25), capped.
fn hold_for(requested: Option<f64>, cap: Duration) -> Result<Duration, ApiError> {
    let secs = requested.unwrap_or(DEFAULT_LONGPOLL_SECS);
    if !secs.is_finite() || secs < 0.0 {
        return Err(ApiError::BadRequest(
            "timeout must be a number of seconds, 0 or more".into(),
        ));
    }
    // Capped before it becomes a Duration: a huge number of seconds does
    // not fit in one.
    Ok(Duration::from_secs_f64(secs.min(cap.as_secs_f64())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hold_defaults_to_25_seconds_and_is_capped() {
        let cap = Duration::from_secs(30);
        assert_eq!(hold_for(None, cap).unwrap(), Duration::from_secs(25));
        assert_eq!(
            hold_for(Some(2.5), cap).unwrap(),
            Duration::from_millis(2500)
        );
        assert_eq!(hold_for(Some(1000.0), cap).unwrap(), cap);
        assert_eq!(hold_for(Some(1e20), cap).unwrap(), cap);
        assert_eq!(hold_for(Some(f64::MAX), cap).unwrap(), cap);
        assert_eq!(
            hold_for(None, Duration::from_secs(5)).unwrap(),
            Duration::from_secs(5)
        );
        assert!(hold_for(Some(-1.0), cap).is_err());
        assert!(hold_for(Some(f64::NAN), cap).is_err());
    }
}
