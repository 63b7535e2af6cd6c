//! The ICY interleaver held to real clients: the frames of `media/sample.mp3`
//! framed with metadata blocks every `icy-metaint` bytes, titles changing
//! along the way (apostrophes inside and at the end, a `';` that must not
//! cut the title short, a leading `;`, non-ASCII), served over HTTP from a socket in this test to ffmpeg and to
//! GStreamer's `souphttpsrc ! icydemux`. Each must hand back exactly the MP3
//! bytes that went in, and report every title, in order.
//!
//! ffmpeg and GStreamer (with its good plugins) must be installed (the
//! README's test command installs them); without them these tests fail and
//! say so, never pass quietly.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use loader::mp3::Mp3;
use streamalot::icecast::icy::{Interleaver, Metadata};

/// SHOUTcast's interval, smaller than Icecast's 16000: more blocks.
const METAINT: usize = 8192;

/// The titles, in order, and the titles a client must read back.
const TITLES: [(&str, &str); 7] = [
    ("Streamalot sample tone", "Streamalot sample tone"),
    ("Don't Stop", "Don't Stop"),
    ("Rock 'n' Roll", "Rock 'n' Roll"),
    ("Tricky';rest", "Tricky' ;rest"),
    ("Singin' in the Rain, Dancin'", "Singin' in the Rain, Dancin'"),
    (";-) at the start", " ;-) at the start"),
    ("Ünïcode \u{2603} 'quoted'", "Ünïcode \u{2603} 'quoted'"),
];

fn sample() -> Mp3 {
    Mp3::open(concat!(env!("CARGO_MANIFEST_DIR"), "/../media/sample.mp3")).expect("media/sample.mp3 is committed")
}

/// The frames alone, and the ICY stream of them: the title changes every
/// fifth of the way, between frames, and the audio goes in a frame at a
/// time, as a pacer would send it.
fn streams() -> (Vec<u8>, Vec<u8>) {
    let mp3 = sample();
    assert_eq!(mp3.title(), Some(TITLES[0].0), "the sample's own title comes first");
    let frames = mp3.frames();
    let mut icy = Interleaver::new(NonZeroUsize::new(METAINT).unwrap());
    let (mut audio, mut stream) = (Vec::new(), Vec::new());
    for (i, f) in frames.iter().enumerate() {
        let k = i * TITLES.len() / frames.len();
        if i == 0 || k != (i - 1) * TITLES.len() / frames.len() {
            icy.set_metadata(Metadata::title(TITLES[k].0));
        }
        let bytes = &mp3.data()[f.offset as usize..f.end() as usize];
        audio.extend_from_slice(bytes);
        icy.push(bytes, &mut stream);
    }
    // Each title change is more than one interval from the last, so each
    // reaches a block of its own.
    assert!(audio.len() / TITLES.len() > 2 * METAINT);
    (audio, stream)
}

/// Serves `body` once, as Icecast answers a listener that sent
/// `Icy-MetaData: 1`; returns the request it got.
fn serve_once(body: Vec<u8>) -> (String, thread::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/sample.mp3", listener.local_addr().unwrap());
    let handle = thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut request = Vec::new();
        let mut buf = [0; 4096];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = conn.read(&mut buf).unwrap();
            assert!(n > 0, "the client closed before its request ended");
            request.extend_from_slice(&buf[..n]);
        }
        let request = String::from_utf8_lossy(&request).into_owned();
        assert!(
            request.lines().any(|l| l.eq_ignore_ascii_case("icy-metadata: 1")),
            "the client asks for metadata:\n{request}"
        );
        let head = format!(
            "HTTP/1.0 200 OK\r\nContent-Type: audio/mpeg\r\nicy-name: Streamalot test\r\nicy-metaint: {METAINT}\r\n\r\n"
        );
        // A client may close as soon as it has what it wants.
        let _ = conn.write_all(head.as_bytes()).and_then(|()| conn.write_all(&body));
        request
    });
    (url, handle)
}

/// Runs `cmd` to completion, killing it after a minute: a bound on hangs.
fn run(cmd: &mut Command) -> Output {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run {what} ({e}): run the README's test command (tools/test), which installs it")
        });
    let mut err = child.stderr.take().unwrap();
    let mut out = child.stdout.take().unwrap();
    let stderr = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let stdout = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} still running after a minute");
        }
        thread::sleep(Duration::from_millis(10));
    };
    let output = Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    };
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("icy-clients");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn expected_titles() -> Vec<&'static str> {
    TITLES.iter().map(|t| t.1).collect()
}

#[test]
fn ffmpeg_reads_every_title_and_the_exact_frames() {
    let (audio, stream) = streams();
    let (url, server) = serve_once(stream);
    let out = scratch("from-ffmpeg.mp3");
    // Copy the frames out as they come: no ID3 tag, no Xing header added.
    let o = run(Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "verbose", "-y", "-i"])
        .arg(&url)
        .args(["-c", "copy", "-f", "mp3", "-id3v2_version", "0", "-write_xing", "0"])
        .arg(&out));
    server.join().unwrap();
    let log = String::from_utf8_lossy(&o.stderr);
    let titles: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split_once("Metadata update for StreamTitle: ").map(|(_, t)| t))
        .collect();
    assert_eq!(titles, expected_titles(), "{log}");
    let got = std::fs::read(&out).unwrap();
    assert!(
        got == audio,
        "ffmpeg's frames differ: {} bytes, {} sent",
        got.len(),
        audio.len()
    );
}

#[test]
fn gstreamer_icydemux_reads_every_title_and_the_exact_frames() {
    let (audio, stream) = streams();
    let (url, server) = serve_once(stream);
    let out = scratch("from-gstreamer.mp3");
    let o = run(Command::new("gst-launch-1.0")
        .args(["-t", "souphttpsrc"])
        .arg(format!("location={url}"))
        .args(["iradio-mode=true", "!", "icydemux", "!", "filesink"])
        .arg(format!("location={}", out.display())));
    let request = server.join().unwrap();
    assert!(request.contains("GET /sample.mp3"), "{request}");
    let log = String::from_utf8_lossy(&o.stdout);
    let titles: Vec<&str> = log
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("title: "))
        .collect();
    assert_eq!(titles, expected_titles(), "{log}");
    let got = std::fs::read(&out).unwrap();
    assert!(
        got == audio,
        "icydemux's audio differs: {} bytes, {} sent",
        got.len(),
        audio.len()
    );
}
