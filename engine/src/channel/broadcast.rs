//! The playlist broadcaster's core: a channel's schedule, picker, timeline
//! and reference check turned into one stream of RTP packets, paced on the
//! caller's clock, without IO.
//!
//! [`Broadcaster::next`] is asked with `now` and answers with the next packet
//! (written into the caller's buffer), or the time to ask again, or the end.
//! Movies are opened through the caller's `open` function, once each; a
//! movie that cannot be opened, or does not fit the reference, is skipped
//! with a [`Note`] that names the playlist line that listed it. What the
//! driver should log and write (the `.current` and `.upcoming` files) comes
//! out of [`Broadcaster::poll_note`].
//!
//! Each channel track has one SSRC for the whole run, and the
//! [`Timeline`] keeps its sequence numbers continuous and its timestamps
//! monotonic from one movie to the next. Packets are due at the movie's start
//! on the wall clock plus their hinted transmit time, so the stream runs in
//! real time whatever the movies' lengths; a movie starts when the one before
//! ends on the schedule, not when its last packet went out.
//!
//! When a movie's parameter sets (H.264 SPS/PPS) differ from the
//! reference's, which viewers were told in the SDP, they are sent in-band
//! before the movie's first packet on that track, as single NAL unit
//! packets with that packet's timestamp (see [`compat`](super::compat)).

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use loader::{Movie, MovieCursor};
use proto::rtp::Header;
use proto::sdp::{Connection, SessionDescription};

use super::compat::{Fit, Layout};
use super::picker::{Picker, PlayMode};
use super::playlist::{Entry, Origin, Playlist};
use super::schedule::{Now, Schedule, Slot};
use super::status;
use super::timeline::{Timeline, TrackClock};

/// Opens a movie: the caller's file system.
pub type Open<'a> = dyn FnMut(&Path) -> Result<Arc<Movie>, String> + 'a;

/// How often each track sends an RTCP sender report (RFC 3550's minimum
/// interval for a session this small).
pub const REPORT_INTERVAL: Duration = Duration::from_secs(5);

/// What a broadcast plays and how.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The movie whose tracks and codecs every movie must share; `None`
    /// takes the playlist's first movie that opens.
    pub reference: Option<PathBuf>,
    pub mode: PlayMode,
    /// `weighted_random`'s no-repeat window.
    pub window: usize,
    /// Seeds the SSRCs, the first sequence numbers and timestamps, and
    /// random play.
    pub seed: u64,
    /// Stop after this many movies have started.
    pub max_movies: Option<u64>,
    /// How many movies `.upcoming` lists.
    pub max_upcoming: usize,
    /// On air from, off air at.
    pub start: SystemTime,
    pub end: Option<SystemTime>,
}

/// Why a broadcast cannot start.
#[derive(Debug, thiserror::Error)]
pub enum BroadcastError {
    #[error("reference movie {}: {why}", path.display())]
    Reference { path: PathBuf, why: String },
    #[error("no movie of the playlist opens as a hinted movie, so there is no reference for the channel's tracks (give one with --reference)")]
    NoReference,
}

/// Something the driver should tell the user or write down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// A movie started.
    Started(Started),
    /// A movie is passed over, for good until the playlist changes.
    Skipped {
        path: PathBuf,
        origin: Option<Origin>,
        reason: String,
    },
    /// A fitting movie has hint tracks the channel does not send.
    TracksIgnored { path: PathBuf, tracks: Vec<u32> },
    /// A damaged hint sample; the packet is left out.
    Damaged { path: PathBuf, why: String },
    /// Nothing can play now; the list is asked again at `retry`.
    Idle { retry: SystemTime },
    /// The RTP clocks run ahead of the schedule (a movie's packets ran past
    /// its declared duration).
    Lead { lead: Duration },
}

