//! The glommio side of an RTSP-over-HTTP tunnel: its two kinds of leg as
//! one [`Wire`] for the connection loop, on whichever core the tunnel runs.
//!
//! The wire's output is the GET leg. Its input is the current POST leg's
//! body, base64-decoded as it arrives ([`Decoder`]); when that POST ends (a
//! client may close it after every request and open another), the wire
//! waits for the next one, which the core's driver delivers on the tunnel's
//! channel of legs. Meanwhile it watches the GET leg, whose end (the client
//! closed it) is the end of the tunnel. A POST leg that ends without the
//! next coming within the wait ends the tunnel too: a half-open tunnel
//! times out as a silent RTSP connection does.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::rc::Rc;
use std::time::Duration;

use futures_lite::future::or;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel::{LocalReceiver, LocalSender};
use glommio::net::TcpStream;
use glommio::{GlommioError, ResourceType};
use proto::tunnel::Decoder;
use tracing::debug;

use super::conn::Wire;
use super::Handover;

/// How much of a POST body is read at a time.
const READ_CHUNK: usize = 2048;

/// A connection's place in the control core's connection counts, given
/// back when it goes, unless its descriptor moved to another core with it.
pub(crate) struct Counted {
    client: IpAddr,
    release: Option<Rc<dyn Fn(IpAddr)>>,
}

impl Counted {
    pub fn new(client: IpAddr, release: Rc<dyn Fn(IpAddr)>) -> Counted {
        Counted {
            client,
            release: Some(release),
        }
    }

    /// The count goes with the connection to another core, which says
    /// when it closes.
    fn moved(mut self) {
        self.release = None;
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            release(self.client);
        }
    }
}

/// A client-to-server leg: a POST whose head has been read.
pub(crate) struct PostLeg {
    stream: TcpStream,
    client: SocketAddr,
    /// Body bytes read with the head: the start of its base64.
    pending: Vec<u8>,
    counted: Counted,
}

impl PostLeg {
    pub fn new(stream: TcpStream, client: SocketAddr, pending: Vec<u8>, counted: Counted) -> PostLeg {
        PostLeg {
            stream,
            client,
            pending,
            counted,
        }
    }

    /// The leg as a descriptor for another core, which takes over its
    /// count. This core's stream is closed without shutting the socket down.
    pub fn hand_over(self) -> io::Result<Handover> {
        // SAFETY: the stream owns the descriptor and outlives the borrow,
        // which ends here: `try_clone_to_owned` duplicates it.
        let fd = unsafe { BorrowedFd::borrow_raw(self.stream.as_raw_fd()) }.try_clone_to_owned()?;
        self.counted.moved();
        Ok(Handover {
            fd,
            client: self.client,
            pending: self.pending,
            tunnel: None,
        })
    }

    /// Answers the leg with an HTTP status and closes it: it cannot join
    /// its tunnel.
    pub async fn refuse(mut self, status: u16) {
        let mut out = Vec::new();
        crate::http::write(
            &mut out,
            &proto::http::Response::new(status),
            proto::http::Version::Http10,
            false,
            false,
        );
        let _ = self.stream.write_all(&out).await;
        let _ = self.stream.close().await;
    }
}

/// Gives `leg` to its tunnel's channel `to`, or gives it back with the
/// status to refuse it with: 404 when the tunnel has ended, 503 when legs
/// are queued behind its current one already.
pub(crate) fn give_leg(to: Option<&LocalSender<PostLeg>>, leg: PostLeg) -> Option<(PostLeg, u16)> {
    let Some(tx) = to else {
        return Some((leg, 404));
    };
    match tx.try_send(leg) {
        Ok(()) => None,
        Err(GlommioError::WouldBlock(ResourceType::Channel(leg))) => Some((leg, 503)),
        Err(GlommioError::Closed(ResourceType::Channel(leg))) => Some((leg, 404)),
        // try_send gives the item back in the two cases above, the only
        // ones it has; were there another, the leg would just be closed.
        Err(e) => {
            debug!(error = %e, "cannot deliver a tunnel's POST");
            None
        }
    }
}

/// What a tunnel takes along when it moves to a shard.
pub struct Carry {
    pub id: crate::http::tunnel::TunnelId,
    /// The current POST leg, if one is open.
    pub post: Option<Box<Handover>>,
    /// Where its base64 stopped.
    pub decoder: Decoder,
}

/// A tunnel as the connection loop's wire. `G` is the GET leg: the whole
/// stream on the control core, which writes the answers; the read half on a
/// shard, whose core's writer has the other half.
pub(crate) struct TunnelWire<G> {
    get: G,
    post: Option<PostLeg>,
    decoder: Decoder,
    legs: LocalReceiver<PostLeg>,
    /// How long the tunnel waits for a POST when it has none.
    wait: Duration,
    /// Bad base64 after good: the good is read first, then this ends it.
    failed: Option<io::Error>,
}

