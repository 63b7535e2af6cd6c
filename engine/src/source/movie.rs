//! A movie on demand as a [`Source`](super::Source): which packet is due
//! when, and the RTP header it goes out with, without IO.
//!
//! Driven by the rule str0m uses: feed it the current time, drain what is
//! due, ask for the next deadline. Time is a monotonic count of nanoseconds
//! supplied by the caller, so tests run on a simulated clock.
//!
//! Sequence numbers are the session's own (see [`Stream`]). Timestamps are
//! the hinted ones plus a random offset, so they follow the media across a
//! pause and jump with a seek, as RTP-Info then says (RFC 2326 section
//! 12.33).

use std::sync::Arc;

use loader::{Movie, MovieCursor};
use smallvec::SmallVec;

use super::{All, Nanos, Outgoing, Payload, Pick, PlayStart, Stream, StreamSeeds};

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    /// Set up, never played.
    Ready,
    /// Sending: npt `npt_start` was (or will be) at wall time `wall_start`.
    Playing {
        wall_start: Nanos,
        npt_start: i64,
        npt_end: Option<i64>,
    },
    /// Paused at npt `at`.
    Paused { at: i64, npt_end: Option<i64> },
    /// Everything up to the end of the range was sent; the play's clock
    /// (npt `npt_start` at wall time `wall_start`) runs on.
    Ended { at: i64, wall_start: Nanos, npt_start: i64 },
}

pub struct MovieSource {
    movie: Arc<Movie>,
    cursor: MovieCursor,
    /// Inline for the usual two, like the cursor's tracks: a shard touches
    /// a playback's streams for every packet it sends.
    streams: SmallVec<[Stream; 2]>,
    state: State,
    /// Packets the loader could not decode (damaged samples), skipped since
    /// [`take_skipped`](Self::take_skipped) was last called.
    skipped: u32,
    /// The play's speed (RFC 2326 section 12.35): packets are due at their
    /// offset from the play's start divided by it; RTP timestamps stay as
    /// they are. 1 but for a PLAY granted a `Speed`. (With `skipped` a
    /// `u32`, the two take the eight bytes `skipped` took alone.)
    speed: f32,
    /// The transmit time (npt) of the latest packet sent ahead of real time
    /// (Instant-On) in this play: a pause resumes after it, not at the wall
    /// clock's position, which the client has long had the media of.
    /// `i64::MIN` when none was (not an `Option`: eight bytes a session).
    ahead_npt: i64,
}

impl MovieSource {
    /// A playback of the hint tracks `track_ids` of `movie`, with one set of
    /// random seeds per track.
    pub fn new(movie: Arc<Movie>, track_ids: &[u32], seeds: &[StreamSeeds]) -> Result<MovieSource, loader::Error> {
        assert_eq!(track_ids.len(), seeds.len(), "one seed set per track");
        let cursor = movie.movie_cursor(track_ids)?;
        let streams = track_ids
            .iter()
            .zip(seeds)
            .map(|(&id, &seeds)| {
                let rtp = movie
                    .track(id)
                    .and_then(|t| t.rtp)
                    .expect("movie_cursor checked the IDs");
                Stream::new(id, rtp.rtp_timescale, seeds)
            })
            .collect();
        Ok(MovieSource {
            movie,
            cursor,
            streams,
            state: State::Ready,
            skipped: 0,
            speed: 1.0,
            ahead_npt: i64::MIN,
        })
    }

    pub fn streams(&self) -> &[Stream] {
        &self.streams
    }

    pub fn streams_mut(&mut self) -> &mut [Stream] {
        &mut self.streams
    }

    /// Skipped packets since the last call.
    pub fn take_skipped(&mut self) -> u64 {
        u64::from(std::mem::take(&mut self.skipped))
    }

    /// The speed the current play goes at (1 unless a PLAY was granted
    /// another).
    pub fn speed(&self) -> f64 {
        f64::from(self.speed)
    }

