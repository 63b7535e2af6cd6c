//! rtpload, the bundled load client, against real servers: `streamalot
//! serve` and GStreamer's RTSP server.
//!
//! Each run must complete every session with no loss, and everything it
//! writes must be there, parse, and agree: with itself (summary.json, the
//! per-session lines, the interval log, the .hgrm files and the plot count
//! the same samples) and with the server (the access log's packets and
//! bytes sent are the packets and bytes received). Nothing here asserts a
//! time: latencies are whatever the machine gives.
//!
//! Sessions last longer than the 5 s clip, so each plays it, then tears down
//! and plays it again: the restart path runs too. Against streamalot the
//! sessions go over UDP, interleaved TCP and RTSP-over-HTTP tunnels; and
//! 500 tunnelled sessions at once (1,000 connections) must all play
//! without loss, the server's descriptors back where they were afterwards.

use std::collections::{BTreeMap, HashMap};
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::Duration;

use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::Histogram;
use serde_json::Value;
use streamalot_tests::media::media;
use streamalot_tests::peers::GstPeer;
use streamalot_tests::server::{library, parse_access_log, Server};
use streamalot_tests::{rtpload_binary, scratch_dir, spawn, wait_with_timeout};

/// The histograms summary.json must have, each with these figures.
const HISTOGRAMS: [&str; 5] = ["first_packet", "first_key_frame", "jitter", "lateness", "rtsp_response"];
const FIGURES: [&str; 6] = ["count", "p50_us", "p90_us", "p99_us", "p999_us", "max_us"];
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// An rtpload run in the background.
struct Load {
    child: Child,
    what: String,
    out: PathBuf,
}

fn start_load(url: &str, transport: &str, sessions: u32, seconds: u32, out: &Path) -> Load {
    start_load_with(url, transport, sessions, 20, seconds, out, &[])
}

/// As [`start_load`], starting `ramp` sessions a second.
fn start_load_at(url: &str, transport: &str, sessions: u32, ramp: u32, seconds: u32, out: &Path) -> Load {
    start_load_with(url, transport, sessions, ramp, seconds, out, &[])
}

/// As [`start_load_at`], with more of rtpload's flags.
fn start_load_with(
    url: &str,
    transport: &str,
    sessions: u32,
    ramp: u32,
    seconds: u32,
    out: &Path,
    flags: &[&str],
) -> Load {
    let _ = std::fs::remove_dir_all(out);
    let mut cmd = Command::new(rtpload_binary());
    cmd.arg(url)
        .args(["--sessions", &sessions.to_string()])
        .args(["--ramp", &ramp.to_string()])
        .args(["--duration", &seconds.to_string()])
        .args(["--transport", transport])
        .args(["--max-loss", "0"])
        .args(flags)
        .arg("--out")
        .arg(out);
    let (child, what) = spawn(&mut cmd);
    Load {
        child,
        what,
        out: out.to_owned(),
    }
}

/// What one run wrote.
struct Run {
    summary: Value,
    sessions: Vec<BTreeMap<String, String>>,
    dir: PathBuf,
    what: String,
}

impl Load {
    fn finish(self) -> Run {
        let out: Output = wait_with_timeout(self.child, RUN_TIMEOUT, &self.what);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{} failed ({}):\n{stdout}\n{stderr}",
            self.what,
            out.status
        );
        assert!(stderr.contains("rtpload: PASS"), "{stderr}");
        // The percentile table, on stdout.
        for name in HISTOGRAMS {
            assert!(
                stdout.lines().any(|l| l.starts_with(name)),
                "no {name} row in the table:\n{stdout}"
            );
        }
        let read = |name: &str| {
            let p = self.out.join(name);
            std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: cannot read {}: {e}", self.what, p.display()))
        };
        let summary: Value = serde_json::from_str(&read("summary.json"))
            .unwrap_or_else(|e| panic!("{}: summary.json does not parse: {e}", self.what));
        let csv = read("sessions.csv");
        let mut lines = csv.lines();
        let header: Vec<String> = lines
            .next()
            .expect("a header line")
            .split(',')
            .map(str::to_owned)
            .collect();
        let sessions = lines
            .map(|l| {
                // The URLs in these runs have no commas, so no field is quoted.
                let values: Vec<&str> = l.split(',').collect();
                assert_eq!(values.len(), header.len(), "{l}");
                header
                    .iter()
                    .cloned()
                    .zip(values.iter().map(|v| v.to_string()))
                    .collect()
            })
            .collect();
        Run {
            summary,
            sessions,
            dir: self.out,
            what: self.what,
        }
    }
}

