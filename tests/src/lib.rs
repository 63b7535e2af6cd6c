//! Shared helpers for the end-to-end tests in `tests/tests/`.
//!
//! The tests check Streamalot against real, independent tools rather than
//! against itself: ffmpeg makes the hinted movies ([`media`]), ffmpeg's own RTP
//! muxer is the reference for every packet ([`rtp`]), ffprobe says where the
//! key frames are, and ffmpeg plays the loader's SDP. Nothing here needs
//! anything outside the repository except ffmpeg and ffprobe, and GStreamer
//! (as a client, [`gstreamer`], and its RTSP server, for the load client
//! against a second server), which the README's test command installs; when
//! they are missing the tests fail and say so, never pass quietly. [`peers`]
//! runs `streamalot serve` and that peer for the tests that drive them over
//! the network. [`hinter`] hints ffmpeg's movies as Apple's hinter hints
//! them, and [`depacketize`] puts RTP packets back together as a receiver
//! does, to compare with the file.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

pub mod access;
pub mod admin;
pub mod broadcast;
pub mod depacketize;
pub mod ffmpeg;
pub mod gstreamer;
pub mod hinter;
pub mod icecast;
pub mod live;
pub mod lossy;
pub mod media;
pub mod peers;
pub mod rtp;
pub mod rtsp;
pub mod server;
pub mod vlc;

/// How long any one external command may run before the test gives up on it.
/// Everything the suite runs finishes in a second or two; this only turns a
/// hang into a failure that says which command hung.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Checks that `tool` (`ffmpeg`, `ffprobe`, `gst-launch-1.0` or `curl`) can be run,
/// once per process, and panics with the way out when it cannot.
pub fn require_tool(tool: &'static str) {
    static FFMPEG: OnceLock<Result<(), String>> = OnceLock::new();
    static FFPROBE: OnceLock<Result<(), String>> = OnceLock::new();
    static GST_LAUNCH: OnceLock<Result<(), String>> = OnceLock::new();
    static CURL: OnceLock<Result<(), String>> = OnceLock::new();
    let (cell, version) = match tool {
        "ffmpeg" => (&FFMPEG, "-version"),
        "ffprobe" => (&FFPROBE, "-version"),
        "gst-launch-1.0" => (&GST_LAUNCH, "--version"),
        "curl" => (&CURL, "--version"),
        other => panic!("require_tool knows ffmpeg, ffprobe, gst-launch-1.0 and curl, not {other}"),
    };
    let checked = cell.get_or_init(|| {
        match Command::new(tool)
            .arg(version)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
        {
            Ok(status) if status.success() => Ok(()),
            Ok(status) => Err(format!("`{tool} {version}` failed ({status})")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(format!("{tool} not found")),
            Err(e) => Err(format!("{tool} cannot be run: {e}")),
        }
    });
    if let Err(why) = checked {
        panic!("{why}: run the README's test command (tools/test), which installs it");
    }
}

/// Checks that GStreamer has `element` (say `rtspclientsink`, which comes in
/// its own Debian package), and panics with the way out when it has not:
/// a pipeline with a missing element fails before it sends anything, which
/// would otherwise show up far away as a path that never goes on the air.
pub fn require_gst_element(element: &str) {
    require_tool("gst-launch-1.0");
    let found = Command::new("gst-inspect-1.0")
        .arg(element)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        panic!("GStreamer has no {element}: run the README's test command (tools/test), which installs it");
    }
}

/// Starts `command` with stdin closed and stdout and stderr piped, for
/// [`wait_with_timeout`]; returns the child and the command line, which
/// names it in failure messages.
pub fn spawn(command: &mut Command) -> (Child, String) {
    let what = describe(command);
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    (child, what)
}

/// Runs `command` to completion (stdin closed, stdout and stderr captured),
/// killing it after [`COMMAND_TIMEOUT`].
pub fn run(command: &mut Command) -> Output {
    run_within(command, COMMAND_TIMEOUT)
}

/// Runs `command` to completion, killing it after `timeout`.
pub fn run_within(command: &mut Command, timeout: Duration) -> Output {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", describe(command)));
    wait_with_timeout(child, timeout, &describe(command))
}

/// Runs `command` and panics, with its stderr, unless it succeeds.
pub fn run_ok(command: &mut Command) -> Output {
    let out = run(command);
    check_ok(command, out)
}

