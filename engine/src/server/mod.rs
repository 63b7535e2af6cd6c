//! The running server: the only glommio code. One control executor and N
//! shard executors, each pinned to its own core.
//!
//! The control core accepts RTSP connections and runs each through the
//! connection loop ([`conn`]), whose requests the [door](crate::door)
//! routes: it answers what needs no session, describes movies, admits new
//! sessions (counting them in an [`Admission`](crate::admission::Admission))
//! and sends each to the least loaded shard, and forwards requests for a
//! session to its shard. A shard ([`shard`]) drives a
//! [`ShardCore`](crate::shard::ShardCore) with its sockets and timers and
//! owns, for sessions interleaved on TCP, their RTSP connection: handed over
//! at SETUP with the bytes read but not yet parsed, it runs through the same
//! connection loop there, so media and responses have one writer. Every core
//! opens movies through one shared [`Library`]. Cores talk only through
//! glommio's shared channels.
//!
//! HTTP arrives on the same ports (and on `--http-port`s) and is read by
//! the same loop on the control core. An RTSP-over-HTTP tunnel ([`tunnel`])
//! is two connections, paired there by cookie; it runs on the control core
//! like any RTSP connection until an interleaved SETUP, then moves to the
//! session's shard with both legs, and a POST the client opens later
//! follows it there ([`ToShard::TunnelPost`]). An Icecast listener's
//! `GET /x.mp3` is answered by a handler on the control core, and the
//! connection then goes to the shard with the fewest listeners
//! ([`ToShard::Listen`]), which writes the head and paces the audio.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use loader::mp3::Mp3;
use loader::Movie;

use crate::config::Config;
use crate::library::{Library, LibraryError, Lookup};
use crate::pacer::SessionKey;
use crate::shard::{Command, Event};
use crate::source::Nanos;

pub mod broadcast;
pub mod channel_client;
mod conn;
mod control;
pub mod publish_link;
mod shard;
mod tls;
mod tunnel;

/// Live messages that may wait for a shard: a few seconds of a busy
/// broadcast's packets.
const LIVE_CHANNEL: usize = 4096;

/// Nanoseconds since the process's first call: the clock every core paces by.
pub fn now() -> Nanos {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as Nanos
}

/// The wall clock at [`now`]` == 0`, for the shards' sender reports.
fn wall_at_zero() -> Duration {
    let wall = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    wall.saturating_sub(Duration::from_nanos(now()))
}

/// [`wall_at_zero`] as first taken: one wall clock for the whole process
/// (the shards' sender reports and the channels' schedules), which a step
/// of the system clock does not move.
fn wall_epoch() -> Duration {
    static WALL: OnceLock<Duration> = OnceLock::new();
    *WALL.get_or_init(wall_at_zero)
}

/// The movie at a library path. Checking the file is cheap and done here;
/// indexing one not indexed yet runs on the executor's blocking thread,
/// which [`executor`] places on the control core's CPU, never on a shard's.
async fn open_movie(library: &Arc<Library>, path: &str) -> Result<Arc<Movie>, LibraryError> {
    match library.lookup(path)? {
        Lookup::Ready(movie) => Ok(movie),
        Lookup::Parse(parse) => glommio::executor().spawn_blocking(move || parse.run()).await,
    }
}

/// The MP3 file at a library path, indexed as [`open_movie`] indexes movies.
async fn open_mp3(library: &Arc<Library>, path: &str) -> Result<Arc<Mp3>, LibraryError> {
    match library.lookup_mp3(path)? {
        Lookup::Ready(mp3) => Ok(mp3),
        Lookup::Parse(parse) => glommio::executor().spawn_blocking(move || parse.run()).await,
    }
}

/// A connection's socket and unparsed bytes, moved from the control core to
/// a shard.
pub struct Handover {
    pub fd: OwnedFd,
    pub client: SocketAddr,
    /// Bytes read but not yet parsed (requests pipelined after the SETUP;
    /// for a tunnel's POST leg, base64 that came with its head).
    pub pending: Vec<u8>,
    /// For a tunnel, whose `fd` is its GET leg: the rest of it.
    pub tunnel: Option<tunnel::Carry>,
}

