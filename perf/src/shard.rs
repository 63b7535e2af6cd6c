//! The shard's send path on a simulated clock, and the raw `sendmmsg` limit
//! for the same datagrams: what shard-bench measures, and what the capacity
//! benchmark takes as the machine's limit.
//!
//! [`Sim`] drives the engine's own [`ShardCore`], as the server's shard
//! driver does: its sessions are made by the SETUP and PLAY requests the
//! control core would send it, each round is the core's `handle_timeout`,
//! and the round's datagrams leave through the same `net` calls the server
//! makes ([`Transmit::flush`](streamalot::shard::Transmit::flush)). Only the
//! clock differs: the round's "now" advances by a fixed tick of simulated
//! time, so the core always has work. [`Replay`] is the raw limit: the
//! datagrams those rounds send, recorded once and sent again prebuilt, one
//! iovec each, with no server logic.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use loader::Movie;
use net::{SendPath, RING_ENTRIES, RTP_HEADER_LEN};
use proto::rtsp::message::{Method, Request};
use streamalot::door::session_id;
use streamalot::random::Rng;
use streamalot::shard::{self, Command, Input, Output, ShardCore};
use streamalot::source::Nanos;

use crate::os::Cpu;
use crate::run::Run;
use crate::uring::RawRing;

/// At most this many datagrams per `sendmmsg`: the shard's batch.
pub const BATCH: usize = shard::BATCH;

/// The simulated sessions say nothing (no RTSP keep-alive, no RTCP), so
/// their timeout is a day of simulated time: longer than any run.
const TIMEOUT_SECS: u64 = 86_400;

/// The sessions a shard serves, from their start.
#[derive(Clone)]
pub struct Sim {
    pub movie: Arc<Movie>,
    /// Per session, the RTP destination of each of its streams.
    pub dests: Arc<Vec<Vec<SocketAddr>>>,
    /// The port every stream's RTCP (sender reports) goes to, at the
    /// session's address: a socket nobody reads, which drops them.
    pub rtcp_port: u16,
    /// The sessions start evenly over this much simulated time.
    pub stagger_ns: Nanos,
    /// Simulated time per round.
    pub tick_ns: Nanos,
    /// Every this many sessions one sets up with `RTP/AVPF` and keeps a
    /// NACK/RTX history (0: none), to measure what that costs.
    pub nack_every: usize,
}

impl Sim {
    /// A shard core with every session set up and played, by the requests
    /// the control core would forward to it.
    fn start(&self) -> ShardCore {
        let mut core = ShardCore::new(
            shard::Config {
                index: 0,
                server_ports: (6970, 6971),
                session_timeout_secs: TIMEOUT_SECS,
                tcp_queue_bytes: 256 * 1024,
                cname: "shard-bench@simulation".into(),
                wall_at_zero: Duration::from_secs(1_700_000_000),
                // As the server runs by default: plain UDP sessions are
                // never sent ahead nor thinned, and must not pay for it.
                instant_on: Some(shard::burst_config(200, 4000)),
                thinning: Some(Default::default()),
                max_speed: shard::DEFAULT_MAX_SPEED,
            },
            Rng::from_seed(0x5eed),
        );
        let tracks: Vec<u32> = self.movie.hint_tracks().map(|t| t.id).collect();
        let n = self.dests.len() as u64;
        let url = "rtsp://shard-bench/movie.mp4";
        for (i, dests) in self.dests.iter().enumerate() {
            let key = 0x5eed_0000_0000 + i as u64;
            let id = session_id(key);
            let client = SocketAddr::new(dests[0].ip(), 40_000);
            for (s, (&track, dest)) in tracks.iter().zip(dests).enumerate() {
                let profile = if self.nack_every > 0 && i % self.nack_every == 0 {
                    "RTP/AVPF"
                } else {
                    "RTP/AVP"
                };
                let transport = format!("{profile};unicast;client_port={}-{}", dest.port(), self.rtcp_port);
                let mut request = Request::new(Method::Setup, format!("{url}/trackID={track}"))
                    .header("CSeq", (s + 1).to_string())
                    .header("Transport", transport);
                let command = if s == 0 {
                    Command::NewSession {
                        key,
                        path: "/movie.mp4".into(),
                        movie: self.movie.clone(),
                        request,
                        client,
                        conn: None,
                        reply: 0,
                    }
                } else {
                    request = request.header("Session", id.as_str());
                    Command::Request {
                        key,
                        request,
                        client,
                        reply: 0,
                    }
                };
                core.handle_input(0, Input::Command(command));
                expect_ok(&mut core, "SETUP");
            }
            let request = Request::new(Method::Play, url)
                .header("CSeq", "9")
                .header("Session", id.as_str());
            let at = self.stagger_ns * i as u64 / n;
            core.handle_input(
                at,
                Input::Command(Command::Request {
                    key,
                    request,
                    client,
                    reply: 0,
                }),
            );
            expect_ok(&mut core, "PLAY");
        }
        core
    }

