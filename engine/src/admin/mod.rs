//! What an operator sees and steers, over HTTP on the RTSP ports (and the
//! `--http-port`s), without IO: the JSON admin API under `/api/v1/`, the
//! Prometheus metrics at `/metrics` ([`metrics`]) and the status page at `/`
//! ([`page`]). All three are [`Handler`]s that run on the control core and
//! see the server through [`ServerView`]; what they show of a shard's
//! sessions is a copy the shard made when asked
//! ([`crate::shard::Command::Snapshot`]), never its state.
//!
//! # Who may use them
//!
//! The admin API and the page are off unless `--admin-token` is given, and
//! answer only clients in `--admin-allow` (loopback unless configured),
//! whose requests must carry the token as `Authorization: Bearer TOKEN`.
//! Outside the blocks a client gets 403, without a valid credential 401
//! with a `WWW-Authenticate` challenge. `/metrics` needs no credential (a
//! Prometheus server scrapes it) and answers clients in `--metrics-allow`
//! (loopback unless configured). The credential is checked by
//! [`Verifier`]s, one per `Authorization` scheme: HTTP Basic against the
//! users file joins [`BearerToken`] there.
//!
//! # The API
//!
//! | Request | Answer |
//! |---|---|
//! | `GET /api/v1/server` | version, uptime, settings, counts, library |
//! | `GET /api/v1/shards` | each shard's load and counters |
//! | `GET /api/v1/sessions?offset=N&limit=M` | a page of sessions (by age, oldest first) and the total |
//! | `GET /api/v1/sessions/ID` | one session |
//! | `DELETE /api/v1/sessions/ID` | ends it (BYE, access-log line; its TCP connection closes) |
//! | `GET /api/v1/streams`, `/publishers`, `/channels` | live streams (and the relays' state), their publishers, channels |
//! | `DELETE /api/v1/publishers/ID` | stops a publisher |
//! | `GET /api/v1/channels/PATH` | one channel: state, now playing, upcoming |
//! | `POST /api/v1/channels/PATH/skip`, `/stop`, `/start` | the next movie now; off the air; on again |
//! | `POST /api/v1/channels/PATH/insert` with `{"movie": "dir/x.mp4"}` | that movie (under the media folder) plays next |
//! | `POST /api/v1/library/reload` | lets go of indexed movies no session holds, and of changed files |
//! | `GET /api/v1/throughput` | packets and bytes sent, sampled over the last minutes |
//!
//! Errors are JSON too: `{"error": "..."}` with a 4xx status.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;

use proto::http::{Request, Response};
use serde_json::{json, Value};

use crate::access::addr::Cidr;
use crate::config::Secret;
use crate::door::{parse_session_id, session_id};
use crate::http::{ChannelAction, ChannelView, Context, Handler, Reply, Routes, ServerView};
use crate::shard::{SessionInfo, Snapshot, TRANSPORTS};

pub mod metrics;
pub mod page;

#[cfg(test)]
mod tests;

/// The API's version prefix.
pub const PREFIX: &str = "/api/v1/";
/// Sessions per page unless asked; and the most one page may hold.
pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1000;
/// How often the control core samples the totals for the throughput chart,
/// and how many samples it keeps (five minutes).
pub const SAMPLE_EVERY_SECS: u64 = 2;
pub const SAMPLES_KEPT: usize = 150;

/// Checks one `Authorization` scheme's credentials.
pub trait Verifier {
    /// The scheme, as in `Authorization: SCHEME credentials`.
    fn scheme(&self) -> &'static str;
    /// The `WWW-Authenticate` challenge for this scheme.
    fn challenge(&self) -> String;
    /// Whether `credentials` (what follows the scheme) are good.
    fn verify(&self, credentials: &str) -> bool;
}

/// A bearer token (RFC 6750) from the configuration, compared in constant
/// time.
pub struct BearerToken(Secret);

impl BearerToken {
    pub fn new(token: Secret) -> BearerToken {
        BearerToken(token)
    }
}