/// What the control core sends a shard.
pub enum ToShard {
    Command(Command),
    /// A new interleaved session: take the connection over, then carry out
    /// the command (a [`Command::NewSession`], which will name it).
    Adopt {
        conn: Handover,
        command: Command,
    },
    /// The answer to a [`FromShard::Admit`]: the new session's key, or
    /// `None` when a session limit says no.
    Admission {
        ticket: u64,
        key: Option<SessionKey>,
    },
    /// An Icecast listener, answered by the control core's handler: take
    /// the connection over, write the head and pace the audio.
    Listen {
        conn: Handover,
        start: Box<crate::icecast::listener::ListenerStart>,
    },
    /// A POST leg the client opened for a tunnel that runs on the shard.
    TunnelPost {
        tunnel: crate::http::tunnel::TunnelId,
        leg: Handover,
    },
}

/// What a shard sends the control core.
pub enum FromShard {
    Event(Event),
    /// A client asks for a new session on a connection the shard owns: may
    /// it have one? The control core keeps the counts, so it decides, and
    /// answers with [`ToShard::Admission`].
    Admit {
        client: SocketAddr,
        ticket: u64,
    },
    /// A tunnel's POST leg from `client`, handed to the shard, closed.
    LegClosed {
        client: std::net::IpAddr,
    },
    /// A tunnel that ran on the shard ended: its cookie is free.
    TunnelClosed {
        tunnel: crate::http::tunnel::TunnelId,
    },
}

