//! The raw io_uring limit: prebuilt `msghdr`s handed to the kernel as
//! `IORING_OP_SENDMSG` entries, one `io_uring_enter` per batch, as the raw
//! loops hand prebuilt `mmsghdr`s to `sendmmsg`. What is left is io_uring's
//! own cost per message, beside which the engine's io_uring path is judged.

use std::os::fd::RawFd;

use io_uring::{opcode, types, IoUring};

/// A ring for raw sends.
pub struct RawRing {
    ring: IoUring,
}

/// What one [`RawRing::send`] did, in messages.
#[derive(Debug, Default, Clone, Copy)]
pub struct Sent {
    pub sent: usize,
    /// Refused for want of room (`EAGAIN`, `ENOBUFS`).
    pub would_block: usize,
    /// Refused otherwise; the first such `errno`.
    pub failed: usize,
    pub errno: Option<i32>,
}

impl RawRing {
    /// A ring of `entries` submission entries (and twice as many completion
    /// entries), set up as the engine's is.
    pub fn new(entries: u32) -> Result<RawRing, String> {
        RawRing::with_completions(entries, entries * 2)
    }

    /// A ring of `entries` submission and `completions` completion entries:
    /// zero-copy sends complete twice, the second time late.
    pub fn with_completions(entries: u32, completions: u32) -> Result<RawRing, String> {
        let ring = IoUring::builder()
            .setup_submit_all()
            .setup_coop_taskrun()
            .setup_cqsize(completions)
            .build(entries)
            .map_err(|e| format!("io_uring_setup: {e}"))?;
        Ok(RawRing { ring })
    }

    pub fn entries(&self) -> usize {
        self.ring.params().sq_entries() as usize
    }

    /// Sends `msgs` from `fd` with `MSG_DONTWAIT`, as many per submission as
    /// the ring has entries, and waits for every completion.
    ///
    /// # Safety
    ///
    /// Every message header and all it points at must stay valid and unchanged for
    /// the whole call.
    pub unsafe fn send(&mut self, fd: RawFd, msgs: &[libc::mmsghdr]) -> Result<Sent, String> {
        let mut out = Sent::default();
        for chunk in msgs.chunks(self.entries()) {
            {
                let mut sq = self.ring.submission();
                for m in chunk {
                    let entry = opcode::SendMsg::new(types::Fd(fd), &m.msg_hdr)
                        .flags(libc::MSG_DONTWAIT as u32)
                        .build();
                    // SAFETY: the caller keeps `m` and what it points at
                    // valid until this call returns, which is after every
                    // entry completed; the queue was emptied by the last pass.
                    unsafe { sq.push(&entry) }.map_err(|_| "submission queue full".to_string())?;
                }
            }
            self.reap(chunk.len(), &mut out)?;
        }
        Ok(out)
    }

    /// Submits and waits for `count` completions, sorting their results.
    pub fn reap(&mut self, count: usize, out: &mut Sent) -> Result<(), String> {
        let mut reaped = 0;
        while reaped < count {
            match self.ring.submit_and_wait(count - reaped) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                // Entries may be in flight: stopping here would free what
                // they point at.
                Err(e) => panic!("io_uring_enter: {e}"),
            }
            for cqe in self.ring.completion() {
                reaped += 1;
                match cqe.result() {
                    r if r >= 0 => out.sent += 1,
                    r if -r == libc::EAGAIN || -r == libc::ENOBUFS => out.would_block += 1,
                    r => {
                        out.failed += 1;
                        out.errno.get_or_insert(-r);
                    }
                }
            }
        }
        Ok(())
    }

    /// The ring itself, for loops that build other entries (zero-copy).
    pub fn ring(&mut self) -> &mut IoUring {
        &mut self.ring
    }
}
