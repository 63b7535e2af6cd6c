//! `streamalot broadcast`'s IO: one outgoing stream, driven from one
//! thread with std sockets (glommio earns nothing for a single stream).
//!
//! The logic is elsewhere and has no IO: [`Broadcaster`] says which packet
//! is due and when, [`Publisher`] speaks RTSP. This loop reads the clock,
//! sends what is due, feeds the RTSP connection's bytes (read by a helper
//! thread into a channel, whose receive timeout is also the loop's sleep),
//! writes the status files, rereads a changed playlist, and follows the
//! signals: SIGINT/SIGTERM stop, SIGUSR1 skips, SIGHUP rereads the playlist;
//! and the commands typed on standard input: `skip`, `next PATH`, `stop`.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use proto::rtsp::header::Lower;
use tracing::{info, warn};

use crate::broadcast::{Destination, Plan};
use crate::channel::broadcast::{Broadcaster, Note, Settings, Step};
use crate::channel::calendar::civil_from_days;
use crate::channel::playlist::{Disk, Playlist};
use crate::channel::publish::{Carriage, Event, Negotiated, Publisher};
use crate::server::publish_link::{open_movie, Clock, Control, LinkError, Sink};

/// Why a broadcast stopped early.
#[derive(Debug, thiserror::Error)]
pub enum BroadcastRunError {
    #[error("{0}")]
    Playlist(#[from] crate::channel::playlist::PlaylistError),
    #[error("{0}")]
    Setup(#[from] crate::channel::broadcast::BroadcastError),
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot resolve {host}: {why}")]
    Resolve { host: String, why: String },
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: String, source: io::Error },
    #[error("publishing to {url}: {why}")]
    Publish { url: String, why: String },
    #[error("network: {0}")]
    Io(#[from] io::Error),
    #[error("no movie of the playlist can be played ({0} checked)")]
    NothingPlays(usize),
}

impl From<LinkError> for BroadcastRunError {
    fn from(e: LinkError) -> BroadcastRunError {
        match e {
            LinkError::Refused { url, why } => BroadcastRunError::Publish { url, why },
            LinkError::Io(e) => BroadcastRunError::Io(e),
        }
    }
}

/// How long a connection to the server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the playlist file is looked at for changes.
const RELOAD_CHECK: Duration = Duration::from_secs(1);
/// The longest sleep: signals are noticed within this.
const MAX_SLEEP: Duration = Duration::from_millis(100);

fn resolve_host(host: &str, port: u16) -> Result<SocketAddr, BroadcastRunError> {
    let err = |why: String| BroadcastRunError::Resolve {
        host: host.to_owned(),
        why,
    };
    (host, port)
        .to_socket_addrs()
        .map_err(|e| err(e.to_string()))?
        .next()
        .ok_or_else(|| err("no address".into()))
}

/// Writes `text` to `path` through a temporary file, so a reader never sees
/// half of it.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands() {
        assert_eq!(Command::parse("skip\n"), Ok(Command::Skip));
        assert_eq!(Command::parse("  stop "), Ok(Command::Stop));
        assert_eq!(
            Command::parse("next /m/a b.mp4"),
            Ok(Command::Next("/m/a b.mp4".into()))
        );
        assert!(Command::parse("next").unwrap_err().contains("next PATH"));
        assert!(Command::parse("skip now").is_err());
    }
}

fn write_file(path: &Path, text: &str) -> Result<(), BroadcastRunError> {
    let tmp = {
        let mut s = path.as_os_str().to_owned();
        s.push(".tmp");
        PathBuf::from(s)
    };
    let fail = |source| BroadcastRunError::Write {
        path: path.to_owned(),
        source,
    };
    std::fs::write(&tmp, text).map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(fail)
}

/// `2024-05-01 18:00:00` in UTC.
fn utc(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let r = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        r / 3600,
        r % 3600 / 60,
        r % 60
    )
}

/// The playlist's identity on disk, to notice a change.
fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Binds an even/odd pair of UDP ports for one track.
fn udp_pair(ip: IpAddr) -> io::Result<(UdpSocket, UdpSocket)> {
    let pair = net::bind_pair(ip, 20_000..=60_999)?;
    Ok((pair.rtp, pair.rtcp))
}

