//! A receiver's side of retransmission, without IO: which packets of a
//! stream went missing, what to ask for again, and what came back.
//!
//! Two schemes, one per run (`--nack`, `--reliable-udp`):
//!
//! - [`Scheme::Nack`], RFC 4585 and 4588: a gap that stays open past a
//!   short reorder wait is asked for in a generic NACK (with the session's
//!   receiver report, as RFC 4585 wants feedback sent: compound RTCP), asked
//!   again a few times while it stays open, and given up on after the
//!   sender's `rtx-time`. Repairs arrive as RTX packets on their own SSRC
//!   and payload type, the original sequence number (OSN) in their first
//!   two payload bytes.
//! - [`Scheme::Reliable`], Darwin Streaming Server's reliable UDP: every
//!   packet that arrives is acknowledged in an RTCP APP `qtak` (a first
//!   sequence number and a bit mask of those after it), soon after it
//!   came; the server sends again, as the same packet, what stays
//!   unacknowledged past its retransmission timeout. Nothing is asked for.
//!
//! Either way the same books are kept: a sequence number missing when a
//! later one arrives is **lost on the wire** once it has stayed missing
//! longer than the reorder wait (before that, a late arrival is only
//! reordering); one that arrives after that (as an RTX packet, or again on
//! the stream) was **repaired**. What stays missing is the residual loss,
//! which the stream's sequence accounting has. A packet reordered by more
//! than the wait counts as lost and repaired, which no server here does.
//!
//! Everything is bounded: at most [`MAX_MISSING`] open gaps per stream (a
//! larger hole, a sender's jump, is not asked for packet by packet), and
//! one NACK names at most [`MAX_PER_NACK`] numbers.

use std::collections::VecDeque;

use proto::qtss::AckMask;
use proto::rtcp;

use crate::reception::Nanos;

const MS: Nanos = 1_000_000;

/// Which retransmission a run speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Nack,
    Reliable,
}

/// How long a gap may be reordering before it counts as lost and (with
/// NACK) is asked for. Servers here send each stream's packets in order;
/// the network may swap neighbours.
pub const REORDER_WAIT: Nanos = 20 * MS;
/// A NACKed packet that has not come is asked for again after this long,
/// at most [`MAX_NACKS`] times in all.
pub const NACK_RETRY: Nanos = 120 * MS;
pub const MAX_NACKS: u8 = 4;
/// A gap still open this long after it was seen is given up: the server
/// keeps its history about a second (`rtx-time`), DSS its packets 1.75 to
/// 2.5 s.
pub const GIVE_UP_NACK: Nanos = 1000 * MS;
pub const GIVE_UP_RELIABLE: Nanos = 3000 * MS;
/// Acknowledgements go at most this long after the first packet they
/// cover: well inside the server's shortest retransmission timeout (600 ms).
/// A server's `qtsi` ack timeout takes its place (see
/// [`Repair::set_ack_timeout`]).
pub const ACK_DELAY: Nanos = 30 * MS;
pub const MAX_MISSING: usize = 1024;
pub const MAX_PER_NACK: usize = 64;

/// How a packet came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// On the stream itself (a first send, or a reliable-UDP resend).
    Stream,
    /// In an RTX packet.
    Rtx,
}

/// What repair did for one stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RepairStats {
    /// Missing longer than the reorder wait.
    pub lost_on_wire: u64,
    /// Of those, arrived after all.
    pub repaired: u64,
    /// Given up on after the give-up time (or pushed out of a full list).
    pub given_up: u64,
    /// Lost on the wire and still awaited when the play was cut short (or
    /// when the stats were taken): the losses of its last moments, whose
    /// repair had no time to come (a reliable-UDP resend waits an RTO of
    /// 600 ms or more).
    pub open: u64,
    /// NACK packets sent, and the numbers they asked for (repeats included).
    pub nacks: u64,
    pub nacked: u64,
    /// RTX packets received, and those for numbers not missing (a repair
    /// that came twice, or one for a packet that had come after all).
    pub rtx: u64,
    pub rtx_unneeded: u64,
    /// `qtak` acknowledgements sent.
    pub acks: u64,
}

impl RepairStats {
    pub fn add(&mut self, o: &RepairStats) {
        self.lost_on_wire += o.lost_on_wire;
        self.repaired += o.repaired;
        self.given_up += o.given_up;
        self.open += o.open;
        self.nacks += o.nacks;
        self.nacked += o.nacked;
        self.rtx += o.rtx;
        self.rtx_unneeded += o.rtx_unneeded;
        self.acks += o.acks;
    }
}

