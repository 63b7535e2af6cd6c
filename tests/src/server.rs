//! `streamalot serve` as a child process: started on free ports over a
//! library directory of its own, watched through /proc, stopped with SIGTERM.

use std::collections::HashMap;
use std::io::Read;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::{describe, scratch_dir, streamalot_binary};

/// A running server. Dropping it kills the process; [`Server::stop`] asks it
/// to shut down the way an operator does and returns what it printed.
pub struct Server {
    child: Option<Child>,
    command: String,
    /// The RTSP address, on 127.0.0.1.
    pub addr: SocketAddr,
    /// The library directory it serves.
    pub media: PathBuf,
    /// Where its access log goes.
    pub access_log: PathBuf,
    /// Its `--rtp-ports`: the shards' UDP pairs are among them.
    pub rtp_ports: (u16, u16),
    stdout: Option<JoinHandle<Vec<u8>>>,
    stderr: Option<JoinHandle<Vec<u8>>>,
}

/// What a server printed, and how it ended.
#[derive(Debug)]
pub struct Stopped {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// A library directory `name` under the scratch directory, holding `files`
/// (linked or copied in under their own names). It is emptied first, so a
/// test sees only what it put there.
pub fn library(name: &str, files: &[&Path]) -> PathBuf {
    let dir = scratch_dir().join(format!("library-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    for file in files {
        let to = dir.join(file.file_name().expect("a file name"));
        if std::fs::hard_link(file, &to).is_err() {
            std::fs::copy(file, &to).unwrap_or_else(|e| panic!("cannot copy {} in: {e}", file.display()));
        }
    }
    dir
}

impl Server {
    /// Starts `streamalot serve` on `media` with one shard (unless `extra`
    /// says `--shards`), on a free RTSP
    /// port and a free UDP port range of 127.0.0.1, plus `extra` arguments;
    /// returns once it accepts connections.
    pub fn start(media: &Path, extra: &[&str]) -> Server {
        Server::start_on(IpAddr::from([127, 0, 0, 1]), media, extra)
    }

    /// As [`start`](Self::start), listening on `bind` rather than 127.0.0.1.
    pub fn start_on(bind: IpAddr, media: &Path, extra: &[&str]) -> Server {
        Server::start_with_ports(bind, free_udp_run(16), media, extra)
    }

    /// As [`start`](Self::start), on RTSP port `rtsp_port` (a server
    /// started again where another one was).
    pub fn start_on_port(media: &Path, rtsp_port: u16, extra: &[&str]) -> Server {
        Server::start_at(IpAddr::from([127, 0, 0, 1]), rtsp_port, free_udp_run(16), media, extra)
    }

    /// As [`start_on`](Self::start_on), with the 16 UDP ports from
    /// `rtp_base` (even) for the shards, as [`free_udp_run`] finds them.
    pub fn start_with_ports(bind: IpAddr, rtp_base: u16, media: &Path, extra: &[&str]) -> Server {
        Server::start_at(bind, free_tcp_port(), rtp_base, media, extra)
    }

    /// Starts it on `bind`, RTSP port `rtsp_port` and the 16 UDP ports
    /// from `rtp_base`.
    pub fn start_at(bind: IpAddr, rtsp_port: u16, rtp_base: u16, media: &Path, extra: &[&str]) -> Server {
        let access_log = media.with_extension("access.log");
        let _ = std::fs::remove_file(&access_log);
        let mut cmd = Command::new(streamalot_binary());
        cmd.arg("serve")
            .arg("--media")
            .arg(media)
            .args(["--bind", &bind.to_string()])
            // One shard unless the test asks for more.
            .args(if extra.contains(&"--shards") {
                &[][..]
            } else {
                &["--shards", "1"][..]
            })
            .args(["--rtsp-port", &rtsp_port.to_string()])
            .args(["--rtp-ports", &format!("{rtp_base}-{}", rtp_base + 15)])
            .arg("--access-log")
            .arg(&access_log)
            .args(extra)
            .env(
                "RUST_LOG",
                std::env::var("STREAMALOT_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let command = describe(&cmd);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {command}: {e}"));
        let stdout = drain(child.stdout.take());
        let stderr = drain(child.stderr.take());
        let mut server = Server {
            child: Some(child),
            command,
            addr: SocketAddr::new(bind, rtsp_port),
            media: media.to_owned(),
            access_log,
            rtp_ports: (rtp_base, rtp_base + 15),
            stdout: Some(stdout),
            stderr: Some(stderr),
        };
        server.wait_until_listening();
        server
    }

    fn wait_until_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            let child = self.child.as_mut().expect("running");
            if let Ok(Some(status)) = child.try_wait() {
                let stopped = self.collect(status);
                panic!(
                    "{} exited ({status}) before listening:\n{}",
                    self.command, stopped.stderr
                );
            }
            if Instant::now() > deadline {
                panic!("{} did not listen on {} within 30 s", self.command, self.addr);
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// `rtsp://127.0.0.1:PORT/path`.
    pub fn url(&self, path: &str) -> String {
        format!("rtsp://{}/{}", self.addr, path.trim_start_matches('/'))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// How many file descriptors the server has open.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .expect("the server's /proc/PID/fd")
            .count()
    }

    /// The server's resident memory, in KiB (`VmRSS`).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("/proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("a VmRSS line")
    }

    /// The access log's records so far, as field name to value.
    pub fn access_records(&self) -> Vec<HashMap<String, String>> {
        let text = std::fs::read_to_string(&self.access_log).unwrap_or_default();
        parse_access_log(&text)
    }

    /// Waits until the access log holds at least `n` records, or panics
    /// after `timeout`.
    pub fn wait_for_records(&self, n: usize, timeout: Duration) -> Vec<HashMap<String, String>> {
        let deadline = Instant::now() + timeout;
        loop {
            let records = self.access_records();
            if records.len() >= n {
                return records;
            }
            if Instant::now() > deadline {
                panic!(
                    "the access log has {} records, expected {n}, after {timeout:?}",
                    records.len()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends SIGTERM, waits for the server to exit and returns its output.
    /// Panics if it does not exit within 15 s.
    pub fn stop(mut self) -> Stopped {
        let pid = self.pid();
        let killed = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(killed.success(), "kill -TERM {pid} failed");
        let deadline = Instant::now() + Duration::from_secs(15);
        let status = loop {
            let child = self.child.as_mut().expect("running");
            if let Ok(Some(status)) = child.try_wait() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("{} did not exit within 15 s of SIGTERM", self.command);
            }
            thread::sleep(Duration::from_millis(20));
        };
        self.collect(status)
    }

    /// [`stop`](Server::stop)s the server, which must exit successfully:
    /// a shutdown that fails is a bug the test should report, with stderr.
    pub fn stop_cleanly(self) -> Stopped {
        let command = self.command.clone();
        let stopped = self.stop();
        assert!(
            stopped.status.success(),
            "{command} exited with {} on SIGTERM:\n{}",
            stopped.status,
            stopped.stderr
        );
        stopped
    }

    fn collect(&mut self, status: ExitStatus) -> Stopped {
        self.child = None;
        let text = |h: Option<JoinHandle<Vec<u8>>>| {
            String::from_utf8_lossy(&h.map(|h| h.join().unwrap_or_default()).unwrap_or_default()).into_owned()
        };
        Stopped {
            status,
            stdout: text(self.stdout.take()),
            stderr: text(self.stderr.take()),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn drain(pipe: Option<impl Read + Send + 'static>) -> JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        buf
    })
}

/// Records of a W3C extended log: `#Fields:` names the columns, each other
/// non-comment line is one record.
pub fn parse_access_log(text: &str) -> Vec<HashMap<String, String>> {
    let mut fields: Vec<String> = Vec::new();
    let mut records = Vec::new();
    for line in text.lines() {
        if let Some(names) = line.strip_prefix("#Fields:") {
            fields = names.split_whitespace().map(str::to_owned).collect();
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let values = line.split(' ');
            records.push(fields.iter().cloned().zip(values.map(str::to_owned)).collect());
        }
    }
    records
}

/// A TCP port that was free a moment ago on 127.0.0.1.
pub fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a TCP port")
        .port()
}

/// The first of `n` consecutive UDP ports, starting at an even one, that
/// were free a moment ago.
pub fn free_udp_run(n: u16) -> u16 {
    for _ in 0..100 {
        let probe = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket");
        let base = probe.local_addr().expect("its address").port() & !1;
        drop(probe);
        if base < 1024 || base.checked_add(n).is_none() {
            continue;
        }
        let held: Result<Vec<UdpSocket>, _> = (0..n).map(|i| UdpSocket::bind(("127.0.0.1", base + i))).collect();
        if held.is_ok() {
            return base;
        }
    }
    panic!("no run of {n} free UDP ports found");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_access_logs_by_their_fields() {
        let log = "#Software: Streamalot 0.1.0\n#Version: 1.0\n\
             #Fields: c-ip date time cs-uri-stem c-starttime x-duration c-status cs(User-Agent) sc-bytes s-pkts-sent c-pkts-lost transport\n\
             127.0.0.1 2026-12-01 07:15:12 /clip.mp4 - 4.006 200 rtpload/0.1.0 116108 141 0 udp\n\
             127.0.0.1 2026-12-01 07:15:13 /clip.mp4 0.000 1.000 454 - 0 0 - tcp\n";
        let records = parse_access_log(log);
        assert_eq!(records.len(), 2);
        assert_eq!(
            (
                &records[0]["cs-uri-stem"][..],
                &records[0]["s-pkts-sent"][..],
                &records[0]["transport"][..]
            ),
            ("/clip.mp4", "141", "udp")
        );
        assert_eq!(
            (&records[1]["c-status"][..], &records[1]["c-pkts-lost"][..]),
            ("454", "-")
        );
    }

    #[test]
    fn free_ports_are_usable() {
        let p = free_tcp_port();
        TcpListener::bind(("127.0.0.1", p)).unwrap();
        let base = free_udp_run(10);
        assert_eq!(base % 2, 0);
        UdpSocket::bind(("127.0.0.1", base + 9)).unwrap();
    }
}
