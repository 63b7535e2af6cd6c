//! MP3 files served to Icecast listeners, held to real clients: ffmpeg
//! decodes what it receives to the file's PCM, GStreamer's `souphttpsrc !
//! icydemux` reads the exact frames and the title, a client of this test
//! strips the ICY metadata every `icy-metaint` bytes and gets the frames
//! ffmpeg copies out of the file, the bytes arrive at the file's bit rate
//! after the burst, 200 listeners at once each get the whole stream, and
//! hostile files, slow listeners and the listener limit each get their
//! answer while a good listener plays on untouched; VLC reads the title
//! and decodes the file's tone.
//!
//! The media are made here by ffmpeg (`libmp3lame`, CBR and VBR, with ID3
//! tags). Each stream takes its file's length less the burst to arrive (it
//! is paced), so the files are short and the listeners run side by side.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use streamalot_tests::icecast::{frames_of, stream_title, strip};
use streamalot_tests::server::{library, Server};
use streamalot_tests::{require_tool, run_ok, scratch_dir};

/// The burst the server promises: two seconds of audio at once.
const BURST_SECS: f64 = 2.0;

struct Song {
    path: PathBuf,
    /// The audio frames alone, as ffmpeg copies them out of the file (no
    /// ID3 tags, no Xing/Info frame): what a listener must receive.
    frames: Vec<u8>,
    /// "Artist - Title", as the tags say.
    title: &'static str,
    kbps: u32,
}

/// A tone that changes loudness every half second, so that VBR frames
/// vary in size.
fn encode(name: &str, seconds: u32, args: &[&str]) -> PathBuf {
    require_tool("ffmpeg");
    let path = scratch_dir().join(name);
    run_ok(
        Command::new("ffmpeg")
            .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i"])
            .arg(format!(
                "aevalsrc=exprs='sin(2*PI*440*t)*if(lt(mod(t\\,1)\\,0.5)\\,0.8\\,0.05)|sin(2*PI*660*t)*0.3':s=44100:d={seconds}"
            ))
            .args(["-c:a", "libmp3lame"])
            .args(args)
            .arg(&path),
    );
    path
}

fn songs() -> &'static [Song; 3] {
    static SONGS: OnceLock<[Song; 3]> = OnceLock::new();
    SONGS.get_or_init(|| {
        let cbr = thread::spawn(|| {
            encode(
                "cbr.mp3",
                6,
                &[
                    "-b:a",
                    "128k",
                    "-metadata",
                    "title=Steady Tone",
                    "-metadata",
                    "artist=The Sines",
                ],
            )
        });
        let vbr = thread::spawn(|| {
            encode(
                "vbr.mp3",
                6,
                &[
                    "-q:a",
                    "2",
                    "-id3v2_version",
                    "4",
                    "-metadata",
                    "title=Wobbly \u{2603} Tone",
                ],
            )
        });
        let long = thread::spawn(|| encode("long.mp3", 14, &["-b:a", "128k", "-metadata", "title=Long"]));
        let song = |path: PathBuf, title, kbps| Song {
            frames: frames_of(&path),
            path,
            title,
            kbps,
        };
        [
            song(cbr.join().unwrap(), "The Sines - Steady Tone", 128),
            song(vbr.join().unwrap(), "Wobbly \u{2603} Tone", 0),
            song(long.join().unwrap(), "Long", 128),
        ]
    })
}

fn cbr() -> &'static Song {
    &songs()[0]
}

fn vbr() -> &'static Song {
    &songs()[1]
}

fn long() -> &'static Song {
    &songs()[2]
}

fn serve(name: &str, files: &[&Path], extra: &[&str]) -> Server {
    Server::start(&library(name, files), extra)
}

/// What a listener received: the response head, and the body with the
/// time each part of it arrived.
struct Received {
    head: String,
    body: Vec<u8>,
    /// (since the request, bytes so far) after each read.
    arrivals: Vec<(Duration, usize)>,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    fn status_line(&self) -> &str {
        self.head.lines().next().unwrap_or_default()
    }
}

fn request(addr: SocketAddr, text: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(text.as_bytes()).unwrap();
    s
}

