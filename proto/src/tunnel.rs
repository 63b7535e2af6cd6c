//! RTSP over HTTP, the QuickTime way (Apple, "Tunnelling QuickTime RTSP and
//! RTP over HTTP"): two HTTP requests from the client, paired by a cookie
//! into one full-duplex RTSP connection for clients behind proxies that pass
//! only HTTP.
//!
//! - The `GET` opens the server-to-client leg. It carries `x-sessioncookie`
//!   and `Accept: application/x-rtsp-tunnelled`, and is answered `200 OK`
//!   with `Content-Type: application/x-rtsp-tunnelled` and no length
//!   ([`get_response`]): from then on the response body is the RTSP
//!   connection's output, responses and interleaved `$` frames, unencoded.
//! - The `POST`, with the same cookie and that content type, carries the
//!   client-to-server half as its body, base64-encoded ([`Decoder`]): RTSP
//!   requests and interleaved RTCP. It is never answered. Its
//!   `Content-Length` is a formality (32767 by convention) and is ignored:
//!   clients go on writing past it.
//! - The client may close the POST and open another with the same cookie
//!   later (QuickTime does, after each request); the GET stays.
//!
//! What real clients send (checked against each one's source and on the
//! wire):
//!
//! - **ffmpeg** (`-rtsp_transport http`, libavformat/rtsp.c over its http
//!   protocol): HTTP/1.1; a cookie of 16 lowercase hex digits; on the GET
//!   `Range: bytes=0-`, `Connection: close` and `Icy-MetaData: 1` from its
//!   generic HTTP layer besides the tunnel headers; on the POST
//!   `Content-Length: 32767` and `Expires: Sun, 9 Jan 1972 00:00:00 GMT`. It
//!   sends the POST only after reading the GET's response head, and encodes
//!   each request as one base64 block with its padding.
//! - **GStreamer** (`rtsph://`, gstrtspconnection.c): HTTP/1.0; a cookie of
//!   23 lowercase letters; `Accept` on the POST too; POST after the GET's
//!   response, each message (requests, and its RTCP as `$` frames) one
//!   padded base64 block. It honours an `x-server-ip-address` header in the
//!   GET's response by sending its POST to that address instead, a DSS
//!   feature for round-robin DNS: this server does not send it, since an
//!   address it could name (a wildcard bind, a private address behind NAT)
//!   may not be one the client can reach.
//! - **QuickTime** and **live555**: HTTP/1.0, cookies of letters and digits
//!   (QuickTime's are 22 characters); live555's server strips whitespace and
//!   decodes in multiples of four characters, so base64 split anywhere, with
//!   line breaks between blocks, is what the decoder must take.
//!
//! So the decoder tolerates any split of the text across reads, whitespace
//! and CRLF anywhere, and padding at the end of each block (a block ends at
//! its padding, and the next starts fresh); anything outside the alphabet,
//! or padding where it cannot be, is an error that ends the tunnel.

use crate::http::{Headers, Response};

/// The tunnel's media type: the GET's `Accept`, the POST's `Content-Type`
/// and the GET's response's `Content-Type`.
pub const MIME: &str = "application/x-rtsp-tunnelled";
/// The header that pairs the two legs.
pub const COOKIE_HEADER: &str = "x-sessioncookie";
/// The longest cookie taken; real ones have 16 to 24 characters.
pub const MAX_COOKIE_LEN: usize = 128;
/// What a POST conventionally announces as its length.
pub const POST_CONTENT_LENGTH: u32 = 32767;

/// The value of `x-sessioncookie`: visible ASCII, at most
/// [`MAX_COOKIE_LEN`] bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Cookie(String);

