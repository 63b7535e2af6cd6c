//! The SDP a publisher announces, checked and turned into the broadcast's
//! [`Description`]: its streams (clock rate, payload types, codec, the
//! control the publisher will SET UP) and the SDP viewers are described
//! with, whose controls are this server's own `trackID=N`.

use proto::sdp::{Connection, SdpError, SessionDescription};

use super::keyframe::Codec;
use super::BroadcastId;

/// At most this many streams in one broadcast: a viewer's streams and a
/// packet's stream index are small numbers.
pub const MAX_TRACKS: usize = 8;

/// One stream of a broadcast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Track {
    /// What viewers SET UP it as: `trackID=N` of the broadcast's URL.
    pub track_id: u32,
    /// The publisher's `a=control` for it (`streamid=0` from ffmpeg,
    /// `stream=0` from GStreamer), if it gave one.
    pub control: Option<String>,
    /// `video`, `audio`, ...
    pub kind: String,
    pub payload_types: Vec<u8>,
    pub clock_rate: u32,
    pub codec: Codec,
}

impl Track {
    /// Whether it streams video (its SDP media line says so).
    pub fn is_video(&self) -> bool {
        self.kind == "video"
    }
}

/// A broadcast as the server knows it from its announcement.
#[derive(Debug, Clone)]
pub struct Description {
    pub id: BroadcastId,
    /// Its path (`/live/cam`): the URL viewers play.
    pub path: String,
    /// The SDP viewers are described with.
    pub sdp: String,
    pub tracks: Vec<Track>,
    /// The stream whose key frames a joining viewer starts at: the first
    /// video stream, else the first stream.
    pub key_track: u8,
}

/// Why an announcement is refused, each with its status code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DescribeError {
    #[error("the body is {0:?}, not application/sdp")]
    ContentType(String),
    #[error("the body is not a session description: {0}")]
    Sdp(#[from] SdpError),
    #[error("the session description has no RTP stream")]
    NoStreams,
    #[error("the session description has {0} RTP streams; at most {MAX_TRACKS} are taken")]
    TooManyStreams(usize),
    #[error("stream {0} has neither an a=rtpmap nor a static payload type, so its clock rate is unknown")]
    NoClockRate(usize),
}

impl DescribeError {
    pub fn status(&self) -> u16 {
        match self {
            DescribeError::ContentType(_) => 415,
            DescribeError::Sdp(_) => 400,
            // Well-formed, but nothing this server can reflect.
            DescribeError::NoStreams | DescribeError::TooManyStreams(_) | DescribeError::NoClockRate(_) => 406,
        }
    }
}

/// Clock rates of the static payload types (RFC 3551 tables 4 and 5).
fn static_clock_rate(pt: u8) -> Option<u32> {
    Some(match pt {
        0 | 3 | 4 | 5 | 7 | 8 | 9 | 12 | 13 | 15 | 18 => 8_000,
        6 => 16_000,
        10 | 11 => 44_100,
        16 => 11_025,
        17 => 22_050,
        14 | 25 | 26 | 28 | 31 | 32 | 33 | 34 => 90_000,
        _ => return None,
    })
}

/// Checks an ANNOUNCE body (with its `Content-Type`) and describes the
/// broadcast `id` at `path`.
pub fn parse(
    id: BroadcastId,
    path: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Description, DescribeError> {
    // RFC 2326 10.3: the body is a presentation description; ffmpeg,
    // GStreamer and live555 all send application/sdp. A missing type is
    // taken as SDP (the body is checked anyway).
    if let Some(t) = content_type {
        let mime = t.split(';').next().unwrap_or_default().trim();
        if !mime.eq_ignore_ascii_case("application/sdp") {
            return Err(DescribeError::ContentType(t.chars().take(80).collect()));
        }
    }
    let mut sdp = SessionDescription::parse(body)?;
    // Only RTP streams can be reflected; others are left out of what
    // viewers see.
    sdp.media.retain(|m| m.is_rtp());
    if sdp.media.is_empty() {
        return Err(DescribeError::NoStreams);
    }
    if sdp.media.len() > MAX_TRACKS {
        return Err(DescribeError::TooManyStreams(sdp.media.len()));
    }
    let mut tracks = Vec::with_capacity(sdp.media.len());
    for (i, m) in sdp.media.iter_mut().enumerate() {
        let payload_types: Vec<u8> = m.payload_types().collect();
        let first = *payload_types.first().ok_or(DescribeError::NoStreams)?;
        let rtpmap = m.rtpmap(first);
        let clock_rate = rtpmap
            .as_ref()
            .map(|r| r.clock_rate)
            .or_else(|| static_clock_rate(first))
            .filter(|&r| r > 0)
            .ok_or(DescribeError::NoClockRate(i))?;
        let codec = Codec::of(&m.kind, rtpmap.as_ref().map(|r| r.encoding.as_str()));
        let track_id = i as u32 + 1;
        tracks.push(Track {
            track_id,
            control: m.control().map(str::to_owned),
            kind: m.kind.clone(),
            payload_types,
            clock_rate,
            codec,
        });
        // What viewers are told: this server's controls, and no address of
        // the publisher's (it is where the publisher sent, not where viewers
        // receive).
        m.set_attribute("control", Some(&format!("trackID={track_id}")));
        m.port = 0;
        m.connections.clear();
    }
    sdp.connection = Some(Connection {
        network_type: "IN".into(),
        address_type: "IP4".into(),
        address: "0.0.0.0".into(),
    });
    sdp.attributes.retain(|a| a.name != "control");
    sdp.attributes.push(proto::sdp::Attribute::new("control", Some("*")));
    let key_track = tracks.iter().position(Track::is_video).unwrap_or(0) as u8;
    Ok(Description {
        id,
        path: path.to_owned(),
        sdp: sdp.to_string(),
        tracks,
        key_track,
    })
}

impl Description {
    /// The stream a publisher's SETUP URI names: the part after the
    /// broadcast's path, matched against the publisher's controls (or this
    /// server's `trackID=N`). A single-stream broadcast may be set up by its
    /// own URL.
    pub fn track_for_setup(&self, uri: &str) -> Option<usize> {
        let (path, _) = proto::rtsp::url::split_uri(uri)?;
        let full = uri.split(['?', '#']).next().unwrap_or_default().trim_end_matches('/');
        if path == self.path && !full.contains("trackID=") && self.tracks.len() == 1 {
            return Some(0);
        }
        let rest = full.rsplit_once(&*self.path).map(|(_, r)| r)?.trim_start_matches('/');
        self.tracks.iter().position(|t| {
            t.control.as_deref().is_some_and(|c| {
                // A control may be a whole URL of its own.
                c == rest || c.trim_end_matches('/').ends_with(&format!("/{rest}")) || c == full
            }) || rest == format!("trackID={}", t.track_id)
        })
    }

    /// The stream viewers call `trackID=track_id`.
    pub fn track_index(&self, track_id: u32) -> Option<usize> {
        self.tracks.iter().position(|t| t.track_id == track_id)
    }
}
