//! Hostile publishers: each gets its status code or has its packets
//! refused, and nothing else is disturbed: a broadcast ffmpeg publishes
//! meanwhile reaches its ffmpeg viewer as a contiguous run of the file's
//! frames, and a movie played on demand at the same time is bit for bit
//! the file's.
//!
//! The hostile ones: no credential or the wrong one (401, with Digest and
//! Basic challenges), a path no rule allows (403), a body that is not SDP
//! (415), SDP that does not parse (400) or has no RTP stream (406), RECORD
//! without ANNOUNCE (454), a record SETUP on a connection that announced
//! nothing (455), a second publisher for a busy path (455), and one that
//! gets on the air and then sends garbage, another SSRC, a payload type it
//! did not announce, and a flood past its byte budget.

use std::io::Write;
use std::thread;
use std::time::Duration;

use streamalot_tests::ffmpeg::{differences_from_file, framemd5, FRAME_HASHES};
use streamalot_tests::live::{contiguous_run, publish, publish_arg, publish_url, wait_on_air, PASSWORD, PREFIX, USER};
use streamalot_tests::media::media;
use streamalot_tests::rtsp::{base64, Connection};
use streamalot_tests::server::{library, Server};
use streamalot_tests::wait_with_timeout;

const TIMEOUT: Duration = Duration::from_secs(60);
const SDP: &str = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=hostile\r\nt=0 0\r\n\
                   m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:streamid=0\r\n";

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64(format!("{user}:{password}").as_bytes()))
}

fn rtp(pt: u8, seq: u16, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, pt, (seq >> 8) as u8, seq as u8, 0, 0, 0, 1];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

fn frame(channel: u8, data: &[u8]) -> Vec<u8> {
    let mut f = vec![b'$', channel, (data.len() >> 8) as u8, data.len() as u8];
    f.extend_from_slice(data);
    f
}

