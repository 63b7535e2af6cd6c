//! The admin API (`/api/v1/`) against `streamalot serve`, end to end.
//!
//! - It is off without `--admin-token`, refuses requests without the token
//!   (401 with a challenge) and clients outside `--admin-allow` (403).
//! - It lists the sessions the shards hold, page by page, with the figures
//!   the clients see.
//! - Ending a session ends it: ffmpeg playing over TCP stops before the
//!   movie's end (its connection closes), a UDP client gets its BYE and
//!   454 afterwards, and the access log has their lines.
//! - Hostile HTTP to it (bad JSON, bad IDs, huge paging values, garbage
//!   credentials, oversized bodies) gets a clean 4xx, and a session plays
//!   on untouched.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use streamalot_tests::admin::{api, bearer, http, http_from, long_movie};
use streamalot_tests::rtsp::{Lower, Player};
use streamalot_tests::server::{free_tcp_port, library, Server};
use streamalot_tests::{require_tool, spawn, wait_with_timeout};

const TOKEN: &str = "test-token_0123456789";

/// Polls the API until `done` holds for a page of sessions.
fn wait_for_sessions(server: &Server, what: &str, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let page = api(server.addr, TOKEN, "sessions");
        if done(&page) {
            return page;
        }
        assert!(Instant::now() < deadline, "{what}: never came; last page {page}");
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_api_is_off_refused_or_answered() {
    let media = library("admin-refusals", &[&long_movie(60)]);
    let off = Server::start(&media, &[]);
    let auth = bearer(TOKEN);
    let r = http(off.addr, "GET", "/api/v1/server", &[("Authorization", &auth)], &[]);
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.json()["error"].as_str().unwrap().contains("--admin-token"));
    assert_eq!(http(off.addr, "GET", "/", &[], &[]).status, 403);
    drop(off);

    let http_port = free_tcp_port();
    let server = Server::start(
        &media,
        &[
            "--admin-token",
            TOKEN,
            "--admin-allow",
            "127.0.0.1/32",
            "--http-port",
            &http_port.to_string(),
        ],
    );
    // On an HTTP-only port as on the RTSP port.
    let on_http_port = SocketAddr::from(([127, 0, 0, 1], http_port));
    assert_eq!(api(on_http_port, TOKEN, "server")["config"]["http_ports"][0], http_port);
    assert_eq!(http(on_http_port, "GET", "/api/v1/server", &[], &[]).status, 401);
    assert_eq!(http(on_http_port, "GET", "/metrics", &[], &[]).status, 200);
    // Control characters in a header are not HTTP: the parser refuses them.
    let r = http(
        server.addr,
        "GET",
        "/api/v1/sessions",
        &[("Authorization", "Bearer \u{1}x")],
        &[],
    );
    assert_eq!(r.status, 400);
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Bearer"),
        Some("Basic dXNlcjpwYXNz"),
        Some("Bearer  "),
    ] {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
        let r = http(server.addr, "GET", "/api/v1/sessions", &headers, &[]);
        assert_eq!(r.status, 401, "{auth:?}: {}", r.text());
        assert!(
            r.header("WWW-Authenticate").is_some_and(|c| c.starts_with("Bearer")),
            "{auth:?}"
        );
        assert!(r.json()["error"].is_string());
    }
    // The right token from an address outside --admin-allow.
    let r = http_from(
        [127, 0, 0, 2],
        server.addr,
        "GET",
        "/api/v1/server",
        &[("Authorization", &bearer(TOKEN))],
    );
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(http_from([127, 0, 0, 2], server.addr, "GET", "/", &[]).status, 403);
    // And from one inside.
    let info = api(server.addr, TOKEN, "server");
    assert_eq!(info["name"], "streamalot");
    assert_eq!(info["health"], "ok");
    assert_eq!(info["counts"]["shards"], 1);
    assert_eq!(info["config"]["rtsp_ports"][0], server.addr.port());
    assert!(!info.to_string().contains(TOKEN), "the token is not shown: {info}");
    let page = http(server.addr, "GET", "/", &[], &[]);
    assert_eq!(page.status, 200);
    assert!(page.header("Content-Type").is_some_and(|t| t.starts_with("text/html")));
    assert!(!page.text().contains(TOKEN), "the page does not carry the token");
    for list in ["streams", "publishers", "channels"] {
        assert_eq!(api(server.addr, TOKEN, list)[list], serde_json::json!([]));
    }
    let stopped = server.stop_cleanly();
    assert!(
        !stopped.stdout.contains(TOKEN) && !stopped.stderr.contains(TOKEN),
        "the token is never logged"
    );
}

