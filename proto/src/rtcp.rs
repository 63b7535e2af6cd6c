//! RTCP without IO (RFC 3550 section 6, RFC 3551, RFC 4585 section 6):
//! builders for the packets a compound datagram is made of, and a parser for
//! what the other side sends.
//!
//! Builders append one packet each to a caller-owned `Vec<u8>`, so one buffer
//! serves every report of a round: [`sender_report`] and
//! [`receiver_report`] (with their [`ReportBlock`]s), [`sdes_cname`] and
//! [`bye`]. A caller makes a compound packet by appending them in order: an
//! SR or RR first and the CNAME in every one (RFC 3550 section 6.1). The
//! server sends SR + CNAME on its reporting interval and SR + CNAME + BYE
//! when a stream ends; a receiver (rtpload) sends RR + CNAME, and BYE when
//! it leaves.
//!
//! What comes back from a client is receiver reports (loss, jitter,
//! round-trip data), its own CNAME, BYE when it leaves, and under AVPF
//! generic NACKs and picture loss indications; from a server, sender reports
//! as well. [`parse_compound`] checks a whole datagram once, then hands out
//! zero-copy views of its packets ([`RtcpPacket`]): nothing is allocated, and
//! a length field can never make it read or reserve more than the datagram.
//! [`ntp_from_unix`] and [`ntp_middle32`] do the NTP time arithmetic reports
//! need.
//!
//! A datagram is accepted or rejected as a whole, as the validity checks of
//! RFC 3550 appendix A.2 do: an error anywhere means none of it is used,
//! since a packet that lies about one length says little that can be trusted
//! about the rest. Within that, the parser is lenient where real clients are
//! sloppy; each case is noted where it is handled.

use std::fmt;
use std::time::Duration;

/// Sender report.
pub const PT_SR: u8 = 200;
/// Receiver report.
pub const PT_RR: u8 = 201;
/// Source description.
pub const PT_SDES: u8 = 202;
/// Goodbye.
pub const PT_BYE: u8 = 203;
/// Application-defined.
pub const PT_APP: u8 = 204;
/// Transport-layer feedback (RFC 4585).
pub const PT_RTPFB: u8 = 205;
/// Payload-specific feedback (RFC 4585).
pub const PT_PSFB: u8 = 206;

/// SDES item type of the canonical name.
pub const SDES_CNAME: u8 = 1;
/// RTPFB feedback message type of the generic NACK (RFC 4585 section 6.2.1).
pub const FMT_GENERIC_NACK: u8 = 1;
/// PSFB feedback message type of the picture loss indication (RFC 4585 section 6.3.1).
pub const FMT_PLI: u8 = 1;

/// The most report blocks, SDES chunks or BYE sources one packet can count:
/// the count field has five bits.
pub const MAX_COUNT: usize = 31;

/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
pub const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// Field offsets, each named once. Offsets are from the start of a packet
/// (its 4-byte common header included) unless a comment says otherwise.
mod field {
    use std::ops::Range;

    /// V (2 bits), P (1 bit), and a 5-bit count whose meaning depends on the
    /// packet type (RC, SC or FMT).
    pub const FLAGS: usize = 0;
    pub const PT: usize = 1;
    /// In 32-bit words, minus one, padding included.
    pub const LENGTH: Range<usize> = 2..4;
    pub const HEADER_LEN: usize = 4;

    /// The sender's SSRC in SR, RR, APP and feedback packets.
    pub const SSRC: Range<usize> = 4..8;

    pub const SR_NTP: Range<usize> = 8..16;
    pub const SR_RTP_TS: Range<usize> = 16..20;
    pub const SR_PACKETS: Range<usize> = 20..24;
    pub const SR_OCTETS: Range<usize> = 24..28;
    pub const SR_BLOCKS: usize = 28;
    pub const RR_BLOCKS: usize = 8;

    /// Within a report block.
    pub mod block {
        use std::ops::Range;
        pub const SSRC: Range<usize> = 0..4;
        pub const FRACTION_LOST: usize = 4;
        /// 24-bit two's complement.
        pub const CUMULATIVE_LOST: Range<usize> = 5..8;
        pub const HIGHEST_SEQ: Range<usize> = 8..12;
        pub const JITTER: Range<usize> = 12..16;
        pub const LSR: Range<usize> = 16..20;
        pub const DLSR: Range<usize> = 20..24;
        pub const LEN: usize = 24;
    }

    /// SDES chunks and BYE source lists start right after the header.
    pub const CHUNKS: usize = 4;

    pub const FB_MEDIA_SSRC: Range<usize> = 8..12;
    pub const FB_FCI: usize = 12;
    /// One generic NACK: PID (16 bits) and BLP (16 bits).
    pub const NACK_LEN: usize = 4;
}

fn be32(b: &[u8], at: std::ops::Range<usize>) -> u32 {
    let mut word = [0; 4];
    word.copy_from_slice(&b[at]);
    u32::from_be_bytes(word)
}

fn be64(b: &[u8], at: std::ops::Range<usize>) -> u64 {
    let mut word = [0; 8];
    word.copy_from_slice(&b[at]);
    u64::from_be_bytes(word)
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

// ---------------------------------------------------------------------------
// Time

/// The 64-bit NTP timestamp of a time given as the duration since the Unix
/// epoch: whole seconds since 1900 in the high 32 bits, the fraction of a
/// second in the low 32.
///
/// The seconds wrap in February 2036 (NTP era 1). That is what NTP itself
/// does (RFC 5905 section 6), and RTCP only ever compares nearby timestamps.
pub fn ntp_from_unix(unix: Duration) -> u64 {
    let secs = unix.as_secs().wrapping_add(NTP_UNIX_OFFSET) as u32;
    let frac = (u64::from(unix.subsec_nanos()) << 32) / 1_000_000_000;
    u64::from(secs) << 32 | frac
}

/// The middle 32 bits of an NTP timestamp: what a receiver echoes as LSR and
/// what round-trip arithmetic works in (units of 1/65536 s).
pub fn ntp_middle32(ntp: u64) -> u32 {
    (ntp >> 16) as u32
}

// ---------------------------------------------------------------------------
// Report blocks

/// One reception report (RFC 3550 section 6.4.1), as carried in SR and RR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReportBlock {
    /// The source this block reports on (for a client's RR: our stream).
    pub ssrc: u32,
    /// Fraction lost since the previous report, in 1/256.
    pub fraction_lost: u8,
    /// Packets lost since the beginning: expected minus received, which is
    /// negative when duplicates arrived. Carried in 24 bits, two's complement.
    ///
    /// libavformat computes the loss unsigned and clamps it to 0xFFFFFF, so
    /// an ffmpeg client that saw duplicates reports -1 here.
    pub cumulative_lost: i32,
    /// Extended highest sequence number received: cycles in the high 16 bits.
    pub highest_seq: u32,
    /// Interarrival jitter, in RTP timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the NTP time of the last SR received, 0 if none.
    pub lsr: u32,
    /// Delay since that SR was received, in 1/65536 s.
    pub dlsr: u32,
}

/// The range of a 24-bit two's complement number.
const LOST_MIN: i32 = -(1 << 23);
const LOST_MAX: i32 = (1 << 23) - 1;

impl ReportBlock {
    /// Decodes a block from exactly [`field::block::LEN`] bytes.
    fn parse(b: &[u8]) -> ReportBlock {
        use field::block as f;
        let lost = &b[f::CUMULATIVE_LOST];
        ReportBlock {
            ssrc: be32(b, f::SSRC),
            fraction_lost: b[f::FRACTION_LOST],
            // Shift the 24 bits to the top and back down to sign-extend.
            cumulative_lost: i32::from_be_bytes([lost[0], lost[1], lost[2], 0]) >> 8,
            highest_seq: be32(b, f::HIGHEST_SEQ),
            jitter: be32(b, f::JITTER),
            lsr: be32(b, f::LSR),
            dlsr: be32(b, f::DLSR),
        }
    }

    /// Appends the block. A loss outside 24 bits is clamped, as RFC 3550
    /// appendix A.3 asks, rather than wrapped into a wrong sign.
    pub fn emit(&self, out: &mut Vec<u8>) {
        let lost = self.cumulative_lost.clamp(LOST_MIN, LOST_MAX).to_be_bytes();
        out.extend_from_slice(&self.ssrc.to_be_bytes());
        out.extend_from_slice(&[self.fraction_lost, lost[1], lost[2], lost[3]]);
        out.extend_from_slice(&self.highest_seq.to_be_bytes());
        out.extend_from_slice(&self.jitter.to_be_bytes());
        out.extend_from_slice(&self.lsr.to_be_bytes());
        out.extend_from_slice(&self.dlsr.to_be_bytes());
    }

    /// The round-trip time this block implies, given the NTP time it arrived
    /// (RFC 3550 section 6.4.1: arrival - LSR - DLSR).
    ///
    /// LSR echoes the NTP time of one of our own SRs, so only our clock is
    /// involved: `arrival_ntp` must come from the same clock as the SRs.
    /// `None` when the receiver has had no SR yet (LSR 0), or when the result
    /// is negative, which a client that botches DLSR can produce.
    pub fn round_trip(&self, arrival_ntp: u64) -> Option<Duration> {
        if self.lsr == 0 {
            return None;
        }
        let rtt = ntp_middle32(arrival_ntp).wrapping_sub(self.lsr).wrapping_sub(self.dlsr);
        if rtt > i32::MAX as u32 {
            return None;
        }
        Some(Duration::from_nanos((u64::from(rtt) * 1_000_000_000) >> 16))
    }
}

// ---------------------------------------------------------------------------
// Builders

/// Starts a packet: V=2, no padding, `count`, `pt`, and a length patched by
/// [`finish`]. Returns where the packet starts in `out`.
fn begin(out: &mut Vec<u8>, count: usize, pt: u8) -> usize {
    debug_assert!(count <= MAX_COUNT);
    let start = out.len();
    out.extend_from_slice(&[0x80 | count as u8, pt, 0, 0]);
    start
}

