//! A shard's logic without IO: [`ShardCore`] owns the sessions of one core,
//! their schedule, the RTSP connections the shard owns (as queues of bytes
//! to write), the routes RTCP reports are matched by, the shard's
//! statistics and its random numbers. It never touches a socket, a timer or
//! a clock; the glommio shard (`server/shard.rs`) only drives it.
//!
//! # The driving rule
//!
//! As str0m and quinn-proto document theirs:
//!
//! 1. Feed what happened with [`ShardCore::handle_input`]: a command from
//!    the control core, a request read from a connection the shard owns
//!    (already routed by the [door](crate::door) and with its movie and its
//!    admission already resolved), an RTCP datagram, a connection opened,
//!    written or closed. Each call takes `now`.
//! 2. When [`ShardCore::poll_timeout`] comes, call
//!    [`ShardCore::handle_timeout`]: that is a send round (due media into the
//!    round's UDP batch and the connections' queues, sender reports riding
//!    with the media, the BYE of media that ran out, and every 250 ms the
//!    housekeeping: session timeouts and the grace after the end).
//! 3. After every call, send what the call queued for the network with
//!    [`ShardCore::transmit`] (one batched `sendmmsg` for RTP, one for RTCP,
//!    through the `net` crate: never a datagram at a time), then drain
//!    [`ShardCore::poll_output`] until it returns `None`: events for the
//!    control core (replies, sessions ended, statistics), and which
//!    connections have bytes to write ([`ShardCore::take_conn_bytes`]) or are
//!    to be closed.
//! 4. Sleep until the new [`ShardCore::poll_timeout`] or the next input.
//!
//! The core never waits for anything: steps that would (opening a movie,
//! asking the control core whether a session may be admitted) happen in the
//! driver before the input is fed, so every input arrives resolved.
//!
//! A packet is counted as sent when the kernel takes it. Those a flush did
//! not send are taken back out of their streams' counters at the start of
//! the next call, before anything (a sender report, a BYE) reports them,
//! which is why a stream's final report and BYE go out a round after its
//! last packet rather than beside it.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::{SocketAddr, UdpSocket};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use loader::Movie;
use net::{Flushed, SendPath};
use proto::rtsp::message::{Method, Request, Response};
use proto::{interleaved, qtss, rtcp};
use smallvec::SmallVec;
use tracing::debug;

use crate::access_log::AccessRecord;
use crate::icecast::listener::{Listener, ListenerStart};
use crate::icecast::mount::{MountId, MountNews, MountReplica};
use crate::live::{self, BroadcastId, Description, Replica};
use crate::pacer::{self, Due, KeyMap, RtcpRound, Schedule, SessionKey, UdpRound};
use crate::random::Rng;
use crate::repair::burst::BurstConfig;
use crate::repair::nack::NackStats;
use crate::repair::offer;
use crate::repair::reliable;
use crate::repair::sender::{RepairKind, RtxSender, RtxSetup};
use crate::repair::thinning::ThinningConfig;
use crate::session::{Context, Destination, Dests, Effect, Media, Session};
use crate::source::{Nanos, Outgoing, Source, StreamSeeds};
use crate::stats::{RepairStats, ShardStats};
use adapt::Adapt;
use routes::AddressRoutes;

mod adapt;
mod routes;
#[cfg(test)]
mod tests;

const MS: Nanos = 1_000_000;
/// A round sends every packet due within this much of its start, and the
/// next round comes no sooner than this much later: at most a thousand
/// rounds a second, each one batch, with packets at most this early and
/// (timer slack aside) never late. Waking for every packet instead costs a
/// context switch per packet, which under load costs more than the sending.
pub const LOOKAHEAD: Nanos = MS;
/// How often timeouts are looked for.
pub const HOUSEKEEPING: Nanos = 250 * MS;
/// A reliable-UDP session whose window is full is looked at again this
/// much later.
const FLOW_CONTROL_WAIT: Nanos = 5 * MS;
/// RTCP sender reports, per stream (RFC 3550 suggests about 5 s).
pub const SR_INTERVAL: Nanos = 5_000 * MS;
/// How long a session whose media has ended waits for its TEARDOWN.
pub const ENDED_GRACE: Nanos = 5_000 * MS;
/// How long after the last packet the end-of-media BYE waits (plus up to
/// one housekeeping interval).
///
/// GStreamer (1.22) mishandles a BYE right behind the last packets, which is
/// where one sent in the next round would be:
/// - over UDP, `rtspsrc` turns the BYE into EOS sent to the stream's RTP
///   `udpsrc` (`on_bye_ssrc` in gstrtspsrc.c), which pushes it and reads no
///   more: packets still in the socket, the movie's last pictures, are lost
///   about one play in two;
/// - over TCP the EOS can reach the jitterbuffer while it still holds the
///   last packets; pushing them re-arms its end-of-stream timer after its
///   timer thread has gone idle, and the EOS then waits for ever: the
///   pipeline never ends and the decoder never gives out its last pictures.
///
/// A quarter of a second later both have long taken the packets. ffmpeg is
/// fine either way, and the BYE still comes well before a client's own
/// end-of-range timer (rtspsrc's is its latency, 2 s, after the range).
pub const BYE_DELAY: Nanos = 250 * MS;
/// At most this many messages per `sendmmsg`.
pub const BATCH: usize = 256;

/// A connection the shard owns, by the number its driver gave it.
pub type ConnId = u64;
/// The number a reply is awaited under by the control core.
pub type ReplyId = u64;

/// What a shard core is configured with.
#[derive(Debug, Clone)]
pub struct Config {
    /// The shard's number, for logs.
    pub index: usize,
    /// The shard's UDP pair (RTP, RTCP), announced as `server_port`.
    pub server_ports: (u16, u16),
    /// Seconds without RTSP or RTCP after which a session ends.
    pub session_timeout_secs: u64,
    /// Media bytes an owned connection may queue; past it frames are dropped.
    pub tcp_queue_bytes: usize,
    /// The CNAME of the shard's RTCP.
    pub cname: String,
    /// The wall clock (since the Unix epoch) at `now == 0`: sender reports
    /// carry wall time, derived from the monotonic `now` so that they are
    /// steady (and testable).
    pub wall_at_zero: Duration,
    /// Instant-On: how far ahead of real time sessions that can take it
    /// are sent at PLAY and after a seek; `None`: never ahead.
    pub instant_on: Option<BurstConfig>,
    /// Thinning of video streams whose client falls behind; `None`: off.
    pub thinning: Option<ThinningConfig>,
    /// The most a PLAY's `Speed` is granted, on reliable transports
    /// (`--max-speed`; DSS's `max_allowed_speed`, 4).
    pub max_speed: f64,
}

/// `--max-speed`'s default: DSS's `max_allowed_speed`.
pub const DEFAULT_MAX_SPEED: f64 = 4.0;

/// Instant-On's limits for a rate in percent and a lead in milliseconds
/// (the server's flags); the rest as [`BurstConfig`]'s defaults, the
/// instant lead no more than the lead.
pub fn burst_config(rate_percent: u32, lead_ms: u64) -> BurstConfig {
    let d = BurstConfig::default();
    let max_lead = Duration::from_millis(lead_ms);
    BurstConfig {
        max_lead,
        max_rate: f64::from(rate_percent) / 100.0,
        instant_lead: d.instant_lead.min(max_lead),
        ..d
    }
}

/// What the control core asks of a shard.
#[derive(Debug)]
pub enum Command {
    /// The first SETUP of a new session, admitted by the control core. With
    /// `conn`, the client asked for interleaved TCP and its connection has
    /// been handed over (and opened with [`Input::ConnOpened`]): the answer
    /// goes there. Otherwise it goes back as [`Event::Reply`].
    NewSession {
        key: SessionKey,
        path: String,
        movie: Arc<Movie>,
        request: Request,
        client: SocketAddr,
        conn: Option<ConnId>,
        reply: ReplyId,
    },
    /// As [`NewSession`](Self::NewSession), for a viewer of the live
    /// broadcast `broadcast`, which is on the air.
    NewViewer {
        key: SessionKey,
        path: String,
        broadcast: Arc<Description>,
        request: Request,
        client: SocketAddr,
        conn: Option<ConnId>,
        reply: ReplyId,
    },
    /// A request naming one of the shard's sessions, read by the control core.
    Request {
        key: SessionKey,
        request: Request,
        client: SocketAddr,
        reply: ReplyId,
    },
    /// A copy of the statistics, as [`Event::Stats`].
    Stats { reply: ReplyId },
    /// What the shard holds now, as [`Event::Snapshot`]: its statistics,
    /// its counts, and with `sessions` a copy of each session's figures.
    Snapshot { reply: ReplyId, sessions: bool },
    /// End session `key` as TEARDOWN would (BYE, access-log record), and
    /// close its connection if no other session rides it: an operator's
    /// order. Answered with [`Event::Ended`].
    End { key: SessionKey, reply: ReplyId },
    /// Say goodbye to every client, report, and close every connection.
    Shutdown,
}

/// Something that happened, fed to [`ShardCore::handle_input`].
#[derive(Debug)]
pub enum Input<'a> {
    Command(Command),
    /// The driver took over a connection from `client` (handed from the
    /// control core) and calls it `conn`; `tunnelled` when it is an
    /// RTSP-over-HTTP tunnel (its sessions are logged as `http`).
    ConnOpened {
        conn: ConnId,
        client: SocketAddr,
        tunnelled: bool,
    },
    /// A request on `conn` that the door routed to session `key`.
    ConnRequest {
        conn: ConnId,
        key: SessionKey,
        request: Request,
    },
    /// A SETUP on `conn` opening session `key` (admitted by the control core)
    /// for `movie` (opened by the driver).
    ConnOpen {
        conn: ConnId,
        key: SessionKey,
        path: String,
        movie: Arc<Movie>,
        request: Request,
    },
    /// A SETUP on `conn` that could not open a session before it got here
    /// (no such movie, no room): answered with `status` and logged. `key`
    /// is the session the control core admitted, if it got that far.
    ConnRefused {
        conn: ConnId,
        key: Option<SessionKey>,
        request: Request,
        status: u16,
    },
    /// An answer the door or the driver made for a request on `conn`, to a
    /// request with `method` (`None`: one that did not parse).
    ConnAnswer {
        conn: ConnId,
        method: Option<Method>,
        response: Response,
    },
    /// A `$` frame the client sent on `conn` (RTCP on an odd channel).
    Interleaved {
        conn: ConnId,
        channel: u8,
        data: &'a [u8],
    },
    /// News of a live broadcast from the control core: it started, a
    /// packet, a sender report, its end.
    Live(live::ToShard),
    /// A datagram on the shard's RTCP socket.
    Rtcp {
        from: SocketAddr,
        data: &'a [u8],
    },
    /// The bytes last taken from `conn` are written.
    ConnWritten {
        conn: ConnId,
    },
    /// `conn` is done (the client closed it, it failed, or its loop gave up
    /// on it): its sessions end, and what is queued is written before it
    /// closes. For a listener, what is queued is dropped.
    ConnClosed {
        conn: ConnId,
    },
    /// The driver took over an Icecast listener's connection from `client`
    /// (answered by the control core's handler) and calls it `conn`: its
    /// bytes are taken with [`ShardCore::take_listener_bytes`].
    ListenerOpened {
        conn: ConnId,
        client: SocketAddr,
        start: Box<ListenerStart>,
    },
}

