//! The RTP retransmission payload format (RFC 4588), without IO.
//!
//! A retransmission ("RTX") packet carries a lost packet again on a stream
//! of its own: its own SSRC, its own sequence numbers and its own payload
//! type (the one the SDP maps with `a=rtpmap:PT rtx/CLOCK`), with the
//! original sequence number (OSN) in the first two payload bytes and the
//! original payload after them (RFC 4588 section 4). The timestamp and the
//! marker are the original packet's.
//!
//! A sender never copies the payload to make one: [`header`] writes the 12
//! header bytes and the OSN into one 14-byte array, and the payload goes
//! out behind it as the same spans the original was sent from. A receiver
//! reads one with [`RtxPacket::parse`] and gets the original packet's
//! header back with [`RtxPacket::original`].
//!
//! Which stream an RTX packet repairs is not in the packet. Receivers tell
//! by the payload type (the `apt=` of the RTX payload type's `a=fmtp`,
//! [`Fmtp`]) and by the SSRC. GStreamer's `rtprtxreceive`, the receiver
//! behind `rtspsrc do-retransmission=true`, associates an RTX SSRC it has
//! not seen with the media stream whose NACKed sequence number matches the
//! first RTX packet's OSN (RFC 4588 section 5.3, SSRC multiplexing): it
//! needs no SSRC in the RTSP Transport reply, and gst-rtsp-server sends
//! none for its RTX stream. RTX packets that match no pending request
//! before association are dropped by it, which is harmless.

use crate::rtp::{self, Header, Packet, RtpError};

/// The original sequence number in front of the payload.
pub const OSN_LEN: usize = 2;

/// The bytes a sender writes in front of the original payload: the RTX
/// packet's RTP header and the OSN.
pub const PREFIX_LEN: usize = rtp::HEADER_LEN + OSN_LEN;

/// The encoding name of the format in `a=rtpmap`.
pub const ENCODING_NAME: &str = "rtx";

/// Why bytes are not an RTX packet, or an `a=fmtp` line not RTX parameters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RtxError {
    #[error("RTX packet: {0}")]
    Rtp(#[from] RtpError),
    #[error("RTX packet has {0} payload bytes, too few for the original sequence number")]
    NoOsn(usize),
    #[error("RTX fmtp has no apt= parameter: {0:?}")]
    NoApt(String),
    #[error("RTX fmtp parameter {0:?} is not a number in range")]
    BadParameter(String),
}

/// The header and OSN of the retransmission of the packet whose header is
/// `original` (a 12-byte fixed header as [`Header::emit`] writes it), sent
/// as packet `seq` of the RTX stream `ssrc` with payload type
/// `payload_type`. The original's marker and timestamp are kept (RFC 4588
/// section 4); padding, extension and CSRC bits are cleared since the
/// payload that follows is the original payload alone.
#[inline]
pub fn header(original: &[u8; rtp::HEADER_LEN], payload_type: u8, seq: u16, ssrc: u32) -> [u8; PREFIX_LEN] {
    let osn = [original[2], original[3]];
    let rtx = Header {
        marker: original[1] & 0x80 != 0,
        payload_type,
        sequence: seq,
        timestamp: u32::from_be_bytes([original[4], original[5], original[6], original[7]]),
        ssrc,
    };
    let mut out = [0; PREFIX_LEN];
    let (head, tail) = out.split_at_mut(rtp::HEADER_LEN);
    rtx.emit(head.try_into().expect("split at the header length"));
    tail.copy_from_slice(&osn);
    out
}

/// A received RTX packet: its own header, the original sequence number and
/// the original payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtxPacket<'a> {
    /// The RTX packet's own header: the RTX SSRC, sequence and payload type.
    pub header: Header,
    pub osn: u16,
    /// The original payload, padding removed.
    pub payload: &'a [u8],
}

