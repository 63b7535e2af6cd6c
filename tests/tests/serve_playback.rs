//! `streamalot serve` played by real clients, end to end.
//!
//! - ffmpeg plays each test movie over RTSP, interleaved on TCP and over UDP,
//!   and every decoded video frame and every AAC frame must be bit for bit
//!   what ffmpeg reads from the file itself.
//! - `ffmpeg -ss` seeks: playback must start at the key frame at or before
//!   the seek point (ffprobe says where those are), with the file's
//!   timestamps; the server's `Range` and `RTP-Info` must say so exactly.
//! - PAUSE then PLAY resumes without a gap or a jump: across the pause,
//!   sequence numbers stay contiguous and timestamps keep their offset from
//!   the hinted ones.

use std::time::Duration;

use loader::{Movie, PacketFlags};
use streamalot_tests::ffmpeg::{
    framemd5, key_frame_at_or_before, key_frames, playback_differences, Frame, FRAME_HASHES,
};
use streamalot_tests::media::media;
use streamalot_tests::rtp::{ffmpeg_stream_for, hinted_aac_frames, loader_packets, RtpPacket};
use streamalot_tests::rtsp::{rtp_info, Lower, Player, Stream};
use streamalot_tests::server::{library, Server};

const PLAY_TIMEOUT: Duration = Duration::from_secs(60);

#[test]
fn ffmpeg_plays_every_movie_bit_exact_over_tcp_and_udp() {
    let clips: Vec<_> = media().hinted.iter().collect();
    let paths: Vec<_> = clips.iter().map(|c| c.path.as_path()).collect();
    let server = Server::start(&library("playback", &paths), &[]);
    let named: Vec<_> = clips.iter().map(|c| (c.name, c.path.as_path())).collect();
    // ffmpeg's hinter leaves the last few AAC frames out.
    let hinted_audio = |name: &str| {
        let movie = Movie::open(&media().clip(name).path).expect("a test clip");
        Some(hinted_aac_frames(&movie))
    };
    let failures = playback_differences(&server, &named, hinted_audio, PLAY_TIMEOUT);
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // One access-log line per session, each a whole movie's packets.
    let records = server.wait_for_records(2 * clips.len(), Duration::from_secs(20));
    for r in &records {
        let name = r["cs-uri-stem"].trim_start_matches('/');
        let movie = Movie::open(&media().clip(name).path).expect("a test clip");
        let packets: usize = movie.hint_tracks().map(|h| loader_packets(&movie, h.id).len()).sum();
        assert_eq!(r["c-status"], "200", "{r:?}");
        assert_eq!(r["s-pkts-sent"], packets.to_string(), "{name}: {r:?}");
    }
    let mut transports: Vec<&str> = records.iter().map(|r| r["transport"].as_str()).collect();
    transports.sort_unstable();
    transports.dedup();
    assert_eq!(transports, ["tcp", "udp"]);
}

#[test]
fn ffmpeg_plays_bit_exact_over_udp_sent_through_io_uring() {
    let clip = media().h264_mp4();
    let name = clip.file_name().and_then(|n| n.to_str()).expect("a file name");
    let server = Server::start(&library("io-uring", &[clip]), &["--send-path", "io-uring"]);
    let got = framemd5(
        &["-rtsp_transport", "udp"],
        &server.url(name),
        FRAME_HASHES,
        PLAY_TIMEOUT,
    );
    let file = framemd5(&[], clip.to_str().expect("a UTF-8 path"), FRAME_HASHES, PLAY_TIMEOUT);
    let movie = Movie::open(clip).expect("a test clip");
    let mut audio = file.hashes(1);
    audio.truncate(hinted_aac_frames(&movie));
    assert!(!file.hashes(0).is_empty());
    assert_eq!(got.hashes(0), file.hashes(0), "video");
    assert_eq!(got.hashes(1), audio, "audio");
    let stopped = server.stop();
    let ready = stopped.stderr.lines().find(|l| l.contains("shard ready"));
    assert!(
        ready.is_some_and(|l| l.contains("io-uring")) && !stopped.stderr.contains("cannot use this send path"),
        "the shard did not send through io_uring:\n{}",
        stopped.stderr
    );
}

