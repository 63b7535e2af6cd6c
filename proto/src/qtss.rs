//! The RTCP APP packets of QuickTime's streaming: Darwin Streaming
//! Server's reliable UDP and client reports, without IO.
//!
//! Three APP packets (RTCP PT 204, see [`rtcp::App`]) carry them, byte for
//! byte as DSS reads and writes them (`RTCPAckPacket`, `RTCPAckPacketFmt`,
//! `RTCPAPPQTSSPacket` and `RTCPSRPacket` in its RTCPUtilitiesLib):
//!
//! - [`Ack`], named `qtak` (or `ack `, which QuickTime 5 and earlier sent),
//!   from client to server: the packets of one stream that arrived, as a
//!   first sequence number and a bit mask of the numbers after it. A
//!   server on reliable UDP (`x-Retransmit: our-retransmit` in SETUP)
//!   resends what stays unacknowledged past its timeout.
//! - [`Report`], named `QTSS`, from client to server: loss, lateness,
//!   buffer delay, "getting better/worse" and, for Instant-On, the size of
//!   the client's overbuffer window (`ob`), as typed items.
//! - [`ServerInfo`], named `qtsi`, from server to client with each sender
//!   report: the acknowledgement timeout (`at`) the server asks for.
//!
//! ```text
//! qtak:  V=2 P subtype=0  PT=204  length      QTSS:  ... PT=204 length
//!        SSRC of the client                          SSRC of the client
//!        'q' 't' 'a' 'k'                             'Q' 'T' 'S' 'S'
//!        SSRC of the stream acknowledged             SSRC of the stream reported on
//!        reserved (16)     | first seq (16)          version=0 (16) | length in words (16)
//!        mask: bit i (MSB first) = seq+1+i           items: type (16) version (8) length (8) data...
//! ```

use std::fmt;

use crate::rtcp::{self, App};

/// `qtak`: the reliable-UDP acknowledgement.
pub const ACK: [u8; 4] = *b"qtak";
/// `ack `: the same acknowledgement under the name QuickTime 5 and
/// earlier used; DSS accepts both.
pub const ACK_LEGACY: [u8; 4] = *b"ack ";
/// `QTSS`: the client's report.
pub const REPORT: [u8; 4] = *b"QTSS";
/// `qtsi`: the server's information for the client.
pub const SERVER_INFO: [u8; 4] = *b"qtsi";

/// The most mask bits a reader looks at. Past 32767 a bit would name a
/// number that RFC 1982 arithmetic puts before the first one, so nothing
/// a sender has in flight. DSS counted mask bits in a 16-bit loop variable
/// against a 32-bit total, so a mask of 8 KiB or more made it loop
/// forever; here such bits are ignored.
pub const MAX_MASK_BITS: usize = 1 << 15;

/// Why an APP packet is not the QuickTime packet its name says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QtssError {
    #[error("APP packet {0} is not a {1}")]
    Name(Name, &'static str),
    #[error("{what} of {have} bytes is too short ({need} needed)")]
    Short {
        what: &'static str,
        need: usize,
        have: usize,
    },
    #[error("QTSS report version {0}, not 0")]
    Version(u16),
    #[error("QTSS report subtype {0}, not 0")]
    Subtype(u8),
    #[error("QTSS report claims {claimed} bytes of items, {have} follow")]
    Length { claimed: usize, have: usize },
}

/// A four-character APP name, shown as text where it is printable.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Name(pub [u8; 4]);

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
            write!(f, "'{}'", String::from_utf8_lossy(&self.0))
        } else {
            write!(f, "{:02x?}", self.0)
        }
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

fn short(what: &'static str, need: usize, have: usize) -> QtssError {
    QtssError::Short { what, need, have }
}

// ---------------------------------------------------------------------------
// qtak