impl<'a> RtxPacket<'a> {
    /// Checks `packet` as RTP and splits off the OSN.
    ///
    /// An RTX packet with an empty original payload is valid (RFC 4588
    /// section 4: the payload may be empty but the OSN is always there); one
    /// too short for the OSN is an error. CSRCs and header extensions are
    /// skipped as in any RTP packet.
    pub fn parse(packet: &'a [u8]) -> Result<RtxPacket<'a>, RtxError> {
        let view = Packet::new_checked(packet)?;
        let header = Header::parse(&view)?;
        let body = &packet[view.header_len()..packet.len() - view.padding_len()];
        let Some((osn, payload)) = body.split_first_chunk::<OSN_LEN>() else {
            return Err(RtxError::NoOsn(body.len()));
        };
        Ok(RtxPacket {
            header,
            osn: u16::from_be_bytes(*osn),
            payload,
        })
    }

    /// The header of the packet this one repairs: the original sequence
    /// number, payload type `apt` and SSRC `media_ssrc` (which the receiver
    /// knows from the association), with this packet's timestamp and marker.
    pub fn original(&self, apt: u8, media_ssrc: u32) -> Header {
        Header {
            sequence: self.osn,
            payload_type: apt,
            ssrc: media_ssrc,
            ..self.header
        }
    }
}

/// The parameters of an RTX payload type's `a=fmtp` (RFC 4588 section 8.1):
/// `apt=` the payload type it repairs and, optionally, `rtx-time=` how long
/// in milliseconds the sender keeps packets to send again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fmtp {
    pub apt: u8,
    pub rtx_time_ms: Option<u32>,
}

impl Fmtp {
    /// Parses the parameters, the text after `a=fmtp:PT `. Names are
    /// case-insensitive and unknown ones are ignored, as RFC 4588 asks;
    /// whitespace around `;` and `=` is tolerated because SDP writers are
    /// sloppy with it.
    pub fn parse(params: &str) -> Result<Fmtp, RtxError> {
        let mut apt = None;
        let mut rtx_time_ms = None;
        for p in params.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = p.split_once('=').unwrap_or((p, ""));
            let (name, value) = (name.trim(), value.trim());
            let bad = || RtxError::BadParameter(p.chars().take(64).collect());
            if name.eq_ignore_ascii_case("apt") {
                apt = Some(value.parse::<u8>().ok().filter(|pt| *pt < 128).ok_or_else(bad)?);
            } else if name.eq_ignore_ascii_case("rtx-time") {
                rtx_time_ms = Some(value.parse::<u32>().map_err(|_| bad())?);
            }
        }
        let apt = apt.ok_or_else(|| RtxError::NoApt(params.chars().take(64).collect()))?;
        Ok(Fmtp { apt, rtx_time_ms })
    }

    /// The `a=fmtp` attribute value for RTX payload type `rtx_pt`:
    /// `PT apt=APT;rtx-time=MS`, as gst-rtsp-server writes it.
    pub fn attribute(&self, rtx_pt: u8) -> String {
        match self.rtx_time_ms {
            Some(ms) => format!("{rtx_pt} apt={};rtx-time={ms}", self.apt),
            None => format!("{rtx_pt} apt={}", self.apt),
        }
    }
}

