//! `streamalot broadcast` publishing into ffmpeg's own RTSP server
//! (`ffmpeg -rtsp_flags listen`, libavformat's ANNOUNCE/RECORD receiver),
//! over TCP and UDP: ffmpeg decodes every hinted frame of three movies
//! without an error, its timestamps only going forward.

use std::process::Command;
use std::time::{Duration, Instant};

use streamalot_tests::broadcast;
use streamalot_tests::ffmpeg::FrameHashes;
use streamalot_tests::server::{free_tcp_port, free_udp_run};
use streamalot_tests::{require_tool, spawn, wait_with_timeout};

fn publish(transport: &str) {
    require_tool("ffmpeg");
    let m = broadcast::movies();
    let dir = broadcast::test_dir(&format!("ffmpeg-{transport}"));
    let list = broadcast::playlist(&dir, "tv.ply", &[m.a.display().to_string(), m.b.display().to_string()]);
    let port = free_tcp_port();
    let url = format!("rtsp://127.0.0.1:{port}/live");
    let udp = free_udp_run(8);
    let mut ffmpeg = Command::new("ffmpeg");
    ffmpeg
        .args([
            "-hide_banner",
            "-nostdin",
            "-loglevel",
            "error",
            "-rtsp_flags",
            "listen",
        ])
        .args(["-rtsp_transport", transport, "-timeout", "30"])
        // Its UDP ports from a run known to be free: ffmpeg otherwise tries
        // ports from 5000 up and logs each one in use as an error.
        .args(["-min_port", &udp.to_string(), "-max_port", &(udp + 7).to_string()])
        .args(["-i", &url])
        .args([
            "-map",
            "0:v",
            "-map",
            "0:a",
            "-fps_mode",
            "passthrough",
            "-f",
            "framemd5",
            "-",
        ]);
    let (server, what) = spawn(&mut ffmpeg);
    // ffmpeg's listen mode accepts one connection, so it is not probed:
    // the broadcast is tried until ffmpeg listens (a refused connection
    // costs ffmpeg nothing).
    let deadline = Instant::now() + Duration::from_secs(20);
    let out = loop {
        let out = broadcast::run(&[
            list.to_str().unwrap(),
            "--to",
            &url,
            "--transport",
            transport,
            "--movies",
            "3",
            "--progress",
            "0",
        ]);
        let refused = broadcast::plain(&out.stderr).contains("Connection refused");
        if !refused || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = broadcast::plain(&out.stderr);
    let got = wait_with_timeout(server, Duration::from_secs(30), &what);
    assert!(
        out.status.success(),
        "broadcast failed:\n{log}\nffmpeg:\n{}",
        String::from_utf8_lossy(&got.stderr)
    );
    // ffmpeg's listen mode looks for each stream's port pair by trying to
    // bind, starting inside the pair it gave the stream before, and logs
    // that try at error level: its own noise, not about the stream.
    let errors: String = String::from_utf8_lossy(&got.stderr)
        .lines()
        .filter(|l| !(l.starts_with("[udp @") && l.ends_with("bind failed: Address already in use")))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        errors.trim().is_empty(),
        "ffmpeg reported errors:\n{errors}\nbroadcast:\n{log}"
    );
    let hashes = FrameHashes::parse(&String::from_utf8_lossy(&got.stdout));
    let (va, aa) = broadcast::hinted_frames(&m.a);
    let (vb, ab) = broadcast::hinted_frames(&m.b);
    assert_eq!(hashes.frames(0).len(), 2 * va + vb, "video frames\n{log}");
    assert_eq!(hashes.frames(1).len(), 2 * aa + ab, "audio frames\n{log}");
    for s in [0, 1] {
        for w in hashes.frames(s).windows(2) {
            // Over UDP, ffmpeg 5.1's listen mode hands some B-frames over
            // without a timestamp (`-c copy` shows them as NOPTS; TCP, and
            // ffmpeg reading the same stream from an SDP file, do not), and
            // its decoder then repeats the one before. Never backwards,
            // though.
            if transport == "udp" {
                assert!(w[1].pts >= w[0].pts, "stream {s}: pts {} after {}", w[1].pts, w[0].pts);
            } else {
                assert!(w[1].pts > w[0].pts, "stream {s}: pts {} after {}", w[1].pts, w[0].pts);
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn publishes_into_ffmpeg_over_tcp() {
    publish("tcp");
}

#[test]
fn publishes_into_ffmpeg_over_udp() {
    publish("udp");
}
