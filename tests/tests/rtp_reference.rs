//! The loader against ffmpeg's own RTP muxer, packet by packet.
//!
//! ffmpeg hints a movie (`-movflags +rtphint`) by running each stream through
//! its RTP muxer and recording what it would send as hint samples. Sending the
//! same stream of the same file with `ffmpeg -c copy -f rtp` therefore gives,
//! independently of the hint track, the packets a server streaming that hint
//! track must send. For every hint track of every test clip, the loader's
//! packets must equal those: same count, same payload bytes, same marker bits,
//! same sequence and timestamp progression. The timestamps cover the
//! composition offsets (`rtpo`) of the H.264 clips' B-frames.
//!
//! Each hint track's SDP must also describe the stream as ffmpeg does.

use loader::Movie;
use streamalot_tests::media::media;
use streamalot_tests::rtp::{compare, ffmpeg_rtp, ffmpeg_stream_for, loader_packets};

#[test]
fn h264_aac_mp4_matches_ffmpeg_rtp() {
    check_clip("h264-aac.mp4");
}

#[test]
fn h264_aac_mov_matches_ffmpeg_rtp() {
    check_clip("h264-aac.mov");
}

#[test]
fn h263_aac_3gp_matches_ffmpeg_rtp() {
    check_clip("h263-aac.3gp");
}

#[test]
fn mpeg4_aac_3gp_matches_ffmpeg_rtp() {
    check_clip("mpeg4-aac.3gp");
}

fn check_clip(name: &str) {
    let clip = media().clip(name);
    let movie = Movie::open(&clip.path).unwrap_or_else(|e| panic!("{name}: {e}"));
    let hints: Vec<_> = movie.hint_tracks().collect();
    let streams: Vec<String> = hints.iter().map(|h| ffmpeg_stream_for(&movie, h)).collect();
    // ffmpeg hints every stream: one video and one audio here.
    assert_eq!(
        streams,
        ["0:v:0", "0:a:0"],
        "{name}: hint tracks {:?} should packetize the video and the audio, in that order",
        hints.iter().map(|h| h.id).collect::<Vec<_>>()
    );
    let mut failures = Vec::new();
    for (hint, stream) in hints.iter().zip(&streams) {
        let what = format!("{name}: hint track {} (ffmpeg stream {stream})", hint.id);
        let ours = loader_packets(&movie, hint.id);
        assert!(!ours.is_empty(), "{what}: the loader yields no packets");
        let theirs = ffmpeg_rtp(&clip.path, stream);
        if let Err(difference) = compare(&ours, &theirs.packets) {
            failures.push(format!("{what}: {difference}"));
        }
        if let Err(difference) = compare_sdp(movie.sdp(), hint.id, ours[0].payload_type, &theirs.sdp) {
            failures.push(format!("{what}: {difference}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The media section of `sdp` that ends with `a=control:trackID=<track_id>`.
fn media_section(sdp: &str, track_id: u32) -> Option<Vec<&str>> {
    let control = format!("a=control:trackID={track_id}");
    let mut section: Option<Vec<&str>> = None;
    for line in sdp.lines() {
        if line.starts_with("m=") {
            section = Some(Vec::new());
        }
        if let Some(s) = &mut section {
            s.push(line);
            if line == control {
                return section;
            }
        }
    }
    None
}

/// `a=rtpmap:96 H264/90000` -> `a=rtpmap:PT H264/90000`, and the same for
/// `a=fmtp`: the two senders number payload types differently.
fn without_payload_type(line: &str) -> String {
    match line
        .split_once(':')
        .and_then(|(name, rest)| Some((name, rest.split_once(' ')?)))
    {
        Some((name, (_pt, value))) => format!("{name}:PT {value}"),
        None => line.to_owned(),
    }
}

/// Checks the loader's media section for the hint track against the SDP
/// ffmpeg printed while sending the same stream: the same media type and the
/// same `rtpmap` and `fmtp` attributes, under the payload type the packets
/// carry.
fn compare_sdp(loader_sdp: &str, track_id: u32, payload_type: u8, ffmpeg_sdp: &str) -> Result<(), String> {
    let ours = media_section(loader_sdp, track_id)
        .ok_or_else(|| format!("no media section with a=control:trackID={track_id} in the SDP:\n{loader_sdp}"))?;
    let theirs: Vec<&str> = ffmpeg_sdp
        .lines()
        .map(str::trim_end)
        .skip_while(|l| !l.starts_with("m="))
        .collect();
    let media_type = |lines: &[&str]| lines.first().and_then(|m| m.split(' ').next()).map(str::to_owned);
    let m_line_pt = ours[0].split(' ').nth(3).unwrap_or_default();
    if m_line_pt != payload_type.to_string() {
        return Err(format!(
            "SDP `{}` names payload type {m_line_pt}, the packets carry {payload_type}",
            ours[0]
        ));
    }
    if media_type(&ours) != media_type(&theirs) {
        return Err(format!("SDP media type: loader `{}`, ffmpeg `{}`", ours[0], theirs[0]));
    }
    for attribute in ["a=rtpmap:", "a=fmtp:"] {
        let pick = |lines: &[&str], check_pt: Option<u8>| -> Result<Vec<String>, String> {
            lines
                .iter()
                .filter(|l| l.starts_with(attribute))
                .map(|l| {
                    if let Some(pt) = check_pt {
                        if !l.starts_with(&format!("{attribute}{pt} ")) {
                            return Err(format!("`{l}` is not for payload type {pt}"));
                        }
                    }
                    Ok(without_payload_type(l))
                })
                .collect()
        };
        let (ours, theirs) = (pick(&ours, Some(payload_type))?, pick(&theirs, None)?);
        if ours != theirs {
            return Err(format!("SDP {attribute} lines: loader {ours:?}, ffmpeg {theirs:?}"));
        }
    }
    Ok(())
}
