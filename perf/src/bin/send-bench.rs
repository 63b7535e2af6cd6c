//! UDP send-path benchmark: packets per second through the engine's
//! `SendBatch`, printed beside the raw limit measured in the same run.
//!
//! The raw limit is a bare `sendmmsg` loop of identical packets, one iovec
//! each, with no server logic. The measured path is what a shard does per
//! tick: a fresh RTP header per packet and a payload of two or three slices
//! of a large buffer (standing in for spans of a mapped movie), pushed into a
//! `Batch` and flushed with one `sendmmsg`, first packet by packet and then
//! with UDP GSO, which sends each run of equal-size packets to one client as
//! one message. A raw GSO loop (identical 49-segment messages) gives that
//! path's limit. Each of these runs twice: with `sendmmsg`, and with the
//! same messages as `IORING_OP_SENDMSG` entries on an io_uring (the raw
//! loop's prebuilt, the engine's through `SendBatch::use_io_uring`), one
//! submission per batch.
//!
//! With `--clients N` the engine's packets go in runs of `--run` to N
//! destinations in turn (127.0.0.1 to 127.0.0.N, all reaching the same
//! receiving socket), which is what limits GSO in a real shard.
//!
//! The sender is pinned to one core and a receiver on another drains the
//! loopback socket with `recvmmsg`, so the receiver's counts show loss. On
//! loopback the kernel delivers each datagram to the receiving socket in the
//! sender's own system call, so the sender's CPU time includes that half of
//! the receive path too.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use net::{bind_pair, Flushed, SendBatch, SendPath, RING_ENTRIES, RTP_HEADER_LEN};
use proto::rtp;
use streamalot_perf::os::{self, Cpu};
use streamalot_perf::receiver::{self, Receiver};
use streamalot_perf::run::{measure, Run};
use streamalot_perf::uring::RawRing;

#[derive(Parser, Debug)]
#[command(
    name = "send-bench",
    about = "Packets per second through SendBatch, beside a raw sendmmsg loop, over loopback UDP"
)]
struct Args {
    /// Seconds each measured loop runs.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Payload bytes per packet (after the 12-byte RTP header).
    #[arg(long, default_value_t = 1304, value_parser = clap::value_parser!(u32).range(16..=65_000))]
    payload: u32,
    /// Packets per sendmmsg call (per shard tick).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=1024))]
    batch: u32,
    /// Size of the buffer the payload slices are taken from, in MiB.
    #[arg(long, default_value_t = 256)]
    buffer_mib: usize,
    /// Destinations the engine's packets go to in turn (127.0.0.1 upwards).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=250))]
    clients: u32,
    /// Consecutive packets to one destination before moving to the next.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    run: u32,
    /// Times the set of loops is repeated (alternating), to show the spread.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Core the sender is pinned to.
    #[arg(long, default_value_t = 0)]
    sender_core: usize,
    /// Core the receiver is pinned to.
    #[arg(long, default_value_t = 1)]
    receiver_core: usize,
    /// Let the receiver sleep in recvmmsg when its socket is empty, so the
    /// sender pays for waking it (by default it polls and never sleeps).
    #[arg(long)]
    receiver_sleeps: bool,
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        eprintln!("send-bench: {e}");
        std::process::exit(1);
    }
}

/// The loops measured, in the order they run each round: each of the four
/// kinds of `sendmmsg` loop, then the same through io_uring.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Loop {
    kind: Kind,
    path: SendPath,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Raw,
    Batch,
    BatchGso,
    RawGso,
}

impl Loop {
    const ALL: [Loop; 8] = {
        let (m, u) = (SendPath::Sendmmsg, SendPath::IoUring);
        [
            Loop {
                kind: Kind::Raw,
                path: m,
            },
            Loop {
                kind: Kind::Raw,
                path: u,
            },
            Loop {
                kind: Kind::Batch,
                path: m,
            },
            Loop {
                kind: Kind::Batch,
                path: u,
            },
            Loop {
                kind: Kind::BatchGso,
                path: m,
            },
            Loop {
                kind: Kind::BatchGso,
                path: u,
            },
            Loop {
                kind: Kind::RawGso,
                path: m,
            },
            Loop {
                kind: Kind::RawGso,
                path: u,
            },
        ]
    };

