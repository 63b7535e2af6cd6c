//! The RTSP header fields whose values have structure: Transport (RFC 2326
//! section 12.39), Range in normal play time (3.6, 12.29) and Session (12.37).

use std::fmt::Write as _;

/// The lower transport a client asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lower {
    Udp,
    Tcp,
}

/// One transport specification: from a client's Transport header, or the
/// one a server answers SETUP with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transport {
    pub lower: Lower,
    /// `RTP/AVPF`: the audio-visual profile with feedback (RFC 4585), under
    /// which a client sends NACKs for what it lost and takes retransmissions.
    pub feedback: bool,
    pub multicast: bool,
    /// `destination=`: where the client wants media sent. The server only
    /// accepts the client's own address here.
    pub destination: Option<String>,
    /// `client_port=RTP-RTCP`.
    pub client_port: Option<(u16, u16)>,
    /// `interleaved=RTP-RTCP` channels, for TCP.
    pub interleaved: Option<(u8, u8)>,
    /// `mode=`: `PLAY` unless said otherwise.
    pub record: bool,
    /// `server_port=RTP-RTCP`, in a server's reply.
    pub server_port: Option<(u16, u16)>,
    /// `ssrc=`, in a server's reply: the stream's SSRC, eight hex digits by
    /// RFC 2326 (some servers drop the leading zeros).
    pub ssrc: Option<u32>,
    /// `source=`, in a server's reply: where the media comes from when that
    /// is not the RTSP server's own address.
    pub source: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    #[error("only RTP/AVP and RTP/AVPF transports are supported, not {0:?}")]
    Protocol(String),
    #[error("bad transport parameter {0:?}")]
    Parameter(String),
}

/// A `N` or `N-M` pair; a lone `N` means `N-(N+1)`, as RFC 2326 allows.
fn pair<T: std::str::FromStr + Copy>(v: &str, next: impl Fn(T) -> Option<T>) -> Option<(T, T)> {
    match v.split_once('-') {
        Some((a, b)) => Some((a.trim().parse().ok()?, b.trim().parse().ok()?)),
        None => {
            let a: T = v.trim().parse().ok()?;
            Some((a, next(a)?))
        }
    }
}

impl Transport {
    /// Parses one transport-spec (the text between commas).
    pub fn parse(spec: &str) -> Result<Transport, TransportError> {
        let mut parts = spec.split(';').map(str::trim);
        let protocol = parts.next().unwrap_or_default();
        let (lower, feedback) = match protocol.to_ascii_uppercase().as_str() {
            "RTP/AVP" | "RTP/AVP/UDP" => (Lower::Udp, false),
            "RTP/AVP/TCP" => (Lower::Tcp, false),
            "RTP/AVPF" | "RTP/AVPF/UDP" => (Lower::Udp, true),
            "RTP/AVPF/TCP" => (Lower::Tcp, true),
            _ => return Err(TransportError::Protocol(protocol.chars().take(32).collect())),
        };
        let mut t = Transport {
            lower,
            feedback,
            multicast: false,
            destination: None,
            client_port: None,
            interleaved: None,
            record: false,
            server_port: None,
            ssrc: None,
            source: None,
        };
        for p in parts.filter(|p| !p.is_empty()) {
            let (name, value) = match p.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
                None => (p, None),
            };
            let bad = || TransportError::Parameter(p.chars().take(64).collect());
            match (name.to_ascii_lowercase().as_str(), value) {
                ("unicast", None) => t.multicast = false,
                ("multicast", None) => t.multicast = true,
                ("destination", v) => t.destination = Some(v.unwrap_or_default().to_owned()),
                ("client_port", Some(v)) => t.client_port = Some(pair(v, |a: u16| a.checked_add(1)).ok_or_else(bad)?),
                ("interleaved", Some(v)) => t.interleaved = Some(pair(v, |a: u8| a.checked_add(1)).ok_or_else(bad)?),
                ("mode", Some(v)) => {
                    t.record = match v.to_ascii_uppercase().as_str() {
                        "PLAY" => false,
                        "RECORD" | "RECEIVE" => true,
                        _ => return Err(bad()),
                    }
                }
                // What a server answers. A server reading a client's request
                // ignores them, so a malformed value is dropped rather than
                // failing the request; a client that needs one checks it is there.
                ("server_port", Some(v)) => t.server_port = pair(v, |a: u16| a.checked_add(1)),
                ("ssrc", Some(v)) => {
                    t.ssrc = Some(v)
                        .filter(|v| (1..=8).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_hexdigit()))
                        .and_then(|v| u32::from_str_radix(v, 16).ok())
                }
                ("source", Some(v)) => t.source = Some(v.to_owned()),
                // Parameters that do not change what a unicast server does
                // (ttl, layers, port, append...) are accepted and ignored, as
                // the RFC asks for unknown ones.
                _ => {}
            }
        }
        Ok(t)
    }

    /// Parses a whole Transport header: the client's alternatives, in its
    /// order of preference.
    pub fn parse_list(header: &str) -> Vec<Result<Transport, TransportError>> {
        header
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(Transport::parse)
            .collect()
    }
}

