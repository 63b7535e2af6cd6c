//! Tags at the end of a file, after the last frame: ID3v1 (and its TAG+
//! extension), APEv2, Lyrics3 (v1 and v2) and an appended ID3v2.4 (found by
//! its `3DI` footer). They come stacked in any order, so they are peeled off
//! from the end until none is left; what remains is where the audio ends.
//!
//! A tag whose size field does not fit is not peeled: its bytes stay in the
//! audio region, where the frame walk reports them as bytes that are not
//! frames. Nothing here trusts a size beyond the bytes there are.

use super::id3::{self, Id3v2Header, Tags};

/// What the end of the file holds.
#[derive(Debug, Default)]
pub struct Trailer {
    /// Where the audio ends: the start of the first trailing tag.
    pub audio_end: usize,
    /// The ID3v1 tag's fields, if there is one.
    pub id3v1: Option<Tags>,
    /// The appended ID3v2 tag's fields, if there is one.
    pub id3v2: Option<Tags>,
}

/// Peels the trailing tags off `d`, never below `floor` (the audio start).
pub fn find(d: &[u8], floor: usize) -> Trailer {
    let mut t = Trailer {
        audio_end: d.len(),
        ..Trailer::default()
    };
    loop {
        let end = t.audio_end;
        let tail = &d[floor..end];
        let start =
            if t.id3v1.is_none() && tail.len() >= id3::V1_LEN && tail[tail.len() - id3::V1_LEN..].starts_with(b"TAG") {
                let at = end - id3::V1_LEN;
                t.id3v1 = id3::read_v1(&d[at..end]).or(Some(Tags::default()));
                // TAG+ (the "enhanced" tag) sits in the 227 bytes before it.
                if at - floor >= 227 && d[at - 227..].starts_with(b"TAG+") {
                    at - 227
                } else {
                    at
                }
            } else if let Some(at) = ape(tail) {
                floor + at
            } else if let Some(at) = lyrics3(tail) {
                floor + at
            } else if let Some((at, tags)) = appended_id3v2(tail) {
                t.id3v2 = t.id3v2.or(tags);
                floor + at
            } else {
                return t;
            };
        t.audio_end = start;
    }
}

fn le32(d: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(d[at..at + 4].try_into().expect("four bytes"))
}

/// APEv2 (or APEv1) tag ending `tail`: a 32-byte footer `APETAGEX`, version,
/// size (items and footer), item count, flags (bit 31: a 32-byte header
/// precedes the items). Returns where the tag starts.
fn ape(tail: &[u8]) -> Option<usize> {
    let f = tail.len().checked_sub(32)?;
    if !tail[f..].starts_with(b"APETAGEX") {
        return None;
    }
    let size = le32(tail, f + 12) as usize;
    let header = if le32(tail, f + 20) & (1 << 31) != 0 { 32 } else { 0 };
    if size < 32 {
        return None;
    }
    tail.len().checked_sub(size)?.checked_sub(header)
}

/// Lyrics3 ending `tail`: v2 ends `LYRICS200` after a six-digit size of the
/// tag before it; v1 ends `LYRICSEND` and starts `LYRICSBEGIN` within 5100
/// bytes before.
fn lyrics3(tail: &[u8]) -> Option<usize> {
    let n = tail.len();
    if tail.ends_with(b"LYRICS200") {
        let digits = tail.get(n.checked_sub(15)?..n - 9)?;
        let size: usize = std::str::from_utf8(digits).ok()?.parse().ok()?;
        let start = n.checked_sub(15 + size)?;
        return tail[start..].starts_with(b"LYRICSBEGIN").then_some(start);
    }
    if tail.ends_with(b"LYRICSEND") {
        let from = n.saturating_sub(9 + 5100);
        let body = &tail[from..n - 9];
        let at = body.windows(11).rposition(|w| w == b"LYRICSBEGIN")?;
        return Some(from + at);
    }
    None
}

