//! Publishing judged by the access rules: where no `--publish` rule covers
//! a path, a folder's `qtaccess` `<Limit WRITE>` says who may publish
//! there, against the users file. ffmpeg publishes as a user the rule
//! names (Digest, from the credential in its URL) and ffmpeg watches the
//! broadcast; a user who may only watch is refused, as is a publisher
//! without credentials; and each 401 carries one authenticator's
//! challenges only: the access rules' for that folder, the publish rules'
//! for theirs.

use std::time::Duration;

use streamalot_tests::access::{param, users_file, DigestAnswer, REALM};
use streamalot_tests::ffmpeg::{framemd5, FRAME_HASHES};
use streamalot_tests::live::{contiguous_run, publish, publish_arg, wait_on_air, PREFIX};
use streamalot_tests::media::{media, H264_FPS};
use streamalot_tests::rtsp::{Connection, Reply};
use streamalot_tests::server::{library, Server};
use streamalot_tests::wait_with_timeout;

const TIMEOUT: Duration = Duration::from_secs(60);

fn challenges(reply: &Reply) -> Vec<String> {
    reply
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("WWW-Authenticate"))
        .map(|(_, v)| v.clone())
        .collect()
}

#[test]
fn a_limit_write_rule_lets_its_user_publish_and_refuses_the_others() {
    let file = media().unhinted.clone();
    let lib = library("access-publish", &[]);
    std::fs::create_dir_all(lib.join("cams")).unwrap();
    // Anyone may watch; only alice may publish.
    std::fs::write(
        lib.join("cams/qtaccess"),
        "require any-user\n<Limit WRITE>\nrequire user alice\n</Limit>\n",
    )
    .unwrap();
    let users = users_file(&lib.with_extension("users"), &[("alice", "a1ice"), ("bob", "b0b")]);
    // A `--publish` rule as well, for another prefix: both at once.
    let server = Server::start(&lib, &["--users", users.to_str().unwrap(), "--publish", &publish_arg()]);

    // Without credentials: 401, with the access rules' Digest challenges
    // only (the publish rules would add Basic).
    let url = server.url("/cams/raw");
    let mut conn = Connection::connect(server.addr);
    let first = conn.request("ANNOUNCE", &url, &[("Content-Type", "application/sdp")]);
    assert_eq!(first.status, 401, "{first:?}");
    let offered = challenges(&first);
    assert_eq!(offered.len(), 2, "{offered:?}");
    assert!(offered.iter().all(|c| c.starts_with("Digest ")), "{offered:?}");
    let on_live = conn.request(
        "ANNOUNCE",
        &server.url(&format!("{PREFIX}/raw")),
        &[("Content-Type", "application/sdp")],
    );
    assert_eq!(on_live.status, 401, "{on_live:?}");
    assert!(
        challenges(&on_live).iter().any(|c| c.starts_with("Basic ")),
        "the publish rules judge their prefix: {on_live:?}"
    );

    // bob logs in (a right Digest answer) but may only watch: 403.
    let md5 = offered
        .iter()
        .find(|c| c.contains("algorithm=MD5"))
        .expect("an MD5 challenge");
    let nonce = param(md5, "nonce").expect("a nonce");
    let opaque = param(md5, "opaque");
    let answer = DigestAnswer {
        alg: "md5",
        user: "bob",
        realm: REALM,
        password: "b0b",
        method: "ANNOUNCE",
        uri: &url,
        nonce: &nonce,
        opaque: opaque.as_deref(),
        qop: Some(("00000001", "0a4f113b")),
    };
    let bob = conn.request("ANNOUNCE", &url, &[("Authorization", &answer.header())]);
    assert_eq!(bob.status, 403, "{bob:?}");

    // bob with ffmpeg: refused, nothing goes on the air.
    let bob_url = format!("rtsp://bob:b0b@{}/cams/bob", server.addr);
    let (refused, what) = publish(&file, "tcp", &bob_url);
    let out = wait_with_timeout(refused, TIMEOUT, &what);
    assert!(!out.status.success(), "{what} published as bob");
    let mut c = Connection::connect(server.addr);
    let r = c.request("DESCRIBE", &server.url("/cams/bob"), &[]);
    assert_ne!(r.status, 200, "bob's broadcast is not on the air: {r:?}");

    // alice with ffmpeg: on the air, and a viewer sees the file's pictures.
    let path = "/cams/alice";
    let alice_url = format!("rtsp://alice:a1ice@{}{path}", server.addr);
    let (publisher, what) = publish(&file, "tcp", &alice_url);
    let sdp = wait_on_air(&server, path);
    assert!(sdp.contains("H264/90000"), "{sdp}");
    let got = framemd5(&["-rtsp_transport", "tcp"], &server.url(path), FRAME_HASHES, TIMEOUT);
    let out = wait_with_timeout(publisher, TIMEOUT, &what);
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let from_file = framemd5(&[], file.to_str().unwrap(), FRAME_HASHES, TIMEOUT);
    // A viewer joins within a second or so of a five-second clip.
    contiguous_run(&from_file.hashes(0), &got.hashes(0), 2 * H264_FPS as usize)
        .unwrap_or_else(|e| panic!("the viewer of alice's broadcast: {e}"));
}