/// Sends `text` and reads until the server closes.
fn listen(addr: SocketAddr, text: &str) -> Received {
    let start = Instant::now();
    let mut s = request(addr, text);
    let mut all = Vec::new();
    let mut arrivals = Vec::new();
    let mut buf = vec![0; 64 * 1024];
    let mut head_len = None;
    loop {
        let n = match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => panic!("reading {text:?}: {e} after {} bytes", all.len()),
        };
        all.extend_from_slice(&buf[..n]);
        if head_len.is_none() {
            head_len = all.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4);
        }
        if let Some(h) = head_len {
            arrivals.push((start.elapsed(), all.len() - h));
            // A whole response (a refusal, which keeps the connection open):
            // its body has a length.
            let head = String::from_utf8_lossy(&all[..h]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:")?.trim().parse::<usize>().ok());
            if length.is_some_and(|n| all.len() - h >= n) || (length.is_some() && text.starts_with("HEAD ")) {
                break;
            }
        }
    }
    let h = head_len.unwrap_or_else(|| panic!("no response head: {:?}", String::from_utf8_lossy(&all)));
    Received {
        head: String::from_utf8_lossy(&all[..h]).into_owned(),
        body: all[h..].to_vec(),
        arrivals,
    }
}

fn get(path: &str, headers: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: test\r\nUser-Agent: icecast-test\r\n{headers}\r\n")
}

