//! The connection loop: how every RTSP connection is read, on whichever
//! core owns it. Read what arrived, parse it with the configured limits,
//! let the [door](crate::door) route each request, have the core execute
//! the route, and write what it answered, until the client goes or a core
//! takes the connection over.
//!
//! The control core and the shards differ only in the [`Host`] they give
//! the loop. On the control core the loop writes the answers itself, after
//! each request (nothing else writes to such a connection). A shard's
//! connections carry media as well, so there every answer goes into the
//! shard core's queue for the connection, behind and before whole media
//! frames, and a writer task drains that queue; the loop then runs on the
//! connection's read half, which writes nothing. Handing a connection to a
//! shard moves its descriptor and the bytes read but not yet parsed, and the
//! shard runs the same loop on them.
//!
//! The loop speaks HTTP too. A connection's first line decides which
//! protocol it speaks for good ([`proto::http::sniff`]): on an RTSP port
//! either, on an HTTP port only HTTP. HTTP requests are routed by the same
//! door ([`Door::route_http`]) and carried out by the host; a request that
//! keeps its connection once answered (a tunnel leg, a streaming response)
//! leaves the loop with [`Step::Leave`], and whoever runs the loop hands the
//! connection on as [`Link::leave`] says. The RTSP conversation of a tunnel
//! runs through this loop as well, over a [`Wire`] whose input is the POST
//! legs' decoded bytes and whose output is the GET leg.
//!
//! An idle connection (most of them are, while their media flows over UDP)
//! holds no buffer: the read goes into a small buffer on the stack of each
//! poll and is appended to the connection's buffer, which is given back
//! whenever it is empty, and a request's handling (which builds messages and
//! may wait for a shard or the library) lives in a boxed future that exists
//! only while a request is being handled.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{BorrowedFd, OwnedFd, RawFd};

use futures_lite::AsyncRead;
use glommio::net::TcpStream;
use proto::http::{self, Protocol};
use proto::rtsp::message::{self, Limits, Message, Request, Response};

use crate::door::{self, Caller, Door, Route};
use crate::http::{BodyMode, HttpRoute, Takeover};
use crate::pacer::SessionKey;
use crate::shard::{Command, ConnId};

/// How much a connection reads at a time. Requests are small; a big one
/// costs an extra copy of a few hundred bytes per read.
const READ_CHUNK: usize = 512;

/// The parser's limits, from the configuration.
pub(crate) fn limits(config: &crate::config::Config) -> Limits {
    Limits {
        max_header_bytes: config.max_header_bytes,
        max_body_bytes: config.max_body_bytes,
        ..Default::default()
    }
}

/// What a connection speaks: decided by its first line where it may be
/// either.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Speaks {
    /// Not yet known, on an RTSP port: RTSP or HTTP.
    Either,
    /// Not yet known, on an HTTP port: HTTP only.
    HttpOnly,
    Rtsp,
    Http,
}

/// Where a connection goes when the loop returns [`Step::Leave`].
#[derive(Debug)]
pub(crate) enum Leave {
    /// To shard `shard`, which carries out `command` (a new interleaved
    /// session, which will name the connection).
    Shard { shard: usize, command: Box<Command> },
    /// Out of the HTTP loop: a tunnel leg, a streaming response.
    Http(Takeover),
}

/// One connection as the loop and its host see it.
pub(crate) struct Link {
    pub id: ConnId,
    pub client: SocketAddr,
    pub speaks: Speaks,
    /// Bytes read and not yet parsed.
    pub buf: Vec<u8>,
    /// Answers for the loop to write (control core only).
    pub out: Vec<u8>,
    /// Set with [`Step::Leave`].
    pub leave: Option<Leave>,
    /// The publisher session this connection announced, if any: its `$`
    /// frames are the broadcast's media, and it ends with the connection.
    pub publisher: Option<SessionKey>,
    /// Whether the wire has been told that silence is no stall (a
    /// publisher whose media comes over UDP says nothing on its
    /// connection).
    silence_ok: bool,
    /// The socket, to hand the connection over.
    fd: RawFd,
}

