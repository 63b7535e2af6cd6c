//! GStreamer as a client: `gst-launch-1.0` decodes a movie's H.264 video, from
//! the file or through `rtspsrc`, and `checksumsink` prints a hash of every
//! picture, in presentation order.

use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::Duration;

use crate::server::Server;
use crate::{describe, first_difference, require_tool, run_within};

/// Plays every clip (its name in `server`'s library, and its file) with
/// `rtspsrc` once over each of `transports`, all plays at once, and compares
/// each play's pictures with what GStreamer decodes from the file. Returns a
/// line for each play that differs.
pub fn playback_differences(
    server: &Server,
    clips: &[(&'static str, &Path)],
    transports: &[&'static str],
    timeout: Duration,
) -> Vec<String> {
    let mut runs = Vec::new();
    for &(name, _) in clips {
        for &transport in transports {
            let url = server.url(name);
            runs.push(thread::spawn(move || {
                (name, transport, rtsp_video_hashes(&url, transport, timeout))
            }));
        }
    }
    let files: Vec<_> = clips
        .iter()
        .map(|&(name, path)| (name, file_video_hashes(path, timeout)))
        .collect();
    let mut failures = Vec::new();
    for run in runs {
        let (name, transport, got) = run.join().expect("a gst-launch run");
        let want = &files.iter().find(|f| f.0 == name).expect("a clip played").1;
        assert!(!want.is_empty(), "{name}: GStreamer decoded no pictures from the file");
        if let Some(d) = first_difference(want, &got) {
            failures.push(format!("{name} over {transport}: picture {d}"));
        }
    }
    failures
}

/// MD5 of each picture `avdec_h264` decodes from the file at `path`
/// (`qtdemux`, which plays the video track and not the hint tracks).
pub fn file_video_hashes(path: &Path, timeout: Duration) -> Vec<String> {
    let location = format!("location={}", path.display());
    decoded_video_hashes(&[&["filesrc", &location], &["qtdemux"]], timeout)
}

/// MD5 of each picture `avdec_h264` decodes from `rtspsrc` playing `url`
/// with `protocols` (`udp` or `tcp`: one, so that rtspsrc cannot fall back
/// to the other).
pub fn rtsp_video_hashes(url: &str, protocols: &str, timeout: Duration) -> Vec<String> {
    rtsp_video_hashes_with(
        Command::new("gst-launch-1.0"),
        url,
        &[&format!("protocols={protocols}")],
        timeout,
    )
}

/// As [`rtsp_video_hashes`], with `gst_launch` (`gst-launch-1.0`, or a
/// command that runs it elsewhere: in a network namespace) and `props` for
/// `rtspsrc` (`protocols=udp`, `do-retransmission=true`...).
pub fn rtsp_video_hashes_with(gst_launch: Command, url: &str, props: &[&str], timeout: Duration) -> Vec<String> {
    let location = format!("location={url}");
    let mut rtspsrc = vec!["rtspsrc", location.as_str()];
    rtspsrc.extend_from_slice(props);
    decoded_video_hashes_with(gst_launch, &[&rtspsrc, &["rtph264depay"]], timeout)
}

/// Runs `gst-launch-1.0 SOURCE ! h264parse ! avdec_h264 ! checksumsink` to
/// the end of the stream and returns the hashes; panics, with its stderr,
/// if it fails or never reaches the end.
///
/// A run that reached the end counts even when gst-launch then exits 1:
/// stopping after EOS, rtspsrc queues a PAUSE request and at once cancels
/// its RTSP connection for the shutdown, and GStreamer reports the cancelled
/// write as "Could not send message. (Received end-of-file)" (1.22's
/// `gstrtspconnection.c` says EOF whenever a write fails before any byte
/// went), an error of its own teardown, not of what it played.
fn decoded_video_hashes(source: &[&[&str]], timeout: Duration) -> Vec<String> {
    decoded_video_hashes_with(Command::new("gst-launch-1.0"), source, timeout)
}

fn decoded_video_hashes_with(mut cmd: Command, source: &[&[&str]], timeout: Duration) -> Vec<String> {
    require_tool("gst-launch-1.0");
    let decode: [&[&str]; 3] = [&["h264parse"], &["avdec_h264"], &["checksumsink", "hash=md5"]];
    for (i, element) in source.iter().chain(&decode).enumerate() {
        if i > 0 {
            cmd.arg("!");
        }
        cmd.args(*element);
    }
    let out = run_within(&mut cmd, timeout);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let reached_the_end = stdout
        .lines()
        .any(|l| l.starts_with("Got EOS from element \"pipeline0\""));
    assert!(
        out.status.success() || reached_the_end,
        "{} failed ({}) before the end of the stream; avdec_h264 is in gstreamer1.0-libav and \
         checksumsink in gstreamer1.0-plugins-bad, which the README's test command installs:\n{}",
        describe(&cmd),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // checksumsink prints `PTS HASH` per buffer, among gst-launch's own lines.
    stdout
        .lines()
        .filter_map(|line| match line.split_whitespace().collect::<Vec<_>>()[..] {
            [pts, hash] if pts.contains(':') && hash.len() == 32 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Some(hash.to_owned())
            }
            _ => None,
        })
        .collect()
}