/// A movie that started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    /// 0 for the first movie of the broadcast, counting up.
    pub number: u64,
    pub path: PathBuf,
    pub title: Option<String>,
    pub inserted: bool,
    pub start: SystemTime,
    pub length: Duration,
    /// The `.current` file's text.
    pub current: String,
    /// The movies after it, next first.
    pub upcoming: Vec<PathBuf>,
    /// The `.upcoming` file's text.
    pub upcoming_text: String,
}

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The caller's buffer holds a whole RTP packet for channel track
    /// `track`.
    Packet { track: usize },
    /// Nothing is due before this time.
    Wait(SystemTime),
    /// The broadcast is over (a `sequential` list played, the end time, or
    /// the number of movies asked for).
    Ended,
}

/// Where the current movie is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub number: u64,
    pub position: Duration,
    pub length: Duration,
}

struct Playing {
    slot: Slot,
    wall_start: SystemTime,
    movie: Arc<Movie>,
    fit: Fit,
    cursor: MovieCursor,
    /// A packet taken from the cursor and held back while the parameter
    /// sets that go before it are sent.
    held: Option<loader::Packet>,
    /// Per channel track: the parameter sets still to send before its first
    /// packet of this movie.
    sets: Vec<VecDeque<Vec<u8>>>,
}

type Known = HashMap<PathBuf, Option<(Arc<Movie>, Fit)>>;

/// The broadcast's core. See the module documentation.
pub struct Broadcaster {
    reference: Layout,
    reference_sdp: String,
    reference_path: PathBuf,
    schedule: Schedule,
    timeline: Timeline,
    ssrcs: Vec<u32>,
    octets: Vec<u64>,
    known: Known,
    playing: Option<Playing>,
    /// The wall-clock time to ask the schedule for the next movie at.
    next_at: SystemTime,
    started: u64,
    max_movies: Option<u64>,
    max_upcoming: usize,
    notes: VecDeque<Note>,
    ended: bool,
    last_lead: Duration,
    next_report: Vec<SystemTime>,
    on_air: SystemTime,
    end: Option<SystemTime>,
    /// Per track, for AAC with RFC 3640 AU headers: their sizes in bits.
    aac_bits: Vec<Option<(u32, u32)>>,
    /// Per track: the reference's parameter sets (the SDP's), and the ones
    /// the viewers' decoders hold now (the last sent in-band, else the
    /// SDP's).
    reference_sets: Vec<Vec<Vec<u8>>>,
    active_sets: Vec<Vec<Vec<u8>>>,
    /// Since when the broadcast is paused (unwatched), if it is.
    paused: Option<SystemTime>,
}

/// Samples in an AAC frame (AAC LC and HE-AAC's core; 960-sample frames are
/// rare in hinted files and would only make the estimate a little long).
const AAC_FRAME: u32 = 1024;

/// How many AU headers (frames) the RTP payload `p` begins with: its first
/// 16 bits are the AU-headers-length in bits (RFC 3640 section 3.2.1).
fn aac_frames(p: &[u8], (first, rest): (u32, u32)) -> u32 {
    let Some(len) = p.get(..2).map(|b| u32::from(u16::from_be_bytes([b[0], b[1]]))) else {
        return 0;
    };
    if first == 0 || len < first {
        return 0;
    }
    1 + (len - first) / rest.max(1)
}