/// Writes the length of the packet that starts at `start` and runs to the end
/// of `out`. Every builder pads its packet to 32 bits before this, and none
/// comes near the 65536-word limit (the largest, an SR with 31 blocks, is 193
/// words).
fn finish(out: &mut [u8], start: usize) {
    let bytes = out.len() - start;
    debug_assert!(bytes.is_multiple_of(4) && bytes / 4 <= 1 << 16);
    let words = (bytes / 4 - 1) as u16;
    out[start + field::LENGTH.start..start + field::LENGTH.end].copy_from_slice(&words.to_be_bytes());
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character
/// boundary, so a truncated CNAME or reason is still UTF-8.
fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Appends a sender report (PT 200).
///
/// `ntp` and `rtp_ts` must describe the same instant (the pacer takes the RTP time of the current play position).
/// `packets` and `octets` are the counts since the stream began, payload only
/// for octets; they wrap modulo 2^32 (RFC 3550 section 6.4.1), so pass the
/// low 32 bits of wider counters.
///
/// A sending-only server has nothing to put in `reports`. Should there be more
/// than 31, the rest follow in RR packets, as RFC 3550 section 6.4.2 says.
pub fn sender_report(
    out: &mut Vec<u8>,
    ssrc: u32,
    ntp: u64,
    rtp_ts: u32,
    packets: u32,
    octets: u32,
    reports: &[ReportBlock],
) {
    let (now, later) = reports.split_at(reports.len().min(MAX_COUNT));
    let start = begin(out, now.len(), PT_SR);
    out.extend_from_slice(&ssrc.to_be_bytes());
    out.extend_from_slice(&ntp.to_be_bytes());
    out.extend_from_slice(&rtp_ts.to_be_bytes());
    out.extend_from_slice(&packets.to_be_bytes());
    out.extend_from_slice(&octets.to_be_bytes());
    for block in now {
        block.emit(out);
    }
    finish(out, start);
    if !later.is_empty() {
        receiver_report(out, ssrc, later);
    }
}

/// Appends a receiver report (PT 201); with no blocks, the empty RR that
/// starts a compound packet from a participant that has not sent lately.
/// More than 31 blocks spill into further RR packets.
pub fn receiver_report(out: &mut Vec<u8>, ssrc: u32, reports: &[ReportBlock]) {
    let mut rest = reports;
    loop {
        let (now, later) = rest.split_at(rest.len().min(MAX_COUNT));
        let start = begin(out, now.len(), PT_RR);
        out.extend_from_slice(&ssrc.to_be_bytes());
        for block in now {
            block.emit(out);
        }
        finish(out, start);
        if later.is_empty() {
            return;
        }
        rest = later;
    }
}

/// Appends a source description (PT 202) with one chunk holding one CNAME
/// item. The CNAME is cut to the 255 bytes an item can hold (at a character
/// boundary, so it stays UTF-8).
pub fn sdes_cname(out: &mut Vec<u8>, ssrc: u32, cname: &str) {
    let cname = truncate_utf8(cname, 255);
    let start = begin(out, 1, PT_SDES);
    out.extend_from_slice(&ssrc.to_be_bytes());
    out.extend_from_slice(&[SDES_CNAME, cname.len() as u8]);
    out.extend_from_slice(cname.as_bytes());
    // The item list ends with a null octet, and more nulls pad the chunk to
    // 32 bits (RFC 3550 section 6.5). The terminator is needed even when the
    // item already ends on a boundary, which costs a whole word of nulls.
    out.push(0);
    pad_to_word(out, start);
    finish(out, start);
}

/// Appends nulls until the packet that starts at `start` is a whole number
/// of words.
fn pad_to_word(out: &mut Vec<u8>, start: usize) {
    let len = out.len() - start;
    out.resize(start + len.next_multiple_of(4), 0);
}

/// Appends a BYE (PT 203) for `ssrcs`, with an optional reason cut to 255
/// bytes. More than 31 sources take several BYE packets; the reason goes in
/// the last.
pub fn bye(out: &mut Vec<u8>, ssrcs: &[u32], reason: Option<&str>) {
    let reason = reason.map(|r| truncate_utf8(r, 255)).filter(|r| !r.is_empty());
    let mut rest = ssrcs;
    loop {
        let (now, later) = rest.split_at(rest.len().min(MAX_COUNT));
        let start = begin(out, now.len(), PT_BYE);
        for ssrc in now {
            out.extend_from_slice(&ssrc.to_be_bytes());
        }
        if later.is_empty() {
            if let Some(reason) = reason {
                out.push(reason.len() as u8);
                out.extend_from_slice(reason.as_bytes());
                pad_to_word(out, start);
            }
            finish(out, start);
            return;
        }
        finish(out, start);
        rest = later;
    }
}

// ---------------------------------------------------------------------------
// Parser

/// Why a datagram is not acceptable RTCP. Offsets are in bytes: `offset` is
/// where the offending packet starts in the datagram; `need` and `have` count
/// from that packet's start, padding excluded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RtcpError {
    #[error("empty RTCP datagram")]
    Empty,
    #[error("{have} bytes at offset {offset} are too few for an RTCP header")]
    Truncated { offset: usize, have: usize },
    #[error("RTCP packet at offset {offset} has version {version}, not 2")]
    Version { offset: usize, version: u8 },
    #[error("RTCP packet at offset {offset} claims {claimed} bytes but {available} remain")]
    Length {
        offset: usize,
        claimed: usize,
        available: usize,
    },
    #[error("RTCP packet at offset {offset} has padding count {count} for {body} bytes after its header")]
    Padding { offset: usize, count: u8, body: usize },
    #[error("RTCP packet type {pt} at offset {offset} is {have} bytes, too short for its {what} ({need} bytes)")]
    Body {
        offset: usize,
        pt: u8,
        what: &'static str,
        need: usize,
        have: usize,
    },
}

/// Sender information of an SR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderInfo {
    pub ntp: u64,
    pub rtp_ts: u32,
    pub packets: u32,
    pub octets: u32,
}

/// One packet of a compound RTCP datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RtcpPacket<'a> {
    /// SR (200). Profile-specific extensions after the blocks are ignored.
    SenderReport {
        ssrc: u32,
        info: SenderInfo,
        reports: ReportBlocks<'a>,
    },
    /// RR (201). Profile-specific extensions after the blocks are ignored.
    ReceiverReport { ssrc: u32, reports: ReportBlocks<'a> },
    /// SDES (202).
    SourceDescription(SdesChunks<'a>),
    /// BYE (203). The reason is meant to be UTF-8 but is the client's text.
    Bye {
        ssrcs: SsrcList<'a>,
        reason: Option<&'a [u8]>,
    },
    /// Generic NACK (RTPFB 205, FMT 1): `media_ssrc` asks for retransmission
    /// of the sequence numbers in `nacks`.
    GenericNack {
        sender_ssrc: u32,
        media_ssrc: u32,
        nacks: NackList<'a>,
    },
    /// Picture loss indication (PSFB 206, FMT 1): the receiver wants a key
    /// frame of `media_ssrc`.
    Pli { sender_ssrc: u32, media_ssrc: u32 },
    /// Anything else whose header is sound: APP, other feedback messages
    /// (FIR, TMMBR, transport-wide congestion control...), XR, types yet to
    /// be defined. Not interpreted; exposed so callers can count or log them.
    /// `count` is the 5-bit field (RC, SC, subtype or FMT); `body` follows
    /// the 4-byte header, padding removed.
    Other { pt: u8, count: u8, body: &'a [u8] },
}

/// The packets of a datagram that [`parse_compound`] accepted, in order.
#[derive(Debug, Clone)]
pub struct Compound<'a> {
    buf: &'a [u8],
    offset: usize,
}

/// Checks a datagram received on an RTCP port and returns its packets.
///
/// Every packet must have version 2, a length that fits the datagram, sound
/// padding, and counts that fit its length; the packets must fill the
/// datagram exactly. Unknown packet types are skipped by their length.
///
/// RFC 3550 says a compound packet starts with SR or RR and carries an SDES
/// CNAME. That is not enforced: RFC 5506 allows reduced-size RTCP, and
/// clients use it. libavformat sends its PLI and NACK feedback in datagrams
/// of their own, with no RR, and sends a lone RR with no SDES to open NAT
/// bindings. Rejecting those would throw away the feedback the rule exists to
/// make attributable.
pub fn parse_compound(buf: &[u8]) -> Result<Compound<'_>, RtcpError> {
    if buf.is_empty() {
        return Err(RtcpError::Empty);
    }
    let mut offset = 0;
    while offset < buf.len() {
        let (_, len) = parse_packet(&buf[offset..], offset)?;
        offset += len;
    }
    Ok(Compound { buf, offset: 0 })
}

impl<'a> Iterator for Compound<'a> {
    type Item = RtcpPacket<'a>;

    fn next(&mut self) -> Option<RtcpPacket<'a>> {
        let rest = self.buf.get(self.offset..).filter(|r| !r.is_empty())?;
        // The whole datagram was checked when `self` was made, so this does
        // not fail; if it somehow did, iteration would just stop.
        let (packet, len) = parse_packet(rest, self.offset).ok()?;
        self.offset += len;
        Some(packet)
    }
}

