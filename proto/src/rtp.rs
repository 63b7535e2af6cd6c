//! RTP packets (RFC 3550 section 5.1), in the style of smoltcp's `wire`: a
//! zero-copy view over a buffer whose lengths are checked once
//! ([`Packet`]), and the header as a plain value ([`Header`]) with parse and
//! emit.
//!
//! A server writes only the fixed 12-byte header (version 2, no padding,
//! extension or CSRCs) in front of payload it never copies: [`Header::emit`]
//! is that writer, and it runs for every packet sent. A receiver reads what
//! senders actually put on the wire, which may carry CSRCs (from mixers), a
//! header extension (RFC 8285, from WebRTC gateways and some cameras) and
//! padding (from SRTP senders and encoders that pad to a block size); the
//! view finds the payload behind all three. A length field that points past
//! the packet is an error ([`RtpError`]), never a read out of bounds.

use std::ops::Range;

/// The length of the fixed header, and of every header a server writes.
pub const HEADER_LEN: usize = 12;

/// The only RTP version in use (RFC 3550).
pub const VERSION: u8 = 2;

/// Field offsets, each named once.
mod field {
    use std::ops::Range;

    /// V (2 bits), P, X, CC (4 bits).
    pub const FLAGS: usize = 0;
    /// M (1 bit), PT (7 bits).
    pub const MARKER_PT: usize = 1;
    pub const SEQUENCE: Range<usize> = 2..4;
    pub const TIMESTAMP: Range<usize> = 4..8;
    pub const SSRC: Range<usize> = 8..12;
    /// CSRCs follow the fixed header, 4 bytes each.
    pub const CSRCS: usize = 12;

    /// Within a header extension: 16 bits the profile defines, then the
    /// length of the data in 32-bit words, then the data.
    pub const EXTENSION_PROFILE: Range<usize> = 0..2;
    pub const EXTENSION_WORDS: Range<usize> = 2..4;
    pub const EXTENSION_DATA: usize = 4;

    pub const VERSION_SHIFT: u8 = 6;
    pub const PADDING: u8 = 0x20;
    pub const EXTENSION: u8 = 0x10;
    pub const CSRC_COUNT: u8 = 0x0f;
    pub const MARKER: u8 = 0x80;
    pub const PAYLOAD_TYPE: u8 = 0x7f;
}

/// Why bytes are not an RTP packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RtpError {
    #[error("{0} bytes are too few for an RTP header")]
    Short(usize),
    #[error("RTP version {0}, not 2")]
    Version(u8),
    #[error("{csrcs} CSRCs and the header extension do not fit in a {len}-byte packet")]
    Header { csrcs: u8, len: usize },
    #[error("padding of {pad} bytes is more than the {available} bytes after the header")]
    Padding { pad: u8, available: usize },
}

#[inline]
fn be16(b: &[u8], at: Range<usize>) -> u16 {
    u16::from_be_bytes([b[at.start], b[at.start + 1]])
}

#[inline]
fn be32(b: &[u8], at: Range<usize>) -> u32 {
    u32::from_be_bytes([b[at.start], b[at.start + 1], b[at.start + 2], b[at.start + 3]])
}

