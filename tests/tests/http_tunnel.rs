//! RTSP over HTTP (QuickTime's GET/POST tunnel) against `streamalot serve`,
//! end to end.
//!
//! - ffmpeg (`-rtsp_transport http`) plays every movie through a tunnel,
//!   and every decoded video frame and every AAC frame is bit for bit the
//!   file's, as over TCP and UDP.
//! - GStreamer's `rtspsrc` (`rtsph://`) decodes every picture of the H.264
//!   movies through a tunnel, bit for bit as from the file.
//! - Hostile and broken HTTP gets its status code or a closed connection,
//!   while good sessions (UDP, interleaved TCP, and a tunnel on an HTTP-only
//!   port that reopens its POST before every keep-alive) play every packet
//!   intact, and the server's descriptors are back where they were after.
//! - A tunnel's two legs count against the per-client connection limit.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use loader::Movie;
use streamalot_tests::ffmpeg::{differences_from_file, framemd5, FRAME_HASHES};
use streamalot_tests::first_difference;
use streamalot_tests::gstreamer::{file_video_hashes, rtsp_video_hashes};
use streamalot_tests::media::media;
use streamalot_tests::rtp::{loader_packets, RtpPacket};
use streamalot_tests::rtsp::{
    base64, good_client, open_tunnel_get, read_http_head, tunnel_get, tunnel_post, Connection, HttpHead, Lower, Player,
};
use streamalot_tests::server::{free_tcp_port, library, Server};

const PLAY_TIMEOUT: Duration = Duration::from_secs(60);
const MOVIE: &str = "h264-aac.mp4";
/// How long the server waits for a tunnel's other leg (its pairing window),
/// with some slack.
const PAIRING: Duration = Duration::from_secs(8);

