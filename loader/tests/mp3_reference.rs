//! The MP3 index held to ffmpeg's: real files made by ffmpeg's encoders
//! (libmp3lame for Layer III, its own mp2 encoder for Layer II), indexed by
//! the loader and by `ffprobe -show_packets`, which must agree on every
//! frame's offset, size and start time, on the total duration, on the tags,
//! on what the Xing/Info and LAME headers say, and on the byte offset due at
//! any media time. Then ffmpeg decodes the frames the loader would send
//! (and nothing else) to the same PCM as the file itself.
//!
//! ffmpeg and ffprobe must be installed (the README's test command installs
//! them); without them these tests fail and say so, never pass quietly.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use loader::mp3::{Layer, Mp3, Problem, VbrKind};

/// One generated file: its name and the ffmpeg arguments after the input.
struct Recipe {
    name: &'static str,
    sample_rate: u32,
    seconds: f32,
    args: &'static [&'static str],
}

const TITLE_V23: &str = "Señal de prueba \u{2018}CBR\u{2019}";
const TITLE_V24: &str = "VBR \u{2014} \u{fc}n\u{ef}code \u{2603}";

const RECIPES: &[Recipe] = &[
    // ID3v2.3 with non-Latin-1 text, which ffmpeg writes as UTF-16 with a BOM;
    // a LAME Info header.
    Recipe {
        name: "cbr-128k-stereo.mp3",
        sample_rate: 44_100,
        seconds: 3.0,
        args: &[
            "-c:a",
            "libmp3lame",
            "-b:a",
            "128k",
            "-ac",
            "2",
            "-id3v2_version",
            "3",
            "-metadata",
            "title=Señal de prueba \u{2018}CBR\u{2019}",
            "-metadata",
            "artist=Tëster",
        ],
    },
    // VBR with a Xing header and TOC; ID3v2.4 in UTF-8.
    Recipe {
        name: "vbr-q4-stereo.mp3",
        sample_rate: 44_100,
        seconds: 4.0,
        args: &[
            "-c:a",
            "libmp3lame",
            "-q:a",
            "4",
            "-ac",
            "2",
            "-metadata",
            "title=VBR \u{2014} \u{fc}n\u{ef}code \u{2603}",
        ],
    },
    Recipe {
        name: "mpeg1-48k-320k.mp3",
        sample_rate: 48_000,
        seconds: 2.0,
        args: &["-c:a", "libmp3lame", "-b:a", "320k", "-ac", "2"],
    },
    // MPEG-2 Layer III: 576 samples a frame.
    Recipe {
        name: "mpeg2-22050-mono.mp3",
        sample_rate: 22_050,
        seconds: 3.0,
        args: &["-c:a", "libmp3lame", "-b:a", "32k", "-ac", "1"],
    },
    // MPEG-2.5 Layer III.
    Recipe {
        name: "mpeg25-11025-mono.mp3",
        sample_rate: 11_025,
        seconds: 3.0,
        args: &["-c:a", "libmp3lame", "-b:a", "16k", "-ac", "1"],
    },
    Recipe {
        name: "mpeg25-8000-vbr.mp3",
        sample_rate: 8_000,
        seconds: 3.0,
        args: &["-c:a", "libmp3lame", "-q:a", "6", "-ac", "1"],
    },
    // Only an ID3v1 tag (ffmpeg's ID3v1 writer wants the ID3v2 key names),
    // and no Info header.
    Recipe {
        name: "id3v1-only.mp3",
        sample_rate: 44_100,
        seconds: 2.0,
        args: &[
            "-c:a",
            "libmp3lame",
            "-b:a",
            "96k",
            "-id3v2_version",
            "0",
            "-write_id3v1",
            "1",
            "-write_xing",
            "0",
            "-metadata",
            "TIT2=Only in ID3v1",
            "-metadata",
            "TPE1=Old Tagger",
        ],
    },
    // Layer II, as radio streams carry it: MPEG-1 and MPEG-2 (LSF).
    Recipe {
        name: "layer2-44100.mp2",
        sample_rate: 44_100,
        seconds: 3.0,
        args: &["-c:a", "mp2", "-b:a", "192k", "-ac", "2", "-f", "mp2"],
    },
    Recipe {
        name: "layer2-24000-mono.mp2",
        sample_rate: 24_000,
        seconds: 3.0,
        args: &["-c:a", "mp2", "-b:a", "64k", "-ac", "1", "-f", "mp2"],
    },
];

