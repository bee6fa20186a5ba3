//! The open-file budget: each connection is a file descriptor, so
//! `--max-connections` must fit under the process's open-file limit, or the
//! server fails at accept (and hangs clients) where it should answer 503.
//!
//! [`raise_limit`] lifts the soft limit to the hard one, as nginx's
//! `worker_rlimit_nofile` and most servers' start scripts do;
//! [`fit_max_connections`] is the pure rule that lowers the connection limit
//! when it still does not fit.

/// Descriptors kept for what the server needs besides client sockets: the
/// listener, the journal, the runtime's epoll and wake-up descriptors, stdio,
/// and a margin for sockets accepted but not yet admitted.
pub const RESERVED_FILES: u64 = 64;
/// Descriptors each worker thread's own runtime holds (its epoll and its
/// wake-up eventfd).
pub const FILES_PER_WORKER: u64 = 2;

/// Raises the soft open-file limit to the hard limit and returns the limit
/// now in force. Cheap and idempotent: a second call finds it raised.
pub fn raise_limit() -> std::io::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
}

/// Descriptors one connection may hold: its socket; with `--delay-ms` the
/// relay's two ends of the loopback pair besides (see [`super::delay`]);
/// and under `--tls`, for a WebSocket, the two ends of the local pair its
/// plaintext goes through (see [`super::tls`]).
pub fn files_per_connection(delayed: bool, tls: bool) -> u64 {
    1 + if delayed { 2 } else { 0 } + if tls { 2 } else { 0 }
}

/// The connection limit that fits `open_files` descriptors with `workers`
/// worker threads, each connection holding `per_connection` of them:
/// `requested`, or less if it does not fit (at least 1).
pub fn fit_max_connections(
    requested: u64,
    open_files: u64,
    workers: usize,
    per_connection: u64,
) -> u64 {
    let reserved = RESERVED_FILES.saturating_add(FILES_PER_WORKER.saturating_mul(workers as u64));
    let fits = open_files.saturating_sub(reserved) / per_connection.max(1);
    requested.min(fits).max(1)
}

/// Raises the open-file limit and returns the connection limit that fits
/// it, logging when `requested` had to be lowered.
pub fn max_connections_within_limit(requested: u64, workers: usize, per_connection: u64) -> u64 {
    let open_files = match raise_limit() {
        Ok(limit) => limit,
        Err(err) => {
            tracing::warn!(%err, "could not read or raise the open-file limit");
            return requested;
        }
    };
    let fitted = fit_max_connections(requested, open_files, workers, per_connection);
    if fitted < requested {
        tracing::warn!(
            requested,
            lowered_to = fitted,
            open_files,
            "--max-connections does not fit the open-file limit; lowered, so clients past it get 503 instead of failed accepts (raise `ulimit -Hn` to allow more)"
        );
    }
    fitted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_that_fits_is_kept() {
        assert_eq!(fit_max_connections(20_000, 1_048_576, 8, 1), 20_000);
        assert_eq!(fit_max_connections(100, u64::MAX, 2, 1), 100);
    }

    #[test]
    fn a_limit_that_does_not_fit_is_lowered_to_leave_the_reserve() {
        // 20,000 descriptors, 2 workers: 64 + 2 × 2 are kept back.
        assert_eq!(fit_max_connections(20_000, 20_000, 2, 1), 20_000 - 68);
        assert_eq!(fit_max_connections(20_000, 1024, 4, 1), 1024 - 72);
    }

    #[test]
    fn with_the_delay_each_connection_counts_its_three_descriptors() {
        // 1024 descriptors, 4 workers: 72 kept back, 952 left, 3 a connection.
        let per = files_per_connection(true, false);
        assert_eq!(fit_max_connections(20_000, 1024, 4, per), 952 / 3);
        assert_eq!(fit_max_connections(100, 1024, 4, per), 100);
        assert_eq!(files_per_connection(false, false), 1);
        assert_eq!(files_per_connection(false, true), 3);
        assert_eq!(files_per_connection(true, true), 5);
    }

    #[test]
    fn a_limit_with_no_room_left_still_admits_one() {
        assert_eq!(fit_max_connections(20_000, 10, 2, 1), 1);
    }

    #[test]
    fn raising_the_limit_twice_gives_the_same_answer() {
        let first = raise_limit().unwrap();
        assert_eq!(raise_limit().unwrap(), first);
    }
}
