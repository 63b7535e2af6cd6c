//! Live broadcasts in the tests: ffmpeg as a publisher (`-f rtsp`, with the
//! credential in the URL as its users give it), waiting for a broadcast to
//! be on the air, and comparing what a viewer got with the file.

use std::fmt::Debug;
use std::path::Path;
use std::process::{Child, Command};
use std::thread;
use std::time::{Duration, Instant};

use crate::rtsp::Connection;
use crate::server::Server;
use crate::{require_tool, spawn};

/// The publishing credential the tests' servers allow under [`PREFIX`].
pub const USER: &str = "caster";
pub const PASSWORD: &str = "s3cret";
pub const PREFIX: &str = "/live";

/// `--publish` for a server that lets [`USER`] publish under [`PREFIX`].
pub fn publish_arg() -> String {
    format!("{PREFIX}={USER}:{PASSWORD}")
}

/// `rtsp://USER:PASSWORD@127.0.0.1:PORT/live/NAME`, as ffmpeg users write it.
pub fn publish_url(server: &Server, name: &str) -> String {
    format!("rtsp://{USER}:{PASSWORD}@{}{PREFIX}/{name}", server.addr)
}

/// Starts ffmpeg publishing `file` in real time (`-re`, streams copied)
/// over `transport` (`tcp` or `udp`) to `url`.
pub fn publish(file: &Path, transport: &str, url: &str) -> (Child, String) {
    require_tool("ffmpeg");
    spawn(
        Command::new("ffmpeg")
            .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-re", "-i"])
            .arg(file)
            .args(["-c", "copy", "-f", "rtsp", "-rtsp_transport", transport, url]),
    )
}

/// Waits until `path` of `server` is on the air (its DESCRIBE answers 200),
/// and returns the SDP; panics after 20 s.
pub fn wait_on_air(server: &Server, path: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut c = Connection::connect(server.addr);
        let r = c.request("DESCRIBE", &server.url(path), &[("Accept", "application/sdp")]);
        if r.status == 200 {
            return String::from_utf8_lossy(&r.body).into_owned();
        }
        assert!(
            Instant::now() < deadline,
            "{path} not on the air within 20 s: {}",
            r.status
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// Where `got` lies in `want` as one contiguous run: its first index.
/// `got` must be at least `min` long.
pub fn contiguous_run<T: PartialEq + Debug>(want: &[T], got: &[T], min: usize) -> Result<usize, String> {
    if got.len() < min {
        return Err(format!("only {} frames (wanted at least {min})", got.len()));
    }
    let start = want
        .iter()
        .position(|w| *w == got[0])
        .ok_or_else(|| format!("the first frame {:?} is none of the file's", got[0]))?;
    for (i, g) in got.iter().enumerate() {
        match want.get(start + i) {
            Some(w) if w == g => {}
            Some(w) => {
                return Err(format!(
                    "frame {i} (file frame {}): got {g:?}, the file has {w:?}",
                    start + i
                ))
            }
            None => return Err(format!("frame {i}: {g:?} is past the file's end")),
        }
    }
    Ok(start)
}