    /// Wall time since the play's start as media time: `elapsed` times the
    /// speed.
    fn media_elapsed(&self, elapsed: Nanos) -> i64 {
        if self.speed == 1.0 {
            elapsed as i64
        } else {
            (elapsed as f64 * f64::from(self.speed)) as i64
        }
    }

    /// Media time since the play's start as wall time: `offset` divided
    /// by the speed.
    #[inline]
    fn wall_offset(&self, offset: u64) -> u64 {
        if self.speed == 1.0 {
            offset
        } else {
            (offset as f64 / f64::from(self.speed)) as u64
        }
    }

    pub fn movie(&self) -> &Arc<Movie> {
        &self.movie
    }

    pub fn is_playing(&self) -> bool {
        matches!(self.state, State::Playing { .. })
    }

    pub fn has_ended(&self) -> bool {
        matches!(self.state, State::Ended { .. })
    }

    /// For a play that has ended, the wall time its last packet sent ahead
    /// of real time (Instant-On) is due: until then the client is still
    /// playing what it holds, and asking for repairs of it. `None` if the
    /// play has not ended or sent nothing ahead.
    pub fn ended_due(&self) -> Option<Nanos> {
        let State::Ended {
            wall_start, npt_start, ..
        } = self.state
        else {
            return None;
        };
        (self.ahead_npt != i64::MIN)
            .then(|| wall_start + self.wall_offset(self.ahead_npt.saturating_sub(npt_start).max(0) as u64))
    }

    /// The npt the presentation is at, `now`.
    pub fn position_ns(&self, now: Nanos) -> i64 {
        match self.state {
            State::Ready => 0,
            State::Playing {
                wall_start, npt_start, ..
            } => npt_start + self.media_elapsed(now.saturating_sub(wall_start)),
            State::Paused { at, .. } | State::Ended { at, .. } => at,
        }
    }

    /// The RTP timestamp of stream `stream` that corresponds to `now`: the
    /// same npt-to-timestamp mapping as RTP-Info's, so RTCP sender reports
    /// agree with it and across streams. (A packet's own timestamp will not
    /// do: video timestamps are presentation times, ahead of when the packet
    /// is sent by up to the reordering delay.)
    ///
    /// After the end the RTP clock runs on with wall time, as RFC 3550
    /// section 6.4.1 has it, so the report that goes with a BYE sent some
    /// time after the last packet still maps its NTP time right.
    pub fn rtp_time_now(&self, stream: usize, now: Nanos) -> Option<u32> {
        let s = self.streams.get(stream)?;
        let track = self.movie.track(s.track_id)?;
        let npt = match self.state {
            State::Ended {
                wall_start, npt_start, ..
            } => npt_start + self.media_elapsed(now.saturating_sub(wall_start)),
            _ => self.position_ns(now),
        };
        Some(track.rtp_time_at(npt)?.wrapping_add(s.ts_offset))
    }

    /// Starts or resumes sending.
    ///
    /// `start_ns`: seek to the key frame at or before it (the actual start is
    /// returned). Without it, a paused playback resumes where it stopped and a
    /// new one starts at 0. `end_ns` stops sending at that npt.
    pub fn play(&mut self, now: Nanos, start_ns: Option<i64>, end_ns: Option<i64>) -> PlayStart {
        self.play_at_speed(now, start_ns, end_ns, 1.0)
    }

