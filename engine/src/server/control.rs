//! The control core's driver: binds and accepts the RTSP and HTTP ports,
//! runs each connection through the [connection loop](super::conn) and
//! executes the door's routes, keeps the connection and session counts
//! ([`Admission`]) and the tunnels' [`Registry`], writes the access log, and
//! watches the signals and the timers (statistics reports, the library's
//! pruning, tunnel legs that waited too long for each other).

use std::cell::{Cell, RefCell, RefMut};
use std::future::Future;
use std::net::{IpAddr, SocketAddr, TcpListener as StdListener};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::AsyncWriteExt;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::channels::shared_channel::{ConnectedReceiver, ConnectedSender, SharedReceiver, SharedSender};
use glommio::net::{TcpListener, TcpStream};
use loader::mp3::Mp3;
use proto::rtsp::message::{Limits, Request, Response};
use proto::tunnel::{Cookie, Decoder, Leg};
use tracing::{debug, info, warn};

use super::conn::{self, Host, Leave, Link, Speaks, Step, Wire};
use super::tunnel::{give_leg, Carry, Counted, PostLeg, TunnelWire};
use super::{now, open_movie, open_mp3, FromShard, Handover, ServeError, Signals, ToShard};
use crate::access_log::{AccessLog, AccessRecord};
use crate::admin::{self, AdminAccess, History};
use crate::admission::{self, Admission, Listeners};
use crate::config::Config;
use crate::door::{self, Door, Route};
use crate::http::tunnel::{Expired, Place, PostTo, Registry, TunnelId, PAIRING_WINDOW};
use crate::http::Sample;
use crate::http::{self as web, Context, Counts, HttpRoute, Reply, Routes, ServerView, Takeover};
use crate::icecast::files::Files;
use crate::icecast::listener::ListenerStart;
use crate::icecast::metadata::MetadataUpdate;
use crate::icecast::mount::{Feed, Mount, MountError, MountId, Mounts};
use crate::icecast::source::{IceInfo, Sources};
use crate::idle;
use crate::library::Library;
use crate::library::LibraryError;
use crate::live;
use crate::live::registry::{Path as LivePath, Phase, Publisher, Wanted};
use crate::pacer::{KeyMap, SessionKey};
use crate::shard::{Command, Event, ReplyId, Snapshot};
use crate::stats::{RequestCounts, ShardStats};

mod channels;
mod push;
mod relay;

/// How often the library looks for movies to let go of.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// A movie no session holds is let go of when nobody asked for it this long.
const UNUSED_FOR: Duration = Duration::from_secs(300);
/// How often the open movies' files are checked for changes in place.
const FILE_CHECK_EVERY: Duration = Duration::from_secs(1);
/// POST legs that may wait behind a tunnel's current one.
const LEG_QUEUE: usize = 2;
/// How often connections are looked at for the read timeout (the shards
/// look at their sessions' timeouts as often).
const IDLE_SWEEP_EVERY: Duration = Duration::from_millis(250);

#[path = "icecast.rs"]
mod icecast;

/// The control core's state, shared by its tasks (one thread: `RefCell`).
struct Control {
    config: Config,
    door: Door,
    limits: Limits,
    library: Arc<Library>,
    shards: Vec<ConnectedSender<ToShard>>,
    admission: RefCell<Admission>,
    /// Icecast listeners, against `--max-listeners`, and their shards.
    listeners: RefCell<Listeners>,
    /// Replies awaited from shards.
    waiting: RefCell<KeyMap<ReplyId, local_channel::LocalSender<Event>>>,
    next_reply: Cell<ReplyId>,
    log: RefCell<AccessLog>,
    tunnels: RefCell<Registry>,
    /// Where the POST legs of tunnels on this core go: one channel per
    /// tunnel, read by its wire.
    tunnel_legs: RefCell<KeyMap<TunnelId, LocalSender<PostLeg>>>,
    /// The other ends, from a GET's answer until its task takes them.
    tunnel_starts: RefCell<KeyMap<TunnelId, LocalReceiver<PostLeg>>>,
    /// POSTs that came before their GET.
    held_posts: RefCell<KeyMap<TunnelId, PostLeg>>,
    /// Gives a connection's count back (for legs, which outlive the task
    /// that accepted them).
    release: Rc<dyn Fn(IpAddr)>,
    /// The live broadcasts' publishers.
    live: RefCell<live::Registry>,
    /// Each shard's live channel.
    live_shards: Vec<ConnectedSender<live::ToShard>>,
    /// Live packets a full shard channel had no room for.
    live_channel_full: Cell<u64>,
    /// The relays by path, and where each is.
    relays: RefCell<relay::Runs>,
    /// The viewers of relay paths (by session), which keep an on-demand
    /// relay running.
    relay_viewers: RefCell<KeyMap<SessionKey, String>>,
    /// The pushes running, by the URL they publish to.
    pushing: RefCell<std::collections::HashSet<String>>,
    /// Each broadcast's pushes' feeds.
    push_feeds: RefCell<std::collections::HashMap<live::BroadcastId, Vec<LocalSender<push::Feed>>>>,
    /// The server is shutting down: relays say TEARDOWN and stop.
    stopping: Cell<bool>,
    /// The Icecast mounts on the air, by path.
    mounts: RefCell<Mounts>,
    /// Itself, for the tasks it starts (a publisher's UDP readers).
    me: std::rc::Weak<Control>,
    /// RTSPS's settings, replaced on SIGHUP when the files load.
    tls: RefCell<Option<Arc<futures_rustls::rustls::ServerConfig>>>,
    /// RTSP responses written here, by method and status.
    requests: RefCell<RequestCounts>,
    /// The totals sampled for the throughput chart.
    history: RefCell<History>,
    started: Instant,
    /// The connections in the loop here and when each began waiting for
    /// bytes, swept for the read timeout (`sweep_idle`): a runtime timer per
    /// connection would be two reactor entries for as long as it lives.
    idle: RefCell<idle::Reads<RawFd>>,
    /// The channels `serve` runs, each driven by a task of its own.
    channels: Vec<Rc<channels::Handle>>,
}

/// A bound port and what it speaks.
pub struct Listener {
    socket: StdListener,
    /// Whether RTSP is welcome besides HTTP.
    rtsp: bool,
    /// Whether it speaks TLS (an RTSPS port).
    tls: bool,
}

/// Binds the RTSP ports (which take HTTP too) and the HTTP-only ports:
/// without `SO_REUSEPORT` unless the operator asks for sharing, so that a
/// second server on a port in use fails at once instead of quietly taking
/// some of the first one's connections.
pub fn bind(config: &Config) -> Result<Vec<Listener>, ServeError> {
    let mut listeners = Vec::new();
    let ports = config.rtsp_ports.iter().map(|&p| (p, true, false));
    let http = config.http_ports.iter().map(|&p| (p, false, false));
    let rtsps = config.rtsps_ports.iter().map(|&p| (p, true, true));
    for (port, rtsp, tls) in ports.chain(http).chain(rtsps) {
        let addr = SocketAddr::new(config.bind, port);
        match net::bind_tcp_listener(addr, config.reuse_port) {
            Ok(socket) => listeners.push(Listener { socket, rtsp, tls }),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => return Err(ServeError::PortInUse { port }),
            Err(source) => {
                return Err(ServeError::Bind {
                    what: format!(
                        "{} port {addr}",
                        match (rtsp, tls) {
                            (_, true) => "RTSPS",
                            (true, _) => "RTSP",
                            _ => "HTTP",
                        }
                    ),
                    source,
                })
            }
        }
    }
    Ok(listeners)
}