impl Verifier for BearerToken {
    fn scheme(&self) -> &'static str {
        "Bearer"
    }

    fn challenge(&self) -> String {
        "Bearer realm=\"streamalot admin\"".into()
    }

    fn verify(&self, credentials: &str) -> bool {
        use subtle::ConstantTimeEq;
        let want = self.0.expose().as_bytes();
        let got = credentials.trim().as_bytes();
        // Lengths may differ; `ct_eq` on slices of different lengths is
        // false without looking at the bytes, which gives away only the length.
        bool::from(want.ct_eq(got))
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The admin API is not turned on.
    Off,
    /// The client's address is not in the allowed blocks.
    Address,
    /// No credential, or a wrong one: 401 with these challenges.
    Credential(Vec<String>),
}

impl Refusal {
    pub fn response(&self) -> Response {
        match self {
            Refusal::Off => error(
                403,
                "the admin API is off: start the server with --admin-token or --admin-user",
            ),
            Refusal::Address => error(403, "this address may not use the admin API (see --admin-allow)"),
            Refusal::Credential(challenges) => {
                let mut r = error(401, "a valid Authorization header is needed");
                for c in challenges {
                    r = r.header("WWW-Authenticate", c.clone());
                }
                r
            }
        }
    }
}

/// Who may use the admin API and the page.
pub struct AdminAccess {
    allow: Vec<Cidr>,
    verifiers: Vec<Box<dyn Verifier>>,
    /// Whether users-file logins (Basic, Digest) of the access rules'
    /// admins are taken too (`--admin-user`, `admin_group`).
    logins: bool,
}

impl AdminAccess {
    /// From the configuration: on with a token, for clients in `allow`.
    pub fn new(token: Option<&Secret>, allow: &[Cidr]) -> AdminAccess {
        let verifiers: Vec<Box<dyn Verifier>> = match token {
            Some(t) => vec![Box::new(BearerToken::new(t.clone()))],
            None => Vec::new(),
        };
        AdminAccess::with_verifiers(allow, verifiers)
    }

    pub fn with_verifiers(allow: &[Cidr], verifiers: Vec<Box<dyn Verifier>>) -> AdminAccess {
        AdminAccess {
            allow: allow.to_vec(),
            verifiers,
            logins: false,
        }
    }

    /// The same, taking users-file logins of the access rules' admins
    /// (judged by the door as `Class::Admin`) when `logins`.
    pub fn with_logins(mut self, logins: bool) -> AdminAccess {
        self.logins = logins;
        self
    }

    pub fn is_on(&self) -> bool {
        !self.verifiers.is_empty() || self.logins
    }

    /// Whether users-file logins are taken.
    pub fn logins(&self) -> bool {
        self.logins
    }

    /// Whether `client` may reach the page at all (no credential needed
    /// for the page itself: it asks for the token).
    pub fn reaches(&self, client: IpAddr) -> Result<(), Refusal> {
        if !self.is_on() {
            return Err(Refusal::Off);
        }
        if !self.allow.iter().any(|b| b.contains(client)) {
            return Err(Refusal::Address);
        }
        Ok(())
    }

    /// Whether a request from `client` with `authorization` may use the API.
    pub fn check(&self, client: IpAddr, authorization: Option<&str>) -> Result<(), Refusal> {
        self.reaches(client)?;
        let good = authorization
            .and_then(|a| a.trim().split_once(' '))
            .is_some_and(|(scheme, rest)| {
                self.verifiers
                    .iter()
                    .any(|v| v.scheme().eq_ignore_ascii_case(scheme) && v.verify(rest))
            });
        if good {
            Ok(())
        } else {
            Err(Refusal::Credential(
                self.verifiers.iter().map(|v| v.challenge()).collect(),
            ))
        }
    }
}

/// A JSON answer.
pub fn json_response(status: u16, value: &Value) -> Response {
    Response::new(status)
        .header("Cache-Control", "no-store")
        .body("application/json", format!("{value}\n"))
}

