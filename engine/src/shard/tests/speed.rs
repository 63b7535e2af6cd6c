//! `Speed`, the client's overbuffer window and lateness, as the shard
//! core drives them, on the simulated clock.

use super::*;
use crate::repair::thinning::{self, ThinningConfig};
use crate::shard::burst_config;
use proto::qtss;

/// Seconds of media (90 kHz video) from first to newest timestamp.
fn secs_of(ts: &[u32]) -> f64 {
    let Some(&first) = ts.first() else { return 0.0 };
    ts.iter()
        .map(|t| t.wrapping_sub(first) as i32 as f64 / 90_000.0)
        .fold(0.0, f64::max)
}

/// A request on connection `conn` for session `key` with `extra` header
/// lines; its answer.
fn on_conn_with(sim: &mut Sim, conn: ConnId, key: SessionKey, method: &str, extra: &str) -> Response {
    let text = format!(
        "{method} rtsp://h/sample.mp4 RTSP/1.0\r\nCSeq: 20\r\nSession: {}\r\n{extra}\r\n",
        session_id(key)
    );
    let before = sim.responses(conn).len();
    sim.input(Input::ConnRequest {
        conn,
        key,
        request: request(&text),
    });
    sim.responses(conn).into_iter().nth(before).expect("an answer")
}

fn video_ts(sim: &Sim, conn: ConnId) -> Vec<u32> {
    sim.frames(conn, 0).iter().map(|f| rtp(f).ts).collect()
}

#[test]
fn speed_two_over_tcp_sends_the_media_in_half_the_time_with_the_same_timestamps() {
    // Neither burst nor thinning: what goes faster is the speed alone.
    let mut runs = Vec::new();
    for speed in [None, Some("2.0")] {
        let mut sim = Sim::new(config(60));
        sim.tcp_session(0xA1, 1);
        let extra = speed.map_or(String::new(), |s| format!("Speed: {s}\r\n"));
        let r = on_conn_with(&mut sim, 1, 0xA1, "PLAY", &extra);
        assert_eq!(r.status, 200);
        assert_eq!(r.headers.get("Speed"), speed.map(|_| "2.00000"));
        let play = sim.now;
        sim.run_until(play + 2 * S);
        let held = secs_of(&video_ts(&sim, 1));
        let info = sim.core.snapshot(sim.now, true).sessions.pop().unwrap();
        assert_eq!(info.speed, if speed.is_some() { 2.0 } else { 1.0 });
        sim.run_until(play + 12 * S);
        let all = video_ts(&sim, 1);
        assert_eq!(all.len(), VIDEO_PACKETS, "every packet, once");
        runs.push((held, all));
    }
    let (real, fast) = (runs[0].0, runs[1].0);
    // Two seconds of real time: two seconds of media at 1, four at 2 (a
    // frame's worth either way: the hinter sends a little early).
    assert!((1.8..=2.3).contains(&real), "{real} s of media at speed 1");
    assert!((3.8..=4.3).contains(&fast), "{fast} s of media at speed 2");
    // The RTP timestamps are the movie's whatever the speed (each run has
    // its own random offset).
    let rel = |ts: &[u32]| ts.iter().map(|t| t.wrapping_sub(ts[0])).collect::<Vec<u32>>();
    assert_eq!(rel(&runs[0].1), rel(&runs[1].1));
}

