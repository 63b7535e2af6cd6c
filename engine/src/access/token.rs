//! Signed, expiring URL tokens, for players that cannot do Digest (set-top
//! boxes, browsers' media elements behind a gateway, scripts): the URL
//! carries `?token=EXPIRY.PREFIX.MAC`, which lets its holder watch anything
//! under `PREFIX` until `EXPIRY`.
//!
//! - `EXPIRY` is a Unix time in seconds, in decimal; tokens are minted by
//!   another process (`streamalot token`), so they use the wall clock.
//! - `PREFIX` is the path prefix (`/private` covers `/private/a.mp4` and
//!   everything below it, not `/privateer`), base64url without padding, so
//!   no `/`, `.` or `%` of it can upset a URL parser.
//! - `MAC` is HMAC-SHA-256 over a version label, the expiry and the prefix
//!   with the configured secret, base64url, compared in constant time.
//!
//! A token grants watching (READ) only: publishers are encoders, which do
//! Digest. Everything in it is ASCII letters, digits, `-`, `_` and `.`, so
//! it survives clients that re-encode query strings.
//!
//! RTSP clients send the query on every request only if the URLs they build
//! keep it: ffmpeg builds SETUP URLs from the `Content-Base` the server sent
//! and the SDP's `a=control`, so the server's `Content-Base` must keep the
//! query (or the session must remember that a token opened it).

use base64::Engine as _;
use hmac::{KeyInit, Mac};
use sha2::Sha256;

use super::qtaccess::segments;

/// Shortest secret accepted.
pub const MIN_SECRET_BYTES: usize = 32;
/// Longest token considered.
pub const MAX_TOKEN_BYTES: usize = 1024;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;
const LABEL: &[u8] = b"streamalot token v1\0";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token secret must be at least {MIN_SECRET_BYTES} bytes")]
    ShortSecret,
    #[error("token prefix {0:?} is not an absolute path without . or ..")]
    BadPrefix(String),
    #[error("malformed token")]
    Malformed,
    #[error("token expired at {0} (Unix time)")]
    Expired(u64),
    #[error("token signature does not match")]
    BadSignature,
    #[error("token is for {prefix:?}, not {path:?}")]
    OutsidePrefix { prefix: String, path: String },
}

/// A checked secret.
#[derive(Clone)]
pub struct TokenKey(Vec<u8>);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(<secret>)")
    }
}

/// What a valid token allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenGrant {
    pub prefix: String,
    pub expires: u64,
}

impl TokenKey {
    pub fn new(secret: &[u8]) -> Result<TokenKey, TokenError> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(TokenError::ShortSecret);
        }
        Ok(TokenKey(secret.to_vec()))
    }

    fn mac(&self, expires: &str, prefix: &str) -> hmac::Hmac<Sha256> {
        let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(&self.0).expect("any key length");
        mac.update(LABEL);
        mac.update(expires.as_bytes());
        mac.update(b"\0");
        mac.update(prefix.as_bytes());
        mac
    }

    /// A token for watching under `prefix` until `expires` (Unix seconds).
    /// What `streamalot token` will print.
    pub fn mint(&self, prefix: &str, expires: u64) -> Result<String, TokenError> {
        segments(prefix).ok_or_else(|| TokenError::BadPrefix(prefix.into()))?;
        let expires = expires.to_string();
        let mac = self.mac(&expires, prefix).finalize().into_bytes();
        Ok(format!("{expires}.{}.{}", B64.encode(prefix), B64.encode(mac)))
    }

    /// Checks `token` for a request of `path` at `now` (Unix seconds).
    pub fn verify(&self, token: &str, path: &str, now: u64) -> Result<TokenGrant, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Malformed);
        }
        let mut parts = token.split('.');
        let (Some(exp), Some(prefix), Some(mac), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        if exp.is_empty() || exp.len() > 20 || !exp.bytes().all(|b| b.is_ascii_digit()) {
            return Err(TokenError::Malformed);
        }
        let expires: u64 = exp.parse().map_err(|_| TokenError::Malformed)?;
        let prefix = B64
            .decode(prefix)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or(TokenError::Malformed)?;
        let mac = B64.decode(mac).map_err(|_| TokenError::Malformed)?;
        // The signature first: nothing about an unsigned token is believed.
        self.mac(exp, &prefix)
            .verify_slice(&mac)
            .map_err(|_| TokenError::BadSignature)?;
        if now >= expires {
            return Err(TokenError::Expired(expires));
        }
        let (Some(want), Some(have)) = (segments(&prefix), segments(path)) else {
            return Err(TokenError::OutsidePrefix {
                prefix,
                path: path.chars().take(200).collect(),
            });
        };
        if have.len() < want.len() || have[..want.len()] != want[..] {
            return Err(TokenError::OutsidePrefix {
                prefix,
                path: path.chars().take(200).collect(),
            });
        }
        Ok(TokenGrant { prefix, expires })
    }
}

