//! MP3 files (and MPEG audio in general: MPEG-1, MPEG-2 and MPEG-2.5, layers
//! I, II and III) indexed frame by frame, for sending at the pace they play.
//!
//! [`Mp3::open`] maps a file, steps over the tags at either end (ID3v2 at the
//! start, and in the middle of concatenated files; ID3v1, APEv2, Lyrics3 and
//! an appended ID3v2 at the end), locks on to the frames and indexes every
//! one: its byte range in the mapping and the media time it starts. A
//! consumer paces by time: [`Mp3::frames_due`] says how many frames a
//! listener must have by a media time, [`Mp3::offset_due`] the file offset
//! that is, and [`Mp3::spans`] turns a run of frames into a few byte ranges
//! of the mapping, ready to write without copying. CBR and VBR files are
//! the same to it: the index is of the frames themselves, not a bit-rate
//! estimate.
//!
//! How the frames are found, as decoders find them: a frame header is only
//! eleven set bits and a few fields, which garbage, pictures in tags and
//! audio data all contain, so one header is never trusted alone. The walk
//! locks on only where [`LOCK_FRAMES`] valid headers of one stream (same
//! version, layer and sample rate) follow each other exactly, each where the
//! last one's length says. Once locked, each frame follows the last; a header
//! that does not is a lost sync, and the walk looks for the next lock,
//! reporting what it stepped over ([`Problem`]). A Xing, Info or VBRI header
//! in the first frame is read ([`VbrHeader`]) and that frame is not audio.
//! A last frame cut short is dropped. Free-format streams (no bit rate in
//! the header) are refused with [`Error::FreeFormat`].
//!
//! ```no_run
//! let mp3 = loader::mp3::Mp3::open("media/sample.mp3")?;
//! println!("{}: {} frames, {:.1} s", mp3.title().unwrap_or("(untitled)"), mp3.frames().len(), mp3.duration_secs());
//! // What a listener must have received 2.5 s into the song:
//! let due = mp3.frames_due(2_500_000_000);
//! for span in mp3.spans(0..due) {
//!     println!("{} bytes at {}", span.len, span.offset);
//! }
//! # Ok::<(), loader::mp3::Error>(())
//! ```

mod error;
mod header;
mod id3;
mod trailer;
mod vbr;

use std::ops::Range;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::packet::Span;

pub use error::{Error, Problem, Result};
pub use header::{ChannelMode, Emphasis, FrameHeader, HeaderError, Layer, Version};
pub use id3::{Id3v2Header, Tags};
pub use vbr::{parse as parse_vbr_header, Toc, VbrHeader, VbrKind};

/// Consecutive frames of one stream it takes to lock on. Three is what
/// ffmpeg's demuxer asks for; random bytes pass one header check about once
/// in 5,000 positions and three chained ones about once in 10^10.
pub const LOCK_FRAMES: usize = 3;

/// At most this many problems are listed; the rest are only counted.
const MAX_PROBLEMS: usize = 64;

/// One audio frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// Where it starts in the file, header included.
    pub offset: u64,
    pub len: u32,
    /// When it starts playing, on the file's timeline.
    pub start_ns: u64,
}

impl Frame {
    pub fn span(&self) -> Span {
        Span {
            offset: self.offset,
            len: self.len,
        }
    }

    pub fn end(&self) -> u64 {
        self.offset + u64::from(self.len)
    }
}

/// An indexed MPEG audio file. Immutable once open; share it with `Arc`.
#[derive(Debug)]
pub struct Mp3 {
    data: Bytes,
    path: Option<PathBuf>,
    index: Index,
    id3v2: Option<Tags>,
    id3v1: Option<Tags>,
    tags: Tags,
    audio: Range<u64>,
    problems: Vec<Problem>,
    unlisted_problems: usize,
}

