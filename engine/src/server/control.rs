//! The control core: accepts RTSP connections, answers what needs no
//! session, and routes the rest to shards.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::rc::Rc;
use std::time::Duration;

use futures_lite::AsyncWriteExt;
use glommio::channels::local_channel;
use glommio::channels::shared_channel::{ConnectedReceiver, ConnectedSender, SharedReceiver, SharedSender};
use glommio::net::{TcpListener, TcpStream};
use proto::rtsp::header::{Lower, Transport};
use proto::rtsp::message::{self, Message, Method, Request, Response};
use proto::rtsp::url::split_uri;
use tracing::{debug, info, warn};

use super::{
    parse_session_id, read_more, release_if_empty, FromShard, Handover, ServeError, SessionKey, Signals, ToShard,
};
use crate::access_log::AccessLog;
use crate::config::Config;
use crate::library::Library;
use crate::pacer::KeyMap;
use crate::stats::ShardStats;

/// The control core's state, shared by its tasks (one thread: `RefCell`).
struct Control {
    config: Config,
    library: RefCell<Library>,
    shards: Vec<ConnectedSender<ToShard>>,
    /// Where each live session is, and for whom; kept by [`Control::admit`]
    /// and [`Control::forget`], with the counts the limits need.
    sessions: RefCell<Sessions>,
    connections: RefCell<HashMap<IpAddr, usize>>,
    total_connections: RefCell<usize>,
    /// Replies awaited from shards.
    waiting: RefCell<KeyMap<u64, local_channel::LocalSender<FromShard>>>,
    next_reply: RefCell<u64>,
    log: RefCell<AccessLog>,
}

pub async fn run(
    config: Config,
    signals: Signals,
    to_shards: Vec<SharedSender<ToShard>>,
    from_shards: Vec<SharedReceiver<FromShard>>,
) -> Result<(), ServeError> {
    let mut shards = Vec::new();
    for tx in to_shards {
        shards.push(tx.connect().await);
    }
    let log = AccessLog::open(config.access_log.as_deref()).map_err(ServeError::AccessLog)?;
    let library = Library::new(config.media.clone()).map_err(|source| ServeError::Bind {
        what: format!("the media library {}", config.media.display()),
        source,
    })?;
    let ctl = Rc::new(Control {
        library: RefCell::new(library),
        shards,
        sessions: RefCell::new(Sessions::default()),
        connections: RefCell::default(),
        total_connections: RefCell::new(0),
        waiting: RefCell::default(),
        next_reply: RefCell::new(1),
        log: RefCell::new(log),
        config,
    });
    let mut listeners = Vec::new();
    for &port in &ctl.config.rtsp_ports {
        let addr = SocketAddr::new(ctl.config.bind, port);
        let l = TcpListener::bind(addr).map_err(|source| ServeError::Bind {
            what: format!("RTSP port {addr}"),
            source: source.into(),
        })?;
        info!(%addr, "listening for RTSP");
        listeners.push(l);
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
    let mut accept_tasks = Vec::new();
    for l in listeners {
        accept_tasks.push(glommio::spawn_local(accept(ctl.clone(), l)));
    }

    // Signals are flags; look at them often enough to feel immediate.
    let interval = ctl.config.stats_interval.map(Duration::from_secs);
    let mut next_report = interval.map(|i| std::time::Instant::now() + i);
    loop {
        glommio::timer::sleep(Duration::from_millis(50)).await;
        let due = next_report.is_some_and(|t| std::time::Instant::now() >= t);
        if signals.take_report() || due {
            let stats = collect_stats(&ctl).await;
            report(&ctl.config, &stats, "streamalot: all shards");
            next_report = interval.map(|i| std::time::Instant::now() + i);
        }
        if signals.shutting_down() {
            break;
        }
        if let Err(e) = ctl.log.borrow_mut().flush_if_due() {
            warn!(error = %e, "cannot write the access log");
        }
    }
    info!("shutting down: saying goodbye to clients");
    for t in accept_tasks {
        let _ = t.cancel().await;
    }
    for s in &ctl.shards {
        let _ = s.send(ToShard::Shutdown).await;
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
            FromShard::Reply { reply, .. } | FromShard::Stats { reply, .. } => {
                let waiter = ctl.waiting.borrow_mut().remove(&reply);
                if let Some(w) = waiter {
                    let _ = w.try_send(event);
                }
            }
            FromShard::Admit { client, ticket } => {
                let key = ctl.admit(client.ip(), Some(shard)).map(|(_, key)| key);
                let ctl = ctl.clone();
                // On a task of its own: the shard may be busy, and its events
                // must keep flowing meanwhile.
                glommio::spawn_local(async move {
                    let _ = ctl.shards[shard].send(ToShard::Admission { ticket, key }).await;
                })
                .detach();
            }
            FromShard::SessionEnded { key, record } => {
                ctl.forget(key);
                if let Err(e) = ctl.log.borrow_mut().write(&record) {
                    warn!(error = %e, "cannot write the access log");
                }
            }
            FromShard::ConnectionClosed { client } => connection_closed(&ctl, client.ip()),
            FromShard::Stopped { stats } => {
                let _ = stopped.try_send(stats);
            }
        }
    }
}