/// Decodes `input` with ffmpeg to PCM and returns its MD5, without dropping
/// the encoder's delay and padding (the stream has no LAME tag to say how
/// much they are; the file's would).
fn pcm_md5(input: &str) -> String {
    let out = run_ok(
        Command::new("ffmpeg")
            .args([
                "-hide_banner",
                "-nostdin",
                "-loglevel",
                "error",
                "-flags2",
                "+skip_manual",
                "-i",
            ])
            .arg(input)
            .args(["-f", "md5", "-"]),
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn ffmpeg_decodes_what_it_receives_to_the_files_pcm() {
    let (cbr, vbr) = (cbr(), vbr());
    let server = serve("ffmpeg", &[&cbr.path, &vbr.path], &[]);
    // ffmpeg asks for ICY metadata (`Icy-MetaData: 1`) and strips it.
    let jobs: Vec<_> = [cbr, vbr]
        .into_iter()
        .map(|song| {
            let url = format!(
                "http://{}/{}",
                server.addr,
                song.path.file_name().unwrap().to_str().unwrap()
            );
            let path = song.path.clone();
            thread::spawn(move || (pcm_md5(&url), pcm_md5(path.to_str().unwrap()), url))
        })
        .collect();
    for job in jobs {
        let (got, want, url) = job.join().unwrap();
        println!("{url}: PCM md5 {got}");
        assert_eq!(got, want, "{url} decodes to other PCM than the file");
    }
    let records = server.wait_for_records(2, Duration::from_secs(10));
    for r in &records {
        assert_eq!(r["c-status"], "200", "{r:?}");
        assert!(r["cs(User-Agent)"].starts_with("Lavf"), "{r:?}");
    }
    server.stop_cleanly();
}

#[test]
fn icy_metadata_comes_every_metaint_bytes_around_the_exact_frames() {
    let (cbr, vbr) = (cbr(), vbr());
    let server = serve("icy", &[&cbr.path, &vbr.path], &[]);
    let addr = server.addr;
    let jobs: Vec<_> = [cbr, vbr]
        .into_iter()
        .map(|song| {
            let path = format!("/{}", song.path.file_name().unwrap().to_str().unwrap());
            thread::spawn(move || listen(addr, &get(&path, "Icy-MetaData: 1\r\n")))
        })
        .collect();
    for (song, job) in [cbr, vbr].into_iter().zip(jobs) {
        let got = job.join().unwrap();
        assert_eq!(got.status_line(), "HTTP/1.1 200 OK", "{}", got.head);
        assert_eq!(got.header("Content-Type"), Some("audio/mpeg"), "{}", got.head);
        assert_eq!(got.header("icy-name"), Some(song.title), "{}", got.head);
        assert_eq!(got.header("Content-Length"), None, "{}", got.head);
        let br: u32 = got.header("icy-br").unwrap().parse().unwrap();
        if song.kbps > 0 {
            assert_eq!(br, song.kbps);
        } else {
            // The average: the frames' bytes over their time.
            assert!(br > 32 && br < 320, "{br}");
        }
        let metaint: usize = got.header("icy-metaint").expect("icy-metaint").parse().unwrap();
        let (audio, blocks) = strip(&got.body, metaint);
        assert!(
            audio == song.frames,
            "{}: {} audio bytes after stripping, the file has {} in frames",
            song.title,
            audio.len(),
            song.frames.len()
        );
        assert!(audio.len() > 3 * metaint, "the test needs several blocks");
        assert_eq!(blocks.len(), 1, "the title once, then zero bytes: {blocks:?}");
        assert_eq!(stream_title(&blocks[0]), Some(song.title), "{blocks:?}");
        println!(
            "{}: {} bytes, {} of them audio, metaint {metaint}, title {:?}",
            song.title,
            got.body.len(),
            audio.len(),
            blocks[0]
        );
    }
    server.stop_cleanly();
}

#[test]
fn the_status_line_head_range_and_plain_requests() {
    let cbr = cbr();
    let server = serve("heads", &[&cbr.path], &[]);
    let addr = server.addr;
    // A SHOUTcast-era player gets `ICY 200 OK`.
    let winamp = thread::spawn(move || {
        listen(
            addr,
            "GET /cbr.mp3 HTTP/1.0\r\nUser-Agent: WinampMPEG/5.66\r\nIcy-MetaData: 1\r\n\r\n",
        )
    });
    // Without Icy-MetaData: the frames alone; a Range is ignored.
    let ranged = thread::spawn(move || listen(addr, &get("/cbr.mp3", "Range: bytes=1000-\r\n")));
    // HEAD: the head alone.
    let head = listen(addr, "HEAD /cbr.mp3 HTTP/1.1\r\nHost: t\r\nIcy-MetaData: 1\r\n\r\n");
    assert_eq!(head.status_line(), "HTTP/1.1 200 OK");
    assert_eq!(head.header("Content-Type"), Some("audio/mpeg"));
    assert_eq!(head.header("icy-metaint"), Some("16000"));
    assert!(head.body.is_empty(), "{} body bytes", head.body.len());

    let w = winamp.join().unwrap();
    assert_eq!(w.status_line(), "ICY 200 OK", "{}", w.head);
    let metaint: usize = w.header("icy-metaint").unwrap().parse().unwrap();
    assert_eq!(strip(&w.body, metaint).0, cbr.frames);

    let r = ranged.join().unwrap();
    assert_eq!(
        r.status_line(),
        "HTTP/1.1 200 OK",
        "a range is not served: the stream is"
    );
    assert_eq!(r.header("Accept-Ranges"), Some("none"));
    assert_eq!(r.header("icy-metaint"), None);
    assert!(
        r.body == cbr.frames,
        "{} bytes, {} in the file's frames",
        r.body.len(),
        cbr.frames.len()
    );
    server.stop_cleanly();
}

#[test]
fn bytes_arrive_at_the_files_bit_rate_after_the_burst() {
    let song = long();
    let server = serve("rate", &[&song.path], &[]);
    let got = listen(server.addr, &get("/long.mp3", ""));
    assert!(got.body == song.frames);
    let rate = song.kbps as f64 * 1000.0 / 8.0;
    let at = |t: f64| -> usize {
        got.arrivals
            .iter()
            .take_while(|(d, _)| d.as_secs_f64() <= t)
            .last()
            .map_or(0, |a| a.1)
    };
    let burst = at(0.5);
    println!(
        "burst: {burst} bytes in the first 0.5 s ({:.2} s of audio)",
        burst as f64 / rate
    );
    assert!(
        burst as f64 >= 0.95 * BURST_SECS * rate,
        "the burst: {burst} bytes within half a second"
    );
    // A window after the burst, well before the end (the stream ends 12 s
    // in): the bytes that arrived in it against the bit rate over its
    // measured length.
    let (from, to) = (3.0, 10.0);
    let (t0, b0) = got
        .arrivals
        .iter()
        .find(|(d, _)| d.as_secs_f64() >= from)
        .copied()
        .unwrap();
    let (t1, b1) = got
        .arrivals
        .iter()
        .find(|(d, _)| d.as_secs_f64() >= to)
        .copied()
        .unwrap();
    let window = (t1 - t0).as_secs_f64();
    let expected = rate * window;
    let received = (b1 - b0) as f64;
    println!(
        "{received} bytes in {window:.3} s: {:.1} kbit/s, the file's {} kbit/s ({:+.2}%)",
        received * 8.0 / window / 1000.0,
        song.kbps,
        (received / expected - 1.0) * 100.0
    );
    assert!(
        (received - expected).abs() <= 0.05 * expected,
        "{received} bytes where {expected:.0} were due"
    );
    server.stop_cleanly();
}

/// (start time in seconds, bytes) of each of `path`'s audio frames, as
/// ffprobe reads them.
fn frame_times(path: &Path) -> Vec<(f64, usize)> {
    let out = run_ok(
        Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-select_streams",
                "a:0",
                "-show_entries",
                "packet=pts_time,size",
            ])
            .args(["-of", "csv=p=0"])
            .arg(path),
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let (t, n) = l.split_once(',')?;
            Some((t.parse().ok()?, n.parse().ok()?))
        })
        .collect()
}

