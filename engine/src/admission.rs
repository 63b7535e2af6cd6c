//! The control core's counts of connections and sessions, and the limits
//! on them, without IO: which connection is accepted, which new session is
//! admitted and on which shard, and which shard each session is on.
//!
//! The counts are kept as connections and sessions come and go rather than
//! counted on every SETUP. A session is counted from its admission (before
//! its shard has even seen it) until the shard reports that it ended or
//! never came to be, so two SETUPs racing for the last place cannot both
//! get it.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::pacer::{KeyMap, SessionKey};

/// The limits; `usize::MAX` where there is none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub max_connections_per_client: usize,
    pub max_sessions: usize,
    pub max_sessions_per_client: usize,
}

impl Limits {
    pub fn from_config(c: &crate::config::Config) -> Limits {
        Limits {
            max_connections: c.max_connections,
            max_connections_per_client: c.max_connections_per_client,
            max_sessions: c.max_sessions,
            max_sessions_per_client: c.max_sessions_per_client,
        }
    }
}

/// The live connections and sessions, with the counts the limits and the
/// choice of shard need.
#[derive(Debug)]
pub struct Admission {
    limits: Limits,
    /// Shard and client of each session, packed: 16-byte buckets where
    /// `(usize, IpAddr)` made them 40 (at 10,000 sessions the table has
    /// 16,384 of them, 66 bytes a session against 27).
    sessions: KeyMap<SessionKey, Seat>,
    /// The client of each session whose client is IPv6 (its [`Seat`] only
    /// says so): rare, and kept apart so the usual IPv4 seat stays small.
    v6_clients: KeyMap<SessionKey, Ipv6Addr>,
    sessions_per_client: HashMap<IpAddr, usize>,
    per_shard: Vec<usize>,
    connections: usize,
    connections_per_client: HashMap<IpAddr, usize>,
}

/// A session's shard and client in eight bytes: the client's IPv4 address,
/// or a mark that it is IPv6 (and in [`Admission::v6_clients`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seat {
    v4: [u8; 4],
    shard: u16,
    v6: bool,
}

impl Admission {
    pub fn new(limits: Limits, shards: usize) -> Admission {
        assert!(shards <= usize::from(u16::MAX), "a shard's index is kept as a u16");
        Admission {
            limits,
            sessions: KeyMap::default(),
            v6_clients: KeyMap::default(),
            sessions_per_client: HashMap::new(),
            per_shard: vec![0; shards.max(1)],
            connections: 0,
            connections_per_client: HashMap::new(),
        }
    }

    /// Counts a new connection from `client`, if the connection limits
    /// leave room for it (`false`: answer 503 and close).
    pub fn connect(&mut self, client: IpAddr) -> bool {
        let mine = self.connections_per_client.get(&client).copied().unwrap_or(0);
        if self.connections >= self.limits.max_connections || mine >= self.limits.max_connections_per_client {
            return false;
        }
        self.connections += 1;
        *self.connections_per_client.entry(client).or_default() += 1;
        true
    }

    /// A connection from `client` closed.
    pub fn disconnect(&mut self, client: IpAddr) {
        if let Some(n) = self.connections_per_client.get_mut(&client) {
            *n -= 1;
            if *n == 0 {
                self.connections_per_client.remove(&client);
            }
            self.connections -= 1;
        }
    }

    /// Counts a new session for `client` against the limits: with room for
    /// it, picks its shard (the least loaded one, unless `shard` is given,
    /// for a session opened on a connection that shard already owns), draws
    /// its key from `key` (skipping 0 and keys in use) and records it.
    /// `None` means 453 Not Enough Bandwidth.
    pub fn admit(
        &mut self,
        client: IpAddr,
        shard: Option<usize>,
        mut key: impl FnMut() -> u64,
    ) -> Option<(usize, SessionKey)> {
        let mine = self.sessions_per_client.get(&client).copied().unwrap_or(0);
        if self.sessions.len() >= self.limits.max_sessions || mine >= self.limits.max_sessions_per_client {
            return None;
        }
        let shard = match shard {
            Some(s) if s < self.per_shard.len() => s,
            _ => (0..self.per_shard.len())
                .min_by_key(|&i| self.per_shard[i])
                .unwrap_or(0),
        };
        let key = loop {
            let k = key();
            if k != 0 && !self.sessions.contains_key(&k) {
                break k;
            }
        };
        let seat = match client {
            IpAddr::V4(ip) => Seat {
                v4: ip.octets(),
                shard: shard as u16,
                v6: false,
            },
            IpAddr::V6(ip) => {
                self.v6_clients.insert(key, ip);
                Seat {
                    v4: [0; 4],
                    shard: shard as u16,
                    v6: true,
                }
            }
        };
        self.sessions.insert(key, seat);
        *self.sessions_per_client.entry(client).or_default() += 1;
        self.per_shard[shard] += 1;
        Some((shard, key))
    }