/// A reliable-UDP acknowledgement (`qtak` or `ack `).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack<'a> {
    /// The client's SSRC (the APP packet's own).
    pub receiver_ssrc: u32,
    /// The stream whose packets are acknowledged. DSS itself never checked
    /// it (it took the stream from the RTCP port the packet came in on); a
    /// server that demultiplexes by SSRC must, and drops acks naming a
    /// stream it does not send.
    pub media_ssrc: u32,
    /// Acknowledged, and the base of the mask.
    pub seq: u16,
    /// Bit `i`, most significant first in each byte, acknowledges
    /// `seq + 1 + i`. DSS reads every byte after the first sequence number
    /// as mask, whatever its length.
    pub mask: &'a [u8],
}

impl<'a> Ack<'a> {
    /// Reads an APP packet named `qtak` or `ack `. The 16 bits before the
    /// sequence number are reserved and ignored, as DSS ignores them.
    pub fn parse(app: &App<'a>) -> Result<Ack<'a>, QtssError> {
        if app.name != ACK && app.name != ACK_LEGACY {
            return Err(QtssError::Name(Name(app.name), "qtak acknowledgement"));
        }
        let d = app.data;
        if d.len() < 8 {
            return Err(short("qtak acknowledgement", 8, d.len()));
        }
        Ok(Ack {
            receiver_ssrc: app.ssrc,
            media_ssrc: be32(&d[0..4]),
            seq: be16(&d[6..8]),
            mask: &d[8..],
        })
    }

    /// Every acknowledged sequence number: `seq`, then those the mask bits
    /// name, in order, wrapping past 65535. At most [`MAX_MASK_BITS`] bits
    /// are read, and bytes of zeros are skipped whole.
    pub fn acked(&self) -> AckedSeqs<'a> {
        let bytes = self.mask.len().min(MAX_MASK_BITS / 8);
        AckedSeqs {
            seq: self.seq,
            mask: &self.mask[..bytes],
            bit: None,
        }
    }
}

/// The sequence numbers an [`Ack`] acknowledges.
#[derive(Debug, Clone)]
pub struct AckedSeqs<'a> {
    seq: u16,
    mask: &'a [u8],
    /// `None` before the base has been yielded; then the next bit to look at.
    bit: Option<usize>,
}

impl Iterator for AckedSeqs<'_> {
    type Item = u16;

    fn next(&mut self) -> Option<u16> {
        let Some(mut bit) = self.bit else {
            self.bit = Some(0);
            return Some(self.seq);
        };
        while bit < self.mask.len() * 8 {
            let byte = self.mask[bit / 8];
            if byte == 0 {
                bit = (bit / 8 + 1) * 8;
                continue;
            }
            let here = bit;
            bit += 1;
            if byte & (0x80 >> (here % 8)) != 0 {
                self.bit = Some(bit);
                return Some(self.seq.wrapping_add(1).wrapping_add(here as u16));
            }
        }
        self.bit = Some(bit);
        None
    }
}

/// Appends a reliable-UDP acknowledgement named `name` ([`ACK`], or
/// [`ACK_LEGACY`] for a server that wants the old name), as DSS's
/// `RTCPAckPacketFmt` writes it: subtype 0, reserved 0, the mask as given
/// (padded with zeros to a word).
pub fn ack(out: &mut Vec<u8>, name: [u8; 4], receiver_ssrc: u32, media_ssrc: u32, seq: u16, mask: &[u8]) {
    let mut data = [0u8; 8];
    data[0..4].copy_from_slice(&media_ssrc.to_be_bytes());
    data[6..8].copy_from_slice(&seq.to_be_bytes());
    // One APP packet with the mask behind the fixed part.
    let start = out.len();
    rtcp::app(out, 0, receiver_ssrc, name, &data);
    let mask = &mask[..mask.len().min(MAX_MASK_BITS / 8)];
    out.extend_from_slice(mask);
    out.resize(start + (out.len() - start).next_multiple_of(4), 0);
    let words = ((out.len() - start) / 4 - 1) as u16;
    out[start + 2..start + 4].copy_from_slice(&words.to_be_bytes());
}