/// What the shard tells the control core.
#[derive(Debug)]
pub enum Event {
    /// The answer to a [`Command::NewSession`] without a connection or a
    /// [`Command::Request`]. A new session that failed is reported with
    /// `SessionEnded` too.
    Reply {
        reply: ReplyId,
        response: Response,
    },
    /// A session ended, or a SETUP that would have opened one was refused
    /// (`key` is `None` if it never got one): its access-log record.
    SessionEnded {
        key: Option<SessionKey>,
        record: AccessRecord,
    },
    /// An Icecast listener left: its access-log record. (Its connection's
    /// `ConnectionClosed` follows.)
    ListenerEnded {
        record: AccessRecord,
    },
    /// An owned connection from `client` closed.
    ConnectionClosed {
        client: SocketAddr,
    },
    Stats {
        reply: ReplyId,
        stats: Box<ShardStats>,
    },
    Snapshot {
        reply: ReplyId,
        snapshot: Box<Snapshot>,
    },
    /// The answer to [`Command::End`]: whether the session was there.
    Ended {
        reply: ReplyId,
        found: bool,
    },
    /// The answer to [`Command::Shutdown`]: the last statistics.
    Stopped {
        stats: Box<ShardStats>,
    },
}

/// What [`ShardCore::poll_output`] returns.
#[derive(Debug)]
pub enum Output {
    Event(Event),
    /// Connection `conn` has bytes to write: take them with
    /// [`ShardCore::take_conn_bytes`].
    ConnReady(ConnId),
    /// Connection `conn` is to be closed once what it has queued is
    /// written: take until [`Taken::Closed`].
    ConnClose(ConnId),
}

/// What [`ShardCore::take_conn_bytes`] gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// Bytes to write; report with [`Input::ConnWritten`] when written.
    Bytes,
    /// Nothing now; wait for [`Output::ConnReady`].
    Idle,
    /// Nothing more: close the connection. The core has forgotten it.
    Closed,
}

/// What RTCP receiver reports say about one stream. 12 bytes, two of
/// them inline in the session (see [`Receptions`]).
#[derive(Debug, Clone, Copy, Default)]
struct Reception {
    /// RFC 3550's field is 24 bits, signed.
    cumulative_lost: i32,
    /// The last report's interarrival jitter, in microseconds (saturated:
    /// over an hour of jitter reads as `u32::MAX`).
    jitter_us: u32,
    /// Whether any report came.
    reported: bool,
}

/// A session's receptions, one a stream: inline for the one to three a
/// movie has (a vector's 24 bytes plus its allocation would be 88).
type Receptions = SmallVec<[Reception; 2]>;

/// One session as the shard sees it, copied for the admin API.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionInfo {
    pub key: SessionKey,
    /// The RTSP `Session` ID.
    pub id: String,
    pub client: SocketAddr,
    pub path: String,
    /// `udp`, `tcp` (interleaved) or `http` (tunnelled), as the access log says.
    pub transport: &'static str,
    /// What it plays: `vod` (a movie); live streams and channels will have theirs.
    pub kind: &'static str,
    /// `ready` (set up, not playing), `playing`, `paused` or `ended` (the
    /// media ran out; waiting for TEARDOWN).
    pub state: &'static str,
    /// RTP packets and bytes (headers included) sent.
    pub packets: u64,
    pub bytes: u64,
    /// Cumulative loss from the client's last receiver reports, summed over
    /// its streams; `None` before any report.
    pub lost: Option<i64>,
    /// The highest interarrival jitter its streams' last reports gave, in
    /// microseconds; `None` before any report.
    pub jitter_us: Option<u64>,
    /// How late the session's last send round, and its latest one, came
    /// after its packets were due, in microseconds.
    pub late_last_us: u64,
    pub late_max_us: u64,
    /// Video frames thinning left out.
    pub frames_thinned: u64,
    /// The thinnest level its video is at (see `repair::thinning`), when
    /// it is thinned at all.
    pub quality: Option<&'static str>,
    /// How far ahead of real time it may be sent now (Instant-On), in ms.
    pub lead_ms: u64,
    /// The speed its play goes at (`Speed`, RFC 2326 section 12.35): 1
    /// but for a PLAY granted another.
    pub speed: f64,
    /// Since its first SETUP.
    pub age_ns: Nanos,
    pub user_agent: Option<String>,
}

/// What a shard holds at one moment: for the admin API and `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub shard: usize,
    pub stats: ShardStats,
    /// Sessions by transport: `udp`, `tcp`, `http`.
    pub by_transport: [usize; 3],
    /// Connections the shard owns.
    pub connections: usize,
    /// Each session, when asked for.
    pub sessions: Vec<SessionInfo>,
}

/// The transports in the order of [`Snapshot::by_transport`].
pub const TRANSPORTS: [&str; 3] = ["udp", "tcp", "http"];

struct Entry {
    session: Session,
    client: SocketAddr,
    /// Bumped whenever the schedule changes; stale heap entries are skipped.
    generation: u32,
    /// The connection carrying the session's media, for TCP.
    conn: Option<ConnId>,
    /// Destination per stream, fixed at PLAY.
    dests: Dests,
    next_sr: Nanos,
    /// When the media (or the requested range) ran out.
    ended_at: Option<Nanos>,
    /// Whether the BYE for this end of the media went (see [`BYE_DELAY`]).
    said_bye: bool,
    reception: Receptions,
    status: u16,
    /// When the last PLAY came, until its first packet goes.
    play_at: Option<Nanos>,
    /// How late its last round and its latest round were.
    late_last: Nanos,
    late_max: Nanos,
    /// NACK/RTX retransmission, for a session that set up a track with
    /// `RTP/AVPF` over UDP; `None` (nothing kept, nothing paid) for the
    /// others. Made at PLAY, when the streams are known.
    rtx: Option<Box<RtxSender>>,
    /// Instant-On and thinning, for a movie session that gets either;
    /// `None` (the plain round) for the others.
    adapt: Option<Box<Adapt>>,
}

impl Entry {
    fn new(session: Session, client: SocketAddr) -> Entry {
        Entry {
            session,
            client,
            generation: 0,
            conn: None,
            dests: Dests::default(),
            next_sr: 0,
            ended_at: None,
            said_bye: false,
            reception: Receptions::new(),
            status: 200,
            play_at: None,
            late_last: 0,
            late_max: 0,
            rtx: None,
            adapt: None,
        }
    }

    /// What the next sender reports' `qtsi` tell a session on reliable UDP
    /// (see [`RtxSender::server_info`]).
    fn server_info(&mut self, now: Nanos) -> Option<(u32, u32)> {
        let rtx = self.rtx.as_deref_mut().filter(|r| r.is_reliable())?;
        let octets = self
            .session
            .playback
            .as_ref()
            .map_or(0, |p| p.streams().iter().map(|s| s.octets).sum());
        rtx.server_info(octets, now)
    }

    /// Keeps what a receiver report says about one of the session's
    /// streams, and counts its jitter and new losses in `stats`. `ntp` is
    /// `now` on the clock of our sender reports, for the round trip the
    /// block implies (RFC 3550 section 6.4.1), which tells a NACK/RTX
    /// session how long a resend is taken to be on its way.
    fn note_report(
        &mut self,
        block: &rtcp::ReportBlock,
        stats: &mut ShardStats,
        thinning: Option<ThinningConfig>,
        now: Nanos,
        ntp: u64,
    ) {
        let Some(source) = self.session.playback.as_ref() else {
            return;
        };
        let Some(i) = source.streams().iter().position(|s| s.ssrc == block.ssrc) else {
            return;
        };
        if block.fraction_lost > 0 || self.adapt.is_some() {
            adapt::on_loss(self, i, block.fraction_lost, thinning, now);
        }
        if let (Some(rtt), Some(rtx)) = (block.round_trip(ntp), self.rtx.as_deref_mut()) {
            rtx.set_rtt(rtt);
        }
        let Some(source) = self.session.playback.as_ref() else {
            return;
        };
        let rate = u64::from(source.streams()[i].rtp_timescale.max(1));
        let jitter_us = u64::from(block.jitter).saturating_mul(1_000_000) / rate;
        if let Some(r) = self.reception.get_mut(i) {
            // The loss may shrink (duplicates make it negative, RFC 3550
            // 6.4.1): only growth counts as packets lost.
            let lost = block.cumulative_lost;
            let grew = (i64::from(lost.max(0)) - i64::from(r.cumulative_lost.max(0))).max(0) as u64;
            r.cumulative_lost = lost;
            r.jitter_us = u32::try_from(jitter_us).unwrap_or(u32::MAX);
            r.reported = true;
            stats.record_report(jitter_us, grew);
        }
    }