fn int(v: &Value, path: &[&str]) -> u64 {
    let mut at = v;
    for p in path {
        at = &at[*p];
    }
    at.as_u64()
        .unwrap_or_else(|| panic!("summary.json has no integer at {}: {v:#}", path.join(".")))
}

impl Run {
    fn summary(&self, path: &[&str]) -> u64 {
        int(&self.summary, path)
    }

    fn column_sum(&self, name: &str) -> u64 {
        self.sessions
            .iter()
            .map(|s| {
                s[name]
                    .parse::<u64>()
                    .unwrap_or_else(|_| panic!("{name} = {:?}", s[name]))
            })
            .sum()
    }

    /// Every check that does not need the server's side.
    fn check(&self, sessions: u64) {
        let what = &self.what;
        let s = |path: &[&str]| self.summary(path);
        assert_eq!(s(&["sessions", "started"]), sessions, "{what}");
        assert_eq!(s(&["sessions", "completed"]), sessions, "{what}");
        assert_eq!(s(&["sessions", "failed"]), 0, "{what}");
        let plays = s(&["sessions", "plays"]);
        assert!(plays >= sessions, "{what}: {plays} plays for {sessions} sessions");
        let received = s(&["packets", "received"]);
        assert!(received > 0, "{what}: no packets");
        assert_eq!(s(&["packets", "lost"]), 0, "{what}");
        assert_eq!(s(&["packets", "unmatched"]), 0, "{what}: packets nobody claimed");
        assert_eq!(self.summary["verdict"]["passed"], Value::Bool(true), "{what}");

        for name in HISTOGRAMS {
            let h = &self.summary["histograms"][name];
            let f: Vec<u64> = FIGURES.iter().map(|k| int(h, &[k])).collect();
            assert!(
                f[1] <= f[2] && f[2] <= f[3] && f[3] <= f[4] && f[4] <= f[5],
                "{what}: {name} {h}"
            );
        }
        let count = |name: &str| s(&["histograms", name, "count"]);
        // One first packet per play; a lateness and a jitter sample per
        // packet that was not a duplicate.
        assert_eq!(count("first_packet"), plays, "{what}");
        // Each play of the H.264 movie reaches a key frame.
        assert_eq!(count("first_key_frame"), plays, "{what}");
        let unique = received - s(&["packets", "duplicates"]);
        assert_eq!(count("lateness"), unique, "{what}");
        assert_eq!(count("jitter"), unique, "{what}");
        // Each play: DESCRIBE, a SETUP per track (video and audio), PLAY,
        // TEARDOWN; keep-alives come on top. A replay that the session's
        // end overtakes before its PLAY stops where it is (after its
        // DESCRIBE or one of its SETUPs, torn down if it has a session):
        // at most one a session (a server that sends ahead of real time
        // ends the clip, and starts its replay, sooner).
        let method = |m: &str| s(&["rtsp_methods", m, "count"]);
        let described = method("DESCRIBE");
        assert!(
            (plays..=plays + sessions).contains(&described),
            "{what}: {described} DESCRIBEs for {plays} plays"
        );
        let setups = method("SETUP");
        assert!(
            (2 * plays..=2 * described).contains(&setups),
            "{what}: {setups} SETUPs for {plays} plays and {described} DESCRIBEs"
        );
        assert_eq!(method("PLAY"), plays, "{what}");
        let teardowns = method("TEARDOWN");
        assert!(
            (plays..=described).contains(&teardowns),
            "{what}: {teardowns} TEARDOWNs for {plays} plays and {described} DESCRIBEs"
        );
        let all: u64 = ["DESCRIBE", "SETUP", "PLAY", "GET_PARAMETER", "TEARDOWN"]
            .iter()
            .map(|m| method(m))
            .sum();
        assert_eq!(count("rtsp_response"), all, "{what}");

        // The per-session lines add up to the totals.
        assert_eq!(self.sessions.len() as u64, sessions, "{what}");
        assert!(self.sessions.iter().all(|r| r["outcome"] == "completed"), "{what}");
        assert_eq!(self.column_sum("packets"), received, "{what}");
        assert_eq!(self.column_sum("bytes"), s(&["bytes", "received"]), "{what}");
        assert_eq!(self.column_sum("plays"), plays, "{what}");
        assert_eq!(self.column_sum("lost"), 0, "{what}");

        // The interval log holds the same samples, interval by interval.
        let log = std::fs::read(self.dir.join("rtpload.hlog")).expect("rtpload.hlog");
        let mut in_log: BTreeMap<String, u64> = BTreeMap::new();
        let mut intervals = 0;
        for entry in IntervalLogIterator::new(&log) {
            match entry.unwrap_or_else(|e| panic!("{what}: rtpload.hlog: {e:?}")) {
                LogEntry::Interval(i) => {
                    let bytes = base64_decode(i.encoded_histogram());
                    let h: Histogram<u64> = Deserializer::new()
                        .deserialize(&mut Cursor::new(bytes))
                        .unwrap_or_else(|e| panic!("{what}: an interval does not decode: {e:?}"));
                    let tag = i.tag().map(|t| t.as_str().to_owned()).unwrap_or_default();
                    *in_log.entry(tag).or_default() += h.len();
                    intervals += 1;
                }
                LogEntry::StartTime(_) | LogEntry::BaseTime(_) => {}
            }
        }
        assert!(intervals > 0, "{what}: empty interval log");
        for name in HISTOGRAMS {
            assert_eq!(
                in_log.get(name).copied().unwrap_or(0),
                count(name),
                "{what}: {name} in the hlog"
            );
        }

        // The percentile distributions end at the total count.
        for name in HISTOGRAMS {
            let text = std::fs::read_to_string(self.dir.join(format!("{name}.hgrm"))).expect("an .hgrm file");
            assert!(text.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)"));
            let last = text
                .lines()
                .rfind(|l| !l.starts_with('#') && !l.trim().is_empty())
                .expect("rows");
            let cols: Vec<&str> = last.split_whitespace().collect();
            assert_eq!(
                cols[1], "1.000000000000",
                "{what}: {name}.hgrm ends at percentile 1: {last}"
            );
            assert_eq!(cols[2].parse::<u64>().ok(), Some(count(name)), "{what}: {name}.hgrm");
            assert!(text.contains(&format!("Total count    = {:12}", count(name))));
        }

        // The plot: one line per histogram, each named.
        let svg = std::fs::read_to_string(self.dir.join("latency.svg")).expect("latency.svg");
        assert!(svg.starts_with("<svg ") && svg.trim_end().ends_with("</svg>"), "{what}");
        assert_eq!(svg.matches("<path ").count(), HISTOGRAMS.len(), "{what}");
        for name in HISTOGRAMS {
            assert!(svg.contains(&format!(">{name}<")), "{what}: {name} not in the legend");
        }
    }
}

