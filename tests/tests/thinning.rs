//! Thinning: a client on a link slower than the movie, over TCP.
//!
//! In a network namespace of the test's own, `tc`'s token bucket (`tbf`)
//! limits what reaches ffmpeg to well under the movie's bit rate, though
//! above what its key frames and audio take. The server's queue for the
//! connection fills; rather than let it overflow and lose random packets
//! (broken pictures until the next key frame, and a decoder without its
//! references), the server thins the video: B-frames, then P-frames, down
//! to key frames only. So:
//!
//! - no packet is lost to a full queue (the server's `dropped_tcp` stays 0);
//! - every key frame reaches ffmpeg and decodes bit for bit as in the file;
//! - the access log shows the frames thinned (`x-frames-thinned`);
//! - once the limit is lifted the video thickens again, and the movie's
//!   last seconds decode, every picture, as in the file.

use std::collections::HashSet;
use std::thread;
use std::time::Duration;

use streamalot_tests::ffmpeg::{framemd5, key_frames, FrameHashes};
use streamalot_tests::lossy::LossyNet;
use streamalot_tests::media::slow_link_movie;
use streamalot_tests::server::{free_udp_run, library, Server};
use streamalot_tests::{describe, require_tool, run_within};

const SECONDS: u32 = 20;
/// The link while limited: the movie takes about 580 kbit/s, its key
/// frames and audio about 130.
const LIMIT_KBIT: u32 = 200;
/// When the limit is lifted, after PLAY.
const LIFT_AFTER: Duration = Duration::from_secs(8);
/// The movie's last seconds, which must be whole again.
const WHOLE_AT_END: f64 = 4.0;
const TIMEOUT: Duration = Duration::from_secs(90);

/// (pts in ns, hash) of every picture.
fn pictures(h: &FrameHashes) -> Vec<(i64, String)> {
    let (num, den) = h.time_base.get(&0).copied().unwrap_or((1, 1));
    h.frames(0)
        .iter()
        .map(|f| (f.pts * num * 1_000_000_000 / den.max(1), f.hash.clone()))
        .collect()
}

#[test]
fn a_slow_tcp_reader_is_thinned_keeps_every_key_frame_and_comes_back_to_full_quality() {
    // `tc` comes with iproute2, which the namespace needs anyway.
    require_tool("ffprobe");
    let clip = slow_link_movie(SECONDS);
    let lib = library("thinning", &[clip.as_path()]);
    let stats_json = lib.with_extension("stats.json");
    let _ = std::fs::remove_file(&stats_json);
    let rtp_base = free_udp_run(16);
    let net = LossyNet::new(0, (rtp_base, rtp_base + 15));
    net.limit(LIMIT_KBIT);
    let server = Server::start_with_ports(
        net.server_ip.into(),
        rtp_base,
        &lib,
        &[
            "--tcp-queue-bytes",
            "64K",
            "--stats-json",
            stats_json.to_str().expect("a UTF-8 path"),
        ],
    );
    let url = server.url("slow-link.mp4");

    let mut cmd = net.command("ffmpeg");
    cmd.args(["-hide_banner", "-nostdin", "-loglevel", "error"])
        .args(["-rtsp_transport", "tcp", "-i", &url])
        .args(["-map", "0:v:0", "-f", "framemd5", "-"]);
    let what = describe(&cmd);
    let client = thread::spawn(move || run_within(&mut cmd, TIMEOUT));
    thread::sleep(LIFT_AFTER);
    eprintln!("lifting the limit: {}", net.qdisc());
    net.unlimit();
    let out = client.join().expect("the ffmpeg thread");
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = pictures(&FrameHashes::parse(&String::from_utf8_lossy(&out.stdout)));
    let records = server.wait_for_records(1, Duration::from_secs(20));
    let stopped = server.stop();

    let file = pictures(&framemd5(
        &[],
        clip.to_str().expect("a UTF-8 path"),
        &["-map", "0:v:0"],
        TIMEOUT,
    ));
    let keys: HashSet<i64> = key_frames(&clip).into_iter().collect();
    let got_hashes: HashSet<&str> = got.iter().map(|(_, h)| h.as_str()).collect();
    let stats: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&stats_json).expect("the stats JSON")).expect("JSON");
    let record = &records[0];
    println!(
        "{} of {} pictures decoded; server: {} frames thinned ({} packets), {} packets dropped on full queues; \
         access log x-frames-thinned {}",
        got.len(),
        file.len(),
        stats["thinned"]["frames"],
        stats["thinned"]["packets"],
        stats["dropped_tcp"],
        record["x-frames-thinned"]
    );

    assert_eq!(stats["dropped_tcp"], 0, "the queue overflowed:\n{}", stopped.stderr);
    let thinned: u64 = record["x-frames-thinned"].parse().unwrap_or(0);
    assert!(thinned > 0, "nothing was thinned: {record:?}\n{}", stopped.stderr);
    assert_eq!(record["transport"], "tcp");
    assert!(
        got.len() < file.len(),
        "every picture came through a link too slow for them"
    );
    // Every key frame, bit for bit.
    let key_pictures: Vec<&(i64, String)> = file.iter().filter(|(pts, _)| keys.contains(pts)).collect();
    assert_eq!(
        key_pictures.len(),
        keys.len(),
        "the file's key frames by ffprobe and framemd5"
    );
    for (pts, hash) in &key_pictures {
        assert!(
            got_hashes.contains(hash.as_str()),
            "the key frame at {:.2} s did not come through whole",
            *pts as f64 / 1e9
        );
    }
    // Full quality again at the end: every picture of the last seconds.
    let end = file.iter().map(|f| f.0).max().unwrap_or(0);
    let tail: Vec<&(i64, String)> = file
        .iter()
        .filter(|(pts, _)| (end - pts) as f64 / 1e9 < WHOLE_AT_END)
        .collect();
    let missing: Vec<f64> = tail
        .iter()
        .filter(|(_, h)| !got_hashes.contains(h.as_str()))
        .map(|(pts, _)| *pts as f64 / 1e9)
        .collect();
    assert!(
        missing.is_empty(),
        "pictures of the last {WHOLE_AT_END} s missing or damaged at {missing:?}\n{}",
        stopped.stderr
    );
}
