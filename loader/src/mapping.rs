//! Read-only file mappings, shared by every kind of media file, and the
//! guard that keeps a file changed under its mapping from killing the
//! process.
//!
//! # Files that change under a mapping
//! A mapping shows the file as it is now, not as it was when mapped. When
//! another process truncates the file, touching a page past the new end
//! raises SIGBUS, which kills a server by default; when it rewrites the file
//! in place, the bytes change under the index built from them. (Replacing a
//! file by renaming a new one over it is safe: the old inode, and so the
//! mapping, lives on until unmapped.)
//!
//! Every mapping made here is registered in a fixed table that a signal
//! handler can read without locks or allocation. With
//! [`install_sigbus_guard`], a SIGBUS inside a registered mapping marks that
//! mapping damaged and maps anonymous zero pages over it from the faulting
//! page to its end (`MAP_FIXED`), so the faulting read is retried and reads
//! zeros, and so does every later one (by the process, or by the kernel
//! reading payload for `sendmsg`, which would otherwise fail with EFAULT).
//! Callers see [`Guard::is_damaged`] and stop using the mapping: a shard
//! ends the sessions of a damaged movie, and the library indexes the file
//! anew for new ones. [`Guard::check_file`] notices the same from a `stat`
//! before a fault happens (a shrunk or rewritten file), and zero-maps the
//! tail past the new end so that no one faults on it at all.
//!
//! A SIGBUS outside every registered mapping is not ours: the handler puts
//! back the previous disposition and returns, so the fault happens again
//! and ends the process as it would have.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Mutex, Once};

use bytes::Bytes;

/// Mappings registered at once; more are mapped unguarded (with a warning
/// on stderr once), as before.
const SLOTS: usize = 4096;

struct Slot {
    /// 0 when free.
    start: AtomicUsize,
    len: AtomicUsize,
    damaged: AtomicBool,
}

#[allow(clippy::declare_interior_mutable_const)]
const FREE: Slot = Slot {
    start: AtomicUsize::new(0),
    len: AtomicUsize::new(0),
    damaged: AtomicBool::new(false),
};
static TABLE: [Slot; SLOTS] = [FREE; SLOTS];
/// Slots are taken and given back under this lock (never taken by the
/// handler, which only reads the atomics).
static TAKE: Mutex<()> = Mutex::new(());
/// Whether the guard is installed: 0 no, 1 yes.
static INSTALLED: AtomicU8 = AtomicU8::new(0);
/// The previous action, copied where the handler can read it without a lock.
static mut PREVIOUS_RAW: std::mem::MaybeUninit<libc::sigaction> = std::mem::MaybeUninit::uninit();
static INSTALL: Once = Once::new();

/// A registered mapping's entry in the table; good while the mapping's
/// `Bytes` live (its holder keeps both).
#[derive(Debug)]
pub(crate) struct Guard {
    slot: usize,
    start: usize,
    len: usize,
    /// The file's identity when mapped: (device, inode, size, mtime ns).
    stamp: Option<(u64, u64, u64, i128)>,
}

impl Guard {
    /// Whether the file changed under the mapping (a fault past its end,
    /// or [`Guard::check_file`] saw it shrink or change in place).
    #[inline]
    pub fn is_damaged(&self) -> bool {
        TABLE[self.slot].damaged.load(Ordering::Relaxed)
    }

    /// Compares the file at `path` with the one mapped: if it is the same
    /// inode but shorter or modified, the mapping is marked damaged and its
    /// pages past the new end are replaced by zeros. Returns whether it is
    /// damaged. A file replaced by rename (another inode) or removed leaves
    /// the mapping as good as it was.
    pub fn check_file(&self, path: &Path) -> bool {
        if self.is_damaged() {
            return true;
        }
        let (Some((dev, ino, len, mtime)), Ok(meta)) = (self.stamp, std::fs::metadata(path)) else {
            return false;
        };
        let now = stamp_of(&meta);
        if (now.0, now.1) != (dev, ino) || (now.2, now.3) == (len, mtime) {
            return false;
        }
        if now.2 < len {
            let page = page_size();
            let keep = (now.2 as usize).div_ceil(page) * page;
            if keep < self.len {
                zero_tail(self.start + keep, self.start + self.len);
            }
        }
        TABLE[self.slot].damaged.store(true, Ordering::Relaxed);
        true
    }
}

