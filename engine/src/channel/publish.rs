//! Publishing a stream to an RTSP server, the client half of ANNOUNCE and
//! RECORD (RFC 2326 sections 10.3 and 10.11), without IO.
//!
//! [`Publisher`] is driven by the rule every sans-IO core here follows: feed
//! it what the connection read ([`Publisher::handle_input`]) and the clock
//! ([`Publisher::handle_timeout`]), then write what
//! [`Publisher::take_output`] returns, drain [`Publisher::poll_event`] until
//! `None`, and call again no later than [`Publisher::poll_timeout`].
//!
//! The exchange is the one ffmpeg's RTSP muxer and DSS's broadcaster make:
//!
//! 1. `OPTIONS` (servers that need authentication answer 401 here or at the
//!    next request; either way the request is sent again with credentials);
//! 2. `ANNOUNCE` with the stream's SDP;
//! 3. `SETUP` per media section, `mode=record`, over UDP
//!    (`client_port=`, the server answers with `server_port=`) or
//!    interleaved on the RTSP connection (`interleaved=`);
//! 4. `RECORD`; then media flows, and `OPTIONS` with the session keeps the
//!    session alive at half its timeout (RTCP alone does not refresh every
//!    server's session: live555 counts it, GStreamer's server only counts
//!    requests);
//! 5. `TEARDOWN` at the end.
//!
//! # Authentication
//!
//! Credentials come from the URL (`rtsp://USER:PASSWORD@HOST/PATH`). On a 401
//! the publisher answers the strongest challenge it can: Digest (MD5 or
//! SHA-256, with `qop=auth` when offered, else RFC 2069 as GStreamer's and
//! QuickTime-era servers expect), else Basic. Every later request carries
//! credentials for the same challenge (Digest with the nonce count going
//! up). A second 401 for the same nonce means the credentials are wrong; a
//! challenge with `stale=true` is answered again.
//!
//! # What servers do that the RFC does not say
//!
//! - Some servers (GStreamer's, older Wowza) answer SETUP without
//!   `interleaved=` for TCP; the channels asked for are then kept.
//! - The `Session` header may carry `;timeout=N`; when it does not, RFC 2326's
//!   60 s default is assumed.
//! - Servers send RTCP receiver reports back over interleaved channels; they
//!   are handed up as events and never mistaken for a response.

use std::collections::VecDeque;

use proto::rtsp::header::{Lower, Transport};
use proto::rtsp::message::{self, Limits, Message, Method, Request, Response};
use proto::rtsp::status::Status;
use proto::rtsp::url::{resolve, RtspUrl};
use proto::sdp::SessionDescription;

use crate::access::digest::{self, Algorithm, NonceCount};
use crate::access::{basic, header};

/// Nanoseconds on the caller's monotonic clock.
pub type Nanos = u64;

const NS_PER_SEC: u64 = 1_000_000_000;
/// RFC 2326 section 12.37: a session times out after 60 s unless told.
const DEFAULT_SESSION_TIMEOUT: u64 = 60;
/// How long a request may go unanswered before the publisher gives up.
pub const REPLY_TIMEOUT: Nanos = 10 * NS_PER_SEC;
/// How long TEARDOWN's answer is waited for before the publisher closes.
pub const TEARDOWN_TIMEOUT: Nanos = 2 * NS_PER_SEC;
/// The software name sent in `User-Agent`.
pub const USER_AGENT: &str = concat!("Streamalot/", env!("CARGO_PKG_VERSION"));

/// How media is carried to the server, per track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carriage {
    /// UDP from the client's RTP/RTCP port pair to the server's.
    Udp { client_port: (u16, u16) },
    /// Interleaved on the RTSP connection.
    Tcp,
}

/// Where each track's media goes once recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Negotiated {
    /// Send RTP to the server's first port, RTCP to its second.
    Udp { server_port: (u16, u16) },
    /// Frame RTP on the first channel, RTCP on the second.
    Tcp { channels: (u8, u8) },
}

