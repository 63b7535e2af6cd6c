//! RTP hint tracks on the wire: the `rtp ` sample description and the packet
//! entries and data-table constructors inside hint samples.
//!
//! Layouts follow the QuickTime File Format ("hint media") and ISO/IEC
//! 14496-12 (`RTPsample`, `RTPpacket`, `RTPconstructor`). Each function takes
//! bytes and returns a view or a reason; none allocates.

use crate::atom::{be_u32, Atom, Atoms, Reader};
use crate::error::Result;
use crate::fourcc::kind;
use crate::sample_table::SampleDescription;

/// What the `rtp ` sample description says about a hint track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHintInfo {
    /// `tims`: the RTP clock rate.
    pub rtp_timescale: u32,
    /// `tsro`: a fixed offset the hinter added to every RTP timestamp.
    pub timestamp_offset: i32,
    /// `snro`: a fixed offset the hinter added to every sequence number.
    pub sequence_offset: i32,
    /// Largest packet the hinter made, RTP header included.
    pub max_packet_size: u32,
}

impl RtpHintInfo {
    /// Parses the `rtp ` sample description entry `desc`.
    pub(crate) fn parse(data: &[u8], desc: &SampleDescription, path: &str) -> Result<Self> {
        let atom = Atom {
            kind: desc.format,
            offset: desc.offset,
            header_len: 8,
            size: desc.len,
        };
        let mut r = Reader::body(data, &atom, path);
        r.skip(6)?; // reserved
        r.u16()?; // data reference index
        r.u16()?; // hint track version
        r.u16()?; // last compatible version
        let max_packet_size = r.u32()?;
        let mut info = RtpHintInfo {
            rtp_timescale: 0,
            timestamp_offset: 0,
            sequence_offset: 0,
            max_packet_size,
        };
        for entry in Atoms::new(data, r.offset(), atom.end(), path) {
            let entry = entry?;
            let mut e = Reader::body(data, &entry, path);
            match entry.kind {
                kind::TIMS => info.rtp_timescale = e.u32()?,
                kind::TSRO => info.timestamp_offset = e.i32()?,
                kind::SNRO => info.sequence_offset = e.i32()?,
                _ => {}
            }
        }
        if info.rtp_timescale == 0 {
            return Err(r.error("`rtp ` sample description has no `tims` (RTP timescale)"));
        }
        Ok(info)
    }
}

/// Bits of the packet entry's flags field.
pub(crate) mod flag {
    pub const REPEAT: u16 = 0x1;
    pub const B_FRAME: u16 = 0x2;
    pub const EXTRA: u16 = 0x4;
}

/// Size of a packet entry before its TLVs and constructors.
const PACKET_HEADER_LEN: usize = 12;
/// Every data-table constructor is 16 bytes.
pub(crate) const CONSTRUCTOR_LEN: usize = 16;

/// One packet entry of a hint sample, as a view into that sample.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PacketEntry<'a> {
    /// Transmit time relative to the hint sample, in the hint track's timescale.
    pub relative_time: i32,
    /// The second and third bytes of the RTP header: P, X, M and PT bits.
    pub header_bits: u16,
    pub sequence: u16,
    pub flags: u16,
    /// The `rtpo` TLV: an offset added to this packet's RTP timestamp.
    pub timestamp_offset: i32,
    /// The data table: `n * 16` bytes of constructors.
    pub constructors: &'a [u8],
}

impl PacketEntry<'_> {
    pub fn marker(&self) -> bool {
        self.header_bits & 0x0080 != 0
    }

    pub fn payload_type(&self) -> u8 {
        (self.header_bits & 0x007f) as u8
    }
}

/// The hint sample header: how many packet entries follow.
pub(crate) fn sample_packet_count(sample: &[u8]) -> Result<u16, &'static str> {
    match sample.get(..4) {
        Some(h) => Ok(u16::from_be_bytes([h[0], h[1]])),
        None => Err("hint sample shorter than its 4-byte header"),
    }
}

/// Offset of the first packet entry in a hint sample.
pub(crate) const FIRST_PACKET: usize = 4;

/// Reads the packet entry at `pos` in `sample`; returns it and the position
/// of the next entry.
#[inline]
pub(crate) fn packet_at(sample: &[u8], pos: usize) -> Result<(PacketEntry<'_>, usize), &'static str> {
    let h = sample
        .get(pos..pos + PACKET_HEADER_LEN)
        .ok_or("packet entry runs past the end of its hint sample")?;
    let relative_time = be_u32(h, 0) as i32;
    let header_bits = u16::from_be_bytes([h[4], h[5]]);
    let sequence = u16::from_be_bytes([h[6], h[7]]);
    let flags = u16::from_be_bytes([h[8], h[9]]);
    let count = usize::from(u16::from_be_bytes([h[10], h[11]]));
    let mut at = pos + PACKET_HEADER_LEN;
    let mut timestamp_offset = 0;
    if flags & flag::EXTRA != 0 {
        let len = sample
            .get(at..at + 4)
            .map(|b| be_u32(b, 0) as usize)
            .ok_or("extra-information TLVs run past the end of the hint sample")?;
        let tlvs = sample
            .get(at + 4..at.saturating_add(len))
            .filter(|_| len >= 4)
            .ok_or("extra-information length is out of bounds")?;
        timestamp_offset = rtpo(tlvs)?;
        at += len;
    }
    let table_len = count * CONSTRUCTOR_LEN;
    let constructors = sample
        .get(at..at + table_len)
        .ok_or("data table runs past the end of the hint sample")?;
    Ok((
        PacketEntry {
            relative_time,
            header_bits,
            sequence,
            flags,
            timestamp_offset,
            constructors,
        },
        at + table_len,
    ))
}

/// Finds the `rtpo` TLV among the extra-information TLVs. Each TLV is a
/// 32-bit length (including itself and the type), a type, then data, padded
/// to 4 bytes. Unknown types are skipped, as the format asks.
fn rtpo(mut tlvs: &[u8]) -> Result<i32, &'static str> {
    let mut offset = 0;
    while tlvs.len() >= 8 {
        let len = be_u32(tlvs, 0) as usize;
        if len < 8 || len > tlvs.len() {
            return Err("extra-information TLV has a bad length");
        }
        if tlvs[4..8] == kind::RTPO.0 {
            if len < 12 {
                return Err("`rtpo` TLV is too short");
            }
            offset = be_u32(tlvs, 8) as i32;
        }
        tlvs = &tlvs[len.next_multiple_of(4).min(tlvs.len())..];
    }
    Ok(offset)
}

