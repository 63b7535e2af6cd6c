//! Interleaved binary data on an RTSP connection (RFC 2326 section 10.12):
//! `$`, a one-byte channel, a 16-bit big-endian length, then that many bytes
//! of RTP or RTCP. Framing is read and written here and nowhere else.
//!
//! Frames and RTSP messages share the byte stream, so a reader looks at the
//! first byte: `$` starts a frame, anything else a message
//! ([`crate::rtsp::message::parse`] hands frames out too, as
//! [`Message::Interleaved`](crate::rtsp::message::Message::Interleaved)).

/// The byte that starts a frame.
pub const MAGIC: u8 = b'$';

/// `$`, channel, length.
pub const HEADER_LEN: usize = 4;

/// The most data one frame carries: the length field has 16 bits.
pub const MAX_DATA_LEN: usize = u16::MAX as usize;

/// One frame, borrowed from the connection's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub channel: u8,
    pub data: &'a [u8],
}

impl Frame<'_> {
    /// The bytes the frame occupies on the connection.
    pub fn wire_len(&self) -> usize {
        HEADER_LEN + self.data.len()
    }
}

/// What the start of a buffer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// A whole frame, of [`Frame::wire_len`] bytes.
    Frame(Frame<'a>),
    /// The start of a frame that lacks `missing` more bytes.
    Partial { missing: usize },
    /// Not a frame: empty, or an RTSP message.
    NotFrame,
}

/// Reads the frame that `buf` starts with, if it starts with one.
pub fn parse(buf: &[u8]) -> Parsed<'_> {
    match buf {
        [MAGIC, channel, hi, lo, rest @ ..] => {
            let len = usize::from(u16::from_be_bytes([*hi, *lo]));
            match rest.get(..len) {
                Some(data) => Parsed::Frame(Frame {
                    channel: *channel,
                    data,
                }),
                None => Parsed::Partial {
                    missing: len - rest.len(),
                },
            }
        }
        [MAGIC, ..] => Parsed::Partial {
            missing: HEADER_LEN - buf.len(),
        },
        _ => Parsed::NotFrame,
    }
}

/// Data too long for one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0} bytes do not fit in one interleaved frame (at most 65535)")]
pub struct TooLong(pub usize);

/// The 4-byte header of a frame of `len` bytes on `channel`.
#[inline]
pub fn header(channel: u8, len: usize) -> Result<[u8; HEADER_LEN], TooLong> {
    let len16 = u16::try_from(len).map_err(|_| TooLong(len))?;
    let [hi, lo] = len16.to_be_bytes();
    Ok([MAGIC, channel, hi, lo])
}

/// Appends one frame on `channel` whose data is `parts` in order (an RTP
/// header and the payload's pieces, say). Nothing is appended when the parts
/// are too long for a frame.
#[inline]
pub fn emit(out: &mut Vec<u8>, channel: u8, parts: &[&[u8]]) -> Result<(), TooLong> {
    let len = parts.iter().map(|p| p.len()).sum();
    out.extend_from_slice(&header(channel, len)?);
    out.reserve(len);
    for p in parts {
        out.extend_from_slice(p);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emit_then_parse() {
        let mut out = b"before".to_vec();
        emit(&mut out, 3, &[b"ab", b"", b"cde"]).unwrap();
        assert_eq!(&out[6..], b"$\x03\x00\x05abcde");
        assert_eq!(
            parse(&out[6..]),
            Parsed::Frame(Frame {
                channel: 3,
                data: b"abcde"
            })
        );
        emit(&mut out, 0, &[]).unwrap();
        assert_eq!(&out[15..], b"$\x00\x00\x00");
        let Parsed::Frame(f) = parse(&out[15..]) else { panic!() };
        assert_eq!((f.data, f.wire_len()), (&[][..], 4));
    }

    #[test]
    fn partial_frames_say_what_they_lack() {
        let frame = [b'$', 1, 0, 3, 7, 8, 9];
        assert_eq!(parse(&frame[..1]), Parsed::Partial { missing: 3 });
        assert_eq!(parse(&frame[..3]), Parsed::Partial { missing: 1 });
        assert_eq!(parse(&frame[..4]), Parsed::Partial { missing: 3 });
        assert_eq!(parse(&frame[..6]), Parsed::Partial { missing: 1 });
        assert!(matches!(parse(&frame), Parsed::Frame(Frame { channel: 1, .. })));
        // Bytes past the frame are the next message's.
        let mut more = frame.to_vec();
        more.extend_from_slice(b"RTSP/1.0 200 OK\r\n");
        assert!(matches!(parse(&more), Parsed::Frame(f) if f.data == [7, 8, 9]));
        assert_eq!(parse(b""), Parsed::NotFrame);
        assert_eq!(parse(b"OPTIONS * RTSP/1.0"), Parsed::NotFrame);
    }

    #[test]
    fn the_length_field_bounds_a_frame() {
        let big = vec![0u8; MAX_DATA_LEN];
        let mut out = Vec::new();
        emit(&mut out, 9, &[&big]).unwrap();
        assert_eq!(&out[..4], &[b'$', 9, 0xff, 0xff]);
        assert!(matches!(parse(&out), Parsed::Frame(f) if f.data.len() == MAX_DATA_LEN));
        let mut out = Vec::new();
        assert_eq!(emit(&mut out, 9, &[&big, b"x"]), Err(TooLong(MAX_DATA_LEN + 1)));
        assert!(out.is_empty(), "nothing of a frame that does not fit");
        assert_eq!(header(0, 1 << 20), Err(TooLong(1 << 20)));
    }
}
