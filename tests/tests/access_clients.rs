//! Real clients against a protected movie: ffmpeg, GStreamer's `rtspsrc` and
//! the `retina` crate each play it with the right credentials, over Digest
//! and over Basic, and each is refused (401) without credentials or with
//! wrong ones.
//!
//! They bend RFC 7616 each their own way, which is what the server must
//! survive: ffmpeg answers the last Digest challenge it saw and only does
//! MD5, GStreamer does MD5 without `qop` (RFC 2069's form), and retina takes
//! the first challenge it understands.

use std::path::Path;
use std::time::{Duration, Instant};

use streamalot_tests::access::{gst_play, users_file};
use streamalot_tests::ffmpeg::{differences_from_file, stream_packets, FRAME_HASHES};
use streamalot_tests::gstreamer::file_video_hashes;
use streamalot_tests::media::media;
use streamalot_tests::server::{library, Server};
use streamalot_tests::{describe, first_difference, require_tool, run_within};

const TIMEOUT: Duration = Duration::from_secs(60);
const MOVIE: &str = "h264-aac.mp4";

/// A library whose root `qtaccess` admits any user of the users file, with
/// `scheme`, and a server on it.
fn protected(name: &str, scheme: &str) -> Server {
    let lib = library(name, &[media().h264_mp4()]);
    std::fs::write(
        lib.join("qtaccess"),
        format!("AuthScheme {scheme}\nrequire valid-user\n"),
    )
    .unwrap();
    // The users file sits beside the library, not in it.
    let users = users_file(
        &lib.with_extension("users"),
        &[("alice", "wonder land"), ("bob", "builder")],
    );
    Server::start(&lib, &["--users", users.to_str().unwrap()])
}

/// `rtsp://USER:PASSWORD@127.0.0.1:PORT/MOVIE`, the password URL-encoded.
fn url_with(server: &Server, user: &str, password: &str) -> String {
    let password = password.replace(' ', "%20");
    format!("rtsp://{user}:{password}@{}/{MOVIE}", server.addr)
}

/// ffmpeg's framemd5 of `url` over TCP: Ok(stdout) or Err(stderr).
fn ffmpeg(url: &str) -> Result<String, String> {
    require_tool("ffmpeg");
    let mut cmd = std::process::Command::new("ffmpeg");
    cmd.args([
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        "-rtsp_transport",
        "tcp",
        "-i",
        url,
    ])
    .args(FRAME_HASHES)
    .args(["-f", "framemd5", "-"]);
    let out = run_within(&mut cmd, TIMEOUT);
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("{}: {}", describe(&cmd), String::from_utf8_lossy(&out.stderr)))
    }
}

fn ffmpeg_checks(server: &Server, scheme: &str) {
    let file = media().h264_mp4();
    let played = ffmpeg(&url_with(server, "alice", "wonder land")).unwrap_or_else(|e| panic!("{scheme}: {e}"));
    let got = streamalot_tests::ffmpeg::FrameHashes::parse(&played);
    let differences = differences_from_file(file, &got, TIMEOUT);
    assert!(differences.is_empty(), "{scheme}: {}", differences.join("\n"));
    for url in [
        server.url(MOVIE),
        url_with(server, "alice", "wrong"),
        url_with(server, "mallory", "wonder land"),
    ] {
        let err = ffmpeg(&url).expect_err(&format!("{scheme}: {url} must be refused"));
        assert!(err.contains("401"), "{scheme}: {url}: ffmpeg should report 401: {err}");
    }
}

fn gstreamer_checks(server: &Server, scheme: &str) {
    let want = file_video_hashes(media().h264_mp4(), TIMEOUT);
    let run = gst_play(&server.url(MOVIE), "tcp", Some(("alice", "wonder land")), TIMEOUT);
    assert!(run.ok, "{scheme}: {}", run.output);
    if let Some(d) = first_difference(&want, &run.hashes) {
        panic!("{scheme}: GStreamer's picture {d}");
    }
    for creds in [None, Some(("alice", "nope")), Some(("nobody", "wonder land"))] {
        let run = gst_play(&server.url(MOVIE), "tcp", creds, TIMEOUT);
        assert!(
            !run.ok && run.hashes.is_empty(),
            "{scheme}: {creds:?} must be refused: {}",
            run.output
        );
        assert!(
            run.output.contains("Unauthorized") || run.output.contains("401"),
            "{scheme}: {creds:?}: GStreamer should say unauthorized: {}",
            run.output
        );
    }
}

