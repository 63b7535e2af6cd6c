//! Four-character codes, the names of boxes, handlers and codecs.

use std::fmt;

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FourCc(pub [u8; 4]);

impl FourCc {
    pub const fn new(code: &[u8; 4]) -> Self {
        FourCc(*code)
    }
}

impl fmt::Display for FourCc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Print printable ASCII as is and anything else escaped, so hostile
        // files cannot put control characters on a terminal.
        for &b in &self.0 {
            if b.is_ascii_graphic() || b == b' ' {
                write!(f, "{}", b as char)?;
            } else {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for FourCc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "'{self}'")
    }
}

pub mod kind {
    //! The box types the loader understands, named once.
    use super::FourCc;
    pub const MOOV: FourCc = FourCc::new(b"moov");
    pub const MVHD: FourCc = FourCc::new(b"mvhd");
    pub const TRAK: FourCc = FourCc::new(b"trak");
    pub const TKHD: FourCc = FourCc::new(b"tkhd");
    pub const EDTS: FourCc = FourCc::new(b"edts");
    pub const ELST: FourCc = FourCc::new(b"elst");
    pub const TREF: FourCc = FourCc::new(b"tref");
    pub const HINT: FourCc = FourCc::new(b"hint");
    pub const MDIA: FourCc = FourCc::new(b"mdia");
    pub const MDHD: FourCc = FourCc::new(b"mdhd");
    pub const HDLR: FourCc = FourCc::new(b"hdlr");
    pub const MINF: FourCc = FourCc::new(b"minf");
    pub const STBL: FourCc = FourCc::new(b"stbl");
    pub const STSD: FourCc = FourCc::new(b"stsd");
    pub const STTS: FourCc = FourCc::new(b"stts");
    pub const CTTS: FourCc = FourCc::new(b"ctts");
    pub const STSS: FourCc = FourCc::new(b"stss");
    pub const STSC: FourCc = FourCc::new(b"stsc");
    pub const STSZ: FourCc = FourCc::new(b"stsz");
    pub const STCO: FourCc = FourCc::new(b"stco");
    pub const CO64: FourCc = FourCc::new(b"co64");
    pub const UDTA: FourCc = FourCc::new(b"udta");
    pub const HNTI: FourCc = FourCc::new(b"hnti");
    pub const HINF: FourCc = FourCc::new(b"hinf");
    pub const SDP: FourCc = FourCc::new(b"sdp ");
    pub const RTP: FourCc = FourCc::new(b"rtp ");
    pub const TIMS: FourCc = FourCc::new(b"tims");
    pub const TSRO: FourCc = FourCc::new(b"tsro");
    pub const SNRO: FourCc = FourCc::new(b"snro");
    pub const RTPO: FourCc = FourCc::new(b"rtpo");
    pub const NAME: FourCc = FourCc::new(b"name");

    // Handlers.
    pub const VIDE: FourCc = FourCc::new(b"vide");
    pub const SOUN: FourCc = FourCc::new(b"soun");
}
