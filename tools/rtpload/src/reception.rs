//! What a receiver learns from one RTP stream, without IO: sequence
//! accounting (RFC 3550 appendix A.1, with extended sequence numbers, and
//! duplicates and reordering told apart), interarrival jitter (A.8), how
//! late each packet is against its own RTP-timestamp schedule, and the
//! reception report that RTCP carries back (A.3, section 6.4.1).
//!
//! Everything here is driven by packet headers and arrival times; the
//! caller owns the clock and the histograms.

use std::collections::VecDeque;

use proto::rtcp::{self, ReportBlock, SenderInfo};
use proto::rtp;

use crate::repair::Repair;

/// Nanoseconds on the caller's monotonic clock.
pub type Nanos = u64;

/// A forward jump of fewer packets than this is a gap (loss, or reordering
/// yet to be repaired); RFC 3550 A.1.
pub const MAX_DROPOUT: u16 = 3000;
/// A packet at most this far behind the highest is late, not a restart.
pub const MAX_MISORDER: u16 = 100;
/// How many sequence numbers behind the highest are remembered, to tell a
/// late packet from a duplicate. More than [`MAX_MISORDER`], so every
/// packet that counts as late is inside it.
const WINDOW: u32 = 128;

/// How one packet's sequence number relates to those before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// The stream's first packet.
    First,
    /// Newer than any before; `gap` sequence numbers were skipped (lost, or
    /// yet to arrive out of order).
    InOrder { gap: u16 },
    /// Older than the highest, and not seen before: fills a gap.
    Reordered,
    /// Seen before.
    Duplicate,
    /// So far from the highest that it may be the sender restarting its
    /// sequence; it counts once the next packet follows it (A.1's `bad_seq`).
    Jump,
    /// The packet after a [`Arrival::Jump`] followed it: accounting restarts
    /// from the jump.
    Resync,
}

/// Sequence-number accounting for one stream.
///
/// Loss is `expected - received`, where expected runs from the first
/// sequence number (or the one RTP-Info announced, if lower) to the highest
/// extended sequence number, and received counts each sequence number once.
/// Duplicates are counted apart and do not hide loss, unlike the RFC's
/// cumulative loss, which [`Sequence::rtcp_lost`] gives for RTCP.
#[derive(Debug, Clone, Default)]
pub struct Sequence {
    started: bool,
    /// Extended highest sequence number of the current run (cycles in the
    /// bits above 16).
    max: i64,
    /// Extended sequence number the current run starts from.
    base: i64,
    /// Bit k set: `max - k` was received.
    window: u128,
    /// Distinct sequence numbers received in the current run.
    received: u64,
    /// Runs before the last resync.
    prior_expected: u64,
    prior_received: u64,
    duplicates: u64,
    reordered: u64,
    /// Packets of an unconfirmed jump, in neither expected nor received.
    jumped: u64,
    resyncs: u32,
    bad_seq: Option<u16>,
    /// Announced by RTP-Info before the first packet came.
    first_expected: Option<u16>,
}

impl Sequence {
    /// Accounts for a packet with sequence number `seq`.
    pub fn record(&mut self, seq: u16) -> Arrival {
        if !self.started {
            self.start(seq);
            if let Some(first) = self.first_expected.take() {
                self.expect_from(first);
            }
            return Arrival::First;
        }
        let udelta = seq.wrapping_sub(self.max as u16);
        if udelta == 0 {
            self.duplicates += 1;
            return Arrival::Duplicate;
        }
        if udelta < MAX_DROPOUT {
            let d = u32::from(udelta);
            self.window = if d >= WINDOW { 0 } else { self.window << d };
            self.window |= 1;
            self.max += i64::from(d);
            self.received += 1;
            return Arrival::InOrder { gap: udelta - 1 };
        }
        if u32::from(udelta) <= 65_536 - u32::from(MAX_MISORDER) {
            if self.bad_seq == Some(seq) {
                // Two in a row after a jump: the sender restarted. Fold the
                // run so far and start one at the jump, both packets counted.
                self.prior_expected += self.run_expected();
                self.prior_received += self.received;
                let cycles = self.max & !0xffff;
                self.max = cycles + i64::from(seq);
                self.base = self.max - 1;
                self.window = 0b11;
                self.received = 2;
                self.jumped = self.jumped.saturating_sub(1);
                self.resyncs += 1;
                self.bad_seq = None;
                return Arrival::Resync;
            }
            self.bad_seq = Some(seq.wrapping_add(1));
            self.jumped += 1;
            return Arrival::Jump;
        }
        // Behind the highest by 1..=MAX_MISORDER.
        let back = 65_536 - u32::from(udelta);
        let bit = 1u128 << back;
        if self.window & bit != 0 {
            self.duplicates += 1;
            return Arrival::Duplicate;
        }
        self.window |= bit;
        self.received += 1;
        self.reordered += 1;
        // Older than the first packet: the run starts earlier than thought.
        self.base = self.base.min(self.max - i64::from(back));
        Arrival::Reordered
    }

