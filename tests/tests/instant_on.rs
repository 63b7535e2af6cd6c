//! Instant-On: a client on TCP holds seconds of media a fraction of a
//! second after PLAY, and what was sent ahead is still the movie.
//!
//! - Over interleaved TCP the server sends ahead of real time at PLAY (up
//!   to `--burst-rate` seconds of media a second, until it is
//!   `--burst-lead` ahead): the client's media runs well ahead of the wall
//!   time since PLAY. With `--no-instant-on` it never does.
//! - ffmpeg decodes the stream sent that way bit for bit as it decodes the
//!   file, video and audio, over TCP and over an HTTP tunnel's worth of
//!   ordinary TCP.
//!
//! No time is asserted as a figure of speed: only that media arrived
//! ahead of the wall clock by more than timer slack could explain, or not.

use std::time::{Duration, Instant};

use streamalot_tests::ffmpeg::{differences_from_file, framemd5, FRAME_HASHES};
use streamalot_tests::media::media;
use streamalot_tests::rtsp::{Lower, Player, Stream};
use streamalot_tests::server::{library, Server};

const TIMEOUT: Duration = Duration::from_secs(60);

/// Seconds of video (the first stream, 90 kHz) received so far.
fn video_secs(streams: &[Stream]) -> f64 {
    let p = &streams[0].packets;
    let Some(first) = p.first() else { return 0.0 };
    p.iter()
        .map(|x| x.timestamp.wrapping_sub(first.timestamp) as i32 as f64 / 90_000.0)
        .fold(0.0, f64::max)
}

/// Plays the clip over TCP and returns (media seconds held, wall seconds
/// since PLAY) once 2.5 s of video has arrived.
fn held_after_play(server: &Server, name: &str) -> (f64, f64) {
    let mut player = Player::setup(server.addr, &server.url(name), Lower::Tcp);
    let start = Instant::now();
    player.play(None);
    let got = player.receive_until(TIMEOUT, |s| video_secs(s) >= 2.5);
    assert!(got, "2.5 s of video never arrived");
    let elapsed = start.elapsed().as_secs_f64();
    let held = video_secs(&player.streams);
    player.control("TEARDOWN", &[]);
    (held, elapsed)
}

#[test]
fn over_tcp_a_client_holds_seconds_of_media_right_after_play_only_with_instant_on() {
    let clip = media().h264_mp4();
    let name = clip.file_name().and_then(|n| n.to_str()).expect("a file name");
    let on = Server::start(&library("instant-on", &[clip]), &[]);
    let off = Server::start(&library("instant-off", &[clip]), &["--no-instant-on"]);
    let (held_on, wall_on) = held_after_play(&on, name);
    let (held_off, wall_off) = held_after_play(&off, name);
    println!(
        "Instant-On: {held_on:.2} s of video {wall_on:.3} s after PLAY; without: {held_off:.2} s after {wall_off:.3} s"
    );
    // The default burst reaches 2 s ahead within a quarter of a second.
    assert!(
        held_on - wall_on >= 1.5,
        "with Instant-On the client is only {:.2} s ahead",
        held_on - wall_on
    );
    // Real time: a frame's worth of slack (the hinter sends a little early).
    assert!(
        held_off - wall_off <= 0.3,
        "without Instant-On the client is {:.2} s ahead",
        held_off - wall_off
    );
    // The sessions are logged as they were.
    let records = on.wait_for_records(1, Duration::from_secs(10));
    assert_eq!(records[0]["transport"], "tcp");
    assert_eq!(records[0]["x-frames-thinned"], "0", "{:?}", records[0]);
}

#[test]
fn ffmpeg_decodes_a_burst_sent_stream_bit_exact() {
    let clip = media().h264_mp4();
    let name = clip.file_name().and_then(|n| n.to_str()).expect("a file name");
    // A lead longer than the clip: everything goes ahead of real time.
    let server = Server::start(
        &library("instant-on-exact", &[clip]),
        &["--burst-rate", "4", "--burst-lead", "25"],
    );
    let start = Instant::now();
    let got = framemd5(&["-rtsp_transport", "tcp"], &server.url(name), FRAME_HASHES, TIMEOUT);
    println!("ffmpeg took {:.2} s for the 5 s clip", start.elapsed().as_secs_f64());
    let differences = differences_from_file(clip, &got, TIMEOUT);
    assert!(differences.is_empty(), "{}", differences.join("\n"));
    let stopped = server.stop();
    assert!(!stopped.stderr.contains("panicked"), "{}", stopped.stderr);
}