/// SplitMix64, for the broadcast's seeds.
fn mix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The schedule's probe: opens and checks each movie once.
fn probe(
    known: &mut Known,
    reference: &Layout,
    open: &mut Open<'_>,
    notes: &mut VecDeque<Note>,
    e: &Entry,
) -> Option<Duration> {
    // A movie whose file changed under its mapping is asked for again: the
    // opener has the file as it is now, or says why not.
    if let Some(Some((m, _))) = known.get(&e.path) {
        if m.is_damaged() {
            known.remove(&e.path);
        }
    }
    let skip = |reason: String| Note::Skipped {
        path: e.path.clone(),
        origin: e.origin.clone(),
        reason,
    };
    if !known.contains_key(&e.path) {
        if let Ok(m) = open(&e.path) {
            if m.is_damaged() {
                // Not remembered: once the file is opened afresh it plays.
                notes.push_back(skip("its file changed under its mapping".into()));
                return None;
            }
        }
    }
    let got = known.entry(e.path.clone()).or_insert_with(|| {
        let movie = match open(&e.path) {
            Ok(m) => m,
            Err(why) => {
                notes.push_back(skip(why));
                return None;
            }
        };
        if movie.hint_tracks().next().is_none() {
            notes.push_back(skip(
                "it has no RTP hint tracks (hint it, e.g. ffmpeg -movflags +rtphint)".into(),
            ));
            return None;
        }
        match reference.check(&Layout::of(&movie)) {
            Ok(fit) => {
                if !fit.ignored.is_empty() {
                    notes.push_back(Note::TracksIgnored {
                        path: e.path.clone(),
                        tracks: fit.ignored.clone(),
                    });
                }
                Some((movie, fit))
            }
            Err(why) => {
                notes.push_back(skip(why.to_string()));
                None
            }
        }
    });
    got.as_ref()
        .map(|(m, _)| Duration::from_secs_f64(m.duration_secs().max(0.0)))
}

impl Broadcaster {
    /// A broadcast of `list` with `settings`; movies are opened with `open`.
    /// The list's problems come out as notes first.
    pub fn new(list: &Playlist, settings: &Settings, open: &mut Open<'_>) -> Result<Broadcaster, BroadcastError> {
        let mut notes = VecDeque::new();
        let (reference_path, reference_movie) = match &settings.reference {
            Some(path) => {
                let movie = open(path).map_err(|why| BroadcastError::Reference {
                    path: path.clone(),
                    why,
                })?;
                if movie.hint_tracks().next().is_none() {
                    return Err(BroadcastError::Reference {
                        path: path.clone(),
                        why: "it has no RTP hint tracks".into(),
                    });
                }
                (path.clone(), movie)
            }
            None => list
                .entries
                .iter()
                .find_map(|e| {
                    open(&e.path)
                        .ok()
                        .filter(|m| m.hint_tracks().next().is_some())
                        .map(|m| (e.path.clone(), m))
                })
                .ok_or(BroadcastError::NoReference)?,
        };
        let reference = Layout::of(&reference_movie);
        let mut state = settings.seed;
        let mut ssrcs: Vec<u32> = Vec::new();
        let mut clocks = Vec::new();
        for t in &reference.tracks {
            // Distinct SSRCs, so a receiver never takes two tracks for one.
            let ssrc = loop {
                let s = mix(&mut state) as u32;
                if s != 0 && !ssrcs.contains(&s) {
                    break s;
                }
            };
            ssrcs.push(ssrc);
            clocks.push(TrackClock {
                clock_rate: t.clock_rate,
                first_seq: mix(&mut state) as u16,
                first_ts: mix(&mut state) as u32,
            });
        }
        let picker = Picker::new(list.entries.clone(), settings.mode, settings.window, mix(&mut state));
        for p in &list.problems {
            notes.push_back(Note::Skipped {
                path: list.path.clone(),
                origin: Some(p.origin.clone()),
                reason: p.kind.to_string(),
            });
        }
        let tracks = reference.tracks.len();
        let aac_bits = reference.tracks.iter().map(|t| t.aac_au_header_bits()).collect();
        let reference_sets: Vec<Vec<Vec<u8>>> = reference.tracks.iter().map(|t| t.parameter_sets()).collect();
        Ok(Broadcaster {
            reference_sdp: reference_movie.sdp().to_owned(),
            reference,
            reference_path,
            schedule: Schedule::new(picker, settings.start, settings.end),
            timeline: Timeline::new(&clocks),
            ssrcs,
            octets: vec![0; tracks],
            known: HashMap::new(),
            playing: None,
            next_at: settings.start,
            started: 0,
            max_movies: settings.max_movies,
            max_upcoming: settings.max_upcoming,
            notes,
            ended: false,
            last_lead: Duration::ZERO,
            next_report: vec![settings.start; tracks],
            on_air: settings.start,
            end: settings.end,
            aac_bits,
            active_sets: reference_sets.clone(),
            reference_sets,
            paused: None,
        })
    }