// Each argument is a resource the core takes over for its life.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    config: Config,
    library: Arc<Library>,
    listeners: Vec<Listener>,
    signals: Signals,
    to_shards: Vec<SharedSender<ToShard>>,
    from_shards: Vec<SharedReceiver<FromShard>>,
    live_to_shards: Vec<SharedSender<live::ToShard>>,
    door_access: Option<crate::access::Access>,
    tls: Option<Arc<futures_rustls::rustls::ServerConfig>>,
) -> Result<(), ServeError> {
    let mut shards = Vec::new();
    for tx in to_shards {
        shards.push(tx.connect().await);
    }
    let mut live_shards = Vec::new();
    for tx in live_to_shards {
        live_shards.push(tx.connect().await);
    }
    let log = AccessLog::open(config.access_log.as_deref()).map_err(ServeError::AccessLog)?;
    // HTTP handlers (the admin API, /metrics, the status page, Icecast)
    // are registered here; see the `http` module.
    let mut routes = Routes::new();
    let logins = !config.access.admin_users.is_empty() || config.access.admin_group.is_some();
    let access = Rc::new(AdminAccess::new(config.admin_token.as_ref(), &config.admin_allow).with_logins(logins));
    if access.is_on() {
        let allow: Vec<String> = config.admin_allow.iter().map(ToString::to_string).collect();
        info!(allow = %allow.join(", "), "admin API on at /api/v1/, status page at /");
    }
    admin::register(&mut routes, access, config.metrics_allow.clone());
    routes.add_suffix(
        ".mp3",
        &["GET"],
        Files {
            queue_bytes: config.listener_queue_bytes,
        },
    );
    // Live mounts may have any name: their listeners' GET and their
    // sources' SOURCE and PUT go to any path no other handler owns.
    routes.add_any(
        &["GET"],
        web::BodyMode::Whole,
        Files {
            queue_bytes: config.listener_queue_bytes,
        },
    );
    routes.add_any(&["SOURCE", "PUT"], web::BodyMode::Stream, Sources);
    routes.add(crate::icecast::metadata::PATH, &["GET"], MetadataUpdate);
    let mut door = Door::with_routes(routes)
        .with_access(door_access)
        .with_feedback(config.nack);
    if !config.publish.is_empty() {
        let mut secret = [0u8; 32];
        if let Err(e) = getrandom::getrandom(&mut secret) {
            warn!(error = %e, "no random numbers for the publishers' Digest nonces; publishing stays off");
        } else {
            for rule in &config.publish {
                info!(prefix = %rule.prefix, user = %rule.user, "publishing allowed");
            }
            door = door.with_publish_rules(live::publish::Gate::new(config.publish.clone(), secret, now));
        }
    }
    let (channel_handles, channel_commands) = channels::handles(&config.channels);
    let ctl = Rc::new_cyclic(|me: &std::rc::Weak<Control>| {
        let myself = me.clone();
        let me = me.clone();
        Control {
            me: myself,
            live: RefCell::new(
                live::Registry::new(
                    config.publish_replace,
                    config.publish_max_bitrate,
                    config.session_timeout,
                )
                .with_grace(config.publish_grace.saturating_mul(1_000_000_000)),
            ),
            live_shards,
            live_channel_full: Cell::new(0),
            relays: RefCell::new(relay::runs(&config.relays)),
            relay_viewers: RefCell::default(),
            pushing: RefCell::default(),
            push_feeds: RefCell::default(),
            stopping: Cell::new(false),
            mounts: RefCell::new(Mounts::new()),
            door,
            limits: conn::limits(&config),
            library,
            admission: RefCell::new(Admission::new(admission::Limits::from_config(&config), shards.len())),
            listeners: RefCell::new(Listeners::new(config.max_listeners, shards.len())),
            shards,
            waiting: RefCell::default(),
            next_reply: Cell::new(1),
            log: RefCell::new(log),
            tunnels: RefCell::new(Registry::new(PAIRING_WINDOW)),
            tunnel_legs: RefCell::default(),
            tunnel_starts: RefCell::default(),
            held_posts: RefCell::default(),
            release: Rc::new(move |ip| {
                if let Some(ctl) = me.upgrade() {
                    ctl.admission.borrow_mut().disconnect(ip);
                }
            }),
            tls: RefCell::new(tls),
            requests: RefCell::default(),
            history: RefCell::default(),
            started: Instant::now(),
            idle: RefCell::default(),
            channels: channel_handles,
            config,
        }
    });
    channels::spawn(&ctl, channel_commands);
    for spec in ctl.config.radio.clone() {
        glommio::spawn_local(icecast::radio(ctl.clone(), spec)).detach();
    }
    for spec in ctl.config.icecast_relay.clone() {
        glommio::spawn_local(icecast::relay(ctl.clone(), spec)).detach();
    }
    let mut accept_tasks = Vec::new();
    for l in listeners {
        let addr = l.socket.local_addr().ok();
        // SAFETY: `into_raw_fd` releases the bound, listening socket's only
        // owner; the glommio listener takes it over.
        let socket = unsafe { TcpListener::from_raw_fd(l.socket.into_raw_fd()) };
        if let Some(addr) = addr {
            let what = match (l.rtsp, l.tls) {
                (_, true) => "RTSP and HTTP over TLS (rtsps://)",
                (true, _) => "RTSP and HTTP",
                _ => "HTTP",
            };
            info!(%addr, "listening for {what}");
        }
        let speaks = if l.rtsp { Speaks::Either } else { Speaks::HttpOnly };
        accept_tasks.push(glommio::spawn_local(accept(ctl.clone(), socket, speaks, l.tls)));
    }
    info!(
        shards = ctl.shards.len(),
        media = %ctl.config.media.display(),
        "streamalot is serving; try rtsp://127.0.0.1:{}/sample.mp4",
        ctl.config.rtsp_ports.first().copied().unwrap_or(8554)
    );
    ctl.start_relays();
    let (stopped_tx, stopped_rx) = local_channel::new_unbounded::<Box<ShardStats>>();
    let stopped_tx = Rc::new(stopped_tx);
    for (i, rx) in from_shards.into_iter().enumerate() {
        let rx = rx.connect().await;
        glommio::spawn_local(shard_events(ctl.clone(), i, rx, stopped_tx.clone())).detach();
    }

    // Signals are flags; look at them often enough to feel immediate.
    let interval = ctl.config.stats_interval.map(Duration::from_secs);
    let mut next_report = interval.map(|i| Instant::now() + i);
    let mut next_prune = Instant::now() + PRUNE_EVERY;
    let mut next_file_check = Instant::now() + FILE_CHECK_EVERY;
    let sample_every = Duration::from_secs(admin::SAMPLE_EVERY_SECS);
    let mut next_sample = Instant::now();
    let mut next_idle_sweep = Instant::now();
    loop {
        glommio::timer::sleep(Duration::from_millis(50)).await;
        let due = next_report.is_some_and(|t| Instant::now() >= t);
        if signals.take_report() || due {
            let stats = collect_stats(&ctl).await;
            report(&ctl.config, &stats, "streamalot: all shards");
            log_access_counters(&ctl.door);
            next_report = interval.map(|i| Instant::now() + i);
        }
        if signals.shutting_down() {
            ctl.stopping.set(true);
            break;
        }
        if signals.take_reopen() {
            match ctl.log.borrow_mut().reopen() {
                Ok(()) => info!("access log reopened"),
                Err(e) => warn!(error = %e, "cannot reopen the access log"),
            }
            if let Some(files) = &ctl.config.tls {
                // New connections get the new certificate; open ones keep
                // theirs. A broken pair keeps the old one serving.
                match super::tls::load(files) {
                    Ok(c) => {
                        *ctl.tls.borrow_mut() = Some(c);
                        info!(cert = %files.cert.display(), "TLS certificate reloaded");
                    }
                    Err(e) => warn!(error = %e, "cannot reload the TLS certificate; keeping the old one"),
                }
            }
        }
        if let Err(e) = ctl.log.borrow_mut().flush_if_due() {
            warn!(error = %e, "cannot write the access log");
        }
        ctl.expire_tunnel_legs();
        ctl.expire_publishers();
        if Instant::now() >= next_idle_sweep {
            ctl.sweep_idle();
            next_idle_sweep = Instant::now() + IDLE_SWEEP_EVERY;
        }
        if Instant::now() >= next_file_check {
            for path in ctl.library.check_files() {
                warn!(
                    file = %path.display(),
                    "a movie was truncated or rewritten in place: its sessions end, new ones get the new file \
                     (replace media files by renaming new ones over them)"
                );
            }
            next_file_check = Instant::now() + FILE_CHECK_EVERY;
        }
        // Only the admin API shows the samples.
        if ctl.config.admin_token.is_some() && Instant::now() >= next_sample {
            next_sample += sample_every;
            let ctl = ctl.clone();
            // Its own task: the shards may take a moment to answer.
            glommio::spawn_local(async move {
                let totals = collect_totals(&ctl).await;
                let at_secs = ctl.started.elapsed().as_secs_f64();
                ctl.history.borrow_mut().push(Sample {
                    at_secs,
                    packets: totals.0,
                    bytes: totals.1,
                });
            })
            .detach();
        }
        if Instant::now() >= next_prune {
            let dropped = ctl.library.prune(Instant::now(), UNUSED_FOR);
            if dropped > 0 {
                info!(dropped, cached = ctl.library.cached(), "let go of unused movies");
            }
            next_prune = Instant::now() + PRUNE_EVERY;
        }
    }
    info!("shutting down: saying goodbye to clients");
    for t in accept_tasks {
        let _ = t.cancel().await;
    }
    let keys: Vec<SessionKey> = ctl.live.borrow().publishers().map(|p| p.key).collect();
    for key in keys {
        ctl.stop_broadcast(key, "server shutdown", 200);
    }
    for s in &ctl.shards {
        let _ = s.send(ToShard::Command(Command::Shutdown)).await;
    }
    let mut total = ShardStats::default();
    for _ in 0..ctl.shards.len() {
        match glommio::timer::timeout(Duration::from_secs(5), async { Ok(stopped_rx.recv().await) }).await {
            Ok(Some(stats)) => total.merge(&stats),
            _ => break,
        }
    }
    // Give the last SessionEnded records a moment to arrive before the log closes.
    glommio::timer::sleep(Duration::from_millis(50)).await;
    let _ = ctl.log.borrow_mut().flush();
    report(&ctl.config, &total, "streamalot: totals at shutdown");
    log_access_counters(&ctl.door);
    Ok(())
}

