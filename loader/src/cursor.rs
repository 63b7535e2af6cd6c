//! Cursors: walking a hint track's samples in transmit order and turning each
//! packet entry into a [`Packet`] recipe, and merging several tracks.
//!
//! A cursor holds positions only, never a borrow of the movie: it is driven by
//! passing the movie to [`HintCursor::next_packet`]. That keeps it small and
//! lets a long-lived streaming session own it next to an `Arc<Movie>`.

use smallvec::SmallVec;

use crate::error::{Error, Result};
use crate::hint::{flag, packet_at, sample_packet_count, Constructor, PacketEntry, CONSTRUCTOR_LEN, FIRST_PACKET};
use crate::movie::Movie;
use crate::packet::{push_span, Packet, PacketFlags, Payload, Span};
use crate::track::Track;

const NANOS: i64 = 1_000_000_000;

/// How far ahead (in hint samples) `load_next_sample` prefetches.
const PREFETCH_SAMPLES: u32 = 8;

/// Asks the CPU to bring `data[offset..offset + len]` into the cache.
#[inline(always)]
fn prefetch(data: &[u8], offset: u64, len: u32) {
    let end = (offset.saturating_add(u64::from(len))).min(data.len() as u64);
    let mut at = offset & !63;
    while at < end {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `at` is inside `data`; a prefetch is a hint that never
        // faults and makes no memory visible to the program.
        unsafe {
            core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
                data.as_ptr().add(at as usize).cast(),
            )
        }
        at += 64;
    }
}

/// The largest RTP payload any transport carries: an interleaved RTSP frame
/// has a 16-bit length, a UDP datagram less, and the RTP header takes 12.
const MAX_PAYLOAD: usize = 65_535 - 12;

/// `t` ticks of `timescale` in nanoseconds, without overflow for any timescale.
#[inline]
pub(crate) fn ticks_to_ns(t: i64, timescale: u32) -> i64 {
    if timescale == 0 {
        return 0;
    }
    let ts = i64::from(timescale);
    let (q, r) = (t.div_euclid(ts), t.rem_euclid(ts));
    q.saturating_mul(NANOS).saturating_add(r * NANOS / ts)
}

/// Nanoseconds in ticks of `timescale`, rounded down.
#[inline]
pub(crate) fn ns_to_ticks(ns: i64, timescale: u32) -> i64 {
    let ts = i64::from(timescale);
    let (q, r) = (ns.div_euclid(NANOS), ns.rem_euclid(NANOS));
    q.saturating_mul(ts).saturating_add(r * ts / NANOS)
}

/// The last referenced media sample looked up: consecutive packets usually
/// carry slices of the same sample.
#[derive(Debug, Clone, Copy)]
struct MediaSample {
    track: usize,
    sample: u32,
    offset: u64,
    len: u32,
    sync: bool,
}

/// Position in one hint track.
#[derive(Debug, Clone)]
pub struct HintCursor {
    track: usize,
    /// Index of the edit-list segment being played.
    segment: usize,
    /// 0-based number of the next hint sample to load.
    next_sample: u32,
    /// The hint sample being read.
    current: u32,
    sample_offset: u64,
    sample_len: u32,
    /// Offset of the next packet entry inside the current sample.
    pos: u32,
    packets_left: u16,
    sample_transmit_ns: i64,
    sample_rtp_time: u32,
    media: Option<MediaSample>,
    /// Search hints into the hint track's `stts` and the media track's `stss`.
    time_run: u32,
    sync_at: u32,
}

impl HintCursor {
    /// A cursor at the start of hint track `track` (an index into
    /// [`Movie::tracks`]).
    pub(crate) fn new(movie: &Movie, track: usize) -> Self {
        let t = &movie.tracks()[track];
        let next_sample = t
            .segments
            .first()
            .map_or(t.samples.len(), |s| t.samples.first_sample_at_or_after(s.media_start));
        HintCursor {
            track,
            segment: 0,
            next_sample,
            current: 0,
            sample_offset: 0,
            sample_len: 0,
            pos: 0,
            packets_left: 0,
            sample_transmit_ns: 0,
            sample_rtp_time: 0,
            media: None,
            time_run: 0,
            sync_at: 0,
        }
    }