    /// Moves the start of the broadcast to `start`, when nothing has been
    /// sent yet: the time spent connecting to a server is not to be made up
    /// by a burst.
    pub fn start_at(&mut self, start: SystemTime) {
        if self.started > 0 || self.playing.is_some() {
            return;
        }
        let start = start.max(self.on_air);
        self.schedule = Schedule::new(self.schedule.picker().clone(), start, self.end);
        self.next_at = start;
        self.next_report.iter_mut().for_each(|t| *t = start);
        self.on_air = start;
    }

    /// The channel's tracks, in the order [`Step::Packet`] numbers them.
    pub fn layout(&self) -> &Layout {
        &self.reference
    }

    pub fn reference_path(&self) -> &Path {
        &self.reference_path
    }

    pub fn ssrc(&self, track: usize) -> u32 {
        self.ssrcs[track]
    }

    /// Packets sent on `track`, and their payload bytes.
    pub fn sent(&self, track: usize) -> (u64, u64) {
        (self.timeline.packets(track), self.octets[track])
    }

    pub fn poll_note(&mut self) -> Option<Note> {
        self.notes.pop_front()
    }

    /// Whether every movie of the list is known not to play.
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// Where the current movie is at `now` (while paused, where it stopped).
    pub fn progress(&self, now: SystemTime) -> Option<Progress> {
        let p = self.playing.as_ref()?;
        let at = self.paused.map_or(now, |since| since.min(now));
        Some(Progress {
            number: p.slot.number,
            position: at.duration_since(p.wall_start).unwrap_or_default().min(p.slot.length),
            length: p.slot.length,
        })
    }

    /// The broadcast's SDP: the reference movie's media descriptions, each
    /// with the channel's payload type, as a live stream (no range). For
    /// plain RTP, `udp` gives the destination: its address goes in `c=`, the
    /// first track's RTP port is the base, the next track's two above.
    pub fn sdp(&self, name: &str, udp: Option<(IpAddr, u16)>) -> String {
        let mut sd = match SessionDescription::parse(self.reference_sdp.as_bytes()) {
            Ok(sd) => sd,
            // The loader wrote it; it parses. Should it not, announce what
            // the movie says as it is.
            Err(_) => return self.reference_sdp.clone(),
        };
        sd.attributes.retain(|a| a.name != "range" && a.name != "control");
        sd.attributes.push(proto::sdp::Attribute::new("control", Some("*")));
        if !name.trim().is_empty() {
            sd.name = Some(name.replace(['\r', '\n'], " "));
        }
        if let Some(o) = &mut sd.origin {
            // The session's version: when it went on air.
            let version = self.on_air.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
            o.session_id = version.to_string();
            o.session_version = version.to_string();
            if let Some((ip, _)) = udp {
                o.address_type = if ip.is_ipv4() { "IP4" } else { "IP6" }.into();
                o.address = ip.to_string();
            }
        }
        sd.connection = Some(Connection {
            network_type: "IN".into(),
            address_type: match udp {
                Some((IpAddr::V6(_), _)) => "IP6".into(),
                _ => "IP4".into(),
            },
            address: match udp {
                Some((ip, _)) => ip.to_string(),
                None => "0.0.0.0".into(),
            },
        });
        // The media in the channel's track order.
        let media = std::mem::take(&mut sd.media);
        for (k, t) in self.reference.tracks.iter().enumerate() {
            let control = format!("trackID={}", t.track_id);
            let Some(mut m) = media
                .iter()
                .find(|m| m.control() == Some(control.as_str()))
                .or_else(|| media.get(k))
                .cloned()
            else {
                continue;
            };
            m.attributes.retain(|a| a.name != "range");
            m.connections.clear();
            m.port = udp.map_or(0, |(_, base)| base.wrapping_add(2 * k as u16));
            sd.media.push(m);
        }
        let mut out = String::new();
        sd.emit(&mut out);
        out
    }

