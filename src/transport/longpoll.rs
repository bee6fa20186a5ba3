//! Long polling: `GET /longpoll` answers at once if something is newer than
//! the cursor; otherwise it holds the request until something is, or until
//! its timeout. Waiting is a notification from the log, never a re-check.

use std::time::Duration;

use actix_web::{web, HttpResponse};

use super::{batch_response, AppState, ReadQuery};
use crate::config::DEFAULT_LONGPOLL_SECS;
use crate::error::ApiError;
use crate::stats::Transport;

/// `GET /longpoll?since=N[&epoch=E][&session=S][&timeout=T]`.
///
/// A session holds at most one long-poll: a second one answers the first at
/// once, empty. While held, the request counts as the session's activity.
pub async fn long_poll(
    state: web::Data<AppState>,
    query: web::Query<ReadQuery>,
) -> Result<HttpResponse, ApiError> {
    let counters = state.counters(Transport::LongPoll);
    counters.request();
    let hold = hold_for(query.timeout, state.config.longpoll_cap())?;
    let presence = state.room.presence();
    let _connection = query.session.map(|s| presence.connect(s)).transpose()?;
    let replaced = query
        .session
        .map(|s| presence.claim_long_poll(s))
        .transpose()?;

    let log = state.log();
    let mut batch = log.read_since(query.since, query.epoch());
    if batch.events.is_empty() && !batch.gap {
        let _open = state.stats.open(Transport::LongPoll);
        let superseded = async {
            match &replaced {
                Some(notify) => notify.notified().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = log.wait_after(batch.cursor) => {
                batch = log.read_since(query.since, query.epoch());
            }
            _ = tokio::time::sleep(hold) => {}
            _ = superseded => {}
            _ = state.shutdown.cancelled() => {}
        }
    }
    Ok(batch_response(&state, Transport::LongPoll, &batch))
}

/// How long to hold: the client's `timeout` in seconds (default 25), capped.
fn hold_for(requested: Option<f64>, cap: Duration) -> Result<Duration, ApiError> {
    let secs = requested.unwrap_or(DEFAULT_LONGPOLL_SECS);
    if !secs.is_finite() || secs < 0.0 {
        return Err(ApiError::BadRequest(
            "timeout must be a number of seconds, 0 or more".into(),
        ));
    }
    Ok(Duration::from_secs_f64(secs).min(cap))
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
        assert_eq!(
            hold_for(None, Duration::from_secs(5)).unwrap(),
            Duration::from_secs(5)
        );
        assert!(hold_for(Some(-1.0), cap).is_err());
        assert!(hold_for(Some(f64::NAN), cap).is_err());
    }
}
