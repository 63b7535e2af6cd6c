//! Retransmission on a lossy network: in a network namespace of the test's
//! own, nftables drops 3% of the server's RTP at random on its way to the
//! clients (`numgen random mod 100 < 3 drop`; see `lossy`).
//!
//! - GStreamer's `rtspsrc do-retransmission=true` over UDP, against a
//!   server run with `--nack`, sets up RTP/AVPF, NACKs what it misses and
//!   takes the RTX packets: all but a tiny fraction of the pictures come
//!   out as they are in the file.
//! - ffmpeg, which sets up plain RTP/AVP, gets no retransmission from the
//!   same server on the same network, and shows the damage.
//!
//! - rtpload with `--nack` (RTP/AVPF, generic NACKs, RTX) and with
//!   `--reliable-udp` (DSS's `x-Retransmit: our-retransmit`, `qtak` acks,
//!   resends on the server's retransmission timeout) gets all but a tiny
//!   fraction of the packets, and says how many were lost on the wire and
//!   how many were repaired.
//!
//! Each prints what was lost on the wire and what was repaired.
//!
//! The server runs with its defaults otherwise, so the repaired sessions
//! are sent ahead of real time (Instant-On) and must still be repaired:
//! the history keeps a packet sent ahead until `rtx-time` past its due
//! time, which is when GStreamer's jitter buffer stops asking for it.

use std::collections::HashMap;
use std::time::Duration;

use streamalot_tests::ffmpeg::{framemd5, FrameHashes};
use streamalot_tests::gstreamer::{file_video_hashes, rtsp_video_hashes_with};
use streamalot_tests::lossy::LossyNet;
use streamalot_tests::media::media;
use streamalot_tests::server::{free_udp_run, library, Server};
use streamalot_tests::{describe, require_tool, rtpload_binary, run_within, scratch_dir};

const LOSS_PERCENT: u8 = 3;
const TIMEOUT: Duration = Duration::from_secs(60);
/// Plays of the clip by each client: more packets, so that the comparison
/// says something however the dice fall.
const PLAYS: usize = 2;

/// How many of `want` (the file's pictures) are among `got`, each counted
/// once: a picture lost or damaged is missing.
fn matching(want: &[String], got: &[String]) -> usize {
    let mut have: HashMap<&str, usize> = HashMap::new();
    for g in got {
        *have.entry(g.as_str()).or_default() += 1;
    }
    want.iter()
        .filter(|w| have.get_mut(w.as_str()).filter(|n| **n > 0).map(|n| *n -= 1).is_some())
        .count()
}

fn all_stats(stats_json: &std::path::Path) -> serde_json::Value {
    let text =
        std::fs::read_to_string(stats_json).unwrap_or_else(|e| panic!("cannot read {}: {e}", stats_json.display()));
    serde_json::from_str(&text).expect("the stats JSON")
}

fn repair_stats(stats_json: &std::path::Path) -> serde_json::Value {
    all_stats(stats_json)["repair"].clone()
}

/// Packets the server sent ahead of real time.
fn ahead_packets(stats_json: &std::path::Path) -> u64 {
    all_stats(stats_json)["ahead_packets"].as_u64().unwrap_or(0)
}

/// The lossy namespace and a server with `--nack` behind it serving the
/// H.264 + AAC clip from library `name`, and where its statistics go.
fn lossy_server(name: &str) -> (LossyNet, Server, std::path::PathBuf) {
    let clip = media().clip("h264-aac.mp4");
    let lib = library(name, &[clip.path.as_path()]);
    let stats_json = lib.with_extension("stats.json");
    let _ = std::fs::remove_file(&stats_json);
    // The address the server listens on is the namespace's way out, and
    // the loss is on the server's RTP ports: the namespace comes first.
    let rtp_base = free_udp_run(16);
    let net = LossyNet::new(LOSS_PERCENT, (rtp_base, rtp_base + 15));
    let server = Server::start_with_ports(
        net.server_ip.into(),
        rtp_base,
        &lib,
        &["--nack", "--stats-json", stats_json.to_str().expect("a UTF-8 path")],
    );
    (net, server, stats_json)
}