    /// Takes a changed playlist: its problems are noted, movies that could
    /// not be played are tried again, and play goes on as
    /// [`Picker::reload`] says.
    pub fn reload(&mut self, list: &Playlist) {
        for p in &list.problems {
            self.notes.push_back(Note::Skipped {
                path: list.path.clone(),
                origin: Some(p.origin.clone()),
                reason: p.kind.to_string(),
            });
        }
        self.known.retain(|_, v| v.is_some());
        self.schedule.reload(list.entries.clone());
    }

    /// Ends the current movie now: the next one starts at once.
    pub fn skip(&mut self, now: SystemTime) {
        if self.playing.take().is_some() {
            self.schedule.skip(now);
            self.next_at = now;
        }
    }

    /// Queues a movie to play after the current one.
    pub fn insert_next(&mut self, path: PathBuf) {
        self.schedule.insert_next(Entry::new(path));
    }

    /// The movies after the current one, next first (as many as `.upcoming`
    /// lists), as they stand now: after an insert, a skip or a reload.
    pub fn upcoming(&mut self, open: &mut Open<'_>) -> Vec<PathBuf> {
        let (known, reference, notes) = (&mut self.known, &self.reference, &mut self.notes);
        let mut probe_fn = |e: &Entry| probe(known, reference, open, notes, e);
        self.schedule
            .upcoming(self.max_upcoming, &mut probe_fn)
            .into_iter()
            .map(|u| u.pick.entry.path)
            .collect()
    }

    /// Stops the broadcast's clock at `now` (a channel nobody watches):
    /// [`next`](Self::next) sends nothing until [`resume`](Self::resume).
    pub fn pause(&mut self, now: SystemTime) {
        if self.paused.is_none() && !self.ended {
            self.paused = Some(now);
            self.schedule.pause(now);
        }
    }

    /// Starts the clock again at `now`, where it stopped: the current movie
    /// goes on from the packet it was at, and every time still ahead moves
    /// by the pause.
    pub fn resume(&mut self, now: SystemTime) {
        let Some(since) = self.paused.take() else { return };
        let gap = now.duration_since(since).unwrap_or_default();
        self.schedule.resume(now);
        if let Some(p) = &mut self.playing {
            p.wall_start += gap;
        }
        self.next_at += gap;
        for t in &mut self.next_report {
            *t += gap;
        }
    }

    pub fn is_paused(&self) -> bool {
        self.paused.is_some()
    }

