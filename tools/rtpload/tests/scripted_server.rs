//! rtpload's workers against an in-process RTSP server that misbehaves on
//! purpose for some connections and plays correctly on the others.
//!
//! The broken sessions must fail, each with an error that says what the
//! server did, while the good ones complete with every packet: one bad
//! server answer never disturbs another session. The good sessions' SETUP
//! replies carry no `ssrc=` and all their media comes from one server port,
//! so the worker has to learn each stream's SSRC from its first packet, one
//! session at a time: the server holds each session's first packet back a
//! while, and no session may PLAY while another on the same client port has
//! not yet had its first packets.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;
use proto::rtsp::header::{session_id, Transport};
use proto::rtsp::message::{parse, Limits, Message, Method, Request, Response};
use rtpload::cli::Args;

const SDP: &str = "v=0\r\ns=scripted\r\nt=0 0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n\
                   a=control:v\r\nm=audio 0 RTP/AVP 97\r\na=rtpmap:97 L16/8000\r\na=control:a\r\n";

/// How each connection, in accept order, is treated.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Script {
    Good,
    /// An HTTP answer to DESCRIBE.
    NotRtsp,
    /// A response with another request's CSeq.
    WrongCseq,
    /// 200 with a body that is no SDP.
    BadSdp,
    /// Hangs up after reading DESCRIBE.
    HangUp,
}

/// How long a good session waits after PLAY before its first packets.
const FIRST_PACKET_DELAY: Duration = Duration::from_millis(200);

/// When each good session's PLAY arrived and its first packets went out.
type Timeline = Arc<Mutex<Vec<(Instant, Option<Instant>)>>>;

const SCRIPTS: [Script; 8] = [
    Script::Good,
    Script::NotRtsp,
    Script::Good,
    Script::WrongCseq,
    Script::Good,
    Script::BadSdp,
    Script::Good,
    Script::HangUp,
];

/// Reads one request from `conn`, keeping what follows in `buf`.
fn read_request(conn: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Request> {
    let mut chunk = [0u8; 4096];
    loop {
        match parse(buf, &Limits::default()) {
            Ok(Some((Message::Request(r), used))) => {
                buf.drain(..used);
                return Some(r);
            }
            Ok(Some((_, used))) => {
                // Interleaved RTCP or a stray response: not for the script.
                buf.drain(..used);
            }
            Ok(None) => match conn.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            },
            Err(e) => panic!("the client sent something unparseable: {e}"),
        }
    }
}

fn respond(conn: &mut TcpStream, r: Response) {
    let mut out = Vec::new();
    r.write_to(&mut out);
    let _ = conn.write_all(&out);
}

/// Plays one connection's script. Good sessions get RTP from `media`
/// (shared by all of them) and count what was sent into `sent`.
fn serve(
    mut conn: TcpStream,
    script: Script,
    media: Arc<UdpSocket>,
    sent: Arc<AtomicU64>,
    timeline: Timeline,
    ssrc_seed: u32,
) {
    let mut buf = Vec::new();
    let Some(describe) = read_request(&mut conn, &mut buf) else {
        return;
    };
    assert_eq!(describe.method, Method::Describe);
    let cseq = describe.cseq().unwrap_or("0").to_owned();
    match script {
        Script::NotRtsp => {
            let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        }
        Script::WrongCseq => {
            let wrong = (cseq.parse::<u32>().unwrap() + 5).to_string();
            respond(&mut conn, Response::new(200, Some(&wrong)).body("application/sdp", SDP));
        }
        Script::BadSdp => respond(
            &mut conn,
            Response::new(200, Some(&cseq)).body("application/sdp", "hello"),
        ),
        Script::HangUp => return,
        Script::Good => {}
    }
    if script != Script::Good {
        // Keep the connection open: the client must give up by itself.
        let _ = read_request(&mut conn, &mut buf);
        return;
    }
    let base = format!("{}/", describe.uri);
    respond(
        &mut conn,
        Response::new(200, Some(&cseq))
            .header("Content-Base", base.clone())
            .body("application/sdp", SDP),
    );
    let server_port = media.local_addr().unwrap().port();
    let mut client_rtp: Option<SocketAddr> = None;
    let stop = Arc::new(AtomicUsize::new(0));
    while let Some(req) = read_request(&mut conn, &mut buf) {
        let cseq = req.cseq().unwrap_or("0").to_owned();
        match req.method {
            Method::Setup => {
                let t = Transport::parse(req.headers.get("Transport").unwrap()).unwrap();
                let (rtp, rtcp) = t.client_port.unwrap();
                client_rtp = Some(SocketAddr::new(conn.peer_addr().unwrap().ip(), rtp));
                // No ssrc=: the client has to learn it.
                let reply = format!(
                    "RTP/AVP;unicast;client_port={rtp}-{rtcp};server_port={server_port}-{}",
                    server_port + 1
                );
                respond(
                    &mut conn,
                    Response::new(200, Some(&cseq))
                        .header("Session", "S1;timeout=30")
                        .header("Transport", reply),
                );
            }
            Method::Play => {
                assert_eq!(req.headers.get("Session").map(session_id), Some("S1"));
                let slot = {
                    let mut t = timeline.lock().unwrap();
                    t.push((Instant::now(), None));
                    t.len() - 1
                };
                respond(&mut conn, Response::new(200, Some(&cseq)).header("Session", "S1"));
                let (media, sent, stop, to) = (media.clone(), sent.clone(), stop.clone(), client_rtp.unwrap());
                let timeline = timeline.clone();
                thread::spawn(move || {
                    thread::sleep(FIRST_PACKET_DELAY);
                    send_media(&media, to, ssrc_seed, &sent, &stop, || {
                        timeline.lock().unwrap()[slot].1 = Some(Instant::now());
                    })
                });
            }
            Method::Teardown => {
                stop.store(1, Ordering::SeqCst);
                // Let the sender see it before the answer goes out.
                thread::sleep(Duration::from_millis(30));
                respond(&mut conn, Response::new(200, Some(&cseq)));
                break;
            }
            _ => respond(&mut conn, Response::new(200, Some(&cseq))),
        }
    }
    stop.store(1, Ordering::SeqCst);
}

