//! Radio channels and relayed mounts held to real clients: a radio of
//! three short songs (made by ffmpeg) that every listener shares on the
//! wall clock, its `StreamTitle` changing at each song, song after song
//! frame by frame; and a mount of this test's second server relayed by the
//! first, its frames and titles carried over, coming back after its
//! upstream went away and returned.

use std::path::PathBuf;
use std::thread;
use std::time::Duration;

use streamalot_tests::icecast::{
    assert_contiguous_run, basic, frames_of, listen, request, song, stream_title, wait_for_mount, TestSource,
};
use streamalot_tests::scratch_dir;
use streamalot_tests::server::{library, Server};

struct Song {
    path: PathBuf,
    frames: Vec<u8>,
    title: String,
}

/// Made once per test process: the tests run side by side, and each
/// writing the same files would read the other's half-written ones.
fn three_songs() -> &'static [Song] {
    static SONGS: std::sync::OnceLock<Vec<Song>> = std::sync::OnceLock::new();
    SONGS.get_or_init(|| {
        [
            ("one.mp3", 330, "First Song"),
            ("two.mp3", 550, "Second Song"),
            ("three.mp3", 770, "Third Song"),
        ]
        .into_iter()
        .map(|(name, hz, title)| {
            let path = song(name, 3, hz, title);
            Song {
                frames: frames_of(&path),
                path,
                title: title.to_owned(),
            }
        })
        .collect()
    })
}

#[test]
fn a_radio_of_three_songs_changes_its_title_at_each_song() {
    let songs = three_songs();
    let dir = scratch_dir().join("radio");
    std::fs::create_dir_all(&dir).unwrap();
    // M3U, one title from #EXTINF, the others from the songs' tags.
    let list = dir.join("list.m3u");
    std::fs::write(
        &list,
        format!(
            "#EXTM3U\n{}\n#EXTINF:3,Second Song\n{}\n{}\n",
            songs[0].path.display(),
            songs[1].path.display(),
            songs[2].path.display()
        ),
    )
    .unwrap();
    let radio = format!("/radio.mp3={}", list.display());
    let server = Server::start(&library("radio", &[]), &["--radio", &radio]);
    let addr = server.addr;
    wait_for_mount(addr, "/radio.mp3", Duration::from_secs(10));
    // Two listeners at once hear the same thing; each hears every song change.
    let a = thread::spawn(move || listen(addr, "/radio.mp3", true, Duration::from_secs(11)));
    let b = thread::spawn(move || listen(addr, "/radio.mp3", true, Duration::from_secs(11)));
    let (a, b) = (a.join().unwrap(), b.join().unwrap());
    // The loop of songs, twice over, as frames: every listener's audio is a
    // run of it.
    let pass: Vec<u8> = songs.iter().flat_map(|s| s.frames.iter().copied()).collect();
    let looped = [pass.clone(), pass.clone(), pass.clone(), pass.clone()].concat();
    let bounds: Vec<(usize, &str)> = (0..4)
        .flat_map(|k| {
            let mut at = k * pass.len();
            songs.iter().map(move |s| {
                let start = at;
                at += s.frames.len();
                (start, s.title.as_str())
            })
        })
        .collect();
    for (name, heard) in [("a", &a), ("b", &b)] {
        assert_eq!(heard.status(), 200, "{}", heard.head);
        let metaint: usize = heard.header("icy-metaint").unwrap().parse().unwrap();
        let (audio, blocks) = heard.strip();
        let (start, _) = assert_contiguous_run(&audio, &looped, &format!("listener {name}"));
        // Where each block with text lies in the loop, and its title.
        let mut titles = Vec::new();
        let (_, positions) = streamalot_tests::icecast::strip_with_offsets(&heard.body, metaint);
        for (block, at) in blocks.iter().zip(positions) {
            let title = stream_title(block).unwrap().to_owned();
            let in_loop = start + at;
            // A change lands in the first block at or after its song's
            // start: within one interval of it.
            let song = bounds.iter().rev().find(|(s, _)| *s <= in_loop).unwrap();
            let (song_start, song_title) = *song;
            if titles.is_empty() {
                assert_eq!(title, song_title, "listener {name}: first title");
            } else {
                assert_eq!(title, song_title, "listener {name}: the title at {in_loop}");
                assert!(in_loop - song_start < metaint, "listener {name}: {title:?} came late");
            }
            titles.push(title);
        }
        println!(
            "listener {name}: {} audio bytes from {start}, titles {titles:?}",
            audio.len()
        );
        assert!(titles.len() >= 3, "listener {name}: {titles:?}");
        let distinct: std::collections::HashSet<&String> = titles.iter().collect();
        assert_eq!(distinct.len(), 3, "listener {name}: every song's title: {titles:?}");
    }
    // VLC, as a listener would play the radio: it reads each song's title
    // as the song changes (songs of three seconds: in ten seconds, at least
    // three changes), and decodes the tones.
    if streamalot_tests::vlc::installed() {
        let dir = std::env::temp_dir().join(format!("streamalot-vlc-radio-{}", std::process::id()));
        let played = streamalot_tests::vlc::play(&format!("http://{addr}/radio.mp3"), 10, &dir);
        let _ = std::fs::remove_dir_all(&dir);
        let titles = played.titles();
        println!("VLC: {:.2} s decoded, titles {titles:?}", played.seconds());
        assert!(titles.len() >= 4, "VLC read {titles:?}");
        for pair in titles.windows(2) {
            let at = songs.iter().position(|s| s.title == pair[0]).expect("a song's title");
            assert_eq!(
                pair[1],
                songs[(at + 1) % 3].title,
                "VLC's titles in the playlist's order: {titles:?}"
            );
        }
        assert!(played.seconds() > 9.0, "{} s decoded", played.seconds());
    } else {
        eprintln!("VLC part skipped: VLC (cvlc) is not installed; tools/test installs it (vlc-bin, vlc-plugin-base)");
    }
    server.stop_cleanly();
}

