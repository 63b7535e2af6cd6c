//! RTSP/1.0 messages on a byte stream (RFC 2326 section 4-7): an incremental
//! request parser with limits, interleaved `$` frames, and responses.
//!
//! The parser never buffers by itself: the caller keeps the connection's
//! bytes and calls [`parse`] whenever more arrive. It returns the first
//! complete message and how many bytes it used, `Ok(None)` when more bytes are
//! needed, or an error that says which status to answer before closing.

use std::fmt::{self, Write as _};

use super::status::Status;
use crate::interleaved;

/// Bounds on what one request may occupy, so a client cannot make the server
/// hold unbounded memory for it.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Request line plus headers, up to and including the blank line.
    pub max_header_bytes: usize,
    pub max_body_bytes: usize,
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 16 * 1024,
            max_body_bytes: 64 * 1024,
            max_headers: 64,
        }
    }
}

/// RTSP methods. Anything else is kept by name, so the server can answer 501
/// and still echo the CSeq.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    Options,
    Describe,
    Announce,
    Setup,
    Play,
    Pause,
    Teardown,
    GetParameter,
    SetParameter,
    Record,
    Redirect,
    Other(String),
}

impl Method {
    fn parse(s: &str) -> Method {
        match s {
            "OPTIONS" => Method::Options,
            "DESCRIBE" => Method::Describe,
            "ANNOUNCE" => Method::Announce,
            "SETUP" => Method::Setup,
            "PLAY" => Method::Play,
            "PAUSE" => Method::Pause,
            "TEARDOWN" => Method::Teardown,
            "GET_PARAMETER" => Method::GetParameter,
            "SET_PARAMETER" => Method::SetParameter,
            "RECORD" => Method::Record,
            "REDIRECT" => Method::Redirect,
            other => Method::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Method::Options => "OPTIONS",
            Method::Describe => "DESCRIBE",
            Method::Announce => "ANNOUNCE",
            Method::Setup => "SETUP",
            Method::Play => "PLAY",
            Method::Pause => "PAUSE",
            Method::Teardown => "TEARDOWN",
            Method::GetParameter => "GET_PARAMETER",
            Method::SetParameter => "SET_PARAMETER",
            Method::Record => "RECORD",
            Method::Redirect => "REDIRECT",
            Method::Other(s) => s,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Header fields in arrival order, looked up without regard to case.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, String)>);

impl Headers {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn push(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.0.push((name.into(), value.into()));
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    pub uri: String,
    pub headers: Headers,
    pub body: Vec<u8>,
}

impl Request {
    /// A request with no headers yet.
    pub fn new(method: Method, uri: impl Into<String>) -> Request {
        Request {
            method,
            uri: uri.into(),
            headers: Headers::default(),
            body: Vec::new(),
        }
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Request {
        self.headers.push(name, value);
        self
    }

    /// The CSeq, as sent. Responses echo it verbatim.
    pub fn cseq(&self) -> Option<&str> {
        self.headers.get("CSeq")
    }

    /// Appends the request's bytes to `out`, with a `Content-Length` when it
    /// has a body.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let mut head = String::with_capacity(128);
        let _ = write!(head, "{} {} RTSP/1.0\r\n", self.method, self.uri);
        write_fields(&mut head, &self.headers, self.body.len());
        out.extend_from_slice(head.as_bytes());
        out.extend_from_slice(&self.body);
    }
}

/// Header fields, then `Content-Length` for a body, then the blank line.
fn write_fields(head: &mut String, headers: &Headers, body_len: usize) {
    for (n, v) in headers.iter() {
        if !n.eq_ignore_ascii_case("Content-Length") {
            let _ = write!(head, "{n}: {v}\r\n");
        }
    }
    if body_len > 0 {
        let _ = write!(head, "Content-Length: {body_len}\r\n");
    }
    head.push_str("\r\n");
}

/// One message read from a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Request(Request),
    /// A `$`-framed interleaved packet (RFC 2326 section 10.12): RTCP from a
    /// client playing over TCP, or media it records.
    Interleaved {
        channel: u8,
        data: Vec<u8>,
    },
    /// A response: what a client reads, and what a server gets back for a
    /// request it sent (a keep-alive), which it may skip.
    Response(Response),
}

/// Why a request cannot be parsed; each maps to the status to answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("request line and headers exceed {0} bytes")]
    HeadersTooLarge(usize),
    #[error("more than {0} header fields")]
    TooManyHeaders(usize),
    #[error("body of {0} bytes exceeds the limit")]
    BodyTooLarge(u64),
    #[error("malformed request line")]
    BadRequestLine,
    #[error("malformed header field")]
    BadHeader,
    #[error("Content-Length is not a non-negative integer")]
    BadContentLength,
    #[error("unsupported protocol version {0:?}")]
    BadVersion(String),
}

