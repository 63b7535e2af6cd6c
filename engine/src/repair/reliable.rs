//! Darwin Streaming Server's reliable UDP, the sending side: what is in
//! flight, what a client's `qtak` acks take out, what goes again when its
//! retransmission timeout passes, and how much may be in flight at all.
//!
//! This follows DSS's `RTPPacketResender` (per stream) and
//! `RTPBandwidthTracker` (per session), constants and quirks included,
//! so that QuickTime-era clients see the server they were tuned for:
//!
//! - **RTO** by Jacobson and Karels in DSS's fixed point (mean scaled by
//!   8, deviation by 4; RTO = mean + 4 x deviation), clamped to 600 ms ..
//!   24 s. **Karn's rule**: an ack of a packet that was sent more than once
//!   gives no sample. DSS's one addition, kept: at a packet's first resend
//!   the estimator gets 1.5 x the RTO the packet was first sent under, so
//!   the RTO can grow when the path slows instead of only shrinking.
//! - **Window**: the client's window is chosen from the movie's bit rate
//!   (24 KiB up to 200 kbit/s, 48 KiB up to 1000 kbit/s, 64 KiB above or
//!   when unknown, the kbit being 1024 bits). **Slow start**, DSS's
//!   variant: the congestion window starts at half the client window (not
//!   one segment: "on high bitrate high latency networks it took just too
//!   long") with the threshold at three quarters; below the threshold each
//!   acked byte opens it by a byte, above by acked^2 / window. Each resend
//!   (at most once per 250 ms) sets the threshold to 3/4 of the window and
//!   halves the window, never below one 1466-byte segment.
//! - A packet is kept in flight until acked or until it is too late to be
//!   of use: DSS gave each packet the stream's "drop all packets" delay
//!   (2.5 s, 1.75 s for video) less how late it was already sent.
//!
//! - **Early resends** (not DSS's): a packet still unacked when one sent
//!   after it has been acked is taken as lost once a quarter of a round
//!   trip more has passed (the time rule of RACK, RFC 8985 section 6.2),
//!   and goes again without waiting for the RTO. Once: if that copy is
//!   lost too it waits for the RTO, so a client that never acks one packet
//!   draws a resend per RTO, backing off, as DSS allowed, not one per
//!   round trip. DSS waited for the RTO alone: on a path that loses a few
//!   per cent, the lost bytes held the window shut for 600 ms at a time,
//!   each resend halved it and grew the RTO, and the stream fell seconds
//!   behind until its packets were sent too late to be kept. An early
//!   resend halves the window (at most once per 250 ms, as any resend) but
//!   gives the estimator no sample (nor DSS's 1.5 x RTO one at a later
//!   resend): the path did not slow.
//!
//! Where this differs from DSS it says so at the place; in short: early
//! resends, a packet pushed out of a full window is taken out of the bytes
//! in flight (DSS left it counted), acks are matched on the stream's SSRC
//! by the caller (DSS went by the RTCP port), and one ack is read only as
//! far as the window reaches.
//!
//! Nothing here copies or keeps payload: the packets themselves are in the
//! stream's [`History`](super::history::History); this keeps their numbers,
//! sizes and times, 16 bytes each, in a ring made once.

use std::time::Duration;

use proto::qtss::Ack;

use crate::source::Nanos;

/// DSS's guess at an Ethernet segment (`kMaximumSegmentSize`).
pub const MSS: u32 = 1466;
/// RTO bounds (`kMinRetransmitIntervalMSecs`, `kMaxRetransmitIntervalMSecs`).
pub const MIN_RTO_MS: u32 = 600;
pub const MAX_RTO_MS: u32 = 24_000;
/// The acknowledgement timeout a client is told, in ms (`kMinAckTimeout`,
/// `kMaxAckTimeout`).
pub const MIN_ACK_TIMEOUT_MS: u32 = 20;
pub const MAX_ACK_TIMEOUT_MS: u32 = 100;
/// The window is cut at most this often, however many packets go again.
const CONGESTION_ADJUST_MS: u64 = 250;
/// How long a packet stays of use after its due time, by DSS's
/// `drop_all_packets_delay` and `drop_all_video_delay` preferences.
pub const DROP_ALL_MS: i64 = 2500;
pub const DROP_ALL_VIDEO_MS: i64 = 1750;

/// How long a packet of a video stream (`video`) or another stays of use
/// after its due time.
pub fn drop_all_ms(video: bool) -> i64 {
    if video {
        DROP_ALL_VIDEO_MS
    } else {
        DROP_ALL_MS
    }
}
/// DSS woke a reliable session at least this often to resend
/// (`max_retransmit_delay`), whatever else it had to do.
pub const MAX_RETRANSMIT_DELAY: Duration = Duration::from_millis(500);

/// The client windows DSS chose from the movie's bit rate, and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSizes {
    pub small: u32,
    pub medium: u32,
    pub large: u32,
    /// In kbit/s of 1024 bits: up to `threshold` small, up to
    /// `max_threshold` medium, above that large.
    pub threshold_kbit: u32,
    pub max_threshold_kbit: u32,
}