    /// The next step at `now`; for [`Step::Packet`], `buf` holds the packet.
    pub fn next(&mut self, now: SystemTime, open: &mut Open<'_>, buf: &mut Vec<u8>) -> Step {
        loop {
            if self.ended {
                return Step::Ended;
            }
            if self.paused.is_some() {
                return Step::Wait(now + Duration::from_secs(1));
            }
            if self.playing.is_none() {
                if let Some(wait) = self.start_next(now, open) {
                    return wait;
                }
                continue;
            }
            let p = self.playing.as_mut().expect("a movie plays");
            // Parameter sets held before a track's first packet.
            if let Some(packet) = &p.held {
                let k = p
                    .fit
                    .tracks
                    .iter()
                    .position(|m| m.movie_track == packet.track_id)
                    .unwrap_or(0);
                if let Some(set) = p.sets[k].pop_front() {
                    let (sequence, timestamp) = self.timeline.packet(k, packet.timestamp);
                    let header = Header {
                        marker: false,
                        payload_type: p.fit.tracks[k].payload_type,
                        sequence,
                        timestamp,
                        ssrc: self.ssrcs[k],
                    };
                    buf.clear();
                    buf.extend_from_slice(&header.to_bytes());
                    buf.extend_from_slice(&set);
                    self.octets[k] += set.len() as u64;
                    return Step::Packet { track: k };
                }
                let packet = p.held.take().expect("held");
                return self.emit(k, &packet, buf);
            }
            if p.movie.is_damaged() {
                // Its file was truncated or rewritten under the mapping:
                // what is left of it would read as zeros. The next movie
                // starts at once, as after a skip.
                let path = p.slot.entry.path.clone();
                self.notes.push_back(Note::Damaged {
                    path,
                    why: "the file changed under its mapping; the next movie starts".into(),
                });
                self.playing = None;
                self.schedule.skip(now);
                self.next_at = now;
                continue;
            }
            let due_ns = match p.cursor.peek_transmit_ns(&p.movie) {
                None => {
                    // The movie's packets are out; the next starts when
                    // this one ends on the schedule.
                    self.next_at = p.wall_start + p.slot.length;
                    self.playing = None;
                    continue;
                }
                Some(Err(e)) => {
                    let path = p.slot.entry.path.clone();
                    self.notes.push_back(Note::Damaged {
                        path,
                        why: e.to_string(),
                    });
                    continue;
                }
                Some(Ok(t)) => t,
            };
            let due = if due_ns >= 0 {
                p.wall_start + Duration::from_nanos(due_ns as u64)
            } else {
                p.wall_start
                    .checked_sub(Duration::from_nanos(due_ns.unsigned_abs()))
                    .unwrap_or(p.wall_start)
            };
            if due > now {
                return Step::Wait(due);
            }
            let packet = match p.cursor.next_packet(&p.movie) {
                Some(Ok(packet)) => packet,
                Some(Err(e)) => {
                    let path = p.slot.entry.path.clone();
                    self.notes.push_back(Note::Damaged {
                        path,
                        why: e.to_string(),
                    });
                    continue;
                }
                None => continue,
            };
            let Some(k) = p.fit.tracks.iter().position(|m| m.movie_track == packet.track_id) else {
                continue;
            };
            if !p.sets[k].is_empty() {
                p.held = Some(packet);
                continue;
            }
            return self.emit(k, &packet, buf);
        }
    }

    fn emit(&mut self, k: usize, packet: &loader::Packet, buf: &mut Vec<u8>) -> Step {
        let p = self.playing.as_ref().expect("a movie plays");
        let (sequence, timestamp) = self.timeline.packet(k, packet.timestamp);
        let header = Header {
            marker: packet.marker,
            payload_type: p.fit.tracks[k].payload_type,
            sequence,
            timestamp,
            ssrc: self.ssrcs[k],
        };
        buf.clear();
        buf.extend_from_slice(&header.to_bytes());
        let data = p.movie.data();
        for span in &packet.payload {
            buf.extend_from_slice(span.bytes(data));
        }
        self.octets[k] += (buf.len() - 12) as u64;
        // An AAC packet of several frames covers their time too (RFC 3640:
        // the frames follow the packet's timestamp 1024 samples apart).
        if let Some(bits) = self.aac_bits[k] {
            let frames = aac_frames(&buf[12..], bits);
            if frames > 1 {
                self.timeline
                    .covers(k, packet.timestamp.wrapping_add(frames * AAC_FRAME - 1));
            }
        }
        Step::Packet { track: k }
    }