/// Standard base64, as the interval log encodes its histograms.
fn base64_decode(s: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c:?}"),
        }
    };
    let mut out = Vec::new();
    for chunk in s.trim_end_matches('=').as_bytes().chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= value(c) << (18 - 6 * i);
        }
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

#[test]
fn rtpload_plays_streamalot_over_udp_tcp_and_http() {
    const UDP: u32 = 24;
    const UDP_TICKS: u32 = 8;
    const TCP: u32 = 4;
    const HTTP: u32 = 4;
    let name = "rtpload-streamalot";
    let server = Server::start(&library(name, &[media().h264_mp4()]), &[]);
    let url = server.url("h264-aac.mp4");
    let out = scratch_dir().join(name);
    // All at once, against the one server.
    let udp = start_load(&url, "udp", UDP, 7, &out.join("udp"));
    // The RTP sockets read on a timer rather than on arrival: nothing is
    // lost or left unclaimed however the reads fall.
    let udp_ticks = start_load_with(
        &url,
        "udp",
        UDP_TICKS,
        20,
        7,
        &out.join("udp-ticks"),
        &["--read-interval-ms", "5"],
    );
    let tcp = start_load(&url, "tcp", TCP, 7, &out.join("tcp"));
    let http = start_load(&url, "http", HTTP, 7, &out.join("http"));
    let (udp, udp_ticks, tcp, http) = (udp.finish(), udp_ticks.finish(), tcp.finish(), http.finish());
    udp.check(u64::from(UDP));
    udp_ticks.check(u64::from(UDP_TICKS));
    tcp.check(u64::from(TCP));
    http.check(u64::from(HTTP));
    assert_eq!(udp.summary["transport"], "udp");
    assert_eq!(tcp.summary["transport"], "tcp");
    assert_eq!(http.summary["transport"], "http");

    // What the server says it sent is what arrived, play by play.
    let access_log = server.access_log.clone();
    server.stop_cleanly();
    agrees_with_the_access_log(
        &access_log,
        &[(&udp, "udp"), (&udp_ticks, "udp"), (&tcp, "tcp"), (&http, "http")],
    );
}

