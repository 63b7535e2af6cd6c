//! An Apple-style hinter: RTP hint tracks added to an unhinted H.264 + AAC
//! movie the way Apple's QuickTime hinter writes them, so that the suite can
//! hold the server and real clients to such movies without shipping one.
//!
//! ffmpeg's hinter (`-movflags +rtphint`) records what ffmpeg's own RTP muxer
//! sends; Apple's packetizes differently and fills the boxes differently.
//! What Apple's hinter wrote into an H.264 + AAC `.mp4` it hinted, and what
//! [`hint`] reproduces:
//!
//! - **Tracks**: the media tracks keep their IDs; the hint tracks come after
//!   them, video first (payload type 96), then audio (97), each with
//!   `tref/hint` naming its media track, one edit (media time 0) over the
//!   whole hint media, `tkhd` flags 1, an all-zero `hmhd`, a `hdlr` named
//!   "hint media handler", and `udta` with `name` ("Hinted Video Track"),
//!   `hnti/sdp ` and `hinf` statistics, in that order.
//! - **Sample description**: `rtp `, hint version 1 (last compatible 1), max
//!   packet size 1450 (RTP header included), and only `tims` (the RTP clock:
//!   90000 for video, the sample rate for AAC): no `tsro` and no `snro`, so
//!   sequence numbers start at 1 and timestamps at 0.
//! - **Timing**: one hint sample per media sample, at the media sample's
//!   decode time, every packet's relative transmit time 0. The RTP timestamp
//!   is the presentation time on the movie's timeline (composition offset
//!   minus the media edit's start), so the first picture is at 0; where it
//!   differs from the decode time, the packet carries an `rtpo` TLV (flag
//!   0x4) with the difference, and only then. Apple's audio has no edit
//!   (its encoder's priming frames are plain frames at 0), so its audio
//!   packets never carry one. An audio track whose edit starts later (ffmpeg
//!   marks its AAC encoder's priming frame so) gets, by the same rule,
//!   packets stamped before 0 but sent at 0: GStreamer 1.22's `rtpbin` then
//!   delays the video by as much to keep lip sync, and the depayloader's
//!   segment, which ends where the PLAY range ends, cut the last two
//!   pictures of a 4 s clip in 7 of 12 plays. The suite's Apple-style clips
//!   have their audio without an edit, as Apple's.
//! - **H.264** (RFC 6184, packetization mode 1): when all of an access unit's
//!   NAL units fit one packet, one STAP-A (type 24) carries them; otherwise
//!   each NAL unit goes alone, and one too big for a packet is cut into FU-A
//!   (type 28) fragments as large as the packet allows. The marker bit is set
//!   on the last packet of each access unit; Apple's frames are almost all one
//!   STAP-A, so almost every packet carries it. Packets of a frame nothing
//!   refers to (every slice `nal_ref_idc` 0: the B-frames) carry the B-frame
//!   flag (0x2). The STAP-A header and first size are one 3-byte immediate,
//!   each further size a 2-byte immediate, each FU indicator and header a
//!   2-byte immediate; every payload byte of the media is a sample
//!   constructor (track reference 0, bytes and samples per block 0), never a
//!   copy. The hint track's `stss` lists only its first sample, although the
//!   video has a key frame every two seconds: a server must take key frames
//!   from the media track.
//! - **AAC** (RFC 3640, `mpeg4-generic`, mode AAC-hbr): one access unit per
//!   packet, each with the marker bit, its 16-bit AU-headers-length and AU
//!   header (13-bit size, 3-bit index) as one 4-byte immediate.
//! - **Immediates are not cleared**: Apple's hinter writes each constructor
//!   into one 16-byte buffer and copies it out, and an immediate overwrites
//!   only its type, count and data, so the unused bytes keep what was there
//!   before (in a video hint sample, bytes left by the constructor before;
//!   in the first one, fixed bytes; in audio, the sample number and size).
//!   Reproduced byte for byte: a reader must ignore those bytes.
//! - **SDP**: the movie-level `moov/udta/hnti/rtp ` holds `sdp ` and only
//!   `b=AS` and `a=isma-compliance:2,2.0,2` (no `v=`, `o=`, `s=`, `t=`, no
//!   `a=range`: the server adds those). Each hint track's `hnti/sdp ` has
//!   `m=`, `b=AS`, `a=rtpmap`, `a=control:trackID=N`, then for video
//!   `a=cliprect:0,0,H,W` and `a=framesize:96 W-H`, `a=fmtp` (H.264:
//!   `packetization-mode=1;profile-level-id;sprop-parameter-sets`; AAC:
//!   `profile-level-id=15;mode=AAC-hbr;sizelength=13;indexlength=3;
//!   indexdeltalength=3;config`) and `a=mpeg4-esid` (track ID x 100 + 1).
//!   Apple does not measure the H.264 track's bit rate: it writes `b=AS:2097151`
//!   (2^31 - 1 bits per second, in units of 1024) and `maxr` 0x7fffffff; the
//!   session's `b=AS` adds the audio's measured rate to that.
//!
//! Not reproduced:
//!
//! - Apple interleaves hint samples with the media in its one `mdat`; here
//!   the media data stays exactly where ffmpeg put it, the old `moov` becomes
//!   a `free` box of the same size (so no chunk offset changes, whether
//!   `moov` came before `mdat` or after), and a new `mdat` with all hint
//!   samples (one chunk per hint track) and a new `moov` follow at the end.
//! - In its H.264 movie Apple's hinter left the last video frame unhinted
//!   (2099 hint samples for 2100 frames), so every client misses the last
//!   picture. Here every frame is hinted.
//! - `hinf` has Apple's boxes in Apple's order, with the values measured
//!   here but for the H.264 track's `maxr`, Apple's 0x7fffffff (Apple's
//!   `tmin`/`tmax` hold junk; its audio `maxr` looks like an average rather
//!   than a peak). Nothing reads `hinf` to play a movie.
//! - Whether Apple aggregates only some of an access unit's NAL units, its
//!   movie cannot show: its frames have two slices each. Here consecutive
//!   NAL units are aggregated greedily, which agrees with every frame of it.
//!
//! Checked by hand against a movie Apple's tools hinted (the ignored test in
//! `tests/tests/apple_hinter.rs`): hinting its media again here gives hint
//! samples, track SDP and movie-level SDP identical to Apple's byte for
//! byte, every packet the same, but for the last video frame Apple left out.
//!
//! The reader here is self-contained (it does not use the loader, which the
//! tests then hold to this hinter's files): it walks the boxes it needs and
//! rejects what it does not support with a message.

use std::fmt::Write as _;
use std::path::Path;

/// Largest packet Apple's hinter makes, RTP header included.
pub const MAX_PACKET: usize = 1450;
/// Largest RTP payload: the packet less the 12-byte RTP header.
const MAX_PAYLOAD: usize = MAX_PACKET - 12;
pub const VIDEO_PAYLOAD_TYPE: u8 = 96;
pub const AUDIO_PAYLOAD_TYPE: u8 = 97;
/// The RTP clock of H.264 (RFC 6184).
const VIDEO_CLOCK: u32 = 90_000;
/// What Apple writes for the rate of an H.264 track, in kbit/s: 2^31 - 1
/// bits per second in units of 1024 (its `b=AS:2097151`).
const UNMEASURED_KBPS: f64 = i32::MAX as f64 / 1024.0;

