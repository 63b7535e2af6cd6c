//! Whether a movie fits a channel: the same tracks and codecs as the
//! channel's reference movie (DSS's `sdp_reference_movie`), so that viewers,
//! who were told the reference's SDP once when they joined, can decode every
//! movie the channel plays.
//!
//! Each hint track is described by its media section of the movie's SDP:
//! media type, payload type, encoding name, clock rate, channels, and the
//! `a=fmtp` parameters. Each of the reference's tracks is paired with a
//! track of the movie of the same media type (the first that fits, so the
//! order of tracks in the file does not matter), and the pair must agree on:
//!
//! - the encoding (`H264`, `MPEG4-GENERIC`, ...; for a static payload type
//!   without `a=rtpmap`, the payload type), the clock rate and the number of
//!   audio channels;
//! - **H.264**: `packetization-mode`, and the profile of `profile-level-id`:
//!   the movie's must be one a decoder of the reference's profile decodes
//!   (Constrained Baseline, which x264 writes for its fastest presets even
//!   when asked for Main, plays on a Main or High channel; High does not
//!   play on a Main one), and its level no higher than the reference's (a
//!   decoder sized for the reference may not keep up). `sprop-parameter-sets`
//!   may differ: a different resolution or encoder setting is a new SPS/PPS,
//!   which decoders (ffmpeg, browsers, hardware decoders alike) take when it
//!   arrives in-band before the key frame it governs. A movie whose
//!   parameter sets differ from the reference's therefore fits, and
//!   [`TrackMap::parameter_sets`] holds its own, which the channel must send
//!   in-band (as single NAL unit packets, with the timestamp of the first key
//!   frame, just before it) when the movie starts: hinted files carry them
//!   only in the sample description, and a viewer's decoder would otherwise
//!   go on with the reference's;
//! - **H.265**: `profile-id` and `tier-flag`, `level-id` no higher; the
//!   `sprop-vps/sps/pps` are handled as H.264's;
//! - **MPEG-4 video** (`MP4V-ES`): `profile-level-id`; a different `config`
//!   (the VOL header) is sent in-band like H.264's parameter sets;
//! - **AAC** (`MPEG4-GENERIC`): the depacketizer's parameters (`mode`,
//!   `sizelength`, `indexlength`, `indexdeltalength`, `constantsize`) and the
//!   AudioSpecificConfig's contents: object type, sample rate, channels,
//!   frame length, SBR and PS. These cannot change mid-stream (the decoder
//!   is configured from the SDP alone), but the same contents written two
//!   ways (`1190` and `119056E500`, with an explicit "no SBR") are the same;
//! - **LATM AAC** (`MP4A-LATM`): `config`, `cpresent` and `object`;
//! - anything else: every `a=fmtp` parameter, as written.
//!
//! A movie with a track the reference lacks fits: that track is not sent,
//! and [`Fit::ignored`] lists it for the log (DSS warned "N of M hinted
//! tracks will not broadcast"). A movie lacking one of the reference's tracks
//! does not fit: viewers would wait on a silent stream. DSS compared only the
//! media type, encoding and clock rate and played a movie if any one track
//! matched; a channel here never plays a movie broken.

use std::fmt;

use loader::{FourCc, Movie};

/// One RTP hint track as its SDP media section describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackFormat {
    /// The hint track's ID.
    pub track_id: u32,
    /// The track it draws its media from (what `streamalot inspect` shows
    /// with the codec), if the hint track names one.
    pub media_track_id: Option<u32>,
    /// `video`, `audio`, ... from the `m=` line.
    pub media: String,
    pub payload_type: u8,
    /// From `a=rtpmap`, upper case (`H264`, `MPEG4-GENERIC`).
    pub encoding: Option<String>,
    /// From `a=rtpmap`, else the hint track's clock.
    pub clock_rate: u32,
    /// Audio channels from `a=rtpmap` (1 when not given).
    pub channels: Option<u32>,
    /// `a=fmtp` parameters: names in lower case, in the order written.
    pub fmtp: Vec<(String, String)>,
    /// The media track's sample format (`avc1`, `mp4a`, ...).
    pub codec: Option<FourCc>,
}

/// A movie's hint tracks, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub tracks: Vec<TrackFormat>,
}

/// How a fitting movie's tracks map onto the channel's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fit {
    /// One per channel track, in the reference's order.
    pub tracks: Vec<TrackMap>,
    /// Hint tracks of the movie the channel does not send.
    pub ignored: Vec<u32>,
}

/// One channel track and the movie track that feeds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackMap {
    /// The movie's hint track ID.
    pub movie_track: u32,
    /// The payload type to send with: the reference's, which viewers were
    /// told (the movie's own may differ, as DSS also remapped).
    pub payload_type: u8,
    /// Parameter sets (H.264/H.265 NAL units, or an MPEG-4 VOL header) to
    /// send in-band before the movie's first key frame, because they differ
    /// from the reference's; empty when they agree.
    pub parameter_sets: Vec<Vec<u8>>,
}

