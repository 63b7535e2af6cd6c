//! An RTSP session's protocol logic, without IO: SETUP of each track, PLAY,
//! PAUSE, TEARDOWN and keep-alives, turned into responses and into effects
//! the owning shard carries out.
//!
//! A session belongs to one shard for its whole life. The shard feeds it the
//! requests that name it (forwarded by the control core, or read from the
//! session's own TCP connection) and drives its [`Source`].

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;

use loader::Movie;
use proto::rtsp::header::{npt, Lower, NptRange, ReplyTransport, Transport};
use proto::rtsp::message::{Method, Request, Response};
use proto::rtsp::quicktime;
use proto::rtsp::url::split_uri;
use smallvec::SmallVec;

use crate::door::session_id;
use crate::live::Replica;
use crate::pacer::SessionKey;
use crate::repair::burst::{self, Carrier};
use crate::source::{LiveSource, MovieSource, Nanos, Source, StreamSeeds};

/// What a session presents: a movie, or a live broadcast (through the
/// shard's replica of it).
pub enum Media {
    Movie(Arc<Movie>),
    Live(Rc<RefCell<Replica>>),
}

impl Media {
    fn has_track(&self, track_id: u32) -> bool {
        match self {
            Media::Movie(m) => m.hint_tracks().any(|t| t.id == track_id),
            Media::Live(r) => r.borrow().desc.track_index(track_id).is_some(),
        }
    }
}

/// Where one set-up track's packets go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    Udp {
        rtp: SocketAddr,
        rtcp: SocketAddr,
    },
    /// `$`-framed on the session's RTSP connection.
    Tcp {
        rtp_channel: u8,
        rtcp_channel: u8,
    },
}

/// A playing session's destinations, one a stream, by stream index: what
/// the send round looks up for every packet. Compact, as it stays for as
/// long as the session plays: an IPv4 pair (one address, two ports, as
/// every client sets up) takes 8 bytes where a [`Destination`] takes 64,
/// so two streams fit inline in 40 bytes (136 as destinations); anything
/// else is kept whole, boxed.
#[derive(Debug, Clone, Default)]
pub struct Dests(SmallVec<[Dest; 2]>);

#[derive(Debug, Clone)]
enum Dest {
    UdpV4 { ip: [u8; 4], rtp: u16, rtcp: u16 },
    Tcp { rtp_channel: u8, rtcp_channel: u8 },
    Other(Box<Destination>),
}

impl Dest {
    fn of(d: Destination) -> Dest {
        match d {
            Destination::Udp {
                rtp: SocketAddr::V4(rtp),
                rtcp: SocketAddr::V4(rtcp),
            } if rtp.ip() == rtcp.ip() => Dest::UdpV4 {
                ip: rtp.ip().octets(),
                rtp: rtp.port(),
                rtcp: rtcp.port(),
            },
            Destination::Tcp {
                rtp_channel,
                rtcp_channel,
            } => Dest::Tcp {
                rtp_channel,
                rtcp_channel,
            },
            other => Dest::Other(Box::new(other)),
        }
    }

    #[inline]
    fn get(&self) -> Destination {
        match *self {
            Dest::UdpV4 { ip, rtp, rtcp } => Destination::Udp {
                rtp: SocketAddr::from((ip, rtp)),
                rtcp: SocketAddr::from((ip, rtcp)),
            },
            Dest::Tcp {
                rtp_channel,
                rtcp_channel,
            } => Destination::Tcp {
                rtp_channel,
                rtcp_channel,
            },
            Dest::Other(ref d) => **d,
        }
    }
}

impl Dests {
    /// Stream `i`'s destination.
    #[inline]
    pub fn get(&self, i: usize) -> Option<Destination> {
        self.0.get(i).map(Dest::get)
    }

    pub fn iter(&self) -> impl Iterator<Item = Destination> + '_ {
        self.0.iter().map(Dest::get)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<Destination> for Dests {
    fn from_iter<I: IntoIterator<Item = Destination>>(iter: I) -> Dests {
        Dests(iter.into_iter().map(Dest::of).collect())
    }
}

#[derive(Debug, Clone)]
pub struct TrackSetup {
    pub track_id: u32,
    /// The URL the client set the track up with, for RTP-Info
    /// ([`Session::track_url`]); `None` when it is the session's first
    /// track's URL with this track's number in it, as clients' URLs are:
    /// one string a session, not one a track, for as long as it plays.
    url: Option<Box<str>>,
    /// Packed as [`Dests`] packs them: 16 bytes, not 64, for as long as
    /// the session lasts.
    dest: Dest,
    pub seeds: StreamSeeds,
    /// Set up with `RTP/AVPF` over UDP: the client sends NACKs and takes
    /// RTX retransmissions (see `repair`).
    pub feedback: bool,
    /// Set up over UDP with `x-Retransmit: our-retransmit`: DSS's reliable
    /// UDP, the client acknowledging in `qtak` packets (see `repair`).
    pub reliable: bool,
}

impl TrackSetup {
    /// Where the track's packets go.
    pub fn destination(&self) -> Destination {
        self.dest.get()
    }
}

/// What the caller must do after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    None,
    /// Playback started or was repositioned: reschedule the session.
    Schedule,
    /// The session is over (TEARDOWN): send BYE, log it, drop it.
    End,
}

