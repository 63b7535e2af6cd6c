//! Authorization and address rules: a folder's `qtaccess` protects its
//! movies and subfolders and not its siblings, the nearest file up the tree
//! wins, `<Limit WRITE>` leaves watching alone, the same rules in the TOML
//! config, a groups file, a broken `qtaccess` line failing closed and
//! reported with its file and line, and deny rules refusing a connection
//! before anything it sent is parsed.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use streamalot_tests::access::{basic, users_file};
use streamalot_tests::ffmpeg::{differences_from_file, framemd5, FRAME_HASHES};
use streamalot_tests::media::media;
use streamalot_tests::rtsp::Connection;
use streamalot_tests::server::{library, Server};

const MOVIE: &str = "h264-aac.mp4";

/// `dir/MOVIE`, a link to the test movie.
fn put_movie(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let to = dir.join(MOVIE);
    if std::fs::hard_link(media().h264_mp4(), &to).is_err() {
        std::fs::copy(media().h264_mp4(), &to).unwrap();
    }
}

fn status(server: &Server, path: &str, auth: Option<&str>) -> u16 {
    let mut conn = Connection::connect(server.addr);
    let url = server.url(path);
    match auth {
        Some(a) => conn.request("DESCRIBE", &url, &[("Authorization", a)]).status,
        None => conn.request("DESCRIBE", &url, &[]).status,
    }
}

