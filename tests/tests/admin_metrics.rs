//! `/metrics` against `streamalot serve`, end to end: after rtpload runs
//! (UDP sessions, whose requests the control core answers, and interleaved
//! TCP ones, answered on their shard), the scrape parses with Prometheus's
//! own Python parser (`prometheus_client`), and its counters agree with the
//! server's access log and with rtpload's summary.json: packets and bytes
//! sent, sessions, PLAYs and their first packets, RTSP requests by method.
//! It is answered to loopback and refused elsewhere unless configured.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use streamalot_tests::admin::{http, http_from, parse_prometheus, sum_of, PromSample};
use streamalot_tests::media::media;
use streamalot_tests::server::{library, Server};
use streamalot_tests::{rtpload_binary, run_within, scratch_dir};

/// Runs rtpload to the end and returns its summary.json.
fn rtpload(url: &str, transport: &str, sessions: u32, out: PathBuf) -> Value {
    let _ = std::fs::remove_dir_all(&out);
    let mut cmd = Command::new(rtpload_binary());
    cmd.arg(url)
        .args(["--sessions", &sessions.to_string(), "--ramp", "20", "--duration", "3"])
        .args(["--transport", transport, "--max-loss", "0"])
        .arg("--out")
        .arg(&out);
    let done = run_within(&mut cmd, Duration::from_secs(120));
    assert!(
        done.status.success(),
        "rtpload failed:\n{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let text = std::fs::read_to_string(out.join("summary.json")).expect("summary.json");
    serde_json::from_str(&text).expect("summary.json parses")
}

fn scrape(server: &Server) -> (String, Vec<PromSample>) {
    let r = http(server.addr, "GET", "/metrics", &[], &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.header("Content-Type")
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        r.header("Content-Type")
    );
    let text = r.text();
    (text.clone(), parse_prometheus(&text))
}

#[test]
fn metrics_parse_and_agree_with_the_access_log_and_rtpload() {
    let clip = media().clip("h264-aac.mp4");
    let server = Server::start(&library("metrics", &[&clip.path]), &["--shards", "2"]);
    let url = server.url(clip.name);
    let dir = scratch_dir().join("metrics-run");
    let udp = rtpload(&url, "udp", 3, dir.join("udp"));
    let tcp = rtpload(&url, "tcp", 3, dir.join("tcp"));
    let runs = [&udp, &tcp];
    let total = |path: &[&str]| -> u64 {
        runs.iter()
            .map(|r| {
                path.iter()
                    .fold(*r, |v, k| &v[*k])
                    .as_u64()
                    .unwrap_or_else(|| panic!("{path:?} in {r}"))
            })
            .sum()
    };
    let plays = total(&["sessions", "plays"]);
    // Every session has ended and been logged.
    let records = server.wait_for_records(plays as usize, Duration::from_secs(30));
    let (text, samples) = scrape(&server);
    std::fs::write(dir.join("metrics.txt"), &text).unwrap();
    let sum = |name: &str, labels: &[(&str, &str)]| sum_of(&samples, name, labels) as u64;

    let logged = |field: &str| -> u64 { records.iter().map(|r| r[field].parse::<u64>().unwrap()).sum() };
    // Packets and bytes: the server's counters, its access log, and what
    // rtpload received (no loss) are one figure.
    assert_eq!(
        sum("streamalot_rtp_packets_sent_total", &[]),
        logged("s-pkts-sent"),
        "{text}"
    );
    assert_eq!(sum("streamalot_rtp_bytes_sent_total", &[]), logged("sc-bytes"));
    assert_eq!(
        sum("streamalot_rtp_packets_sent_total", &[]),
        total(&["packets", "received"])
    );
    assert_eq!(
        sum("streamalot_rtp_bytes_sent_total", &[]),
        total(&["bytes", "received"])
    );
    assert_eq!(total(&["packets", "lost"]), 0);
    // Both shards sent some.
    for shard in ["0", "1"] {
        assert!(
            sum("streamalot_rtp_packets_sent_total", &[("shard", shard)]) > 0,
            "shard {shard}: {text}"
        );
    }
    // Sessions: one per play, each logged once.
    assert_eq!(sum("streamalot_sessions_started_total", &[]), records.len() as u64);
    assert_eq!(sum("streamalot_sessions_ended_total", &[]), records.len() as u64);
    assert_eq!(records.len() as u64, plays);
    assert_eq!(sum("streamalot_sessions", &[]), 0, "none left");
    // Each PLAY answered 200 and timed to its first packet.
    assert_eq!(
        sum(
            "streamalot_rtsp_requests_total",
            &[("method", "PLAY"), ("status", "200")]
        ),
        plays
    );
    assert_eq!(sum("streamalot_play_first_packet_seconds_count", &[]), plays);
    assert_eq!(total(&["histograms", "first_packet", "count"]), plays);
    assert_eq!(
        sum("streamalot_play_first_packet_seconds_bucket", &[("le", "+Inf")]),
        plays,
        "the +Inf bucket holds every count"
    );
    // RTSP requests by method: what rtpload had answered.
    for method in ["DESCRIBE", "SETUP", "PLAY", "TEARDOWN"] {
        assert_eq!(
            sum("streamalot_rtsp_requests_total", &[("method", method)]),
            total(&["rtsp_methods", method, "count"]),
            "{method}: {text}"
        );
    }
    // UDP sessions' requests are answered on the control core; an
    // interleaved session's connection goes to its shard with its first
    // SETUP, which the shard answers.
    let setups = |r: &Value| r["rtsp_methods"]["SETUP"]["count"].as_u64().unwrap();
    assert_eq!(
        sum(
            "streamalot_rtsp_requests_total",
            &[("shard", "control"), ("method", "SETUP")]
        ),
        setups(&udp),
        "{text}"
    );
    let on_shards = sum("streamalot_rtsp_requests_total", &[("method", "SETUP")])
        - sum(
            "streamalot_rtsp_requests_total",
            &[("shard", "control"), ("method", "SETUP")],
        );
    assert_eq!(on_shards, setups(&tcp), "{text}");
    // Send lateness: a histogram per shard whose count is the packets sent.
    assert_eq!(
        sum("streamalot_send_lateness_seconds_count", &[]),
        sum("streamalot_rtp_packets_sent_total", &[])
    );
    for s in samples
        .iter()
        .filter(|s| s.family == "streamalot_send_lateness_seconds")
    {
        assert_eq!(s.kind, "histogram");
    }
    // Nothing dropped; rtpload's receiver reports were read.
    assert_eq!(sum("streamalot_packets_dropped_total", &[]), 0, "{text}");
    assert_eq!(sum("streamalot_rtcp_reported_lost_packets_total", &[]), 0);
    assert!(sum_of(&samples, "streamalot_uptime_seconds", &[]) > 0.0);
    // The families Prometheus sees, with their types.
    for (family, kind) in [
        ("streamalot_sessions", "gauge"),
        ("streamalot_rtp_packets_sent", "counter"),
        ("streamalot_rtsp_requests", "counter"),
        ("streamalot_play_first_packet_seconds", "histogram"),
        ("streamalot_rtcp_jitter_seconds", "histogram"),
    ] {
        assert!(
            samples.iter().any(|s| s.family == family && s.kind == kind),
            "no {kind} {family}: {text}"
        );
    }

    // OpenMetrics, for a scraper that asks for it.
    let om = http(
        server.addr,
        "GET",
        "/metrics",
        &[("Accept", "application/openmetrics-text;version=1.0.0,text/plain;q=0.5")],
        &[],
    );
    assert!(om
        .header("Content-Type")
        .is_some_and(|t| t.starts_with("application/openmetrics-text")));
    assert!(om.text().ends_with("# EOF\n"));
    // Not for other addresses unless configured.
    assert_eq!(
        http_from([127, 0, 0, 2], server.addr, "GET", "/metrics", &[]).status,
        200,
        "127.0.0.0/8 is loopback"
    );
    drop(server);
    let strict = Server::start(
        &library("metrics-strict", &[&clip.path]),
        &["--metrics-allow", "127.0.0.1"],
    );
    assert_eq!(
        http_from([127, 0, 0, 2], strict.addr, "GET", "/metrics", &[]).status,
        403
    );
    assert_eq!(http(strict.addr, "GET", "/metrics", &[], &[]).status, 200);
}
