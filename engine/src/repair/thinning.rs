//! Thinning: sending less of a video stream when its client falls behind,
//! whole frames at a time, and all of it again when the client catches up.
//!
//! Quality levels are Darwin Streaming Server's (`QTRTPFile`): all packets;
//! no B-frames; three-quarters, half or a quarter of the P-frames of each
//! group of pictures; key frames and the first P-frame after each; key
//! frames only, the floor. P-frames are dropped from the end of a group,
//! the way DSS chose them by their place between two sync samples, so
//! those kept still have every frame they refer to; once one P-frame of a
//! group is dropped, everything up to the next key frame is (a later frame
//! would refer to it), whatever the level meanwhile. B-frames refer to
//! nothing that depends on them and go first. Repeat packets (the hint
//! track's redundant copies) go at any level but the first.
//!
//! Three things move the level, each as DSS moved it:
//!
//! - **Lateness** (TCP and reliable UDP, where packets wait for the
//!   transport: DSS's `RTPStream::UpdateQualityLevel`). With the default
//!   thresholds: more than 750 ms late at a quality check (once a second of
//!   real or media time) thins one level; late and getting later thins one
//!   level every other check; more than 1.5 s late thins at once to key
//!   frames plus one P; less than 250 ms late and getting earlier thickens
//!   one level; 2 s early restores everything. A packet more than 2.5 s late
//!   (1.75 s for video) is stale and not sent at all. A client's
//!   `x-Transport-Options: late-tolerance=` moves all but the last
//!   threshold by its difference from 1.5 s.
//! - **RTCP loss** (UDP: DSS's `QTSSFlowControlModule`). Loss above 30 %
//!   in three reports in a row thins, below 5 % in six in a row thickens;
//!   a report in between starts both counts again. From all packets a thin
//!   goes to no B-frames, and from there to key frames only; thickening
//!   goes back the same two steps. Two "getting worse" reports thin, one
//!   "getting better" thickens (QuickTime's `QTSS` trend items).
//! - **A slow TCP reader's queue** (not in DSS, which let a blocked socket
//!   make packets late): above half full thin one level, at most every
//!   quarter second; above 80 % go to key frames only before it overflows;
//!   below 20 % for a second, thicken one level, and one more each quarter
//!   second it stays there.
//!
//! [`Thinning::decide`] is called for each packet before it is given a
//! sequence number: a dropped packet must take none, so that the client
//! sees contiguous numbers and counts no loss (the session's stream counts
//! the numbers, so skipping it there is all the renumbering needed).

use loader::PacketFlags;

use crate::source::Nanos;

/// Quality levels, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Quality {
    All,
    NoBFrames,
    P75,
    P50,
    P25,
    KeyPlusOneP,
    KeyOnly,
}

impl Quality {
    const LADDER: [Quality; 7] = [
        Quality::All,
        Quality::NoBFrames,
        Quality::P75,
        Quality::P50,
        Quality::P25,
        Quality::KeyPlusOneP,
        Quality::KeyOnly,
    ];

