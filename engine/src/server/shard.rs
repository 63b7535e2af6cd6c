//! A shard: a core that owns a set of sessions and sends their packets.
//!
//! One task paces: it sleeps until the earliest packet is due, sends every
//! packet due by then (UDP in one batched `sendmmsg`, TCP into each
//! connection's bounded queue), and does the housekeeping (RTCP sender
//! reports, timeouts, ended sessions). Other tasks read commands from the
//! control core, RTCP from the shard's socket, and the RTSP connections the
//! shard owns. All share the state below; the executor is single-threaded,
//! and no borrow is held across an `.await`.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::AsyncWriteExt;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::channels::shared_channel::{ConnectedSender, SharedReceiver, SharedSender};
use glommio::net::TcpStream;
use loader::{Movie, Packet};
use smallvec::SmallVec;
use tracing::{debug, info, warn};

use super::{now, parse_session_id, read_more, release_if_empty, session_id, FromShard, Handover, SessionKey, ToShard};
use crate::access_log::AccessRecord;
use crate::config::Config;
use crate::library::Library;
use crate::net::{recv_batch, RecvBufs, UdpPair};
use crate::pacer::{self, KeyMap, RtcpRound, Schedule, UdpRound};
use crate::playback::{Nanos, StreamSeeds};
use crate::rtcp;
use crate::rtsp::message::{self, Message, Method, Request, Response};
use crate::session::{Context, Destination, Effect, Session};
use crate::stats::ShardStats;

const MS: Nanos = 1_000_000;
/// A round sends every packet due within this much of its start, and the
/// next round comes no sooner than this much later: at most a thousand
/// rounds a second, each one batch, with packets at most this early and
/// (timer slack aside) never late. Waking for every packet instead costs a
/// context switch per packet, which under load costs more than the sending.
const LOOKAHEAD: Nanos = MS;
const HOUSEKEEPING: Nanos = 250 * MS;
/// RTCP sender reports, per stream (RFC 3550 suggests about 5 s).
const SR_INTERVAL: Nanos = 5_000 * MS;
/// How long a session whose media has ended waits for its TEARDOWN.
const ENDED_GRACE: Nanos = 5_000 * MS;
/// How long after the last packet the end-of-media BYE waits (plus up to
/// one housekeeping interval).
///
/// GStreamer (1.22) mishandles a BYE right behind the last packets, which is
/// where one sent in the same round would be:
/// - over UDP, `rtspsrc` turns the BYE into EOS sent to the stream's RTP
///   `udpsrc`, which pushes it and reads no more: the round's packets still
///   in the socket, the movie's last pictures, are lost about one play in two;
/// - over TCP the EOS reaches the jitterbuffer while it still holds the last
///   packets; pushing them re-arms its end-of-stream timer after its timer
///   thread has gone idle, and the EOS waits for that timer forever: the
///   pipeline never ends, and the decoder never gives out its last pictures.
///
/// A quarter of a second later both have long taken the packets. ffmpeg is
/// fine either way; the BYE still comes well before a client's own
/// end-of-range timer (rtspsrc's is 2 s, its latency, after the range).
const BYE_DELAY: Nanos = 250 * MS;
/// At most this many messages per `sendmmsg`.
const BATCH: usize = 256;
/// At most this many RTCP datagrams per `recvmmsg`.
const RTCP_BATCH: usize = 64;
/// Capacity an interleaved connection's write buffers may keep between
/// writes.
const WRITE_BUFFER_KEEP: usize = 64 * 1024;

/// What RTCP receiver reports say about one stream.
#[derive(Debug, Clone, Copy, Default)]
struct Reception {
    cumulative_lost: i64,
    jitter: u32,
}

struct Entry {
    session: Session,
    client: SocketAddr,
    /// Bumped whenever the schedule changes; stale heap entries are skipped.
    generation: u32,
    /// The connection carrying the session's media, for TCP.
    conn: Option<u64>,
    /// Destination per playback stream, fixed at PLAY.
    dests: SmallVec<[Destination; 2]>,
    next_sr: Nanos,
    /// When the media (or the requested range) ran out.
    ended_at: Option<Nanos>,
    /// BYE has gone for this end of the media (see [`BYE_DELAY`]).
    said_bye: bool,
    reception: Vec<Reception>,
    status: u16,
}

