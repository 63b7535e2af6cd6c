//! A small, strict RTSP client for protocol-level checks of the server.
//!
//! It shares no code with the server, and on purpose none with the
//! `proto` crate either: the server writes its responses and `$` frames with
//! `proto`, so a client built on it would read back whatever `proto` wrote,
//! mistakes included. Responses are parsed here from the bytes on the wire,
//! so a server that writes something a careful client cannot read fails the
//! tests. On a connection carrying interleaved media,
//! every byte must belong either to a whole response or to a whole `$` frame
//! (RFC 2326 section 10.12); anything else panics with what was found.
//!
//! A [`Connection`] may also be an RTSP-over-HTTP tunnel
//! ([`Connection::tunnel`]): the GET leg read as above, every request
//! written base64-encoded (by the `base64` crate, not the server's codec) on
//! the POST leg, which may be closed and reopened as QuickTime does.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::rtp::{bind_with_big_buffer, RtpPacket};

/// A response as read off the wire.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    /// The first header called `name`, in any case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The session ID of the `Session` header, without `;timeout=`.
    pub fn session(&self) -> Option<&str> {
        self.header("Session").map(|s| s.split(';').next().unwrap_or(s).trim())
    }
}

/// What comes next on a connection.
#[derive(Debug)]
pub enum Item {
    Reply(Reply),
    Frame { channel: u8, data: Vec<u8> },
}

/// One RTSP connection.
pub struct Connection {
    stream: TcpStream,
    buf: Vec<u8>,
    next_cseq: u32,
    /// Interleaved frames read while waiting for a response.
    pub frames: VecDeque<(u8, Vec<u8>)>,
    /// For a tunnel: where requests go, and how to open another POST.
    tunnel: Option<TunnelLegs>,
}

/// A tunnel's client-to-server side.
pub struct TunnelLegs {
    pub post: Option<TcpStream>,
    addr: SocketAddr,
    path: String,
    pub cookie: String,
}

/// The head of an HTTP response, as read off the wire.
#[derive(Debug, Clone)]
pub struct HttpHead {
    pub version: String,
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

impl HttpHead {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads an HTTP response head from `stream`, byte by byte (so that nothing
/// after it is consumed). `None` when the connection closed first.
pub fn read_http_head(stream: &mut TcpStream) -> io::Result<Option<HttpHead>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 {
            return if head.is_empty() {
                Ok(None)
            } else {
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed inside an HTTP head",
                ))
            };
        }
        head.push(byte[0]);
    }
    let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    let text = String::from_utf8(head).map_err(|_| bad("an HTTP head that is not UTF-8".into()))?;
    let mut lines = text.trim_end().split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut words = status_line.splitn(3, ' ');
    let version = words.next().unwrap_or_default();
    let status = words.next().and_then(|s| s.parse().ok());
    let (true, Some(status)) = (version.starts_with("HTTP/1."), status) else {
        return Err(bad(format!("bad status line {status_line:?}")));
    };
    let mut headers = Vec::new();
    for line in lines {
        let (n, v) = line
            .split_once(':')
            .ok_or_else(|| bad(format!("bad header line {line:?}")))?;
        headers.push((n.trim().to_owned(), v.trim().to_owned()));
    }
    Ok(Some(HttpHead {
        version: version.to_owned(),
        status,
        headers,
    }))
}

/// Writes a tunnel's GET (QuickTime's headers) for `path` with `cookie`.
pub fn tunnel_get(stream: &mut TcpStream, path: &str, cookie: &str) -> io::Result<()> {
    let text = format!(
        "GET {path} HTTP/1.0\r\nUser-Agent: streamalot-tests\r\nx-sessioncookie: {cookie}\r\n\
         Accept: application/x-rtsp-tunnelled\r\nPragma: no-cache\r\nCache-Control: no-cache\r\n\r\n"
    );
    stream.write_all(text.as_bytes())
}

