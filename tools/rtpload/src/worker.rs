//! A worker: one thread pinned to a core, owning its sessions outright.
//!
//! This is the IO layer around the sans-IO [`Session`]s. It connects their
//! RTSP connections, writes what they ask, reads what arrives, and wakes
//! them at their deadlines, all from one epoll loop (see [`crate::sys`] for
//! why not a runtime).
//!
//! The UDP sessions of a worker share a few client socket pairs (even RTP
//! port, odd RTCP port), drained with batched `recvmmsg` that also returns
//! the kernel's receive time of each datagram: arrival times do not depend
//! on when the loop got round to reading. A datagram is routed to its
//! session and stream by (socket pair, source address, SSRC), the SSRC
//! coming from the SETUP reply. When a server gives none, the stream's first
//! packet from that server teaches it; so that two sessions cannot both be
//! waiting to learn from the same source and payload type, a session that
//! would be the second waits before its PLAY until the first has learned.
//!
//! A tunnelled session has two connections: the GET leg, its RTSP
//! connection as for TCP, and the POST leg, opened when the session asks
//! ([`Event::OpenPost`]), which carries what the session writes to the
//! server and on which anything the server says is a refusal.
//!
//! Per packet the worker parses the RTP header in the receive buffer, looks
//! up one hash map, and updates the stream's counters and two histograms:
//! nothing is allocated or copied.

use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use net::{self, RecvBufs};
use proto::rtcp::{self, RtcpPacket};
use proto::rtp;
use proto::rtsp::header::Lower;
use proto::rtsp::url::RtspUrl;
use smallvec::SmallVec;
use socket2::{Domain, Protocol, Socket, Type};
use tracing::{debug, warn};

use crate::metrics::{Counters, Histograms};
use crate::reception::Nanos;
use crate::session::{Event, Outcome, Session, Settings, Totals, UdpStream};
use crate::sys::{Interest, Poller, Readiness};

/// Datagrams per `recvmmsg`, and the most bytes each may have (a coalesced
/// run, with `--gro`, may have up to `net::GRO_BUFFER_BYTES`).
const RECV_BATCH: usize = 64;
const DATAGRAM_BYTES: usize = 4096;
/// Batches read from one socket per wake-up before the others get a turn.
const BATCHES_PER_WAKE: usize = 16;
/// Bytes read from one RTSP connection per read call, and calls per wake-up.
const READ_BYTES: usize = 64 * 1024;
const READS_PER_WAKE: usize = 8;
/// Receive buffer asked for on each shared RTP socket: room for a burst
/// from every session on it.
const RTP_RECV_BUFFER: usize = 8 << 20;
/// The loop looks at the stop flag at least this often.
const STOP_CHECK: Nanos = 100_000_000;
/// Tokens with this bit are UDP sockets: pair index << 1 | is-RTCP.
const UDP_TOKEN: u64 = 1 << 63;
/// Tokens with this bit are tunnels' POST legs: the session's slot.
const POST_TOKEN: u64 = 1 << 62;

/// Where a session goes.
#[derive(Debug)]
pub struct Target {
    pub url: Arc<RtspUrl>,
    pub addr: SocketAddr,
}

/// The shared UDP client ports of a worker.
#[derive(Debug, Clone)]
pub struct UdpPlan {
    /// The local address to bind: unspecified IPv4, or IPv6 for a dual-stack pair.
    pub ip: IpAddr,
    pub ports: RangeInclusive<u16>,
    pub pairs: usize,
    /// Read the RTP sockets on this period instead of on readiness (see
    /// `--read-interval-ms`): they are then not in the poller, so an arrival
    /// never has a sleeping reader to wake.
    pub read_every: Option<Nanos>,
    /// Let the kernel coalesce runs of datagrams to the RTP sockets (UDP
    /// GRO, `--gro`); each buffer then has room for a whole run.
    pub gro: bool,
}

/// Everything a worker is given.
pub struct Plan {
    pub index: usize,
    pub core: Option<core_affinity::CoreId>,
    /// When each session starts (from the epoch), its ID and target, in
    /// order of start.
    pub sessions: Vec<(Nanos, u32, Arc<Target>)>,
    pub settings: Arc<Settings>,
    pub udp: Option<UdpPlan>,
    /// The run's clock origin, the same for every worker.
    pub epoch: Instant,
    /// Length of one interval of the interval log.
    pub interval: Nanos,
    pub seed: u64,
    pub stop: Arc<AtomicBool>,
    /// Sessions started, over every worker, for the progress bar.
    pub started: Arc<AtomicU64>,
    pub reports: mpsc::Sender<Report>,
}