/// The access log's records of rtpload's sessions over each transport are
/// one per play, and count the packets and bytes rtpload received (summed
/// over the runs of that transport).
fn agrees_with_the_access_log(access_log: &Path, runs: &[(&Run, &str)]) {
    let log = parse_access_log(&std::fs::read_to_string(access_log).expect("the access log"));
    let number = |r: &HashMap<String, String>, field: &str| -> u64 {
        r[field]
            .parse()
            .unwrap_or_else(|_| panic!("{field} is not a number in {r:?}"))
    };
    let mut transports: Vec<&str> = runs.iter().map(|r| r.1).collect();
    transports.sort_unstable();
    transports.dedup();
    for transport in transports {
        let of = |path: &[&str]| -> u64 {
            runs.iter()
                .filter(|r| r.1 == transport)
                .map(|r| r.0.summary(path))
                .sum()
        };
        let lines: Vec<&HashMap<String, String>> = log
            .iter()
            .filter(|r| r["cs(User-Agent)"].starts_with("rtpload/") && r["transport"] == transport)
            .collect();
        // One per play, and one per replay cut short after its first
        // SETUP (see `check`), which opened a server session.
        let plays = of(&["sessions", "plays"]);
        let described = of(&["rtsp_methods", "DESCRIBE", "count"]);
        assert!(
            (plays..=described).contains(&(lines.len() as u64)),
            "{transport}: {} server sessions for {plays} plays and {described} DESCRIBEs ({} records in all)",
            lines.len(),
            log.len()
        );
        assert!(
            lines
                .iter()
                .all(|r| r["c-status"] == "200" && r["cs-uri-stem"] == "/h264-aac.mp4"),
            "{lines:?}"
        );
        let sent: u64 = lines.iter().map(|r| number(r, "s-pkts-sent")).sum();
        let bytes: u64 = lines.iter().map(|r| number(r, "sc-bytes")).sum();
        assert_eq!(
            sent,
            of(&["packets", "received"]),
            "{transport}: packets sent vs received"
        );
        assert_eq!(bytes, of(&["bytes", "received"]), "{transport}: bytes sent vs received");
        // The receiver reports told the server of no loss either.
        assert!(
            lines.iter().all(|r| r["c-pkts-lost"].parse::<i64>().unwrap_or(0) <= 0),
            "{lines:?}"
        );
    }
}

#[test]
fn rtpload_plays_500_tunnelled_sessions() {
    const SESSIONS: u32 = 500;
    let name = "rtpload-tunnels";
    let server = Server::start(&library(name, &[media().h264_mp4()]), &[]);
    let url = server.url("h264-aac.mp4");
    // A couple of tunnels first, so that what the server opens once (the
    // movie, its executors' own) is there before the count.
    let warm_up = start_load(&url, "http", 2, 2, &scratch_dir().join(name).join("warm-up")).finish();
    warm_up.check(2);
    server.wait_for_records(2, Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(500));
    let fds = server.open_fds();
    // Shorter than the clip: one play each, however slow the machine.
    let run = start_load_at(&url, "http", SESSIONS, 100, 4, &scratch_dir().join(name).join("run")).finish();
    run.check(u64::from(SESSIONS));
    let p99 = run.summary(&["histograms", "first_packet", "p99_us"]);
    let lateness = run.summary(&["histograms", "lateness", "p99_us"]);
    eprintln!("{SESSIONS} tunnelled sessions: PLAY to first packet p99 {p99} us, lateness p99 {lateness} us");
    // Every leg closed: the server holds what it held before.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while server.open_fds() > fds && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(server.open_fds(), fds, "descriptors after {SESSIONS} tunnels");
    let access_log = server.access_log.clone();
    server.stop_cleanly();
    agrees_with_the_access_log(&access_log, &[(&warm_up, "http"), (&run, "http")]);
}

#[test]
fn rtpload_plays_gstreamer_rtsp_server() {
    const UDP: u32 = 6;
    const TCP: u32 = 3;
    let name = "rtpload-gstreamer";
    let peer = GstPeer::start(media().h264_mp4(), name);
    let out = scratch_dir().join(name);
    let udp = start_load(&peer.url, "udp", UDP, 6, &out.join("udp"));
    let tcp = start_load(&peer.url, "tcp", TCP, 6, &out.join("tcp"));
    let (udp, tcp) = (udp.finish(), tcp.finish());
    udp.check(u64::from(UDP));
    tcp.check(u64::from(TCP));
    drop(peer);
}