/// An RTSP connection the shard owns, with its outgoing queue.
struct Conn {
    client: SocketAddr,
    /// Bytes waiting for the writer: whole responses and whole `$` frames.
    out: RefCell<Vec<u8>>,
    /// Bytes the writer has taken and not yet written.
    in_flight: Cell<usize>,
    bound: usize,
    kick: LocalSender<()>,
    closed: Cell<bool>,
    /// The sessions whose media rides this connection.
    sessions: RefCell<SmallVec<[SessionKey; 1]>>,
}

impl Conn {
    fn queued(&self) -> usize {
        self.out.borrow().len() + self.in_flight.get()
    }

    /// Queues a response: always, whatever the bound.
    fn respond(&self, r: &Response) {
        r.write_to(&mut self.out.borrow_mut());
        let _ = self.kick.try_send(());
    }

    /// Queues a `$` frame, unless the queue is past its bound: then the whole
    /// frame is dropped (never part of one) and `false` returned.
    fn frame(&self, channel: u8, parts: &[&[u8]]) -> bool {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if len > usize::from(u16::MAX) || self.queued() + len + 4 > self.bound {
            return false;
        }
        let mut out = self.out.borrow_mut();
        out.extend_from_slice(&[b'$', channel]);
        out.extend_from_slice(&(len as u16).to_be_bytes());
        for p in parts {
            out.extend_from_slice(p);
        }
        drop(out);
        let _ = self.kick.try_send(());
        true
    }
}

struct Shard {
    index: usize,
    config: Config,
    ports: (u16, u16),
    rtp: std::net::UdpSocket,
    rtcp: std::net::UdpSocket,
    /// Buffers for draining `rtcp`; out of their place while in use.
    rtcp_bufs: Option<RecvBufs>,
    sessions: KeyMap<SessionKey, Entry>,
    schedule: Schedule,
    /// The sessions that have each client RTCP address. Usually one, but a
    /// load client (or a NAT) may use one port pair for many sessions.
    rtcp_routes: HashMap<SocketAddr, SmallVec<[SessionKey; 1]>>,
    /// The session of each of our streams' SSRCs, to tell apart reports that
    /// come from one address for several sessions.
    ssrc_routes: KeyMap<u32, SessionKey>,
    conns: HashMap<u64, Rc<Conn>>,
    next_conn: u64,
    /// New sessions on owned connections, waiting for the control core's
    /// [`ToShard::Admission`].
    admissions: HashMap<u64, LocalSender<Option<SessionKey>>>,
    next_ticket: u64,
    library: Library,
    stats: ShardStats,
    udp: UdpRound,
    /// The round's RTCP (sender reports, BYEs), sent from the RTCP socket.
    rtcp_out: RtcpRound,
    outbox: VecDeque<FromShard>,
    next_housekeeping: Nanos,
    rng: crate::random::Rng,
    cname: String,
    wake_pacer: LocalSender<()>,
    wake_outbox: LocalSender<()>,
}

pub async fn run(
    index: usize,
    config: Config,
    pair: UdpPair,
    commands: SharedReceiver<ToShard>,
    back: SharedSender<FromShard>,
) {
    let commands = commands.connect().await;
    let back = back.connect().await;
    let ports = match pair.ports() {
        Ok(p) => p,
        Err(e) => {
            warn!(shard = index, error = %e, "cannot read the shard's UDP ports");
            return;
        }
    };
    let UdpPair { rtp, rtcp } = pair;
    let library = match Library::new(config.media.clone()) {
        Ok(l) => l,
        Err(e) => {
            warn!(shard = index, error = %e, "cannot open the media library");
            return;
        }
    };
    let (wake_pacer, pacer_rx) = local_channel::new_bounded(1);
    let (wake_outbox, outbox_rx) = local_channel::new_bounded(1);
    let shard = Rc::new(RefCell::new(Shard {
        index,
        ports,
        rtp,
        rtcp,
        rtcp_bufs: Some(RecvBufs::new(RTCP_BATCH, 2048)),
        sessions: KeyMap::default(),
        schedule: Schedule::default(),
        rtcp_routes: HashMap::new(),
        ssrc_routes: KeyMap::default(),
        conns: HashMap::new(),
        next_conn: 0,
        admissions: HashMap::new(),
        next_ticket: 0,
        library,
        stats: ShardStats::default(),
        udp: UdpRound::new(BATCH),
        rtcp_out: RtcpRound::default(),
        outbox: VecDeque::new(),
        next_housekeeping: 0,
        rng: crate::random::Rng::new(),
        cname: format!("streamalot-{index}@{}", hostname()),
        wake_pacer,
        wake_outbox,
        config,
    }));
    info!(shard = index, rtp = ports.0, rtcp = ports.1, "shard ready");
    let pacer = glommio::spawn_local(pace(shard.clone(), pacer_rx));
    let outbox = glommio::spawn_local(deliver(shard.clone(), outbox_rx, back));
    while let Some(cmd) = commands.recv().await {
        match cmd {
            ToShard::Shutdown => break,
            cmd => command(&shard, cmd),
        }
    }
    // Goodbye to every client, then report and stop.
    let keys: Vec<SessionKey> = shard.borrow().sessions.keys().copied().collect();
    {
        let mut s = shard.borrow_mut();
        for key in keys {
            s.end_session(key, now(), "server shutdown");
        }
        let stats = Box::new(s.stats.clone());
        s.post(FromShard::Stopped { stats });
    }
    // Let the writers and the outbox drain.
    glommio::timer::sleep(Duration::from_millis(100)).await;
    let _ = pacer.cancel().await;
    let _ = outbox.cancel().await;
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into())
}

