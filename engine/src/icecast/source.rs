//! Icecast sources, without IO: what a source's request says, what it is
//! answered, and its body's framing undone as it streams in.
//!
//! # What sources send
//!
//! - **`SOURCE /mount HTTP/1.0`**, Icecast 1 and SHOUTcast-era tools (and
//!   Icecast 2 up to 2.4, which still takes it), with `Authorization: Basic`
//!   and the `ice-*` headers. It is answered `HTTP/1.0 200 OK` and the body,
//!   unframed, runs until the source closes.
//! - **`PUT /mount HTTP/1.1`**, Icecast 2.4's, which ffmpeg's `icecast://`
//!   sends: with `Expect: 100-continue` (ffmpeg always asks; it waits for
//!   the answer before it sends a byte), answered `HTTP/1.1 100 Continue`
//!   and nothing else, as Icecast does; without it, `200 OK`. Its body
//!   has no length (ffmpeg's), a `Content-Length`, or
//!   `Transfer-Encoding: chunked` (libshout with HTTP/1.1, curl's `-T -`),
//!   each undone by [`BodyDecoder`].
//! - **Headers**: `Content-Type` must be MPEG audio (`audio/mpeg`, or the
//!   `audio/mp3` and `audio/x-mpeg` some tools send; `application/ogg` and
//!   the rest are 415, since only MP3 is reflected), `ice-name`,
//!   `ice-description`, `ice-genre`, `ice-url`, `ice-bitrate`, `ice-public`
//!   and `ice-audio-info` (also as `icy-*`, the SHOUTcast spellings), which
//!   listeners get back as `icy-*` headers.
//!
//! # What is answered
//!
//! `401` with a Basic challenge for a missing or wrong credential, `403`
//! for a path no publish rule covers and for a mount that has a source
//! already (Icecast's "Mountpoint in use"), `415` for a content type that
//! is not MPEG audio, `400` for a body framing that cannot be read.

use std::future::Future;
use std::pin::Pin;

use proto::http::{Head, Request, Response};
use tracing::debug;

use super::mount::MountId;
use crate::http::{Context, Handler, Reply, Takeover};

/// The publish rules' realm, in the Basic challenge.
pub const REALM: &str = crate::access::DEFAULT_REALM;

/// What a source said about its stream, kept for its listeners' heads and
/// the admin API.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IceInfo {
    pub name: Option<String>,
    pub description: Option<String>,
    pub genre: Option<String>,
    pub url: Option<String>,
    /// kbit/s, as the source said.
    pub bitrate: Option<u32>,
    pub public: bool,
    pub audio_info: Option<String>,
}

impl IceInfo {
    /// From `ice-*` (or `icy-*`) headers.
    pub fn from_head(head: &Head) -> IceInfo {
        let get = |name: &str| {
            let ice = format!("ice-{name}");
            let icy = format!("icy-{name}");
            head.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(&ice) || n.eq_ignore_ascii_case(&icy))
                .map(|(_, v)| one_line(v, 256))
                .filter(|v| !v.is_empty())
        };
        IceInfo {
            name: get("name"),
            description: get("description"),
            genre: get("genre"),
            url: get("url"),
            bitrate: get("bitrate").or_else(|| get("br")).and_then(|b| b.trim().parse().ok()),
            public: get("public").or_else(|| get("pub")).is_some_and(|p| p.trim() == "1"),
            audio_info: get("audio-info"),
        }
    }
}

/// A header value as one line of at most `max` characters.
fn one_line(v: &str, max: usize) -> String {
    v.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect()
}

/// Why a source's request is refused before its body is read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("content type {0:?} is not MPEG audio")]
    ContentType(String),
    #[error("the body's framing cannot be read: {0}")]
    Framing(&'static str),
}

impl Refusal {
    pub fn status(&self) -> u16 {
        match self {
            Refusal::ContentType(_) => 415,
            Refusal::Framing(_) => 400,
        }
    }
}

/// A source's request, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRequest {
    pub info: IceInfo,
    pub framing: BodyFraming,
    /// `Expect: 100-continue`: answered with `100 Continue` alone.
    pub expects_continue: bool,
    pub user_agent: Option<String>,
}

/// How the body of a source's request ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// When the source closes.
    UntilClose,
    Length(u64),
    Chunked,
}