/// Writes a tunnel's POST head for `path` with `cookie`.
pub fn tunnel_post(stream: &mut TcpStream, path: &str, cookie: &str) -> io::Result<()> {
    let text = format!(
        "POST {path} HTTP/1.0\r\nUser-Agent: streamalot-tests\r\nx-sessioncookie: {cookie}\r\n\
         Content-Type: application/x-rtsp-tunnelled\r\nPragma: no-cache\r\nCache-Control: no-cache\r\n\
         Content-Length: 32767\r\nExpires: Sun, 9 Jan 1972 00:00:00 GMT\r\n\r\n"
    );
    stream.write_all(text.as_bytes())
}

/// Base64 of `bytes`, as clients encode each message they tunnel.
pub fn base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Opens a tunnel's GET leg on `stream`: the answer must be the tunnel's.
pub fn open_tunnel_get(stream: &mut TcpStream, path: &str, cookie: &str) -> Result<HttpHead, String> {
    tunnel_get(stream, path, cookie).map_err(|e| format!("writing the GET: {e}"))?;
    let head = read_http_head(stream)
        .map_err(|e| format!("reading the GET's answer: {e}"))?
        .ok_or("the GET was not answered")?;
    if head.status != 200 || head.header("Content-Type") != Some("application/x-rtsp-tunnelled") {
        return Err(format!("the GET was answered {head:?}"));
    }
    if head.header("Content-Length").is_some() {
        return Err(format!("the GET's answer has a length: {head:?}"));
    }
    Ok(head)
}

impl Connection {
    pub fn connect(addr: SocketAddr) -> Connection {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        Connection::over(stream)
    }

    /// An RTSP connection through a tunnel to `addr` for `path`: the GET
    /// leg, answered as the tunnel's, then a POST leg.
    pub fn tunnel(addr: SocketAddr, path: &str, cookie: &str) -> Connection {
        let mut get = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        get.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("a read timeout");
        open_tunnel_get(&mut get, path, cookie).unwrap_or_else(|e| panic!("tunnel to {addr}{path}: {e}"));
        let mut conn = Connection::over(get);
        conn.tunnel = Some(TunnelLegs {
            post: None,
            addr,
            path: path.to_owned(),
            cookie: cookie.to_owned(),
        });
        conn.reopen_post();
        conn
    }

    pub fn is_tunnel(&self) -> bool {
        self.tunnel.is_some()
    }

    /// A tunnel's legs; `None` for a plain connection.
    pub fn legs(&mut self) -> Option<&mut TunnelLegs> {
        self.tunnel.as_mut()
    }

    /// Closes the tunnel's POST leg, if open, and opens another, as
    /// QuickTime does between requests.
    pub fn reopen_post(&mut self) {
        let legs = self.tunnel.as_mut().expect("a tunnel");
        if let Some(old) = legs.post.take() {
            let _ = old.shutdown(Shutdown::Both);
        }
        let mut post = TcpStream::connect(legs.addr).unwrap_or_else(|e| panic!("connect to {}: {e}", legs.addr));
        let _ = post.set_nodelay(true);
        tunnel_post(&mut post, &legs.path, &legs.cookie).expect("write the POST head");
        legs.post = Some(post);
    }

