//! Instant-On: how far ahead of real time a session may be sent.
//!
//! The pacer sends a session's packets when they are due. A session that
//! can take more (its transport absorbs a burst, or repairs what a burst
//! loses) may be sent everything due by a *horizon* later than `now`: the
//! lead. [`Burst::horizon`] is that horizon; the pacer sends everything due
//! by it, as one run of packets where it can.
//!
//! The lead follows Darwin Streaming Server's overbuffering
//! (`RTPOverbufferWindow`), in time rather than per packet:
//!
//! - At PLAY (and after a seek) the lead rises to
//!   [`BurstConfig::instant_lead`] over [`BurstConfig::ramp`]: DSS let a
//!   session send a second ahead at once (`fSendAheadDurationInMsec`); a
//!   short ramp spreads the same burst over a fraction of a second so a UDP
//!   client's socket buffer is not overrun in one round.
//! - Then it grows by `max_rate - 1` seconds per second of real time (a
//!   client receives `max_rate` seconds of media per second, DSS's
//!   `overbuffer_rate`, 2 by default), up to [`BurstConfig::max_lead`]
//!   (DSS's `max_send_ahead_time` was 25 s; a few seconds buy the same
//!   protection at less memory in the client).
//! - What the client reports bounds it. Its overbuffer window (QuickTime's
//!   `ob` item, bytes it can hold ahead): the lead is capped at what those
//!   bytes hold at the stream's rate, and, as in DSS, sending ahead stops
//!   when fewer than five packets' worth remain unreported. Loss in RTCP
//!   receiver reports past [`BurstConfig::loss_threshold`] halves the lead
//!   and holds its growth for [`BurstConfig::loss_hold`]. A TCP session's
//!   queue filling past [`BurstConfig::queue_high`] holds growth, past
//!   [`BurstConfig::queue_full`] takes the lead to nothing until it drains.
//!
//! The horizon never moves back: a smaller lead means the session waits
//! until real time catches up with what it was already sent.
//!
//! Which sessions burst ([`overbuffer_allowed`]): TCP and HTTP tunnels,
//! reliable UDP (DSS's rule), UDP with NACK/RTX, unless the client sent
//! `x-Dynamic-Rate: 0`; plain UDP only with `x-Dynamic-Rate: 1` (DSS never
//! overbuffered plain UDP). The shard gives NACK/RTX sessions the step at
//! PLAY and half a second more, not the ramp, for GStreamer's jitter buffer (see
//! `shard::adapt::nack_lead`). `x-Prebuffer` ([`prebuffer_backup`]) and
//! `Speed` ([`granted_speed`]) are answered as DSS answered them.

use std::time::Duration;

use crate::source::Nanos;

/// Limits of sending ahead.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BurstConfig {
    /// The most a session is ever ahead of real time.
    pub max_lead: Duration,
    /// Seconds of media per second at most, once the first burst is out.
    pub max_rate: f64,
    /// The lead reached at PLAY.
    pub instant_lead: Duration,
    /// How long reaching `instant_lead` takes; zero sends it in one round.
    pub ramp: Duration,
    /// Fraction lost (in 1/256, as RTCP reports it) above which the lead
    /// halves. 13 is 5 %.
    pub loss_threshold: u8,
    /// How long growth stops after such a report.
    pub loss_hold: Duration,
    /// Queue fill (0..1) of a TCP session above which the lead stops
    /// growing, and above which it drops to nothing.
    pub queue_high: f32,
    pub queue_full: f32,
}

impl Default for BurstConfig {
    fn default() -> BurstConfig {
        BurstConfig {
            max_lead: Duration::from_secs(4),
            max_rate: 2.0,
            instant_lead: Duration::from_secs(2),
            ramp: Duration::from_millis(250),
            loss_threshold: 13,
            loss_hold: Duration::from_secs(1),
            queue_high: 0.5,
            queue_full: 0.8,
        }
    }
}

/// The transports a session's media can take, as far as bursts care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carrier {
    Udp,
    /// DSS's reliable UDP (`x-Retransmit: our-retransmit`).
    ReliableUdp,
    /// Interleaved on the RTSP connection, or an HTTP tunnel.
    Tcp,
}

