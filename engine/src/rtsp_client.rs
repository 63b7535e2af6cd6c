//! The client side of an RTSP conversation, without IO: what every client
//! the server runs has in common, whether it publishes to another server
//! ([`crate::channel::publish`]) or plays from one ([`crate::live::relay`]).
//!
//! A [`Conversation`] numbers requests (`CSeq`), carries the session the
//! server named and the `User-Agent`, keeps one request in flight, parses
//! what the connection read into responses and interleaved frames, answers
//! the server's own requests with 501, and answers a 401 by itself: it
//! picks the strongest challenge it can (Digest with MD5 or SHA-256, with
//! `qop=auth` when offered, else RFC 2069 as GStreamer's and QuickTime-era
//! servers expect; else Basic), sends the same request again with the
//! credentials of the URL (`rtsp://USER:PASSWORD@HOST/PATH`), and signs
//! every later request for the same challenge (Digest with the nonce count
//! going up). A second 401 for the same nonce means the credentials are
//! wrong; a challenge with `stale=true` is answered again.
//!
//! The `Session` header may carry `;timeout=N`; when it does not, RFC
//! 2326's 60 s default is assumed, and keep-alives are due at half of it.

use proto::rtsp::message::{self, Headers, Limits, Message, Method, Request, Response};
use proto::rtsp::status::Status;
use proto::rtsp::url::RtspUrl;

use crate::access::digest::{self, Algorithm, NonceCount};
use crate::access::{basic, header};

/// Nanoseconds on the caller's monotonic clock.
pub type Nanos = u64;

pub const NS_PER_SEC: u64 = 1_000_000_000;
/// RFC 2326 section 12.37: a session times out after 60 s unless told.
const DEFAULT_SESSION_TIMEOUT: u64 = 60;
/// The software name sent in `User-Agent`.
pub const USER_AGENT: &str = concat!("Streamalot/", env!("CARGO_PKG_VERSION"));

/// Why the conversation cannot go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    #[error("the server asks for credentials (401) and the URL gives none: use rtsp://USER:PASSWORD@HOST/PATH")]
    NoCredentials,
    #[error("the server refused the credentials for {method} (401 again)")]
    BadCredentials { method: String },
    #[error("the server offers no authentication this client speaks: {0}")]
    UnknownChallenge(String),
    #[error("the server sent an unreadable message: {0}")]
    Garbled(String),
}

/// A request sent and not yet answered.
#[derive(Debug, Clone)]
pub struct Pending {
    pub request: Request,
    pub sent_at: Nanos,
    /// Whether this one already carried credentials for a fresh challenge.
    retried: bool,
    /// A keep-alive, whose refusal is no reason to stop.
    pub keep_alive: bool,
}

/// What came from the server.
#[derive(Debug)]
pub enum Incoming {
    /// The answer to the request in flight (never a 401 that was answered
    /// here with credentials).
    Answer { pending: Pending, response: Response },
    /// An interleaved frame: media or RTCP.
    Interleaved { channel: u8, data: Vec<u8> },
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

/// One RTSP conversation with a server. See the module documentation.
#[derive(Debug)]
pub struct Conversation {
    url: RtspUrl,
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
    limits: Limits,
}

impl Conversation {
    /// A conversation with the server of `url`; `seed` makes the Digest
    /// cnonces.
    pub fn new(url: RtspUrl, seed: u64, now: Nanos) -> Conversation {
        Conversation {
            url,
            cseq: 0,
            session: None,
            keep_alive_every: DEFAULT_SESSION_TIMEOUT * NS_PER_SEC / 2,
            last_request: now,
            pending: None,
            credentials: None,
            cnonce_seed: seed,
            input: Vec::new(),
            output: Vec::new(),
            limits: Limits::default(),
        }
    }

    pub fn url(&self) -> &RtspUrl {
        &self.url
    }

    /// The session the server named, once it did.
    pub fn session(&self) -> Option<&str> {
        self.session.as_deref()
    }

    pub fn pending(&self) -> Option<&Pending> {
        self.pending.as_ref()
    }

    /// Forgets the request in flight (its answer, if any, is then ignored).
    pub fn clear_pending(&mut self) {
        self.pending = None;
    }

    /// When a keep-alive is due, if nothing is in flight.
    pub fn keep_alive_at(&self) -> Nanos {
        self.last_request + self.keep_alive_every
    }

