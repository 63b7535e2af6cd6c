//! Answering generic NACKs (RFC 4585 section 6.2.1): which of the
//! sequence numbers a client says it lost to send again now, as RTX
//! packets (RFC 4588) built from the stream's [`History`].
//!
//! Feedback comes from the network, so every answer is bounded:
//!
//! - **Duplicates.** GStreamer's jitter buffer (`rtspsrc
//!   do-retransmission=true`) asks again for a packet that has not come
//!   after its `rtx-retry-timeout` (about a round trip), with no limit on
//!   retries by default, for as long as its `rtx-retry-period` (its
//!   latency) runs. A packet sent again less than a round trip ago (the
//!   RTT from RTCP receiver reports; 100 ms until one is known) is not sent
//!   again: the first resend is still on its way. Once that time has passed
//!   a new ask is honoured, since the resend itself may have been lost.
//! - **Rate.** Resends draw on a token bucket per stream, refilled at a
//!   fraction of the stream's bit rate (half, by default) and a second
//!   per session, so a NACK storm costs at most that much bandwidth and
//!   one stream's storm cannot take another's share. What does not fit is
//!   dropped, not queued: by the time tokens come back the client has
//!   moved on.
//! - **Work.** A NACK names up to 17 numbers per entry and may have tens
//!   of thousands of entries, and a client can send many NACKs. Numbers looked
//!   at are counted against a third bucket, twice the stream's packet rate
//!   per second, and at most [`NackConfig::max_per_nack`] of one NACK are
//!   looked at; the rest of a flood is not even read.
//! - **Numbers never sent** (ahead of the stream, or garbage) and **too
//!   old** (let go by the history) are answered with nothing and counted.
//!
//! Nothing here allocates: the answer goes into a caller's `Vec` that
//! keeps its capacity from one call to the next.

use std::time::Duration;

use super::history::{History, Lookup};
use crate::source::Nanos;

/// RTX packets carry the original sequence number in front of the payload.
const OSN_LEN: usize = proto::rtx::OSN_LEN;

/// Limits of a NACK responder.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NackConfig {
    /// Retransmitted bytes per second per stream, as a fraction of the
    /// stream's bit rate.
    pub rate_fraction: f64,
    /// How much of that rate may be spent at once: the bucket holds this
    /// long's worth of tokens. A burst of loss (a queue that overflowed
    /// somewhere) wants many packets in one go.
    pub burst: Duration,
    /// The bucket holds at least this many bytes, so that a low-rate stream
    /// can still send its larger packets again.
    pub min_bucket: usize,
    /// Sequence numbers of one NACK looked at, at most.
    pub max_per_nack: usize,
    /// How long a resend blocks another of the same packet when the round
    /// trip is not known yet.
    pub default_rtt: Duration,
}

impl Default for NackConfig {
    fn default() -> NackConfig {
        NackConfig {
            rate_fraction: 0.5,
            burst: Duration::from_secs(1),
            min_bucket: 3000,
            max_per_nack: 256,
            default_rtt: Duration::from_millis(100),
        }
    }
}

/// The shortest and longest a resend blocks a repeat, whatever the RTT
/// says: clients' round-trip figures can be 0 on a LAN or wild.
const MIN_DEDUPE: Duration = Duration::from_millis(10);
const MAX_DEDUPE: Duration = Duration::from_millis(500);

/// A token bucket: `rate` units per second, at most `capacity` banked.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: u64,
    capacity: u64,
    /// Tokens, in units times 10^9 so refills at any `now` are exact.
    nano_tokens: u128,
    last: Option<Nanos>,
}

impl TokenBucket {
    /// A bucket that starts full.
    pub fn new(rate_per_sec: u64, capacity: u64) -> TokenBucket {
        TokenBucket {
            rate: rate_per_sec,
            capacity,
            nano_tokens: u128::from(capacity) * 1_000_000_000,
            last: None,
        }
    }

    fn refill(&mut self, now: Nanos) {
        let last = *self.last.get_or_insert(now);
        let elapsed = u128::from(now.saturating_sub(last));
        self.last = Some(now.max(last));
        let cap = u128::from(self.capacity) * 1_000_000_000;
        self.nano_tokens = (self.nano_tokens + elapsed * u128::from(self.rate)).min(cap);
    }

    /// Whole tokens available at `now`.
    pub fn available(&mut self, now: Nanos) -> u64 {
        self.refill(now);
        (self.nano_tokens / 1_000_000_000) as u64
    }

    /// Takes `n` tokens if there are that many at `now`.
    pub fn take(&mut self, n: u64, now: Nanos) -> bool {
        self.refill(now);
        let need = u128::from(n) * 1_000_000_000;
        if self.nano_tokens >= need {
            self.nano_tokens -= need;
            true
        } else {
            false
        }
    }