#[test]
fn ffmpeg_seeks_to_the_key_frame_at_or_before() {
    let clip = media().h264_mp4();
    let server = Server::start(&library("seek", &[clip]), &[]);
    let url = server.url("h264-aac.mp4");
    let keys = key_frames(clip);
    let file = framemd5(&["-copyts"], clip.to_str().expect("UTF-8"), FRAME_HASHES, PLAY_TIMEOUT);
    let file_video = file.frames(0);
    let tb = file.time_base[&0];
    // ffmpeg asks for a little before `-ss` when the video has B-frames (3/23
    // s, its "dts heuristic"), so each seek point lies far enough after a
    // key frame (one a second) for that not to reach back into the GOP before.
    for seek in ["2.5", "1.6", "4.2"] {
        let seek_ns = (seek.parse::<f64>().expect("a number") * 1e9) as i64;
        let key_ns = key_frame_at_or_before(&keys, seek_ns).expect("a key frame");
        // The file's frame with the key frame's presentation time.
        let key_pts = key_ns * tb.1 / (tb.0 * 1_000_000_000);
        let first = file_video
            .iter()
            .position(|f| f.pts == key_pts)
            .unwrap_or_else(|| panic!("no frame at pts {key_pts} in the file"));
        // Without accurate seeking ffmpeg shows every frame it receives, so
        // what it shows is what the server sent; -copyts keeps the times the
        // RTSP demuxer derives from RTP-Info and Range.
        let got = framemd5(
            &["-ss", seek, "-noaccurate_seek", "-copyts", "-rtsp_transport", "tcp"],
            &url,
            FRAME_HASHES,
            PLAY_TIMEOUT,
        );
        assert_eq!(got.time_base[&0], tb, "the decoded video's time base");
        let got_video = got.frames(0);
        let want = &file_video[first..];
        let hashes = |frames: &[Frame]| frames.iter().map(|f| f.hash.clone()).collect::<Vec<_>>();
        assert_eq!(
            hashes(got_video),
            hashes(want),
            "seek to {seek} s: the frames should be the file's from its key frame at {key_ns} ns to the end"
        );
        // ffmpeg's RTP demuxer gives the very first packet no timestamp (it
        // has no reference yet), so the key frame itself shows pts 0; every
        // later frame must carry the file's presentation time.
        for (g, w) in got_video.iter().zip(want).skip(1) {
            assert_eq!(g.pts, w.pts, "seek to {seek} s: frame {} has the wrong time", w.hash);
        }
    }
}

