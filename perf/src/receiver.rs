//! The far end of a send benchmark: a thread on its own core that drains
//! loopback UDP sockets with `recvmmsg` and counts what arrives, so that a
//! sender's figures come with the loss a real receiver would see.

use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use net::{recv_batch, RecvBufs};

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
    let rx = UdpSocket::bind(("0.0.0.0", port)).map_err(|e| format!("receiver socket on port {port}: {e}"))?;
    if sleeps {
        rx.set_read_timeout(Some(Duration::from_millis(50)))
            .map_err(|e| e.to_string())?;
    } else {
        rx.set_nonblocking(true).map_err(|e| e.to_string())?;
    }
    let _ = socket2::SockRef::from(&rx).set_recv_buffer_size(64 << 20);
    Ok(rx)
}

impl Receiver {
    /// Drains `sockets` in turn, `recvmmsg` of up to 64 datagrams of up to
    /// `size` bytes each, on a thread pinned to `core`, polling them without
    /// ever sleeping.
    pub fn start(sockets: Vec<UdpSocket>, core: usize, size: usize) -> Receiver {
        Receiver::spawn(sockets, core, size, false)
    }

    /// As [`start`](Receiver::start), but sleeping in `poll(2)` when every
    /// socket is empty, as a real client does: the kernel then wakes it for
    /// the next datagram, in the sender's system call on loopback.
    pub fn start_sleeping(sockets: Vec<UdpSocket>, core: usize, size: usize) -> Receiver {
        Receiver::spawn(sockets, core, size, true)
    }

    fn spawn(sockets: Vec<UdpSocket>, core: usize, size: usize, sleeps: bool) -> Receiver {
        let received = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (received, stop) = (received.clone(), stop.clone());
            thread::spawn(move || {
                if let Err(e) = crate::os::pin(Some(core)) {
                    eprintln!("receiver: {e}");
                }
                let mut bufs = RecvBufs::new(64, size);
                let mut fds: Vec<libc::pollfd> = sockets
                    .iter()
                    .map(|s| libc::pollfd {
                        fd: s.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    })
                    .collect();
                while !stop.load(Ordering::Relaxed) {
                    if sleeps {
                        // SAFETY: `fds` is a live array of `fds.len()`
                        // pollfds whose descriptors `sockets` keeps open.
                        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 50) };
                    }
                    for rx in &sockets {
                        match recv_batch(rx, &mut bufs) {
                            Ok(got) => {
                                received.fetch_add(got.count() as u64, Ordering::Relaxed);
                            }
                            Err(e) => {
                                eprintln!("receiver: {e}");
                                return;
                            }
                        }
                    }
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

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
