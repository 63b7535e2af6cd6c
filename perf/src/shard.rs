//! The shard's send path on a simulated clock, and the raw `sendmmsg` limit
//! for the same datagrams: what shard-bench measures, and what the capacity
//! benchmark takes as the machine's limit.
//!
//! [`Sim`] holds sessions of a movie the way a shard does and serves them
//! round by round with the engine's own schedule, playback and
//! [`pacer::serve_due`], the round's "now" advancing by a fixed tick of
//! simulated time, so the core always has work. [`Replay`] is the raw limit:
//! the datagrams those rounds send, recorded once and sent again prebuilt,
//! one iovec each, with no server logic.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use loader::Movie;
use net::RTP_HEADER_LEN;
use streamalot::pacer::{self, KeyMap, Schedule, SessionKey, UdpRound};
use streamalot::session::Destination;
use streamalot::source::{MovieSource, Nanos, Source, StreamSeeds};
use streamalot::stats::ShardStats;

use crate::os::Cpu;
use crate::run::Run;

/// At most this many datagrams per `sendmmsg`: the shard's batch.
pub const BATCH: usize = 256;

/// The sessions a shard serves, from their start.
#[derive(Clone)]
pub struct Sim {
    pub movie: Arc<Movie>,
    /// Per session, the RTP destination of each of its streams.
    pub dests: Arc<Vec<Vec<SocketAddr>>>,
    /// The sessions start evenly over this much simulated time.
    pub stagger_ns: Nanos,
    /// Simulated time per round.
    pub tick_ns: Nanos,
}

/// One session as a shard keeps it.
struct Entry {
    playback: Source,
    dests: Vec<Destination>,
}

impl Sim {
    /// Fresh sessions, each started, in a schedule, as the shard has them
    /// after their PLAY.
    fn start(&self) -> (KeyMap<SessionKey, Entry>, Schedule) {
        let ids: Vec<u32> = self.movie.hint_tracks().map(|t| t.id).collect();
        let n = self.dests.len() as u64;
        let mut sessions = KeyMap::default();
        let mut schedule = Schedule::default();
        for (i, dests) in self.dests.iter().enumerate() {
            let key = 0x5eed_0000_0000 + i as u64;
            let seeds: Vec<StreamSeeds> = (0..ids.len() as u32)
                .map(|s| (key as u32 ^ s, (i as u16).wrapping_mul(31), s.wrapping_mul(0x9e37_79b9)))
                .collect();
            let mut playback =
                Source::Movie(MovieSource::new(self.movie.clone(), &ids, &seeds).expect("the movie's hint tracks"));
            playback.play(self.stagger_ns * i as u64 / n, None, None);
            if let Some(due) = playback.next_due() {
                schedule.push(due, key, 0);
            }
            let dests = dests
                .iter()
                .map(|&rtp| Destination::Udp {
                    rtp,
                    rtcp: SocketAddr::new(rtp.ip(), rtp.port() + 1),
                })
                .collect();
            sessions.insert(key, Entry { playback, dests });
        }
        (sessions, schedule)
    }

    /// One round at simulated time `now`: every session due by then hands
    /// its packets to `udp`, exactly as `Shard::pump` does (lookahead aside).
    fn round(
        sessions: &mut KeyMap<SessionKey, Entry>,
        schedule: &mut Schedule,
        udp: &mut UdpRound,
        stats: &mut ShardStats,
        now: Nanos,
    ) {
        while let Some((_, key, generation)) = schedule.pop_due(now) {
            let Some(e) = sessions.get_mut(&key) else { continue };
            let next = pacer::serve_due(key, &mut e.playback, &e.dests, now, now, udp, stats, |_, _| false);
            if let Some(next) = next {
                schedule.push(next, key, generation);
            }
        }
    }

