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
//! # Where the next pieces go
//!
//! The door is where every check that concerns a request rather than a
//! session belongs, so that the control core and the shards cannot drift
//! apart:
//!
//! - **Address rules and authentication** (DSS's `qtaccess` files, Basic and
//!   Digest): a step before 2, given the [`Caller`]'s address and the
//!   request's `Authorization`, answering 401 (with the challenge) or 403.
//!   `Caller` is where the connection's authenticated user will be kept.
//! - **HTTP on the RTSP ports** (RTSP-over-HTTP tunnels, the admin API,
//!   `/metrics`, the status page, Icecast/ICY sources and listeners): told
//!   apart by the first request line before any parser sees it, in the
//!   connection loop, which asks the door where each HTTP request goes
//!   ([`Door::route_http`], by [`crate::http::route`] over the handlers
//!   registered in the door's [`Routes`]). Checks that concern every
//!   request, HTTP or RTSP (address rules, authentication), go before both.
//! - **Limits** beyond the parser's size limits (request rates, methods an
//!   operator turns off): as step 0, a `Route::Answer` with 503 or 405.

use std::net::SocketAddr;
use std::rc::Rc;

use loader::Movie;
use proto::rtsp::header::{Lower, Transport};
use proto::rtsp::message::{Method, ParseError, Request, Response};
use proto::rtsp::url::split_uri;
use tracing::debug;

use crate::http::{HttpRoute, Routes};
use crate::library::LibraryError;
use crate::live::publish::Gate;
use crate::pacer::SessionKey;

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

/// The door: the HTTP handlers registered on this core, and the rules of
/// the pieces to come (see the module documentation).
#[derive(Debug, Default, Clone)]
pub struct Door {
    routes: Routes,
    /// Who may publish where; `None`: nobody, anywhere.
    publish: Option<Rc<Gate>>,
}

impl Door {
    pub fn new() -> Door {
        Door::default()
    }

    /// A door that serves HTTP requests with `routes` besides tunnels.
    pub fn with_routes(routes: Routes) -> Door {
        Door { routes, publish: None }
    }

    /// The door, letting publishers in by `gate`'s rules.
    pub fn with_publishing(mut self, gate: Gate) -> Door {
        self.publish = Some(Rc::new(gate));
        self
    }

    /// The publish rules, if publishing is on.
    pub fn publishing(&self) -> Option<&Gate> {
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
    /// RECORD) when publishing is on: checked against the publish rules
    /// (401 with challenges, or 403), then routed. `None` for every other
    /// request.
    fn route_publishing(&self, req: &Request, caller: &Caller, cseq: &str) -> Option<Route> {
        let gate = self.publish.as_ref()?;
        let record_setup = req.method == Method::Setup && wants_record(req);
        if !matches!(req.method, Method::Announce | Method::Record) && !record_setup {
            return None;
        }
        let Some((path, _)) = split_uri(&req.uri) else {
            return Some(Route::Answer(Response::new(400, Some(cseq))));
        };
        let user = match gate.check(req, path, caller.client.ip()) {
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
        let Some(cseq) = req.cseq() else {
            return Route::Answer(Response::new(400, None));
        };
        if let Some(route) = self.route_publishing(req, caller, cseq) {
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

/// Whether a SETUP's transports ask to record (`mode=record`).
pub fn wants_record(req: &Request) -> bool {
    req.headers
        .get("Transport")
        .map(Transport::parse_list)
        .is_some_and(|l| l.into_iter().flatten().any(|t| t.record))
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

/// The answer to a DESCRIBE of `path`: the movie's SDP, with the base URL
/// its relative track controls resolve against, or the library's refusal.
pub fn describe(req: &Request, path: &str, movie: Result<&Movie, &LibraryError>) -> Response {
    let cseq = req.cseq();
    match movie {
        Ok(movie) => describe_sdp(req, path, movie.sdp()),
        Err(e) => {
            debug!(uri = %req.uri, error = %e, "DESCRIBE refused");
            Response::new(e.status(), cseq)
        }
    }
}

/// The answer to a DESCRIBE of `path` whose presentation is `sdp` (a
/// movie's, or a live broadcast's), with the base URL its relative track
/// controls resolve against.
pub fn describe_sdp(req: &Request, path: &str, sdp: &str) -> Response {
    let base = match req.uri.split_once("://") {
        Some((_, rest)) => {
            let authority = rest.split('/').next().unwrap_or_default();
            format!("rtsp://{authority}{path}/")
        }
        None => format!("{path}/"),
    };
    Response::new(200, req.cseq())
        .header("Content-Base", base)
        .body("application/sdp", sdp.as_bytes().to_vec())
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
        let ok = describe(&r, "/sample.mp4", Ok(&movie));
        assert_eq!(ok.status, 200);
        assert_eq!(ok.headers.get("Content-Base"), Some("rtsp://h:8554/sample.mp4/"));
        assert_eq!(ok.headers.get("Content-Type"), Some("application/sdp"));
        assert_eq!(ok.body, movie.sdp().as_bytes());
        let missing = LibraryError::NotFound {
            path: "/x.mp4".into(),
            why: "no such movie",
        };
        let refused = describe(&r, "/x.mp4", Err(&missing));
        assert_eq!((refused.status.code(), refused.headers.get("CSeq")), (404, Some("7")));
    }

    #[test]
    fn publishing_requests_are_checked_then_routed() {
        fn clock() -> crate::source::Nanos {
            1_000_000_000
        }
        let rules = vec!["/live=caster:s3cret".parse().unwrap()];
        let door = Door::new().with_publishing(Gate::new(rules, [3; 32], clock));
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
    fn unparsable_bytes_get_the_parser_status() {
        assert_eq!(reject(&ParseError::BodyTooLarge(1 << 30)).status, 413);
        assert_eq!(reject(&ParseError::BadVersion("HTTP/1.1".into())).status, 505);
    }
}