/// The control core's access counters, where most requests are judged.
fn log_access_counters(door: &Door) {
    if let Some((s, rates)) = door.access_stats() {
        let delayed = |i: usize| rates[i].map_or(0, |r| r.delayed);
        info!(
            allowed = s.allowed,
            challenged = s.challenged,
            forbidden = s.forbidden,
            slowed_down = s.slowed_down,
            failed_logins = s.failed_logins,
            failed_logins_delayed = delayed(1),
            stale_nonces = s.stale_nonces,
            connections_refused = s.connections_refused,
            connections_delayed = s.connections_delayed,
            password_checks = s.password_checks,
            "access counters"
        );
    }
}

/// Prints the statistics, and writes them to `--stats-json` if asked.
fn report(config: &Config, stats: &ShardStats, title: &str) {
    print!("{}", stats.report(title));
    let _ = std::io::Write::flush(&mut std::io::stdout());
    if let Some(path) = &config.stats_json {
        if let Err(e) = write_json(path, &stats.to_json()) {
            warn!(file = %path.display(), error = %e, "cannot write the statistics");
        }
    }
}

/// Replaces `path` with `value`, whole: written beside it, then renamed over
/// it, so a reader never sees half a file.
fn write_json(path: &std::path::Path, value: &serde_json::Value) -> std::io::Result<()> {
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = std::path::PathBuf::from(partial);
    std::fs::write(&partial, format!("{value:#}\n"))?;
    std::fs::rename(&partial, path)
}

async fn shard_events(
    ctl: Rc<Control>,
    shard: usize,
    rx: ConnectedReceiver<FromShard>,
    stopped: Rc<local_channel::LocalSender<Box<ShardStats>>>,
) {
    while let Some(event) = rx.recv().await {
        match event {
            FromShard::Admit { client, ticket } => {
                let key = ctl
                    .admission
                    .borrow_mut()
                    .admit(client.ip(), Some(shard), crate::random::u64)
                    .map(|(_, key)| key);
                let ctl = ctl.clone();
                // On a task of its own: the shard may be busy, and its events
                // must keep flowing meanwhile.
                glommio::spawn_local(async move {
                    let _ = ctl.shards[shard].send(ToShard::Admission { ticket, key }).await;
                })
                .detach();
            }
            FromShard::Event(event) => match event {
                Event::Reply { reply, .. }
                | Event::Stats { reply, .. }
                | Event::Snapshot { reply, .. }
                | Event::Ended { reply, .. } => {
                    let waiter = ctl.waiting.borrow_mut().remove(&reply);
                    if let Some(w) = waiter {
                        let _ = w.try_send(event);
                    }
                }
                Event::SessionEnded { key, record } => {
                    if let Some(key) = key {
                        ctl.admission.borrow_mut().forget(key);
                        ctl.relay_viewers.borrow_mut().remove(&key);
                    }
                    ctl.log_record(&record);
                }
                Event::ListenerEnded { record } => {
                    ctl.listeners.borrow_mut().ended(shard);
                    ctl.log_record(&record);
                }
                Event::ConnectionClosed { client } => ctl.admission.borrow_mut().disconnect(client.ip()),
                Event::Stopped { stats } => {
                    let _ = stopped.try_send(stats);
                }
            },
            FromShard::LegClosed { client } => ctl.admission.borrow_mut().disconnect(client),
            FromShard::TunnelClosed { tunnel } => ctl.tunnels.borrow_mut().close(tunnel),
        }
    }
}

/// Asks every shard for its statistics and merges them.
async fn collect_stats(ctl: &Control) -> ShardStats {
    let mut total = ShardStats::default();
    for i in 0..ctl.shards.len() {
        let asked = ask(ctl, i, |reply| ToShard::Command(Command::Stats { reply })).await;
        if let Some(Event::Stats { stats, .. }) = asked {
            total.merge(&stats);
        }
    }
    let t = now();
    for p in ctl.live.borrow().publishers() {
        let l = total.live.entry(p.desc.path.clone()).or_default();
        let c = &p.ingest.counters;
        l.packets_in += c.packets;
        l.bytes_in += c.bytes;
        l.refused_in += c.refused();
        l.channel_full += c.channel_full;
        l.secs = t.saturating_sub(p.started) as f64 / 1e9;
    }
    total.live_channel_full += ctl.live_channel_full.get();
    total
}

/// Every shard's snapshot, in shard order; a shard that does not answer
/// (stopping) is left out.
async fn collect_snapshots(ctl: &Control, sessions: bool) -> Vec<Snapshot> {
    let mut all = Vec::with_capacity(ctl.shards.len());
    for i in 0..ctl.shards.len() {
        let asked = ask(ctl, i, |reply| ToShard::Command(Command::Snapshot { reply, sessions })).await;
        if let Some(Event::Snapshot { snapshot, .. }) = asked {
            all.push(*snapshot);
        }
    }
    all
}

/// Packets and bytes every shard has sent.
async fn collect_totals(ctl: &Control) -> (u64, u64) {
    let stats = collect_stats(ctl).await;
    (stats.packets, stats.bytes)
}

/// Sends a command to shard `i` and waits for its reply.
async fn ask(ctl: &Control, i: usize, make: impl FnOnce(ReplyId) -> ToShard) -> Option<Event> {
    let id = ctl.next_reply.get();
    ctl.next_reply.set(id + 1);
    let (tx, rx) = local_channel::new_bounded(1);
    ctl.waiting.borrow_mut().insert(id, tx);
    if ctl.shards[i].send(make(id)).await.is_err() {
        ctl.waiting.borrow_mut().remove(&id);
        return None;
    }
    rx.recv().await
}

async fn accept(ctl: Rc<Control>, listener: TcpListener, speaks: Speaks, tls: bool) {
    loop {
        let stream = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(client) = stream.peer_addr() else { continue };
        // Address rules and the connection rate first: a refused address
        // is closed before a byte of it is read or parsed.
        let delay = match ctl.door.admit(client.ip(), now()) {
            crate::access::Admission::Admit => 0,
            crate::access::Admission::Delay(d) => d,
            crate::access::Admission::RefuseAddress(v) => {
                info!(%client, verdict = ?v, "connection refused by the address rules");
                drop(stream);
                continue;
            }
            crate::access::Admission::RefuseRate { .. } => {
                info!(%client, "connection refused: too many new connections from this address");
                drop(stream);
                continue;
            }
        };
        if !ctl.admission.borrow_mut().connect(client.ip()) {
            // Past a connection limit: say so, then close. What the client
            // speaks is not known yet; on a shared port RTSP is assumed.
            glommio::spawn_local(async move {
                let mut out = Vec::new();
                if speaks == Speaks::HttpOnly {
                    let r = proto::http::Response::new(503);
                    web::write(&mut out, &r, proto::http::Version::Http11, false, false);
                } else {
                    Response::new(503, None).write_to(&mut out);
                }
                let mut stream = stream;
                let _ = stream.write_all(&out).await;
                let _ = stream.close().await;
            })
            .detach();
            continue;
        }
        let _ = stream.set_nodelay(true);
        let ctl = ctl.clone();
        let tls = if tls { ctl.tls.borrow().clone() } else { None };
        if tls.is_none() && delay == 0 {
            // Most connections: the task is the connection's alone. Through
            // `accepted`, its arguments and the states of the delay and the
            // handshake would stay in the task beside the connection's for
            // as long as it lives (624 bytes rather than 440).
            glommio::spawn_local(connection(ctl, stream, client, speaks)).detach();
        } else {
            glommio::spawn_local(accepted(ctl, stream, client, speaks, tls, delay)).detach();
        }
    }
}

/// An accepted connection's task: after the connection rate's delay and
/// the TLS handshake, if any, the connection. The handshake is boxed: it
/// happens once, and inline its state would set the size of every
/// connection's task for the connection's whole life (4.2 KB a connection
/// rather than 1.4).
#[allow(clippy::manual_async_fn, reason = "an async fn's future keeps its arguments twice")]
fn accepted(
    ctl: Rc<Control>,
    stream: TcpStream,
    client: SocketAddr,
    speaks: Speaks,
    tls: Option<Arc<futures_rustls::rustls::ServerConfig>>,
    delay: u64,
) -> impl Future<Output = ()> {
    // A block, not an `async fn`, for the reason `connection` gives.
    async move {
        if delay > 0 {
            // Over the connection rate's burst: read nothing for a while.
            glommio::timer::sleep(Duration::from_nanos(delay)).await;
        }
        let stream = match tls {
            None => stream,
            Some(config) => match Box::pin(super::tls::start(stream, config)).await {
                super::tls::Start::Plain(plain) => plain,
                super::tls::Start::Refused => {
                    ctl.admission.borrow_mut().disconnect(client.ip());
                    return;
                }
            },
        };
        connection(ctl, stream, client, speaks).await
    }
}

