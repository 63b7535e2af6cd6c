//! Instant-On and thinning as the shard core drives them, on the
//! simulated clock.

use std::collections::BTreeMap;

use super::*;
use crate::repair::thinning::ThinningConfig;
use crate::shard::burst_config;

fn config_on(queue: usize) -> Config {
    Config {
        tcp_queue_bytes: queue,
        instant_on: Some(burst_config(200, 4000)),
        thinning: Some(ThinningConfig::default()),
        ..config(60)
    }
}

/// Seconds of video media in `frames` (RTP packets of the 90 kHz track).
fn media_secs(frames: &[Vec<u8>]) -> f64 {
    let Some(first) = frames.first() else { return 0.0 };
    let t0 = rtp(first).ts;
    frames
        .iter()
        .map(|f| rtp(f).ts.wrapping_sub(t0) as i32 as f64 / 90_000.0)
        .fold(0.0, f64::max)
}

fn contiguous(frames: &[Vec<u8>]) -> bool {
    frames
        .windows(2)
        .all(|w| rtp(&w[1]).seq == rtp(&w[0]).seq.wrapping_add(1))
}

#[test]
fn a_tcp_session_holds_seconds_of_media_a_fraction_of_a_second_after_play() {
    for on in [true, false] {
        let mut cfg = config_on(256 * 1024);
        if !on {
            cfg.instant_on = None;
        }
        let mut sim = Sim::new(cfg);
        sim.tcp_session(0xA1, 1);
        assert_eq!(sim.on_conn(1, 0xA1, "PLAY").status, 200);
        let play = sim.now;
        sim.run_until(play + 300 * MS);
        let held = media_secs(&sim.frames(1, 0));
        if on {
            assert!(held >= 1.9, "Instant-On: {held} s of video 300 ms after PLAY");
        } else {
            assert!(held <= 0.4, "real time: {held} s of video 300 ms after PLAY");
        }
        // Ahead, but never more than the lead, and never more than twice
        // real time once the first burst is out.
        sim.run_until(play + 2 * S);
        let lead = media_secs(&sim.frames(1, 0)) - 2.0;
        if on {
            assert!((3.0..=4.0 + 0.2).contains(&lead), "{lead} s ahead at 2 s");
        }
        sim.run_until(play + 12 * S);
        let video = sim.frames(1, 0);
        assert_eq!(video.len(), VIDEO_PACKETS, "every packet, once");
        assert_eq!(sim.frames(1, 2).len(), AUDIO_PACKETS);
        assert!(contiguous(&video));
        assert_eq!(sim.core.stats().dropped_tcp, 0);
        assert_eq!(sim.core.stats().ahead_packets > 0, on);
    }
}

#[test]
fn plain_udp_is_never_sent_ahead_and_x_dynamic_rate_asks_for_it() {
    let mut sim = Sim::new(config_on(256 * 1024));
    let plain = sim.udp_session(0xB1, 5000);
    // A QuickTime-style client that asks to be sent ahead.
    let setup = |track: u32, port: u16, session: &str| {
        request(&format!(
            "SETUP rtsp://h/sample.mp4/trackID={track} RTSP/1.0\r\nCSeq: 1\r\n{session}\
             Transport: RTP/AVP;unicast;client_port={port}-{}\r\nx-Dynamic-Rate: 1\r\n\r\n",
            port + 1
        ))
    };
    let video = sim.ask(|reply| Command::NewSession {
        key: 0xB2,
        path: "/sample.mp4".into(),
        movie: movie(),
        request: setup(VIDEO, 6000, ""),
        client: addr(40_000),
        conn: None,
        reply,
    });
    assert_eq!(video.headers.get("x-Dynamic-Rate"), Some("1"), "{video:?}");
    let session = format!("Session: {}\r\n", session_id(0xB2));
    assert_eq!(sim.control(0xB2, &setup(AUDIO, 6002, &session)).status, 200);
    let dynamic = ssrc(&video);
    sim.method(0xB1, "PLAY", "");
    sim.method(0xB2, "PLAY", "");
    let play = sim.now;
    sim.run_until(play + 300 * MS);
    let secs = |sim: &Sim, ssrc: u32| {
        let ts: Vec<u32> = sim.rtp_of(ssrc).iter().map(|p| p.1.ts).collect();
        ts.iter()
            .map(|t| t.wrapping_sub(ts[0]) as f64 / 90_000.0)
            .fold(0.0, f64::max)
    };
    assert!(secs(&sim, plain[0]) <= 0.4, "plain UDP at real time");
    assert!(
        secs(&sim, dynamic) >= 1.9,
        "x-Dynamic-Rate: 1 ahead: {}",
        secs(&sim, dynamic)
    );
    // The burst is spread: no round sends a train bigger than a round's share.
    let mut per_round: BTreeMap<Nanos, usize> = BTreeMap::new();
    for d in &sim.rtp {
        if d.to.port() == 6000 {
            *per_round.entry(d.at).or_default() += d.data.len();
        }
    }
    let most = per_round.values().max().copied().unwrap_or(0);
    assert!(
        most <= super::super::adapt::UDP_AHEAD_PER_ROUND + 4096,
        "{most} bytes in one round"
    );
    sim.run_until(play + 12 * S);
    assert_eq!(sim.rtp_of(dynamic).len(), VIDEO_PACKETS);
    assert_eq!(sim.rtp_of(plain[0]).len(), VIDEO_PACKETS);
}