/// Why a movie does not fit the channel. The text is the reason half of a
/// log line: "movie X skipped: {reason}".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    #[error("it has no {media} track; the channel's track {channel_track} is {wanted}")]
    MissingTrack {
        media: String,
        channel_track: u32,
        wanted: String,
    },
    #[error("track {track} is {found}, the channel's is {wanted}")]
    Format { track: u32, found: String, wanted: String },
}

impl Layout {
    /// The layout of `movie`'s hint tracks, from its SDP.
    pub fn of(movie: &Movie) -> Layout {
        let sections = media_sections(movie.sdp());
        let tracks = movie
            .hint_tracks()
            .enumerate()
            .map(|(i, track)| {
                let control = format!("trackID={}", track.id);
                let section = sections
                    .iter()
                    .find(|s| s.control.as_deref() == Some(control.as_str()))
                    .or_else(|| sections.get(i));
                let media_track_id = track.references.first().copied();
                let media_track = media_track_id.and_then(|id| movie.track(id));
                let clock = track.rtp.map_or(0, |r| r.rtp_timescale);
                let mut f = TrackFormat {
                    track_id: track.id,
                    media_track_id,
                    media: "application".into(),
                    payload_type: 96,
                    encoding: None,
                    clock_rate: clock,
                    channels: None,
                    fmtp: Vec::new(),
                    codec: media_track.and_then(|t| t.codec),
                };
                if let Some(s) = section {
                    f.media = s.media.clone();
                    f.payload_type = s.payload_type;
                    if let Some((name, rate, channels)) = &s.rtpmap {
                        f.encoding = Some(name.to_ascii_uppercase());
                        f.clock_rate = *rate;
                        f.channels = *channels;
                    }
                    f.fmtp = s.fmtp.clone();
                }
                f
            })
            .collect();
        Layout { tracks }
    }

    /// Whether `movie` (its layout) fits a channel whose reference has this
    /// layout.
    pub fn check(&self, movie: &Layout) -> Result<Fit, Mismatch> {
        let mut used = vec![false; movie.tracks.len()];
        let mut maps = Vec::with_capacity(self.tracks.len());
        for wanted in &self.tracks {
            let mut first_miss = None;
            let mut found = None;
            for (i, t) in movie.tracks.iter().enumerate() {
                if used[i] || !t.media.eq_ignore_ascii_case(&wanted.media) {
                    continue;
                }
                match compare(wanted, t) {
                    Ok(sets) => {
                        found = Some((i, sets));
                        break;
                    }
                    Err(m) => {
                        first_miss.get_or_insert(m);
                    }
                }
            }
            match (found, first_miss) {
                (Some((i, parameter_sets)), _) => {
                    used[i] = true;
                    maps.push(TrackMap {
                        movie_track: movie.tracks[i].track_id,
                        payload_type: wanted.payload_type,
                        parameter_sets,
                    });
                }
                (None, Some(miss)) => return Err(miss),
                (None, None) => {
                    return Err(Mismatch::MissingTrack {
                        media: wanted.media.clone(),
                        channel_track: wanted.number(),
                        wanted: wanted.to_string(),
                    })
                }
            }
        }
        let ignored = movie
            .tracks
            .iter()
            .zip(&used)
            .filter(|(_, &u)| !u)
            .map(|(t, _)| t.track_id)
            .collect();
        Ok(Fit { tracks: maps, ignored })
    }
}

impl TrackFormat {
    /// The number to name the track by: its media track's ID (the codec's
    /// track, as `streamalot inspect` lists it), else the hint track's.
    pub fn number(&self) -> u32 {
        self.media_track_id.unwrap_or(self.track_id)
    }

    /// For AAC in RFC 3640's AU-header modes (`MPEG4-GENERIC`, `AAC-hbr`
    /// and `AAC-lbr`): the bits of the first AU header and of the others
    /// (`sizelength` plus `indexlength` or `indexdeltalength`), so that the
    /// frames of a packet can be counted. `None` for anything else.
    pub fn aac_au_header_bits(&self) -> Option<(u32, u32)> {
        if self.codec_kind() != Kind::Aac {
            return None;
        }
        let n = |name: &str| self.param(name).and_then(|v| v.trim().parse::<u32>().ok()).unwrap_or(0);
        let size = n("sizelength");
        (size > 0).then(|| (size + n("indexlength"), size + n("indexdeltalength")))
    }