/// A receiver's acknowledgement in the making: the first sequence number
/// of a batch and a mask for the numbers after it, filled as packets
/// arrive and written with [`AckMask::emit`]. Fixed size: nothing is
/// allocated per packet.
#[derive(Debug, Clone)]
pub struct AckMask {
    base: u16,
    /// Highest bit set plus one.
    used: usize,
    mask: [u8; AckMask::BYTES],
}

impl AckMask {
    /// Mask bytes one acknowledgement can carry here: 256 numbers after the
    /// first, more than a client receives between two of its acks.
    pub const BYTES: usize = 32;

    pub fn new(first: u16) -> AckMask {
        AckMask {
            base: first,
            used: 0,
            mask: [0; AckMask::BYTES],
        }
    }

    pub fn first(&self) -> u16 {
        self.base
    }

    /// Records `seq` as received. False when it does not fit: before the
    /// first number or more than `8 * BYTES` after it; the caller sends
    /// this one and starts another.
    pub fn insert(&mut self, seq: u16) -> bool {
        let d = usize::from(seq.wrapping_sub(self.base));
        if d == 0 {
            return true;
        }
        let bit = d - 1;
        if bit >= AckMask::BYTES * 8 {
            return false;
        }
        self.mask[bit / 8] |= 0x80 >> (bit % 8);
        self.used = self.used.max(bit + 1);
        true
    }

    /// Appends the acknowledgement, with the mask cut to the words it uses
    /// (none when only the first number is acknowledged), as DSS's writer
    /// sizes it.
    pub fn emit(&self, out: &mut Vec<u8>, receiver_ssrc: u32, media_ssrc: u32) {
        let bytes = self.used.div_ceil(32) * 4;
        ack(out, ACK, receiver_ssrc, media_ssrc, self.base, &self.mask[..bytes]);
    }
}

// ---------------------------------------------------------------------------
// Items of QTSS and qtsi

/// One item of a `QTSS` report or a `qtsi` packet: a two-character type, a
/// version and up to 255 bytes of data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Item<'a> {
    pub kind: [u8; 2],
    pub version: u8,
    pub data: &'a [u8],
}

/// The items of an item list, in order. An item whose length runs past the
/// list ends it, as in DSS; unlike DSS (which stepped over each known item
/// by the size it expected rather than the length the item gave), the
/// length the item gives is what is skipped.
#[derive(Debug, Clone)]
pub struct Items<'a>(&'a [u8]);

impl<'a> Iterator for Items<'a> {
    type Item = Item<'a>;

    fn next(&mut self) -> Option<Item<'a>> {
        let (head, rest) = self.0.split_first_chunk::<4>()?;
        let len = usize::from(head[3]);
        let Some((data, rest)) = rest.split_at_checked(len) else {
            self.0 = &[];
            return None;
        };
        self.0 = rest;
        Some(Item {
            kind: [head[0], head[1]],
            version: head[2],
            data,
        })
    }
}

fn put_item(out: &mut Vec<u8>, kind: [u8; 2], data: &[u8]) {
    out.extend_from_slice(&kind);
    out.push(0);
    out.push(data.len() as u8);
    out.extend_from_slice(data);
}

// ---------------------------------------------------------------------------
// QTSS

/// A QuickTime client report (`QTSS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report<'a> {
    pub receiver_ssrc: u32,
    /// The stream reported on.
    pub source_ssrc: u32,
    items: &'a [u8],
}

/// What a client says of its reception since its last report (`:)`, `:|`,
/// `:(`). DSS's flow control counted `:|` as getting worse, like `:(`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trend {
    Better,
    Same,
    Worse,
}

