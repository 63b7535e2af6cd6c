//! A shard's UDP socket pair.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::ops::RangeInclusive;
use std::os::fd::AsRawFd;

use socket2::{Domain, Protocol, Socket, Type};

/// Send buffer asked for on both sockets. A shard's tick can hand the kernel
/// hundreds of packets at once; the default (about 200 KiB) would turn a
/// burst into `EAGAIN`s. Best effort: without `CAP_NET_ADMIN` the kernel caps
/// it at `net.core.wmem_max`.
pub const SEND_BUFFER_BYTES: usize = 4 << 20;

/// Receive buffer asked for on the RTCP socket, which hears from every
/// client of the shard. Best effort, capped by `net.core.rmem_max`.
pub const RTCP_RECV_BUFFER_BYTES: usize = 1 << 20;

/// Raises the soft limit on open file descriptors to the hard limit, and
/// returns the limit now in force. Every RTSP connection is a descriptor,
/// and distributions start processes at a soft limit of 1,024, far below
/// what a streaming server holds.
pub fn raise_fd_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a live, writable `rlimit` for the call to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: `raised` is a valid `rlimit` that the call only reads.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(io::Error::last_os_error());
        }
        limit = raised;
    }
    Ok(limit.rlim_cur)
}

/// The RTP and RTCP sockets all sessions of one shard share. Clients are told
/// these as `server_port=rtp-rtcp`.
#[derive(Debug)]
pub struct UdpPair {
    pub rtp: UdpSocket,
    pub rtcp: UdpSocket,
}

impl UdpPair {
    /// The bound (RTP, RTCP) ports; RTCP is always RTP + 1.
    pub fn ports(&self) -> io::Result<(u16, u16)> {
        Ok((self.rtp.local_addr()?.port(), self.rtcp.local_addr()?.port()))
    }
}

/// Binds an even RTP port and the odd RTCP port above it (RFC 3550 section
/// 11), both inside `ports`, trying successive even ports until a pair is
/// free. Both sockets are non-blocking.
///
/// Binding the unspecified IPv6 address gives a dual-stack pair, so IPv4
/// clients are served from the same sockets.
pub fn bind_pair(ip: IpAddr, ports: RangeInclusive<u16>) -> io::Result<UdpPair> {
    let (first, last) = (*ports.start(), *ports.end());
    // Port 0 would mean "any": never a fixed pair.
    let mut rtp = first.max(2);
    rtp += rtp % 2;
    while rtp < last {
        match bind_one(SocketAddr::new(ip, rtp), false) {
            Ok(rtp_sock) => match bind_one(SocketAddr::new(ip, rtp + 1), true) {
                Ok(rtcp_sock) => {
                    return Ok(UdpPair {
                        rtp: rtp_sock,
                        rtcp: rtcp_sock,
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => {}
                Err(e) => return Err(with_context(e, ip, rtp + 1)),
            },
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {}
            Err(e) => return Err(with_context(e, ip, rtp)),
        }
        match rtp.checked_add(2) {
            Some(next) => rtp = next,
            None => break,
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        format!("no free UDP port pair (even RTP, RTP+1 for RTCP) in {first}-{last} on {ip}"),
    ))
}

fn with_context(e: io::Error, ip: IpAddr, port: u16) -> io::Error {
    io::Error::new(e.kind(), format!("binding UDP {}: {e}", SocketAddr::new(ip, port)))
}

fn bind_one(addr: SocketAddr, rtcp: bool) -> io::Result<UdpSocket> {
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        sock.set_only_v6(false)?;
    }
    sock.set_nonblocking(true)?;
    set_buffer(&sock, libc::SO_SNDBUFFORCE, SEND_BUFFER_BYTES, |s, n| {
        s.set_send_buffer_size(n)
    });
    if rtcp {
        set_buffer(&sock, libc::SO_RCVBUFFORCE, RTCP_RECV_BUFFER_BYTES, |s, n| {
            s.set_recv_buffer_size(n)
        });
    }
    sock.bind(&addr.into())?;
    Ok(sock.into())
}

/// Asks for a receive buffer of `bytes` on `sock`, past the sysctl cap when
/// privileged (best effort, as for the server's own sockets). A socket that
/// many streams arrive on, as a load client's, needs room for a burst.
pub fn set_recv_buffer(sock: &UdpSocket, bytes: usize) {
    set_buffer(&socket2::SockRef::from(sock), libc::SO_RCVBUFFORCE, bytes, |s, n| {
        s.set_recv_buffer_size(n)
    });
}

/// Asks for a buffer of `bytes`: first with the `*FORCE` option (honoured
/// for a privileged server, past the sysctl cap), then the ordinary one.
/// Failure is not an error; the socket works with a smaller buffer.
fn set_buffer(sock: &Socket, force: libc::c_int, bytes: usize, plain: fn(&Socket, usize) -> io::Result<()>) {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: the fd is open for the duration of the call, and the option
    // value is a live `c_int` whose size is passed along with it.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            force,
            &value as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        let _ = plain(sock, bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn the_fd_limit_is_raised_to_the_hard_limit() {
        let limit = raise_fd_limit().expect("getrlimit");
        let mut now = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: as in `raise_fd_limit`.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut now) }, 0);
        assert_eq!((now.rlim_cur, now.rlim_cur), (limit, now.rlim_max));
    }

    #[test]
    fn binds_even_odd_pair() {
        let pair = bind_pair(IpAddr::V4(Ipv4Addr::LOCALHOST), 30001..=40000).unwrap();
        let (rtp, rtcp) = pair.ports().unwrap();
        assert_eq!(rtp % 2, 0);
        assert_eq!(rtcp, rtp + 1);
        assert!((30002..=40000).contains(&rtp));
        // Non-blocking: an empty socket answers WouldBlock, not a hang.
        let mut buf = [0u8; 16];
        assert_eq!(
            pair.rtcp.recv_from(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
    }

    #[test]
    fn skips_taken_ports_and_fails_clearly() {
        let first = bind_pair(IpAddr::V4(Ipv4Addr::LOCALHOST), 40000..=45000).unwrap();
        let (rtp, _) = first.ports().unwrap();
        // Only `rtp..=rtp+3` allowed: the first pair is taken, so the next one is used.
        let second = bind_pair(IpAddr::V4(Ipv4Addr::LOCALHOST), rtp..=rtp + 3).unwrap();
        assert_eq!(second.ports().unwrap().0, rtp + 2);
        // Nothing left in the range.
        let err = bind_pair(IpAddr::V4(Ipv4Addr::LOCALHOST), rtp..=rtp + 3).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        assert!(err.to_string().contains("no free UDP port pair"), "{err}");
        // A range with no room for a pair at all.
        assert!(bind_pair(IpAddr::V4(Ipv4Addr::LOCALHOST), 7..=8).is_err());
    }

    #[test]
    fn receive_buffer_grows() {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let before = socket2::SockRef::from(&sock).recv_buffer_size().unwrap();
        set_recv_buffer(&sock, 4 * before);
        let after = socket2::SockRef::from(&sock).recv_buffer_size().unwrap();
        assert!(after > before, "{before} -> {after}");
    }

    #[test]
    fn binds_ipv6() {
        let pair = bind_pair(IpAddr::V6(Ipv6Addr::LOCALHOST), 45000..=50000).unwrap();
        let (rtp, rtcp) = pair.ports().unwrap();
        assert_eq!((rtp % 2, rtcp), (0, rtp + 1));
        assert!(pair.rtp.local_addr().unwrap().is_ipv6());
    }
}
