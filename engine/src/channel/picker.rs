//! What a channel plays next: DSS's three play modes over a playlist's
//! entries, movies inserted to play next, and the upcoming list.
//!
//! - `sequential` plays the entries in list order once, then nothing.
//! - `sequential_looped` (the default, as in DSS) plays them in order for ever.
//! - `weighted_random` draws each movie with a probability proportional to its
//!   weight, among the movies that did not play within the last
//!   `recent_movies_list_size` picks (DSS's "no repeat" window: "the minimum
//!   number of files that must play before a file may be repeated").
//!
//! Given the same entries, mode and seed, a picker makes the same picks, so a
//! channel's schedule can be recomputed, tested, and shown ahead of time
//! ([`Picker::upcoming`] is the real future, for random play too).
//!
//! # Where this differs from DSS, and why
//!
//! - **Weights.** DSS's `PlaylistPicker` kept one bucket per weight, drew a
//!   random lowest bucket and then picked uniformly among the movies at or
//!   above it. A weight's effect then depends on which other weights the
//!   list holds: two movies weighted 10 and 1 play 19 to 1, not 10 to 1,
//!   and two weighted 10 and 5 play 3 to 1, not 2 to 1. Here a movie
//!   weighted 10 plays ten times as often as one weighted 1, and twice as
//!   often as one weighted 5, which is what DSS's documentation says the
//!   numbers mean ("the higher the weight, the more often the item plays").
//! - **The window is by path.** DSS's window held list entries, so a movie
//!   listed twice could play twice in a row; here a movie is one path.
//! - **A window as large as the list** made DSS run out of movies and end the
//!   broadcast (its preflight warned and shrank it to one less than the
//!   number of movies). Here it is always taken as at most one less than the
//!   number of distinct movies, so random play never stops.
//! - **Unplayable movies** (missing, damaged, not fitting the channel): the
//!   caller's `playable` callback says so at pick time, the movie is passed
//!   over and another is picked, and a skipped movie does not enter the
//!   window. If only movies inside the window are playable, the one that
//!   played longest ago plays: a channel stays on air rather than honouring
//!   the window.
//! - **Inserted movies** play before the list's next, first inserted first,
//!   as DSS's `.insertlist` did, and count in the window like any play.
//!
//! # Reloading a changed list
//!
//! [`Picker::reload`] swaps in the new entries without disturbing what plays:
//! the movie playing keeps playing (the picker never holds it), inserted
//! movies stay queued, and random play keeps its window and its generator.
//! In sequential modes the next movie is the one after the movie that played
//! last, found in the new list by path (the occurrence nearest its old place
//! when it is listed more than once); if that movie was removed, the first
//! of the movies that followed it in the old list that the new list still
//! has plays next; if none is left, play continues at the same position in
//! the new list (for `sequential_looped`, from the top when that is past the
//! end). DSS reread its list only at the end of each pass, so changes showed
//! a pass late; this rule shows them from the next movie on.

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use super::playlist::Entry;

/// DSS's `play_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlayMode {
    Sequential,
    #[default]
    SequentialLooped,
    WeightedRandom,
}

impl PlayMode {
    pub const NAMES: [&'static str; 3] = ["sequential", "sequential_looped", "weighted_random"];

    pub fn name(self) -> &'static str {
        match self {
            PlayMode::Sequential => "sequential",
            PlayMode::SequentialLooped => "sequential_looped",
            PlayMode::WeightedRandom => "weighted_random",
        }
    }
}

impl fmt::Display for PlayMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for PlayMode {
    type Err = String;

    fn from_str(s: &str) -> Result<PlayMode, String> {
        match s {
            "sequential" => Ok(PlayMode::Sequential),
            "sequential_looped" => Ok(PlayMode::SequentialLooped),
            "weighted_random" => Ok(PlayMode::WeightedRandom),
            _ => Err(format!(
                "`{s}` is not a play mode (one of {})",
                PlayMode::NAMES.join(", ")
            )),
        }
    }
}

/// Largest window kept: more recent plays than this are never compared.
pub const MAX_WINDOW: usize = 100_000;

/// SplitMix64 (Steele, Lea and Flood): any seed, zero included, gives a
/// full-period stream, and its state is one word.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0). The multiply-shift maps 2^64 values onto
    /// `n`; its bias, under n / 2^64, is far below anything a playlist's
    /// weights could show.
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// A pick: the movie, and whether it was inserted rather than chosen from
/// the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pick {
    pub entry: Entry,
    pub inserted: bool,
}