#[test]
fn pause_and_play_after_a_fast_play_resume_where_the_media_was() {
    let mut sim = Sim::new(config(60));
    sim.tcp_session(0xA2, 1);
    assert_eq!(on_conn_with(&mut sim, 1, 0xA2, "PLAY", "Speed: 2\r\n").status, 200);
    let play = sim.now;
    sim.run_until(play + S);
    // A second at twice real time is two seconds of media.
    assert_eq!(sim.on_conn(1, 0xA2, "PAUSE").status, 200);
    let sent = sim.frames(1, 0).len();
    sim.run_until(play + 3 * S);
    assert_eq!(sim.frames(1, 0).len(), sent, "nothing while paused");
    // A PLAY without Speed plays at 1 from there.
    let r = sim.on_conn(1, 0xA2, "PLAY");
    assert_eq!(r.headers.get("Speed"), None);
    let range = r.headers.get("Range").unwrap();
    let from: f64 = range["npt=".len()..range.find('-').unwrap()].parse().unwrap();
    assert!((1.9..=2.1).contains(&from), "resumed at {range}");
    let resumed = sim.now;
    sim.run_until(resumed + 2 * S);
    let after: Vec<u32> = video_ts(&sim, 1)[sent..].to_vec();
    let secs = secs_of(&after);
    assert!((1.7..=2.3).contains(&secs), "{secs} s of media in 2 s at speed 1");
    let info = sim.core.snapshot(sim.now, true).sessions.pop().unwrap();
    assert_eq!(info.speed, 1.0);
}

#[test]
fn plain_udp_is_answered_speed_one_and_plays_at_real_time() {
    let mut sim = Sim::new(config(60));
    let [video, _] = sim.udp_session(0xA3, 5000);
    let r = sim.method(0xA3, "PLAY", "Speed: 2.0\r\n");
    assert_eq!(r.headers.get("Speed"), Some("1.00000"));
    let play = sim.now;
    sim.run_until(play + 2 * S);
    let ts: Vec<u32> = sim.rtp_of(video).iter().map(|p| p.1.ts).collect();
    let secs = secs_of(&ts);
    assert!((1.8..=2.3).contains(&secs), "{secs} s of media in 2 s");
    // Nothing was made for it: the plain round.
    assert!(sim.core.sessions.get(&0xA3).unwrap().adapt.is_none());
}

/// A `QTSS` report from client SSRC 0x4444 on stream `ssrc` with an
/// overbuffer window of `window` bytes.
fn window_report(ssrc: u32, window: u32) -> Vec<u8> {
    let mut out = Vec::new();
    rtcp::receiver_report(&mut out, 0x4444, &[]);
    let values = qtss::ReportValues {
        overbuffer_window: Some(window),
        ..Default::default()
    };
    qtss::report(&mut out, 0x4444, ssrc, &values);
    out
}

/// A session on UDP that asked to be sent ahead (`x-Dynamic-Rate: 1`),
/// playing: its video SSRC.
fn dynamic_session(sim: &mut Sim, key: SessionKey, port: u16) -> u32 {
    let (ssrcs, _) = sim.udp_session_headers(key, port, "RTP/AVP", "x-Dynamic-Rate: 1\r\n");
    ssrcs[0]
}

fn ahead_bytes(sim: &Sim, key: SessionKey) -> u64 {
    sim.core
        .sessions
        .get(&key)
        .and_then(|e| e.adapt.as_ref())
        .map_or(0, |a| a.ahead_bytes())
}

#[test]
fn the_clients_overbuffer_window_bounds_what_goes_ahead() {
    let cfg = Config {
        instant_on: Some(burst_config(200, 4000)),
        ..config(60)
    };
    const WINDOW: u32 = 20_000;
    let mut sim = Sim::new(cfg);
    let bounded = dynamic_session(&mut sim, 0xB1, 5000);
    let free = dynamic_session(&mut sim, 0xB2, 6000);
    // The window is said before PLAY and again while playing, as QuickTime
    // reports with its receiver reports.
    sim.method(0xB1, "PLAY", "");
    sim.input(Input::Rtcp {
        from: addr(5001),
        data: &window_report(bounded, WINDOW),
    });
    sim.method(0xB2, "PLAY", "");
    let play = sim.now;
    // The bytes sent ahead of their due time and not yet due (the client's
    // own measure of the same is the end-to-end test's), after every round.
    let mut most = 0;
    let mut t = play;
    while t < play + 6 * S {
        t += 10 * MS;
        sim.run_until(t);
        most = most.max(ahead_bytes(&sim, 0xB1));
        assert!(ahead_bytes(&sim, 0xB1) <= u64::from(WINDOW), "at {t}");
        if (t - play).is_multiple_of(S) {
            sim.input(Input::Rtcp {
                from: addr(5001),
                data: &window_report(bounded, WINDOW),
            });
        }
    }
    assert!(most > u64::from(WINDOW) / 2, "the window was used: {most}");
    // The other, with no window said, went well past it.
    let ts = |ssrc: u32| -> Vec<u32> { sim.rtp_of(ssrc).iter().map(|p| p.1.ts).collect() };
    let lead_free = secs_of(&ts(free)) - 1.0;
    let lead_bounded = secs_of(&ts(bounded)) - 1.0;
    assert!(lead_free > lead_bounded + 1.0, "{lead_free} s against {lead_bounded} s");
    let c = sim.core.stats().client_reports;
    assert_eq!((c.reports, c.windows, c.malformed, c.unwanted), (7, 7, 0, 0), "{c:?}");
    sim.run_until(play + 14 * S);
    assert_eq!(sim.rtp_of(bounded).len(), VIDEO_PACKETS, "all of it, in the end");
}

