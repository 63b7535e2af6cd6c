//! What a session plays: a *source* of RTP packets, and the packet a source
//! hands to the send round.
//!
//! A [`Source`] is an enum, not a trait object: the send round calls into it
//! for every session it serves, and a `match` there costs nothing where a
//! virtual call would stop inlining of the per-packet loop. Every kind of
//! source produces the same [`Outgoing`] packet: the stream it belongs to,
//! its 12-byte RTP header already written for the session, and its payload
//! as spans into a reference-counted [`Bytes`] owner. The send round keeps
//! one clone of each owner per round (not per packet) and hands the kernel
//! iovecs into it, so movies, live broadcasts, playlists and, later,
//! retransmissions all leave through one `sendmmsg` path without the round
//! looking anything up per packet.
//!
//! The per-stream state that turns a source's packet into this session's
//! packet is the same for every kind: [`Stream`] holds the session's SSRC,
//! its next sequence number (counted by the session, so pauses, seeks,
//! skipped packets and movie boundaries never open a gap a client would
//! count as loss) and the offset added to the source's timestamps.
//!
//! # The kinds
//!
//! - [`Source::Movie`]: a hinted movie on demand ([`MovieSource`], in
//!   `movie.rs`): packet recipes from the loader's cursor, paced by their
//!   hinted transmit times, the payload as spans of the movie's mapping.
//!
//! - [`Source::Live`]: a viewer of a reflected broadcast ([`LiveSource`],
//!   in `live.rs`): the control core parses each RTP packet of the
//!   publisher once into a `Bytes` and hands it to every shard, which keeps
//!   a [`Replica`](crate::live::Replica) of the broadcast's recent packets
//!   (the `Bytes` travel, the payload is never copied). A viewer is a cursor
//!   into its shard's replica plus one [`Stream`] per track: its own SSRC,
//!   its own sequence numbers and a timestamp offset from the publisher's
//!   clock to the viewer's random base, so only the 12-byte header is
//!   rewritten per viewer. A new viewer starts at the replica's newest key
//!   frame, is sent what lies between that and the live edge ahead of real
//!   time, and is then due whenever the replica has a packet past its
//!   cursor. Its payload is the packet's own `Bytes` with one span past the
//!   publisher's RTP header.
//!
//! One more kind is planned; it adds a variant here and nothing to the send
//! round:
//!
//! - `Channel(ChannelPlayback)` (a 24x7 playlist): the current movie's
//!   [`MovieSource`] and the playlist's position. At a movie's end it moves
//!   to the next movie (opened ahead of time, off the pacing cores, like any
//!   movie) and carries the [`Stream`]s over: the SSRCs and sequence numbers
//!   continue, and each timestamp offset is moved so that the next movie's
//!   first timestamp follows the last one sent by one frame time: timestamps
//!   only go forward. A playlist's movies must agree with the channel's SDP
//!   (codec and clock rate per stream), which is checked when it is loaded.

use bytes::Bytes;
use loader::Span;
use proto::rtp;

pub use loader::PacketFlags;

mod live;
mod movie;

pub use live::LiveSource;
pub use movie::MovieSource;

/// A monotonic instant, in nanoseconds, supplied by whoever drives the
/// state machine (the server's clock, or a test's simulated one).
pub type Nanos = u64;

/// Per-stream random values for a new stream: (SSRC, first sequence
/// number, timestamp offset).
pub type StreamSeeds = (u32, u16, u32);

/// One stream of a session as the client sees it: the RTP header fields the
/// session writes over whatever its source says, and what was sent, for the
/// RTCP sender reports.
#[derive(Debug, Clone)]
pub struct Stream {
    /// The track of the presentation it carries (the `trackID=` of its URL).
    pub track_id: u32,
    pub ssrc: u32,
    /// Sequence number of the next packet.
    pub next_seq: u16,
    /// Added to every timestamp of the source.
    pub ts_offset: u32,
    pub rtp_timescale: u32,
    /// RTP packets and payload octets sent (RFC 3550 6.4.1's sender counts).
    pub packets: u64,
    pub octets: u64,
}

impl Stream {
    pub fn new(track_id: u32, rtp_timescale: u32, (ssrc, seq, ts): StreamSeeds) -> Stream {
        Stream {
            track_id,
            ssrc,
            next_seq: seq,
            ts_offset: ts,
            rtp_timescale,
            packets: 0,
            octets: 0,
        }
    }

    /// The header of the stream's next packet, which is counted as sent.
    #[inline]
    pub fn next_header(
        &mut self,
        marker: bool,
        payload_type: u8,
        source_ts: u32,
        payload_len: usize,
    ) -> [u8; rtp::HEADER_LEN] {
        let header = rtp::Header {
            marker,
            payload_type,
            sequence: self.next_seq,
            timestamp: source_ts.wrapping_add(self.ts_offset),
            ssrc: self.ssrc,
        }
        .to_bytes();
        self.next_seq = self.next_seq.wrapping_add(1);
        self.packets += 1;
        self.octets += payload_len as u64;
        header
    }

