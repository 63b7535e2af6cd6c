//! The far end of a send benchmark: a thread on its own core that drains
//! loopback UDP sockets with `recvmmsg` and counts what arrives, so that a
//! sender's figures come with the loss a real receiver would see.

use std::net::UdpSocket;
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use net::{recv_batch, RecvBufs};

/// Datagrams per `recvmmsg`.
const BATCH: usize = 64;

/// A running receiver.
pub struct Receiver {
    received: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// A receiving socket on 0.0.0.0:`port` (0 for any), so that every
/// 127.0.0.x destination reaches it, with as large a receive buffer as the
/// system allows. Non-blocking (polled) unless `sleeps`; then blocking with a
/// short timeout, so the receiver still notices when to stop.
pub fn socket(port: u16, sleeps: bool) -> Result<UdpSocket, String> {
    socket_sized(port, sleeps, 64 << 20)
}

/// As [`socket`], asking for a receive buffer of `buffer` bytes (one of
/// tens of thousands of sockets needs less than the only one does).
pub fn socket_sized(port: u16, sleeps: bool, buffer: usize) -> Result<UdpSocket, String> {
    let rx = UdpSocket::bind(("0.0.0.0", port)).map_err(|e| format!("receiver socket on port {port}: {e}"))?;
    if sleeps {
        rx.set_read_timeout(Some(Duration::from_millis(50)))
            .map_err(|e| e.to_string())?;
    } else {
        rx.set_nonblocking(true).map_err(|e| e.to_string())?;
    }
    let _ = socket2::SockRef::from(&rx).set_recv_buffer_size(buffer);
    Ok(rx)
}

impl Receiver {
    /// Drains `sockets` in turn, `recvmmsg` of up to 64 datagrams of up to
    /// `size` bytes each, on a thread pinned to `core`, polling them without
    /// ever sleeping.
    pub fn start(sockets: Vec<UdpSocket>, core: usize, size: usize) -> Receiver {
        Receiver::spawn(sockets, core, size, Drain::Polling)
    }

    /// As [`start`](Receiver::start), but sleeping in `epoll_wait(2)` when
    /// every socket is empty, as rtpload does: the kernel then wakes it for
    /// the next datagram, in the sender's system call on loopback.
    pub fn start_sleeping(sockets: Vec<UdpSocket>, core: usize, size: usize) -> Receiver {
        Receiver::spawn(sockets, core, size, Drain::Sleeping)
    }

    /// As [`start_sleeping`](Receiver::start_sleeping), but reading what is
    /// ready every `interval` rather than when it arrives, as `rtpload
    /// --read-interval-ms` does: the receiver then sleeps in `nanosleep`, not
    /// on its sockets, so no arrival has a reader to wake and the sender
    /// pays for none.
    pub fn start_ticking(sockets: Vec<UdpSocket>, core: usize, size: usize, interval: Duration) -> Receiver {
        Receiver::spawn(sockets, core, size, Drain::Ticking(interval))
    }

    /// The receiver rtpload's `--read-interval-ms` matches: every
    /// `interval_ms`, or on arrival for 0.
    pub fn start_like_rtpload(sockets: Vec<UdpSocket>, core: usize, size: usize, interval_ms: u64) -> Receiver {
        match interval_ms {
            0 => Receiver::start_sleeping(sockets, core, size),
            ms => Receiver::start_ticking(sockets, core, size, Duration::from_millis(ms)),
        }
    }

    fn spawn(sockets: Vec<UdpSocket>, core: usize, size: usize, drain: Drain) -> Receiver {
        let received = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (received, stop) = (received.clone(), stop.clone());
            thread::spawn(move || {
                if let Err(e) = crate::os::pin(Some(core)) {
                    eprintln!("receiver: {e}");
                }
                let mut bufs = RecvBufs::new(BATCH, size);
                let result = match drain {
                    Drain::Polling => drain_polling(&sockets, &mut bufs, &received, &stop),
                    Drain::Sleeping => drain_epoll(&sockets, &mut bufs, &received, &stop, None),
                    Drain::Ticking(every) => drain_epoll(&sockets, &mut bufs, &received, &stop, Some(every)),
                };
                if let Err(e) = result {
                    eprintln!("receiver: {e}");
                }
            })
        };
        Receiver {
            received,
            stop,
            thread: Some(thread),
        }
    }

