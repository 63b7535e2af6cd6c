//! Hostile and broken RTSP against a server that is busy with good clients.
//!
//! Each bad request must get the right status code (or, where the request
//! cannot be answered, a closed connection), the server must not fall over,
//! and the good sessions playing meanwhile, one over UDP and one interleaved
//! on TCP, must each receive every packet of the movie intact, while one of
//! them keeps talking RTSP on its media connection.

use std::io;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use loader::Movie;
use streamalot_tests::media::media;
use streamalot_tests::rtp::{loader_packets, RtpPacket};
use streamalot_tests::rtsp::{good_client, Connection, Item, Lower, Player};
use streamalot_tests::scratch_dir;
use streamalot_tests::server::{library, Server};

const MOVIE: &str = "h264-aac.mp4";

/// A library with the H.264 clip, an unhinted movie, a symlink to a movie
/// outside the library and one to a movie inside it.
fn hostile_library() -> std::path::PathBuf {
    let m = media();
    let dir = library("hostile", &[m.h264_mp4(), &m.unhinted]);
    let outside = scratch_dir().join("outside.mp4");
    std::fs::copy(m.h264_mp4(), &outside).expect("copy a movie outside the library");
    std::os::unix::fs::symlink(&outside, dir.join("escape.mp4")).expect("symlink out");
    std::os::unix::fs::symlink(dir.join(MOVIE), dir.join("alias.mp4")).expect("symlink in");
    dir
}

