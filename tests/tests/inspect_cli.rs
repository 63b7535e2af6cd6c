//! `streamalot inspect`, driven as a user drives it: the real binary, real
//! files, exit status, stdout and stderr.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Output};

use loader::Movie;
use serde_json::Value;
use streamalot_tests::media::media;
use streamalot_tests::rtp::{ffmpeg_rtp, ffmpeg_stream_for};
use streamalot_tests::{run, scratch_dir, streamalot_binary};

fn inspect<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(streamalot_binary());
    cmd.arg("inspect").args(args);
    // Keep log lines out of stderr checks whatever the caller's environment.
    cmd.env_remove("RUST_LOG");
    run(&mut cmd)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `inspect` expecting success and returns stdout.
fn inspect_ok<I, S>(args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<S> = args.into_iter().collect();
    let shown: Vec<String> = args.iter().map(|a| a.as_ref().to_string_lossy().into_owned()).collect();
    let out = inspect(&args);
    assert!(
        out.status.success(),
        "streamalot inspect {} failed ({}):\n{}",
        shown.join(" "),
        out.status,
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn inspect_json(file: &Path, extra: &[&str]) -> Value {
    let mut args = vec![file.as_os_str(), OsStr::new("--json")];
    args.extend(extra.iter().map(OsStr::new));
    let stdout = inspect_ok(&args);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("inspect --json output is not JSON ({e}):\n{stdout}"))
}

#[test]
fn json_lists_tracks_packets_and_sdp() {
    let mut failures = Vec::new();
    for clip in &media().hinted {
        let movie = Movie::open(&clip.path).unwrap_or_else(|e| panic!("{}: {e}", clip.name));
        let json = inspect_json(&clip.path, &[]);
        let name = clip.name;
        assert!(
            json.get("packets").is_none(),
            "{name}: `packets` should appear only with --packets"
        );
        let tracks = json["tracks"]
            .as_array()
            .unwrap_or_else(|| panic!("{name}: no `tracks` array in {json}"));
        let handlers: Vec<(u64, &str)> = tracks
            .iter()
            .map(|t| (t["id"].as_u64().unwrap_or(0), t["handler"].as_str().unwrap_or("?")))
            .collect();
        let expected: Vec<(u64, String)> = movie
            .tracks()
            .iter()
            .map(|t| (u64::from(t.id), t.handler.to_string()))
            .collect();
        let expected: Vec<(u64, &str)> = expected.iter().map(|(id, h)| (*id, h.as_str())).collect();
        if handlers != expected {
            failures.push(format!("{name}: tracks {handlers:?}, the file has {expected:?}"));
        }
        for kind in ["vide", "soun", "hint"] {
            if !handlers.iter().any(|(_, h)| *h == kind) {
                failures.push(format!("{name}: no `{kind}` track in {handlers:?}"));
            }
        }
        let sdp = json["sdp"].as_str().unwrap_or_default();
        for line in ["m=video ", "m=audio ", "a=range:npt=0-"] {
            if !sdp.contains(line) {
                failures.push(format!("{name}: SDP lacks `{line}`:\n{sdp}"));
            }
        }
        for hint in movie.hint_tracks() {
            let t = tracks
                .iter()
                .find(|t| t["id"].as_u64() == Some(u64::from(hint.id)))
                .expect("every track is listed");
            let references: Vec<u64> = t["references"]
                .as_array()
                .map(|r| r.iter().filter_map(Value::as_u64).collect())
                .unwrap_or_default();
            let expected_refs: Vec<u64> = hint.references.iter().map(|&r| u64::from(r)).collect();
            if references.is_empty() || references != expected_refs {
                failures.push(format!(
                    "{name}: hint track {} lists references {references:?}, its tref/hint has {expected_refs:?}",
                    hint.id
                ));
            }
            // The count must be what ffmpeg's RTP muxer sends for the stream
            // (the reference test checks the packets themselves).
            let sent = ffmpeg_rtp(&clip.path, &ffmpeg_stream_for(&movie, hint)).packets.len();
            if t["packets"].as_u64() != Some(sent as u64) {
                failures.push(format!(
                    "{name}: hint track {} has `packets` {}, ffmpeg sends {sent}",
                    hint.id, t["packets"]
                ));
            }
            let control = format!("a=control:trackID={}\r\n", hint.id);
            if !sdp.contains(&control) {
                failures.push(format!("{name}: SDP lacks `{}`:\n{sdp}", control.trim_end()));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn packets_option_lists_that_many_packets() {
    let path = media().h264_mp4();
    let movie = Movie::open(path).expect("the H.264 clip opens");
    let expected: Vec<loader::Packet> = movie
        .all_packets()
        .take(5)
        .collect::<Result<_, _>>()
        .expect("the first packets decode");

    let json = inspect_json(path, &["--packets", "5"]);
    let packets = json["packets"].as_array().expect("a `packets` array with --packets");
    assert_eq!(packets.len(), 5, "--packets 5 --json lists: {packets:?}");
    for (i, (got, want)) in packets.iter().zip(&expected).enumerate() {
        let fields = (
            got["track"].as_u64(),
            got["seq"].as_u64(),
            got["timestamp"].as_u64(),
            got["size"].as_u64(),
        );
        let want_fields = (
            Some(u64::from(want.track_id)),
            Some(u64::from(want.sequence)),
            Some(u64::from(want.timestamp)),
            Some(want.payload_len() as u64),
        );
        assert_eq!(
            fields, want_fields,
            "packet {i}: inspect's (track, seq, timestamp, size) against the loader's"
        );
    }

    // The text form: a header line, a column heading, then one line a packet.
    let stdout = inspect_ok([path.as_os_str(), OsStr::new("--packets"), OsStr::new("5")]);
    let listed: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("Packets"))
        .skip(2)
        .take_while(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(listed.len(), 5, "--packets 5 lists:\n{}", listed.join("\n"));
    let first_track = listed[0].split_whitespace().nth(1);
    assert_eq!(first_track, Some(expected[0].track_id.to_string().as_str()), "{stdout}");
}

#[test]
fn text_output_describes_the_movie() {
    let path = media().h264_mp4();
    let stdout = inspect_ok([path]);
    let movie = Movie::open(path).expect("the H.264 clip opens");
    for hint in movie.hint_tracks() {
        assert!(
            stdout.contains(&format!("hint track {}: RTP clock", hint.id)),
            "no line for hint track {}:\n{stdout}",
            hint.id
        );
    }
    assert!(
        stdout.contains("SDP:") && stdout.contains("a=control:trackID="),
        "{stdout}"
    );
}

/// Runs `inspect` on `file`, which must fail, and returns stderr after
/// checking that it failed cleanly: a non-zero exit, a one-line reason, and
/// no panic.
fn inspect_fails(file: &Path, what: &str) -> String {
    let out = inspect([file]);
    let stderr = text(&out.stderr);
    assert!(
        !out.status.success(),
        "inspect of {what} should fail, but exited with {}; stdout:\n{}",
        out.status,
        text(&out.stdout)
    );
    assert!(!stderr.contains("panicked"), "inspect of {what} panicked:\n{stderr}");
    assert_eq!(
        out.status.code(),
        Some(1),
        "inspect of {what} should exit with status 1 (not be killed by a signal or abort); stderr:\n{stderr}"
    );
    assert!(
        stderr.starts_with("streamalot: ") && stderr.trim().len() > "streamalot:".len(),
        "inspect of {what} should say why it failed:\n{stderr}"
    );
    stderr
}

#[test]
fn movie_without_hint_tracks_is_refused() {
    let stderr = inspect_fails(&media().unhinted, "a movie without hint tracks");
    assert!(stderr.contains("no RTP hint tracks"), "{stderr}");
}

#[test]
fn missing_file_is_reported() {
    let missing = scratch_dir().join("no-such-movie.mp4");
    let stderr = inspect_fails(&missing, "a missing file");
    assert!(
        stderr.contains("cannot open") && stderr.contains("no-such-movie.mp4"),
        "the message should name the file it cannot open:\n{stderr}"
    );
}

#[test]
fn garbage_files_fail_cleanly() {
    let dir = scratch_dir().join("garbage");
    std::fs::create_dir_all(&dir).expect("create the garbage directory");
    let hinted = std::fs::read(media().h264_mp4()).expect("read the H.264 clip");
    // Deterministic noise: a linear congruential generator is plenty.
    let mut state: u32 = 0x2545_f491;
    let noise: Vec<u8> = (0..4096)
        .map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 24) as u8
        })
        .collect();
    let mut huge_box = 0xffff_fff0u32.to_be_bytes().to_vec();
    huge_box.extend_from_slice(b"moov");
    huge_box.extend_from_slice(&noise[..64]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty.mp4", Vec::new()),
        ("noise.mp4", noise.clone()),
        ("text.mov", b"this is not a movie\n".repeat(20)),
        ("huge-box.mp4", huge_box),
        // ffmpeg writes `moov` after the media: half a file has none.
        ("first-half.mp4", hinted[..hinted.len() / 2].to_vec()),
    ];
    for (name, bytes) in cases {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        inspect_fails(&path, name);
    }
}
