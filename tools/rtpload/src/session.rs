//! One load session without IO: its RTSP conversation with the server and
//! the reception of its media.
//!
//! A session connects, DESCRIBEs its URL, SETs UP every RTP medium of the
//! SDP (over UDP, to the worker's shared client ports, or interleaved on
//! the RTSP connection), PLAYs, receives until its time is up, then TEARs
//! DOWN. When the movie ends first (every stream said BYE, or the PLAY
//! range has run out and the media has gone quiet) it tears down and starts
//! over from DESCRIBE. While playing it sends RTCP receiver reports, and
//! GET_PARAMETER keep-alives well inside the server's session timeout.
//!
//! # Driving it
//!
//! The session has no clock and does no IO. Its owner feeds it what
//! happened: [`on_connected`](Session::on_connected), bytes read from the
//! RTSP connection ([`on_rtsp_data`](Session::on_rtsp_data)), RTP and RTCP
//! datagrams matched to it ([`on_rtp`](Session::on_rtp),
//! [`on_rtcp`](Session::on_rtcp)), and [`on_timeout`](Session::on_timeout)
//! once the time [`poll_timeout`](Session::poll_timeout) gave has come.
//! After each call it drains what the session wants done: bytes to write
//! ([`output`](Session::output)), RTCP datagrams ([`poll_rtcp`](Session::poll_rtcp))
//! and [`Event`]s ([`poll_event`](Session::poll_event)); then it asks
//! `poll_timeout` again.
//!
//! # What servers do, and how it is taken
//!
//! - The presentation's base URL is `Content-Base`, else `Content-Location`,
//!   else the DESCRIBE URL (RFC 2326 C.1.1); controls resolve against it as
//!   [`proto::rtsp::url::resolve`] explains.
//! - The Session header may carry `;timeout=N`; keep-alives go at half of
//!   it (60 s when absent). Servers that refuse GET_PARAMETER (405, 451,
//!   501) get none, and rely on the receiver reports.
//! - `ssrc=` in the SETUP reply is optional; without it the worker learns the
//!   stream's SSRC from its first packet. `server_port=` is optional too;
//!   receiver reports then go to wherever the server's reports come from.
//! - RTP-Info `seq=` says where each stream starts, so packets lost before
//!   the first that arrives count as lost.
//! - Servers may send requests of their own (OPTIONS as a keep-alive check):
//!   OPTIONS and GET_PARAMETER are answered 200, anything else 501.
//! - Over an HTTP tunnel (`Settings::tunnel`, QuickTime's scheme in
//!   [`proto::tunnel`]) the session opens the GET leg on its connection, and
//!   once the server has answered it 200, asks its owner for a second
//!   connection ([`Event::OpenPost`]) and writes the POST head there; from
//!   then on every request and RTCP report goes to that connection
//!   base64-encoded, one padded block per message as real clients send
//!   them, and the conversation reads as over TCP on the first. The server
//!   never answers the POST: bytes on it are a refusal.
//! - Anything malformed (a response that does not parse, a wrong CSeq, an
//!   SDP without usable media, a broken RTP or RTCP packet on an interleaved
//!   channel) fails this session with an error that says what; it never
//!   panics and never touches another session.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use proto::interleaved;
use proto::keyframe::Codec;
use proto::rtcp::{self, ReportBlock, RtcpPacket};
use proto::rtp::{self, RtpError};
use proto::rtsp::header::{self, Lower, NptRange, Transport};
use proto::rtsp::message::{self, Limits, Message, Method, Request, Response};
use proto::rtsp::quicktime;
use proto::rtsp::status::Status;
use proto::rtsp::url::{self, RtspUrl};
use proto::tunnel::{self, Cookie};
use smallvec::SmallVec;

use crate::metrics::Histograms;
use crate::reception::{Nanos, Stream};
use crate::repair::{Repair, RepairStats, Scheme, Via};
use crate::sdp::{self, Presentation, SdpError};

const SEC: Nanos = 1_000_000_000;
/// After the PLAY range has run out, the media must be quiet this long for
/// the movie to count as over.
const QUIET: Nanos = SEC;
/// Streams of a finished play stay routable this long, for packets still on
/// their way when TEARDOWN was answered.
pub const LINGER: Nanos = SEC / 2;
/// RTCP report interval (RFC 3550 suggests 5 s), randomized by half either
/// way so that many sessions do not report in step.
const REPORT_INTERVAL: Nanos = 5 * SEC;
/// The Session timeout servers use when they announce none (RFC 2326 12.37).
const DEFAULT_TIMEOUT: Nanos = 60 * SEC;
/// More media than this in one SDP is not a movie.
const MAX_MEDIA: usize = 32;

/// What every session of a run shares.
#[derive(Debug, Clone)]
pub struct Settings {
    pub lower: Lower,
    /// RTSP over an HTTP tunnel (with `lower` TCP: media interleaved on it).
    pub tunnel: bool,
    /// How long each session lasts, from its start.
    pub duration: Nanos,
    /// How long a connection attempt or a request may go unanswered.
    pub rtsp_timeout: Nanos,
    /// How long a playing session may go without RTP before it fails.
    pub media_timeout: Nanos,
    /// With `--buffered`: how far ahead of the wall clock the media must
    /// run for the "buffered" histogram.
    pub buffered: Option<Nanos>,
    /// Send `x-Dynamic-Rate: 1` in each SETUP.
    pub dynamic_rate: bool,
    /// Ask for this `Speed` in each PLAY (RFC 2326 section 12.35).
    pub speed: Option<f64>,
    /// Send QuickTime's `QTSS` report with this overbuffer window (`ob`,
    /// bytes) beside each receiver report.
    pub overbuffer_window: Option<u32>,
    pub user_agent: String,
    pub limits: Limits,
    /// Retransmission to ask for (UDP only): NACK/RTX or reliable UDP.
    pub repair: Option<Scheme>,
}

/// Why a session failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("cannot connect to {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("connecting to {url} took more than {secs} s")]
    ConnectTimeout { url: String, secs: u64 },
    #[error("the server closed the connection while {during}")]
    Closed { during: &'static str },
    #[error("connection error while {during}: {reason}")]
    Io { during: &'static str, reason: String },
    #[error("no response to {method} {url} within {secs} s")]
    Timeout { method: String, url: String, secs: u64 },
    #[error("unparseable RTSP from the server: {0}")]
    Parse(message::ParseError),
    #[error("the server answered with HTTP, not RTSP")]
    NotRtsp,
    #[error("the server answered the tunnel's {leg} with {answer:?}")]
    Tunnel { leg: &'static str, answer: String },
    #[error("{method} {url} answered {status}")]
    Status {
        method: String,
        url: String,
        status: Status,
    },
    #[error("the response with {} does not answer {method} (CSeq {want})", cseq_text(.got))]
    CSeq {
        method: String,
        want: u32,
        got: Option<String>,
    },
    #[error("a response arrived with no request outstanding")]
    Unsolicited,
    #[error("DESCRIBE {url}: bad SDP: {error}")]
    Sdp { url: String, error: SdpError },
    #[error("DESCRIBE {url}: the SDP has {0} media, more than {MAX_MEDIA}", url = .1)]
    TooManyMedia(usize, String),
    #[error("SETUP {url}: {problem}")]
    Transport { url: String, problem: String },
    #[error("SETUP {url}: the reply has no Session header")]
    NoSession { url: String },
    #[error("the server changed the session ID from {was:?} to {now:?}")]
    SessionChanged { was: String, now: String },
    #[error("bad RTP on interleaved channel {channel}: {error}")]
    Rtp { channel: u8, error: RtpError },
    #[error("bad RTCP on interleaved channel {channel}: {error}")]
    Rtcp { channel: u8, error: rtcp::RtcpError },
    #[error("no RTP for {secs} s while playing")]
    NoMedia { secs: u64 },
    #[error("its time was up before it got to play (it was {during})")]
    NeverPlayed { during: &'static str },
    #[error("SSRC {ssrc:08X} from {from} already belongs to another session on this client port")]
    SsrcCollision { ssrc: u32, from: IpAddr },
}

fn cseq_text(cseq: &Option<String>) -> String {
    match cseq {
        Some(c) => format!("CSeq {c:?}"),
        None => "no CSeq".to_owned(),
    }
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Completed,
    Failed(SessionError),
}

/// What the session asks of its owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Every track is set up. Route the UDP streams ([`Session::udp_streams`]),
    /// then call [`Session::play`].
    Ready,
    /// The streams with a global index below `upto` receive nothing more:
    /// forget their routes.
    Retired { upto: u32 },
    /// The conversation is over: write what output remains, then close.
    Close,
    /// The tunnel's GET is answered: connect its POST leg to `to`, then
    /// call [`Session::on_post_connected`].
    OpenPost { to: SocketAddr },
}

/// A stream the worker routes UDP datagrams to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpStream {
    /// The stream's global index in its session.
    pub stream: u32,
    pub ssrc: Option<u32>,
    /// Where its packets come from: the `source=` of the SETUP reply, else
    /// the RTSP server.
    pub source: IpAddr,
    /// The server's RTP port, when the reply named it.
    pub rtp_port: Option<u16>,
    pub payload_type: u8,
    /// The payload type of its RTX packets, when it takes NACK/RTX repair:
    /// they come on an SSRC of their own, learned from the first that
    /// repairs a packet this stream asked for.
    pub rtx_payload_type: Option<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Connecting,
    /// The tunnel's GET is written, its answer awaited (then its POST leg
    /// connected).
    Tunnelling,
    Describing,
    /// Setting up track `next` (its SETUP is outstanding).
    SettingUp {
        next: usize,
    },
    /// Every track set up; waiting for [`Session::play`].
    Ready,
    /// PLAY written, not yet answered.
    Starting,
    Playing,
    TearingDown {
        restart: bool,
    },
    Done,
}

impl State {
    fn doing(self) -> &'static str {
        match self {
            State::Connecting => "connecting",
            State::Tunnelling => "opening the HTTP tunnel",
            State::Describing => "describing",
            State::SettingUp { .. } => "setting up",
            State::Ready => "waiting to play",
            State::Starting => "starting to play",
            State::Playing => "playing",
            State::TearingDown { .. } => "tearing down",
            State::Done => "done",
        }
    }
}