fn command(shard: &Rc<RefCell<Shard>>, cmd: ToShard) {
    match cmd {
        ToShard::NewSession {
            key,
            path,
            movie,
            request,
            client,
            conn,
            reply,
        } => {
            let conn_id = conn.map(|h| adopt(shard, h));
            let mut s = shard.borrow_mut();
            let response = s.open_session(key, path, movie, &request, client, conn_id, now());
            match conn_id.and_then(|c| s.conns.get(&c).cloned()) {
                Some(c) => c.respond(&response),
                None => s.post(FromShard::Reply { reply, response }),
            }
        }
        ToShard::Admission { ticket, key } => {
            if let Some(waiting) = shard.borrow_mut().admissions.remove(&ticket) {
                let _ = waiting.try_send(key);
            }
        }
        ToShard::Request {
            key,
            request,
            client,
            reply,
        } => {
            let mut s = shard.borrow_mut();
            let response = s.request(key, &request, client, None, now());
            s.post(FromShard::Reply { reply, response });
        }
        ToShard::Stats { reply } => {
            let mut s = shard.borrow_mut();
            let stats = Box::new(s.stats.clone());
            s.post(FromShard::Stats { reply, stats });
        }
        ToShard::Shutdown => {}
    }
}

impl Entry {
    fn new(session: Session, client: SocketAddr) -> Entry {
        Entry {
            session,
            client,
            generation: 0,
            conn: None,
            dests: SmallVec::new(),
            next_sr: 0,
            ended_at: None,
            said_bye: false,
            reception: Vec::new(),
            status: 200,
        }
    }
}

impl Shard {
    fn post(&mut self, event: FromShard) {
        self.outbox.push_back(event);
        let _ = self.wake_outbox.try_send(());
    }

    /// Random seeds for a new stream, with an SSRC no stream of this shard
    /// has: reports are routed by SSRC, and a load client sharing one port
    /// pair among many sessions tells their packets apart by it. (Among ten
    /// thousand random SSRCs, two alike would otherwise come up about one
    /// time in a hundred.)
    fn seeds(&mut self) -> StreamSeeds {
        loop {
            let r = self.rng.next_u64();
            let ssrc = r as u32;
            if !self.ssrc_routes.contains_key(&ssrc) {
                return (ssrc, (r >> 32) as u16, self.rng.next_u64() as u32);
            }
        }
    }

    /// Makes session `key` (which the control core admitted) from its first
    /// SETUP. If the SETUP fails, the session is not, and the control core is
    /// told so, to log the refusal and count the session no more.
    #[allow(clippy::too_many_arguments)]
    fn open_session(
        &mut self,
        key: SessionKey,
        path: String,
        movie: Arc<Movie>,
        req: &Request,
        client: SocketAddr,
        conn: Option<u64>,
        now: Nanos,
    ) -> Response {
        self.sessions
            .insert(key, Entry::new(Session::new(session_id(key), path, movie, now), client));
        let response = self.request(key, req, client, conn, now);
        if response.status == 200 {
            self.stats.sessions_started += 1;
        } else {
            self.sessions.remove(&key);
            self.refuse(key, client, req, response.status);
        }
        response
    }