#[test]
fn a_seek_bursts_again_from_the_new_key_frame() {
    let mut sim = Sim::new(config_on(256 * 1024));
    sim.tcp_session(0xC1, 1);
    assert_eq!(sim.on_conn(1, 0xC1, "PLAY").status, 200);
    sim.run_until(sim.now + 5 * S);
    let before = sim.frames(1, 0).len();
    let text = format!(
        "PLAY rtsp://h/sample.mp4 RTSP/1.0\r\nCSeq: 30\r\nSession: {}\r\nRange: npt=2-\r\n\
         x-Prebuffer: maxtime=3.0\r\n\r\n",
        session_id(0xC1)
    );
    sim.input(Input::ConnRequest {
        conn: 1,
        key: 0xC1,
        request: request(&text),
    });
    let reply = sim.responses(1).pop().unwrap();
    assert_eq!(reply.status, 200);
    // The sample's key frames are 2 s apart: the seek lands on one, so
    // nothing was backed up.
    assert_eq!(reply.headers.get("x-Prebuffer"), Some("time=0.00000"));
    let seek = sim.now;
    sim.run_until(seek + 300 * MS);
    let after = sim.frames(1, 0);
    assert!(media_secs(&after[before..]) >= 1.9, "{}", media_secs(&after[before..]));
    assert!(contiguous(&after), "a seek leaves no gap in the numbers");
}

/// A connection whose client reads `rate` bytes a second: the writer takes
/// what is queued and reports it written once the link has carried it.
struct SlowReader {
    conn: ConnId,
    rate: f64,
    busy_until: Option<Nanos>,
}

impl SlowReader {
    fn step(&mut self, sim: &mut Sim) {
        if let Some(t) = self.busy_until {
            if sim.now < t {
                return;
            }
            sim.core.handle_input(sim.now, Input::ConnWritten { conn: self.conn });
            self.busy_until = None;
        }
        let mut buf = Vec::new();
        if sim.core.take_conn_bytes(self.conn, &mut buf) == Taken::Bytes {
            sim.written.entry(self.conn).or_default().extend_from_slice(&buf);
            self.busy_until = Some(sim.now + (buf.len() as f64 / self.rate * 1e9) as Nanos);
        }
    }
}

fn run_slow(sim: &mut Sim, reader: &mut SlowReader, until: Nanos) {
    while sim.now < until {
        let next = (sim.now + MS).min(until);
        sim.run_until(next);
        reader.step(sim);
    }
}

/// The hinted key frames of the video track: packets per timestamp.
fn key_frames() -> BTreeMap<u32, usize> {
    let m = movie();
    let mut keys = BTreeMap::new();
    for p in m.packets(VIDEO).unwrap() {
        let p = p.unwrap();
        if p.flags.contains(loader::PacketFlags::KEY) {
            *keys.entry(p.timestamp).or_default() += 1;
        }
    }
    keys
}

#[test]
fn a_slow_tcp_reader_is_thinned_before_its_queue_overflows_and_keeps_every_key_frame() {
    // 64 KiB of queue; the sample is about 42 KB a second, the reader
    // takes 16 KB a second, then all it is given.
    let mut sim = Sim::new(config_on(64 * 1024));
    sim.tcp_session(0xD1, 1);
    assert_eq!(sim.on_conn(1, 0xD1, "PLAY").status, 200);
    sim.stalled.insert(1);
    let mut reader = SlowReader {
        conn: 1,
        rate: 16_000.0,
        busy_until: None,
    };
    reader.step(&mut sim);
    let play = sim.now;
    run_slow(&mut sim, &mut reader, play + 6 * S);
    let stats = sim.core.stats().clone();
    assert_eq!(stats.dropped_tcp, 0, "no frame lost to a full queue");
    assert!(stats.thinned_frames > 0, "the video was thinned");
    let info = sim.core.snapshot(sim.now, true).sessions.pop().unwrap();
    assert!(info.quality.is_some_and(|q| q != "all"), "{:?}", info.quality);
    // The link opens up: the queue drains, and full quality comes back.
    reader.rate = 10_000_000.0;
    run_slow(&mut sim, &mut reader, play + 14 * S);
    assert_eq!(sim.core.stats().dropped_tcp, 0);
    let video = sim.frames(1, 0);
    assert!(contiguous(&video), "thinned packets took no sequence numbers");
    // Every key frame whole: as many packets of each as were hinted.
    let t0 = rtp(&video[0]).ts;
    let hinted = key_frames();
    let first_hinted = *hinted.keys().next().unwrap();
    let mut got: BTreeMap<u32, usize> = BTreeMap::new();
    for f in &video {
        *got.entry(rtp(f).ts.wrapping_sub(t0).wrapping_add(first_hinted))
            .or_default() += 1;
    }
    for (ts, n) in &hinted {
        assert_eq!(got.get(ts), Some(n), "key frame at {ts}");
    }
    assert!(video.len() < VIDEO_PACKETS, "fewer packets than the movie has");
    assert_eq!(sim.frames(1, 2).len(), AUDIO_PACKETS, "audio is never thinned");
    let end = sim.now + 10 * MS;
    run_slow(&mut sim, &mut reader, end);
    sim.stalled.remove(&1);
    assert_eq!(sim.on_conn(1, 0xD1, "TEARDOWN").status, 200);
    let record = sim.ended().into_iter().find(|e| e.1 == Some(0xD1)).unwrap().2;
    assert_eq!(record.frames_thinned, Some(sim.core.stats().thinned_frames));
}