impl Default for WindowSizes {
    /// DSS 6's `small_window_size` 24, `medium_window_size` 48,
    /// `large_window_size` 64 (KiB), `window_size_threshold` 200 and
    /// `window_size_max_threshold` 1000.
    fn default() -> WindowSizes {
        WindowSizes {
            small: 24 * 1024,
            medium: 48 * 1024,
            large: 64 * 1024,
            threshold_kbit: 200,
            max_threshold_kbit: 1000,
        }
    }
}

impl WindowSizes {
    /// The client window for a movie of `bit_rate` bits per second (0 when
    /// unknown), as DSS's `RTPSession::Play` chose it.
    pub fn for_bit_rate(&self, bit_rate: u32) -> u32 {
        if bit_rate == 0 || bit_rate > self.max_threshold_kbit.saturating_mul(1024) {
            self.large
        } else if bit_rate > self.threshold_kbit.saturating_mul(1024) {
            self.medium
        } else {
            self.small
        }
    }
}

fn ms(now: Nanos) -> u64 {
    now / 1_000_000
}

/// A session's round-trip estimate and congestion window, shared by its
/// streams (DSS's `RTPBandwidthTracker`).
#[derive(Debug, Clone)]
pub struct Congestion {
    /// Smoothed RTT in ms, times 8; 0 before the first sample.
    avg_x8: i64,
    /// Mean deviation in ms, times 4.
    dev_x4: i64,
    rto_ms: u32,
    unadjusted_rto_ms: u32,
    cwnd: i64,
    ssthresh: i64,
    /// 0 until [`set_window`](Self::set_window).
    client_window: i64,
    in_flight: u64,
    slow_start: bool,
    last_adjust_ms: Option<u64>,
    ack_timeout_ms: u32,
}

impl Congestion {
    /// A tracker with DSS's start values; `slow_start` is DSS's
    /// `reliable_udp_slow_start` preference (on by default).
    pub fn new(slow_start: bool) -> Congestion {
        Congestion {
            avg_x8: 0,
            dev_x4: 0,
            rto_ms: MIN_RTO_MS,
            unadjusted_rto_ms: MIN_RTO_MS,
            cwnd: i64::from(MSS),
            ssthresh: 0,
            client_window: 0,
            in_flight: 0,
            slow_start,
            last_adjust_ms: None,
            ack_timeout_ms: MIN_ACK_TIMEOUT_MS,
        }
    }

    /// Takes over `old`'s round-trip estimate (a new PLAY of the same
    /// session: the path is the same).
    pub fn inherit_rtt(&mut self, old: &Congestion) {
        self.avg_x8 = old.avg_x8;
        self.dev_x4 = old.dev_x4;
        self.rto_ms = old.rto_ms;
        self.unadjusted_rto_ms = old.unadjusted_rto_ms;
    }

    /// Sets the client's window, once (later calls are ignored, as in DSS):
    /// before the first packet of a play.
    pub fn set_window(&mut self, client_window: u32) {
        if self.client_window > 0 {
            return;
        }
        let w = i64::from(client_window.max(1));
        self.client_window = w;
        self.last_adjust_ms = None;
        if self.slow_start {
            self.ssthresh = w * 3 / 4;
            self.cwnd = w / 2;
        } else {
            self.ssthresh = w;
            self.cwnd = w;
        }
        self.ssthresh = self.ssthresh.max(i64::from(MSS));
        self.cwnd = self.cwnd.max(1);
    }

    /// Whether acks mean anything yet: a window is set.
    pub fn ready(&self) -> bool {
        self.client_window > 0 && self.cwnd > 0
    }

    /// No new packet may go while this holds.
    pub fn is_flow_controlled(&self) -> bool {
        self.in_flight as i64 >= self.cwnd
    }

    pub fn congestion_window(&self) -> u32 {
        self.cwnd.clamp(0, i64::from(u32::MAX)) as u32
    }

    pub fn slow_start_threshold(&self) -> u32 {
        self.ssthresh.clamp(0, i64::from(u32::MAX)) as u32
    }

    pub fn client_window(&self) -> u32 {
        self.client_window.clamp(0, i64::from(u32::MAX)) as u32
    }

    pub fn bytes_in_flight(&self) -> u64 {
        self.in_flight
    }

    pub fn rto(&self) -> Duration {
        Duration::from_millis(self.rto_ms.into())
    }

    /// The smoothed round trip, once there is a sample.
    pub fn srtt(&self) -> Option<Duration> {
        (self.avg_x8 != 0).then(|| Duration::from_millis((self.avg_x8 / 8).max(0) as u64))
    }

    /// The acknowledgement timeout to tell the client (`qtsi` `at`).
    pub fn ack_timeout_ms(&self) -> u32 {
        self.ack_timeout_ms
    }

    /// Bits per second the window allows at the current RTO, as DSS
    /// reported it.
    pub fn bandwidth(&self) -> u64 {
        (self.cwnd.max(0) as u64 * 1000) / u64::from(self.unadjusted_rto_ms.max(1))
    }

    /// One round-trip sample (`AddToRTTEstimate`).
    pub fn add_rtt_sample(&mut self, sample_ms: u32) {
        let sample = i64::from(sample_ms);
        if self.avg_x8 == 0 {
            self.avg_x8 = sample * 8;
        }
        let delta = sample - self.avg_x8 / 8;
        self.avg_x8 += delta;
        self.dev_x4 += delta.abs() - self.dev_x4 / 4;
        let rto = (self.avg_x8 / 8 + self.dev_x4).clamp(0, i64::from(u32::MAX)) as u32;
        self.unadjusted_rto_ms = rto;
        self.rto_ms = rto.clamp(MIN_RTO_MS, MAX_RTO_MS);
    }

