//! The decision API end to end, on an in-memory tree, with Digest answers
//! computed by Python's hashlib as a client would.

use std::net::{IpAddr, Ipv4Addr};

use super::digest::tests::python_response;
use super::files::MemoryFs;
use super::*;

const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));
const OTHER: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 99));
const SEC: Nanos = 1_000_000_000;
const T0: Nanos = 1_000 * SEC;
const SALT: [u8; 16] = [3; 16];

fn users_file() -> String {
    let mut text = "realm Streamalot\n".to_owned();
    for (u, p) in [
        ("alice", "wonder"),
        ("bob", "builder"),
        ("carol", "singer"),
        ("pub", "lisher"),
    ] {
        text.push_str(&users::user_line(u, p, "Streamalot", &SALT));
        text.push('\n');
    }
    text
}

fn tree() -> MemoryFs {
    let mut fs = MemoryFs::default();
    fs.put("/etc/users", users_file());
    fs.put("/etc/groups", "staff: carol\nadmin: bob\n");
    fs.put("/media/private/qtaccess", "require user alice\nrequire group staff\n");
    fs.put(
        "/media/basic/qtaccess",
        "AuthScheme basic\nAuthName \"Members only\"\nrequire valid-user\n",
    );
    fs.put("/media/live/qtaccess", "<Limit WRITE>\nrequire user pub\n</Limit>\n");
    fs.put("/media/open/qtaccess", "AuthScheme none\nrequire user alice\n");
    fs.put("/etc/token-secret", "0123456789abcdef0123456789abcdef\n");
    fs
}

fn settings() -> Settings {
    Settings {
        users: Some("/etc/users".into()),
        groups: Some("/etc/groups".into()),
        ..Settings::default()
    }
}

fn access_with(s: Settings, fs: MemoryFs) -> Access {
    Access::new(&s, "/media".into(), Box::new(fs), [9; 32], 0).unwrap()
}

fn access() -> Access {
    access_with(settings(), tree())
}

struct Req {
    client: IpAddr,
    class: Class,
    method: &'static str,
    uri: String,
    path: String,
    auth: Vec<String>,
    now: Nanos,
}

fn req(path: &str) -> Req {
    Req {
        client: CLIENT,
        class: Class::Read,
        method: "DESCRIBE",
        uri: format!("rtsp://127.0.0.1:8554{path}"),
        path: path.into(),
        auth: Vec::new(),
        now: T0,
    }
}

impl Req {
    fn auth(mut self, v: impl Into<String>) -> Req {
        self.auth.push(v.into());
        self
    }

    fn decide(&self, a: &mut Access) -> Decision {
        let auth: Vec<&str> = self.auth.iter().map(String::as_str).collect();
        a.decide(&Request {
            client: self.client,
            class: self.class,
            method: self.method,
            uri: &self.uri,
            path: &self.path,
            authorization: &auth,
            now: self.now,
            unix_time: 1_700_000_000,
        })
    }
}

fn challenge(d: Decision) -> Challenge {
    match d {
        Decision::Challenge(c) => c,
        other => panic!("expected a 401, got {other:?}"),
    }
}

fn allowed(d: Decision) -> Grant {
    match d {
        Decision::Allow(g) => g,
        other => panic!("expected to be allowed, got {other:?}"),
    }
}

fn param(challenge: &str, name: &str) -> String {
    let (_, rest) = header::split_scheme(challenge).unwrap();
    let params = header::parse_params(rest).unwrap();
    params
        .into_iter()
        .find(|p| p.name == name)
        .map(|p| p.value)
        .unwrap_or_default()
}