/// A view of an RTP packet in `buffer`.
///
/// Made with [`new_checked`](Packet::new_checked), every accessor is in
/// bounds: the version is 2 and the CSRC list, the extension and the padding
/// all fit in the buffer. Over a buffer [`new_unchecked`](Packet::new_unchecked)
/// did not check, an accessor may panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// A view with no checks; [`check`](Packet::check) before reading
    /// anything past the fixed header.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// A view of a packet that passes [`check`](Packet::check).
    pub fn new_checked(buffer: T) -> Result<Packet<T>, RtpError> {
        let packet = Packet::new_unchecked(buffer);
        packet.check()?;
        Ok(packet)
    }

    /// Checks the version and that the CSRCs, the extension and the padding
    /// lie within the buffer.
    pub fn check(&self) -> Result<(), RtpError> {
        let b = self.buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(RtpError::Short(b.len()));
        }
        if self.version() != VERSION {
            return Err(RtpError::Version(self.version()));
        }
        let too_long = || RtpError::Header {
            csrcs: self.csrc_count(),
            len: b.len(),
        };
        let mut header_len = field::CSRCS + 4 * usize::from(self.csrc_count());
        if self.extension() {
            let ext = b
                .get(header_len..header_len + field::EXTENSION_DATA)
                .ok_or_else(too_long)?;
            header_len += field::EXTENSION_DATA + 4 * usize::from(be16(ext, field::EXTENSION_WORDS));
        }
        if header_len > b.len() {
            return Err(too_long());
        }
        if self.padding() {
            // The last byte counts the padding, itself included: zero is not
            // a count a sender can mean.
            let pad = b[b.len() - 1];
            let available = b.len() - header_len;
            if pad == 0 || usize::from(pad) > available {
                return Err(RtpError::Padding { pad, available });
            }
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The whole packet.
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS] >> field::VERSION_SHIFT
    }

    /// Whether the packet ends in padding (P).
    #[inline]
    pub fn padding(&self) -> bool {
        self.buffer.as_ref()[field::FLAGS] & field::PADDING != 0
    }

    /// Whether a header extension follows the CSRCs (X).
    #[inline]
    pub fn extension(&self) -> bool {
        self.buffer.as_ref()[field::FLAGS] & field::EXTENSION != 0
    }

    /// CC: how many CSRCs follow the fixed header.
    #[inline]
    pub fn csrc_count(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS] & field::CSRC_COUNT
    }

    #[inline]
    pub fn marker(&self) -> bool {
        self.buffer.as_ref()[field::MARKER_PT] & field::MARKER != 0
    }

    #[inline]
    pub fn payload_type(&self) -> u8 {
        self.buffer.as_ref()[field::MARKER_PT] & field::PAYLOAD_TYPE
    }

    #[inline]
    pub fn sequence(&self) -> u16 {
        be16(self.buffer.as_ref(), field::SEQUENCE)
    }

    #[inline]
    pub fn timestamp(&self) -> u32 {
        be32(self.buffer.as_ref(), field::TIMESTAMP)
    }

    #[inline]
    pub fn ssrc(&self) -> u32 {
        be32(self.buffer.as_ref(), field::SSRC)
    }

    /// The contributing sources, in order.
    pub fn csrcs(&self) -> impl ExactSizeIterator<Item = u32> + '_ {
        let end = field::CSRCS + 4 * usize::from(self.csrc_count());
        self.buffer.as_ref()[field::CSRCS..end]
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
    }

    /// The header extension, when X is set.
    pub fn extension_header(&self) -> Option<Extension<'_>> {
        if !self.extension() {
            return None;
        }
        let b = self.buffer.as_ref();
        let at = field::CSRCS + 4 * usize::from(self.csrc_count());
        let words = usize::from(be16(&b[at..], field::EXTENSION_WORDS));
        let data = at + field::EXTENSION_DATA;
        Some(Extension {
            profile: be16(&b[at..], field::EXTENSION_PROFILE),
            data: &b[data..data + 4 * words],
        })
    }

    /// The bytes before the payload: fixed header, CSRCs and extension.
    pub fn header_len(&self) -> usize {
        let b = self.buffer.as_ref();
        let at = field::CSRCS + 4 * usize::from(self.csrc_count());
        if self.extension() {
            at + field::EXTENSION_DATA + 4 * usize::from(be16(&b[at..], field::EXTENSION_WORDS))
        } else {
            at
        }
    }

    /// The padding bytes at the end, their count included.
    pub fn padding_len(&self) -> usize {
        let b = self.buffer.as_ref();
        if self.padding() {
            usize::from(b[b.len() - 1])
        } else {
            0
        }
    }

    /// The payload, without the padding.
    pub fn payload(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        &b[self.header_len()..b.len() - self.padding_len()]
    }
}

/// A header extension (RFC 3550 section 5.3.1): the profile's 16 bits and
/// the data, a whole number of 32-bit words. RFC 8285 one- and two-byte
/// elements are `profile` 0xBEDE and 0x100x over that data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extension<'a> {
    pub profile: u16,
    pub data: &'a [u8],
}

/// The fixed header's fields, as a value: what a sender writes and what a
/// receiver reads to place a packet in its stream. CSRCs, the extension and
/// padding are read from the [`Packet`]; a header emitted from this value
/// has none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Header {
    pub marker: bool,
    pub payload_type: u8,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
}

