//! Two hundred clients at once, half over UDP and half interleaved on TCP,
//! each playing a movie to its end: every packet of every stream must arrive,
//! in order, byte for byte, each stream must end with an RTCP BYE, and each
//! TEARDOWN must succeed. Afterwards the server must hold no more file
//! descriptors than before and about as much memory.

use std::thread;
use std::time::Duration;

use loader::Movie;
use streamalot_tests::media::media;
use streamalot_tests::rtp::{loader_packets, RtpPacket};
use streamalot_tests::rtsp::{Lower, Player};
use streamalot_tests::server::{library, Server};

const CLIENTS: usize = 200;

/// Memory the server may keep after the sessions are gone: the allocator
/// holds on to some of what it freed, and the first burst of sessions grows
/// tables that stay grown. Per session that is far below what a session
/// costs, so a leak of session state would show.
const RSS_SLACK_KIB: u64 = 8 * 1024;

/// Rounds of [`CLIENTS`] sessions, and how much more memory the last may
/// leave behind than the one before: less than 5 KiB per session.
const ROUNDS: usize = 3;
const LEAK_SLACK_KIB: u64 = 1024;

#[test]
fn two_hundred_clients_play_to_the_end_and_leave_nothing_behind() {
    let clip = media().h264_mp4();
    let server = Server::start(&library("concurrency", &[clip]), &[]);
    let url = server.url("h264-aac.mp4");
    let movie = Movie::open(clip).expect("the clip");
    let expected: Vec<Vec<RtpPacket>> = movie.hint_tracks().map(|h| loader_packets(&movie, h.id)).collect();

    // One session each way first, so the movie is open and every lazily
    // made piece of the server exists before the baseline is taken.
    for lower in [Lower::Udp, Lower::Tcp] {
        play_one(&server, &url, lower, &expected);
    }
    server.wait_for_records(2, Duration::from_secs(20));
    let (fds_before, rss_before) = (server.open_fds(), server.rss_kib());

    // Several rounds: what the first ones leave behind may be the allocator
    // keeping freed memory (it settles after two or three), but a round
    // that needs more yet again is a leak.
    let mut after = Vec::new();
    for round in 1..=ROUNDS {
        let peak_rss = play_round(&server, &url, &expected, round);
        let records = server.wait_for_records(2 + round * CLIENTS, Duration::from_secs(30));
        let packets: usize = expected.iter().map(Vec::len).sum();
        for r in &records {
            assert_eq!(r["c-status"], "200", "{r:?}");
            assert_eq!(r["s-pkts-sent"], packets.to_string(), "{r:?}");
        }
        // The sessions and their connections are gone; so must their sockets be.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while server.open_fds() > fds_before && std::time::Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
        }
        let (fds, rss) = (server.open_fds(), server.rss_kib());
        eprintln!(
            "round {round}: server peak {peak_rss} KiB with {CLIENTS} sessions (~{} KiB each over the \
             {rss_before} KiB before), {fds} fds (before: {fds_before}) and {rss} KiB after",
            peak_rss.saturating_sub(rss_before) / CLIENTS as u64
        );
        assert!(
            fds <= fds_before,
            "round {round}: {fds} file descriptors open after every session ended, {fds_before} before"
        );
        after.push(rss);
    }
    assert!(
        after[0] <= rss_before + RSS_SLACK_KIB,
        "memory not given back: {rss_before} KiB before, {} KiB after",
        after[0]
    );
    assert!(
        after[ROUNDS - 1] <= after[ROUNDS - 2] + LEAK_SLACK_KIB,
        "memory grows with every round of sessions: {after:?} KiB after each round"
    );
    server.stop_cleanly();
}

/// Plays [`CLIENTS`] sessions at once, half UDP, half TCP, each to its end;
/// returns the server's peak resident memory seen meanwhile.
fn play_round(server: &Server, url: &str, expected: &[Vec<RtpPacket>], round: usize) -> u64 {
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let lower = if i % 2 == 0 { Lower::Udp } else { Lower::Tcp };
            let (addr, url, expected) = (server.addr, url.to_owned(), expected.to_vec());
            thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || {
                    let mut player = Player::setup(addr, &url, lower);
                    player.play(None);
                    player.receive_to_the_end(Duration::from_secs(120));
                    let check = check_complete(&player, &expected);
                    let teardown = player.control("TEARDOWN", &[]).status;
                    (lower, check, teardown)
                })
                .expect("spawn a client thread")
        })
        .collect();
    let mut peak_rss = 0;
    let mut failures = Vec::new();
    for (i, c) in clients.into_iter().enumerate() {
        peak_rss = peak_rss.max(server.rss_kib());
        let (lower, check, teardown) = c.join().expect("a client thread");
        if let Err(e) = check {
            failures.push(format!("client {i} ({lower:?}): {e}"));
        }
        if teardown != 200 {
            failures.push(format!("client {i} ({lower:?}): TEARDOWN answered {teardown}"));
        }
    }
    assert!(
        failures.is_empty(),
        "round {round}: {} of {CLIENTS} clients failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    peak_rss
}

fn play_one(server: &Server, url: &str, lower: Lower, expected: &[Vec<RtpPacket>]) {
    let mut player = Player::setup(server.addr, url, lower);
    player.play(None);
    player.receive_to_the_end(Duration::from_secs(60));
    check_complete(&player, expected).unwrap_or_else(|e| panic!("warm-up over {lower:?}: {e}"));
    assert_eq!(player.control("TEARDOWN", &[]).status, 200);
}

/// Every stream got exactly the hinted packets, in order, contiguous, from
/// the announced SSRC.
fn check_complete(player: &Player, expected: &[Vec<RtpPacket>]) -> Result<(), String> {
    for (i, (s, want)) in player.streams.iter().zip(expected).enumerate() {
        if s.packets.len() != want.len() {
            return Err(format!(
                "stream {i}: {} of {} packets arrived",
                s.packets.len(),
                want.len()
            ));
        }
        let seq0 = s.packets[0].sequence;
        for (n, (g, w)) in s.packets.iter().zip(want).enumerate() {
            if g.sequence != seq0.wrapping_add(n as u16) || g.ssrc != s.ssrc || g.payload != w.payload {
                return Err(format!(
                    "stream {i}: packet {n} is wrong (seq {} after first {seq0}, ssrc {:08X} vs {:08X}, \
                     payload {} bytes vs {})",
                    g.sequence,
                    g.ssrc,
                    s.ssrc,
                    g.payload.len(),
                    w.payload.len()
                ));
            }
        }
    }
    Ok(())
}
