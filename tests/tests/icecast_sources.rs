//! Icecast sources held to real clients: ffmpeg publishes with
//! `icecast://source:PASSWORD@HOST:PORT/live.mp3` (PUT, `Expect:
//! 100-continue`) and 200 listeners at once each get an unbroken run of its
//! frames, from a frame boundary to its last frame; `/admin/metadata`
//! changes the title that listeners with `Icy-MetaData: 1` read; and
//! hostile sources (a wrong password, a busy mount, a bad content type, a
//! garbage body, a source that stalls) each get their answer while a
//! listener of another mount plays on untouched; VLC plays a live mount,
//! reads its title and decodes its tone.
//!
//! The songs are made here by ffmpeg; each stream takes its song's length
//! to play, so the songs are short.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::Duration;

use streamalot_tests::icecast::{
    assert_contiguous_run, basic, frames_of, listen, request, song, stream_title, wait_for_mount, TestSource,
};
use streamalot_tests::server::{library, Server};
use streamalot_tests::{require_tool, wait_with_timeout};

const PASSWORD: &str = "hackme";

struct Song {
    path: PathBuf,
    frames: Vec<u8>,
}

fn song_of(name: &str, seconds: u32, hz: u32) -> Song {
    let path = song(name, seconds, hz, name);
    Song {
        frames: frames_of(&path),
        path,
    }
}

/// Seven seconds of a tone.
fn tone() -> &'static Song {
    static SONG: OnceLock<Song> = OnceLock::new();
    SONG.get_or_init(|| song_of("tone.mp3", 7, 440))
}

/// A longer one, for the mount that plays on beside hostile ones.
fn long_tone() -> &'static Song {
    static SONG: OnceLock<Song> = OnceLock::new();
    SONG.get_or_init(|| song_of("long-tone.mp3", 12, 660))
}

fn serve(name: &str, extra: &[&str]) -> Server {
    let rule = format!("/=source:{PASSWORD}");
    let mut args = vec!["--publish", &rule];
    args.extend_from_slice(extra);
    Server::start(&library(name, &[]), &args)
}

/// ffmpeg publishing `song` to `path`, at its pace.
fn ffmpeg_source(server: &Server, song: &Song, path: &str, password: &str) -> std::process::Child {
    require_tool("ffmpeg");
    Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-re", "-i"])
        .arg(&song.path)
        .args([
            "-c",
            "copy",
            "-content_type",
            "audio/mpeg",
            "-ice_name",
            "Test Radio",
            "-f",
            "mp3",
        ])
        .arg(format!("icecast://source:{password}@{}{path}", server.addr))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ffmpeg")
}