    fn label(self) -> String {
        let what = match self.kind {
            Kind::Raw => "(a) raw: identical packets, 1 iovec each",
            Kind::Batch => "(b) SendBatch, GSO off: fresh header + 2-3 slices of the buffer per packet",
            Kind::BatchGso => "(c) SendBatch, GSO on: as (b), runs of equal-size packets to a client as one message",
            Kind::RawGso => "(d) raw with UDP GSO: identical messages of 49 identical segments",
        };
        let how = match self.path {
            SendPath::Sendmmsg => "sendmmsg",
            SendPath::IoUring => "io_uring SENDMSG, one submission per batch",
        };
        format!("{what} [{how}]")
    }
}

fn run(args: &Args) -> Result<(), String> {
    let packet_len = RTP_HEADER_LEN + args.payload as usize;
    let duration = Duration::from_secs_f64(args.seconds);
    let buffer_len = (args.buffer_mib << 20).max(4 * packet_len);
    let recv_size = packet_len.max(2048);

    println!("send-bench: UDP send path, SendBatch vs raw sendmmsg");
    println!(
        "machine: {}; load average {} (1, 5, 15 min)",
        os::machine(),
        os::load_average()
    );
    println!(
        "packets: {packet_len} bytes of UDP payload ({RTP_HEADER_LEN}-byte RTP header + {} payload) over loopback, \
         {} per sendmmsg call (SendBatch flush), {:.1} s per loop, {} round(s)",
        args.payload, args.batch, args.seconds, args.rounds
    );
    println!(
        "SendBatch destinations: {} client(s), runs of {} packets each; payload slices from a {} MiB buffer",
        args.clients,
        args.run,
        buffer_len >> 20
    );
    println!(
        "sender pinned to core {}; receiver (recvmmsg, 64 x {recv_size} B buffers, {}) pinned to core {}",
        args.sender_core,
        if args.receiver_sleeps {
            "sleeps when empty"
        } else {
            "polls"
        },
        args.receiver_core
    );

    let tx = bind_pair(IpAddr::V4(Ipv4Addr::LOCALHOST), 20000..=60000)
        .map_err(|e| format!("sender socket: {e}"))?
        .rtp;
    let rx = receiver::socket(0, args.receiver_sleeps)?;
    let port = rx.local_addr().map_err(|e| e.to_string())?.port();
    let dests: Arc<Vec<SocketAddr>> = Arc::new(
        (1..=args.clients)
            .map(|i| SocketAddr::from(([127, 0, 0, i as u8], port)))
            .collect(),
    );
    println!(
        "socket buffers: sender SO_SNDBUF {} KiB, receiver SO_RCVBUF {} KiB",
        socket2::SockRef::from(&tx).send_buffer_size().unwrap_or(0) / 1024,
        socket2::SockRef::from(&rx).recv_buffer_size().unwrap_or(0) / 1024,
    );
    let receiver = Receiver::start(vec![rx], args.receiver_core, recv_size);

    // Filled once, before timing, so every page is resident as in a cached movie.
    let movie: Arc<Vec<u8>> = Arc::new(
        (0..buffer_len)
            .map(|i| (i as u32).wrapping_mul(2_654_435_761) as u8)
            .collect(),
    );

    let mut totals = [Run::default(); Loop::ALL.len()];
    for round in 1..=args.rounds {
        let mut runs = [Run::default(); Loop::ALL.len()];
        for (i, which) in Loop::ALL.into_iter().enumerate() {
            let tx = tx.try_clone().map_err(|e| e.to_string())?;
            let (core, batch, payload) = (args.sender_core, args.batch as usize, args.payload as usize);
            let (movie, dests, run) = (movie.clone(), dests.clone(), args.run as usize);
            let path = which.path;
            runs[i] = measure(&receiver, move || match which.kind {
                Kind::Raw => raw_loop(&tx, dests[0], core, batch, payload, false, path, duration),
                Kind::RawGso => raw_loop(&tx, dests[0], core, batch, payload, true, path, duration),
                Kind::Batch | Kind::BatchGso => {
                    let gso = which.kind == Kind::BatchGso;
                    batch_loop(&tx, &dests, run, core, batch, payload, &movie, gso, path, duration)
                }
            })?;
            totals[i].add(&runs[i]);
        }
        if args.rounds > 1 {
            println!();
            println!("round {round}:");
            print_runs(&runs);
        }
    }
    drop(receiver);

    println!();
    if args.rounds > 1 {
        println!("all {} rounds together:", args.rounds);
    }
    print_runs(&totals);
    Ok(())
}