impl Header {
    /// Checks `packet` and reads its header.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Header, RtpError> {
        packet.check()?;
        Ok(Header {
            marker: packet.marker(),
            payload_type: packet.payload_type(),
            sequence: packet.sequence(),
            timestamp: packet.timestamp(),
            ssrc: packet.ssrc(),
        })
    }

    /// The bytes [`emit`](Header::emit) writes.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the fixed header: version 2, no padding, extension or CSRCs.
    /// The payload type keeps its low 7 bits.
    #[inline]
    pub fn emit(&self, out: &mut [u8; HEADER_LEN]) {
        out[field::FLAGS] = VERSION << field::VERSION_SHIFT;
        out[field::MARKER_PT] = (u8::from(self.marker) << 7) | (self.payload_type & field::PAYLOAD_TYPE);
        out[field::SEQUENCE].copy_from_slice(&self.sequence.to_be_bytes());
        out[field::TIMESTAMP].copy_from_slice(&self.timestamp.to_be_bytes());
        out[field::SSRC].copy_from_slice(&self.ssrc.to_be_bytes());
    }

    /// The emitted header, as a value to keep beside the payload.
    #[inline]
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = [0; HEADER_LEN];
        self.emit(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(seq: u16) -> Header {
        Header {
            marker: false,
            payload_type: 96,
            sequence: seq,
            timestamp: 2,
            ssrc: 3,
        }
    }

    /// A packet with `header` and `payload` zero bytes.
    fn packet(header: Header, payload: usize) -> Vec<u8> {
        let mut p = header.to_bytes().to_vec();
        p.resize(HEADER_LEN + payload, 0);
        p
    }

    #[test]
    fn emits_the_fixed_header() {
        let h = Header {
            marker: true,
            payload_type: 96,
            sequence: 0x1234,
            timestamp: 0xdead_beef,
            ssrc: 7,
        };
        assert_eq!(
            h.to_bytes(),
            [0x80, 0xe0, 0x12, 0x34, 0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 7]
        );
        assert_eq!(h.buffer_len(), HEADER_LEN);
        // A payload type past 7 bits cannot set the marker.
        let h = Header {
            marker: false,
            payload_type: 0xff,
            ..h
        };
        assert_eq!(h.to_bytes()[1], 0x7f);
    }

    #[test]
    fn parse_reads_what_emit_wrote() {
        let h = Header {
            marker: true,
            payload_type: 96,
            sequence: 0xfffe,
            timestamp: 0x8000_0001,
            ssrc: 0xdead_beef,
        };
        let bytes = packet(h, 100);
        let p = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(Header::parse(&p), Ok(h));
        assert_eq!(
            (p.version(), p.padding(), p.extension(), p.csrc_count()),
            (2, false, false, 0)
        );
        assert_eq!((p.header_len(), p.payload().len()), (12, 100));
        assert_eq!(p.extension_header(), None);
        assert_eq!(p.csrcs().len(), 0);
    }

    #[test]
    fn csrcs_extension_and_padding() {
        // Two CSRCs, a one-word extension, 10 payload bytes, 3 of padding.
        let mut p = packet(header(1), 0);
        p[0] = 0x80 | 0x20 | 0x10 | 2;
        p.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 2]);
        p.extend_from_slice(&[0xbe, 0xde, 0, 1, 9, 9, 9, 9]);
        p.extend_from_slice(&[7; 10]);
        p.extend_from_slice(&[0, 0, 3]);
        let v = Packet::new_checked(&p[..]).unwrap();
        assert_eq!(v.csrcs().collect::<Vec<_>>(), [1, 2]);
        assert_eq!(
            v.extension_header(),
            Some(Extension {
                profile: 0xbede,
                data: &[9, 9, 9, 9]
            })
        );
        assert_eq!((v.header_len(), v.padding_len()), (28, 3));
        assert_eq!(v.payload(), &[7; 10]);
        assert_eq!(Header::parse(&v).unwrap().sequence, 1);
    }

    #[test]
    fn refuses_broken_headers() {
        let check = |b: &[u8]| Packet::new_checked(b).map(|_| ());
        assert_eq!(check(&[0x80; 11]), Err(RtpError::Short(11)));
        assert_eq!(check(&[]), Err(RtpError::Short(0)));
        let mut p = packet(header(1), 4);
        p[0] = 0x40;
        assert_eq!(check(&p), Err(RtpError::Version(1)));
        // 15 CSRCs claimed, 4 bytes after the fixed header.
        p[0] = 0x8f;
        assert!(matches!(check(&p), Err(RtpError::Header { csrcs: 15, .. })));
        // An extension header that is cut off, and one whose length overruns.
        let mut p = packet(header(1), 2);
        p[0] = 0x90;
        assert!(matches!(check(&p), Err(RtpError::Header { .. })));
        let mut p = packet(header(1), 0);
        p[0] = 0x90;
        p.extend_from_slice(&[0, 0, 0, 5, 1, 2, 3, 4]);
        assert!(matches!(check(&p), Err(RtpError::Header { .. })));
        // The largest extension length a packet can claim.
        p[14..16].copy_from_slice(&[0xff, 0xff]);
        assert!(matches!(check(&p), Err(RtpError::Header { .. })));
        // Padding: zero, or more than the payload.
        let mut p = packet(header(1), 4);
        p[0] = 0xa0;
        assert!(matches!(check(&p), Err(RtpError::Padding { pad: 0, .. })));
        *p.last_mut().unwrap() = 5;
        assert_eq!(check(&p), Err(RtpError::Padding { pad: 5, available: 4 }));
        *p.last_mut().unwrap() = 4;
        assert_eq!(Packet::new_checked(&p[..]).unwrap().payload(), &[] as &[u8]);
        // Parse checks too, so an unchecked view is safe to parse.
        p[0] = 0x40;
        assert_eq!(Header::parse(&Packet::new_unchecked(&p[..])), Err(RtpError::Version(1)));
    }

    #[test]
    fn every_short_or_garbled_buffer_is_an_error_or_in_bounds() {
        // Every flag combination over lengths around the edges: checked
        // views never read out of bounds.
        for len in 0..40 {
            for flags in [0x80u8, 0x90, 0xa0, 0xb0, 0x81, 0x9f, 0xbf, 0x8f] {
                for fill in [0u8, 1, 0xff] {
                    let mut p = vec![fill; len];
                    if let Some(f) = p.first_mut() {
                        *f = flags;
                    }
                    if let Ok(v) = Packet::new_checked(&p[..]) {
                        assert!(v.header_len() + v.payload().len() + v.padding_len() == len);
                        let _ = (v.csrcs().count(), v.extension_header());
                    }
                }
            }
        }
    }
}
