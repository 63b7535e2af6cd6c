//! HTTP/1.x requests and responses on a byte stream, as far as a media
//! server on the RTSP ports needs them: request heads parsed by `httparse`
//! with limits, request bodies framed by `Content-Length` or chunked,
//! keep-alive, and responses written with their framing. Sans-IO: the
//! caller keeps the connection's bytes and calls the parsers whenever more
//! arrive, as with [`crate::rtsp::message`].
//!
//! A request is read in two steps so that a server can decide, from the
//! head alone, whether the body is a message to wait for or a stream that
//! belongs to whoever serves the request: [`parse_head`], then, for a whole
//! body, [`parse_body`] with the head's [`Head::framing`]. A tunnel's POST
//! (its body is the client-to-server half of an RTSP conversation, see
//! [`crate::tunnel`]) and an Icecast source's `SOURCE`/`PUT` are streams;
//! everything else is a message, held to `max_body_bytes`.
//!
//! What clients send, and how it is taken:
//!
//! - Both versions: HTTP/1.0 (GStreamer's tunnel, QuickTime) and HTTP/1.1
//!   (ffmpeg). A response names the version the request did, and keep-alive
//!   follows RFC 9112 section 9.3: HTTP/1.1 keeps the connection unless
//!   `Connection: close`, HTTP/1.0 closes it unless `Connection: keep-alive`.
//! - Chunked request bodies are decoded (every HTTP/1.1 recipient must
//!   understand them), within the same body limit; other transfer codings get
//!   501, and a request with both `Transfer-Encoding` and `Content-Length`
//!   is refused with 400 rather than guessed at (the ambiguity request
//!   smuggling lives on).
//! - Header values are taken as UTF-8 with anything else replaced, since
//!   user agents send Latin-1 now and then; names must be tokens.
//! - Folded (obsolete multi-line) header fields and HTTP/0.9 are refused.

use std::fmt::Write as _;

pub use crate::rtsp::message::Headers;

/// Bounds on what one request may occupy.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Request line plus header fields, up to and including the blank line.
    pub max_head_bytes: usize,
    pub max_headers: usize,
    /// A whole body, after chunked decoding.
    pub max_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head_bytes: 16 * 1024,
            max_headers: 64,
            max_body_bytes: 64 * 1024,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

impl Version {
    pub fn as_str(self) -> &'static str {
        match self {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
        }
    }
}

/// A request line and its header fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// As sent: methods are case-sensitive.
    pub method: String,
    /// The request target as sent (usually a path with an optional query).
    pub target: String,
    pub version: Version,
    pub headers: Headers,
}

/// A request with its whole body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub head: Head,
    pub body: Vec<u8>,
}

/// How a request's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(usize),
    Chunked,
}

/// Why a request cannot be read; each maps to the status to answer before
/// closing, since the stream cannot be resynchronised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("request line and headers exceed {0} bytes")]
    HeadTooLarge(usize),
    #[error("more than {0} header fields")]
    TooManyHeaders(usize),
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    #[error("unsupported HTTP version")]
    Version,
    #[error("Content-Length is not one non-negative integer")]
    BadContentLength,
    #[error("both Transfer-Encoding and Content-Length")]
    AmbiguousLength,
    #[error("unsupported transfer coding {0:?}")]
    TransferCoding(String),
    #[error("body of {0} bytes exceeds the limit")]
    BodyTooLarge(u64),
    #[error("malformed chunked body")]
    BadChunk,
}

impl Error {
    /// The status that answers this error.
    pub fn status(&self) -> u16 {
        match self {
            Error::HeadTooLarge(_) | Error::TooManyHeaders(_) => 431,
            Error::Version => 505,
            Error::TransferCoding(_) => 501,
            Error::BodyTooLarge(_) => 413,
            _ => 400,
        }
    }
}