/// What one session did, for the per-session output.
#[derive(Debug, Clone)]
pub struct SessionSummary {
    pub id: u32,
    pub url: String,
    /// `None` for a session that never got to finish (the run was cut short).
    pub outcome: Option<Outcome>,
    pub plays: u32,
    pub totals: Totals,
    pub first_packet: Option<Nanos>,
    pub first_key_frame: Option<Nanos>,
}

/// What a worker tells the main thread.
pub enum Report {
    /// Interval `index` is over: its histograms, and the running counters.
    Interval {
        worker: usize,
        index: u64,
        counters: Counters,
        histograms: Box<Histograms>,
    },
    /// The worker is done; `histograms` is its last, partial interval.
    Done {
        worker: usize,
        index: u64,
        counters: Counters,
        histograms: Box<Histograms>,
        sessions: Vec<SessionSummary>,
    },
    /// The worker could not start.
    Failed { worker: usize, error: String },
}

/// A cheap hasher for route keys (a few integers): the per-packet lookup.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_u32(&mut self, i: u32) {
        self.write_u64(u64::from(i));
    }

    fn write_u16(&mut self, i: u16) {
        self.write_u64(u64::from(i));
    }

    fn write_u8(&mut self, i: u8) {
        self.write_u64(u64::from(i));
    }

    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct RouteKey {
    pair: u16,
    source: IpAddr,
    ssrc: u32,
}

#[derive(Debug, Clone, Copy)]
struct Route {
    slot: u32,
    stream: u32,
    /// The stream's RTX packets (RFC 4588), on an SSRC of their own.
    rtx: bool,
}

/// A stream taking NACK/RTX repair whose RTX SSRC is not known yet: the
/// first RTX packet from its source with its RTX payload type that repairs
/// a packet it asked for (and that no other such stream asked for) says it.
#[derive(Debug, Clone, Copy)]
struct RtxLearner {
    pair: u16,
    source: IpAddr,
    payload_type: u8,
    slot: u32,
    stream: u32,
}

/// A stream waiting for its first packet to say its SSRC.
#[derive(Debug, Clone, Copy)]
struct Learner {
    pair: u16,
    source: IpAddr,
    rtp_port: Option<u16>,
    payload_type: u8,
    slot: u32,
    stream: u32,
}

impl Learner {
    fn matches(&self, pair: u16, from: SocketAddr, payload_type: u8) -> bool {
        self.pair == pair
            && self.source == from.ip()
            && self.payload_type == payload_type
            && self.rtp_port.is_none_or(|p| p == from.port())
    }

    /// Whether a packet could be taken for either.
    fn overlaps(&self, other: &Learner) -> bool {
        self.pair == other.pair
            && self.source == other.source
            && self.payload_type == other.payload_type
            && (self.rtp_port.is_none() || other.rtp_port.is_none() || self.rtp_port == other.rtp_port)
    }
}

struct Pair {
    rtp: UdpSocket,
    rtcp: UdpSocket,
    ports: (u16, u16),
}

struct Slot {
    session: Session,
    conn: Option<TcpStream>,
    connecting: bool,
    want_write: bool,
    /// A tunnel's POST leg.
    post: Option<TcpStream>,
    post_connecting: bool,
    post_want_write: bool,
    pair: u16,
    /// The routes this session's streams have: (key, stream).
    routes: SmallVec<[(RouteKey, u32); 4]>,
    armed: Option<Nanos>,
    counted: bool,
    finished: bool,
}

struct Worker {
    index: usize,
    epoch: Instant,
    settings: Arc<Settings>,
    seed: u64,
    poller: Poller,
    /// `UdpPlan::read_every`, and when the RTP sockets are read next.
    read_every: Option<Nanos>,
    next_read: Nanos,
    ready: Vec<Readiness>,
    pairs: Vec<Pair>,
    recv: RecvBufs,
    slots: Vec<Slot>,
    routes: HashMap<RouteKey, Route, BuildHasherDefault<KeyHasher>>,
    learners: Vec<Learner>,
    rtx_learners: Vec<RtxLearner>,
    deferred: VecDeque<u32>,
    timers: BinaryHeap<std::cmp::Reverse<(Nanos, u32)>>,
    hist: Histograms,
    counters: Counters,
    read_buf: Vec<u8>,
    finished: usize,
}

