//! Live load, end to end, with rtpload as both sides: `rtpload --publish`
//! publishes a hinted movie (ANNOUNCE/RECORD, Digest from its URL, over
//! TCP and over UDP) and ffmpeg plays the live path; rtpload's viewers each
//! time their first key frame, and an ffmpeg viewer joining mid-stream
//! decodes its first picture without a complaint; a viewer that stops
//! reading costs the others nothing while its drops are counted, and
//! `/metrics` shows the broadcast's series by path.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use streamalot_tests::admin::{http, parse_prometheus, sum_of, PromSample};
use streamalot_tests::ffmpeg::{framemd5, key_frames, FrameHashes, FRAME_HASHES};
use streamalot_tests::live::{contiguous_run, publish_arg, publish_url, wait_on_air, PREFIX};
use streamalot_tests::media::{media, H264_FPS};
use streamalot_tests::rtsp::Connection;
use streamalot_tests::server::{library, Server};
use streamalot_tests::{describe, rtpload_binary, run_within, scratch_dir, spawn, wait_with_timeout};

const TIMEOUT: Duration = Duration::from_secs(60);

/// A child process killed when the test is over, whichever way it ends.
struct Running {
    child: Option<Child>,
    what: String,
}

impl Running {
    fn start(cmd: &mut Command) -> Running {
        let (child, what) = spawn(cmd);
        Running {
            child: Some(child),
            what,
        }
    }

