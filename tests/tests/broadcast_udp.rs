//! `streamalot broadcast --to udp://HOST:PORT`: plain RTP with the SDP
//! written beside it, as DSS's broadcaster sent it. ffmpeg plays the written
//! SDP across movie boundaries without a decoding error and with
//! presentation timestamps that never go back; the RTP itself, captured on
//! the ports, has one SSRC per track, no sequence gap or reset, no
//! timestamp going back beyond B-frame reordering, sender reports and a BYE;
//! and a DSS broadcaster description file drives a whole run.

use std::process::Command;
use std::time::Duration;

use streamalot_tests::broadcast::{self, continuity_problems, FPS};
use streamalot_tests::ffmpeg::FrameHashes;
use streamalot_tests::server::free_udp_run;
use streamalot_tests::{require_tool, spawn, wait_with_timeout};

/// The clips' video has B-frames two deep: three frames of 3600 ticks is
/// the most a timestamp may step back.
const VIDEO_REORDER_TICKS: u32 = 3 * 3600;

#[test]
fn ffmpeg_plays_the_written_sdp_across_movie_boundaries() {
    require_tool("ffmpeg");
    let m = broadcast::movies();
    let dir = broadcast::test_dir("udp-ffmpeg");
    let list = broadcast::playlist(
        &dir,
        "tv.ply",
        &[
            m.a.display().to_string(),
            m.b.display().to_string(),
            m.c.display().to_string(),
        ],
    );
    let port = free_udp_run(4);
    let sdp = dir.join("tv.sdp");
    let to = format!("udp://127.0.0.1:{port}");
    // The SDP first, so ffmpeg listens before the first packet goes.
    let out = broadcast::run(&[
        list.to_str().unwrap(),
        "--to",
        &to,
        "--sdp",
        sdp.to_str().unwrap(),
        "--check",
    ]);
    let log = broadcast::plain(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("3 of 3 movies play"), "{log}");
    let text = std::fs::read_to_string(&sdp).unwrap();
    assert!(text.contains("c=IN IP4 127.0.0.1"), "{text}");
    assert!(text.contains(&format!("m=video {port} RTP/AVP")), "{text}");
    assert!(text.contains(&format!("m=audio {} RTP/AVP", port + 2)), "{text}");

    // 110 frames: into the fifth movie, past four boundaries.
    let frames = 4 * FPS + 10;
    let mut ffmpeg = ffmpeg_reading(&sdp);
    ffmpeg
        .args([
            "-map",
            "0:v",
            "-map",
            "0:a",
            "-fps_mode",
            "passthrough",
            "-frames:v",
            &frames.to_string(),
        ])
        .args(["-f", "framemd5", "-"]);
    let (player, what) = spawn(&mut ffmpeg);
    std::thread::sleep(Duration::from_millis(500));
    let (sender, sender_what) = broadcast::spawn(&[
        list.to_str().unwrap(),
        "--to",
        &to,
        "--movies",
        "6",
        "--progress",
        "0",
        "--current-file",
        dir.join("now.current").to_str().unwrap(),
    ]);
    let played = wait_with_timeout(player, Duration::from_secs(60), &what);
    let sent = wait_with_timeout(sender, Duration::from_secs(60), &sender_what);
    let log = broadcast::plain(&sent.stderr);
    assert!(sent.status.success(), "{log}");
    let errors = String::from_utf8_lossy(&played.stderr);
    assert!(played.status.success(), "{what}: {errors}");
    assert!(
        errors.trim().is_empty(),
        "ffmpeg reported errors:\n{errors}\nbroadcast:\n{log}"
    );
    let hashes = FrameHashes::parse(&String::from_utf8_lossy(&played.stdout));
    let video = hashes.frames(0);
    assert_eq!(video.len() as u32, frames, "{log}");
    for w in video.windows(2) {
        assert!(w[1].pts > w[0].pts, "video pts {} after {}", w[1].pts, w[0].pts);
    }
    let audio = hashes.frames(1);
    assert!(audio.len() > 150, "{} audio frames", audio.len());
    for w in audio.windows(2) {
        assert!(w[1].pts > w[0].pts, "audio pts {} after {}", w[1].pts, w[0].pts);
    }
    let current = std::fs::read_to_string(dir.join("now.current")).unwrap();
    assert!(
        current.starts_with("u=") && current.contains("\nd=00:00:01:"),
        "{current}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_rtp_runs_on_across_movies_without_a_gap_or_a_reset() {
    let m = broadcast::movies();
    let dir = broadcast::test_dir("udp-capture");
    let list = broadcast::playlist(&dir, "tv.ply", &[m.a.display().to_string(), m.c.display().to_string()]);
    let port = free_udp_run(4);
    let (sender, what) = broadcast::spawn(&[
        list.to_str().unwrap(),
        "--to",
        &format!("udp://127.0.0.1:{port}"),
        "--movies",
        "5",
        "--progress",
        "0",
    ]);
    let sender = std::sync::Mutex::new(Some(sender));
    let output = std::sync::Mutex::new(None);
    let tracks = broadcast::capture(port, 2, Duration::from_secs(60), || {
        let mut s = sender.lock().unwrap();
        if let Some(child) = s.as_mut() {
            if let Ok(Some(_)) = child.try_wait() {
                *output.lock().unwrap() = Some(wait_with_timeout(s.take().unwrap(), Duration::from_secs(5), &what));
            }
        }
        s.is_none()
    });
    let out = output.into_inner().unwrap().expect("the broadcast ended");
    let log = broadcast::plain(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert_eq!(log.matches(" starts: ").count(), 5, "{log}");
    for (k, max_back) in [(0, VIDEO_REORDER_TICKS), (1, 0)] {
        let t = &tracks[k];
        let problems = continuity_problems(t, max_back);
        assert!(problems.is_empty(), "track {k}: {problems:#?}\n{log}");
        // Every packet of the five movies' hint tracks (a, c, a, c, a), none
        // lost on loopback, none added.
        let hinted: usize = [&m.a, &m.c, &m.a, &m.c, &m.a]
            .iter()
            .map(|p| broadcast::hinted_packets(p)[k])
            .sum();
        assert_eq!(t.rtp.len(), hinted, "track {k}");
        let ssrc = t.rtp[0].ssrc;
        assert!(
            t.sr_ssrcs.contains(&ssrc),
            "track {k}: no sender report from {ssrc:08x}: {:?}",
            t.rtcp
        );
        assert!(
            t.rtcp.last().is_some_and(|types| types.contains(&203)),
            "track {k}: no BYE at the end: {:?}",
            t.rtcp
        );
    }
    assert_ne!(tracks[0].rtp[0].ssrc, tracks[1].rtp[0].ssrc);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_dss_description_file_drives_a_run() {
    let m = broadcast::movies();
    let dir = broadcast::test_dir("udp-dss");
    broadcast::playlist(
        &dir,
        "tv.ply",
        &[
            m.a.display().to_string(),
            m.b.display().to_string(),
            m.c.display().to_string(),
        ],
    );
    let port = free_udp_run(4);
    std::fs::write(
        dir.join("tv.config"),
        format!(
            "# A description file as DSS's PlaylistBroadcaster read it\n\
             play_list_file tv.ply\n\
             play_mode sequential\n\
             destination_ip_address 127.0.0.1\n\
             destination_base_port {port}\n\
             broadcast_SDP_file tv.sdp\n\
             sdp_reference_movie {}\n\
             max_upcoming_list_size 1\n\
             logging enabled\n\
             log_file tv.log\n",
            m.a.display()
        ),
    )
    .unwrap();
    let config = dir.join("tv.config");
    let (sender, what) = broadcast::spawn(&["--config", config.to_str().unwrap(), "--progress", "0"]);
    let sender = std::sync::Mutex::new(Some(sender));
    let output = std::sync::Mutex::new(None);
    let tracks = broadcast::capture(port, 2, Duration::from_secs(60), || {
        let mut s = sender.lock().unwrap();
        if let Some(child) = s.as_mut() {
            if let Ok(Some(_)) = child.try_wait() {
                *output.lock().unwrap() = Some(wait_with_timeout(s.take().unwrap(), Duration::from_secs(5), &what));
            }
        }
        s.is_none()
    });
    let out = output.into_inner().unwrap().expect("a sequential list ends by itself");
    let log = broadcast::plain(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("the playlist has played out"), "{log}");
    for (k, track) in tracks.iter().enumerate() {
        let problems = continuity_problems(track, if k == 0 { VIDEO_REORDER_TICKS } else { 0 });
        assert!(problems.is_empty(), "track {k}: {problems:#?}");
        let hinted: usize = [&m.a, &m.b, &m.c].iter().map(|p| broadcast::hinted_packets(p)[k]).sum();
        assert_eq!(track.rtp.len(), hinted, "track {k}");
    }
    let sdp = std::fs::read_to_string(dir.join("tv.sdp")).unwrap();
    assert!(sdp.contains(&format!("m=video {port} ")), "{sdp}");
    let played: Vec<String> = std::fs::read_to_string(dir.join("tv.log"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split(" starts: ").nth(1))
        .map(|rest| {
            let path = rest.split(',').next().unwrap();
            std::path::Path::new(path)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(played, ["a.mp4", "b.mp4", "c.mp4"]);
    let upcoming = std::fs::read_to_string(dir.join("tv.upcoming")).unwrap();
    assert_eq!(
        upcoming, "*PLAY-LIST*\n",
        "nothing after the last movie of a sequential list"
    );
    let current = std::fs::read_to_string(dir.join("tv.current")).unwrap();
    assert!(current.starts_with(&format!("u={}\n", m.c.display())), "{current}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A movie at another resolution fits the channel (the same codecs) but
/// brings its own H.264 parameter sets: they go in-band before its first
/// frame, and the reference's again before the movie after it, so ffmpeg
/// decodes every frame of every movie without an error.
#[test]
fn a_resized_movie_brings_its_parameter_sets_and_the_next_takes_them_back() {
    require_tool("ffmpeg");
    let m = broadcast::movies();
    let dir = broadcast::test_dir("udp-resized");
    let list = broadcast::playlist(
        &dir,
        "tv.ply",
        &[m.a.display().to_string(), m.resized.display().to_string()],
    );
    let port = free_udp_run(4);
    let sdp = dir.join("tv.sdp");
    let to = format!("udp://127.0.0.1:{port}");
    let out = broadcast::run(&[
        list.to_str().unwrap(),
        "--to",
        &to,
        "--sdp",
        sdp.to_str().unwrap(),
        "--check",
    ]);
    assert!(out.status.success(), "{}", broadcast::plain(&out.stderr));
    // a, resized, a and the resized one's first ten frames.
    let frames = 3 * FPS + 10;
    let mut ffmpeg = ffmpeg_reading(&sdp);
    ffmpeg
        .args([
            "-map",
            "0:v",
            "-fps_mode",
            "passthrough",
            "-frames:v",
            &frames.to_string(),
        ])
        .args(["-f", "framemd5", "-"]);
    let (player, what) = spawn(&mut ffmpeg);
    std::thread::sleep(Duration::from_millis(500));
    let (sender, sender_what) =
        broadcast::spawn(&[list.to_str().unwrap(), "--to", &to, "--movies", "5", "--progress", "0"]);
    let played = wait_with_timeout(player, Duration::from_secs(60), &what);
    let sent = wait_with_timeout(sender, Duration::from_secs(60), &sender_what);
    let log = broadcast::plain(&sent.stderr);
    assert!(sent.status.success(), "{log}");
    let errors = String::from_utf8_lossy(&played.stderr);
    assert!(
        errors.trim().is_empty(),
        "ffmpeg reported errors:\n{errors}\nbroadcast:\n{log}"
    );
    let hashes = FrameHashes::parse(&String::from_utf8_lossy(&played.stdout));
    assert_eq!(hashes.frames(0).len() as u32, frames, "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// ffmpeg reading the RTP a written SDP file describes, errors only on
/// stderr; the caller adds what to decode and where to.
fn ffmpeg_reading(sdp: &std::path::Path) -> Command {
    let mut ffmpeg = Command::new("ffmpeg");
    ffmpeg
        .args(["-hide_banner", "-nostdin", "-loglevel", "error"])
        .args(["-protocol_whitelist", "file,udp,rtp", "-i"])
        .arg(sdp);
    ffmpeg
}