/// Parses the packet at the start of `rest`, which is at `offset` in the
/// datagram. Returns it and its length, padding included.
fn parse_packet(rest: &[u8], offset: usize) -> Result<(RtcpPacket<'_>, usize), RtcpError> {
    if rest.len() < field::HEADER_LEN {
        return Err(RtcpError::Truncated {
            offset,
            have: rest.len(),
        });
    }
    let flags = rest[field::FLAGS];
    let version = flags >> 6;
    if version != 2 {
        return Err(RtcpError::Version { offset, version });
    }
    let padded = flags & 0x20 != 0;
    let count = flags & 0x1f;
    let pt = rest[field::PT];
    let len = (usize::from(be16(rest, field::LENGTH.start)) + 1) * 4;
    if len > rest.len() {
        return Err(RtcpError::Length {
            offset,
            claimed: len,
            available: rest.len(),
        });
    }
    let mut pkt = &rest[..len];
    if padded {
        // RFC 3550 A.2 expects padding only on the last packet of a compound;
        // the length field delimits each packet anyway, so padding elsewhere
        // is harmless and accepted. The count includes itself, so 0 is wrong.
        let pad = pkt[len - 1];
        let body = len - field::HEADER_LEN;
        if pad == 0 || usize::from(pad) > body {
            return Err(RtcpError::Padding {
                offset,
                count: pad,
                body,
            });
        }
        pkt = &pkt[..len - usize::from(pad)];
    }
    let too_short = |what: &'static str, need: usize| RtcpError::Body {
        offset,
        pt,
        what,
        need,
        have: pkt.len(),
    };
    let need = |what: &'static str, len: usize| {
        if pkt.len() < len {
            Err(too_short(what, len))
        } else {
            Ok(())
        }
    };
    let count_len = usize::from(count);
    let packet = match pt {
        PT_SR => {
            let end = field::SR_BLOCKS + count_len * field::block::LEN;
            need("SSRC, sender info and report blocks", end)?;
            RtcpPacket::SenderReport {
                ssrc: be32(pkt, field::SSRC),
                info: SenderInfo {
                    ntp: be64(pkt, field::SR_NTP),
                    rtp_ts: be32(pkt, field::SR_RTP_TS),
                    packets: be32(pkt, field::SR_PACKETS),
                    octets: be32(pkt, field::SR_OCTETS),
                },
                reports: ReportBlocks(&pkt[field::SR_BLOCKS..end]),
            }
        }
        PT_RR => {
            let end = field::RR_BLOCKS + count_len * field::block::LEN;
            need("SSRC and report blocks", end)?;
            RtcpPacket::ReceiverReport {
                ssrc: be32(pkt, field::SSRC),
                reports: ReportBlocks(&pkt[field::RR_BLOCKS..end]),
            }
        }
        PT_SDES => {
            let mut at = field::CHUNKS;
            for _ in 0..count {
                let (_, next) = sdes_chunk(pkt, at).map_err(|n| too_short("SDES chunks", n))?;
                at = next;
            }
            RtcpPacket::SourceDescription(SdesChunks {
                pkt,
                at: field::CHUNKS,
                remaining: count,
            })
        }
        PT_BYE => {
            let end = field::CHUNKS + count_len * 4;
            need("BYE source list", end)?;
            let reason = match pkt[end..].first() {
                None => None,
                Some(&n) => {
                    let reason_end = end + 1 + usize::from(n);
                    need("BYE reason", reason_end)?;
                    Some(&pkt[end + 1..reason_end]).filter(|r| !r.is_empty())
                }
            };
            RtcpPacket::Bye {
                ssrcs: SsrcList(&pkt[field::CHUNKS..end]),
                reason,
            }
        }
        PT_RTPFB | PT_PSFB => {
            // RFC 4585 section 6.1: every feedback message names its sender
            // and the media source, whatever its type.
            need("feedback SSRCs", field::FB_FCI)?;
            let sender_ssrc = be32(pkt, field::SSRC);
            let media_ssrc = be32(pkt, field::FB_MEDIA_SSRC);
            let fci = &pkt[field::FB_FCI..];
            match (pt, count) {
                (PT_RTPFB, FMT_GENERIC_NACK) => {
                    // Only padding can leave a partial entry; the RFC allows
                    // none. An empty list (also not allowed) is harmless.
                    need("generic NACK list", pkt.len().next_multiple_of(field::NACK_LEN))?;
                    RtcpPacket::GenericNack {
                        sender_ssrc,
                        media_ssrc,
                        nacks: NackList(fci),
                    }
                }
                // A PLI has no FCI; anything there is ignored.
                (PT_PSFB, FMT_PLI) => RtcpPacket::Pli {
                    sender_ssrc,
                    media_ssrc,
                },
                _ => RtcpPacket::Other {
                    pt,
                    count,
                    body: &pkt[field::HEADER_LEN..],
                },
            }
        }
        _ => RtcpPacket::Other {
            pt,
            count,
            body: &pkt[field::HEADER_LEN..],
        },
    };
    Ok((packet, len))
}

/// The chunk of an SDES packet `pkt` that starts at `at`, and where the next
/// begins; or the length `pkt` would need for the chunk to fit.
fn sdes_chunk(pkt: &[u8], at: usize) -> Result<(SdesChunk<'_>, usize), usize> {
    let items_start = at + 4;
    if pkt.len() < items_start {
        return Err(items_start);
    }
    let ssrc = be32(pkt, at..items_start);
    let mut p = items_start;
    loop {
        match pkt.get(p) {
            // The packet ended where a null item was due. Older libavformat
            // wrote no terminator when the CNAME item happened to end on a
            // 32-bit boundary; the end of the packet ends the list just as
            // well.
            None => {
                let chunk = SdesChunk {
                    ssrc,
                    items: SdesItems(&pkt[items_start..p]),
                };
                return Ok((chunk, p));
            }
            Some(0) => {
                let chunk = SdesChunk {
                    ssrc,
                    items: SdesItems(&pkt[items_start..p]),
                };
                // Nulls pad the chunk to 32 bits; the next chunk starts on
                // the boundary. Their values are not checked: nothing in them
                // matters.
                let next = (p + 1).next_multiple_of(4).min(pkt.len());
                return Ok((chunk, next));
            }
            Some(_) => {
                let Some(&len) = pkt.get(p + 1) else {
                    return Err(p + 2);
                };
                let end = p + 2 + usize::from(len);
                if end > pkt.len() {
                    return Err(end);
                }
                p = end;
            }
        }
    }
}

/// Report blocks of an SR or RR, decoded as they are iterated.
#[derive(Clone, PartialEq, Eq)]
pub struct ReportBlocks<'a>(&'a [u8]);

impl Iterator for ReportBlocks<'_> {
    type Item = ReportBlock;

    fn next(&mut self) -> Option<ReportBlock> {
        let (block, rest) = self.0.split_at_checked(field::block::LEN)?;
        self.0 = rest;
        Some(ReportBlock::parse(block))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.0.len() / field::block::LEN;
        (n, Some(n))
    }
}

impl ExactSizeIterator for ReportBlocks<'_> {}

impl fmt::Debug for ReportBlocks<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.clone()).finish()
    }
}

/// The chunks of an SDES packet.
#[derive(Clone, PartialEq, Eq)]
pub struct SdesChunks<'a> {
    /// The whole packet, padding removed: chunk offsets count from its start,
    /// which is what 32-bit alignment is relative to.
    pkt: &'a [u8],
    at: usize,
    remaining: u8,
}

impl<'a> Iterator for SdesChunks<'a> {
    type Item = SdesChunk<'a>;

    fn next(&mut self) -> Option<SdesChunk<'a>> {
        if self.remaining == 0 {
            return None;
        }
        // Checked by the parser; on failure iteration would just stop.
        let (chunk, next) = sdes_chunk(self.pkt, self.at).ok()?;
        self.at = next;
        self.remaining -= 1;
        Some(chunk)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(usize::from(self.remaining)))
    }
}

impl fmt::Debug for SdesChunks<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.clone()).finish()
    }
}

/// One SDES chunk: a source and its items.
#[derive(Clone, PartialEq, Eq)]
pub struct SdesChunk<'a> {
    pub ssrc: u32,
    items: SdesItems<'a>,
}

impl<'a> SdesChunk<'a> {
    /// The first CNAME item, if the chunk has one. Meant to be UTF-8
    /// (`user@host` or a host name) but it is the client's text.
    pub fn cname(&self) -> Option<&'a [u8]> {
        self.items().find(|&(kind, _)| kind == SDES_CNAME).map(|(_, text)| text)
    }

    /// All items as (type, text): CNAME, NAME, TOOL, PRIV and the rest.
    pub fn items(&self) -> SdesItems<'a> {
        self.items.clone()
    }
}

impl fmt::Debug for SdesChunk<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SdesChunk")
            .field("ssrc", &format_args!("{:#010x}", self.ssrc))
            .field("cname", &self.cname().map(String::from_utf8_lossy))
            .field("items", &self.items().count())
            .finish()
    }
}

/// The items of an SDES chunk, without the terminating null.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdesItems<'a>(&'a [u8]);

impl<'a> Iterator for SdesItems<'a> {
    type Item = (u8, &'a [u8]);

    fn next(&mut self) -> Option<(u8, &'a [u8])> {
        let (&kind, rest) = self.0.split_first()?;
        let (&len, rest) = rest.split_first()?;
        let (text, rest) = rest.split_at_checked(usize::from(len))?;
        self.0 = rest;
        Some((kind, text))
    }
}

/// The sources a BYE names.
#[derive(Clone, PartialEq, Eq)]
pub struct SsrcList<'a>(&'a [u8]);

impl Iterator for SsrcList<'_> {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        let (word, rest) = self.0.split_at_checked(4)?;
        self.0 = rest;
        Some(be32(word, 0..4))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.0.len() / 4;
        (n, Some(n))
    }
}

impl ExactSizeIterator for SsrcList<'_> {}

impl fmt::Debug for SsrcList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.clone().map(|s| format!("{s:#010x}")))
            .finish()
    }
}

/// The entries of a generic NACK (RFC 4585 section 6.2.1).
#[derive(Clone, PartialEq, Eq)]
pub struct NackList<'a>(&'a [u8]);

impl<'a> NackList<'a> {
    /// The entries as sent: (PID, BLP). PID is lost; bit i of BLP (least
    /// significant first) says PID + i + 1 is lost too.
    pub fn entries(&self) -> impl Iterator<Item = (u16, u16)> + 'a {
        self.0.chunks_exact(field::NACK_LEN).map(|e| (be16(e, 0), be16(e, 2)))
    }

    /// Every sequence number the entries report lost, in the order given,
    /// wrapping past 65535. Duplicates across entries are not removed: the
    /// RFC does not forbid them and the retransmitter has to cope with asks
    /// for packets it no longer has anyway.
    pub fn lost(&self) -> LostSeqs<'a> {
        LostSeqs { fci: self.0, bit: 0 }
    }
}

impl fmt::Debug for NackList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.lost()).finish()
    }
}

