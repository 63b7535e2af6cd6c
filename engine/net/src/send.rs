//! The batched RTP sender: one shard tick, one `sendmmsg`.
//!
//! A [`SendBatch`] owns every buffer the system call needs (message headers,
//! iovecs, RTP header slots, destination addresses) and keeps them from tick
//! to tick, so steady-state sending allocates nothing. Payload bytes are not
//! copied: each packet's iovecs point straight at its spans in the mapped
//! movie. That is only sound while those bytes live, so pushing happens on a
//! [`Batch<'a>`], a scoped borrow whose `'a` every payload slice must
//! outlive; the borrow checker then rules out flushing a dangling iovec.
//!
//! With UDP GSO (on unless [`SendBatch::set_gso`] turns it off), each run of
//! consecutive packets to one destination whose sizes are equal (the last
//! may be shorter) becomes a single message carrying a `UDP_SEGMENT` control
//! message: the kernel walks the stack once for the whole run and cuts it
//! into the same datagrams on the way out. Video frames fragmented into
//! equal packets are exactly such runs. Messages with and without GSO share
//! one `sendmmsg`. Where the kernel or the route refuses GSO, the refused
//! run goes again packet by packet and the batch stops using GSO.
//!
//! The same messages can go through an io_uring of the batch's own instead
//! ([`SendBatch::use_io_uring`]): one `IORING_OP_SENDMSG` entry per message,
//! submitted together, with the same GSO grouping and the same answer to
//! "which packets did not go" ([`SendBatch::unsent`]).

use std::io;
use std::marker::PhantomData;
use std::mem;
use std::net::{SocketAddr, UdpSocket};
use std::ops::Range;
use std::os::fd::AsRawFd;

use super::addr::RawAddr;
use super::uring::Ring;

/// Length of the RTP fixed header written per packet.
pub const RTP_HEADER_LEN: usize = 12;

/// Bytes of the slot each packet's RTP header is copied into. Leading
/// payload slices that fit in the rest of it are copied there too: the few
/// bytes hinters write as immediate data (an H.264 FU-A indicator and
/// header, the AU-header section of an AAC packet) would otherwise each cost
/// the kernel an iovec of its own, which costs more than copying them.
const HEADER_SLOT: usize = 32;

/// Most iovecs one packet is sent with, its header included. Hinted packets
/// have one to three spans; a packet with more than `MAX_IOVECS - 1` has the
/// excess copied into one spill buffer instead (rare, and bounded by the
/// packet size).
pub const MAX_IOVECS: usize = 16;

/// Messages per `sendmmsg` call: the kernel silently caps `vlen` at
/// `UIO_MAXIOV`. The same cap applies to the iovecs of one message.
const MAX_MESSAGES_PER_CALL: usize = 1024;
const MAX_IOVECS_PER_MESSAGE: usize = 1024;

/// Most datagrams one GSO message may be cut into (`UDP_MAX_SEGMENTS`; newer
/// kernels allow more).
const MAX_SEGMENTS: usize = 64;

/// Most UDP payload bytes one GSO message may carry: the 16-bit IP length,
/// less the IPv6 and UDP headers (IPv4 allows a little more).
const MAX_GSO_BYTES: usize = 65_535 - 40 - 8;

/// The one control message a GSO message carries: `UDP_SEGMENT` with the
/// datagram size, laid out as `CMSG_SPACE(sizeof(u16))` bytes.
#[repr(C)]
#[derive(Clone, Copy)]
struct SegmentCmsg {
    hdr: libc::cmsghdr,
    segment: u16,
}

// SAFETY: CMSG_LEN is arithmetic on its argument.
const _: () = assert!(mem::offset_of!(SegmentCmsg, segment) == unsafe { libc::CMSG_LEN(0) } as usize);
// SAFETY: CMSG_SPACE is arithmetic on its argument.
const _: () = assert!(mem::size_of::<SegmentCmsg>() == unsafe { libc::CMSG_SPACE(2) } as usize);

impl SegmentCmsg {
    fn new(segment: u16) -> SegmentCmsg {
        // SAFETY: all-zero is a valid `cmsghdr` (including the padding fields
        // some C libraries have).
        let mut hdr: libc::cmsghdr = unsafe { mem::zeroed() };
        hdr.cmsg_level = libc::SOL_UDP;
        hdr.cmsg_type = libc::UDP_SEGMENT;
        // SAFETY: arithmetic only.
        hdr.cmsg_len = unsafe { libc::CMSG_LEN(mem::size_of::<u16>() as libc::c_uint) } as _;
        SegmentCmsg { hdr, segment }
    }
}

/// What became of a flushed batch. `sent + would_block + failed` is the
/// number of packets pushed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flushed {
    /// Packets the kernel accepted.
    pub sent: usize,
    /// Packets not sent because the socket buffer was full (`EAGAIN`,
    /// `ENOBUFS`): the caller counts them as drops.
    pub would_block: usize,
    /// Packets the kernel refused one by one (an unreachable network, a
    /// destination of the wrong family, a pending `ECONNREFUSED` from an
    /// earlier ICMP error, ...). The rest of the batch still went.
    pub failed: usize,
}

impl Flushed {
    fn add(&mut self, other: Flushed) {
        self.sent += other.sent;
        self.would_block += other.would_block;
        self.failed += other.failed;
    }
}

/// How a batch's messages reach the kernel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SendPath {
    /// `sendmmsg(2)`, as many messages per call as the kernel takes.
    #[default]
    Sendmmsg,
    /// `IORING_OP_SENDMSG` entries on an io_uring of the batch's own, all of
    /// a flush in one `io_uring_enter` (up to its queue's size).
    IoUring,
}

impl SendPath {
    pub fn name(self) -> &'static str {
        match self {
            SendPath::Sendmmsg => "sendmmsg",
            SendPath::IoUring => "io-uring",
        }
    }
}

impl std::fmt::Display for SendPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for SendPath {
    type Err = String;

    fn from_str(s: &str) -> Result<SendPath, String> {
        match s {
            "sendmmsg" => Ok(SendPath::Sendmmsg),
            "io-uring" | "io_uring" => Ok(SendPath::IoUring),
            _ => Err(format!("unknown send path {s:?}: sendmmsg or io-uring")),
        }
    }
}

/// Where one message's pieces live inside the batch's vectors.
#[derive(Clone, Copy)]
struct Msg {
    /// Index into `addrs`.
    addr: u32,
    /// First iovec (the header slot) in `iovs`.
    iov_start: u32,
    iov_len: u32,
    /// Bytes used in the header slot: the RTP header and leading payload.
    head: u8,
    /// UDP payload bytes (header included).
    len: u32,
}

