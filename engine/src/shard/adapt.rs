//! A movie session's delivery fitted to its client, as the shard core
//! drives it: sent ahead of real time at PLAY and after a seek (Instant-On,
//! [`Burst`]) and thinned, whole frames at a time, when the client cannot
//! keep up ([`Thinning`]). Only sessions that have one of the two pay for
//! it: the others keep `None` and run the plain round.
//!
//! What bounds a burst here, beyond the burst's own horizon (its rate and
//! lead):
//!
//! - On TCP (and a tunnel), the connection's queue. Packets ahead of real
//!   time go only while the queue stays below the level where a thinned
//!   stream thickens again (itself below where thinning starts, less the
//!   room of the largest key frame seen): a burst must never be what makes
//!   a stream thin, keeps it thin, or leaves a key frame no room. What is due
//!   in real time always goes, as for any session.
//! - On UDP, a round's share: at most [`UDP_AHEAD_PER_ROUND`] bytes ahead of
//!   real time per round, so the ramp at PLAY does not arrive as one train
//!   that overruns the client's socket buffer; and RTCP loss, which halves
//!   the lead (see [`Burst::on_loss`]).
//!
//! - The client's overbuffer window (QuickTime's `ob` item in its `QTSS`
//!   reports, [`Adapt::on_client_window`]): the bytes of packets sent ahead
//!   of their due time and not yet due never exceed it. [`Burst`] caps the
//!   lead at the time the window holds at the movie's average rate, and
//!   holds it when five packets' worth remain unreported (DSS's rules); a
//!   ledger of what went ahead makes the bound exact whatever the rate
//!   does (a key frame's burst of bytes), kept only once a client has said
//!   its window.
//!
//! A session granted a `Speed` (RFC 2326 section 12.35, on reliable
//! transports) is always adapted: its round is the one whose [`Pick`]
//! plays at the source's speed (`Pick::AT_SPEED`), so the plain round
//! never divides a due time. Its burst sees the movie's rate times the
//! speed.
//!
//! Thinning is driven by the queue of a slow TCP reader (thin before the
//! queue overflows rather than lose random packets, which would break
//! frames and leave the decoder without references), on UDP by the loss
//! receiver reports give, and on reliable UDP by lateness, with the
//! thresholds of [`ThinningConfig`]. The queue thresholds are moved down,
//! for a small queue, so that the largest key frame always has room above
//! the level where only key frames are left. Lateness (DSS's third driver:
//! how late the next packet is when the session is served) arises where the
//! transport holds packets back rather than queueing them: a reliable-UDP
//! session whose congestion window is full skips its rounds (see
//! `repair::reliable`), and at a `Speed` above what the path takes it
//! does so all the time. The round itself never blocks (a TCP session's
//! packets wait in its queue, which is what the queue driver watches, so
//! lateness is not fed there), and a plain UDP session is never held
//! back. A client's `x-Transport-Options: late-tolerance=` moves the
//! thresholds.

use std::collections::VecDeque;

use loader::{Movie, Packet, PacketFlags};
use smallvec::SmallVec;

use super::{Config, Entry};
use crate::pacer::{self, SessionKey, UdpRound};
use crate::repair::burst::{self, Burst, BurstConfig, Carrier};
use crate::repair::thinning::{self, Thinning, ThinningConfig, Verdict};
use crate::session::{Dests, Media};
use crate::source::{Nanos, Outgoing, Pick, Source};
use crate::stats::ShardStats;

/// Bytes of packets ahead of real time one UDP session may be sent per
/// round (a round is about a millisecond): 64 KiB, some 45 packets.
pub const UDP_AHEAD_PER_ROUND: usize = 64 * 1024;

/// The room a key frame is given before it is known: what a typical SD key
/// frame takes (14 KB at 1 Mbit/s was measured), twice.
const KEY_FRAME_GUESS: usize = 32 * 1024;