impl Mp3 {
    /// Maps the file at `path` and indexes it. The mapping's hazards are
    /// those of [`crate::Movie::open`]: replace files by renaming.
    pub fn open(path: impl AsRef<Path>) -> Result<Mp3> {
        let path = path.as_ref();
        let data = crate::mapping::map(path, |path, source| Error::Io { path, source })?;
        let mut mp3 = Mp3::index(data)?;
        mp3.path = Some(path.to_owned());
        Ok(mp3)
    }

    /// Indexes a file held in memory.
    pub fn from_bytes(data: impl Into<Bytes>) -> Result<Mp3> {
        Mp3::index(data.into())
    }

    fn index(data: Bytes) -> Result<Mp3> {
        let d: &[u8] = &data;
        let mut problems = Problems::default();
        let (start, id3v2) = leading_tags(d, &mut problems);
        let trailer = trailer::find(d, start);
        let end = trailer.audio_end;
        let index = walk(d, start, end, &mut problems)?;
        let id3v2 = match (id3v2, trailer.id3v2) {
            (Some(a), Some(b)) => Some(merge(a, b)),
            (a, b) => a.or(b),
        };
        let tags = match (&id3v2, &trailer.id3v1) {
            (Some(a), Some(b)) => merge(a.clone(), b.clone()),
            (a, b) => a.clone().or_else(|| b.clone()).unwrap_or_default(),
        };
        Ok(Mp3 {
            path: None,
            index,
            id3v2,
            id3v1: trailer.id3v1,
            tags,
            audio: start as u64..end as u64,
            problems: problems.list,
            unlisted_problems: problems.unlisted,
            data,
        })
    }

    /// The whole file.
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// A zero-copy handle on the bytes of `span`.
    pub fn slice(&self, span: Span) -> Bytes {
        self.data.slice(span.offset as usize..span.end() as usize)
    }

    /// The path the file was opened from, if it came from one.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Every audio frame, in order; never empty.
    pub fn frames(&self) -> &[Frame] {
        &self.index.frames
    }

    /// The bytes of frame `i`.
    pub fn frame_bytes(&self, i: usize) -> &[u8] {
        self.index.frames[i].span().bytes(&self.data)
    }

    /// The first audio frame's header: version, layer, sample rate, channels.
    /// Bit rate and channel mode may change from frame to frame.
    pub fn header(&self) -> &FrameHeader {
        &self.index.header
    }

    /// The time the frames play for, in nanoseconds (the encoder's delay and
    /// padding included: they are in the frames).
    pub fn duration_ns(&self) -> u64 {
        self.index.duration_ns
    }

    pub fn duration_secs(&self) -> f64 {
        self.index.duration_ns as f64 / 1e9
    }

    /// Bytes in the audio frames.
    pub fn audio_bytes(&self) -> u64 {
        self.index.audio_bytes
    }

    /// The average bit rate of the frames, in bits per second: what a
    /// listener receives, on average, at real time.
    pub fn average_bit_rate(&self) -> u32 {
        if self.index.duration_ns == 0 {
            return 0;
        }
        (u128::from(self.index.audio_bytes) * 8 * 1_000_000_000 / u128::from(self.index.duration_ns)) as u32
    }

    /// The bit rate, when every frame has the same one (CBR).
    pub fn constant_bit_rate(&self) -> Option<u32> {
        (self.index.bit_rates.0 == self.index.bit_rates.1).then_some(self.index.bit_rates.0)
    }

    /// The lowest and highest frame bit rates, in bits per second.
    pub fn bit_rate_range(&self) -> (u32, u32) {
        self.index.bit_rates
    }

    /// The Xing, Info or VBRI header, and where its frame is.
    pub fn vbr_header(&self) -> Option<(Span, &VbrHeader)> {
        self.index.vbr.as_ref().map(|(s, v)| (*s, v))
    }

    /// Title, artist and album: from ID3v2, each falling back to ID3v1.
    pub fn tags(&self) -> &Tags {
        &self.tags
    }

    /// The title from the tags. The caller falls back to the file name.
    pub fn title(&self) -> Option<&str> {
        self.tags.title.as_deref()
    }

