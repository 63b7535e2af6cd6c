//! A live broadcast's life: before its publisher a viewer gets 404; a
//! viewer joining mid-stream starts on a later key frame and decodes a
//! contiguous run of the file's frames; a viewer that stops reading (with
//! small buffers on both sides) does not cost another viewer a single
//! frame; when the publisher goes, every
//! viewer ends cleanly; when it comes back, new viewers play again.

use std::thread;
use std::time::Duration;

use streamalot_tests::ffmpeg::{framemd5, key_frames, FrameHashes, FRAME_HASHES};
use streamalot_tests::live::{contiguous_run, publish, publish_arg, publish_url, wait_on_air, PREFIX};
use streamalot_tests::media::{media, H264_FPS, H264_GOP};
use streamalot_tests::rtsp::Connection;
use streamalot_tests::server::{library, Server};
use streamalot_tests::wait_with_timeout;

const TIMEOUT: Duration = Duration::from_secs(60);

/// The indexes of the file's video frames that are key frames.
fn key_indexes(file: &std::path::Path, from_file: &FrameHashes) -> Vec<usize> {
    let keys = key_frames(file);
    let tb = from_file.time_base[&0];
    from_file
        .frames(0)
        .iter()
        .enumerate()
        .filter(|(_, f)| keys.contains(&(f.pts * tb.0 * 1_000_000_000 / tb.1)))
        .map(|(i, _)| i)
        .collect()
}

#[test]
fn a_broadcast_from_before_its_publisher_to_after_its_return() {
    let file = media().unhinted.clone();
    let server = Server::start(
        &library("live-lifecycle", &[]),
        &["--publish", &publish_arg(), "--tcp-queue-bytes", "4096"],
    );
    let path = format!("{PREFIX}/show");
    let from_file = framemd5(&[], file.to_str().unwrap(), FRAME_HASHES, TIMEOUT);
    let keys = key_indexes(&file, &from_file);

    // No publisher yet: nothing to see.
    let mut c = Connection::connect(server.addr);
    assert_eq!(c.request("DESCRIBE", &server.url(&path), &[]).status, 404);
    let r = c.request(
        "SETUP",
        &server.url(&format!("{path}/trackID=1")),
        &[("Transport", "RTP/AVP;unicast;client_port=9000-9001")],
    );
    assert_eq!(r.status, 404);

    for round in ["first", "back again"] {
        let (publisher, what) = publish(&file, "tcp", &publish_url(&server, "show"));
        wait_on_air(&server, &path);
        // A viewer that sets up, plays and then reads nothing.
        let mut stalled = Connection::connect(server.addr);
        // Small buffers on its side too, so that the server's queue for it
        // fills within the clip.
        socket2::SockRef::from(stalled.stream())
            .set_recv_buffer_size(2048)
            .unwrap();
        let r = stalled.request(
            "SETUP",
            &server.url(&format!("{path}/trackID=1")),
            &[("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1")],
        );
        assert_eq!(r.status, 200, "{r:?}");
        let session = r.session().unwrap().to_owned();
        assert_eq!(
            stalled
                .request("PLAY", &server.url(&path), &[("Session", &session)])
                .status,
            200
        );
        // One viewer from the start, one that joins two key frames in.
        let early = {
            let url = server.url(&path);
            thread::spawn(move || framemd5(&["-rtsp_transport", "udp"], &url, FRAME_HASHES, TIMEOUT))
        };
        thread::sleep(Duration::from_millis(u64::from(2 * H264_GOP * 1000 / H264_FPS) + 300));
        let late = {
            let url = server.url(&path);
            thread::spawn(move || framemd5(&["-rtsp_transport", "tcp"], &url, FRAME_HASHES, TIMEOUT))
        };
        let out = wait_with_timeout(publisher, TIMEOUT, &what);
        assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
        // framemd5 returns only when ffmpeg exited successfully: each
        // viewer ended cleanly with the broadcast (its BYE).
        let early = early.join().expect("the early viewer");
        let late = late.join().expect("the late viewer");
        let early_start = contiguous_run(&from_file.hashes(0), &early.hashes(0), 2 * H264_FPS as usize)
            .unwrap_or_else(|e| panic!("{round}: early viewer's video: {e}"));
        let late_start = contiguous_run(&from_file.hashes(0), &late.hashes(0), H264_FPS as usize)
            .unwrap_or_else(|e| panic!("{round}: late viewer's video: {e}"));
        for (who, got) in [("early", &early), ("late", &late)] {
            contiguous_run(&from_file.hashes(1), &got.hashes(1), 20)
                .unwrap_or_else(|e| panic!("{round}: {who} viewer's audio: {e}"));
        }
        assert!(
            keys.contains(&early_start) && keys.contains(&late_start),
            "{round}: both start on key frames"
        );
        assert!(
            late_start >= 2 * H264_GOP as usize,
            "{round}: the late viewer starts at a later key frame (frame {late_start}), not the first"
        );
        // The early one saw everything from its start to the end, although
        // another viewer stopped reading.
        assert_eq!(
            early_start + early.hashes(0).len(),
            from_file.hashes(0).len(),
            "{round}: the early viewer lost no frame to the stalled one"
        );
        drop(stalled);
        // Gone: the path is empty again.
        let mut c = Connection::connect(server.addr);
        assert_eq!(c.request("DESCRIBE", &server.url(&path), &[]).status, 404, "{round}");
    }
    server.stop_cleanly();
}