    /// The session's figures for the admin API, at `now`.
    fn info(&self, key: SessionKey, transport: &'static str, now: Nanos) -> SessionInfo {
        let (packets, bytes) = sent(self);
        let state = match &self.session.playback {
            None => "ready",
            Some(_) if self.session.play_status.is_none() => "ready",
            Some(_) if self.ended_at.is_some() => "ended",
            Some(p) if p.has_ended() => "ended",
            Some(p) if p.is_playing() => "playing",
            Some(_) => "paused",
        };
        let reported = self.reception.iter().any(|r| r.reported);
        SessionInfo {
            key,
            id: self.session.id(),
            client: self.client,
            path: self.session.path.to_string(),
            transport,
            kind: "vod",
            state,
            packets,
            bytes,
            lost: reported.then(|| lost(self).unwrap_or(0)),
            jitter_us: reported.then(|| self.reception.iter().map(|r| u64::from(r.jitter_us)).max().unwrap_or(0)),
            late_last_us: self.late_last / 1_000,
            late_max_us: self.late_max / 1_000,
            frames_thinned: self.adapt.as_ref().map_or(0, |a| a.stats().frames_thinned),
            quality: self.adapt.as_ref().and_then(|a| a.quality()).map(|q| q.name()),
            lead_ms: self.adapt.as_ref().map_or(0, |a| a.lead().as_millis() as u64),
            speed: self.session.playback.as_ref().map_or(1.0, Source::speed),
            age_ns: now.saturating_sub(self.session.started),
            user_agent: self.session.user_agent.clone(),
        }
    }
}

/// RTP packets and bytes (headers included) session `e` has sent.
fn sent(e: &Entry) -> (u64, u64) {
    e.session.playback.as_ref().map_or((0, 0), |p| {
        p.streams()
            .iter()
            .fold((0, 0), |a, s| (a.0 + s.packets, a.1 + s.octets + 12 * s.packets))
    })
}

/// The loss session `e`'s client reported, if it reported.
fn lost(e: &Entry) -> Option<i64> {
    (!e.reception.is_empty()).then(|| e.reception.iter().map(|r| i64::from(r.cumulative_lost.max(0))).sum())
}

/// An RTSP connection the shard owns: its bounded queue of whole responses
/// and whole `$` frames.
struct Conn {
    client: SocketAddr,
    out: Vec<u8>,
    /// Bytes taken by the writer and not yet written.
    in_flight: usize,
    bound: usize,
    /// The sessions whose media rides it.
    sessions: SmallVec<[SessionKey; 1]>,
    /// Whether the driver has been told it has bytes and has not taken them.
    signalled: bool,
    closing: bool,
    tunnelled: bool,
}

impl Conn {
    fn queued(&self) -> usize {
        self.out.len() + self.in_flight
    }

    /// Queues a response: always, whatever the bound.
    fn respond(&mut self, r: &Response) {
        r.write_to(&mut self.out);
    }

    /// Queues a `$` frame, unless the queue is past its bound: then the whole
    /// frame is dropped (never part of one) and `false` returned.
    fn frame(&mut self, channel: u8, parts: &[&[u8]]) -> bool {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        self.queued() + interleaved::HEADER_LEN + len <= self.bound
            && interleaved::emit(&mut self.out, channel, parts).is_ok()
    }
}

/// Tells the driver once that `conn` has bytes, until it takes them.
fn signal(outputs: &mut VecDeque<Output>, id: ConnId, conn: &mut Conn) {
    if !conn.signalled && !conn.out.is_empty() {
        conn.signalled = true;
        outputs.push_back(Output::ConnReady(id));
    }
}

/// An Icecast listener the shard owns: where it is in its file, and its
/// bounded queue of slices of the file's mapping (and metadata blocks),
/// which its writer takes whole.
struct Listening {
    client: SocketAddr,
    listener: Listener,
    out: VecDeque<Bytes>,
    /// Bytes in `out`.
    queued: usize,
    /// Bytes taken by the writer and not yet written.
    in_flight: usize,
    /// Past this many bytes waiting, the listener is too slow: dropped.
    /// Its queue bound plus its first burst.
    bound: usize,
    signalled: bool,
    closing: bool,
    /// Closed with its queue dropped: what its writer still writes is of
    /// no use.
    abandoned: bool,
    joined: Nanos,
    /// Bytes written.
    sent: u64,
    path: String,
    user_agent: Option<String>,
}

impl Listening {
    /// Stops sending: the writer writes what is queued (all of it, at the
    /// end of the file; nothing, for a listener that went or was dropped)
    /// and closes.
    fn close(&mut self, id: ConnId, outputs: &mut VecDeque<Output>, drop_queue: bool) {
        if drop_queue {
            self.out.clear();
            self.queued = 0;
            self.abandoned = true;
        }
        if !self.closing {
            self.closing = true;
            outputs.push_back(Output::ConnClose(id));
        }
    }

    fn signal(&mut self, id: ConnId, outputs: &mut VecDeque<Output>) {
        if !self.signalled && !self.out.is_empty() {
            self.signalled = true;
            outputs.push_back(Output::ConnReady(id));
        }
    }

    /// Queues what its mount's replica has that it has not; drops a
    /// listener that has fallen too far behind.
    fn serve_mount(
        &mut self,
        id: ConnId,
        replica: &MountReplica,
        stats: &mut ShardStats,
        outputs: &mut VecDeque<Output>,
    ) {
        if self.closing {
            return;
        }
        self.queued += self.listener.serve_mount(replica, &mut self.out);
        if self.queued + self.in_flight > self.bound {
            stats.listeners_dropped += 1;
            debug!(client = %self.client, path = self.path, waiting = self.queued + self.in_flight, "listener too slow; dropped");
            self.close(id, outputs, true);
            return;
        }
        self.signal(id, outputs);
    }

    /// Queues what is due at `now`; drops a listener that has fallen too
    /// far behind, and ends one whose file is all queued.
    fn serve(
        &mut self,
        id: ConnId,
        now: Nanos,
        schedule: &mut Schedule,
        stats: &mut ShardStats,
        outputs: &mut VecDeque<Output>,
    ) {
        if self.closing {
            return;
        }
        let (n, next) = self.listener.serve(now, &mut self.out);
        self.queued += n;
        if self.queued + self.in_flight > self.bound {
            stats.listeners_dropped += 1;
            debug!(client = %self.client, path = self.path, waiting = self.queued + self.in_flight, "listener too slow; dropped");
            self.close(id, outputs, true);
            return;
        }
        self.signal(id, outputs);
        match next {
            Some(t) => schedule.push(t, id, 0),
            None => self.close(id, outputs, false),
        }
    }
}

/// A shard's sessions and everything they need, driven by the rule in the
/// module documentation.
pub struct ShardCore {
    config: Config,
    /// A broadcast this shard hears nothing of for this long is over: the
    /// publisher's silence timeout, plus the publish grace.
    live_silence: Nanos,
    /// Boxed: an `Entry` is about 750 bytes, and inline the table's empty
    /// slots (up to half of them after it doubles, at most 7/8 full) would
    /// cost that much each; boxed a slot is 16 bytes. A lookup in the round
    /// costs about the same: the slots of thousands of inline entries are
    /// far out of the caches, the 16-byte ones mostly in them.
    sessions: KeyMap<SessionKey, Box<Entry>>,
    schedule: Schedule,
    /// Live viewers a new packet of their broadcast woke, due at once, in
    /// the order they were woken: served before the schedule's entries.
    /// Every packet wakes every viewer waiting at the live edge, and in the
    /// schedule they would all land in the bucket of the moment, so that
    /// each of its buckets in turn grew to room for all the viewers (6 KiB
    /// a viewer at 256 buckets) and each round sorted thousands of them.
    woken: VecDeque<Due>,
    /// The sessions that have each client RTCP address.
    rtcp_routes: AddressRoutes,
    /// The session of each of our streams' SSRCs, to tell apart reports that
    /// come from one address for several sessions.
    ssrc_routes: KeyMap<u32, SessionKey>,
    conns: KeyMap<ConnId, Conn>,
    /// Icecast listeners, by their connection, and when each is due more.
    listeners: KeyMap<ConnId, Listening>,
    listener_schedule: Schedule,
    stats: ShardStats,
    udp: UdpRound,
    /// The round's RTCP (sender reports, BYEs), sent from the RTCP socket.
    rtcp: RtcpRound,
    outputs: VecDeque<Output>,
    next_housekeeping: Nanos,
    /// When the last round ran: the next is no sooner than a round later.
    last_round: Nanos,
    /// The latest `now` the core was given (for the records of listeners,
    /// whose end is found in a call that has no `now`).
    last_seen_now: Nanos,
    /// A session (re)scheduled by a request wants a round before that.
    urgent: Option<Nanos>,
    /// Sessions whose media ran out in the last round: their BYE goes in
    /// the next, once that round's packets are counted.
    ended: Vec<SessionKey>,
    /// This shard's replica of each live broadcast; viewers hold them too.
    live: KeyMap<BroadcastId, Rc<RefCell<Replica>>>,
    /// Icecast mounts' replicas, each with its listeners on this shard.
    mounts: KeyMap<MountId, MountReplica>,
    /// Mounts that ended lately: a listener that reaches the shard after
    /// its mount's end is ended at once, not given a replica that no feed
    /// will ever fill.
    mounts_ended: VecDeque<MountId>,
    rng: Rng,
    /// Sessions on reliable UDP, and the earliest time one of them may have
    /// something to send again (no later than it does; `Nanos::MAX` for
    /// none): a sweep of just these, not of every session.
    reliable: Vec<SessionKey>,
    next_resend: Nanos,
    /// One copy of each path the shard's sessions play.
    paths: Paths,
}

/// The paths a shard's sessions play, each kept once and shared by its
/// sessions (a path a session was a 24-byte string and an allocation of
/// its own, for as long as it played). Those no session holds any more
/// are let go at the housekeeping.
#[derive(Default)]
struct Paths(std::collections::HashSet<Rc<str>>);

impl Paths {
    fn intern(&mut self, path: &str) -> Rc<str> {
        if let Some(p) = self.0.get(path) {
            return p.clone();
        }
        let p: Rc<str> = Rc::from(path);
        self.0.insert(p.clone());
        p
    }

    fn sweep(&mut self) {
        self.0.retain(|p| Rc::strong_count(p) > 1);
    }
}

/// The shard's round of RTP and RTCP datagrams, to send after a call.
pub struct Transmit<'a> {
    udp: &'a mut UdpRound,
    rtcp: &'a mut RtcpRound,
    stats: &'a mut ShardStats,
}

/// What a [`Transmit`] flush did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sent {
    pub rtp: Flushed,
    pub rtcp: Flushed,
}

