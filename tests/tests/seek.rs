//! Seeking the merged hint tracks of the H.264 clip (25 fps, a key frame every
//! 25 frames, B-frames, so the video's edit list shifts it by two frames).
//!
//! A seek to npt `x` must start at the key frame at or before `x`. The
//! reference for where the key frames are is ffprobe's list of key-frame
//! packets with their presentation times (`pts_time`). That is the right
//! reference because npt is presentation time: it is what a player shows and
//! what an RTSP `Range` names, it comes from the media track (its `stss` and
//! `ctts`) with the edit list applied, and it is computed by ffmpeg's demuxer
//! rather than from the hint track the loader reads. Neither raw time in the
//! media track is npt on its own: with B-frames a key frame is shown two
//! frames after it is decoded (`ctts`), and the edit list takes those two
//! frames back off the whole track. (For ffmpeg's files the two cancel, so a
//! key frame's decode time happens to equal its npt; the test does not rely
//! on that.)
//!
//! The hint track carries its own copy of the timing (ffmpeg times each hint
//! sample by its frame's presentation time, in a 90 kHz track with its own
//! edit list), so agreement checks that the loader reads it consistently.
//! The time returned must equal a key frame's within less than a frame.
//!
//! The audio track matters here too: every audio hint sample is a sync point,
//! usually a little before the video key frame, and it must not pull the
//! start off the key frame. The audio should restart at or just before the
//! video's key frame, and the video at the key frame itself.

use std::collections::BTreeMap;

use loader::{Movie, PacketFlags};
use streamalot_tests::ffmpeg::key_frames;
use streamalot_tests::media::{media, H264_FPS, H264_GOP, H264_SECONDS};

const NANOS: i64 = 1_000_000_000;
const FRAME_NS: i64 = NANOS / H264_FPS as i64;

/// Where the first packet of each track lands after a seek.
struct FirstPacket {
    transmit_ns: i64,
    timestamp: u32,
    key: bool,
}

#[test]
fn seek_lands_on_the_key_frame_at_or_before() {
    let path = media().h264_mp4();
    let movie = Movie::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let keys = key_frames(path);
    let expected_keys: Vec<i64> = (0..H264_SECONDS * H264_FPS / H264_GOP)
        .map(|i| i64::from(i * H264_GOP) * FRAME_NS)
        .collect();
    assert_eq!(
        keys, expected_keys,
        "ffprobe should see the key frames the clip was encoded with"
    );

    let hints: Vec<_> = movie.hint_tracks().collect();
    let handler_of = |hint: &loader::Track| {
        let media_id = hint.references[0];
        movie.track(media_id).map(|t| t.handler.to_string()).unwrap_or_default()
    };
    let video = hints
        .iter()
        .find(|h| handler_of(h) == "vide")
        .expect("a video hint track");
    let audio = hints
        .iter()
        .find(|h| handler_of(h) == "soun")
        .expect("an audio hint track");
    // Audio restarts at the hint sample at or before the video key frame, and
    // ffmpeg packs several AAC frames into each audio hint sample: the slack
    // allowed before the seek point is the longest hint sample, not one AAC
    // frame.
    let audio_slack_ns = (0..audio.samples.len())
        .filter_map(|n| audio.samples.duration(n))
        .max()
        .map(|d| i64::from(d) * NANOS / i64::from(audio.timescale))
        .expect("audio hint samples");

    let mut failures = Vec::new();
    let last_key = *keys.last().expect("key frames");
    let targets: Vec<i64> = [0, 1, FRAME_NS / 2, NANOS / 2, NANOS - 1, NANOS, NANOS + 1]
        .into_iter()
        .chain([NANOS + FRAME_NS, 2 * NANOS + 3 * FRAME_NS, 3 * NANOS - FRAME_NS])
        .chain([
            last_key,
            last_key + FRAME_NS,
            i64::from(H264_SECONDS) * NANOS + NANOS,
            -NANOS,
        ])
        .collect();
    for x in targets {
        let expected = keys.iter().copied().filter(|&k| k <= x.max(0)).max().unwrap_or(0);
        let mut packets = movie.all_packets();
        let got = packets.seek(x);
        let mut first: BTreeMap<u32, FirstPacket> = BTreeMap::new();
        let mut previous_ns = i64::MIN;
        for p in packets {
            let p = p.unwrap_or_else(|e| panic!("after seek({x}): {e}"));
            if p.transmit_ns < previous_ns {
                failures.push(format!(
                    "seek({x}): packets out of transmit order: {} after {previous_ns} ns",
                    p.transmit_ns
                ));
            }
            previous_ns = p.transmit_ns;
            first.entry(p.track_id).or_insert(FirstPacket {
                transmit_ns: p.transmit_ns,
                timestamp: p.timestamp,
                key: p.flags.contains(PacketFlags::KEY),
            });
        }
        let report = format!(
            "seek({x} ns) returned {got} ns, expected key frame {expected} ns; first packets: {}",
            first
                .iter()
                .map(|(id, f)| format!("track {id} at {} ns ts {} key {}", f.transmit_ns, f.timestamp, f.key))
                .collect::<Vec<_>>()
                .join(", ")
        );
        if (got - expected).abs() >= FRAME_NS {
            failures.push(format!("{report}: wrong seek point"));
        }
        match first.get(&video.id) {
            None => failures.push(format!("{report}: no video packets")),
            Some(v) => {
                if !v.key {
                    failures.push(format!("{report}: first video packet is not from a key frame"));
                }
                if v.transmit_ns < got {
                    failures.push(format!("{report}: video starts before the seek point"));
                }
                // RTSP's RTP-Info tells the client the RTP time of the play
                // position; the key frame's packets must carry exactly that.
                let rtp_time = video.rtp_time_at(got).expect("an RTP hint track");
                if v.timestamp != rtp_time {
                    failures.push(format!(
                        "{report}: video key frame has RTP time {}, rtp_time_at(seek point) is {rtp_time}",
                        v.timestamp
                    ));
                }
            }
        }
        match first.get(&audio.id) {
            None => failures.push(format!("{report}: no audio packets")),
            Some(a) if a.transmit_ns < got - audio_slack_ns => failures.push(format!(
                "{report}: audio starts more than one audio packet ({audio_slack_ns} ns) before the seek point"
            )),
            Some(_) => {}
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
