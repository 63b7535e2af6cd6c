//! A small io_uring of the sender's own, for handing a batch's messages to
//! the kernel as `IORING_OP_SENDMSG` entries: one `io_uring_enter` per
//! round (per [`RING_ENTRIES`] messages) instead of one `sendmmsg`.
//!
//! The ring is separate from the runtime's (glommio has its own): the
//! shard's sends are synchronous, complete within the submitting call, and
//! must never be left in flight across an `.await`, so they are kept out of
//! a ring that other tasks' IO shares.
//!
//! Every message is sent with `MSG_DONTWAIT`, which io_uring takes as "do
//! not wait for room" (the request fails with `EAGAIN` rather than being
//! parked until the socket is writable), so each entry completes while the
//! kernel issues it, inside the submitting call, as `sendmmsg` would. Unlike
//! `sendmmsg`, each message gets its own result: a refused message does not
//! stop the ones behind it.

use std::io;
use std::os::fd::RawFd;

use io_uring::{opcode, types, IoUring};

/// Entries of a sender's submission queue: the most messages one
/// `io_uring_enter` carries. A shard round at 10,000 sessions has about 400
/// packets, fewer messages with GSO.
pub const RING_ENTRIES: u32 = 1024;

/// A sender's ring.
pub(crate) struct Ring {
    ring: IoUring,
    /// Results by message, reused from round to round.
    results: Vec<i32>,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("entries", &self.ring.params().sq_entries())
            .finish_non_exhaustive()
    }
}

impl Ring {
    /// A ring of `entries` submission entries (rounded up to a power of two
    /// by the kernel) and twice as many completion entries, so that a full
    /// submission can never overflow the completion queue.
    ///
    /// `IORING_SETUP_SUBMIT_ALL` (Linux 5.18) makes the kernel consume every
    /// entry of a submission even when one fails early: without it, entries
    /// behind a failed one would stay queued, pointing at buffers the next
    /// round reuses. A kernel without it gets an error here, and the caller
    /// stays with `sendmmsg`.
    pub(crate) fn new(entries: u32) -> io::Result<Ring> {
        let ring = IoUring::builder()
            .setup_submit_all()
            .setup_coop_taskrun()
            .setup_cqsize(entries.saturating_mul(2))
            .build(entries)?;
        Ok(Ring {
            ring,
            results: Vec::new(),
        })
    }

    /// Sends every message of `msgs` from `fd` and returns each one's result:
    /// bytes sent, or a negative `errno`. Every entry has completed by the
    /// time it returns.
    ///
    /// # Safety
    ///
    /// Every `msghdr` in `msgs`, and everything it points at (address,
    /// iovecs, control message, and the bytes the iovecs point at), must be
    /// valid for reads for the whole call. `msgs` itself is only read.
    pub(crate) unsafe fn send(&mut self, fd: RawFd, msgs: &[libc::mmsghdr]) -> io::Result<&[i32]> {
        self.results.clear();
        self.results.resize(msgs.len(), 0);
        let room = self.ring.params().sq_entries() as usize;
        let mut first = 0;
        while first < msgs.len() {
            let count = (msgs.len() - first).min(room);
            {
                let mut sq = self.ring.submission();
                for (i, m) in msgs[first..first + count].iter().enumerate() {
                    let entry = opcode::SendMsg::new(types::Fd(fd), &m.msg_hdr)
                        .flags(libc::MSG_DONTWAIT as u32)
                        .build()
                        .user_data((first + i) as u64);
                    // SAFETY: the entry points at `m.msg_hdr`, which the
                    // caller keeps valid (with all it points at) for this
                    // whole call, and this call does not return before the
                    // entry has completed (below). The queue has room: it
                    // holds `room` entries and was emptied by the last pass.
                    if unsafe { sq.push(&entry) }.is_err() {
                        unreachable!("a submission queue of {room} entries took {i} of {count}");
                    }
                }
            }
            self.complete(count)?;
            first += count;
        }
        Ok(&self.results)
    }

    /// Submits what is queued and reaps exactly `count` completions into
    /// `results`.
    fn complete(&mut self, count: usize) -> io::Result<()> {
        let mut reaped = 0;
        while reaped < count {
            match self.ring.submit_and_wait(count - reaped) {
                Ok(_) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)) => {}
                Err(e) => self.abandon(&e),
            }
            for cqe in self.ring.completion() {
                if let Some(r) = self.results.get_mut(cqe.user_data() as usize) {
                    *r = cqe.result();
                }
                reaped += 1;
            }
        }
        Ok(())
    }

    /// The ring failed with messages the kernel may still read: returning
    /// would let the caller reuse or free their buffers under it. No
    /// `io_uring_enter` error leaves a ring this code owns in that state
    /// (it is never shared, never full, and its descriptor never closed
    /// while in use), so this is a broken kernel, and the process stops.
    #[cold]
    fn abandon(&self, e: &io::Error) -> ! {
        tracing::error!(error = %e, "io_uring_enter failed with sends in flight; aborting");
        std::process::abort()
    }
}
