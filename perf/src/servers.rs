//! The servers under test, as child processes: `streamalot serve` and
//! GStreamer's RTSP server (`tools/gst-rtsp-peer`), started on a free port
//! over a library directory, their logs in a directory of the step's,
//! stopped with SIGTERM (then SIGKILL).

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// The two binaries: given, or built in release mode now.
pub struct Binaries {
    pub streamalot: PathBuf,
    pub rtpload: PathBuf,
    pub peer: PathBuf,
}

pub fn binaries(bin_dir: Option<&Path>) -> Result<Binaries, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or("perf/ lives in the workspace")?
        .to_owned();
    let dir = match bin_dir {
        Some(d) => d.to_owned(),
        None => {
            eprintln!("building release binaries of streamalot and rtpload ...");
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let status = Command::new(cargo)
                .args(["build", "--release", "-p", "streamalot", "-p", "rtpload"])
                .current_dir(&root)
                .status()
                .map_err(|e| format!("cannot run cargo: {e}"))?;
            if !status.success() {
                return Err(format!("cargo build failed ({status})"));
            }
            root.join("target/release")
        }
    };
    let bins = Binaries {
        streamalot: dir.join("streamalot"),
        rtpload: dir.join("rtpload"),
        peer: root.join("tools/gst-rtsp-peer"),
    };
    for b in [&bins.streamalot, &bins.rtpload] {
        if !b.exists() {
            return Err(format!("no {}", b.display()));
        }
    }
    Ok(bins)
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Peer {
    Streamalot,
    Gstreamer,
}

impl Peer {
    pub fn name(self) -> &'static str {
        match self {
            Peer::Streamalot => "streamalot",
            Peer::Gstreamer => "GStreamer",
        }
    }
}

/// A library directory `out/media` holding only `movie`, linked in (or
/// copied) as `movie.mp4`: what the servers under test serve. Returns the
/// directory and the name.
pub fn library(out: &Path, movie: &Path) -> Result<(PathBuf, &'static str), String> {
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let library = out.join("media");
    let _ = std::fs::remove_dir_all(&library);
    std::fs::create_dir_all(&library).map_err(|e| e.to_string())?;
    let name = "movie.mp4";
    if std::fs::hard_link(movie, library.join(name)).is_err() {
        std::fs::copy(movie, library.join(name)).map_err(|e| format!("copy the movie: {e}"))?;
    }
    Ok((library, name))
}

/// A server under test; dropping it stops it.
pub struct Server {
    pub child: Child,
    pub url: String,
    pub stats_json: Option<PathBuf>,
}

impl Drop for Server {
    fn drop(&mut self) {
        terminate(&mut self.child);
    }
}

pub fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

/// Starts `peer` serving `library/name`, with its logs in `dir`: streamalot
/// bound to `host` (the URL names it), with `--stats-json` and an access log
/// in `dir`, its other flags from `serve_args`; GStreamer's server (which
/// listens on every address) pinned to `peer_cpus` (a `taskset` list).
/// Returns once it accepts connections.
#[allow(clippy::too_many_arguments)]
pub fn start(
    host: Ipv4Addr,
    bins: &Binaries,
    peer: Peer,
    library: &Path,
    name: &str,
    dir: &Path,
    serve_args: &[String],
    peer_cpus: &str,
) -> Result<Server, String> {
    let port = free_port()?;
    let log = std::fs::File::create(dir.join("server.log")).map_err(|e| e.to_string())?;
    let out = std::fs::File::create(dir.join("server.out")).map_err(|e| e.to_string())?;
    let (mut child, url, stats_json) = match peer {
        Peer::Streamalot => {
            let stats = dir.join("stats.json");
            let _ = std::fs::remove_file(&stats);
            let child = Command::new(&bins.streamalot)
                .arg("serve")
                .arg("--media")
                .arg(library)
                .arg("--bind")
                .arg(host.to_string())
                .args(["--rtsp-port", &port.to_string()])
                .args(serve_args)
                .arg("--access-log")
                .arg(dir.join("access.log"))
                .arg("--stats-json")
                .arg(&stats)
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(log)
                .spawn()
                .map_err(|e| format!("cannot start {}: {e}", bins.streamalot.display()))?;
            (child, format!("rtsp://{host}:{port}/{name}"), Some(stats))
        }
        Peer::Gstreamer => {
            // Pinned to the shard's core, so both servers have one core.
            let child = Command::new("taskset")
                .args(["-c", peer_cpus])
                .arg(&bins.peer)
                .args(["--port", &port.to_string()])
                .arg(library.join(name))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(log)
                .spawn()
                .map_err(|e| {
                    format!(
                        "cannot start {} (needs taskset and GStreamer): {e}",
                        bins.peer.display()
                    )
                })?;
            (child, format!("rtsp://{host}:{port}/{name}"), None)
        }
    };
    if let Some(stdout) = child.stdout.take() {
        // gst-rtsp-peer says "ready URL" once it listens; keep its pipe drained.
        thread::spawn(move || for _ in BufReader::new(stdout).lines() {});
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if TcpStream::connect((host, port)).is_ok() {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "{} exited ({status}) before listening; see {}",
                peer.name(),
                dir.display()
            ));
        }
        if Instant::now() > deadline {
            terminate(&mut child);
            return Err(format!("{} did not listen within 30 s", peer.name()));
        }
        thread::sleep(Duration::from_millis(50));
    }
    Ok(Server { child, url, stats_json })
}

/// SIGTERM, then SIGKILL after 15 s.
pub fn terminate(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    signal(child.id(), "TERM");
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

pub fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}
