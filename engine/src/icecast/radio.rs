//! Radio channels, without IO: an MP3 playlist (DSS `*PLAY-LIST*` or M3U,
//! read by [`crate::channel::playlist`]) played on the wall clock by
//! [`crate::channel::schedule`] as a live mount every listener shares
//! (`--radio /radio.mp3=PLAYLIST`). Two listeners who tune in at the same
//! moment hear the same song at the same place; one who tunes in later
//! hears what plays then, after the mount's burst.
//!
//! The caller asks [`Radio::due`] with the wall-clock time now and then and
//! gets the frames due by then (a little ahead, [`LEAD`]) and, at each
//! song, its title, in the order they go to the mount: the rest of a song,
//! the next song's title, its first frames. Songs follow one another frame
//! by frame, with nothing skipped or repeated at the seam; only the first
//! song joins where the clock is in it. The frames are slices of the
//! files' mappings, copied nowhere.
//!
//! The title is the M3U `#EXTINF` title when there is one, else the tags'
//! "Artist - Title", else the file's name.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use loader::mp3::Mp3;

use super::files::stream_title;
use super::frames::AudioFrame;
use crate::channel::picker::{Picker, PlayMode};
use crate::channel::playlist::Entry;
use crate::channel::schedule::{Now, Schedule};

/// How far ahead of the wall clock frames are handed out: enough that a
/// late wake-up never leaves listeners waiting, little enough that a title
/// change lands within a fraction of a second of its song.
pub const LEAD: Duration = Duration::from_millis(250);

/// The longest wait between two calls while a song plays.
pub const TICK: Duration = Duration::from_millis(100);

/// What goes to the mount, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Frames(Vec<AudioFrame>),
    /// The song from here on.
    Title(String),
}

/// What [`Radio::due`] says besides the pieces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Ask again at this time.
    At(SystemTime),
    /// The list played through (a `sequential` list), or nothing in it can
    /// ever play: the mount ends.
    Ended,
}

struct Playing {
    number: u64,
    mp3: Arc<Mp3>,
    /// The next frame to hand out.
    next: usize,
}

/// One radio channel. See the module documentation.
pub struct Radio {
    schedule: Schedule,
    songs: HashMap<PathBuf, Arc<Mp3>>,
    playing: Option<Playing>,
}

impl Radio {
    /// A channel over `entries`, whose files are `songs` (an entry whose
    /// file is not there is passed over), on the air from `start`, looping.
    pub fn new(entries: Vec<Entry>, songs: HashMap<PathBuf, Arc<Mp3>>, start: SystemTime) -> Radio {
        let picker = Picker::new(entries, PlayMode::SequentialLooped, 0, 0);
        Radio {
            schedule: Schedule::new(picker, start, None),
            songs,
            playing: None,
        }
    }

    /// The frames and titles due by `now` (plus [`LEAD`]), onto `out`.
    pub fn due(&mut self, now: SystemTime, out: &mut Vec<Piece>) -> Next {
        let songs = &self.songs;
        let mut probe = |e: &Entry| songs.get(&e.path).map(|m| Duration::from_nanos(m.duration_ns()));
        match self.schedule.now(now, &mut probe) {
            Now::Playing { slot, offset, changes } => {
                let number = slot.number;
                let entry = slot.entry.clone();
                if self.playing.as_ref().is_none_or(|p| p.number != number) {
                    let Some(mp3) = self.songs.get(&entry.path).cloned() else {
                        return Next::At(now + TICK);
                    };
                    // The song before plays to its end first; a song after
                    // another starts at its first frame, only the first one
                    // where the clock is.
                    let next = match self.playing.take() {
                        Some(mut old) => {
                            let end = old.mp3.frames().len();
                            push_frames(&mut old, end, out);
                            0
                        }
                        None => mp3.frames_due(offset.as_nanos() as u64).saturating_sub(1),
                    };
                    let title = entry.title.clone().unwrap_or_else(|| {
                        let path = entry.path.to_string_lossy();
                        stream_title(&mp3, &path)
                    });
                    out.push(Piece::Title(title));
                    self.playing = Some(Playing { number, mp3, next });
                }
                let p = self.playing.as_mut().expect("a song plays");
                let due = p.mp3.frames_due((offset + LEAD).as_nanos() as u64);
                push_frames(p, due, out);
                Next::At(changes.min(now + TICK))
            }
            Now::Idle { retry } => Next::At(retry),
            Now::NotStarted { starts } => Next::At(starts),
            Now::Paused { .. } => Next::At(now + TICK),
            Now::Ended => {
                if let Some(mut old) = self.playing.take() {
                    let end = old.mp3.frames().len();
                    push_frames(&mut old, end, out);
                }
                Next::Ended
            }
        }
    }
}

