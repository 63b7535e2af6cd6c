//! Icecast clients for the tests: songs made by ffmpeg and their frames, a
//! listener that reads a stream until the server ends it (and strips its
//! ICY metadata), a source that sends frames at their pace, and the checks
//! that what a listener got is an unbroken run of a source's frames.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{require_tool, run_ok, scratch_dir};

/// An MP3 made by ffmpeg, `seconds` long, a tone of `hz` (CBR 128 kbit/s,
/// 44.1 kHz), titled `title`.
pub fn song(name: &str, seconds: u32, hz: u32, title: &str) -> PathBuf {
    require_tool("ffmpeg");
    let path = scratch_dir().join(name);
    run_ok(
        Command::new("ffmpeg")
            .args([
                "-hide_banner",
                "-nostdin",
                "-loglevel",
                "error",
                "-y",
                "-f",
                "lavfi",
                "-i",
            ])
            .arg(format!("sine=frequency={hz}:sample_rate=44100:duration={seconds}"))
            .args(["-c:a", "libmp3lame", "-b:a", "128k", "-metadata"])
            .arg(format!("title={title}"))
            .arg(&path),
    );
    path
}

/// The audio frames of `path` as ffmpeg copies them (no ID3 tag, no
/// Xing/Info frame): what a source sends of it.
pub fn frames_of(path: &Path) -> Vec<u8> {
    let out = path.with_extension("frames.mp3");
    run_ok(
        Command::new("ffmpeg")
            .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-i"])
            .arg(path)
            .args(["-c", "copy", "-f", "mp3", "-id3v2_version", "0", "-write_xing", "0"])
            .arg(&out),
    );
    std::fs::read(&out).unwrap()
}

/// The length of the MPEG-1/2 Layer III frame whose header starts `b`, and
/// its duration in microseconds; `None` if `b` does not start with one.
pub fn frame_at(b: &[u8]) -> Option<(usize, u64)> {
    let h = u32::from_be_bytes(b.get(..4)?.try_into().ok()?);
    if h >> 21 != 0x7ff || (h >> 17) & 3 != 1 {
        return None;
    }
    let mpeg1 = (h >> 19) & 3 == 3;
    let br_i = ((h >> 12) & 0xf) as usize;
    let sr_i = ((h >> 10) & 3) as usize;
    if br_i == 0 || br_i == 15 || sr_i == 3 {
        return None;
    }
    let (rates, srs, samples): (&[u32], [u32; 3], u32) = if mpeg1 {
        (
            &[32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320],
            [44_100, 48_000, 32_000],
            1152,
        )
    } else {
        (
            &[8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160],
            [22_050, 24_000, 16_000],
            576,
        )
    };
    let br = rates[br_i - 1] * 1000;
    let sr = srs[sr_i];
    let pad = (h >> 9) & 1;
    let len = (samples / 8 * br / sr + pad) as usize;
    Some((len, u64::from(samples) * 1_000_000 / u64::from(sr)))
}

/// The offsets of the frames of a stream of frames alone.
pub fn frame_offsets(stream: &[u8]) -> Vec<usize> {
    let mut at = 0;
    let mut offsets = Vec::new();
    while let Some((len, _)) = frame_at(&stream[at..]) {
        if at + len > stream.len() {
            break;
        }
        offsets.push(at);
        at += len;
    }
    assert_eq!(at, stream.len(), "a stream of frames alone");
    offsets
}

/// Checks that `got` is whole frames, each header where the last frame
/// ends, and the same bytes as a run of `frames` (a stream of frames alone)
/// that starts at one of its frames. Returns where that run starts and ends
/// in `frames`.
pub fn assert_contiguous_run(got: &[u8], frames: &[u8], what: &str) -> (usize, usize) {
    assert!(!got.is_empty(), "{what}: no audio");
    let mut at = 0;
    while at < got.len() {
        let Some((len, _)) = frame_at(&got[at..]) else {
            panic!("{what}: no frame header at byte {at} of {}", got.len());
        };
        assert!(at + len <= got.len(), "{what}: the last frame is cut short");
        at += len;
    }
    let first = &got[..frame_at(got).unwrap().0];
    let start = frame_offsets(frames)
        .into_iter()
        .find(|&o| frames[o..].starts_with(got))
        .unwrap_or_else(|| {
            let near = frame_offsets(frames)
                .into_iter()
                .find(|&o| frames[o..].starts_with(first));
            panic!(
                "{what}: {} bytes that are no run of the source's frames (its first frame is at {near:?})",
                got.len()
            )
        });
    (start, start + got.len())
}

/// What a listener received.
#[derive(Debug, Clone)]
pub struct Heard {
    pub head: String,
    /// The body as it came (audio and metadata).
    pub body: Vec<u8>,
}