/// What the server answers in its Transport header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyTransport {
    Udp {
        client_port: (u16, u16),
        server_port: (u16, u16),
        ssrc: u32,
        /// Answered as `RTP/AVPF`: the server takes the client's NACKs.
        feedback: bool,
    },
    Tcp {
        interleaved: (u8, u8),
        ssrc: u32,
        feedback: bool,
    },
}

impl ReplyTransport {
    pub fn to_header(&self) -> String {
        let mut s = String::new();
        match self {
            ReplyTransport::Udp {
                client_port,
                server_port,
                ssrc,
                feedback,
            } => {
                let _ = write!(
                    s,
                    "{};unicast;client_port={}-{};server_port={}-{};ssrc={:08X};mode=\"PLAY\"",
                    profile(*feedback),
                    client_port.0,
                    client_port.1,
                    server_port.0,
                    server_port.1,
                    ssrc
                );
            }
            ReplyTransport::Tcp {
                interleaved,
                ssrc,
                feedback,
            } => {
                let _ = write!(
                    s,
                    "{}/TCP;unicast;interleaved={}-{};ssrc={:08X};mode=\"PLAY\"",
                    profile(*feedback),
                    interleaved.0,
                    interleaved.1,
                    ssrc
                );
            }
        }
        s
    }
}

fn profile(feedback: bool) -> &'static str {
    if feedback {
        "RTP/AVPF"
    } else {
        "RTP/AVP"
    }
}

/// A Range header in normal play time: `npt=START-[END]`, in seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NptRange {
    /// `None` for `now` or an omitted start ("from where it is").
    pub start: Option<f64>,
    pub end: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    #[error("only npt ranges are supported")]
    Unit,
    #[error("malformed npt range")]
    Syntax,
}

/// `npt-time`: seconds (`12.5`), `hh:mm:ss(.frac)`, or `now`.
fn npt_time(s: &str) -> Result<Option<f64>, RangeError> {
    let s = s.trim();
    if s.is_empty() || s.eq_ignore_ascii_case("now") {
        return Ok(None);
    }
    let secs = if s.contains(':') {
        let mut it = s.split(':');
        let (h, m, sec) = (it.next(), it.next(), it.next());
        let (Some(h), Some(m), Some(sec), None) = (h, m, sec, it.next()) else {
            return Err(RangeError::Syntax);
        };
        let h: u64 = h.parse().map_err(|_| RangeError::Syntax)?;
        let m: u64 = m.parse().map_err(|_| RangeError::Syntax)?;
        let sec: f64 = sec.parse().map_err(|_| RangeError::Syntax)?;
        if m >= 60 || !(0.0..60.0).contains(&sec) {
            return Err(RangeError::Syntax);
        }
        h as f64 * 3600.0 + m as f64 * 60.0 + sec
    } else {
        // Digits and one dot only: f64's parser would also take "inf", "1e9".
        if !s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return Err(RangeError::Syntax);
        }
        s.parse().map_err(|_| RangeError::Syntax)?
    };
    if !secs.is_finite() {
        return Err(RangeError::Syntax);
    }
    Ok(Some(secs))
}

impl NptRange {
    pub fn parse(header: &str) -> Result<NptRange, RangeError> {
        // A `;time=` parameter may follow; it asks for a wall-clock start,
        // which an on-demand server answers by starting at once.
        let spec = header.split(';').next().unwrap_or_default().trim();
        let Some(v) = spec.strip_prefix("npt=").or_else(|| spec.strip_prefix("npt =")) else {
            return Err(RangeError::Unit);
        };
        let (a, b) = v.split_once('-').ok_or(RangeError::Syntax)?;
        let range = NptRange {
            start: npt_time(a)?,
            end: npt_time(b)?,
        };
        if let (Some(s), Some(e)) = (range.start, range.end) {
            if e < s {
                return Err(RangeError::Syntax);
            }
        }
        Ok(range)
    }
}

/// Formats seconds as an npt time with millisecond precision.
pub fn npt(secs: f64) -> String {
    format!("{secs:.3}")
}