/// The facts about the request's context that the logic needs.
pub struct Context<'a> {
    pub now: Nanos,
    pub client: IpAddr,
    /// The shard's UDP pair, announced as `server_port`.
    pub server_ports: (u16, u16),
    /// Whether the request arrived on a connection that can carry
    /// interleaved media for this session (its own TCP connection, or the
    /// one the control core is handing over).
    pub interleaved_ok: bool,
    pub timeout_secs: u64,
    /// Whether the server sends sessions that can take it ahead of real
    /// time (Instant-On), for the `x-Dynamic-Rate` reply.
    pub instant_on: bool,
    /// The most a PLAY's `Speed` is granted (`--max-speed`); see
    /// [`burst::granted_speed`].
    pub max_speed: f64,
    /// Draws random (ssrc, first seq, timestamp offset) for a new stream:
    /// called only by a SETUP of a track the session does not have yet,
    /// never by a keep-alive or a second SETUP of a track.
    pub seeds: &'a mut dyn FnMut() -> StreamSeeds,
}

pub struct Session {
    /// The session's key; its RTSP `Session` ID is the key's digits
    /// ([`Session::id`]), written when needed rather than kept: a string
    /// a session is a heap allocation a session, for as long as it plays.
    pub key: SessionKey,
    /// The movie's path in the library (`/sample.mp4`): the aggregate URL's
    /// path. Shared: the shard keeps one copy of each path its sessions
    /// play, not one a session.
    pub path: Rc<str>,
    pub media: Media,
    pub tracks: Vec<TrackSetup>,
    /// What it plays, once a track is set up.
    pub playback: Option<Source>,
    pub user_agent: Option<String>,
    /// Status of the last PLAY (for the access log).
    pub play_status: Option<u16>,
    /// Last time the client showed signs of life (RTSP or RTCP).
    pub last_seen: Nanos,
    pub started: Nanos,
    pub lower: Option<Lower>,
    /// The client's `x-Dynamic-Rate` at SETUP (QuickTime's "may be sent
    /// ahead of real time"); `None` when it sent none.
    pub dynamic_rate: Option<bool>,
    /// The client's `x-Transport-Options: late-tolerance=` at SETUP, in
    /// milliseconds (a minute at most): how late it lets packets be before
    /// thinning moves (see `repair::thinning`); `None` when it sent none.
    /// Two bytes, in what the small fields beside it leave of a word (0
    /// is kept as 1 ms).
    pub late_tolerance_ms: Option<std::num::NonZeroU16>,
}

impl Session {
    /// A session for `movie`, made by its first SETUP.
    pub fn new(key: SessionKey, path: Rc<str>, movie: Arc<Movie>, now: Nanos) -> Session {
        Session::of(key, path, Media::Movie(movie), now)
    }

    /// A session for `media`, made by its first SETUP.
    pub fn of(key: SessionKey, path: Rc<str>, media: Media, now: Nanos) -> Session {
        Session {
            key,
            path,
            media,
            tracks: Vec::new(),
            playback: None,
            user_agent: None,
            play_status: None,
            last_seen: now,
            started: now,
            lower: None,
            dynamic_rate: None,
            late_tolerance_ms: None,
        }
    }

    /// The RTSP `Session` ID clients see.
    pub fn id(&self) -> String {
        session_id(self.key)
    }

    fn session_header(&self, timeout: u64) -> String {
        format!("{:016X};timeout={timeout}", self.key)
    }

    /// Handles a request that names this session (or creates it: SETUP).
    pub fn handle(&mut self, req: &Request, ctx: &mut Context<'_>) -> (Response, Effect) {
        self.last_seen = ctx.now;
        if self.user_agent.is_none() {
            self.user_agent = req.headers.get("User-Agent").map(str::to_owned);
        }
        let ok = |s: &Session| Response::new(200, req.cseq()).header("Session", s.session_header(ctx.timeout_secs));
        match req.method {
            Method::Setup => self.setup(req, ctx),
            Method::Play => self.play(req, ctx),
            Method::Pause => {
                if !self.targets_aggregate(req) {
                    return (Response::new(460, req.cseq()), Effect::None);
                }
                match &mut self.playback {
                    Some(pb) if pb.is_playing() => {
                        pb.pause(ctx.now);
                        (ok(self), Effect::Schedule)
                    }
                    // Pausing a paused or finished session is harmless.
                    Some(_) => (ok(self), Effect::None),
                    None => (Response::new(455, req.cseq()), Effect::None),
                }
            }
            Method::Teardown => (ok(self), Effect::End),
            Method::GetParameter | Method::SetParameter | Method::Options => (ok(self), Effect::None),
            Method::Describe => (Response::new(455, req.cseq()), Effect::None),
            Method::Announce | Method::Record | Method::Redirect => (
                Response::new(405, req.cseq()).header("Allow", crate::door::PUBLIC_METHODS),
                Effect::None,
            ),
            Method::Other(_) => (Response::new(501, req.cseq()), Effect::None),
        }
    }

