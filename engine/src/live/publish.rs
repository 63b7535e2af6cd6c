//! Who may publish where: rules of a path prefix and one credential each
//! (`--publish /live=USER:PASSWORD`), and the check the door makes of every
//! publishing request (ANNOUNCE, a SETUP with `mode=record`, RECORD)
//! against them, by Digest or Basic.
//!
//! With no rules publishing is off, and the door answers those methods 405
//! as a server that records nothing. With rules, a path no rule covers is
//! 403, and a request without the rule's credential gets 401 with the
//! challenges: Digest SHA-256, Digest MD5 (last, the one ffmpeg and
//! GStreamer answer: they keep the last Digest challenge) and Basic. ffmpeg
//! sends the credential of `rtsp://USER:PASSWORD@HOST/...` with Digest when
//! offered, and from then on with every request; nonces and their counts
//! are checked as [`crate::access::digest`] describes.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use proto::rtsp::message::{Request, Response};
use subtle::ConstantTimeEq;

use crate::access::digest::{self, Algorithm, NonceKey, NonceState, ReplayTable};
use crate::access::{basic, DEFAULT_NONCE_LIFETIME_SECS, DEFAULT_REALM, REPLAY_TABLE_ENTRIES};
use crate::source::Nanos;

/// One rule: publishing under `prefix` with this credential.
#[derive(Clone, PartialEq, Eq)]
pub struct Rule {
    /// A path (`/live`): itself and everything under it.
    pub prefix: String,
    pub user: String,
    pub password: String,
}

impl fmt::Debug for Rule {
    // The password never reaches a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rule")
            .field("prefix", &self.prefix)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl FromStr for Rule {
    type Err = String;

    /// `PREFIX=USER:PASSWORD`; the prefix gets a leading `/` if it lacks one.
    fn from_str(s: &str) -> Result<Rule, String> {
        let (prefix, credential) = s
            .split_once('=')
            .ok_or("expected PREFIX=USER:PASSWORD, such as /live=alice:secret")?;
        let (user, password) = credential
            .split_once(':')
            .ok_or("expected PREFIX=USER:PASSWORD: the credential needs a ':' between user and password")?;
        Rule::new(prefix, user, password)
    }
}

impl Rule {
    pub fn new(prefix: &str, user: &str, password: &str) -> Result<Rule, String> {
        if user.is_empty() || user.contains(':') || user.chars().any(char::is_control) {
            return Err("the user name must be non-empty, without ':' or control characters".into());
        }
        if password.is_empty() || password.chars().any(char::is_control) {
            return Err("the password must be non-empty, without control characters".into());
        }
        let prefix = prefix.trim();
        if prefix.contains(['?', '#', ' ']) || prefix.split('/').any(|p| p == "..") {
            return Err(format!("{prefix:?} is not a path prefix"));
        }
        let prefix = format!("/{}", prefix.trim_matches('/'));
        Ok(Rule {
            prefix,
            user: user.to_owned(),
            password: password.to_owned(),
        })
    }

    /// Whether the rule covers `path`: the prefix itself, or under it.
    pub fn covers(&self, path: &str) -> bool {
        self.prefix == "/"
            || path == self.prefix
            || path
                .strip_prefix(&self.prefix)
                .is_some_and(|rest| rest.starts_with('/'))
    }
}

/// The publish rules and the Digest state of the core that checks them.
pub struct Gate {
    rules: Vec<Rule>,
    realm: String,
    key: NonceKey,
    replay: RefCell<ReplayTable>,
    seq: Cell<u32>,
    /// The caller's monotonic clock: the door has no clock of its own.
    clock: fn() -> Nanos,
}

impl fmt::Debug for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gate")
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

const LIFETIME_MS: u64 = DEFAULT_NONCE_LIFETIME_SECS * 1_000;

impl Gate {
    /// A gate over `rules`, minting nonces with `secret` and reading the
    /// time from `clock`.
    pub fn new(rules: Vec<Rule>, secret: [u8; 32], clock: fn() -> Nanos) -> Gate {
        Gate {
            rules,
            realm: DEFAULT_REALM.to_owned(),
            key: NonceKey::new(secret, 0x50, true),
            replay: RefCell::new(ReplayTable::new(REPLAY_TABLE_ENTRIES)),
            seq: Cell::new(0),
            clock,
        }
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The rule for `path`: the longest prefix that covers it.
    pub fn rule_for(&self, path: &str) -> Option<&Rule> {
        self.rules
            .iter()
            .filter(|r| r.covers(path))
            .max_by_key(|r| r.prefix.len())
    }

    /// Whether `path` is where a broadcast could be: a viewer of it with no
    /// publisher gets 404 rather than a movie lookup.
    pub fn is_live_path(&self, path: &str) -> bool {
        self.rule_for(path).is_some()
    }

    /// Checks a publishing request for `path` from `client`: the publisher's
    /// user name, or the answer to send (403, or 401 with challenges).
    pub fn check(&self, req: &Request, path: &str, client: IpAddr) -> Result<String, Response> {
        let cseq = req.cseq();
        let Some(rule) = self.rule_for(path) else {
            return Err(Response::new(403, cseq));
        };
        let now_ms = (self.clock)() / 1_000_000;
        let mut stale = false;
        let values = req
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("Authorization"))
            .map(|(_, v)| v);
        for value in values {
            if let Ok(c) = basic::parse(value) {
                if c.user == rule.user && bool::from(c.password.as_bytes().ct_eq(rule.password.as_bytes())) {
                    return Ok(c.user);
                }
                continue;
            }
            let Ok(d) = digest::parse(value) else { continue };
            if d.username != rule.user || d.realm != self.realm || !digest::uri_matches(&d.uri, &req.uri) {
                continue;
            }
            let ha1 = digest::ha1(d.algorithm.hash(), &rule.user, &self.realm, &rule.password);
            if !d.proves(req.method.as_str(), &ha1) {
                continue;
            }
            match self.key.check(&d.nonce, now_ms, client, LIFETIME_MS) {
                NonceState::Fresh { ms, id } => {
                    // RFC 2069 answers (GStreamer's) carry no count to check.
                    if let Some(nc) = &d.qop {
                        let oldest = now_ms.saturating_sub(LIFETIME_MS);
                        if self.replay.borrow_mut().record(ms, id, nc.value, oldest).is_err() {
                            stale = true;
                            continue;
                        }
                    }
                    return Ok(d.username);
                }
                NonceState::Expired | NonceState::Foreign => stale = true,
            }
        }
        Err(self.challenge(cseq, client, now_ms, stale))
    }

