//! ICY metadata, the SHOUTcast convention Icecast and every internet-radio
//! player follow: a listener that asks with `Icy-MetaData: 1` is told
//! `icy-metaint: N` and then gets exactly N audio bytes, one metadata block,
//! N audio bytes, one block, and so on. A block is a length byte L and L * 16
//! bytes of text, `StreamTitle='...';` (perhaps `StreamUrl='...';` after it)
//! padded with NULs; L = 0, a lone zero byte, means "no change". Sans-IO:
//! [`Interleaver`] turns audio bytes and the current [`Metadata`] into that
//! stream, [`Stripper`] turns it back into audio and titles, both across
//! chunks of any size, with no clock and no sockets.
//!
//! What servers and clients do, which this follows:
//!
//! - **Blocks.** Icecast sends the current title in a listener's first block
//!   and whenever it changes, and a zero byte in every other block. With no
//!   title at all its first block is `StreamTitle='';`. The text is always
//!   followed by at least one NUL: the length byte is `len / 16 + 1`, never
//!   an exact fit, so a client that reads the block as a C string stops
//!   inside it. Both are done the same way here.
//! - **Quotes.** Nothing escapes them, and no client unescapes: ffmpeg (and
//!   so mpv), VLC and GStreamer's `icydemux` all take the value from after
//!   `='` up to the first `';`. So a title's apostrophes are sent as they
//!   are (`Don't Stop`, `Rock 'n' Roll` and a trailing `'` all arrive
//!   whole), and the one sequence that would cut it short, a `'` followed
//!   by `;`, gets a space between (`' ;`). A `;` at the very start of a
//!   title would follow the opening quote, so it gets one too: ffmpeg would
//!   take the opening quote for the closing one, and `icydemux` would read
//!   past the end of its string. A backslash escape would show up literally
//!   in every one of them.
//! - **Control characters** (NUL, CR, LF, ...) become spaces: a NUL ends the
//!   value early for C-string readers.
//! - **Length.** L is one byte, so a block holds at most 255 * 16 = 4080
//!   bytes. Icecast drops a title that does not fit; here the URL is dropped
//!   first and then the title is cut (at a character boundary) to fit.
//! - **Charset.** ICY says nothing. UTF-8 is the default: VLC and GStreamer
//!   try UTF-8 first and ffmpeg passes the bytes through. Old receivers
//!   (Winamp-era) expect ISO-8859-1, which Icecast sends by default for MP3
//!   mounts; [`Charset::Latin1`] writes that, with `?` for what it cannot
//!   hold.

use std::fmt;
use std::num::NonZeroUsize;
use std::ops::Range;
use std::sync::{Arc, OnceLock};

/// The largest block text: 255 blocks of 16 bytes.
pub const MAX_METADATA_LEN: usize = 255 * 16;

/// Icecast's `icy-metaint` unless a mount sets its own. (SHOUTcast uses 8192.)
pub const DEFAULT_METAINT: NonZeroUsize = NonZeroUsize::new(16_000).unwrap();

/// How a block's text is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Charset {
    #[default]
    Utf8,
    /// ISO-8859-1; characters beyond it become `?`.
    Latin1,
}

/// A rendered metadata block: the length byte, the text and its NUL padding.
/// Rendered once per title and shared by every listener (cloning is cheap).
#[derive(Clone, PartialEq, Eq)]
pub struct Metadata(Arc<[u8]>);

impl Metadata {
    /// `StreamTitle='title';`, in UTF-8.
    pub fn title(title: &str) -> Metadata {
        Metadata::new(title, None, Charset::Utf8)
    }

    /// `StreamTitle='title';StreamUrl='url';` in `charset`, each value made
    /// safe for clients (see the module documentation) and the whole cut to
    /// fit one block: the URL goes first, then the end of the title.
    pub fn new(title: &str, url: Option<&str>, charset: Charset) -> Metadata {
        const TITLE: &[u8] = b"StreamTitle='";
        const URL: &[u8] = b"StreamUrl='";
        const END: &[u8] = b"';";
        let title = encode(&sanitize(title), charset);
        let url = url.map(|u| encode(&sanitize(u), charset));
        // Room for the text, keeping one NUL.
        let room = MAX_METADATA_LEN - 1;
        let fixed = TITLE.len() + END.len();
        let url = url.filter(|u| fixed + title.len() + URL.len() + u.len() + END.len() <= room);
        let title = cut(&title, room - fixed, charset);
        let mut text = Vec::with_capacity(
            1 + fixed + title.len() + url.as_ref().map_or(0, |u| URL.len() + u.len() + END.len()) + 16,
        );
        text.push(0);
        text.extend_from_slice(TITLE);
        text.extend_from_slice(title);
        text.extend_from_slice(END);
        if let Some(u) = &url {
            text.extend_from_slice(URL);
            text.extend_from_slice(u);
            text.extend_from_slice(END);
        }
        let blocks = (text.len() - 1) / 16 + 1;
        text[0] = blocks as u8;
        text.resize(1 + blocks * 16, 0);
        Metadata(text.into())
    }