/// The session ID in a Session header (what precedes `;timeout=`).
pub fn session_id(header: &str) -> &str {
    header.split(';').next().unwrap_or_default().trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transports_as_clients_send_them() {
        let t = Transport::parse("RTP/AVP;unicast;client_port=4588-4589").unwrap();
        assert_eq!(
            (t.lower, t.client_port, t.multicast),
            (Lower::Udp, Some((4588, 4589)), false)
        );
        let t = Transport::parse("RTP/AVP/TCP;unicast;interleaved=2-3").unwrap();
        assert_eq!((t.lower, t.interleaved), (Lower::Tcp, Some((2, 3))));
        // VLC and QuickTime forms.
        let t = Transport::parse("RTP/AVP/UDP;unicast;client_port=5000;mode=\"PLAY\"").unwrap();
        assert_eq!(t.client_port, Some((5000, 5001)));
        let t = Transport::parse("RTP/AVP;unicast;destination=10.1.1.1;client_port=1-2").unwrap();
        assert_eq!(t.destination.as_deref(), Some("10.1.1.1"));
        assert!(Transport::parse("RTP/AVP;mode=record").unwrap().record);
        let list = Transport::parse_list("RTP/AVP/TCP;interleaved=0-1, RTP/AVP;unicast;client_port=7-8");
        assert_eq!(list.len(), 2);
        assert_eq!(list[1].as_ref().unwrap().client_port, Some((7, 8)));
    }

    #[test]
    fn replies_as_servers_send_them() {
        let t =
            Transport::parse("RTP/AVP;unicast;client_port=5000-5001;server_port=6970-6971;ssrc=00000ABC;mode=\"PLAY\"")
                .unwrap();
        assert_eq!(
            (t.client_port, t.server_port, t.ssrc),
            (Some((5000, 5001)), Some((6970, 6971)), Some(0xabc))
        );
        // GStreamer and live555 forms: source, ssrc without leading zeros.
        let t = Transport::parse("RTP/AVP;unicast;source=10.0.0.5;server_port=7000;ssrc=1F").unwrap();
        assert_eq!(
            (t.source.as_deref(), t.server_port, t.ssrc),
            (Some("10.0.0.5"), Some((7000, 7001)), Some(0x1f))
        );
        let t = Transport::parse("RTP/AVP/TCP;unicast;interleaved=0-1;ssrc=DEADBEEF").unwrap();
        assert_eq!((t.interleaved, t.ssrc), (Some((0, 1)), Some(0xdead_beef)));
        // Malformed reply-only parameters are dropped, not fatal: a server
        // never needed them from a client.
        let t = Transport::parse("RTP/AVP;client_port=1-2;ssrc=123456789;server_port=x").unwrap();
        assert_eq!((t.client_port, t.ssrc, t.server_port), (Some((1, 2)), None, None));
        assert_eq!(Transport::parse("RTP/AVP;ssrc=zz").unwrap().ssrc, None);
    }

    #[test]
    fn bad_transports() {
        assert!(matches!(
            Transport::parse("RAW/RAW/UDP;unicast"),
            Err(TransportError::Protocol(_))
        ));
        assert!(Transport::parse("RTP/AVP;client_port=x-y").is_err());
        assert!(Transport::parse("RTP/AVP;client_port=65535").is_err());
        assert!(Transport::parse("RTP/AVP;interleaved=300-301").is_err());
        assert!(Transport::parse("RTP/AVP;mode=fly").is_err());
    }

    #[test]
    fn reply() {
        let r = ReplyTransport::Udp {
            client_port: (5000, 5001),
            server_port: (6970, 6971),
            ssrc: 0xabc,
            feedback: false,
        };
        assert_eq!(
            r.to_header(),
            "RTP/AVP;unicast;client_port=5000-5001;server_port=6970-6971;ssrc=00000ABC;mode=\"PLAY\""
        );
        // What GStreamer's rtspsrc asks for when the SDP offers RTP/AVPF,
        // and the answer that turns its retransmission on.
        let t = Transport::parse("RTP/AVPF/UDP;unicast;client_port=5000-5001").unwrap();
        assert!(t.feedback && t.lower == Lower::Udp);
        assert!(Transport::parse("RTP/AVPF/TCP;interleaved=0-1").unwrap().feedback);
        assert!(
            !Transport::parse("RTP/AVP;unicast;client_port=5000-5001")
                .unwrap()
                .feedback
        );
        let r = ReplyTransport::Udp {
            client_port: (5000, 5001),
            server_port: (6970, 6971),
            ssrc: 0xabc,
            feedback: true,
        };
        assert!(r.to_header().starts_with("RTP/AVPF;unicast;"));
        let r = ReplyTransport::Tcp {
            interleaved: (0, 1),
            ssrc: 1,
            feedback: true,
        };
        assert!(r.to_header().starts_with("RTP/AVPF/TCP;unicast;"));
    }

    #[test]
    fn ranges() {
        let r = NptRange::parse("npt=5-").unwrap();
        assert_eq!((r.start, r.end), (Some(5.0), None));
        let r = NptRange::parse("npt=1.5-20.25").unwrap();
        assert_eq!((r.start, r.end), (Some(1.5), Some(20.25)));
        let r = NptRange::parse("npt=now-").unwrap();
        assert_eq!(r.start, None);
        let r = NptRange::parse("npt=0:01:05.5-").unwrap();
        assert_eq!(r.start, Some(65.5));
        let r = NptRange::parse("npt=-10").unwrap();
        assert_eq!((r.start, r.end), (None, Some(10.0)));
        assert_eq!(NptRange::parse("smpte=0:10:20-"), Err(RangeError::Unit));
        for bad in [
            "npt=abc-",
            "npt=5",
            "npt=10-5",
            "npt=inf-",
            "npt=1e9-",
            "npt=0:61:00-",
            "npt=-1-",
        ] {
            assert!(NptRange::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sessions() {
        assert_eq!(session_id("12345678;timeout=60"), "12345678");
        assert_eq!(session_id(" abc "), "abc");
    }
}
