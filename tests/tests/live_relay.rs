//! Relays end to end: a second `streamalot serve` plays the first one's
//! live path (ffmpeg publishing into it) and a movie of its library, over
//! TCP and over UDP from the origin, and reflects them under paths of its
//! own; ffmpeg watching those decodes pictures that are one contiguous run
//! of the file's. An origin that restarts is played again; a push relay
//! publishes a live path to another server; and a publisher that drops
//! and comes back within the grace leaves its viewers' RTP unbroken.

use std::thread;
use std::time::Duration;

use streamalot_tests::ffmpeg::{framemd5, FRAME_HASHES};
use streamalot_tests::live::{contiguous_run, publish, publish_arg, publish_url, wait_on_air, PREFIX};
use streamalot_tests::media::{media, H264_FPS};
use streamalot_tests::server::{library, Server};
use streamalot_tests::wait_with_timeout;

const TIMEOUT: Duration = Duration::from_secs(60);
/// A viewer joins within a second or so of a five-second clip, and starts
/// at the key frame before that: at least two seconds of it reach it.
const MIN_FRAMES: usize = 2 * H264_FPS as usize;

#[test]
fn a_second_server_relays_a_live_path_and_a_movie_over_tcp_and_udp() {
    let live_file = media().unhinted.clone();
    let movie = media().clip("h264-aac.mp4").path.clone();
    let origin = Server::start(&library("relay-origin", &[&movie]), &["--publish", &publish_arg()]);
    let cam = origin.url(&format!("{PREFIX}/cam"));
    let film = origin.url("h264-aac.mp4");
    let relays = [
        format!("/r/cam-tcp={cam} tcp"),
        format!("/r/cam-udp={cam} udp"),
        format!("/r/movie-tcp={film} tcp"),
        format!("/r/movie-udp={film} udp"),
    ];
    let mut args = Vec::new();
    for r in &relays {
        args.extend(["--relay", r.as_str()]);
    }
    let relay = Server::start(&library("relay-edge", &[]), &args);
    let live_want = framemd5(&[], live_file.to_str().unwrap(), FRAME_HASHES, TIMEOUT);
    let movie_want = framemd5(&[], movie.to_str().unwrap(), FRAME_HASHES, TIMEOUT);

    let (publisher, what) = publish(&live_file, "tcp", &publish_url(&origin, "cam"));
    wait_on_air(&origin, &format!("{PREFIX}/cam"));
    let mut viewers = Vec::new();
    for (path, viewer) in [
        ("/r/cam-tcp", "tcp"),
        ("/r/cam-udp", "udp"),
        ("/r/movie-tcp", "udp"),
        ("/r/movie-udp", "tcp"),
    ] {
        let url = relay.url(path);
        viewers.push((
            path,
            thread::spawn(move || framemd5(&["-rtsp_transport", viewer], &url, FRAME_HASHES, TIMEOUT)),
        ));
    }
    for (path, v) in viewers {
        let got = v.join().expect("a viewer");
        let want = if path.contains("cam") { &live_want } else { &movie_want };
        contiguous_run(&want.hashes(0), &got.hashes(0), MIN_FRAMES).unwrap_or_else(|e| panic!("{path}: video: {e}"));
        if path.contains("cam") {
            contiguous_run(&want.hashes(1), &got.hashes(1), MIN_FRAMES)
                .unwrap_or_else(|e| panic!("{path}: audio: {e}"));
        }
    }
    let out = wait_with_timeout(publisher, TIMEOUT, &what);
    assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
    // Each relay's broadcast has its access-log line when it ends, with
    // how it came from the origin; the origin logs the relay as a viewer.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let records = relay.access_records();
        let relayed = |path: &str, transport: &str| {
            records.iter().any(|r| {
                r.get("cs-uri-stem").is_some_and(|u| u.ends_with(path))
                    && r.get("transport").is_some_and(|t| t == transport)
            })
        };
        if relayed("/r/cam-tcp", "relay-tcp")
            && relayed("/r/cam-udp", "relay-udp")
            && relayed("/r/movie-tcp", "relay-tcp")
            && relayed("/r/movie-udp", "relay-udp")
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a relay-tcp or relay-udp line per relay: {records:?}"
        );
        thread::sleep(Duration::from_millis(100));
    }
    relay.stop_cleanly();
    origin.stop_cleanly();
}