    /// A connection over a stream set up by the caller (with a small receive
    /// buffer, say).
    pub fn over(stream: TcpStream) -> Connection {
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("set a read timeout");
        let _ = stream.set_nodelay(true);
        Connection {
            stream,
            buf: Vec::new(),
            next_cseq: 1,
            frames: VecDeque::new(),
            tunnel: None,
        }
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Sends `method url` with a fresh CSeq and `headers`, then reads until
    /// the response, which must echo the CSeq.
    pub fn request(&mut self, method: &str, url: &str, headers: &[(&str, &str)]) -> Reply {
        let cseq = self.next_cseq;
        self.next_cseq += 1;
        let mut text = format!("{method} {url} RTSP/1.0\r\nCSeq: {cseq}\r\nUser-Agent: streamalot-tests\r\n");
        for (name, value) in headers {
            text.push_str(&format!("{name}: {value}\r\n"));
        }
        text.push_str("\r\n");
        self.write_raw(text.as_bytes())
            .unwrap_or_else(|e| panic!("send {method} {url}: {e}"));
        let reply = self
            .read_reply()
            .unwrap_or_else(|e| panic!("{method} {url}: no response: {e}"));
        assert_eq!(
            reply.header("CSeq"),
            Some(cseq.to_string().as_str()),
            "{method} {url}: the response does not echo CSeq {cseq}: {reply:?}"
        );
        reply
    }

    /// Writes `bytes` for the server to read: on the connection, or
    /// base64-encoded on a tunnel's POST leg.
    pub fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self.tunnel.as_mut().and_then(|t| t.post.as_mut()) {
            Some(post) => post.write_all(base64(bytes).as_bytes()),
            None => self.stream.write_all(bytes),
        }
    }

    /// Reads until a response, queueing interleaved frames on the way.
    pub fn read_reply(&mut self) -> io::Result<Reply> {
        loop {
            match self.read_item()? {
                Some(Item::Reply(r)) => return Ok(r),
                Some(Item::Frame { channel, data }) => self.frames.push_back((channel, data)),
                None => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed")),
            }
        }
    }

    /// The next response or frame; `None` when the server closed the
    /// connection cleanly between items.
    pub fn read_item(&mut self) -> io::Result<Option<Item>> {
        loop {
            if let Some((item, used)) = parse_item(&self.buf)? {
                self.buf.drain(..used);
                return Ok(Some(item));
            }
            let mut chunk = [0u8; 64 * 1024];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("connection closed inside an item: {} bytes left", self.buf.len()),
                ));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads (and discards) until the server closes the connection; returns
    /// whether it did so within `timeout`. A reset counts as closed.
    pub fn closed_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let _ = self.stream.set_read_timeout(Some(Duration::from_millis(100)));
        let mut chunk = [0u8; 64 * 1024];
        while Instant::now() < deadline {
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                Err(_) => return true,
            }
        }
        false
    }

    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }
}

/// Parses the item at the start of `buf`: `Ok(None)` if it is incomplete.
pub fn parse_item(buf: &[u8]) -> io::Result<Option<(Item, usize)>> {
    let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    if buf.is_empty() {
        return Ok(None);
    }
    if buf[0] == b'$' {
        if buf.len() < 4 {
            return Ok(None);
        }
        let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
        if buf.len() < 4 + len {
            return Ok(None);
        }
        let item = Item::Frame {
            channel: buf[1],
            data: buf[4..4 + len].to_vec(),
        };
        return Ok(Some((item, 4 + len)));
    }
    if !b"RTSP/1.0 ".starts_with(&buf[..buf.len().min(9)]) {
        return Err(bad(format!(
            "neither a response nor a `$` frame: {:?}",
            String::from_utf8_lossy(&buf[..buf.len().min(40)])
        )));
    }
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| bad("response head is not UTF-8".into()))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| bad(format!("bad header line {line:?}")))?;
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    let body_len = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("Content-Length"))
        .map(|(_, v)| v.parse::<usize>().map_err(|_| bad(format!("bad Content-Length {v:?}"))))
        .transpose()?
        .unwrap_or(0);
    let total = end + 4 + body_len;
    if buf.len() < total {
        return Ok(None);
    }
    let reply = Reply {
        status,
        headers,
        body: buf[end + 4..total].to_vec(),
    };
    Ok(Some((Item::Reply(reply), total)))
}

/// One media section of an SDP: its media type, clock rate and control URL
/// (resolved against the base).
#[derive(Debug, Clone)]
pub struct Media {
    pub kind: String,
    pub clock_rate: u32,
    pub control: String,
}

