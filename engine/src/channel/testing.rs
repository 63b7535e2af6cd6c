//! Test helpers: scratch directories and small hinted movies made by ffmpeg.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};

/// A fresh directory for one test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("streamalot-channel-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The bundled sample: 10 s of H.264 Main 320x240 and AAC LC 48 kHz stereo.
pub fn sample() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../media/sample.mp4")
}

/// A movie to make: its file name and the ffmpeg arguments after the inputs
/// (`-i` 0 is a test pattern, 1 a tone, 2 a second tone at another rate).
pub struct Clip {
    pub name: &'static str,
    pub args: &'static [&'static str],
}

/// One second of H.264 Main 160x120 at 25 fps (a key frame every 10 frames)
/// and AAC LC 48 kHz stereo: the shape the channel tests take as reference.
#[rustfmt::skip]
pub const H264_AAC: &[&str] = &[
    "-map", "0:v", "-map", "1:a", "-c:v", "libx264", "-preset", "ultrafast", "-profile:v", "main", "-level", "3.0",
    "-g", "10", "-bf", "2", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "48k", "-ac", "2",
];

/// Makes the hinted movies `clips` (those not made yet by this process) at
/// once and returns their paths, or `None` when ffmpeg is not installed.
pub fn clips(clips: &[Clip]) -> Option<Vec<PathBuf>> {
    static MADE: OnceLock<Mutex<HashMap<&'static str, PathBuf>>> = OnceLock::new();
    let made = MADE.get_or_init(Default::default);
    let ffmpeg = Command::new("ffmpeg")
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ffmpeg {
        return None;
    }
    let dir = std::env::temp_dir().join(format!("streamalot-channel-{}-clips", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Held while encoding, so two tests asking for one clip make it once.
    let mut made = made.lock().unwrap_or_else(|e| e.into_inner());
    let jobs: Vec<_> = clips
        .iter()
        .filter(|c| !made.contains_key(c.name))
        .map(|c| {
            let path = dir.join(c.name);
            let child = Command::new("ffmpeg")
                .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y"])
                .args(["-f", "lavfi", "-i", "testsrc=size=160x120:rate=25:duration=1"])
                .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=1"])
                .args(["-f", "lavfi", "-i", "sine=frequency=660:sample_rate=44100:duration=1"])
                .args(c.args)
                .args(["-fflags", "+bitexact", "-movflags", "+rtphint"])
                .arg(&path)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("ffmpeg runs");
            (c.name, path, child)
        })
        .collect();
    for (name, path, child) in jobs {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "ffmpeg could not make {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        made.insert(name, path);
    }
    Some(clips.iter().map(|c| made[c.name].clone()).collect())
}
