//! Batched receive: one `recvmmsg` for everything waiting on a socket, with
//! the kernel's receive time of each datagram when asked for, and UDP GRO's
//! coalesced datagrams split back into the datagrams that were sent.
//!
//! With [`enable_gro`] the kernel may hand over a run of equal-size datagrams
//! of one flow as one buffer with a `UDP_GRO` control message giving the
//! size of each (the last may be shorter): the receive path then costs once
//! per run rather than once per datagram. It does so for runs that a
//! receiving device's GRO merged, and for a GSO message on loopback, which
//! then arrives as it was sent, never split. The iterators here split such a
//! buffer again, so callers see datagrams either way.

use std::io;
use std::mem;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Duration;

use super::addr::from_storage;

/// Room for one `SCM_TIMESTAMPNS` and one `UDP_GRO` control message, in
/// words so that it is aligned for `cmsghdr`.
// SAFETY: CMSG_SPACE is arithmetic on its argument.
const CMSG_BYTES: usize = unsafe {
    libc::CMSG_SPACE(mem::size_of::<libc::timespec>() as u32) + libc::CMSG_SPACE(mem::size_of::<libc::c_int>() as u32)
} as usize;
const CMSG_WORDS: usize = CMSG_BYTES.div_ceil(mem::size_of::<u64>());

/// The most bytes one coalesced receive can carry (the kernel stops merging
/// before 64 KiB): a buffer for a socket with [`enable_gro`] needs this room,
/// or a long run is truncated and lost whole.
pub const GRO_BUFFER_BYTES: usize = 65_536;

/// Buffers for up to `count` datagrams of up to `size` bytes each, reused by
/// every [`recv_batch`] call.
pub struct RecvBufs {
    size: usize,
    data: Vec<u8>,
    iovs: Vec<libc::iovec>,
    addrs: Vec<libc::sockaddr_storage>,
    /// Control-message space per datagram: always room for a GRO segment
    /// size (without it, a coalesced buffer could not be told from one
    /// datagram), and asked for a timestamp when made
    /// [`with_timestamps`](RecvBufs::with_timestamps).
    control: Vec<[u64; CMSG_WORDS]>,
    timestamps: bool,
    hdrs: Vec<libc::mmsghdr>,
    truncated: u64,
}

// SAFETY: the raw pointers in `iovs` and `hdrs` point into this struct's
// own heap buffers (which never reallocate) and are only used by
// `recv_batch` through `&mut self`, so moving the whole to another thread
// is fine.
unsafe impl Send for RecvBufs {}

impl std::fmt::Debug for RecvBufs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBufs")
            .field("count", &self.hdrs.len())
            .field("size", &self.size)
            .field("timestamps", &self.timestamps)
            .field("truncated", &self.truncated)
            .finish()
    }
}

impl RecvBufs {
    /// Room for `count` datagrams of up to `size` bytes. Longer datagrams
    /// are dropped and counted by [`truncated`](RecvBufs::truncated). For a
    /// socket with [`enable_gro`], `size` should be [`GRO_BUFFER_BYTES`].
    pub fn new(count: usize, size: usize) -> RecvBufs {
        RecvBufs::build(count, size, false)
    }

    /// As [`new`](RecvBufs::new), with room for each datagram's receive
    /// timestamp, which [`recv_batch_timestamped`] returns for a socket that
    /// [`enable_timestamps`] was called on.
    pub fn with_timestamps(count: usize, size: usize) -> RecvBufs {
        RecvBufs::build(count, size, true)
    }

