//! Digest and Basic on the wire, against answers computed independently of
//! the server (Python's `hashlib`): the challenges, MD5 and SHA-256 with
//! `qop=auth`, RFC 2069's form, a replayed nonce count refused with
//! `stale=true`, hostile `Authorization` headers, and repeated failed logins
//! slowed down, then refused, and counted.

use std::net::{SocketAddr, TcpStream};

use streamalot_tests::access::{basic, param, users_file, DigestAnswer, REALM};
use streamalot_tests::media::media;
use streamalot_tests::rtsp::{Connection, Reply};
use streamalot_tests::server::{library, Server};

const MOVIE: &str = "h264-aac.mp4";

fn server(name: &str, scheme: &str, extra: &[&str]) -> Server {
    let lib = library(name, &[media().h264_mp4()]);
    std::fs::write(
        lib.join("qtaccess"),
        format!("AuthScheme {scheme}\nrequire user alice\n"),
    )
    .unwrap();
    let users = users_file(&lib.with_extension("users"), &[("alice", "s3cret"), ("bob", "b0b")]);
    let mut args = vec!["--users", users.to_str().unwrap()];
    args.extend_from_slice(extra);
    Server::start(&lib, &args)
}

/// Every `WWW-Authenticate` value of a reply, in order.
fn challenges(reply: &Reply) -> Vec<String> {
    reply
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("WWW-Authenticate"))
        .map(|(_, v)| v.clone())
        .collect()
}

fn describe(conn: &mut Connection, url: &str, auth: Option<&str>) -> Reply {
    match auth {
        Some(a) => conn.request("DESCRIBE", url, &[("Authorization", a)]),
        None => conn.request("DESCRIBE", url, &[]),
    }
}

#[test]
fn digest_md5_and_sha256_answers_and_replays() {
    let server = server("access-digest-wire", "digest", &[]);
    let url = server.url(MOVIE);
    let mut conn = Connection::connect(server.addr);

    let first = describe(&mut conn, &url, None);
    assert_eq!(first.status, 401, "{first:?}");
    let offered = challenges(&first);
    // SHA-256 first, MD5 last: clients that take the last (ffmpeg) or only
    // know MD5 (GStreamer) find theirs, those that take the first get the
    // stronger one.
    assert_eq!(offered.len(), 2, "{offered:?}");
    assert!(
        offered[0].starts_with("Digest ") && offered[0].contains("algorithm=SHA-256"),
        "{offered:?}"
    );
    assert!(offered[1].contains("algorithm=MD5"), "{offered:?}");
    for c in &offered {
        assert_eq!(param(c, "realm").as_deref(), Some(REALM), "{c}");
        assert!(c.contains("qop=\"auth\""), "{c}");
    }
    let nonce = param(&offered[0], "nonce").expect("a nonce");
    let opaque = param(&offered[0], "opaque");
    assert_eq!(
        param(&offered[1], "nonce").as_deref(),
        Some(nonce.as_str()),
        "one nonce for both"
    );

    let mut sdp = String::new();
    for (alg, nc) in [("md5", "00000001"), ("sha256", "00000002")] {
        let answer = DigestAnswer {
            alg,
            user: "alice",
            realm: REALM,
            password: "s3cret",
            method: "DESCRIBE",
            uri: &url,
            nonce: &nonce,
            opaque: opaque.as_deref(),
            qop: Some((nc, "0a4f113b")),
        };
        let ok = describe(&mut conn, &url, Some(&answer.header()));
        assert_eq!(ok.status, 200, "{alg}: {ok:?}");
        sdp = String::from_utf8_lossy(&ok.body).into_owned();
        assert!(sdp.contains("m=video"), "{alg}: the SDP");
    }

    // The same count again is a replay: refused, with a fresh nonce marked
    // stale (the answer itself was right).
    let replay = DigestAnswer {
        alg: "md5",
        user: "alice",
        realm: REALM,
        password: "s3cret",
        method: "DESCRIBE",
        uri: &url,
        nonce: &nonce,
        opaque: opaque.as_deref(),
        qop: Some(("00000001", "0a4f113b")),
    };
    let refused = describe(&mut conn, &url, Some(&replay.header()));
    assert_eq!(refused.status, 401, "a replayed nonce count: {refused:?}");
    let again = challenges(&refused);
    assert!(again.iter().all(|c| c.contains("stale=true")), "{again:?}");
    let fresh = param(&again[0], "nonce").unwrap();
    assert_ne!(fresh, nonce);

    // RFC 2069's form (no qop), as GStreamer sends it, with the fresh nonce;
    // then SETUP with the same nonce and a new count.
    let old_style = DigestAnswer {
        qop: None,
        nonce: &fresh,
        ..replay
    };
    assert_eq!(describe(&mut conn, &url, Some(&old_style.header())).status, 200);
    let control = sdp
        .lines()
        .find_map(|l| l.strip_prefix("a=control:trackID="))
        .expect("a track control");
    let track = format!("{url}/trackID={}", control.trim());
    let setup = DigestAnswer {
        method: "SETUP",
        uri: &track,
        nonce: &fresh,
        qop: Some(("00000001", "77")),
        ..old_style
    };
    let reply = conn.request(
        "SETUP",
        &track,
        &[
            ("Authorization", &setup.header()),
            ("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1"),
        ],
    );
    assert_eq!(reply.status, 200, "{reply:?}");

    // A right password for a user the rules do not name: 403, not 401.
    let mut other = Connection::connect(server.addr);
    let c = challenges(&describe(&mut other, &url, None)).remove(1);
    let (bob_nonce, bob_opaque) = (param(&c, "nonce").unwrap(), param(&c, "opaque"));
    let bob = DigestAnswer {
        user: "bob",
        password: "b0b",
        nonce: &bob_nonce,
        opaque: bob_opaque.as_deref(),
        qop: Some(("00000001", "1")),
        ..replay
    };
    assert_eq!(describe(&mut other, &url, Some(&bob.header())).status, 403);
}