    /// Changes the rate and capacity, keeping what is banked (up to the
    /// new capacity).
    pub fn set_rate(&mut self, rate_per_sec: u64, capacity: u64, now: Nanos) {
        self.refill(now);
        self.rate = rate_per_sec;
        self.capacity = capacity;
        self.nano_tokens = self.nano_tokens.min(u128::from(capacity) * 1_000_000_000);
    }
}

/// What a responder did, since it was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NackStats {
    /// NACK packets answered.
    pub nacks: u64,
    /// Sequence numbers looked at.
    pub requested: u64,
    /// Sent again.
    pub resent: u64,
    /// Sent again less than a round trip before.
    pub duplicate: u64,
    /// Over the stream's or the session's retransmission rate.
    pub rate_limited: u64,
    pub too_old: u64,
    pub never_sent: u64,
    /// NACK packets not read to the end: more numbers than one NACK may
    /// have looked at, or over the rate of lookups.
    pub truncated: u64,
}

/// The retransmission budget a session's streams share.
#[derive(Debug, Clone)]
pub struct SessionBudget {
    bucket: TokenBucket,
    rate_limited: u64,
}

impl SessionBudget {
    /// A budget of `rate_fraction` of the session's total bit rate,
    /// `burst` of it at once.
    pub fn new(session_bit_rate: u64, cfg: &NackConfig) -> SessionBudget {
        let (rate, cap) = bucket_size(session_bit_rate, cfg);
        SessionBudget {
            bucket: TokenBucket::new(rate, cap),
            rate_limited: 0,
        }
    }

    /// Resends the session's budget refused.
    pub fn rate_limited(&self) -> u64 {
        self.rate_limited
    }
}

/// Bytes per second and bucket bytes for a stream of `bit_rate` bits per
/// second.
fn bucket_size(bit_rate: u64, cfg: &NackConfig) -> (u64, u64) {
    let rate = (bit_rate as f64 / 8.0 * cfg.rate_fraction.max(0.0)) as u64;
    let cap = ((rate as f64 * cfg.burst.as_secs_f64()) as u64).max(cfg.min_bucket as u64);
    (rate, cap)
}

/// Answers NACKs for one stream.
#[derive(Debug, Clone)]
pub struct NackResponder {
    cfg: NackConfig,
    bytes: TokenBucket,
    lookups: TokenBucket,
    rtt: Option<Duration>,
    stats: NackStats,
}

impl NackResponder {
    /// A responder for a stream of `bit_rate` bits and `packet_rate`
    /// packets per second (the hint track's averages, or what a live
    /// stream measured).
    pub fn new(cfg: NackConfig, bit_rate: u64, packet_rate: f64) -> NackResponder {
        let (rate, cap) = bucket_size(bit_rate, &cfg);
        let lookups = ((packet_rate.max(0.0) * 2.0) as u64).max(100);
        NackResponder {
            cfg,
            bytes: TokenBucket::new(rate, cap),
            lookups: TokenBucket::new(lookups, lookups),
            rtt: None,
            stats: NackStats::default(),
        }
    }

    pub fn stats(&self) -> NackStats {
        self.stats
    }

    /// The round trip to the client, from its receiver reports.
    pub fn set_rtt(&mut self, rtt: Duration) {
        self.rtt = Some(rtt);
    }

    /// How long a resend blocks another of the same packet.
    pub fn dedupe_window(&self) -> Duration {
        self.rtt.unwrap_or(self.cfg.default_rtt).clamp(MIN_DEDUPE, MAX_DEDUPE)
    }