/// Lost sequence numbers expanded from generic NACK entries; at most 17 per
/// entry.
#[derive(Debug, Clone)]
pub struct LostSeqs<'a> {
    /// The current entry and those after it.
    fci: &'a [u8],
    /// 0 for the PID, 1..=16 for BLP bits 0..=15.
    bit: u16,
}

impl Iterator for LostSeqs<'_> {
    type Item = u16;

    fn next(&mut self) -> Option<u16> {
        loop {
            let entry = self.fci.get(..field::NACK_LEN)?;
            let (pid, blp) = (be16(entry, 0), be16(entry, 2));
            while self.bit <= 16 {
                let bit = self.bit;
                self.bit += 1;
                if bit == 0 || blp & (1 << (bit - 1)) != 0 {
                    return Some(pid.wrapping_add(bit));
                }
            }
            self.fci = &self.fci[field::NACK_LEN..];
            self.bit = 0;
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        // Each entry yields its PID, but the current one may be used up.
        let entries = self.fci.len() / field::NACK_LEN;
        (entries.saturating_sub(1), Some(entries * 17))
    }
}

// ---------------------------------------------------------------------------
// Feedback and application-defined packets

/// The entries of a generic NACK for the sequence numbers `lost`: (PID,
/// BLP) pairs, each covering its PID and the 16 numbers after it.
///
/// Numbers are taken in the order given; one within 16 after the current
/// entry's PID sets a bit of its BLP, any other starts a new entry, and a
/// repeat of the PID is dropped. In ascending order (wrapping past 65535)
/// the list is as short as it can be; in any other order it is still
/// correct, only longer.
pub fn nack_entries(lost: &[u16]) -> impl Iterator<Item = (u16, u16)> + '_ {
    let mut rest = lost;
    std::iter::from_fn(move || {
        let (&pid, tail) = rest.split_first()?;
        let mut blp = 0u16;
        let mut used = 0;
        for &seq in tail {
            match seq.wrapping_sub(pid) {
                0 => {}
                d @ 1..=16 => blp |= 1 << (d - 1),
                _ => break,
            }
            used += 1;
        }
        rest = &tail[used..];
        Some((pid, blp))
    })
}

/// Appends a generic NACK (RTPFB 205, FMT 1, RFC 4585 section 6.2.1) from
/// `sender_ssrc` asking the source `media_ssrc` for the packets `lost` (see
/// [`nack_entries`] for how they are packed). With nothing lost, nothing is
/// appended: an empty NACK is not allowed.
///
/// Under AVPF a receiver may send it at once as early feedback when its
/// RTCP budget allows, otherwise with its next regular report (RFC 4585
/// section 3.5); that timing is the caller's.
pub fn generic_nack(out: &mut Vec<u8>, sender_ssrc: u32, media_ssrc: u32, lost: &[u16]) {
    if lost.is_empty() {
        return;
    }
    let start = begin(out, usize::from(FMT_GENERIC_NACK), PT_RTPFB);
    out.extend_from_slice(&sender_ssrc.to_be_bytes());
    out.extend_from_slice(&media_ssrc.to_be_bytes());
    // The length field counts at most 65536 words: header, two SSRCs and
    // 65533 entries. No real loss list comes near; a longer one is cut.
    for (pid, blp) in nack_entries(lost).take(MAX_WORDS - 3) {
        out.extend_from_slice(&pid.to_be_bytes());
        out.extend_from_slice(&blp.to_be_bytes());
    }
    finish(out, start);
}

/// An application-defined packet (APP, PT 204, RFC 3550 section 6.7): the
/// subtype in the count field, the sender's SSRC, a four-character name and
/// data the name's owner defines. QuickTime's reliable-UDP acknowledgements
/// (`qtak`, `ack `) and its client reports (`QTSS`) travel as APP packets;
/// see the `qtss` module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct App<'a> {
    pub subtype: u8,
    pub ssrc: u32,
    pub name: [u8; 4],
    /// What follows the name, padding removed. RFC 3550 asks for a whole
    /// number of words; that is left to the readers of each name.
    pub data: &'a [u8],
}

/// The most 32-bit words a packet can have: the length field holds words
/// minus one in 16 bits.
const MAX_WORDS: usize = 1 << 16;

/// The fixed part of an APP packet after the common header: SSRC and name.
const APP_FIXED: usize = 8;

impl<'a> RtcpPacket<'a> {
    /// This packet as an APP packet, if it is one: `None` for other types,
    /// an error for an APP packet too short for its SSRC and name.
    pub fn app(&self) -> Option<Result<App<'a>, RtcpError>> {
        match *self {
            RtcpPacket::Other {
                pt: PT_APP,
                count,
                body,
            } => Some(App::parse(count, body)),
            _ => None,
        }
    }
}

impl<'a> App<'a> {
    /// Reads an APP packet's body: what follows its 4-byte common header,
    /// padding removed, as [`RtcpPacket::Other`] hands it out.
    pub fn parse(subtype: u8, body: &'a [u8]) -> Result<App<'a>, RtcpError> {
        if body.len() < APP_FIXED {
            return Err(RtcpError::Body {
                offset: 0,
                pt: PT_APP,
                what: "APP SSRC and name",
                need: field::HEADER_LEN + APP_FIXED,
                have: field::HEADER_LEN + body.len(),
            });
        }
        let mut name = [0; 4];
        name.copy_from_slice(&body[4..8]);
        Ok(App {
            subtype,
            ssrc: be32(body, 0..4),
            name,
            data: &body[APP_FIXED..],
        })
    }
}

/// Appends an APP packet with `data`, padded with zeros to a whole word.
/// The subtype keeps its low five bits.
/// Data past what the length field can count (256 KiB) is cut.
pub fn app(out: &mut Vec<u8>, subtype: u8, ssrc: u32, name: [u8; 4], data: &[u8]) {
    let data = &data[..data.len().min((MAX_WORDS - 3) * 4)];
    let start = begin(out, usize::from(subtype & 0x1f), PT_APP);
    out.extend_from_slice(&ssrc.to_be_bytes());
    out.extend_from_slice(&name);
    out.extend_from_slice(data);
    pad_to_word(out, start);
    finish(out, start);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::Rng;

    fn parse(buf: &[u8]) -> Vec<RtcpPacket<'_>> {
        parse_compound(buf).unwrap().collect()
    }

    fn block(n: u32) -> ReportBlock {
        ReportBlock {
            ssrc: 0x1000 + n,
            fraction_lost: n as u8,
            cumulative_lost: n as i32 - 20,
            highest_seq: 0x0001_0000 + n,
            jitter: 3 * n,
            lsr: 0xb705_2000 + n,
            dlsr: 0x0005_4000 + n,
        }
    }

    /// Visits every field of every packet, as a consumer would, so fuzzing
    /// reaches the lazy views too.
    fn walk(buf: &[u8]) -> Result<usize, RtcpError> {
        let mut seen = 0;
        for packet in parse_compound(buf)? {
            let _ = format!("{packet:?}");
            match packet {
                RtcpPacket::SenderReport { reports, .. } | RtcpPacket::ReceiverReport { reports, .. } => {
                    let n = reports.len();
                    assert_eq!(reports.count(), n);
                    seen += n;
                }
                RtcpPacket::SourceDescription(chunks) => {
                    for chunk in chunks {
                        seen += chunk.cname().map_or(0, <[u8]>::len);
                        seen += chunk.items().count();
                    }
                }
                RtcpPacket::Bye { ssrcs, reason } => seen += ssrcs.count() + reason.map_or(0, <[u8]>::len),
                RtcpPacket::GenericNack { nacks, .. } => {
                    let entries = nacks.entries().count();
                    let lost = nacks.lost().count();
                    assert!(lost >= entries && lost <= entries * 17);
                    seen += lost;
                }
                RtcpPacket::Pli { .. } => seen += 1,
                RtcpPacket::Other { body, .. } => seen += body.len(),
            }
        }
        Ok(seen)
    }

    // --- time -------------------------------------------------------------

    #[test]
    fn ntp_of_known_instants() {
        assert_eq!(ntp_from_unix(Duration::ZERO), 2_208_988_800 << 32);
        assert_eq!(
            ntp_from_unix(Duration::from_millis(1_700_000_000_500)),
            (1_700_000_000 + 2_208_988_800u64) << 32 | 0x8000_0000
        );
        assert_eq!(ntp_from_unix(Duration::new(0, 250_000_000)) & 0xffff_ffff, 0x4000_0000);
        // One nanosecond is 4.29 units of 2^-32 s, and the fraction rounds down.
        assert_eq!(ntp_from_unix(Duration::new(0, 1)) & 0xffff_ffff, 4);
        assert_eq!(ntp_from_unix(Duration::new(0, 999_999_999)) & 0xffff_ffff, 0xffff_fffb);
        // Era 1 starts 2036-02-07T06:28:16Z.
        assert_eq!(ntp_from_unix(Duration::from_secs(2_085_978_496)), 0);
        assert_eq!(ntp_from_unix(Duration::from_secs(2_085_978_495)) >> 32, 0xffff_ffff);
        // No overflow at the far end.
        let _ = ntp_from_unix(Duration::MAX);
    }

    #[test]
    fn ntp_middle_bits() {
        assert_eq!(ntp_middle32(0x1122_3344_5566_7788), 0x3344_5566);
        // 2208988800 s is 0x83aa_7e80.
        assert_eq!(ntp_middle32(ntp_from_unix(Duration::ZERO)), 0x7e80_0000);
        assert_eq!(ntp_middle32(ntp_from_unix(Duration::from_millis(500))), 0x7e80_8000);
    }

    #[test]
    fn round_trip_from_rfc_example() {
        // RFC 3550 section 6.4.1, figure 2: A = 0xb710:8000, LSR = 0xb705:2000,
        // DLSR = 0x0005:4000, so the round trip is 0x0006:2000 = 6.125 s.
        let rr = ReportBlock {
            lsr: 0xb705_2000,
            dlsr: 0x0005_4000,
            ..ReportBlock::default()
        };
        assert_eq!(rr.round_trip(0xb710_8000 << 16), Some(Duration::from_millis(6125)));
        assert_eq!(ReportBlock { lsr: 0, ..rr }.round_trip(0xb710_8000 << 16), None);
        // DLSR longer than the time since the SR: negative, so unknown.
        assert_eq!(
            ReportBlock {
                dlsr: 0x0100_0000,
                ..rr
            }
            .round_trip(0xb710_8000 << 16),
            None
        );
        // Middle bits wrap between LSR and arrival.
        let wrap = ReportBlock {
            lsr: 0xffff_8000,
            dlsr: 0,
            ..ReportBlock::default()
        };
        assert_eq!(wrap.round_trip(0x0000_8000 << 16), Some(Duration::from_secs(1)));
    }