    /// `StreamTitle='';`, what Icecast sends before any title is known.
    pub fn empty() -> Metadata {
        static EMPTY: OnceLock<Metadata> = OnceLock::new();
        EMPTY.get_or_init(|| Metadata::title("")).clone()
    }

    /// The whole block as sent: length byte, text, padding.
    pub fn block(&self) -> &[u8] {
        &self.0
    }

    /// The text without the length byte and the padding.
    pub fn text(&self) -> &[u8] {
        let t = &self.0[1..];
        &t[..t.iter().position(|&b| b == 0).unwrap_or(t.len())]
    }
}

/// The whole block, so that a listener's queue can hold it as a `Bytes`
/// without copying it.
impl AsRef<[u8]> for Metadata {
    fn as_ref(&self) -> &[u8] {
        self.block()
    }
}

impl fmt::Debug for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Metadata({:?})", String::from_utf8_lossy(self.text()))
    }
}

/// A title or URL as clients can read it back: control characters become
/// spaces, and a space goes before any `;` that would close the value early.
fn sanitize(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    // The value's opening quote counts as a preceding `'`.
    let mut after_quote = true;
    for c in s.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if c == ';' && after_quote {
            out.push(' ');
        }
        after_quote = c == '\'';
        out.push(c);
    }
    out
}

fn encode(s: &str, charset: Charset) -> Vec<u8> {
    match charset {
        Charset::Utf8 => s.as_bytes().to_vec(),
        Charset::Latin1 => s.chars().map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?')).collect(),
    }
}

/// At most `max` bytes of `s`, cut at a character boundary.
fn cut(s: &[u8], max: usize, charset: Charset) -> &[u8] {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    // UTF-8 continuation bytes are 10xxxxxx; Latin-1 has one byte a character.
    while charset == Charset::Utf8 && end > 0 && s[end] & 0xc0 == 0x80 {
        end -= 1;
    }
    &s[..end]
}

/// The block that says "no change".
const UNCHANGED: &[u8] = &[0];

/// One piece of a listener's stream, for writing as an iovec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// These bytes of the audio the caller passed in.
    Audio(Range<usize>),
    /// A metadata block.
    Metadata(Metadata),
    /// The zero byte: the metadata has not changed.
    Unchanged,
}

impl Segment {
    /// The bytes of a metadata segment (`None` for audio: the caller has it).
    pub fn metadata_bytes(&self) -> Option<&[u8]> {
        match self {
            Segment::Audio(_) => None,
            Segment::Metadata(m) => Some(m.block()),
            Segment::Unchanged => Some(UNCHANGED),
        }
    }
}

/// One listener's ICY framing: feed it the audio as it is sent, tell it the
/// metadata when it changes, and it puts a block after every `metaint`
/// audio bytes.
///
/// A block is written when the audio byte after it is, not when the one
/// before it is: metadata set between two calls reaches the block at that
/// seam, and a stream that ends at a block boundary ends with audio.
#[derive(Debug, Clone)]
pub struct Interleaver {
    metaint: usize,
    /// Audio bytes to go before the next block.
    left: usize,
    current: Metadata,
    /// What this listener last got in a block (`None` before its first).
    sent: Option<Metadata>,
}

impl Interleaver {
    /// A listener told `icy-metaint: metaint`.
    pub fn new(metaint: NonZeroUsize) -> Interleaver {
        Interleaver {
            metaint: metaint.get(),
            left: metaint.get(),
            current: Metadata::empty(),
            sent: None,
        }
    }

    pub fn metaint(&self) -> usize {
        self.metaint
    }

    /// The metadata from the next block on. Setting what was last sent again
    /// sends nothing new.
    pub fn set_metadata(&mut self, metadata: Metadata) {
        self.current = metadata;
    }

