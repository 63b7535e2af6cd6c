//! RTP as it appears on the wire, and ffmpeg's RTP muxer as the reference for
//! what a hint track should send.
//!
//! [`RtpPacket::parse`] reads packets here, not with `proto::rtp`, which
//! writes the server's headers: what checks the server's packets must not be
//! the code that made them.
//!
//! [`ffmpeg_rtp`] runs `ffmpeg -i FILE -map STREAM -c copy -f rtp` against
//! UDP sockets of our own and returns every packet it sent. ffmpeg's hinter
//! (`-movflags +rtphint`) packetizes with that same RTP muxer, so the loader's
//! packets for a hint track must equal these payload for payload.

use std::net::UdpSocket;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use loader::{Movie, Track};

use crate::{describe, require_tool, run};

/// Packet size (RTP header included) that ffmpeg's mov muxer gives the RTP
/// muxer it hints with (`RTP_MAX_PACKET_SIZE` in libavformat's movenc.h). The
/// `rtp://` protocol would otherwise use the UDP maximum of 1472 bytes and
/// split large frames at other places; `-packetsize` makes the two agree.
pub const HINT_PACKET_SIZE: usize = 1450;

/// One RTP packet: the header fields the tests compare, and the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpPacket {
    pub marker: bool,
    pub payload_type: u8,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    pub payload: Vec<u8>,
}

impl RtpPacket {
    /// Parses a datagram (RFC 3550 section 5.1): the fixed header, then CSRCs,
    /// a header extension and padding, all skipped.
    pub fn parse(datagram: &[u8]) -> Result<RtpPacket, String> {
        let d = datagram;
        if d.len() < 12 {
            return Err(format!("{} bytes is too short for an RTP header", d.len()));
        }
        if d[0] >> 6 != 2 {
            return Err(format!("RTP version {} (expected 2)", d[0] >> 6));
        }
        let padding = d[0] & 0x20 != 0;
        let extension = d[0] & 0x10 != 0;
        let csrc_count = usize::from(d[0] & 0x0f);
        let mut start = 12 + 4 * csrc_count;
        if extension {
            let ext = d.get(start..start + 4).ok_or("header extension runs past the packet")?;
            start += 4 + 4 * usize::from(u16::from_be_bytes([ext[2], ext[3]]));
        }
        let mut end = d.len();
        if padding {
            end = end
                .checked_sub(usize::from(d[d.len() - 1]))
                .ok_or("padding longer than the packet")?;
        }
        if start > end {
            return Err(format!("header of {start} bytes but only {end} bytes before padding"));
        }
        Ok(RtpPacket {
            marker: d[1] & 0x80 != 0,
            payload_type: d[1] & 0x7f,
            sequence: u16::from_be_bytes([d[2], d[3]]),
            timestamp: u32::from_be_bytes([d[4], d[5], d[6], d[7]]),
            ssrc: u32::from_be_bytes([d[8], d[9], d[10], d[11]]),
            payload: d[start..end].to_vec(),
        })
    }

    /// Serializes the packet with a plain 12-byte header.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(12 + self.payload.len());
        out.push(0x80);
        out.push(u8::from(self.marker) << 7 | self.payload_type & 0x7f);
        out.extend_from_slice(&self.sequence.to_be_bytes());
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.ssrc.to_be_bytes());
        out.extend_from_slice(&self.payload);
        out
    }

    /// The packet the loader's recipe `p` describes, with SSRC 0.
    pub fn from_recipe(movie: &Movie, p: &loader::Packet) -> RtpPacket {
        RtpPacket {
            marker: p.marker,
            payload_type: p.payload_type,
            sequence: p.sequence,
            timestamp: p.timestamp,
            ssrc: 0,
            payload: p.payload_bytes(movie.data()),
        }
    }
}

/// Every packet of hint track `track_id`, as the loader would send it.
pub fn loader_packets(movie: &Movie, track_id: u32) -> Vec<RtpPacket> {
    movie
        .packets(track_id)
        .unwrap_or_else(|e| panic!("hint track {track_id}: {e}"))
        .enumerate()
        .map(|(i, p)| {
            let p = p.unwrap_or_else(|e| panic!("hint track {track_id}, packet {i}: {e}"));
            RtpPacket::from_recipe(movie, &p)
        })
        .collect()
}

/// The sender packet count of the last RTCP sender report (RFC 3550 section
/// 6.4.1) in a compound RTCP datagram, if it has one.
pub fn sender_report_count(datagram: &[u8]) -> Option<u32> {
    let mut count = None;
    let mut rest = datagram;
    while rest.len() >= 4 && rest[0] >> 6 == 2 {
        let len = 4 * (usize::from(u16::from_be_bytes([rest[2], rest[3]])) + 1);
        let packet = rest.get(..len)?;
        // Sender report: header, SSRC, NTP time (8), RTP time, packet count.
        if packet[1] == 200 && packet.len() >= 24 {
            count = Some(u32::from_be_bytes([packet[20], packet[21], packet[22], packet[23]]));
        }
        rest = &rest[len..];
    }
    count
}