    /// The parameter sets the SDP gives a decoder of this track: H.264's
    /// `sprop-parameter-sets`, H.265's `sprop-vps/sps/pps`, MPEG-4 video's
    /// `config`; empty for other codecs. A channel that plays a movie after
    /// one whose sets differed sends these in-band again, so the decoder
    /// goes back to them.
    pub fn parameter_sets(&self) -> Vec<Vec<u8>> {
        let from = |params: &[&str]| -> Vec<Vec<u8>> {
            params
                .iter()
                .filter_map(|p| self.param(p))
                .flat_map(|v| v.split(','))
                .filter_map(|b| base64(b.trim()))
                .filter(|nal| !nal.is_empty())
                .collect()
        };
        match self.codec_kind() {
            Kind::H264 => from(&["sprop-parameter-sets"]),
            Kind::H265 => from(&["sprop-vps", "sprop-sps", "sprop-pps"]),
            Kind::Mp4v => self.param("config").and_then(hex).into_iter().collect(),
            _ => Vec::new(),
        }
    }

    fn param(&self, name: &str) -> Option<&str> {
        self.fmtp.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    fn codec_kind(&self) -> Kind {
        match self.encoding.as_deref() {
            Some("H264") => Kind::H264,
            Some("H265") => Kind::H265,
            Some("MPEG4-GENERIC")
                if self
                    .param("mode")
                    .is_some_and(|m| m.to_ascii_lowercase().starts_with("aac")) =>
            {
                Kind::Aac
            }
            Some("MP4A-LATM") => Kind::Latm,
            Some("MP4V-ES") => Kind::Mp4v,
            _ => Kind::Other,
        }
    }

    /// "H.264", "AAC", or the encoding name: the codec without its details.
    fn codec_name(&self) -> String {
        match self.codec_kind() {
            Kind::H264 => "H.264".into(),
            Kind::H265 => "H.265".into(),
            Kind::Aac => "AAC".into(),
            Kind::Latm => "LATM AAC".into(),
            Kind::Mp4v => "MPEG-4 video".into(),
            Kind::Other => match &self.encoding {
                Some(e) => e.clone(),
                None => format!("payload type {}", self.payload_type),
            },
        }
    }

    fn rate_and_channels(&self) -> String {
        let mut s = format!("{} Hz", self.clock_rate);
        if self.media.eq_ignore_ascii_case("audio") {
            s.push(' ');
            s.push_str(&channels_name(self.channels.unwrap_or(1)));
        }
        s
    }
}

/// The details that tell codecs apart in a log line: "H.264 Main level 3.0",
/// "AAC LC 48000 Hz stereo".
impl fmt::Display for TrackFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.codec_kind() {
            Kind::H264 => {
                let (profile, flags, level) = h264_profile_level(self);
                write!(
                    f,
                    "H.264 {} level {}",
                    h264_profile_name(profile, flags),
                    level_name(level)
                )
            }
            Kind::H265 => {
                let (profile, tier, level) = h265_profile(self);
                let tier = if tier == 0 { "Main tier" } else { "High tier" };
                write!(f, "H.265 profile {profile} {tier} level {}", f64::from(level) / 30.0)
            }
            Kind::Aac => match self.param("config").and_then(AudioConfig::parse) {
                Some(c) => write!(f, "{c}"),
                None => write!(f, "AAC {}", self.rate_and_channels()),
            },
            _ if self.media.eq_ignore_ascii_case("audio") => {
                write!(f, "{} {}", self.codec_name(), self.rate_and_channels())
            }
            _ => f.write_str(&self.codec_name()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    H264,
    H265,
    Aac,
    Latm,
    Mp4v,
    Other,
}

fn channels_name(n: u32) -> String {
    match n {
        1 => "mono".into(),
        2 => "stereo".into(),
        n => format!("{n} channels"),
    }
}

/// Checks the movie's track `got` against the reference's `want`; on a fit,
/// the parameter sets to send in-band.
fn compare(want: &TrackFormat, got: &TrackFormat) -> Result<Vec<Vec<u8>>, Mismatch> {
    let differ = |found: String, wanted: String| Mismatch::Format {
        track: got.number(),
        found,
        wanted,
    };
    match (&want.encoding, &got.encoding) {
        (Some(w), Some(g)) if w == g => {}
        (None, None) if want.payload_type == got.payload_type => {}
        _ => return Err(differ(got.to_string(), want.to_string())),
    }
    if want.clock_rate != got.clock_rate || want.channels.unwrap_or(1) != got.channels.unwrap_or(1) {
        let name = want.codec_name();
        return Err(differ(
            format!("{} {}", got.codec_name(), got.rate_and_channels()),
            format!("{name} {}", want.rate_and_channels()),
        ));
    }
    let param = |name: &str, default: &str| -> Result<(), Mismatch> {
        let w = want.param(name).unwrap_or(default);
        let g = got.param(name).unwrap_or(default);
        if w.eq_ignore_ascii_case(g) {
            return Ok(());
        }
        let show = |v: &str| if v.is_empty() { "none".to_owned() } else { v.to_owned() };
        Err(differ(
            format!("{} with {name} {}", got.codec_name(), show(g)),
            format!("{} with {name} {}", want.codec_name(), show(w)),
        ))
    };
    match want.codec_kind() {
        Kind::H264 => {
            param("packetization-mode", "0")?;
            let (wp, _, wl) = h264_profile_level(want);
            let (gp, gc, gl) = h264_profile_level(got);
            if !h264_decodes(wp, gp, gc) || gl > wl {
                return Err(differ(got.to_string(), want.to_string()));
            }
            Ok(changed_sets(want, got, &["sprop-parameter-sets"]))
        }
        Kind::H265 => {
            let (wp, wt, wl) = h265_profile(want);
            let (gp, gt, gl) = h265_profile(got);
            if wp != gp || wt != gt || gl > wl {
                return Err(differ(got.to_string(), want.to_string()));
            }
            Ok(changed_sets(want, got, &["sprop-vps", "sprop-sps", "sprop-pps"]))
        }
        Kind::Mp4v => {
            param("profile-level-id", "1")?;
            let w = want.param("config").and_then(hex);
            let g = got.param("config").and_then(hex);
            Ok(match g {
                Some(g) if w.as_ref() != Some(&g) => vec![g],
                _ => Vec::new(),
            })
        }
        Kind::Aac => {
            for name in ["mode", "sizelength", "indexlength", "indexdeltalength", "constantsize"] {
                param(name, "")?;
            }
            let w = want.param("config").unwrap_or("");
            let g = got.param("config").unwrap_or("");
            let same = match (AudioConfig::parse(w), AudioConfig::parse(g)) {
                (Some(a), Some(b)) => a == b,
                _ => w.eq_ignore_ascii_case(g),
            };
            if !same {
                return Err(differ(got.to_string(), want.to_string()));
            }
            Ok(Vec::new())
        }
        Kind::Latm => {
            param("config", "")?;
            param("cpresent", "1")?;
            param("object", "")?;
            Ok(Vec::new())
        }
        Kind::Other => {
            let mut names: Vec<&str> = want.fmtp.iter().chain(&got.fmtp).map(|(k, _)| k.as_str()).collect();
            names.sort_unstable();
            names.dedup();
            for name in names {
                param(name, "")?;
            }
            Ok(Vec::new())
        }
    }
}

/// The movie's parameter sets named by `params` (base64, comma-separated NAL
/// units), when they differ from the reference's.
fn changed_sets(want: &TrackFormat, got: &TrackFormat, params: &[&str]) -> Vec<Vec<u8>> {
    let sets = |t: &TrackFormat| -> Vec<Vec<u8>> {
        params
            .iter()
            .filter_map(|p| t.param(p))
            .flat_map(|v| v.split(','))
            .filter_map(|b| base64(b.trim()))
            .filter(|nal| !nal.is_empty())
            .collect()
    };
    let g = sets(got);
    if g == sets(want) {
        Vec::new()
    } else {
        g
    }
}

/// (profile_idc, constraint flags, level_idc) of `profile-level-id`; RFC 6184
/// section 8.1's default when absent is Baseline level 1.0 (42000A).
fn h264_profile_level(t: &TrackFormat) -> (u8, u8, u8) {
    let v = t.param("profile-level-id").and_then(hex).unwrap_or_default();
    match v.as_slice() {
        [p, c, l] => (*p, *c, *l),
        _ => (66, 0, 10),
    }
}

/// `constraint_set1_flag`: the stream obeys Main's constraints too.
const H264_SET1: u8 = 0x40;

/// Whether a decoder for H.264 profile `decoder` decodes a stream of
/// profile `stream` with constraint flags `flags`: each profile decodes its
/// own, Constrained Baseline (Baseline obeying Main's constraints, what
/// x264 writes for `-profile baseline` or its fastest presets) is decoded by
/// Main and every High profile, Main by the High profiles, and each High
/// profile by those above it. A stream that says it obeys Main's
/// constraints is decoded wherever Main is.
fn h264_decodes(decoder: u8, stream: u8, flags: u8) -> bool {
    // The High profiles in order of what they add; each decodes the ones
    // before it.
    const HIGH: [u8; 4] = [100, 110, 122, 244];
    let main_like = stream == 77 || flags & H264_SET1 != 0;
    match decoder {
        d if d == stream => true,
        77 => main_like,
        88 => stream == 66,
        d => match (
            HIGH.iter().position(|&h| h == d),
            HIGH.iter().position(|&h| h == stream),
        ) {
            (Some(di), Some(si)) => si <= di,
            (Some(_), None) => main_like,
            _ => false,
        },
    }
}

/// The profile's name, telling Constrained Baseline from Baseline.
fn h264_profile_name(idc: u8, flags: u8) -> String {
    match idc {
        66 if flags & H264_SET1 != 0 => "Constrained Baseline".into(),
        66 => "Baseline".into(),
        77 => "Main".into(),
        88 => "Extended".into(),
        100 => "High".into(),
        110 => "High 10".into(),
        122 => "High 4:2:2".into(),
        244 => "High 4:4:4".into(),
        n => format!("profile {n}"),
    }
}

fn level_name(idc: u8) -> String {
    format!("{}.{}", idc / 10, idc % 10)
}

/// (profile-id, tier-flag, level-id), with RFC 7798's defaults (Main, Main
/// tier, level 3.1).
fn h265_profile(t: &TrackFormat) -> (u32, u32, u32) {
    let num = |name: &str, default: u32| t.param(name).and_then(|v| v.trim().parse().ok()).unwrap_or(default);
    (num("profile-id", 1), num("tier-flag", 0), num("level-id", 93))
}

/// What an AAC AudioSpecificConfig (ISO/IEC 14496-3 1.6.2.1) says, as far
/// as a decoder's setup depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct AudioConfig {
    object_type: u8,
    sample_rate: u32,
    channels: u8,
    /// 960-sample frames rather than 1024.
    short_frames: bool,
    sbr: bool,
    ps: bool,
}

const AAC_RATES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];

