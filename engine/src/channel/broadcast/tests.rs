//! The broadcaster over real movies on a simulated clock.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;
use crate::channel::playlist::Disk;
use crate::channel::testing;

fn opener() -> impl FnMut(&Path) -> Result<Arc<Movie>, String> {
    |p: &Path| Movie::open(p).map(Arc::new).map_err(|e| e.to_string())
}

struct Sent {
    at: SystemTime,
    track: usize,
    header: Header,
    payload: Vec<u8>,
}

/// Runs `b` to its end on a simulated clock from `start`.
fn run(b: &mut Broadcaster, start: SystemTime) -> (Vec<Sent>, Vec<Note>) {
    let mut open = opener();
    let mut now = start;
    let mut buf = Vec::new();
    let mut sent = Vec::new();
    let mut notes = Vec::new();
    loop {
        let step = b.next(now, &mut open, &mut buf);
        notes.extend(std::iter::from_fn(|| b.poll_note()));
        match step {
            Step::Packet { track } => {
                let pkt = proto::rtp::Packet::new_checked(&buf[..]).unwrap();
                sent.push(Sent {
                    at: now,
                    track,
                    header: Header::parse(&pkt).unwrap(),
                    payload: pkt.payload().to_vec(),
                });
            }
            Step::Wait(t) => {
                assert!(t > now, "a wait goes forward");
                now = t;
            }
            Step::Ended => break,
        }
        assert!(sent.len() < 100_000, "runs away");
    }
    (sent, notes)
}