/// An ID3v2.4 tag appended at the end, found by its 10-byte `3DI` footer,
/// which repeats the header's fields.
fn appended_id3v2(tail: &[u8]) -> Option<(usize, Option<Tags>)> {
    let f = tail.len().checked_sub(10)?;
    let mut header = [0u8; 10];
    header.copy_from_slice(&tail[f..]);
    if &header[..3] != b"3DI" {
        return None;
    }
    header[..3].copy_from_slice(b"ID3");
    let h = Id3v2Header::parse(&header).filter(|h| h.major >= 4 && h.flags & 0x10 != 0)?;
    let start = tail.len().checked_sub(usize::try_from(h.total_len()).ok()?)?;
    if Id3v2Header::parse(&tail[start..]) != Some(h) {
        return None;
    }
    Some((start, id3::read_v2(&h, &tail[start + 10..f])))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v1(title: &str) -> Vec<u8> {
        let mut t = vec![0u8; 128];
        t[..3].copy_from_slice(b"TAG");
        t[3..3 + title.len()].copy_from_slice(title.as_bytes());
        t
    }

    fn ape_tag(items: usize, with_header: bool) -> Vec<u8> {
        let size = (items + 32) as u32;
        let flags: u32 = if with_header { 1 << 31 } else { 0 };
        let block = |is_header: bool| {
            let mut b = b"APETAGEX".to_vec();
            b.extend_from_slice(&2000u32.to_le_bytes());
            b.extend_from_slice(&size.to_le_bytes());
            b.extend_from_slice(&1u32.to_le_bytes());
            b.extend_from_slice(&(flags | if is_header { 1 << 29 } else { 0 }).to_le_bytes());
            b.extend_from_slice(&[0; 8]);
            b
        };
        let mut t = Vec::new();
        if with_header {
            t.extend(block(true));
        }
        t.extend(vec![b'i'; items]);
        t.extend(block(false));
        t
    }

    #[test]
    fn stacked_tags_peel_off_in_any_order() {
        let audio = vec![0xaa; 1000];
        let mut lyrics = b"LYRICSBEGIN".to_vec();
        lyrics.extend_from_slice(b"IND0000210");
        let size = format!("{:06}", lyrics.len());
        lyrics.extend_from_slice(size.as_bytes());
        lyrics.extend_from_slice(b"LYRICS200");
        for order in [["ape", "lyrics"], ["lyrics", "ape"]] {
            let mut d = audio.clone();
            for which in order {
                d.extend(if which == "ape" {
                    ape_tag(50, true)
                } else {
                    lyrics.clone()
                });
            }
            d.extend(v1("Song"));
            let t = find(&d, 0);
            assert_eq!(t.audio_end, 1000, "{order:?}");
            assert_eq!(t.id3v1.unwrap().title.as_deref(), Some("Song"));
        }
    }

    #[test]
    fn ape_without_header_and_lyrics3_v1() {
        let mut d = vec![0xaa; 6000];
        d.extend(ape_tag(10, false));
        assert_eq!(find(&d, 0).audio_end, 6000);
        let mut d = vec![0xaa; 6000];
        d.extend_from_slice(b"LYRICSBEGINsome words LYRICSEND");
        d.extend(v1(""));
        let t = find(&d, 0);
        assert_eq!(t.audio_end, 6000);
        assert_eq!(t.id3v1, Some(Tags::default()));
    }

    #[test]
    fn sizes_that_do_not_fit_are_left_alone() {
        let mut d = vec![0xaa; 100];
        let mut tag = ape_tag(10, true);
        let f = tag.len() - 32;
        tag[f + 12..f + 16].copy_from_slice(&u32::MAX.to_le_bytes());
        d.extend(tag);
        assert_eq!(find(&d, 0).audio_end, d.len());
        // Nor below the floor: the tag would swallow the audio start.
        let mut d = vec![0xaa; 100];
        d.extend(ape_tag(10, true));
        assert_eq!(find(&d, 120).audio_end, d.len());
        let mut d = b"xxLYRICSBEGIN".to_vec();
        d.extend_from_slice(b"999999LYRICS200");
        assert_eq!(find(&d, 0).audio_end, d.len());
    }

    #[test]
    fn appended_id3v2_by_its_footer() {
        let mut frame = b"TIT2".to_vec();
        frame.extend_from_slice(&[0, 0, 0, 6, 0, 0, 0]);
        frame.extend_from_slice(b"Outro");
        let mut header = b"ID3\x04\x00\x10".to_vec();
        header.extend_from_slice(&[0, 0, 0, frame.len() as u8]);
        let mut d = vec![0xaa; 50];
        d.extend(&header);
        d.extend(&frame);
        header[..3].copy_from_slice(b"3DI");
        d.extend(&header);
        let t = find(&d, 0);
        assert_eq!(t.audio_end, 50);
        assert_eq!(t.id3v2.unwrap().title.as_deref(), Some("Outro"));
    }

    #[test]
    fn tag_that_is_the_whole_file() {
        let d = v1("x");
        let t = find(&d, 0);
        assert_eq!(t.audio_end, 0);
        assert_eq!(find(&d[..127], 0).audio_end, 127);
    }
}