/// The values of a report that a server acts on.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ReportValues {
    /// `rr`: bits per second received.
    pub receiver_bit_rate: Option<u32>,
    /// `lt`: average lateness, milliseconds.
    pub late_ms: Option<u16>,
    /// `ls`: packets lost, in percent. QuickTime sends it in 1/256 of a
    /// percent (DSS divides by 256).
    pub percent_lost: Option<f32>,
    /// `dl`: average buffer delay, milliseconds.
    pub buffer_delay_ms: Option<u16>,
    pub trend: Option<Trend>,
    /// `ob`: bytes the client can hold ahead of play: the bound on
    /// overbuffering.
    pub overbuffer_window: Option<u32>,
}

impl<'a> Report<'a> {
    /// Reads an APP packet named `QTSS`, with DSS's checks: subtype 0,
    /// version 0, and an item length that fits the packet.
    pub fn parse(app: &App<'a>) -> Result<Report<'a>, QtssError> {
        if app.name != REPORT {
            return Err(QtssError::Name(Name(app.name), "QTSS report"));
        }
        if app.subtype != 0 {
            return Err(QtssError::Subtype(app.subtype));
        }
        let d = app.data;
        if d.len() < 8 {
            return Err(short("QTSS report", 8, d.len()));
        }
        let version = be16(&d[4..6]);
        if version != 0 {
            return Err(QtssError::Version(version));
        }
        let claimed = usize::from(be16(&d[6..8])) * 4;
        let have = d.len() - 8;
        if claimed > have {
            return Err(QtssError::Length { claimed, have });
        }
        Ok(Report {
            receiver_ssrc: app.ssrc,
            source_ssrc: be32(&d[0..4]),
            items: &d[8..8 + claimed],
        })
    }

    pub fn items(&self) -> Items<'a> {
        Items(self.items)
    }

    /// The items a server acts on, each taken only when its length is the
    /// one DSS expects; the last of a kind wins.
    pub fn values(&self) -> ReportValues {
        let mut v = ReportValues::default();
        for it in self.items() {
            let d = it.data;
            match (&it.kind, d.len()) {
                (b"rr", 4) => v.receiver_bit_rate = Some(be32(d)),
                (b"lt", 2) => v.late_ms = Some(be16(d)),
                (b"ls", 2) => v.percent_lost = Some(f32::from(be16(d)) / 256.0),
                (b"dl", 2) => v.buffer_delay_ms = Some(be16(d)),
                (b":)", _) => v.trend = Some(Trend::Better),
                (b":|", _) => v.trend = Some(Trend::Same),
                (b":(", _) => v.trend = Some(Trend::Worse),
                (b"ob", 4) => v.overbuffer_window = Some(be32(d)),
                _ => {}
            }
        }
        v
    }
}

/// Appends a `QTSS` report with the values given (for a load client, and
/// for tests): the items in DSS's order, padded to a word.
pub fn report(out: &mut Vec<u8>, receiver_ssrc: u32, source_ssrc: u32, values: &ReportValues) {
    let mut items = Vec::with_capacity(48);
    if let Some(r) = values.receiver_bit_rate {
        put_item(&mut items, *b"rr", &r.to_be_bytes());
    }
    if let Some(l) = values.late_ms {
        put_item(&mut items, *b"lt", &l.to_be_bytes());
    }
    if let Some(p) = values.percent_lost {
        let fixed = (p.clamp(0.0, 255.0) * 256.0).round() as u16;
        put_item(&mut items, *b"ls", &fixed.to_be_bytes());
    }
    if let Some(d) = values.buffer_delay_ms {
        put_item(&mut items, *b"dl", &d.to_be_bytes());
    }
    match values.trend {
        Some(Trend::Better) => put_item(&mut items, *b":)", &[]),
        Some(Trend::Same) => put_item(&mut items, *b":|", &[]),
        Some(Trend::Worse) => put_item(&mut items, *b":(", &[]),
        None => {}
    }
    if let Some(w) = values.overbuffer_window {
        put_item(&mut items, *b"ob", &w.to_be_bytes());
    }
    items.resize(items.len().next_multiple_of(4), 0);
    let mut data = Vec::with_capacity(8 + items.len());
    data.extend_from_slice(&source_ssrc.to_be_bytes());
    data.extend_from_slice(&0u16.to_be_bytes());
    data.extend_from_slice(&((items.len() / 4) as u16).to_be_bytes());
    data.extend_from_slice(&items);
    rtcp::app(out, 0, receiver_ssrc, REPORT, &data);
}

