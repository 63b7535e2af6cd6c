//! Address rules and rate limits: allow and deny lists of CIDR blocks for
//! watching, publishing and the admin API, and per-address limits on new
//! connections and failed logins, all driven by the caller's clock.
//!
//! # How the lists decide
//! The **most specific matching block decides** (the longest prefix, as a
//! routing table does); a tie between an allow and a deny block of the same
//! length goes to deny. An address no block matches is allowed unless
//! there is an allow list for that purpose, which then admits only its
//! blocks. The server-wide lists (`allow`, `deny`) count for every purpose,
//! beside that purpose's own.
//!
//! Why not "deny first": it cannot express an exception (deny
//! 10.0.0.0/8 but let the monitoring host 10.1.2.3 in), so operators widen
//! their allow lists instead. Why not "first match in order": the order of
//! lines merged from the command line and a config file is easy to get
//! wrong and a later line silently shadowed by an earlier one is a classic
//! hole. Longest match has neither problem and is order-free.
//!
//! IPv4-mapped IPv6 addresses (`::ffff:192.0.2.1`, what a dual-stack socket
//! reports for an IPv4 client) are the IPv4 address: `192.0.2.0/24` matches
//! them and so does `::ffff:192.0.2.0/120`.
//!
//! # Rate limits
//! A [`Limiter`] is a token bucket per client key (the generic cell rate
//! algorithm: one "theoretical arrival time" per key), where the key is
//! the IPv4 address, or the /64 of an IPv6 address, since one IPv6 host
//! commonly holds a whole /64. Past the burst, an event is first delayed
//! (the caller holds its answer) and, once the delay would exceed a bound,
//! refused. Memory is bounded: a key whose bucket has refilled carries no
//! state and is dropped, and when the table is full of live keys, new keys
//! share one overflow bucket, so an attacker with many addresses is limited
//! as one client rather than growing the table or flushing real offenders.

use std::collections::HashMap;
use std::net::IpAddr;
use std::str::FromStr;

use serde::Deserialize;

use super::Settings;
use crate::source::Nanos;

/// An IPv4 or IPv6 block. IPv4 is held as IPv4-mapped IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    net: u128,
    /// In IPv6 bits (an IPv4 /24 is 120).
    len: u8,
    v4: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("{0:?} is not an IP address or CIDR block")]
    NotAddress(String),
    #[error("prefix length {len} is more than {max} in {text:?}")]
    Length { text: String, len: u32, max: u32 },
    #[error("{0:?} has bits set past its prefix length (did you mean the network address?)")]
    HostBits(String),
}

/// An address as IPv4-mapped IPv6 bits, so one host has one form.
fn bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn mask(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len))
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Cidr, CidrError> {
        let text = text.trim();
        let (addr, len) = match text.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (text, None),
        };
        let ip: IpAddr = addr.parse().map_err(|_| CidrError::NotAddress(text.into()))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let len = match len {
            Some(l) => l.parse::<u32>().map_err(|_| CidrError::NotAddress(text.into()))?,
            None => max,
        };
        if len > max {
            return Err(CidrError::Length {
                text: text.into(),
                len,
                max,
            });
        }
        let len = (len + 128 - max) as u8;
        let net = bits(ip);
        if net & !mask(len) != 0 {
            return Err(CidrError::HostBits(text.into()));
        }
        Ok(Cidr {
            net,
            len,
            v4: ip.is_ipv4(),
        })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v6 = std::net::Ipv6Addr::from(self.net);
        match (self.v4, v6.to_ipv4_mapped()) {
            (true, Some(v4)) => write!(f, "{v4}/{}", self.len - 96),
            _ => write!(f, "{v6}/{}", self.len),
        }
    }
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        bits(ip) & mask(self.len) == self.net
    }
}

/// What an address may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Purpose {
    Watch,
    Publish,
    Admin,
}

const PURPOSES: [Purpose; 3] = [Purpose::Watch, Purpose::Publish, Purpose::Admin];

/// What the lists say about one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrVerdict {
    Allowed,
    /// This deny block was the most specific match.
    Denied(Cidr),
    /// There is an allow list and the address is in none of its blocks.
    NotListed,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {source}")]
