//! Relaying another server's mount, without IO: this server is a listener
//! of an Icecast or SHOUTcast mount (`--icecast-relay /relay.mp3=http://HOST:PORT/mount`)
//! and feeds what it hears into a mount of its own, as a source would.
//!
//! What a relay does, as Icecast's own relays do:
//!
//! - **The request** is a listener's, `GET /mount HTTP/1.0` with
//!   `Icy-MetaData: 1` (so the upstream's titles come along) and Basic
//!   credentials when the URL has them.
//! - **The answer** may be `ICY 200 OK` (SHOUTcast) or `HTTP/1.x 200`;
//!   anything else, or a content type that is not MPEG audio, is a failed
//!   attempt. `icy-metaint` says where the metadata blocks are: they are
//!   stripped ([`Stripper`]), and a block's `StreamTitle` becomes the
//!   mount's title. `icy-name`, `icy-genre` and the rest become the mount's
//!   own `ice-*` information.
//! - **The body** is audio, cut into frames as a source's is.
//! - **Reconnecting.** A failed attempt, or an upstream that ends, is tried
//!   again after a wait that doubles from [`BACKOFF_MIN`] to [`BACKOFF_MAX`]
//!   ([`Backoff`]), back to the least once a connection has carried audio.
//!   The mount stays off the air while the upstream is away, so its
//!   listeners' streams end (as Icecast's do without a fallback mount).

use std::num::NonZeroUsize;
use std::time::Duration;

use super::icy::{Received, Stripper};
use super::source::IceInfo;

/// The first wait before trying an upstream again.
pub const BACKOFF_MIN: Duration = Duration::from_millis(500);
/// The longest wait.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// The most a response head from the upstream may take.
pub const MAX_HEAD: usize = 16 * 1024;

/// Why an upstream URL is not one a relay can pull.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("{0:?}: only http:// URLs can be relayed")]
    Scheme(String),
    #[error("{0:?}: no host")]
    Host(String),
    #[error("{0:?}: bad port")]
    Port(String),
}

/// An upstream mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub host: String,
    pub port: u16,
    /// The path and query to ask for.
    pub target: String,
    /// `user:password` from the URL, for Basic.
    pub credential: Option<String>,
}

impl Upstream {
    /// `http://[user:password@]host[:port]/path`.
    pub fn parse(url: &str) -> Result<Upstream, UrlError> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| UrlError::Scheme(url.to_owned()))?;
        let (authority, target) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (credential, hostport) = match authority.rsplit_once('@') {
            Some((c, h)) => (Some(c.to_owned()), h),
            None => (None, authority),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                (h, p.parse().map_err(|_| UrlError::Port(url.to_owned()))?)
            }
            _ => (hostport, 80),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.contains(char::is_whitespace) {
            return Err(UrlError::Host(url.to_owned()));
        }
        if target.contains(char::is_whitespace) || target.chars().any(char::is_control) {
            return Err(UrlError::Host(url.to_owned()));
        }
        Ok(Upstream {
            host: host.to_owned(),
            port,
            target: target.to_owned(),
            credential,
        })
    }

    /// The request a relay sends.
    pub fn request(&self) -> Vec<u8> {
        use base64::Engine;
        let mut r = format!(
            "GET {} HTTP/1.0\r\nHost: {}:{}\r\nUser-Agent: {}\r\nIcy-MetaData: 1\r\nAccept: */*\r\n",
            self.target,
            self.host,
            self.port,
            crate::http::SERVER
        );
        if let Some(c) = &self.credential {
            r.push_str(&format!(
                "Authorization: Basic {}\r\n",
                base64::engine::general_purpose::STANDARD.encode(c)
            ));
        }
        r.push_str("\r\n");
        r.into_bytes()
    }
}

/// Why an upstream's answer is no stream to relay.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    #[error("the answer's head is malformed or too long")]
    Malformed,
    #[error("the upstream answered {0}")]
    Status(u16),
    #[error("content type {0:?} is not MPEG audio")]
    ContentType(String),
    #[error("icy-metaint {0:?} is not a positive number")]
    Metaint(String),
}

/// An upstream's answer, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub info: IceInfo,
    pub metaint: Option<NonZeroUsize>,
    /// The head's length: the body starts there.
    pub head_len: usize,
}

/// Reads the answer's head at the start of `buf`: `Ok(None)` while it has
/// not all arrived.
pub fn read_answer(buf: &[u8]) -> Result<Option<Answer>, AnswerError> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() > MAX_HEAD {
            Err(AnswerError::Malformed)
        } else {
            Ok(None)
        };
    };
    let text = std::str::from_utf8(&buf[..end]).map_err(|_| AnswerError::Malformed)?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut words = status_line.split_whitespace();
    let (proto, code) = (words.next().unwrap_or_default(), words.next().unwrap_or_default());
    if !(proto == "ICY" || proto.starts_with("HTTP/1.")) {
        return Err(AnswerError::Malformed);
    }
    let code: u16 = code.parse().map_err(|_| AnswerError::Malformed)?;
    if code != 200 {
        return Err(AnswerError::Status(code));
    }
    let mut headers = proto::http::Headers::default();
    for l in lines {
        let Some((n, v)) = l.split_once(':') else {
            return Err(AnswerError::Malformed);
        };
        headers.push(n.trim(), v.trim());
    }
    if let Some(ct) = headers.get("Content-Type") {
        let essence = ct.split(';').next().unwrap_or_default().trim();
        if !["audio/mpeg", "audio/mp3", "audio/x-mpeg", "audio/mpeg3"]
            .iter()
            .any(|t| essence.eq_ignore_ascii_case(t))
        {
            return Err(AnswerError::ContentType(ct.chars().take(64).collect()));
        }
    }
    let metaint = match headers.get("icy-metaint") {
        None => None,
        Some(m) => Some(
            m.trim()
                .parse::<NonZeroUsize>()
                .map_err(|_| AnswerError::Metaint(m.chars().take(32).collect()))?,
        ),
    };
    let head = proto::http::Head {
        method: String::new(),
        target: String::new(),
        version: proto::http::Version::Http10,
        headers,
    };
    Ok(Some(Answer {
        info: IceInfo::from_head(&head),
        metaint,
        head_len: end + 4,
    }))
}

