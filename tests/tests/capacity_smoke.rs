//! A small run of the capacity benchmark, to keep it working: a few
//! sessions against streamalot and GStreamer's server for a few seconds.
//! It checks correctness only (every session completed, no loss, every
//! file written and readable), never a timing: the benchmark judges a step
//! by its send lateness too, and on a loaded machine a few milliseconds of
//! lateness say nothing about the code, so that reason alone is let pass.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use streamalot_tests::{
    capacity_bench_binary, describe, media::media, rtpload_binary, run_within, scratch_dir, streamalot_binary,
};

/// A finished smoke run of the benchmark.
struct Smoke {
    /// Its `--out` directory.
    out: PathBuf,
    stdout: String,
    /// Its `report.md`.
    report: String,
}

/// Runs `capacity-bench --smoke` with `flags` on the test movie, writing
/// into the scratch directory `name`, and checks that it succeeded.
fn smoke(name: &str, flags: &[&str]) -> Smoke {
    let bin_dir = streamalot_binary().parent().expect("a directory").to_owned();
    assert_eq!(rtpload_binary().parent(), Some(bin_dir.as_path()));
    let out = scratch_dir().join(name);
    let _ = std::fs::remove_dir_all(&out);
    let mut cmd = Command::new(capacity_bench_binary());
    cmd.arg("--smoke")
        .args(flags)
        .arg("--bin-dir")
        .arg(&bin_dir)
        .arg("--movie")
        .arg(media().h264_mp4())
        .arg("--out")
        .arg(&out)
        .args(["--results", "-"]);
    let run = run_within(&mut cmd, Duration::from_secs(300));
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(
        run.status.success(),
        "{} failed ({}):\n{stdout}\n{}",
        describe(&cmd),
        run.status,
        String::from_utf8_lossy(&run.stderr)
    );
    let report = std::fs::read_to_string(out.join("report.md")).expect("report.md");
    Smoke { out, stdout, report }
}

impl Smoke {
    /// The cells of `server`'s row in the report.
    fn row(&self, server: &str) -> Vec<&str> {
        self.report
            .lines()
            .find(|l| l.starts_with(&format!("| {server} |")))
            .unwrap_or_else(|| panic!("no {server} row in the report:\n{}", self.report))
            .split('|')
            .map(str::trim)
            .collect()
    }

    /// `server`'s step held, or failed only its send lateness, and lost
    /// nothing.
    fn assert_held(&self, server: &str) {
        let r = self.row(server);
        // | server | sessions | held | lost | ...: "yes", or "no: " and the reasons.
        let reasons: Vec<&str> = match r[3].strip_prefix("no: ") {
            Some(why) => why.split(", ").collect(),
            None => {
                assert_eq!(r[3], "yes", "{server}: a held cell is yes or no:\n{}", self.report);
                Vec::new()
            }
        };
        let other: Vec<&str> = reasons
            .into_iter()
            .filter(|why| !why.starts_with("send lateness p99 "))
            .collect();
        assert!(other.is_empty(), "{server} did not hold: {other:?}\n{}", self.report);
        assert_eq!(r[4], "0", "{server} lost packets:\n{}", self.report);
    }

    /// The rtpload summary of the step in `step`'s directory.
    fn summary(&self, step: &str) -> serde_json::Value {
        let path = self.out.join(step).join("rtpload/summary.json");
        serde_json::from_str(&std::fs::read_to_string(&path).expect("summary.json")).expect("JSON")
    }
}

