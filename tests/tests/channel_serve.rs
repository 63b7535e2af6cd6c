//! Channels run by `streamalot serve` itself (`--channel PATH=PLAYLIST`,
//! `[[channel]]`): a playlist of short movies made by ffmpeg played as one
//! never-ending live stream, watched by ffmpeg, rtpload and the tests' own
//! RTSP client, steered through the admin API and `streamalot channel`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use streamalot_tests::admin::{api, bearer, http};
use streamalot_tests::broadcast;
use streamalot_tests::ffmpeg::FrameHashes;
use streamalot_tests::live::wait_on_air;
use streamalot_tests::rtp::{loader_packets, RtpPacket};
use streamalot_tests::rtsp::{Connection, Lower, Player};
use streamalot_tests::server::{library, Server};
use streamalot_tests::{require_tool, rtpload_binary, run_ok, spawn, streamalot_binary, wait_with_timeout};

const TOKEN: &str = "channel-test-token";

/// A media folder holding the channel movies and `tv.ply`, a DSS playlist
/// of `lines` (relative to the folder).
fn channel_library(name: &str, lines: &[&str]) -> PathBuf {
    let m = broadcast::movies();
    let dir = library(name, &[&m.a, &m.b, &m.c, &m.mismatch]);
    let mut text = String::from("*PLAY-LIST*\n");
    for l in lines {
        text.push_str(l);
        text.push('\n');
    }
    std::fs::write(dir.join("tv.ply"), text).unwrap();
    dir
}

fn start(media: &Path, extra: &[&str]) -> Server {
    let arg = format!("tv={}", media.join("tv.ply").display());
    let mut args = vec!["--channel", arg.as_str(), "--admin-token", TOKEN];
    args.extend_from_slice(extra);
    Server::start(media, &args)
}

