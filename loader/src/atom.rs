//! The box walker for ISO BMFF and QuickTime atoms, over a byte slice.
//!
//! A box starts with a 32-bit size and a four-character type. Size 1 means a
//! 64-bit size follows the type; size 0 means the box runs to the end of its
//! parent (in practice, of the file). Every read is bounds-checked against the
//! parent, so a box can never claim bytes outside the one that holds it.

use crate::error::{Error, Result};
use crate::fourcc::FourCc;

/// One box: its type, where it starts, and how long its header and whole are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Atom {
    pub kind: FourCc,
    /// Absolute offset of the first byte of the box (its size field).
    pub offset: u64,
    pub header_len: u8,
    /// Size of the whole box, header included.
    pub size: u64,
}

impl Atom {
    /// Absolute offset of the first byte after the header.
    pub fn body_start(&self) -> u64 {
        self.offset + u64::from(self.header_len)
    }

    /// Absolute offset one past the last byte of the box.
    pub fn end(&self) -> u64 {
        self.offset + self.size
    }

    pub fn body_len(&self) -> u64 {
        self.size - u64::from(self.header_len)
    }
}

/// Iterates the boxes laid end to end in `data[start..end]`.
///
/// Yields `Err` once and then stops when a header is truncated or a size
/// overruns the parent.
pub struct Atoms<'a> {
    data: &'a [u8],
    pos: u64,
    end: u64,
    path: &'a str,
    failed: bool,
}

impl<'a> Atoms<'a> {
    /// The boxes between absolute offsets `start` and `end` of `data`; `path`
    /// names the parent in errors.
    pub fn new(data: &'a [u8], start: u64, end: u64, path: &'a str) -> Self {
        let end = end.min(data.len() as u64);
        Atoms {
            data,
            pos: start.min(end),
            end,
            path,
            failed: false,
        }
    }

    /// The children of `parent`.
    pub fn children(data: &'a [u8], parent: &Atom, path: &'a str) -> Self {
        Self::new(data, parent.body_start(), parent.end(), path)
    }

    fn fail(&mut self, what: String) -> Option<Result<Atom>> {
        self.failed = true;
        Some(Err(Error::malformed(self.path, self.pos, what)))
    }
}

impl Iterator for Atoms<'_> {
    type Item = Result<Atom>;

    fn next(&mut self) -> Option<Result<Atom>> {
        if self.failed || self.pos >= self.end {
            return None;
        }
        let left = self.end - self.pos;
        // QuickTime allows a 32-bit zero as a terminator at the end of a
        // container (some old `udta` atoms end this way): treat a trailing run
        // shorter than a header, or a zero word followed by nothing, as the end.
        if left < 8 {
            let rest = &self.data[self.pos as usize..self.end as usize];
            if rest.iter().all(|&b| b == 0) {
                self.pos = self.end;
                return None;
            }
            return self.fail(format!("{left} stray bytes where a box header should be"));
        }
        let at = self.pos as usize;
        let size32 = u32::from_be_bytes(self.data[at..at + 4].try_into().unwrap());
        let kind = FourCc(self.data[at + 4..at + 8].try_into().unwrap());
        let (size, header_len) = match size32 {
            0 => {
                if kind.0 == [0; 4] {
                    // A zero terminator word inside a container.
                    self.pos = self.end;
                    return None;
                }
                (left, 8)
            }
            1 => {
                if left < 16 {
                    return self.fail(format!("`{kind}` box with a 64-bit size is truncated"));
                }
                let size = u64::from_be_bytes(self.data[at + 8..at + 16].try_into().unwrap());
                (size, 16)
            }
            n => (u64::from(n), 8),
        };
        if size < u64::from(header_len) {
            return self.fail(format!("`{kind}` box claims size {size}, smaller than its header"));
        }
        if size > left {
            return self.fail(format!(
                "`{kind}` box claims {size} bytes but only {left} remain in its parent"
            ));
        }
        let atom = Atom {
            kind,
            offset: self.pos,
            header_len,
            size,
        };
        self.pos += size;
        Some(Ok(atom))
    }
}

/// A bounds-checked big-endian reader over one box's body.
///
/// Errors carry the box path and the absolute offset of the failed read.
pub struct Reader<'a, 'p> {
    data: &'a [u8],
    pos: usize,
    end: usize,
    path: &'p str,
}

impl<'a, 'p> Reader<'a, 'p> {
    /// A reader over the body of `atom`.
    pub fn body(data: &'a [u8], atom: &Atom, path: &'p str) -> Self {
        Reader {
            data,
            pos: atom.body_start() as usize,
            end: atom.end() as usize,
            path,
        }
    }

