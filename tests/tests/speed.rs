//! `Speed` and QuickTime's overbuffer window, end to end with rtpload.
//!
//! - `Speed: 2` (RFC 2326 section 12.35) over interleaved TCP: the server
//!   grants it and sends the media at twice real time, so rtpload receives
//!   about two seconds of media per second of arrival, by its own measure
//!   (RTP-timestamp span against the span of arrival times, summed over
//!   streams). Plain UDP is answered `Speed: 1` and plays at real time.
//!   Instant-On is off, so that the speed alone makes the difference.
//! - `ob` in `QTSS` reports over UDP with `x-Dynamic-Rate: 1`: what the
//!   server sends ahead and the client holds before it is due (by the
//!   client's own measure, played at real time from its first packet)
//!   stays within the window; without a window it goes well past it.
//!
//! No wall time is asserted: the ratios compare the client's own media and
//! arrival figures with bounds a stall would not reach.

use std::path::Path;
use std::time::Duration;

use streamalot_tests::media::media;
use streamalot_tests::server::{library, Server};
use streamalot_tests::{describe, rtpload_binary, run_within, scratch_dir};

const TIMEOUT: Duration = Duration::from_secs(60);

/// rtpload against `url`, one session for `seconds`, with `args`; its
/// summary.
fn rtpload(url: &str, tag: &str, seconds: u32, args: &[&str]) -> serde_json::Value {
    let out = scratch_dir().join(format!("speed-rtpload-{tag}"));
    let _ = std::fs::remove_dir_all(&out);
    let mut cmd = std::process::Command::new(rtpload_binary());
    cmd.arg(url)
        .args(["--sessions", "1", "--duration", &seconds.to_string(), "--quiet"])
        .args(args)
        .arg("--out")
        .arg(&out);
    let run = run_within(&mut cmd, TIMEOUT);
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{} failed:\n{stdout}\n{stderr}", describe(&cmd));
    let text = std::fs::read_to_string(out.join("summary.json")).expect("rtpload's summary.json");
    let summary: serde_json::Value = serde_json::from_str(&text).expect("the summary JSON");
    println!("rtpload {tag}: {}", summary["delivery"]);
    summary
}

fn name(clip: &Path) -> &str {
    clip.file_name().and_then(|n| n.to_str()).expect("a file name")
}

#[test]
fn speed_two_over_tcp_delivers_the_media_at_twice_real_time_and_plain_udp_gets_speed_one() {
    let clip = media().h264_mp4();
    let server = Server::start(&library("speed", &[clip]), &["--no-instant-on"]);
    let url = server.url(name(clip));
    // The 5 s clip at twice real time takes 2.5 s: 2 s of it is all media
    // arriving at the speed.
    let fast = rtpload(&url, "tcp-2", 2, &["--transport", "tcp", "--speed", "2"]);
    let d = &fast["delivery"];
    assert_eq!(d["speed_granted_max"], 2.0, "{d}");
    let ratio = d["media_per_arrival_s"].as_f64().expect("a ratio");
    assert!(ratio >= 1.6, "at Speed 2, {ratio} s of media per second of arrival");
    assert_eq!(fast["packets"]["lost"], 0);
    // Over plain UDP the same request is answered 1.
    let udp = rtpload(&url, "udp-2", 2, &["--transport", "udp", "--speed", "2"]);
    let d = &udp["delivery"];
    assert_eq!(d["speed_granted_max"], 1.0, "{d}");
    let ratio = d["media_per_arrival_s"].as_f64().expect("a ratio");
    assert!(ratio < 1.4, "at Speed 1, {ratio} s of media per second of arrival");
    let stopped = server.stop();
    assert!(!stopped.stderr.contains("panicked"), "{}", stopped.stderr);
}

#[test]
fn the_clients_overbuffer_window_bounds_what_it_holds_ahead() {
    let clip = media().h264_mp4();
    let size = std::fs::metadata(clip).expect("the clip").len();
    // A window of about a second of the 5 s clip, where the default burst
    // holds up to 4 s ahead.
    let window = size / 5;
    let server = Server::start(&library("overbuffer", &[clip]), &[]);
    let url = server.url(name(clip));
    let w = window.to_string();
    let bounded = rtpload(
        &url,
        "window",
        3,
        &["--transport", "udp", "--dynamic-rate", "--overbuffer-window", &w],
    );
    let free = rtpload(&url, "no-window", 3, &["--transport", "udp", "--dynamic-rate"]);
    let held = |s: &serde_json::Value| s["delivery"]["max_ahead_bytes"].as_u64().expect("a count");
    let (held_bounded, held_free) = (held(&bounded), held(&free));
    println!("window {window} B: held at most {held_bounded} B ahead; without a window {held_free} B");
    // The client judges "due" by the newest timestamp, which runs ahead of
    // the hinted send times by the B-frames' reordering: a few packets of
    // slack.
    assert!(
        held_bounded <= window + window / 4 + 6_000,
        "{held_bounded} B held ahead with a window of {window} B"
    );
    assert!(held_free > 2 * window, "without a window only {held_free} B ahead");
    // Within its window the session was still sent ahead: it held more
    // than one sent at real time does (the reordering's few packets).
    let real_time = held(&rtpload(&url, "real-time", 3, &["--transport", "udp"]));
    assert!(
        held_bounded > real_time + window / 4,
        "{held_bounded} B held ahead with the window, {real_time} B at real time"
    );
    assert_eq!(bounded["packets"]["lost"], 0);
    let stopped = server.stop();
    assert!(!stopped.stderr.contains("panicked"), "{}", stopped.stderr);
}