impl Transmit<'_> {
    pub fn is_empty(&self) -> bool {
        self.udp.is_empty() && self.rtcp.is_empty()
    }

    /// The queued RTP datagrams.
    pub fn udp(&self) -> &UdpRound {
        self.udp
    }

    /// Sends the round's RTP from `rtp` and its RTCP from `rtcp`, each in
    /// batched `sendmmsg` calls.
    pub fn flush(self, rtp: &UdpSocket, rtcp: &UdpSocket) -> Sent {
        let mut sent = Sent::default();
        if !self.udp.is_empty() {
            sent.rtp = self.udp.flush(rtp, self.stats);
        }
        if !self.rtcp.is_empty() {
            sent.rtcp = self.rtcp.flush(rtcp);
            self.stats.dropped_udp += (sent.rtcp.would_block + sent.rtcp.failed) as u64;
        }
        sent
    }

    /// Forgets the round's datagrams without sending or counting them: for
    /// a benchmark that records what a round would send.
    pub fn clear(self) {
        self.udp.clear();
        self.rtcp.clear();
    }

    /// As [`flush`](Self::flush), each datagram to `rtp` or `rtcp`, which
    /// say whether it was taken: for tests and simulations without sockets.
    pub fn flush_with(
        self,
        rtp: impl FnMut(SocketAddr, &[u8]) -> bool,
        rtcp: impl FnMut(SocketAddr, &[u8]) -> bool,
    ) -> Sent {
        let rtp = self.udp.flush_with(self.stats, rtp);
        let rtcp = self.rtcp.flush_with(rtcp);
        self.stats.dropped_udp += (rtcp.would_block + rtcp.failed) as u64;
        Sent { rtp, rtcp }
    }
}

impl ShardCore {
    pub fn new(config: Config, rng: Rng) -> ShardCore {
        ShardCore {
            config,
            live_silence: live::SILENCE_TIMEOUT,
            sessions: KeyMap::default(),
            schedule: Schedule::default(),
            woken: VecDeque::new(),
            rtcp_routes: AddressRoutes::default(),
            ssrc_routes: KeyMap::default(),
            conns: KeyMap::default(),
            listeners: KeyMap::default(),
            listener_schedule: Schedule::default(),
            stats: ShardStats::default(),
            udp: UdpRound::new(BATCH),
            rtcp: RtcpRound::default(),
            outputs: VecDeque::new(),
            next_housekeeping: 0,
            last_round: 0,
            last_seen_now: 0,
            urgent: None,
            ended: Vec::new(),
            live: KeyMap::default(),
            mounts: KeyMap::default(),
            mounts_ended: VecDeque::new(),
            rng,
            reliable: Vec::new(),
            next_resend: Nanos::MAX,
            paths: Paths::default(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Whether session `key` is one of this shard's: what the door asks.
    pub fn has_session(&self, key: SessionKey) -> bool {
        self.sessions.contains_key(&key)
    }

    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// Icecast listeners on the shard (leaving ones included until their
    /// writer is done).
    pub fn listeners(&self) -> usize {
        self.listeners.len()
    }

    pub fn stats(&self) -> &ShardStats {
        &self.stats
    }

    /// How long a broadcast's viewers wait for its publisher beyond the
    /// silence timeout (the publish grace).
    pub fn set_publish_grace(&mut self, grace: Nanos) {
        self.live_silence = live::SILENCE_TIMEOUT.saturating_add(grace);
    }

    /// Whether UDP GSO is used for runs of packets to one client.
    pub fn set_gso(&mut self, enabled: bool) {
        self.udp.set_gso(enabled);
    }

    /// How the rounds' RTP and RTCP reach the kernel. An error (no io_uring
    /// on this kernel) leaves both on `sendmmsg`.
    pub fn set_send_path(&mut self, path: SendPath) -> std::io::Result<()> {
        let result = self
            .udp
            .set_send_path(path)
            .and_then(|()| self.rtcp.set_send_path(path));
        if result.is_err() {
            let _ = self.udp.set_send_path(SendPath::Sendmmsg);
            let _ = self.rtcp.set_send_path(SendPath::Sendmmsg);
        }
        result
    }

    pub fn send_path(&self) -> SendPath {
        self.udp.send_path()
    }

    /// What the last call queued for the network.
    pub fn transmit(&mut self) -> Transmit<'_> {
        Transmit {
            udp: &mut self.udp,
            rtcp: &mut self.rtcp,
            stats: &mut self.stats,
        }
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) next: a
    /// lookahead before the next packet is due, so that the timer's own
    /// delay does not make it late, but no sooner than a round after the
    /// last one, unless a request has just started a session's media.
    pub fn poll_timeout(&self) -> Option<Nanos> {
        let woken = self.woken.front().map(|w| w.0);
        let paced = match (self.schedule.next_due(), woken) {
            (Some(d), Some(w)) => Some(d.min(w)),
            (d, w) => d.or(w),
        }
        .map(|d| d.saturating_sub(LOOKAHEAD));
        let mut next = paced.map_or(self.next_housekeeping, |p| p.min(self.next_housekeeping));
        if let Some(l) = self.listener_schedule.next_due() {
            next = next.min(l);
        }
        if !self.ended.is_empty() {
            next = 0;
        }
        next = next.max(self.last_round + LOOKAHEAD);
        if let Some(u) = self.urgent {
            next = next.min(u);
        }
        next = next.min(self.next_resend);
        Some(next)
    }

    /// Gives the writer of `conn` what it has queued, swapping it with the
    /// (empty) `buf`, whose capacity the connection keeps for its next bytes
    /// while they keep coming; a connection with nothing queued keeps none.
    pub fn take_conn_bytes(&mut self, conn: ConnId, buf: &mut Vec<u8>) -> Taken {
        let Some(c) = self.conns.get_mut(&conn) else {
            return Taken::Closed;
        };
        c.signalled = false;
        if !c.out.is_empty() {
            buf.clear();
            std::mem::swap(buf, &mut c.out);
            c.in_flight = buf.len();
            return Taken::Bytes;
        }
        if !c.closing {
            // The writer waits: the queue's room goes until bytes come
            // (what a burst grew it to would otherwise stay with every idle
            // connection).
            c.out = Vec::new();
            return Taken::Idle;
        }
        let client = c.client;
        self.conns.remove(&conn);
        self.outputs
            .push_back(Output::Event(Event::ConnectionClosed { client }));
        Taken::Closed
    }

    /// Gives the writer of listener `conn` what it has queued, swapping it
    /// with the (empty) `buf`: slices of the file and metadata blocks, to
    /// write in order. As [`take_conn_bytes`](Self::take_conn_bytes), and
    /// at [`Taken::Closed`] the listener's access-log record goes out.
    pub fn take_listener_bytes(&mut self, conn: ConnId, buf: &mut VecDeque<Bytes>) -> Taken {
        let Some(l) = self.listeners.get_mut(&conn) else {
            return Taken::Closed;
        };
        l.signalled = false;
        if !l.out.is_empty() {
            buf.clear();
            std::mem::swap(buf, &mut l.out);
            l.in_flight = l.queued;
            l.queued = 0;
            return Taken::Bytes;
        }
        if !l.closing {
            return Taken::Idle;
        }
        let Some(l) = self.listeners.remove(&conn) else {
            return Taken::Closed;
        };
        if let Some(r) = l.listener.mount().and_then(|id| self.mounts.get_mut(&id)) {
            r.listeners.retain(|&c| c != conn);
        }
        self.stats.listeners_ended += 1;
        let record = AccessRecord {
            client: l.client.ip(),
            uri: l.path,
            duration: Duration::from_nanos(self.last_seen_now.saturating_sub(l.joined)),
            bytes: l.sent,
            status: 200,
            user_agent: l.user_agent,
            transport: "http",
            ..AccessRecord::default()
        };
        self.event(Event::ListenerEnded { record });
        self.event(Event::ConnectionClosed { client: l.client });
        Taken::Closed
    }

    /// Whether listener `conn` was dropped (too slow, gone, shutdown): its
    /// writer may give up a write that is waiting for the client.
    pub fn listener_abandoned(&self, conn: ConnId) -> bool {
        self.listeners.get(&conn).is_none_or(|l| l.abandoned)
    }

    pub fn handle_input(&mut self, now: Nanos, input: Input<'_>) {
        self.settle();
        self.last_seen_now = self.last_seen_now.max(now);
        match input {
            Input::ListenerOpened { conn, client, start } => {
                let mut l = Listening {
                    client,
                    listener: Listener::new(&start, now),
                    out: VecDeque::new(),
                    queued: start.head.len(),
                    in_flight: 0,
                    bound: usize::MAX,
                    signalled: false,
                    closing: false,
                    abandoned: false,
                    joined: now,
                    sent: 0,
                    path: start.path,
                    user_agent: start.user_agent,
                };
                l.out.push_back(Bytes::from(start.head));
                self.stats.listeners_started += 1;
                if let Some(id) = l.listener.mount() {
                    if self.mounts_ended.contains(&id) {
                        l.close(conn, &mut self.outputs, false);
                    } else {
                        let replica = self.mounts.entry(id).or_default();
                        replica.listeners.push(conn);
                        l.serve_mount(conn, replica, &mut self.stats, &mut self.outputs);
                    }
                    l.bound = l.queued.saturating_add(start.queue_bytes);
                    self.listeners.insert(conn, l);
                    return;
                }
                let ShardCore {
                    listener_schedule,
                    stats,
                    outputs,
                    ..
                } = self;
                l.serve(conn, now, listener_schedule, stats, outputs);
                // The head and the burst are what it has at once; beyond
                // them it may fall this far behind.
                l.bound = l.queued.saturating_add(start.queue_bytes);
                self.listeners.insert(conn, l);
            }
            Input::Command(c) => self.command(now, c),
            Input::ConnOpened {
                conn,
                client,
                tunnelled,
            } => {
                self.conns.insert(
                    conn,
                    Conn {
                        client,
                        out: Vec::new(),
                        in_flight: 0,
                        bound: self.config.tcp_queue_bytes,
                        sessions: SmallVec::new(),
                        signalled: false,
                        closing: false,
                        tunnelled,
                    },
                );
            }
            Input::ConnRequest { conn, key, request } => {
                let Some(client) = self.conns.get(&conn).map(|c| c.client) else {
                    return;
                };
                let response = self.request(key, &request, client, Some(conn), now);
                self.respond(conn, Some(&request.method), &response);
            }
            Input::ConnOpen {
                conn,
                key,
                path,
                movie,
                request,
            } => {
                let Some(client) = self.conns.get(&conn).map(|c| c.client) else {
                    // Gone meanwhile: the admitted session never came to be.
                    self.refuse(Some(key), "0.0.0.0:0".parse().expect("an address"), &request, 503);
                    return;
                };
                let response = self.open_session(key, path, Media::Movie(movie), &request, client, Some(conn), now);
                self.respond(conn, Some(&request.method), &response);
            }
            Input::ConnRefused {
                conn,
                key,
                request,
                status,
            } => {
                let client = self.conns.get(&conn).map(|c| c.client);
                if let Some(client) = client {
                    self.refuse(key, client, &request, status);
                    self.respond(conn, Some(&request.method), &Response::new(status, request.cseq()));
                }
            }
            Input::ConnAnswer { conn, method, response } => self.respond(conn, method.as_ref(), &response),
            Input::Interleaved { conn, channel, data } => {
                // RTCP from the client rides the odd channels of its session.
                let key = self.conns.get(&conn).and_then(|c| {
                    c.sessions.iter().copied().find(|k| {
                        self.sessions.get(k).is_some_and(|e| {
                            e.dests
                                .iter()
                                .any(|d| matches!(d, Destination::Tcp { rtcp_channel, .. } if rtcp_channel == channel))
                        })
                    })
                });
                if let Some(key) = key {
                    self.on_rtcp(key, data, now);
                }
            }
            Input::Live(news) => self.on_live(news, now),
            Input::Rtcp { from, data } => self.on_rtcp_udp(from, data, now),
            Input::ConnWritten { conn } => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.in_flight = 0;
                }
                if let Some(l) = self.listeners.get_mut(&conn) {
                    l.sent += l.in_flight as u64;
                    self.stats.listener_bytes += l.in_flight as u64;
                    l.in_flight = 0;
                }
            }
            Input::ConnClosed { conn } if self.listeners.contains_key(&conn) => {
                if let Some(l) = self.listeners.get_mut(&conn) {
                    l.in_flight = 0;
                    l.close(conn, &mut self.outputs, true);
                }
            }
            Input::ConnClosed { conn } => {
                let Some(c) = self.conns.get_mut(&conn) else { return };
                c.closing = true;
                let keys = std::mem::take(&mut c.sessions);
                for key in keys {
                    self.end_session(key, now, "connection closed");
                }
                self.outputs.push_back(Output::ConnClose(conn));
            }
        }
    }