    /// The level's name, for the admin API.
    pub fn name(self) -> &'static str {
        match self {
            Quality::All => "all",
            Quality::NoBFrames => "no-b-frames",
            Quality::P75 => "p-frames-75",
            Quality::P50 => "p-frames-50",
            Quality::P25 => "p-frames-25",
            Quality::KeyPlusOneP => "key-plus-one-p",
            Quality::KeyOnly => "key-frames-only",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// One level thinner, down to `floor`.
    pub fn thinner(self, floor: Quality) -> Quality {
        Quality::LADDER[(self.index() + 1).min(floor.index()).max(self.index())]
    }

    /// One level thicker.
    pub fn thicker(self) -> Quality {
        Quality::LADDER[self.index().saturating_sub(1)]
    }

    /// The share of a group's P-frames kept, in percent of its frames.
    fn p_target(self) -> Option<u32> {
        match self {
            Quality::P75 => Some(75),
            Quality::P50 => Some(50),
            Quality::P25 => Some(25),
            _ => None,
        }
    }
}

/// Thresholds; the defaults are DSS's preferences.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ThinningConfig {
    /// `drop_all_packets_delay` and `drop_all_video_delay`, ms.
    pub drop_all_ms: i64,
    pub drop_all_video_ms: i64,
    /// `thin_all_the_way_delay`, `always_thin_delay`,
    /// `start_thinning_delay`, `start_thicking_delay`,
    /// `thick_all_the_way_delay`, ms.
    pub thin_all_the_way_ms: i64,
    pub always_thin_ms: i64,
    pub start_thinning_ms: i64,
    pub start_thicking_ms: i64,
    pub thick_all_the_way_ms: i64,
    /// `quality_check_interval`, ms.
    pub check_interval_ms: i64,
    /// The client's late tolerance (`x-Transport-Options`); DSS's default
    /// is 1.5 s, which leaves the thresholds as they are.
    pub late_tolerance: Option<f64>,
    /// `QTSSFlowControlModule`: `loss_thin_tolerance`,
    /// `num_losses_to_thin`, `loss_thick_tolerance`,
    /// `num_losses_to_thick`, `num_worses_to_thin`.
    pub loss_thin_percent: f32,
    pub losses_to_thin: u32,
    pub loss_thick_percent: f32,
    pub losses_to_thick: u32,
    pub worses_to_thin: u32,
    /// Queue fill (0..1): thin above, key frames only above, thicken below.
    pub queue_thin: f32,
    pub queue_floor: f32,
    pub queue_thick: f32,
}

impl Default for ThinningConfig {
    fn default() -> ThinningConfig {
        ThinningConfig {
            drop_all_ms: 2500,
            drop_all_video_ms: 1750,
            thin_all_the_way_ms: 1500,
            always_thin_ms: 750,
            start_thinning_ms: 0,
            start_thicking_ms: 250,
            thick_all_the_way_ms: -2000,
            check_interval_ms: 1000,
            late_tolerance: None,
            loss_thin_percent: 30.0,
            losses_to_thin: 3,
            loss_thick_percent: 5.0,
            losses_to_thick: 6,
            worses_to_thin: 2,
            queue_thin: 0.5,
            queue_floor: 0.8,
            queue_thick: 0.2,
        }
    }
}

/// How often a filling queue may thin again, and how long it must stay
/// low before the stream thickens.
const QUEUE_THIN_EVERY_MS: i64 = 250;
const QUEUE_CALM_MS: i64 = 1000;

/// What a client said of its reception trend (QuickTime's `QTSS` report).
pub use proto::qtss::Trend;

/// Whether to send a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Send,
    /// Leave it out, before it takes a sequence number.
    Drop,
}

/// What thinning did to a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThinningStats {
    pub packets_dropped: u64,
    pub frames_dropped: u64,
    /// Packets (or frames, for video) too late to send at all.
    pub stale_dropped: u64,
    pub thinned: u64,
    pub thickened: u64,
    /// The thinnest level the stream was at.
    pub lowest: Quality,
}

/// The lateness rule's state (DSS kept it per session; a session's
/// streams share their transport, so they see the same lateness).
#[derive(Debug, Clone)]
struct Lateness {
    /// Real and media time of the last quality check, ms.
    last_check: Option<(i64, i64)>,
    last_delay: i64,
    started: bool,
    wait: bool,
}

/// One stream's thinning. See the module documentation.
#[derive(Debug, Clone)]
pub struct Thinning {
    cfg: ThinningConfig,
    video: bool,
    level: Quality,
    late: Lateness,
    play_start_ms: i64,
    stale: bool,
    above: u32,
    below: u32,
    worses: u32,
    queue_last_thin_ms: Option<i64>,
    queue_calm_since_ms: Option<i64>,
    /// Timestamp and verdict of the frame being sent.
    frame: Option<(u32, Verdict)>,
    last_marker: bool,
    /// Frames counted in the group so far, its key frame included.
    in_group: u32,
    p_in_group: u32,
    group_len: Option<u32>,
    group_broken: bool,
    stats: ThinningStats,
}

fn ms(t: Nanos) -> i64 {
    (t / 1_000_000).min(i64::MAX as u64) as i64
}

