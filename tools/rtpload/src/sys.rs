//! The system calls rtpload makes itself (UDP receive lives in the `net`
//! crate): readiness with `epoll`, the process's CPU time, and Ctrl-C.
//!
//! Why epoll and plain threads rather than an async runtime: each worker is
//! one loop over sans-IO state machines that already say what to write and
//! when to wake, so there is nothing for futures to add, and a level-
//! triggered poll over a few hundred sockets with one timer heap costs less
//! per session than a task each. glommio (the server's runtime) would also
//! need io_uring memory a client machine may not grant.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What a registered descriptor is waited for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interest {
    pub read: bool,
    pub write: bool,
}

impl Interest {
    pub const READ: Interest = Interest {
        read: true,
        write: false,
    };
    pub const READ_WRITE: Interest = Interest {
        read: true,
        write: true,
    };

    fn bits(self) -> u32 {
        let mut b = 0;
        if self.read {
            b |= libc::EPOLLIN | libc::EPOLLRDHUP;
        }
        if self.write {
            b |= libc::EPOLLOUT;
        }
        b as u32
    }
}

/// What a descriptor is ready for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readiness {
    pub token: u64,
    pub readable: bool,
    pub writable: bool,
    /// An error or hang-up: reading (or `SO_ERROR`) says which.
    pub error: bool,
}

/// A level-triggered epoll instance.
pub struct Poller {
    epoll: OwnedFd,
    events: Vec<libc::epoll_event>,
}

impl Poller {
    /// Room for `capacity` events per [`wait`](Poller::wait).
    pub fn new(capacity: usize) -> io::Result<Poller> {
        // SAFETY: no pointers are involved; the result is checked.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Poller {
            // SAFETY: `fd` is a new descriptor that nothing else owns.
            epoll: unsafe { OwnedFd::from_raw_fd(fd) },
            events: vec![libc::epoll_event { events: 0, u64: 0 }; capacity.max(1)],
        })
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: interest.bits(),
            u64: token,
        };
        // SAFETY: both descriptors are open for the call, and `ev` is a live
        // `epoll_event` the kernel only reads (for EPOLL_CTL_DEL it is
        // ignored).
        let rc = unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), op, fd, &mut ev) };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    pub fn add(&self, fd: &impl AsRawFd, token: u64, interest: Interest) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd.as_raw_fd(), token, interest)
    }

    pub fn modify(&self, fd: &impl AsRawFd, token: u64, interest: Interest) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd.as_raw_fd(), token, interest)
    }

    pub fn delete(&self, fd: &impl AsRawFd) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd.as_raw_fd(), 0, Interest::READ)
    }

    /// Waits up to `timeout` (rounded up to a millisecond) for readiness.
    pub fn wait(&mut self, timeout: Duration) -> io::Result<impl Iterator<Item = Readiness> + '_> {
        let ms = timeout.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as libc::c_int;
        // SAFETY: `events` is a live buffer of `events.len()` entries,
        // which is what the kernel is told it may fill.
        let rc = unsafe {
            libc::epoll_wait(
                self.epoll.as_raw_fd(),
                self.events.as_mut_ptr(),
                self.events.len() as libc::c_int,
                ms,
            )
        };
        let n = if rc >= 0 {
            rc as usize
        } else {
            let e = io::Error::last_os_error();
            // A signal (Ctrl-C) cut the wait short: nothing is ready.
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
            0
        };
        Ok(self.events[..n].iter().map(|ev| {
            let bits = ev.events as libc::c_int;
            Readiness {
                token: ev.u64,
                readable: bits & (libc::EPOLLIN | libc::EPOLLRDHUP) != 0,
                writable: bits & libc::EPOLLOUT != 0,
                error: bits & (libc::EPOLLERR | libc::EPOLLHUP) != 0,
            }
        }))
    }
}

/// CPU time this process has used so far: (user, system).
pub fn cpu_time() -> (Duration, Duration) {
    // SAFETY: an all-zero `rusage` is valid, and getrusage writes only
    // into the one it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a live `rusage` for the kernel to fill.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    if rc != 0 {
        return (Duration::ZERO, Duration::ZERO);
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec.max(0) as u64, (t.tv_usec.clamp(0, 999_999) * 1_000) as u32);
    (tv(usage.ru_utime), tv(usage.ru_stime))
}