#[test]
fn ffmpeg_publishes_and_200_listeners_get_an_unbroken_run_of_its_frames() {
    let song = tone();
    let server = serve("ffmpeg", &[]);
    let addr = server.addr;
    let ffmpeg = ffmpeg_source(&server, song, "/live.mp3", PASSWORD);
    wait_for_mount(addr, "/live.mp3", Duration::from_secs(10));
    let listeners: Vec<_> = (0..200)
        .map(|i| thread::spawn(move || listen(addr, "/live.mp3", i % 2 == 0, Duration::from_secs(30))))
        .collect();
    // /metrics counts them on the mount, and the source.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let series = "streamalot_icecast_mount_listeners{mount=\"/live.mp3\",feed=\"source\"} ";
    loop {
        let (status, text) = request(addr, "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(status, 200, "{text}");
        let n = text
            .lines()
            .find_map(|l| l.strip_prefix(series))
            .map(str::trim)
            .map(str::to_owned);
        if n.as_deref() == Some("200") {
            assert!(text.contains("\nstreamalot_icecast_sources 1\n"), "{text}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "listeners on the mount: {n:?}\n{text}"
        );
        thread::sleep(Duration::from_millis(100));
    }
    let out = wait_with_timeout(ffmpeg, Duration::from_secs(30), "ffmpeg's icecast source");
    assert!(out.status.success(), "ffmpeg: {}", String::from_utf8_lossy(&out.stderr));
    let mut starts = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        let heard = l.join().unwrap();
        assert_eq!(heard.status(), 200, "{}", heard.head);
        assert_eq!(heard.header("Content-Type"), Some("audio/mpeg"), "{}", heard.head);
        assert_eq!(heard.header("icy-name"), Some("Test Radio"), "{}", heard.head);
        let (audio, blocks) = heard.strip();
        if i % 2 == 0 {
            assert!(heard.header("icy-metaint").is_some(), "{}", heard.head);
            assert!(!blocks.is_empty(), "listener {i}: no metadata block");
        }
        let (start, end) = assert_contiguous_run(&audio, &song.frames, &format!("listener {i}"));
        // The source's end is the stream's: every frame up to its last.
        assert_eq!(end, song.frames.len(), "listener {i} lost the end");
        starts.push(start);
    }
    println!(
        "200 listeners: runs from byte {} to {} of {} of frames",
        starts.iter().min().unwrap(),
        starts.iter().max().unwrap(),
        song.frames.len()
    );
    let records = server.wait_for_records(201, Duration::from_secs(10));
    let source = records
        .iter()
        .find(|r| r["transport"] == "icecast-source")
        .expect("the source's access-log line");
    assert_eq!(source["cs-uri-stem"], "/live.mp3");
    assert_eq!(source["c-status"], "200");
    // After the source, nothing is on the air there.
    assert_eq!(request(addr, "GET /live.mp3 HTTP/1.1\r\nHost: t\r\n\r\n").0, 404);
    server.stop_cleanly();
}

#[test]
fn a_wrong_password_is_401_and_a_busy_mount_403() {
    let song = tone();
    let server = serve("refusals", &[]);
    let addr = server.addr;
    let wrong = ffmpeg_source(&server, song, "/live.mp3", "wrong");
    let out = wait_with_timeout(wrong, Duration::from_secs(30), "ffmpeg with a wrong password");
    assert!(!out.status.success(), "ffmpeg published with a wrong password");
    let (status, text) = request(
        addr,
        &format!(
            "PUT /live.mp3 HTTP/1.1\r\nHost: t\r\nAuthorization: {}\r\nContent-Type: audio/mpeg\r\n\r\n",
            basic("source", "nope")
        ),
    );
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("WWW-Authenticate: Basic realm="), "{text}");
    let (status, _) = request(addr, "SOURCE /live.mp3 HTTP/1.0\r\n\r\n");
    assert_eq!(status, 401);
    // One source a mount: the second is told it is in use.
    let auth = format!(
        "Authorization: {}\r\nContent-Type: audio/mpeg\r\n",
        basic("source", PASSWORD)
    );
    let mut first = TestSource::open(addr, "SOURCE", "/busy.mp3", &auth);
    assert!(first.answer.starts_with("HTTP/1.0 200 OK"), "{}", first.answer);
    let second = TestSource::open(addr, "SOURCE", "/busy.mp3", &auth);
    assert!(second.answer.starts_with("HTTP/1.0 403"), "{}", second.answer);
    first
        .send_frames(&song.frames[..20_000], Duration::from_secs(60))
        .unwrap();
    wait_for_mount(addr, "/busy.mp3", Duration::from_secs(5));
    drop(first);
    server.stop_cleanly();
}

#[test]
fn admin_metadata_changes_the_title_listeners_read() {
    let song = long_tone();
    let server = serve("metadata", &[]);
    let addr = server.addr;
    let ffmpeg = ffmpeg_source(&server, song, "/live.mp3", PASSWORD);
    wait_for_mount(addr, "/live.mp3", Duration::from_secs(10));
    let listener = thread::spawn(move || listen(addr, "/live.mp3", true, Duration::from_secs(30)));
    thread::sleep(Duration::from_secs(2));
    let update = |auth: &str, song: &str| {
        request(
            addr,
            &format!(
                "GET /admin/metadata?mount=/live.mp3&mode=updinfo&song={song} HTTP/1.1\r\nHost: t\r\nAuthorization: {auth}\r\n\r\n"
            ),
        )
    };
    let (status, text) = update(&basic("source", "wrong"), "Nope");
    assert_eq!(status, 401, "{text}");
    let (status, text) = update(&basic("source", PASSWORD), "Don%27t+Stop+%E2%98%83");
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("Metadata update successful"), "{text}");
    let (status, _) = request(
        addr,
        &format!(
            "GET /admin/metadata?mount=/none.mp3&mode=updinfo&song=x HTTP/1.1\r\nHost: t\r\nAuthorization: {}\r\n\r\n",
            basic("source", PASSWORD)
        ),
    );
    assert_eq!(status, 400, "no source there");
    let out = wait_with_timeout(ffmpeg, Duration::from_secs(30), "ffmpeg's icecast source");
    assert!(out.status.success(), "ffmpeg: {}", String::from_utf8_lossy(&out.stderr));
    let heard = listener.join().unwrap();
    let (audio, blocks) = heard.strip();
    assert_contiguous_run(&audio, &song.frames, "the listener");
    let titles: Vec<&str> = blocks.iter().filter_map(|b| stream_title(b)).collect();
    println!("titles: {titles:?}");
    assert_eq!(titles.last(), Some(&"Don't Stop \u{2603}"), "{titles:?}");
    server.stop_cleanly();
}

