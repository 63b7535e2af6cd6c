//! A session's life around its media: RTCP sender reports while playing, the
//! BYE at the end, the end of a session whose connection goes away, what an
//! operator's signals do (including SIGHUP's reopening of a rotated access
//! log), a movie replaced on disk, a graceful shutdown that says goodbye to
//! every client and keeps every log line, and a second server started on a
//! port already served.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use loader::Movie;
use streamalot_tests::media::media;
use streamalot_tests::rtp::loader_packets;
use streamalot_tests::rtsp::{Connection, Lower, Player, Stream};
use streamalot_tests::server::{free_tcp_port, free_udp_run, library, parse_access_log, Server};
use streamalot_tests::{run_within, spawn, streamalot_binary, wait_with_timeout};

/// The fields of an RTCP sender report (RFC 3550 section 6.4.1).
#[derive(Debug, Clone, Copy)]
struct SenderReport {
    ssrc: u32,
    ntp_secs: u32,
    packets: u32,
    octets: u32,
}

/// Every SR in a compound RTCP datagram, and whether an SDES in it carries a
/// non-empty CNAME for `ssrc`.
fn sender_reports(datagram: &[u8], ssrc: u32) -> (Vec<SenderReport>, bool) {
    let (mut reports, mut cname) = (Vec::new(), false);
    let mut rest = datagram;
    while rest.len() >= 8 && rest[0] >> 6 == 2 {
        let len = 4 * (usize::from(u16::from_be_bytes([rest[2], rest[3]])) + 1);
        let Some(p) = rest.get(..len) else { break };
        let word = |at: usize| u32::from_be_bytes([p[at], p[at + 1], p[at + 2], p[at + 3]]);
        match p[1] {
            200 if len >= 28 => reports.push(SenderReport {
                ssrc: word(4),
                ntp_secs: word(8),
                packets: word(20),
                octets: word(24),
            }),
            // SDES: chunks of SSRC then items (type, length, text).
            202 if len >= 12 && word(4) == ssrc => cname |= p[8] == 1 && p[9] > 0,
            _ => {}
        }
        rest = &rest[len..];
    }
    (reports, cname)
}

/// Seconds since 1900 (NTP's epoch) now.
fn ntp_now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
        + 2_208_988_800
}

#[test]
fn sender_reports_count_what_was_sent_and_bye_ends_each_stream() {
    let clip = media().h264_mp4();
    let server = Server::start(&library("reports", &[clip]), &[]);
    let movie = Movie::open(clip).expect("the clip");
    for lower in [Lower::Udp, Lower::Tcp] {
        let mut player = Player::setup(server.addr, &server.url("h264-aac.mp4"), lower);
        player.play(None);
        player.receive_to_the_end(Duration::from_secs(60));
        for (s, hint) in player.streams.iter().zip(movie.hint_tracks()) {
            let what = format!("{lower:?}, track {}", hint.id);
            let hinted = loader_packets(&movie, hint.id);
            let octets: usize = hinted.iter().map(|p| p.payload.len()).sum();
            let mut last = None;
            for d in &s.rtcp {
                let (reports, cname) = sender_reports(d, s.ssrc);
                assert!(cname, "{what}: an RTCP packet without our CNAME");
                for r in reports {
                    assert_eq!(r.ssrc, s.ssrc, "{what}: SR from another SSRC");
                    let skew = (i64::from(r.ntp_secs) - ntp_now_secs() as i64).abs();
                    assert!(skew < 120, "{what}: SR wall clock {skew} s off");
                    last = Some(r);
                }
            }
            let last = last.unwrap_or_else(|| panic!("{what}: no sender report"));
            // The report that comes with the BYE counts everything.
            assert!(s.said_bye(), "{what}: no BYE");
            assert_eq!(
                last.packets as usize,
                hinted.len(),
                "{what}: the last SR's packet count"
            );
            assert_eq!(last.octets as usize, octets, "{what}: the last SR's octet count");
            assert_eq!(s.packets.len(), hinted.len(), "{what}: packets received");
        }
        assert_eq!(player.control("TEARDOWN", &[]).status, 200);
    }
}

#[test]
fn a_session_ends_when_its_connection_closes() {
    let clip = media().h264_mp4();
    let server = Server::start(&library("hangup", &[clip]), &[]);
    let mut player = Player::setup(server.addr, &server.url("h264-aac.mp4"), Lower::Tcp);
    player.play(None);
    assert!(player.receive_until(Duration::from_secs(30), |s| s[0].packets.len() >= 10));
    drop(player);
    // Ended by the hang-up, not by the media running out: it sent less than
    // the whole movie.
    let movie = Movie::open(clip).expect("the clip");
    let whole: usize = movie.hint_tracks().map(|h| loader_packets(&movie, h.id).len()).sum();
    let record = &server.wait_for_records(1, Duration::from_secs(30))[0];
    let sent: usize = record["s-pkts-sent"].parse().expect("a count");
    assert!(
        sent < whole,
        "the session sent all {whole} packets: it outlived its connection"
    );
    assert_eq!(record["transport"], "tcp");
}