    /// Takes back a packet counted by [`next_header`](Self::next_header)
    /// that never reached the network (the kernel refused it or its socket
    /// buffer was full), so sender reports count only what went. Its
    /// sequence number stays used: the receiver sees the loss as loss.
    pub fn unsend(&mut self, payload_len: usize) {
        self.packets = self.packets.saturating_sub(1);
        self.octets = self.octets.saturating_sub(payload_len as u64);
    }
}

/// What a PLAY started: the npt range and, per stream, the sequence number
/// and RTP timestamp at its start (for `Range` and `RTP-Info`).
#[derive(Debug, Clone, PartialEq)]
pub struct PlayStart {
    pub npt_start_ns: i64,
    pub npt_end_ns: Option<i64>,
    /// (track ID, seq, rtptime) per stream.
    pub streams: Vec<(u32, u16, u32)>,
}

/// A packet's payload: byte ranges of `owner`, in order. The owner is the
/// movie's mapping (or, later, a live packet's buffer); the send round keeps
/// a clone of it only once per round.
#[derive(Debug, Clone, Copy)]
pub struct Payload<'a> {
    pub owner: &'a Bytes,
    pub spans: &'a [Span],
}

impl<'a> Payload<'a> {
    /// Payload bytes in all.
    #[inline]
    pub fn len(&self) -> usize {
        self.spans.iter().map(|s| s.len as usize).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The payload's pieces, borrowed from the owner.
    pub fn slices(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        let owner: &'a [u8] = self.owner;
        self.spans.iter().map(move |s| s.bytes(owner))
    }
}

/// A packet ready to go, as every source hands it to the send round.
#[derive(Debug)]
pub struct Outgoing<'a> {
    /// Index of the session's stream (its set-up track) it belongs to.
    pub stream: usize,
    /// The RTP header as this session sends it.
    pub header: [u8; rtp::HEADER_LEN],
    pub payload: Payload<'a>,
    /// How late it is: the time it was polled at minus the time it was due.
    pub late_ns: u64,
    /// When it is due on the session's play clock: later than `now` for a
    /// packet sent ahead of real time. A retransmission history keeps such
    /// a packet until its due time (plus `rtx-time`), not its send time.
    pub due: Nanos,
    /// Key-frame, B-frame and repeat flags: what thinning and a live
    /// viewer's start look at.
    pub flags: PacketFlags,
}

/// Which of a movie's packets a round takes beyond those due: packets
/// sent ahead of real time (Instant-On) and packets left out (thinning).
/// Monomorphised: the plain round's [`All`] compiles to nothing.
pub trait Pick {
    /// Whether the next packet, due at `due` (later than the round's
    /// `now`), may go now. `false` leaves it, and all after it, for a
    /// later round.
    fn ahead(&mut self, due: Nanos) -> bool;
    /// Whether to send `packet` of stream `stream`, due at `due`. `false`
    /// leaves it out before it takes a sequence number, so the client sees
    /// contiguous numbers and counts no loss.
    fn keep(&mut self, stream: usize, packet: &loader::Packet, due: Nanos) -> bool;
    /// Whether the round honours the play's speed (`Speed`, see
    /// [`MovieSource::play_at_speed`]). A constant, so that the plain
    /// round, which never plays at another speed, pays nothing for it.
    const AT_SPEED: bool = false;
}

/// Every packet when due, none ahead: the plain round.
pub struct All;

impl Pick for All {
    #[inline(always)]
    fn ahead(&mut self, _: Nanos) -> bool {
        false
    }

    #[inline(always)]
    fn keep(&mut self, _: usize, _: &loader::Packet, _: Nanos) -> bool {
        true
    }
}

/// What a session plays. See the module documentation for the kinds.
pub enum Source {
    Movie(MovieSource),
    Live(LiveSource),
}

impl Source {
    pub fn streams(&self) -> &[Stream] {
        match self {
            Source::Movie(m) => m.streams(),
            Source::Live(l) => l.streams(),
        }
    }

    /// The streams, to take back packets that did not go (see
    /// [`Stream::unsend`]).
    pub fn streams_mut(&mut self) -> &mut [Stream] {
        match self {
            Source::Movie(m) => m.streams_mut(),
            Source::Live(l) => l.streams_mut(),
        }
    }

    pub fn is_playing(&self) -> bool {
        match self {
            Source::Movie(m) => m.is_playing(),
            Source::Live(l) => l.is_playing(),
        }
    }

    pub fn has_ended(&self) -> bool {
        match self {
            Source::Movie(m) => m.has_ended(),
            Source::Live(l) => l.has_ended(),
        }
    }

    /// When the media of a play that has ended is due at the client in
    /// full, if later than its last packet went (a movie sent ahead; see
    /// [`MovieSource::ended_due`]). A live source sends nothing ahead of
    /// its arrivals.
    pub fn ended_due(&self) -> Option<Nanos> {
        match self {
            Source::Movie(m) => m.ended_due(),
            Source::Live(_) => None,
        }
    }

