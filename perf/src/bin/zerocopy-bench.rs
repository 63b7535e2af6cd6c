//! Zero-copy UDP sends against copying ones, for the large bursts an
//! Instant-On start sends (64 KiB GSO messages) and for single RTP-sized
//! datagrams, over loopback and over a veth pair into a network namespace.
//!
//! For each target and size, in one run: `sendmmsg` (the kernel copies the
//! payload into its buffers), `sendmmsg` with `MSG_ZEROCOPY` (the kernel
//! pins the pages and says on the socket's error queue when it is done with
//! them), io_uring `SENDMSG` (copies), io_uring `SENDMSG_ZC`, and io_uring
//! `SEND_ZC` (each zero-copy request completes twice: once sent, once its
//! pages are let go of). GSO comes from the `UDP_SEGMENT` socket option, so
//! every loop sends the same datagrams. The payload is walked through a
//! large buffer, as a shard walks a mapped movie, and never written while
//! the kernel may hold it.
//!
//! Loopback delivers to a local socket, and a packet bound for a local
//! socket has its zero-copy pages copied on the way (`skb_orphan_frags_rx`):
//! the notification then says "copied", and zero copy cannot win. The veth
//! target sends into a namespace of its own (made by this benchmark, which
//! needs root, and removed when it ends) whose receiving end has RPS steer
//! its receive path to the receiver's core, as a NIC's queue would put it
//! off the sender's: the sender's CPU is then its send path only, and where
//! the copy happens on the way in, it happens on the other core, as a NIC's
//! DMA would take it off the sender altogether.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use io_uring::{cqueue, opcode, types};
use streamalot_perf::os::{self, Cpu};
use streamalot_perf::receiver::{self, Receiver};
use streamalot_perf::run::{measure, Run};
use streamalot_perf::uring::RawRing;

/// `IORING_SEND_ZC_REPORT_USAGE`, and the notification's flag for "copied".
const ZC_REPORT_USAGE: u16 = 8;
const NOTIF_COPIED: i32 = i32::MIN;
/// `SO_EE_ORIGIN_ZEROCOPY` and `SO_EE_CODE_ZEROCOPY_COPIED`.
const ORIGIN_ZEROCOPY: u8 = 5;
const CODE_COPIED: u8 = 1;

#[derive(Parser, Debug)]
#[command(
    name = "zerocopy-bench",
    about = "Zero-copy UDP sends (MSG_ZEROCOPY, io_uring SEND_ZC/SENDMSG_ZC) against copying ones, over loopback \
             and a veth pair"
)]
struct Args {
    /// Seconds each loop runs.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Bytes of each datagram (a GSO message carries --segments of them).
    #[arg(long, default_value_t = 1316)]
    datagram: usize,
    /// Datagrams per message: 49 makes the 64 KiB GSO messages of a burst, 1 plain datagrams. Repeat or
    /// list to measure several.
    #[arg(long, value_delimiter = ',', default_value = "49,1")]
    segments: Vec<usize>,
    /// Messages per sendmmsg call or io_uring submission.
    #[arg(long, default_value_t = 16)]
    burst: usize,
    /// Where to send: loopback, veth (a namespace of its own; needs root), or both.
    #[arg(long, value_delimiter = ',', default_value = "loopback,veth")]
    target: Vec<String>,
    /// Size of the buffer the payloads are taken from, in MiB.
    #[arg(long, default_value_t = 256)]
    buffer_mib: usize,
    /// Datagrams per second the sender is held to (0: as fast as it goes). Faster than the receiver
    /// drains, the kernel drops early, which costs the sender less and makes the loops incomparable.
    #[arg(long, default_value_t = 200_000)]
    rate: u64,
    #[arg(long, default_value_t = 1)]
    sender_core: usize,
    #[arg(long, default_value_t = 0)]
    receiver_core: usize,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Way {
    Sendmmsg,
    SendmmsgZerocopy,
    UringSendmsg,
    UringSendmsgZc,
    UringSendZc,
}

impl Way {
    const ALL: [Way; 5] = [
        Way::Sendmmsg,
        Way::SendmmsgZerocopy,
        Way::UringSendmsg,
        Way::UringSendmsgZc,
        Way::UringSendZc,
    ];

    fn label(self) -> &'static str {
        match self {
            Way::Sendmmsg => "sendmmsg (copy)",
            Way::SendmmsgZerocopy => "sendmmsg + MSG_ZEROCOPY",
            Way::UringSendmsg => "io_uring SENDMSG (copy)",
            Way::UringSendmsgZc => "io_uring SENDMSG_ZC",
            Way::UringSendZc => "io_uring SEND_ZC",
        }
    }
}