#[test]
fn vbr_bytes_arrive_as_the_frames_play() {
    require_tool("ffprobe");
    // Loud and quiet halves of each second: frame sizes swing with them.
    let path = encode("long-vbr.mp3", 14, &["-q:a", "0"]);
    let frames = frame_times(&path);
    let server = serve("vbr-rate", &[&path], &[]);
    let got = listen(server.addr, &get("/long-vbr.mp3", ""));
    assert!(got.body == frames_of(&path), "every frame");
    // What a listener has by media time `t`: every frame started by then.
    let due = |t: f64| -> usize { frames.iter().take_while(|f| f.0 <= t).map(|f| f.1).sum() };
    let arrival = |from: f64| {
        got.arrivals
            .iter()
            .find(|(d, _)| d.as_secs_f64() >= from)
            .copied()
            .unwrap()
    };
    let ((t0, b0), (t1, b1)) = (arrival(3.0), arrival(10.0));
    // Received at wall time t since the request: media time t + the burst.
    let expected = (due(t1.as_secs_f64() + BURST_SECS) - due(t0.as_secs_f64() + BURST_SECS)) as f64;
    let received = (b1 - b0) as f64;
    let (lo, hi) = frames
        .iter()
        .fold((usize::MAX, 0), |(lo, hi), f| (lo.min(f.1), hi.max(f.1)));
    println!(
        "VBR ({lo} to {hi} bytes a frame): {received} bytes from {:.3} s to {:.3} s, {expected} due by the frames' times ({:+.2}%)",
        t0.as_secs_f64(),
        t1.as_secs_f64(),
        (received / expected - 1.0) * 100.0
    );
    assert!(
        hi > lo + lo / 4,
        "the test needs frames of different sizes: {lo} to {hi}"
    );
    assert!(
        (received - expected).abs() <= 0.05 * expected,
        "{received} bytes where {expected} were due"
    );
    server.stop_cleanly();
}

