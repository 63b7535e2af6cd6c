//! SDP, the Session Description Protocol (RFC 8866), as RTSP carries it in
//! DESCRIBE answers and ANNOUNCE requests (RFC 2326 appendix C): a parser
//! into an owned [`SessionDescription`] and an emitter back to text.
//!
//! The description holds the session-level lines and one [`Media`] per `m=`
//! section, each with its attributes in order, so that a description can be
//! read, changed (a control URL, a connection address) and written out again
//! without losing what it does not interpret. [`Media::rtpmap`],
//! [`Media::fmtp`], [`SessionDescription::control`] and the like read the
//! attributes RTSP uses.
//!
//! What senders get wrong, and how it is taken:
//! - Line ends are CRLF by the RFC; many servers and encoders send bare LF,
//!   some a mix. Both are read; [`emit`](SessionDescription::emit) writes
//!   CRLF. Trailing whitespace is dropped, and so are blank lines.
//! - `m=` ports are 0 in most RTSP SDPs (the port is chosen at SETUP). That
//!   is kept as it is: in RTSP it does not mean a disabled medium, as it
//!   would in offer/answer.
//! - `o=`, `s=` and `t=` are required by the RFC and missing from the SDP of
//!   some cameras and encoders; they are optional here.
//! - Session-level lines (`o= s= u= e= p= t= r= z=`) sometimes follow an
//!   `m=` line. They can only describe the session, so they are kept there.
//!   A line type that appears twice where the RFC allows one keeps the first.
//! - Type letters the RFC does not define are skipped (RFC 8866 section 5
//!   lets a parser ignore them); attributes it does not know are kept.
//!
//! What is refused, with the line number ([`SdpError`]): text that is not
//! UTF-8; a first line other than `v=0`; a line that is not `x=value`; NUL
//! or CR inside a line, which a relay would otherwise pass on to clients
//! that split lines at a lone CR; and lines whose syntax RTSP clients rely
//! on: `o=`, `c=`, `b=`, `t=`, `m=` (an RTP medium needs payload types
//! 0-127) and `a=rtpmap`. Memory is proportional to the input, which the
//! caller bounds (an RTSP body limit, say).

use std::fmt::{self, Write as _};

/// `o=`: who made the description, and its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub username: String,
    /// Numeric by the RFC; kept as text, as some exceed 64 bits.
    pub session_id: String,
    pub session_version: String,
    pub network_type: String,
    pub address_type: String,
    pub address: String,
}

/// `c=`: where media go. `address` keeps any `/ttl` and `/count` suffix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    pub network_type: String,
    pub address_type: String,
    pub address: String,
}

/// `b=<type>:<bandwidth>`, as `AS` (kbit/s), `TIAS` (bit/s), `RS`, `RR`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bandwidth {
    pub kind: String,
    pub value: u64,
}

/// `t=<start> <stop>` (NTP seconds, `0 0` for unbounded) and the `r=`
/// lines that follow it, as written.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Timing {
    pub start: u64,
    pub stop: u64,
    pub repeats: Vec<String>,
}

/// `a=name` or `a=name:value`. The value is trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    pub name: String,
    pub value: Option<String>,
}

impl Attribute {
    pub fn new(name: impl Into<String>, value: Option<&str>) -> Attribute {
        Attribute {
            name: name.into(),
            value: value.map(str::to_owned),
        }
    }
}

/// `a=rtpmap:<payload type> <encoding>/<clock rate>[/<parameters>]`
/// (RFC 8866 section 6.6); for audio the parameters are the channel count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpMap {
    pub payload_type: u8,
    pub encoding: String,
    pub clock_rate: u32,
    pub parameters: Option<String>,
}

impl RtpMap {
    /// Reads an rtpmap value; `None` when it does not follow the grammar or
    /// names a clock rate of 0.
    pub fn parse(value: &str) -> Option<RtpMap> {
        let (pt, map) = value.trim().split_once([' ', '\t'])?;
        let payload_type = pt.parse().ok().filter(|&pt: &u8| pt < 128)?;
        let mut parts = map.trim().splitn(3, '/');
        let encoding = parts.next().map(str::trim).filter(|e| !e.is_empty())?;
        let clock_rate = parts.next()?.trim().parse().ok().filter(|&c| c > 0)?;
        Some(RtpMap {
            payload_type,
            encoding: encoding.to_owned(),
            clock_rate,
            parameters: parts.next().map(|p| p.trim().to_owned()),
        })
    }
}

impl fmt::Display for RtpMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.payload_type, self.encoding, self.clock_rate)?;
        match &self.parameters {
            Some(p) => write!(f, "/{p}"),
            None => Ok(()),
        }
    }
}