#[test]
fn sessions_come_page_by_page() {
    let movie = long_movie(60);
    let server = Server::start(&library("admin-paging", &[&movie]), &["--admin-token", TOKEN]);
    let url = server.url("long-60s.mp4");
    let mut players: Vec<Player> = (0..5).map(|_| Player::setup(server.addr, &url, Lower::Udp)).collect();
    for p in players.iter_mut().take(2) {
        p.play(None);
    }
    let mine: HashSet<String> = players.iter().map(|p| p.session.clone()).collect();
    let all = wait_for_sessions(&server, "two sessions playing", |page| {
        page["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["state"] == "playing")
            .count()
            == 2
    });
    assert_eq!(all["total"], 5);
    let mut seen = Vec::new();
    for offset in [0, 2, 4] {
        let page = api(server.addr, TOKEN, &format!("sessions?offset={offset}&limit=2"));
        assert_eq!(page["total"], 5);
        assert_eq!(page["offset"], offset);
        let ids: Vec<String> = page["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(ids.len(), if offset == 4 { 1 } else { 2 }, "{page}");
        seen.extend(ids);
    }
    assert_eq!(
        seen.iter().cloned().collect::<HashSet<_>>(),
        mine,
        "each session once, on one page"
    );
    assert_eq!(seen.len(), 5);
    // Oldest first: the order of the SETUPs.
    let order: Vec<&String> = players.iter().map(|p| &p.session).collect();
    assert_eq!(seen.iter().collect::<Vec<_>>(), order);
    let past = api(server.addr, TOKEN, "sessions?offset=1000000");
    assert_eq!(past["sessions"], serde_json::json!([]));
    // One session's figures: what its client sees.
    let p = &mut players[0];
    p.drain(Duration::from_millis(500));
    let one = api(server.addr, TOKEN, &format!("sessions/{}", p.session));
    assert_eq!(one["transport"], "udp");
    assert_eq!(one["kind"], "vod");
    assert_eq!(one["path"], "/long-60s.mp4");
    assert!(one["client"].as_str().unwrap().starts_with("127.0.0.1:"));
    let received: usize = p.streams.iter().map(|s| s.packets.len()).sum();
    assert!(
        one["packets"].as_u64().unwrap() >= received as u64,
        "{one} vs {received} received"
    );
    let shards = api(server.addr, TOKEN, "shards");
    assert_eq!(shards["shards"][0]["sessions"], 5);
    assert_eq!(shards["shards"][0]["by_transport"]["udp"], 5);
}

#[test]
fn ending_a_session_ends_it_for_its_client() {
    require_tool("ffmpeg");
    let movie = long_movie(60);
    let server = Server::start(&library("admin-end", &[&movie]), &["--admin-token", TOKEN]);
    let url = server.url("long-60s.mp4");
    // ffmpeg over TCP, counting the frames it decodes.
    let (ffmpeg, what) = spawn(
        Command::new("ffmpeg")
            .args(["-hide_banner", "-nostats", "-rtsp_transport", "tcp", "-i", &url])
            .args(["-map", "0:v", "-f", "framemd5", "-"]),
    );
    let page = wait_for_sessions(&server, "ffmpeg's session playing", |page| {
        page["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["state"] == "playing" && s["transport"] == "tcp")
    });
    let id = page["sessions"][0]["id"].as_str().unwrap().to_owned();
    // A UDP client too.
    let mut udp = Player::setup(server.addr, &url, Lower::Udp);
    udp.play(None);
    assert!(udp.receive_until(Duration::from_secs(10), |s| s.iter().all(|s| !s.packets.is_empty())));

    let auth = bearer(TOKEN);
    let r = http(
        server.addr,
        "DELETE",
        &format!("/api/v1/sessions/{id}"),
        &[("Authorization", &auth)],
        &[],
    );
    assert_eq!(
        (r.status, r.json()["ended"].as_str()),
        (200, Some(id.as_str())),
        "{}",
        r.text()
    );
    let out = wait_with_timeout(ffmpeg, Duration::from_secs(30), &what);
    let frames = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .count();
    assert!(
        frames > 0 && frames < 600,
        "ffmpeg decoded {frames} of the movie's 600 frames before its session ended"
    );
    // A second DELETE finds nothing.
    let again = http(
        server.addr,
        "DELETE",
        &format!("/api/v1/sessions/{id}"),
        &[("Authorization", &auth)],
        &[],
    );
    assert_eq!(again.status, 404);

    let r = http(
        server.addr,
        "DELETE",
        &format!("/api/v1/sessions/{}", udp.session),
        &[("Authorization", &auth)],
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        udp.receive_until(Duration::from_secs(10), |s| s.iter().all(|s| s.said_bye())),
        "the UDP client gets a BYE on every stream"
    );
    assert_eq!(udp.control("GET_PARAMETER", &[]).status, 454);
    let records = server.wait_for_records(2, Duration::from_secs(10));
    assert!(records.iter().any(|r| r["transport"] == "tcp"), "{records:?}");
    assert!(records.iter().any(|r| r["transport"] == "udp"), "{records:?}");
    assert_eq!(api(server.addr, TOKEN, "sessions")["total"], 0);
}

#[test]
fn hostile_requests_get_clean_4xx() {
    let movie = long_movie(60);
    let server = Server::start(
        &library("admin-hostile", &[&movie]),
        &["--admin-token", TOKEN, "--max-body-bytes", "4K"],
    );
    let mut player = Player::setup(server.addr, &server.url("long-60s.mp4"), Lower::Udp);
    player.play(None);
    let auth = bearer(TOKEN);
    let a = [("Authorization", auth.as_str())];
    let big = vec![b'{'; 64 * 1024];
    let cases: Vec<(&str, String, Vec<u8>, u16)> = vec![
        ("POST", "/api/v1/library/reload".into(), b"{not json".to_vec(), 400),
        ("POST", "/api/v1/library/reload".into(), b"[]".to_vec(), 400),
        ("POST", "/api/v1/library/reload".into(), b"{\"all\":1}".to_vec(), 400),
        ("POST", "/api/v1/library/reload".into(), b"\xff\xfe\x00".to_vec(), 400),
        ("POST", "/api/v1/library/reload".into(), big, 413),
        (
            "GET",
            "/api/v1/sessions?limit=99999999999999999999999".into(),
            vec![],
            400,
        ),
        (
            "GET",
            "/api/v1/sessions?offset=18446744073709551616".into(),
            vec![],
            400,
        ),
        ("GET", "/api/v1/sessions?limit=0".into(), vec![], 400),
        ("GET", "/api/v1/sessions?limit=-3".into(), vec![], 400),
        ("GET", "/api/v1/sessions?offset=%31".into(), vec![], 400),
        ("GET", "/api/v1/sessions?x=1".into(), vec![], 400),
        ("GET", "/api/v1/sessions/not-an-id".into(), vec![], 400),
        ("DELETE", "/api/v1/sessions/FFFFFFFFFFFFFFFFF".into(), vec![], 400),
        ("DELETE", "/api/v1/sessions/%2e%2e%2f".into(), vec![], 400),
        ("DELETE", "/api/v1/sessions/0000000000000001".into(), vec![], 404),
        ("DELETE", "/api/v1/publishers/cam".into(), vec![], 404),
        ("PUT", "/api/v1/sessions".into(), vec![], 405),
        ("GET", "/api/v1/../../etc/passwd".into(), vec![], 404),
        ("GET", "/api/v1/".into(), vec![], 404),
    ];
    for (method, target, body, status) in cases {
        let r = http(server.addr, method, &target, &a, &body);
        assert_eq!(r.status, status, "{method} {target}: {}", r.text());
        match status {
            // Refused by the HTTP layer before the API sees it.
            413 => {}
            405 if method == "PUT" => assert!(r.header("Allow").is_some_and(|a| a.contains("GET"))),
            _ => assert!(r.json()["error"].is_string(), "{method} {target}: {}", r.text()),
        }
    }
    // Reloading works when asked properly.
    let r = http(server.addr, "POST", "/api/v1/library/reload", &a, b"{}");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["dropped"].is_u64());
    // The session played on through all of it, and is still there.
    let before: usize = player.streams.iter().map(|s| s.packets.len()).sum();
    assert!(
        player.drain(Duration::from_millis(500)) > 0,
        "the session plays on ({before} before)"
    );
    assert_eq!(api(server.addr, TOKEN, "sessions")["total"], 1);
    assert_eq!(player.control("GET_PARAMETER", &[]).status, 200);
}