    /// The shard's path: rounds as fast as they go for `duration`, each
    /// flushed to `tx` (RTP and RTCP alike) through `path`. The rounds of
    /// the stagger, while sessions are still starting, run first and are
    /// not measured (nor sent): the figure is the steady state.
    pub fn serve(&self, tx: &UdpSocket, gso: bool, path: SendPath, duration: Duration) -> Result<Run, String> {
        let (mut core, now) = self.warmed();
        core.set_gso(gso);
        core.set_send_path(path).map_err(|e| format!("{path}: {e}"))?;
        let run = self.rounds(&mut core, now, tx, duration);
        if gso && !core.transmit().udp().gso() {
            eprintln!("shard-bench: the kernel refused UDP GSO; it ran without it");
        }
        Ok(run)
    }

    /// A core whose sessions have all started: the rounds of the stagger
    /// run, their datagrams forgotten. Returns it and its simulated time.
    fn warmed(&self) -> (ShardCore, Nanos) {
        let mut core = self.start();
        let mut now = 0;
        while now < self.stagger_ns {
            now += self.tick_ns;
            core.handle_timeout(now);
            core.transmit().clear();
            while core.poll_output().is_some() {}
        }
        (core, now)
    }

    /// The measured rounds, from simulated time `now` on (a function of its
    /// own, for profilers: `--toggle-collect` in callgrind).
    #[inline(never)]
    fn rounds(&self, core: &mut ShardCore, mut now: Nanos, tx: &UdpSocket, duration: Duration) -> Run {
        let mut run = Run::default();
        let cpu0 = Cpu::of_this_thread();
        let start = Instant::now();
        while start.elapsed() < duration {
            now += self.tick_ns;
            core.handle_timeout(now);
            let sent = core.transmit().flush(tx, tx);
            run.flushed.sent += sent.rtp.sent;
            run.flushed.would_block += sent.rtp.would_block;
            run.flushed.failed += sent.rtp.failed;
            run.rtcp += sent.rtcp.sent;
            while core.poll_output().is_some() {}
            run.rounds += 1;
        }
        run.wall = start.elapsed();
        run.cpu = Cpu::of_this_thread().since(cpu0);
        run
    }

    /// The shard core's memory per session: this process's anonymous
    /// resident memory grown by making every session and playing it through
    /// the stagger, divided by the sessions. The mapped movie is not in it
    /// (its pages are file-backed), and neither is anything of the control
    /// core's (the connection, the admission counts).
    pub fn memory_per_session(&self) -> Option<f64> {
        let before = crate::os::anon_resident()?;
        let core = self.warmed();
        let after = crate::os::anon_resident()?;
        let per = after.saturating_sub(before) as f64 / self.dests.len().max(1) as f64;
        drop(core);
        Some(per)
    }

    /// The RTP datagrams (size, destination) of the shard's first rounds, up
    /// to about `limit` of them, without sending anything.
    pub fn record(&self, limit: usize) -> Replay {
        let mut core = self.start();
        let mut replay = Replay::default();
        let mut names: HashMap<SocketAddr, u32> = HashMap::new();
        let mut now = 0;
        let end = self.stagger_ns + self.movie.duration_secs() as Nanos * 1_000_000_000;
        while replay.lens.len() < limit && now < end {
            now += self.tick_ns;
            core.handle_timeout(now);
            let before = replay.lens.len();
            let transmit = core.transmit();
            for (dest, len) in transmit.udp().datagrams() {
                let next = names.len() as u32;
                let index = *names.entry(dest).or_insert(next);
                if index == next {
                    replay
                        .names
                        .push(crate::os::sockaddr_v4(dest).expect("the destinations are IPv4"));
                }
                replay.dests.push(index);
                replay.lens.push(len as u16);
            }
            transmit.clear();
            while core.poll_output().is_some() {}
            if replay.lens.len() > before {
                replay.rounds.push((before, replay.lens.len()));
            }
        }
        replay
    }
}

