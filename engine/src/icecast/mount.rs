//! Live mounts, without IO: a path whose audio comes from a source as it
//! plays (an Icecast source's `SOURCE`/`PUT`, a radio channel's playlist,
//! a relayed mount), reflected to every listener of that path on every
//! shard.
//!
//! # How a mount's audio travels
//!
//! 1. The control core owns the mount's book ([`Mounts`]: who feeds which
//!    path, what it said about itself, its title, its counters) and its
//!    feed (a source's connection, the radio's clock, the relay's client).
//! 2. The feed's bytes are cut into frames once ([`super::frames`]), each a
//!    [`Bytes`](bytes::Bytes) slice of the one buffer they were read into,
//!    and every shard is sent the same frames ([`MountNews::Frames`]: an
//!    `Arc` of them; only handles travel).
//! 3. Each shard keeps a [`MountReplica`]: the last [`BURST`] of frames and
//!    the title. A listener joins at the oldest frame it holds (a frame
//!    boundary), gets that burst at once so that its player starts
//!    playing at once, and from then on each frame as it arrives, with ICY
//!    metadata blocks between for a listener that asked. Nothing of the
//!    audio is copied per listener or per shard.
//! 4. The feed's end ([`MountNews::End`]) ends its listeners once they have
//!    what is queued for them.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use loader::mp3::FrameHeader;

use super::frames::AudioFrame;
use super::icy::Metadata;
use super::source::IceInfo;
use crate::source::Nanos;

/// A mount's number, unique in the process: a source that comes back to
/// the same path is a new mount.
pub type MountId = u64;

/// What a new listener gets at once, in media time: as for files
/// ([`super::listener::BURST`]).
pub const BURST: Nanos = super::listener::BURST;

/// What the control core tells each shard about a mount, in order, over
/// the shard's live channel.
#[derive(Debug, Clone)]
pub enum MountNews {
    /// Frames that arrived, in order.
    Frames { id: MountId, frames: Arc<[AudioFrame]> },
    /// A new title, from the next metadata block on.
    Title { id: MountId, metadata: Metadata },
    /// The feed is gone.
    End { id: MountId },
}

/// What feeds a mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    /// An Icecast source's connection.
    Source,
    /// A radio channel's playlist.
    Radio,
    /// Another server's mount.
    Relay,
}

impl Feed {
    pub fn as_str(self) -> &'static str {
        match self {
            Feed::Source => "source",
            Feed::Radio => "radio",
            Feed::Relay => "relay",
        }
    }
}

/// One mount on the control core's book.
#[derive(Debug, Clone)]
pub struct Mount {
    pub id: MountId,
    pub path: String,
    pub feed: Feed,
    /// The source's address and user (none for a radio or a relay).
    pub client: Option<std::net::SocketAddr>,
    pub user: Option<String>,
    pub info: IceInfo,
    pub title: String,
    pub metadata: Metadata,
    /// The header of its frames, once the first has arrived.
    pub header: Option<FrameHeader>,
    pub started: Nanos,
    pub bytes_in: u64,
    pub frames_in: u64,
    /// Frames a full shard channel had no room for.
    pub frames_lost: u64,
}

/// Why a mount cannot be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MountError {
    #[error("mount {0} has a source already")]
    Busy(String),
}

/// The control core's mounts, by path.
#[derive(Debug, Default)]
pub struct Mounts {
    by_path: HashMap<String, Mount>,
    next_id: MountId,
    /// Totals of mounts that ended, for the metrics.
    pub ended: u64,
}

impl Mounts {
    pub fn new() -> Mounts {
        Mounts {
            next_id: 1,
            ..Mounts::default()
        }
    }

