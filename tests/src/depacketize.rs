//! What a receiver makes of RTP packets: H.264 access units (RFC 6184) and
//! AAC frames (RFC 3640, mode AAC-hbr), put back together from the packets as
//! they arrived, to be compared with what the file holds. Written from the
//! RFCs, independently of any packetizer in this repository.

use crate::rtp::RtpPacket;

/// One H.264 access unit: its RTP timestamp and NAL units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessUnit {
    pub timestamp: u32,
    pub nal_units: Vec<Vec<u8>>,
}

/// The access units of a stream of H.264 packets in sequence order: single
/// NAL unit packets (types 1 to 23), STAP-A (24) and FU-A (28), the other
/// types being errors. An access unit ends with the packet that has the
/// marker bit (RFC 6184 section 5.1); a new timestamp before it is an error.
pub fn h264_access_units(packets: &[RtpPacket]) -> Result<Vec<AccessUnit>, String> {
    let mut units = Vec::new();
    let mut current: Option<AccessUnit> = None;
    let mut fragment: Option<Vec<u8>> = None;
    for (i, p) in packets.iter().enumerate() {
        let what = |e: &str| format!("packet {i} (seq {}, timestamp {}): {e}", p.sequence, p.timestamp);
        let unit = current.get_or_insert_with(|| AccessUnit {
            timestamp: p.timestamp,
            nal_units: Vec::new(),
        });
        if unit.timestamp != p.timestamp {
            return Err(what("a new timestamp, but the access unit before had no marker"));
        }
        let payload = &p.payload;
        let header = *payload.first().ok_or_else(|| what("empty payload"))?;
        match header & 0x1f {
            1..=23 => unit.nal_units.push(payload.clone()),
            24 => {
                let mut at = 1;
                while at < payload.len() {
                    let size = payload
                        .get(at..at + 2)
                        .map(|s| usize::from(u16::from_be_bytes([s[0], s[1]])))
                        .ok_or_else(|| what("STAP-A cut inside a size"))?;
                    let nal = payload
                        .get(at + 2..at + 2 + size)
                        .ok_or_else(|| what("STAP-A unit runs past the packet"))?;
                    unit.nal_units.push(nal.to_vec());
                    at += 2 + size;
                }
            }
            28 => {
                let fu = *payload.get(1).ok_or_else(|| what("FU-A without its header"))?;
                let (start, end) = (fu & 0x80 != 0, fu & 0x40 != 0);
                match (&mut fragment, start) {
                    (None, true) => fragment = Some(vec![header & 0xe0 | fu & 0x1f]),
                    (Some(_), true) => return Err(what("FU-A start inside another unit")),
                    (None, false) => return Err(what("FU-A continues a unit that never started")),
                    (Some(_), false) => {}
                }
                fragment.as_mut().expect("started").extend_from_slice(&payload[2..]);
                if end {
                    unit.nal_units.push(fragment.take().expect("started"));
                }
            }
            t => return Err(what(&format!("NAL unit type {t}, not sent in packetization mode 1"))),
        }
        if p.marker {
            if fragment.is_some() {
                return Err(what("marker bit inside a fragmented NAL unit"));
            }
            units.extend(current.take());
        }
    }
    match current {
        Some(u) => Err(format!(
            "the last access unit (timestamp {}) has no marker",
            u.timestamp
        )),
        None => Ok(units),
    }
}

