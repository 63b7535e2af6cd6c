//! A shard's driver: the glommio side of a [`ShardCore`]. It owns the
//! shard's UDP pair and the sockets of the connections handed to it, and
//! follows the core's driving rule: feed each input, send the core's
//! transmit through the `net` crate, drain its outputs, and sleep until its
//! next deadline.
//!
//! Tasks: one paces (reads the RTCP that arrived, in batched `recvmmsg`
//! calls, then runs the round), one reads the control core's commands, one
//! delivers the core's events to the control core, and each owned
//! connection has a reader (the [connection loop](super::conn)) and a
//! writer (draining the core's queue for it). For an RTSP-over-HTTP tunnel
//! the writer has the GET leg and the reader the POST legs, through a
//! [`TunnelWire`]; POSTs the client opens later arrive as
//! [`ToShard::TunnelPost`]. The executor is single-threaded, and no borrow
//! of the core is held across an `.await`.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::AsyncWriteExt;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::channels::shared_channel::{ConnectedSender, SharedReceiver, SharedSender};
use glommio::net::TcpStream;
use net::{recv_batch, RecvBufs, UdpPair};
use proto::rtsp::message::{Limits, Request, Response};
use tracing::{debug, info, warn};

use super::conn::{self, Host, Link, Speaks, Step, Wire};
use super::tunnel::{give_leg, Counted, PostLeg, TunnelWire};
use super::{now, open_movie, FromShard, Handover, ToShard};
use crate::config::Config;
use crate::door::{self, Door, Route};
use crate::http::tunnel::TunnelId;
use crate::library::Library;
use crate::pacer::{KeyMap, SessionKey};
use crate::random::Rng;
use crate::shard::{self as core, Command, ConnId, Input, Output, ShardCore, Taken};
use crate::source::Nanos;

/// At most this many RTCP datagrams per `recvmmsg`.
const RTCP_BATCH: usize = 64;
/// Capacity an interleaved connection's write buffer may keep from one
/// write to the next while bytes keep coming (it is dropped whenever the
/// connection has nothing to write).
const WRITE_BUFFER_KEEP: usize = 64 * 1024;
/// POST legs that may wait behind a tunnel's current one.
const LEG_QUEUE: usize = 2;
/// The kernel send buffer of a listener's connection: small, so that a
/// listener that stops reading shows in its queue within seconds rather
/// than hiding megabytes in the kernel (Linux doubles the figure).
const LISTENER_SEND_BUFFER: usize = 64 * 1024;
/// A write to a listener that makes no progress for this long ends it: a
/// player that stopped reading (a paused one with its buffer full, a dead
/// peer that never sent a reset).
const LISTENER_STALL: Duration = Duration::from_secs(10);

struct Driver {
    index: usize,
    core: RefCell<ShardCore>,
    rtp: std::net::UdpSocket,
    rtcp: std::net::UdpSocket,
    rtcp_bufs: RefCell<RecvBufs>,
    door: Door,
    limits: Limits,
    library: Arc<Library>,
    /// The writer of each owned connection, woken when it has bytes.
    writers: RefCell<KeyMap<ConnId, LocalSender<()>>>,
    next_conn: Cell<ConnId>,
    /// New sessions on owned connections, waiting for the control core's
    /// [`ToShard::Admission`].
    admissions: RefCell<HashMap<u64, LocalSender<Option<SessionKey>>>>,
    next_ticket: Cell<u64>,
    outbox: RefCell<VecDeque<FromShard>>,
    wake_outbox: LocalSender<()>,
    /// When the pacer means to run the next round; an input that wants one
    /// sooner wakes it.
    planned: Cell<Nanos>,
    wake_pacer: LocalSender<()>,
    /// Where the POST legs of the tunnels on this shard go.
    tunnels: RefCell<KeyMap<TunnelId, LocalSender<PostLeg>>>,
    /// How long a tunnel without a POST waits for one.
    tunnel_wait: Duration,
    /// Tells the control core that a POST leg's connection closed.
    release: Rc<dyn Fn(IpAddr)>,
}

