//! A viewer of a live broadcast as a [`Source`](super::Source): a cursor
//! into its shard's [`Replica`] and one [`Stream`] per set-up track. Only
//! the 12-byte header is written for the viewer (its SSRC, its sequence
//! numbers, the publisher's timestamps plus its own offset); the payload is
//! a span of the publisher's buffer.
//!
//! At PLAY the cursor goes to the replica's latest key frame, and what lies
//! between it and the live edge is due at once: sent as fast as the round
//! takes it, [`BURST_BYTES`] a round, then each packet as it arrives. A
//! viewer that falls behind the replica (its connection's queue full for
//! longer than the buffer lasts) jumps to the newest key frame; a packet
//! its queue refused has the rest of its frame dropped too (a part of a
//! frame is worth nothing to a decoder). Both are counted as its drops and
//! never touch other viewers, who have cursors of their own.

use std::cell::RefCell;
use std::rc::Rc;

use smallvec::SmallVec;

use super::{Nanos, Outgoing, PacketFlags, Payload, PlayStart, Stream, StreamSeeds};
use crate::live::{BroadcastId, Replica};

/// What a viewer may be sent in one round while catching up: about 64 MB/s,
/// which a loopback or LAN client takes and which keeps one joining viewer
/// from filling a round on its own.
pub const BURST_BYTES: usize = 64 * 1024;

const NO_STREAM: u8 = u8::MAX;

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Ready,
    /// Sending since `since`.
    Playing {
        since: Nanos,
    },
    Paused,
    /// The broadcast ended and everything it sent was sent.
    Ended,
}

pub struct LiveSource {
    replica: Rc<RefCell<Replica>>,
    streams: SmallVec<[Stream; 2]>,
    /// The stream index of each of the broadcast's tracks, or `NO_STREAM`.
    of_track: SmallVec<[u8; 4]>,
    /// Ring index of the next packet to look at.
    cursor: u64,
    state: State,
    /// No key frame was there at PLAY: wait for one.
    waiting_for_key: bool,
    /// Per stream, whether the rest of the current frame is being dropped.
    skipping: SmallVec<[bool; 2]>,
    /// A round's burst was used up: due again at this time.
    resume_at: Option<Nanos>,
    /// Packets dropped for this viewer since the last `take_dropped`.
    dropped: u64,
    /// What its connection's queue can take this round (interleaved
    /// viewers), as [`set_room`](Self::set_room) said.
    room: usize,
}

impl LiveSource {
    /// A viewer of the tracks `track_ids` (the broadcast's `trackID`s) of
    /// `replica`'s broadcast, with one set of seeds each. `None` if a track
    /// is not the broadcast's.
    pub fn new(replica: Rc<RefCell<Replica>>, track_ids: &[u32], seeds: &[StreamSeeds]) -> Option<LiveSource> {
        assert_eq!(track_ids.len(), seeds.len(), "one seed set per track");
        let (streams, of_track) = {
            let r = replica.borrow();
            let mut of_track: SmallVec<[u8; 4]> = SmallVec::from_elem(NO_STREAM, r.desc.tracks.len());
            let mut streams = SmallVec::new();
            for (i, (&id, &seed)) in track_ids.iter().zip(seeds).enumerate() {
                let t = r.desc.track_index(id)?;
                of_track[t] = i as u8;
                streams.push(Stream::new(id, r.desc.tracks[t].clock_rate, seed));
            }
            (streams, of_track)
        };
        let n = track_ids.len();
        Some(LiveSource {
            replica,
            streams,
            of_track,
            cursor: 0,
            state: State::Ready,
            waiting_for_key: false,
            skipping: SmallVec::from_elem(false, n),
            resume_at: None,
            dropped: 0,
            room: usize::MAX,
        })
    }

    pub fn broadcast(&self) -> BroadcastId {
        self.replica.borrow().desc.id
    }

    pub fn replica(&self) -> &Rc<RefCell<Replica>> {
        &self.replica
    }

    pub fn streams(&self) -> &[Stream] {
        &self.streams
    }

    pub fn streams_mut(&mut self) -> &mut [Stream] {
        &mut self.streams
    }

    pub fn is_playing(&self) -> bool {
        matches!(self.state, State::Playing { .. })
    }

    pub fn has_ended(&self) -> bool {
        self.state == State::Ended
    }

    /// Packets dropped for this viewer since the last call.
    pub fn take_dropped(&mut self) -> u64 {
        std::mem::take(&mut self.dropped)
    }

    fn track_of(&self, stream: usize) -> Option<usize> {
        self.of_track.iter().position(|&s| usize::from(s) == stream)
    }

    /// Stream `stream`'s RTP time at `now`, as a sender report says it.
    pub fn rtp_time_now(&self, stream: usize, now: Nanos) -> Option<u32> {
        let track = self.track_of(stream)?;
        let ts = self.replica.borrow().rtp_time_at(track, now)?;
        Some(ts.wrapping_add(self.streams.get(stream)?.ts_offset))
    }