#[test]
fn a_relay_plays_its_origin_again_after_the_origin_restarts() {
    let movie = media().clip("h264-aac.mp4").path.clone();
    let lib = library("relay-restart-origin", &[&movie]);
    let origin = Server::start(&lib, &[]);
    let port = origin.addr.port();
    let spec = format!("/r/loop={} always", origin.url("h264-aac.mp4"));
    let token = "relay-admin-token";
    let relay = Server::start(
        &library("relay-restart-edge", &[]),
        &["--relay", &spec, "--admin-token", token],
    );
    let want = framemd5(&[], movie.to_str().unwrap(), FRAME_HASHES, TIMEOUT);
    wait_on_air(&relay, "/r/loop");
    origin.stop_cleanly();
    // The origin is gone for a while; the relay tries again meanwhile.
    thread::sleep(Duration::from_secs(2));
    let origin = Server::start_on_port(&lib, port, &[]);
    wait_on_air(&relay, "/r/loop");
    let got = framemd5(
        &["-rtsp_transport", "tcp"],
        &relay.url("/r/loop"),
        FRAME_HASHES,
        TIMEOUT,
    );
    contiguous_run(&want.hashes(0), &got.hashes(0), MIN_FRAMES)
        .unwrap_or_else(|e| panic!("after the origin's restart: {e}"));
    // The admin API's live list shows the relay, its plays and failures.
    let streams = streamalot_tests::admin::api(relay.addr, token, "streams");
    let r = &streams["relays"][0];
    assert_eq!(r["path"], "/r/loop", "{streams}");
    assert_eq!(r["mode"], "always", "{streams}");
    assert!(
        r["plays"].as_u64() >= Some(2) && r["failures"].as_u64() >= Some(1),
        "{streams}"
    );
    assert!(
        r["origin"].as_str().is_some_and(|o| o.ends_with("/h264-aac.mp4")),
        "{streams}"
    );
    let stopped = relay.stop_cleanly();
    let log = format!("{}{}", stopped.stdout, stopped.stderr);
    assert!(log.contains("relay reconnecting"), "{log}");
    assert!(log.matches("relay on the air").count() >= 2, "{log}");
    origin.stop_cleanly();
}

#[test]
fn a_push_relay_publishes_a_live_path_to_another_server() {
    let file = media().unhinted.clone();
    let to = Server::start(&library("push-to", &[]), &["--publish", &publish_arg()]);
    let push = format!("{PREFIX}/cam={}", publish_url(&to, "copy"));
    let from = Server::start(
        &library("push-from", &[]),
        &["--publish", &publish_arg(), "--push", &push],
    );
    let want = framemd5(&[], file.to_str().unwrap(), FRAME_HASHES, TIMEOUT);
    let (publisher, what) = publish(&file, "tcp", &publish_url(&from, "cam"));
    wait_on_air(&to, &format!("{PREFIX}/copy"));
    let got = framemd5(
        &["-rtsp_transport", "tcp"],
        &to.url(&format!("{PREFIX}/copy")),
        FRAME_HASHES,
        TIMEOUT,
    );
    for stream in [0, 1] {
        contiguous_run(&want.hashes(stream), &got.hashes(stream), MIN_FRAMES)
            .unwrap_or_else(|e| panic!("pushed, stream {stream}: {e}"));
    }
    let out = wait_with_timeout(publisher, TIMEOUT, &what);
    assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
    // The push's publish is a publisher's line on the other server.
    let records = to.wait_for_records(2, Duration::from_secs(20));
    assert!(
        records
            .iter()
            .any(|r| r.get("transport").is_some_and(|t| t == "publish-tcp")
                && r.get("cs-uri-stem").is_some_and(|u| u.ends_with("/copy"))),
        "{records:?}"
    );
    from.stop_cleanly();
    to.stop_cleanly();
}

/// Whether an RTCP compound packet holds a BYE.
fn has_bye(mut data: &[u8]) -> bool {
    while data.len() >= 4 {
        if data[1] == 203 {
            return true;
        }
        let len = (usize::from(u16::from_be_bytes([data[2], data[3]])) + 1) * 4;
        data = &data[len.min(data.len())..];
    }
    false
}