/// What adapting did to a session, for its figures and its log line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AdaptStats {
    /// Frames left out by thinning (video).
    pub frames_thinned: u64,
    /// Packets left out by thinning.
    pub packets_thinned: u64,
    /// Packets sent ahead of real time.
    pub packets_ahead: u64,
    /// Times the level went thinner, and thicker.
    pub thinned: u64,
    pub thickened: u64,
    /// Rounds in which the client's overbuffer window held packets back.
    pub window_holds: u64,
}

/// What a session's client said it can hold ahead (`ob`), and the packets
/// sent ahead of their due time that are not due yet: (due, bytes).
#[derive(Debug, Default)]
struct Window {
    bytes: u64,
    ahead: VecDeque<(Nanos, u32)>,
    ahead_bytes: u64,
}

impl Window {
    /// Forgets what has come due by `now`: the client plays it.
    fn settle(&mut self, now: Nanos) {
        while let Some(&(due, len)) = self.ahead.front() {
            if due > now {
                break;
            }
            self.ahead_bytes -= u64::from(len);
            self.ahead.pop_front();
        }
    }

    fn room(&self) -> u64 {
        self.bytes.saturating_sub(self.ahead_bytes)
    }
}

/// A session's Instant-On and thinning.
pub struct Adapt {
    burst: Burst,
    /// Per stream: thinning for video streams when it is on.
    thin: SmallVec<[Option<Thinning>; 2]>,
    tcp: bool,
    /// Bytes the largest key frame seen took, framing included.
    largest_key: usize,
    /// (stream, timestamp, bytes) of the key frame being sent.
    key: Option<(usize, u32, usize)>,
    /// Whether lateness moves thinning (reliable UDP, see the module
    /// documentation).
    lateness: bool,
    /// The movie's average rate, bytes per second, and the play's speed.
    byte_rate: u64,
    speed: f64,
    /// The client's overbuffer window, once it has said one.
    window: Option<Box<Window>>,
    /// The largest packet seen, framing included: what the window must
    /// still have room for before one more goes ahead.
    largest_packet: usize,
    stats: AdaptStats,
}

impl Adapt {
    /// For session playing `source` of `movie`: `burst` when it may be sent
    /// ahead, `thin` when its video streams may be thinned, `tcp` when its
    /// media rides a connection, `lateness` when lateness moves thinning
    /// (reliable UDP). `None` when it gets neither and plays at speed 1.
    pub fn new(
        movie: &Movie,
        source: &Source,
        burst: Option<BurstConfig>,
        thin: Option<ThinningConfig>,
        tcp: bool,
        lateness: bool,
        now: Nanos,
    ) -> Option<Box<Adapt>> {
        let Source::Movie(m) = source else {
            // A live viewer has its own catch-up burst and is never thinned.
            return None;
        };
        let thin: SmallVec<[Option<Thinning>; 2]> = m
            .streams()
            .iter()
            .map(|s| {
                thin.filter(|_| is_video(movie, s.track_id))
                    .map(|cfg| Thinning::new(cfg, true))
            })
            .collect();
        let speed = source.speed();
        if burst.is_none() && thin.iter().all(Option::is_none) && speed == 1.0 {
            return None;
        }
        let secs = movie.duration_secs().max(1.0);
        let mut a = Box::new(Adapt {
            burst: Burst::new(burst.unwrap_or_default(), burst.is_some()),
            thin,
            tcp,
            largest_key: 0,
            key: None,
            lateness,
            byte_rate: (movie.data().len() as f64 / secs) as u64,
            speed,
            window: None,
            largest_packet: 1500,
            stats: AdaptStats::default(),
        });
        a.play(now, speed);
        Some(a)
    }