    fn fill(&mut self, bytes: u32) {
        self.in_flight += u64::from(bytes);
    }

    /// `bytes` were acked: the window opens (`EmptyWindow`). With
    /// `in_flight` false the bytes in flight stay as they are: DSS's answer
    /// to an ack for a packet it no longer had, "who knows what it really
    /// was", opens the window by one segment all the same.
    fn empty(&mut self, bytes: u32, in_flight: bool) {
        let bytes = u64::from(bytes).min(self.in_flight);
        if in_flight {
            self.in_flight -= bytes;
        }
        // Without a window (a caller that sent before setting one) the
        // bytes still leave, but there is no window to open.
        if bytes == 0 || !self.ready() {
            return;
        }
        let b = bytes as i64;
        if self.cwnd >= self.ssthresh {
            self.cwnd += b * b / self.cwnd.max(1);
        } else {
            self.cwnd += b;
        }
        self.cwnd = self.cwnd.min(self.client_window);
    }

    /// A packet goes again (`AdjustWindowForRetransmit`).
    fn adjust_for_retransmit(&mut self, now_ms: u64) {
        self.ssthresh = self.ssthresh.max(i64::from(MSS));
        if self
            .last_adjust_ms
            .is_none_or(|t| now_ms.saturating_sub(t) > CONGESTION_ADJUST_MS)
        {
            self.ssthresh = self.cwnd * 3 / 4;
            self.cwnd /= 2;
            self.last_adjust_ms = Some(now_ms);
        }
        self.cwnd = self.cwnd.max(i64::from(MSS));
    }

    /// The acknowledgement timeout for the client, from the bits sent over
    /// the last `interval_ms` (DSS's `UpdateAckTimeout`, called whenever it
    /// updated the session's bit rate). The arithmetic is DSS's, which
    /// divides a window in bytes by a rate in bits: the result is an eighth
    /// of "the time to send one window", then clamped to 20..100 ms.
    pub fn update_ack_timeout(&mut self, bits_in_interval: u32, interval_ms: u64) {
        let unadjusted = if bits_in_interval > 0 {
            ((interval_ms as i64 * self.cwnd.max(0)) / i64::from(bits_in_interval)).clamp(0, i64::from(u32::MAX)) as u32
        } else {
            0
        };
        let rto = self.unadjusted_rto_ms.max(self.ack_timeout_ms);
        let adjustment = ((rto - self.ack_timeout_ms) / 2).min(unadjusted);
        self.ack_timeout_ms = (unadjusted - adjustment).clamp(MIN_ACK_TIMEOUT_MS, MAX_ACK_TIMEOUT_MS);
    }
}

/// What a stream's resender did, since it was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReliableStats {
    pub sent: u64,
    pub acked: u64,
    pub resends: u64,
    /// Of `resends`, those that went early, on an ack of a later packet.
    pub early_resends: u64,
    /// Left unacked past their use (or too late to keep when sent).
    pub expired: u64,
    /// Acks for packets not in flight: acked already, expired, never sent.
    pub acks_for_missing: u64,
    /// Pushed out of a full ring unacked.
    pub evicted: u64,
    /// Acked numbers past what one ack may name: not looked at.
    pub acks_ignored: u64,
}

/// One packet in flight, 16 bytes.
#[derive(Debug, Clone, Copy, Default)]
struct InFlight {
    /// Milliseconds since the resender's epoch of the last send.
    sent_ms: u32,
    expire_ms: u32,
    /// The RTO when it was first sent.
    orig_rto_ms: u16,
    len: u16,
    seq: u16,
    resends: u8,
    live: bool,
}

/// The packet most recently sent of those acked, for early resends: what
/// was sent before it and is still unacked a little past its round trip is
/// lost (RACK's `RACK.xmit_ts` and `RACK.rtt`).
#[derive(Debug, Clone, Copy)]
struct Rack {
    sent_ms: u32,
    seq: u16,
    rtt_ms: u32,
}

impl Rack {
    /// Whether a packet sent at `sent_ms` numbered `seq` went before this
    /// one (numbers break ties within a millisecond).
    fn is_after(&self, sent_ms: u32, seq: u16) -> bool {
        sent_ms < self.sent_ms || (sent_ms == self.sent_ms && (self.seq.wrapping_sub(seq) as i16) > 0)
    }

    /// When a packet sent at `sent_ms`, before this one, counts as lost:
    /// a round trip and a quarter (the reordering window) after it went.
    fn lost_at(&self, sent_ms: u32) -> u32 {
        sent_ms
            .saturating_add(self.rtt_ms)
            .saturating_add((self.rtt_ms / 4).max(1))
    }
}

/// A stream's packets in flight (DSS's `RTPPacketResender`).
#[derive(Debug, Clone)]
pub struct Resender {
    ring: Box<[InFlight]>,
    head: usize,
    len: usize,
    epoch: Option<Nanos>,
    rack: Option<Rack>,
    stats: ReliableStats,
}