#[test]
fn a_replaced_movie_is_described_anew() {
    let m = media();
    let dir = library("replace", &[m.h264_mp4(), &m.clip("h263-aac.3gp").path]);
    std::fs::rename(dir.join("h264-aac.mp4"), dir.join("channel.mp4")).expect("rename");
    let server = Server::start(&dir, &[]);
    let url = server.url("channel.mp4");
    let mut conn = Connection::connect(server.addr);
    let before = conn.request("DESCRIBE", &url, &[]);
    assert_eq!(before.status, 200);
    assert!(String::from_utf8_lossy(&before.body).contains("H264/90000"));
    // A new version renamed into place, as operators are told to.
    std::fs::rename(dir.join("h263-aac.3gp"), dir.join("channel.mp4")).expect("rename over");
    let after = conn.request("DESCRIBE", &url, &[]);
    assert_eq!(after.status, 200);
    let sdp = String::from_utf8_lossy(&after.body);
    assert!(
        sdp.contains("H263") && !sdp.contains("H264"),
        "the old SDP is served:\n{sdp}"
    );
}

#[test]
fn signals_report_and_shut_down_gracefully() {
    let clip = media().h264_mp4();
    let dir = library("signals", &[clip]);
    let stats_json = dir.with_extension("stats.json");
    let _ = std::fs::remove_file(&stats_json);
    let json_arg = stats_json.to_str().expect("a UTF-8 path").to_owned();
    let server = Server::start(&dir, &["--stats-interval", "1", "--stats-json", &json_arg]);
    let mut udp = Player::setup(server.addr, &server.url("h264-aac.mp4"), Lower::Udp);
    let mut tcp = Player::setup(server.addr, &server.url("h264-aac.mp4"), Lower::Tcp);
    udp.play(None);
    tcp.play(None);
    for p in [&mut udp, &mut tcp] {
        assert!(p.receive_until(Duration::from_secs(30), |s| s[0].packets.len() >= 5));
    }
    let usr1 = Command::new("kill")
        .args(["-USR1", &server.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(usr1.success());
    // SIGUSR1 is looked at within 50 ms, and the interval's report comes
    // within a second: wait for the JSON file they write.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !stats_json.exists() {
        assert!(Instant::now() < deadline, "no {} written", stats_json.display());
        thread::sleep(Duration::from_millis(50));
    }
    let playing: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&stats_json).expect("read")).expect("JSON statistics");
    assert_eq!(playing["sessions"]["live"], 2, "{playing}");
    assert!(playing["packets"].as_u64() > Some(0), "{playing}");
    let access_log = server.access_log.clone();
    let stopped = server.stop_cleanly();
    for title in ["streamalot: all shards", "streamalot: totals at shutdown"] {
        let report = stopped
            .stdout
            .split(title)
            .nth(1)
            .unwrap_or_else(|| panic!("no `{title}` report in:\n{}", stopped.stdout));
        assert!(
            report.contains("lateness  p50"),
            "`{title}` has no lateness line:\n{report}"
        );
    }
    // Goodbye to both clients before the sockets closed.
    let deadline = Instant::now() + Duration::from_secs(5);
    for p in [&mut udp, &mut tcp] {
        let left = deadline.saturating_duration_since(Instant::now());
        p.receive_until(left, |s| s.iter().all(Stream::said_bye));
        assert!(
            p.streams.iter().all(Stream::said_bye),
            "{:?}: no BYE on every stream at shutdown",
            p.lower
        );
    }
    // And both sessions were logged before the process ended.
    let log = std::fs::read_to_string(&access_log).expect("the access log");
    let records = streamalot_tests::server::parse_access_log(&log);
    assert_eq!(records.len(), 2, "{log}");
    // The totals at shutdown, as JSON, count what the sessions sent.
    let totals: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&stats_json).expect("read")).expect("JSON statistics");
    let logged: u64 = records
        .iter()
        .map(|r| r["s-pkts-sent"].parse::<u64>().expect("a count"))
        .sum();
    assert_eq!(totals["packets"].as_u64(), Some(logged), "{totals}");
    assert_eq!(totals["sessions"]["ended"], 2, "{totals}");
    assert!(totals["lateness_us"]["count"].as_u64() == Some(logged), "{totals}");
    let mut transports: Vec<&str> = records.iter().map(|r| r["transport"].as_str()).collect();
    transports.sort_unstable();
    assert_eq!(transports, ["tcp", "udp"]);
}

