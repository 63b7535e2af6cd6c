//! Channels: playlists of movies played as never-ending live streams, the
//! job of DSS's PlaylistBroadcaster, without IO.
//!
//! - [`playlist`] reads DSS's `*PLAY-LIST*` files and M3U/M3U8 lists into an
//!   owned [`Playlist`](playlist::Playlist), with each broken line reported
//!   by file and line and skipped.
//! - [`picker`] chooses what plays next: `sequential`, `sequential_looped`
//!   and `weighted_random` with DSS's no-repeat window, deterministic for a
//!   seed; movies inserted to play next; the upcoming list; reloads.
//! - [`schedule`] puts the picks on the wall clock: what plays `now`, how far
//!   into it, and when that changes, so every viewer sees the same point.
//! - [`timeline`] keeps each track's RTP sequence numbers and timestamps
//!   continuous across movie boundaries.
//! - [`compat`] checks that a movie fits the channel's tracks and codecs
//!   (DSS's `sdp_reference_movie`), or says why not.
//! - [`config`] reads DSS broadcaster description files and holds the
//!   `[[channel]]` table of our TOML file.
//! - [`status`] writes DSS's `.current` and `.upcoming` status files' text.
//! - [`broadcast`] turns all of that into one paced RTP stream, with its
//!   SDP and RTCP sender reports: the core of `streamalot broadcast`.
//! - [`publish`] is the RTSP client that pushes such a stream to a server
//!   (ANNOUNCE, SETUP with `mode=record`, RECORD, keep-alives, TEARDOWN,
//!   Digest and Basic authentication).
//!
//! Every piece takes its inputs (file bytes, durations, `now`) from the
//! caller and returns values; the engine's channel source does the IO.

pub mod broadcast;
pub(crate) mod calendar;
pub mod compat;
pub mod config;
pub mod picker;
pub mod playlist;
pub mod publish;
pub mod schedule;
pub mod status;
pub mod timeline;

#[cfg(test)]
pub(crate) mod testing;

