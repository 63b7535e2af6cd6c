//! A live MP3 stream cut into frames as it arrives, without IO: what a
//! source sends (ffmpeg's `-f mp3`, libshout, butt, a relayed mount) is
//! bytes in chunks of any size, and listeners must join at a frame
//! boundary and never get half a frame, so the stream is split here once
//! and every listener gets the same frames as [`Bytes`] slices.
//!
//! How the frames are found is the loader's rule for files
//! (`loader::mp3`), kept to what a live stream allows: a header is trusted
//! only when the next frame's header follows it where its length says and
//! belongs to the same stream (version, layer, sample rate). Once locked,
//! each frame follows the last; a header that does not is a lost sync, and
//! the splitter looks for a new lock, stepping over what lies between.
//!
//! What sources send besides frames, and what is done with it:
//!
//! - **ID3v2 tags.** ffmpeg's MP3 muxer writes one before the first frame,
//!   and some sources send one at each song. Skipped whole, wherever the
//!   stream is between frames.
//! - **A Xing, Info or VBRI frame** (written by encoders that can seek
//!   back, which a live source cannot, though some send one anyway). Not
//!   audio: dropped, as the file listener drops it.
//! - **Garbage** (not MPEG audio, or a source sending the wrong thing):
//!   after [`MAX_GARBAGE`] bytes without a lock the stream is refused
//!   ([`SplitError::NoSync`]) and the source goes; listeners of other
//!   mounts never see any of it.
//! - **Free format** (no bit rate in the header): refused, as for files.

use bytes::{Bytes, BytesMut};
use loader::mp3::{parse_vbr_header, FrameHeader, HeaderError, Id3v2Header};

use crate::source::Nanos;

/// Bytes a stream may hold without a frame lock (at its start, or after a
/// lost sync) before it is refused: about four seconds of 128 kbit/s audio,
/// far more than any tag or glitch a working source sends.
pub const MAX_GARBAGE: usize = 64 * 1024;

/// An ID3v2 tag larger than this is not skipped but refused: a live source
/// sends titles, not pictures.
const MAX_TAG: u64 = 1 << 20;

/// One MPEG audio frame of a live stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioFrame {
    /// The whole frame, header included.
    pub data: Bytes,
    /// How long it plays.
    pub duration: Nanos,
}

/// Why a stream cannot be split.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    #[error("no MPEG audio frames in {0} bytes")]
    NoSync(usize),
    #[error("free-format MPEG audio (no bit rate in the frame headers) is not supported")]
    FreeFormat,
    #[error("an ID3v2 tag of {0} bytes inside the stream")]
    HugeTag(u64),
}

/// Splits a stream into frames. Feed it with [`push`](Self::push).
#[derive(Debug, Default)]
pub struct FrameSplitter {
    buf: BytesMut,
    /// The stream's header while locked.
    locked: Option<FrameHeader>,
    /// Bytes of a tag still to skip.
    skip: u64,
    /// Bytes stepped over since the last frame (or the start).
    garbage: usize,
    /// Whether any frame was emitted: a Xing/Info frame is looked for only
    /// in the first.
    started: bool,
    /// Totals, for the logs.
    pub frames: u64,
    pub skipped: u64,
}

impl FrameSplitter {
    pub fn new() -> FrameSplitter {
        FrameSplitter::default()
    }

    /// The header of the stream's frames while locked on.
    pub fn header(&self) -> Option<&FrameHeader> {
        self.locked.as_ref()
    }

