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
//! Credentials come from the URL (`rtsp://USER:PASSWORD@HOST/PATH`) and a
//! 401 is answered as [`crate::rtsp_client`] says, for every request.
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
use proto::rtsp::message::{Method, Response};
use proto::rtsp::status::Status;
use proto::rtsp::url::{resolve, RtspUrl};
use proto::sdp::SessionDescription;

use crate::rtsp_client::{ClientError, Conversation, Incoming, NS_PER_SEC};
pub use crate::rtsp_client::{Nanos, USER_AGENT};

/// How long a request may go unanswered before the publisher gives up.
pub const REPLY_TIMEOUT: Nanos = 10 * NS_PER_SEC;
/// How long TEARDOWN's answer is waited for before the publisher closes.
pub const TEARDOWN_TIMEOUT: Nanos = 2 * NS_PER_SEC;

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

/// The client side of one RTSP publish. See the module documentation.
#[derive(Debug)]
pub struct Publisher {
    conv: Conversation,
    sdp: String,
    /// Per track: the control URL to SETUP.
    controls: Vec<String>,
    carriage: Vec<Carriage>,
    negotiated: Vec<Negotiated>,
    step: Step,
    events: VecDeque<Event>,
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
            conv: Conversation::new(url, seed, now),
            sdp: sdp.to_owned(),
            controls,
            carriage,
            negotiated: Vec::new(),
            step: Step::Options,
            events: VecDeque::new(),
        };
        let req = p.conv.request(Method::Options, p.url());
        p.conv.send(req, now, false);
        Ok(p)
    }

    fn url(&self) -> String {
        self.conv.url().as_str().to_owned()
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
        self.conv.take_output()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Publisher::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Nanos> {
        match (self.conv.pending(), self.step) {
            (_, Step::Done) => None,
            (Some(p), Step::Teardown) => Some(p.sent_at + TEARDOWN_TIMEOUT),
            (Some(p), _) => Some(p.sent_at + REPLY_TIMEOUT),
            (None, Step::Recording) => Some(self.conv.keep_alive_at()),
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
                    // A server that does not answer keep-alives may still
                    // take media; the session's own timeout will tell.
                    self.conv.clear_pending();
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
        if self.step == Step::Recording && now >= self.conv.keep_alive_at() {
            let req = self.conv.request(Method::Options, self.url());
            self.conv.send(req, now, true);
        }
    }

    /// Starts TEARDOWN (or ends at once when nothing was set up).
    pub fn teardown(&mut self, now: Nanos) {
        match self.step {
            Step::Done | Step::Teardown => {}
            _ if self.conv.session().is_none() => self.finish(),
            _ => {
                self.step = Step::Teardown;
                let req = self.conv.request(Method::Teardown, self.url());
                // Whatever was pending is answered or not; TEARDOWN wins.
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
                Some(Ok(Incoming::Answer { pending, response })) => self.response(now, pending, response),
                Some(Err(e)) => return self.fail(e.into()),
            }
        }
    }

    fn response(&mut self, now: Nanos, pending: crate::rtsp_client::Pending, r: Response) {
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
                let url = self.url();
                let mut req = self
                    .conv
                    .request(Method::Announce, url)
                    .header("Content-Type", "application/sdp");
                req.body = self.sdp.clone().into_bytes();
                self.conv.send(req, now, false);
            }
            Step::Announce => {
                self.setup(0, now);
            }
            Step::Setup(i) => {
                if self.conv.session().is_none() {
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
                    let url = self.url();
                    let req = self.conv.request(Method::Record, url).header("Range", "npt=0.000-");
                    self.conv.send(req, now, false);
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
        let uri = self.controls[i].clone();
        let req = self.conv.request(Method::Setup, uri).header("Transport", transport);
        self.conv.send(req, now, false);
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

    fn fail(&mut self, e: PublishError) {
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

/// The interleaved channels asked for track `i`: RTP on `2i`, RTCP on
/// `2i + 1`, as ffmpeg asks.
pub fn tcp_channels(i: usize) -> (u8, u8) {
    let rtp = u8::try_from(2 * i).unwrap_or(254);
    (rtp, rtp.saturating_add(1))
}

impl From<ClientError> for PublishError {
    fn from(e: ClientError) -> PublishError {
        match e {
            ClientError::NoCredentials => PublishError::NoCredentials,
            ClientError::BadCredentials { method } => PublishError::BadCredentials { method },
            ClientError::UnknownChallenge(c) => PublishError::UnknownChallenge(c),
            ClientError::Garbled(g) => PublishError::Garbled(g),
        }
    }
}

#[cfg(test)]
mod tests;