    pub fn artist(&self) -> Option<&str> {
        self.tags.artist.as_deref()
    }

    /// The ID3v2 tags' fields (the first tag's, completed by later ones).
    pub fn id3v2(&self) -> Option<&Tags> {
        self.id3v2.as_ref()
    }

    pub fn id3v1(&self) -> Option<&Tags> {
        self.id3v1.as_ref()
    }

    /// The bytes between the leading and the trailing tags.
    pub fn audio_range(&self) -> Range<u64> {
        self.audio.clone()
    }

    /// Damage found while indexing (at most 64 listed; see
    /// [`Mp3::unlisted_problems`]). Empty for a clean file.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// Problems found beyond those listed.
    pub fn unlisted_problems(&self) -> usize {
        self.unlisted_problems
    }

    /// How many frames a listener must have by media time `t_ns`: every
    /// frame that has started playing by then (at least one, from time 0).
    pub fn frames_due(&self, t_ns: u64) -> usize {
        self.index.frames.partition_point(|f| f.start_ns <= t_ns)
    }

    /// The file offset up to which the frames are due at media time `t_ns`:
    /// the end of the last due frame.
    pub fn offset_due(&self, t_ns: u64) -> u64 {
        self.index.frames[self.frames_due(t_ns) - 1].end()
    }

    /// The frame playing at media time `t_ns` (the last one after the end).
    pub fn frame_at(&self, t_ns: u64) -> usize {
        self.frames_due(t_ns) - 1
    }

    /// The bytes of `frames` as few spans as possible: adjacent frames are
    /// merged, and bytes between frames (skipped damage) are left out.
    pub fn spans(&self, frames: Range<usize>) -> Spans<'_> {
        Spans {
            frames: self.index.frames.get(frames).unwrap_or(&[]),
        }
    }
}

/// Spans of a run of frames: see [`Mp3::spans`].
#[derive(Debug, Clone)]
pub struct Spans<'a> {
    frames: &'a [Frame],
}

impl Iterator for Spans<'_> {
    type Item = Span;

    fn next(&mut self) -> Option<Span> {
        let (first, rest) = self.frames.split_first()?;
        let mut span = first.span();
        let mut n = 1;
        for f in rest {
            if f.offset != span.end() || u64::from(span.len) + u64::from(f.len) > u64::from(u32::MAX) {
                break;
            }
            span.len += f.len;
            n += 1;
        }
        self.frames = &self.frames[n..];
        Some(span)
    }
}

#[derive(Default)]
struct Problems {
    list: Vec<Problem>,
    unlisted: usize,
}

impl Problems {
    fn push(&mut self, p: Problem) {
        if self.list.len() < MAX_PROBLEMS {
            self.list.push(p);
        } else {
            self.unlisted += 1;
        }
    }
}

/// `a` with its missing fields taken from `b`.
fn merge(a: Tags, b: Tags) -> Tags {
    Tags {
        title: a.title.or(b.title),
        artist: a.artist.or(b.artist),
        album: a.album.or(b.album),
    }
}

/// Steps over the ID3v2 tags at the start (some files have two), reading
/// their fields. Returns where the audio may start.
fn leading_tags(d: &[u8], problems: &mut Problems) -> (usize, Option<Tags>) {
    let mut at = 0;
    let mut tags: Option<Tags> = None;
    while let Some(h) = Id3v2Header::parse(&d[at..]) {
        let available = (d.len() - at - Id3v2Header::LEN) as u64;
        let body = &d[at + Id3v2Header::LEN..];
        if let Some(t) = id3::read_v2(&h, body) {
            tags = Some(match tags {
                Some(first) => merge(first, t),
                None => t,
            });
        }
        let claimed = h.total_len() - Id3v2Header::LEN as u64;
        if claimed > available {
            problems.push(Problem::Id3v2TooLong {
                offset: at as u64,
                claimed,
                available,
            });
            return (at + Id3v2Header::LEN, tags);
        }
        at += h.total_len() as usize;
    }
    (at, tags)
}