/// A JSON error answer.
pub fn error(status: u16, message: impl Into<String>) -> Response {
    json_response(status, &json!({ "error": message.into() }))
}

/// Registers the admin API, the status page and `/metrics` in `routes`.
pub fn register(routes: &mut Routes, access: std::rc::Rc<AdminAccess>, metrics_allow: Vec<Cidr>) {
    routes.add_prefix(PREFIX, &["GET", "POST", "DELETE"], Api { access: access.clone() });
    routes.add("/", &["GET"], page::StatusPage { access });
    routes.add("/metrics", &["GET"], metrics::Metrics { allow: metrics_allow });
}

/// The admin API's handler.
pub struct Api {
    access: std::rc::Rc<AdminAccess>,
}

impl Handler for Api {
    fn serve<'a>(&'a self, req: &'a Request, cx: Context<'a>) -> Pin<Box<dyn Future<Output = Reply> + 'a>> {
        Box::pin(async move {
            let auth = req.head.headers.get("Authorization");
            let response = match self.access.check(cx.client.ip(), auth) {
                Err(Refusal::Credential(challenges)) if self.access.logins() => {
                    match login(req, cx.client.ip(), cx.server, &challenges) {
                        Ok(()) => answer(req, cx.server).await,
                        Err(refused) => refused,
                    }
                }
                Err(r) => r.response(),
                Ok(()) => answer(req, cx.server).await,
            };
            Reply::Respond(response)
        })
    }
}

/// A request the token did not let in, judged by the access rules as
/// `Class::Admin` (a users-file login of `--admin-user` or the admin
/// group): go on, or the answer. Both schemes' challenges go in a 401, the
/// token's (`challenges`) and the access rules', as the client may hold
/// either; the access rules' address lists for admin apply on top of
/// `--admin-allow`, which [`AdminAccess::check`] applied first.
fn login(req: &Request, client: IpAddr, server: &dyn ServerView, challenges: &[String]) -> Result<(), Response> {
    let authorization: Vec<&str> = req
        .head
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("Authorization"))
        .map(|(_, v)| v)
        .collect();
    let Some(gate) = server.admin_login(client, &req.head.method, &req.head.target, &authorization) else {
        return Err(Refusal::Credential(challenges.to_vec()).response());
    };
    match gate {
        crate::door::Gate::Pass(_) => Ok(()),
        crate::door::Gate::Refuse { response, .. } => Err(match response.status.code() {
            401 => {
                let mut all = challenges.to_vec();
                all.extend(
                    response
                        .headers
                        .iter()
                        .filter(|(n, _)| n.eq_ignore_ascii_case("WWW-Authenticate"))
                        .map(|(_, v)| v.to_owned()),
                );
                Refusal::Credential(all).response()
            }
            403 => error(403, "this user may not use the admin API"),
            code => {
                let mut r = error(code, "too many failed logins; try again later");
                if let Some(after) = response.headers.get("Retry-After") {
                    r = r.header("Retry-After", after.to_owned());
                }
                r
            }
        }),
    }
}

/// What a request to the API asks, by method and path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Server,
    Shards,
    Sessions(Page),
    Session(u64),
    EndSession(u64),
    Streams,
    Publishers,
    StopPublisher(String),
    Channels,
    Channel(String),
    ChannelAction(String, ChannelAction),
    ReloadLibrary,
    Throughput,
}

/// A page of a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub offset: usize,
    pub limit: usize,
}

