//! The front door: every RTSP request, from every connection on whichever
//! core owns it, is classified here once, and the cores only carry out the
//! [`Route`] it returns. Sans-IO: a request and what is known about its
//! connection in, a route out.
//!
//! What the door decides, in order:
//!
//! 1. A request without `CSeq` is answered 400 (RFC 2326 12.17 makes it
//!    mandatory, and an answer without one cannot be matched by the client).
//! 2. A `Session` header names a session: one this server made and that still
//!    exists is [`Route::Session`], anything else (unparsable, unknown, ended)
//!    is 454. The caller says which keys exist, because only it knows: the
//!    control core knows every session's shard, a shard knows its own.
//! 3. Without a session: DESCRIBE needs the library ([`Route::Describe`]),
//!    SETUP opens a session ([`Route::Open`], which says whether the client
//!    asked for interleaved TCP, since such a session takes its connection
//!    along), and everything else is answered here ([`Route::Answer`]):
//!    OPTIONS, keep-alives sent before a session exists (some clients ping
//!    with GET_PARAMETER as soon as they connect), 454 for PLAY, PAUSE and
//!    TEARDOWN outside a session, 405 for the recording methods (when
//!    publishing is off), 501 for the rest. Bytes that do not parse as a
//!    message at all get their status from [`reject`].
//!
//! Before 2, the publishing requests (ANNOUNCE, a SETUP with `mode=record`,
//! RECORD), when publishing is on: checked against the publish rules
//! ([`Gate`]: 401 with challenges, 403), then ANNOUNCE opens a broadcast
//! ([`Route::Announce`]), a record SETUP outside a session sets up one of
//! its streams ([`Route::Publish`]), and RECORD outside a session is 454.
//! With a `Session` header they go on to step 2 like any request.
//!
//! # Access control
//!
//! Before any of that, two checks of [`crate::access`], when the server has
//! access rules (a door without them lets everyone in, as before):
//!
//! - [`Door::admit`], when a connection is accepted and before a byte of it
//!   is read: address deny/allow rules and the connection rate limit.
//! - [`Door::gate`], for each RTSP request before [`Door::route`]: a request
//!   that opens something (DESCRIBE, SETUP outside a session, and every
//!   publishing request: ANNOUNCE, RECORD, a SETUP with `mode=record`) is
//!   judged by the address rules, the `qtaccess` files and `[[access_rule]]`
//!   tables, the users and groups files and URL tokens, and gets one
//!   [`Gate`]: go on, or an answer (401 with its challenges, 403, 503). The
//!   requests of a session that was let in are not asked again: its key,
//!   64 random bits the client learnt from the SETUP the door let through,
//!   is the session's credential from then on (as in DSS), so a session
//!   whose requests reach a shard needs no second judge there.
//!   [`Door::check`] is the same judgement for any request by its class,
//!   for HTTP handlers (the admin API asks for [`Class::Admin`]).
//!
//! # Where the next pieces go
//!
//! The door is where every check that concerns a request rather than a
//! session belongs, so that the control core and the shards cannot drift
//! apart:
//!
//! - **HTTP on the RTSP ports** (RTSP-over-HTTP tunnels, the admin API,
//!   `/metrics`, the status page, Icecast/ICY sources and listeners): told
//!   apart by the first request line before any parser sees it, in the
//!   connection loop, which asks the door where each HTTP request goes
//!   ([`Door::route_http`], by [`crate::http::route`] over the handlers
//!   registered in the door's [`Routes`]). Checks that concern every
//!   request, HTTP or RTSP (address rules, authentication), go before both.
//! - **Limits** beyond the parser's size limits (request rates, methods an
//!   operator turns off): as step 0, a `Route::Answer` with 503 or 405.

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;

use loader::Movie;
use proto::rtsp::header::{Lower, Transport};
use proto::rtsp::message::{Method, ParseError, Request, Response};
use proto::rtsp::url::split_uri;
use tracing::{debug, info};

use crate::access::{self, Access, Class, Decision, Grant};
use crate::http::{HttpRoute, Routes};
use crate::library::LibraryError;
use crate::live::publish::Gate as PublishGate;
use crate::pacer::SessionKey;
use crate::source::Nanos;

/// The methods the server implements, for `Public` and `Allow`.
pub const PUBLIC_METHODS: &str = "OPTIONS, DESCRIBE, SETUP, PLAY, PAUSE, TEARDOWN, GET_PARAMETER, SET_PARAMETER";
/// The same, when publishing is on.
pub const PUBLIC_METHODS_PUBLISHING: &str =
    "OPTIONS, DESCRIBE, ANNOUNCE, SETUP, RECORD, PLAY, PAUSE, TEARDOWN, GET_PARAMETER, SET_PARAMETER";

