//! A session's retransmission, both kinds, over one history per stream.
//!
//! - **NACK/RTX**, per stream set up with `RTP/AVPF` over UDP: a
//!   [`History`] of what went, a [`NackResponder`] that decides what to
//!   send again, and the RTX stream (its own SSRC, sequence numbers and
//!   payload type) the resends go out on; one [`SessionBudget`] for the
//!   session.
//! - **Reliable UDP** (DSS's, `x-Retransmit: our-retransmit` in SETUP),
//!   per stream that asked: the same [`History`], and a [`Resender`] that
//!   keeps the numbers, sizes and times of what is unacknowledged; one
//!   [`Congestion`] (RTT, RTO, window) for the session. What stays
//!   unacknowledged past the RTO goes again as it first went, from the
//!   history, on the stream itself.
//!
//! The shard core makes one only for a session that asked, so a plain
//! `RTP/AVP` session keeps no history and pays nothing per packet; it
//! records each packet as the round queues it ([`RtxSender::keep`]), turns
//! each NACK into RTX packets for the same round ([`RtxSender::answer`]),
//! takes each `qtak` ([`RtxSender::on_ack`]), and asks for what is due
//! again when the earliest RTO passes ([`RtxSender::resend_due`]).

use std::time::Duration;

use proto::qtss::Ack;
use proto::rtcp::LostSeqs;
use proto::rtp::HEADER_LEN;
use proto::rtx::{self, OSN_LEN};
use smallvec::SmallVec;

use super::history::{History, HistoryConfig};
use super::nack::{NackConfig, NackResponder, NackStats, SessionBudget, TokenBucket};
use super::offer::RTX_TIME_MS;
use super::reliable::{self, Congestion, ReliableStats, Resender, WindowSizes};
use crate::source::{Nanos, Outgoing, Payload};

/// `qtak` packets a session's streams may send per second, with as many
/// at once.
pub const ACKS_PER_SEC: u64 = 250;

/// What a stream retransmits with, from the SDP offer and the seeds drawn
/// at SETUP.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RtxSetup {
    /// The media stream's SSRC, which NACKs and acks name.
    pub media_ssrc: u32,
    /// How: RTX packets of their own, or reliable UDP's resends.
    pub kind: RepairKind,
    /// The stream's bit rate (bits per second) and packet rate, as far as
    /// they are known: they size the history and the resend budget.
    pub bit_rate: u64,
    pub packet_rate: f64,
    /// Whether the stream is video: reliable UDP lets its packets go
    /// sooner (DSS's `drop_all_video_delay`).
    pub video: bool,
}

/// How a stream retransmits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepairKind {
    /// RFC 4588 RTX packets on their own SSRC and payload type, numbered
    /// from `first_seq`, in answer to NACKs.
    Rtx { rtx_pt: u8, rtx_ssrc: u32, first_seq: u16 },
    /// DSS's reliable UDP: what is not acknowledged goes again.
    Reliable,
}

impl RtxSetup {
    /// The RTX stream's SSRC, for NACK/RTX.
    pub fn rtx_ssrc(&self) -> Option<u32> {
        match self.kind {
            RepairKind::Rtx { rtx_ssrc, .. } => Some(rtx_ssrc),
            RepairKind::Reliable => None,
        }
    }
}

/// What decides what goes again.
#[derive(Debug)]
enum Mode {
    Rtx {
        rtx_pt: u8,
        rtx_ssrc: u32,
        next_seq: u16,
        responder: NackResponder,
    },
    Reliable(Resender),
}

/// One stream's retransmission.
#[derive(Debug)]
pub struct RtxStream {
    pub setup: RtxSetup,
    history: History,
    mode: Mode,
    /// Packets queued again (RTX packets, or reliable UDP's resends).
    pub sent: u64,
}