    /// Audio bytes that can go before the next block.
    pub fn audio_before_block(&self) -> usize {
        self.left
    }

    /// The block due now, and notes it as sent.
    fn take_block(&mut self) -> Segment {
        self.left = self.metaint;
        if self.sent.as_ref() == Some(&self.current) {
            Segment::Unchanged
        } else {
            self.sent = Some(self.current.clone());
            Segment::Metadata(self.current.clone())
        }
    }

    /// Splits `audio_len` bytes of audio into segments, pushing them onto
    /// `out` in order: audio ranges (of those bytes) with blocks between.
    pub fn segments(&mut self, audio_len: usize, out: &mut Vec<Segment>) {
        let mut at = 0;
        while at < audio_len {
            if self.left == 0 {
                out.push(self.take_block());
            }
            let n = self.left.min(audio_len - at);
            out.push(Segment::Audio(at..at + n));
            self.left -= n;
            at += n;
        }
    }

    /// Appends `audio`, with blocks where they fall, to `out`.
    pub fn push(&mut self, mut audio: &[u8], out: &mut Vec<u8>) {
        while !audio.is_empty() {
            if self.left == 0 {
                let block = self.take_block();
                out.extend_from_slice(block.metadata_bytes().unwrap_or_default());
            }
            let (now, rest) = audio.split_at(self.left.min(audio.len()));
            out.extend_from_slice(now);
            self.left -= now.len();
            audio = rest;
        }
    }
}

/// A metadata block a [`Stripper`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// Audio bytes before it in the stream.
    pub audio_offset: u64,
    /// The block's text, padding removed.
    pub text: Vec<u8>,
}

impl Received {
    /// The `StreamTitle` value (see [`field`]).
    pub fn title(&self) -> Option<String> {
        field(&self.text, "StreamTitle")
    }
}