/// The owner of a guarded mapping: unregisters it before unmapping.
struct GuardedMap {
    map: memmap2::Mmap,
    slot: Option<usize>,
}

impl AsRef<[u8]> for GuardedMap {
    fn as_ref(&self) -> &[u8] {
        &self.map
    }
}

impl Drop for GuardedMap {
    fn drop(&mut self) {
        if let Some(slot) = self.slot {
            let _lock = TAKE.lock();
            TABLE[slot].start.store(0, Ordering::SeqCst);
            TABLE[slot].len.store(0, Ordering::SeqCst);
            TABLE[slot].damaged.store(false, Ordering::SeqCst);
        }
    }
}

/// Maps the file at `path` read-only, as one `Bytes` that owns the mapping;
/// `error` makes the caller's error from the path and what went wrong.
pub(crate) fn map<E>(path: &Path, error: impl FnOnce(PathBuf, io::Error) -> E) -> Result<Bytes, E> {
    map_guarded(path).map(|(b, _)| b).map_err(|e| error(path.to_owned(), e))
}

/// As [`map`], with the mapping's [`Guard`] (`None` for an empty file or a
/// full table).
pub(crate) fn map_with_guard<E>(
    path: &Path,
    error: impl FnOnce(PathBuf, io::Error) -> E,
) -> Result<(Bytes, Option<Guard>), E> {
    map_guarded(path).map_err(|e| error(path.to_owned(), e))
}

fn map_guarded(path: &Path) -> io::Result<(Bytes, Option<Guard>)> {
    let file = File::open(path)?;
    let meta = file.metadata()?;
    if meta.len() == 0 {
        return Ok((Bytes::new(), None));
    }
    // SAFETY: the mapping is read-only and private to this process's view;
    // the file is only read through it. A file truncated meanwhile by
    // another process is what the guard above is for.
    let map = unsafe { memmap2::Mmap::map(&file) }?;
    let start = map.as_ptr() as usize;
    let len = map.len();
    let slot = {
        let _lock = TAKE.lock();
        let free = TABLE.iter().position(|s| s.start.load(Ordering::SeqCst) == 0);
        if let Some(i) = free {
            TABLE[i].damaged.store(false, Ordering::SeqCst);
            TABLE[i].len.store(len, Ordering::SeqCst);
            TABLE[i].start.store(start, Ordering::SeqCst);
        }
        free
    };
    let guard = slot.map(|slot| Guard {
        slot,
        start,
        len,
        stamp: Some(stamp_of(&meta)),
    });
    Ok((Bytes::from_owner(GuardedMap { map, slot }), guard))
}

fn stamp_of(meta: &std::fs::Metadata) -> (u64, u64, u64, i128) {
    use std::os::unix::fs::MetadataExt as _;
    (
        meta.dev(),
        meta.ino(),
        meta.len(),
        i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
    )
}

fn page_size() -> usize {
    // SAFETY: sysconf reads a constant of the system; no memory is passed.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as usize
    } else {
        4096
    }
}

/// Maps zero pages over `[from, to)`, both page-aligned (`to` may be the
/// unaligned end of a mapping: the kernel rounds the length up). Returns
/// whether it worked. Only the system call: callable from a signal handler.
fn zero_tail(from: usize, to: usize) -> bool {
    if to <= from {
        return true;
    }
    // SAFETY: `[from, to)` lies inside one mapping this module made and
    // still owns (its slot is registered, so its owner has not unmapped it).
    // MAP_FIXED replaces those pages of it, atomically for other threads,
    // by private anonymous zero pages with the same protection; the
    // mapping's owner unmaps the whole range when dropped, both kinds of
    // page alike. Readers see the file's bytes or zeros, never a hole.
    let p = unsafe {
        libc::mmap(
            from as *mut libc::c_void,
            to - from,
            libc::PROT_READ,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
            -1,
            0,
        )
    };
    p != libc::MAP_FAILED
}