/// The reusable storage behind [`Batch`]. One per shard (or per socket).
pub struct SendBatch {
    msgs: Vec<Msg>,
    /// Per message: the header slot's iovec, then the payload's. Header
    /// iovecs get their pointers at flush time, because `headers` may move
    /// while the batch grows.
    iovs: Vec<libc::iovec>,
    headers: Vec<[u8; HEADER_SLOT]>,
    /// Distinct destinations; consecutive packets to the same one share it.
    addrs: Vec<RawAddr>,
    last_dest: Option<SocketAddr>,
    /// Payload bytes past the iovec cap, and (iovec index, offset in
    /// `spill`) for each iovec that points into it, patched at flush.
    spill: Vec<u8>,
    spill_iovs: Vec<(u32, u32)>,
    /// Built at flush from the above: the messages, how many packets each
    /// carries, and the GSO control messages they point at.
    hdrs: Vec<libc::mmsghdr>,
    weights: Vec<u32>,
    /// Per message, the position of its first packet.
    firsts: Vec<u32>,
    cmsgs: Vec<SegmentCmsg>,
    gso: bool,
    /// Most messages one `sendmmsg` is given.
    per_call: usize,
    /// With [`SendPath::IoUring`], the ring the messages go through, and
    /// the packets of its pass and those refused as GSO runs, kept to be
    /// reused.
    ring: Option<Box<Ring>>,
    pass: Vec<Range<usize>>,
    refused: Vec<Range<usize>>,
    /// Positions (in push order) of the packets the last flush did not
    /// send; kept until the next [`begin`](SendBatch::begin).
    unsent: Vec<Range<usize>>,
}

// SAFETY: the raw pointers inside `iovs` and `hdrs` are only dereferenced
// (by the kernel) during `Batch::flush`, which runs on the thread that holds
// the `Batch` and therefore the `SendBatch`, and which returns only when
// the kernel is done with them (the ring's entries have all completed).
// Outside a batch they are stale values that are never read before `begin`
// clears them, so moving the storage to another thread cannot make anything
// reachable from two threads.
unsafe impl Send for SendBatch {}

impl Default for SendBatch {
    fn default() -> Self {
        SendBatch::new()
    }
}

impl std::fmt::Debug for SendBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendBatch")
            .field("capacity", &self.msgs.capacity())
            .field("gso", &self.gso)
            .field("path", &self.send_path())
            .finish_non_exhaustive()
    }
}

impl SendBatch {
    pub fn new() -> SendBatch {
        SendBatch::with_capacity(64)
    }

    /// Storage preallocated for `packets` packets of up to three spans. It
    /// grows if a tick needs more, and keeps what it grew to.
    pub fn with_capacity(packets: usize) -> SendBatch {
        SendBatch {
            msgs: Vec::with_capacity(packets),
            iovs: Vec::with_capacity(packets * 4),
            headers: Vec::with_capacity(packets),
            addrs: Vec::with_capacity(8),
            last_dest: None,
            spill: Vec::new(),
            spill_iovs: Vec::new(),
            hdrs: Vec::with_capacity(packets),
            weights: Vec::with_capacity(packets),
            firsts: Vec::with_capacity(packets),
            cmsgs: Vec::with_capacity(packets / 2),
            gso: true,
            per_call: MAX_MESSAGES_PER_CALL,
            ring: None,
            pass: Vec::new(),
            refused: Vec::new(),
            unsent: Vec::new(),
        }
    }

    /// Whether runs of equal-size packets to one destination go as one GSO
    /// message. On by default; turned off for good when the kernel refuses
    /// it (an old kernel, a route without checksum offload).
    pub fn gso(&self) -> bool {
        self.gso
    }

    pub fn set_gso(&mut self, enabled: bool) {
        self.gso = enabled;
    }

    /// Gives one `sendmmsg` at most `messages` messages (1 to 1,024, the
    /// kernel's own cap and the default); a flush of more makes more calls.
    /// The ring's submissions are bounded by its entries instead.
    pub fn set_messages_per_call(&mut self, messages: usize) {
        self.per_call = messages.clamp(1, MAX_MESSAGES_PER_CALL);
    }

    /// Sends through an io_uring of this batch's own, of `entries` entries
    /// (see [`RING_ENTRIES`](crate::RING_ENTRIES)), from now on. An error
    /// (a kernel without io_uring, or without what the ring needs, or a
    /// limit on rings) leaves the batch on `sendmmsg`.
    pub fn use_io_uring(&mut self, entries: u32) -> io::Result<()> {
        self.ring = Some(Box::new(Ring::new(entries)?));
        Ok(())
    }

    /// Sends with `sendmmsg` from now on (the default).
    pub fn use_sendmmsg(&mut self) {
        self.ring = None;
    }

    pub fn send_path(&self) -> SendPath {
        if self.ring.is_some() {
            SendPath::IoUring
        } else {
            SendPath::Sendmmsg
        }
    }

    /// The packets the last [`Batch::flush`] did not send, as ranges of
    /// their positions in push order (the first packet pushed is 0): runs
    /// left over when the socket buffer filled, and single packets (or GSO
    /// runs) the kernel refused. A caller that counted packets as it pushed
    /// them takes these back out. Empty after a flush that sent everything;
    /// cleared by the next [`begin`](Self::begin).
    pub fn unsent(&self) -> &[Range<usize>] {
        &self.unsent
    }

