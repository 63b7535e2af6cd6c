//! The pieces of a shard's send round that do not depend on the runtime:
//! which session is due next, and the round's UDP packets on their way into
//! one batched `sendmmsg`.
//!
//! A round goes: pop every session due by the horizon from the
//! [`Schedule`], let [`serve_due`] take what its [`Source`] has due (UDP
//! packets into the [`UdpRound`], interleaved ones to their connection),
//! push the session back with its next due time, then [`UdpRound::flush`]
//! once.
//!
//! A queued UDP packet is written straight into the round's
//! [`net::OwnedBatch`] (its header copied, its payload as iovecs into the
//! mapping), which holds the round's payload owners (one `Bytes` clone per
//! distinct owner per round, found by pointer, most often "the same as the
//! last packet's"), so the flush needs no session, each packet costs no
//! reference-count traffic, and nothing is copied to a list in between. Packets are counted as sent when the kernel takes them: the
//! flush records the ones it did not take, and the shard takes those back
//! out of their streams' counters ([`UdpRound::take_unsent`]).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::{SocketAddr, UdpSocket};
use std::ops::Range;

use bytes::Bytes;
use loader::Span;
use net::{Flushed, OwnedBatch, SendBatch, SendPath, RING_ENTRIES, RTP_HEADER_LEN};
use smallvec::SmallVec;

use crate::session::{Destination, Dests};
use crate::source::{All, Nanos, Outgoing, Payload, Pick, Source};
use crate::stats::ShardStats;

// The socket layer's header slot holds exactly the header the protocol writes.
const _: () = assert!(RTP_HEADER_LEN == proto::rtp::HEADER_LEN);

/// A session's key in its shard.
pub type SessionKey = u64;

/// A map keyed by numbers the server drew at random itself (session keys,
/// SSRCs) or counts up (reply tickets): they need no keyed hash to resist
/// collisions chosen by a client, and the shard looks sessions up for every
/// packet it sends, where SipHash shows in profiles.
pub type KeyMap<K, V> = HashMap<K, V, BuildHasherDefault<KeyHasher>>;

/// Fibonacci hashing of one integer: a multiply spreads any bits of the key,
/// low or high, over the whole word the hash table takes its bits from.
#[derive(Debug, Default, Clone, Copy)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }

    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n);
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.0 = n as u64;
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }
}

/// Log2 of a schedule bucket's width in nanoseconds: about a millisecond,
/// a round's lookahead, so a round takes a bucket or two.
const BUCKET_SHIFT: u32 = 20;
/// Buckets in the wheel: 256 of them reach about 268 ms ahead, past the gap
/// between two wake-ups of a session (ffmpeg's hinter sends video in groups
/// of three frames, 120 ms apart at 25 frames a second, and AAC in packets
/// of seven frames, 149 ms apart; a wheel of 64 sent a quarter of its
/// entries through the heap). Every bucket keeps the capacity it grew to, about a
/// 120th of the sessions each, some 80 bytes per session in all.
const BUCKETS: u64 = 256;

/// A schedule entry: due time, session, generation. Ordered by all three,
/// as the schedule pops them.
pub type Due = (Nanos, SessionKey, u32);

/// Sessions by next due time. Each entry carries the session's generation
/// when it was pushed; a session that was paused, moved or ended bumps its
/// generation, and its stale entries are skipped when they come up.
///
/// A timer wheel of buckets of about a millisecond, rather than a heap: a
/// shard pushes and pops every session many times a second, and with
/// thousands of sessions a heap's sift-down is a dozen dependent cache
/// misses per pop (at 8,000 sessions it was the shard's costliest function
/// of its own). A push here appends to its bucket; the earliest bucket is
/// sorted once when it comes up (some tens of entries at 8,000 sessions, in
/// contiguous memory) and popped from its end. Entries due further ahead than the wheel
/// reaches wait in a heap and move into the wheel as it turns. Entries come
/// out in exactly the order a heap of `(due, key, generation)` gives.
#[derive(Debug, Default)]
pub struct Schedule {
    /// `BUCKETS` buckets, made on the first push; absolute bucket `b`
    /// (`due >> BUCKET_SHIFT`) lives at `b % BUCKETS`.
    wheel: Vec<Vec<Due>>,
    /// The absolute bucket no entry of the wheel is before (an entry due
    /// earlier was put in it). At most one past the last horizon's bucket,
    /// and moved back for an entry due before it, so an overdue entry is
    /// never held back.
    first: u64,
    /// Whether bucket `first` is sorted, latest first.
    sorted: bool,
    /// Entries due at bucket `first + BUCKETS` or later.
    far: BinaryHeap<Reverse<Due>>,
    in_wheel: usize,
}

