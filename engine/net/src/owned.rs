//! A send batch filled over time: it holds its payloads' owners itself.
//!
//! [`Batch<'a>`](crate::Batch) proves its iovecs alive by a borrow, which
//! suits a caller that has every payload at hand when it pushes. A shard's
//! round has not: it picks each packet while it holds its session mutably,
//! one session after another, and the payloads are spans of `Bytes` owners
//! (a movie's mapping, a live packet) that the sessions lend only for the
//! moment. [`OwnedBatch`] keeps a clone of each owner (once per owner per
//! round, not once per packet) for as long as its iovecs point into it, so a
//! packet is written into the batch as it is picked, with nothing copied to
//! an intermediate list and walked again at the flush.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::ops::Range;

use bytes::Bytes;

use crate::send::{Flushed, SendBatch, SendPath, RTP_HEADER_LEN};

/// Packets for one flush, their payloads as ranges of owners the batch
/// holds. See the [module docs](self).
#[derive(Debug, Default)]
pub struct OwnedBatch {
    batch: SendBatch,
    /// Every owner a queued packet's payload lies in. Moving a `Bytes`
    /// does not move its bytes, so the table may grow under the iovecs.
    owners: Vec<Bytes>,
    /// For [`flush_each`](Self::flush_each): a whole datagram.
    scratch: Vec<u8>,
}

