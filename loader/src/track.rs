//! Tracks (`trak`): identity, handler, timescale, edit list, references and
//! the sample table.

use crate::atom::{Atom, Atoms, Reader};
use crate::error::{Error, Result};
use crate::fourcc::{kind, FourCc};
use crate::hint::RtpHintInfo;
use crate::sample_table::SampleTable;

/// One entry of an edit list (`elst`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edit {
    /// Length of the edit, in the movie's timescale.
    pub duration: u64,
    /// Where in the media the edit starts, in the track's timescale; -1 for
    /// an empty edit (a pause in the presentation).
    pub media_time: i64,
    /// Playback rate, 16.16 fixed point; 1.0 is 0x10000.
    pub rate: i32,
}

/// A stretch of the presentation taken from the media, derived from the edit
/// list. Times are in the track's timescale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Segment {
    /// Where the stretch starts on the movie timeline.
    pub movie_start: i64,
    /// Media times covered: samples decoded at `media_start <= t < media_end`.
    pub media_start: u64,
    pub media_end: u64,
}

/// A track of the movie.
#[derive(Debug, Clone)]
pub struct Track {
    pub id: u32,
    /// The handler type: `vide`, `soun`, `hint`, ...
    pub handler: FourCc,
    /// Format of the first sample description (`avc1`, `mp4a`, `rtp `, ...).
    pub codec: Option<FourCc>,
    pub timescale: u32,
    /// Duration from `mdhd`, in the track's timescale.
    pub duration: u64,
    pub edits: Vec<Edit>,
    /// Track IDs named by `tref/hint`: the tracks a hint track draws from.
    pub references: Vec<u32>,
    /// The track's own SDP fragment (`udta/hnti/sdp `), if any.
    pub sdp: Option<String>,
    /// Present for RTP hint tracks.
    pub rtp: Option<RtpHintInfo>,
    pub samples: SampleTable,
    pub(crate) segments: Vec<Segment>,
    /// `references` resolved to indices into the movie's tracks.
    pub(crate) reference_index: Vec<Option<usize>>,
}

impl Track {
    /// Whether this is an RTP hint track the loader can stream.
    pub fn is_rtp_hint(&self) -> bool {
        self.rtp.is_some()
    }

    /// Duration in seconds.
    pub fn duration_secs(&self) -> f64 {
        if self.timescale == 0 {
            0.0
        } else {
            self.duration as f64 / f64::from(self.timescale)
        }
    }

    /// For an RTP hint track: the RTP timestamp (as hinted, `tsro` included)
    /// that corresponds to `npt_ns` on the movie timeline. This is what
    /// `RTP-Info: rtptime` must carry for a play that starts there (RFC 2326
    /// section 12.33), and it is consistent across tracks, so clients can
    /// line streams up. `None` for other tracks.
    pub fn rtp_time_at(&self, npt_ns: i64) -> Option<u32> {
        let rtp = self.rtp?;
        let ticks = crate::cursor::ns_to_ticks(npt_ns, rtp.rtp_timescale);
        Some((ticks as u32).wrapping_add(rtp.timestamp_offset as u32))
    }