/// Hands out `p`'s frames up to (not including) frame `to`.
fn push_frames(p: &mut Playing, to: usize, out: &mut Vec<Piece>) {
    if to <= p.next {
        return;
    }
    let frames = p.mp3.frames();
    let total = p.mp3.duration_ns();
    let run: Vec<AudioFrame> = (p.next..to)
        .map(|i| {
            let f = frames[i];
            let end = frames.get(i + 1).map_or(total, |n| n.start_ns);
            AudioFrame {
                data: p.mp3.slice(f.span()),
                duration: end.saturating_sub(f.start_ns),
            }
        })
        .collect();
    p.next = to;
    out.push(Piece::Frames(run));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` frames of 128 kbit/s 44.1 kHz MPEG-1 Layer III (26.12 ms each),
    /// filled with `fill`.
    fn song(n: usize, fill: u8) -> Arc<Mp3> {
        let mut v = Vec::new();
        for _ in 0..n {
            let mut f = vec![fill; 417];
            f[..4].copy_from_slice(&[0xff, 0xfb, 0x90, 0x64]);
            v.extend_from_slice(&f);
        }
        Arc::new(Mp3::from_bytes(v).unwrap())
    }

    #[test]
    fn songs_follow_each_other_frame_by_frame_with_their_titles() {
        let a = song(100, 1); // 2.6 s
        let b = song(60, 2);
        let entries = vec![
            Entry {
                title: Some("First".into()),
                ..Entry::new("/a.mp3")
            },
            Entry::new("/missing.mp3"),
            Entry::new("/b.mp3"),
        ];
        let songs = HashMap::from([
            (PathBuf::from("/a.mp3"), a.clone()),
            (PathBuf::from("/b.mp3"), b.clone()),
        ]);
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut radio = Radio::new(entries, songs, t0);
        let mut out = Vec::new();
        let mut at = t0;
        // Ask at odd moments for 12 s: two and a half passes of the list.
        while at < t0 + Duration::from_secs(12) {
            match radio.due(at, &mut out) {
                Next::At(t) => assert!(t > at),
                Next::Ended => panic!("a looped list ends"),
            }
            at += Duration::from_millis(37);
        }
        let mut fills = Vec::new();
        let mut titles = Vec::new();
        for p in &out {
            match p {
                Piece::Title(t) => titles.push((t.clone(), fills.len())),
                Piece::Frames(f) => fills.extend(f.iter().map(|f| f.data[4])),
            }
        }
        assert_eq!(titles[0], ("First".to_owned(), 0));
        assert_eq!(titles[1], ("b".to_owned(), 100));
        assert_eq!(titles[2], ("First".to_owned(), 160));
        // Every frame of each song, in order, song after song.
        let pass: Vec<u8> = [vec![1u8; 100], vec![2u8; 60]].concat();
        for (i, chunk) in fills.chunks(160).enumerate() {
            assert_eq!(chunk, &pass[..chunk.len()], "pass {i}");
        }
        // As many frames as play in 12 s and the lead, within one ask.
        let frame = 1152.0 / 44_100.0;
        let expected = ((12.0 + LEAD.as_secs_f64()) / frame) as usize;
        assert!(
            fills.len().abs_diff(expected) <= 3,
            "{} frames, {expected} due",
            fills.len()
        );
    }

    #[test]
    fn a_radio_that_starts_late_joins_the_first_song_where_the_clock_is() {
        let a = song(100, 1);
        let songs = HashMap::from([(PathBuf::from("/a.mp3"), a)]);
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut radio = Radio::new(vec![Entry::new("/a.mp3")], songs, t0);
        let mut out = Vec::new();
        radio.due(t0 + Duration::from_millis(1000), &mut out);
        let Piece::Frames(f) = &out[1] else { panic!("{out:?}") };
        // The frame playing at 1 s is number 38; frames to 1.25 s follow.
        assert_eq!(f.len(), 48 - 38);
    }
}