/// What ffmpeg sends: the last challenge (MD5), qop quoted, the URL as uri.
fn ffmpeg_answer(c: &Challenge, user: &str, pw: &str, r: &Req, nc: &str) -> String {
    let last = c.www_authenticate.last().unwrap();
    assert_eq!(param(last, "algorithm"), "MD5");
    let (nonce, opaque) = (param(last, "nonce"), param(last, "opaque"));
    let resp = python_response(
        "md5",
        false,
        user,
        &param(last, "realm"),
        pw,
        r.method,
        &r.uri,
        &nonce,
        Some((nc, "0a4f113b")),
    );
    format!(
        "Digest username=\"{user}\",realm=\"{}\",nonce=\"{nonce}\",uri=\"{}\",response=\"{resp}\",\
         algorithm=MD5,opaque=\"{opaque}\",qop=\"auth\",cnonce=\"0a4f113b\",nc={nc}",
        param(last, "realm"),
        r.uri
    )
}

/// What retina (http-auth) sends: the first challenge (SHA-256).
fn retina_answer(c: &Challenge, user: &str, pw: &str, r: &Req) -> String {
    let first = &c.www_authenticate[0];
    assert_eq!(param(first, "algorithm"), "SHA-256");
    let nonce = param(first, "nonce");
    let resp = python_response(
        "sha256",
        false,
        user,
        "Streamalot",
        pw,
        r.method,
        &r.uri,
        &nonce,
        Some(("00000001", "f2/wE4q74E6z")),
    );
    format!(
        "Digest username=\"{user}\", realm=\"Streamalot\", uri=\"{}\", algorithm=SHA-256, \
         nonce=\"{nonce}\", nc=00000001, cnonce=\"f2/wE4q74E6z\", qop=auth, response=\"{resp}\", \
         opaque=\"{}\"",
        r.uri,
        param(first, "opaque")
    )
}

/// What GStreamer sends: RFC 2069, MD5 whatever the algorithm.
fn gstreamer_answer(c: &Challenge, user: &str, pw: &str, r: &Req) -> String {
    let last = c.www_authenticate.last().unwrap();
    let nonce = param(last, "nonce");
    let resp = python_response("md5", false, user, "Streamalot", pw, r.method, &r.uri, &nonce, None);
    format!(
        "Digest username=\"{user}\", realm=\"Streamalot\", nonce=\"{nonce}\", uri=\"{}\", response=\"{resp}\", \
         opaque=\"{}\"",
        r.uri,
        param(last, "opaque")
    )
}

#[test]
fn unprotected_paths_are_open_and_publishing_is_not() {
    let mut a = access_with(Settings::default(), MemoryFs::default());
    assert_eq!(
        allowed(req("/movie.mp4").decide(&mut a)),
        Grant {
            user: None,
            via: Via::Anonymous
        }
    );
    let mut w = req("/live/cam.sdp");
    w.class = Class::Write;
    w.method = "ANNOUNCE";
    // No users file anywhere: no credential could help, so 403 not 401.
    assert_eq!(w.decide(&mut a), Decision::Forbidden(Forbidden::NoUsers));
}

#[test]
fn digest_challenge_offers_sha256_then_md5_with_one_nonce() {
    let mut a = access();
    let c = challenge(req("/private/m.mp4").decide(&mut a));
    assert_eq!(c.www_authenticate.len(), 2);
    assert_eq!((c.failure, c.stale, c.delay), (None, None, 0));
    let (sha, md5) = (&c.www_authenticate[0], &c.www_authenticate[1]);
    assert!(sha.starts_with("Digest ") && md5.starts_with("Digest "));
    assert_eq!(
        (param(sha, "algorithm"), param(md5, "algorithm")),
        ("SHA-256".into(), "MD5".into())
    );
    assert_eq!(param(sha, "nonce"), param(md5, "nonce"));
    assert_eq!(param(sha, "realm"), "Streamalot");
    assert_eq!(param(sha, "qop"), "auth");
    // ffmpeg's buffers: nonce 300, opaque 300, algorithm 10 bytes.
    assert!(param(sha, "nonce").len() < 300 && param(sha, "opaque").len() < 300);
}

