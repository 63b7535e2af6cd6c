//! Instant-On for sessions repaired by NACK/RTX over UDP, on the simulated
//! clock: sent ahead by default (reliable UDP only when asked with
//! `x-Dynamic-Rate: 1`), and a packet sent ahead stays answerable until its
//! due time plus `rtx-time`.

use std::collections::BTreeMap;

use super::*;
use crate::repair::offer::{self, RTX_TIME_MS};
use crate::shard::burst_config;

fn config_on() -> Config {
    Config {
        instant_on: Some(burst_config(200, 4000)),
        ..config(60)
    }
}

fn nack(media_ssrc: u32, lost: &[u16]) -> Vec<u8> {
    let mut out = Vec::new();
    rtcp::generic_nack(&mut out, 0x2222, media_ssrc, lost);
    out
}

fn rtx_pt() -> u8 {
    offer::for_track(movie().sdp(), VIDEO)
        .expect("the sample's video gets RTX")
        .rtx_pt
}

/// Seconds of video media sent of `ssrc`.
fn video_secs(sim: &Sim, ssrc: u32) -> f64 {
    let ts: Vec<u32> = sim.rtp_of(ssrc).iter().map(|p| p.1.ts).collect();
    ts.iter()
        .map(|t| t.wrapping_sub(ts[0]) as f64 / 90_000.0)
        .fold(0.0, f64::max)
}

/// (time sent, sequence number, how far ahead of its due time) of each
/// video packet of `ssrc`, its due time read from its timestamp (the
/// sample's video has no B-frames: transmit order is timestamp order).
fn ahead_of_due(sim: &Sim, ssrc: u32, play: Nanos) -> Vec<(Nanos, u16, i64)> {
    let sent = sim.rtp_of(ssrc);
    let ts0 = sent[0].1.ts;
    sent.iter()
        .map(|(at, r)| {
            let due = play + (f64::from(r.ts.wrapping_sub(ts0)) / 90_000.0 * 1e9) as u64;
            (*at, r.seq, due as i64 - *at as i64)
        })
        .collect()
}

#[test]
fn a_nack_for_a_packet_sent_2_s_ahead_is_answered_past_rtx_time_after_it_went() {
    let mut sim = Sim::new(config_on());
    // RTP/AVPF, no x-Dynamic-Rate: GStreamer's rtspsrc with retransmission.
    let [video, _] = sim.udp_session_with(0xD1, 5000, "RTP/AVPF");
    assert_eq!(sim.method(0xD1, "PLAY", "").status, 200);
    let play = sim.now;
    sim.run_until(play + 2 * S);
    let (sent_at, seq, ahead) = ahead_of_due(&sim, video, play)
        .into_iter()
        .find(|p| p.2 >= 1900 * MS as i64)
        .expect("a packet sent 2 s ahead of its due time");
    let due = sent_at + ahead as u64;
    let rtx_time = u64::from(RTX_TIME_MS) * MS;

    // 1.5 s after it went (past rtx-time counted from the send), before
    // it is due: answered, byte for byte.
    sim.run_until(sent_at + 1500 * MS);
    assert!(sim.now < due);
    let original = sim
        .rtp
        .iter()
        .find(|d| rtp(&d.data).ssrc == video && rtp(&d.data).seq == seq)
        .expect("the packet went")
        .data
        .clone();
    let before = sim.rtp.len();
    sim.input(Input::Rtcp {
        from: addr(5001),
        data: &nack(video, &[seq]),
    });
    let rtx: Vec<_> = sim.rtp[before..]
        .iter()
        .filter(|d| d.to == addr(5000) && d.data[1] & 0x7f == rtx_pt())
        .collect();
    assert_eq!(rtx.len(), 1, "the NACK of a packet sent ahead is answered");
    let r = proto::rtx::RtxPacket::parse(&rtx[0].data).unwrap();
    assert_eq!((r.osn, r.payload), (seq, &original[12..]));

    // Still answerable up to rtx-time past its due time (the client asks
    // again while it may still play it); not after.
    sim.run_until(due + rtx_time - 20 * MS);
    let before = sim.rtp.len();
    sim.input(Input::Rtcp {
        from: addr(5001),
        data: &nack(video, &[seq]),
    });
    assert_eq!(sim.rtp.len(), before + 1, "answered until rtx-time past due");
    sim.run_until(due + rtx_time + 20 * MS);
    let too_old = sim.core.stats().repair.too_old;
    let before = sim.rtp.len();
    sim.input(Input::Rtcp {
        from: addr(5001),
        data: &nack(video, &[seq]),
    });
    assert_eq!(sim.rtp.len(), before, "let go after rtx-time past due");
    assert_eq!(sim.core.stats().repair.too_old, too_old + 1);

    // Through it all, the step at PLAY, 2 s ahead at once, then half a
    // second more and no further (see `adapt::nack_lead`).
    let most = ahead_of_due(&sim, video, play).iter().map(|p| p.2).max().unwrap();
    assert!(
        most >= 2400 * MS as i64 && most <= 2600 * MS as i64,
        "sent at most {most} ns ahead"
    );
}