// Each argument is a resource the core takes over for its life.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    index: usize,
    config: Config,
    library: Arc<Library>,
    wall_at_zero: Duration,
    pair: UdpPair,
    commands: SharedReceiver<ToShard>,
    back: SharedSender<FromShard>,
    live: SharedReceiver<crate::live::ToShard>,
    access: Option<crate::access::Access>,
) {
    // In the order the control core connects its ends, or both would wait.
    let commands = commands.connect().await;
    let live = live.connect().await;
    let back = back.connect().await;
    let ports = match pair.ports() {
        Ok(p) => p,
        Err(e) => {
            warn!(shard = index, error = %e, "cannot read the shard's UDP ports");
            return;
        }
    };
    let UdpPair { rtp, rtcp } = pair;
    let mut core = ShardCore::new(
        core::Config {
            index,
            server_ports: ports,
            session_timeout_secs: config.session_timeout,
            tcp_queue_bytes: config.tcp_queue_bytes,
            cname: format!("streamalot-{index}@{}", hostname()),
            wall_at_zero,
            instant_on: config.instant_on.map(|(rate, lead)| core::burst_config(rate, lead)),
            thinning: config.thinning.then(Default::default),
            max_speed: f64::from(config.max_speed_percent) / 100.0,
        },
        Rng::new(),
    );
    core.set_publish_grace(config.publish_grace.saturating_mul(1_000_000_000));
    if let Err(e) = core.set_send_path(config.send_path) {
        warn!(shard = index, error = %e, path = %config.send_path, "cannot use this send path; using sendmmsg");
    }
    let (wake_pacer, pacer_rx) = local_channel::new_bounded(1);
    let (wake_outbox, outbox_rx) = local_channel::new_bounded(1);
    let driver = Rc::new_cyclic(|me: &std::rc::Weak<Driver>| Driver {
        release: {
            let me = me.clone();
            Rc::new(move |client| {
                if let Some(d) = me.upgrade() {
                    d.post(FromShard::LegClosed { client });
                }
            })
        },
        tunnels: RefCell::default(),
        tunnel_wait: Duration::from_secs(config.session_timeout.max(1)),
        index,
        core: RefCell::new(core),
        rtp,
        rtcp,
        rtcp_bufs: RefCell::new(RecvBufs::new(RTCP_BATCH, 2048)),
        door: Door::new().with_access(access).with_feedback(config.nack),
        limits: conn::limits(&config),
        library,
        writers: RefCell::default(),
        next_conn: Cell::new(1),
        admissions: RefCell::default(),
        next_ticket: Cell::new(0),
        outbox: RefCell::default(),
        wake_outbox,
        planned: Cell::new(Nanos::MAX),
        wake_pacer,
    });
    info!(shard = index, rtp = ports.0, rtcp = ports.1, send_path = %driver.core.borrow().send_path(), "shard ready");
    let pacer = glommio::spawn_local(pace(driver.clone(), pacer_rx));
    let outbox = glommio::spawn_local(deliver(driver.clone(), outbox_rx, back));
    let live = glommio::spawn_local({
        let driver = driver.clone();
        async move {
            while let Some(news) = live.recv().await {
                driver.feed(Input::Live(news));
            }
        }
    });
    while let Some(msg) = commands.recv().await {
        match msg {
            ToShard::Command(Command::Shutdown) => {
                driver.feed(Input::Command(Command::Shutdown));
                break;
            }
            ToShard::Command(c) => driver.feed(Input::Command(c)),
            ToShard::Adopt { conn, command } => adopt(&driver, conn, command),
            ToShard::Listen { conn, start } => listen(&driver, conn, start),
            ToShard::Admission { ticket, key } => {
                if let Some(waiting) = driver.admissions.borrow_mut().remove(&ticket) {
                    let _ = waiting.try_send(key);
                }
            }
            ToShard::TunnelPost { tunnel, leg } => {
                let leg = driver.post_leg(leg);
                let refused = give_leg(driver.tunnels.borrow().get(&tunnel), leg);
                if let Some((leg, status)) = refused {
                    glommio::spawn_local(leg.refuse(status)).detach();
                }
            }
        }
    }
    // The goodbyes are queued: let the writers and the outbox drain.
    glommio::timer::sleep(Duration::from_millis(100)).await;
    let _ = pacer.cancel().await;
    let _ = outbox.cancel().await;
    let _ = live.cancel().await;
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into())
}

impl Driver {
    /// Feeds one input, then does what the rule says after a call.
    fn feed(&self, input: Input<'_>) {
        let mut core = self.core.borrow_mut();
        core.handle_input(now(), input);
        self.after(&mut core);
    }

    /// Sends what the core queued for the network and carries out its
    /// outputs; wakes the pacer if the core now wants a round sooner.
    fn after(&self, core: &mut ShardCore) {
        core.transmit().flush(&self.rtp, &self.rtcp);
        while let Some(out) = core.poll_output() {
            match out {
                Output::Event(e) => self.post(FromShard::Event(e)),
                Output::ConnReady(c) | Output::ConnClose(c) => {
                    if let Some(w) = self.writers.borrow().get(&c) {
                        let _ = w.try_send(());
                    }
                }
            }
        }
        if core.poll_timeout().is_some_and(|t| t < self.planned.get()) {
            let _ = self.wake_pacer.try_send(());
        }
    }