/// One `m=` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    /// `audio`, `video`, `application`, ...
    pub kind: String,
    pub port: u16,
    /// The `/<number of ports>` after the port, if any.
    pub port_count: Option<u16>,
    /// `RTP/AVP`, `RTP/AVP/TCP`, `RTP/SAVPF`, `TCP/BFCP`, ...
    pub protocol: String,
    /// The formats: RTP payload types for RTP media, as written.
    pub formats: Vec<String>,
    /// `i=`.
    pub information: Option<String>,
    pub connections: Vec<Connection>,
    pub bandwidths: Vec<Bandwidth>,
    /// `k=` (obsolete, kept so it can be written back).
    pub key: Option<String>,
    pub attributes: Vec<Attribute>,
}

impl Media {
    /// A section with no lines but its `m=`.
    pub fn new(kind: &str, port: u16, protocol: &str, formats: &[&str]) -> Media {
        Media {
            kind: kind.to_owned(),
            port,
            port_count: None,
            protocol: protocol.to_owned(),
            formats: formats.iter().map(|f| (*f).to_owned()).collect(),
            information: None,
            connections: Vec::new(),
            bandwidths: Vec::new(),
            key: None,
            attributes: Vec::new(),
        }
    }

    /// Whether the formats are RTP payload types (`RTP/AVP`, `RTP/SAVPF`,
    /// `UDP/TLS/RTP/SAVPF`, ...).
    pub fn is_rtp(&self) -> bool {
        is_rtp(&self.protocol)
    }

    /// The payload types, for RTP media (parse has checked them).
    pub fn payload_types(&self) -> impl Iterator<Item = u8> + '_ {
        self.formats
            .iter()
            .filter_map(|f| f.parse().ok())
            .filter(|_| self.is_rtp())
    }

    /// The value of the first `a=name[:value]`: `Some("")` for a flag.
    pub fn attribute(&self, name: &str) -> Option<&str> {
        attribute(&self.attributes, name)
    }

    /// Replaces the first `a=name` with `a=name:value` (or a flag, for
    /// `None`), or appends it.
    pub fn set_attribute(&mut self, name: &str, value: Option<&str>) {
        set_attribute(&mut self.attributes, name, value)
    }

    /// `a=control`: the URL (often relative) to SETUP this medium with.
    pub fn control(&self) -> Option<&str> {
        self.attribute("control")
    }

    /// The `a=rtpmap` of `payload_type`.
    pub fn rtpmap(&self, payload_type: u8) -> Option<RtpMap> {
        self.attributes
            .iter()
            .filter(|a| a.name == "rtpmap")
            .filter_map(|a| RtpMap::parse(a.value.as_deref()?))
            .find(|m| m.payload_type == payload_type)
    }

    /// The parameters of the `a=fmtp` of `payload_type`.
    pub fn fmtp(&self, payload_type: u8) -> Option<&str> {
        self.attributes.iter().filter(|a| a.name == "fmtp").find_map(|a| {
            let (pt, params) = a.value.as_deref()?.split_once([' ', '\t'])?;
            (pt.parse() == Ok(payload_type)).then(|| params.trim())
        })
    }
}

/// The value of the `o=` line.
impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Origin {
            username,
            session_id,
            session_version,
            network_type,
            address_type,
            address,
        } = self;
        write!(
            f,
            "{username} {session_id} {session_version} {network_type} {address_type} {address}"
        )
    }
}

/// The value of a `c=` line.
impl fmt::Display for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.network_type, self.address_type, self.address)
    }
}

/// The value of a `b=` line.
impl fmt::Display for Bandwidth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.value)
    }
}

/// The value of an `a=` line.
impl fmt::Display for Attribute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(v) => write!(f, "{}:{v}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// The value of the `m=` line.
impl fmt::Display for Media {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.port)?;
        if let Some(n) = self.port_count {
            write!(f, "/{n}")?;
        }
        f.write_str(" ")?;
        f.write_str(&self.protocol)?;
        for format in &self.formats {
            write!(f, " {format}")?;
        }
        Ok(())
    }
}

/// A whole description. [`fmt::Display`] writes it as
/// [`emit`](SessionDescription::emit) does.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SessionDescription {
    pub origin: Option<Origin>,
    /// `s=`.
    pub name: Option<String>,
    /// `i=`.
    pub information: Option<String>,
    /// `u=`.
    pub uri: Option<String>,
    pub emails: Vec<String>,
    pub phones: Vec<String>,
    pub connection: Option<Connection>,
    pub bandwidths: Vec<Bandwidth>,
    pub timings: Vec<Timing>,
    /// `z=`, as written.
    pub time_zones: Option<String>,
    /// `k=` (obsolete, kept so it can be written back).
    pub key: Option<String>,
    pub attributes: Vec<Attribute>,
    pub media: Vec<Media>,
}

