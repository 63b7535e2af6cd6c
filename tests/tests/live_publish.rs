//! Live broadcasts end to end: ffmpeg publishes an H.264 + AAC file with
//! ANNOUNCE/RECORD (Digest, from the credential in its URL), over TCP and
//! over UDP, and real players watch the live path: ffmpeg (over TCP, UDP
//! and an RTSP-over-HTTP tunnel), whose decoded pictures and AAC frames must be one contiguous run
//! of the file's own, starting on a key frame; and GStreamer's `rtspsrc`
//! (over UDP and TCP), whose pictures must be too.

use std::thread;
use std::time::Duration;

use streamalot_tests::ffmpeg::{framemd5, FRAME_HASHES};
use streamalot_tests::gstreamer::{file_video_hashes, rtsp_video_hashes};
use streamalot_tests::live::{contiguous_run, publish, publish_arg, publish_url, wait_on_air, PREFIX};
use streamalot_tests::media::{media, H264_FPS};
use streamalot_tests::server::{library, Server};
use streamalot_tests::wait_with_timeout;

const TIMEOUT: Duration = Duration::from_secs(60);
/// A viewer joins within a second or so of a five-second clip, and starts
/// at the key frame before that: at least two seconds of it reach it.
const MIN_SECONDS: usize = 2;

#[test]
fn ffmpeg_publishes_over_tcp_and_udp_and_players_see_a_contiguous_run_from_a_key_frame() {
    let file = media().unhinted.clone();
    let lib = library("live-publish", &[]);
    let stats_json = lib.with_extension("stats.json");
    let _ = std::fs::remove_file(&stats_json);
    let server = Server::start(
        &lib,
        &[
            "--publish",
            &publish_arg(),
            "--stats-json",
            stats_json.to_str().unwrap(),
        ],
    );
    let from_file = framemd5(&[], file.to_str().unwrap(), FRAME_HASHES, TIMEOUT);
    let gst_file = file_video_hashes(&file, TIMEOUT);
    let keys = streamalot_tests::ffmpeg::key_frames(&file);
    let key_indexes: Vec<usize> = {
        let frames = from_file.frames(0);
        let tb = from_file.time_base[&0];
        frames
            .iter()
            .enumerate()
            .filter(|(_, f)| keys.contains(&(f.pts * tb.0 * 1_000_000_000 / tb.1)))
            .map(|(i, _)| i)
            .collect()
    };
    assert!(!key_indexes.is_empty(), "the file's key frames are found in its frames");
    for transport in ["tcp", "udp"] {
        let name = format!("cam-{transport}");
        let path = format!("{PREFIX}/{name}");
        let (publisher, what) = publish(&file, transport, &publish_url(&server, &name));
        let sdp = wait_on_air(&server, &path);
        assert!(
            sdp.contains("a=control:trackID=1") && sdp.contains("H264/90000"),
            "{sdp}"
        );
        let mut viewers = Vec::new();
        for viewer in ["tcp", "udp", "http"] {
            let url = server.url(&path);
            viewers.push(thread::spawn(move || {
                let got = framemd5(&["-rtsp_transport", viewer], &url, FRAME_HASHES, TIMEOUT);
                (format!("ffmpeg over {viewer}"), Some(got), Vec::new())
            }));
        }
        for viewer in ["udp", "tcp"] {
            let url = server.url(&path);
            viewers.push(thread::spawn(move || {
                (
                    format!("GStreamer over {viewer}"),
                    None,
                    rtsp_video_hashes(&url, viewer, TIMEOUT),
                )
            }));
        }
        // While it is on the air the statistics show the broadcast: its
        // viewers, and what came in.
        thread::sleep(Duration::from_millis(1500));
        // SAFETY: a plain kill(2) of the server this test started.
        assert_eq!(unsafe { libc::kill(server.pid() as i32, libc::SIGUSR1) }, 0);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let stream = loop {
            let json: Option<serde_json::Value> = std::fs::read_to_string(&stats_json)
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok());
            if let Some(s) = json.as_ref().and_then(|j| j["live"]["streams"].get(&path)) {
                break s.clone();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no statistics of {path} in {}",
                stats_json.display()
            );
            thread::sleep(Duration::from_millis(50));
        };
        assert!(stream["viewers"].as_u64() >= Some(1), "{stream}");
        assert!(
            stream["packets_in"].as_u64() > Some(0) && stream["bitrate_in"].as_f64() > Some(0.0),
            "{stream}"
        );
        let out = wait_with_timeout(publisher, TIMEOUT, &what);
        assert!(
            out.status.success(),
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let min = MIN_SECONDS * H264_FPS as usize;
        for v in viewers {
            let (who, ffmpeg, gst) = v.join().expect("a viewer");
            let who = format!("published over {transport}, {who}");
            match ffmpeg {
                Some(got) => {
                    let video = contiguous_run(&from_file.hashes(0), &got.hashes(0), min)
                        .unwrap_or_else(|e| panic!("{who}: video: {e}"));
                    assert!(
                        key_indexes.contains(&video),
                        "{who}: the first picture is file frame {video}, not a key frame"
                    );
                    contiguous_run(&from_file.hashes(1), &got.hashes(1), min)
                        .unwrap_or_else(|e| panic!("{who}: audio: {e}"));
                }
                None => {
                    let first = contiguous_run(&gst_file, &gst, min).unwrap_or_else(|e| panic!("{who}: {e}"));
                    assert!(
                        key_indexes.contains(&first),
                        "{who}: the first picture is file frame {first}, not a key frame"
                    );
                }
            }
        }
    }
    // A line per publisher and per viewer (5 each), the last a moment after the end.
    let records = server.wait_for_records(12, Duration::from_secs(20));
    for transport in ["tcp", "udp"] {
        let publisher = format!("publish-{transport}");
        assert!(
            records.iter().any(|r| r.get("transport") == Some(&publisher)
                && r.get("cs-uri-stem")
                    .is_some_and(|u| u.ends_with(&format!("cam-{transport}")))),
            "a publisher's access-log line for {transport}: {records:?}"
        );
    }
    let viewers = records
        .iter()
        .filter(|r| r.get("cs-uri-stem").is_some_and(|u| u.starts_with(PREFIX)))
        .count();
    assert!(viewers >= 2 + 10, "a line per publisher and per viewer: {records:?}");
    server.stop_cleanly();
}