/// Which input stream of ffmpeg a hint track packetizes, as a `-map`
/// specifier (`0:v:0`, `0:a:1`): its `tref/hint` names the media track, whose
/// handler says video or audio, and ffmpeg numbers each kind's streams in
/// track order (it exposes hint tracks as data streams, counted in neither).
pub fn ffmpeg_stream_for(movie: &Movie, hint: &Track) -> String {
    let media_id = *hint
        .references
        .first()
        .unwrap_or_else(|| panic!("hint track {} has no tref/hint", hint.id));
    let media = movie
        .track(media_id)
        .unwrap_or_else(|| panic!("hint track {} references missing track {media_id}", hint.id));
    let kind = match &media.handler.0 {
        b"vide" => "v",
        b"soun" => "a",
        other => panic!(
            "hint track {} packetizes a {:?} track",
            hint.id,
            String::from_utf8_lossy(other)
        ),
    };
    let index = movie
        .tracks()
        .iter()
        .take_while(|t| t.id != media_id)
        .filter(|t| t.handler == media.handler)
        .count();
    format!("0:{kind}:{index}")
}

/// How many AAC frames the movie's audio hint track carries.
///
/// ffmpeg's RTP muxer, and so its hinter, gathers AAC frames into packets
/// and drops the frames still waiting at the end of the stream: a hinted
/// movie never sends its last few audio frames. What a client receives is
/// the file's audio up to this many frames.
pub fn hinted_aac_frames(movie: &Movie) -> usize {
    let hint = movie
        .hint_tracks()
        .find(|h| ffmpeg_stream_for(movie, h) == "0:a:0")
        .expect("an audio hint track");
    loader_packets(movie, hint.id)
        .iter()
        .map(|p| aac_frames_in(&p.payload))
        .sum()
}

/// The number of AAC frames in an RTP payload in the `AAC-hbr` mode ffmpeg
/// uses (RFC 3640 section 3.3.6): a 16-bit AU-headers-length in bits, then one
/// 16-bit header (13-bit size, 3-bit index) per frame.
pub fn aac_frames_in(payload: &[u8]) -> usize {
    assert!(payload.len() >= 2, "AAC RTP payload of {} bytes", payload.len());
    usize::from(u16::from_be_bytes([payload[0], payload[1]])) / 16
}

/// What ffmpeg's RTP muxer sent for one stream.
#[derive(Debug)]
pub struct FfmpegRtp {
    pub packets: Vec<RtpPacket>,
    /// The SDP ffmpeg printed for the stream.
    pub sdp: String,
}

/// How many times [`ffmpeg_rtp`] runs ffmpeg again after losing packets.
const ATTEMPTS: usize = 3;

/// Runs `ffmpeg -i file -map stream -c copy -f rtp` and captures what it sends.
///
/// ffmpeg sends as fast as it can. Loopback UDP does not reorder, but a
/// receiver that falls behind loses datagrams, so the sockets get large
/// receive buffers and their own reader threads, started before ffmpeg; and
/// ffmpeg is asked for an RTCP BYE at the end (`-rtpflags send_bye`), which
/// comes with a sender report counting every packet it sent. A capture with a
/// sequence gap or fewer packets than that count is taken again.
pub fn ffmpeg_rtp(file: &Path, stream: &str) -> FfmpegRtp {
    require_tool("ffmpeg");
    let mut problems = Vec::new();
    for _ in 0..ATTEMPTS {
        match capture_once(file, stream) {
            Ok(capture) => return capture,
            Err(why) => problems.push(why),
        }
    }
    panic!(
        "could not capture ffmpeg's RTP for {} stream {stream} in {ATTEMPTS} attempts:\n  {}",
        file.display(),
        problems.join("\n  ")
    );
}