    /// Puts the next movie on; `Some` when there is none to play now.
    fn start_next(&mut self, now: SystemTime, open: &mut Open<'_>) -> Option<Step> {
        if self.max_movies.is_some_and(|max| self.started >= max) {
            self.ended = true;
            return Some(Step::Ended);
        }
        // Asked late (the first movie of a schedule that started before the
        // broadcast did, or a stalled clock), the schedule says what plays
        // now and how far into it; a few milliseconds late at a movie
        // boundary that is the next movie from its start.
        let at = self.next_at.max(now);
        let (known, reference, notes) = (&mut self.known, &self.reference, &mut self.notes);
        let mut probe_fn = |e: &Entry| probe(known, reference, open, notes, e);
        let (slot, offset) = match self.schedule.now(at, &mut probe_fn) {
            Now::Playing { slot, offset, .. } => (slot.clone(), offset),
            Now::Paused { .. } => unreachable!("a paused broadcast is not asked"),
            Now::NotStarted { starts } => {
                self.next_at = starts;
                return Some(Step::Wait(starts));
            }
            Now::Idle { retry } => {
                self.notes.push_back(Note::Idle { retry });
                self.next_at = retry;
                return Some(Step::Wait(retry));
            }
            Now::Ended => {
                self.ended = true;
                return Some(Step::Ended);
            }
        };
        let upcoming: Vec<PathBuf> = self
            .schedule
            .upcoming(self.max_upcoming, &mut probe_fn)
            .into_iter()
            .map(|u| u.pick.entry.path)
            .collect();
        let Some((movie, fit)) = self.known.get(&slot.entry.path).cloned().flatten() else {
            // The schedule only plays what the probe passed.
            self.next_at = at + slot.length;
            return None;
        };
        let ids: Vec<u32> = fit.tracks.iter().map(|m| m.movie_track).collect();
        let mut cursor = match movie.movie_cursor(&ids) {
            Ok(c) => c,
            Err(e) => {
                self.notes.push_back(Note::Damaged {
                    path: slot.entry.path.clone(),
                    why: e.to_string(),
                });
                self.next_at = at + slot.length;
                return None;
            }
        };
        // Joined part-way (a schedule that started before the channel went
        // on the air, or a clock that jumped): from the key frame at or
        // before the schedule's position, not from the movie's first packet,
        // which was due long ago and would go out as one flood.
        if offset > Duration::ZERO {
            cursor.seek(&movie, i64::try_from(offset.as_nanos()).unwrap_or(i64::MAX));
        }
        let zeros: Vec<u32> = ids
            .iter()
            .map(|&id| movie.track(id).and_then(|t| t.rtp_time_at(0)).unwrap_or(0))
            .collect();
        self.timeline.start_item(slot.start, &zeros);
        let lead = self.timeline.lead();
        if lead > self.last_lead + Duration::from_millis(1) {
            self.last_lead = lead;
            self.notes.push_back(Note::Lead { lead });
        }
        let wall_start = at.checked_sub(offset).unwrap_or(at);
        let current = status::current(&slot.entry.path, wall_start, slot.length, movie.sdp());
        let upcoming_text = status::upcoming(upcoming.iter().map(PathBuf::as_path));
        self.notes.push_back(Note::Started(Started {
            number: self.started,
            path: slot.entry.path.clone(),
            title: slot.entry.title.clone(),
            inserted: slot.inserted,
            start: wall_start,
            length: slot.length,
            current,
            upcoming,
            upcoming_text,
        }));
        self.started += 1;
        // A movie's own sets when they differ from the reference's, else
        // the reference's; sent when they are not what decoders hold now (a
        // movie after a resized one goes back to the reference's).
        let mut sets = Vec::with_capacity(fit.tracks.len());
        for (k, m) in fit.tracks.iter().enumerate() {
            let own = if m.parameter_sets.is_empty() {
                &self.reference_sets[k]
            } else {
                &m.parameter_sets
            };
            if *own == self.active_sets[k] {
                sets.push(VecDeque::new());
            } else {
                self.active_sets[k] = own.clone();
                sets.push(own.iter().cloned().collect());
            }
        }
        self.playing = Some(Playing {
            slot,
            wall_start,
            movie,
            fit,
            cursor,
            held: None,
            sets,
        });
        None
    }

    /// Opens and checks every movie of the list now (what `--check` does):
    /// returns how many distinct movies were checked and how many play.
    /// Those that do not are noted, as they would be when their turn came.
    pub fn check(&mut self, open: &mut Open<'_>) -> (usize, usize) {
        let entries: Vec<Entry> = self.schedule.picker().entries().to_vec();
        for e in &entries {
            probe(&mut self.known, &self.reference, open, &mut self.notes, e);
        }
        let playable = self.known.values().filter(|v| v.is_some()).count();
        (self.known.len(), playable)
    }

