//! The pieces of a shard's send round that do not depend on the runtime:
//! which session is due next, and the round's UDP packets on their way into
//! one batched `sendmmsg`.
//!
//! A round goes: pop every session due by the horizon from the
//! [`Schedule`], let its [`Playback`](crate::playback::Playback) hand over
//! what is due, queue UDP packets in the [`UdpRound`], push the session back
//! with its next due time, then [`UdpRound::flush`] once.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{SocketAddr, UdpSocket};

use loader::Span;
use smallvec::SmallVec;

use crate::net::{Flushed, SendBatch};
use crate::playback::{Nanos, Outgoing};

/// A session's key in its shard.
pub type SessionKey = u64;

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

/// A UDP packet chosen this round. The payload is kept as spans of the
/// movie, so choosing (which borrows the playback mutably) and sending
/// (which borrows the movie's bytes) need not overlap.
struct Pending {
    key: SessionKey,
    dest: SocketAddr,
    header: [u8; 12],
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