impl OwnedBatch {
    /// Storage preallocated for `packets` packets (see
    /// [`SendBatch::with_capacity`]).
    pub fn with_capacity(packets: usize) -> OwnedBatch {
        OwnedBatch {
            batch: SendBatch::with_capacity(packets),
            owners: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// Keeps `owner` until the next flush, and returns the number that
    /// [`push`](Self::push) takes for it. Adding the same owner twice keeps
    /// two clones; telling owners apart is the caller's business.
    pub fn add_owner(&mut self, owner: Bytes) -> u32 {
        self.owners.push(owner);
        (self.owners.len() - 1) as u32
    }

    /// How many owners the batch holds.
    pub fn owners(&self) -> usize {
        self.owners.len()
    }

    /// Queues one packet for `dest`: `header` and `lead` (copied, like
    /// [`Batch::push`](crate::Batch::push)'s header; `lead` is what goes
    /// between the header and the payload, such as an RTP retransmission's
    /// original sequence number), then the byte ranges `spans` of owner
    /// `owner`, which are not copied.
    ///
    /// # Panics
    /// If `owner` is not a number [`add_owner`](Self::add_owner) returned
    /// since the last flush, or a span lies outside its owner.
    #[inline]
    pub fn push(
        &mut self,
        dest: SocketAddr,
        header: &[u8; RTP_HEADER_LEN],
        lead: &[u8],
        owner: u32,
        spans: impl IntoIterator<Item = Range<usize>>,
    ) {
        let data: &[u8] = &self.owners[owner as usize];
        self.batch
            .push_parts(dest, header, lead, spans.into_iter().map(|r| &data[r]));
    }

    /// Packets queued.
    pub fn len(&self) -> usize {
        self.batch.pushed()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The queued datagrams' destinations and lengths (RTP header
    /// included), in the order they were queued.
    pub fn datagrams(&self) -> impl ExactSizeIterator<Item = (SocketAddr, usize)> + '_ {
        self.batch.datagrams()
    }

    /// Sends everything queued, as [`Batch::flush`](crate::Batch::flush)
    /// does; then the batch is empty and its owners are let go.
    pub fn flush(&mut self, sock: &UdpSocket) -> io::Result<Flushed> {
        self.batch.forget_unsent();
        // SAFETY: every payload pushed is a range of an owner in `owners`,
        // which are neither dropped nor changed (a `Bytes` is immutable)
        // until the flush is over.
        let flushed = unsafe { self.batch.send_pushed(sock) };
        self.owners.clear();
        flushed
    }

    /// As [`flush`](Self::flush), but each datagram, whole, goes to `send`,
    /// which says whether it took it: for simulations and tests without
    /// sockets. What it refused is counted as failed.
    pub fn flush_each(&mut self, send: impl FnMut(SocketAddr, &[u8]) -> bool) -> Flushed {
        self.batch.forget_unsent();
        // SAFETY: as in `flush`.
        let flushed = unsafe { self.batch.send_each(&mut self.scratch, send) };
        self.owners.clear();
        flushed
    }

    /// Forgets what is queued, sending nothing.
    pub fn clear(&mut self) {
        self.batch.discard();
        self.owners.clear();
    }

    /// Gives back the room of more than `packets` packets, if a flush
    /// that big left it (see [`SendBatch::with_capacity`]).
    pub fn shrink_to(&mut self, packets: usize) {
        self.batch.shrink_to(packets);
        self.owners.shrink_to(packets);
    }

    /// The packets the last flush did not send, as ranges of their
    /// positions in queueing order (see [`SendBatch::unsent`]).
    pub fn unsent(&self) -> &[Range<usize>] {
        self.batch.unsent()
    }

    /// See [`SendBatch::set_messages_per_call`].
    pub fn set_messages_per_call(&mut self, messages: usize) {
        self.batch.set_messages_per_call(messages);
    }

    /// See [`SendBatch::set_gso`].
    pub fn set_gso(&mut self, enabled: bool) {
        self.batch.set_gso(enabled);
    }

    /// See [`SendBatch::gso`].
    pub fn gso(&self) -> bool {
        self.batch.gso()
    }

    /// Sends through `path` from now on, with a ring of `entries` entries
    /// for io_uring (see [`SendBatch::use_io_uring`]).
    pub fn set_send_path(&mut self, path: SendPath, entries: u32) -> io::Result<()> {
        match path {
            SendPath::Sendmmsg => {
                self.batch.use_sendmmsg();
                Ok(())
            }
            SendPath::IoUring => self.batch.use_io_uring(entries),
        }
    }

    pub fn send_path(&self) -> SendPath {
        self.batch.send_path()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    use std::time::Duration;

    /// Two owners standing in for two movies' mappings.
    fn owners() -> [Bytes; 2] {
        [
            Bytes::from((0..50_000u32).map(|i| (i * 7 + i / 251) as u8).collect::<Vec<_>>()),
            Bytes::from((0..50_000u32).map(|i| (i * 13 + 5) as u8).collect::<Vec<_>>()),
        ]
    }

    fn header(seq: u16) -> [u8; RTP_HEADER_LEN] {
        let mut h = [0u8; RTP_HEADER_LEN];
        h[0] = 0x80;
        h[1] = 96;
        h[2..4].copy_from_slice(&seq.to_be_bytes());
        h
    }

    /// Queues 60 packets to `dests` in turn, from both owners, some with a
    /// lead (one longer than the header slot has room for), with one to
    /// twenty spans; returns each as the bytes it must arrive as.
    fn fill(batch: &mut OwnedBatch, dests: &[SocketAddr]) -> Vec<(SocketAddr, Vec<u8>)> {
        let data = owners();
        let mut expected = Vec::new();
        for i in 0..60u16 {
            let which = usize::from(i % 2);
            // An owner is added once per flush; the same one again for a
            // packet whose owner another packet already added.
            let owner = if i < 2 {
                batch.add_owner(data[which].clone())
            } else {
                u32::from(i % 2)
            };
            let off = usize::from(i) * 331;
            let spans: Vec<Range<usize>> = match i % 4 {
                0 => std::iter::once(off..off + 1200).collect(),
                1 => vec![off..off + 2, off + 100..off + 900],
                2 => (0..20).map(|k| off + k * 40..off + k * 40 + 30).collect(),
                _ => vec![off..off, off + 7..off + 1007],
            };
            let lead: Vec<u8> = match i % 5 {
                0 => vec![],
                1 => vec![0xab, 0xcd],
                _ => (0..i % 5 * 9).map(|k| k as u8).collect(),
            };
            let dest = dests[usize::from(i) % dests.len()];
            batch.push(dest, &header(i), &lead, owner, spans.iter().cloned());
            let mut packet = header(i).to_vec();
            packet.extend_from_slice(&lead);
            for r in &spans {
                packet.extend_from_slice(&data[which][r.clone()]);
            }
            expected.push((dest, packet));
        }
        expected
    }

    #[test]
    fn packets_arrive_as_queued_on_both_paths() {
        for ip in [IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST)] {
            for path in [SendPath::Sendmmsg, SendPath::IoUring] {
                let rx: Vec<UdpSocket> = (0..2)
                    .map(|_| UdpSocket::bind(SocketAddr::new(ip, 0)).unwrap())
                    .collect();
                for r in &rx {
                    r.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                }
                let tx = UdpSocket::bind(SocketAddr::new(ip, 0)).unwrap();
                tx.set_nonblocking(true).unwrap();
                let dests: Vec<SocketAddr> = rx.iter().map(|r| r.local_addr().unwrap()).collect();
                let mut batch = OwnedBatch::with_capacity(4);
                batch.set_send_path(path, 64).expect("io_uring (Linux 5.18 or later)");
                let expected = fill(&mut batch, &dests);
                assert_eq!(batch.len(), expected.len());
                assert_eq!(batch.owners(), 2);
                let lens: Vec<_> = expected.iter().map(|(d, p)| (*d, p.len())).collect();
                assert_eq!(batch.datagrams().collect::<Vec<_>>(), lens);
                let flushed = batch.flush(&tx).unwrap();
                assert_eq!(
                    (flushed.sent, flushed.would_block, flushed.failed),
                    (60, 0, 0),
                    "{ip} {path}"
                );
                assert!(batch.is_empty() && batch.owners() == 0 && batch.unsent().is_empty());
                let mut buf = [0u8; 2048];
                for (r, dest) in rx.iter().zip(&dests) {
                    for (_, packet) in expected.iter().filter(|(d, _)| d == dest) {
                        let n = r.recv(&mut buf).unwrap();
                        assert_eq!(&buf[..n], &packet[..], "{ip} {path}");
                    }
                }
            }
        }
    }

    #[test]
    fn flush_each_hands_over_whole_datagrams_and_keeps_what_was_refused() {
        let dests: Vec<SocketAddr> = vec!["127.0.0.1:5000".parse().unwrap(), "[::1]:5002".parse().unwrap()];
        let mut batch = OwnedBatch::default();
        let expected = fill(&mut batch, &dests);
        let mut got = Vec::new();
        // Refuses the packets at positions 3, 4 and 10.
        let flushed = batch.flush_each(|dest, bytes| {
            got.push((dest, bytes.to_vec()));
            !matches!(got.len() - 1, 3 | 4 | 10)
        });
        assert_eq!(got, expected);
        assert_eq!((flushed.sent, flushed.failed), (57, 3));
        assert_eq!(batch.unsent(), &[3..5, 10..11]);
        assert!(batch.is_empty() && batch.owners() == 0);
        // The next flush starts with nothing unsent.
        let owner = batch.add_owner(Bytes::from_static(b"payload"));
        batch.push(dests[0], &header(1), &[], owner, std::iter::once(0..7));
        assert_eq!(batch.flush_each(|_, b| b.ends_with(b"payload")).sent, 1);
        assert!(batch.unsent().is_empty());
    }

    #[test]
    fn clearing_forgets_packets_and_owners() {
        let mut batch = OwnedBatch::default();
        fill(&mut batch, &["127.0.0.1:5000".parse().unwrap()]);
        batch.clear();
        assert!(batch.is_empty() && batch.owners() == 0);
        assert_eq!(batch.flush_each(|_, _| true), Flushed::default());
    }
}