/// Content types taken as MPEG audio.
const MPEG_TYPES: [&str; 4] = ["audio/mpeg", "audio/mp3", "audio/x-mpeg", "audio/mpeg3"];

impl SourceRequest {
    /// Checks a `SOURCE` or `PUT` head (the credential is the caller's).
    /// A missing `Content-Type` is taken as MPEG audio: old SOURCE clients
    /// send none for MP3.
    pub fn check(head: &Head) -> Result<SourceRequest, Refusal> {
        if let Some(ct) = head.headers.get("Content-Type") {
            let essence = ct.split(';').next().unwrap_or_default().trim();
            if !MPEG_TYPES.iter().any(|t| essence.eq_ignore_ascii_case(t)) {
                return Err(Refusal::ContentType(one_line(ct, 64)));
            }
        }
        let chunked = head
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("Transfer-Encoding"))
            .map(|(_, v)| v.trim())
            .collect::<Vec<_>>();
        let length = head.headers.get("Content-Length");
        let framing = match (&chunked[..], length) {
            ([], None) => BodyFraming::UntilClose,
            ([], Some(l)) => {
                let l = l.trim();
                if l.is_empty() || !l.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(Refusal::Framing("Content-Length is not a number"));
                }
                BodyFraming::Length(l.parse().map_err(|_| Refusal::Framing("Content-Length is too large"))?)
            }
            ([c], None) if c.eq_ignore_ascii_case("chunked") => BodyFraming::Chunked,
            (_, Some(_)) => return Err(Refusal::Framing("both Transfer-Encoding and Content-Length")),
            _ => return Err(Refusal::Framing("a transfer coding other than chunked")),
        };
        let expects_continue = head
            .headers
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case("Expect") && v.trim().eq_ignore_ascii_case("100-continue"));
        Ok(SourceRequest {
            info: IceInfo::from_head(head),
            framing,
            expects_continue,
            user_agent: head.headers.get("User-Agent").map(|u| one_line(u, 256)),
        })
    }

    /// What the source is answered once accepted, before it sends audio.
    pub fn accepted(&self) -> &'static [u8] {
        if self.expects_continue {
            b"HTTP/1.1 100 Continue\r\n\r\n"
        } else {
            b"HTTP/1.0 200 OK\r\nServer: Streamalot\r\n\r\n"
        }
    }
}

/// An accepted source, as its handler hands it to the control core.
#[derive(Debug, Clone)]
pub struct SourceStart {
    pub mount: MountId,
    pub path: String,
    pub user: String,
    pub request: SourceRequest,
}

/// The handler for `SOURCE` and `PUT` on any path: the credential (by the
/// publish rules), the request, the mount, then [`Takeover::Source`].
pub struct Sources;

impl Handler for Sources {
    fn serve<'a>(&'a self, req: &'a Request, cx: Context<'a>) -> Pin<Box<dyn Future<Output = Reply> + 'a>> {
        Box::pin(async move {
            let head = &req.head;
            let path = head.path();
            let user = match cx.server.check_source(path, &authorization(head)) {
                Ok(u) => u,
                Err(status) => {
                    debug!(client = %cx.client, path, status, "source refused");
                    return Reply::Respond(refused(status));
                }
            };
            let request = match SourceRequest::check(head) {
                Ok(r) => r,
                Err(e) => {
                    debug!(client = %cx.client, path, error = %e, "source refused");
                    return Reply::Respond(Response::new(e.status()).body("text/plain", format!("{e}\n")));
                }
            };
            match cx
                .server
                .open_mount(path, cx.client, user.clone(), request.info.clone())
            {
                Ok(mount) => Reply::Take {
                    head: None,
                    to: Takeover::Source(Box::new(SourceStart {
                        mount,
                        path: path.to_owned(),
                        user,
                        request,
                    })),
                },
                Err(e) => {
                    debug!(client = %cx.client, path, error = %e, "source refused");
                    Reply::Respond(Response::new(403).body("text/plain", "Mountpoint in use\n"))
                }
            }
        })
    }
}

