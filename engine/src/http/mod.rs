//! HTTP on the RTSP ports (and on `--http-port`s): what a request is for,
//! without IO. A connection whose first line is an HTTP request is read by
//! the same connection loop as RTSP (`server/conn.rs`), and each request is
//! classified once, by [`route`] behind the [door](crate::door), into an
//! [`HttpRoute`] that the control core carries out.
//!
//! What is served:
//!
//! - **RTSP-over-HTTP tunnels** ([`tunnel`], [`proto::tunnel`]): a GET or
//!   POST that carries `x-sessioncookie` (or the tunnel's media type) on any
//!   path. The legs are paired by the control core's [`tunnel::Registry`].
//! - **Handlers registered for a path** ([`Routes::add`], by prefix or by
//!   suffix too): the seam for the admin API, `/metrics`, the status page
//!   and Icecast (`.mp3`, [`crate::icecast::files`]). An unknown path is
//!   404, a method the path has no handler for 405 with `Allow`.
//!
//! # Adding a handler
//!
//! A handler is a value that answers a request, registered in
//! `server/control.rs` where the control core builds its [`Routes`]:
//!
//! ```
//! use std::future::Future;
//! use std::pin::Pin;
//! use proto::http::{Request, Response};
//! use streamalot::http::{Context, Handler, Reply, Routes};
//!
//! struct Health;
//!
//! impl Handler for Health {
//!     fn serve<'a>(&'a self, _req: &'a Request, cx: Context<'a>) -> Pin<Box<dyn Future<Output = Reply> + 'a>> {
//!         Box::pin(async move {
//!             let counts = cx.server.counts();
//!             let body = format!("{{\"sessions\":{},\"connections\":{}}}", counts.sessions, counts.connections);
//!             Reply::Respond(Response::new(200).body("application/json", body))
//!         })
//!     }
//! }
//!
//! let mut routes = Routes::new();
//! routes.add("/api/v1/health", &["GET"], Health);
//! ```
//!
//! It runs on the control core, may wait (for the shards' statistics,
//! `cx.server.stats().await`), and answers with a whole [`Response`]; HEAD is
//! served by the GET handler with the body left out. [`ServerView`] is what
//! the control core lets handlers see; what the admin API needs beyond it
//! (sessions, ending one) belongs there.
//!
//! Two kinds of request keep their connection once answered, and the seam
//! has room for both: a **streaming response** (an Icecast listener's `GET
//! /x.mp3`, served by [`crate::icecast::files`]: a [`Reply::Take`] with
//! [`Takeover::Listen`], whose start carries the [`Response::streaming`]
//! head, after which the connection moves, as a tunnel's GET leg does, to
//! the shard that feeds it and writes the head before the audio), and a
//! **streaming request body** (Icecast's `SOURCE`/`PUT`, like a tunnel's
//! POST: registered with [`Routes::add_streaming`], its handler is called as
//! soon as the head has arrived, and the body's first bytes stay in the
//! connection's buffer for whoever takes it).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;

use proto::http::{Head, Request, Response, Version};
use proto::tunnel::{Cookie, Leg};

use std::sync::Arc;

use loader::mp3::Mp3;

use crate::config::Config;
use crate::icecast::listener::ListenerStart;
use crate::library::LibraryError;
use crate::pacer::SessionKey;
use crate::shard::Snapshot;
use crate::stats::{RequestCounts, ShardStats};

pub mod tunnel;

/// The `Server` header of every HTTP response.
pub const SERVER: &str = concat!("Streamalot/", env!("CARGO_PKG_VERSION"));

/// Writes `response` to `out` with the server's own headers: in `version`,
/// answering a request that asked for `keep_alive`, without the body for
/// HEAD (`head_only`).
pub fn write(out: &mut Vec<u8>, response: &Response, version: Version, keep_alive: bool, head_only: bool) {
    let mut r = response.clone();
    r.headers.push("Server", SERVER);
    r.write_to(out, version, keep_alive, head_only);
}

