//! The few operating-system facts and levers the benchmark needs: CPU
//! pinning, the page cache state of the movie file, and resident memory.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

/// Pins the calling thread to core `want`, by default the last core (core 0
/// usually takes more of the interrupts), so the timed loops neither migrate
/// nor lose their caches midway. Returns the core.
pub fn pin(want: Option<usize>) -> Result<usize, String> {
    let cores = core_affinity::get_core_ids().ok_or("cannot list the CPU cores")?;
    let core = match want {
        Some(id) => *cores
            .iter()
            .find(|c| c.id == id)
            .ok_or_else(|| format!("no core {id} (this machine has {})", cores.len()))?,
        None => *cores.last().ok_or("no CPU cores listed")?,
    };
    if core_affinity::set_for_current(core) {
        Ok(core.id)
    } else {
        Err(format!("cannot pin to core {}", core.id))
    }
}

/// Fraction of `path`'s pages that are in the page cache.
pub fn cached_fraction(path: &Path) -> Result<f64, String> {
    let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let len = file.metadata().map_err(|e| e.to_string())?.len() as usize;
    if len == 0 {
        return Ok(1.0);
    }
    // SAFETY: a read-only mapping that is only passed to mincore, never read,
    // so a concurrent truncation cannot fault.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| e.to_string())?;
    let page = page_size();
    let pages = len.div_ceil(page);
    let mut vec = vec![0u8; pages];
    // SAFETY: the address is the page-aligned start of a live mapping of
    // `len` bytes, and `vec` has one byte per page of it, as mincore needs.
    let rc = unsafe { libc::mincore(map.as_ptr() as *mut libc::c_void, len, vec.as_mut_ptr()) };
    if rc != 0 {
        return Err(format!("mincore: {}", std::io::Error::last_os_error()));
    }
    Ok(vec.iter().filter(|&&b| b & 1 != 0).count() as f64 / pages as f64)
}

/// Asks the kernel to drop `path`'s pages from the page cache, so the next
/// open reads from the disk. Needs no privileges, unlike `drop_caches`; pages
/// still mapped somewhere stay, which `cached_fraction` then shows.
pub fn evict(path: &Path) -> Result<(), String> {
    let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    // Dirty pages cannot be dropped: write back a freshly made file first.
    file.sync_all().map_err(|e| format!("fsync: {e}"))?;
    // SAFETY: a plain syscall on a file descriptor that stays open across it.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if rc != 0 {
        return Err(format!("posix_fadvise: {}", std::io::Error::from_raw_os_error(rc)));
    }
    Ok(())
}

/// Resident memory of this process that is not backed by a file (heap,
/// stacks), in bytes: `resident - shared` from `/proc/self/statm`. A mapped
/// movie's pages count as shared, so this isolates what an open allocates.
pub fn anon_resident() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let mut fields = statm.split_whitespace().skip(1).map(|f| f.parse::<u64>().ok());
    let resident = fields.next()??;
    let shared = fields.next()??;
    Some(resident.saturating_sub(shared) * page_size() as u64)
}

fn page_size() -> usize {
    // SAFETY: sysconf only reads a constant of the running system.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).ok().filter(|&s| s > 0).unwrap_or(4096)
}

/// The load averages over 1, 5 and 15 minutes, as `/proc/loadavg` gives
/// them ("1.20 2.36 3.15"): on a shared machine, what else was running.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".into())
}

/// The 1-minute load average.
pub fn load1() -> f64 {
    load_average()
        .split_whitespace()
        .next()
        .and_then(|l| l.parse().ok())
        .unwrap_or(f64::NAN)
}

/// A line about the machine for the report: cores, CPU model, kernel.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel =
        std::fs::read_to_string("/proc/sys/kernel/osrelease").map_or_else(|_| "?".to_owned(), |s| s.trim().to_owned());
    format!("{cores} cores, {model}, Linux {kernel}")
}

/// User and system CPU time of one thread.
#[derive(Debug, Default, Clone, Copy)]
pub struct Cpu {
    pub user: std::time::Duration,
    pub sys: std::time::Duration,
}

impl Cpu {
    /// CPU time the calling thread has used so far.
    pub fn of_this_thread() -> Cpu {
        // SAFETY: an all-zero `rusage` is valid, and getrusage only writes into it.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `usage` is a live, writable `rusage`.
        let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
        if rc != 0 {
            return Cpu::default();
        }
        let tv = |t: libc::timeval| {
            std::time::Duration::from_secs(t.tv_sec as u64) + std::time::Duration::from_micros(t.tv_usec as u64)
        };
        Cpu {
            user: tv(usage.ru_utime),
            sys: tv(usage.ru_stime),
        }
    }

    pub fn total(&self) -> std::time::Duration {
        self.user + self.sys
    }

    /// The time used between `start` and `self`.
    pub fn since(self, start: Cpu) -> Cpu {
        Cpu {
            user: self.user - start.user,
            sys: self.sys - start.sys,
        }
    }

    pub fn add(&mut self, other: Cpu) {
        self.user += other.user;
        self.sys += other.sys;
    }
}

/// `dest` as the kernel's `sockaddr_in`, for the raw loops' prebuilt
/// messages; `None` for an IPv6 address.
pub fn sockaddr_v4(dest: std::net::SocketAddr) -> Option<libc::sockaddr_in> {
    let std::net::SocketAddr::V4(dest) = dest else {
        return None;
    };
    Some(libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: dest.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(dest.ip().octets()),
        },
        sin_zero: [0; 8],
    })
}