    /// ID of the hint track this cursor walks.
    pub fn track_id(&self, movie: &Movie) -> u32 {
        movie.tracks()[self.track].id
    }

    /// The next packet recipe, `None` at the end of the track.
    ///
    /// A damaged hint sample yields one `Err` and the cursor moves on to the
    /// next sample, so a caller may log and continue, or stop.
    pub fn next_packet(&mut self, movie: &Movie) -> Option<Result<Packet>> {
        loop {
            if self.packets_left > 0 {
                self.packets_left -= 1;
                return Some(self.decode(movie).map_err(|what| {
                    self.packets_left = 0;
                    self.bad(movie, self.current, what)
                }));
            }
            match self.load_next_sample(movie) {
                Ok(true) => continue,
                Ok(false) => return None,
                Err(e) => return Some(Err(e)),
            }
        }
    }

    /// Transmit time of the packet [`next_packet`](Self::next_packet) would
    /// return, without decoding it: what merging tracks needs to know. `None`
    /// at the end; a damaged hint sample is reported here as it would be there.
    #[inline]
    pub fn peek_transmit_ns(&mut self, movie: &Movie) -> Option<Result<i64>> {
        loop {
            if self.packets_left > 0 {
                // The relative transmit time is the entry's first field; if the
                // entry is cut short, `next_packet` reports it.
                let at = self.sample_offset as usize + self.pos as usize;
                let rel = movie
                    .data()
                    .get(at..at + 4)
                    .map_or(0, |b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                let rel_ns = if rel == 0 {
                    0
                } else {
                    ticks_to_ns(i64::from(rel), movie.tracks()[self.track].timescale)
                };
                return Some(Ok(self.sample_transmit_ns.saturating_add(rel_ns)));
            }
            match self.load_next_sample(movie) {
                Ok(true) => continue,
                Ok(false) => return None,
                Err(e) => return Some(Err(e)),
            }
        }
    }

    fn bad(&self, movie: &Movie, sample: u32, what: &'static str) -> Error {
        Error::BadPacket {
            track: movie.tracks()[self.track].id,
            sample: sample + 1,
            what,
        }
    }

    fn next_segment(&mut self, track: &Track) {
        self.segment += 1;
        if let Some(s) = track.segments.get(self.segment) {
            self.next_sample = track.samples.first_sample_at_or_after(s.media_start);
        }
    }

    /// Moves to the next hint sample that has packets; `Ok(false)` at the end.
    fn load_next_sample(&mut self, movie: &Movie) -> Result<bool> {
        let track = &movie.tracks()[self.track];
        let rtp = track.rtp.expect("hint cursors are only made for RTP hint tracks");
        loop {
            let Some(seg) = track.segments.get(self.segment).copied() else {
                return Ok(false);
            };
            let n = self.next_sample;
            // `stts` may claim more samples than `stsz` has (one damaged count
            // claims billions): past the last sample there is nothing to read,
            // and walking the phantom ones one error at a time would hang.
            let Some(t) = track
                .samples
                .decode_time_near(n, &mut self.time_run)
                .filter(|&t| t < seg.media_end && n < track.samples.len())
            else {
                self.next_segment(track);
                continue;
            };
            self.next_sample = n + 1;
            // Hint samples lie between media chunks all over the file: each
            // is a cache and TLB miss. Ask for the one PREFETCH_SAMPLES ahead.
            if let Some((o, l)) = track.samples.locate(n + PREFETCH_SAMPLES) {
                prefetch(movie.data(), o, l);
            }
            let (offset, len) = track
                .samples
                .locate(n)
                .filter(|&(o, l)| {
                    o.checked_add(u64::from(l))
                        .is_some_and(|end| end <= movie.data().len() as u64)
                })
                .ok_or_else(|| self.bad(movie, n, "hint sample lies outside the file"))?;
            let body = &movie.data()[offset as usize..][..len as usize];
            let count = sample_packet_count(body).map_err(|what| self.bad(movie, n, what))?;
            let movie_time = seg
                .movie_start
                .saturating_add(t.saturating_sub(seg.media_start).min(i64::MAX as u64) as i64);
            self.current = n;
            self.sample_offset = offset;
            self.sample_len = len;
            self.pos = FIRST_PACKET as u32;
            self.packets_left = count;
            self.sample_transmit_ns = ticks_to_ns(movie_time, track.timescale);
            let rtp_time = if rtp.rtp_timescale == track.timescale {
                movie_time
            } else {
                (i128::from(movie_time) * i128::from(rtp.rtp_timescale) / i128::from(track.timescale.max(1))) as i64
            };
            self.sample_rtp_time = (rtp_time as u32).wrapping_add(rtp.timestamp_offset as u32);
            if count > 0 {
                return Ok(true);
            }
        }
    }

    /// Decodes the packet entry at `self.pos` of the current sample.
    fn decode(&mut self, movie: &Movie) -> Result<Packet, &'static str> {
        let data = movie.data();
        let track = &movie.tracks()[self.track];
        let rtp = track.rtp.expect("hint cursors are only made for RTP hint tracks");
        let sample = &data[self.sample_offset as usize..][..self.sample_len as usize];
        let (entry, next) = packet_at(sample, self.pos as usize)?;
        self.pos = next as u32;
        let mut payload = Payload::new();
        let key = self.resolve(movie, track, &entry, &mut payload)?;
        let mut flags = PacketFlags::empty();
        flags.set(PacketFlags::KEY, key);
        flags.set(PacketFlags::B_FRAME, entry.flags & flag::B_FRAME != 0);
        flags.set(PacketFlags::REPEAT, entry.flags & flag::REPEAT != 0);
        let relative_ns = if entry.relative_time == 0 {
            0
        } else {
            ticks_to_ns(i64::from(entry.relative_time), track.timescale)
        };
        Ok(Packet {
            track_id: track.id,
            transmit_ns: self.sample_transmit_ns.saturating_add(relative_ns),
            sequence: entry.sequence.wrapping_add(rtp.sequence_offset as u16),
            timestamp: self.sample_rtp_time.wrapping_add(entry.timestamp_offset as u32),
            marker: entry.marker(),
            payload_type: entry.payload_type(),
            flags,
            payload,
        })
    }