    pub(crate) fn parse(data: &[u8], trak: &Atom, path: &str) -> Result<Track> {
        let mut tkhd = None;
        let mut mdia = None;
        let mut edits = Vec::new();
        let mut references = Vec::new();
        let mut sdp = None;
        for child in Atoms::children(data, trak, path) {
            let child = child?;
            match child.kind {
                kind::TKHD => tkhd = Some(child),
                kind::MDIA => mdia = Some(child),
                kind::EDTS => {
                    let p = format!("{path}/edts");
                    for e in Atoms::children(data, &child, &p) {
                        let e = e?;
                        if e.kind == kind::ELST {
                            edits = parse_elst(data, &e, &format!("{p}/elst"))?;
                        }
                    }
                }
                kind::TREF => {
                    let p = format!("{path}/tref");
                    for r in Atoms::children(data, &child, &p) {
                        let r = r?;
                        if r.kind == kind::HINT {
                            let mut rd = Reader::body(data, &r, &p);
                            while rd.remaining() >= 4 {
                                references.push(rd.u32()?);
                            }
                        }
                    }
                }
                kind::UDTA => {
                    sdp = find_hnti(data, &child, &format!("{path}/udta"), kind::SDP)?.map(|text| text.to_owned())
                }
                _ => {}
            }
        }
        let tkhd = tkhd.ok_or_else(|| Error::Missing {
            path: path.to_owned(),
            kind: kind::TKHD,
        })?;
        let id = parse_tkhd(data, &tkhd, &format!("{path}/tkhd"))?;
        let mdia = mdia.ok_or_else(|| Error::Missing {
            path: path.to_owned(),
            kind: kind::MDIA,
        })?;
        let mdia_path = format!("{path}/mdia");
        let (mut mdhd, mut hdlr, mut minf) = (None, None, None);
        for child in Atoms::children(data, &mdia, &mdia_path) {
            let child = child?;
            match child.kind {
                kind::MDHD => mdhd = Some(child),
                kind::HDLR => hdlr = hdlr.or(Some(child)),
                kind::MINF => minf = Some(child),
                _ => {}
            }
        }
        let missing = |k| Error::Missing {
            path: mdia_path.clone(),
            kind: k,
        };
        let (timescale, duration) = parse_mdhd(
            data,
            &mdhd.ok_or_else(|| missing(kind::MDHD))?,
            &format!("{mdia_path}/mdhd"),
        )?;
        let handler = parse_hdlr(
            data,
            &hdlr.ok_or_else(|| missing(kind::HDLR))?,
            &format!("{mdia_path}/hdlr"),
        )?;
        let minf = minf.ok_or_else(|| missing(kind::MINF))?;
        let minf_path = format!("{mdia_path}/minf");
        let mut stbl = None;
        for child in Atoms::children(data, &minf, &minf_path) {
            let child = child?;
            if child.kind == kind::STBL {
                stbl = Some(child);
            }
        }
        let stbl = stbl.ok_or_else(|| Error::Missing {
            path: minf_path.clone(),
            kind: kind::STBL,
        })?;
        let stbl_path = format!("{minf_path}/stbl");
        let samples = SampleTable::parse(data, &stbl, &stbl_path)?;
        let codec = samples.descriptions.first().map(|d| d.format);
        let rtp = match samples.descriptions.first() {
            Some(d) if handler == kind::HINT && d.format == kind::RTP => {
                Some(RtpHintInfo::parse(data, d, &format!("{stbl_path}/stsd/rtp "))?)
            }
            _ => None,
        };
        // Hint samples are each at least a 4-byte header and never share
        // bytes, so no hint track has more samples than a quarter of the file
        // has room for. With one constant `stsz` size, a damaged count claims
        // up to four billion in four bytes, and a cursor would spend minutes
        // walking them.
        if rtp.is_some() && u64::from(samples.len()) > data.len() as u64 / 4 {
            return Err(Error::malformed(
                &format!("{stbl_path}/stsz"),
                stbl.offset,
                format!(
                    "{} hint samples cannot fit in a {}-byte file",
                    samples.len(),
                    data.len()
                ),
            ));
        }
        Ok(Track {
            id,
            handler,
            codec,
            timescale,
            duration,
            edits,
            references,
            sdp,
            rtp,
            samples,
            segments: Vec::new(),
            reference_index: Vec::new(),
        })
    }

    /// Derives the media segments from the edit list, given the movie's
    /// timescale.
    ///
    /// Empty edits delay what follows; edits with a zero rate (dwells) are
    /// taken as empty. The last media segment is left open at its end: writers
    /// often make the final edit end exactly at the last sample's decode time
    /// (ffmpeg does, for hint tracks), and cutting that sample would drop the
    /// last frame's packets.
    pub(crate) fn derive_segments(&mut self, movie_timescale: u32) {
        let to_track = |d: u64| -> u64 {
            if movie_timescale == 0 {
                return 0;
            }
            let v = u128::from(d) * u128::from(self.timescale) / u128::from(movie_timescale);
            v.min(i64::MAX as u128 / 2) as u64
        };
        let mut segments = Vec::new();
        if self.edits.is_empty() {
            segments.push(Segment {
                movie_start: 0,
                media_start: 0,
                media_end: u64::MAX,
            });
        } else {
            let mut movie_at: i64 = 0;
            for e in &self.edits {
                let len = to_track(e.duration);
                if e.media_time >= 0 && e.rate != 0 {
                    let start = e.media_time as u64;
                    segments.push(Segment {
                        movie_start: movie_at,
                        media_start: start,
                        media_end: start.saturating_add(len),
                    });
                }
                movie_at = movie_at.saturating_add(len as i64);
            }
            if let Some(last) = segments.last_mut() {
                last.media_end = u64::MAX;
            }
        }
        self.segments = segments;
    }
}