#[test]
fn gstreamer_is_repaired_and_ffmpeg_without_retransmission_is_not() {
    require_tool("ffmpeg");
    require_tool("gst-launch-1.0");
    let (net, server, stats_json) = lossy_server("repair-loss");
    let clip = media().clip("h264-aac.mp4");
    let url = server.url(clip.name);

    let want = file_video_hashes(&clip.path, TIMEOUT);
    assert!(!want.is_empty(), "GStreamer decoded no pictures from the file");

    // GStreamer, with retransmission.
    let mut gst_matching = 0;
    for _ in 0..PLAYS {
        let got = rtsp_video_hashes_with(
            net.command("gst-launch-1.0"),
            &url,
            &["protocols=udp", "do-retransmission=true"],
            TIMEOUT,
        );
        gst_matching += matching(&want, &got);
    }
    let gst_lost = net.dropped();
    net.reset();

    // ffmpeg, without.
    let file = framemd5(
        &[],
        clip.path.to_str().expect("a UTF-8 path"),
        &["-map", "0:v:0"],
        TIMEOUT,
    );
    let ff_want: Vec<String> = file.hashes(0).into_iter().map(|(_, h)| h).collect();
    let mut ff_matching = 0;
    for _ in 0..PLAYS {
        let mut cmd = net.command("ffmpeg");
        cmd.args(["-hide_banner", "-nostdin", "-loglevel", "error"])
            .args(["-rtsp_transport", "udp", "-i", &url])
            .args(["-map", "0:v:0", "-f", "framemd5", "-"]);
        let out = run_within(&mut cmd, TIMEOUT);
        assert!(
            out.status.success(),
            "{} failed: {}",
            describe(&cmd),
            String::from_utf8_lossy(&out.stderr)
        );
        let got = FrameHashes::parse(&String::from_utf8_lossy(&out.stdout));
        let got: Vec<String> = got.hashes(0).into_iter().map(|(_, h)| h).collect();
        ff_matching += matching(&ff_want, &got);
    }
    let ff_lost = net.dropped();

    let stopped = server.stop();
    let repair = repair_stats(&stats_json);
    let gst_total = want.len() * PLAYS;
    let ff_total = ff_want.len() * PLAYS;
    let ahead = ahead_packets(&stats_json);
    println!(
        "GStreamer with NACK/RTX: {gst_lost} RTP packets lost on the wire, {} sent again ({} NACKs, {} too old); \
         {gst_matching} of {gst_total} pictures as in the file; {ahead} packets sent ahead of real time",
        repair["resent"], repair["nacks"], repair["too_old"]
    );
    println!(
        "ffmpeg without: {ff_lost} RTP packets lost on the wire; {ff_matching} of {ff_total} pictures as in the file"
    );
    println!("server's repair counts: {repair}");

    assert!(gst_lost > 0, "the network lost nothing: the test tells nothing");
    // Only GStreamer's sessions are repaired, so only they went ahead.
    assert!(ahead > 0, "GStreamer's repaired sessions were not sent ahead");
    let resent = repair["resent"].as_u64().unwrap_or(0);
    assert!(resent > 0, "nothing was sent again: {repair}\n{}", stopped.stderr);
    // All but a tiny fraction: a repair can itself be lost, and one lost
    // twice in a row may come too late for the jitter buffer.
    assert!(
        gst_matching * 100 >= gst_total * 98,
        "GStreamer got {gst_matching} of {gst_total} pictures right ({gst_lost} lost, {resent} resent)"
    );
    // ffmpeg pays for what it lost: RTP/AVP sessions get no history.
    assert!(
        ff_lost > 0,
        "the network lost nothing of ffmpeg's: the contrast tells nothing"
    );
    assert!(
        ff_matching < ff_total,
        "ffmpeg got every picture although {ff_lost} packets were lost"
    );
}