    /// As [`play`](Self::play), the packets due at `speed` times real time
    /// (RFC 2326's `Speed`, which the session granted): a packet's offset
    /// from the play's start is divided by it. A speed that is not above
    /// zero or not finite is 1. The round of a session at another speed
    /// than 1 must be a [`Pick`] with [`Pick::AT_SPEED`] (the shard gives it
    /// an adapted round): the plain round is kept free of it.
    pub fn play_at_speed(&mut self, now: Nanos, start_ns: Option<i64>, end_ns: Option<i64>, speed: f64) -> PlayStart {
        let (npt_start, keep_end) = match (start_ns, self.state) {
            (Some(s), _) => (self.seek(s), None),
            (None, State::Paused { at, npt_end }) => (at, npt_end),
            (None, State::Playing { .. }) => (self.position_ns(now), self.end()),
            (None, State::Ready) => (self.seek(0), None),
            (None, State::Ended { .. }) => (self.seek(0), None),
        };
        let npt_end = end_ns.or(keep_end);
        self.ahead_npt = i64::MIN;
        self.speed = if speed > 0.0 && speed.is_finite() {
            speed as f32
        } else {
            1.0
        };
        self.state = State::Playing {
            wall_start: now,
            npt_start,
            npt_end,
        };
        let streams = self
            .streams
            .iter()
            .map(|s| {
                let track = self.movie.track(s.track_id).expect("set-up tracks exist");
                let ts = track.rtp_time_at(npt_start).unwrap_or(0).wrapping_add(s.ts_offset);
                (s.track_id, s.next_seq, ts)
            })
            .collect();
        PlayStart {
            npt_start_ns: npt_start,
            npt_end_ns: npt_end,
            streams,
        }
    }

    fn end(&self) -> Option<i64> {
        match self.state {
            State::Playing { npt_end, .. } | State::Paused { npt_end, .. } => npt_end,
            _ => None,
        }
    }

    fn seek(&mut self, npt_ns: i64) -> i64 {
        self.cursor.seek(&self.movie, npt_ns.max(0))
    }

    /// Stops sending; a later [`play`](Self::play) without a start resumes here.
    pub fn pause(&mut self, now: Nanos) -> i64 {
        let mut at = self.position_ns(now);
        if std::mem::replace(&mut self.ahead_npt, i64::MIN) >= at {
            // Sent ahead: the next packet not sent is where to go on from.
            at = self.next_transmit_ns().map_or(at, |t| t.max(at));
        }
        if let State::Playing { npt_end, .. } = self.state {
            self.state = State::Paused { at, npt_end };
        }
        at
    }

    /// Transmit time of the next packet, skipping damaged hint samples. The
    /// packet itself is only decoded when it is sent.
    fn next_transmit_ns(&mut self) -> Option<i64> {
        loop {
            match self.cursor.peek_transmit_ns(&self.movie)? {
                Ok(t) => return Some(t),
                Err(e) => self.skip(&e),
            }
        }
    }

    fn skip(&mut self, e: &loader::Error) {
        self.skipped = self.skipped.saturating_add(1);
        tracing::warn!(error = %e, "skipping a damaged hint packet");
    }

    /// When the next packet is due, if playing and there is one.
    pub fn next_due(&mut self) -> Option<Nanos> {
        let State::Playing {
            wall_start, npt_start, ..
        } = self.state
        else {
            return None;
        };
        let t = self.next_transmit_ns()?;
        Some(wall_start + self.wall_offset(t.saturating_sub(npt_start).max(0) as u64))
    }