/// Drains the core's outputs after a command, which must have been
/// answered 200.
fn expect_ok(core: &mut ShardCore, what: &str) {
    while let Some(out) = core.poll_output() {
        if let Output::Event(shard::Event::Reply { response, .. }) = out {
            assert_eq!(response.status, 200, "the simulation's {what}: {response:?}");
        }
    }
}

/// Recorded datagrams: per datagram its length and destination, and the
/// rounds as ranges of datagrams.
#[derive(Default)]
pub struct Replay {
    names: Vec<libc::sockaddr_in>,
    dests: Vec<u32>,
    pub lens: Vec<u16>,
    pub rounds: Vec<(usize, usize)>,
}

// SAFETY: `sockaddr_in` is plain data; the raw loop only reads it.
unsafe impl Send for Replay {}
// SAFETY: as above, shared read-only.
unsafe impl Sync for Replay {}

impl Replay {
    /// The raw limit: each recorded round as `sendmmsg` calls of at most
    /// [`BATCH`] prebuilt messages, one iovec each, round after round; or,
    /// with io_uring, each round as one submission of SENDMSG entries.
    pub fn send(&self, tx: &UdpSocket, path: SendPath, duration: Duration) -> Result<Run, String> {
        let max = self.lens.iter().copied().max().unwrap_or(0) as usize;
        let (chunk, mut ring) = match path {
            SendPath::Sendmmsg => (BATCH, None),
            SendPath::IoUring => {
                let biggest = self.rounds.iter().map(|&(a, b)| b - a).max().unwrap_or(0);
                (biggest.max(1), Some(RawRing::new(RING_ENTRIES)?))
            }
        };
        let buf = vec![0x80u8; max.max(RTP_HEADER_LEN)];
        let mut iovs: Vec<libc::iovec> = vec![
            libc::iovec {
                iov_base: buf.as_ptr() as *mut libc::c_void,
                iov_len: 0,
            };
            chunk
        ];
        // SAFETY: an all-zero `mmsghdr` is valid; the fields used are set per call.
        let mut hdrs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; chunk];
        let fd = tx.as_raw_fd();
        let mut run = Run::default();
        let cpu0 = Cpu::of_this_thread();
        let start = Instant::now();
        'timed: loop {
            for &(from, to) in &self.rounds {
                if start.elapsed() >= duration {
                    break 'timed;
                }
                for chunk_start in (from..to).step_by(chunk) {
                    let packets = chunk_start..to.min(chunk_start + chunk);
                    let n = packets.len();
                    for (j, p) in packets.enumerate() {
                        iovs[j].iov_len = self.lens[p] as usize;
                        let h = &mut hdrs[j].msg_hdr;
                        h.msg_name =
                            &self.names[self.dests[p] as usize] as *const libc::sockaddr_in as *mut libc::c_void;
                        h.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
                        h.msg_iov = &mut iovs[j];
                        h.msg_iovlen = 1;
                    }
                    if let Some(ring) = ring.as_mut() {
                        // SAFETY: `hdrs[..n]` point at live addresses in
                        // `self.names` and at iovecs over `buf`, unchanged
                        // until the call returns.
                        let sent = unsafe { ring.send(fd, &hdrs[..n]) }?;
                        if let Some(errno) = sent.errno {
                            return Err(format!(
                                "io_uring SENDMSG: {}",
                                std::io::Error::from_raw_os_error(errno)
                            ));
                        }
                        run.flushed.sent += sent.sent;
                        run.flushed.would_block += sent.would_block;
                        continue;
                    }
                    let mut pos = 0;
                    while pos < n {
                        // SAFETY: `hdrs[pos..n]` point at live addresses in
                        // `self.names` and at iovecs over `buf`, all unchanged
                        // across the call.
                        let sent = unsafe {
                            libc::sendmmsg(
                                fd,
                                hdrs[pos..].as_mut_ptr(),
                                (n - pos) as libc::c_uint,
                                libc::MSG_DONTWAIT,
                            )
                        };
                        if sent > 0 {
                            pos += sent as usize;
                            run.flushed.sent += sent as usize;
                            continue;
                        }
                        let e = std::io::Error::last_os_error();
                        match e.raw_os_error() {
                            Some(libc::EINTR) => {}
                            Some(libc::EAGAIN | libc::ENOBUFS) => {
                                run.flushed.would_block += n - pos;
                                break;
                            }
                            _ => return Err(format!("sendmmsg: {e}")),
                        }
                    }
                }
                run.rounds += 1;
            }
        }
        run.wall = start.elapsed();
        run.cpu = Cpu::of_this_thread().since(cpu0);
        Ok(run)
    }
}