/// Plays the video of `url` with retina over interleaved TCP until `want`
/// frames came or the time is up; the error is retina's (a 401, say).
fn retina_play(url: &str, creds: Option<(&str, &str)>, want: usize) -> Result<Vec<Vec<u8>>, String> {
    use futures::StreamExt as _;
    use retina::client::{PlayOptions, Session, SessionOptions, SetupOptions, TcpTransportOptions, Transport};
    use retina::codec::CodecItem;
    let url = url::Url::parse(url).map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let creds = creds.map(|(u, p)| retina::client::Credentials {
            username: u.to_owned(),
            password: p.to_owned(),
        });
        let options = SessionOptions::default()
            .creds(creds)
            .user_agent("streamalot-tests retina".to_owned());
        let mut session = tokio::time::timeout(TIMEOUT, Session::describe(url, options))
            .await
            .map_err(|_| "DESCRIBE timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        let video = session
            .streams()
            .iter()
            .position(|s| s.media() == "video")
            .ok_or("no video stream")?;
        session
            .setup(
                video,
                SetupOptions::default().transport(Transport::Tcp(TcpTransportOptions::default())),
            )
            .await
            .map_err(|e| e.to_string())?;
        let playing = session.play(PlayOptions::default()).await.map_err(|e| e.to_string())?;
        let mut demuxed = playing.demuxed().map_err(|e| e.to_string())?;
        let deadline = Instant::now() + TIMEOUT;
        let mut frames = Vec::new();
        while frames.len() < want && Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, demuxed.next()).await {
                Ok(Some(Ok(CodecItem::VideoFrame(f)))) => frames.push(f.data().to_vec()),
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(e))) => return Err(e.to_string()),
                Ok(None) | Err(_) => break,
            }
        }
        Ok(frames)
    })
}

/// A frame's length-prefixed NAL units without SPS and PPS (types 7 and 8):
/// retina puts the SDP's `sprop-parameter-sets` in front of the first
/// frame, while the file keeps them in its `avcC` box, not in the samples.
fn without_parameter_sets(frame: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(frame.len());
    let mut at = 0;
    while at + 4 <= frame.len() {
        let len = u32::from_be_bytes(frame[at..at + 4].try_into().unwrap()) as usize;
        let end = (at + 4 + len).min(frame.len());
        let kind = frame.get(at + 4).map_or(0, |b| b & 0x1f);
        if kind != 7 && kind != 8 {
            out.extend_from_slice(&frame[at..end]);
        }
        at = end;
    }
    out
}

fn retina_checks(server: &Server, scheme: &str, file: &Path) {
    let packets = stream_packets(file, "v:0").packets;
    let frames = retina_play(&server.url(MOVIE), Some(("alice", "wonder land")), packets.len())
        .unwrap_or_else(|e| panic!("{scheme}: retina: {e}"));
    assert_eq!(frames.len(), packets.len(), "{scheme}: retina's frames");
    for (i, (got, want)) in frames.iter().zip(&packets).enumerate() {
        let got = &without_parameter_sets(got);
        assert!(
            got == &want.data,
            "{scheme}: retina's frame {i} is not the file's: {} bytes {:02x?}... against {} bytes {:02x?}...",
            got.len(),
            &got[..got.len().min(48)],
            want.data.len(),
            &want.data[..want.data.len().min(48)]
        );
    }
    for creds in [None, Some(("alice", "nope")), Some(("nobody", "x"))] {
        let err = retina_play(&server.url(MOVIE), creds, 1)
            .err()
            .unwrap_or_else(|| panic!("{scheme}: retina with {creds:?} must be refused"));
        assert!(err.contains("401"), "{scheme}: retina with {creds:?}: {err}");
    }
}

#[test]
fn ffmpeg_gstreamer_and_retina_play_a_digest_protected_movie() {
    let server = protected("access-digest", "digest");
    ffmpeg_checks(&server, "digest");
    gstreamer_checks(&server, "digest");
    retina_checks(&server, "digest", media().h264_mp4());
    let stopped = server.stop();
    assert!(
        stopped.stderr.contains("login failed"),
        "failed logins are logged:\n{}",
        stopped.stderr
    );
}

#[test]
fn ffmpeg_gstreamer_and_retina_play_a_basic_protected_movie() {
    let server = protected("access-basic", "basic");
    ffmpeg_checks(&server, "basic");
    gstreamer_checks(&server, "basic");
    retina_checks(&server, "basic", media().h264_mp4());
}