impl Head {
    /// The target's path: without its query, percent-encoding kept.
    pub fn path(&self) -> &str {
        self.target.split(['?', '#']).next().unwrap_or_default()
    }

    /// Whether the connection may carry another request after this one's
    /// response (RFC 9112 section 9.3).
    pub fn keep_alive(&self) -> bool {
        let has = |token: &str| {
            self.headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case("Connection"))
                .flat_map(|(_, v)| v.split(','))
                .any(|t| t.trim().eq_ignore_ascii_case(token))
        };
        match self.version {
            Version::Http11 => !has("close"),
            Version::Http10 => has("keep-alive"),
        }
    }

    /// How the body is delimited (RFC 9112 section 6.3), checked against the
    /// body limit when its length is known up front.
    pub fn framing(&self, limits: &Limits) -> Result<Framing, Error> {
        let mut lengths = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("Content-Length"))
            .map(|(_, v)| v);
        let length = match lengths.next() {
            None => None,
            Some(v) => {
                // Repeated fields must agree (and "5, 5" is one field twice).
                let mut values = std::iter::once(v).chain(lengths).flat_map(|v| v.split(','));
                let first = values.next().map(parse_length).ok_or(Error::BadContentLength)??;
                for other in values {
                    if parse_length(other)? != first {
                        return Err(Error::BadContentLength);
                    }
                }
                Some(first)
            }
        };
        let coding = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("Transfer-Encoding"))
            .map(|(_, v)| v.trim())
            .collect::<Vec<_>>();
        if !coding.is_empty() {
            if length.is_some() || self.version == Version::Http10 {
                return Err(Error::AmbiguousLength);
            }
            return match coding[..] {
                [c] if c.eq_ignore_ascii_case("chunked") => Ok(Framing::Chunked),
                _ => Err(Error::TransferCoding(coding.join(", ").chars().take(64).collect())),
            };
        }
        match length {
            None | Some(0) => Ok(Framing::None),
            Some(n) if n > limits.max_body_bytes as u64 => Err(Error::BodyTooLarge(n)),
            Some(n) => Ok(Framing::Length(n as usize)),
        }
    }
}

fn parse_length(v: &str) -> Result<u64, Error> {
    let v = v.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::BadContentLength);
    }
    v.parse().map_err(|_| Error::BadContentLength)
}

/// Parses the request head `buf` starts with. Returns it and the bytes it
/// took, or `Ok(None)` while the blank line has not arrived.
pub fn parse_head(buf: &[u8], limits: &Limits) -> Result<Option<(Head, usize)>, Error> {
    // Stray line breaks before a request are to be skipped (RFC 9112 2.2).
    let skip = buf.iter().take_while(|&&b| b == b'\r' || b == b'\n').count();
    let rest = &buf[skip..];
    if rest.is_empty() {
        return Ok(None);
    }
    let mut fields = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let mut req = httparse::Request::new(&mut fields);
    let len = match req.parse(rest) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if rest.len() > limits.max_head_bytes => {
            return Err(Error::HeadTooLarge(limits.max_head_bytes))
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Error::TooManyHeaders(limits.max_headers)),
        Err(httparse::Error::Version) => return Err(Error::Version),
        Err(httparse::Error::HeaderName) => return Err(Error::Malformed("a header name is not a token")),
        Err(httparse::Error::HeaderValue) => return Err(Error::Malformed("a header value has a control character")),
        Err(httparse::Error::Token) => return Err(Error::Malformed("the method is not a token")),
        Err(_) => return Err(Error::Malformed("the request line")),
    };
    if len > limits.max_head_bytes {
        return Err(Error::HeadTooLarge(limits.max_head_bytes));
    }
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(Error::Malformed("the request line"));
    };
    let mut headers = Headers::default();
    for f in req.headers.iter() {
        headers.push(f.name, String::from_utf8_lossy(f.value).trim());
    }
    let head = Head {
        method: method.to_owned(),
        target: target.to_owned(),
        version: if version == 0 { Version::Http10 } else { Version::Http11 },
        headers,
    };
    Ok(Some((head, skip + len)))
}