#[test]
fn ffmpeg_retina_and_gstreamer_answers_log_in() {
    let mut a = access();
    let r = req("/private/sub/m.mp4?x=1");
    let c = challenge(r.decide(&mut a));

    let ffmpeg = req("/private/sub/m.mp4?x=1").auth(ffmpeg_answer(&c, "alice", "wonder", &r, "00000001"));
    let g = allowed(ffmpeg.decide(&mut a));
    assert_eq!(
        g,
        Grant {
            user: Some("alice".into()),
            via: Via::Digest(Algorithm::Md5)
        }
    );
    // Each client answers the challenge it got on its own connection.
    let c = challenge(r.decide(&mut a));
    let retina = req("/private/sub/m.mp4?x=1").auth(retina_answer(&c, "alice", "wonder", &r));
    assert_eq!(allowed(retina.decide(&mut a)).via, Via::Digest(Algorithm::Sha256));
    let c = challenge(r.decide(&mut a));
    let gst = req("/private/sub/m.mp4?x=1").auth(gstreamer_answer(&c, "carol", "singer", &r));
    assert_eq!(allowed(gst.decide(&mut a)).user.as_deref(), Some("carol"));
    // GStreamer reuses the nonce for every request: RFC 2069 has no count.
    assert!(matches!(gst.decide(&mut a), Decision::Allow(_)));
    assert_eq!(a.stats.failed_logins, 0);
}

#[test]
fn a_replayed_nonce_count_is_refused_and_counted() {
    let mut a = access();
    let r = req("/private/m.mp4");
    let c = challenge(r.decide(&mut a));
    let first = req("/private/m.mp4").auth(ffmpeg_answer(&c, "alice", "wonder", &r, "00000001"));
    assert!(matches!(first.decide(&mut a), Decision::Allow(_)));
    let again = challenge(first.decide(&mut a));
    assert_eq!(
        again.stale,
        Some(Staleness::Replayed(Replay::Reused { got: 1, seen: 1 }))
    );
    assert!(matches!(again.failure, Some(Failure::Replayed(_))));
    // stale=true: ffmpeg and retina then retry with the new nonce.
    assert!(again.www_authenticate.iter().all(|h| param(h, "stale") == "true"));
    assert_eq!(a.stats.failed_logins, 1);
    let next = req("/private/m.mp4").auth(ffmpeg_answer(&c, "alice", "wonder", &r, "00000002"));
    assert!(matches!(next.decide(&mut a), Decision::Allow(_)));
    // The new nonce works from 1 again.
    let fresh = req("/private/m.mp4").auth(ffmpeg_answer(&again, "alice", "wonder", &r, "00000001"));
    assert!(matches!(fresh.decide(&mut a), Decision::Allow(_)));
}

#[test]
fn expired_foreign_and_moved_nonces_are_stale_not_failures() {
    let mut a = access();
    let r = req("/private/m.mp4");
    let c = challenge(r.decide(&mut a));
    let answer = ffmpeg_answer(&c, "alice", "wonder", &r, "00000001");
    let mut late = req("/private/m.mp4").auth(answer.clone());
    late.now = T0 + (DEFAULT_NONCE_LIFETIME_SECS + 1) * SEC;
    assert_eq!(challenge(late.decide(&mut a)).stale, Some(Staleness::Expired));
    // Another process (a restart) has another secret.
    let mut restarted = Access::new(&settings(), "/media".into(), Box::new(tree()), [1; 32], 0).unwrap();
    let s = challenge(req("/private/m.mp4").auth(answer.clone()).decide(&mut restarted));
    assert_eq!((s.stale, s.failure), (Some(Staleness::Foreign), None));
    // Another core (issuer) has its own nonces and replay table.
    let mut core1 = Access::new(&settings(), "/media".into(), Box::new(tree()), [9; 32], 1).unwrap();
    let s = challenge(req("/private/m.mp4").auth(answer.clone()).decide(&mut core1));
    assert_eq!(s.stale, Some(Staleness::Foreign));
    // The nonce was issued to CLIENT.
    let mut moved = req("/private/m.mp4").auth(answer);
    moved.client = OTHER;
    assert_eq!(challenge(moved.decide(&mut a)).stale, Some(Staleness::Foreign));
    assert_eq!(a.stats.failed_logins, 0);
    assert_eq!(a.stats.stale_nonces, 2);
}