    /// Opens `path` for a feed; a path being fed is busy.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        &mut self,
        path: &str,
        feed: Feed,
        client: Option<std::net::SocketAddr>,
        user: Option<String>,
        info: IceInfo,
        now: Nanos,
    ) -> Result<MountId, MountError> {
        if self.by_path.contains_key(path) {
            return Err(MountError::Busy(path.to_owned()));
        }
        let id = self.next_id;
        self.next_id += 1;
        // As Icecast: no title until the feed gives one (`icy-name` is the
        // stream's name, not its song's).
        let title = String::new();
        self.by_path.insert(
            path.to_owned(),
            Mount {
                id,
                path: path.to_owned(),
                feed,
                client,
                user,
                metadata: Metadata::title(&title),
                title,
                info,
                header: None,
                started: now,
                bytes_in: 0,
                frames_in: 0,
                frames_lost: 0,
            },
        );
        Ok(id)
    }

    pub fn get(&self, path: &str) -> Option<&Mount> {
        self.by_path.get(path)
    }

    /// Mount `id`, by its number.
    pub fn by_id(&mut self, id: MountId) -> Option<&mut Mount> {
        self.by_path.values_mut().find(|m| m.id == id)
    }

    /// Sets `path`'s title: its number and the new block for the shards.
    pub fn set_title(&mut self, path: &str, title: &str) -> Option<(MountId, Metadata)> {
        let m = self.by_path.get_mut(path)?;
        m.title = title.to_owned();
        m.metadata = Metadata::title(title);
        Some((m.id, m.metadata.clone()))
    }

    /// Closes mount `id` (if it is still the one at its path).
    pub fn close(&mut self, id: MountId) -> Option<Mount> {
        let path = self.by_path.values().find(|m| m.id == id)?.path.clone();
        self.ended += 1;
        self.by_path.remove(&path)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Mount> {
        self.by_path.values()
    }

    pub fn len(&self) -> usize {
        self.by_path.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_path.is_empty()
    }
}

/// A shard's copy of a mount: its recent frames, numbered, and its title.
#[derive(Debug)]
pub struct MountReplica {
    frames: VecDeque<AudioFrame>,
    /// The number of the oldest frame held.
    first: u64,
    /// Media time the frames held play for.
    held: Nanos,
    pub title: Metadata,
    /// Its listeners on this shard.
    pub listeners: Vec<crate::shard::ConnId>,
}

impl Default for MountReplica {
    fn default() -> Self {
        MountReplica {
            frames: VecDeque::new(),
            first: 0,
            held: 0,
            title: Metadata::empty(),
            listeners: Vec::new(),
        }
    }
}

impl MountReplica {
    /// Appends frames that arrived, keeping the last [`BURST`] of audio.
    pub fn push(&mut self, frames: &[AudioFrame]) {
        for f in frames {
            self.held += f.duration;
            self.frames.push_back(f.clone());
        }
        while let Some(front) = self.frames.front() {
            if self.held.saturating_sub(front.duration) < BURST {
                break;
            }
            self.held -= front.duration;
            self.frames.pop_front();
            self.first += 1;
        }
    }

    /// The number of the oldest frame held: where a new listener starts.
    pub fn oldest(&self) -> u64 {
        self.first
    }

    /// The number the next frame to arrive will have.
    pub fn end(&self) -> u64 {
        self.first + self.frames.len() as u64
    }

    /// The frames from number `from` (or the oldest held, if that is gone)
    /// to the newest.
    pub fn since(&self, from: u64) -> impl Iterator<Item = &AudioFrame> {
        let skip = from.saturating_sub(self.first) as usize;
        self.frames.iter().skip(skip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn frame(i: u8) -> AudioFrame {
        AudioFrame {
            data: Bytes::from(vec![i; 10]),
            duration: 100_000_000,
        }
    }

    #[test]
    fn a_replica_keeps_the_last_burst_numbered() {
        let mut r = MountReplica::default();
        let frames: Vec<AudioFrame> = (0..50).map(frame).collect();
        r.push(&frames[..5]);
        assert_eq!((r.oldest(), r.end()), (0, 5));
        r.push(&frames[5..]);
        // 2 s of 100 ms frames: the last 20.
        assert_eq!((r.oldest(), r.end()), (30, 50));
        let since: Vec<u8> = r.since(45).map(|f| f.data[0]).collect();
        assert_eq!(since, [45, 46, 47, 48, 49]);
        assert_eq!(r.since(3).count(), 20, "from a frame gone: the oldest held");
    }

    #[test]
    fn one_feed_a_path_and_titles() {
        let mut m = Mounts::new();
        let info = IceInfo {
            name: Some("Radio".into()),
            ..IceInfo::default()
        };
        let a = m.open("/live.mp3", Feed::Source, None, None, info.clone(), 0).unwrap();
        assert_eq!(
            m.open("/live.mp3", Feed::Source, None, None, info.clone(), 0),
            Err(MountError::Busy("/live.mp3".into()))
        );
        assert_eq!(m.get("/live.mp3").unwrap().title, "");
        let (id, meta) = m.set_title("/live.mp3", "Song").unwrap();
        assert_eq!((id, meta), (a, Metadata::title("Song")));
        assert!(m.set_title("/other.mp3", "x").is_none());
        assert!(m.close(a).is_some());
        assert!(m.close(a).is_none());
        let b = m.open("/live.mp3", Feed::Source, None, None, info, 0).unwrap();
        assert_ne!(a, b);
    }
}