impl Thinning {
    /// Thinning for a stream; only a video stream drops frames by level
    /// (DSS thinned only video tracks), any stream drops stale packets.
    pub fn new(cfg: ThinningConfig, video: bool) -> Thinning {
        Thinning {
            cfg,
            video,
            level: Quality::All,
            late: Lateness {
                last_check: None,
                last_delay: 0,
                started: false,
                wait: true,
            },
            play_start_ms: 0,
            stale: false,
            above: 0,
            below: 0,
            worses: 0,
            queue_last_thin_ms: None,
            queue_calm_since_ms: None,
            frame: None,
            last_marker: false,
            in_group: 0,
            p_in_group: 0,
            group_len: None,
            group_broken: false,
            stats: ThinningStats {
                packets_dropped: 0,
                frames_dropped: 0,
                stale_dropped: 0,
                thinned: 0,
                thickened: 0,
                lowest: Quality::All,
            },
        }
    }

    pub fn level(&self) -> Quality {
        self.level
    }

    pub fn stats(&self) -> ThinningStats {
        self.stats
    }

    fn set_level(&mut self, level: Quality) {
        if level > self.level {
            self.stats.thinned += 1;
        } else if level < self.level {
            self.stats.thickened += 1;
        }
        self.level = level;
        self.stats.lowest = self.stats.lowest.max(level);
    }

    /// A threshold moved by the client's late tolerance.
    fn adjusted(&self, ms: i64) -> i64 {
        let tolerance = self.cfg.late_tolerance.unwrap_or(1.5);
        ms - (1500 - (tolerance * 1000.0) as i64)
    }

    /// PLAY: lateness counts from here; packets due before it (a
    /// prebuffer burst) do not count (DSS: `inTransmitTime <= playTime`).
    pub fn play(&mut self, now: Nanos) {
        self.play_start_ms = ms(now);
        self.late.last_check = None;
        self.late.started = false;
    }

    /// How late the next packet goes: due at `due`, sent at `now`.
    /// Updates the level by DSS's lateness rule, and marks the packet
    /// stale when it is past use.
    pub fn on_lateness(&mut self, due: Nanos, now: Nanos) {
        let (transmit, now_ms) = (ms(due), ms(now));
        let delay = now_ms - transmit;
        self.stale = false;
        if transmit <= self.play_start_ms {
            return;
        }
        let Some((check_ms, check_media)) = self.late.last_check else {
            self.late.last_check = Some((now_ms, transmit));
            self.late.last_delay = delay;
            return;
        };
        if !self.late.started {
            // Behind but not falling further behind: no thinning yet.
            if delay > self.adjusted(self.cfg.start_thinning_ms) && delay - self.late.last_delay < 250 {
                self.late.last_delay = self.late.last_delay.min(delay);
                return;
            }
            self.late.started = true;
        }
        if delay > self.adjusted(self.cfg.thin_all_the_way_ms) {
            self.late.last_check = Some((now_ms, transmit));
            self.late.last_delay = delay;
            // DSS's floor for lateness: key frames and one P-frame.
            if self.level < Quality::KeyPlusOneP {
                self.set_level(Quality::KeyPlusOneP);
            }
            let drop_all = if self.video {
                self.cfg.drop_all_video_ms
            } else {
                self.cfg.drop_all_ms
            };
            self.stale = delay > self.adjusted(drop_all);
            return;
        }
        let interval = self.cfg.check_interval_ms;
        if now_ms - check_ms <= interval && transmit - check_media <= interval {
            return;
        }
        let floor = Quality::KeyPlusOneP;
        if delay > self.adjusted(self.cfg.always_thin_ms) {
            self.set_level(self.level.thinner(floor));
        } else if delay > self.adjusted(self.cfg.start_thinning_ms) && delay > self.late.last_delay {
            if !self.late.wait {
                self.set_level(self.level.thinner(floor));
                self.late.wait = true;
            } else {
                self.late.wait = false;
            }
        }
        // DSS thickened only a session getting earlier, and restored all at
        // 2 s early, which its overbuffering made every reliable session;
        // one sent at real time (no burst) is on time, never earlier, and
        // would stay thin for ever. On time counts as clear here too.
        if delay < self.adjusted(self.cfg.start_thicking_ms)
            && self.level > Quality::All
            && (delay < self.late.last_delay || delay <= self.adjusted(self.cfg.start_thinning_ms))
        {
            self.set_level(self.level.thicker());
            self.late.wait = true;
        }
        if delay < self.cfg.thick_all_the_way_ms {
            self.set_level(Quality::All);
            self.late.wait = false;
        }
        self.late.last_delay = delay;
        self.late.last_check = Some((now_ms, transmit));
    }