#[test]
fn a_looped_broadcast_is_one_continuous_stream() {
    let recipes = testing::looped_channel_clips();
    let Some(clips) = testing::clips(&recipes) else {
        eprintln!("skipped: ffmpeg is not installed");
        return;
    };
    let dir = testing::scratch("broadcast");
    for (clip, name) in clips.iter().zip(["a.mp4", "b.mov", "c.mp4", "mismatch.mp4"]) {
        std::fs::copy(clip, dir.join(name)).unwrap();
    }
    std::fs::write(
        dir.join("tv.ply"),
        "*PLAY-LIST*\na.mp4\nmissing.mp4\nb.mov\nmismatch.mp4 7\nc.mp4 x\nc.mp4\n",
    )
    .unwrap();
    let list = Playlist::load(dir.join("tv.ply"), &mut Disk).unwrap();
    let start = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let settings = Settings {
        reference: None,
        mode: PlayMode::SequentialLooped,
        window: 0,
        seed: 5,
        max_movies: Some(5),
        max_upcoming: 3,
        start,
        end: None,
    };
    let mut b = Broadcaster::new(&list, &settings, &mut opener()).unwrap();
    assert_eq!(b.reference_path(), dir.join("a.mp4"));
    let tracks = b.layout().tracks.len();
    assert_eq!(tracks, 2);
    let (sent, notes) = run(&mut b, start);

    let messages: Vec<String> = notes.iter().map(Note::message).collect();
    let list_path = dir.join("tv.ply");
    let started: Vec<&Started> = notes
        .iter()
        .filter_map(|n| match n {
            Note::Started(s) => Some(s),
            _ => None,
        })
        .collect();
    let names: Vec<String> = started
        .iter()
        .map(|s| s.path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["a.mp4", "b.mov", "c.mp4", "a.mp4", "b.mov"], "{messages:#?}");
    // Each broken line once, with its file and line.
    let skipped: Vec<&String> = messages
        .iter()
        .filter(|m| m.contains("skipped") || m.contains("weight"))
        .collect();
    assert_eq!(skipped.len(), 3, "{messages:#?}");
    assert!(
        skipped
            .iter()
            .any(|m| m.starts_with(&format!("{}:6: weight `x`", list_path.display()))),
        "{messages:#?}"
    );
    assert!(
        skipped.iter().any(|m| m.starts_with(&format!(
            "{}:3: movie {} skipped: cannot open",
            list_path.display(),
            dir.join("missing.mp4").display()
        ))),
        "{messages:#?}"
    );
    assert!(
        skipped.iter().any(|m| m
            == &&format!(
                "{}:5: movie {} skipped: track 2 is AAC 44100 Hz stereo, the channel's is AAC 48000 Hz stereo",
                list_path.display(),
                dir.join("mismatch.mp4").display()
            )),
        "{messages:#?}"
    );
    // Movies follow one another on the schedule, each for its length.
    for w in started.windows(2) {
        assert_eq!(w[1].start, w[0].start + w[0].length);
    }
    assert!(started[0]
        .current
        .starts_with(&format!("u={}\n", dir.join("a.mp4").display())));
    assert_eq!(
        started[0].upcoming,
        [dir.join("b.mov"), dir.join("c.mp4"), dir.join("a.mp4")]
    );

    // One SSRC per track, sequence numbers without a gap, timestamps of each
    // movie after the movie before's, and no packet before its time.
    let mut ssrc: Vec<Option<u32>> = vec![None; tracks];
    let mut last_seq: Vec<Option<u16>> = vec![None; tracks];
    let movie_of = |at: SystemTime| started.iter().rposition(|s| s.start <= at).unwrap();
    let mut spans: HashMap<(usize, usize), (i64, i64)> = HashMap::new();
    let first_ts: Vec<u32> = (0..tracks)
        .map(|k| sent.iter().find(|s| s.track == k).unwrap().header.timestamp)
        .collect();
    for s in &sent {
        let k = s.track;
        assert_eq!(*ssrc[k].get_or_insert(s.header.ssrc), s.header.ssrc);
        if let Some(l) = last_seq[k] {
            assert_eq!(s.header.sequence, l.wrapping_add(1), "track {k}: no gap, no reset");
        }
        last_seq[k] = Some(s.header.sequence);
        let ts = i64::from(s.header.timestamp.wrapping_sub(first_ts[k]) as i32);
        let m = movie_of(s.at);
        let e = spans.entry((k, m)).or_insert((ts, ts));
        e.0 = e.0.min(ts);
        e.1 = e.1.max(ts);
        assert_eq!(s.header.payload_type, b.layout().tracks[k].payload_type);
    }
    assert_ne!(ssrc[0], ssrc[1]);
    for k in 0..tracks {
        for m in 1..started.len() {
            let (_, before) = spans[&(k, m - 1)];
            let (after, _) = spans[&(k, m)];
            assert!(after > before, "track {k}, movie {m}: {after} after {before}");
        }
    }
    // The resized movie's SPS and PPS go in-band before its first video
    // packet, and the reference's before the next movie's.
    let sets_at: Vec<usize> = sent
        .iter()
        .filter(|s| s.track == 0 && matches!(s.payload[0] & 0x1f, 7 | 8))
        .map(|s| movie_of(s.at))
        .collect();
    // Movies 2 and 5 (the resized one) bring their own; movie 3, after it,
    // goes back to the reference's, and movie 4 needs none (3 left them).
    assert_eq!(sets_at, [1, 1, 2, 2, 4, 4], "SPS and PPS in movies 2, 3 and 5");
    let first_b = sent.iter().position(|s| s.track == 0 && movie_of(s.at) == 1).unwrap();
    assert_eq!(sent[first_b].payload[0] & 0x1f, 7, "SPS first");
    assert_eq!(sent[first_b + 1].payload[0] & 0x1f, 8, "then PPS");
    assert_eq!(sent[first_b].header.timestamp, sent[first_b + 2].header.timestamp);

    // Sender reports: the run's counts, on the track's SSRC.
    let end = sent.last().unwrap().at;
    let reports = b.reports(end, "tv@test");
    assert_eq!(reports.len(), 0, "no movie plays after the end");
    let _ = end;
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn sender_reports_skip_and_the_sdp() {
    let sample = testing::sample();
    let dir = testing::scratch("broadcast-sdp");
    std::fs::write(dir.join("one.ply"), format!("*PLAY-LIST*\n{}\n", sample.display())).unwrap();
    let list = Playlist::load(dir.join("one.ply"), &mut Disk).unwrap();
    let start = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let settings = Settings {
        reference: Some(sample.clone()),
        mode: PlayMode::SequentialLooped,
        window: 0,
        seed: 9,
        max_movies: None,
        max_upcoming: 7,
        start,
        end: None,
    };
    let mut b = Broadcaster::new(&list, &settings, &mut opener()).unwrap();
    let sdp = b.sdp("my channel", Some(("127.0.0.1".parse().unwrap(), 5004)));
    let sd = SessionDescription::parse(sdp.as_bytes()).unwrap();
    assert_eq!(sd.name.as_deref(), Some("my channel"));
    assert_eq!(sd.connection.as_ref().unwrap().address, "127.0.0.1");
    let ports: Vec<(String, u16)> = sd.media.iter().map(|m| (m.kind.clone(), m.port)).collect();
    assert_eq!(ports, [("video".into(), 5004), ("audio".into(), 5006)]);
    assert!(!sdp.contains("a=range"), "{sdp}");
    assert!(sd
        .media
        .iter()
        .all(|m| m.rtpmap(m.payload_types().next().unwrap()).is_some()));
    let announce = b.sdp("tv", None);
    assert!(announce.contains("m=video 0 RTP/AVP 96"), "{announce}");
    assert!(announce.contains("a=control:trackID="), "{announce}");

    let mut open = opener();
    let mut buf = Vec::new();
    let mut now = start;
    let mut packets = 0;
    // Three seconds in, then a skip: the same movie starts again at once.
    while now < start + Duration::from_secs(3) {
        match b.next(now, &mut open, &mut buf) {
            Step::Packet { .. } => packets += 1,
            Step::Wait(t) => now = t,
            Step::Ended => panic!("looped"),
        }
    }
    let reports = b.reports(now, "me@host");
    assert_eq!(reports.len(), 2);
    let (k, sr) = &reports[0];
    let mut compound = proto::rtcp::parse_compound(sr).unwrap();
    let first = compound.next().unwrap();
    match first {
        proto::rtcp::RtcpPacket::SenderReport { ssrc, info, .. } => {
            assert_eq!(ssrc, b.ssrc(*k));
            assert_eq!(u64::from(info.packets), b.sent(*k).0);
            assert_eq!(u64::from(info.octets), b.sent(*k).1);
        }
        other => panic!("{other:?}"),
    }
    assert!(b.reports(now, "me@host").is_empty(), "not due again yet");
    assert_eq!(b.next_report(), now + REPORT_INTERVAL);
    assert!(packets > 100);

    let numbers_before = b.progress(now).unwrap().number;
    while b.poll_note().is_some() {}
    b.skip(now);
    assert!(matches!(b.next(now, &mut open, &mut buf), Step::Packet { .. }));
    let notes: Vec<Note> = std::iter::from_fn(|| b.poll_note()).collect();
    let s = notes
        .iter()
        .find_map(|n| match n {
            Note::Started(s) => Some(s),
            _ => None,
        })
        .unwrap();
    assert_eq!(s.start, now, "the next movie starts at the skip");
    assert_eq!(b.progress(now).unwrap().number, numbers_before + 1);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn aac_frames_are_counted_from_the_au_headers() {
    // Two 13+3-bit headers: 32 bits.
    assert_eq!(aac_frames(&[0, 32, 1, 2, 3, 4], (16, 16)), 2);
    assert_eq!(aac_frames(&[0, 16, 1, 2], (16, 16)), 1);
    assert_eq!(aac_frames(&[0], (16, 16)), 0, "too short");
    assert_eq!(aac_frames(&[0, 8], (16, 16)), 0, "less than one header");
    // The sample's AAC: AAC-hbr, 13+3 bits.
    let movie = Movie::open(testing::sample()).unwrap();
    let layout = Layout::of(&movie);
    let bits: Vec<_> = layout.tracks.iter().map(|t| t.aac_au_header_bits()).collect();
    assert_eq!(bits, [None, Some((16, 16))]);
}

/// The H.264 NAL unit type a packet carries (of the fragment, for FU-A).
fn nal_type(payload: &[u8]) -> u8 {
    match payload[0] & 0x1f {
        28 => payload[1] & 0x1f,
        t => t,
    }
}

/// A looped playlist of the first `n` of the looped-channel clips, as
/// `a.mp4`, `b.mov` and `c.mp4` in a scratch directory; `None` without ffmpeg.
fn looped_list(name: &str, n: usize) -> Option<(PathBuf, Playlist)> {
    let recipes = testing::looped_channel_clips();
    let clips = testing::clips(&recipes[..n])?;
    let dir = testing::scratch(name);
    let names = ["a.mp4", "b.mov", "c.mp4"];
    for (clip, name) in clips.iter().zip(names) {
        std::fs::copy(clip, dir.join(name)).unwrap();
    }
    std::fs::write(dir.join("tv.ply"), format!("*PLAY-LIST*\n{}\n", names[..n].join("\n"))).unwrap();
    let list = Playlist::load(dir.join("tv.ply"), &mut Disk).unwrap();
    Some((dir, list))
}

/// Sequential, looped, from `start`.
fn looped(start: SystemTime, seed: u64, max_movies: Option<u64>) -> Settings {
    Settings {
        reference: None,
        mode: PlayMode::SequentialLooped,
        window: 0,
        seed,
        max_movies,
        max_upcoming: 4,
        start,
        end: None,
    }
}

#[test]
fn a_schedule_that_started_before_the_broadcast_is_joined_at_a_key_frame() {
    let Some((dir, list)) = looped_list("broadcast-joined", 1) else {
        eprintln!("skipped: ffmpeg is not installed");
        return;
    };
    let start = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let settings = |max_movies| looped(start, 11, Some(max_movies));
    // The channel as it would have run from its start: four passes of the
    // one-second movie.
    let mut from_start = Broadcaster::new(&list, &settings(4), &mut opener()).unwrap();
    let (all, _) = run(&mut from_start, start);
    let fourth = start + Duration::from_secs(3);
    let fourth_video: Vec<&Sent> = all.iter().filter(|s| s.track == 0 && s.at >= fourth).collect();

    // The same channel first asked 3.5 s after its start.
    let joined_at = start + Duration::from_millis(3_500);
    let mut late = Broadcaster::new(&list, &settings(1), &mut opener()).unwrap();
    let (sent, notes) = run(&mut late, joined_at);
    let started: Vec<&Started> = notes
        .iter()
        .filter_map(|n| match n {
            Note::Started(s) => Some(s),
            _ => None,
        })
        .collect();
    assert_eq!(started.len(), 1);
    assert_eq!(
        started[0].start, fourth,
        "the movie is placed where the schedule has it"
    );

    let video: Vec<&Sent> = sent.iter().filter(|s| s.track == 0).collect();
    let first = video
        .iter()
        .find(|s| !matches!(nal_type(&s.payload), 7 | 8))
        .expect("video sent");
    assert_eq!(nal_type(&first.payload), 5, "the first picture is a key frame");
    // It is a key frame part-way through (the clip has one every 0.4 s),
    // at the RTP time the channel would have sent it at.
    let same = fourth_video
        .iter()
        .find(|s| s.payload == first.payload)
        .expect("the joined key frame is one of the fourth pass's");
    assert!(same.at > fourth, "a key frame after the movie's first");
    assert_eq!(first.header.timestamp, same.header.timestamp);
    // What was due before the join and after that key frame goes out at
    // once; the rest on time, not the movie's first half as one flood.
    let at_once = video.iter().filter(|s| s.at == joined_at).count();
    let missed = fourth_video.iter().filter(|s| s.at < joined_at).count();
    assert!(
        at_once < missed,
        "{at_once} sent at the join, {missed} were due before it"
    );
    assert!(video.iter().all(|s| s.at >= joined_at));
    assert!(video.len() < fourth_video.len());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_paused_broadcast_sends_nothing_and_resumes_where_it_stopped() {
    let Some((dir, list)) = looped_list("broadcast-paused", 3) else {
        eprintln!("skipped: ffmpeg is not installed");
        return;
    };
    let start = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let settings = looped(start, 3, None);
    let mut b = Broadcaster::new(&list, &settings, &mut opener()).unwrap();
    let mut open = opener();
    let mut buf = Vec::new();
    let mut now = start;
    let mut step = |b: &mut Broadcaster, open: &mut Open<'_>, now: &mut SystemTime, until: SystemTime| {
        let mut sent = Vec::new();
        while *now < until {
            match b.next(*now, open, &mut buf) {
                Step::Packet { track: 0 } => {
                    let pkt = proto::rtp::Packet::new_checked(&buf[..]).unwrap();
                    sent.push((*now, Header::parse(&pkt).unwrap()));
                }
                Step::Packet { .. } => {}
                Step::Wait(t) => *now = t.min(until),
                Step::Ended => panic!("looped"),
            }
        }
        sent
    };
    // Half-way into the first movie.
    let before = step(&mut b, &mut open, &mut now, start + Duration::from_millis(500));
    let (_, last_header) = before.last().copied().expect("video before the pause");
    let paused_at = now;
    assert_eq!(b.progress(now).unwrap().number, 0);
    let upcoming = b.upcoming(&mut open);
    let names: Vec<_> = upcoming.iter().map(|p| p.file_name().unwrap().to_owned()).collect();
    assert_eq!(names, ["b.mov", "c.mp4", "a.mp4", "b.mov"], "the next four, in order");

    // Nobody watches for a minute: nothing goes out, the clock stands.
    b.pause(now);
    assert!(b.is_paused());
    let pause = Duration::from_secs(60);
    let idle = step(&mut b, &mut open, &mut now, paused_at + pause);
    assert!(idle.is_empty(), "{} packets sent while paused", idle.len());
    let position = b.progress(now).unwrap().position;
    assert!(position <= Duration::from_millis(520), "{position:?}");

    // Resumed: the same movie goes on from where it was, its sequence
    // numbers and timestamps carrying on, not a minute later.
    b.resume(now);
    let after = step(
        &mut b,
        &mut open,
        &mut now,
        paused_at + pause + Duration::from_millis(300),
    );
    let (at, first) = after.first().copied().expect("video after the resume");
    assert!(at >= paused_at + pause);
    assert_eq!(first.sequence, last_header.sequence.wrapping_add(1));
    let gap = first.timestamp.wrapping_sub(last_header.timestamp);
    assert!(
        gap < 90_000 / 5,
        "{gap} ticks of 90 kHz between the last picture and the next"
    );
    assert_eq!(b.progress(now).unwrap().number, 0, "still the first movie");
    std::fs::remove_dir_all(dir).unwrap();
}

/// Steps `b` from `*now` while what it asks for is due by `until`; `*now`
/// ends at the last instant it was asked at.
fn run_until(b: &mut Broadcaster, now: &mut SystemTime, until: SystemTime, notes: &mut Vec<Note>) -> Vec<Sent> {
    let mut open = opener();
    let mut buf = Vec::new();
    let mut sent = Vec::new();
    loop {
        let step = b.next(*now, &mut open, &mut buf);
        notes.extend(std::iter::from_fn(|| b.poll_note()));
        match step {
            Step::Packet { track } => {
                let pkt = proto::rtp::Packet::new_checked(&buf[..]).unwrap();
                sent.push(Sent {
                    at: *now,
                    track,
                    header: Header::parse(&pkt).unwrap(),
                    payload: pkt.payload().to_vec(),
                });
            }
            Step::Wait(t) if t <= until => *now = t,
            Step::Wait(_) | Step::Ended => return sent,
        }
        assert!(sent.len() < 100_000, "runs away");
    }
}

/// The clips `a.mp4`, `b.mov`, `c.mp4` and `mismatch.mp4` in a scratch
/// directory, with `tv.ply` listing `lines`.
fn all_clips_list(name: &str, lines: &str) -> Option<(PathBuf, Playlist)> {
    let recipes = testing::looped_channel_clips();
    let clips = testing::clips(&recipes)?;
    let dir = testing::scratch(name);
    for (clip, name) in clips.iter().zip(["a.mp4", "b.mov", "c.mp4", "mismatch.mp4"]) {
        std::fs::copy(clip, dir.join(name)).unwrap();
    }
    std::fs::write(dir.join("tv.ply"), format!("*PLAY-LIST*\n{lines}")).unwrap();
    let list = Playlist::load(dir.join("tv.ply"), &mut Disk).unwrap();
    Some((dir, list))
}

fn looped_three_upcoming(start: SystemTime, seed: u64) -> Settings {
    Settings {
        reference: None,
        mode: PlayMode::SequentialLooped,
        window: 0,
        seed,
        max_movies: None,
        max_upcoming: 3,
        start,
        end: None,
    }
}

fn file_names(paths: &[PathBuf]) -> Vec<String> {
    paths
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn a_pause_moves_the_rest_of_the_stream_packet_for_packet() {
    let Some((dir, list)) = all_clips_list("broadcast-pause", "a.mp4\nb.mov\n") else {
        eprintln!("skipped: ffmpeg is not installed");
        return;
    };
    let start = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let pause_at = start + Duration::from_millis(1_300);
    let gap = Duration::from_secs(10);
    // The same channel run straight through, for comparison.
    let mut straight = Broadcaster::new(&list, &looped_three_upcoming(start, 21), &mut opener()).unwrap();
    let mut t = start;
    let mut notes = Vec::new();
    let reference = run_until(&mut straight, &mut t, start + Duration::from_secs(3), &mut notes);

    let mut b = Broadcaster::new(&list, &looped_three_upcoming(start, 21), &mut opener()).unwrap();
    let mut now = start;
    let before = run_until(&mut b, &mut now, pause_at, &mut notes);
    assert!(!before.is_empty());
    b.pause(pause_at);
    assert!(b.is_paused());
    // Asked all through the pause, it sends nothing and asks to be asked
    // again later.
    let mut open = opener();
    let mut buf = Vec::new();
    let mut asked = pause_at;
    while asked < pause_at + gap {
        match b.next(asked, &mut open, &mut buf) {
            Step::Wait(at) => assert!(at > asked, "a wait goes forward"),
            other => panic!("paused, yet {other:?} at {asked:?}"),
        }
        asked += Duration::from_millis(700);
    }
    // A second pause changes nothing.
    b.pause(pause_at + Duration::from_secs(5));
    b.resume(pause_at + gap);
    assert!(!b.is_paused());
    let mut now = pause_at + gap;
    let after = run_until(&mut b, &mut now, start + Duration::from_secs(3) + gap, &mut notes);

    // Before the pause: what the straight run sent by then.
    let same = |a: &Sent, r: &Sent| a.track == r.track && a.header == r.header && a.payload == r.payload;
    let (ref_before, ref_after): (Vec<&Sent>, Vec<&Sent>) = reference.iter().partition(|s| s.at <= pause_at);
    assert_eq!(before.len(), ref_before.len());
    assert!(before.iter().zip(&ref_before).all(|(a, r)| same(a, r) && a.at == r.at));
    // After it: the rest of the straight run, packet for packet with the
    // same sequence numbers and timestamps (the stream goes on where it
    // stopped, and across the next movie boundaries), each the pause later
    // on the wall clock.
    assert!(ref_after.len() > 50, "{} packets", ref_after.len());
    assert_eq!(
        after.len(),
        ref_after.len(),
        "{} after, {} in the straight run",
        after.len(),
        ref_after.len()
    );
    for (a, r) in after.iter().zip(&ref_after) {
        assert!(same(a, r), "{:?} vs {:?}", a.header, r.header);
        assert_eq!(a.at, r.at + gap);
    }
    // Sender reports keep their interval, moved by the pause.
    assert_eq!(b.next_report(), straight.next_report() + gap);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_upcoming_list_follows_inserts_skips_and_reloads() {
    let Some((dir, list)) = all_clips_list("broadcast-upcoming", "a.mp4\nmismatch.mp4\nb.mov\nc.mp4\n") else {
        eprintln!("skipped: ffmpeg is not installed");
        return;
    };
    let start = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let mut b = Broadcaster::new(&list, &looped_three_upcoming(start, 3), &mut opener()).unwrap();
    let mut open = opener();
    let mut now = start;
    let mut notes = Vec::new();
    let started = |notes: &mut Vec<Note>| -> Vec<Started> {
        notes
            .drain(..)
            .filter_map(|n| match n {
                Note::Started(s) => Some(s),
                _ => None,
            })
            .collect()
    };
    run_until(&mut b, &mut now, start, &mut notes);
    let first = started(&mut notes);
    assert_eq!(first.len(), 1);
    assert_eq!(file_names(&[first[0].path.clone()]), ["a.mp4"]);
    // The movie that does not fit the reference is never listed.
    assert_eq!(file_names(&first[0].upcoming), ["b.mov", "c.mp4", "a.mp4"]);
    assert_eq!(b.upcoming(&mut open), first[0].upcoming);
    assert_eq!(
        first[0].upcoming_text,
        status::upcoming(first[0].upcoming.iter().map(PathBuf::as_path))
    );

    // An insert goes first; the rest moves down.
    b.insert_next(dir.join("c.mp4"));
    assert_eq!(file_names(&b.upcoming(&mut open)), ["c.mp4", "b.mov", "c.mp4"]);
    // Skipped to: it plays now, marked inserted, and the list is as before.
    now += Duration::from_millis(400);
    b.skip(now);
    let skipped_at = now;
    run_until(&mut b, &mut now, skipped_at, &mut notes);
    let second = started(&mut notes);
    assert_eq!(second.len(), 1);
    assert!(second[0].inserted);
    assert_eq!(second[0].start, now);
    assert_eq!(file_names(&[second[0].path.clone()]), ["c.mp4"]);
    assert_eq!(file_names(&second[0].upcoming), ["b.mov", "c.mp4", "a.mp4"]);
    // Played out on the schedule: the next is the list's own.
    let end = second[0].start + second[0].length;
    run_until(&mut b, &mut now, end, &mut notes);
    let third = started(&mut notes);
    assert_eq!(file_names(&[third[0].path.clone()]), ["b.mov"]);
    assert_eq!(file_names(&third[0].upcoming), ["c.mp4", "a.mp4", "b.mov"]);

    // A new list: what comes next is from it alone.
    std::fs::write(dir.join("tv.ply"), "*PLAY-LIST*\nc.mp4\na.mp4\n").unwrap();
    let list = Playlist::load(dir.join("tv.ply"), &mut Disk).unwrap();
    b.reload(&list);
    let upcoming = file_names(&b.upcoming(&mut open));
    assert_eq!(upcoming.len(), 3, "{upcoming:?}");
    assert!(upcoming.iter().all(|n| n == "c.mp4" || n == "a.mp4"), "{upcoming:?}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_movie_damaged_under_its_mapping_ends_and_the_next_starts_at_once() {
    let Some((dir, list)) = all_clips_list("broadcast-damaged", "a.mp4\nb.mov\n") else {
        eprintln!("skipped: ffmpeg is not installed");
        return;
    };
    // The movies the broadcaster was handed, to look at their files as
    // the library's check does.
    let opened: std::rc::Rc<std::cell::RefCell<HashMap<PathBuf, Arc<Movie>>>> = Default::default();
    let mut open = {
        let opened = opened.clone();
        move |p: &Path| {
            let m = Arc::new(Movie::open(p).map_err(|e| e.to_string())?);
            opened.borrow_mut().insert(p.to_owned(), m.clone());
            Ok::<_, String>(m)
        }
    };
    let start = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let mut b = Broadcaster::new(&list, &looped_three_upcoming(start, 8), &mut open).unwrap();
    let mut buf = Vec::new();
    let mut now = start;
    let mut sent = 0;
    while now < start + Duration::from_millis(300) {
        match b.next(now, &mut open, &mut buf) {
            Step::Packet { .. } => sent += 1,
            Step::Wait(t) => now = t,
            Step::Ended => panic!("looped"),
        }
    }
    assert!(sent > 0);
    while b.poll_note().is_some() {}
    // a.mp4 rewritten in place (its modification time moves), as an
    // operator copying over it would.
    let a = dir.join("a.mp4");
    let file = std::fs::OpenOptions::new().write(true).open(&a).unwrap();
    file.set_modified(SystemTime::now() + Duration::from_secs(60)).unwrap();
    drop(file);
    let movie = opened.borrow().get(&a).cloned().expect("a.mp4 was opened");
    assert!(movie.check_file(), "the change is seen");

    let step = b.next(now, &mut open, &mut buf);
    assert!(matches!(step, Step::Packet { .. }), "{step:?}");
    let notes: Vec<Note> = std::iter::from_fn(|| b.poll_note()).collect();
    let messages: Vec<String> = notes.iter().map(Note::message).collect();
    assert!(
        notes
            .iter()
            .any(|n| matches!(n, Note::Damaged { path, .. } if *path == a)),
        "{messages:#?}"
    );
    let next = notes
        .iter()
        .find_map(|n| match n {
            Note::Started(s) => Some(s),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{messages:#?}"));
    assert_eq!(next.path, dir.join("b.mov"), "{messages:#?}");
    assert_eq!(next.start, now, "the next movie starts at once");
    std::fs::remove_dir_all(dir).unwrap();
}