#[test]
fn hostile_authorization_headers_are_refused_and_harmless() {
    let server = server("access-hostile", "digest", &["--max-header-bytes", "64K"]);
    let url = server.url(MOVIE);
    let mut conn = Connection::connect(server.addr);
    let c = challenges(&describe(&mut conn, &url, None)).remove(1);
    let nonce = param(&c, "nonce").unwrap();
    let good = |user: &str, password: &str, realm: &str, uri: &str, nc: &str| {
        DigestAnswer {
            alg: "md5",
            user,
            realm,
            password,
            method: "DESCRIBE",
            uri,
            nonce: &nonce,
            opaque: None,
            qop: Some((nc, "abc")),
        }
        .header()
    };
    let huge = "x".repeat(40_000);
    let hostile = [
        "Basic !!!not-base64".to_owned(),
        basic("alice", "s3cret"), // Basic where the folder asks for Digest
        "Digest".to_owned(),
        "Digest username=\"alice\"".to_owned(),
        "Digest username=\"alice\", realm=\"Streamalot\", nonce=\"\", uri=\"\", response=\"\"".to_owned(),
        "Digest username=\"alice\", realm=\"Streamalot, nonce=\"unterminated".to_owned(),
        format!("Digest username=\"{huge}\", realm=\"Streamalot\", nonce=\"{nonce}\", uri=\"{url}\", response=\"00\""),
        format!("Digest {huge}"),
        good("alice", "s3cret", "Elsewhere", &url, "00000001"),
        good("alice", "s3cret", REALM, "rtsp://127.0.0.1:1/other.mp4", "00000002"),
        good("mallory", "s3cret", REALM, &url, "00000003"),
        good("alice", "wrong", REALM, &url, "00000004"),
        "Bearer abc.def".to_owned(),
        format!("Digest nonce=\"{nonce}\", nonce=\"{nonce}\", username=\"alice\""),
        "Digest username=\"alice\", realm=\"Streamalot\", nonce=\"\u{7f}\u{1}\", uri=\"/\", response=\"1\"".to_owned(),
    ];
    for (i, h) in hostile.iter().enumerate() {
        let mut conn = Connection::connect(server.addr);
        let r = describe(&mut conn, &url, Some(h));
        assert_eq!(
            r.status,
            401,
            "hostile header {i} ({}...): {r:?}",
            &h[..h.len().min(60)]
        );
    }
    // Two Digest headers at once.
    let mut conn = Connection::connect(server.addr);
    let two = conn.request(
        "DESCRIBE",
        &url,
        &[
            ("Authorization", &good("alice", "s3cret", REALM, &url, "00000010")),
            ("Authorization", &good("alice", "s3cret", REALM, &url, "00000011")),
        ],
    );
    assert_eq!(two.status, 401, "{two:?}");
    // Still serving, and the right answer works.
    let mut conn = Connection::connect(server.addr);
    let c = challenges(&describe(&mut conn, &url, None)).remove(1);
    let nonce = param(&c, "nonce").unwrap();
    let ok = DigestAnswer {
        alg: "md5",
        user: "alice",
        realm: REALM,
        password: "s3cret",
        method: "DESCRIBE",
        uri: &url,
        nonce: &nonce,
        opaque: None,
        qop: Some(("00000001", "z")),
    };
    assert_eq!(describe(&mut conn, &url, Some(&ok.header())).status, 200);
}