#[test]
fn two_hundred_listeners_at_once_each_get_the_whole_stream() {
    let cbr = cbr();
    let server = serve("many", &[&cbr.path], &[]);
    let addr = server.addr;
    // Once the server has answered a first request (and the connection its
    // start-up check made has gone), its descriptors are what they stay at.
    let head = listen(addr, "HEAD /cbr.mp3 HTTP/1.1\r\n\r\n");
    assert!(head.status_line().ends_with("200 OK"));
    thread::sleep(Duration::from_millis(300));
    let fds_before = server.open_fds();
    let listeners: Vec<_> = (0..200)
        .map(|i| {
            thread::spawn(move || {
                let with_metadata = i % 2 == 0;
                let extra = if with_metadata { "Icy-MetaData: 1\r\n" } else { "" };
                let got = listen(addr, &get("/cbr.mp3", extra));
                let audio = match got.header("icy-metaint") {
                    Some(m) => strip(&got.body, m.parse().unwrap()).0,
                    None => got.body,
                };
                (with_metadata, audio)
            })
        })
        .collect();
    let mut complete = 0;
    for l in listeners {
        let (_, audio) = l.join().unwrap();
        assert!(
            audio == cbr.frames,
            "a listener got {} bytes of {}",
            audio.len(),
            cbr.frames.len()
        );
        complete += 1;
    }
    println!("{complete} listeners, each {} bytes of frames", cbr.frames.len());
    let records = server.wait_for_records(200, Duration::from_secs(10));
    assert_eq!(records.len(), 200);
    for r in &records {
        assert_eq!(r["cs-uri-stem"], "/cbr.mp3");
        let bytes: usize = r["sc-bytes"].parse().unwrap();
        assert!(bytes > cbr.frames.len(), "head and frames: {r:?}");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.open_fds() > fds_before && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    let fds = server.open_fds();
    println!("descriptors: {fds_before} before the listeners, {fds} after");
    assert!(
        fds <= fds_before,
        "every listener's descriptor is closed: {fds} open, {fds_before} before"
    );
    server.stop_cleanly();
}

#[test]
fn gstreamer_plays_the_stream_and_reads_its_title() {
    require_tool("gst-launch-1.0");
    let cbr = cbr();
    let server = serve("gstreamer", &[&cbr.path], &[]);
    let url = format!("location=http://{}/cbr.mp3", server.addr);
    let out = scratch_dir().join("from-gstreamer.mp3");
    let copy = {
        let (url, out) = (url.clone(), out.clone());
        thread::spawn(move || {
            run_ok(
                Command::new("gst-launch-1.0")
                    .args([
                        "-t",
                        "souphttpsrc",
                        &url,
                        "iradio-mode=true",
                        "!",
                        "icydemux",
                        "!",
                        "filesink",
                    ])
                    .arg(format!("location={}", out.display())),
            )
        })
    };
    let parsed = run_ok(Command::new("gst-launch-1.0").args([
        "-t",
        "souphttpsrc",
        &url,
        "iradio-mode=true",
        "!",
        "icydemux",
        "!",
        "mpegaudioparse",
        "!",
        "fakesink",
    ]));
    let log = String::from_utf8_lossy(&parsed.stdout);
    assert!(
        log.lines()
            .any(|l| l.trim_start().strip_prefix("title: ") == Some(cbr.title)),
        "{log}"
    );
    copy.join().unwrap();
    let got = std::fs::read(&out).unwrap();
    assert!(
        got == cbr.frames,
        "GStreamer got {} bytes of {}",
        got.len(),
        cbr.frames.len()
    );
    server.stop_cleanly();
}

/// A file that is a few good frames' worth of ffmpeg's output, then cut.
fn truncated(from: &Song) -> PathBuf {
    let data = std::fs::read(&from.path).unwrap();
    let path = scratch_dir().join("truncated.mp3");
    std::fs::write(&path, &data[..data.len() * 2 / 3 + 7]).unwrap();
    path
}

#[test]
fn hostile_files_get_clear_answers_while_a_listener_plays_on() {
    let cbr = cbr();
    let dir = scratch_dir();
    // Garbage: no frame sync anywhere.
    let garbage = dir.join("garbage.mp3");
    let mut x: u32 = 12345;
    let junk: Vec<u8> = (0..50_000)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            ((x >> 16) as u8) & 0x7f
        })
        .collect();
    std::fs::write(&garbage, &junk).unwrap();
    // An ID3v2 tag claiming 256 MB (the most its size can say) before good
    // frames, and one claiming the whole file.
    let frames = &cbr.frames;
    let absurd = dir.join("absurd-id3.mp3");
    let mut v = b"ID3\x03\x00\x00\x7f\x7f\x7f\x7f".to_vec();
    v.extend_from_slice(frames);
    std::fs::write(&absurd, &v).unwrap();
    let swallowing = dir.join("swallowing-id3.mp3");
    let size = frames.len() as u32;
    let syncsafe = [
        (size >> 21) as u8 & 0x7f,
        (size >> 14) as u8 & 0x7f,
        (size >> 7) as u8 & 0x7f,
        size as u8 & 0x7f,
    ];
    let mut w = b"ID3\x04\x00\x00".to_vec();
    w.extend_from_slice(&syncsafe);
    w.extend_from_slice(frames);
    std::fs::write(&swallowing, &w).unwrap();
    let cut = truncated(cbr);
    let text = dir.join("notes.mp3");
    std::fs::write(&text, "just some text, not audio\n").unwrap();
    let empty = dir.join("empty.mp3");
    std::fs::write(&empty, b"").unwrap();
    // A file cut inside its ID3v2 header.
    let id3_cut = dir.join("id3-cut.mp3");
    std::fs::write(&id3_cut, b"ID3\x03\x00\x00\x00").unwrap();

    let server = serve(
        "hostile",
        &[&cbr.path, &garbage, &absurd, &swallowing, &cut, &text, &empty, &id3_cut],
        &[],
    );
    let addr = server.addr;
    let good = thread::spawn(move || listen(addr, &get("/cbr.mp3", "Icy-MetaData: 1\r\n")));

    for path in [
        "/garbage.mp3",
        "/notes.mp3",
        "/empty.mp3",
        "/swallowing-id3.mp3",
        "/id3-cut.mp3",
    ] {
        let got = listen(addr, &get(path, ""));
        assert!(got.status_line().starts_with("HTTP/1.1 415 "), "{path}: {}", got.head);
        let body = String::from_utf8_lossy(&got.body);
        assert!(body.starts_with("not MPEG audio: "), "{path}: {body}");
        println!("{path}: {} {}", got.status_line(), body.trim());
    }
    for (path, status) in [
        ("/missing.mp3", "404"),
        ("/../etc/passwd.mp3", "400"),
        ("/%2e%2e/x.mp3", "400"),
    ] {
        let got = listen(addr, &get(path, ""));
        assert!(
            got.status_line().starts_with(&format!("HTTP/1.1 {status} ")),
            "{path}: {}",
            got.head
        );
    }
    let post = listen(addr, "POST /cbr.mp3 HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert!(post.status_line().starts_with("HTTP/1.1 405 "), "{}", post.head);

    // The absurd tag is stepped over: the frames after it play.
    let absurd = listen(addr, &get("/absurd-id3.mp3", ""));
    assert!(absurd.status_line().ends_with("200 OK"), "{}", absurd.head);
    assert!(
        absurd.body == *frames,
        "{} bytes of {}",
        absurd.body.len(),
        frames.len()
    );
    // A cut file plays its whole frames; ffmpeg decodes them without error.
    let cut = listen(addr, &get("/truncated.mp3", ""));
    assert!(cut.status_line().ends_with("200 OK"), "{}", cut.head);
    let cut_file = std::fs::read(dir.join("truncated.mp3")).unwrap();
    assert!(!cut.body.is_empty() && cut.body.len() < cut_file.len());
    let received = dir.join("truncated-received.mp3");
    std::fs::write(&received, &cut.body).unwrap();
    run_ok(
        Command::new("ffmpeg")
            .args(["-hide_banner", "-nostdin", "-v", "error", "-xerror", "-i"])
            .arg(&received)
            .args(["-f", "null", "-"]),
    );
    assert!(
        frames.starts_with(&cut.body),
        "the cut file's frames are the file's first ones"
    );

    let good = good.join().unwrap();
    let metaint: usize = good.header("icy-metaint").unwrap().parse().unwrap();
    assert!(
        strip(&good.body, metaint).0 == *frames,
        "the good listener got every frame"
    );
    let stopped = server.stop_cleanly();
    assert!(!stopped.stderr.contains("panicked"), "{}", stopped.stderr);
}