fn print_runs(runs: &[Run; Loop::ALL.len()]) {
    for (which, run) in Loop::ALL.into_iter().zip(runs) {
        run.print(&which.label());
    }
    let [raw, raw_u, batch, batch_u, gso, gso_u, raw_gso, raw_gso_u] = runs;
    let ratio = |name: &str, run: &Run, base: &Run, base_name: &str| {
        println!(
            "{name}: {:.3}x the {base_name} packets/s; {:.3}x its sender CPU per packet",
            run.pps() / base.pps(),
            run.cpu_ns_per_packet() / base.cpu_ns_per_packet()
        );
    };
    ratio("(b)/(a) sendmmsg", batch, raw, "raw sendmmsg");
    ratio("(c)/(a) sendmmsg", gso, raw, "raw sendmmsg");
    ratio("(c)/(d) sendmmsg", gso, raw_gso, "raw GSO sendmmsg");
    ratio("(b)/(a) io_uring", batch_u, raw_u, "raw io_uring");
    ratio("(c)/(d) io_uring", gso_u, raw_gso_u, "raw GSO io_uring");
    println!("io_uring against sendmmsg, like for like:");
    ratio("  (a) raw", raw_u, raw, "sendmmsg");
    ratio("  (b) SendBatch", batch_u, batch, "sendmmsg");
    ratio("  (c) SendBatch + GSO", gso_u, gso, "sendmmsg");
    ratio("  (d) raw + GSO", raw_gso_u, raw_gso, "sendmmsg");
}

