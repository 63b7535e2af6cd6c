//! A channel's RTP timeline: per track, sequence numbers and timestamps that
//! run on across movie boundaries, so players never see a jump back or a
//! reset when one movie ends and the next begins.
//!
//! Each track keeps one random sequence base and one random timestamp base
//! for the channel's life. A packet's sequence number is the track's count
//! of packets sent so far plus the base, as for video on demand: the
//! hinted numbers of each file are ignored, so
//! skipped or dropped packets never open a gap a client would count as loss.
//! A packet's timestamp is the base, plus where its movie starts on the
//! channel's clock (the channel time, in the track's RTP clock), plus its
//! hinted timestamp's distance from the movie's start (the hinted timestamp
//! minus the one at npt 0, [`loader::Track::rtp_time_at`]).
//!
//! Where a movie starts is the sum of the movies before it, each taken at its
//! *overall* duration, the same for every track. A movie's tracks rarely end
//! together (AAC runs a frame or two past the video, or the video past the
//! audio); were each track advanced by its own length, the tracks would slide
//! apart by that difference at every boundary and lip sync would drift for
//! ever. With one start for all tracks, the shorter track has a short gap at
//! the boundary instead, which players bridge. Channel time is kept in
//! nanoseconds and converted to each clock from the running total, never
//! summed in ticks, so 90 kHz video and 44.1 kHz audio cannot drift apart by
//! rounding either.
//!
//! One guard: a movie whose packets carry timestamps past its declared
//! duration (an `mvhd` shorter than a track, which muxers do write) would
//! make the next movie's first timestamps fall *before* its own last ones.
//! So when a movie starts, its start is moved later, for every track alike,
//! until it lies after every timestamp sent for the movie before. The total
//! moved is [`Timeline::lead`]: the RTP clocks run that far ahead of the
//! channel's wall-clock schedule, which no player notices but a log should.
//! A packet whose media reaches past its own timestamp (an AAC packet of
//! several frames) says how far with [`Timeline::covers`].

use std::time::Duration;

use smallvec::SmallVec;

const NS_PER_SEC: u128 = 1_000_000_000;

/// The random seeds and clock of one track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackClock {
    /// RTP clock rate, Hz (the hint track's `tims`).
    pub clock_rate: u32,
    /// Sequence number of the channel's first packet on this track.
    pub first_seq: u16,
    /// RTP timestamp of channel time 0.
    pub first_ts: u32,
}

#[derive(Debug, Clone)]
struct Line {
    clock: TrackClock,
    next_seq: u16,
    /// The hinted timestamp at the current movie's npt 0.
    zero: u32,
    /// Furthest timestamp sent in the current movie, in ticks from its start
    /// (signed: hinted timestamps may sit just before npt 0).
    furthest: Option<i64>,
    packets: u64,
}

/// The channel's continuous RTP timeline. See the module documentation.
#[derive(Debug, Clone)]
pub struct Timeline {
    lines: SmallVec<[Line; 2]>,
    /// Where the current movie's npt 0 falls, in channel nanoseconds on the
    /// RTP clocks (the schedule's start plus the lead).
    item_start_ns: u64,
    lead_ns: u64,
    started: bool,
}

/// `ns` in ticks of `clock`, floored.
fn ticks(ns: u64, clock: u32) -> u64 {
    (u128::from(ns) * u128::from(clock) / NS_PER_SEC) as u64
}

impl Timeline {
    /// A timeline for tracks with these clocks and seeds, in the channel's
    /// track order.
    pub fn new(tracks: &[TrackClock]) -> Timeline {
        Timeline {
            lines: tracks
                .iter()
                .map(|&clock| Line {
                    clock,
                    next_seq: clock.first_seq,
                    zero: 0,
                    furthest: None,
                    packets: 0,
                })
                .collect(),
            item_start_ns: 0,
            lead_ns: 0,
            started: false,
        }
    }

    pub fn tracks(&self) -> usize {
        self.lines.len()
    }

