//! GStreamer's RTSP server as an independent peer (through
//! `tools/gst-rtsp-peer`), for the tests that hold rtpload, and so the
//! server, to more than our own implementation.
//!
//! It is stopped with SIGTERM (and killed if it does not go) when dropped,
//! so a failing test leaves no server behind. Its output goes to a file named
//! in every failure message.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::server::free_tcp_port;
use crate::{describe, scratch_dir, workspace_root};

/// How long a server may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long it may take to stop after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// Waits until something accepts connections on `port`.
fn wait_for_port(port: u16, child: &mut Child, what: &str, log: &Path) {
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited ({status}) before listening; see {}", log.display());
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "{what} did not listen on port {port} within {START_TIMEOUT:?}; see {}",
        log.display()
    );
}

/// SIGTERM, then SIGKILL if it does not exit in time.
fn terminate(child: &mut Child) -> Option<std::process::ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let deadline = Instant::now() + STOP_TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// GStreamer's RTSP server serving one movie, through `tools/gst-rtsp-peer`.
pub struct GstPeer {
    child: Option<Child>,
    pub url: String,
    pub output: PathBuf,
}

impl GstPeer {
    /// Serves `movie` (H.264 + AAC) on a free port.
    pub fn start(movie: &Path, name: &str) -> GstPeer {
        GstPeer::launch(name, &[movie.as_os_str().to_owned()])
    }

    /// GStreamer's RTSP server in record mode on a free port: it takes a
    /// published H.264 + AAC stream, decodes it, and writes what it decoded
    /// to `report` (see `tools/gst-rtsp-peer`).
    pub fn record(report: &Path, name: &str) -> GstPeer {
        GstPeer::record_with(report, name, &[])
    }

    /// As [`GstPeer::record`], with more of the script's options
    /// (`--user USER:PASSWORD`, `--auth basic`).
    pub fn record_with(report: &Path, name: &str, options: &[&str]) -> GstPeer {
        let mut args: Vec<std::ffi::OsString> = options.iter().map(Into::into).collect();
        args.push("--record".into());
        args.push(report.as_os_str().to_owned());
        GstPeer::launch(name, &args)
    }

    fn launch(name: &str, args: &[std::ffi::OsString]) -> GstPeer {
        let dir = scratch_dir().join(name);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let output = dir.join("gst-rtsp-peer.err");
        let port = free_tcp_port();
        let script = workspace_root().join("tools/gst-rtsp-peer");
        let mut cmd = Command::new(&script);
        cmd.args(["--port", &port.to_string()]).args(args);
        let what = describe(&cmd);
        let err = std::fs::File::create(&output).unwrap_or_else(|e| panic!("cannot create {}: {e}", output.display()));
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        // It says "ready URL" once it listens.
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("ready ") {
                    let _ = tx.send(url.to_owned());
                }
            }
        });
        let url = match rx.recv_timeout(START_TIMEOUT) {
            Ok(url) => url,
            Err(_) => {
                terminate(&mut child);
                let err = std::fs::read_to_string(&output).unwrap_or_default();
                panic!(
                    "{what} did not get ready within {START_TIMEOUT:?}. GStreamer's RTSP server and \
                     its Python bindings are needed: run the README's test command (tools/test), \
                     which installs them. Its stderr:\n{err}"
                );
            }
        };
        wait_for_port(port, &mut child, &what, &output);
        GstPeer {
            child: Some(child),
            url,
            output,
        }
    }

    /// Stops it (SIGTERM) and waits for it to go.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            terminate(&mut c);
        }
    }
}

impl Drop for GstPeer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            terminate(&mut c);
        }
    }
}