#[test]
fn a_publisher_that_comes_back_within_the_grace_continues_its_viewers_rtp() {
    use streamalot_tests::rtp::RtpPacket;
    use streamalot_tests::rtsp::{Connection, Item};
    let file = media().unhinted.clone();
    let server = Server::start(
        &library("live-grace", &[]),
        &["--publish", &publish_arg(), "--publish-grace", "10"],
    );
    let path = format!("{PREFIX}/cam");
    let (mut first, _) = publish(&file, "tcp", &publish_url(&server, "cam"));
    let sdp = wait_on_air(&server, &path);
    assert!(sdp.contains("a=control:trackID=1") && sdp.contains("H264"), "{sdp}");
    let url = server.url(&path);
    let addr = server.addr;
    // One viewer over TCP, connected throughout: every video packet it
    // gets, with when, until the broadcast's BYE.
    let viewer = thread::spawn(move || {
        let mut c = Connection::connect(addr);
        let setup = c.request(
            "SETUP",
            &format!("{url}/trackID=1"),
            &[("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1")],
        );
        assert_eq!(setup.status, 200, "{setup:?}");
        let session = setup.session().expect("a session").to_owned();
        let play = c.request("PLAY", &url, &[("Session", &session), ("Range", "npt=0.000-")]);
        assert_eq!(play.status, 200, "{play:?}");
        c.stream().set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut got = Vec::new();
        let mut frames: Vec<(u8, Vec<u8>)> = c.frames.drain(..).collect();
        loop {
            for (channel, data) in frames.drain(..) {
                match channel {
                    0 => got.push((std::time::Instant::now(), RtpPacket::parse(&data).expect("RTP"))),
                    1 if has_bye(&data) => return got,
                    _ => {}
                }
            }
            match c.read_item() {
                Ok(Some(Item::Frame { channel, data })) => frames.push((channel, data)),
                Ok(Some(Item::Reply(_))) => {}
                other => panic!("the viewer's connection ended without a BYE: {other:?}"),
            }
        }
    });
    thread::sleep(Duration::from_secs(2));
    // The publisher drops (its connection closes), and another comes back
    // a moment later with the same streams.
    first.kill().unwrap();
    first.wait().unwrap();
    thread::sleep(Duration::from_secs(1));
    let back = std::time::Instant::now();
    let (second, what) = publish(&file, "tcp", &publish_url(&server, "cam"));
    let out = wait_with_timeout(second, TIMEOUT, &what);
    assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
    let got = viewer.join().expect("the viewer");
    let before = got.iter().filter(|(at, _)| *at < back).count();
    let after = got.len() - before;
    assert!(
        before >= MIN_FRAMES && after >= MIN_FRAMES,
        "{before} packets before the drop, {after} after"
    );
    let ssrc = got[0].1.ssrc;
    for (i, pair) in got.windows(2).enumerate() {
        let (a, b) = (&pair[0].1, &pair[1].1);
        assert_eq!(b.ssrc, ssrc, "packet {}: the viewer's SSRC changed", i + 1);
        assert_eq!(
            b.sequence,
            a.sequence.wrapping_add(1),
            "packet {}: a sequence gap or reset ({} after {})",
            i + 1,
            b.sequence,
            a.sequence
        );
        // One clock: no jump to another publisher's random base (within
        // ten seconds of 90 kHz either way).
        let step = b.timestamp.wrapping_sub(a.timestamp) as i32;
        assert!(
            step.unsigned_abs() < 900_000,
            "packet {}: the timestamp jumped from {} to {}",
            i + 1,
            a.timestamp,
            b.timestamp
        );
    }
    server.stop_cleanly();
}

/// GStreamer's RTSP server as an origin (over TCP and UDP: it plays the
/// movie from the start for each client) and, in record mode with Digest,
/// as a push relay's target, which decodes what it is sent.
#[test]
fn gstreamers_rtsp_server_as_an_origin_and_as_a_push_target() {
    use streamalot_tests::peers::GstPeer;
    streamalot_tests::require_tool("gst-launch-1.0");
    let movie = media().clip("h264-aac.mp4").path.clone();
    let want = framemd5(&[], movie.to_str().unwrap(), FRAME_HASHES, TIMEOUT);
    let mut origin = GstPeer::start(&movie, "relay-gst-origin");
    let relays = [
        format!("/r/gst-tcp={} tcp", origin.url),
        format!("/r/gst-udp={} udp", origin.url),
    ];
    let edge = Server::start(
        &library("relay-gst-edge", &[]),
        &["--relay", &relays[0], "--relay", &relays[1]],
    );
    for path in ["/r/gst-tcp", "/r/gst-udp"] {
        let got = framemd5(&["-rtsp_transport", "tcp"], &edge.url(path), FRAME_HASHES, TIMEOUT);
        contiguous_run(&want.hashes(0), &got.hashes(0), MIN_FRAMES)
            .unwrap_or_else(|e| panic!("{path}, relayed from GStreamer: {e}"));
    }
    edge.stop_cleanly();
    origin.stop();

    let dir = streamalot_tests::scratch_dir().join("relay-gst-record");
    std::fs::create_dir_all(&dir).unwrap();
    let report = dir.join("received.txt");
    let _ = std::fs::remove_file(&report);
    let mut target = GstPeer::record_with(&report, "relay-gst-record-peer", &["--user", "bob:s3cret"]);
    let to = target.url.replacen("rtsp://", "rtsp://bob:s3cret@", 1);
    let push = format!("{PREFIX}/cam={to}");
    let from = Server::start(
        &library("relay-gst-push", &[]),
        &["--publish", &publish_arg(), "--push", &push],
    );
    let (publisher, what) = publish(&media().unhinted, "tcp", &publish_url(&from, "cam"));
    let out = wait_with_timeout(publisher, TIMEOUT, &what);
    assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
    thread::sleep(Duration::from_millis(500));
    target.stop();
    let text = std::fs::read_to_string(&report).unwrap_or_else(|e| panic!("{}: {e}", report.display()));
    let decoded = text.lines().filter(|l| l.starts_with("video ")).count();
    assert!(
        text.lines().any(|l| l == "publish") && decoded >= MIN_FRAMES,
        "GStreamer decoded {decoded} pictures of the push:\n{text}"
    );
    assert!(
        !text.lines().any(|l| l.starts_with("error")),
        "GStreamer's pipeline failed:\n{text}"
    );
    from.stop_cleanly();
}
