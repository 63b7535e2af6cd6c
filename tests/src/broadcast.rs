//! What the `streamalot broadcast` tests share: short movies that make a
//! channel (made by ffmpeg, hinted with `-movflags +rtphint`), a scratch
//! directory with a playlist of them, the command itself, and a receiver of
//! plain RTP.

use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::{require_tool, scratch_dir, streamalot_binary, wait_with_timeout, COMMAND_TIMEOUT};

/// Frame rate and length of the channel movies.
pub const FPS: u32 = 25;
pub const SECONDS: u32 = 1;

/// The channel movies: `a`, `b` and `c` share the reference's layout (H.264
/// Main 160x120, 25 fps, a key frame every 10 frames, B-frames; AAC LC 48 kHz
/// stereo), each with a different picture; `mismatch` has 44.1 kHz audio;
/// `resized` is 176x144.
#[derive(Debug)]
pub struct ChannelMovies {
    pub a: PathBuf,
    pub b: PathBuf,
    pub c: PathBuf,
    pub mismatch: PathBuf,
    /// As `a` at 176x144: new H.264 parameter sets, the same layout.
    pub resized: PathBuf,
}

/// Makes the movies once per test process.
pub fn movies() -> &'static ChannelMovies {
    static MOVIES: OnceLock<ChannelMovies> = OnceLock::new();
    MOVIES.get_or_init(|| {
        require_tool("ffmpeg");
        let dir = scratch_dir().join("channel-movies");
        std::fs::create_dir_all(&dir).unwrap();
        let make = |name: &str, video: &str, size: &str, rate: u32| {
            let path = dir.join(name);
            let partial = dir.join(format!(".{name}.{}.partial.mp4", std::process::id()));
            let mut cmd = Command::new("ffmpeg");
            cmd.args([
                "-hide_banner",
                "-nostdin",
                "-loglevel",
                "error",
                "-y",
                "-f",
                "lavfi",
                "-i",
            ])
            .arg(format!("{video}=size={size}:rate={FPS}:duration={SECONDS}"))
            .args(["-f", "lavfi", "-i"])
            .arg(format!("sine=frequency=440:sample_rate={rate}:duration={SECONDS}"))
            .args([
                "-map",
                "0:v",
                "-map",
                "1:a",
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-profile:v",
                "main",
                "-level",
                "3.0",
                "-g",
                "10",
                "-bf",
                "2",
                "-sc_threshold",
                "0",
                "-pix_fmt",
                "yuv420p",
                "-c:a",
                "aac",
                "-b:a",
                "48k",
                "-ac",
                "2",
                "-movflags",
                "+rtphint",
                "-f",
                "mp4",
            ])
            .arg(&partial);
            let (child, what) = crate::spawn(&mut cmd);
            (path, partial, child, what)
        };
        let jobs = [
            make("a.mp4", "testsrc", "160x120", 48_000),
            make("b.mp4", "testsrc2", "160x120", 48_000),
            make("c.mp4", "smptebars", "160x120", 48_000),
            make("mismatch.mp4", "testsrc", "160x120", 44_100),
            make("resized.mp4", "testsrc", "176x144", 48_000),
        ];
        let paths: Vec<PathBuf> = jobs
            .into_iter()
            .map(|(path, partial, child, what)| {
                let out = wait_with_timeout(child, COMMAND_TIMEOUT, &what);
                assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
                std::fs::rename(&partial, &path).unwrap();
                path
            })
            .collect();
        ChannelMovies {
            a: paths[0].clone(),
            b: paths[1].clone(),
            c: paths[2].clone(),
            mismatch: paths[3].clone(),
            resized: paths[4].clone(),
        }
    })
}

/// A fresh directory for one test, under the scratch directory.
pub fn test_dir(name: &str) -> PathBuf {
    let dir = scratch_dir().join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes a DSS playlist of `lines` (paths or whole lines) as `dir/NAME`.
pub fn playlist(dir: &Path, name: &str, lines: &[String]) -> PathBuf {
    let path = dir.join(name);
    let mut text = String::from("*PLAY-LIST*\n");
    for l in lines {
        text.push_str(l);
        text.push('\n');
    }
    std::fs::write(&path, text).unwrap();
    path
}

/// `streamalot broadcast ARGS`, with logs plain and at info.
pub fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(streamalot_binary());
    cmd.arg("broadcast")
        .args(args)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    cmd
}

/// Runs `streamalot broadcast ARGS` to its end.
pub fn run(args: &[&str]) -> Output {
    let mut cmd = command(args);
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("streamalot runs");
    wait_with_timeout(child, COMMAND_TIMEOUT, &crate::describe(&cmd))
}

/// Starts `streamalot broadcast ARGS` in the background.
pub fn spawn(args: &[&str]) -> (Child, String) {
    crate::spawn(&mut command(args))
}