pub struct AddrSettingsError {
    pub key: &'static str,
    #[source]
    pub source: CidrError,
}

/// Checked allow and deny lists per purpose (each including the
/// server-wide ones).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddrRules {
    allow: [Vec<Cidr>; 3],
    deny: [Vec<Cidr>; 3],
}

impl AddrRules {
    /// The lists of `s` (`allow`, `deny`, `watch_allow`, ... `admin_deny`).
    pub fn new(s: &Settings) -> Result<AddrRules, AddrSettingsError> {
        let parse = |key: &'static str, list: &[String]| -> Result<Vec<Cidr>, AddrSettingsError> {
            list.iter()
                .map(|t| t.parse().map_err(|source| AddrSettingsError { key, source }))
                .collect()
        };
        let allow = parse("allow", &s.allow)?;
        let deny = parse("deny", &s.deny)?;
        let mut rules = AddrRules::default();
        for (i, (a, d)) in [
            (("watch_allow", &s.watch_allow), ("watch_deny", &s.watch_deny)),
            (("publish_allow", &s.publish_allow), ("publish_deny", &s.publish_deny)),
            (("admin_allow", &s.admin_allow), ("admin_deny", &s.admin_deny)),
        ]
        .into_iter()
        .enumerate()
        {
            rules.allow[i] = allow.iter().copied().chain(parse(a.0, a.1)?).collect();
            rules.deny[i] = deny.iter().copied().chain(parse(d.0, d.1)?).collect();
        }
        Ok(rules)
    }

    fn index(p: Purpose) -> usize {
        match p {
            Purpose::Watch => 0,
            Purpose::Publish => 1,
            Purpose::Admin => 2,
        }
    }

    pub fn verdict(&self, purpose: Purpose, ip: IpAddr) -> AddrVerdict {
        let i = AddrRules::index(purpose);
        let best = |list: &[Cidr]| list.iter().filter(|c| c.contains(ip)).max_by_key(|c| c.len).copied();
        match (best(&self.allow[i]), best(&self.deny[i])) {
            (Some(a), Some(d)) if a.len > d.len => AddrVerdict::Allowed,
            (_, Some(d)) => AddrVerdict::Denied(d),
            (Some(_), None) => AddrVerdict::Allowed,
            (None, None) if self.allow[i].is_empty() => AddrVerdict::Allowed,
            (None, None) => AddrVerdict::NotListed,
        }
    }

    /// Whether a connection from `ip` can do nothing at all, so it can be
    /// closed before a byte of it is read. `Some` holds the watch verdict,
    /// for the log.
    pub fn refuses_connection(&self, ip: IpAddr) -> Option<AddrVerdict> {
        let verdicts = PURPOSES.map(|p| self.verdict(p, ip));
        verdicts
            .iter()
            .all(|v| *v != AddrVerdict::Allowed)
            .then_some(verdicts[0])
    }

    pub fn is_empty(&self) -> bool {
        self.allow.iter().chain(&self.deny).all(Vec::is_empty)
    }
}

/// The key a rate limit counts by: an IPv4 address, or an IPv6 /64.
pub fn rate_key(ip: IpAddr) -> u128 {
    let b = bits(ip);
    match ip {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => b & mask(64),
        _ => b,
    }
}

/// What a limiter says about one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateVerdict {
    Allow,
    /// Over the burst: hold the answer this long (it was counted).
    Delay(Nanos),
    /// Far over: refuse, and say to retry after this long (not counted).
    Refuse {
        retry_after: Nanos,
    },
}

/// A rate: `per_minute` events on average, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateSettings {
    pub per_minute: u32,
    pub burst: u32,
    /// Longest delay before refusing, in milliseconds [default: 4000].
    #[serde(default = "default_max_delay_ms")]
    pub max_delay_ms: u64,
}

/// Long enough to slow a guesser to a crawl, short enough that a client
/// holding a connection open does not time out.
pub const DEFAULT_MAX_DELAY_MS: u64 = 4_000;

fn default_max_delay_ms() -> u64 {
    DEFAULT_MAX_DELAY_MS
}

