//! Which RTP packets carry part of a key frame, read from the payload of the
//! codecs whose decoders need one: where a server may start a joining
//! viewer, and when a viewer has the first picture it can decode.
//!
//! - H.264 (RFC 6184): an IDR slice (NAL type 5), alone, inside a STAP-A
//!   (24) or starting an FU-A/FU-B (28, 29).
//! - H.265 (RFC 7798): an IRAP picture (NAL types 16 to 21: BLA, IDR, CRA),
//!   alone, in an aggregation packet (48) or starting a fragment (49).
//! - MPEG-4 Part 2 (RFC 6416): a VOP start code (`00 00 01 B6`) whose
//!   `vop_coding_type` is 0 (an I-VOP).
//!
//! Audio frames are all key frames, and so is every frame of a codec not
//! known here: the reflector forwards RTP without understanding it, and a
//! viewer of such a stream starts at the newest frame.
//!
//! Parameter sets and SEI sent in front of a key frame belong to its access
//! unit, so the replica starts a viewer at the first packet of that access
//! unit, not at the packet with the IDR slice in it.

/// What a stream's payload is, as far as starting a viewer goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    H264,
    H265,
    Mpeg4Video,
    /// Video of another codec: every frame is taken as a place to start.
    OtherVideo,
    /// Audio and anything else: every packet is a key frame.
    Audio,
}

impl Codec {
    /// The codec of an SDP medium of `kind` (`video`, `audio`, ...) whose
    /// `a=rtpmap` names `encoding`.
    pub fn of(kind: &str, encoding: Option<&str>) -> Codec {
        let encoding = encoding.unwrap_or_default();
        if !kind.eq_ignore_ascii_case("video") {
            return Codec::Audio;
        }
        if encoding.eq_ignore_ascii_case("H264") {
            Codec::H264
        } else if encoding.eq_ignore_ascii_case("H265") || encoding.eq_ignore_ascii_case("HEVC") {
            Codec::H265
        } else if encoding.eq_ignore_ascii_case("MP4V-ES") {
            Codec::Mpeg4Video
        } else {
            Codec::OtherVideo
        }
    }

    /// Whether the codec has key frames of its own to wait for (the video
    /// codecs read here); for the others every frame is one.
    pub fn has_key_frames(self) -> bool {
        matches!(self, Codec::H264 | Codec::H265 | Codec::Mpeg4Video)
    }

    /// Whether a packet of this codec carries (the start of) a key frame.
    /// `frame_start` says it is the first packet of its frame, which is all
    /// that codecs without key frames of their own need.
    pub fn is_key(self, payload: &[u8], frame_start: bool) -> bool {
        match self {
            Codec::H264 => h264_key(payload),
            Codec::H265 => h265_key(payload),
            Codec::Mpeg4Video => mpeg4_key(payload),
            Codec::OtherVideo | Codec::Audio => frame_start,
        }
    }
}

fn h264_key(p: &[u8]) -> bool {
    const IDR: u8 = 5;
    let Some(&first) = p.first() else { return false };
    match first & 0x1f {
        IDR => true,
        // STAP-A: (16-bit size, NAL unit) after the one-byte header.
        24 => aggregated(&p[1..], |nal| nal.first().is_some_and(|b| b & 0x1f == IDR)),
        // FU-A, FU-B: the FU header's start bit and type.
        28 | 29 => p.get(1).is_some_and(|h| h & 0x80 != 0 && h & 0x1f == IDR),
        _ => false,
    }
}

fn h265_key(p: &[u8]) -> bool {
    let irap = |t: u8| (16..=21).contains(&t);
    let Some(&first) = p.first() else { return false };
    match (first >> 1) & 0x3f {
        // Aggregation packet: a two-byte header, then (size, NAL unit).
        48 => p.len() > 2 && aggregated(&p[2..], |nal| nal.first().is_some_and(|b| irap((b >> 1) & 0x3f))),
        // Fragmentation unit: the FU header after the two-byte header.
        49 => p.get(2).is_some_and(|h| h & 0x80 != 0 && irap(h & 0x3f)),
        t => irap(t),
    }
}

/// Whether any NAL unit of an aggregation payload (16-bit sizes) passes
/// `test`. A truncated last unit is looked at as far as it goes.
fn aggregated(mut p: &[u8], test: impl Fn(&[u8]) -> bool) -> bool {
    while p.len() >= 2 {
        let size = usize::from(u16::from_be_bytes([p[0], p[1]]));
        let unit = &p[2..(2 + size).min(p.len())];
        if test(unit) {
            return true;
        }
        p = &p[(2 + size).min(p.len())..];
    }
    false
}