/// Reads the movie at `input` and writes it to `output` with Apple-style hint
/// tracks for its H.264 video track and its AAC audio track. Hint tracks the
/// input already has are left out.
pub fn hint(input: &Path, output: &Path) -> Result<(), String> {
    let data = std::fs::read(input).map_err(|e| format!("cannot read {}: {e}", input.display()))?;
    let hinted = hint_bytes(&data)?;
    std::fs::write(output, hinted).map_err(|e| format!("cannot write {}: {e}", output.display()))
}

/// [`hint`] on bytes.
pub fn hint_bytes(data: &[u8]) -> Result<Vec<u8>, String> {
    let top = children(data, 0, data.len())?;
    let moov = top
        .iter()
        .find(|b| b.kind == *b"moov")
        .ok_or("no moov box: not a QuickTime or MP4 movie")?;
    let movie = read_moov(data, moov)?;
    let video = movie
        .tracks
        .iter()
        .find(|t| matches!(t.codec, Codec::H264 { .. }))
        .ok_or("no H.264 video track")?;
    let audio = movie
        .tracks
        .iter()
        .find(|t| matches!(t.codec, Codec::Aac { .. }))
        .ok_or("no AAC audio track")?;
    let first_hint_id = movie
        .tracks
        .iter()
        .map(|t| t.id)
        .chain(movie.other_ids.iter().copied())
        .max()
        .unwrap_or(0)
        + 1;
    let mut hints = [
        hint_track(data, video, first_hint_id)?,
        hint_track(data, audio, first_hint_id + 1)?,
    ];

    // The old moov becomes a free box of the same size: nothing moves.
    let mut out = data.to_vec();
    out[moov.start + 4..moov.start + 8].copy_from_slice(b"free");
    let samples_len: usize = hints.iter().flat_map(|h| &h.samples).map(Vec::len).sum();
    if samples_len + 8 <= u32::MAX as usize {
        out.extend(((samples_len + 8) as u32).to_be_bytes());
        out.extend(b"mdat");
    } else {
        out.extend(1u32.to_be_bytes());
        out.extend(b"mdat");
        out.extend(((samples_len + 16) as u64).to_be_bytes());
    }
    for h in &mut hints {
        h.chunk_offset = out.len() as u64;
        for s in &h.samples {
            out.extend(s);
        }
    }
    let session_kbps: f64 = hints.iter().map(|h| h.kbps).sum();
    out.extend(write_moov(data, &movie, &hints, first_hint_id + 2, session_kbps));
    Ok(out)
}

// ---------------------------------------------------------------------------
// Reading the movie.

/// A box: its type and where it and its body lie in the file.
#[derive(Debug, Clone, Copy)]
struct Box4 {
    kind: [u8; 4],
    start: usize,
    body: usize,
    end: usize,
}

/// The boxes in `data[from..to]`.
fn children(data: &[u8], from: usize, to: usize) -> Result<Vec<Box4>, String> {
    let mut out = Vec::new();
    let mut at = from;
    while at + 8 <= to {
        let size32 = be32(data, at)?;
        let kind: [u8; 4] = data[at + 4..at + 8].try_into().expect("four bytes");
        let (size, header) = match size32 {
            0 => ((to - at) as u64, 8),
            1 => (be64(data, at + 8)?, 16),
            n => (u64::from(n), 8),
        };
        let end = usize::try_from(size)
            .ok()
            .and_then(|s| at.checked_add(s))
            .filter(|&e| e <= to && size >= header as u64)
            .ok_or_else(|| format!("box `{}` at {at} has a bad size {size}", show(&kind)))?;
        out.push(Box4 {
            kind,
            start: at,
            body: at + header,
            end,
        });
        at = end;
    }
    Ok(out)
}

fn child(data: &[u8], parent: &Box4, kind: &[u8; 4]) -> Result<Option<Box4>, String> {
    Ok(children(data, parent.body, parent.end)?
        .into_iter()
        .find(|b| &b.kind == kind))
}

fn need(data: &[u8], parent: &Box4, path: &[&[u8; 4]]) -> Result<Box4, String> {
    let mut b = *parent;
    for kind in path {
        b = child(data, &b, kind)?
            .ok_or_else(|| format!("no `{}` in `{}` at {}", show(kind), show(&b.kind), b.start))?;
    }
    Ok(b)
}

fn show(kind: &[u8; 4]) -> String {
    String::from_utf8_lossy(kind).into_owned()
}