/// What the frame walk found.
#[derive(Debug)]
struct Index {
    frames: Vec<Frame>,
    header: FrameHeader,
    duration_ns: u64,
    audio_bytes: u64,
    bit_rates: (u32, u32),
    vbr: Option<(Span, VbrHeader)>,
}

/// Media time, kept in samples since the last sample-rate change so that it
/// never drifts.
#[derive(Default)]
struct Clock {
    base_ns: u64,
    samples: u64,
    rate: u32,
}

impl Clock {
    fn now_ns(&self) -> u64 {
        if self.rate == 0 {
            return self.base_ns;
        }
        self.base_ns + (u128::from(self.samples) * 1_000_000_000 / u128::from(self.rate)) as u64
    }

    /// The start time of a frame of `h`, advancing past it.
    fn tick(&mut self, h: &FrameHeader) -> u64 {
        if h.sample_rate != self.rate {
            self.base_ns = self.now_ns();
            self.samples = 0;
            self.rate = h.sample_rate;
        }
        let start = self.now_ns();
        self.samples += u64::from(h.samples());
        start
    }
}

/// Indexes the frames in `d[start..end]`.
fn walk(d: &[u8], start: usize, end: usize, problems: &mut Problems) -> Result<Index> {
    let mut frames = Vec::new();
    let mut first: Option<FrameHeader> = None;
    let mut vbr = None;
    let mut clock = Clock::default();
    let mut audio_bytes = 0u64;
    let mut bit_rates = (u32::MAX, 0);
    let mut locked: Option<FrameHeader> = None;
    let mut at = start;
    while at < end {
        if let Some(stream) = locked {
            match FrameHeader::parse(&d[at..end]) {
                Ok(h) if stream.same_stream(&h) => {
                    let len = h.frame_len() as usize;
                    if len > end - at {
                        problems.push(Problem::Truncated {
                            offset: at as u64,
                            len: (end - at) as u64,
                            expected: len as u32,
                        });
                        break;
                    }
                    let frame = &d[at..at + len];
                    let span = Span {
                        offset: at as u64,
                        len: len as u32,
                    };
                    if frames.is_empty() && vbr.is_none() {
                        if let Some(v) = vbr::parse(&h, frame) {
                            vbr = Some((span, v));
                            at += len;
                            continue;
                        }
                    }
                    first.get_or_insert(h);
                    frames.push(Frame {
                        offset: at as u64,
                        len: len as u32,
                        start_ns: clock.tick(&h),
                    });
                    audio_bytes += len as u64;
                    bit_rates = (bit_rates.0.min(h.bit_rate), bit_rates.1.max(h.bit_rate));
                    at += len;
                    continue;
                }
                _ => locked = None,
            }
        }
        // Between runs of frames. A whole ID3v2 tag here is the seam between
        // two concatenated files (or a stream's song change): step over it.
        if let Some(h) = Id3v2Header::parse(&d[at..end]) {
            if h.total_len() <= (end - at) as u64 {
                at += h.total_len() as usize;
                continue;
            }
        }
        match find_lock(d, at, end) {
            Some(p) => {
                if p > at {
                    problems.push(Problem::Skipped {
                        offset: at as u64,
                        len: (p - at) as u64,
                    });
                }
                locked = FrameHeader::parse(&d[p..end]).ok();
                at = p;
            }
            None => {
                if frames.is_empty() && vbr.is_none() {
                    if let Err(header::HeaderError::FreeFormat) = FrameHeader::parse(&d[start..end]) {
                        return Err(Error::FreeFormat { offset: start as u64 });
                    }
                }
                problems.push(Problem::Skipped {
                    offset: at as u64,
                    len: (end - at) as u64,
                });
                break;
            }
        }
    }
    let Some(header) = first else {
        return Err(Error::NoFrames {
            start: start as u64,
            end: end as u64,
        });
    };
    Ok(Index {
        frames,
        header,
        duration_ns: clock.now_ns(),
        audio_bytes,
        bit_rates,
        vbr,
    })
}