/// What the control core tells handlers, and what it lets them do.
pub trait ServerView {
    /// Connections, sessions and shards now.
    fn counts(&self) -> Counts;
    /// Every shard's statistics, merged.
    fn stats(&self) -> Pin<Box<dyn Future<Output = ShardStats> + '_>>;
    /// The MP3 file at a request path, from the library (indexed off the
    /// pacing cores if it is not yet). A view without a library finds none.
    fn open_mp3<'a>(&'a self, path: &'a str) -> Pin<Box<dyn Future<Output = Result<Arc<Mp3>, LibraryError>> + 'a>> {
        Box::pin(async move {
            Err(LibraryError::NotFound {
                path: path.to_owned(),
                why: "no library",
            })
        })
    }
    /// Counts a new Icecast listener from `client` if the listener limit
    /// leaves room (`false`: 503). Counted until its shard reports it ended.
    fn admit_listener(&self, client: SocketAddr) -> bool {
        let _ = client;
        false
    }
    /// Judges an admin API request (`method`, `target`, its `Authorization`
    /// values) from `client` by the access rules, as `Class::Admin`: a
    /// users-file login of an admin user or group member. `None` when the
    /// server has no access rules, which admits no one this way.
    fn admin_login(
        &self,
        client: std::net::IpAddr,
        method: &str,
        target: &str,
        authorization: &[&str],
    ) -> Option<crate::door::Gate> {
        let _ = (client, method, target, authorization);
        None
    }
    /// The settings the server runs with.
    fn config(&self) -> &Config;
    /// Since the server started, in seconds.
    fn uptime_secs(&self) -> f64;
    /// Movies the shared library holds indexed.
    fn library_cached(&self) -> usize;
    /// Each shard's snapshot, in shard order (with each session's figures
    /// when `sessions`): the shards copy their own state when asked, over
    /// the channels, and nothing of theirs is shared.
    fn snapshots(&self, sessions: bool) -> Pin<Box<dyn Future<Output = Vec<Snapshot>> + '_>>;
    /// Ends session `key` wherever it is: `false` if there is no such
    /// session (any more).
    fn end_session(&self, key: SessionKey) -> Pin<Box<dyn Future<Output = bool> + '_>>;
    /// Lets go of every indexed movie that no session holds, and of those
    /// whose file changed or went, so the next request indexes the file
    /// as it is now. Returns how many were dropped.
    fn reload_library(&self) -> usize;
    /// RTSP responses the control core wrote, by method and status.
    fn control_requests(&self) -> RequestCounts;
    /// Packets and bytes sent, as sampled over the last minutes.
    fn throughput(&self) -> Vec<Sample>;
    /// Checks an Icecast source's (or `/admin/metadata`'s) `Authorization`
    /// values for `path` against the publish rules, by Basic: the user, or
    /// the status to answer (403 where no rule covers the path or
    /// publishing is off, 401 without the credential).
    fn check_source(&self, path: &str, authorization: &[&str]) -> Result<String, u16> {
        let _ = (path, authorization);
        Err(403)
    }
    /// Opens mount `path` for a source from `client`: its number, or why
    /// not (a source is on it already).
    fn open_mount(
        &self,
        path: &str,
        client: SocketAddr,
        user: String,
        info: crate::icecast::source::IceInfo,
    ) -> Result<crate::icecast::mount::MountId, crate::icecast::mount::MountError> {
        let _ = (client, user, info);
        Err(crate::icecast::mount::MountError::Busy(path.to_owned()))
    }
    /// The live mount at `path`, if one is fed now.
    fn mount(&self, path: &str) -> Option<crate::icecast::mount::Mount> {
        let _ = path;
        None
    }
    /// Every live mount now.
    fn mounts(&self) -> Vec<crate::icecast::mount::Mount> {
        Vec::new()
    }
    /// Sets the title listeners of mount `path` read from now on: `false`
    /// if there is no such mount.
    fn set_mount_title(&self, path: &str, title: &str) -> bool {
        let _ = (path, title);
        false
    }
    /// The live broadcasts' publishers (on the air or announced).
    fn publishers(&self) -> Vec<PublisherView> {
        Vec::new()
    }
    /// Stops the publisher whose session ID is `id` (its broadcast ends):
    /// `false` if there is none.
    fn stop_publisher(&self, id: &str) -> bool {
        let _ = id;
        false
    }
    /// The configured relays and where each is.
    fn relays(&self) -> Vec<RelayView> {
        Vec::new()
    }
    /// The channels the server runs, with what each plays now and next.
    fn channels(&self) -> Vec<ChannelView> {
        Vec::new()
    }
    /// Asks channel `path` (without its leading `/`) to do `action`: what
    /// was done, or the status and reason it was not.
    fn channel_action<'a>(
        &'a self,
        path: &'a str,
        action: ChannelAction,
    ) -> Pin<Box<dyn Future<Output = ChannelOutcome> + 'a>> {
        let _ = action;
        Box::pin(async move { Err((404, format!("no channel {path:?}"))) })
    }
}