    /// Whether the request URI names the whole presentation (or, for a
    /// single-track session, that track), as PLAY and PAUSE must.
    fn targets_aggregate(&self, req: &Request) -> bool {
        match split_uri(&req.uri) {
            Some((path, None)) => path == &*self.path || req.uri == "*",
            Some((path, Some(id))) => path == &*self.path && self.tracks.len() == 1 && self.tracks[0].track_id == id,
            None => false,
        }
    }

    fn setup(&mut self, req: &Request, ctx: &mut Context<'_>) -> (Response, Effect) {
        let cseq = req.cseq();
        let Some((path, track)) = split_uri(&req.uri) else {
            return (Response::new(400, cseq), Effect::None);
        };
        if path != &*self.path {
            // One session, one presentation.
            return (Response::new(459, cseq), Effect::None);
        }
        let Some(track_id) = track else {
            // SETUP of the presentation URL would set up every track at once
            // onto one port pair, which RTP cannot demultiplex.
            return (Response::new(459, cseq), Effect::None);
        };
        if !self.media.has_track(track_id) {
            return (Response::new(404, cseq), Effect::None);
        }
        if self.playback.as_ref().is_some_and(|p| p.is_playing()) {
            return (Response::new(455, cseq), Effect::None);
        }
        let Some(header) = req.headers.get("Transport") else {
            return (Response::new(461, cseq), Effect::None);
        };
        let Some((destination, reply, feedback)) = self.negotiate(header, track_id, ctx) else {
            return (Response::new(461, cseq), Effect::None);
        };
        let lower = match destination {
            Destination::Udp { .. } => Lower::Udp,
            Destination::Tcp { .. } => Lower::Tcp,
        };
        // DSS took reliable UDP only over UDP (over TCP nothing is lost)
        // and answered by echoing the header; a NACK/RTX track does not
        // need it as well.
        let retransmit = req
            .headers
            .get(quicktime::X_RETRANSMIT)
            .and_then(quicktime::Retransmit::parse)
            .filter(|_| lower == Lower::Udp && !feedback);
        if self.lower.is_some_and(|l| l != lower) {
            // Mixing UDP and interleaved tracks in one session is not something
            // any client does; refuse rather than split ownership.
            return (Response::new(461, cseq), Effect::None);
        }
        self.lower = Some(lower);
        let url = self.url_to_keep(track_id, &req.uri);
        match self.tracks.iter_mut().find(|t| t.track_id == track_id) {
            // Set up again: a client may change its mind about ports.
            Some(t) => {
                t.dest = Dest::of(destination);
                t.url = url;
                t.feedback = feedback;
                t.reliable = retransmit.is_some();
            }
            None => {
                // Room for exactly the tracks set up (a movie has one to
                // three): a first push would make room for four, twice what
                // most sessions use, for as long as they play.
                self.tracks.reserve_exact(1);
                self.tracks.push(TrackSetup {
                    track_id,
                    url,
                    dest: Dest::of(destination),
                    seeds: (ctx.seeds)(),
                    feedback,
                    reliable: retransmit.is_some(),
                })
            }
        }
        let ids: Vec<u32> = self.tracks.iter().map(|t| t.track_id).collect();
        let seeds: Vec<StreamSeeds> = self.tracks.iter().map(|t| t.seeds).collect();
        let source = match &self.media {
            Media::Movie(movie) => MovieSource::new(movie.clone(), &ids, &seeds).ok().map(Source::Movie),
            Media::Live(replica) => LiveSource::new(replica.clone(), &ids, &seeds).map(Source::Live),
        };
        match source {
            Some(source) => self.playback = Some(source),
            None => return (Response::new(404, cseq), Effect::None),
        }
        // The stream this SETUP named: on a second SETUP of an earlier
        // track it is not the last one.
        let ssrc = self
            .tracks
            .iter()
            .find(|t| t.track_id == track_id)
            .map_or(0, |t| t.seeds.0);
        let reply = match reply {
            Reply::Udp(client_port) => ReplyTransport::Udp {
                client_port,
                server_port: ctx.server_ports,
                ssrc,
                feedback,
            },
            Reply::Tcp(interleaved, profile_f) => ReplyTransport::Tcp {
                interleaved,
                ssrc,
                feedback: profile_f,
            },
        };
        let mut response = Response::new(200, cseq)
            .header("Session", self.session_header(ctx.timeout_secs))
            .header("Transport", reply.to_header());
        if let Some(r) = retransmit {
            let value = match r.window {
                Some(w) => format!("{};window={w}", quicktime::OUR_RETRANSMIT),
                None => quicktime::OUR_RETRANSMIT.to_owned(),
            };
            response = response.header(quicktime::X_RETRANSMIT, value);
        }
        if let Some(t) = req
            .headers
            .get(quicktime::X_TRANSPORT_OPTIONS)
            .and_then(quicktime::late_tolerance)
        {
            // A tolerance past a minute is no tolerance a thinning rule can
            // use: it would never thin.
            let ms = (t.min(60.0) * 1000.0).round() as u16;
            self.late_tolerance_ms = std::num::NonZeroU16::new(ms.max(1));
        }
        if let Some(v) = req.headers.get(quicktime::X_DYNAMIC_RATE) {
            let wanted = quicktime::dynamic_rate(v);
            self.dynamic_rate = Some(wanted);
            let carrier = match lower {
                Lower::Udp => Carrier::Udp,
                Lower::Tcp => Carrier::Tcp,
            };
            // DSS answered only a client that asked, with what it chose.
            let allowed = ctx.instant_on && burst::overbuffer_allowed(carrier, Some(wanted), feedback);
            if let Some(r) = burst::dynamic_rate_reply(Some(wanted), allowed) {
                response = response.header(quicktime::X_DYNAMIC_RATE, r);
            }
        }
        (response, Effect::None)
    }