impl Schedule {
    pub fn push(&mut self, due: Nanos, key: SessionKey, generation: u32) {
        if self.wheel.is_empty() {
            self.wheel = (0..BUCKETS).map(|_| Vec::new()).collect();
        }
        let b = due >> BUCKET_SHIFT;
        if self.is_empty() {
            self.first = b;
            self.sorted = false;
        } else if b < self.first {
            self.move_first_back(b);
        }
        self.place((due, key, generation));
    }

    /// Puts `e` in its bucket (bucket `first` when it is due before it) or,
    /// beyond the wheel, in `far`.
    fn place(&mut self, e: Due) {
        let b = (e.0 >> BUCKET_SHIFT).max(self.first);
        if b >= self.first + BUCKETS {
            self.far.push(Reverse(e));
            return;
        }
        let bucket = &mut self.wheel[(b % BUCKETS) as usize];
        if b == self.first && self.sorted {
            let at = bucket.partition_point(|x| *x > e);
            bucket.insert(at, e);
        } else {
            bucket.push(e);
        }
        self.in_wheel += 1;
    }

    /// Makes `b` (before `first`) the first bucket: what lay in the buckets
    /// it now aliases, at the far end of the wheel, moves to `far`.
    #[cold]
    fn move_first_back(&mut self, b: u64) {
        let aliased = (self.first - b).min(BUCKETS);
        for i in 0..aliased {
            let slot = ((b + i) % BUCKETS) as usize;
            self.in_wheel -= self.wheel[slot].len();
            self.far.extend(self.wheel[slot].drain(..).map(Reverse));
        }
        self.first = b;
        self.sorted = false;
    }

    /// Makes `b` (not before `first`) the first bucket and takes in what
    /// `far` has for the buckets that come into reach.
    fn move_first_to(&mut self, b: u64) {
        self.first = b;
        self.sorted = false;
        while let Some(&Reverse(e)) = self.far.peek() {
            if e.0 >> BUCKET_SHIFT >= self.first + BUCKETS {
                break;
            }
            self.far.pop();
            self.place(e);
        }
    }

    /// The next entry due by `horizon`, removed.
    pub fn pop_due(&mut self, horizon: Nanos) -> Option<(Nanos, SessionKey, u32)> {
        let last = horizon >> BUCKET_SHIFT;
        loop {
            if self.in_wheel == 0 {
                // Only far entries (or none): jump to the earliest, if due.
                let &Reverse(e) = self.far.peek()?;
                if e.0 > horizon {
                    return None;
                }
                self.move_first_to(e.0 >> BUCKET_SHIFT);
                continue;
            }
            if self.first > last {
                return None;
            }
            let slot = (self.first % BUCKETS) as usize;
            if self.wheel[slot].is_empty() {
                self.move_first_to(self.first + 1);
                continue;
            }
            if !self.sorted {
                self.wheel[slot].sort_unstable_by(|a, b| b.cmp(a));
                self.sorted = true;
            }
            let bucket = &mut self.wheel[slot];
            if bucket.last().is_some_and(|e| e.0 > horizon) {
                return None;
            }
            self.in_wheel -= 1;
            return bucket.pop();
        }
    }

    /// When the earliest entry is due.
    pub fn next_due(&self) -> Option<Nanos> {
        if self.in_wheel > 0 {
            for i in 0..BUCKETS {
                let bucket = &self.wheel[((self.first + i) % BUCKETS) as usize];
                let earliest = if i == 0 && self.sorted {
                    bucket.last().map(|e| e.0)
                } else {
                    bucket.iter().map(|e| e.0).min()
                };
                if earliest.is_some() {
                    return earliest;
                }
            }
        }
        self.far.peek().map(|r| r.0 .0)
    }

    pub fn len(&self) -> usize {
        self.in_wheel + self.far.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries the wheel's buckets have room for, in all.
    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.wheel.iter().map(Vec::capacity).sum()
    }
}