/// What is wrong with a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Not `x=value` with one letter before the `=`.
    NotTypeValue,
    /// A NUL or a CR inside the line.
    ControlCharacter,
    /// `o=` without its six fields.
    Origin,
    /// `c=` without network type, address type and address.
    Connection,
    /// `b=` that is not `type:number`.
    Bandwidth,
    /// `t=` that is not two numbers.
    Timing,
    /// `r=` with no `t=` before it.
    RepeatWithoutTiming,
    /// `m=` without media, port and protocol, or with a bad port.
    Media,
    /// An RTP medium's formats: none, or one that is not a payload type 0-127.
    PayloadType,
    /// `a=rtpmap` that does not follow its grammar.
    RtpMap,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Fault::NotTypeValue => "not a <type>=<value> line",
            Fault::ControlCharacter => "a NUL or CR inside the line",
            Fault::Origin => "o= needs username, session id, version, network type, address type and address",
            Fault::Connection => "c= needs network type, address type and address",
            Fault::Bandwidth => "b= needs <type>:<number>",
            Fault::Timing => "t= needs two numbers",
            Fault::RepeatWithoutTiming => "r= before any t=",
            Fault::Media => "m= needs media, port and protocol",
            Fault::PayloadType => "an RTP medium needs payload types 0-127",
            Fault::RtpMap => "a=rtpmap needs <payload type> <encoding>/<clock rate>",
        })
    }
}

/// Why bytes are not a session description. Lines count from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    #[error("SDP line {line} is not UTF-8")]
    NotText { line: usize },
    #[error("the SDP does not start with a v=0 line")]
    NoVersion,
    #[error("SDP line {line}: {fault}: {text:?}")]
    Line { line: usize, fault: Fault, text: String },
}

/// How much of a bad line an error quotes.
const QUOTE_CHARS: usize = 80;

fn is_rtp(protocol: &str) -> bool {
    protocol.split('/').any(|p| p.eq_ignore_ascii_case("RTP"))
}

fn attribute<'a>(attributes: &'a [Attribute], name: &str) -> Option<&'a str> {
    attributes
        .iter()
        .find(|a| a.name == name)
        .map(|a| a.value.as_deref().unwrap_or(""))
}

fn set_attribute(attributes: &mut Vec<Attribute>, name: &str, value: Option<&str>) {
    let new = Attribute::new(name, value);
    match attributes.iter_mut().find(|a| a.name == name) {
        Some(a) => *a = new,
        None => attributes.push(new),
    }
}

fn words<const N: usize>(value: &str) -> Option<[&str; N]> {
    let mut it = value.split_ascii_whitespace();
    let out = [(); N].map(|_| it.next());
    if it.next().is_some() || out.iter().any(Option::is_none) {
        return None;
    }
    Some(out.map(Option::unwrap_or_default))
}

fn connection(value: &str) -> Option<Connection> {
    let [network_type, address_type, address] = words(value)?;
    Some(Connection {
        network_type: network_type.to_owned(),
        address_type: address_type.to_owned(),
        address: address.to_owned(),
    })
}

fn bandwidth(value: &str) -> Option<Bandwidth> {
    let (kind, n) = value.split_once(':')?;
    Some(Bandwidth {
        kind: kind.trim().to_owned(),
        value: n.trim().parse().ok()?,
    })
}

fn media(value: &str) -> Result<Media, Fault> {
    let mut words = value.split_ascii_whitespace();
    let (Some(kind), Some(port), Some(protocol)) = (words.next(), words.next(), words.next()) else {
        return Err(Fault::Media);
    };
    let (port, port_count) = match port.split_once('/') {
        Some((p, n)) => (p, Some(n.parse().map_err(|_| Fault::Media)?)),
        None => (port, None),
    };
    let mut m = Media::new(kind, port.parse().map_err(|_| Fault::Media)?, protocol, &[]);
    m.port_count = port_count;
    m.formats = words.map(str::to_owned).collect();
    if m.is_rtp() && (m.formats.is_empty() || m.formats.iter().any(|f| f.parse::<u8>().map_or(true, |pt| pt > 127))) {
        return Err(Fault::PayloadType);
    }
    Ok(m)
}