impl Link {
    pub fn new(id: ConnId, client: SocketAddr, fd: RawFd, speaks: Speaks, pending: Vec<u8>) -> Link {
        Link {
            id,
            client,
            speaks,
            buf: pending,
            out: Vec::new(),
            leave: None,
            publisher: None,
            silence_ok: false,
            fd,
        }
    }

    /// A second descriptor for the connection's socket, to send to a shard.
    pub fn clone_fd(&self) -> io::Result<OwnedFd> {
        // SAFETY: the connection's stream owns this descriptor and outlives
        // the borrow, which ends here: `try_clone_to_owned` duplicates it
        // (F_DUPFD_CLOEXEC).
        let fd = unsafe { BorrowedFd::borrow_raw(self.fd) };
        fd.try_clone_to_owned()
    }
}

/// What the connection does after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    Continue,
    Close,
    /// The connection leaves the loop for what [`Link::leave`] says: stop
    /// reading it (a shard or a tunnel takes it over).
    Leave,
}

/// The core a connection is on.
pub(crate) trait Host {
    fn limits(&self) -> &Limits;
    fn door(&self) -> &Door;
    /// Whether session `key` is one this core can reach.
    fn exists(&self, key: SessionKey) -> bool;
    /// Carries out a routed request; its answer goes to [`answer`](Self::answer).
    fn execute(&self, link: &mut Link, req: Request, route: Route) -> impl Future<Output = Step>;
    /// Sends an answer on the connection.
    fn answer(&self, link: &mut Link, response: &Response);
    /// Sends an HTTP answer in `version`, to a request that asked for
    /// `keep_alive` (control core only).
    fn answer_http(&self, link: &mut Link, version: http::Version, response: &http::Response, keep_alive: bool) {
        crate::http::write(&mut link.out, response, version, keep_alive, false);
    }
    /// A `$` frame from the client.
    fn interleaved(&self, link: &Link, channel: u8, data: &[u8]);
    /// Carries out a routed HTTP request, writing its answer to
    /// [`Link::out`]. `req`'s body is empty for a streaming body, whose
    /// first bytes are still in [`Link::buf`]. Only the control core reads
    /// HTTP; a core that does not closes the connection.
    fn execute_http(&self, link: &mut Link, req: http::Request, route: HttpRoute) -> impl Future<Output = Step> {
        let _ = (link, req, route);
        async { Step::Close }
    }
}

/// A stream the loop reads, and writes [`Link::out`] to.
pub(crate) trait Wire {
    /// Reads what has arrived onto the end of `buf`. Returns how many bytes
    /// it added, 0 at the end of the stream.
    fn read_more(&mut self, buf: &mut Vec<u8>) -> impl Future<Output = io::Result<usize>>;
    fn write_out(&mut self, bytes: &[u8]) -> impl Future<Output = io::Result<()>>;
    /// Stops timing out on silence: the connection's peer need say nothing
    /// for a long time (a publisher whose media comes over UDP).
    fn allow_silence(&mut self) {}
}

/// A shard connection's read half: its answers ride the shard core's
/// queue, so the loop has nothing to write on it.
impl Wire for futures_lite::io::ReadHalf<TcpStream> {
    async fn read_more(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        read_chunk(self, buf).await
    }

    async fn write_out(&mut self, bytes: &[u8]) -> io::Result<()> {
        debug_assert!(bytes.is_empty(), "a shard's answers go through its core");
        Ok(())
    }
}

/// The HTTP limits: the same figures as RTSP's.
fn http_limits(l: &Limits) -> http::Limits {
    http::Limits {
        max_head_bytes: l.max_header_bytes,
        max_headers: l.max_headers,
        max_body_bytes: l.max_body_bytes,
    }
}

/// What one look at the buffer found.
enum Parsed {
    /// Nothing whole yet: read more.
    More,
    /// Something was done; the step says what next.
    Did(Step),
}