/// The pieces together, driven as the engine's channel source will drive
/// them: a playlist of real movies, a reference movie, a probe that opens
/// and checks each movie, the schedule on a simulated wall clock, and every
/// packet of every movie through the timeline.
#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::PathBuf;
    use std::sync::Arc;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use loader::Movie;

    use super::compat::{Fit, Layout};
    use super::picker::{Picker, PlayMode};
    use super::playlist::{Disk, Entry, Playlist};
    use super::schedule::{Now, Schedule};
    use super::testing;
    use super::timeline::{Timeline, TrackClock};

    /// What the channel source keeps: each movie opened and checked once,
    /// with how its tracks map, or `None` for one it skips (logged once).
    struct Movies {
        reference: Layout,
        open: HashMap<PathBuf, Option<(Arc<Movie>, Fit)>>,
        log: Vec<String>,
    }

    impl Movies {
        /// The schedule's probe: the movie's duration, or `None` to skip it.
        fn probe(&mut self, e: &Entry) -> Option<Duration> {
            let (reference, log) = (&self.reference, &mut self.log);
            let known = self.open.entry(e.path.clone()).or_insert_with(|| {
                let name = e.path.file_name().unwrap().to_string_lossy().into_owned();
                let movie = match Movie::open(&e.path) {
                    Ok(m) => Arc::new(m),
                    Err(err) => {
                        log.push(format!("movie {name} skipped: {err}"));
                        return None;
                    }
                };
                match reference.check(&Layout::of(&movie)) {
                    Ok(fit) => Some((movie, fit)),
                    Err(why) => {
                        log.push(format!("movie {name} skipped: {why}"));
                        None
                    }
                }
            });
            known.as_ref().map(|(m, _)| Duration::from_secs_f64(m.duration_secs()))
        }
    }

    #[test]
    fn a_looped_channel_of_real_movies() {
        let recipes = testing::looped_channel_clips();
        let Some(clips) = testing::clips(&recipes) else {
            eprintln!("skipped: ffmpeg is not installed");
            return;
        };
        let dir = testing::scratch("channel");
        for (clip, name) in clips.iter().zip(["a.mp4", "b.mov", "c.mp4", "mismatch.mp4"]) {
            std::fs::copy(clip, dir.join(name)).unwrap();
        }
        std::fs::write(
            dir.join("tv.ply"),
            "*PLAY-LIST*\na.mp4\nmissing.mp4\nb.mov\nmismatch.mp4 7\nc.mp4\n",
        )
        .unwrap();
        let list = Playlist::load(dir.join("tv.ply"), &mut Disk).unwrap();
        assert!(list.problems.is_empty(), "{:?}", list.problems);

        let reference = Layout::of(&Movie::open(dir.join("a.mp4")).unwrap());
        let mut lib = Movies {
            reference: reference.clone(),
            open: HashMap::new(),
            log: Vec::new(),
        };

        let start = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let picker = Picker::new(list.entries.clone(), PlayMode::SequentialLooped, 0, 1);
        let mut schedule = Schedule::new(picker, start, None);
        let clocks: Vec<TrackClock> = reference
            .tracks
            .iter()
            .map(|t| TrackClock {
                clock_rate: t.clock_rate,
                first_seq: 65_530,
                first_ts: u32::MAX - 40_000,
            })
            .collect();
        let mut timeline = Timeline::new(&clocks);

        let mut now: SystemTime = start;
        let mut played = Vec::new();
        let mut injected = Vec::new();
        // Per channel track: the last sequence number, and the latest
        // timestamp of the movie before (unwrapped from the base).
        let mut last_seq: Vec<Option<u16>> = vec![None; clocks.len()];
        let mut prev_max: Vec<Option<i64>> = vec![None; clocks.len()];
        while played.len() < 7 {
            let (slot, changes) = match schedule.now(now, &mut |e| lib.probe(e)) {
                Now::Playing { slot, changes, offset } => {
                    assert_eq!(offset, Duration::ZERO, "asked at each change");
                    (slot.clone(), changes)
                }
                other => panic!("{other:?}"),
            };
            let (movie, fit) = lib.open[&slot.entry.path].clone().unwrap();
            played.push(slot.entry.path.file_name().unwrap().to_string_lossy().into_owned());
            let zeros: Vec<u32> = fit
                .tracks
                .iter()
                .map(|m| movie.track(m.movie_track).unwrap().rtp_time_at(0).unwrap())
                .collect();
            assert_eq!(timeline.start_item(slot.start, &zeros), Duration::ZERO);
            injected.push(fit.tracks.iter().map(|m| m.parameter_sets.len()).sum::<usize>());
            let mut max: Vec<Option<i64>> = vec![None; clocks.len()];
            for p in movie.all_packets() {
                let p = p.unwrap();
                let Some(k) = fit.tracks.iter().position(|m| m.movie_track == p.track_id) else {
                    continue;
                };
                let (seq, ts) = timeline.packet(k, p.timestamp);
                if let Some(last) = last_seq[k] {
                    assert_eq!(seq, last.wrapping_add(1), "track {k}: no gap, no reset");
                }
                last_seq[k] = Some(seq);
                let ts = i64::from(ts.wrapping_sub(clocks[k].first_ts));
                if let Some(before) = prev_max[k] {
                    assert!(ts > before, "track {k}: {ts} after the last movie's {before}");
                }
                max[k] = Some(max[k].map_or(ts, |m| m.max(ts)));
            }
            prev_max = max;
            now = changes;
        }
        assert_eq!(played, ["a.mp4", "b.mov", "c.mp4", "a.mp4", "b.mov", "c.mp4", "a.mp4"]);
        // The resized movie's new parameter sets, and only its, to send.
        assert_eq!(injected, [0, 2, 0, 0, 2, 0, 0]);
        assert_eq!(
            lib.log,
            [
                format!(
                    "movie missing.mp4 skipped: cannot open {}: No such file or directory (os error 2)",
                    dir.join("missing.mp4").display()
                ),
                "movie mismatch.mp4 skipped: track 2 is AAC 44100 Hz stereo, the channel's is AAC 48000 Hz stereo"
                    .to_owned(),
            ]
        );
        // A viewer joining 2.5 s in sees where the schedule is.
        let mut fresh = Schedule::new(Picker::new(list.entries, PlayMode::SequentialLooped, 0, 1), start, None);
        let late = start + Duration::from_millis(2500);
        match fresh.now(late, &mut |e| lib.probe(e)) {
            Now::Playing { slot, offset, .. } => {
                assert_eq!(slot.entry.path, dir.join("c.mp4"));
                assert_eq!(offset, Duration::from_millis(500));
            }
            other => panic!("{other:?}"),
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