fn connection_closed(ctl: &Control, ip: IpAddr) {
    let mut conns = ctl.connections.borrow_mut();
    if let Some(n) = conns.get_mut(&ip) {
        *n -= 1;
        if *n == 0 {
            conns.remove(&ip);
        }
    }
    *ctl.total_connections.borrow_mut() -= 1;
}

/// Asks every shard for its statistics and merges them.
async fn collect_stats(ctl: &Rc<Control>) -> ShardStats {
    let mut total = ShardStats::default();
    for i in 0..ctl.shards.len() {
        if let Some(FromShard::Stats { stats, .. }) = ask(ctl, i, |reply| ToShard::Stats { reply }).await {
            total.merge(&stats);
        }
    }
    total
}

/// Sends a command to shard `i` and waits for its reply.
async fn ask(ctl: &Rc<Control>, i: usize, make: impl FnOnce(u64) -> ToShard) -> Option<FromShard> {
    let id = {
        let mut n = ctl.next_reply.borrow_mut();
        *n += 1;
        *n
    };
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
        let refused = {
            let total = *ctl.total_connections.borrow();
            let mine = ctl.connections.borrow().get(&client.ip()).copied().unwrap_or(0);
            total >= ctl.config.max_connections || mine >= ctl.config.max_connections_per_client
        };
        if refused {
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
        *ctl.total_connections.borrow_mut() += 1;
        *ctl.connections.borrow_mut().entry(client.ip()).or_default() += 1;
        let _ = stream.set_nodelay(true);
        glommio::spawn_local(connection(ctl.clone(), stream, client)).detach();
    }
}

/// What a connection's next step is after a request.
enum Next {
    Continue,
    Close,
    /// The connection now belongs to a shard.
    HandedOver,
}

