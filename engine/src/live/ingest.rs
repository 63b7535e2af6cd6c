//! A publisher's RTP and RTCP as they arrive, checked and parsed once:
//! whatever comes on a broadcast's channels or UDP ports is either a
//! [`LivePacket`] for the reflector or refused, counted, and dropped. A
//! publisher that sends garbage, another SSRC, a payload type its SDP did
//! not announce, or more bytes than its budget disturbs nobody but itself.

use std::sync::Arc;

use bytes::Bytes;
use loader::Span;
use proto::{rtcp, rtp};

use super::{Description, LivePacket};
use crate::source::Nanos;

/// The default ceiling on what one publisher may send, in bits a second:
/// far above any encoder's output on an edge box, far below what a flood
/// over loopback or a LAN reaches.
pub const DEFAULT_MAX_BITRATE: u64 = 100_000_000;

/// Why a datagram or frame from a publisher was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("not an RTP packet: {0}")]
    Malformed(rtp::RtpError),
    #[error("for no stream of the broadcast")]
    NoStream,
    #[error("payload type {0} was not announced for the stream")]
    PayloadType(u8),
    #[error("SSRC {got:08X}, but the stream is {want:08X}")]
    Ssrc { got: u32, want: u32 },
    #[error("past the publisher's byte budget")]
    OverBudget,
}

/// What a broadcast's ingest counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// RTP packets taken, and their bytes (headers included).
    pub packets: u64,
    pub bytes: u64,
    /// Packets refused, by why.
    pub malformed: u64,
    pub wrong_stream: u64,
    pub over_budget: u64,
    /// Sender reports read.
    pub reports: u64,
    /// Copies of taken packets a shard's full live channel had no room
    /// for (counted by the control core, which fans them out).
    pub channel_full: u64,
}

impl Counters {
    pub fn refused(&self) -> u64 {
        self.malformed + self.wrong_stream + self.over_budget
    }
}

#[derive(Debug, Clone, Copy)]
struct StreamIn {
    /// The SSRC the stream's packets carry: the one the publisher's SETUP
    /// named, else the first one seen.
    ssrc: Option<u32>,
    /// Whether the last packet ended a frame: the next one starts one.
    after_marker: bool,
    /// Added to every timestamp: nothing, unless the stream continues a
    /// publisher's that left ([`Ingest::continue_from`]).
    shift: u32,
    /// The previous publisher's last timestamp (shifted) and its arrival,
    /// until this stream's first packet sets the shift from it.
    resume: Option<(u32, Nanos)>,
    /// The newest timestamp taken (shifted), and its arrival.
    last: Option<(u32, Nanos)>,
}

/// A token bucket of bytes, filled at the budget's rate up to one second's
/// worth.
#[derive(Debug, Clone, Copy)]
struct Budget {
    bytes_per_sec: u64,
    tokens: u64,
    at: Nanos,
}

impl Budget {
    fn take(&mut self, n: u64, now: Nanos) -> bool {
        let elapsed = now.saturating_sub(self.at);
        let fill = (u128::from(elapsed) * u128::from(self.bytes_per_sec) / 1_000_000_000) as u64;
        if fill > 0 {
            self.tokens = (self.tokens + fill).min(self.bytes_per_sec);
            self.at = now;
        }
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }
}

/// A broadcast's ingest.
#[derive(Debug)]
pub struct Ingest {
    desc: Arc<Description>,
    streams: Vec<StreamIn>,
    budget: Budget,
    pub counters: Counters,
    /// When the last packet was taken (or the ingest began).
    pub last_packet: Nanos,
}

impl Ingest {
    /// The ingest of `desc`, allowed `max_bitrate` bits a second, from `now`.
    pub fn new(desc: Arc<Description>, max_bitrate: u64, now: Nanos) -> Ingest {
        let bytes_per_sec = (max_bitrate / 8).max(1);
        let streams = vec![
            StreamIn {
                ssrc: None,
                after_marker: true,
                shift: 0,
                resume: None,
                last: None,
            };
            desc.tracks.len()
        ];
        Ingest {
            desc,
            streams,
            budget: Budget {
                bytes_per_sec,
                tokens: bytes_per_sec,
                at: now,
            },
            counters: Counters::default(),
            last_packet: now,
        }
    }