/// Classifies an API request (method `HEAD` as `GET`), or the error to
/// answer it with.
pub fn parse_call(method: &str, target: &str, body: &[u8]) -> Result<Call, Response> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let Some(rest) = path.strip_prefix(PREFIX) else {
        return Err(error(404, "no such API path"));
    };
    let parts: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    let method = if method == "HEAD" { "GET" } else { method };
    let call = match (method, parts.as_slice()) {
        ("GET", ["server"]) => Call::Server,
        ("GET", ["shards"]) => Call::Shards,
        ("GET", ["sessions"]) => Call::Sessions(parse_page(query)?),
        ("GET", ["sessions", id]) => Call::Session(parse_id(id)?),
        ("DELETE", ["sessions", id]) => Call::EndSession(parse_id(id)?),
        ("GET", ["streams"]) => Call::Streams,
        ("GET", ["publishers"]) => Call::Publishers,
        ("DELETE", ["publishers", id]) if !id.is_empty() => Call::StopPublisher((*id).to_owned()),
        ("GET", ["channels"]) => Call::Channels,
        ("POST", ["channels", path @ .., action]) if !path.is_empty() => {
            let action = match *action {
                "skip" => ChannelAction::Skip,
                "stop" => ChannelAction::Stop,
                "start" => ChannelAction::Start,
                "insert" => ChannelAction::Insert(parse_insert(body)?),
                _ => return Err(error(404, "channel actions are skip, insert, stop and start")),
            };
            Call::ChannelAction(path.join("/"), action)
        }
        ("GET", ["channels", path @ ..]) if !path.is_empty() => Call::Channel(path.join("/")),
        (_, ["channels", _, ..]) => {
            return Err(error(405, "method not allowed here").header("Allow", "GET, HEAD, POST"))
        }
        ("POST", ["library", "reload"]) => {
            parse_reload(body)?;
            Call::ReloadLibrary
        }
        ("GET", ["throughput"]) => Call::Throughput,
        (_, ["server" | "shards" | "streams" | "publishers" | "channels" | "throughput"]) => {
            return Err(error(405, "method not allowed here").header("Allow", "GET, HEAD"))
        }
        (_, ["sessions"]) => return Err(error(405, "method not allowed here").header("Allow", "GET, HEAD")),
        (_, ["sessions", _]) => return Err(error(405, "method not allowed here").header("Allow", "DELETE, GET, HEAD")),
        (_, ["publishers", _]) => return Err(error(405, "method not allowed here").header("Allow", "DELETE")),
        (_, ["library", "reload"]) => return Err(error(405, "method not allowed here").header("Allow", "POST")),
        _ => return Err(error(404, "no such API path")),
    };
    Ok(call)
}

/// `offset=N&limit=M`, both optional; anything else in the query is an
/// error rather than silently ignored (a misspelt `limt=5` would page
/// otherwise than asked).
fn parse_page(query: &str) -> Result<Page, Response> {
    let mut page = Page {
        offset: 0,
        limit: DEFAULT_LIMIT,
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let number = || {
            value
                .parse::<usize>()
                .map_err(|_| error(400, format!("{key} must be a whole number, not {value:?}")))
        };
        match key {
            "offset" => page.offset = number()?,
            "limit" => {
                page.limit = number()?;
                if page.limit == 0 || page.limit > MAX_LIMIT {
                    return Err(error(400, format!("limit must be from 1 to {MAX_LIMIT}")));
                }
            }
            _ => return Err(error(400, format!("unknown query parameter {key:?}"))),
        }
    }
    Ok(page)
}

/// A session ID as the `Session` header carries it.
fn parse_id(id: &str) -> Result<u64, Response> {
    parse_session_id(id).ok_or_else(|| error(400, format!("{id:?} is not a session ID (16 hexadecimal digits)")))
}

/// The body of an insert: `{"movie": "PATH"}`, a path under the media
/// folder.
fn parse_insert(body: &[u8]) -> Result<String, Response> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(o)) => {
            if let Some(k) = o.keys().find(|k| *k != "movie") {
                return Err(error(400, format!("unknown field {k:?}")));
            }
            match o.get("movie") {
                Some(Value::String(m)) if !m.trim().is_empty() => Ok(m.clone()),
                _ => Err(error(400, "the body must name the movie: {\"movie\": \"PATH\"}")),
            }
        }
        Ok(_) => Err(error(400, "the body must be a JSON object")),
        Err(e) => Err(error(400, format!("the body is not JSON: {e}"))),
    }
}

