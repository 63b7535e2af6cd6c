//! Helpers for the access-control tests: users files made by `streamalot
//! passwd`, protected libraries, Digest answers computed independently of
//! the server (Python's `hashlib`), and GStreamer and retina as clients with
//! credentials.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{describe, require_tool, run_within, streamalot_binary};

/// The realm `streamalot passwd` gives a new users file.
pub const REALM: &str = "Streamalot";

/// Runs `streamalot passwd --file FILE USER PASSWORD` (or `--delete USER`
/// when `password` is `None`), which must succeed.
pub fn passwd(file: &Path, user: &str, password: Option<&str>) {
    let mut cmd = Command::new(streamalot_binary());
    cmd.arg("passwd").arg("--file").arg(file);
    match password {
        Some(p) => cmd.args([user, p]),
        None => cmd.args(["--delete", user]),
    };
    let out = run_within(&mut cmd, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "{} failed: {}",
        describe(&cmd),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A users file at `file`, made anew, with each of `users` (name, password).
pub fn users_file(file: &Path, users: &[(&str, &str)]) -> PathBuf {
    let _ = std::fs::remove_file(file);
    for (u, p) in users {
        passwd(file, u, Some(p));
    }
    file.to_owned()
}

/// `H(text)` in lowercase hex, by Python's hashlib (`md5`, `sha256`).
pub fn python_hash(alg: &str, text: &str) -> String {
    let out = run_within(
        Command::new("python3").args([
            "-c",
            "import hashlib,sys; print(hashlib.new(sys.argv[1], sys.argv[2].encode()).hexdigest())",
            alg,
            text,
        ]),
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "python3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// One Digest answer's inputs.
pub struct DigestAnswer<'a> {
    /// hashlib's name: `md5` or `sha256`.
    pub alg: &'a str,
    pub user: &'a str,
    pub realm: &'a str,
    pub password: &'a str,
    pub method: &'a str,
    pub uri: &'a str,
    pub nonce: &'a str,
    pub opaque: Option<&'a str>,
    /// `(nc, cnonce)` for `qop=auth`; `None` for RFC 2069's form.
    pub qop: Option<(&'a str, &'a str)>,
}

impl DigestAnswer<'_> {
    /// The `Authorization` value, its `response` computed by hashlib.
    pub fn header(&self) -> String {
        let ha1 = python_hash(self.alg, &format!("{}:{}:{}", self.user, self.realm, self.password));
        let ha2 = python_hash(self.alg, &format!("{}:{}", self.method, self.uri));
        let response = match self.qop {
            Some((nc, cnonce)) => python_hash(self.alg, &format!("{ha1}:{}:{nc}:{cnonce}:auth:{ha2}", self.nonce)),
            None => python_hash(self.alg, &format!("{ha1}:{}:{ha2}", self.nonce)),
        };
        let algorithm = if self.alg == "sha256" { "SHA-256" } else { "MD5" };
        let mut h = format!(
            "Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{}\", response=\"{response}\", algorithm={algorithm}",
            self.user, self.realm, self.nonce, self.uri
        );
        if let Some(o) = self.opaque {
            h.push_str(&format!(", opaque=\"{o}\""));
        }
        if let Some((nc, cnonce)) = self.qop {
            h.push_str(&format!(", qop=auth, nc={nc}, cnonce=\"{cnonce}\""));
        }
        h
    }
}

/// The value of parameter `name` in a challenge (`nonce="..."`).
pub fn param(challenge: &str, name: &str) -> Option<String> {
    let at = challenge.find(&format!("{name}="))? + name.len() + 1;
    let rest = &challenge[at..];
    Some(match rest.strip_prefix('"') {
        Some(q) => q[..q.find('"')?].to_owned(),
        None => rest.split([',', ' ']).next()?.to_owned(),
    })
}

/// `Basic base64(user:password)`.
pub fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", crate::rtsp::base64(format!("{user}:{password}").as_bytes()))
}

/// What one gst-launch run did.
pub struct GstRun {
    /// Whether the pipeline reached the end of the stream.
    pub ok: bool,
    /// The MD5 of each decoded picture.
    pub hashes: Vec<String>,
    /// The command and what it printed, for failure messages.
    pub output: String,
}

/// `gst-launch-1.0 rtspsrc location=URL protocols=P [user-id= user-pw=] !
/// rtph264depay ! h264parse ! avdec_h264 ! checksumsink hash=md5`.
pub fn gst_play(url: &str, protocols: &str, creds: Option<(&str, &str)>, timeout: Duration) -> GstRun {
    require_tool("gst-launch-1.0");
    let mut cmd = Command::new("gst-launch-1.0");
    cmd.arg("rtspsrc")
        .arg(format!("location={url}"))
        .arg(format!("protocols={protocols}"));
    if let Some((u, p)) = creds {
        cmd.arg(format!("user-id={u}")).arg(format!("user-pw={p}"));
    }
    cmd.args([
        "!",
        "rtph264depay",
        "!",
        "h264parse",
        "!",
        "avdec_h264",
        "!",
        "checksumsink",
        "hash=md5",
    ]);
    let out = run_within(&mut cmd, timeout);
    let stdout = String::from_utf8_lossy(&out.stdout);
    // As in `gstreamer::decoded_video_hashes`: reaching the end counts even
    // when gst-launch then exits 1 over its own teardown.
    let reached_the_end = stdout
        .lines()
        .any(|l| l.starts_with("Got EOS from element \"pipeline0\""));
    let hashes = stdout
        .lines()
        .filter_map(|line| match line.split_whitespace().collect::<Vec<_>>()[..] {
            [pts, hash] if pts.contains(':') && hash.len() == 32 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Some(hash.to_owned())
            }
            _ => None,
        })
        .collect();
    GstRun {
        ok: out.status.success() || reached_the_end,
        hashes,
        output: format!(
            "{} ({}):\n{stdout}\n{}",
            describe(&cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}