impl ParseError {
    /// The status that answers this error.
    pub fn status(&self) -> Status {
        match self {
            ParseError::HeadersTooLarge(_) | ParseError::TooManyHeaders(_) => Status::BAD_REQUEST,
            ParseError::BodyTooLarge(_) => Status::REQUEST_ENTITY_TOO_LARGE,
            ParseError::BadVersion(_) => Status::RTSP_VERSION_NOT_SUPPORTED,
            _ => Status::BAD_REQUEST,
        }
    }
}

fn find_header_end(buf: &[u8]) -> Option<usize> {
    // Real clients send CRLF; some old ones send bare LF. Accept both.
    let mut i = 0;
    while let Some(p) = buf[i..].iter().position(|&b| b == b'\n') {
        let at = i + p;
        let rest = &buf[at + 1..];
        if rest.first() == Some(&b'\n') {
            return Some(at + 2);
        }
        if rest.starts_with(b"\r\n") {
            return Some(at + 3);
        }
        i = at + 1;
    }
    None
}

/// Parses the first message in `buf`. Returns it and the number of bytes it
/// took, or `Ok(None)` if `buf` does not yet hold a whole message.
pub fn parse(buf: &[u8], limits: &Limits) -> Result<Option<(Message, usize)>, ParseError> {
    // Clients may send stray line breaks between requests (RFC 2616 4.1 asks
    // servers to skip them, and RTSP clients inherited the habit).
    let skip = buf.iter().take_while(|&&b| b == b'\r' || b == b'\n').count();
    let rest = &buf[skip..];
    if rest.is_empty() {
        return Ok(None);
    }
    match interleaved::parse(rest) {
        interleaved::Parsed::Frame(f) => {
            let msg = Message::Interleaved {
                channel: f.channel,
                data: f.data.to_vec(),
            };
            return Ok(Some((msg, skip + f.wire_len())));
        }
        interleaved::Parsed::Partial { .. } => return Ok(None),
        interleaved::Parsed::NotFrame => {}
    }
    let Some(head_len) = find_header_end(rest) else {
        if rest.len() > limits.max_header_bytes {
            return Err(ParseError::HeadersTooLarge(limits.max_header_bytes));
        }
        return Ok(None);
    };
    if head_len > limits.max_header_bytes {
        return Err(ParseError::HeadersTooLarge(limits.max_header_bytes));
    }
    let head = std::str::from_utf8(&rest[..head_len]).map_err(|_| ParseError::BadHeader)?;
    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let start = lines.next().ok_or(ParseError::BadRequestLine)?;
    // A status line is "RTSP/1.0 404 Not Found": its reason phrase may hold
    // spaces. A request line is exactly three words.
    let start = if start.starts_with("RTSP/") {
        let mut parts = start.splitn(3, ' ');
        let (_version, status) = (parts.next(), parts.next());
        let status = status
            .and_then(|s| s.parse().ok())
            .and_then(Status::from_wire)
            .ok_or(ParseError::BadRequestLine)?;
        StartLine::Status(status)
    } else {
        let mut parts = start.split(' ').filter(|p| !p.is_empty());
        let (a, b, c) = (parts.next(), parts.next(), parts.next());
        let (Some(a), Some(b), Some(c), None) = (a, b, c, parts.next()) else {
            return Err(ParseError::BadRequestLine);
        };
        StartLine::Request(a, b, c)
    };
    let mut headers = Headers::default();
    for line in lines.filter(|l| !l.is_empty()) {
        if line.starts_with([' ', '\t']) {
            // Folded continuation of the previous field (RFC 2326 4.2 allows
            // it through RFC 822); join it.
            let Some(last) = headers.0.last_mut() else {
                return Err(ParseError::BadHeader);
            };
            last.1.push(' ');
            last.1.push_str(line.trim());
            continue;
        }
        let (name, value) = line.split_once(':').ok_or(ParseError::BadHeader)?;
        if name.is_empty() || name.contains([' ', '\t']) {
            return Err(ParseError::BadHeader);
        }
        if headers.0.len() == limits.max_headers {
            return Err(ParseError::TooManyHeaders(limits.max_headers));
        }
        headers.push(name, value.trim());
    }
    let body_len = match headers.get("Content-Length") {
        None => 0,
        Some(v) => {
            let n: u64 = v.parse().map_err(|_| ParseError::BadContentLength)?;
            if n > limits.max_body_bytes as u64 {
                return Err(ParseError::BodyTooLarge(n));
            }
            n as usize
        }
    };
    if rest.len() < head_len + body_len {
        return Ok(None);
    }
    let used = skip + head_len + body_len;
    let body = rest[head_len..head_len + body_len].to_vec();
    let (method, uri, version) = match start {
        StartLine::Status(status) => return Ok(Some((Message::Response(Response { status, headers, body }), used))),
        StartLine::Request(a, b, c) => (a, b, c),
    };
    if version != "RTSP/1.0" {
        return Err(ParseError::BadVersion(version.chars().take(16).collect()));
    }
    let request = Request {
        method: Method::parse(method),
        uri: uri.to_owned(),
        headers,
        body,
    };
    Ok(Some((Message::Request(request), used)))
}