/// What the door knows about the connection a request came on.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub client: SocketAddr,
}

/// What to do with a request.
#[derive(Debug)]
pub enum Route {
    /// Answered by the door: send it, nothing else to do.
    Answer(Response),
    /// DESCRIBE of the movie at `path` (a library path such as
    /// `/dir/a.mp4`): open it and answer with [`describe`].
    Describe { path: String },
    /// SETUP outside a session: a new session for the movie at `path`, if
    /// the movie opens and the session limits allow it. With `interleaved`,
    /// the media will ride the request's connection, which then belongs to
    /// the session's shard.
    Open { path: String, interleaved: bool },
    /// A request for session `key`, which exists.
    Session(SessionKey),
    /// ANNOUNCE of a broadcast at `path` by `user`, whom the publish rules
    /// allow there.
    Announce { path: String, user: String },
    /// A SETUP with `mode=record` outside a session, allowed by the publish
    /// rules: a stream of the broadcast its connection announced.
    Publish { path: String },
}

/// What the access check says about a request.
#[derive(Debug)]
pub enum Gate {
    /// Go on and route it, as `grant` says who (`None` when the server has
    /// no access rules).
    Pass(Option<Grant>),
    /// Answer `response` (401, 403 or 503) after holding it for `delay`
    /// (repeated failed logins), and keep reading the connection.
    Refuse { response: Response, delay: Nanos },
}

/// The door: the HTTP handlers registered on this core, and its access
/// state (see the module documentation).
#[derive(Debug, Default)]
pub struct Door {
    routes: Routes,
    /// One per core: it holds the core's nonce-replay table and rate
    /// limits. A core runs one thread, and no borrow outlives a call.
    access: Option<RefCell<Access>>,
    /// Whether publishing requests (ANNOUNCE, RECORD, SETUP with
    /// `mode=record`) are routed, and so judged as `Class::Write`.
    publishing: bool,
    /// Who may publish where; `None`: nobody, anywhere.
    publish: Option<Rc<PublishGate>>,
    /// Whether DESCRIBE offers NACK/RTX retransmission (`--nack`; see
    /// `repair::offer`).
    feedback: bool,
}

impl Door {
    pub fn new() -> Door {
        Door::default()
    }

    /// A door that serves HTTP requests with `routes` besides tunnels.
    pub fn with_routes(routes: Routes) -> Door {
        Door {
            routes,
            access: None,
            publishing: false,
            publish: None,
            feedback: false,
        }
    }

    /// The same door, offering NACK/RTX retransmission in its DESCRIBE
    /// answers when `on`.
    pub fn with_feedback(mut self, on: bool) -> Door {
        self.feedback = on;
        self
    }

    /// Whether DESCRIBE answers offer NACK/RTX retransmission.
    pub fn feedback(&self) -> bool {
        self.feedback
    }

    /// The same door, judging requests by `access`.
    pub fn with_access(mut self, access: Option<Access>) -> Door {
        self.access = access.map(RefCell::new);
        self
    }

    /// The same door, judging publishing requests as `Class::Write` (for
    /// the live ingest that routes them).
    pub fn with_publishing(mut self) -> Door {
        self.publishing = true;
        self
    }

    /// Whether the door judges by access rules.
    pub fn has_access(&self) -> bool {
        self.access.is_some()
    }

    /// What to do with a new connection from `client`, before reading it.
    pub fn admit(&self, client: IpAddr, now: Nanos) -> access::Admission {
        match &self.access {
            None => access::Admission::Admit,
            Some(a) => a.borrow_mut().admit(client, now),
        }
    }

    /// The access counters of this core, and its limiters' (connections,
    /// failed logins, password checks), when it has access rules.
    pub fn access_stats(&self) -> Option<(access::Stats, [Option<access::addr::RateStats>; 3])> {
        self.access.as_ref().map(|a| {
            let a = a.borrow();
            (a.stats, a.rate_stats())
        })
    }

