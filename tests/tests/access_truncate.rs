//! A movie truncated to half in place while 30 sessions play it: the server
//! stays up (no SIGBUS death), those sessions end, the change is logged, and
//! 30 sessions of another movie playing at the same time complete with no
//! loss (rtpload).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use streamalot_tests::media::media;
use streamalot_tests::rtsp::Connection;
use streamalot_tests::server::{library, Server};
use streamalot_tests::{rtpload_binary, spawn, wait_with_timeout};

const SESSIONS: u32 = 30;

fn load(url: &str, out: &Path) -> (std::process::Child, String) {
    let _ = std::fs::remove_dir_all(out);
    let mut cmd = Command::new(rtpload_binary());
    cmd.arg(url)
        .args(["--sessions", &SESSIONS.to_string()])
        .args([
            "--ramp",
            "100",
            "--duration",
            "4",
            "--transport",
            "udp",
            "--max-loss",
            "0",
        ])
        .arg("--out")
        .arg(out);
    spawn(&mut cmd)
}

fn int(v: &Value, path: &[&str]) -> u64 {
    let mut v = v;
    for p in path {
        v = &v[*p];
    }
    v.as_u64().unwrap_or_else(|| panic!("{path:?} = {v}"))
}

#[test]
fn a_movie_truncated_in_place_ends_its_sessions_and_no_others() {
    let lib = library("access-truncate", &[]);
    // Copies, not links: the truncation must not reach the suite's media.
    for name in ["doomed.mp4", "steady.mp4"] {
        std::fs::copy(media().h264_mp4(), lib.join(name)).unwrap();
    }
    let server = Server::start(&lib, &[]);
    let out = lib.with_extension("rtpload");
    let (doomed, doomed_what) = load(&server.url("doomed.mp4"), &out.join("doomed"));
    let (steady, steady_what) = load(&server.url("steady.mp4"), &out.join("steady"));
    // Let every session start (30 at 100 a second), then cut the file.
    std::thread::sleep(Duration::from_millis(1500));
    let file = lib.join("doomed.mp4");
    let len = std::fs::metadata(&file).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(len / 2)
        .unwrap();

    let steady_out = wait_with_timeout(steady, Duration::from_secs(120), &steady_what);
    let doomed_out = wait_with_timeout(doomed, Duration::from_secs(120), &doomed_what);
    let stderr = String::from_utf8_lossy(&steady_out.stderr);
    assert!(steady_out.status.success(), "{steady_what}: {stderr}");
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("steady/summary.json")).unwrap()).unwrap();
    assert_eq!(
        int(&summary, &["sessions", "completed"]),
        u64::from(SESSIONS),
        "{summary}"
    );
    assert_eq!(int(&summary, &["sessions", "failed"]), 0, "{summary}");
    assert_eq!(int(&summary, &["packets", "lost"]), 0, "{summary}");
    // The doomed movie's sessions did not get their whole time.
    assert!(
        !doomed_out.status.success(),
        "{doomed_what} passed though its movie was cut:\n{}",
        String::from_utf8_lossy(&doomed_out.stderr)
    );

    // Still up, and serving.
    let mut conn = Connection::connect(server.addr);
    assert_eq!(conn.request("OPTIONS", "*", &[]).status, 200);
    assert_eq!(conn.request("DESCRIBE", &server.url("steady.mp4"), &[]).status, 200);
    let stopped = server.stop();
    assert!(stopped.status.success(), "{:?}\n{}", stopped.status, stopped.stderr);
    // Each of the doomed movie's sessions was ended for it, once, and the
    // log says which file.
    let ended: Vec<&str> = stopped
        .stderr
        .lines()
        .filter(|l| l.contains("changed under its sessions"))
        .collect();
    assert_eq!(ended.len(), SESSIONS as usize, "{}", stopped.stderr);
    assert!(ended.iter().all(|l| l.contains("doomed.mp4")), "{ended:?}");
}