    /// Datagrams received so far.
    pub fn count(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Waits until nothing new has arrived for 200 ms, and returns the count.
    pub fn settle(&self) -> u64 {
        let mut last = self.count();
        loop {
            thread::sleep(Duration::from_millis(200));
            let now = self.count();
            if now == last {
                return now;
            }
            last = now;
        }
    }
}

/// How a receiver waits for datagrams.
#[derive(Clone, Copy)]
enum Drain {
    /// Never: it reads every socket in turn.
    Polling,
    /// In `epoll_wait`, woken by the next arrival.
    Sleeping,
    /// In `nanosleep` for the interval, then reads what is ready.
    Ticking(Duration),
}

/// Reads every socket in turn, never sleeping.
fn drain_polling(
    sockets: &[UdpSocket],
    bufs: &mut RecvBufs,
    received: &AtomicU64,
    stop: &AtomicBool,
) -> Result<(), String> {
    while !stop.load(Ordering::Relaxed) {
        for rx in sockets {
            let got = recv_batch(rx, bufs).map_err(|e| e.to_string())?;
            received.fetch_add(got.count() as u64, Ordering::Relaxed);
        }
    }
    Ok(())
}

/// Sleeps in `epoll_wait` until sockets are readable and reads those, as
/// rtpload's workers do: the kernel then wakes it, inside the sender's
/// system call on loopback, and with tens of thousands of sockets only the
/// readable ones cost it anything. With `tick`, it sleeps that long instead
/// and then asks epoll what is ready without waiting.
fn drain_epoll(
    sockets: &[UdpSocket],
    bufs: &mut RecvBufs,
    received: &AtomicU64,
    stop: &AtomicBool,
    tick: Option<Duration>,
) -> Result<(), String> {
    // SAFETY: epoll_create1 has no memory arguments; the descriptor it
    // returns is owned by `OwnedFd` below.
    let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if epfd < 0 {
        return Err(format!("epoll_create1: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: `epfd` is a descriptor this function just opened and owns.
    let epoll = unsafe { std::os::fd::OwnedFd::from_raw_fd(epfd) };
    for (i, rx) in sockets.iter().enumerate() {
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: i as u64,
        };
        // SAFETY: `event` is a live epoll_event for the call to read;
        // `rx` stays open as long as `sockets`, which outlives the loop.
        if unsafe { libc::epoll_ctl(epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, rx.as_raw_fd(), &mut event) } != 0 {
            return Err(format!("epoll_ctl: {}", std::io::Error::last_os_error()));
        }
    }
    if tick.is_some() {
        // Its reads run until a short batch; a blocking socket would hold
        // the last one up for its read timeout.
        for rx in sockets {
            rx.set_nonblocking(true).map_err(|e| e.to_string())?;
        }
    }
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    // Whether the last wait filled `events`: more is ready, so a ticking
    // receiver asks again before it sleeps.
    let mut more = false;
    while !stop.load(Ordering::Relaxed) {
        let wait_ms = match tick {
            Some(every) => {
                if !more {
                    thread::sleep(every);
                }
                0
            }
            None => 50,
        };
        // SAFETY: `events` is a live, writable array of `events.len()`
        // entries for the kernel to fill.
        let n = unsafe { libc::epoll_wait(epoll.as_raw_fd(), events.as_mut_ptr(), events.len() as i32, wait_ms) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("epoll_wait: {e}"));
        }
        more = n as usize == events.len();
        for event in &events[..n as usize] {
            let rx = &sockets[event.u64 as usize];
            // A tick's worth may be more than one batch.
            loop {
                let got = recv_batch(rx, bufs).map_err(|e| e.to_string())?.count();
                received.fetch_add(got as u64, Ordering::Relaxed);
                if tick.is_none() || got < BATCH {
                    break;
                }
            }
        }
    }
    Ok(())
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