    /// Picks the first of the client's transports the server can honour,
    /// and whether it takes NACKs for the track (`RTP/AVPF` over UDP; over
    /// TCP nothing is lost, and the profile is only echoed).
    fn negotiate(&self, header: &str, track_id: u32, ctx: &Context) -> Option<(Destination, Reply, bool)> {
        for t in Transport::parse_list(header).into_iter().flatten() {
            if t.multicast || t.record {
                continue;
            }
            // A destination other than the client itself would let anyone aim
            // the server's traffic at a third party.
            if let Some(d) = &t.destination {
                if d.parse::<IpAddr>().ok() != Some(ctx.client) {
                    continue;
                }
            }
            match t.lower {
                Lower::Udp => {
                    let Some((rtp, rtcp)) = t.client_port else { continue };
                    if rtp == 0 {
                        continue;
                    }
                    return Some((
                        Destination::Udp {
                            rtp: SocketAddr::new(ctx.client, rtp),
                            rtcp: SocketAddr::new(ctx.client, rtcp),
                        },
                        Reply::Udp((rtp, rtcp)),
                        t.feedback,
                    ));
                }
                Lower::Tcp => {
                    if !ctx.interleaved_ok {
                        continue;
                    }
                    // Clients that omit the channels get the next free pair.
                    let (a, b) = t.interleaved.unwrap_or_else(|| {
                        let used = self.tracks.iter().filter(|x| x.track_id != track_id).count() as u8;
                        (used * 2, used * 2 + 1)
                    });
                    let clash = self.tracks.iter().any(|x| {
                        x.track_id != track_id
                            && matches!(x.destination(), Destination::Tcp { rtp_channel, rtcp_channel }
                                if [rtp_channel, rtcp_channel].iter().any(|c| *c == a || *c == b))
                    });
                    if clash {
                        continue;
                    }
                    return Some((
                        Destination::Tcp {
                            rtp_channel: a,
                            rtcp_channel: b,
                        },
                        Reply::Tcp((a, b), t.feedback),
                        false,
                    ));
                }
            }
        }
        None
    }

    fn play(&mut self, req: &Request, ctx: &mut Context<'_>) -> (Response, Effect) {
        let cseq = req.cseq();
        if !self.targets_aggregate(req) {
            return (Response::new(460, cseq), Effect::None);
        }
        let range = match req.headers.get("Range").map(NptRange::parse) {
            None => None,
            Some(Ok(r)) => Some(r),
            Some(Err(_)) => return (Response::new(457, cseq), Effect::None),
        };
        let duration_ns = match &self.media {
            Media::Movie(movie) => (movie.duration_secs() * 1e9) as i64,
            // A live broadcast has no end to seek against: its range is
            // `0-`, whatever the client asked.
            Media::Live(_) => 0,
        };
        let live = matches!(self.media, Media::Live(_));
        let range = if live { None } else { range };
        let Some(pb) = self.playback.as_mut() else {
            return (Response::new(455, cseq), Effect::None);
        };
        let start = range.and_then(|r| r.start).map(|s| (s * 1e9) as i64);
        if start.is_some_and(|s| s > duration_ns) {
            return (Response::new(457, cseq), Effect::None);
        }
        let end = range.and_then(|r| r.end).map(|e| (e * 1e9) as i64);
        // `Speed` (RFC 2326 section 12.35), as DSS's file module granted
        // it: only when every track is on a transport that takes the rate
        // without loss (interleaved TCP, a tunnel, reliable UDP), capped by
        // configuration; a live broadcast has no media ahead to send.
        // Each PLAY says its own: one without the header plays at 1.
        let asked = req.headers.get(quicktime::SPEED);
        let all_reliable = !live
            && self
                .tracks
                .iter()
                .all(|t| t.reliable || matches!(t.destination(), Destination::Tcp { .. }));
        let speed = burst::granted_speed(asked.and_then(quicktime::speed), all_reliable, ctx.max_speed);
        let started = pb.play_at_speed(ctx.now, start, end, speed);
        let rtp_info: Vec<String> = started
            .streams
            .iter()
            .map(|&(id, seq, ts)| {
                let url = self.track_url(id).unwrap_or_default();
                format!("url={url};seq={seq};rtptime={ts}")
            })
            .collect();
        let end_ns = started.npt_end_ns.unwrap_or(duration_ns);
        self.play_status = Some(200);
        let range = if live {
            format!("npt={}-", npt(0.0))
        } else {
            format!(
                "npt={}-{}",
                npt(started.npt_start_ns as f64 / 1e9),
                npt(end_ns as f64 / 1e9)
            )
        };
        let mut response = Response::new(200, cseq)
            .header("Session", self.session_header(ctx.timeout_secs))
            .header("Range", range)
            .header("RTP-Info", rtp_info.join(","));
        if asked.is_some() {
            // The speed delivered, to a client that asked (DSS answered
            // only those, 1 on plain UDP included).
            response = response.header(quicktime::SPEED, quicktime::speed_reply(speed));
        }
        // `x-Prebuffer: maxtime=`: play starts at the key frame at or
        // before the requested start, and DSS told such a client how far
        // back that was (no more than it allowed), as `time=`.
        if let Some(max) = req
            .headers
            .get(quicktime::X_PREBUFFER)
            .and_then(quicktime::prebuffer_max_time)
        {
            let requested = std::time::Duration::from_nanos(start.unwrap_or(started.npt_start_ns).max(0) as u64);
            let key_frame = std::time::Duration::from_nanos(started.npt_start_ns.max(0) as u64);
            if let Some(back) = burst::prebuffer_backup(requested, key_frame, Some(max)) {
                response = response.header(quicktime::X_PREBUFFER, quicktime::prebuffer_reply(back.as_secs_f64()));
            }
        }
        (response, Effect::Schedule)
    }

