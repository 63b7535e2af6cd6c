//! A shard's copy of a broadcast's recent packets: what its viewers read.
//!
//! Each shard with the broadcast keeps one, fed by the control core in
//! order. It holds handles to the publisher's buffers, never copies of
//! them, so every shard's replica together costs the payload once.
//!
//! Packets are numbered from the broadcast's start (the ring index); a
//! viewer's cursor is such a number. The replica keeps the current group of
//! pictures (from the latest key frame of its key stream) and, before it,
//! what fits in [`BUFFER_AGE`](super::BUFFER_AGE) and
//! [`BUFFER_BYTES`](super::BUFFER_BYTES); the current group is kept past
//! those bounds up to twice them, so a joining viewer always finds a key
//! frame unless the publisher sends none for that long.

use std::collections::VecDeque;
use std::sync::Arc;

use smallvec::SmallVec;

use super::{Description, LivePacket};
use crate::pacer::SessionKey;
use crate::source::Nanos;

/// A packet as held, with when it reached the shard.
#[derive(Debug, Clone)]
pub struct Held {
    pub packet: LivePacket,
    pub arrival: Nanos,
}

#[derive(Debug, Clone, Copy)]
struct Report {
    /// The publisher's NTP time, in nanoseconds since 1900.
    ntp_ns: u64,
    rtp_ts: u32,
}

/// A shard's replica of one broadcast.
#[derive(Debug)]
pub struct Replica {
    pub desc: Arc<Description>,
    packets: VecDeque<Held>,
    /// Ring index of `packets[0]`.
    base: u64,
    bytes: usize,
    /// Ring index of the first packet of the latest key frame's access unit.
    last_key: Option<u64>,
    /// Per stream, the ring index of its current frame's first packet.
    frame_start: SmallVec<[u64; 4]>,
    /// Per stream, its newest sender report.
    reports: SmallVec<[Option<Report>; 4]>,
    /// The publisher's NTP clock minus this process's `now`, from the
    /// newest report: one offset for every stream, so that their RTP times
    /// keep the publisher's synchronisation.
    ntp_offset: Option<i128>,
    /// Per stream, the newest packet's timestamp and arrival, for the RTP
    /// time before any sender report came.
    latest: SmallVec<[Option<(u32, Nanos)>; 4]>,
    max_age: Nanos,
    max_bytes: usize,
    /// The publisher is gone: what is here is all there will be.
    pub ended: bool,
    /// When the last packet came (or the replica was made).
    pub last_arrival: Nanos,
    /// Viewers that have sent everything there is and wait for more.
    pub idle: Vec<SessionKey>,
    /// Packets received since [`take_received`](Self::take_received).
    received: u64,
}

/// Nanoseconds since 1900 of a 32.32 NTP timestamp.
fn ntp_ns(ntp: u64) -> u64 {
    (ntp >> 32) * 1_000_000_000 + (((ntp & 0xffff_ffff) * 1_000_000_000) >> 32)
}

impl Replica {
    pub fn new(desc: Arc<Description>, now: Nanos, max_age: Nanos, max_bytes: usize) -> Replica {
        let n = desc.tracks.len();
        Replica {
            desc,
            packets: VecDeque::new(),
            base: 0,
            bytes: 0,
            last_key: None,
            frame_start: SmallVec::from_elem(0, n),
            reports: SmallVec::from_elem(None, n),
            ntp_offset: None,
            latest: SmallVec::from_elem(None, n),
            max_age,
            max_bytes,
            ended: false,
            last_arrival: now,
            idle: Vec::new(),
            received: 0,
        }
    }

    /// Ring index of the oldest packet held.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Ring index the next packet will have.
    pub fn head(&self) -> u64 {
        self.base + self.packets.len() as u64
    }

    pub fn get(&self, index: u64) -> Option<&Held> {
        self.packets.get(usize::try_from(index.checked_sub(self.base)?).ok()?)
    }

    /// Where a viewer starts: the first packet of the latest key frame.
    pub fn start(&self) -> Option<u64> {
        self.last_key.filter(|&k| k >= self.base)
    }

    pub fn len(&self) -> usize {
        self.packets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }

    /// Payload bytes held (whole datagrams).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Packets received since the last call.
    pub fn take_received(&mut self) -> u64 {
        std::mem::take(&mut self.received)
    }

    /// Appends a packet that arrived at `now`, and lets go of what the
    /// bounds no longer keep.
    pub fn push(&mut self, packet: LivePacket, now: Nanos) {
        let index = self.head();
        let track = usize::from(packet.track);
        if track >= self.frame_start.len() {
            return;
        }
        if packet.frame_start {
            self.frame_start[track] = index;
        }
        if packet.key && packet.track == self.desc.key_track {
            self.last_key = Some(self.frame_start[track]);
        }
        self.latest[track] = Some((packet.timestamp, now));
        self.bytes += packet.data.len();
        self.packets.push_back(Held { packet, arrival: now });
        self.last_arrival = now;
        self.received += 1;
        self.evict(now);
    }