/// The body of a reload: nothing, or an empty JSON object (room for options).
fn parse_reload(body: &[u8]) -> Result<(), Response> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(o)) if o.is_empty() => Ok(()),
        Ok(Value::Object(o)) => Err(error(
            400,
            format!(
                "unknown field {:?}",
                o.keys().next().map(String::as_str).unwrap_or_default()
            ),
        )),
        Ok(_) => Err(error(400, "the body must be a JSON object")),
        Err(e) => Err(error(400, format!("the body is not JSON: {e}"))),
    }
}

/// Carries out an API request.
pub async fn answer(req: &Request, server: &dyn ServerView) -> Response {
    let call = match parse_call(&req.head.method, &req.head.target, &req.body) {
        Ok(c) => c,
        Err(r) => return r,
    };
    match call {
        Call::Server => json_response(200, &server_json(server)),
        Call::Shards => json_response(200, &shards_json(&server.snapshots(false).await)),
        Call::Sessions(page) => {
            let sessions = all_sessions(&server.snapshots(true).await);
            json_response(200, &sessions_page(&sessions, page))
        }
        Call::Session(key) => match all_sessions(&server.snapshots(true).await)
            .iter()
            .find(|s| s.key == key)
        {
            Some(s) => json_response(200, &session_json(s)),
            None => error(404, format!("no session {}", session_id(key))),
        },
        Call::EndSession(key) => {
            if server.end_session(key).await {
                json_response(200, &json!({ "ended": session_id(key) }))
            } else {
                error(404, format!("no session {}", session_id(key)))
            }
        }
        Call::Streams => {
            let live = server.stats().await.live;
            let streams: Vec<_> = server
                .publishers()
                .into_iter()
                .filter(|p| p.on_air)
                .map(|p| {
                    let l = live.get(&p.path).copied().unwrap_or_default();
                    json!({
                        "path": p.path,
                        "publisher": p.id,
                        "viewers": l.viewers,
                        "streams": p.streams.iter().map(|(kind, clock)| json!({ "kind": kind, "clock_rate": clock })).collect::<Vec<_>>(),
                        "bitrate_in": if p.secs > 0.0 { (p.bytes_in as f64 * 8.0 / p.secs).round() } else { 0.0 },
                        "packets_in": p.packets_in,
                        "dropped_slow_viewers": l.dropped_slow,
                        "dropped_channel_full": l.channel_full,
                    })
                })
                .collect();
            let relays: Vec<_> = server
                .relays()
                .into_iter()
                .map(|r| {
                    json!({
                        "path": r.path,
                        "origin": r.origin,
                        "transport": r.transport,
                        "mode": r.mode,
                        "state": r.state,
                        "on_air": streams.iter().any(|s| s["path"] == r.path.as_str()),
                        "plays": r.plays,
                        "failures": r.failures,
                        "last_error": r.last_error,
                    })
                })
                .collect();
            json_response(200, &json!({ "streams": streams, "relays": relays }))
        }
        Call::Publishers => {
            let publishers: Vec<_> = server
                .publishers()
                .into_iter()
                .map(|p| {
                    json!({
                        "id": p.id,
                        "path": p.path,
                        "client": p.client.to_string(),
                        "user": p.user,
                        "state": if p.on_air { "recording" } else { "announced" },
                        "transport": p.transport,
                        "packets_in": p.packets_in,
                        "bytes_in": p.bytes_in,
                        "refused_in": p.refused_in,
                        "age_secs": p.secs,
                    })
                })
                .collect();
            json_response(200, &json!({ "publishers": publishers }))
        }
        Call::StopPublisher(id) => {
            if server.stop_publisher(&id) {
                json_response(200, &json!({ "stopped": id }))
            } else {
                error(404, format!("no publisher {id:?}"))
            }
        }
        Call::Channels => {
            let live = server.stats().await.live;
            let channels: Vec<Value> = server
                .channels()
                .iter()
                .map(|c| channel_json(c, live.get(&format!("/{}", c.path)).map_or(0, |l| l.viewers)))
                .collect();
            json_response(200, &json!({ "channels": channels }))
        }
        Call::Channel(path) => match server.channels().iter().find(|c| c.path == path) {
            Some(c) => {
                let live = server.stats().await.live;
                json_response(
                    200,
                    &channel_json(c, live.get(&format!("/{path}")).map_or(0, |l| l.viewers)),
                )
            }
            None => error(404, format!("no channel {path:?}")),
        },
        Call::ChannelAction(path, action) => match server.channel_action(&path, action).await {
            Ok(done) => json_response(200, &json!({ "channel": path, "done": done })),
            Err((status, why)) => error(status, why),
        },
        Call::ReloadLibrary => {
            let dropped = server.reload_library();
            json_response(200, &json!({ "dropped": dropped, "cached": server.library_cached() }))
        }
        Call::Throughput => json_response(200, &throughput_json(&server.throughput())),
    }
}