    /// The request for `method` with the next CSeq, the session and the
    /// user agent.
    pub fn request(&mut self, method: Method, uri: String) -> Request {
        self.cseq += 1;
        let mut r = Request::new(method, uri)
            .header("CSeq", self.cseq.to_string())
            .header("User-Agent", USER_AGENT);
        if let Some(s) = &self.session {
            r = r.header("Session", s.clone());
        }
        r
    }

    /// Writes `request` (signed, if credentials are known) and waits for its
    /// answer.
    pub fn send(&mut self, mut request: Request, now: Nanos, keep_alive: bool) {
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

    /// Bytes to write to the connection, in order (empty when none).
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.output)
    }

    /// Whether there are bytes to write.
    pub fn has_output(&self) -> bool {
        !self.output.is_empty()
    }

    /// Bytes read from the connection.
    pub fn push_input(&mut self, bytes: &[u8]) {
        self.input.extend_from_slice(bytes);
    }

    /// Drops whatever was read and not yet parsed.
    pub fn clear_input(&mut self) {
        self.input.clear();
    }

    /// The next thing the server said, from what was read: `None` until a
    /// whole message is there. A 401 is answered here (the same request
    /// again, with credentials) and not handed out.
    pub fn next(&mut self, now: Nanos) -> Option<Result<Incoming, ClientError>> {
        loop {
            let (msg, used) = match message::parse(&self.input, &self.limits) {
                Ok(Some(x)) => x,
                Ok(None) => return None,
                Err(e) => {
                    self.input.clear();
                    return Some(Err(ClientError::Garbled(e.to_string())));
                }
            };
            self.input.drain(..used);
            match msg {
                Message::Interleaved { channel, data } => return Some(Ok(Incoming::Interleaved { channel, data })),
                Message::Response(r) => {
                    let Some(pending) = self.pending.take() else {
                        // An answer to nothing (a duplicate): ignored.
                        continue;
                    };
                    if r.status == Status::UNAUTHORIZED {
                        match self.unauthorized(now, pending, &r) {
                            Ok(()) => continue,
                            Err(e) => return Some(Err(e)),
                        }
                    }
                    self.session_from(&r);
                    return Some(Ok(Incoming::Answer { pending, response: r }));
                }
                // A server may send requests (GET_PARAMETER keep-alive
                // probes, ANNOUNCE of a change); nothing here needs them, and
                // the RFC wants an answer.
                Message::Request(r) => {
                    Response::new(Status::NOT_IMPLEMENTED, r.cseq()).write_to(&mut self.output);
                }
            }
        }
    }

    /// Takes the session (and its timeout) from an answer that names one.
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

    /// A 401 for `pending`: the same request again with credentials for the
    /// challenge, or why not.
    fn unauthorized(&mut self, now: Nanos, pending: Pending, r: &Response) -> Result<(), ClientError> {
        let method = pending.request.method.to_string();
        if self.url.user().is_none() {
            return Err(ClientError::NoCredentials);
        }
        let challenges: Vec<&str> = r
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("WWW-Authenticate"))
            .map(|(_, v)| v)
            .collect();
        // A retry with credentials for this very challenge was refused: the
        // credentials are wrong (a stale nonce says so and is answered).
        let (mut credentials, stale) = choose(&challenges)?;
        if pending.retried && !stale {
            return Err(ClientError::BadCredentials { method });
        }
        let user = self.url.user().unwrap_or_default().to_owned();
        credentials.fill_basic(&user, self.url.password().unwrap_or(""));
        self.credentials = Some(credentials);
        // The same request again, with a new CSeq and the credentials.
        let mut req = pending.request.clone();
        self.cseq += 1;
        req.headers = Headers::default();
        for (n, v) in pending.request.headers.iter() {
            if n.eq_ignore_ascii_case("CSeq") {
                req.headers.push("CSeq", self.cseq.to_string());
            } else if !n.eq_ignore_ascii_case("Authorization") {
                req.headers.push(n, v);
            }
        }
        self.send(req, now, pending.keep_alive);
        if let Some(p) = &mut self.pending {
            p.retried = true;
        }
        Ok(())
    }
}

/// The challenge to answer: the first Digest with an algorithm known here,
/// else Basic. Returns the credentials to use and whether the challenge
/// said `stale=true`.
fn choose(challenges: &[&str]) -> Result<(Credentials, bool), ClientError> {
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
        None => Err(ClientError::UnknownChallenge(challenges.join(" | "))),
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
