//! Helpers for the tests of the admin API, `/metrics` and the status page:
//! a plain HTTP/1.1 client (written here, not the server's codec), a movie
//! long enough to be caught playing, the Prometheus text parser of the
//! Python `prometheus_client` package, and headless Chromium.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;

use crate::{describe, require_tool, run, run_ok, run_within, scratch_dir};

/// One HTTP response.
#[derive(Debug, Clone)]
pub struct HttpReply {
    pub status: u16,
    /// Names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpReply {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics, saying what came, if it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.text()))
    }
}

/// Sends one request on a new connection (`Connection: close`) and reads
/// the response to the end.
pub fn http(addr: SocketAddr, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> HttpReply {
    let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    http_on(stream, method, target, headers, body)
}

/// As [`http`], from a client bound to `from` (another loopback address).
pub fn http_from(from: [u8; 4], addr: SocketAddr, method: &str, target: &str, headers: &[(&str, &str)]) -> HttpReply {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("a socket");
    s.bind(&SocketAddr::from((from, 0)).into())
        .unwrap_or_else(|e| panic!("bind {from:?}: {e}"));
    s.connect(&addr.into())
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    http_on(TcpStream::from(s), method, target, headers, &[])
}

fn http_on(mut stream: TcpStream, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> HttpReply {
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("a timeout");
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    stream.write_all(&bytes).expect("the request is written");
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    parse_reply(&raw).unwrap_or_else(|| {
        panic!(
            "{method} {target}: no HTTP response in {:?}",
            String::from_utf8_lossy(&raw)
        )
    })
}

/// An HTTP response's status, headers and body (by Content-Length, else to
/// the end).
pub fn parse_reply(raw: &[u8]) -> Option<HttpReply> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let mut parts = status_line.splitn(3, ' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let status = parts.next()?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let rest = &raw[end + 4..];
    let len = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(rest.len());
    Some(HttpReply {
        status,
        headers,
        body: rest[..len.min(rest.len())].to_vec(),
    })
}

/// `Authorization: Bearer TOKEN`.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A GET of the admin API with `token`, expected to answer 200 with JSON.
pub fn api(addr: SocketAddr, token: &str, path: &str) -> Value {
    let auth = bearer(token);
    let r = http(
        addr,
        "GET",
        &format!("/api/v1/{path}"),
        &[("Authorization", &auth)],
        &[],
    );
    assert_eq!(r.status, 200, "GET /api/v1/{path}: {}", r.text());
    r.json()
}

/// A hinted H.264 movie of `seconds`, small (160x120, 10 frames a second),
/// so that sessions can be caught playing; made once per test binary.
pub fn long_movie(seconds: u32) -> PathBuf {
    static MOVIES: OnceLock<std::sync::Mutex<HashMap<u32, PathBuf>>> = OnceLock::new();
    let mut made = MOVIES.get_or_init(Default::default).lock().unwrap();
    if let Some(p) = made.get(&seconds) {
        return p.clone();
    }
    require_tool("ffmpeg");
    let path = scratch_dir().join(format!("long-{seconds}s.mp4"));
    let duration = seconds.to_string();
    run_ok(
        Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-y"])
            .args(["-f", "lavfi", "-i", "testsrc=size=160x120:rate=10"])
            .args(["-t", &duration, "-c:v", "libx264", "-g", "10", "-pix_fmt", "yuv420p"])
            .args(["-movflags", "+rtphint"])
            .arg(&path),
    );
    made.insert(seconds, path.clone());
    path
}

/// The Python interpreter that has `prometheus_client`: installed with pip
/// from PyPI the first time it is missing.
fn python_with_prometheus() -> &'static str {
    static CHECKED: OnceLock<Result<(), String>> = OnceLock::new();
    let checked = CHECKED.get_or_init(|| {
        let has = || {
            run(Command::new("python3").args(["-c", "import prometheus_client"]))
                .status
                .success()
        };
        if has() {
            return Ok(());
        }
        // A Python that Debian manages refuses plain `pip install`; the
        // second form is for that one.
        for extra in [&[][..], &["--break-system-packages"][..]] {
            let mut cmd = Command::new("python3");
            cmd.args(["-m", "pip", "install", "--quiet", "prometheus_client"])
                .args(extra);
            let out = run_within(&mut cmd, Duration::from_secs(300));
            if out.status.success() && has() {
                return Ok(());
            }
            eprintln!("{} failed: {}", describe(&cmd), String::from_utf8_lossy(&out.stderr));
        }
        Err("cannot install the Python package prometheus_client with pip".into())
    });
    if let Err(why) = checked {
        panic!("{why}: the metrics are checked with its parser");
    }
    "python3"
}

/// One sample of a scrape, as Prometheus's own Python parser read it.
#[derive(Debug, Clone, PartialEq)]
pub struct PromSample {
    /// The family's name and type (`counter`, `gauge`, `histogram`).
    pub family: String,
    pub kind: String,
    /// The sample's own name (`..._total`, `..._bucket`).
    pub name: String,
    pub labels: HashMap<String, String>,
    pub value: f64,
}

/// Parses Prometheus text with `prometheus_client.parser` (which raises on
/// what is not the exposition format), and returns every sample.
pub fn parse_prometheus(text: &str) -> Vec<PromSample> {
    let python = python_with_prometheus();
    let file = scratch_dir().join(format!("metrics-{}.txt", std::process::id()));
    std::fs::write(&file, text).expect("the scrape is saved");
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for f in text_string_to_metric_families(open(sys.argv[1]).read()):
    for s in f.samples:
        out.append({"family": f.name, "kind": f.type, "name": s.name, "labels": s.labels, "value": s.value})
print(json.dumps(out))
"#;
    let out = run(Command::new(python).args(["-c", script]).arg(&file));
    assert!(
        out.status.success(),
        "prometheus_client does not parse the scrape ({}):\n{}\n{text}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: Vec<Value> = serde_json::from_slice(&out.stdout).expect("the script prints JSON");
    parsed
        .into_iter()
        .map(|v| PromSample {
            family: v["family"].as_str().unwrap_or_default().to_owned(),
            kind: v["kind"].as_str().unwrap_or_default().to_owned(),
            name: v["name"].as_str().unwrap_or_default().to_owned(),
            labels: v["labels"]
                .as_object()
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                        .collect()
                })
                .unwrap_or_default(),
            value: v["value"].as_f64().unwrap_or(f64::NAN),
        })
        .collect()
}

/// The sum of the samples called `name` whose labels include `labels`.
pub fn sum_of(samples: &[PromSample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

/// Debian's Chromium.
pub fn chromium() -> &'static str {
    for c in ["chromium", "chromium-browser"] {
        if run(Command::new("sh").args(["-c", &format!("command -v {c}")]))
            .status
            .success()
        {
            return c;
        }
    }
    panic!("chromium not found: run the README's test command (tools/test), which installs it");
}

/// Runs headless Chromium on `url` with a fresh profile under `dir`,
/// letting the page's own time run `budget_ms` (its timers and fetches),
/// with `extra` arguments (`--dump-dom`, `--screenshot=FILE`). Returns its
/// standard output.
pub fn headless(url: &str, dir: &Path, budget_ms: u32, extra: &[&str]) -> String {
    let profile = dir.join("chromium-profile");
    let _ = std::fs::remove_dir_all(&profile);
    std::fs::create_dir_all(&profile).expect("a profile directory");
    let mut cmd = Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1280,1100",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .arg(format!("--virtual-time-budget={budget_ms}"))
    .args(extra)
    .arg(url);
    let out = run_within(&mut cmd, Duration::from_secs(120));
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        out.status.success(),
        "{} failed ({}):\n{}",
        describe(&cmd),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
