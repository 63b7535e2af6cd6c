//! One listener of an MP3 file, without IO: which bytes it is due at `now`,
//! as zero-copy slices of the file's mapping with ICY metadata blocks
//! between them, and when it is due more.
//!
//! A listener joins at the first frame and gets [`BURST`] of audio at once,
//! so that its player starts at once, instead of waiting for its buffer to
//! fill at real time. From then on it is kept that far ahead of real time:
//! at wall time `joined + t` it has every frame that starts playing by
//! media time `t + BURST`, by the frames' own timestamps (the loader's
//! index: CBR and VBR alike, whatever the bit rate does). The end of the
//! file is the end of its stream. What it gets is the audio frames alone:
//! the ID3 tags (whose title goes into the metadata instead) and a Xing or
//! Info frame are not sent, as Icecast's own file serving and every radio
//! source leaves them out of a stream.

use std::collections::VecDeque;
use std::num::NonZeroUsize;
use std::sync::Arc;

use bytes::Bytes;
use loader::mp3::Mp3;

use super::icy::{Interleaver, Metadata, Segment};
use super::mount::{MountId, MountReplica};
use crate::source::Nanos;

const MS: Nanos = 1_000_000;

/// The audio a listener gets at once on joining, in media time, and then
/// its lead over real time. Icecast bursts 64 KB (4 s at 128 kbit/s);
/// players start playing after one to three seconds of it.
pub const BURST: Nanos = 2_000 * MS;

/// The least time between two sends to one listener: frames due meanwhile
/// go together. MP3 frames last 24 to 72 ms, so this sends one to three at
/// a time, far inside the listener's lead, for a fraction of the wake-ups.
pub const MIN_GAP: Nanos = 50 * MS;

/// What a listener listens to.
#[derive(Debug, Clone)]
pub enum Feed {
    /// A file, from its start, paced by its frames' timestamps.
    File(Arc<Mp3>),
    /// A live mount, from its shard replica's oldest frame, as frames
    /// arrive.
    Mount(MountId),
}

/// What the control core gives a shard with a listener's connection: the
/// file or mount, what was asked, and the response head to send first.
#[derive(Debug, Clone)]
pub struct ListenerStart {
    pub feed: Feed,
    /// The request path, for the access log.
    pub path: String,
    /// The response head, written before the audio.
    pub head: Vec<u8>,
    /// The metadata interval, when the listener asked for metadata.
    pub metaint: Option<NonZeroUsize>,
    /// The title block (from the tags or the file name; a mount's comes
    /// from its replica).
    pub metadata: Metadata,
    pub user_agent: Option<String>,
    /// Bytes that may wait for a slow listener beyond its burst before it
    /// is dropped.
    pub queue_bytes: usize,
}

/// A listener's place in its file or mount.
#[derive(Debug)]
pub struct Listener {
    cursor: Cursor,
    icy: Option<Interleaver>,
    segments: Vec<Segment>,
}

#[derive(Debug)]
enum Cursor {
    File {
        mp3: Arc<Mp3>,
        /// The next frame to send.
        next: usize,
        joined: Nanos,
    },
    Mount {
        id: MountId,
        /// The number of the next frame to send (`None` before the first
        /// serve: the replica's oldest).
        next: Option<u64>,
    },
}

/// The zero byte of an unchanged metadata block.
static UNCHANGED: [u8; 1] = [0];

impl Listener {
    /// A listener of `start` joining at `now`.
    pub fn new(start: &ListenerStart, now: Nanos) -> Listener {
        let icy = start.metaint.map(|m| {
            let mut icy = Interleaver::new(m);
            icy.set_metadata(start.metadata.clone());
            icy
        });
        let cursor = match &start.feed {
            Feed::File(mp3) => Cursor::File {
                mp3: mp3.clone(),
                next: 0,
                joined: now,
            },
            Feed::Mount(id) => Cursor::Mount { id: *id, next: None },
        };
        Listener {
            cursor,
            icy,
            segments: Vec::new(),
        }
    }