impl RtxStream {
    /// A stream that may be sent up to `lead` ahead of real time.
    pub fn new(setup: RtxSetup, cfg: NackConfig, lead: Duration) -> RtxStream {
        // Reliable UDP keeps a packet as long as DSS did, RTX as long as
        // the SDP's rtx-time says, each past the packet's due time.
        let keep_ms = match setup.kind {
            RepairKind::Rtx { .. } => u64::from(RTX_TIME_MS),
            RepairKind::Reliable => reliable::drop_all_ms(setup.video) as u64,
        };
        let history = History::new(HistoryConfig::for_rate(
            setup.packet_rate,
            Duration::from_millis(keep_ms),
            lead,
        ));
        let mode = match setup.kind {
            RepairKind::Rtx {
                rtx_pt,
                rtx_ssrc,
                first_seq,
            } => Mode::Rtx {
                rtx_pt,
                rtx_ssrc,
                next_seq: first_seq,
                responder: NackResponder::new(cfg, setup.bit_rate, setup.packet_rate),
            },
            // As many in flight as the history keeps: a resend needs both.
            RepairKind::Reliable => Mode::Reliable(Resender::new(history.config().max_packets)),
        };
        RtxStream {
            setup,
            history,
            mode,
            sent: 0,
        }
    }

    /// How far ahead of real time the stream may be sent while its history
    /// keeps each packet answerable until its due time plus the keep time.
    pub fn covered_lead(&self) -> Duration {
        self.history.config().covered_lead(self.setup.packet_rate)
    }

    /// The NACK figures (none for reliable UDP).
    pub fn stats(&self) -> NackStats {
        match &self.mode {
            Mode::Rtx { responder, .. } => responder.stats(),
            Mode::Reliable(_) => NackStats::default(),
        }
    }

    /// The reliable-UDP figures (none for NACK/RTX).
    pub fn reliable_stats(&self) -> ReliableStats {
        match &self.mode {
            Mode::Reliable(r) => r.stats(),
            Mode::Rtx { .. } => ReliableStats::default(),
        }
    }
}

/// A session's retransmission, by stream index (`None` for a stream that
/// did not negotiate it).
#[derive(Debug)]
pub struct RtxSender {
    streams: SmallVec<[Option<RtxStream>; 2]>,
    budget: SessionBudget,
    /// Reliable UDP's window and RTO, when a stream asked for it.
    congestion: Option<Congestion>,
    /// The window chosen from the movie's bit rate, set at each PLAY.
    window: u32,
    /// `qtak` packets taken, per second: an honest client acks a stream
    /// every 20 to 100 ms (the `qtsi` ack timeout); a flood past this is
    /// not read.
    acks: TokenBucket,
    /// The sequence numbers to send again of the NACK being answered.
    resend: Vec<u16>,
    /// Reliable UDP: the client's SSRC from its acks (0 before any), and
    /// when the ack timeout was last worked out, with the session's bytes
    /// sent by then (see [`server_info`](Self::server_info)).
    client_ssrc: u32,
    rate_mark: Option<(Nanos, u64)>,
}

impl RtxSender {
    /// A sender for streams `setups` (by stream index) of a session of
    /// `session_bit_rate` bits per second that may be sent up to `lead`
    /// ahead of real time (zero without Instant-On).
    pub fn new(setups: impl IntoIterator<Item = Option<RtxSetup>>, session_bit_rate: u64, lead: Duration) -> RtxSender {
        let cfg = NackConfig::default();
        let streams: SmallVec<[Option<RtxStream>; 2]> = setups
            .into_iter()
            .map(|s| s.map(|s| RtxStream::new(s, cfg, lead)))
            .collect();
        let reliable = streams.iter().flatten().any(|s| s.setup.kind == RepairKind::Reliable);
        RtxSender {
            streams,
            budget: SessionBudget::new(session_bit_rate, &cfg),
            // DSS's reliable_udp_slow_start, on by default.
            congestion: reliable.then(|| Congestion::new(true)),
            window: WindowSizes::default().for_bit_rate(session_bit_rate.min(u64::from(u32::MAX)) as u32),
            acks: TokenBucket::new(ACKS_PER_SEC, ACKS_PER_SEC),
            resend: Vec::new(),
            client_ssrc: 0,
            rate_mark: None,
        }
    }

    /// A PLAY: reliable UDP starts over (DSS's `ClearOutstandingPackets`
    /// and a window chosen from the movie's bit rate, in slow start).
    pub fn on_play(&mut self) {
        let Some(old) = self.congestion.as_ref() else {
            return;
        };
        let mut cc = Congestion::new(true);
        // The round trip learnt so far stays.
        cc.inherit_rtt(old);
        cc.set_window(self.window);
        for s in self.streams.iter_mut().flatten() {
            if let Mode::Reliable(r) = &mut s.mode {
                r.clear(&mut cc);
            }
        }
        self.congestion = Some(cc);
    }