    fn command(&mut self, now: Nanos, cmd: Command) {
        match cmd {
            Command::NewSession {
                key,
                path,
                movie,
                request,
                client,
                conn,
                reply,
            } => {
                let response = self.open_session(key, path, Media::Movie(movie), &request, client, conn, now);
                match conn {
                    Some(c) => self.respond(c, Some(&request.method), &response),
                    None => self.event(Event::Reply { reply, response }),
                }
            }
            Command::NewViewer {
                key,
                path,
                broadcast,
                request,
                client,
                conn,
                reply,
            } => {
                let replica = self.replica(broadcast, now);
                let response = self.open_session(key, path, Media::Live(replica), &request, client, conn, now);
                match conn {
                    Some(c) => self.respond(c, Some(&request.method), &response),
                    None => self.event(Event::Reply { reply, response }),
                }
            }
            Command::Request {
                key,
                request,
                client,
                reply,
            } => {
                let response = self.request(key, &request, client, None, now);
                self.event(Event::Reply { reply, response });
            }
            Command::Stats { reply } => {
                let mut stats = Box::new(self.stats_now());
                for e in self.sessions.values() {
                    if e.session.playback.as_ref().is_some_and(Source::is_live) {
                        stats.live.entry(e.session.path.to_string()).or_default().viewers += 1;
                    }
                }
                self.event(Event::Stats { reply, stats });
            }
            Command::Snapshot { reply, sessions } => {
                let snapshot = Box::new(self.snapshot(now, sessions));
                self.event(Event::Snapshot { reply, snapshot });
            }
            Command::End { key, reply } => {
                let conn = self.sessions.get(&key).map(|e| e.conn);
                let found = conn.is_some();
                if found {
                    self.end_session(key, now, "ended by the operator");
                }
                // Its connection goes too, once the BYE and what was queued
                // before it are written, unless another session rides it:
                // a client over TCP sees the end as the connection's.
                if let Some(Some(id)) = conn {
                    if let Some(c) = self.conns.get_mut(&id).filter(|c| c.sessions.is_empty()) {
                        c.closing = true;
                        self.outputs.push_back(Output::ConnClose(id));
                    }
                }
                self.event(Event::Ended { reply, found });
            }
            Command::Shutdown => {
                let keys: Vec<SessionKey> = self.sessions.keys().copied().collect();
                for key in keys {
                    self.end_session(key, now, "server shutdown");
                }
                let stats = Box::new(self.stats.clone());
                self.event(Event::Stopped { stats });
                for (&id, l) in self.listeners.iter_mut() {
                    l.close(id, &mut self.outputs, true);
                }
                let conns: Vec<ConnId> = self.conns.keys().copied().collect();
                for id in conns {
                    if let Some(c) = self.conns.get_mut(&id) {
                        c.closing = true;
                    }
                    self.outputs.push_back(Output::ConnClose(id));
                }
            }
        }
    }

    fn event(&mut self, e: Event) {
        self.outputs.push_back(Output::Event(e));
    }

