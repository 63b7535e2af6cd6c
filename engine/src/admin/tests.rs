use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;

use proto::http::{parse_head, Limits, Request};
use serde_json::Value;

use super::*;
use crate::config::{resolve, Config, ServeArgs};
use crate::http::{Counts, Sample};
use crate::pacer::SessionKey;
use crate::stats::{RequestCounts, ShardStats};

fn info(key: SessionKey, age_s: u64, state: &'static str) -> SessionInfo {
    SessionInfo {
        key,
        id: session_id(key),
        client: "192.0.2.7:5000".parse().unwrap(),
        path: "a.mp4".into(),
        transport: "udp",
        kind: "vod",
        state,
        packets: 10,
        bytes: 12_000,
        lost: None,
        jitter_us: None,
        late_last_us: 0,
        late_max_us: 250,
        frames_thinned: 0,
        quality: None,
        lead_ms: 0,
        speed: 1.0,
        age_ns: age_s * 1_000_000_000,
        user_agent: None,
    }
}

/// A server of two shards with five sessions between them.
struct View {
    config: Config,
    shards: Vec<Snapshot>,
    ended: RefCell<Vec<SessionKey>>,
}

impl View {
    fn new() -> View {
        let media = std::env::temp_dir();
        let args = ServeArgs {
            media: Some(media),
            admin_token: Some("s3cret".into()),
            ..ServeArgs::default()
        };
        let mut a = Snapshot {
            shard: 0,
            ..Snapshot::default()
        };
        a.sessions = vec![info(5, 50, "playing"), info(3, 10, "paused"), info(9, 30, "playing")];
        let mut b = Snapshot {
            shard: 1,
            ..Snapshot::default()
        };
        b.sessions = vec![info(4, 40, "playing"), info(7, 5, "ready")];
        View {
            config: resolve(&args).unwrap(),
            shards: vec![a, b],
            ended: RefCell::default(),
        }
    }
}

impl ServerView for View {
    fn counts(&self) -> Counts {
        Counts {
            connections: 3,
            sessions: 5,
            per_shard: vec![3, 2],
            tunnels: 0,
            listeners: 0,
        }
    }

    fn stats(&self) -> Pin<Box<dyn Future<Output = ShardStats> + '_>> {
        Box::pin(async { ShardStats::default() })
    }

    fn config(&self) -> &Config {
        &self.config
    }

    fn uptime_secs(&self) -> f64 {
        61.0
    }

    fn library_cached(&self) -> usize {
        2
    }

    fn snapshots(&self, sessions: bool) -> Pin<Box<dyn Future<Output = Vec<Snapshot>> + '_>> {
        let mut shards = self.shards.clone();
        if !sessions {
            shards.iter_mut().for_each(|s| s.sessions.clear());
        }
        Box::pin(async move { shards })
    }

    fn end_session(&self, key: SessionKey) -> Pin<Box<dyn Future<Output = bool> + '_>> {
        let found = self.shards.iter().any(|s| s.sessions.iter().any(|i| i.key == key));
        if found {
            self.ended.borrow_mut().push(key);
        }
        Box::pin(async move { found })
    }

    fn reload_library(&self) -> usize {
        1
    }

    fn control_requests(&self) -> RequestCounts {
        RequestCounts::default()
    }

    fn throughput(&self) -> Vec<Sample> {
        vec![
            Sample {
                at_secs: 2.0,
                packets: 100,
                bytes: 100_000,
            },
            Sample {
                at_secs: 4.0,
                packets: 300,
                bytes: 350_000,
            },
        ]
    }
}

