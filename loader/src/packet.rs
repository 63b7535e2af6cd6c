//! Packet recipes: everything needed to send one RTP packet, with the payload
//! as byte ranges of the mapped file rather than bytes.

use smallvec::SmallVec;

/// A range of bytes in the movie's mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub offset: u64,
    pub len: u32,
}

impl Span {
    pub fn end(&self) -> u64 {
        self.offset + u64::from(self.len)
    }

    /// The bytes of this span in `data`, the movie's mapping. Spans handed out
    /// by the loader are always inside it.
    #[inline]
    pub fn bytes<'a>(&self, data: &'a [u8]) -> &'a [u8] {
        &data[self.offset as usize..self.end() as usize]
    }
}

/// A packet's payload: a few spans, inline. Adjacent spans are merged as they
/// are added, so a packet that is one slice of one sample is one span.
pub type Payload = SmallVec<[Span; 6]>;

/// Flags of a packet recipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PacketFlags(u8);

impl PacketFlags {
    /// The packet carries part of a sync (key) sample.
    pub const KEY: PacketFlags = PacketFlags(1);
    /// The hinter marked it as part of a B-frame: droppable under load.
    pub const B_FRAME: PacketFlags = PacketFlags(2);
    /// A repeat of an earlier packet, for robustness: droppable.
    pub const REPEAT: PacketFlags = PacketFlags(4);

    pub const fn empty() -> Self {
        PacketFlags(0)
    }

    pub const fn contains(self, other: PacketFlags) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn set(&mut self, other: PacketFlags, on: bool) {
        if on {
            self.0 |= other.0;
        } else {
            self.0 &= !other.0;
        }
    }
}

/// One RTP packet to send: when, with which header fields, and where its
/// payload bytes are. Times are on the movie's timeline (npt), in nanoseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// ID of the hint track the packet comes from.
    pub track_id: u32,
    /// When to send it, relative to the start of the movie. Hinters may move
    /// packets slightly before their sample's time, so this can be negative.
    pub transmit_ns: i64,
    /// Sequence number as hinted (including `snro`). A server adds its own
    /// random offset.
    pub sequence: u16,
    /// RTP timestamp as hinted (including `tsro` and `rtpo`). A server adds
    /// its own random offset.
    pub timestamp: u32,
    pub marker: bool,
    pub payload_type: u8,
    pub flags: PacketFlags,
    pub payload: Payload,
}

impl Packet {
    /// Payload length in bytes (without the 12-byte RTP header).
    pub fn payload_len(&self) -> usize {
        self.payload.iter().map(|s| s.len as usize).sum()
    }

    /// Copies the payload out of `data`. For tests and tools: the send path
    /// hands the spans to the kernel instead.
    pub fn payload_bytes(&self, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.payload_len());
        for s in &self.payload {
            out.extend_from_slice(s.bytes(data));
        }
        out
    }
}

/// Appends `span` to `payload`, merging it into the last span when the two
/// are adjacent in the file. Empty spans are dropped.
#[inline]
pub(crate) fn push_span(payload: &mut Payload, span: Span) {
    if span.len == 0 {
        return;
    }
    if let Some(last) = payload.last_mut() {
        if last.end() == span.offset {
            if let Some(len) = last.len.checked_add(span.len) {
                last.len = len;
                return;
            }
        }
    }
    payload.push(span);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adjacent_spans_merge() {
        let mut p = Payload::new();
        push_span(&mut p, Span { offset: 10, len: 5 });
        push_span(&mut p, Span { offset: 15, len: 5 });
        push_span(&mut p, Span { offset: 0, len: 0 });
        push_span(&mut p, Span { offset: 40, len: 1 });
        assert_eq!(
            p.as_slice(),
            &[Span { offset: 10, len: 10 }, Span { offset: 40, len: 1 }]
        );
    }

    #[test]
    fn flags() {
        let mut f = PacketFlags::empty();
        f.set(PacketFlags::KEY, true);
        f.set(PacketFlags::REPEAT, true);
        assert!(f.contains(PacketFlags::KEY) && f.contains(PacketFlags::REPEAT));
        assert!(!f.contains(PacketFlags::B_FRAME));
        f.set(PacketFlags::KEY, false);
        assert!(!f.contains(PacketFlags::KEY));
    }
}
