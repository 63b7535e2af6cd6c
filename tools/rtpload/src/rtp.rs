//! The RTP fixed header (RFC 3550 section 5.1), read from a received packet
//! without copying it.

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
    pub const FIXED_LEN: usize = 12;
    /// A header extension: 16 bits of profile data, then its length in words.
    pub const EXTENSION_LEN: Range<usize> = 2..4;
}

/// What the receiver uses from a packet's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    pub marker: bool,
    pub payload_type: u8,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    /// Payload bytes: what follows the header, CSRCs and extension, less
    /// any padding.
    pub payload_len: usize,
}

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

fn be16(b: &[u8], at: std::ops::Range<usize>) -> u16 {
    u16::from_be_bytes([b[at.start], b[at.start + 1]])
}

fn be32(b: &[u8], at: std::ops::Range<usize>) -> u32 {
    u32::from_be_bytes([b[at.start], b[at.start + 1], b[at.start + 2], b[at.start + 3]])
}

impl RtpHeader {
    /// Checks the header of `packet` (version, CSRC list, extension and
    /// padding lengths within the packet) and reads it.
    pub fn parse(packet: &[u8]) -> Result<RtpHeader, RtpError> {
        if packet.len() < field::FIXED_LEN {
            return Err(RtpError::Short(packet.len()));
        }
        let flags = packet[field::FLAGS];
        let version = flags >> 6;
        if version != 2 {
            return Err(RtpError::Version(version));
        }
        let csrcs = flags & 0x0f;
        let mut header_len = field::FIXED_LEN + 4 * usize::from(csrcs);
        let too_long = RtpError::Header {
            csrcs,
            len: packet.len(),
        };
        if flags & 0x10 != 0 {
            let ext = packet.get(header_len..header_len + 4).ok_or(too_long.clone())?;
            header_len += 4 + 4 * usize::from(be16(ext, field::EXTENSION_LEN));
        }
        if header_len > packet.len() {
            return Err(too_long);
        }
        let mut payload_len = packet.len() - header_len;
        if flags & 0x20 != 0 {
            // The last byte counts the padding, itself included.
            let pad = packet[packet.len() - 1];
            if pad == 0 || usize::from(pad) > payload_len {
                return Err(RtpError::Padding {
                    pad,
                    available: payload_len,
                });
            }
            payload_len -= usize::from(pad);
        }
        let mpt = packet[field::MARKER_PT];
        Ok(RtpHeader {
            marker: mpt & 0x80 != 0,
            payload_type: mpt & 0x7f,
            sequence: be16(packet, field::SEQUENCE),
            timestamp: be32(packet, field::TIMESTAMP),
            ssrc: be32(packet, field::SSRC),
            payload_len,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A packet with the given header fields and `payload` zero bytes.
    pub(crate) fn packet(pt: u8, seq: u16, ts: u32, ssrc: u32, payload: usize) -> Vec<u8> {
        let mut p = vec![0x80, pt, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p[4..8].copy_from_slice(&ts.to_be_bytes());
        p[8..12].copy_from_slice(&ssrc.to_be_bytes());
        p.resize(12 + payload, 0);
        p
    }

    #[test]
    fn reads_the_fixed_header() {
        let mut p = packet(96, 0xfffe, 0x8000_0001, 0xdead_beef, 100);
        p[1] |= 0x80;
        let h = RtpHeader::parse(&p).unwrap();
        assert_eq!(
            h,
            RtpHeader {
                marker: true,
                payload_type: 96,
                sequence: 0xfffe,
                timestamp: 0x8000_0001,
                ssrc: 0xdead_beef,
                payload_len: 100
            }
        );
    }

    #[test]
    fn csrcs_extension_and_padding() {
        // Two CSRCs, a one-word extension, 10 payload bytes, 3 of padding.
        let mut p = packet(0, 1, 2, 3, 0);
        p[0] = 0x80 | 0x20 | 0x10 | 2;
        p.extend_from_slice(&[0; 8]); // CSRCs
        p.extend_from_slice(&[0xbe, 0xde, 0, 1, 9, 9, 9, 9]); // extension
        p.extend_from_slice(&[7; 10]);
        p.extend_from_slice(&[0, 0, 3]);
        assert_eq!(RtpHeader::parse(&p).unwrap().payload_len, 10);
    }

    #[test]
    fn refuses_broken_headers() {
        assert_eq!(RtpHeader::parse(&[0x80; 11]), Err(RtpError::Short(11)));
        let mut p = packet(96, 1, 2, 3, 4);
        p[0] = 0x40;
        assert_eq!(RtpHeader::parse(&p), Err(RtpError::Version(1)));
        // 15 CSRCs claimed, 4 bytes after the fixed header.
        p[0] = 0x8f;
        assert!(matches!(RtpHeader::parse(&p), Err(RtpError::Header { csrcs: 15, .. })));
        // An extension header that is cut off, and one whose length overruns.
        let mut p = packet(96, 1, 2, 3, 2);
        p[0] = 0x90;
        assert!(matches!(RtpHeader::parse(&p), Err(RtpError::Header { .. })));
        let mut p = packet(96, 1, 2, 3, 0);
        p[0] = 0x90;
        p.extend_from_slice(&[0, 0, 0, 5, 1, 2, 3, 4]);
        assert!(matches!(RtpHeader::parse(&p), Err(RtpError::Header { .. })));
        // Padding: zero, or more than the payload.
        let mut p = packet(96, 1, 2, 3, 4);
        p[0] = 0xa0;
        assert!(matches!(RtpHeader::parse(&p), Err(RtpError::Padding { pad: 0, .. })));
        *p.last_mut().unwrap() = 5;
        assert!(matches!(
            RtpHeader::parse(&p),
            Err(RtpError::Padding { pad: 5, available: 4 })
        ));
        *p.last_mut().unwrap() = 4;
        assert_eq!(RtpHeader::parse(&p).unwrap().payload_len, 0);
    }
}