    /// When the next sender report is due.
    pub fn next_report(&self) -> SystemTime {
        self.next_report.iter().min().copied().unwrap_or(UNIX_EPOCH)
    }

    /// The RTCP compound packets due at `now`: per track, a sender report
    /// and the SDES CNAME (RFC 3550 section 6.1 wants both in each).
    pub fn reports(&mut self, now: SystemTime, cname: &str) -> Vec<(usize, Vec<u8>)> {
        let mut out = Vec::new();
        // Nothing to report yet: ask again shortly (a sender report needs
        // packets sent and a movie to take the RTP time from).
        let soon = now + Duration::from_millis(200);
        let Some(p) = &self.playing else {
            for t in &mut self.next_report {
                *t = (*t).max(soon);
            }
            return out;
        };
        let npt = now.duration_since(p.wall_start).unwrap_or_default();
        let ntp = proto::rtcp::ntp_from_unix(now.duration_since(UNIX_EPOCH).unwrap_or_default());
        for k in 0..self.ssrcs.len() {
            if self.next_report[k] > now {
                continue;
            }
            if self.timeline.packets(k) == 0 {
                self.next_report[k] = soon;
                continue;
            }
            self.next_report[k] = now + REPORT_INTERVAL;
            let mut b = Vec::with_capacity(64);
            proto::rtcp::sender_report(
                &mut b,
                self.ssrcs[k],
                ntp,
                self.timeline.rtp_time(k, npt),
                self.timeline.packets(k) as u32,
                self.octets[k] as u32,
                &[],
            );
            proto::rtcp::sdes_cname(&mut b, self.ssrcs[k], cname);
            out.push((k, b));
        }
        out
    }

    /// RTCP BYE for `track`, with its SDES, as the last word.
    pub fn bye(&self, track: usize, cname: &str) -> Vec<u8> {
        let mut b = Vec::with_capacity(48);
        proto::rtcp::receiver_report(&mut b, self.ssrcs[track], &[]);
        proto::rtcp::sdes_cname(&mut b, self.ssrcs[track], cname);
        proto::rtcp::bye(&mut b, &[self.ssrcs[track]], Some("end of broadcast"));
        b
    }
}

impl Note {
    /// The line a user reads.
    pub fn message(&self) -> String {
        match self {
            Note::Started(s) => {
                let mut m = format!("movie {} starts: {}", s.number + 1, s.path.display());
                if let Some(t) = &s.title {
                    let _ = write!(m, " ({t})");
                }
                let _ = write!(m, ", {:.1} s", s.length.as_secs_f64());
                if s.inserted {
                    m.push_str(", inserted");
                }
                match s.upcoming.first() {
                    Some(n) => {
                        let _ = write!(m, "; next: {}", n.display());
                    }
                    None => m.push_str("; nothing after it"),
                }
                m
            }
            Note::Skipped { path, origin, reason } => match origin {
                Some(o) if o.file != *path => format!("{o}: movie {} skipped: {reason}", path.display()),
                Some(o) => format!("{o}: {reason}"),
                None => format!("movie {} skipped: {reason}", path.display()),
            },
            Note::TracksIgnored { path, tracks } => format!(
                "movie {}: hint tracks {tracks:?} are not in the reference movie and are not sent",
                path.display()
            ),
            Note::Damaged { path, why } => format!("movie {}: packet left out: {why}", path.display()),
            Note::Idle { .. } => format!(
                "no movie of the playlist can play now; trying again in {} s",
                super::schedule::IDLE_RETRY.as_secs()
            ),
            Note::Lead { lead } => format!(
                "a movie ran past its declared duration; RTP time now runs {:.3} s ahead of the schedule",
                lead.as_secs_f64()
            ),
        }
    }
}

#[cfg(test)]
mod tests;