impl Heard {
    pub fn status(&self) -> u16 {
        self.head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// The audio and the text of each metadata block that had any.
    pub fn strip(&self) -> (Vec<u8>, Vec<String>) {
        match self.header("icy-metaint") {
            Some(m) => strip(&self.body, m.parse().unwrap()),
            None => (self.body.clone(), Vec::new()),
        }
    }
}

/// The test's own reading of an ICY stream: `metaint` audio bytes, a length
/// byte, 16 times that many bytes of text, and so on.
pub fn strip(mut stream: &[u8], metaint: usize) -> (Vec<u8>, Vec<String>) {
    let (mut audio, mut blocks) = (Vec::new(), Vec::new());
    loop {
        let n = metaint.min(stream.len());
        audio.extend_from_slice(&stream[..n]);
        stream = &stream[n..];
        let Some((&len, rest)) = stream.split_first() else {
            break;
        };
        let len = usize::from(len) * 16;
        assert!(rest.len() >= len, "a metadata block cut short");
        if len > 0 {
            let text = &rest[..len];
            let text = &text[..text.iter().position(|&b| b == 0).unwrap_or(len)];
            blocks.push(String::from_utf8(text.to_vec()).expect("UTF-8 metadata"));
        }
        stream = &rest[len..];
    }
    (audio, blocks)
}

/// As [`strip`], and the audio offset at which each block with text came.
pub fn strip_with_offsets(mut stream: &[u8], metaint: usize) -> (Vec<String>, Vec<usize>) {
    let (mut blocks, mut offsets) = (Vec::new(), Vec::new());
    let mut audio = 0;
    loop {
        let n = metaint.min(stream.len());
        audio += n;
        stream = &stream[n..];
        let Some((&len, rest)) = stream.split_first() else {
            break;
        };
        let len = usize::from(len) * 16;
        assert!(rest.len() >= len, "a metadata block cut short");
        if len > 0 {
            let text = &rest[..len];
            let text = &text[..text.iter().position(|&b| b == 0).unwrap_or(len)];
            blocks.push(String::from_utf8(text.to_vec()).expect("UTF-8 metadata"));
            offsets.push(audio);
        }
        stream = &rest[len..];
    }
    (blocks, offsets)
}

/// `StreamTitle='...';`'s value, read as players read it.
pub fn stream_title(block: &str) -> Option<&str> {
    let rest = block.strip_prefix("StreamTitle='")?;
    rest.find("';").map(|end| &rest[..end])
}

/// Asks for `path` (with ICY metadata if `icy`) and reads until the server
/// closes, or for at most `limit`; a whole response with a length ends the
/// read too.
pub fn listen(addr: SocketAddr, path: &str, icy: bool, limit: Duration) -> Heard {
    let start = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let extra = if icy { "Icy-MetaData: 1\r\n" } else { "" };
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: test\r\nUser-Agent: icecast-test\r\n{extra}\r\n"
    )
    .unwrap();
    let mut all = Vec::new();
    let mut buf = vec![0; 64 * 1024];
    let mut head_len = None;
    while start.elapsed() < limit {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
            Err(e) => panic!("reading {path}: {e} after {} bytes", all.len()),
        }
        if head_len.is_none() {
            head_len = all.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4);
        }
        if let Some(h) = head_len {
            let head = String::from_utf8_lossy(&all[..h]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:")?.trim().parse::<usize>().ok());
            if length.is_some_and(|n| all.len() - h >= n) {
                break;
            }
        }
    }
    let h = head_len.unwrap_or_else(|| panic!("{path}: no response head: {:?}", String::from_utf8_lossy(&all)));
    Heard {
        head: String::from_utf8_lossy(&all[..h]).into_owned(),
        body: all[h..].to_vec(),
    }
}

/// Polls `path` until the server answers it with 200 (a mount on the air),
/// for at most `within`.
pub fn wait_for_mount(addr: SocketAddr, path: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(s, "HEAD {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
        let mut b = [0u8; 64];
        let n = s.read(&mut b).unwrap_or(0);
        if b[..n].starts_with(b"HTTP/1.1 200") {
            return;
        }
        assert!(Instant::now() < deadline, "{path} did not go on the air");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends a request head and returns its status and the whole answer read
/// before the server closed or a second passed.
pub fn request(addr: SocketAddr, text: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    s.write_all(text.as_bytes()).unwrap();
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        all.extend_from_slice(&buf[..n]);
        if all.windows(4).any(|w| w == b"\r\n\r\n") {
            let text = String::from_utf8_lossy(&all).to_ascii_lowercase();
            let len = text
                .lines()
                .find_map(|l| l.strip_prefix("content-length:")?.trim().parse::<usize>().ok())
                .unwrap_or(0);
            let h = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
            if all.len() >= h + len {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&all).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}

/// `Authorization: Basic` for `user:password`.
pub fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// A source of this test's own: `SOURCE` (or `PUT`) with `headers`, then
/// what the test sends with [`TestSource::send_frames`].
pub struct TestSource {
    pub stream: TcpStream,
    /// The answer's status line.
    pub answer: String,
}

impl TestSource {
    /// Opens `path` on `addr` with `request_line_method` and `headers`
    /// (each line ending in CRLF); returns once the server answered.
    pub fn open(addr: SocketAddr, method: &str, path: &str, headers: &str) -> TestSource {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let version = if method == "SOURCE" { "HTTP/1.0" } else { "HTTP/1.1" };
        write!(stream, "{method} {path} {version}\r\nHost: test\r\n{headers}\r\n").unwrap();
        let mut all = Vec::new();
        let mut b = [0u8; 1];
        while !all.ends_with(b"\r\n\r\n") {
            match stream.read(&mut b) {
                Ok(1) => all.push(b[0]),
                _ => break,
            }
        }
        TestSource {
            stream,
            answer: String::from_utf8_lossy(&all).into_owned(),
        }
    }

    /// Sends the whole frames of `frames` (a stream of frames alone, perhaps
    /// cut short) at the pace they play, `ahead` ahead of it. Stops at the
    /// first failed write.
    pub fn send_frames(&mut self, frames: &[u8], ahead: Duration) -> std::io::Result<()> {
        let start = Instant::now();
        let mut media = Duration::ZERO;
        let mut at = 0;
        while at < frames.len() {
            let (len, us) = frame_at(&frames[at..]).expect("a frame");
            if at + len > frames.len() {
                break;
            }
            self.stream.write_all(&frames[at..at + len])?;
            at += len;
            media += Duration::from_micros(us);
            let due = media.saturating_sub(ahead);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        Ok(())
    }
}
