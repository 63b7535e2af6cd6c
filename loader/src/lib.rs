//! Hinted QuickTime `.mov`, MPEG-4 `.mp4` and 3GPP `.3gp` files to RTP packet
//! recipes, without copying a payload byte.
//!
//! [`Movie::open`] maps a file and indexes its boxes: tracks, sample tables,
//! edit lists, track references and the RTP hint tracks' sample descriptions.
//! A [`HintCursor`] walks one hint track in transmit order and yields
//! [`Packet`]s: transmit time, RTP header fields, and the payload as a few
//! [`Span`]s of the mapping (hint-sample immediates, media-sample slices,
//! sample-description bytes). A [`MovieCursor`] merges the hint tracks and
//! seeks them together to a key frame. [`Movie::sdp`] is the session
//! description to hand a client.
//!
//! MPEG audio files (MP3, and layers I and II) have their own index in
//! [`mp3`]: [`mp3::Mp3::open`] finds every frame past the tags and says which
//! byte ranges are due at which media time, for streaming at the pace they
//! play.
//!
//! There is no IO beyond the mapping, no clock and no threads: callers drive
//! cursors by passing the movie in, and decide what time it is.
//!
//! ```no_run
//! let movie = loader::Movie::open("media/sample.mp4")?;
//! print!("{}", movie.sdp());
//! for packet in movie.all_packets().take(5) {
//!     let p = packet?;
//!     println!("{} ns: seq {} ts {} {} bytes", p.transmit_ns, p.sequence, p.timestamp, p.payload_len());
//! }
//! # Ok::<(), loader::Error>(())
//! ```

pub mod atom;
mod cursor;
mod error;
pub mod fourcc;
mod hint;
mod mapping;
mod movie;
pub mod mp3;
mod packet;
mod sample_table;
mod sdp;
mod track;

pub use cursor::{HintCursor, MovieCursor, MoviePackets, TrackPackets};
pub use error::{Error, Location, Result};
pub use fourcc::FourCc;
pub use hint::RtpHintInfo;
pub use mapping::{install_sigbus_guard, sigbus_guard_installed};
pub use movie::Movie;
pub use packet::{Packet, PacketFlags, Payload, Span};
pub use sample_table::{SampleDescription, SampleTable};
pub use track::{Edit, Track};

/// Decodes everything a fuzzer can reach from untrusted bytes: the box walk,
/// every track, the SDP, and every packet of every hint track, merged and
/// after a seek. Returns the number of packets decoded. Never panics.
pub fn exercise(data: &[u8]) -> usize {
    let Ok(movie) = Movie::from_bytes(data.to_vec()) else {
        return 0;
    };
    let mut n = 0;
    let mut all = movie.all_packets();
    for p in all.by_ref().flatten() {
        n += p.payload_len().min(1);
    }
    let d = movie.duration_secs();
    if d.is_finite() && d > 0.0 {
        all.seek((d * 0.5e9) as i64);
        n += all.flatten().count();
    }
    n
}