    /// An RTCP report's loss (percent: an RR's fraction lost times 100/256,
    /// or a `QTSS` report's `ls`) and trend, if it said one.
    pub fn on_loss_report(&mut self, percent_lost: f32, trend: Option<Trend>) {
        let mut thin = false;
        let mut thick = false;
        let (mut keep_above, mut keep_below) = (false, false);
        if percent_lost > self.cfg.loss_thin_percent {
            self.above += 1;
            if self.above >= self.cfg.losses_to_thin {
                thin = true;
            } else {
                keep_above = true;
            }
        } else if percent_lost < self.cfg.loss_thick_percent {
            self.below += 1;
            if self.below >= self.cfg.losses_to_thick {
                thick = true;
            } else {
                keep_below = true;
            }
        }
        // DSS counted ":|" (the same) as getting worse, like ":(".
        if matches!(trend, Some(Trend::Worse | Trend::Same)) {
            self.worses += 1;
            if self.worses >= self.cfg.worses_to_thin {
                thin = true;
            }
        }
        if trend == Some(Trend::Better) {
            thick = true;
        }
        if thin || thick {
            // DSS's two steps each way: all, no B-frames, key frames only.
            let level = if thin {
                match self.level {
                    Quality::All => Quality::NoBFrames,
                    _ => Quality::KeyOnly,
                }
            } else {
                match self.level {
                    Quality::All | Quality::NoBFrames => Quality::All,
                    _ => Quality::NoBFrames,
                }
            };
            self.set_level(level);
            self.worses = 0;
            keep_above = false;
            keep_below = false;
        }
        if !keep_above {
            self.above = 0;
        }
        if !keep_below {
            self.below = 0;
        }
    }

    /// How full a TCP session's queue is (0 to 1), at `now`.
    pub fn on_queue(&mut self, fill: f32, now: Nanos) {
        let now_ms = ms(now);
        if fill >= self.cfg.queue_floor {
            self.set_level(Quality::KeyOnly);
            self.queue_last_thin_ms = Some(now_ms);
            self.queue_calm_since_ms = None;
        } else if fill >= self.cfg.queue_thin {
            if self
                .queue_last_thin_ms
                .is_none_or(|t| now_ms - t >= QUEUE_THIN_EVERY_MS)
            {
                self.set_level(self.level.thinner(Quality::KeyOnly));
                self.queue_last_thin_ms = Some(now_ms);
            }
            self.queue_calm_since_ms = None;
        } else if fill <= self.cfg.queue_thick {
            let since = *self.queue_calm_since_ms.get_or_insert(now_ms);
            if now_ms - since >= QUEUE_CALM_MS && self.level > Quality::All {
                self.set_level(self.level.thicker());
                // Still calm a quarter second on: the next level. A reader
                // that has caught up is back to full quality in a second
                // and a half, not six.
                self.queue_calm_since_ms = Some(now_ms - QUEUE_CALM_MS + QUEUE_THIN_EVERY_MS);
            }
        } else {
            self.queue_calm_since_ms = None;
        }
    }

    /// Whether to send the next packet: its RTP timestamp and marker as
    /// the source has them, and the hint track's flags. Packets of one
    /// frame (one timestamp, up to a marker) get the verdict of its first.
    pub fn decide(&mut self, timestamp: u32, marker: bool, flags: PacketFlags) -> Verdict {
        let stale = std::mem::take(&mut self.stale);
        if !self.video {
            return self.count(if stale { Verdict::Drop } else { Verdict::Send }, stale, true);
        }
        let new_frame = match self.frame {
            Some((ts, _)) => ts != timestamp || self.last_marker,
            None => true,
        };
        self.last_marker = marker;
        if !new_frame {
            let (_, verdict) = self.frame.expect("checked above");
            // A repeat packet goes at any level but the first.
            if verdict == Verdict::Send && self.level > Quality::All && flags.contains(PacketFlags::REPEAT) {
                return self.count(Verdict::Drop, false, false);
            }
            return self.count(verdict, false, false);
        }
        let verdict = self.frame_verdict(flags, stale);
        self.frame = Some((timestamp, verdict));
        if verdict == Verdict::Send && self.level > Quality::All && flags.contains(PacketFlags::REPEAT) {
            return self.count(Verdict::Drop, false, false);
        }
        self.count(verdict, stale, true)
    }