/// `2026-12-02T07:58:16.876428Z`, as the server's log lines begin, in
/// seconds since 1970.
fn log_time(line: &str) -> Option<f64> {
    let stamp = line.split_whitespace().next()?;
    let (date, time) = stamp.trim_end_matches('Z').split_once('T')?;
    let d: Vec<i64> = date.split('-').map(|x| x.parse().ok()).collect::<Option<_>>()?;
    let (y, m, day) = (d[0], d[1], d[2]);
    // Days from 1970 by the civil calendar (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let t: Vec<f64> = time.split(':').map(|x| x.parse().ok()).collect::<Option<_>>()?;
    Some(days as f64 * 86_400.0 + t[0] * 3600.0 + t[1] * 60.0 + t[2])
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// Whether an RTP payload (RFC 6184) holds an IDR slice, or the start of
/// one.
fn has_idr(payload: &[u8]) -> bool {
    let Some(&first) = payload.first() else { return false };
    match first & 0x1f {
        5 => true,
        // STAP-A: units of 16-bit length.
        24 => {
            let mut at = 1;
            while at + 2 < payload.len() {
                let len = usize::from(u16::from_be_bytes([payload[at], payload[at + 1]]));
                if payload[at + 2] & 0x1f == 5 {
                    return true;
                }
                at += 2 + len;
            }
            false
        }
        // FU-A: the start bit and the unit's type.
        28 => payload.len() > 1 && payload[1] & 0x80 != 0 && payload[1] & 0x1f == 5,
        _ => false,
    }
}

/// Whether the first access unit of `packets` (up to the first marker) is
/// a key frame: an IDR picture (after SEI, SPS or PPS units, if any).
fn starts_on_key_frame(packets: &[RtpPacket]) -> bool {
    let end = packets
        .iter()
        .position(|p| p.marker)
        .unwrap_or(packets.len().saturating_sub(1));
    packets[..=end].iter().any(|p| has_idr(&p.payload))
        && packets[..=end].iter().all(|p| p.timestamp == packets[0].timestamp)
}

/// That the presentation times of `frames` never go back; after the
/// first (which ffmpeg may clamp to the output's start) they go forward.
fn never_back(stream: u32, frames: &[streamalot_tests::ffmpeg::Frame]) {
    for w in frames.windows(2) {
        assert!(
            w[1].pts >= w[0].pts,
            "stream {stream}: pts {} after {}",
            w[1].pts,
            w[0].pts
        );
        if w[0].pts > 0 {
            assert!(
                w[1].pts > w[0].pts,
                "stream {stream}: pts {} after {}",
                w[1].pts,
                w[0].pts
            );
        }
    }
}

/// The newest sender report's NTP time (as seconds) and RTP timestamp in
/// `rtcp`.
fn sender_report(rtcp: &[Vec<u8>]) -> Option<(f64, u32)> {
    let mut found = None;
    for d in rtcp {
        let mut at = 0;
        while at + 20 <= d.len() {
            let len = 4 * (usize::from(u16::from_be_bytes([d[at + 2], d[at + 3]])) + 1);
            if d[at + 1] == 200 {
                let msw = u32::from_be_bytes(d[at + 8..at + 12].try_into().unwrap());
                let lsw = u32::from_be_bytes(d[at + 12..at + 16].try_into().unwrap());
                let rtp = u32::from_be_bytes(d[at + 16..at + 20].try_into().unwrap());
                let unix = f64::from(msw) - 2_208_988_800.0 + f64::from(lsw) / 4_294_967_296.0;
                found = Some((unix, rtp));
            }
            at += len.max(4);
        }
    }
    found
}

/// Sequence numbers of `packets` each one after the one before.
fn gaps(packets: &[RtpPacket]) -> Vec<String> {
    packets
        .windows(2)
        .filter(|w| w[1].sequence != w[0].sequence.wrapping_add(1))
        .map(|w| format!("{} after {}", w[1].sequence, w[0].sequence))
        .take(10)
        .collect()
}

#[test]
fn a_looped_channel_plays_across_movie_boundaries_without_a_gap() {
    require_tool("ffmpeg");
    let media = channel_library(
        "channel-loop",
        &["a.mp4", "missing.mp4", "b.mp4", "mismatch.mp4", "c.mp4"],
    );
    let server = start(&media, &[]);
    let sdp = wait_on_air(&server, "tv");
    assert!(sdp.contains("H264") && sdp.contains("MPEG4-GENERIC"), "{sdp}");
    // ffmpeg over TCP for 5 s of 1 s movies: at least four boundaries.
    let mut ffmpeg = Command::new("ffmpeg");
    ffmpeg
        .args([
            "-hide_banner",
            "-nostdin",
            "-loglevel",
            "error",
            "-rtsp_transport",
            "tcp",
            "-i",
        ])
        .arg(server.url("tv"))
        .args([
            "-t",
            "5",
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
    let (child, what) = spawn(&mut ffmpeg);
    // rtpload meanwhile, over UDP and over TCP.
    let loads: Vec<_> = ["udp", "tcp"]
        .iter()
        .map(|transport| {
            let out = streamalot_tests::scratch_dir().join(format!("channel-loop-rtpload-{transport}"));
            let _ = std::fs::remove_dir_all(&out);
            let mut load = Command::new(rtpload_binary());
            load.arg(server.url("tv"))
                .args(["--sessions", if *transport == "udp" { "40" } else { "3" }])
                .args(["--ramp", "100", "--duration", "6", "--transport", transport])
                .args(["--max-loss", "0"])
                .arg("--out")
                .arg(&out);
            let (child, what) = spawn(&mut load);
            (child, what, out)
        })
        .collect();
    let got = wait_with_timeout(child, Duration::from_secs(30), &what);
    let errors = String::from_utf8_lossy(&got.stderr);
    assert!(got.status.success() && errors.trim().is_empty(), "{what}: {errors}");
    let hashes = FrameHashes::parse(&String::from_utf8_lossy(&got.stdout));
    // 5 s at 25 fps, give or take the start on a key frame.
    assert!(
        hashes.frames(0).len() >= 110,
        "video frames: {}",
        hashes.frames(0).len()
    );
    assert!(
        hashes.frames(1).len() >= 200,
        "audio frames: {}",
        hashes.frames(1).len()
    );
    for s in [0, 1] {
        never_back(s, hashes.frames(s));
    }
    for (child, what, out) in loads {
        let loaded = wait_with_timeout(child, Duration::from_secs(40), &what);
        assert!(
            loaded.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&loaded.stderr)
        );
        let summary: Value = serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
        let p = &summary["packets"];
        assert_eq!(
            (p["lost"].as_u64(), p["reordered"].as_u64(), p["duplicates"].as_u64()),
            (Some(0), Some(0), Some(0)),
            "{summary}"
        );
        assert!(p["received"].as_u64().unwrap() > 500, "{summary}");
        let sessions = if what.contains("udp") { 40 } else { 3 };
        assert_eq!(summary["sessions"]["completed"].as_u64(), Some(sessions), "{summary}");
    }
    let stopped = server.stop_cleanly();
    let log = stopped.stderr;
    let l = media.join("tv.ply");
    assert!(
        log.contains(&format!(
            "{}:3: movie {} skipped: cannot open",
            l.display(),
            media.join("missing.mp4").display()
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "{}:5: movie {} skipped: track 2 is AAC 44100 Hz stereo, the channel's is AAC 48000 Hz stereo",
            l.display(),
            media.join("mismatch.mp4").display()
        )),
        "{log}"
    );
    // Each once, though the list loops; and play went on past them.
    assert_eq!(log.matches("skipped:").count(), 2, "{log}");
    assert!(log.matches(" starts: ").count() >= 6, "{log}");
}

/// The video packets a viewer got, each with the wall time its RTP
/// timestamp stands for by the viewer's own sender report.
fn wall_times(p: &Player) -> (Vec<RtpPacket>, HashMap<Vec<u8>, f64>) {
    let video = p
        .streams
        .iter()
        .find(|s| s.media.kind == "video")
        .expect("a video stream");
    let (ntp, rtp) = sender_report(&video.rtcp).expect("a sender report");
    let times = video
        .packets
        .iter()
        .map(|pk| {
            let d = f64::from(pk.timestamp.wrapping_sub(rtp) as i32) / 90_000.0;
            (pk.payload.clone(), ntp + d)
        })
        .collect();
    (video.packets.clone(), times)
}

#[test]
fn two_viewers_see_the_same_frames_at_the_same_time_each_from_a_key_frame() {
    let media = channel_library("channel-two", &["a.mp4", "b.mp4", "c.mp4"]);
    let server = start(&media, &[]);
    wait_on_air(&server, "tv");
    let mut first = Player::setup(server.addr, &server.url("tv"), Lower::Tcp);
    first.play(None);
    // The second joins 30 s later: ten passes of the loop on.
    first.receive_until(Duration::from_secs(30), |_| false);
    let mut second = Player::setup(server.addr, &server.url("tv"), Lower::Udp);
    second.play(None);
    // Both until each has had a sender report after the other joined.
    let until = Instant::now() + Duration::from_secs(7);
    while Instant::now() < until {
        first.receive_until(Duration::from_millis(100), |_| false);
        second.receive_until(Duration::from_millis(100), |_| false);
    }
    let (a_packets, a) = wall_times(&first);
    let (b_packets, b) = wall_times(&second);
    for (name, packets) in [("first", &a_packets), ("second", &b_packets)] {
        assert!(
            starts_on_key_frame(packets),
            "the {name} viewer starts on {:02x?}",
            &packets[0].payload[..4]
        );
        assert!(gaps(packets).is_empty(), "the {name} viewer: {:?}", gaps(packets));
    }
    // Every frame both got stands for one wall time in both. (Payloads
    // recur as the list loops; those are compared by the nearest time.)
    let mut compared = 0;
    for p in &b_packets {
        let Some(&tb) = b.get(&p.payload) else { continue };
        let Some(&ta) = a.get(&p.payload) else { continue };
        if (ta - tb).abs() < 1.0 {
            assert!(
                (ta - tb).abs() < 0.005,
                "a frame at {ta:.3} for the first, {tb:.3} for the second"
            );
            compared += 1;
        }
    }
    assert!(compared > 100, "only {compared} packets in common");
    // Each has its own SSRC and sequence, the same payload.
    assert_ne!(first.streams[0].ssrc, second.streams[0].ssrc);
    server.stop_cleanly();
}

/// Where each video packet payload of the channel movies lies in a loop of
/// `movies`: seconds from the loop's start.
fn positions(movies: &[&Path]) -> (HashMap<Vec<u8>, Vec<f64>>, f64) {
    let mut at = HashMap::<Vec<u8>, Vec<f64>>::new();
    let mut start = 0.0;
    for path in movies {
        let movie = loader::Movie::open(path).unwrap();
        let video = movie
            .hint_tracks()
            .find(|h| streamalot_tests::rtp::ffmpeg_stream_for(&movie, h) == "0:v:0")
            .unwrap();
        let packets = loader_packets(&movie, video.id);
        let zero = packets.iter().map(|p| p.timestamp).min().unwrap();
        for p in packets {
            at.entry(p.payload.clone())
                .or_default()
                .push(start + f64::from(p.timestamp - zero) / 90_000.0);
        }
        start += movie.duration_secs();
    }
    (at, start)
}

#[test]
fn a_viewer_after_seconds_unwatched_sees_the_schedule_that_many_seconds_in() {
    let m = broadcast::movies();
    let media = channel_library("channel-late", &["a.mp4", "b.mp4", "c.mp4"]);
    let server = start(&media, &[]);
    wait_on_air(&server, "tv");
    thread::sleep(Duration::from_millis(4300));
    let mut late = Player::setup(server.addr, &server.url("tv"), Lower::Tcp);
    let joined = unix_now();
    late.play(None);
    late.receive_until(Duration::from_secs(2), |_| false);
    let log = server.stop_cleanly().stderr;
    let on_air = log
        .lines()
        .find(|l| l.contains("channel on the air"))
        .and_then(log_time)
        .unwrap_or_else(|| panic!("no on-air line in\n{log}"));
    let video = late.streams.iter().find(|s| s.media.kind == "video").unwrap();
    let first = &video.packets[0];
    assert!(starts_on_key_frame(&video.packets));
    let (at, period) = positions(&[&m.a, &m.b, &m.c]);
    let want = (joined - on_air).rem_euclid(period);
    let got = at.get(&first.payload).expect("the first packet is a channel movie's");
    // The newest key frame (every 10 frames, 0.4 s) before the live edge.
    let fits = |p: f64| {
        let behind = (want - p).rem_euclid(period);
        behind < 0.5
    };
    assert!(
        got.iter().any(|&p| fits(p)),
        "joined {:.3} s after the channel went on the air, {want:.3} s into its loop; the first frame lies at {got:?}",
        joined - on_air
    );
    assert!(joined - on_air > 4.0, "the viewer came {:.3} s in", joined - on_air);
}

/// A minute of the channel movies' layout (H.264 Main 160x120 at 25 fps,
/// AAC LC 48 kHz stereo), so that a skip is what moves a channel on.
fn long_clip(path: &Path) {
    require_tool("ffmpeg");
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc=size=160x120:rate=25:duration=60"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=60"])
        .args([
            "-map",
            "0:v",
            "-map",
            "1:a",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-profile:v",
            "main",
        ])
        .args([
            "-level",
            "3.0",
            "-g",
            "10",
            "-bf",
            "2",
            "-sc_threshold",
            "0",
            "-pix_fmt",
            "yuv420p",
        ])
        .args([
            "-c:a",
            "aac",
            "-b:a",
            "48k",
            "-ac",
            "2",
            "-movflags",
            "+rtphint",
            "-f",
            "mp4",
        ])
        .arg(path);
    run_ok(&mut cmd);
}