/// Runs the connection until it ends or leaves the loop, and says which.
///
/// An `async` block rather than an `async fn`, whose future would keep its
/// three references twice for the connection's life.
#[allow(clippy::manual_async_fn, reason = "an async fn's future would be larger, see above")]
pub(crate) fn serve<'a, H: Host, W: Wire>(
    host: &'a H,
    link: &'a mut Link,
    wire: &'a mut W,
) -> impl Future<Output = Step> + 'a {
    async move {
        loop {
            // Boxed: carrying out requests (parsing, the door, writing the
            // answers) has states that, inline, would stay in the task of every
            // connection for its whole life, most of it spent idle in the read
            // below. Boxed, they take memory only while there are bytes to
            // handle: one allocation for each read.
            if let Some(step) = Box::pin(handle(host, link, wire)).await {
                return step;
            }
            release_if_empty(&mut link.buf);
            if link.publisher.is_some() && !link.silence_ok {
                wire.allow_silence();
                link.silence_ok = true;
            }
            match wire.read_more(&mut link.buf).await {
                Ok(0) | Err(_) => return Step::Close,
                Ok(_) => {}
            }
        }
    }
}

/// Carries out what the buffer holds, writing each answer, until it needs
/// more bytes (`None`) or the connection ends or leaves the loop.
async fn handle<H: Host, W: Wire>(host: &H, link: &mut Link, wire: &mut W) -> Option<Step> {
    loop {
        let parsed = match link.speaks {
            Speaks::Either | Speaks::HttpOnly => sniff(host, link),
            Speaks::Rtsp => rtsp(host, link).await,
            // Boxed: few connections speak HTTP, and its state would make
            // every RTSP connection's reads bigger.
            Speaks::Http => Box::pin(serve_http(host, link)).await,
        };
        match parsed {
            Parsed::More => return None,
            Parsed::Did(step) => {
                if !write_out(link, wire).await {
                    return Some(Step::Close);
                }
                if step != Step::Continue {
                    return Some(step);
                }
            }
        }
    }
}

/// Decides what the connection speaks from its first line.
fn sniff<H: Host>(host: &H, link: &mut Link) -> Parsed {
    let Some(protocol) = http::sniff(&link.buf, host.limits().max_header_bytes) else {
        return Parsed::More;
    };
    link.speaks = match (protocol, link.speaks) {
        (Protocol::Http, _) => Speaks::Http,
        (Protocol::Rtsp, Speaks::Either) => Speaks::Rtsp,
        // Neither, or RTSP on an HTTP port: the loop cannot carry on. The
        // answer is in the protocol the port speaks.
        (_, Speaks::HttpOnly) => {
            tracing::debug!(client = %link.client, "not HTTP on an HTTP port; closing");
            host.answer_http(link, http::Version::Http11, &http::Response::new(400), false);
            return Parsed::Did(Step::Close);
        }
        _ => {
            tracing::debug!(client = %link.client, "neither RTSP nor HTTP; closing");
            host.answer(link, &Response::new(400, None));
            return Parsed::Did(Step::Close);
        }
    };
    Parsed::Did(Step::Continue)
}

/// Parses and carries out the next RTSP message.
async fn rtsp<H: Host>(host: &H, link: &mut Link) -> Parsed {
    let caller = Caller { client: link.client };
    match message::parse(&link.buf, host.limits()) {
        Ok(Some((Message::Request(req), used))) => {
            link.buf.drain(..used);
            // Access first: a refused request is answered here and never
            // routed, so no core sees it.
            let granted = match host.door().gate(&req, &caller, super::now(), unix_time()) {
                door::Gate::Pass(granted) => granted,
                door::Gate::Refuse { response, delay } => {
                    if delay > 0 {
                        // Held, not dropped: a guesser waits, and the answer
                        // still comes in order with any pipelined requests.
                        glommio::timer::sleep(std::time::Duration::from_nanos(delay)).await;
                    }
                    host.answer(link, &response);
                    return Parsed::Did(Step::Continue);
                }
            };
            let route = host
                .door()
                .route_granted(&req, &caller, granted.as_ref(), |key| host.exists(key));
            // Boxed: a request's handling builds messages and may wait
            // for a shard or the library, and inline its state would
            // make every idle connection's task that big.
            Parsed::Did(Box::pin(host.execute(link, req, route)).await)
        }
        Ok(Some((Message::Interleaved { channel, data }, used))) => {
            link.buf.drain(..used);
            host.interleaved(link, channel, &data);
            Parsed::Did(Step::Continue)
        }
        // A response (to nothing we asked) is skipped.
        Ok(Some((Message::Response(_), used))) => {
            link.buf.drain(..used);
            Parsed::Did(Step::Continue)
        }
        Ok(None) => Parsed::More,
        Err(e) => {
            tracing::debug!(client = %link.client, error = %e, "bad request; closing");
            host.answer(link, &door::reject(&e));
            Parsed::Did(Step::Close)
        }
    }
}