    /// The URL track `id` was set up with.
    pub fn track_url(&self, id: u32) -> Option<std::borrow::Cow<'_, str>> {
        let t = self.tracks.iter().find(|t| t.track_id == id)?;
        match &t.url {
            Some(url) => Some(url.as_ref().into()),
            None => Some(with_track_id(self.tracks.first()?.url.as_deref()?, id)?.into()),
        }
    }

    /// What a SETUP of track `id` with URL `uri` keeps of it: nothing when
    /// the URL follows from the first track's. A first track set up again
    /// with another URL first gives the others their own.
    fn url_to_keep(&mut self, id: u32, uri: &str) -> Option<Box<str>> {
        let Some(first) = self.tracks.first() else {
            return Some(uri.into());
        };
        if first.track_id == id {
            if first.url.as_deref() != Some(uri) {
                let urls: Vec<Option<Box<str>>> = self
                    .tracks
                    .iter()
                    .map(|t| self.track_url(t.track_id).map(|u| u.into()))
                    .collect();
                for (t, url) in self.tracks.iter_mut().zip(urls).skip(1) {
                    t.url = url;
                }
            }
            return Some(uri.into());
        }
        match first.url.as_deref().and_then(|f| with_track_id(f, id)) {
            Some(derived) if derived == uri => None,
            _ => Some(uri.into()),
        }
    }

    /// Where each stream of the playback goes, by stream index.
    pub fn destination(&self, stream: usize) -> Option<Destination> {
        let id = self.playback.as_ref()?.streams().get(stream)?.track_id;
        self.tracks
            .iter()
            .find(|t| t.track_id == id)
            .map(TrackSetup::destination)
    }
}

enum Reply {
    Udp((u16, u16)),
    /// The channels, and whether the client asked for `RTP/AVPF/TCP`.
    Tcp((u8, u8), bool),
}

