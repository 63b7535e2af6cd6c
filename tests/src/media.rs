//! Hinted test movies, made by ffmpeg from its synthetic sources (`testsrc`
//! video, a `sine` tone) with `-movflags +rtphint`, once per test process.
//!
//! They are small (a few seconds, well under a megabyte) so the suite stays
//! fast, and they cover the containers and codecs hinted files come in:
//!
//! - H.264 + AAC in `.mp4` and in `.mov`, with B-frames (`-bf 2`), so the
//!   video has composition offsets, an edit list that shifts it, and hint
//!   packets whose RTP timestamps carry `rtpo` offsets;
//! - H.263 + AAC and MPEG-4 Part 2 + AAC in `.3gp`. Real 3GPP files usually
//!   carry AMR-NB speech, but Debian's ffmpeg is built without an AMR-NB
//!   encoder (no libopencore-amrnb), so AAC stands in for it.
//!
//! plus one movie without hint tracks, which the server must refuse.
//!
//! [`apple_style`] makes movies like the ones Apple's hinter made: H.264 and
//! AAC encoded as in Apple's sample (the same size, frame rate and profile,
//! one B-frame between references, two slices a frame, 8 kHz stereo AAC
//! without an edit), unhinted, then hinted by [`crate::hinter`].

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::OnceLock;

use crate::{require_tool, scratch_dir, wait_with_timeout, COMMAND_TIMEOUT};

/// Frame rate of the H.264 clips.
pub const H264_FPS: u32 = 25;
/// Key-frame interval of the H.264 clips, in frames: one key frame a second.
/// Scene-cut detection is off, so these are the only key frames.
pub const H264_GOP: u32 = 25;
/// Length of the H.264 clips, in seconds.
pub const H264_SECONDS: u32 = 5;

/// One generated movie.
#[derive(Debug)]
pub struct Clip {
    /// File name, which also says what is in it (`h264-aac.mp4`).
    pub name: &'static str,
    pub path: PathBuf,
}

/// Every generated movie.
#[derive(Debug)]
pub struct TestMedia {
    /// The hinted movies.
    pub hinted: Vec<Clip>,
    /// H.264 + AAC in `.mp4`, without hint tracks.
    pub unhinted: PathBuf,
}

impl TestMedia {
    /// The hinted clip called `name`.
    pub fn clip(&self, name: &str) -> &Clip {
        self.hinted
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no test clip called {name}"))
    }

    /// The H.264 + AAC `.mp4`, with B-frames and a key frame every second.
    pub fn h264_mp4(&self) -> &Path {
        &self.clip("h264-aac.mp4").path
    }
}

/// How to make one movie: file name, container (`-f`), and the ffmpeg
/// arguments between the inputs and the output.
struct Recipe {
    name: &'static str,
    format: &'static str,
    inputs: fn() -> Vec<String>,
    /// Which input streams go in, in which order, and muxer flags.
    layout: &'static [&'static str],
    encode: &'static [&'static str],
    hinted: bool,
}

fn h264_inputs() -> Vec<String> {
    lavfi_inputs("320x240", H264_FPS, 44_100, H264_SECONDS)
}

fn qcif_inputs() -> Vec<String> {
    // 176x144 (QCIF) is one of the few sizes H.263 allows.
    lavfi_inputs("176x144", 15, 16_000, 4)
}

fn lavfi_inputs(size: &str, fps: u32, sample_rate: u32, seconds: u32) -> Vec<String> {
    vec![
        "-f".into(),
        "lavfi".into(),
        "-i".into(),
        format!("testsrc=size={size}:rate={fps}:duration={seconds}"),
        "-f".into(),
        "lavfi".into(),
        "-i".into(),
        format!("sine=frequency=440:sample_rate={sample_rate}:duration={seconds}"),
    ]
}

// `-g`, `-keyint_min` and `-sc_threshold 0` pin the key frames to one a
// second; `ultrafast` keeps encoding quick, and `-bf 2` after it turns the
// B-frames it would disable back on.
const H264_ENCODE: &[&str] = &[
    "-c:v",
    "libx264",
    "-preset",
    "ultrafast",
    "-bf",
    "2",
    "-g",
    "25",
    "-keyint_min",
    "25",
    "-sc_threshold",
    "0",
    "-pix_fmt",
    "yuv420p",
    "-c:a",
    "aac",
    "-b:a",
    "64k",
    "-ac",
    "1",
];