/// The `a=rtpmap` attribute value of RTX payload type `rtx_pt` for a
/// stream with clock rate `clock_rate`: `PT rtx/CLOCK` (the RTX stream uses
/// its original's clock, RFC 4588 section 8.1).
pub fn rtpmap(rtx_pt: u8, clock_rate: u32) -> String {
    format!("{rtx_pt} {ENCODING_NAME}/{clock_rate}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::Rng;

    fn original(seq: u16, marker: bool) -> [u8; rtp::HEADER_LEN] {
        Header {
            marker,
            payload_type: 96,
            sequence: seq,
            timestamp: 0x1122_3344,
            ssrc: 0xaaaa_bbbb,
        }
        .to_bytes()
    }

    #[test]
    fn header_keeps_timestamp_and_marker_and_carries_the_osn() {
        let h = header(&original(0xbeef, true), 97, 7, 0x0102_0304);
        #[rustfmt::skip]
        let want = [
            0x80, 0x80 | 97, 0x00, 0x07,
            0x11, 0x22, 0x33, 0x44,
            0x01, 0x02, 0x03, 0x04,
            0xbe, 0xef,
        ];
        assert_eq!(h, want);
        // Without the marker, and with a payload type past 7 bits masked.
        let h = header(&original(1, false), 0xff, 0xffff, 5);
        assert_eq!(&h[..4], &[0x80, 0x7f, 0xff, 0xff]);
        assert_eq!(&h[12..], &[0, 1]);
    }

    #[test]
    fn parse_reads_what_header_wrote_and_restores_the_original() {
        let payload = b"original payload bytes";
        let mut packet = header(&original(4242, true), 97, 9, 77).to_vec();
        packet.extend_from_slice(payload);
        let rtx = RtxPacket::parse(&packet).unwrap();
        assert_eq!(
            (rtx.header.ssrc, rtx.header.sequence, rtx.header.payload_type),
            (77, 9, 97)
        );
        assert_eq!((rtx.osn, rtx.payload), (4242, &payload[..]));
        let back = rtx.original(96, 0xaaaa_bbbb).to_bytes();
        assert_eq!(back, original(4242, true));
    }

    #[test]
    fn empty_original_payload_is_fine_but_a_missing_osn_is_not() {
        let packet = header(&original(3, false), 97, 1, 2);
        assert_eq!(RtxPacket::parse(&packet).unwrap().payload, &[] as &[u8]);
        assert_eq!(RtxPacket::parse(&packet[..13]), Err(RtxError::NoOsn(1)));
        assert_eq!(RtxPacket::parse(&packet[..12]), Err(RtxError::NoOsn(0)));
        assert!(matches!(
            RtxPacket::parse(&packet[..11]),
            Err(RtxError::Rtp(RtpError::Short(11)))
        ));
        // Padding that leaves less than the OSN.
        let mut padded = packet[..12].to_vec();
        padded[0] |= 0x20;
        padded.extend_from_slice(&[0xab, 0, 2]);
        assert_eq!(RtxPacket::parse(&padded), Err(RtxError::NoOsn(1)));
    }

    #[test]
    fn csrcs_and_extensions_are_skipped() {
        // What another server may send: one CSRC, a one-word extension.
        let mut p = original(0, false).to_vec();
        p[0] = 0x80 | 0x10 | 1;
        p.extend_from_slice(&[0, 0, 0, 9]);
        p.extend_from_slice(&[0xbe, 0xde, 0, 1, 1, 2, 3, 4]);
        p.extend_from_slice(&[0x12, 0x34, 0xca, 0xfe]);
        let rtx = RtxPacket::parse(&p).unwrap();
        assert_eq!((rtx.osn, rtx.payload), (0x1234, &[0xca, 0xfe][..]));
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = Rng(0x7274_7821);
        for _ in 0..20_000 {
            let n = rng.below(40);
            let mut b = rng.bytes(n);
            if let Some(f) = b.first_mut() {
                *f = 0x80 | (*f & 0x3f);
            }
            if let Ok(p) = RtxPacket::parse(&b) {
                assert!(p.payload.len() + OSN_LEN + rtp::HEADER_LEN <= b.len());
            }
        }
    }

    #[test]
    fn fmtp_as_gstreamer_writes_it_and_as_others_do() {
        assert_eq!(
            Fmtp::parse("apt=96;rtx-time=500"),
            Ok(Fmtp {
                apt: 96,
                rtx_time_ms: Some(500)
            })
        );
        assert_eq!(
            Fmtp::parse(" APT = 101 ; foo=bar;"),
            Ok(Fmtp {
                apt: 101,
                rtx_time_ms: None
            })
        );
        assert!(matches!(Fmtp::parse("rtx-time=3000"), Err(RtxError::NoApt(_))));
        assert!(matches!(Fmtp::parse("apt=128"), Err(RtxError::BadParameter(_))));
        assert!(matches!(
            Fmtp::parse("apt=96;rtx-time=-1"),
            Err(RtxError::BadParameter(_))
        ));
        assert!(matches!(Fmtp::parse("apt"), Err(RtxError::BadParameter(_))));
        let f = Fmtp {
            apt: 96,
            rtx_time_ms: Some(500),
        };
        assert_eq!(f.attribute(97), "97 apt=96;rtx-time=500");
        assert_eq!(Fmtp::parse(f.attribute(97).split_once(' ').unwrap().1), Ok(f));
        assert_eq!(Fmtp { rtx_time_ms: None, ..f }.attribute(99), "99 apt=96");
        assert_eq!(rtpmap(97, 90_000), "97 rtx/90000");
    }
}