/// The AAC frames of a stream of `mpeg4-generic` packets in AAC-hbr mode
/// (13-bit sizes, 3-bit indices): each with its RTP timestamp, the
/// packet's for the first frame, `frame_length` more for each next one.
pub fn aac_frames(packets: &[RtpPacket], frame_length: u32) -> Result<Vec<(u32, Vec<u8>)>, String> {
    let mut frames = Vec::new();
    for (i, p) in packets.iter().enumerate() {
        let what = |e: &str| format!("packet {i} (seq {}): {e}", p.sequence);
        let d = &p.payload;
        let bits = d
            .get(..2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
            .ok_or_else(|| what("no AU-headers-length"))?;
        if bits % 16 != 0 {
            return Err(what(&format!("AU-headers-length {bits} is not whole 16-bit headers")));
        }
        let headers = d
            .get(2..2 + bits / 8)
            .ok_or_else(|| what("AU headers run past the packet"))?;
        let mut at = 2 + bits / 8;
        for (k, h) in headers.chunks_exact(2).enumerate() {
            let size = usize::from(u16::from_be_bytes([h[0], h[1]]) >> 3);
            let frame = d
                .get(at..at + size)
                .ok_or_else(|| what("an AAC frame runs past the packet"))?;
            frames.push((p.timestamp.wrapping_add(k as u32 * frame_length), frame.to_vec()));
            at += size;
        }
        if at != d.len() {
            return Err(what(&format!("{} bytes after the last frame", d.len() - at)));
        }
    }
    Ok(frames)
}

/// The NAL units of a sample stored with 4-byte length prefixes (MP4's
/// `avcC` with `lengthSizeMinusOne` 3, what ffmpeg writes).
pub fn length_prefixed_nal_units(sample: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut units = Vec::new();
    let mut at = 0;
    while at < sample.len() {
        let len = sample
            .get(at..at + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .ok_or("a sample ends inside a length prefix")?;
        let unit = sample
            .get(at + 4..at + 4 + len)
            .ok_or("a NAL unit runs past its sample")?;
        units.push(unit.to_vec());
        at += 4 + len;
    }
    Ok(units)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(seq: u16, ts: u32, marker: bool, payload: &[u8]) -> RtpPacket {
        RtpPacket {
            marker,
            payload_type: 96,
            sequence: seq,
            timestamp: ts,
            ssrc: 1,
            payload: payload.to_vec(),
        }
    }

    #[test]
    fn reassembles_single_stap_a_and_fu_a() {
        let packets = [
            // STAP-A with units [0x67, 1] and [0x68].
            packet(1, 0, true, &[0x78, 0, 2, 0x67, 1, 0, 1, 0x68]),
            // FU-A of IDR unit 0x65 0xaa 0xbb 0xcc, then a single unit.
            packet(2, 3000, false, &[0x7c, 0x85, 0xaa]),
            packet(3, 3000, false, &[0x7c, 0x05, 0xbb]),
            packet(4, 3000, false, &[0x7c, 0x45, 0xcc]),
            packet(5, 3000, true, &[0x41, 9]),
        ];
        let units = h264_access_units(&packets).unwrap();
        assert_eq!(
            units,
            [
                AccessUnit {
                    timestamp: 0,
                    nal_units: vec![vec![0x67, 1], vec![0x68]]
                },
                AccessUnit {
                    timestamp: 3000,
                    nal_units: vec![vec![0x65, 0xaa, 0xbb, 0xcc], vec![0x41, 9]]
                },
            ]
        );
    }

    #[test]
    fn rejects_what_a_receiver_could_not_rebuild() {
        let no_marker = [packet(1, 0, false, &[0x41]), packet(2, 90, true, &[0x41])];
        assert!(h264_access_units(&no_marker).unwrap_err().contains("no marker"));
        let lost_start = [packet(1, 0, true, &[0x7c, 0x45, 1])];
        assert!(h264_access_units(&lost_start).is_err());
        let stap_overrun = [packet(1, 0, true, &[0x78, 0, 9, 1])];
        assert!(h264_access_units(&stap_overrun).is_err());
        assert!(h264_access_units(&[packet(1, 0, true, &[0x19])]).is_err(), "STAP-B");
    }

    #[test]
    fn aac_frames_and_their_times() {
        let two = packet(1, 100, true, &[0, 32, 0, 2 << 3, 0, 1 << 3, 7, 7, 9]);
        assert_eq!(aac_frames(&[two], 1024).unwrap(), [(100, vec![7, 7]), (1124, vec![9])]);
        assert!(aac_frames(&[packet(1, 0, true, &[0, 16, 0, 9 << 3, 1])], 1024).is_err());
    }
}
