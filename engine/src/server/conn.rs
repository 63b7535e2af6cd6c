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
//! An idle connection (most of them are, while their media flows over UDP)
//! holds no heap buffer: the read goes into a small buffer inside the read
//! future and is appended to the connection's buffer, which is given back
//! whenever it is empty, and a request's handling (which builds messages and
//! may wait for a shard or the library) lives in a boxed future that exists
//! only while a request is being handled.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{BorrowedFd, OwnedFd, RawFd};

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use proto::rtsp::message::{self, Limits, Message, Request, Response};

use crate::door::{self, Caller, Door, Route};
use crate::pacer::SessionKey;
use crate::shard::ConnId;

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

/// One connection as the loop and its host see it.
pub(crate) struct Link {
    pub id: ConnId,
    pub client: SocketAddr,
    /// Bytes read and not yet parsed.
    pub buf: Vec<u8>,
    /// Answers for the loop to write (control core only).
    pub out: Vec<u8>,
    /// The socket, to hand the connection over.
    fd: RawFd,
}

impl Link {
    pub fn new(id: ConnId, client: SocketAddr, fd: RawFd, pending: Vec<u8>) -> Link {
        Link {
            id,
            client,
            buf: pending,
            out: Vec::new(),
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
    /// The connection now belongs to a shard: stop reading it, and close
    /// this core's descriptor without shutting the socket down.
    HandedOver,
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
    /// A `$` frame from the client.
    fn interleaved(&self, link: &Link, channel: u8, data: &[u8]);
}

/// A stream the loop reads, and writes [`Link::out`] to.
pub(crate) trait Wire: AsyncRead + Unpin {
    fn write_out(&mut self, bytes: &[u8]) -> impl Future<Output = io::Result<()>>;
}

impl Wire for TcpStream {
    async fn write_out(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.write_all(bytes).await
    }
}

/// A shard connection's read half: its answers ride the shard core's
/// queue, so the loop has nothing to write on it.
impl Wire for futures_lite::io::ReadHalf<TcpStream> {
    async fn write_out(&mut self, bytes: &[u8]) -> io::Result<()> {
        debug_assert!(bytes.is_empty(), "a shard's answers go through its core");
        Ok(())
    }
}

/// Runs the connection until it ends or is handed over, and says which.
pub(crate) async fn serve<H: Host, W: Wire>(host: &H, link: &mut Link, wire: &mut W) -> Step {
    let caller = Caller { client: link.client };
    loop {
        loop {
            match message::parse(&link.buf, host.limits()) {
                Ok(Some((Message::Request(req), used))) => {
                    link.buf.drain(..used);
                    let route = host.door().route(&req, &caller, |key| host.exists(key));
                    // Boxed: a request's handling builds messages and may wait
                    // for a shard or the library, and inline its state would
                    // make every idle connection's task that big.
                    let step = Box::pin(host.execute(link, req, route)).await;
                    if !write_out(link, wire).await {
                        return Step::Close;
                    }
                    if step != Step::Continue {
                        return step;
                    }
                }
                Ok(Some((Message::Interleaved { channel, data }, used))) => {
                    link.buf.drain(..used);
                    host.interleaved(link, channel, &data);
                }
                // A response (to nothing we asked) is skipped.
                Ok(Some((Message::Response(_), used))) => {
                    link.buf.drain(..used);
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(client = %link.client, error = %e, "bad request; closing");
                    host.answer(link, &door::reject(&e));
                    write_out(link, wire).await;
                    return Step::Close;
                }
            }
        }
        release_if_empty(&mut link.buf);
        match read_more(wire, &mut link.buf).await {
            Ok(0) | Err(_) => return Step::Close,
            Ok(_) => {}
        }
    }
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

/// Reads what has arrived onto the end of `buf`. Returns the bytes read, 0
/// at the end of the stream.
async fn read_more<R: AsyncRead + Unpin>(reader: &mut R, buf: &mut Vec<u8>) -> io::Result<usize> {
    let mut chunk = [0u8; READ_CHUNK];
    let n = reader.read(&mut chunk).await?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

/// Frees a connection buffer's memory once it holds nothing.
fn release_if_empty(buf: &mut Vec<u8>) {
    if buf.is_empty() && buf.capacity() > 0 {
        *buf = Vec::new();
    }
}