    /// Answers one NACK: `lost` are the numbers it names (as
    /// `NackList::lost` gives them). Appends to `out` the sequence numbers
    /// to send again now, each once, and marks them resent in `history`.
    /// The caller sends each from [`History::resend`] as an RTX packet.
    pub fn respond(
        &mut self,
        lost: impl IntoIterator<Item = u16>,
        history: &mut History,
        session: &mut SessionBudget,
        now: Nanos,
        out: &mut Vec<u16>,
    ) {
        self.stats.nacks += 1;
        let window = self.dedupe_window().as_nanos() as u64;
        for (i, seq) in lost.into_iter().enumerate() {
            if i >= self.cfg.max_per_nack || !self.lookups.take(1, now) {
                self.stats.truncated += 1;
                return;
            }
            self.stats.requested += 1;
            match history.lookup(seq, now) {
                Lookup::NeverSent => self.stats.never_sent += 1,
                Lookup::TooOld => self.stats.too_old += 1,
                Lookup::Found {
                    resent_at: Some(at), ..
                } if now.saturating_sub(at) < window => {
                    self.stats.duplicate += 1;
                }
                Lookup::Found { len, .. } => {
                    let bytes = (len + OSN_LEN) as u64;
                    if self.bytes.available(now) < bytes || session.bucket.available(now) < bytes {
                        self.stats.rate_limited += 1;
                        session.rate_limited += 1;
                        continue;
                    }
                    self.bytes.take(bytes, now);
                    session.bucket.take(bytes, now);
                    history.mark_resent(seq, now);
                    self.stats.resent += 1;
                    out.push(seq);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repair::history::HistoryConfig;
    use bytes::Bytes;
    use loader::Span;
    use proto::rtcp;
    use proto::rtp::Header;

    const MS: Nanos = 1_000_000;

    /// A history of `n` packets of `payload` bytes, sent 10 ms apart from 0.
    fn history(n: u16, payload: u32) -> (History, Bytes) {
        let owner = Bytes::from(vec![0u8; 1 << 20]);
        let mut h = History::new(HistoryConfig {
            max_packets: 1024,
            max_spans: 4096,
            max_age: Duration::from_secs(5),
        });
        for seq in 0..n {
            let header = Header {
                marker: false,
                payload_type: 96,
                sequence: seq,
                timestamp: 0,
                ssrc: 1,
            }
            .to_bytes();
            h.push(
                &header,
                &owner,
                &[Span {
                    offset: 0,
                    len: payload,
                }],
                u64::from(seq) * 10 * MS,
            );
        }
        (h, owner)
    }

    /// The lost numbers of a NACK built the way a client builds it.
    fn nack(lost: &[u16]) -> Vec<u16> {
        let mut buf = Vec::new();
        rtcp::generic_nack(&mut buf, 9, 1, lost);
        match rtcp::parse_compound(&buf).unwrap().next().unwrap() {
            rtcp::RtcpPacket::GenericNack { nacks, .. } => nacks.lost().collect(),
            other => panic!("{other:?}"),
        }
    }

    /// A generous responder: 10 Mbit/s, so only the test's concern limits.
    fn responder() -> (NackResponder, SessionBudget) {
        let cfg = NackConfig::default();
        (
            NackResponder::new(cfg, 10_000_000, 1000.0),
            SessionBudget::new(10_000_000, &cfg),
        )
    }

    #[test]
    fn lost_packets_are_sent_again_once() {
        let (mut h, _) = history(100, 1000);
        let (mut r, mut s) = responder();
        let mut out = Vec::new();
        let now = 1000 * MS;
        r.respond(nack(&[10, 11, 12, 50]), &mut h, &mut s, now, &mut out);
        assert_eq!(out, [10, 11, 12, 50]);
        // The same NACK again within the round trip: nothing.
        out.clear();
        r.respond(nack(&[10, 11, 12, 50]), &mut h, &mut s, now + 50 * MS, &mut out);
        assert!(out.is_empty());
        assert_eq!(r.stats().duplicate, 4);
        // After it: the resend may have been lost, so again.
        out.clear();
        r.respond(nack(&[11]), &mut h, &mut s, now + 150 * MS, &mut out);
        assert_eq!(out, [11]);
        // Repeats within one NACK go once.
        out.clear();
        r.respond([20, 20, 20], &mut h, &mut s, now, &mut out);
        assert_eq!(out, [20]);
        let st = r.stats();
        assert_eq!((st.nacks, st.resent, st.duplicate, st.requested), (4, 6, 6, 12));
    }

    #[test]
    fn the_round_trip_sets_the_duplicate_window() {
        let (mut h, _) = history(10, 100);
        let (mut r, mut s) = responder();
        assert_eq!(r.dedupe_window(), Duration::from_millis(100));
        r.set_rtt(Duration::from_millis(30));
        assert_eq!(r.dedupe_window(), Duration::from_millis(30));
        let mut out = Vec::new();
        r.respond([1], &mut h, &mut s, 500 * MS, &mut out);
        r.respond([1], &mut h, &mut s, 520 * MS, &mut out);
        r.respond([1], &mut h, &mut s, 531 * MS, &mut out);
        assert_eq!(out, [1, 1]);
        // Clamped both ways.
        r.set_rtt(Duration::ZERO);
        assert_eq!(r.dedupe_window(), MIN_DEDUPE);
        r.set_rtt(Duration::from_secs(9));
        assert_eq!(r.dedupe_window(), MAX_DEDUPE);
    }

    #[test]
    fn never_sent_and_too_old_are_counted_not_sent() {
        let (mut h, _) = history(600, 100);
        let (mut r, mut s) = responder();
        let mut out = Vec::new();
        // At 6 s packets sent before 1 s are older than the 5 s kept.
        r.respond(nack(&[50, 150, 700, 40_000]), &mut h, &mut s, 6000 * MS, &mut out);
        assert_eq!(out, [150]);
        let st = r.stats();
        assert_eq!((st.too_old, st.never_sent, st.resent), (1, 2, 1));
    }

    #[test]
    fn a_storm_costs_at_most_the_rate() {
        // 800 kbit/s: half is 50 kB/s, a bucket of 1 s: 50 kB. Packets of
        // 1000 bytes are 1014 on the wire as RTX.
        let (mut h, _) = history(1000, 1000);
        let cfg = NackConfig::default();
        let mut r = NackResponder::new(cfg, 800_000, 100_000.0);
        let mut s = SessionBudget::new(100_000_000, &cfg);
        let mut out = Vec::new();
        let start = 9000 * MS;
        let mut resent_bytes = 0u64;
        // Every millisecond for 2 s, a NACK for 17 packets, each time other
        // ones (so no duplicate window helps).
        for ms in 0..2000u64 {
            out.clear();
            let base = ((ms * 17) % 900) as u16;
            let lost: Vec<u16> = (base..base + 17).collect();
            r.respond(nack(&lost), &mut h, &mut s, start + ms * MS, &mut out);
            resent_bytes += out.len() as u64 * 1014;
        }
        // The bucket's 50 kB plus 2 s at 50 kB/s, give or take a packet.
        let budget = 50_000 + 2 * 50_000;
        assert!(resent_bytes <= budget + 1014, "{resent_bytes}");
        assert!(resent_bytes >= budget - 2 * 1014, "{resent_bytes}");
        assert!(r.stats().rate_limited > 0);
    }

    #[test]
    fn the_session_budget_is_shared() {
        let (mut h1, _) = history(200, 1000);
        let (mut h2, _) = history(200, 1000);
        let cfg = NackConfig::default();
        // Each stream may send plenty; the session only 3000 bytes.
        let mut r1 = NackResponder::new(cfg, 100_000_000, 1000.0);
        let mut r2 = NackResponder::new(cfg, 100_000_000, 1000.0);
        let mut s = SessionBudget::new(0, &cfg);
        let mut out = Vec::new();
        r1.respond([1, 2], &mut h1, &mut s, 1000 * MS, &mut out);
        r2.respond([1, 2], &mut h2, &mut s, 1000 * MS, &mut out);
        assert_eq!(out.len(), 2, "two packets of 1014 fit in 3000");
        assert_eq!(s.rate_limited(), 2);
    }

    #[test]
    fn floods_are_not_read_to_the_end() {
        let (mut h, _) = history(100, 10);
        let (mut r, mut s) = responder();
        let mut out = Vec::new();
        // A NACK with 5000 entries, all bits set: 85,000 numbers.
        let mut buf = Vec::new();
        let entries: Vec<u16> = (0..5000u32).map(|i| (i * 17) as u16).collect();
        let all: Vec<u16> = entries
            .iter()
            .flat_map(|&p| (0..17).map(move |d| p.wrapping_add(d)))
            .collect();
        rtcp::generic_nack(&mut buf, 9, 1, &all);
        let lost = match rtcp::parse_compound(&buf).unwrap().next().unwrap() {
            rtcp::RtcpPacket::GenericNack { nacks, .. } => nacks.lost(),
            other => panic!("{other:?}"),
        };
        r.respond(lost, &mut h, &mut s, 2000 * MS, &mut out);
        let st = r.stats();
        assert_eq!(st.requested, 256);
        assert_eq!(st.truncated, 1);
        assert_eq!(out.len(), 100, "the 100 sent are among the first numbers");
        // Many NACKs in a row: lookups run out at twice the packet rate
        // (here 2000 a second, banked for a second).
        let (mut r, mut s) = responder();
        let mut looked = 0;
        for i in 0..100 {
            r.respond((0..256).map(|x| 1000 + x), &mut h, &mut s, 3000 * MS + i, &mut out);
            looked = r.stats().requested;
        }
        assert_eq!(looked, 2000);
        assert_eq!(r.stats().never_sent, 2000);
    }

    #[test]
    fn a_token_bucket_refills_at_its_rate() {
        let mut b = TokenBucket::new(1000, 500);
        assert!(b.take(500, 0));
        assert!(!b.take(1, 0));
        assert!(b.take(1, MS));
        assert_eq!(b.available(MS + 100 * MS), 100);
        assert_eq!(b.available(10_000 * MS), 500, "no more than its capacity");
        // Time going backwards gives nothing and takes nothing.
        assert_eq!(b.available(5 * MS), 500);
        b.set_rate(10, 50, 10_000 * MS);
        assert_eq!(b.available(10_000 * MS), 50);
    }
}