/// Takes every packet session `key` has due by `horizon` (`now` plus the
/// round's lookahead): UDP packets go into `udp`, which counts them when the
/// kernel takes them; interleaved ones go to `tcp` with their RTP channel,
/// which says whether it could queue them; each UDP packet queued is shown
/// to `keep` (a session's retransmission history; a no-op for the others,
/// compiled away). A packet queued on a connection
/// is counted in `stats` with how late it is at `now`; one its full queue
/// refused is counted as dropped and taken back out of its stream's counts.
/// Returns when the session is due next; `None` when it is paused or has
/// ended.
#[allow(clippy::too_many_arguments)]
#[inline]
pub fn serve_due(
    key: SessionKey,
    source: &mut Source,
    dests: &Dests,
    now: Nanos,
    horizon: Nanos,
    udp: &mut UdpRound,
    stats: &mut ShardStats,
    tcp: impl FnMut(u8, &Outgoing<'_>) -> bool,
    keep: impl FnMut(&Outgoing<'_>),
) -> Option<Nanos> {
    serve_picked(
        key, source, dests, now, horizon, horizon, &mut All, udp, stats, tcp, keep,
    )
}

/// As [`serve_due`], and also what `pick` lets go ahead of real time, up
/// to `ahead`, less what it leaves out (see [`Pick`]): the round of a
/// session sent ahead (Instant-On) or thinned.
#[allow(clippy::too_many_arguments)]
#[inline]
pub fn serve_picked<P: Pick>(
    key: SessionKey,
    source: &mut Source,
    dests: &Dests,
    now: Nanos,
    horizon: Nanos,
    ahead: Nanos,
    pick: &mut P,
    udp: &mut UdpRound,
    stats: &mut ShardStats,
    mut tcp: impl FnMut(u8, &Outgoing<'_>) -> bool,
    mut keep: impl FnMut(&Outgoing<'_>),
) -> Option<Nanos> {
    // (stream, payload bytes) of interleaved packets a full queue refused.
    let mut refused: SmallVec<[(usize, usize); 4]> = SmallVec::new();
    source.poll_picked(horizon, ahead, pick, |o| {
        let late = now.saturating_sub(horizon - o.late_ns);
        match dests.get(o.stream) {
            Some(Destination::Udp { rtp, .. }) => {
                udp.queue(key, rtp, late, &o);
                keep(&o);
            }
            Some(Destination::Tcp { rtp_channel, .. }) => {
                if tcp(rtp_channel, &o) {
                    stats.record_send(late, (RTP_HEADER_LEN + o.payload.len()) as u64);
                } else {
                    stats.dropped_tcp += 1;
                    refused.push((o.stream, o.payload.len()));
                }
            }
            None => refused.push((o.stream, o.payload.len())),
        }
    });
    for (stream, len) in refused {
        if let Some(s) = source.streams_mut().get_mut(stream) {
            s.unsend(len);
        }
        source.refused(stream);
    }
    source.next_due()
}

/// What a UDP packet queued this round counts for, once the kernel has
/// taken it or not: the packet itself (destination, header, payload spans)
/// is written straight into the round's batch.
struct Pending {
    key: SessionKey,
    /// How late it was when it was chosen.
    late_ns: u64,
    /// Payload bytes (an RTX packet's original sequence number included).
    len: u32,
    stream: u16,
}

/// The `stream` of a retransmission: no stream's counters count it (RFC
/// 3550's sender counts are the media stream's).
const RTX_STREAM: u16 = u16::MAX;
/// The `stream` of a reliable-UDP resend: the same packet again, counted
/// as a resend, not as media.
const RESEND_STREAM: u16 = u16::MAX - 1;

/// A packet the kernel did not take: the session and stream that counted
/// it, and its payload length, to take back out of the stream's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsent {
    pub key: SessionKey,
    pub stream: usize,
    pub payload_len: usize,
}

/// Packets a round takes: once its [`UdpRound`] holds this many, the shard
/// leaves the sessions still due for the next round, a millisecond on (at
/// most 4 million packets a second, about ten times what a core sends). A
/// round at 10,000 sessions takes a few hundred; after a stall (the core
/// starved for seconds) every session's backlog would come at once, and
/// the memory of hundreds of thousands of queued packets, tens of
/// megabytes, would stay with the process. Also the room a `UdpRound` keeps
/// once a round has filled it: a header slot, iovecs, a message header and
/// the accounting per packet, about 230 bytes, so under 1 MiB.
pub const ROUND_PACKETS: usize = 4096;

/// The round's UDP packets, sent together.
pub struct UdpRound {
    /// The packets, written as they are queued, their payloads' owners
    /// held by the batch (one clone each per round).
    batch: OwnedBatch,
    /// What each packet in `batch` counts for, in the same order.
    pending: Vec<Pending>,
    /// The batch's number for an owner, by the owner's address (and its
    /// length), for a packet whose owner is not the previous packet's.
    owner_index: KeyMap<usize, (u32, usize)>,
    /// (address, length, number) of the last owner looked up.
    last_owner: Option<(usize, usize, u32)>,
    /// Packets the flushes did not send, until [`take_unsent`](Self::take_unsent).
    unsent: Vec<Unsent>,
}

impl UdpRound {
    /// At most `per_call` messages go in one `sendmmsg`; a round of more
    /// makes more calls. The room a round keeps grows to what rounds take
    /// (at most about [`ROUND_PACKETS`]).
    pub fn new(per_call: usize) -> UdpRound {
        let mut batch = OwnedBatch::with_capacity(per_call);
        batch.set_messages_per_call(per_call);
        UdpRound {
            batch,
            pending: Vec::with_capacity(per_call),
            owner_index: KeyMap::default(),
            last_owner: None,
            unsent: Vec::new(),
        }
    }

    /// Queues `out` for `dest`, `late_ns` late, for stream `out.stream` of
    /// session `key`.
    #[inline]
    pub fn queue(&mut self, key: SessionKey, dest: SocketAddr, late_ns: u64, out: &Outgoing<'_>) {
        let owner = self.owner(out.payload.owner);
        self.batch.push(dest, &out.header, &[], owner, spans(out.payload.spans));
        self.pending.push(Pending {
            key,
            late_ns,
            len: out.payload.len() as u32,
            stream: out.stream as u16,
        });
    }

    /// Queues a retransmission for `dest`: the RTX packet's own header,
    /// then the original sequence number, then the original payload
    /// (spans of its owner, as the original went). Counted as sent when
    /// the kernel takes it, in no stream's counters.
    pub fn queue_rtx(
        &mut self,
        key: SessionKey,
        dest: SocketAddr,
        header: &[u8; RTP_HEADER_LEN],
        osn: [u8; 2],
        payload: Payload<'_>,
    ) {
        self.queue_repair(key, dest, header, Some(osn), payload, RTX_STREAM);
    }

    /// Queues a reliable-UDP resend for `dest`: the packet as it first
    /// went (its header, its payload as spans of its owner). Counted as a
    /// resend when the kernel takes it, in no stream's counters.
    pub fn queue_resend(
        &mut self,
        key: SessionKey,
        dest: SocketAddr,
        header: &[u8; RTP_HEADER_LEN],
        payload: Payload<'_>,
    ) {
        self.queue_repair(key, dest, header, None, payload, RESEND_STREAM);
    }

    /// A repair packet (an RTX packet with its original sequence number
    /// `osn`, or a resend without), counted under `stream`.
    fn queue_repair(
        &mut self,
        key: SessionKey,
        dest: SocketAddr,
        header: &[u8; RTP_HEADER_LEN],
        osn: Option<[u8; 2]>,
        payload: Payload<'_>,
        stream: u16,
    ) {
        let owner = self.owner(payload.owner);
        let osn = osn.as_ref().map_or(&[][..], |o| &o[..]);
        self.batch.push(dest, header, osn, owner, spans(payload.spans));
        self.pending.push(Pending {
            key,
            late_ns: 0,
            len: (payload.len() + osn.len()) as u32,
            stream,
        });
    }

    /// The batch's number for `owner`, adding a clone of it if it is new
    /// this round. The same owner is recognised by its address (and
    /// length): consecutive packets nearly always share it.
    #[inline]
    fn owner(&mut self, owner: &Bytes) -> u32 {
        let id = (owner.as_ptr() as usize, owner.len());
        if let Some((ptr, len, index)) = self.last_owner {
            if (ptr, len) == id {
                return index;
            }
        }
        let index = match self.owner_index.get(&id.0) {
            Some(&(i, len)) if len == id.1 => i,
            _ => {
                let i = self.batch.add_owner(owner.clone());
                self.owner_index.insert(id.0, (i, id.1));
                i
            }
        };
        self.last_owner = Some((id.0, id.1, index));
        index
    }

    /// Whether runs of equal-size packets to one client go out as one UDP
    /// GSO message (on by default; see [`SendBatch::set_gso`]).
    pub fn set_gso(&mut self, enabled: bool) {
        self.batch.set_gso(enabled);
    }

    /// Whether GSO is in use: asked for, and not refused by the kernel.
    pub fn gso(&self) -> bool {
        self.batch.gso()
    }

    /// Sends through `path` from now on. With io_uring the whole round goes
    /// in one submission (up to the ring's entries an `io_uring_enter`)
    /// rather than in `sendmmsg` calls of `per_call` messages. An error (no
    /// io_uring here) leaves the round on `sendmmsg`.
    pub fn set_send_path(&mut self, path: SendPath) -> std::io::Result<()> {
        self.batch.set_send_path(path, RING_ENTRIES)
    }

    pub fn send_path(&self) -> SendPath {
        self.batch.send_path()
    }

    /// The queued datagrams' destinations and lengths (RTP header included),
    /// in sending order.
    pub fn datagrams(&self) -> impl Iterator<Item = (SocketAddr, usize)> + '_ {
        self.batch.datagrams()
    }

    /// How many distinct payload owners the queued packets have.
    pub fn owners(&self) -> usize {
        self.batch.owners()
    }

    /// Forgets what is queued without sending or counting it.
    pub fn clear(&mut self) {
        self.batch.clear();
        self.pending.clear();
        self.forget_owners();
    }

    fn forget_owners(&mut self) {
        if !self.owner_index.is_empty() {
            self.owner_index.clear();
        }
        self.last_owner = None;
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Sends everything queued from `sock`, in `sendmmsg` calls of up to
    /// `per_call` messages (or one io_uring submission). Each packet the
    /// kernel took is counted in `stats` (with its lateness); each it did
    /// not is counted as dropped and kept for
    /// [`take_unsent`](Self::take_unsent). Returns the totals.
    pub fn flush(&mut self, sock: &UdpSocket, stats: &mut ShardStats) -> Flushed {
        let total = match self.batch.flush(sock) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, path = %self.batch.send_path(), "sending the round failed");
                let failed = self.batch.unsent().iter().map(|r| r.len()).sum();
                Flushed {
                    sent: self.pending.len() - failed,
                    would_block: 0,
                    failed,
                }
            }
        };
        self.finish(stats);
        total
    }

    /// As [`flush`](Self::flush), but each datagram, whole, goes to `send`,
    /// which says whether it was taken: for simulations and tests that run
    /// the send round without sockets.
    pub fn flush_with(&mut self, stats: &mut ShardStats, send: impl FnMut(SocketAddr, &[u8]) -> bool) -> Flushed {
        let total = self.batch.flush_each(send);
        self.finish(stats);
        total
    }

    /// After a flush: counts what went and what did not, and empties the
    /// round.
    fn finish(&mut self, stats: &mut ShardStats) {
        account(&self.pending, self.batch.unsent(), stats, &mut self.unsent);
        self.pending.clear();
        self.forget_owners();
        self.release_room();
    }

    /// Gives back the room of a round far bigger than usual: one after
    /// the core was starved for seconds queues every session's backlog
    /// (hundreds of thousands of packets, tens of megabytes), and keeping
    /// that room would hold the memory for good. Large vectors are mapped,
    /// so growing and shrinking them again costs a `mremap`, not a copy.
    fn release_room(&mut self) {
        if self.pending.capacity() > ROUND_PACKETS {
            self.pending.shrink_to(ROUND_PACKETS);
        }
        self.batch.shrink_to(ROUND_PACKETS);
    }

    /// The packets the flushes since the last call did not send.
    pub fn take_unsent(&mut self) -> std::vec::Drain<'_, Unsent> {
        self.unsent.drain(..)
    }
}