/// Whether a session may be sent ahead of real time. `dynamic_rate` is
/// the client's `x-Dynamic-Rate` (None when it sent none), `repaired`
/// whether its UDP streams have NACK/RTX.
pub fn overbuffer_allowed(carrier: Carrier, dynamic_rate: Option<bool>, repaired: bool) -> bool {
    match carrier {
        Carrier::Tcp | Carrier::ReliableUdp => dynamic_rate != Some(false),
        Carrier::Udp => dynamic_rate == Some(true) || (repaired && dynamic_rate != Some(false)),
    }
}

/// The `x-Dynamic-Rate` reply: DSS answered only a client that asked,
/// with the state it chose.
pub fn dynamic_rate_reply(requested: Option<bool>, allowed: bool) -> Option<&'static str> {
    match requested {
        None => None,
        Some(true) if allowed => Some("1"),
        Some(_) => Some("0"),
    }
}

/// How far before the requested start to begin, for a client that sent
/// `x-Prebuffer: maxtime=`: from the key frame at or before the start,
/// but no more than `max_time` back (DSS: "if the client specifies that it
/// can do extra buffering, use the first packet transmit time as the start
/// time for this play burst"). What lies before the start is due at once.
/// Without the header, DSS backed up to the key frame all the same but
/// sent from there at real time: `None`.
pub fn prebuffer_backup(requested_start: Duration, key_frame: Duration, max_time: Option<f64>) -> Option<Duration> {
    let max_time = Duration::try_from_secs_f64(max_time?).ok()?;
    Some(requested_start.saturating_sub(key_frame).min(max_time))
}

/// The play speed granted for a `Speed` request (RFC 2326 section 12.35),
/// as DSS's file module granted it: capped at `max` (DSS: 4), and 1 when
/// the request is not above zero or when a stream is on plain UDP, which
/// could not take the rate.
pub fn granted_speed(requested: Option<f64>, all_reliable: bool, max: f64) -> f64 {
    match requested {
        Some(s) if s > 0.0 && all_reliable && s.is_finite() => s.min(max.max(1.0)),
        _ => 1.0,
    }
}

/// A packet's due time under `speed`: its offset from the start of play
/// divided by the speed (RTP timestamps stay as they are).
pub fn speed_offset(offset_from_start: Duration, speed: f64) -> Duration {
    if speed > 0.0 && speed.is_finite() && speed != 1.0 {
        offset_from_start.div_f64(speed)
    } else {
        offset_from_start
    }
}

/// What a burst has done, for the session's statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BurstStats {
    /// Times loss halved the lead.
    pub loss_cuts: u64,
    /// Times a full queue took the lead away.
    pub queue_stops: u64,
    /// Rounds the client's window held sending ahead.
    pub window_holds: u64,
}

/// A session's lead over real time. See the module documentation.
#[derive(Debug, Clone)]
pub struct Burst {
    cfg: BurstConfig,
    enabled: bool,
    /// The lead, in nanoseconds.
    lead: u64,
    /// Where the ramp ends.
    instant: u64,
    /// The lead's ceiling now: `max_lead`, or less for a small window.
    cap: u64,
    last: Option<Nanos>,
    horizon: Nanos,
    hold_until: Nanos,
    queue_high: bool,
    /// Bytes the client said it can hold ahead, and sent since it said so.
    window: Option<(u64, u64)>,
    /// Bytes per second of media, to turn a window into time.
    byte_rate: u64,
    /// Typical packet size, for DSS's "five packets" rule.
    packet: u64,
    stats: BurstStats,
}

fn nanos(d: Duration) -> u64 {
    d.as_nanos().min(u128::from(u64::MAX)) as u64
}