/// One connection's task, which lives as long as the connection: most of
/// them sit idle in `conn::serve`'s read while their media flows over UDP.
/// What happens after the loop (handing the connection to a shard, a
/// tunnel's GET or POST leg, a listener's stream) is boxed: inline, the largest of those states
/// (a tunnel's whole loop) would set the size of every idle connection's
/// task, 4.3 KB rather than 1.1 KB.
///
/// A function returning an `async move` block, not an `async fn`: an
/// `async fn` keeps its arguments twice in its future, as they were passed
/// and as the locals its body moves them into (160 bytes more a connection,
/// for the connection's whole life); a block uses what it captured in place.
#[allow(clippy::manual_async_fn, reason = "an async fn's future keeps its arguments twice")]
fn connection(ctl: Rc<Control>, mut stream: TcpStream, client: SocketAddr, speaks: Speaks) -> impl Future<Output = ()> {
    async move {
        let mut link = Link::new(0, client, stream.as_raw_fd(), speaks, Vec::new());
        // A connection that says nothing for a session timeout is stalled: the
        // idle sweep ends its read. It is watched only while in the loop, so the
        // sweep never touches a socket handed to a shard or closed.
        let mut wire = Watched::new(&ctl, &mut stream);
        let step = conn::serve(&*ctl, &mut link, &mut wire).await;
        drop(wire);
        match (step, link.leave.take()) {
            (Step::Leave, Some(Leave::Shard { shard, command })) => {
                let conn = link.clone_fd().map(|fd| Handover {
                    fd,
                    client,
                    pending: std::mem::take(&mut link.buf),
                    tunnel: None,
                });
                // Handed over, the shard owns the socket through its own
                // descriptor; this one is closed when the stream is dropped (no
                // shutdown: that would end the connection for the shard too),
                // and the connection's count moves with it: the shard reports
                // when it closes.
                if Box::pin(ctl.hand_over(shard, *command, conn)).await {
                    return;
                }
            }
            (Step::Leave, Some(Leave::Http(Takeover::TunnelGet(id)))) => {
                return Box::pin(tunnel_get(ctl, stream, client, id)).await;
            }
            (Step::Leave, Some(Leave::Http(Takeover::Listen(start)))) => {
                let gone = Box::pin(ctl.listen(&link, start)).await;
                if gone {
                    return;
                }
            }
            (Step::Leave, Some(Leave::Http(Takeover::Source(start)))) => {
                let pending = std::mem::take(&mut link.buf);
                return Box::pin(icecast::source(ctl, stream, client, pending, start)).await;
            }
            (Step::Leave, Some(Leave::Http(Takeover::TunnelPost(id, to)))) => {
                let counted = Counted::new(client.ip(), ctl.release.clone());
                let leg = PostLeg::new(stream, client, std::mem::take(&mut link.buf), counted);
                return Box::pin(ctl.post_leg(id, to, leg)).await;
            }
            _ => {}
        }
        if let Some(key) = link.publisher {
            ctl.end_publisher(key, "connection closed", 200);
        }
        let _ = stream.close().await;
        ctl.admission.borrow_mut().disconnect(client.ip());
    }
}

/// Runs tunnel `id` from its GET leg, answered already: the RTSP
/// conversation over its POST legs, until the client closes the GET or the
/// tunnel moves to a shard.
async fn tunnel_get(ctl: Rc<Control>, mut stream: TcpStream, client: SocketAddr, id: TunnelId) {
    let Some(legs) = ctl.tunnel_starts.borrow_mut().remove(&id) else {
        // Given up before this task ran.
        let _ = stream.close().await;
        ctl.admission.borrow_mut().disconnect(client.ip());
        return;
    };
    // The GET leg carries nothing from the client, so silence on it is no
    // sign of a stall; the POST legs time out instead.
    let _ = stream.set_read_timeout(None);
    let mut link = Link::new(0, client, stream.as_raw_fd(), Speaks::Rtsp, Vec::new());
    let mut wire = TunnelWire::new(stream, None, Decoder::new(), legs, ctl.idle_timeout());
    let step = conn::serve(&*ctl, &mut link, &mut wire).await;
    let (mut get, post, decoder, legs) = wire.into_parts();
    if let (Step::Leave, Some(Leave::Shard { shard, command })) = (step, link.leave.take()) {
        let post = post.map(|p| p.hand_over().map(Box::new)).transpose();
        let conn = post.and_then(|post| {
            Ok(Handover {
                fd: link.clone_fd()?,
                client,
                pending: std::mem::take(&mut link.buf),
                tunnel: Some(Carry { id, post, decoder }),
            })
        });
        if ctl.hand_over(shard, *command, conn).await {
            // From now on (the tunnel's Adopt sent first) POSTs go to the
            // shard; those that came here meanwhile follow.
            ctl.tunnels.borrow_mut().moved(id, Place::Shard(shard));
            ctl.tunnel_legs.borrow_mut().remove(&id);
            while let Some(Some(leg)) = futures_lite::future::poll_once(legs.recv()).await {
                ctl.post_leg(id, PostTo::Tunnel(Place::Shard(shard)), leg).await;
            }
            return;
        }
    }
    ctl.tunnels.borrow_mut().close(id);
    ctl.tunnel_legs.borrow_mut().remove(&id);
    drop(legs);
    let _ = get.close().await;
    ctl.admission.borrow_mut().disconnect(client.ip());
}

/// A control-core connection as the loop's wire: the idle sweep knows when
/// each of its reads began, and ends one that waits too long.
struct Watched<'a> {
    ctl: &'a Control,
    stream: &'a mut TcpStream,
    ticket: idle::Ticket,
    /// A publisher's connection may be silent for good.
    silence_ok: bool,
}

impl<'a> Watched<'a> {
    fn new(ctl: &'a Control, stream: &'a mut TcpStream) -> Watched<'a> {
        let ticket = ctl.idle.borrow_mut().add(stream.as_raw_fd());
        Watched {
            ctl,
            stream,
            ticket,
            silence_ok: false,
        }
    }
}

impl Wire for Watched<'_> {
    // A block, not an `async fn`: this future is part of every idle
    // connection's task, and an `async fn` would keep `self` twice.
    fn read_more(&mut self, buf: &mut Vec<u8>) -> impl Future<Output = std::io::Result<usize>> {
        if !self.silence_ok {
            self.ctl.idle.borrow_mut().waiting(self.ticket, now());
        }
        async move {
            let read = conn::read_chunk(self.stream, buf).await;
            self.ctl.idle.borrow_mut().arrived(self.ticket);
            read
        }
    }

    async fn write_out(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    fn allow_silence(&mut self) {
        self.silence_ok = true;
    }
}

impl Drop for Watched<'_> {
    fn drop(&mut self) {
        // Before the stream can be closed or handed over: the sweep must
        // never act on a descriptor this connection no longer owns.
        self.ctl.idle.borrow_mut().remove(self.ticket);
    }
}