/// Held 300 ms after PLAY by an RTP/AVPF session and a reliable-UDP one
/// (neither sending x-Dynamic-Rate) and a plain one, with `cfg`.
fn held_after_play(cfg: Config) -> [f64; 3] {
    let mut sim = Sim::new(cfg);
    let [avpf, _] = sim.udp_session_with(0xD1, 5000, "RTP/AVPF");
    let ([reliable, _], _) = sim.udp_session_headers(0xD2, 6000, "RTP/AVP", "x-Retransmit: our-retransmit\r\n");
    let [plain, _] = sim.udp_session(0xD3, 7000);
    for key in [0xD1, 0xD2, 0xD3] {
        assert_eq!(sim.method(key, "PLAY", "").status, 200);
    }
    let play = sim.now;
    // Reliable UDP's window opens only as acks come: ack all every 10 ms.
    while sim.now < play + 300 * MS {
        let next = sim.now + 10 * MS;
        sim.run_until(next);
        super::reliable_udp::ack_all(&mut sim, reliable, 6001, &[]);
    }
    [
        video_secs(&sim, avpf),
        video_secs(&sim, reliable),
        video_secs(&sim, plain),
    ]
}

#[test]
fn repaired_sessions_are_sent_ahead_by_default_and_plain_ones_are_not() {
    let [avpf, reliable, plain] = held_after_play(config_on());
    assert!(avpf >= 1.9, "RTP/AVPF with RTX: {avpf} s 300 ms after PLAY");
    assert!(reliable >= 1.9, "reliable UDP: {reliable} s 300 ms after PLAY");
    assert!(plain <= 0.4, "plain UDP at real time: {plain} s");
    // --no-instant-on: all at real time.
    let off = held_after_play(config(60));
    assert!(off.iter().all(|&s| s <= 0.4), "{off:?}");
}

#[test]
fn a_reliable_udp_session_goes_ahead_as_x_dynamic_rate_says() {
    for (asked, ahead) in [("1", true), ("0", false)] {
        let mut sim = Sim::new(config_on());
        let ([video, _], answers) = sim.udp_session_headers(
            0xD4,
            5000,
            "RTP/AVP",
            &format!("x-Retransmit: our-retransmit\r\nx-Dynamic-Rate: {asked}\r\n"),
        );
        assert_eq!(
            answers[0].headers.get("x-Dynamic-Rate"),
            Some(asked),
            "{:?}",
            answers[0]
        );
        assert_eq!(sim.method(0xD4, "PLAY", "").status, 200);
        let play = sim.now;
        while sim.now < play + 300 * MS {
            let next = sim.now + 10 * MS;
            sim.run_until(next);
            super::reliable_udp::ack_all(&mut sim, video, 5001, &[]);
        }
        let held = video_secs(&sim, video);
        if ahead {
            assert!(held >= 1.9, "x-Dynamic-Rate: 1: {held} s 300 ms after PLAY");
        } else {
            assert!(held <= 0.4, "x-Dynamic-Rate: 0: {held} s 300 ms after PLAY");
        }
    }
}

/// How the send path groups a round's datagrams into GSO messages
/// (`net::SendBatch`): consecutive datagrams to one address of one size,
/// the last of a run may be shorter, at most 64 of them. Returns the run
/// lengths.
fn gso_runs(round: &[&Datagram]) -> Vec<usize> {
    let mut runs = Vec::new();
    let mut i = 0;
    while i < round.len() {
        let first = round[i];
        let mut run = 1;
        while i + run < round.len() && run < 64 {
            let next = round[i + run];
            if next.to != first.to || next.data.len() > first.data.len() {
                break;
            }
            run += 1;
            if next.data.len() < first.data.len() {
                break;
            }
        }
        runs.push(run);
        i += run;
    }
    runs
}

