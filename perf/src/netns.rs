//! A client on the far side of a link: a network namespace of the
//! benchmark's own, reached over a veth pair whose receiving end does its
//! work on the client's core, as a network card and another machine would.
//!
//! On loopback the kernel runs a datagram's whole receive path (the UDP
//! lookup, the socket queue, the segmentation of a GSO run for a socket
//! that did not ask for GRO) inside the sender's `sendmsg`, so a server on
//! loopback pays for its client's kernel work. A plain veth pair does the
//! same. A veth end with NAPI does not: the sender only puts the buffer on
//! the peer's ring, and the peer's NAPI poll, here a kernel thread pinned
//! to the client's core, receives it. Three settings make that happen on
//! this kernel (6.x):
//!
//! - GRO on the client's end gives it a NAPI context; threaded NAPI runs
//!   that context in a kernel thread, which is pinned to the client core.
//!   The poll thread runs at normal priority with the shortest time slice
//!   the scheduler takes (100 µs, Linux 6.12's EEVDF slices), so that when
//!   it wakes it preempts rtpload rather than waiting out rtpload's slice
//!   while its ring of 256 buffers (1.5 ms of 4,000 sessions) fills. Made
//!   real-time it starved rtpload on the same core instead, which then lost
//!   a tenth of 6,000 sessions' packets. (Four queues, four rings and four
//!   poll threads, held 4,000 sessions without loss but cost the client's
//!   core and the sender more, and lost more at 6,000: see perf/RESULTS.md.)
//! - TSO off on the server's end: veth takes the NAPI path only for buffers
//!   it may aggregate, and with TSO on it counts a local socket's datagrams
//!   as not (`veth_skb_is_eligible_for_gro`). UDP GSO is a separate feature
//!   and stays on, so the server's GSO runs cross whole, to be split on the
//!   client's core, as a card with UDP segmentation offload splits them.
//! - Interrupt moderation (`napi_defer_hard_irqs`, `gro_flush_timeout`
//!   50 µs, like a card's `rx-usecs`): without it every datagram that found
//!   the poll thread asleep woke it with an interprocessor interrupt from
//!   the sender, a fifth of the sender's core in this guest.
//!
//! And one setting of the whole machine: `net.core.skb_defer_max` 0, for as
//! long as the namespace lives. Otherwise the receiving core hands every
//! freed buffer back to the core that allocated it, by interprocessor
//! interrupt, another fifth of the sender's core; a card frees a sent
//! buffer on the sender's core without one. The old value is put back when
//! the namespace goes.
//!
//! Needs root, `ip` (iproute2), `ethtool` and `taskset`.

use std::ffi::CString;
use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

const SKB_DEFER_MAX: &str = "/proc/sys/net/core/skb_defer_max";

/// The time slice asked for the link's poll thread: the least the scheduler
/// allows.
const POLL_SLICE: Duration = Duration::from_micros(100);

/// The namespace, its link and the addresses of both ends. Dropping it
/// deletes the namespace (and with it the link) and restores the sysctl.
#[derive(Debug)]
pub struct ClientNet {
    name: String,
    /// The server's end, in the benchmark's own namespace.
    pub server_ip: Ipv4Addr,
    /// The client's end, inside the namespace.
    pub client_ip: Ipv4Addr,
    /// The server's end of the link.
    server_dev: String,
    saved_defer_max: Option<String>,
}

/// Where datagrams to the client were dropped, counted since the link was
/// made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drops {
    /// By the link: the client end's ring (256 buffers) was full because
    /// its poll thread had not run.
    pub link: u64,
    /// By the client's sockets: a receive buffer was full (UDP
    /// `RcvbufErrors` in the namespace).
    pub sockets: u64,
}

impl Drops {
    /// What was dropped after `before` was counted.
    pub fn since(self, before: Drops) -> Drops {
        Drops {
            link: self.link - before.link,
            sockets: self.sockets - before.sockets,
        }
    }
}

impl std::fmt::Display for Drops {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} dropped by the link, {} by the client's sockets",
            self.link, self.sockets
        )
    }
}

