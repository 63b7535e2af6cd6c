//! The control core's driver: binds and accepts the RTSP ports, runs each
//! connection through the [connection loop](super::conn) and executes the
//! door's routes, keeps the connection and session counts
//! ([`Admission`]), writes the access log, and watches the signals and the
//! timers (statistics reports, the library's pruning).

use std::cell::{Cell, RefCell};
use std::net::{SocketAddr, TcpListener as StdListener};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::AsyncWriteExt;
use glommio::channels::local_channel;
use glommio::channels::shared_channel::{ConnectedReceiver, ConnectedSender, SharedReceiver, SharedSender};
use glommio::net::{TcpListener, TcpStream};
use proto::rtsp::message::{Limits, Request, Response};
use tracing::{info, warn};

use super::conn::{self, Host, Link, Step};
use super::{open_movie, FromShard, Handover, ServeError, Signals, ToShard};
use crate::access_log::{AccessLog, AccessRecord};
use crate::admission::{self, Admission};
use crate::config::Config;
use crate::door::{self, Door, Route};
use crate::library::Library;
use crate::pacer::{KeyMap, SessionKey};
use crate::shard::{Command, Event, ReplyId};
use crate::stats::ShardStats;

/// How often the library looks for movies to let go of.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// A movie no session holds is let go of when nobody asked for it this long.
const UNUSED_FOR: Duration = Duration::from_secs(300);

/// The control core's state, shared by its tasks (one thread: `RefCell`).
struct Control {
    config: Config,
    door: Door,
    limits: Limits,
    library: Arc<Library>,
    shards: Vec<ConnectedSender<ToShard>>,
    admission: RefCell<Admission>,
    /// Replies awaited from shards.
    waiting: RefCell<KeyMap<ReplyId, local_channel::LocalSender<Event>>>,
    next_reply: Cell<ReplyId>,
    log: RefCell<AccessLog>,
}

/// Binds the RTSP ports: without `SO_REUSEPORT` unless the operator asks
/// for sharing, so that a second server on a port in use fails at once
/// instead of quietly taking some of the first one's connections.
pub fn bind(config: &Config) -> Result<Vec<StdListener>, ServeError> {
    let mut listeners = Vec::new();
    for &port in &config.rtsp_ports {
        let addr = SocketAddr::new(config.bind, port);
        match net::bind_tcp_listener(addr, config.reuse_port) {
            Ok(l) => listeners.push(l),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => return Err(ServeError::PortInUse { port }),
            Err(source) => {
                return Err(ServeError::Bind {
                    what: format!("RTSP port {addr}"),
                    source,
                })
            }
        }
    }
    Ok(listeners)
}