    fn build(count: usize, size: usize, timestamps: bool) -> RecvBufs {
        let count = count.max(1);
        let mut bufs = RecvBufs {
            size,
            data: vec![0; count * size],
            iovs: Vec::with_capacity(count),
            // SAFETY: an all-zero `sockaddr_storage` is valid.
            addrs: vec![unsafe { mem::zeroed() }; count],
            control: vec![[0; CMSG_WORDS]; count],
            timestamps,
            hdrs: Vec::with_capacity(count),
            truncated: 0,
        };
        for i in 0..count {
            bufs.iovs.push(libc::iovec {
                iov_base: bufs.data[i * size..].as_mut_ptr() as *mut libc::c_void,
                iov_len: size,
            });
        }
        for i in 0..count {
            // SAFETY: an all-zero `mmsghdr` is valid; the pointers are set
            // below and (as the vectors never grow) stay valid.
            let mut hdr: libc::mmsghdr = unsafe { mem::zeroed() };
            hdr.msg_hdr.msg_name = &mut bufs.addrs[i] as *mut libc::sockaddr_storage as *mut libc::c_void;
            hdr.msg_hdr.msg_iov = &mut bufs.iovs[i];
            hdr.msg_hdr.msg_iovlen = 1;
            hdr.msg_hdr.msg_control = bufs.control[i].as_mut_ptr() as *mut libc::c_void;
            bufs.hdrs.push(hdr);
        }
        bufs
    }

    /// The most bytes each buffer takes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Datagrams (or coalesced runs of them) dropped so far because they
    /// were longer than `size`.
    pub fn truncated(&self) -> u64 {
        self.truncated
    }

    /// Fills the buffers with what is waiting on `sock`; returns how many
    /// headers the kernel filled.
    fn receive(&mut self, sock: &UdpSocket) -> io::Result<usize> {
        for hdr in &mut self.hdrs {
            hdr.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            hdr.msg_hdr.msg_controllen = CMSG_BYTES as _;
            hdr.msg_hdr.msg_flags = 0;
            hdr.msg_len = 0;
        }
        let received = loop {
            // SAFETY: every `mmsghdr` points at its own `sockaddr_storage`
            // (with its size in `msg_namelen`), at one iovec covering `size`
            // bytes of `data`, and at its own `CMSG_BYTES` of `control`
            // (with that size in `msg_controllen`), all owned by `self`, which
            // is borrowed mutably for the call. The kernel writes no more
            // than those sizes.
            let n = unsafe {
                libc::recvmmsg(
                    sock.as_raw_fd(),
                    self.hdrs.as_mut_ptr(),
                    self.hdrs.len() as libc::c_uint,
                    libc::MSG_WAITFORONE,
                    std::ptr::null_mut(),
                )
            };
            if n >= 0 {
                break n as usize;
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => break 0,
                _ => return Err(e),
            }
        };
        let truncated = self.hdrs[..received]
            .iter()
            .filter(|h| h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0)
            .count();
        self.truncated += truncated as u64;
        Ok(received)
    }

    /// The `i`th received buffer, unless it was truncated or has no IP
    /// source address: its source, its bytes, and what its control messages
    /// said.
    fn received(&self, i: usize) -> Option<(SocketAddr, &[u8], Control)> {
        let h = &self.hdrs[i];
        if h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
            return None;
        }
        let from = from_storage(&self.addrs[i], h.msg_hdr.msg_namelen)?;
        let start = i * self.size;
        Some((from, &self.data[start..start + h.msg_len as usize], self.control(i)))
    }

    /// What the kernel said about the `i`th buffer in control messages.
    fn control(&self, i: usize) -> Control {
        let msg = &self.hdrs[i].msg_hdr;
        let mut control = Control::default();
        // SAFETY: `msg` is a header the kernel filled: `msg_control` points
        // at this buffer's control space and `msg_controllen` says how much
        // of it the kernel wrote (it never writes more than the room it was
        // given, and sets MSG_CTRUNC when that room was short), which is
        // what the CMSG_* walk stays within. Each payload is read unaligned
        // and only when `cmsg_len` says it is all there.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(msg);
            while !cmsg.is_null() {
                let c = &*cmsg;
                let len = c.cmsg_len as usize;
                if c.cmsg_level == libc::SOL_SOCKET
                    && c.cmsg_type == libc::SCM_TIMESTAMPNS
                    && len >= libc::CMSG_LEN(mem::size_of::<libc::timespec>() as u32) as usize
                {
                    let ts = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const libc::timespec);
                    if self.timestamps {
                        control.received = Some(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32));
                    }
                } else if c.cmsg_level == libc::SOL_UDP
                    && c.cmsg_type == libc::UDP_GRO
                    && len >= libc::CMSG_LEN(mem::size_of::<libc::c_int>() as u32) as usize
                {
                    let size = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const libc::c_int);
                    control.segment = usize::try_from(size).ok().filter(|&s| s > 0);
                }
                cmsg = libc::CMSG_NXTHDR(msg, cmsg);
            }
        }
        control
    }
}

