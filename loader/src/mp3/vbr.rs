//! The header frame some encoders put first: a Xing (VBR) or Info (CBR)
//! header, usually with a LAME tag, or Fraunhofer's VBRI header. It is a
//! valid MPEG frame that decodes to silence, so decoders that know it skip
//! it, and the index does not count it as audio.
//!
//! Counts in these headers are the encoder's word, not a measurement (and a
//! file cut or edited after encoding keeps the old ones). The index counts
//! the frames themselves; these are kept for what they say, above all the
//! gapless delay and padding, which only the LAME tag knows.

use super::header::FrameHeader;

/// Which header the frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VbrKind {
    /// `Xing`: written for variable bit rate streams.
    Xing,
    /// `Info`: the same layout, written by LAME for constant bit rate.
    Info,
    /// `VBRI`: Fraunhofer's encoder.
    Vbri,
}

/// A seek table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Toc {
    /// Xing: entry `i` is the byte position at `i` percent of the duration,
    /// in 256ths of the stream's byte count.
    Xing(Box<[u8; 100]>),
    /// VBRI: the byte length of each run of `frames_per_entry` frames.
    Vbri { frames_per_entry: u16, sizes: Vec<u32> },
}

/// What the header frame says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VbrHeader {
    pub kind: VbrKind,
    /// Frames in the stream, as the encoder counted them.
    pub frames: Option<u32>,
    /// Bytes in the stream, as the encoder counted them.
    pub bytes: Option<u32>,
    pub toc: Option<Toc>,
    /// Xing's 0 (best) to 100 quality indicator, or VBRI's quality.
    pub quality: Option<u32>,
    /// The encoder named in a LAME tag (`LAME3.100`, `Lavc59.37`).
    pub encoder: Option<String>,
    /// Samples of encoder delay at the start and padding at the end that a
    /// gapless player drops (LAME tag; VBRI's delay). Decoders add their own
    /// 529-sample delay on top.
    pub delay: Option<u16>,
    pub padding: Option<u16>,
}

/// Reads the header frame `frame` (its whole bytes), if it is one.
pub fn parse(h: &FrameHeader, frame: &[u8]) -> Option<VbrHeader> {
    // Both are Layer III only. Xing/Info sits after the side information;
    // writers put no CRC on this frame, but when the header says there is
    // one, try past it first.
    let side = h.side_info_len()?;
    let offsets = [4 + 2 + side, 4 + side];
    let tried = if h.crc { &offsets[..] } else { &offsets[1..] };
    if let Some(v) = tried.iter().find_map(|&at| xing(frame, at)) {
        return Some(v);
    }
    // VBRI is always 32 bytes after the header, whatever the mode.
    vbri(frame, 4 + 32)
}

fn be32(d: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(*d.get(at..)?.first_chunk::<4>()?))
}

fn be16(d: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(*d.get(at..)?.first_chunk::<2>()?))
}

fn xing(frame: &[u8], at: usize) -> Option<VbrHeader> {
    let kind = match frame.get(at..at + 4)? {
        b"Xing" => VbrKind::Xing,
        b"Info" => VbrKind::Info,
        _ => return None,
    };
    let flags = be32(frame, at + 4)?;
    let mut pos = at + 8;
    let mut field = |bit: u32, len: usize| -> Option<Option<&[u8]>> {
        if flags & bit == 0 {
            return Some(None);
        }
        let f = frame.get(pos..pos + len)?;
        pos += len;
        Some(Some(f))
    };
    let frames = field(1, 4)?.map(|b| be32(b, 0).unwrap_or(0));
    let bytes = field(2, 4)?.map(|b| be32(b, 0).unwrap_or(0));
    let toc = field(4, 100)?.map(|b| Toc::Xing(Box::new(b.try_into().unwrap_or([0; 100]))));
    let quality = field(8, 4)?.map(|b| be32(b, 0).unwrap_or(0));
    let mut v = VbrHeader {
        kind,
        frames,
        bytes,
        toc,
        quality,
        encoder: None,
        delay: None,
        padding: None,
    };
    // The LAME tag follows the fields present. ffmpeg writes its own name in
    // LAME's layout, and reads back `LAME`, `Lavf` and `Lavc`; so does this.
    if let Some(lame) = frame.get(pos..pos + 24) {
        if [&b"LAME"[..], b"Lavf", b"Lavc"].contains(&&lame[..4]) {
            let name = &lame[..9];
            let end = name.iter().position(|&b| b == 0).unwrap_or(9);
            v.encoder = Some(String::from_utf8_lossy(&name[..end]).trim_end().to_owned());
            let d = &lame[21..24];
            v.delay = Some((u16::from(d[0]) << 4) | u16::from(d[1] >> 4));
            v.padding = Some((u16::from(d[1] & 0xf) << 8) | u16::from(d[2]));
        }
    }
    Some(v)
}