/// Text with ANSI colour codes taken out.
pub fn plain(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// One RTP packet as received.
#[derive(Debug, Clone, Copy)]
pub struct Received {
    pub ssrc: u32,
    pub seq: u16,
    pub ts: u32,
    pub pt: u8,
}

/// RTP and RTCP as received on the ports of one track.
#[derive(Debug, Default)]
pub struct TrackCapture {
    pub rtp: Vec<Received>,
    /// RTCP packet types of each datagram, in order.
    pub rtcp: Vec<Vec<u8>>,
    /// SSRCs of sender reports.
    pub sr_ssrcs: Vec<u32>,
}

/// Receives on `tracks` port pairs from `base` up until `done` says so (it
/// is asked between reads) or `limit` passes.
pub fn capture(base: u16, tracks: u16, limit: Duration, mut done: impl FnMut() -> bool) -> Vec<TrackCapture> {
    let socks: Vec<(UdpSocket, UdpSocket)> = (0..tracks)
        .map(|k| {
            let rtp = crate::rtp::bind_with_big_buffer(base + 2 * k).unwrap();
            let rtcp = UdpSocket::bind(("127.0.0.1", base + 2 * k + 1)).unwrap();
            rtp.set_nonblocking(true).unwrap();
            rtcp.set_nonblocking(true).unwrap();
            (rtp, rtcp)
        })
        .collect();
    let mut out: Vec<TrackCapture> = (0..tracks).map(|_| TrackCapture::default()).collect();
    let deadline = Instant::now() + limit;
    let mut buf = vec![0u8; 65_536];
    let mut quiet_since = Instant::now();
    let mut finished = false;
    while Instant::now() < deadline {
        let mut any = false;
        for (k, (rtp, rtcp)) in socks.iter().enumerate() {
            while let Ok(n) = rtp.recv(&mut buf) {
                any = true;
                let p = &buf[..n];
                assert!(n >= 12 && p[0] >> 6 == 2, "not RTP: {p:?}");
                out[k].rtp.push(Received {
                    ssrc: u32::from_be_bytes([p[8], p[9], p[10], p[11]]),
                    seq: u16::from_be_bytes([p[2], p[3]]),
                    ts: u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
                    pt: p[1] & 0x7f,
                });
            }
            while let Ok(n) = rtcp.recv(&mut buf) {
                any = true;
                let mut types = Vec::new();
                let mut at = 0;
                while at + 4 <= n {
                    let pt = buf[at + 1];
                    types.push(pt);
                    if pt == 200 && at + 8 <= n {
                        out[k]
                            .sr_ssrcs
                            .push(u32::from_be_bytes([buf[at + 4], buf[at + 5], buf[at + 6], buf[at + 7]]));
                    }
                    at += 4 * (usize::from(u16::from_be_bytes([buf[at + 2], buf[at + 3]])) + 1);
                }
                out[k].rtcp.push(types);
            }
        }
        if any {
            quiet_since = Instant::now();
        }
        if !finished && done() {
            finished = true;
        }
        // After the sender is done, what is still in flight on loopback
        // arrives within moments.
        if finished && quiet_since.elapsed() > Duration::from_millis(300) {
            break;
        }
        if !any {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    out
}

/// What is wrong with one track's RTP: more than one SSRC, a sequence
/// number that does not follow the one before, or (for `max_back` ticks of
/// reordering, B-frames in video, none in audio) a timestamp further back
/// than that from the latest one seen.
pub fn continuity_problems(track: &TrackCapture, max_back: u32) -> Vec<String> {
    let mut problems = Vec::new();
    let Some(first) = track.rtp.first() else {
        return vec!["no packets".into()];
    };
    let mut ssrcs = BTreeMap::new();
    let mut furthest: i64 = 0;
    let mut unwrapped: i64 = 0;
    let mut last_ts = first.ts;
    for (i, w) in track.rtp.windows(2).enumerate() {
        let (a, b) = (w[0], w[1]);
        if b.seq != a.seq.wrapping_add(1) {
            problems.push(format!("packet {}: sequence {} after {}", i + 1, b.seq, a.seq));
        }
        unwrapped += i64::from(b.ts.wrapping_sub(last_ts) as i32);
        last_ts = b.ts;
        furthest = furthest.max(unwrapped);
        if furthest - unwrapped > i64::from(max_back) {
            problems.push(format!(
                "packet {}: timestamp {} is {} ticks before the latest",
                i + 1,
                b.ts,
                furthest - unwrapped
            ));
        }
    }
    for p in &track.rtp {
        *ssrcs.entry(p.ssrc).or_insert(0) += 1;
    }
    if ssrcs.len() != 1 {
        problems.push(format!("SSRCs {ssrcs:?}"));
    }
    problems.truncate(10);
    problems
}

/// How many video frames and AAC frames the hint tracks of the movie at
/// `path` carry: what a receiver can get of it (ffmpeg's hinter leaves the
/// last few audio frames unhinted, see [`crate::rtp::hinted_aac_frames`]).
pub fn hinted_frames(path: &Path) -> (usize, usize) {
    let movie = loader::Movie::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let video = movie
        .hint_tracks()
        .find(|h| crate::rtp::ffmpeg_stream_for(&movie, h) == "0:v:0")
        .expect("a video hint track");
    let mut stamps: Vec<u32> = crate::rtp::loader_packets(&movie, video.id)
        .iter()
        .map(|p| p.timestamp)
        .collect();
    stamps.sort_unstable();
    stamps.dedup();
    (stamps.len(), crate::rtp::hinted_aac_frames(&movie))
}

/// How many RTP packets each hint track of the movie at `path` holds, in
/// the file's order (the channel's track order).
pub fn hinted_packets(path: &Path) -> Vec<usize> {
    let movie = loader::Movie::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    movie
        .hint_tracks()
        .map(|h| crate::rtp::loader_packets(&movie, h.id).len())
        .collect()
}
