//! A session's NACK/RTX retransmission: per stream that negotiated it
//! (SETUP with `RTP/AVPF` over UDP), a [`History`] of what went, a
//! [`NackResponder`] that decides what to send again, and the RTX stream
//! (its own SSRC, sequence numbers and payload type) the resends go out on;
//! one [`SessionBudget`] for the session.
//!
//! The shard core makes one only for a session that asked, so a plain
//! `RTP/AVP` session keeps no history and pays nothing per packet; it
//! records each packet as the round queues it ([`RtxSender::keep`]) and
//! turns each NACK into RTX packets for the same round
//! ([`RtxSender::answer`]).

use std::time::Duration;

use proto::rtcp::LostSeqs;
use proto::rtp::HEADER_LEN;
use proto::rtx::{self, OSN_LEN};
use smallvec::SmallVec;

use super::history::{History, HistoryConfig};
use super::nack::{NackConfig, NackResponder, NackStats, SessionBudget};
use super::offer::RTX_TIME_MS;
use crate::source::{Nanos, Outgoing, Payload};

/// What a stream retransmits with, from the SDP offer and the seeds drawn
/// at SETUP.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RtxSetup {
    /// The media stream's SSRC, which NACKs name.
    pub media_ssrc: u32,
    pub rtx_pt: u8,
    pub rtx_ssrc: u32,
    pub first_seq: u16,
    /// The stream's bit rate (bits per second) and packet rate, as far as
    /// they are known: they size the history and the resend budget.
    pub bit_rate: u64,
    pub packet_rate: f64,
}

/// One stream's retransmission.
#[derive(Debug)]
pub struct RtxStream {
    pub setup: RtxSetup,
    next_seq: u16,
    history: History,
    responder: NackResponder,
    /// RTX packets queued.
    pub sent: u64,
}

impl RtxStream {
    pub fn new(setup: RtxSetup, cfg: NackConfig) -> RtxStream {
        RtxStream {
            setup,
            next_seq: setup.first_seq,
            history: History::new(HistoryConfig::for_rate(
                setup.packet_rate,
                Duration::from_millis(u64::from(RTX_TIME_MS)),
            )),
            responder: NackResponder::new(cfg, setup.bit_rate, setup.packet_rate),
            sent: 0,
        }
    }

    pub fn stats(&self) -> NackStats {
        self.responder.stats()
    }
}

/// A session's retransmission, by stream index (`None` for a stream that
/// did not negotiate it).
#[derive(Debug)]
pub struct RtxSender {
    streams: SmallVec<[Option<RtxStream>; 2]>,
    budget: SessionBudget,
    /// The sequence numbers to send again of the NACK being answered.
    resend: Vec<u16>,
}

impl RtxSender {
    /// A sender for streams `setups` (by stream index) of a session of
    /// `session_bit_rate` bits per second.
    pub fn new(setups: impl IntoIterator<Item = Option<RtxSetup>>, session_bit_rate: u64) -> RtxSender {
        let cfg = NackConfig::default();
        RtxSender {
            streams: setups.into_iter().map(|s| s.map(|s| RtxStream::new(s, cfg))).collect(),
            budget: SessionBudget::new(session_bit_rate, &cfg),
            resend: Vec::new(),
        }
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
        self.streams().any(|s| s.setup.rtx_ssrc == ssrc)
    }

    /// Records a packet the round queued at `now`.
    #[inline]
    pub fn keep(&mut self, o: &Outgoing<'_>, now: Nanos) {
        if let Some(Some(s)) = self.streams.get_mut(o.stream) {
            s.history.push_payload(&o.header, o.payload, now);
        }
    }

    /// Sets the round trip to the client, from its receiver reports.
    pub fn set_rtt(&mut self, rtt: Duration) {
        for s in self.streams.iter_mut().flatten() {
            s.responder.set_rtt(rtt);
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
        self.resend.clear();
        s.responder
            .respond(lost, &mut s.history, &mut self.budget, now, &mut self.resend);
        for &seq in &self.resend {
            let Some(r) = s.history.resend(seq, now) else { continue };
            let prefix = rtx::header(&r.header, s.setup.rtx_pt, s.next_seq, s.setup.rtx_ssrc);
            s.next_seq = s.next_seq.wrapping_add(1);
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
}
