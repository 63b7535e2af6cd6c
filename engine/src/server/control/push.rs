//! Push relays' IO on the control core: while a local broadcast is on the
//! air at a `--push` path, one task publishes it to the other server with
//! the publish client ([`crate::channel::publish::Publisher`]: ANNOUNCE of
//! the broadcast's SDP, SETUP `mode=record` interleaved, RECORD), writing
//! each packet the ingest took as a `$` frame. It is fed through a bounded
//! channel: a push that cannot keep up loses packets, and never holds up
//! the publisher or the viewers. A push that fails while the broadcast is
//! on the air is started again after a backoff.

use std::rc::{Rc, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::net::TcpStream;
use tracing::{info, warn};

use super::relay::shown;
use super::{now, Control};
use crate::channel::publish::{Carriage, Event, Negotiated, Publisher};
use crate::live::relay::{backoff, origin_authority, Push};
use crate::live::{BroadcastId, Description};
use std::sync::Arc;

/// Packets that may wait for a push's connection.
pub const FEED_PACKETS: usize = 2048;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const TICK: Duration = Duration::from_millis(500);

/// What a push is fed: each packet of its broadcast, as it came in.
#[derive(Debug, Clone)]
pub struct Feed {
    pub track: u8,
    pub rtcp: bool,
    pub data: Bytes,
}

impl Control {
    /// A broadcast went on the air: the pushes of its path start.
    pub(super) fn start_pushes(&self, desc: &Arc<Description>) {
        let pushes: Vec<Push> = self
            .config
            .pushes
            .iter()
            .filter(|p| p.path == desc.path)
            .cloned()
            .collect();
        for push in pushes {
            let running = !self.pushing.borrow_mut().insert(push.url.as_str().to_owned());
            if running {
                continue;
            }
            info!(path = %push.path, to = %shown(push.url.as_str()), "push starting");
            glommio::spawn_local(push_task(self.me.clone(), push)).detach();
        }
    }

    /// Hands broadcast `id`'s packet to its pushes, if it has any.
    pub(super) fn feed_pushes(&self, id: BroadcastId, track: usize, rtcp: bool, data: impl FnOnce() -> Bytes) {
        let feeds = self.push_feeds.borrow();
        let Some(feeds) = feeds.get(&id) else { return };
        let data = data();
        for tx in feeds {
            // A full feed loses the packet: the push is behind.
            let _ = tx.try_send(Feed {
                track: track as u8,
                rtcp,
                data: data.clone(),
            });
        }
    }

    /// Broadcast `id` is over: its pushes' feeds close.
    pub(super) fn end_pushes(&self, id: BroadcastId) {
        self.push_feeds.borrow_mut().remove(&id);
    }
}

/// A push's life: one publish per on-air broadcast of its path, again
/// after a backoff when one fails, until the path is off the air.
async fn push_task(ctl: Weak<Control>, push: Push) {
    let mut failures: u32 = 0;
    loop {
        let Some(c) = ctl.upgrade() else { return };
        let desc = c.live.borrow().on_air(&push.path).cloned();
        let Some(desc) = desc else {
            c.pushing.borrow_mut().remove(push.url.as_str());
            return;
        };
        if c.stopping.get() {
            c.pushing.borrow_mut().remove(push.url.as_str());
            return;
        }
        let (tx, rx) = local_channel::new_bounded(FEED_PACKETS);
        c.push_feeds.borrow_mut().entry(desc.id).or_default().push(tx);
        let to = shown(push.url.as_str());
        match publish(&c, &push, &desc, rx).await {
            Ok(()) => {
                info!(path = %push.path, %to, "push ended with its broadcast");
                failures = 0;
            }
            Err(e) => {
                let wait = backoff(failures);
                failures = failures.saturating_add(1);
                warn!(path = %push.path, %to, error = %e, wait_ms = wait / 1_000_000, "push failed; trying again");
                drop(c);
                glommio::timer::sleep(Duration::from_nanos(wait)).await;
            }
        }
    }
}

/// Reads the connection into a channel, so the push's loop can wait for
/// its feed and the server at once.
async fn read_into(mut read: futures_lite::io::ReadHalf<TcpStream>, tx: LocalSender<Vec<u8>>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match read.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if tx.send(buf[..n].to_vec()).await.is_err() {
                    return;
                }
            }
        }
    }
}

