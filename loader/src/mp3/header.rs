//! MPEG audio frame headers (ISO/IEC 11172-3 and 13818-3, plus the
//! unofficial MPEG-2.5 extension): the four bytes in front of every frame.
//!
//! ```text
//! AAAAAAAA AAABBCCD EEEEFFGH IIJJKLMM
//! A sync (11 bits)   B version   C layer   D no CRC   E bit rate   F sample rate
//! G padding   H private   I channel mode   J mode extension   K copyright
//! L original   M emphasis
//! ```
//!
//! A header is only a candidate: eleven set bits turn up in any compressed
//! data, so the index never trusts one header alone (see the `sync` module).

use std::fmt;

/// MPEG audio version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// MPEG-1: 32, 44.1 and 48 kHz.
    Mpeg1,
    /// MPEG-2 low sampling frequencies: 16, 22.05 and 24 kHz.
    Mpeg2,
    /// MPEG-2.5 (Fraunhofer's extension, not in any standard): 8, 11.025 and
    /// 12 kHz. Its sync is one bit shorter, the version bits start at 00.
    Mpeg25,
}

/// MPEG audio layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layer {
    I,
    II,
    III,
}

/// Channel mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChannelMode {
    Stereo,
    JointStereo,
    /// Two independent mono channels.
    DualChannel,
    Mono,
}

impl ChannelMode {
    /// Channels decoded: 1 for mono, 2 otherwise.
    pub fn channels(self) -> u8 {
        if self == ChannelMode::Mono {
            1
        } else {
            2
        }
    }
}

/// De-emphasis to apply after decoding (almost always none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Emphasis {
    None,
    /// 50/15 µs.
    Ms50_15,
    /// The reserved value. Decoders such as ffmpeg ignore emphasis, so this is
    /// kept rather than rejected.
    Reserved,
    /// CCITT J.17.
    CcittJ17,
}

/// Why four bytes are not a usable frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// Fewer than four bytes left.
    Short,
    /// The 11 sync bits are not all set.
    NoSync,
    /// Version bits 01, which no standard assigns.
    ReservedVersion,
    /// Layer bits 00.
    ReservedLayer,
    /// Bit-rate index 15.
    BadBitRate,
    /// Sample-rate index 3.
    ReservedSampleRate,
    /// Bit-rate index 0: "free format", whose frame length is not in the header.
    FreeFormat,
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HeaderError::Short => "fewer than 4 bytes",
            HeaderError::NoSync => "no frame sync",
            HeaderError::ReservedVersion => "reserved MPEG version",
            HeaderError::ReservedLayer => "reserved layer",
            HeaderError::BadBitRate => "bit-rate index 15",
            HeaderError::ReservedSampleRate => "reserved sample rate",
            HeaderError::FreeFormat => "free-format bit rate",
        })
    }
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub version: Version,
    pub layer: Layer,
    /// A 16-bit CRC follows the header.
    pub crc: bool,
    /// Bit rate in bits per second.
    pub bit_rate: u32,
    /// Sample rate in Hz.
    pub sample_rate: u32,
    /// The frame carries one padding slot (4 bytes in Layer I, 1 otherwise).
    pub padding: bool,
    pub private: bool,
    pub channel_mode: ChannelMode,
    /// Joint-stereo mode extension bits, as they are.
    pub mode_extension: u8,
    pub copyright: bool,
    pub original: bool,
    pub emphasis: Emphasis,
}

/// Bit rates in kbit/s by `[table][index]`; index 0 (free format) and 15 (bad)
/// are not in the tables. Tables: MPEG-1 layers I, II, III, then MPEG-2/2.5
/// layer I, then MPEG-2/2.5 layers II and III (which share one).
const BIT_RATES: [[u16; 14]; 5] = [
    [32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448],
    [32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384],
    [32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320],
    [32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256],
    [8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160],
];

/// Sample rates in Hz by `[version][index]`.
const SAMPLE_RATES: [[u32; 3]; 3] = [
    [44_100, 48_000, 32_000],
    [22_050, 24_000, 16_000],
    [11_025, 12_000, 8_000],
];