enum StartLine<'a> {
    Request(&'a str, &'a str, &'a str),
    Status(Status),
}

/// A response to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: Status,
    pub headers: Headers,
    pub body: Vec<u8>,
}

impl Response {
    /// A response with `status` that echoes the request's CSeq (when it had one).
    pub fn new(status: impl Into<Status>, cseq: Option<&str>) -> Response {
        let mut headers = Headers::default();
        if let Some(c) = cseq {
            headers.push("CSeq", c);
        }
        Response {
            status: status.into(),
            headers,
            body: Vec::new(),
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

    /// Appends the response's bytes to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let mut head = String::with_capacity(128);
        let _ = write!(head, "RTSP/1.0 {}\r\n", self.status);
        write_fields(&mut head, &self.headers, self.body.len());
        out.extend_from_slice(head.as_bytes());
        out.extend_from_slice(&self.body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(s: &[u8]) -> Result<Option<(Message, usize)>, ParseError> {
        parse(s, &Limits::default())
    }

    fn request(s: &[u8]) -> Request {
        match one(s).unwrap().unwrap().0 {
            Message::Request(r) => r,
            other => panic!("not a request: {other:?}"),
        }
    }

    #[test]
    fn parses_a_request_with_body_and_pipelined_rest() {
        let text = b"ANNOUNCE rtsp://h/a.sdp RTSP/1.0\r\nCSeq: 7\r\ncontent-length: 4\r\n\r\nv=0\nOPTIONS * RTSP/1.0\r\nCSeq: 8\r\n\r\n";
        let (m, used) = one(text).unwrap().unwrap();
        let Message::Request(r) = m else { panic!() };
        assert_eq!(r.method, Method::Announce);
        assert_eq!(r.uri, "rtsp://h/a.sdp");
        assert_eq!(r.cseq(), Some("7"));
        assert_eq!(r.body, b"v=0\n");
        let r2 = request(&text[used..]);
        assert_eq!((&r2.method, r2.cseq()), (&Method::Options, Some("8")));
    }

    #[test]
    fn waits_for_more_bytes() {
        assert_eq!(one(b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n").unwrap(), None);
        assert_eq!(
            one(b"DESCRIBE x RTSP/1.0\r\nContent-Length: 5\r\n\r\nab").unwrap(),
            None
        );
        assert_eq!(one(b"$\x00\x00\x08abc").unwrap(), None);
        assert_eq!(one(b"").unwrap(), None);
    }

    #[test]
    fn interleaved_frames_and_bare_lf() {
        let (m, used) = one(b"$\x01\x00\x03abcOPTIONS").unwrap().unwrap();
        assert_eq!(
            m,
            Message::Interleaved {
                channel: 1,
                data: b"abc".to_vec()
            }
        );
        assert_eq!(used, 7);
        let r = request(b"\r\nOPTIONS * RTSP/1.0\nCSeq: 2\n\n");
        assert_eq!(r.cseq(), Some("2"));
    }

    #[test]
    fn rejects_what_it_must() {
        let limits = Limits::default();
        let huge = vec![b'a'; limits.max_header_bytes + 1];
        assert_eq!(one(&huge).unwrap_err().status(), 400);
        assert_eq!(
            one(b"PLAY x RTSP/1.0\r\nContent-Length: -1\r\n\r\n").unwrap_err(),
            ParseError::BadContentLength
        );
        assert_eq!(
            one(b"PLAY x RTSP/1.0\r\nContent-Length: 99999999999999999999\r\n\r\n").unwrap_err(),
            ParseError::BadContentLength
        );
        assert_eq!(
            one(b"PLAY x RTSP/1.0\r\nContent-Length: 1000000\r\n\r\n")
                .unwrap_err()
                .status(),
            413
        );
        assert_eq!(one(b"PLAY x HTTP/1.1\r\n\r\n").unwrap_err().status(), 505);
        assert_eq!(one(b"PLAY\r\n\r\n").unwrap_err(), ParseError::BadRequestLine);
        assert_eq!(
            one(b"PLAY x RTSP/1.0\r\nNoColon\r\n\r\n").unwrap_err(),
            ParseError::BadHeader
        );
        assert_eq!(one(b"\xff\xfe x RTSP/1.0\r\n\r\n").unwrap_err(), ParseError::BadHeader);
        let many: String = (0..100).map(|i| format!("X-{i}: y\r\n")).collect();
        let text = format!("OPTIONS * RTSP/1.0\r\n{many}\r\n");
        assert_eq!(one(text.as_bytes()).unwrap_err(), ParseError::TooManyHeaders(64));
    }

    #[test]
    fn parses_responses_with_any_reason_phrase() {
        let text =
            b"RTSP/1.0 404 Not Found\r\nCSeq: 3\r\n\r\nRTSP/1.0 200 OK\r\nCSeq: 4\r\nContent-Length: 3\r\n\r\nv=0";
        let (m, used) = one(text).unwrap().unwrap();
        let Message::Response(r) = m else { panic!("{m:?}") };
        assert_eq!((r.status, r.headers.get("cseq")), (Status::NOT_FOUND, Some("3")));
        let Message::Response(r) = one(&text[used..]).unwrap().unwrap().0 else {
            panic!()
        };
        assert_eq!((r.status, r.body.as_slice()), (Status::OK, &b"v=0"[..]));
        assert_eq!(one(b"RTSP/1.0 abc OK\r\n\r\n").unwrap_err(), ParseError::BadRequestLine);
        assert_eq!(
            one(b"RTSP/1.0 99999 OK\r\n\r\n").unwrap_err(),
            ParseError::BadRequestLine
        );
    }

    #[test]
    fn requests_round_trip() {
        let mut out = Vec::new();
        Request::new(Method::Setup, "rtsp://h/a.mp4/trackID=3")
            .header("CSeq", "2")
            .header("Transport", "RTP/AVP;unicast;client_port=5000-5001")
            .write_to(&mut out);
        let r = request(&out);
        assert_eq!((r.method, r.uri.as_str()), (Method::Setup, "rtsp://h/a.mp4/trackID=3"));
        assert_eq!(
            r.headers.get("transport"),
            Some("RTP/AVP;unicast;client_port=5000-5001")
        );
    }

    #[test]
    fn unknown_methods_are_kept() {
        let r = request(b"FLY x RTSP/1.0\r\nCSeq: 3\r\n\r\n");
        assert_eq!(r.method, Method::Other("FLY".into()));
    }

    #[test]
    fn writes_responses() {
        let mut out = Vec::new();
        Response::new(200, Some("4"))
            .header("Public", "OPTIONS")
            .body("application/sdp", "v=0\r\n")
            .write_to(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "RTSP/1.0 200 OK\r\nCSeq: 4\r\nPublic: OPTIONS\r\nContent-Type: application/sdp\r\nContent-Length: 5\r\n\r\nv=0\r\n"
        );
    }
}