#[derive(Debug, Clone)]
struct Pending {
    method: Method,
    url: String,
    cseq: u32,
    sent_at: Nanos,
}

/// One set-up medium of the current play.
#[derive(Debug, Clone)]
struct Track {
    url: String,
    /// Global index of its stream.
    stream: u32,
    /// Interleaved channels (RTP, RTCP), as the server confirmed them.
    channels: (u8, u8),
    source: Option<IpAddr>,
    rtp_port: Option<u16>,
    /// Where our receiver reports for it go (UDP).
    rtcp_to: Option<SocketAddr>,
    /// What its payload is, to tell its key frames.
    codec: Codec,
    /// The SDP's RTX payload type for it, if it offers one.
    rtx_pt: Option<u8>,
}

/// Figures of streams no longer kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub packets: u64,
    pub bytes: u64,
    pub expected: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub reordered: u64,
    pub max_jitter_us: u64,
    pub repair: RepairStats,
    /// Media received (first to newest timestamp) and the wall time it
    /// came over (first packet to last), summed over streams, in ms.
    pub media_ms: u64,
    pub arrival_ms: u64,
    /// The most bytes the session held ahead of play at once, by its own
    /// measure (see `reception::Ahead`).
    pub max_ahead_bytes: u64,
    /// The speed the server last granted, in thousandths (1000 without
    /// `Speed`).
    pub speed_milli: u64,
}

impl Totals {
    fn add_stream(&mut self, s: &Stream) {
        self.packets += s.packets;
        self.bytes += s.bytes;
        self.expected += s.sequence.expected();
        self.lost += s.sequence.lost();
        self.duplicates += s.sequence.duplicates();
        self.reordered += s.sequence.reordered();
        self.max_jitter_us = self.max_jitter_us.max(s.jitter_us());
        if let Some(r) = &s.repair {
            self.repair.add(&r.stats());
        }
        let (media, wall) = s.delivery_ns();
        self.media_ms += media / 1_000_000;
        self.arrival_ms += wall / 1_000_000;
    }
}

pub struct Session {
    id: u32,
    url: Arc<RtspUrl>,
    settings: Arc<Settings>,
    /// The worker's shared client ports this session uses (UDP).
    client_ports: Option<(u16, u16)>,
    /// Our own SSRC, for RTCP.
    ssrc: u32,
    cname: String,
    rng: u64,
    state: State,
    started_at: Nanos,
    ends_at: Nanos,
    /// Time is up (or [`Session::stop`]): tear down at the next chance.
    stopping: bool,
    peer: Option<SocketAddr>,
    cseq: u32,
    pending: Option<Pending>,
    session_id: Option<String>,
    keepalive_every: Nanos,
    keepalive_refused: bool,
    base: String,
    aggregate: String,
    /// The SDP's `a=range` length, for a PLAY answer without one.
    sdp_range_len: Option<Nanos>,
    tracks: SmallVec<[Track; 2]>,
    /// Streams not yet retired; the first has global index `retired`.
    streams: VecDeque<Stream>,
    retired: u32,
    totals: Totals,
    /// (when, upto): streams to retire once their linger is over.
    retiring: SmallVec<[(Nanos, u32); 2]>,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    /// For the tunnel's POST leg: its head, then base64.
    post_out: Vec<u8>,
    /// The tunnel's cookie, when tunnelling.
    cookie: Option<Cookie>,
    /// When the tunnel's GET was written, until its POST leg is up.
    tunnel_since: Option<Nanos>,
    tunnel_answered: bool,
    /// A message to be base64-encoded onto the POST leg.
    scratch: Vec<u8>,
    rtcp: Vec<u8>,
    /// Datagrams in `rtcp`: destination, start, end.
    rtcp_queue: SmallVec<[(SocketAddr, usize, usize); 2]>,
    events: VecDeque<Event>,
    /// When PLAY was written, until the play's first packet.
    play_written: Option<Nanos>,
    playing_since: Option<Nanos>,
    range_len: Option<Nanos>,
    last_media: Option<Nanos>,
    next_report: Option<Nanos>,
    next_keepalive: Option<Nanos>,
    /// A TEARDOWN (restarting or not) to send once the outstanding request
    /// is answered: one request at a time.
    deferred_teardown: Option<bool>,
    plays: u32,
    first_packet: Option<Nanos>,
    /// Waiting for the play's first key frame (its video has key frames).
    key_wanted: bool,
    /// When the play's first key frame arrived, until PLAY is answered.
    key_at: Option<Nanos>,
    /// When PLAY was answered, until the play's first key frame.
    play_answered: Option<Nanos>,
    first_key_frame: Option<Nanos>,
    /// With `--buffered`, until it is timed: when PLAY was written and the
    /// first timestamp of the first track's play.
    buffering: Option<(Nanos, Option<u32>)>,
    outcome: Option<Outcome>,
    /// Feedback (NACKs, acks) in the making.
    feedback: Vec<u8>,
    /// Something happened outside the owner's servicing (feedback to send,
    /// an earlier deadline): the owner should service the session.
    wake: bool,
    /// The speed the last PLAY's answer granted.
    speed: f64,
    /// The most bytes held ahead of play at once.
    max_ahead: u64,
}