/// The media sections of a DESCRIBE answer, with each `a=control` resolved
/// against `base` (the `Content-Base`).
pub fn media_of(sdp: &str, base: &str) -> Vec<Media> {
    let mut out: Vec<Media> = Vec::new();
    for line in sdp.lines().map(str::trim_end) {
        if let Some(m) = line.strip_prefix("m=") {
            out.push(Media {
                kind: m.split(' ').next().unwrap_or_default().to_owned(),
                clock_rate: 0,
                control: String::new(),
            });
        } else if let (Some(media), Some(rtpmap)) = (out.last_mut(), line.strip_prefix("a=rtpmap:")) {
            // `96 H264/90000` or `97 mpeg4-generic/44100/1`.
            media.clock_rate = rtpmap
                .split(['/', ' '])
                .nth(2)
                .and_then(|r| r.parse().ok())
                .unwrap_or_else(|| panic!("bad rtpmap `{line}`"));
        } else if let (Some(media), Some(control)) = (out.last_mut(), line.strip_prefix("a=control:")) {
            media.control = if control.starts_with("rtsp://") {
                control.to_owned()
            } else {
                format!("{}/{}", base.trim_end_matches('/'), control)
            };
        }
    }
    out
}

/// How a [`Player`] asks for its media.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lower {
    Udp,
    Tcp,
}

/// One set-up stream and what arrived on it.
#[derive(Debug)]
pub struct Stream {
    pub media: Media,
    /// The SSRC the SETUP reply announced.
    pub ssrc: u32,
    /// RTP packets in arrival order.
    pub packets: Vec<RtpPacket>,
    /// RTCP datagrams (or interleaved RTCP frames) from the server.
    pub rtcp: Vec<Vec<u8>>,
    /// The server's RTCP address for this stream (from `server_port`), over UDP.
    pub server_rtcp: Option<SocketAddr>,
    udp: Option<(UdpSocket, UdpSocket)>,
}

impl Stream {
    /// Sends `datagram` to the server's RTCP port from this stream's own
    /// RTCP socket, as a receiver report would go.
    pub fn send_rtcp(&self, datagram: &[u8]) -> io::Result<usize> {
        let (_, rtcp) = self.udp.as_ref().expect("a UDP stream");
        rtcp.send_to(datagram, self.server_rtcp.expect("a UDP stream"))
    }

    /// Whether an RTCP BYE has arrived for this stream.
    pub fn said_bye(&self) -> bool {
        self.rtcp.iter().any(|d| rtcp_types(d).contains(&203))
    }
}

/// The packet types of a compound RTCP datagram, in order.
pub fn rtcp_types(datagram: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    let mut rest = datagram;
    while rest.len() >= 4 && rest[0] >> 6 == 2 {
        types.push(rest[1]);
        let len = 4 * (usize::from(u16::from_be_bytes([rest[2], rest[3]])) + 1);
        rest = rest.get(len..).unwrap_or_default();
    }
    types
}

/// `RTP-Info` of a PLAY reply: (url, seq, rtptime) per stream.
pub fn rtp_info(reply: &Reply) -> Vec<(String, u16, u32)> {
    let info = reply
        .header("RTP-Info")
        .unwrap_or_else(|| panic!("PLAY reply without RTP-Info: {reply:?}"));
    info.split(',')
        .map(|entry| {
            let mut url = None;
            let mut seq = None;
            let mut rtptime = None;
            for field in entry.trim().split(';') {
                match field.split_once('=') {
                    Some(("url", v)) => url = Some(v.to_owned()),
                    Some(("seq", v)) => seq = v.parse().ok(),
                    Some(("rtptime", v)) => rtptime = v.parse().ok(),
                    _ => {}
                }
            }
            match (url, seq, rtptime) {
                (Some(u), Some(s), Some(t)) => (u, s, t),
                _ => panic!("RTP-Info entry `{entry}` lacks url, seq or rtptime"),
            }
        })
        .collect()
}