impl SessionDescription {
    /// Reads a description; see the module documentation for what is
    /// tolerated and what is refused.
    pub fn parse(bytes: &[u8]) -> Result<SessionDescription, SdpError> {
        let text = std::str::from_utf8(bytes).map_err(|e| SdpError::NotText {
            line: 1 + bytes[..e.valid_up_to()].iter().filter(|&&b| b == b'\n').count(),
        })?;
        let mut lines = text
            .split('\n')
            .map(|l| l.trim_end_matches([' ', '\t', '\r']))
            .enumerate()
            .map(|(i, l)| (i + 1, l))
            .filter(|(_, l)| !l.is_empty());
        match lines.next() {
            Some((_, "v=0")) => {}
            _ => return Err(SdpError::NoVersion),
        }
        let mut sd = SessionDescription::default();
        for (line, text) in lines {
            let bad = |fault| SdpError::Line {
                line,
                fault,
                text: text.chars().take(QUOTE_CHARS).collect(),
            };
            if text.contains(['\0', '\r']) {
                return Err(bad(Fault::ControlCharacter));
            }
            let (kind, value) = match text.as_bytes() {
                [k, b'=', ..] if k.is_ascii_alphabetic() => (*k, &text[2..]),
                _ => return Err(bad(Fault::NotTypeValue)),
            };
            sd.line(kind, value).map_err(bad)?;
        }
        Ok(sd)
    }

    /// Takes one line after `v=0`.
    fn line(&mut self, kind: u8, value: &str) -> Result<(), Fault> {
        let owned = || Some(value.to_owned());
        match (kind, self.media.last_mut()) {
            (b'm', _) => self.media.push(media(value)?),
            (b'a', at) => {
                let (name, value) = match value.split_once(':') {
                    Some((n, v)) => (n, Some(v.trim())),
                    None => (value, None),
                };
                if name == "rtpmap" && value.and_then(RtpMap::parse).is_none() {
                    return Err(Fault::RtpMap);
                }
                let attributes = match at {
                    Some(m) => &mut m.attributes,
                    None => &mut self.attributes,
                };
                attributes.push(Attribute::new(name, value));
            }
            (b'c', at) => {
                let c = connection(value).ok_or(Fault::Connection)?;
                match at {
                    Some(m) => m.connections.push(c),
                    None => {
                        self.connection.get_or_insert(c);
                    }
                }
            }
            (b'b', at) => {
                let b = bandwidth(value).ok_or(Fault::Bandwidth)?;
                match at {
                    Some(m) => m.bandwidths.push(b),
                    None => self.bandwidths.push(b),
                }
            }
            (b'i', Some(m)) => m.information = m.information.take().or_else(owned),
            (b'i', None) => self.information = self.information.take().or_else(owned),
            (b'k', Some(m)) => m.key = m.key.take().or_else(owned),
            (b'k', None) => self.key = self.key.take().or_else(owned),
            (b'o', _) => {
                let [username, session_id, session_version, network_type, address_type, address] =
                    words(value).ok_or(Fault::Origin)?;
                self.origin.get_or_insert(Origin {
                    username: username.to_owned(),
                    session_id: session_id.to_owned(),
                    session_version: session_version.to_owned(),
                    network_type: network_type.to_owned(),
                    address_type: address_type.to_owned(),
                    address: address.to_owned(),
                });
            }
            (b's', _) => self.name = self.name.take().or_else(owned),
            (b'u', _) => self.uri = self.uri.take().or_else(owned),
            (b'e', _) => self.emails.push(value.to_owned()),
            (b'p', _) => self.phones.push(value.to_owned()),
            (b't', _) => {
                let [start, stop] = words(value).ok_or(Fault::Timing)?;
                let (Ok(start), Ok(stop)) = (start.parse(), stop.parse()) else {
                    return Err(Fault::Timing);
                };
                self.timings.push(Timing {
                    start,
                    stop,
                    repeats: Vec::new(),
                });
            }
            (b'r', _) => {
                let t = self.timings.last_mut().ok_or(Fault::RepeatWithoutTiming)?;
                t.repeats.push(value.to_owned());
            }
            (b'z', _) => self.time_zones = self.time_zones.take().or_else(owned),
            // A second v=, and letters the RFC does not define.
            _ => {}
        }
        Ok(())
    }

    /// The value of the first session-level `a=name[:value]`: `Some("")` for
    /// a flag.
    pub fn attribute(&self, name: &str) -> Option<&str> {
        attribute(&self.attributes, name)
    }

    /// Replaces the first session-level `a=name`, or appends it.
    pub fn set_attribute(&mut self, name: &str, value: Option<&str>) {
        set_attribute(&mut self.attributes, name, value)
    }

    /// The session-level `a=control`: the aggregate control URL.
    pub fn control(&self) -> Option<&str> {
        self.attribute("control")
    }