    /// The RTP timestamp of stream `stream` that corresponds to `now`, on
    /// the same mapping RTP-Info uses: what a sender report says.
    pub fn rtp_time_now(&self, stream: usize, now: Nanos) -> Option<u32> {
        match self {
            Source::Movie(m) => m.rtp_time_now(stream, now),
            Source::Live(l) => l.rtp_time_now(stream, now),
        }
    }

    /// Starts or resumes sending; see [`MovieSource::play`].
    pub fn play(&mut self, now: Nanos, start_ns: Option<i64>, end_ns: Option<i64>) -> PlayStart {
        self.play_at_speed(now, start_ns, end_ns, 1.0)
    }

    /// As [`play`](Self::play) at `speed` (see
    /// [`MovieSource::play_at_speed`]); a live viewer plays at 1 whatever
    /// is asked.
    pub fn play_at_speed(&mut self, now: Nanos, start_ns: Option<i64>, end_ns: Option<i64>, speed: f64) -> PlayStart {
        match self {
            Source::Movie(m) => m.play_at_speed(now, start_ns, end_ns, speed),
            Source::Live(l) => l.play(now),
        }
    }

    /// The speed the play goes at: 1 but for a movie granted a `Speed`.
    pub fn speed(&self) -> f64 {
        match self {
            Source::Movie(m) => m.speed(),
            Source::Live(_) => 1.0,
        }
    }

    /// Stops sending; a later [`play`](Self::play) without a start resumes
    /// where it stopped. Returns the npt it stopped at.
    pub fn pause(&mut self, now: Nanos) -> i64 {
        match self {
            Source::Movie(m) => m.pause(now),
            Source::Live(l) => l.pause(now),
        }
    }

    /// When the next packet is due, if there is one and it is playing.
    #[inline]
    pub fn next_due(&mut self) -> Option<Nanos> {
        match self {
            Source::Movie(m) => m.next_due(),
            Source::Live(l) => l.next_due(),
        }
    }

    /// Hands every packet due at or before `now` to `send`, in order.
    /// Returns how many went.
    #[inline]
    pub fn poll(&mut self, now: Nanos, send: impl FnMut(Outgoing<'_>)) -> usize {
        match self {
            Source::Movie(m) => m.poll(now, send),
            Source::Live(l) => l.poll(now, send),
        }
    }

    /// As [`poll`](Self::poll), and a movie's packets up to `ahead` as
    /// `pick` allows (see [`MovieSource::poll_picked`]); a live viewer has
    /// its own catch-up burst and takes what is due by `now`.
    #[inline]
    pub fn poll_picked<P: Pick>(
        &mut self,
        now: Nanos,
        ahead: Nanos,
        pick: &mut P,
        send: impl FnMut(Outgoing<'_>),
    ) -> usize {
        match self {
            Source::Movie(m) => m.poll_picked(now, ahead, pick, send),
            Source::Live(l) => l.poll(now, send),
        }
    }

    /// A packet of `stream` from the last poll could not be queued (its
    /// connection is full). A live viewer drops the rest of that frame; a
    /// movie carries on.
    #[cold]
    pub fn refused(&mut self, stream: usize) {
        if let Source::Live(l) = self {
            l.refused(stream);
        }
    }

    pub fn is_live(&self) -> bool {
        matches!(self, Source::Live(_))
    }

    /// The broadcast a live viewer watches.
    pub fn live(&self) -> Option<crate::live::BroadcastId> {
        match self {
            Source::Movie(_) => None,
            Source::Live(l) => Some(l.broadcast()),
        }
    }

    /// Packets the source could not produce (a damaged hint sample), or, for
    /// a live viewer, dropped (it fell behind), since the last call.
    pub fn take_skipped(&mut self) -> u64 {
        match self {
            Source::Movie(m) => m.take_skipped(),
            Source::Live(l) => l.take_dropped(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_counts_what_it_sends_and_takes_back_what_did_not_go() {
        let mut s = Stream::new(3, 90_000, (0xabc, u16::MAX, 10));
        let h = s.next_header(false, 96, 5, 100);
        assert_eq!(u16::from_be_bytes([h[2], h[3]]), u16::MAX);
        assert_eq!(u32::from_be_bytes(h[4..8].try_into().unwrap()), 15);
        s.next_header(true, 96, 6, 50);
        assert_eq!((s.next_seq, s.packets, s.octets), (1, 2, 150));
        s.unsend(50);
        assert_eq!((s.next_seq, s.packets, s.octets), (1, 1, 100), "the number stays used");
    }

    #[test]
    fn a_payload_is_spans_of_its_owner() {
        let owner = Bytes::from_static(b"0123456789");
        let spans = [Span { offset: 2, len: 3 }, Span { offset: 8, len: 2 }];
        let p = Payload {
            owner: &owner,
            spans: &spans,
        };
        assert_eq!(p.len(), 5);
        assert_eq!(p.slices().collect::<Vec<_>>(), [&b"234"[..], b"89"]);
    }
}