#[test]
fn hostile_client_reports_are_counted_and_change_nothing() {
    let cfg = Config {
        instant_on: Some(burst_config(200, 4000)),
        ..config(60)
    };
    let mut sim = Sim::new(cfg);
    let video = dynamic_session(&mut sim, 0xB3, 5000);
    sim.method(0xB3, "PLAY", "");
    let play = sim.now;
    // A window of nothing: nothing goes ahead from then on.
    sim.input(Input::Rtcp {
        from: addr(5001),
        data: &window_report(video, 0),
    });
    let ahead = sim.core.stats().ahead_packets;
    sim.run_until(play + S);
    assert_eq!(sim.core.stats().ahead_packets, ahead, "a window of 0");
    // The largest window there is: the lead is the server's, no more.
    sim.input(Input::Rtcp {
        from: addr(5001),
        data: &window_report(video, u32::MAX),
    });
    sim.run_until(play + 2 * S);
    let lead = sim.core.snapshot(sim.now, true).sessions.pop().unwrap().lead_ms;
    assert!(lead > 0 && lead <= 4000, "{lead} ms");
    // For an SSRC the shard does not send, from another address, and
    // malformed (version 1; items claiming more than there is).
    sim.input(Input::Rtcp {
        from: addr(5001),
        data: &window_report(0xDEAD_BEEF, 0),
    });
    // (From an address no session has, it is any stranger's RTCP; from
    // another session's, a forgery.)
    let bad_rtcp = sim.core.stats().bad_rtcp;
    sim.input(Input::Rtcp {
        from: addr(9001),
        data: &window_report(video, 0),
    });
    assert_eq!(sim.core.stats().bad_rtcp, bad_rtcp + 1);
    sim.udp_session(0xB4, 7000);
    sim.input(Input::Rtcp {
        from: addr(7001),
        data: &window_report(video, 0),
    });
    let s = video.to_be_bytes();
    let mut version = Vec::new();
    rtcp::app(
        &mut version,
        0,
        0x4444,
        qtss::REPORT,
        &[s[0], s[1], s[2], s[3], 0, 1, 0, 0],
    );
    let mut short = Vec::new();
    rtcp::app(
        &mut short,
        0,
        0x4444,
        qtss::REPORT,
        &[s[0], s[1], s[2], s[3], 0, 0, 0, 9],
    );
    for data in [&version[..], &short[..]] {
        sim.input(Input::Rtcp { from: addr(5001), data });
    }
    // An `ob` item of two bytes, not four: the report is read, the window
    // is not (and the window said before stays).
    let mut odd_item = Vec::new();
    rtcp::app(
        &mut odd_item,
        0,
        0x4444,
        qtss::REPORT,
        &[s[0], s[1], s[2], s[3], 0, 0, 0, 2, b'o', b'b', 0, 2, 0, 0, 0, 0],
    );
    sim.input(Input::Rtcp {
        from: addr(5001),
        data: &odd_item,
    });
    let c = sim.core.stats().client_reports;
    assert_eq!((c.reports, c.windows, c.unwanted, c.malformed), (3, 2, 1, 2), "{c:?}");
    assert_eq!(sim.core.stats().repair.forged, 1);
    // None of it stopped the session getting ahead again.
    sim.run_until(play + 3 * S);
    let lead = sim.core.snapshot(sim.now, true).sessions.pop().unwrap().lead_ms;
    assert!(lead > 0, "{lead}");
}