    /// The session-level `a=range` (`npt=0-10.5`, `npt=now-`, ...).
    pub fn range(&self) -> Option<&str> {
        self.attribute("range")
    }

    /// Appends the description as text: CRLF line ends, the lines in the
    /// order RFC 8866 section 5 gives. Values are written as they are, so
    /// they must hold no CR, LF or NUL (parsed ones never do).
    pub fn emit(&self, out: &mut String) {
        fn line(out: &mut String, kind: char, value: impl fmt::Display) {
            let _ = write!(out, "{kind}={value}\r\n");
        }
        line(out, 'v', 0);
        if let Some(o) = &self.origin {
            line(out, 'o', o);
        }
        for (kind, value) in [('s', &self.name), ('i', &self.information), ('u', &self.uri)] {
            if let Some(v) = value {
                line(out, kind, v);
            }
        }
        self.emails.iter().for_each(|e| line(out, 'e', e));
        self.phones.iter().for_each(|p| line(out, 'p', p));
        if let Some(c) = &self.connection {
            line(out, 'c', c);
        }
        self.bandwidths.iter().for_each(|b| line(out, 'b', b));
        for t in &self.timings {
            line(out, 't', format_args!("{} {}", t.start, t.stop));
            t.repeats.iter().for_each(|r| line(out, 'r', r));
        }
        for (kind, value) in [('z', &self.time_zones), ('k', &self.key)] {
            if let Some(v) = value {
                line(out, kind, v);
            }
        }
        self.attributes.iter().for_each(|a| line(out, 'a', a));
        for m in &self.media {
            line(out, 'm', m);
            if let Some(i) = &m.information {
                line(out, 'i', i);
            }
            m.connections.iter().for_each(|c| line(out, 'c', c));
            m.bandwidths.iter().for_each(|b| line(out, 'b', b));
            if let Some(k) = &m.key {
                line(out, 'k', k);
            }
            m.attributes.iter().for_each(|a| line(out, 'a', a));
        }
    }
}