#[test]
fn wrong_credentials_are_failures() {
    let mut a = access();
    let r = req("/private/m.mp4");
    let c = challenge(r.decide(&mut a));
    let check = |a: &mut Access, auth: String| challenge(req("/private/m.mp4").auth(auth).decide(a)).failure;
    let f = check(&mut a, ffmpeg_answer(&c, "alice", "wander", &r, "00000001"));
    assert_eq!(f, Some(Failure::WrongPassword("alice".into())));
    let f = check(&mut a, ffmpeg_answer(&c, "mallory", "x", &r, "00000001"));
    assert_eq!(f, Some(Failure::UnknownUser("mallory".into())));
    let other_uri = req("/private/other.mp4");
    let f = check(&mut a, ffmpeg_answer(&c, "alice", "wonder", &other_uri, "00000001"));
    assert!(matches!(f, Some(Failure::UriMismatch { .. })), "{f:?}");
    let good = ffmpeg_answer(&c, "alice", "wonder", &r, "00000001");
    let f = check(&mut a, good.replace("realm=\"Streamalot\"", "realm=\"Other\""));
    assert_eq!(f, Some(Failure::WrongRealm("Other".into())));
    let f = check(&mut a, good.replace("algorithm=MD5", "algorithm=MD5-sess"));
    assert_eq!(f, Some(Failure::AlgorithmNotOffered("MD5-sess")));
    let f = challenge(
        req("/private/m.mp4")
            .auth(good.clone())
            .auth(good.clone())
            .decide(&mut a),
    )
    .failure;
    assert_eq!(f, Some(Failure::Duplicate("Digest")));
    assert_eq!(a.stats.failed_logins, 6);
}

#[test]
fn hostile_authorization_values_never_panic() {
    let mut a = access();
    let huge_uri = format!(
        "Digest username=\"a\", realm=\"Streamalot\", nonce=\"n\", uri=\"{}\", response=\"00\"",
        "u".repeat(9000)
    );
    let values = [
        "".to_owned(),
        "Digest".to_owned(),
        "Digest ,,,".to_owned(),
        "Digest username=".to_owned(),
        "Digest username=\"alice\"".to_owned(),
        "Digest username=\"alice\", username=\"bob\"".to_owned(),
        "Digest username=\"alice\r\nX: y\"".to_owned(),
        "Digest username=\"\u{0}\"".to_owned(),
        huge_uri,
        "Basic !!!".to_owned(),
        "Bearer abc".to_owned(),
        "\u{1F600}".to_owned(),
    ];
    for v in values {
        match req("/private/m.mp4").auth(v.clone()).decide(&mut a) {
            Decision::Challenge(_) | Decision::SlowDown { .. } => {}
            other => panic!("{v:?} got {other:?}"),
        }
    }
    let mut b = access();
    for v in ["Basic !!!", "Basic dXNlcg==", "Basic //79", "Digest x=1"] {
        let c = challenge(req("/basic/m.mp4").auth(v).decide(&mut b));
        assert!(
            matches!(c.failure, Some(Failure::Malformed(_)) | None),
            "{v}: {:?}",
            c.failure
        );
    }
}

#[test]
fn rfc2069_can_be_refused() {
    let mut s = settings();
    s.digest_rfc2069 = Some(false);
    let mut a = access_with(s, tree());
    let r = req("/private/m.mp4");
    let c = challenge(r.decide(&mut a));
    let f = challenge(
        req("/private/m.mp4")
            .auth(gstreamer_answer(&c, "alice", "wonder", &r))
            .decide(&mut a),
    )
    .failure;
    assert_eq!(f, Some(Failure::Rfc2069Refused));
}