    // --- report blocks ------------------------------------------------------

    #[test]
    fn cumulative_loss_is_24_bit_signed() {
        let mut bytes = [0u8; 24];
        for (wire, value) in [
            ([0x00, 0x00, 0x00], 0),
            ([0x00, 0x00, 0x2a], 42),
            ([0x7f, 0xff, 0xff], LOST_MAX),
            ([0x80, 0x00, 0x00], LOST_MIN),
            ([0xff, 0xff, 0xff], -1),
            ([0xff, 0xff, 0xfe], -2),
        ] {
            bytes[4] = 0xab;
            bytes[5..8].copy_from_slice(&wire);
            let b = ReportBlock::parse(&bytes);
            assert_eq!((b.fraction_lost, b.cumulative_lost), (0xab, value), "{wire:02x?}");
            let mut out = Vec::new();
            b.emit(&mut out);
            assert_eq!(out, bytes);
        }
        // Out of range: clamped, keeping the sign.
        for (value, wire) in [(1 << 24, [0x7f, 0xff, 0xff]), (i32::MIN, [0x80, 0x00, 0x00])] {
            let mut out = Vec::new();
            ReportBlock {
                cumulative_lost: value,
                ..ReportBlock::default()
            }
            .emit(&mut out);
            assert_eq!(out[5..8], wire);
        }
    }

    // --- builders -----------------------------------------------------------

    #[test]
    fn sender_report_bytes() {
        let mut out = vec![0xee]; // builders append; what was there stays
        sender_report(
            &mut out,
            0x1122_3344,
            0xe8f2_1234_8000_0000,
            0x0001_0000,
            10,
            12_000,
            &[],
        );
        #[rustfmt::skip]
        let want = [
            0xee,
            0x80, 200, 0x00, 0x06,
            0x11, 0x22, 0x33, 0x44,
            0xe8, 0xf2, 0x12, 0x34, 0x80, 0x00, 0x00, 0x00,
            0x00, 0x01, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x0a,
            0x00, 0x00, 0x2e, 0xe0,
        ];
        assert_eq!(out, want);
    }

    #[test]
    fn sender_report_with_blocks_spills_into_rr() {
        for n in [1usize, 31, 32, 62, 63, 70] {
            let blocks: Vec<ReportBlock> = (0..n as u32).map(block).collect();
            let mut out = Vec::new();
            sender_report(&mut out, 9, 1 << 32, 2, 3, 4, &blocks);
            assert_eq!(out.len(), 28 + 24 * n + 8 * (n.saturating_sub(1) / 31));
            let packets = parse(&out);
            assert_eq!(packets.len(), 1 + (n - 1) / 31, "n = {n}");
            let mut got = Vec::new();
            for (i, p) in packets.into_iter().enumerate() {
                match p {
                    RtcpPacket::SenderReport { ssrc, info, reports } if i == 0 => {
                        assert_eq!(ssrc, 9);
                        assert_eq!(
                            info,
                            SenderInfo {
                                ntp: 1 << 32,
                                rtp_ts: 2,
                                packets: 3,
                                octets: 4
                            }
                        );
                        got.extend(reports);
                    }
                    RtcpPacket::ReceiverReport { ssrc, reports } if i > 0 => {
                        assert_eq!(ssrc, 9);
                        got.extend(reports);
                    }
                    other => panic!("packet {i}: {other:?}"),
                }
            }
            assert_eq!(got, blocks);
        }
    }

    #[test]
    fn receiver_report_bytes() {
        let mut out = Vec::new();
        receiver_report(&mut out, 0xdead_beef, &[]);
        assert_eq!(out, [0x80, 201, 0, 1, 0xde, 0xad, 0xbe, 0xef]);
        out.clear();
        receiver_report(&mut out, 1, &[block(1)]);
        assert_eq!(&out[..4], [0x81, 201, 0, 7]);
        assert_eq!(out.len(), 32);
        out.clear();
        let blocks: Vec<ReportBlock> = (0..40).map(block).collect();
        receiver_report(&mut out, 1, &blocks);
        assert_eq!(&out[..4], [0x80 | 31, 201, 0, 1 + 31 * 6]);
        assert_eq!(&out[8 + 31 * 24..][..4], [0x80 | 9, 201, 0, 1 + 9 * 6]);
        let got: Vec<ReportBlock> = parse(&out)
            .into_iter()
            .flat_map(|p| match p {
                RtcpPacket::ReceiverReport { reports, .. } => reports,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(got, blocks);
    }

    #[test]
    fn sdes_cname_bytes() {
        let ssrc = [0x01, 0x02, 0x03, 0x04];
        let cases: [(&str, &[u8]); 4] = [
            // Item ends at 10 bytes: one null, one pad.
            ("", &[0x81, 202, 0, 2, 1, 2, 3, 4, 1, 0, 0, 0]),
            // Item ends on the boundary: a whole word of nulls.
            ("ab", &[0x81, 202, 0, 3, 1, 2, 3, 4, 1, 2, b'a', b'b', 0, 0, 0, 0]),
            ("abc", &[0x81, 202, 0, 3, 1, 2, 3, 4, 1, 3, b'a', b'b', b'c', 0, 0, 0]),
            (
                "abcde",
                &[0x81, 202, 0, 3, 1, 2, 3, 4, 1, 5, b'a', b'b', b'c', b'd', b'e', 0],
            ),
        ];
        for (cname, want) in cases {
            let mut out = Vec::new();
            sdes_cname(&mut out, u32::from_be_bytes(ssrc), cname);
            assert_eq!(out, want, "{cname:?}");
        }
    }

    #[test]
    fn sdes_cname_every_length_round_trips() {
        for n in 0..=300 {
            let cname: String = (0..n).map(|i| (b'a' + (i % 26) as u8) as char).collect();
            let mut out = Vec::new();
            sdes_cname(&mut out, 77, &cname);
            let kept = n.min(255);
            assert_eq!(out.len() % 4, 0);
            assert_eq!(usize::from(be16(&out, 2)), out.len() / 4 - 1);
            // Terminator present, and at most 3 more nulls after it.
            let nulls = out.len() - (10 + kept);
            assert!((1..=4).contains(&nulls), "n = {n}");
            assert!(out[10 + kept..].iter().all(|&b| b == 0));
            let packets = parse(&out);
            let [RtcpPacket::SourceDescription(chunks)] = &packets[..] else {
                panic!("n = {n}");
            };
            let chunks: Vec<SdesChunk> = chunks.clone().collect();
            assert_eq!(chunks.len(), 1);
            assert_eq!(chunks[0].ssrc, 77);
            assert_eq!(chunks[0].cname(), Some(&cname.as_bytes()[..kept]));
        }
    }

    #[test]
    fn sdes_cname_truncates_on_a_character_boundary() {
        // 254 ASCII bytes then a 2-byte character: byte 255 would split it.
        let cname = format!("{}é", "x".repeat(254));
        let mut out = Vec::new();
        sdes_cname(&mut out, 1, &cname);
        assert_eq!(out[9], 254);
        let cname = format!("{}é", "x".repeat(253));
        out.clear();
        sdes_cname(&mut out, 1, &cname);
        assert_eq!(out[9], 255);
        assert_eq!(&out[10 + 253..10 + 255], "é".as_bytes());
    }

    #[test]
    fn bye_bytes() {
        let mut out = Vec::new();
        bye(&mut out, &[0x0a0b_0c0d], None);
        assert_eq!(out, [0x81, 203, 0, 1, 0x0a, 0x0b, 0x0c, 0x0d]);
        out.clear();
        // Length octet plus 3 bytes: exactly a word, no padding.
        bye(&mut out, &[1], Some("bye"));
        assert_eq!(out, [0x81, 203, 0, 2, 0, 0, 0, 1, 3, b'b', b'y', b'e']);
        out.clear();
        bye(&mut out, &[1], Some("ok"));
        assert_eq!(out, [0x81, 203, 0, 2, 0, 0, 0, 1, 2, b'o', b'k', 0]);
        out.clear();
        bye(&mut out, &[], Some(""));
        assert_eq!(out, [0x80, 203, 0, 0]);
    }

    #[test]
    fn bye_round_trips() {
        for n in [0usize, 1, 2, 31, 32, 65] {
            for reason in [None, Some("stream ended"), Some("r")] {
                let ssrcs: Vec<u32> = (0..n as u32).map(|i| i * 0x0101_0101).collect();
                let mut out = Vec::new();
                bye(&mut out, &ssrcs, reason);
                let packets = parse(&out);
                assert_eq!(packets.len(), 1 + n.saturating_sub(1) / 31);
                let mut got = Vec::new();
                let mut reasons = Vec::new();
                for p in packets {
                    let RtcpPacket::Bye { ssrcs, reason } = p else {
                        panic!("{p:?}");
                    };
                    got.extend(ssrcs);
                    reasons.push(reason);
                }
                assert_eq!(got, ssrcs);
                assert_eq!(reasons.pop().unwrap(), reason.map(str::as_bytes));
                assert!(reasons.iter().all(Option::is_none));
            }
        }
    }

    /// The compound packet a server sends every interval: an SR without
    /// blocks and the CNAME (RFC 3550 section 6.1: SR or RR first, CNAME in
    /// every compound packet).
    fn sr_cname(out: &mut Vec<u8>, ssrc: u32, ntp: u64, rtp_ts: u32, packets: u32, octets: u32, cname: &str) {
        sender_report(out, ssrc, ntp, rtp_ts, packets, octets, &[]);
        sdes_cname(out, ssrc, cname);
    }

    #[test]
    fn compound_sr_round_trips() {
        let mut out = Vec::new();
        sr_cname(
            &mut out,
            0xcafe,
            0x0123_4567_89ab_cdef,
            90_000,
            1500,
            1_800_000,
            "streamalot@edge-1",
        );
        assert_eq!(out.len(), 28 + 4 + 4 + 2 + 17 + 1);
        let packets = parse(&out);
        let [RtcpPacket::SenderReport { ssrc, info, reports }, RtcpPacket::SourceDescription(chunks)] = &packets[..]
        else {
            panic!("{packets:?}");
        };
        assert_eq!((*ssrc, reports.len()), (0xcafe, 0));
        assert_eq!(
            *info,
            SenderInfo {
                ntp: 0x0123_4567_89ab_cdef,
                rtp_ts: 90_000,
                packets: 1500,
                octets: 1_800_000
            }
        );
        let chunks: Vec<SdesChunk> = chunks.clone().collect();
        assert_eq!(chunks.len(), 1);
        assert_eq!(
            (chunks[0].ssrc, chunks[0].cname()),
            (0xcafe, Some(&b"streamalot@edge-1"[..]))
        );
    }

    #[test]
    fn compound_byes_round_trip() {
        let mut out = Vec::new();
        receiver_report(&mut out, 42, &[]);
        sdes_cname(&mut out, 42, "srv");
        bye(&mut out, &[42], None);
        #[rustfmt::skip]
        let want = [
            0x80, 201, 0, 1, 0, 0, 0, 42,
            // "srv" ends at byte 13: the null, then two more to 16
            0x81, 202, 0, 3, 0, 0, 0, 42, 1, 3, b's', b'r', b'v', 0, 0, 0,
            0x81, 203, 0, 1, 0, 0, 0, 42,
        ];
        assert_eq!(out, want);
        let packets = parse(&out);
        assert!(matches!(packets[0], RtcpPacket::ReceiverReport { ssrc: 42, ref reports } if reports.len() == 0));
        assert!(matches!(packets[1], RtcpPacket::SourceDescription(_)));
        let RtcpPacket::Bye {
            ref ssrcs,
            reason: None,
        } = packets[2]
        else {
            panic!("{packets:?}")
        };
        assert_eq!(ssrcs.clone().collect::<Vec<_>>(), [42]);

        out.clear();
        sr_cname(&mut out, 42, 5 << 32, 7, 100, 100_000, "srv");
        bye(&mut out, &[42], None);
        let packets = parse(&out);
        assert_eq!(packets.len(), 3);
        assert!(matches!(
            packets[0],
            RtcpPacket::SenderReport {
                ssrc: 42,
                info: SenderInfo {
                    packets: 100,
                    octets: 100_000,
                    ..
                },
                ..
            }
        ));
        assert!(matches!(packets[2], RtcpPacket::Bye { .. }));
    }

    // --- parsing what clients send ------------------------------------------

    /// An RR and SDES as libavformat writes them (`ff_rtp_check_and_send_back_rr`):
    /// its SSRC is the server's plus one, one report block about the server's
    /// stream, and its host name as CNAME.
    #[rustfmt::skip]
    const FFMPEG_RR: [u8; 52] = [
        // RR, RC 1, length 7
        0x81, 201, 0x00, 0x07,
        0x5e, 0x1a, 0x2b, 0x3d,
        // report block about 0x5e1a2b3c
        0x5e, 0x1a, 0x2b, 0x3c,
        0x0c, 0x00, 0x00, 0x2a, // fraction 12/256, 42 lost
        0x00, 0x01, 0x04, 0xd2, // one cycle, seq 1234
        0x00, 0x00, 0x01, 0xf4, // jitter 500
        0x12, 0x34, 0x56, 0x78, // LSR
        0x00, 0x01, 0x80, 0x00, // DLSR 1.5 s
        // SDES, SC 1, length (7 + 7 + 3) / 4 = 4
        0x81, 202, 0x00, 0x04,
        0x5e, 0x1a, 0x2b, 0x3d,
        0x01, 0x07, b'e', b'd', b'g', b'e', b'b', b'o', b'x',
        0x00, // end of items
        0x00, 0x00, // to the boundary
    ];

    #[test]
    fn ffmpeg_receiver_report() {
        let packets = parse(&FFMPEG_RR);
        assert_eq!(packets.len(), 2);
        let RtcpPacket::ReceiverReport { ssrc, reports } = packets[0].clone() else {
            panic!("{packets:?}");
        };
        assert_eq!(ssrc, 0x5e1a_2b3d);
        let blocks: Vec<ReportBlock> = reports.collect();
        assert_eq!(
            blocks,
            [ReportBlock {
                ssrc: 0x5e1a_2b3c,
                fraction_lost: 12,
                cumulative_lost: 42,
                highest_seq: 0x0001_04d2,
                jitter: 500,
                lsr: 0x1234_5678,
                dlsr: 0x0001_8000,
            }]
        );
        let RtcpPacket::SourceDescription(chunks) = packets[1].clone() else {
            panic!("{packets:?}");
        };
        let chunks: Vec<SdesChunk> = chunks.collect();
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].ssrc, 0x5e1a_2b3d);
        assert_eq!(chunks[0].cname(), Some(&b"edgebox"[..]));
        assert_eq!(chunks[0].items().collect::<Vec<_>>(), [(SDES_CNAME, &b"edgebox"[..])]);
    }