    /// Turns the data table of `entry` into spans of the file. Returns whether
    /// the packet belongs to a sync sample: that of the first media sample it
    /// draws from, or, when it draws from none, the hint sample's own.
    fn resolve(
        &mut self,
        movie: &Movie,
        track: &Track,
        entry: &PacketEntry<'_>,
        payload: &mut Payload,
    ) -> Result<bool, &'static str> {
        let data = movie.data();
        // Absolute offset of the data table, for immediate constructors.
        let table_offset = entry.constructors.as_ptr() as usize - data.as_ptr() as usize;
        let mut key = None;
        let mut bytes_so_far = 0;
        for (i, c) in entry.constructors.chunks_exact(CONSTRUCTOR_LEN).enumerate() {
            let constructor = Constructor::parse(c)?;
            // A data table that adds up to more than any RTP packet can carry
            // is damaged; following it could mean millions of spans (and
            // megabytes of them) for one packet.
            bytes_so_far += match constructor {
                Constructor::Nop => 0,
                Constructor::Immediate(bytes) => bytes.len(),
                Constructor::Sample { len, .. } | Constructor::Description { len, .. } => usize::from(len),
            };
            if bytes_so_far > MAX_PAYLOAD {
                return Err("data table adds up to more than an RTP packet can carry");
            }
            match constructor {
                Constructor::Nop => {}
                Constructor::Immediate(bytes) => push_span(
                    payload,
                    Span {
                        offset: (table_offset + i * CONSTRUCTOR_LEN + 2) as u64,
                        len: bytes.len() as u32,
                    },
                ),
                Constructor::Sample {
                    track_ref,
                    len,
                    sample,
                    offset,
                    bytes_per_block,
                    samples_per_block,
                } => {
                    let target = self.referenced_track(track, track_ref)?;
                    let n = sample.checked_sub(1).ok_or("sample constructor names sample 0")?;
                    let one_for_one = bytes_per_block <= 1 && samples_per_block <= 1;
                    let media = self.media_sample(movie, target, n)?;
                    if one_for_one && !(media.len == 1 && target != self.track) {
                        if u64::from(offset) + u64::from(len) > u64::from(media.len) {
                            return Err("sample constructor reads past the end of its sample");
                        }
                        push_span(
                            payload,
                            Span {
                                offset: media.offset + u64::from(offset),
                                len: u32::from(len),
                            },
                        );
                    } else {
                        compressed_spans(
                            movie,
                            target,
                            n,
                            offset,
                            len,
                            bytes_per_block,
                            samples_per_block,
                            payload,
                        )?;
                    }
                    if target != self.track && key.is_none() {
                        key = Some(media.sync);
                    }
                }
                Constructor::Description {
                    track_ref,
                    len,
                    index,
                    offset,
                } => {
                    let target = self.referenced_track(track, track_ref)?;
                    let desc = index
                        .checked_sub(1)
                        .and_then(|i| movie.tracks()[target].samples.descriptions.get(i as usize))
                        .ok_or("sample-description constructor names a missing description")?;
                    if u64::from(offset) + u64::from(len) > desc.len {
                        return Err("sample-description constructor reads past its description");
                    }
                    push_span(
                        payload,
                        Span {
                            offset: desc.offset + u64::from(offset),
                            len: u32::from(len),
                        },
                    );
                }
            }
        }
        Ok(key.unwrap_or_else(|| track.samples.is_sync(self.current)))
    }

    fn referenced_track(&self, track: &Track, track_ref: i8) -> Result<usize, &'static str> {
        if track_ref == -1 {
            return Ok(self.track);
        }
        usize::try_from(track_ref)
            .ok()
            .and_then(|i| track.reference_index.get(i).copied().flatten())
            .ok_or("constructor names a track reference the hint track does not have")
    }

    /// Location and sync status of 0-based sample `n` of track `target`,
    /// checked to lie inside the file.
    #[inline]
    fn media_sample(&mut self, movie: &Movie, target: usize, n: u32) -> Result<MediaSample, &'static str> {
        if let Some(m) = self.media {
            if m.track == target && m.sample == n {
                return Ok(m);
            }
        }
        let table = &movie.tracks()[target].samples;
        let (offset, len) = table
            .locate(n)
            .ok_or("constructor names a sample the track does not have")?;
        if offset.saturating_add(u64::from(len)) > movie.data().len() as u64 {
            return Err("referenced sample lies outside the file");
        }
        let m = MediaSample {
            track: target,
            sample: n,
            offset,
            len,
            sync: table.is_sync_near(n, &mut self.sync_at),
        };
        self.media = Some(m);
        Ok(m)
    }

    /// Moves the cursor to the last sync hint sample at or before `npt_ns`
    /// and returns that sample's time on the movie timeline, in nanoseconds.
    pub fn seek(&mut self, movie: &Movie, npt_ns: i64) -> i64 {
        let track = &movie.tracks()[self.track];
        self.packets_left = 0;
        self.media = None;
        let target = ns_to_ticks(npt_ns.max(0), track.timescale);
        let segments = &track.segments;
        let Some(i) = segments
            .iter()
            .rposition(|s| s.movie_start <= target)
            .or((!segments.is_empty()).then_some(0))
        else {
            self.segment = 0;
            self.next_sample = track.samples.len();
            return npt_ns;
        };
        let seg = segments[i];
        let media_t = seg
            .media_start
            .saturating_add(target.saturating_sub(seg.movie_start).max(0) as u64);
        let first = track.samples.first_sample_at_or_after(seg.media_start);
        let mut s = track.samples.last_sample_at_or_before(media_t).max(first);
        while s > first && !self.is_key_sample(movie, s) {
            s -= 1;
        }
        self.segment = i;
        self.next_sample = s;
        let t = track.samples.decode_time(s).unwrap_or(seg.media_start);
        ticks_to_ns(
            seg.movie_start.saturating_add(t.saturating_sub(seg.media_start) as i64),
            track.timescale,
        )
    }

    /// Whether every hint sample of the track is a place to start: the media
    /// track it draws from (or, drawing from none, the hint track itself) has
    /// no key frames to respect.
    fn all_sync(&self, movie: &Movie) -> bool {
        let track = &movie.tracks()[self.track];
        match track.reference_index.iter().flatten().next() {
            Some(&media) => movie.tracks()[media].samples.all_sync(),
            None => track.samples.all_sync(),
        }
    }

    /// Whether hint sample `n` starts a sync sample: its first packet that
    /// draws from a media track draws from a sync sample. A hint sample that
    /// draws from no media track is judged by the hint track's own `stss`.
    fn is_key_sample(&mut self, movie: &Movie, n: u32) -> bool {
        let track = &movie.tracks()[self.track];
        let Some((offset, len)) = track.samples.locate(n) else {
            return false;
        };
        let Some(body) = movie.data().get(offset as usize..).and_then(|d| d.get(..len as usize)) else {
            return false;
        };
        let Ok(count) = sample_packet_count(body) else {
            return false;
        };
        let mut pos = FIRST_PACKET;
        for _ in 0..count {
            let Ok((entry, next)) = packet_at(body, pos) else {
                return false;
            };
            pos = next;
            for c in entry.constructors.chunks_exact(CONSTRUCTOR_LEN) {
                if let Ok(Constructor::Sample { track_ref, sample, .. }) = Constructor::parse(c) {
                    if track_ref == -1 {
                        continue;
                    }
                    let Ok(target) = self.referenced_track(track, track_ref) else {
                        return false;
                    };
                    return sample
                        .checked_sub(1)
                        .is_some_and(|s| movie.tracks()[target].samples.is_sync(s));
                }
            }
        }
        count > 0 && track.samples.is_sync(n)
    }
}