/// The value of `key` in block text `text`, read as VLC reads it: after
/// `key='`, up to the next `';` (lossy UTF-8). ffmpeg and GStreamer read the
/// same whenever a value holds no `';` and does not start with `;`, which
/// [`Metadata`] makes sure of.
pub fn field(text: &[u8], key: &str) -> Option<String> {
    let text = &text[..text.iter().position(|&b| b == 0).unwrap_or(text.len())];
    let mut rest = text;
    loop {
        let eq = find(rest, b"='")?;
        let value = &rest[eq + 2..];
        let end = find(value, b"';")?;
        if &rest[..eq] == key.as_bytes() {
            return Some(String::from_utf8_lossy(&value[..end]).into_owned());
        }
        rest = &value[end + 2..];
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// What a listener does: takes the stream with metadata in it, in chunks of
/// any size, and hands back the audio and the blocks.
#[derive(Debug, Clone)]
pub struct Stripper {
    metaint: usize,
    state: StripState,
    audio_offset: u64,
}

#[derive(Debug, Clone)]
enum StripState {
    /// Audio bytes to go before the next length byte.
    Audio(usize),
    /// Block bytes still to come, and those so far.
    Block(usize, Vec<u8>),
}

impl Stripper {
    /// A listener that was told `icy-metaint: metaint`.
    pub fn new(metaint: NonZeroUsize) -> Stripper {
        Stripper {
            metaint: metaint.get(),
            state: StripState::Audio(metaint.get()),
            audio_offset: 0,
        }
    }

    /// Audio bytes received so far.
    pub fn audio_offset(&self) -> u64 {
        self.audio_offset
    }

    /// Takes `data` from the stream, appending its audio to `audio` and each
    /// complete block with text (not the zero bytes) to `blocks`.
    pub fn feed(&mut self, mut data: &[u8], audio: &mut Vec<u8>, blocks: &mut Vec<Received>) {
        while !data.is_empty() {
            match &mut self.state {
                StripState::Audio(0) => {
                    let len = usize::from(data[0]) * 16;
                    data = &data[1..];
                    self.state = if len == 0 {
                        StripState::Audio(self.metaint)
                    } else {
                        StripState::Block(len, Vec::with_capacity(len))
                    };
                }
                StripState::Audio(left) => {
                    let n = (*left).min(data.len());
                    audio.extend_from_slice(&data[..n]);
                    *left -= n;
                    self.audio_offset += n as u64;
                    data = &data[n..];
                }
                StripState::Block(left, text) => {
                    let n = (*left).min(data.len());
                    text.extend_from_slice(&data[..n]);
                    *left -= n;
                    data = &data[n..];
                    if *left == 0 {
                        let mut text = std::mem::take(text);
                        text.truncate(text.iter().position(|&b| b == 0).unwrap_or(text.len()));
                        blocks.push(Received {
                            audio_offset: self.audio_offset,
                            text,
                        });
                        self.state = StripState::Audio(self.metaint);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metaint(n: usize) -> NonZeroUsize {
        NonZeroUsize::new(n).unwrap()
    }

    #[test]
    fn block_layout_as_icecast_writes_it() {
        // 15 bytes of text: one block of 16, with one NUL.
        let m = Metadata::title("");
        assert_eq!(m.block(), b"\x01StreamTitle='';\0");
        assert_eq!(Metadata::empty(), m);
        // 16 bytes of text take two blocks: a NUL always follows.
        let m = Metadata::title("a");
        assert_eq!(m.block().len(), 33);
        assert_eq!(m.block()[0], 2);
        assert_eq!(&m.block()[1..17], b"StreamTitle='a';");
        assert!(m.block()[17..].iter().all(|&b| b == 0));
        assert_eq!(m.text(), b"StreamTitle='a';");
        let m = Metadata::new("Song", Some("http://example.com/"), Charset::Utf8);
        assert_eq!(m.text(), b"StreamTitle='Song';StreamUrl='http://example.com/';");
        assert_eq!(m.block().len(), 1 + 16 * m.block()[0] as usize);
    }

    #[test]
    fn quotes_pass_and_only_what_would_end_the_value_is_changed() {
        let cases = [
            ("Don't Stop", "Don't Stop"),
            ("Rock 'n' Roll", "Rock 'n' Roll"),
            ("'Quoted'", "'Quoted'"),
            ("a; b", "a; b"),
            ("Tricky';rest", "Tricky' ;rest"),
            (";starts", " ;starts"),
            ("''';;", "''' ;;"),
            ("line\nbreak\0nul\ttab", "line break nul tab"),
            ("x='y", "x='y"),
        ];
        for (title, sent) in cases {
            let m = Metadata::title(title);
            assert_eq!(m.text(), format!("StreamTitle='{sent}';").as_bytes(), "{title:?}");
            // What a client reads back is what was sent.
            assert_eq!(field(m.text(), "StreamTitle").as_deref(), Some(sent), "{title:?}");
        }
    }

    #[test]
    fn reading_a_field_back() {
        assert_eq!(field(b"StreamTitle='';", "StreamTitle").as_deref(), Some(""));
        assert_eq!(field(b"StreamTitle='a';b';", "StreamTitle").as_deref(), Some("a"));
        assert_eq!(field(b"StreamTitle='it''s';", "StreamTitle").as_deref(), Some("it''s"));
        assert_eq!(field(b"StreamTitle=';x';", "StreamTitle").as_deref(), Some(";x"));
        assert_eq!(
            field(b"StreamTitle='t';StreamUrl='u';", "StreamUrl").as_deref(),
            Some("u")
        );
        assert_eq!(field(b"StreamTitle='t';StreamUrl='u';", "Other"), None);
        assert_eq!(field(b"StreamTitle='no end", "StreamTitle"), None);
        assert_eq!(field(b"", "StreamTitle"), None);
        assert_eq!(field(b"StreamTitle='t'\0;junk", "StreamTitle"), None);
    }

    #[test]
    fn long_titles_are_cut_to_one_block_at_a_character() {
        let m = Metadata::title(&"x".repeat(5000));
        assert_eq!(m.block().len(), 1 + MAX_METADATA_LEN);
        assert_eq!(m.block()[0], 255);
        assert_eq!(m.text().len(), MAX_METADATA_LEN - 1);
        assert_eq!(*m.block().last().unwrap(), 0);
        assert!(m.text().ends_with(b"x';"));
        // Three-byte characters: the cut lands between two of them.
        let m = Metadata::title(&"\u{2603}".repeat(2000));
        let title = field(m.text(), "StreamTitle").unwrap();
        assert!(title.chars().all(|c| c == '\u{2603}'), "a split character");
        assert_eq!(title.len(), (MAX_METADATA_LEN - 1 - 15) / 3 * 3);
        // A title that fits keeps its URL; one that does not, loses it.
        let alone = "t".repeat(4050);
        let m = Metadata::new(&alone, Some("http://u/"), Charset::Utf8);
        assert_eq!(field(m.text(), "StreamUrl"), None);
        assert_eq!(field(m.text(), "StreamTitle").unwrap().len(), 4050);
        let m = Metadata::new(&"t".repeat(4040), Some("http://u/"), Charset::Utf8);
        assert_eq!(field(m.text(), "StreamUrl").as_deref(), Some("http://u/"));
    }

    #[test]
    fn latin1() {
        let m = Metadata::new("Café \u{2603}", None, Charset::Latin1);
        assert_eq!(m.text(), b"StreamTitle='Caf\xe9 ?';");
        assert_eq!(
            Metadata::new(&"\u{e9}".repeat(5000), None, Charset::Latin1)
                .text()
                .len(),
            4079
        );
    }

    #[test]
    fn first_block_then_zeros_until_the_title_changes() {
        let mut icy = Interleaver::new(metaint(4));
        let mut out = Vec::new();
        icy.push(b"aaaa", &mut out);
        assert_eq!(out, b"aaaa", "no block until the audio after it");
        icy.push(b"bbbbcc", &mut out);
        let empty = Metadata::empty();
        let mut expected = b"aaaa".to_vec();
        expected.extend_from_slice(empty.block());
        expected.extend_from_slice(b"bbbb\0cc");
        assert_eq!(out, expected);
        icy.set_metadata(Metadata::title("One"));
        icy.push(b"cc", &mut out);
        icy.set_metadata(Metadata::title("One"));
        icy.push(b"dddd", &mut out);
        icy.set_metadata(Metadata::title("Two"));
        icy.push(b"eeee", &mut out);
        expected.extend_from_slice(b"cc");
        expected.extend_from_slice(Metadata::title("One").block());
        expected.extend_from_slice(b"dddd");
        expected.extend_from_slice(Metadata::title("Two").block());
        expected.extend_from_slice(b"eeee");
        assert_eq!(out, expected);
        assert_eq!(icy.audio_before_block(), 0);
    }

    #[test]
    fn segments_point_into_the_audio() {
        let mut icy = Interleaver::new(metaint(3));
        icy.set_metadata(Metadata::title("T"));
        let mut segs = Vec::new();
        icy.segments(2, &mut segs);
        icy.segments(0, &mut segs);
        icy.segments(8, &mut segs);
        assert_eq!(
            segs,
            [
                Segment::Audio(0..2),
                Segment::Audio(0..1),
                Segment::Metadata(Metadata::title("T")),
                Segment::Audio(1..4),
                Segment::Unchanged,
                Segment::Audio(4..7),
                Segment::Unchanged,
                Segment::Audio(7..8),
            ]
        );
        assert_eq!(segs[4].metadata_bytes(), Some(&[0u8][..]));
        assert_eq!(segs[3].metadata_bytes(), None);
    }

    // -----------------------------------------------------------------------
    // Property: interleave, then strip, in random chunks.

    /// SplitMix64.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Titles that need no change to be read back: quotes, `;` not after a
    /// quote, `=`, non-ASCII, and lengths up to what one block holds.
    fn random_title(rng: &mut Rng) -> String {
        const PIECES: [&str; 10] = ["a", "Z", "'", " ", "é", "\u{2603}", "=", "; ", "x'y", "\u{1f3b5}"];
        let len = match rng.below(10) {
            0 => 0,
            1 => 1000 + rng.below(300),
            _ => rng.below(40),
        };
        let mut t = String::new();
        while t.len() < len {
            let p = PIECES[rng.below(PIECES.len())];
            if p.starts_with(';') && (t.is_empty() || t.ends_with('\'')) {
                continue;
            }
            t.push_str(p);
        }
        t
    }

    /// Feeds `stream` to a stripper in random chunks.
    fn strip(stream: &[u8], metaint: NonZeroUsize, rng: &mut Rng, max_chunk: usize) -> (Vec<u8>, Vec<Received>) {
        let mut s = Stripper::new(metaint);
        let (mut audio, mut blocks) = (Vec::new(), Vec::new());
        let mut at = 0;
        while at < stream.len() {
            let n = rng.below(max_chunk + 1).min(stream.len() - at);
            s.feed(&stream[at..at + n], &mut audio, &mut blocks);
            at += n;
        }
        assert_eq!(s.audio_offset(), audio.len() as u64);
        (audio, blocks)
    }

    #[test]
    fn interleave_then_strip_gives_back_audio_and_titles() {
        let mut rng = Rng(0x1c7_0001);
        for case in 0..300 {
            let metaint = match case % 4 {
                0 => 1 + rng.below(4),
                1 => 16 + rng.below(200),
                2 => 8192,
                _ => 1 + rng.below(20_000),
            };
            let nz = NonZeroUsize::new(metaint).unwrap();
            let total = rng.below(6 * metaint + 1) + rng.below(5000);
            let audio: Vec<u8> = (0..total).map(|_| rng.next() as u8).collect();
            let max_chunk = [1, 7, metaint, 3 * metaint + 5, 70_000][rng.below(5)];
            let use_segments = rng.below(2) == 0;

            // Push in random chunks, changing (or re-setting) the title now and
            // then between them; note where each change took effect.
            let mut icy = Interleaver::new(nz);
            let mut stream = Vec::new();
            let mut changes: Vec<(usize, String)> = Vec::new();
            let mut segs = Vec::new();
            // Up to 40 changes, at random points; each is made at the first
            // seam between chunks at or after its point.
            let mut points: Vec<usize> = (0..rng.below(40)).map(|_| rng.below(total + 1)).collect();
            points.sort_unstable_by(|a, b| b.cmp(a));
            let mut at = 0;
            while at < total {
                while points.last().is_some_and(|&p| p <= at) {
                    points.pop();
                    let title = match (rng.below(3), changes.last()) {
                        (0, Some((_, last))) => last.clone(),
                        _ => random_title(&mut rng),
                    };
                    icy.set_metadata(Metadata::title(&title));
                    changes.push((at, title));
                }
                let n = rng.below(max_chunk + 1).min(total - at);
                let chunk = &audio[at..at + n];
                if use_segments {
                    segs.clear();
                    icy.segments(n, &mut segs);
                    for s in &segs {
                        match s {
                            Segment::Audio(r) => stream.extend_from_slice(&chunk[r.clone()]),
                            other => stream.extend_from_slice(other.metadata_bytes().unwrap()),
                        }
                    }
                } else {
                    icy.push(chunk, &mut stream);
                }
                at += n;
            }

            // The model: a block before each audio byte k * metaint (k >= 1)
            // that exists; it carries the last title set at or before that
            // byte was pushed, and has text when that differs from the last
            // block with text (the first block always has it).
            let mut expected = Vec::new();
            let mut last: Option<String> = None;
            let mut boundary = metaint;
            while boundary < total {
                let title = changes
                    .iter()
                    .rev()
                    .find(|(p, _)| *p <= boundary)
                    .map_or(String::new(), |(_, t)| t.clone());
                if last.as_ref() != Some(&title) {
                    expected.push((boundary as u64, title.clone()));
                    last = Some(title);
                }
                boundary += metaint;
            }
            let blocks_total = total.saturating_sub(1) / metaint;
            let strip_chunk = [1, 5, 100, 100_000][rng.below(4)];
            let (got_audio, got) = strip(&stream, nz, &mut rng, strip_chunk);
            assert_eq!(got_audio, audio, "case {case}: metaint {metaint}, {total} bytes");
            let got: Vec<(u64, String)> = got.iter().map(|b| (b.audio_offset, b.title().unwrap())).collect();
            assert_eq!(got, expected, "case {case}: metaint {metaint}");
            // Every block is there: the stream is the audio, the text blocks
            // and one zero byte for each other block.
            let text_bytes: usize = expected.iter().map(|(_, t)| Metadata::title(t).block().len()).sum();
            assert_eq!(
                stream.len(),
                total + text_bytes + (blocks_total - expected.len()),
                "case {case}"
            );
        }
    }

    #[test]
    fn stripper_survives_any_bytes() {
        let mut rng = Rng(7);
        for _ in 0..200 {
            let metaint = NonZeroUsize::new(1 + rng.below(100)).unwrap();
            let junk: Vec<u8> = (0..rng.below(20_000)).map(|_| rng.next() as u8).collect();
            let (audio, blocks) = strip(&junk, metaint, &mut rng, 300);
            assert!(audio.len() <= junk.len());
            for b in &blocks {
                assert!(b.text.len() <= MAX_METADATA_LEN);
                let _ = b.title();
            }
        }
    }
}