    fn start(&mut self, seq: u16) {
        self.started = true;
        self.max = i64::from(seq);
        self.base = self.max;
        self.window = 1;
        self.received = 1;
    }

    /// The sender said (RTP-Info `seq=`) that the stream starts at `seq`.
    /// If packets have arrived and `seq` is a little before the first of
    /// them, the ones in between count as expected (lost until they come).
    /// Before any packet, it is kept for the first. A value that is not
    /// shortly before is not believed.
    pub fn expect_from(&mut self, seq: u16) {
        if !self.started {
            self.first_expected = Some(seq);
            return;
        }
        let behind_max = seq.wrapping_sub(self.max as u16).wrapping_neg();
        if behind_max > MAX_DROPOUT {
            return;
        }
        let ext = self.max - i64::from(behind_max);
        if ext < self.base && self.base - ext <= i64::from(MAX_DROPOUT) {
            self.base = ext;
        }
    }

    fn run_expected(&self) -> u64 {
        if self.started {
            (self.max - self.base + 1) as u64
        } else {
            0
        }
    }

    /// Sequence numbers from the first to the highest.
    pub fn expected(&self) -> u64 {
        self.prior_expected + self.run_expected()
    }

    /// Distinct sequence numbers received.
    pub fn received(&self) -> u64 {
        self.prior_received + self.received
    }

    /// Expected but never received.
    pub fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.received())
    }

    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    pub fn reordered(&self) -> u64 {
        self.reordered
    }

    /// Packets that jumped away and were never followed.
    pub fn jumped(&self) -> u64 {
        self.jumped
    }

    pub fn resyncs(&self) -> u32 {
        self.resyncs
    }

    /// The extended highest sequence number, as RTCP reports it.
    pub fn extended_highest(&self) -> u32 {
        self.max as u32
    }

    /// Cumulative loss as RFC 3550 defines it for RTCP: expected minus every
    /// packet received, duplicates included (so it can go negative).
    pub fn rtcp_lost(&self) -> i64 {
        self.expected() as i64 - (self.received() + self.duplicates) as i64
    }
}

/// Interarrival jitter (RFC 3550 section 6.4.1 and appendix A.8), in RTP
/// timestamp units, kept as the RFC's integer code keeps it: scaled by 16.
#[derive(Debug, Clone, Copy, Default)]
pub struct Jitter {
    transit: Option<u32>,
    scaled: u64,
}

impl Jitter {
    /// One packet: its arrival time and its RTP timestamp, both in RTP
    /// units (the arrival from any origin: only differences matter).
    pub fn update(&mut self, arrival: u32, timestamp: u32) {
        let transit = arrival.wrapping_sub(timestamp);
        if let Some(prev) = self.transit {
            let d = u64::from((transit.wrapping_sub(prev) as i32).unsigned_abs());
            self.scaled = self.scaled + d - ((self.scaled + 8) >> 4);
        }
        self.transit = Some(transit);
    }

    /// The current estimate, in RTP timestamp units.
    pub fn get(&self) -> u32 {
        (self.scaled >> 4).min(u64::from(u32::MAX)) as u32
    }
}

/// Where each packet is against the schedule its RTP timestamps set, once
/// the first packet has fixed the origin: lateness is arrival time minus
/// the time the stream's media clock says it is due.
///
/// The media clock is the newest timestamp seen so far, not the packet's
/// own. A video stream with B-frames sends frames in decoding order, so a
/// B-frame's timestamp is older than that of the P-frame sent before it;
/// judged by its own timestamp every B-frame would look late by the
/// reordering delay, although it arrives exactly when the server means it
/// to. Judged by the clock the stream has reached, a packet is late only
/// when it arrives after the media time the stream had already announced,
/// which is delay on the way, whatever the frame types.
#[derive(Debug, Clone, Copy, Default)]
pub struct Schedule {
    origin: Option<Nanos>,
    /// The last timestamp and its extension past 32 bits, relative to the
    /// first.
    last: u32,
    extended: i64,
    /// The newest (largest) extended timestamp so far.
    newest: i64,
}