/// Runs a worker to the end of its sessions; its reports go to the plan's
/// channel.
pub fn run(plan: Plan) {
    if let Some(core) = plan.core {
        if !core_affinity::set_for_current(core) {
            debug!(worker = plan.index, core = core.id, "could not pin to the core");
        }
    }
    let reports = plan.reports.clone();
    match Worker::new(&plan) {
        Ok(mut w) => w.run(plan),
        Err(e) => {
            let _ = reports.send(Report::Failed {
                worker: plan.index,
                error: e.to_string(),
            });
        }
    }
}

impl Worker {
    fn new(plan: &Plan) -> io::Result<Worker> {
        let poller = Poller::new(1024)?;
        let recv_bytes = match &plan.udp {
            Some(udp) if udp.gro => net::GRO_BUFFER_BYTES,
            _ => DATAGRAM_BYTES,
        };
        let mut pairs = Vec::new();
        if let Some(udp) = &plan.udp {
            for i in 0..udp.pairs {
                let p = net::bind_pair(udp.ip, udp.ports.clone())?;
                net::set_recv_buffer(&p.rtp, RTP_RECV_BUFFER);
                net::enable_timestamps(&p.rtp)?;
                if udp.gro {
                    net::enable_gro(&p.rtp)?;
                }
                let ports = p.ports()?;
                let token = UDP_TOKEN | (i as u64) << 1;
                if udp.read_every.is_none() {
                    poller.add(&p.rtp, token, Interest::READ)?;
                }
                poller.add(&p.rtcp, token | 1, Interest::READ)?;
                pairs.push(Pair {
                    rtp: p.rtp,
                    rtcp: p.rtcp,
                    ports,
                });
            }
            debug!(worker = plan.index, ports = ?pairs.iter().map(|p| p.ports).collect::<Vec<_>>(), "UDP client ports");
        }
        Ok(Worker {
            index: plan.index,
            epoch: plan.epoch,
            settings: plan.settings.clone(),
            seed: plan.seed,
            poller,
            read_every: plan.udp.as_ref().and_then(|u| u.read_every),
            next_read: 0,
            ready: Vec::with_capacity(1024),
            pairs,
            recv: RecvBufs::with_timestamps(RECV_BATCH, recv_bytes),
            slots: Vec::with_capacity(plan.sessions.len()),
            routes: HashMap::default(),
            learners: Vec::new(),
            rtx_learners: Vec::new(),
            deferred: VecDeque::new(),
            timers: BinaryHeap::new(),
            hist: Histograms::default(),
            counters: Counters::default(),
            read_buf: vec![0; READ_BYTES],
            finished: 0,
        })
    }

    fn now(&self) -> Nanos {
        self.epoch.elapsed().as_nanos() as Nanos
    }