    /// PLAY or a seek, at `speed`: the burst starts again, and lateness
    /// counts from here.
    pub fn play(&mut self, now: Nanos, speed: f64) {
        self.speed = speed;
        // Media at `speed` times real time takes that many times the bytes
        // a second: the client's window holds less time of it.
        self.burst.set_media_rate((self.byte_rate as f64 * speed) as u64, 1400);
        self.burst.play(now);
        if let Some(w) = self.window.as_deref_mut() {
            // Due times start again: what went ahead is the client's to play
            // (a seek flushes it), and the ledger starts empty.
            w.ahead.clear();
            w.ahead_bytes = 0;
        }
        for t in self.thin.iter_mut().flatten() {
            t.play(now);
        }
    }

    /// The client's overbuffer window (`ob` in a `QTSS` report): the most
    /// bytes it can hold ahead of play. Each report starts DSS's count of
    /// bytes sent since, and bounds the ledger of what is ahead. A window
    /// of 0 sends nothing ahead; one larger than the lead's worth changes
    /// nothing.
    pub fn on_client_window(&mut self, bytes: u32) {
        self.burst.on_client_window(bytes);
        self.window.get_or_insert_with(Default::default).bytes = u64::from(bytes);
    }

    /// Bytes of packets sent ahead of real time and not yet due, by the
    /// ledger (0 before the client said a window).
    #[cfg(test)]
    pub fn ahead_bytes(&self) -> u64 {
        self.window.as_ref().map_or(0, |w| w.ahead_bytes)
    }

    pub fn stats(&self) -> AdaptStats {
        let mut s = self.stats;
        s.thinned = 0;
        s.thickened = 0;
        for t in self.thin.iter().flatten() {
            let ts = t.stats();
            s.thinned += ts.thinned;
            s.thickened += ts.thickened;
        }
        s
    }

    /// The thinnest quality any stream is at now, as a name for the admin
    /// API; `None` without thinning.
    pub fn quality(&self) -> Option<thinning::Quality> {
        self.thin.iter().flatten().map(Thinning::level).max()
    }

    /// How far ahead of real time the session may be sent now.
    pub fn lead(&self) -> std::time::Duration {
        self.burst.lead()
    }

    /// The headroom a key frame needs above the queue's floor.
    fn key_room(&self) -> usize {
        2 * self.largest_key.max(KEY_FRAME_GUESS / 2)
    }

    /// The queue fill (0 to 1) thinning sees for a queue of `bound` bytes
    /// holding `queued`: scaled so that its "key frames only" level leaves
    /// the largest key frame room (see [`floor_bytes`](Self::floor_bytes)).
    fn thinning_fill(&self, queued: usize, bound: usize, floor: f32) -> f32 {
        queued as f32 / self.floor_bytes(bound, floor) * floor
    }

    /// Where "key frames only" begins in a queue of `bound` bytes: at
    /// `floor` of it, or lower so that the key frame room stays above it.
    /// A queue too small for that (under twice the key frame room) keeps the
    /// plain fractions: it cannot promise a key frame room anyway, and
    /// scaled it would thin at its first bytes.
    fn floor_bytes(&self, bound: usize, floor: f32) -> f32 {
        let plain = bound.max(1) as f32 * floor;
        let room = self.key_room();
        if bound >= 2 * room {
            plain.min((bound - room) as f32)
        } else {
            plain
        }
    }

    /// The bytes queued at which [`thinning_fill`](Self::thinning_fill)
    /// reads `fill`.
    fn fill_bytes(&self, fill: f32, bound: usize, floor: f32) -> usize {
        (fill / floor * self.floor_bytes(bound, floor)) as usize
    }

    /// An RTCP receiver report's fraction lost (1/256) for stream `stream`.
    pub fn on_loss(&mut self, stream: usize, fraction_lost: u8, now: Nanos) {
        self.burst.on_loss(fraction_lost, now);
        if let Some(Some(t)) = self.thin.get_mut(stream) {
            t.on_loss_report(thinning::percent(fraction_lost), None);
        }
    }