fn ack_everything(sim: &mut Sim, ssrcs: [u32; 2]) {
    for (ssrc, port) in [(ssrcs[0], 5001), (ssrcs[1], 5003)] {
        let seqs: Vec<u16> = sim.rtp_of(ssrc).into_iter().map(|(_, r)| r.seq).collect();
        sim.input(Input::Rtcp {
            from: addr(port),
            data: &acks(ssrc, &seqs),
        });
    }
}

#[test]
fn a_reliable_udp_session_held_back_by_its_window_thins_by_lateness_and_thickens_when_acks_resume() {
    let cfg = Config {
        thinning: Some(ThinningConfig::default()),
        ..config(60)
    };
    let mut sim = Sim::new(cfg);
    let (ssrcs, _) = sim.udp_session_headers(
        0xC1,
        5000,
        "RTP/AVP",
        "x-Retransmit: our-retransmit\r\nx-Transport-Options: late-tolerance=1.5\r\n",
    );
    let plain = sim.udp_session(0xC2, 7000);
    sim.method(0xC1, "PLAY", "");
    sim.method(0xC2, "PLAY", "");
    let play = sim.now;
    let quality = |sim: &Sim| {
        let e = sim.core.sessions.get(&0xC1).unwrap();
        e.adapt.as_ref().and_then(|a| a.quality())
    };
    // Acked at first: on time, all of it.
    let mut t = play;
    while t < play + S {
        t += 50 * MS;
        sim.run_until(t);
        ack_everything(&mut sim, ssrcs);
    }
    assert_eq!(quality(&sim), Some(thinning::Quality::All));
    // The acks stop: the window fills, only what expires opens it, and
    // what goes goes later and later.
    sim.run_until(play + 5 * S);
    let thin = quality(&sim).unwrap();
    assert!(thin >= thinning::Quality::KeyPlusOneP, "{thin:?}");
    let info = sim.core.snapshot(sim.now, true).sessions;
    let held = info.iter().find(|i| i.key == 0xC1).unwrap();
    assert_eq!(held.quality, Some(thin.name()));
    // The acks resume; play goes on from the start, a seek, to have media
    // to catch up with: the level comes back.
    assert_eq!(sim.method(0xC1, "PLAY", "Range: npt=0-\r\n").status, 200);
    let again = sim.now;
    let mut t = again;
    while t < again + 9 * S {
        t += 20 * MS;
        sim.run_until(t);
        ack_everything(&mut sim, ssrcs);
    }
    assert_eq!(quality(&sim), Some(thinning::Quality::All), "thickened again");
    let e = sim.core.sessions.get(&0xC1).unwrap();
    let st = e.adapt.as_ref().unwrap().stats();
    assert!(st.thinned > 0 && st.thickened > 0 && st.frames_thinned > 0, "{st:?}");
    // Sequence numbers stayed contiguous over what was left out.
    // (In the order first sent; resends are the same numbers again.)
    let mut seen = HashSet::new();
    let seqs: Vec<u16> = sim
        .rtp_of(ssrcs[0])
        .into_iter()
        .map(|(_, r)| r.seq)
        .filter(|s| seen.insert(*s))
        .collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)), "contiguous");
    // The plain session beside it was neither held nor thinned.
    assert!(sim.core.sessions.get(&0xC2).unwrap().adapt.is_none());
    assert_eq!(sim.rtp_of(plain[0]).len(), VIDEO_PACKETS);
}