    fn post(&self, event: FromShard) {
        self.outbox.borrow_mut().push_back(event);
        let _ = self.wake_outbox.try_send(());
    }

    /// A round: the RTCP that arrived, then the core's timeout.
    fn round(&self, now: Nanos) {
        let mut core = self.core.borrow_mut();
        let mut bufs = self.rtcp_bufs.borrow_mut();
        // Reports are read once a round rather than as each arrives: a
        // receiver report every few seconds from thousands of clients would
        // otherwise wake the shard thousands of times a second, and nothing
        // in one needs an answer within a millisecond.
        loop {
            let got = match recv_batch(&self.rtcp, &mut bufs) {
                Ok(got) => got,
                Err(e) => {
                    debug!(shard = self.index, error = %e, "reading RTCP");
                    break;
                }
            };
            let mut n = 0;
            for (from, data) in got {
                n += 1;
                core.handle_input(now, Input::Rtcp { from, data });
            }
            if n < RTCP_BATCH {
                break;
            }
        }
        core.handle_timeout(now);
        self.after(&mut core);
    }

    /// A tunnel's POST leg handed to this shard.
    fn post_leg(&self, h: Handover) -> PostLeg {
        // SAFETY: the handover carries the only owner of a duplicated
        // descriptor; `into_raw_fd` releases it to the stream.
        let stream = unsafe { TcpStream::from_raw_fd(h.fd.into_raw_fd()) };
        let counted = Counted::new(h.client.ip(), self.release.clone());
        PostLeg::new(stream, h.client, h.pending, counted)
    }

    /// Asks the control core whether `client` may have one more session,
    /// and waits for the answer: the new session's key, or `None`.
    async fn admit(&self, client: std::net::SocketAddr) -> Option<SessionKey> {
        let (tx, rx) = local_channel::new_bounded(1);
        let ticket = self.next_ticket.get();
        self.next_ticket.set(ticket + 1);
        self.admissions.borrow_mut().insert(ticket, tx);
        self.post(FromShard::Admit { client, ticket });
        rx.recv().await.flatten()
    }
}

async fn pace(driver: Rc<Driver>, wake: LocalReceiver<()>) {
    loop {
        let next = driver.core.borrow().poll_timeout().unwrap_or(Nanos::MAX);
        driver.planned.set(next);
        let t = now();
        if next > t {
            let sleep = async {
                glommio::timer::sleep(Duration::from_nanos(next - t)).await;
            };
            // A new PLAY does not wait for the round.
            let woken = async {
                wake.recv().await;
            };
            futures_lite::future::or(sleep, woken).await;
            continue;
        }
        driver.round(now());
        // A round that took a whole round lets other tasks run first.
        glommio::yield_if_needed().await;
    }
}

async fn deliver(driver: Rc<Driver>, wake: LocalReceiver<()>, back: ConnectedSender<FromShard>) {
    loop {
        let next = driver.outbox.borrow_mut().pop_front();
        match next {
            Some(event) => {
                if back.send(event).await.is_err() {
                    return;
                }
            }
            None => {
                wake.recv().await;
            }
        }
    }
}