    /// How late the session's next packet, due at `due`, goes at `now`:
    /// moves thinning where lateness does (see the module documentation).
    pub fn on_lateness(&mut self, due: Nanos, now: Nanos) {
        if !self.lateness {
            return;
        }
        let before = self.quality();
        for t in self.thin.iter_mut().flatten() {
            t.on_lateness(due, now);
        }
        if self.quality() != before {
            tracing::debug!(
                late_ms = (now as i64 - due as i64) / 1_000_000,
                quality = self.quality().map_or("", |q| q.name()),
                "lateness moved a session's video quality"
            );
        }
    }

    /// The round's picker, and the horizon up to which it may take packets
    /// ahead: `queue` is a TCP session's (queued, bound), `now` the round's
    /// time and `due_by` what it sends in any case.
    pub fn round(&mut self, now: Nanos, due_by: Nanos, queue: Option<(usize, usize)>) -> (Nanos, Round<'_>) {
        let cfg = ThinningConfig::default();
        let budget = match (self.tcp, queue) {
            (true, Some((queued, bound))) => {
                let fill = self.thinning_fill(queued, bound, cfg.queue_floor);
                let before = self.quality();
                for t in self.thin.iter_mut().flatten() {
                    t.on_queue(fill, now);
                }
                if self.quality() != before {
                    tracing::debug!(
                        queued,
                        fill,
                        quality = self.quality().map_or("", |q| q.name()),
                        "a slow reader's queue moved its video's quality"
                    );
                }
                self.burst.on_queue(queued as f32 / bound.max(1) as f32, now);
                // Ahead of real time only below the level where a thinned
                // stream may thicken again (and so below where thinning
                // starts, less a key frame's room): a burst must neither
                // thin a stream nor keep it thin.
                let thin_at = ((bound as f32 * cfg.queue_thin) as usize).saturating_sub(self.key_room());
                let thick_at = self.fill_bytes(cfg.queue_thick, bound, cfg.queue_floor);
                thin_at.min(thick_at).saturating_sub(queued)
            }
            (true, None) => 0,
            (false, _) => UDP_AHEAD_PER_ROUND,
        };
        let budget = match self.window.as_deref_mut() {
            Some(w) => {
                w.settle(now);
                let room = usize::try_from(w.room()).unwrap_or(usize::MAX);
                if room < self.largest_packet {
                    self.stats.window_holds += 1;
                }
                budget.min(room)
            }
            None => budget,
        };
        let horizon = self.burst.horizon(now);
        let round = Round {
            adapt: self,
            due_by,
            budget,
        };
        (horizon, round)
    }
}

/// One round of an adapted session: what goes ahead, what is left out.
pub struct Round<'a> {
    adapt: &'a mut Adapt,
    /// Packets due after this go ahead of real time.
    due_by: Nanos,
    /// Bytes that may still go ahead of real time this round.
    budget: usize,
}

impl Pick for Round<'_> {
    const AT_SPEED: bool = true;

    fn ahead(&mut self, _due: Nanos) -> bool {
        // A packet's size is known once it is read; one as big as the
        // largest so far (a datagram at least) fits.
        self.budget >= self.adapt.largest_packet
    }

    fn keep(&mut self, stream: usize, p: &Packet, due: Nanos) -> bool {
        let len = p.payload_len() + 16;
        let a = &mut *self.adapt;
        a.largest_packet = a.largest_packet.max(len);
        if let Some(Some(t)) = a.thin.get_mut(stream) {
            let before = t.stats();
            let verdict = t.decide(p.timestamp, p.marker, p.flags);
            let after = t.stats();
            a.stats.frames_thinned += after.frames_dropped - before.frames_dropped;
            a.stats.packets_thinned += after.packets_dropped - before.packets_dropped;
            if verdict == Verdict::Drop {
                return false;
            }
        }
        if p.flags.contains(PacketFlags::KEY) {
            let bytes = match a.key {
                Some((s, ts, bytes)) if s == stream && ts == p.timestamp => bytes + len,
                _ => len,
            };
            a.key = Some((stream, p.timestamp, bytes));
            a.largest_key = a.largest_key.max(bytes);
        }
        if due > self.due_by {
            a.stats.packets_ahead += 1;
            self.budget = self.budget.saturating_sub(len);
            if let Some(w) = a.window.as_deref_mut() {
                w.ahead.push_back((due, len as u32));
                w.ahead_bytes += len as u64;
            }
            a.burst.on_sent(len);
        } else if a.tcp {
            // On a connection what is due fills the same queue.
            self.budget = self.budget.saturating_sub(len);
        }
        true
    }
}