#[test]
fn the_capacity_benchmark_runs_and_writes_its_report() {
    let run = smoke("capacity", &[]);
    for server in ["streamalot", "GStreamer"] {
        run.assert_held(server);
    }
    // The raw limit's row is there (`row` panics without it).
    run.row("raw `sendmmsg` limit");

    let out = &run.out;
    let svg = std::fs::read_to_string(out.join("capacity.svg")).expect("capacity.svg");
    assert!(svg.starts_with("<svg") && svg.contains("<circle"), "an empty plot");
    for step in ["streamalot-4", "gstreamer-2"] {
        let dir = out.join(step);
        let summary = run.summary(step);
        assert_eq!(summary["packets"]["lost"], 0, "{step}: {summary}");
        assert!(summary["packets"]["received"].as_u64() > Some(0), "{step}: {summary}");
        for file in ["rtpload.hlog", "latency.svg", "lateness.hgrm", "sessions.csv"] {
            let path = dir.join("rtpload").join(file);
            assert!(
                std::fs::metadata(&path).is_ok_and(|m| m.len() > 0),
                "{step}: {} missing or empty",
                path.display()
            );
        }
    }
    // streamalot's own counters were read while the sessions played.
    let stats: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("streamalot-4/stats.json")).expect("stats.json"))
            .expect("JSON");
    assert!(stats["packets"].as_u64() > Some(0), "{stats}");
}

/// `--client-netns`: the client in a namespace of its own behind a veth
/// link; every session completes with nothing lost, the report says where
/// the client was, and the run leaves neither its namespace nor its
/// setting of `net.core.skb_defer_max` behind. With `--client-gro`, so
/// rtpload (`--gro`) takes the server's runs of datagrams as the link's end
/// coalesced them and must split them again to lose nothing.
#[test]
fn the_capacity_benchmark_runs_with_its_client_behind_a_link() {
    const SKB_DEFER_MAX: &str = "/proc/sys/net/core/skb_defer_max";
    let defer_max = std::fs::read_to_string(SKB_DEFER_MAX).expect(SKB_DEFER_MAX);
    let run = smoke("capacity-netns", &["--no-peer", "--client-netns", "--client-gro"]);
    let (stdout, report) = (&run.stdout, &run.report);
    let network = stdout
        .lines()
        .find(|l| l.starts_with("network: "))
        .unwrap_or_else(|| panic!("no network line:\n{stdout}"));
    let namespace = network
        .split_whitespace()
        .find(|w| w.starts_with("streamalot-bench-"))
        .unwrap_or_else(|| panic!("no namespace named: {network}"));
    assert!(report.contains("(`--client-netns`)"), "{report}");
    assert!(report.contains("(`--client-gro`)"), "{report}");
    assert!(stdout.lines().any(|l| l.starts_with("client: UDP GRO")), "{stdout}");
    run.assert_held("streamalot");
    let summary = run.summary("streamalot-4");
    assert_eq!(summary["packets"]["lost"], 0, "{summary}");
    assert!(summary["packets"]["received"].as_u64() > Some(0), "{summary}");

    let list = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(!list.contains(namespace), "{namespace} left behind:\n{list}");
    assert_eq!(
        std::fs::read_to_string(SKB_DEFER_MAX).expect(SKB_DEFER_MAX),
        defer_max,
        "net.core.skb_defer_max not put back"
    );
}

/// `--live`: each step as VoD and as viewers of one live broadcast of the
/// movie that rtpload publishes; both rows in the report, nothing lost,
/// every viewer at a key frame, the fan-out plot written.
#[test]
fn the_fan_out_benchmark_runs_live_beside_vod() {
    let run = smoke("capacity-live", &["--live", "--no-peer"]);
    assert!(run.report.contains("## Fan-out"), "{}", run.report);
    for server in ["streamalot", "streamalot live"] {
        run.assert_held(server);
    }
    let summary = run.summary("streamalot-live-4");
    assert!(summary["publisher"]["packets"].as_u64() > Some(0), "{summary}");
    assert_eq!(
        summary["histograms"]["first_key_frame"]["count"].as_u64(),
        Some(4),
        "{summary}"
    );
    let out = &run.out;
    let svg = std::fs::read_to_string(out.join("capacity-live.svg")).expect("capacity-live.svg");
    assert!(svg.starts_with("<svg") && svg.contains("<circle"), "an empty plot");
}