#[test]
fn hostile_sources_are_refused_and_another_mount_plays_on() {
    let song = long_tone();
    let server = serve("hostile", &["--source-timeout", "2"]);
    let addr = server.addr;
    let auth = format!("Authorization: {}\r\n", basic("source", PASSWORD));
    // The good mount and its listener, for the whole test.
    let good = {
        let auth = auth.clone();
        thread::spawn(move || {
            let mut s = TestSource::open(
                addr,
                "SOURCE",
                "/good.mp3",
                &format!("{auth}Content-Type: audio/mpeg\r\n"),
            );
            assert!(s.answer.starts_with("HTTP/1.0 200"), "{}", s.answer);
            s.send_frames(&song.frames, Duration::from_millis(500)).unwrap();
        })
    };
    wait_for_mount(addr, "/good.mp3", Duration::from_secs(10));
    let listener = thread::spawn(move || listen(addr, "/good.mp3", true, Duration::from_secs(40)));

    // A content type that is not MPEG audio.
    let ogg = TestSource::open(
        addr,
        "PUT",
        "/ogg.mp3",
        &format!("{auth}Content-Type: application/ogg\r\n"),
    );
    assert!(ogg.answer.starts_with("HTTP/1.1 415"), "{}", ogg.answer);
    // A garbage body: the source goes, its mount with it.
    let mut junk = TestSource::open(addr, "PUT", "/junk.mp3", &format!("{auth}Content-Type: audio/mpeg\r\n"));
    // Icecast's answer to a PUT without `Expect`.
    assert!(junk.answer.starts_with("HTTP/1.0 200 OK"), "{}", junk.answer);
    let garbage: Vec<u8> = (0..400_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8 | 0x11)
        .collect();
    let sent = std::io::Write::write_all(&mut junk.stream, &garbage);
    let mut rest = Vec::new();
    let closed = std::io::Read::read_to_end(&mut junk.stream, &mut rest);
    assert!(sent.is_err() || closed.is_ok(), "the garbage source was not closed");
    assert_eq!(request(addr, "GET /junk.mp3 HTTP/1.1\r\nHost: t\r\n\r\n").0, 404);
    // A source that stalls: it and its listener end.
    let mut stall = TestSource::open(
        addr,
        "SOURCE",
        "/stall.mp3",
        &format!("{auth}Content-Type: audio/mpeg\r\n"),
    );
    stall
        .send_frames(&song.frames[..30_000], Duration::from_secs(60))
        .unwrap();
    wait_for_mount(addr, "/stall.mp3", Duration::from_secs(5));
    let asked = std::time::Instant::now();
    let stalled_listener = listen(addr, "/stall.mp3", false, Duration::from_secs(20));
    // Ended by the server once the source timed out (2 s), not by the
    // test's own limit.
    let ended_after = asked.elapsed();
    assert!(
        ended_after < Duration::from_secs(12),
        "the stalled mount's listener was not ended: {ended_after:?}"
    );
    assert_eq!(stalled_listener.status(), 200);
    let (audio, _) = stalled_listener.strip();
    let (_, end) = assert_contiguous_run(&audio, &song.frames, "the stalled mount's listener");
    assert!(end <= 30_000);
    let mut rest = Vec::new();
    stall.stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    std::io::Read::read_to_end(&mut stall.stream, &mut rest).expect("the stalled source closed by the server");
    assert_eq!(request(addr, "GET /stall.mp3 HTTP/1.1\r\nHost: t\r\n\r\n").0, 404);

    good.join().unwrap();
    let heard = listener.join().unwrap();
    let (audio, _) = heard.strip();
    let (_, end) = assert_contiguous_run(&audio, &song.frames, "the good mount's listener");
    assert_eq!(end, song.frames.len());
    let records = server.wait_for_records(3, Duration::from_secs(10));
    let status_of = |path: &str| {
        records
            .iter()
            .find(|r| r["cs-uri-stem"] == path && r["transport"] == "icecast-source")
            .map(|r| r["c-status"].clone())
    };
    assert_eq!(status_of("/junk.mp3").as_deref(), Some("415"));
    assert_eq!(status_of("/stall.mp3").as_deref(), Some("408"));
    server.stop_cleanly();
}

