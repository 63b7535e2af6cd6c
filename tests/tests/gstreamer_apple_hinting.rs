//! Real clients play movies hinted the way Apple's hinter hints them
//! (`streamalot_tests::hinter`: STAP-A and FU-A, a marker ending each frame,
//! B-frame flags, presentation times in `rtpo`, Apple's SDP with its
//! `b=AS:2097151`, audio before video in the `.mp4`) from `streamalot serve`:
//!
//! - GStreamer's `rtspsrc`, over UDP and interleaved on TCP, must reach the
//!   end, and `avdec_h264` must decode every picture bit for bit as it does
//!   from the file itself (`qtdemux`);
//! - ffmpeg, over UDP and TCP, must read every video frame (decoded) and
//!   every AAC frame bit for bit as it reads them from the file.
//!
//! Movies hinted by Apple's own tools are how GStreamer's rtspsrc was once
//! seen to decode nothing over UDP; this keeps that case in the suite
//! without shipping one.

use std::path::Path;
use std::time::Duration;

use streamalot_tests::media::apple_style;
use streamalot_tests::server::{library, Server};
use streamalot_tests::{ffmpeg, gstreamer};

const PLAY_TIMEOUT: Duration = Duration::from_secs(60);

fn clips() -> Vec<(&'static str, &'static Path)> {
    apple_style().iter().map(|c| (c.name, c.path.as_path())).collect()
}

#[test]
fn gstreamer_decodes_every_picture_over_udp_and_tcp() {
    let clips = clips();
    let paths: Vec<&Path> = clips.iter().map(|c| c.1).collect();
    let server = Server::start(&library("gstreamer-apple", &paths), &[]);
    // Two plays over UDP: a stream that loses its last pictures now and then
    // shows in one of them.
    let transports = ["tcp", "udp", "udp"];
    let failures = gstreamer::playback_differences(&server, &clips, &transports, PLAY_TIMEOUT);
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    let records = server.wait_for_records(clips.len() * transports.len(), Duration::from_secs(20));
    assert!(records.iter().all(|r| r["c-status"] == "200"), "{records:?}");
    let udp = records.iter().filter(|r| r["transport"] == "udp").count();
    assert_eq!(
        udp,
        clips.len() * 2,
        "each play used the transport it asked for: {records:?}"
    );
}

#[test]
fn ffmpeg_plays_every_frame_bit_exact_over_udp_and_tcp() {
    let clips = clips();
    let paths: Vec<&Path> = clips.iter().map(|c| c.1).collect();
    let server = Server::start(&library("ffmpeg-apple", &paths), &[]);
    // Every AAC frame is hinted.
    let failures = ffmpeg::playback_differences(&server, &clips, |_| None, PLAY_TIMEOUT);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
