//! Relays: a broadcast whose publisher is another RTSP server. The server
//! plays a configured `rtsp://` URL itself (another Streamalot, GStreamer's
//! RTSP server, any server; a live path or a movie) and reflects it under a
//! local path, exactly as if a publisher had announced it there: the same
//! [`Ingest`](super::ingest::Ingest), the same replicas, viewers joining at
//! a key frame.
//!
//! [`Player`] is the RTSP *play* client, without IO, driven by the rule of
//! every sans-IO client here (see [`crate::rtsp_client`], which it shares
//! with the publish client, [`crate::channel::publish`]): feed it what the
//! connection read ([`Player::handle_input`]) and the clock
//! ([`Player::handle_timeout`]), write what [`Player::take_output`] returns,
//! drain [`Player::poll_event`], and call again by [`Player::poll_timeout`].
//!
//! The exchange is the one ffmpeg and VLC make:
//!
//! 1. `OPTIONS` (a 401 here or later is answered with the URL's
//!    credentials, Digest or Basic);
//! 2. `DESCRIBE` (`Accept: application/sdp`): the SDP and the base URL
//!    (`Content-Base`, else `Content-Location`, else the URL) come up as
//!    [`Event::Described`], and the player waits for its driver to say how
//!    each stream is to come ([`Player::set_up`]: interleaved, or to a UDP
//!    pair the driver bound);
//! 3. `SETUP` of each stream's control;
//! 4. `PLAY` of the aggregate control with `Range: npt=0.000-`; then media
//!    flows, and `GET_PARAMETER` with the session keeps it alive at half the
//!    session's timeout (RTCP alone does not refresh every server's
//!    session);
//! 5. `TEARDOWN` when the relay stops.
//!
//! # What servers do that the RFC does not say
//!
//! - GStreamer's server answers SETUP without `interleaved=` for TCP; the
//!   channels asked for are then kept.
//! - A server that does not know `GET_PARAMETER` (501, 405) is kept alive
//!   with `OPTIONS` instead.
//! - The end of a movie is an RTCP BYE from the origin on each stream,
//!   with the session still open: the relay's driver watches for it
//!   ([`is_bye`]).

use std::collections::VecDeque;
use std::str::FromStr;

use proto::rtcp;
use proto::rtsp::header::{Lower, Transport};
use proto::rtsp::message::{Method, Response};
use proto::rtsp::status::Status;
use proto::rtsp::url::{resolve, RtspUrl};
use proto::sdp::SessionDescription;

pub use crate::channel::publish::{tcp_channels, Carriage, Negotiated};
use crate::rtsp_client::{ClientError, Conversation, Incoming, Nanos, NS_PER_SEC};

/// How long a request may go unanswered before the player gives up.
pub const REPLY_TIMEOUT: Nanos = 10 * NS_PER_SEC;
/// How long TEARDOWN's answer is waited for before the player closes.
pub const TEARDOWN_TIMEOUT: Nanos = 2 * NS_PER_SEC;
/// The first wait before connecting again to an origin that went away;
/// it doubles each failed attempt up to [`BACKOFF_MAX`].
pub const BACKOFF_MIN: Nanos = NS_PER_SEC / 2;
pub const BACKOFF_MAX: Nanos = 30 * NS_PER_SEC;
/// An on-demand relay without viewers for this long is stopped.
pub const IDLE_STOP: Nanos = 5 * NS_PER_SEC;
/// How long a DESCRIBE or SETUP of a relay's path waits for its origin.
pub const START_WAIT: Nanos = 10 * NS_PER_SEC;

/// How a relay's streams come from the origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RelayTransport {
    /// Interleaved on the RTSP connection.
    #[default]
    Tcp,
    /// To a UDP pair of this server's per stream.
    Udp,
}

/// When a relay plays its origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// From the first DESCRIBE or SETUP of its path until a few seconds
    /// after its last viewer left.
    #[default]
    OnDemand,
    /// From the server's start, always.
    Always,
}

impl FromStr for RelayTransport {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tcp" => Ok(RelayTransport::Tcp),
            "udp" => Ok(RelayTransport::Udp),
            _ => Err(format!("{s:?} is no relay transport (tcp or udp)")),
        }
    }
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "on-demand" => Ok(Mode::OnDemand),
            "always" => Ok(Mode::Always),
            _ => Err(format!("{s:?} is no relay mode (on-demand or always)")),
        }
    }
}

/// One configured relay: the origin's `url` reflected at `path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relay {
    pub path: String,
    pub url: RtspUrl,
    pub transport: RelayTransport,
    pub mode: Mode,
}