/// Counters of one limiter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateStats {
    pub allowed: u64,
    pub delayed: u64,
    pub refused: u64,
    /// Events counted in the shared overflow bucket because the table was
    /// full.
    pub overflowed: u64,
}

/// Token buckets per key, in bounded memory.
#[derive(Debug, Clone)]
pub struct Limiter {
    interval: Nanos,
    tolerance: Nanos,
    max_delay: Nanos,
    capacity: usize,
    tat: HashMap<u128, Nanos>,
    overflow_tat: Nanos,
    /// No entry can have refilled before this time, so a purge is useless.
    next_purge: Nanos,
    pub stats: RateStats,
}

impl Limiter {
    /// `None` when `per_minute` or `burst` is 0 (no limit).
    pub fn new(rate: RateSettings, capacity: usize) -> Option<Limiter> {
        if rate.per_minute == 0 || rate.burst == 0 {
            return None;
        }
        let interval = 60_000_000_000 / u64::from(rate.per_minute);
        Some(Limiter {
            interval,
            tolerance: interval * u64::from(rate.burst - 1),
            max_delay: rate.max_delay_ms.saturating_mul(1_000_000),
            capacity: capacity.max(1),
            tat: HashMap::new(),
            overflow_tat: 0,
            next_purge: 0,
            stats: RateStats::default(),
        })
    }

    pub fn len(&self) -> usize {
        self.tat.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tat.is_empty()
    }

    fn judge(&self, tat: Nanos, now: Nanos) -> RateVerdict {
        let tat = tat.max(now);
        let conforms_at = tat.saturating_sub(self.tolerance);
        if conforms_at <= now {
            RateVerdict::Allow
        } else if conforms_at - now <= self.max_delay {
            RateVerdict::Delay(conforms_at - now)
        } else {
            RateVerdict::Refuse {
                retry_after: conforms_at - now,
            }
        }
    }

    /// What an event for `key` would get, without counting it.
    pub fn peek(&self, key: u128, now: Nanos) -> RateVerdict {
        let tat = self
            .tat
            .get(&key)
            .copied()
            .unwrap_or(if self.tat.len() < self.capacity {
                0
            } else {
                self.overflow_tat
            });
        self.judge(tat, now)
    }

