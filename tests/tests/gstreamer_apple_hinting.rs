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

use std::thread;
use std::time::Duration;

use streamalot_tests::ffmpeg::{framemd5, FRAME_HASHES};
use streamalot_tests::gstreamer::{file_video_hashes, rtsp_video_hashes};
use streamalot_tests::media::apple_style;
use streamalot_tests::server::{library, Server};

const PLAY_TIMEOUT: Duration = Duration::from_secs(60);
/// Plays of each clip over UDP, all at once: a stream that loses its last
/// pictures now and then shows in one of them.
const UDP_PLAYS: usize = 2;

/// The first place `got` differs from `want`, said for a failure message.
fn first_difference<T: std::fmt::Debug + PartialEq>(want: &[T], got: &[T]) -> Option<String> {
    let i = (0..want.len().max(got.len())).find(|&i| want.get(i) != got.get(i))?;
    Some(format!(
        "item {i} of {} differs (received {}): file {:?}, RTSP {:?}",
        want.len(),
        got.len(),
        want.get(i),
        got.get(i)
    ))
}

#[test]
fn gstreamer_decodes_every_picture_over_udp_and_tcp() {
    let clips = apple_style();
    let paths: Vec<_> = clips.iter().map(|c| c.path.as_path()).collect();
    let server = Server::start(&library("gstreamer-apple", &paths), &[]);
    let mut runs = Vec::new();
    for clip in clips {
        for transport in ["tcp"].into_iter().chain(["udp"; UDP_PLAYS]) {
            let url = server.url(clip.name);
            runs.push(thread::spawn(move || {
                (clip.name, transport, rtsp_video_hashes(&url, transport, PLAY_TIMEOUT))
            }));
        }
    }
    let files: Vec<_> = clips
        .iter()
        .map(|c| (c.name, file_video_hashes(&c.path, PLAY_TIMEOUT)))
        .collect();
    let mut failures = Vec::new();
    for run in runs {
        let (name, transport, got) = run.join().expect("a gst-launch run");
        let want = &files.iter().find(|f| f.0 == name).expect("a clip played").1;
        assert!(!want.is_empty(), "{name}: GStreamer decoded no pictures from the file");
        if let Some(d) = first_difference(want, &got) {
            failures.push(format!("{name} over {transport}: picture {d}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    let records = server.wait_for_records(clips.len() * (1 + UDP_PLAYS), Duration::from_secs(20));
    assert!(records.iter().all(|r| r["c-status"] == "200"), "{records:?}");
    let udp = records.iter().filter(|r| r["transport"] == "udp").count();
    assert_eq!(
        udp,
        clips.len() * UDP_PLAYS,
        "each play used the transport it asked for: {records:?}"
    );
}

#[test]
fn ffmpeg_plays_every_frame_bit_exact_over_udp_and_tcp() {
    let clips = apple_style();
    let paths: Vec<_> = clips.iter().map(|c| c.path.as_path()).collect();
    let server = Server::start(&library("ffmpeg-apple", &paths), &[]);
    let mut runs = Vec::new();
    for clip in clips {
        for transport in ["tcp", "udp"] {
            let url = server.url(clip.name);
            runs.push(thread::spawn(move || {
                let got = framemd5(&["-rtsp_transport", transport], &url, FRAME_HASHES, PLAY_TIMEOUT);
                (clip, transport, got)
            }));
        }
    }
    let mut failures = Vec::new();
    for run in runs {
        let (clip, transport, got) = run.join().expect("an ffmpeg run");
        let file = framemd5(
            &[],
            clip.path.to_str().expect("a UTF-8 path"),
            FRAME_HASHES,
            PLAY_TIMEOUT,
        );
        for (stream, kind) in [(0, "video"), (1, "audio")] {
            let want = file.hashes(stream);
            assert!(
                !want.is_empty(),
                "{}: ffmpeg found no {kind} frames in the file",
                clip.name
            );
            // Every AAC frame is hinted.
            if let Some(d) = first_difference(&want, &got.hashes(stream)) {
                failures.push(format!("{} over {transport}: {kind} frame {d}", clip.name));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
