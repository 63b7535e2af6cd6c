//! The control core's Icecast mounts: what feeds each one (a source's
//! connection, read here), the fan-out of its frames to every shard's live
//! channel, its title, and its end. The protocol is `crate::icecast`'s;
//! this is only the reading and the sending.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use tracing::{debug, info, warn};

use super::{now, Control};
use crate::access_log::AccessRecord;
use crate::icecast::frames::{AudioFrame, FrameSplitter};
use crate::icecast::icy::Metadata;
use crate::icecast::mount::{Feed, MountError, MountId, MountNews};
use crate::icecast::source::{BodyDecoder, IceInfo, SourceStart};
use crate::live;

/// What a source's connection reads at a time: a few frames.
const SOURCE_READ: usize = 16 * 1024;

impl Control {
    /// Opens mount `path` for a feed.
    pub(super) fn open_mount(
        &self,
        path: &str,
        feed: Feed,
        client: Option<std::net::SocketAddr>,
        user: Option<String>,
        info: IceInfo,
    ) -> Result<MountId, MountError> {
        let id = self.mounts.borrow_mut().open(path, feed, client, user, info, now())?;
        info!(path, feed = feed.as_str(), client = ?client, mount = id, "mount on the air");
        Ok(id)
    }

    /// Frames of mount `id` that arrived (`bytes` of its feed since the
    /// last call): on the book, then to every shard. A shard whose channel
    /// is full loses them (counted) rather than hold up the feed.
    pub(super) fn mount_frames(&self, id: MountId, frames: &mut Vec<AudioFrame>, bytes: u64) {
        let header = frames
            .first()
            .and_then(|f| loader::mp3::FrameHeader::parse(&f.data).ok());
        let shared: Arc<[AudioFrame]> = frames.drain(..).collect();
        let mut lost = 0;
        for tx in self.live_shards.iter().filter(|_| !shared.is_empty()) {
            let news = live::ToShard::Mount(MountNews::Frames {
                id,
                frames: shared.clone(),
            });
            if tx.try_send(news).is_err() {
                lost += shared.len() as u64;
            }
        }
        let mut mounts = self.mounts.borrow_mut();
        if let Some(m) = mounts.by_id(id) {
            m.bytes_in += bytes;
            m.frames_in += shared.len() as u64;
            m.frames_lost += lost;
            if header.is_some() {
                m.header = header;
            }
        }
    }

    /// Tells every shard mount `id`'s title, in order with its frames.
    pub(super) fn send_mount_title(&self, id: MountId, metadata: Metadata) {
        self.send_mount_news(MountNews::Title { id, metadata });
    }

    /// News every shard must have (a title, an end): at once where a
    /// channel has room, so that it keeps its place among the frames, else
    /// in a task of its own that waits for room.
    fn send_mount_news(&self, news: MountNews) {
        let mut full = Vec::new();
        for (i, tx) in self.live_shards.iter().enumerate() {
            if tx.try_send(live::ToShard::Mount(news.clone())).is_err() {
                full.push(i);
            }
        }
        if full.is_empty() {
            return;
        }
        let Some(ctl) = self.me.upgrade() else { return };
        glommio::spawn_local(async move {
            for i in full {
                let _ = ctl.live_shards[i].send(live::ToShard::Mount(news.clone())).await;
            }
        })
        .detach();
    }

    /// Sets mount `id`'s title (a radio's song, a relay's upstream title).
    fn feed_title(&self, id: MountId, title: &str) {
        let path = self.mounts.borrow_mut().by_id(id).map(|m| m.path.clone());
        let set = path.and_then(|p| self.mounts.borrow_mut().set_title(&p, title));
        if let Some((id, metadata)) = set {
            debug!(mount = id, title, "title");
            self.send_mount_title(id, metadata);
        }
    }

    /// Mount `id`'s feed is gone: its listeners end once they have what is
    /// queued for them, and a source's access-log line is written.
    pub(super) fn end_mount(&self, id: MountId, why: &str, status: u16) {
        let Some(m) = self.mounts.borrow_mut().close(id) else {
            return;
        };
        info!(
            path = %m.path, feed = m.feed.as_str(), why, bytes = m.bytes_in, frames = m.frames_in,
            lost = m.frames_lost, "mount off the air"
        );
        self.send_mount_news(MountNews::End { id });
        if let Some(client) = m.client {
            self.log_record(&AccessRecord {
                client: client.ip(),
                uri: m.path,
                duration: Duration::from_nanos(now().saturating_sub(m.started)),
                bytes: m.bytes_in,
                packets: m.frames_in,
                status,
                user_agent: None,
                transport: "icecast-source",
                ..AccessRecord::default()
            });
        }
    }
}