    fn count(&mut self, verdict: Verdict, stale: bool, first: bool) -> Verdict {
        if verdict == Verdict::Drop {
            self.stats.packets_dropped += 1;
            if stale && first {
                self.stats.stale_dropped += 1;
            }
            if first && self.video {
                self.stats.frames_dropped += 1;
            }
        }
        verdict
    }

    fn frame_verdict(&mut self, flags: PacketFlags, stale: bool) -> Verdict {
        if flags.contains(PacketFlags::KEY) {
            if self.in_group > 0 {
                self.group_len = Some(self.in_group);
            }
            self.in_group = 1;
            self.p_in_group = 0;
            self.group_broken = stale;
            return if stale { Verdict::Drop } else { Verdict::Send };
        }
        let index = self.in_group;
        self.in_group = self.in_group.saturating_add(1);
        let b_frame = flags.contains(PacketFlags::B_FRAME);
        if stale || self.group_broken {
            // A stale reference frame takes what follows it along.
            if !b_frame {
                self.group_broken = true;
            }
            return Verdict::Drop;
        }
        if b_frame {
            return if self.level >= Quality::NoBFrames {
                Verdict::Drop
            } else {
                Verdict::Send
            };
        }
        let p_index = self.p_in_group;
        self.p_in_group += 1;
        let keep = match self.level {
            Quality::All | Quality::NoBFrames => true,
            Quality::P75 | Quality::P50 | Quality::P25 => match (self.group_len, self.level.p_target()) {
                // Where it sits between two key frames, as DSS measured.
                (Some(len), Some(target)) if len > 0 => index * 100 / len <= target,
                // The first group's length is not known yet: keep it.
                _ => true,
            },
            Quality::KeyPlusOneP => p_index == 0,
            Quality::KeyOnly => false,
        };
        if keep {
            Verdict::Send
        } else {
            self.group_broken = true;
            Verdict::Drop
        }
    }
}

