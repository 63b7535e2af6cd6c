//! VLC (`cvlc`) as a listener: it plays an HTTP URL for a while with its
//! file audio output, so the test gets what VLC decoded as a WAV file, and
//! its `-vvv` log (the ICY titles it read, the decoder it chose).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::wait_with_timeout;

/// What one run of VLC left.
pub struct Played {
    /// VLC's `-vvv` log.
    pub log: String,
    /// The decoded audio: interleaved 16-bit samples.
    pub samples: Vec<i16>,
    pub channels: usize,
    pub rate: u32,
}

impl Played {
    /// The titles VLC read from the stream's ICY metadata, in order.
    pub fn titles(&self) -> Vec<&str> {
        self.log
            .lines()
            .filter_map(|l| l.split_once("New Icy-Title=").map(|(_, t)| t.trim_end()))
            .collect()
    }

    /// Seconds of audio decoded.
    pub fn seconds(&self) -> f64 {
        self.samples.len() as f64 / self.channels.max(1) as f64 / f64::from(self.rate.max(1))
    }

    /// The tone on `channel` over the audio from `from` seconds on, in Hz,
    /// by its rising zero crossings.
    pub fn tone_hz(&self, channel: usize, from: f64) -> f64 {
        let ch = self.channels.max(1);
        let skip = (from * f64::from(self.rate)) as usize;
        let one: Vec<i16> = self
            .samples
            .iter()
            .skip(channel)
            .step_by(ch)
            .skip(skip)
            .copied()
            .collect();
        let rising = one.windows(2).filter(|w| w[0] < 0 && w[1] >= 0).count();
        rising as f64 / (one.len().max(1) as f64 / f64::from(self.rate))
    }
}

/// Whether `cvlc` is installed.
pub fn installed() -> bool {
    // On the PATH (`cvlc --version` itself refuses to run as root).
    std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join("cvlc").is_file()))
}

/// Plays `url` with `cvlc` for `seconds`, into a WAV file under `dir`. VLC
/// refuses to run as root, so as root it runs as `nobody` (through
/// `runuser`), in a directory that user may write.
pub fn play(url: &str, seconds: u32, dir: &Path) -> Played {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let wav: PathBuf = dir.join("vlc.wav");
    let _ = std::fs::remove_file(&wav);
    let as_root = euid() == 0;
    let mut cmd = if as_root {
        let mut c = Command::new("runuser");
        c.args(["-u", "nobody", "--", "cvlc"]);
        c
    } else {
        Command::new("cvlc")
    };
    cmd.args([
        "-vvv",
        "--no-video",
        "--play-and-exit",
        "--aout=afile",
        "--audiofile-wav",
    ])
    .arg(format!("--audiofile-file={}", wav.display()))
    .arg(format!("--run-time={seconds}"))
    .arg(url)
    .env("HOME", dir)
    .stdin(std::process::Stdio::null())
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().expect("cvlc starts");
    let out = wait_with_timeout(child, Duration::from_secs(u64::from(seconds) + 30), "cvlc");
    let log = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "cvlc failed: {}", tail(&log));
    let data = std::fs::read(&wav).unwrap_or_else(|e| panic!("VLC wrote no {}: {e}\n{}", wav.display(), tail(&log)));
    let (channels, rate, pcm) = wav_pcm(&data).unwrap_or_else(|| panic!("{} is not 16-bit PCM WAV", wav.display()));
    Played {
        log,
        samples: pcm.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect(),
        channels,
        rate,
    }
}

fn tail(log: &str) -> &str {
    &log[log.len().saturating_sub(4000)..]
}

/// The effective user id, from `/proc` (no libc call needed).
fn euid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|u| u.parse().ok()))
        })
        .unwrap_or(u32::MAX)
}

/// A RIFF WAV's channel count, sample rate and 16-bit PCM data.
fn wav_pcm(data: &[u8]) -> Option<(usize, u32, &[u8])> {
    if data.get(..4)? != b"RIFF" || data.get(8..12)? != b"WAVE" {
        return None;
    }
    let (mut at, mut format) = (12, None);
    while at + 8 <= data.len() {
        let id = &data[at..at + 4];
        let len = u32::from_le_bytes(data[at + 4..at + 8].try_into().ok()?) as usize;
        let body = &data[at + 8..(at + 8 + len).min(data.len())];
        match id {
            b"fmt " if body.len() >= 16 => {
                let channels = u16::from_le_bytes([body[2], body[3]]) as usize;
                let rate = u32::from_le_bytes(body[4..8].try_into().ok()?);
                let bits = u16::from_le_bytes([body[14], body[15]]);
                if bits != 16 {
                    return None;
                }
                format = Some((channels, rate));
            }
            b"data" => {
                let (channels, rate) = format?;
                // A length VLC never filled in: the rest of the file.
                let body = if len == 0 { &data[at + 8..] } else { body };
                return Some((channels, rate, body));
            }
            _ => {}
        }
        at += 8 + len + (len & 1);
    }
    None
}