    /// Tells the control core that admitted session `key` never came to be.
    fn refuse(&mut self, key: SessionKey, client: SocketAddr, req: &Request, status: u16) {
        let record = AccessRecord::refused(client, req, status);
        self.post(FromShard::SessionEnded { key, record });
    }

    /// Handles a request naming session `key` (which exists), from the
    /// control core or from connection `conn`.
    fn request(
        &mut self,
        key: SessionKey,
        req: &Request,
        client: SocketAddr,
        conn: Option<u64>,
        now: Nanos,
    ) -> Response {
        let seeds = self.seeds();
        let ports = self.ports;
        let timeout = self.config.session_timeout;
        let Some(e) = self.sessions.get_mut(&key) else {
            return Response::new(454, req.cseq());
        };
        if e.session.tracks.is_empty() && e.conn != conn {
            // The first SETUP decides where the session's media goes.
            e.conn = conn;
            if let Some(c) = conn.and_then(|c| self.conns.get(&c)) {
                c.sessions.borrow_mut().push(key);
            }
        }
        let ctx = Context {
            now,
            client: client.ip(),
            server_ports: ports,
            interleaved_ok: conn.is_some() && e.conn == conn,
            timeout_secs: timeout,
            seeds,
        };
        let (response, effect) = e.session.handle(req, &ctx);
        if req.method == Method::Setup && response.status == 200 {
            for t in &e.session.tracks {
                self.ssrc_routes.insert(t.seeds.0, key);
                if let Destination::Udp { rtcp, .. } = t.destination {
                    let keys = self.rtcp_routes.entry(rtcp).or_default();
                    if !keys.contains(&key) {
                        keys.push(key);
                    }
                }
            }
        }
        if req.method == Method::Play {
            e.status = response.status;
        }
        match effect {
            Effect::None => {}
            Effect::Schedule => {
                e.generation = e.generation.wrapping_add(1);
                e.ended_at = None;
                e.said_bye = false;
                let n = e.session.playback.as_ref().map_or(0, |p| p.streams().len());
                e.dests = (0..n).filter_map(|i| e.session.destination(i)).collect();
                e.reception.resize(n, Reception::default());
                if let Some(due) = e.session.playback.as_mut().and_then(|p| p.next_due()) {
                    self.schedule.push(due, key, e.generation);
                    let _ = self.wake_pacer.try_send(());
                }
            }
            Effect::End => self.end_session(key, now, "teardown"),
        }
        response
    }

    /// Sends every packet due by now (plus the lookahead), then does the
    /// housekeeping if it is time. Returns when to run again.
    fn pump(&mut self, now: Nanos) -> Nanos {
        self.drain_rtcp(now);
        let horizon = now + LOOKAHEAD;
        let Shard {
            sessions,
            schedule,
            conns,
            stats,
            udp,
            rtcp_out,
            cname,
            ..
        } = self;
        let mut ended = Vec::new();
        while let Some((_, key, generation)) = schedule.pop_due(horizon) {
            let Some(e) = sessions.get_mut(&key) else { continue };
            if e.generation != generation {
                continue;
            }
            // Disjoint borrows: the playback changes, the movie's bytes are read.
            let Session { movie, playback, .. } = &mut e.session;
            let Some(pb) = playback.as_mut() else { continue };
            let data = movie.data();
            let conn = e.conn.and_then(|c| conns.get(&c));
            let served = pacer::serve_due(key, pb, &e.dests, now, horizon, udp, stats, |channel, o| {
                conn.is_some_and(|c| send_tcp(c, channel, &o.header, o.packet, data))
            });
            match served {
                Some(next) => schedule.push(next, key, generation),
                None if pb.has_ended() => ended.push(key),
                None => {}
            }
            // Sender reports ride with the media: due with the session's
            // packets, they spread over the rounds as the sessions do, rather
            // than coming all at once from a sweep of every session.
            if now >= e.next_sr && pb.is_playing() {
                e.next_sr = now + SR_INTERVAL;
                reports(e, now, cname, rtcp_out, conns, false);
            }
        }
        self.flush_udp();
        for key in ended {
            self.media_ended(key, now);
        }
        if now >= self.next_housekeeping {
            self.housekeeping(now);
            self.next_housekeeping = now + HOUSEKEEPING;
        }
        self.flush_rtcp();
        let next = self.schedule.next_due().unwrap_or(u64::MAX);
        next.min(self.next_housekeeping)
    }

