//! Bounds on what clients may hold at once, counted without any knowledge
//! of HTTP: the places under `--max-connections`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::error::ApiError;

/// Counts requests in flight, held long-polls and open streams and sockets
/// included, against `--max-connections`.
#[derive(Debug)]
pub struct ConnectionLimit {
    open: AtomicUsize,
    max: usize,
}

impl ConnectionLimit {
    /// A limit of `max` requests in flight at once.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(ConnectionLimit {
            open: AtomicUsize::new(0),
            max,
        })
    }

    /// Takes a place, or `None` at the limit.
    pub fn acquire(self: &Arc<Self>) -> Option<Permit> {
        let mut open = self.open.load(Ordering::Relaxed);
        loop {
            if open >= self.max {
                return None;
            }
            match self.open.compare_exchange_weak(
                open,
                open + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(Permit(self.clone())),
                Err(now) => open = now,
            }
        }
    }

    /// Takes a place, or refuses with the 503 every path answers at the
    /// limit.
    pub fn admit(self: &Arc<Self>) -> Result<Permit, ApiError> {
        self.acquire().ok_or_else(|| {
            ApiError::Unavailable("the server is at its connection limit; try again shortly".into())
        })
    }

    /// Requests in flight now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

/// A place under the limit, given back when the response body is done.
#[derive(Debug)]
pub struct Permit(Arc<ConnectionLimit>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}
