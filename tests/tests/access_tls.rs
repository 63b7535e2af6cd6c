//! RTSPS: ffmpeg plays `rtsps://` (interleaved on the TLS connection) with
//! every frame the file's, also with Digest over TLS; plain RTSP sent to the
//! TLS port is answered 400 in the clear and closed, TLS garbage is closed,
//! and the server serves on. The certificate is made for the test by the
//! `openssl` command, and re-read on SIGHUP.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use streamalot_tests::access::users_file;
use streamalot_tests::ffmpeg::{differences_from_file, framemd5, FRAME_HASHES};
use streamalot_tests::media::media;
use streamalot_tests::rtsp::Connection;
use streamalot_tests::server::{free_tcp_port, library, Server};
use streamalot_tests::{describe, run_within, scratch_dir};

const MOVIE: &str = "h264-aac.mp4";
const TIMEOUT: Duration = Duration::from_secs(60);

/// A self-signed certificate for 127.0.0.1 and its key, in `dir`.
fn certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let mut cmd = Command::new("openssl");
    cmd.args([
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ])
    .args([
        "-days",
        "2",
        "-subj",
        "/CN=127.0.0.1",
        "-addext",
        "subjectAltName=IP:127.0.0.1",
    ])
    .arg("-keyout")
    .arg(&key)
    .arg("-out")
    .arg(&cert);
    let out = run_within(&mut cmd, TIMEOUT);
    assert!(
        out.status.success(),
        "{}: {}",
        describe(&cmd),
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

fn tls_server(name: &str, qtaccess: Option<&str>, extra: &[&str]) -> (Server, u16) {
    let lib = library(name, &[media().h264_mp4()]);
    if let Some(text) = qtaccess {
        std::fs::write(lib.join("qtaccess"), text).unwrap();
    }
    let dir = lib.with_extension("tls");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = certificate(&dir);
    let port = free_tcp_port();
    let mut args = vec![
        "--rtsps-port".to_owned(),
        port.to_string(),
        "--tls-cert".to_owned(),
        cert.display().to_string(),
        "--tls-key".to_owned(),
        key.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    (Server::start(&lib, &args), port)
}

#[test]
fn ffmpeg_plays_rtsps_bit_exact_and_non_tls_is_refused() {
    let (server, port) = tls_server("access-tls", None, &[]);
    let url = format!("rtsps://127.0.0.1:{port}/{MOVIE}");
    let got = framemd5(&[], &url, FRAME_HASHES, TIMEOUT);
    let d = differences_from_file(media().h264_mp4(), &got, TIMEOUT);
    assert!(d.is_empty(), "rtsps: {}", d.join("\n"));

    // Plain RTSP on the TLS port: told so in the clear, then closed.
    let mut plain = TcpStream::connect(("127.0.0.1", port)).unwrap();
    plain.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    plain.write_all(b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(
        answer.starts_with(b"RTSP/1.0 400"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    // TLS garbage: a handshake record header with nonsense behind it.
    let mut garbage = TcpStream::connect(("127.0.0.1", port)).unwrap();
    garbage.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut junk = vec![0x16, 0x03, 0x01, 0x00, 0x40];
    junk.extend((0..64u8).map(|i| i.wrapping_mul(37)));
    garbage.write_all(&junk).unwrap();
    let mut buf = [0u8; 256];
    let mut total = 0;
    loop {
        match garbage.read(&mut buf) {
            Ok(0) | Err(_) => break,
            // rustls may send an alert record before closing: never RTSP.
            Ok(n) => {
                assert_ne!(&buf[..n.min(4)], b"RTSP", "an RTSP answer to TLS garbage");
                total += n;
                assert!(total < 4096, "the server keeps talking to garbage");
            }
        }
    }
    // The plain port and the TLS port both still serve.
    let mut conn = Connection::connect(server.addr);
    assert_eq!(conn.request("OPTIONS", "*", &[]).status, 200);
    let got = framemd5(&[], &url, FRAME_HASHES, TIMEOUT);
    assert!(differences_from_file(media().h264_mp4(), &got, TIMEOUT).is_empty());

    // SIGHUP re-reads the certificate; a new connection still plays.
    let kill = Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    std::thread::sleep(Duration::from_millis(300));
    let got = framemd5(&[], &url, FRAME_HASHES, TIMEOUT);
    assert!(differences_from_file(media().h264_mp4(), &got, TIMEOUT).is_empty());
    let stopped = server.stop();
    assert!(
        stopped.stderr.contains("TLS certificate reloaded"),
        "{}",
        stopped.stderr
    );
}

#[test]
fn ffmpeg_plays_a_protected_movie_over_rtsps_and_tunnels_over_tls() {
    let users = users_file(&scratch_dir().join("access-tls-auth.users"), &[("alice", "secret")]);
    let (server, port) = tls_server(
        "access-tls-auth",
        Some("AuthScheme digest\nrequire valid-user\n"),
        &["--users", users.to_str().unwrap()],
    );
    // Without the password: 401 over TLS as in the clear.
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-nostdin", "-loglevel", "error", "-i"])
        .arg(format!("rtsps://127.0.0.1:{port}/{MOVIE}"))
        .args(["-f", "null", "-"]);
    let out = run_within(&mut cmd, TIMEOUT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("401"), "{stderr}");
    let url = format!("rtsps://alice:secret@127.0.0.1:{port}/{MOVIE}");
    let got = framemd5(&[], &url, FRAME_HASHES, TIMEOUT);
    let d = differences_from_file(media().h264_mp4(), &got, TIMEOUT);
    assert!(d.is_empty(), "rtsps with Digest: {}", d.join("\n"));
    // An HTTP tunnel's two legs, each over TLS (ffmpeg's `https` transport
    // to the RTSPS port), paired as in the clear.
    let tunnelled = format!("rtsp://alice:secret@127.0.0.1:{port}/{MOVIE}");
    let got = framemd5(&["-rtsp_transport", "https"], &tunnelled, FRAME_HASHES, TIMEOUT);
    let d = differences_from_file(media().h264_mp4(), &got, TIMEOUT);
    assert!(d.is_empty(), "a tunnel over TLS: {}", d.join("\n"));
    drop(server);
}