/// Runs an accepted Icecast source: answers it, then reads its body into
/// its mount until it ends, fails, sends what is not MPEG audio, or says
/// nothing for `--source-timeout`.
pub(super) async fn source(
    ctl: Rc<Control>,
    mut stream: TcpStream,
    client: std::net::SocketAddr,
    pending: Vec<u8>,
    start: Box<SourceStart>,
) {
    let id = start.mount;
    let (why, status) = read_source(&ctl, &mut stream, pending, &start).await;
    debug!(%client, path = start.path, why, "source gone");
    ctl.end_mount(id, why, status);
    let _ = stream.close().await;
    ctl.admission.borrow_mut().disconnect(client.ip());
}

/// Reads the source's body into its mount; says why it ended, and the
/// status for the access log.
async fn read_source(
    ctl: &Control,
    stream: &mut TcpStream,
    pending: Vec<u8>,
    start: &SourceStart,
) -> (&'static str, u16) {
    if stream.write_all(start.request.accepted()).await.is_err() {
        return ("gone before it was answered", 200);
    }
    let _ = stream.set_read_timeout(Some(Duration::from_secs(ctl.config.source_timeout.max(1))));
    let mut decoder = BodyDecoder::new(start.request.framing);
    let mut splitter = FrameSplitter::new();
    let mut frames = Vec::new();
    let mut body = Vec::new();
    let mut buf = vec![0u8; SOURCE_READ];
    let mut input = pending;
    loop {
        if !input.is_empty() {
            if decoder.feed(&input, |b| body.extend_from_slice(b)).is_err() {
                return ("a malformed chunked body", 400);
            }
            input.clear();
            if let Err(e) = splitter.push(&body, &mut frames) {
                warn!(path = start.path, error = %e, "source refused: not MPEG audio");
                return ("not MPEG audio", 415);
            }
            let n = body.len() as u64;
            body.clear();
            if !frames.is_empty() || n > 0 {
                ctl.mount_frames(start.mount, &mut frames, n);
            }
            if decoder.is_done() {
                return ("its body ended", 200);
            }
        }
        match stream.read(&mut buf).await {
            Ok(0) => return ("it closed the connection", 200),
            Ok(n) => input.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                info!(
                    path = start.path,
                    secs = ctl.config.source_timeout,
                    "source sent nothing; dropped"
                );
                return ("it stalled", 408);
            }
            Err(_) => return ("its connection failed", 200),
        }
    }
}

/// Plays radio channel `spec` on its mount for as long as the server runs
/// (or until a `sequential` list played through): its playlist and songs
/// read on the blocking thread, then the frames due handed to the mount as
/// the wall clock goes.
pub(super) async fn radio(ctl: Rc<Control>, spec: crate::config::Radio) {
    use crate::channel::playlist::{Disk, Playlist};
    use crate::icecast::radio::{Next, Piece, Radio};
    let file = spec.playlist.clone();
    let list = glommio::executor()
        .spawn_blocking(move || Playlist::load(&file, &mut Disk))
        .await;
    let list = match list {
        Ok(l) => l,
        Err(e) => {
            warn!(path = spec.path, error = %e, "radio channel off: its playlist cannot be read");
            return;
        }
    };
    for p in &list.problems {
        warn!(path = spec.path, problem = %p, "radio playlist");
    }
    let paths: Vec<std::path::PathBuf> = list.entries.iter().map(|e| e.path.clone()).collect();
    let opened = glommio::executor()
        .spawn_blocking(move || {
            let mut songs = std::collections::HashMap::new();
            let mut failed = Vec::new();
            for p in paths {
                if songs.contains_key(&p) {
                    continue;
                }
                match loader::mp3::Mp3::open(&p) {
                    Ok(m) => {
                        songs.insert(p, Arc::new(m));
                    }
                    Err(e) => failed.push((p, e.to_string())),
                }
            }
            (songs, failed)
        })
        .await;
    let (songs, failed) = opened;
    for (file, error) in failed {
        warn!(path = spec.path, file = %file.display(), error, "radio song passed over");
    }
    if songs.is_empty() {
        warn!(path = spec.path, "radio channel off: no song of its playlist can play");
        return;
    }
    let name = spec.playlist.file_stem().map(|s| s.to_string_lossy().into_owned());
    let info = IceInfo {
        name,
        ..IceInfo::default()
    };
    let id = match ctl.open_mount(&spec.path, Feed::Radio, None, None, info) {
        Ok(id) => id,
        Err(e) => {
            warn!(path = spec.path, error = %e, "radio channel off");
            return;
        }
    };
    let mut radio = Radio::new(list.entries, songs, std::time::SystemTime::now());
    let mut pieces = Vec::new();
    loop {
        let now = std::time::SystemTime::now();
        let next = radio.due(now, &mut pieces);
        for p in pieces.drain(..) {
            match p {
                Piece::Frames(mut frames) => {
                    let bytes = frames.iter().map(|f| f.data.len() as u64).sum();
                    ctl.mount_frames(id, &mut frames, bytes);
                }
                Piece::Title(t) => ctl.feed_title(id, &t),
            }
        }
        match next {
            Next::At(t) => {
                let wait = t.duration_since(std::time::SystemTime::now()).unwrap_or_default();
                glommio::timer::sleep(wait.max(Duration::from_millis(5))).await;
            }
            Next::Ended => {
                ctl.end_mount(id, "its playlist played through", 200);
                return;
            }
        }
    }
}