/// At each PLAY of session `e`: its burst starts again, or, the first
/// time, it is given one if it may take it (see
/// [`burst::overbuffer_allowed`]), and thinning if it rides a connection.
pub(super) fn at_play(e: &mut Entry, config: &Config, now: Nanos) {
    let speed = e.session.playback.as_ref().map_or(1.0, Source::speed);
    if let Some(a) = e.adapt.as_mut() {
        a.play(now, speed);
        return;
    }
    let (Media::Movie(movie), Some(source)) = (&e.session.media, e.session.playback.as_ref()) else {
        return;
    };
    let tcp = e.conn.is_some();
    // Reliable UDP holds packets back while its window is full: thinned by
    // lateness.
    let reliable = !tcp && e.rtx.as_ref().is_some_and(|r| r.is_reliable());
    // Over UDP, a session whose every stream has NACK/RTX may be sent
    // ahead: its history keeps each packet until its due time plus
    // rtx-time, however early it went, so a client that asks on its own
    // timeline (GStreamer's jitter buffer) is answered. Reliable UDP is
    // sent ahead as DSS overbuffered it, as far as its window lets go (a
    // packet sent ahead waits for its ack its lead on top of the usual
    // time); its resends go early, on the acks, not only on the RTO.
    let rtx = e.rtx.as_deref().filter(|r| r.covers_all() && !r.is_reliable());
    let carrier = if tcp {
        Carrier::Tcp
    } else if reliable {
        Carrier::ReliableUdp
    } else {
        Carrier::Udp
    };
    let allowed = burst::overbuffer_allowed(carrier, e.session.dynamic_rate, rtx.is_some());
    let burst = config.instant_on.filter(|_| allowed).map(|mut b| {
        if let Some(r) = rtx {
            // The step at PLAY and little more (see `nack_lead`); and
            // never further ahead than the history keeps (it was sized for
            // that lead; only a very high packet rate caps it).
            b.max_lead = repaired_lead(&b, false).min(r.covered_lead());
            b.instant_lead = b.instant_lead.min(b.max_lead);
        }
        b
    });
    let late_tolerance = e.session.late_tolerance_ms.map(|ms| f64::from(ms.get()) / 1000.0);
    let thin = config
        .thinning
        .filter(|_| tcp || reliable)
        .map(|cfg| ThinningConfig { late_tolerance, ..cfg });
    e.adapt = Adapt::new(movie, source, burst, thin, tcp, reliable, now);
}

/// Whether hint track `track_id` of `movie` streams video (its SDP
/// fragment's media line says so).
pub(super) fn is_video(movie: &Movie, track_id: u32) -> bool {
    movie
        .track(track_id)
        .and_then(|t| t.sdp.as_deref())
        .is_some_and(|sdp| sdp.contains("m=video"))
}

/// How far ahead a repaired session over UDP may be sent with Instant-On
/// `b`: reliable UDP as far as the configured lead, NACK/RTX only
/// [`nack_lead`]. The histories are sized for it, and [`at_play`] holds
/// the burst to it.
pub(super) fn repaired_lead(b: &BurstConfig, reliable: bool) -> std::time::Duration {
    if reliable {
        b.max_lead
    } else {
        nack_lead(b)
    }
}