    fn run(&mut self, plan: Plan) {
        let mut starts: VecDeque<(Nanos, u32, Arc<Target>)> = plan.sessions.into();
        let mut next_tick = plan.interval;
        let mut interval_index = 0u64;
        let mut stopping = false;
        loop {
            let now = self.now();
            if !stopping && plan.stop.load(Ordering::Relaxed) {
                stopping = true;
                starts.clear();
                for i in 0..self.slots.len() {
                    self.slots[i].session.stop(now);
                    self.service(i, now);
                }
            }
            while starts.front().is_some_and(|s| s.0 <= now) {
                let (_, id, target) = starts.pop_front().expect("checked above");
                self.start(id, &target, now);
                plan.started.fetch_add(1, Ordering::Relaxed);
            }
            self.fire_timers(now);
            if let Some(every) = self.read_every {
                if now >= self.next_read {
                    for pair in 0..self.pairs.len() {
                        self.receive_rtp(pair);
                    }
                    // On the period's grid; a late wake-up skips what it missed.
                    self.next_read = (now / every + 1) * every;
                }
            }
            if now >= next_tick {
                self.refresh_counters();
                let _ = plan.reports.send(Report::Interval {
                    worker: self.index,
                    index: interval_index,
                    counters: self.counters,
                    histograms: Box::new(std::mem::take(&mut self.hist)),
                });
                interval_index += 1;
                next_tick += plan.interval;
            }
            if starts.is_empty() && self.finished == self.slots.len() {
                break;
            }
            let mut wake = next_tick.min(now + STOP_CHECK);
            if let Some(s) = starts.front() {
                wake = wake.min(s.0);
            }
            if let Some(std::cmp::Reverse((t, _))) = self.timers.peek() {
                wake = wake.min(*t);
            }
            if self.read_every.is_some() {
                wake = wake.min(self.next_read);
            }
            self.poll(Duration::from_nanos(wake.saturating_sub(now)));
        }
        self.refresh_counters();
        let sessions = self
            .slots
            .iter()
            .map(|s| SessionSummary {
                id: s.session.id(),
                url: s.session.url().to_string(),
                outcome: s.session.outcome().cloned(),
                plays: s.session.plays(),
                totals: s.session.totals(),
                first_packet: s.session.first_packet(),
                first_key_frame: s.session.first_key_frame(),
            })
            .collect();
        if self.recv.truncated() > 0 {
            warn!(
                worker = self.index,
                datagrams = self.recv.truncated(),
                "RTP datagrams longer than {} bytes were dropped",
                self.recv.size()
            );
        }
        let _ = plan.reports.send(Report::Done {
            worker: self.index,
            index: interval_index,
            counters: self.counters,
            histograms: Box::new(std::mem::take(&mut self.hist)),
            sessions,
        });
    }

    /// The counters that are sums over the sessions.
    fn refresh_counters(&mut self) {
        let c = &mut self.counters;
        (c.plays, c.packets, c.bytes, c.lost, c.duplicates, c.reordered) = (0, 0, 0, 0, 0, 0);
        (c.lost_on_wire, c.repaired, c.repair_given_up, c.repair_open) = (0, 0, 0, 0);
        (c.nacks, c.nacked, c.rtx, c.acks) = (0, 0, 0, 0);
        (c.media_ms, c.arrival_ms, c.max_ahead_bytes, c.speed_milli_max) = (0, 0, 0, 0);
        for s in &self.slots {
            let t = s.session.totals();
            c.plays += u64::from(s.session.plays());
            c.packets += t.packets;
            c.bytes += t.bytes;
            c.lost += t.lost;
            c.duplicates += t.duplicates;
            c.reordered += t.reordered;
            c.lost_on_wire += t.repair.lost_on_wire;
            c.repaired += t.repair.repaired;
            c.repair_given_up += t.repair.given_up;
            c.repair_open += t.repair.open;
            c.nacks += t.repair.nacks;
            c.nacked += t.repair.nacked;
            c.rtx += t.repair.rtx;
            c.acks += t.repair.acks;
            c.media_ms += t.media_ms;
            c.arrival_ms += t.arrival_ms;
            c.max_ahead_bytes = c.max_ahead_bytes.max(t.max_ahead_bytes);
            c.speed_milli_max = c.speed_milli_max.max(t.speed_milli);
        }
    }

    fn start(&mut self, id: u32, target: &Target, now: Nanos) {
        let i = self.slots.len();
        let pair = if self.pairs.is_empty() { 0 } else { i % self.pairs.len() };
        let client_ports = (self.settings.lower == Lower::Udp)
            .then(|| self.pairs.get(pair).map(|p| p.ports))
            .flatten();
        let session = Session::new(
            id,
            target.url.clone(),
            self.settings.clone(),
            client_ports,
            self.seed,
            now,
        );
        self.slots.push(Slot {
            session,
            conn: None,
            connecting: false,
            want_write: false,
            post: None,
            post_connecting: false,
            post_want_write: false,
            pair: pair as u16,
            routes: SmallVec::new(),
            armed: None,
            counted: false,
            finished: false,
        });
        self.counters.started += 1;
        match connect(target.addr).and_then(|c| {
            self.poller.add(&c, i as u64, Interest::READ_WRITE)?;
            Ok(c)
        }) {
            Ok(c) => {
                let slot = &mut self.slots[i];
                slot.conn = Some(c);
                slot.connecting = true;
                slot.want_write = true;
            }
            Err(e) => self.slots[i].session.on_connect_failed(&e.to_string(), now),
        }
        self.service(i, now);
    }