impl Schedule {
    /// Lateness of a packet with `timestamp` arriving at `arrival`, in
    /// nanoseconds; negative when early. The first packet is on time by
    /// definition.
    pub fn lateness(&mut self, arrival: Nanos, timestamp: u32, clock_rate: u32) -> i64 {
        self.lateness_at(arrival, timestamp, clock_rate, 1.0)
    }

    /// As [`lateness`](Self::lateness), for a stream the server was granted
    /// to send at `speed` times real time (RTSP `Speed`): its media is due
    /// `speed` times as fast.
    pub fn lateness_at(&mut self, arrival: Nanos, timestamp: u32, clock_rate: u32, speed: f64) -> i64 {
        let Some(origin) = self.origin else {
            self.origin = Some(arrival);
            self.last = timestamp;
            self.extended = 0;
            self.newest = 0;
            return 0;
        };
        // Timestamps step either way (B-frames) but never by 2^31.
        self.extended += i64::from(timestamp.wrapping_sub(self.last) as i32);
        self.last = timestamp;
        self.newest = self.newest.max(self.extended);
        let mut media = i128::from(self.newest) * 1_000_000_000 / i128::from(clock_rate.max(1));
        if speed != 1.0 && speed > 0.0 {
            media = (media as f64 / speed) as i128;
        }
        let due = i128::from(origin) + media;
        (i128::from(arrival) - due).clamp(i64::MIN.into(), i64::MAX.into()) as i64
    }

    /// The media time the stream has reached since its first packet (its
    /// newest timestamp), in nanoseconds; `None` before the first packet.
    pub fn media_ns(&self, clock_rate: u32) -> Option<i64> {
        self.origin?;
        Some((i128::from(self.newest) * 1_000_000_000 / i128::from(clock_rate.max(1))) as i64)
    }

    /// When the first packet arrived.
    pub fn origin(&self) -> Option<Nanos> {
        self.origin
    }
}

/// What a client holds ahead of play, by its own measure: it plays from
/// its first packet's arrival at real time, so a packet whose media time
/// (the stream's newest timestamp) is later than the time since then is
/// held until it comes due. The bytes of those not yet due, oldest first.
#[derive(Debug, Clone, Default)]
pub struct Ahead {
    held: VecDeque<(Nanos, u32)>,
    bytes: u64,
}

impl Ahead {
    /// A packet of `len` bytes arrived at `arrival`, due for play at `due`.
    pub fn on_packet(&mut self, due: Nanos, len: usize, arrival: Nanos) {
        self.settle(arrival);
        if due > arrival {
            // Media times only grow (the newest timestamp), so the queue
            // stays in due order.
            self.held.push_back((due, len as u32));
            self.bytes += len as u64;
        }
    }

    /// Forgets what has come due by `now`; the bytes still held.
    pub fn settle(&mut self, now: Nanos) -> u64 {
        while let Some(&(due, len)) = self.held.front() {
            if due > now {
                break;
            }
            self.bytes -= u64::from(len);
            self.held.pop_front();
        }
        self.bytes
    }
}

/// What one accepted packet measured, for the caller's histograms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Measured {
    /// The stream's jitter after this packet, in microseconds.
    pub jitter_us: u64,
    /// How late the packet was, in nanoseconds (negative: early).
    pub lateness_ns: i64,
}

/// One RTP stream as received.
#[derive(Debug, Clone)]
pub struct Stream {
    /// From the SETUP reply, or learned from the first packet.
    pub ssrc: Option<u32>,
    pub payload_type: u8,
    pub clock_rate: u32,
    pub sequence: Sequence,
    jitter: Jitter,
    schedule: Schedule,
    first_arrival: Option<Nanos>,
    /// The latest arrival time seen.
    pub last_arrival: Option<Nanos>,
    /// Every packet, duplicates included, and their bytes (RTP header
    /// included).
    pub packets: u64,
    pub bytes: u64,
    /// The latest sender report: the middle 32 bits of its NTP time and when
    /// it arrived, for the LSR and DLSR of our reports.
    last_sr: Option<(u32, Nanos)>,
    pub sender_reports: u32,
    /// The sender said BYE.
    pub bye: bool,
    /// Expected and received at the last report (A.3's `*_prior`).
    reported: (u64, u64),
    /// Retransmission, when the stream negotiated it.
    pub repair: Option<Box<Repair>>,
    /// The speed the server said it sends at (`Speed` in PLAY's answer).
    pub speed: f64,
    /// What it holds ahead of play.
    pub ahead: Ahead,
}

