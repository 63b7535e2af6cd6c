//! Batched receive for the RTCP socket.

use std::io;
use std::mem;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

use super::addr::from_storage;

/// Buffers for up to `count` datagrams of up to `size` bytes each, reused by
/// every [`recv_batch`] call.
pub struct RecvBufs {
    size: usize,
    data: Vec<u8>,
    iovs: Vec<libc::iovec>,
    addrs: Vec<libc::sockaddr_storage>,
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
            .field("truncated", &self.truncated)
            .finish()
    }
}

impl RecvBufs {
    /// Room for `count` datagrams of up to `size` bytes. Longer datagrams
    /// are dropped and counted by [`truncated`](RecvBufs::truncated).
    pub fn new(count: usize, size: usize) -> RecvBufs {
        let count = count.max(1);
        let mut bufs = RecvBufs {
            size,
            data: vec![0; count * size],
            iovs: Vec::with_capacity(count),
            // SAFETY: an all-zero `sockaddr_storage` is valid.
            addrs: vec![unsafe { mem::zeroed() }; count],
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
            bufs.hdrs.push(hdr);
        }
        bufs
    }

    /// Datagrams dropped so far because they were longer than `size`.
    pub fn truncated(&self) -> u64 {
        self.truncated
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
    for hdr in &mut bufs.hdrs {
        hdr.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        hdr.msg_hdr.msg_flags = 0;
        hdr.msg_len = 0;
    }
    let received = loop {
        // SAFETY: every `mmsghdr` points at its own `sockaddr_storage` (with
        // its size in `msg_namelen`) and at one iovec covering `size` bytes
        // of `data`, all owned by `bufs`, which is borrowed mutably for the
        // call. The kernel writes no more than those sizes.
        let n = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                bufs.hdrs.as_mut_ptr(),
                bufs.hdrs.len() as libc::c_uint,
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
    let truncated = bufs.hdrs[..received]
        .iter()
        .filter(|h| h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0)
        .count();
    bufs.truncated += truncated as u64;
    let bufs: &'b RecvBufs = bufs;
    Ok(bufs.hdrs[..received].iter().enumerate().filter_map(move |(i, h)| {
        if h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
            return None;
        }
        let from = from_storage(&bufs.addrs[i], h.msg_hdr.msg_namelen)?;
        let start = i * bufs.size;
        Some((from, &bufs.data[start..start + h.msg_len as usize]))
    }))
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