    /// Forgets session `key`, which has ended or never came to be. Returns
    /// whether it was counted.
    pub fn forget(&mut self, key: SessionKey) -> bool {
        let Some(seat) = self.sessions.remove(&key) else {
            return false;
        };
        // An IPv6 seat's address is always in `v6_clients` (both are
        // written together in `admit`).
        let client = match seat.v6 {
            false => Some(IpAddr::V4(Ipv4Addr::from(seat.v4))),
            true => self.v6_clients.remove(&key).map(IpAddr::V6),
        };
        if let Some(client) = client {
            if let Some(n) = self.sessions_per_client.get_mut(&client) {
                *n -= 1;
                if *n == 0 {
                    self.sessions_per_client.remove(&client);
                }
            }
        }
        self.per_shard[usize::from(seat.shard)] -= 1;
        true
    }

    /// The shard session `key` lives on.
    pub fn shard_of(&self, key: SessionKey) -> Option<usize> {
        self.sessions.get(&key).map(|s| usize::from(s.shard))
    }

    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    pub fn connections(&self) -> usize {
        self.connections
    }

    /// Sessions per shard.
    pub fn loads(&self) -> &[usize] {
        &self.per_shard
    }
}

/// Icecast listeners: how many there are against `--max-listeners`, and on
/// which shard. Their connections are counted by [`Admission`] like any
/// other (a listener holds one from accept to close); this counts what the
/// listener limit and the choice of shard need. A listener is counted from
/// its admission (before the handler has even answered) until its shard
/// reports that it ended, or its handover failed.
#[derive(Debug)]
pub struct Listeners {
    max: usize,
    /// Admitted, on a shard or on their way to one.
    total: usize,
    per_shard: Vec<usize>,
}

impl Listeners {
    pub fn new(max: usize, shards: usize) -> Listeners {
        Listeners {
            max,
            total: 0,
            per_shard: vec![0; shards.max(1)],
        }
    }

    /// Counts a new listener if the limit leaves room (`false`: 503).
    pub fn admit(&mut self) -> bool {
        if self.total >= self.max {
            return false;
        }
        self.total += 1;
        true
    }

    /// Picks the shard for an admitted listener: the one with the fewest.
    pub fn place(&mut self) -> usize {
        let shard = (0..self.per_shard.len())
            .min_by_key(|&i| self.per_shard[i])
            .unwrap_or(0);
        self.per_shard[shard] += 1;
        shard
    }

    /// An admitted listener that never reached a shard.
    pub fn cancel(&mut self) {
        self.total = self.total.saturating_sub(1);
    }

    /// A listener placed on `shard` ended there.
    pub fn ended(&mut self, shard: usize) {
        if let Some(n) = self.per_shard.get_mut(shard).filter(|n| **n > 0) {
            *n -= 1;
            self.total = self.total.saturating_sub(1);
        }
    }