/// A client playing one movie: DESCRIBE, SETUP of every stream, then PLAY,
/// PAUSE and TEARDOWN on demand, collecting what arrives.
pub struct Player {
    pub conn: Connection,
    pub url: String,
    pub lower: Lower,
    pub session: String,
    pub streams: Vec<Stream>,
}

impl Player {
    /// Describes `url` and sets up each of its streams over `lower`.
    pub fn setup(addr: SocketAddr, url: &str, lower: Lower) -> Player {
        Player::setup_on(Connection::connect(addr), url, lower)
    }

    /// As [`setup`](Player::setup), on `conn` (a tunnel, say), whose peer
    /// is the server.
    pub fn setup_on(mut conn: Connection, url: &str, lower: Lower) -> Player {
        let addr = conn.stream.peer_addr().expect("a connected stream");
        let described = conn.request("DESCRIBE", url, &[("Accept", "application/sdp")]);
        assert_eq!(described.status, 200, "DESCRIBE {url}: {described:?}");
        let base = described.header("Content-Base").unwrap_or(url).to_owned();
        let sdp = String::from_utf8(described.body.clone()).expect("the SDP is UTF-8");
        let media = media_of(&sdp, &base);
        assert!(!media.is_empty(), "DESCRIBE {url}: no media sections in\n{sdp}");
        let mut session: Option<String> = None;
        let mut streams = Vec::new();
        for (i, m) in media.into_iter().enumerate() {
            let (transport, udp) = match lower {
                Lower::Udp => {
                    let (rtp, rtcp) = udp_pair();
                    let port = rtp.local_addr().expect("bound").port();
                    (
                        format!("RTP/AVP;unicast;client_port={port}-{}", port + 1),
                        Some((rtp, rtcp)),
                    )
                }
                Lower::Tcp => (format!("RTP/AVP/TCP;unicast;interleaved={}-{}", 2 * i, 2 * i + 1), None),
            };
            let mut headers = vec![("Transport", transport.as_str())];
            if let Some(s) = &session {
                headers.push(("Session", s.as_str()));
            }
            let reply = conn.request("SETUP", &m.control, &headers);
            assert_eq!(reply.status, 200, "SETUP {}: {reply:?}", m.control);
            let id = reply.session().expect("SETUP reply has a Session").to_owned();
            if let Some(s) = &session {
                assert_eq!(&id, s, "the session ID changed between SETUPs");
            }
            session = Some(id);
            let answered = reply.header("Transport").expect("SETUP reply has a Transport");
            let ssrc = answered
                .split(';')
                .find_map(|p| p.strip_prefix("ssrc="))
                .and_then(|s| u32::from_str_radix(s, 16).ok())
                .unwrap_or_else(|| panic!("no ssrc= in `{answered}`"));
            let server_rtcp = answered
                .split(';')
                .find_map(|p| p.strip_prefix("server_port="))
                .and_then(|ports| ports.split('-').nth(1)?.parse::<u16>().ok())
                .map(|port| SocketAddr::new(addr.ip(), port));
            if lower == Lower::Udp && server_rtcp.is_none() {
                panic!("no server_port in `{answered}`");
            }
            streams.push(Stream {
                media: m,
                ssrc,
                packets: Vec::new(),
                rtcp: Vec::new(),
                server_rtcp,
                udp,
            });
        }
        Player {
            conn,
            url: url.to_owned(),
            lower,
            session: session.expect("at least one SETUP"),
            streams,
        }
    }

    /// Sends `method` on the aggregate URL within the session.
    pub fn control(&mut self, method: &str, extra: &[(&str, &str)]) -> Reply {
        let session = self.session.clone();
        let mut headers = vec![("Session", session.as_str())];
        headers.extend_from_slice(extra);
        let url = self.url.clone();
        let reply = self.conn.request(method, &url, &headers);
        self.take_queued_frames();
        reply
    }