    /// Starts a movie whose npt 0 falls at channel time `at` (the
    /// schedule's slot start). `zeros` holds, per track in the channel's
    /// order (a movie's tracks map onto the channel's by
    /// [`Fit`](super::compat::Fit)), the movie's hinted timestamp at npt 0.
    /// Returns how much later than `at` it starts on the
    /// RTP clocks because the movie before ran past its end (see the module
    /// documentation); normally zero.
    pub fn start_item(&mut self, at: Duration, zeros: &[u32]) -> Duration {
        assert_eq!(zeros.len(), self.lines.len(), "one zero per track");
        let at_ns = u64::try_from(at.as_nanos()).unwrap_or(u64::MAX);
        let mut start = at_ns.saturating_add(self.lead_ns);
        if self.started {
            for line in &self.lines {
                let Some(furthest) = line.furthest else { continue };
                let clock = u128::from(line.clock.clock_rate.max(1));
                // The first tick after the furthest one sent, back in ns,
                // rounded up so that it converts to at least that tick.
                let end_ticks = i128::from(ticks(self.item_start_ns, line.clock.clock_rate)) + i128::from(furthest) + 1;
                if end_ticks <= 0 {
                    continue;
                }
                let end_ns = (end_ticks as u128 * NS_PER_SEC).div_ceil(clock);
                start = start.max(u64::try_from(end_ns).unwrap_or(u64::MAX));
            }
        }
        let pushed = start - at_ns.saturating_add(self.lead_ns);
        self.lead_ns += pushed;
        self.item_start_ns = start;
        self.started = true;
        for (line, &zero) in self.lines.iter_mut().zip(zeros) {
            line.zero = zero;
            line.furthest = None;
        }
        Duration::from_nanos(pushed)
    }

    /// The sequence number and timestamp for the next packet of `track` in
    /// the current movie, whose hinted timestamp is `hinted_ts`.
    pub fn packet(&mut self, track: usize, hinted_ts: u32) -> (u16, u32) {
        let start_ns = self.item_start_ns;
        let line = &mut self.lines[track];
        let seq = line.next_seq;
        line.next_seq = seq.wrapping_add(1);
        line.packets += 1;
        // Wrapping difference as signed: a hinted stream may wrap inside a
        // movie, and B-frames step back by a few frames.
        let rel = i64::from(hinted_ts.wrapping_sub(line.zero) as i32);
        line.furthest = Some(line.furthest.map_or(rel, |f| f.max(rel)));
        let ts = line
            .clock
            .first_ts
            .wrapping_add(ticks(start_ns, line.clock.clock_rate) as u32)
            .wrapping_add(rel as u32);
        (seq, ts)
    }

    /// Says that the packet just given for `track` carries media up to
    /// hinted timestamp `hinted_last` (its last tick), beyond its own
    /// timestamp: an AAC packet of several frames, say. The next movie then
    /// starts after that, so its first frame never overlaps this one's last.
    pub fn covers(&mut self, track: usize, hinted_last: u32) {
        let line = &mut self.lines[track];
        let rel = i64::from(hinted_last.wrapping_sub(line.zero) as i32);
        line.furthest = Some(line.furthest.map_or(rel, |f| f.max(rel)));
    }

    /// The timestamp of `track` at position `npt` of the current movie: for
    /// RTCP sender reports and `RTP-Info`, on the same mapping as packets.
    pub fn rtp_time(&self, track: usize, npt: Duration) -> u32 {
        let line = &self.lines[track];
        let npt_ns = u64::try_from(npt.as_nanos()).unwrap_or(u64::MAX);
        line.clock
            .first_ts
            .wrapping_add(ticks(self.item_start_ns, line.clock.clock_rate) as u32)
            .wrapping_add(ticks(npt_ns, line.clock.clock_rate) as u32)
    }

    /// The sequence number the next packet of `track` will carry.
    pub fn next_seq(&self, track: usize) -> u16 {
        self.lines[track].next_seq
    }