#[test]
fn gstreamer_plays_a_live_mount_and_reads_its_new_title() {
    require_tool("gst-launch-1.0");
    let song = tone();
    let server = serve("gstreamer", &[]);
    let addr = server.addr;
    let ffmpeg = ffmpeg_source(&server, song, "/live.mp3", PASSWORD);
    wait_for_mount(addr, "/live.mp3", Duration::from_secs(10));
    let url = format!("location=http://{addr}/live.mp3");
    let out = streamalot_tests::scratch_dir().join("live-from-gstreamer.mp3");
    let gst = Command::new("gst-launch-1.0")
        .args([
            "-t",
            "souphttpsrc",
            &url,
            "iradio-mode=true",
            "!",
            "icydemux",
            "!",
            "tee",
            "name=t",
        ])
        .args(["t.", "!", "queue", "!", "mpegaudioparse", "!", "fakesink"])
        .args(["t.", "!", "queue", "!", "filesink"])
        .arg(format!("location={}", out.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("gst-launch-1.0");
    thread::sleep(Duration::from_secs(2));
    let (status, text) = request(
        addr,
        &format!(
            "GET /admin/metadata?mount=/live.mp3&mode=updinfo&song=Gst+Title HTTP/1.1\r\nHost: t\r\nAuthorization: {}\r\n\r\n",
            basic("source", PASSWORD)
        ),
    );
    assert_eq!(status, 200, "{text}");
    let ff = wait_with_timeout(ffmpeg, Duration::from_secs(30), "ffmpeg's icecast source");
    assert!(ff.status.success(), "ffmpeg: {}", String::from_utf8_lossy(&ff.stderr));
    // The source's end is the end of GStreamer's stream: it plays to EOS.
    let played = wait_with_timeout(gst, Duration::from_secs(30), "gst-launch-1.0");
    let log = String::from_utf8_lossy(&played.stdout);
    assert!(
        played.status.success(),
        "{log}\n{}",
        String::from_utf8_lossy(&played.stderr)
    );
    assert!(
        log.lines()
            .any(|l| l.trim_start().strip_prefix("title: ") == Some("Gst Title")),
        "{log}"
    );
    let got = std::fs::read(&out).unwrap();
    let (_, end) = assert_contiguous_run(&got, &song.frames, "GStreamer's copy");
    assert_eq!(end, song.frames.len());
    server.stop_cleanly();
}

#[test]
fn vlc_plays_a_live_mount_and_reads_its_title() {
    if !streamalot_tests::vlc::installed() {
        eprintln!("skipped: VLC (cvlc) is not installed; tools/test installs it (vlc-bin, vlc-plugin-base)");
        return;
    }
    let song = long_tone();
    let server = serve("vlc", &[]);
    let addr = server.addr;
    let ffmpeg = ffmpeg_source(&server, song, "/live.mp3", PASSWORD);
    wait_for_mount(addr, "/live.mp3", Duration::from_secs(10));
    let (status, text) = request(
        addr,
        &format!(
            "GET /admin/metadata?mount=/live.mp3&mode=updinfo&song=On+Air+Now HTTP/1.1\r\nHost: t\r\nAuthorization: {}\r\n\r\n",
            basic("source", PASSWORD)
        ),
    );
    assert_eq!(status, 200, "{text}");
    let dir = std::env::temp_dir().join(format!("streamalot-vlc-live-{}", std::process::id()));
    let played = streamalot_tests::vlc::play(&format!("http://{addr}/live.mp3"), 5, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    let hz = played.tone_hz(0, 0.5);
    println!(
        "VLC: {:.2} s decoded, {hz:.1} Hz, titles {:?}",
        played.seconds(),
        played.titles()
    );
    assert!(played.log.contains("Icy-Name: Test Radio"), "{}", played.log);
    assert_eq!(played.titles().first().copied(), Some("On Air Now"), "{}", played.log);
    assert!(played.seconds() > 4.0, "{} s decoded", played.seconds());
    // The source's tone: 660 Hz.
    assert!(
        (hz - 660.0).abs() < 660.0 * 0.03,
        "VLC decoded a {hz:.1} Hz tone, not 660 Hz"
    );
    let out = wait_with_timeout(ffmpeg, Duration::from_secs(30), "ffmpeg's icecast source");
    assert!(out.status.success(), "ffmpeg: {}", String::from_utf8_lossy(&out.stderr));
    server.stop_cleanly();
}