#[derive(Debug, Clone, Copy)]
struct Missing {
    seq: u16,
    since: Nanos,
    /// Counted in `lost_on_wire`.
    lost: bool,
    next_nack: Nanos,
    nacks: u8,
}

/// One stream's repair.
#[derive(Debug, Clone)]
pub struct Repair {
    scheme: Scheme,
    /// The first sequence number seen (or announced), and the highest.
    first: Option<u16>,
    highest: Option<u16>,
    /// Open gaps, oldest first.
    missing: VecDeque<Missing>,
    /// Reliable UDP: what the next acknowledgement says, and when it goes;
    /// how long after its first packet.
    ack: Option<(AckMask, Nanos)>,
    ack_delay: Nanos,
    stats: RepairStats,
}

impl Repair {
    pub fn new(scheme: Scheme) -> Repair {
        Repair {
            scheme,
            first: None,
            highest: None,
            missing: VecDeque::new(),
            ack: None,
            ack_delay: ACK_DELAY,
            stats: RepairStats::default(),
        }
    }

    /// Reliable UDP: the server asked for acks every `ms` (its `qtsi` `at`,
    /// which DSS keeps within 20 to 100 ms; held to that here too).
    pub fn set_ack_timeout(&mut self, ms: u32) {
        self.ack_delay = u64::from(ms.clamp(20, 100)) * MS;
    }

    /// How long an acknowledgement waits after its first packet.
    pub fn ack_delay(&self) -> Nanos {
        self.ack_delay
    }

    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    pub fn stats(&self) -> RepairStats {
        RepairStats {
            open: self.stats.open + self.open_now(),
            ..self.stats
        }
    }

    fn give_up_after(&self) -> Nanos {
        match self.scheme {
            Scheme::Nack => GIVE_UP_NACK,
            Scheme::Reliable => GIVE_UP_RELIABLE,
        }
    }

    /// Whether `seq` is an open gap: what an RTX packet of unknown SSRC
    /// must repair to be this stream's.
    pub fn wants(&self, seq: u16) -> bool {
        self.missing.iter().any(|m| m.seq == seq && m.nacks > 0)
    }

    /// The sender said (RTP-Info `seq=`) that the stream starts at `seq`:
    /// packets before the first that came are gaps too. Before any packet,
    /// the first one's predecessor is taken as seen; after, the numbers
    /// between are gaps as of `now`, if they are few.
    pub fn expect_from(&mut self, seq: u16, now: Nanos) {
        let Some(first) = self.first else {
            self.highest = Some(seq.wrapping_sub(1));
            return;
        };
        let ahead = first.wrapping_sub(seq);
        if ahead == 0 || usize::from(ahead) > MAX_PER_NACK {
            return;
        }
        for k in 0..ahead {
            let seq = first.wrapping_sub(k + 1);
            if self.missing.iter().all(|m| m.seq != seq) && self.missing.len() < MAX_MISSING {
                self.missing.push_front(Missing {
                    seq,
                    since: now,
                    lost: false,
                    next_nack: now + REORDER_WAIT,
                    nacks: 0,
                });
            }
        }
        self.first = Some(seq);
    }

    /// A packet `seq` arrived at `now`. Returns whether a new gap opened
    /// (the caller's next deadline may be sooner).
    pub fn on_packet(&mut self, seq: u16, via: Via, now: Nanos, out: &mut Vec<u8>, ssrcs: (u32, u32)) -> bool {
        if via == Via::Rtx {
            self.stats.rtx += 1;
        }
        if self.scheme == Scheme::Reliable {
            self.acknowledge(seq, now, out, ssrcs);
        }
        self.first.get_or_insert(seq);
        let Some(highest) = self.highest else {
            self.highest = Some(seq);
            return false;
        };
        let d = seq.wrapping_sub(highest);
        if d != 0 && d < 0x8000 {
            self.highest = Some(seq);
            let gap = d - 1;
            if usize::from(gap) > MAX_MISSING {
                // A jump (a seek, a restarted sender): not packet loss to
                // ask for. The sequence accounting judges it.
                return false;
            }
            for k in 1..=gap {
                if self.missing.len() == MAX_MISSING {
                    self.missing.pop_front();
                    self.stats.given_up += 1;
                }
                self.missing.push_back(Missing {
                    seq: highest.wrapping_add(k),
                    since: now,
                    lost: false,
                    next_nack: now + REORDER_WAIT,
                    nacks: 0,
                });
            }
            return gap > 0;
        }
        // Older than the highest (or the highest again).
        match self.missing.iter().position(|m| m.seq == seq) {
            Some(i) => {
                let m = self.missing.remove(i).expect("a position in range");
                if m.lost || via == Via::Rtx || now >= m.since + REORDER_WAIT {
                    if !m.lost {
                        self.stats.lost_on_wire += 1;
                    }
                    self.stats.repaired += 1;
                }
            }
            None if via == Via::Rtx => self.stats.rtx_unneeded += 1,
            None => {}
        }
        false
    }