impl Control {
    /// How long a connection may say nothing before it is closed.
    fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.config.session_timeout.max(1))
    }

    /// Ends the reads that waited a read timeout for bytes: each such
    /// connection's loop sees its end of stream and closes it as a client's
    /// going would.
    fn sweep_idle(&self) {
        let timeout = self.idle_timeout().as_nanos() as u64;
        self.idle.borrow_mut().expire(now(), timeout, |fd| {
            debug!(fd, "a connection said nothing for the read timeout; closing");
            // SAFETY: `fd` is the socket of a connection still in the loop:
            // its slot is removed (`Watched`'s drop) before its stream is
            // closed or handed over, so the descriptor is open and this
            // connection's. `shutdown` closes no descriptor; it ends the
            // socket's reading, which wakes the pending read with its end.
            unsafe {
                libc::shutdown(fd, libc::SHUT_RD);
            }
        });
    }

    /// Sends a connection (or its failure to be duplicated) to `shard` with
    /// the new session's `command`. On failure the session is forgotten,
    /// and `false` says the connection stays here to be closed.
    async fn hand_over(&self, shard: usize, command: Command, conn: std::io::Result<Handover>) -> bool {
        let key = match &command {
            Command::NewSession { key, .. } | Command::NewViewer { key, .. } => Some(*key),
            _ => None,
        };
        let sent = match conn {
            Ok(conn) => self.shards[shard].send(ToShard::Adopt { conn, command }).await.is_ok(),
            Err(e) => {
                warn!(error = %e, "cannot hand a connection over");
                false
            }
        };
        if !sent {
            if let Some(key) = key {
                self.admission.borrow_mut().forget(key);
            }
        }
        sent
    }

    /// Sends an Icecast listener, admitted by its handler, to the shard with
    /// the fewest. `false` if it could not go: it is no longer counted, and
    /// its connection stays here to be closed.
    async fn listen(&self, link: &Link, start: Box<ListenerStart>) -> bool {
        let conn = link.clone_fd().map(|fd| Handover {
            fd,
            client: link.client,
            pending: Vec::new(),
            tunnel: None,
        });
        let shard = self.listeners.borrow_mut().place();
        let sent = match conn {
            Ok(conn) => self.shards[shard].send(ToShard::Listen { conn, start }).await.is_ok(),
            Err(e) => {
                warn!(error = %e, "cannot hand a listener over");
                false
            }
        };
        if !sent {
            self.listeners.borrow_mut().ended(shard);
        }
        sent
    }

    /// Takes a tunnel leg the door routed here: the registry pairs it.
    fn tunnel_leg(&self, client: IpAddr, leg: Leg, cookie: &Cookie) -> Reply {
        let refused = |r: crate::http::tunnel::Refusal| {
            debug!(%client, cookie = cookie.as_str(), ?leg, error = %r, "tunnel leg refused");
            Reply::Respond(proto::http::Response::new(r.status()))
        };
        match leg {
            Leg::Get => match self.tunnels.borrow_mut().get(cookie, client, now()) {
                Ok((id, _)) => {
                    let (tx, rx) = local_channel::new_bounded(LEG_QUEUE);
                    // A POST that came first is the tunnel's first leg.
                    if let Some(held) = self.held_posts.borrow_mut().remove(&id) {
                        let _ = tx.try_send(held);
                    }
                    self.tunnel_legs.borrow_mut().insert(id, tx);
                    self.tunnel_starts.borrow_mut().insert(id, rx);
                    Reply::Take {
                        head: Some(proto::tunnel::get_response()),
                        to: Takeover::TunnelGet(id),
                    }
                }
                Err(r) => refused(r),
            },
            Leg::Post => match self.tunnels.borrow_mut().post(cookie, client, now()) {
                Ok((id, to)) => Reply::Take {
                    head: None,
                    to: Takeover::TunnelPost(id, to),
                },
                Err(r) => refused(r),
            },
        }
    }

    /// Delivers a POST leg to tunnel `id`, wherever `to` says it is.
    async fn post_leg(&self, id: TunnelId, to: PostTo, leg: PostLeg) {
        match to {
            PostTo::Held => {
                self.held_posts.borrow_mut().insert(id, leg);
            }
            PostTo::Tunnel(Place::Control) => {
                let refused = give_leg(self.tunnel_legs.borrow().get(&id), leg);
                if let Some((leg, status)) = refused {
                    leg.refuse(status).await;
                }
            }
            PostTo::Tunnel(Place::Shard(shard)) => match leg.hand_over() {
                Ok(leg) => {
                    // A shard that has stopped takes the leg down with it.
                    let _ = self.shards[shard].send(ToShard::TunnelPost { tunnel: id, leg }).await;
                }
                Err(e) => warn!(error = %e, "cannot hand a tunnel's POST over"),
            },
        }
    }

    /// Gives up the tunnel legs that waited too long for each other: a GET
    /// is closed (its wire sees its channel of legs close), a POST answered
    /// 404.
    fn expire_tunnel_legs(&self) {
        let expired = self.tunnels.borrow_mut().expire(now());
        for x in expired {
            match x {
                Expired::Get(id) => {
                    debug!(tunnel = id, "a tunnel's GET had no POST in time");
                    self.tunnel_legs.borrow_mut().remove(&id);
                    self.tunnel_starts.borrow_mut().remove(&id);
                }
                Expired::Post(id) => {
                    if let Some(leg) = self.held_posts.borrow_mut().remove(&id) {
                        debug!(tunnel = id, "a tunnel's POST had no GET in time");
                        glommio::spawn_local(leg.refuse(404)).detach();
                    }
                }
            }
        }
    }

    fn log_record(&self, record: &AccessRecord) {
        if let Err(e) = self.log.borrow_mut().write(record) {
            warn!(error = %e, "cannot write the access log");
        }
    }

    /// The answer to a DESCRIBE of a live path: the broadcast's SDP, or 404
    /// where broadcasts are published and none is on the air. `None` for
    /// other paths.
    fn describe_live(&self, req: &Request, path: &str) -> Option<Response> {
        if let Some(desc) = self.live.borrow().on_air(path) {
            return Some(door::describe_sdp(req, path, &desc.sdp, self.door.feedback()));
        }
        let gate = self.door.publishing()?;
        gate.is_live_path(path).then(|| Response::new(404, req.cseq()))
    }

    /// A session key no session or publisher has.
    fn new_key(&self) -> SessionKey {
        loop {
            let k = crate::random::u64();
            if k != 0 && !self.exists(k) {
                return k;
            }
        }
    }

    /// The broadcast an `.sdp` file at `path` describes, put on the air if
    /// it is not yet: its ports bound (and groups joined), its readers
    /// started, the shards told. `None` if `path` is no such file.
    async fn sdp_source(&self, path: &str) -> Option<Arc<live::Description>> {
        if !path.ends_with(".sdp") {
            return None;
        }
        if let Some(d) = self.live.borrow().on_air(path) {
            return Some(d.clone());
        }
        let file = self.library.file(path).ok()?;
        let text = match std::fs::read(&file) {
            Ok(t) if t.len() <= MAX_SDP_FILE => t,
            Ok(_) => {
                warn!(path, "an .sdp file over 64 KiB; not a session description");
                return None;
            }
            Err(e) => {
                warn!(path, error = %e, "cannot read an .sdp file");
                return None;
            }
        };
        let id = self.live.borrow_mut().take_id();
        let (desc, listen) = match live::sdp_source::parse(id, path, &text) {
            Ok(x) => x,
            Err(e) => {
                warn!(path, error = %e, "an .sdp file that describes no broadcast");
                return None;
            }
        };
        let mut sockets = Vec::new();
        for l in &listen {
            match bind_source(l, self.config.bind, self.config.multicast_interface) {
                Ok(pair) => sockets.push((l.track, pair)),
                Err(e) => {
                    // Perhaps a viewer opened it meanwhile: its sockets have the ports.
                    if let Some(d) = self.live.borrow().on_air(path) {
                        return Some(d.clone());
                    }
                    warn!(path, port = l.port, error = %e, "cannot receive an .sdp file's stream");
                    return None;
                }
            }
        }
        let key = self.new_key();
        let desc = self.live.borrow_mut().open_source(key, desc, &listen, now());
        for (track, (rtp, rtcp)) in sockets {
            for (socket, is_rtcp) in [(rtp, false), (rtcp, true)] {
                glommio::spawn_local(udp_ingest(self.me.clone(), key, track, socket, is_rtcp, None)).detach();
            }
        }
        for tx in &self.live_shards {
            let _ = tx.send(live::ToShard::Start(desc.clone())).await;
        }
        self.start_pushes(&desc);
        info!(
            path,
            streams = desc.tracks.len(),
            "broadcast of an .sdp file on the air"
        );
        Some(desc)
    }

    /// An ANNOUNCE the publish rules allowed: a new publisher session,
    /// bound to this connection.
    fn announce(&self, link: &mut Link, req: &Request, path: &str, user: String) {
        if link.publisher.is_some() {
            // One broadcast per connection: its `$` frames are that one's.
            self.reply(link, Some(&req.method), &Response::new(455, req.cseq()));
            return;
        }
        let key = self.new_key();
        let (response, replaced) = self
            .live
            .borrow_mut()
            .announce(key, path, req, link.client, user, now());
        if let Some(old) = replaced {
            self.ended(old, "replaced by another publisher", 200, false);
        }
        self.end_broadcasts();
        if response.status == 200 {
            info!(client = %link.client, path, "broadcast announced");
            link.publisher = Some(key);
        } else {
            self.log_record(&AccessRecord::refused(link.client, req, response.status.code()));
        }
        self.reply(link, Some(&req.method), &response);
    }

    /// A record SETUP of publisher session `key`: interleaved on this
    /// connection, or to a UDP pair bound for it.
    fn publisher_setup(&self, link: &mut Link, key: SessionKey, req: &Request) {
        let wanted = self.live.borrow().wanted(key, req);
        let (track, wanted) = match wanted {
            Ok(w) => w,
            Err(r) => return self.reply(link, Some(&req.method), &r),
        };
        let path = match wanted {
            // The frames must come on the connection that announced.
            Wanted::Tcp(..) if link.publisher != Some(key) => {
                return self.reply(link, Some(&req.method), &Response::new(461, req.cseq()));
            }
            Wanted::Tcp(rtp_channel, rtcp_channel) => LivePath::Tcp {
                rtp_channel,
                rtcp_channel,
            },
            Wanted::Udp(rtp, rtcp) => {
                let pair = net::bind_pair(self.config.bind, self.config.rtp_ports.clone());
                let (pair, ports) = match pair.and_then(|p| p.ports().map(|ports| (p, ports))) {
                    Ok(p) => p,
                    Err(e) => {
                        warn!(error = %e, "no UDP port pair for a publisher; widen --rtp-ports");
                        return self.reply(link, Some(&req.method), &Response::new(453, req.cseq()));
                    }
                };
                let from = Some(link.client.ip());
                let net::UdpPair {
                    rtp: rtp_socket,
                    rtcp: rtcp_socket,
                } = pair;
                for (socket, is_rtcp) in [(rtp_socket, false), (rtcp_socket, true)] {
                    let ctl = self.me.clone();
                    glommio::spawn_local(udp_ingest(ctl, key, track, socket, is_rtcp, from)).detach();
                }
                LivePath::Udp {
                    client: (rtp, rtcp),
                    server: ports,
                }
            }
        };
        let response = self.live.borrow_mut().set_up(key, req, track, path, now());
        self.reply(link, Some(&req.method), &response);
    }

    /// A request naming publisher session `key`.
    async fn publisher_request(&self, link: &mut Link, key: SessionKey, req: &Request) {
        if req.method == proto::rtsp::message::Method::Setup {
            return self.publisher_setup(link, key, req);
        }
        let (response, started, gone) = self.live.borrow_mut().request(key, req, now());
        if let Some(desc) = started {
            // Before the answer: the shards know the broadcast before its
            // first packet, which the publisher sends once answered.
            for tx in &self.live_shards {
                let _ = tx.send(live::ToShard::Start(desc.clone())).await;
            }
            self.start_pushes(&desc);
        }
        if let Some(p) = gone {
            if link.publisher == Some(key) {
                link.publisher = None;
            }
            self.ended(p, "teardown", 200, true);
        }
        self.reply(link, Some(&req.method), &response);
    }

    /// Publisher `key`, while it records (media before its RECORD, or after
    /// its TEARDOWN, is not taken).
    fn recording(&self, key: SessionKey) -> Option<RefMut<'_, live::registry::Publisher>> {
        RefMut::filter_map(self.live.borrow_mut(), |r| {
            r.get_mut(key).filter(|p| p.phase == Phase::Recording)
        })
        .ok()
    }

    /// Media from publisher `key` for stream `track`: RTP, or RTCP.
    fn ingest(&self, key: SessionKey, track: usize, rtcp: bool, data: &[u8]) {
        let t = now();
        let Some(mut p) = self.recording(key) else { return };
        let id = p.desc.id;
        if rtcp {
            relay::note_bye(&mut p, track, data);
            let report = p.ingest.rtcp(track, data);
            drop(p);
            self.feed_pushes(id, track, true, || bytes::Bytes::copy_from_slice(data));
            if let Some((ntp, rtp_ts)) = report {
                for tx in &self.live_shards {
                    let report = live::ToShard::Report {
                        id,
                        track: track as u8,
                        ntp,
                        rtp_ts,
                        at: t,
                    };
                    // A report lost to a full channel is made good by the next.
                    let _ = tx.try_send(report);
                }
            }
            return;
        }
        let result = p.ingest.rtp(track, data, t);
        drop(p);
        self.fan_out(key, id, track, result);
    }

    /// Feeds a packet of publisher `key`'s stream `track` that is already
    /// owned as `Bytes` (a channel's) to the live ingest, as
    /// [`ingest`](Self::ingest) does, without copying it.
    fn ingest_owned(&self, key: SessionKey, track: usize, data: bytes::Bytes) {
        let t = now();
        let Some(mut p) = self.recording(key) else { return };
        let id = p.desc.id;
        let result = p.ingest.rtp_owned(track, data, t);
        drop(p);
        self.fan_out(key, id, track, result);
    }

    /// A packet the ingest took to every shard (and the pushes), or the
    /// refusal logged.
    fn fan_out(
        &self,
        key: SessionKey,
        id: live::BroadcastId,
        track: usize,
        result: Result<live::LivePacket, live::ingest::Refused>,
    ) {
        match result {
            Ok(packet) => {
                self.feed_pushes(id, track, false, || packet.data.clone());
                let mut full = 0;
                for tx in &self.live_shards {
                    let news = live::ToShard::Packet {
                        id,
                        packet: packet.clone(),
                    };
                    if tx.try_send(news).is_err() {
                        full += 1;
                    }
                }
                if full > 0 {
                    self.live_channel_full.set(self.live_channel_full.get() + full);
                    if let Some(p) = self.live.borrow_mut().get_mut(key) {
                        p.ingest.counters.channel_full += full;
                    }
                }
            }
            Err(e) => {
                let registry = self.live.borrow();
                let Some(p) = registry.get(key) else { return };
                let c = p.ingest.counters;
                let refused = c.refused();
                let of_kind = match e {
                    live::ingest::Refused::Malformed(_) => c.malformed,
                    live::ingest::Refused::OverBudget => c.over_budget,
                    _ => c.wrong_stream,
                };
                // Said at the 1st, 2nd, 4th, 8th... refusal of each kind:
                // clear, and never a flood of its own.
                if of_kind.is_power_of_two() {
                    warn!(path = %p.desc.path, client = %p.client, error = %e, refused, "publisher's packet refused");
                }
            }
        }
    }

    /// Ends publisher `key`'s session, if it is still on; its broadcast
    /// waits out the publish grace for it to come back.
    fn end_publisher(&self, key: SessionKey, why: &str, status: u16) {
        let gone = self.live.borrow_mut().remove(key);
        if let Some(p) = gone {
            self.ended(p, why, status, true);
        }
    }

    /// Ends publisher `key`'s session and its broadcast, at once.
    fn stop_broadcast(&self, key: SessionKey, why: &str, status: u16) {
        let gone = self.live.borrow_mut().remove(key);
        if let Some(p) = gone {
            self.ended(p, why, status, false);
        }
    }

    /// Tells the shards of the broadcasts the registry says are over.
    fn end_broadcasts(&self) {
        let over = self.live.borrow_mut().take_over(now());
        if over.is_empty() {
            return;
        }
        for &id in &over {
            self.end_pushes(id);
        }
        if let Some(ctl) = self.me.upgrade() {
            glommio::spawn_local(async move {
                for id in over {
                    for tx in &ctl.live_shards {
                        let _ = tx.send(live::ToShard::End { id }).await;
                    }
                }
            })
            .detach();
        }
    }

    /// A publisher gone: its access-log line, and its broadcast's end for
    /// the shards (after every packet sent them before), unless
    /// `may_wait` and the broadcast waits out the publish grace.
    fn ended(&self, p: Publisher, why: &str, status: u16, may_wait: bool) {
        let c = p.ingest.counters;
        info!(
            path = %p.desc.path, client = %p.client, why,
            packets = c.packets, bytes = c.bytes, refused = c.refused(),
            "broadcast over"
        );
        self.log_record(&p.record(now(), status));
        if p.phase == Phase::Recording {
            let id = p.desc.id;
            self.end_pushes(id);
            if may_wait && self.live.borrow_mut().leave(&p, now()) {
                info!(
                    path = %p.desc.path,
                    grace_secs = self.config.publish_grace,
                    "publisher gone; its viewers wait for it"
                );
                return;
            }
            if let Some(ctl) = self.me.upgrade() {
                glommio::spawn_local(async move {
                    for tx in &ctl.live_shards {
                        let _ = tx.send(live::ToShard::End { id }).await;
                    }
                })
                .detach();
            }
        }
    }

    /// Ends the broadcasts whose publishers went silent, and announcements
    /// never recorded.
    fn expire_publishers(&self) {
        let gone = self.live.borrow_mut().expire(now());
        for (p, why) in gone {
            self.ended(p, why, 408, true);
        }
        self.end_broadcasts();
    }

    /// Answers a SETUP that opened no session with `status`, and logs it.
    fn refuse(&self, link: &mut Link, req: &Request, status: u16) {
        self.log_record(&AccessRecord::refused(link.client, req, status));
        self.reply(link, Some(&req.method), &Response::new(status, req.cseq()));
    }

    /// Writes an RTSP response to a request with `method` (`None`: one
    /// that did not parse), and counts it.
    fn reply(&self, link: &mut Link, method: Option<&proto::rtsp::message::Method>, response: &Response) {
        self.requests.borrow_mut().count(method, response.status.code());
        response.write_to(&mut link.out);
    }
}

