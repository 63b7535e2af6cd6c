//! Makes the long hinted movie the loader benchmark runs on.
//!
//! Encoding two hours would take long; instead one short clip is encoded once
//! and then looped with `-c copy` (no re-encoding) and hinted by ffmpeg's
//! muxer, which runs at disk speed. Both files are kept and reused.

use std::fs;
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Length of the encoded clip that is looped, in seconds.
const CLIP_SECS: u64 = 60;

/// The looped movie for `minutes` in `dir`, made if it is not there yet.
pub fn ensure(dir: &Path, minutes: u64) -> Result<PathBuf, String> {
    let movie = dir.join(format!("loop-{minutes}min-300k.mp4"));
    if movie.exists() {
        return Ok(movie);
    }
    check_ffmpeg()?;
    fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;

    let clip = dir.join(format!("clip-{CLIP_SECS}s-300k.mp4"));
    if !clip.exists() {
        // The bundled sample's settings (tools/make-sample-media): H.264 main
        // with B-frames and 2 s GOPs at ~240 kbit/s, plus 64 kbit/s stereo AAC.
        #[rustfmt::skip]
        let args: Vec<String> = [
            "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
            "-t", &CLIP_SECS.to_string(),
            "-c:v", "libx264", "-preset", "veryfast", "-profile:v", "main", "-g", "50", "-bf", "2",
            "-b:v", "240k", "-maxrate", "300k", "-bufsize", "600k",
            "-c:a", "aac", "-b:a", "64k", "-ac", "2",
        ]
        .map(String::from)
        .into();
        run_ffmpeg("encoding the clip", &args, CLIP_SECS, &clip)?;
    }

    // Looping a stream copy rewrites only timestamps; `+rtphint` makes the
    // muxer packetize every sample and write the hint tracks.
    let total = minutes * 60;
    let loops = total.div_ceil(CLIP_SECS).saturating_sub(1);
    #[rustfmt::skip]
    let args: Vec<String> = [
        "-stream_loop", &loops.to_string(), "-i", &clip.to_string_lossy(),
        "-t", &total.to_string(), "-c", "copy", "-movflags", "+rtphint",
    ]
    .map(String::from)
    .into();
    run_ffmpeg(
        &format!("looping it to {minutes} min and hinting"),
        &args,
        total,
        &movie,
    )?;
    Ok(movie)
}

fn check_ffmpeg() -> Result<(), String> {
    const MISSING: &str = "ffmpeg is needed to make the benchmark movie: install it (Debian/Ubuntu: \
                           `apt-get install ffmpeg`) or pass --movie with a hinted movie";
    match Command::new("ffmpeg").arg("-version").stdout(Stdio::null()).status() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("`ffmpeg -version` failed ({s})")),
        Err(e) if e.kind() == ErrorKind::NotFound => Err(MISSING.into()),
        Err(e) => Err(format!("cannot run ffmpeg: {e}")),
    }
}

/// Runs ffmpeg with `args` writing an MP4 to `out`, printing how far it is
/// (ffmpeg's `-progress` output against `secs` of expected output). Writes to
/// a temporary name first so an interrupted run never leaves a file that a
/// later run would take as finished.
fn run_ffmpeg(what: &str, args: &[String], secs: u64, out: &Path) -> Result<(), String> {
    let partial = out.with_extension("mp4.partial");
    let mut child = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-nostats",
            "-progress",
            "pipe:1",
            "-y",
        ])
        .args(args)
        .args(["-f", "mp4"])
        .arg(&partial)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run ffmpeg: {e}"))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut shown = None;
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        // `out_time_us` is the output position in microseconds.
        let Some(us) = line.strip_prefix("out_time_us=").and_then(|v| v.parse::<u64>().ok()) else {
            continue;
        };
        let percent = (us / 10_000 / secs.max(1)).min(100);
        if shown != Some(percent) {
            shown = Some(percent);
            eprint!("\r{what}: {percent:3}% of {secs} s -> {}", out.display());
            let _ = std::io::stderr().flush();
        }
    }
    let status = child.wait().map_err(|e| format!("ffmpeg: {e}"))?;
    eprintln!();
    if !status.success() {
        let _ = fs::remove_file(&partial);
        return Err(format!("ffmpeg failed while {what} ({status})"));
    }
    fs::rename(&partial, out).map_err(|e| format!("cannot rename {}: {e}", partial.display()))
}