fn be16(d: &[u8], at: usize) -> Result<u16, String> {
    d.get(at..at + 2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .ok_or_else(|| format!("the file ends inside a field at {at}"))
}

fn be32(d: &[u8], at: usize) -> Result<u32, String> {
    d.get(at..at + 4)
        .map(|b| u32::from_be_bytes(b.try_into().expect("four bytes")))
        .ok_or_else(|| format!("the file ends inside a field at {at}"))
}

fn be64(d: &[u8], at: usize) -> Result<u64, String> {
    d.get(at..at + 8)
        .map(|b| u64::from_be_bytes(b.try_into().expect("eight bytes")))
        .ok_or_else(|| format!("the file ends inside a field at {at}"))
}

/// What the hinter needs to know of the movie.
struct MovieInfo {
    timescale: u32,
    tracks: Vec<MediaTrack>,
    /// IDs of the tracks that are neither, so the hint tracks' IDs are new.
    other_ids: Vec<u32>,
}

enum Codec {
    H264 {
        /// Bytes of each NAL unit's length prefix (`avcC`).
        length_size: usize,
        sps: Vec<Vec<u8>>,
        pps: Vec<Vec<u8>>,
        width: u16,
        height: u16,
    },
    Aac {
        /// The AudioSpecificConfig.
        config: Vec<u8>,
        sample_rate: u32,
        channels: u8,
    },
    Other,
}

struct MediaTrack {
    id: u32,
    timescale: u32,
    language: u16,
    /// Creation and modification times (`tkhd`, version 0), for the hint track's.
    times: [u32; 2],
    /// Media time where the track's edit starts: presentation time 0.
    edit_start: i64,
    codec: Codec,
    samples: Vec<Sample>,
    /// Decode time of the end of the last sample.
    end: i64,
}

struct Sample {
    offset: usize,
    size: usize,
    dts: i64,
    /// Composition offset (`ctts`).
    cts: i64,
}

fn read_moov(data: &[u8], moov: &Box4) -> Result<MovieInfo, String> {
    let mvhd = need(data, moov, &[b"mvhd"])?;
    let timescale = be32(data, mvhd.body + if data[mvhd.body] == 1 { 20 } else { 12 })?;
    let mut tracks = Vec::new();
    let mut other_ids = Vec::new();
    for trak in children(data, moov.body, moov.end)?
        .iter()
        .filter(|b| b.kind == *b"trak")
    {
        // The input's own hint tracks are left out, their IDs free again.
        if handler(data, trak)? == *b"hint" {
            continue;
        }
        let t = read_trak(data, trak)?;
        match t.codec {
            Codec::Other => other_ids.push(t.id),
            _ => tracks.push(t),
        }
    }
    Ok(MovieInfo {
        timescale,
        tracks,
        other_ids,
    })
}

fn handler(data: &[u8], trak: &Box4) -> Result<[u8; 4], String> {
    let hdlr = need(data, trak, &[b"mdia", b"hdlr"])?;
    Ok(data[hdlr.body + 8..hdlr.body + 12].try_into().expect("four bytes"))
}

fn read_trak(data: &[u8], trak: &Box4) -> Result<MediaTrack, String> {
    let tkhd = need(data, trak, &[b"tkhd"])?;
    let v1 = data[tkhd.body] == 1;
    let id = be32(data, tkhd.body + if v1 { 20 } else { 12 })?;
    let times = if v1 {
        [0, 0]
    } else {
        [be32(data, tkhd.body + 4)?, be32(data, tkhd.body + 8)?]
    };
    let mdhd = need(data, trak, &[b"mdia", b"mdhd"])?;
    let (timescale, language) = if data[mdhd.body] == 1 {
        (be32(data, mdhd.body + 20)?, be16(data, mdhd.body + 32)?)
    } else {
        (be32(data, mdhd.body + 12)?, be16(data, mdhd.body + 20)?)
    };
    let stbl = need(data, trak, &[b"mdia", b"minf", b"stbl"])?;
    let stsd = need(data, &stbl, &[b"stsd"])?;
    let entry = children(data, stsd.body + 8, stsd.end)?
        .into_iter()
        .next()
        .ok_or_else(|| format!("track {id}: empty stsd"))?;
    let codec = match (&handler(data, trak)?, &entry.kind) {
        (b"vide", b"avc1") => read_avc1(data, &entry).map_err(|e| format!("track {id}: {e}"))?,
        (b"soun", b"mp4a") => read_mp4a(data, &entry).map_err(|e| format!("track {id}: {e}"))?,
        _ => Codec::Other,
    };
    if matches!(codec, Codec::Other) {
        return Ok(MediaTrack {
            id,
            timescale,
            language,
            times,
            edit_start: 0,
            codec,
            samples: Vec::new(),
            end: 0,
        });
    }
    let edit_start = edit_start(data, trak).map_err(|e| format!("track {id}: {e}"))?;
    let (samples, end) = sample_table(data, &stbl).map_err(|e| format!("track {id}: {e}"))?;
    Ok(MediaTrack {
        id,
        timescale,
        language,
        times,
        edit_start,
        codec,
        samples,
        end,
    })
}

/// The media time the track's one edit starts at (0 without an edit list).
fn edit_start(data: &[u8], trak: &Box4) -> Result<i64, String> {
    let Some(edts) = child(data, trak, b"edts")? else {
        return Ok(0);
    };
    let Some(elst) = child(data, &edts, b"elst")? else {
        return Ok(0);
    };
    let v1 = data[elst.body] == 1;
    let count = be32(data, elst.body + 4)?;
    if count != 1 {
        return Err(format!(
            "{count} edits; only a movie with one edit per track is supported"
        ));
    }
    let media_time = if v1 {
        be64(data, elst.body + 16)? as i64
    } else {
        i64::from(be32(data, elst.body + 12)? as i32)
    };
    if media_time < 0 {
        return Err("the track's only edit is empty".into());
    }
    Ok(media_time)
}

fn read_avc1(data: &[u8], entry: &Box4) -> Result<Codec, String> {
    // VisualSampleEntry: 6 reserved, data reference index, 16 bytes of
    // version and reserved fields, width, height, ..., 78 bytes in all.
    let width = be16(data, entry.body + 24)?;
    let height = be16(data, entry.body + 26)?;
    let avcc = children(data, entry.body + 78, entry.end)?
        .into_iter()
        .find(|b| b.kind == *b"avcC")
        .ok_or("avc1 without avcC")?;
    let c = &data[avcc.body..avcc.end];
    // avcC: version, profile, compatibility, level, length size - 1, then
    // the SPS count and SPSs, the PPS count and PPSs, each with a 16-bit size.
    let byte = |i: usize| c.get(i).copied().ok_or("avcC is cut short");
    let length_size = usize::from(byte(4)? & 3) + 1;
    let mut at = 6;
    let sps = parameter_sets(c, usize::from(byte(5)? & 0x1f), &mut at)?;
    let pps_count = usize::from(byte(at)?);
    at += 1;
    let pps = parameter_sets(c, pps_count, &mut at)?;
    if sps.is_empty() || pps.is_empty() || sps[0].len() < 4 {
        return Err("avcC without a usable SPS and PPS".into());
    }
    Ok(Codec::H264 {
        length_size,
        sps,
        pps,
        width,
        height,
    })
}

/// `count` parameter sets of `avcc` from `at`, each after its 16-bit size.
fn parameter_sets(avcc: &[u8], count: usize, at: &mut usize) -> Result<Vec<Vec<u8>>, String> {
    (0..count)
        .map(|_| {
            let len = usize::from(be16(avcc, *at)?);
            let set = avcc.get(*at + 2..*at + 2 + len).ok_or("avcC is cut short")?;
            *at += 2 + len;
            Ok(set.to_vec())
        })
        .collect()
}

fn read_mp4a(data: &[u8], entry: &Box4) -> Result<Codec, String> {
    // AudioSampleEntry: 28 bytes in MP4 (and QuickTime sound version 0);
    // QuickTime's versions 1 and 2 add 16 and 36, and put `esds` in `wave`.
    let version = be16(data, entry.body + 8)?;
    let first = entry.body
        + match version {
            0 => 28,
            1 => 44,
            2 => 64,
            v => return Err(format!("sound description version {v}")),
        };
    let mut esds = None;
    for b in children(data, first, entry.end)? {
        match &b.kind {
            b"esds" => esds = Some(b),
            b"wave" => esds = esds.or(children(data, b.body, b.end)?.into_iter().find(|w| w.kind == *b"esds")),
            _ => {}
        }
    }
    let esds = esds.ok_or("mp4a without esds")?;
    let config = decoder_specific_info(&data[esds.body + 4..esds.end]).ok_or("esds without an AudioSpecificConfig")?;
    // AudioSpecificConfig (ISO/IEC 14496-3 1.6.2.1): 5 bits object type, 4
    // bits sampling frequency index, 4 bits channel configuration.
    const RATES: [u32; 13] = [
        96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
    ];
    let (&b0, &b1) = (
        config.first().ok_or("empty config")?,
        config.get(1).ok_or("short config")?,
    );
    if b0 >> 3 == 31 {
        return Err("escaped audio object types are not supported".into());
    }
    let index = usize::from((b0 & 7) << 1 | b1 >> 7);
    let sample_rate = *RATES
        .get(index)
        .ok_or_else(|| format!("sampling frequency index {index} is not supported"))?;
    Ok(Codec::Aac {
        sample_rate,
        channels: (b1 >> 3) & 0xf,
        config,
    })
}

/// The DecoderSpecificInfo (tag 5) among an ES_Descriptor's descriptors
/// (ISO/IEC 14496-1 7.2.6).
fn decoder_specific_info(mut d: &[u8]) -> Option<Vec<u8>> {
    while d.len() >= 2 {
        let tag = d[0];
        let mut len = 0usize;
        let mut i = 1;
        loop {
            let b = *d.get(i)?;
            len = len << 7 | usize::from(b & 0x7f);
            i += 1;
            if b & 0x80 == 0 || i > 4 {
                break;
            }
        }
        let body = d.get(i..i + len)?;
        match tag {
            5 => return Some(body.to_vec()),
            // ES_Descriptor: ES_ID, flags, then what the flags announce.
            3 => {
                let flags = *body.get(2)?;
                let mut at = 3;
                if flags & 0x80 != 0 {
                    at += 2;
                }
                if flags & 0x40 != 0 {
                    at += 1 + usize::from(*body.get(at)?);
                }
                if flags & 0x20 != 0 {
                    at += 2;
                }
                return decoder_specific_info(body.get(at..)?);
            }
            // DecoderConfigDescriptor: 13 bytes, then its descriptors.
            4 => return decoder_specific_info(body.get(13..)?),
            _ => d = &d[i + len..],
        }
    }
    None
}

/// Every sample of a track, from its sample table, and the decode time
/// where the last one ends.
fn sample_table(data: &[u8], stbl: &Box4) -> Result<(Vec<Sample>, i64), String> {
    let table = |kind: &[u8; 4]| -> Result<Option<&[u8]>, String> {
        Ok(child(data, stbl, kind)?.map(|b| &data[b.body..b.end]))
    };
    let stsz = table(b"stsz")?.ok_or("no stsz")?;
    let fixed = be32(stsz, 4)? as usize;
    let count = be32(stsz, 8)? as usize;
    let sizes: Vec<usize> = if fixed != 0 {
        vec![fixed; count]
    } else {
        (0..count)
            .map(|i| be32(stsz, 12 + 4 * i).map(|s| s as usize))
            .collect::<Result<_, _>>()?
    };
    let chunks: Vec<usize> = match (table(b"stco")?, table(b"co64")?) {
        (Some(c), _) => (0..be32(c, 4)? as usize)
            .map(|i| be32(c, 8 + 4 * i).map(|o| o as usize))
            .collect::<Result<_, _>>()?,
        (None, Some(c)) => (0..be32(c, 4)? as usize)
            .map(|i| be64(c, 8 + 8 * i).map(|o| o as usize))
            .collect::<Result<_, _>>()?,
        (None, None) => return Err("no stco or co64".into()),
    };
    let stsc = table(b"stsc")?.ok_or("no stsc")?;
    let runs: Vec<(usize, usize)> = (0..be32(stsc, 4)? as usize)
        .map(|i| Ok((be32(stsc, 8 + 12 * i)? as usize, be32(stsc, 12 + 12 * i)? as usize)))
        .collect::<Result<_, String>>()?;
    let mut offsets = Vec::with_capacity(count);
    for (c, &chunk_offset) in chunks.iter().enumerate() {
        let per_chunk = runs.iter().rev().find(|r| r.0 <= c + 1).map_or(0, |r| r.1);
        let mut at = chunk_offset;
        for _ in 0..per_chunk {
            let Some(&size) = sizes.get(offsets.len()) else { break };
            offsets.push(at);
            at += size;
        }
    }
    if offsets.len() != count {
        return Err(format!("stsc and stco place {} of {count} samples", offsets.len()));
    }
    let stts = table(b"stts")?.ok_or("no stts")?;
    let mut dts = Vec::with_capacity(count);
    let mut t = 0i64;
    for i in 0..be32(stts, 4)? as usize {
        let (n, delta) = (be32(stts, 8 + 8 * i)?, be32(stts, 12 + 8 * i)?);
        for _ in 0..n {
            dts.push(t);
            t += i64::from(delta);
        }
    }
    if dts.len() != count {
        return Err(format!("stts times {} of {count} samples", dts.len()));
    }
    let mut cts = vec![0i64; count];
    if let Some(ctts) = table(b"ctts")? {
        let mut i = 0;
        for e in 0..be32(ctts, 4)? as usize {
            // Version 0 offsets are unsigned, but writers store negative
            // ones there too; read both versions as signed.
            let (n, offset) = (be32(ctts, 8 + 8 * e)?, be32(ctts, 12 + 8 * e)? as i32);
            for _ in 0..n {
                *cts.get_mut(i).ok_or("ctts covers more samples than there are")? = i64::from(offset);
                i += 1;
            }
        }
    }
    let samples = (0..count)
        .map(|i| {
            if offsets[i] + sizes[i] > data.len() {
                return Err(format!("sample {} lies outside the file", i + 1));
            }
            Ok(Sample {
                offset: offsets[i],
                size: sizes[i],
                dts: dts[i],
                cts: cts[i],
            })
        })
        .collect::<Result<_, String>>()?;
    Ok((samples, t))
}

// ---------------------------------------------------------------------------
// Packetizing.

/// One constructor of a packet's data table.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    /// Bytes the hint sample carries itself (at most 14).
    Immediate(Vec<u8>),
    /// `len` bytes at `offset` of the media sample.
    Media { offset: usize, len: usize },
}