#[test]
fn ffmpeg_plays_every_movie_bit_exact_through_a_tunnel() {
    let clips: Vec<_> = media().hinted.iter().collect();
    let paths: Vec<_> = clips.iter().map(|c| c.path.as_path()).collect();
    let server = Server::start(&library("tunnel-ffmpeg", &paths), &[]);
    let runs: Vec<_> = clips
        .iter()
        .map(|clip| {
            let (url, name) = (server.url(clip.name), clip.name);
            thread::spawn(move || {
                (
                    name,
                    framemd5(&["-rtsp_transport", "http"], &url, FRAME_HASHES, PLAY_TIMEOUT),
                )
            })
        })
        .collect();
    let mut failures = Vec::new();
    for run in runs {
        let (name, got) = run.join().expect("an ffmpeg run");
        let differences = differences_from_file(&media().clip(name).path, &got, PLAY_TIMEOUT);
        failures.extend(differences.into_iter().map(|d| format!("{name} through a tunnel: {d}")));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Each play a session of its own, its media through the tunnel.
    let records = server.wait_for_records(clips.len(), Duration::from_secs(20));
    for r in &records {
        let name = r["cs-uri-stem"].trim_start_matches('/');
        let movie = Movie::open(&media().clip(name).path).expect("a test clip");
        let packets: usize = movie.hint_tracks().map(|h| loader_packets(&movie, h.id).len()).sum();
        assert_eq!(
            (r["c-status"].as_str(), r["transport"].as_str()),
            ("200", "http"),
            "{r:?}"
        );
        assert_eq!(r["s-pkts-sent"], packets.to_string(), "{name}: {r:?}");
    }
    server.stop_cleanly();
}

#[test]
fn gstreamer_decodes_every_frame_through_a_tunnel() {
    let clips = [media().clip("h264-aac.mp4"), media().clip("h264-aac.mov")];
    let paths: Vec<_> = clips.iter().map(|c| c.path.as_path()).collect();
    let server = Server::start(&library("tunnel-gstreamer", &paths), &[]);
    let runs: Vec<_> = clips
        .iter()
        .map(|clip| {
            let url = format!("rtsph://{}/{}", server.addr, clip.name);
            let name = clip.name;
            thread::spawn(move || (name, rtsp_video_hashes(&url, "tcp", PLAY_TIMEOUT)))
        })
        .collect();
    let mut failures = Vec::new();
    for (run, clip) in runs.into_iter().zip(&clips) {
        let (name, got) = run.join().expect("a gst-launch run");
        let want = file_video_hashes(&clip.path, PLAY_TIMEOUT);
        assert!(!want.is_empty(), "{name}: GStreamer decoded no pictures from the file");
        if let Some(d) = first_difference(&want, &got) {
            failures.push(format!("{name} through a tunnel: picture {d}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let records = server.wait_for_records(clips.len(), Duration::from_secs(20));
    assert!(
        records
            .iter()
            .all(|r| r["c-status"] == "200" && r["transport"] == "http"),
        "{records:?}"
    );
    server.stop_cleanly();
}

#[test]
fn hostile_http_gets_clear_answers_while_good_sessions_play_on() {
    let http_port = free_tcp_port();
    let dir = library("tunnel-hostile", &[media().h264_mp4()]);
    let server = Server::start(&dir, &["--http-port", &http_port.to_string()]);
    let movie = Movie::open(media().h264_mp4()).expect("the clip");
    let expected: Vec<Vec<RtpPacket>> = movie.hint_tracks().map(|h| loader_packets(&movie, h.id)).collect();
    let url = server.url(MOVIE);
    let a = server.addr;
    let http = SocketAddr::from(([127, 0, 0, 1], http_port));
    // Settle, then count: what the good sessions and every probe open must
    // all be closed again at the end. A play of each kind first, so that
    // what the server opens once (the movie, its executors' own) is there.
    let fds = warmed_up(&server, &url);

    let stop = Arc::new(AtomicBool::new(false));
    let mut good = Vec::new();
    for lower in [Lower::Udp, Lower::Tcp] {
        let (url, expected, stop) = (url.clone(), expected.clone(), stop.clone());
        let connect = move || Connection::connect(a);
        good.push((
            format!("{lower:?}"),
            thread::spawn(move || good_client(connect, &url, lower, &expected, &stop)),
        ));
    }
    {
        // A tunnel on the HTTP-only port, a new cookie for each play.
        let (url, expected, stop) = (url.clone(), expected.clone(), stop.clone());
        let plays = std::sync::atomic::AtomicUsize::new(0);
        let connect = move || {
            let n = plays.fetch_add(1, Ordering::Relaxed);
            Connection::tunnel(http, &format!("/{MOVIE}"), &format!("goodtunnel{n}"))
        };
        good.push((
            "tunnel".into(),
            thread::spawn(move || good_client(connect, &url, Lower::Tcp, &expected, &stop)),
        ));
    }

    let mut failures = Vec::new();
    let mut check = |what: &str, result: Result<(), String>| {
        if let Err(e) = result {
            failures.push(format!("{what}: {e}"));
        }
    };
    // The legs that must wait out the pairing window wait together.
    let half_open = [
        thread::spawn(move || get_without_post(a)),
        thread::spawn(move || post_without_get(a)),
    ];
    check(
        "a malformed HTTP head",
        http_refused(a, b"GET / HTTP/1.1\r\nNo Colon Here\r\n\r\n", 400),
    );
    check(
        "an HTTP version we do not speak",
        http_refused(a, b"GET / HTTP/2.0\r\n\r\n", 505),
    );
    check("unknown paths, kept alive", unknown_paths(a));
    check(
        "a GET that asks for a tunnel without a cookie",
        http_refused(
            a,
            b"GET /h264-aac.mp4 HTTP/1.0\r\nAccept: application/x-rtsp-tunnelled\r\n\r\n",
            400,
        ),
    );
    check("a cookie with a method that opens no leg", method_not_allowed(a));
    check("a 1 MiB HTTP head", huge_http_head(a));
    check("too many header fields", http_refused(a, &too_many_fields(), 431));
    check(
        "a body over the limit",
        http_refused(
            a,
            b"POST /h264-aac.mp4 HTTP/1.1\r\nContent-Length: 10000000\r\n\r\n",
            413,
        ),
    );
    // POST, not PUT: a PUT is an Icecast source, whose body is a stream
    // with no size limit (and no publish rule covers /x, so it gets 403).
    check(
        "a chunked body over the limit",
        http_refused(
            a,
            b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n100000\r\n",
            413,
        ),
    );
    check(
        "both Content-Length and chunked",
        http_refused(
            a,
            b"POST /x HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
        ),
    );
    check(
        "RTSP on the HTTP-only port",
        http_refused(http, b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n", 400),
    );
    check("someone else's cookie from another address", foreign_cookie(a, &url));
    check("a second GET for a cookie", second_get(a));
    check("bad base64 on a POST", bad_base64(a));
    check(
        "an RTSP request over the limit inside a tunnel",
        huge_tunnelled_request(a),
    );
    check("a POST before its GET", post_then_get(a, &url));
    for (t, what) in half_open
        .into_iter()
        .zip(["a GET without a POST", "a POST without a GET"])
    {
        check(what, t.join().unwrap_or_else(|_| Err("panicked".into())));
    }

    // The good sessions played at least once each through all of that.
    stop.store(true, Ordering::Release);
    for (what, g) in good {
        match g.join() {
            Ok(Ok(plays)) if plays >= 1 => {}
            Ok(Ok(_)) => failures.push(format!("the good {what} session: no complete playback")),
            Ok(Err(e)) => failures.push(format!("the good {what} session: {e}")),
            Err(_) => failures.push(format!("the good {what} session panicked")),
        }
    }
    // Every connection is closed again.
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.open_fds() > fds && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
    }
    let left = server.open_fds();
    if left != fds {
        failures.push(format!("{left} descriptors open after, {fds} before"));
    }
    let stopped = server.stop();
    assert!(
        failures.is_empty(),
        "{}\nserver stderr:\n{}",
        failures.join("\n"),
        stopped.stderr
    );
    assert!(stopped.status.success(), "{}", stopped.stderr);
}

#[test]
fn a_tunnels_legs_count_against_the_connection_limit() {
    let dir = library("tunnel-limits", &[media().h264_mp4()]);
    let server = Server::start(&dir, &["--max-connections-per-client", "2"]);
    let path = format!("/{MOVIE}");
    let mut tunnel = Connection::tunnel(server.addr, &path, "limitcookie1");
    let r = tunnel.request("OPTIONS", "*", &[]);
    assert_eq!(r.status, 200, "{r:?}");
    // GET and POST are two connections: a third is past the limit.
    let mut third = TcpStream::connect(server.addr).expect("connect");
    third.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut answer = Vec::new();
    let _ = third.read_to_end(&mut answer);
    assert!(
        answer.is_empty() || answer.starts_with(b"RTSP/1.0 503"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    // A POST closed gives its place back: the next one is let in, again and
    // again, and the tunnel carries on.
    for _ in 0..3 {
        // The server counts the old POST until it has seen it close: a new
        // one may be refused (503, closed) for a moment.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            tunnel.reopen_post();
            let post = tunnel.legs().and_then(|l| l.post.as_mut()).expect("a POST leg");
            post.set_read_timeout(Some(Duration::from_millis(300)))
                .expect("timeout");
            let mut said = [0u8; 64];
            match post.read(&mut said) {
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => break,
                Ok(n) => assert!(
                    n == 0 || said.starts_with(b"RTSP/1.0 503"),
                    "{:?}",
                    String::from_utf8_lossy(&said[..n])
                ),
                Err(_) => {}
            }
            assert!(Instant::now() < deadline, "the reopened POST was never let in");
            thread::sleep(Duration::from_millis(50));
        }
        let r = tunnel.request("OPTIONS", "*", &[]);
        assert_eq!(r.status, 200, "{r:?}");
    }
    drop(tunnel);
    server.stop_cleanly();
}

/// Plays `url` over a tunnel and over UDP to the end, then says how many
/// descriptors the server has open.
fn warmed_up(server: &Server, url: &str) -> usize {
    for conn in [
        Connection::tunnel(server.addr, &format!("/{MOVIE}"), "warmup"),
        Connection::connect(server.addr),
    ] {
        let tunnelled = conn.is_tunnel();
        let mut player = Player::setup_on(conn, url, if tunnelled { Lower::Tcp } else { Lower::Udp });
        player.play(None);
        player.receive_to_the_end(PLAY_TIMEOUT);
        assert_eq!(player.control("TEARDOWN", &[]).status, 200);
    }
    server.wait_for_records(2, Duration::from_secs(20));
    thread::sleep(Duration::from_millis(500));
    server.open_fds()
}

/// Writes `bytes`; the server must answer HTTP `status` and close (or just
/// close, if it could not tell the request apart at all).
fn http_refused(addr: SocketAddr, bytes: &[u8], status: u16) -> Result<(), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    // The server may close while the bytes are still being written.
    let _ = s.write_all(bytes);
    match read_http_head(&mut s) {
        Ok(Some(h)) if h.status == status => {}
        Ok(Some(h)) => return Err(format!("answered {} instead of {status}: {h:?}", h.status)),
        Ok(None) => {}
        Err(e) if is_closed(&e) => {}
        Err(e) => return Err(format!("no answer: {e}")),
    }
    closes(&mut s)
}

fn is_closed(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
    )
}

/// Reads (and drops) what comes until the server closes, within 10 s.
fn closes(s: &mut TcpStream) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            Err(_) => return Ok(()),
        }
    }
    Err("the connection stayed open".into())
}

/// The answer to one request on `s`, with its body.
fn exchange(s: &mut TcpStream, request: &str) -> Result<(HttpHead, Vec<u8>), String> {
    s.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    let head = read_http_head(s).map_err(|e| e.to_string())?.ok_or("closed")?;
    let len: usize = match head.header("Content-Length") {
        Some(l) => l.parse().map_err(|_| format!("Content-Length {l:?}"))?,
        None => return Err(format!("no Content-Length: {head:?}")),
    };
    let is_head = request.starts_with("HEAD ");
    let mut body = vec![0u8; if is_head { 0 } else { len }];
    s.read_exact(&mut body).map_err(|e| e.to_string())?;
    Ok((head, body))
}

fn unknown_paths(addr: SocketAddr) -> Result<(), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    // HTTP/1.1 keeps the connection: three requests on one, HEAD among them.
    for req in [
        "GET /h264-aac.mp4 HTTP/1.1\r\nHost: x\r\n\r\n",
        "HEAD /nothing HTTP/1.1\r\nHost: x\r\n\r\n",
        "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        let (head, _) = exchange(&mut s, req)?;
        if head.status != 404 || head.version != "HTTP/1.1" {
            return Err(format!("{req:?} answered {head:?}"));
        }
    }
    // HTTP/1.0 closes unless asked otherwise.
    let (head, _) = exchange(&mut s, "GET /x HTTP/1.0\r\n\r\n")?;
    if head.status != 404 || head.header("Connection") != Some("close") {
        return Err(format!("an HTTP/1.0 request answered {head:?}"));
    }
    closes(&mut s)
}