/// Where the first frame a viewer of `tv` gets lies in the loop of
/// `movies`: every position its payload has.
fn first_frame_at(server: &Server, movies: &[&Path]) -> (Player, Vec<f64>) {
    let mut p = Player::setup(server.addr, &server.url("tv"), Lower::Tcp);
    p.play(None);
    p.receive_until(Duration::from_secs(10), |s| {
        s.iter().any(|s| s.media.kind == "video" && s.packets.len() > 20)
    });
    let video = p.streams.iter().find(|s| s.media.kind == "video").unwrap();
    assert!(starts_on_key_frame(&video.packets));
    let (at, _) = positions(movies);
    let got = at
        .get(&video.packets[0].payload)
        .expect("a channel movie's packet")
        .clone();
    (p, got)
}

#[test]
fn an_on_demand_channel_plays_only_while_watched() {
    let m = broadcast::movies();
    let media = channel_library("channel-on-demand", &["a.mp4", "b.mp4", "c.mp4"]);
    let toml = media.with_extension("toml");
    std::fs::write(
        &toml,
        format!(
            "admin_token = \"{TOKEN}\"\n[[channel]]\npath = \"tv\"\nplaylist = \"{}\"\nrun = \"on-demand\"\n",
            media.join("tv.ply").display()
        ),
    )
    .unwrap();
    let server = Server::start(&media, &["--config", toml.to_str().unwrap()]);
    let c = wait_for(&server, "the paused channel", |c| c["state"] == "paused");
    assert_eq!(c["run"], "on-demand");
    thread::sleep(Duration::from_secs(3));
    // Unwatched, its clock stood still: the first viewer sees it from the start.
    let (mut first, got) = first_frame_at(&server, &[&m.a, &m.b, &m.c]);
    assert!(got.contains(&0.0), "the first frame lies at {got:?}");
    first.receive_until(Duration::from_millis(1500), |_| false);
    let c = wait_for(&server, "the watched channel", |c| c["state"] == "on_air");
    assert_eq!(c["viewers"], 1, "{c}");
    first.control("TEARDOWN", &[]);
    let c = wait_for(&server, "the channel paused again", |c| c["state"] == "paused");
    let paused_at = (c["now"]["number"].as_u64().unwrap() - 1) as f64 + c["now"]["position_secs"].as_f64().unwrap();
    thread::sleep(Duration::from_secs(2));
    // The next viewer goes on from there (from the key frame before it).
    let (_second, got) = first_frame_at(&server, &[&m.a, &m.b, &m.c]);
    let period = 3.0;
    assert!(
        got.iter().any(|&p| (paused_at - p).rem_euclid(period) < 0.6),
        "paused {paused_at:.3} s into the loop; the next viewer's first frame lies at {got:?}"
    );
    server.stop_cleanly();
}