async fn connection(ctl: Rc<Control>, mut stream: TcpStream, client: SocketAddr) {
    let limits = message::Limits {
        max_header_bytes: ctl.config.max_header_bytes,
        max_body_bytes: ctl.config.max_body_bytes,
        ..Default::default()
    };
    // A connection that says nothing for a session timeout is stalled.
    let _ = stream.set_read_timeout(Some(Duration::from_secs(ctl.config.session_timeout.max(1))));
    let mut buf: Vec<u8> = Vec::new();
    let mut out = Vec::new();
    'conn: loop {
        loop {
            match message::parse(&buf, &limits) {
                Ok(Some((Message::Request(req), used))) => {
                    buf.drain(..used);
                    out.clear();
                    // Boxed: the request handling awaits shards and builds messages, and
                    // inline its state would make every idle connection's task that big.
                    match Box::pin(handle(&ctl, req, client, &mut out, &mut stream, &mut buf)).await {
                        Next::Continue => {}
                        Next::Close => break 'conn,
                        Next::HandedOver => return,
                    }
                    if !out.is_empty() && stream.write_all(&out).await.is_err() {
                        break 'conn;
                    }
                    out.clear();
                    release_if_empty(&mut out);
                }
                // RTCP or a response from a client that has no session here.
                Ok(Some((_, used))) => {
                    buf.drain(..used);
                }
                Ok(None) => break,
                Err(e) => {
                    debug!(%client, error = %e, "bad request; closing");
                    out.clear();
                    Response::new(e.status(), None).write_to(&mut out);
                    let _ = stream.write_all(&out).await;
                    break 'conn;
                }
            }
        }
        release_if_empty(&mut buf);
        match read_more(&mut stream, &mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    let _ = stream.close().await;
    connection_closed(&ctl, client.ip());
}

/// Handles one request on a control-core connection, appending the answer
/// to `out` (or handing the connection to a shard).
async fn handle(
    ctl: &Rc<Control>,
    req: Request,
    client: SocketAddr,
    out: &mut Vec<u8>,
    stream: &mut TcpStream,
    pending: &mut Vec<u8>,
) -> Next {
    let Some(cseq) = req.cseq().map(str::to_owned) else {
        Response::new(400, None).write_to(out);
        return Next::Continue;
    };
    if let Some(key) = req.headers.get("Session").and_then(parse_session_id).or_else(|| {
        // A Session header that does not parse names no session we made.
        req.headers.get("Session").map(|_| 0)
    }) {
        let shard = ctl.sessions.borrow().where_is.get(&key).map(|s| s.0);
        let Some(shard) = shard else {
            Response::new(454, Some(&cseq)).write_to(out);
            return Next::Continue;
        };
        let reply = ask(ctl, shard, |reply| ToShard::Request {
            key,
            request: req,
            client,
            reply,
        })
        .await;
        match reply {
            Some(FromShard::Reply { response, .. }) => response.write_to(out),
            _ => Response::new(503, Some(&cseq)).write_to(out),
        }
        return Next::Continue;
    }
    match &req.method {
        Method::Describe => describe(ctl, &req, &cseq).write_to(out),
        Method::Setup => return setup(ctl, req, client, out, stream, pending).await,
        _ => crate::rtsp::answer_without_session(&req, &cseq).write_to(out),
    }
    Next::Continue
}

/// DESCRIBE: the movie's SDP, with the base URL relative track controls
/// resolve against.
pub fn describe_response(library: &mut Library, req: &Request, cseq: &str) -> Response {
    let Some((path, _)) = split_uri(&req.uri) else {
        return Response::new(400, Some(cseq));
    };
    match library.open(path) {
        Ok(movie) => {
            let base = match req.uri.split_once("://") {
                Some((_, rest)) => {
                    let authority = rest.split('/').next().unwrap_or_default();
                    format!("rtsp://{authority}{path}/")
                }
                None => format!("{path}/"),
            };
            Response::new(200, Some(cseq))
                .header("Content-Base", base)
                .body("application/sdp", movie.sdp().as_bytes().to_vec())
        }
        Err(e) => {
            debug!(uri = %req.uri, error = %e, "DESCRIBE refused");
            Response::new(e.status(), Some(cseq))
        }
    }
}

fn describe(ctl: &Rc<Control>, req: &Request, cseq: &str) -> Response {
    describe_response(&mut ctl.library.borrow_mut(), req, cseq)
}

async fn setup(
    ctl: &Rc<Control>,
    req: Request,
    client: SocketAddr,
    out: &mut Vec<u8>,
    stream: &mut TcpStream,
    pending: &mut Vec<u8>,
) -> Next {
    let cseq = req.cseq().unwrap_or_default().to_owned();
    let Some((path, _)) = split_uri(&req.uri) else {
        Response::new(400, Some(&cseq)).write_to(out);
        return Next::Continue;
    };
    let movie = match ctl.library.borrow_mut().open(path) {
        Ok(m) => m,
        Err(e) => {
            Response::new(e.status(), Some(&cseq)).write_to(out);
            return Next::Continue;
        }
    };
    let Some((shard, key)) = ctl.admit(client.ip(), None) else {
        Response::new(453, Some(&cseq)).write_to(out);
        return Next::Continue;
    };
    let wants_tcp = req
        .headers
        .get("Transport")
        .map(Transport::parse_list)
        .and_then(|l| l.into_iter().flatten().next())
        .is_some_and(|t| t.lower == Lower::Tcp);
    let path = path.to_owned();
    if wants_tcp {
        let fd = match clone_fd(stream) {
            Ok(fd) => fd,
            Err(e) => {
                warn!(error = %e, "cannot hand a connection over");
                ctl.forget(key);
                Response::new(503, Some(&cseq)).write_to(out);
                return Next::Continue;
            }
        };
        let conn = Handover {
            fd,
            client,
            pending: std::mem::take(pending),
        };
        let sent = ctl.shards[shard]
            .send(ToShard::NewSession {
                key,
                path,
                movie,
                request: req,
                client,
                conn: Some(conn),
                reply: 0,
            })
            .await;
        if sent.is_err() {
            ctl.forget(key);
            return Next::Close;
        }
        // The shard owns the socket now through its own descriptor; this one
        // is closed when the task drops its stream (no shutdown: that would
        // end the connection for the shard too). The connection count moves
        // with it: the shard reports when it closes.
        return Next::HandedOver;
    }
    let reply = ask(ctl, shard, |reply| ToShard::NewSession {
        key,
        path,
        movie,
        request: req,
        client,
        conn: None,
        reply,
    })
    .await;
    match reply {
        // A refusal has been reported as a SessionEnded, which removes it.
        Some(FromShard::Reply { response, .. }) => response.write_to(out),
        _ => {
            ctl.forget(key);
            Response::new(503, Some(&cseq)).write_to(out);
        }
    }
    Next::Continue
}

/// The live sessions, and the counts the limits and the choice of shard
/// need, kept up to date rather than counted on every SETUP.
#[derive(Default)]
struct Sessions {
    /// Shard and client of each session.
    where_is: KeyMap<SessionKey, (usize, IpAddr)>,
    per_client: HashMap<IpAddr, usize>,
    per_shard: Vec<usize>,
}

impl Control {
    /// Counts a new session for `client` against the limits: with room for
    /// it, picks its shard (the least loaded one, unless `shard` is given),
    /// makes its key and records it. `None` means 453.
    fn admit(&self, client: IpAddr, shard: Option<usize>) -> Option<(usize, SessionKey)> {
        let mut s = self.sessions.borrow_mut();
        let mine = s.per_client.get(&client).copied().unwrap_or(0);
        if s.where_is.len() >= self.config.max_sessions || mine >= self.config.max_sessions_per_client {
            return None;
        }
        s.per_shard.resize(self.shards.len(), 0);
        let shard = shard.unwrap_or_else(|| (0..s.per_shard.len()).min_by_key(|&i| s.per_shard[i]).unwrap_or(0));
        // Unguessable IDs: a session ID is all a client needs to control one.
        let key = loop {
            let k = crate::random::u64();
            if k != 0 && !s.where_is.contains_key(&k) {
                break k;
            }
        };
        s.where_is.insert(key, (shard, client));
        *s.per_client.entry(client).or_default() += 1;
        s.per_shard[shard] += 1;
        Some((shard, key))
    }

    /// Forgets session `key`, which has ended or never came to be.
    fn forget(&self, key: SessionKey) {
        let mut s = self.sessions.borrow_mut();
        let Some((shard, client)) = s.where_is.remove(&key) else {
            return;
        };
        if let Some(n) = s.per_client.get_mut(&client) {
            *n -= 1;
            if *n == 0 {
                s.per_client.remove(&client);
            }
        }
        s.per_shard[shard] -= 1;
    }
}

/// A second descriptor for the connection's socket, to send to a shard.
fn clone_fd(stream: &TcpStream) -> std::io::Result<std::os::fd::OwnedFd> {
    // SAFETY: `stream` owns this descriptor and outlives the borrow, which
    // ends here: `try_clone_to_owned` duplicates it (F_DUPFD_CLOEXEC).
    let fd = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) };
    fd.try_clone_to_owned()
}