    fn fire_timers(&mut self, now: Nanos) {
        while let Some(&std::cmp::Reverse((t, i))) = self.timers.peek() {
            if t > now {
                break;
            }
            self.timers.pop();
            let i = i as usize;
            if self.slots[i].armed != Some(t) {
                continue; // rearmed since
            }
            self.slots[i].armed = None;
            self.slots[i].session.on_timeout(now);
            self.service(i, now);
        }
    }

    fn poll(&mut self, timeout: Duration) {
        let mut ready = std::mem::take(&mut self.ready);
        ready.clear();
        match self.poller.wait(timeout) {
            Ok(events) => ready.extend(events),
            Err(e) => warn!(worker = self.index, error = %e, "epoll_wait failed"),
        }
        for r in &ready {
            if r.token & POST_TOKEN != 0 {
                self.on_post(r);
            } else if r.token & UDP_TOKEN != 0 {
                let pair = ((r.token & !UDP_TOKEN) >> 1) as usize;
                if r.token & 1 == 0 {
                    self.receive_rtp(pair);
                } else {
                    self.receive_rtcp(pair);
                }
            } else {
                self.on_conn(r);
            }
        }
        self.ready = ready;
    }

    fn on_conn(&mut self, r: &Readiness) {
        let i = r.token as usize;
        let now = self.now();
        let Some(slot) = self.slots.get_mut(i) else { return };
        let Some(conn) = slot.conn.as_ref() else { return };
        if slot.connecting {
            if !(r.writable || r.error) {
                return;
            }
            slot.connecting = false;
            match conn.take_error().and_then(|e| match e {
                Some(e) => Err(e),
                None => conn.peer_addr(),
            }) {
                Ok(peer) => slot.session.on_connected(peer, now),
                Err(e) => slot.session.on_connect_failed(&e.to_string(), now),
            }
            return self.service(i, now);
        }
        if r.readable || r.error {
            self.read_conn(i, now);
        }
        self.service(i, now);
    }

    /// Something happened on a tunnel's POST leg: connected, or the server
    /// said something (which is a refusal) or closed it.
    fn on_post(&mut self, r: &Readiness) {
        let i = (r.token & !POST_TOKEN) as usize;
        let now = self.now();
        let Some(slot) = self.slots.get_mut(i) else { return };
        let Some(post) = slot.post.as_mut() else { return };
        if slot.post_connecting {
            if !(r.writable || r.error) {
                return;
            }
            slot.post_connecting = false;
            match post.take_error().and_then(|e| e.map_or(Ok(()), Err)) {
                Ok(()) => slot.session.on_post_connected(now),
                Err(e) => slot.session.on_connect_failed(&e.to_string(), now),
            }
        } else if r.readable || r.error {
            let mut buf = [0u8; 512];
            match post.read(&mut buf) {
                Ok(0) => slot.session.on_post_data(None, now),
                Ok(n) => slot.session.on_post_data(Some(&buf[..n]), now),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => slot.session.on_closed(Some(&e.to_string()), now),
            }
        }
        self.service(i, now);
    }

    /// Connects session `i`'s tunnel POST leg to `to`.
    fn open_post(&mut self, i: usize, to: SocketAddr, now: Nanos) {
        match connect(to).and_then(|c| {
            self.poller.add(&c, POST_TOKEN | i as u64, Interest::READ_WRITE)?;
            Ok(c)
        }) {
            Ok(c) => {
                let slot = &mut self.slots[i];
                slot.post = Some(c);
                slot.post_connecting = true;
                slot.post_want_write = true;
            }
            Err(e) => self.slots[i].session.on_connect_failed(&e.to_string(), now),
        }
    }