    /// Queues a response on `conn`, to a request with `method`.
    fn respond(&mut self, conn: ConnId, method: Option<&Method>, r: &Response) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.respond(r);
            self.stats.requests.count(method, r.status.code());
            signal(&mut self.outputs, conn, c);
        }
    }

    /// The shard's statistics and counts, and with `sessions` each
    /// session's figures, at `now`.
    /// The statistics, with the gauges that are counted when asked (each
    /// mount's listeners here).
    fn stats_now(&self) -> ShardStats {
        let mut stats = self.stats.clone();
        stats.mount_listeners = self
            .mounts
            .iter()
            .map(|(&id, r)| (id, r.listeners.len() as u64))
            .collect();
        stats
    }

    pub fn snapshot(&self, now: Nanos, sessions: bool) -> Snapshot {
        let mut snap = Snapshot {
            shard: self.config.index,
            stats: self.stats_now(),
            connections: self.conns.len(),
            ..Snapshot::default()
        };
        for (&key, e) in &self.sessions {
            let tunnelled = e.conn.and_then(|c| self.conns.get(&c)).is_some_and(|c| c.tunnelled);
            let t = transport(e.conn, tunnelled);
            if let Some(i) = TRANSPORTS.iter().position(|&x| x == t) {
                snap.by_transport[i] += 1;
            }
            if sessions {
                snap.sessions.push(e.info(key, t, now));
            }
        }
        snap
    }

    /// Takes the packets the last flush did not send back out of their
    /// streams' counts.
    fn settle(&mut self) {
        let ShardCore { udp, sessions, .. } = self;
        for u in udp.take_unsent() {
            if let Some(s) = sessions
                .get_mut(&u.key)
                .and_then(|e| e.session.playback.as_mut())
                .and_then(|p| p.streams_mut().get_mut(u.stream))
            {
                s.unsend(u.payload_len);
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
        media: Media,
        req: &Request,
        client: SocketAddr,
        conn: Option<ConnId>,
        now: Nanos,
    ) -> Response {
        let path = self.paths.intern(&path);
        self.sessions
            .insert(key, Box::new(Entry::new(Session::of(key, path, media, now), client)));
        let response = self.request(key, req, client, conn, now);
        if response.status == 200 {
            self.stats.sessions_started += 1;
        } else if self.sessions.remove(&key).is_some() {
            self.refuse(Some(key), client, req, response.status.code());
        }
        response
    }

    /// Tells the control core that a SETUP opened no session.
    fn refuse(&mut self, key: Option<SessionKey>, client: SocketAddr, req: &Request, status: u16) {
        let record = AccessRecord::refused(client, req, status);
        self.event(Event::SessionEnded { key, record });
    }

    /// Handles a request naming session `key`, from the control core or
    /// from connection `conn`.
    fn request(
        &mut self,
        key: SessionKey,
        req: &Request,
        client: SocketAddr,
        conn: Option<ConnId>,
        now: Nanos,
    ) -> Response {
        let ShardCore {
            sessions,
            conns,
            rng,
            ssrc_routes,
            config,
            ..
        } = self;
        let Some(e) = sessions.get_mut(&key) else {
            return Response::new(454, req.cseq());
        };
        if e.session.tracks.is_empty() && e.conn != conn {
            // The first SETUP decides where the session's media goes.
            e.conn = conn;
            if let Some(c) = conn.and_then(|c| conns.get_mut(&c)) {
                c.sessions.push(key);
            }
        }
        let mut seeds = || draw_seeds(rng, ssrc_routes);
        let mut ctx = Context {
            now,
            client: client.ip(),
            server_ports: config.server_ports,
            interleaved_ok: conn.is_some() && e.conn == conn,
            timeout_secs: config.session_timeout_secs,
            instant_on: config.instant_on.is_some(),
            max_speed: config.max_speed,
            seeds: &mut seeds,
        };
        let (response, effect) = e.session.handle(req, &mut ctx);
        if req.method == Method::Setup && response.status == 200 {
            // The streams may have changed: retransmission is made again
            // at the next PLAY.
            if let Some(rtx) = e.rtx.take() {
                for x in rtx.streams().filter_map(|s| s.setup.rtx_ssrc()) {
                    self.ssrc_routes.remove(&x);
                }
                if rtx.is_reliable() {
                    self.reliable.retain(|k| *k != key);
                }
            }
            for t in &e.session.tracks {
                self.ssrc_routes.insert(t.seeds.0, key);
                if let Destination::Udp { rtcp, .. } = t.destination() {
                    self.rtcp_routes.insert(rtcp, key);
                }
            }
        }
        if req.method == Method::Play {
            e.status = response.status.code();
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
                if e.rtx.is_none() {
                    // Sized for the burst it may get (see adapt::at_play):
                    // none for a client that said x-Dynamic-Rate: 0, the
                    // step at PLAY and a little for NACK/RTX.
                    let reliable = e.session.tracks.iter().any(|t| t.reliable);
                    let lead = config
                        .instant_on
                        .filter(|_| e.session.dynamic_rate != Some(false))
                        .map_or(Duration::ZERO, |b| adapt::repaired_lead(&b, reliable));
                    e.rtx = rtx_sender(&e.session, &e.dests, lead, &mut self.rng, &mut self.ssrc_routes, key);
                    if e.rtx.as_ref().is_some_and(|r| r.is_reliable()) {
                        self.reliable.push(key);
                    }
                }
                if req.method == Method::Play {
                    e.play_at = Some(now);
                    if let Some(rtx) = e.rtx.as_deref_mut() {
                        rtx.on_play();
                    }
                    adapt::at_play(e, config, now);
                }
                if let Some(due) = e.session.playback.as_mut().and_then(|p| p.next_due()) {
                    self.schedule.push(due, key, e.generation);
                    // A new PLAY does not wait for the round.
                    let wanted = due.saturating_sub(LOOKAHEAD).max(now);
                    self.urgent = Some(self.urgent.map_or(wanted, |u| u.min(wanted)));
                } else if let Some(Source::Live(l)) = e.session.playback.as_ref() {
                    // Nothing to send yet (no key frame has come): the next
                    // packet wakes it.
                    if l.is_playing() {
                        l.replica().borrow_mut().idle.push(key);
                    }
                }
            }
            Effect::End => self.end_session(key, now, "teardown"),
        }
        response
    }

    /// A send round at `now`; see the module documentation.
    pub fn handle_timeout(&mut self, now: Nanos) {
        self.settle();
        self.last_round = now;
        self.last_seen_now = self.last_seen_now.max(now);
        self.urgent = None;
        // Media that ran out last round: its BYE goes from the housekeeping,
        // BYE_DELAY on (and so after what it reports is counted). Media sent
        // ahead of real time ends when its last packet is due, not when it
        // went: GStreamer stops reading at the BYE (see BYE_DELAY), and the
        // repairs of what the client has yet to play must reach it.
        for key in std::mem::take(&mut self.ended) {
            let Some(e) = self.sessions.get_mut(&key) else { continue };
            let Some(p) = e.session.playback.as_ref().filter(|p| p.has_ended()) else {
                continue;
            };
            if e.ended_at.is_none() {
                e.ended_at = Some(p.ended_due().map_or(now, |due| due.max(now)));
            }
        }
        if now >= self.next_housekeeping {
            self.housekeeping(now);
            self.next_housekeeping = now + HOUSEKEEPING;
        }
        if now >= self.next_resend {
            self.resend_due(now);
        }
        let horizon = now + LOOKAHEAD;
        let ntp = self.ntp(now);
        let ShardCore {
            sessions,
            schedule,
            woken,
            conns,
            stats,
            udp,
            rtcp,
            outputs,
            config,
            ended,
            next_resend,
            ..
        } = self;
        // Bounded (see ROUND_PACKETS): what is left goes next round.
        while udp.len() < pacer::ROUND_PACKETS {
            let Some((due, key, generation)) = woken.pop_front().or_else(|| schedule.pop_due(horizon)) else {
                break;
            };
            let Some(e) = sessions.get_mut(&key) else { continue };
            if e.generation != generation {
                continue;
            }
            let late = now.saturating_sub(due);
            if e.rtx.as_ref().is_some_and(|r| r.is_flow_controlled()) {
                // Reliable UDP's window is full: nothing new goes until
                // acks open it (DSS held the session back the same way).
                // Looked at again shortly; what is held back grows late.
                stats.repair.reliable.flow_controlled += 1;
                schedule.push(now + FLOW_CONTROL_WAIT, key, generation);
                continue;
            }
            e.late_last = late;
            e.late_max = e.late_max.max(late);
            // Sender reports ride with the media: due with the session's
            // packets, they spread over the rounds as the sessions do, rather
            // than coming all at once from a sweep of every session. Written
            // before this round's packets are counted (they have not gone
            // yet), they go out after them.
            if now >= e.next_sr && e.session.playback.as_ref().is_some_and(|p| p.is_playing()) {
                e.next_sr = now + SR_INTERVAL;
                let qtsi = e.server_info(now);
                write_reports(e, now, ntp, &config.cname, qtsi, rtcp, conns, outputs, false);
            }
            let Some(source) = e.session.playback.as_mut() else {
                continue;
            };
            let mut conn = e.conn.and_then(|c| conns.get_mut(&c).map(|conn| (c, conn)));
            if let (Source::Live(l), Some((_, c))) = (&mut *source, conn.as_ref()) {
                l.set_room(c.bound.saturating_sub(c.queued()));
            }
            // Only in a PLAY's first rounds: the packets so far, to see the first go.
            let before = e.play_at.map(|_| total_packets(source));
            let queue = conn.as_ref().map(|(_, c)| (c.queued(), c.bound));
            let tcp = |channel, o: &Outgoing<'_>| {
                conn.as_mut().is_some_and(|(id, c)| {
                    let queued = send_tcp(c, channel, o);
                    signal(outputs, *id, c);
                    queued
                })
            };
            // Two instances of the round's loop: only a session that
            // negotiated retransmission keeps a history of what it sends.
            let served = match (e.adapt.as_deref_mut(), e.rtx.as_deref_mut()) {
                (None, None) => pacer::serve_due(key, source, &e.dests, now, horizon, udp, stats, tcp, |_| {}),
                (None, Some(rtx)) => pacer::serve_due(key, source, &e.dests, now, horizon, udp, stats, tcp, |o| {
                    rtx.keep(o, now)
                }),
                // A third, for a session sent ahead or thinned.
                (Some(a), mut rtx) => {
                    adapt::serve(a, key, source, &e.dests, now, horizon, queue, udp, stats, tcp, |o| {
                        if let Some(r) = rtx.as_deref_mut() {
                            r.keep(o, now)
                        }
                    })
                }
            };
            if e.rtx.as_ref().is_some_and(|r| r.is_reliable()) {
                // What was just sent is due again no sooner than the
                // shortest RTO.
                *next_resend = (*next_resend).min(now + u64::from(reliable::MIN_RTO_MS) * MS);
            }
            if let (Some(at), Some(before)) = (e.play_at, before) {
                if total_packets(source) > before {
                    stats.record_first_packet(now.saturating_sub(at));
                    e.play_at = None;
                }
            }
            match served {
                Some(next) => schedule.push(next, key, generation),
                None if source.has_ended() => ended.push(key),
                // A live viewer that has sent all there is waits for the
                // next packet, which wakes it.
                None => {
                    if let Source::Live(l) = source {
                        if l.is_playing() {
                            l.replica().borrow_mut().idle.push(key);
                        }
                    }
                }
            }
            if source.is_live() {
                let dropped = source.take_skipped();
                if dropped > 0 {
                    stats.live_dropped += dropped;
                    // Only when a viewer fell behind: the lookup (and, the
                    // first time, the path's entry) stays off the hot path.
                    match stats.live.get_mut(&*e.session.path) {
                        Some(l) => l.dropped_slow += dropped,
                        None => {
                            let l = crate::stats::LiveStats {
                                dropped_slow: dropped,
                                ..Default::default()
                            };
                            stats.live.insert(e.session.path.to_string(), l);
                        }
                    }
                }
            } else {
                stats.skipped += source.take_skipped();
            }
        }
        let ShardCore {
            listeners,
            listener_schedule,
            stats,
            outputs,
            ..
        } = self;
        while let Some((_, id, _)) = listener_schedule.pop_due(horizon) {
            if let Some(l) = listeners.get_mut(&id) {
                l.serve(id, now, listener_schedule, stats, outputs);
            }
        }
    }

    /// The NTP time of `now` for sender reports.
    fn ntp(&self, now: Nanos) -> u64 {
        rtcp::ntp_from_unix(self.config.wall_at_zero + Duration::from_nanos(now))
    }

    fn housekeeping(&mut self, now: Nanos) {
        self.paths.sweep();
        let timeout = self.config.session_timeout_secs.saturating_mul(1_000) * MS;
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
        // A broadcast this shard heard nothing of for the silence timeout is
        // over, whether or not its end was heard (its viewers end as at its
        // end).
        let silent: Vec<BroadcastId> = self
            .live
            .iter()
            .filter(|(_, r)| now.saturating_sub(r.borrow().last_arrival) > self.live_silence)
            .map(|(&id, _)| id)
            .collect();
        for id in silent {
            debug!(
                shard = self.config.index,
                broadcast = id,
                "live broadcast silent; ending it"
            );
            self.on_live(live::ToShard::End { id }, now);
        }
    }

    /// This shard's replica of `desc`'s broadcast, made on its first use.
    fn replica(&mut self, desc: Arc<Description>, now: Nanos) -> Rc<RefCell<Replica>> {
        self.live
            .entry(desc.id)
            .or_insert_with(|| {
                Rc::new(RefCell::new(Replica::new(
                    desc,
                    now,
                    live::BUFFER_AGE,
                    live::BUFFER_BYTES,
                )))
            })
            .clone()
    }

    /// News of a live broadcast.
    fn on_live(&mut self, news: live::ToShard, now: Nanos) {
        let (replica, ended) = match news {
            live::ToShard::Mount(news) => {
                self.on_mount(news);
                return;
            }
            live::ToShard::Start(desc) => {
                self.replica(desc, now);
                return;
            }
            live::ToShard::Packet { id, packet } => {
                let Some(r) = self.live.get(&id) else { return };
                self.stats.live_received += 1;
                r.borrow_mut().push(packet, now);
                (r.clone(), false)
            }
            live::ToShard::Report {
                id,
                track,
                ntp,
                rtp_ts,
                at,
            } => {
                if let Some(r) = self.live.get(&id) {
                    r.borrow_mut().report(usize::from(track), ntp, rtp_ts, at);
                }
                return;
            }
            live::ToShard::End { id } => {
                let Some(r) = self.live.remove(&id) else { return };
                r.borrow_mut().ended = true;
                (r, true)
            }
        };
        // Viewers waiting at the live edge are due now: they send the new
        // packet (or, at the end, what is left and then their BYE).
        let mut idle = std::mem::take(&mut replica.borrow_mut().idle);
        if idle.is_empty() && !ended {
            return;
        }
        idle.sort_unstable();
        idle.dedup();
        let mut woke = false;
        for key in idle.drain(..) {
            if let Some(e) = self.sessions.get(&key) {
                self.woken.push_back((now, key, e.generation));
                woke = true;
            }
        }
        // Give the list's memory back for the next wait.
        replica.borrow_mut().idle = idle;
        if woke {
            let wanted = now.max(self.last_round + LOOKAHEAD);
            self.urgent = Some(self.urgent.map_or(wanted, |u| u.min(wanted)));
        }
    }

    /// News of an Icecast mount: its listeners here get the new frames at
    /// once, a new title from their next metadata block, or, at its end,
    /// what is queued and then the end of their stream.
    fn on_mount(&mut self, news: MountNews) {
        match news {
            MountNews::Frames { id, frames } => {
                if self.mounts_ended.contains(&id) {
                    return;
                }
                let replica = self.mounts.entry(id).or_default();
                replica.push(&frames);
                self.stats.mount_frames += frames.len() as u64;
                for &conn in &replica.listeners {
                    if let Some(l) = self.listeners.get_mut(&conn) {
                        l.serve_mount(conn, replica, &mut self.stats, &mut self.outputs);
                    }
                }
            }
            MountNews::Title { id, metadata } => {
                // A feed's first title may come before its first frame.
                if !self.mounts_ended.contains(&id) {
                    self.mounts.entry(id).or_default().title = metadata;
                }
            }
            MountNews::End { id } => {
                if self.mounts_ended.len() >= 64 {
                    self.mounts_ended.pop_front();
                }
                self.mounts_ended.push_back(id);
                let Some(replica) = self.mounts.remove(&id) else { return };
                for conn in replica.listeners {
                    if let Some(l) = self.listeners.get_mut(&conn) {
                        l.close(conn, &mut self.outputs, false);
                    }
                }
            }
        }
    }

    /// Queues session `key`'s RTCP (see [`write_reports`]).
    fn send_rtcp(&mut self, key: SessionKey, now: Nanos, bye: bool) {
        let ntp = self.ntp(now);
        let ShardCore {
            sessions,
            rtcp,
            conns,
            outputs,
            config,
            ..
        } = self;
        if let Some(e) = sessions.get_mut(&key) {
            let qtsi = e.server_info(now);
            write_reports(e, now, ntp, &config.cname, qtsi, rtcp, conns, outputs, bye);
        }
    }

    /// Ends a session: BYE (unless the media's end already said it), the
    /// access-log record to the control core, and its state dropped.
    fn end_session(&mut self, key: SessionKey, now: Nanos, why: &str) {
        let already_said_bye = self.sessions.get(&key).is_some_and(|e| e.said_bye);
        if !already_said_bye {
            self.send_rtcp(key, now, true);
        }
        let Some(e) = self.sessions.remove(&key) else { return };
        if let Some(c) = e.conn.and_then(|c| self.conns.get_mut(&c)) {
            c.sessions.retain(|k| *k != key);
        }
        for x in e
            .rtx
            .iter()
            .flat_map(|r| r.streams())
            .filter_map(|s| s.setup.rtx_ssrc())
        {
            self.ssrc_routes.remove(&x);
        }
        if e.rtx.as_ref().is_some_and(|r| r.is_reliable()) {
            self.reliable.retain(|k| *k != key);
        }
        for t in &e.session.tracks {
            self.ssrc_routes.remove(&t.seeds.0);
            if let Destination::Udp { rtcp, .. } = t.destination() {
                self.rtcp_routes.remove(rtcp, key);
            }
        }
        self.stats.sessions_ended += 1;
        debug!(shard = self.config.index, session = %e.session.id(), why, "session ended");
        let tunnelled = e.conn.and_then(|c| self.conns.get(&c)).is_some_and(|c| c.tunnelled);
        let record = record(&e, tunnelled, now);
        self.event(Event::SessionEnded { key: Some(key), record });
    }

    /// An RTCP datagram from `from` on the shard's socket. Each report block
    /// names the stream it reports on, and so its session; a report with no
    /// blocks (sent before any media arrived) is a sign of life for every
    /// session at that address.
    fn on_rtcp_udp(&mut self, from: SocketAddr, data: &[u8], now: Nanos) {
        if !self.rtcp_routes.contains(from) {
            // Not from a client we know: ignore it, it changes nothing.
            self.stats.bad_rtcp += 1;
            return;
        }
        let Ok(packets) = rtcp::parse_compound(data) else {
            self.stats.bad_rtcp += 1;
            return;
        };
        let ntp = self.ntp(now);
        let mut reported = false;
        for packet in packets {
            match packet {
                rtcp::RtcpPacket::ReceiverReport { reports, .. } | rtcp::RtcpPacket::SenderReport { reports, .. } => {
                    for block in reports {
                        let Some(&key) = self.ssrc_routes.get(&block.ssrc) else {
                            continue;
                        };
                        // Only the address the stream is sent to may report on it.
                        let Some(e) = self.sessions.get_mut(&key) else { continue };
                        if e.dests
                            .iter()
                            .any(|d| matches!(d, Destination::Udp { rtcp, .. } if rtcp == from))
                        {
                            e.session.last_seen = now;
                            e.note_report(&block, &mut self.stats, self.config.thinning, now, ntp);
                            reported = true;
                        }
                    }
                }
                rtcp::RtcpPacket::GenericNack { media_ssrc, nacks, .. } => {
                    reported |= self.on_nack(from, media_ssrc, nacks, now);
                }
                other => reported |= self.on_app(from, &other, now),
            }
        }
        if !reported {
            for key in self.rtcp_routes.sessions(from) {
                if let Some(e) = self.sessions.get_mut(&key) {
                    e.session.last_seen = now;
                }
            }
        }
    }

    /// A generic NACK from `from` for our stream `media_ssrc`: answered
    /// with RTX packets in this call's round if the stream negotiated
    /// retransmission and `from` is where its RTCP goes; otherwise
    /// counted and ignored. Whether it was answered.
    fn on_nack(&mut self, from: SocketAddr, media_ssrc: u32, nacks: rtcp::NackList<'_>, now: Nanos) -> bool {
        let ShardCore {
            sessions,
            ssrc_routes,
            udp,
            stats,
            ..
        } = self;
        let Some(e) = ssrc_routes.get(&media_ssrc).and_then(|k| sessions.get_mut(k)) else {
            stats.repair.unwanted += 1;
            return false;
        };
        let Some((rtx, stream)) = e
            .rtx
            .as_deref_mut()
            .and_then(|r| r.stream_of(media_ssrc).map(|i| (r, i)))
        else {
            stats.repair.unwanted += 1;
            return false;
        };
        let Some(Destination::Udp { rtp, rtcp }) = e.dests.get(stream) else {
            stats.repair.unwanted += 1;
            return false;
        };
        if rtcp != from {
            stats.repair.forged += 1;
            return false;
        }
        e.session.last_seen = now;
        let key = ssrc_routes[&media_ssrc];
        let before = rtx.stats();
        rtx.answer(stream, nacks.lost(), now, |header, osn, payload| {
            udp.queue_rtx(key, rtp, header, osn, payload)
        });
        count_nacks(&mut stats.repair, before, rtx.stats());
        true
    }

    /// An APP packet from `from`: a reliable-UDP acknowledgement (`qtak`,
    /// or `ack ` from QuickTime 5 and earlier) taken if it names one of our
    /// streams on reliable UDP and comes from where that stream's RTCP
    /// goes, at most at the session's ack rate; a `QTSS` report likewise
    /// (see [`on_client_report`](Self::on_client_report)); anything else
    /// about them counted and ignored. Whether it was taken.
    fn on_app(&mut self, from: SocketAddr, packet: &rtcp::RtcpPacket<'_>, now: Nanos) -> bool {
        let app = match packet.app() {
            None => return false,
            Some(Ok(app)) => app,
            Some(Err(_)) => {
                self.stats.repair.reliable.malformed += 1;
                return false;
            }
        };
        if app.name == qtss::REPORT {
            return self.on_client_report(from, &app, now);
        }
        if app.name != qtss::ACK && app.name != qtss::ACK_LEGACY {
            return false;
        }
        let ShardCore {
            sessions,
            ssrc_routes,
            stats,
            next_resend,
            ..
        } = self;
        let counts = &mut stats.repair.reliable;
        let Ok(ack) = qtss::Ack::parse(&app) else {
            counts.malformed += 1;
            return false;
        };
        let Some(e) = ssrc_routes.get(&ack.media_ssrc).and_then(|k| sessions.get_mut(k)) else {
            counts.unwanted += 1;
            return false;
        };
        let Some((rtx, stream)) = e
            .rtx
            .as_deref_mut()
            .and_then(|r| r.reliable_stream_of(ack.media_ssrc).map(|i| (r, i)))
        else {
            counts.unwanted += 1;
            return false;
        };
        if !from_streams_rtcp(&e.dests, stream, from) {
            stats.repair.forged += 1;
            return false;
        }
        e.session.last_seen = now;
        if !rtx.take_ack(now) {
            counts.rate_limited += 1;
            return true;
        }
        let before = rtx.reliable_stats();
        rtx.on_ack(stream, &ack, now);
        let after = rtx.reliable_stats();
        // What the ack shows lost goes again early (see `reliable`).
        if let Some(t) = rtx.next_resend() {
            *next_resend = (*next_resend).min(t);
        }
        counts.acks += 1;
        counts.acked += after.acked - before.acked;
        counts.acks_for_missing += after.acks_for_missing - before.acks_for_missing;
        counts.acks_ignored += after.acks_ignored - before.acks_ignored;
        true
    }

    /// A QuickTime client's `QTSS` report from `from`: its overbuffer
    /// window (`ob`) bounds how far ahead of real time its session is sent
    /// (see `adapt`). Taken only when it names one of our streams and comes
    /// from where that stream's RTCP goes; a report that does not parse
    /// (DSS's checks: subtype, version, item lengths), names no stream of
    /// ours, or comes from elsewhere is counted and ignored. A window of 0
    /// means the client holds nothing ahead; any `u32` is safe (the lead
    /// never passes `--burst-lead` whatever the window). Whether it was
    /// taken.
    fn on_client_report(&mut self, from: SocketAddr, app: &rtcp::App<'_>, now: Nanos) -> bool {
        let ShardCore {
            sessions,
            ssrc_routes,
            stats,
            ..
        } = self;
        let counts = &mut stats.client_reports;
        let Ok(report) = qtss::Report::parse(app) else {
            counts.malformed += 1;
            return false;
        };
        let Some(e) = ssrc_routes.get(&report.source_ssrc).and_then(|k| sessions.get_mut(k)) else {
            counts.unwanted += 1;
            return false;
        };
        let stream = e
            .session
            .playback
            .as_ref()
            .and_then(|p| p.streams().iter().position(|s| s.ssrc == report.source_ssrc));
        let Some(stream) = stream else {
            counts.unwanted += 1;
            return false;
        };
        if !from_streams_rtcp(&e.dests, stream, from) {
            stats.repair.forged += 1;
            return false;
        }
        e.session.last_seen = now;
        counts.reports += 1;
        if let (Some(window), Some(a)) = (report.values().overbuffer_window, e.adapt.as_deref_mut()) {
            // Only a session that is sent ahead has use for it.
            a.on_client_window(window);
            counts.windows += 1;
        }
        true
    }

    /// Reliable UDP: what is unacknowledged past its RTO goes again, as it
    /// first went, in this round; and when to look next.
    fn resend_due(&mut self, now: Nanos) {
        let ShardCore {
            sessions,
            reliable,
            udp,
            stats,
            next_resend,
            ..
        } = self;
        let mut next = Nanos::MAX;
        for key in reliable.iter() {
            let Some(e) = sessions.get_mut(key) else { continue };
            let Some(rtx) = e.rtx.as_deref_mut() else { continue };
            if rtx.next_resend().is_some_and(|t| t <= now) {
                let before = rtx.reliable_stats();
                let dests = &e.dests;
                rtx.resend_due(now, |stream, header, payload| {
                    if let Some(Destination::Udp { rtp, .. }) = dests.get(stream) {
                        udp.queue_resend(*key, rtp, header, payload);
                    }
                });
                let after = rtx.reliable_stats();
                stats.repair.reliable.resends += after.resends - before.resends;
                stats.repair.reliable.early_resends += after.early_resends - before.early_resends;
                stats.repair.reliable.expired += after.expired - before.expired;
            }
            if let Some(t) = rtx.next_resend() {
                next = next.min(t);
            }
        }
        *next_resend = next;
    }

    /// RTCP that arrived on session `key`'s own interleaved channel.
    fn on_rtcp(&mut self, key: SessionKey, data: &[u8], now: Nanos) {
        let ntp = self.ntp(now);
        let Some(e) = self.sessions.get_mut(&key) else { return };
        e.session.last_seen = now;
        let Ok(packets) = rtcp::parse_compound(data) else {
            self.stats.bad_rtcp += 1;
            return;
        };
        for block in report_blocks(packets) {
            e.note_report(&block, &mut self.stats, self.config.thinning, now, ntp);
        }
    }
}

