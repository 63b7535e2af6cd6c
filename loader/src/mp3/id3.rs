//! ID3 tags: where an ID3v2 tag ends (so the audio can start there) and the
//! title, artist and album in it; the same three fields of an ID3v1 tag.
//!
//! What real files get wrong, and what is done about it:
//!
//! - Sizes that are not syncsafe, or that claim more than the file holds.
//!   A size byte with its top bit set is not an ID3v2 header at all; a tag
//!   that claims to run past the end of the file is bounded by the file,
//!   and the caller looks for audio right after its 10-byte header instead
//!   (it is the tag that lies, not necessarily the audio).
//! - iTunes wrote ID3v2.4 frame sizes as plain 32-bit numbers, as in v2.3.
//!   A v2.4 frame size is read as syncsafe unless that lands somewhere that
//!   is not a frame, padding or the tag's end while the plain reading does
//!   not (the rule mutagen and taglib use).
//! - Unsynchronisation (a 0x00 stuffed after each 0xFF that precedes a byte
//!   of 0xE0 or more or a 0x00): the whole tag in v2.2/v2.3, per frame in
//!   v2.4. It matters for text, because a UTF-16 byte-order mark is `FF FE`.
//! - Text said to be ISO-8859-1 that is really UTF-8 (a common tagger bug).
//!   Bytes that form valid UTF-8 with at least one multi-byte sequence are
//!   taken as UTF-8: a real Latin-1 string almost never does. The same rule
//!   reads ID3v1, whose encoding no standard names.
//! - UTF-16 text without a byte-order mark in an encoding that requires
//!   one: read as little-endian, which is what the Windows taggers that omit
//!   it write.
//! - Compressed or encrypted frames (zlib, rare): skipped, not decoded.
//! - Several values in one v2.4 text frame (NUL-separated): the first is used.

/// The text fields a tag gives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tags {
    pub title: Option<String>,
    pub artist: Option<String>,
    pub album: Option<String>,
}

impl Tags {
    fn is_empty(&self) -> bool {
        self.title.is_none() && self.artist.is_none() && self.album.is_none()
    }
}

/// The 10-byte header that starts an ID3v2 tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Id3v2Header {
    /// 2, 3 or 4 (ID3v2.2, v2.3, v2.4); other versions are skipped whole.
    pub major: u8,
    pub revision: u8,
    pub flags: u8,
    /// The size field: bytes after the header, excluding any footer.
    pub size: u32,
}

const UNSYNC: u8 = 0x80;
const EXTENDED: u8 = 0x40;
const FOOTER: u8 = 0x10;

impl Id3v2Header {
    pub const LEN: usize = 10;

    /// Reads an ID3v2 header at the start of `d`: `ID3`, a version byte and a
    /// revision byte other than 0xFF, and four size bytes under 0x80.
    pub fn parse(d: &[u8]) -> Option<Id3v2Header> {
        let h = d.first_chunk::<10>()?;
        if &h[..3] != b"ID3" || h[3] == 0xff || h[4] == 0xff || h[6..].iter().any(|&b| b & 0x80 != 0) {
            return None;
        }
        Some(Id3v2Header {
            major: h[3],
            revision: h[4],
            flags: h[5],
            size: syncsafe(&h[6..10]),
        })
    }

    /// The whole tag's length: header, body and (v2.4) footer.
    pub fn total_len(&self) -> u64 {
        let footer = if self.major >= 4 && self.flags & FOOTER != 0 {
            10
        } else {
            0
        };
        Id3v2Header::LEN as u64 + u64::from(self.size) + footer
    }
}

fn syncsafe(b: &[u8]) -> u32 {
    b.iter().fold(0, |n, &x| (n << 7) | u32::from(x & 0x7f))
}

fn be(b: &[u8]) -> u32 {
    b.iter().fold(0, |n, &x| (n << 8) | u32::from(x))
}