    /// Reliable UDP: `seq` goes into the acknowledgement being made; one
    /// that does not fit sends that one first.
    fn acknowledge(&mut self, seq: u16, now: Nanos, out: &mut Vec<u8>, ssrcs: (u32, u32)) {
        if let Some((mask, _)) = &mut self.ack {
            if mask.insert(seq) {
                return;
            }
            self.flush_ack(out, ssrcs);
        }
        self.ack = Some((AckMask::new(seq), now + self.ack_delay));
    }

    fn flush_ack(&mut self, out: &mut Vec<u8>, (ours, media): (u32, u32)) {
        if let Some((mask, _)) = self.ack.take() {
            mask.emit(out, ours, media);
            self.stats.acks += 1;
        }
    }

    /// What is due at `now`: gaps past the reorder wait count as lost,
    /// gaps past the give-up time are dropped, and the feedback due is
    /// appended to `out` (a NACK, or a `qtak`) as RTCP packets from `ours`
    /// about `media`. Returns whether anything was appended.
    pub fn poll(&mut self, now: Nanos, out: &mut Vec<u8>, (ours, media): (u32, u32)) -> bool {
        let give_up = self.give_up_after();
        let before = self.missing.len();
        self.missing.retain(|m| now < m.since + give_up);
        self.stats.given_up += (before - self.missing.len()) as u64;
        let start = out.len();
        let mut ask: [u16; MAX_PER_NACK] = [0; MAX_PER_NACK];
        let mut n = 0;
        for m in self.missing.iter_mut() {
            if now < m.since + REORDER_WAIT {
                continue;
            }
            if !m.lost {
                m.lost = true;
                self.stats.lost_on_wire += 1;
            }
            if self.scheme == Scheme::Nack && m.nacks < MAX_NACKS && now >= m.next_nack && n < MAX_PER_NACK {
                ask[n] = m.seq;
                n += 1;
                m.nacks += 1;
                m.next_nack = now + NACK_RETRY;
            }
        }
        if n > 0 {
            rtcp::generic_nack(out, ours, media, &ask[..n]);
            self.stats.nacks += 1;
            self.stats.nacked += n as u64;
        }
        if self.ack.as_ref().is_some_and(|(_, due)| now >= *due) {
            self.flush_ack(out, (ours, media));
        }
        out.len() > start
    }

    /// The earliest time [`poll`](Self::poll) has something to do.
    pub fn poll_timeout(&self) -> Option<Nanos> {
        let mut t = self.ack.as_ref().map(|(_, due)| *due);
        let mut at = |x: Nanos| t = Some(t.map_or(x, |t: Nanos| t.min(x)));
        // Bounded by MAX_MISSING, and mostly a handful.
        for m in &self.missing {
            at(m.since + self.give_up_after());
            if !m.lost {
                at(m.since + REORDER_WAIT);
            } else if self.scheme == Scheme::Nack && m.nacks < MAX_NACKS {
                at(m.next_nack);
            }
        }
        t
    }

    /// Whether gaps are open: repairs may still come.
    pub fn is_waiting(&self) -> bool {
        !self.missing.is_empty()
    }

    fn open_now(&self) -> u64 {
        self.missing.iter().filter(|m| m.lost).count() as u64
    }

