//! The loader's SDP and packets, played by ffmpeg as a client.
//!
//! The SDP the loader builds for a movie is written out as a session file
//! (with an address and ports filled in, as a server's DESCRIBE answer is
//! completed by SETUP), ffmpeg is started on it, and the loader's packet
//! recipes are sent to it as RTP, paced by their transmit times (faster than
//! real time). ffmpeg decodes the video and passes the audio through; the
//! per-frame hashes (`-f framemd5`) must equal those ffmpeg gets from the
//! movie file itself. So the SDP is one ffmpeg understands, its codec
//! configuration (`sprop-parameter-sets`, `config`) is right, and every frame
//! arrives intact.

use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::process::{Child, Command};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use loader::Movie;
use proto::sdp::{Connection, SessionDescription};
use streamalot_tests::ffmpeg::{FrameHashes, FRAME_HASHES};
use streamalot_tests::media::media;
use streamalot_tests::rtp::{hinted_aac_frames, RtpPacket};
use streamalot_tests::server::free_udp_run;
use streamalot_tests::{describe, require_tool, run_ok, scratch_dir, spawn, wait_with_timeout, COMMAND_TIMEOUT};

/// How much faster than real time the packets are sent.
const SPEEDUP: i64 = 8;

#[test]
fn h264_aac_mp4_plays_from_the_loader_sdp() {
    round_trip("h264-aac.mp4");
}

#[test]
fn h264_aac_mov_plays_from_the_loader_sdp() {
    round_trip("h264-aac.mov");
}

#[test]
fn h263_aac_3gp_plays_from_the_loader_sdp() {
    round_trip("h263-aac.3gp");
}

#[test]
fn mpeg4_aac_3gp_plays_from_the_loader_sdp() {
    round_trip("mpeg4-aac.3gp");
}

fn round_trip(name: &str) {
    require_tool("ffmpeg");
    let clip = media().clip(name);
    let movie = Movie::open(&clip.path).unwrap_or_else(|e| panic!("{name}: {e}"));

    let reference = run_ok(
        Command::new("ffmpeg")
            .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-i"])
            .arg(&clip.path)
            .args(FRAME_HASHES)
            .args(["-f", "framemd5", "-"]),
    );
    let reference = FrameHashes::parse(&String::from_utf8_lossy(&reference.stdout));

    let (client, ports) = start_client(&movie, name);
    send(&movie, &ports);
    let what = describe_child(name);
    let out = wait_with_timeout(client, COMMAND_TIMEOUT, &what);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{what} failed ({}):\n{stderr}", out.status);
    let received = FrameHashes::parse(&String::from_utf8_lossy(&out.stdout));

    let audio_sent = hinted_aac_frames(&movie);
    for (stream, kind) in [(0, "video"), (1, "audio")] {
        let in_file = reference.hashes(stream);
        assert!(!in_file.is_empty(), "{name}: ffmpeg found no {kind} frames in the file");
        let want = if kind == "audio" {
            assert!(
                audio_sent <= in_file.len() && audio_sent + 8 > in_file.len(),
                "{name}: the audio hint track carries {audio_sent} AAC frames, the file has {}",
                in_file.len()
            );
            &in_file[..audio_sent]
        } else {
            &in_file[..]
        };
        let got = received.hashes(stream);
        if let Some(i) = (0..want.len().max(got.len())).find(|&i| want.get(i) != got.get(i)) {
            panic!(
                "{name}: {kind} over RTP differs from the file at frame {i} of {} (received {}): \
                 file {:?}, RTP {:?}\nSDP:\n{}\nffmpeg stderr:\n{stderr}",
                want.len(),
                got.len(),
                want.get(i),
                got.get(i),
                client_sdp(&movie, &ports)
            );
        }
    }
}

fn describe_child(name: &str) -> String {
    format!("ffmpeg playing the loader's SDP for {name}")
}

/// Where the packets of each hint track go: its RTP port (RTCP is one up).
type Ports = BTreeMap<u32, u16>;

/// The loader's SDP with an address and a port per media section, the way a
/// client sees it once it has set up each stream. It is rewritten with
/// `proto::sdp`, as the server will rewrite descriptions; the loader's text
/// must come back from it byte for byte first, so nothing is lost on the way.
fn client_sdp(movie: &Movie, ports: &Ports) -> String {
    let sdp = movie.sdp();
    let mut sd = SessionDescription::parse(sdp.as_bytes()).unwrap_or_else(|e| panic!("{e}:\n{sdp}"));
    assert_eq!(sd.to_string(), sdp, "the loader's SDP does not read back as it is");
    let local = Connection {
        network_type: "IN".into(),
        address_type: "IP4".into(),
        address: "127.0.0.1".into(),
    };
    if let Some(c) = &mut sd.connection {
        *c = local.clone();
    }
    for m in &mut sd.media {
        let track_id = m
            .control()
            .and_then(|c| c.strip_prefix("trackID="))
            .and_then(|id| id.parse::<u32>().ok())
            .unwrap_or_else(|| panic!("media section `{m}` has no a=control:trackID= line:\n{sdp}"));
        m.port = *ports
            .get(&track_id)
            .unwrap_or_else(|| panic!("the SDP names track {track_id}, which is no hint track"));
        m.connections.iter_mut().for_each(|c| *c = local.clone());
    }
    sd.to_string()
}