/// The `token` parameter of a request URI's query, if any. Several `token`
/// parameters are refused as malformed, rather than one picked.
pub fn from_uri(uri: &str) -> Result<Option<&str>, TokenError> {
    let Some((_, query)) = uri.split_once('?') else {
        return Ok(None);
    };
    let query = query.split_once('#').map_or(query, |(q, _)| q);
    let mut found = None;
    for pair in query.split('&') {
        if let Some(v) = pair.strip_prefix("token=") {
            if found.is_some() {
                return Err(TokenError::Malformed);
            }
            found = Some(v);
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn key() -> TokenKey {
        TokenKey::new(SECRET).unwrap()
    }

    #[test]
    fn minted_tokens_verify_within_their_prefix_and_time() {
        let t = key().mint("/private", 2_000).unwrap();
        assert!(
            t.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
            "{t}"
        );
        let g = key().verify(&t, "/private/a.mp4", 1_999).unwrap();
        assert_eq!(
            g,
            TokenGrant {
                prefix: "/private".into(),
                expires: 2_000
            }
        );
        assert!(key().verify(&t, "/private", 0).is_ok());
        assert!(key().verify(&t, "/private/sub/b.mov/trackID=1", 0).is_ok());
        assert_eq!(
            key().verify(&t, "/private/a.mp4", 2_000),
            Err(TokenError::Expired(2_000))
        );
        assert!(matches!(
            key().verify(&t, "/privateer/a.mp4", 0),
            Err(TokenError::OutsidePrefix { .. })
        ));
        assert!(matches!(
            key().verify(&t, "/a.mp4", 0),
            Err(TokenError::OutsidePrefix { .. })
        ));
        assert!(matches!(
            key().verify(&t, "/private/../x", 0),
            Err(TokenError::OutsidePrefix { .. })
        ));
        let other = TokenKey::new(b"another secret, also 32 bytes lo").unwrap();
        assert_eq!(other.verify(&t, "/private/a.mp4", 0), Err(TokenError::BadSignature));
        let root = key().mint("/", 10).unwrap();
        assert!(key().verify(&root, "/anything/at/all.mp4", 9).is_ok());
    }

    #[test]
    fn the_signature_matches_python_hmac() {
        let t = key().mint("/live/cam1.sdp", 1_700_000_000).unwrap();
        let script = r#"
import base64, hashlib, hmac, sys
secret, token = sys.argv[1].encode(), sys.argv[2]
exp, prefix, mac = token.split(".")
pad = lambda s: s + "=" * (-len(s) % 4)
p = base64.urlsafe_b64decode(pad(prefix)).decode()
want = hmac.new(secret, b"streamalot token v1\0" + exp.encode() + b"\0" + p.encode(), hashlib.sha256).digest()
print(p, hmac.compare_digest(want, base64.urlsafe_b64decode(pad(mac))))
"#;
        let out = Command::new("python3")
            .args(["-c", script, std::str::from_utf8(SECRET).unwrap(), &t])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "/live/cam1.sdp True");
    }

    #[test]
    fn tampering_and_junk_are_refused() {
        let t = key().mint("/private", 2_000).unwrap();
        let (exp, rest) = t.split_once('.').unwrap();
        let (_, mac) = rest.split_once('.').unwrap();
        // A longer life or a wider prefix breaks the signature.
        let later = format!("9999999999.{rest}");
        assert_eq!(key().verify(&later, "/private/a", 0), Err(TokenError::BadSignature));
        let wider = format!("{exp}.{}.{mac}", B64.encode("/"));
        assert_eq!(key().verify(&wider, "/private/a", 0), Err(TokenError::BadSignature));
        for junk in [
            "",
            "...",
            "1.2",
            "1.2.3.4",
            "x.L3A.AAAA",
            "-1.L3A.AAAA",
            "99999999999999999999999.L3A.AAAA",
            "1.!!.AAAA",
            "1.L3A.!!",
            &"1".repeat(2000),
        ] {
            assert!(
                matches!(
                    key().verify(junk, "/p", 0),
                    Err(TokenError::Malformed | TokenError::BadSignature)
                ),
                "{junk}"
            );
        }
        assert_eq!(TokenKey::new(b"short").unwrap_err(), TokenError::ShortSecret);
        assert_eq!(key().mint("relative", 1), Err(TokenError::BadPrefix("relative".into())));
        assert_eq!(format!("{:?}", key()), "TokenKey(<secret>)");
    }

    #[test]
    fn tokens_in_request_uris() {
        assert_eq!(from_uri("rtsp://h/a.mp4"), Ok(None));
        assert_eq!(from_uri("rtsp://h/a.mp4?token=1.2.3"), Ok(Some("1.2.3")));
        assert_eq!(from_uri("rtsp://h/a.mp4?x=1&token=1.2.3&y=2"), Ok(Some("1.2.3")));
        assert_eq!(from_uri("rtsp://h/a.mp4?mytoken=1"), Ok(None));
        assert_eq!(from_uri("rtsp://h/a.mp4?token=a&token=b"), Err(TokenError::Malformed));
    }
}
