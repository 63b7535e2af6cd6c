//! The servers rtpload is tested against: `streamalot serve` on free ports with
//! its access log in a file, and GStreamer's RTSP server as an independent
//! peer (through `tools/gst-rtsp-peer`).
//!
//! Both are stopped with SIGTERM (and killed if they do not go), on
//! [`Streamalot::stop`] or when dropped, so a failing test leaves no server
//! behind. Their output goes to files next to the access log, named in
//! every failure message.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::{describe, scratch_dir, streamalot_binary, workspace_root};

/// How long a server may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long it may take to stop after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// A TCP port that was free a moment ago.
pub fn free_tcp_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral TCP port");
    l.local_addr().expect("its address").port()
}

/// A range of `len` UDP ports starting at one that was free a moment ago.
/// Servers bind the first free even/odd pair inside it.
pub fn free_udp_range(len: u16) -> RangeInclusive<u16> {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind an ephemeral UDP port");
    let first = s.local_addr().expect("its address").port().min(65_535 - len);
    first..=first + len
}

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

/// A running `streamalot serve`.
pub struct Streamalot {
    child: Option<Child>,
    pub rtsp_port: u16,
    pub access_log: PathBuf,
    /// Where its stdout and stderr go.
    pub output: PathBuf,
    what: String,
}

impl Streamalot {
    /// Serves `media` with one shard, on a free RTSP port and a free UDP
    /// range; `name` names its files under the scratch directory.
    pub fn start(media: &Path, name: &str) -> Streamalot {
        let dir = scratch_dir().join(name);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let access_log = dir.join("access.log");
        let output = dir.join("server.out");
        let _ = std::fs::remove_file(&access_log);
        let rtsp_port = free_tcp_port();
        let rtp = free_udp_range(200);
        let mut cmd = Command::new(streamalot_binary());
        cmd.arg("serve")
            .arg("--media")
            .arg(media)
            .args(["--rtsp-port", &rtsp_port.to_string()])
            .args(["--rtp-ports", &format!("{}-{}", rtp.start(), rtp.end())])
            .args(["--shards", "1"])
            .arg("--access-log")
            .arg(&access_log);
        let what = describe(&cmd);
        let out = std::fs::File::create(&output).unwrap_or_else(|e| panic!("cannot create {}: {e}", output.display()));
        let err = out.try_clone().expect("clone a file handle");
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        wait_for_port(rtsp_port, &mut child, &what, &output);
        Streamalot {
            child: Some(child),
            rtsp_port,
            access_log,
            output,
            what,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("rtsp://127.0.0.1:{}/{}", self.rtsp_port, path.trim_start_matches('/'))
    }

    /// Stops the server (SIGTERM: it says BYE, logs every session and
    /// flushes the log) and returns its access log.
    pub fn stop(mut self) -> Vec<AccessLine> {
        let mut child = self.child.take().expect("running");
        let status = terminate(&mut child);
        assert!(
            status.is_some_and(|s| s.success()),
            "{} did not stop cleanly on SIGTERM ({status:?}); see {}",
            self.what,
            self.output.display()
        );
        read_access_log(&self.access_log)
    }
}

impl Drop for Streamalot {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            terminate(&mut c);
        }
    }
}

/// One session's line in the access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLine {
    pub uri: String,
    pub status: u16,
    pub user_agent: String,
    pub bytes: u64,
    pub packets: u64,
    pub packets_lost: Option<i64>,
    pub transport: String,
}

/// Reads a W3C access log by its `#Fields:` directive.
pub fn read_access_log(path: &Path) -> Vec<AccessLine> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut fields: Vec<String> = Vec::new();
    let mut lines = Vec::new();
    for line in text.lines() {
        if let Some(f) = line.strip_prefix("#Fields:") {
            fields = f.split_whitespace().map(str::to_owned).collect();
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let values: Vec<&str> = line.split(' ').collect();
        let get = |name: &str| -> &str {
            let i = fields
                .iter()
                .position(|f| f == name)
                .unwrap_or_else(|| panic!("{}: no {name} field in {fields:?}", path.display()));
            values
                .get(i)
                .copied()
                .unwrap_or_else(|| panic!("short access log line {line:?}"))
        };
        let number = |name: &str| -> u64 {
            get(name)
                .parse()
                .unwrap_or_else(|_| panic!("{name} is not a number in {line:?}"))
        };
        lines.push(AccessLine {
            uri: get("cs-uri-stem").to_owned(),
            status: number("c-status") as u16,
            user_agent: get("cs(User-Agent)").to_owned(),
            bytes: number("sc-bytes"),
            packets: number("s-pkts-sent"),
            packets_lost: get("c-pkts-lost").parse().ok(),
            transport: get("transport").to_owned(),
        });
    }
    lines
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
        let dir = scratch_dir().join(name);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let output = dir.join("gst-rtsp-peer.err");
        let port = free_tcp_port();
        let script = workspace_root().join("tools/gst-rtsp-peer");
        let mut cmd = Command::new(&script);
        cmd.args(["--port", &port.to_string()]).arg(movie);
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
}

impl Drop for GstPeer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            terminate(&mut c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_access_logs_by_their_fields() {
        let path = std::env::temp_dir().join(format!("streamalot-access-{}.log", std::process::id()));
        std::fs::write(
            &path,
            "#Software: Streamalot 0.1.0\n#Version: 1.0\n\
             #Fields: c-ip date time cs-uri-stem c-starttime x-duration c-status cs(User-Agent) sc-bytes s-pkts-sent c-pkts-lost transport\n\
             127.0.0.1 2026-12-01 07:15:12 /clip.mp4 - 4.006 200 rtpload/0.1.0 116108 141 0 udp\n\
             127.0.0.1 2026-12-01 07:15:13 /clip.mp4 0.000 1.000 454 - 0 0 - tcp\n",
        )
        .unwrap();
        let lines = read_access_log(&path);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            lines[0],
            AccessLine {
                uri: "/clip.mp4".into(),
                status: 200,
                user_agent: "rtpload/0.1.0".into(),
                bytes: 116_108,
                packets: 141,
                packets_lost: Some(0),
                transport: "udp".into(),
            }
        );
        assert_eq!((lines[1].status, lines[1].packets_lost), (454, None));
    }

    #[test]
    fn free_ports_are_usable() {
        let p = free_tcp_port();
        TcpListener::bind(("127.0.0.1", p)).unwrap();
        let r = free_udp_range(10);
        assert_eq!(r.end() - r.start(), 10);
    }
}
