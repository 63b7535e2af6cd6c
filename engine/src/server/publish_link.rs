//! The IO of one outgoing stream driven from a std thread: the clock, where
//! each track's packets go, and the RTSP connection of a [`Publisher`].
//! `streamalot broadcast` and rtpload's `--publish` both drive a
//! [`Broadcaster`](crate::channel::broadcast::Broadcaster) through these;
//! the logic of both is elsewhere and has no IO.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use loader::Movie;

use crate::channel::publish::{Event, Publisher};

/// Opens a movie as the broadcaster asks for it.
pub fn open_movie(p: &Path) -> Result<Arc<Movie>, String> {
    Movie::open(p).map(Arc::new).map_err(|e| e.to_string())
}

/// The wall clock as a monotonic clock sees it: a wall clock that steps
/// never makes the stream jump.
pub struct Clock {
    wall: SystemTime,
    mono: Instant,
}

impl Clock {
    /// The clock, starting now.
    pub fn start() -> Clock {
        Clock {
            wall: SystemTime::now(),
            mono: Instant::now(),
        }
    }
    pub fn now(&self) -> SystemTime {
        self.wall + self.mono.elapsed()
    }
    /// Nanoseconds since the start, the publish client's `now`.
    pub fn nanos(&self) -> u64 {
        self.mono.elapsed().as_nanos() as u64
    }
    pub fn until(&self, t: SystemTime) -> Duration {
        t.duration_since(self.now()).unwrap_or_default()
    }
}

/// Where each track's packets go.
pub enum Sink {
    /// Per track an RTP and an RTCP socket, and where each sends.
    Udp {
        sockets: Vec<(UdpSocket, UdpSocket)>,
        dest: Vec<(SocketAddr, SocketAddr)>,
    },
    /// Interleaved on the RTSP connection: per track its RTP and RTCP
    /// channels; `frame` is the one buffer frames are written into.
    Tcp {
        stream: TcpStream,
        channels: Vec<(u8, u8)>,
        frame: Vec<u8>,
    },
}

impl Sink {
    pub fn send(&mut self, track: usize, rtcp: bool, data: &[u8]) -> io::Result<()> {
        match self {
            Sink::Udp { sockets, dest } => {
                let (rtp_sock, rtcp_sock) = &sockets[track];
                let (sock, to) = if rtcp {
                    (rtcp_sock, dest[track].1)
                } else {
                    (rtp_sock, dest[track].0)
                };
                // A non-blocking socket (one that is read too) with a full
                // send buffer is waited out briefly rather than dropping.
                for _ in 0..1000 {
                    match sock.send_to(data, to) {
                        Ok(_) => return Ok(()),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => thread::sleep(Duration::from_micros(200)),
                        // Nobody listening yet on loopback: ICMP says so on the
                        // next send. Plain RTP does not care; the RTSP session
                        // will tell.
                        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return Ok(()),
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            }
            Sink::Tcp {
                stream,
                channels,
                frame,
            } => {
                let (rtp, rtcp_ch) = channels[track];
                frame.clear();
                proto::interleaved::emit(frame, if rtcp { rtcp_ch } else { rtp }, &[data])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                stream.write_all(frame)
            }
        }
    }
}

/// Why the RTSP connection cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The server refused, failed or went.
    #[error("publishing to {url}: {why}")]
    Refused { url: String, why: String },
    #[error("network: {0}")]
    Io(#[from] io::Error),
}

/// The RTSP connection: the writer here, the reader a thread feeding `rx`.
pub struct Control {
    pub publisher: Publisher,
    /// The connection, also for interleaved media and for shutting it.
    pub stream: TcpStream,
    rx: Receiver<io::Result<Vec<u8>>>,
    url: String,
}

impl Control {
    /// Drives `publisher` over `stream` (`url` only names it in errors).
    pub fn new(publisher: Publisher, stream: TcpStream, url: String) -> io::Result<Control> {
        let rx = reader(stream.try_clone()?);
        Ok(Control {
            publisher,
            stream,
            rx,
            url,
        })
    }

    /// Writes what the publisher has to say.
    pub fn flush(&mut self) -> io::Result<()> {
        let out = self.publisher.take_output();
        if !out.is_empty() {
            self.stream.write_all(&out)?;
        }
        Ok(())
    }

    pub fn fail(&self, why: impl ToString) -> LinkError {
        LinkError::Refused {
            url: self.url.clone(),
            why: why.to_string(),
        }
    }

    /// Waits up to `wait` for bytes and feeds them; then timeouts. Returns
    /// the events.
    pub fn pump(&mut self, clock: &Clock, wait: Duration) -> Result<Vec<Event>, LinkError> {
        let wait = match self.publisher.poll_timeout() {
            Some(t) => wait.min(Duration::from_nanos(t.saturating_sub(clock.nanos()))),
            None => wait,
        };
        match self.rx.recv_timeout(wait) {
            Ok(Ok(bytes)) => self.publisher.handle_input(clock.nanos(), &bytes),
            Ok(Err(e)) => return Err(self.fail(format!("the connection failed: {e}"))),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                if self.publisher.is_recording() || self.publisher.poll_timeout().is_some() {
                    // Closed while a TEARDOWN was pending is its answer.
                    self.publisher.teardown(clock.nanos());
                    let events: Vec<Event> = std::iter::from_fn(|| self.publisher.poll_event()).collect();
                    if events.contains(&Event::Closed) {
                        return Ok(events);
                    }
                }
                return Err(self.fail("the server closed the connection"));
            }
        }
        if self.publisher.poll_timeout().is_some_and(|t| t <= clock.nanos()) {
            self.publisher.handle_timeout(clock.nanos());
        }
        self.flush()?;
        Ok(std::iter::from_fn(|| self.publisher.poll_event()).collect())
    }
}

/// A thread that reads `stream` into the channel it returns, until the
/// stream ends or fails.
fn reader(mut stream: TcpStream) -> Receiver<io::Result<Vec<u8>>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match stream.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    if tx.send(Ok(buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            }
        }
    });
    rx
}