impl Host for Control {
    fn limits(&self) -> &Limits {
        &self.limits
    }

    fn door(&self) -> &Door {
        &self.door
    }

    fn exists(&self, key: SessionKey) -> bool {
        self.admission.borrow().shard_of(key).is_some() || self.live.borrow().is_publisher(key)
    }

    async fn execute(&self, link: &mut Link, req: Request, route: Route) -> Step {
        let method = req.method.clone();
        let method = Some(&method);
        match route {
            Route::Answer(response) => self.reply(link, method, &response),
            Route::Describe { path } => {
                if let Some(relayed) = self.relay_on_air(&path).await {
                    let response = match relayed {
                        Ok(desc) => door::describe_sdp(&req, &path, &desc.sdp, self.door.feedback()),
                        Err(status) => Response::new(status, req.cseq()),
                    };
                    self.reply(link, Some(&req.method), &response);
                    return Step::Continue;
                }
                if let Some(response) = self.describe_live(&req, &path) {
                    self.reply(link, Some(&req.method), &response);
                    return Step::Continue;
                }
                if let Some(desc) = self.sdp_source(&path).await {
                    self.reply(
                        link,
                        Some(&req.method),
                        &door::describe_sdp(&req, &path, &desc.sdp, self.door.feedback()),
                    );
                    return Step::Continue;
                }
                let movie = open_movie(&self.library, &path).await;
                let response = door::describe(&req, &path, movie.as_deref(), self.door.feedback());
                self.reply(link, method, &response);
            }
            Route::Open { path, interleaved } => return setup(self, link, req, path, interleaved).await,
            Route::Announce { path, user } => self.announce(link, &req, &path, user),
            Route::Publish { .. } => match link.publisher {
                Some(key) => self.publisher_setup(link, key, &req),
                // A record SETUP on a connection that announced nothing.
                None => self.reply(link, Some(&req.method), &Response::new(455, req.cseq())),
            },
            Route::Session(key) if self.live.borrow().is_publisher(key) => {
                self.publisher_request(link, key, &req).await;
            }
            Route::Session(key) => {
                let cseq = req.cseq().map(str::to_owned);
                let Some(shard) = self.admission.borrow().shard_of(key) else {
                    // Ended while the request was on its way.
                    self.reply(link, method, &Response::new(454, cseq.as_deref()));
                    return Step::Continue;
                };
                let client = link.client;
                let asked = ask(self, shard, |reply| {
                    ToShard::Command(Command::Request {
                        key,
                        request: req,
                        client,
                        reply,
                    })
                })
                .await;
                match asked {
                    Some(Event::Reply { response, .. }) => self.reply(link, method, &response),
                    _ => self.reply(link, method, &Response::new(503, cseq.as_deref())),
                }
            }
        }
        Step::Continue
    }