/// How Apple's hinter packetizes one H.264 access unit (`sample`, NAL units
/// with `length_size`-byte length prefixes): each packet's pieces, in order.
/// The caller sets the marker on the last packet.
fn h264_packets(sample: &[u8], length_size: usize) -> Result<Vec<Vec<Piece>>, String> {
    // (offset of the NAL unit's header byte in the sample, its length)
    let mut nals = Vec::new();
    let mut at = 0;
    while at < sample.len() {
        let prefix = sample
            .get(at..at + length_size)
            .ok_or("a NAL length prefix is cut short")?;
        let len = prefix.iter().fold(0usize, |n, &b| n << 8 | usize::from(b));
        if len == 0 || at + length_size + len > sample.len() {
            return Err(format!("a NAL unit of {len} bytes at {at} does not fit its sample"));
        }
        nals.push((at + length_size, len));
        at += length_size + len;
    }
    if nals.is_empty() {
        return Err("an access unit without NAL units".into());
    }
    let mut packets = Vec::new();
    let mut i = 0;
    while i < nals.len() {
        // How many NAL units from here fit one STAP-A: its header byte, then
        // a 16-bit size before each.
        let mut n = 0;
        let mut size = 1;
        while let Some(&(_, len)) = nals.get(i + n) {
            if size + 2 + len > MAX_PAYLOAD {
                break;
            }
            size += 2 + len;
            n += 1;
        }
        let (offset, len) = nals[i];
        if n >= 2 {
            let group = &nals[i..i + n];
            // F is the OR of the units' F bits, NRI their highest NRI.
            let f = group.iter().map(|&(o, _)| sample[o] & 0x80).fold(0, |a, b| a | b);
            let nri = group.iter().map(|&(o, _)| sample[o] & 0x60).max().unwrap_or(0);
            let mut pieces = Vec::new();
            for (k, &(o, l)) in group.iter().enumerate() {
                let size = (l as u16).to_be_bytes();
                pieces.push(Piece::Immediate(if k == 0 {
                    vec![f | nri | 24, size[0], size[1]]
                } else {
                    size.to_vec()
                }));
                pieces.push(Piece::Media { offset: o, len: l });
            }
            packets.push(pieces);
            i += n;
        } else if len <= MAX_PAYLOAD {
            packets.push(vec![Piece::Media { offset, len }]);
            i += 1;
        } else {
            // FU-A: the NAL header's F and NRI with type 28, then S, E and
            // the unit's type; the header byte itself is not sent.
            let header = sample[offset];
            let indicator = header & 0xe0 | 28;
            let body = len - 1;
            let mut done = 0;
            while done < body {
                let take = (body - done).min(MAX_PAYLOAD - 2);
                let start = if done == 0 { 0x80 } else { 0 };
                let end = if done + take == body { 0x40 } else { 0 };
                packets.push(vec![
                    Piece::Immediate(vec![indicator, start | end | header & 0x1f]),
                    Piece::Media {
                        offset: offset + 1 + done,
                        len: take,
                    },
                ]);
                done += take;
            }
            i += 1;
        }
    }
    Ok(packets)
}