    /// PLAY, optionally with a `Range` value such as `npt=2.5-`.
    pub fn play(&mut self, range: Option<&str>) -> Reply {
        let extra: Vec<(&str, &str)> = range.map(|r| ("Range", r)).into_iter().collect();
        let reply = self.control("PLAY", &extra);
        assert_eq!(reply.status, 200, "PLAY {}: {reply:?}", self.url);
        reply
    }

    /// Receives media until `done` says so or `timeout` passes; returns
    /// whether `done` was satisfied.
    pub fn receive_until(&mut self, timeout: Duration, mut done: impl FnMut(&[Stream]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if done(&self.streams) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            match self.lower {
                Lower::Udp => self.receive_udp(Duration::from_millis(50)),
                Lower::Tcp => self.receive_tcp(Duration::from_millis(50)),
            }
        }
    }

    /// Receives until every stream has said BYE (the end of the media).
    pub fn receive_to_the_end(&mut self, timeout: Duration) {
        let ended = self.receive_until(timeout, |s| s.iter().all(Stream::said_bye));
        assert!(
            ended,
            "{}: no RTCP BYE on every stream within {timeout:?} (packets per stream: {:?})",
            self.url,
            self.streams.iter().map(|s| s.packets.len()).collect::<Vec<_>>()
        );
    }

    /// Drains what is waiting, for about `quiet`; returns how many RTP
    /// packets arrived.
    pub fn drain(&mut self, quiet: Duration) -> usize {
        let before: usize = self.streams.iter().map(|s| s.packets.len()).sum();
        let deadline = Instant::now() + quiet;
        while Instant::now() < deadline {
            match self.lower {
                Lower::Udp => self.receive_udp(Duration::from_millis(20)),
                Lower::Tcp => self.receive_tcp(Duration::from_millis(20)),
            }
        }
        self.streams.iter().map(|s| s.packets.len()).sum::<usize>() - before
    }

    fn receive_udp(&mut self, wait: Duration) {
        let sockets: Vec<&UdpSocket> = self
            .streams
            .iter()
            .flat_map(|s| {
                let (a, b) = s.udp.as_ref().expect("UDP streams have sockets");
                [a, b]
            })
            .collect();
        if !poll_readable(&sockets, wait) {
            return;
        }
        let mut buf = vec![0u8; 65_536];
        for stream in &mut self.streams {
            let (rtp, rtcp) = stream.udp.as_ref().expect("UDP streams have sockets");
            while let Ok(n) = rtp.recv(&mut buf) {
                let p = RtpPacket::parse(&buf[..n]).unwrap_or_else(|e| panic!("bad RTP datagram: {e}"));
                stream.packets.push(p);
            }
            while let Ok(n) = rtcp.recv(&mut buf) {
                stream.rtcp.push(buf[..n].to_vec());
            }
        }
    }

    fn receive_tcp(&mut self, wait: Duration) {
        self.take_queued_frames();
        let _ = self.conn.stream.set_read_timeout(Some(wait));
        match self.conn.read_item() {
            Ok(Some(Item::Frame { channel, data })) => self.on_frame(channel, data),
            Ok(Some(Item::Reply(r))) => panic!("{}: a response nobody asked for: {r:?}", self.url),
            Ok(None) => {}
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            Err(e) => panic!("{}: reading interleaved media: {e}", self.url),
        }
        let _ = self.conn.stream.set_read_timeout(Some(Duration::from_secs(20)));
    }

    fn take_queued_frames(&mut self) {
        while let Some((channel, data)) = self.conn.frames.pop_front() {
            self.on_frame(channel, data);
        }
    }

    fn on_frame(&mut self, channel: u8, data: Vec<u8>) {
        let stream = self
            .streams
            .get_mut(usize::from(channel / 2))
            .unwrap_or_else(|| panic!("a frame on channel {channel}, which no stream was set up on"));
        if channel.is_multiple_of(2) {
            let p = RtpPacket::parse(&data).unwrap_or_else(|e| panic!("bad interleaved RTP: {e}"));
            stream.packets.push(p);
        } else {
            stream.rtcp.push(data);
        }
    }
}