    /// Answers what did not parse as a request (or was neither RTSP nor HTTP).
    fn answer(&self, link: &mut Link, response: &Response) {
        self.reply(link, None, response);
    }

    /// `$` frames on a control core's connection: a publisher's media, or
    /// (from anyone else) RTCP from a client that has no session here, or
    /// garbage, which changes nothing.
    fn interleaved(&self, link: &Link, channel: u8, data: &[u8]) {
        let Some(key) = link.publisher else { return };
        let track = self.live.borrow().get(key).and_then(|p| p.channel(channel));
        if let Some((track, rtcp)) = track {
            self.ingest(key, track, rtcp, data);
        }
    }

    async fn execute_http(&self, link: &mut Link, req: proto::http::Request, route: HttpRoute) -> Step {
        let version = req.head.version;
        let head_only = req.head.method == "HEAD";
        let mut keep_alive = req.head.keep_alive();
        let reply = match route {
            HttpRoute::Answer(r) => Reply::Respond(r),
            HttpRoute::Handler { handler, .. } => {
                let cx = Context {
                    client: link.client,
                    server: self,
                };
                handler.serve(&req, cx).await
            }
            HttpRoute::Tunnel { leg, cookie } => {
                // A tunnel leg that is answered is refused: it goes.
                keep_alive = false;
                self.tunnel_leg(link.client.ip(), leg, &cookie)
            }
        };
        match reply {
            Reply::Respond(r) => {
                debug!(client = %link.client, method = req.head.method, target = req.head.target, status = r.status, "HTTP");
                web::write(&mut link.out, &r, version, keep_alive, head_only);
                if r.closes(keep_alive) {
                    Step::Close
                } else {
                    Step::Continue
                }
            }
            Reply::Take { head, to } => {
                if let Some(head) = head {
                    web::write(&mut link.out, &head, version, false, head_only);
                }
                link.leave = Some(Leave::Http(to));
                Step::Leave
            }
        }
    }
}

impl ServerView for Control {
    fn admin_login(
        &self,
        client: std::net::IpAddr,
        method: &str,
        target: &str,
        authorization: &[&str],
    ) -> Option<door::Gate> {
        if !self.door.has_access() {
            return None;
        }
        let path = target.split_once('?').map_or(target, |(p, _)| p);
        let unix_time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Some(self.door.check(&crate::access::Request {
            client,
            class: crate::access::Class::Admin,
            method,
            uri: target,
            path,
            authorization,
            now: now(),
            unix_time,
        }))
    }

    fn counts(&self) -> Counts {
        let a = self.admission.borrow();
        Counts {
            connections: a.connections(),
            sessions: a.sessions(),
            per_shard: a.loads().to_vec(),
            tunnels: self.tunnels.borrow().len(),
            listeners: self.listeners.borrow().count(),
        }
    }

    fn stats(&self) -> Pin<Box<dyn Future<Output = ShardStats> + '_>> {
        Box::pin(collect_stats(self))
    }

    fn open_mp3<'a>(&'a self, path: &'a str) -> Pin<Box<dyn Future<Output = Result<Arc<Mp3>, LibraryError>> + 'a>> {
        Box::pin(open_mp3(&self.library, path))
    }

    fn admit_listener(&self, _client: SocketAddr) -> bool {
        self.listeners.borrow_mut().admit()
    }

    fn check_source(&self, path: &str, authorization: &[&str]) -> Result<String, u16> {
        match self.door.publishing() {
            Some(gate) => gate.check_basic(path, authorization.iter().copied()),
            None => Err(403),
        }
    }

    fn open_mount(&self, path: &str, client: SocketAddr, user: String, info: IceInfo) -> Result<MountId, MountError> {
        Control::open_mount(self, path, Feed::Source, Some(client), Some(user), info)
    }

    fn mount(&self, path: &str) -> Option<Mount> {
        self.mounts.borrow().get(path).cloned()
    }

    fn mounts(&self) -> Vec<Mount> {
        self.mounts.borrow().iter().cloned().collect()
    }

    fn set_mount_title(&self, path: &str, title: &str) -> bool {
        let set = self.mounts.borrow_mut().set_title(path, title);
        match set {
            Some((id, metadata)) => {
                self.send_mount_title(id, metadata);
                true
            }
            None => false,
        }
    }

    fn config(&self) -> &Config {
        &self.config
    }

    fn uptime_secs(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    fn library_cached(&self) -> usize {
        self.library.cached()
    }

    fn snapshots(&self, sessions: bool) -> Pin<Box<dyn Future<Output = Vec<Snapshot>> + '_>> {
        Box::pin(collect_snapshots(self, sessions))
    }

    fn end_session(&self, key: SessionKey) -> Pin<Box<dyn Future<Output = bool> + '_>> {
        Box::pin(async move {
            let Some(shard) = self.admission.borrow().shard_of(key) else {
                return false;
            };
            let asked = ask(self, shard, |reply| ToShard::Command(Command::End { key, reply })).await;
            let ended = matches!(asked, Some(Event::Ended { found: true, .. }));
            if ended {
                info!(session = %door::session_id(key), "session ended by the operator");
            }
            ended
        })
    }

    fn reload_library(&self) -> usize {
        // Indexing is left to the next request for each movie, off this
        // thread's hot path as always; here only the cache is let go of.
        let dropped = self.library.prune(Instant::now(), Duration::ZERO);
        info!(dropped, cached = self.library.cached(), "media library reloaded");
        dropped
    }

    fn control_requests(&self) -> RequestCounts {
        self.requests.borrow().clone()
    }

    fn throughput(&self) -> Vec<Sample> {
        self.history.borrow().samples()
    }

    fn publishers(&self) -> Vec<web::PublisherView> {
        let t = now();
        self.live
            .borrow()
            .publishers()
            .map(|p| {
                let c = p.ingest.counters;
                web::PublisherView {
                    id: p.session_id.clone(),
                    path: p.desc.path.clone(),
                    client: p.client.ip(),
                    user: p.user.clone(),
                    on_air: p.phase == Phase::Recording,
                    transport: match (p.origin.is_some(), p.uses_udp()) {
                        _ if p.channel => "channel",
                        (true, true) => "relay-udp",
                        (true, false) => "relay-tcp",
                        _ if p.client.port() == 0 => "sdp",
                        (false, true) => "udp",
                        (false, false) => "tcp",
                    },
                    streams: p.desc.tracks.iter().map(|t| (t.kind.clone(), t.clock_rate)).collect(),
                    packets_in: c.packets,
                    bytes_in: c.bytes,
                    refused_in: c.refused(),
                    secs: t.saturating_sub(p.started) as f64 / 1e9,
                }
            })
            .collect()
    }

    fn relays(&self) -> Vec<web::RelayView> {
        let mut all: Vec<web::RelayView> = self
            .relays
            .borrow()
            .values()
            .map(|r| web::RelayView {
                path: r.relay.path.clone(),
                origin: relay::shown(r.relay.url.as_str()),
                transport: match r.relay.transport {
                    live::relay::RelayTransport::Tcp => "tcp",
                    live::relay::RelayTransport::Udp => "udp",
                },
                mode: match r.relay.mode {
                    live::relay::Mode::OnDemand => "on-demand",
                    live::relay::Mode::Always => "always",
                },
                state: r.state.name(),
                plays: r.plays,
                failures: r.failures,
                last_error: r.last_error.as_ref().map(|e| e.1.clone()),
            })
            .collect();
        all.sort_by(|a, b| a.path.cmp(&b.path));
        all
    }

    fn channels(&self) -> Vec<web::ChannelView> {
        channels::views(self)
    }

    fn channel_action<'a>(
        &'a self,
        path: &'a str,
        action: web::ChannelAction,
    ) -> Pin<Box<dyn Future<Output = web::ChannelOutcome> + 'a>> {
        Box::pin(channels::act(self, path, action))
    }

    fn stop_publisher(&self, id: &str) -> bool {
        let key = self
            .live
            .borrow()
            .publishers()
            .find(|p| p.session_id == id)
            .map(|p| p.key);
        match key {
            Some(key) => {
                self.stop_broadcast(key, "stopped by the admin API", 200);
                true
            }
            None => false,
        }
    }
}

