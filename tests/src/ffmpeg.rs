//! ffmpeg as a client: per-frame hashes (`-f framemd5`) of what it reads,
//! from a file or from a server.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::Duration;

use crate::server::Server;
use crate::{describe, first_difference, require_tool, run_ok, run_within};

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

/// Plays every clip (its name in `server`'s library, and its file) with
/// ffmpeg over TCP and over UDP, all plays at once, and compares each play's
/// decoded pictures and AAC frames ([`FRAME_HASHES`]) with what ffmpeg reads
/// from the file, of whose AAC frames the first `audio_frames(name)` are
/// expected (`None`: all). Returns a line for each stream of a play that
/// differs.
pub fn playback_differences(
    server: &Server,
    clips: &[(&'static str, &Path)],
    audio_frames: impl Fn(&str) -> Option<usize>,
    timeout: Duration,
) -> Vec<String> {
    let mut runs = Vec::new();
    for &(name, _) in clips {
        for transport in ["tcp", "udp"] {
            let url = server.url(name);
            runs.push(thread::spawn(move || {
                let got = framemd5(&["-rtsp_transport", transport], &url, FRAME_HASHES, timeout);
                (name, transport, got)
            }));
        }
    }
    let files: Vec<_> = clips
        .iter()
        .map(|&(name, path)| {
            let file = framemd5(&[], path.to_str().expect("a UTF-8 path"), FRAME_HASHES, timeout);
            (name, file)
        })
        .collect();
    let mut failures = Vec::new();
    for run in runs {
        let (name, transport, got) = run.join().expect("an ffmpeg run");
        let file = &files.iter().find(|f| f.0 == name).expect("a clip played").1;
        for (stream, kind) in [(0, "video"), (1, "audio")] {
            let mut want = file.hashes(stream);
            assert!(!want.is_empty(), "{name}: ffmpeg found no {kind} frames in the file");
            if kind == "audio" {
                want.truncate(audio_frames(name).unwrap_or(usize::MAX));
            }
            if let Some(d) = first_difference(&want, &got.hashes(stream)) {
                failures.push(format!("{name} over {transport}: {kind} frame {d}"));
            }
        }
    }
    failures
}

/// The latest of `keys` (nanoseconds) at or before `ns`.
pub fn key_frame_at_or_before(keys: &[i64], ns: i64) -> Option<i64> {
    keys.iter().copied().filter(|&k| k <= ns).max()
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

/// One packet of a stream of a file, as ffmpeg demuxes it.
#[derive(Debug, Clone)]
pub struct FilePacket {
    /// Presentation and decode times in the stream's time base, after the
    /// edit lists.
    pub pts: i64,
    pub dts: i64,
    pub key: bool,
    /// The bytes as stored (for H.264 in MP4: length-prefixed NAL units).
    pub data: Vec<u8>,
}

/// The packets of one stream of a file, in decode order.
#[derive(Debug)]
pub struct StreamPackets {
    /// (numerator, denominator) of the time base of `pts` and `dts`.
    pub time_base: (i64, i64),
    pub packets: Vec<FilePacket>,
}

/// Every packet of `stream` (`v:0`, `a:0`) of `file`: times and flags from
/// `ffprobe -show_packets`, bytes from `ffmpeg -c copy -f data`, which
/// writes the packets back to back.
pub fn stream_packets(file: &Path, stream: &str) -> StreamPackets {
    require_tool("ffprobe");
    let probe = run_ok(
        Command::new("ffprobe")
            .args(["-v", "error", "-select_streams", stream])
            .args([
                "-show_entries",
                "stream=time_base:packet=pts,dts,size,flags",
                "-of",
                "json",
            ])
            .arg(file),
    );
    let json: serde_json::Value = serde_json::from_slice(&probe.stdout).expect("ffprobe writes JSON");
    let time_base = json["streams"][0]["time_base"]
        .as_str()
        .and_then(|tb| tb.split_once('/'))
        .and_then(|(n, d)| Some((n.parse().ok()?, d.parse().ok()?)))
        .unwrap_or_else(|| panic!("ffprobe gave no time base for {stream} of {}", file.display()));
    let data = run_ok(
        Command::new("ffmpeg")
            .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-i"])
            .arg(file)
            .args(["-map", &format!("0:{stream}"), "-c", "copy", "-f", "data", "-"]),
    )
    .stdout;
    let mut at = 0;
    let mut packets = Vec::new();
    for p in json["packets"].as_array().expect("ffprobe lists packets") {
        let field = |name: &str| {
            p[name]
                .as_i64()
                .or_else(|| p[name].as_str()?.parse().ok())
                .unwrap_or_else(|| panic!("ffprobe packet without {name}: {p}"))
        };
        let size = field("size") as usize;
        let bytes = data.get(at..at + size).unwrap_or_else(|| {
            panic!(
                "ffmpeg wrote {} bytes of {stream}, fewer than ffprobe's packets",
                data.len()
            )
        });
        packets.push(FilePacket {
            pts: field("pts"),
            dts: field("dts"),
            key: p["flags"].as_str().is_some_and(|f| f.contains('K')),
            data: bytes.to_vec(),
        });
        at += size;
    }
    assert_eq!(
        at,
        data.len(),
        "ffmpeg wrote more bytes of {stream} than ffprobe's packets hold"
    );
    StreamPackets { time_base, packets }
}

/// The picture type (`I`, `P`, `B`) of each decoded picture of the video,
/// by presentation time in the stream's time base (`ffprobe -show_frames`).
pub fn picture_types(file: &Path) -> BTreeMap<i64, String> {
    require_tool("ffprobe");
    let out = run_ok(
        Command::new("ffprobe")
            .args(["-v", "error", "-select_streams", "v:0"])
            .args(["-show_entries", "frame=pts,pict_type", "-of", "csv=p=0"])
            .arg(file),
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let (pts, kind) = line.trim().split_once(',')?;
            Some((pts.parse().ok()?, kind.to_owned()))
        })
        .collect()
}