    /// Reads what has arrived on session `i`'s connection.
    fn read_conn(&mut self, i: usize, now: Nanos) {
        let Worker {
            slots, read_buf, hist, ..
        } = self;
        let slot = &mut slots[i];
        for _ in 0..READS_PER_WAKE {
            let Some(conn) = slot.conn.as_mut() else { return };
            match conn.read(read_buf) {
                Ok(0) => return slot.session.on_closed(None, now),
                Ok(n) => {
                    slot.session.on_rtsp_data(&read_buf[..n], now, hist);
                    if n < read_buf.len() {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return slot.session.on_closed(Some(&e.to_string()), now),
            }
        }
    }

    /// Writes as much of session `i`'s output as its connections take.
    fn flush(&mut self, i: usize) {
        let slot = &mut self.slots[i];
        let post_out = std::mem::take(slot.session.post_output());
        *slot.session.post_output() = flush_to(
            &self.poller,
            slot.post.as_mut(),
            slot.post_connecting,
            &mut slot.post_want_write,
            POST_TOKEN | i as u64,
            post_out,
        );
        let out = std::mem::take(slot.session.output());
        *slot.session.output() = flush_to(
            &self.poller,
            slot.conn.as_mut(),
            slot.connecting,
            &mut slot.want_write,
            i as u64,
            out,
        );
    }

    /// Carries out what session `i` asks, and rearms its timer.
    fn service(&mut self, i: usize, now: Nanos) {
        while let Some(event) = self.slots[i].session.poll_event() {
            match event {
                Event::Ready => self.on_ready(i, now),
                Event::Retired { upto } => self.unroute(i, Some(upto), now),
                Event::Close => self.close(i),
                Event::OpenPost { to } => self.open_post(i, to, now),
            }
        }
        let slot = &mut self.slots[i];
        if let Some(pair) = self.pairs.get(usize::from(slot.pair)) {
            while let Some((to, bytes)) = slot.session.poll_rtcp() {
                if let Err(e) = pair.rtcp.send_to(bytes, to) {
                    debug!(session = slot.session.id(), %to, error = %e, "cannot send RTCP");
                }
            }
        }
        self.flush(i);
        let slot = &mut self.slots[i];
        let t = slot.session.poll_timeout();
        if t != slot.armed {
            slot.armed = t;
            if let Some(t) = t {
                self.timers.push(std::cmp::Reverse((t, i as u32)));
            }
        }
        if !slot.finished && slot.session.is_finished() {
            slot.finished = true;
            self.finished += 1;
        }
    }

    /// The session's tracks are set up: route its UDP streams and let it play.
    fn on_ready(&mut self, i: usize, now: Nanos) {
        if self.settings.lower == Lower::Tcp {
            return self.slots[i].session.play(now);
        }
        if !self.route(i, now) {
            debug!(
                session = self.slots[i].session.id(),
                "waiting to learn an SSRC another session is learning"
            );
            self.deferred.push_back(i as u32);
        }
    }

    /// Routes session `i`'s streams and starts it playing; `false` if one
    /// of them has to wait for another session's learning.
    fn route(&mut self, i: usize, now: Nanos) -> bool {
        let pair = self.slots[i].pair;
        let streams: SmallVec<[UdpStream; 4]> = self.slots[i].session.udp_streams().collect();
        let learners: SmallVec<[Learner; 4]> = streams
            .iter()
            .filter(|s| s.ssrc.is_none())
            .map(|s| Learner {
                pair,
                source: s.source.to_canonical(),
                rtp_port: s.rtp_port,
                payload_type: s.payload_type,
                slot: i as u32,
                stream: s.stream,
            })
            .collect();
        if learners
            .iter()
            .any(|l| self.learners.iter().any(|o| o.slot != l.slot && o.overlaps(l)))
        {
            return false;
        }
        for s in &streams {
            let Some(ssrc) = s.ssrc else { continue };
            let key = RouteKey {
                pair,
                source: s.source.to_canonical(),
                ssrc,
            };
            if self.routes.get(&key).is_some_and(|r| r.slot != i as u32) {
                self.slots[i].session.on_route_conflict(ssrc, key.source, now);
                return true;
            }
            self.routes.insert(
                key,
                Route {
                    slot: i as u32,
                    stream: s.stream,
                    rtx: false,
                },
            );
            self.slots[i].routes.push((key, s.stream));
        }
        self.learners.extend(learners);
        self.rtx_learners.extend(streams.iter().filter_map(|s| {
            Some(RtxLearner {
                pair,
                source: s.source.to_canonical(),
                payload_type: s.rtx_payload_type?,
                slot: i as u32,
                stream: s.stream,
            })
        }));
        self.slots[i].session.play(now);
        true
    }

    /// Forgets the routes of session `i`'s streams below `upto` (all of
    /// them for `None`).
    fn unroute(&mut self, i: usize, upto: Option<u32>, now: Nanos) {
        let gone = |stream: u32| upto.is_none_or(|u| stream < u);
        let Worker { slots, routes, .. } = self;
        slots[i].routes.retain(|(key, stream)| {
            if gone(*stream) {
                routes.remove(key);
                false
            } else {
                true
            }
        });
        self.rtx_learners.retain(|l| !(l.slot == i as u32 && gone(l.stream)));
        let before = self.learners.len();
        self.learners.retain(|l| !(l.slot == i as u32 && gone(l.stream)));
        if self.learners.len() != before {
            self.retry_deferred(now);
        }
    }

    /// Sessions that waited for a learner to go may now be routable.
    fn retry_deferred(&mut self, now: Nanos) {
        for _ in 0..self.deferred.len() {
            let Some(i) = self.deferred.pop_front() else { break };
            let i = i as usize;
            if !self.slots[i].session.is_ready() {
                continue;
            }
            if self.route(i, now) {
                self.service(i, now);
            } else {
                self.deferred.push_back(i as u32);
            }
        }
    }

    fn close(&mut self, i: usize) {
        self.flush(i);
        let slot = &mut self.slots[i];
        for conn in [slot.conn.take(), slot.post.take()].into_iter().flatten() {
            let _ = self.poller.delete(&conn);
            let _ = conn.shutdown(std::net::Shutdown::Both);
        }
        if !slot.counted {
            slot.counted = true;
            match slot.session.outcome() {
                Some(Outcome::Completed) => self.counters.completed += 1,
                Some(Outcome::Failed(e)) => {
                    self.counters.failed += 1;
                    debug!(session = slot.session.id(), error = %e, "session failed");
                }
                None => {}
            }
        }
    }

    /// Drains shared RTP socket `pair`.
    fn receive_rtp(&mut self, pair: usize) {
        let mut learned = false;
        let mut woken: SmallVec<[u32; 16]> = SmallVec::new();
        for _ in 0..BATCHES_PER_WAKE {
            // The kernel stamps arrivals with the system clock; this maps
            // them onto the monotonic clock the sessions run on.
            let mono_now = self.now();
            let real_now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
            let Worker {
                pairs,
                recv,
                slots,
                routes,
                learners,
                rtx_learners,
                hist,
                counters,
                ..
            } = self;
            let batch = match net::recv_batch_timestamped(&pairs[pair].rtp, recv) {
                Ok(b) => b,
                Err(e) => {
                    warn!(error = %e, "receiving RTP failed");
                    return;
                }
            };
            let mut n = 0;
            for d in batch {
                n += 1;
                let arrival = match d.received {
                    Some(at) => mono_now.saturating_sub(real_now.saturating_sub(at).as_nanos() as Nanos),
                    None => mono_now,
                };
                let Ok(h) = rtp::Header::parse(&rtp::Packet::new_unchecked(d.data)) else {
                    counters.unmatched += 1;
                    continue;
                };
                let from = SocketAddr::new(d.from.ip().to_canonical(), d.from.port());
                let key = RouteKey {
                    pair: pair as u16,
                    source: from.ip(),
                    ssrc: h.ssrc,
                };
                let route = match routes.get(&key) {
                    Some(r) => *r,
                    None => match learners
                        .iter()
                        .position(|l| l.matches(pair as u16, from, h.payload_type))
                    {
                        Some(at) => {
                            let l = learners.swap_remove(at);
                            let r = Route {
                                slot: l.slot,
                                stream: l.stream,
                                rtx: false,
                            };
                            routes.insert(key, r);
                            slots[l.slot as usize].routes.push((key, l.stream));
                            learned = true;
                            r
                        }
                        None => match learn_rtx(rtx_learners, slots, pair as u16, from, &h, d.data) {
                            Some(l) => {
                                let r = Route {
                                    slot: l.slot,
                                    stream: l.stream,
                                    rtx: true,
                                };
                                routes.insert(key, r);
                                slots[l.slot as usize].routes.push((key, l.stream));
                                r
                            }
                            None => {
                                counters.unmatched += 1;
                                continue;
                            }
                        },
                    },
                };
                let slot = &mut slots[route.slot as usize];
                let taken = if route.rtx {
                    slot.session.on_rtx(route.stream, d.data, arrival)
                } else {
                    slot.session.on_rtp(route.stream, &h, d.data, arrival, hist)
                };
                if !taken {
                    counters.unmatched += 1;
                }
                if slot.session.take_wake() && !woken.contains(&route.slot) {
                    woken.push(route.slot);
                }
            }
            if n < RECV_BATCH {
                break;
            }
        }
        if learned || !woken.is_empty() {
            let now = self.now();
            for i in woken {
                self.service(i as usize, now);
            }
            if learned {
                self.retry_deferred(now);
            }
        }
    }

    /// Drains shared RTCP socket `pair`: each datagram goes to the session
    /// whose stream's SSRC it reports as sender or says goodbye for.
    fn receive_rtcp(&mut self, pair: usize) {
        let mut touched: SmallVec<[usize; 16]> = SmallVec::new();
        let now = self.now();
        for _ in 0..BATCHES_PER_WAKE {
            let Worker {
                pairs,
                recv,
                slots,
                routes,
                counters,
                ..
            } = self;
            let batch = match net::recv_batch(&pairs[pair].rtcp, recv) {
                Ok(b) => b,
                Err(e) => {
                    warn!(error = %e, "receiving RTCP failed");
                    break;
                }
            };
            let mut n = 0;
            for (from, data) in batch {
                n += 1;
                let Ok(packets) = rtcp::parse_compound(data) else {
                    counters.bad_rtcp += 1;
                    continue;
                };
                let sender = packets.into_iter().find_map(|p| match p {
                    RtcpPacket::SenderReport { ssrc, .. } | RtcpPacket::ReceiverReport { ssrc, .. } => Some(ssrc),
                    RtcpPacket::Bye { mut ssrcs, .. } => ssrcs.next(),
                    _ => None,
                });
                let from = SocketAddr::new(from.ip().to_canonical(), from.port());
                let route = sender.and_then(|ssrc| {
                    routes.get(&RouteKey {
                        pair: pair as u16,
                        source: from.ip(),
                        ssrc,
                    })
                });
                let Some(route) = route else { continue };
                let i = route.slot as usize;
                // It parsed above, so the session cannot find it malformed.
                let _ = slots[i].session.on_rtcp(data, Some(from), now);
                if !touched.contains(&i) {
                    touched.push(i);
                }
            }
            if n < RECV_BATCH {
                break;
            }
        }
        for i in touched {
            self.service(i, now);
        }
    }
}

/// The RTX learner an RTX packet of an unknown SSRC belongs to: one of its
/// source and payload type whose session asked for the packet it repairs,
/// and only when no other such stream asked for it too. Learned once, the
/// SSRC is routed like any stream's and the learner goes.
fn learn_rtx(
    learners: &mut Vec<RtxLearner>,
    slots: &[Slot],
    pair: u16,
    from: SocketAddr,
    h: &rtp::Header,
    packet: &[u8],
) -> Option<RtxLearner> {
    let osn = proto::rtx::RtxPacket::parse(packet).ok()?.osn;
    let mut found = None;
    for (at, l) in learners.iter().enumerate() {
        if l.pair == pair
            && l.source == from.ip()
            && l.payload_type == h.payload_type
            && slots[l.slot as usize].session.wants_rtx(l.stream, osn)
        {
            if found.is_some() {
                return None;
            }
            found = Some(at);
        }
    }
    Some(learners.swap_remove(found?))
}

/// Writes what `conn` takes of `out` and returns the rest; watches the
/// connection for writability while something is left. Without a
/// connection the output is dropped; while connecting it waits.
fn flush_to(
    poller: &Poller,
    conn: Option<&mut TcpStream>,
    connecting: bool,
    want_write: &mut bool,
    token: u64,
    mut out: Vec<u8>,
) -> Vec<u8> {
    let Some(conn) = conn else {
        out.clear();
        return out;
    };
    if connecting {
        return out;
    }
    let mut written = 0;
    while written < out.len() {
        match conn.write(&out[written..]) {
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break, // WouldBlock: later; errors show up on read
        }
    }
    out.drain(..written);
    let want = !out.is_empty();
    if want != *want_write {
        *want_write = want;
        let interest = if want { Interest::READ_WRITE } else { Interest::READ };
        let _ = poller.modify(&*conn, token, interest);
    }
    out
}

/// Starts a non-blocking connection to `addr`.
fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sock.set_nonblocking(true)?;
    sock.set_nodelay(true)?;
    match sock.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(sock.into())
}