/// Plays `url` over and over on connections from `connect` until `stop`,
/// each time checking that every packet arrived intact (`expected`, per
/// stream); over TCP it also sends a GET_PARAMETER keep-alive every 100
/// packets, on a tunnel after reopening its POST leg. Returns how many
/// whole playbacks it made.
pub fn good_client(
    connect: impl Fn() -> Connection,
    url: &str,
    lower: Lower,
    expected: &[Vec<RtpPacket>],
    stop: &AtomicBool,
) -> Result<usize, String> {
    let mut plays = 0;
    while !stop.load(Ordering::Acquire) || plays == 0 {
        let mut player = Player::setup_on(connect(), url, lower);
        player.play(None);
        // Over TCP, a keep-alive every 100 video packets, answered between
        // `$` frames.
        let mut next_ping = 100;
        while !player.streams.iter().all(Stream::said_bye) {
            let n = next_ping;
            let tcp = lower == Lower::Tcp;
            let moved = player.receive_until(Duration::from_secs(60), |s| {
                s.iter().all(Stream::said_bye) || (tcp && s[0].packets.len() >= n)
            });
            if !moved {
                return Err("the media stopped before its end".into());
            }
            if tcp && !player.streams.iter().all(Stream::said_bye) {
                if player.conn.legs().is_some() {
                    player.conn.reopen_post();
                }
                let reply = player.control("GET_PARAMETER", &[]);
                if reply.status != 200 {
                    return Err(format!("GET_PARAMETER during playback answered {}", reply.status));
                }
                next_ping += 100;
            }
        }
        player.receive_to_the_end(Duration::from_secs(60));
        for (i, (s, want)) in player.streams.iter().zip(expected).enumerate() {
            let seq0 = s.packets.first().map_or(0, |p| p.sequence);
            let intact = s.packets.len() == want.len()
                && s.packets.iter().zip(want).enumerate().all(|(n, (g, w))| {
                    g.payload == w.payload && g.sequence == seq0.wrapping_add(n as u16) && g.ssrc == s.ssrc
                });
            if !intact {
                return Err(format!(
                    "playback {}: stream {i} got {} packets of {}, not all intact",
                    plays + 1,
                    s.packets.len(),
                    want.len()
                ));
            }
        }
        let teardown = player.control("TEARDOWN", &[]);
        if teardown.status != 200 {
            return Err(format!("TEARDOWN answered {}", teardown.status));
        }
        plays += 1;
    }
    Ok(plays)
}

/// An RTP socket on an even port of 127.0.0.1 and its RTCP socket one up,
/// both non-blocking.
pub fn udp_pair() -> (UdpSocket, UdpSocket) {
    for _ in 0..100 {
        let Ok(rtp) = bind_with_big_buffer(0) else { continue };
        let port = rtp.local_addr().expect("bound").port();
        if port % 2 != 0 || port == u16::MAX {
            continue;
        }
        if let Ok(rtcp) = bind_with_big_buffer(port + 1) {
            rtp.set_nonblocking(true).expect("non-blocking");
            rtcp.set_nonblocking(true).expect("non-blocking");
            return (rtp, rtcp);
        }
    }
    panic!("no free even/odd UDP port pair on 127.0.0.1");
}

/// Waits up to `timeout` for any of `sockets` to be readable.
pub fn poll_readable(sockets: &[&UdpSocket], timeout: Duration) -> bool {
    let mut fds: Vec<libc::pollfd> = sockets
        .iter()
        .map(|s| libc::pollfd {
            fd: s.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: `fds` is a live, initialized array of `fds.len()` pollfds,
    // whose descriptors stay open for the call (the sockets are borrowed).
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout.as_millis() as i32) };
    n > 0
}
