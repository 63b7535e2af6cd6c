//! rtpload as a publisher (`--publish FILE`): one hinted movie announced to
//! the server and sent in real time, so that a live load test needs no other
//! program to feed it.
//!
//! The logic is the server's own broadcaster and publish client, both
//! without IO: [`Broadcaster`] paces the movie's hint-track recipes (one
//! SSRC per track, sequence numbers and timestamps running on across loops,
//! sender reports every 5 s, the SDP from the loader), and [`Publisher`]
//! speaks RTSP (OPTIONS, ANNOUNCE, SETUP `mode=record` per track over
//! interleaved TCP or UDP, RECORD, keep-alives, TEARDOWN; Digest or Basic
//! from the URL's credentials). This module is their IO, on one thread of
//! its own with std sockets, beside the viewers' workers.
//!
//! [`start`] returns once RECORD is answered, so viewers started after it
//! find the stream on the air; [`Publishing::finish`] sends BYE on every
//! track and TEARDOWN, and says what was sent.

use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use proto::rtsp::header::Lower;
use proto::rtsp::url::RtspUrl;
use serde::Serialize;
use streamalot::channel::broadcast::{Broadcaster, Note, Settings, Step};
use streamalot::channel::picker::PlayMode;
use streamalot::channel::playlist::{Entry, Format, Playlist};
use streamalot::channel::publish::{self as client, Carriage, Event, Negotiated, Publisher};
use streamalot::server::publish_link::{open_movie, Clock, Control, LinkError, Sink};
use tracing::{info, warn};

/// How long connecting to the server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest sleep of the send loop: a stop is noticed within this.
const MAX_SLEEP: Duration = Duration::from_millis(50);
/// Packets sent per turn of the loop at most, so RTSP is still served when
/// far behind.
const BURST: usize = 512;

/// What to publish, where, how.
#[derive(Debug, Clone)]
pub struct PublishPlan {
    pub movie: PathBuf,
    /// The live path, with the credentials (`rtsp://USER:PASS@HOST/PATH`).
    pub url: RtspUrl,
    pub lower: Lower,
    /// Play the movie again and again (sequence numbers and timestamps go
    /// on); otherwise the broadcast ends with the movie.
    pub looped: bool,
    pub seed: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("--publish {}: {why}", path.display())]
    Movie { path: PathBuf, why: String },
    #[error("cannot resolve {host}: {why}")]
    Resolve { host: String, why: String },
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: SocketAddr, source: io::Error },
    #[error("publishing to {url}: {why}")]
    Refused { url: String, why: String },
    #[error("publishing: {0}")]
    Io(#[from] io::Error),
}

impl From<LinkError> for PublishError {
    fn from(e: LinkError) -> PublishError {
        match e {
            LinkError::Refused { url, why } => PublishError::Refused { url, why },
            LinkError::Io(e) => PublishError::Io(e),
        }
    }
}

/// What the publisher did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PublishReport {
    pub url: String,
    pub transport: &'static str,
    /// RTP packets sent, and their payload bytes.
    pub packets: u64,
    pub payload_bytes: u64,
    /// Times the movie started (more than one with `--loop`).
    pub movies: u64,
    /// The movie played out (without `--loop`) before the run ended.
    pub played_out: bool,
    /// Why publishing stopped early, if it did.
    pub error: Option<String>,
}

/// A publisher on the air, on its own thread.
pub struct Publishing {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<PublishReport>,
}

impl Publishing {
    /// Whether it has stopped by itself (the movie played out, or an error).
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Ends the broadcast (BYE, TEARDOWN) and says what was sent.
    pub fn finish(self) -> PublishReport {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_else(|_| PublishReport {
            error: Some("the publisher thread panicked".into()),
            ..PublishReport::default()
        })
    }
}