/// Spans for a sample constructor over compressed QuickTime sound, where
/// sample numbers and offsets are counted in compression blocks and a read
/// may run on into the following chunks (as Darwin Streaming Server did).
#[allow(clippy::too_many_arguments)]
fn compressed_spans(
    movie: &Movie,
    target: usize,
    mut n: u32,
    mut offset: u32,
    len: u16,
    bytes_per_block: u16,
    samples_per_block: u16,
    payload: &mut Payload,
) -> Result<(), &'static str> {
    let bpb = u32::from(bytes_per_block.max(1));
    let spb = u32::from(samples_per_block.max(1));
    let blocks = offset / bpb;
    n = n
        .checked_add(blocks.checked_mul(spb).ok_or("compressed sample offset overflows")?)
        .ok_or("compressed sample offset overflows")?;
    offset -= blocks * bpb;
    let table = &movie.tracks()[target].samples;
    let (start, left, mut chunk) = table
        .compressed_position(n, bpb, spb)
        .ok_or("compressed constructor names a sample the track does not have")?;
    let file_len = movie.data().len() as u64;
    let mut at = start.saturating_add(u64::from(offset));
    let mut left = left.saturating_sub(u64::from(offset));
    let mut need = u64::from(len);
    loop {
        let take = need.min(left);
        if at.saturating_add(take) > file_len {
            return Err("compressed sound data lies outside the file");
        }
        push_span(
            payload,
            Span {
                offset: at,
                len: take as u32,
            },
        );
        need -= take;
        if need == 0 {
            return Ok(());
        }
        chunk += 1;
        let (next, next_len) = table
            .compressed_chunk(chunk, bpb, spb)
            .ok_or("compressed constructor reads past the last chunk")?;
        // Real sound chunks are never empty. Damaged tables can make every
        // chunk empty, and then each constructor would walk all of them.
        if next_len == 0 {
            return Err("compressed constructor reads into an empty chunk");
        }
        at = next;
        left = next_len;
    }
}