    /// Binds stream `track` to the SSRC its SETUP named.
    pub fn expect_ssrc(&mut self, track: usize, ssrc: u32) {
        if let Some(s) = self.streams.get_mut(track) {
            s.ssrc = Some(ssrc);
        }
    }

    /// This ingest continues a broadcast whose publisher left: `last` is,
    /// per stream, the newest timestamp the broadcast carried and when it
    /// came. Each stream's timestamps are shifted to go on from there by the
    /// time that passed, so viewers see one clock, not the new publisher's.
    pub fn continue_from(&mut self, last: &[Option<(u32, Nanos)>]) {
        for (s, l) in self.streams.iter_mut().zip(last) {
            s.resume = *l;
        }
    }

    /// Per stream, the newest timestamp taken (as viewers see it) and when.
    pub fn last_timestamps(&self) -> Vec<Option<(u32, Nanos)>> {
        self.streams.iter().map(|s| s.last.or(s.resume)).collect()
    }

    /// Takes an RTP packet for stream `track`, or says why not (and counts
    /// it either way). The packet's bytes are copied here, once.
    pub fn rtp(&mut self, track: usize, data: &[u8], now: Nanos) -> Result<LivePacket, Refused> {
        self.rtp_with(track, data, now, || Bytes::copy_from_slice(data))
    }

    /// As [`rtp`](Self::rtp), for a packet the caller already owns as
    /// `Bytes` (a channel's, written once by its broadcaster): kept as it
    /// is, not copied.
    pub fn rtp_owned(&mut self, track: usize, data: Bytes, now: Nanos) -> Result<LivePacket, Refused> {
        let owned = data.clone();
        self.rtp_with(track, &data, now, move || owned)
    }

    fn rtp_with(
        &mut self,
        track: usize,
        data: &[u8],
        now: Nanos,
        own: impl FnOnce() -> Bytes,
    ) -> Result<LivePacket, Refused> {
        let result = self.check(track, data, now, own);
        match &result {
            Ok(_) => {
                self.counters.packets += 1;
                self.counters.bytes += data.len() as u64;
                self.last_packet = now;
            }
            Err(Refused::Malformed(_)) => self.counters.malformed += 1,
            Err(Refused::OverBudget) => self.counters.over_budget += 1,
            Err(_) => self.counters.wrong_stream += 1,
        }
        result
    }

    fn check(
        &mut self,
        track: usize,
        data: &[u8],
        now: Nanos,
        own: impl FnOnce() -> Bytes,
    ) -> Result<LivePacket, Refused> {
        let pkt = rtp::Packet::new_checked(data).map_err(Refused::Malformed)?;
        let t = self.desc.tracks.get(track).ok_or(Refused::NoStream)?;
        let s = self.streams.get_mut(track).ok_or(Refused::NoStream)?;
        let pt = pkt.payload_type();
        if !t.payload_types.contains(&pt) {
            return Err(Refused::PayloadType(pt));
        }
        let ssrc = pkt.ssrc();
        match s.ssrc {
            Some(want) if want != ssrc => return Err(Refused::Ssrc { got: ssrc, want }),
            Some(_) => {}
            None => s.ssrc = Some(ssrc),
        }
        if !self.budget.take(data.len() as u64, now) {
            return Err(Refused::OverBudget);
        }
        let mut timestamp = pkt.timestamp();
        if let Some((prev, at)) = s.resume.take() {
            let advance = u128::from(now.saturating_sub(at)) * u128::from(t.clock_rate) / 1_000_000_000;
            // At least one tick on: never the same instant twice.
            let expected = prev.wrapping_add((advance as u32).max(1));
            s.shift = expected.wrapping_sub(timestamp);
        }
        timestamp = timestamp.wrapping_add(s.shift);
        s.last = Some((timestamp, now));
        let payload = pkt.payload();
        let frame_start = s.after_marker;
        s.after_marker = pkt.marker();
        let key = t.codec.is_key(payload, frame_start);
        Ok(LivePacket {
            payload: Span {
                offset: pkt.header_len() as u64,
                len: payload.len() as u32,
            },
            track: track as u8,
            payload_type: pt,
            marker: pkt.marker(),
            timestamp,
            frame_start,
            key,
            data: own(),
        })
    }