impl FrameHeader {
    /// Parses the header at the start of `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<FrameHeader, HeaderError> {
        let Some(word) = bytes.first_chunk::<4>() else {
            return Err(HeaderError::Short);
        };
        FrameHeader::from_word(u32::from_be_bytes(*word))
    }

    /// Parses a header given as a big-endian word.
    pub fn from_word(h: u32) -> Result<FrameHeader, HeaderError> {
        if h >> 21 != 0x7ff {
            return Err(HeaderError::NoSync);
        }
        let version = match (h >> 19) & 3 {
            0 => Version::Mpeg25,
            1 => return Err(HeaderError::ReservedVersion),
            2 => Version::Mpeg2,
            _ => Version::Mpeg1,
        };
        let layer = match (h >> 17) & 3 {
            0 => return Err(HeaderError::ReservedLayer),
            1 => Layer::III,
            2 => Layer::II,
            _ => Layer::I,
        };
        let bit_rate_index = (h >> 12) & 0xf;
        let sample_rate_index = (h >> 10) & 3;
        // Check the sample rate before the bit rate: a reserved sample rate is
        // the surer sign of garbage, and free format is reported only for
        // headers that are otherwise whole.
        if sample_rate_index == 3 {
            return Err(HeaderError::ReservedSampleRate);
        }
        let bit_rate = match bit_rate_index {
            0 => return Err(HeaderError::FreeFormat),
            15 => return Err(HeaderError::BadBitRate),
            i => {
                let table = match (version, layer) {
                    (Version::Mpeg1, Layer::I) => 0,
                    (Version::Mpeg1, Layer::II) => 1,
                    (Version::Mpeg1, Layer::III) => 2,
                    (_, Layer::I) => 3,
                    (_, _) => 4,
                };
                u32::from(BIT_RATES[table][i as usize - 1]) * 1000
            }
        };
        let sample_rate = SAMPLE_RATES[match version {
            Version::Mpeg1 => 0,
            Version::Mpeg2 => 1,
            Version::Mpeg25 => 2,
        }][sample_rate_index as usize];
        Ok(FrameHeader {
            version,
            layer,
            crc: h & (1 << 16) == 0,
            bit_rate,
            sample_rate,
            padding: h & (1 << 9) != 0,
            private: h & (1 << 8) != 0,
            channel_mode: match (h >> 6) & 3 {
                0 => ChannelMode::Stereo,
                1 => ChannelMode::JointStereo,
                2 => ChannelMode::DualChannel,
                _ => ChannelMode::Mono,
            },
            mode_extension: ((h >> 4) & 3) as u8,
            copyright: h & (1 << 3) != 0,
            original: h & (1 << 2) != 0,
            emphasis: match h & 3 {
                0 => Emphasis::None,
                1 => Emphasis::Ms50_15,
                2 => Emphasis::Reserved,
                _ => Emphasis::CcittJ17,
            },
        })
    }

    /// PCM samples per channel the frame decodes to: 384 in Layer I, 1152 in
    /// Layer II and in MPEG-1 Layer III, 576 in MPEG-2/2.5 Layer III.
    pub fn samples(&self) -> u32 {
        match (self.layer, self.version) {
            (Layer::I, _) => 384,
            (Layer::II, _) | (Layer::III, Version::Mpeg1) => 1152,
            (Layer::III, _) => 576,
        }
    }

    /// The whole frame's length in bytes, header included.
    pub fn frame_len(&self) -> u32 {
        let pad = u32::from(self.padding);
        match self.layer {
            // 384 samples in slots of 4 bytes.
            Layer::I => (12 * self.bit_rate / self.sample_rate + pad) * 4,
            _ => self.samples() / 8 * self.bit_rate / self.sample_rate + pad,
        }
    }

    /// The frame's duration in nanoseconds, rounded down.
    pub fn duration_ns(&self) -> u64 {
        u64::from(self.samples()) * 1_000_000_000 / u64::from(self.sample_rate)
    }

    /// Bytes of Layer III side information after the header (and after the
    /// CRC, when there is one): where a Xing/Info header starts. `None` for
    /// layers I and II, which have none.
    pub fn side_info_len(&self) -> Option<usize> {
        if self.layer != Layer::III {
            return None;
        }
        Some(match (self.version, self.channel_mode) {
            (Version::Mpeg1, ChannelMode::Mono) => 17,
            (Version::Mpeg1, _) => 32,
            (_, ChannelMode::Mono) => 9,
            (_, _) => 17,
        })
    }

    /// Whether a frame with header `next` can follow one with this header in
    /// one stream: version, layer and sample rate stay; bit rate, padding and
    /// channel mode change freely (VBR, joint stereo). These are the fields
    /// ffmpeg's demuxer compares when it resynchronises.
    pub fn same_stream(&self, next: &FrameHeader) -> bool {
        self.version == next.version && self.layer == next.layer && self.sample_rate == next.sample_rate
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Version::Mpeg1 => "MPEG-1",
            Version::Mpeg2 => "MPEG-2",
            Version::Mpeg25 => "MPEG-2.5",
        })
    }
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Layer::I => "Layer I",
            Layer::II => "Layer II",
            Layer::III => "Layer III",
        })
    }
}