/// Chooses the channel's movies. See the module documentation for the rules.
#[derive(Debug, Clone)]
pub struct Picker {
    /// Shared, so that [`Picker::upcoming`]'s look ahead copies no list.
    entries: Arc<[Entry]>,
    mode: PlayMode,
    /// Sequential modes: the index of the next entry to try.
    cursor: usize,
    /// Sequential modes: the entry picked last, for [`Picker::reload`].
    last: Option<usize>,
    /// `sequential` only: the end of the list was reached.
    exhausted: bool,
    inserted: VecDeque<Entry>,
    /// Paths of the latest plays, newest last, at most `window` of them.
    recent: VecDeque<PathBuf>,
    /// The configured window (`recent_movies_list_size`).
    window: usize,
    /// How many distinct paths `entries` holds.
    distinct: usize,
    rng: SplitMix64,
}

fn distinct_paths(entries: &[Entry]) -> usize {
    entries.iter().map(|e| e.path.as_path()).collect::<HashSet<_>>().len()
}

impl Picker {
    /// A picker over `entries` in `mode`, with a no-repeat window of `window`
    /// plays (used by `weighted_random` only) and a seed for its choices.
    pub fn new(entries: Vec<Entry>, mode: PlayMode, window: usize, seed: u64) -> Picker {
        Picker {
            distinct: distinct_paths(&entries),
            entries: entries.into(),
            mode,
            cursor: 0,
            last: None,
            exhausted: false,
            inserted: VecDeque::new(),
            recent: VecDeque::new(),
            window: window.min(MAX_WINDOW),
            rng: SplitMix64(seed),
        }
    }

    pub fn mode(&self) -> PlayMode {
        self.mode
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Movies inserted and not played yet, next first.
    pub fn inserted(&self) -> impl Iterator<Item = &Entry> + '_ {
        self.inserted.iter()
    }