/// Starts ffmpeg on the client SDP and waits until it listens on every port.
///
/// Free ports are found by binding and releasing them, so two tests of this
/// process could pick the same ones; the lock keeps that from happening
/// between picking them and ffmpeg holding them.
fn start_client(movie: &Movie, name: &str) -> (Child, Ports) {
    static PORTS: Mutex<()> = Mutex::new(());
    let _picking = PORTS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let hints: Vec<u32> = movie.hint_tracks().map(|t| t.id).collect();
    let base = free_udp_run(2 * hints.len() as u16);
    let ports: Ports = hints
        .iter()
        .enumerate()
        .map(|(i, &id)| (id, base + 2 * i as u16))
        .collect();
    let sdp_path = scratch_dir().join(format!("{name}.sdp"));
    std::fs::write(&sdp_path, client_sdp(movie, &ports))
        .unwrap_or_else(|e| panic!("write {}: {e}", sdp_path.display()));
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-nostdin", "-loglevel", "error"])
        .args(["-protocol_whitelist", "file,udp,rtp", "-i"])
        .arg(&sdp_path)
        .args(FRAME_HASHES)
        .args(["-f", "framemd5", "-"]);
    let (mut child, _) = spawn(&mut cmd);
    let wanted: Vec<u16> = ports.values().flat_map(|&p| [p, p + 1]).collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !wanted.iter().all(|&p| udp_port_in_use(p)) {
        if let Ok(Some(status)) = child.try_wait() {
            let out = wait_with_timeout(child, COMMAND_TIMEOUT, &describe_child(name));
            panic!(
                "{} exited ({status}) before listening:\n{}",
                describe(&cmd),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{} did not listen on UDP ports {wanted:?} within 10 s", describe(&cmd));
        }
        thread::sleep(Duration::from_millis(10));
    }
    (child, ports)
}

/// Whether some socket on this machine is bound to UDP port `port`, read from
/// /proc rather than by trying to bind it, which could make the process that
/// is about to bind it fail.
fn udp_port_in_use(port: u16) -> bool {
    let wanted = format!(":{port:04X}");
    ["/proc/net/udp", "/proc/net/udp6"].iter().any(|table| {
        std::fs::read_to_string(table).is_ok_and(|text| {
            text.lines()
                .skip(1)
                .filter_map(|l| l.split_whitespace().nth(1))
                .any(|local| local.ends_with(&wanted))
        })
    })
}

/// Sends every packet of the movie to its track's port, paced by transmit
/// time at [`SPEEDUP`] times real time, then an RTCP BYE per track, which is
/// how ffmpeg learns the session has ended.
fn send(movie: &Movie, ports: &Ports) {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind the sending socket");
    let ssrc = |track_id: u32| 0x5354_0000 | track_id;
    let start = Instant::now();
    let mut first_ns = None;
    for p in movie.all_packets() {
        let p = p.unwrap_or_else(|e| panic!("loader: {e}"));
        let t0 = *first_ns.get_or_insert(p.transmit_ns);
        let due = Duration::from_nanos(((p.transmit_ns - t0).max(0) / SPEEDUP) as u64);
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            thread::sleep(wait);
        }
        let mut packet = RtpPacket::from_recipe(movie, &p);
        packet.ssrc = ssrc(p.track_id);
        socket
            .send_to(&packet.to_bytes(), ("127.0.0.1", ports[&p.track_id]))
            .expect("send an RTP packet");
    }
    // Let ffmpeg read the last media packets before the BYEs end its input.
    thread::sleep(Duration::from_millis(200));
    for (&track_id, &port) in ports {
        let s = ssrc(track_id).to_be_bytes();
        // An empty receiver report then a BYE: a compound RTCP packet must
        // start with a report (RFC 3550 section 6.1).
        let mut rtcp = vec![0x80, 201, 0, 1];
        rtcp.extend_from_slice(&s);
        rtcp.extend_from_slice(&[0x81, 203, 0, 1]);
        rtcp.extend_from_slice(&s);
        socket
            .send_to(&rtcp, ("127.0.0.1", port + 1))
            .expect("send an RTCP BYE");
    }
}