#[test]
fn bad_requests_get_the_right_answers_while_good_sessions_play_on() {
    let dir = hostile_library();
    let stats_json = dir.with_extension("stats.json");
    let json_arg = stats_json.to_str().expect("a UTF-8 path").to_owned();
    let server = Server::start(&dir, &["--tcp-queue-bytes", "16K", "--stats-json", &json_arg]);
    let movie = Movie::open(media().h264_mp4()).expect("the clip");
    let expected: Vec<Vec<RtpPacket>> = movie.hint_tracks().map(|h| loader_packets(&movie, h.id)).collect();
    let url = server.url(MOVIE);

    let stop = Arc::new(AtomicBool::new(false));
    let good: Vec<_> = [Lower::Udp, Lower::Tcp]
        .into_iter()
        .map(|lower| {
            let (addr, url, expected, stop) = (server.addr, url.clone(), expected.clone(), stop.clone());
            thread::spawn(move || good_client(|| Connection::connect(addr), &url, lower, &expected, &stop))
        })
        .collect();

    let mut failures = Vec::new();
    let mut check = |what: &str, result: Result<(), String>| {
        if let Err(e) = result {
            failures.push(format!("{what}: {e}"));
        }
    };
    let a = server.addr;
    check(
        "garbage bytes",
        refused(a, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),
    );
    check("a missing CSeq", missing_cseq(a));
    check("a 1 MiB header", huge_header(a));
    check("too many header fields", too_many_headers(a));
    check(
        "a negative Content-Length",
        refused(a, b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\nContent-Length: -5\r\n\r\n", 400),
    );
    check(
        "an absurd Content-Length",
        refused(
            a,
            b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            400,
        ),
    );
    check(
        "a Content-Length over the limit",
        refused(
            a,
            b"SET_PARAMETER * RTSP/1.0\r\nCSeq: 1\r\nContent-Length: 10000000\r\n\r\n",
            413,
        ),
    );
    check(
        "another protocol version",
        refused(a, b"OPTIONS * RTSP/2.0\r\nCSeq: 1\r\n\r\n", 505),
    );
    check(
        "unknown methods",
        answers(
            a,
            &[
                ("FLY", &url, &[], 501),
                ("ANNOUNCE", &url, &[], 405),
                ("RECORD", &url, &[], 405),
            ],
        ),
    );
    check("bad Transport headers", bad_transports(a, &url));
    check(
        "SETUP of what does not exist",
        answers(
            a,
            &[
                (
                    "SETUP",
                    &format!("{url}/trackID=99"),
                    &[("Transport", "RTP/AVP/TCP;interleaved=0-1")],
                    404,
                ),
                (
                    "SETUP",
                    &server.url("nothing.mp4/trackID=3"),
                    &[("Transport", "RTP/AVP/TCP;interleaved=0-1")],
                    404,
                ),
                (
                    "SETUP",
                    &url,
                    &[("Transport", "RTP/AVP;unicast;client_port=5000-5001")],
                    459,
                ),
                ("DESCRIBE", &server.url("unhinted.mp4"), &[], 415),
                ("DESCRIBE", &server.url("nothing.mp4"), &[], 404),
            ],
        ),
    );
    check(
        "PLAY, PAUSE and TEARDOWN without a session",
        answers(
            a,
            &[
                ("PLAY", &url, &[], 454),
                ("PAUSE", &url, &[], 454),
                ("TEARDOWN", &url, &[], 454),
                ("PLAY", &url, &[("Session", "0123456789ABCDEF")], 454),
                ("PLAY", &url, &[("Session", "not-a-session")], 454),
                ("GET_PARAMETER", &url, &[("Session", "0123456789ABCDEF")], 454),
            ],
        ),
    );
    check(
        "PLAY before SETUP in a session, and a bad Range",
        play_in_wrong_states(a, &url),
    );
    check("path escapes", path_escapes(&server));
    check("a half-closed connection", half_closed(a));
    check("pipelined requests", pipelined(a, &url));
    check("interleaved garbage from a client", interleaved_garbage(a, &url));
    check("garbage on the RTCP port", rtcp_garbage(a, &url));
    let stalled = StalledReader::start(a, &url);

    // The good sessions play at least one whole movie each, during all that
    // and while the stalled reader holds its queue full.
    thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Release);
    for (lower, g) in [Lower::Udp, Lower::Tcp].iter().zip(good) {
        match g.join() {
            Ok(Ok(plays)) => assert!(plays >= 1, "{lower:?}: no complete playback"),
            Ok(Err(e)) => failures.push(format!("the good {lower:?} session: {e}")),
            Err(_) => failures.push(format!("the good {lower:?} session panicked")),
        }
    }
    if let Err(e) = stalled.finish() {
        failures.push(format!("a reader that stops reading: {e}"));
    }
    // Still serving, and still serving correctly.
    let mut conn = Connection::connect(a);
    let options = conn.request("OPTIONS", "*", &[]);
    if options.status != 200 {
        failures.push(format!("OPTIONS after everything answered {}", options.status));
    }
    drop(conn);
    let stopped = server.stop();
    assert!(
        failures.is_empty(),
        "{}\nserver stderr:\n{}",
        failures.join("\n"),
        stopped.stderr
    );
    assert!(
        stopped.status.success(),
        "the server exited with {}:\n{}",
        stopped.status,
        stopped.stderr
    );
    let totals: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&stats_json).expect("the statistics")).expect("JSON");
    assert!(
        totals["dropped_tcp"].as_u64() > Some(0),
        "the stalled reader's packets should have been dropped: {totals}"
    );
}

/// Sends `bytes`; the server must answer `status` and close, or close
/// without a word (when it could not tell a request apart at all).
fn refused(addr: SocketAddr, bytes: &[u8], status: u16) -> Result<(), String> {
    let mut conn = Connection::connect(addr);
    // The server may close while the bytes are still being written.
    let _ = conn.write_raw(bytes);
    match conn.read_reply() {
        Ok(r) if r.status == status => {}
        Ok(r) => return Err(format!("answered {} instead of {status}: {r:?}", r.status)),
        Err(e) if is_closed(&e) => {}
        Err(e) => return Err(format!("no answer: {e}")),
    }
    if conn.closed_within(Duration::from_secs(5)) {
        Ok(())
    } else {
        Err("the connection stayed open".into())
    }
}

fn is_closed(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
    )
}