/// Relays upstream mount `spec.url` into mount `spec.path` for as long as
/// the server runs: each connection's audio into the mount, and after it
/// ends or fails, the next attempt after a backoff.
pub(super) async fn relay(ctl: Rc<Control>, spec: crate::config::MountRelay) {
    use crate::icecast::relay::{Backoff, Upstream};
    let Ok(up) = Upstream::parse(&spec.url) else {
        return;
    };
    let mut backoff = Backoff::default();
    loop {
        let why = relay_once(&ctl, &spec.path, &up, &mut backoff).await;
        let wait = backoff.wait();
        info!(path = spec.path, upstream = %spec.url, why, retry_in = ?wait, "relay: upstream gone");
        glommio::timer::sleep(wait).await;
    }
}

/// One connection to the upstream; says why it ended.
async fn relay_once(
    ctl: &Control,
    path: &str,
    up: &crate::icecast::relay::Upstream,
    backoff: &mut crate::icecast::relay::Backoff,
) -> String {
    use crate::icecast::relay::{read_answer, Body};
    let target = (up.host.clone(), up.port);
    let addrs = glommio::executor()
        .spawn_blocking(move || std::net::ToSocketAddrs::to_socket_addrs(&target).map(|a| a.collect::<Vec<_>>()))
        .await;
    let Some(addr) = addrs.ok().and_then(|a| a.into_iter().next()) else {
        return format!("cannot resolve {}", up.host);
    };
    let mut stream = match TcpStream::connect_timeout(addr, Duration::from_secs(5)).await {
        Ok(s) => s,
        Err(e) => return format!("cannot connect to {addr}: {e}"),
    };
    let timeout = Duration::from_secs(ctl.config.source_timeout.max(1));
    let _ = stream.set_read_timeout(Some(timeout));
    if let Err(e) = stream.write_all(&up.request()).await {
        return format!("cannot ask: {e}");
    }
    let mut buf = vec![0u8; SOURCE_READ];
    let mut got = Vec::new();
    let answer = loop {
        match read_answer(&got) {
            Ok(Some(a)) => break a,
            Ok(None) => {}
            Err(e) => return e.to_string(),
        }
        match stream.read(&mut buf).await {
            Ok(0) => return "closed before answering".into(),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => return format!("no answer: {e}"),
        }
    };
    let id = match ctl.open_mount(path, Feed::Relay, None, None, answer.info.clone()) {
        Ok(id) => id,
        Err(e) => return e.to_string(),
    };
    let mut body = Body::new(&answer);
    let mut splitter = FrameSplitter::new();
    let mut frames = Vec::new();
    let mut audio = Vec::new();
    let mut input = got.split_off(answer.head_len);
    let (why, status) = loop {
        if !input.is_empty() {
            if let Some(title) = body.feed(&input, &mut audio) {
                ctl.feed_title(id, &title);
            }
            input.clear();
            if let Err(e) = splitter.push(&audio, &mut frames) {
                break (format!("not MPEG audio: {e}"), 415);
            }
            let n = audio.len() as u64;
            audio.clear();
            if !frames.is_empty() {
                backoff.reset();
            }
            ctl.mount_frames(id, &mut frames, n);
        }
        match stream.read(&mut buf).await {
            Ok(0) => break ("it ended the stream".into(), 200),
            Ok(n) => input.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => break ("it stalled".into(), 408),
            Err(e) => break (format!("the connection failed: {e}"), 200),
        }
    };
    ctl.end_mount(id, &why, status);
    let _ = stream.close().await;
    why
}