fn channel_json(c: &ChannelView, viewers: u64) -> Value {
    json!({
        "path": c.path,
        "playlist": c.playlist,
        "state": c.state,
        "mode": c.mode,
        "run": c.run,
        "publisher": c.publisher,
        "viewers": viewers,
        "now": c.now.as_ref().map(|n| json!({
            "number": n.number,
            "movie": n.movie,
            "title": n.title,
            "inserted": n.inserted,
            "position_secs": n.position_secs,
            "length_secs": n.length_secs,
        })),
        "next": c.upcoming.first(),
        "upcoming": c.upcoming,
        "movies_started": c.movies_started,
        "error": c.error,
        "notes": c.notes,
    })
}

fn server_json(server: &dyn ServerView) -> Value {
    let c = server.config();
    let counts = server.counts();
    let limit = |n: usize| if n == usize::MAX { Value::Null } else { json!(n) };
    json!({
        "name": "streamalot",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": server.uptime_secs(),
        "health": "ok",
        "counts": {
            "connections": counts.connections,
            "sessions": counts.sessions,
            "tunnels": counts.tunnels,
            "shards": counts.per_shard.len(),
        },
        "library": {
            "root": c.media.display().to_string(),
            "cached": server.library_cached(),
        },
        "config": {
            "rtsp_ports": c.rtsp_ports,
            "http_ports": c.http_ports,
            "bind": c.bind.to_string(),
            "shards": c.shards,
            "rtp_ports": [c.rtp_ports.start(), c.rtp_ports.end()],
            "session_timeout_secs": c.session_timeout,
            "max_connections": limit(c.max_connections),
            "max_connections_per_client": limit(c.max_connections_per_client),
            "max_sessions": limit(c.max_sessions),
            "max_sessions_per_client": limit(c.max_sessions_per_client),
            "max_header_bytes": c.max_header_bytes,
            "max_body_bytes": c.max_body_bytes,
            "tcp_queue_bytes": c.tcp_queue_bytes,
            "instant_on": c.instant_on.map(|(rate, lead)| json!({ "rate": f64::from(rate) / 100.0, "lead_secs": lead as f64 / 1000.0 })),
            "thinning": c.thinning,
            "send_path": c.send_path.to_string(),
            "admin_allow": c.admin_allow.iter().map(|b| b.to_string()).collect::<Vec<_>>(),
            "metrics_allow": c.metrics_allow.iter().map(|b| b.to_string()).collect::<Vec<_>>(),
        },
    })
}