/// Parses a whole body of `framing` at the start of `buf`: the decoded body
/// and the bytes it took, or `Ok(None)` while more is to come.
pub fn parse_body(buf: &[u8], framing: Framing, limits: &Limits) -> Result<Option<(Vec<u8>, usize)>, Error> {
    match framing {
        Framing::None => Ok(Some((Vec::new(), 0))),
        Framing::Length(n) => Ok(buf.get(..n).map(|b| (b.to_vec(), n))),
        Framing::Chunked => parse_chunked(buf, limits),
    }
}

/// A chunked body (RFC 9112 section 7.1): chunks, a last chunk, trailer
/// fields (skipped, within the head limit) and the blank line.
fn parse_chunked(buf: &[u8], limits: &Limits) -> Result<Option<(Vec<u8>, usize)>, Error> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let (used, size) = match httparse::parse_chunk_size(&buf[at..]) {
            Ok(httparse::Status::Complete(c)) => c,
            Ok(httparse::Status::Partial) if buf.len() - at > limits.max_head_bytes => return Err(Error::BadChunk),
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(Error::BadChunk),
        };
        at += used;
        if size == 0 {
            break;
        }
        let total = body.len() as u64 + size;
        if total > limits.max_body_bytes as u64 {
            return Err(Error::BodyTooLarge(total));
        }
        let size = size as usize;
        let Some(chunk) = buf.get(at..at + size) else {
            return Ok(None);
        };
        match buf.get(at + size..at + size + 2) {
            None => return Ok(None),
            Some(b"\r\n") => {}
            Some(_) => return Err(Error::BadChunk),
        }
        body.extend_from_slice(chunk);
        at += size + 2;
    }
    // Trailer fields, each a line, then an empty line.
    let trailers = at;
    loop {
        let Some(end) = buf[at..].iter().position(|&b| b == b'\n') else {
            if buf.len() - trailers > limits.max_head_bytes {
                return Err(Error::BadChunk);
            }
            return Ok(None);
        };
        let line = &buf[at..at + end];
        at += end + 1;
        if line.is_empty() || line == b"\r" {
            return Ok(Some((body, at)));
        }
        if at - trailers > limits.max_head_bytes {
            return Err(Error::BadChunk);
        }
    }
}

/// Parses a whole request: [`parse_head`], then its body.
pub fn parse_request(buf: &[u8], limits: &Limits) -> Result<Option<(Request, usize)>, Error> {
    let Some((head, head_len)) = parse_head(buf, limits)? else {
        return Ok(None);
    };
    let framing = head.framing(limits)?;
    let Some((body, body_len)) = parse_body(&buf[head_len..], framing, limits)? else {
        return Ok(None);
    };
    Ok(Some((Request { head, body }, head_len + body_len)))
}

/// How a response's body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// The body is [`Response::body`], announced by `Content-Length`.
    Sized,
    /// The body streams until the server closes the connection, which
    /// therefore closes: a tunnel's server-to-client leg, an Icecast
    /// listener's stream. Nothing of [`Response::body`] is written.
    UntilClose,
}

/// A response to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Headers,
    pub body: Vec<u8>,
    pub framing: Body,
}