/// The hint tracks of a movie merged in transmit order.
#[derive(Debug, Clone)]
pub struct MovieCursor {
    /// Inline for the usual two tracks (video and audio): a session's
    /// cursor is then one block of memory with the session's state, which
    /// matters when a server walks thousands of them per millisecond.
    lanes: SmallVec<[Lane; 2]>,
    /// The lane [`select`](Self::select) last chose, until a packet is
    /// taken or the cursor seeks ([`NO_HEAD`]: not known). A sender asks
    /// for the next transmit time, then takes the packet, then asks when
    /// the next is due: without it each of these merged the lanes again.
    head: u8,
}

/// [`MovieCursor::head`] when the next lane is not known.
const NO_HEAD: u8 = u8::MAX;

/// [`Lane::next_ns`] when the lane's next transmit time is not known. A
/// transmit time that happens to be this (only a damaged table could
/// saturate to it) is merely peeked again each time: peeking is idempotent.
const UNPEEKED: i64 = i64::MIN;

#[derive(Debug, Clone)]
struct Lane {
    cursor: HintCursor,
    /// The lane's next transmit time, once peeked; [`UNPEEKED`] before
    /// (not an `Option`: eight bytes a lane).
    next_ns: i64,
    ended: bool,
}

impl MovieCursor {
    pub(crate) fn new(movie: &Movie, tracks: impl IntoIterator<Item = usize>) -> Self {
        MovieCursor {
            lanes: tracks
                .into_iter()
                .map(|t| Lane {
                    cursor: HintCursor::new(movie, t),
                    next_ns: UNPEEKED,
                    ended: false,
                })
                .collect(),
            head: NO_HEAD,
        }
    }