/// The flag SIGINT and SIGTERM raise, for [`on_signal`]. It comes from
/// `Arc::into_raw` and is never released: a handler may read it at any time.
static STOP: AtomicPtr<AtomicBool> = AtomicPtr::new(ptr::null_mut());

/// Makes SIGINT and SIGTERM set `stop`, so that the sessions tear down and
/// the outputs are written; a second signal, or one after `stop` was already
/// raised, ends the process at once with status 130, for a user who does not
/// want to wait for the teardown.
pub fn stop_on_signals(stop: Arc<AtomicBool>) -> io::Result<()> {
    // A flag installed earlier stays allocated: a handler may still hold it.
    STOP.store(Arc::into_raw(stop).cast_mut(), Ordering::SeqCst);
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: an all-zero `sigaction` is valid (no flags, empty mask).
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART;
        // SAFETY: `action` is a live, initialised `sigaction` the call only
        // reads, and `on_signal` only does what a signal handler may.
        if unsafe { libc::sigaction(signal, &action, ptr::null_mut()) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Async-signal-safe: an atomic swap and `_exit`.
extern "C" fn on_signal(_: libc::c_int) {
    let stop = STOP.load(Ordering::SeqCst);
    // SAFETY: a non-null `STOP` came from `Arc::into_raw` and is never freed.
    if !stop.is_null() && unsafe { &*stop }.swap(true, Ordering::SeqCst) {
        // SAFETY: `_exit` is async-signal-safe and takes no pointers.
        unsafe { libc::_exit(130) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream, UdpSocket};
    use std::time::Instant;

    #[test]
    fn reports_readiness_by_token() {
        let mut p = Poller::new(8).unwrap();
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        p.add(&a, 1, Interest::READ).unwrap();
        p.add(&b, 2, Interest::READ).unwrap();
        let start = Instant::now();
        assert_eq!(p.wait(Duration::from_millis(20)).unwrap().count(), 0);
        assert!(start.elapsed() >= Duration::from_millis(19), "waited for the timeout");
        a.send_to(b"x", b.local_addr().unwrap()).unwrap();
        let ready: Vec<Readiness> = p.wait(Duration::from_secs(5)).unwrap().collect();
        assert_eq!(ready.len(), 1);
        assert_eq!((ready[0].token, ready[0].readable), (2, true));
        // Level-triggered: still ready until read.
        assert_eq!(p.wait(Duration::ZERO).unwrap().count(), 1);
        p.delete(&b).unwrap();
        assert_eq!(p.wait(Duration::ZERO).unwrap().count(), 0);
    }

    #[test]
    fn write_interest_and_hangup() {
        let mut p = Poller::new(8).unwrap();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        p.add(&c, 7, Interest::READ_WRITE).unwrap();
        let r: Vec<Readiness> = p.wait(Duration::from_secs(5)).unwrap().collect();
        assert_eq!((r[0].token, r[0].writable, r[0].readable), (7, true, false));
        p.modify(&c, 7, Interest::READ).unwrap();
        assert_eq!(p.wait(Duration::ZERO).unwrap().count(), 0);
        drop(s);
        let r: Vec<Readiness> = p.wait(Duration::from_secs(5)).unwrap().collect();
        assert!(r[0].readable, "EOF reads as readable");
        c.write_all(b"x").ok();
    }

    #[test]
    fn cpu_time_grows() {
        let (u0, s0) = cpu_time();
        let mut x = 0u64;
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(30) {
            x = x.wrapping_mul(31).wrapping_add(1);
        }
        std::hint::black_box(x);
        let (u1, s1) = cpu_time();
        assert!(u1 + s1 > u0 + s0);
    }

    #[test]
    fn a_signal_raises_the_stop_flag() {
        let stop = Arc::new(AtomicBool::new(false));
        stop_on_signals(stop.clone()).unwrap();
        // SAFETY: raising a signal this process handles; no pointers.
        assert_eq!(unsafe { libc::raise(libc::SIGTERM) }, 0);
        assert!(stop.load(Ordering::SeqCst));
    }
}