fn method_not_allowed(addr: SocketAddr) -> Result<(), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let (head, _) = exchange(&mut s, "PUT /h264-aac.mp4 HTTP/1.1\r\nx-sessioncookie: put1\r\n\r\n")?;
    match (head.status, head.header("Allow")) {
        (405, Some("GET, POST")) => Ok(()),
        _ => Err(format!("answered {head:?}")),
    }
}

fn huge_http_head(addr: SocketAddr) -> Result<(), String> {
    let mut text = b"GET /h264-aac.mp4 HTTP/1.1\r\nX-Pad: ".to_vec();
    text.resize(text.len() + (1 << 20), b'a');
    text.extend_from_slice(b"\r\n\r\n");
    http_refused(addr, &text, 431)
}

fn too_many_fields() -> Vec<u8> {
    let mut text = String::from("GET / HTTP/1.1\r\n");
    for i in 0..500 {
        text.push_str(&format!("X-{i}: y\r\n"));
    }
    text.push_str("\r\n");
    text.into_bytes()
}

/// A tunnel's GET; then the same cookie from 127.0.0.2, on either leg, is
/// refused with 403, and the tunnel plays on.
fn foreign_cookie(addr: SocketAddr, url: &str) -> Result<(), String> {
    let cookie = "victimcookie";
    let mut victim = Connection::tunnel(addr, &format!("/{MOVIE}"), cookie);
    let described = victim.request("DESCRIBE", url, &[]);
    if described.status != 200 {
        return Err(format!("the victim's DESCRIBE answered {}", described.status));
    }
    for leg in ["POST", "GET"] {
        let other =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).map_err(|e| e.to_string())?;
        other
            .bind(&SocketAddr::from(([127, 0, 0, 2], 0)).into())
            .map_err(|e| format!("bind 127.0.0.2: {e}"))?;
        other.connect(&addr.into()).map_err(|e| e.to_string())?;
        let mut other = TcpStream::from(other);
        other
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        if leg == "POST" {
            tunnel_post(&mut other, &format!("/{MOVIE}"), cookie).map_err(|e| e.to_string())?;
            let teardown = format!("TEARDOWN {url} RTSP/1.0\r\nCSeq: 9\r\n\r\n");
            let _ = other.write_all(base64(teardown.as_bytes()).as_bytes());
        } else {
            tunnel_get(&mut other, &format!("/{MOVIE}"), cookie).map_err(|e| e.to_string())?;
        }
        match read_http_head(&mut other) {
            Ok(Some(h)) if h.status == 403 => {}
            other => return Err(format!("the foreign {leg} got {other:?}")),
        }
        closes(&mut other)?;
    }
    // The victim's tunnel still answers, and plays.
    let options = victim.request("OPTIONS", "*", &[]);
    if options.status != 200 {
        return Err(format!("the victim's OPTIONS answered {}", options.status));
    }
    let mut player = Player::setup_on(victim, url, Lower::Tcp);
    player.play(None);
    if !player.receive_until(Duration::from_secs(30), |s| s.iter().all(|s| s.packets.len() >= 10)) {
        return Err("the victim's media did not come".into());
    }
    let r = player.control("TEARDOWN", &[]);
    (r.status == 200)
        .then_some(())
        .ok_or(format!("TEARDOWN answered {}", r.status))
}