    #[test]
    fn old_ffmpeg_sdes_without_terminator() {
        // Older libavformat sized the chunk as (6 + len + 3) / 4 words and
        // wrote no null when the item ended on a boundary: a 6-byte host name
        // leaves the item flush against the end of the packet.
        #[rustfmt::skip]
        let sdes = [
            0x81, 202, 0x00, 0x03,
            0x00, 0x00, 0x00, 0x07,
            0x01, 0x06, b'c', b'a', b'm', b'e', b'r', b'a',
        ];
        let packets = parse(&sdes);
        let [RtcpPacket::SourceDescription(chunks)] = &packets[..] else {
            panic!("{packets:?}");
        };
        let chunks: Vec<SdesChunk> = chunks.clone().collect();
        assert_eq!((chunks[0].ssrc, chunks[0].cname()), (7, Some(&b"camera"[..])));
    }

    #[test]
    fn ffmpeg_punch_packet() {
        // ff_rtp_send_punch_packets opens NAT bindings with a bare RR from
        // SSRC 0: no blocks, no SDES.
        let packets = parse(&[0x80, 201, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00]);
        assert!(matches!(&packets[..], [RtcpPacket::ReceiverReport { ssrc: 0, reports }] if reports.len() == 0));
    }

    #[test]
    fn sdes_with_several_chunks_and_items() {
        #[rustfmt::skip]
        let sdes = [
            0x83, 202, 0x00, 0x0a,
            // chunk 1: NAME then CNAME, terminator at 22, one more null to 24
            0x00, 0x00, 0x00, 0x01,
            0x02, 0x03, b'B', b'o', b'b',
            0x01, 0x07, b'b', b'@', b'h', b'o', b's', b't', b'1',
            0x00, 0x00,
            // chunk 2: no items at all, just the null word
            0x00, 0x00, 0x00, 0x02,
            0x00, 0x00, 0x00, 0x00,
            // chunk 3: TOOL and PRIV, no CNAME
            0x00, 0x00, 0x00, 0x03,
            0x06, 0x01, b'x', 0x08, 0x02, 0x01, b'p', 0x00,
        ];
        assert_eq!(sdes.len(), 44);
        let packets = parse(&sdes);
        let [RtcpPacket::SourceDescription(chunks)] = &packets[..] else {
            panic!();
        };
        let chunks: Vec<SdesChunk> = chunks.clone().collect();
        assert_eq!(chunks.len(), 3);
        assert_eq!((chunks[0].ssrc, chunks[0].cname()), (1, Some(&b"b@host1"[..])));
        assert_eq!(chunks[0].items().count(), 2);
        assert_eq!(
            (chunks[1].ssrc, chunks[1].cname(), chunks[1].items().count()),
            (2, None, 0)
        );
        assert_eq!(
            chunks[2].items().collect::<Vec<_>>(),
            [(6, &b"x"[..]), (8, &[0x01, b'p'][..])]
        );
        assert_eq!(chunks[2].cname(), None);
    }

    #[test]
    fn lone_feedback_as_ffmpeg_sends_it() {
        // ff_rtp_send_rtcp_feedback: a PLI and a NACK, no RR before them.
        #[rustfmt::skip]
        let fb = [
            0x81, 206, 0x00, 0x02, 0x5e, 0x1a, 0x2b, 0x3d, 0x5e, 0x1a, 0x2b, 0x3c,
            0x81, 205, 0x00, 0x03, 0x5e, 0x1a, 0x2b, 0x3d, 0x5e, 0x1a, 0x2b, 0x3c,
            0x00, 0x64, 0b1000_0000, 0b0000_0101,
        ];
        let packets = parse(&fb);
        assert_eq!(
            packets[0],
            RtcpPacket::Pli {
                sender_ssrc: 0x5e1a_2b3d,
                media_ssrc: 0x5e1a_2b3c
            }
        );
        let RtcpPacket::GenericNack {
            sender_ssrc,
            media_ssrc,
            nacks,
        } = &packets[1]
        else {
            panic!("{packets:?}");
        };
        assert_eq!((*sender_ssrc, *media_ssrc), (0x5e1a_2b3d, 0x5e1a_2b3c));
        assert_eq!(nacks.entries().collect::<Vec<_>>(), [(100, 0x8005)]);
        assert_eq!(nacks.lost().collect::<Vec<_>>(), [100, 101, 103, 116]);
    }