#[test]
fn hostile_publishers_get_their_status_codes_and_disturb_nothing() {
    let movie = &media().clip("h264-aac.mp4").path;
    let file = media().unhinted.clone();
    let server = Server::start(
        &library("live-hostile", &[movie]),
        &["--publish", &publish_arg(), "--publish-max-kbps", "4000"],
    );
    let (publisher, what) = publish(&file, "tcp", &publish_url(&server, "good"));
    let good = format!("{PREFIX}/good");
    wait_on_air(&server, &good);
    let viewer = {
        let url = server.url(&good);
        thread::spawn(move || framemd5(&["-rtsp_transport", "tcp"], &url, FRAME_HASHES, TIMEOUT))
    };
    let vod = {
        let url = server.url("h264-aac.mp4");
        thread::spawn(move || framemd5(&["-rtsp_transport", "udp"], &url, FRAME_HASHES, TIMEOUT))
    };

    let auth = basic(USER, PASSWORD);
    let url = |path: &str| server.url(path);
    let announce = |path: &str, headers: &[(&str, &str)], body: &[u8]| {
        let mut c = Connection::connect(server.addr);
        let mut h: Vec<(&str, &str)> = headers.to_vec();
        let len = body.len().to_string();
        h.push(("Content-Length", &len));
        // The body goes right behind the head.
        let mut text = format!("ANNOUNCE {} RTSP/1.0\r\nCSeq: 1\r\n", url(path));
        for (n, v) in &h {
            text.push_str(&format!("{n}: {v}\r\n"));
        }
        text.push_str("\r\n");
        let mut bytes = text.into_bytes();
        bytes.extend_from_slice(body);
        c.write_raw(&bytes).unwrap();
        let r = c.read_reply().expect("an answer");
        (c, r)
    };
    let sdp = [("Content-Type", "application/sdp")];
    let (_, r) = announce("/live/x", &sdp, SDP.as_bytes());
    assert_eq!(r.status, 401, "no credential");
    let challenges: Vec<&str> = r
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("WWW-Authenticate"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert!(
        challenges.iter().any(|c| c.starts_with("Digest ") && c.contains("MD5")),
        "{challenges:?}"
    );
    assert!(challenges.iter().any(|c| c.starts_with("Basic ")), "{challenges:?}");
    let wrong = basic(USER, "guess");
    let (_, r) = announce("/live/x", &[sdp[0], ("Authorization", &wrong)], SDP.as_bytes());
    assert_eq!(r.status, 401, "wrong password");
    let (_, r) = announce("/elsewhere/x", &[sdp[0], ("Authorization", &auth)], SDP.as_bytes());
    assert_eq!(r.status, 403, "a path no rule allows");
    let (_, r) = announce(
        "/live/x",
        &[("Content-Type", "text/plain"), ("Authorization", &auth)],
        SDP.as_bytes(),
    );
    assert_eq!(r.status, 415, "not SDP");
    let (_, r) = announce("/live/x", &[sdp[0], ("Authorization", &auth)], b"this is not SDP\r\n");
    assert_eq!(r.status, 400, "SDP that does not parse");
    let (_, r) = announce(
        "/live/x",
        &[sdp[0], ("Authorization", &auth)],
        b"v=0\r\ns=empty\r\nt=0 0\r\n",
    );
    assert_eq!(r.status, 406, "no stream");
    let (_, r) = announce(&good, &[sdp[0], ("Authorization", &auth)], SDP.as_bytes());
    assert_eq!(r.status, 455, "a second publisher for a busy path");
    let mut c = Connection::connect(server.addr);
    let r = c.request("RECORD", &url("/live/x"), &[("Authorization", &auth)]);
    assert_eq!(r.status, 454, "RECORD without ANNOUNCE");
    let r = c.request(
        "SETUP",
        &url("/live/x/streamid=0"),
        &[
            ("Authorization", &auth),
            ("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1;mode=record"),
        ],
    );
    assert_eq!(r.status, 455, "a record SETUP on a connection that announced nothing");
    let r = c.request(
        "SETUP",
        &url("/elsewhere/x/streamid=0"),
        &[
            ("Authorization", &auth),
            ("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1;mode=record"),
        ],
    );
    assert_eq!(r.status, 403, "a record SETUP on a path no rule allows");

    // On the air, then misbehaving.
    let (mut c, r) = announce("/live/bad", &[sdp[0], ("Authorization", &auth)], SDP.as_bytes());
    assert_eq!(r.status, 200, "{r:?}");
    let session = r.session().expect("a session").to_owned();
    let r = c.request(
        "SETUP",
        &url("/live/bad/streamid=0"),
        &[
            ("Authorization", &auth),
            ("Session", &session),
            ("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1;mode=record"),
        ],
    );
    assert_eq!(r.status, 200, "{r:?}");
    let r = c.request(
        "RECORD",
        &url("/live/bad"),
        &[("Authorization", &auth), ("Session", &session)],
    );
    assert_eq!(r.status, 200, "{r:?}");
    let mut bytes = frame(0, &rtp(96, 1, 0xabc, &[0x65, 1, 2, 3]));
    bytes.extend(frame(0, b"garbage, not RTP"));
    bytes.extend(frame(0, &rtp(96, 2, 0xdef, &[0x41, 1])));
    bytes.extend(frame(0, &rtp(100, 3, 0xabc, &[0x41, 1])));
    bytes.extend(frame(5, &rtp(96, 3, 0xabc, &[0x41, 1])));
    c.write_raw(&bytes).unwrap();
    // A flood: 40 MB as fast as the connection takes it.
    let payload = vec![0x41u8; 1400];
    let mut flood = Vec::new();
    for seq in 0..1000u16 {
        flood.extend(frame(0, &rtp(96, seq.wrapping_add(10), 0xabc, &payload)));
    }
    let mut stream = c.stream().try_clone().unwrap();
    for _ in 0..28 {
        stream.write_all(&flood).unwrap();
    }
    let r = c.request(
        "TEARDOWN",
        &url("/live/bad"),
        &[("Authorization", &auth), ("Session", &session)],
    );
    assert_eq!(r.status, 200, "the flooding publisher's connection still works");

    // Nobody else noticed.
    let out = wait_with_timeout(publisher, TIMEOUT, &what);
    assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
    let got = viewer.join().unwrap();
    let from_file = framemd5(&[], file.to_str().unwrap(), FRAME_HASHES, TIMEOUT);
    for stream in [0, 1] {
        contiguous_run(&from_file.hashes(stream), &got.hashes(stream), 50)
            .unwrap_or_else(|e| panic!("the good broadcast's stream {stream}: {e}"));
    }
    let vod = vod.join().unwrap();
    assert_eq!(
        differences_from_file(movie, &vod, TIMEOUT),
        Vec::<String>::new(),
        "the movie played on demand"
    );
    let stopped = server.stop_cleanly();
    for refusal in ["not an RTP packet", "SSRC", "payload type", "byte budget"] {
        assert!(
            stopped.stderr.contains(refusal),
            "the log says why packets were refused ({refusal}):\n{}",
            stopped.stderr
        );
    }
}