/// A payload's spans as the byte ranges of its owner they are.
#[inline]
fn spans(spans: &[Span]) -> impl Iterator<Item = Range<usize>> + '_ {
    spans.iter().map(|s| s.offset as usize..s.end() as usize)
}

/// Counts the packets of `chunk` that went in `stats`, and those at the
/// positions in `unsent_ranges` (ascending) as dropped, into `unsent`.
fn account(chunk: &[Pending], unsent_ranges: &[Range<usize>], stats: &mut ShardStats, unsent: &mut Vec<Unsent>) {
    let mut ranges = unsent_ranges.iter().peekable();
    // Media packets sent, as runs of equal lateness (in microseconds, the
    // histogram's unit): (lateness, packets, bytes).
    let mut run: (u64, u64, u64) = (0, 0, 0);
    for (i, p) in chunk.iter().enumerate() {
        while ranges.next_if(|r| r.end <= i).is_some() {}
        if ranges.peek().is_some_and(|r| r.contains(&i)) {
            stats.dropped_udp += 1;
            if p.stream >= RESEND_STREAM {
                continue;
            }
            unsent.push(Unsent {
                key: p.key,
                stream: usize::from(p.stream),
                payload_len: p.len as usize,
            });
        } else if p.stream == RTX_STREAM {
            // Not in the lateness (a resend is due when asked for) nor in
            // the media counts.
            stats.repair.rtx_sent += 1;
            stats.repair.rtx_bytes += (RTP_HEADER_LEN + p.len as usize) as u64;
        } else if p.stream == RESEND_STREAM {
            stats.repair.reliable.resent_sent += 1;
            stats.repair.reliable.resent_bytes += (RTP_HEADER_LEN + p.len as usize) as u64;
        } else {
            let late_us = p.late_ns / 1_000;
            if late_us != run.0 && run.1 > 0 {
                stats.record_sends(run.0 * 1_000, run.1, run.2);
                run.1 = 0;
                run.2 = 0;
            }
            run.0 = late_us;
            run.1 += 1;
            run.2 += (RTP_HEADER_LEN + p.len as usize) as u64;
        }
    }
    if run.1 > 0 {
        stats.record_sends(run.0 * 1_000, run.1, run.2);
    }
}

