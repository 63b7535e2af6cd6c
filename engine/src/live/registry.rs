//! The control core's broadcasts: one publisher session per path, from its
//! ANNOUNCE to its TEARDOWN (or its connection's end, or its silence), as
//! protocol logic without IO. The driver executes what it returns: it binds
//! the UDP pair a record SETUP asks for, tells the shards a broadcast
//! started or ended, and moves the packets [`Ingest`] takes.
//!
//! The publisher's requests, in the order RFC 2326 (10.3, 10.11) and every
//! real publisher send them:
//!
//! 1. ANNOUNCE with the SDP: 415 if the body is not SDP, 400 if it does not
//!    parse, 406 if it has no stream to reflect, 455 if another publisher
//!    has the path (unless the server replaces publishers). The answer
//!    names the new session.
//! 2. SETUP of each stream with `mode=record`: interleaved channels, or
//!    the publisher's `client_port` and a `server_port` pair of the
//!    server's to send to (461 otherwise).
//! 3. RECORD: the broadcast is on the air (455 before any SETUP).
//! 4. TEARDOWN, or the connection's end: it is over.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use proto::rtsp::header::{Lower as Wire, Transport};
use proto::rtsp::message::{Method, Request, Response};

use super::describe::{self, Description};
use super::ingest::Ingest;
use super::{BroadcastId, SILENCE_TIMEOUT};
use crate::access_log::AccessRecord;
use crate::pacer::{KeyMap, SessionKey};
use crate::source::Nanos;

/// How one stream reaches the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// `$` frames on the publisher's RTSP connection.
    Tcp { rtp_channel: u8, rtcp_channel: u8 },
    /// Datagrams from the publisher's `client` pair to the server's pair.
    Udp { client: (u16, u16), server: (u16, u16) },
}

/// What a record SETUP asks for, before the server binds anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted {
    Tcp(u8, u8),
    Udp(u16, u16),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Announced,
    Recording,
}

/// A publisher's session.
#[derive(Debug)]
pub struct Publisher {
    pub key: SessionKey,
    pub session_id: String,
    pub client: SocketAddr,
    pub user: String,
    pub user_agent: Option<String>,
    pub desc: Arc<Description>,
    pub phase: Phase,
    /// Per stream of the description, how it comes, once set up.
    pub paths: Vec<Option<Path>>,
    pub ingest: Ingest,
    pub started: Nanos,
    pub last_request: Nanos,
    /// For a relay, the origin's URL (without credentials).
    pub origin: Option<String>,
    /// It continues a broadcast whose publisher left within the grace.
    pub resumed: bool,
    /// For a relay, the streams whose RTCP said BYE (one bit each): all of
    /// them, and the origin's stream is over (a movie's end).
    pub byes: u32,
    /// One of the server's own channels: it has no connection, is never
    /// silent for long, and ends only when the channel stops.
    pub channel: bool,
}

impl Publisher {
    /// The stream and whether it is RTCP, of interleaved channel `channel`.
    pub fn channel(&self, channel: u8) -> Option<(usize, bool)> {
        self.paths.iter().enumerate().find_map(|(i, p)| match p {
            Some(Path::Tcp { rtp_channel, .. }) if *rtp_channel == channel => Some((i, false)),
            Some(Path::Tcp { rtcp_channel, .. }) if *rtcp_channel == channel => Some((i, true)),
            _ => None,
        })
    }

    /// Whether every stream's RTCP said BYE.
    pub fn all_said_bye(&self) -> bool {
        self.byes.count_ones() as usize >= self.desc.tracks.len()
    }

    /// Whether any stream comes over UDP.
    pub fn uses_udp(&self) -> bool {
        self.paths.iter().any(|p| matches!(p, Some(Path::Udp { .. })))
    }

    /// Its access-log line, at its end `now`: what it sent in, as bytes and
    /// packets.
    pub fn record(&self, now: Nanos, status: u16) -> AccessRecord {
        AccessRecord {
            client: self.client.ip(),
            uri: self.desc.path.clone(),
            duration: Duration::from_nanos(now.saturating_sub(self.started)),
            status,
            user_agent: self.user_agent.clone(),
            bytes: self.ingest.counters.bytes,
            packets: self.ingest.counters.packets,
            transport: match (self.origin.is_some(), self.uses_udp()) {
                (true, true) => "relay-udp",
                (true, false) => "relay-tcp",
                (false, true) => "publish-udp",
                (false, false) => "publish-tcp",
            },
            ..AccessRecord::default()
        }
    }
}

