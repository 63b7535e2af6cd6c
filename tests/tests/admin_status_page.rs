//! The status page at `/`, opened in real headless Chromium during a run:
//! with the token in its URL's fragment it loads from the server alone,
//! shows the session that is playing and the shards' load, draws the
//! throughput chart, lists a channel with what it plays, and its numbers
//! are the API's. A screenshot is saved
//! beside the test's other files. Without the token it shows no data and
//! says why.

use std::thread;
use std::time::{Duration, Instant};

use streamalot_tests::admin::{api, headless, long_movie};
use streamalot_tests::rtsp::{Lower, Player};
use streamalot_tests::scratch_dir;
use streamalot_tests::server::{library, Server};

const TOKEN: &str = "page-token-42";

/// The text of the element with `id` in `dom`.
fn by_id<'a>(dom: &'a str, id: &str) -> &'a str {
    let open = format!("id=\"{id}\"");
    let at = dom
        .find(&open)
        .unwrap_or_else(|| panic!("no #{id} in the page:\n{dom}"));
    let start = at + dom[at..].find('>').expect("a whole tag") + 1;
    let end = start + dom[start..].find('<').expect("a closing tag");
    &dom[start..end]
}

#[test]
fn the_status_page_shows_a_playing_session_and_a_chart() {
    let movie = long_movie(60);
    let lib = library("status-page", &[&movie]);
    // A channel of the same movie, which the page lists with what it plays.
    let playlist = lib.with_extension("ply");
    std::fs::write(&playlist, format!("*PLAY-LIST*\n{}\n", movie.display())).unwrap();
    let channel = format!("tv={}", playlist.display());
    let server = Server::start(&lib, &["--admin-token", TOKEN, "--channel", &channel]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while api(server.addr, TOKEN, "channels")["channels"][0]["now"].is_null() {
        assert!(Instant::now() < deadline, "the channel is not on the air");
        thread::sleep(Duration::from_millis(100));
    }
    let mut player = Player::setup(server.addr, &server.url("long-60s.mp4"), Lower::Udp);
    player.play(None);
    // A second session, set up and not playing.
    let idle = Player::setup(server.addr, &server.url("long-60s.mp4"), Lower::Udp);
    // The chart needs a few of the server's samples (one every 2 s).
    let deadline = Instant::now() + Duration::from_secs(30);
    while api(server.addr, TOKEN, "throughput")["samples"]
        .as_array()
        .unwrap()
        .len()
        < 3
    {
        assert!(Instant::now() < deadline, "no throughput samples");
        player.drain(Duration::from_millis(200));
    }
    let dir = scratch_dir().join("status-page");
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("http://{}/#token={TOKEN}", server.addr);
    // Keep the session's media flowing while Chromium runs.
    let keep = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let draining = {
        let keep = keep.clone();
        thread::spawn(move || {
            while keep.load(std::sync::atomic::Ordering::Relaxed) {
                player.drain(Duration::from_millis(100));
            }
            player
        })
    };
    let dom = headless(&url, &dir, 6_000, &["--dump-dom"]);
    let shot = dir.join("status.png");
    let _ = std::fs::remove_file(&shot);
    headless(&url, &dir, 6_000, &[&format!("--screenshot={}", shot.display())]);
    let sessions = api(server.addr, TOKEN, "sessions");
    let info = api(server.addr, TOKEN, "server");
    let shards = api(server.addr, TOKEN, "shards");
    let channels = api(server.addr, TOKEN, "channels");
    keep.store(false, std::sync::atomic::Ordering::Relaxed);
    let player = draining.join().expect("the draining thread");
    std::fs::write(dir.join("status.html"), &dom).unwrap();

    // The page's numbers are the API's.
    assert_eq!(by_id(&dom, "health"), "ok", "{dom}");
    assert_eq!(by_id(&dom, "version"), info["version"].as_str().unwrap());
    assert_eq!(by_id(&dom, "session-count"), sessions["total"].to_string());
    assert_eq!(by_id(&dom, "session-count"), "2");
    assert_eq!(
        by_id(&dom, "shard-count"),
        shards["shards"].as_array().unwrap().len().to_string()
    );
    let row = format!("data-session=\"{}\" data-state=\"playing\"", player.session);
    assert!(dom.contains(&row), "no playing row for {}:\n{dom}", player.session);
    let idle_row = format!("data-session=\"{}\" data-state=\"ready\"", idle.session);
    assert!(dom.contains(&idle_row), "no row for the idle session:\n{dom}");
    assert!(dom.contains("<td>/long-60s.mp4</td>"), "{dom}");
    assert!(dom.contains("data-shard=\"0\""), "{dom}");
    // The chart: a line through the samples.
    let at = dom
        .find("id=\"throughput-line\"")
        .unwrap_or_else(|| panic!("no chart:\n{dom}"));
    let tag = &dom[dom[..at].rfind('<').unwrap()..at + dom[at..].find('>').unwrap()];
    let points = tag
        .split("points=\"")
        .nth(1)
        .and_then(|p| p.split('"').next())
        .expect("points");
    assert!(points.split(' ').count() >= 2, "{tag}");
    // The channel is a live stream, and has its row.
    assert_eq!(by_id(&dom, "streams"), "/tv", "{dom}");
    let tv = &channels["channels"][0];
    assert_eq!(tv["state"], "on_air");
    assert!(
        dom.contains("data-channel=\"tv\" data-state=\"on_air\""),
        "no row for the channel:\n{dom}"
    );
    let movie = tv["now"]["movie"].as_str().expect("what the channel plays");
    let now_playing = tv["now"]["title"]
        .as_str()
        .unwrap_or_else(|| movie.rsplit('/').next().unwrap());
    assert!(
        dom.contains(&format!("<td title=\"{movie}\">{now_playing}</td>")),
        "{now_playing}:\n{dom}"
    );
    // The screenshot is a PNG.
    let png = std::fs::read(&shot).unwrap_or_else(|e| panic!("no screenshot {}: {e}", shot.display()));
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );

    // Without the token, no data, and the page says what it needs.
    let bare = headless(&format!("http://{}/", server.addr), &dir, 3_000, &["--dump-dom"]);
    assert!(bare.contains("admin token"), "{bare}");
    assert!(!bare.contains(&player.session), "{bare}");
}