    /// Starts a batch. Every payload slice pushed to it must outlive `'a`.
    pub fn begin(&mut self) -> Batch<'_> {
        self.clear();
        self.unsent.clear();
        Batch {
            inner: self,
            _payload: PhantomData,
        }
    }

    /// Packets pushed since the batch was last cleared.
    pub(crate) fn pushed(&self) -> usize {
        self.msgs.len()
    }

    /// Empties [`unsent`](Self::unsent), as [`begin`](Self::begin) does.
    pub(crate) fn forget_unsent(&mut self) {
        self.unsent.clear();
    }

    /// Gives back room beyond what `packets` packets need (of up to three
    /// spans), if it holds more than that.
    pub(crate) fn shrink_to(&mut self, packets: usize) {
        if self.msgs.capacity() <= packets {
            return;
        }
        self.msgs.shrink_to(packets);
        self.iovs.shrink_to(packets * 4);
        self.headers.shrink_to(packets);
        self.hdrs.shrink_to(packets);
        self.weights.shrink_to(packets);
        self.firsts.shrink_to(packets);
        self.cmsgs.shrink_to(packets / 2);
        self.spill.shrink_to(0);
        self.spill_iovs.shrink_to(0);
    }

    /// Forgets every packet pushed, sending nothing.
    pub(crate) fn discard(&mut self) {
        self.clear();
    }

    fn clear(&mut self) {
        self.msgs.clear();
        self.iovs.clear();
        self.headers.clear();
        self.addrs.clear();
        self.last_dest = None;
        self.spill.clear();
        self.spill_iovs.clear();
        self.hdrs.clear();
        self.weights.clear();
        self.firsts.clear();
        self.cmsgs.clear();
    }

    /// Queues one packet: `header`, then `lead` (copied, like the header),
    /// then `parts`, whose bytes are not copied: their iovecs point at them,
    /// so whoever flushes must know they are still alive ([`Batch`] by its
    /// borrow, [`OwnedBatch`](crate::OwnedBatch) by holding their owners).
    /// Empty parts are skipped.
    pub(crate) fn push_parts<'p>(
        &mut self,
        dest: SocketAddr,
        header: &[u8; RTP_HEADER_LEN],
        lead: &[u8],
        parts: impl Iterator<Item = &'p [u8]>,
    ) {
        if self.last_dest != Some(dest) {
            self.addrs.push(RawAddr::new(&dest));
            self.last_dest = Some(dest);
        }
        let iov_start = self.iovs.len();
        let mut parts = parts.filter(|p| !p.is_empty());
        let mut slot = [0u8; HEADER_SLOT];
        slot[..RTP_HEADER_LEN].copy_from_slice(header);
        let mut head = RTP_HEADER_LEN;
        // The lead and the leading slices that fit ride in the header's
        // slot; the first that does not is the first iovec of its own. A
        // lead too long for the slot (none of the callers' is) is copied
        // into an iovec of the spill buffer, as it must be copied.
        let lead_fits = head + lead.len() <= HEADER_SLOT;
        let mut next = None;
        if lead_fits {
            slot[head..head + lead.len()].copy_from_slice(lead);
            head += lead.len();
            for part in parts.by_ref() {
                if head + part.len() > HEADER_SLOT {
                    next = Some(part);
                    break;
                }
                slot[head..head + part.len()].copy_from_slice(part);
                head += part.len();
            }
        }
        self.headers.push(slot);
        // The header slot; pointed at `headers` in `settle_iovecs`.
        self.iovs.push(libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: head,
        });
        let mut len = head;
        let mut direct = 0;
        if !lead_fits {
            self.spill(std::iter::once(lead));
            len += lead.len();
            direct += 1;
        }
        // The first `MAX_IOVECS - 2` non-empty slices go as they are; the
        // next is held back until it is known whether more follow, in
        // which case it and the rest share one spill iovec.
        let mut held: Option<&'p [u8]> = None;
        while let Some(part) = next.take().or_else(|| parts.next()) {
            if direct < MAX_IOVECS - 2 {
                self.push_iov(part);
                len += part.len();
                direct += 1;
            } else if let Some(prev) = held.take() {
                self.spill([prev, part].into_iter().chain(parts.by_ref()));
                len += self.iovs.last().map_or(0, |v| v.iov_len);
                break;
            } else {
                held = Some(part);
            }
        }
        if let Some(last) = held {
            self.push_iov(last);
            len += last.len();
        }
        self.msgs.push(Msg {
            addr: (self.addrs.len() - 1) as u32,
            iov_start: iov_start as u32,
            iov_len: (self.iovs.len() - iov_start) as u32,
            head: head as u8,
            len: u32::try_from(len).unwrap_or(u32::MAX),
        });
    }

    fn push_iov(&mut self, bytes: &[u8]) {
        self.iovs.push(libc::iovec {
            iov_base: bytes.as_ptr() as *mut libc::c_void,
            iov_len: bytes.len(),
        });
    }

    /// Appends `parts` to the spill buffer as one more iovec of this message.
    fn spill<'p>(&mut self, parts: impl Iterator<Item = &'p [u8]>) {
        let offset = self.spill.len();
        for part in parts {
            self.spill.extend_from_slice(part);
        }
        self.spill_iovs.push((self.iovs.len() as u32, offset as u32));
        self.iovs.push(libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: self.spill.len() - offset,
        });
    }

    /// Points the header and spill iovecs at their (now settled) storage.
    fn settle_iovecs(&mut self) {
        for (msg, header) in self.msgs.iter().zip(&self.headers) {
            self.iovs[msg.iov_start as usize] = libc::iovec {
                iov_base: header.as_ptr() as *mut libc::c_void,
                iov_len: usize::from(msg.head),
            };
        }
        for &(iov, offset) in &self.spill_iovs {
            self.iovs[iov as usize].iov_base = self.spill[offset as usize..].as_ptr() as *mut libc::c_void;
        }
    }

    /// Builds the `mmsghdr`s for the packets in `ranges` (ascending, apart),
    /// grouping GSO runs if `gso`.
    fn build(&mut self, ranges: &[Range<usize>], gso: bool) {
        self.hdrs.clear();
        self.weights.clear();
        self.firsts.clear();
        self.cmsgs.clear();
        // First the grouping, so `cmsgs` is complete before anything points into it.
        for range in ranges {
            let mut i = range.start;
            while i < range.end {
                let first = self.msgs[i];
                let mut run = 1;
                if gso && first.len <= u32::from(u16::MAX) {
                    let (mut bytes, mut iovs) = (first.len as usize, first.iov_len as usize);
                    while i + run < range.end {
                        let next = self.msgs[i + run];
                        if run == MAX_SEGMENTS
                            || next.addr != first.addr
                            || next.len > first.len
                            || bytes + next.len as usize > MAX_GSO_BYTES
                            || iovs + next.iov_len as usize > MAX_IOVECS_PER_MESSAGE
                        {
                            break;
                        }
                        run += 1;
                        bytes += next.len as usize;
                        iovs += next.iov_len as usize;
                        if next.len < first.len {
                            break; // only the last segment may be short
                        }
                    }
                }
                if run > 1 {
                    self.cmsgs.push(SegmentCmsg::new(first.len as u16));
                }
                self.weights.push(run as u32);
                self.firsts.push(i as u32);
                i += run;
            }
        }
        let mut cmsgs = self.cmsgs.iter();
        for (&run, &i) in self.weights.iter().zip(&self.firsts) {
            let i = i as usize;
            let (first, last) = (self.msgs[i], self.msgs[i + run as usize - 1]);
            let (name, namelen) = self.addrs[first.addr as usize].as_name();
            // SAFETY: an all-zero `mmsghdr` is valid (null pointers, zero
            // lengths); the fields that matter are set below.
            let mut hdr: libc::mmsghdr = unsafe { mem::zeroed() };
            hdr.msg_hdr.msg_name = name;
            hdr.msg_hdr.msg_namelen = namelen;
            // A run's iovecs are contiguous: pushes append.
            hdr.msg_hdr.msg_iov = self.iovs[first.iov_start as usize..].as_ptr() as *mut libc::iovec;
            hdr.msg_hdr.msg_iovlen = (last.iov_start + last.iov_len - first.iov_start) as _;
            if run > 1 {
                let cmsg = cmsgs.next().expect("one control message per GSO run");
                hdr.msg_hdr.msg_control = cmsg as *const SegmentCmsg as *mut libc::c_void;
                hdr.msg_hdr.msg_controllen = mem::size_of::<SegmentCmsg>() as _;
            }
            self.hdrs.push(hdr);
        }
    }
}