/// A relay's reading of the upstream's body: the audio, with metadata
/// blocks taken out and their titles kept.
#[derive(Debug)]
pub struct Body {
    stripper: Option<Stripper>,
    blocks: Vec<Received>,
}

impl Body {
    pub fn new(answer: &Answer) -> Body {
        Body {
            stripper: answer.metaint.map(Stripper::new),
            blocks: Vec::new(),
        }
    }

    /// Takes `data` from the upstream, appending its audio to `audio`;
    /// returns the last title a block in it carried.
    pub fn feed(&mut self, data: &[u8], audio: &mut Vec<u8>) -> Option<String> {
        let Some(s) = self.stripper.as_mut() else {
            audio.extend_from_slice(data);
            return None;
        };
        self.blocks.clear();
        s.feed(data, audio, &mut self.blocks);
        self.blocks.iter().rev().find_map(Received::title)
    }
}

/// The waits between attempts.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: BACKOFF_MIN }
    }
}

impl Backoff {
    /// The wait before the next attempt, doubling the one after.
    pub fn wait(&mut self) -> Duration {
        let w = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        w
    }

    /// A connection carried audio: the next failure waits the least again.
    pub fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::icecast::icy::{Interleaver, Metadata};

    #[test]
    fn urls() {
        let u = Upstream::parse("http://me:pw@radio.example:8000/live.mp3?x=1").unwrap();
        assert_eq!(
            u,
            Upstream {
                host: "radio.example".into(),
                port: 8000,
                target: "/live.mp3?x=1".into(),
                credential: Some("me:pw".into()),
            }
        );
        let text = String::from_utf8(u.request()).unwrap();
        assert!(
            text.starts_with("GET /live.mp3?x=1 HTTP/1.0\r\nHost: radio.example:8000\r\n"),
            "{text}"
        );
        assert!(text.contains("Icy-MetaData: 1\r\n"));
        assert!(text.contains("Authorization: Basic bWU6cHc=\r\n"));
        assert_eq!(Upstream::parse("http://h").unwrap().port, 80);
        assert_eq!(Upstream::parse("http://[::1]:81/a").unwrap().host, "::1");
        assert!(Upstream::parse("https://h/a").is_err());
        assert!(Upstream::parse("http://:80/a").is_err());
        assert!(Upstream::parse("http://h:x/a").is_err());
    }

    #[test]
    fn answers_and_the_body_stripped() {
        let head = b"ICY 200 OK\r\nicy-name: Up There\r\nicy-genre: Rock\r\nContent-Type: audio/mpeg\r\nicy-metaint: 8\r\n\r\n";
        let mut buf = head.to_vec();
        assert_eq!(read_answer(&buf[..20]), Ok(None));
        let mut icy = Interleaver::new(NonZeroUsize::new(8).unwrap());
        icy.set_metadata(Metadata::title("Now"));
        let mut stream = Vec::new();
        icy.push(b"0123456789abcdefXY", &mut stream);
        buf.extend_from_slice(&stream);
        let a = read_answer(&buf).unwrap().unwrap();
        assert_eq!(a.head_len, head.len());
        assert_eq!(a.info.name.as_deref(), Some("Up There"));
        assert_eq!(a.info.genre.as_deref(), Some("Rock"));
        let mut body = Body::new(&a);
        let mut audio = Vec::new();
        let mut titles = Vec::new();
        for c in buf[a.head_len..].chunks(3) {
            titles.extend(body.feed(c, &mut audio));
        }
        assert_eq!(audio, b"0123456789abcdefXY");
        assert_eq!(titles, ["Now"]);
        for (text, want) in [
            (&b"HTTP/1.0 404 Not Found\r\n\r\n"[..], AnswerError::Status(404)),
            (
                b"HTTP/1.0 200 OK\r\nContent-Type: audio/ogg\r\n\r\n",
                AnswerError::ContentType("audio/ogg".into()),
            ),
            (
                b"HTTP/1.0 200 OK\r\nicy-metaint: 0\r\n\r\n",
                AnswerError::Metaint("0".into()),
            ),
            (b"SSH-2.0-x\r\n\r\n", AnswerError::Malformed),
        ] {
            assert_eq!(read_answer(text), Err(want));
        }
    }

    #[test]
    fn backoff_doubles_to_its_cap_and_resets() {
        let mut b = Backoff::default();
        let waits: Vec<Duration> = (0..10).map(|_| b.wait()).collect();
        assert_eq!(waits[0], BACKOFF_MIN);
        assert_eq!(waits[1], BACKOFF_MIN * 2);
        assert_eq!(*waits.last().unwrap(), BACKOFF_MAX);
        b.reset();
        assert_eq!(b.wait(), BACKOFF_MIN);
    }
}