/// The answer to a source or metadata update refused with `status`: a 401
/// carries the Basic challenge.
pub fn refused(status: u16) -> Response {
    let r = Response::new(status);
    match status {
        401 => r
            .header("WWW-Authenticate", crate::access::basic::challenge(REALM))
            .body("text/plain", "Authentication required\n"),
        403 => r.body("text/plain", "Forbidden\n"),
        _ => r,
    }
}

/// A chunked body that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed chunked body")]
pub struct BadChunk;

/// Undoes a source body's framing as it streams in.
#[derive(Debug, Clone)]
pub struct BodyDecoder {
    state: Body,
}

#[derive(Debug, Clone)]
enum Body {
    UntilClose,
    /// Bytes left.
    Length(u64),
    /// A chunk-size line, its bytes so far.
    Size(Vec<u8>),
    /// Bytes of the chunk's data left.
    Data(u64),
    /// The CRLF after a chunk's data, its bytes so far.
    DataEnd(u8),
    /// Trailer lines after the last chunk; the length of the current one.
    Trailer(usize),
    Done,
}

/// The longest chunk-size line (with extensions) taken.
const MAX_SIZE_LINE: usize = 1024;

impl BodyDecoder {
    pub fn new(framing: BodyFraming) -> BodyDecoder {
        BodyDecoder {
            state: match framing {
                BodyFraming::UntilClose => Body::UntilClose,
                BodyFraming::Length(0) => Body::Done,
                BodyFraming::Length(n) => Body::Length(n),
                BodyFraming::Chunked => Body::Size(Vec::new()),
            },
        }
    }

    /// Whether the body has ended (by its length, or its last chunk).
    pub fn is_done(&self) -> bool {
        matches!(self.state, Body::Done)
    }

    /// Takes `input` and calls `data` with each run of body bytes in it.
    /// Bytes after the body's end are ignored.
    pub fn feed(&mut self, mut input: &[u8], mut data: impl FnMut(&[u8])) -> Result<(), BadChunk> {
        while !input.is_empty() {
            match &mut self.state {
                Body::UntilClose => {
                    data(input);
                    return Ok(());
                }
                Body::Length(left) | Body::Data(left) => {
                    let n = (*left).min(input.len() as u64) as usize;
                    data(&input[..n]);
                    *left -= n as u64;
                    input = &input[n..];
                    if *left == 0 {
                        self.state = match self.state {
                            Body::Length(_) => Body::Done,
                            _ => Body::DataEnd(0),
                        };
                    }
                }
                Body::Size(line) => {
                    let Some(end) = input.iter().position(|&b| b == b'\n') else {
                        line.extend_from_slice(input);
                        if line.len() > MAX_SIZE_LINE {
                            return Err(BadChunk);
                        }
                        return Ok(());
                    };
                    line.extend_from_slice(&input[..end]);
                    input = &input[end + 1..];
                    let text = std::str::from_utf8(line).map_err(|_| BadChunk)?;
                    let size = text.trim_end_matches('\r').split(';').next().unwrap_or_default().trim();
                    if size.is_empty() || size.len() > 15 {
                        return Err(BadChunk);
                    }
                    let size = u64::from_str_radix(size, 16).map_err(|_| BadChunk)?;
                    self.state = if size == 0 { Body::Trailer(0) } else { Body::Data(size) };
                }
                Body::DataEnd(seen) => {
                    let want = b"\r\n"[*seen as usize];
                    // A bare LF is taken, as most servers take it.
                    if input[0] == b'\n' {
                        self.state = Body::Size(Vec::new());
                    } else if input[0] == want && *seen == 0 {
                        *seen = 1;
                    } else {
                        return Err(BadChunk);
                    }
                    input = &input[1..];
                }
                Body::Trailer(len) => {
                    let b = input[0];
                    input = &input[1..];
                    match b {
                        b'\n' if *len == 0 => self.state = Body::Done,
                        b'\n' => *len = 0,
                        b'\r' => {}
                        _ => {
                            *len += 1;
                            if *len > MAX_SIZE_LINE {
                                return Err(BadChunk);
                            }
                        }
                    }
                }
                Body::Done => return Ok(()),
            }
        }
        Ok(())
    }
}