impl Burst {
    /// A session's burst; disabled, its horizon is always `now`.
    pub fn new(cfg: BurstConfig, enabled: bool) -> Burst {
        Burst {
            cfg,
            enabled,
            lead: 0,
            instant: 0,
            cap: nanos(cfg.max_lead),
            last: None,
            horizon: 0,
            hold_until: 0,
            queue_high: false,
            window: None,
            byte_rate: 0,
            packet: 1400,
            stats: BurstStats::default(),
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    pub fn stats(&self) -> BurstStats {
        self.stats
    }

    /// The lead now.
    pub fn lead(&self) -> Duration {
        Duration::from_nanos(self.lead)
    }

    /// The session's media rate in bytes per second and its usual packet
    /// size, for turning the client's window into time.
    pub fn set_media_rate(&mut self, bytes_per_sec: u64, packet: usize) {
        self.byte_rate = bytes_per_sec;
        self.packet = packet.max(1) as u64;
        self.update_cap();
    }

    fn update_cap(&mut self) {
        let mut cap = nanos(self.cfg.max_lead);
        if let (Some((window, _)), true) = (self.window, self.byte_rate > 0) {
            let held = (u128::from(window) * 1_000_000_000 / u128::from(self.byte_rate)) as u64;
            cap = cap.min(held);
        }
        self.cap = cap;
        self.lead = self.lead.min(cap);
        self.instant = self.instant.min(cap);
    }

    /// PLAY, or a seek: the stream's due times start again at `now`, and so
    /// does the lead. The horizon is not moved back.
    pub fn play(&mut self, now: Nanos) {
        self.lead = 0;
        self.instant = nanos(self.cfg.instant_lead).min(self.cap);
        self.last = Some(now);
        self.horizon = self.horizon.max(now);
        self.hold_until = 0;
        if let Some((_, sent)) = self.window.as_mut() {
            *sent = 0;
        }
    }

    /// The client's overbuffer window (QuickTime's `ob`): what it can hold
    /// ahead, in bytes. Each report starts the count of bytes sent since,
    /// as DSS's did.
    pub fn on_client_window(&mut self, bytes: u32) {
        self.window = Some((u64::from(bytes), 0));
        self.update_cap();
    }

    /// Bytes just sent to the client.
    pub fn on_sent(&mut self, bytes: usize) {
        if let Some((_, sent)) = self.window.as_mut() {
            *sent += bytes as u64;
        }
    }

    /// A receiver report's fraction lost (1/256).
    pub fn on_loss(&mut self, fraction_lost: u8, now: Nanos) {
        self.advance(now);
        if fraction_lost > self.cfg.loss_threshold {
            self.lead /= 2;
            self.instant = self.instant.min(self.lead);
            self.hold_until = now.saturating_add(nanos(self.cfg.loss_hold));
            self.stats.loss_cuts += 1;
        }
    }

    /// How full a TCP session's queue is, 0 to 1.
    pub fn on_queue(&mut self, fill: f32, now: Nanos) {
        self.advance(now);
        if fill >= self.cfg.queue_full {
            if self.lead > 0 {
                self.stats.queue_stops += 1;
            }
            self.lead = 0;
            self.instant = 0;
        }
        self.queue_high = fill >= self.cfg.queue_high;
    }

    fn window_full(&self) -> bool {
        // DSS: "if the client is running low on memory, wait a while".
        self.window
            .is_some_and(|(window, sent)| self.packet.saturating_mul(5) > window.saturating_sub(sent))
    }

    /// Grows the lead for the time since the last call.
    fn advance(&mut self, now: Nanos) {
        let last = *self.last.get_or_insert(now);
        let dt = now.saturating_sub(last);
        self.last = Some(now.max(last));
        if !self.enabled || dt == 0 || self.queue_high || now <= self.hold_until || self.window_full() {
            return;
        }
        let mut dt = dt;
        // First the ramp to the instant lead...
        if self.lead < self.instant {
            let ramp = nanos(self.cfg.ramp);
            let step = if ramp == 0 {
                self.instant
            } else {
                (u128::from(dt) * u128::from(self.instant) / u128::from(ramp)) as u64
            };
            let room = self.instant - self.lead;
            if step < room {
                self.lead += step;
                return;
            }
            // The part of `dt` left once the ramp is done.
            let used = if self.instant == 0 || ramp == 0 {
                0
            } else {
                (u128::from(room) * u128::from(ramp) / u128::from(self.instant)) as u64
            };
            self.lead = self.instant;
            dt = dt.saturating_sub(used);
        }
        // ...then the steady rate.
        let extra = (dt as f64 * (self.cfg.max_rate - 1.0).max(0.0)) as u64;
        self.lead = self.lead.saturating_add(extra).min(self.cap);
    }

    /// Everything due by this may be sent at `now`.
    pub fn horizon(&mut self, now: Nanos) -> Nanos {
        self.advance(now);
        let lead = if !self.enabled {
            0
        } else if self.window_full() {
            self.stats.window_holds += 1;
            0
        } else {
            self.lead
        };
        self.horizon = self.horizon.max(now.saturating_add(lead));
        self.horizon
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Nanos = 1_000_000;
    const S: Nanos = 1_000_000_000;

    fn cfg() -> BurstConfig {
        BurstConfig::default()
    }

    /// The lead at `to_ms`, the horizon asked for every 10 ms from
    /// `from_ms` as a pacer's rounds would.
    fn lead_at(b: &mut Burst, from_ms: u64, to_ms: u64) -> Duration {
        for t in (from_ms..to_ms).step_by(10) {
            b.horizon(t * MS);
        }
        b.horizon(to_ms * MS);
        b.lead()
    }

    #[test]
    fn the_lead_ramps_then_grows_at_the_rate_and_stops_at_the_cap() {
        let mut b = Burst::new(cfg(), true);
        b.play(0);
        assert_eq!(b.horizon(0), 0);
        // Half the ramp: half the instant lead.
        assert_eq!(lead_at(&mut b, 0, 125), Duration::from_secs(1));
        // The ramp done: 2 s ahead a quarter of a second after PLAY.
        assert_eq!(lead_at(&mut b, 125, 250), Duration::from_secs(2));
        assert_eq!(b.horizon(250 * MS), 250 * MS + 2 * S);
        // Then a second of lead per second at 2x: 3 s at 1.25 s.
        assert_eq!(lead_at(&mut b, 250, 1250), Duration::from_secs(3));
        // And no more than 4 s, however long it plays.
        assert_eq!(lead_at(&mut b, 1250, 60_000), Duration::from_secs(4));
        // What the client holds is the media sent ahead of real time: the
        // horizon minus now.
        assert_eq!(b.horizon(60_000 * MS) - 60_000 * MS, 4 * S);
    }

    #[test]
    fn the_rate_bounds_media_per_second() {
        let mut c = cfg();
        c.instant_lead = Duration::ZERO;
        c.max_rate = 1.5;
        c.max_lead = Duration::from_secs(100);
        let mut b = Burst::new(c, true);
        b.play(0);
        // Every 1 s of real time sends at most 1.5 s of media.
        let mut prev = b.horizon(0);
        for t in 1..=20u64 {
            let h = b.horizon(t * S);
            assert_eq!(h - prev, S + S / 2, "second {t}");
            prev = h;
        }
    }

    #[test]
    fn a_disabled_burst_sends_at_real_time() {
        let mut b = Burst::new(cfg(), false);
        b.play(0);
        for t in [0, 10, 500, 5000] {
            assert_eq!(b.horizon(t * MS), t * MS);
        }
        assert_eq!(b.lead(), Duration::ZERO);
    }

    #[test]
    fn loss_halves_the_lead_and_holds_it() {
        let mut b = Burst::new(cfg(), true);
        b.play(0);
        assert_eq!(lead_at(&mut b, 0, 1250), Duration::from_secs(3));
        // 5 % is not over the threshold; 10 % is.
        b.on_loss(13, 1250 * MS);
        assert_eq!(b.lead(), Duration::from_secs(3));
        b.on_loss(26, 1250 * MS);
        assert_eq!(b.lead(), Duration::from_millis(1500));
        // The horizon does not move back: nothing more goes until real time
        // has caught up with what was sent.
        let before = 1250 * MS + 3 * S;
        assert_eq!(b.horizon(1250 * MS), before);
        assert_eq!(b.horizon(2000 * MS), before);
        // Held for a second, then growing again.
        assert_eq!(lead_at(&mut b, 2000, 2250), Duration::from_millis(1500));
        assert_eq!(lead_at(&mut b, 2250, 3250), Duration::from_millis(2500));
        assert_eq!(b.stats().loss_cuts, 1);
    }

    #[test]
    fn a_filling_queue_stops_the_lead() {
        let mut b = Burst::new(cfg(), true);
        b.play(0);
        lead_at(&mut b, 0, 1250);
        // Half full: no more growth.
        b.on_queue(0.6, 1250 * MS);
        assert_eq!(lead_at(&mut b, 1250, 3000), Duration::from_secs(3));
        // Nearly full: no lead at all, and the horizon waits for real time.
        b.on_queue(0.9, 3000 * MS);
        assert_eq!(b.lead(), Duration::ZERO);
        let h = b.horizon(3000 * MS);
        assert_eq!(h, 1250 * MS + 3 * S + 1750 * MS);
        assert_eq!(b.horizon(4000 * MS), h);
        assert_eq!(b.horizon(h + 10 * MS), h + 10 * MS);
        // Drained: growing again at the rate (the ramp is PLAY's only).
        b.on_queue(0.1, h + 10 * MS);
        let t0 = (h + 10 * MS) / MS;
        assert_eq!(lead_at(&mut b, t0, t0 + 1000), Duration::from_secs(1));
        assert_eq!(b.stats().queue_stops, 1);
    }

    #[test]
    fn the_clients_window_caps_the_lead_and_holds_it_when_full() {
        let mut b = Burst::new(cfg(), true);
        // 100 kB/s of media, a 150 kB window: 1.5 s ahead at most.
        b.set_media_rate(100_000, 1000);
        b.on_client_window(150_000);
        b.play(0);
        assert_eq!(lead_at(&mut b, 0, 5000), Duration::from_millis(1500));
        // Sent close to the window since the last report: held at real time
        // (what is due now still goes).
        b.on_sent(146_000);
        assert_eq!(b.horizon(5000 * MS), 5000 * MS + 1500 * MS, "the horizon stays");
        assert_eq!(b.horizon(7000 * MS), 7000 * MS);
        assert!(b.stats().window_holds > 0);
        // A new report opens it again.
        b.on_client_window(150_000);
        assert_eq!(b.horizon(7010 * MS), 7010 * MS + 1500 * MS);
    }

    #[test]
    fn a_seek_starts_the_ramp_again_without_moving_the_horizon_back() {
        let mut b = Burst::new(cfg(), true);
        b.play(0);
        lead_at(&mut b, 0, 1250);
        let h = b.horizon(1250 * MS);
        b.play(1300 * MS);
        assert_eq!(b.lead(), Duration::ZERO);
        assert_eq!(b.horizon(1300 * MS), h);
        assert_eq!(lead_at(&mut b, 1300, 1550), Duration::from_secs(2));
    }

    #[test]
    fn a_zero_ramp_bursts_in_one_round() {
        let mut c = cfg();
        c.ramp = Duration::ZERO;
        let mut b = Burst::new(c, true);
        b.play(0);
        assert_eq!(b.horizon(MS), MS + 2 * S + MS);
    }

    #[test]
    fn who_may_burst() {
        use Carrier::*;
        assert!(overbuffer_allowed(Tcp, None, false));
        assert!(!overbuffer_allowed(Tcp, Some(false), false));
        assert!(overbuffer_allowed(ReliableUdp, None, false));
        assert!(!overbuffer_allowed(ReliableUdp, Some(false), true));
        assert!(!overbuffer_allowed(Udp, None, false));
        assert!(overbuffer_allowed(Udp, Some(true), false));
        assert!(overbuffer_allowed(Udp, None, true));
        assert!(!overbuffer_allowed(Udp, Some(false), true));
        assert_eq!(dynamic_rate_reply(None, true), None);
        assert_eq!(dynamic_rate_reply(Some(true), true), Some("1"));
        assert_eq!(dynamic_rate_reply(Some(true), false), Some("0"));
        assert_eq!(dynamic_rate_reply(Some(false), true), Some("0"));
    }

    #[test]
    fn prebuffer_and_speed_as_dss_answered() {
        let s = Duration::from_secs;
        // A seek to 10 s whose key frame is at 8.5 s: backed up 1.5 s.
        assert_eq!(
            prebuffer_backup(s(10), Duration::from_millis(8500), Some(3.0)),
            Some(Duration::from_millis(1500))
        );
        // A key frame 5 s back: no more than maxtime.
        assert_eq!(prebuffer_backup(s(10), s(5), Some(3.0)), Some(s(3)));
        assert_eq!(prebuffer_backup(s(10), s(10), Some(3.0)), Some(Duration::ZERO));
        assert_eq!(prebuffer_backup(s(10), s(8), None), None);
        assert_eq!(granted_speed(Some(2.0), true, 4.0), 2.0);
        assert_eq!(granted_speed(Some(10.0), true, 4.0), 4.0);
        assert_eq!(granted_speed(Some(2.0), false, 4.0), 1.0);
        assert_eq!(granted_speed(Some(0.0), true, 4.0), 1.0);
        assert_eq!(granted_speed(Some(-2.0), true, 4.0), 1.0);
        assert_eq!(granted_speed(None, true, 4.0), 1.0);
        assert_eq!(granted_speed(Some(0.5), true, 4.0), 0.5);
        assert_eq!(speed_offset(s(10), 2.0), s(5));
        assert_eq!(speed_offset(s(10), 1.0), s(10));
        assert_eq!(speed_offset(s(10), 0.0), s(10));
    }
}