impl Resender {
    /// Room for `capacity` packets in flight: a window's worth of the
    /// stream's smallest packets. DSS started at 64 and grew its array; a
    /// ring that is full pushes out its oldest, as DSS reused its slots.
    pub fn new(capacity: usize) -> Resender {
        Resender {
            ring: vec![InFlight::default(); capacity.max(1)].into_boxed_slice(),
            head: 0,
            len: 0,
            epoch: None,
            rack: None,
            stats: ReliableStats::default(),
        }
    }

    pub fn stats(&self) -> ReliableStats {
        self.stats
    }

    /// Packets in flight now.
    pub fn in_flight(&self) -> usize {
        (0..self.len).filter(|&i| self.ring[self.slot(i)].live).count()
    }

    fn slot(&self, i: usize) -> usize {
        (self.head + i) % self.ring.len()
    }

    fn rel_ms(&mut self, now: Nanos) -> u32 {
        let epoch = *self.epoch.get_or_insert(now);
        ms(now.saturating_sub(epoch)).min(u64::from(u32::MAX)) as u32
    }

    fn abs_ms(&self, rel: u32) -> Nanos {
        self.epoch.unwrap_or(0) + u64::from(rel) * 1_000_000
    }

    fn pop_dead(&mut self) {
        while self.len > 0 && !self.ring[self.head].live {
            self.head = (self.head + 1) % self.ring.len();
            self.len -= 1;
        }
    }

    /// When the early rule takes `e` as lost: a packet never sent again
    /// that went before the newest acked one.
    fn lost_at(&self, e: &InFlight) -> Option<u32> {
        self.rack
            .filter(|r| e.resends == 0 && r.is_after(e.sent_ms, e.seq))
            .map(|r| r.lost_at(e.sent_ms))
    }

    /// Where `seq` sits, if it is in flight.
    fn find(&self, seq: u16) -> Option<usize> {
        let first = self.ring[self.head].seq;
        let d = usize::from(seq.wrapping_sub(first));
        (self.len > 0 && d < self.len)
            .then(|| self.slot(d))
            .filter(|&i| self.ring[i].live && self.ring[i].seq == seq)
    }

    /// Takes every packet out of flight (a new PLAY: DSS's
    /// `ClearOutstandingPackets`).
    pub fn clear(&mut self, cc: &mut Congestion) {
        for i in 0..self.len {
            let at = self.slot(i);
            let e = self.ring[at];
            if e.live {
                cc.in_flight = cc.in_flight.saturating_sub(u64::from(e.len));
            }
            self.ring[at].live = false;
        }
        self.len = 0;
        self.head = 0;
        self.rack = None;
    }

    /// Records packet `seq` of `len` bytes as sent at `now`, `late_ms` after
    /// it was due (DSS's `AddPacket`, the age limit being `drop_all_ms`
    /// less the lateness). The caller checks
    /// [`Congestion::is_flow_controlled`] first; DSS sent nothing while it
    /// held. A packet already too late to be of use is sent, not kept.
    pub fn on_send(&mut self, cc: &mut Congestion, seq: u16, len: usize, late_ms: i64, drop_all_ms: i64, now: Nanos) {
        self.stats.sent += 1;
        let age_limit = drop_all_ms - late_ms;
        if age_limit <= 0 {
            self.stats.expired += 1;
            return;
        }
        let now_ms = self.rel_ms(now);
        self.pop_dead();
        // Numbers are consecutive; a number already in flight (a repeat
        // packet of the hint track) is not added twice, as in DSS.
        if self.find(seq).is_some() {
            return;
        }
        if self.len > 0 {
            let next = self.ring[self.slot(self.len - 1)].seq.wrapping_add(1);
            let gap = usize::from(seq.wrapping_sub(next));
            if gap >= self.ring.len() || gap >= 1 << 15 {
                // Out of order or far ahead: what is in flight cannot be
                // numbered against this one any more.
                self.clear(cc);
            } else {
                for k in 0..gap {
                    self.push(
                        cc,
                        InFlight {
                            seq: next.wrapping_add(k as u16),
                            ..InFlight::default()
                        },
                    );
                }
            }
        }
        let len = len.min(usize::from(u16::MAX)) as u16;
        self.push(
            cc,
            InFlight {
                sent_ms: now_ms,
                expire_ms: now_ms.saturating_add(age_limit.min(i64::from(u32::MAX)) as u32),
                orig_rto_ms: cc.rto_ms.min(u32::from(u16::MAX)) as u16,
                len,
                seq,
                resends: 0,
                live: true,
            },
        );
        cc.fill(u32::from(len));
    }

    fn push(&mut self, cc: &mut Congestion, e: InFlight) {
        if self.len == self.ring.len() {
            let old = self.ring[self.head];
            if old.live {
                // DSS reused the slot and opened the window without taking
                // the bytes out of flight, which then never left; here
                // they leave.
                self.stats.evicted += 1;
                cc.in_flight = cc.in_flight.saturating_sub(u64::from(old.len));
            }
            self.head = (self.head + 1) % self.ring.len();
            self.len -= 1;
        }
        let at = self.slot(self.len);
        self.ring[at] = e;
        self.len += 1;
    }

