//! A broadcast described by an `.sdp` file in the media folder: ffmpeg
//! sends RTP (`-f rtp`) to this box's UDP ports and writes the SDP of what
//! it sends into the library; a viewer of that file's path gets the
//! broadcast, decoded as one contiguous run of the file's own frames from
//! a key frame, and ends with a BYE once the sender has gone silent.

use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use streamalot_tests::ffmpeg::{framemd5, FRAME_HASHES};
use streamalot_tests::live::contiguous_run;
use streamalot_tests::media::{media, H264_FPS};
use streamalot_tests::server::{free_udp_run, library, Server};
use streamalot_tests::{spawn, wait_with_timeout};

const TIMEOUT: Duration = Duration::from_secs(60);

#[test]
fn an_sdp_file_of_rtp_sent_to_this_box_plays_to_viewers() {
    let file = media().unhinted.clone();
    let lib = library("live-sdp", &[]);
    let server = Server::start(&lib, &[]);
    let base = free_udp_run(4);
    let sdp = lib.join("cast.sdp");
    let (sender, what) = spawn(
        Command::new("ffmpeg")
            .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-re", "-i"])
            .arg(&file)
            .args([
                "-map",
                "0:v:0",
                "-c",
                "copy",
                "-f",
                "rtp",
                &format!("rtp://127.0.0.1:{base}"),
            ])
            .args([
                "-map",
                "0:a:0",
                "-c",
                "copy",
                "-f",
                "rtp",
                &format!("rtp://127.0.0.1:{}", base + 2),
            ])
            .arg("-sdp_file")
            .arg(&sdp),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::metadata(&sdp).map_or(true, |m| m.len() == 0) {
        assert!(Instant::now() < deadline, "ffmpeg wrote no SDP file");
        thread::sleep(Duration::from_millis(20));
    }
    let url = server.url("cast.sdp");
    let got = framemd5(&["-rtsp_transport", "udp"], &url, FRAME_HASHES, TIMEOUT);
    let out = wait_with_timeout(sender, TIMEOUT, &what);
    assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
    let from_file = framemd5(&[], file.to_str().unwrap(), FRAME_HASHES, TIMEOUT);
    contiguous_run(&from_file.hashes(0), &got.hashes(0), 2 * H264_FPS as usize)
        .unwrap_or_else(|e| panic!("video: {e}"));
    contiguous_run(&from_file.hashes(1), &got.hashes(1), 50).unwrap_or_else(|e| panic!("audio: {e}"));
    server.stop_cleanly();
}