/// Removes unsynchronisation: every `FF 00` becomes `FF`.
fn resync(d: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(d.len());
    let mut prev = 0;
    for &b in d {
        if !(prev == 0xff && b == 0) {
            out.push(b);
        }
        prev = b;
    }
    out
}

/// The text fields of the ID3v2 tag whose header is `h` and whose body (the
/// bytes after the header, bounded by the file) is `body`.
pub fn read_v2(h: &Id3v2Header, body: &[u8]) -> Option<Tags> {
    let body = &body[..body.len().min(h.size as usize)];
    let owned;
    let mut body = match h.major {
        2 | 3 if h.flags & UNSYNC != 0 => {
            owned = resync(body);
            &owned[..]
        }
        2..=4 => body,
        _ => return None,
    };
    // v2.2's bit 6 means the whole tag is compressed, in a scheme never defined.
    if h.major == 2 && h.flags & EXTENDED != 0 {
        return None;
    }
    if h.major >= 3 && h.flags & EXTENDED != 0 {
        let len = body.first_chunk::<4>()?;
        let skip = if h.major == 3 {
            // v2.3: the size excludes its own four bytes.
            be(len) as usize + 4
        } else {
            syncsafe(len) as usize
        };
        body = body.get(skip..)?;
    }
    let mut tags = Tags::default();
    let (id_len, header_len) = if h.major == 2 { (3, 6) } else { (4, 10) };
    let mut at = 0;
    while at + header_len <= body.len() {
        let fh = &body[at..at + header_len];
        if !is_frame_id(&fh[..id_len]) {
            break; // padding, or garbage: either way the frames end here
        }
        let size = match h.major {
            2 => be(&fh[3..6]) as usize,
            3 => be(&fh[4..8]) as usize,
            _ => v24_frame_size(body, at),
        };
        let data_start = at + header_len;
        let Some(data) = body.get(data_start..data_start.saturating_add(size)) else {
            break;
        };
        let (format_flags, unsync_all) = if h.major == 2 {
            (0, false)
        } else {
            (fh[9], h.flags & UNSYNC != 0)
        };
        if let Some(field) = field_of(&fh[..id_len]) {
            if let Some(text) = frame_payload(h.major, format_flags, unsync_all, data).and_then(|p| text_frame(&p)) {
                let slot = match field {
                    Field::Title => &mut tags.title,
                    Field::Artist => &mut tags.artist,
                    Field::Album => &mut tags.album,
                };
                slot.get_or_insert(text);
            }
        }
        at = data_start + size;
    }
    (!tags.is_empty()).then_some(tags)
}

#[derive(Clone, Copy)]
enum Field {
    Title,
    Artist,
    Album,
}

fn field_of(id: &[u8]) -> Option<Field> {
    match id {
        b"TIT2" | b"TT2" => Some(Field::Title),
        b"TPE1" | b"TP1" => Some(Field::Artist),
        b"TALB" | b"TAL" => Some(Field::Album),
        _ => None,
    }
}

