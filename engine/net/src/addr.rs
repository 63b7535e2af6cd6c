//! Socket addresses in the kernel's layout.

use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// A destination as `sockaddr_in` or `sockaddr_in6`, built once per distinct
/// destination of a batch rather than once per packet.
#[derive(Clone, Copy)]
pub(crate) enum RawAddr {
    V4(libc::sockaddr_in),
    V6(libc::sockaddr_in6),
}

impl RawAddr {
    pub(crate) fn new(addr: &SocketAddr) -> RawAddr {
        match addr {
            SocketAddr::V4(a) => RawAddr::V4(libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    // The octets are already in network order; keep them as they are in memory.
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            }),
            SocketAddr::V6(a) => RawAddr::V6(libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo().to_be(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            }),
        }
    }

    pub(crate) fn to_socket_addr(self) -> SocketAddr {
        match self {
            RawAddr::V4(a) => SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(a.sin_addr.s_addr.to_ne_bytes()),
                u16::from_be(a.sin_port),
            )),
            RawAddr::V6(a) => SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                u32::from_be(a.sin6_flowinfo),
                a.sin6_scope_id,
            )),
        }
    }

    /// Pointer and length for `msg_name`. The pointer is valid while `self` is
    /// neither moved nor dropped.
    pub(crate) fn as_name(&self) -> (*mut libc::c_void, libc::socklen_t) {
        match self {
            RawAddr::V4(a) => (
                a as *const libc::sockaddr_in as *mut libc::c_void,
                mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            ),
            RawAddr::V6(a) => (
                a as *const libc::sockaddr_in6 as *mut libc::c_void,
                mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            ),
        }
    }
}

/// The address the kernel wrote into `storage` (with `len` valid bytes), if
/// it is an IP one.
pub(crate) fn from_storage(storage: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match i32::from(storage.ss_family) {
        libc::AF_INET if len >= mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: `sockaddr_storage` is large enough and aligned for every
            // socket address type, and the family says the kernel wrote a
            // `sockaddr_in` (of the full length, checked above).
            let a = unsafe { &*(storage as *const libc::sockaddr_storage as *const libc::sockaddr_in) };
            let ip = Ipv4Addr::from(a.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(a.sin_port))))
        }
        libc::AF_INET6 if len >= mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for a `sockaddr_in6`.
            let a = unsafe { &*(storage as *const libc::sockaddr_storage as *const libc::sockaddr_in6) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                u32::from_be(a.sin6_flowinfo),
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(addr: SocketAddr) -> Option<SocketAddr> {
        let raw = RawAddr::new(&addr);
        // SAFETY: all-zero bytes are a valid `sockaddr_storage`.
        let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
        let (ptr, len) = raw.as_name();
        // SAFETY: `ptr` points at `len` bytes inside `raw`, and `storage` is
        // bigger than any `sockaddr_in6`.
        unsafe {
            std::ptr::copy_nonoverlapping(ptr as *const u8, &mut storage as *mut _ as *mut u8, len as usize);
        }
        from_storage(&storage, len)
    }

    #[test]
    fn addresses_round_trip() {
        for a in [
            "127.0.0.1:5004",
            "192.168.1.20:65535",
            "[::1]:6970",
            "[fe80::1%3]:1",
            "[::ffff:10.0.0.1]:9",
        ] {
            let addr: SocketAddr = a.parse().unwrap();
            assert_eq!(round_trip(addr), Some(addr), "{a}");
        }
    }
}