/// A receiver report's fraction lost (1/256) in percent.
pub fn percent(fraction_lost: u8) -> f32 {
    f32::from(fraction_lost) * 100.0 / 256.0
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Nanos = 1_000_000;

    fn flags(key: bool, b: bool) -> PacketFlags {
        let mut f = PacketFlags::empty();
        f.set(PacketFlags::KEY, key);
        f.set(PacketFlags::B_FRAME, b);
        f
    }

    /// A group of pictures in decode order, as a hinted H.264 movie with
    /// B-frames has it: I P B B P B B ..., `frames` frames, each of
    /// `packets` packets (the last with the marker). Returns (timestamp,
    /// marker, flags, frame index, kind).
    fn group(first_ts: u32, frames: u32, packets: u32) -> Vec<(u32, bool, PacketFlags, u32, char)> {
        let mut out = Vec::new();
        for i in 0..frames {
            let kind = if i == 0 {
                'I'
            } else if i % 3 == 1 {
                'P'
            } else {
                'B'
            };
            for p in 0..packets {
                out.push((
                    first_ts + i * 3000,
                    p + 1 == packets,
                    flags(kind == 'I', kind == 'B'),
                    i,
                    kind,
                ));
            }
        }
        out
    }

    /// Plays `groups` groups of `frames` frames through `t` and returns,
    /// per group, the frames sent (by index) and checks whole frames went
    /// or stayed together.
    fn play(t: &mut Thinning, groups: u32, frames: u32) -> Vec<Vec<(u32, char)>> {
        let mut out = Vec::new();
        for g in 0..groups {
            let mut sent = Vec::new();
            let mut by_frame: std::collections::BTreeMap<u32, Vec<Verdict>> = Default::default();
            for (ts, marker, f, index, kind) in group(g * frames * 3000, frames, 3) {
                let v = t.decide(ts, marker, f);
                by_frame.entry(index).or_default().push(v);
                if v == Verdict::Send && !sent.contains(&(index, kind)) {
                    sent.push((index, kind));
                }
            }
            for (index, verdicts) in by_frame {
                assert!(
                    verdicts.windows(2).all(|w| w[0] == w[1]),
                    "frame {index} split: {verdicts:?}"
                );
            }
            out.push(sent);
        }
        out
    }

    fn kinds(frames: &[(u32, char)]) -> String {
        frames.iter().map(|(_, k)| k).collect()
    }

    #[test]
    fn each_level_keeps_what_it_should_and_whole_frames() {
        // Groups of 12: I P B B P B B P B B P B.
        let want = [
            (Quality::All, "IPBBPBBPBBPB"),
            (Quality::NoBFrames, "IPPPP"),
            // P-frames at 1, 4, 7, 10 of 12: 8 %, 33 %, 58 %, 83 %.
            (Quality::P75, "IPPP"),
            (Quality::P50, "IPP"),
            (Quality::P25, "IP"),
            (Quality::KeyPlusOneP, "IP"),
            (Quality::KeyOnly, "I"),
        ];
        for (level, frames) in want {
            let mut t = Thinning::new(ThinningConfig::default(), true);
            t.set_level(level);
            let groups = play(&mut t, 3, 12);
            // The first group's length is learnt from it: the P-percentage
            // levels keep all its P-frames.
            if level.p_target().is_some() {
                assert_eq!(kinds(&groups[0]), "IPPPP", "{level:?}");
            }
            assert_eq!(kinds(&groups[2]), frames, "{level:?}");
        }
    }

    #[test]
    fn a_dropped_p_frame_takes_the_rest_of_its_group() {
        let mut t = Thinning::new(ThinningConfig::default(), true);
        t.set_level(Quality::KeyPlusOneP);
        let g = play(&mut t, 1, 12);
        assert_eq!(kinds(&g[0]), "IP");
        // Back to everything in the middle of a group: the frames after the
        // drop still wait for the next key frame.
        let mut t = Thinning::new(ThinningConfig::default(), true);
        t.set_level(Quality::KeyOnly);
        let mut sent = Vec::new();
        for (i, (ts, marker, f, index, kind)) in group(0, 12, 2).into_iter().enumerate() {
            if i == 6 {
                t.set_level(Quality::All);
            }
            if t.decide(ts, marker, f) == Verdict::Send && !sent.contains(&(index, kind)) {
                sent.push((index, kind));
            }
        }
        assert_eq!(kinds(&sent), "I");
        let g = play(&mut t, 1, 12);
        assert_eq!(kinds(&g[0]), "IPBBPBBPBBPB");
        let st = t.stats();
        assert_eq!(st.frames_dropped, 11);
        assert_eq!(st.packets_dropped, 22);
    }

    #[test]
    fn repeat_packets_go_when_thinning() {
        let mut t = Thinning::new(ThinningConfig::default(), true);
        let mut repeat = flags(true, false);
        repeat.set(PacketFlags::REPEAT, true);
        assert_eq!(t.decide(0, false, flags(true, false)), Verdict::Send);
        assert_eq!(
            t.decide(0, true, repeat),
            Verdict::Send,
            "all packets at the first level"
        );
        t.set_level(Quality::NoBFrames);
        assert_eq!(t.decide(3000, false, flags(true, false)), Verdict::Send);
        assert_eq!(t.decide(3000, true, repeat), Verdict::Drop);
    }

    #[test]
    fn audio_is_never_thinned_only_stale_packets_go() {
        let mut t = Thinning::new(ThinningConfig::default(), false);
        t.set_level(Quality::KeyOnly);
        for ts in 0..10 {
            assert_eq!(t.decide(ts * 1024, true, PacketFlags::empty()), Verdict::Send);
        }
    }

    /// Feeds lateness `delay_ms` for packets every 10 ms of real time for
    /// `for_ms`, from real time `from_ms` (play at 0).
    fn late_for(t: &mut Thinning, from_ms: u64, for_ms: u64, delay_ms: i64) {
        for now in (from_ms..from_ms + for_ms).step_by(10) {
            let due = (now as i64 - delay_ms).max(1) as u64;
            t.on_lateness(due * MS, now * MS);
        }
    }

    #[test]
    fn lateness_thins_at_750ms_and_thickens_when_it_clears() {
        let mut t = Thinning::new(ThinningConfig::default(), true);
        t.play(0);
        late_for(&mut t, 1000, 1000, 100);
        assert_eq!(t.level(), Quality::All, "100 ms late is fine");
        // 800 ms late: one level at each check, a second apart (at 2.01,
        // 3.02 and 4.03 s).
        late_for(&mut t, 2000, 3000, 800);
        assert_eq!(t.level(), Quality::P50);
        // 1.6 s: at once to key frames and one P.
        late_for(&mut t, 5000, 20, 1600);
        assert_eq!(t.level(), Quality::KeyPlusOneP);
        // Catching up: under 250 ms late and getting earlier, a level at
        // each check.
        for (i, delay) in [200, 150, 100, 50].into_iter().enumerate() {
            late_for(&mut t, 5020 + i as u64 * 1010, 1010, delay);
        }
        assert_eq!(t.level(), Quality::NoBFrames);
        // 2 s early: everything at once.
        late_for(&mut t, 9200, 1100, -2100);
        assert_eq!(t.level(), Quality::All);
        let st = t.stats();
        assert_eq!(st.lowest, Quality::KeyPlusOneP);
        assert!(st.thinned >= 3 && st.thickened >= 4, "{st:?}");
    }

    #[test]
    fn late_and_getting_later_thins_every_other_check() {
        let mut t = Thinning::new(ThinningConfig::default(), true);
        t.play(0);
        late_for(&mut t, 1000, 10, 100);
        // 300 ms late, later each second by 100 ms: checks at 1 s intervals
        // alternate waiting and thinning.
        // The first step is too small to start (behind, not falling
        // behind); then a check waits, the next thins, and so on.
        for i in 0..5u64 {
            late_for(&mut t, 1010 + i * 1010, 1010, 300 + i as i64 * 100);
        }
        assert_eq!(t.level(), Quality::P75);
    }

    #[test]
    fn stale_packets_are_dropped_as_whole_frames() {
        let mut t = Thinning::new(ThinningConfig::default(), true);
        t.play(0);
        late_for(&mut t, 1000, 100, 100);
        // 2 s late video is past 1.75 s: its frame goes.
        t.on_lateness(1100 * MS, 3100 * MS);
        assert_eq!(t.decide(9000, false, flags(false, false)), Verdict::Drop);
        // The frame's other packets with it, however late they are.
        assert_eq!(t.decide(9000, true, flags(false, false)), Verdict::Drop);
        assert_eq!(t.stats().stale_dropped, 1);
        // Audio: 2 s is within its 2.5 s.
        let mut a = Thinning::new(ThinningConfig::default(), false);
        a.play(0);
        late_for(&mut a, 1000, 100, 100);
        a.on_lateness(1100 * MS, 3100 * MS);
        assert_eq!(a.decide(0, true, PacketFlags::empty()), Verdict::Send);
        a.on_lateness(1100 * MS, 3700 * MS);
        assert_eq!(a.decide(1, true, PacketFlags::empty()), Verdict::Drop);
        // Packets due before PLAY (a prebuffer burst) never count as late.
        let mut p = Thinning::new(ThinningConfig::default(), false);
        p.play(10_000 * MS);
        p.on_lateness(5000 * MS, 10_000 * MS);
        assert_eq!(p.decide(0, true, PacketFlags::empty()), Verdict::Send);
    }

    #[test]
    fn late_tolerance_moves_the_thresholds() {
        // 1.6 s late all of a sudden: past the 1.5 s of "thin all the way"
        // for a client with the default tolerance...
        let run = |tolerance: Option<f64>| {
            let cfg = ThinningConfig {
                late_tolerance: tolerance,
                ..ThinningConfig::default()
            };
            let mut t = Thinning::new(cfg, true);
            t.play(0);
            late_for(&mut t, 1000, 10, 0);
            late_for(&mut t, 1010, 4000, 1600);
            t.level()
        };
        assert_eq!(run(None), Quality::KeyPlusOneP);
        assert_eq!(run(Some(1.5)), Quality::KeyPlusOneP);
        // ...but not for one that tolerates 3 s, whose thresholds are 1.5 s
        // later: 1.6 s is below its "always thin" 2.25 s.
        assert_eq!(run(Some(3.0)), Quality::All);
    }

    #[test]
    fn loss_thins_after_three_bad_reports_and_thickens_after_six_good() {
        let mut t = Thinning::new(ThinningConfig::default(), true);
        // Two bad reports, a middling one: the count starts again.
        for loss in [40.0, 35.0, 10.0, 40.0, 40.0] {
            t.on_loss_report(loss, None);
        }
        assert_eq!(t.level(), Quality::All);
        t.on_loss_report(31.0, None);
        assert_eq!(t.level(), Quality::NoBFrames);
        for _ in 0..3 {
            t.on_loss_report(50.0, None);
        }
        assert_eq!(t.level(), Quality::KeyOnly);
        // Six quiet reports for each step back.
        for _ in 0..5 {
            t.on_loss_report(1.0, None);
        }
        assert_eq!(t.level(), Quality::KeyOnly);
        t.on_loss_report(1.0, None);
        assert_eq!(t.level(), Quality::NoBFrames);
        for _ in 0..6 {
            t.on_loss_report(0.0, None);
        }
        assert_eq!(t.level(), Quality::All);
        // From an RR: 30 % is a fraction of 77/256 (30.08 %).
        assert!(percent(77) > 30.0 && percent(76) < 30.0);
    }

    #[test]
    fn trends_move_the_level_too() {
        let mut t = Thinning::new(ThinningConfig::default(), true);
        t.on_loss_report(10.0, Some(Trend::Worse));
        assert_eq!(t.level(), Quality::All);
        t.on_loss_report(10.0, Some(Trend::Same));
        assert_eq!(t.level(), Quality::NoBFrames, "DSS took ':|' for worse");
        t.on_loss_report(10.0, Some(Trend::Better));
        assert_eq!(t.level(), Quality::All);
    }

    #[test]
    fn a_filling_tcp_queue_thins_before_it_overflows() {
        let mut t = Thinning::new(ThinningConfig::default(), true);
        t.on_queue(0.6, 0);
        assert_eq!(t.level(), Quality::NoBFrames);
        // Not again within a quarter second.
        t.on_queue(0.6, 100 * MS);
        assert_eq!(t.level(), Quality::NoBFrames);
        t.on_queue(0.6, 250 * MS);
        assert_eq!(t.level(), Quality::P75);
        // Nearly full: key frames only at once.
        t.on_queue(0.85, 300 * MS);
        assert_eq!(t.level(), Quality::KeyOnly);
        // Drained: a level per quiet second.
        t.on_queue(0.1, 1000 * MS);
        t.on_queue(0.1, 1900 * MS);
        assert_eq!(t.level(), Quality::KeyOnly);
        t.on_queue(0.1, 2000 * MS);
        assert_eq!(t.level(), Quality::KeyPlusOneP);
        // Then a level per quiet quarter second.
        t.on_queue(0.1, 2100 * MS);
        assert_eq!(t.level(), Quality::KeyPlusOneP);
        t.on_queue(0.1, 2250 * MS);
        assert_eq!(t.level(), Quality::P25);
        // In between the marks nothing changes, and the quiet count stops.
        t.on_queue(0.3, 2500 * MS);
        t.on_queue(0.1, 3000 * MS);
        t.on_queue(0.1, 3900 * MS);
        assert_eq!(t.level(), Quality::P25);
        for s in 4..12u64 {
            t.on_queue(0.05, s * 1000 * MS);
        }
        assert_eq!(t.level(), Quality::All);
    }

    #[test]
    fn the_ladder() {
        assert_eq!(Quality::All.thinner(Quality::KeyOnly), Quality::NoBFrames);
        assert_eq!(Quality::KeyPlusOneP.thinner(Quality::KeyPlusOneP), Quality::KeyPlusOneP);
        assert_eq!(
            Quality::KeyOnly.thinner(Quality::KeyPlusOneP),
            Quality::KeyOnly,
            "never thicker"
        );
        assert_eq!(Quality::KeyOnly.thinner(Quality::KeyOnly), Quality::KeyOnly);
        assert_eq!(Quality::All.thicker(), Quality::All);
        assert_eq!(Quality::P50.thicker(), Quality::P75);
    }
}