    /// Sends the round's UDP packets in batched `sendmmsg` calls.
    fn flush_udp(&mut self) {
        let Shard {
            sessions,
            udp,
            rtp,
            stats,
            ..
        } = self;
        if udp.is_empty() {
            return;
        }
        let f = udp.flush(rtp, |key| sessions.get(&key).map(|e| e.session.movie.data()));
        stats.dropped_udp += (f.would_block + f.failed) as u64;
    }

    /// The media (or the requested range) has run out: say BYE a little
    /// later (see [`BYE_DELAY`]) and wait a little more for the client's
    /// TEARDOWN.
    fn media_ended(&mut self, key: SessionKey, now: Nanos) {
        if let Some(e) = self.sessions.get_mut(&key) {
            e.ended_at.get_or_insert(now);
        }
    }

    fn housekeeping(&mut self, now: Nanos) {
        let timeout = self.config.session_timeout.saturating_mul(1_000) * MS;
        let mut expired = Vec::new();
        let mut byes = Vec::new();
        for (&key, e) in &self.sessions {
            if now.saturating_sub(e.session.last_seen) > timeout {
                expired.push((key, "timeout"));
            } else if e.ended_at.is_some_and(|t| now.saturating_sub(t) > ENDED_GRACE) {
                expired.push((key, "media ended"));
            } else if !e.said_bye && e.ended_at.is_some_and(|t| now.saturating_sub(t) >= BYE_DELAY) {
                byes.push(key);
            }
        }
        for key in byes {
            self.send_rtcp(key, now, true);
            if let Some(e) = self.sessions.get_mut(&key) {
                e.said_bye = true;
            }
        }
        for (key, why) in expired {
            self.end_session(key, now, why);
        }
    }

    /// Queues session `key`'s RTCP (see [`reports`]); it goes with the
    /// round's, or at [`flush_rtcp`](Self::flush_rtcp).
    fn send_rtcp(&mut self, key: SessionKey, now: Nanos, bye: bool) {
        let Shard {
            sessions,
            rtcp_out,
            conns,
            cname,
            ..
        } = self;
        if let Some(e) = sessions.get(&key) {
            reports(e, now, cname, rtcp_out, conns, bye);
        }
    }

    /// Sends the RTCP queued this round, in one `sendmmsg`.
    fn flush_rtcp(&mut self) {
        if !self.rtcp_out.is_empty() {
            let f = self.rtcp_out.flush(&self.rtcp);
            self.stats.dropped_udp += (f.would_block + f.failed) as u64;
        }
    }

    /// Ends a session: BYE (unless the media's end already said it), the
    /// access-log record to the control core, and its state dropped.
    fn end_session(&mut self, key: SessionKey, now: Nanos, why: &str) {
        let already_said_bye = self.sessions.get(&key).is_some_and(|e| e.said_bye);
        if !already_said_bye {
            self.send_rtcp(key, now, true);
            self.flush_rtcp();
        }
        let Some(e) = self.sessions.remove(&key) else { return };
        if let Some(c) = e.conn.and_then(|c| self.conns.get(&c)) {
            c.sessions.borrow_mut().retain(|k| *k != key);
        }
        for t in &e.session.tracks {
            self.ssrc_routes.remove(&t.seeds.0);
            if let Destination::Udp { rtcp, .. } = t.destination {
                if let Some(keys) = self.rtcp_routes.get_mut(&rtcp) {
                    keys.retain(|k| *k != key);
                    if keys.is_empty() {
                        self.rtcp_routes.remove(&rtcp);
                    }
                }
            }
        }
        self.stats.sessions_ended += 1;
        debug!(shard = self.index, session = %e.session.id, why, "session ended");
        let record = self.record(&e, now);
        self.post(FromShard::SessionEnded { key, record });
    }

    fn record(&self, e: &Entry, now: Nanos) -> AccessRecord {
        let (packets, bytes) = e.session.playback.as_ref().map_or((0, 0), |p| {
            p.streams()
                .iter()
                .fold((0, 0), |a, s| (a.0 + s.packets, a.1 + s.octets + 12 * s.packets))
        });
        let lost: Option<i64> =
            (!e.reception.is_empty()).then(|| e.reception.iter().map(|r| r.cumulative_lost.max(0)).sum());
        AccessRecord {
            client: e.client.ip(),
            uri: e.session.path.clone(),
            duration: Duration::from_nanos(now.saturating_sub(e.session.started)),
            bytes,
            packets,
            status: e.session.play_status.unwrap_or(e.status),
            user_agent: e.session.user_agent.clone(),
            transport: if e.conn.is_some() { "tcp" } else { "udp" },
            packets_lost: lost,
            ..AccessRecord::default()
        }
    }