impl AudioConfig {
    /// Parses the hex `config` of an `a=fmtp` line.
    fn parse(config: &str) -> Option<AudioConfig> {
        let bytes = hex(config)?;
        let mut r = Bits { data: &bytes, at: 0 };
        let object_type = |r: &mut Bits| -> Option<u8> {
            let t = r.read(5)? as u8;
            if t == 31 {
                Some(32 + r.read(6)? as u8)
            } else {
                Some(t)
            }
        };
        let rate = |r: &mut Bits| -> Option<u32> {
            match r.read(4)? {
                15 => r.read(24),
                i => AAC_RATES.get(i as usize).copied(),
            }
        };
        let mut c = AudioConfig {
            object_type: object_type(&mut r)?,
            sample_rate: rate(&mut r)?,
            channels: r.read(4)? as u8,
            short_frames: false,
            sbr: false,
            ps: false,
        };
        // Explicit hierarchical signalling of SBR (5) or PS (29): the core's
        // object type and the output rate follow.
        if c.object_type == 5 || c.object_type == 29 {
            c.sbr = true;
            c.ps = c.object_type == 29;
            c.sample_rate = rate(&mut r)?;
            c.object_type = object_type(&mut r)?;
        }
        if matches!(c.object_type, 1..=4 | 6 | 7 | 17 | 19..=23) {
            c.short_frames = r.read(1)? == 1;
            if r.read(1)? == 1 {
                r.read(14)?; // core coder delay
            }
            r.read(1)?; // extension flag (its payload only for ER types)
        }
        // Backward-compatible signalling after the core config: sync word
        // 0x2b7, extension type 5, then whether SBR is there (and PS, 0x548).
        if !c.sbr && r.remaining() >= 16 && r.read(11)? == 0x2b7 && r.read(5)? == 5 {
            c.sbr = r.read(1)? == 1;
            if c.sbr {
                c.sample_rate = rate(&mut r)?;
                if r.remaining() >= 12 && r.read(11)? == 0x548 {
                    c.ps = r.read(1)? == 1;
                }
            }
        }
        Some(c)
    }
}