enum Event {
    Post(io::Result<usize>),
    Get(io::Result<usize>),
    Leg(Option<PostLeg>),
    Waited,
}

impl<G: futures_lite::AsyncRead + Unpin> TunnelWire<G> {
    pub fn new(get: G, post: Option<PostLeg>, decoder: Decoder, legs: LocalReceiver<PostLeg>, wait: Duration) -> Self {
        TunnelWire {
            get,
            post,
            decoder,
            legs,
            wait,
            failed: None,
        }
    }

    /// The tunnel's parts, to move it: its GET leg, its POST leg, where its
    /// base64 stopped, and its channel of POST legs to come.
    pub fn into_parts(self) -> (G, Option<PostLeg>, Decoder, LocalReceiver<PostLeg>) {
        (self.get, self.post, self.decoder, self.legs)
    }

    /// Decodes `text` from the current POST onto `buf`.
    fn decode(&mut self, text: &[u8], buf: &mut Vec<u8>) -> io::Result<()> {
        self.decoder.decode(text, buf).map_err(|e| {
            debug!(client = ?self.post.as_ref().map(|p| p.client), error = %e, "bad base64 in a tunnel's POST");
            io::Error::new(io::ErrorKind::InvalidData, e)
        })
    }

    /// Makes `leg` the current POST; decodes what came with its head.
    fn start(&mut self, mut leg: PostLeg, buf: &mut Vec<u8>) -> io::Result<()> {
        if !self.decoder.is_aligned() {
            debug!(client = %leg.client, "a tunnel's POST ended inside a base64 quantum");
        }
        self.decoder.restart();
        let pending = std::mem::take(&mut leg.pending);
        self.post = Some(leg);
        self.decode(&pending, buf)
    }
}

impl<G: futures_lite::AsyncRead + Unpin> TunnelWire<G> {
    /// Waits for what happens next on the tunnel.
    async fn next(&mut self, text: &mut [u8]) -> Event {
        let TunnelWire {
            get, post, legs, wait, ..
        } = self;
        let mut scrap = [0u8; 64];
        // The GET leg carries nothing from the client: reading it only tells
        // when the client closes it.
        let get = async { Event::Get(get.read(&mut scrap).await) };
        match post {
            Some(p) => {
                let post = async { Event::Post(p.stream.read(text).await) };
                or(post, get).await
            }
            None => {
                let leg = async { Event::Leg(legs.recv().await) };
                let waited = async {
                    glommio::timer::sleep(*wait).await;
                    Event::Waited
                };
                or(or(leg, get), waited).await
            }
        }
    }
}

/// How the wire writes the answers: on the control core to the GET leg;
/// on a shard they go through the core's queue.
pub(crate) trait WriteGet {
    fn write_get(&mut self, bytes: &[u8]) -> impl std::future::Future<Output = io::Result<()>>;
}

impl WriteGet for TunnelWire<TcpStream> {
    async fn write_get(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.get.write_all(bytes).await
    }
}

impl WriteGet for TunnelWire<futures_lite::io::ReadHalf<TcpStream>> {
    async fn write_get(&mut self, bytes: &[u8]) -> io::Result<()> {
        debug_assert!(bytes.is_empty(), "a shard's answers go through its core");
        Ok(())
    }
}

impl<G: futures_lite::AsyncRead + Unpin> Wire for TunnelWire<G>
where
    TunnelWire<G>: WriteGet,
{
    async fn read_more(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        let before = buf.len();
        let mut text = [0u8; READ_CHUNK];
        loop {
            let decoded = match self.next(&mut text).await {
                Event::Post(Ok(0)) => {
                    // The client closed this POST; another may follow.
                    self.post = None;
                    Ok(())
                }
                Event::Post(Ok(n)) => self.decode(&text[..n], buf),
                Event::Post(Err(e)) => return Err(e),
                Event::Leg(Some(leg)) => self.start(leg, buf),
                // The GET leg ended, or no POST came in time: so does the tunnel.
                Event::Get(Ok(0)) | Event::Get(Err(_)) | Event::Leg(None) | Event::Waited => return Ok(0),
                Event::Get(Ok(_)) => Ok(()),
            };
            match decoded {
                // What decoded before the bad text is read first.
                Err(e) if buf.len() > before => self.failed = Some(e),
                Err(e) => return Err(e),
                Ok(()) => {}
            }
            if buf.len() > before {
                return Ok(buf.len() - before);
            }
        }
    }

    async fn write_out(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.write_get(bytes).await
    }
}
