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

    /// News every shard must have (a title, an end): sent in a task of its
    /// own, waiting for room where a channel is full.
    fn send_mount_news(&self, news: MountNews) {
        let Some(ctl) = self.me.upgrade() else { return };
        glommio::spawn_local(async move {
            for tx in &ctl.live_shards {
                let _ = tx.send(live::ToShard::Mount(news.clone())).await;
            }
        })
        .detach();
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