// ---------------------------------------------------------------------------
// qtsi

/// The server information DSS appends to every sender report (`qtsi`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerInfo {
    /// The stream's SSRC.
    pub ssrc: u32,
    /// The client's SSRC, as last seen in its reports (0 before any).
    pub client_ssrc: u32,
    /// `at`: how often, in milliseconds, the client should send its acks.
    pub ack_timeout_ms: Option<u32>,
}

impl ServerInfo {
    pub fn parse(app: &App<'_>) -> Result<ServerInfo, QtssError> {
        if app.name != SERVER_INFO {
            return Err(QtssError::Name(Name(app.name), "qtsi server info"));
        }
        let d = app.data;
        if d.len() < 8 {
            return Err(short("qtsi server info", 8, d.len()));
        }
        let words = usize::from(be16(&d[6..8]));
        let items = &d[8..(8 + words * 4).min(d.len())];
        let ack_timeout_ms = Items(items)
            .filter(|it| &it.kind == b"at" && it.data.len() == 4)
            .map(|it| be32(it.data))
            .last();
        Ok(ServerInfo {
            ssrc: app.ssrc,
            client_ssrc: be32(&d[0..4]),
            ack_timeout_ms,
        })
    }
}

/// Appends DSS's 28-byte server information packet: subtype 1, the
/// stream's and the client's SSRCs, and the `at` item with the
/// acknowledgement timeout.
pub fn server_info(out: &mut Vec<u8>, ssrc: u32, client_ssrc: u32, ack_timeout_ms: u32) {
    let mut data = [0u8; 16];
    data[0..4].copy_from_slice(&client_ssrc.to_be_bytes());
    data[4..8].copy_from_slice(&2u32.to_be_bytes());
    data[8..12].copy_from_slice(&[b'a', b't', 0, 4]);
    data[12..16].copy_from_slice(&ack_timeout_ms.to_be_bytes());
    rtcp::app(out, 1, ssrc, SERVER_INFO, &data);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtcp::{parse_compound, RtcpPacket};
    use crate::test_rng::Rng;

    /// The first packet of `buf` as an APP packet.
    fn app_of(buf: &[u8]) -> App<'_> {
        let p = parse_compound(buf).unwrap().next().unwrap();
        match p {
            RtcpPacket::Other { .. } => p.app().unwrap().unwrap(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ack_as_dss_writes_it() {
        // DSS's RTCPAckPacketFmt for acks {1000, 1002, 1033}: seq 1000,
        // offsets 2 and 33 from seq+1 are bits 1 and 32: a 2-word mask.
        let mut m = AckMask::new(1000);
        for s in [1002, 1033, 1000] {
            assert!(m.insert(s));
        }
        let mut out = Vec::new();
        m.emit(&mut out, 0x1111_1111, 0x2222_2222);
        #[rustfmt::skip]
        let want = [
            0x80, 0xcc, 0x00, 0x06,
            0x11, 0x11, 0x11, 0x11,
            b'q', b't', b'a', b'k',
            0x22, 0x22, 0x22, 0x22,
            0x00, 0x00, 0x03, 0xe8,
            0x40, 0x00, 0x00, 0x00,
            0x80, 0x00, 0x00, 0x00,
        ];
        assert_eq!(out, want);
        let a = Ack::parse(&app_of(&out)).unwrap();
        assert_eq!((a.receiver_ssrc, a.media_ssrc, a.seq), (0x1111_1111, 0x2222_2222, 1000));
        assert_eq!(a.acked().collect::<Vec<_>>(), [1000, 1002, 1033]);
    }

    #[test]
    fn a_lone_ack_has_no_mask_and_the_old_name_is_read_too() {
        let mut out = Vec::new();
        AckMask::new(7).emit(&mut out, 1, 2);
        assert_eq!(out.len(), 20);
        assert_eq!(Ack::parse(&app_of(&out)).unwrap().acked().collect::<Vec<_>>(), [7]);
        let mut out = Vec::new();
        ack(&mut out, ACK_LEGACY, 1, 2, 65_535, &[0xff]);
        let a = Ack::parse(&app_of(&out)).unwrap();
        assert_eq!(a.acked().collect::<Vec<_>>(), [65_535, 0, 1, 2, 3, 4, 5, 6, 7]);
        // The padding the writer added reads as zero bits.
        assert_eq!(a.mask, &[0xff, 0, 0, 0]);
    }

    #[test]
    fn ack_mask_window() {
        let mut m = AckMask::new(65_530);
        assert!(m.insert(65_535));
        assert!(m.insert(10));
        assert!(m.insert(65_530u16.wrapping_add(256)));
        assert!(!m.insert(65_530u16.wrapping_add(257)), "past the mask");
        assert!(!m.insert(65_529), "before the first");
        let mut out = Vec::new();
        m.emit(&mut out, 1, 2);
        let got: Vec<u16> = Ack::parse(&app_of(&out)).unwrap().acked().collect();
        assert_eq!(got, [65_530, 65_535, 10, 65_530u16.wrapping_add(256)]);
        assert_eq!(out.len(), 20 + AckMask::BYTES);
    }

    #[test]
    fn huge_masks_are_read_only_so_far() {
        // 64 KiB of ones, written raw: DSS would loop forever. Only
        // MAX_MASK_BITS count, and the writer never writes more.
        let mut data = vec![0u8; 8];
        data.extend(vec![0xff; 1 << 16]);
        let mut out = Vec::new();
        rtcp::app(&mut out, 0, 1, ACK, &data);
        let a = Ack::parse(&app_of(&out)).unwrap();
        assert_eq!(a.mask.len(), 1 << 16);
        assert_eq!(a.acked().count(), 1 + MAX_MASK_BITS);
        let mut written = Vec::new();
        ack(&mut written, ACK, 1, 2, 0, &data[8..]);
        assert_eq!(written.len(), 20 + MAX_MASK_BITS / 8);
        // Zeros are skipped a byte at a time, and a lone bit at the end is found.
        let mut mask = vec![0u8; MAX_MASK_BITS / 8];
        *mask.last_mut().unwrap() = 1;
        let mut out = Vec::new();
        ack(&mut out, ACK, 1, 2, 100, &mask);
        let a = Ack::parse(&app_of(&out)).unwrap();
        assert_eq!(
            a.acked().collect::<Vec<_>>(),
            [100, 100u16.wrapping_add(MAX_MASK_BITS as u16)]
        );
    }

    #[test]
    fn ack_errors() {
        let not = App {
            subtype: 0,
            ssrc: 1,
            name: *b"nope",
            data: &[0; 8],
        };
        assert!(matches!(Ack::parse(&not), Err(QtssError::Name(..))));
        let short_ack = App {
            name: ACK,
            data: &[0; 7],
            ..not
        };
        assert_eq!(
            Ack::parse(&short_ack),
            Err(QtssError::Short {
                what: "qtak acknowledgement",
                need: 8,
                have: 7
            })
        );
        assert_eq!(
            QtssError::Name(Name(*b"x\0yz"), "QTSS report").to_string(),
            "APP packet [78, 00, 79, 7a] is not a QTSS report"
        );
    }

    #[test]
    fn report_round_trip() {
        let values = ReportValues {
            receiver_bit_rate: Some(300_000),
            late_ms: Some(12),
            percent_lost: Some(31.5),
            buffer_delay_ms: Some(2500),
            trend: Some(Trend::Worse),
            overbuffer_window: Some(512 * 1024),
        };
        let mut out = Vec::new();
        report(&mut out, 0xaa, 0xbb, &values);
        assert_eq!(out.len() % 4, 0);
        let r = Report::parse(&app_of(&out)).unwrap();
        assert_eq!((r.receiver_ssrc, r.source_ssrc), (0xaa, 0xbb));
        assert_eq!(r.values(), values);
        let kinds: Vec<[u8; 2]> = r.items().map(|i| i.kind).collect();
        assert_eq!(kinds, [*b"rr", *b"lt", *b"ls", *b"dl", *b":(", *b"ob"]);
    }

    #[test]
    fn report_items_as_a_client_lays_them_out() {
        // An 'ob' item as RTCPAPPQTSSPacket.h draws it, then an unknown item
        // and an 'ls' with the wrong length, which are skipped.
        #[rustfmt::skip]
        let data = [
            0, 0, 0, 9,          // source SSRC
            0, 0, 0, 5,          // version 0, 5 words of items
            b'o', b'b', 0, 4, 0, 1, 0, 0,
            b'z', b'z', 0, 1, 7,
            b'l', b's', 0, 1, 9,
            0, 0,
        ];
        let app = App {
            subtype: 0,
            ssrc: 5,
            name: REPORT,
            data: &data,
        };
        let r = Report::parse(&app).unwrap();
        let v = r.values();
        assert_eq!(v.overbuffer_window, Some(65_536));
        assert_eq!(v.percent_lost, None);
        assert_eq!(r.items().count(), 3, "the padding is too short to be an item");
        // DSS's checks.
        let mut d = data;
        d[5] = 1;
        assert_eq!(Report::parse(&App { data: &d, ..app }), Err(QtssError::Version(1)));
        let mut d = data;
        d[7] = 6;
        assert_eq!(
            Report::parse(&App { data: &d, ..app }),
            Err(QtssError::Length { claimed: 24, have: 20 })
        );
        assert_eq!(Report::parse(&App { subtype: 2, ..app }), Err(QtssError::Subtype(2)));
        // An item running past the list ends it.
        let mut d = data;
        d[11] = 200;
        assert_eq!(Report::parse(&App { data: &d, ..app }).unwrap().items().count(), 0);
    }

    #[test]
    fn server_info_as_dss_writes_it() {
        let mut out = Vec::new();
        server_info(&mut out, 0x0102_0304, 0x0a0b_0c0d, 100);
        #[rustfmt::skip]
        let want = [
            0x81, 0xcc, 0x00, 0x06,
            0x01, 0x02, 0x03, 0x04,
            b'q', b't', b's', b'i',
            0x0a, 0x0b, 0x0c, 0x0d,
            0x00, 0x00, 0x00, 0x02,
            b'a', b't', 0x00, 0x04,
            0x00, 0x00, 0x00, 0x64,
        ];
        assert_eq!(out, want);
        assert_eq!(
            ServerInfo::parse(&app_of(&out)),
            Ok(ServerInfo {
                ssrc: 0x0102_0304,
                client_ssrc: 0x0a0b_0c0d,
                ack_timeout_ms: Some(100)
            })
        );
    }

    #[test]
    fn random_app_bodies_never_panic() {
        let mut rng = Rng(0x7174_616b);
        for _ in 0..30_000 {
            let n = rng.below(64);
            let mut data = rng.bytes(n);
            // Make small item lengths and version 0 likely.
            for b in data.iter_mut() {
                if rng.below(3) == 0 {
                    *b &= 0x07;
                }
            }
            for name in [ACK, ACK_LEGACY, REPORT, SERVER_INFO] {
                let app = App {
                    subtype: rng.below(2) as u8,
                    ssrc: 1,
                    name,
                    data: &data,
                };
                if let Ok(a) = Ack::parse(&app) {
                    assert!(a.acked().count() <= 1 + a.mask.len() * 8);
                }
                if let Ok(r) = Report::parse(&app) {
                    let _ = (r.values(), r.items().count());
                }
                let _ = ServerInfo::parse(&app);
            }
        }
    }
}
