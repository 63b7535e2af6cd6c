//! A channel's schedule on the wall clock: what plays `now`, how far into it,
//! and when that changes.
//!
//! A channel runs whether anyone watches or not: its movies follow one
//! another from its start time, each for its duration, so a viewer who
//! joins N minutes after the start lands N minutes into the schedule, and two
//! viewers who ask at the same moment get the same movie at the same offset.
//! Nothing here keeps time: the caller passes `now` each time, and the
//! schedule walks forward from where it last was, picking the movies that
//! played meanwhile (unwatched, they cost a pick and a duration each; a
//! `sequential_looped` list skips whole passes of the list at once, so a
//! channel whose start is years ago answers at once).
//!
//! Durations come from the caller's `probe`, which opens the movie (the
//! loader gives its duration) and says `None` for a movie that is missing,
//! damaged or does not fit the channel; the picker then passes it over.
//!
//! Times inside are *channel time*: the time the channel has been on air,
//! which is wall-clock time since the start except while paused (a channel
//! that runs only while watched is paused when its last viewer leaves and
//! resumed when one comes, and carries on where it stopped). A wall clock
//! that steps back never makes the schedule go back: the movie playing stays
//! the one playing.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::picker::{Pick, Picker};
use super::playlist::Entry;

/// Movies shorter than this are not played: a list of empty movies would
/// have the schedule pick thousands of them a second.
pub const MIN_LENGTH: Duration = Duration::from_millis(100);
/// When nothing in the list can play, ask again after this long.
pub const IDLE_RETRY: Duration = Duration::from_secs(10);

/// One movie on the schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// 0 for the channel's first movie, then counting up: tells a caller
    /// that the movie changed even when the same file plays again.
    pub number: u64,
    pub entry: Entry,
    pub inserted: bool,
    /// Channel time at which it starts.
    pub start: Duration,
    /// Its duration, or less when it was skipped.
    pub length: Duration,
}

impl Slot {
    pub fn end(&self) -> Duration {
        self.start + self.length
    }
}

/// What the channel is doing at some moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Now<'a> {
    /// Before the schedule's start time.
    NotStarted { starts: SystemTime },
    /// `slot` plays, `offset` into it; the answer changes at `changes` (the
    /// movie's end, or the schedule's end if sooner).
    Playing {
        slot: &'a Slot,
        offset: Duration,
        changes: SystemTime,
    },
    /// Paused (a channel that plays only while watched, unwatched), at
    /// `offset` into `slot`.
    Paused { slot: &'a Slot, offset: Duration },
    /// Nothing in the list can play just now; ask again at `retry`.
    Idle { retry: SystemTime },
    /// Past the schedule's end time, or a `sequential` list played through.
    Ended,
}

/// A pick to come and when it would start (`None` while paused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upcoming {
    pub pick: Pick,
    pub starts: Option<SystemTime>,
}

/// The schedule of one channel. See the module documentation.
#[derive(Debug, Clone)]
pub struct Schedule {
    picker: Picker,
    start: Duration,
    end: Option<Duration>,
    /// Wall-clock time (since the epoch) of channel time 0, while running.
    anchor: Duration,
    /// Channel time at which the channel was paused.
    paused: Option<Duration>,
    current: Option<Slot>,
    next_number: u64,
    /// The last answer was Idle: the next movie starts when it is picked,
    /// not back to back with the one before.
    idle: bool,
}

fn since_epoch(t: SystemTime) -> Duration {
    t.duration_since(UNIX_EPOCH).unwrap_or_default()
}

impl Schedule {
    /// A schedule that goes on air at `start` and off at `end`, picking with
    /// `picker`.
    pub fn new(picker: Picker, start: SystemTime, end: Option<SystemTime>) -> Schedule {
        let start = since_epoch(start);
        Schedule {
            picker,
            start,
            end: end.map(since_epoch),
            anchor: start,
            paused: None,
            current: None,
            next_number: 0,
            idle: false,
        }
    }

    pub fn picker(&self) -> &Picker {
        &self.picker
    }

    /// The movie on the schedule as of the last [`Schedule::now`].
    pub fn current(&self) -> Option<&Slot> {
        self.current.as_ref()
    }

    pub fn is_paused(&self) -> bool {
        self.paused.is_some()
    }

    /// Channel time at wall-clock `now`.
    pub fn channel_time(&self, now: SystemTime) -> Duration {
        match self.paused {
            Some(at) => at,
            None => since_epoch(now).saturating_sub(self.anchor),
        }
    }

    /// Wall-clock time of channel time `ct`, while running.
    fn wall(&self, ct: Duration) -> Option<SystemTime> {
        self.paused.is_none().then(|| UNIX_EPOCH + self.anchor + ct)
    }

