//! What a receiving client takes from a DESCRIBE answer's SDP (RFC 2326
//! appendix C): each RTP medium with its payload type, clock rate and
//! control URL, and the presentation's aggregate control and length. The
//! SDP itself is read by [`proto::sdp`], which takes care of bare LF line
//! ends, trailing whitespace and the port 0 RTSP servers put in `m=`; this
//! is the client's policy on top:
//!
//! - Only RTP/AVP media (AVP, AVPF, AVP/TCP) are played; SRTP (`RTP/SAVP`)
//!   and non-RTP media are skipped, as a plain RTP receiver cannot read them.
//! - A medium plays its first payload type.
//! - A single medium may have no `a=control`: RFC 2326 C.1.1 then has it set
//!   up with the aggregate URL. With several media, each needs its own.
//! - Static payload types (RFC 3551) need no `a=rtpmap`; their clock rates
//!   are known. A dynamic one without `a=rtpmap` has no clock rate, and jitter
//!   and lateness cannot be measured, so that is an error.

use proto::rtsp::header::NptRange;
use proto::rtsp::url;
use proto::sdp::SessionDescription;

/// One RTP medium (`m=` section).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    /// `video`, `audio`, `application`, ...
    pub kind: String,
    /// The first payload format of the `m=` line: what the stream carries.
    pub payload_type: u8,
    pub encoding: String,
    /// RTP timestamp units per second.
    pub clock_rate: u32,
    /// The `a=control` value as written, if any.
    pub control: Option<String>,
    /// An RTX payload type of the `m=` line that repairs `payload_type`
    /// (`a=rtpmap:N rtx/CLOCK` with `a=fmtp:N apt=PT`, RFC 4588 section 8).
    pub rtx_payload_type: Option<u8>,
}

/// What a DESCRIBE answer describes.
#[derive(Debug, Clone, PartialEq)]
pub struct Presentation {
    /// The session-level `a=control`, if any.
    pub control: Option<String>,
    /// How long the presentation plays, from a session-level
    /// `a=range:npt=START-END`; `None` for an open range (live) or none.
    pub duration_secs: Option<f64>,
    /// The RTP media, in the SDP's order. Never empty.
    pub media: Vec<Media>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    #[error(transparent)]
    Syntax(#[from] proto::sdp::SdpError),
    #[error("the SDP describes no RTP/AVP media")]
    NoMedia,
    #[error("media {index} ({kind}) has dynamic payload type {payload_type} and no a=rtpmap clock rate for it")]
    NoClockRate {
        index: usize,
        kind: String,
        payload_type: u8,
    },
    #[error("media {index} ({kind}) has no a=control, and the presentation has {count} media")]
    NoControl { index: usize, kind: String, count: usize },
}

/// Clock rates of the static payload types of RFC 3551 (tables 4 and 5).
fn static_clock_rate(pt: u8) -> Option<(u32, &'static str)> {
    Some(match pt {
        0 => (8_000, "PCMU"),
        3 => (8_000, "GSM"),
        4 => (8_000, "G723"),
        5 => (8_000, "DVI4"),
        6 => (16_000, "DVI4"),
        7 => (8_000, "LPC"),
        8 => (8_000, "PCMA"),
        9 => (8_000, "G722"),
        10 | 11 => (44_100, "L16"),
        12 => (8_000, "QCELP"),
        13 => (8_000, "CN"),
        14 => (90_000, "MPA"),
        15 => (8_000, "G728"),
        16 => (11_025, "DVI4"),
        17 => (22_050, "DVI4"),
        18 => (8_000, "G729"),
        25 => (90_000, "CelB"),
        26 => (90_000, "JPEG"),
        28 => (90_000, "nv"),
        31 => (90_000, "H261"),
        32 => (90_000, "MPV"),
        33 => (90_000, "MP2T"),
        34 => (90_000, "H263"),
        _ => return None,
    })
}

pub fn parse(body: &[u8]) -> Result<Presentation, SdpError> {
    let sd = SessionDescription::parse(body)?;
    // Media-level ranges, and ones that do not parse, say nothing the PLAY
    // answer will not.
    let duration_secs = sd
        .range()
        .and_then(|r| NptRange::parse(r).ok())
        .and_then(|r| Some(r.end? - r.start.unwrap_or(0.0)))
        .filter(|d| *d > 0.0);
    let rtp: Vec<&proto::sdp::Media> = sd
        .media
        .iter()
        .filter(|m| m.protocol.to_ascii_uppercase().starts_with("RTP/AVP"))
        .collect();
    if rtp.is_empty() {
        return Err(SdpError::NoMedia);
    }
    let count = rtp.len();
    let mut media = Vec::with_capacity(count);
    for (index, m) in rtp.into_iter().enumerate() {
        // The parser has checked that an RTP medium has payload types.
        let payload_type = m.payload_types().next().unwrap_or_default();
        let (encoding, clock_rate) = match m.rtpmap(payload_type) {
            Some(map) => (map.encoding, map.clock_rate),
            None => match static_clock_rate(payload_type) {
                Some((rate, name)) => (name.to_owned(), rate),
                None => {
                    return Err(SdpError::NoClockRate {
                        index,
                        kind: m.kind.clone(),
                        payload_type,
                    })
                }
            },
        };
        if m.control().is_none() && count > 1 {
            return Err(SdpError::NoControl {
                index,
                kind: m.kind.clone(),
                count,
            });
        }
        let rtx_payload_type = m.payload_types().find(|&pt| {
            m.rtpmap(pt)
                .is_some_and(|map| map.encoding.eq_ignore_ascii_case(proto::rtx::ENCODING_NAME))
                && m.fmtp(pt)
                    .and_then(|f| proto::rtx::Fmtp::parse(f).ok())
                    .is_some_and(|f| f.apt == payload_type)
        });
        media.push(Media {
            kind: m.kind.clone(),
            payload_type,
            encoding,
            clock_rate,
            control: m.control().map(str::to_owned),
            rtx_payload_type,
        });
    }
    Ok(Presentation {
        control: sd.control().map(str::to_owned),
        duration_secs,
        media,
    })
}

impl Presentation {
    /// The URL that PLAY, GET_PARAMETER and TEARDOWN name: the session-level
    /// control resolved against `base`, or `base` when there is none.
    pub fn aggregate_url(&self, base: &str) -> String {
        url::resolve(base, self.control.as_deref().unwrap_or("*"))
    }

