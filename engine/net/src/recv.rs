//! Batched receive: one `recvmmsg` for everything waiting on a socket, with
//! the kernel's receive time of each datagram when asked for.

use std::io;
use std::mem;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Duration;

use super::addr::from_storage;

/// Room for one `SCM_TIMESTAMPNS` control message, in words so that it is
/// aligned for `cmsghdr`.
// SAFETY: CMSG_SPACE is arithmetic on its argument.
const TIMESTAMP_CMSG_BYTES: usize = unsafe { libc::CMSG_SPACE(mem::size_of::<libc::timespec>() as u32) } as usize;
const TIMESTAMP_CMSG_WORDS: usize = TIMESTAMP_CMSG_BYTES.div_ceil(mem::size_of::<u64>());

/// Buffers for up to `count` datagrams of up to `size` bytes each, reused by
/// every [`recv_batch`] call.
pub struct RecvBufs {
    size: usize,
    data: Vec<u8>,
    iovs: Vec<libc::iovec>,
    addrs: Vec<libc::sockaddr_storage>,
    /// Control-message space per datagram, when made [`with_timestamps`](RecvBufs::with_timestamps).
    control: Vec<[u64; TIMESTAMP_CMSG_WORDS]>,
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
            .field("timestamps", &!self.control.is_empty())
            .field("truncated", &self.truncated)
            .finish()
    }
}

impl RecvBufs {
    /// Room for `count` datagrams of up to `size` bytes. Longer datagrams
    /// are dropped and counted by [`truncated`](RecvBufs::truncated).
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
            control: if timestamps {
                vec![[0; TIMESTAMP_CMSG_WORDS]; count]
            } else {
                Vec::new()
            },
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
            if let Some(control) = bufs.control.get_mut(i) {
                hdr.msg_hdr.msg_control = control.as_mut_ptr() as *mut libc::c_void;
            }
            bufs.hdrs.push(hdr);
        }
        bufs
    }

    /// Datagrams dropped so far because they were longer than `size`.
    pub fn truncated(&self) -> u64 {
        self.truncated
    }

    /// Fills the buffers with what is waiting on `sock`; returns how many
    /// headers the kernel filled.
    fn receive(&mut self, sock: &UdpSocket) -> io::Result<usize> {
        let controllen = if self.control.is_empty() {
            0
        } else {
            TIMESTAMP_CMSG_BYTES
        };
        for hdr in &mut self.hdrs {
            hdr.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            hdr.msg_hdr.msg_controllen = controllen as _;
            hdr.msg_hdr.msg_flags = 0;
            hdr.msg_len = 0;
        }
        let received = loop {
            // SAFETY: every `mmsghdr` points at its own `sockaddr_storage`
            // (with its size in `msg_namelen`), at one iovec covering `size`
            // bytes of `data`, and at either no control buffer or its own
            // `TIMESTAMP_CMSG_BYTES` of `control`, all owned by `self`, which
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

    /// The `i`th received datagram, unless it was truncated or has no IP
    /// source address.
    fn datagram(&self, i: usize) -> Option<(SocketAddr, &[u8])> {
        let h = &self.hdrs[i];
        if h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
            return None;
        }
        let from = from_storage(&self.addrs[i], h.msg_hdr.msg_namelen)?;
        let start = i * self.size;
        Some((from, &self.data[start..start + h.msg_len as usize]))
    }

    /// The receive time the kernel attached to the `i`th datagram.
    fn timestamp(&self, i: usize) -> Option<Duration> {
        let msg = &self.hdrs[i].msg_hdr;
        if self.control.is_empty() || msg.msg_flags & libc::MSG_CTRUNC != 0 {
            return None;
        }
        // SAFETY: `msg` is a header the kernel filled: `msg_control` points
        // at this datagram's control buffer and `msg_controllen` says how
        // much of it the kernel wrote (it never writes more than the room it
        // was given), which is what the CMSG_* walk stays within.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(msg);
            while !cmsg.is_null() {
                let c = &*cmsg;
                if c.cmsg_level == libc::SOL_SOCKET
                    && c.cmsg_type == libc::SCM_TIMESTAMPNS
                    && c.cmsg_len as usize >= libc::CMSG_LEN(mem::size_of::<libc::timespec>() as u32) as usize
                {
                    let ts = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const libc::timespec);
                    return Some(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32));
                }
                cmsg = libc::CMSG_NXTHDR(msg, cmsg);
            }
        }
        None
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
    Ok((0..received).filter_map(move |i| bufs.datagram(i)))
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
    Ok((0..received).filter_map(move |i| {
        let (from, data) = bufs.datagram(i)?;
        Some(Datagram {
            from,
            data,
            received: bufs.timestamp(i),
        })
    }))
}

/// Asks the kernel to timestamp every datagram `sock` receives
/// (`SO_TIMESTAMPNS`), for [`recv_batch_timestamped`].
pub fn enable_timestamps(sock: &UdpSocket) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: the fd is open for the duration of the call, and the option
    // value is a live `c_int` whose size is passed along with it.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            &on as *const libc::c_int as *const libc::c_void,
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