impl ClientNet {
    /// Makes the namespace and the link, with the client's end receiving on
    /// `client_core`.
    pub fn create(client_core: usize) -> Result<ClientNet, String> {
        let pid = std::process::id();
        // Names and a /30 of their own per process, so two runs never meet;
        // 198.18.0.0/15 is the block set aside for benchmarks (RFC 2544).
        let slot = pid % (1 << 14);
        let base = u32::from(Ipv4Addr::new(198, 18, 0, 0)) + slot * 4;
        let name = format!("streamalot-bench-{pid}");
        run("ip", &["netns", "add", &name])?;
        // From here on, a failure drops `net`, which deletes what was made.
        let mut net = ClientNet {
            name,
            server_ip: Ipv4Addr::from(base + 1),
            client_ip: Ipv4Addr::from(base + 2),
            server_dev: format!("sab{slot}s"),
            saved_defer_max: None,
        };
        let (server_dev, client_dev) = (net.server_dev.clone(), format!("sab{slot}c"));
        let ns = net.name.clone();
        let server_cidr = format!("{}/30", net.server_ip);
        let client_cidr = format!("{}/30", net.client_ip);
        run(
            "ip",
            &[
                "link",
                "add",
                &server_dev,
                "type",
                "veth",
                "peer",
                "name",
                &client_dev,
                "netns",
                &ns,
            ],
        )?;
        run("ip", &["addr", "add", &server_cidr, "dev", &server_dev])?;
        run("ip", &["link", "set", &server_dev, "up"])?;
        run("ip", &["-n", &ns, "addr", "add", &client_cidr, "dev", &client_dev])?;
        run("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
        run("ip", &["-n", &ns, "link", "set", &client_dev, "up"])?;
        run("ethtool", &["-K", &server_dev, "tso", "off"])?;
        run("ip", &["netns", "exec", &ns, "ethtool", "-K", &client_dev, "gro", "on"])?;
        // sysfs inside the namespace shows its own devices only.
        let sysfs = format!(
            "echo 1 > /sys/class/net/{client_dev}/threaded && \
             echo 1000 > /sys/class/net/{client_dev}/napi_defer_hard_irqs && \
             echo 50000 > /sys/class/net/{client_dev}/gro_flush_timeout"
        );
        run("ip", &["netns", "exec", &ns, "sh", "-c", &sysfs])?;
        let poller = napi_thread(&client_dev)?;
        run("taskset", &["-pc", &client_core.to_string(), &poller.to_string()])?;
        if let Err(e) = set_slice(poller, POLL_SLICE) {
            // Before Linux 6.12 a normal thread's slice is the kernel's.
            eprintln!("capacity-bench: the link's poll thread keeps the kernel's time slice: {e}");
        }
        let old = std::fs::read_to_string(SKB_DEFER_MAX).map_err(|e| format!("{SKB_DEFER_MAX}: {e}"))?;
        undo_on_signal(&net.name, old.trim());
        std::fs::write(SKB_DEFER_MAX, "0").map_err(|e| format!("{SKB_DEFER_MAX}: {e}"))?;
        net.saved_defer_max = Some(old.trim().to_owned());
        Ok(net)
    }

    /// The namespace's name (`ip netns list` shows it while it lives).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `program` to be run inside the namespace.
    pub fn command(&self, program: &std::path::Path) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).arg(program);
        command
    }

    /// The datagrams to the client dropped so far, and where.
    pub fn drops(&self) -> Result<Drops, String> {
        let path = format!("/sys/class/net/{}/statistics/tx_dropped", self.server_dev);
        let link = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
        let link = link.trim().parse().map_err(|e| format!("{path}: {e}"))?;
        // /proc/thread-self/net is the namespace of the thread that reads it.
        let snmp = self.within(|| {
            std::fs::read_to_string("/proc/thread-self/net/snmp").map_err(|e| format!("the namespace's snmp: {e}"))
        })?;
        Ok(Drops {
            link,
            sockets: udp_counter(&snmp, "RcvbufErrors").ok_or("no Udp RcvbufErrors in the namespace's snmp")?,
        })
    }

    /// Runs `make` on a thread that has entered the namespace, for sockets
    /// that belong to it (a socket keeps the namespace it was made in).
    pub fn within<T: Send + 'static>(
        &self,
        make: impl FnOnce() -> Result<T, String> + Send + 'static,
    ) -> Result<T, String> {
        let path = format!("/run/netns/{}", self.name);
        let file = File::open(&path).map_err(|e| format!("{path}: {e}"))?;
        thread::spawn(move || {
            // SAFETY: a plain syscall on a descriptor that stays open across
            // it; it moves only this thread, which ends after `make`.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(format!("setns: {}", std::io::Error::last_os_error()));
            }
            make()
        })
        .join()
        .map_err(|_| "the namespace's thread panicked".to_owned())?
    }
}

impl Drop for ClientNet {
    fn drop(&mut self) {
        for sig in [libc::SIGINT, libc::SIGTERM] {
            // SAFETY: a plain syscall; the handler it replaces undoes what
            // this drop is about to undo.
            unsafe { libc::signal(sig, libc::SIG_DFL) };
        }
        if let Some(old) = &self.saved_defer_max {
            if let Err(e) = std::fs::write(SKB_DEFER_MAX, old) {
                eprintln!("cannot restore {SKB_DEFER_MAX} to {old}: {e}");
            }
        }
        // Deleting the namespace deletes the client's end, and with it the pair.
        if let Err(e) = run("ip", &["netns", "del", &self.name]) {
            eprintln!("{e}");
        }
    }
}