/// splitmix64: the session's own small random numbers.
fn next_random(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Session {
    /// A session that starts at `now`; the caller is connecting to `url`.
    /// `client_ports` are the UDP ports it sets up to (UDP sessions only);
    /// `seed` makes its SSRC and report timing.
    pub fn new(
        id: u32,
        url: Arc<RtspUrl>,
        settings: Arc<Settings>,
        client_ports: Option<(u16, u16)>,
        seed: u64,
        now: Nanos,
    ) -> Session {
        let mut rng = seed ^ u64::from(id).wrapping_mul(0x2545_f491_4f6c_dd1d);
        let ssrc = next_random(&mut rng) as u32;
        // A cookie no other session of any run is likely to have.
        let cookie = settings
            .tunnel
            .then(|| Cookie::parse(&format!("rtpload{id:08x}{:016x}", next_random(&mut rng))))
            .and_then(Result::ok);
        let ends_at = now.saturating_add(settings.duration);
        Session {
            id,
            cname: format!("rtpload-{id}@{}", url.host()),
            url,
            settings,
            client_ports,
            ssrc,
            rng,
            state: State::Connecting,
            started_at: now,
            ends_at,
            stopping: false,
            peer: None,
            cseq: 0,
            pending: None,
            session_id: None,
            keepalive_every: DEFAULT_TIMEOUT / 2,
            keepalive_refused: false,
            base: String::new(),
            aggregate: String::new(),
            sdp_range_len: None,
            tracks: SmallVec::new(),
            streams: VecDeque::new(),
            retired: 0,
            totals: Totals::default(),
            retiring: SmallVec::new(),
            inbuf: Vec::new(),
            out: Vec::new(),
            post_out: Vec::new(),
            cookie,
            tunnel_since: None,
            tunnel_answered: false,
            scratch: Vec::new(),
            rtcp: Vec::new(),
            rtcp_queue: SmallVec::new(),
            events: VecDeque::new(),
            play_written: None,
            playing_since: None,
            range_len: None,
            last_media: None,
            next_report: None,
            next_keepalive: None,
            deferred_teardown: None,
            plays: 0,
            first_packet: None,
            key_wanted: false,
            key_at: None,
            play_answered: None,
            first_key_frame: None,
            buffering: None,
            outcome: None,
            feedback: Vec::new(),
            wake: false,
            speed: 1.0,
            max_ahead: 0,
        }
    }

    pub fn id(&self) -> u32 {
        self.id
    }

    pub fn url(&self) -> &RtspUrl {
        &self.url
    }

    /// Our SSRC in the RTCP we send.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    pub fn outcome(&self) -> Option<&Outcome> {
        self.outcome.as_ref()
    }

    /// Over, and no stream left to retire.
    pub fn is_finished(&self) -> bool {
        self.state == State::Done && self.retiring.is_empty()
    }

    /// Set up and waiting for [`play`](Session::play).
    pub fn is_ready(&self) -> bool {
        self.state == State::Ready && !self.stopping
    }

    /// PLAYs answered so far.
    pub fn plays(&self) -> u32 {
        self.plays
    }

    /// From writing the first PLAY to the first packet, once there was one.
    pub fn first_packet(&self) -> Option<Nanos> {
        self.first_packet
    }

    /// From the first PLAY's answer to the first key frame of its video
    /// (H.264 IDR, H.265 IRAP, MPEG-4 I-VOP), once there was one.
    pub fn first_key_frame(&self) -> Option<Nanos> {
        self.first_key_frame
    }

    /// Figures over every stream this session has had.
    pub fn totals(&self) -> Totals {
        let mut t = self.totals;
        for s in &self.streams {
            t.add_stream(s);
        }
        t.max_ahead_bytes = self.max_ahead;
        t.speed_milli = (self.speed * 1000.0).round() as u64;
        t
    }

    /// Bytes waiting to be written on the RTSP connection. The owner writes
    /// what it can and removes that much from the front.
    pub fn output(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }

    /// Bytes waiting to be written on the tunnel's POST leg, as
    /// [`output`](Session::output).
    pub fn post_output(&mut self) -> &mut Vec<u8> {
        &mut self.post_out
    }

    /// Writes a message the server is to read: on the RTSP connection, or
    /// base64-encoded on the tunnel's POST leg.
    fn emit(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        if self.cookie.is_some() {
            self.scratch.clear();
            write(&mut self.scratch);
            tunnel::encode(&self.scratch, &mut self.post_out);
        } else {
            write(&mut self.out);
        }
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The next RTCP datagram to send over UDP: its destination and bytes.
    /// The bytes stay valid until the next call.
    pub fn poll_rtcp(&mut self) -> Option<(SocketAddr, &[u8])> {
        if self.rtcp_queue.is_empty() {
            self.rtcp.clear();
            return None;
        }
        let (to, start, end) = self.rtcp_queue.remove(0);
        Some((to, &self.rtcp[start..end]))
    }

    /// The UDP streams of the current play, to route datagrams to.
    pub fn udp_streams(&self) -> impl Iterator<Item = UdpStream> + '_ {
        let fallback = self.peer.map(|p| p.ip());
        self.tracks.iter().filter_map(move |t| {
            let s = self.stream(t.stream)?;
            let nack = s.repair.as_ref().is_some_and(|r| r.scheme() == Scheme::Nack);
            Some(UdpStream {
                stream: t.stream,
                ssrc: s.ssrc,
                source: t.source.or(fallback)?,
                rtp_port: t.rtp_port,
                payload_type: s.payload_type,
                rtx_payload_type: t.rtx_pt.filter(|_| nack),
            })
        })
    }

    /// The earliest time [`on_timeout`](Session::on_timeout) has something
    /// to do.
    pub fn poll_timeout(&self) -> Option<Nanos> {
        let mut t: Option<Nanos> = self.retiring.iter().map(|r| r.0).min();
        let mut at = |x: Nanos| t = Some(t.map_or(x, |t| t.min(x)));
        if self.state == State::Done {
            return t;
        }
        if !self.stopping {
            at(self.ends_at);
        }
        if self.state == State::Connecting {
            at(self.started_at + self.settings.rtsp_timeout);
        }
        if let Some(since) = self.tunnel_since {
            at(since + self.settings.rtsp_timeout);
        }
        if let Some(p) = &self.pending {
            at(p.sent_at + self.settings.rtsp_timeout);
        }
        if self.state == State::Playing && self.deferred_teardown.is_none() {
            if let Some(r) = self.next_report {
                at(r);
            }
            if let (Some(k), None) = (self.next_keepalive, &self.pending) {
                at(k);
            }
            let since = self.playing_since.unwrap_or(self.started_at);
            let heard = self.last_media.unwrap_or(since).max(since);
            at(heard + self.settings.media_timeout);
            // While repairs may come the end waits for them; their own
            // deadlines below wake the session.
            let repairing = self.tracks.iter().any(|tr| {
                self.stream(tr.stream)
                    .and_then(|s| s.repair.as_deref())
                    .is_some_and(Repair::is_waiting)
            });
            if let (Some(len), false) = (self.range_len, repairing) {
                at((since + len).max(heard + QUIET));
            }
            for tr in &self.tracks {
                if let Some(r) = self.stream(tr.stream).and_then(|s| s.repair.as_deref()) {
                    if let Some(x) = r.poll_timeout() {
                        at(x);
                    }
                }
            }
        }
        t
    }

    /// Whether the session wants servicing for what happened since this
    /// was last asked (feedback to send, a sooner deadline); clears it.
    pub fn take_wake(&mut self) -> bool {
        std::mem::take(&mut self.wake)
    }

    // --- inputs ---------------------------------------------------------

    /// The connection to `peer` is up: the conversation starts.
    pub fn on_connected(&mut self, peer: SocketAddr, now: Nanos) {
        if self.state != State::Connecting {
            return;
        }
        self.peer = Some(peer);
        match &self.cookie {
            Some(cookie) => {
                let (path, host) = self.tunnel_target();
                tunnel::get_request(&mut self.out, &path, &host, cookie, &self.settings.user_agent);
                self.state = State::Tunnelling;
                self.tunnel_since = Some(now);
            }
            None => self.describe(now),
        }
    }

    /// The path and `Host` of the tunnel's requests.
    fn tunnel_target(&self) -> (String, String) {
        let (h, port) = (self.url.host(), self.url.port());
        let host = if h.contains(':') {
            format!("[{h}]:{port}")
        } else {
            format!("{h}:{port}")
        };
        let path = match (self.url.path(), self.url.query()) {
            ("", q) => format!("/{}", q.map(|q| format!("?{q}")).unwrap_or_default()),
            (p, Some(q)) => format!("{p}?{q}"),
            (p, None) => p.to_owned(),
        };
        (path, host)
    }

    /// The tunnel's POST leg is connected: its head goes, then the
    /// conversation starts.
    pub fn on_post_connected(&mut self, now: Nanos) {
        let (Some(cookie), State::Tunnelling) = (&self.cookie, self.state) else {
            return;
        };
        let (path, host) = self.tunnel_target();
        tunnel::post_request(&mut self.post_out, &path, &host, cookie, &self.settings.user_agent);
        self.tunnel_since = None;
        self.describe(now);
    }

    /// Bytes arrived on the tunnel's POST leg, which the server never
    /// answers unless it refuses it; `None` when it closed it.
    pub fn on_post_data(&mut self, data: Option<&[u8]>, now: Nanos) {
        let answer = data.map_or_else(
            || "a closed connection".to_owned(),
            |d| {
                String::from_utf8_lossy(d.split(|&b| b == b'\r').next().unwrap_or(d))
                    .chars()
                    .take(80)
                    .collect()
            },
        );
        self.fail(SessionError::Tunnel { leg: "POST", answer }, now);
    }

    /// The tunnel's GET answer, once its head is in `inbuf`: 200 opens the
    /// POST leg. Returns whether it was whole.
    fn on_tunnel_answer(&mut self, now: Nanos) -> bool {
        let Some(end) = self.inbuf.windows(4).position(|w| w == b"\r\n\r\n") else {
            if self.inbuf.len() > self.settings.limits.max_header_bytes {
                let answer = String::from_utf8_lossy(&self.inbuf[..80.min(self.inbuf.len())]).into_owned();
                self.fail(SessionError::Tunnel { leg: "GET", answer }, now);
            }
            return false;
        };
        let head = String::from_utf8_lossy(&self.inbuf[..end]).into_owned();
        self.inbuf.drain(..end + 4);
        let status = head.lines().next().unwrap_or_default();
        let ok = status.starts_with("HTTP/1.") && status.split(' ').nth(1) == Some("200");
        match self.peer {
            Some(to) if ok => {
                self.tunnel_answered = true;
                self.events.push_back(Event::OpenPost { to });
            }
            _ => {
                let answer = status.chars().take(80).collect();
                self.fail(SessionError::Tunnel { leg: "GET", answer }, now);
            }
        }
        true
    }

    /// Connecting failed.
    pub fn on_connect_failed(&mut self, reason: &str, now: Nanos) {
        let url = self.url.to_string();
        self.fail(
            SessionError::Connect {
                url,
                reason: reason.to_owned(),
            },
            now,
        );
    }

    /// The connection failed or the server closed it.
    pub fn on_closed(&mut self, error: Option<&str>, now: Nanos) {
        if self.state == State::Done {
            return;
        }
        let during = self.state.doing();
        let e = match error {
            Some(reason) => SessionError::Io {
                during,
                reason: reason.to_owned(),
            },
            None => SessionError::Closed { during },
        };
        self.fail(e, now);
    }

    /// Time is up now, whatever the duration said (the run is interrupted).
    pub fn stop(&mut self, now: Nanos) {
        self.ends_at = self.ends_at.min(now);
        self.on_timeout(now);
    }

    /// The worker cannot route this session's stream: its SSRC is taken.
    pub fn on_route_conflict(&mut self, ssrc: u32, source: IpAddr, now: Nanos) {
        self.fail(SessionError::SsrcCollision { ssrc, from: source }, now);
    }

    /// Bytes read from the RTSP connection at `now`: responses, requests
    /// from the server, and interleaved frames.
    pub fn on_rtsp_data(&mut self, mut data: &[u8], now: Nanos, rec: &mut Histograms) {
        if self.state == State::Tunnelling && !self.tunnel_answered {
            // The GET's answer comes first, in HTTP.
            self.inbuf.extend_from_slice(data);
            if !self.on_tunnel_answer(now) {
                return;
            }
            let rest = std::mem::take(&mut self.inbuf);
            if !rest.is_empty() && self.state != State::Done {
                self.on_rtsp_data(&rest, now, rec);
            }
            return;
        }
        // A message cut by the previous read is completed in `inbuf`,
        // copying only what it lacks (for a `$` frame, its length says how
        // much); whole messages after it are read straight from `data`.
        while !self.inbuf.is_empty() && !data.is_empty() && self.state != State::Done {
            let take = match missing(&self.inbuf) {
                Some(n) => n.min(data.len()),
                // Text: how long it is shows only once it is all there.
                None => data.len(),
            };
            self.inbuf.extend_from_slice(&data[..take]);
            data = &data[take..];
            let mut buf = std::mem::take(&mut self.inbuf);
            let used = self.consume(&buf, now, rec);
            buf.drain(..used);
            self.inbuf = buf;
        }
        if self.state == State::Done {
            self.inbuf = Vec::new();
            return;
        }
        if self.inbuf.is_empty() && !data.is_empty() {
            let used = self.consume(data, now, rec);
            if self.state != State::Done {
                self.inbuf.extend_from_slice(&data[used..]);
            }
        }
    }

    /// An RTP packet the worker matched to stream `stream` (a global index),
    /// the datagram `packet` (whose header is `header`), received at
    /// `arrival`. Returns whether the stream is still there to take it.
    pub fn on_rtp(
        &mut self,
        stream: u32,
        header: &rtp::Header,
        packet: &[u8],
        arrival: Nanos,
        rec: &mut Histograms,
    ) -> bool {
        let current = self.tracks.first().is_some_and(|t| stream >= t.stream);
        let Some(s) = stream
            .checked_sub(self.retired)
            .and_then(|i| self.streams.get_mut(i as usize))
        else {
            return false;
        };
        if let Some(m) = s.on_packet(header, packet.len(), arrival) {
            rec.packet(&m);
        }
        let clock = s.clock_rate;
        if current {
            // What the play holds ahead, over its streams.
            let held: u64 = self
                .streams
                .iter_mut()
                .skip(self.tracks.first().map_or(0, |t| t.stream.saturating_sub(self.retired)) as usize)
                .map(|s| s.ahead.settle(arrival))
                .sum();
            self.max_ahead = self.max_ahead.max(held);
        }
        let Some(s) = stream
            .checked_sub(self.retired)
            .and_then(|i| self.streams.get_mut(i as usize))
        else {
            return false;
        };
        if let Some(r) = s.repair.as_deref_mut() {
            let start = self.feedback.len();
            self.wake |= r.on_packet(
                header.sequence,
                Via::Stream,
                arrival,
                &mut self.feedback,
                (self.ssrc, header.ssrc),
            );
            if self.feedback.len() > start {
                self.send_feedback(stream);
            }
        }
        if current && self.buffering.is_some() && self.tracks.first().is_some_and(|t| t.stream == stream) {
            self.buffered(header.timestamp, clock, arrival, rec);
        }
        if current && self.key_wanted {
            self.look_for_key(stream, packet, arrival, rec);
        }
        if current {
            self.last_media = Some(self.last_media.map_or(arrival, |t| t.max(arrival)));
            if let Some(written) = self.play_written.take() {
                let ns = arrival.saturating_sub(written);
                rec.first_packet(ns);
                self.first_packet.get_or_insert(ns);
            }
        }
        true
    }

    /// An RTX packet (RFC 4588) the worker matched to stream `stream`: the
    /// packet it carries counts as received, and as repaired. Returns
    /// whether the stream is still there and the packet was RTX.
    pub fn on_rtx(&mut self, stream: u32, packet: &[u8], arrival: Nanos) -> bool {
        let Ok(p) = proto::rtx::RtxPacket::parse(packet) else {
            return false;
        };
        let Some(s) = stream
            .checked_sub(self.retired)
            .and_then(|i| self.streams.get_mut(i as usize))
        else {
            return false;
        };
        let (Some(r), Some(media)) = (s.repair.as_deref_mut(), s.ssrc) else {
            return false;
        };
        s.sequence.record(p.osn);
        let start = self.feedback.len();
        r.on_packet(p.osn, Via::Rtx, arrival, &mut self.feedback, (self.ssrc, media));
        if self.feedback.len() > start {
            self.send_feedback(stream);
        }
        true
    }

    /// Whether stream `stream` is waiting for a repair of `seq`: how an RTX
    /// packet on an SSRC not yet known finds its stream (RFC 4588 section
    /// 5.3 associates by the NACK a repair answers).
    pub fn wants_rtx(&self, stream: u32, seq: u16) -> bool {
        self.stream(stream)
            .and_then(|s| s.repair.as_deref())
            .is_some_and(|r| r.scheme() == Scheme::Nack && r.wants(seq))
    }

    /// Sends the feedback made so far about stream `stream` to where its
    /// reports go, as compound RTCP: an empty receiver report, our CNAME,
    /// then the feedback (RFC 4585 section 3.1).
    fn send_feedback(&mut self, stream: u32) {
        let to = self.tracks.iter().find(|t| t.stream == stream).and_then(|t| t.rtcp_to);
        let Some(to) = to else {
            self.feedback.clear();
            return;
        };
        let start = self.rtcp.len();
        rtcp::receiver_report(&mut self.rtcp, self.ssrc, &[]);
        rtcp::sdes_cname(&mut self.rtcp, self.ssrc, &self.cname);
        self.rtcp.extend_from_slice(&self.feedback);
        self.feedback.clear();
        self.rtcp_queue.push((to, start, self.rtcp.len()));
        self.wake = true;
    }

    /// Whether `packet` of `stream` starts the play's first key frame; times
    /// it from PLAY's answer (a key frame that beats the answer counts as
    /// arriving with it).
    fn look_for_key(&mut self, stream: u32, packet: &[u8], arrival: Nanos, rec: &mut Histograms) {
        let Some(track) = self.tracks.iter().find(|t| t.stream == stream) else {
            return;
        };
        if !track.codec.has_key_frames() {
            return;
        }
        // A packet whose lengths do not add up is no key frame.
        let Ok(p) = rtp::Packet::new_checked(packet) else {
            return;
        };
        if !track.codec.is_key(p.payload(), false) {
            return;
        }
        self.key_wanted = false;
        match self.play_answered.take() {
            Some(answered) => self.record_key(arrival.saturating_sub(answered), rec),
            None => self.key_at = Some(arrival),
        }
    }

    /// Whether the play now holds `--buffered` seconds of media ahead of
    /// the wall clock since PLAY, by the first track's packet with RTP
    /// timestamp `ts` (at `clock` Hz) that arrived at `arrival`.
    fn buffered(&mut self, ts: u32, clock: u32, arrival: Nanos, rec: &mut Histograms) {
        let (Some(target), Some((since, first))) = (self.settings.buffered, self.buffering.as_mut()) else {
            return;
        };
        let first = *first.get_or_insert(ts);
        let media = ts.wrapping_sub(first) as i32;
        if media <= 0 {
            return;
        }
        let media_ns = (media as u64).saturating_mul(1_000_000_000) / u64::from(clock.max(1));
        let wall = arrival.saturating_sub(*since);
        if media_ns >= wall.saturating_add(target) {
            rec.buffered(wall);
            self.buffering = None;
        }
    }

    fn record_key(&mut self, ns: Nanos, rec: &mut Histograms) {
        rec.first_key_frame(ns);
        self.first_key_frame.get_or_insert(ns);
    }

    /// An RTCP datagram for this session, from `from` (UDP) or from an
    /// interleaved channel (`None`).
    pub fn on_rtcp(&mut self, data: &[u8], from: Option<SocketAddr>, now: Nanos) -> Result<(), rtcp::RtcpError> {
        for packet in rtcp::parse_compound(data)? {
            match packet {
                RtcpPacket::SenderReport { ssrc, info, .. } => {
                    if let Some(i) = self.track_of_ssrc(ssrc) {
                        let t = &mut self.tracks[i];
                        if t.rtcp_to.is_none() && self.settings.lower == Lower::Udp {
                            t.rtcp_to = from;
                        }
                        let stream = t.stream;
                        if let Some(s) = self.stream_mut(stream) {
                            s.on_sender_report(&info, now);
                        }
                    }
                }
                // DSS's server information: the ack timeout it asks for.
                RtcpPacket::Other { .. } => {
                    let Some(Ok(app)) = packet.app() else { continue };
                    let Ok(info) = proto::qtss::ServerInfo::parse(&app) else {
                        continue;
                    };
                    let (Some(ms), Some(i)) = (info.ack_timeout_ms, self.track_of_ssrc(info.ssrc)) else {
                        continue;
                    };
                    let stream = self.tracks[i].stream;
                    if let Some(r) = self.stream_mut(stream).and_then(|s| s.repair.as_deref_mut()) {
                        r.set_ack_timeout(ms);
                    }
                }
                RtcpPacket::Bye { ssrcs, .. } => {
                    for ssrc in ssrcs {
                        if let Some(i) = self.track_of_ssrc(ssrc) {
                            let stream = self.tracks[i].stream;
                            if let Some(s) = self.stream_mut(stream) {
                                s.bye = true;
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        if self.state == State::Playing && self.movie_over(now) {
            self.movie_ended(now);
        }
        Ok(())
    }

    /// Permission to PLAY, after [`Event::Ready`].
    pub fn play(&mut self, now: Nanos) {
        if self.state != State::Ready {
            return;
        }
        if self.stopping {
            self.teardown(false, now);
            return;
        }
        self.state = State::Starting;
        let url = self.aggregate.clone();
        let speed = self.settings.speed.map(|s| s.to_string());
        let mut extra = vec![("Range", "npt=0.000-")];
        if let Some(s) = &speed {
            extra.push((quicktime::SPEED, s.as_str()));
        }
        self.send(Method::Play, url, &extra, now);
        self.play_written = Some(now);
        self.buffering = self.settings.buffered.map(|_| (now, None));
        self.key_wanted = self.tracks.iter().any(|t| t.codec.has_key_frames());
        self.key_at = None;
        self.play_answered = None;
    }

    /// The deadline from [`poll_timeout`](Session::poll_timeout) has come.
    pub fn on_timeout(&mut self, now: Nanos) {
        while let Some(i) = self.retiring.iter().position(|r| r.0 <= now) {
            let (_, upto) = self.retiring.remove(i);
            self.retire(upto);
        }
        if self.state == State::Done {
            return;
        }
        if self.tunnel_since.is_some_and(|t| now >= t + self.settings.rtsp_timeout) {
            let answer = "nothing".to_owned();
            return self.fail(SessionError::Tunnel { leg: "GET", answer }, now);
        }
        if self.state == State::Connecting && now >= self.started_at + self.settings.rtsp_timeout {
            let e = SessionError::ConnectTimeout {
                url: self.url.to_string(),
                secs: self.settings.rtsp_timeout / SEC,
            };
            return self.fail(e, now);
        }
        if let Some(p) = &self.pending {
            if now >= p.sent_at + self.settings.rtsp_timeout {
                let e = SessionError::Timeout {
                    method: p.method.to_string(),
                    url: p.url.clone(),
                    secs: self.settings.rtsp_timeout / SEC,
                };
                return self.fail(e, now);
            }
        }
        if !self.stopping && now >= self.ends_at {
            self.stopping = true;
            match self.state {
                State::Playing | State::Ready => self.request_teardown(false, now),
                State::TearingDown { .. } => self.state = State::TearingDown { restart: false },
                State::Connecting => {
                    let during = self.state.doing();
                    return self.fail(SessionError::NeverPlayed { during }, now);
                }
                // A request is outstanding; its answer leads to TEARDOWN.
                _ => {}
            }
        }
        if self.state != State::Playing || self.deferred_teardown.is_some() {
            return;
        }
        if self.movie_over(now) {
            return self.movie_ended(now);
        }
        let since = self.playing_since.unwrap_or(self.started_at);
        let heard = self.last_media.unwrap_or(since).max(since);
        if now >= heard + self.settings.media_timeout {
            let secs = self.settings.media_timeout / SEC;
            return self.fail(SessionError::NoMedia { secs }, now);
        }
        for i in 0..self.tracks.len() {
            let stream = self.tracks[i].stream;
            let Some(s) = stream
                .checked_sub(self.retired)
                .and_then(|i| self.streams.get_mut(i as usize))
            else {
                continue;
            };
            let (Some(r), Some(media)) = (s.repair.as_deref_mut(), s.ssrc) else {
                continue;
            };
            if r.poll(now, &mut self.feedback, (self.ssrc, media)) {
                self.send_feedback(stream);
            }
        }
        if self.next_report.is_some_and(|t| now >= t) {
            self.send_reports(now, false);
            let next = now + self.report_interval(REPORT_INTERVAL);
            self.next_report = Some(next);
        }
        if self.pending.is_none() && self.next_keepalive.is_some_and(|t| now >= t) {
            let url = self.aggregate.clone();
            self.send(Method::GetParameter, url, &[], now);
            self.next_keepalive = Some(now + self.keepalive_every);
        }
    }

    // --- the conversation -------------------------------------------------

    fn describe(&mut self, now: Nanos) {
        self.state = State::Describing;
        let url = self.url.to_string();
        self.send(Method::Describe, url, &[("Accept", "application/sdp")], now);
    }

    /// Writes a request, with CSeq, Session and User-Agent.
    fn send(&mut self, method: Method, url: String, extra: &[(&str, &str)], now: Nanos) {
        self.cseq += 1;
        let mut req = Request::new(method.clone(), url.clone()).header("CSeq", self.cseq.to_string());
        for (name, value) in extra {
            req = req.header(name, *value);
        }
        if let Some(id) = &self.session_id {
            req = req.header("Session", id.clone());
        }
        let req = req.header("User-Agent", self.settings.user_agent.clone());
        self.emit(|out| req.write_to(out));
        self.pending = Some(Pending {
            method,
            url,
            cseq: self.cseq,
            sent_at: now,
        });
    }

    /// Parses what `buf` holds; returns how many bytes it used.
    fn consume(&mut self, buf: &[u8], now: Nanos, rec: &mut Histograms) -> usize {
        let mut at = 0;
        while self.state != State::Done {
            // Line breaks between messages are allowed (and sent).
            at += buf[at..].iter().take_while(|&&b| b == b'\r' || b == b'\n').count();
            let rest = &buf[at..];
            if rest.is_empty() {
                break;
            }
            match interleaved::parse(rest) {
                interleaved::Parsed::Frame(f) => {
                    self.on_frame(f.channel, f.data, now, rec);
                    at += f.wire_len();
                    continue;
                }
                interleaved::Parsed::Partial { .. } => break,
                interleaved::Parsed::NotFrame => {}
            }
            match message::parse(rest, &self.settings.limits) {
                Ok(Some((msg, used))) => {
                    at += used;
                    match msg {
                        Message::Response(r) => self.on_response(r, now, rec),
                        Message::Request(r) => self.answer(&r),
                        // `$` frames are read above.
                        Message::Interleaved { .. } => {}
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    // A web server on the RTSP port, or a proxy in the way.
                    let e = if rest.starts_with(b"HTTP/") {
                        SessionError::NotRtsp
                    } else {
                        SessionError::Parse(e)
                    };
                    self.fail(e, now);
                    break;
                }
            }
        }
        at
    }

    fn on_frame(&mut self, channel: u8, data: &[u8], now: Nanos, rec: &mut Histograms) {
        if self.settings.lower != Lower::Tcp {
            return;
        }
        let Some(track) = self
            .tracks
            .iter()
            .find(|t| t.channels.0 == channel || t.channels.1 == channel)
        else {
            // A channel we did not set up (an old play's, or a server's
            // extra): nothing to account it to.
            return;
        };
        if track.channels.0 == channel {
            let stream = track.stream;
            match rtp::Header::parse(&rtp::Packet::new_unchecked(data)) {
                Ok(h) => {
                    self.on_rtp(stream, &h, data, now, rec);
                }
                Err(error) => self.fail(SessionError::Rtp { channel, error }, now),
            }
        } else if let Err(error) = self.on_rtcp(data, None, now) {
            self.fail(SessionError::Rtcp { channel, error }, now);
        }
    }

    /// A request from the server.
    fn answer(&mut self, req: &Request) {
        let status = match req.method {
            Method::Options | Method::GetParameter => 200,
            _ => 501,
        };
        let response = Response::new(status, req.cseq());
        self.emit(|out| response.write_to(out));
    }

    fn on_response(&mut self, resp: Response, now: Nanos, rec: &mut Histograms) {
        let Some(pending) = self.pending.take() else {
            return self.fail(SessionError::Unsolicited, now);
        };
        let cseq = resp.headers.get("CSeq");
        if cseq.and_then(|c| c.trim().parse::<u32>().ok()) != Some(pending.cseq) {
            let e = SessionError::CSeq {
                method: pending.method.to_string(),
                want: pending.cseq,
                got: cseq.map(|c| c.chars().take(32).collect()),
            };
            return self.fail(e, now);
        }
        rec.rtsp_response(&pending.method, now.saturating_sub(pending.sent_at));
        let ok = resp.status.is_success();
        // A server that does not do GET_PARAMETER keep-alives may say so.
        let refused_keepalive = pending.method == Method::GetParameter && matches!(resp.status.code(), 405 | 451 | 501);
        if !ok && !refused_keepalive {
            let e = SessionError::Status {
                method: pending.method.to_string(),
                url: pending.url,
                status: resp.status,
            };
            return self.fail(e, now);
        }
        let result = match pending.method {
            Method::Describe => self.on_describe(&resp, &pending.url, now),
            Method::Setup => self.on_setup(&resp, &pending.url, now),
            Method::Play => {
                self.on_play(&resp, now);
                match self.key_at.take() {
                    Some(_) => self.record_key(0, rec),
                    None if self.key_wanted => self.play_answered = Some(now),
                    None => {}
                }
                Ok(())
            }
            Method::GetParameter => {
                self.keepalive_refused |= !ok;
                if self.keepalive_refused {
                    self.next_keepalive = None;
                }
                Ok(())
            }
            Method::Teardown => {
                self.on_teardown(now);
                Ok(())
            }
            _ => Ok(()),
        };
        if let Err(e) = result {
            return self.fail(e, now);
        }
        if self.pending.is_some() || self.state == State::Done {
            return;
        }
        if let Some(restart) = self.deferred_teardown.take() {
            return self.teardown(restart && !self.stopping, now);
        }
        // Time ran out while the request was outstanding.
        if self.stopping {
            match self.state {
                State::Describing | State::SettingUp { .. } | State::Starting | State::Playing => {
                    if self.session_id.is_some() {
                        self.teardown(false, now);
                    } else {
                        self.finish(now);
                    }
                }
                State::Ready => self.teardown(false, now),
                _ => {}
            }
        }
    }

    fn on_describe(&mut self, resp: &Response, url: &str, now: Nanos) -> Result<(), SessionError> {
        let sdp_error = |error| SessionError::Sdp {
            url: url.to_owned(),
            error,
        };
        let presentation = sdp::parse(&resp.body).map_err(sdp_error)?;
        if presentation.media.len() > MAX_MEDIA {
            return Err(SessionError::TooManyMedia(presentation.media.len(), url.to_owned()));
        }
        self.base = base_url(resp, url);
        self.aggregate = presentation.aggregate_url(&self.base);
        self.sdp_range_len = presentation.duration_secs.and_then(secs_to_nanos);
        self.start_tracks(&presentation);
        if self.stopping {
            // No server session yet: nothing to tear down.
            return Ok(());
        }
        self.setup(0, now);
        Ok(())
    }

    fn start_tracks(&mut self, p: &Presentation) {
        self.tracks.clear();
        for (i, m) in p.media.iter().enumerate() {
            let stream = self.retired + self.streams.len() as u32;
            self.streams.push_back(Stream::new(None, m.payload_type, m.clock_rate));
            let ch = (2 * i) as u8;
            self.tracks.push(Track {
                url: p.media_url(i, &self.base),
                stream,
                channels: (ch, ch + 1),
                source: None,
                rtp_port: None,
                rtcp_to: None,
                codec: Codec::of(&m.kind, Some(&m.encoding)),
                rtx_pt: m.rtx_payload_type,
            });
        }
    }

    fn setup(&mut self, i: usize, now: Nanos) {
        self.state = State::SettingUp { next: i };
        let mut transport = String::with_capacity(48);
        let mut reliable = false;
        match (self.settings.lower, self.client_ports) {
            (Lower::Udp, Some((rtp, rtcp))) => {
                // NACK/RTX is asked for by the profile (RFC 4585 section
                // 4), reliable UDP by DSS's own header.
                let profile = match self.settings.repair {
                    Some(Scheme::Nack) => "RTP/AVPF",
                    _ => "RTP/AVP",
                };
                reliable = self.settings.repair == Some(Scheme::Reliable);
                let _ = write!(transport, "{profile};unicast;client_port={rtp}-{rtcp}");
            }
            _ => {
                let (a, b) = self.tracks[i].channels;
                let _ = write!(transport, "RTP/AVP/TCP;unicast;interleaved={a}-{b}");
            }
        }
        let url = self.tracks[i].url.clone();
        let mut extra: SmallVec<[(&str, &str); 3]> = SmallVec::new();
        extra.push(("Transport", &transport));
        if reliable {
            extra.push((quicktime::X_RETRANSMIT, quicktime::OUR_RETRANSMIT));
        }
        if self.settings.dynamic_rate {
            // QuickTime's "may be sent ahead of real time", as DSS read it.
            extra.push(("x-Dynamic-Rate", "1"));
        }
        self.send(Method::Setup, url, &extra, now);
    }

    fn on_setup(&mut self, resp: &Response, url: &str, now: Nanos) -> Result<(), SessionError> {
        let State::SettingUp { next } = self.state else {
            return Ok(());
        };
        let problem = |p: String| SessionError::Transport {
            url: url.to_owned(),
            problem: p,
        };
        let session = resp
            .headers
            .get("Session")
            .filter(|s| !header::session_id(s).is_empty())
            .ok_or_else(|| SessionError::NoSession { url: url.to_owned() })?;
        let id = header::session_id(session);
        match &self.session_id {
            Some(was) if was != id => {
                return Err(SessionError::SessionChanged {
                    was: was.clone(),
                    now: id.chars().take(64).collect(),
                })
            }
            Some(_) => {}
            None => self.session_id = Some(id.to_owned()),
        }
        if let Some(t) = session_timeout(session) {
            self.keepalive_every = (t / 2).max(SEC);
        }
        let spec = resp
            .headers
            .get("Transport")
            .ok_or_else(|| problem("the reply has no Transport header".into()))?;
        // A server answers with the one transport it chose.
        let spec = spec.split(',').next().unwrap_or_default();
        let t = Transport::parse(spec).map_err(|e| problem(format!("Transport {spec:?}: {e}")))?;
        if t.lower != self.settings.lower || t.multicast {
            let got = if t.multicast { "multicast" } else { lower_name(t.lower) };
            return Err(problem(format!(
                "asked for unicast {} and the server answered {got} ({spec:?})",
                lower_name(self.settings.lower)
            )));
        }
        let peer_ip = self.peer.map(|p| p.ip());
        let others: SmallVec<[(u8, u8); 2]> = self.tracks[..next].iter().map(|t| t.channels).collect();
        let track = &mut self.tracks[next];
        match t.lower {
            Lower::Udp => {
                track.source = t.source.as_deref().and_then(|s| s.parse().ok()).or(peer_ip);
                track.rtp_port = t.server_port.map(|p| p.0);
                track.rtcp_to = match (track.source, t.server_port) {
                    (Some(ip), Some((_, rtcp))) => Some(SocketAddr::new(ip, rtcp)),
                    _ => None,
                };
            }
            Lower::Tcp => {
                let channels = t.interleaved.unwrap_or(track.channels);
                let clash = others
                    .iter()
                    .any(|o| [o.0, o.1].iter().any(|c| *c == channels.0 || *c == channels.1));
                if clash {
                    return Err(problem(format!("interleaved channels {spec:?} are another track's")));
                }
                track.channels = channels;
            }
        }
        let stream = track.stream;
        // What the server agreed to: the feedback profile (and an RTX type
        // in the SDP to be repaired with), or its x-Retransmit echoed back.
        let repair = match self.settings.repair {
            Some(Scheme::Nack) if t.lower == Lower::Udp && t.feedback && track.rtx_pt.is_some() => Some(Scheme::Nack),
            Some(Scheme::Reliable)
                if t.lower == Lower::Udp
                    && resp
                        .headers
                        .get(quicktime::X_RETRANSMIT)
                        .and_then(quicktime::Retransmit::parse)
                        .is_some() =>
            {
                Some(Scheme::Reliable)
            }
            _ => None,
        };
        if let Some(s) = self.stream_mut(stream) {
            if let Some(ssrc) = t.ssrc {
                s.ssrc = Some(ssrc);
            }
            s.repair = repair.map(|k| Box::new(Repair::new(k)));
        }
        if next + 1 < self.tracks.len() {
            if !self.stopping {
                self.setup(next + 1, now);
            }
        } else {
            self.state = State::Ready;
            if !self.stopping {
                self.events.push_back(Event::Ready);
            }
        }
        Ok(())
    }

    fn on_play(&mut self, resp: &Response, now: Nanos) {
        self.state = State::Playing;
        self.plays += 1;
        // The speed the server sends at: what it answered (RFC 2326 section
        // 12.35), 1 when it did not answer, whatever was asked. Lateness is
        // judged against it; what is held ahead is played at 1.
        self.speed = resp
            .headers
            .get(quicktime::SPEED)
            .and_then(quicktime::speed)
            .filter(|s| *s > 0.0)
            .unwrap_or(1.0);
        for t in &self.tracks {
            let (stream, speed) = (t.stream, self.speed);
            if let Some(s) = self.streams.get_mut((stream.saturating_sub(self.retired)) as usize) {
                s.speed = speed;
            }
        }
        self.playing_since = Some(now);
        self.last_media = None;
        // What the answer says is played, else what the SDP said there is.
        self.range_len = resp
            .headers
            .get("Range")
            .and_then(|r| NptRange::parse(r).ok())
            .and_then(|r| Some(r.end? - r.start.unwrap_or(0.0)))
            .and_then(secs_to_nanos)
            .or(self.sdp_range_len);
        if let Some(info) = resp.headers.get("RTP-Info") {
            for (url, seq) in rtp_info(info) {
                let Some(seq) = seq else { continue };
                let track = match self.tracks.len() {
                    1 => self.tracks.first(),
                    _ => self.tracks.iter().find(|t| same_resource(&t.url, url)),
                };
                if let Some(stream) = track.map(|t| t.stream) {
                    if let Some(s) = self.stream_mut(stream) {
                        s.sequence.expect_from(seq);
                        if let Some(r) = s.repair.as_deref_mut() {
                            r.expect_from(seq, now);
                        }
                    }
                }
            }
        }
        let first_report = self.report_interval(REPORT_INTERVAL / 2);
        // A client with a window says it at once, as QuickTime did: until
        // the server hears it, nothing bounds what it sends ahead.
        let first_report = if self.settings.overbuffer_window.is_some() {
            0
        } else {
            first_report
        };
        self.next_report = Some(now + first_report);
        self.next_keepalive = (!self.keepalive_refused).then_some(now + self.keepalive_every);
    }

    /// A random interval from half to one and a half times `mean`.
    fn report_interval(&mut self, mean: Nanos) -> Nanos {
        mean / 2 + next_random(&mut self.rng) % mean.max(1)
    }

    /// Whether the movie (or the PLAY range) is over: every stream said BYE,
    /// or the range has run out and the media has been quiet a while.
    fn movie_over(&self, now: Nanos) -> bool {
        let all_bye =
            !self.tracks.is_empty() && self.tracks.iter().all(|t| self.stream(t.stream).is_some_and(|s| s.bye));
        // Repairs still to come hold the end back: gaps still open (until
        // they are given up), and on reliable UDP, where the last packets'
        // loss shows no gap, the server's resends until the media has been
        // quiet a while.
        let repair = |t: &Track| self.stream(t.stream).and_then(|s| s.repair.as_deref());
        let repairing = self.tracks.iter().any(|t| repair(t).is_some_and(Repair::is_waiting));
        let reliable = self
            .tracks
            .iter()
            .any(|t| repair(t).is_some_and(|r| r.scheme() == Scheme::Reliable));
        let since = self.playing_since.unwrap_or(self.started_at);
        let heard = self.last_media.unwrap_or(since).max(since);
        if all_bye && !repairing && !(reliable && now < heard + QUIET) {
            return true;
        }
        match (self.playing_since, self.range_len) {
            (Some(since), Some(len)) => now >= since + len && now >= heard + QUIET && !repairing,
            _ => false,
        }
    }

    fn movie_ended(&mut self, now: Nanos) {
        let restart = !self.stopping && now < self.ends_at;
        self.request_teardown(restart, now);
    }

    /// TEARDOWN now, or once the outstanding request (a keep-alive) is
    /// answered.
    fn request_teardown(&mut self, restart: bool, now: Nanos) {
        if self.pending.is_some() {
            self.deferred_teardown = Some(restart);
        } else {
            self.teardown(restart, now);
        }
    }

    fn teardown(&mut self, restart: bool, now: Nanos) {
        self.deferred_teardown = None;
        self.send_reports(now, true);
        self.state = State::TearingDown { restart };
        let url = self.aggregate.clone();
        self.send(Method::Teardown, url, &[], now);
    }

    fn on_teardown(&mut self, now: Nanos) {
        let State::TearingDown { restart } = self.state else {
            return;
        };
        self.session_id = None;
        self.end_play(now);
        if restart && !self.stopping {
            self.describe(now);
        } else {
            self.finish(now);
        }
    }

    /// The current play's streams stop receiving after their linger.
    fn end_play(&mut self, now: Nanos) {
        for i in 0..self.tracks.len() {
            let stream = self.tracks[i].stream;
            if let Some(r) = self.stream_mut(stream).and_then(|s| s.repair.as_deref_mut()) {
                r.finish();
            }
        }
        self.tracks.clear();
        self.playing_since = None;
        self.range_len = None;
        self.play_written = None;
        self.key_wanted = false;
        self.key_at = None;
        self.play_answered = None;
        self.next_report = None;
        self.next_keepalive = None;
        let upto = self.retired + self.streams.len() as u32;
        if upto > self.retired && !self.retiring.iter().any(|r| r.1 == upto) {
            self.retiring.push((now + LINGER, upto));
        }
    }

    fn finish(&mut self, now: Nanos) {
        let outcome = if self.plays == 0 {
            Outcome::Failed(SessionError::NeverPlayed {
                during: self.state.doing(),
            })
        } else {
            Outcome::Completed
        };
        self.close(outcome, now);
    }

    fn fail(&mut self, e: SessionError, now: Nanos) {
        if self.state == State::Done {
            return;
        }
        // Tell the server, without waiting, so it does not keep sending
        // until its own timeout; not when the connection itself is the
        // problem.
        let connection_broken = matches!(
            e,
            SessionError::Closed { .. }
                | SessionError::Io { .. }
                | SessionError::Parse(_)
                | SessionError::NotRtsp
                | SessionError::Tunnel { .. }
        );
        if self.session_id.is_some() && !connection_broken && !matches!(self.state, State::TearingDown { .. }) {
            let url = self.aggregate.clone();
            self.send(Method::Teardown, url, &[], now);
        }
        self.close(Outcome::Failed(e), now);
    }

    fn close(&mut self, outcome: Outcome, now: Nanos) {
        self.state = State::Done;
        self.pending = None;
        self.inbuf = Vec::new();
        self.end_play(now);
        self.outcome = Some(outcome);
        self.events.push_back(Event::Close);
    }

    // --- RTCP -------------------------------------------------------------

    /// Receiver reports for every stream of the play (and BYE when `bye`):
    /// over UDP one compound per server RTCP address, with a report block
    /// for each stream sent there; over TCP one per track, on its channel.
    fn send_reports(&mut self, now: Nanos, bye: bool) {
        match self.settings.lower {
            Lower::Udp => {
                let mut targets: SmallVec<[SocketAddr; 2]> = SmallVec::new();
                for to in self.tracks.iter().filter_map(|t| t.rtcp_to) {
                    if !targets.contains(&to) {
                        targets.push(to);
                    }
                }
                for to in targets {
                    let streams: SmallVec<[u32; 4]> = self
                        .tracks
                        .iter()
                        .filter(|t| t.rtcp_to == Some(to))
                        .map(|t| t.stream)
                        .collect();
                    let start = self.rtcp.len();
                    self.write_report(&streams, now, bye);
                    self.rtcp_queue.push((to, start, self.rtcp.len()));
                }
            }
            Lower::Tcp => {
                for i in 0..self.tracks.len() {
                    let (stream, channel) = (self.tracks[i].stream, self.tracks[i].channels.1);
                    let start = self.rtcp.len();
                    self.write_report(&[stream], now, bye);
                    // A report for one stream is a few dozen bytes: it fits.
                    let report = self.rtcp.split_off(start);
                    self.emit(|out| {
                        let _ = interleaved::emit(out, channel, &[&report]);
                    });
                }
            }
        }
    }

    /// Appends to `rtcp` an RR with a block per stream of `streams` whose
    /// SSRC is known, our CNAME, and BYE when `bye`.
    fn write_report(&mut self, streams: &[u32], now: Nanos, bye: bool) {
        let mut blocks: SmallVec<[ReportBlock; 4]> = SmallVec::new();
        for &stream in streams {
            if let Some(b) = self.stream_mut(stream).and_then(|s| s.report_block(now)) {
                blocks.push(b);
            }
        }
        rtcp::receiver_report(&mut self.rtcp, self.ssrc, &blocks);
        rtcp::sdes_cname(&mut self.rtcp, self.ssrc, &self.cname);
        if let Some(window) = self.settings.overbuffer_window {
            // QuickTime's report on each stream, with the window it holds
            // ahead (DSS read `ob` to bound overbuffering).
            let values = proto::qtss::ReportValues {
                overbuffer_window: Some(window),
                ..Default::default()
            };
            // On every stream whose SSRC is known (from SETUP's answer),
            // media or not yet.
            for &stream in streams {
                if let Some(ssrc) = self.stream(stream).and_then(|s| s.ssrc) {
                    proto::qtss::report(&mut self.rtcp, self.ssrc, ssrc, &values);
                }
            }
        }
        if bye {
            rtcp::bye(&mut self.rtcp, &[self.ssrc], None);
        }
    }

    // --- streams ------------------------------------------------------------

    fn stream(&self, global: u32) -> Option<&Stream> {
        self.streams.get(global.checked_sub(self.retired)? as usize)
    }

    fn stream_mut(&mut self, global: u32) -> Option<&mut Stream> {
        self.streams.get_mut(global.checked_sub(self.retired)? as usize)
    }

    fn track_of_ssrc(&self, ssrc: u32) -> Option<usize> {
        self.tracks
            .iter()
            .position(|t| self.stream(t.stream).is_some_and(|s| s.ssrc == Some(ssrc)))
    }

    /// Folds the streams below `upto` into the totals and forgets them.
    fn retire(&mut self, upto: u32) {
        while self.retired < upto {
            let Some(s) = self.streams.pop_front() else { break };
            self.totals.add_stream(&s);
            self.retired += 1;
        }
        self.events.push_back(Event::Retired { upto });
    }
}

fn lower_name(l: Lower) -> &'static str {
    match l {
        Lower::Udp => "UDP",
        Lower::Tcp => "TCP (interleaved)",
    }
}

/// The base URL for a DESCRIBE answer (RFC 2326 C.1.1).
fn base_url(resp: &Response, request_url: &str) -> String {
    for name in ["Content-Base", "Content-Location"] {
        if let Some(v) = resp.headers.get(name).map(str::trim).filter(|v| !v.is_empty()) {
            // Content-Location may be relative to the request.
            return if RtspUrl::parse(v).is_ok() {
                v.to_owned()
            } else {
                url::resolve(request_url, v)
            };
        }
    }
    request_url.to_owned()
}

/// How many bytes the interleaved frame that `buf` starts (after line
/// breaks) still lacks: 0 when it is whole. `None` when `buf` starts an
/// RTSP message instead, whose length its text will tell.
fn missing(buf: &[u8]) -> Option<usize> {
    let rest = &buf[buf.iter().take_while(|&&b| b == b'\r' || b == b'\n').count()..];
    if rest.is_empty() {
        return Some(0);
    }
    match interleaved::parse(rest) {
        interleaved::Parsed::Frame(_) => Some(0),
        interleaved::Parsed::Partial { missing } => Some(missing),
        interleaved::Parsed::NotFrame => None,
    }
}

/// A play length in seconds, if it is a sane one (up to about 115 days).
fn secs_to_nanos(secs: f64) -> Option<Nanos> {
    (secs > 0.0 && secs < 1e7).then_some((secs * 1e9) as Nanos)
}

/// `timeout=N` in a Session header, in nanoseconds.
fn session_timeout(header: &str) -> Option<Nanos> {
    header.split(';').skip(1).find_map(|p| {
        let (name, value) = p.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("timeout") {
            return None;
        }
        let secs: u64 = value.trim().parse().ok()?;
        (secs > 0).then(|| secs.saturating_mul(SEC))
    })
}

/// The (url, seq) pairs of an RTP-Info header (RFC 2326 12.33).
fn rtp_info(header: &str) -> impl Iterator<Item = (&str, Option<u16>)> {
    header.split(',').filter_map(|entry| {
        let mut url = None;
        let mut seq = None;
        for p in entry.split(';') {
            let (name, value) = p.split_once('=').unwrap_or((p, ""));
            match name.trim() {
                "url" => url = Some(value.trim()),
                "seq" => seq = value.trim().parse().ok(),
                _ => {}
            }
        }
        Some((url?, seq))
    })
}

/// Whether two URLs name the same track: servers echo the SETUP URL in
/// RTP-Info, but some give only its path or its last segment.
fn same_resource(setup_url: &str, info_url: &str) -> bool {
    !info_url.is_empty() && (setup_url == info_url || setup_url.ends_with(info_url) || info_url.ends_with(setup_url))
}

#[cfg(test)]
mod tests;