/// What the publisher tells its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// RECORD was accepted: media may flow, each track as negotiated.
    Recording { tracks: Vec<Negotiated> },
    /// An interleaved frame from the server (RTCP receiver reports).
    Interleaved { channel: u8, data: Vec<u8> },
    /// A keep-alive was refused; the session may time out.
    KeepAliveRefused { status: Status },
    /// TEARDOWN was answered (or its wait ran out): close the connection.
    Closed,
    /// The publish cannot go on.
    Failed(PublishError),
}

/// Why publishing failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    #[error("the server answered {method} with {status}")]
    Refused { method: String, status: Status },
    #[error("the server asks for credentials (401) and the URL gives none: use rtsp://USER:PASSWORD@HOST/PATH")]
    NoCredentials,
    #[error("the server refused the credentials for {method} (401 again)")]
    BadCredentials { method: String },
    #[error("the server offers no authentication this client speaks: {0}")]
    UnknownChallenge(String),
    #[error("the server's answer to SETUP of {uri} is unusable: {why}")]
    BadTransport { uri: String, why: String },
    #[error("the server answered SETUP without a Session header")]
    NoSession,
    #[error("the server sent an unreadable message: {0}")]
    Garbled(String),
    #[error("the server did not answer {method} within {secs} s")]
    NoReply { method: String, secs: u64 },
    #[error("the SDP to announce is not valid: {0}")]
    BadSdp(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Options,
    Announce,
    Setup(usize),
    Record,
    Recording,
    Teardown,
    Done,
}

/// A request sent and not yet answered.
#[derive(Debug, Clone)]
struct Pending {
    request: Request,
    sent_at: Nanos,
    /// Whether this one already carried credentials for a fresh challenge.
    retried: bool,
    keep_alive: bool,
}

#[derive(Debug, Clone)]
enum Credentials {
    Basic(String),
    Digest {
        algorithm: Algorithm,
        realm: String,
        nonce: String,
        opaque: Option<String>,
        qop: bool,
        count: u32,
    },
}

/// The client side of one RTSP publish. See the module documentation.
#[derive(Debug)]
pub struct Publisher {
    url: RtspUrl,
    sdp: String,
    /// Per track: the control URL to SETUP.
    controls: Vec<String>,
    carriage: Vec<Carriage>,
    negotiated: Vec<Negotiated>,
    step: Step,
    cseq: u32,
    session: Option<String>,
    keep_alive_every: Nanos,
    last_request: Nanos,
    pending: Option<Pending>,
    credentials: Option<Credentials>,
    /// For cnonces: a counter mixed with the caller's seed.
    cnonce_seed: u64,
    input: Vec<u8>,
    output: Vec<u8>,
    events: VecDeque<Event>,
    limits: Limits,
}

impl Publisher {
    /// A publisher of `sdp` to `url`, each media section carried as
    /// `carriage` says (one entry per `m=` line). `seed` makes the Digest
    /// cnonces; `now` is the caller's clock. The first request is queued at
    /// once.
    pub fn new(
        url: RtspUrl,
        sdp: &str,
        carriage: Vec<Carriage>,
        seed: u64,
        now: Nanos,
    ) -> Result<Publisher, PublishError> {
        let parsed = SessionDescription::parse(sdp.as_bytes()).map_err(|e| PublishError::BadSdp(e.to_string()))?;
        if parsed.media.len() != carriage.len() {
            return Err(PublishError::BadSdp(format!(
                "{} media sections and {} transports",
                parsed.media.len(),
                carriage.len()
            )));
        }
        // The base for relative controls: the URL announced to, which is
        // what the server takes as the presentation's (ffmpeg and GStreamer
        // send no Content-Base with ANNOUNCE either).
        let base = parsed
            .control()
            .map(|c| resolve(url.as_str(), c))
            .filter(|c| c.starts_with("rtsp://") || c.starts_with("RTSP://"))
            .unwrap_or_else(|| url.as_str().to_owned());
        let controls = parsed
            .media
            .iter()
            .enumerate()
            .map(|(i, m)| match m.control() {
                Some(c) => resolve(&base, c),
                None => resolve(&base, &format!("streamid={i}")),
            })
            .collect();
        let mut p = Publisher {
            url,
            sdp: sdp.to_owned(),
            controls,
            carriage,
            negotiated: Vec::new(),
            step: Step::Options,
            cseq: 0,
            session: None,
            keep_alive_every: DEFAULT_SESSION_TIMEOUT * NS_PER_SEC / 2,
            last_request: now,
            pending: None,
            credentials: None,
            cnonce_seed: seed,
            input: Vec::new(),
            output: Vec::new(),
            events: VecDeque::new(),
            limits: Limits::default(),
        };
        let req = p.request(Method::Options, p.url.as_str().to_owned());
        p.send(req, now, false);
        Ok(p)
    }