/// Two RTP/AVPF sessions bursting at once: in each round a session's
/// packets lie together, and a video frame's packets with no other packet
/// between them, so the send path makes GSO runs of them (`net::SendBatch`
/// groups consecutive equal-size datagrams to one address). The runs are
/// counted: at the sample's low rate most frames are one or two packets.
#[test]
fn a_bursts_packets_to_one_client_lie_together_as_gso_runs() {
    let mut sim = Sim::new(config_on());
    let [v1, _] = sim.udp_session_with(0xD1, 5000, "RTP/AVPF");
    let [v2, _] = sim.udp_session_with(0xD2, 6000, "RTP/AVPF");
    assert_eq!(sim.method(0xD1, "PLAY", "").status, 200);
    assert_eq!(sim.method(0xD2, "PLAY", "").status, 200);
    let play = sim.now;
    sim.run_until(play + 300 * MS);
    let mut rounds: BTreeMap<Nanos, Vec<&Datagram>> = BTreeMap::new();
    for d in &sim.rtp {
        rounds.entry(d.at).or_default().push(d);
    }
    let client = |d: &Datagram| d.to.port() / 1000;
    let (mut packets, mut messages, mut in_runs) = (0, 0, 0);
    for round in rounds.values() {
        // One block per session.
        let mut blocks: Vec<u16> = round.iter().map(|d| client(d)).collect();
        blocks.dedup();
        let mut unique = blocks.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(
            blocks.len(),
            unique.len(),
            "sessions interleaved in a round: {blocks:?}"
        );
        // One block per video frame (its timestamp) of each session.
        let frames: Vec<(u32, u32)> = round
            .iter()
            .filter(|d| [v1, v2].contains(&rtp(&d.data).ssrc))
            .map(|d| (rtp(&d.data).ssrc, rtp(&d.data).ts))
            .collect();
        let mut at: Vec<usize> = Vec::new();
        for (i, d) in round.iter().enumerate() {
            if [v1, v2].contains(&rtp(&d.data).ssrc) {
                at.push(i);
            }
        }
        for w in frames.windows(2).zip(at.windows(2)) {
            if w.0[0] == w.0[1] {
                assert_eq!(w.1[1], w.1[0] + 1, "another packet inside a video frame");
            }
        }
        for run in gso_runs(round) {
            packets += run;
            messages += 1;
            if run > 1 {
                in_runs += run;
            }
        }
    }
    assert!(packets > 100, "{packets} packets in the bursts");
    assert!(messages < packets, "no GSO run at all");
    println!(
        "two bursts: {packets} packets in {} rounds as {messages} messages, {in_runs} of the packets in GSO runs",
        rounds.len()
    );
}

/// A reliable-UDP client on a path that drops about one datagram in
/// `one_in`: every `tick` it takes what the shard sent since the last tick,
/// loses some (a fixed pseudo-random sequence), and acks the rest, resends
/// included, as rtpload does. Returns, per stream, the numbers sent and
/// those that never arrived.
fn reliable_through_loss(sim: &mut Sim, streams: [(u32, u16); 2], until: Nanos, one_in: u64) -> [(usize, Vec<u16>); 2] {
    let tick = 20 * MS;
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    let mut lose = move || {
        // xorshift64*: deterministic, and spread enough for a loss pattern.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D).is_multiple_of(one_in)
    };
    let mut seen = sim.rtp.len();
    let mut arrived: [HashSet<u16>; 2] = Default::default();
    while sim.now < until {
        let next = sim.now + tick;
        sim.run_until(next);
        let mut fresh: [Vec<u16>; 2] = Default::default();
        for d in &sim.rtp[seen..] {
            let r = rtp(&d.data);
            let Some(i) = streams.iter().position(|s| s.0 == r.ssrc) else {
                continue;
            };
            if !lose() {
                fresh[i].push(r.seq);
                arrived[i].insert(r.seq);
            }
        }
        seen = sim.rtp.len();
        for (i, (ssrc, rtcp_port)) in streams.iter().enumerate() {
            if !fresh[i].is_empty() {
                sim.input(Input::Rtcp {
                    from: addr(*rtcp_port),
                    data: &acks(*ssrc, &fresh[i]),
                });
            }
        }
    }
    streams.map(|(ssrc, _)| {
        let mut sent: Vec<u16> = sim.rtp_of(ssrc).into_iter().map(|(_, r)| r.seq).collect();
        sent.sort_unstable();
        sent.dedup();
        let i = streams.iter().position(|s| s.0 == ssrc).unwrap();
        let missing = sent.iter().copied().filter(|s| !arrived[i].contains(s)).collect();
        (sent.len(), missing)
    })
}