/// Parses the next HTTP request and has the host carry it out: from its
/// head alone when its route takes the body as a stream, else once the
/// whole body is there.
async fn serve_http<H: Host>(host: &H, link: &mut Link) -> Parsed {
    let limits = http_limits(host.limits());
    let caller = Caller { client: link.client };
    let refuse = |link: &mut Link, version, e: &http::Error| {
        tracing::debug!(client = %link.client, error = %e, "bad HTTP request; closing");
        host.answer_http(link, version, &http::Response::new(e.status()), false);
        Parsed::Did(Step::Close)
    };
    let (head, head_len) = match http::parse_head(&link.buf, &limits) {
        Ok(Some(h)) => h,
        Ok(None) => return Parsed::More,
        Err(e) => return refuse(link, http::Version::Http11, &e),
    };
    let route = host.door().route_http(&head, &caller);
    let streams = matches!(
        route,
        HttpRoute::Tunnel { .. }
            | HttpRoute::Handler {
                body: BodyMode::Stream,
                ..
            }
    );
    let (body, used) = if streams {
        (Vec::new(), head_len)
    } else {
        let framing = match head.framing(&limits) {
            Ok(f) => f,
            Err(e) => return refuse(link, head.version, &e),
        };
        match http::parse_body(&link.buf[head_len..], framing, &limits) {
            Ok(Some((body, n))) => (body, head_len + n),
            Ok(None) => return Parsed::More,
            Err(e) => return refuse(link, head.version, &e),
        }
    };
    link.buf.drain(..used);
    let req = http::Request { head, body };
    Parsed::Did(Box::pin(host.execute_http(link, req, route)).await)
}

/// The wall clock in seconds, for URL tokens' expiry.
fn unix_time() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Writes what the host answered; `false` if the connection failed.
async fn write_out<W: Wire>(link: &mut Link, wire: &mut W) -> bool {
    if link.out.is_empty() {
        return true;
    }
    let ok = wire.write_out(&link.out).await.is_ok();
    link.out.clear();
    release_if_empty(&mut link.out);
    ok
}

/// Reads what has arrived on `reader` onto the end of `buf`. Returns the
/// bytes read, 0 at the end of the stream.
///
/// The chunk read into is on the stack of each poll, not in the future: a
/// connection waiting here (an idle one waits for good) keeps no buffer,
/// and its task is `READ_CHUNK` bytes smaller. `poll_read` may be given a
/// different buffer each time, and glommio's streams use it only within
/// the call (waiting is on the socket's readiness, not on a read into it).
///
/// The `poll_fn` itself, not an `async fn` awaiting it, which would keep
/// its two references twice in every waiting connection's task.
pub(crate) fn read_chunk<'a, R: AsyncRead + Unpin>(
    reader: &'a mut R,
    buf: &'a mut Vec<u8>,
) -> impl Future<Output = io::Result<usize>> + 'a {
    std::future::poll_fn(move |cx| {
        let mut chunk = [0u8; READ_CHUNK];
        let n = std::task::ready!(std::pin::Pin::new(&mut *reader).poll_read(cx, &mut chunk))?;
        buf.extend_from_slice(&chunk[..n]);
        std::task::Poll::Ready(Ok(n))
    })
}

/// Frees a connection buffer's memory once it holds nothing.
pub(crate) fn release_if_empty(buf: &mut Vec<u8>) {
    if buf.is_empty() && buf.capacity() > 0 {
        *buf = Vec::new();
    }
}