/// A path to be given as the local one: `/` first, no trailing `/`, no
/// `..`.
pub fn check_path(path: &str) -> Result<String, String> {
    let p = path.trim();
    if !p.starts_with('/') || p.len() < 2 || p.ends_with('/') || p.split('/').any(|s| s == "..") {
        return Err(format!("{path:?} is no path (it must start with / and name something)"));
    }
    Ok(p.to_owned())
}

impl FromStr for Relay {
    type Err = String;
    /// `PATH=URL [tcp|udp] [on-demand|always]`, as `--relay` takes it.
    fn from_str(text: &str) -> Result<Relay, String> {
        let (path, rest) = text
            .split_once('=')
            .ok_or_else(|| format!("{text:?} is not PATH=rtsp://HOST/PATH"))?;
        let mut words = rest.split_whitespace();
        let url = words.next().ok_or("no URL after PATH=")?;
        let mut relay = Relay {
            path: check_path(path)?,
            url: parse_url(url)?,
            transport: RelayTransport::default(),
            mode: Mode::default(),
        };
        for w in words {
            if let Ok(t) = w.parse() {
                relay.transport = t;
            } else if let Ok(m) = w.parse() {
                relay.mode = m;
            } else {
                return Err(format!("{w:?} is neither tcp, udp, on-demand nor always"));
            }
        }
        Ok(relay)
    }
}

/// One configured push: the local broadcast at `path`, while it is on the
/// air, published to `url` (ANNOUNCE/RECORD, interleaved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    pub path: String,
    pub url: RtspUrl,
}

impl FromStr for Push {
    type Err = String;
    /// `PATH=rtsp://[USER:PASS@]HOST:PORT/PATH2`, as `--push` takes it.
    fn from_str(text: &str) -> Result<Push, String> {
        let (path, url) = text
            .split_once('=')
            .ok_or_else(|| format!("{text:?} is not PATH=rtsp://HOST/PATH"))?;
        Ok(Push {
            path: check_path(path)?,
            url: parse_url(url.trim())?,
        })
    }
}

/// An `rtsp://` URL with a host.
pub fn parse_url(url: &str) -> Result<RtspUrl, String> {
    let u = RtspUrl::parse(url).map_err(|e| format!("{url:?}: {e}"))?;
    if !u.as_str().starts_with("rtsp://") && !u.as_str().starts_with("RTSP://") {
        return Err(format!("{url:?} is not an rtsp:// URL"));
    }
    Ok(u)
}

/// The wait before attempt `failures + 1` to reach an origin: doubling
/// from [`BACKOFF_MIN`], capped at [`BACKOFF_MAX`].
pub fn backoff(failures: u32) -> Nanos {
    BACKOFF_MIN.saturating_mul(1u64 << failures.min(16)).min(BACKOFF_MAX)
}

/// Whether an RTCP compound packet from the origin says BYE.
pub fn is_bye(data: &[u8]) -> bool {
    rtcp::parse_compound(data).is_ok_and(|mut ps| ps.any(|p| matches!(p, rtcp::RtcpPacket::Bye { .. })))
}

/// What the player tells its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The origin described the presentation: the driver parses `sdp`,
    /// binds what the streams need and calls [`Player::set_up`].
    Described {
        content_type: Option<String>,
        sdp: Vec<u8>,
        /// The URL relative controls resolve against.
        base: String,
    },
    /// PLAY was answered: media flows, each stream as negotiated.
    Playing { tracks: Vec<Negotiated> },
    /// An interleaved frame from the origin: media or RTCP.
    Interleaved { channel: u8, data: Vec<u8> },
    /// TEARDOWN was answered (or its wait ran out): close the connection.
    Closed,
    /// The relay cannot go on with this connection.
    Failed(RelayError),
}

/// Why playing the origin failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelayError {
    #[error("the origin answered {method} with {status}")]
    Refused { method: String, status: Status },
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("the origin's answer to SETUP of {uri} is unusable: {why}")]
    BadTransport { uri: String, why: String },
    #[error("the origin answered SETUP without a Session header")]
    NoSession,
    #[error("the origin did not answer {method} within {secs} s")]
    NoReply { method: String, secs: u64 },
    #[error("the origin described nothing this server can relay: {0}")]
    BadDescription(String),
}