/// Random seeds for a new stream, with an SSRC no stream of this shard
/// has: reports are routed by SSRC, and a load client sharing one port pair
/// among many sessions tells their packets apart by it. (Among ten thousand
/// random SSRCs, two alike would otherwise come up about one time in a
/// hundred.)
fn draw_seeds(rng: &mut Rng, taken: &KeyMap<u32, SessionKey>) -> StreamSeeds {
    loop {
        let r = rng.next_u64();
        let ssrc = r as u32;
        if !taken.contains_key(&ssrc) {
            return (ssrc, (r >> 32) as u16, rng.next_u64() as u32);
        }
    }
}

/// A session's retransmission, if any of its tracks was set up with
/// `RTP/AVPF` over UDP and its presentation offers RTX for it: the RTX
/// payload type from the SDP offer, an SSRC and first sequence number drawn
/// as a stream's are (and routed to the session).
fn rtx_sender(
    session: &Session,
    dests: &Dests,
    lead: Duration,
    rng: &mut Rng,
    ssrc_routes: &mut KeyMap<u32, SessionKey>,
    key: SessionKey,
) -> Option<Box<RtxSender>> {
    let source = session.playback.as_ref()?;
    // NACK/RTX (RTP/AVPF) or reliable UDP (x-Retransmit), over UDP.
    let wanted = |track_id: u32| {
        session
            .tracks
            .iter()
            .find(|t| t.track_id == track_id && matches!(t.destination(), Destination::Udp { .. }))
            .and_then(|t| match (t.feedback, t.reliable) {
                (true, _) => Some(false),
                (false, true) => Some(true),
                _ => None,
            })
    };
    if !source.streams().iter().any(|s| wanted(s.track_id).is_some()) {
        return None;
    }
    // What the streams send, as far as it is known without measuring: a
    // movie's whole rate bounds each of its streams'.
    let (sdp, bit_rate) = match &session.media {
        Media::Movie(m) => {
            let secs = m.duration_secs().max(1.0);
            let rate = (m.data().len() as f64 * 8.0 / secs) as u64;
            (m.sdp().to_owned(), rate.clamp(256_000, 100_000_000))
        }
        Media::Live(r) => (r.borrow().desc.sdp.clone(), 8_000_000),
    };
    let packet_rate = (bit_rate as f64 / 8.0 / 600.0).max(50.0);
    // What thinning takes for video; a live stream's media type is its
    // SDP's.
    let video = |track_id: u32| match &session.media {
        Media::Movie(m) => adapt::is_video(m, track_id),
        Media::Live(r) => r
            .borrow()
            .desc
            .tracks
            .iter()
            .any(|t| t.track_id == track_id && t.is_video()),
    };
    let setups: SmallVec<[Option<RtxSetup>; 2]> = source
        .streams()
        .iter()
        .enumerate()
        .map(|(i, s)| {
            if !matches!(dests.get(i), Some(Destination::Udp { .. })) {
                return None;
            }
            let kind = if wanted(s.track_id)? {
                RepairKind::Reliable
            } else {
                let o = offer::for_track(&sdp, s.track_id)?;
                let (rtx_ssrc, first_seq, _) = draw_seeds(rng, ssrc_routes);
                ssrc_routes.insert(rtx_ssrc, key);
                RepairKind::Rtx {
                    rtx_pt: o.rtx_pt,
                    rtx_ssrc,
                    first_seq,
                }
            };
            Some(RtxSetup {
                media_ssrc: s.ssrc,
                kind,
                bit_rate,
                packet_rate,
                video: video(s.track_id),
            })
        })
        .collect();
    Some(Box::new(RtxSender::new(setups, bit_rate, lead)))
}