    /// The shard's path: rounds as fast as they go for `duration`, each
    /// flushed to `tx`.
    pub fn serve(&self, tx: &UdpSocket, gso: bool, duration: Duration) -> Result<Run, String> {
        let (mut sessions, mut schedule) = self.start();
        let mut udp = UdpRound::new(BATCH);
        udp.set_gso(gso);
        let mut stats = ShardStats::default();
        let mut run = Run::default();
        let mut now = 0;
        let cpu0 = Cpu::of_this_thread();
        let start = Instant::now();
        while start.elapsed() < duration {
            now += self.tick_ns;
            Self::round(&mut sessions, &mut schedule, &mut udp, &mut stats, now);
            let f = udp.flush(tx, &mut stats);
            run.flushed.sent += f.sent;
            run.flushed.would_block += f.would_block;
            run.flushed.failed += f.failed;
            run.rounds += 1;
        }
        run.wall = start.elapsed();
        run.cpu = Cpu::of_this_thread().since(cpu0);
        if gso && !udp.gso() {
            eprintln!("shard-bench: the kernel refused UDP GSO; (c) ran without it");
        }
        Ok(run)
    }

    /// The datagrams (size, destination) of the shard's first rounds, up to
    /// about `limit` of them, without sending anything.
    pub fn record(&self, limit: usize) -> Replay {
        let (mut sessions, mut schedule) = self.start();
        let mut stats = ShardStats::default();
        let mut udp = UdpRound::new(BATCH);
        let mut replay = Replay::default();
        let mut names: HashMap<SocketAddr, u32> = HashMap::new();
        let mut now = 0;
        while replay.lens.len() < limit && !schedule.is_empty() {
            now += self.tick_ns;
            Self::round(&mut sessions, &mut schedule, &mut udp, &mut stats, now);
            let before = replay.lens.len();
            for (dest, len) in udp.datagrams() {
                let next = names.len() as u32;
                let index = *names.entry(dest).or_insert(next);
                if index == next {
                    replay.names.push(sockaddr(dest));
                }
                replay.dests.push(index);
                replay.lens.push(len as u16);
            }
            udp.clear();
            if replay.lens.len() > before {
                replay.rounds.push((before, replay.lens.len()));
            }
        }
        replay
    }
}

fn sockaddr(dest: SocketAddr) -> libc::sockaddr_in {
    let SocketAddr::V4(dest) = dest else {
        unreachable!("the destinations are IPv4")
    };
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: dest.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(dest.ip().octets()),
        },
        sin_zero: [0; 8],
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
    /// [`BATCH`] prebuilt messages, one iovec each, round after round.
    pub fn send(&self, tx: &UdpSocket, duration: Duration) -> Result<Run, String> {
        let max = self.lens.iter().copied().max().unwrap_or(0) as usize;
        let mut buf = vec![0x80u8; max.max(RTP_HEADER_LEN)];
        let mut iovs: Vec<libc::iovec> = vec![
            libc::iovec {
                iov_base: buf.as_mut_ptr() as *mut libc::c_void,
                iov_len: 0,
            };
            BATCH
        ];
        // SAFETY: an all-zero `mmsghdr` is valid; the fields used are set per call.
        let mut hdrs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; BATCH];
        let fd = tx.as_raw_fd();
        let mut run = Run::default();
        let cpu0 = Cpu::of_this_thread();
        let start = Instant::now();
        'timed: loop {
            for &(from, to) in &self.rounds {
                if start.elapsed() >= duration {
                    break 'timed;
                }
                for chunk_start in (from..to).step_by(BATCH) {
                    let chunk = chunk_start..to.min(chunk_start + BATCH);
                    let n = chunk.len();
                    for (j, p) in chunk.enumerate() {
                        iovs[j].iov_len = self.lens[p] as usize;
                        let h = &mut hdrs[j].msg_hdr;
                        h.msg_name =
                            &self.names[self.dests[p] as usize] as *const libc::sockaddr_in as *mut libc::c_void;
                        h.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
                        h.msg_iov = &mut iovs[j];
                        h.msg_iovlen = 1;
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