    /// Takes `data`, the stream's next bytes, and appends every frame now
    /// whole to `out`. The bytes are copied once, into the buffer the
    /// frames are slices of.
    pub fn push(&mut self, data: &[u8], out: &mut Vec<AudioFrame>) -> Result<(), SplitError> {
        self.buf.extend_from_slice(data);
        loop {
            if self.skip > 0 {
                let n = self.skip.min(self.buf.len() as u64) as usize;
                let _ = self.buf.split_to(n);
                self.skip -= n as u64;
                self.skipped += n as u64;
                if self.skip > 0 {
                    return Ok(());
                }
            }
            let b = &self.buf[..];
            if b.len() < 4 {
                return Ok(());
            }
            if b.starts_with(b"ID3") {
                if b.len() < Id3v2Header::LEN {
                    return Ok(());
                }
                if let Some(tag) = Id3v2Header::parse(b) {
                    let len = tag.total_len();
                    if len > MAX_TAG {
                        return Err(SplitError::HugeTag(len));
                    }
                    self.skip = len;
                    continue;
                }
            }
            let header = match FrameHeader::parse(b) {
                Ok(h) => Some(h),
                Err(HeaderError::FreeFormat) if self.locked.is_none() && self.garbage == 0 => {
                    return Err(SplitError::FreeFormat)
                }
                Err(_) => None,
            };
            let fits = |h: &FrameHeader| self.locked.as_ref().is_none_or(|l| l.same_stream(h));
            let Some(h) = header.filter(fits) else {
                self.lose_sync()?;
                continue;
            };
            let len = h.frame_len() as usize;
            if len < 4 {
                self.lose_sync()?;
                continue;
            }
            if self.locked.is_none() {
                // A lock needs the next header, of the same stream, where
                // this frame's length says.
                let Some(next) = b.get(len..len + 4) else {
                    return Ok(());
                };
                match FrameHeader::parse(next) {
                    Ok(n) if h.same_stream(&n) => self.locked = Some(h),
                    _ => {
                        self.lose_sync()?;
                        continue;
                    }
                }
            }
            if b.len() < len {
                return Ok(());
            }
            let data = self.buf.split_to(len).freeze();
            self.garbage = 0;
            let first = !self.started;
            self.started = true;
            if first && parse_vbr_header(&h, &data).is_some() {
                self.skipped += len as u64;
                continue;
            }
            self.frames += 1;
            out.push(AudioFrame {
                data,
                duration: h.duration_ns(),
            });
        }
    }

    /// Steps over one byte that starts no frame.
    fn lose_sync(&mut self) -> Result<(), SplitError> {
        self.locked = None;
        let _ = self.buf.split_to(1);
        self.skipped += 1;
        self.garbage += 1;
        if self.garbage > MAX_GARBAGE {
            return Err(SplitError::NoSync(self.garbage));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 128 kbit/s 44.1 kHz MPEG-1 Layer III frames of 417 bytes, each
    /// filled with its number (the sync bytes never occur in the filling).
    fn frames(n: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| {
                let mut f = vec![(i % 200) as u8; 417];
                f[..4].copy_from_slice(&[0xff, 0xfb, 0x90, 0x64]);
                f
            })
            .collect()
    }

    fn split(stream: &[u8], chunk: usize) -> (Vec<AudioFrame>, Result<(), SplitError>) {
        let mut s = FrameSplitter::new();
        let mut out = Vec::new();
        for c in stream.chunks(chunk.max(1)) {
            if let Err(e) = s.push(c, &mut out) {
                return (out, Err(e));
            }
        }
        (out, Ok(()))
    }

    #[test]
    fn frames_come_out_whole_in_any_chunking_after_a_tag() {
        let f = frames(40);
        let mut stream = b"ID3\x04\x00\x00\x00\x00\x00\x0a0123456789".to_vec();
        for x in &f {
            stream.extend_from_slice(x);
        }
        for chunk in [1, 3, 100, 417, 1000, 100_000] {
            let (out, r) = split(&stream, chunk);
            r.unwrap();
            // The last frame waits for the next header only while unlocked:
            // locked, every whole frame is out.
            assert_eq!(out.len(), 40, "chunk {chunk}");
            for (o, x) in out.iter().zip(&f) {
                assert_eq!(&o.data[..], &x[..]);
                assert_eq!(o.duration, 1152 * 1_000_000_000 / 44_100);
            }
        }
    }

    #[test]
    fn garbage_between_frames_is_stepped_over_and_garbage_alone_refused() {
        let f = frames(10);
        let mut stream = Vec::new();
        stream.extend_from_slice(&f[0]);
        stream.extend_from_slice(&f[1]);
        stream.extend_from_slice(b"junk in the middle");
        for x in &f[2..] {
            stream.extend_from_slice(x);
        }
        let (out, r) = split(&stream, 50);
        r.unwrap();
        assert_eq!(out.len(), 10);
        assert_eq!(&out[2].data[..], &f[2][..]);

        let junk: Vec<u8> = (0..200_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 | 1)
            .collect();
        let (out, r) = split(&junk, 4096);
        assert!(out.is_empty());
        assert!(matches!(r, Err(SplitError::NoSync(_))), "{r:?}");
    }

    #[test]
    fn a_lone_header_in_garbage_is_no_lock() {
        let mut stream = vec![0u8; 100];
        stream.extend_from_slice(&[0xff, 0xfb, 0x90, 0x64]);
        stream.extend_from_slice(&[0u8; 1000]);
        let (out, r) = split(&stream, 7);
        r.unwrap();
        assert!(out.is_empty());
    }
}