/// The admin API shows the publisher and its broadcast, with its viewer,
/// and stopping the publisher there takes the broadcast off the air.
#[test]
fn the_admin_api_lists_and_stops_publishers() {
    use streamalot_tests::admin::{api, bearer, http};
    const TOKEN: &str = "live-admin-token";
    let file = media().unhinted.clone();
    let server = Server::start(
        &library("live-admin", &[]),
        &["--publish", &publish_arg(), "--admin-token", TOKEN],
    );
    let path = format!("{PREFIX}/admin");
    let (publisher, what) = publish(&file, "tcp", &publish_url(&server, "admin"));
    wait_on_air(&server, &path);
    let viewer = {
        let url = server.url(&path);
        thread::spawn(move || framemd5(&["-rtsp_transport", "tcp"], &url, FRAME_HASHES, TIMEOUT))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let streams = loop {
        let streams = api(server.addr, TOKEN, "streams")["streams"].clone();
        if streams[0]["viewers"].as_u64() >= Some(1) {
            break streams;
        }
        assert!(std::time::Instant::now() < deadline, "no viewer in {streams}");
        thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(streams[0]["path"], path.as_str(), "{streams}");
    assert_eq!(streams[0]["streams"].as_array().map(Vec::len), Some(2), "{streams}");
    let publishers = api(server.addr, TOKEN, "publishers")["publishers"].clone();
    let p = &publishers[0];
    assert_eq!(
        (p["path"].as_str(), p["state"].as_str(), p["transport"].as_str()),
        (Some(path.as_str()), Some("recording"), Some("tcp")),
        "{p}"
    );
    assert_eq!(p["user"], "caster");
    assert!(p["packets_in"].as_u64() > Some(0), "{p}");
    let id = p["id"].as_str().unwrap().to_owned();
    let auth = bearer(TOKEN);
    let stop = http(
        server.addr,
        "DELETE",
        &format!("/api/v1/publishers/{id}"),
        &[("Authorization", &auth)],
        &[],
    );
    assert_eq!(stop.status, 200, "{}", stop.text());
    // Off the air: the viewer ends with its BYE, the path is empty.
    let got = viewer.join().expect("the viewer ended");
    assert!(!got.hashes(0).is_empty());
    let mut c = Connection::connect(server.addr);
    assert_eq!(c.request("DESCRIBE", &server.url(&path), &[]).status, 404);
    assert_eq!(
        api(server.addr, TOKEN, "publishers")["publishers"],
        serde_json::json!([])
    );
    let again = http(
        server.addr,
        "DELETE",
        &format!("/api/v1/publishers/{id}"),
        &[("Authorization", &auth)],
        &[],
    );
    assert_eq!(again.status, 404);
    // The publisher itself carries on to its end, unheard.
    let _ = wait_with_timeout(publisher, TIMEOUT, &what);
    server.stop_cleanly();
}
