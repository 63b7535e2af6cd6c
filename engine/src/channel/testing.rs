//! Test helpers: scratch directories and small hinted movies made by ffmpeg.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

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

/// A movie to make: its file name (whose extension picks the container) and
/// the ffmpeg arguments after the [`INPUTS`].
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

/// The reference's H.264 with AAC at 44.1 kHz (the second audio input):
/// a movie whose audio does not fit the reference's.
#[rustfmt::skip]
pub const AAC_44K: &[&str] = &[
    "-map", "0:v", "-map", "2:a", "-c:v", "libx264", "-preset", "ultrafast", "-profile:v", "main", "-level", "3.0",
    "-pix_fmt", "yuv420p", "-c:a", "aac", "-ac", "2",
];

/// [`H264_AAC`] with `extra` arguments after it.
pub fn with(extra: &'static [&'static str]) -> &'static [&'static str] {
    let mut v: Vec<&str> = H264_AAC.to_vec();
    v.extend_from_slice(extra);
    Vec::leak(v)
}

/// The four movies the looped-channel tests play: the reference, one of
/// another picture size (new parameter sets), one of another picture (the
/// same sets), and one whose AAC is 44.1 kHz (which does not fit).
pub fn looped_channel_clips() -> [Clip; 4] {
    [
        Clip {
            name: "ref.mp4",
            args: H264_AAC,
        },
        Clip {
            name: "bigger.mov",
            args: with(&["-vf", "scale=176:144"]),
        },
        Clip {
            name: "other.mp4",
            args: with(&["-vf", "hue=h=90"]),
        },
        Clip {
            name: "aac44.mp4",
            args: AAC_44K,
        },
    ]
}

/// Makes the hinted movies `clips` and returns their paths, or `None` when
/// ffmpeg is not installed. They are kept in one directory under the system's
/// temporary directory, named by a hash of their arguments, and reused by
/// later runs: the suite does not encode them again each time, and leaves no
/// directory per run behind.
pub fn clips(clips: &[Clip]) -> Option<Vec<PathBuf>> {
    static LOCK: Mutex<()> = Mutex::new(());
    let ffmpeg = Command::new("ffmpeg")
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ffmpeg {
        return None;
    }
    let dir = std::env::temp_dir().join("streamalot-channel-clips");
    std::fs::create_dir_all(&dir).unwrap();
    let path = |c: &Clip| {
        let mut h = DefaultHasher::new();
        (INPUTS, c.args).hash(&mut h);
        dir.join(format!("{:016x}-{}", h.finish(), c.name))
    };
    // Held while encoding, so two tests asking for one clip make it once.
    let _held = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let jobs: Vec<_> = clips
        .iter()
        .filter(|c| !path(c).exists())
        .map(|c| {
            // Written under a name of this process and renamed into place,
            // so a file with the final name is always complete.
            let partial = dir.join(format!(".{}.{}", std::process::id(), c.name));
            let child = Command::new("ffmpeg")
                .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y"])
                .args(INPUTS)
                .args(c.args)
                .args(["-fflags", "+bitexact", "-movflags", "+rtphint"])
                .arg(&partial)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("ffmpeg runs");
            (c, partial, child)
        })
        .collect();
    for (c, partial, child) in jobs {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "ffmpeg could not make {}: {}",
            c.name,
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::rename(&partial, path(c)).unwrap();
    }
    Some(clips.iter().map(path).collect())
}

/// The inputs every clip is made from: 0 is a test pattern, 1 a tone at
/// 48 kHz, 2 another at 44.1 kHz, each a second long.
#[rustfmt::skip]
const INPUTS: &[&str] = &[
    "-f", "lavfi", "-i", "testsrc=size=160x120:rate=25:duration=1",
    "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=1",
    "-f", "lavfi", "-i", "sine=frequency=660:sample_rate=44100:duration=1",
];