impl fmt::Display for FrameHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}, {} kbit/s, {} Hz, {:?}",
            self.version,
            self.layer,
            self.bit_rate / 1000,
            self.sample_rate,
            self.channel_mode
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(b: [u8; 4]) -> FrameHeader {
        FrameHeader::parse(&b).unwrap_or_else(|e| panic!("{b:02x?}: {e}"))
    }

    /// Lengths worked out by hand from ISO/IEC 11172-3 2.4.3.1 and 13818-3
    /// 2.4.2.3: slots = samples / 8 * bit rate / sample rate (Layer I: 12 *
    /// bit rate / sample rate slots of 4 bytes), plus the padding slot.
    #[test]
    fn every_version_and_layer() {
        // bytes, version, layer, bit rate, sample rate, samples, length
        type Case = ([u8; 4], Version, Layer, u32, u32, u32, u32);
        let cases: &[Case] = &[
            (
                [0xff, 0xfb, 0x90, 0xc0],
                Version::Mpeg1,
                Layer::III,
                128_000,
                44_100,
                1152,
                417,
            ),
            (
                [0xff, 0xfb, 0x92, 0xc0],
                Version::Mpeg1,
                Layer::III,
                128_000,
                44_100,
                1152,
                418,
            ),
            (
                [0xff, 0xfb, 0xe4, 0x00],
                Version::Mpeg1,
                Layer::III,
                320_000,
                48_000,
                1152,
                960,
            ),
            (
                [0xff, 0xfb, 0x18, 0x00],
                Version::Mpeg1,
                Layer::III,
                32_000,
                32_000,
                1152,
                144,
            ),
            (
                [0xff, 0xf3, 0x80, 0xc0],
                Version::Mpeg2,
                Layer::III,
                64_000,
                22_050,
                576,
                208,
            ),
            (
                [0xff, 0xf3, 0x14, 0xc0],
                Version::Mpeg2,
                Layer::III,
                8_000,
                24_000,
                576,
                24,
            ),
            (
                [0xff, 0xe3, 0x18, 0xc0],
                Version::Mpeg25,
                Layer::III,
                8_000,
                8_000,
                576,
                72,
            ),
            (
                [0xff, 0xe3, 0xe2, 0x00],
                Version::Mpeg25,
                Layer::III,
                160_000,
                11_025,
                576,
                1045,
            ),
            (
                [0xff, 0xfd, 0xa0, 0xc0],
                Version::Mpeg1,
                Layer::II,
                192_000,
                44_100,
                1152,
                626,
            ),
            (
                [0xff, 0xfd, 0xe8, 0x00],
                Version::Mpeg1,
                Layer::II,
                384_000,
                32_000,
                1152,
                1728,
            ),
            (
                [0xff, 0xf5, 0x90, 0x00],
                Version::Mpeg2,
                Layer::II,
                80_000,
                22_050,
                1152,
                522,
            ),
            (
                [0xff, 0xe5, 0x10, 0x00],
                Version::Mpeg25,
                Layer::II,
                8_000,
                11_025,
                1152,
                104,
            ),
            (
                [0xff, 0xff, 0x90, 0x00],
                Version::Mpeg1,
                Layer::I,
                288_000,
                44_100,
                384,
                312,
            ),
            (
                [0xff, 0xff, 0x92, 0x00],
                Version::Mpeg1,
                Layer::I,
                288_000,
                44_100,
                384,
                316,
            ),
            (
                [0xff, 0xff, 0xe4, 0x00],
                Version::Mpeg1,
                Layer::I,
                448_000,
                48_000,
                384,
                448,
            ),
            (
                [0xff, 0xf7, 0x90, 0x00],
                Version::Mpeg2,
                Layer::I,
                144_000,
                22_050,
                384,
                312,
            ),
            (
                [0xff, 0xe7, 0x18, 0x00],
                Version::Mpeg25,
                Layer::I,
                32_000,
                8_000,
                384,
                192,
            ),
        ];
        for &(b, version, layer, bit_rate, sample_rate, samples, len) in cases {
            let x = h(b);
            assert_eq!(
                (
                    x.version,
                    x.layer,
                    x.bit_rate,
                    x.sample_rate,
                    x.samples(),
                    x.frame_len()
                ),
                (version, layer, bit_rate, sample_rate, samples, len),
                "{b:02x?}"
            );
        }
    }

    #[test]
    fn fields() {
        let x = h([0xff, 0xfa, 0x91, 0x7e]);
        assert!(x.crc && !x.padding && x.private && x.copyright && x.original);
        assert_eq!(
            (x.channel_mode, x.mode_extension, x.emphasis),
            (ChannelMode::JointStereo, 3, Emphasis::Reserved)
        );
        let x = h([0xff, 0xfb, 0x90, 0x81]);
        assert!(!x.crc && !x.private && !x.copyright && !x.original);
        assert_eq!(
            (x.channel_mode, x.emphasis),
            (ChannelMode::DualChannel, Emphasis::Ms50_15)
        );
        assert_eq!(x.channel_mode.channels(), 2);
        assert_eq!(h([0xff, 0xfb, 0x90, 0x03]).emphasis, Emphasis::CcittJ17);
        assert_eq!(h([0xff, 0xfb, 0x90, 0xc0]).channel_mode.channels(), 1);
        // Duration: 1152 samples at 44.1 kHz is 26.122448... ms.
        assert_eq!(h([0xff, 0xfb, 0x90, 0xc0]).duration_ns(), 26_122_448);
        assert_eq!(h([0xff, 0xf3, 0x84, 0xc0]).duration_ns(), 24_000_000);
    }

    #[test]
    fn side_information_lengths() {
        assert_eq!(h([0xff, 0xfb, 0x90, 0x00]).side_info_len(), Some(32));
        assert_eq!(h([0xff, 0xfb, 0x90, 0xc0]).side_info_len(), Some(17));
        assert_eq!(h([0xff, 0xf3, 0x80, 0x40]).side_info_len(), Some(17));
        assert_eq!(h([0xff, 0xe3, 0x80, 0xc0]).side_info_len(), Some(9));
        assert_eq!(h([0xff, 0xfd, 0x90, 0x00]).side_info_len(), None);
    }

    #[test]
    fn invalid_headers() {
        let cases: &[(&[u8], HeaderError)] = &[
            (&[0xff, 0xfb, 0x90], HeaderError::Short),
            (&[0xfe, 0xfb, 0x90, 0x00], HeaderError::NoSync),
            (&[0xff, 0xdb, 0x90, 0x00], HeaderError::NoSync),
            (&[0xff, 0xeb, 0x90, 0x00], HeaderError::ReservedVersion),
            (&[0xff, 0xf9, 0x90, 0x00], HeaderError::ReservedLayer),
            (&[0xff, 0xfb, 0xf0, 0x00], HeaderError::BadBitRate),
            (&[0xff, 0xfb, 0x9c, 0x00], HeaderError::ReservedSampleRate),
            (&[0xff, 0xfb, 0x00, 0x00], HeaderError::FreeFormat),
        ];
        for &(b, e) in cases {
            assert_eq!(FrameHeader::parse(b), Err(e), "{b:02x?}");
        }
    }

    #[test]
    fn one_stream_keeps_version_layer_and_rate() {
        let a = h([0xff, 0xfb, 0x90, 0xc0]);
        assert!(a.same_stream(&h([0xff, 0xfa, 0xe2, 0x00]))); // bit rate, CRC, padding, mode
        assert!(!a.same_stream(&h([0xff, 0xfb, 0x94, 0xc0]))); // 48 kHz
        assert!(!a.same_stream(&h([0xff, 0xfd, 0x90, 0xc0]))); // Layer II
        assert!(!a.same_stream(&h([0xff, 0xf3, 0x90, 0xc0]))); // MPEG-2
    }
}
