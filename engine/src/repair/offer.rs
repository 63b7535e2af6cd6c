//! What DESCRIBE offers for NACK/RTX retransmission (RFC 4585, RFC 4588),
//! and what a SETUP of each track then gets.
//!
//! The offer rewrites a presentation's SDP: each RTP media section's
//! profile becomes `RTP/AVPF`, an RTX payload type is listed after the
//! stream's own (`m=video 0 RTP/AVPF 96 97`), mapped to `rtx/CLOCK` with
//! `a=fmtp:97 apt=96;rtx-time=MS`, and `a=rtcp-fb:96 nack` says the server
//! takes generic NACKs for it. That is what GStreamer's `rtspsrc` (with
//! `do-retransmission`, its default) reads: the profile of the `m=` line
//! decides the one it asks for in SETUP (`RTP/AVPF/UDP`), the answer's
//! profile decides whether it turns retransmission on at all, and the RTX
//! formats of the section build the payload map of its `rtprtxreceive`,
//! which takes the RTX packets by payload type and tells their SSRC from the
//! first one's original sequence number (SSRC multiplexing, RFC 4588
//! section 5.3), so the Transport answer names only the media SSRC.
//!
//! ffmpeg reads only the first format of an `m=` line and sets up with
//! `RTP/AVP` whatever the profile, so it keeps playing as before (and pays
//! nothing). Clients built on live555 (VLC, openRTSP) match `RTP/AVP` in the
//! `m=` line literally and do not play an AVPF section, which is why the
//! offer is the operator's choice (`--nack`) and not the default.
//!
//! The RTX payload type of a section is the lowest dynamic type (96 to 127)
//! that no section uses, given out in section order, so that the offer and
//! the SETUP (which reads the same SDP again) agree without keeping state.

use std::fmt::Write as _;

use proto::rtx;

/// How long the server keeps a stream's packets to send again, announced
/// as `rtx-time`. GStreamer asks again for a lost packet until its latency
/// (2 s by default) runs out; most repairs come within a few round trips.
pub const RTX_TIME_MS: u32 = 1000;

/// One media section's retransmission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offered {
    /// The `trackID=` of the section's control URL.
    pub track_id: Option<u32>,
    /// The payload type repaired: the section's first format.
    pub media_pt: u8,
    pub rtx_pt: u8,
    pub clock_rate: u32,
}

/// The clock rate of a static payload type (RFC 3551 tables 4 and 5).
fn static_clock(pt: u8) -> Option<u32> {
    match pt {
        0 | 3 | 4 | 5 | 7 | 8 | 9 | 12 | 13 | 15 | 18 => Some(8000),
        6 => Some(16_000),
        10 | 11 => Some(44_100),
        16 => Some(11_025),
        17 => Some(22_050),
        14 | 25 | 26 | 28 | 31 | 32 | 33 | 34 => Some(90_000),
        _ => None,
    }
}

/// A media section: its `m=` line's parts and the lines after it.
struct Section<'a> {
    media: &'a str,
    port: &'a str,
    proto: &'a str,
    formats: Vec<&'a str>,
    lines: Vec<&'a str>,
}

fn split(sdp: &str) -> (Vec<&str>, Vec<Section<'_>>) {
    let mut head = Vec::new();
    let mut sections: Vec<Section<'_>> = Vec::new();
    for line in sdp.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(m) = line.strip_prefix("m=") {
            let mut parts = m.split_ascii_whitespace();
            sections.push(Section {
                media: parts.next().unwrap_or_default(),
                port: parts.next().unwrap_or_default(),
                proto: parts.next().unwrap_or_default(),
                formats: parts.collect(),
                lines: Vec::new(),
            });
        } else if let Some(s) = sections.last_mut() {
            s.lines.push(line);
        } else if !line.is_empty() {
            head.push(line);
        }
    }
    (head, sections)
}

fn attribute<'a>(lines: &[&'a str], name: &str, pt: u8) -> Option<&'a str> {
    let prefix = format!("a={name}:{pt} ");
    lines.iter().find_map(|l| l.strip_prefix(prefix.as_str()))
}

fn track_id(lines: &[&str]) -> Option<u32> {
    lines.iter().find_map(|l| {
        let control = l.strip_prefix("a=control:")?;
        let (_, id) = control.rsplit_once("trackID=")?;
        id.trim().parse().ok()
    })
}

/// The retransmission each media section of `sdp` gets, in section order:
/// `None` for a section that is not RTP/AVP or whose clock rate is not known.
pub fn plan(sdp: &str) -> Vec<Option<Offered>> {
    let (_, sections) = split(sdp);
    let mut used: Vec<u8> = sections
        .iter()
        .flat_map(|s| s.formats.iter().filter_map(|f| f.parse::<u8>().ok()))
        .collect();
    sections
        .iter()
        .map(|s| {
            if !s.proto.eq_ignore_ascii_case("RTP/AVP") {
                return None;
            }
            let media_pt: u8 = s.formats.first()?.parse().ok().filter(|pt| *pt < 128)?;
            let clock_rate = match attribute(&s.lines, "rtpmap", media_pt) {
                Some(map) => map.split('/').nth(1)?.trim().parse().ok()?,
                None => static_clock(media_pt)?,
            };
            let rtx_pt = (96..=127u8).find(|pt| !used.contains(pt))?;
            used.push(rtx_pt);
            Some(Offered {
                track_id: track_id(&s.lines),
                media_pt,
                rtx_pt,
                clock_rate,
            })
        })
        .collect()
}

