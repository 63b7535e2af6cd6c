//! The admin API with users-file logins, end to end with curl: an
//! `--admin-user` gets in with HTTP Basic (`curl -u`) and with Digest
//! (`curl --digest`), beside the bearer token; another user of the same
//! file gets 403, a wrong password or none 401 with both the token's and
//! the access rules' challenges; the access rules' `admin_deny` refuses an
//! admin user's address on top of `--admin-allow`.

use std::process::Command;
use std::time::Duration;

use streamalot_tests::access::users_file;
use streamalot_tests::admin::{api, http};
use streamalot_tests::server::{library, Server};
use streamalot_tests::{require_tool, run_within};

const TOKEN: &str = "test-token_0123456789";

/// `curl` of `url` with `args`: the status code and the body.
fn curl(args: &[&str], url: &str) -> (u16, String) {
    require_tool("curl");
    let out = run_within(
        Command::new("curl")
            .args(["-sS", "--max-time", "20", "-w", "\n%{http_code}"])
            .args(args)
            .arg(url),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "curl: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').expect("a status line");
    (code.trim().parse().expect("a status code"), body.to_owned())
}

#[test]
fn an_admin_user_logs_in_with_basic_or_digest_and_others_are_refused() {
    let lib = library("admin-logins", &[]);
    let users = users_file(&lib.with_extension("users"), &[("root", "r00t-pw"), ("viewer", "v1ew")]);
    let server = Server::start(
        &lib,
        &[
            "--users",
            users.to_str().unwrap(),
            "--admin-user",
            "root",
            "--admin-token",
            TOKEN,
        ],
    );
    let url = format!("http://{}/api/v1/server", server.addr);

    let (status, body) = curl(&["-u", "root:r00t-pw"], &url);
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert!(json["version"].is_string(), "{json}");
    let (status, body) = curl(&["--digest", "-u", "root:r00t-pw"], &url);
    assert_eq!(status, 200, "Digest: {body}");
    // The token still works.
    assert!(api(server.addr, TOKEN, "server")["version"].is_string());

    let (status, body) = curl(&["-u", "viewer:v1ew"], &url);
    assert_eq!(status, 403, "a user not named: {body}");
    let (status, body) = curl(&["--digest", "-u", "viewer:v1ew"], &url);
    assert_eq!(status, 403, "a user not named, by Digest: {body}");
    let (status, body) = curl(&["-u", "root:wrong"], &url);
    assert_eq!(status, 401, "a wrong password: {body}");
    let r = http(server.addr, "GET", "/api/v1/server", &[], &[]);
    assert_eq!(r.status, 401, "{}", r.text());
    let challenges: Vec<&str> = r
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("WWW-Authenticate"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert!(challenges.iter().any(|c| c.starts_with("Bearer ")), "{challenges:?}");
    assert!(challenges.iter().any(|c| c.starts_with("Digest ")), "{challenges:?}");
    drop(server);

    // `[access] admin_deny` applies to logins on top of `--admin-allow`.
    let config = lib.with_extension("toml");
    std::fs::write(
        &config,
        format!(
            "[access]\nusers = {:?}\nadmin_users = [\"root\"]\nadmin_deny = [\"127.0.0.0/8\"]\n",
            users.to_str().unwrap()
        ),
    )
    .unwrap();
    let denied = Server::start(&lib, &["--config", config.to_str().unwrap()]);
    let url = format!("http://{}/api/v1/server", denied.addr);
    let (status, body) = curl(&["-u", "root:r00t-pw"], &url);
    assert_eq!(status, 403, "denied by admin_deny: {body}");
}