#[test]
fn a_folders_qtaccess_protects_it_and_its_subfolders_not_its_siblings() {
    let lib = library("access-tree", &[media().h264_mp4()]);
    for dir in [
        "private",
        "private/sub",
        "private/open",
        "public",
        "broken",
        "staff",
        "staff/sub-none",
        "writers",
    ] {
        put_movie(&lib.join(dir));
    }
    let write = |rel: &str, text: &str| std::fs::write(lib.join(rel), text).unwrap();
    write(
        "private/qtaccess",
        "# DSS syntax\nAuthName \"Private\"\nAuthScheme basic\nrequire user alice\n",
    );
    // The nearest file wins: this one opens its folder to anyone.
    write("private/open/qtaccess", "AuthScheme none\nrequire any-user\n");
    write(
        "broken/qtaccess",
        "AuthScheme basic\nrequire valid-user\nrequire sometimes alice\n",
    );
    let groups = lib.with_extension("groups");
    std::fs::write(&groups, "staff: carol\n").unwrap();
    write("staff/qtaccess", "AuthScheme basic\nrequire group staff\n");
    // Watching open to anyone, publishing only for alice.
    write(
        "writers/qtaccess",
        "AuthScheme basic\nrequire any-user\n<Limit WRITE>\nrequire user alice\n</Limit>\n",
    );
    // A file that says nothing about watching closes it (as DSS did).
    write(
        "staff/sub-none/qtaccess",
        "<Limit WRITE>\nrequire user alice\n</Limit>\n",
    );
    let users = users_file(
        &lib.with_extension("users"),
        &[("alice", "a"), ("bob", "b"), ("carol", "c")],
    );
    let server = Server::start(
        &lib,
        &["--users", users.to_str().unwrap(), "--groups", groups.to_str().unwrap()],
    );
    let alice = basic("alice", "a");
    let bob = basic("bob", "b");
    let carol = basic("carol", "c");
    let cases: &[(&str, Option<&str>, u16)] = &[
        ("h264-aac.mp4", None, 200),
        ("public/h264-aac.mp4", None, 200),
        ("private/h264-aac.mp4", None, 401),
        ("private/sub/h264-aac.mp4", None, 401),
        ("private/h264-aac.mp4", Some(&alice), 200),
        ("private/sub/h264-aac.mp4", Some(&alice), 200),
        ("private/h264-aac.mp4", Some(&bob), 403),
        ("private/h264-aac.mp4", Some(&basic("alice", "wrong")), 401),
        ("private/open/h264-aac.mp4", None, 200),
        ("private%2Fsub/h264-aac.mp4", None, 400),
        ("broken/h264-aac.mp4", None, 403),
        ("broken/h264-aac.mp4", Some(&alice), 403),
        ("staff/h264-aac.mp4", Some(&carol), 200),
        ("staff/h264-aac.mp4", Some(&alice), 403),
        ("writers/h264-aac.mp4", None, 200),
        ("staff/sub-none/h264-aac.mp4", Some(&carol), 403),
    ];
    let mut wrong = Vec::new();
    for &(path, auth, want) in cases {
        let got = status(&server, path, auth);
        if got != want {
            wrong.push(format!("{path} with {auth:?}: {got}, wanted {want}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // The challenge names the folder's AuthName as the Basic realm.
    let mut conn = Connection::connect(server.addr);
    let r = conn.request("DESCRIBE", &server.url("private/h264-aac.mp4"), &[]);
    let challenge = r.header("WWW-Authenticate").unwrap_or_default();
    assert!(challenge.starts_with("Basic realm=\"Private\""), "{r:?}");
    // A SETUP straight away is judged as a DESCRIBE is.
    let r = conn.request(
        "SETUP",
        &server.url("private/sub/h264-aac.mp4/trackID=1"),
        &[("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1")],
    );
    assert_eq!(r.status, 401, "{r:?}");
    // Publishing where `<Limit WRITE>` says who may: judged by it (401
    // without credentials); where no rule says, 405 as ever (no
    // `--publish` rule, so publishing is otherwise off).
    let r = conn.request("ANNOUNCE", &server.url("writers/live.sdp"), &[]);
    assert_eq!(r.status, 401, "{r:?}");
    let r = conn.request("ANNOUNCE", &server.url("public/live.sdp"), &[]);
    assert_eq!(r.status, 405, "{r:?}");

    // ffmpeg plays a protected movie in a subfolder, bit for bit.
    let url = format!("rtsp://alice:a@{}/private/sub/{MOVIE}", server.addr);
    let got = framemd5(&["-rtsp_transport", "tcp"], &url, FRAME_HASHES, Duration::from_secs(60));
    let d = differences_from_file(media().h264_mp4(), &got, Duration::from_secs(60));
    assert!(d.is_empty(), "{}", d.join("\n"));

    let stopped = server.stop();
    let broken = lib.join("broken/qtaccess");
    let line = stopped
        .stderr
        .lines()
        .find(|l| l.contains("failing closed"))
        .unwrap_or_else(|| panic!("the broken file is not reported:\n{}", stopped.stderr));
    assert!(
        line.contains(&format!("{}:3:", broken.display())),
        "the report names the file and line: {line}"
    );
}

#[test]
fn toml_rules_protect_a_path() {
    let lib = library("access-toml", &[media().h264_mp4()]);
    put_movie(&lib.join("members"));
    let users = users_file(&lib.with_extension("users"), &[("alice", "a")]);
    let config = lib.with_extension("toml");
    std::fs::write(
        &config,
        format!(
            "[access]\nusers = {:?}\n\n[[access.rule]]\npath = \"/members\"\nvalid = true\nscheme = \"basic\"\n",
            users.to_str().unwrap()
        ),
    )
    .unwrap();
    let server = Server::start(&lib, &["--config", config.to_str().unwrap()]);
    assert_eq!(status(&server, "members/h264-aac.mp4", None), 401);
    assert_eq!(status(&server, "members/h264-aac.mp4", Some(&basic("alice", "a"))), 200);
    assert_eq!(status(&server, "h264-aac.mp4", None), 200);
}

/// A connection to `to` from the loopback address `from`.
fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&format!("{from}:0").parse::<SocketAddr>().unwrap().into())
        .unwrap();
    socket.connect(&to.into()).unwrap();
    TcpStream::from(socket)
}

#[test]
fn deny_rules_refuse_before_any_request_is_parsed() {
    let lib = library("access-deny", &[media().h264_mp4()]);
    let server = Server::start(&lib, &["--deny", "127.0.0.2/32", "--deny", "127.0.1.0/24"]);
    for from in ["127.0.0.2", "127.0.1.9"] {
        let mut s = connect_from(from, server.addr);
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // Whatever it sends, even what would not parse, gets no answer: the
        // connection is closed at once.
        let _ = s.write_all(b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n");
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).unwrap_or(0);
        assert_eq!(n, 0, "{from}: answered {:?}", String::from_utf8_lossy(&buf[..n]));
    }
    // Others are served.
    let mut conn = Connection::over(connect_from("127.0.0.3", server.addr));
    assert_eq!(conn.request("DESCRIBE", &server.url(MOVIE), &[]).status, 200);
    let stopped = server.stop();
    assert_eq!(
        stopped
            .stderr
            .matches("connection refused by the address rules")
            .count(),
        2,
        "{}",
        stopped.stderr
    );
    // Nothing of theirs reached the parser: no request from them is logged.
    assert!(!stopped.stderr.contains("bad request"), "{}", stopped.stderr);
}