/// A relay, as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayView {
    pub path: String,
    /// The origin's URL, without credentials.
    pub origin: String,
    /// `tcp` or `udp`, from the origin.
    pub transport: &'static str,
    /// `on-demand` or `always`.
    pub mode: &'static str,
    /// `idle`, `connecting`, `playing` or `backoff`.
    pub state: &'static str,
    /// Connections that reached PLAY, and attempts that failed or ended.
    pub plays: u64,
    pub failures: u64,
    pub last_error: Option<String>,
}

/// What a channel action did, or the status and reason it was not done.
pub type ChannelOutcome = Result<String, (u16, String)>;

/// A channel, as the admin API shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelView {
    /// Without its leading `/`.
    pub path: String,
    pub playlist: String,
    /// `starting`, `on_air`, `paused`, `stopped`, `ended` or `failed`.
    pub state: &'static str,
    pub mode: &'static str,
    /// `always` or `on-demand`.
    pub run: &'static str,
    /// Its publisher session ID while on the air.
    pub publisher: Option<String>,
    pub now: Option<NowPlaying>,
    /// The movies after the current one, next first.
    pub upcoming: Vec<String>,
    pub movies_started: u64,
    /// Why it is not on the air, when it failed.
    pub error: Option<String>,
    /// The latest problems and operator actions, oldest first.
    pub notes: Vec<String>,
}

/// The movie a channel plays now.
#[derive(Debug, Clone, PartialEq)]
pub struct NowPlaying {
    /// 1 for the channel's first movie.
    pub number: u64,
    pub movie: String,
    pub title: Option<String>,
    pub inserted: bool,
    pub position_secs: f64,
    pub length_secs: f64,
}

/// What an operator asks of a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelAction {
    /// The next movie now.
    Skip,
    /// This movie (a path under the media folder) after the current one.
    Insert(String),
    /// Off the air.
    Stop,
    /// On the air again.
    Start,
}

/// A live broadcast's publisher, as the admin API shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct PublisherView {
    /// Its session ID.
    pub id: String,
    pub path: String,
    /// `0.0.0.0` for an `.sdp` source.
    pub client: std::net::IpAddr,
    pub user: String,
    pub on_air: bool,
    /// `tcp`, `udp`, or `sdp` for an `.sdp` source.
    pub transport: &'static str,
    /// Per stream: its media kind and RTP encoding's clock rate.
    pub streams: Vec<(String, u32)>,
    pub packets_in: u64,
    pub bytes_in: u64,
    pub refused_in: u64,
    pub secs: f64,
}

/// The server's totals at one moment, for the throughput chart.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    /// Seconds since the server started.
    pub at_secs: f64,
    pub packets: u64,
    pub bytes: u64,
}

/// Connections and sessions on the control core's books.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub connections: usize,
    pub sessions: usize,
    /// Sessions per shard.
    pub per_shard: Vec<usize>,
    /// Tunnels open or being paired.
    pub tunnels: usize,
    /// Icecast listeners.
    pub listeners: usize,
}