/// A track's URL with track `id`'s number in place of its own: the digits
/// after the last `trackID=` of its path.
fn with_track_id(url: &str, id: u32) -> Option<String> {
    let path_end = url.find(['?', '#']).unwrap_or(url.len());
    let start = url[..path_end].rfind("trackID=")? + "trackID=".len();
    let digits = url[start..path_end].bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    Some(format!("{}{id}{}", &url[..start], &url[start + digits..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::rtsp::message::{parse, Limits, Message};

    fn req(text: &str) -> Request {
        match parse(text.as_bytes(), &Limits::default()).unwrap().unwrap().0 {
            Message::Request(r) => r,
            _ => panic!(),
        }
    }

    fn ctx(now: Nanos) -> Context<'static> {
        Context {
            now,
            client: "127.0.0.1".parse().unwrap(),
            server_ports: (6970, 6971),
            interleaved_ok: true,
            timeout_secs: 60,
            instant_on: true,
            max_speed: 4.0,
            seeds: Box::leak(Box::new(|| (0xabcd, 100, 5))),
        }
    }

    fn session() -> Session {
        let movie = Arc::new(Movie::open(concat!(env!("CARGO_MANIFEST_DIR"), "/../media/sample.mp4")).unwrap());
        Session::new(0x51, "/sample.mp4".into(), movie, 0)
    }

    #[test]
    fn x_retransmit_is_taken_over_udp_only_and_echoed() {
        let setup_with = |s: &mut Session, transport: &str, retransmit: &str| {
            let text = format!(
                "SETUP rtsp://h/sample.mp4/trackID=3 RTSP/1.0\r\nCSeq: 2\r\nTransport: {transport}\r\n\
                 x-Retransmit: {retransmit}\r\n\r\n"
            );
            s.handle(&req(&text), &mut ctx(0)).0
        };
        let mut s = session();
        let r = setup_with(
            &mut s,
            "RTP/AVP;unicast;client_port=5000-5001",
            "our-retransmit;window=128",
        );
        assert_eq!(r.headers.get("x-Retransmit"), Some("our-retransmit;window=128"));
        assert!(s.tracks[0].reliable && !s.tracks[0].feedback);
        // Another scheme, or none: plain UDP, no header.
        let r = setup_with(&mut s, "RTP/AVP;unicast;client_port=5000-5001", "other-scheme");
        assert_eq!(r.headers.get("x-Retransmit"), None);
        assert!(!s.tracks[0].reliable);
        // Over TCP nothing is lost: DSS did not take it there.
        let mut s = session();
        let r = setup_with(&mut s, "RTP/AVP/TCP;unicast;interleaved=0-1", "our-retransmit");
        assert_eq!((r.status.code(), r.headers.get("x-Retransmit")), (200, None));
        assert!(!s.tracks[0].reliable);
    }

    fn setup(s: &mut Session, track: u32, transport: &str) -> Response {
        let text =
            format!("SETUP rtsp://h/sample.mp4/trackID={track} RTSP/1.0\r\nCSeq: 2\r\nTransport: {transport}\r\n\r\n");
        s.handle(&req(&text), &mut ctx(0)).0
    }

    #[test]
    fn setup_play_pause_teardown() {
        let mut s = session();
        let r = setup(&mut s, 3, "RTP/AVP;unicast;client_port=5000-5001");
        assert_eq!(r.status, 200);
        assert_eq!(
            r.headers.get("Transport"),
            Some("RTP/AVP;unicast;client_port=5000-5001;server_port=6970-6971;ssrc=0000ABCD;mode=\"PLAY\"")
        );
        assert_eq!(r.headers.get("Session"), Some("0000000000000051;timeout=60"));
        assert_eq!(setup(&mut s, 4, "RTP/AVP;unicast;client_port=5002-5003").status, 200);
        assert_eq!(
            s.destination(1),
            Some(Destination::Udp {
                rtp: "127.0.0.1:5002".parse().unwrap(),
                rtcp: "127.0.0.1:5003".parse().unwrap()
            })
        );
        let (r, e) = s.handle(
            &req("PLAY rtsp://h/sample.mp4/ RTSP/1.0\r\nCSeq: 4\r\nRange: npt=5-\r\n\r\n"),
            &mut ctx(10),
        );
        assert_eq!((r.status.code(), e), (200, Effect::Schedule));
        assert_eq!(r.headers.get("Range"), Some("npt=4.000-10.000"));
        let info = r.headers.get("RTP-Info").unwrap();
        assert!(
            info.starts_with("url=rtsp://h/sample.mp4/trackID=3;seq=100;rtptime="),
            "{info}"
        );
        assert_eq!(info.matches("url=").count(), 2);
        assert_eq!(
            setup(&mut s, 3, "RTP/AVP;unicast;client_port=6000-6001").status,
            455,
            "no SETUP while playing"
        );
        let (r, _) = s.handle(
            &req("PAUSE rtsp://h/sample.mp4 RTSP/1.0\r\nCSeq: 5\r\n\r\n"),
            &mut ctx(20),
        );
        assert_eq!(r.status, 200);
        let (r, e) = s.handle(
            &req("TEARDOWN rtsp://h/sample.mp4 RTSP/1.0\r\nCSeq: 6\r\n\r\n"),
            &mut ctx(30),
        );
        assert_eq!((r.status.code(), e), (200, Effect::End));
    }

    #[test]
    fn speed_is_granted_on_reliable_transports_only_and_answered() {
        let play = |s: &mut Session, speed: Option<&str>| {
            let header = speed.map_or(String::new(), |v| format!("Speed: {v}\r\n"));
            let text = format!("PLAY rtsp://h/sample.mp4 RTSP/1.0\r\nCSeq: 4\r\n{header}\r\n");
            let r = s.handle(&req(&text), &mut ctx(10)).0;
            assert_eq!(r.status, 200);
            let speed = s.playback.as_ref().map(Source::speed);
            (r.headers.get("Speed").map(str::to_owned), speed)
        };
        let mut tcp = session();
        assert_eq!(setup(&mut tcp, 3, "RTP/AVP/TCP;unicast;interleaved=0-1").status, 200);
        assert_eq!(setup(&mut tcp, 4, "RTP/AVP/TCP;unicast;interleaved=2-3").status, 200);
        assert_eq!(play(&mut tcp, Some("2.0")), (Some("2.00000".into()), Some(2.0)));
        // Capped by --max-speed (4 here); nonsense is 1.
        assert_eq!(play(&mut tcp, Some("10")), (Some("4.00000".into()), Some(4.0)));
        assert_eq!(play(&mut tcp, Some("-3")), (Some("1.00000".into()), Some(1.0)));
        assert_eq!(play(&mut tcp, Some("fast")), (Some("1.00000".into()), Some(1.0)));
        // Each PLAY says its own: none is 1, and no header comes back.
        assert_eq!(play(&mut tcp, Some("2")).1, Some(2.0));
        assert_eq!(play(&mut tcp, None), (None, Some(1.0)));
        // Plain UDP could not take the rate: 1, as DSS answered.
        let mut udp = session();
        assert_eq!(setup(&mut udp, 3, "RTP/AVP;unicast;client_port=5000-5001").status, 200);
        assert_eq!(play(&mut udp, Some("2.0")), (Some("1.00000".into()), Some(1.0)));
        // Reliable UDP on every track can.
        let mut reliable = session();
        for (track, port) in [(3, 5000), (4, 5002)] {
            let text = format!(
                "SETUP rtsp://h/sample.mp4/trackID={track} RTSP/1.0\r\nCSeq: 2\r\n\
                 Transport: RTP/AVP;unicast;client_port={port}-{}\r\nx-Retransmit: our-retransmit\r\n\
                 x-Transport-Options: late-tolerance=3.5\r\n\r\n",
                port + 1
            );
            assert_eq!(reliable.handle(&req(&text), &mut ctx(0)).0.status, 200);
        }
        assert_eq!(reliable.late_tolerance_ms.map(|t| t.get()), Some(3500));
        assert_eq!(play(&mut reliable, Some("1.5")), (Some("1.50000".into()), Some(1.5)));
    }

    #[test]
    fn refusals() {
        let mut s = session();
        let play = req("PLAY rtsp://h/sample.mp4 RTSP/1.0\r\nCSeq: 1\r\n\r\n");
        assert_eq!(s.handle(&play, &mut ctx(0)).0.status, 455, "PLAY before SETUP");
        assert_eq!(setup(&mut s, 9, "RTP/AVP;unicast;client_port=5000-5001").status, 404);
        assert_eq!(setup(&mut s, 3, "RTP/AVP;multicast").status, 461);
        assert_eq!(
            setup(&mut s, 3, "RTP/AVP;unicast;destination=10.9.9.9;client_port=5000-5001").status,
            461
        );
        assert_eq!(
            setup(&mut s, 3, "RTP/AVP;unicast;destination=127.0.0.1;client_port=5000-5001").status,
            200
        );
        assert_eq!(setup(&mut s, 4, "RTP/AVP/TCP;interleaved=0-1").status, 461, "no mixing");
        let agg = req("SETUP rtsp://h/sample.mp4 RTSP/1.0\r\nCSeq: 3\r\nTransport: RTP/AVP;client_port=1-2\r\n\r\n");
        assert_eq!(s.handle(&agg, &mut ctx(0)).0.status, 459);
        let other =
            req("SETUP rtsp://h/other.mp4/trackID=3 RTSP/1.0\r\nCSeq: 3\r\nTransport: RTP/AVP;client_port=1-2\r\n\r\n");
        assert_eq!(s.handle(&other, &mut ctx(0)).0.status, 459);
        let bad_range = req("PLAY rtsp://h/sample.mp4 RTSP/1.0\r\nCSeq: 4\r\nRange: npt=99-\r\n\r\n");
        assert_eq!(s.handle(&bad_range, &mut ctx(0)).0.status, 457);
        let track_play = req("PLAY rtsp://h/sample.mp4/trackID=3 RTSP/1.0\r\nCSeq: 4\r\n\r\n");
        assert_eq!(
            s.handle(&track_play, &mut ctx(0)).0.status,
            200,
            "a one-track session may name its track"
        );
        let fly = req("FLY rtsp://h/sample.mp4 RTSP/1.0\r\nCSeq: 5\r\n\r\n");
        assert_eq!(s.handle(&fly, &mut ctx(0)).0.status, 501);
    }

    #[test]
    fn rtp_info_names_each_track_by_the_url_it_was_set_up_with() {
        let setup_url = |s: &mut Session, url: &str, port: u16| {
            let text = format!(
                "SETUP {url} RTSP/1.0\r\nCSeq: 2\r\nTransport: RTP/AVP;unicast;client_port={port}-{}\r\n\r\n",
                port + 1
            );
            assert_eq!(s.handle(&req(&text), &mut ctx(0)).0.status, 200, "{url}");
        };
        let rtp_info = |s: &mut Session| {
            let play = req("PLAY rtsp://h/sample.mp4 RTSP/1.0\r\nCSeq: 4\r\n\r\n");
            let r = s.handle(&play, &mut ctx(10)).0;
            assert_eq!(r.status, 200);
            let urls: Vec<String> = r
                .headers
                .get("RTP-Info")
                .unwrap()
                .split(',')
                .map(|i| i.split(';').next().unwrap().to_owned())
                .collect();
            let pause = req("PAUSE rtsp://h/sample.mp4 RTSP/1.0\r\nCSeq: 5\r\n\r\n");
            assert_eq!(s.handle(&pause, &mut ctx(20)).0.status, 200);
            urls
        };
        // The usual: the second URL follows from the first, and is not kept.
        let mut s = session();
        setup_url(&mut s, "rtsp://h:554/sample.mp4/trackID=3?t=x", 5000);
        setup_url(&mut s, "rtsp://h:554/sample.mp4/trackID=4?t=x", 5002);
        assert!(s.tracks[1].url.is_none());
        assert_eq!(
            rtp_info(&mut s),
            [
                "url=rtsp://h:554/sample.mp4/trackID=3?t=x",
                "url=rtsp://h:554/sample.mp4/trackID=4?t=x"
            ]
        );
        // One that does not follow (another host, a leading zero, a slash)
        // is kept as it came.
        for second in [
            "rtsp://10.0.0.1/sample.mp4/trackID=4",
            "rtsp://h/sample.mp4/trackID=04",
            "/sample.mp4/trackID=4/",
        ] {
            let mut s = session();
            setup_url(&mut s, "rtsp://h/sample.mp4/trackID=3", 5000);
            setup_url(&mut s, second, 5002);
            assert_eq!(
                rtp_info(&mut s),
                ["url=rtsp://h/sample.mp4/trackID=3".to_owned(), format!("url={second}")]
            );
        }
        // The first track set up again with another URL: the second keeps
        // the one it came with, and either set up again takes its new one.
        let mut s = session();
        setup_url(&mut s, "rtsp://h/sample.mp4/trackID=3", 5000);
        setup_url(&mut s, "rtsp://h/sample.mp4/trackID=4", 5002);
        setup_url(&mut s, "rtsp://other/sample.mp4/trackID=3", 6000);
        assert_eq!(
            rtp_info(&mut s),
            [
                "url=rtsp://other/sample.mp4/trackID=3",
                "url=rtsp://h/sample.mp4/trackID=4"
            ]
        );
        setup_url(&mut s, "rtsp://other/sample.mp4/trackID=4", 6002);
        assert_eq!(
            rtp_info(&mut s),
            [
                "url=rtsp://other/sample.mp4/trackID=3",
                "url=rtsp://other/sample.mp4/trackID=4"
            ]
        );
        assert!(s.tracks[1].url.is_none());
        setup_url(&mut s, "rtsp://h/sample.mp4/trackID=4", 6004);
        assert_eq!(
            rtp_info(&mut s),
            [
                "url=rtsp://other/sample.mp4/trackID=3",
                "url=rtsp://h/sample.mp4/trackID=4"
            ]
        );
    }

    #[test]
    fn setup_again_answers_with_that_tracks_ssrc() {
        let mut s = session();
        let with_seeds = |seeds: StreamSeeds| Context {
            seeds: Box::leak(Box::new(move || seeds)),
            ..ctx(0)
        };
        let setup_with = |s: &mut Session, track: u32, port: u16, seeds: StreamSeeds| {
            let text = format!(
                "SETUP rtsp://h/sample.mp4/trackID={track} RTSP/1.0\r\nCSeq: 2\r\n\
                 Transport: RTP/AVP;unicast;client_port={port}-{}\r\n\r\n",
                port + 1
            );
            let r = s.handle(&req(&text), &mut with_seeds(seeds)).0;
            assert_eq!(r.status, 200);
            Transport::parse(r.headers.get("Transport").unwrap()).unwrap().ssrc
        };
        assert_eq!(setup_with(&mut s, 3, 5000, (0x3333, 1, 1)), Some(0x3333));
        assert_eq!(setup_with(&mut s, 4, 5002, (0x4444, 1, 1)), Some(0x4444));
        // Track 3 again, to other ports: it keeps its stream, and says so.
        assert_eq!(setup_with(&mut s, 3, 6000, (0x5555, 1, 1)), Some(0x3333));
    }

    #[test]
    fn seeds_are_drawn_only_for_a_track_not_yet_set_up() {
        let mut s = session();
        let mut drawn = 0u32;
        let mut seeds = || {
            drawn += 1;
            (0x7000 + drawn, 1, 1)
        };
        let mut send = |s: &mut Session, text: &str| {
            let mut ctx = Context {
                seeds: &mut seeds,
                ..ctx(0)
            };
            s.handle(&req(text), &mut ctx).0.status
        };
        let setup3 = "SETUP rtsp://h/sample.mp4/trackID=3 RTSP/1.0\r\nCSeq: 2\r\n\
                      Transport: RTP/AVP;unicast;client_port=5000-5001\r\n\r\n";
        let setup4 = setup3.replace("trackID=3", "trackID=4");
        assert_eq!(send(&mut s, setup3), 200);
        for keep_alive in ["GET_PARAMETER", "SET_PARAMETER", "OPTIONS"] {
            let text = format!("{keep_alive} rtsp://h/sample.mp4 RTSP/1.0\r\nCSeq: 3\r\n\r\n");
            assert_eq!(send(&mut s, &text), 200);
        }
        assert_eq!(send(&mut s, setup3), 200, "track 3 again");
        assert_eq!(
            send(&mut s, "PLAY rtsp://h/sample.mp4 RTSP/1.0\r\nCSeq: 4\r\n\r\n"),
            200
        );
        assert_eq!(
            send(&mut s, "PAUSE rtsp://h/sample.mp4 RTSP/1.0\r\nCSeq: 5\r\n\r\n"),
            200
        );
        assert_eq!(send(&mut s, &setup4), 200);
        assert_eq!(drawn, 2, "one draw per new track");
        let ssrcs: Vec<u32> = s.tracks.iter().map(|t| t.seeds.0).collect();
        assert_eq!(ssrcs, [0x7001, 0x7002]);
    }

    #[test]
    fn interleaved_channels() {
        let mut s = session();
        let r = setup(&mut s, 3, "RTP/AVP/TCP;unicast;interleaved=0-1");
        assert_eq!(
            r.headers.get("Transport"),
            Some("RTP/AVP/TCP;unicast;interleaved=0-1;ssrc=0000ABCD;mode=\"PLAY\"")
        );
        assert_eq!(
            setup(&mut s, 4, "RTP/AVP/TCP;unicast;interleaved=0-1").status,
            461,
            "channels in use"
        );
        let r = setup(&mut s, 4, "RTP/AVP/TCP;unicast");
        assert!(r.headers.get("Transport").unwrap().contains("interleaved=2-3"));
    }
}