    /// The latest plays, newest first (as many as the window keeps).
    pub fn recent(&self) -> impl Iterator<Item = &Path> + '_ {
        self.recent.iter().rev().map(PathBuf::as_path)
    }

    /// The window in force: the configured one, but at most one less than
    /// the number of distinct movies, so there is always one to draw.
    pub fn effective_window(&self) -> usize {
        self.window.min(self.distinct.saturating_sub(1))
    }

    /// Whether a `sequential` list has played through (inserted movies can
    /// still play).
    pub fn is_exhausted(&self) -> bool {
        self.exhausted
    }

    /// `sequential_looped` at the top of its list with nothing inserted: the
    /// picks from here are whole passes of the list, which a schedule
    /// catching up on hours of unwatched play may skip in one step.
    pub fn at_pass_start(&self) -> bool {
        self.mode == PlayMode::SequentialLooped
            && self.inserted.is_empty()
            && (self.cursor == 0 || self.cursor >= self.entries.len())
    }

    /// Queues `entry` to play after the current movie, after any inserted
    /// before it.
    pub fn insert_next(&mut self, entry: Entry) {
        self.inserted.push_back(entry);
    }

    /// The next movie, asking `playable` about each candidate; `None` when
    /// nothing can play (a `sequential` list played through, an empty list,
    /// or every movie unplayable).
    pub fn next(&mut self, playable: &mut dyn FnMut(&Entry) -> bool) -> Option<Pick> {
        while let Some(entry) = self.inserted.pop_front() {
            if playable(&entry) {
                self.played(&entry.path);
                return Some(Pick { entry, inserted: true });
            }
        }
        let entry = match self.mode {
            PlayMode::Sequential | PlayMode::SequentialLooped => self.next_in_order(playable)?,
            PlayMode::WeightedRandom => self.next_weighted(playable)?,
        };
        self.played(&entry.path);
        Some(Pick { entry, inserted: false })
    }

    /// The next `n` picks, without making them: what [`Picker::next`] would
    /// return, as long as nothing is inserted or reloaded meanwhile.
    pub fn upcoming(&self, n: usize, playable: &mut dyn FnMut(&Entry) -> bool) -> Vec<Pick> {
        let mut ahead = self.clone();
        std::iter::from_fn(|| ahead.next(playable)).take(n).collect()
    }

    fn played(&mut self, path: &Path) {
        if self.window == 0 {
            return;
        }
        if self.recent.len() == self.window {
            self.recent.pop_front();
        }
        self.recent.push_back(path.to_owned());
    }

    fn next_in_order(&mut self, playable: &mut dyn FnMut(&Entry) -> bool) -> Option<Entry> {
        let n = self.entries.len();
        // At most one pass: a list with nothing playable must not spin.
        for _ in 0..n {
            if self.cursor >= n {
                if self.mode == PlayMode::Sequential {
                    self.exhausted = true;
                    return None;
                }
                self.cursor = 0;
            }
            let i = self.cursor;
            self.cursor += 1;
            if playable(&self.entries[i]) {
                self.last = Some(i);
                return Some(self.entries[i].clone());
            }
        }
        if self.mode == PlayMode::Sequential && self.cursor >= n {
            self.exhausted = true;
        }
        None
    }

    fn next_weighted(&mut self, playable: &mut dyn FnMut(&Entry) -> bool) -> Option<Entry> {
        let window = self.effective_window();
        // Newest first.
        let blocked: Vec<&Path> = self.recent.iter().rev().take(window).map(PathBuf::as_path).collect();
        let blocked_set: HashSet<&Path> = blocked.iter().copied().collect();
        let mut open: Vec<usize> = (0..self.entries.len())
            .filter(|&i| !blocked_set.contains(self.entries[i].path.as_path()))
            .collect();
        loop {
            let total: u64 = open.iter().map(|&i| u64::from(self.entries[i].weight)).sum();
            if total == 0 {
                break;
            }
            let mut r = self.rng.below(total);
            let mut at = 0;
            for (k, &i) in open.iter().enumerate() {
                let w = u64::from(self.entries[i].weight);
                if r < w {
                    at = k;
                    break;
                }
                r -= w;
            }
            let i = open[at];
            if playable(&self.entries[i]) {
                return Some(self.entries[i].clone());
            }
            // Every listing of an unplayable movie is out of this draw.
            let path = self.entries[i].path.clone();
            open.retain(|&j| self.entries[j].path != path);
        }
        // Nothing outside the window plays: the least recent that does.
        for path in blocked.iter().rev() {
            if let Some(e) = self.entries.iter().find(|e| e.path == *path) {
                if playable(e) {
                    return Some(e.clone());
                }
            }
        }
        None
    }

    /// Takes a changed list; see the module documentation for where play
    /// continues.
    pub fn reload(&mut self, entries: Vec<Entry>) {
        if matches!(self.mode, PlayMode::Sequential | PlayMode::SequentialLooped) {
            self.cursor = self.continue_at(&entries);
            self.last = None;
            if self.cursor < entries.len() {
                self.exhausted = false;
            }
        }
        self.distinct = distinct_paths(&entries);
        self.entries = entries.into();
    }

    /// Where the next pick starts in `new`, by the reload rule.
    fn continue_at(&self, new: &[Entry]) -> usize {
        let Some(last) = self.last else {
            return self.cursor.min(new.len());
        };
        let nearest = |path: &Path, near: usize| {
            new.iter()
                .enumerate()
                .filter(|(_, e)| e.path == path)
                .min_by_key(|(i, _)| i.abs_diff(near))
                .map(|(i, _)| i)
        };
        if let Some(i) = nearest(&self.entries[last].path, last) {
            return i + 1;
        }
        let old = self.entries.len();
        // The movies that followed it, in play order (wrapping for a loop).
        let after: Box<dyn Iterator<Item = usize>> = match self.mode {
            PlayMode::SequentialLooped => Box::new((1..old).map(|k| (last + k) % old)),
            _ => Box::new(last + 1..old),
        };
        for j in after {
            if let Some(i) = nearest(&self.entries[j].path, j) {
                return i;
            }
        }
        self.cursor.min(new.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(names: &[(&str, u8)]) -> Vec<Entry> {
        names
            .iter()
            .map(|&(n, w)| Entry {
                weight: w,
                ..Entry::new(n)
            })
            .collect()
    }

    fn names(picks: impl IntoIterator<Item = Pick>) -> Vec<String> {
        picks
            .into_iter()
            .map(|p| p.entry.path.to_str().unwrap().to_owned())
            .collect()
    }

    fn all(_: &Entry) -> bool {
        true
    }

    fn take(p: &mut Picker, n: usize) -> Vec<String> {
        names((0..n).map_while(|_| p.next(&mut all)))
    }

    #[test]
    fn play_modes_parse_by_their_dss_names() {
        for name in PlayMode::NAMES {
            assert_eq!(name.parse::<PlayMode>().unwrap().name(), name);
        }
        assert_eq!(PlayMode::default(), PlayMode::SequentialLooped);
        let err = "random".parse::<PlayMode>().unwrap_err();
        assert!(err.contains("weighted_random"), "{err}");
    }

    #[test]
    fn sequential_plays_once_and_looped_for_ever() {
        let entries = list(&[("a", 10), ("b", 1), ("c", 5)]);
        let mut once = Picker::new(entries.clone(), PlayMode::Sequential, 0, 1);
        assert_eq!(take(&mut once, 10), ["a", "b", "c"]);
        assert!(once.is_exhausted());
        assert!(once.next(&mut all).is_none());
        // An insert still plays after the end.
        once.insert_next(Entry::new("x"));
        assert_eq!(take(&mut once, 10), ["x"]);

        let mut looped = Picker::new(entries, PlayMode::SequentialLooped, 0, 1);
        assert_eq!(take(&mut looped, 7), ["a", "b", "c", "a", "b", "c", "a"]);
        assert!(!looped.is_exhausted());
    }

    #[test]
    fn unplayable_movies_are_passed_over() {
        let entries = list(&[("a", 10), ("gone", 10), ("c", 10)]);
        let mut asked = Vec::new();
        let mut playable = |e: &Entry| {
            asked.push(e.path.clone());
            e.path != Path::new("gone")
        };
        let mut p = Picker::new(entries.clone(), PlayMode::SequentialLooped, 0, 1);
        let got: Vec<_> = (0..4).map(|_| p.next(&mut playable).unwrap()).collect();
        assert_eq!(names(got), ["a", "c", "a", "c"]);
        assert_eq!(asked.iter().filter(|p| *p == Path::new("gone")).count(), 2);

        // Nothing playable: no pick, and no endless loop.
        let mut none = Picker::new(entries.clone(), PlayMode::SequentialLooped, 0, 1);
        assert!(none.next(&mut |_| false).is_none());
        let mut random = Picker::new(entries, PlayMode::WeightedRandom, 1, 1);
        assert!(random.next(&mut |_| false).is_none());
        let mut empty = Picker::new(Vec::new(), PlayMode::WeightedRandom, 3, 1);
        assert!(empty.next(&mut all).is_none());
    }

    #[test]
    fn inserted_movies_play_next_in_order() {
        let mut p = Picker::new(list(&[("a", 10), ("b", 10)]), PlayMode::SequentialLooped, 0, 1);
        assert_eq!(take(&mut p, 1), ["a"]);
        p.insert_next(Entry::new("x"));
        p.insert_next(Entry::new("missing"));
        p.insert_next(Entry::new("y"));
        let got: Vec<Pick> = (0..4)
            .map(|_| p.next(&mut |e| e.path != Path::new("missing")).unwrap())
            .collect();
        assert_eq!(
            got.iter()
                .map(|p| (p.entry.path.to_str().unwrap(), p.inserted))
                .collect::<Vec<_>>(),
            [("x", true), ("y", true), ("b", false), ("a", false)]
        );
    }

    #[test]
    fn upcoming_is_the_real_future() {
        for mode in [
            PlayMode::Sequential,
            PlayMode::SequentialLooped,
            PlayMode::WeightedRandom,
        ] {
            let mut p = Picker::new(list(&[("a", 1), ("b", 5), ("c", 10), ("d", 3)]), mode, 2, 42);
            p.next(&mut all);
            p.insert_next(Entry::new("x"));
            let ahead = names(p.upcoming(7, &mut all));
            let played = take(&mut p, 7);
            assert_eq!(ahead, played, "{mode}");
            assert_eq!(ahead[0], "x");
        }
    }

    #[test]
    fn same_seed_same_picks() {
        let entries = list(&[("a", 1), ("b", 5), ("c", 10), ("d", 3), ("e", 7)]);
        let run = |seed| {
            take(
                &mut Picker::new(entries.clone(), PlayMode::WeightedRandom, 2, seed),
                200,
            )
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    /// Upper quantile of the chi-square distribution with `df` degrees of
    /// freedom for the normal quantile `z` (Wilson and Hilferty, 1931).
    fn chi_square_quantile(df: f64, z: f64) -> f64 {
        let a = 2.0 / (9.0 * df);
        df * (1.0 - a + z * a.sqrt()).powi(3)
    }

    /// The normal quantile for a one-in-a-million chance: tests built on it
    /// fail by bad luck once in a million seeds, and fail for sure when the
    /// picker draws with other probabilities than the weights say.
    const Z: f64 = 4.753;

    /// Pearson's statistic of `counts` against the expected `p` over `n`.
    fn chi_square(counts: &[u64], p: &[f64], n: u64) -> f64 {
        counts
            .iter()
            .zip(p)
            .map(|(&o, &p)| {
                let e = p * n as f64;
                (o as f64 - e).powi(2) / e
            })
            .sum()
    }

    #[test]
    fn weighted_random_honours_the_weights() {
        let weights = [1u8, 2, 3, 5, 10, 10];
        let entries: Vec<Entry> = weights
            .iter()
            .enumerate()
            .map(|(i, &w)| Entry {
                weight: w,
                ..Entry::new(format!("m{i}"))
            })
            .collect();
        let mut p = Picker::new(entries, PlayMode::WeightedRandom, 0, 2024);
        let n = 60_000u64;
        let mut counts = [0u64; 6];
        for _ in 0..n {
            let pick = p.next(&mut all).unwrap();
            let i: usize = pick.entry.path.to_str().unwrap()[1..].parse().unwrap();
            counts[i] += 1;
        }
        let total: f64 = weights.iter().map(|&w| f64::from(w)).sum();
        let expected: Vec<f64> = weights.iter().map(|&w| f64::from(w) / total).collect();
        let limit = chi_square_quantile(5.0, Z);
        let stat = chi_square(&counts, &expected, n);
        assert!(stat < limit, "chi-square {stat:.1} >= {limit:.1}: counts {counts:?}");
        // The same test tells other distributions apart with these many
        // picks: uniform play, or DSS's bucket scheme (pick a random lowest
        // weight, then uniformly among the movies at or above it).
        let uniform = [1.0 / 6.0; 6];
        assert!(chi_square(&counts, &uniform, n) > limit);
        let dss: Vec<f64> = weights
            .iter()
            .map(|&w| {
                (1..=w)
                    .map(|low| 1.0 / 10.0 / weights.iter().filter(|&&v| v >= low).count() as f64)
                    .sum()
            })
            .collect();
        assert!((dss.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        assert!(chi_square(&counts, &dss, n) > limit);
    }

    /// With a window, each draw is proportional to the weights of the movies
    /// outside it. The counts are sums of draws with different odds, so each
    /// movie's count is held to its own expectation and variance (a sum of
    /// Bernoulli trials): |count - mean| under Z standard deviations, Z
    /// Bonferroni-corrected for the number of movies.
    #[test]
    fn weighted_random_never_repeats_within_its_window() {
        let weights = [10u8, 10, 10, 5, 2, 1, 1];
        let entries: Vec<Entry> = weights
            .iter()
            .enumerate()
            .map(|(i, &w)| Entry {
                weight: w,
                ..Entry::new(format!("m{i}"))
            })
            .collect();
        let window = 3;
        let mut p = Picker::new(entries, PlayMode::WeightedRandom, window, 99);
        let n = 30_000;
        let mut history: Vec<usize> = Vec::new();
        let mut mean = [0f64; 7];
        let mut var = [0f64; 7];
        for _ in 0..n {
            let blocked: Vec<usize> = history.iter().rev().take(window).copied().collect();
            let open_total: f64 = (0..7)
                .filter(|i| !blocked.contains(i))
                .map(|i| f64::from(weights[i]))
                .sum();
            for i in (0..7).filter(|i| !blocked.contains(i)) {
                let q = f64::from(weights[i]) / open_total;
                mean[i] += q;
                var[i] += q * (1.0 - q);
            }
            let pick = p.next(&mut all).unwrap();
            let i: usize = pick.entry.path.to_str().unwrap()[1..].parse().unwrap();
            assert!(
                !blocked.contains(&i),
                "m{i} repeated within {window} picks: {:?}",
                &history[history.len().saturating_sub(window)..]
            );
            history.push(i);
        }
        // Bonferroni: a one-in-a-million chance over seven tests.
        let z = 5.26;
        for i in 0..7 {
            let count = history.iter().filter(|&&h| h == i).count() as f64;
            let dev = (count - mean[i]).abs() / var[i].sqrt();
            assert!(
                dev < z,
                "m{i} (weight {}): {count} picks, expected {:.0} ± {:.0}",
                weights[i],
                mean[i],
                var[i].sqrt()
            );
        }
        // The window changes the shares: weight-10 movies are blocked more
        // often, so they play less than 10/39 of the time each.
        let share = history.iter().filter(|&&h| h == 0).count() as f64 / n as f64;
        assert!(share < 10.0 / 39.0 - 0.02, "{share}");
    }

    #[test]
    fn the_window_never_starves_play() {
        // A window as large as the list: DSS ended the broadcast; here it
        // shrinks to one less than the number of movies, so play rotates.
        let mut p = Picker::new(list(&[("a", 10), ("b", 1), ("c", 10)]), PlayMode::WeightedRandom, 50, 5);
        assert_eq!(p.effective_window(), 2);
        let got = take(&mut p, 30);
        assert_eq!(got.len(), 30);
        for w in got.windows(3) {
            assert!(w[0] != w[1] && w[1] != w[2] && w[0] != w[2], "{got:?}");
        }
        // A movie listed twice is one movie for the window.
        let mut dup = Picker::new(list(&[("a", 10), ("a", 10), ("b", 1)]), PlayMode::WeightedRandom, 1, 5);
        let got = take(&mut dup, 20);
        assert!(got.windows(2).all(|w| w[0] != w[1]), "{got:?}");
        // Only a movie inside the window plays: it plays.
        let mut p = Picker::new(list(&[("a", 10), ("b", 10), ("c", 10)]), PlayMode::WeightedRandom, 2, 5);
        let first = take(&mut p, 2);
        let only = first[0].clone();
        let next = p.next(&mut |e| e.path == Path::new(&only)).unwrap();
        assert_eq!(next.entry.path, Path::new(&only));
    }

    #[test]
    fn inserted_plays_count_in_the_window() {
        let mut p = Picker::new(list(&[("a", 10), ("b", 10), ("c", 10)]), PlayMode::WeightedRandom, 1, 3);
        p.next(&mut all);
        p.insert_next(Entry::new("b"));
        assert_eq!(take(&mut p, 1), ["b"]);
        let after = take(&mut p, 1);
        assert_ne!(after, ["b"]);
    }

    #[test]
    fn reload_continues_after_the_movie_that_played() {
        let mut p = Picker::new(
            list(&[("a", 10), ("b", 10), ("c", 10), ("d", 10)]),
            PlayMode::SequentialLooped,
            0,
            0,
        );
        assert_eq!(take(&mut p, 2), ["a", "b"]);
        // b moved to the end and e came in before it: play goes on after b.
        p.reload(list(&[("e", 10), ("a", 10), ("c", 10), ("b", 10)]));
        assert_eq!(take(&mut p, 3), ["e", "a", "c"]);
        // c (playing) and b removed: the first of c's old successors that
        // is left (b is gone, then e) plays next.
        p.reload(list(&[("a", 10), ("e", 10), ("f", 10)]));
        assert_eq!(take(&mut p, 3), ["e", "f", "a"]);
        // Everything replaced: same position, from the top past the end.
        p.reload(list(&[("x", 10), ("y", 10)]));
        assert_eq!(take(&mut p, 2), ["y", "x"]);
    }

    #[test]
    fn reload_of_a_finished_sequential_list_plays_what_was_added() {
        let mut p = Picker::new(list(&[("a", 10), ("b", 10)]), PlayMode::Sequential, 0, 0);
        assert_eq!(take(&mut p, 5), ["a", "b"]);
        assert!(p.is_exhausted());
        p.reload(list(&[("a", 10), ("b", 10), ("c", 10)]));
        assert!(!p.is_exhausted());
        assert_eq!(take(&mut p, 5), ["c"]);
        // A movie listed twice: the occurrence nearest the old place.
        let mut p = Picker::new(
            list(&[("a", 10), ("b", 10), ("a", 10), ("c", 10)]),
            PlayMode::Sequential,
            0,
            0,
        );
        assert_eq!(take(&mut p, 3), ["a", "b", "a"]);
        p.reload(list(&[("a", 10), ("b", 10), ("a", 10), ("d", 10), ("c", 10)]));
        assert_eq!(take(&mut p, 5), ["d", "c"]);
    }

    #[test]
    fn reload_keeps_the_random_window_and_inserts() {
        let mut p = Picker::new(
            list(&[("a", 10), ("b", 10), ("c", 10)]),
            PlayMode::WeightedRandom,
            2,
            11,
        );
        let first = take(&mut p, 2);
        p.insert_next(Entry::new("x"));
        p.reload(list(&[("a", 10), ("b", 10), ("c", 10), ("d", 1)]));
        assert_eq!(take(&mut p, 1), ["x"]);
        let recent: Vec<_> = p.recent().map(|p| p.to_str().unwrap().to_owned()).collect();
        assert_eq!(recent, ["x", first[1].as_str()]);
    }
}