fn request(method: &str, target: &str, body: &str) -> Request {
    let text = format!("{method} {target} HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len());
    Request {
        head: parse_head(text.as_bytes(), &Limits::default()).unwrap().unwrap().0,
        body: body.as_bytes().to_vec(),
    }
}

fn call(view: &View, method: &str, target: &str, body: &str) -> (u16, Value) {
    let r = futures_lite::future::block_on(answer(&request(method, target, body), view));
    let value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    assert_eq!(
        r.headers.get("Content-Type"),
        Some("application/json"),
        "{method} {target}"
    );
    (r.status, value)
}

#[test]
fn access_needs_the_token_and_an_allowed_address() {
    let token = Secret::new("s3cret");
    let loopback = crate::config::loopback_blocks();
    let on = AdminAccess::new(Some(&token), &loopback);
    let here: IpAddr = "127.0.0.1".parse().unwrap();
    let there: IpAddr = "192.0.2.9".parse().unwrap();
    assert_eq!(on.check(here, Some("Bearer s3cret")), Ok(()));
    assert_eq!(
        on.check(here, Some("bearer  s3cret ")),
        Ok(()),
        "the scheme is case-insensitive"
    );
    assert_eq!(on.check("::1".parse().unwrap(), Some("Bearer s3cret")), Ok(()));
    for bad in [
        None,
        Some("Bearer"),
        Some("Bearer s3cre"),
        Some("Bearer s3cret2"),
        Some("Basic czNjcmV0"),
        Some(""),
    ] {
        let refused = on.check(here, bad).unwrap_err();
        assert!(
            matches!(&refused, Refusal::Credential(c) if c[0].starts_with("Bearer")),
            "{bad:?}"
        );
        let r = refused.response();
        assert_eq!(r.status, 401);
        assert!(r
            .headers
            .get("WWW-Authenticate")
            .is_some_and(|c| c.starts_with("Bearer realm=")));
    }
    assert_eq!(on.check(there, Some("Bearer s3cret")), Err(Refusal::Address));
    assert_eq!(on.reaches(there).unwrap_err().response().status, 403);
    let wide = AdminAccess::new(Some(&token), &["192.0.2.0/24".parse().unwrap()]);
    assert_eq!(wide.check(there, Some("Bearer s3cret")), Ok(()));
    assert_eq!(wide.check(here, Some("Bearer s3cret")), Err(Refusal::Address));
    let off = AdminAccess::new(None, &loopback);
    assert_eq!(off.check(here, Some("Bearer s3cret")), Err(Refusal::Off));
    assert_eq!(off.reaches(here).unwrap_err().response().status, 403);
}

/// Another scheme joins through the seam without touching the rest.
#[test]
fn a_second_verifier_is_a_second_scheme() {
    struct Fixed;
    impl Verifier for Fixed {
        fn scheme(&self) -> &'static str {
            "Basic"
        }
        fn challenge(&self) -> String {
            "Basic realm=\"x\"".into()
        }
        fn verify(&self, credentials: &str) -> bool {
            credentials == "dTpw"
        }
    }
    let verifiers: Vec<Box<dyn Verifier>> = vec![Box::new(BearerToken::new(Secret::new("t"))), Box::new(Fixed)];
    let a = AdminAccess::with_verifiers(&crate::config::loopback_blocks(), verifiers);
    let here: IpAddr = "127.0.0.1".parse().unwrap();
    assert_eq!(a.check(here, Some("Basic dTpw")), Ok(()));
    assert_eq!(a.check(here, Some("Bearer t")), Ok(()));
    let Err(Refusal::Credential(challenges)) = a.check(here, Some("Basic bm8=")) else {
        panic!()
    };
    assert_eq!(challenges.len(), 2);
    assert_eq!(
        Refusal::Credential(challenges)
            .response()
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("WWW-Authenticate"))
            .count(),
        2
    );
}