/// Installs the SIGBUS handler that turns a fault in a guarded mapping into
/// zeros and a damaged mark (see the module documentation). Idempotent.
pub fn install_sigbus_guard() -> io::Result<()> {
    let mut result = Ok(());
    INSTALL.call_once(|| {
        // SAFETY: a zeroed `sigaction` is a valid empty one; the handler has
        // the three-argument signature SA_SIGINFO asks for; `old` is written
        // by the kernel before it is read.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_sigbus as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_NODEFER;
            libc::sigemptyset(&mut action.sa_mask);
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGBUS, &action, &mut old) != 0 {
                result = Err(io::Error::last_os_error());
                return;
            }
            std::ptr::addr_of_mut!(PREVIOUS_RAW).write(std::mem::MaybeUninit::new(old));
        }
        INSTALLED.store(1, Ordering::SeqCst);
    });
    result
}

/// Whether [`install_sigbus_guard`] has run.
pub fn sigbus_guard_installed() -> bool {
    INSTALLED.load(Ordering::SeqCst) == 1
}

extern "C" fn on_sigbus(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers;
    // `si_addr` is the faulting address for SIGBUS.
    let addr = unsafe { (*info).si_addr() } as usize;
    // Only atomics, arithmetic and the mmap system call below: nothing that
    // locks or allocates, as a signal handler must.
    for slot in TABLE.iter() {
        let start = slot.start.load(Ordering::SeqCst);
        let len = slot.len.load(Ordering::SeqCst);
        if start == 0 || addr < start || addr >= start + len {
            continue;
        }
        let page = page_size();
        let from = addr & !(page - 1);
        slot.damaged.store(true, Ordering::SeqCst);
        if zero_tail(from.max(start), start + len) {
            // Returning retries the read, which now finds a zero page.
            return;
        }
        break;
    }
    // Not a guarded mapping (or the remap failed): put back what was there
    // before and return, so the fault recurs and is handled as it would
    // have been without the guard (by default, the process ends).
    // SAFETY: PREVIOUS_RAW was written before the handler was installed;
    // sigaction is async-signal-safe.
    unsafe {
        let old = std::ptr::addr_of!(PREVIOUS_RAW).read().assume_init();
        libc::sigaction(libc::SIGBUS, &old, std::ptr::null_mut());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_truncated_file_reads_zeros_and_is_marked() {
        install_sigbus_guard().unwrap();
        let dir = std::env::temp_dir().join(format!("streamalot-guard-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("file");
        let page = page_size();
        std::fs::write(&path, vec![7u8; page * 4]).unwrap();
        let (bytes, guard) = map_guarded(&path).unwrap();
        let guard = guard.expect("registered");
        assert!(!guard.is_damaged());
        assert_eq!(bytes[page * 3], 7);
        // Truncated in place to one page and a bit: a read past the end
        // faults, and the handler turns it into zeros.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(page as u64 + 10)
            .unwrap();
        let far = std::hint::black_box(&bytes[..])[page * 3 + 5];
        assert_eq!(far, 0);
        assert!(guard.is_damaged());
        assert_eq!(bytes[5], 7, "what is still in the file reads as before");
        drop(bytes);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn check_file_sees_a_shrink_but_not_a_rename() {
        let dir = std::env::temp_dir().join(format!("streamalot-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("file");
        let page = page_size();
        std::fs::write(&path, vec![1u8; page * 3]).unwrap();
        let (bytes, guard) = map_guarded(&path).unwrap();
        let guard = guard.unwrap();
        assert!(!guard.check_file(&path));
        let other = dir.join("other");
        std::fs::write(&other, b"new").unwrap();
        std::fs::rename(&other, &path).unwrap();
        assert!(!guard.check_file(&path), "a rename leaves the old mapping whole");
        assert_eq!(bytes[page * 2], 1);
        drop((bytes, guard));

        std::fs::write(&path, vec![1u8; page * 3]).unwrap();
        let (bytes, guard) = map_guarded(&path).unwrap();
        let guard = guard.unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(10)
            .unwrap();
        assert!(guard.check_file(&path));
        assert!(guard.is_damaged());
        // Zero-mapped already: no fault, no handler needed.
        assert_eq!(std::hint::black_box(&bytes[..])[page * 2], 0);
        drop(bytes);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