/// The first offset in `from..end` where a run of frames starts: see
/// [`LOCK_FRAMES`]. A shorter run that ends exactly at `end` counts too, or a
/// file of one or two frames could never lock.
fn find_lock(d: &[u8], from: usize, end: usize) -> Option<usize> {
    let mut p = from;
    while end - p >= 4 {
        p += d[p..end - 3].iter().position(|&b| b == 0xff)?;
        if run_at(d, p, end) {
            return Some(p);
        }
        p += 1;
    }
    None
}

fn run_at(d: &[u8], p: usize, end: usize) -> bool {
    let Ok(stream) = FrameHeader::parse(&d[p..end]) else {
        return false;
    };
    let mut at = p;
    for _ in 0..LOCK_FRAMES {
        match FrameHeader::parse(&d[at..end]) {
            Ok(h) if stream.same_stream(&h) && h.frame_len() as usize <= end - at => {
                at += h.frame_len() as usize;
                if at == end {
                    return true;
                }
            }
            _ => return false,
        }
    }
    true
}

/// Decodes everything a fuzzer can reach from untrusted bytes as MPEG audio:
/// the tags, the frame index, the VBR header, and the pacing queries over
/// the whole timeline. Returns the number of frames. Panics only if the
/// index breaks its own invariants (pacing that goes back in time, spans
/// that do not add up), which is what a fuzzer is for.
pub fn exercise(data: &[u8]) -> usize {
    let Ok(mp3) = Mp3::from_bytes(data.to_vec()) else {
        return 0;
    };
    let n = mp3.frames().len();
    let d = mp3.duration_ns();
    let mut due = 0;
    for i in 0..=16 {
        let t = d / 16 * i;
        let k = mp3.frames_due(t);
        assert!(k >= due && k >= 1 && k <= n);
        let _ = mp3.offset_due(t);
        due = k;
    }
    let bytes: u64 = mp3.spans(0..n).map(|s| u64::from(s.len)).sum();
    assert_eq!(bytes, mp3.audio_bytes());
    let _ = (mp3.average_bit_rate(), mp3.title(), mp3.frame_bytes(n - 1));
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    /// MPEG-1 Layer III, 44.1 kHz, mono; 128 kbit/s is 417 bytes (418
    /// padded), 1152 samples.
    const CBR128: [u8; 4] = [0xff, 0xfb, 0x90, 0xc0];
    const CBR128_PADDED: [u8; 4] = [0xff, 0xfb, 0x92, 0xc0];
    /// The same at 64 kbit/s: 208 bytes.
    const CBR64: [u8; 4] = [0xff, 0xfb, 0x50, 0xc0];
    /// MPEG-1 Layer III at 48 kHz, 128 kbit/s: 384 bytes.
    const AT48K: [u8; 4] = [0xff, 0xfb, 0x94, 0xc0];

    /// A frame of `header` whose body is `fill` (never 0xFF, so that no sync
    /// hides in it).
    fn frame(header: [u8; 4], fill: u8) -> Vec<u8> {
        let len = FrameHeader::parse(&header).unwrap().frame_len() as usize;
        let mut f = vec![fill; len];
        f[..4].copy_from_slice(&header);
        f
    }

    fn frames(header: [u8; 4], n: usize) -> Vec<u8> {
        (0..n).flat_map(|i| frame(header, i as u8 % 200)).collect()
    }

    fn offsets(m: &Mp3) -> Vec<u64> {
        m.frames().iter().map(|f| f.offset).collect()
    }

    #[test]
    fn cbr_index_and_pacing() {
        let mut d = frames(CBR128, 3);
        d.extend(frame(CBR128_PADDED, 1));
        d.extend(frames(CBR128, 6));
        let m = Mp3::from_bytes(d.clone()).unwrap();
        assert_eq!(m.frames().len(), 10);
        assert_eq!(offsets(&m)[..5], [0, 417, 834, 1251, 1669]);
        assert_eq!(m.audio_bytes(), d.len() as u64);
        assert!(m.problems().is_empty());
        // 10 frames of 1152 samples at 44.1 kHz: 261.224489... ms.
        assert_eq!(m.duration_ns(), 261_224_489);
        assert_eq!(m.frames()[1].start_ns, 26_122_448);
        assert_eq!(m.frames()[9].start_ns, 235_102_040);
        assert_eq!(m.constant_bit_rate(), Some(128_000));
        // 4171 bytes in 261.22 ms: short of 128 kbit/s, because the padding
        // slot that makes up the 44.1 kHz remainder comes once in ten frames
        // here, not once in about three as encoders place it.
        assert_eq!(m.average_bit_rate(), 127_736);
        assert_eq!(m.frames_due(0), 1);
        assert_eq!(m.frames_due(26_122_447), 1);
        assert_eq!(m.frames_due(26_122_448), 2);
        assert_eq!(m.frames_due(u64::MAX), 10);
        assert_eq!(m.offset_due(0), 417);
        assert_eq!(m.offset_due(60_000_000), 1251);
        assert_eq!(m.frame_at(60_000_000), 2);
        assert_eq!(m.spans(0..10).collect::<Vec<_>>(), [Span { offset: 0, len: 4171 }]);
        assert_eq!(m.spans(3..4).collect::<Vec<_>>(), [Span { offset: 1251, len: 418 }]);
        assert_eq!(m.spans(8..20).count(), 0);
        assert_eq!(m.frame_bytes(3)[..4], CBR128_PADDED);
    }

    #[test]
    fn vbr_frames_pace_by_their_own_time() {
        let mut d = Vec::new();
        for i in 0..6 {
            d.extend(frame(if i % 2 == 0 { CBR128 } else { CBR64 }, 7));
        }
        let m = Mp3::from_bytes(d).unwrap();
        assert_eq!(offsets(&m), [0, 417, 625, 1042, 1250, 1667]);
        assert_eq!(m.constant_bit_rate(), None);
        assert_eq!(m.bit_rate_range(), (64_000, 128_000));
        // The third frame starts at 2 * 1152 samples, whatever its size.
        assert_eq!(m.offset_due(2 * 26_122_449), 1042);
        // 1875 bytes in 6 * 1152 samples (156.73 ms).
        assert_eq!(m.average_bit_rate(), 95_703);
    }

    #[test]
    fn stray_syncs_do_not_lock() {
        // Garbage with syncs that parse as headers, one even followed by a
        // second header where its length says: two in a row are not enough.
        let mut d = vec![0x11; 100];
        d[10..14].copy_from_slice(&CBR128);
        d.extend(frame(CBR64, 0x22)[..100].iter());
        let lone = d.len();
        d.extend(frame(CBR128, 0x22));
        d.extend(&CBR128);
        d.extend([0x33; 300]);
        let start = d.len();
        d.extend(frames(CBR128, 4));
        let m = Mp3::from_bytes(d).unwrap();
        assert_eq!(m.frames()[0].offset, start as u64);
        assert_eq!(m.frames().len(), 4);
        assert_eq!(
            m.problems(),
            [Problem::Skipped {
                offset: 0,
                len: start as u64
            }]
        );
        assert!(lone < start);
    }

    #[test]
    fn lost_sync_resyncs_and_skips_the_damage() {
        let mut d = frames(CBR128, 6);
        d[417 * 3 + 1] = 0x00; // the fourth header is gone
        let m = Mp3::from_bytes(d.clone()).unwrap();
        assert_eq!(offsets(&m), [0, 417, 834, 1668, 2085]);
        assert_eq!(m.problems(), [Problem::Skipped { offset: 1251, len: 417 }]);
        // The damaged frame is left out of the spans, and out of the timeline.
        assert_eq!(
            m.spans(0..5).collect::<Vec<_>>(),
            [Span { offset: 0, len: 1251 }, Span { offset: 1668, len: 834 }]
        );
        assert_eq!(m.frames()[3].start_ns, 78_367_346);
        // Damage within the first three frames leaves too short a run before
        // it to lock on, so those frames go too: the price of the rule.
        d[417 * 2 + 1] = 0x00;
        let m = Mp3::from_bytes(d).unwrap();
        assert_eq!(offsets(&m), [1668, 2085]);
        assert_eq!(m.problems(), [Problem::Skipped { offset: 0, len: 1668 }]);
    }

    #[test]
    fn truncated_last_frame_is_dropped() {
        let mut d = frames(CBR128, 5);
        d.truncate(417 * 4 + 100);
        let m = Mp3::from_bytes(d).unwrap();
        assert_eq!(m.frames().len(), 4);
        assert_eq!(
            m.problems(),
            [Problem::Truncated {
                offset: 1668,
                len: 100,
                expected: 417
            }]
        );
    }

    #[test]
    fn short_files_lock_when_the_run_ends_the_file() {
        let one = frame(CBR128, 0);
        assert_eq!(Mp3::from_bytes(one.clone()).unwrap().frames().len(), 1);
        let mut tagged = one.clone();
        tagged.extend(frame(CBR128, 1));
        tagged.extend_from_slice(&[0; 128]);
        tagged[834..837].copy_from_slice(b"TAG");
        assert_eq!(Mp3::from_bytes(tagged).unwrap().frames().len(), 2);
        // Cut short, one frame has nothing to chain to and is not trusted.
        assert!(matches!(
            Mp3::from_bytes(one[..400].to_vec()),
            Err(Error::NoFrames { start: 0, end: 400 })
        ));
    }

    #[test]
    fn tags_at_both_ends_and_in_the_middle() {
        // ID3v2.3 with a title, an ID3v2 tag between two songs, then APEv2 and ID3v1.
        let mut d = b"ID3\x03\x00\x00\x00\x00\x00\x12TIT2\x00\x00\x00\x06\x00\x00\x00Title".to_vec();
        d.extend([0; 2]); // padding inside the tag
        let audio = d.len();
        d.extend(frames(CBR128, 3));
        d.extend(b"ID3\x04\x00\x00\x00\x00\x00\x04\xff\xfb\x90\xc0");
        let second = d.len();
        d.extend(frames(CBR128, 3));
        let end = d.len();
        let mut ape = b"APETAGEX".to_vec();
        ape.extend(2000u32.to_le_bytes());
        ape.extend(32u32.to_le_bytes());
        ape.extend([0; 16]);
        d.extend(ape);
        let mut v1 = vec![0u8; 128];
        v1[..3].copy_from_slice(b"TAG");
        v1[3..8].copy_from_slice(b"Other");
        v1[33..39].copy_from_slice(b"Artist");
        d.extend(v1);
        let m = Mp3::from_bytes(d).unwrap();
        assert!(m.problems().is_empty(), "{:?}", m.problems());
        assert_eq!(m.audio_range(), audio as u64..end as u64);
        assert_eq!(m.frames().len(), 6);
        assert_eq!(m.frames()[3].offset, second as u64);
        // The title from ID3v2, the artist from ID3v1 where ID3v2 has none.
        assert_eq!((m.title(), m.artist()), (Some("Title"), Some("Artist")));
        assert_eq!(m.id3v1().unwrap().title.as_deref(), Some("Other"));
        assert_eq!(m.spans(0..6).count(), 2);
    }

    #[test]
    fn id3v2_claiming_more_than_the_file() {
        // A tag saying 2^28 - 1 bytes, holding a sync that would lock if
        // frames were looked for inside tags; then the real frames.
        let mut d = b"ID3\x03\x00\x00\x7f\x7f\x7f\x7f".to_vec();
        d.extend(frame(CBR128, 0x44)[..50].iter());
        let start = d.len();
        d.extend(frames(CBR128, 3));
        let m = Mp3::from_bytes(d.clone()).unwrap();
        assert_eq!(m.frames()[0].offset, start as u64);
        assert_eq!(
            m.problems(),
            [
                Problem::Id3v2TooLong {
                    offset: 0,
                    claimed: (1 << 28) - 1,
                    available: (d.len() - 10) as u64
                },
                Problem::Skipped { offset: 10, len: 50 }
            ]
        );
    }

    #[test]
    fn xing_frame_is_not_audio() {
        let mut x = frame(CBR128, 0);
        x[21..25].copy_from_slice(b"Xing");
        x[25..29].copy_from_slice(&1u32.to_be_bytes());
        x[29..33].copy_from_slice(&3u32.to_be_bytes());
        let mut d = x;
        d.extend(frames(CBR128, 3));
        let m = Mp3::from_bytes(d.clone()).unwrap();
        let (span, v) = m.vbr_header().unwrap();
        assert_eq!(
            (span, v.kind, v.frames),
            (Span { offset: 0, len: 417 }, VbrKind::Xing, Some(3))
        );
        assert_eq!(offsets(&m), [417, 834, 1251]);
        assert_eq!(m.frames()[0].start_ns, 0);
        assert_eq!(m.audio_bytes(), 3 * 417);
        // A header frame alone is no audio.
        assert!(matches!(
            Mp3::from_bytes(d[..417].to_vec()),
            Err(Error::NoFrames { .. })
        ));
        // Only the first frame can be one: later, "Xing" is just audio bytes.
        let mut later = frames(CBR128, 1);
        later.extend(&d);
        assert_eq!(Mp3::from_bytes(later).unwrap().frames().len(), 5);
    }

    #[test]
    fn sample_rate_changes_keep_the_clock_exact() {
        let mut d = frames(CBR128, 3);
        d.extend(frames(AT48K, 3));
        let m = Mp3::from_bytes(d).unwrap();
        assert_eq!(m.frames().len(), 6);
        assert_eq!(m.frames()[3].start_ns, 78_367_346);
        // 1152 samples at 48 kHz are 24 ms each.
        assert_eq!(m.frames()[5].start_ns, 78_367_346 + 48_000_000);
        assert_eq!(m.duration_ns(), 78_367_346 + 72_000_000);
    }

    #[test]
    fn garbage_and_free_format_are_typed_errors() {
        assert!(matches!(
            Mp3::from_bytes(Vec::new()),
            Err(Error::NoFrames { start: 0, end: 0 })
        ));
        assert!(matches!(
            Mp3::from_bytes(vec![0xff; 5000]),
            Err(Error::NoFrames { start: 0, end: 5000 })
        ));
        let mut free = vec![0u8; 2000];
        free[..4].copy_from_slice(&[0xff, 0xfb, 0x00, 0xc0]);
        let e = Mp3::from_bytes(free).unwrap_err();
        assert!(matches!(e, Error::FreeFormat { offset: 0 }), "{e}");
        assert!(e.to_string().contains("free-format"), "{e}");
        let e = Mp3::from_bytes(b"ID3\x03\x00\x00\x00\x00\x00\x00".to_vec()).unwrap_err();
        assert!(matches!(e, Error::NoFrames { start: 10, end: 10 }), "{e}");
    }

    #[test]
    fn problems_are_capped() {
        let mut d = Vec::new();
        for _ in 0..100 {
            d.extend(frames(CBR64, 3));
            d.extend([0x55; 10]);
        }
        let m = Mp3::from_bytes(d).unwrap();
        assert_eq!(m.frames().len(), 300);
        assert_eq!(m.problems().len(), MAX_PROBLEMS);
        assert_eq!(m.unlisted_problems(), 100 - MAX_PROBLEMS);
    }

    #[test]
    fn exercise_runs_on_a_clean_stream() {
        assert_eq!(exercise(&frames(CBR64, 9)), 9);
        assert_eq!(exercise(b"not audio"), 0);
    }
}
