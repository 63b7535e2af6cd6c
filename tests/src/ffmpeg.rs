//! ffmpeg as a client: per-frame hashes (`-f framemd5`) of what it reads,
//! from a file or from a server.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::{describe, require_tool, run_ok, run_within};

/// ffmpeg output arguments for comparing what it read with what the file
/// holds: video decoded (hashes of the pictures, the same whether the
/// bitstream came in MP4 or RTP framing), audio copied (hashes of the AAC
/// frames), every frame kept as it comes.
pub const FRAME_HASHES: &[&str] = &[
    "-map",
    "0:v:0",
    "-map",
    "0:a:0",
    "-c:a",
    "copy",
    "-fps_mode",
    "passthrough",
];

/// One line of `framemd5` output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub pts: i64,
    pub size: u64,
    pub hash: String,
}

/// What `framemd5` printed: frames by output stream index, and each
/// stream's time base (`#tb 0: 1/25`) as (numerator, denominator).
#[derive(Debug, Default)]
pub struct FrameHashes {
    pub streams: BTreeMap<u32, Vec<Frame>>,
    pub time_base: BTreeMap<u32, (i64, i64)>,
}

impl FrameHashes {
    pub fn parse(framemd5: &str) -> FrameHashes {
        let mut out = FrameHashes::default();
        for line in framemd5.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if let Some(tb) = line.strip_prefix("#tb ") {
                // `0: 1/25`
                let parsed = tb.split_once(':').and_then(|(s, r)| {
                    let (n, d) = r.trim().split_once('/')?;
                    Some((s.trim().parse().ok()?, (n.parse().ok()?, d.parse().ok()?)))
                });
                let (stream, base) = parsed.unwrap_or_else(|| panic!("unexpected framemd5 line `{line}`"));
                out.time_base.insert(stream, base);
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            // `stream, dts, pts, duration, size, hash`, maybe side data after.
            let [stream, _dts, pts, _duration, size, hash, ..] = fields[..] else {
                panic!("unexpected framemd5 line `{line}`");
            };
            let num = |s: &str| s.parse::<i64>().unwrap_or_else(|e| panic!("framemd5 `{line}`: {e}"));
            out.streams.entry(num(stream) as u32).or_default().push(Frame {
                pts: num(pts),
                size: num(size) as u64,
                hash: hash.to_owned(),
            });
        }
        out
    }

    /// `(size, hash)` of each frame of output stream `stream`: what arrived,
    /// without the times, whose origin each receiver picks for itself.
    pub fn hashes(&self, stream: u32) -> Vec<(u64, String)> {
        self.frames(stream).iter().map(|f| (f.size, f.hash.clone())).collect()
    }

    pub fn frames(&self, stream: u32) -> &[Frame] {
        self.streams.get(&stream).map_or(&[], Vec::as_slice)
    }
}

/// Runs `ffmpeg [input args] -i INPUT [output args] -f framemd5 -` and parses
/// what it prints; panics, with its stderr, if it fails.
pub fn framemd5(input_args: &[&str], input: &str, output_args: &[&str], timeout: Duration) -> FrameHashes {
    require_tool("ffmpeg");
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-nostdin", "-loglevel", "error"])
        .args(input_args)
        .args(["-i", input])
        .args(output_args)
        .args(["-f", "framemd5", "-"]);
    let out = run_within(&mut cmd, timeout);
    assert!(
        out.status.success(),
        "{} failed ({}):\n{}",
        describe(&cmd),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    FrameHashes::parse(&String::from_utf8_lossy(&out.stdout))
}

/// How what ffmpeg read from a server (`got`, with [`FRAME_HASHES`]) differs
/// from what it reads from the movie at `file`: every video picture, and
/// the AAC frames the movie's hint tracks carry (a file may hold more than
/// it hints). One line per stream that differs, naming the first frame.
pub fn differences_from_file(file: &Path, got: &FrameHashes, timeout: Duration) -> Vec<String> {
    let movie = loader::Movie::open(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let from_file = framemd5(&[], file.to_str().expect("a UTF-8 path"), FRAME_HASHES, timeout);
    let mut differences = Vec::new();
    for (stream, kind) in [(0, "video"), (1, "audio")] {
        let mut want = from_file.hashes(stream);
        assert!(
            !want.is_empty(),
            "{}: ffmpeg found no {kind} frames in the file",
            file.display()
        );
        if kind == "audio" {
            want.truncate(crate::rtp::hinted_aac_frames(&movie));
        }
        if let Some(d) = crate::first_difference(&want, &got.hashes(stream)) {
            differences.push(format!("{kind} differs from the file at frame {d}"));
        }
    }
    differences
}

/// Presentation times, in nanoseconds, of the video's key frames, by ffprobe.
pub fn key_frames(file: &Path) -> Vec<i64> {
    require_tool("ffprobe");
    let out = run_ok(
        Command::new("ffprobe")
            .args(["-v", "error", "-select_streams", "v:0"])
            .args(["-show_entries", "packet=pts_time,flags", "-of", "csv=p=0"])
            .arg(file),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut keys: Vec<i64> = text
        .lines()
        .filter_map(|line| {
            let (pts, flags) = line.trim().split_once(',')?;
            flags.contains('K').then(|| {
                let secs: f64 = pts.parse().unwrap_or_else(|e| panic!("ffprobe pts_time `{pts}`: {e}"));
                (secs * 1e9).round() as i64
            })
        })
        .collect();
    keys.sort_unstable();
    keys
}