    /// Judges an RTSP request before it is routed (see the module
    /// documentation for which requests are judged). `now` is the server's
    /// clock, `unix_time` the wall clock in seconds (for URL tokens).
    pub fn gate(&self, req: &Request, caller: &Caller, now: Nanos, unix_time: u64) -> Gate {
        if self.access.is_none() {
            return Gate::Pass(None);
        }
        let record = req.method == Method::Setup && wants_record(req);
        let class = Class::of_rtsp(req.method.as_str(), record);
        let in_session = req.headers.get("Session").is_some();
        // Publishing is judged once the server takes it (live ingest turns
        // it on with `with_publishing`); until then the route answers 405
        // for ANNOUNCE and RECORD, and a session 461 for `mode=record`, as
        // without access rules.
        let judged = match (&req.method, class) {
            (_, Class::Write) => true,
            (Method::Describe | Method::Setup, _) => !in_session,
            _ => false,
        };
        if !judged {
            return Gate::Pass(None);
        }
        let Some((path, _)) = split_uri(&req.uri) else {
            // Not a URI the door can route: its own 400 follows.
            return Gate::Pass(None);
        };
        // A path a `--publish` rule covers is that rule's alone, and is
        // judged in `route`: a Digest answer can answer one challenge, so a
        // publisher must never get two authenticators' challenges at once.
        if class == Class::Write && self.publish.as_ref().is_some_and(|g| g.rule_for(path).is_some()) {
            return Gate::Pass(None);
        }
        // A path the library refuses outright (an escape, a bad or encoded
        // `/`) names nothing that could be served: routing answers it (400)
        // as it would without access rules. The rules are judged on the
        // decoded path, folder by folder.
        if !crate::library::is_plain_path(path) {
            return Gate::Pass(None);
        }
        let Some(path) = crate::library::percent_decoded(path) else {
            return Gate::Pass(None);
        };
        // Other publishing is judged here where the access rules say who
        // may write (`<Limit WRITE>`, a TOML rule for write); where they say
        // nothing, it passes on to `route`, which refuses it as it does
        // without access rules (403 outside the publish rules, 405 when
        // publishing is off).
        if class == Class::Write && !self.publishing {
            let ruled = self
                .access
                .as_ref()
                .is_some_and(|a| a.borrow_mut().rules_writing(&path, now));
            if !ruled {
                return Gate::Pass(None);
            }
        }
        let authorization: Vec<&str> = req
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("Authorization"))
            .map(|(_, v)| v)
            .collect();
        let request = access::Request {
            client: caller.client.ip(),
            class,
            method: req.method.as_str(),
            uri: &req.uri,
            path: &path,
            authorization: &authorization,
            now,
            unix_time,
        };
        match self.check(&request) {
            Gate::Pass(g) => Gate::Pass(g),
            Gate::Refuse { response, delay } => {
                let mut r = Response::new(response.status, req.cseq());
                for (n, v) in response.headers.iter() {
                    r = r.header(n, v);
                }
                Gate::Refuse { response: r, delay }
            }
        }
    }

    /// Judges one request of any protocol, described by `req`. A refusal's
    /// response has no CSeq; its headers (`WWW-Authenticate`,
    /// `Retry-After`) are what an HTTP answer needs as well.
    pub fn check(&self, req: &access::Request<'_>) -> Gate {
        let Some(access) = &self.access else {
            return Gate::Pass(None);
        };
        let decision = access.borrow_mut().decide(req);
        let client = req.client;
        match decision {
            Decision::Allow(grant) => {
                debug!(%client, path = req.path, user = ?grant.user, via = ?grant.via, "access allowed");
                Gate::Pass(Some(grant))
            }
            Decision::Challenge(c) => {
                match (&c.failure, &c.stale) {
                    (Some(f), _) => info!(%client, path = req.path, method = req.method, reason = %f, "login failed"),
                    (None, Some(s)) => {
                        debug!(%client, path = req.path, stale = ?s, "stale Digest nonce; challenged again")
                    }
                    (None, None) => debug!(%client, path = req.path, "credentials needed; challenged"),
                }
                let mut response = Response::new(401, None);
                for v in c.www_authenticate {
                    response = response.header("WWW-Authenticate", v);
                }
                Gate::Refuse {
                    response,
                    delay: c.delay,
                }
            }
            Decision::Forbidden(why) => {
                info!(%client, path = req.path, method = req.method, reason = %why, "access refused");
                Gate::Refuse {
                    response: Response::new(403, None),
                    delay: 0,
                }
            }
            Decision::SlowDown { retry_after } => {
                info!(%client, path = req.path, "too many failed logins; answered 503");
                let secs = retry_after.div_ceil(1_000_000_000).max(1);
                Gate::Refuse {
                    response: Response::new(503, None).header("Retry-After", secs.to_string()),
                    delay: 0,
                }
            }
        }
    }

    /// The door, letting publishers in by `gate`'s rules. They judge the
    /// publishing requests to the paths they cover alone: those are not
    /// asked of the access rules as well (a Digest answer can answer one
    /// challenge, not two). Publishing elsewhere is judged by the access
    /// rules, where they have a WRITE rule for the path (see [`Door::gate`]).
    pub fn with_publish_rules(mut self, gate: PublishGate) -> Door {
        self.publish = Some(Rc::new(gate));
        self
    }

    /// The publish rules, if publishing is on.
    pub fn publishing(&self) -> Option<&PublishGate> {
        self.publish.as_deref()
    }

    fn public_methods(&self) -> &'static str {
        if self.publish.is_some() {
            PUBLIC_METHODS_PUBLISHING
        } else {
            PUBLIC_METHODS
        }
    }

    /// The publishing requests (ANNOUNCE, a SETUP with `mode=record`,
    /// RECORD): let in by the access rules' WRITE rule (`granted`, from
    /// [`Door::gate`]), or else, when publishing is on, checked against the
    /// publish rules (401 with challenges, or 403); then routed. `None` for
    /// every other request, and for these when neither lets them in.
    fn route_publishing(&self, req: &Request, caller: &Caller, granted: Option<&Grant>, cseq: &str) -> Option<Route> {
        let record_setup = req.method == Method::Setup && wants_record(req);
        if !matches!(req.method, Method::Announce | Method::Record) && !record_setup {
            return None;
        }
        if granted.is_none() && self.publish.is_none() {
            return None;
        }
        let Some((path, _)) = split_uri(&req.uri) else {
            return Some(Route::Answer(Response::new(400, Some(cseq))));
        };
        let checked = match (granted, &self.publish) {
            // An anonymous writer (`require any-user` under `<Limit WRITE>`).
            (Some(grant), _) => Ok(grant.user.clone().unwrap_or_else(|| "anonymous".into())),
            (None, Some(gate)) => gate.check(req, path, caller.client.ip()),
            (None, None) => return None,
        };
        let user = match checked {
            Ok(user) => user,
            Err(refusal) => {
                debug!(client = %caller.client, uri = %req.uri, status = refusal.status.code(), "publishing refused");
                return Some(Route::Answer(refusal));
            }
        };
        if req.headers.get("Session").is_some() {
            // Allowed, and for a session: the session's owner decides.
            return None;
        }
        let path = path.to_owned();
        Some(match req.method {
            Method::Announce => Route::Announce { path, user },
            Method::Setup => Route::Publish { path },
            // RECORD without the session an ANNOUNCE and SETUP made.
            _ => Route::Answer(Response::new(454, Some(cseq))),
        })
    }

    /// Classifies an HTTP request head from `caller`.
    pub fn route_http(&self, head: &proto::http::Head, _caller: &Caller) -> HttpRoute {
        crate::http::route(head, &self.routes)
    }

    /// Classifies `req`, which came from `caller`. `exists` says whether a
    /// session key is one the calling core knows.
    pub fn route(&self, req: &Request, caller: &Caller, exists: impl Fn(SessionKey) -> bool) -> Route {
        self.route_granted(req, caller, None, exists)
    }

    /// [`Door::route`] of a request [`Door::gate`] let in as `granted`
    /// (its `Gate::Pass`): a publishing request the access rules let in is
    /// routed as the publish rules' would be.
    pub fn route_granted(
        &self,
        req: &Request,
        caller: &Caller,
        granted: Option<&Grant>,
        exists: impl Fn(SessionKey) -> bool,
    ) -> Route {
        let Some(cseq) = req.cseq() else {
            return Route::Answer(Response::new(400, None));
        };
        if let Some(route) = self.route_publishing(req, caller, granted, cseq) {
            return route;
        }
        if let Some(header) = req.headers.get("Session") {
            return match parse_session_id(header) {
                Some(key) if exists(key) => Route::Session(key),
                // A session we never made, or one that has ended.
                _ => Route::Answer(Response::new(454, Some(cseq))),
            };
        }
        match &req.method {
            Method::Describe | Method::Setup => {
                let Some((path, _)) = split_uri(&req.uri) else {
                    return Route::Answer(Response::new(400, Some(cseq)));
                };
                let path = path.to_owned();
                if req.method == Method::Describe {
                    Route::Describe { path }
                } else {
                    Route::Open {
                        path,
                        interleaved: wants_interleaved(req),
                    }
                }
            }
            Method::Options => Route::Answer(Response::new(200, Some(cseq)).header("Public", self.public_methods())),
            // PLAY, PAUSE and TEARDOWN only mean something within a session.
            Method::Play | Method::Pause | Method::Teardown => Route::Answer(Response::new(454, Some(cseq))),
            // Keep-alives before a session exists, or pings.
            Method::GetParameter | Method::SetParameter => Route::Answer(Response::new(200, Some(cseq))),
            Method::Announce | Method::Record | Method::Redirect => {
                Route::Answer(Response::new(405, Some(cseq)).header("Allow", PUBLIC_METHODS))
            }
            Method::Other(_) => Route::Answer(Response::new(501, Some(cseq))),
        }
    }
}