/// One tick's packets, borrowing their payloads for `'a`. Obtained from
/// [`SendBatch::begin`]. Dropping it without [`flush`](Batch::flush)
/// discards what was pushed.
///
/// ```
/// # use std::net::UdpSocket;
/// # use net::SendBatch;
/// # let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
/// # let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
/// let movie = vec![7u8; 4096]; // stands in for the mapping
/// let mut storage = SendBatch::new();
/// let mut batch = storage.begin();
/// batch.push(rx.local_addr().unwrap(), &[0x80, 96, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1], [&movie[..100], &movie[2000..2500]]);
/// let flushed = batch.flush(&sock).unwrap();
/// assert_eq!(flushed.sent, 1);
/// ```
///
/// A payload that does not outlive the batch is rejected at compile time:
///
/// ```compile_fail
/// # use std::net::UdpSocket;
/// # use net::SendBatch;
/// # let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
/// let mut storage = SendBatch::new();
/// let mut batch = storage.begin();
/// {
///     let short_lived = vec![1u8; 100];
///     batch.push("127.0.0.1:9".parse().unwrap(), &[0; 12], [&short_lived[..]]);
/// }
/// batch.flush(&sock).unwrap();
/// ```
pub struct Batch<'a> {
    inner: &'a mut SendBatch,
    _payload: PhantomData<&'a [u8]>,
}

impl<'a> Batch<'a> {
    /// Queues one packet: the RTP header (copied into the batch) followed by
    /// the payload slices, which are not copied and must live for `'a`.
    /// Empty slices are skipped.
    pub fn push<I>(&mut self, dest: SocketAddr, header: &[u8; RTP_HEADER_LEN], payload: I)
    where
        I: IntoIterator<Item = &'a [u8]>,
    {
        self.inner.push_parts(dest, header, &[], payload.into_iter());
    }

    /// Queues one datagram that is not an RTP packet (an RTCP compound
    /// packet, say): its first bytes ride in the header slot, the rest, if
    /// any, is an iovec of its own and must live for `'a`.
    pub fn push_datagram(&mut self, dest: SocketAddr, bytes: &'a [u8]) {
        let b = &mut *self.inner;
        if b.last_dest != Some(dest) {
            b.addrs.push(RawAddr::new(&dest));
            b.last_dest = Some(dest);
        }
        let iov_start = b.iovs.len();
        let (head, rest) = bytes.split_at(bytes.len().min(HEADER_SLOT));
        let mut slot = [0u8; HEADER_SLOT];
        slot[..head.len()].copy_from_slice(head);
        b.headers.push(slot);
        b.iovs.push(libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: head.len(),
        });
        if !rest.is_empty() {
            b.push_iov(rest);
        }
        b.msgs.push(Msg {
            addr: (b.addrs.len() - 1) as u32,
            iov_start: iov_start as u32,
            iov_len: (b.iovs.len() - iov_start) as u32,
            head: head.len() as u8,
            len: u32::try_from(bytes.len()).unwrap_or(u32::MAX),
        });
    }

    /// Packets pushed and not yet flushed.
    pub fn len(&self) -> usize {
        self.inner.msgs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.msgs.is_empty()
    }

    /// Hands every pushed packet to the kernel with as few `sendmmsg` calls
    /// as it takes (one, unless the kernel takes part of the batch), never
    /// blocking. Afterwards the batch is empty and can be pushed to again.
    ///
    /// Errors that concern one packet skip that packet and are counted in
    /// [`Flushed::failed`]; a full socket buffer ends the flush and counts
    /// the remainder in [`Flushed::would_block`]. `Err` means the socket
    /// itself is unusable (a closed or non-socket descriptor); the batch is
    /// discarded then too, and counted as unsent from where that pass began.
    /// Which packets did not go, [`SendBatch::unsent`] says.
    pub fn flush(&mut self, sock: &UdpSocket) -> io::Result<Flushed> {
        // SAFETY: every payload slice pushed borrows for `'a`, and `self`,
        // a live `Batch<'a>`, proves they are all still alive.
        unsafe { self.inner.send_pushed(sock) }
    }
}