impl Cookie {
    pub fn parse(value: &str) -> Result<Cookie, TunnelError> {
        let v = value.trim();
        if v.is_empty() {
            return Err(TunnelError::NoCookie);
        }
        if v.len() > MAX_COOKIE_LEN || !v.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TunnelError::BadCookie);
        }
        Ok(Cookie(v.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Which half of a tunnel a request opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leg {
    /// Server to client.
    Get,
    /// Client to server.
    Post,
}

/// Why a request that asks for a tunnel cannot open one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TunnelError {
    #[error("no x-sessioncookie")]
    NoCookie,
    #[error("the x-sessioncookie is not a cookie")]
    BadCookie,
    #[error("{0} cannot open a tunnel leg (GET and POST do)")]
    Method(String),
}

impl TunnelError {
    /// The HTTP status that answers it.
    pub fn status(&self) -> u16 {
        match self {
            TunnelError::Method(_) => 405,
            _ => 400,
        }
    }
}

/// Whether a request with `method` and `headers` is a tunnel leg: `None`
/// when it is not about a tunnel at all, else which leg and its cookie, or
/// why it cannot be one. A request is about a tunnel when it carries a
/// cookie, or (without one, which is then the error) when a GET accepts or a
/// POST carries the tunnel's media type.
pub fn classify(method: &str, headers: &Headers) -> Option<Result<(Leg, Cookie), TunnelError>> {
    let mentions = |name: &str| {
        headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| {
                t.split(';')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .eq_ignore_ascii_case(MIME)
            })
    };
    let cookie = headers.get(COOKIE_HEADER);
    let leg = match method {
        "GET" => Leg::Get,
        "POST" => Leg::Post,
        other => return cookie.map(|_| Err(TunnelError::Method(other.chars().take(32).collect()))),
    };
    let asks = match leg {
        Leg::Get => mentions("Accept"),
        Leg::Post => mentions("Content-Type"),
    };
    if cookie.is_none() && !asks {
        return None;
    }
    Some(Cookie::parse(cookie.unwrap_or_default()).map(|c| (leg, c)))
}

/// The answer to a GET that opens a tunnel: the RTSP connection's output
/// follows as its body, until the connection closes. Proxies are asked not
/// to cache or transform it.
pub fn get_response() -> Response {
    Response::new(200)
        .header("Cache-Control", "no-store")
        .header("Pragma", "no-cache")
        .header("Content-Type", MIME)
        .streaming()
}

/// A client's GET for `path` (with its query) on `host` (`host:port`).
pub fn get_request(out: &mut Vec<u8>, path: &str, host: &str, cookie: &Cookie, user_agent: &str) {
    let text = format!(
        "GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: {user_agent}\r\n{COOKIE_HEADER}: {}\r\n\
         Accept: {MIME}\r\nPragma: no-cache\r\nCache-Control: no-cache\r\n\r\n",
        cookie.as_str()
    );
    out.extend_from_slice(text.as_bytes());
}