/// What undoes a [`ClientNet`] from a signal handler, made beforehand.
struct Undo {
    sysctl: CString,
    old: Vec<u8>,
    mount: CString,
}

static UNDO: OnceLock<Undo> = OnceLock::new();

/// An interrupted run (Ctrl-C, SIGTERM) puts the sysctl back and unmounts
/// the namespace, whose last reference then goes with its processes (the
/// link with it), before dying of the signal as it would have.
fn undo_on_signal(name: &str, old: &str) {
    let undo = Undo {
        sysctl: CString::new(SKB_DEFER_MAX).expect("no NUL"),
        old: old.as_bytes().to_vec(),
        mount: CString::new(format!("/run/netns/{name}")).expect("no NUL in a namespace name"),
    };
    if UNDO.set(undo).is_err() {
        return; // one namespace a process
    }
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: installs a handler that makes only async-signal-safe calls.
        unsafe { libc::signal(sig, undo_and_die as extern "C" fn(libc::c_int) as libc::sighandler_t) };
    }
}

extern "C" fn undo_and_die(sig: libc::c_int) {
    if let Some(undo) = UNDO.get() {
        // SAFETY: open, write, close, umount2 and unlink are async-signal-safe,
        // and every buffer was made before the handler was installed.
        unsafe {
            let fd = libc::open(undo.sysctl.as_ptr(), libc::O_WRONLY);
            if fd >= 0 {
                libc::write(fd, undo.old.as_ptr().cast(), undo.old.len());
                libc::close(fd);
            }
            libc::umount2(undo.mount.as_ptr(), libc::MNT_DETACH);
            libc::unlink(undo.mount.as_ptr());
        }
    }
    // SAFETY: signal and raise are async-signal-safe; the default action
    // ends the process as the signal would have without this handler.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

/// The kernel thread that polls `dev`'s NAPI context ("napi/DEV-ID"),
/// which threaded NAPI starts when the device is up.
fn napi_thread(dev: &str) -> Result<u32, String> {
    let prefix = format!("napi/{dev}-");
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        for entry in std::fs::read_dir("/proc").map_err(|e| e.to_string())?.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if std::fs::read_to_string(entry.path().join("comm")).is_ok_and(|c| c.starts_with(&prefix)) {
                return Ok(pid);
            }
        }
        if Instant::now() > deadline {
            return Err(format!(
                "no NAPI thread for {dev}: does this kernel's veth take threaded NAPI?"
            ));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Asks for a time slice of `slice` for the normal-priority thread `pid`
/// (EEVDF: a shorter slice is an earlier deadline, which lets the thread
/// preempt the running one when it wakes).
fn set_slice(pid: u32, slice: Duration) -> Result<(), String> {
    let attr = libc::sched_attr {
        size: std::mem::size_of::<libc::sched_attr>() as u32,
        sched_policy: libc::SCHED_OTHER as u32,
        sched_flags: 0,
        sched_nice: 0,
        sched_priority: 0,
        sched_runtime: slice.as_nanos() as u64,
        sched_deadline: 0,
        sched_period: 0,
    };
    // SAFETY: sched_setattr reads `attr.size` bytes of `attr`, a live value
    // of that size, and keeps no pointer to it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_sched_setattr,
            pid as libc::pid_t,
            &attr as *const libc::sched_attr,
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().to_string())
    }
}

/// A counter of the `Udp:` lines of /proc/net/snmp (a line of names, then
/// a line of values).
fn udp_counter(snmp: &str, name: &str) -> Option<u64> {
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp: "));
    let (names, values) = (udp.next()?, udp.next()?);
    let at = names.split_whitespace().position(|n| n == name)?;
    values.split_whitespace().nth(at)?.parse().ok()
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program).args(args).output().map_err(|e| {
        format!("cannot run {program} (the client namespace needs root, iproute2, ethtool and taskset): {e}")
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_udp_counters_are_read_by_name() {
        let snmp = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
                    Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\n\
                    Udp: 1294661 0 79577 12 79577 3\n\
                    UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\n\
                    UdpLite: 0 0 0 0 0 0\n";
        assert_eq!(udp_counter(snmp, "RcvbufErrors"), Some(79577));
        assert_eq!(udp_counter(snmp, "SndbufErrors"), Some(3));
        assert_eq!(udp_counter(snmp, "InCsumErrors"), None);
        assert_eq!(udp_counter("Ip: Forwarding\nIp: 1\n", "RcvbufErrors"), None);
    }
}