/// One data-table constructor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Constructor<'a> {
    Nop,
    /// Bytes carried in the hint sample itself (at most 14).
    Immediate(&'a [u8]),
    /// Bytes of a sample of this or a referenced track.
    Sample {
        /// Index into `tref/hint`; -1 names the hint track itself.
        track_ref: i8,
        len: u16,
        /// 1-based sample number.
        sample: u32,
        offset: u32,
        bytes_per_block: u16,
        samples_per_block: u16,
    },
    /// Bytes of a sample description of this or a referenced track.
    Description {
        track_ref: i8,
        len: u16,
        /// 1-based sample description index.
        index: u32,
        offset: u32,
    },
}

impl Constructor<'_> {
    #[inline]
    pub fn parse(c: &[u8]) -> Result<Constructor<'_>, &'static str> {
        debug_assert_eq!(c.len(), CONSTRUCTOR_LEN);
        let len = u16::from_be_bytes([c[2], c[3]]);
        Ok(match c[0] {
            0 => Constructor::Nop,
            1 => {
                let n = usize::from(c[1]);
                if n > 14 {
                    return Err("immediate constructor longer than 14 bytes");
                }
                Constructor::Immediate(&c[2..2 + n])
            }
            2 => Constructor::Sample {
                track_ref: c[1] as i8,
                len,
                sample: be_u32(c, 4),
                offset: be_u32(c, 8),
                bytes_per_block: u16::from_be_bytes([c[12], c[13]]),
                samples_per_block: u16::from_be_bytes([c[14], c[15]]),
            },
            3 => Constructor::Description {
                track_ref: c[1] as i8,
                len,
                index: be_u32(c, 4),
                offset: be_u32(c, 8),
            },
            _ => return Err("unknown data-table constructor type"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_with_rtpo_and_two_constructors() {
        let mut s = vec![0, 1, 0, 0]; // one packet
        s.extend_from_slice(&(-5i32).to_be_bytes());
        s.extend_from_slice(&[0x80, 0xe0, 0x12, 0x34, 0x00, 0x06, 0x00, 0x02]);
        s.extend_from_slice(&16u32.to_be_bytes());
        s.extend_from_slice(&12u32.to_be_bytes());
        s.extend_from_slice(b"rtpo");
        s.extend_from_slice(&3000i32.to_be_bytes());
        s.extend_from_slice(&[1, 2, 0xaa, 0xbb, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        s.extend_from_slice(&[2, 0xff, 0, 100, 0, 0, 0, 7, 0, 0, 0, 9, 0, 1, 0, 1]);
        assert_eq!(sample_packet_count(&s), Ok(1));
        let (p, next) = packet_at(&s, FIRST_PACKET).unwrap();
        assert_eq!(next, s.len());
        assert_eq!(p.relative_time, -5);
        assert!(p.marker());
        assert_eq!(p.payload_type(), 96);
        assert_eq!(p.sequence, 0x1234);
        assert_eq!(p.flags & flag::B_FRAME, flag::B_FRAME);
        assert_eq!(p.timestamp_offset, 3000);
        let c: Vec<_> = p
            .constructors
            .chunks_exact(16)
            .map(|c| Constructor::parse(c).unwrap())
            .collect();
        assert_eq!(c[0], Constructor::Immediate(&[0xaa, 0xbb]));
        assert_eq!(
            c[1],
            Constructor::Sample {
                track_ref: -1,
                len: 100,
                sample: 7,
                offset: 9,
                bytes_per_block: 1,
                samples_per_block: 1
            }
        );
    }

    #[test]
    fn truncated_and_oversized_entries_are_rejected() {
        let mut s = vec![0, 1, 0, 0, 0, 0, 0, 0, 0x80, 0x60, 0, 1, 0, 0, 0, 3];
        assert!(packet_at(&s, FIRST_PACKET).is_err());
        s.truncate(10);
        assert!(packet_at(&s, FIRST_PACKET).is_err());
        let mut t = vec![0, 1, 0, 0, 0, 0, 0, 0, 0x80, 0x60, 0, 1, 0, 4, 0, 0];
        t.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(packet_at(&t, FIRST_PACKET).is_err());
        assert!(Constructor::parse(&[1, 15, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        assert!(Constructor::parse(&[9; 16]).is_err());
    }
}