impl SendBatch {
    /// The pushed packets' destinations and UDP payload lengths, in push order.
    pub(crate) fn datagrams(&self) -> impl ExactSizeIterator<Item = (SocketAddr, usize)> + '_ {
        self.msgs
            .iter()
            .map(|m| (self.addrs[m.addr as usize].to_socket_addr(), m.len as usize))
    }

    /// Hands each pushed packet, whole (gathered into `scratch`), to `send`,
    /// which says whether it took it, instead of to a socket: for
    /// simulations and tests. The packets it refused are then in
    /// [`unsent`](Self::unsent), and the batch is empty.
    ///
    /// # Safety
    /// As for [`send_pushed`](Self::send_pushed).
    pub(crate) unsafe fn send_each(
        &mut self,
        scratch: &mut Vec<u8>,
        mut send: impl FnMut(SocketAddr, &[u8]) -> bool,
    ) -> Flushed {
        self.settle_iovecs();
        let mut total = Flushed::default();
        for (i, m) in self.msgs.iter().enumerate() {
            scratch.clear();
            for iov in &self.iovs[m.iov_start as usize..(m.iov_start + m.iov_len) as usize] {
                // SAFETY: a settled iovec points at its header slot (in
                // `headers`), at the spill buffer, or at a payload slice
                // the caller promised is alive, and its length is that of
                // the bytes there; nothing here writes to any of them.
                let bytes = unsafe { std::slice::from_raw_parts(iov.iov_base as *const u8, iov.iov_len) };
                scratch.extend_from_slice(bytes);
            }
            if send(self.addrs[m.addr as usize].to_socket_addr(), scratch) {
                total.sent += 1;
            } else {
                total.failed += 1;
                match self.unsent.last_mut() {
                    Some(last) if last.end == i => last.end += 1,
                    _ => self.unsent.push(i..i + 1),
                }
            }
        }
        self.clear();
        total
    }

    /// [`Batch::flush`], for the packets pushed by [`push_parts`](Self::push_parts).
    ///
    /// # Safety
    /// Every payload slice pushed since the batch was last cleared is still
    /// alive, and stays so until this returns.
    pub(crate) unsafe fn send_pushed(&mut self, sock: &UdpSocket) -> io::Result<Flushed> {
        if self.msgs.is_empty() {
            return Ok(Flushed::default());
        }
        self.settle_iovecs();
        let fd = sock.as_raw_fd();
        if self.ring.is_some() {
            // SAFETY: this function's own contract.
            let result = unsafe { self.flush_ring(fd) };
            self.clear();
            return result;
        }
        let mut total = Flushed::default();
        let (mut from, mut gso, mut retrying_refused_run) = (0, self.gso, false);
        let result = loop {
            let all = from..self.msgs.len();
            self.build(&[all], gso);
            let hdrs = &mut self.hdrs;
            let unsent_before = self.unsent.len();
            let per_call = self.per_call;
            let driven = drive(&self.weights, &mut self.unsent, |pos, count| {
                let count = count.min(per_call);
                let msgs = &mut hdrs[pos..pos + count];
                // SAFETY: `msgs` is a live slice of `count` initialised
                // `mmsghdr`s. Their names point into `addrs`, their control
                // messages into `cmsgs`, their iovecs into `iovs`, and those
                // iovecs at `headers`, at `spill`, or at payload slices the
                // caller promised are alive. None of these vectors is touched
                // until the call returns. The kernel only reads the buffers
                // and writes `msg_len`.
                let n = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), count as libc::c_uint, libc::MSG_DONTWAIT) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            for r in &mut self.unsent[unsent_before..] {
                *r = r.start + from..r.end + from;
            }
            let driven = match driven {
                Ok(d) => d,
                Err(e) => {
                    self.unsent.truncate(unsent_before);
                    self.unsent.push(from..self.msgs.len());
                    break Err(e);
                }
            };
            total.add(driven.flushed);
            if retrying_refused_run && driven.first_sent {
                // The run went packet by packet where it could not as one
                // GSO message: the refusal was about GSO, not the packets.
                self.gso = false;
                tracing::warn!("the kernel refused UDP GSO; sending packets one by one from now on");
            }
            match driven.gso_refused_at {
                Some(hdr) => {
                    from += self.weights[..hdr].iter().map(|&w| w as usize).sum::<usize>();
                    gso = false;
                    retrying_refused_run = true;
                }
                None => break Ok(total),
            }
        };
        self.clear();
        result
    }

    /// [`send_pushed`](Self::send_pushed) through the batch's ring: every message as
    /// one `SENDMSG` entry, each with a result of its own. A GSO run the
    /// kernel refused as such goes again packet by packet, as with
    /// `sendmmsg`, and if that works the batch stops using GSO.
    ///
    /// # Safety
    /// As for [`send_pushed`](Self::send_pushed).
    unsafe fn flush_ring(&mut self, fd: std::os::fd::RawFd) -> io::Result<Flushed> {
        let mut total = Flushed::default();
        let (mut pass, mut refused) = (mem::take(&mut self.pass), mem::take(&mut self.refused));
        pass.clear();
        pass.push(0..self.msgs.len());
        let (mut gso, mut retrying, mut fatal) = (self.gso, false, None);
        loop {
            refused.clear();
            self.build(&pass, gso);
            let ring = self.ring.as_mut().expect("flush_ring is for a batch with a ring");
            // SAFETY: the messages point into `addrs`, `cmsgs` and `iovs`, and
            // those iovecs at `headers`, at `spill`, or at payload slices the
            // caller promised are alive; none of these vectors is touched
            // until `send` returns, and it returns only when every entry has
            // completed.
            let results = match unsafe { ring.send(fd, &self.hdrs) } {
                Ok(results) => results,
                Err(e) => {
                    // `io_uring_enter` itself failed, not an entry: which of
                    // this pass's messages went is not known, so none counts.
                    self.unsent.extend(pass.iter().cloned());
                    self.unsent.sort_unstable_by_key(|r| r.start);
                    merge_adjacent(&mut self.unsent);
                    (self.pass, self.refused) = (pass, refused);
                    return Err(e);
                }
            };
            let mut first_sent = false;
            for (m, &r) in results.iter().enumerate() {
                let (at, weight) = (self.firsts[m] as usize, self.weights[m] as usize);
                if r >= 0 {
                    total.sent += weight;
                    first_sent |= m == 0;
                    continue;
                }
                match outcome(-r, weight) {
                    Outcome::GsoRefused => {
                        refused.push(at..at + weight);
                        continue;
                    }
                    // Each entry is tried once: an interrupted one is
                    // counted as one a full buffer left out.
                    Outcome::Retry | Outcome::WouldBlock => total.would_block += weight,
                    Outcome::Failed => total.failed += weight,
                    Outcome::Fatal => {
                        fatal = Some(-r);
                        total.failed += weight;
                    }
                }
                self.unsent.push(at..at + weight);
            }
            if retrying && first_sent {
                self.gso = false;
                tracing::warn!("the kernel refused UDP GSO; sending packets one by one from now on");
            }
            if refused.is_empty() || !gso {
                break;
            }
            mem::swap(&mut pass, &mut refused);
            gso = false;
            retrying = true;
        }
        (self.pass, self.refused) = (pass, refused);
        self.unsent.sort_unstable_by_key(|r| r.start);
        merge_adjacent(&mut self.unsent);
        match fatal {
            Some(errno) => Err(io::Error::from_raw_os_error(errno)),
            None => Ok(total),
        }
    }
}

/// Joins ranges that touch (`0..2, 2..5` is `0..5`), in place; `ranges`
/// is sorted and its ranges do not overlap.
fn merge_adjacent(ranges: &mut Vec<Range<usize>>) {
    let mut kept = 0;
    for i in 0..ranges.len() {
        if kept > 0 && ranges[kept - 1].end == ranges[i].start {
            ranges[kept - 1].end = ranges[i].end;
        } else {
            ranges[kept] = ranges[i].clone();
            kept += 1;
        }
    }
    ranges.truncate(kept);
}

/// What an `errno` from sending one message (carrying `weight` packets)
/// means for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Interrupted: try it again.
    Retry,
    /// No room in the socket buffer (`EAGAIN`, `ENOBUFS`).
    WouldBlock,
    /// What a kernel or route without GSO answers for a GSO message (no
    /// `UDP_SEGMENT`, no checksum offload, a segment above the path MTU,
    /// ...): the run is to go again packet by packet.
    GsoRefused,
    /// The socket itself is unusable.
    Fatal,
    /// This message was refused (an unreachable network, a destination of
    /// the wrong family, a pending `ECONNREFUSED` from an earlier ICMP
    /// error, ...); the others may still go.
    Failed,
}

fn outcome(errno: i32, weight: usize) -> Outcome {
    match errno {
        libc::EINTR => Outcome::Retry,
        libc::EAGAIN | libc::ENOBUFS => Outcome::WouldBlock,
        libc::EIO | libc::EINVAL | libc::EMSGSIZE | libc::EOPNOTSUPP | libc::ENOPROTOOPT if weight > 1 => {
            Outcome::GsoRefused
        }
        libc::EBADF | libc::ENOTSOCK | libc::EFAULT | libc::EOPNOTSUPP => Outcome::Fatal,
        _ => Outcome::Failed,
    }
}

/// How one pass of [`drive`] went.
#[derive(Debug, Default, PartialEq)]
struct Driven {
    flushed: Flushed,
    /// The message (a GSO run) at which the kernel refused GSO; the packets
    /// from it on are neither sent nor counted.
    gso_refused_at: Option<usize>,
    /// Whether the first message went.
    first_sent: bool,
}