pub async fn run(
    config: Config,
    library: Arc<Library>,
    listeners: Vec<StdListener>,
    signals: Signals,
    to_shards: Vec<SharedSender<ToShard>>,
    from_shards: Vec<SharedReceiver<FromShard>>,
) -> Result<(), ServeError> {
    let mut shards = Vec::new();
    for tx in to_shards {
        shards.push(tx.connect().await);
    }
    let log = AccessLog::open(config.access_log.as_deref()).map_err(ServeError::AccessLog)?;
    let ctl = Rc::new(Control {
        door: Door::new(),
        limits: conn::limits(&config),
        library,
        admission: RefCell::new(Admission::new(admission::Limits::from_config(&config), shards.len())),
        shards,
        waiting: RefCell::default(),
        next_reply: Cell::new(1),
        log: RefCell::new(log),
        config,
    });
    let mut accept_tasks = Vec::new();
    for l in listeners {
        let addr = l.local_addr().ok();
        // SAFETY: `into_raw_fd` releases the bound, listening socket's only
        // owner; the glommio listener takes it over.
        let l = unsafe { TcpListener::from_raw_fd(l.into_raw_fd()) };
        if let Some(addr) = addr {
            info!(%addr, "listening for RTSP");
        }
        accept_tasks.push(glommio::spawn_local(accept(ctl.clone(), l)));
    }
    info!(
        shards = ctl.shards.len(),
        media = %ctl.config.media.display(),
        "streamalot is serving; try rtsp://127.0.0.1:{}/sample.mp4",
        ctl.config.rtsp_ports.first().copied().unwrap_or(8554)
    );
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
    loop {
        glommio::timer::sleep(Duration::from_millis(50)).await;
        let due = next_report.is_some_and(|t| Instant::now() >= t);
        if signals.take_report() || due {
            let stats = collect_stats(&ctl).await;
            report(&ctl.config, &stats, "streamalot: all shards");
            next_report = interval.map(|i| Instant::now() + i);
        }
        if signals.shutting_down() {
            break;
        }
        if signals.take_reopen() {
            match ctl.log.borrow_mut().reopen() {
                Ok(()) => info!("access log reopened"),
                Err(e) => warn!(error = %e, "cannot reopen the access log"),
            }
        }
        if let Err(e) = ctl.log.borrow_mut().flush_if_due() {
            warn!(error = %e, "cannot write the access log");
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
    Ok(())
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
                Event::Reply { reply, .. } | Event::Stats { reply, .. } => {
                    let waiter = ctl.waiting.borrow_mut().remove(&reply);
                    if let Some(w) = waiter {
                        let _ = w.try_send(event);
                    }
                }
                Event::SessionEnded { key, record } => {
                    if let Some(key) = key {
                        ctl.admission.borrow_mut().forget(key);
                    }
                    ctl.log_record(&record);
                }
                Event::ConnectionClosed { client } => ctl.admission.borrow_mut().disconnect(client.ip()),
                Event::Stopped { stats } => {
                    let _ = stopped.try_send(stats);
                }
            },
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
    total
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

async fn accept(ctl: Rc<Control>, listener: TcpListener) {
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
        if !ctl.admission.borrow_mut().connect(client.ip()) {
            // Past a connection limit: say so, then close.
            glommio::spawn_local(async move {
                let mut out = Vec::new();
                Response::new(503, None).write_to(&mut out);
                let mut stream = stream;
                let _ = stream.write_all(&out).await;
                let _ = stream.close().await;
            })
            .detach();
            continue;
        }
        let _ = stream.set_nodelay(true);
        glommio::spawn_local(connection(ctl.clone(), stream, client)).detach();
    }
}

async fn connection(ctl: Rc<Control>, mut stream: TcpStream, client: SocketAddr) {
    // A connection that says nothing for a session timeout is stalled.
    let _ = stream.set_read_timeout(Some(Duration::from_secs(ctl.config.session_timeout.max(1))));
    let mut link = Link::new(0, client, stream.as_raw_fd(), Vec::new());
    let step = conn::serve(&*ctl, &mut link, &mut stream).await;
    if step == Step::HandedOver {
        // The shard owns the socket now through its own descriptor; this one
        // is closed when the stream is dropped (no shutdown: that would end
        // the connection for the shard too). The connection's count moves
        // with it: the shard reports when it closes.
        return;
    }
    let _ = stream.close().await;
    ctl.admission.borrow_mut().disconnect(client.ip());
}

impl Control {
    fn log_record(&self, record: &AccessRecord) {
        if let Err(e) = self.log.borrow_mut().write(record) {
            warn!(error = %e, "cannot write the access log");
        }
    }

    /// Answers a SETUP that opened no session with `status`, and logs it.
    fn refuse(&self, link: &mut Link, req: &Request, status: u16) {
        self.log_record(&AccessRecord::refused(link.client, req, status));
        self.answer(link, &Response::new(status, req.cseq()));
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
        self.admission.borrow().shard_of(key).is_some()
    }

    async fn execute(&self, link: &mut Link, req: Request, route: Route) -> Step {
        match route {
            Route::Answer(response) => self.answer(link, &response),
            Route::Describe { path } => {
                let movie = open_movie(&self.library, &path).await;
                let response = door::describe(&req, &path, movie.as_deref());
                self.answer(link, &response);
            }
            Route::Open { path, interleaved } => return setup(self, link, req, path, interleaved).await,
            Route::Session(key) => {
                let cseq = req.cseq().map(str::to_owned);
                let Some(shard) = self.admission.borrow().shard_of(key) else {
                    // Ended while the request was on its way.
                    self.answer(link, &Response::new(454, cseq.as_deref()));
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
                    Some(Event::Reply { response, .. }) => self.answer(link, &response),
                    _ => self.answer(link, &Response::new(503, cseq.as_deref())),
                }
            }
        }
        Step::Continue
    }

    fn answer(&self, link: &mut Link, response: &Response) {
        response.write_to(&mut link.out);
    }

    /// `$` frames before a session owns the connection: RTCP from a client
    /// that has no session here, or garbage. Nothing to do with them.
    fn interleaved(&self, _link: &Link, _channel: u8, _data: &[u8]) {}
}

/// A SETUP that opens a session: open the movie, admit the session, and
/// send it to its shard, with the connection if it is to carry the media.
async fn setup(ctl: &Control, link: &mut Link, req: Request, path: String, interleaved: bool) -> Step {
    let movie = match open_movie(&ctl.library, &path).await {
        Ok(m) => m,
        Err(e) => {
            ctl.refuse(link, &req, e.status());
            return Step::Continue;
        }
    };
    let admitted = ctl
        .admission
        .borrow_mut()
        .admit(link.client.ip(), None, crate::random::u64);
    let Some((shard, key)) = admitted else {
        ctl.refuse(link, &req, 453);
        return Step::Continue;
    };
    let client = link.client;
    let cseq = req.cseq().map(str::to_owned);
    let new_session = move |reply| Command::NewSession {
        key,
        path,
        movie,
        request: req,
        client,
        conn: None,
        reply,
    };
    if interleaved {
        let fd = match link.clone_fd() {
            Ok(fd) => fd,
            Err(e) => {
                warn!(error = %e, "cannot hand a connection over");
                ctl.admission.borrow_mut().forget(key);
                ctl.answer(link, &Response::new(503, cseq.as_deref()));
                return Step::Continue;
            }
        };
        let conn = Handover {
            fd,
            client,
            pending: std::mem::take(&mut link.buf),
        };
        let command = new_session(0);
        if ctl.shards[shard].send(ToShard::Adopt { conn, command }).await.is_err() {
            ctl.admission.borrow_mut().forget(key);
            return Step::Close;
        }
        return Step::HandedOver;
    }
    let asked = ask(ctl, shard, |reply| ToShard::Command(new_session(reply))).await;
    match asked {
        // A refusal has been reported as a SessionEnded, which removes it.
        Some(Event::Reply { response, .. }) => ctl.answer(link, &response),
        _ => {
            ctl.admission.borrow_mut().forget(key);
            ctl.answer(link, &Response::new(503, cseq.as_deref()));
        }
    }
    Step::Continue
}