/// A client's POST for `path` on `host`, to be followed by base64.
pub fn post_request(out: &mut Vec<u8>, path: &str, host: &str, cookie: &Cookie, user_agent: &str) {
    let text = format!(
        "POST {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: {user_agent}\r\n{COOKIE_HEADER}: {}\r\n\
         Content-Type: {MIME}\r\nPragma: no-cache\r\nCache-Control: no-cache\r\n\
         Content-Length: {POST_CONTENT_LENGTH}\r\nExpires: Sun, 9 Jan 1972 00:00:00 GMT\r\n\r\n",
        cookie.as_str()
    );
    out.extend_from_slice(text.as_bytes());
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
/// Not in the alphabet.
const INVALID: u8 = 0xff;
/// Padding.
const PAD: u8 = 0xfe;
/// Whitespace, skipped.
const SPACE: u8 = 0xfd;

const fn decode_table() -> [u8; 256] {
    let mut t = [INVALID; 256];
    let mut i = 0;
    while i < 64 {
        t[ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    t[b'=' as usize] = PAD;
    t[b' ' as usize] = SPACE;
    t[b'\t' as usize] = SPACE;
    t[b'\r' as usize] = SPACE;
    t[b'\n' as usize] = SPACE;
    t
}

static DECODE: [u8; 256] = decode_table();

/// Base64 (RFC 4648, the standard alphabet) of `data`, padded, appended to
/// `out`: one self-contained block, as every client sends each message.
pub fn encode(data: &[u8], out: &mut Vec<u8>) {
    out.reserve(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        let sextet = |i: u32| ALPHABET[((n >> (18 - 6 * i)) & 63) as usize];
        out.extend_from_slice(&[sextet(0), sextet(1)]);
        out.push(if chunk.len() > 1 { sextet(2) } else { b'=' });
        out.push(if chunk.len() > 2 { sextet(3) } else { b'=' });
    }
}

/// Text in a POST body that is not base64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("byte 0x{byte:02x} is not base64 here (at byte {at} of the POST body)")]
pub struct Base64Error {
    pub byte: u8,
    /// How many body bytes the decoder had taken before it.
    pub at: u64,
}

/// A streaming base64 decoder for a tunnel's POST body: text in, in pieces
/// split anywhere, bytes out as soon as a quantum of four characters is
/// whole. Small and plain (it moves with the tunnel between cores).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Decoder {
    /// The sextets of the quantum so far.
    quad: [u8; 4],
    /// How many of `quad` are filled; with `padded`, how many carry data.
    n: u8,
    /// The quantum has had its first `=`: only `=` may complete it.
    padded: bool,
    taken: u64,
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// Decodes `text`, appending the bytes of every quantum it completes to
    /// `out`. On an error, what came before it has been appended.
    pub fn decode(&mut self, text: &[u8], out: &mut Vec<u8>) -> Result<(), Base64Error> {
        out.reserve(text.len() / 4 * 3 + 3);
        for &c in text {
            let at = self.taken;
            self.taken += 1;
            let v = DECODE[usize::from(c)];
            let bad = Err(Base64Error { byte: c, at });
            match v {
                SPACE => continue,
                INVALID => return bad,
                PAD => {
                    // "xx==" or "xxx=": padding at the third or fourth place.
                    if !self.padded && self.n < 2 {
                        return bad;
                    }
                    if !self.padded {
                        self.padded = true;
                        self.flush_partial(out);
                    }
                    self.n += 1;
                    if self.n == 4 {
                        self.n = 0;
                        self.padded = false;
                    }
                }
                _ if self.padded => return bad,
                _ => {
                    self.quad[usize::from(self.n)] = v;
                    self.n += 1;
                    if self.n == 4 {
                        let q = self.quad;
                        let n = u32::from(q[0]) << 18 | u32::from(q[1]) << 12 | u32::from(q[2]) << 6 | u32::from(q[3]);
                        out.extend_from_slice(&[(n >> 16) as u8, (n >> 8) as u8, n as u8]);
                        self.n = 0;
                    }
                }
            }
        }
        Ok(())
    }

    /// The bytes of a quantum that padding has just cut short.
    fn flush_partial(&mut self, out: &mut Vec<u8>) {
        let q = self.quad;
        let n = u32::from(q[0]) << 18 | u32::from(q[1]) << 12 | u32::from(q[2]) << 6;
        out.push((n >> 16) as u8);
        if self.n == 3 {
            out.push((n >> 8) as u8);
        }
    }

    /// Whether the decoder is between quanta: text cut anywhere else has
    /// left part of one behind.
    pub fn is_aligned(&self) -> bool {
        self.n == 0
    }

    /// Forgets a partial quantum, for a new POST body (each starts afresh).
    pub fn restart(&mut self) {
        self.n = 0;
        self.padded = false;
        self.taken = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::Rng;
    use base64::Engine as _;

    fn headers(fields: &[(&str, &str)]) -> Headers {
        let mut h = Headers::default();
        for (n, v) in fields {
            h.push(*n, *v);
        }
        h
    }

    fn decode_all(text: &[u8]) -> Result<Vec<u8>, Base64Error> {
        let mut out = Vec::new();
        Decoder::new().decode(text, &mut out).map(|()| out)
    }

    #[test]
    fn requests_are_told_by_cookie_and_media_type() {
        let c = |s: &str| Cookie::parse(s).unwrap();
        let get = headers(&[("x-sessioncookie", "884928239fc85e21"), ("Accept", MIME)]);
        assert_eq!(classify("GET", &get), Some(Ok((Leg::Get, c("884928239fc85e21")))));
        let post = headers(&[("X-SessionCookie", "osspxdxxypmwsvdebfqqaqq"), ("Content-Type", MIME)]);
        assert_eq!(
            classify("POST", &post),
            Some(Ok((Leg::Post, c("osspxdxxypmwsvdebfqqaqq"))))
        );
        // A cookie alone is enough; the media type alone is a tunnel without one.
        let bare = headers(&[("x-sessioncookie", "PPwTZeVfAAAul3YACIAAAA")]);
        assert!(matches!(classify("GET", &bare), Some(Ok((Leg::Get, _)))));
        let accept = headers(&[("Accept", "text/html, application/X-RTSP-Tunnelled;q=0.9")]);
        assert_eq!(classify("GET", &accept), Some(Err(TunnelError::NoCookie)));
        assert_eq!(classify("GET", &headers(&[("Accept", "*/*")])), None);
        assert_eq!(classify("POST", &headers(&[("Content-Type", "text/plain")])), None);
        assert_eq!(
            classify("PUT", &bare).map(|r| r.map_err(|e| e.status())),
            Some(Err(405))
        );
        assert_eq!(classify("PUT", &headers(&[])), None);
        for bad in ["a b", "x\u{7f}", &"a".repeat(MAX_COOKIE_LEN + 1)] {
            let h = headers(&[("x-sessioncookie", bad)]);
            assert_eq!(classify("GET", &h), Some(Err(TunnelError::BadCookie)), "{bad:?}");
        }
        assert_eq!(
            classify("GET", &headers(&[("x-sessioncookie", " "), ("Accept", MIME)])),
            Some(Err(TunnelError::NoCookie))
        );
    }

    #[test]
    fn the_get_answer_streams() {
        let mut out = Vec::new();
        get_response().write_to(&mut out, crate::http::Version::Http10, false, false);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.0 200 OK\r\n"), "{text}");
        assert!(text.contains("Content-Type: application/x-rtsp-tunnelled\r\n"));
        assert!(!text.contains("Content-Length"), "{text}");
        assert!(text.ends_with("Connection: close\r\n\r\n"));
    }

    #[test]
    fn codec_matches_rfc_4648_and_an_independent_decoder() {
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            let mut out = Vec::new();
            encode(plain.as_bytes(), &mut out);
            assert_eq!(out, coded.as_bytes());
            assert_eq!(decode_all(coded.as_bytes()).unwrap(), plain.as_bytes());
        }
        let mut rng = Rng(11);
        for _ in 0..200 {
            let n = rng.below(300);
            let data = rng.bytes(n);
            let mut ours = Vec::new();
            encode(&data, &mut ours);
            assert_eq!(ours, base64::engine::general_purpose::STANDARD.encode(&data).as_bytes());
            assert_eq!(decode_all(&ours).unwrap(), data);
        }
    }

    #[test]
    fn blocks_split_anywhere_with_whitespace_between() {
        // Messages as clients send them: each its own padded block, here with
        // CRLF and spaces between and inside, fed in every possible split.
        let messages: [&[u8]; 3] = [
            b"OPTIONS rtsp://h/a.mp4 RTSP/1.0\r\nCSeq: 1\r\n\r\n",
            b"$\x01\x00\x03abc",
            b"GET_PARAMETER rtsp://h/a.mp4 RTSP/1.0\r\nCSeq: 22\r\n\r\n",
        ];
        let mut text = Vec::new();
        let mut want = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            encode(m, &mut text);
            text.extend_from_slice(if i == 0 { b"\r\n" } else { b" \t" });
            want.extend_from_slice(m);
        }
        text.splice(5..5, b"\r\n".iter().copied());
        for cut in 0..=text.len() {
            let mut d = Decoder::new();
            let mut out = Vec::new();
            d.decode(&text[..cut], &mut out).unwrap();
            assert!(want.starts_with(&out), "cut {cut}");
            d.decode(&text[cut..], &mut out).unwrap();
            assert_eq!(out, want, "cut {cut}");
            assert!(d.is_aligned());
        }
        // One character at a time.
        let mut d = Decoder::new();
        let mut out = Vec::new();
        for &c in &text {
            d.decode(&[c], &mut out).unwrap();
        }
        assert_eq!(out, want);
    }

    #[test]
    fn bad_base64_is_an_error_that_says_where() {
        assert_eq!(decode_all(b"Zm9v!"), Err(Base64Error { byte: b'!', at: 4 }));
        assert_eq!(decode_all(b"Zm9v\0"), Err(Base64Error { byte: 0, at: 4 }));
        assert_eq!(decode_all(b"Z=").unwrap_err().at, 1, "padding too early");
        assert_eq!(decode_all(b"=AAA").unwrap_err().at, 0);
        assert_eq!(
            decode_all(b"Zg=g").unwrap_err().at,
            3,
            "data after padding in a quantum"
        );
        assert_eq!(decode_all(b"Zm-v").unwrap_err().byte, b'-', "not the URL-safe alphabet");
        // What came before the error is kept; a partial quantum is not aligned.
        let mut d = Decoder::new();
        let mut out = Vec::new();
        assert!(d.decode(b"Zm9vYg", &mut out).is_ok());
        assert_eq!((out.as_slice(), d.is_aligned()), (&b"foo"[..], false));
        d.restart();
        d.decode(b"YmFy", &mut out).unwrap();
        assert_eq!(out, b"foobar");
    }

    #[test]
    fn client_requests_are_the_tunnel_headers() {
        let cookie = Cookie::parse("abc123").unwrap();
        let limits = crate::http::Limits::default();
        let mut out = Vec::new();
        get_request(&mut out, "/a.mp4", "h:554", &cookie, "t/1");
        let (h, _) = crate::http::parse_head(&out, &limits).unwrap().unwrap();
        assert_eq!(classify(&h.method, &h.headers), Some(Ok((Leg::Get, cookie.clone()))));
        out.clear();
        post_request(&mut out, "/a.mp4", "h:554", &cookie, "t/1");
        let (h, used) = crate::http::parse_head(&out, &limits).unwrap().unwrap();
        assert_eq!(used, out.len());
        assert_eq!(classify(&h.method, &h.headers), Some(Ok((Leg::Post, cookie))));
        assert_eq!(h.headers.get("Content-Length"), Some("32767"));
    }
}