#[test]
fn thinning_thickens_back_to_all_once_the_reader_keeps_up() {
    let mut sim = Sim::new(config_on(64 * 1024));
    sim.tcp_session(0xD2, 1);
    assert_eq!(sim.on_conn(1, 0xD2, "PLAY").status, 200);
    sim.stalled.insert(1);
    let mut reader = SlowReader {
        conn: 1,
        rate: 12_000.0,
        busy_until: None,
    };
    reader.step(&mut sim);
    let play = sim.now;
    run_slow(&mut sim, &mut reader, play + 2500 * MS);
    let thin = sim.core.snapshot(sim.now, true).sessions.pop().unwrap();
    assert_ne!(thin.quality, Some("all"));
    reader.rate = 10_000_000.0;
    run_slow(&mut sim, &mut reader, play + 10 * S);
    let thick = sim.core.snapshot(sim.now, true).sessions.pop().unwrap();
    assert_eq!(thick.quality, Some("all"), "full quality once the queue stays low");
    assert_eq!(sim.core.stats().dropped_tcp, 0);
}

#[test]
fn without_thinning_a_slow_reader_loses_frames_to_its_full_queue() {
    // The contrast: the same reader, thinning off.
    let mut cfg = config_on(64 * 1024);
    cfg.thinning = None;
    let mut sim = Sim::new(cfg);
    sim.tcp_session(0xD3, 1);
    assert_eq!(sim.on_conn(1, 0xD3, "PLAY").status, 200);
    sim.stalled.insert(1);
    let mut reader = SlowReader {
        conn: 1,
        rate: 16_000.0,
        busy_until: None,
    };
    reader.step(&mut sim);
    let play = sim.now;
    run_slow(&mut sim, &mut reader, play + 6 * S);
    assert!(sim.core.stats().dropped_tcp > 0);
    assert_eq!(sim.core.stats().thinned_frames, 0);
}

/// A receiver report on stream `ssrc` saying `fraction` (1/256) was lost.
fn lossy_report(ssrc: u32, fraction: u8) -> Vec<u8> {
    let mut out = Vec::new();
    let block = rtcp::ReportBlock {
        ssrc,
        fraction_lost: fraction,
        ..Default::default()
    };
    rtcp::receiver_report(&mut out, 0x2222, &[block]);
    out
}

#[test]
fn a_udp_client_reporting_heavy_loss_is_thinned_and_thickened_when_it_clears() {
    let mut sim = Sim::new(config_on(256 * 1024));
    let ssrcs = sim.udp_session(0xE1, 5000);
    sim.method(0xE1, "PLAY", "");
    let play = sim.now;
    sim.run_until(play + S);
    // Plain UDP pays nothing until its client reports loss.
    assert!(sim.core.sessions.get(&0xE1).unwrap().adapt.is_none());
    // 40 % lost, in three reports in a row: DSS's threshold.
    for i in 0..3 {
        sim.input(Input::Rtcp {
            from: addr(5001),
            data: &lossy_report(ssrcs[0], 102),
        });
        sim.run_until(play + S + (i + 1) * 500 * MS);
    }
    let info = sim.core.snapshot(sim.now, true).sessions.pop().unwrap();
    assert_eq!(info.quality, Some("no-b-frames"));
    assert_eq!(info.lead_ms, 0, "plain UDP is never sent ahead");
    // Six clean reports: back to all.
    for i in 0..6 {
        sim.input(Input::Rtcp {
            from: addr(5001),
            data: &lossy_report(ssrcs[0], 0),
        });
        sim.run_until(play + 3 * S + i * 100 * MS);
    }
    let info = sim.core.snapshot(sim.now, true).sessions.pop().unwrap();
    assert_eq!(info.quality, Some("all"));
    sim.run_until(play + 12 * S);
    let video = sim.rtp_of(ssrcs[0]);
    assert!(
        video.windows(2).all(|w| w[1].1.seq == w[0].1.seq.wrapping_add(1)),
        "contiguous however many were left out"
    );
}