#[test]
fn sighup_reopens_a_rotated_access_log() {
    let clip = media().h264_mp4();
    let server = Server::start(&library("rotate", &[clip]), &[]);
    let url = server.url("h264-aac.mp4");
    let session = |server: &Server| {
        let mut player = Player::setup(server.addr, &url, Lower::Udp);
        assert_eq!(player.control("TEARDOWN", &[]).status, 200);
    };
    session(&server);
    server.wait_for_records(1, Duration::from_secs(20));
    // Rotated away, the way logrotate does it: renamed, then a SIGHUP.
    let rotated = server.access_log.with_extension("log.1");
    std::fs::rename(&server.access_log, &rotated).expect("rotate the log");
    let hup = Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(hup.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.access_log.exists() {
        assert!(Instant::now() < deadline, "no new access log after SIGHUP");
        thread::sleep(Duration::from_millis(20));
    }
    session(&server);
    let fresh = server.wait_for_records(1, Duration::from_secs(20));
    assert_eq!(fresh.len(), 1, "the new file has the new session only");
    let text = std::fs::read_to_string(&server.access_log).expect("the new log");
    assert!(
        text.starts_with("#Software: Streamalot") && text.contains("#Fields: c-ip"),
        "the new file starts with its own header:\n{text}"
    );
    let old = parse_access_log(&std::fs::read_to_string(&rotated).expect("the rotated log"));
    assert_eq!(old.len(), 1, "the rotated file keeps the first session");
    // Still serving, and it stops as it should (SIGHUP did not end it).
    let mut conn = Connection::connect(server.addr);
    assert_eq!(conn.request("OPTIONS", "*", &[]).status, 200);
    server.stop_cleanly();
}

/// `streamalot serve` on `rtsp_ports` over `media`, with UDP ports of its own.
fn serve_command(media: &std::path::Path, rtsp_ports: &[u16], extra: &[&str]) -> Command {
    let rtp = free_udp_run(8);
    let mut cmd = Command::new(streamalot_binary());
    cmd.arg("serve")
        .arg("--media")
        .arg(media)
        .args(["--bind", "127.0.0.1", "--shards", "1"])
        .args(["--rtp-ports", &format!("{rtp}-{}", rtp + 7)])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for port in rtsp_ports {
        cmd.args(["--rtsp-port", &port.to_string()]);
    }
    cmd
}

#[test]
fn a_second_server_on_a_busy_port_says_so_and_exits() {
    let dir = library("busy-port", &[media().h264_mp4()]);
    let first = Server::start(&dir, &[]);
    let port = first.addr.port();
    let want = format!("port {port} is already in use: is another streamalot running? --reuse-port shares it");
    // Asking to share is not enough: the first server did not.
    for extra in [&[][..], &["--reuse-port"][..]] {
        let out = run_within(&mut serve_command(&dir, &[port], extra), Duration::from_secs(30));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "a second server started on busy port {port} ({extra:?})"
        );
        assert!(stderr.contains(&want), "{extra:?}: no clear message:\n{stderr}");
    }
    // The first one serves on, untouched.
    let mut conn = Connection::connect(first.addr);
    assert_eq!(conn.request("OPTIONS", "*", &[]).status, 200);
    first.stop_cleanly();
}

#[test]
fn servers_that_all_ask_share_a_port() {
    let dir = library("shared-port", &[media().h264_mp4()]);
    let first = Server::start(&dir, &["--reuse-port"]);
    let shared = first.addr.port();
    // The second also listens on a port of its own, to be reached for sure.
    let own = free_tcp_port();
    let (child, what) = spawn(&mut serve_command(&dir, &[shared, own], &["--reuse-port"]));
    let own_addr = SocketAddr::from(([127, 0, 0, 1], own));
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut conn = loop {
        if let Ok(stream) = std::net::TcpStream::connect_timeout(&own_addr, Duration::from_millis(200)) {
            break Connection::over(stream);
        }
        assert!(Instant::now() < deadline, "{what} did not start");
        thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(conn.request("OPTIONS", "*", &[]).status, 200);
    drop(conn);
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(term.success());
    let out = wait_with_timeout(child, Duration::from_secs(15), &what);
    assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
    let mut conn = Connection::connect(first.addr);
    assert_eq!(conn.request("OPTIONS", "*", &[]).status, 200);
    first.stop_cleanly();
}