#[test]
fn slow_listeners_are_dropped_and_the_limit_is_kept() {
    let long = long();
    let dir = scratch_dir();
    let stats = dir.join("slow.stats.json");
    let _ = std::fs::remove_file(&stats);
    let server = serve(
        "slow",
        &[&long.path],
        &[
            "--listener-queue-bytes",
            "16K",
            "--max-listeners",
            "2",
            "--stats-interval",
            "1",
            "--stats-json",
            stats.to_str().unwrap(),
        ],
    );
    let addr = server.addr;
    // One that reads nothing, with a small receive buffer.
    let stalled = {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        socket.connect(&addr.into()).unwrap();
        let mut s: TcpStream = socket.into();
        s.write_all(get("/long.mp3", "").as_bytes()).unwrap();
        s
    };
    let good = thread::spawn(move || listen(addr, &get("/long.mp3", "Icy-MetaData: 1\r\n")));
    // Both places are taken: a third listener is refused, HEAD still works.
    thread::sleep(Duration::from_millis(500));
    let third = listen(addr, &get("/long.mp3", ""));
    assert!(third.status_line().starts_with("HTTP/1.1 503 "), "{}", third.head);
    let head = listen(addr, "HEAD /long.mp3 HTTP/1.1\r\n\r\n");
    assert!(head.status_line().ends_with("200 OK"));

    // The stalled one is dropped once 16 KiB (a second of audio) waits
    // behind its burst and what the kernel buffers: well before its end.
    let deadline = Instant::now() + Duration::from_secs(12);
    let dropped = loop {
        let json: Option<serde_json::Value> = std::fs::read_to_string(&stats)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        // Dropped, and gone: its writer does not wait for the client.
        if let Some(j) = json.filter(|j| j["listeners"]["dropped"] == 1 && j["listeners"]["ended"] == 1) {
            break j;
        }
        assert!(Instant::now() < deadline, "the stalled listener was not dropped");
        thread::sleep(Duration::from_millis(100));
    };
    println!("after the drop: {}", dropped["listeners"]);
    // It gets what was in flight, then the end; never the whole file.
    let mut stalled = stalled;
    stalled.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    let _ = stalled.read_to_end(&mut got);
    assert!(got.len() < long.frames.len() / 2, "{} bytes", got.len());

    // The other plays to the end, whole; then there is room again.
    let good = good.join().unwrap();
    let metaint: usize = good.header("icy-metaint").unwrap().parse().unwrap();
    assert!(
        strip(&good.body, metaint).0 == long.frames,
        "the good listener got every frame"
    );
    let mut again = request(addr, &get("/long.mp3", ""));
    let mut first = [0u8; 12];
    again.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    drop(again);
    let stopped = server.stop_cleanly();
    assert!(stopped.stdout.contains("listeners"), "{}", stopped.stdout);
}

