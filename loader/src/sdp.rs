//! The SDP of a hinted movie (RFC 4566): session lines, then one media
//! section per hint track.
//!
//! Apple's hinter stores session-level text in `moov/udta/hnti/rtp `; ffmpeg
//! stores none. Whatever the movie carries is kept, the mandatory lines it
//! lacks are synthesized, and `a=control` and `a=range` are always ours, so a
//! client sees the same shape whoever hinted the file. Each hint track's own
//! `hnti/sdp ` text becomes its media section, with its `a=control` replaced
//! by `a=control:trackID=N` (ffmpeg writes `streamid=`; Apple's `trackID=`).

use std::fmt::Write;

/// Session-level line types in the order RFC 4566 section 5 requires.
const SESSION_ORDER: &[char] = &['v', 'o', 's', 'i', 'u', 'e', 'p', 'c', 'b', 't', 'r', 'z', 'k', 'a'];

/// A media section to append: the hint track's SDP text (or a synthesized
/// `m=` line when it has none) and its track ID.
pub(crate) struct MediaSection<'a> {
    pub text: Option<&'a str>,
    pub fallback_media: &'a str,
    pub payload_type: u8,
    pub track_id: u32,
}

fn lines(text: &str) -> impl Iterator<Item = &str> {
    text.split('\n')
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| l.len() >= 2 && l.as_bytes()[1] == b'=')
}

/// Builds the SDP. `session` is the movie-level text, if any; `name` goes in
/// `s=` when the movie has none; `duration_secs` goes in `a=range`.
pub(crate) fn build(session: Option<&str>, name: &str, duration_secs: f64, media: &[MediaSection<'_>]) -> String {
    let given: Vec<&str> = session
        .into_iter()
        .flat_map(lines)
        .filter(|l| !l.starts_with("m="))
        .filter(|l| !l.starts_with("a=control:") && !l.starts_with("a=range:"))
        .collect();
    let has = |c: char| given.iter().any(|l| l.starts_with(c));
    let mut out = String::new();
    for &kind in SESSION_ORDER {
        for l in given.iter().filter(|l| l.starts_with(kind)) {
            out.push_str(l);
            out.push_str("\r\n");
        }
        if !has(kind) {
            match kind {
                'v' => out.push_str("v=0\r\n"),
                'o' => out.push_str("o=- 0 0 IN IP4 0.0.0.0\r\n"),
                's' => {
                    let name = if name.trim().is_empty() { "Streamalot" } else { name };
                    let _ = write!(out, "s={}\r\n", name.replace(['\r', '\n'], " "));
                }
                'c' => out.push_str("c=IN IP4 0.0.0.0\r\n"),
                't' => out.push_str("t=0 0\r\n"),
                _ => {}
            }
        }
        if kind == 'a' {
            out.push_str("a=control:*\r\n");
            let _ = write!(out, "a=range:npt=0-{duration_secs:.5}\r\n");
        }
    }
    for m in media {
        let mut wrote_m = false;
        if let Some(text) = m.text {
            for l in lines(text).filter(|l| !l.starts_with("a=control:")) {
                wrote_m |= l.starts_with("m=");
                if !wrote_m {
                    // Text before the m= line would land in the previous
                    // section; a track fragment must start with m=.
                    continue;
                }
                out.push_str(l);
                out.push_str("\r\n");
            }
        }
        if !wrote_m {
            let _ = write!(out, "m={} 0 RTP/AVP {}\r\n", m.fallback_media, m.payload_type);
        }
        let _ = write!(out, "a=control:trackID={}\r\n", m.track_id);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthesizes_session_lines_and_replaces_controls() {
        let media = [MediaSection {
            text: Some("m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:streamid=0\r\n"),
            fallback_media: "video",
            payload_type: 96,
            track_id: 3,
        }];
        let sdp = build(None, "clip.mp4", 5.0, &media);
        assert_eq!(
            sdp,
            "v=0\r\no=- 0 0 IN IP4 0.0.0.0\r\ns=clip.mp4\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n\
             a=control:*\r\na=range:npt=0-5.00000\r\n\
             m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:trackID=3\r\n"
        );
    }

    #[test]
    fn keeps_movie_level_text_in_rfc_order() {
        let session = "v=0\r\no=StreamingServer 3 4 IN IP4 10.0.0.1\r\ns=Apple\r\na=x-copyright: me\r\nc=IN IP4 0.0.0.0\r\nb=AS:100\r\na=range:npt=0- 70.00000\r\n";
        let sdp = build(Some(session), "x", 70.0, &[]);
        let order: Vec<&str> = sdp.lines().collect();
        assert_eq!(
            order,
            [
                "v=0",
                "o=StreamingServer 3 4 IN IP4 10.0.0.1",
                "s=Apple",
                "c=IN IP4 0.0.0.0",
                "b=AS:100",
                "t=0 0",
                "a=x-copyright: me",
                "a=control:*",
                "a=range:npt=0-70.00000"
            ]
        );
    }

    #[test]
    fn track_without_sdp_gets_an_m_line() {
        let media = [MediaSection {
            text: None,
            fallback_media: "audio",
            payload_type: 97,
            track_id: 4,
        }];
        let sdp = build(None, "x", 1.0, &media);
        assert!(
            sdp.ends_with("m=audio 0 RTP/AVP 97\r\na=control:trackID=4\r\n"),
            "{sdp}"
        );
    }
}