/// A broadcast whose publisher left, waiting out the grace for it to come
/// back; its viewers wait too.
#[derive(Debug)]
pub struct Waiting {
    pub desc: Arc<Description>,
    pub until: Nanos,
    /// Per stream, the newest timestamp viewers were sent and when it came.
    pub last: Vec<Option<(u32, Nanos)>>,
}

/// Whether `new` can continue `old`: the same streams in the same order,
/// each of the same kind, clock, codec and payload types (viewers were
/// told them at their DESCRIBE).
pub fn compatible(old: &Description, new: &Description) -> bool {
    old.tracks.len() == new.tracks.len()
        && old.tracks.iter().zip(&new.tracks).all(|(a, b)| {
            a.kind == b.kind && a.clock_rate == b.clock_rate && a.codec == b.codec && a.payload_types == b.payload_types
        })
}

/// The control core's publishers.
#[derive(Debug)]
pub struct Registry {
    publishers: KeyMap<SessionKey, Publisher>,
    by_path: HashMap<String, SessionKey>,
    next_id: BroadcastId,
    /// A second publisher to a busy path replaces the first.
    replace: bool,
    max_bitrate: u64,
    /// How long an announced broadcast waits for its RECORD, and the
    /// timeout announced in the `Session` header.
    session_timeout_secs: u64,
    /// How long a broadcast whose publisher left waits for it.
    grace: Nanos,
    waiting: HashMap<String, Waiting>,
    /// Broadcasts over since [`Registry::take_over`], for the shards.
    over: Vec<BroadcastId>,
}

impl Registry {
    pub fn new(replace: bool, max_bitrate: u64, session_timeout_secs: u64) -> Registry {
        Registry {
            publishers: KeyMap::default(),
            by_path: HashMap::new(),
            next_id: 1,
            replace,
            max_bitrate,
            session_timeout_secs,
            grace: 0,
            waiting: HashMap::new(),
            over: Vec::new(),
        }
    }

    /// Broadcasts wait `grace` for a publisher that left.
    pub fn with_grace(mut self, grace: Nanos) -> Registry {
        self.grace = grace;
        self
    }

    /// A publisher gone, without a successor yet: its broadcast waits out
    /// the grace (`true`), or is over (`false`: no grace, or it was never
    /// on the air).
    pub fn leave(&mut self, p: &Publisher, now: Nanos) -> bool {
        if self.grace == 0 || p.phase != Phase::Recording || self.by_path.contains_key(&p.desc.path) {
            return false;
        }
        let waiting = Waiting {
            desc: p.desc.clone(),
            until: now.saturating_add(self.grace),
            last: p.ingest.last_timestamps(),
        };
        if let Some(old) = self.waiting.insert(p.desc.path.clone(), waiting) {
            if old.desc.id != p.desc.id {
                self.over.push(old.desc.id);
            }
        }
        true
    }

    /// The broadcasts waiting for their publishers.
    pub fn waiting(&self) -> impl Iterator<Item = &Waiting> {
        self.waiting.values()
    }

    /// Broadcasts over since the last call: their shards are to be told.
    /// Those whose grace ran out by `now` are among them.
    pub fn take_over(&mut self, now: Nanos) -> Vec<BroadcastId> {
        let done: Vec<String> = self
            .waiting
            .iter()
            .filter(|(_, w)| now >= w.until)
            .map(|(path, _)| path.clone())
            .collect();
        for path in done {
            if let Some(w) = self.waiting.remove(&path) {
                tracing::info!(path, "the publisher did not come back within the grace; broadcast over");
                self.over.push(w.desc.id);
            }
        }
        std::mem::take(&mut self.over)
    }

    /// For a new publisher of `desc.path`: the broadcast waiting there, if
    /// `desc` can continue it (then `desc` takes its number, and the
    /// ingest its clock); one that cannot is over.
    fn resume(&mut self, desc: &mut Description, ingest: &mut Ingest) -> bool {
        let Some(w) = self.waiting.remove(&desc.path) else {
            return false;
        };
        if !compatible(&w.desc, desc) {
            tracing::info!(path = %desc.path, "a publisher came back with other streams; the old broadcast is over");
            self.over.push(w.desc.id);
            return false;
        }
        desc.id = w.desc.id;
        ingest.continue_from(&w.last);
        tracing::info!(path = %desc.path, "the publisher came back within the grace; the broadcast goes on");
        true
    }