/// Adds what one NACK's answer did (the responders' figures `before` and
/// `after` it) to the shard's counts.
fn count_nacks(r: &mut RepairStats, before: NackStats, after: NackStats) {
    r.nacks += after.nacks - before.nacks;
    r.requested += after.requested - before.requested;
    r.resent += after.resent - before.resent;
    r.duplicate += after.duplicate - before.duplicate;
    r.rate_limited += after.rate_limited - before.rate_limited;
    r.too_old += after.too_old - before.too_old;
    r.never_sent += after.never_sent - before.never_sent;
    r.truncated += after.truncated - before.truncated;
}

/// An RTCP compound packet per stream of session `e` (SR and SDES CNAME,
/// `qtsi` on a reliable-UDP stream when `qtsi` gives its client SSRC and
/// ack timeout, and BYE when `bye`): over UDP into `out`, interleaved onto
/// its connection.
#[allow(clippy::too_many_arguments)]
fn write_reports(
    e: &Entry,
    now: Nanos,
    ntp: u64,
    cname: &str,
    qtsi: Option<(u32, u32)>,
    out: &mut RtcpRound,
    conns: &mut KeyMap<ConnId, Conn>,
    outputs: &mut VecDeque<Output>,
    bye: bool,
) {
    let Some(source) = e.session.playback.as_ref() else {
        return;
    };
    for (i, s) in source.streams().iter().enumerate() {
        let rtp_ts = source.rtp_time_now(i, now).unwrap_or(s.ts_offset);
        // DSS's server information for a stream on reliable UDP: the ack
        // timeout it asks the client for.
        let qtsi = qtsi.filter(|_| e.rtx.as_ref().is_some_and(|r| r.reliable_stream_of(s.ssrc).is_some()));
        let write = |pkt: &mut Vec<u8>| {
            rtcp::sender_report(pkt, s.ssrc, ntp, rtp_ts, s.packets as u32, s.octets as u32, &[]);
            rtcp::sdes_cname(pkt, s.ssrc, cname);
            if let Some((client_ssrc, ack_timeout_ms)) = qtsi {
                qtss::server_info(pkt, s.ssrc, client_ssrc, ack_timeout_ms);
            }
            if bye {
                rtcp::bye(pkt, &[s.ssrc], None);
            }
        };
        match e.dests.get(i) {
            Some(Destination::Udp { rtcp, .. }) => out.push(rtcp, write),
            Some(Destination::Tcp { rtcp_channel, .. }) => {
                if let Some((id, c)) = e.conn.and_then(|id| conns.get_mut(&id).map(|c| (id, c))) {
                    let mut pkt = Vec::with_capacity(96);
                    write(&mut pkt);
                    c.frame(rtcp_channel, &[&pkt]);
                    signal(outputs, id, c);
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

fn total_packets(source: &crate::source::Source) -> u64 {
    source.streams().iter().map(|s| s.packets).sum()
}

/// Queues one media packet as a `$` frame on a TCP connection.
fn send_tcp(c: &mut Conn, channel: u8, o: &Outgoing<'_>) -> bool {
    let mut parts: SmallVec<[&[u8]; 8]> = SmallVec::new();
    parts.push(&o.header);
    parts.extend(o.payload.slices());
    c.frame(channel, &parts)
}

/// How a session's media travels, by its connection: see [`TRANSPORTS`].
fn transport(conn: Option<ConnId>, tunnelled: bool) -> &'static str {
    match (conn, tunnelled) {
        (Some(_), true) => "http",
        (Some(_), false) => "tcp",
        (None, _) => "udp",
    }
}

/// The access-log record of a session that ends at `now`.
fn record(e: &Entry, tunnelled: bool, now: Nanos) -> AccessRecord {
    let (packets, bytes) = sent(e);
    let lost = lost(e);
    let thinned = e.adapt.as_ref().map(|a| a.stats().frames_thinned);
    AccessRecord {
        client: e.client.ip(),
        uri: e.session.path.to_string(),
        duration: Duration::from_nanos(now.saturating_sub(e.session.started)),
        bytes,
        packets,
        status: e.session.play_status.unwrap_or(e.status),
        user_agent: e.session.user_agent.clone(),
        transport: transport(e.conn, tunnelled),
        packets_lost: lost,
        frames_thinned: thinned,
        ..AccessRecord::default()
    }
}

/// Whether an RTCP packet for `stream` came from that stream's own RTCP
/// address: feedback from anywhere else is forged, whatever SSRC it names.
fn from_streams_rtcp(dests: &Dests, stream: usize, from: SocketAddr) -> bool {
    matches!(dests.get(stream), Some(Destination::Udp { rtcp, .. }) if rtcp == from)
}