fn parse_tkhd(data: &[u8], atom: &Atom, path: &str) -> Result<u32> {
    let mut r = Reader::body(data, atom, path);
    let (version, _) = r.version_flags()?;
    r.skip(if version == 1 { 16 } else { 8 })?;
    r.u32()
}

/// Reads a `mdhd` or `mvhd`: timescale and duration.
pub(crate) fn parse_mdhd(data: &[u8], atom: &Atom, path: &str) -> Result<(u32, u64)> {
    let mut r = Reader::body(data, atom, path);
    let (version, _) = r.version_flags()?;
    if version == 1 {
        r.skip(16)?;
        let ts = r.u32()?;
        Ok((ts, r.u64()?))
    } else {
        r.skip(8)?;
        let ts = r.u32()?;
        let d = r.u32()?;
        // All ones means "unknown" in version 0.
        Ok((ts, if d == u32::MAX { 0 } else { u64::from(d) }))
    }
}

fn parse_hdlr(data: &[u8], atom: &Atom, path: &str) -> Result<FourCc> {
    let mut r = Reader::body(data, atom, path);
    r.version_flags()?;
    r.skip(4)?; // pre_defined (QuickTime: component type)
    r.fourcc()
}

fn parse_elst(data: &[u8], atom: &Atom, path: &str) -> Result<Vec<Edit>> {
    let mut r = Reader::body(data, atom, path);
    let (version, _) = r.version_flags()?;
    let n = r.u32()?;
    let entry_len = if version == 1 { 20 } else { 12 };
    let table = r.table(n, entry_len)?;
    Ok(table
        .chunks_exact(entry_len)
        .map(|e| {
            let (duration, media_time, rest) = if version == 1 {
                (
                    u64::from_be_bytes(e[0..8].try_into().unwrap()),
                    i64::from_be_bytes(e[8..16].try_into().unwrap()),
                    &e[16..],
                )
            } else {
                (
                    u64::from(u32::from_be_bytes(e[0..4].try_into().unwrap())),
                    i64::from(i32::from_be_bytes(e[4..8].try_into().unwrap())),
                    &e[8..],
                )
            };
            Edit {
                duration,
                media_time,
                rate: i32::from_be_bytes(rest[0..4].try_into().unwrap()),
            }
        })
        .collect())
}

/// Looks in a `udta` for `hnti` and returns the text of its child `which`:
/// `sdp ` (track level: the box body is the text) or `rtp ` (movie level: a
/// four-character description format, `sdp `, then the text).
pub(crate) fn find_hnti<'a>(data: &'a [u8], udta: &Atom, path: &str, which: FourCc) -> Result<Option<&'a str>> {
    for child in Atoms::children(data, udta, path) {
        // Old QuickTime `udta`s hold odd things; a malformed entry there must
        // not make the movie unplayable, so stop looking rather than fail.
        let Ok(child) = child else { break };
        if child.kind != kind::HNTI {
            continue;
        }
        let p = format!("{path}/hnti");
        for entry in Atoms::children(data, &child, &p) {
            let Ok(entry) = entry else { break };
            if entry.kind != which {
                continue;
            }
            let mut body = &data[entry.body_start() as usize..entry.end() as usize];
            if which == kind::RTP {
                if body.len() < 4 || body[..4] != kind::SDP.0 {
                    continue;
                }
                body = &body[4..];
            }
            let text = std::str::from_utf8(body).map_err(|e| {
                Error::malformed(
                    &format!("{p}/{which}"),
                    entry.body_start() + e.valid_up_to() as u64,
                    "SDP text is not UTF-8",
                )
            })?;
            return Ok(Some(text.trim_end_matches('\0')));
        }
    }
    Ok(None)
}