#[test]
fn vlc_decodes_the_stream_and_reads_its_title() {
    if !streamalot_tests::vlc::installed() {
        eprintln!("skipped: VLC (cvlc) is not installed; tools/test installs it (vlc-bin, vlc-plugin-base)");
        return;
    }
    let cbr = cbr();
    let server = serve("vlc", &[&cbr.path], &[]);
    let dir = std::env::temp_dir().join(format!("streamalot-vlc-files-{}", std::process::id()));
    let played = streamalot_tests::vlc::play(&format!("http://{}/cbr.mp3", server.addr), 5, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    // VLC asked for ICY metadata, read the title, and decoded MPEG audio.
    assert!(played.log.contains("Icy-MetaInt: 16000"), "{}", played.log);
    assert_eq!(played.titles().first().copied(), Some(cbr.title), "{}", played.log);
    assert!(
        played.log.contains("MPGA channels:2 samplerate:44100 bitrate:128"),
        "{}",
        played.log
    );
    // Five seconds of the file's sound: the right channel's steady 660 Hz.
    assert!(played.seconds() > 4.0, "{} s decoded", played.seconds());
    let hz = played.tone_hz(1, 0.5);
    println!(
        "VLC: {:.2} s decoded, {hz:.1} Hz on the right, titles {:?}",
        played.seconds(),
        played.titles()
    );
    assert!(
        (hz - 660.0).abs() < 660.0 * 0.03,
        "VLC decoded a {hz:.1} Hz tone, not 660 Hz"
    );
    server.stop_cleanly();
}