    /// One acked number (DSS's `AckPacket`).
    pub fn on_ack(&mut self, cc: &mut Congestion, seq: u16, now: Nanos) {
        if !cc.ready() {
            return;
        }
        let now_ms = self.rel_ms(now);
        match self.find(seq) {
            Some(i) => {
                let e = self.ring[i];
                cc.empty(u32::from(e.len), true);
                // Karn's rule: only a packet sent once times the round trip
                // (and says which packets went before what arrived).
                if e.resends == 0 {
                    let rtt_ms = now_ms.wrapping_sub(e.sent_ms);
                    cc.add_rtt_sample(rtt_ms);
                    if self.rack.is_none_or(|r| !r.is_after(e.sent_ms, e.seq)) {
                        self.rack = Some(Rack {
                            sent_ms: e.sent_ms,
                            seq: e.seq,
                            rtt_ms,
                        });
                    }
                }
                self.ring[i].live = false;
                self.stats.acked += 1;
                self.pop_dead();
            }
            None => {
                self.stats.acks_for_missing += 1;
                cc.empty(MSS, false);
            }
        }
    }

    /// A `qtak` for this stream (the caller has matched its media SSRC).
    /// At most a ring's worth of numbers plus a few is read: an honest ack
    /// cannot name more packets than are in flight.
    pub fn on_ack_packet(&mut self, cc: &mut Congestion, ack: &Ack<'_>, now: Nanos) {
        let limit = self.ring.len() + 32;
        let mut acked = ack.acked();
        for seq in acked.by_ref().take(limit) {
            self.on_ack(cc, seq, now);
        }
        self.stats.acks_ignored += acked.count() as u64;
    }

    /// Lets go of expired packets and appends to `out` those to send again
    /// now, past their RTO or lost by the early rule, oldest first (DSS's
    /// `ResendDueEntries`, which went newest first only because of how it
    /// compacted its array). The caller sends each from the stream's
    /// history, as it was first sent.
    pub fn poll(&mut self, cc: &mut Congestion, now: Nanos, out: &mut Vec<u16>) {
        if self.len == 0 {
            return;
        }
        let now_ms = self.rel_ms(now);
        for i in 0..self.len {
            let at = self.slot(i);
            let e = self.ring[at];
            if !e.live {
                continue;
            }
            if now_ms > e.expire_ms {
                self.stats.expired += 1;
                // DSS opens the window for an expired packet as for an ack.
                cc.empty(u32::from(e.len), true);
                self.ring[at].live = false;
                continue;
            }
            let timed_out = now_ms.wrapping_sub(e.sent_ms) > cc.rto_ms;
            let early = !timed_out && self.lost_at(&e).is_some_and(|t| now_ms >= t);
            if timed_out || early {
                out.push(e.seq);
                self.stats.resends += 1;
                self.stats.early_resends += u64::from(early);
                let r = &mut self.ring[at];
                r.resends = r.resends.saturating_add(1);
                r.sent_ms = now_ms;
                if r.resends == 1 && timed_out {
                    cc.add_rtt_sample(u32::from(e.orig_rto_ms) * 3 / 2);
                }
                cc.adjust_for_retransmit(u64::from(now_ms));
            }
        }
        self.pop_dead();
    }