/// Whether no other picture refers to this access unit: every slice has
/// `nal_ref_idc` 0. Those are the frames a server may drop (the B-frames of
/// these movies), which the hint flags mark.
fn disposable(sample: &[u8], length_size: usize) -> bool {
    let mut at = 0;
    let mut slices = 0;
    while let Some(prefix) = sample.get(at..at + length_size) {
        let len = prefix.iter().fold(0usize, |n, &b| n << 8 | usize::from(b));
        let Some(&header) = sample.get(at + length_size) else {
            break;
        };
        if (1..=5).contains(&(header & 0x1f)) {
            slices += 1;
            if header & 0x60 != 0 {
                return false;
            }
        }
        at += length_size + len;
    }
    slices > 0
}

/// The AAC packet of one access unit of `size` bytes: AU-headers-length (16
/// bits) and one AU header (13-bit size, 3-bit index 0), then the unit.
fn aac_packet(size: usize) -> Result<Vec<Piece>, String> {
    if size >= 1 << 13 || 4 + size > MAX_PAYLOAD {
        return Err(format!("an AAC frame of {size} bytes does not fit one packet"));
    }
    let header = ((size as u16) << 3).to_be_bytes();
    Ok(vec![
        Piece::Immediate(vec![0, 16, header[0], header[1]]),
        Piece::Media { offset: 0, len: size },
    ])
}

// ---------------------------------------------------------------------------
// Hint samples.

/// The 16-byte buffer Apple's hinter writes each constructor into before
/// copying it out. Sample constructors fill all of it; immediates only their
/// type, count and data, so their unused bytes keep what was there.
struct Constructors {
    scratch: [u8; 16],
}

impl Constructors {
    /// The buffer as it is when Apple's hinter starts a video hint sample:
    /// bytes that look like a pointer, then the frame duration (`duration`
    /// ticks of the RTP clock) in the last four.
    fn video(duration: u32) -> Self {
        let mut scratch = [0, 0, 0, 0, 0x06, 0x0d, 0x9f, 0xbc, 0, 0, 0, 0, 0, 0, 0, 0];
        scratch[12..].copy_from_slice(&duration.to_be_bytes());
        Constructors { scratch }
    }

    /// The buffer as it is when Apple's hinter starts an audio hint sample:
    /// the 1-based sample number in bytes 4 to 8, its size in the last two.
    fn audio(sample: u32, size: u16) -> Self {
        let mut scratch = [0; 16];
        scratch[4..8].copy_from_slice(&sample.to_be_bytes());
        scratch[14..].copy_from_slice(&size.to_be_bytes());
        Constructors { scratch }
    }

    fn write(&mut self, piece: &Piece, sample: u32) -> [u8; 16] {
        match piece {
            Piece::Immediate(bytes) => {
                self.scratch[0] = 1;
                self.scratch[1] = bytes.len() as u8;
                self.scratch[2..2 + bytes.len()].copy_from_slice(bytes);
            }
            Piece::Media { offset, len } => {
                self.scratch[0] = 2;
                self.scratch[1] = 0; // the first (only) track of tref/hint
                self.scratch[2..4].copy_from_slice(&(*len as u16).to_be_bytes());
                self.scratch[4..8].copy_from_slice(&sample.to_be_bytes());
                self.scratch[8..12].copy_from_slice(&(*offset as u32).to_be_bytes());
                self.scratch[12..].fill(0); // bytes and samples per block: 0
            }
        }
        self.scratch
    }
}

/// A hint track being built.
struct HintTrack {
    id: u32,
    media_id: u32,
    video: bool,
    /// Its timescale, which is also the RTP clock (`tims`).
    timescale: u32,
    /// Hint sample durations.
    durations: Vec<u32>,
    samples: Vec<Vec<u8>>,
    sdp: String,
    /// Payload bit rate, kbit/s, as `b=AS` counts it.
    kbps: f64,
    stats: Stats,
    /// Where its one chunk lies in the output.
    chunk_offset: u64,
    language: u16,
    times: [u32; 2],
}

/// What `hinf` reports.
#[derive(Default)]
struct Stats {
    packets: u64,
    /// Bytes sent, 12-byte RTP headers included.
    bytes: u64,
    payload: u64,
    media_bytes: u64,
    immediate_bytes: u64,
    largest_packet: u32,
    /// (transmit time in ms, packet bytes with header), for `maxr`.
    sends: Vec<(i64, u64)>,
}

/// `t` ticks of `from` in ticks of `to`, rounded to the nearest.
fn rescale(t: i64, from: u32, to: u32) -> i64 {
    let (n, d) = (i128::from(t) * i128::from(to), i128::from(from));
    (if n >= 0 {
        (2 * n + d) / (2 * d)
    } else {
        -((-2 * n + d) / (2 * d))
    }) as i64
}