/// GStreamer's `rtspclientsink` publishes (ANNOUNCE/RECORD with its Digest
/// answer, interleaved and over UDP), and `rtspsrc` watches: every picture
/// one contiguous run of the file's from a key frame.
#[test]
fn gstreamer_publishes_and_gstreamer_watches() {
    streamalot_tests::require_gst_element("rtspclientsink");
    let file = media().unhinted.clone();
    let server = Server::start(&library("live-gst-publish", &[]), &["--publish", &publish_arg()]);
    let gst_file = file_video_hashes(&file, TIMEOUT);
    for transport in ["tcp", "udp"] {
        let name = format!("gst-{transport}");
        let path = format!("{PREFIX}/{name}");
        let location = format!("location={}", publish_url(&server, &name));
        let protocols = format!("protocols={transport}");
        let (publisher, what) = streamalot_tests::spawn(
            std::process::Command::new("gst-launch-1.0")
                .args([
                    "filesrc",
                    &format!("location={}", file.display()),
                    "!",
                    "qtdemux",
                    "name=d",
                ])
                .args(["d.video_0", "!", "queue", "!", "h264parse", "!"])
                .args(["rtspclientsink", "name=s", &location, &protocols])
                .args(["d.audio_0", "!", "queue", "!", "aacparse", "!", "s."]),
        );
        wait_on_air(&server, &path);
        let got = rtsp_video_hashes(&server.url(&path), "tcp", TIMEOUT);
        // The viewer ended with the broadcast, so the publisher has said
        // TEARDOWN or gone. rtspclientsink may then report an error of its
        // own teardown, or (over UDP, on a loaded machine) not exit at all:
        // what it published is what counts, and it is stopped here.
        let mut publisher = publisher;
        let _ = publisher.kill();
        let _ = publisher.wait();
        let _ = &what;
        contiguous_run(&gst_file, &got, MIN_SECONDS * H264_FPS as usize)
            .unwrap_or_else(|e| panic!("published by GStreamer over {transport}: {e}"));
    }
    server.stop_cleanly();
}

/// `streamalot broadcast`, the playlist broadcaster, publishes a playlist
/// of the hinted clip played twice (ANNOUNCE/RECORD, Digest from its URL,
/// over TCP and UDP) and ffmpeg watches: what it decodes is one contiguous
/// run of the two plays of the file, across the movie boundary.
#[test]
fn the_playlist_broadcaster_publishes_and_ffmpeg_watches() {
    let clip = &media().clip("h264-aac.mp4").path;
    let lib = library("live-broadcaster", &[]);
    let server = Server::start(&lib, &["--publish", &publish_arg()]);
    let playlist = lib.with_extension("ply");
    std::fs::write(&playlist, format!("*PLAY-LIST*\n{}\n", clip.display())).unwrap();
    let once = framemd5(&[], clip.to_str().unwrap(), FRAME_HASHES, TIMEOUT);
    // Of the AAC frames, a play carries those the hint track does.
    let movie = loader::Movie::open(clip).unwrap();
    let aac = streamalot_tests::rtp::hinted_aac_frames(&movie);
    let play = |stream: u32| {
        let mut h = once.hashes(stream);
        if stream == 1 {
            h.truncate(aac);
        }
        h
    };
    for transport in ["tcp", "udp"] {
        let name = format!("tv-{transport}");
        let path = format!("{PREFIX}/{name}");
        let (broadcaster, what) = streamalot_tests::spawn(
            std::process::Command::new(streamalot_tests::streamalot_binary())
                .arg("broadcast")
                .arg(&playlist)
                .args([
                    "--to",
                    &publish_url(&server, &name),
                    "--transport",
                    transport,
                    "--movies",
                    "2",
                ]),
        );
        wait_on_air(&server, &path);
        let got = framemd5(&["-rtsp_transport", "udp"], &server.url(&path), FRAME_HASHES, TIMEOUT);
        let out = wait_with_timeout(broadcaster, TIMEOUT, &what);
        assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
        for stream in [0, 1] {
            let twice: Vec<_> = [play(stream), play(stream)].concat();
            let start = contiguous_run(&twice, &got.hashes(stream), MIN_SECONDS * H264_FPS as usize)
                .unwrap_or_else(|e| panic!("broadcast over {transport}, stream {stream}: {e}"));
            if stream == 0 {
                assert!(
                    start + got.hashes(0).len() > play(0).len(),
                    "over {transport}: the run goes on into the second play"
                );
            }
        }
    }
    server.stop_cleanly();
}