/// The answer to bytes that are not a message (or one past the limits),
/// after which the connection is closed: the stream cannot be resynchronised.
pub fn reject(e: &ParseError) -> Response {
    Response::new(e.status(), None)
}

/// Whether the first transport a SETUP offers is interleaved TCP. Clients
/// list their preference first; one that offers UDP first and TCP second
/// gets UDP, which the shard can set up without taking the connection.
fn wants_interleaved(req: &Request) -> bool {
    req.headers
        .get("Transport")
        .map(Transport::parse_list)
        .and_then(|l| l.into_iter().flatten().next())
        .is_some_and(|t| t.lower == Lower::Tcp)
}

/// Whether a SETUP asks to record (`mode=record` in its first transport,
/// RFC 2326 12.39; clients write the value quoted or not, in any case).
fn wants_record(req: &Request) -> bool {
    req.headers.get("Transport").is_some_and(|t| {
        let first = t.split(',').next().unwrap_or_default();
        first.split(';').any(|p| {
            p.trim().split_once('=').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case("mode") && v.trim().trim_matches('"').eq_ignore_ascii_case("record")
            })
        })
    })
}

/// The answer to a DESCRIBE of `path`: the movie's SDP, with the base URL
/// its relative track controls resolve against, or the library's refusal.
/// With `feedback`, the SDP offers NACK/RTX retransmission.
pub fn describe(req: &Request, path: &str, movie: Result<&Movie, &LibraryError>, feedback: bool) -> Response {
    let cseq = req.cseq();
    match movie {
        Ok(movie) => describe_sdp(req, path, movie.sdp(), feedback),
        Err(e) => {
            debug!(uri = %req.uri, error = %e, "DESCRIBE refused");
            Response::new(e.status(), cseq)
        }
    }
}