fn channel(server: &Server) -> Value {
    let list = api(server.addr, TOKEN, "channels");
    let channels = list["channels"].as_array().unwrap();
    assert_eq!(channels.len(), 1, "{list}");
    channels[0].clone()
}

fn post(server: &Server, action: &str, body: &str) -> (u16, Value) {
    let auth = bearer(TOKEN);
    let r = http(
        server.addr,
        "POST",
        &format!("/api/v1/channels/tv/{action}"),
        &[("Authorization", &auth), ("Content-Type", "application/json")],
        body.as_bytes(),
    );
    (r.status, r.json())
}

/// Waits until the channel's status satisfies `ok`.
fn wait_for(server: &Server, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let c = channel(server);
        if ok(&c) {
            return c;
        }
        assert!(Instant::now() < deadline, "{what}: {c}");
        thread::sleep(Duration::from_millis(50));
    }
}

fn movie_name(c: &Value) -> String {
    c["now"]["movie"]
        .as_str()
        .map(|m| Path::new(m).file_name().unwrap().to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[test]
fn the_admin_api_and_the_command_line_steer_a_channel() {
    // Long movies, so that a skip is what moves the channel on.
    let media = channel_library("channel-admin", &["long.mp4", "a.mp4"]);
    long_clip(&media.join("long.mp4"));
    let server = start(&media, &[]);
    wait_on_air(&server, "tv");
    let c = wait_for(&server, "the first movie", |c| c["now"]["number"] == 1);
    assert_eq!(
        (c["state"].as_str(), c["mode"].as_str(), c["run"].as_str()),
        (Some("on_air"), Some("sequential_looped"), Some("always")),
        "{c}"
    );
    assert_eq!(movie_name(&c), "long.mp4", "{c}");
    assert!(c["next"].as_str().unwrap().ends_with("a.mp4"), "{c}");
    assert_eq!(c["publisher"].as_str().map(str::len), Some(16), "{c}");
    // The status files beside the playlist, as DSS wrote them.
    let current = std::fs::read_to_string(media.join("tv.current")).unwrap();
    assert!(
        current.starts_with(&format!("u={}\n", media.join("long.mp4").display())),
        "{current}"
    );
    let upcoming = std::fs::read_to_string(media.join("tv.upcoming")).unwrap();
    assert!(
        upcoming.starts_with(&format!("*PLAY-LIST*\n{}\n", media.join("a.mp4").display())),
        "{upcoming}"
    );

    // Skip: the next movie now.
    let (status, answer) = post(&server, "skip", "");
    assert_eq!(status, 200, "{answer}");
    let c = wait_for(&server, "a skip", |c| c["now"]["number"] == 2);
    assert_eq!(movie_name(&c), "a.mp4", "{c}");

    // Insert: c.mp4 plays after the current movie (then the list goes on).
    let (status, answer) = post(&server, "insert", r#"{"movie": "c.mp4"}"#);
    assert_eq!(status, 200, "{answer}");
    let c = wait_for(&server, "an insert", |c| {
        c["next"].as_str().is_some_and(|n| n.ends_with("c.mp4"))
    });
    assert!(c["upcoming"][1].as_str().unwrap().ends_with("long.mp4"), "{c}");
    let c = wait_for(&server, "the inserted movie", |c| movie_name(c) == "c.mp4");
    assert_eq!(c["now"]["inserted"], true, "{c}");
    // A movie that does not fit, and one that is not there, are refused.
    let (status, answer) = post(&server, "insert", r#"{"movie": "mismatch.mp4"}"#);
    assert_eq!(status, 422, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("AAC 44100 Hz"), "{answer}");
    let (status, _) = post(&server, "insert", r#"{"movie": "nowhere.mp4"}"#);
    assert_eq!(status, 404);
    let (status, _) = post(&server, "insert", r#"{"film": "c.mp4"}"#);
    assert_eq!(status, 400);
    let (status, _) = post(&server, "rewind", "");
    assert_eq!(status, 404);

    // Stop: a viewer gets its BYE, the path is gone; start: on again.
    let mut viewer = Player::setup(server.addr, &server.url("tv"), Lower::Udp);
    viewer.play(None);
    let (status, answer) = post(&server, "stop", "");
    assert_eq!(status, 200, "{answer}");
    viewer.receive_until(Duration::from_secs(10), |s| s.iter().all(|s| s.said_bye()));
    assert!(viewer.streams.iter().all(|s| s.said_bye()), "no BYE after the stop");
    wait_for(&server, "a stop", |c| c["state"] == "stopped" && c["now"].is_null());
    let mut conn = Connection::connect(server.addr);
    assert_eq!(conn.request("DESCRIBE", &server.url("tv"), &[]).status, 404);
    let (status, _) = post(&server, "skip", "");
    assert_eq!(status, 409, "a stopped channel does not skip");
    let (status, answer) = post(&server, "start", "");
    assert_eq!(status, 200, "{answer}");
    wait_for(&server, "a start", |c| {
        c["state"] == "on_air" && c["now"]["number"] == 1
    });
    wait_on_air(&server, "tv");

    // The same through the command line.
    let admin = format!("http://{}", server.addr);
    let cli = |args: &[&str]| -> String {
        let mut cmd = Command::new(streamalot_binary());
        cmd.arg("channel")
            .args(args)
            .args(["--admin", &admin, "--token", TOKEN]);
        String::from_utf8(run_ok(&mut cmd).stdout).unwrap()
    };
    let status = cli(&["status"]);
    assert!(
        status.starts_with("tv: on_air, movie 1 ") && status.contains("long.mp4") && status.contains("; next: "),
        "{status}"
    );
    assert_eq!(cli(&["skip", "tv"]).trim(), "tv: skipped");
    wait_for(&server, "a skip from the command line", |c| c["now"]["number"] == 2);
    assert!(cli(&["insert", "tv", "b.mp4"]).contains("b.mp4 plays next"));
    wait_for(&server, "an insert from the command line", |c| {
        c["next"].as_str().is_some_and(|n| n.ends_with("b.mp4"))
    });
    assert_eq!(cli(&["stop", "tv"]).trim(), "tv: stopped");
    wait_for(&server, "a stop from the command line", |c| c["state"] == "stopped");
    assert_eq!(cli(&["start", "tv"]).trim(), "tv: started");
    wait_for(&server, "a start from the command line", |c| c["state"] == "on_air");
    let json: Value = serde_json::from_str(&cli(&["status", "tv", "--json"])).unwrap();
    assert_eq!(json["path"], "tv");
    // A refusal is an error with the API's reason.
    let mut bad = Command::new(streamalot_binary());
    bad.args(["channel", "skip", "radio", "--admin", &admin, "--token", TOKEN]);
    let out = streamalot_tests::run(&mut bad);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("404: no channel \"radio\""),
        "{out:?}"
    );
    server.stop_cleanly();
}

#[test]
fn a_changed_playlist_is_reread_and_its_broken_lines_reported() {
    let media = channel_library("channel-reload", &["long.mp4"]);
    long_clip(&media.join("long.mp4"));
    let server = start(&media, &[]);
    wait_for(&server, "the first movie", |c| c["now"]["number"] == 1);
    // Rewritten by rename, as editors and tools do.
    let tmp = media.join("tv.ply.new");
    std::fs::write(&tmp, "*PLAY-LIST*\nb.mp4 99\nc.mp4\n").unwrap();
    std::fs::rename(&tmp, media.join("tv.ply")).unwrap();
    let c = wait_for(&server, "the reread list", |c| {
        c["next"].as_str().is_some_and(|n| n.ends_with("c.mp4"))
    });
    assert!(
        c["notes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n.as_str().unwrap().contains("tv.ply:2")),
        "{c}"
    );
    post(&server, "skip", "");
    let c = wait_for(&server, "the new list playing", |c| movie_name(c) == "c.mp4");
    assert_eq!(c["state"], "on_air");
    server.stop_cleanly();
}

/// AAC-only movies (radio): two tones, hinted by ffmpeg.
fn radio_clips(dir: &Path) -> Vec<PathBuf> {
    [("one.mp4", 440), ("two.mp4", 660)]
        .iter()
        .map(|(name, freq)| {
            let path = dir.join(name);
            let mut cmd = Command::new("ffmpeg");
            cmd.args([
                "-hide_banner",
                "-nostdin",
                "-loglevel",
                "error",
                "-y",
                "-f",
                "lavfi",
                "-i",
            ])
            .arg(format!("sine=frequency={freq}:sample_rate=48000:duration=1"))
            .args([
                "-c:a",
                "aac",
                "-b:a",
                "64k",
                "-ac",
                "2",
                "-movflags",
                "+rtphint",
                "-f",
                "mp4",
            ])
            .arg(&path);
            run_ok(&mut cmd);
            path
        })
        .collect()
}

#[test]
fn an_audio_only_channel_plays_as_radio() {
    require_tool("ffmpeg");
    let dir = broadcast::test_dir("channel-radio-clips");
    let clips = radio_clips(&dir);
    let media = library("channel-radio", &[&clips[0], &clips[1]]);
    std::fs::write(
        media.join("radio.m3u"),
        "#EXTM3U\n#EXTINF:1,One\none.mp4\n#EXTINF:1,Two\ntwo.mp4\n",
    )
    .unwrap();
    // In the TOML file, as [[channel]].
    let toml = media.with_extension("toml");
    std::fs::write(
        &toml,
        format!(
            "[[channel]]\npath = \"radio/tones\"\nplaylist = \"{}\"\nmode = \"sequential_looped\"\nrun = \"always\"\n",
            media.join("radio.m3u").display()
        ),
    )
    .unwrap();
    let server = Server::start(&media, &["--config", toml.to_str().unwrap()]);
    let sdp = wait_on_air(&server, "radio/tones");
    assert!(!sdp.contains("m=video") && sdp.contains("m=audio"), "{sdp}");
    let mut ffmpeg = Command::new("ffmpeg");
    ffmpeg
        .args([
            "-hide_banner",
            "-nostdin",
            "-loglevel",
            "error",
            "-rtsp_transport",
            "udp",
            "-i",
        ])
        .arg(server.url("radio/tones"))
        .args(["-t", "4", "-f", "framemd5", "-"]);
    let (child, what) = spawn(&mut ffmpeg);
    let got = wait_with_timeout(child, Duration::from_secs(30), &what);
    let errors = String::from_utf8_lossy(&got.stderr);
    assert!(got.status.success() && errors.trim().is_empty(), "{what}: {errors}");
    let hashes = FrameHashes::parse(&String::from_utf8_lossy(&got.stdout));
    // 4 s of 1024-sample frames at 48 kHz, across three boundaries.
    assert!(
        hashes.frames(0).len() >= 170,
        "audio frames: {}",
        hashes.frames(0).len()
    );
    never_back(0, hashes.frames(0));
    let log = server.stop_cleanly().stderr;
    assert!(log.contains("(One)") && log.contains("(Two)"), "{log}");
}