fn second_get(addr: SocketAddr) -> Result<(), String> {
    let mut first = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    first
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    open_tunnel_get(&mut first, "/h264-aac.mp4", "twicecookie")?;
    let mut second = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    second
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    tunnel_get(&mut second, "/h264-aac.mp4", "twicecookie").map_err(|e| e.to_string())?;
    match read_http_head(&mut second) {
        Ok(Some(h)) if h.status == 409 => {}
        other => return Err(format!("the second GET got {other:?}")),
    }
    closes(&mut second)
}

/// A tunnel whose POST carries text that is not base64: both legs close.
fn bad_base64(addr: SocketAddr) -> Result<(), String> {
    let mut get = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    get.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    open_tunnel_get(&mut get, "/h264-aac.mp4", "badbase64")?;
    let mut post = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tunnel_post(&mut post, "/h264-aac.mp4", "badbase64").map_err(|e| e.to_string())?;
    let options = base64(b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n");
    post.write_all(format!("{options}\r\n*not base64*").as_bytes())
        .map_err(|e| e.to_string())?;
    // The good request before the bad text is answered, on the GET leg;
    // then the tunnel is over.
    let mut answer = Vec::new();
    let _ = get.read_to_end(&mut answer);
    if !answer.starts_with(b"RTSP/1.0 200 OK\r\nCSeq: 1\r\n") {
        return Err(format!("the GET leg read {:?}", String::from_utf8_lossy(&answer)));
    }
    closes(&mut post)
}

/// An RTSP request inside a tunnel that is past the header limit: the GET
/// leg carries the RTSP answer, then both legs close.
fn huge_tunnelled_request(addr: SocketAddr) -> Result<(), String> {
    let mut get = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    get.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    open_tunnel_get(&mut get, "/h264-aac.mp4", "hugerequest")?;
    let mut post = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tunnel_post(&mut post, "/h264-aac.mp4", "hugerequest").map_err(|e| e.to_string())?;
    let mut req = b"DESCRIBE rtsp://127.0.0.1/h264-aac.mp4 RTSP/1.0\r\nCSeq: 1\r\nX-Pad: ".to_vec();
    req.resize(req.len() + (1 << 20), b'a');
    req.extend_from_slice(b"\r\n\r\n");
    let _ = post.write_all(base64(&req).as_bytes());
    let mut answer = Vec::new();
    let _ = get.read_to_end(&mut answer);
    if !answer.starts_with(b"RTSP/1.0 400 Bad Request\r\n") {
        return Err(format!("the GET leg read {:?}", String::from_utf8_lossy(&answer)));
    }
    closes(&mut post)
}

/// A POST that comes before its GET waits for it; paired, the tunnel works.
fn post_then_get(addr: SocketAddr, url: &str) -> Result<(), String> {
    let cookie = "postfirst";
    let mut post = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tunnel_post(&mut post, "/h264-aac.mp4", cookie).map_err(|e| e.to_string())?;
    let describe = format!("DESCRIBE {url} RTSP/1.0\r\nCSeq: 1\r\n\r\n");
    post.write_all(base64(describe.as_bytes()).as_bytes())
        .map_err(|e| e.to_string())?;
    thread::sleep(Duration::from_millis(300));
    let mut get = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    get.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    open_tunnel_get(&mut get, "/h264-aac.mp4", cookie)?;
    let mut answer = [0u8; 64];
    get.read_exact(&mut answer)
        .map_err(|e| format!("no DESCRIBE answer: {e}"))?;
    if !answer.starts_with(b"RTSP/1.0 200 OK\r\nCSeq: 1\r\n") {
        return Err(format!("the GET leg read {:?}", String::from_utf8_lossy(&answer)));
    }
    Ok(())
}

/// A GET whose POST never comes is closed after the pairing window.
fn get_without_post(addr: SocketAddr) -> Result<(), String> {
    let mut get = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    get.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    open_tunnel_get(&mut get, "/h264-aac.mp4", "lonelyget")?;
    let started = Instant::now();
    let mut rest = Vec::new();
    get.set_read_timeout(Some(PAIRING)).map_err(|e| e.to_string())?;
    match get.read_to_end(&mut rest) {
        Ok(_) if rest.is_empty() => Ok(()),
        Ok(_) => Err(format!("the lone GET read {:?}", String::from_utf8_lossy(&rest))),
        Err(e) => Err(format!("still open after {:?}: {e}", started.elapsed())),
    }
}

/// A POST whose GET never comes is answered 404 after the pairing window.
fn post_without_get(addr: SocketAddr) -> Result<(), String> {
    let mut post = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    post.set_read_timeout(Some(PAIRING)).map_err(|e| e.to_string())?;
    tunnel_post(&mut post, "/h264-aac.mp4", "lonelypost").map_err(|e| e.to_string())?;
    let _ = post.write_all(base64(b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n").as_bytes());
    match read_http_head(&mut post) {
        Ok(Some(h)) if h.status == 404 => closes(&mut post),
        other => Err(format!("the lone POST got {other:?}")),
    }
}