    /// What plays at `now`, walking the schedule forward to it.
    pub fn now(&mut self, now: SystemTime, probe: &mut dyn FnMut(&Entry) -> Option<Duration>) -> Now<'_> {
        let wall = since_epoch(now);
        if wall < self.start {
            return Now::NotStarted {
                starts: UNIX_EPOCH + self.start,
            };
        }
        if self.end.is_some_and(|end| wall >= end) {
            self.current = None;
            return Now::Ended;
        }
        let ct = self.channel_time(now);
        while self.current.as_ref().is_none_or(|s| s.end() <= ct) {
            if !self.advance(ct, probe) {
                self.current = None;
                if self.picker.is_exhausted() && self.picker.inserted().next().is_none() {
                    return Now::Ended;
                }
                self.idle = true;
                return Now::Idle {
                    retry: now + IDLE_RETRY,
                };
            }
        }
        let slot = self.current.as_ref().expect("the loop leaves a slot");
        // A wall clock stepped back: the slot playing stays, from its start.
        let offset = ct.saturating_sub(slot.start);
        if self.paused.is_some() {
            return Now::Paused { slot, offset };
        }
        let mut changes = UNIX_EPOCH + self.anchor + slot.end();
        if let Some(end) = self.end {
            changes = changes.min(UNIX_EPOCH + end);
        }
        Now::Playing { slot, offset, changes }
    }

    /// Puts the next movie on the schedule after the current one (or at `ct`
    /// after an idle spell or for the first); false when none can play.
    fn advance(&mut self, ct: Duration, probe: &mut dyn FnMut(&Entry) -> Option<Duration>) -> bool {
        let mut start = match (&self.current, self.idle) {
            (Some(slot), false) => slot.end(),
            (None, false) if self.next_number == 0 => Duration::ZERO,
            _ => ct,
        };
        if self.picker.at_pass_start() && ct > start {
            start = self.skip_passes(start, ct, probe);
        }
        let mut length = Duration::ZERO;
        let mut playable = |e: &Entry| match probe(e) {
            Some(d) if d >= MIN_LENGTH => {
                length = d;
                true
            }
            _ => false,
        };
        let Some(pick) = self.picker.next(&mut playable) else {
            return false;
        };
        self.current = Some(Slot {
            number: self.next_number,
            entry: pick.entry,
            inserted: pick.inserted,
            start,
            length,
        });
        self.next_number += 1;
        self.idle = false;
        true
    }

    /// A looped list at the top of a pass, `ct - start` behind: jumps over
    /// the whole passes in between instead of picking each movie.
    fn skip_passes(
        &mut self,
        start: Duration,
        ct: Duration,
        probe: &mut dyn FnMut(&Entry) -> Option<Duration>,
    ) -> Duration {
        let (mut pass, mut movies) = (Duration::ZERO, 0u64);
        for e in self.picker.entries() {
            if let Some(d) = probe(e).filter(|&d| d >= MIN_LENGTH) {
                pass += d;
                movies += 1;
            }
        }
        if pass.is_zero() {
            return start;
        }
        let passes = (ct - start).as_nanos() / pass.as_nanos();
        if passes == 0 {
            return start;
        }
        let passes = u32::try_from(passes).unwrap_or(u32::MAX);
        self.next_number += u64::from(passes) * movies;
        start + pass * passes
    }

    /// Ends the current movie at `now`: the next one starts at once.
    pub fn skip(&mut self, now: SystemTime) {
        let ct = self.channel_time(now);
        if let Some(slot) = &mut self.current {
            slot.length = ct.saturating_sub(slot.start).min(slot.length);
        }
    }

    /// Queues a movie to play after the current one.
    pub fn insert_next(&mut self, entry: Entry) {
        self.picker.insert_next(entry);
    }

    /// Takes a changed playlist; the current movie plays on (see
    /// [`Picker::reload`] for what follows it).
    pub fn reload(&mut self, entries: Vec<Entry>) {
        self.picker.reload(entries);
    }

    /// Stops the channel's clock at `now`, in the middle of its movie.
    pub fn pause(&mut self, now: SystemTime) {
        if self.paused.is_none() {
            self.paused = Some(self.channel_time(now));
        }
    }

    /// Starts the clock again at `now`, where it stopped.
    pub fn resume(&mut self, now: SystemTime) {
        if let Some(at) = self.paused.take() {
            // Before the start, the channel time is 0 and stays 0 until then.
            self.anchor = since_epoch(now).max(self.start).saturating_sub(at);
        }
    }

    /// The next `n` movies after the current one and when each would start.
    pub fn upcoming(&self, n: usize, probe: &mut dyn FnMut(&Entry) -> Option<Duration>) -> Vec<Upcoming> {
        let mut at = self.current.as_ref().map(Slot::end);
        let mut lengths = Vec::new();
        let mut playable = |e: &Entry| match probe(e) {
            Some(d) if d >= MIN_LENGTH => {
                lengths.push(d);
                true
            }
            _ => false,
        };
        let picks = self.picker.upcoming(n, &mut playable);
        picks
            .into_iter()
            .zip(lengths)
            .map(|(pick, len)| {
                let starts = at.and_then(|ct| self.wall(ct));
                at = at.map(|ct| ct + len);
                Upcoming { pick, starts }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::picker::PlayMode;

    const T0: u64 = 1_700_000_000;

    fn at(secs: f64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(T0) + Duration::from_secs_f64(secs)
    }

    fn s(secs: f64) -> Duration {
        Duration::from_secs_f64(secs)
    }

    /// Three movies of 30, 20 and 10 seconds, plus one that is missing.
    fn probe(e: &Entry) -> Option<Duration> {
        match e.path.to_str().unwrap() {
            "a" => Some(s(30.0)),
            "b" => Some(s(20.0)),
            "c" => Some(s(10.0)),
            "tiny" => Some(s(0.01)),
            _ => None,
        }
    }

    fn schedule(names: &[&str], mode: PlayMode) -> Schedule {
        let entries = names.iter().map(|&n| Entry::new(n)).collect();
        Schedule::new(Picker::new(entries, mode, 0, 1), at(0.0), None)
    }

    /// (movie, offset in seconds, seconds until the change), or a label.
    fn look(sch: &mut Schedule, t: f64) -> (String, f64, f64) {
        match sch.now(at(t), &mut probe) {
            Now::Playing { slot, offset, changes } => (
                slot.entry.path.to_str().unwrap().to_owned(),
                offset.as_secs_f64(),
                changes.duration_since(at(t)).unwrap().as_secs_f64(),
            ),
            other => (format!("{other:?}"), 0.0, 0.0),
        }
    }

    #[test]
    fn the_schedule_follows_the_wall_clock() {
        let mut sch = schedule(&["a", "missing", "b", "c"], PlayMode::SequentialLooped);
        assert_eq!(look(&mut sch, 0.0), ("a".into(), 0.0, 30.0));
        assert_eq!(look(&mut sch, 12.5), ("a".into(), 12.5, 17.5));
        assert_eq!(look(&mut sch, 30.0), ("b".into(), 0.0, 20.0));
        // Nobody asked for a minute and a half: the channel went on anyway.
        // 0-30 a, 30-50 b, 50-60 c, 60-90 a, 90-110 b, 110-120 c, 120 a.
        assert_eq!(look(&mut sch, 115.0), ("c".into(), 5.0, 5.0));
        assert_eq!(look(&mut sch, 121.0), ("a".into(), 1.0, 29.0));
        assert_eq!(sch.current().unwrap().number, 6);
    }

    /// Two viewers who join 30 s apart, and one who joins after hours of
    /// unwatched play, all see the point the schedule has reached: the same
    /// answer as a schedule that was asked every second all along.
    #[test]
    fn late_joiners_land_where_the_schedule_is() {
        let mut watched = schedule(&["a", "b", "c"], PlayMode::SequentialLooped);
        let mut unwatched = schedule(&["a", "b", "c"], PlayMode::SequentialLooped);
        for t in 0..4000 {
            let t = f64::from(t);
            let w = look(&mut watched, t);
            if t == 1000.0 || t == 1030.0 || t == 3999.0 {
                assert_eq!(look(&mut unwatched, t), w, "at {t} s");
            }
        }
        // A pass is 60 s: at 3999 s, 39 s into the 66th pass: b at 9 s.
        assert_eq!(look(&mut unwatched, 3999.0), ("b".into(), 9.0, 11.0));
    }

    #[test]
    fn years_of_unwatched_play_are_skipped_in_passes() {
        let mut sch = schedule(&["a", "b", "c"], PlayMode::SequentialLooped);
        let mut probes = 0;
        let year = 365.25 * 86_400.0;
        let got = match sch.now(at(year + 35.0), &mut |e| {
            probes += 1;
            probe(e)
        }) {
            Now::Playing { slot, offset, .. } => (slot.entry.path.clone(), offset, slot.number),
            other => panic!("{other:?}"),
        };
        // 525960 passes of 60 s, then 35 s: b at 5 s, the 1577881st movie.
        assert_eq!(got, ("b".into(), s(5.0), 525_960 * 3 + 1));
        assert!(probes < 20, "{probes} probes");
    }

    #[test]
    fn random_play_is_the_same_for_every_late_joiner() {
        let names = ["a", "b", "c", "missing"];
        let make = || {
            let entries = names.iter().map(|&n| Entry::new(n)).collect();
            Schedule::new(Picker::new(entries, PlayMode::WeightedRandom, 1, 77), at(0.0), None)
        };
        let mut often = make();
        let mut rarely = make();
        for t in 0..3000 {
            let w = look(&mut often, f64::from(t));
            if t % 997 == 0 {
                assert_eq!(look(&mut rarely, f64::from(t)), w);
            }
        }
    }

    #[test]
    fn start_end_and_a_sequential_list_that_runs_out() {
        let entries = vec![Entry::new("a"), Entry::new("b")];
        let mut sch = Schedule::new(
            Picker::new(entries, PlayMode::Sequential, 0, 0),
            at(100.0),
            Some(at(140.0)),
        );
        assert_eq!(sch.now(at(50.0), &mut probe), Now::NotStarted { starts: at(100.0) });
        assert_eq!(look(&mut sch, 100.0), ("a".into(), 0.0, 30.0));
        // b would run to 150 s; the schedule ends at 140 s.
        assert_eq!(look(&mut sch, 135.0), ("b".into(), 5.0, 5.0));
        assert_eq!(sch.now(at(140.0), &mut probe), Now::Ended);

        let mut once = schedule(&["c", "b"], PlayMode::Sequential);
        assert_eq!(look(&mut once, 29.0), ("b".into(), 19.0, 1.0));
        assert_eq!(once.now(at(30.0), &mut probe), Now::Ended);
        // A movie inserted after the end still plays, from when it is asked.
        once.insert_next(Entry::new("c"));
        assert_eq!(look(&mut once, 45.0), ("c".into(), 0.0, 10.0));
    }

    #[test]
    fn nothing_playable_is_idle_and_play_resumes_when_it_can() {
        let mut sch = schedule(&["missing", "tiny"], PlayMode::SequentialLooped);
        assert_eq!(
            sch.now(at(5.0), &mut probe),
            Now::Idle {
                retry: at(5.0) + IDLE_RETRY
            }
        );
        // The list is fixed meanwhile; the next movie starts when asked.
        sch.reload(vec![Entry::new("c")]);
        assert_eq!(look(&mut sch, 17.0), ("c".into(), 0.0, 10.0));
        assert_eq!(look(&mut sch, 28.0), ("c".into(), 1.0, 9.0));
    }

    #[test]
    fn skip_insert_and_upcoming() {
        let mut sch = schedule(&["a", "b", "c"], PlayMode::SequentialLooped);
        assert_eq!(look(&mut sch, 10.0).0, "a");
        sch.insert_next(Entry::new("c"));
        let next: Vec<_> = sch
            .upcoming(4, &mut probe)
            .into_iter()
            .map(|u| {
                (
                    u.pick.entry.path.to_str().unwrap().to_owned(),
                    u.pick.inserted,
                    u.starts,
                )
            })
            .collect();
        assert_eq!(
            next,
            [
                ("c".into(), true, Some(at(30.0))),
                ("b".into(), false, Some(at(40.0))),
                ("c".into(), false, Some(at(60.0))),
                ("a".into(), false, Some(at(70.0))),
            ]
        );
        // Skip at 12 s: the inserted movie plays from 12 s.
        sch.skip(at(12.0));
        assert_eq!(look(&mut sch, 12.0), ("c".into(), 0.0, 10.0));
        assert!(sch.current().unwrap().inserted);
        assert_eq!(look(&mut sch, 22.0), ("b".into(), 0.0, 20.0));
    }

    #[test]
    fn pause_and_resume_carry_on_where_the_channel_stopped() {
        let mut sch = schedule(&["a", "b"], PlayMode::SequentialLooped);
        assert_eq!(look(&mut sch, 20.0).0, "a");
        sch.pause(at(20.0));
        match sch.now(at(500.0), &mut probe) {
            Now::Paused { slot, offset } => {
                assert_eq!(slot.entry.path.to_str(), Some("a"));
                assert_eq!(offset, s(20.0));
            }
            other => panic!("{other:?}"),
        }
        assert!(sch.upcoming(1, &mut probe)[0].starts.is_none());
        sch.resume(at(1000.0));
        assert_eq!(look(&mut sch, 1005.0), ("a".into(), 25.0, 5.0));
        assert_eq!(look(&mut sch, 1010.0), ("b".into(), 0.0, 20.0));
        // A channel created paused (played only while watched) starts at
        // its first viewer.
        let mut lazy = schedule(&["a"], PlayMode::SequentialLooped);
        lazy.pause(at(0.0));
        lazy.resume(at(300.0));
        assert_eq!(look(&mut lazy, 301.0), ("a".into(), 1.0, 29.0));
    }

    #[test]
    fn a_clock_stepping_back_does_not_go_back() {
        let mut sch = schedule(&["a", "b"], PlayMode::SequentialLooped);
        assert_eq!(look(&mut sch, 40.0).0, "b");
        assert_eq!(look(&mut sch, 10.0), ("b".into(), 0.0, 40.0));
        assert_eq!(look(&mut sch, 45.0), ("b".into(), 15.0, 5.0));
    }
}