    #[test]
    fn nack_expansion() {
        let nack = |entries: &[(u16, u16)]| {
            let mut out = vec![0x81, 205, 0, 2 + entries.len() as u8, 0, 0, 0, 1, 0, 0, 0, 2];
            for (pid, blp) in entries {
                out.extend_from_slice(&pid.to_be_bytes());
                out.extend_from_slice(&blp.to_be_bytes());
            }
            out
        };
        let lost = |buf: &[u8]| -> Vec<u16> {
            match parse(buf).pop() {
                Some(RtcpPacket::GenericNack { nacks, .. }) => nacks.lost().collect(),
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(lost(&nack(&[(7, 0)])), [7]);
        assert_eq!(lost(&nack(&[(0, 0xffff)])), (0..=16).collect::<Vec<_>>());
        // Wraps past 65535.
        assert_eq!(lost(&nack(&[(65_534, 0b111)])), [65_534, 65_535, 0, 1]);
        // Several entries, in order, duplicates kept.
        assert_eq!(lost(&nack(&[(10, 1), (500, 0), (11, 0)])), [10, 11, 500, 11]);
        // An empty list breaks RFC 4585 but does no harm.
        assert_eq!(lost(&nack(&[])), Vec::<u16>::new());
        // An RR before it, as a well-behaved AVPF client sends.
        let mut out = Vec::new();
        receiver_report(&mut out, 1, &[block(0)]);
        out.extend(nack(&[(1, 0x8000)]));
        assert_eq!(lost(&out), [1, 17]);
    }

    #[test]
    fn other_types_are_skipped_by_length() {
        let mut out = Vec::new();
        receiver_report(&mut out, 1, &[]);
        // APP, subtype 3, name "TEST", 4 bytes of data
        out.extend_from_slice(&[0x83, 204, 0, 3, 0, 0, 0, 1, b'T', b'E', b'S', b'T', 1, 2, 3, 4]);
        // FIR (PSFB FMT 4): one FCI entry
        out.extend_from_slice(&[0x84, 206, 0, 4, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 9, 0, 0, 0]);
        // transport-wide CC (RTPFB FMT 15): opaque to us
        out.extend_from_slice(&[0x8f, 205, 0, 3, 0, 0, 0, 1, 0, 0, 0, 2, 0xaa, 0xbb, 0xcc, 0xdd]);
        // XR (207) with an empty body
        out.extend_from_slice(&[0x80, 207, 0, 0]);
        // A type nobody defined
        out.extend_from_slice(&[0x9f, 99, 0, 1, 1, 2, 3, 4]);
        sdes_cname(&mut out, 1, "c");
        let packets = parse(&out);
        assert_eq!(packets.len(), 7);
        assert_eq!(
            packets[1],
            RtcpPacket::Other {
                pt: PT_APP,
                count: 3,
                body: &[0, 0, 0, 1, b'T', b'E', b'S', b'T', 1, 2, 3, 4]
            }
        );
        assert!(matches!(packets[2], RtcpPacket::Other { pt: PT_PSFB, count: 4, body } if body.len() == 16));
        assert!(matches!(
            packets[3],
            RtcpPacket::Other {
                pt: PT_RTPFB,
                count: 15,
                ..
            }
        ));
        assert!(matches!(
            packets[4],
            RtcpPacket::Other {
                pt: 207,
                count: 0,
                body: []
            }
        ));
        assert!(matches!(
            packets[5],
            RtcpPacket::Other {
                pt: 99,
                count: 31,
                body: [1, 2, 3, 4]
            }
        ));
        assert!(matches!(packets[6], RtcpPacket::SourceDescription(_)));
    }

    #[test]
    fn padding() {
        // A padded last packet: BYE with 4 bytes of padding.
        let mut buf = Vec::new();
        receiver_report(&mut buf, 1, &[]);
        buf.extend_from_slice(&[0xa1, 203, 0, 2, 0, 0, 0, 5, 0, 0, 0, 4]);
        let packets = parse(&buf);
        assert!(matches!(&packets[1], RtcpPacket::Bye { ssrcs, reason: None } if ssrcs.len() == 1));

        // Padding that leaves a short reason; a padded SR whose blocks still fit.
        let bye = [0xa1, 203, 0, 2, 0, 0, 0, 5, 1, b'x', 0, 2];
        assert!(matches!(&parse(&bye)[0], RtcpPacket::Bye { reason: Some(b"x"), .. }));
        let mut sr = Vec::new();
        sender_report(&mut sr, 1, 2, 3, 4, 5, &[block(1)]);
        sr[0] |= 0x20;
        sr[3] += 1;
        sr.extend_from_slice(&[0, 0, 0, 4]);
        assert!(matches!(&parse(&sr)[0], RtcpPacket::SenderReport { reports, .. } if reports.len() == 1));

        // Padding on a packet that is not last is harmless, so accepted.
        let mut buf = vec![0xa0, 201, 0, 2, 0, 0, 0, 1, 0, 0, 0, 4];
        sdes_cname(&mut buf, 1, "c");
        assert_eq!(parse(&buf).len(), 2);

        // A count of 0, or one that eats into the header.
        let zero = [0xa0, 201, 0, 2, 0, 0, 0, 1, 0, 0, 0, 0];
        assert_eq!(
            parse_compound(&zero).unwrap_err(),
            RtcpError::Padding {
                offset: 0,
                count: 0,
                body: 8
            }
        );
        let big = [0xa0, 201, 0, 2, 0, 0, 0, 1, 0, 0, 0, 9];
        assert!(matches!(parse_compound(&big), Err(RtcpError::Padding { count: 9, .. })));
        // Padding that eats the SSRC the RR needs.
        let eats = [0xa0, 201, 0, 1, 0, 0, 0, 4];
        assert!(matches!(
            parse_compound(&eats),
            Err(RtcpError::Body { need: 8, have: 4, .. })
        ));
        // Exactly the whole body is allowed (an XR with only padding).
        assert!(matches!(
            parse(&[0xa0, 207, 0, 1, 0, 0, 0, 4])[..],
            [RtcpPacket::Other { body: [], .. }]
        ));
        // Padding that leaves part of a NACK entry.
        let nack = [0xa1, 205, 0, 3, 0, 0, 0, 1, 0, 0, 0, 2, 0, 7, 0, 2];
        assert!(matches!(
            parse_compound(&nack),
            Err(RtcpError::Body {
                what: "generic NACK list",
                ..
            })
        ));
    }

    // --- rejecting ------------------------------------------------------------

    #[test]
    fn header_errors() {
        assert_eq!(parse_compound(&[]).unwrap_err(), RtcpError::Empty);
        for v in [0u8, 1, 3] {
            let mut buf = FFMPEG_RR;
            buf[0] = v << 6 | 1;
            assert_eq!(
                parse_compound(&buf).unwrap_err(),
                RtcpError::Version { offset: 0, version: v }
            );
            // Also when a later packet is the bad one.
            let mut buf = FFMPEG_RR;
            buf[32] = v << 6 | 1;
            assert_eq!(
                parse_compound(&buf).unwrap_err(),
                RtcpError::Version { offset: 32, version: v }
            );
        }
        // The length field at its maximum on a 40-byte datagram.
        let mut buf = [0u8; 40];
        buf[..4].copy_from_slice(&[0x80, 201, 0xff, 0xff]);
        assert_eq!(
            parse_compound(&buf).unwrap_err(),
            RtcpError::Length {
                offset: 0,
                claimed: 262_144,
                available: 40
            }
        );
        // One word too long: the RR takes the SDES header as an extension,
        // and the SDES's SSRC is no header of version 2.
        let mut buf = FFMPEG_RR;
        buf[3] = 8;
        assert_eq!(
            parse_compound(&buf).unwrap_err(),
            RtcpError::Version { offset: 36, version: 1 }
        );
        // One word too short: no room for the block.
        let mut buf = FFMPEG_RR;
        buf[3] = 6;
        assert!(matches!(
            parse_compound(&buf),
            Err(RtcpError::Body { need: 32, have: 28, .. })
        ));
        // Trailing bytes that are not a packet.
        for extra in 1..4 {
            let mut buf = FFMPEG_RR.to_vec();
            buf.extend(std::iter::repeat_n(0x80, extra));
            assert_eq!(
                parse_compound(&buf).unwrap_err(),
                RtcpError::Truncated {
                    offset: 52,
                    have: extra
                }
            );
        }
    }

    #[test]
    fn counts_larger_than_the_packet() {
        // RR claiming 31 blocks in a packet that holds one.
        let mut buf = FFMPEG_RR;
        buf[0] = 0x80 | 31;
        assert_eq!(
            parse_compound(&buf).unwrap_err(),
            RtcpError::Body {
                offset: 0,
                pt: PT_RR,
                what: "SSRC and report blocks",
                need: 8 + 31 * 24,
                have: 32
            }
        );
        // SR with RC 2 and room for 1.
        let mut sr = Vec::new();
        sender_report(&mut sr, 1, 2, 3, 4, 5, &[block(1)]);
        sr[0] = 0x82;
        assert!(matches!(
            parse_compound(&sr),
            Err(RtcpError::Body {
                pt: PT_SR,
                need: 76,
                have: 52,
                ..
            })
        ));
        // SR too short for its sender info.
        assert!(matches!(
            parse_compound(&[0x80, 200, 0, 1, 0, 0, 0, 1]),
            Err(RtcpError::Body {
                pt: PT_SR,
                need: 28,
                ..
            })
        ));
        // SDES claiming 2 chunks, holding 1.
        let mut buf = FFMPEG_RR;
        buf[32] = 0x82;
        assert_eq!(
            parse_compound(&buf).unwrap_err(),
            RtcpError::Body {
                offset: 32,
                pt: PT_SDES,
                what: "SDES chunks",
                need: 24,
                have: 20
            }
        );
        // SDES item longer than the packet.
        let mut buf = FFMPEG_RR;
        buf[32 + 9] = 30;
        assert!(matches!(
            parse_compound(&buf),
            Err(RtcpError::Body {
                pt: PT_SDES,
                need: 40,
                have: 20,
                ..
            })
        ));
        // SDES item type as the last byte, with no length octet.
        let sdes = [0x81, 202, 0, 2, 0, 0, 0, 1, 0x02, 0x01, b'a', 0x05];
        assert!(matches!(parse_compound(&sdes), Err(RtcpError::Body { need: 13, .. })));
        // BYE counting more sources than it holds, and a reason overrunning.
        assert!(matches!(
            parse_compound(&[0x82, 203, 0, 1, 0, 0, 0, 1]),
            Err(RtcpError::Body {
                what: "BYE source list",
                ..
            })
        ));
        assert!(matches!(
            parse_compound(&[0x81, 203, 0, 2, 0, 0, 0, 1, 4, b'a', b'b', b'c']),
            Err(RtcpError::Body {
                what: "BYE reason",
                need: 13,
                have: 12,
                ..
            })
        ));
        // Feedback without both SSRCs.
        for pt in [PT_RTPFB, PT_PSFB] {
            for fmt in [1u8, 4, 15] {
                assert!(matches!(
                    parse_compound(&[0x80 | fmt, pt, 0, 1, 0, 0, 0, 1]),
                    Err(RtcpError::Body {
                        what: "feedback SSRCs",
                        need: 12,
                        have: 8,
                        ..
                    })
                ));
            }
        }
    }

    #[test]
    fn every_truncation_of_valid_datagrams() {
        let mut all = Vec::new();
        all.extend_from_slice(&FFMPEG_RR);
        sr_cname(&mut all, 5, 6, 7, 8, 9, "edge");
        sender_report(&mut all, 1, 2, 3, 4, 5, &[block(1), block(2)]);
        bye(&mut all, &[1, 2, 3], Some("gone away"));
        all.extend_from_slice(&[0x81, 205, 0, 3, 0, 0, 0, 1, 0, 0, 0, 2, 0, 9, 0xff, 0xff]);
        all.extend_from_slice(&[0x81, 206, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2]);
        all.extend_from_slice(&[0xa0, 204, 0, 3, 0, 0, 0, 1, b'n', b'a', b'm', b'e', 0, 0, 0, 4]);
        let total = walk(&all).unwrap();
        // Where packets start: cutting there leaves a shorter valid datagram.
        let mut boundaries = vec![0];
        while let Some(&at) = boundaries.last().filter(|&&at| at < all.len()) {
            boundaries.push(at + (usize::from(be16(&all, at + 2)) + 1) * 4);
        }
        for cut in 0..all.len() {
            let head = walk(&all[..cut]);
            assert_eq!(
                head.is_ok(),
                cut > 0 && boundaries.contains(&cut),
                "cut at {cut}: {head:?}"
            );
            // Drop the front instead: fine only from a packet start.
            let tail = walk(&all[cut..]);
            assert_eq!(tail.is_ok(), boundaries.contains(&cut), "from {cut}: {tail:?}");
        }
        assert_eq!(walk(&all), Ok(total));
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = Rng(0x5eed_0f7c_9e11);
        let mut accepted = 0;
        for _ in 0..50_000 {
            let n = rng.below(128);
            let buf = rng.bytes(n);
            accepted += usize::from(walk(&buf).is_ok());
        }
        // Uniform bytes almost never make version 2 with a fitting length.
        assert!(accepted < 1000, "{accepted}");
    }

    /// Datagrams of headers that pass the first checks (version 2, lengths
    /// that add up), random counts, types and bodies, so the body checks and
    /// the lazy views get most of the abuse.
    #[test]
    fn plausible_random_datagrams_never_panic() {
        let mut rng = Rng(0x0123_4567_89ab_cdef);
        let mut accepted = 0;
        let mut kinds = [0usize; 8];
        for _ in 0..50_000 {
            let mut buf = Vec::new();
            for _ in 0..1 + rng.below(4) {
                let words = rng.below(12);
                let pt = [200, 201, 202, 203, 204, 205, 206, 207][rng.below(8)];
                let flags = 0x80 | (rng.next() as u8 & 0x3f);
                buf.extend_from_slice(&[flags, pt, 0, words as u8]);
                let mut body = rng.bytes(words * 4);
                // Make small SDES lengths and pad counts likely.
                for b in body.iter_mut() {
                    if rng.below(3) == 0 {
                        *b &= 0x07;
                    }
                }
                buf.extend(body);
            }
            if let Ok(packets) = parse_compound(&buf) {
                accepted += 1;
                for p in packets {
                    let kind = match p {
                        RtcpPacket::SenderReport { .. } => 0,
                        RtcpPacket::ReceiverReport { .. } => 1,
                        RtcpPacket::SourceDescription(_) => 2,
                        RtcpPacket::Bye { .. } => 3,
                        RtcpPacket::GenericNack { .. } => 4,
                        RtcpPacket::Pli { .. } => 5,
                        RtcpPacket::Other { .. } => 6,
                    };
                    kinds[kind] += 1;
                }
            }
            let _ = walk(&buf);
        }
        assert!(accepted > 1000, "{accepted}");
        // Every kind of packet was reached.
        assert!(kinds[..7].iter().all(|&k| k > 0), "{kinds:?}");
    }

    #[test]
    fn mutated_valid_datagrams_never_panic() {
        let mut seed = Vec::new();
        seed.extend_from_slice(&FFMPEG_RR);
        sr_cname(&mut seed, 5, 6, 7, 8, 9, "streamalot");
        bye(&mut seed, &[5], None);
        seed.extend_from_slice(&[0x81, 205, 0, 3, 0, 0, 0, 1, 0, 0, 0, 2, 0, 9, 0xff, 0xff]);
        let mut rng = Rng(42);
        for _ in 0..50_000 {
            let mut buf = seed.clone();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(buf.len());
                match rng.below(4) {
                    0 => buf[at] = rng.next() as u8,
                    1 => buf[at] ^= 1 << rng.below(8),
                    2 => buf.truncate(at),
                    _ => buf.insert(at, rng.next() as u8),
                }
                if buf.is_empty() {
                    break;
                }
            }
            let _ = walk(&buf);
        }
    }

    #[test]
    fn errors_say_where() {
        let mut buf = FFMPEG_RR.to_vec();
        buf.extend_from_slice(&[0x80, 201, 0, 0]);
        let err = parse_compound(&buf).unwrap_err();
        assert_eq!(
            err.to_string(),
            "RTCP packet type 201 at offset 52 is 4 bytes, too short for its SSRC and report blocks (8 bytes)"
        );
    }
}

/// The generic NACK builder and the APP view, apart from the parser's own
/// tests above.
#[cfg(test)]
mod feedback_tests {
    use super::*;

