//! Listening TCP sockets, for the RTSP ports.

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

/// The accept queue asked for (the kernel caps it at `net.core.somaxconn`):
/// room for a burst of clients connecting at once.
pub const LISTEN_BACKLOG: i32 = 1024;

/// Binds and listens on `addr`, as a blocking socket (io_uring and glommio's
/// `TcpListener::from_raw_fd` want nothing else).
///
/// Without `reuse_port` a port another socket listens on is an error
/// (`AddrInUse`), which is what an operator starting a second server by
/// mistake needs to hear. With it (`SO_REUSEPORT`), listeners that all ask
/// share the port and the kernel spreads new connections over them, as a
/// restart without downtime needs; every one of them must ask. Either way
/// `SO_REUSEADDR` is set, so a restarted server can bind while connections
/// of the old one linger in TIME_WAIT (it never lets two listeners share a
/// port on Linux). The unspecified IPv6 address listens for IPv4 as well.
pub fn bind_tcp_listener(addr: SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
    let context = |e: io::Error| io::Error::new(e.kind(), format!("binding TCP {addr}: {e}"));
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        sock.set_only_v6(false)?;
    }
    sock.set_reuse_address(true)?;
    if reuse_port {
        sock.set_reuse_port(true)?;
    }
    sock.bind(&addr.into()).map_err(context)?;
    sock.listen(LISTEN_BACKLOG).map_err(context)?;
    Ok(sock.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{Ipv4Addr, Ipv6Addr, TcpStream};

    fn local(port: u16) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, port))
    }

    #[test]
    fn a_port_in_use_is_refused_unless_every_listener_shares_it() {
        let first = bind_tcp_listener(local(0), false).unwrap();
        let port = first.local_addr().unwrap().port();
        let err = bind_tcp_listener(local(port), false).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        assert!(err.to_string().contains(&format!("127.0.0.1:{port}")), "{err}");
        // Asking to share is not enough when the first listener did not.
        assert_eq!(
            bind_tcp_listener(local(port), true).unwrap_err().kind(),
            io::ErrorKind::AddrInUse
        );
        drop(first);

        let a = bind_tcp_listener(local(0), true).unwrap();
        let port = a.local_addr().unwrap().port();
        let b = bind_tcp_listener(local(port), true).unwrap();
        assert_eq!(b.local_addr().unwrap().port(), port);
        // Both listen: connections are spread over them, and each accepts.
        let mut accepted = [0; 2];
        let (mut clients, mut served) = (Vec::new(), Vec::new());
        for _ in 0..64 {
            clients.push(TcpStream::connect(local(port)).unwrap());
        }
        for (i, l) in [&a, &b].into_iter().enumerate() {
            l.set_nonblocking(true).unwrap();
            while let Ok((s, _)) = l.accept() {
                accepted[i] += 1;
                served.push(s);
            }
        }
        assert_eq!(accepted[0] + accepted[1], 64);
        assert!(accepted.iter().all(|&n| n > 0), "{accepted:?}");
    }

    #[test]
    fn a_restart_binds_while_old_connections_linger() {
        let l = bind_tcp_listener(local(0), false).unwrap();
        let port = l.local_addr().unwrap().port();
        let mut client = TcpStream::connect(local(port)).unwrap();
        let (mut server_side, _) = l.accept().unwrap();
        server_side.write_all(b"x").unwrap();
        let mut byte = [0];
        client.read_exact(&mut byte).unwrap();
        // The server closes first: its side of the connection is left in
        // TIME_WAIT, on the listening port.
        drop(server_side);
        drop(l);
        assert_eq!(client.read(&mut byte).unwrap(), 0);
        drop(client);
        let again = bind_tcp_listener(local(port), false).unwrap();
        assert_eq!(again.local_addr().unwrap().port(), port);
    }

    #[test]
    fn the_unspecified_ipv6_address_takes_ipv4_too() {
        let l = bind_tcp_listener(SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)), false).unwrap();
        let port = l.local_addr().unwrap().port();
        let _client = TcpStream::connect(local(port)).unwrap();
        let (_, from) = l.accept().unwrap();
        assert_eq!(from.ip().to_canonical(), Ipv4Addr::LOCALHOST);
    }
}