    /// The URL SETUP names for medium `index`: its control resolved against
    /// `base`, or the aggregate URL for a lone medium without one.
    pub fn media_url(&self, index: usize, base: &str) -> String {
        match self.media.get(index).and_then(|m| m.control.as_deref()) {
            Some(c) => url::resolve(base, c),
            None => self.aggregate_url(base),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `streamalot serve` answers for an ffmpeg-hinted H.264 + AAC movie.
    const STREAMALOT: &str = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=sample\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n\
        a=range:npt=0-10.000\r\nm=video 0 RTP/AVP 96\r\nb=AS:250\r\na=rtpmap:96 H264/90000\r\n\
        a=fmtp:96 packetization-mode=1;sprop-parameter-sets=Z0LAHtkA,aMuDyyA=\r\na=control:trackID=3\r\n\
        m=audio 0 RTP/AVP 97\r\na=rtpmap:97 MPEG4-GENERIC/44100/2\r\n\
        a=fmtp:97 profile-level-id=1;mode=AAC-hbr;sizelength=13\r\na=control:trackID=4\r\n";

    /// The shape of gst-rtsp-server's answer (LF only, session-level control).
    const GSTREAMER: &str = "v=0\no=- 1188340656180883 1 IN IP4 127.0.0.1\ns=Session streamed with GStreamer\n\
        t=0 0\na=tool:GStreamer\na=type:broadcast\na=control:*\na=range:npt=0-10.0\n\
        m=video 0 RTP/AVP 96\nc=IN IP4 0.0.0.0\na=rtpmap:96 H264/90000\na=control:stream=0\n\
        m=audio 0 RTP/AVP 97\nc=IN IP4 0.0.0.0\na=rtpmap:97 MP4A-LATM/44100/2\na=control:stream=1\n";

    #[test]
    fn rtx_payload_types_by_apt() {
        let offer = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=x\r\nt=0 0\r\n\
            m=video 0 RTP/AVPF 96 99\r\na=rtpmap:96 H264/90000\r\na=rtcp-fb:96 nack\r\n\
            a=rtpmap:99 rtx/90000\r\na=fmtp:99 apt=96;rtx-time=1000\r\na=control:trackID=1\r\n\
            m=audio 0 RTP/AVPF 97 100 101\r\na=rtpmap:97 MPEG4-GENERIC/44100/2\r\n\
            a=rtpmap:100 rtx/44100\r\na=fmtp:100 apt=5\r\na=rtpmap:101 RTX/44100\r\na=fmtp:101 apt=97\r\n\
            a=control:trackID=2\r\n";
        let p = parse(offer.as_bytes()).unwrap();
        assert_eq!(p.media[0].rtx_payload_type, Some(99));
        // The RTX type that repairs another payload type is not this one's.
        assert_eq!(p.media[1].rtx_payload_type, Some(101));
        let plain = parse(STREAMALOT.as_bytes()).unwrap();
        assert!(plain.media.iter().all(|m| m.rtx_payload_type.is_none()));
    }

    #[test]
    fn streamalot_sdp() {
        let p = parse(STREAMALOT.as_bytes()).unwrap();
        assert_eq!((p.control.as_deref(), p.duration_secs), (None, Some(10.0)));
        assert_eq!(p.media.len(), 2);
        assert_eq!(
            p.media[0],
            Media {
                kind: "video".into(),
                payload_type: 96,
                encoding: "H264".into(),
                clock_rate: 90_000,
                control: Some("trackID=3".into()),
                rtx_payload_type: None,
            }
        );
        assert_eq!(
            (p.media[1].clock_rate, p.media[1].encoding.as_str()),
            (44_100, "MPEG4-GENERIC")
        );
        let base = "rtsp://127.0.0.1:8554/sample.mp4/";
        assert_eq!(p.aggregate_url(base), base);
        assert_eq!(p.media_url(1, base), "rtsp://127.0.0.1:8554/sample.mp4/trackID=4");
    }

    #[test]
    fn gstreamer_sdp() {
        let p = parse(GSTREAMER.as_bytes()).unwrap();
        assert_eq!((p.control.as_deref(), p.duration_secs), (Some("*"), Some(10.0)));
        let base = "rtsp://127.0.0.1:8554/test/";
        assert_eq!(p.aggregate_url(base), base);
        assert_eq!(p.media_url(0, base), "rtsp://127.0.0.1:8554/test/stream=0");
        assert_eq!(p.media[1].clock_rate, 44_100);
    }

    #[test]
    fn absolute_and_session_controls() {
        let sdp = "v=0\r\na=control:rtsp://h/agg\r\nm=video 0 RTP/AVP 26\r\na=control:rtsp://h/agg/v\r\n";
        let p = parse(sdp.as_bytes()).unwrap();
        assert_eq!(p.duration_secs, None, "no a=range");
        assert_eq!(p.aggregate_url("rtsp://x/y/"), "rtsp://h/agg");
        let live = parse(b"v=0\na=range:npt=now-\nm=audio 0 RTP/AVP 0\n").unwrap();
        assert_eq!(live.duration_secs, None, "an open range");
        let hms = parse(b"v=0\na=range:npt=0-0:01:30\nm=audio 0 RTP/AVP 0\n").unwrap();
        assert_eq!(hms.duration_secs, Some(90.0));
        assert_eq!(p.media_url(0, "rtsp://x/y/"), "rtsp://h/agg/v");
        // Static payload type: JPEG's clock rate without an rtpmap.
        assert_eq!((p.media[0].clock_rate, p.media[0].encoding.as_str()), (90_000, "JPEG"));
    }

    #[test]
    fn a_lone_medium_without_control_uses_the_aggregate() {
        let p = parse(b"v=0\nm=audio 0 RTP/AVP 0\n").unwrap();
        assert_eq!(p.media_url(0, "rtsp://h/a.wav"), "rtsp://h/a.wav");
        assert_eq!(p.media[0].clock_rate, 8_000);
    }

    #[test]
    fn non_rtp_media_are_skipped() {
        let sdp = "v=0\nm=application 0 TCP/BFCP *\nm=video 0 RTP/SAVP 96\na=rtpmap:96 H264/90000\n\
                   m=audio 0 RTP/AVP 97\na=rtpmap:97 opus/48000/2\na=control:a\n";
        let p = parse(sdp.as_bytes()).unwrap();
        assert_eq!(p.media.len(), 1);
        assert_eq!((p.media[0].kind.as_str(), p.media[0].clock_rate), ("audio", 48_000));
    }

    #[test]
    fn bad_sdps_say_what_is_wrong() {
        use proto::sdp::SdpError::{Line, NoVersion, NotText};
        assert_eq!(parse(b"\xff\xfe"), Err(SdpError::Syntax(NotText { line: 1 })));
        assert_eq!(parse(b""), Err(SdpError::Syntax(NoVersion)));
        assert_eq!(parse(b"<html>404</html>"), Err(SdpError::Syntax(NoVersion)));
        assert_eq!(parse(b"v=0\ns=x\n"), Err(SdpError::NoMedia));
        assert!(matches!(
            parse(b"v=0\ngarbage\n"),
            Err(SdpError::Syntax(Line { line: 2, .. }))
        ));
        for bad in [
            &b"v=0\nm=video 0\n"[..],
            b"v=0\nm=video 0 RTP/AVP x\n",
            b"v=0\nm=video 0 RTP/AVP 200\n",
            b"v=0\nm=video 0 RTP/AVP 96\na=rtpmap:96 H264/0\n",
            b"v=0\nm=video 0 RTP/AVP 96\na=rtpmap:96 H264\n",
        ] {
            assert!(matches!(parse(bad), Err(SdpError::Syntax(Line { .. }))), "{bad:?}");
        }
        assert_eq!(
            parse(b"v=0\nm=video 0 RTP/AVP 96\na=control:v\n"),
            Err(SdpError::NoClockRate {
                index: 0,
                kind: "video".into(),
                payload_type: 96
            })
        );
        assert_eq!(
            parse(b"v=0\nm=video 0 RTP/AVP 26\na=control:v\nm=audio 0 RTP/AVP 0\n"),
            Err(SdpError::NoControl {
                index: 1,
                kind: "audio".into(),
                count: 2
            })
        );
        // An rtpmap for another payload type does not count.
        assert!(matches!(
            parse(b"v=0\nm=video 0 RTP/AVP 96\na=rtpmap:97 H264/90000\n"),
            Err(SdpError::NoClockRate { .. })
        ));
    }
}