#[test]
fn reliable_udp_sent_ahead_repairs_what_the_path_loses() {
    for (name, cfg, extra) in [
        ("real time", config(60), "x-Retransmit: our-retransmit\r\n"),
        ("sent ahead", config_on(), "x-Retransmit: our-retransmit\r\n"),
    ] {
        let mut sim = Sim::new(cfg);
        let ([video, audio], _) = sim.udp_session_headers(0xD5, 5000, "RTP/AVP", extra);
        assert_eq!(sim.method(0xD5, "PLAY", "").status, 200);
        let play = sim.now;
        let [(v_sent, v_missing), (a_sent, a_missing)] =
            reliable_through_loss(&mut sim, [(video, 5001), (audio, 5003)], play + 16 * S, 20);
        let stats = sim.core.stats();
        let r = stats.repair.reliable;
        eprintln!(
            "{name}: video {v_sent} sent, missing {v_missing:?}; audio {a_sent}, missing {a_missing:?}; {} ahead; {r:?}",
            stats.ahead_packets
        );
        assert_eq!(stats.ahead_packets > 0, name == "sent ahead", "{name}");
        // The path lost some, and they went again.
        assert!(r.resends > 0, "{name}: {r:?}");
        assert_eq!((v_sent, a_sent), (VIDEO_PACKETS, AUDIO_PACKETS), "{name}");
        assert!(v_missing.is_empty() && a_missing.is_empty(), "{name}");
    }
}

/// Sent ahead, the media's last packet goes seconds before it is due; the
/// BYE waits for the due time (GStreamer stops reading at it, repairs
/// included), and the session answers NACKs for its last packets until
/// then.
#[test]
fn a_session_sent_ahead_says_bye_when_its_media_is_due_not_when_it_went() {
    let mut sim = Sim::new(config_on());
    let [video, audio] = sim.udp_session_with(0xD6, 5000, "RTP/AVPF");
    assert_eq!(sim.method(0xD6, "PLAY", "").status, 200);
    let play = sim.now;
    sim.run_until(play + 20 * S);
    let sent = ahead_of_due(&sim, video, play);
    assert_eq!(sent.len(), VIDEO_PACKETS);
    let &(last_at, last_seq, ahead) = sent.last().unwrap();
    assert!(ahead > S as i64, "the last packet went {ahead} ns ahead");
    let last_due = last_at + ahead as u64;
    for ssrc in [video, audio] {
        let byes = sim.byes_of(ssrc);
        assert_eq!(byes.len(), 1, "{ssrc:08X}");
        assert!(
            byes[0] >= last_due + BYE_DELAY && byes[0] <= last_due + BYE_DELAY + HOUSEKEEPING + 2 * LOOKAHEAD,
            "BYE at {} ms, the last packet went at {} ms and was due at {} ms",
            (byes[0] - play) / MS,
            (last_at - play) / MS,
            (last_due - play) / MS
        );
    }

    // Played again, a NACK for its last packet just before that is due is
    // answered: the session (and its history) is still there.
    let mut sim = Sim::new(config_on());
    let [video, _] = sim.udp_session_with(0xD6, 5000, "RTP/AVPF");
    assert_eq!(sim.method(0xD6, "PLAY", "").status, 200);
    sim.run_until(last_due - 100 * MS);
    assert!(sim.byes_of(video).is_empty(), "no BYE before the media is due");
    let before = sim.rtp.len();
    sim.input(Input::Rtcp {
        from: addr(5001),
        data: &nack(video, &[last_seq]),
    });
    let rtx = sim.rtp[before..]
        .iter()
        .filter(|d| d.to == addr(5000) && d.data[1] & 0x7f == rtx_pt())
        .count();
    assert_eq!(rtx, 1, "the last packet is sent again");
}