    /// Whether the session must hold new packets back: reliable UDP's
    /// window is full.
    #[inline]
    pub fn is_flow_controlled(&self) -> bool {
        self.congestion.as_ref().is_some_and(Congestion::is_flow_controlled)
    }

    /// Whether a stream speaks reliable UDP.
    pub fn is_reliable(&self) -> bool {
        self.congestion.is_some()
    }

    /// Whether every stream of the session retransmits (by NACK/RTX or
    /// reliable UDP): only then may the session be sent ahead over UDP.
    pub fn covers_all(&self) -> bool {
        self.streams.iter().all(Option::is_some)
    }

    /// How far ahead of real time the session may be sent with every
    /// packet still answerable until its due time plus the keep time.
    pub fn covered_lead(&self) -> Duration {
        self.streams()
            .map(RtxStream::covered_lead)
            .min()
            .unwrap_or(Duration::ZERO)
    }

    /// Reliable UDP's window and round trip, for the figures.
    pub fn congestion(&self) -> Option<&Congestion> {
        self.congestion.as_ref()
    }

    pub fn streams(&self) -> impl Iterator<Item = &RtxStream> + '_ {
        self.streams.iter().flatten()
    }

    /// The stream index whose media SSRC is `ssrc`, if it retransmits.
    pub fn stream_of(&self, ssrc: u32) -> Option<usize> {
        self.streams
            .iter()
            .position(|s| s.as_ref().is_some_and(|s| s.setup.media_ssrc == ssrc))
    }

    /// Whether `ssrc` is one of the session's RTX streams.
    pub fn is_rtx_ssrc(&self, ssrc: u32) -> bool {
        self.streams().any(|s| s.setup.rtx_ssrc() == Some(ssrc))
    }

    /// The stream index whose media SSRC is `ssrc`, if it speaks reliable
    /// UDP.
    pub fn reliable_stream_of(&self, ssrc: u32) -> Option<usize> {
        self.stream_of(ssrc)
            .filter(|&i| matches!(&self.streams[i], Some(s) if matches!(s.mode, Mode::Reliable(_))))
    }

    /// Records a packet the round queued at `now` (due at `o.due`, which
    /// is later for a packet sent ahead).
    #[inline]
    pub fn keep(&mut self, o: &Outgoing<'_>, now: Nanos) {
        if let Some(Some(s)) = self.streams.get_mut(o.stream) {
            s.history.push_payload(&o.header, o.payload, now, o.due);
            if let (Mode::Reliable(r), Some(cc)) = (&mut s.mode, self.congestion.as_mut()) {
                let seq = u16::from_be_bytes([o.header[2], o.header[3]]);
                // Negative for a packet sent ahead: as in DSS's
                // `AddPacket`, it may wait that much longer for its ack.
                let late_ms = (now as i64 - o.due as i64) / 1_000_000;
                let drop_ms = reliable::drop_all_ms(s.setup.video);
                r.on_send(cc, seq, HEADER_LEN + o.payload.len(), late_ms, drop_ms, now);
            }
        }
    }

    /// Whether one more `qtak` may be read at `now`.
    pub fn take_ack(&mut self, now: Nanos) -> bool {
        self.acks.take(1, now)
    }

    /// A `qtak` for stream `stream` (the caller matched its SSRC and
    /// address).
    pub fn on_ack(&mut self, stream: usize, ack: &Ack<'_>, now: Nanos) {
        if let (Some(Some(s)), Some(cc)) = (self.streams.get_mut(stream), self.congestion.as_mut()) {
            if let Mode::Reliable(r) = &mut s.mode {
                r.on_ack_packet(cc, ack, now);
                self.client_ssrc = ack.receiver_ssrc;
            }
        }
    }

    /// Reliable UDP: what a sender report's `qtsi` tells the client, the
    /// client's SSRC as its acks gave it and the ack timeout in ms, worked
    /// out as DSS did whenever it updated the session's bit rate
    /// (`UpdateAckTimeout`), from the bits sent since the last call
    /// (`octets` is the session's total at `now`). `None` for a session
    /// not on reliable UDP.
    pub fn server_info(&mut self, octets: u64, now: Nanos) -> Option<(u32, u32)> {
        let cc = self.congestion.as_mut()?;
        if let Some((at, before)) = self.rate_mark {
            let interval_ms = now.saturating_sub(at) / 1_000_000;
            if interval_ms > 0 {
                let bits = octets.saturating_sub(before).saturating_mul(8).min(u64::from(u32::MAX)) as u32;
                cc.update_ack_timeout(bits, interval_ms);
            }
        }
        self.rate_mark = Some((now, octets));
        Some((self.client_ssrc, cc.ack_timeout_ms()))
    }

    /// When reliable UDP next has something to send again (or let go).
    pub fn next_resend(&self) -> Option<Nanos> {
        let cc = self.congestion.as_ref()?;
        self.streams
            .iter()
            .flatten()
            .filter_map(|s| match &s.mode {
                Mode::Reliable(r) => r.next_deadline(cc),
                Mode::Rtx { .. } => None,
            })
            .min()
    }

    /// Reliable UDP: each packet unacknowledged past the RTO goes to
    /// `send` as it first went (stream index, header, payload). Returns
    /// how many went.
    pub fn resend_due(&mut self, now: Nanos, mut send: impl FnMut(usize, &[u8; HEADER_LEN], Payload<'_>)) -> usize {
        let Some(cc) = self.congestion.as_mut() else {
            return 0;
        };
        let mut n = 0;
        for (i, s) in self.streams.iter_mut().enumerate() {
            let Some(s) = s else { continue };
            let Mode::Reliable(r) = &mut s.mode else { continue };
            self.resend.clear();
            r.poll(cc, now, &mut self.resend);
            for &seq in &self.resend {
                // Kept as long as it is in flight; one the history let go
                // (pushed out by a burst) cannot go again.
                let Some(p) = s.history.resend(seq, now) else { continue };
                send(i, &p.header, p.payload());
                s.sent += 1;
                n += 1;
            }
        }
        n
    }

    /// Sets the round trip to the client, from its receiver reports.
    pub fn set_rtt(&mut self, rtt: Duration) {
        for s in self.streams.iter_mut().flatten() {
            if let Mode::Rtx { responder, .. } = &mut s.mode {
                responder.set_rtt(rtt);
            }
        }
    }

    /// Answers a NACK of stream `stream` for `lost`: each packet to send
    /// again goes to `send` as its RTX header (12 bytes), the original
    /// sequence number and the original payload. Returns how many went.
    pub fn answer(
        &mut self,
        stream: usize,
        lost: LostSeqs<'_>,
        now: Nanos,
        mut send: impl FnMut(&[u8; HEADER_LEN], [u8; OSN_LEN], Payload<'_>),
    ) -> usize {
        let Some(Some(s)) = self.streams.get_mut(stream) else {
            return 0;
        };
        let Mode::Rtx {
            rtx_pt,
            rtx_ssrc,
            next_seq,
            responder,
        } = &mut s.mode
        else {
            return 0;
        };
        self.resend.clear();
        responder.respond(lost, &mut s.history, &mut self.budget, now, &mut self.resend);
        for &seq in &self.resend {
            let Some(r) = s.history.resend(seq, now) else { continue };
            let prefix = rtx::header(&r.header, *rtx_pt, *next_seq, *rtx_ssrc);
            *next_seq = next_seq.wrapping_add(1);
            s.sent += 1;
            let (head, osn) = prefix.split_at(HEADER_LEN);
            send(
                head.try_into().expect("split at the header length"),
                [osn[0], osn[1]],
                r.payload(),
            );
        }
        self.resend.len()
    }

    /// The NACK figures of all streams, added up.
    pub fn stats(&self) -> NackStats {
        self.streams().fold(NackStats::default(), |mut a, s| {
            let b = s.stats();
            a.nacks += b.nacks;
            a.requested += b.requested;
            a.resent += b.resent;
            a.duplicate += b.duplicate;
            a.rate_limited += b.rate_limited;
            a.too_old += b.too_old;
            a.never_sent += b.never_sent;
            a.truncated += b.truncated;
            a
        })
    }

    /// The reliable-UDP figures of all streams, added up.
    pub fn reliable_stats(&self) -> ReliableStats {
        self.streams().fold(ReliableStats::default(), |mut a, s| {
            let b = s.reliable_stats();
            a.sent += b.sent;
            a.acked += b.acked;
            a.resends += b.resends;
            a.early_resends += b.early_resends;
            a.expired += b.expired;
            a.acks_for_missing += b.acks_for_missing;
            a.evicted += b.evicted;
            a.acks_ignored += b.acks_ignored;
            a
        })
    }
}