/// How many zero-copy messages the kernel reported it copied anyway.
#[derive(Debug, Default, Clone, Copy)]
struct Copied {
    notified: u64,
    copied: u64,
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        eprintln!("zerocopy-bench: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), String> {
    println!("zerocopy-bench: zero-copy UDP sends against copying ones");
    println!(
        "machine: {}; load average {} (1, 5, 15 min)",
        os::machine(),
        os::load_average()
    );
    println!(
        "datagrams of {} bytes; messages of {:?} datagrams (GSO via UDP_SEGMENT when more than 1); {} messages per \
         call or submission, at most {} datagrams/s; sender on core {}, receiver (polling recvmmsg) on core {}; \
         {:.1} s per loop",
        args.datagram,
        args.segments,
        args.burst,
        if args.rate == 0 {
            "any".to_owned()
        } else {
            args.rate.to_string()
        },
        args.sender_core,
        args.receiver_core,
        args.seconds
    );
    let buffer: Arc<Vec<u8>> = Arc::new(
        (0..args.buffer_mib << 20)
            .map(|i| (i as u32).wrapping_mul(2_654_435_761) as u8)
            .collect(),
    );
    for target in &args.target {
        let (net, dest_ip, source_ip) = match target.as_str() {
            "loopback" => (None, [127, 0, 0, 1], [127, 0, 0, 1]),
            "veth" => (
                Some(Netns::create(args.receiver_core)?),
                [198, 18, 0, 2],
                [198, 18, 0, 1],
            ),
            other => return Err(format!("unknown target {other:?}: loopback or veth")),
        };
        let rx = match &net {
            Some(ns) => ns.socket_inside(dest_ip)?,
            None => receiver::socket(0, false)?,
        };
        let port = rx.local_addr().map_err(|e| e.to_string())?.port();
        let dest = SocketAddr::from((dest_ip, port));
        let receiver = Receiver::start(vec![rx], args.receiver_core, args.datagram.max(2048));
        println!();
        match &net {
            Some(ns) => println!(
                "target veth: {dest} in namespace {} across veth {}, RPS to core {}",
                ns.name, ns.host_if, args.receiver_core
            ),
            None => println!("target loopback: {dest}"),
        }
        for &segments in &args.segments {
            let bytes = args.datagram * segments;
            println!();
            println!("messages of {segments} x {} = {bytes} bytes:", args.datagram);
            let mut base: Option<Run> = None;
            for way in Way::ALL {
                let buffer = buffer.clone();
                let (core, burst, datagram, rate) = (args.sender_core, args.burst, args.datagram, args.rate);
                let duration = Duration::from_secs_f64(args.seconds);
                let copied = Arc::new(std::sync::Mutex::new(Copied::default()));
                let seen = copied.clone();
                let run = measure(&receiver, move || {
                    os::pin(Some(core))?;
                    let tx = sender(source_ip, datagram, segments)?;
                    let (run, c) = send_loop(way, &tx, dest, &buffer, datagram, segments, burst, rate, duration)?;
                    *seen.lock().expect("not poisoned") = c;
                    Ok(run)
                });
                let run = match run {
                    Ok(r) => r,
                    Err(e) => {
                        println!("{}: not measured: {e}", way.label());
                        continue;
                    }
                };
                run.print(way.label());
                let c = *copied.lock().expect("not poisoned");
                let mib = run.flushed.sent as f64 * args.datagram as f64 / (1 << 20) as f64;
                println!(
                    "    per MiB     {:>11.0} us of sender CPU{}",
                    run.cpu.total().as_secs_f64() * 1e6 / mib.max(1e-9),
                    if c.notified > 0 {
                        format!(
                            "; {} of {} zero-copy messages reported copied by the kernel ({:.0}%)",
                            c.copied,
                            c.notified,
                            100.0 * c.copied as f64 / c.notified as f64
                        )
                    } else {
                        String::new()
                    }
                );
                match base {
                    None => base = Some(run),
                    Some(b) => println!(
                        "    against sendmmsg (copy): {:.3}x the CPU per packet, {:.3}x the packets/s",
                        run.cpu_ns_per_packet() / b.cpu_ns_per_packet(),
                        run.pps() / b.pps()
                    ),
                }
            }
        }
        drop(receiver);
    }
    Ok(())
}

/// A sending socket on `ip`, with GSO of `segments` datagrams as a socket
/// option when more than one, and room for a burst.
fn sender(ip: [u8; 4], datagram: usize, segments: usize) -> Result<UdpSocket, String> {
    let tx = UdpSocket::bind(SocketAddr::from((ip, 0))).map_err(|e| format!("bind {ip:?}: {e}"))?;
    tx.set_nonblocking(true).map_err(|e| e.to_string())?;
    let _ = socket2::SockRef::from(&tx).set_send_buffer_size(8 << 20);
    if segments > 1 {
        setsockopt(&tx, libc::SOL_UDP, libc::UDP_SEGMENT, datagram as libc::c_int)?;
    }
    Ok(tx)
}

fn setsockopt(sock: &UdpSocket, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> Result<(), String> {
    // SAFETY: a live socket and a `c_int` option value of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            &value as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(format!(
            "setsockopt({level}, {name}): {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// One loop: bursts of `burst` messages of `segments` datagrams each, the
/// payload walking through `buffer`, for `duration`.
#[allow(clippy::too_many_arguments)]
fn send_loop(
    way: Way,
    tx: &UdpSocket,
    dest: SocketAddr,
    buffer: &[u8],
    datagram: usize,
    segments: usize,
    burst: usize,
    rate: u64,
    duration: Duration,
) -> Result<(Run, Copied), String> {
    let name = os::sockaddr_v4(dest).ok_or("IPv4 only")?;
    let len = datagram * segments;
    if way == Way::SendmmsgZerocopy {
        setsockopt(tx, libc::SOL_SOCKET, libc::SO_ZEROCOPY, 1)?;
    }
    let mut iovs = vec![
        libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: len
        };
        burst
    ];
    // SAFETY: an all-zero `mmsghdr` is valid; the fields used are set next.
    let mut hdrs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; burst];
    for (h, iov) in hdrs.iter_mut().zip(iovs.iter_mut()) {
        h.msg_hdr.msg_name = &name as *const libc::sockaddr_in as *mut libc::c_void;
        h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        h.msg_hdr.msg_iov = iov;
        h.msg_hdr.msg_iovlen = 1;
    }
    let mut ring = match way {
        Way::Sendmmsg | Way::SendmmsgZerocopy => None,
        _ if burst > 64 => return Err("at most 64 messages per burst through io_uring".into()),
        _ => Some(RawRing::with_completions(64, 4096)?),
    };
    let fd = tx.as_raw_fd();
    let mut run = Run::default();
    let mut copied = Copied::default();
    // Zero-copy messages whose pages the kernel still holds.
    let mut in_flight = 0usize;
    let mut at = 0usize;
    let cpu0 = Cpu::of_this_thread();
    let start = Instant::now();
    while start.elapsed() < duration {
        if rate > 0 {
            let due = start + Duration::from_secs_f64(run.flushed.sent as f64 / rate as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        for iov in iovs.iter_mut() {
            if at + len > buffer.len() {
                at = 0;
            }
            iov.iov_base = buffer[at..].as_ptr() as *mut libc::c_void;
            at += len;
        }
        match way {
            Way::Sendmmsg | Way::SendmmsgZerocopy => {
                let zc = way == Way::SendmmsgZerocopy;
                let flags = libc::MSG_DONTWAIT | if zc { libc::MSG_ZEROCOPY } else { 0 };
                let mut pos = 0;
                while pos < burst {
                    // SAFETY: `hdrs[pos..]` point at `name`, at `iovs` and at
                    // `buffer`, which outlive the loop; the buffer is never
                    // written, so pages the kernel pins stay as they were.
                    let n =
                        unsafe { libc::sendmmsg(fd, hdrs[pos..].as_mut_ptr(), (burst - pos) as libc::c_uint, flags) };
                    if n > 0 {
                        pos += n as usize;
                        run.flushed.sent += n as usize * segments;
                        in_flight += if zc { n as usize } else { 0 };
                        continue;
                    }
                    let e = std::io::Error::last_os_error();
                    match e.raw_os_error() {
                        Some(libc::EINTR) => {}
                        // Out of room, or (zero copy) out of option memory
                        // for the notifications: let some complete.
                        Some(libc::EAGAIN | libc::ENOBUFS) => {
                            if zc {
                                in_flight = in_flight.saturating_sub(reap_errqueue(tx, true, &mut copied)?);
                            } else {
                                run.flushed.would_block += (burst - pos) * segments;
                                break;
                            }
                        }
                        _ => return Err(format!("sendmmsg: {e}")),
                    }
                }
                if zc {
                    in_flight = in_flight.saturating_sub(reap_errqueue(tx, in_flight > 1024, &mut copied)?);
                }
            }
            Way::UringSendmsg => {
                let ring = ring.as_mut().expect("a ring");
                // SAFETY: as for sendmmsg above.
                let sent = unsafe { ring.send(fd, &hdrs) }?;
                if let Some(errno) = sent.errno {
                    return Err(format!("SENDMSG: {}", std::io::Error::from_raw_os_error(errno)));
                }
                run.flushed.sent += sent.sent * segments;
                run.flushed.would_block += sent.would_block * segments;
            }
            Way::UringSendmsgZc | Way::UringSendZc => {
                let ring = ring.as_mut().expect("a ring").ring();
                {
                    let mut sq = ring.submission();
                    for (i, (h, iov)) in hdrs.iter().zip(&iovs).enumerate() {
                        let entry = if way == Way::UringSendmsgZc {
                            opcode::SendMsgZc::new(types::Fd(fd), &h.msg_hdr)
                                .flags(libc::MSG_DONTWAIT as u32)
                                .ioprio(ZC_REPORT_USAGE)
                                .build()
                        } else {
                            opcode::SendZc::new(types::Fd(fd), iov.iov_base as *const u8, len as u32)
                                .dest_addr(&name as *const libc::sockaddr_in as *const libc::sockaddr)
                                .dest_addr_len(std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t)
                                .flags(libc::MSG_DONTWAIT)
                                .zc_flags(ZC_REPORT_USAGE)
                                .build()
                        };
                        // SAFETY: the entry points at `hdrs`, `name`, `iovs`
                        // and `buffer`, all alive and unchanged until every
                        // request and notification has completed (below and
                        // after the loop); the queue holds 64 entries and
                        // `burst` is checked against that.
                        unsafe { sq.push(&entry.user_data(i as u64)) }
                            .map_err(|_| "more messages per burst than the ring has entries".to_string())?;
                    }
                }
                let (sent, would_block) = reap_zc(ring, burst, &mut in_flight, 1024, &mut copied)
                    .map_err(|errno| format!("{}: {}", way.label(), std::io::Error::from_raw_os_error(errno)))?;
                run.flushed.sent += sent * segments;
                run.flushed.would_block += would_block * segments;
            }
        }
        run.rounds += 1;
    }
    // Every page the kernel holds is let go of before the buffer may be.
    match way {
        Way::SendmmsgZerocopy => {
            let deadline = Instant::now() + Duration::from_secs(5);
            while in_flight > 0 && Instant::now() < deadline {
                in_flight = in_flight.saturating_sub(reap_errqueue(tx, true, &mut copied)?);
            }
        }
        Way::UringSendmsgZc | Way::UringSendZc => {
            let ring = ring.as_mut().expect("a ring").ring();
            reap_zc(ring, 0, &mut in_flight, 0, &mut copied)
                .map_err(|errno| format!("{}: {}", way.label(), std::io::Error::from_raw_os_error(errno)))?;
        }
        _ => {}
    }
    run.wall = start.elapsed();
    run.cpu = Cpu::of_this_thread().since(cpu0);
    Ok((run, copied))
}

/// Reaps io_uring zero-copy completions until `requests` sends have
/// completed and at most `limit` notifications are outstanding
/// (`in_flight`, kept up to date). Returns the sends that went and those
/// refused for want of room; another refusal is its `errno`.
fn reap_zc(
    ring: &mut io_uring::IoUring,
    mut requests: usize,
    in_flight: &mut usize,
    limit: usize,
    copied: &mut Copied,
) -> Result<(usize, usize), i32> {
    let (mut sent, mut would_block) = (0, 0);
    while requests > 0 || *in_flight > limit {
        match ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            // Sends may be in flight: returning would let their pages go.
            Err(e) => panic!("io_uring_enter: {e}"),
        }
        for cqe in ring.completion() {
            if cqueue::notif(cqe.flags()) {
                *in_flight = in_flight.saturating_sub(1);
                copied.notified += 1;
                copied.copied += u64::from(cqe.result() & NOTIF_COPIED != 0);
                continue;
            }
            requests = requests.saturating_sub(1);
            *in_flight += usize::from(cqueue::more(cqe.flags()));
            match cqe.result() {
                r if r >= 0 => sent += 1,
                r if -r == libc::EAGAIN || -r == libc::ENOBUFS => would_block += 1,
                r => return Err(-r),
            }
        }
    }
    Ok((sent, would_block))
}

/// Reads `MSG_ZEROCOPY` notifications off the socket's error queue (waiting
/// up to 10 ms for one when `wait`); returns how many sends they cover.
fn reap_errqueue(tx: &UdpSocket, wait: bool, copied: &mut Copied) -> Result<usize, String> {
    let fd = tx.as_raw_fd();
    if wait {
        let mut pfd = libc::pollfd {
            fd,
            events: 0,
            revents: 0,
        };
        // SAFETY: one live pollfd; POLLERR is always reported.
        unsafe { libc::poll(&mut pfd, 1, 10) };
    }
    let mut done = 0;
    loop {
        let mut control = [0u64; 16];
        // SAFETY: an all-zero `msghdr` is valid; the control buffer is set next.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        // SAFETY: `msg` points at `control`, alive and writable across the call.
        let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EAGAIN) => Ok(done),
                _ => Err(format!("recvmsg(MSG_ERRQUEUE): {e}")),
            };
        }
        // SAFETY: the kernel filled `msg`'s control buffer; CMSG_FIRSTHDR and
        // CMSG_NXTHDR stay inside it.
        let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
        while !cmsg.is_null() {
            // SAFETY: `cmsg` is a header inside `control`, as above.
            let (level, kind) = unsafe { ((*cmsg).cmsg_level, (*cmsg).cmsg_type) };
            if level == libc::SOL_IP && kind == libc::IP_RECVERR {
                // SAFETY: an IP_RECVERR control message carries a
                // `sock_extended_err`, possibly unaligned in the buffer.
                let err: libc::sock_extended_err =
                    unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const libc::sock_extended_err) };
                if err.ee_origin == ORIGIN_ZEROCOPY {
                    let count = u64::from(err.ee_data.wrapping_sub(err.ee_info)) + 1;
                    done += count as usize;
                    copied.notified += count;
                    if err.ee_code & CODE_COPIED != 0 {
                        copied.copied += count;
                    }
                }
            }
            // SAFETY: as above.
            cmsg = unsafe { libc::CMSG_NXTHDR(&msg, cmsg) };
        }
    }
}