/// What a received buffer's control messages said.
#[derive(Debug, Clone, Copy, Default)]
struct Control {
    /// The kernel's receive time (`SCM_TIMESTAMPNS`).
    received: Option<Duration>,
    /// The size of each datagram in a coalesced buffer (`UDP_GRO`).
    segment: Option<usize>,
}

/// The datagrams of one received buffer: the buffer itself, or the pieces
/// of a GRO-coalesced one, each `segment` bytes but the last.
struct Segments<'b> {
    rest: &'b [u8],
    segment: usize,
    /// Whether the buffer yielded anything yet, so that an empty datagram
    /// is still one datagram.
    started: bool,
}

impl<'b> Segments<'b> {
    fn new(data: &'b [u8], segment: Option<usize>) -> Segments<'b> {
        Segments {
            rest: data,
            segment: segment.unwrap_or(data.len()).max(1),
            started: false,
        }
    }
}

impl<'b> Iterator for Segments<'b> {
    type Item = &'b [u8];

    fn next(&mut self) -> Option<&'b [u8]> {
        if self.rest.is_empty() && self.started {
            return None;
        }
        self.started = true;
        let (one, rest) = self.rest.split_at(self.segment.min(self.rest.len()));
        self.rest = rest;
        Some(one)
    }
}

/// Receives what is waiting on `sock`, up to the capacity of `bufs`, with one
/// `recvmmsg`. Returns an empty iterator when nothing is waiting. On a
/// blocking socket it waits for the first datagram (or the socket's read
/// timeout) and not for the rest.
pub fn recv_batch<'b>(
    sock: &UdpSocket,
    bufs: &'b mut RecvBufs,
) -> io::Result<impl Iterator<Item = (SocketAddr, &'b [u8])> + 'b> {
    let received = bufs.receive(sock)?;
    let bufs: &'b RecvBufs = bufs;
    Ok((0..received)
        .filter_map(move |i| bufs.received(i))
        .flat_map(|(from, data, control)| Segments::new(data, control.segment).map(move |d| (from, d))))
}

/// One datagram from [`recv_batch_timestamped`].
#[derive(Debug, Clone, Copy)]
pub struct Datagram<'b> {
    pub from: SocketAddr,
    pub data: &'b [u8],
    /// When the kernel received it, as time since the Unix epoch on the
    /// system clock (`CLOCK_REALTIME`); `None` when the socket does not have
    /// timestamps enabled or `bufs` has no room for them.
    pub received: Option<Duration>,
}

/// As [`recv_batch`], with each datagram's kernel receive time: when it
/// arrived, however late the caller got round to reading it. Needs
/// [`enable_timestamps`] on the socket and [`RecvBufs::with_timestamps`].
pub fn recv_batch_timestamped<'b>(
    sock: &UdpSocket,
    bufs: &'b mut RecvBufs,
) -> io::Result<impl Iterator<Item = Datagram<'b>> + 'b> {
    let received = bufs.receive(sock)?;
    let bufs: &'b RecvBufs = bufs;
    Ok((0..received)
        .filter_map(move |i| bufs.received(i))
        .flat_map(|(from, data, control)| {
            Segments::new(data, control.segment).map(move |data| Datagram {
                from,
                data,
                received: control.received,
            })
        }))
}

/// Asks the kernel to timestamp every datagram `sock` receives
/// (`SO_TIMESTAMPNS`), for [`recv_batch_timestamped`].
pub fn enable_timestamps(sock: &UdpSocket) -> io::Result<()> {
    set_int_option(sock, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1)
}

/// Lets the kernel coalesce runs of equal-size datagrams to `sock` (UDP
/// GRO, Linux 5.0): [`recv_batch`] and [`recv_batch_timestamped`] split them
/// again. The receive buffers then need [`GRO_BUFFER_BYTES`] each.
pub fn enable_gro(sock: &UdpSocket) -> io::Result<()> {
    set_int_option(sock, libc::SOL_UDP, libc::UDP_GRO, 1)
}