#[test]
fn a_relayed_mount_carries_frames_and_titles_and_comes_back() {
    let songs = three_songs();
    let upstream = Server::start(&library("upstream", &[]), &["--publish", "/up.mp3=source:pw"]);
    let up = upstream.addr;
    let relay = format!("/relay.mp3=http://{up}/up.mp3");
    let server = Server::start(&library("relay", &[]), &["--icecast-relay", &relay]);
    let addr = server.addr;
    let auth = format!(
        "Authorization: {}\r\nContent-Type: audio/mpeg\r\nice-name: Upstream\r\n",
        basic("source", "pw")
    );
    let frames = [songs[0].frames.clone(), songs[1].frames.clone()].concat();
    for round in 0..2 {
        let source = {
            let (auth, frames) = (auth.clone(), frames.clone());
            thread::spawn(move || {
                let mut s = TestSource::open(up, "SOURCE", "/up.mp3", &auth);
                assert!(s.answer.starts_with("HTTP/1.0 200"), "{}", s.answer);
                s.send_frames(&frames, Duration::from_millis(300)).unwrap();
            })
        };
        wait_for_mount(addr, "/relay.mp3", Duration::from_secs(20));
        let listener = thread::spawn(move || listen(addr, "/relay.mp3", true, Duration::from_secs(20)));
        thread::sleep(Duration::from_secs(1));
        let (status, text) = request(
            up,
            &format!(
                "GET /admin/metadata?mount=/up.mp3&mode=updinfo&song=Round+{round} HTTP/1.1\r\nHost: t\r\nAuthorization: {}\r\n\r\n",
                basic("source", "pw")
            ),
        );
        assert_eq!(status, 200, "{text}");
        source.join().unwrap();
        let heard = listener.join().unwrap();
        assert_eq!(heard.status(), 200, "{}", heard.head);
        assert_eq!(heard.header("icy-name"), Some("Upstream"), "{}", heard.head);
        let (audio, blocks) = heard.strip();
        let (_, end) = assert_contiguous_run(&audio, &frames, &format!("round {round}"));
        assert_eq!(end, frames.len(), "round {round}: the upstream's end is the relay's");
        let titles: Vec<&str> = blocks.iter().filter_map(|b| stream_title(b)).collect();
        assert_eq!(
            titles.last().copied(),
            Some(format!("Round {round}").as_str()),
            "{titles:?}"
        );
        // The upstream went: so does the relayed mount, until it is back.
        thread::sleep(Duration::from_millis(300));
        assert_eq!(request(addr, "GET /relay.mp3 HTTP/1.1\r\nHost: t\r\n\r\n").0, 404);
    }
    server.stop_cleanly();
    upstream.stop_cleanly();
}