    /// The mount it listens to, if it is a mount's listener.
    pub fn mount(&self) -> Option<MountId> {
        match self.cursor {
            Cursor::Mount { id, .. } => Some(id),
            Cursor::File { .. } => None,
        }
    }

    /// Pushes `audio` onto `out`, with metadata blocks where they fall, and
    /// returns the bytes pushed.
    fn push_audio(
        icy: Option<&mut Interleaver>,
        segments: &mut Vec<Segment>,
        audio: Bytes,
        out: &mut VecDeque<Bytes>,
    ) -> usize {
        let mut bytes = audio.len();
        let Some(icy) = icy else {
            out.push_back(audio);
            return bytes;
        };
        segments.clear();
        icy.segments(audio.len(), segments);
        for s in segments.drain(..) {
            let b = match s {
                Segment::Audio(r) => audio.slice(r),
                Segment::Metadata(m) => {
                    bytes += m.block().len();
                    Bytes::from_owner(m)
                }
                Segment::Unchanged => {
                    bytes += 1;
                    Bytes::from_static(&UNCHANGED)
                }
            };
            out.push_back(b);
        }
        bytes
    }

    /// Pushes onto `out` what is due at `now` of a file and returns how many
    /// bytes that was, and when more will be due: `None` once the whole file
    /// has been pushed. A mount's listener is served by
    /// [`serve_mount`](Self::serve_mount) instead, and gets `(0, None)`.
    pub fn serve(&mut self, now: Nanos, out: &mut VecDeque<Bytes>) -> (usize, Option<Nanos>) {
        let Cursor::File { mp3, next, joined } = &mut self.cursor else {
            return (0, None);
        };
        let frames = mp3.frames();
        let media = now.saturating_sub(*joined) + BURST;
        let due = mp3.frames_due(media).max(*next);
        let mut bytes = 0;
        for span in mp3.spans(*next..due) {
            let audio = mp3.slice(span);
            bytes += Self::push_audio(self.icy.as_mut(), &mut self.segments, audio, out);
        }
        *next = due;
        let Some(f) = frames.get(due) else {
            return (bytes, None);
        };
        let at = (*joined + f.start_ns).saturating_sub(BURST);
        (bytes, Some(at.max(now + MIN_GAP)))
    }

    /// Pushes onto `out` the frames of its mount's `replica` it has not had
    /// (at the first call, all that the replica holds: the burst), with the
    /// replica's title in the metadata, and returns the bytes pushed.
    pub fn serve_mount(&mut self, replica: &MountReplica, out: &mut VecDeque<Bytes>) -> usize {
        let Cursor::Mount { next, .. } = &mut self.cursor else {
            return 0;
        };
        let from = next.unwrap_or(replica.oldest());
        if let Some(icy) = self.icy.as_mut() {
            icy.set_metadata(replica.title.clone());
        }
        let mut bytes = 0;
        for f in replica.since(from) {
            bytes += Self::push_audio(self.icy.as_mut(), &mut self.segments, f.data.clone(), out);
        }
        *next = Some(replica.end());
        bytes
    }