impl Response {
    pub fn new(status: u16) -> Response {
        Response {
            status,
            headers: Headers::default(),
            body: Vec::new(),
            framing: Body::Sized,
        }
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Response {
        self.headers.push(name, value);
        self
    }

    pub fn body(mut self, content_type: &str, body: impl Into<Vec<u8>>) -> Response {
        self.headers.push("Content-Type", content_type);
        self.body = body.into();
        self
    }

    /// A response whose body streams until the connection closes.
    pub fn streaming(mut self) -> Response {
        self.framing = Body::UntilClose;
        self
    }

    /// Whether the connection closes after this response, answering a
    /// request that asked for `keep_alive`.
    pub fn closes(&self, keep_alive: bool) -> bool {
        !keep_alive || self.framing == Body::UntilClose
    }

    /// Appends the response to `out` in `version`, as the answer to a
    /// request that asked for `keep_alive`. For HEAD (`head_only`) the
    /// length of the body is announced but the body left out.
    pub fn write_to(&self, out: &mut Vec<u8>, version: Version, keep_alive: bool, head_only: bool) {
        let mut head = String::with_capacity(160);
        let _ = write!(head, "{} {} {}\r\n", version.as_str(), self.status, reason(self.status));
        for (n, v) in self.headers.iter() {
            let framing = ["Content-Length", "Transfer-Encoding", "Connection"];
            if !framing.iter().any(|f| n.eq_ignore_ascii_case(f)) {
                let _ = write!(head, "{n}: {v}\r\n");
            }
        }
        if self.framing == Body::Sized {
            let _ = write!(head, "Content-Length: {}\r\n", self.body.len());
        }
        if self.closes(keep_alive) {
            head.push_str("Connection: close\r\n");
        } else if version == Version::Http10 {
            head.push_str("Connection: keep-alive\r\n");
        }
        head.push_str("\r\n");
        out.extend_from_slice(head.as_bytes());
        if self.framing == Body::Sized && !head_only {
            out.extend_from_slice(&self.body);
        }
    }
}

/// The reason phrase of a status code.
pub fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// What a connection's first line says it speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http,
    Rtsp,
    /// Neither: answer 400 and close.
    Unknown,
}

/// Tells HTTP from RTSP by the first line of a connection, once it has
/// arrived (`None` before). Methods cannot decide it (OPTIONS, GET_PARAMETER
/// and friends exist in both worlds, and GET and POST carry tunnels): the
/// version token does, `HTTP/` or `RTSP/`. An interleaved `$` frame is RTSP.
/// Bytes no request line can start with (a TLS handshake, say) are
/// [`Protocol::Unknown`] at once, and so is a first line longer than
/// `max_line` that has not ended.
pub fn sniff(buf: &[u8], max_line: usize) -> Option<Protocol> {
    let skip = buf.iter().take_while(|&&b| b == b'\r' || b == b'\n').count();
    let rest = &buf[skip..];
    let first = *rest.first()?;
    if first == crate::interleaved::MAGIC {
        return Some(Protocol::Rtsp);
    }
    if !is_tchar(first) {
        return Some(Protocol::Unknown);
    }
    let Some(end) = rest.iter().position(|&b| b == b'\n') else {
        return (rest.len() > max_line).then_some(Protocol::Unknown);
    };
    let line = rest[..end].strip_suffix(b"\r").unwrap_or(&rest[..end]);
    let mut words = line.split(|&b| b == b' ').filter(|w| !w.is_empty());
    let (a, _, c) = (words.next(), words.next(), words.next());
    // A status line ("RTSP/1.0 200 OK", an answer to our own keep-alive)
    // starts with the version; a request line ends with it.
    let version = match (a, c) {
        (Some(a), _) if a.starts_with(b"RTSP/") => a,
        (_, Some(c)) => c,
        _ => return Some(Protocol::Unknown),
    };
    Some(if version.starts_with(b"HTTP/") {
        Protocol::Http
    } else if version.starts_with(b"RTSP/") {
        Protocol::Rtsp
    } else {
        Protocol::Unknown
    })
}

