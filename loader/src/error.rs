//! Typed errors: each says what is wrong and where (box path and file offset).

use std::fmt;
use std::path::PathBuf;

use crate::fourcc::FourCc;

/// Where in the file a problem was found: the path of boxes that leads to it
/// (`moov/trak[2]/mdia/minf/stbl/stsz`) and the absolute byte offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub path: String,
    pub offset: u64,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at offset {}", self.path, self.offset)
    }
}

/// Everything that can go wrong while opening a movie or reading its packets.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot open {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The bytes do not form valid boxes, or a box's contents are malformed.
    #[error("malformed {at}: {what}")]
    Malformed { at: Location, what: String },
    /// A box the movie cannot do without is absent.
    #[error("missing `{kind}` box in {path}")]
    Missing { path: String, kind: FourCc },
    /// The file parsed, but it has no RTP hint track: it cannot be streamed as is.
    #[error("no RTP hint tracks: the movie must be hinted (for example with `ffmpeg -movflags +rtphint`)")]
    NoHintTracks,
    /// A hint packet is malformed or points outside the file or the sample it names.
    #[error("bad hint packet in track {track}, sample {sample}: {what}")]
    BadPacket {
        track: u32,
        sample: u32,
        what: &'static str,
    },
    /// The caller named a track the movie does not have.
    #[error("no hint track with ID {0}")]
    NoSuchTrack(u32),
}

impl Error {
    pub(crate) fn malformed(path: &str, offset: u64, what: impl Into<String>) -> Self {
        Error::Malformed {
            at: Location {
                path: path.to_owned(),
                offset,
            },
            what: what.into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