    pub fn is_publisher(&self, key: SessionKey) -> bool {
        self.publishers.contains_key(&key)
    }

    pub fn get(&self, key: SessionKey) -> Option<&Publisher> {
        self.publishers.get(&key)
    }

    pub fn get_mut(&mut self, key: SessionKey) -> Option<&mut Publisher> {
        self.publishers.get_mut(&key)
    }

    pub fn len(&self) -> usize {
        self.publishers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.publishers.is_empty()
    }

    pub fn publishers(&self) -> impl Iterator<Item = &Publisher> {
        self.publishers.values()
    }

    /// The broadcast on the air at `path`.
    pub fn on_air(&self, path: &str) -> Option<&Arc<Description>> {
        let p = self.publishers.get(self.by_path.get(path)?)?;
        (p.phase == Phase::Recording).then_some(&p.desc)
    }

    fn session_header(&self, p: &Publisher) -> String {
        format!("{};timeout={}", p.session_id, self.session_timeout_secs)
    }

    /// An ANNOUNCE of `path` from `client` by `user`, as session `key` (a
    /// key the caller drew, no other session's). The answer, and the
    /// publisher it replaced if the server replaces publishers.
    pub fn announce(
        &mut self,
        key: SessionKey,
        path: &str,
        req: &Request,
        client: SocketAddr,
        user: String,
        now: Nanos,
    ) -> (Response, Option<Publisher>) {
        let cseq = req.cseq();
        let desc = match describe::parse(self.next_id, path, req.headers.get("Content-Type"), &req.body) {
            Ok(d) => d,
            Err(e) => {
                tracing::info!(%client, path, error = %e, "ANNOUNCE refused");
                return (Response::new(e.status(), cseq), None);
            }
        };
        let mut replaced = None;
        if let Some(&old) = self.by_path.get(path) {
            if !self.replace {
                tracing::info!(%client, path, "ANNOUNCE refused: another publisher has the path");
                return (Response::new(455, cseq), None);
            }
            replaced = self.remove(old);
        }
        self.next_id += 1;
        let mut desc = desc;
        // The ingest's clock is set by the description's streams, which a
        // resumed broadcast keeps.
        let mut ingest = Ingest::new(Arc::new(desc.clone()), self.max_bitrate, now);
        let resumed = self.resume(&mut desc, &mut ingest);
        let desc = Arc::new(desc);
        let tracks = desc.tracks.len();
        let mut publisher = Publisher {
            key,
            session_id: crate::door::session_id(key),
            client,
            user,
            user_agent: req.headers.get("User-Agent").map(str::to_owned),
            ingest,
            desc,
            phase: Phase::Announced,
            paths: vec![None; tracks],
            started: now,
            last_request: now,
            origin: None,
            byes: 0,
            resumed: false,
            channel: false,
        };
        publisher.resumed = resumed;
        let response = Response::new(200, cseq).header("Session", self.session_header(&publisher));
        self.by_path.insert(path.to_owned(), key);
        self.publishers.insert(key, publisher);
        (response, replaced)
    }