    fn nacked(buf: &[u8]) -> (u32, u32, Vec<(u16, u16)>, Vec<u16>) {
        match parse_compound(buf).unwrap().next().unwrap() {
            RtcpPacket::GenericNack {
                sender_ssrc,
                media_ssrc,
                nacks,
            } => (
                sender_ssrc,
                media_ssrc,
                nacks.entries().collect(),
                nacks.lost().collect(),
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn nack_bytes() {
        let mut out = Vec::new();
        generic_nack(&mut out, 0x0102_0304, 0x0a0b_0c0d, &[100, 101, 116, 118]);
        #[rustfmt::skip]
        let want = [
            0x81, 205, 0, 4,
            0x01, 0x02, 0x03, 0x04,
            0x0a, 0x0b, 0x0c, 0x0d,
            0, 100, 0x80, 0x01, // 101 is bit 0, 116 bit 15; 118 is too far
            0, 118, 0, 0,
        ];
        assert_eq!(out, want);
        // Nothing lost, nothing written.
        let mut out = vec![9];
        generic_nack(&mut out, 1, 2, &[]);
        assert_eq!(out, [9]);
    }

    #[test]
    fn nack_round_trips_through_the_parser() {
        for lost in [
            vec![5u16],
            (0..17).collect(),
            (0..18).collect(),
            vec![65_534, 65_535, 0, 1, 20],
            vec![7, 7, 7, 8],
            vec![300, 10, 11, 299],
            (0..1000).map(|i| i * 3).collect(),
        ] {
            let mut out = Vec::new();
            generic_nack(&mut out, 1, 2, &lost);
            let (s, m, entries, back) = nacked(&out);
            assert_eq!((s, m), (1, 2));
            let mut want: Vec<u16> = lost.clone();
            want.dedup();
            let mut got = back.clone();
            got.dedup();
            // Every number asked for is in the packet, and nothing else.
            let mut a = want.clone();
            a.sort_unstable();
            a.dedup();
            let mut b = got.clone();
            b.sort_unstable();
            b.dedup();
            assert_eq!(a, b, "{lost:?}");
            assert!(entries.len() <= lost.len());
        }
        // Ascending runs pack 17 to an entry.
        let lost: Vec<u16> = (0..170).collect();
        let mut out = Vec::new();
        generic_nack(&mut out, 1, 2, &lost);
        assert_eq!(nacked(&out).2.len(), 10);
    }

    #[test]
    fn nack_longer_than_the_length_field_is_cut() {
        let lost: Vec<u16> = (0..70_000u32).map(|i| (i * 20) as u16).collect();
        let mut out = Vec::new();
        generic_nack(&mut out, 1, 2, &lost);
        assert_eq!(out.len(), 65_536 * 4);
        assert_eq!(nacked(&out).2.len(), 65_533);
    }

    #[test]
    fn app_packets() {
        let mut out = Vec::new();
        app(&mut out, 3, 0xdead_beef, *b"TEST", &[1, 2, 3]);
        assert_eq!(
            out,
            [0x83, 204, 0, 3, 0xde, 0xad, 0xbe, 0xef, b'T', b'E', b'S', b'T', 1, 2, 3, 0]
        );
        let packets: Vec<RtcpPacket<'_>> = parse_compound(&out).unwrap().collect();
        let a = packets[0].app().unwrap().unwrap();
        assert_eq!(
            a,
            App {
                subtype: 3,
                ssrc: 0xdead_beef,
                name: *b"TEST",
                data: &[1, 2, 3, 0]
            }
        );
        // Other packet types are not APP packets.
        let mut rr = Vec::new();
        receiver_report(&mut rr, 1, &[]);
        assert!(parse_compound(&rr).unwrap().next().unwrap().app().is_none());
        // An APP packet with no room for its name.
        let short = [0x80, 204, 0, 1, 0, 0, 0, 1];
        let p = parse_compound(&short).unwrap().next().unwrap();
        assert!(matches!(
            p.app(),
            Some(Err(RtcpError::Body {
                pt: PT_APP,
                need: 12,
                have: 8,
                ..
            }))
        ));
        // Subtypes keep five bits.
        let mut out = Vec::new();
        app(&mut out, 0xff, 1, *b"abcd", &[]);
        assert_eq!(out[0], 0x9f);
    }
}
