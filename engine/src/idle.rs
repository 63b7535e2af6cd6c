//! Which connections are waiting for their client's bytes, since when, and
//! which have waited longer than the read timeout, without IO or a clock.
//!
//! The control core sweeps these a few times a second, as a shard sweeps
//! its sessions' timeouts, rather than giving each connection a runtime
//! timer: a timer is an entry in the reactor's B-tree of deadlines and
//! another in its map of timer ids, for every connection, for as long as it
//! lives (most connections are idle for as long as their session plays). A
//! connection here is one 16-byte slot in a vector, reused once it goes.

use crate::source::Nanos;

/// A connection's place in [`Reads`], from [`Reads::add`] until
/// [`Reads::remove`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket(u32);

/// Not waiting for a read.
const NOT_WAITING: Nanos = Nanos::MAX;

#[derive(Debug, Clone, Copy)]
struct Slot<T> {
    /// What the caller acts on when the connection times out; `None` for a
    /// free slot.
    token: Option<T>,
    /// Since when the connection has been waiting for bytes.
    since: Nanos,
}

/// The connections of one core, each with the time its pending read began.
#[derive(Debug)]
pub struct Reads<T> {
    slots: Vec<Slot<T>>,
    /// Slots given back, for the next connections.
    free: Vec<u32>,
}

impl<T> Default for Reads<T> {
    fn default() -> Self {
        Reads {
            slots: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl<T: Copy> Reads<T> {
    /// Watches a new connection, not waiting yet; `token` is what
    /// [`expire`](Self::expire) hands back if it times out.
    pub fn add(&mut self, token: T) -> Ticket {
        let slot = Slot {
            token: Some(token),
            since: NOT_WAITING,
        };
        match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = slot;
                Ticket(i)
            }
            None => {
                self.slots.push(slot);
                Ticket(self.slots.len() as u32 - 1)
            }
        }
    }

    /// The connection began waiting for bytes at `now`.
    pub fn waiting(&mut self, t: Ticket, now: Nanos) {
        if let Some(s) = self.slot(t) {
            s.since = now;
        }
    }

    /// The connection's read ended (bytes, its end, or an error): it is not
    /// waiting until its next read.
    pub fn arrived(&mut self, t: Ticket) {
        if let Some(s) = self.slot(t) {
            s.since = NOT_WAITING;
        }
    }

    /// Stops watching the connection: its ticket means nothing after this.
    pub fn remove(&mut self, t: Ticket) {
        if let Some(s) = self.slot(t) {
            *s = Slot {
                token: None,
                since: NOT_WAITING,
            };
            self.free.push(t.0);
        }
        // Everything gone: give the memory of a past crowd back.
        if self.free.len() == self.slots.len() && self.slots.capacity() > 64 {
            *self = Reads::default();
        }
    }

    /// Calls `f` with each connection that has been waiting for `timeout`
    /// or longer at `now`, once: it counts as not waiting from then on.
    pub fn expire(&mut self, now: Nanos, timeout: Nanos, mut f: impl FnMut(T)) {
        for s in &mut self.slots {
            let Some(token) = s.token else { continue };
            if s.since != NOT_WAITING && now.saturating_sub(s.since) >= timeout {
                s.since = NOT_WAITING;
                f(token);
            }
        }
    }

    /// How many connections are watched.
    pub fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Whether no connection is watched.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn slot(&mut self, t: Ticket) -> Option<&mut Slot<T>> {
        self.slots.get_mut(t.0 as usize).filter(|s| s.token.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Nanos = 1_000_000_000;

    fn expired(r: &mut Reads<i32>, now: Nanos, timeout: Nanos) -> Vec<i32> {
        let mut out = Vec::new();
        r.expire(now, timeout, |fd| out.push(fd));
        out
    }

    #[test]
    fn only_a_read_waiting_past_the_timeout_expires() {
        let mut r = Reads::default();
        let a = r.add(10);
        let b = r.add(11);
        let c = r.add(12);
        r.waiting(a, 0);
        r.waiting(b, 2 * S);
        // c is busy with a request: not waiting, however long it takes.
        assert_eq!(expired(&mut r, 3 * S - 1, 3 * S), Vec::<i32>::new());
        assert_eq!(expired(&mut r, 3 * S, 3 * S), vec![10]);
        // Once only.
        assert_eq!(expired(&mut r, 4 * S, 3 * S), Vec::<i32>::new());
        // Bytes came for b: its wait starts again at its next read.
        r.arrived(b);
        r.waiting(b, 4 * S);
        assert_eq!(expired(&mut r, 6 * S, 3 * S), Vec::<i32>::new());
        assert_eq!(expired(&mut r, 7 * S, 3 * S), vec![11]);
        assert_eq!(expired(&mut r, 100 * S, 3 * S), Vec::<i32>::new());
        r.waiting(c, 100 * S);
        assert_eq!(expired(&mut r, 103 * S, 3 * S), vec![12]);
    }

    #[test]
    fn a_removed_connection_never_expires_and_its_slot_is_reused() {
        let mut r = Reads::default();
        let a = r.add(1);
        let b = r.add(2);
        r.waiting(a, 0);
        r.waiting(b, 0);
        r.remove(a);
        // A stale ticket does nothing.
        r.waiting(a, 0);
        r.arrived(a);
        r.remove(a);
        assert_eq!(r.len(), 1);
        let c = r.add(3);
        assert_eq!(c, a, "the free slot is reused");
        assert_eq!(expired(&mut r, 10 * S, S), vec![2]);
        r.remove(b);
        r.remove(c);
        assert!(r.is_empty());
        let d = r.add(4);
        r.waiting(d, 0);
        assert_eq!(expired(&mut r, S, S), vec![4]);
    }

    #[test]
    fn a_crowd_gone_gives_its_memory_back() {
        let mut r = Reads::default();
        let tickets: Vec<Ticket> = (0..1000).map(|i| r.add(i)).collect();
        assert!(r.slots.capacity() >= 1000);
        for t in tickets {
            r.remove(t);
        }
        assert_eq!(r.slots.capacity(), 0);
        assert_eq!(r.free.capacity(), 0);
        let t = r.add(7);
        r.waiting(t, 0);
        assert_eq!(expired(&mut r, S, S), vec![7]);
    }
}
