//! Typed errors for MP3 files: what is wrong and at which offset.

use std::fmt;
use std::path::PathBuf;

use super::LOCK_FRAMES;

/// Why a file cannot be indexed as MPEG audio.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot open {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// No run of frames anywhere: not MPEG audio, or nothing but tags.
    #[error(
        "no MPEG audio frames between offsets {start} and {end}: no {LOCK_FRAMES} consecutive valid frame headers"
    )]
    NoFrames { start: u64, end: u64 },
    /// The audio starts with a free-format frame (bit-rate index 0), whose
    /// length is not in its header.
    #[error("free-format MPEG audio at offset {offset}: not supported (the frame length is not in the header)")]
    FreeFormat { offset: u64 },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Damage found, and worked around, while indexing: the file still plays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Bytes that are neither frames nor a known tag, skipped to the next
    /// run of frames: garbage, a damaged frame, or a tag the size of which
    /// was wrong.
    Skipped { offset: u64, len: u64 },
    /// The last frame is cut short (`len` of its `expected` bytes): dropped.
    Truncated { offset: u64, len: u64, expected: u32 },
    /// An ID3v2 tag claims more bytes than the file has after it. Its
    /// header is skipped and the audio looked for right after it.
    Id3v2TooLong { offset: u64, claimed: u64, available: u64 },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Problem::Skipped { offset, len } => write!(f, "skipped {len} bytes that are not frames at offset {offset}"),
            Problem::Truncated { offset, len, expected } => {
                write!(
                    f,
                    "dropped the last frame at offset {offset}: {len} of its {expected} bytes"
                )
            }
            Problem::Id3v2TooLong {
                offset,
                claimed,
                available,
            } => write!(
                f,
                "the ID3v2 tag at offset {offset} claims {claimed} bytes, the file has {available}"
            ),
        }
    }
}