    /// Frames of a file sent so far.
    pub fn frames_sent(&self) -> usize {
        match self.cursor {
            Cursor::File { next, .. } => next,
            Cursor::Mount { .. } => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::icecast::icy::Stripper;

    /// An MPEG-1 Layer III CBR stream: 128 kbit/s at 44.1 kHz, 417-byte
    /// frames of 1152 samples (26.12 ms), each filled with its number.
    fn cbr(frames: usize) -> Vec<u8> {
        let mut v = Vec::new();
        for i in 0..frames {
            let mut f = vec![i as u8; 417];
            f[..4].copy_from_slice(&[0xff, 0xfb, 0x90, 0x64]);
            v.extend_from_slice(&f);
        }
        v
    }

    fn start(data: Vec<u8>, metaint: Option<usize>) -> ListenerStart {
        ListenerStart {
            feed: Feed::File(Arc::new(Mp3::from_bytes(data).unwrap())),
            path: "/t.mp3".into(),
            head: Vec::new(),
            metaint: metaint.map(|m| NonZeroUsize::new(m).unwrap()),
            metadata: Metadata::title("T"),
            user_agent: None,
            queue_bytes: 1 << 20,
        }
    }

    fn concat(out: &VecDeque<Bytes>) -> Vec<u8> {
        out.iter().flat_map(|b| b.iter().copied()).collect()
    }

    #[test]
    fn bursts_then_keeps_its_lead_at_the_frames_rate() {
        let data = cbr(400); // 10.4 s
        let s = start(data.clone(), None);
        let frame_ns = 1152 * 1_000_000_000 / 44_100;
        let t0 = 5_000 * MS;
        let mut l = Listener::new(&s, t0);
        let mut out = VecDeque::new();
        let (n, next) = l.serve(t0, &mut out);
        // Every frame that starts by 2 s: 77 of them (76 * 26.12 ms < 2 s).
        let burst = (BURST / frame_ns + 1) as usize;
        assert_eq!(l.frames_sent(), burst);
        assert_eq!(n, burst * 417);
        let next = next.unwrap();
        assert_eq!(next, (t0 + burst as u64 * frame_ns - BURST).max(t0 + MIN_GAP));
        // Serve at each time asked, and at odd times between, up to 6 s in:
        // the listener always has exactly the frames due then.
        let mut at = next;
        while at < t0 + 6_000 * MS {
            let (_, next) = l.serve(at, &mut out);
            let due = ((at - t0 + BURST) / frame_ns + 1) as usize;
            assert_eq!(l.frames_sent(), due, "at {at}");
            at = next.unwrap() + 7 * MS;
        }
        // Serving early sends nothing new.
        let before = l.frames_sent();
        let (n, _) = l.serve(at - 7 * MS, &mut out);
        assert!(n == 0 || l.frames_sent() > before);
        // The end: everything, in order, then None.
        let (_, next) = l.serve(t0 + 20_000 * MS, &mut out);
        assert_eq!(next, None);
        assert_eq!(concat(&out), data, "the frames, whole and in order");
    }

    #[test]
    fn audio_is_sliced_from_the_mapping() {
        let s = start(cbr(50), None);
        let Feed::File(mp3) = &s.feed else { unreachable!() };
        let base = mp3.data().as_ptr_range();
        let mut l = Listener::new(&s, 0);
        let mut out = VecDeque::new();
        l.serve(0, &mut out);
        assert!(!out.is_empty());
        for b in &out {
            assert!(base.contains(&b.as_ptr()), "a copy, not a slice of the file");
        }
    }

    #[test]
    fn metadata_lands_every_metaint_bytes_and_strips_back() {
        let data = cbr(300);
        let s = start(data.clone(), Some(1000));
        let mut l = Listener::new(&s, 0);
        let mut out = VecDeque::new();
        let mut at = 0;
        let mut total = 0;
        loop {
            let (n, next) = l.serve(at, &mut out);
            total += n;
            match next {
                Some(t) => at = t,
                None => break,
            }
        }
        let stream = concat(&out);
        assert_eq!(stream.len(), total);
        let mut strip = Stripper::new(NonZeroUsize::new(1000).unwrap());
        let (mut audio, mut blocks) = (Vec::new(), Vec::new());
        strip.feed(&stream, &mut audio, &mut blocks);
        assert_eq!(audio, data);
        assert_eq!(blocks.len(), 1, "the title once, zero bytes after");
        assert_eq!(blocks[0].audio_offset, 1000);
        assert_eq!(blocks[0].title().as_deref(), Some("T"));
        // One block for every whole interval but the last boundary at the end.
        let blocks_total = (data.len() - 1) / 1000;
        assert_eq!(
            stream.len(),
            data.len() + Metadata::title("T").block().len() + blocks_total - 1
        );
    }
}