/// Runs the broadcast `plan` until it ends or a signal stops it.
pub fn run(plan: Plan) -> Result<(), BroadcastRunError> {
    for w in &plan.warnings {
        warn!("{w}");
    }
    let list = Playlist::load(&plan.playlist, &mut Disk)?;
    let seed = plan.seed.unwrap_or_else(|| {
        let mut b = [0u8; 8];
        let _ = getrandom::getrandom(&mut b);
        u64::from_le_bytes(b) ^ u64::from(std::process::id())
    });
    let clock = Clock::start();
    let start = plan.start.map_or(clock.now(), |s| s.max(clock.now()));
    let settings = Settings {
        reference: plan.reference.clone(),
        mode: plan.mode,
        window: plan.window,
        seed,
        max_movies: plan.movies,
        max_upcoming: plan.max_upcoming,
        start,
        end: plan.end,
    };
    let mut open = open_movie;
    let mut b = Broadcaster::new(&list, &settings, &mut open)?;
    let mut log = Log::new(plan.log_file.clone());
    info!(
        "{} movies in {}, {} play; reference {} with {} tracks: {}",
        list.entries.len(),
        plan.playlist.display(),
        plan.mode,
        b.reference_path().display(),
        b.layout().tracks.len(),
        b.layout()
            .tracks
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );

    let udp_dest = match &plan.destination {
        Destination::Udp { host, port } => Some((resolve_host(host, *port)?, *port)),
        Destination::Rtsp { .. } => None,
    };
    let sdp = b.sdp(&plan.name, udp_dest.map(|(a, p)| (a.ip(), p)));
    if let Some(path) = &plan.sdp_file {
        write_file(path, &sdp)?;
        info!("SDP written to {}", path.display());
    }
    if plan.check {
        let checked = b.check(&mut open);
        for n in std::iter::from_fn(|| b.poll_note()) {
            log.note(&n);
        }
        return if checked.1 == 0 {
            Err(BroadcastRunError::NothingPlays(checked.0))
        } else {
            info!("{} of {} movies play", checked.1, checked.0);
            Ok(())
        };
    }

    let stop = Arc::new(AtomicBool::new(false));
    let skip = Arc::new(AtomicBool::new(false));
    let reread = Arc::new(AtomicBool::new(false));
    for (sig, flag) in [
        (signal_hook::consts::SIGINT, &stop),
        (signal_hook::consts::SIGTERM, &stop),
        (signal_hook::consts::SIGUSR1, &skip),
        (signal_hook::consts::SIGHUP, &reread),
    ] {
        signal_hook::flag::register(sig, flag.clone())?;
    }

    let tracks = b.layout().tracks.len();
    let (mut sink, mut control, cname) = match &plan.destination {
        Destination::Udp { port, .. } => {
            let (addr, _) = udp_dest.expect("resolved above");
            let any = if addr.is_ipv4() {
                IpAddr::V4(Ipv4Addr::UNSPECIFIED)
            } else {
                IpAddr::V6(Ipv6Addr::UNSPECIFIED)
            };
            let mut sockets = Vec::new();
            let mut dest = Vec::new();
            for k in 0..tracks {
                sockets.push(udp_pair(any)?);
                let rtp = port.wrapping_add(2 * k as u16);
                dest.push((
                    SocketAddr::new(addr.ip(), rtp),
                    SocketAddr::new(addr.ip(), rtp.wrapping_add(1)),
                ));
            }
            info!("sending RTP to {} from port {port} up", addr.ip());
            (Sink::Udp { sockets, dest }, None, format!("streamalot@{}", addr.ip()))
        }
        Destination::Rtsp { url, lower } => {
            let addr = resolve_host(url.host(), url.port())?;
            let stream =
                TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).map_err(|source| BroadcastRunError::Connect {
                    addr: addr.to_string(),
                    source,
                })?;
            let _ = stream.set_nodelay(true);
            let local = stream.local_addr()?;
            let mut pairs = Vec::new();
            let carriage: Vec<Carriage> = (0..tracks)
                .map(|_| match lower {
                    Lower::Tcp => Ok(Carriage::Tcp),
                    Lower::Udp => {
                        let pair = udp_pair(local.ip())?;
                        let ports = (pair.0.local_addr()?.port(), pair.1.local_addr()?.port());
                        pairs.push(pair);
                        Ok(Carriage::Udp { client_port: ports })
                    }
                })
                .collect::<io::Result<_>>()?;
            let publisher = Publisher::new(url.clone(), &sdp, carriage, seed, clock.nanos()).map_err(|e| {
                BroadcastRunError::Publish {
                    url: url.to_string(),
                    why: e.to_string(),
                }
            })?;
            let mut c = Control::new(publisher, stream, url.to_string())?;
            c.flush()?;
            info!(
                "announcing to {url} over {}",
                if *lower == Lower::Tcp { "TCP" } else { "UDP" }
            );
            let negotiated = loop {
                if stop.load(Ordering::Relaxed) {
                    return Ok(());
                }
                let events = c.pump(&clock, MAX_SLEEP)?;
                let mut got = None;
                for e in events {
                    match e {
                        Event::Recording { tracks } => got = Some(tracks),
                        Event::Failed(e) => return Err(c.fail(e).into()),
                        _ => {}
                    }
                }
                if let Some(t) = got {
                    break t;
                }
            };
            let sink = match lower {
                Lower::Tcp => Sink::Tcp {
                    stream: c.stream.try_clone()?,
                    channels: negotiated
                        .iter()
                        .enumerate()
                        .map(|(i, n)| match n {
                            Negotiated::Tcp { channels } => *channels,
                            Negotiated::Udp { .. } => crate::channel::publish::tcp_channels(i),
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
            info!("recording at {url}");
            (sink, Some(c), format!("streamalot@{}", local.ip()))
        }
    };

    b.start_at(clock.now());
    let mut buf = Vec::with_capacity(2048);
    let mut playlist_stamp = stamp(&plan.playlist);
    let mut next_reload_check = clock.now() + RELOAD_CHECK;
    let mut next_progress = plan.progress.map(|p| clock.now() + p);
    let mut current: Option<(u64, PathBuf)> = None;
    let mut stopped = false;
    let commands = stdin_commands();
    loop {
        for line in commands.try_iter() {
            match Command::parse(&line) {
                Ok(Command::Skip) => skip.store(true, Ordering::Relaxed),
                Ok(Command::Stop) => stop.store(true, Ordering::Relaxed),
                Ok(Command::Next(path)) => {
                    info!("{} plays next", path.display());
                    b.insert_next(path);
                }
                Err(why) => warn!("{why}"),
            }
        }
        if stop.load(Ordering::Relaxed) {
            info!("stopping");
            stopped = true;
            break;
        }
        let now = clock.now();
        if skip.swap(false, Ordering::Relaxed) {
            info!("skipping to the next movie");
            b.skip(now);
        }
        if reread.swap(false, Ordering::Relaxed) || now >= next_reload_check {
            next_reload_check = now + RELOAD_CHECK;
            let s = stamp(&plan.playlist);
            if s != playlist_stamp {
                playlist_stamp = s;
                match Playlist::load(&plan.playlist, &mut Disk) {
                    Ok(list) => {
                        info!(
                            "{} changed: {} movies, play goes on from the next",
                            plan.playlist.display(),
                            list.entries.len()
                        );
                        b.reload(&list);
                    }
                    Err(e) => warn!("{e}; the list as it was plays on"),
                }
            }
        }
        // Everything due now, a bounded burst at a time so that RTSP and
        // signals are still served when far behind.
        let mut ended = false;
        let mut wake = now + MAX_SLEEP;
        for _ in 0..512 {
            match b.next(clock.now(), &mut open, &mut buf) {
                Step::Packet { track } => sink.send(track, false, &buf).map_err(|e| send_error(&control, e))?,
                Step::Wait(t) => {
                    wake = wake.min(t);
                    break;
                }
                Step::Ended => {
                    ended = true;
                    break;
                }
            }
            wake = clock.now();
        }
        for n in std::iter::from_fn(|| b.poll_note()) {
            if let Note::Started(s) = &n {
                current = Some((s.number, s.path.clone()));
                if let Some(p) = &plan.current_file {
                    write_file(p, &s.current)?;
                }
                if let Some(p) = &plan.upcoming_file {
                    write_file(p, &s.upcoming_text)?;
                }
            }
            log.note(&n);
        }
        if ended {
            info!("the playlist has played out");
            break;
        }
        let now = clock.now();
        if now >= b.next_report() {
            for (k, report) in b.reports(now, &cname) {
                sink.send(k, true, &report).map_err(|e| send_error(&control, e))?;
            }
        }
        wake = wake.min(b.next_report().max(now));
        if let Some(at) = next_progress.filter(|&t| now >= t) {
            next_progress = plan.progress.map(|p| at + p);
            if let (Some(p), Some((_, path))) = (b.progress(now), &current) {
                let packets: u64 = (0..tracks).map(|k| b.sent(k).0).sum();
                info!(
                    "playing movie {} {}: {:.0} of {:.0} s; {packets} packets sent",
                    p.number + 1,
                    path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default(),
                    p.position.as_secs_f64(),
                    p.length.as_secs_f64()
                );
            }
        }
        let sleep = clock.until(wake).min(MAX_SLEEP);
        match &mut control {
            Some(c) => {
                for e in c.pump(&clock, sleep)? {
                    match e {
                        Event::Failed(e) => return Err(c.fail(e).into()),
                        Event::Closed => return Err(c.fail("the server ended the session").into()),
                        Event::KeepAliveRefused { status } => warn!("the server answered a keep-alive with {status}"),
                        Event::Recording { .. } | Event::Interleaved { .. } => {}
                    }
                }
            }
            None => {
                if !sleep.is_zero() {
                    thread::sleep(sleep);
                }
            }
        }
    }
    // The last word: BYE on every track, then TEARDOWN.
    for k in 0..tracks {
        let bye = b.bye(k, &cname);
        let _ = sink.send(k, true, &bye);
    }
    if let Some(c) = &mut control {
        c.publisher.teardown(clock.nanos());
        c.flush()?;
        let deadline = Instant::now() + Duration::from_secs(3);
        'wait: while Instant::now() < deadline {
            match c.pump(&clock, MAX_SLEEP) {
                Ok(events) => {
                    if events.iter().any(|e| matches!(e, Event::Closed | Event::Failed(_))) {
                        break 'wait;
                    }
                }
                Err(_) => break 'wait,
            }
        }
        let _ = c.stream.shutdown(std::net::Shutdown::Both);
    }
    let packets: u64 = (0..tracks).map(|k| b.sent(k).0).sum();
    info!(
        "broadcast {}: {packets} packets sent",
        if stopped { "stopped" } else { "ended" }
    );
    log.line(&format!("broadcast ended, {packets} packets sent"));
    Ok(())
}

/// A line typed on standard input.
#[derive(Debug, PartialEq, Eq)]
enum Command {
    /// `skip`: the next movie now.
    Skip,
    /// `stop`: end the broadcast.
    Stop,
    /// `next PATH`: play this movie after the current one.
    Next(PathBuf),
}

impl Command {
    fn parse(line: &str) -> Result<Command, String> {
        let line = line.trim();
        let (word, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        match (word, rest.trim()) {
            ("skip", "") => Ok(Command::Skip),
            ("stop" | "quit", "") => Ok(Command::Stop),
            ("next", path) if !path.is_empty() => Ok(Command::Next(PathBuf::from(path))),
            _ => Err(format!(
                "{line:?}: commands are `skip`, `next PATH` (play PATH after this movie) and `stop`"
            )),
        }
    }
}

/// The lines of standard input, read by a thread of their own (which ends
/// at end of input).
fn stdin_commands() -> Receiver<String> {
    // Run in the background of a shell (`streamalot broadcast ... &`), a
    // read of the terminal would stop the whole process (SIGTTIN). Ignored,
    // the read fails instead and only the command thread ends.
    // SAFETY: setting a signal's disposition to SIG_IGN installs no handler
    // and touches no memory; SIGTTIN is not one the program otherwise uses.
    unsafe {
        libc::signal(libc::SIGTTIN, libc::SIG_IGN);
    }
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in io::stdin().lines().map_while(Result::ok) {
            if !line.trim().is_empty() && tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

fn send_error(control: &Option<Control>, e: io::Error) -> BroadcastRunError {
    match control {
        Some(c) => c.fail(format!("sending media failed: {e}")).into(),
        None => BroadcastRunError::Io(e),
    }
}

/// The terminal and, when asked, the broadcast's log file.
struct Log {
    file: Option<(PathBuf, std::fs::File)>,
}

impl Log {
    fn new(path: Option<PathBuf>) -> Log {
        let file = path.and_then(|p| match OpenOptions::new().create(true).append(true).open(&p) {
            Ok(f) => Some((p, f)),
            Err(e) => {
                warn!(
                    "cannot open log file {}: {e}; logging to the terminal only",
                    p.display()
                );
                None
            }
        });
        Log { file }
    }

    fn note(&mut self, n: &Note) {
        let m = n.message();
        match n {
            Note::Started(_) => info!("{m}"),
            Note::Lead { .. } | Note::TracksIgnored { .. } => info!("{m}"),
            Note::Skipped { .. } | Note::Damaged { .. } | Note::Idle { .. } => warn!("{m}"),
        }
        self.line(&m);
    }

    fn line(&mut self, m: &str) {
        if let Some((p, f)) = &mut self.file {
            if let Err(e) = writeln!(f, "{} {m}", utc(SystemTime::now())) {
                warn!("cannot write log file {}: {e}", p.display());
                self.file = None;
            }
        }
    }
}