    /// Hands every packet due at or before `now` to `send`, in order, and
    /// moves to `Ended` when the media or the requested range runs out.
    /// Returns how many packets went.
    #[inline]
    pub fn poll(&mut self, now: Nanos, send: impl FnMut(Outgoing<'_>)) -> usize {
        self.poll_picked(now, now, &mut All, send)
    }

    /// As [`poll`](Self::poll), and also packets due after `now` up to
    /// `ahead` while `pick` lets them go ahead of time; `pick` may leave a
    /// packet out, before it takes a sequence number (see [`Pick`]).
    pub fn poll_picked<P: Pick>(
        &mut self,
        now: Nanos,
        ahead: Nanos,
        pick: &mut P,
        mut send: impl FnMut(Outgoing<'_>),
    ) -> usize {
        let State::Playing {
            wall_start,
            npt_start,
            npt_end,
        } = self.state
        else {
            return 0;
        };
        // The file changed under the mapping (truncated or rewritten in
        // place): what is left cannot be trusted, so the session ends as at
        // the end of the media (BYE, then gone) and others play on.
        if self.movie.is_damaged() {
            tracing::warn!(
                movie = %self.movie.path().map(|p| p.display().to_string()).unwrap_or_default(),
                "the movie's file changed under its sessions; ending this one"
            );
            self.state = State::Ended {
                at: self.position_ns(now),
                wall_start,
                npt_start,
            };
            return 0;
        }
        debug_assert!(
            P::AT_SPEED || self.speed == 1.0,
            "a play at another speed than 1 goes through a round that knows it"
        );
        let mut sent = 0;
        loop {
            let Some(t) = self.next_transmit_ns() else {
                self.state = State::Ended {
                    at: self.position_ns(now),
                    wall_start,
                    npt_start,
                };
                break;
            };
            if npt_end.is_some_and(|end| t >= end) {
                self.state = State::Ended {
                    at: npt_end.unwrap_or_default(),
                    wall_start,
                    npt_start,
                };
                break;
            }
            let offset = t.saturating_sub(npt_start).max(0) as u64;
            // `AT_SPEED` is a constant: the plain round has no division.
            let due = wall_start + if P::AT_SPEED { self.wall_offset(offset) } else { offset };
            if due > now {
                if due > ahead || !pick.ahead(due) {
                    break;
                }
                self.ahead_npt = t;
            }
            let p = match self.cursor.next_packet(&self.movie) {
                Some(Ok(p)) => p,
                Some(Err(e)) => {
                    self.skip(&e);
                    continue;
                }
                None => continue,
            };
            let Some(stream) = self.streams.iter().position(|s| s.track_id == p.track_id) else {
                continue;
            };
            if !pick.keep(stream, &p, due) {
                continue;
            }
            let header = self.streams[stream].next_header(p.marker, p.payload_type, p.timestamp, p.payload_len());
            send(Outgoing {
                stream,
                header,
                payload: Payload {
                    owner: self.movie.bytes(),
                    spans: &p.payload,
                },
                late_ns: now.saturating_sub(due),
                due,
                flags: p.flags,
            });
            sent += 1;
        }
        sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::rtp;

    const MS: u64 = 1_000_000;

    fn sample() -> Arc<Movie> {
        Arc::new(Movie::open(concat!(env!("CARGO_MANIFEST_DIR"), "/../media/sample.mp4")).unwrap())
    }

    fn playback(movie: &Arc<Movie>) -> MovieSource {
        let ids: Vec<u32> = movie.hint_tracks().map(|t| t.id).collect();
        let seeds: Vec<StreamSeeds> = (0..ids.len() as u32).map(|i| (0x1000 + i, 65_530, 7 + i)).collect();
        MovieSource::new(movie.clone(), &ids, &seeds).unwrap()
    }

    /// (stream, seq, ts, late) of everything due up to `until`, in steps of `step`.
    fn run(pb: &mut MovieSource, from: Nanos, until: Nanos, step: Nanos) -> Vec<(usize, u16, u32, u64)> {
        let mut out = Vec::new();
        let mut now = from;
        while now <= until {
            pb.poll(now, |o| {
                let h = rtp::Packet::new_unchecked(&o.header);
                out.push((o.stream, h.sequence(), h.timestamp(), o.late_ns));
            });
            now += step;
        }
        out
    }

    #[test]
    fn sends_on_schedule_with_contiguous_sequence_numbers() {
        let movie = sample();
        let mut pb = playback(&movie);
        assert_eq!(pb.next_due(), None, "nothing is due before PLAY");
        let start = pb.play(1_000 * MS, None, None);
        assert_eq!(start.npt_start_ns, 0);
        assert_eq!(pb.next_due(), Some(1_000 * MS));
        let sent = run(&mut pb, 1_000 * MS, 1_000 * MS + 12_000 * MS, MS);
        assert!(pb.has_ended());
        let total: usize = movie.hint_tracks().map(|t| movie.packets(t.id).unwrap().count()).sum();
        assert_eq!(sent.len(), total, "every packet once");
        for (i, s) in pb.streams().iter().enumerate() {
            let seqs: Vec<u16> = sent.iter().filter(|p| p.0 == i).map(|p| p.1).collect();
            assert_eq!(seqs[0], 65_530, "starts at the seed and wraps");
            assert!(seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)));
            assert_eq!(s.packets as usize, seqs.len());
        }
        // Stepping by 1 ms, nothing is more than a step late.
        assert!(sent.iter().all(|p| p.3 < MS), "{:?}", sent.iter().map(|p| p.3).max());
    }

    #[test]
    fn pause_and_resume_leave_no_gap() {
        let movie = sample();
        let mut pb = playback(&movie);
        pb.play(0, None, None);
        let before = run(&mut pb, 0, 3_000 * MS, 10 * MS);
        assert_eq!(pb.pause(3_000 * MS), 3_000 * MS as i64);
        assert!(
            run(&mut pb, 3_000 * MS, 8_000 * MS, 10 * MS).is_empty(),
            "paused: nothing goes"
        );
        // Resume 5 s later: npt continues from 3 s; RTP-Info says where.
        let resumed = pb.play(8_000 * MS, None, None);
        assert_eq!(resumed.npt_start_ns, 3_000 * MS as i64);
        let after = run(&mut pb, 8_000 * MS, 8_500 * MS, 10 * MS);
        for (i, &(_, seq, rtptime)) in resumed.streams.iter().enumerate() {
            let last = before.iter().rev().find(|p| p.0 == i).unwrap();
            let next = after.iter().find(|p| p.0 == i).unwrap();
            assert_eq!(next.1, last.1.wrapping_add(1), "no gap in sequence numbers");
            assert_eq!(seq, next.1, "RTP-Info seq is the next packet's");
            // Timestamps carry on from the media position, not the wall clock.
            let clock = pb.streams()[i].rtp_timescale as i64;
            let diff = next.2.wrapping_sub(rtptime) as i32 as i64;
            assert!(
                diff.abs() <= clock / 5,
                "stream {i}: first ts {} vs rtptime {rtptime}",
                next.2
            );
        }
    }

    #[test]
    fn the_rtp_clock_runs_on_after_the_end() {
        let movie = sample();
        let mut pb = playback(&movie);
        let start = pb.play(0, Some(0), Some(2_000 * MS as i64));
        run(&mut pb, 0, 3_000 * MS, MS);
        assert!(pb.has_ended());
        // A report sent at 2.5 s, after the last packet, maps 2.5 s of the
        // play, as it would have during it.
        for (i, s) in pb.streams().iter().enumerate() {
            let elapsed = pb.rtp_time_now(i, 2_500 * MS).unwrap().wrapping_sub(start.streams[i].2);
            assert_eq!(elapsed, s.rtp_timescale * 5 / 2, "stream {i}");
        }
    }

    #[test]
    fn seeks_to_a_key_frame_and_honours_the_end() {
        let movie = sample();
        let mut pb = playback(&movie);
        let start = pb.play(0, Some(5_000 * MS as i64), Some(6_000 * MS as i64));
        // The sample has a key frame every 2 s.
        assert_eq!(start.npt_start_ns, 4_000 * MS as i64);
        let sent = run(&mut pb, 0, 3_000 * MS, MS);
        assert!(pb.has_ended());
        let first_video = sent.iter().find(|p| p.0 == 0).unwrap();
        let video = &pb.streams()[0];
        let rtptime = start.streams[0].2;
        assert_eq!(first_video.1, start.streams[0].1);
        // The key frame's timestamp is its presentation time: at or after the start.
        assert!(first_video.2.wrapping_sub(rtptime) < video.rtp_timescale / 5);
        // About 2 s of media went (4 s to 6 s), in about 2 s of wall time.
        let last_ts = sent.iter().rev().find(|p| p.0 == 0).unwrap().2;
        let span = last_ts.wrapping_sub(rtptime) as f64 / 90_000.0;
        assert!((1.8..2.01).contains(&span), "{span}");
    }
}