fn mpeg4_key(p: &[u8]) -> bool {
    p.windows(5).any(|w| w[..4] == [0, 0, 1, 0xb6] && w[4] >> 6 == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h264_key_frames_in_every_packetization() {
        let c = Codec::H264;
        assert!(c.is_key(&[0x65, 0x88], true), "single IDR slice");
        assert!(!c.is_key(&[0x41, 0x9a], true), "non-IDR slice");
        assert!(!c.is_key(&[0x67, 0x42], true), "an SPS alone is no picture");
        // STAP-A: SPS (2 bytes), PPS (1 byte), IDR (2 bytes).
        assert!(c.is_key(&[0x78, 0, 2, 0x67, 0x42, 0, 1, 0x68, 0, 2, 0x65, 0x88], true));
        assert!(!c.is_key(&[0x78, 0, 2, 0x67, 0x42, 0, 1, 0x68], true));
        // FU-A: start of an IDR, middle of one, start of a P slice.
        assert!(c.is_key(&[0x7c, 0x85, 1, 2], true));
        assert!(!c.is_key(&[0x7c, 0x05, 1, 2], false));
        assert!(!c.is_key(&[0x7c, 0x81, 1, 2], true));
        assert!(!c.is_key(&[], true));
        assert!(!c.is_key(&[0x78, 0, 200], true), "a size past the end");
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Payloads as ffmpeg's RTP packetizer sent them (`-pkt_size 300`) for
    /// libx264, libx265 and ffmpeg's MPEG-4 Part 2 encoder with a GOP of
    /// three frames; the long ones cut after their first bytes.
    #[test]
    fn key_frames_in_real_payloads() {
        let h264 = Codec::H264;
        // STAP-A with SPS and PPS, an FU-A start of an SEI, the FU-A start
        // of the IDR slice, an FU-A middle of it, a P slice alone.
        let stap = hex("18001867f4000a91964189b011000003000100000300140f122648000668ebc3c44844");
        assert!(!h264.is_key(&stap, true));
        assert!(!h264.is_key(&hex("1c8605ffff68dc45e9bde6d948b7962c"), false));
        assert!(h264.is_key(&hex("7c85888411ffe4122b50fffe11b01a0d"), false));
        assert!(!h264.is_key(&hex("7c05fa77f89b75fa1e047f87591a1055"), false));
        assert!(!h264.is_key(&hex("419a3b115f26eb82922312f2b4c1a964"), true));

        let h265 = Codec::H265;
        // AP with VPS, SPS and PPS; FU start of a prefix SEI; FU start of
        // the IDR_N_LP picture, an FU middle of it; a TRAIL_R picture.
        let ap = hex(
            "6001001740010c01ffff0408000003009e0800000300001e928090002b4201010408000003009e08\
             00000300001e90061020b2c9524995e02dc08080010000030001000003000a0800084401c172860c4224",
        );
        assert!(!h265.is_key(&ap, true));
        assert!(!h265.is_key(&hex("6201a705ffffffffffffffffe22ca2de"), false));
        assert!(h265.is_key(&hex("620194af1180479fca4c93f1a857eb74"), false));
        assert!(!h265.is_key(&hex("620114a760adbf9281cc5ca55cdb9efb"), false));
        assert!(!h265.is_key(&hex("0201d0097e10c623b5210c1178fffff0"), true));

        let mp4v = Codec::Mpeg4Video;
        // VOS, VO, VOL, user data and GOV headers, then the I-VOP; a P-VOP.
        let intra = hex(
            "000001b001000001b58913000001000000012000c48d8800550304081443000001b24c61766335392e33\
             372e313030000001b3001007000001b610c0d9c1",
        );
        assert!(mp4v.is_key(&intra, true));
        assert!(!mp4v.is_key(&hex("000001b651e0442b"), true));
        assert!(h264.has_key_frames() && h265.has_key_frames() && mp4v.has_key_frames());
        assert!(!Codec::Audio.has_key_frames() && !Codec::OtherVideo.has_key_frames());
    }

    #[test]
    fn h265_and_mpeg4_key_frames() {
        let c = Codec::H265;
        assert!(c.is_key(&[19 << 1, 1, 0xaf], true), "IDR_W_RADL");
        assert!(c.is_key(&[21 << 1, 1, 0xaf], true), "CRA");
        assert!(!c.is_key(&[1 << 1, 1, 0xaf], true), "TRAIL_R");
        assert!(c.is_key(&[49 << 1, 1, 0x80 | 19, 0], true), "FU start of an IDR");
        assert!(!c.is_key(&[49 << 1, 1, 19, 0], false), "FU middle");
        assert!(
            c.is_key(&[48 << 1, 1, 0, 2, 32 << 1, 1, 0, 2, 19 << 1, 1], true),
            "AP with VPS and IDR"
        );
        let m = Codec::Mpeg4Video;
        assert!(
            m.is_key(&[0, 0, 1, 0xb0, 1, 0, 0, 1, 0xb6, 0x10], true),
            "VOS then I-VOP"
        );
        assert!(!m.is_key(&[0, 0, 1, 0xb6, 0x50], true), "P-VOP");
        assert_eq!(Codec::of("audio", Some("MPEG4-GENERIC")), Codec::Audio);
        assert!(Codec::Audio.is_key(&[1, 2, 3], true));
        assert_eq!(Codec::of("video", Some("h264")), Codec::H264);
        assert_eq!(Codec::of("video", Some("VP8")), Codec::OtherVideo);
        assert!(!Codec::OtherVideo.is_key(&[1], false));
    }
}