/// What a handler is given besides the request.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    pub client: SocketAddr,
    pub server: &'a dyn ServerView,
}

/// What a handler makes of a request.
#[derive(Debug)]
pub enum Reply {
    /// A whole response; the connection then carries on or closes by the
    /// keep-alive rules.
    Respond(Response),
    /// The connection leaves the HTTP loop: `head`, if any, is written (a
    /// streaming response), and the control core hands the connection on
    /// as `to` says.
    Take { head: Option<Response>, to: Takeover },
}

/// Where a connection goes when it leaves the HTTP loop.
#[derive(Debug, Clone)]
pub enum Takeover {
    /// It is the server-to-client leg of tunnel `id`, answered: its
    /// RTSP conversation starts once a POST brings the other half.
    TunnelGet(tunnel::TunnelId),
    /// It is a client-to-server leg of tunnel `id`, for wherever the
    /// tunnel is.
    TunnelPost(tunnel::TunnelId, tunnel::PostTo),
    /// It is an Icecast listener, answered (the head is in the start): it
    /// goes to a shard, which writes the head and paces the audio.
    Listen(Box<ListenerStart>),
    /// It is an Icecast source, accepted for its mount: the control core
    /// answers it and reads its body (whose first bytes are in the
    /// connection's buffer) into the mount.
    Source(Box<crate::icecast::source::SourceStart>),
}

/// Answers requests to a path. See the module documentation.
pub trait Handler {
    fn serve<'a>(&'a self, req: &'a Request, cx: Context<'a>) -> Pin<Box<dyn Future<Output = Reply> + 'a>>;
}

/// When a handler is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyMode {
    /// Once the whole body has arrived (at most `--max-body-bytes`).
    Whole,
    /// As soon as the head has arrived; the body is the handler's stream.
    Stream,
}

/// How a registered path matches a request's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Match {
    Exact,
    Prefix,
    /// The path ends so, in any case (`.mp3` serves `/a/B.MP3`).
    Suffix,
    /// Any path, for its methods only, after every other match: a path no
    /// exact path or prefix serves, and no suffix serves with the method
    /// (Icecast's mounts, which may be named anything). It is never part
    /// of a 405's `Allow`.
    Any,
}

#[derive(Clone)]
struct Entry {
    path: String,
    how: Match,
    methods: Vec<&'static str>,
    body: BodyMode,
    handler: Rc<dyn Handler>,
}

/// The registered handlers, by path. Exact paths win over prefixes, and
/// prefixes over suffixes; among prefixes (and among suffixes) the longest
/// wins.
#[derive(Clone, Default)]
pub struct Routes {
    entries: Vec<Entry>,
}

impl std::fmt::Debug for Routes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|e| (&e.path, e.how, &e.methods)))
            .finish()
    }
}

impl Routes {
    pub fn new() -> Routes {
        Routes::default()
    }

