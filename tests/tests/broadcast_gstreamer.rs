//! `streamalot broadcast` publishing into an independent RTSP server:
//! GStreamer's, in record mode (`tools/gst-rtsp-peer --record`), which
//! depayloads and decodes what it receives with its own elements. A looped
//! playlist of three one-second movies, five movies long (four boundaries),
//! over TCP and over UDP: every video frame and audio buffer decoded, no
//! warning or error from GStreamer's pipeline, and presentation timestamps
//! that only go forward across the boundaries.

use std::time::Duration;

use streamalot_tests::broadcast::{self, SECONDS};
use streamalot_tests::peers::GstPeer;

const MOVIES: u32 = 5;

fn publish(transport: &str) {
    let m = broadcast::movies();
    let dir = broadcast::test_dir(&format!("gst-{transport}"));
    let list = broadcast::playlist(
        &dir,
        "tv.ply",
        &[
            m.a.display().to_string(),
            m.b.display().to_string(),
            m.c.display().to_string(),
        ],
    );
    let report = dir.join("received.txt");
    let mut peer = GstPeer::record(&report, &format!("gst-{transport}-peer"));
    let out = broadcast::run(&[
        list.to_str().unwrap(),
        "--to",
        &peer.url,
        "--transport",
        transport,
        "--movies",
        &MOVIES.to_string(),
        "--progress",
        "0",
    ]);
    let log = broadcast::plain(&out.stderr);
    assert!(out.status.success(), "broadcast failed ({}):\n{log}", out.status);
    // Let the receiver's jitter buffer hand over its last packets.
    std::thread::sleep(Duration::from_millis(500));
    peer.stop();
    let text = std::fs::read_to_string(&report).unwrap_or_else(|e| panic!("{}: {e}", report.display()));
    let peer_err = std::fs::read_to_string(&peer.output).unwrap_or_default();
    let context = format!(
        "broadcast:\n{log}\nGStreamer said:\n{peer_err}\nits report: {}",
        report.display()
    );

    for n in 1..=MOVIES {
        assert!(log.contains(&format!("movie {n} starts:")), "{context}");
    }
    assert!(log.contains("recording at rtsp://"), "{context}");
    let problems: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("warning") || l.starts_with("error"))
        .collect();
    assert!(
        problems.is_empty(),
        "GStreamer's pipeline complained: {problems:#?}\n{context}"
    );
    assert_eq!(text.lines().filter(|l| *l == "publish").count(), 1, "{context}");
    // What the five movies' hint tracks carry: a, b, c, a, b.
    let per_movie: Vec<(usize, usize)> = [&m.a, &m.b, &m.c, &m.a, &m.b]
        .iter()
        .map(|p| broadcast::hinted_frames(p))
        .collect();
    let video_frames: usize = per_movie.iter().map(|f| f.0).sum();
    let audio_frames: usize = per_movie.iter().map(|f| f.1).sum();
    for (kind, expected) in [("video", video_frames as f64), ("audio", audio_frames as f64)] {
        let pts: Vec<i64> = text
            .lines()
            .filter_map(|l| l.strip_prefix(kind).map(|v| v.trim().parse::<i64>().unwrap()))
            .collect();
        // A frame or two at the very start may go while the receiver sets up.
        assert!(
            pts.len() as f64 >= expected - 3.0,
            "{kind}: {} decoded of {expected}\n{context}",
            pts.len()
        );
        assert!(
            pts.iter().all(|&p| p >= 0),
            "{kind}: a buffer without a timestamp\n{context}"
        );
        for (i, w) in pts.windows(2).enumerate() {
            assert!(w[1] > w[0], "{kind} {}: pts {} after {}\n{context}", i + 1, w[1], w[0]);
        }
        // Five movies' worth of time, within a frame or two.
        let span = (pts[pts.len() - 1] - pts[0]) as f64 / 1e9;
        assert!(
            span > f64::from(MOVIES * SECONDS) - 0.2,
            "{kind}: only {span:.2} s of timestamps\n{context}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn publishes_a_looped_playlist_into_gstreamer_over_tcp() {
    publish("tcp");
}

#[test]
fn publishes_a_looped_playlist_into_gstreamer_over_udp() {
    publish("udp");
}

/// A server that asks for credentials: GStreamer's Digest (RFC 2069) and
/// Basic, answered from the URL's user and password; the wrong password
/// and none are each refused with a message that says so.
#[test]
fn publishes_with_digest_and_basic_credentials() {
    let m = broadcast::movies();
    for auth in ["digest", "basic"] {
        let dir = broadcast::test_dir(&format!("gst-auth-{auth}"));
        let list = broadcast::playlist(&dir, "tv.ply", &[m.a.display().to_string()]);
        let report = dir.join("received.txt");
        let mut peer = GstPeer::record_with(
            &report,
            &format!("gst-auth-{auth}-peer"),
            &["--user", "bob:s3 cret", "--auth", auth],
        );
        let with = |userinfo: &str| peer.url.replacen("rtsp://", &format!("rtsp://{userinfo}"), 1);
        let run = |url: &str| {
            let out = broadcast::run(&[list.to_str().unwrap(), "--to", url, "--movies", "1", "--progress", "0"]);
            (out.status.success(), broadcast::plain(&out.stderr))
        };
        let (ok, log) = run(&with("bob:wrong@"));
        assert!(
            !ok && log.contains("refused the credentials for ANNOUNCE"),
            "{auth}: {log}"
        );
        assert!(!log.contains("wrong"), "{auth}: the password is never shown: {log}");
        let (ok, log) = run(&peer.url);
        assert!(!ok && log.contains("asks for credentials (401)"), "{auth}: {log}");
        let (ok, log) = run(&with("bob:s3%20cret@"));
        assert!(ok, "{auth}: {log}");
        std::thread::sleep(Duration::from_millis(500));
        peer.stop();
        let text = std::fs::read_to_string(&report).unwrap();
        let (video, _) = broadcast::hinted_frames(&m.a);
        let decoded = text.lines().filter(|l| l.starts_with("video ")).count();
        assert!(decoded + 3 >= video, "{auth}: {decoded} of {video} frames\n{text}");
        assert!(
            !text.lines().any(|l| l.starts_with("error") || l.starts_with("warning")),
            "{text}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