    /// Starts (or resumes) at the latest key frame. There is no seeking in
    /// a live broadcast: the npt range is `0-`.
    pub fn play(&mut self, now: Nanos) -> PlayStart {
        let r = self.replica.borrow();
        match r.start() {
            Some(k) => {
                self.cursor = k;
                self.waiting_for_key = false;
            }
            None => {
                self.cursor = r.head();
                self.waiting_for_key = true;
            }
        }
        self.state = State::Playing { since: now };
        self.resume_at = None;
        self.skipping.iter_mut().for_each(|s| *s = false);
        let streams = self
            .streams
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let track = self.of_track.iter().position(|&x| usize::from(x) == i).unwrap_or(0);
                let ts = r
                    .first_timestamp(track, self.cursor)
                    .or_else(|| r.rtp_time_at(track, now))
                    .unwrap_or(0);
                (s.track_id, s.next_seq, ts.wrapping_add(s.ts_offset))
            })
            .collect();
        PlayStart {
            npt_start_ns: 0,
            npt_end_ns: None,
            streams,
        }
    }

    pub fn pause(&mut self, _now: Nanos) -> i64 {
        if self.is_playing() {
            self.state = State::Paused;
        }
        0
    }

    /// When the next packet is due; `None` when the viewer has everything
    /// the replica holds (it then waits in the replica's idle list), is not
    /// playing, or has ended.
    pub fn next_due(&mut self) -> Option<Nanos> {
        let State::Playing { since } = self.state else {
            return None;
        };
        if let Some(t) = self.resume_at {
            return Some(t);
        }
        let r = self.replica.borrow();
        if self.waiting_for_key && r.start().is_none_or(|k| k < self.cursor) {
            return None;
        }
        let next = self.cursor.max(r.base());
        r.get(next).map(|h| h.arrival.max(since))
    }

    /// How many bytes the viewer's connection can queue now: the next poll
    /// hands out no more (each packet costing its `$` frame), so a viewer
    /// catching up over TCP is sent as fast as it reads rather than losing
    /// what its queue cannot hold. Holds for one poll.
    pub fn set_room(&mut self, bytes: usize) {
        self.room = bytes;
    }

    /// A packet of `stream` handed out by the last poll could not be queued
    /// (the viewer's connection is full): the rest of its frame goes too.
    pub fn refused(&mut self, stream: usize) {
        if let Some(s) = self.skipping.get_mut(stream) {
            *s = true;
        }
    }

    /// Hands out what is due at `now`: what the replica holds past the
    /// cursor, up to a round's burst.
    pub fn poll(&mut self, now: Nanos, mut send: impl FnMut(Outgoing<'_>)) -> usize {
        let State::Playing { since } = self.state else {
            return 0;
        };
        if self.resume_at.is_some_and(|t| t > now) {
            return 0;
        }
        self.resume_at = None;
        let LiveSource {
            replica,
            streams,
            of_track,
            cursor,
            state,
            waiting_for_key,
            skipping,
            resume_at,
            dropped,
            room,
        } = self;
        let r = replica.borrow();
        if *cursor < r.base() {
            // Behind what the replica still holds: on to the newest key frame.
            let to = r.start().unwrap_or(r.head());
            *dropped += to - *cursor;
            *cursor = to;
            *waiting_for_key = r.start().is_none();
        }
        if *waiting_for_key {
            match r.start() {
                Some(k) if k >= *cursor => {
                    *cursor = k;
                    *waiting_for_key = false;
                }
                // The cursor stays: a key frame whose access unit began
                // after it (its parameter sets may come a round before its
                // slice) is where the viewer starts.
                _ => {
                    if r.ended {
                        *state = State::Ended;
                    }
                    return 0;
                }
            }
        }
        let budget = BURST_BYTES.min(std::mem::replace(room, usize::MAX));
        let mut bytes = 0;
        let mut sent = 0;
        while let Some(h) = r.get(*cursor) {
            let p = &h.packet;
            // What it costs on the wire: a `$` frame's header, the RTP
            // header and the payload.
            let cost = 4 + proto::rtp::HEADER_LEN + p.payload_len();
            if bytes + cost > budget {
                // The rest next round, from the same packet.
                *resume_at = Some(now + 1);
                break;
            }
            *cursor += 1;
            let Some(&stream) = of_track.get(usize::from(p.track)) else {
                continue;
            };
            if stream == NO_STREAM {
                continue;
            }
            let stream = usize::from(stream);
            if skipping[stream] {
                if !p.frame_start {
                    *dropped += 1;
                    continue;
                }
                skipping[stream] = false;
            }
            let len = p.payload_len();
            let header = streams[stream].next_header(p.marker, p.payload_type, p.timestamp, len);
            let mut flags = PacketFlags::empty();
            flags.set(PacketFlags::KEY, p.key);
            send(Outgoing {
                stream,
                header,
                payload: Payload {
                    owner: &p.data,
                    spans: std::slice::from_ref(&p.payload),
                },
                late_ns: now.saturating_sub(h.arrival.max(since)),
                // A live packet is due when it arrived (or when the viewer
                // began, for its catch-up burst): never ahead.
                due: h.arrival.max(since),
                flags,
            });
            bytes += cost;
            sent += 1;
        }
        if r.ended && *cursor >= r.head() {
            *state = State::Ended;
        }
        sent
    }
}
