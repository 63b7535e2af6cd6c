//! The running server: one control executor and N shard executors, each a
//! glommio executor pinned to its own core.
//!
//! The control core accepts RTSP connections, answers OPTIONS and DESCRIBE,
//! and routes each new session to the least loaded shard. A shard owns its
//! sessions outright: their playback, RTP and RTCP state, and, for sessions
//! interleaved on TCP, their RTSP connection (handed over at SETUP, so media
//! and responses have one writer). Requests for a UDP session that reach the
//! control core are forwarded to the shard and answered with its reply.
//! Cores talk only through glommio's shared channels.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use loader::Movie;
use proto::rtsp::message::{Request, Response};

use crate::access_log::AccessRecord;
use crate::config::Config;
use crate::source::Nanos;
use crate::stats::ShardStats;

mod control;
mod shard;

/// How much a connection reads at a time. Requests are small; the read goes
/// into a buffer of this size inside the connection's task and is then
/// appended to the connection's buffer, which is given back whenever it is
/// empty (see [`release_if_empty`]). So an idle connection, which is what
/// most RTSP connections are while their media flows, holds no heap buffer
/// while it waits, and a big request costs an extra copy of a few hundred
/// bytes per read.
const READ_CHUNK: usize = 512;

/// Reads what has arrived onto the end of `buf`. Returns the bytes read, 0
/// at the end of the stream.
async fn read_more<R: futures_lite::AsyncRead + Unpin>(reader: &mut R, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    use futures_lite::AsyncReadExt;
    let mut chunk = [0u8; READ_CHUNK];
    let n = reader.read(&mut chunk).await?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

/// Frees a connection buffer's memory once it holds nothing.
fn release_if_empty(buf: &mut Vec<u8>) {
    if buf.is_empty() && buf.capacity() > 0 {
        *buf = Vec::new();
    }
}

/// Nanoseconds since the process's first call: the clock every core paces by.
pub fn now() -> Nanos {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as Nanos
}

pub use crate::pacer::SessionKey;

pub fn session_id(key: SessionKey) -> String {
    format!("{key:016X}")
}

pub fn parse_session_id(header: &str) -> Option<SessionKey> {
    let id = proto::rtsp::header::session_id(header);
    if id.len() != 16 {
        return None;
    }
    u64::from_str_radix(id, 16).ok()
}

/// A connection's bytes and socket, moved from the control core to a shard.
pub struct Handover {
    pub fd: OwnedFd,
    pub client: SocketAddr,
    /// Bytes read but not yet parsed (pipelined requests).
    pub pending: Vec<u8>,
}

/// What the control core asks of a shard.
pub enum ToShard {
    /// The first SETUP of a new session. With `conn`, the client asked for
    /// interleaved TCP: the shard takes the connection over and answers on
    /// it; otherwise it answers through [`FromShard::Reply`].
    NewSession {
        key: SessionKey,
        path: String,
        movie: Arc<Movie>,
        request: Request,
        client: SocketAddr,
        conn: Option<Handover>,
        reply: u64,
    },
    /// A request naming one of the shard's sessions.
    Request {
        key: SessionKey,
        request: Request,
        client: SocketAddr,
        reply: u64,
    },
    /// The answer to a [`FromShard::Admit`]: the new session's key, or
    /// `None` when a session limit says no.
    Admission { ticket: u64, key: Option<SessionKey> },
    /// Send a copy of the shard's statistics.
    Stats { reply: u64 },
    /// Say goodbye to every client and stop.
    Shutdown,
}

/// What a shard tells the control core.
pub enum FromShard {
    /// The answer to a request the control core forwarded. A NewSession
    /// that failed is also reported with `SessionEnded`.
    Reply {
        reply: u64,
        response: Response,
    },
    /// A client asks for a new session on a connection the shard owns: may
    /// it have one? The control core keeps the session count, so it decides
    /// and answers with [`ToShard::Admission`]; an admitted session that then
    /// fails to set up is reported with `SessionEnded`.
    Admit {
        client: SocketAddr,
        ticket: u64,
    },
    SessionEnded {
        key: SessionKey,
        record: AccessRecord,
    },
    /// A handed-over connection closed.
    ConnectionClosed {
        client: SocketAddr,
    },
    Stats {
        reply: u64,
        stats: Box<ShardStats>,
    },
    Stopped {
        stats: Box<ShardStats>,
    },
}

/// Set by SIGINT/SIGTERM and SIGUSR1; read by the control core.
pub struct Signals {
    pub shutdown: Arc<AtomicBool>,
    pub report: Arc<AtomicBool>,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        let shutdown = Arc::new(AtomicBool::new(false));
        let report = Arc::new(AtomicBool::new(false));
        signal_hook::flag::register(signal_hook::consts::SIGINT, shutdown.clone())?;
        signal_hook::flag::register(signal_hook::consts::SIGTERM, shutdown.clone())?;
        signal_hook::flag::register(signal_hook::consts::SIGUSR1, report.clone())?;
        Ok(Signals { shutdown, report })
    }

    fn take_report(&self) -> bool {
        self.report.swap(false, Ordering::Relaxed)
    }

    fn shutting_down(&self) -> bool {
        self.shutdown.load(Ordering::Relaxed)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot start executor for {what}: {source}")]
    Executor { what: String, source: std::io::Error },
    #[error("cannot bind {what}: {source}")]
    Bind { what: String, source: std::io::Error },
    #[error("cannot open the access log: {0}")]
    AccessLog(std::io::Error),
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("a {0} thread panicked")]
    Panicked(&'static str),
}

/// Runs the server until SIGINT or SIGTERM.
pub fn run(config: Config) -> Result<(), ServeError> {
    now();
    let signals = Signals::install().map_err(ServeError::Signals)?;
    match net::raise_fd_limit() {
        // Each connection is a descriptor; a few dozen more are the server's own.
        Ok(limit) if (limit as usize) < config.max_connections.saturating_add(64) => tracing::warn!(
            limit,
            max_connections = config.max_connections,
            "the open-file limit (ulimit -n) is below --max-connections: connections past it will be refused"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
    let cores: Vec<usize> = core_affinity::get_core_ids()
        .map(|ids| ids.into_iter().map(|c| c.id).collect())
        .unwrap_or_default();
    let core = |i: usize| (!cores.is_empty()).then(|| cores[i % cores.len()]);
    let shards = config.shards.max(1);

    let mut to_shards = Vec::new();
    let mut from_shards = Vec::new();
    let mut handles = Vec::new();
    for i in 0..shards {
        let (tx, rx) = glommio::channels::shared_channel::new_bounded::<ToShard>(1024);
        let (back_tx, back_rx) = glommio::channels::shared_channel::new_bounded::<FromShard>(4096);
        to_shards.push(tx);
        from_shards.push(back_rx);
        let pair = net::bind_pair(config.bind, config.rtp_ports.clone()).map_err(|source| ServeError::Bind {
            what: format!("a UDP port pair in {:?} for shard {i}", config.rtp_ports),
            source,
        })?;
        let shard_config = config.clone();
        let handle = executor(&format!("shard-{i}"), core(i + 1))
            .spawn(move || async move { shard::run(i, shard_config, pair, rx, back_tx).await })
            .map_err(|e| ServeError::Executor {
                what: format!("shard {i}"),
                source: std::io::Error::other(e.to_string()),
            })?;
        handles.push(handle);
    }
    let control = executor("control", core(0))
        .spawn(move || async move { control::run(config, signals, to_shards, from_shards).await })
        .map_err(|e| ServeError::Executor {
            what: "the control core".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
    let result = control.join().map_err(|_| ServeError::Panicked("control"))?;
    for h in handles {
        h.join().map_err(|_| ServeError::Panicked("shard"))?;
    }
    result
}

fn executor(name: &str, core: Option<usize>) -> glommio::LocalExecutorBuilder {
    let placement = match core {
        Some(c) => glommio::Placement::Fixed(c),
        None => glommio::Placement::Unbound,
    };
    // Small io_uring buffers: the server's IO is sockets, not files, and
    // the default reservation can exceed a container's RLIMIT_MEMLOCK.
    // No spinning before parking: a shard sleeps between rounds (up to a
    // thousand times a second under load), and spinning first cost more CPU
    // than the rounds themselves, mostly in reading the clock.
    glommio::LocalExecutorBuilder::new(placement)
        .name(name)
        .io_memory(1 << 20)
}