/// How far ahead a session repaired by NACK/RTX over UDP is sent: the
/// instant lead of PLAY (2 s), and at most [`NACK_RAMP`] more after it,
/// not the ramp to `max_lead`.
///
/// That session's client is GStreamer's `rtspsrc do-retransmission=true`,
/// whose jitter buffer estimates the sender's clock from arrival times
/// against RTP timestamps and starts over when the two drift more than
/// 1 s from its estimate (`calculate_skew`, "delta - skew too big, reset
/// skew"); from then on it discards as "backward timestamps" every RTX
/// packet older than where it started over, so the repairs of what was
/// lost just before never count. A step of up to 2 s of media at PLAY
/// falls within its first estimation window (2 s of RTP time) and is
/// taken whole (the estimate ends at the step); half a second more drifts
/// from it by half a second at most, inside the 1 s. The ramp to 4 s at
/// twice real time drifted past the 1 s within about a second, and plays
/// through 3 % loss lost pictures about one in five.
fn nack_lead(b: &BurstConfig) -> std::time::Duration {
    (b.instant_lead + NACK_RAMP).min(b.max_lead)
}

/// How far past the instant lead a NACK/RTX session's lead grows (see
/// [`nack_lead`]): half of GStreamer's 1 s resync threshold.
const NACK_RAMP: std::time::Duration = std::time::Duration::from_millis(500);

/// A receiver report's loss for stream `stream` of session `e`. A plain
/// UDP session is given thinning only when its client first reports more
/// than a little loss: until then it costs nothing.
pub(super) fn on_loss(e: &mut Entry, stream: usize, fraction_lost: u8, thinning: Option<ThinningConfig>, now: Nanos) {
    if e.adapt.is_none() {
        let Some(cfg) = thinning else { return };
        if e.conn.is_some() || thinning::percent(fraction_lost) < cfg.loss_thick_percent {
            return;
        }
        let (Media::Movie(movie), Some(source)) = (&e.session.media, e.session.playback.as_ref()) else {
            return;
        };
        e.adapt = Adapt::new(movie, source, None, Some(cfg), false, false, now);
    }
    if let Some(a) = e.adapt.as_mut() {
        a.on_loss(stream, fraction_lost, now);
    }
}

/// The round of an adapted session: what is due by `horizon`, what its
/// burst lets go ahead, less what thinning leaves out. `queue` is its
/// connection's (queued, bound). Returns when it wants its next round: a
/// lead before its next packet is due, and never within this round.
#[allow(clippy::too_many_arguments)]
pub(super) fn serve(
    a: &mut Adapt,
    key: SessionKey,
    source: &mut Source,
    dests: &Dests,
    now: Nanos,
    horizon: Nanos,
    queue: Option<(usize, usize)>,
    udp: &mut UdpRound,
    stats: &mut ShardStats,
    tcp: impl FnMut(u8, &Outgoing<'_>) -> bool,
    keep: impl FnMut(&Outgoing<'_>),
) -> Option<Nanos> {
    let before = a.stats;
    if a.lateness {
        // The next packet's due time against the round's: how far behind
        // the window has held the session.
        if let Some(due) = source.next_due() {
            a.on_lateness(due, now);
        }
    }
    let (burst_horizon, mut round) = a.round(now, horizon, queue);
    let ahead = burst_horizon.saturating_add(horizon - now).max(horizon);
    let next = pacer::serve_picked(
        key, source, dests, now, horizon, ahead, &mut round, udp, stats, tcp, keep,
    );
    let after = a.stats;
    stats.ahead_packets += after.packets_ahead - before.packets_ahead;
    stats.thinned_frames += after.frames_thinned - before.frames_thinned;
    stats.thinned_packets += after.packets_thinned - before.packets_thinned;
    let lead = ahead - horizon;
    next.map(|t| t.saturating_sub(lead).max(horizon + 1))
}