/// Announces `plan.movie` at `plan.url` and returns once RECORD is
/// answered, the media flowing from a thread of its own.
pub fn start(plan: &PublishPlan) -> Result<Publishing, PublishError> {
    let movie_error = |why: String| PublishError::Movie {
        path: plan.movie.clone(),
        why,
    };
    let list = Playlist {
        path: plan.movie.clone(),
        format: Format::M3u,
        entries: vec![Entry::new(&plan.movie)],
        problems: Vec::new(),
    };
    let clock = Clock::start();
    let settings = Settings {
        reference: Some(plan.movie.clone()),
        mode: if plan.looped {
            PlayMode::SequentialLooped
        } else {
            PlayMode::Sequential
        },
        window: 0,
        seed: plan.seed,
        max_movies: None,
        max_upcoming: 1,
        start: clock.now(),
        end: None,
    };
    let mut open = open_movie;
    let mut b = Broadcaster::new(&list, &settings, &mut open).map_err(|e| movie_error(e.to_string()))?;
    let name = plan
        .movie
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let sdp = b.sdp(&name, None);
    let tracks = b.layout().tracks.len();

    let url = &plan.url;
    let addr = (url.host(), url.port())
        .to_socket_addrs()
        .map_err(|e| e.to_string())
        .and_then(|mut a| a.next().ok_or_else(|| "no address".to_owned()))
        .map_err(|why| PublishError::Resolve {
            host: url.host().to_owned(),
            why,
        })?;
    let stream =
        TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).map_err(|source| PublishError::Connect { addr, source })?;
    let _ = stream.set_nodelay(true);
    let local = stream.local_addr()?;
    let mut pairs = Vec::new();
    let carriage: Vec<Carriage> = (0..tracks)
        .map(|_| match plan.lower {
            Lower::Tcp => Ok(Carriage::Tcp),
            Lower::Udp => {
                // Far from the viewers' default client ports.
                let pair = net::bind_pair(local.ip(), 40_000..=60_999)?;
                // This thread sends nothing else: a full buffer is waited out.
                pair.rtp.set_nonblocking(false)?;
                pair.rtcp.set_nonblocking(false)?;
                let ports = (pair.rtp.local_addr()?.port(), pair.rtcp.local_addr()?.port());
                pairs.push((pair.rtp, pair.rtcp));
                Ok(Carriage::Udp { client_port: ports })
            }
        })
        .collect::<io::Result<_>>()?;
    let publisher =
        Publisher::new(url.clone(), &sdp, carriage, plan.seed, clock.nanos()).map_err(|e| PublishError::Refused {
            url: url.to_string(),
            why: e.to_string(),
        })?;
    let mut c = Control::new(publisher, stream, url.to_string())?;
    c.flush()?;
    let negotiated = loop {
        let mut got = None;
        for e in c.pump(&clock, MAX_SLEEP)? {
            match e {
                Event::Recording { tracks } => got = Some(tracks),
                Event::Failed(e) => return Err(c.fail(e).into()),
                Event::Closed => return Err(c.fail("the server ended the session").into()),
                _ => {}
            }
        }
        if let Some(t) = got {
            break t;
        }
    };
    let sink = match plan.lower {
        Lower::Tcp => Sink::Tcp {
            stream: c.stream.try_clone()?,
            channels: negotiated
                .iter()
                .enumerate()
                .map(|(i, n)| match n {
                    Negotiated::Tcp { channels } => *channels,
                    Negotiated::Udp { .. } => client::tcp_channels(i),
                })
                .collect(),
            frame: Vec::new(),
        },
        Lower::Udp => {
            let dest = negotiated
                .iter()
                .map(|n| match n {
                    Negotiated::Udp { server_port } => (
                        SocketAddr::new(addr.ip(), server_port.0),
                        SocketAddr::new(addr.ip(), server_port.1),
                    ),
                    Negotiated::Tcp { .. } => (addr, addr),
                })
                .collect();
            Sink::Udp { sockets: pairs, dest }
        }
    };
    let transport = match plan.lower {
        Lower::Tcp => "tcp",
        Lower::Udp => "udp",
    };
    info!(url = %url, transport, "recording");
    b.start_at(clock.now());
    let stop = Arc::new(AtomicBool::new(false));
    let report = PublishReport {
        url: url.to_string(),
        transport,
        ..PublishReport::default()
    };
    let cname = format!("rtpload@{}", local.ip());
    let flag = stop.clone();
    let thread = thread::Builder::new().name("rtpload-publish".into()).spawn(move || {
        let mut run = Run {
            b,
            c,
            sink,
            clock,
            cname,
            tracks,
            report,
        };
        if let Err(e) = run.send(&flag) {
            warn!(error = %e, "publishing stopped");
            run.report.error = Some(e.to_string());
        }
        run.end();
        run.report
    })?;
    Ok(Publishing { stop, thread })
}

/// The send loop's state.
struct Run {
    b: Broadcaster,
    c: Control,
    sink: Sink,
    clock: Clock,
    cname: String,
    tracks: usize,
    report: PublishReport,
}

impl Run {
    /// Sends what is due until `stop`, the end of the movie, or an error.
    fn send(&mut self, stop: &AtomicBool) -> Result<(), PublishError> {
        let mut open = open_movie;
        let mut buf = Vec::with_capacity(2048);
        while !stop.load(Ordering::Relaxed) {
            let mut wake = self.clock.now() + MAX_SLEEP;
            for _ in 0..BURST {
                match self.b.next(self.clock.now(), &mut open, &mut buf) {
                    Step::Packet { track } => self
                        .sink
                        .send(track, false, &buf)
                        .map_err(|e| PublishError::from(self.c.fail(e)))?,
                    Step::Wait(t) => {
                        wake = wake.min(t);
                        break;
                    }
                    Step::Ended => {
                        self.report.played_out = true;
                        return Ok(());
                    }
                }
                wake = self.clock.now();
            }
            for n in std::iter::from_fn(|| self.b.poll_note()) {
                match n {
                    Note::Started(_) => self.report.movies += 1,
                    Note::Skipped { .. } | Note::Damaged { .. } => warn!("{}", n.message()),
                    _ => {}
                }
            }
            let now = self.clock.now();
            if now >= self.b.next_report() {
                for (k, report) in self.b.reports(now, &self.cname) {
                    self.sink
                        .send(k, true, &report)
                        .map_err(|e| PublishError::from(self.c.fail(e)))?;
                }
            }
            wake = wake.min(self.b.next_report().max(now));
            for e in self.c.pump(&self.clock, self.clock.until(wake).min(MAX_SLEEP))? {
                match e {
                    Event::Failed(e) => return Err(self.c.fail(e).into()),
                    Event::Closed => return Err(self.c.fail("the server ended the session").into()),
                    Event::KeepAliveRefused { status } => warn!("the server answered a keep-alive with {status}"),
                    Event::Recording { .. } | Event::Interleaved { .. } => {}
                }
            }
        }
        Ok(())
    }

    /// BYE on every track, then TEARDOWN (its answer waited for briefly).
    fn end(&mut self) {
        for k in 0..self.tracks {
            let bye = self.b.bye(k, &self.cname);
            let _ = self.sink.send(k, true, &bye);
            let (packets, bytes) = self.b.sent(k);
            self.report.packets += packets;
            self.report.payload_bytes += bytes;
        }
        self.c.publisher.teardown(self.clock.nanos());
        if self.c.flush().is_ok() {
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                match self.c.pump(&self.clock, MAX_SLEEP) {
                    Ok(events) if !events.iter().any(|e| matches!(e, Event::Closed | Event::Failed(_))) => {}
                    _ => break,
                }
            }
        }
        let _ = self.c.stream.shutdown(std::net::Shutdown::Both);
    }
}