const RECIPES: &[Recipe] = &[
    Recipe {
        name: "h264-aac.mp4",
        format: "mp4",
        inputs: h264_inputs,
        layout: &[],
        encode: H264_ENCODE,
        hinted: true,
    },
    Recipe {
        name: "h264-aac.mov",
        format: "mov",
        inputs: h264_inputs,
        layout: &[],
        encode: H264_ENCODE,
        hinted: true,
    },
    Recipe {
        name: "h263-aac.3gp",
        format: "3gp",
        inputs: qcif_inputs,
        layout: &[],
        encode: &["-c:v", "h263", "-g", "15", "-c:a", "aac", "-b:a", "32k", "-ac", "1"],
        hinted: true,
    },
    Recipe {
        name: "mpeg4-aac.3gp",
        format: "3gp",
        inputs: qcif_inputs,
        layout: &[],
        encode: &["-c:v", "mpeg4", "-g", "15", "-c:a", "aac", "-b:a", "32k", "-ac", "1"],
        hinted: true,
    },
    Recipe {
        name: "unhinted.mp4",
        format: "mp4",
        inputs: h264_inputs,
        layout: &[],
        encode: H264_ENCODE,
        hinted: false,
    },
];

/// A `seconds`-long H.264 (with B-frames, a key frame every 2 s) + AAC
/// movie of about 580 kbit/s, hinted by ffmpeg, in the test process's
/// scratch directory: for links slower than it.
pub fn slow_link_movie(seconds: u32) -> PathBuf {
    require_tool("ffmpeg");
    let dir = scratch_dir().join("slow-link-media");
    std::fs::create_dir_all(&dir).expect("a media directory");
    let path = dir.join("slow-link.mp4");
    let secs = seconds.to_string();
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y"])
        .args([
            "-f",
            "lavfi",
            "-i",
            &format!("testsrc=size=640x360:rate=25:duration={secs}"),
        ])
        .args([
            "-f",
            "lavfi",
            "-i",
            &format!("sine=frequency=440:sample_rate=44100:duration={secs}"),
        ])
        .args(["-c:v", "libx264", "-preset", "veryfast", "-bf", "2"])
        .args(["-g", "50", "-keyint_min", "50", "-sc_threshold", "0"])
        .args([
            "-b:v", "700k", "-maxrate", "700k", "-bufsize", "1400k", "-pix_fmt", "yuv420p",
        ])
        .args([
            "-c:a",
            "aac",
            "-b:a",
            "64k",
            "-ac",
            "1",
            "-movflags",
            "+rtphint",
            "-f",
            "mp4",
        ])
        .arg(&path);
    let (child, what) = crate::spawn(&mut cmd);
    let out = wait_with_timeout(child, COMMAND_TIMEOUT, &what);
    assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
    path
}

/// The generated movies, made on first use by each test process.
pub fn media() -> &'static TestMedia {
    static MEDIA: OnceLock<TestMedia> = OnceLock::new();
    MEDIA.get_or_init(generate)
}

fn generate() -> TestMedia {
    let mut hinted = Vec::new();
    let mut unhinted = None;
    for (recipe, path) in RECIPES.iter().zip(encode(RECIPES)) {
        if recipe.hinted {
            hinted.push(Clip {
                name: recipe.name,
                path,
            });
        } else {
            unhinted = Some(path);
        }
    }
    TestMedia {
        hinted,
        unhinted: unhinted.expect("the recipes include an unhinted movie"),
    }
}

