//! How `streamalot broadcast` treats its playlist: a movie whose codecs
//! differ from the reference is skipped with a message that says why, a
//! missing file is reported with its playlist line and play goes on, and a
//! playlist changed during the run is reread, its broken lines reported by
//! number.

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use streamalot_tests::broadcast;
use streamalot_tests::server::free_udp_run;
use streamalot_tests::wait_with_timeout;

#[test]
fn mismatched_and_missing_movies_are_skipped_by_line_and_play_goes_on() {
    let m = broadcast::movies();
    let dir = broadcast::test_dir("playlist-skips");
    let missing = dir.join("missing.mp4");
    let list = broadcast::playlist(
        &dir,
        "tv.ply",
        &[
            m.a.display().to_string(),
            missing.display().to_string(),
            m.mismatch.display().to_string(),
            m.b.display().to_string(),
        ],
    );
    let port = free_udp_run(4);
    let out = broadcast::run(&[
        list.to_str().unwrap(),
        "--to",
        &format!("udp://127.0.0.1:{port}"),
        "--movies",
        "3",
        "--progress",
        "0",
    ]);
    let log = broadcast::plain(&out.stderr);
    assert!(out.status.success(), "{log}");
    let l = list.display();
    assert!(
        log.contains(&format!("{l}:3: movie {} skipped: cannot open", missing.display())),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "{l}:4: movie {} skipped: track 2 is AAC 44100 Hz stereo, the channel's is AAC 48000 Hz stereo",
            m.mismatch.display()
        )),
        "{log}"
    );
    // Each once, though the list loops.
    assert_eq!(log.matches("skipped").count(), 2, "{log}");
    let starts: Vec<&str> = log
        .lines()
        .filter_map(|line| line.split(" starts: ").nth(1))
        .map(|rest| rest.split(',').next().unwrap())
        .collect();
    let names: Vec<String> = starts
        .iter()
        .map(|p| {
            std::path::Path::new(p)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(names, ["a.mp4", "b.mp4", "a.mp4"], "{log}");
    let upcoming = std::fs::read_to_string(dir.join("tv.upcoming")).unwrap();
    assert!(upcoming.starts_with("*PLAY-LIST*\n"), "{upcoming}");
    assert!(upcoming.contains(&m.b.display().to_string()), "{upcoming}");
    assert!(!upcoming.contains("mismatch"), "{upcoming}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_changed_playlist_is_reread_and_its_broken_lines_reported() {
    let m = broadcast::movies();
    let dir = broadcast::test_dir("playlist-reload");
    let list = broadcast::playlist(&dir, "tv.ply", &[m.a.display().to_string()]);
    let port = free_udp_run(4);
    let (mut child, what) = broadcast::spawn(&[
        list.to_str().unwrap(),
        "--to",
        &format!("udp://127.0.0.1:{port}"),
        "--movies",
        "6",
        "--progress",
        "0",
    ]);
    // Once the first movie plays, the list changes to another movie and a
    // broken line.
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let line = broadcast::plain(line.as_bytes());
            if line.contains("movie 1 starts") {
                let _ = tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("the first movie starts");
    // A second later at least, so the change shows in the file's time.
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_millis(1100).saturating_sub(t0.elapsed()));
    broadcast::playlist(
        &dir,
        "tv.ply",
        &[m.c.display().to_string(), format!("{} eleven", m.b.display())],
    );
    let out = wait_with_timeout(child, Duration::from_secs(60), &what);
    let log = reader.join().unwrap();
    assert!(out.status.success(), "{log}");
    assert!(log.contains(&format!("{} changed", list.display())), "{log}");
    assert!(
        log.contains(&format!("{}:3: weight `eleven` is not a whole number", list.display())),
        "{log}"
    );
    let names: Vec<String> = log
        .lines()
        .filter_map(|line| line.split(" starts: ").nth(1))
        .map(|rest| {
            let p = rest.split(',').next().unwrap();
            std::path::Path::new(p)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(names.len(), 6, "{log}");
    assert_eq!(names[0], "a.mp4");
    assert_eq!(names.last().unwrap(), "c.mp4", "the new list plays: {names:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Commands on standard input: `next PATH` plays that movie after the
/// current one, `skip` ends the current one now.
#[test]
fn stdin_commands_insert_and_skip() {
    let m = broadcast::movies();
    let dir = broadcast::test_dir("playlist-stdin");
    let list = broadcast::playlist(&dir, "tv.ply", &[m.a.display().to_string()]);
    let port = free_udp_run(4);
    let mut cmd = broadcast::command(&[
        list.to_str().unwrap(),
        "--to",
        &format!("udp://127.0.0.1:{port}"),
        "--movies",
        "4",
        "--progress",
        "0",
    ]);
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let line = broadcast::plain(line.as_bytes());
            let _ = tx.send(line.clone());
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let wait_for = |what: &str| loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("no {what:?}"));
        if line.contains(what) {
            break;
        }
    };
    use std::io::Write;
    wait_for("movie 1 starts");
    writeln!(stdin, "next {}", m.c.display()).unwrap();
    writeln!(stdin, "dance").unwrap();
    wait_for("plays next");
    writeln!(stdin, "skip").unwrap();
    wait_for("movie 2 starts");
    drop(stdin);
    let what = "streamalot broadcast";
    let out = wait_with_timeout(child, Duration::from_secs(60), what);
    let log = reader.join().unwrap();
    assert!(out.status.success(), "{log}");
    assert!(log.contains("\"dance\": commands are"), "{log}");
    assert!(log.contains("skipping to the next movie"), "{log}");
    let names: Vec<String> = log
        .lines()
        .filter_map(|line| line.split(" starts: ").nth(1))
        .map(|rest| {
            let p = rest.split(',').next().unwrap();
            std::path::Path::new(p)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(names, ["a.mp4", "c.mp4", "a.mp4", "a.mp4"], "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}