impl fmt::Display for SessionDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        self.emit(&mut out);
        f.write_str(&out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::Rng;

    /// What `streamalot serve` answers for an ffmpeg-hinted H.264 + AAC movie.
    const STREAMALOT: &str = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=sample\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n\
        a=range:npt=0-10.000\r\nm=video 0 RTP/AVP 96\r\nb=AS:250\r\na=rtpmap:96 H264/90000\r\n\
        a=fmtp:96 packetization-mode=1;sprop-parameter-sets=Z0LAHtkA,aMuDyyA=\r\na=control:trackID=3\r\n\
        m=audio 0 RTP/AVP 97\r\na=rtpmap:97 MPEG4-GENERIC/44100/2\r\n\
        a=fmtp:97 profile-level-id=1;mode=AAC-hbr;sizelength=13\r\na=control:trackID=4\r\n";

    /// The shape of gst-rtsp-server's answer (LF only, session-level control).
    const GSTREAMER: &str = "v=0\no=- 1188340656180883 1 IN IP4 127.0.0.1\ns=Session streamed with GStreamer\n\
        i=rtsp-server\nt=0 0\na=tool:GStreamer\na=type:broadcast\na=control:*\na=range:npt=0-10.0\n\
        m=video 0 RTP/AVP 96\nc=IN IP4 0.0.0.0\na=rtpmap:96 H264/90000\na=control:stream=0\n\
        m=audio 0 RTP/AVP 97\nc=IN IP4 0.0.0.0\na=rtpmap:97 MP4A-LATM/44100/2\na=control:stream=1\n";

    /// The shape of Apple's QuickTime Streaming Server and Darwin answers.
    const DARWIN: &str = "v=0\r\no=StreamingServer 3331435948 1116907222000 IN IP4 10.0.1.5\r\n\
        s=/sample_h264_1mbit.mp4\r\nu=http:///\r\ne=admin@\r\nc=IN IP4 0.0.0.0\r\nb=AS:1160\r\nt=0 0\r\n\
        a=control:*\r\na=mpeg4-iod:\"data:application/mpeg4-iod;base64,AoJrAE//\"\r\na=isma-compliance:2,2.0,2\r\n\
        a=range:npt=0-  70.00000\r\nm=video 0 RTP/AVP 96\r\nb=AS:1097\r\na=3GPP-Adaptation-Support:1\r\n\
        a=rtpmap:96 H264/90000\r\na=control:trackID=1\r\na=cliprect:0,0,480,380\r\na=framesize:96 380-480\r\n\
        a=fmtp:96 packetization-mode=1;profile-level-id=4D401E;sprop-parameter-sets=J01AHqkYGwe83gDUBAQG2wrXvfAQ,KN4JyA==\r\n\
        a=mpeg4-esid:201\r\nm=audio 0 RTP/AVP 97\r\nb=AS:63\r\na=rtpmap:97 MPEG4-GENERIC/48000/2\r\n\
        a=control:trackID=2\r\na=fmtp:97 profile-level-id=15;mode=AAC-hbr;sizelength=13;indexlength=3;\
        indexdeltalength=3;config=1190\r\na=mpeg4-esid:101\r\n";

    fn parse(s: &str) -> Result<SessionDescription, SdpError> {
        SessionDescription::parse(s.as_bytes())
    }

    #[test]
    fn reads_what_servers_send() {
        let sd = parse(STREAMALOT).unwrap();
        assert_eq!(sd.name.as_deref(), Some("sample"));
        assert_eq!(sd.origin.as_ref().map(|o| o.address.as_str()), Some("127.0.0.1"));
        assert_eq!(sd.timings, [Timing::default()]);
        assert_eq!((sd.control(), sd.range()), (None, Some("npt=0-10.000")));
        assert_eq!(sd.media.len(), 2);
        let v = &sd.media[0];
        assert_eq!((v.kind.as_str(), v.port, v.protocol.as_str()), ("video", 0, "RTP/AVP"));
        assert_eq!(v.payload_types().collect::<Vec<_>>(), [96]);
        assert_eq!(
            v.bandwidths,
            [Bandwidth {
                kind: "AS".into(),
                value: 250
            }]
        );
        assert_eq!(
            v.rtpmap(96),
            Some(RtpMap {
                payload_type: 96,
                encoding: "H264".into(),
                clock_rate: 90_000,
                parameters: None
            })
        );
        assert_eq!(
            v.fmtp(96),
            Some("packetization-mode=1;sprop-parameter-sets=Z0LAHtkA,aMuDyyA=")
        );
        assert_eq!((v.control(), v.rtpmap(97), v.fmtp(97)), (Some("trackID=3"), None, None));
        let a = &sd.media[1];
        let map = a.rtpmap(97).unwrap();
        assert_eq!((map.clock_rate, map.parameters.as_deref()), (44_100, Some("2")));
        assert_eq!(map.to_string(), "97 MPEG4-GENERIC/44100/2");

        let g = parse(GSTREAMER).unwrap();
        assert_eq!((g.control(), g.attribute("tool")), (Some("*"), Some("GStreamer")));
        assert_eq!(g.information.as_deref(), Some("rtsp-server"));
        assert_eq!(g.media[1].connections[0].address, "0.0.0.0");
        assert_eq!(g.media[1].rtpmap(97).unwrap().encoding, "MP4A-LATM");

        let d = parse(DARWIN).unwrap();
        assert_eq!(
            (d.uri.as_deref(), &d.emails[..]),
            (Some("http:///"), &["admin@".to_owned()][..])
        );
        assert_eq!(d.range(), Some("npt=0-  70.00000"));
        assert_eq!(d.media[0].attribute("framesize"), Some("96 380-480"));
        assert!(d.media[1].fmtp(97).unwrap().ends_with("config=1190"));
    }

    #[test]
    fn emit_writes_crlf_in_rfc_order_and_reads_back() {
        for text in [STREAMALOT, GSTREAMER, DARWIN] {
            let sd = parse(text).unwrap();
            let out = sd.to_string();
            assert!(out.ends_with("\r\n") && !out.replace("\r\n", "").contains(['\r', '\n']));
            assert_eq!(parse(&out).unwrap(), sd, "{out}");
        }
        // Our own answer is already canonical: emitting gives it back.
        assert_eq!(parse(STREAMALOT).unwrap().to_string(), STREAMALOT);
        // Out-of-order lines come out in RFC order.
        let sd = parse("v=0\na=x\nt=0 0\ns=n\nm=audio 0 RTP/AVP 0\na=y\nb=AS:1\n").unwrap();
        assert_eq!(
            sd.to_string(),
            "v=0\r\ns=n\r\nt=0 0\r\na=x\r\nm=audio 0 RTP/AVP 0\r\nb=AS:1\r\na=y\r\n"
        );
    }

    #[test]
    fn leniency() {
        // Bare LF, a CRLF mix, trailing blanks, blank lines, an m= port 0 with
        // a count, session lines after m=, repeats, unknown letters.
        let sd = parse(
            "\n\nv=0 \r\ns=first\nm=video 0/2 RTP/AVP 96 97\t\r\na=rtpmap:96  H264 / 90000 \n\n\
             t=1 2\nr=7d 1h 0 25h\ns=second\nx=whatever\na=recvonly\na=control: trackID=1\n",
        )
        .unwrap();
        assert_eq!(sd.name.as_deref(), Some("first"), "the first s= is kept");
        assert_eq!(
            sd.timings,
            [Timing {
                start: 1,
                stop: 2,
                repeats: vec!["7d 1h 0 25h".into()]
            }]
        );
        let m = &sd.media[0];
        assert_eq!(
            (m.port, m.port_count, &m.formats[..]),
            (0, Some(2), &["96".to_owned(), "97".to_owned()][..])
        );
        assert_eq!(m.rtpmap(96).unwrap().clock_rate, 90_000);
        assert_eq!((m.attribute("recvonly"), m.control()), (Some(""), Some("trackID=1")));
        // No o=, s= or t= at all; non-RTP media with any formats, or none.
        let sd = parse("v=0\nm=application 0 TCP/BFCP *\nm=message 9 TCP/MSRP\n").unwrap();
        assert_eq!(
            (sd.origin.is_none(), sd.name.is_none(), sd.timings.is_empty()),
            (true, true, true)
        );
        assert_eq!(sd.media[0].formats, ["*"]);
        assert!(sd.media[1].formats.is_empty() && !sd.media[1].is_rtp());
        assert_eq!(sd.media[0].payload_types().count(), 0);
        assert!(Media::new("video", 0, "UDP/TLS/RTP/SAVPF", &["96"]).is_rtp());
    }

    #[test]
    fn bad_lines_say_where_and_what() {
        let fault = |s: &str| match parse(s) {
            Err(SdpError::Line { line, fault, .. }) => (line, fault),
            other => panic!("{s:?}: {other:?}"),
        };
        assert_eq!(parse(""), Err(SdpError::NoVersion));
        assert_eq!(parse("<html>404</html>"), Err(SdpError::NoVersion));
        assert_eq!(parse("v=1\n"), Err(SdpError::NoVersion));
        assert_eq!(parse("s=x\nv=0\n"), Err(SdpError::NoVersion));
        assert_eq!(
            SessionDescription::parse(b"v=0\ns=ok\ns=\xff\n"),
            Err(SdpError::NotText { line: 3 })
        );
        assert_eq!(fault("v=0\ngarbage\n"), (2, Fault::NotTypeValue));
        assert_eq!(fault("v=0\n\nxy=1\n"), (3, Fault::NotTypeValue));
        assert_eq!(fault("v=0\n =1\n"), (2, Fault::NotTypeValue));
        assert_eq!(fault("v=0\n1=1\n"), (2, Fault::NotTypeValue));
        assert_eq!(fault("v=0\na=x\0y\n"), (2, Fault::ControlCharacter));
        assert_eq!(fault("v=0\na=x\ry\n"), (2, Fault::ControlCharacter));
        assert_eq!(fault("v=0\no=- 0 0 IN IP4\n"), (2, Fault::Origin));
        assert_eq!(fault("v=0\nc=IN IP4\n"), (2, Fault::Connection));
        assert_eq!(fault("v=0\nb=AS\n"), (2, Fault::Bandwidth));
        assert_eq!(fault("v=0\nb=AS:lots\n"), (2, Fault::Bandwidth));
        assert_eq!(fault("v=0\nt=0\n"), (2, Fault::Timing));
        assert_eq!(fault("v=0\nt=0 -1\n"), (2, Fault::Timing));
        assert_eq!(fault("v=0\nr=1d 1h 0\n"), (2, Fault::RepeatWithoutTiming));
        assert_eq!(fault("v=0\nm=video 0\n"), (2, Fault::Media));
        assert_eq!(fault("v=0\nm=video x RTP/AVP 96\n"), (2, Fault::Media));
        assert_eq!(fault("v=0\nm=video 70000 RTP/AVP 96\n"), (2, Fault::Media));
        assert_eq!(fault("v=0\nm=video 0 RTP/AVP\n"), (2, Fault::PayloadType));
        assert_eq!(fault("v=0\nm=video 0 RTP/AVP x\n"), (2, Fault::PayloadType));
        assert_eq!(fault("v=0\nm=video 0 RTP/AVP 96 128\n"), (2, Fault::PayloadType));
        for map in [
            "96 H264/0",
            "96 H264",
            "96 /90000",
            "x H264/90000",
            "128 H264/90000",
            "96",
            "",
        ] {
            assert_eq!(
                fault(&format!("v=0\nm=video 0 RTP/AVP 96\na=rtpmap:{map}\n")),
                (3, Fault::RtpMap),
                "{map}"
            );
        }
        let Err(e) = parse(&format!("v=0\n{}\n", "q".repeat(10_000))) else {
            panic!()
        };
        assert!(e.to_string().len() < 200, "errors quote a bounded part: {e}");
    }

    #[test]
    fn building_and_rewriting() {
        let mut sd = parse(GSTREAMER).unwrap();
        sd.set_attribute("control", Some("rtsp://edge/live/"));
        sd.media[0].set_attribute("control", Some("trackID=1"));
        sd.media[1].set_attribute("sendonly", None);
        sd.media[1].connections.clear();
        let again = parse(&sd.to_string()).unwrap();
        assert_eq!(again.control(), Some("rtsp://edge/live/"));
        assert_eq!(again.media[0].control(), Some("trackID=1"));
        assert_eq!(
            again.media[0].attributes.iter().filter(|a| a.name == "control").count(),
            1
        );
        assert_eq!(
            again.media[1].attributes.last(),
            Some(&Attribute::new("sendonly", None))
        );
        assert_eq!(again, sd);

        let mut m = Media::new("audio", 0, "RTP/AVP", &["0"]);
        m.attributes.push(Attribute::new("control", Some("a")));
        let sd = SessionDescription {
            name: Some(" ".into()),
            timings: vec![Timing::default()],
            media: vec![m],
            ..SessionDescription::default()
        };
        assert_eq!(
            sd.to_string(),
            "v=0\r\ns= \r\nt=0 0\r\nm=audio 0 RTP/AVP 0\r\na=control:a\r\n"
        );
    }

    /// Whatever parses, emits to text that parses to the same description.
    fn round_trips(bytes: &[u8]) -> bool {
        match SessionDescription::parse(bytes) {
            Ok(sd) => {
                let again = SessionDescription::parse(sd.to_string().as_bytes());
                assert_eq!(again.as_ref(), Ok(&sd), "{:?}", String::from_utf8_lossy(bytes));
                true
            }
            Err(_) => false,
        }
    }

    #[test]
    fn hostile_input_is_an_error_or_a_description_never_a_panic() {
        let mut rng = Rng(7);
        // Random bytes, and random lines over the SDP alphabet.
        let letters = b"vosiuepcbtrzkamx";
        let alphabet = b"= :/\r\t0123456789RTP/AVPx*\0\xff";
        let mut parsed = 0;
        for n in 0..20_000 {
            let bytes: Vec<u8> = if n % 2 == 0 {
                let len = rng.below(200);
                rng.bytes(len)
            } else {
                let mut b = b"v=0\n".to_vec();
                for _ in 0..rng.below(8) {
                    b.extend([letters[rng.below(letters.len())], b'=']);
                    b.extend((0..rng.below(12)).map(|_| alphabet[rng.below(alphabet.len())]));
                    b.extend_from_slice([&b"\n"[..], b"\r\n"][rng.below(2)]);
                }
                b
            };
            parsed += usize::from(round_trips(&bytes));
        }
        assert!(parsed > 1_000, "{parsed}");
        // Mutations of real answers: flipped, dropped and inserted bytes.
        let mut kept = 0;
        for seed in [STREAMALOT, GSTREAMER, DARWIN] {
            for _ in 0..3_000 {
                let mut b = seed.as_bytes().to_vec();
                for _ in 0..1 + rng.below(4) {
                    let at = rng.below(b.len());
                    match rng.below(3) {
                        0 => b[at] = rng.next() as u8,
                        1 => {
                            b.remove(at);
                        }
                        _ => b.insert(at, b"=:/ \n\r0m"[rng.below(8)]),
                    }
                }
                kept += usize::from(round_trips(&b));
            }
        }
        assert!(kept > 1_000, "{kept}");
    }

    #[test]
    fn huge_input_costs_in_proportion() {
        // A megabyte of attributes in one section, and one megabyte line.
        let mut big = String::from("v=0\nm=video 0 RTP/AVP 96\n");
        while big.len() < 1 << 20 {
            big.push_str("a=fmtp:96 x=1\n");
        }
        let sd = parse(&big).unwrap();
        assert_eq!(sd.media[0].attributes.len(), (big.len() - 25) / 14);
        assert_eq!(sd.media[0].fmtp(96), Some("x=1"));
        let line = format!("v=0\ns={}\n", "n".repeat(1 << 20));
        assert_eq!(parse(&line).unwrap().name.map(|n| n.len()), Some(1 << 20));
        // Many media sections.
        let many = format!("v=0\n{}", "m=audio 0 RTP/AVP 0\n".repeat(50_000));
        assert_eq!(parse(&many).unwrap().media.len(), 50_000);
    }
}