impl Stream {
    pub fn new(ssrc: Option<u32>, payload_type: u8, clock_rate: u32) -> Stream {
        Stream {
            ssrc,
            payload_type,
            clock_rate,
            sequence: Sequence::default(),
            jitter: Jitter::default(),
            schedule: Schedule::default(),
            first_arrival: None,
            last_arrival: None,
            packets: 0,
            bytes: 0,
            last_sr: None,
            sender_reports: 0,
            bye: false,
            reported: (0, 0),
            repair: None,
            speed: 1.0,
            ahead: Ahead::default(),
        }
    }

    /// Media seconds received (first to newest timestamp) and the wall
    /// time from the first packet to the last, in nanoseconds: at speed 2
    /// the first is about twice the second.
    pub fn delivery_ns(&self) -> (u64, u64) {
        let media = self.schedule.media_ns(self.clock_rate).unwrap_or(0).max(0) as u64;
        let wall = match (self.first_arrival, self.last_arrival) {
            (Some(a), Some(b)) => b.saturating_sub(a),
            _ => 0,
        };
        (media, wall)
    }

    /// Accounts for a packet of `len` bytes that arrived at `arrival`.
    /// Returns what it measured, or `None` for a duplicate or an unconfirmed
    /// jump, whose timing says nothing about the stream.
    pub fn on_packet(&mut self, header: &rtp::Header, len: usize, arrival: Nanos) -> Option<Measured> {
        self.packets += 1;
        self.bytes += len as u64;
        self.ssrc.get_or_insert(header.ssrc);
        self.last_arrival = Some(self.last_arrival.map_or(arrival, |t| t.max(arrival)));
        match self.sequence.record(header.sequence) {
            Arrival::Duplicate | Arrival::Jump => return None,
            Arrival::Resync => self.schedule = Schedule::default(),
            Arrival::First | Arrival::InOrder { .. } | Arrival::Reordered => {}
        }
        let origin = *self.first_arrival.get_or_insert(arrival);
        let rate = u128::from(self.clock_rate.max(1));
        let mut since = u128::from(arrival.saturating_sub(origin));
        if self.speed != 1.0 {
            // At `speed`, the media clock runs that much faster than the
            // arrivals': jitter is the spread about that.
            since = (since as f64 * self.speed) as u128;
        }
        self.jitter
            .update((since * rate / 1_000_000_000) as u32, header.timestamp);
        let lateness_ns = self
            .schedule
            .lateness_at(arrival, header.timestamp, self.clock_rate, self.speed);
        if let (Some(o), Some(media)) = (self.schedule.origin(), self.schedule.media_ns(self.clock_rate)) {
            // Played at real time from the first packet, whatever the speed.
            self.ahead.on_packet(o + media.max(0) as u64, len, arrival);
        }
        Some(Measured {
            jitter_us: self.jitter_us(),
            lateness_ns,
        })
    }

    /// Interarrival jitter in RTP units.
    pub fn jitter(&self) -> u32 {
        self.jitter.get()
    }

    pub fn jitter_us(&self) -> u64 {
        u64::from(self.jitter.get()) * 1_000_000 / u64::from(self.clock_rate.max(1))
    }

    /// Whether any packet has arrived.
    pub fn has_packets(&self) -> bool {
        self.first_arrival.is_some()
    }

    /// A sender report for this stream arrived at `now`.
    pub fn on_sender_report(&mut self, info: &SenderInfo, now: Nanos) {
        self.last_sr = Some((rtcp::ntp_middle32(info.ntp), now));
        self.sender_reports += 1;
    }