    /// A number for a new broadcast.
    pub fn take_id(&mut self) -> BroadcastId {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Puts the broadcast an `.sdp` file describes on the air as session
    /// `key`: a publisher without a connection, whose streams arrive on the
    /// port pairs `listen` names.
    pub fn open_source(
        &mut self,
        key: SessionKey,
        desc: Description,
        listen: &[super::sdp_source::Listen],
        now: Nanos,
    ) -> Arc<Description> {
        let desc = Arc::new(desc);
        let mut paths = vec![None; desc.tracks.len()];
        for l in listen {
            if let Some(p) = paths.get_mut(l.track) {
                *p = Some(Path::Udp {
                    client: (0, 0),
                    server: (l.port, l.port.wrapping_add(1)),
                });
            }
        }
        let publisher = Publisher {
            key,
            session_id: crate::door::session_id(key),
            client: SocketAddr::from(([0, 0, 0, 0], 0)),
            user: "(sdp file)".into(),
            user_agent: None,
            ingest: Ingest::new(desc.clone(), self.max_bitrate, now),
            desc: desc.clone(),
            phase: Phase::Recording,
            paths,
            started: now,
            last_request: now,
            origin: None,
            byes: 0,
            resumed: false,
            channel: false,
        };
        self.by_path.insert(desc.path.clone(), key);
        self.publishers.insert(key, publisher);
        desc
    }

    /// A relay's publisher, session `key`, of the origin `origin` (at
    /// `client`) whose streams come by `paths`: not on the air until
    /// [`Registry::record`]. `None` if the path has a publisher.
    pub fn open_relay(
        &mut self,
        key: SessionKey,
        desc: Description,
        client: SocketAddr,
        origin: String,
        paths: Vec<Path>,
        now: Nanos,
    ) -> Option<Arc<Description>> {
        if self.by_path.contains_key(&desc.path) {
            return None;
        }
        let mut desc = desc;
        let mut ingest = Ingest::new(Arc::new(desc.clone()), self.max_bitrate, now);
        let resumed = self.resume(&mut desc, &mut ingest);
        let desc = Arc::new(desc);
        let publisher = Publisher {
            key,
            session_id: crate::door::session_id(key),
            client,
            user: "(relay)".into(),
            user_agent: None,
            ingest,
            desc: desc.clone(),
            phase: Phase::Announced,
            paths: paths.into_iter().map(Some).collect(),
            started: now,
            last_request: now,
            origin: Some(origin),
            byes: 0,
            resumed,
            channel: false,
        };
        self.by_path.insert(desc.path.clone(), key);
        self.publishers.insert(key, publisher);
        Some(desc)
    }

    /// Puts publisher `key` on the air, as RECORD does: its description,
    /// or `None` if it is gone or on the air already.
    pub fn record(&mut self, key: SessionKey, now: Nanos) -> Option<Arc<Description>> {
        let p = self.publishers.get_mut(&key)?;
        if p.phase == Phase::Recording {
            return None;
        }
        p.phase = Phase::Recording;
        p.ingest.last_packet = now;
        p.last_request = now;
        Some(p.desc.clone())
    }

    /// Puts one of the server's channels on the air as session `key`: a
    /// publisher without a connection or ports, whose packets the channel's
    /// driver hands to [`Ingest`] itself. A publisher already at the path
    /// is returned, to be ended.
    pub fn open_channel(
        &mut self,
        key: SessionKey,
        desc: Description,
        now: Nanos,
    ) -> (Arc<Description>, Option<Publisher>) {
        let replaced = self.by_path.get(&desc.path).copied().and_then(|old| self.remove(old));
        let desc = Arc::new(desc);
        let publisher = Publisher {
            key,
            session_id: crate::door::session_id(key),
            client: SocketAddr::from(([0, 0, 0, 0], 0)),
            user: "(channel)".into(),
            user_agent: None,
            ingest: Ingest::new(desc.clone(), self.max_bitrate, now),
            desc: desc.clone(),
            phase: Phase::Recording,
            paths: vec![None; desc.tracks.len()],
            started: now,
            last_request: now,
            origin: None,
            byes: 0,
            resumed: false,
            channel: true,
        };
        self.by_path.insert(desc.path.clone(), key);
        self.publishers.insert(key, publisher);
        (desc, replaced)
    }

    /// What a record SETUP for session `key` asks for: the stream and its
    /// transport, or the refusal.
    pub fn wanted(&self, key: SessionKey, req: &Request) -> Result<(usize, Wanted), Response> {
        let cseq = req.cseq();
        let p = self.publishers.get(&key).ok_or_else(|| Response::new(454, cseq))?;
        if p.phase == Phase::Recording {
            return Err(Response::new(455, cseq));
        }
        let track = p
            .desc
            .track_for_setup(&req.uri)
            .ok_or_else(|| Response::new(404, cseq))?;
        let header = req.headers.get("Transport").ok_or_else(|| Response::new(461, cseq))?;
        for t in Transport::parse_list(header).into_iter().flatten() {
            if !t.record || t.multicast {
                continue;
            }
            match t.lower {
                Wire::Tcp => {
                    let (a, b) = t.interleaved.unwrap_or((track as u8 * 2, track as u8 * 2 + 1));
                    let clash = p.paths.iter().enumerate().any(|(i, x)| {
                        i != track
                            && matches!(x, Some(Path::Tcp { rtp_channel, rtcp_channel })
                                if [*rtp_channel, *rtcp_channel].iter().any(|c| *c == a || *c == b))
                    });
                    if clash || a == b {
                        continue;
                    }
                    return Ok((track, Wanted::Tcp(a, b)));
                }
                Wire::Udp => match t.client_port {
                    Some((rtp, rtcp)) if rtp != 0 => return Ok((track, Wanted::Udp(rtp, rtcp))),
                    _ => continue,
                },
            }
        }
        Err(Response::new(461, cseq))
    }

    /// Sets stream `track` of session `key` up to come by `path` (with the
    /// SSRC the SETUP named, if any), and answers the SETUP.
    pub fn set_up(&mut self, key: SessionKey, req: &Request, track: usize, path: Path, now: Nanos) -> Response {
        let cseq = req.cseq();
        let ssrc = req
            .headers
            .get("Transport")
            .and_then(|h| Transport::parse_list(h).into_iter().flatten().find(|t| t.record))
            .and_then(|t| t.ssrc);
        let Some(p) = self.publishers.get_mut(&key) else {
            return Response::new(454, cseq);
        };
        p.paths[track] = Some(path);
        p.last_request = now;
        if let Some(ssrc) = ssrc {
            p.ingest.expect_ssrc(track, ssrc);
        }
        let transport = match path {
            Path::Tcp {
                rtp_channel,
                rtcp_channel,
            } => format!("RTP/AVP/TCP;unicast;interleaved={rtp_channel}-{rtcp_channel};mode=record"),
            Path::Udp { client, server } => format!(
                "RTP/AVP/UDP;unicast;client_port={}-{};server_port={}-{};mode=record",
                client.0, client.1, server.0, server.1
            ),
        };
        let session = format!("{};timeout={}", p.session_id, self.session_timeout_secs);
        Response::new(200, cseq)
            .header("Session", session)
            .header("Transport", transport)
    }

    /// A request naming publisher session `key` other than SETUP: RECORD
    /// puts the broadcast on the air (the description is returned then),
    /// TEARDOWN ends it (the publisher is returned), keep-alives are
    /// answered.
    pub fn request(
        &mut self,
        key: SessionKey,
        req: &Request,
        now: Nanos,
    ) -> (Response, Option<Arc<Description>>, Option<Publisher>) {
        let cseq = req.cseq();
        let timeout = self.session_timeout_secs;
        let Some(p) = self.publishers.get_mut(&key) else {
            return (Response::new(454, cseq), None, None);
        };
        p.last_request = now;
        let ok = Response::new(200, cseq).header("Session", format!("{};timeout={timeout}", p.session_id));
        match req.method {
            Method::Record => {
                if p.paths.iter().all(Option::is_none) {
                    return (Response::new(455, cseq), None, None);
                }
                if p.phase == Phase::Recording {
                    return (ok, None, None);
                }
                p.phase = Phase::Recording;
                // The broadcast's clock starts now: silence is counted from here.
                p.ingest.last_packet = now;
                tracing::info!(path = %p.desc.path, client = %p.client, user = %p.user, streams = p.desc.tracks.len(), "broadcast on the air");
                let desc = p.desc.clone();
                (ok, Some(desc), None)
            }
            Method::Teardown => {
                let gone = self.remove(key);
                (ok, None, gone)
            }
            Method::GetParameter | Method::SetParameter | Method::Options => (ok, None, None),
            Method::Announce => (Response::new(455, cseq), None, None),
            Method::Play | Method::Pause | Method::Describe => (Response::new(455, cseq), None, None),
            _ => (Response::new(501, cseq), None, None),
        }
    }

    /// Forgets publisher `key`, returning it.
    pub fn remove(&mut self, key: SessionKey) -> Option<Publisher> {
        let p = self.publishers.remove(&key)?;
        if self.by_path.get(&p.desc.path) == Some(&key) {
            self.by_path.remove(&p.desc.path);
        }
        Some(p)
    }

    /// The publishers whose time is up at `now`: on the air and silent for
    /// [`SILENCE_TIMEOUT`], or announced and never recording within the
    /// session timeout. They are removed.
    pub fn expire(&mut self, now: Nanos) -> Vec<(Publisher, &'static str)> {
        let announce_wait = self.session_timeout_secs.saturating_mul(1_000_000_000);
        let expired: Vec<(SessionKey, &'static str)> = self
            .publishers
            .values()
            .filter_map(|p| match p.phase {
                // A channel between movies, or paused, is not gone.
                Phase::Recording if !p.channel && now.saturating_sub(p.ingest.last_packet) > SILENCE_TIMEOUT => {
                    Some((p.key, "publisher silent"))
                }
                Phase::Announced if now.saturating_sub(p.last_request) > announce_wait => Some((p.key, "no RECORD")),
                _ => None,
            })
            .collect();
        expired
            .into_iter()
            .filter_map(|(k, why)| self.remove(k).map(|p| (p, why)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::rtsp::message::{parse, Limits, Message};

    const SDP: &str = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=x\r\nt=0 0\r\nm=video 0 RTP/AVP 96\r\n\
                       a=rtpmap:96 H264/90000\r\na=control:streamid=0\r\nm=audio 0 RTP/AVP 97\r\n\
                       a=rtpmap:97 MPEG4-GENERIC/48000/2\r\na=control:streamid=1\r\n";
    const S: Nanos = 1_000_000_000;

    fn request(method: &str, uri: &str, headers: &str, body: &str) -> Request {
        let text = format!(
            "{method} {uri} RTSP/1.0\r\nCSeq: 2\r\n{headers}Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        match parse(text.as_bytes(), &Limits::default()).unwrap().unwrap().0 {
            Message::Request(r) => r,
            other => panic!("{other:?}"),
        }
    }

    fn announce(r: &mut Registry, key: SessionKey, sdp: &str, content_type: &str) -> (u16, Option<Publisher>) {
        let req = request(
            "ANNOUNCE",
            "rtsp://h/live/cam",
            &format!("Content-Type: {content_type}\r\n"),
            sdp,
        );
        let (response, replaced) = r.announce(key, "/live/cam", &req, "127.0.0.1:4000".parse().unwrap(), "u".into(), 0);
        (response.status.code(), replaced)
    }

    #[test]
    fn announce_setup_record_teardown() {
        let mut r = Registry::new(false, 1_000_000, 60);
        assert_eq!(announce(&mut r, 1, "garbage", "application/sdp").0, 400);
        assert_eq!(announce(&mut r, 1, SDP, "text/plain").0, 415);
        assert_eq!(announce(&mut r, 1, "v=0\r\ns=x\r\nt=0 0\r\n", "application/sdp").0, 406);
        assert_eq!(announce(&mut r, 1, SDP, "application/sdp").0, 200);
        assert!(r.on_air("/live/cam").is_none(), "not before RECORD");
        assert_eq!(announce(&mut r, 2, SDP, "application/sdp").0, 455, "the path is busy");
        let record = request("RECORD", "rtsp://h/live/cam", "", "");
        assert_eq!(r.request(1, &record, S).0.status, 455, "RECORD before any SETUP");
        let setup = |uri: &str, transport: &str| request("SETUP", uri, &format!("Transport: {transport}\r\n"), "");
        let s0 = setup(
            "rtsp://h/live/cam/streamid=0",
            "RTP/AVP/TCP;unicast;interleaved=0-1;mode=record",
        );
        assert_eq!(r.wanted(1, &s0).unwrap(), (0, Wanted::Tcp(0, 1)));
        let s1 = setup(
            "rtsp://h/live/cam/streamid=1",
            "RTP/AVP/TCP;unicast;interleaved=0-1;mode=record",
        );
        let reply = r.set_up(
            1,
            &s0,
            0,
            Path::Tcp {
                rtp_channel: 0,
                rtcp_channel: 1,
            },
            S,
        );
        assert_eq!(
            reply.headers.get("Transport"),
            Some("RTP/AVP/TCP;unicast;interleaved=0-1;mode=record")
        );
        assert_eq!(r.wanted(1, &s1).unwrap_err().status, 461, "its channels are taken");
        let s1 = setup(
            "rtsp://h/live/cam/streamid=1",
            "RTP/AVP;unicast;client_port=5000-5001;mode=record",
        );
        assert_eq!(r.wanted(1, &s1).unwrap(), (1, Wanted::Udp(5000, 5001)));
        let play = setup("rtsp://h/live/cam/streamid=1", "RTP/AVP;unicast;client_port=5000-5001");
        assert_eq!(
            r.wanted(1, &play).unwrap_err().status,
            461,
            "a SETUP that does not record"
        );
        let nowhere = setup(
            "rtsp://h/live/cam/streamid=7",
            "RTP/AVP/TCP;interleaved=4-5;mode=record",
        );
        assert_eq!(r.wanted(1, &nowhere).unwrap_err().status, 404);
        let (ok, started, _) = r.request(1, &record, S);
        assert_eq!(ok.status, 200);
        assert_eq!(started.unwrap().path, "/live/cam");
        assert!(r.on_air("/live/cam").is_some());
        assert_eq!(r.get(1).unwrap().channel(1), Some((0, true)));
        // Silent past the timeout: over.
        assert!(r.expire(S + SILENCE_TIMEOUT).is_empty());
        let gone = r.expire(S + SILENCE_TIMEOUT + 1);
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].1, "publisher silent");
        assert!(r.on_air("/live/cam").is_none() && !r.is_publisher(1));
        let teardown = request("TEARDOWN", "rtsp://h/live/cam", "", "");
        assert_eq!(r.request(1, &teardown, S).0.status, 454);
    }

    #[test]
    fn a_second_publisher_replaces_the_first_when_asked_to() {
        let mut r = Registry::new(true, 1_000_000, 60);
        assert_eq!(announce(&mut r, 1, SDP, "application/sdp").0, 200);
        let (status, replaced) = announce(&mut r, 2, SDP, "application/sdp");
        assert_eq!(status, 200);
        assert_eq!(replaced.map(|p| p.key), Some(1));
        assert!(r.is_publisher(2) && !r.is_publisher(1));
        // An announcement never recorded ends after the session timeout.
        assert_eq!(r.expire(61 * S).len(), 1);
    }

    #[test]
    fn within_the_grace_a_publisher_continues_the_broadcast() {
        let mut r = Registry::new(false, 1_000_000, 60).with_grace(5 * S);
        let on_air = |r: &mut Registry, key: SessionKey, sdp: &str, now: Nanos| {
            assert_eq!(announce(r, key, sdp, "application/sdp").0, 200);
            let setup = request(
                "SETUP",
                "rtsp://h/live/cam/streamid=0",
                "Transport: RTP/AVP/TCP;unicast;interleaved=0-1;mode=record\r\n",
                "",
            );
            r.set_up(
                key,
                &setup,
                0,
                Path::Tcp {
                    rtp_channel: 0,
                    rtcp_channel: 1,
                },
                now,
            );
            let record = request("RECORD", "rtsp://h/live/cam", "", "");
            r.request(key, &record, now).1.expect("on the air").id
        };
        let first = on_air(&mut r, 1, SDP, S);
        let gone = r.remove(1).unwrap();
        assert!(r.leave(&gone, 2 * S), "it waits");
        assert!(r.on_air("/live/cam").is_none() && r.take_over(3 * S).is_empty());
        // Back with the same streams: the same broadcast.
        assert_eq!(on_air(&mut r, 2, SDP, 4 * S), first);
        assert!(r.get(2).unwrap().resumed);
        // Gone again, and back with other streams: a new broadcast, and the
        // old one over.
        let gone = r.remove(2).unwrap();
        assert!(r.leave(&gone, 5 * S));
        let other = SDP.replace("H264/90000", "H265/90000");
        let second = on_air(&mut r, 3, &other, 6 * S);
        assert_ne!(second, first);
        assert_eq!(r.take_over(6 * S), [first]);
        // Gone, and not back within the grace: over.
        let gone = r.remove(3).unwrap();
        assert!(r.leave(&gone, 7 * S));
        assert!(r.take_over(11 * S).is_empty());
        assert_eq!(r.take_over(12 * S), [second]);
        // Without a grace nothing waits.
        let mut none = Registry::new(false, 1_000_000, 60);
        on_air(&mut none, 1, SDP, S);
        let gone = none.remove(1).unwrap();
        assert!(!none.leave(&gone, S));
    }
}