/// Frame IDs are upper-case letters and digits.
fn is_frame_id(id: &[u8]) -> bool {
    id.iter().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

/// A v2.4 frame's size: syncsafe, unless it is iTunes's plain number.
fn v24_frame_size(body: &[u8], at: usize) -> usize {
    let raw = &body[at + 4..at + 8];
    let plain = be(raw) as usize;
    if raw.iter().any(|&b| b & 0x80 != 0) {
        return plain;
    }
    let safe = syncsafe(raw) as usize;
    if safe == plain {
        return safe;
    }
    let lands_well = |size: usize| {
        let next = at + 10 + size;
        match body.get(next..) {
            None => false,
            Some([]) => true,
            Some(rest) => rest[0] == 0 || (rest.len() >= 4 && is_frame_id(&rest[..4])),
        }
    };
    if !lands_well(safe) && lands_well(plain) {
        plain
    } else {
        safe
    }
}

/// A frame's payload once the per-frame extras are gone, or `None` for frames
/// that cannot be read without a decompressor or a key.
fn frame_payload(major: u8, flags: u8, unsync_all: bool, data: &[u8]) -> Option<Vec<u8>> {
    let mut d = data;
    match major {
        3 => {
            if flags & 0x80 != 0 || flags & 0x40 != 0 {
                return None; // compressed, encrypted
            }
            if flags & 0x20 != 0 {
                d = d.get(1..)?; // group ID
            }
            Some(d.to_vec())
        }
        4 => {
            if flags & 0x08 != 0 || flags & 0x04 != 0 {
                return None;
            }
            if flags & 0x40 != 0 {
                d = d.get(1..)?;
            }
            if flags & 0x01 != 0 {
                d = d.get(4..)?; // data length indicator
            }
            if unsync_all || flags & 0x02 != 0 {
                Some(resync(d))
            } else {
                Some(d.to_vec())
            }
        }
        _ => Some(d.to_vec()),
    }
}

/// A text frame's first value: the encoding byte, then the text.
fn text_frame(p: &[u8]) -> Option<String> {
    let (&encoding, text) = p.split_first()?;
    let s = match encoding {
        0 => latin1_or_utf8(until_nul(text)),
        1 => utf16_bom(text),
        2 => utf16(text, false),
        3 => String::from_utf8_lossy(until_nul(text)).into_owned(),
        _ => return None,
    };
    clean(&s)
}

fn until_nul(d: &[u8]) -> &[u8] {
    d.iter().position(|&b| b == 0).map_or(d, |n| &d[..n])
}

fn utf16_bom(d: &[u8]) -> String {
    match d {
        [0xff, 0xfe, rest @ ..] => utf16(rest, true),
        [0xfe, 0xff, rest @ ..] => utf16(rest, false),
        _ => utf16(d, true),
    }
}

/// UTF-16 up to the first NUL code unit.
fn utf16(d: &[u8], little: bool) -> String {
    let units = d
        .chunks_exact(2)
        .map(|c| {
            if little {
                u16::from_le_bytes([c[0], c[1]])
            } else {
                u16::from_be_bytes([c[0], c[1]])
            }
        })
        .take_while(|&u| u != 0);
    char::decode_utf16(units)
        .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect()
}

/// ISO-8859-1, unless the bytes are valid UTF-8 with a multi-byte sequence.
fn latin1_or_utf8(d: &[u8]) -> String {
    match std::str::from_utf8(d) {
        Ok(s) if !s.is_ascii() => s.to_owned(),
        _ => d.iter().map(|&b| char::from(b)).collect(),
    }
}

/// Trimmed, with control characters gone; `None` when nothing is left.
fn clean(s: &str) -> Option<String> {
    let s: String = s.chars().filter(|c| !c.is_control()).collect();
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

/// An ID3v1 tag: the last 128 bytes of a file, starting `TAG`.
pub const V1_LEN: usize = 128;

/// The text fields of the ID3v1 tag `t` (128 bytes starting `TAG`). ID3v1.1's
/// track number lives in the comment, which is not read.
pub fn read_v1(t: &[u8]) -> Option<Tags> {
    let t = t.get(..V1_LEN).filter(|t| t.starts_with(b"TAG"))?;
    let field = |r: std::ops::Range<usize>| clean(&latin1_or_utf8(until_nul(&t[r])));
    let tags = Tags {
        title: field(3..33),
        artist: field(33..63),
        album: field(63..93),
    };
    (!tags.is_empty()).then_some(tags)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(major: u8, flags: u8, size: u32) -> Vec<u8> {
        let mut h = b"ID3".to_vec();
        h.extend_from_slice(&[major, 0, flags]);
        h.extend((0..4).rev().map(|i| ((size >> (7 * i)) & 0x7f) as u8));
        h
    }

    fn frame(major: u8, id: &[u8], flags: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = id.to_vec();
        let n = payload.len() as u32;
        match major {
            2 => f.extend_from_slice(&n.to_be_bytes()[1..]),
            3 => f.extend_from_slice(&n.to_be_bytes()),
            _ => f.extend((0..4).rev().map(|i| ((n >> (7 * i)) & 0x7f) as u8)),
        }
        if major > 2 {
            f.extend_from_slice(&flags.to_be_bytes());
        }
        f.extend_from_slice(payload);
        f
    }

    fn tag(major: u8, flags: u8, frames: &[Vec<u8>], padding: usize) -> Vec<u8> {
        let body: Vec<u8> = frames
            .concat()
            .into_iter()
            .chain(std::iter::repeat_n(0, padding))
            .collect();
        let mut t = header(major, flags, body.len() as u32);
        t.extend_from_slice(&body);
        t
    }

    fn read(t: &[u8]) -> Option<Tags> {
        let h = Id3v2Header::parse(t).unwrap();
        read_v2(&h, &t[10..])
    }

    #[test]
    fn header_sizes_are_syncsafe_and_footers_count() {
        // 0x00 0x00 0x02 0x01 = 2 * 128 + 1.
        let h = Id3v2Header::parse(b"ID3\x04\x00\x10\x00\x00\x02\x01").unwrap();
        assert_eq!((h.major, h.size), (4, 257));
        assert_eq!(h.total_len(), 10 + 257 + 10);
        // v2.3 has no footer, whatever bit 4 says.
        assert_eq!(
            Id3v2Header::parse(b"ID3\x03\x00\x10\x00\x00\x02\x01")
                .unwrap()
                .total_len(),
            267
        );
        // A size byte with its top bit set is not an ID3v2 header.
        assert_eq!(Id3v2Header::parse(b"ID3\x03\x00\x00\x00\x80\x00\x00"), None);
        assert_eq!(Id3v2Header::parse(b"ID3\xff\x00\x00\x00\x00\x00\x00"), None);
        assert_eq!(Id3v2Header::parse(b"ID3\x03\x00\x00\x00\x00\x00"), None);
        // The largest size the field can hold: 2^28 - 1.
        let h = Id3v2Header::parse(b"ID3\x03\x00\x00\x7f\x7f\x7f\x7f").unwrap();
        assert_eq!(h.size, (1 << 28) - 1);
    }

    #[test]
    fn every_text_encoding() {
        let latin1 = frame(3, b"TIT2", 0, b"\x00Caf\xe9\x00");
        let bom_le = frame(3, b"TPE1", 0, b"\x01\xff\xfeA\x00\xe9\x00\x00\x00");
        let t = tag(3, 0, &[latin1, bom_le], 20);
        assert_eq!(
            read(&t),
            Some(Tags {
                title: Some("Café".into()),
                artist: Some("Aé".into()),
                album: None
            })
        );
        let bom_be = frame(4, b"TIT2", 0, b"\x01\xfe\xff\x00A\x00\xe9");
        let be = frame(4, b"TPE1", 0, b"\x02\x00B\x20\xac");
        let utf8 = frame(4, b"TALB", 0, "\x03Ålbum\0second value".as_bytes());
        let t = tag(4, 0, &[bom_be, be, utf8], 0);
        assert_eq!(
            read(&t),
            Some(Tags {
                title: Some("Aé".into()),
                artist: Some("B€".into()),
                album: Some("Ålbum".into()),
            })
        );
    }

    #[test]
    fn v22_three_letter_frames() {
        let t = tag(
            2,
            0,
            &[
                frame(2, b"TT2", 0, b"\x00After Hours"),
                frame(2, b"TP1", 0, b"\x00Billy"),
            ],
            0,
        );
        let tags = read(&t).unwrap();
        assert_eq!(tags.title.as_deref(), Some("After Hours"));
        assert_eq!(tags.artist.as_deref(), Some("Billy"));
    }

    #[test]
    fn latin1_that_is_really_utf8() {
        let t = tag(3, 0, &[frame(3, b"TIT2", 0, "\x00Smörgåsbord".as_bytes())], 0);
        assert_eq!(read(&t).unwrap().title.as_deref(), Some("Smörgåsbord"));
    }

    /// Applies unsynchronisation, as a writer does.
    fn unsync(d: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, &b) in d.iter().enumerate() {
            out.push(b);
            if b == 0xff && d.get(i + 1).is_none_or(|&n| n >= 0xe0 || n == 0) {
                out.push(0);
            }
        }
        out
    }

    #[test]
    fn unsynchronised_v23_tag() {
        // v2.3 unsynchronises the whole tag after assembling it, so frame
        // sizes are those of the plain data. The UTF-16 mark FF FE gets a 00.
        let body = frame(3, b"TIT2", 0, b"\x01\xff\xfeZ\x00");
        let stuffed = unsync(&body);
        assert_eq!(stuffed.len(), body.len() + 1);
        let mut t = header(3, UNSYNC, stuffed.len() as u32);
        t.extend(stuffed);
        assert_eq!(read(&t).unwrap().title.as_deref(), Some("Z"));
    }

    #[test]
    fn v24_frame_unsync_and_data_length() {
        let payload = b"\x00\x00\x00\x05\x01\xff\x00\xfeQ\x00";
        let t = tag(4, 0, &[frame(4, b"TIT2", 0x0003, payload)], 0);
        assert_eq!(read(&t).unwrap().title.as_deref(), Some("Q"));
    }

    #[test]
    fn itunes_plain_v24_sizes() {
        // A 200-byte title: syncsafe 200 is 0x01 0x48, plain is 0x00 0xC8.
        let long = "x".repeat(199);
        let mut f = frame(4, b"TIT2", 0, format!("\x00{long}").as_bytes());
        f[4..8].copy_from_slice(&200u32.to_be_bytes());
        let next = frame(4, b"TPE1", 0, b"\x00Artist");
        let t = tag(4, 0, &[f, next], 0);
        let tags = read(&t).unwrap();
        assert_eq!(tags.title.as_deref(), Some(long.as_str()));
        assert_eq!(tags.artist.as_deref(), Some("Artist"));
    }

    #[test]
    fn compressed_frames_and_extended_headers() {
        let compressed = frame(3, b"TIT2", 0x0080, b"\x00\x00\x00\x10junk");
        let artist = frame(3, b"TPE1", 0, b"\x00Who");
        let mut body = vec![0, 0, 0, 6, 0, 0, 0, 0, 0, 0];
        body.extend(compressed);
        body.extend(artist);
        let mut t = header(3, EXTENDED, body.len() as u32);
        t.extend(body);
        assert_eq!(
            read(&t),
            Some(Tags {
                artist: Some("Who".into()),
                ..Tags::default()
            })
        );
    }

    #[test]
    fn frames_that_overrun_the_tag_end_the_walk() {
        let mut f = frame(3, b"TIT2", 0, b"\x00Title");
        f[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(read(&tag(3, 0, &[f], 0)), None);
        assert_eq!(read(&tag(3, 0, &[], 100)), None);
    }

    #[test]
    fn id3v1_fields() {
        let mut t = vec![0u8; 128];
        t[..3].copy_from_slice(b"TAG");
        t[3..8].copy_from_slice(b"Song ");
        t[33..36].copy_from_slice(b"Who");
        t[63..93].copy_from_slice(&[b' '; 30]);
        assert_eq!(
            read_v1(&t),
            Some(Tags {
                title: Some("Song".into()),
                artist: Some("Who".into()),
                album: None
            })
        );
        assert_eq!(read_v1(&t[..127]), None);
        t[0] = b'X';
        assert_eq!(read_v1(&t), None);
    }
}
