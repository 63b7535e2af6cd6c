//! Which sessions have each client RTCP address: the route a report from
//! an address takes when its blocks name no stream of ours (a report sent
//! before any media arrived is a sign of life for every session there), and
//! the check that a datagram comes from a client at all.
//!
//! Usually one session an address, but a load client (or a NAT) may use
//! one port pair for many sessions. Each (address, session) pair is one
//! element of an ordered set: an IPv4 address and port packed into a `u64`
//! (16 bytes with the session key, where a `SocketAddr` alone is 32), IPv6
//! ones apart. Ordered, not hashed: the addresses are what clients choose,
//! and a tree needs no keyed hash to stay fast whatever they choose; a
//! report's lookup is a range of the set, and reports come seconds apart.

use std::collections::BTreeSet;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};

use crate::pacer::SessionKey;

#[derive(Debug, Default)]
pub(super) struct AddressRoutes {
    v4: BTreeSet<(u64, SessionKey)>,
    v6: BTreeSet<(SocketAddrV6, SessionKey)>,
}

/// An IPv4 address and port as one number: address above, port below.
fn pack(a: &SocketAddrV4) -> u64 {
    (u64::from(u32::from(*a.ip())) << 16) | u64::from(a.port())
}

impl AddressRoutes {
    /// Session `key` has `addr`; adding it again changes nothing.
    pub fn insert(&mut self, addr: SocketAddr, key: SessionKey) {
        match addr {
            SocketAddr::V4(a) => self.v4.insert((pack(&a), key)),
            SocketAddr::V6(a) => self.v6.insert((a, key)),
        };
    }

    /// Session `key` no longer has `addr`.
    pub fn remove(&mut self, addr: SocketAddr, key: SessionKey) {
        match addr {
            SocketAddr::V4(a) => self.v4.remove(&(pack(&a), key)),
            SocketAddr::V6(a) => self.v6.remove(&(a, key)),
        };
    }

    /// The sessions that have `addr`, in key order (none if it is no
    /// client's).
    pub fn sessions(&self, addr: SocketAddr) -> impl Iterator<Item = SessionKey> + '_ {
        let (v4, v6) = match addr {
            SocketAddr::V4(a) => {
                let p = pack(&a);
                (Some(self.v4.range((p, 0)..=(p, SessionKey::MAX))), None)
            }
            SocketAddr::V6(a) => (None, Some(self.v6.range((a, 0)..=(a, SessionKey::MAX)))),
        };
        v4.into_iter()
            .flatten()
            .map(|&(_, k)| k)
            .chain(v6.into_iter().flatten().map(|&(_, k)| k))
    }

    /// Whether any session has `addr`.
    pub fn contains(&self, addr: SocketAddr) -> bool {
        self.sessions(addr).next().is_some()
    }

    /// How many (address, session) pairs there are.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_address_finds_exactly_its_sessions() {
        let mut r = AddressRoutes::default();
        r.insert(a("10.0.0.1:5001"), 7);
        r.insert(a("10.0.0.1:5001"), 3);
        r.insert(a("10.0.0.1:5001"), 7);
        r.insert(a("10.0.0.1:5003"), 9);
        r.insert(a("10.0.0.2:5001"), 11);
        // The neighbours of a packed key in both directions.
        r.insert(a("10.0.0.1:5000"), 1);
        r.insert(a("10.0.0.0:5001"), 2);
        r.insert(a("[::1]:5001"), 5);
        r.insert(a("[::ffff:10.0.0.1]:5001"), 6);
        let scoped = |scope| SocketAddr::V6(SocketAddrV6::new("fe80::1".parse().unwrap(), 5001, 0, scope));
        r.insert(scoped(2), 8);
        assert_eq!(r.len(), 9);
        let found = |r: &AddressRoutes, s| r.sessions(a(s)).collect::<Vec<_>>();
        assert_eq!(found(&r, "10.0.0.1:5001"), vec![3, 7]);
        assert_eq!(found(&r, "10.0.0.1:5003"), vec![9]);
        assert_eq!(found(&r, "10.0.0.2:5001"), vec![11]);
        assert_eq!(found(&r, "255.255.255.255:65535"), Vec::<u64>::new());
        assert_eq!(found(&r, "0.0.0.0:0"), Vec::<u64>::new());
        assert_eq!(found(&r, "[::1]:5001"), vec![5]);
        // A mapped IPv4 address is another address, as `SocketAddr` says.
        assert_eq!(found(&r, "[::ffff:10.0.0.1]:5001"), vec![6]);
        assert_eq!(r.sessions(scoped(2)).collect::<Vec<_>>(), vec![8]);
        assert!(!r.contains(scoped(3)));
        assert!(!r.contains(a("[::1]:5002")));
        r.remove(a("10.0.0.1:5001"), 3);
        assert_eq!(found(&r, "10.0.0.1:5001"), vec![7]);
        r.remove(a("10.0.0.1:5001"), 7);
        assert!(!r.contains(a("10.0.0.1:5001")));
        assert!(r.contains(a("10.0.0.1:5000")));
        r.remove(a("[::1]:5001"), 5);
        r.remove(a("[::1]:5001"), 5);
        assert!(!r.contains(a("[::1]:5001")));
        assert_eq!(r.len(), 6);
    }

    #[test]
    fn extreme_keys_stay_in_their_address() {
        let mut r = AddressRoutes::default();
        r.insert(a("1.2.3.4:1"), 0);
        r.insert(a("1.2.3.4:1"), SessionKey::MAX);
        r.insert(a("1.2.3.4:0"), SessionKey::MAX);
        r.insert(a("1.2.3.4:2"), 0);
        assert_eq!(r.sessions(a("1.2.3.4:1")).collect::<Vec<_>>(), vec![0, SessionKey::MAX]);
    }
}