/// RFC 9110's token characters.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Head {
        parse_head(text.as_bytes(), &Limits::default()).unwrap().unwrap().0
    }

    #[test]
    fn parses_what_ffmpeg_and_gstreamer_send() {
        // ffmpeg 5.1's tunnel GET, byte for byte.
        let ffmpeg = "GET /sample.mp4 HTTP/1.1\r\nUser-Agent: Lavf/59.27.100\r\nRange: bytes=0-\r\n\
                      Connection: close\r\nHost: 127.0.0.1:18999\r\nIcy-MetaData: 1\r\n\
                      x-sessioncookie: 884928239fc85e21\r\nAccept: application/x-rtsp-tunnelled\r\n\
                      Pragma: no-cache\r\nCache-Control: no-cache\r\n\r\nrest";
        let (h, used) = parse_head(ffmpeg.as_bytes(), &Limits::default()).unwrap().unwrap();
        assert_eq!(&ffmpeg[used..], "rest");
        assert_eq!(
            (h.method.as_str(), h.path(), h.version),
            ("GET", "/sample.mp4", Version::Http11)
        );
        assert_eq!(h.headers.get("X-SessionCookie"), Some("884928239fc85e21"));
        assert!(!h.keep_alive(), "Connection: close");
        // GStreamer 1.22's, which speaks HTTP/1.0.
        let gst = head(
            "GET /a.mp4?x=1 HTTP/1.0\r\nx-sessioncookie: osspxdxxypmwsvdebfqqaqq\r\n\
             Accept: application/x-rtsp-tunnelled\r\nHost: h:1\r\n\r\n",
        );
        assert_eq!((gst.path(), gst.target.as_str()), ("/a.mp4", "/a.mp4?x=1"));
        assert!(!gst.keep_alive(), "HTTP/1.0 closes by default");
        assert!(head("GET / HTTP/1.1\r\n\r\n").keep_alive());
        assert!(head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive());
        assert!(!head("GET / HTTP/1.1\r\nConnection: TE, close\r\n\r\n").keep_alive());
        assert!(
            head("\r\n\r\nGET / HTTP/1.1\r\n\r\n").keep_alive(),
            "leading CRLFs skipped"
        );
    }

    #[test]
    fn waits_then_refuses_what_it_must() {
        let l = Limits::default();
        assert_eq!(parse_head(b"GET / HTTP/1.1\r\nHost: x\r\n", &l).unwrap(), None);
        assert_eq!(parse_head(b"", &l).unwrap(), None);
        let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(l.max_head_bytes));
        assert_eq!(parse_head(huge.as_bytes(), &l).unwrap_err().status(), 431);
        let many: String = (0..65).map(|i| format!("X-{i}: y\r\n")).collect();
        let e = parse_head(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes(), &l).unwrap_err();
        assert_eq!((e.clone(), e.status()), (Error::TooManyHeaders(64), 431));
        assert_eq!(parse_head(b"GET / HTTP/2.0\r\n\r\n", &l).unwrap_err().status(), 505);
        for bad in [
            &b"GET / HTTP/1.1\r\nNo Colon\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nX: a\r\n folded\r\n\r\n",
            b"GET\r\n\r\n",
            b"G(T / HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(
                parse_head(bad, &l).unwrap_err().status(),
                400,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn bodies_by_length_or_chunks() {
        let l = Limits::default();
        let text = b"POST /x HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET";
        let (r, used) = parse_request(text, &l).unwrap().unwrap();
        assert_eq!((r.body.as_slice(), &text[used..]), (&b"abc"[..], &b"GET"[..]));
        assert_eq!(parse_request(&text[..text.len() - 4], &l).unwrap(), None);
        let chunked = b"PUT /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\nX-T: 1\r\n\r\nnext";
        let (r, used) = parse_request(chunked, &l).unwrap().unwrap();
        assert_eq!((r.body.as_slice(), &chunked[used..]), (&b"Wikipedia"[..], &b"next"[..]));
        for cut in 1..chunked.len() - 4 {
            assert_eq!(parse_request(&chunked[..cut], &l).unwrap(), None, "cut at {cut}");
        }
        let framing = |h: &str| head(&format!("POST /x HTTP/1.1\r\n{h}\r\n\r\n")).framing(&l);
        assert_eq!(framing("Content-Length: 5"), Ok(Framing::Length(5)));
        assert_eq!(
            framing("Content-Length: 5\r\nContent-Length: 5"),
            Ok(Framing::Length(5))
        );
        assert_eq!(framing("Content-Length: 0"), Ok(Framing::None));
        for bad in [
            "Content-Length: -1",
            "Content-Length: 5\r\nContent-Length: 6",
            "Content-Length: 5, 6",
            "Content-Length: +5",
            "Content-Length: 99999999999999999999999",
            "Content-Length: 3\r\nTransfer-Encoding: chunked",
        ] {
            assert_eq!(framing(bad).map_err(|e| e.status()), Err(400), "{bad}");
        }
        assert_eq!(framing("Content-Length: 1000000").map_err(|e| e.status()), Err(413));
        assert_eq!(framing("Transfer-Encoding: gzip").map_err(|e| e.status()), Err(501));
        assert_eq!(
            head("POST /x HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n").framing(&l),
            Err(Error::AmbiguousLength)
        );
        // Chunks past the body limit, and chunk syntax that is wrong.
        let big = format!("{:x}\r\n", l.max_body_bytes + 1);
        assert_eq!(
            parse_body(big.as_bytes(), Framing::Chunked, &l),
            Err(Error::BodyTooLarge(65537))
        );
        assert_eq!(parse_body(b"zz\r\n", Framing::Chunked, &l), Err(Error::BadChunk));
        assert_eq!(parse_body(b"2\r\nabX\r\n", Framing::Chunked, &l), Err(Error::BadChunk));
    }

    #[test]
    fn responses_say_their_framing() {
        let r = Response::new(404).body("text/plain", "no");
        let mut out = Vec::new();
        r.write_to(&mut out, Version::Http11, true, false);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nno"
        );
        let mut out = Vec::new();
        r.write_to(&mut out, Version::Http10, true, true);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.0 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n"
        );
        let stream = Response::new(200)
            .header("Content-Length", "9")
            .body("x/y", "ignored")
            .streaming();
        assert!(stream.closes(true));
        let mut out = Vec::new();
        stream.write_to(&mut out, Version::Http11, true, false);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Type: x/y\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn the_first_line_tells_the_protocol() {
        let sniff = |b: &[u8]| sniff(b, 100);
        assert_eq!(sniff(b"OPTIONS * RTSP/1.0\r\n"), Some(Protocol::Rtsp));
        assert_eq!(sniff(b"OPTIONS * HTTP/1.1\r\n"), Some(Protocol::Http));
        assert_eq!(sniff(b"GET_PARAMETER rtsp://h/a RTSP/1.0\n"), Some(Protocol::Rtsp));
        assert_eq!(sniff(b"\r\nGET /a.mp4 HTTP/1.0\r\n"), Some(Protocol::Http));
        assert_eq!(sniff(b"GET /a.mp4 HTTP/2.0\r\n"), Some(Protocol::Http), "then 505");
        assert_eq!(sniff(b"RTSP/1.0 200 OK\r\n"), Some(Protocol::Rtsp));
        assert_eq!(sniff(b"$\x01\x00\x04"), Some(Protocol::Rtsp));
        assert_eq!(sniff(b"GET /a.mp4 HTT"), None, "the line has not ended");
        assert_eq!(sniff(b""), None);
        assert_eq!(sniff(b"\x16\x03\x01\x02\x00"), Some(Protocol::Unknown), "TLS, at once");
        assert_eq!(sniff(b"GET /\r\n"), Some(Protocol::Unknown), "HTTP/0.9");
        assert_eq!(sniff(b"HELLO there SMTP/1.0\r\n"), Some(Protocol::Unknown));
        assert_eq!(sniff(&[b'A'; 101]), Some(Protocol::Unknown), "a line past the limit");
    }
}