/// Sends each `(method, url, headers, status)` on one connection and checks
/// the status.
/// One request and the status it must get: (method, URL, headers, status).
type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], u16);

fn answers(addr: SocketAddr, cases: &[Case<'_>]) -> Result<(), String> {
    let mut conn = Connection::connect(addr);
    for (method, url, headers, status) in cases {
        let r = conn.request(method, url, headers);
        if r.status != *status {
            return Err(format!(
                "{method} {url} {headers:?} answered {}, not {status}",
                r.status
            ));
        }
    }
    Ok(())
}

fn missing_cseq(addr: SocketAddr) -> Result<(), String> {
    let mut conn = Connection::connect(addr);
    conn.write_raw(b"OPTIONS * RTSP/1.0\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let r = conn.read_reply().map_err(|e| e.to_string())?;
    if r.status != 400 {
        return Err(format!("answered {}", r.status));
    }
    // The request was whole, only wrong: the connection carries on.
    let r = conn.request("OPTIONS", "*", &[]);
    (r.status == 200)
        .then_some(())
        .ok_or(format!("the next OPTIONS answered {}", r.status))
}

fn huge_header(addr: SocketAddr) -> Result<(), String> {
    let mut text = b"DESCRIBE rtsp://127.0.0.1/x.mp4 RTSP/1.0\r\nCSeq: 1\r\nX-Pad: ".to_vec();
    text.resize(text.len() + (1 << 20), b'a');
    text.extend_from_slice(b"\r\n\r\n");
    refused(addr, &text, 400)
}

fn too_many_headers(addr: SocketAddr) -> Result<(), String> {
    let mut text = String::from("OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n");
    for i in 0..500 {
        text.push_str(&format!("X-{i}: y\r\n"));
    }
    text.push_str("\r\n");
    refused(addr, text.as_bytes(), 400)
}

fn bad_transports(addr: SocketAddr, url: &str) -> Result<(), String> {
    let track = format!("{url}/trackID=3");
    let cases: &[&str] = &[
        "garbage",
        "RTP/AVP;unicast",
        "RTP/AVP;multicast;port=5000-5001",
        "RTP/AVP;unicast;client_port=0-1",
        "RTP/AVP;unicast;client_port=70000-70001",
        "RTP/AVP;unicast;client_port=5000-5001;destination=192.0.2.7",
        "RTP/AVP;unicast;client_port=5000-5001;mode=record",
        "RTP/SAVP;unicast;client_port=5000-5001",
    ];
    let mut conn = Connection::connect(addr);
    for t in cases {
        let r = conn.request("SETUP", &track, &[("Transport", t)]);
        if r.status != 461 {
            return Err(format!("Transport `{t}` answered {}, not 461", r.status));
        }
    }
    let r = conn.request("SETUP", &track, &[]);
    (r.status == 461)
        .then_some(())
        .ok_or(format!("no Transport answered {}", r.status))
}

fn play_in_wrong_states(addr: SocketAddr, url: &str) -> Result<(), String> {
    let mut player = Player::setup(addr, url, Lower::Tcp);
    for (range, status) in [("npt=9999-", 457), ("npt=abc-", 457), ("clock=19961108T142300Z-", 457)] {
        let r = player.control("PLAY", &[("Range", range)]);
        if r.status != status {
            return Err(format!("PLAY with Range `{range}` answered {}, not {status}", r.status));
        }
    }
    let r = player.control("PLAY", &[]);
    if r.status != 200 {
        return Err(format!("PLAY answered {}", r.status));
    }
    let again = player.conn.request(
        "SETUP",
        &format!("{url}/trackID=3"),
        &[
            ("Transport", "RTP/AVP/TCP;interleaved=0-1"),
            ("Session", &player.session.clone()),
        ],
    );
    if again.status != 455 {
        return Err(format!("SETUP while playing answered {}, not 455", again.status));
    }
    let r = player.control("TEARDOWN", &[]);
    (r.status == 200)
        .then_some(())
        .ok_or(format!("TEARDOWN answered {}", r.status))
}

fn path_escapes(server: &Server) -> Result<(), String> {
    let base = format!("rtsp://{}", server.addr);
    let cases: &[(&str, u16)] = &[
        ("/../../../../etc/passwd", 400),
        ("/%2e%2e/%2e%2e/%2e%2e/etc/passwd", 400),
        ("/%2E%2E%2Fetc%2Fpasswd", 400),
        ("//etc/passwd", 400),
        ("/h264-aac.mp4%00.txt", 400),
        ("/..%5c..%5cetc%5cpasswd", 400),
        ("/escape.mp4", 404),
        ("/", 400),
    ];
    let mut conn = Connection::connect(server.addr);
    for (path, status) in cases {
        let r = conn.request("DESCRIBE", &format!("{base}{path}"), &[]);
        if r.status != *status {
            return Err(format!("DESCRIBE {path} answered {}, not {status}", r.status));
        }
        if !r.body.is_empty() {
            return Err(format!("DESCRIBE {path} came with a body"));
        }
    }
    let inside = conn.request("DESCRIBE", &format!("{base}/alias.mp4"), &[]);
    (inside.status == 200)
        .then_some(())
        .ok_or(format!("a symlink inside the library answered {}", inside.status))
}

fn half_closed(addr: SocketAddr) -> Result<(), String> {
    let mut conn = Connection::connect(addr);
    conn.write_raw(b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n")
        .map_err(|e| e.to_string())?;
    conn.shutdown_write();
    let r = conn
        .read_reply()
        .map_err(|e| format!("no answer after the client stopped writing: {e}"))?;
    if r.status != 200 {
        return Err(format!("answered {}", r.status));
    }
    conn.closed_within(Duration::from_secs(5))
        .then_some(())
        .ok_or("the server kept the half-closed connection open".into())
}

fn pipelined(addr: SocketAddr, url: &str) -> Result<(), String> {
    let mut conn = Connection::connect(addr);
    let text = format!(
        "OPTIONS * RTSP/1.0\r\nCSeq: 11\r\n\r\nDESCRIBE {url} RTSP/1.0\r\nCSeq: 12\r\n\r\n\
         GET_PARAMETER {url} RTSP/1.0\r\nCSeq: 13\r\nContent-Length: 0\r\n\r\n"
    );
    conn.write_raw(text.as_bytes()).map_err(|e| e.to_string())?;
    for cseq in ["11", "12", "13"] {
        let r = conn.read_reply().map_err(|e| e.to_string())?;
        if r.status != 200 || r.header("CSeq") != Some(cseq) {
            return Err(format!("expected 200 for CSeq {cseq}, got {r:?}"));
        }
    }
    Ok(())
}

fn interleaved_garbage(addr: SocketAddr, url: &str) -> Result<(), String> {
    let mut player = Player::setup(addr, url, Lower::Tcp);
    // Frames on channels nobody set up, and RTCP that is not RTCP.
    player
        .conn
        .write_raw(b"$\x09\x00\x04abcd$\x01\x00\x08\xff\xff\xff\xff\xff\xff\xff\xff$\x03\x00\x00")
        .map_err(|e| e.to_string())?;
    let r = player.control("GET_PARAMETER", &[]);
    if r.status != 200 {
        return Err(format!("GET_PARAMETER after the frames answered {}", r.status));
    }
    let r = player.control("TEARDOWN", &[]);
    (r.status == 200)
        .then_some(())
        .ok_or(format!("TEARDOWN answered {}", r.status))
}

fn rtcp_garbage(addr: SocketAddr, url: &str) -> Result<(), String> {
    let mut player = Player::setup(addr, url, Lower::Udp);
    player.play(None);
    // Garbage at the shard's RTCP port, from the address it sends this
    // session's reports to and from one it does not know.
    let junk: [&[u8]; 5] = [
        b"",
        b"\x80",
        b"\x80\xc9\x00\x10abc",
        &[0xff; 1500],
        b"\x81\xc9\x00\x07\x00\x00\x00\x01",
    ];
    let stranger = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let rtcp = player.streams[0].server_rtcp.ok_or("no server RTCP port")?;
    for j in junk {
        player.streams[0].send_rtcp(j).map_err(|e| e.to_string())?;
        stranger.send_to(j, rtcp).map_err(|e| e.to_string())?;
    }
    if !player.receive_until(Duration::from_secs(30), |s| s.iter().all(|s| s.packets.len() >= 10)) {
        return Err("the session stopped playing".into());
    }
    let r = player.control("TEARDOWN", &[]);
    (r.status == 200)
        .then_some(())
        .ok_or(format!("TEARDOWN answered {}", r.status))
}

/// An interleaved session whose client stops reading: a small receive
/// buffer, PLAY, then nothing read for a while. The server must drop whole
/// packets for it and carry on; when the client reads again, every byte it
/// gets must still be whole frames.
struct StalledReader {
    conn: Connection,
    started: Instant,
}

impl StalledReader {
    fn start(addr: SocketAddr, url: &str) -> StalledReader {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("a socket");
        socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        socket.connect(&addr.into()).expect("connect");
        let mut conn = Connection::over(TcpStream::from(socket));
        let describe = conn.request("DESCRIBE", url, &[]);
        assert_eq!(describe.status, 200);
        let mut session = String::new();
        for (i, track) in [3, 4].into_iter().enumerate() {
            let transport = format!("RTP/AVP/TCP;unicast;interleaved={}-{}", 2 * i, 2 * i + 1);
            let mut headers = vec![("Transport", transport.as_str())];
            if !session.is_empty() {
                headers.push(("Session", session.as_str()));
            }
            let r = conn.request("SETUP", &format!("{url}/trackID={track}"), &headers);
            assert_eq!(r.status, 200, "SETUP: {r:?}");
            session = r.session().expect("a session").to_owned();
        }
        let r = conn.request("PLAY", url, &[("Session", &session)]);
        assert_eq!(r.status, 200, "PLAY: {r:?}");
        StalledReader {
            conn,
            started: Instant::now(),
        }
    }

    /// Reads what the server kept for it, checking the framing.
    fn finish(self) -> Result<(), String> {
        // Stalled for at least four seconds, most of the movie.
        if let Some(rest) = Duration::from_secs(4).checked_sub(self.started.elapsed()) {
            thread::sleep(rest);
        }
        // Whatever the server kept must still be whole frames, from the
        // first byte after the PLAY response on.
        let mut conn = self.conn;
        conn.stream()
            .set_read_timeout(Some(Duration::from_secs(2)))
            .map_err(|e| e.to_string())?;
        let mut frames = 0;
        loop {
            match conn.read_item() {
                Ok(Some(Item::Frame { channel: 0 | 2, data })) => {
                    RtpPacket::parse(&data).map_err(|e| format!("frame {frames}: {e}"))?;
                }
                Ok(Some(Item::Frame { channel: 1 | 3, .. })) => {}
                Ok(Some(other)) => return Err(format!("unexpected {other:?}")),
                Ok(None) => break,
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => break,
                Err(e) => return Err(format!("after {frames} frames: {e}")),
            }
            frames += 1;
        }
        if frames == 0 {
            return Err("nothing arrived once the client read again".into());
        }
        Ok(())
    }
}

/// A connection the server accepted (it answers OPTIONS), retried for a while
/// on 503.
fn accepted(addr: SocketAddr) -> Connection {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut c = Connection::connect(addr);
        c.write_raw(b"OPTIONS * RTSP/1.0\r\nCSeq: 0\r\n\r\n").expect("write");
        match c.read_reply() {
            Ok(r) if r.status == 200 => return c,
            _ if Instant::now() < deadline => thread::sleep(Duration::from_millis(50)),
            other => panic!("no connection accepted: {other:?}"),
        }
    }
}

#[test]
fn limits_and_timeouts_hold() {
    let dir = library("limits", &[media().h264_mp4()]);
    let server = Server::start(
        &dir,
        &[
            "--max-connections",
            "6",
            "--max-sessions",
            "3",
            "--session-timeout",
            "3",
        ],
    );
    let url = server.url(MOVIE);

    // Connections past the limit are told so and closed. (The server counts
    // a connection until it has seen it close, so the one that checked it
    // was listening may still count for a moment: retry until accepted.)
    let mut held: Vec<Connection> = (0..6).map(|_| accepted(server.addr)).collect();
    let mut extra = Connection::connect(server.addr);
    match extra.read_reply() {
        Ok(r) => assert_eq!(r.status, 503, "a connection past the limit: {r:?}"),
        Err(e) => assert!(is_closed(&e), "a connection past the limit: {e}"),
    }
    assert!(
        extra.closed_within(Duration::from_secs(5)),
        "a connection past the limit stays open"
    );
    // Once some close, new ones are welcome again.
    held.truncate(2);
    let mut conn = accepted(server.addr);
    drop(held);

    // Sessions past the limit get 453 Not Enough Bandwidth.
    let mut players: Vec<Player> = (0..3).map(|_| Player::setup(server.addr, &url, Lower::Tcp)).collect();
    let r = conn.request(
        "SETUP",
        &format!("{url}/trackID=3"),
        &[("Transport", "RTP/AVP;unicast;client_port=5000-5001")],
    );
    assert_eq!(r.status, 453, "a session past the limit: {r:?}");
    let mut tcp = Connection::connect(server.addr);
    let r = tcp.request(
        "SETUP",
        &format!("{url}/trackID=3"),
        &[("Transport", "RTP/AVP/TCP;interleaved=0-1")],
    );
    assert_eq!(r.status, 453, "an interleaved session past the limit: {r:?}");
    // A connection a shard owns asks for another session: the same limit.
    let r = players[0].conn.request(
        "SETUP",
        &format!("{url}/trackID=3"),
        &[("Transport", "RTP/AVP/TCP;interleaved=4-5")],
    );
    assert_eq!(
        r.status, 453,
        "a second session on an interleaved connection past the limit: {r:?}"
    );
    assert_eq!(players.pop().expect("a player").control("TEARDOWN", &[]).status, 200);
    drop(players);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = conn.request(
            "SETUP",
            &format!("{url}/trackID=3"),
            &[("Transport", "RTP/AVP;unicast;client_port=5000-5001")],
        );
        if r.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no session allowed after others ended: {r:?}"
        );
        thread::sleep(Duration::from_millis(100));
    }

    // A connection that sends half a request and stalls is closed.
    let mut stalled = Connection::connect(server.addr);
    stalled.write_raw(b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n").expect("write");
    assert!(
        stalled.closed_within(Duration::from_secs(30)),
        "a stalled connection stays open"
    );

    // A session nobody talks to ends at its timeout (with a BYE), before
    // its media does.
    let mut silent = Player::setup(server.addr, &url, Lower::Udp);
    silent.play(None);
    silent.receive_to_the_end(Duration::from_secs(30));
    let movie = Movie::open(media().h264_mp4()).expect("the clip");
    let hinted = loader_packets(&movie, 3).len();
    let got = silent.streams[0].packets.len();
    assert!(
        got < hinted,
        "the silent session got all {hinted} video packets: it outlived its timeout"
    );
    // Every other session of this test sent nothing.
    let deadline = Instant::now() + Duration::from_secs(30);
    let record = loop {
        let records = server.access_records();
        if let Some(r) = records.into_iter().find(|r| r["s-pkts-sent"] != "0") {
            break r;
        }
        assert!(Instant::now() < deadline, "no access-log record for the silent session");
        thread::sleep(Duration::from_millis(50));
    };
    let sent = got + silent.streams[1].packets.len();
    assert_eq!(record["s-pkts-sent"], sent.to_string(), "{record:?}");
    drop(conn);
    drop(silent);
    server.stop_cleanly();
}