fn require(tool: &str) {
    match Command::new(tool)
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => {}
        other => panic!("{tool} is needed ({other:?}): run the README's test command (tools/test), which installs it"),
    }
}

fn scratch() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("mp3-reference");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

/// Runs `cmd` and returns its stdout, panicking with its stderr on failure.
fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The generated files, made once per test process, all encodes at once.
fn media() -> &'static [(&'static Recipe, PathBuf)] {
    static MEDIA: OnceLock<Vec<(&'static Recipe, PathBuf)>> = OnceLock::new();
    MEDIA.get_or_init(|| {
        require("ffmpeg");
        require("ffprobe");
        let dir = scratch();
        let jobs: Vec<_> = RECIPES
            .iter()
            .map(|r| {
                let path = dir.join(r.name);
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
                .arg(format!(
                    "sine=frequency=440:sample_rate={}:duration={}",
                    r.sample_rate, r.seconds
                ))
                .args(r.args)
                .arg(&path);
                (r, path, std::thread::spawn(move || run(&mut cmd)))
            })
            .collect();
        jobs.into_iter()
            .map(|(r, path, job)| {
                job.join().expect("the encode thread");
                (r, path)
            })
            .collect()
    })
}

/// What ffprobe says about a file.
#[derive(Debug, Default)]
struct Probe {
    /// (pos, size, pts, duration) of every packet, in stream time base.
    packets: Vec<(u64, u64, u64, u64)>,
    stream: HashMap<String, String>,
    format: HashMap<String, String>,
    time_base: (u64, u64),
    /// The samples ffmpeg drops from the last packet (from the LAME tag).
    discard_padding: Option<u64>,
}

impl Probe {
    fn of(path: &Path) -> Probe {
        let out = run(Command::new("ffprobe")
            .args(["-v", "error", "-show_packets", "-show_entries"])
            .arg(
                "packet=pos,size,pts,duration:stream=codec_name,sample_rate,channels,time_base,start_time,bit_rate:\
                 format=duration:format_tags=title,artist",
            )
            .args(["-of", "compact"])
            .arg(path));
        let mut p = Probe::default();
        for line in String::from_utf8(out).expect("ffprobe writes UTF-8").lines() {
            let mut fields = line.split('|');
            let section = fields.next().unwrap_or_default();
            let map: HashMap<String, String> = fields
                .filter_map(|f| f.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            let num = |k: &str| -> u64 {
                map.get(k)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("ffprobe gave no {k} in {line}"))
            };
            match section {
                "packet" => {
                    p.packets.push((num("pos"), num("size"), num("pts"), num("duration")));
                    p.discard_padding = map
                        .get("discard_padding")
                        .and_then(|v| v.parse().ok())
                        .filter(|&n| n > 0);
                }
                "stream" => p.stream = map,
                "format" => p.format = map,
                _ => {}
            }
        }
        let tb = &p.stream["time_base"];
        let (n, d) = tb.split_once('/').expect("a time base like 1/14112000");
        p.time_base = (n.parse().unwrap(), d.parse().unwrap());
        p
    }

    /// `ticks` of the stream time base in nanoseconds, rounded down.
    fn ns(&self, ticks: u64) -> u64 {
        (u128::from(ticks) * u128::from(self.time_base.0) * 1_000_000_000 / u128::from(self.time_base.1)) as u64
    }

    fn secs(map: &HashMap<String, String>, key: &str) -> f64 {
        map[key]
            .parse()
            .unwrap_or_else(|_| panic!("{key}={} is not a number", map[key]))
    }
}

/// Decodes `path` to PCM with ffmpeg and returns its MD5. The decoder is told
/// not to drop the encoder delay and padding (`skip_manual`): the frames the
/// loader hands out carry no LAME tag to say how much they are.
fn pcm_md5(path: &Path) -> String {
    let out = run(Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-nostdin",
            "-loglevel",
            "error",
            "-flags2",
            "+skip_manual",
            "-i",
        ])
        .arg(path)
        .args(["-f", "md5", "-"]));
    String::from_utf8(out).unwrap().trim().to_owned()
}