/// The answer to a DESCRIBE of `path` whose presentation is `sdp` (a
/// movie's, or a live broadcast's), with the base URL its relative track
/// controls resolve against; with `feedback`, offering NACK/RTX
/// retransmission ([`repair::offer`](crate::repair::offer)).
pub fn describe_sdp(req: &Request, path: &str, sdp: &str, feedback: bool) -> Response {
    let base = match req.uri.split_once("://") {
        // The client's own scheme: an rtsps:// client resolves its
        // tracks over TLS too.
        Some((scheme, rest)) => {
            let authority = rest.split('/').next().unwrap_or_default();
            let scheme = if scheme.eq_ignore_ascii_case("rtsps") {
                "rtsps"
            } else {
                "rtsp"
            };
            format!("{scheme}://{authority}{path}/")
        }
        None => format!("{path}/"),
    };
    let body = if feedback {
        crate::repair::offer::with_feedback(sdp).into_bytes()
    } else {
        sdp.as_bytes().to_vec()
    };
    Response::new(200, req.cseq())
        .header("Content-Base", base)
        .body("application/sdp", body)
}

/// A session key as clients see it: 16 hexadecimal digits.
pub fn session_id(key: SessionKey) -> String {
    format!("{key:016X}")
}

/// The key of a `Session` header (`ID` or `ID;timeout=60`), if it is one
/// this server could have made.
pub fn parse_session_id(header: &str) -> Option<SessionKey> {
    let id = proto::rtsp::header::session_id(header);
    if id.len() != 16 {
        return None;
    }
    u64::from_str_radix(id, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::rtsp::message::{parse, Limits, Message};

    fn req(text: &str) -> Request {
        match parse(text.as_bytes(), &Limits::default()).unwrap().unwrap().0 {
            Message::Request(r) => r,
            other => panic!("{other:?}"),
        }
    }

    fn route(text: &str) -> Route {
        let caller = Caller {
            client: "192.0.2.1:4000".parse().unwrap(),
        };
        Door::new().route(&req(text), &caller, |key| key == 0xAB)
    }

    fn answer(text: &str) -> (u16, Response) {
        match route(text) {
            Route::Answer(r) => (r.status.code(), r),
            other => panic!("{text:?} routed to {other:?}"),
        }
    }

    #[test]
    fn answers_what_needs_no_session_or_movie() {
        let (status, r) = answer("OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n");
        assert_eq!((status, r.headers.get("Public")), (200, Some(PUBLIC_METHODS)));
        assert_eq!(r.headers.get("CSeq"), Some("1"));
        assert_eq!(
            answer("GET_PARAMETER rtsp://h/a.mp4 RTSP/1.0\r\nCSeq: 2\r\n\r\n").0,
            200
        );
        assert_eq!(
            answer("SET_PARAMETER rtsp://h/a.mp4 RTSP/1.0\r\nCSeq: 2\r\n\r\n").0,
            200
        );
        for m in ["PLAY", "PAUSE", "TEARDOWN"] {
            assert_eq!(
                answer(&format!("{m} rtsp://h/a.mp4 RTSP/1.0\r\nCSeq: 3\r\n\r\n")).0,
                454,
                "{m}"
            );
        }
        for m in ["ANNOUNCE", "RECORD", "REDIRECT"] {
            let (status, r) = answer(&format!("{m} rtsp://h/a.mp4 RTSP/1.0\r\nCSeq: 4\r\n\r\n"));
            assert_eq!((status, r.headers.get("Allow")), (405, Some(PUBLIC_METHODS)), "{m}");
        }
        assert_eq!(answer("FLY rtsp://h/a.mp4 RTSP/1.0\r\nCSeq: 5\r\n\r\n").0, 501);
        let (status, r) = answer("OPTIONS * RTSP/1.0\r\n\r\n");
        assert_eq!((status, r.headers.get("CSeq")), (400, None), "no CSeq");
    }

    #[test]
    fn sessions_are_named_by_a_known_key() {
        assert!(matches!(
            route("PLAY rtsp://h/a.mp4 RTSP/1.0\r\nCSeq: 1\r\nSession: 00000000000000AB;timeout=60\r\n\r\n"),
            Route::Session(0xAB)
        ));
        // Any method with a Session header goes to the session, which decides.
        assert!(matches!(
            route("DESCRIBE rtsp://h/a.mp4 RTSP/1.0\r\nCSeq: 1\r\nSession: 00000000000000ab\r\n\r\n"),
            Route::Session(0xAB)
        ));
        for session in ["00000000000000AC", "AB", "not-a-session", "00000000000000AB0"] {
            let text = format!("PLAY rtsp://h/a.mp4 RTSP/1.0\r\nCSeq: 1\r\nSession: {session}\r\n\r\n");
            assert_eq!(answer(&text).0, 454, "{session}");
        }
        assert_eq!(
            parse_session_id(&session_id(0x0123_4567_89AB_CDEF)),
            Some(0x0123_4567_89AB_CDEF)
        );
    }

    #[test]
    fn describe_and_setup_name_their_movie() {
        assert!(matches!(
            route("DESCRIBE rtsp://h:554/dir/a%20b.mp4?x=1 RTSP/1.0\r\nCSeq: 1\r\n\r\n"),
            Route::Describe { path } if path == "/dir/a%20b.mp4"
        ));
        let setup = |transport: &str| {
            route(&format!(
                "SETUP rtsp://h/a.mp4/trackID=3 RTSP/1.0\r\nCSeq: 2\r\nTransport: {transport}\r\n\r\n"
            ))
        };
        assert!(matches!(
            setup("RTP/AVP;unicast;client_port=5000-5001"),
            Route::Open { path, interleaved: false } if path == "/a.mp4"
        ));
        assert!(matches!(
            setup("RTP/AVP/TCP;unicast;interleaved=0-1,RTP/AVP;unicast;client_port=5000-5001"),
            Route::Open { interleaved: true, .. }
        ));
        assert!(matches!(
            setup("RTP/AVP;unicast;client_port=5000-5001,RTP/AVP/TCP;unicast"),
            Route::Open { interleaved: false, .. }
        ));
        assert_eq!(answer("DESCRIBE nonsense RTSP/1.0\r\nCSeq: 1\r\n\r\n").0, 400);
        assert_eq!(answer("SETUP nonsense RTSP/1.0\r\nCSeq: 1\r\n\r\n").0, 400);
    }

    #[test]
    fn describe_answers_with_the_sdp_and_its_base() {
        let movie = Movie::open(concat!(env!("CARGO_MANIFEST_DIR"), "/../media/sample.mp4")).unwrap();
        let r = req("DESCRIBE rtsp://h:8554/sample.mp4 RTSP/1.0\r\nCSeq: 7\r\n\r\n");
        let ok = describe(&r, "/sample.mp4", Ok(&movie), false);
        assert_eq!(ok.status, 200);
        assert_eq!(ok.headers.get("Content-Base"), Some("rtsp://h:8554/sample.mp4/"));
        assert_eq!(ok.headers.get("Content-Type"), Some("application/sdp"));
        assert_eq!(ok.body, movie.sdp().as_bytes());
        let missing = LibraryError::NotFound {
            path: "/x.mp4".into(),
            why: "no such movie",
        };
        let refused = describe(&r, "/x.mp4", Err(&missing), false);
        assert_eq!((refused.status.code(), refused.headers.get("CSeq")), (404, Some("7")));
    }

    fn guarded_door(publishing: bool) -> Door {
        use crate::access::files::MemoryFs;
        let mut fs = MemoryFs::default();
        fs.put(
            "/media/private/qtaccess",
            "AuthScheme basic\nrequire valid-user\n<Limit WRITE>\nrequire valid-user\n</Limit>\n",
        );
        fs.put("/users", "realm Streamalot\n");
        let settings = access::Settings {
            users: Some("/users".into()),
            ..Default::default()
        };
        let access = Access::new(&settings, "/media".into(), Box::new(fs), [7; 32], 0).unwrap();
        let door = Door::new().with_access(Some(access));
        if publishing {
            door.with_publishing()
        } else {
            door
        }
    }

    fn gate(door: &Door, text: &str) -> Gate {
        let caller = Caller {
            client: "192.0.2.1:4000".parse().unwrap(),
        };
        door.gate(&req(text), &caller, 1_000_000_000, 1_700_000_000)
    }

    #[test]
    fn the_gate_judges_what_opens_something() {
        let door = guarded_door(false);
        let refused = |g: Gate| match g {
            Gate::Refuse { response, .. } => (response.status.code(), response),
            Gate::Pass(g) => panic!("passed as {g:?}"),
        };
        let (status, r) = refused(gate(
            &door,
            "DESCRIBE rtsp://h/private/a.mp4 RTSP/1.0\r\nCSeq: 3\r\n\r\n",
        ));
        assert_eq!((status, r.headers.get("CSeq")), (401, Some("3")));
        assert!(r.headers.get("WWW-Authenticate").unwrap().starts_with("Basic realm="));
        let setup = "SETUP rtsp://h/private/a.mp4/trackID=1 RTSP/1.0\r\nCSeq: 4\r\nTransport: RTP/AVP/TCP;interleaved=0-1\r\n\r\n";
        assert_eq!(refused(gate(&door, setup)).0, 401);
        for open in [
            "DESCRIBE rtsp://h/public/a.mp4 RTSP/1.0\r\nCSeq: 1\r\n\r\n",
            "OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n",
            // A session's requests ride on its key.
            "PLAY rtsp://h/private/a.mp4 RTSP/1.0\r\nCSeq: 1\r\nSession: 00000000000000AB\r\n\r\n",
            // The library answers these 400 itself.
            "DESCRIBE rtsp://h/private/../x.mp4 RTSP/1.0\r\nCSeq: 1\r\n\r\n",
            // No WRITE rule there: the route refuses it (405 here).
            "ANNOUNCE rtsp://h/public/live.sdp RTSP/1.0\r\nCSeq: 1\r\n\r\n",
        ] {
            assert!(matches!(gate(&door, open), Gate::Pass(_)), "{open}");
        }
        // `<Limit WRITE>` there: publishing is judged by the access rules.
        let announce = "ANNOUNCE rtsp://h/private/live.sdp RTSP/1.0\r\nCSeq: 2\r\n\r\n";
        let (status, r) = refused(gate(&door, announce));
        assert_eq!((status, r.headers.get("CSeq")), (401, Some("2")));
        let publishing = guarded_door(true);
        let announce = "ANNOUNCE rtsp://h/private/live.sdp RTSP/1.0\r\nCSeq: 5\r\n\r\n";
        assert_eq!(refused(gate(&publishing, announce)).0, 401);
        let record = "SETUP rtsp://h/private/live.sdp/streamid=0 RTSP/1.0\r\nCSeq: 6\r\nSession: 00000000000000AB\r\nTransport: RTP/AVP/TCP;unicast;mode=\"RECORD\"\r\n\r\n";
        assert_eq!(
            refused(gate(&publishing, record)).0,
            401,
            "publishing within a session is judged"
        );
        // Without access rules everything passes.
        assert!(matches!(gate(&Door::new(), announce), Gate::Pass(None)));
    }

    #[test]
    fn publishing_requests_are_checked_then_routed() {
        fn clock() -> crate::source::Nanos {
            1_000_000_000
        }
        let rules = vec!["/live=caster:s3cret".parse().unwrap()];
        let door = Door::new().with_publish_rules(PublishGate::new(rules, [3; 32], clock));
        let caller = Caller {
            client: "192.0.2.1:4000".parse().unwrap(),
        };
        let route = |text: &str| door.route(&req(text), &caller, |key| key == 0xAB);
        let auth = format!(
            "Authorization: {}\r\n",
            crate::access::basic::authorization("caster", "s3cret")
        );
        let announce = "ANNOUNCE rtsp://h/live/cam RTSP/1.0\r\nCSeq: 1\r\n";
        assert!(matches!(route(&format!("{announce}\r\n")), Route::Answer(r) if r.status == 401));
        assert!(matches!(
            route(&format!("{announce}{auth}\r\n")),
            Route::Announce { path, user } if path == "/live/cam" && user == "caster"
        ));
        let elsewhere = format!("ANNOUNCE rtsp://h/vod/a.mp4 RTSP/1.0\r\nCSeq: 1\r\n{auth}\r\n");
        assert!(matches!(route(&elsewhere), Route::Answer(r) if r.status == 403));
        let record_setup = format!(
            "SETUP rtsp://h/live/cam/streamid=0 RTSP/1.0\r\nCSeq: 2\r\n{auth}\
             Transport: RTP/AVP/TCP;unicast;interleaved=0-1;mode=record\r\n\r\n"
        );
        assert!(matches!(route(&record_setup), Route::Publish { path } if path == "/live/cam/streamid=0"));
        let record = format!("RECORD rtsp://h/live/cam RTSP/1.0\r\nCSeq: 3\r\n{auth}\r\n");
        assert!(
            matches!(route(&record), Route::Answer(r) if r.status == 454),
            "RECORD without a session"
        );
        let in_session =
            format!("RECORD rtsp://h/live/cam RTSP/1.0\r\nCSeq: 3\r\n{auth}Session: 00000000000000AB\r\n\r\n");
        assert!(matches!(route(&in_session), Route::Session(0xAB)));
        let unauthorised = "RECORD rtsp://h/live/cam RTSP/1.0\r\nCSeq: 3\r\nSession: 00000000000000AB\r\n\r\n";
        assert!(
            matches!(route(unauthorised), Route::Answer(r) if r.status == 401),
            "a session does not stand in for the credential"
        );
        // Playing is not publishing.
        let play_setup = "SETUP rtsp://h/live/cam/trackID=1 RTSP/1.0\r\nCSeq: 4\r\nTransport: RTP/AVP;unicast;client_port=5000-5001\r\n\r\n";
        assert!(matches!(route(play_setup), Route::Open { .. }));
        let options = route("OPTIONS * RTSP/1.0\r\nCSeq: 5\r\n\r\n");
        assert!(matches!(options, Route::Answer(r) if r.headers.get("Public") == Some(PUBLIC_METHODS_PUBLISHING)));
    }

    #[test]
    fn publishing_outside_the_publish_rules_is_judged_by_write_rules() {
        fn clock() -> crate::source::Nanos {
            1_000_000_000
        }
        let rules = vec!["/live=caster:s3cret".parse().unwrap()];
        let door = guarded_door(false).with_publish_rules(PublishGate::new(rules, [3; 32], clock));
        let caller = Caller {
            client: "192.0.2.1:4000".parse().unwrap(),
        };
        // A `--publish` path: the access rules send no challenge of theirs.
        let live = "ANNOUNCE rtsp://h/live/cam RTSP/1.0\r\nCSeq: 1\r\n\r\n";
        assert!(matches!(gate(&door, live), Gate::Pass(None)));
        let r = door.route(&req(live), &caller, |_| false);
        assert!(
            matches!(&r, Route::Answer(r) if r.status == 401 && r.headers.get("WWW-Authenticate").unwrap().starts_with("Digest")),
            "{r:?}"
        );
        // `<Limit WRITE>`: the access rules' challenge alone, Digest (the
        // file's `AuthScheme basic` is about READ), one per algorithm; not
        // the publish rules' (which always offer Basic too).
        let private = "ANNOUNCE rtsp://h/private/cam RTSP/1.0\r\nCSeq: 2\r\n\r\n";
        match gate(&door, private) {
            Gate::Refuse { response, .. } => {
                let challenges: Vec<_> = response
                    .headers
                    .iter()
                    .filter(|(n, _)| *n == "WWW-Authenticate")
                    .collect();
                assert_eq!(challenges.len(), 2, "{response:?}");
                assert!(challenges.iter().all(|(_, c)| c.starts_with("Digest")), "{response:?}");
            }
            other => panic!("{other:?}"),
        }
        // Let in by them: routed as a broadcast of that user.
        let grant = Grant {
            user: Some("alice".into()),
            via: access::Via::Basic,
        };
        assert!(matches!(
            door.route_granted(&req(private), &caller, Some(&grant), |_| false),
            Route::Announce { path, user } if path == "/private/cam" && user == "alice"
        ));
        // Neither rule: 403, as before.
        let public = "ANNOUNCE rtsp://h/public/cam RTSP/1.0\r\nCSeq: 3\r\n\r\n";
        assert!(matches!(gate(&door, public), Gate::Pass(None)));
        assert!(matches!(door.route(&req(public), &caller, |_| false), Route::Answer(r) if r.status == 403));
    }

    #[test]
    fn unparsable_bytes_get_the_parser_status() {
        assert_eq!(reject(&ParseError::BodyTooLarge(1 << 30)).status, 413);
        assert_eq!(reject(&ParseError::BadVersion("HTTP/1.1".into())).status, 505);
    }
}