    /// Packets sent on `track` over the channel's life.
    pub fn packets(&self, track: usize) -> u64 {
        self.lines[track].packets
    }

    /// How far the RTP clocks run ahead of the schedule (see the module
    /// documentation).
    pub fn lead(&self) -> Duration {
        Duration::from_nanos(self.lead_ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    /// Video at 90 kHz, audio at 48 kHz and 44.1 kHz, with bases chosen so
    /// the numbers read easily.
    fn three() -> Timeline {
        Timeline::new(&[
            TrackClock {
                clock_rate: 90_000,
                first_seq: 100,
                first_ts: 1_000_000,
            },
            TrackClock {
                clock_rate: 48_000,
                first_seq: 200,
                first_ts: 2_000_000,
            },
            TrackClock {
                clock_rate: 44_100,
                first_seq: 300,
                first_ts: 3_000_000,
            },
        ])
    }

    #[test]
    fn movies_continue_on_each_tracks_clock() {
        let mut t = three();
        // Movie 1: hinted timestamps start at arbitrary values per track.
        assert_eq!(t.start_item(Duration::ZERO, &[5000, 777, 0]), Duration::ZERO);
        assert_eq!(t.packet(0, 5000), (100, 1_000_000));
        assert_eq!(t.packet(0, 5000 + 3600), (101, 1_003_600));
        assert_eq!(t.packet(1, 777 + 1024), (200, 2_001_024));
        assert_eq!(t.packet(2, 441_000 - 1024), (300, 3_441_000 - 1024));
        // Movie 2 starts 10 s in: 900000, 480000 and 441000 ticks later.
        assert_eq!(t.start_item(secs(10.0), &[0, 0, 0]), Duration::ZERO);
        assert_eq!(t.packet(0, 0), (102, 1_900_000));
        assert_eq!(t.packet(1, 0), (201, 2_480_000));
        assert_eq!(t.packet(2, 0), (301, 3_441_000));
        // Movie 3 at 12.5 s, with a hinted tsro of 2^31 on the video.
        t.start_item(secs(12.5), &[0x8000_0000, 0, 0]);
        assert_eq!(t.packet(0, 0x8000_0000 + 90), (103, 1_000_000 + 1_125_000 + 90));
        assert_eq!(t.packet(1, 48), (202, 2_000_000 + 600_000 + 48));
        assert_eq!(t.packet(2, 44), (302, 3_000_000 + 551_250 + 44));
        assert_eq!(t.rtp_time(2, secs(1.0)), 3_000_000 + 551_250 + 44_100);
        assert_eq!(t.lead(), Duration::ZERO);
        assert_eq!((t.packets(0), t.next_seq(0)), (4, 104));
    }

    /// Movies of a third of a second: no clock holds that in whole ticks,
    /// yet after thousands of them the tracks still agree on where each
    /// movie starts, to within one tick of each clock.
    #[test]
    fn no_drift_between_clocks() {
        let mut t = three();
        let len = Duration::from_nanos(333_333_333);
        let mut at = Duration::ZERO;
        for _ in 0..30_000 {
            t.start_item(at, &[0, 0, 0]);
            let v = t.packet(0, 0).1.wrapping_sub(1_000_000);
            let a = t.packet(1, 0).1.wrapping_sub(2_000_000);
            let c = t.packet(2, 0).1.wrapping_sub(3_000_000);
            let (v, a, c) = (
                f64::from(v) / 90_000.0,
                f64::from(a) / 48_000.0,
                f64::from(c) / 44_100.0,
            );
            assert!((v - a).abs() <= 1.0 / 48_000.0, "{v} {a}");
            assert!((v - c).abs() <= 1.0 / 44_100.0, "{v} {c}");
            assert!((v - at.as_secs_f64()).abs() <= 1.0 / 44_100.0, "{v} {at:?}");
            at += len;
        }
    }

    /// Audio longer than video in one movie: both tracks of the next movie
    /// start at the movie's overall end, so they stay in step (the video
    /// has a 60 ms gap at the boundary, the audio none).
    #[test]
    fn tracks_of_different_lengths_stay_in_sync() {
        let mut t = three();
        t.start_item(Duration::ZERO, &[0, 0, 0]);
        // Video's last frame starts at 9.96 s; audio's at 10.02 s - 1024.
        let last_video = t.packet(0, 896_400).1;
        let last_audio = t.packet(1, 480_960 - 1024).1;
        // The movie's overall duration covers the audio: 10.02 s.
        assert_eq!(t.start_item(secs(10.02), &[0, 0, 0]), Duration::ZERO);
        let first_video = t.packet(0, 0).1;
        let first_audio = t.packet(1, 0).1;
        assert_eq!(first_video.wrapping_sub(last_video), 5400, "60 ms of video gap");
        assert_eq!(first_audio.wrapping_sub(last_audio), 1024, "audio runs on");
        // Both say 10.02 s since the channel started.
        assert_eq!(first_video.wrapping_sub(1_000_000), 901_800);
        assert_eq!(first_audio.wrapping_sub(2_000_000), 480_960);
    }

    /// A movie whose audio runs past its declared duration pushes the next
    /// start later, for every track, so no timestamp goes back.
    #[test]
    fn an_overrunning_movie_pushes_the_next_one_later() {
        let mut t = three();
        t.start_item(Duration::ZERO, &[0, 0, 0]);
        let last_video = t.packet(0, 900_000 - 3600).1;
        let last_audio = t.packet(1, 480_000 + 960).1; // 20 ms past 10 s
        let pushed = t.start_item(secs(10.0), &[0, 0, 0]);
        // One tick past the audio's furthest timestamp: 480961 ticks.
        assert_eq!(
            pushed,
            Duration::from_nanos(480_961 * 1_000_000_000 / 48_000 + 1) - secs(10.0)
        );
        assert_eq!(t.lead(), pushed);
        let first_audio = t.packet(1, 0).1;
        let first_video = t.packet(0, 0).1;
        assert_eq!(first_audio.wrapping_sub(last_audio), 1);
        assert!((first_video.wrapping_sub(last_video) as i32) > 3600);
        // Still in step: both at the same channel time, within a tick.
        let v = f64::from(first_video - 1_000_000) / 90_000.0;
        let a = f64::from(first_audio - 2_000_000) / 48_000.0;
        assert!((v - a).abs() < 1.0 / 48_000.0, "{v} {a}");
        // The lead carries on to later movies.
        t.start_item(secs(20.0), &[0, 0, 0]);
        assert_eq!(t.packet(1, 0).1.wrapping_sub(2_000_000), 960_000 + 961);
    }

    /// An audio packet of ten 1024-sample frames near the end of a movie:
    /// the next movie starts after its last frame, not after its timestamp.
    #[test]
    fn a_packet_of_many_frames_pushes_the_next_movie_past_its_last() {
        let mut t = three();
        t.start_item(Duration::ZERO, &[0, 0, 0]);
        let ts = t.packet(1, 475_000).1;
        t.covers(1, 475_000 + 10 * 1024 - 1);
        t.start_item(secs(10.0), &[0, 0, 0]);
        let next = t.packet(1, 0).1;
        assert_eq!(next.wrapping_sub(ts), 10 * 1024, "right after the tenth frame");
    }

    #[test]
    fn sequence_numbers_and_timestamps_wrap() {
        let mut t = Timeline::new(&[
            TrackClock {
                clock_rate: 90_000,
                first_seq: u16::MAX - 1,
                first_ts: u32::MAX - 1000,
            },
            TrackClock {
                clock_rate: 44_100,
                first_seq: u16::MAX,
                first_ts: u32::MAX,
            },
        ]);
        let mut seen = Vec::new();
        let mut at = Duration::ZERO;
        for _ in 0..3 {
            t.start_item(at, &[u32::MAX - 10, 7]);
            for k in 0..4u32 {
                seen.push((
                    t.packet(0, (u32::MAX - 10).wrapping_add(k * 3000)),
                    t.packet(1, 7 + k * 1024),
                ));
            }
            at += secs(0.5);
        }
        let seqs: Vec<u16> = seen.iter().map(|(v, _)| v.0).collect();
        assert_eq!(&seqs[..4], [65534, 65535, 0, 1]);
        for w in seen.windows(2) {
            let ((vs0, vt0), (as0, at0)) = w[0];
            let ((vs1, vt1), (as1, at1)) = w[1];
            assert_eq!(vs1, vs0.wrapping_add(1));
            assert_eq!(as1, as0.wrapping_add(1));
            assert!((vt1.wrapping_sub(vt0) as i32) > 0, "video time goes forward");
            assert!((at1.wrapping_sub(at0) as i32) > 0, "audio time goes forward");
        }
        // Item 2's first video packet: half a second after item 1's start.
        assert_eq!(seen[4].0 .1, (u32::MAX - 1000).wrapping_add(45_000));
        assert_eq!(seen[4].1 .1, u32::MAX.wrapping_add(22_050));
    }

    /// Two real movies back to back, every packet through the timeline:
    /// sequence numbers with no gap, and each track's timestamps of the
    /// second movie all after those of the first (B-frames reorder within a
    /// movie, never across the boundary).
    #[test]
    fn real_movies_join_without_a_gap_or_a_step_back() {
        use crate::channel::testing;
        let sample = loader::Movie::open(testing::sample()).unwrap();
        let clip = testing::Clip {
            name: "h264-aac.mp4",
            args: testing::H264_AAC,
        };
        let movies: Vec<loader::Movie> = match testing::clips(&[clip]) {
            Some(paths) => vec![sample, loader::Movie::open(&paths[0]).unwrap()],
            None => {
                eprintln!("ffmpeg is not installed: the sample twice");
                vec![loader::Movie::open(testing::sample()).unwrap(), sample]
            }
        };
        let clocks: Vec<TrackClock> = movies[0]
            .hint_tracks()
            .map(|t| TrackClock {
                clock_rate: t.rtp.unwrap().rtp_timescale,
                first_seq: 65_000,
                first_ts: 4_000_000_000,
            })
            .collect();
        let mut t = Timeline::new(&clocks);
        let mut at = Duration::ZERO;
        // Per track, per movie: (first seq, last seq, min ts, max ts), with
        // timestamps unwrapped against the track's base.
        let mut spans = Vec::new();
        for movie in movies.iter().chain(movies.iter()) {
            let ids: Vec<u32> = movie.hint_tracks().map(|t| t.id).collect();
            let zeros: Vec<u32> = movie.hint_tracks().map(|t| t.rtp_time_at(0).unwrap()).collect();
            t.start_item(at, &zeros);
            let mut span: Vec<Option<(u16, u16, i64, i64)>> = vec![None; ids.len()];
            for p in movie.all_packets() {
                let p = p.unwrap();
                let k = ids.iter().position(|&id| id == p.track_id).unwrap();
                let (seq, ts) = t.packet(k, p.timestamp);
                let ts = i64::from(ts.wrapping_sub(clocks[k].first_ts) as i32);
                span[k] = Some(match span[k] {
                    None => (seq, seq, ts, ts),
                    Some((f, l, lo, hi)) => {
                        assert_eq!(seq, l.wrapping_add(1), "no gap in a movie");
                        (f, seq, lo.min(ts), hi.max(ts))
                    }
                });
            }
            spans.push(span);
            at += Duration::from_secs_f64(movie.duration_secs());
        }
        for k in 0..clocks.len() {
            for w in spans.windows(2) {
                let (_, last, _, hi) = w[0][k].unwrap();
                let (first, _, lo, _) = w[1][k].unwrap();
                assert_eq!(first, last.wrapping_add(1), "track {k}: no gap at the boundary");
                assert!(
                    lo > hi,
                    "track {k}: the next movie's earliest timestamp {lo} is after {hi}"
                );
            }
        }
    }
}