/// Makes every movie of `recipes` in the media directory, all encodes at
/// once (together they take about as long as the slowest), and returns
/// their paths in order.
fn encode(recipes: &[Recipe]) -> Vec<PathBuf> {
    require_tool("ffmpeg");
    let dir = scratch_dir().join("media");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    let jobs: Vec<(PathBuf, PathBuf, Child, String)> = recipes
        .iter()
        .map(|r| {
            let path = dir.join(r.name);
            // Written under a temporary name and renamed into place, so a file
            // with the final name is always complete.
            let partial = dir.join(format!(".{}.{}.partial", r.name, std::process::id()));
            let mut cmd = Command::new("ffmpeg");
            cmd.args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y"])
                .args((r.inputs)())
                .args(r.layout)
                .args(r.encode);
            if r.hinted {
                cmd.args(["-movflags", "+rtphint"]);
            }
            cmd.args(["-f", r.format]).arg(&partial);
            let (child, what) = crate::spawn(&mut cmd);
            (path, partial, child, what)
        })
        .collect();
    jobs.into_iter()
        .map(|(path, partial, child, what)| {
            let out = wait_with_timeout(child, COMMAND_TIMEOUT, &what);
            assert!(
                out.status.success(),
                "making test media failed: {what} ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            rename(&partial, &path);
            path
        })
        .collect()
}

fn rename(from: &Path, to: &Path) {
    std::fs::rename(from, to).unwrap_or_else(|e| panic!("cannot rename {} to {}: {e}", from.display(), to.display()));
}

/// Frame rate of the Apple-style clips, Apple's sample's.
pub const APPLE_FPS: u32 = 30;
/// Key-frame interval of the Apple-style clips, in frames: Apple's sample's.
pub const APPLE_GOP: u32 = 60;

/// A movie hinted by [`crate::hinter`], and the unhinted movie it was made from.
#[derive(Debug)]
pub struct AppleClip {
    pub name: &'static str,
    pub path: PathBuf,
    pub source: PathBuf,
}

/// The AAC of the Apple-style clips: ffmpeg's encoder marks its priming
/// frame with an edit that starts the audio 1024 samples in, which Apple's
/// movies do not have (its encoder's priming frames are plain frames at 0).
/// Encoded alone into ADTS, which has no room for that, the audio is muxed
/// as Apple's is: an edit from 0, the first frame at 0.
const APPLE_AUDIO: Recipe = Recipe {
    name: "apple-style-audio.aac",
    format: "adts",
    inputs: apple_audio_input,
    layout: &[],
    encode: &["-c:a", "aac", "-b:a", "24k", "-ac", "2"],
    hinted: false,
};

fn apple_audio_input() -> Vec<String> {
    // Apple's sample has 8 kHz audio.
    ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=8000:duration=4"]
        .map(String::from)
        .to_vec()
}

fn apple_inputs() -> Vec<String> {
    // Apple's sample is 192x242 at 30 frames a second.
    let audio = scratch_dir().join("media").join(APPLE_AUDIO.name);
    vec![
        "-f".into(),
        "lavfi".into(),
        "-i".into(),
        format!("testsrc=size=192x242:rate={APPLE_FPS}:duration=4"),
        "-i".into(),
        audio.to_string_lossy().into_owned(),
    ]
}

/// What makes the video like Apple's sample's: Main profile (x264 picks it
/// for B-frames) at level 1.2; exactly one B-frame, never referenced, between
/// reference frames (no adaptive placement, no pyramid); two slices a frame;
/// a key frame every two seconds. `-crf 12` makes frames large enough that
/// the hinter needs all three kinds of packet: STAP-A, single NAL unit, FU-A.
/// The audio ([`APPLE_AUDIO`]) is copied.
const APPLE_ENCODE: &[&str] = &[
    "-c:v",
    "libx264",
    "-preset",
    "ultrafast",
    "-crf",
    "12",
    "-bf",
    "1",
    "-x264-params",
    "b-adapt=0:b-pyramid=0:slices=2",
    "-g",
    "60",
    "-keyint_min",
    "60",
    "-sc_threshold",
    "0",
    "-pix_fmt",
    "yuv420p",
    "-c:a",
    "copy",
];

/// The unhinted sources: in `.mp4` with the audio track first, as in Apple's
/// sample, and `moov` after `mdat`, as ffmpeg writes it; in `.mov` with the
/// video first and `moov` before `mdat` (`+faststart`).
const APPLE_SOURCES: &[Recipe] = &[
    Recipe {
        name: "apple-style-source.mp4",
        format: "mp4",
        inputs: apple_inputs,
        layout: &["-map", "1:a", "-map", "0:v"],
        encode: APPLE_ENCODE,
        hinted: false,
    },
    Recipe {
        name: "apple-style-source.mov",
        format: "mov",
        inputs: apple_inputs,
        layout: &["-map", "0:v", "-map", "1:a", "-movflags", "+faststart"],
        encode: APPLE_ENCODE,
        hinted: false,
    },
];

/// The Apple-style hinted movies, `apple-style.mp4` and `apple-style.mov`,
/// made on first use by each test process.
pub fn apple_style() -> &'static [AppleClip] {
    static CLIPS: OnceLock<Vec<AppleClip>> = OnceLock::new();
    CLIPS.get_or_init(|| {
        let names = ["apple-style.mp4", "apple-style.mov"];
        encode(&[APPLE_AUDIO]);
        encode(APPLE_SOURCES)
            .into_iter()
            .zip(names)
            .map(|(source, name)| {
                let path = source.with_file_name(name);
                let partial = source.with_file_name(format!(".{name}.{}.partial", std::process::id()));
                crate::hinter::hint(&source, &partial).unwrap_or_else(|e| panic!("hinting {}: {e}", source.display()));
                rename(&partial, &path);
                AppleClip { name, path, source }
            })
            .collect()
    })
}

impl AppleClip {
    /// The Apple-style clip called `name`.
    pub fn named(name: &str) -> &'static AppleClip {
        apple_style()
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no Apple-style clip called {name}"))
    }
}