fn hint_track(data: &[u8], media: &MediaTrack, id: u32) -> Result<HintTrack, String> {
    let (video, clock) = match &media.codec {
        Codec::H264 { .. } => (true, VIDEO_CLOCK),
        Codec::Aac { sample_rate, .. } => (false, *sample_rate),
        Codec::Other => unreachable!("only H.264 and AAC tracks are hinted"),
    };
    let pt = if video { VIDEO_PAYLOAD_TYPE } else { AUDIO_PAYLOAD_TYPE };
    let ticks = |t: i64| rescale(t, media.timescale, clock);
    let mut stats = Stats::default();
    let mut samples = Vec::with_capacity(media.samples.len());
    let mut durations = Vec::with_capacity(media.samples.len());
    let mut sequence: u16 = 1;
    for (i, s) in media.samples.iter().enumerate() {
        let number = i as u32 + 1;
        let bytes = &data[s.offset..s.offset + s.size];
        let time = ticks(s.dts);
        let next = media.samples.get(i + 1).map_or(media.end, |n| n.dts);
        let duration =
            u32::try_from(ticks(next) - time).map_err(|_| format!("sample {number}: time runs backwards"))?;
        // The packet's RTP time is its presentation time; the hint sample's
        // time is its decode time.
        let rtpo = i32::try_from(ticks(s.dts + s.cts - media.edit_start) - time)
            .map_err(|_| format!("sample {number}: composition offset out of range"))?;
        let (packets, b_frame, mut constructors) = match &media.codec {
            Codec::H264 { length_size, .. } => (
                h264_packets(bytes, *length_size).map_err(|e| format!("video sample {number}: {e}"))?,
                disposable(bytes, *length_size),
                Constructors::video(duration),
            ),
            _ => (
                vec![aac_packet(s.size).map_err(|e| format!("audio sample {number}: {e}"))?],
                false,
                Constructors::audio(number, s.size as u16),
            ),
        };
        let mut hint = Vec::new();
        hint.extend((packets.len() as u16).to_be_bytes());
        hint.extend([0, 0]); // reserved
        let last = packets.len() - 1;
        for (k, pieces) in packets.iter().enumerate() {
            hint.extend(0i32.to_be_bytes()); // relative transmit time
                                             // Apple leaves the RTP version bits of this field 0.
            hint.push(0);
            hint.push(u8::from(k == last) << 7 | pt);
            hint.extend(sequence.to_be_bytes());
            sequence = sequence.wrapping_add(1);
            let flags = if b_frame { 0x2 } else { 0 } | if rtpo != 0 { 0x4 } else { 0 };
            hint.extend((flags as u16).to_be_bytes());
            hint.extend((pieces.len() as u16).to_be_bytes());
            if rtpo != 0 {
                // Extra information: its length, then one TLV, `rtpo`.
                hint.extend(16u32.to_be_bytes());
                hint.extend(12u32.to_be_bytes());
                hint.extend(b"rtpo");
                hint.extend(rtpo.to_be_bytes());
            }
            let mut payload = 0;
            for piece in pieces {
                hint.extend(constructors.write(piece, number));
                match piece {
                    Piece::Immediate(b) => {
                        stats.immediate_bytes += b.len() as u64;
                        payload += b.len();
                    }
                    Piece::Media { len, .. } => {
                        stats.media_bytes += *len as u64;
                        payload += len;
                    }
                }
            }
            stats.packets += 1;
            stats.payload += payload as u64;
            stats.bytes += 12 + payload as u64;
            stats.largest_packet = stats.largest_packet.max(12 + payload as u32);
            stats.sends.push((rescale(time, clock, 1000), 12 + payload as u64));
        }
        samples.push(hint);
        durations.push(duration);
    }
    let seconds = durations.iter().map(|&d| u64::from(d)).sum::<u64>() as f64 / f64::from(clock);
    let kbps = if video {
        UNMEASURED_KBPS
    } else {
        stats.payload as f64 * 8.0 / seconds.max(1e-9) / 1000.0
    };
    let sdp = track_sdp(media, id, kbps);
    Ok(HintTrack {
        id,
        media_id: media.id,
        video,
        timescale: clock,
        durations,
        samples,
        sdp,
        kbps,
        stats,
        chunk_offset: 0,
        language: media.language,
        times: media.times,
    })
}

/// The hint track's `hnti/sdp ` text, line for line as Apple's hinter writes it.
fn track_sdp(media: &MediaTrack, hint_id: u32, kbps: f64) -> String {
    let mut s = String::new();
    let esid = media.id * 100 + 1;
    match &media.codec {
        Codec::H264 {
            sps,
            pps,
            width,
            height,
            ..
        } => {
            let pt = VIDEO_PAYLOAD_TYPE;
            let sets: Vec<String> = sps.iter().chain(pps).map(|p| base64(p)).collect();
            let _ = write!(
                s,
                "m=video 0 RTP/AVP {pt}\r\nb=AS:{}\r\na=rtpmap:{pt} H264/{VIDEO_CLOCK}\r\n\
                 a=control:trackID={hint_id}\r\na=cliprect:0,0,{height},{width}\r\n\
                 a=framesize:{pt} {width}-{height}\r\n\
                 a=fmtp:{pt} packetization-mode=1;profile-level-id={};sprop-parameter-sets={}\r\n\
                 a=mpeg4-esid:{esid}\r\n",
                kbps.floor() as u64,
                hex(&sps[0][1..4]),
                sets.join(","),
            );
        }
        Codec::Aac {
            config,
            sample_rate,
            channels,
        } => {
            let pt = AUDIO_PAYLOAD_TYPE;
            let _ = write!(
                s,
                "m=audio 0 RTP/AVP {pt}\r\nb=AS:{}\r\na=rtpmap:{pt} mpeg4-generic/{sample_rate}/{channels}\r\n\
                 a=control:trackID={hint_id}\r\n\
                 a=fmtp:{pt} profile-level-id=15;mode=AAC-hbr;sizelength=13;indexlength=3;indexdeltalength=3;config={}\r\n\
                 a=mpeg4-esid:{esid}\r\n",
                kbps.floor() as u64,
                hex(config),
            );
        }
        Codec::Other => {}
    }
    s
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// Standard base64 with padding (RFC 4648 section 4), as `sprop-parameter-sets` wants.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Writing boxes.

fn boxed(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut v = ((body.len() + 8) as u32).to_be_bytes().to_vec();
    v.extend_from_slice(kind);
    v.extend_from_slice(body);
    v
}

/// A full box: version and flags (`version << 24 | flags`), then `body`.
fn full(kind: &[u8; 4], version_flags: u32, body: &[u8]) -> Vec<u8> {
    let mut b = version_flags.to_be_bytes().to_vec();
    b.extend_from_slice(body);
    boxed(kind, &b)
}

fn be32s(words: &[u32]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_be_bytes()).collect()
}

/// The new `moov`: the old one's boxes in their order, without hint tracks,
/// `mvhd` counting the new track IDs, the hint tracks after the last track,
/// and `udta` with the movie-level SDP.
fn write_moov(data: &[u8], movie: &MovieInfo, hints: &[HintTrack], next_id: u32, session_kbps: f64) -> Vec<u8> {
    let top = children(data, 0, data.len()).expect("read before");
    let moov = top.iter().find(|b| b.kind == *b"moov").expect("read before");
    let boxes = children(data, moov.body, moov.end).expect("read before");
    let last_trak = boxes.iter().rposition(|b| b.kind == *b"trak");
    let mut body = Vec::new();
    let mut wrote_udta = false;
    for (i, b) in boxes.iter().enumerate() {
        let bytes = &data[b.start..b.end];
        match &b.kind {
            b"mvhd" => {
                let mut mvhd = bytes.to_vec();
                let n = mvhd.len();
                mvhd[n - 4..].copy_from_slice(&next_id.to_be_bytes());
                body.extend(mvhd);
            }
            b"trak" if handler(data, b).ok() == Some(*b"hint") => {}
            b"udta" => {
                body.extend(movie_udta(data, Some(b), session_kbps));
                wrote_udta = true;
            }
            _ => body.extend_from_slice(bytes),
        }
        if Some(i) == last_trak {
            for h in hints {
                body.extend(hint_trak(h, movie.timescale));
            }
        }
    }
    if !wrote_udta {
        body.extend(movie_udta(data, None, session_kbps));
    }
    boxed(b"moov", &body)
}

