//! Bounds on what clients may hold at once, counted without any knowledge
//! of HTTP: the places under `--max-connections`, in all and per client IP,
//! and what counts as one client address ([`client_address`]).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::core::error::ApiError;

/// The address every per-address limit counts a client under: an
/// IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, as a dual-stack listener on
/// `[::]` sees IPv4 peers) as its IPv4 address, and any other IPv6 address
/// as its /64 network. One subscriber gets a whole /64 and may use any
/// address in it, so a /64 is one client, as nginx's and Cloudflare's
/// per-client limits take it; an IPv4 address is itself.
pub fn client_address(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let network = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(network))
        }
        v4 => v4,
    }
}

/// Counts requests in flight, held long-polls and open streams and sockets
/// included, against `--max-connections` in all and `--ip-connections` per
/// client IP.
#[derive(Debug)]
pub struct ConnectionLimit {
    /// Places taken now.
    open: AtomicUsize,
    /// The most places at once.
    max: usize,
    /// Places taken per client IP; an IP with none is removed.
    per_ip: Mutex<HashMap<IpAddr, u32>>,
    /// The most places one client IP may take; 0 for no limit.
    max_per_ip: u32,
    /// What a place is, for the refusals: "requests and connections".
    what: &'static str,
}

impl ConnectionLimit {
    /// A limit of `max` places in all and `max_per_ip` (0: none) per IP,
    /// each place one of `what` ("requests and connections").
    pub fn new(max: usize, max_per_ip: u32, what: &'static str) -> Arc<Self> {
        Arc::new(ConnectionLimit {
            open: AtomicUsize::new(0),
            max,
            per_ip: Mutex::new(HashMap::new()),
            max_per_ip,
            what,
        })
    }

    /// Takes a place for a request from `ip`, or refuses: 503 at the
    /// server's limit, 429 `ip_limit` at the client's.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Permit, ApiError> {
        let mut open = self.open.load(Ordering::Relaxed);
        loop {
            if open >= self.max {
                return Err(ApiError::Unavailable(format!(
                    "the server has as many {} open as it allows; try again shortly",
                    self.what
                )));
            }
            match self.open.compare_exchange_weak(
                open,
                open + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => open = now,
            }
        }
        // From here the global place is held by the permit, so a refusal
        // below gives it back when the permit drops.
        let mut permit = Permit {
            limit: self.clone(),
            ip: None,
        };
        if self.max_per_ip > 0 {
            let mut per_ip = self.per_ip.lock();
            let taken = per_ip.entry(ip).or_insert(0);
            if *taken >= self.max_per_ip {
                return Err(ApiError::IpLimit(format!(
                    "this address has {} {} open, its limit",
                    self.max_per_ip, self.what
                )));
            }
            *taken += 1;
            permit.ip = Some(ip);
        }
        Ok(permit)
    }

    /// Places taken now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Client IPs holding at least one place now.
    #[cfg(test)]
    pub fn addresses(&self) -> usize {
        self.per_ip.lock().len()
    }
}

/// A place under the limit, given back when dropped: for an HTTP request
/// when its response body is done, for a socket when it closes.
#[derive(Debug)]
pub struct Permit {
    limit: Arc<ConnectionLimit>,
    /// The IP whose count this place is in, if per-IP limits are on.
    ip: Option<IpAddr>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.limit.open.fetch_sub(1, Ordering::AcqRel);
        if let Some(ip) = self.ip {
            let mut per_ip = self.limit.per_ip.lock();
            if let Some(taken) = per_ip.get_mut(&ip) {
                *taken -= 1;
                if *taken == 0 {
                    per_ip.remove(&ip);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mapped_ipv4_address_counts_as_its_ipv4_address() {
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert_eq!(
            client_address(mapped),
            "127.0.0.1".parse::<IpAddr>().unwrap()
        );
        let plain: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(client_address(plain), plain);
    }

    #[test]
    fn ipv6_addresses_count_by_their_64_network() {
        let one: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let same: IpAddr = "2001:db8:1:2:ffff:1:2:3".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(
            client_address(one),
            "2001:db8:1:2::".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_address(one), client_address(same));
        assert_ne!(client_address(one), client_address(other));
    }

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn one_address_cannot_take_more_than_its_share_of_places() {
        let limit = ConnectionLimit::new(10, 2, "requests");
        let held = [limit.admit(A).unwrap(), limit.admit(A).unwrap()];

        let refused = limit.admit(A).unwrap_err();
        let other = limit.admit(B);

        assert_eq!(refused.code(), "ip_limit");
        assert!(other.is_ok());
        assert_eq!(limit.open(), 3, "a refused request holds no place");
        drop(held);
        drop(other);
        assert_eq!((limit.open(), limit.addresses()), (0, 0));
        assert!(limit.admit(A).is_ok());
    }

    #[test]
    fn the_server_limit_holds_whatever_the_addresses() {
        let limit = ConnectionLimit::new(2, 0, "requests");
        let _held = [limit.admit(A).unwrap(), limit.admit(B).unwrap()];
        assert_eq!(limit.admit(A).unwrap_err().code(), "unavailable");
        assert_eq!(
            limit.addresses(),
            0,
            "no per-address counts without a limit"
        );
    }
}
