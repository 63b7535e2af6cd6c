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

/// What the control core gives a shard with a listener's connection: the
/// file, what was asked, and the response head to send first.
#[derive(Debug, Clone)]
pub struct ListenerStart {
    pub mp3: Arc<Mp3>,
    /// The request path, for the access log.
    pub path: String,
    /// The response head, written before the audio.
    pub head: Vec<u8>,
    /// The metadata interval, when the listener asked for metadata.
    pub metaint: Option<NonZeroUsize>,
    /// The title block (from the tags or the file name).
    pub metadata: Metadata,
    pub user_agent: Option<String>,
    /// Bytes that may wait for a slow listener beyond its burst before it
    /// is dropped.
    pub queue_bytes: usize,
}

/// A listener's place in the file.
#[derive(Debug)]
pub struct Listener {
    mp3: Arc<Mp3>,
    icy: Option<Interleaver>,
    /// The next frame to send.
    next: usize,
    joined: Nanos,
    segments: Vec<Segment>,
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
        Listener {
            mp3: start.mp3.clone(),
            icy,
            next: 0,
            joined: now,
            segments: Vec::new(),
        }
    }

    /// Pushes onto `out` what is due at `now` and returns how many bytes
    /// that was, and when more will be due: `None` once the whole file has
    /// been pushed.
    pub fn serve(&mut self, now: Nanos, out: &mut VecDeque<Bytes>) -> (usize, Option<Nanos>) {
        let frames = self.mp3.frames();
        let media = now.saturating_sub(self.joined) + BURST;
        let due = self.mp3.frames_due(media).max(self.next);
        let mut bytes = 0;
        for span in self.mp3.spans(self.next..due) {
            let audio = self.mp3.slice(span);
            bytes += audio.len();
            let Some(icy) = self.icy.as_mut() else {
                out.push_back(audio);
                continue;
            };
            self.segments.clear();
            icy.segments(audio.len(), &mut self.segments);
            for s in self.segments.drain(..) {
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
        }
        self.next = due;
        let Some(f) = frames.get(due) else {
            return (bytes, None);
        };
        let at = (self.joined + f.start_ns).saturating_sub(BURST);
        (bytes, Some(at.max(now + MIN_GAP)))
    }

    /// Frames sent so far.
    pub fn frames_sent(&self) -> usize {
        self.next
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
            mp3: Arc::new(Mp3::from_bytes(data).unwrap()),
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
        let base = s.mp3.data().as_ptr_range();
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