/// A connection to `server` from `local` (another loopback address).
fn connect_from(local: &str, to: SocketAddr) -> Connection {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&local.parse::<SocketAddr>().unwrap().into()).unwrap();
    socket.connect(&to.into()).unwrap();
    Connection::over(TcpStream::from(socket))
}

#[test]
fn repeated_failed_logins_are_slowed_then_refused_and_counted() {
    let server = server("access-failures", "basic", &[]);
    let url = server.url(MOVIE);
    // One guesser after another: past the burst each answer is held (the
    // guesser is slowed to the configured rate), never refused outright.
    let mut conn = Connection::connect(server.addr);
    let mut statuses = Vec::new();
    for _ in 0..7 {
        statuses.push(describe(&mut conn, &url, Some(&basic("alice", "guess"))).status);
    }
    assert!(statuses.iter().all(|&s| s == 401), "{statuses:?}");
    // Many at once from the same address: far over the rate, refused with
    // 503 and Retry-After.
    let addr = server.addr;
    let url2 = url.clone();
    let parallel: Vec<_> = (0..10)
        .map(|_| {
            let url = url2.clone();
            std::thread::spawn(move || {
                let mut c = Connection::connect(addr);
                let r = c.request("DESCRIBE", &url, &[("Authorization", &basic("alice", "guess"))]);
                (r.status, r.header("Retry-After").map(str::to_owned))
            })
        })
        .collect();
    let answers: Vec<(u16, Option<String>)> = parallel.into_iter().map(|t| t.join().unwrap()).collect();
    let refused: Vec<_> = answers.iter().filter(|(s, _)| *s == 503).collect();
    assert!(!refused.is_empty(), "{answers:?}");
    for (_, retry) in &refused {
        let secs: u64 = retry.as_deref().and_then(|v| v.parse().ok()).expect("Retry-After");
        assert!(secs >= 1, "{answers:?}");
    }
    assert!(answers.iter().all(|(s, _)| *s == 401 || *s == 503), "{answers:?}");
    // Another address is not held back.
    let mut other = connect_from("127.0.0.2:0", server.addr);
    assert_eq!(describe(&mut other, &url, Some(&basic("alice", "s3cret"))).status, 200);

    let challenged = statuses.len() + answers.iter().filter(|(s, _)| *s == 401).count();
    let stopped = server.stop();
    let logged = stopped.stderr.matches("login failed").count();
    assert_eq!(
        logged, challenged,
        "one log line per failed login answered 401:\n{}",
        stopped.stderr
    );
    let counters = stopped
        .stderr
        .lines()
        .find(|l| l.contains("access counters"))
        .unwrap_or_else(|| panic!("no access counters at shutdown:\n{}", stopped.stderr));
    let field = |name: &str| -> u64 {
        counters
            .split_whitespace()
            .find_map(|f| f.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {counters}"))
    };
    assert!(field("failed_logins") >= challenged as u64, "{counters}");
    assert!(
        field("failed_logins_delayed") >= 1,
        "answers were held past the burst: {counters}"
    );
    assert_eq!(field("slowed_down"), refused.len() as u64, "{counters}");
}