    /// Checks an HTTP publisher's `Authorization` values (an Icecast
    /// source, `/admin/metadata`) for `path` by Basic, the only scheme
    /// Icecast sources send: the user name, or the status to answer (403
    /// for a path no rule covers, 401 for a missing or wrong credential).
    pub fn check_basic<'a>(&self, path: &str, authorization: impl IntoIterator<Item = &'a str>) -> Result<String, u16> {
        let Some(rule) = self.rule_for(path) else {
            return Err(403);
        };
        for value in authorization {
            if let Ok(c) = basic::parse(value) {
                if c.user == rule.user && bool::from(c.password.as_bytes().ct_eq(rule.password.as_bytes())) {
                    return Ok(c.user);
                }
            }
        }
        Err(401)
    }

    /// The realm of the publish rules' challenges.
    pub fn realm(&self) -> &str {
        &self.realm
    }

    fn challenge(&self, cseq: Option<&str>, client: IpAddr, now_ms: u64, stale: bool) -> Response {
        let seq = self.seq.get();
        self.seq.set(seq.wrapping_add(1));
        let nonce = self.key.mint(now_ms, seq, client);
        let opaque = self.key.opaque();
        let params = digest::ChallengeParams {
            realm: &self.realm,
            nonce: &nonce,
            opaque: &opaque,
            algorithms: &[Algorithm::Sha256, Algorithm::Md5],
            stale,
        };
        let mut r = Response::new(401, cseq);
        for c in digest::challenges(&params) {
            r = r.header("WWW-Authenticate", c);
        }
        r.header("WWW-Authenticate", basic::challenge(&self.realm))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::digest::tests::python_response;
    use proto::rtsp::message::{parse, Limits, Message};
    use std::cell::Cell as StdCell;

    thread_local! {
        static NOW: StdCell<Nanos> = const { StdCell::new(1_000_000_000) };
    }

    fn clock() -> Nanos {
        NOW.with(|n| n.get())
    }

    fn gate() -> Gate {
        let rules = vec![
            "/live=caster:s3cret".parse().unwrap(),
            "/live/vip=boss:other".parse().unwrap(),
        ];
        Gate::new(rules, [9; 32], clock)
    }

    fn request(method: &str, uri: &str, auth: &[String]) -> Request {
        let mut text = format!("{method} {uri} RTSP/1.0\r\nCSeq: 3\r\n");
        for a in auth {
            text.push_str(&format!("Authorization: {a}\r\n"));
        }
        text.push_str("\r\n");
        match parse(text.as_bytes(), &Limits::default()).unwrap().unwrap().0 {
            Message::Request(r) => r,
            other => panic!("{other:?}"),
        }
    }

    const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    /// The nonce of the MD5 challenge of a 401.
    fn nonce(r: &Response) -> String {
        let md5 = r
            .headers
            .iter()
            .find(|(n, v)| n.eq_ignore_ascii_case("WWW-Authenticate") && v.contains("algorithm=MD5"))
            .map(|(_, v)| v.to_owned())
            .expect("an MD5 challenge");
        let at = md5.find("nonce=\"").unwrap() + 7;
        md5[at..at + md5[at..].find('"').unwrap()].to_owned()
    }

    #[test]
    fn rules_parse_and_cover_their_paths() {
        let r: Rule = "live=a:b:c".parse().unwrap();
        assert_eq!(
            (r.prefix.as_str(), r.user.as_str(), r.password.as_str()),
            ("/live", "a", "b:c")
        );
        assert!(r.covers("/live") && r.covers("/live/cam") && !r.covers("/lively") && !r.covers("/x"));
        for bad in ["/live", "/live=:pw", "/live=user:", "/../x=a:b", "/live=a"] {
            assert!(bad.parse::<Rule>().is_err(), "{bad}");
        }
        assert!(!format!("{r:?}").contains("b:c"), "the password stays out of logs");
        let g = gate();
        assert_eq!(g.rule_for("/live/vip/one").unwrap().user, "boss", "the longest prefix");
        assert_eq!(g.rule_for("/live/cam").unwrap().user, "caster");
    }

    #[test]
    fn basic_digest_and_refusals() {
        let g = gate();
        let uri = "rtsp://127.0.0.1:8554/live/cam";
        let none = g
            .check(&request("ANNOUNCE", uri, &[]), "/live/cam", CLIENT)
            .unwrap_err();
        assert_eq!(none.status, 401);
        let schemes: Vec<&str> = none
            .headers
            .iter()
            .filter(|(n, _)| *n == "WWW-Authenticate")
            .map(|(_, v)| v.split(' ').next().unwrap())
            .collect();
        assert_eq!(
            schemes,
            ["Digest", "Digest", "Basic"],
            "MD5 last of the Digest ones, for ffmpeg"
        );
        let basic = basic::authorization("caster", "s3cret");
        assert_eq!(
            g.check(
                &request("ANNOUNCE", uri, std::slice::from_ref(&basic)),
                "/live/cam",
                CLIENT
            )
            .unwrap(),
            "caster"
        );
        let wrong = basic::authorization("caster", "guess");
        assert_eq!(
            g.check(&request("ANNOUNCE", uri, &[wrong]), "/live/cam", CLIENT)
                .unwrap_err()
                .status,
            401
        );
        let elsewhere = "rtsp://127.0.0.1:8554/other/cam";
        assert_eq!(
            g.check(
                &request("ANNOUNCE", elsewhere, std::slice::from_ref(&basic)),
                "/other/cam",
                CLIENT
            )
            .unwrap_err()
            .status,
            403
        );
        // The vip rule's credential only.
        assert_eq!(
            g.check(&request("ANNOUNCE", uri, &[basic]), "/live/vip/x", CLIENT)
                .unwrap_err()
                .status,
            401
        );

        // Digest as ffmpeg answers it: MD5, qop=auth, nc counting up.
        let n = nonce(&none);
        let answer = |method: &str, nc: &str| {
            let response = python_response(
                "md5",
                false,
                "caster",
                "Streamalot",
                "s3cret",
                method,
                uri,
                &n,
                Some((nc, "abc")),
            );
            format!(
                "Digest username=\"caster\", realm=\"Streamalot\", nonce=\"{n}\", uri=\"{uri}\", \
                 response=\"{response}\", algorithm=MD5, qop=\"auth\", nc={nc}, cnonce=\"abc\""
            )
        };
        assert_eq!(
            g.check(
                &request("ANNOUNCE", uri, &[answer("ANNOUNCE", "00000001")]),
                "/live/cam",
                CLIENT
            )
            .unwrap(),
            "caster"
        );
        assert_eq!(
            g.check(
                &request("RECORD", uri, &[answer("RECORD", "00000002")]),
                "/live/cam",
                CLIENT
            )
            .unwrap(),
            "caster"
        );
        let replay = g
            .check(
                &request("RECORD", uri, &[answer("RECORD", "00000002")]),
                "/live/cam",
                CLIENT,
            )
            .unwrap_err();
        assert!(
            replay.headers.iter().any(|(_, v)| v.contains("stale=true")),
            "a replayed count is stale: {replay:?}"
        );
        assert_eq!(
            g.check(
                &request("RECORD", uri, &[answer("ANNOUNCE", "00000003")]),
                "/live/cam",
                CLIENT
            )
            .unwrap_err()
            .status,
            401,
            "an answer for another method"
        );
        // RFC 2069, as GStreamer answers.
        let response = python_response("md5", false, "caster", "Streamalot", "s3cret", "SETUP", uri, &n, None);
        let rfc2069 = format!(
            "Digest username=\"caster\", realm=\"Streamalot\", nonce=\"{n}\", uri=\"{uri}\", response=\"{response}\""
        );
        assert!(g
            .check(
                &request("SETUP", uri, std::slice::from_ref(&rfc2069)),
                "/live/cam",
                CLIENT
            )
            .is_ok());
        // Past the nonce's lifetime it is stale.
        NOW.with(|t| t.set(t.get() + (LIFETIME_MS + 1) * 1_000_000));
        let old = g
            .check(&request("SETUP", uri, &[rfc2069]), "/live/cam", CLIENT)
            .unwrap_err();
        assert!(old.headers.iter().any(|(_, v)| v.contains("stale=true")));
    }
}