    /// Waits for it to end and returns its output; panics unless it succeeded.
    fn succeed(mut self) -> (String, String) {
        let child = self.child.take().expect("not yet waited for");
        let out = wait_with_timeout(child, TIMEOUT, &self.what);
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        assert!(
            out.status.success(),
            "{} failed ({}):\n{stdout}\n{stderr}",
            self.what,
            out.status
        );
        (stdout, stderr)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `rtpload --publish FILE` to `url` over `transport`, with `extra` options.
fn rtpload_publishing(file: &Path, transport: &str, url: &str, extra: &[&str]) -> Command {
    let mut cmd = Command::new(rtpload_binary());
    cmd.arg("--publish")
        .arg(file)
        .args(["--publish-transport", transport, "--quiet"])
        .args(extra)
        .arg(url);
    cmd
}

/// The indexes of the file's video frames that are key frames.
fn key_indexes(file: &Path, from_file: &FrameHashes) -> Vec<usize> {
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

fn out_dir(name: &str) -> PathBuf {
    let dir = scratch_dir().join(name);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn rtpload_publishes_over_tcp_and_udp_and_ffmpeg_plays_the_live_path() {
    let file = media().h264_mp4().to_owned();
    let server = Server::start(&library("live-load-publish", &[]), &["--publish", &publish_arg()]);
    let from_file = framemd5(&[], file.to_str().unwrap(), FRAME_HASHES, TIMEOUT);
    let keys = key_indexes(&file, &from_file);
    for (publisher, viewer) in [("tcp", "udp"), ("udp", "tcp")] {
        let name = format!("rtpload-{publisher}");
        let path = format!("{PREFIX}/{name}");
        // No viewers of its own: it publishes until the movie has played out.
        let rtpload = Running::start(&mut rtpload_publishing(
            &file,
            publisher,
            &publish_url(&server, &name),
            &["--sessions", "0", "--duration", "60"],
        ));
        let sdp = wait_on_air(&server, &path);
        assert!(
            sdp.contains("H264/90000") && sdp.contains("a=control:trackID=2"),
            "{sdp}"
        );
        let got = framemd5(&["-rtsp_transport", viewer], &server.url(&path), FRAME_HASHES, TIMEOUT);
        let (stdout, _) = rtpload.succeed();
        let who = format!("published by rtpload over {publisher}, watched by ffmpeg over {viewer}");
        assert!(
            stdout.contains(&format!("over {} to", publisher.to_uppercase()))
                && stdout.contains("the movie played out"),
            "{who}: {stdout}"
        );
        let start = contiguous_run(&from_file.hashes(0), &got.hashes(0), 2 * H264_FPS as usize)
            .unwrap_or_else(|e| panic!("{who}: video: {e}"));
        assert!(
            keys.contains(&start),
            "{who}: the first picture is file frame {start}, not a key frame"
        );
        assert_eq!(
            start + got.hashes(0).len(),
            from_file.hashes(0).len(),
            "{who}: every picture from the first to the end of the movie"
        );
        contiguous_run(&from_file.hashes(1), &got.hashes(1), 20).unwrap_or_else(|e| panic!("{who}: audio: {e}"));
    }
    // The publisher's access-log lines say it was rtpload, over each transport.
    let records = server.wait_for_records(4, Duration::from_secs(20));
    for transport in ["tcp", "udp"] {
        assert!(
            records.iter().any(
                |r| r.get("transport").map(String::as_str) == Some(&format!("publish-{transport}"))
                    && r.get("cs(User-Agent)").is_some_and(|ua| ua.contains("Streamalot"))
            ),
            "a publisher line for {transport}: {records:?}"
        );
    }
    server.stop_cleanly();
}

#[test]
fn every_viewer_times_its_first_key_frame_and_a_late_ffmpeg_decodes_cleanly() {
    const VIEWERS: u64 = 6;
    let file = media().h264_mp4().to_owned();
    let server = Server::start(&library("live-load-keys", &[]), &["--publish", &publish_arg()]);
    let from_file = framemd5(&[], file.to_str().unwrap(), FRAME_HASHES, TIMEOUT);
    let keys = key_indexes(&file, &from_file);
    let path = format!("{PREFIX}/keys");
    let out = out_dir("keys");
    let viewers = VIEWERS.to_string();
    let mut cmd = rtpload_publishing(
        &file,
        "tcp",
        &publish_url(&server, "keys"),
        &[
            "--loop",
            "--sessions",
            &viewers,
            "--rate",
            "3",
            "--duration",
            "3",
            "--max-loss",
            "0",
        ],
    );
    cmd.arg("--out").arg(&out);
    let rtpload = Running::start(&mut cmd);
    wait_on_air(&server, &path);
    // An ffmpeg viewer joining in the middle of a GOP: its first picture is
    // a key frame, and the decoder has nothing to complain of.
    thread::sleep(Duration::from_millis(1_400));
    let mut late = Command::new("ffmpeg");
    late.args([
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "warning",
        "-rtsp_transport",
        "tcp",
        "-i",
    ])
    .arg(server.url(&path))
    .args([
        "-map",
        "0:v:0",
        "-fps_mode",
        "passthrough",
        "-frames:v",
        "10",
        "-f",
        "framemd5",
        "-",
    ]);
    let done = run_within(&mut late, TIMEOUT);
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert!(done.status.success(), "{} failed: {stderr}", describe(&late));
    // Warnings included: a decoder fed from a non-key frame complains
    // (missing references, PPS, "no frame!"); the muxer's own notes on the
    // timestamps of a stream joined mid-way are not about the pictures.
    let complaints: Vec<&str> = stderr.lines().filter(|l| !l.starts_with("[framemd5 @")).collect();
    assert!(complaints.is_empty(), "the late viewer's decoder complained:\n{stderr}");
    let got = FrameHashes::parse(&String::from_utf8_lossy(&done.stdout));
    let start = contiguous_run(&from_file.hashes(0), &got.hashes(0), 10)
        .unwrap_or_else(|e| panic!("the late ffmpeg viewer: {e}"));
    assert!(
        keys.contains(&start),
        "the late viewer's first picture is file frame {start}, not a key frame"
    );

    let (stdout, _) = rtpload.succeed();
    assert!(stdout.lines().any(|l| l.starts_with("first_key_frame")), "{stdout}");
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).expect("summary.json")).expect("JSON");
    assert_eq!(summary["sessions"]["completed"].as_u64(), Some(VIEWERS), "{summary}");
    assert_eq!(
        summary["histograms"]["first_key_frame"]["count"].as_u64(),
        Some(VIEWERS),
        "one first key frame per viewer: {summary}"
    );
    assert_eq!(summary["packets"]["lost"].as_u64(), Some(0), "{summary}");
    assert!(summary["publisher"]["packets"].as_u64() > Some(0), "{summary}");
    assert_eq!(summary["publisher"]["error"], Value::Null, "{summary}");
    let csv = std::fs::read_to_string(out.join("sessions.csv")).expect("sessions.csv");
    let mut lines = csv.lines();
    let column = lines
        .next()
        .and_then(|h| h.split(',').position(|c| c == "first_key_frame_us"))
        .expect("a first_key_frame_us column");
    let timed = lines
        .filter(|l| l.split(',').nth(column).is_some_and(|v| v.parse::<u64>().is_ok()))
        .count();
    assert_eq!(
        timed as u64, VIEWERS,
        "every session's line has its first key frame:\n{csv}"
    );
    server.stop_cleanly();
}

fn scrape(server: &Server) -> Vec<PromSample> {
    let r = http(server.addr, "GET", "/metrics", &[], &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    parse_prometheus(&r.text())
}

#[test]
fn a_viewer_that_stops_reading_costs_the_others_nothing_and_metrics_count_its_drops() {
    let file = media().h264_mp4().to_owned();
    let server = Server::start(
        &library("live-load-stall", &[]),
        &["--publish", &publish_arg(), "--tcp-queue-bytes", "4096"],
    );
    let path = format!("{PREFIX}/stall");
    let publisher = Running::start(&mut rtpload_publishing(
        &file,
        "udp",
        &publish_url(&server, "stall"),
        &["--loop", "--sessions", "0", "--duration", "40"],
    ));
    wait_on_air(&server, &path);
    // A viewer that sets up, plays, and never reads, with a small receive
    // buffer so that the server's queue for it fills at once.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(2048).unwrap();
    socket.connect(&server.addr.into()).unwrap();
    let mut stalled = Connection::over(socket.into());
    let r = stalled.request(
        "SETUP",
        &server.url(&format!("{path}/trackID=1")),
        &[("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1")],
    );
    assert_eq!(r.status, 200, "{r:?}");
    let session = r.session().unwrap().to_owned();
    let play = stalled.request("PLAY", &server.url(&path), &[("Session", &session)]);
    assert_eq!(play.status, 200, "{play:?}");

    // Viewers over UDP and TCP beside it, none of which may lose a packet.
    let runs: Vec<(Running, PathBuf)> = ["udp", "tcp"]
        .into_iter()
        .map(|transport| {
            let out = out_dir(&format!("stall-{transport}"));
            let mut cmd = Command::new(rtpload_binary());
            cmd.arg(server.url(&path))
                .args(["--sessions", "3", "--rate", "3", "--duration", "6", "--quiet"])
                .args(["--transport", transport, "--max-loss", "0", "--out"])
                .arg(&out);
            (Running::start(&mut cmd), out)
        })
        .collect();
    for (run, out) in runs {
        run.succeed();
        let summary: Value = serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
        assert_eq!(summary["sessions"]["completed"].as_u64(), Some(3), "{summary}");
        assert!(summary["packets"]["received"].as_u64() > Some(0), "{summary}");
        assert_eq!(summary["packets"]["lost"].as_u64(), Some(0), "{summary}");
        assert_eq!(
            summary["histograms"]["first_key_frame"]["count"].as_u64(),
            Some(3),
            "{summary}"
        );
    }

    // The stalled viewer's drops are counted under its broadcast's path,
    // and every live series parses with Prometheus's own parser.
    let labels = [("path", path.as_str())];
    let deadline = Instant::now() + Duration::from_secs(20);
    let samples = loop {
        let samples = scrape(&server);
        let slow = sum_of(
            &samples,
            "streamalot_live_packets_dropped_total",
            &[("path", path.as_str()), ("reason", "slow_viewer")],
        );
        if slow > 0.0 {
            break samples;
        }
        assert!(
            Instant::now() < deadline,
            "no slow-viewer drops for {path} counted in /metrics"
        );
        thread::sleep(Duration::from_millis(200));
    };
    let family = |name: &str| {
        samples
            .iter()
            .find(|s| s.name == name && s.labels.get("path") == Some(&path))
    };
    for (name, kind) in [
        ("streamalot_live_viewers", "gauge"),
        ("streamalot_live_packets_in_total", "counter"),
        ("streamalot_live_bytes_in_total", "counter"),
        ("streamalot_live_packets_refused_total", "counter"),
        ("streamalot_live_bitrate_in_bits_per_second", "gauge"),
    ] {
        let s = family(name).unwrap_or_else(|| panic!("no {name} for {path}"));
        assert_eq!(s.kind, kind, "{name}");
    }
    assert!(
        sum_of(&samples, "streamalot_live_viewers", &labels) >= 1.0,
        "the stalled viewer is still there"
    );
    assert!(sum_of(&samples, "streamalot_live_packets_in_total", &labels) > 0.0);
    assert!(sum_of(&samples, "streamalot_live_bytes_in_total", &labels) > 0.0);
    assert!(sum_of(&samples, "streamalot_live_bitrate_in_bits_per_second", &labels) > 0.0);
    assert_eq!(sum_of(&samples, "streamalot_live_packets_refused_total", &labels), 0.0);
    assert!(
        samples.iter().any(|s| s.name == "streamalot_live_packets_dropped_total"
            && s.labels.get("reason").map(String::as_str) == Some("channel_full")),
        "the channel-full series is there too"
    );
    assert!(sum_of(&samples, "streamalot_live_packets_fanned_out_total", &[]) > 0.0);
    drop(stalled);
    drop(publisher);
    server.stop_cleanly();
}