/// A video and an audio packet every 20 ms until told to stop;
/// `first_sent` just before the first two go out. (Not after: the client may
/// receive them, learn the session and send the next PLAY, recorded by
/// another thread, before this thread gets to take the time.)
fn send_media(
    media: &UdpSocket,
    to: SocketAddr,
    seed: u32,
    sent: &AtomicU64,
    stop: &AtomicUsize,
    first_sent: impl FnOnce(),
) {
    let mut seq = 0u16;
    let mut first_sent = Some(first_sent);
    while stop.load(Ordering::SeqCst) == 0 {
        if let Some(f) = first_sent.take() {
            f();
        }
        for (pt, ssrc, rate) in [(96u8, seed, 90_000u32), (97, seed ^ 0xffff, 8_000)] {
            let mut p = vec![0u8; 12 + 160];
            p[0] = 0x80;
            p[1] = pt;
            p[2..4].copy_from_slice(&seq.to_be_bytes());
            let ts = u32::from(seq) * rate / 50;
            p[4..8].copy_from_slice(&ts.to_be_bytes());
            p[8..12].copy_from_slice(&ssrc.to_be_bytes());
            media.send_to(&p, to).unwrap();
            sent.fetch_add(1, Ordering::SeqCst);
        }
        seq = seq.wrapping_add(1);
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn bad_answers_fail_their_sessions_only() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let media = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
    let sent = Arc::new(AtomicU64::new(0));
    let timeline: Timeline = Arc::default();
    {
        let (media, sent, timeline) = (media.clone(), sent.clone(), timeline.clone());
        thread::spawn(move || {
            for (i, conn) in listener.incoming().enumerate() {
                let Ok(conn) = conn else { continue };
                let script = SCRIPTS[i % SCRIPTS.len()];
                let (media, sent, timeline) = (media.clone(), sent.clone(), timeline.clone());
                thread::spawn(move || serve(conn, script, media, sent, timeline, 0x1000_0000 + i as u32));
            }
        });
    }
    let out = std::env::temp_dir().join(format!("rtpload-scripted-{}", std::process::id()));
    let args = Args::try_parse_from([
        "rtpload",
        &format!("rtsp://127.0.0.1:{port}/movie"),
        "--sessions",
        "8",
        "--ramp",
        "40",
        "--duration",
        "2",
        "--rtsp-timeout",
        "1",
        // One worker, so every good session shares one client port pair.
        "--threads",
        "1",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ])
    .unwrap();
    let verdict = rtpload::run::run(&args).expect("the run itself works");
    assert!(!verdict.passed);
    assert!(verdict.reasons[0].starts_with("4 of 8 sessions failed"), "{verdict:?}");

    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["sessions"]["completed"], 4, "{summary:#}");
    assert_eq!(summary["sessions"]["failed"], 4, "{summary:#}");
    let errors: Vec<String> = summary["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["error"].as_str().unwrap().to_owned())
        .collect();
    let expect = [
        "the server answered with HTTP, not RTSP",
        "the response with CSeq \"6\" does not answer DESCRIBE (CSeq 1)",
        "bad SDP: the SDP does not start with a v=0 line",
        "the server closed the connection while describing",
    ];
    for e in expect {
        assert!(errors.iter().any(|got| got.contains(e)), "no {e:?} in {errors:?}");
    }
    // Every packet the good sessions were sent arrived and was claimed,
    // though no SETUP reply said which SSRC was whose.
    assert_eq!(summary["packets"]["unmatched"], 0, "{summary:#}");
    assert_eq!(summary["packets"]["lost"], 0, "{summary:#}");
    assert_eq!(
        summary["packets"]["received"].as_u64(),
        Some(sent.load(Ordering::SeqCst))
    );
    let csv = std::fs::read_to_string(out.join("sessions.csv")).unwrap();
    let good = csv.lines().filter(|l| l.contains(",completed,")).count();
    assert_eq!(good, 4, "{csv}");
    // Each good session received media.
    for line in csv.lines().filter(|l| l.contains(",completed,")) {
        let packets: u64 = line.split(',').nth(4).unwrap().parse().unwrap();
        assert!(packets >= 4, "{line}");
    }
    // Learning one at a time: each PLAY came after the previous good
    // session's first packets had gone out (and been received).
    let t = timeline.lock().unwrap();
    assert_eq!(t.len(), 4);
    for w in t.windows(2) {
        let first_sent = w[0].1.expect("the earlier session got packets");
        assert!(
            w[1].0 > first_sent,
            "a second PLAY came while the first session was still learning"
        );
    }
    std::fs::remove_dir_all(&out).unwrap();
}