/// Entries of the RTCP round's ring.
const RTCP_RING_ENTRIES: u32 = 64;

fn set_path(batch: &mut SendBatch, path: SendPath, entries: u32) -> std::io::Result<()> {
    match path {
        SendPath::Sendmmsg => {
            batch.use_sendmmsg();
            Ok(())
        }
        SendPath::IoUring => batch.use_io_uring(entries),
    }
}

/// The RTCP packets a round sends (sender reports, BYEs), written into one
/// buffer as they come up and sent together in one `sendmmsg`, as the
/// round's RTP packets are.
#[derive(Default)]
pub struct RtcpRound {
    buf: Vec<u8>,
    /// Destination and end offset in `buf` of each packet.
    packets: Vec<(SocketAddr, usize)>,
    batch: SendBatch,
}

impl RtcpRound {
    /// Queues one compound packet for `dest`, written by `write` onto the
    /// end of the round's buffer.
    pub fn push(&mut self, dest: SocketAddr, write: impl FnOnce(&mut Vec<u8>)) {
        write(&mut self.buf);
        self.packets.push((dest, self.buf.len()));
    }

    pub fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }

    /// Forgets what is queued without sending it.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.packets.clear();
    }

    /// The queued packets, in order, with their destinations.
    pub fn datagrams(&self) -> impl Iterator<Item = (SocketAddr, &[u8])> + '_ {
        let mut start = 0;
        self.packets.iter().map(move |&(dest, end)| {
            let packet = &self.buf[start..end];
            start = end;
            (dest, packet)
        })
    }

    /// Hands each queued packet to `send`, which says whether it was taken,
    /// and forgets them: for simulations and tests without sockets.
    pub fn flush_with(&mut self, mut send: impl FnMut(SocketAddr, &[u8]) -> bool) -> Flushed {
        let mut flushed = Flushed::default();
        for (dest, packet) in self.datagrams() {
            if send(dest, packet) {
                flushed.sent += 1;
            } else {
                flushed.failed += 1;
            }
        }
        self.clear();
        flushed
    }

    /// Sends through `path` from now on (a small ring: a round's reports
    /// are few). An error leaves it on `sendmmsg`.
    pub fn set_send_path(&mut self, path: SendPath) -> std::io::Result<()> {
        set_path(&mut self.batch, path, RTCP_RING_ENTRIES)
    }

    /// Sends what is queued from `sock` and forgets it.
    pub fn flush(&mut self, sock: &UdpSocket) -> Flushed {
        let mut b = self.batch.begin();
        let mut start = 0;
        for &(dest, end) in &self.packets {
            b.push_datagram(dest, &self.buf[start..end]);
            start = end;
        }
        let flushed = match b.flush(sock) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, "sendmmsg of RTCP failed");
                Flushed {
                    failed: self.packets.len(),
                    ..Flushed::default()
                }
            }
        };
        self.buf.clear();
        self.packets.clear();
        flushed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{PacketFlags, Payload};
    use std::hash::BuildHasher;

    fn header(seq: u16) -> [u8; RTP_HEADER_LEN] {
        proto::rtp::Header {
            marker: false,
            payload_type: 96,
            sequence: seq,
            timestamp: 0,
            ssrc: 0x5151,
        }
        .to_bytes()
    }

    /// Queues a packet of `len` bytes from the start of `owner`.
    fn queue(round: &mut UdpRound, key: SessionKey, stream: usize, dest: SocketAddr, owner: &Bytes, len: u32) {
        let spans = [Span { offset: 0, len }];
        let out = Outgoing {
            stream,
            header: header(key as u16),
            payload: Payload { owner, spans: &spans },
            late_ns: 0,
            due: 0,
            flags: PacketFlags::empty(),
        };
        round.queue(key, dest, 0, &out);
    }

    fn localhost_socket() -> UdpSocket {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_nonblocking(true).unwrap();
        s
    }

    #[test]
    fn each_owner_is_kept_once_per_round() {
        let a = Bytes::from(vec![b'a'; 100]);
        let b = Bytes::from(vec![b'b'; 100]);
        let dest: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut round = UdpRound::new(8);
        for (key, owner) in [(1, &a), (2, &a), (3, &b), (4, &a), (5, &b), (6, &b)] {
            queue(&mut round, key, 0, dest, owner, key as u32);
        }
        assert_eq!((round.len(), round.owners()), (6, 2));
        let mut stats = ShardStats::default();
        let mut got = Vec::new();
        round.flush_with(&mut stats, |_, d| {
            got.push(d[12..].to_vec());
            true
        });
        let want: Vec<Vec<u8>> = [(1, b'a'), (2, b'a'), (3, b'b'), (4, b'a'), (5, b'b'), (6, b'b')]
            .into_iter()
            .map(|(n, c)| vec![c; n])
            .collect();
        assert_eq!(got, want, "each packet's payload from its own owner");
        assert_eq!((round.len(), round.owners()), (0, 0), "a flush lets go of the owners");
        assert_eq!(stats.packets, 6);
        assert_eq!(stats.bytes, (1..=6).map(|n| 12 + n).sum::<u64>());
    }

    #[test]
    fn a_backlog_round_gives_its_room_back() {
        // After a stall every session's backlog goes in one round; the next
        // rounds are small again and must not keep that round's room.
        let owner = Bytes::from(vec![1u8; 100]);
        let dest: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut round = UdpRound::new(8);
        let backlog = 3 * ROUND_PACKETS;
        for key in 0..backlog as u64 {
            queue(&mut round, key, 0, dest, &owner, 100);
        }
        let mut stats = ShardStats::default();
        let flushed = round.flush_with(&mut stats, |_, _| true);
        assert_eq!(
            (flushed.sent, stats.packets),
            (backlog, backlog as u64),
            "the whole backlog went"
        );
        assert!(
            round.pending.capacity() <= ROUND_PACKETS,
            "{} kept",
            round.pending.capacity()
        );
        queue(&mut round, 1, 0, dest, &owner, 100);
        let flushed = round.flush_with(&mut stats, |_, _| true);
        assert_eq!(flushed.sent, 1);
    }

    fn refused_packets_on(path: SendPath) {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let good = rx.local_addr().unwrap();
        // An IPv6 destination on an IPv4 socket: refused, packet by packet.
        let bad: SocketAddr = "[::1]:9".parse().unwrap();
        let owner = Bytes::from(vec![7u8; 1000]);
        let mut round = UdpRound::new(4);
        round.set_send_path(path).unwrap();
        assert_eq!(round.send_path(), path);
        let plan = [
            (1, 0, good),
            (1, 1, bad),
            (2, 0, good),
            (2, 1, good),
            (3, 0, bad),
            (3, 1, good),
        ];
        for (i, &(key, stream, dest)) in plan.iter().enumerate() {
            queue(&mut round, key, stream, dest, &owner, 100 + i as u32);
        }
        let mut stats = ShardStats::default();
        let f = round.flush(&localhost_socket(), &mut stats);
        assert_eq!((f.sent, f.failed), (4, 2));
        assert_eq!(stats.packets, 4, "only what the kernel took");
        assert_eq!(stats.bytes, [100, 102, 103, 105].iter().map(|n| 12 + n).sum::<u64>());
        assert_eq!(stats.dropped_udp, 2);
        assert_eq!(stats.lateness.len(), 4);
        let unsent: Vec<Unsent> = round.take_unsent().collect();
        assert_eq!(
            unsent,
            [
                Unsent {
                    key: 1,
                    stream: 1,
                    payload_len: 101
                },
                Unsent {
                    key: 3,
                    stream: 0,
                    payload_len: 104
                },
            ]
        );
        assert_eq!(round.take_unsent().count(), 0, "taken once");
    }

    #[test]
    fn packets_the_kernel_refuses_are_not_counted_as_sent() {
        refused_packets_on(SendPath::Sendmmsg);
        refused_packets_on(SendPath::IoUring);
    }

    #[test]
    fn runs_left_unsent_are_given_back_packet_by_packet() {
        // What a full socket buffer leaves (net's `drive` reports it as
        // ranges of positions; loopback never fills a send buffer, so the
        // ranges are given here).
        let owner = Bytes::from(vec![0u8; 100]);
        let dest: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut round = UdpRound::new(16);
        for key in 0..7 {
            queue(&mut round, key, key as usize % 2, dest, &owner, 10 + key as u32);
        }
        let mut stats = ShardStats::default();
        let mut unsent = Vec::new();
        account(&round.pending, &[1..3, 5..7], &mut stats, &mut unsent);
        let keys: Vec<u64> = unsent.iter().map(|u| u.key).collect();
        assert_eq!(keys, [1, 2, 5, 6]);
        assert_eq!(unsent[0].payload_len, 11);
        assert_eq!(unsent[1].stream, 0);
        assert_eq!((stats.packets, stats.dropped_udp), (3, 4));
        assert_eq!(stats.bytes, [10, 13, 14].iter().map(|n| 12 + n).sum::<u64>());
    }

    #[test]
    fn schedule_pops_in_due_order_up_to_the_horizon() {
        let mut s = Schedule::default();
        for (due, key) in [(30, 3), (10, 1), (20, 2), (40, 4)] {
            s.push(due, key, 0);
        }
        assert_eq!(s.next_due(), Some(10));
        let mut popped = Vec::new();
        while let Some((due, key, _)) = s.pop_due(30) {
            popped.push((due, key));
        }
        assert_eq!(popped, [(10, 1), (20, 2), (30, 3)]);
        assert_eq!((s.len(), s.next_due()), (1, Some(40)));
    }

    #[test]
    fn schedule_pops_as_a_heap_would() {
        // Random pushes (near, far beyond the wheel, and overdue ones before
        // the first bucket) and pops up to moving horizons, against a heap.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut rand = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let mut s = Schedule::default();
        let mut heap: BinaryHeap<Reverse<Due>> = BinaryHeap::new();
        let mut now: Nanos = 5_000_000_000;
        for step in 0..20_000u64 {
            for _ in 0..rand(4) {
                let due = match rand(10) {
                    0 => now.saturating_sub(rand(200_000_000)),
                    1 => now + rand(5_000_000_000),
                    _ => now + rand(80_000_000),
                };
                let e = (due, rand(50), step as u32);
                s.push(e.0, e.1, e.2);
                heap.push(Reverse(e));
            }
            assert_eq!(s.next_due(), heap.peek().map(|r| r.0 .0), "step {step}");
            assert_eq!(s.len(), heap.len());
            if rand(3) == 0 {
                now += rand(3_000_000);
                let horizon = now + 1_000_000;
                loop {
                    let want = match heap.peek() {
                        Some(Reverse(e)) if e.0 <= horizon => heap.pop().map(|r| r.0),
                        _ => None,
                    };
                    assert_eq!(s.pop_due(horizon), want, "step {step}");
                    if want.is_none() {
                        break;
                    }
                }
            }
        }
        while let Some(Reverse(e)) = heap.pop() {
            assert_eq!(s.pop_due(Nanos::MAX), Some(e));
        }
        assert!(s.is_empty() && s.pop_due(Nanos::MAX).is_none());
    }

    #[test]
    fn an_overdue_push_is_not_held_back_by_a_later_first_bucket() {
        let mut s = Schedule::default();
        s.push(900_000_000, 1, 0);
        // A new session due now, long before the only entry.
        s.push(10_000_000, 2, 0);
        assert_eq!(s.next_due(), Some(10_000_000));
        assert_eq!(s.pop_due(11_000_000), Some((10_000_000, 2, 0)));
        assert_eq!(s.pop_due(11_000_000), None);
        assert_eq!(s.pop_due(900_000_000), Some((900_000_000, 1, 0)));
    }

    #[test]
    fn key_hashes_spread_small_keys_over_the_whole_word() {
        // hashbrown takes its control bits from the top of the hash: keys
        // that differ only low (SSRCs, counters) must differ there too.
        let build = BuildHasherDefault::<KeyHasher>::default();
        let tops: std::collections::HashSet<u64> = (0u32..1000).map(|k| build.hash_one(k) >> 57).collect();
        assert!(tops.len() > 64, "only {} distinct top-7-bit values", tops.len());
        assert_ne!(build.hash_one(1u64), build.hash_one(2u64));
    }

    #[test]
    fn rtcp_round_sends_each_packet_whole_to_its_destination() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut round = RtcpRound::default();
        assert!(round.is_empty());
        let long: Vec<u8> = (0..200).collect();
        round.push(a.local_addr().unwrap(), |out| out.extend_from_slice(b"\x80\xc8short"));
        round.push(b.local_addr().unwrap(), |out| out.extend_from_slice(&long));
        round.push(a.local_addr().unwrap(), |out| out.extend_from_slice(b"third"));
        assert_eq!(round.flush(&tx).sent, 3);
        // The same through an io_uring.
        round.set_send_path(SendPath::IoUring).unwrap();
        round.push(b.local_addr().unwrap(), |out| out.extend_from_slice(b"fourth"));
        assert_eq!(round.flush(&tx).sent, 1);
        assert!(round.is_empty(), "a flush forgets what it sent");
        let mut buf = [0u8; 512];
        for (sock, want) in [
            (&a, &b"\x80\xc8short"[..]),
            (&b, &long[..]),
            (&a, &b"third"[..]),
            (&b, &b"fourth"[..]),
        ] {
            let n = sock.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], want);
        }
        assert_eq!(round.flush(&tx).sent, 0);
    }
}