/// Takes over a connection handed from the control core and carries out
/// the command that came with it.
fn adopt(driver: &Rc<Driver>, h: Handover, mut command: Command) {
    let bound = driver.core.borrow().config().tcp_queue_bytes;
    // The kernel would otherwise grow the send buffer of a connection whose
    // reader stalls to several megabytes (`tcp_wmem`), holding seconds of
    // stale media where the bounded queue cannot drop it. Capped, it holds
    // about as much as the queue (Linux doubles the figure for its own
    // bookkeeping), and a stalled reader costs at most a few times the bound.
    if let Err(e) = socket2::SockRef::from(&h.fd).set_send_buffer_size(bound) {
        debug!(client = %h.client, error = %e, "cannot cap the send buffer");
    }
    // SAFETY: the handover carries the only owner of a duplicated
    // descriptor; `into_raw_fd` releases it to the stream.
    let stream = unsafe { TcpStream::from_raw_fd(h.fd.into_raw_fd()) };
    let id = driver.next_conn.get();
    driver.next_conn.set(id + 1);
    let (kick, kicked) = local_channel::new_bounded(1);
    driver.writers.borrow_mut().insert(id, kick);
    driver.feed(Input::ConnOpened {
        conn: id,
        client: h.client,
        tunnelled: h.tunnel.is_some(),
    });
    if let Command::NewSession { conn, .. } | Command::NewViewer { conn, .. } = &mut command {
        *conn = Some(id);
    }
    driver.feed(Input::Command(command));
    let link = Link::new(id, h.client, stream.as_raw_fd(), Speaks::Rtsp, h.pending);
    let (reader, writer) = futures_lite::io::split(stream);
    glommio::spawn_local(write_loop(driver.clone(), id, writer, kicked)).detach();
    let Some(carry) = h.tunnel else {
        glommio::spawn_local(read_loop(driver.clone(), link, reader)).detach();
        return;
    };
    // A tunnel: the reader reads its POST legs, this one and those to come,
    // and watches the GET leg for its end.
    let (tx, legs) = local_channel::new_bounded(LEG_QUEUE);
    driver.tunnels.borrow_mut().insert(carry.id, tx);
    let post = carry.post.map(|p| driver.post_leg(*p));
    let wire = TunnelWire::new(reader, post, carry.decoder, legs, driver.tunnel_wait);
    let driver = driver.clone();
    glommio::spawn_local(async move {
        read_loop(driver.clone(), link, wire).await;
        driver.tunnels.borrow_mut().remove(&carry.id);
        driver.post(FromShard::TunnelClosed { tunnel: carry.id });
    })
    .detach();
}

/// Takes over an Icecast listener's connection: the core paces its audio
/// and a writer task writes what the core queues, slices of the file's
/// mapping as they are. Nothing is read from a listener: a player sends
/// nothing after its request, and one that goes is seen by the next write.
fn listen(driver: &Rc<Driver>, h: Handover, start: Box<crate::icecast::listener::ListenerStart>) {
    if let Err(e) = socket2::SockRef::from(&h.fd).set_send_buffer_size(LISTENER_SEND_BUFFER) {
        debug!(client = %h.client, error = %e, "cannot cap the send buffer");
    }
    // SAFETY: the handover carries the only owner of a duplicated
    // descriptor; `into_raw_fd` releases it to the stream.
    let stream = unsafe { TcpStream::from_raw_fd(h.fd.into_raw_fd()) };
    let _ = stream.set_write_timeout(Some(LISTENER_STALL));
    let id = driver.next_conn.get();
    driver.next_conn.set(id + 1);
    let (kick, kicked) = local_channel::new_bounded(1);
    driver.writers.borrow_mut().insert(id, kick);
    debug!(shard = driver.index, client = %h.client, path = start.path, "listener joined");
    driver.feed(Input::ListenerOpened {
        conn: id,
        client: h.client,
        start,
    });
    glommio::spawn_local(listener_write_loop(driver.clone(), id, stream, kicked)).detach();
}

async fn listener_write_loop(driver: Rc<Driver>, id: ConnId, mut stream: TcpStream, kicked: LocalReceiver<()>) {
    let mut batch = VecDeque::new();
    let mut ok = true;
    loop {
        let taken = driver.core.borrow_mut().take_listener_bytes(id, &mut batch);
        match taken {
            Taken::Bytes => {
                // One write per slice, without copying it: a round's slices
                // are one run of frames, or three where a metadata block
                // falls inside it.
                for b in batch.drain(..) {
                    if !ok {
                        continue;
                    }
                    // A listener the core dropped while a write waited for
                    // it goes now, not when the write times out.
                    let written = futures_lite::future::or(async { Some(stream.write_all(&b).await) }, async {
                        abandoned(&driver, id, &kicked).await;
                        None
                    })
                    .await;
                    match written {
                        Some(Ok(())) => {}
                        Some(Err(e)) => {
                            debug!(shard = driver.index, error = %e, "listener gone");
                            ok = false;
                        }
                        None => {
                            debug!(shard = driver.index, "listener dropped while a write waited");
                            ok = false;
                        }
                    }
                }
                driver.feed(if ok {
                    Input::ConnWritten { conn: id }
                } else {
                    Input::ConnClosed { conn: id }
                });
            }
            Taken::Idle => {
                if kicked.recv().await.is_none() {
                    break;
                }
            }
            Taken::Closed => break,
        }
    }
    driver.writers.borrow_mut().remove(&id);
    // The core has forgotten the listener and has its record to send.
    driver.after(&mut driver.core.borrow_mut());
    let _ = stream.close().await;
}