/// rtpload in the namespace, `sessions` sessions of `seconds` each asking
/// for repair with `flag`; its summary.
fn rtpload_repaired(net: &LossyNet, url: &str, flag: &str, sessions: u32, seconds: u32) -> serde_json::Value {
    let out = scratch_dir().join(format!("rtpload{flag}"));
    let _ = std::fs::remove_dir_all(&out);
    let mut cmd = net.command(rtpload_binary().to_str().expect("a UTF-8 path"));
    cmd.arg(url)
        .arg(flag)
        .args(["--sessions", &sessions.to_string()])
        .args(["--ramp", "20"])
        .args(["--duration", &seconds.to_string()])
        .args(["--transport", "udp", "--quiet"])
        .arg("--out")
        .arg(&out);
    let run = run_within(&mut cmd, TIMEOUT);
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{} failed:\n{stdout}\n{stderr}", describe(&cmd));
    if let Some(line) = stdout
        .lines()
        .chain(stderr.lines())
        .find(|l| l.trim_start().starts_with("repair"))
    {
        println!("rtpload {flag}: {}", line.trim());
    }
    let text = std::fs::read_to_string(out.join("summary.json")).expect("rtpload's summary.json");
    serde_json::from_str(&text).expect("the summary JSON")
}

/// The same 3 % loss, for rtpload with each of the two retransmissions:
/// what the wire lost comes back, but for a tiny fraction.
#[test]
fn rtpload_is_repaired_by_nack_rtx_and_by_reliable_udp() {
    let (net, server, stats_json) = lossy_server("repair-loss-rtpload");
    let url = server.url(media().clip("h264-aac.mp4").name);
    let mut seen = Vec::new();
    for flag in ["--nack", "--reliable-udp"] {
        net.reset();
        let summary = rtpload_repaired(&net, &url, flag, 8, 12);
        let dropped = net.dropped();
        let packets = &summary["packets"];
        let repair = &summary["repair"];
        let received = packets["received"].as_u64().unwrap_or(0);
        let lost = packets["lost"].as_u64().unwrap_or(u64::MAX);
        let on_wire = repair["lost_on_wire"].as_u64().unwrap_or(0);
        let repaired = repair["repaired"].as_u64().unwrap_or(0);
        let open = repair["open_at_end"].as_u64().unwrap_or(u64::MAX);
        println!(
            "rtpload {flag}: {dropped} RTP packets dropped by the network, {on_wire} seen lost on the wire, \
             {repaired} repaired, {lost} lost in the end of {} expected; {repair}",
            received + lost
        );
        assert_eq!(summary["sessions"]["failed"], 0, "{summary}");
        assert!(
            on_wire > 0 && dropped > 0,
            "{flag}: the network lost nothing: the test tells nothing"
        );
        // All but a tiny fraction: a repair may be lost too, one lost again
        // and again comes too late, and a session whose time runs out
        // loses what was still to come again (reliable UDP's resends wait
        // an RTO of 600 ms or more).
        assert!(
            lost * 1000 <= (received + lost) * 5,
            "{flag}: {lost} of {} packets lost in the end ({on_wire} on the wire, {repaired} repaired)",
            received + lost
        );
        // Of the losses settled before the sessions ended: rtpload's time
        // runs out in mid-play, and the losses of the last moments were
        // still awaited at its TEARDOWN (a reliable-UDP resend waits an RTO
        // of 600 ms or more); they say nothing about repair.
        assert!(open <= on_wire, "{repair}");
        let settled = on_wire - open;
        assert!(
            settled > 0 && repaired * 10 >= settled * 9,
            "{flag}: {repaired} of {settled} settled losses repaired ({open} still awaited at the end)"
        );
        seen.push((flag, repair.clone()));
    }
    let stopped = server.stop();
    let counts = repair_stats(&stats_json);
    println!("server's repair counts: {counts}");
    assert!(
        ahead_packets(&stats_json) > 0,
        "the repaired sessions were not sent ahead"
    );
    assert!(
        counts["resent"].as_u64().unwrap_or(0) > 0,
        "{counts}\n{}",
        stopped.stderr
    );
}