/// `udta` with the old one's boxes (but its `hnti`) and `hnti/rtp `: the
/// movie-level SDP, Apple's two lines after the description format `sdp `.
fn movie_udta(data: &[u8], old: Option<&Box4>, session_kbps: f64) -> Vec<u8> {
    let mut body = Vec::new();
    if let Some(old) = old {
        for b in children(data, old.body, old.end).unwrap_or_default() {
            if b.kind != *b"hnti" {
                body.extend_from_slice(&data[b.start..b.end]);
            }
        }
    }
    let sdp = format!(
        "sdp b=AS:{}\r\na=isma-compliance:2,2.0,2\r\n",
        session_kbps.floor() as u64
    );
    body.extend(boxed(b"hnti", &boxed(b"rtp ", sdp.as_bytes())));
    boxed(b"udta", &body)
}

fn hint_trak(h: &HintTrack, movie_timescale: u32) -> Vec<u8> {
    let media_duration: u64 = h.durations.iter().map(|&d| u64::from(d)).sum();
    let duration = rescale(media_duration as i64, h.timescale, movie_timescale) as u32;
    // tkhd, version 0, flags 1 (enabled), as Apple's: times, ID, reserved,
    // duration, reserved, layer, group, volume, reserved, matrix, 0 x 0.
    let mut tkhd = be32s(&[h.times[0], h.times[1], h.id, 0, duration, 0, 0, 0, 0]);
    tkhd.extend(be32s(&[0x0001_0000, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000, 0, 0]));
    let edts = boxed(b"edts", &full(b"elst", 0, &be32s(&[1, duration, 0, 0x0001_0000])));
    let tref = boxed(b"tref", &boxed(b"hint", &be32s(&[h.media_id])));
    let mut mdhd = be32s(&[h.times[0], h.times[1], h.timescale, media_duration as u32]);
    mdhd.extend(h.language.to_be_bytes());
    mdhd.extend([0, 0]);
    let mut hdlr = be32s(&[0]);
    hdlr.extend(b"hint");
    hdlr.extend([0; 12]);
    hdlr.extend(b"hint media handler\0");
    // hmhd: Apple leaves the PDU sizes and bit rates 0.
    let hmhd = full(b"hmhd", 0, &[0; 16]);
    let dinf = boxed(
        b"dinf",
        &full(b"dref", 0, &[be32s(&[1]), full(b"url ", 1, &[])].concat()),
    );
    let minf = boxed(b"minf", &[hmhd, dinf, hint_stbl(h)].concat());
    let mdia = boxed(
        b"mdia",
        &[full(b"mdhd", 0, &mdhd), full(b"hdlr", 0, &hdlr), minf].concat(),
    );
    let name: &[u8] = if h.video {
        b"Hinted Video Track"
    } else {
        b"Hinted Sound Track"
    };
    let udta = boxed(
        b"udta",
        &[
            boxed(b"name", name),
            boxed(b"hnti", &boxed(b"sdp ", h.sdp.as_bytes())),
            hinf(h),
        ]
        .concat(),
    );
    boxed(b"trak", &[full(b"tkhd", 1, &tkhd), edts, tref, mdia, udta].concat())
}

fn hint_stbl(h: &HintTrack) -> Vec<u8> {
    // `rtp `: 6 reserved, data reference 1, hint track version 1, last
    // compatible version 1, max packet size, then only `tims`.
    let mut rtp = vec![0; 6];
    rtp.extend([0, 1, 0, 1, 0, 1]);
    rtp.extend((MAX_PACKET as u32).to_be_bytes());
    rtp.extend(boxed(b"tims", &h.timescale.to_be_bytes()));
    let stsd = full(b"stsd", 0, &[be32s(&[1]), boxed(b"rtp ", &rtp)].concat());
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for &d in &h.durations {
        match runs.last_mut() {
            Some((n, delta)) if *delta == d => *n += 1,
            _ => runs.push((1, d)),
        }
    }
    let stts = full(
        b"stts",
        0,
        &[
            be32s(&[runs.len() as u32]),
            runs.iter().flat_map(|&(n, d)| be32s(&[n, d])).collect(),
        ]
        .concat(),
    );
    let n = h.samples.len() as u32;
    let sizes: Vec<u32> = h.samples.iter().map(|s| s.len() as u32).collect();
    let stsz = full(b"stsz", 0, &[be32s(&[0, n]), be32s(&sizes)].concat());
    let stsc = full(b"stsc", 0, &be32s(&[1, 1, n, 1]));
    let stco = match u32::try_from(h.chunk_offset) {
        Ok(o) => full(b"stco", 0, &be32s(&[1, o])),
        Err(_) => full(
            b"co64",
            0,
            &[be32s(&[1]), h.chunk_offset.to_be_bytes().to_vec()].concat(),
        ),
    };
    let mut stbl = [stsd, stts].concat();
    if h.video {
        // Only the first hint sample is a sync sample, whatever the video's
        // key frames.
        stbl.extend(full(b"stss", 0, &be32s(&[1, 1])));
    }
    stbl.extend([stsc, stsz, stco].concat());
    boxed(b"stbl", &stbl)
}

/// `hinf`: the hint track's statistics, in the boxes and order of Apple's.
fn hinf(h: &HintTrack) -> Vec<u8> {
    let s = &h.stats;
    let u32box = |kind: &[u8; 4], v: u64| boxed(kind, &(v.min(u64::from(u32::MAX)) as u32).to_be_bytes());
    let u64box = |kind: &[u8; 4], v: u64| boxed(kind, &v.to_be_bytes());
    let mut b = [
        u32box(b"totl", s.bytes),
        u32box(b"npck", s.packets),
        u32box(b"tpay", s.payload),
        u64box(b"trpy", s.bytes),
        u64box(b"nump", s.packets),
        u64box(b"tpyl", s.payload),
    ]
    .concat();
    for period in [1000, 60_000] {
        let rate = if h.video {
            u64::from(i32::MAX as u32)
        } else {
            peak_rate(&s.sends, period)
        };
        b.extend(boxed(
            b"maxr",
            &be32s(&[period as u32, rate.min(u64::from(u32::MAX)) as u32]),
        ));
    }
    b.extend(
        [
            u64box(b"dmed", s.media_bytes),
            u64box(b"dimm", s.immediate_bytes),
            u64box(b"drep", 0),
        ]
        .concat(),
    );
    // Every relative transmit time is 0.
    b.extend([boxed(b"tmin", &[0; 4]), boxed(b"tmax", &[0; 4])].concat());
    b.extend(u32box(b"pmax", u64::from(s.largest_packet)));
    let longest = h.durations.iter().copied().max().unwrap_or(0);
    b.extend(u32box(b"dmax", rescale(i64::from(longest), h.timescale, 1000) as u64));
    // payt: payload type, then the rtpmap encoding as a Pascal string.
    let rtpmap = h
        .sdp
        .lines()
        .find_map(|l| l.strip_prefix("a=rtpmap:"))
        .and_then(|l| l.split_once(' '))
        .map_or("", |(_, e)| e.trim_end());
    let pt = if h.video {
        VIDEO_PAYLOAD_TYPE
    } else {
        AUDIO_PAYLOAD_TYPE
    };
    let mut payt = be32s(&[u32::from(pt)]);
    payt.push(rtpmap.len() as u8);
    payt.extend(rtpmap.as_bytes());
    b.extend(boxed(b"payt", &payt));
    boxed(b"hinf", &b)
}