impl fmt::Display for AudioConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match (self.ps, self.sbr, self.object_type) {
            (true, _, _) => "AAC HE v2".to_owned(),
            (_, true, _) => "AAC HE".to_owned(),
            (_, _, 1) => "AAC Main".to_owned(),
            (_, _, 2) => "AAC LC".to_owned(),
            (_, _, 4) => "AAC LTP".to_owned(),
            (_, _, 23) => "AAC LD".to_owned(),
            (_, _, 39) => "AAC ELD".to_owned(),
            (_, _, t) => format!("AAC (object type {t})"),
        };
        write!(
            f,
            "{name} {} Hz {}",
            self.sample_rate,
            channels_name(u32::from(self.channels))
        )?;
        if self.short_frames {
            f.write_str(" (960-sample frames)")?;
        }
        Ok(())
    }
}

/// A big-endian bit reader.
struct Bits<'a> {
    data: &'a [u8],
    at: usize,
}

impl Bits<'_> {
    fn remaining(&self) -> usize {
        self.data.len() * 8 - self.at
    }

    fn read(&mut self, n: usize) -> Option<u32> {
        if n > self.remaining() {
            return None;
        }
        let mut v = 0;
        for _ in 0..n {
            let bit = (self.data[self.at / 8] >> (7 - self.at % 8)) & 1;
            v = (v << 1) | u32::from(bit);
            self.at += 1;
        }
        Some(v)
    }
}