    /// Serves `methods` on exactly `path` with `handler`, once the body has
    /// arrived.
    pub fn add(&mut self, path: &str, methods: &[&'static str], handler: impl Handler + 'static) {
        self.push(path, Match::Exact, methods, BodyMode::Whole, Rc::new(handler));
    }

    /// Serves `methods` on every path that ends with `suffix`, in any case
    /// (`.mp3`), unless an exact path or a prefix serves it.
    pub fn add_suffix(&mut self, suffix: &str, methods: &[&'static str], handler: impl Handler + 'static) {
        self.push(suffix, Match::Suffix, methods, BodyMode::Whole, Rc::new(handler));
    }

    /// Serves `methods` on every path under `prefix` (`/api/v1/` serves
    /// `/api/v1/sessions`).
    pub fn add_prefix(&mut self, prefix: &str, methods: &[&'static str], handler: impl Handler + 'static) {
        self.push(prefix, Match::Prefix, methods, BodyMode::Whole, Rc::new(handler));
    }

    /// Serves `methods` on any path that no exact path or prefix serves,
    /// and no suffix serves with that method, in `body` mode (an Icecast source's
    /// `SOURCE`/`PUT` stream to any mount, a listener's `GET` of one).
    pub fn add_any(&mut self, methods: &[&'static str], body: BodyMode, handler: impl Handler + 'static) {
        self.push("", Match::Any, methods, body, Rc::new(handler));
    }

    /// Serves `methods` on `path`, calling `handler` as soon as the head has
    /// arrived: the body streams to it (an Icecast source).
    pub fn add_streaming(&mut self, path: &str, methods: &[&'static str], handler: impl Handler + 'static) {
        self.push(path, Match::Exact, methods, BodyMode::Stream, Rc::new(handler));
    }

    fn push(&mut self, path: &str, how: Match, methods: &[&'static str], body: BodyMode, handler: Rc<dyn Handler>) {
        self.entries.push(Entry {
            path: path.to_owned(),
            how,
            methods: methods.to_vec(),
            body,
            handler,
        });
    }

    /// The handlers for `path`, best match first.
    fn matching(&self, path: &str) -> Vec<&Entry> {
        let mut found: Vec<&Entry> = self
            .entries
            .iter()
            .filter(|e| match e.how {
                Match::Exact => path == e.path,
                Match::Prefix => path.starts_with(&e.path),
                Match::Suffix => {
                    let (p, s) = (path.as_bytes(), e.path.as_bytes());
                    p.len() >= s.len() && p[p.len() - s.len()..].eq_ignore_ascii_case(s)
                }
                Match::Any => true,
            })
            .collect();
        found.sort_by_key(|e| (e.how, std::cmp::Reverse(e.path.len())));
        found
    }
}

/// What to do with an HTTP request.
pub enum HttpRoute {
    /// Answered here.
    Answer(Response),
    /// A registered handler serves it.
    Handler { handler: Rc<dyn Handler>, body: BodyMode },
    /// A tunnel leg: the control core pairs it by its cookie.
    Tunnel { leg: Leg, cookie: Cookie },
}

impl std::fmt::Debug for HttpRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpRoute::Answer(r) => f.debug_tuple("Answer").field(&r.status).finish(),
            HttpRoute::Handler { body, .. } => f.debug_struct("Handler").field("body", body).finish(),
            HttpRoute::Tunnel { leg, cookie } => f
                .debug_struct("Tunnel")
                .field("leg", leg)
                .field("cookie", cookie)
                .finish(),
        }
    }
}

/// Classifies an HTTP request head: a tunnel leg wherever it points, else
/// the handler registered for its path and method, else 404 or 405.
pub fn route(head: &Head, routes: &Routes) -> HttpRoute {
    match proto::tunnel::classify(&head.method, &head.headers) {
        Some(Ok((leg, cookie))) => return HttpRoute::Tunnel { leg, cookie },
        Some(Err(e)) => {
            let mut r = Response::new(e.status());
            if e.status() == 405 {
                r = r.header("Allow", "GET, POST");
            }
            return HttpRoute::Answer(r);
        }
        None => {}
    }
    // HEAD is GET without the body.
    let method = if head.method == "HEAD" {
        "GET"
    } else {
        head.method.as_str()
    };
    let mut entries = routes.matching(head.path());
    // Paths with a handler of their own (exact or by prefix) are theirs
    // alone; a suffix (`.mp3`) shares its paths with mounts.
    let owned = entries.iter().any(|e| matches!(e.how, Match::Exact | Match::Prefix));
    entries.retain(|e| e.how != Match::Any || (!owned && e.methods.contains(&method)));
    if entries.is_empty() {
        return HttpRoute::Answer(Response::new(404));
    }
    if let Some(e) = entries.iter().find(|e| e.methods.contains(&method)) {
        return HttpRoute::Handler {
            handler: e.handler.clone(),
            body: e.body,
        };
    }
    let mut allow: Vec<&str> = Vec::new();
    for m in entries.iter().flat_map(|e| e.methods.iter().copied()) {
        if !allow.contains(&m) {
            allow.push(m);
        }
        if m == "GET" && !allow.contains(&"HEAD") {
            allow.push("HEAD");
        }
    }
    HttpRoute::Answer(Response::new(405).header("Allow", allow.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::http::{parse_head, Limits};

    struct Fixed(&'static str);

    impl Handler for Fixed {
        fn serve<'a>(&'a self, req: &'a Request, cx: Context<'a>) -> Pin<Box<dyn Future<Output = Reply> + 'a>> {
            Box::pin(async move {
                let body = format!(
                    "{} {} {} {}",
                    self.0,
                    req.head.method,
                    req.body.len(),
                    cx.server.counts().sessions
                );
                Reply::Respond(Response::new(200).body("text/plain", body))
            })
        }
    }

    struct View;

    impl ServerView for View {
        fn counts(&self) -> Counts {
            Counts {
                sessions: 7,
                ..Counts::default()
            }
        }

        fn stats(&self) -> Pin<Box<dyn Future<Output = ShardStats> + '_>> {
            Box::pin(async { ShardStats::default() })
        }

        fn config(&self) -> &Config {
            unimplemented!("not asked by these tests")
        }

        fn uptime_secs(&self) -> f64 {
            0.0
        }

        fn library_cached(&self) -> usize {
            0
        }

        fn snapshots(&self, _sessions: bool) -> Pin<Box<dyn Future<Output = Vec<Snapshot>> + '_>> {
            Box::pin(async { Vec::new() })
        }

        fn end_session(&self, _key: SessionKey) -> Pin<Box<dyn Future<Output = bool> + '_>> {
            Box::pin(async { false })
        }

        fn reload_library(&self) -> usize {
            0
        }

        fn control_requests(&self) -> RequestCounts {
            RequestCounts::default()
        }

        fn throughput(&self) -> Vec<Sample> {
            Vec::new()
        }
    }

    fn head(text: &str) -> Head {
        parse_head(text.as_bytes(), &Limits::default()).unwrap().unwrap().0
    }

    fn routes() -> Routes {
        let mut r = Routes::new();
        r.add("/metrics", &["GET"], Fixed("metrics"));
        r.add_prefix("/api/v1/", &["GET", "POST"], Fixed("api"));
        r.add_prefix("/api/v1/sessions/", &["DELETE"], Fixed("end"));
        r.add_streaming("/live.mp3", &["SOURCE", "PUT"], Fixed("source"));
        r.add_suffix(".mp3", &["GET"], Fixed("mp3"));
        r.add_any(&["SOURCE", "PUT"], BodyMode::Stream, Fixed("mount"));
        r
    }

    /// Routes `text` and runs its handler's future, which here never waits.
    fn serve(routes: &Routes, text: &str) -> (BodyMode, String) {
        let route = route(&head(text), routes);
        let HttpRoute::Handler { handler, body } = route else {
            panic!("{text}: {route:?}")
        };
        let req = Request {
            head: head(text),
            body: b"xy".to_vec(),
        };
        let cx = Context {
            client: "192.0.2.1:9".parse().unwrap(),
            server: &View,
        };
        let reply = futures_lite::future::block_on(handler.serve(&req, cx));
        let Reply::Respond(r) = reply else { panic!("{reply:?}") };
        (body, String::from_utf8(r.body).unwrap())
    }

    fn status(route: HttpRoute) -> (u16, Option<String>) {
        match route {
            HttpRoute::Answer(r) => (r.status, r.headers.get("Allow").map(str::to_owned)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn handlers_are_found_by_path_and_method() {
        let r = routes();
        let at = |text: &str| route(&head(text), &r);
        let (mode, body) = serve(&r, "GET /metrics HTTP/1.1\r\n\r\n");
        assert_eq!((mode, body.as_str()), (BodyMode::Whole, "metrics GET 2 7"));
        assert_eq!(serve(&r, "HEAD /metrics HTTP/1.1\r\n\r\n").1, "metrics HEAD 2 7");
        assert_eq!(
            serve(&r, "GET /api/v1/sessions?page=2 HTTP/1.1\r\n\r\n").1,
            "api GET 2 7"
        );
        // The longer prefix wins where it has the method, the shorter serves the rest.
        assert_eq!(
            serve(&r, "DELETE /api/v1/sessions/AB HTTP/1.1\r\n\r\n").1,
            "end DELETE 2 7"
        );
        assert_eq!(serve(&r, "POST /api/v1/sessions/AB HTTP/1.1\r\n\r\n").1, "api POST 2 7");
        assert_eq!(serve(&r, "SOURCE /live.mp3 HTTP/1.0\r\n\r\n").0, BodyMode::Stream);
        // Suffixes match in any case, after exact paths and prefixes.
        assert_eq!(serve(&r, "GET /a/b/Song.MP3 HTTP/1.1\r\n\r\n").1, "mp3 GET 2 7");
        assert_eq!(serve(&r, "HEAD /x.mp3?t=1 HTTP/1.1\r\n\r\n").1, "mp3 HEAD 2 7");
        assert_eq!(serve(&r, "GET /api/v1/x.mp3 HTTP/1.1\r\n\r\n").1, "api GET 2 7");
        assert_eq!(serve(&r, "GET /live.mp3 HTTP/1.1\r\n\r\n").1, "mp3 GET 2 7");
        // Any path takes a source, unless its own handler has the method.
        assert_eq!(
            serve(&r, "PUT /x.mp3 HTTP/1.1\r\n\r\n"),
            (BodyMode::Stream, "mount PUT 2 7".into())
        );
        assert_eq!(serve(&r, "SOURCE /stream HTTP/1.0\r\n\r\n").1, "mount SOURCE 2 7");
        assert_eq!(
            status(at("DELETE /x.mp3 HTTP/1.1\r\n\r\n")),
            (405, Some("GET, HEAD".into())),
            "not in Allow"
        );
        assert_eq!(status(at("GET /mp3 HTTP/1.1\r\n\r\n")), (404, None));
        assert_eq!(status(at("GET /nothing HTTP/1.1\r\n\r\n")), (404, None));
        assert_eq!(
            status(at("GET /metrics/x HTTP/1.1\r\n\r\n")),
            (404, None),
            "exact is exact"
        );
        assert_eq!(
            status(at("POST /metrics HTTP/1.1\r\n\r\n")),
            (405, Some("GET, HEAD".into()))
        );
        assert_eq!(
            status(at("PUT /api/v1/sessions/AB HTTP/1.1\r\n\r\n")),
            (405, Some("DELETE, GET, HEAD, POST".into()))
        );
        assert_eq!(
            status(route(&head("GET /metrics HTTP/1.1\r\n\r\n"), &Routes::new())),
            (404, None)
        );
    }

    #[test]
    fn tunnels_come_first_on_any_path() {
        let r = routes();
        let at = |text: &str| route(&head(text), &r);
        let get = at("GET /metrics HTTP/1.0\r\nx-sessioncookie: abc\r\nAccept: application/x-rtsp-tunnelled\r\n\r\n");
        assert!(matches!(get, HttpRoute::Tunnel { leg: Leg::Get, cookie } if cookie.as_str() == "abc"));
        let post = at("POST /a.mp4 HTTP/1.0\r\nx-sessioncookie: abc\r\nContent-Length: 32767\r\n\r\n");
        assert!(matches!(post, HttpRoute::Tunnel { leg: Leg::Post, .. }));
        assert_eq!(
            status(at(
                "GET /a.mp4 HTTP/1.1\r\nAccept: application/x-rtsp-tunnelled\r\n\r\n"
            )),
            (400, None),
            "a tunnel without a cookie"
        );
        assert_eq!(
            status(at("PUT /a.mp4 HTTP/1.1\r\nx-sessioncookie: abc\r\n\r\n")),
            (405, Some("GET, POST".into()))
        );
    }
}