/// Set by signals; read by the control core.
pub struct Signals {
    /// SIGINT, SIGTERM.
    pub shutdown: Arc<AtomicBool>,
    /// SIGUSR1: print the statistics.
    pub report: Arc<AtomicBool>,
    /// SIGHUP: reopen the access log (after it was rotated away).
    pub reopen: Arc<AtomicBool>,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        let shutdown = Arc::new(AtomicBool::new(false));
        let report = Arc::new(AtomicBool::new(false));
        let reopen = Arc::new(AtomicBool::new(false));
        signal_hook::flag::register(signal_hook::consts::SIGINT, shutdown.clone())?;
        signal_hook::flag::register(signal_hook::consts::SIGTERM, shutdown.clone())?;
        signal_hook::flag::register(signal_hook::consts::SIGUSR1, report.clone())?;
        signal_hook::flag::register(signal_hook::consts::SIGHUP, reopen.clone())?;
        Ok(Signals {
            shutdown,
            report,
            reopen,
        })
    }

    fn take_report(&self) -> bool {
        self.report.swap(false, Ordering::Relaxed)
    }

    fn take_reopen(&self) -> bool {
        self.reopen.swap(false, Ordering::Relaxed)
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
    #[error("port {port} is already in use: is another streamalot running? --reuse-port shares it")]
    PortInUse { port: u16 },
    #[error("cannot open the access log: {0}")]
    AccessLog(std::io::Error),
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("a {0} thread panicked")]
    Panicked(&'static str),
    #[error("access settings: {0}")]
    Access(#[from] crate::access::SettingsError),
    #[error("{0}")]
    AccessFile(String),
    #[error("TLS: {0}")]
    Tls(String),
}

/// The access state of each core (the control core's first), sharing one
/// process secret so that any of them can check the others' URL tokens;
/// the users and groups files are read once here so that a broken one
/// stops the server with its file and line instead of refusing everyone.
fn access_per_core(config: &Config, cores: usize) -> Result<Vec<crate::access::Access>, ServeError> {
    use crate::access::{files::RealFs, users, Access};
    let s = &config.access;
    if let Some(path) = &s.users {
        let bytes =
            std::fs::read(path).map_err(|e| ServeError::AccessFile(format!("users file {}: {e}", path.display())))?;
        let parsed = users::Users::parse(path, &bytes).map_err(|e| ServeError::AccessFile(e.to_string()))?;
        tracing::info!(file = %path.display(), users = parsed.len(), realm = %parsed.realm, "users file loaded");
    }
    if let Some(path) = &s.groups {
        let bytes =
            std::fs::read(path).map_err(|e| ServeError::AccessFile(format!("groups file {}: {e}", path.display())))?;
        users::Groups::parse(path, &bytes).map_err(|e| ServeError::AccessFile(e.to_string()))?;
    }
    let secret = Access::random_secret().map_err(|e| ServeError::AccessFile(format!("no random secret: {e}")))?;
    (0..cores)
        .map(|issuer| {
            Ok(Access::new(
                s,
                config.media.clone(),
                Box::new(RealFs),
                secret,
                issuer as u8,
            )?)
        })
        .collect()
}

/// Runs the server until SIGINT or SIGTERM.
pub fn run(config: Config) -> Result<(), ServeError> {
    now();
    let signals = Signals::install().map_err(ServeError::Signals)?;
    // A movie truncated under its mapping must not kill the server: see
    // `loader`'s mapping guard.
    if let Err(e) = loader::install_sigbus_guard() {
        tracing::warn!(error = %e, "cannot install the SIGBUS guard: a movie truncated while playing will stop the server");
    }
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
    let library = Library::new(config.media.clone()).map_err(|source| ServeError::Bind {
        what: format!("the media library {}", config.media.display()),
        source,
    })?;
    let library = Arc::new(library);
    // The listeners first: a port in use stops the server before anything
    // else has started.
    let listeners = control::bind(&config)?;
    let cores: Vec<usize> = core_affinity::get_core_ids()
        .map(|ids| ids.into_iter().map(|c| c.id).collect())
        .unwrap_or_default();
    let core = |i: usize| (!cores.is_empty()).then(|| cores[i % cores.len()]);
    let control_cpu = core(0);
    let shards = config.shards.max(1);
    let wall = wall_epoch();
    let mut access = access_per_core(&config, shards + 1)?.into_iter();
    let control_access = access.next();
    let tls = config
        .tls
        .as_ref()
        .map(tls::load)
        .transpose()
        .map_err(ServeError::Tls)?;

    let mut to_shards = Vec::new();
    let mut from_shards = Vec::new();
    let mut live_to_shards = Vec::new();
    let mut handles = Vec::new();
    for i in 0..shards {
        let (tx, rx) = glommio::channels::shared_channel::new_bounded::<ToShard>(1024);
        // Live packets have a channel of their own, so a busy broadcast
        // never holds up a command, and a full one costs only packets.
        let (live_tx, live_rx) = glommio::channels::shared_channel::new_bounded::<crate::live::ToShard>(LIVE_CHANNEL);
        live_to_shards.push(live_tx);
        let (back_tx, back_rx) = glommio::channels::shared_channel::new_bounded::<FromShard>(4096);
        to_shards.push(tx);
        from_shards.push(back_rx);
        let pair = net::bind_pair(config.bind, config.rtp_ports.clone()).map_err(|source| ServeError::Bind {
            what: format!("a UDP port pair in {:?} for shard {i}", config.rtp_ports),
            source,
        })?;
        let (shard_config, library) = (config.clone(), library.clone());
        let shard_access = access.next();
        let handle = executor(&format!("shard-{i}"), core(i + 1), control_cpu)
            .spawn(move || async move {
                shard::run(i, shard_config, library, wall, pair, rx, back_tx, live_rx, shard_access).await
            })
            .map_err(|e| ServeError::Executor {
                what: format!("shard {i}"),
                source: std::io::Error::other(e.to_string()),
            })?;
        handles.push(handle);
    }
    let control = executor("control", control_cpu, control_cpu)
        .spawn(move || async move {
            control::run(
                config,
                library,
                listeners,
                signals,
                to_shards,
                from_shards,
                live_to_shards,
                control_access,
                tls,
            )
            .await
        })
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

/// An executor on `core`, whose blocking thread (where movies are indexed)
/// runs on `blocking_core`: the control core's, so that indexing a movie
/// never takes a pacing core's time.
fn executor(name: &str, core: Option<usize>, blocking_core: Option<usize>) -> glommio::LocalExecutorBuilder {
    let placement = match core {
        Some(c) => glommio::Placement::Fixed(c),
        None => glommio::Placement::Unbound,
    };
    let blocking = blocking_core
        .and_then(|c| glommio::CpuSet::online().ok().map(|set| set.filter(|l| l.cpu == c)))
        .filter(|set| !set.is_empty())
        .map_or(glommio::PoolPlacement::Unbound(1), |set| {
            glommio::PoolPlacement::Custom(vec![set])
        });
    // Small io_uring buffers: the server's IO is sockets, not files, and
    // the default reservation can exceed a container's RLIMIT_MEMLOCK.
    // No spinning before parking: a shard sleeps between rounds (up to a
    // thousand times a second under load), and spinning first cost more CPU
    // than the rounds themselves, mostly in reading the clock.
    glommio::LocalExecutorBuilder::new(placement)
        .name(name)
        .io_memory(1 << 20)
        .blocking_thread_pool_placement(blocking)
}