    /// The next packet of any track, earliest transmit time first (ties go to
    /// the track listed first). `None` when every track has ended.
    pub fn next_packet(&mut self, movie: &Movie) -> Option<Result<Packet>> {
        let (i, _) = match self.select(movie)? {
            Ok(next) => next,
            Err(e) => return Some(Err(e)),
        };
        let lane = &mut self.lanes[i];
        lane.next_ns = UNPEEKED;
        self.head = NO_HEAD;
        lane.cursor.next_packet(movie)
    }

    /// Transmit time of the packet [`next_packet`](Self::next_packet) would
    /// return, without decoding it. A damaged hint sample is reported here
    /// once, as `next_packet` would report it, and skipped.
    #[inline]
    pub fn peek_transmit_ns(&mut self, movie: &Movie) -> Option<Result<i64>> {
        Some(self.select(movie)?.map(|(_, t)| t))
    }

    /// The lane whose packet is next, and that packet's transmit time.
    #[inline]
    fn select(&mut self, movie: &Movie) -> Option<Result<(usize, i64)>> {
        if let Some(lane) = self.lanes.get(usize::from(self.head)) {
            return Some(Ok((usize::from(self.head), lane.next_ns)));
        }
        self.merge(movie)
    }

    /// [`select`](Self::select) when the head is not known: peeks the lanes
    /// that need it and takes the earliest.
    fn merge(&mut self, movie: &Movie) -> Option<Result<(usize, i64)>> {
        let mut best: Option<(usize, i64)> = None;
        for (i, lane) in self.lanes.iter_mut().enumerate() {
            if lane.ended {
                continue;
            }
            let t = if lane.next_ns != UNPEEKED {
                lane.next_ns
            } else {
                match lane.cursor.peek_transmit_ns(movie) {
                    Some(Ok(t)) => {
                        lane.next_ns = t;
                        t
                    }
                    // The lane has moved past the damaged sample; say so.
                    Some(Err(e)) => return Some(Err(e)),
                    None => {
                        lane.ended = true;
                        continue;
                    }
                }
            };
            if best.is_none_or(|(_, b)| t < b) {
                best = Some((i, t));
            }
        }
        // A saturated time is not kept (it reads as "peek again"), nor a
        // lane past what a `u8` names.
        if let Some((i, _)) = best.filter(|&(i, t)| t != UNPEEKED && i < usize::from(NO_HEAD)) {
            self.head = i as u8;
        }
        best.map(Ok)
    }