    /// Reads every RTCP datagram waiting on the shard's socket, in batched
    /// `recvmmsg` calls. Reports are read once a round rather than as each
    /// arrives: a receiver report every few seconds from thousands of
    /// clients would otherwise wake the shard thousands of times a second,
    /// and nothing in one needs an answer within a millisecond.
    fn drain_rtcp(&mut self, now: Nanos) {
        let Some(mut bufs) = self.rtcp_bufs.take() else { return };
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
                self.on_rtcp_udp(from, data, now);
            }
            if n < RTCP_BATCH {
                break;
            }
        }
        self.rtcp_bufs = Some(bufs);
    }

    /// An RTCP datagram from `from` on the shard's socket. Each report block
    /// names the stream it reports on, and so its session; a report with no
    /// blocks (sent before any media arrived) is a sign of life for every
    /// session at that address.
    fn on_rtcp_udp(&mut self, from: SocketAddr, data: &[u8], now: Nanos) {
        let Some(keys) = self.rtcp_routes.get(&from) else {
            // Not from a client we know: ignore it, it changes nothing.
            self.stats.bad_rtcp += 1;
            return;
        };
        let Ok(packets) = rtcp::parse_compound(data) else {
            self.stats.bad_rtcp += 1;
            return;
        };
        let mut reported = false;
        for block in report_blocks(packets) {
            let Some(&key) = self.ssrc_routes.get(&block.ssrc) else {
                continue;
            };
            // Only the address the stream is sent to may report on it.
            let Some(e) = self.sessions.get_mut(&key) else { continue };
            if e.dests
                .iter()
                .any(|d| matches!(d, Destination::Udp { rtcp, .. } if *rtcp == from))
            {
                e.session.last_seen = now;
                e.note_report(&block);
                reported = true;
            }
        }
        if !reported {
            for key in keys.clone() {
                if let Some(e) = self.sessions.get_mut(&key) {
                    e.session.last_seen = now;
                }
            }
        }
    }

    /// RTCP that arrived on session `key`'s own interleaved channel.
    fn on_rtcp(&mut self, key: SessionKey, data: &[u8], now: Nanos) {
        let Some(e) = self.sessions.get_mut(&key) else { return };
        e.session.last_seen = now;
        let Ok(packets) = rtcp::parse_compound(data) else {
            self.stats.bad_rtcp += 1;
            return;
        };
        for block in report_blocks(packets) {
            e.note_report(&block);
        }
    }
}

/// An RTCP compound packet per stream of session `e` (SR and SDES CNAME,
/// and BYE when `bye`): over UDP into `out`, interleaved onto its
/// connection.
fn reports(e: &Entry, now: Nanos, cname: &str, out: &mut RtcpRound, conns: &HashMap<u64, Rc<Conn>>, bye: bool) {
    let Some(pb) = e.session.playback.as_ref() else { return };
    let ntp = rtcp::ntp_from_unix(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default(),
    );
    for (i, s) in pb.streams().iter().enumerate() {
        let rtp_ts = pb.rtp_time_now(i, now).unwrap_or(s.ts_offset);
        let write = |pkt: &mut Vec<u8>| {
            rtcp::sender_report(pkt, s.ssrc, ntp, rtp_ts, s.packets as u32, s.octets as u32, &[]);
            rtcp::sdes_cname(pkt, s.ssrc, cname);
            if bye {
                rtcp::bye(pkt, &[s.ssrc], None);
            }
        };
        match e.dests.get(i) {
            Some(&Destination::Udp { rtcp, .. }) => out.push(rtcp, write),
            Some(&Destination::Tcp { rtcp_channel, .. }) => {
                if let Some(c) = e.conn.and_then(|c| conns.get(&c)) {
                    let mut pkt = Vec::with_capacity(96);
                    write(&mut pkt);
                    c.frame(rtcp_channel, &[&pkt]);
                }
            }
            None => {}
        }
    }
}