fn check_ok(command: &Command, out: Output) -> Output {
    if !out.status.success() {
        panic!(
            "{} failed ({}):\n{}",
            describe(command),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// Collects a spawned child's output like `Child::wait_with_output`, but kills
/// it and panics if it runs longer than `timeout`. `what` names it in the
/// panic message.
pub fn wait_with_timeout(mut child: Child, timeout: Duration, what: &str) -> Output {
    // Read both pipes on their own threads: a child that fills one pipe while
    // we wait on the other would otherwise block forever.
    fn drain(pipe: Option<impl Read + Send + 'static>) -> thread::JoinHandle<Vec<u8>> {
        thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status: ExitStatus = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                let err = stderr.join().unwrap_or_default();
                panic!(
                    "{what} still running after {timeout:?}; killed it. stderr:\n{}",
                    String::from_utf8_lossy(&err)
                );
            }
            Err(e) => panic!("cannot wait for {what}: {e}"),
        }
    };
    Output {
        status,
        stdout: stdout.join().expect("stdout reader thread"),
        stderr: stderr.join().expect("stderr reader thread"),
    }
}

/// Where `got` first differs from `want`, as "i of N (received M): file
/// ..., got ...", or `None` when they are equal.
pub fn first_difference<T: PartialEq + std::fmt::Debug>(want: &[T], got: &[T]) -> Option<String> {
    let i = (0..want.len().max(got.len())).find(|&i| want.get(i) != got.get(i))?;
    Some(format!(
        "{i} of {} (received {}): file {:?}, got {:?}",
        want.len(),
        got.len(),
        want.get(i),
        got.get(i)
    ))
}

/// A command line as a readable string, for failure messages.
pub fn describe(command: &Command) -> String {
    let mut s = command.get_program().to_string_lossy().into_owned();
    for a in command.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// The cargo target profile directory the running test binary lives in
/// (`target/debug` for `target/debug/deps/<test>-<hash>`), if it looks like one.
fn profile_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let deps = exe.parent()?;
    if deps.file_name()? != "deps" {
        return None;
    }
    deps.parent().map(Path::to_owned)
}

/// A scratch directory for this test binary under the cargo target directory
/// (`target/tmp/streamalot-e2e/<test name>`), so generated files are easy to
/// look at after a failure and are cleaned by `cargo clean`. Each test binary
/// gets its own, so binaries never overwrite each other's files.
pub fn scratch_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = profile_dir()
            .and_then(|p| p.parent().map(|t| t.join("tmp")))
            .unwrap_or_else(std::env::temp_dir)
            .join("streamalot-e2e");
        // `rtp_reference-0123abcd` -> `rtp_reference`: one directory per test
        // binary, not one per build of it.
        let exe = std::env::current_exe().expect("the test binary's own path");
        let stem = exe
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let name = stem.rsplit_once('-').map_or(stem.as_str(), |(name, _)| name).to_owned();
        let dir = base.join(if name.is_empty() { "tests".into() } else { name });
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        dir
    })
}

/// The sources of each workspace crate a binary is built from.
const PROTO: [&str; 2] = ["proto/src", "proto/Cargo.toml"];
const NET: [&str; 2] = ["engine/net/src", "engine/net/Cargo.toml"];
const LOADER: [&str; 2] = ["loader/src", "loader/Cargo.toml"];
const ENGINE: [&str; 2] = ["engine/src", "engine/Cargo.toml"];

/// The `streamalot` binary of the same build profile as the running test.
///
/// `cargo test -p streamalot-tests` does not build other packages' binaries,
/// so when the binary is missing, or older than the sources of the crates it
/// is built from, it is built here (`cargo build -p streamalot --bin
/// streamalot`), once per test process. The README's test command builds it
/// beforehand anyway.
pub fn streamalot_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| workspace_binary("streamalot", "streamalot", &[ENGINE, PROTO, NET, LOADER].concat()))
}

/// The `rtpload` load client of the same build profile as the running test,
/// built as [`streamalot_binary`] is when missing or older than its sources
/// (its own, the protocol and socket crates it is built on, and for
/// `--publish` the loader and the engine's broadcaster).
pub fn rtpload_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let own = ["tools/rtpload/src", "tools/rtpload/Cargo.toml"];
        workspace_binary("rtpload", "rtpload", &[own, PROTO, NET, LOADER, ENGINE].concat())
    })
}

/// The capacity benchmark (`perf`), built as [`streamalot_binary`] is.
pub fn capacity_bench_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let own = ["perf/src", "perf/Cargo.toml"];
        workspace_binary(
            "streamalot-perf",
            "capacity-bench",
            &[own, ENGINE, PROTO, NET, LOADER].concat(),
        )
    })
}

/// Binary `bin` of workspace package `package`, built with cargo when it is
/// missing or older than any of `sources` (paths from the workspace root).
fn workspace_binary(package: &str, bin: &str, sources: &[&str]) -> PathBuf {
    let profile = profile_dir().expect("test binaries live in target/<profile>/deps");
    let path = profile.join(format!("{bin}{}", std::env::consts::EXE_SUFFIX));
    if !path.exists() || is_stale(&path, sources) {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = Command::new(cargo);
        build
            .args(["build", "-p", package, "--bin", bin])
            .current_dir(workspace_root());
        // `target/debug` holds the dev profile; any other directory is
        // named after its profile.
        if let Some(name) = profile.file_name().filter(|n| *n != "debug") {
            build.arg("--profile").arg(name);
        }
        // A build from scratch takes minutes on a small machine.
        let out = run_within(&mut build, Duration::from_secs(30 * 60));
        check_ok(&build, out);
    }
    assert!(path.exists(), "building did not produce {}", path.display());
    path
}

/// The workspace root: this package's parent directory.
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests package lives inside the workspace")
}

/// Whether any file under `sources` (paths from the workspace root) is
/// newer than `bin`.
fn is_stale(bin: &Path, sources: &[&str]) -> bool {
    let Ok(built) = bin.metadata().and_then(|m| m.modified()) else {
        return true;
    };
    /// The latest modification time of `path` or of anything under it.
    fn newest(path: &Path) -> Option<std::time::SystemTime> {
        let meta = path.metadata().ok()?;
        if !meta.is_dir() {
            return meta.modified().ok();
        }
        std::fs::read_dir(path)
            .ok()?
            .flatten()
            .filter_map(|entry| newest(&entry.path()))
            .max()
    }
    let root = workspace_root();
    sources.iter().filter_map(|p| newest(&root.join(p))).any(|t| t > built)
}