/// The highest rate, in bits per second, over any `period_ms` of sending.
fn peak_rate(sends: &[(i64, u64)], period_ms: i64) -> u64 {
    let mut best = 0;
    let mut window = 0;
    let mut first = 0;
    for &(t, bytes) in sends {
        window += bytes;
        while sends[first].0 <= t - period_ms {
            window -= sends[first].1;
            first += 1;
        }
        best = best.max(window);
    }
    best * 8 * 1000 / period_ms as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sample of NAL units of these sizes, each filled with its index,
    /// headers `nal_headers`.
    fn sample(nal_headers: &[u8], sizes: &[usize]) -> Vec<u8> {
        let mut s = Vec::new();
        for (i, (&h, &n)) in nal_headers.iter().zip(sizes).enumerate() {
            s.extend((n as u32).to_be_bytes());
            s.push(h);
            s.extend(vec![i as u8; n - 1]);
        }
        s
    }

    /// The frames below are frames of a movie Apple's hinter hinted, with
    /// the packets it made of them, written down from that file.
    #[test]
    fn packetizes_as_apples_hinter_did() {
        // Its first frame: two IDR slices of 81 and 95 bytes, NRI 1: one
        // STAP-A, header 0x38, with sizes 0x0051 and 0x005f.
        let s = sample(&[0x25, 0x25], &[81, 95]);
        assert_eq!(
            h264_packets(&s, 4).unwrap(),
            [vec![
                Piece::Immediate(vec![0x38, 0x00, 0x51]),
                Piece::Media { offset: 4, len: 81 },
                Piece::Immediate(vec![0x00, 0x5f]),
                Piece::Media { offset: 89, len: 95 },
            ]]
        );
        // A B-frame (NRI 0): STAP-A header 0x18.
        let s = sample(&[0x01, 0x01], &[11, 11]);
        assert_eq!(
            h264_packets(&s, 4).unwrap()[0][0],
            Piece::Immediate(vec![0x18, 0x00, 0x0b])
        );
        assert!(disposable(&s, 4));
        assert!(!disposable(&sample(&[0x21, 0x21], &[60, 11]), 4));
        // Frame 61: slices of 1330 and 468 bytes, too much for one STAP-A:
        // two single-NAL packets, the whole unit from after its prefix.
        let s = sample(&[0x25, 0x25], &[1330, 468]);
        assert_eq!(
            h264_packets(&s, 4).unwrap(),
            [
                vec![Piece::Media { offset: 4, len: 1330 }],
                vec![Piece::Media { offset: 1338, len: 468 }],
            ]
        );
        // Frame 121: slices of 2337 and 2251 bytes: FU-A of 1436 bytes and
        // the rest, indicator 0x3c, headers 0x85 (start) and 0x45 (end).
        let s = sample(&[0x25, 0x25], &[2337, 2251]);
        assert_eq!(
            h264_packets(&s, 4).unwrap(),
            [
                vec![
                    Piece::Immediate(vec![0x3c, 0x85]),
                    Piece::Media { offset: 5, len: 1436 }
                ],
                vec![
                    Piece::Immediate(vec![0x3c, 0x45]),
                    Piece::Media { offset: 1441, len: 900 }
                ],
                vec![
                    Piece::Immediate(vec![0x3c, 0x85]),
                    Piece::Media {
                        offset: 2346,
                        len: 1436
                    }
                ],
                vec![
                    Piece::Immediate(vec![0x3c, 0x45]),
                    Piece::Media { offset: 3782, len: 814 }
                ],
            ]
        );
        // An AAC frame of 422 bytes: AU header 0x0d30.
        assert_eq!(
            aac_packet(422).unwrap()[0],
            Piece::Immediate(vec![0x00, 0x10, 0x0d, 0x30])
        );
    }

    #[test]
    fn immediates_keep_the_bytes_before_them() {
        // Apple's frame 2: its constructors, byte for byte.
        let mut c = Constructors::video(3000);
        let pieces = [
            Piece::Immediate(vec![0x38, 0x00, 0x3c]),
            Piece::Media { offset: 4, len: 60 },
            Piece::Immediate(vec![0x00, 0x0b]),
        ];
        let written: Vec<[u8; 16]> = pieces.iter().map(|p| c.write(p, 2)).collect();
        let hex = |b: &[u8; 16]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        assert_eq!(hex(&written[0]), "010338003c0d9fbc0000000000000bb8");
        assert_eq!(hex(&written[1]), "0200003c000000020000000400000000");
        assert_eq!(hex(&written[2]), "0102000b000000020000000400000000");
        // Apple's audio sample 4, a frame of 422 bytes.
        let mut c = Constructors::audio(4, 422);
        assert_eq!(
            hex(&c.write(&aac_packet(422).unwrap()[0], 4)),
            "010400100d30000400000000000001a6"
        );
    }

    #[test]
    fn rejects_what_it_cannot_hint() {
        assert!(
            h264_packets(&[0, 0, 0, 9, 0x65], 4).is_err(),
            "a NAL unit past the sample"
        );
        assert!(h264_packets(&[], 4).is_err(), "an empty sample");
        assert!(aac_packet(1435).is_err());
        assert!(hint_bytes(b"\0\0\0\x08free").unwrap_err().contains("no moov"));
    }

    #[test]
    fn base64_and_rescaling() {
        assert_eq!(base64(&[0x28, 0xce, 0x09, 0x88]), "KM4JiA==");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
        assert_eq!(rescale(512, 15360, 90_000), 3000);
        assert_eq!(rescale(-1024, 8000, 8000), -1024);
        assert_eq!(rescale(1, 3, 2), 1);
        assert_eq!(rescale(-1, 3, 2), -1);
    }

    #[test]
    fn peak_rate_counts_the_busiest_window() {
        let sends = [(0, 100), (500, 100), (999, 100), (1500, 10)];
        assert_eq!(peak_rate(&sends, 1000), 300 * 8);
    }
}