    /// The play is over (a movie's end waits for open gaps to be repaired
    /// or given up; a TEARDOWN before it does not): what is still open
    /// stays lost, and a pending acknowledgement is dropped. Gaps counted
    /// lost on the wire stay `open`; those too young to be are given up.
    pub fn finish(&mut self) {
        let open = self.open_now();
        self.stats.open += open;
        self.stats.given_up += self.missing.len() as u64 - open;
        self.missing.clear();
        self.ack = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::qtss::Ack;
    use proto::rtcp::RtcpPacket;

    const SSRCS: (u32, u32) = (0x1111, 0x2222);

    fn nacked(out: &[u8]) -> Vec<u16> {
        rtcp::parse_compound(out)
            .unwrap()
            .flat_map(|p| match p {
                RtcpPacket::GenericNack { media_ssrc, nacks, .. } => {
                    assert_eq!(media_ssrc, SSRCS.1);
                    nacks.lost().collect::<Vec<_>>()
                }
                _ => Vec::new(),
            })
            .collect()
    }

    fn acked(out: &[u8]) -> Vec<u16> {
        rtcp::parse_compound(out)
            .unwrap()
            .flat_map(|p| {
                let app = p.app().unwrap().unwrap();
                let ack = Ack::parse(&app).unwrap();
                assert_eq!((ack.receiver_ssrc, ack.media_ssrc), SSRCS);
                ack.acked().collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn a_play_cut_short_leaves_its_last_losses_open_not_given_up() {
        let mut r = Repair::new(Scheme::Reliable);
        let mut out = Vec::new();
        for s in [10u16, 12, 13, 15] {
            r.on_packet(s, Via::Stream, 0, &mut out, SSRCS);
        }
        // 11 is past the reorder wait, 14 not yet.
        r.on_packet(16, Via::Stream, REORDER_WAIT, &mut out, SSRCS);
        r.poll(REORDER_WAIT, &mut out, SSRCS);
        r.finish();
        let st = r.stats();
        assert_eq!((st.lost_on_wire, st.open, st.given_up, st.repaired), (2, 2, 0, 0));
        assert!(!r.is_waiting());
    }

    #[test]
    fn a_gap_is_nacked_after_the_reorder_wait_and_repaired_by_rtx() {
        let mut r = Repair::new(Scheme::Nack);
        let mut out = Vec::new();
        for s in [65_533u16, 65_534, 1, 2] {
            r.on_packet(s, Via::Stream, 0, &mut out, SSRCS);
        }
        assert!(out.is_empty());
        // 65535 and 0 are missing: not yet lost, nothing asked.
        assert_eq!(r.poll_timeout(), Some(REORDER_WAIT));
        assert!(!r.poll(REORDER_WAIT - 1, &mut out, SSRCS));
        assert_eq!(r.stats().lost_on_wire, 0);
        assert!(r.poll(REORDER_WAIT, &mut out, SSRCS));
        assert_eq!(nacked(&out), [65_535, 0]);
        assert_eq!((r.stats().lost_on_wire, r.stats().nacks, r.stats().nacked), (2, 1, 2));
        assert_eq!(r.stats().open, 2);
        assert!(r.wants(0) && !r.wants(2));
        // One comes back; the other is asked again after the retry time.
        out.clear();
        r.on_packet(65_535, Via::Rtx, 40 * MS, &mut out, SSRCS);
        assert_eq!(r.poll_timeout(), Some(REORDER_WAIT + NACK_RETRY));
        assert!(r.poll(REORDER_WAIT + NACK_RETRY, &mut out, SSRCS));
        assert_eq!(nacked(&out), [0]);
        r.on_packet(0, Via::Rtx, 200 * MS, &mut out, SSRCS);
        // A second copy is not a second repair.
        r.on_packet(0, Via::Rtx, 210 * MS, &mut out, SSRCS);
        let st = r.stats();
        assert_eq!((st.lost_on_wire, st.repaired, st.rtx, st.rtx_unneeded), (2, 2, 3, 1));
        assert_eq!(st.open, 0);
        assert_eq!(r.poll_timeout(), None);
    }

    #[test]
    fn packets_before_the_first_are_gaps_when_rtp_info_says_so() {
        let mut r = Repair::new(Scheme::Nack);
        let mut out = Vec::new();
        // Announced first: the first packet itself may be missing.
        r.expect_from(500, 0);
        r.on_packet(502, Via::Stream, MS, &mut out, SSRCS);
        r.poll(MS + REORDER_WAIT, &mut out, SSRCS);
        assert_eq!(nacked(&out), [500, 501]);
        // Announced after packets came: the numbers before them.
        let mut r = Repair::new(Scheme::Nack);
        out.clear();
        r.on_packet(10, Via::Stream, 0, &mut out, SSRCS);
        r.on_packet(11, Via::Stream, 0, &mut out, SSRCS);
        r.expect_from(8, MS);
        r.expect_from(60_000, MS);
        r.on_packet(13, Via::Stream, MS, &mut out, SSRCS);
        r.poll(MS + REORDER_WAIT, &mut out, SSRCS);
        assert_eq!(nacked(&out), [8, 9, 12]);
    }

    #[test]
    fn reordering_within_the_wait_is_not_loss() {
        let mut r = Repair::new(Scheme::Nack);
        let mut out = Vec::new();
        r.on_packet(10, Via::Stream, 0, &mut out, SSRCS);
        assert!(r.on_packet(12, Via::Stream, MS, &mut out, SSRCS));
        r.on_packet(11, Via::Stream, 2 * MS, &mut out, SSRCS);
        r.poll(100 * MS, &mut out, SSRCS);
        assert!(out.is_empty());
        assert_eq!(r.stats(), RepairStats::default());
    }

    #[test]
    fn asks_are_bounded_and_gaps_given_up() {
        let mut r = Repair::new(Scheme::Nack);
        let mut out = Vec::new();
        r.on_packet(0, Via::Stream, 0, &mut out, SSRCS);
        r.on_packet(101, Via::Stream, 0, &mut out, SSRCS);
        r.poll(REORDER_WAIT, &mut out, SSRCS);
        assert_eq!(nacked(&out), (1..=MAX_PER_NACK as u16).collect::<Vec<_>>());
        // Asked at most MAX_NACKS times each, then nothing more.
        let mut t = REORDER_WAIT;
        for _ in 0..20 {
            t += NACK_RETRY;
            r.poll(t, &mut Vec::new(), SSRCS);
        }
        assert_eq!(r.stats().nacked, 100 * u64::from(MAX_NACKS));
        r.poll(GIVE_UP_NACK, &mut out, SSRCS);
        assert_eq!(r.stats().given_up, 100);
        assert_eq!(r.poll_timeout(), None);
        // A jump is not asked for packet by packet.
        assert!(!r.on_packet(30_000, Via::Stream, GIVE_UP_NACK, &mut out, SSRCS));
        // Nor is a packet from before the stream's first.
        r.on_packet(29_000, Via::Stream, GIVE_UP_NACK, &mut out, SSRCS);
        assert_eq!(r.poll_timeout(), None);
    }

    #[test]
    fn the_servers_ack_timeout_sets_when_acks_go_within_dss_bounds() {
        let mut r = Repair::new(Scheme::Reliable);
        let mut out = Vec::new();
        for (ms, want) in [(80, 80), (5, 20), (500, 100)] {
            r.set_ack_timeout(ms);
            assert_eq!(r.ack_delay(), want * MS);
        }
        r.set_ack_timeout(45);
        r.on_packet(100, Via::Stream, MS, &mut out, SSRCS);
        assert_eq!(r.poll_timeout(), Some(MS + 45 * MS));
        r.poll(MS + 44 * MS, &mut out, SSRCS);
        assert!(out.is_empty());
        r.poll(MS + 45 * MS, &mut out, SSRCS);
        assert_eq!(acked(&out), [100]);
    }

    #[test]
    fn reliable_acks_what_came_and_counts_resends_as_repairs() {
        let mut r = Repair::new(Scheme::Reliable);
        let mut out = Vec::new();
        for s in [100u16, 101, 103, 104] {
            r.on_packet(s, Via::Stream, MS, &mut out, SSRCS);
        }
        assert!(out.is_empty());
        assert_eq!(r.poll_timeout(), Some(MS + REORDER_WAIT));
        r.poll(MS + REORDER_WAIT, &mut out, SSRCS);
        // Lost, but nothing asked: the server resends on its timeout.
        assert!(out.is_empty());
        assert_eq!(r.poll_timeout(), Some(MS + ACK_DELAY));
        r.poll(MS + ACK_DELAY, &mut out, SSRCS);
        assert_eq!(acked(&out), [100, 101, 103, 104]);
        // The resend, 600 ms on, is acknowledged as well.
        out.clear();
        r.on_packet(102, Via::Stream, 700 * MS, &mut out, SSRCS);
        r.on_packet(105, Via::Stream, 701 * MS, &mut out, SSRCS);
        // 105 fits after 102 in one mask.
        r.poll(800 * MS, &mut out, SSRCS);
        assert_eq!(acked(&out), [102, 105]);
        let st = r.stats();
        assert_eq!((st.lost_on_wire, st.repaired, st.acks, st.nacks), (1, 1, 2, 0));
    }

    #[test]
    fn an_ack_that_cannot_hold_a_number_goes_first() {
        let mut r = Repair::new(Scheme::Reliable);
        let mut out = Vec::new();
        r.on_packet(1000, Via::Stream, 0, &mut out, SSRCS);
        r.on_packet(1300, Via::Stream, 0, &mut out, SSRCS);
        assert_eq!(acked(&out), [1000]);
        out.clear();
        r.on_packet(1001, Via::Stream, 0, &mut out, SSRCS);
        assert_eq!(acked(&out), [1300]);
        r.finish();
        assert_eq!(r.poll_timeout(), None);
        assert_eq!(r.stats().given_up, 298);
    }
}