    pub fn offset(&self) -> u64 {
        self.pos as u64
    }

    pub fn remaining(&self) -> usize {
        self.end - self.pos
    }

    pub fn error(&self, what: impl Into<String>) -> Error {
        Error::malformed(self.path, self.pos as u64, what)
    }

    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(self.error(format!(
                "needs {n} more bytes but the box has {} left",
                self.remaining()
            )));
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub fn skip(&mut self, n: usize) -> Result<()> {
        self.bytes(n).map(drop)
    }

    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.bytes(1)?[0])
    }

    pub fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_be_bytes(self.bytes(2)?.try_into().unwrap()))
    }

    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.bytes(4)?.try_into().unwrap()))
    }

    pub fn i32(&mut self) -> Result<i32> {
        Ok(self.u32()? as i32)
    }

    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_be_bytes(self.bytes(8)?.try_into().unwrap()))
    }

    pub fn fourcc(&mut self) -> Result<FourCc> {
        Ok(FourCc(self.bytes(4)?.try_into().unwrap()))
    }

    /// Version and flags of a "full box".
    pub fn version_flags(&mut self) -> Result<(u8, u32)> {
        let v = self.u32()?;
        Ok(((v >> 24) as u8, v & 0x00ff_ffff))
    }

    /// Checks that a table of `count` entries of `entry_len` bytes fits in
    /// what is left of the box, before anything is allocated for it. This is
    /// what keeps a mangled count from asking for gigabytes.
    pub fn table(&mut self, count: u32, entry_len: usize) -> Result<&'a [u8]> {
        let need = (count as usize).checked_mul(entry_len);
        match need {
            Some(n) if n <= self.remaining() => self.bytes(n),
            _ => Err(self.error(format!(
                "table of {count} entries of {entry_len} bytes does not fit in the {} bytes left",
                self.remaining()
            ))),
        }
    }
}

/// Reads a big-endian `u32` at `at` in a slice already known to be long enough.
#[inline]
pub(crate) fn be_u32(s: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(s[at..at + 4].try_into().unwrap())
}

#[inline]
pub(crate) fn be_u64(s: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(s[at..at + 8].try_into().unwrap())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boxes(data: &[u8]) -> Vec<Result<Atom>> {
        Atoms::new(data, 0, data.len() as u64, "file").collect()
    }

    #[test]
    fn sizes_32_64_and_to_end() {
        let mut d = Vec::new();
        d.extend_from_slice(&[0, 0, 0, 8, b'f', b'r', b'e', b'e']);
        d.extend_from_slice(&[0, 0, 0, 1, b'm', b'd', b'a', b't', 0, 0, 0, 0, 0, 0, 0, 20]);
        d.extend_from_slice(&[1, 2, 3, 4]);
        d.extend_from_slice(&[0, 0, 0, 0, b's', b'k', b'i', b'p', 9, 9]);
        let got: Vec<_> = boxes(&d).into_iter().map(|a| a.unwrap()).collect();
        assert_eq!(got.len(), 3);
        assert_eq!((got[0].offset, got[0].size), (0, 8));
        assert_eq!((got[1].offset, got[1].size, got[1].header_len), (8, 20, 16));
        assert_eq!((got[2].offset, got[2].size), (28, 10));
        assert_eq!(got[2].body_len(), 2);
    }

    #[test]
    fn overrun_is_an_error_with_offset() {
        let d = [0, 0, 0, 8, b'f', b'r', b'e', b'e', 0, 0, 0, 99, b'm', b'o', b'o', b'v'];
        let got = boxes(&d);
        assert!(got[0].is_ok());
        let err = got[1].as_ref().unwrap_err().to_string();
        assert!(err.contains("offset 8"), "{err}");
        assert!(err.contains("moov"), "{err}");
        assert_eq!(got.len(), 2);
    }

    #[test]
    fn undersized_box_is_an_error() {
        let d = [0, 0, 0, 4, b'f', b'r', b'e', b'e'];
        assert!(boxes(&d)[0].is_err());
    }

    #[test]
    fn table_counts_are_checked_before_allocation() {
        let d = [0, 0, 0, 16, b's', b't', b's', b'z', 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0];
        let atom = boxes(&d)[0].as_ref().copied().unwrap();
        let mut r = Reader::body(&d, &atom, "stsz");
        let n = r.u32().unwrap();
        assert!(r.table(n, 4).is_err());
    }
}