/// The report blocks of every SR and RR in a compound packet.
fn report_blocks(packets: rtcp::Compound<'_>) -> impl Iterator<Item = rtcp::ReportBlock> + '_ {
    packets
        .flat_map(|p| match p {
            rtcp::RtcpPacket::ReceiverReport { reports, .. } | rtcp::RtcpPacket::SenderReport { reports, .. } => {
                Some(reports)
            }
            _ => None,
        })
        .flatten()
}

impl Entry {
    /// Keeps what a receiver report says about one of the session's streams.
    fn note_report(&mut self, block: &rtcp::ReportBlock) {
        let Some(pb) = self.session.playback.as_ref() else {
            return;
        };
        if let Some(i) = pb.streams().iter().position(|s| s.ssrc == block.ssrc) {
            if let Some(r) = self.reception.get_mut(i) {
                r.cumulative_lost = i64::from(block.cumulative_lost);
                r.jitter = block.jitter;
            }
        }
    }
}

/// Queues one media packet as a `$` frame on a TCP connection.
fn send_tcp(c: &Conn, channel: u8, header: &[u8; 12], packet: &Packet, data: &[u8]) -> bool {
    let mut parts: SmallVec<[&[u8]; 8]> = SmallVec::new();
    parts.push(header);
    parts.extend(packet.payload.iter().map(|s| s.bytes(data)));
    c.frame(channel, &parts)
}

async fn pace(shard: Rc<RefCell<Shard>>, wake: LocalReceiver<()>) {
    loop {
        let started = now();
        let next = shard.borrow_mut().pump(started);
        // The next round: a lookahead before the next packet is due, so that
        // the timer's own wake-up delay does not make it late, but not
        // sooner than a round from this one.
        let at = next.saturating_sub(LOOKAHEAD).max(started + LOOKAHEAD);
        let wait = at.saturating_sub(now());
        if wait == 0 {
            // The round took a whole round: let other tasks run first.
            glommio::yield_if_needed().await;
            continue;
        }
        let sleep = async {
            glommio::timer::sleep(Duration::from_nanos(wait)).await;
        };
        // A new PLAY does not wait for the round.
        let woken = async {
            wake.recv().await;
        };
        futures_lite::future::or(sleep, woken).await;
    }
}

async fn deliver(shard: Rc<RefCell<Shard>>, wake: LocalReceiver<()>, back: ConnectedSender<FromShard>) {
    loop {
        let next = shard.borrow_mut().outbox.pop_front();
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

/// Takes over a connection handed from the control core.
fn adopt(shard: &Rc<RefCell<Shard>>, h: Handover) -> u64 {
    let bound = shard.borrow().config.tcp_queue_bytes;
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
    let (kick, kicked) = local_channel::new_bounded(1);
    let mut s = shard.borrow_mut();
    let id = s.next_conn;
    s.next_conn += 1;
    let conn = Rc::new(Conn {
        client: h.client,
        out: RefCell::new(Vec::new()),
        in_flight: Cell::new(0),
        bound,
        kick,
        closed: Cell::new(false),
        sessions: RefCell::default(),
    });
    s.conns.insert(id, conn.clone());
    drop(s);
    let (reader, writer) = futures_lite::io::split(stream);
    glommio::spawn_local(write_loop(conn.clone(), writer, kicked)).detach();
    glommio::spawn_local(read_loop(shard.clone(), id, conn, reader, h.pending)).detach();
    id
}

async fn write_loop(conn: Rc<Conn>, mut writer: futures_lite::io::WriteHalf<TcpStream>, kicked: LocalReceiver<()>) {
    let mut buf = Vec::new();
    while !conn.closed.get() {
        std::mem::swap(&mut buf, &mut conn.out.borrow_mut());
        if buf.is_empty() {
            if kicked.recv().await.is_none() {
                break;
            }
            continue;
        }
        conn.in_flight.set(buf.len());
        let ok = writer.write_all(&buf).await.is_ok();
        conn.in_flight.set(0);
        buf.clear();
        // A burst (a key frame, a reader catching up) may have grown it:
        // do not keep that much per connection for ever.
        if buf.capacity() > WRITE_BUFFER_KEEP {
            buf = Vec::new();
        }
        if !ok {
            conn.closed.set(true);
        }
    }
    let _ = writer.close().await;
}

async fn read_loop(
    shard: Rc<RefCell<Shard>>,
    id: u64,
    conn: Rc<Conn>,
    mut reader: futures_lite::io::ReadHalf<TcpStream>,
    mut buf: Vec<u8>,
) {
    let limits = {
        let s = shard.borrow();
        message::Limits {
            max_header_bytes: s.config.max_header_bytes,
            max_body_bytes: s.config.max_body_bytes,
            ..Default::default()
        }
    };
    'conn: loop {
        loop {
            match message::parse(&buf, &limits) {
                Ok(Some((msg, used))) => {
                    buf.drain(..used);
                    match msg {
                        Message::Request(req) => {
                            let admitted = if opens_session(&req) {
                                admit(&shard, conn.client).await
                            } else {
                                None
                            };
                            let response = shard
                                .borrow_mut()
                                .on_conn_request(id, conn.client, &req, admitted, now());
                            conn.respond(&response);
                        }
                        Message::Interleaved { channel, data } => {
                            let (mut s, now) = (shard.borrow_mut(), now());
                            // RTCP from the client rides the odd channels.
                            let key = conn.sessions.borrow().iter().copied().find(|k| {
                                s.sessions.get(k).is_some_and(|e| {
                                    e.dests.iter().any(
                                        |d| matches!(d, Destination::Tcp { rtcp_channel, .. } if *rtcp_channel == channel),
                                    )
                                })
                            });
                            if let Some(key) = key {
                                s.on_rtcp(key, &data, now);
                            }
                        }
                        Message::Response(_) => {}
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    conn.respond(&Response::new(e.status(), None));
                    break 'conn;
                }
            }
        }
        if conn.closed.get() {
            break;
        }
        release_if_empty(&mut buf);
        match read_more(&mut reader, &mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    // The connection is gone: so are the sessions riding on it.
    conn.closed.set(true);
    let _ = conn.kick.try_send(());
    let mut s = shard.borrow_mut();
    let keys = conn.sessions.take();
    for key in keys {
        s.end_session(key, now(), "connection closed");
    }
    s.conns.remove(&id);
    s.post(FromShard::ConnectionClosed { client: conn.client });
}

impl Shard {
    /// A request read from a connection this shard owns. `admitted` is the
    /// control core's answer for a SETUP that opens a new session.
    fn on_conn_request(
        &mut self,
        conn: u64,
        client: SocketAddr,
        req: &Request,
        admitted: Option<SessionKey>,
        now: Nanos,
    ) -> Response {
        let Some(cseq) = req.cseq() else {
            return Response::new(400, None);
        };
        if let Some(header) = req.headers.get("Session") {
            return match parse_session_id(header) {
                Some(key) if self.sessions.contains_key(&key) => self.request(key, req, client, Some(conn), now),
                _ => Response::new(454, Some(cseq)),
            };
        }
        match &req.method {
            Method::Describe => super::control::describe_response(&mut self.library, req, cseq),
            Method::Setup => {
                // A new session on this connection: it stays on this shard.
                let Some(key) = admitted else {
                    return Response::new(453, Some(cseq));
                };
                let opened = crate::session::split_uri(&req.uri)
                    .ok_or(400)
                    .and_then(|(path, _)| Ok((path, self.library.open(path).map_err(|e| e.status())?)));
                match opened {
                    Ok((path, movie)) => self.open_session(key, path.to_owned(), movie, req, client, Some(conn), now),
                    Err(status) => {
                        self.refuse(key, client, req, status);
                        Response::new(status, Some(cseq))
                    }
                }
            }
            _ => crate::rtsp::answer_without_session(req, cseq),
        }
    }
}

/// Whether `req` asks for a new session: a SETUP naming none.
fn opens_session(req: &Request) -> bool {
    req.method == Method::Setup && req.cseq().is_some() && req.headers.get("Session").is_none()
}

/// Asks the control core whether `client` may have one more session, and
/// waits for the answer: the new session's key, or `None`.
async fn admit(shard: &Rc<RefCell<Shard>>, client: SocketAddr) -> Option<SessionKey> {
    let (tx, rx) = local_channel::new_bounded(1);
    {
        let mut s = shard.borrow_mut();
        let ticket = s.next_ticket;
        s.next_ticket += 1;
        s.admissions.insert(ticket, tx);
        s.post(FromShard::Admit { client, ticket });
    }
    rx.recv().await.flatten()
}