    /// The control URL of each track, in SDP order.
    pub fn controls(&self) -> &[String] {
        &self.controls
    }

    /// Whether media may flow.
    pub fn is_recording(&self) -> bool {
        self.step == Step::Recording
    }

    /// Bytes to write to the connection, in order (empty when none).
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.output)
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Publisher::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Nanos> {
        match (&self.pending, self.step) {
            (_, Step::Done) => None,
            (Some(p), Step::Teardown) => Some(p.sent_at + TEARDOWN_TIMEOUT),
            (Some(p), _) => Some(p.sent_at + REPLY_TIMEOUT),
            (None, Step::Recording) => Some(self.last_request + self.keep_alive_every),
            (None, _) => None,
        }
    }

    /// Keep-alives and reply timeouts.
    pub fn handle_timeout(&mut self, now: Nanos) {
        if let Some(p) = &self.pending {
            let limit = if self.step == Step::Teardown {
                TEARDOWN_TIMEOUT
            } else {
                REPLY_TIMEOUT
            };
            if now >= p.sent_at + limit {
                if self.step == Step::Teardown {
                    self.finish();
                } else if p.keep_alive {
                    // A server that does not answer keep-alives may still
                    // take media; the session's own timeout will tell.
                    self.pending = None;
                } else {
                    let method = p.request.method.to_string();
                    self.fail(PublishError::NoReply {
                        method,
                        secs: REPLY_TIMEOUT / NS_PER_SEC,
                    });
                }
            }
            return;
        }
        if self.step == Step::Recording && now >= self.last_request + self.keep_alive_every {
            let req = self.request(Method::Options, self.url.as_str().to_owned());
            self.send(req, now, true);
        }
    }

    /// Starts TEARDOWN (or ends at once when nothing was set up).
    pub fn teardown(&mut self, now: Nanos) {
        match self.step {
            Step::Done | Step::Teardown => {}
            _ if self.session.is_none() => self.finish(),
            _ => {
                self.step = Step::Teardown;
                let req = self.request(Method::Teardown, self.url.as_str().to_owned());
                // Whatever was pending is answered or not; TEARDOWN wins.
                self.pending = None;
                self.send(req, now, false);
            }
        }
    }

    /// Bytes read from the connection.
    pub fn handle_input(&mut self, now: Nanos, bytes: &[u8]) {
        self.input.extend_from_slice(bytes);
        loop {
            if self.step == Step::Done {
                self.input.clear();
                return;
            }
            let (msg, used) = match message::parse(&self.input, &self.limits) {
                Ok(Some(x)) => x,
                Ok(None) => return,
                Err(e) => {
                    self.input.clear();
                    return self.fail(PublishError::Garbled(e.to_string()));
                }
            };
            self.input.drain(..used);
            match msg {
                Message::Interleaved { channel, data } => self.events.push_back(Event::Interleaved { channel, data }),
                Message::Response(r) => self.response(now, r),
                // A server may send requests (GET_PARAMETER keep-alive
                // probes, ANNOUNCE of a change); nothing here needs them, and
                // the RFC wants an answer.
                Message::Request(r) => {
                    Response::new(Status::NOT_IMPLEMENTED, r.cseq()).write_to(&mut self.output);
                }
            }
        }
    }

    /// The request for `method` with the next CSeq, the session and
    /// credentials.
    fn request(&mut self, method: Method, uri: String) -> Request {
        self.cseq += 1;
        let mut r = Request::new(method, uri)
            .header("CSeq", self.cseq.to_string())
            .header("User-Agent", USER_AGENT);
        if let Some(s) = &self.session {
            r = r.header("Session", s.clone());
        }
        r
    }

    fn send(&mut self, mut request: Request, now: Nanos, keep_alive: bool) {
        if let Some(auth) = self.authorization(&request) {
            request.headers.push("Authorization", auth);
        }
        request.write_to(&mut self.output);
        self.last_request = now;
        self.pending = Some(Pending {
            request,
            sent_at: now,
            retried: false,
            keep_alive,
        });
    }

    /// The `Authorization` value for `request`, when credentials are known.
    fn authorization(&mut self, request: &Request) -> Option<String> {
        let user = self.url.user()?.to_owned();
        let password = self.url.password().unwrap_or("").to_owned();
        let cnonce = self.next_cnonce();
        match self.credentials.as_mut()? {
            Credentials::Basic(value) => Some(value.clone()),
            Credentials::Digest {
                algorithm,
                realm,
                nonce,
                opaque,
                qop,
                count,
            } => {
                *count += 1;
                let ha1 = digest::ha1(algorithm.hash(), &user, realm, &password);
                let answer = digest::Response {
                    username: user.clone(),
                    realm: realm.clone(),
                    nonce: nonce.clone(),
                    uri: request.uri.clone(),
                    response: String::new(),
                    algorithm: *algorithm,
                    qop: qop.then(|| NonceCount {
                        text: format!("{count:08x}"),
                        value: *count,
                    }),
                    cnonce: qop.then(|| cnonce.clone()),
                    opaque: opaque.clone(),
                };
                let response = answer.expected(request.method.as_str(), &ha1);
                let mut v = String::from("Digest ");
                let mut field = |name: &str, value: &str, quoted: bool| {
                    if !v.ends_with(' ') {
                        v.push_str(", ");
                    }
                    if quoted {
                        v.push_str(&header::quoted_param(name, value));
                    } else {
                        v.push_str(name);
                        v.push('=');
                        v.push_str(value);
                    }
                };
                field("username", &user, true);
                field("realm", realm, true);
                field("nonce", nonce, true);
                field("uri", &request.uri, true);
                field("response", &response, true);
                field("algorithm", algorithm.name(), false);
                if let Some(o) = opaque {
                    field("opaque", o, true);
                }
                if let Some(nc) = &answer.qop {
                    field("qop", "auth", false);
                    field("nc", &nc.text, false);
                    field("cnonce", &cnonce, true);
                }
                Some(v)
            }
        }
    }

    fn next_cnonce(&mut self) -> String {
        // SplitMix64: unpredictable enough for a cnonce, which only has to
        // differ between requests.
        self.cnonce_seed = self.cnonce_seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.cnonce_seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        format!("{:016x}", z ^ (z >> 31))
    }

    fn response(&mut self, now: Nanos, r: Response) {
        let Some(pending) = self.pending.take() else {
            // An answer to nothing (a duplicate): ignored.
            return;
        };
        if r.status == Status::UNAUTHORIZED {
            return self.unauthorized(now, pending, &r);
        }
        if pending.keep_alive {
            if !r.status.is_success() {
                self.events.push_back(Event::KeepAliveRefused { status: r.status });
            }
            return;
        }
        if self.step == Step::Teardown {
            return self.finish();
        }
        if !r.status.is_success() {
            // OPTIONS is a courtesy: a server that does not do it may still
            // take the ANNOUNCE.
            if self.step != Step::Options {
                return self.fail(PublishError::Refused {
                    method: pending.request.method.to_string(),
                    status: r.status,
                });
            }
        }
        match self.step {
            Step::Options => {
                self.step = Step::Announce;
                let mut req = self
                    .request(Method::Announce, self.url.as_str().to_owned())
                    .header("Content-Type", "application/sdp");
                req.body = self.sdp.clone().into_bytes();
                self.send(req, now, false);
            }
            Step::Announce => {
                self.session_from(&r);
                self.setup(0, now);
            }
            Step::Setup(i) => {
                self.session_from(&r);
                if self.session.is_none() {
                    return self.fail(PublishError::NoSession);
                }
                match self.negotiate(i, &r) {
                    Ok(n) => self.negotiated.push(n),
                    Err(why) => {
                        return self.fail(PublishError::BadTransport {
                            uri: self.controls[i].clone(),
                            why,
                        })
                    }
                }
                if i + 1 < self.controls.len() {
                    self.setup(i + 1, now);
                } else {
                    self.step = Step::Record;
                    let req = self
                        .request(Method::Record, self.url.as_str().to_owned())
                        .header("Range", "npt=0.000-");
                    self.send(req, now, false);
                }
            }
            Step::Record => {
                self.step = Step::Recording;
                self.events.push_back(Event::Recording {
                    tracks: self.negotiated.clone(),
                });
            }
            Step::Recording | Step::Teardown | Step::Done => {}
        }
    }

    fn setup(&mut self, i: usize, now: Nanos) {
        self.step = Step::Setup(i);
        let transport = match self.carriage[i] {
            Carriage::Udp { client_port } => format!(
                "RTP/AVP/UDP;unicast;client_port={}-{};mode=record",
                client_port.0, client_port.1
            ),
            Carriage::Tcp => {
                let (a, b) = tcp_channels(i);
                format!("RTP/AVP/TCP;unicast;interleaved={a}-{b};mode=record")
            }
        };
        let req = self
            .request(Method::Setup, self.controls[i].clone())
            .header("Transport", transport);
        self.send(req, now, false);
    }

    fn negotiate(&self, i: usize, r: &Response) -> Result<Negotiated, String> {
        let header = r.headers.get("Transport").ok_or("no Transport header")?;
        let t = Transport::parse_list(header)
            .into_iter()
            .find_map(Result::ok)
            .ok_or_else(|| format!("Transport {header:?} is not RTP/AVP"))?;
        match self.carriage[i] {
            Carriage::Udp { .. } => {
                if t.lower != Lower::Udp {
                    return Err(format!("asked for UDP, got {header:?}"));
                }
                let server_port = t.server_port.ok_or_else(|| format!("no server_port in {header:?}"))?;
                Ok(Negotiated::Udp { server_port })
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

    fn session_from(&mut self, r: &Response) {
        let Some(value) = r.headers.get("Session") else { return };
        let mut parts = value.split(';').map(str::trim);
        let id = parts.next().unwrap_or_default();
        if id.is_empty() {
            return;
        }
        self.session = Some(id.to_owned());
        // A later answer that gives the session without its timeout does
        // not change it (GStreamer's server gives it with the first SETUP
        // only).
        let timeout = parts
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("timeout"))
            .and_then(|(_, v)| v.trim().parse::<u64>().ok())
            .filter(|&t| t > 0);
        if let Some(timeout) = timeout {
            // Half the timeout, but at least a second apart.
            self.keep_alive_every = (timeout * NS_PER_SEC / 2).max(NS_PER_SEC);
        }
    }

    fn unauthorized(&mut self, now: Nanos, pending: Pending, r: &Response) {
        let method = pending.request.method.to_string();
        if self.url.user().is_none() {
            return self.fail(PublishError::NoCredentials);
        }
        let challenges: Vec<&str> = r
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("WWW-Authenticate"))
            .map(|(_, v)| v)
            .collect();
        let chosen = match choose(&challenges) {
            Ok(c) => c,
            Err(e) => return self.fail(e),
        };
        // A retry with credentials for this very challenge was refused: the
        // credentials are wrong (a stale nonce says so and is answered).
        let (mut credentials, stale) = chosen;
        if pending.retried && !stale {
            return self.fail(PublishError::BadCredentials { method });
        }
        let user = self.url.user().unwrap_or_default().to_owned();
        credentials.fill_basic(&user, self.url.password().unwrap_or(""));
        self.credentials = Some(credentials);
        // The same request again, with a new CSeq and the credentials.
        let mut req = pending.request.clone();
        self.cseq += 1;
        req.headers = proto::rtsp::message::Headers::default();
        for (n, v) in pending.request.headers.iter() {
            if n.eq_ignore_ascii_case("CSeq") {
                req.headers.push("CSeq", self.cseq.to_string());
            } else if !n.eq_ignore_ascii_case("Authorization") {
                req.headers.push(n, v);
            }
        }
        let keep_alive = pending.keep_alive;
        self.send(req, now, keep_alive);
        if let Some(p) = &mut self.pending {
            p.retried = true;
        }
    }

    fn fail(&mut self, e: PublishError) {
        self.step = Step::Done;
        self.pending = None;
        self.events.push_back(Event::Failed(e));
    }

    fn finish(&mut self) {
        self.step = Step::Done;
        self.pending = None;
        self.events.push_back(Event::Closed);
    }
}