#[test]
fn sessions_page_oldest_first_across_shards() {
    let v = View::new();
    let (status, all) = call(&v, "GET", "/api/v1/sessions", "");
    assert_eq!(status, 200);
    assert_eq!(all["total"], 5);
    let ids: Vec<&str> = all["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    let want: Vec<String> = [5u64, 4, 9, 3, 7].iter().map(|&k| session_id(k)).collect();
    assert_eq!(ids, want);
    let (_, page) = call(&v, "GET", "/api/v1/sessions?offset=1&limit=2", "");
    assert_eq!(
        (page["offset"].as_u64(), page["limit"].as_u64(), page["total"].as_u64()),
        (Some(1), Some(2), Some(5))
    );
    let ids: Vec<&str> = page["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, &want[1..3]);
    let (_, past) = call(&v, "GET", "/api/v1/sessions?offset=99", "");
    assert_eq!(past["sessions"].as_array().unwrap().len(), 0);
    assert_eq!(past["total"], 5);
    let s = &all["sessions"][0];
    assert_eq!(s["state"], "playing");
    assert_eq!(s["client"], "192.0.2.7:5000");
    assert_eq!(s["bytes"], 12_000);
    assert_eq!(s["age_secs"], 50.0);
    assert_eq!(s["lateness_ms"]["max"], 0.25);
    assert!(s["lost"].is_null());
}

#[test]
fn bad_requests_get_clean_4xx() {
    let v = View::new();
    for (method, target, body, status) in [
        ("GET", "/api/v1/sessions?offset=-1", "", 400),
        ("GET", "/api/v1/sessions?offset=99999999999999999999999999", "", 400),
        ("GET", "/api/v1/sessions?limit=0", "", 400),
        ("GET", "/api/v1/sessions?limit=1001", "", 400),
        ("GET", "/api/v1/sessions?limit=18446744073709551616", "", 400),
        ("GET", "/api/v1/sessions?limt=5", "", 400),
        ("GET", "/api/v1/sessions?limit", "", 400),
        ("GET", "/api/v1/sessions/xyz", "", 400),
        ("DELETE", "/api/v1/sessions/00000000000000zz", "", 400),
        ("DELETE", "/api/v1/sessions/%00", "", 400),
        ("DELETE", "/api/v1/sessions/00000000000000AA", "", 404),
        ("GET", "/api/v1/sessions/00000000000000AA", "", 404),
        ("POST", "/api/v1/library/reload", "{not json", 400),
        ("POST", "/api/v1/library/reload", "[1,2]", 400),
        ("POST", "/api/v1/library/reload", "{\"everything\":true}", 400),
        ("POST", "/api/v1/library/reload", "\u{0}\u{1}", 400),
        ("GET", "/api/v1/library/reload", "", 405),
        ("POST", "/api/v1/sessions", "", 405),
        ("PUT", "/api/v1/sessions/0000000000000005", "", 405),
        ("GET", "/api/v1/nothing", "", 404),
        ("GET", "/api/v1/sessions/a/b", "", 404),
        ("DELETE", "/api/v1/publishers/cam1", "", 404),
    ] {
        let (got, value) = call(&v, method, target, body);
        assert_eq!(got, status, "{method} {target} {body:?}: {value}");
        assert!(value["error"].is_string(), "{method} {target}: {value}");
    }
    assert!(v.ended.borrow().is_empty());
}

#[test]
fn actions_and_lists() {
    let v = View::new();
    let id = session_id(9);
    let (status, value) = call(&v, "DELETE", &format!("/api/v1/sessions/{id}"), "");
    assert_eq!((status, value["ended"].as_str()), (200, Some(id.as_str())));
    assert_eq!(*v.ended.borrow(), [9]);
    let (status, value) = call(&v, "GET", &format!("/api/v1/sessions/{}", session_id(4)), "");
    assert_eq!((status, value["state"].as_str()), (200, Some("playing")));
    let (status, value) = call(&v, "POST", "/api/v1/library/reload", "");
    assert_eq!(
        (status, value["dropped"].as_u64(), value["cached"].as_u64()),
        (200, Some(1), Some(2))
    );
    assert_eq!(call(&v, "POST", "/api/v1/library/reload", " {} ").0, 200);
    for (path, key) in [
        ("streams", "streams"),
        ("publishers", "publishers"),
        ("channels", "channels"),
    ] {
        let (status, value) = call(&v, "GET", &format!("/api/v1/{path}"), "");
        assert_eq!(status, 200);
        assert_eq!(value[key], serde_json::json!([]));
    }
    let (_, server) = call(&v, "GET", "/api/v1/server", "");
    assert_eq!(server["counts"]["sessions"], 5);
    assert_eq!(server["counts"]["shards"], 2);
    assert_eq!(
        server["config"]["admin_allow"],
        serde_json::json!(["127.0.0.0/8", "::1/128"])
    );
    assert!(
        !server.to_string().contains("s3cret"),
        "the token is never shown: {server}"
    );
    let (_, shards) = call(&v, "GET", "/api/v1/shards", "");
    assert_eq!(shards["shards"].as_array().unwrap().len(), 2);
    let (_, t) = call(&v, "GET", "/api/v1/throughput", "");
    assert_eq!(t["samples"][0]["bits_per_sec"], 1_000_000.0);
    assert_eq!(t["samples"][0]["packets_per_sec"], 100.0);
    assert_eq!(call(&v, "HEAD", "/api/v1/server", "").0, 200);
}

#[test]
fn history_keeps_the_last_minutes() {
    let mut h = History::default();
    for i in 0..(SAMPLES_KEPT + 10) {
        h.push(Sample {
            at_secs: i as f64,
            packets: i as u64,
            bytes: 0,
        });
    }
    let s = h.samples();
    assert_eq!(s.len(), SAMPLES_KEPT);
    assert_eq!(s[0].packets, 10);
}

#[test]
fn the_page_is_self_contained_and_holds_no_token() {
    let html = page::HTML;
    for external in ["http://", "https://", "src=\"", "<link", "@import"] {
        let allowed = external == "http://"
            && html.matches(external).count() == html.matches("http://www.w3.org/2000/svg").count();
        assert!(!html.contains(external) || allowed, "the page loads {external}");
    }
    assert!(html.contains("Authorization"));
    assert!(!html.contains("s3cret"));
}
