//! Broadcasts described by an `.sdp` file in the media folder, as Darwin's
//! reflector took them: a broadcaster (an encoder, `ffmpeg -f rtp`) sends
//! RTP to this box's UDP ports, unicast, or to a multicast group the server
//! joins on a configured interface, and the file says which: each RTP
//! medium's port (RTCP on the next one) and its connection address. The
//! broadcast is at the file's path (`/cam.sdp`); the first viewer to ask
//! for it puts it on the air, and it ends like any broadcast, when its
//! packets stop for [`SILENCE_TIMEOUT`](super::SILENCE_TIMEOUT).
//!
//! Its packets are checked like a publisher's (version, an announced payload
//! type, one SSRC per stream, the byte budget); anyone who can reach the
//! ports can send, as with DSS, so the ports belong behind the operator's
//! firewall.

use std::net::{IpAddr, Ipv4Addr};

use proto::sdp::SessionDescription;

use super::describe::{self, DescribeError, Description};
use super::BroadcastId;

/// Where one stream of an SDP source arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen {
    /// The stream's index in the description.
    pub track: usize,
    /// The RTP port; RTCP arrives on the next one.
    pub port: u16,
    /// The multicast group to join, if the address is one.
    pub group: Option<Ipv4Addr>,
}

/// Why an `.sdp` file describes no broadcast this server can receive.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Describe(#[from] DescribeError),
    #[error("stream {0} has no port to receive on (m= port 0)")]
    NoPort(usize),
    #[error("stream {0}: {1:?} is an IPv6 multicast group, which is not supported")]
    Ipv6Group(usize, String),
}

/// The broadcast `id` that the SDP `text` at `path` describes, and where
/// its streams arrive.
pub fn parse(id: BroadcastId, path: &str, text: &[u8]) -> Result<(Description, Vec<Listen>), SourceError> {
    let sdp = SessionDescription::parse(text).map_err(DescribeError::from)?;
    let mut listen = Vec::new();
    for (track, m) in sdp.media.iter().filter(|m| m.is_rtp()).enumerate() {
        if m.port == 0 {
            return Err(SourceError::NoPort(track));
        }
        let address = m
            .connections
            .first()
            .or(sdp.connection.as_ref())
            .map(|c| c.address.split('/').next().unwrap_or_default().to_owned());
        let group = match address.as_deref().map(str::parse::<IpAddr>) {
            Some(Ok(IpAddr::V4(a))) if a.is_multicast() => Some(a),
            Some(Ok(IpAddr::V6(a))) if a.is_multicast() => {
                return Err(SourceError::Ipv6Group(track, a.to_string()));
            }
            _ => None,
        };
        listen.push(Listen {
            track,
            port: m.port,
            group,
        });
    }
    let desc = describe::parse(id, path, None, text)?;
    Ok((desc, listen))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ffmpegs_sdp_for_two_rtp_outputs() {
        // What `ffmpeg ... -f rtp rtp://127.0.0.1:5004 ... -f rtp rtp://127.0.0.1:5006 -sdp_file` writes.
        let text = "v=0\no=- 0 0 IN IP4 127.0.0.1\ns=No Name\nt=0 0\na=tool:libavformat 59.27.100\n\
                    m=video 5004 RTP/AVP 96\nc=IN IP4 127.0.0.1\nb=AS:200\na=rtpmap:96 H264/90000\n\
                    a=fmtp:96 packetization-mode=1\nm=audio 5006 RTP/AVP 97\nc=IN IP4 239.1.2.3/16\n\
                    a=rtpmap:97 MPEG4-GENERIC/44100/2\n";
        let (desc, listen) = parse(7, "/cam.sdp", text.as_bytes()).unwrap();
        assert_eq!(desc.tracks.len(), 2);
        assert_eq!(
            listen,
            [
                Listen {
                    track: 0,
                    port: 5004,
                    group: None
                },
                Listen {
                    track: 1,
                    port: 5006,
                    group: Some(Ipv4Addr::new(239, 1, 2, 3))
                },
            ]
        );
        assert!(desc.sdp.contains("a=control:trackID=2"), "{}", desc.sdp);
        assert!(
            !desc.sdp.contains("5004"),
            "viewers are not told the ingest ports: {}",
            desc.sdp
        );
        let no_port = text.replace("5006", "0");
        assert_eq!(
            parse(7, "/cam.sdp", no_port.as_bytes()).unwrap_err(),
            SourceError::NoPort(1)
        );
        assert!(matches!(parse(7, "/x.sdp", b"not sdp"), Err(SourceError::Describe(_))));
    }
}