fn hex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Standard base64 (RFC 4648 section 4), padding optional.
fn base64(s: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let s = s.trim_end_matches('=').as_bytes();
    if s.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.chunks(4) {
        let mut acc = 0u32;
        for &c in chunk {
            acc = (acc << 6) | value(c)?;
        }
        acc <<= 6 * (4 - chunk.len() as u32);
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

/// One `m=` section of an SDP.
#[derive(Debug, Default)]
struct Section {
    media: String,
    payload_type: u8,
    rtpmap: Option<(String, u32, Option<u32>)>,
    fmtp: Vec<(String, String)>,
    control: Option<String>,
}

fn media_sections(sdp: &str) -> Vec<Section> {
    let mut out: Vec<Section> = Vec::new();
    for line in sdp.lines().map(str::trim) {
        if let Some(m) = line.strip_prefix("m=") {
            let mut words = m.split_whitespace();
            let media = words.next().unwrap_or("").to_owned();
            let payload_type = words.nth(2).and_then(|p| p.parse().ok()).unwrap_or(96);
            out.push(Section {
                media,
                payload_type,
                ..Section::default()
            });
            continue;
        }
        let Some(s) = out.last_mut() else { continue };
        let for_us = |rest: &str| -> Option<String> {
            let (pt, value) = rest.split_once(' ')?;
            (pt.trim().parse::<u8>().ok()? == s.payload_type).then(|| value.trim().to_owned())
        };
        if let Some(rest) = line.strip_prefix("a=rtpmap:") {
            if let Some(v) = for_us(rest) {
                let mut parts = v.split('/');
                let name = parts.next().unwrap_or("").to_owned();
                let rate = parts.next().and_then(|r| r.trim().parse().ok());
                let channels = parts.next().and_then(|c| c.trim().parse().ok());
                if let Some(rate) = rate {
                    s.rtpmap = Some((name, rate, channels));
                }
            }
        } else if let Some(rest) = line.strip_prefix("a=fmtp:") {
            if let Some(v) = for_us(rest) {
                s.fmtp = v
                    .split(';')
                    .filter_map(|kv| {
                        let (k, v) = kv.split_once('=')?;
                        Some((k.trim().to_ascii_lowercase(), v.trim().to_owned()))
                    })
                    .collect();
            }
        } else if let Some(c) = line.strip_prefix("a=control:") {
            s.control = Some(c.trim().to_owned());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::testing::{self, with, Clip, AAC_44K, H264_AAC};

    fn layout(path: &std::path::Path) -> Layout {
        Layout::of(&Movie::open(path).unwrap())
    }

    #[test]
    fn describes_the_sample() {
        let l = layout(&testing::sample());
        let shown: Vec<String> = l.tracks.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["H.264 Main level 1.3", "AAC LC 48000 Hz stereo"]);
        let (v, a) = (&l.tracks[0], &l.tracks[1]);
        assert_eq!((v.track_id, v.media_track_id, v.payload_type), (3, Some(1), 96));
        assert_eq!((a.track_id, a.media_track_id, a.payload_type), (4, Some(2), 97));
        assert_eq!(a.encoding.as_deref(), Some("MPEG4-GENERIC"));
        assert_eq!((a.clock_rate, a.channels), (48000, Some(2)));
        assert_eq!(a.param("sizelength"), Some("13"));
        assert_eq!(v.codec, Some(FourCc(*b"avc1")));
        assert_eq!(
            l.check(&l)
                .unwrap()
                .tracks
                .iter()
                .map(|m| m.movie_track)
                .collect::<Vec<_>>(),
            [3, 4]
        );
    }

    #[test]
    fn audio_configs_decode() {
        let lc = AudioConfig::parse("1190").unwrap();
        assert_eq!(
            (lc.object_type, lc.sample_rate, lc.channels, lc.sbr),
            (2, 48000, 2, false)
        );
        // The same, with an explicit "no SBR" extension after it.
        assert_eq!(AudioConfig::parse("119056E500"), Some(lc));
        assert_eq!(AudioConfig::parse("1210").unwrap().sample_rate, 44100);
        assert_eq!(AudioConfig::parse("1188").unwrap().channels, 1);
        // HE-AAC, explicit: object type 5 at 24 kHz core, 48 kHz output.
        let he = AudioConfig::parse("2B118800").unwrap();
        assert_eq!((he.sbr, he.sample_rate, he.object_type), (true, 48000, 2));
        assert_eq!(he.to_string(), "AAC HE 48000 Hz stereo");
        assert_eq!(AudioConfig::parse("1"), None);
        assert_eq!(AudioConfig::parse("zz"), None);
    }

    #[test]
    fn base64_and_hex() {
        assert_eq!(base64("aO+8gA=="), Some(vec![0x68, 0xef, 0xbc, 0x80]));
        assert_eq!(base64("aO+8gA"), Some(vec![0x68, 0xef, 0xbc, 0x80]));
        assert_eq!(base64("TWFu"), Some(b"Man".to_vec()));
        assert_eq!(base64("TWE"), Some(b"Ma".to_vec()));
        assert_eq!(base64("T"), None);
        assert_eq!(base64("T$=="), None);
        assert_eq!(hex("4D400d"), Some(vec![0x4d, 0x40, 0x0d]));
        assert_eq!(hex("4D4"), None);
    }

    fn sdp_track(media: &str, rtpmap: &str, fmtp: &str) -> TrackFormat {
        let sdp = format!("v=0\r\nm={media} 0 RTP/AVP 96\r\na=rtpmap:96 {rtpmap}\r\na=fmtp:96 {fmtp}\r\n");
        let s = media_sections(&sdp).remove(0);
        let (name, rate, channels) = s.rtpmap.unwrap();
        TrackFormat {
            track_id: 1,
            media_track_id: None,
            media: s.media,
            payload_type: s.payload_type,
            encoding: Some(name.to_ascii_uppercase()),
            clock_rate: rate,
            channels,
            fmtp: s.fmtp,
            codec: None,
        }
    }

    #[test]
    fn codec_parameters_that_matter() {
        let h264 = |fmtp| sdp_track("video", "H264/90000", fmtp);
        let main30 = h264("packetization-mode=1;profile-level-id=4D401E;sprop-parameter-sets=Z01AHg==,aO+8gA==");
        // A lower level and other parameter sets fit, with the sets to send.
        let lower = h264("packetization-mode=1;profile-level-id=4D400D;sprop-parameter-sets=Z01ADQ==,aO+8gA==");
        assert_eq!(
            compare(&main30, &lower).unwrap(),
            [vec![0x67, 0x4d, 0x40, 0x0d], vec![0x68, 0xef, 0xbc, 0x80]]
        );
        let same = h264("profile-level-id=4d401e; packetization-mode=1; sprop-parameter-sets=Z01AHg==,aO+8gA==");
        assert_eq!(compare(&main30, &same).unwrap(), Vec::<Vec<u8>>::new());
        let higher = h264("packetization-mode=1;profile-level-id=4D4028");
        assert_eq!(
            compare(&main30, &higher).unwrap_err().to_string(),
            "track 1 is H.264 Main level 4.0, the channel's is H.264 Main level 3.0"
        );
        let mode0 = h264("profile-level-id=4D401E");
        assert_eq!(
            compare(&main30, &mode0).unwrap_err().to_string(),
            "track 1 is H.264 with packetization-mode 0, the channel's is H.264 with packetization-mode 1"
        );
        // Profiles a decoder of the reference's profile decodes.
        let cbp = h264("packetization-mode=1;profile-level-id=42C01E");
        assert!(compare(&main30, &cbp).is_ok());
        let high = h264("packetization-mode=1;profile-level-id=64001E");
        assert!(compare(&main30, &high).is_err());
        assert!(compare(&high, &main30).is_ok());
        assert!(compare(&cbp, &main30).is_err());
        let plain_baseline = h264("packetization-mode=1;profile-level-id=42001E");
        assert_eq!(
            compare(&main30, &plain_baseline).unwrap_err().to_string(),
            "track 1 is H.264 Baseline level 3.0, the channel's is H.264 Main level 3.0"
        );
        assert!(compare(&plain_baseline, &cbp).is_ok());
        // Generic codecs: every parameter.
        let amr = |fmtp| sdp_track("audio", "AMR/8000/1", fmtp);
        assert!(compare(&amr("octet-align=1"), &amr("octet-align=1")).is_ok());
        assert_eq!(
            compare(&amr("octet-align=1"), &amr("")).unwrap_err().to_string(),
            "track 1 is AMR with octet-align none, the channel's is AMR with octet-align 1"
        );
    }

    /// Movies made by ffmpeg against a reference made the same way: H.264
    /// Main 3.0 at 160x120 and AAC LC 48 kHz stereo.
    #[test]
    fn real_movies_fit_or_say_why_not() {
        let recipes = [
            Clip {
                name: "ref.mp4",
                args: H264_AAC,
            },
            // Another picture, same settings: same parameter sets.
            Clip {
                name: "other.mp4",
                args: with(&["-vf", "hue=h=90"]),
            },
            // Another size: new SPS, fits with the sets to send.
            Clip {
                name: "bigger.mov",
                args: with(&["-vf", "scale=176:144"]),
            },
            Clip {
                name: "high.mp4",
                args: &[
                    "-map",
                    "0:v",
                    "-map",
                    "1:a",
                    "-c:v",
                    "libx264",
                    "-preset",
                    "veryfast",
                    "-profile:v",
                    "high",
                    "-level",
                    "3.0",
                    "-pix_fmt",
                    "yuv420p",
                    "-c:a",
                    "aac",
                    "-ac",
                    "2",
                ],
            },
            Clip {
                name: "baseline.mp4",
                args: &[
                    "-map",
                    "0:v",
                    "-map",
                    "1:a",
                    "-c:v",
                    "libx264",
                    "-preset",
                    "ultrafast",
                    "-profile:v",
                    "baseline",
                    "-level",
                    "3.0",
                    "-pix_fmt",
                    "yuv420p",
                    "-c:a",
                    "aac",
                    "-ac",
                    "2",
                ],
            },
            Clip {
                name: "aac44.mp4",
                args: AAC_44K,
            },
            Clip {
                name: "mono.mp4",
                args: &[
                    "-map",
                    "0:v",
                    "-map",
                    "1:a",
                    "-c:v",
                    "libx264",
                    "-preset",
                    "ultrafast",
                    "-profile:v",
                    "main",
                    "-level",
                    "3.0",
                    "-pix_fmt",
                    "yuv420p",
                    "-c:a",
                    "aac",
                    "-ac",
                    "1",
                ],
            },
            Clip {
                name: "audio.mp4",
                args: &["-map", "1:a", "-c:a", "aac", "-ac", "2"],
            },
            Clip {
                name: "mpeg4.3gp",
                args: &["-map", "0:v", "-map", "1:a", "-c:v", "mpeg4", "-c:a", "aac", "-ac", "2"],
            },
            // Audio first, and a second audio track the channel lacks.
            Clip {
                name: "reordered.mp4",
                args: &[
                    "-map",
                    "2:a",
                    "-map",
                    "1:a",
                    "-map",
                    "0:v",
                    "-c:v",
                    "libx264",
                    "-preset",
                    "ultrafast",
                    "-profile:v",
                    "main",
                    "-level",
                    "3.0",
                    "-pix_fmt",
                    "yuv420p",
                    "-c:a",
                    "aac",
                    "-ac",
                    "2",
                ],
            },
        ];
        let Some(paths) = testing::clips(&recipes) else {
            eprintln!("skipped: ffmpeg is not installed");
            return;
        };
        let layouts: Vec<Layout> = paths.iter().map(|p| layout(p)).collect();
        let reference = &layouts[0];
        let shown: Vec<String> = reference.tracks.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["H.264 Main level 3.0", "AAC LC 48000 Hz stereo"]);
        let check = |i: usize| reference.check(&layouts[i]);
        let reason = |i: usize| check(i).unwrap_err().to_string();

        let fit = check(1).unwrap();
        assert!(fit.tracks.iter().all(|t| t.parameter_sets.is_empty()), "{fit:?}");
        assert!(fit.ignored.is_empty());

        let fit = check(2).unwrap();
        let sets = &fit.tracks[0].parameter_sets;
        assert_eq!(
            sets.iter().map(|n| n[0] & 0x1f).collect::<Vec<_>>(),
            [7, 8],
            "SPS then PPS"
        );
        assert!(fit.tracks[1].parameter_sets.is_empty());

        assert_eq!(
            reason(3),
            "track 1 is H.264 High level 3.0, the channel's is H.264 Main level 3.0"
        );
        // What x264 writes for Baseline (and for Main at its fastest preset,
        // which leaves out what Main adds) a Main decoder decodes.
        assert_eq!(layouts[4].tracks[0].to_string(), "H.264 Constrained Baseline level 3.0");
        assert!(check(4).is_ok());
        assert_eq!(
            reason(5),
            "track 2 is AAC 44100 Hz stereo, the channel's is AAC 48000 Hz stereo"
        );
        assert_eq!(
            reason(6),
            "track 2 is AAC 48000 Hz mono, the channel's is AAC 48000 Hz stereo"
        );
        assert_eq!(
            reason(7),
            "it has no video track; the channel's track 1 is H.264 Main level 3.0"
        );
        assert_eq!(
            reason(8),
            "track 1 is MPEG-4 video, the channel's is H.264 Main level 3.0"
        );

        let reordered = &layouts[9];
        let fit = reference.check(reordered).unwrap();
        let video = reordered.tracks.iter().find(|t| t.media == "video").unwrap();
        let audio48 = reordered
            .tracks
            .iter()
            .find(|t| t.media == "audio" && t.clock_rate == 48000)
            .unwrap();
        let audio44 = reordered.tracks.iter().find(|t| t.clock_rate == 44100).unwrap();
        assert_eq!(
            fit.tracks.iter().map(|t| t.movie_track).collect::<Vec<_>>(),
            [video.track_id, audio48.track_id]
        );
        assert_eq!(fit.ignored, [audio44.track_id]);
        // The reference's payload types are the channel's.
        assert_eq!(
            fit.tracks.iter().map(|t| t.payload_type).collect::<Vec<_>>(),
            reference.tracks.iter().map(|t| t.payload_type).collect::<Vec<_>>()
        );

        // The bundled sample, made with other settings (320x240, level 1.3,
        // an AAC config written with an explicit no-SBR extension), fits.
        let fit = reference.check(&layout(&testing::sample())).unwrap();
        assert_eq!(fit.tracks[0].parameter_sets.len(), 2);
    }
}