/// The retransmission of track `track_id` of `sdp`, if it has one.
pub fn for_track(sdp: &str, track_id: u32) -> Option<Offered> {
    plan(sdp).into_iter().flatten().find(|o| o.track_id == Some(track_id))
}

/// `sdp` with NACK and RTX offered on each RTP section [`plan`] gives one
/// (see the module documentation). Lines end in CRLF.
pub fn with_feedback(sdp: &str) -> String {
    let offers = plan(sdp);
    let (head, sections) = split(sdp);
    let mut out = String::with_capacity(sdp.len() + 128 * sections.len());
    for line in head {
        out.push_str(line);
        out.push_str("\r\n");
    }
    for (s, offer) in sections.iter().zip(offers) {
        let _ = write!(out, "m={} {} ", s.media, s.port);
        match offer {
            Some(o) => {
                out.push_str("RTP/AVPF");
                for f in &s.formats {
                    let _ = write!(out, " {f}");
                }
                let _ = write!(out, " {}\r\n", o.rtx_pt);
            }
            None => {
                out.push_str(s.proto);
                for f in &s.formats {
                    let _ = write!(out, " {f}");
                }
                out.push_str("\r\n");
            }
        }
        for line in s.lines.iter().filter(|l| !l.is_empty()) {
            out.push_str(line);
            out.push_str("\r\n");
        }
        if let Some(o) = offer {
            let fmtp = rtx::Fmtp {
                apt: o.media_pt,
                rtx_time_ms: Some(RTX_TIME_MS),
            };
            let _ = write!(
                out,
                "a=rtcp-fb:{} nack\r\na=rtpmap:{}\r\na=fmtp:{}\r\n",
                o.media_pt,
                rtx::rtpmap(o.rtx_pt, o.clock_rate),
                fmtp.attribute(o.rtx_pt)
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SDP: &str = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=x\r\nt=0 0\r\na=control:*\r\n\
        m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1\r\na=control:trackID=1\r\n\
        m=audio 0 RTP/AVP 97\r\na=rtpmap:97 mpeg4-generic/44100/2\r\na=control:trackID=2\r\n\
        m=audio 0 RTP/AVP 14\r\na=control:trackID=3\r\n\
        m=application 0 RTP/AVP 98\r\na=control:trackID=4\r\n";

    #[test]
    fn each_rtp_section_gets_its_own_free_rtx_type() {
        let plan = plan(SDP);
        assert_eq!(
            plan,
            vec![
                Some(Offered {
                    track_id: Some(1),
                    media_pt: 96,
                    rtx_pt: 99,
                    clock_rate: 90_000
                }),
                Some(Offered {
                    track_id: Some(2),
                    media_pt: 97,
                    rtx_pt: 100,
                    clock_rate: 44_100
                }),
                Some(Offered {
                    track_id: Some(3),
                    media_pt: 14,
                    rtx_pt: 101,
                    clock_rate: 90_000
                }),
                // No rtpmap and not a static type: no clock, no RTX.
                None,
            ]
        );
        assert_eq!(for_track(SDP, 2).map(|o| o.rtx_pt), Some(100));
        assert_eq!(for_track(SDP, 4), None);
    }

    #[test]
    fn the_offer_reads_back_as_gstreamer_reads_it() {
        let offer = with_feedback(SDP);
        assert!(offer.contains("m=video 0 RTP/AVPF 96 99\r\n"), "{offer}");
        assert!(offer.contains("a=rtcp-fb:96 nack\r\na=rtpmap:99 rtx/90000\r\na=fmtp:99 apt=96;rtx-time=1000\r\n"));
        assert!(offer.contains("m=audio 0 RTP/AVPF 97 100\r\n"));
        assert!(offer.contains("a=rtpmap:100 rtx/44100\r\n"));
        assert!(offer.contains("m=application 0 RTP/AVP 98\r\na=control:trackID=4\r\n"));
        // The session part and the media attributes are kept as they were.
        assert!(offer.starts_with("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=x\r\nt=0 0\r\na=control:*\r\n"));
        assert!(offer.contains("a=fmtp:96 packetization-mode=1\r\na=control:trackID=1\r\n"));
        // The SETUP side reads the offer's own SDP the same way: the RTX
        // types are taken, so planning the offer again finds no RTP/AVP
        // section (all are AVPF now) and the original plan stands.
        let fmtp = offer
            .lines()
            .find_map(|l| l.strip_prefix("a=fmtp:99 "))
            .map(rtx::Fmtp::parse)
            .unwrap()
            .unwrap();
        assert_eq!(fmtp.apt, 96);
        assert_eq!(fmtp.rtx_time_ms, Some(RTX_TIME_MS));
    }

    #[test]
    fn garbage_is_left_alone() {
        for sdp in [
            "",
            "m=",
            "m=video",
            "m=video 0 RTP/AVP x\r\n",
            "m=video 0 RTP/AVP 200\r\n",
        ] {
            assert!(plan(sdp).iter().all(Option::is_none), "{sdp:?}");
            let _ = with_feedback(sdp);
        }
    }
}