enum Wake {
    Feed(Option<Feed>),
    Read(Option<Vec<u8>>),
    Tick,
}

/// One publish of broadcast `desc` to the push's server, until the
/// broadcast ends (`Ok`) or the publish fails.
async fn publish(c: &Rc<Control>, push: &Push, desc: &Description, feed: LocalReceiver<Feed>) -> Result<(), String> {
    let (host, port) = origin_authority(&push.url);
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port))
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| format!("cannot resolve {host}"))?;
    let stream = TcpStream::connect_timeout(addr, CONNECT_TIMEOUT)
        .await
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (read, mut write) = futures_lite::io::split(stream);
    let (read_tx, read_rx) = local_channel::new_bounded(4);
    let reader = glommio::spawn_local(read_into(read, read_tx));
    let carriage = vec![Carriage::Tcp; desc.tracks.len()];
    let mut publisher = Publisher::new(push.url.clone(), &desc.sdp, carriage, crate::random::u64(), now())
        .map_err(|e| e.to_string())?;
    let mut channels: Option<Vec<(u8, u8)>> = None;
    let mut frames = Vec::new();
    let mut ending = false;
    let result = loop {
        let out = publisher.take_output();
        if !out.is_empty() {
            if let Err(e) = write.write_all(&out).await {
                break Err(format!("the connection failed: {e}"));
            }
        }
        let mut done = None;
        while let Some(event) = publisher.poll_event() {
            match event {
                Event::Recording { tracks } => {
                    info!(path = %push.path, to = %shown(push.url.as_str()), "push recording");
                    channels = Some(
                        tracks
                            .iter()
                            .enumerate()
                            .map(|(i, n)| match n {
                                Negotiated::Tcp { channels } => *channels,
                                Negotiated::Udp { .. } => crate::channel::publish::tcp_channels(i),
                            })
                            .collect(),
                    );
                }
                Event::Interleaved { .. } | Event::KeepAliveRefused { .. } => {}
                Event::Closed => done = Some(Ok(())),
                Event::Failed(e) => done = Some(Err(e.to_string())),
            }
        }
        if let Some(d) = done {
            break if ending {
                Ok(())
            } else {
                d.and(Err("the server closed the publish".into()))
            };
        }
        let t = now();
        let wait = publisher
            .poll_timeout()
            .map_or(TICK, |at| Duration::from_nanos(at.saturating_sub(t)).min(TICK))
            .max(Duration::from_millis(1));
        let wake = futures_lite::future::or(
            async { Wake::Feed(feed.recv().await) },
            futures_lite::future::or(async { Wake::Read(read_rx.recv().await) }, async {
                glommio::timer::sleep(wait).await;
                Wake::Tick
            }),
        )
        .await;
        match wake {
            Wake::Feed(Some(first)) => {
                if ending {
                    continue;
                }
                let Some(ch) = &channels else { continue };
                frames.clear();
                // What else is queued goes in the same write.
                let mut next = Some(first);
                while let Some(f) = next.take() {
                    if let Some(&(rtp, rtcp)) = ch.get(usize::from(f.track)) {
                        let _ = proto::interleaved::emit(&mut frames, if f.rtcp { rtcp } else { rtp }, &[&f.data]);
                    }
                    if frames.len() < 256 * 1024 {
                        next = futures_lite::future::poll_once(feed.recv()).await.flatten();
                    }
                }
                if let Err(e) = write.write_all(&frames).await {
                    break Err(format!("the connection failed: {e}"));
                }
            }
            Wake::Feed(None) => {
                // The broadcast is over.
                if !ending {
                    ending = true;
                    publisher.teardown(now());
                }
            }
            Wake::Read(Some(bytes)) => publisher.handle_input(now(), &bytes),
            Wake::Read(None) => {
                break if ending {
                    Ok(())
                } else {
                    Err("the server closed the connection".into())
                }
            }
            Wake::Tick => {}
        }
        let t = now();
        if publisher.poll_timeout().is_some_and(|at| at <= t) {
            publisher.handle_timeout(t);
        }
        if c.stopping.get() && !ending {
            ending = true;
            publisher.teardown(t);
        }
    };
    let _ = write.close().await;
    drop(reader);
    result
}