/// The raw limits: the same `mmsghdr`s, all pointing at one packet (or, with
/// `gso`, at 49 copies of it cut by the kernel), handed to `sendmmsg` (or
/// to an io_uring as SENDMSG entries) again and again.
#[allow(clippy::too_many_arguments)]
fn raw_loop(
    tx: &UdpSocket,
    dest: SocketAddr,
    core: usize,
    batch: usize,
    payload: usize,
    gso: bool,
    path: SendPath,
    duration: Duration,
) -> Result<Run, String> {
    os::pin(Some(core))?;
    let mut packet = vec![0xa5u8; RTP_HEADER_LEN + payload];
    packet[..RTP_HEADER_LEN].copy_from_slice(&header(false, 1, 2, 3));
    let name = os::sockaddr_v4(dest).ok_or("the raw loop sends to IPv4 only")?;
    // With GSO, one message is as many packets as fit in 64 KiB (49 of 1316
    // bytes), and the call carries enough messages for `batch` packets.
    let (segments, messages) = if gso {
        let segments = ((65_535 - 48) / packet.len()).clamp(1, 64);
        (segments, batch.div_ceil(segments))
    } else {
        (1, batch)
    };
    let iovs: Vec<libc::iovec> = (0..segments)
        .map(|_| libc::iovec {
            iov_base: packet.as_mut_ptr() as *mut libc::c_void,
            iov_len: packet.len(),
        })
        .collect();
    #[repr(C)]
    struct Segment {
        hdr: libc::cmsghdr,
        size: u16,
    }
    let mut cmsg = Segment {
        // SAFETY: all-zero is a valid `cmsghdr`.
        hdr: unsafe { std::mem::zeroed() },
        size: packet.len() as u16,
    };
    cmsg.hdr.cmsg_level = libc::SOL_UDP;
    cmsg.hdr.cmsg_type = libc::UDP_SEGMENT;
    // SAFETY: arithmetic only.
    cmsg.hdr.cmsg_len = unsafe { libc::CMSG_LEN(2) } as _;
    let mut hdrs: Vec<libc::mmsghdr> = (0..messages)
        .map(|_| {
            // SAFETY: an all-zero `mmsghdr` is valid; the fields used are set next.
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_name = &name as *const libc::sockaddr_in as *mut libc::c_void;
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            h.msg_hdr.msg_iov = iovs.as_ptr() as *mut libc::iovec;
            h.msg_hdr.msg_iovlen = segments as _;
            if gso {
                h.msg_hdr.msg_control = &mut cmsg as *mut Segment as *mut libc::c_void;
                h.msg_hdr.msg_controllen = std::mem::size_of::<Segment>() as _;
            }
            h
        })
        .collect();
    let fd = tx.as_raw_fd();
    let mut flushed = Flushed::default();
    let mut ring = match path {
        SendPath::IoUring => Some(RawRing::new(RING_ENTRIES)?),
        SendPath::Sendmmsg => None,
    };
    let cpu0 = Cpu::of_this_thread();
    let start = Instant::now();
    let deadline = start + duration;
    while Instant::now() < deadline {
        if let Some(ring) = ring.as_mut() {
            // SAFETY: `hdrs` and all they point at (`name`, `cmsg`, `iovs`,
            // `packet`) live, unchanged, until after the loop.
            let sent = unsafe { ring.send(fd, &hdrs) }?;
            if let Some(errno) = sent.errno {
                return Err(format!(
                    "io_uring SENDMSG: {}",
                    std::io::Error::from_raw_os_error(errno)
                ));
            }
            flushed.sent += sent.sent * segments;
            flushed.would_block += sent.would_block * segments;
            continue;
        }
        let mut pos = 0;
        while pos < messages {
            // SAFETY: `hdrs[pos..]` are initialised `mmsghdr`s pointing at
            // `name`, `cmsg`, `iovs` and `packet`, all alive and unchanged
            // across the call.
            let n = unsafe {
                libc::sendmmsg(
                    fd,
                    hdrs[pos..].as_mut_ptr(),
                    (messages - pos) as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if n > 0 {
                pos += n as usize;
                flushed.sent += n as usize * segments;
                continue;
            }
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => {}
                Some(libc::EAGAIN | libc::ENOBUFS) => {
                    flushed.would_block += (messages - pos) * segments;
                    break;
                }
                _ => return Err(format!("sendmmsg: {e}")),
            }
        }
    }
    let wall = start.elapsed();
    let cpu = Cpu::of_this_thread().since(cpu0);
    Ok(Run {
        flushed,
        wall,
        cpu,
        ..Run::default()
    })
}

/// The engine's path: per packet a fresh RTP header and a payload of two or
/// three slices, walking through the buffer the way a cursor walks a movie,
/// in runs of `run` packets to each destination in turn.
#[allow(clippy::too_many_arguments)]
fn batch_loop(
    tx: &UdpSocket,
    dests: &[SocketAddr],
    run: usize,
    core: usize,
    batch: usize,
    payload: usize,
    movie: &[u8],
    gso: bool,
    path: SendPath,
    duration: Duration,
) -> Result<Run, String> {
    os::pin(Some(core))?;
    let mut storage = SendBatch::with_capacity(batch);
    storage.set_gso(gso);
    if path == SendPath::IoUring {
        storage
            .use_io_uring(RING_ENTRIES)
            .map_err(|e| format!("io_uring: {e}"))?;
    }
    let mut flushed = Flushed::default();
    let (mut seq, mut ts, ssrc) = (0u16, 0u32, 0x5eed_0001u32);
    let (mut at, mut packets) = (0usize, 0usize);
    let cpu0 = Cpu::of_this_thread();
    let start = Instant::now();
    let deadline = start + duration;
    while Instant::now() < deadline {
        let mut b = storage.begin();
        for i in 0..batch {
            if at + payload + 64 > movie.len() {
                at = 0;
            }
            let dest = dests[packets / run % dests.len()];
            let header = header(i + 1 == batch, seq, ts, ssrc);
            // Like a hinted video packet: a couple of immediate bytes from the
            // hint sample, then the media sample's bytes, split where the
            // payload crosses into the next sample every other packet.
            let (imm, media) = movie[at..at + payload + 64].split_at(64);
            let imm = &imm[..2];
            if seq % 2 == 0 {
                let cut = payload / 3;
                b.push(dest, &header, [imm, &media[..cut], &media[cut..payload - 2]]);
            } else {
                b.push(dest, &header, [imm, &media[..payload - 2]]);
            }
            at += payload + 64;
            packets += 1;
            seq = seq.wrapping_add(1);
            ts = ts.wrapping_add(3000);
        }
        let f = b.flush(tx).map_err(|e| format!("flush: {e}"))?;
        flushed.sent += f.sent;
        flushed.would_block += f.would_block;
        flushed.failed += f.failed;
    }
    let wall = start.elapsed();
    let cpu = Cpu::of_this_thread().since(cpu0);
    if gso && !storage.gso() {
        eprintln!("send-bench: the kernel refused UDP GSO; (c) ran without it");
    }
    Ok(Run {
        flushed,
        wall,
        cpu,
        ..Run::default()
    })
}

/// The RTP header the server writes, with the payload type of a video track.
fn header(marker: bool, sequence: u16, timestamp: u32, ssrc: u32) -> [u8; RTP_HEADER_LEN] {
    rtp::Header {
        marker,
        payload_type: 96,
        sequence,
        timestamp,
        ssrc,
    }
    .to_bytes()
}