/// The interleaved channels asked for track `i`: RTP on `2i`, RTCP on
/// `2i + 1`, as ffmpeg asks.
pub fn tcp_channels(i: usize) -> (u8, u8) {
    let rtp = u8::try_from(2 * i).unwrap_or(254);
    (rtp, rtp.saturating_add(1))
}

/// The challenge to answer: the first Digest with an algorithm known here,
/// else Basic. Returns the credentials to use and whether the challenge
/// said `stale=true`.
fn choose(challenges: &[&str]) -> Result<(Credentials, bool), PublishError> {
    let mut basic_realm = None;
    for c in challenges {
        let Ok((scheme, rest)) = header::split_scheme(c) else {
            continue;
        };
        if scheme.eq_ignore_ascii_case("Digest") {
            let Ok(params) = header::parse_params(rest) else {
                continue;
            };
            let get = |name: &str| params.iter().find(|p| p.name == name).map(|p| p.value.clone());
            let algorithm = match get("algorithm") {
                None => Algorithm::Md5,
                Some(a) => match Algorithm::parse(&a) {
                    Some(a) => a,
                    None => continue,
                },
            };
            let (Some(realm), Some(nonce)) = (get("realm"), get("nonce")) else {
                continue;
            };
            let qop = get("qop").is_some_and(|q| q.split(',').any(|v| v.trim().eq_ignore_ascii_case("auth")));
            // The -sess variants need a cnonce, which only qop carries.
            if algorithm.is_sess() && !qop {
                continue;
            }
            let stale = get("stale").is_some_and(|s| s.eq_ignore_ascii_case("true"));
            return Ok((
                Credentials::Digest {
                    algorithm,
                    realm,
                    nonce,
                    opaque: get("opaque"),
                    qop,
                    count: 0,
                },
                stale,
            ));
        }
        if scheme.eq_ignore_ascii_case("Basic") {
            basic_realm.get_or_insert(());
        }
    }
    match basic_realm {
        Some(()) => Ok((Credentials::Basic(String::new()), false)),
        None => Err(PublishError::UnknownChallenge(challenges.join(" | "))),
    }
}

impl Credentials {
    /// Basic's value, made once the user name is known.
    fn fill_basic(&mut self, user: &str, password: &str) {
        if let Credentials::Basic(v) = self {
            *v = basic::authorization(user, password);
        }
    }
}

#[cfg(test)]
mod tests;