/// Returns once the core has dropped listener `id`, looking each time its
/// writer is kicked. (A kick for new bytes taken here is not lost: the
/// writer takes whatever is queued after every write.)
async fn abandoned(driver: &Driver, id: ConnId, kicked: &LocalReceiver<()>) {
    loop {
        if driver.core.borrow().listener_abandoned(id) {
            return;
        }
        if kicked.recv().await.is_none() {
            return;
        }
    }
}

async fn read_loop<W: Wire>(driver: Rc<Driver>, mut link: Link, mut wire: W) {
    let host = ShardHost(driver.clone());
    conn::serve(&host, &mut link, &mut wire).await;
    drop(wire);
    // The connection is gone (or hopeless): so are the sessions riding on it.
    driver.feed(Input::ConnClosed { conn: link.id });
}

async fn write_loop(
    driver: Rc<Driver>,
    id: ConnId,
    mut writer: futures_lite::io::WriteHalf<TcpStream>,
    kicked: LocalReceiver<()>,
) {
    let mut buf = Vec::new();
    let mut ok = true;
    loop {
        let taken = driver.core.borrow_mut().take_conn_bytes(id, &mut buf);
        match taken {
            Taken::Bytes => {
                // After a failed write, what is queued is dropped until the
                // reader sees the connection end.
                if ok {
                    ok = writer.write_all(&buf).await.is_ok();
                }
                buf.clear();
                // A burst (a key frame, a reader catching up) may have grown
                // it: do not keep that much per connection for ever.
                if buf.capacity() > WRITE_BUFFER_KEEP {
                    buf = Vec::new();
                }
                driver.feed(Input::ConnWritten { conn: id });
            }
            Taken::Idle => {
                // Nothing to write: no buffer is kept while waiting. A live
                // viewer's join burst grows it to tens of KiB, and thousands
                // of viewers waiting for the next packet would each keep that
                // much; a steady stream allocates one small buffer a write.
                buf = Vec::new();
                if kicked.recv().await.is_none() {
                    break;
                }
            }
            Taken::Closed => break,
        }
    }
    driver.writers.borrow_mut().remove(&id);
    // The core has forgotten the connection and has an event to say so.
    driver.after(&mut driver.core.borrow_mut());
    let _ = writer.close().await;
}

/// The connection loop's host on a shard: answers and requests go to the
/// core, which queues them with the connection's media.
struct ShardHost(Rc<Driver>);

impl Host for ShardHost {
    fn limits(&self) -> &Limits {
        &self.0.limits
    }

    fn door(&self) -> &Door {
        &self.0.door
    }

    fn exists(&self, key: SessionKey) -> bool {
        self.0.core.borrow().has_session(key)
    }

    async fn execute(&self, link: &mut Link, request: Request, route: Route) -> Step {
        let d = &self.0;
        let conn = link.id;
        match route {
            Route::Answer(response) => d.feed(Input::ConnAnswer {
                conn,
                method: Some(request.method),
                response,
            }),
            Route::Describe { path } => {
                let movie = open_movie(&d.library, &path).await;
                let response = door::describe(&request, &path, movie.as_deref(), d.door.feedback());
                d.feed(Input::ConnAnswer {
                    conn,
                    method: Some(request.method),
                    response,
                });
            }
            // A new session on a connection this shard owns stays here.
            Route::Open { path, .. } => match open_movie(&d.library, &path).await {
                Err(e) => d.feed(Input::ConnRefused {
                    conn,
                    key: None,
                    request,
                    status: e.status(),
                }),
                Ok(movie) => match d.admit(link.client).await {
                    None => d.feed(Input::ConnRefused {
                        conn,
                        key: None,
                        request,
                        status: 453,
                    }),
                    Some(key) => d.feed(Input::ConnOpen {
                        conn,
                        key,
                        path,
                        movie,
                        request,
                    }),
                },
            },
            Route::Session(key) => d.feed(Input::ConnRequest { conn, key, request }),
            // A connection on a shard carries a viewer's media; publishing
            // is done on connections of the control core's.
            Route::Announce { .. } | Route::Publish { .. } => d.feed(Input::ConnAnswer {
                conn,
                response: Response::new(455, request.cseq()),
                method: Some(request.method),
            }),
        }
        Step::Continue
    }

    fn answer(&self, link: &mut Link, response: &Response) {
        self.0.feed(Input::ConnAnswer {
            conn: link.id,
            method: None,
            response: response.clone(),
        });
    }

    fn interleaved(&self, link: &Link, channel: u8, data: &[u8]) {
        self.0.feed(Input::Interleaved {
            conn: link.id,
            channel,
            data,
        });
    }
}