#[test]
fn play_range_and_rtp_info_name_the_key_frame() {
    let clip = media().h264_mp4();
    let server = Server::start(&library("range", &[clip]), &[]);
    let movie = Movie::open(clip).expect("the clip");
    let keys = key_frames(clip);
    let mut player = Player::setup(server.addr, &server.url("h264-aac.mp4"), Lower::Udp);
    let reply = player.play(Some("npt=2.5-"));
    let key = key_frame_at_or_before(&keys, 2_500_000_000).expect("a key frame");
    let range = reply.header("Range").expect("PLAY answers with a Range");
    let start: f64 = range
        .strip_prefix("npt=")
        .and_then(|r| r.split('-').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad Range `{range}`"));
    assert!(
        ((start * 1e9) as i64 - key).abs() < 1_000_000,
        "Range `{range}` should start at the key frame at {key} ns"
    );
    let info = rtp_info(&reply);
    assert_eq!(info.len(), 2, "RTP-Info names every stream: {info:?}");
    player.receive_to_the_end(PLAY_TIMEOUT);

    let video = video_stream(&player, &movie);
    let (_, seq, rtptime) = info[video];
    let s = &player.streams[video];
    let first = &s.packets[0];
    assert_eq!(first.sequence, seq, "the first packet has RTP-Info's seq");
    assert_eq!(first.timestamp, rtptime, "the key frame has exactly RTP-Info's rtptime");
    // And it is the key frame's first packet, byte for byte.
    let hint = movie.hint_tracks().nth(video).expect("the video hint track");
    let recipes: Vec<_> = movie
        .packets(hint.id)
        .expect("packets")
        .map(|p| p.expect("a packet"))
        .collect();
    let at = recipes
        .iter()
        .position(|p| p.flags.contains(PacketFlags::KEY) && p.transmit_ns >= key - 1_000_000)
        .expect("the key frame's packets");
    let expected: Vec<RtpPacket> = recipes[at..]
        .iter()
        .map(|p| RtpPacket::from_recipe(&movie, p))
        .collect();
    assert_same_payloads(s, &expected, "after PLAY Range: npt=2.5-");
    assert_eq!(player.control("TEARDOWN", &[]).status, 200);
}

#[test]
fn play_range_with_an_end_stops_there() {
    let clip = media().h264_mp4();
    let server = Server::start(&library("range-end", &[clip]), &[]);
    let movie = Movie::open(clip).expect("the clip");
    let mut player = Player::setup(server.addr, &server.url("h264-aac.mp4"), Lower::Tcp);
    player.play(Some("npt=1.5-3.5"));
    player.receive_to_the_end(PLAY_TIMEOUT);
    // What the hint tracks hold from the key frame at or before 1.5 s to
    // 3.5 s, and nothing after.
    let mut packets = movie.all_packets();
    let start = packets.seek(1_500_000_000);
    assert_eq!(start, 1_000_000_000, "the key frame at or before 1.5 s");
    let wanted: Vec<_> = packets
        .map(|p| p.expect("a packet"))
        .take_while(|p| p.transmit_ns < 3_500_000_000)
        .collect();
    for (i, hint) in movie.hint_tracks().enumerate() {
        let expected: Vec<RtpPacket> = wanted
            .iter()
            .filter(|p| p.track_id == hint.id)
            .map(|p| RtpPacket::from_recipe(&movie, p))
            .collect();
        assert_same_payloads(&player.streams[i], &expected, &format!("Range npt=1.5-3.5, stream {i}"));
    }
    assert_eq!(player.control("TEARDOWN", &[]).status, 200);
}

#[test]
fn pause_and_resume_leave_no_gap_over_udp() {
    pause_and_resume(Lower::Udp);
}

#[test]
fn pause_and_resume_leave_no_gap_over_tcp() {
    pause_and_resume(Lower::Tcp);
}

fn pause_and_resume(lower: Lower) {
    let clip = media().h264_mp4();
    let server = Server::start(&library(&format!("pause-{lower:?}"), &[clip]), &[]);
    let movie = Movie::open(clip).expect("the clip");
    let mut player = Player::setup(server.addr, &server.url("h264-aac.mp4"), lower);
    let first_play = rtp_info(&player.play(None));
    let video = video_stream(&player, &movie);
    // About a second and a half in.
    let got_some = player.receive_until(PLAY_TIMEOUT, |s| s[video].packets.len() >= 40);
    assert!(got_some, "{lower:?}: video packets did not arrive");
    let paused = player.control("PAUSE", &[]);
    assert_eq!(paused.status, 200, "PAUSE: {paused:?}");
    // What was on its way when PAUSE arrived, then silence.
    player.drain(Duration::from_millis(300));
    let before: Vec<usize> = player.streams.iter().map(|s| s.packets.len()).collect();
    assert_eq!(
        player.drain(Duration::from_millis(1_000)),
        0,
        "{lower:?}: packets arrived while paused"
    );

    let resumed = player.play(None);
    let info = rtp_info(&resumed);
    for (i, s) in player.streams.iter().enumerate() {
        let last = s.packets.last().expect("packets before the pause").sequence;
        assert_eq!(
            info[i].1,
            last.wrapping_add(1),
            "{lower:?}: RTP-Info seq after the pause, stream {i}"
        );
    }
    player.receive_to_the_end(PLAY_TIMEOUT);

    for (i, hint) in movie.hint_tracks().enumerate() {
        let s = &player.streams[i];
        let what = format!("{lower:?}, stream {i}, across a pause after packet {}", before[i]);
        assert_eq!(
            s.packets[0].sequence, first_play[i].1,
            "{what}: the first seq is RTP-Info's"
        );
        assert_same_payloads(s, &loader_packets(&movie, hint.id), &what);
        // The first packet after the pause carries about the RTP time that
        // RTP-Info announced for the resume point (a video packet may lead
        // it by the frame reordering delay).
        let after = &s.packets[before[i]];
        let lead = after.timestamp.wrapping_sub(info[i].2) as i32;
        assert!(
            lead.unsigned_abs() <= s.media.clock_rate / 4,
            "{what}: first timestamp after the pause is {lead} ticks from RTP-Info's rtptime"
        );
    }
    assert_eq!(player.control("TEARDOWN", &[]).status, 200);
}

/// Which set-up stream is the video.
fn video_stream(player: &Player, movie: &Movie) -> usize {
    let hints: Vec<_> = movie.hint_tracks().collect();
    let i = hints
        .iter()
        .position(|h| ffmpeg_stream_for(movie, h) == "0:v:0")
        .expect("a video hint track");
    assert_eq!(
        player.streams[i].media.kind, "video",
        "streams are set up in hint-track order"
    );
    i
}

/// Checks that `stream` received exactly `expected`, in order: the same
/// payloads and markers, contiguous sequence numbers, the SSRC announced at
/// SETUP, and timestamps at one constant offset from the expected ones.
fn assert_same_payloads(stream: &Stream, expected: &[RtpPacket], what: &str) {
    let got = &stream.packets;
    assert_eq!(got.len(), expected.len(), "{what}: packet count");
    let offset = got[0].timestamp.wrapping_sub(expected[0].timestamp);
    for (i, (g, e)) in got.iter().zip(expected).enumerate() {
        assert_eq!(g.ssrc, stream.ssrc, "{what}: packet {i} SSRC");
        assert_eq!(
            g.sequence,
            got[0].sequence.wrapping_add(i as u16),
            "{what}: packet {i} sequence"
        );
        assert!(g.payload == e.payload, "{what}: packet {i} payload differs");
        assert_eq!(g.marker, e.marker, "{what}: packet {i} marker");
        assert_eq!(
            g.timestamp.wrapping_sub(e.timestamp),
            offset,
            "{what}: packet {i} timestamp jumped"
        );
    }
}