impl RelayError {
    /// The status a viewer waiting for the relay is given: the origin's
    /// 404 as a 404, anything else as a gateway's failure.
    pub fn status(&self) -> u16 {
        match self {
            RelayError::Refused { status, .. } if status.code() == 404 => 404,
            RelayError::NoReply { .. } => 504,
            _ => 502,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Options,
    Describe,
    /// Described; waiting for [`Player::set_up`].
    Described,
    Setup(usize),
    Play,
    Playing,
    Teardown,
    Done,
}

/// The client side of one RTSP play. See the module documentation.
#[derive(Debug)]
pub struct Player {
    conv: Conversation,
    step: Step,
    /// Per stream: its control URL and how it is to come.
    streams: Vec<(String, Carriage)>,
    negotiated: Vec<Negotiated>,
    /// What PLAY and TEARDOWN name: the aggregate control.
    aggregate: String,
    keep_alive: Method,
    events: VecDeque<Event>,
}

impl Player {
    /// A player of `url`; `seed` makes the Digest cnonces. The first request
    /// is queued at once.
    pub fn new(url: RtspUrl, seed: u64, now: Nanos) -> Player {
        let aggregate = url.as_str().to_owned();
        let mut p = Player {
            conv: Conversation::new(url, seed, now),
            step: Step::Options,
            streams: Vec::new(),
            negotiated: Vec::new(),
            aggregate,
            keep_alive: Method::GetParameter,
            events: VecDeque::new(),
        };
        let req = p.conv.request(Method::Options, p.url());
        p.conv.send(req, now, false);
        p
    }

    fn url(&self) -> String {
        self.conv.url().as_str().to_owned()
    }

    pub fn is_playing(&self) -> bool {
        self.step == Step::Playing
    }

    /// Bytes to write to the connection, in order (empty when none).
    pub fn take_output(&mut self) -> Vec<u8> {
        self.conv.take_output()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Player::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Nanos> {
        match (self.conv.pending(), self.step) {
            (_, Step::Done) => None,
            (Some(p), Step::Teardown) => Some(p.sent_at + TEARDOWN_TIMEOUT),
            (Some(p), _) => Some(p.sent_at + REPLY_TIMEOUT),
            (None, Step::Playing) => Some(self.conv.keep_alive_at()),
            (None, _) => None,
        }
    }

    /// Keep-alives and reply timeouts.
    pub fn handle_timeout(&mut self, now: Nanos) {
        if let Some(p) = self.conv.pending() {
            let limit = if self.step == Step::Teardown {
                TEARDOWN_TIMEOUT
            } else {
                REPLY_TIMEOUT
            };
            if now >= p.sent_at + limit {
                if self.step == Step::Teardown {
                    self.finish();
                } else if p.keep_alive {
                    // The media is what counts; the session's own timeout
                    // (or the media's silence) will tell.
                    self.conv.clear_pending();
                } else {
                    let method = p.request.method.to_string();
                    self.fail(RelayError::NoReply {
                        method,
                        secs: REPLY_TIMEOUT / NS_PER_SEC,
                    });
                }
            }
            return;
        }
        if self.step == Step::Playing && now >= self.conv.keep_alive_at() {
            let req = self.conv.request(self.keep_alive.clone(), self.aggregate.clone());
            self.conv.send(req, now, true);
        }
    }

    /// How each stream is to come, in the order of the described streams
    /// the relay takes: their control URLs and carriage. Starts the SETUPs.
    pub fn set_up(&mut self, streams: Vec<(String, Carriage)>, now: Nanos) {
        if self.step != Step::Described {
            return;
        }
        if streams.is_empty() {
            return self.fail(RelayError::BadDescription("no stream".into()));
        }
        self.streams = streams;
        self.setup(0, now);
    }

    /// Starts TEARDOWN (or ends at once when nothing was set up).
    pub fn teardown(&mut self, now: Nanos) {
        match self.step {
            Step::Done | Step::Teardown => {}
            _ if self.conv.session().is_none() => self.finish(),
            _ => {
                self.step = Step::Teardown;
                let req = self.conv.request(Method::Teardown, self.aggregate.clone());
                self.conv.clear_pending();
                self.conv.send(req, now, false);
            }
        }
    }

    /// Bytes read from the connection.
    pub fn handle_input(&mut self, now: Nanos, bytes: &[u8]) {
        self.conv.push_input(bytes);
        loop {
            if self.step == Step::Done {
                self.conv.clear_input();
                return;
            }
            match self.conv.next(now) {
                None => return,
                Some(Ok(Incoming::Interleaved { channel, data })) => {
                    self.events.push_back(Event::Interleaved { channel, data })
                }
                Some(Ok(Incoming::Answer { pending, response })) => {
                    self.response(now, pending.request.method, pending.keep_alive, response)
                }
                Some(Err(e)) => return self.fail(e.into()),
            }
        }
    }

    fn response(&mut self, now: Nanos, method: Method, keep_alive: bool, r: Response) {
        if keep_alive {
            if matches!(r.status.code(), 405 | 501) && self.keep_alive != Method::Options {
                // GET_PARAMETER unknown there: OPTIONS with the session then.
                self.keep_alive = Method::Options;
            }
            return;
        }
        if self.step == Step::Teardown {
            return self.finish();
        }
        // OPTIONS is a courtesy: a server that does not do it may still
        // answer DESCRIBE.
        if !r.status.is_success() && self.step != Step::Options {
            return self.fail(RelayError::Refused {
                method: method.to_string(),
                status: r.status,
            });
        }
        match self.step {
            Step::Options => {
                self.step = Step::Describe;
                let req = self
                    .conv
                    .request(Method::Describe, self.url())
                    .header("Accept", "application/sdp");
                self.conv.send(req, now, false);
            }
            Step::Describe => {
                let base = r
                    .headers
                    .get("Content-Base")
                    .or_else(|| r.headers.get("Content-Location"))
                    .map(str::trim)
                    .filter(|b| b.starts_with("rtsp://") || b.starts_with("RTSP://"))
                    .map_or_else(|| self.url(), str::to_owned);
                // PLAY names the presentation's own control, if it gives one.
                let session_control = SessionDescription::parse(&r.body)
                    .ok()
                    .and_then(|s| s.control().map(str::to_owned));
                self.aggregate = match session_control {
                    Some(c) => resolve(&base, &c),
                    None => base.clone(),
                };
                self.step = Step::Described;
                self.events.push_back(Event::Described {
                    content_type: r.headers.get("Content-Type").map(str::to_owned),
                    sdp: r.body,
                    base,
                });
            }
            Step::Setup(i) => {
                if self.conv.session().is_none() {
                    return self.fail(RelayError::NoSession);
                }
                match self.negotiate(i, &r) {
                    Ok(n) => self.negotiated.push(n),
                    Err(why) => {
                        return self.fail(RelayError::BadTransport {
                            uri: self.streams[i].0.clone(),
                            why,
                        })
                    }
                }
                if i + 1 < self.streams.len() {
                    self.setup(i + 1, now);
                } else {
                    self.step = Step::Play;
                    let req = self
                        .conv
                        .request(Method::Play, self.aggregate.clone())
                        .header("Range", "npt=0.000-");
                    self.conv.send(req, now, false);
                }
            }
            Step::Play => {
                self.step = Step::Playing;
                self.events.push_back(Event::Playing {
                    tracks: self.negotiated.clone(),
                });
            }
            Step::Described | Step::Playing | Step::Teardown | Step::Done => {}
        }
    }

    fn setup(&mut self, i: usize, now: Nanos) {
        self.step = Step::Setup(i);
        let transport = match self.streams[i].1 {
            Carriage::Udp { client_port } => format!("RTP/AVP;unicast;client_port={}-{}", client_port.0, client_port.1),
            Carriage::Tcp => {
                let (a, b) = tcp_channels(i);
                format!("RTP/AVP/TCP;unicast;interleaved={a}-{b}")
            }
        };
        let uri = self.streams[i].0.clone();
        let req = self.conv.request(Method::Setup, uri).header("Transport", transport);
        self.conv.send(req, now, false);
    }

    fn negotiate(&self, i: usize, r: &Response) -> Result<Negotiated, String> {
        let header = r.headers.get("Transport").ok_or("no Transport header")?;
        let t = Transport::parse_list(header)
            .into_iter()
            .find_map(Result::ok)
            .ok_or_else(|| format!("Transport {header:?} is not RTP/AVP"))?;
        match self.streams[i].1 {
            Carriage::Udp { .. } => {
                if t.lower != Lower::Udp {
                    return Err(format!("asked for UDP, got {header:?}"));
                }
                // Where RTCP goes back; a server that names no port gets none.
                Ok(Negotiated::Udp {
                    server_port: t.server_port.unwrap_or((0, 0)),
                })
            }
            Carriage::Tcp => {
                if t.lower != Lower::Tcp {
                    return Err(format!("asked for TCP, got {header:?}"));
                }
                Ok(Negotiated::Tcp {
                    channels: t.interleaved.unwrap_or(tcp_channels(i)),
                })
            }
        }
    }

    fn fail(&mut self, e: RelayError) {
        self.step = Step::Done;
        self.conv.clear_pending();
        self.events.push_back(Event::Failed(e));
    }

    fn finish(&mut self) {
        self.step = Step::Done;
        self.conv.clear_pending();
        self.events.push_back(Event::Closed);
    }
}

/// The address to connect to for `url`: its host (a name is looked up by
/// the caller) and port, 554 when it names none.
pub fn origin_authority(url: &RtspUrl) -> (String, u16) {
    (url.host().trim_matches(['[', ']']).to_owned(), url.port())
}

#[cfg(test)]
mod tests;