    /// When [`poll`](Self::poll) next has something to do: the earliest
    /// resend (on the RTO or early) or expiry, if anything is in flight.
    pub fn next_deadline(&self, cc: &Congestion) -> Option<Nanos> {
        (0..self.len)
            .map(|i| self.ring[self.slot(i)])
            .filter(|e| e.live)
            .map(|e| {
                let mut resend = e.sent_ms.saturating_add(cc.rto_ms).saturating_add(1);
                if let Some(t) = self.lost_at(&e) {
                    resend = resend.min(t);
                }
                self.abs_ms(resend.min(e.expire_ms.saturating_add(1)))
            })
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::qtss;
    use proto::rtcp;

    const MS: Nanos = 1_000_000;

    fn ready(window: u32) -> Congestion {
        let mut cc = Congestion::new(true);
        cc.set_window(window);
        cc
    }

    #[test]
    fn windows_from_the_bit_rate_as_dss_chose_them() {
        let w = WindowSizes::default();
        assert_eq!(w.for_bit_rate(0), 64 * 1024);
        assert_eq!(w.for_bit_rate(100_000), 24 * 1024);
        assert_eq!(w.for_bit_rate(200 * 1024), 24 * 1024);
        assert_eq!(w.for_bit_rate(200 * 1024 + 1), 48 * 1024);
        assert_eq!(w.for_bit_rate(1000 * 1024), 48 * 1024);
        assert_eq!(w.for_bit_rate(1000 * 1024 + 1), 64 * 1024);
    }

    #[test]
    fn slow_start_begins_at_half_the_window() {
        let cc = ready(48 * 1024);
        assert_eq!(cc.congestion_window(), 24 * 1024);
        assert_eq!(cc.slow_start_threshold(), 36 * 1024);
        let mut cc = Congestion::new(false);
        cc.set_window(48 * 1024);
        assert_eq!(
            (cc.congestion_window(), cc.slow_start_threshold()),
            (48 * 1024, 48 * 1024)
        );
        // Only the first window counts.
        cc.set_window(1);
        assert_eq!(cc.client_window(), 48 * 1024);
        // A tiny window keeps the threshold at one segment.
        let cc = ready(1000);
        assert_eq!(cc.slow_start_threshold(), MSS);
    }

    #[test]
    fn rto_by_jacobson_karels_in_dss_fixed_point() {
        let mut cc = Congestion::new(true);
        assert_eq!(cc.rto(), Duration::from_millis(600));
        // First sample 100 ms: mean 100, deviation 0: RTO 100, clamped.
        cc.add_rtt_sample(100);
        assert_eq!(
            (cc.srtt(), cc.rto()),
            (Some(Duration::from_millis(100)), Duration::from_millis(600))
        );
        assert_eq!(cc.unadjusted_rto_ms, 100);
        // 300 ms: delta 200, mean 100 + 200/8 = 125, deviation 200: RTO 325.
        cc.add_rtt_sample(300);
        assert_eq!((cc.avg_x8 / 8, cc.dev_x4, cc.unadjusted_rto_ms), (125, 200, 325));
        // A long stall: the RTO follows, up to 24 s.
        for _ in 0..50 {
            cc.add_rtt_sample(60_000);
        }
        assert_eq!(cc.rto(), Duration::from_secs(24));
    }

    #[test]
    fn acks_open_the_window_and_time_the_round_trip() {
        let mut cc = ready(24 * 1024);
        let mut r = Resender::new(64);
        for seq in 0..4u16 {
            r.on_send(&mut cc, seq, 1000, 0, DROP_ALL_MS, 0);
        }
        assert_eq!(cc.bytes_in_flight(), 4000);
        let cwnd = cc.congestion_window();
        r.on_ack(&mut cc, 1, 80 * MS);
        assert_eq!(cc.bytes_in_flight(), 3000);
        // Below the threshold: a byte per byte acked.
        assert_eq!(cc.congestion_window(), cwnd + 1000);
        assert_eq!(cc.srtt(), Some(Duration::from_millis(80)));
        assert_eq!(r.in_flight(), 3);
        // Acking it again, or a number never sent: counted, and the window
        // opens by a segment with nothing taken out of flight.
        r.on_ack(&mut cc, 1, 90 * MS);
        r.on_ack(&mut cc, 999, 90 * MS);
        assert_eq!(r.stats().acks_for_missing, 2);
        assert_eq!(cc.bytes_in_flight(), 3000);
        assert_eq!(cc.congestion_window(), cwnd + 1000 + 2 * MSS);
    }

    #[test]
    fn above_the_threshold_the_window_grows_by_a_segment_per_window() {
        let mut cc = Congestion::new(false);
        cc.set_window(64 * 1024);
        cc.cwnd = 32 * 1024;
        cc.ssthresh = 16 * 1024;
        cc.in_flight = 10_000;
        cc.empty(1000, true);
        assert_eq!(cc.congestion_window(), 32 * 1024 + 1000 * 1000 / (32 * 1024));
        // Never past the client's window.
        cc.cwnd = 64 * 1024 - 10;
        cc.empty(1000, true);
        assert_eq!(cc.congestion_window(), 64 * 1024);
    }

    #[test]
    fn karns_rule_no_sample_from_a_resent_packet() {
        let mut cc = ready(64 * 1024);
        let mut r = Resender::new(64);
        r.on_send(&mut cc, 10, 500, 0, DROP_ALL_MS, 0);
        // Past the 600 ms RTO: it goes again.
        let mut out = Vec::new();
        r.poll(&mut cc, 601 * MS, &mut out);
        assert_eq!(out, [10]);
        // DSS's sample at the first resend: 1.5 x the RTO it was sent under.
        assert_eq!(cc.srtt(), Some(Duration::from_millis(900)));
        // Its ack, however late or early, gives no sample.
        r.on_ack(&mut cc, 10, 620 * MS);
        assert_eq!(cc.srtt(), Some(Duration::from_millis(900)));
        assert_eq!((r.stats().acked, r.stats().resends), (1, 1));
        // A packet sent once does give one.
        r.on_send(&mut cc, 11, 500, 0, DROP_ALL_MS, 1000 * MS);
        r.on_ack(&mut cc, 11, 1100 * MS);
        assert_eq!(cc.avg_x8 / 8, 900 + (100 - 900) / 8);
    }

    #[test]
    fn resends_back_off_the_window_at_most_every_quarter_second() {
        let mut cc = ready(64 * 1024);
        let mut r = Resender::new(64);
        // Kept long enough that none expires: an expiry opens the window
        // as an ack would, in DSS and here.
        for seq in 0..20u16 {
            r.on_send(&mut cc, seq, 1000, 0, 1_000_000, 0);
        }
        let before = cc.congestion_window();
        let mut out = Vec::new();
        // Past the 600 ms RTO the oldest goes again, and its 900 ms sample
        // moves the RTO to 900 ms before the others are looked at: as in
        // DSS, one resend in this pass.
        r.poll(&mut cc, 700 * MS, &mut out);
        assert_eq!(out, [0]);
        assert_eq!(cc.rto(), Duration::from_millis(900));
        assert_eq!(cc.congestion_window(), before / 2);
        assert_eq!(cc.slow_start_threshold(), before * 3 / 4);
        // Past 900 ms the other nineteen go, oldest first; within 250 ms of
        // the last cut the window is not cut again.
        out.clear();
        r.poll(&mut cc, 901 * MS, &mut out);
        assert_eq!(out, (1..20).collect::<Vec<u16>>());
        assert_eq!(cc.congestion_window(), before / 2);
        // Nothing more is due until the first resend is an RTO old.
        out.clear();
        r.poll(&mut cc, 1200 * MS, &mut out);
        assert!(out.is_empty());
        assert_eq!(r.next_deadline(&cc), Some(1601 * MS));
        r.poll(&mut cc, 1601 * MS, &mut out);
        assert_eq!(out, [0]);
        assert_eq!(cc.congestion_window(), before / 4);
        // Down to one segment and no further.
        for t in 0..20u64 {
            r.poll(&mut cc, (3000 + t * 1500) * MS, &mut Vec::new());
        }
        assert_eq!(cc.congestion_window(), MSS);
        assert_eq!(r.stats().resends, 1 + 19 + 1 + 20 * 20);
    }

    #[test]
    fn a_packet_unacked_behind_acked_ones_goes_again_before_its_rto() {
        let mut cc = ready(24 * 1024);
        let mut r = Resender::new(64);
        for seq in 0..3u16 {
            r.on_send(&mut cc, seq, 1000, 0, DROP_ALL_MS, u64::from(seq) * MS);
        }
        // 1 and 2 arrive 40 ms after they went; 0 was lost.
        r.on_ack(&mut cc, 1, 41 * MS);
        r.on_ack(&mut cc, 2, 42 * MS);
        // Lost a round trip and a quarter after it went: 0 + 40 + 10.
        assert_eq!(r.next_deadline(&cc), Some(50 * MS));
        let mut out = Vec::new();
        r.poll(&mut cc, 49 * MS, &mut out);
        assert!(out.is_empty());
        let cwnd = cc.congestion_window();
        r.poll(&mut cc, 50 * MS, &mut out);
        assert_eq!(out, [0]);
        assert_eq!((r.stats().resends, r.stats().early_resends), (1, 1));
        // The window is halved, as for any resend, but the estimator gets
        // no sample: the round trip is the acks' 40 ms.
        assert_eq!(cc.congestion_window(), cwnd / 2);
        assert_eq!(cc.srtt(), Some(Duration::from_millis(40)));
        // Sent again at 50, nothing acked went after it: only its RTO.
        assert_eq!(r.next_deadline(&cc), Some((50 + 600 + 1) * MS));
        // A packet acked out of order (reordered, not lost) before its
        // time is up goes nowhere: 3 goes at 60 and 4 at 61; 4's ack comes
        // at 101 and 3's at 105, before 3 would count as lost (110).
        r.on_send(&mut cc, 3, 1000, 0, DROP_ALL_MS, 60 * MS);
        r.on_send(&mut cc, 4, 1000, 0, DROP_ALL_MS, 61 * MS);
        r.on_ack(&mut cc, 4, 101 * MS);
        r.on_ack(&mut cc, 3, 105 * MS);
        out.clear();
        r.poll(&mut cc, 120 * MS, &mut out);
        assert!(out.is_empty());
        assert_eq!(r.stats().early_resends, 1);
    }

    #[test]
    fn packets_expire_when_too_late_to_be_of_use() {
        let mut cc = ready(64 * 1024);
        let mut r = Resender::new(64);
        // Already 2 s late, with 1.75 s to live: sent, not kept.
        r.on_send(&mut cc, 1, 100, 2000, DROP_ALL_VIDEO_MS, 0);
        assert_eq!((r.in_flight(), r.stats().expired), (0, 1));
        // 1 s late: kept for 1.5 s more.
        r.on_send(&mut cc, 2, 100, 1000, DROP_ALL_MS, 0);
        assert_eq!(r.next_deadline(&cc), Some(601 * MS));
        let mut out = Vec::new();
        r.poll(&mut cc, 601 * MS, &mut out);
        assert_eq!(out, [2]);
        out.clear();
        r.poll(&mut cc, 1501 * MS, &mut out);
        assert!(out.is_empty());
        assert_eq!((r.in_flight(), r.stats().expired), (0, 2));
        assert_eq!(cc.bytes_in_flight(), 0);
        assert_eq!(r.next_deadline(&cc), None);
    }

    #[test]
    fn the_window_holds_new_packets_back() {
        let mut cc = ready(4000);
        let mut r = Resender::new(64);
        let mut sent = 0u16;
        while !cc.is_flow_controlled() {
            r.on_send(&mut cc, sent, 1000, 0, DROP_ALL_MS, 0);
            sent += 1;
        }
        // Half the 4000-byte window to start with.
        assert_eq!(sent, 2);
        r.on_ack(&mut cc, 0, 50 * MS);
        assert!(!cc.is_flow_controlled());
    }

    #[test]
    fn a_qtak_acks_its_base_and_mask() {
        let mut cc = ready(64 * 1024);
        let mut r = Resender::new(64);
        for seq in 65_530u16..=65_535 {
            r.on_send(&mut cc, seq, 100, 0, DROP_ALL_MS, 0);
        }
        for seq in 0u16..4 {
            r.on_send(&mut cc, seq, 100, 0, DROP_ALL_MS, 0);
        }
        // The client got all but 65_533 and 2.
        let mut m = qtss::AckMask::new(65_530);
        for s in [65_531u16, 65_532, 65_534, 65_535, 0, 1, 3] {
            assert!(m.insert(s));
        }
        let mut buf = Vec::new();
        m.emit(&mut buf, 7, 0xabc);
        let packet = rtcp::parse_compound(&buf).unwrap().next().unwrap();
        let ack = qtss::Ack::parse(&packet.app().unwrap().unwrap()).unwrap();
        r.on_ack_packet(&mut cc, &ack, 40 * MS);
        assert_eq!(r.stats().acked, 8);
        assert_eq!(r.in_flight(), 2);
        // What is left goes again: one at 700 ms, whose 900 ms sample
        // moves the RTO from 600 to 1007 ms (mean 147, deviation 860), the
        // other after that.
        let mut out = Vec::new();
        r.poll(&mut cc, 700 * MS, &mut out);
        assert_eq!(cc.rto(), Duration::from_millis(1007));
        r.poll(&mut cc, 1008 * MS, &mut out);
        assert_eq!(out, [65_533, 2]);
    }

    #[test]
    fn a_huge_ack_is_read_only_as_far_as_the_window() {
        let mut cc = ready(64 * 1024);
        let mut r = Resender::new(16);
        r.on_send(&mut cc, 0, 100, 0, DROP_ALL_MS, 0);
        let mask = vec![0xffu8; qtss::MAX_MASK_BITS / 8];
        let mut buf = Vec::new();
        qtss::ack(&mut buf, qtss::ACK, 1, 2, 0, &mask);
        let packet = rtcp::parse_compound(&buf).unwrap().next().unwrap();
        let ack = qtss::Ack::parse(&packet.app().unwrap().unwrap()).unwrap();
        r.on_ack_packet(&mut cc, &ack, MS);
        let st = r.stats();
        assert_eq!(st.acked, 1);
        assert_eq!(st.acks_for_missing, 16 + 32 - 1);
        assert_eq!(st.acks_ignored, (qtss::MAX_MASK_BITS + 1 - 48) as u64);
        // However many acks for missing packets come, the window stays
        // within the client's.
        assert!(cc.congestion_window() <= cc.client_window());
    }

    #[test]
    fn acks_before_any_window_are_ignored() {
        let mut cc = Congestion::new(true);
        let mut r = Resender::new(8);
        r.on_ack(&mut cc, 1, 0);
        assert_eq!(r.stats().acks_for_missing, 0);
        assert_eq!(cc.congestion_window(), MSS);
        // A caller that sends before it sets a window: what expires still
        // leaves the bytes in flight.
        r.on_send(&mut cc, 1, 500, 0, DROP_ALL_MS, 0);
        assert_eq!(cc.bytes_in_flight(), 500);
        r.poll(&mut cc, 3000 * MS, &mut Vec::new());
        assert_eq!((cc.bytes_in_flight(), r.stats().expired), (0, 1));
        assert_eq!(cc.congestion_window(), MSS);
    }

    #[test]
    fn a_full_ring_pushes_out_its_oldest_and_a_jump_starts_over() {
        let mut cc = ready(1 << 20);
        let mut r = Resender::new(4);
        for seq in 0..6u16 {
            r.on_send(&mut cc, seq, 100, 0, DROP_ALL_MS, 0);
        }
        assert_eq!((r.in_flight(), r.stats().evicted), (4, 2));
        assert_eq!(cc.bytes_in_flight(), 400);
        // A repeat of a number in flight is not added again.
        r.on_send(&mut cc, 5, 100, 0, DROP_ALL_MS, 0);
        assert_eq!(cc.bytes_in_flight(), 400);
        // A gap is held as numbers that are not in flight.
        // Its slot, and 7's, push out 2 and 3.
        r.on_send(&mut cc, 7, 100, 0, DROP_ALL_MS, 0);
        assert_eq!((r.in_flight(), r.stats().evicted), (3, 4));
        assert_eq!(cc.bytes_in_flight(), 300);
        // A jump backwards: what was in flight is let go.
        r.on_send(&mut cc, 1000, 100, 0, DROP_ALL_MS, 0);
        r.on_send(&mut cc, 3, 100, 0, DROP_ALL_MS, 0);
        assert_eq!(r.in_flight(), 1);
        assert_eq!(cc.bytes_in_flight(), 100);
        r.clear(&mut cc);
        assert_eq!((r.in_flight(), cc.bytes_in_flight()), (0, 0));
    }

    #[test]
    fn the_ack_timeout_follows_dss_arithmetic() {
        let mut cc = ready(48 * 1024);
        assert_eq!(cc.ack_timeout_ms(), 20);
        // 24 KiB window, 300 kbit in 1 s: 1000 * 24576 / 300000 = 81 ms;
        // RTO 600 vs 20: adjustment 290, capped at 81: 0, clamped to 20.
        cc.update_ack_timeout(300_000, 1000);
        assert_eq!(cc.ack_timeout_ms(), 20);
        // With a round trip below the ack timeout there is no adjustment.
        cc.unadjusted_rto_ms = 10;
        cc.update_ack_timeout(300_000, 1000);
        assert_eq!(cc.ack_timeout_ms(), 81);
        cc.update_ack_timeout(1, 1000);
        assert_eq!(cc.ack_timeout_ms(), 100);
        cc.update_ack_timeout(0, 1000);
        assert_eq!(cc.ack_timeout_ms(), 20);
    }
}
