//! Thinning by lateness: a reliable-UDP client on a link slower than the
//! movie.
//!
//! In a network namespace of the test's own, `tc`'s token bucket (`tbf`)
//! limits what reaches rtpload (`--reliable-udp`, DSS's `x-Retransmit` with
//! `qtak` acks) to well under the movie's bit rate. What the link drops is
//! not acked; the server's congestion window fills and holds the session
//! back, so its packets go later and later, and the server thins the video
//! by that lateness (DSS's thresholds) rather than fall ever further behind.
//! The access log shows it (`x-frames-thinned`), and the statistics the
//! rounds the window held the session back.

use std::time::Duration;

use streamalot_tests::lossy::LossyNet;
use streamalot_tests::media::slow_link_movie;
use streamalot_tests::server::{free_udp_run, library, Server};
use streamalot_tests::{describe, rtpload_binary, run_within, scratch_dir};

const SECONDS: u32 = 20;
/// The link: the movie takes about 580 kbit/s.
const LIMIT_KBIT: u32 = 200;
const TIMEOUT: Duration = Duration::from_secs(90);

#[test]
fn a_reliable_udp_session_on_a_slow_link_is_thinned_by_lateness() {
    let clip = slow_link_movie(SECONDS);
    let lib = library("thinning-reliable", &[clip.as_path()]);
    let stats_json = lib.with_extension("stats.json");
    let _ = std::fs::remove_file(&stats_json);
    let rtp_base = free_udp_run(16);
    let net = LossyNet::new(0, (rtp_base, rtp_base + 15));
    net.limit(LIMIT_KBIT);
    let server = Server::start_with_ports(
        net.server_ip.into(),
        rtp_base,
        &lib,
        &["--stats-json", stats_json.to_str().expect("a UTF-8 path")],
    );
    let url = server.url("slow-link.mp4");
    let out = scratch_dir().join("rtpload-thinning-reliable");
    let _ = std::fs::remove_dir_all(&out);
    let mut cmd = net.command(rtpload_binary().to_str().expect("a UTF-8 path"));
    cmd.arg(&url)
        .args([
            "--reliable-udp",
            "--transport",
            "udp",
            "--sessions",
            "1",
            "--duration",
            "12",
            "--quiet",
        ])
        .args(["--media-timeout", "30"])
        .arg("--out")
        .arg(&out);
    let run = run_within(&mut cmd, TIMEOUT);
    eprintln!("{}", net.qdisc());
    let stdout = String::from_utf8_lossy(&run.stdout);
    println!(
        "{} : {}",
        describe(&cmd),
        stdout
            .lines()
            .filter(|l| l.contains("repair") || l.contains("loss"))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    let records = server.wait_for_records(1, Duration::from_secs(20));
    let stopped = server.stop();
    let stats: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&stats_json).expect("the stats JSON")).expect("JSON");
    let record = &records[0];
    println!(
        "server: {} frames thinned, {} rounds held back by the window, {} resends; access log x-frames-thinned {}",
        stats["thinned"]["frames"],
        stats["repair"]["reliable"]["flow_controlled"],
        stats["repair"]["reliable"]["resends"],
        record["x-frames-thinned"]
    );
    assert!(
        stats["repair"]["reliable"]["flow_controlled"].as_u64().unwrap_or(0) > 0,
        "the window never held the session back"
    );
    let thinned: u64 = record["x-frames-thinned"].parse().unwrap_or(0);
    assert!(thinned > 0, "nothing was thinned: {record:?}\n{}", stopped.stderr);
    assert_eq!(record["transport"], "udp");
    assert!(!stopped.stderr.contains("panicked"), "{}", stopped.stderr);
}