    /// This stream's reception report at `now`, and the interval it covers
    /// starts anew (A.3). `None` before the stream's SSRC is known.
    pub fn report_block(&mut self, now: Nanos) -> Option<ReportBlock> {
        let ssrc = self.ssrc?;
        let s = &self.sequence;
        let (expected, received) = (s.expected(), s.received() + s.duplicates());
        let expected_interval = expected.saturating_sub(self.reported.0);
        let received_interval = received.saturating_sub(self.reported.1);
        self.reported = (expected, received);
        let lost_interval = expected_interval.saturating_sub(received_interval);
        let fraction_lost = (lost_interval << 8)
            .checked_div(expected_interval)
            .map_or(0, |f| f.min(255) as u8);
        let (lsr, dlsr) = match self.last_sr {
            Some((lsr, at)) => (
                lsr,
                (u128::from(now.saturating_sub(at)) * 65_536 / 1_000_000_000) as u32,
            ),
            None => (0, 0),
        };
        Some(ReportBlock {
            ssrc,
            fraction_lost,
            cumulative_lost: s.rtcp_lost().clamp(i32::MIN.into(), i32::MAX.into()) as i32,
            highest_seq: s.extended_highest(),
            jitter: self.jitter.get(),
            lsr,
            dlsr,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(seqs: &[u16]) -> (Sequence, Vec<Arrival>) {
        let mut s = Sequence::default();
        let kinds = seqs.iter().map(|&q| s.record(q)).collect();
        (s, kinds)
    }

    #[test]
    fn in_order_no_loss() {
        let seqs: Vec<u16> = (100..200).collect();
        let (s, kinds) = run(&seqs);
        assert_eq!(kinds[0], Arrival::First);
        assert!(kinds[1..].iter().all(|k| *k == Arrival::InOrder { gap: 0 }));
        assert_eq!((s.expected(), s.received(), s.lost()), (100, 100, 0));
        assert_eq!((s.duplicates(), s.reordered(), s.rtcp_lost()), (0, 0, 0));
        assert_eq!(s.extended_highest(), 199);
    }

    #[test]
    fn gaps_are_loss_until_filled() {
        let (mut s, kinds) = run(&[10, 11, 14, 15]);
        assert_eq!(kinds[2], Arrival::InOrder { gap: 2 });
        assert_eq!((s.expected(), s.lost()), (6, 2));
        // One of the two arrives late: it was reordered, not lost.
        assert_eq!(s.record(12), Arrival::Reordered);
        assert_eq!((s.lost(), s.reordered()), (1, 1));
        // The same one again is a duplicate, and does not hide the loss.
        assert_eq!(s.record(12), Arrival::Duplicate);
        assert_eq!(s.record(15), Arrival::Duplicate);
        assert_eq!((s.lost(), s.duplicates()), (1, 2));
        // RTCP's definition counts duplicates as received.
        assert_eq!(s.rtcp_lost(), -1);
    }

    #[test]
    fn wraparound_extends_the_sequence() {
        let seqs: Vec<u16> = (65_530..=65_535).chain(0..10).collect();
        let (mut s, _) = run(&seqs);
        assert_eq!((s.expected(), s.lost()), (16, 0));
        assert_eq!(s.extended_highest(), 0x1_0009);
        // A late packet from before the wrap, and a gap across it.
        assert_eq!(s.record(65_535), Arrival::Duplicate);
        let (mut s, _) = run(&[65_533, 65_534, 1, 2]);
        assert_eq!((s.expected(), s.lost()), (6, 2));
        assert_eq!(s.record(65_535), Arrival::Reordered);
        assert_eq!(s.record(0), Arrival::Reordered);
        assert_eq!((s.lost(), s.reordered()), (0, 2));
        // Many cycles.
        let mut s = Sequence::default();
        for i in 0..200_000u32 {
            s.record(i as u16);
        }
        assert_eq!((s.expected(), s.lost()), (200_000, 0));
        assert_eq!(s.extended_highest(), 199_999);
    }

    #[test]
    fn packets_before_the_first_extend_the_run() {
        let (mut s, _) = run(&[105, 106]);
        assert_eq!(s.record(103), Arrival::Reordered);
        assert_eq!((s.expected(), s.received(), s.lost()), (4, 3, 1));
    }

    #[test]
    fn rtp_info_sets_where_the_stream_starts() {
        // Announced before any packet: the first two never came.
        let mut s = Sequence::default();
        s.expect_from(500);
        s.record(502);
        s.record(503);
        assert_eq!((s.expected(), s.lost()), (4, 2));
        // Announced after packets, across a wrap: 65535 and 0 never came.
        let (mut s, _) = run(&[1, 2, 3]);
        s.expect_from(65_535);
        assert_eq!((s.expected(), s.lost()), (5, 2));
        assert_eq!(s.record(0), Arrival::Reordered);
        assert_eq!(s.lost(), 1);
        // Announcing where it did start changes nothing; nonsense is ignored.
        s.expect_from(1);
        s.expect_from(30_000);
        assert_eq!(s.expected(), 5);
    }

    #[test]
    fn a_jump_counts_once_it_is_followed() {
        let (mut s, _) = run(&[1, 2, 3]);
        assert_eq!(s.record(40_000), Arrival::Jump);
        assert_eq!((s.expected(), s.jumped()), (3, 1));
        // Not followed: a stray, and the stream goes on.
        assert_eq!(s.record(4), Arrival::InOrder { gap: 0 });
        assert_eq!((s.expected(), s.lost()), (4, 0));
        // Followed: a restart. Loss counts in both runs, none here.
        assert_eq!(s.record(9_000), Arrival::Jump);
        assert_eq!(s.record(9_001), Arrival::Resync);
        assert_eq!(s.record(9_003), Arrival::InOrder { gap: 1 });
        assert_eq!((s.expected(), s.received(), s.lost()), (4 + 4, 7, 1));
        assert_eq!((s.jumped(), s.resyncs()), (1, 1));
        // Far behind (more than MAX_MISORDER) is a jump too, not a late packet.
        assert_eq!(s.record(8_800), Arrival::Jump);
    }

    /// RFC 3550 A.8 in floating point, as section 6.4.1 states it.
    fn rfc_jitter(packets: &[(u32, u32)]) -> f64 {
        let mut j = 0.0;
        let mut prev: Option<i64> = None;
        for &(arrival, ts) in packets {
            let transit = i64::from(arrival) - i64::from(ts);
            if let Some(p) = prev {
                j += ((transit - p).abs() as f64 - j) / 16.0;
            }
            prev = Some(transit);
        }
        j
    }

    #[test]
    fn jitter_follows_the_rfc() {
        // 90 kHz video: a frame every 3600 units, arriving with made-up
        // delays of up to 2000 units.
        let delays = [0u32, 300, 50, 2000, 10, 0, 900, 900, 100, 1500, 0, 0, 0, 700];
        let packets: Vec<(u32, u32)> = delays
            .iter()
            .enumerate()
            .map(|(i, d)| (i as u32 * 3600 + 5000 + d, i as u32 * 3600))
            .collect();
        let mut j = Jitter::default();
        for &(a, ts) in &packets {
            j.update(a, ts);
        }
        let want = rfc_jitter(&packets);
        assert!(
            (f64::from(j.get()) - want).abs() <= 1.0,
            "integer jitter {} vs the RFC's {want}",
            j.get()
        );
        assert!(want > 100.0, "the test should exercise jitter, got {want}");
        // Steady spacing: no jitter, whatever the offset and wraparound.
        let mut j = Jitter::default();
        for i in 0..100u32 {
            j.update(
                i.wrapping_mul(160).wrapping_add(7),
                (u32::MAX - 1000).wrapping_add(i * 160),
            );
        }
        assert_eq!(j.get(), 0);
    }

    #[test]
    fn lateness_against_the_timestamp_schedule() {
        let mut s = Schedule::default();
        let ms = 1_000_000;
        // 8 kHz: 160 units = 20 ms. First packet at 1 s defines the origin.
        assert_eq!(s.lateness(1_000 * ms, 4_294_900_000, 8_000), 0);
        assert_eq!(s.lateness(1_020 * ms, 4_294_900_160, 8_000), 0);
        assert_eq!(s.lateness(1_045 * ms, 4_294_900_320, 8_000), 5 * ms as i64);
        assert_eq!(s.lateness(1_050 * ms, 4_294_900_480, 8_000), -10 * ms as i64);
        // Across the 32-bit wrap: 400_000 units more is 50 s later.
        let wrapped = 4_294_900_000u32.wrapping_add(400_000);
        assert!(wrapped < 4_294_900_000);
        assert_eq!(s.lateness(51_003 * ms, wrapped, 8_000), 3 * ms as i64);
        // A timestamp that steps back (a B-frame, sent after the newer frame
        // it is shown before) is judged by the clock the stream has reached.
        assert_eq!(s.lateness(51_004 * ms, wrapped - 80, 8_000), 4 * ms as i64);
        assert_eq!(s.lateness(51_010 * ms, wrapped + 160, 8_000), -10 * ms as i64);
    }

    #[test]
    fn at_speed_two_media_is_due_twice_as_fast_and_held_ahead_of_play() {
        let ms = 1_000_000u64;
        let mut s = Schedule::default();
        assert_eq!(s.lateness_at(1_000 * ms, 0, 90_000, 2.0), 0);
        // A second of media half a second on: on time at 2, early at 1.
        assert_eq!(s.lateness_at(1_500 * ms, 90_000, 90_000, 2.0), 0);
        let mut one = Schedule::default();
        one.lateness(1_000 * ms, 0, 90_000);
        assert_eq!(one.lateness(1_500 * ms, 90_000, 90_000), -500 * ms as i64);
        // Played at real time, that second is held until it is due.
        let mut a = Ahead::default();
        a.on_packet(1_000 * ms, 100, 1_000 * ms);
        a.on_packet(2_000 * ms, 1000, 1_500 * ms);
        a.on_packet(2_500 * ms, 1000, 1_600 * ms);
        assert_eq!(a.settle(1_600 * ms), 2000);
        assert_eq!(a.settle(2_000 * ms), 1000);
        assert_eq!(a.settle(3_000 * ms), 0);
    }

    #[test]
    fn b_frames_on_time_are_not_late() {
        // 25 fps at 90 kHz, decoding order I P B B P B B with the P-frames
        // three frames ahead: each frame arrives when the server sends it,
        // one frame time (40 ms) apart.
        let mut s = Schedule::default();
        let ms = 1_000_000;
        let frame = 3_600u32;
        let pts = [0, 3, 1, 2, 6, 4, 5].map(|f: u32| 10_000 + f * frame);
        for (i, &ts) in pts.iter().enumerate() {
            let late = s.lateness(40 * ms * i as u64, ts, 90_000);
            assert!(late <= 0, "frame {i} (pts {ts}) judged {late} ns late");
        }
    }

    fn header(seq: u16, ts: u32) -> rtp::Header {
        rtp::Header {
            marker: false,
            payload_type: 96,
            sequence: seq,
            timestamp: ts,
            ssrc: 0x5555,
        }
    }

    #[test]
    fn stream_measures_and_reports() {
        let ms = 1_000_000u64;
        let mut st = Stream::new(None, 96, 90_000);
        assert_eq!(st.report_block(0), None, "no SSRC yet, nothing to report on");
        // Packets every 40 ms (3600 units), the 3rd 10 ms late, the 5th lost.
        let plan = [(0, 0u64), (1, 40), (2, 90), (3, 120), (5, 200), (6, 240)];
        let mut lateness = Vec::new();
        for &(i, at) in &plan {
            let m = st
                .on_packet(&header(1000 + i, 7 + 3600 * u32::from(i)), 112, at * ms)
                .unwrap();
            lateness.push(m.lateness_ns / ms as i64);
        }
        assert_eq!(lateness, [0, 0, 10, 0, 0, 0]);
        assert_eq!(
            st.on_packet(&header(1006, 7 + 3600 * 6), 112, 250 * ms),
            None,
            "a duplicate"
        );
        assert_eq!((st.packets, st.bytes, st.ssrc), (7, 7 * 112, Some(0x5555)));
        assert_eq!((st.sequence.lost(), st.sequence.duplicates()), (1, 1));
        assert!(st.jitter() > 0);
        assert_eq!(st.jitter_us(), u64::from(st.jitter()) * 1_000_000 / 90_000);

        st.on_sender_report(
            &SenderInfo {
                ntp: 0x1122_3344_5566_7788,
                rtp_ts: 0,
                packets: 7,
                octets: 700,
            },
            250 * ms,
        );
        let b = st.report_block(500 * ms).unwrap();
        assert_eq!(b.ssrc, 0x5555);
        assert_eq!(b.highest_seq, 1006);
        // 7 expected, 7 received counting the duplicate (RFC 3550's way).
        assert_eq!((b.cumulative_lost, b.fraction_lost), (0, 0));
        assert_eq!(b.jitter, st.jitter());
        assert_eq!(b.lsr, 0x3344_5566);
        assert_eq!(b.dlsr, 65_536 / 4, "250 ms in 1/65536 s");
        // The next interval: two more expected, one received.
        st.on_packet(&header(1008, 7 + 3600 * 8), 112, 320 * ms);
        let b = st.report_block(600 * ms).unwrap();
        assert_eq!(b.fraction_lost, 128, "half of the interval lost");
        assert_eq!(b.cumulative_lost, 1);
    }
}