fn shards_json(snapshots: &[Snapshot]) -> Value {
    let shards: Vec<Value> = snapshots
        .iter()
        .map(|s| {
            let by: serde_json::Map<String, Value> = TRANSPORTS
                .iter()
                .zip(s.by_transport)
                .map(|(t, n)| ((*t).to_owned(), json!(n)))
                .collect();
            let h = &s.stats.lateness;
            let f = &s.stats.first_packet;
            json!({
                "index": s.shard,
                "sessions": s.by_transport.iter().sum::<usize>(),
                "by_transport": by,
                "connections": s.connections,
                "packets": s.stats.packets,
                "bytes": s.stats.bytes,
                "sessions_started": s.stats.sessions_started,
                "sessions_ended": s.stats.sessions_ended,
                "dropped": {
                    "tcp_queue_full": s.stats.dropped_tcp,
                    "udp_not_sent": s.stats.dropped_udp,
                    "damaged_hint": s.stats.skipped,
                },
                "ahead_packets": s.stats.ahead_packets,
                "thinned": { "frames": s.stats.thinned_frames, "packets": s.stats.thinned_packets },
                "rtcp_reported_lost": s.stats.rtcp_lost,
                "lateness_us": { "p50": h.value_at_quantile(0.5), "p99": h.value_at_quantile(0.99), "max": h.max() },
                "first_packet_us": { "count": f.len(), "p50": f.value_at_quantile(0.5), "p99": f.value_at_quantile(0.99) },
            })
        })
        .collect();
    json!({ "shards": shards })
}

/// Every shard's sessions, oldest first (ties by ID), so pages follow each
/// other while sessions come and go: new ones are appended at the end.
pub fn all_sessions(snapshots: &[Snapshot]) -> Vec<SessionInfo> {
    let mut all: Vec<SessionInfo> = snapshots.iter().flat_map(|s| s.sessions.iter().cloned()).collect();
    all.sort_by(|a, b| b.age_ns.cmp(&a.age_ns).then_with(|| a.id.cmp(&b.id)));
    all
}

pub fn sessions_page(all: &[SessionInfo], page: Page) -> Value {
    let items: Vec<Value> = all
        .iter()
        .skip(page.offset)
        .take(page.limit)
        .map(session_json)
        .collect();
    json!({
        "total": all.len(),
        "offset": page.offset,
        "limit": page.limit,
        "sessions": items,
    })
}

pub fn session_json(s: &SessionInfo) -> Value {
    json!({
        "id": s.id,
        "client": s.client.to_string(),
        "path": s.path,
        "transport": s.transport,
        "kind": s.kind,
        "state": s.state,
        "packets": s.packets,
        "bytes": s.bytes,
        "lost": s.lost,
        "jitter_ms": s.jitter_us.map(|us| us as f64 / 1_000.0),
        "lateness_ms": { "last": s.late_last_us as f64 / 1_000.0, "max": s.late_max_us as f64 / 1_000.0 },
        "frames_thinned": s.frames_thinned,
        "quality": s.quality,
        "lead_ms": s.lead_ms,
        "speed": s.speed,
        "age_secs": s.age_ns as f64 / 1e9,
        "user_agent": s.user_agent,
    })
}

fn throughput_json(samples: &[crate::http::Sample]) -> Value {
    let points: Vec<Value> = samples
        .windows(2)
        .map(|w| {
            let dt = (w[1].at_secs - w[0].at_secs).max(1e-3);
            json!({
                "at_secs": w[1].at_secs,
                "packets": w[1].packets,
                "bytes": w[1].bytes,
                "bits_per_sec": w[1].bytes.saturating_sub(w[0].bytes) as f64 * 8.0 / dt,
                "packets_per_sec": w[1].packets.saturating_sub(w[0].packets) as f64 / dt,
            })
        })
        .collect();
    json!({ "interval_secs": SAMPLE_EVERY_SECS, "samples": points })
}

/// The throughput samples the control core keeps: a ring of the last
/// [`SAMPLES_KEPT`].
#[derive(Debug, Default)]
pub struct History {
    samples: std::collections::VecDeque<crate::http::Sample>,
}

impl History {
    pub fn push(&mut self, sample: crate::http::Sample) {
        if self.samples.len() == SAMPLES_KEPT {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
    }

    pub fn samples(&self) -> Vec<crate::http::Sample> {
        self.samples.iter().copied().collect()
    }
}