    /// Counts an event for `key` (unless refused) and says what it gets.
    pub fn charge(&mut self, key: u128, now: Nanos) -> RateVerdict {
        if !self.tat.contains_key(&key) && self.tat.len() >= self.capacity && now >= self.next_purge {
            self.tat.retain(|_, tat| *tat > now);
            self.next_purge = self.tat.values().min().copied().unwrap_or(now);
        }
        let overflow = !self.tat.contains_key(&key) && self.tat.len() >= self.capacity;
        let tat = if overflow {
            self.stats.overflowed += 1;
            self.overflow_tat
        } else {
            self.tat.get(&key).copied().unwrap_or(0)
        };
        let verdict = self.judge(tat, now);
        match verdict {
            RateVerdict::Allow => self.stats.allowed += 1,
            RateVerdict::Delay(_) => self.stats.delayed += 1,
            RateVerdict::Refuse { .. } => {
                self.stats.refused += 1;
                return verdict;
            }
        }
        let next = tat.max(now) + self.interval;
        if overflow {
            self.overflow_tat = next;
        } else {
            self.tat.insert(key, next);
        }
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn cidr_parsing_and_matching() {
        assert!(cidr("10.0.0.0/8").contains(ip("10.255.0.1")));
        assert!(!cidr("10.0.0.0/8").contains(ip("11.0.0.1")));
        assert!(cidr("192.0.2.7").contains(ip("192.0.2.7")));
        assert!(!cidr("192.0.2.7").contains(ip("192.0.2.8")));
        assert!(cidr("0.0.0.0/0").contains(ip("203.0.113.9")));
        assert!(!cidr("0.0.0.0/0").contains(ip("2001:db8::1")));
        assert!(cidr("::/0").contains(ip("2001:db8::1")));
        assert!(cidr("2001:db8::/32").contains(ip("2001:db8:ffff::1")));
        assert!(!cidr("2001:db8::/32").contains(ip("2001:db9::1")));
        // IPv4-mapped IPv6 clients are their IPv4 address, both ways.
        assert!(cidr("192.0.2.0/24").contains(ip("::ffff:192.0.2.200")));
        assert!(cidr("::ffff:192.0.2.0/120").contains(ip("192.0.2.1")));
        assert_eq!(cidr("::ffff:192.0.2.0/120"), cidr("192.0.2.0/24").with_v6_form());
        assert_eq!(cidr("192.0.2.0/24").to_string(), "192.0.2.0/24");
        assert_eq!(cidr("2001:db8::/32").to_string(), "2001:db8::/32");
        assert!(matches!("10.0.0.1/8".parse::<Cidr>(), Err(CidrError::HostBits(_))));
        assert!(matches!("10.0.0.0/33".parse::<Cidr>(), Err(CidrError::Length { .. })));
        assert!(matches!("::/129".parse::<Cidr>(), Err(CidrError::Length { .. })));
        for bad in [
            "",
            "10.0.0",
            "host.example",
            "10.0.0.0/",
            "10.0.0.0/x",
            "/8",
            "10.0.0.0/-1",
        ] {
            assert!(matches!(bad.parse::<Cidr>(), Err(CidrError::NotAddress(_))), "{bad}");
        }
    }

    impl Cidr {
        fn with_v6_form(mut self) -> Cidr {
            self.v4 = false;
            self
        }
    }

    fn rules(s: Settings) -> AddrRules {
        AddrRules::new(&s).unwrap()
    }

    fn list(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_most_specific_block_decides() {
        let r = rules(Settings {
            deny: list(&["10.0.0.0/8"]),
            allow: list(&["10.1.2.3"]),
            watch_deny: list(&["10.1.2.3/32"]),
            ..Default::default()
        });
        // The server-wide allow of one host beats the /8 deny...
        assert_eq!(r.verdict(Purpose::Publish, ip("10.1.2.3")), AddrVerdict::Allowed);
        // ...but for watching an equally specific deny wins the tie.
        assert_eq!(
            r.verdict(Purpose::Watch, ip("10.1.2.3")),
            AddrVerdict::Denied(cidr("10.1.2.3/32"))
        );
        assert_eq!(
            r.verdict(Purpose::Admin, ip("10.9.9.9")),
            AddrVerdict::Denied(cidr("10.0.0.0/8"))
        );
        // An allow list admits only its blocks.
        assert_eq!(r.verdict(Purpose::Admin, ip("192.0.2.1")), AddrVerdict::NotListed);
        let open = rules(Settings {
            publish_allow: list(&["127.0.0.0/8", "::1"]),
            ..Default::default()
        });
        assert_eq!(open.verdict(Purpose::Watch, ip("203.0.113.1")), AddrVerdict::Allowed);
        assert_eq!(
            open.verdict(Purpose::Publish, ip("203.0.113.1")),
            AddrVerdict::NotListed
        );
        assert_eq!(open.verdict(Purpose::Publish, ip("::1")), AddrVerdict::Allowed);
        assert_eq!(
            open.verdict(Purpose::Publish, ip("::ffff:127.0.0.1")),
            AddrVerdict::Allowed
        );
        assert!(rules(Settings::default()).is_empty());
    }

    #[test]
    fn connections_are_refused_only_when_nothing_is_allowed() {
        let r = rules(Settings {
            deny: list(&["198.51.100.0/24"]),
            admin_allow: list(&["198.51.100.7"]),
            ..Default::default()
        });
        assert!(r.refuses_connection(ip("198.51.100.8")).is_some());
        // The admin host may still connect; what it may do is checked per request.
        assert_eq!(r.refuses_connection(ip("198.51.100.7")), None);
        assert_eq!(r.refuses_connection(ip("192.0.2.1")), None);
        let allow_only = rules(Settings {
            allow: list(&["192.0.2.0/24"]),
            ..Default::default()
        });
        assert_eq!(
            allow_only.refuses_connection(ip("203.0.113.5")),
            Some(AddrVerdict::NotListed)
        );
    }

    #[test]
    fn bad_settings_name_their_key() {
        let e = AddrRules::new(&Settings {
            publish_deny: list(&["10.0.0.0/8", "nonsense"]),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(e.key, "publish_deny");
        assert!(toml::from_str::<Settings>("allow = [\"10.0.0.0/8\"]\nwatch_deny = []\n").is_ok());
        assert!(toml::from_str::<Settings>("alow = []\n").is_err());
    }

    #[test]
    fn ipv6_is_counted_by_its_64() {
        assert_eq!(rate_key(ip("2001:db8:1:2::1")), rate_key(ip("2001:db8:1:2:ffff::9")));
        assert_ne!(rate_key(ip("2001:db8:1:2::1")), rate_key(ip("2001:db8:1:3::1")));
        assert_ne!(rate_key(ip("192.0.2.1")), rate_key(ip("192.0.2.2")));
        assert_eq!(rate_key(ip("192.0.2.1")), rate_key(ip("::ffff:192.0.2.1")));
        assert_eq!(
            rate_key(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            rate_key(IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped()))
        );
        assert_ne!(
            rate_key(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            rate_key(IpAddr::V4(Ipv4Addr::LOCALHOST))
        );
    }

    const SEC: Nanos = 1_000_000_000;

    fn limiter(per_minute: u32, burst: u32, max_delay_ms: u64, capacity: usize) -> Limiter {
        Limiter::new(
            RateSettings {
                per_minute,
                burst,
                max_delay_ms,
            },
            capacity,
        )
        .unwrap()
    }

    #[test]
    fn bursts_then_delays_then_refuses_then_recovers() {
        // 60 a minute (one a second), bursts of 3, delays up to 2 s.
        let mut l = limiter(60, 3, 2_000, 16);
        let t0 = 100 * SEC;
        for _ in 0..3 {
            assert_eq!(l.charge(7, t0), RateVerdict::Allow);
        }
        assert_eq!(l.charge(7, t0), RateVerdict::Delay(SEC));
        assert_eq!(l.charge(7, t0), RateVerdict::Delay(2 * SEC));
        assert_eq!(l.charge(7, t0), RateVerdict::Refuse { retry_after: 3 * SEC });
        // Refusals are not counted, so hammering does not push recovery back.
        for _ in 0..100 {
            assert!(matches!(l.charge(7, t0), RateVerdict::Refuse { .. }));
        }
        assert_eq!(l.peek(7, t0 + 3 * SEC), RateVerdict::Allow);
        // Another client is unaffected.
        assert_eq!(l.charge(8, t0), RateVerdict::Allow);
        // Five seconds of quiet refill the whole burst.
        for _ in 0..3 {
            assert_eq!(l.charge(7, t0 + 8 * SEC), RateVerdict::Allow);
        }
        assert_eq!(l.stats.delayed, 2);
        assert_eq!(l.stats.refused, 101);
        assert!(Limiter::new(
            RateSettings {
                per_minute: 0,
                burst: 5,
                max_delay_ms: 0
            },
            1
        )
        .is_none());
    }

    #[test]
    fn many_addresses_share_an_overflow_bucket_instead_of_growing_memory() {
        let mut l = limiter(60, 2, 0, 4);
        let t0 = 10 * SEC;
        // Four offenders fill the table with live state.
        for k in 0..4u128 {
            l.charge(k, t0);
            l.charge(k, t0);
            assert!(matches!(l.charge(k, t0), RateVerdict::Refuse { .. }));
        }
        // Thousands of fresh addresses: the table stays at 4 and they share
        // one bucket, so together they get one client's rate.
        let mut allowed = 0;
        for k in 100..5100u128 {
            if l.charge(k, t0) == RateVerdict::Allow {
                allowed += 1;
            }
            assert!(l.len() <= 4);
        }
        assert_eq!(allowed, 2);
        assert_eq!(l.stats.overflowed, 5000);
        // The offenders are still remembered.
        assert!(matches!(l.charge(0, t0), RateVerdict::Refuse { .. }));
        // Once their buckets refill, their entries make room again.
        assert_eq!(l.charge(9999, t0 + 10 * SEC), RateVerdict::Allow);
        assert_eq!(l.len(), 1);
    }
}