    /// Reads RTCP from the publisher for stream `track`: the NTP time and
    /// RTP timestamp of the stream's newest sender report, if it has one.
    /// Anything that does not parse is ignored.
    pub fn rtcp(&mut self, track: usize, data: &[u8]) -> Option<(u64, u32)> {
        let want = self.streams.get(track)?.ssrc;
        let shift = self.streams.get(track)?.shift;
        let packets = rtcp::parse_compound(data).ok()?;
        let mut found = None;
        for p in packets {
            if let rtcp::RtcpPacket::SenderReport { ssrc, info, .. } = p {
                if want.is_none_or(|w| w == ssrc) {
                    found = Some((info.ntp, info.rtp_ts.wrapping_add(shift)));
                }
            }
        }
        if found.is_some() {
            self.counters.reports += 1;
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::describe;

    fn ingest(max_bitrate: u64) -> Ingest {
        let sdp = "v=0\r\ns=x\r\nt=0 0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n";
        let desc = Arc::new(describe::parse(1, "/live/x", None, sdp.as_bytes()).unwrap());
        Ingest::new(desc, max_bitrate, 0)
    }

    fn packet(pt: u8, ssrc: u32, marker: bool, payload: &[u8]) -> Vec<u8> {
        let mut p = rtp::Header {
            marker,
            payload_type: pt,
            sequence: 1,
            timestamp: 90,
            ssrc,
        }
        .to_bytes()
        .to_vec();
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn packets_are_checked_once_and_refusals_counted() {
        let mut i = ingest(DEFAULT_MAX_BITRATE);
        let first = i.rtp(0, &packet(96, 7, true, &[0x65, 1, 2]), 10).unwrap();
        assert!(first.key && first.frame_start && first.marker);
        assert_eq!((first.payload.offset, first.payload.len), (12, 3));
        assert_eq!(&first.data[12..], &[0x65, 1, 2]);
        let next = i.rtp(0, &packet(96, 7, false, &[0x41, 1]), 20).unwrap();
        assert!(!next.key && next.frame_start, "after a marker a frame starts");
        let middle = i.rtp(0, &packet(96, 7, true, &[0x41, 2]), 30).unwrap();
        assert!(!middle.frame_start);
        assert!(matches!(i.rtp(0, b"\x00garbage", 40), Err(Refused::Malformed(_))));
        assert_eq!(
            i.rtp(0, &packet(96, 8, true, &[1]), 40).unwrap_err(),
            Refused::Ssrc { got: 8, want: 7 }
        );
        assert_eq!(
            i.rtp(0, &packet(97, 7, true, &[1]), 40).unwrap_err(),
            Refused::PayloadType(97)
        );
        assert_eq!(i.rtp(3, &packet(96, 7, true, &[1]), 40).unwrap_err(), Refused::NoStream);
        let c = i.counters;
        assert_eq!((c.packets, c.malformed, c.wrong_stream, c.refused()), (3, 1, 3, 4));
        assert_eq!(i.last_packet, 30);
    }

    #[test]
    fn a_publisher_that_comes_back_continues_the_clock() {
        let mut first = ingest(DEFAULT_MAX_BITRATE);
        let mut p = packet(96, 7, true, &[0x65]);
        first.rtp(0, &p, 0).unwrap();
        let last = first.last_timestamps();
        assert_eq!(last, [Some((90, 0))]);
        // The next publisher starts at its own random timestamp, half a
        // second later (45,000 ticks of 90 kHz).
        let mut next = ingest(DEFAULT_MAX_BITRATE);
        next.continue_from(&last);
        p[4..8].copy_from_slice(&4_000_000_000u32.to_be_bytes());
        assert_eq!(next.rtp(0, &p, 500_000_000).unwrap().timestamp, 90 + 45_000);
        p[4..8].copy_from_slice(&4_000_003_600u32.to_be_bytes());
        assert_eq!(next.rtp(0, &p, 540_000_000).unwrap().timestamp, 90 + 45_000 + 3_600);
    }

    #[test]
    fn a_flood_is_held_to_the_budget() {
        // 80 kbit/s: 10,000 bytes a second, a second's worth at once.
        let mut i = ingest(80_000);
        let p = packet(96, 7, true, &[0x41; 988]);
        let taken = (0..100).filter(|_| i.rtp(0, &p, 0).is_ok()).count();
        assert_eq!(taken, 10);
        assert_eq!(i.counters.over_budget, 90);
        // Half a second later, half a second's worth more.
        let taken = (0..100).filter(|_| i.rtp(0, &p, 500_000_000).is_ok()).count();
        assert_eq!(taken, 5);
    }
}