fn vbri(frame: &[u8], at: usize) -> Option<VbrHeader> {
    if frame.get(at..at + 4)? != b"VBRI" {
        return None;
    }
    // version(2) delay(2) quality(2) bytes(4) frames(4) entries(2) scale(2)
    // entry size(2) frames per entry(2), then the table.
    let delay = be16(frame, at + 6)?;
    let quality = be16(frame, at + 8)?;
    let bytes = be32(frame, at + 10)?;
    let frames = be32(frame, at + 14)?;
    let entries = usize::from(be16(frame, at + 18)?);
    let scale = u32::from(be16(frame, at + 20)?);
    let entry_len = usize::from(be16(frame, at + 22)?);
    let frames_per_entry = be16(frame, at + 24)?;
    let table = at + 26;
    // A table that does not fit in the frame, or entries of a size that is
    // not 1 to 4 bytes, is dropped; the counts are still worth having.
    let toc = (1..=4)
        .contains(&entry_len)
        .then(|| frame.get(table..table + entries * entry_len))
        .flatten()
        .map(|t| Toc::Vbri {
            frames_per_entry,
            sizes: t
                .chunks_exact(entry_len)
                .map(|e| {
                    e.iter()
                        .fold(0u32, |n, &b| (n << 8) | u32::from(b))
                        .saturating_mul(scale)
                })
                .collect(),
        });
    Some(VbrHeader {
        kind: VbrKind::Vbri,
        frames: Some(frames),
        bytes: Some(bytes),
        toc,
        quality: Some(u32::from(quality)),
        encoder: None,
        delay: Some(delay),
        padding: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An MPEG-1 Layer III stereo frame of 417 bytes (128 kbit/s, 44.1 kHz).
    fn frame() -> (FrameHeader, Vec<u8>) {
        let mut f = vec![0u8; 417];
        f[..4].copy_from_slice(&[0xff, 0xfb, 0x90, 0x00]);
        (FrameHeader::parse(&f).unwrap(), f)
    }

    #[test]
    fn xing_with_every_field_and_a_lame_tag() {
        let (h, mut f) = frame();
        let at = 4 + 32;
        f[at..at + 4].copy_from_slice(b"Xing");
        f[at + 4..at + 8].copy_from_slice(&15u32.to_be_bytes());
        f[at + 8..at + 12].copy_from_slice(&1000u32.to_be_bytes());
        f[at + 12..at + 16].copy_from_slice(&123_456u32.to_be_bytes());
        for i in 0..100 {
            f[at + 16 + i] = (i * 2) as u8;
        }
        f[at + 116..at + 120].copy_from_slice(&57u32.to_be_bytes());
        let lame = at + 120;
        f[lame..lame + 9].copy_from_slice(b"LAME3.100");
        // delay 576 = 0x240, padding 1080 = 0x438: 24 04 38.
        f[lame + 21..lame + 24].copy_from_slice(&[0x24, 0x04, 0x38]);
        let v = parse(&h, &f).unwrap();
        assert_eq!(v.kind, VbrKind::Xing);
        assert_eq!((v.frames, v.bytes, v.quality), (Some(1000), Some(123_456), Some(57)));
        let Some(Toc::Xing(toc)) = &v.toc else { panic!("{v:?}") };
        assert_eq!((toc[0], toc[99]), (0, 198));
        assert_eq!(v.encoder.as_deref(), Some("LAME3.100"));
        assert_eq!((v.delay, v.padding), (Some(576), Some(1080)));
    }

    #[test]
    fn info_with_only_a_frame_count_in_a_mono_frame() {
        let (_, mut f) = frame();
        f[3] = 0xc0; // mono: 17 bytes of side information
        let h = FrameHeader::parse(&f).unwrap();
        f[21..25].copy_from_slice(b"Info");
        f[25..29].copy_from_slice(&1u32.to_be_bytes());
        f[29..33].copy_from_slice(&77u32.to_be_bytes());
        let v = parse(&h, &f).unwrap();
        assert_eq!(
            (v.kind, v.frames, v.bytes, v.toc),
            (VbrKind::Info, Some(77), None, None)
        );
        assert_eq!(v.encoder, None);
        // The same bytes at the stereo offset are not a tag.
        assert_eq!(parse(&frame().0, &f), None);
    }

    #[test]
    fn xing_fields_past_the_frame_end_are_no_tag() {
        let (h, mut f) = frame();
        f[36..40].copy_from_slice(b"Xing");
        f[40..44].copy_from_slice(&4u32.to_be_bytes()); // a TOC
        f.truncate(100);
        assert_eq!(parse(&h, &f), None);
    }

    #[test]
    fn vbri_with_its_table() {
        let (h, mut f) = frame();
        let at = 36;
        f[at..at + 4].copy_from_slice(b"VBRI");
        let fields: [u16; 2] = [1, 576]; // version, delay
        f[at + 4..at + 6].copy_from_slice(&fields[0].to_be_bytes());
        f[at + 6..at + 8].copy_from_slice(&fields[1].to_be_bytes());
        f[at + 8..at + 10].copy_from_slice(&75u16.to_be_bytes());
        f[at + 10..at + 14].copy_from_slice(&9999u32.to_be_bytes());
        f[at + 14..at + 18].copy_from_slice(&300u32.to_be_bytes());
        f[at + 18..at + 20].copy_from_slice(&3u16.to_be_bytes()); // entries
        f[at + 20..at + 22].copy_from_slice(&2u16.to_be_bytes()); // scale
        f[at + 22..at + 24].copy_from_slice(&2u16.to_be_bytes()); // bytes per entry
        f[at + 24..at + 26].copy_from_slice(&100u16.to_be_bytes());
        f[at + 26..at + 32].copy_from_slice(&[0, 10, 0, 20, 1, 0]);
        let v = parse(&h, &f).unwrap();
        assert_eq!(v.kind, VbrKind::Vbri);
        assert_eq!(
            (v.frames, v.bytes, v.quality, v.delay),
            (Some(300), Some(9999), Some(75), Some(576))
        );
        assert_eq!(
            v.toc,
            Some(Toc::Vbri {
                frames_per_entry: 100,
                sizes: vec![20, 40, 512]
            })
        );
    }

    #[test]
    fn layer_ii_frames_carry_no_header() {
        // Layer II, 192 kbit/s, 44.1 kHz: the tags at their Layer III offsets mean nothing.
        let mut f = vec![0u8; 626];
        f[..4].copy_from_slice(&[0xff, 0xfd, 0xa0, 0x00]);
        let h = FrameHeader::parse(&f).unwrap();
        f[36..40].copy_from_slice(b"Xing");
        assert_eq!(parse(&h, &f), None);
        f[36..40].copy_from_slice(b"VBRI");
        assert_eq!(parse(&h, &f), None);
    }
}