    fn evict(&mut self, now: Nanos) {
        while let Some(front) = self.packets.front() {
            let age = now.saturating_sub(front.arrival);
            if self.bytes <= self.max_bytes && age <= self.max_age {
                break;
            }
            let in_current_gop = self.last_key.is_some_and(|k| self.base >= k);
            if in_current_gop && self.bytes <= 2 * self.max_bytes && age <= 2 * self.max_age {
                break;
            }
            self.bytes -= front.packet.data.len();
            self.packets.pop_front();
            self.base += 1;
        }
        if self.last_key.is_some_and(|k| k < self.base) {
            self.last_key = None;
        }
    }

    /// The publisher's sender report for stream `track`, received at `at`.
    pub fn report(&mut self, track: usize, ntp: u64, rtp_ts: u32, at: Nanos) {
        let Some(slot) = self.reports.get_mut(track) else {
            return;
        };
        let ntp_ns = ntp_ns(ntp);
        *slot = Some(Report { ntp_ns, rtp_ts });
        self.ntp_offset = Some(i128::from(ntp_ns) - i128::from(at));
    }

    /// The RTP timestamp of stream `track` at `now`, on the publisher's
    /// clock: from its sender reports, else from the newest packet.
    pub fn rtp_time_at(&self, track: usize, now: Nanos) -> Option<u32> {
        let clock = i128::from(self.desc.tracks.get(track)?.clock_rate);
        let advance = |from: u32, ns: i128| from.wrapping_add((ns * clock / 1_000_000_000) as i64 as u32);
        if let (Some(Some(r)), Some(offset)) = (self.reports.get(track), self.ntp_offset) {
            let publisher_now = i128::from(now) + offset;
            return Some(advance(r.rtp_ts, publisher_now - i128::from(r.ntp_ns)));
        }
        let (ts, at) = (*self.latest.get(track)?)?;
        Some(advance(ts, i128::from(now) - i128::from(at)))
    }

    /// The timestamp of stream `track`'s first packet at or after `index`.
    pub fn first_timestamp(&self, track: usize, index: u64) -> Option<u32> {
        let from = usize::try_from(index.saturating_sub(self.base)).ok()?;
        self.packets
            .range(from.min(self.packets.len())..)
            .find(|h| usize::from(h.packet.track) == track)
            .map(|h| h.packet.timestamp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::describe;
    use bytes::Bytes;
    use loader::Span;

    const MS: Nanos = 1_000_000;

    fn replica(max_bytes: usize) -> Replica {
        let sdp = "v=0\r\ns=x\r\nt=0 0\r\nm=audio 0 RTP/AVP 97\r\na=rtpmap:97 L16/8000\r\n\
                   m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n";
        let desc = Arc::new(describe::parse(1, "/live/x", None, sdp.as_bytes()).unwrap());
        assert_eq!(desc.key_track, 1, "the video stream gives the key frames");
        Replica::new(desc, 0, 1_000 * MS, max_bytes)
    }

    fn packet(track: u8, frame_start: bool, key: bool) -> LivePacket {
        LivePacket {
            data: Bytes::from(vec![0u8; 112]),
            payload: Span { offset: 12, len: 100 },
            track,
            payload_type: 96,
            marker: true,
            timestamp: 0,
            frame_start,
            key,
        }
    }

    #[test]
    fn keeps_the_current_gop_and_a_bounded_buffer() {
        let mut r = replica(1 << 20);
        r.push(packet(1, true, false), 0);
        assert_eq!(r.start(), None, "no key frame yet");
        // A key frame's access unit: parameter sets first, then the slice.
        r.push(packet(1, true, false), 10 * MS);
        r.push(packet(0, true, true), 11 * MS);
        r.push(packet(1, false, true), 12 * MS);
        assert_eq!(r.start(), Some(1), "the first packet of the key frame's access unit");
        // Audio key frames do not move the start.
        r.push(packet(0, true, true), 13 * MS);
        assert_eq!(r.start(), Some(1));
        // Old packets go after the age bound; the current GOP stays (up to
        // twice the bound).
        for t in 0..15 {
            r.push(packet(1, true, false), (100 + t * 100) * MS);
        }
        assert_eq!(r.base(), 1, "the current GOP is kept past the age bound");
        assert_eq!(r.start(), Some(1));
        r.push(packet(1, true, false), 2_100 * MS);
        assert!(r.base() > 1 && r.start().is_none(), "but not past twice the bound");
        r.push(packet(1, true, true), 2_200 * MS);
        let key = r.head() - 1;
        r.push(packet(1, true, false), 3_500 * MS);
        assert_eq!(r.base(), key, "everything before the new key frame went");
        assert_eq!(r.start(), Some(key));
        assert_eq!(r.bytes(), 2 * 112);
    }

    #[test]
    fn the_byte_bound_holds_too() {
        let mut r = replica(10 * 112);
        for i in 0..30 {
            r.push(packet(1, true, i % 10 == 0), i * MS);
        }
        assert!(r.bytes() <= 2 * 10 * 112, "{}", r.bytes());
        assert_eq!(r.start(), Some(20));
        assert_eq!(r.get(r.base()).unwrap().arrival, r.base() * MS);
    }
}