/// Feeds the messages, which carry `weights[i]` packets each, to
/// `send(position, count)`, which returns how many messages it sent from
/// `position` on, and sorts the outcome into packet counts. The packets
/// that did not go are appended to `unsent` as ranges of packet positions
/// (the first message's first packet is 0).
fn drive(
    weights: &[u32],
    unsent: &mut Vec<Range<usize>>,
    mut send: impl FnMut(usize, usize) -> io::Result<usize>,
) -> io::Result<Driven> {
    let packets = |range: &[u32]| range.iter().map(|&w| w as usize).sum::<usize>();
    let mut done = Driven::default();
    let mut pos = 0;
    // The position of message `pos`'s first packet.
    let mut first = 0;
    while pos < weights.len() {
        let count = (weights.len() - pos).min(MAX_MESSAGES_PER_CALL);
        match send(pos, count) {
            Ok(0) => {
                // Not expected for count > 0; don't spin on it.
                let rest = packets(&weights[pos..]);
                done.flushed.would_block += rest;
                unsent.push(first..first + rest);
                break;
            }
            Ok(n) => {
                done.first_sent |= pos == 0;
                let went = packets(&weights[pos..pos + n]);
                done.flushed.sent += went;
                first += went;
                pos += n;
            }
            Err(e) => match e.raw_os_error().map(|errno| outcome(errno, weights[pos] as usize)) {
                Some(Outcome::Retry) => {}
                Some(Outcome::WouldBlock) => {
                    let rest = packets(&weights[pos..]);
                    done.flushed.would_block += rest;
                    unsent.push(first..first + rest);
                    break;
                }
                Some(Outcome::GsoRefused) => {
                    done.gso_refused_at = Some(pos);
                    break;
                }
                Some(Outcome::Fatal) | None => return Err(e),
                // `sendmmsg` reports an error only for the first message
                // of the call; the ones before it were sent (and counted by
                // an earlier `Ok`). Skip the bad one and carry on.
                Some(Outcome::Failed) => {
                    let refused = weights[pos] as usize;
                    done.flushed.failed += refused;
                    match unsent.last_mut() {
                        Some(last) if last.end == first => last.end += refused,
                        _ => unsent.push(first..first + refused),
                    }
                    first += refused;
                    pos += 1;
                }
            },
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    use std::time::Duration;

    fn receiver(ip: IpAddr) -> UdpSocket {
        let sock = UdpSocket::bind(SocketAddr::new(ip, 0)).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        sock
    }

    fn sender(ip: IpAddr) -> UdpSocket {
        let sock = UdpSocket::bind(SocketAddr::new(ip, 0)).unwrap();
        sock.set_nonblocking(true).unwrap();
        sock
    }

    fn header(seq: u16) -> [u8; 12] {
        let mut h = [0u8; 12];
        h[0] = 0x80;
        h[1] = 96;
        h[2..4].copy_from_slice(&seq.to_be_bytes());
        h[8..12].copy_from_slice(&0x1234_5678u32.to_be_bytes());
        h
    }

    /// Storage sending through `path`.
    fn storage_on(path: SendPath, packets: usize) -> SendBatch {
        let mut storage = SendBatch::with_capacity(packets);
        if path == SendPath::IoUring {
            storage.use_io_uring(64).expect("an io_uring (Linux 5.18 or later)");
        }
        assert_eq!(storage.send_path(), path);
        storage
    }

    const PATHS: [SendPath; 2] = [SendPath::Sendmmsg, SendPath::IoUring];

    /// A buffer standing in for a mapped movie.
    fn movie() -> Vec<u8> {
        (0..100_000u32).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    fn send_and_check(ip: IpAddr, path: SendPath) {
        let rx = receiver(ip);
        let tx = sender(ip);
        let dest = rx.local_addr().unwrap();
        let data = movie();
        let mut storage = storage_on(path, 4);
        let mut expected = Vec::new();
        {
            let mut batch = storage.begin();
            for i in 0..40u16 {
                let off = usize::from(i) * 997;
                // Two or three spans of varying lengths, one of them empty now and then.
                let spans: Vec<&[u8]> = match i % 3 {
                    0 => vec![&data[off..off + 100], &data[off + 5000..off + 6000]],
                    1 => vec![
                        &data[off..off + 1],
                        &[],
                        &data[off + 10..off + 300],
                        &data[off + 7..off + 1207],
                    ],
                    _ => vec![&data[off..off + 1304]],
                };
                let h = header(i);
                batch.push(dest, &h, spans.iter().copied());
                let mut packet = h.to_vec();
                spans.iter().for_each(|s| packet.extend_from_slice(s));
                expected.push(packet);
            }
            assert_eq!(batch.len(), 40);
            let flushed = batch.flush(&tx).unwrap();
            assert_eq!(
                flushed,
                Flushed {
                    sent: 40,
                    would_block: 0,
                    failed: 0
                }
            );
            assert!(batch.is_empty());
        }
        let mut buf = [0u8; 2048];
        for packet in &expected {
            let (n, from) = rx.recv_from(&mut buf).unwrap();
            assert_eq!(from, tx.local_addr().unwrap());
            assert_eq!(&buf[..n], &packet[..]);
        }
    }

    #[test]
    fn sends_split_payloads_ipv4() {
        for path in PATHS {
            send_and_check(IpAddr::V4(Ipv4Addr::LOCALHOST), path);
        }
    }

    #[test]
    fn sends_split_payloads_ipv6() {
        for path in PATHS {
            send_and_check(IpAddr::V6(Ipv6Addr::LOCALHOST), path);
        }
    }

    #[test]
    fn small_leading_slices_ride_in_the_header_slot() {
        let rx = receiver(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let tx = sender(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let data = movie();
        let mut storage = SendBatch::new();
        let mut batch = storage.begin();
        // An FU-A-like packet: two immediate bytes, then the media; and one
        // whose small slices fill the slot exactly, then overflow it.
        let first = [&data[0..2], &data[100..600], &data[7..10]];
        let second = [&data[20..30], &data[40..50], &data[60..61], &data[70..72]];
        batch.push(rx.local_addr().unwrap(), &header(1), first);
        batch.push(rx.local_addr().unwrap(), &header(2), second);
        let msgs = batch.inner.msgs.clone();
        assert_eq!(
            (msgs[0].head, msgs[0].iov_len),
            (14, 3),
            "2 bytes copied; media and tail as they are"
        );
        assert_eq!(
            (msgs[1].head, msgs[1].iov_len),
            (32, 3),
            "20 bytes copied; from the first that does not fit on, none"
        );
        assert_eq!(batch.flush(&tx).unwrap().sent, 2);
        let mut buf = [0u8; 2048];
        for (seq, parts) in [(1, &first[..]), (2, &second[..])] {
            let n = rx.recv(&mut buf).unwrap();
            assert_eq!(&buf[..12], &header(seq));
            assert_eq!(&buf[12..n], &parts.concat()[..]);
        }
    }

    #[test]
    fn datagrams_of_any_length_go_as_they_are() {
        let rx = receiver(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let tx = sender(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let data = movie();
        let mut storage = SendBatch::new();
        let mut batch = storage.begin();
        let (short, long) = (&data[3..11], &data[100..700]);
        batch.push_datagram(rx.local_addr().unwrap(), short);
        batch.push_datagram(rx.local_addr().unwrap(), long);
        batch.push(rx.local_addr().unwrap(), &header(5), [&data[0..4]]);
        assert_eq!(batch.flush(&tx).unwrap().sent, 3);
        let mut buf = [0u8; 2048];
        for want in [short, long, &[&header(5)[..], &data[0..4]].concat()[..]] {
            let n = rx.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], want);
        }
    }

    #[test]
    fn storage_is_reused_across_batches_and_destinations() {
        let rx1 = receiver(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let rx2 = receiver(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let tx = sender(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let data = movie();
        let mut storage = SendBatch::new();
        for round in 0..3u8 {
            let mut batch = storage.begin();
            for i in 0..6u16 {
                let dest = if i % 2 == 0 { &rx1 } else { &rx2 };
                let off = usize::from(round) * 10 + usize::from(i);
                batch.push(dest.local_addr().unwrap(), &header(i), [&data[off..off + 20]]);
            }
            assert_eq!(batch.flush(&tx).unwrap().sent, 6);
            // Pushing again after a flush, in the same batch.
            batch.push(rx1.local_addr().unwrap(), &header(99), [&data[..3]]);
            assert_eq!(batch.flush(&tx).unwrap().sent, 1);
            let mut buf = [0u8; 64];
            for i in 0..3u16 {
                for (rx, seq) in [(&rx1, 2 * i), (&rx2, 2 * i + 1)] {
                    let n = rx.recv(&mut buf).unwrap();
                    assert_eq!(&buf[..12], &header(seq));
                    let off = usize::from(round) * 10 + usize::from(seq);
                    assert_eq!(&buf[12..n], &data[off..off + 20]);
                }
            }
            let n = rx1.recv(&mut buf).unwrap();
            assert_eq!((&buf[..12], &buf[12..n]), (&header(99)[..], &data[..3]));
        }
    }

    #[test]
    fn many_slices_spill_into_one_iovec() {
        let rx = receiver(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let tx = sender(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let data = movie();
        let mut storage = SendBatch::new();
        let mut batch = storage.begin();
        let mut expected = Vec::new();
        for count in [MAX_IOVECS - 2, MAX_IOVECS - 1, MAX_IOVECS, MAX_IOVECS + 1, 40] {
            let spans: Vec<&[u8]> = (0..count).map(|i| &data[i * 50..i * 50 + 10 + i]).collect();
            batch.push(rx.local_addr().unwrap(), &header(count as u16), spans.iter().copied());
            let msg = *batch.inner.msgs.last().unwrap();
            assert!(msg.iov_len as usize <= MAX_IOVECS);
            let mut packet = header(count as u16).to_vec();
            spans.iter().for_each(|s| packet.extend_from_slice(s));
            expected.push(packet);
        }
        assert_eq!(batch.flush(&tx).unwrap().sent, expected.len());
        let mut buf = [0u8; 2048];
        for packet in &expected {
            let n = rx.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], &packet[..]);
        }
    }

    #[test]
    fn bad_destination_is_skipped_and_the_rest_go() {
        for path in PATHS {
            let rx = receiver(IpAddr::V4(Ipv4Addr::LOCALHOST));
            let tx = sender(IpAddr::V4(Ipv4Addr::LOCALHOST));
            let good = rx.local_addr().unwrap();
            // An IPv6 destination on an IPv4 socket: refused for that message only.
            let bad: SocketAddr = "[::1]:9".parse().unwrap();
            let mut storage = storage_on(path, 8);
            let mut batch = storage.begin();
            for (i, dest) in [bad, good, good, bad, bad, good].into_iter().enumerate() {
                batch.push(dest, &header(i as u16), [&b"payload"[..]]);
            }
            let flushed = batch.flush(&tx).unwrap();
            assert_eq!(
                flushed,
                Flushed {
                    sent: 3,
                    would_block: 0,
                    failed: 3
                },
                "{path}"
            );
            assert_eq!(storage.unsent(), [0..1, 3..5], "{path}");
            let mut buf = [0u8; 64];
            for seq in [1u16, 2, 5] {
                let n = rx.recv(&mut buf).unwrap();
                assert_eq!(&buf[..n - 7], &header(seq), "{path}");
            }
        }
    }

    #[test]
    fn tiny_send_buffer_counts_add_up() {
        for path in PATHS {
            let rx = receiver(IpAddr::V4(Ipv4Addr::LOCALHOST));
            let tx = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
            tx.set_send_buffer_size(1).unwrap();
            tx.set_nonblocking(true).unwrap();
            tx.bind(&SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0).into())
                .unwrap();
            let tx: UdpSocket = tx.into();
            let data = vec![0xabu8; 60_000];
            let mut storage = storage_on(path, 200);
            let mut total = Flushed::default();
            for _ in 0..20 {
                let mut batch = storage.begin();
                for i in 0..200u16 {
                    batch.push(rx.local_addr().unwrap(), &header(i), [&data[..], &data[..1000]]);
                }
                let flushed = batch.flush(&tx).unwrap();
                assert_eq!(flushed.sent + flushed.would_block + flushed.failed, 200);
                let unsent: usize = storage.unsent().iter().map(|r| r.len()).sum();
                assert_eq!(unsent, flushed.would_block + flushed.failed);
                assert!(storage.unsent().iter().all(|r| r.end <= 200 && !r.is_empty()));
                assert!(
                    storage.unsent().windows(2).all(|w| w[0].end < w[1].start),
                    "ascending and apart"
                );
                total.add(flushed);
            }
            assert_eq!(total.sent + total.would_block + total.failed, 4000);
        }
    }

    #[test]
    fn ranges_that_touch_are_joined() {
        let mut r = vec![0..2, 2..5, 7..8, 8..9, 10..11];
        merge_adjacent(&mut r);
        assert_eq!(r, [0..5, 7..9, 10..11]);
        let mut empty: Vec<Range<usize>> = Vec::new();
        merge_adjacent(&mut empty);
        assert!(empty.is_empty());
    }

    #[test]
    fn drive_sorts_partial_sends_and_errors() {
        let err = |code| Err(io::Error::from_raw_os_error(code));
        // 10 messages: 4 go, one is refused, 3 go, EINTR, then the buffer fills.
        let mut script: Vec<io::Result<usize>> = vec![
            Ok(4),
            err(libc::ECONNREFUSED),
            Ok(3),
            err(libc::EINTR),
            err(libc::EAGAIN),
        ];
        script.reverse();
        let mut calls = Vec::new();
        let mut unsent = Vec::new();
        let done = drive(&[1; 10], &mut unsent, |pos, count| {
            calls.push((pos, count));
            script.pop().unwrap()
        })
        .unwrap();
        assert_eq!(unsent, [4..5, 8..10], "the refused one, then what the full buffer left");
        let expected = Flushed {
            sent: 7,
            would_block: 2,
            failed: 1,
        };
        assert_eq!(
            (done.flushed, done.gso_refused_at, done.first_sent),
            (expected, None, true)
        );
        assert_eq!(calls, [(0, 10), (4, 6), (5, 5), (8, 2), (8, 2)]);

        // More messages than one call takes.
        let mut calls = Vec::new();
        let done = drive(&[1; 2500], &mut unsent, |pos, count| {
            calls.push((pos, count));
            Ok(count)
        })
        .unwrap();
        assert_eq!(done.flushed.sent, 2500);
        assert_eq!(unsent, [4..5, 8..10], "nothing more left out");
        assert_eq!(calls, [(0, 1024), (1024, 1024), (2048, 452)]);

        // A dead socket is an error, not a count.
        assert!(drive(&[1; 3], &mut Vec::new(), |_, _| err(libc::EBADF)).is_err());
    }

    #[test]
    fn drive_counts_packets_of_gso_runs() {
        let err = |code| Err(io::Error::from_raw_os_error(code));
        // Runs of 5, 1, 3, 2, 4 packets: the first two go, the run of 3 is
        // unreachable, the run of 2 goes, then the buffer is full.
        let mut script: Vec<io::Result<usize>> = vec![Ok(2), err(libc::ENETUNREACH), Ok(1), err(libc::EAGAIN)];
        script.reverse();
        let mut unsent = Vec::new();
        let done = drive(&[5, 1, 3, 2, 4], &mut unsent, |_, _| script.pop().unwrap()).unwrap();
        let expected = Flushed {
            sent: 8,
            would_block: 4,
            failed: 3,
        };
        assert_eq!((done.flushed, done.gso_refused_at), (expected, None));
        assert_eq!(unsent, [6..9, 11..15], "positions are packets, not messages");

        // GSO refused at the third message: what went before counts, the rest is left to retry.
        let mut script: Vec<io::Result<usize>> = vec![Ok(2), err(libc::EIO)];
        script.reverse();
        let mut unsent = Vec::new();
        let done = drive(&[5, 1, 3, 2], &mut unsent, |_, _| script.pop().unwrap()).unwrap();
        assert_eq!(done.flushed.sent, 6);
        assert_eq!(done.gso_refused_at, Some(2));
        assert!(unsent.is_empty(), "a run refused as GSO is retried, not lost");
        // The same error on a single packet is that packet's failure.
        let mut script: Vec<io::Result<usize>> = vec![err(libc::EINVAL), Ok(1)];
        script.reverse();
        let done = drive(&[1, 1], &mut Vec::new(), |_, _| script.pop().unwrap()).unwrap();
        assert_eq!(
            (done.flushed.sent, done.flushed.failed, done.gso_refused_at),
            (1, 1, None)
        );
        assert!(!done.first_sent);
    }

    /// Sizes and destinations of packets, and the messages `build` makes of them.
    fn grouping(packets: &[(usize, u16)]) -> Vec<u32> {
        let data = vec![0u8; 70_000];
        let mut storage = SendBatch::new();
        let mut batch = storage.begin();
        for &(len, port) in packets {
            let dest = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
            batch.push(dest, &header(0), [&data[..len - RTP_HEADER_LEN]]);
        }
        batch.inner.settle_iovecs();
        let all = 0..batch.inner.msgs.len();
        batch.inner.build(&[all], true);
        assert_eq!(batch.inner.hdrs.len(), batch.inner.weights.len());
        batch.inner.weights.clone()
    }

    #[test]
    fn gso_runs_are_equal_sizes_to_one_destination() {
        // Equal sizes, a short last one ends the run, a longer one starts a new one.
        assert_eq!(
            grouping(&[(1316, 1), (1316, 1), (1316, 1), (700, 1), (1316, 1), (1316, 1)]),
            [4, 2]
        );
        // A larger packet after the first cannot join; another destination cannot either.
        assert_eq!(
            grouping(&[(500, 1), (1316, 1), (1316, 2), (1316, 2), (1316, 1)]),
            [1, 1, 2, 1]
        );
        // At most 64 segments, and at most MAX_GSO_BYTES in one message.
        assert_eq!(grouping(&[(100, 1); 130]), [64, 64, 2]);
        assert_eq!(grouping(&[(1316, 1); 100]), [49, 49, 2]);
        assert_eq!(grouping(&[(40_000, 1); 3]), [1, 1, 1]);
        assert_eq!(grouping(&[(20_000, 1); 3]), [3]);
    }

    fn send_run(path: SendPath, gso: bool, no_check: bool) -> (Flushed, bool) {
        let rx = receiver(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let tx = sender(IpAddr::V4(Ipv4Addr::LOCALHOST));
        if no_check {
            let on: libc::c_int = 1;
            // SAFETY: a live socket and a `c_int` option value of the size passed.
            let rc = unsafe {
                libc::setsockopt(
                    tx.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_NO_CHECK,
                    &on as *const libc::c_int as *const libc::c_void,
                    mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            assert_eq!(rc, 0);
        }
        let data = movie();
        let mut storage = storage_on(path, 64);
        storage.set_gso(gso);
        let mut expected = Vec::new();
        let mut batch = storage.begin();
        // A frame of 20 equal fragments ending in a short one, twice, each fragment in two spans.
        for i in 0..42u16 {
            let len = if i % 21 == 20 { 333 } else { 1304 };
            let off = usize::from(i) * 1500;
            let spans = [&data[off..off + 100], &data[off + 100..off + len]];
            batch.push(rx.local_addr().unwrap(), &header(i), spans);
            let mut packet = header(i).to_vec();
            packet.extend_from_slice(&data[off..off + len]);
            expected.push(packet);
        }
        let flushed = batch.flush(&tx).unwrap();
        let mut buf = [0u8; 2048];
        for packet in &expected {
            let n = rx.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], &packet[..]);
        }
        (flushed, storage.gso())
    }

    #[test]
    fn gso_runs_arrive_as_separate_datagrams() {
        let all = Flushed {
            sent: 42,
            ..Flushed::default()
        };
        for path in PATHS {
            assert_eq!(send_run(path, true, false), (all, true), "{path}");
            assert_eq!(send_run(path, false, false), (all, false), "{path}");
        }
    }

    #[test]
    fn refused_gso_falls_back_to_single_packets() {
        // The kernel refuses GSO on a socket without UDP checksums.
        let all = Flushed {
            sent: 42,
            ..Flushed::default()
        };
        for path in PATHS {
            assert_eq!(send_run(path, true, true), (all, false), "{path}");
        }
    }
}
