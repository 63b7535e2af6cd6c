//! A whole movie: the mapping, its tracks, its SDP, and cursors over its
//! hint tracks.

use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::atom::{Atom, Atoms};
use crate::cursor::{HintCursor, MovieCursor, MoviePackets, TrackPackets};
use crate::error::{Error, Result};
use crate::fourcc::kind;
use crate::packet::Span;
use crate::sdp;
use crate::track::{find_hnti, parse_mdhd, Track};

/// An opened hinted movie. Immutable once open; share it with `Arc`.
#[derive(Debug)]
pub struct Movie {
    data: Bytes,
    path: Option<PathBuf>,
    /// Movie timescale and duration, from `mvhd`.
    pub timescale: u32,
    pub duration: u64,
    tracks: Vec<Track>,
    /// Indices into `tracks` of the RTP hint tracks, in file order.
    hint_tracks: Vec<usize>,
    session_sdp: Option<String>,
    sdp: String,
    /// The mapping's entry in the SIGBUS guard's table (see
    /// [`crate::mapping`]), for a movie mapped from a file.
    guard: Option<crate::mapping::Guard>,
}

impl Movie {
    /// Maps the file at `path` and indexes it.
    ///
    /// The mapping is shared, read-only, for the movie's life. If another
    /// process truncates or rewrites the file meanwhile, the movie becomes
    /// [damaged](Movie::is_damaged): with the SIGBUS guard installed
    /// ([`crate::install_sigbus_guard`]) the lost pages read as zeros
    /// instead of killing the process, and its users should stop. Replacing
    /// a file by renaming a new one into place leaves the movie whole.
    pub fn open(path: impl AsRef<Path>) -> Result<Movie> {
        let path = path.as_ref();
        let (data, guard) = crate::mapping::map_with_guard(path, |path, source| Error::Io { path, source })?;
        let mut movie = Movie::parse(data)?;
        movie.guard = guard;
        movie.path = Some(path.to_owned());
        movie.sdp = movie.build_sdp();
        Ok(movie)
    }

    /// Indexes a movie held in memory.
    pub fn from_bytes(data: impl Into<Bytes>) -> Result<Movie> {
        let mut movie = Movie::parse(data.into())?;
        movie.sdp = movie.build_sdp();
        Ok(movie)
    }