/// Largest `.sdp` file read.
const MAX_SDP_FILE: usize = 64 * 1024;

/// The RTP and RTCP sockets of one stream of an `.sdp` source: on the
/// server's address, or for a multicast group on any address with the group
/// joined on `interface`.
fn bind_source(
    l: &live::sdp_source::Listen,
    bind: IpAddr,
    interface: Option<std::net::Ipv4Addr>,
) -> std::io::Result<(std::net::UdpSocket, std::net::UdpSocket)> {
    let one = |port: u16| -> std::io::Result<std::net::UdpSocket> {
        let ip = match l.group {
            Some(_) => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            None => bind,
        };
        let addr = SocketAddr::new(ip, port);
        let s = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )?;
        if let Some(group) = l.group {
            // Other receivers of the group on this box may have the port too.
            s.set_reuse_address(true)?;
            s.bind(&addr.into())?;
            s.join_multicast_v4(&group, &interface.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED))?;
        } else {
            s.bind(&addr.into())?;
        }
        s.set_nonblocking(true)?;
        // A burst of a key frame must not overflow the default buffer.
        let _ = s.set_recv_buffer_size(1 << 20);
        Ok(s.into())
    };
    Ok((one(l.port)?, one(l.port.wrapping_add(1))?))
}

/// Reads one UDP socket of publisher `key`'s stream `track` (its RTP, or its
/// RTCP) until the publisher is gone. With `from`, datagrams from any other
/// address are ignored: nobody else can inject into a publisher's broadcast
/// (an `.sdp` source takes what reaches its ports, as DSS's did).
async fn udp_ingest(
    ctl: std::rc::Weak<Control>,
    key: SessionKey,
    track: usize,
    socket: std::net::UdpSocket,
    rtcp: bool,
    from: Option<IpAddr>,
) {
    // SAFETY: `into_raw_fd` releases the bound socket's only owner; the
    // glommio socket takes it over.
    let socket = unsafe { glommio::net::UdpSocket::from_raw_fd(socket.into_raw_fd()) };
    // Wakes now and then to see whether the publisher is still there.
    let _ = socket.set_read_timeout(Some(Duration::from_secs(1)));
    let mut buf = vec![0u8; 65_536];
    loop {
        let got = socket.recv_from(&mut buf).await;
        let Some(ctl) = ctl.upgrade() else { return };
        if !ctl.live.borrow().is_publisher(key) {
            return;
        }
        match got {
            Ok((n, peer)) if from.is_none_or(|f| peer.ip() == f) => ctl.ingest(key, track, rtcp, &buf[..n]),
            Ok(_) => {}
            // A timeout (the check above is its purpose), or an error a
            // moment may clear.
            Err(_) => glommio::timer::sleep(Duration::from_millis(1)).await,
        }
    }
}

/// A SETUP that opens a session: open the movie, admit the session, and
/// send it to its shard, with the connection if it is to carry the media.
async fn setup(ctl: &Control, link: &mut Link, req: Request, path: String, interleaved: bool) -> Step {
    enum Target {
        Movie(Arc<loader::Movie>),
        Live(Arc<live::Description>),
    }
    let mut on_air = ctl.live.borrow().on_air(&path).cloned();
    if on_air.is_none() {
        match ctl.relay_on_air(&path).await {
            Some(Ok(desc)) => on_air = Some(desc),
            Some(Err(status)) => {
                ctl.refuse(link, &req, status);
                return Step::Continue;
            }
            None => on_air = ctl.sdp_source(&path).await,
        }
    }
    let target = match on_air {
        Some(desc) => {
            if let Some(h) = ctl.channels.iter().find(|h| h.path == path) {
                h.watched();
            }
            Target::Live(desc)
        }
        // Where broadcasts are published, there are no movies: a viewer
        // before the publisher (or after it) finds nothing.
        None if ctl.door.publishing().is_some_and(|g| g.is_live_path(&path)) => {
            ctl.refuse(link, &req, 404);
            return Step::Continue;
        }
        None => match open_movie(&ctl.library, &path).await {
            Ok(m) => Target::Movie(m),
            Err(e) => {
                ctl.refuse(link, &req, e.status());
                return Step::Continue;
            }
        },
    };
    let admitted = ctl
        .admission
        .borrow_mut()
        .admit(link.client.ip(), None, crate::random::u64);
    let Some((shard, key)) = admitted else {
        ctl.refuse(link, &req, 453);
        return Step::Continue;
    };
    if matches!(target, Target::Live(_)) && ctl.is_relay_path(&path) {
        ctl.relay_viewers.borrow_mut().insert(key, path.clone());
    }
    let client = link.client;
    let cseq = req.cseq().map(str::to_owned);
    let method = req.method.clone();
    let new_session = move |reply| match target {
        Target::Movie(movie) => Command::NewSession {
            key,
            path,
            movie,
            request: req,
            client,
            conn: None,
            reply,
        },
        Target::Live(broadcast) => Command::NewViewer {
            key,
            path,
            broadcast,
            request: req,
            client,
            conn: None,
            reply,
        },
    };
    if interleaved {
        // Whoever runs the connection hands it over, with what it holds.
        link.leave = Some(Leave::Shard {
            shard,
            command: Box::new(new_session(0)),
        });
        return Step::Leave;
    }
    let asked = ask(ctl, shard, |reply| ToShard::Command(new_session(reply))).await;
    match asked {
        // A refusal has been reported as a SessionEnded, which removes it.
        Some(Event::Reply { response, .. }) => ctl.reply(link, Some(&method), &response),
        _ => {
            ctl.admission.borrow_mut().forget(key);
            ctl.reply(link, Some(&method), &Response::new(503, cseq.as_deref()));
        }
    }
    Step::Continue
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future `f` returns, without making one.
    fn future_size<A, B, C, D, E, F, R>(_: fn(A, B, C, D, E, F) -> R) -> usize {
        std::mem::size_of::<R>()
    }

    #[test]
    fn an_idle_connections_task_stays_small() {
        // Every connection's task is this future, for as long as the
        // connection lives: most are idle RTSP connections of sessions
        // playing over UDP. A state inlined into it (a tunnel's loop, a
        // read buffer, the TLS handshake) made it 4.3 KB twice, most of a
        // session's memory.
        let size = future_size(accepted);
        assert!(size <= 640, "a connection's task is {size} bytes");
        // A plain connection's task, let in at once: the connection alone
        // (it was 656 bytes as `async fn`s, which keep their arguments twice).
        fn plain<A, B, C, D, R>(_: fn(A, B, C, D) -> R) -> usize {
            std::mem::size_of::<R>()
        }
        let size = plain(connection);
        assert!(size <= 448, "a plain connection's task is {size} bytes");
    }
}