fn set_int_option(sock: &UdpSocket, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: the fd is open for the duration of the call, and the option
    // value is a live `c_int` whose size is passed along with it.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            &value as *const libc::c_int as *const libc::c_void,
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    use std::time::Duration;

    fn check(ip: IpAddr) {
        let rx = UdpSocket::bind(SocketAddr::new(ip, 0)).unwrap();
        rx.set_nonblocking(true).unwrap();
        let tx1 = UdpSocket::bind(SocketAddr::new(ip, 0)).unwrap();
        let tx2 = UdpSocket::bind(SocketAddr::new(ip, 0)).unwrap();
        let mut bufs = RecvBufs::new(4, 256);
        assert_eq!(recv_batch(&rx, &mut bufs).unwrap().count(), 0);

        let to = rx.local_addr().unwrap();
        let sent: Vec<(SocketAddr, Vec<u8>)> = (0..6u8)
            .map(|i| {
                let tx = if i % 2 == 0 { &tx1 } else { &tx2 };
                let payload = vec![i; 10 + usize::from(i)];
                tx.send_to(&payload, to).unwrap();
                (tx.local_addr().unwrap(), payload)
            })
            .collect();
        tx1.send_to(&[7u8; 300], to).unwrap(); // longer than a buffer
        tx1.send_to(b"last", to).unwrap();

        let mut got: Vec<(SocketAddr, Vec<u8>)> = Vec::new();
        let mut calls = 0;
        while got.len() < 7 && calls < 100 {
            got.extend(recv_batch(&rx, &mut bufs).unwrap().map(|(a, p)| (a, p.to_vec())));
            calls += 1;
        }
        assert!(calls >= 2, "four buffers cannot take eight datagrams at once");
        let mut expected = sent;
        expected.push((tx1.local_addr().unwrap(), b"last".to_vec()));
        assert_eq!(got, expected);
        assert_eq!(bufs.truncated(), 1);
        assert_eq!(recv_batch(&rx, &mut bufs).unwrap().count(), 0);
    }

    #[test]
    fn receives_ipv4() {
        check(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }

    #[test]
    fn receives_ipv6() {
        check(IpAddr::V6(Ipv6Addr::LOCALHOST));
    }

    #[test]
    fn kernel_timestamps_say_when_each_datagram_arrived() {
        use std::time::{SystemTime, UNIX_EPOCH};
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_nonblocking(true).unwrap();
        enable_timestamps(&rx).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = rx.local_addr().unwrap();
        let mut bufs = RecvBufs::with_timestamps(4, 64);
        // Linux turns receive timestamping on for the whole system a moment
        // after the first socket asks (a deferred static key); until then a
        // datagram is stamped when it is read. Wait that moment out.
        tx.send_to(b"warm-up", to).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(recv_batch_timestamped(&rx, &mut bufs).unwrap().count(), 1);
        let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        tx.send_to(b"one", to).unwrap();
        std::thread::sleep(Duration::from_millis(30));
        tx.send_to(b"two", to).unwrap();
        let sent_second = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        // Read late: the timestamps must still be the arrival times.
        std::thread::sleep(Duration::from_millis(30));
        let got: Vec<(Vec<u8>, Duration)> = recv_batch_timestamped(&rx, &mut bufs)
            .unwrap()
            .map(|d| {
                assert_eq!(d.from, tx.local_addr().unwrap());
                (d.data.to_vec(), d.received.expect("a kernel timestamp"))
            })
            .collect();
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].0.as_slice(), got[1].0.as_slice()), (&b"one"[..], &b"two"[..]));
        // In order, and no later than right after each was sent (allowing
        // for clock granularity): the time the kernel got them, not the time
        // they were read, 30 ms later. (How far apart the two are is left
        // alone: on a loaded machine the kernel may deliver the first late.)
        let slack = Duration::from_millis(5);
        assert!(got[0].1 + slack >= before, "{got:?} before {before:?}");
        assert!(got[1].1 >= got[0].1, "{got:?}");
        assert!(got[1].1 <= sent_second + slack, "{got:?} vs {sent_second:?}");
        // The same buffers work again, and a socket without the option gets
        // no timestamps but still its datagrams.
        let plain = UdpSocket::bind("127.0.0.1:0").unwrap();
        plain.set_nonblocking(true).unwrap();
        tx.send_to(b"three", plain.local_addr().unwrap()).unwrap();
        let got: Vec<_> = recv_batch_timestamped(&plain, &mut bufs)
            .unwrap()
            .map(|d| (d.data.to_vec(), d.received))
            .collect();
        assert_eq!(got, [(b"three".to_vec(), None)]);
        // Buffers without room for timestamps: none, whatever the socket says.
        let mut no_room = RecvBufs::new(4, 64);
        tx.send_to(b"four", to).unwrap();
        let got: Vec<_> = recv_batch_timestamped(&rx, &mut no_room)
            .unwrap()
            .map(|d| (d.data.to_vec(), d.received))
            .collect();
        assert_eq!(got, [(b"four".to_vec(), None)]);
    }

    #[test]
    fn a_coalesced_run_comes_out_as_the_datagrams_sent() {
        // A GSO message on loopback reaches a GRO socket as it was sent, one
        // buffer with the segment size beside it: what a receiving device's
        // GRO makes of a run on the wire.
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        set_int_option(&tx, libc::SOL_UDP, libc::UDP_SEGMENT, 100).unwrap();
        let run: Vec<u8> = (0..250u32).map(|i| i as u8).collect();
        let expected: Vec<Vec<u8>> = run.chunks(100).map(<[u8]>::to_vec).collect();

        let gro = UdpSocket::bind("127.0.0.1:0").unwrap();
        gro.set_nonblocking(true).unwrap();
        enable_gro(&gro).unwrap();
        enable_timestamps(&gro).unwrap();
        tx.send_to(&run, gro.local_addr().unwrap()).unwrap();
        tx.send_to(b"", gro.local_addr().unwrap()).unwrap();
        // One buffer: only a coalesced receive yields all three at once.
        let mut one = RecvBufs::with_timestamps(1, GRO_BUFFER_BYTES);
        let got: Vec<Datagram> = recv_batch_timestamped(&gro, &mut one).unwrap().collect();
        assert_eq!(got.iter().map(|d| d.data.to_vec()).collect::<Vec<_>>(), expected);
        assert!(got.iter().all(|d| d.from == tx.local_addr().unwrap()));
        assert!(got
            .iter()
            .all(|d| d.received.is_some() && d.received == got[0].received));
        // An empty datagram is still a datagram.
        let got: Vec<_> = recv_batch(&gro, &mut one).unwrap().map(|(_, d)| d.len()).collect();
        assert_eq!(got, [0]);

        // Without GRO the kernel splits the message: one datagram a buffer.
        let plain = UdpSocket::bind("127.0.0.1:0").unwrap();
        plain.set_nonblocking(true).unwrap();
        tx.send_to(&run, plain.local_addr().unwrap()).unwrap();
        let mut one = RecvBufs::new(1, 256);
        let mut got = Vec::new();
        for _ in 0..3 {
            let batch: Vec<Vec<u8>> = recv_batch(&plain, &mut one).unwrap().map(|(_, d)| d.to_vec()).collect();
            assert_eq!(batch.len(), 1);
            got.extend(batch);
        }
        assert_eq!(got, expected);

        // A coalesced run longer than the buffer is dropped whole, and said so.
        tx.send_to(&run, gro.local_addr().unwrap()).unwrap();
        let mut short = RecvBufs::new(4, 200);
        assert_eq!(recv_batch(&gro, &mut short).unwrap().count(), 0);
        assert_eq!(short.truncated(), 1);
    }

    #[test]
    fn blocking_socket_waits_for_one_then_times_out() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.send_to(b"x", rx.local_addr().unwrap()).unwrap();
        let mut bufs = RecvBufs::new(8, 64);
        let got: Vec<_> = recv_batch(&rx, &mut bufs).unwrap().map(|(_, p)| p.to_vec()).collect();
        assert_eq!(got, [b"x".to_vec()]);
        assert_eq!(recv_batch(&rx, &mut bufs).unwrap().count(), 0);
    }
}