/// A network namespace with a veth pair into it, removed on drop.
struct Netns {
    name: String,
    host_if: String,
}

impl Netns {
    /// `streamalot-zc-PID`: 198.18.0.1/30 outside (RFC 2544's benchmarking
    /// range), 198.18.0.2/30 inside, RPS of the inside end onto `rps_core`.
    fn create(rps_core: usize) -> Result<Netns, String> {
        let pid = std::process::id();
        let ns = Netns {
            name: format!("streamalot-zc-{pid}"),
            host_if: format!("szc{pid}a"),
        };
        let peer = format!("szc{pid}b");
        let mask = format!("{:x}", 1u64 << rps_core);
        let n = ns.name.as_str();
        let h = ns.host_if.as_str();
        let steps: [&[&str]; 9] = [
            &["ip", "netns", "add", n],
            &["ip", "link", "add", h, "type", "veth", "peer", "name", &peer],
            &["ip", "link", "set", &peer, "netns", n],
            &["ip", "addr", "add", "198.18.0.1/30", "dev", h],
            &["ip", "link", "set", h, "up"],
            &["ip", "-n", n, "addr", "add", "198.18.0.2/30", "dev", &peer],
            &["ip", "-n", n, "link", "set", &peer, "up"],
            &["ip", "-n", n, "link", "set", "lo", "up"],
            &[
                "ip",
                "netns",
                "exec",
                n,
                "sh",
                "-c",
                &format!("echo {mask} > /sys/class/net/{peer}/queues/rx-0/rps_cpus"),
            ],
        ];
        for step in steps {
            let out = Command::new(step[0])
                .args(&step[1..])
                .output()
                .map_err(|e| format!("{}: {e}", step.join(" ")))?;
            if !out.status.success() {
                return Err(format!(
                    "{} failed (the veth target needs root): {}",
                    step.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
        }
        Ok(ns)
    }

    /// A receiving socket on `ip`, made inside the namespace (a socket
    /// stays in the namespace it was made in, whichever thread uses it).
    fn socket_inside(&self, ip: [u8; 4]) -> Result<UdpSocket, String> {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|s| {
            s.spawn(|| {
                let ns = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
                // SAFETY: a namespace descriptor; setns moves only this thread.
                if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(format!("setns: {}", std::io::Error::last_os_error()));
                }
                let rx = UdpSocket::bind(SocketAddr::from((ip, 0))).map_err(|e| format!("bind {ip:?}: {e}"))?;
                rx.set_nonblocking(true).map_err(|e| e.to_string())?;
                let _ = socket2::SockRef::from(&rx).set_recv_buffer_size(64 << 20);
                Ok(rx)
            })
            .join()
            .map_err(|_| "the namespace thread panicked".to_string())?
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes the inside end, and with it the pair.
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
        let _ = Command::new("ip").args(["link", "del", &self.host_if]).output();
    }
}