fn capture_once(file: &Path, stream: &str) -> Result<FfmpegRtp, String> {
    let (rtp, rtcp) = bind_pair()?;
    let port = rtp.local_addr().map_err(|e| e.to_string())?.port();
    let done = Arc::new(AtomicBool::new(false));
    let rtp_reader = reader(rtp, done.clone());
    let rtcp_reader = reader(rtcp, done.clone());
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-nostdin", "-loglevel", "error", "-i"])
        .arg(file)
        .args(["-map", stream, "-c", "copy", "-f", "rtp"])
        .args(["-packetsize", &HINT_PACKET_SIZE.to_string()])
        .args(["-rtpflags", "send_bye"])
        .arg(format!("rtp://127.0.0.1:{port}"));
    let out = run(&mut cmd);
    done.store(true, Ordering::Release);
    let datagrams = rtp_reader.join().expect("RTP reader thread");
    let rtcp = rtcp_reader.join().expect("RTCP reader thread");
    if !out.status.success() {
        // Not a capture problem: no point trying again.
        panic!(
            "{} failed ({}):\n{}",
            describe(&cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let packets = datagrams
        .iter()
        .enumerate()
        .map(|(i, d)| RtpPacket::parse(d).map_err(|e| format!("datagram {i} from ffmpeg: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    for (i, pair) in packets.windows(2).enumerate() {
        if pair[1].sequence != pair[0].sequence.wrapping_add(1) {
            return Err(format!(
                "packets lost or reordered: sequence {} follows {} at packet {}",
                pair[1].sequence,
                pair[0].sequence,
                i + 1
            ));
        }
    }
    let sent = rtcp.iter().filter_map(|d| sender_report_count(d)).next_back();
    match sent {
        Some(n) if n as usize == packets.len() => {}
        Some(n) => return Err(format!("ffmpeg reports {n} packets sent, {} arrived", packets.len())),
        None => return Err("no RTCP sender report arrived with ffmpeg's BYE".into()),
    }
    Ok(FfmpegRtp {
        packets,
        sdp: String::from_utf8_lossy(&out.stdout).into_owned(),
    })
}

/// Binds an RTP socket on 127.0.0.1 and its RTCP socket on the next port up,
/// where ffmpeg sends RTCP.
fn bind_pair() -> Result<(UdpSocket, UdpSocket), String> {
    let mut last = String::new();
    for _ in 0..50 {
        let rtp = bind_with_big_buffer(0)?;
        let port = rtp.local_addr().map_err(|e| e.to_string())?.port();
        let Some(next) = port.checked_add(1) else { continue };
        match bind_with_big_buffer(next) {
            Ok(rtcp) => return Ok((rtp, rtcp)),
            Err(e) => last = e,
        }
    }
    Err(format!("no free pair of adjacent UDP ports on 127.0.0.1 ({last})"))
}

/// A UDP socket on 127.0.0.1:`port` with a receive buffer large enough for a
/// whole test clip (the kernel caps it at `net.core.rmem_max`).
pub fn bind_with_big_buffer(port: u16) -> Result<UdpSocket, String> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).map_err(|e| e.to_string())?;
    socket
        .set_recv_buffer_size(8 << 20)
        .map_err(|e| format!("SO_RCVBUF: {e}"))?;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    socket.bind(&addr.into()).map_err(|e| format!("bind {addr}: {e}"))?;
    Ok(socket.into())
}

/// Reads datagrams from `socket` on a thread of its own until `done` is set
/// and the socket has then been quiet for a moment.
fn reader(socket: UdpSocket, done: Arc<AtomicBool>) -> thread::JoinHandle<Vec<Vec<u8>>> {
    thread::spawn(move || {
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("set a read timeout");
        let mut datagrams = Vec::new();
        let mut buf = vec![0u8; 65_536];
        loop {
            match socket.recv(&mut buf) {
                Ok(n) => datagrams.push(buf[..n].to_vec()),
                // A timeout after ffmpeg has exited means the queue is drained.
                Err(_) if done.load(Ordering::Acquire) => break,
                Err(_) => {}
            }
        }
        datagrams
    })
}

/// Compares the loader's packets for a hint track with ffmpeg's for the same
/// stream: count, payload bytes, marker, and sequence and timestamp deltas
/// from the first packet (each sender picks its own starting values, and
/// payload type numbers, which are therefore not compared).
///
/// Returns a description of the first difference.
pub fn compare(loader: &[RtpPacket], ffmpeg: &[RtpPacket]) -> Result<(), String> {
    let (Some(l0), Some(f0)) = (loader.first(), ffmpeg.first()) else {
        return if loader.len() == ffmpeg.len() {
            Ok(())
        } else {
            Err(format!("loader has {} packets, ffmpeg {}", loader.len(), ffmpeg.len()))
        };
    };
    for (i, (l, f)) in loader.iter().zip(ffmpeg).enumerate() {
        let mut diffs = Vec::new();
        if l.payload != f.payload {
            diffs.push(payload_difference(&l.payload, &f.payload));
        }
        if l.marker != f.marker {
            diffs.push(format!("marker: loader {}, ffmpeg {}", l.marker, f.marker));
        }
        let (ls, fs) = (
            l.sequence.wrapping_sub(l0.sequence),
            f.sequence.wrapping_sub(f0.sequence),
        );
        if ls != fs {
            diffs.push(format!(
                "sequence delta from the first packet: loader {ls}, ffmpeg {fs}"
            ));
        }
        let (lt, ft) = (
            l.timestamp.wrapping_sub(l0.timestamp),
            f.timestamp.wrapping_sub(f0.timestamp),
        );
        if lt != ft {
            diffs.push(format!(
                "timestamp delta from the first packet: loader {}, ffmpeg {}",
                lt as i32, ft as i32
            ));
        }
        if !diffs.is_empty() {
            return Err(format!(
                "packet {i} (of loader {}, ffmpeg {}) differs:\n    {}",
                loader.len(),
                ffmpeg.len(),
                diffs.join("\n    ")
            ));
        }
    }
    if loader.len() != ffmpeg.len() {
        return Err(format!(
            "the first {} packets agree, but the loader has {} and ffmpeg {}",
            loader.len().min(ffmpeg.len()),
            loader.len(),
            ffmpeg.len()
        ));
    }
    Ok(())
}

fn payload_difference(loader: &[u8], ffmpeg: &[u8]) -> String {
    let at = loader
        .iter()
        .zip(ffmpeg)
        .position(|(a, b)| a != b)
        .unwrap_or(loader.len().min(ffmpeg.len()));
    let around = |p: &[u8]| hex(&p[at.saturating_sub(4).min(p.len())..(at + 12).min(p.len())]);
    format!(
        "payload: loader {} bytes, ffmpeg {} bytes, first difference at byte {at}\n      \
         loader [{}..]: {}\n      ffmpeg [{}..]: {}",
        loader.len(),
        ffmpeg.len(),
        at.saturating_sub(4),
        around(loader),
        at.saturating_sub(4),
        around(ffmpeg)
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_skips_csrcs_extension_and_padding() {
        let mut d = vec![
            0x80 | 0x20 | 0x10 | 2,
            0x80 | 97,
            0x12,
            0x34,
            0,
            0,
            0x10,
            0,
            0xaa,
            0xbb,
            0xcc,
            0xdd,
        ];
        d.extend_from_slice(&[1, 1, 1, 1, 2, 2, 2, 2]); // two CSRCs
        d.extend_from_slice(&[0xbe, 0xde, 0, 1, 9, 9, 9, 9]); // extension: one word
        d.extend_from_slice(b"payload");
        d.extend_from_slice(&[0, 0, 3]); // three bytes of padding
        let p = RtpPacket::parse(&d).expect("a valid packet");
        assert!(p.marker);
        assert_eq!(
            (p.payload_type, p.sequence, p.timestamp, p.ssrc),
            (97, 0x1234, 0x1000, 0xaabb_ccdd)
        );
        assert_eq!(p.payload, b"payload");
        assert_eq!(RtpPacket::parse(&p.to_bytes()), Ok(p));
    }

    #[test]
    fn parse_rejects_damage() {
        assert!(RtpPacket::parse(&[0x80; 11]).is_err());
        assert!(RtpPacket::parse(&[0x40; 12]).is_err(), "version 1");
        let mut too_much_padding = vec![0xa0, 96, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        too_much_padding.push(200);
        assert!(RtpPacket::parse(&too_much_padding).is_err());
    }

    #[test]
    fn sender_count_from_a_compound_packet() {
        let mut sr = vec![0x80, 200, 0, 6];
        sr.extend_from_slice(&[0; 16]); // SSRC, NTP time, RTP time
        sr.extend_from_slice(&113u32.to_be_bytes());
        sr.extend_from_slice(&[0; 4]); // octet count
        let bye = [0x81, 203, 0, 1, 0, 0, 0, 0];
        let compound = [sr, bye.to_vec()].concat();
        assert_eq!(sender_report_count(&compound), Some(113));
        assert_eq!(sender_report_count(&bye), None);
    }

    #[test]
    fn comparison_names_the_first_difference() {
        let packet = |seq: u16, payload: &[u8]| RtpPacket {
            marker: false,
            payload_type: 96,
            sequence: seq,
            timestamp: 0,
            ssrc: 0,
            payload: payload.to_vec(),
        };
        let ours = [packet(10, b"abc"), packet(11, b"defg")];
        let theirs = [packet(500, b"abc"), packet(501, b"dexg")];
        assert_eq!(compare(&ours, &ours), Ok(()));
        let e = compare(&ours, &theirs).expect_err("payloads differ");
        assert!(
            e.starts_with("packet 1 ") && e.contains("first difference at byte 2"),
            "{e}"
        );
        let e = compare(&ours, &theirs[..1]).expect_err("counts differ");
        assert!(e.contains("the loader has 2 and ffmpeg 1"), "{e}");
    }
}