#[test]
fn users_and_groups_decide_who_is_admitted() {
    let mut a = access();
    let r = req("/private/m.mp4");
    let c = challenge(r.decide(&mut a));
    // bob knows his password but the folder admits alice and staff only.
    let bob = req("/private/m.mp4").auth(ffmpeg_answer(&c, "bob", "builder", &r, "00000001"));
    assert!(matches!(
        bob.decide(&mut a),
        Decision::Forbidden(Forbidden::NotPermitted { .. })
    ));
    let c = challenge(r.decide(&mut a));
    let carol = req("/private/m.mp4").auth(ffmpeg_answer(&c, "carol", "singer", &r, "00000001"));
    assert!(matches!(carol.decide(&mut a), Decision::Allow(_)));
    // A sibling folder is not protected; a subfolder is.
    assert!(matches!(req("/public/m.mp4").decide(&mut a), Decision::Allow(_)));
    assert!(matches!(
        req("/private/a/b/m.mp4").decide(&mut a),
        Decision::Challenge(_)
    ));
}

#[test]
fn basic_where_the_folder_asks_for_it() {
    let mut a = access();
    let c = challenge(req("/basic/m.mp4").decide(&mut a));
    assert_eq!(
        c.www_authenticate,
        vec![r#"Basic realm="Members only", charset="UTF-8""#.to_owned()]
    );
    let ok = req("/basic/m.mp4").auth(basic::authorization("bob", "builder"));
    assert_eq!(
        allowed(ok.decide(&mut a)),
        Grant {
            user: Some("bob".into()),
            via: Via::Basic
        }
    );
    assert_eq!(a.stats.password_checks, 1);
    // The next request hits the cache: no second Argon2 run.
    assert!(matches!(ok.decide(&mut a), Decision::Allow(_)));
    assert_eq!((a.stats.password_checks, a.stats.basic_cache_hits), (1, 1));
    let bad = req("/basic/m.mp4").auth(basic::authorization("bob", "wrong"));
    assert_eq!(
        challenge(bad.decide(&mut a)).failure,
        Some(Failure::WrongPassword("bob".into()))
    );
    // Digest credentials on a Basic folder are not the scheme asked for.
    let d = req("/basic/m.mp4").auth("Digest username=\"bob\"");
    assert_eq!(challenge(d.decide(&mut a)).failure, None);
}

#[test]
fn repeated_failed_logins_are_delayed_then_refused_then_forgiven() {
    let mut a = access();
    let wrong = |now| {
        let mut r = req("/basic/m.mp4").auth(basic::authorization("bob", "guess"));
        r.now = now;
        r
    };
    let mut delays = Vec::new();
    for _ in 0..DEFAULT_FAILED_AUTH_RATE.burst {
        delays.push(challenge(wrong(T0).decide(&mut a)).delay);
    }
    assert!(delays.iter().all(|&d| d == 0), "{delays:?}");
    // Past the burst: each failure waits longer (2 s apart at 30 a minute)...
    assert_eq!(challenge(wrong(T0).decide(&mut a)).delay, 2 * SEC);
    assert_eq!(challenge(wrong(T0).decide(&mut a)).delay, 4 * SEC);
    // ...then the address is refused, without even checking the password.
    let checks = a.stats.password_checks;
    assert!(matches!(wrong(T0).decide(&mut a), Decision::SlowDown { .. }));
    let mut right = req("/basic/m.mp4").auth(basic::authorization("bob", "builder"));
    right.now = T0;
    assert!(matches!(right.decide(&mut a), Decision::SlowDown { .. }));
    assert_eq!(a.stats.password_checks, checks);
    // Another address is not affected.
    let mut elsewhere = req("/basic/m.mp4").auth(basic::authorization("bob", "builder"));
    elsewhere.client = OTHER;
    assert!(matches!(elsewhere.decide(&mut a), Decision::Allow(_)));
    right.now = T0 + 60 * SEC;
    assert!(matches!(right.decide(&mut a), Decision::Allow(_)));
    assert_eq!(a.stats.failed_logins, 7);
    assert_eq!(a.stats.slowed_down, 2);
    let [_, failures, _] = a.rate_stats();
    assert_eq!(failures.unwrap().delayed, 2);
}

#[test]
fn the_password_check_budget_bounds_argon2_runs() {
    let mut s = settings();
    s.password_checks_per_second = Some(1);
    s.failed_auth_rate = Some(RateSettings {
        per_minute: 0,
        burst: 0,
        max_delay_ms: 0,
    });
    let mut a = access_with(s, tree());
    let guess = |user: &str| req("/basic/m.mp4").auth(basic::authorization(user, "guess"));
    assert!(matches!(guess("nobody1").decide(&mut a), Decision::Challenge(_)));
    assert!(matches!(guess("nobody2").decide(&mut a), Decision::SlowDown { .. }));
    assert_eq!(a.stats.password_checks, 1);
}

#[test]
fn publishing_needs_the_write_rule() {
    let mut a = access();
    let announce = |path: &str| {
        let mut r = req(path);
        r.class = Class::Write;
        r.method = "ANNOUNCE";
        r
    };
    let r = announce("/live/cam1.sdp");
    let c = challenge(r.decide(&mut a));
    let publisher = announce("/live/cam1.sdp").auth(ffmpeg_answer(&c, "pub", "lisher", &r, "00000001"));
    assert_eq!(allowed(publisher.decide(&mut a)).user.as_deref(), Some("pub"));
    let c = challenge(r.decide(&mut a));
    let alice = announce("/live/cam1.sdp").auth(ffmpeg_answer(&c, "alice", "wonder", &r, "00000001"));
    assert!(matches!(
        alice.decide(&mut a),
        Decision::Forbidden(Forbidden::NotPermitted { .. })
    ));
    // The file speaks only of WRITE, so watching there is refused outright.
    assert!(matches!(
        req("/live/cam1.sdp").decide(&mut a),
        Decision::Forbidden(Forbidden::NoOneAdmitted(_))
    ));
    // Elsewhere publishing needs any valid user.
    let r = announce("/elsewhere/x.sdp");
    let c = challenge(r.decide(&mut a));
    let bob = announce("/elsewhere/x.sdp").auth(ffmpeg_answer(&c, "bob", "builder", &r, "00000001"));
    assert!(matches!(bob.decide(&mut a), Decision::Allow(_)));
    assert_eq!(Class::of_rtsp("SETUP", true), Class::Write);
    assert_eq!(Class::of_rtsp("SETUP", false), Class::Read);
    assert_eq!(Class::of_rtsp("RECORD", false), Class::Write);
    assert_eq!(Class::of_rtsp("GET_PARAMETER", true), Class::Write);
    assert_eq!(Class::of_rtsp("DESCRIBE", false), Class::Read);
}

#[test]
fn the_state_can_move_to_its_core() {
    fn send<T: Send>() {}
    send::<Access>();
}

#[test]
fn broken_files_and_missing_users_fail_closed() {
    let mut fs = tree();
    fs.put("/media/private/qtaccess", "require user alice\nrequire usr bob\n");
    let mut a = access_with(settings(), fs);
    match req("/private/m.mp4").decide(&mut a) {
        Decision::Forbidden(Forbidden::BrokenFile(e)) => {
            assert_eq!(
                e.to_string(),
                "/media/private/qtaccess:2: require \"usr\": expected user, group, valid-user or any-user"
            )
        }
        other => panic!("{other:?}"),
    }
    let mut fs = tree();
    fs.put("/etc/users", "realm Streamalot\nalice:notahash::\n");
    let mut a = access_with(settings(), fs);
    assert!(matches!(
        req("/private/m.mp4").decide(&mut a),
        Decision::Forbidden(Forbidden::BrokenFile(_))
    ));
    let mut fs = tree();
    fs.remove(Path::new("/etc/users"));
    let mut a = access_with(settings(), fs);
    assert!(matches!(
        req("/private/m.mp4").decide(&mut a),
        Decision::Forbidden(Forbidden::NoUsersFile(_))
    ));
    let mut a = access();
    assert_eq!(
        req("/a/../private/m.mp4").decide(&mut a),
        Decision::Forbidden(Forbidden::BadPath)
    );
    assert!(matches!(
        req("/open/m.mp4").decide(&mut a),
        Decision::Forbidden(Forbidden::AnonymousOnly(_))
    ));
}

#[test]
fn address_rules_refuse_before_and_per_request() {
    let mut s = settings();
    s.deny = vec!["198.51.100.0/24".into()];
    s.publish_allow = vec!["192.0.2.0/28".into()];
    s.connection_rate = Some(RateSettings {
        per_minute: 60,
        burst: 2,
        max_delay_ms: 1_000,
    });
    let mut a = access_with(s, tree());
    let denied: IpAddr = "198.51.100.5".parse().unwrap();
    assert!(matches!(
        a.admit(denied, T0),
        Admission::RefuseAddress(AddrVerdict::Denied(_))
    ));
    // The mapped IPv6 form of a denied IPv4 client is denied too.
    assert!(matches!(
        a.admit("::ffff:198.51.100.5".parse().unwrap(), T0),
        Admission::RefuseAddress(_)
    ));
    assert_eq!(a.admit(CLIENT, T0), Admission::Admit);
    assert_eq!(a.admit(CLIENT, T0), Admission::Admit);
    assert_eq!(a.admit(CLIENT, T0), Admission::Delay(SEC));
    assert!(matches!(a.admit(CLIENT, T0), Admission::RefuseRate { .. }));
    assert_eq!(a.stats.connections_refused, 3);
    let mut w = req("/live/cam.sdp");
    w.class = Class::Write;
    w.client = OTHER;
    assert!(matches!(w.decide(&mut a), Decision::Forbidden(Forbidden::Address(_))));
    w.client = CLIENT;
    assert!(matches!(w.decide(&mut a), Decision::Challenge(_)));
}

#[test]
fn url_tokens_open_reading_under_their_prefix() {
    let mut s = settings();
    s.token_secret_file = Some("/etc/token-secret".into());
    let mut a = access_with(s, tree());
    let key = token::TokenKey::new(b"0123456789abcdef0123456789abcdef").unwrap();
    let t = key.mint("/private", 1_700_000_100).unwrap();
    let mut r = req("/private/m.mp4");
    r.uri = format!("rtsp://127.0.0.1:8554/private/m.mp4?token={t}");
    assert_eq!(allowed(r.decide(&mut a)).via, Via::Token("/private".into()));
    let expired = key.mint("/private", 1_699_999_999).unwrap();
    r.uri = format!("rtsp://127.0.0.1:8554/private/m.mp4?token={expired}");
    let c = challenge(r.decide(&mut a));
    assert_eq!(c.failure, Some(Failure::Token(TokenError::Expired(1_699_999_999))));
    // A token never grants publishing.
    let mut w = req("/elsewhere/live.sdp");
    w.class = Class::Write;
    w.uri = format!(
        "rtsp://127.0.0.1:8554/elsewhere/live.sdp?token={}",
        key.mint("/", 1_700_000_100).unwrap()
    );
    assert!(matches!(w.decide(&mut a), Decision::Challenge(_)));
    // Without a secret, tokens are not looked at.
    let mut plain = access();
    r.uri = format!("rtsp://127.0.0.1:8554/private/m.mp4?token={t}");
    assert_eq!(challenge(r.decide(&mut plain)).failure, None);
}

#[test]
fn the_admin_api_is_for_the_admin_group_unless_a_rule_opens_it() {
    let mut s = settings();
    s.access_rule = vec![RuleSettings {
        path: "/metrics".into(),
        methods: vec!["admin".into()],
        any: true,
        ..Default::default()
    }];
    let mut a = access_with(s, tree());
    let admin = |path: &str| {
        let mut r = req(path);
        r.class = Class::Admin;
        r.method = "GET";
        r.uri = path.into();
        r
    };
    assert!(matches!(admin("/metrics").decide(&mut a), Decision::Allow(_)));
    let r = admin("/api/sessions");
    let c = challenge(r.decide(&mut a));
    let bob = admin("/api/sessions").auth(ffmpeg_answer(&c, "bob", "builder", &r, "00000001"));
    assert!(matches!(bob.decide(&mut a), Decision::Allow(_)));
    let c = challenge(r.decide(&mut a));
    let alice = admin("/api/sessions").auth(ffmpeg_answer(&c, "alice", "wonder", &r, "00000001"));
    assert!(matches!(
        alice.decide(&mut a),
        Decision::Forbidden(Forbidden::NotPermitted { .. })
    ));
}

#[test]
fn admin_users_get_in_with_basic_too() {
    let mut s = settings();
    s.admin_users = vec!["alice".into()];
    let mut a = access_with(s, tree());
    let admin = || {
        let mut r = req("/api/v1/server");
        r.class = Class::Admin;
        r.method = "GET";
        r.uri = "/api/v1/server".into();
        r
    };
    let r = admin();
    let c = challenge(r.decide(&mut a));
    let alice = admin().auth(ffmpeg_answer(&c, "alice", "wonder", &r, "00000001"));
    assert!(matches!(alice.decide(&mut a), Decision::Allow(_)));
    // Basic where the media's default is Digest: the admin API takes it.
    let basic = admin().auth(crate::access::basic::authorization("alice", "wonder"));
    assert!(matches!(
        basic.decide(&mut a),
        Decision::Allow(Grant { via: Via::Basic, .. })
    ));
    let wrong = admin().auth(crate::access::basic::authorization("alice", "nope"));
    assert!(matches!(wrong.decide(&mut a), Decision::Challenge(_)));
    // The admin group's members still get in; others get 403.
    let bob = admin().auth(crate::access::basic::authorization("bob", "builder"));
    assert!(matches!(bob.decide(&mut a), Decision::Allow(_)));
    let carol = admin().auth(crate::access::basic::authorization("carol", "singer"));
    assert!(matches!(carol.decide(&mut a), Decision::Forbidden(_)));
}

#[test]
fn settings_are_checked() {
    let new = |s: Settings| Access::new(&s, "/media".into(), Box::new(tree()), [0; 32], 0).err();
    let with = |f: fn(&mut Settings)| {
        let mut s = settings();
        f(&mut s);
        new(s)
    };
    assert!(matches!(
        with(|s| s.digest_algorithms = Some(vec!["SHA-512".into()])),
        Some(SettingsError::Algorithm(_))
    ));
    assert_eq!(
        with(|s| s.digest_algorithms = Some(vec![])),
        Some(SettingsError::NoAlgorithm)
    );
    assert!(matches!(
        with(|s| s.auth_realm = Some("a\"b".into())),
        Some(SettingsError::Realm(..))
    ));
    assert_eq!(with(|s| s.nonce_lifetime = Some(0)), Some(SettingsError::NonceLifetime));
    assert!(matches!(
        with(|s| s.deny = vec!["10.0.0.1/8".into()]),
        Some(SettingsError::Address(_))
    ));
    assert!(matches!(
        with(|s| s.qtaccess_name = Some("a/b".into())),
        Some(SettingsError::FileName(_))
    ));
    assert!(matches!(
        with(|s| s.admin_group = Some("a b".into())),
        Some(SettingsError::AdminGroup(_))
    ));
    assert!(matches!(
        with(|s| s.token_secret_file = Some("/etc/groups".into())),
        Some(SettingsError::TokenSecret { .. })
    ));
    assert!(matches!(
        with(|s| s.token_secret_file = Some("/nonexistent".into())),
        Some(SettingsError::TokenSecret { .. })
    ));
    let toml_text = r#"
        users = "users"
        groups = "groups"
        auth_scheme = "basic"
        digest_algorithms = ["MD5"]
        failed_auth_rate = { per_minute = 10, burst = 3 }
        deny = ["203.0.113.0/24"]
        [[access_rule]]
        path = "/live"
        methods = ["write"]
        groups = ["publishers"]
    "#;
    let mut s: Settings = toml::from_str(toml_text).unwrap();
    assert_eq!(s.failed_auth_rate.unwrap().max_delay_ms, 4_000);
    resolve_paths(&mut s, Path::new("/etc/streamalot"));
    assert_eq!(s.users.as_deref(), Some(Path::new("/etc/streamalot/users")));
    assert!(toml::from_str::<Settings>("user = \"x\"").is_err());
}