#[test]
fn every_frame_matches_ffprobe() {
    for (recipe, path) in media() {
        let name = recipe.name;
        let mp3 = Mp3::open(path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let probe = Probe::of(path);
        assert!(mp3.problems().is_empty(), "{name}: {:?}", mp3.problems());

        // The stream: layer, sample rate, channels.
        let h = mp3.header();
        let layer = match probe.stream["codec_name"].as_str() {
            "mp3" => Layer::III,
            "mp2" => Layer::II,
            other => panic!("{name}: ffprobe says {other}"),
        };
        assert_eq!(h.layer, layer, "{name}");
        assert_eq!(h.sample_rate.to_string(), probe.stream["sample_rate"], "{name}");
        assert_eq!(
            h.channel_mode.channels().to_string(),
            probe.stream["channels"],
            "{name}"
        );
        assert_eq!(h.sample_rate, recipe.sample_rate, "{name}");

        // Every frame where ffprobe's packets are, starting when they do.
        let frames = mp3.frames();
        assert_eq!(frames.len(), probe.packets.len(), "{name}: frame count");
        for (i, (f, &(pos, size, pts, _))) in frames.iter().zip(&probe.packets).enumerate() {
            assert_eq!((f.offset, u64::from(f.len)), (pos, size), "{name}: frame {i}");
            assert_eq!(f.start_ns, probe.ns(pts), "{name}: frame {i} start");
        }
        let total: u64 = probe.packets.iter().map(|p| p.3).sum();
        assert_eq!(mp3.duration_ns(), probe.ns(total), "{name}: duration");
        assert_eq!(
            mp3.audio_bytes(),
            probe.packets.iter().map(|p| p.1).sum::<u64>(),
            "{name}"
        );

        // The byte offset due at times all over the timeline: the end of the
        // last packet that has started by then.
        let end = mp3.duration_ns();
        for k in 0..=97u64 {
            let t = end / 97 * k + k * 7919;
            let expected = probe
                .packets
                .iter()
                .filter(|p| probe.ns(p.2) <= t)
                .map(|p| p.0 + p.1)
                .next_back()
                .unwrap_or(probe.packets[0].0 + probe.packets[0].1);
            assert_eq!(mp3.offset_due(t), expected, "{name}: due at {t} ns");
        }

        // CBR files have ffprobe's nominal bit rate on every frame.
        if let Some(rate) = mp3.constant_bit_rate() {
            assert_eq!(rate.to_string(), probe.stream["bit_rate"], "{name}");
            let avg = f64::from(mp3.average_bit_rate());
            assert!(
                (avg / f64::from(rate) - 1.0).abs() < 0.002,
                "{name}: average {avg} vs {rate}"
            );
        }
    }
}

#[test]
fn tags_match_ffprobe() {
    for (recipe, path) in media() {
        let name = recipe.name;
        let mp3 = Mp3::open(path).unwrap();
        let probe = Probe::of(path);
        assert_eq!(mp3.title(), probe.format.get("tag:title").map(String::as_str), "{name}");
        assert_eq!(
            mp3.artist(),
            probe.format.get("tag:artist").map(String::as_str),
            "{name}"
        );
    }
    // And they are what was written, in every encoding ffmpeg chose.
    let tagged = |n: &str| Mp3::open(&media().iter().find(|(r, _)| r.name == n).unwrap().1).unwrap();
    let cbr = tagged("cbr-128k-stereo.mp3");
    assert_eq!((cbr.title(), cbr.artist()), (Some(TITLE_V23), Some("Tëster")));
    assert_eq!(tagged("vbr-q4-stereo.mp3").title(), Some(TITLE_V24));
    let v1 = tagged("id3v1-only.mp3");
    assert!(v1.id3v2().is_none());
    assert_eq!((v1.title(), v1.artist()), (Some("Only in ID3v1"), Some("Old Tagger")));
    assert_eq!(tagged("layer2-44100.mp2").title(), None);
}

#[test]
fn vbr_headers_say_what_ffmpeg_reads() {
    for (recipe, path) in media() {
        let name = recipe.name;
        let mp3 = Mp3::open(path).unwrap();
        let probe = Probe::of(path);
        let start = Probe::secs(&probe.stream, "start_time");
        let Some((span, v)) = mp3.vbr_header() else {
            // No header frame: Layer II, or written without one.
            assert!(name.ends_with(".mp2") || name == "id3v1-only.mp3", "{name}");
            assert_eq!(start, 0.0, "{name}");
            continue;
        };
        let expect_kind = if name.contains("vbr") {
            VbrKind::Xing
        } else {
            VbrKind::Info
        };
        assert_eq!(v.kind, expect_kind, "{name}");
        // The header frame precedes the first audio frame and is not one.
        assert_eq!(span.end(), mp3.frames()[0].offset, "{name}");
        // ffmpeg takes the file's duration from the header's frame count...
        let spf = f64::from(mp3.header().samples());
        let sr = f64::from(mp3.header().sample_rate);
        let frames = f64::from(v.frames.expect("a frame count"));
        let duration = Probe::secs(&probe.format, "duration");
        assert!(
            (frames * spf / sr - duration).abs() < 1e-5,
            "{name}: {frames} frames vs {duration} s"
        );
        // ...and its start from the LAME tag's delay plus the decoder's 529.
        let delay = f64::from(v.delay.expect("a LAME tag"));
        assert!(
            ((delay + 529.0) / sr - start).abs() < 1e-5,
            "{name}: delay {delay} vs start {start}"
        );
        // ffmpeg drops the padding, less the decoder delay, from the last packet.
        let padding = u64::from(v.padding.expect("a LAME tag"));
        assert_eq!(
            probe.discard_padding,
            padding.checked_sub(529).filter(|&n| n > 0),
            "{name}"
        );
        // The byte count covers the header frame and the audio.
        assert_eq!(
            u64::from(v.bytes.unwrap()),
            mp3.audio_bytes() + u64::from(span.len),
            "{name}"
        );
    }
}

#[test]
fn the_frames_alone_decode_to_the_files_pcm() {
    let dir = scratch();
    for (recipe, path) in media() {
        let mp3 = Mp3::open(path).unwrap();
        let mut stream = Vec::new();
        for span in mp3.spans(0..mp3.frames().len()) {
            stream.extend_from_slice(&mp3.slice(span));
        }
        let out = dir.join(format!("frames-of-{}", recipe.name));
        std::fs::write(&out, &stream).unwrap();
        assert_eq!(pcm_md5(&out), pcm_md5(path), "{}", recipe.name);
    }
}

#[test]
fn a_cut_file_drops_its_last_frame_as_ffprobe_shows_it() {
    let (_, path) = &media()[0];
    let whole = std::fs::read(path).unwrap();
    let full = Probe::of(path);
    let (at, len, _, _) = full.packets[full.packets.len() / 2];
    let dir = scratch();
    for (i, keep) in [2u64, 100, len - 1].into_iter().enumerate() {
        let cut = &whole[..(at + keep) as usize];
        let out = dir.join(format!("cut-{i}.mp3"));
        std::fs::write(&out, cut).unwrap();
        // ffmpeg hands the fragment out as a short last packet.
        let probe = Probe::of(&out);
        let &(pos, size, _, _) = probe.packets.last().unwrap();
        assert_eq!(pos + size, cut.len() as u64);
        let m = Mp3::from_bytes(cut.to_vec()).unwrap();
        let n = probe.packets.len() - 1;
        assert_eq!(m.frames().len(), n, "cut {keep}");
        for (f, p) in m.frames().iter().zip(&probe.packets) {
            assert_eq!((f.offset, u64::from(f.len)), (p.0, p.1));
        }
        assert_eq!((pos, size), (at, keep));
        let expected = if keep >= 4 {
            Problem::Truncated {
                offset: pos,
                len: size,
                expected: len as u32,
            }
        } else {
            Problem::Skipped { offset: pos, len: size }
        };
        assert_eq!(m.problems(), [expected], "cut {keep}");
    }
}