    /// Listeners admitted and not yet ended.
    pub fn count(&self) -> usize {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    fn limits(sessions: usize, per_client: usize) -> Limits {
        Limits {
            max_connections: 3,
            max_connections_per_client: 2,
            max_sessions: sessions,
            max_sessions_per_client: per_client,
        }
    }

    fn counter() -> impl FnMut() -> u64 {
        let mut n = 0;
        move || {
            n += 1;
            n
        }
    }

    #[test]
    fn sessions_are_limited_per_client_and_in_total() {
        let mut a = Admission::new(limits(3, 2), 2);
        let mut keys = counter();
        let a1 = a.admit(A, None, &mut keys).unwrap();
        let a2 = a.admit(A, None, &mut keys).unwrap();
        assert_eq!(a.admit(A, None, &mut keys), None, "A has its two");
        let b1 = a.admit(B, None, &mut keys).unwrap();
        assert_eq!(a.admit(B, None, &mut keys), None, "three in all");
        assert_eq!(a.sessions(), 3);
        // One ends: room for one more, for whoever asks.
        assert!(a.forget(a1.1));
        assert!(!a.forget(a1.1), "forgotten once");
        assert!(a.admit(B, None, &mut keys).is_some());
        assert_eq!(a.admit(A, None, &mut keys), None);
        assert!(a.forget(a2.1) && a.forget(b1.1));
        assert!(a.admit(A, None, &mut keys).is_some());
    }

    #[test]
    fn sessions_go_to_the_least_loaded_shard_unless_placed() {
        let mut a = Admission::new(limits(usize::MAX, usize::MAX), 3);
        let mut keys = counter();
        let shards: Vec<usize> = (0..6).map(|_| a.admit(A, None, &mut keys).unwrap().0).collect();
        assert_eq!(shards, [0, 1, 2, 0, 1, 2]);
        // A session on a connection shard 1 owns stays there.
        let (shard, key) = a.admit(B, Some(1), &mut keys).unwrap();
        assert_eq!(shard, 1);
        assert_eq!(a.shard_of(key), Some(1));
        assert_eq!(a.loads(), [2, 3, 2]);
        a.forget(key);
        assert_eq!(a.shard_of(key), None);
        assert_eq!(a.loads(), [2, 2, 2]);
    }

    #[test]
    fn ipv6_clients_are_counted_apart_from_ipv4_ones() {
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        // The same four bytes as an IPv4-mapped address are another client.
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        let mut a = Admission::new(limits(10, 1), 2);
        let mut keys = counter();
        let (_, k6) = a.admit(v6, None, &mut keys).unwrap();
        assert_eq!(a.admit(v6, None, &mut keys), None, "one a client");
        let (_, k4) = a.admit(A, None, &mut keys).unwrap();
        let (_, km) = a.admit(mapped, Some(1), &mut keys).unwrap();
        assert_eq!(a.shard_of(km), Some(1));
        assert!(a.forget(k6));
        assert!(!a.forget(k6));
        assert!(a.admit(v6, None, &mut keys).is_some(), "its place is free again");
        assert_eq!(a.admit(A, None, &mut keys), None, "A still has its one");
        assert!(a.forget(k4) && a.forget(km));
        assert!(a.admit(A, None, &mut keys).is_some() && a.admit(mapped, None, &mut keys).is_some());
        assert_eq!(a.sessions(), 3);
    }

    #[test]
    fn a_sessions_seat_stays_packed() {
        // The table's bucket is the key and the seat: 16 bytes, not 40.
        assert_eq!(std::mem::size_of::<(SessionKey, Seat)>(), 16);
    }

    #[test]
    fn keys_are_never_zero_nor_reused_while_live() {
        let mut a = Admission::new(limits(10, 10), 1);
        let mut draws = [0u64, 7, 7, 7, 9].into_iter();
        let mut keys = || draws.next().unwrap();
        assert_eq!(a.admit(A, None, &mut keys).map(|s| s.1), Some(7));
        assert_eq!(a.admit(A, None, &mut keys).map(|s| s.1), Some(9), "7 is taken");
    }

    #[test]
    fn connections_are_limited_per_client_and_in_total() {
        let mut a = Admission::new(limits(1, 1), 1);
        assert!(a.connect(A) && a.connect(A));
        assert!(!a.connect(A), "two per client");
        assert!(a.connect(B));
        assert!(!a.connect(B), "three in all");
        a.disconnect(A);
        assert_eq!(a.connections(), 2);
        assert!(a.connect(B));
        a.disconnect("192.0.2.9".parse().unwrap());
        assert_eq!(a.connections(), 3, "a client never counted changes nothing");
    }

    #[test]
    fn listeners_are_limited_and_spread_over_shards() {
        let mut l = Listeners::new(3, 2);
        assert!(l.admit() && l.admit() && l.admit());
        assert!(!l.admit(), "the limit");
        assert_eq!((l.place(), l.place()), (0, 1));
        l.cancel();
        assert_eq!(l.count(), 2);
        assert!(l.admit());
        assert_eq!(l.place(), 0);
        l.ended(1);
        assert_eq!(l.count(), 2);
        assert!(l.admit());
        assert_eq!(l.place(), 1, "the shard with the fewest");
        // An end the books do not have changes nothing.
        l.ended(1);
        l.ended(1);
        l.ended(7);
        assert_eq!(l.count(), 2);
    }
}