/// The `Authorization` values of a request head.
pub fn authorization(head: &Head) -> Vec<&str> {
    head.headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("Authorization"))
        .map(|(_, v)| v)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::http::{parse_head, Limits};

    fn head(text: &str) -> Head {
        parse_head(text.as_bytes(), &Limits::default()).unwrap().unwrap().0
    }

    #[test]
    fn ffmpegs_put_and_an_old_source() {
        // What ffmpeg 5 to 7 send for icecast://source:pw@host/live.mp3.
        let r = SourceRequest::check(&head(
            "PUT /live.mp3 HTTP/1.1\r\nTransfer-Encoding: chunked\r\nUser-Agent: Lavf/59.27.100\r\nAccept: */*\r\n\
             Expect: 100-continue\r\nConnection: close\r\nHost: h:1\r\nIcy-MetaData: 1\r\n\
             Authorization: Basic c291cmNlOnB3\r\nIce-Name: My Radio\r\nIce-Public: 0\r\nContent-Type: audio/mpeg\r\n\r\n",
        ))
        .unwrap();
        assert_eq!(r.framing, BodyFraming::Chunked);
        assert!(r.expects_continue);
        assert_eq!(r.accepted(), b"HTTP/1.1 100 Continue\r\n\r\n");
        assert_eq!(r.info.name.as_deref(), Some("My Radio"));
        assert!(!r.info.public);
        let old = SourceRequest::check(&head(
            "SOURCE /live.mp3 HTTP/1.0\r\nAuthorization: Basic eDp5\r\nicy-name: Old\r\nicy-genre: Jazz\r\n\
             icy-br: 128\r\nicy-pub: 1\r\n\r\n",
        ))
        .unwrap();
        assert_eq!(old.framing, BodyFraming::UntilClose);
        assert!(!old.expects_continue);
        assert!(old.accepted().starts_with(b"HTTP/1.0 200 OK\r\n"));
        assert_eq!(
            old.info,
            IceInfo {
                name: Some("Old".into()),
                genre: Some("Jazz".into()),
                bitrate: Some(128),
                public: true,
                ..IceInfo::default()
            }
        );
    }

    #[test]
    fn what_is_refused() {
        for (text, status) in [
            ("PUT /a HTTP/1.1\r\nContent-Type: application/ogg\r\n\r\n", 415),
            ("PUT /a HTTP/1.1\r\nContent-Type: text/html; charset=utf-8\r\n\r\n", 415),
            ("PUT /a HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
            ("PUT /a HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
            (
                "PUT /a HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
                400,
            ),
        ] {
            let e = SourceRequest::check(&head(text)).unwrap_err();
            assert_eq!(e.status(), status, "{text}");
        }
        assert!(SourceRequest::check(&head("PUT /a HTTP/1.1\r\nContent-Type: Audio/MPEG\r\n\r\n")).is_ok());
    }

    fn decode(framing: BodyFraming, input: &[u8], chunk: usize) -> (Vec<u8>, bool, Result<(), BadChunk>) {
        let mut d = BodyDecoder::new(framing);
        let mut out = Vec::new();
        for c in input.chunks(chunk) {
            if let Err(e) = d.feed(c, |b| out.extend_from_slice(b)) {
                return (out, d.is_done(), Err(e));
            }
        }
        (out, d.is_done(), Ok(()))
    }

    #[test]
    fn chunked_bodies_in_any_pieces() {
        let body = b"5\r\nhello\r\n1;ext=1\r\n \r\nA\r\n0123456789\n0\r\nX-Trailer: 1\r\n\r\nafter";
        for chunk in [1, 2, 5, 1000] {
            let (out, done, r) = decode(BodyFraming::Chunked, body, chunk);
            r.unwrap();
            assert_eq!(out, b"hello 0123456789", "chunk {chunk}");
            assert!(done);
        }
        for bad in [&b"zz\r\n"[..], b"5\r\nhelloXX", b"12345678901234567\r\n"] {
            assert_eq!(decode(BodyFraming::Chunked, bad, 3).2, Err(BadChunk), "{bad:?}");
        }
        let (out, done, _) = decode(BodyFraming::Length(4), b"abcdef", 1);
        assert_eq!((out.as_slice(), done), (&b"abcd"[..], true));
        let (out, done, _) = decode(BodyFraming::UntilClose, b"abcdef", 4);
        assert_eq!((out.as_slice(), done), (&b"abcdef"[..], false));
    }
}
