//! The pieces of a shard's send round that do not depend on the runtime:
//! which session is due next, and the round's UDP packets on their way into
//! one batched `sendmmsg`.
//!
//! A round goes: pop every session due by the horizon from the
//! [`Schedule`], let [`serve_due`] take what its
//! [`Playback`](crate::playback::Playback) has due (UDP packets into the
//! [`UdpRound`], interleaved ones to their connection), push the session back
//! with its next due time, then [`UdpRound::flush`] once.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::{SocketAddr, UdpSocket};

use loader::Span;
use net::{Flushed, SendBatch, RTP_HEADER_LEN};
use smallvec::SmallVec;

use crate::playback::{Nanos, Outgoing, Playback};
use crate::session::Destination;
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
    fn finish(&self) -> u64 {
        self.0.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }
}

/// Sessions by next due time. Each entry carries the session's generation
/// when it was pushed; a session that was paused, moved or ended bumps its
/// generation, and its stale entries are skipped when they come up.
#[derive(Debug, Default)]
pub struct Schedule {
    heap: BinaryHeap<Reverse<(Nanos, SessionKey, u32)>>,
}

impl Schedule {
    pub fn push(&mut self, due: Nanos, key: SessionKey, generation: u32) {
        self.heap.push(Reverse((due, key, generation)));
    }

    /// The next entry due by `horizon`, removed.
    pub fn pop_due(&mut self, horizon: Nanos) -> Option<(Nanos, SessionKey, u32)> {
        match self.heap.peek() {
            Some(Reverse(e)) if e.0 <= horizon => self.heap.pop().map(|r| r.0),
            _ => None,
        }
    }

    /// When the earliest entry is due.
    pub fn next_due(&self) -> Option<Nanos> {
        self.heap.peek().map(|r| r.0 .0)
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

/// Takes every packet session `key` has due by `horizon` (`now` plus the
/// round's lookahead): UDP packets go into `udp`, interleaved ones to `tcp`
/// with their RTP channel, which says whether it could queue them (a full
/// queue drops the packet, and that is counted). Every packet sent is
/// counted in `stats` with how late it is at `now`. Returns when the session
/// is due next; `None` when it is paused or has ended.
#[allow(clippy::too_many_arguments)]
#[inline]
pub fn serve_due(
    key: SessionKey,
    playback: &mut Playback,
    dests: &[Destination],
    now: Nanos,
    horizon: Nanos,
    udp: &mut UdpRound,
    stats: &mut ShardStats,
    mut tcp: impl FnMut(u8, &Outgoing<'_>) -> bool,
) -> Option<Nanos> {
    playback.poll(horizon, |o| {
        let due_at = horizon - o.late_ns;
        match dests.get(o.stream) {
            Some(&Destination::Udp { rtp, .. }) => udp.queue(key, rtp, &o),
            Some(&Destination::Tcp { rtp_channel, .. }) => {
                if !tcp(rtp_channel, &o) {
                    stats.dropped_tcp += 1;
                    return;
                }
            }
            None => return,
        }
        let bytes = RTP_HEADER_LEN + o.packet.payload_len();
        stats.record_send(now.saturating_sub(due_at), bytes as u64);
    });
    playback.next_due()
}

/// A UDP packet chosen this round. The payload is kept as spans of the
/// movie, so choosing (which borrows the playback mutably) and sending
/// (which borrows the movie's bytes) need not overlap.
struct Pending {
    key: SessionKey,
    dest: SocketAddr,
    header: [u8; RTP_HEADER_LEN],
    spans: SmallVec<[Span; 6]>,
}

/// The round's UDP packets, sent together.
pub struct UdpRound {
    pending: Vec<Pending>,
    batch: SendBatch,
    capacity: usize,
}

impl UdpRound {
    /// At most `per_call` packets go in one `sendmmsg`.
    pub fn new(per_call: usize) -> UdpRound {
        UdpRound {
            pending: Vec::with_capacity(per_call),
            batch: SendBatch::with_capacity(per_call),
            capacity: per_call.max(1),
        }
    }

    pub fn queue(&mut self, key: SessionKey, dest: SocketAddr, out: &Outgoing<'_>) {
        self.pending.push(Pending {
            key,
            dest,
            header: out.header,
            spans: out.packet.payload.clone(),
        });
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

    /// The queued datagrams' destinations and lengths (RTP header included),
    /// in sending order.
    pub fn datagrams(&self) -> impl Iterator<Item = (SocketAddr, usize)> + '_ {
        self.pending.iter().map(|p| {
            let payload: usize = p.spans.iter().map(|s| s.len as usize).sum();
            (p.dest, RTP_HEADER_LEN + payload)
        })
    }

    /// Forgets what is queued without sending it.
    pub fn clear(&mut self) {
        self.pending.clear();
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Sends everything queued from `sock`, `per_call` packets per
    /// `sendmmsg`; `data(key)` is the mapped movie of session `key` (`None`
    /// if it is gone: its packets are skipped). Returns the totals.
    pub fn flush<'d>(&mut self, sock: &UdpSocket, data: impl Fn(SessionKey) -> Option<&'d [u8]>) -> Flushed {
        let mut total = Flushed::default();
        for chunk in self.pending.chunks(self.capacity) {
            let mut b = self.batch.begin();
            for p in chunk {
                let Some(d) = data(p.key) else { continue };
                b.push(p.dest, &p.header, p.spans.iter().map(|s| s.bytes(d)));
            }
            match b.flush(sock) {
                Ok(f) => {
                    total.sent += f.sent;
                    total.would_block += f.would_block;
                    total.failed += f.failed;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "sendmmsg failed");
                    total.failed += chunk.len();
                }
            }
        }
        self.pending.clear();
        total
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
    use std::hash::BuildHasher;

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
        assert!(round.is_empty(), "a flush forgets what it sent");
        let mut buf = [0u8; 512];
        for (sock, want) in [(&a, &b"\x80\xc8short"[..]), (&b, &long[..]), (&a, &b"third"[..])] {
            let n = sock.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], want);
        }
        assert_eq!(round.flush(&tx).sent, 0);
    }
}