    /// Seeks every track to the last sync sample at or before `npt_ns`.
    ///
    /// The tracks start together, at a point the tracks with real key frames
    /// choose: a video track can only start on a key frame, while audio, where
    /// every sample is a sync sample, can start anywhere. So the start is the
    /// earliest key frame at or before `npt_ns` among the tracks that have
    /// key frames (all tracks, when none has), every track is placed at the
    /// sync sample at or before it, and that time is returned, in nanoseconds.
    /// Audio therefore restarts at most one audio sample before the video's
    /// key frame, and the key frame is exactly at the returned time, which is
    /// what `Range` and `RTP-Info` then announce.
    pub fn seek(&mut self, movie: &Movie, npt_ns: i64) -> i64 {
        let keyed: Vec<bool> = self.lanes.iter().map(|l| !l.cursor.all_sync(movie)).collect();
        let any_keyed = keyed.contains(&true);
        let mut start = npt_ns.max(0);
        // With two keyed tracks, one's key frame may lie before the other's:
        // seek again from the earlier one until they agree. Each round only
        // moves back to an earlier key frame, so this ends; the bound is for
        // damaged tables.
        for _ in 0..16 {
            let earliest = self
                .lanes
                .iter_mut()
                .zip(&keyed)
                .filter(|&(_, &k)| k || !any_keyed)
                .map(|(l, _)| l.cursor.seek(movie, start))
                .min()
                .unwrap_or(start);
            if earliest >= start {
                break;
            }
            start = earliest;
        }
        for lane in &mut self.lanes {
            lane.cursor.seek(movie, start);
            lane.next_ns = UNPEEKED;
            lane.ended = false;
        }
        self.head = NO_HEAD;
        start
    }
}

/// Iterator over one hint track's packets. See [`Movie::packets`].
pub struct TrackPackets<'m> {
    pub(crate) movie: &'m Movie,
    pub(crate) cursor: HintCursor,
}

impl Iterator for TrackPackets<'_> {
    type Item = Result<Packet>;
    fn next(&mut self) -> Option<Result<Packet>> {
        self.cursor.next_packet(self.movie)
    }
}

/// Iterator over all hint tracks' packets, merged. See [`Movie::all_packets`].
pub struct MoviePackets<'m> {
    pub(crate) movie: &'m Movie,
    pub(crate) cursor: MovieCursor,
}

impl MoviePackets<'_> {
    /// Seeks as [`MovieCursor::seek`] does.
    pub fn seek(&mut self, npt_ns: i64) -> i64 {
        self.cursor.seek(self.movie, npt_ns)
    }
}

impl Iterator for MoviePackets<'_> {
    type Item = Result<Packet>;
    fn next(&mut self) -> Option<Result<Packet>> {
        self.cursor.next_packet(self.movie)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_conversions() {
        assert_eq!(ticks_to_ns(90_000, 90_000), NANOS);
        assert_eq!(ticks_to_ns(-45_000, 90_000), -NANOS / 2);
        assert_eq!(ticks_to_ns(1, 3), 333_333_333);
        assert_eq!(ticks_to_ns(i64::MAX, 1), i64::MAX);
        assert_eq!(ns_to_ticks(NANOS * 5, 600), 3000);
        assert_eq!(ns_to_ticks(-NANOS, 1000), -1000);
        assert_eq!(ticks_to_ns(0, 0), 0);
    }
}