    fn parse(data: Bytes) -> Result<Movie> {
        let d: &[u8] = &data;
        let mut moov = None;
        for atom in Atoms::new(d, 0, d.len() as u64, "file") {
            match atom {
                Ok(a) if a.kind == kind::MOOV => {
                    moov = Some(a);
                    break;
                }
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
        let moov = moov.ok_or_else(|| Error::Missing {
            path: "file".into(),
            kind: kind::MOOV,
        })?;
        let (timescale, duration, tracks, session_sdp) = parse_moov(d, &moov)?;
        let mut movie = Movie {
            data,
            path: None,
            timescale,
            duration,
            hint_tracks: Vec::new(),
            tracks,
            session_sdp,
            sdp: String::new(),
            guard: None,
        };
        let ids: Vec<u32> = movie.tracks.iter().map(|t| t.id).collect();
        for t in &mut movie.tracks {
            t.reference_index = t.references.iter().map(|r| ids.iter().position(|id| id == r)).collect();
            t.derive_segments(timescale);
        }
        movie.hint_tracks = (0..movie.tracks.len())
            .filter(|&i| movie.tracks[i].is_rtp_hint())
            .collect();
        if movie.hint_tracks.is_empty() {
            return Err(Error::NoHintTracks);
        }
        Ok(movie)
    }

    /// The whole file.
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// The whole file as the reference-counted owner of every span: a send
    /// path that holds a clone keeps the mapping alive without borrowing the
    /// movie, and one clone covers every packet of the movie.
    #[inline]
    pub fn bytes(&self) -> &Bytes {
        &self.data
    }

    /// A zero-copy handle on the bytes of `span`.
    pub fn slice(&self, span: Span) -> Bytes {
        self.data.slice(span.offset as usize..span.end() as usize)
    }

    /// Whether the file changed under the mapping (truncated or rewritten in
    /// place): its bytes can no longer be trusted, and past a truncation
    /// they read as zeros. One relaxed atomic load.
    #[inline]
    pub fn is_damaged(&self) -> bool {
        self.guard.as_ref().is_some_and(|g| g.is_damaged())
    }

    /// `stat`s the movie's file and marks the movie damaged if the same
    /// file shrank or was modified in place (zero-mapping what a shrink
    /// lost, so that nothing faults on it). Returns [`Movie::is_damaged`].
    pub fn check_file(&self) -> bool {
        match (&self.guard, &self.path) {
            (Some(g), Some(p)) => g.check_file(p),
            _ => false,
        }
    }

    /// The path the movie was opened from, if it came from a file.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Every track, in file order.
    pub fn tracks(&self) -> &[Track] {
        &self.tracks
    }

    /// The RTP hint tracks, in file order.
    pub fn hint_tracks(&self) -> impl Iterator<Item = &Track> + '_ {
        self.hint_tracks.iter().map(|&i| &self.tracks[i])
    }

    /// The track with ID `id`.
    pub fn track(&self, id: u32) -> Option<&Track> {
        self.tracks.iter().find(|t| t.id == id)
    }

    /// Movie duration in seconds: `mvhd`'s, or the longest track's when the
    /// header leaves it zero.
    pub fn duration_secs(&self) -> f64 {
        if self.timescale > 0 && self.duration > 0 {
            return self.duration as f64 / f64::from(self.timescale);
        }
        self.tracks.iter().map(Track::duration_secs).fold(0.0, f64::max)
    }

    /// The session description for the whole movie: session lines, then one
    /// media section per hint track with `a=control:trackID=N`.
    pub fn sdp(&self) -> &str {
        &self.sdp
    }

    /// The movie-level SDP text the file carries (`moov/udta/hnti/rtp `).
    pub fn session_sdp(&self) -> Option<&str> {
        self.session_sdp.as_deref()
    }

    fn hint_index(&self, track_id: u32) -> Result<usize> {
        self.hint_tracks
            .iter()
            .copied()
            .find(|&i| self.tracks[i].id == track_id)
            .ok_or(Error::NoSuchTrack(track_id))
    }

    /// A cursor at the start of hint track `track_id`.
    pub fn cursor(&self, track_id: u32) -> Result<HintCursor> {
        Ok(HintCursor::new(self, self.hint_index(track_id)?))
    }

    /// A cursor over the given hint tracks merged by transmit time.
    pub fn movie_cursor(&self, track_ids: &[u32]) -> Result<MovieCursor> {
        let idx = track_ids
            .iter()
            .map(|&id| self.hint_index(id))
            .collect::<Result<Vec<_>>>()?;
        Ok(MovieCursor::new(self, idx))
    }

    /// The packets of hint track `track_id`, in transmit order.
    pub fn packets(&self, track_id: u32) -> Result<TrackPackets<'_>> {
        Ok(TrackPackets {
            movie: self,
            cursor: self.cursor(track_id)?,
        })
    }

    /// The packets of every hint track, merged by transmit time.
    pub fn all_packets(&self) -> MoviePackets<'_> {
        MoviePackets {
            movie: self,
            cursor: MovieCursor::new(self, self.hint_tracks.iter().copied()),
        }
    }

    fn build_sdp(&self) -> String {
        let name = self
            .path
            .as_deref()
            .and_then(Path::file_name)
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let media: Vec<sdp::MediaSection<'_>> = self
            .hint_tracks
            .iter()
            .map(|&i| {
                let t = &self.tracks[i];
                let source = t
                    .reference_index
                    .iter()
                    .flatten()
                    .next()
                    .map(|&r| self.tracks[r].handler);
                let payload_type = match HintCursor::new(self, i).next_packet(self) {
                    Some(Ok(p)) => p.payload_type,
                    _ => 96,
                };
                sdp::MediaSection {
                    text: t.sdp.as_deref(),
                    fallback_media: match source {
                        Some(kind::VIDE) => "video",
                        Some(kind::SOUN) => "audio",
                        _ => "application",
                    },
                    payload_type,
                    track_id: t.id,
                }
            })
            .collect();
        sdp::build(self.session_sdp.as_deref(), &name, self.duration_secs(), &media)
    }
}

type Moov = (u32, u64, Vec<Track>, Option<String>);

fn parse_moov(data: &[u8], moov: &Atom) -> Result<Moov> {
    let mut header = None;
    let mut tracks = Vec::new();
    let mut session_sdp = None;
    for child in Atoms::children(data, moov, "moov") {
        let child = child?;
        match child.kind {
            kind::MVHD => header = Some(parse_mdhd(data, &child, "moov/mvhd")?),
            kind::TRAK => {
                let path = format!("moov/trak[{}]", tracks.len() + 1);
                tracks.push(Track::parse(data, &child, &path)?);
            }
            kind::UDTA => session_sdp = find_hnti(data, &child, "moov/udta", kind::RTP)?.map(str::to_owned),
            _ => {}
        }
    }
    let (timescale, duration) = header.ok_or_else(|| Error::Missing {
        path: "moov".into(),
        kind: kind::MVHD,
    })?;
    Ok((timescale, duration, tracks, session_sdp))
}
