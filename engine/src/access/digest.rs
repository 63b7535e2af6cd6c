//! HTTP Digest authentication (RFC 7616, with RFC 2617 and RFC 2069
//! compatibility) as RTSP uses it: parsing `Authorization: Digest ...`,
//! checking the response against a stored HA1, minting and checking nonces,
//! refusing replays, and writing the `WWW-Authenticate` challenges.
//!
//! # What real clients send
//! - **ffmpeg** (libavformat/httpauth.c): MD5 and MD5-sess only; any other
//!   `algorithm` makes it send no `Authorization` at all. `uri` is the
//!   request URL exactly as on the request line, query included. It quotes
//!   `qop="auth"`, counts `nc` up from 1 per nonce and sends a fresh
//!   `cnonce` each request. Of several `WWW-Authenticate: Digest` headers it
//!   keeps the **last** (each one overwrites its state). It retries after a
//!   401 only the first time or when `stale=true`.
//! - **GStreamer** (gst-rtsp, gstrtspconnection.c): RFC 2069 Digest: MD5
//!   whatever `algorithm` says, no `qop`, no `nc`, no `cnonce`, even when the
//!   challenge offers `qop="auth"`. `uri` is the request URI as sent. Of
//!   several Digest challenges it keeps the last one's parameters.
//! - **retina** (the `http-auth` crate): MD5, SHA-256 and the `-sess`
//!   variants with `qop=auth`; of several Digest challenges it takes the
//!   **first** it supports.
//! - QuickTime-era clients: RFC 2069 like GStreamer. Some clients send the
//!   `uri` without the query string, or as an absolute path (`/a/b.mp4`)
//!   where the request line has `rtsp://host/a/b.mp4`.
//!
//! So the server offers one challenge per algorithm, **SHA-256 first and MD5
//! last** with the same nonce: retina answers the first (SHA-256), ffmpeg and
//! GStreamer the last (MD5), and each client gets one it can do. RFC 2069
//! answers (no `qop`) are accepted when the settings allow them, as they
//! must for GStreamer; they carry no nonce count, so a captured one can be
//! replayed for the same method and URI until its nonce expires.
//!
//! # Nonces
//! A nonce is `base64url(issuer, time, sequence, HMAC-SHA-256(secret,
//! issuer, time, sequence, client address))`: validated without any state,
//! unique per challenge, bound to this process
//! (a restart changes the secret), to the issuing core, to the client's
//! address (optional) and to a lifetime. When a response is right for the
//! nonce it names but the nonce is no longer good (expired, from another
//! process or core, already used with that count), the answer is a fresh
//! challenge with `stale=true`, which ffmpeg and retina follow without
//! asking the user again. Nonce counts are tracked per nonce in a bounded
//! [`ReplayTable`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;

use base64::Engine as _;
use hmac::{KeyInit, Mac};
use md5::Md5;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::header::{self, HeaderError, Param};

/// The hash functions Digest uses, and what an HA1 is stored for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hash {
    Md5,
    Sha256,
}

impl Hash {
    /// `H(parts joined by ':')` in lowercase hex.
    pub fn hex(self, parts: &[&[u8]]) -> String {
        fn run<D: sha2::Digest>(parts: &[&[u8]]) -> String {
            let mut d = D::new();
            for (i, p) in parts.iter().enumerate() {
                if i > 0 {
                    d.update(b":");
                }
                d.update(p);
            }
            to_hex(&d.finalize())
        }
        match self {
            Hash::Md5 => run::<Md5>(parts),
            Hash::Sha256 => run::<Sha256>(parts),
        }
    }

    /// Length of the hex digest.
    pub fn hex_len(self) -> usize {
        match self {
            Hash::Md5 => 32,
            Hash::Sha256 => 64,
        }
    }
}

pub(crate) fn to_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The stored secret of Digest: `H(user ":" realm ":" password)`.
pub fn ha1(hash: Hash, user: &str, realm: &str, password: &str) -> String {
    hash.hex(&[user.as_bytes(), realm.as_bytes(), password.as_bytes()])
}

/// Digest algorithms (RFC 7616 section 3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Md5,
    Md5Sess,
    Sha256,
    Sha256Sess,
}

impl Algorithm {
    /// Parses an `algorithm` value, without regard to case (clients send
    /// `md5`).
    pub fn parse(s: &str) -> Option<Algorithm> {
        Some(match s.to_ascii_uppercase().as_str() {
            "MD5" => Algorithm::Md5,
            "MD5-SESS" => Algorithm::Md5Sess,
            "SHA-256" => Algorithm::Sha256,
            "SHA-256-SESS" => Algorithm::Sha256Sess,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Md5Sess => "MD5-sess",
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Sha256Sess => "SHA-256-sess",
        }
    }

    pub fn hash(self) -> Hash {
        match self {
            Algorithm::Md5 | Algorithm::Md5Sess => Hash::Md5,
            Algorithm::Sha256 | Algorithm::Sha256Sess => Hash::Sha256,
        }
    }

    pub fn is_sess(self) -> bool {
        matches!(self, Algorithm::Md5Sess | Algorithm::Sha256Sess)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error(transparent)]
    Header(#[from] HeaderError),
    #[error("not Digest credentials")]
    NotDigest,
    #[error("Digest credentials lack {0}")]
    Missing(&'static str),
    #[error("Digest {0} value is malformed")]
    Bad(&'static str),
    #[error("Digest algorithm {0:?} is not supported")]
    UnknownAlgorithm(String),
    #[error("Digest qop {0:?} is not supported (only auth)")]
    UnsupportedQop(String),
    #[error("Digest userhash is not offered by this server")]
    Userhash,
    #[error("Digest credentials give both username and username*")]
    TwoUsernames,
    #[error("Digest {0} needs qop (and a cnonce)")]
    SessWithoutQop(&'static str),
}

/// The client's nonce count: the text as sent (it goes into the hash
/// verbatim) and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NonceCount {
    pub text: String,
    pub value: u32,
}

/// A parsed `Authorization: Digest` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    pub uri: String,
    /// Lowercased hex.
    pub response: String,
    /// `MD5` when the client names none (RFC 7616 section 3.4).
    pub algorithm: Algorithm,
    /// `Some` for RFC 2617/7616 answers (`qop=auth`), `None` for RFC 2069.
    pub qop: Option<NonceCount>,
    pub cnonce: Option<String>,
    pub opaque: Option<String>,
}

/// Longest `uri` accepted: bounded by the whole value anyway, this keeps a
/// clear error for it.
const MAX_URI_BYTES: usize = 4096;
/// Longest `username`, `realm`, `nonce`, `cnonce` or `opaque`.
const MAX_FIELD_BYTES: usize = 512;

/// Parses a whole `Authorization` value whose scheme is Digest.
pub fn parse(value: &str) -> Result<Response, DigestError> {
    let (scheme, rest) = header::split_scheme(value)?;
    if !scheme.eq_ignore_ascii_case("Digest") {
        return Err(DigestError::NotDigest);
    }
    let params = header::parse_params(rest)?;
    let get = |name: &str| params.iter().find(|p| p.name == name).map(|p: &Param| p.value.as_str());
    let field = |name: &'static str| -> Result<String, DigestError> {
        let v = get(name).ok_or(DigestError::Missing(name))?;
        if v.len() > MAX_FIELD_BYTES {
            return Err(DigestError::Bad(name));
        }
        Ok(v.to_owned())
    };

    if get("userhash").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Err(DigestError::Userhash);
    }
    let username = match (get("username"), get("username*")) {
        (Some(_), Some(_)) => return Err(DigestError::TwoUsernames),
        (Some(_), None) => field("username")?,
        (None, Some(ext)) => decode_ext_value(ext).ok_or(DigestError::Bad("username*"))?,
        (None, None) => return Err(DigestError::Missing("username")),
    };
    if username.is_empty() || username.len() > MAX_FIELD_BYTES {
        return Err(DigestError::Bad("username"));
    }
    let realm = field("realm")?;
    let nonce = field("nonce")?;
    let uri = get("uri").ok_or(DigestError::Missing("uri"))?;
    if uri.is_empty() || uri.len() > MAX_URI_BYTES {
        return Err(DigestError::Bad("uri"));
    }
    let response = get("response").ok_or(DigestError::Missing("response"))?;
    let algorithm = match get("algorithm") {
        None => Algorithm::Md5,
        Some(a) => Algorithm::parse(a).ok_or_else(|| DigestError::UnknownAlgorithm(a.chars().take(32).collect()))?,
    };
    let response = response.to_ascii_lowercase();
    if response.len() != algorithm.hash().hex_len() || !response.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(DigestError::Bad("response"));
    }
    let opaque = get("opaque").map(|_| field("opaque")).transpose()?;
    let cnonce = get("cnonce").map(|_| field("cnonce")).transpose()?;
    let qop = match get("qop") {
        None => None,
        Some(q) if q.eq_ignore_ascii_case("auth") => {
            let text = get("nc").ok_or(DigestError::Missing("nc"))?;
            let value = (1..=8)
                .contains(&text.len())
                .then(|| u32::from_str_radix(text, 16).ok())
                .flatten()
                .filter(|&v| v > 0 && text.bytes().all(|b| b.is_ascii_hexdigit()))
                .ok_or(DigestError::Bad("nc"))?;
            if cnonce.as_deref().is_none_or(str::is_empty) {
                return Err(DigestError::Missing("cnonce"));
            }
            Some(NonceCount {
                text: text.to_owned(),
                value,
            })
        }
        Some(q) => return Err(DigestError::UnsupportedQop(q.chars().take(32).collect())),
    };
    if algorithm.is_sess() && qop.is_none() {
        return Err(DigestError::SessWithoutQop(algorithm.name()));
    }
    Ok(Response {
        username,
        realm,
        nonce,
        uri: uri.to_owned(),
        response,
        algorithm,
        qop,
        cnonce,
        opaque,
    })
}

/// RFC 8187 `UTF-8''percent%20encoded` (the form of `username*`).
fn decode_ext_value(v: &str) -> Option<String> {
    let (charset, rest) = v.split_once('\'')?;
    let (_lang, encoded) = rest.split_once('\'')?;
    if !charset.eq_ignore_ascii_case("UTF-8") {
        return None;
    }
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl Response {
    /// The response a client that knows the password would have sent, from
    /// the stored HA1 (`H(user:realm:password)` for this algorithm's hash).
    pub fn expected(&self, method: &str, ha1_hex: &str) -> String {
        let h = self.algorithm.hash();
        let cnonce = self.cnonce.as_deref().unwrap_or("");
        let ha1 = if self.algorithm.is_sess() {
            h.hex(&[ha1_hex.as_bytes(), self.nonce.as_bytes(), cnonce.as_bytes()])
        } else {
            ha1_hex.to_owned()
        };
        let ha2 = h.hex(&[method.as_bytes(), self.uri.as_bytes()]);
        match &self.qop {
            Some(nc) => h.hex(&[
                ha1.as_bytes(),
                self.nonce.as_bytes(),
                nc.text.as_bytes(),
                cnonce.as_bytes(),
                b"auth",
                ha2.as_bytes(),
            ]),
            None => h.hex(&[ha1.as_bytes(), self.nonce.as_bytes(), ha2.as_bytes()]),
        }
    }

    /// Whether the response proves knowledge of the password, compared in
    /// constant time.
    pub fn proves(&self, method: &str, ha1_hex: &str) -> bool {
        let expected = self.expected(method, ha1_hex);
        expected.as_bytes().ct_eq(self.response.as_bytes()).into()
    }
}

/// Whether the `uri` of a Digest answer names the request's URI.
///
/// Exact equality is what RFC 7616 asks and what ffmpeg, GStreamer and
/// retina give. Also accepted, because real clients send them and each still
/// binds the answer to the same resource: the URI without its query (some
/// clients drop it), and the absolute path form (`/a/b.mp4`, with or without
/// the query) of an absolute request URI (clients written for HTTP).
pub fn uri_matches(digest_uri: &str, request_uri: &str) -> bool {
    if digest_uri == request_uri {
        return true;
    }
    let strip_query = |u: &str| u.split_once('?').map_or(u, |(a, _)| a).to_owned();
    let path_form = |u: &str| -> Option<String> {
        let after_scheme = u.split_once("://")?.1;
        let slash = after_scheme.find('/')?;
        Some(after_scheme[slash..].to_owned())
    };
    let request_path = path_form(request_uri);
    let candidates = [
        Some(request_uri.to_owned()),
        Some(strip_query(request_uri)),
        request_path.clone(),
        request_path.map(|p| strip_query(&p)),
    ];
    // Only the client's side may lack the query: a digest `uri` with a query
    // never matches a request without it.
    candidates.iter().flatten().any(|c| c == digest_uri)
}

/// Bytes of a decoded nonce: issuer (1), time in ms (6), sequence number
/// (4), MAC (16). The sequence number makes every challenge's nonce unique,
/// even two sent to one address in the same millisecond (two connections
/// from one client, or from behind one NAT), whose counts would otherwise
/// collide in the replay table.
const NONCE_BYTES: usize = 27;
const NONCE_HEAD_BYTES: usize = 11;
const NONCE_MAC_BYTES: usize = 16;

type HmacSha256 = hmac::Hmac<Sha256>;

/// Mints and checks nonces with a per-process secret.
#[derive(Clone)]
pub struct NonceKey {
    key: [u8; 32],
    issuer: u8,
    bind_address: bool,
}

impl std::fmt::Debug for NonceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NonceKey")
            .field("issuer", &self.issuer)
            .field("bind_address", &self.bind_address)
            .finish_non_exhaustive()
    }
}

/// What a nonce check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceState {
    /// Minted by this key for this client, within its lifetime. `ms` is its
    /// time, `id` its bytes (for the replay table).
    Fresh { ms: u64, id: [u8; NONCE_BYTES] },
    /// Minted by this key, but older than the lifetime.
    Expired,
    /// Not minted by this key (another process, core or client address, or
    /// made up).
    Foreign,
}

impl NonceKey {
    /// `issuer` tells apart the cores that each keep their own replay table:
    /// a core accepts only its own nonces, so a nonce used on one core cannot
    /// be replayed on another. `bind_address` ties each nonce to the address
    /// it was issued to.
    pub fn new(key: [u8; 32], issuer: u8, bind_address: bool) -> NonceKey {
        NonceKey {
            key,
            issuer,
            bind_address,
        }
    }

    fn mac(&self, head: &[u8], client: IpAddr) -> [u8; NONCE_MAC_BYTES] {
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(b"streamalot digest nonce\0");
        mac.update(head);
        if self.bind_address {
            mac.update(&address_bytes(client));
        }
        let full = mac.finalize().into_bytes();
        let mut out = [0; NONCE_MAC_BYTES];
        out.copy_from_slice(&full[..NONCE_MAC_BYTES]);
        out
    }

    /// A nonce for `client` at `now_ms` (milliseconds on the caller's
    /// monotonic clock, below 2^48); `seq` should differ for each nonce
    /// minted in one millisecond.
    pub fn mint(&self, now_ms: u64, seq: u32, client: IpAddr) -> String {
        let mut raw = [0u8; NONCE_BYTES];
        raw[0] = self.issuer;
        raw[1..7].copy_from_slice(&now_ms.to_be_bytes()[2..]);
        raw[7..11].copy_from_slice(&seq.to_be_bytes());
        let mac = self.mac(&raw[..NONCE_HEAD_BYTES], client);
        raw[NONCE_HEAD_BYTES..].copy_from_slice(&mac);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    }

    /// Checks a nonce a client returned.
    pub fn check(&self, nonce: &str, now_ms: u64, client: IpAddr, lifetime_ms: u64) -> NonceState {
        let mut raw = [0u8; NONCE_BYTES];
        match base64::engine::general_purpose::URL_SAFE_NO_PAD.decode_slice(nonce.as_bytes(), &mut raw) {
            Ok(NONCE_BYTES) => {}
            _ => return NonceState::Foreign,
        }
        let mac = self.mac(&raw[..NONCE_HEAD_BYTES], client);
        if raw[0] != self.issuer || !bool::from(mac.ct_eq(&raw[NONCE_HEAD_BYTES..])) {
            return NonceState::Foreign;
        }
        let mut ts = [0u8; 8];
        ts[2..].copy_from_slice(&raw[1..7]);
        let ms = u64::from_be_bytes(ts);
        // A nonce from the future cannot come from this clock; treat it as
        // foreign rather than let it live longer than the lifetime.
        if ms > now_ms {
            return NonceState::Foreign;
        }
        if now_ms - ms > lifetime_ms {
            return NonceState::Expired;
        }
        NonceState::Fresh { ms, id: raw }
    }

    /// The `opaque` value: constant for this key, so a client echoing
    /// another server's opaque is told its nonce is stale.
    pub fn opaque(&self) -> String {
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(b"streamalot digest opaque\0");
        mac.update(&[self.issuer]);
        let full = mac.finalize().into_bytes();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&full[..12])
    }
}

/// An address as 16 bytes, IPv4 (and IPv4-mapped IPv6) as `::ffff:a.b.c.d`,
/// so one client has one form.
fn address_bytes(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// Why a nonce count was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Replay {
    #[error("nonce count {got} is not above {seen}, the highest already used")]
    Reused { got: u32, seen: u32 },
    #[error("the nonce was forgotten to bound memory")]
    Forgotten,
}

/// The highest nonce count used with each live nonce, in bounded memory.
///
/// Entries are made only for nonces that came with a right response, so
/// only clients that know a password fill the table. When it is full the
/// oldest nonce is forgotten, and every nonce as old or older is from then
/// on refused as stale (the client gets a new one): forgetting never lets a
/// count be reused.
#[derive(Debug, Clone)]
pub struct ReplayTable {
    seen: BTreeMap<(u64, [u8; NONCE_BYTES]), u32>,
    capacity: usize,
    /// Nonces minted at or before this time that are not in `seen` may have
    /// been forgotten.
    floor_ms: Option<u64>,
}

impl ReplayTable {
    pub fn new(capacity: usize) -> ReplayTable {
        ReplayTable {
            seen: BTreeMap::new(),
            capacity: capacity.max(1),
            floor_ms: None,
        }
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Records `nc` for a fresh nonce, or says why it must not be accepted.
    /// `oldest_live_ms` is the time of the oldest nonce still within its
    /// lifetime: older entries are dropped first (expired nonces are refused
    /// by their time, so nothing is lost).
    pub fn record(&mut self, ms: u64, id: [u8; NONCE_BYTES], nc: u32, oldest_live_ms: u64) -> Result<(), Replay> {
        while let Some(entry) = self.seen.first_entry() {
            if entry.key().0 >= oldest_live_ms {
                break;
            }
            entry.remove();
        }
        if let Some(seen) = self.seen.get_mut(&(ms, id)) {
            if nc <= *seen {
                return Err(Replay::Reused { got: nc, seen: *seen });
            }
            *seen = nc;
            return Ok(());
        }
        if self.floor_ms.is_some_and(|floor| ms <= floor) {
            return Err(Replay::Forgotten);
        }
        if self.seen.len() == self.capacity {
            if let Some(((old_ms, _), _)) = self.seen.pop_first() {
                self.floor_ms = Some(self.floor_ms.map_or(old_ms, |f| f.max(old_ms)));
            }
            if self.floor_ms.is_some_and(|floor| ms <= floor) {
                return Err(Replay::Forgotten);
            }
        }
        self.seen.insert((ms, id), nc);
        Ok(())
    }
}

/// What goes into the challenges of one 401.
#[derive(Debug, Clone)]
pub struct ChallengeParams<'a> {
    pub realm: &'a str,
    pub nonce: &'a str,
    pub opaque: &'a str,
    /// In the order to send them: see the module docs for why SHA-256 comes
    /// before MD5.
    pub algorithms: &'a [Algorithm],
    pub stale: bool,
}

/// One `WWW-Authenticate` value per algorithm, all with the same nonce.
pub fn challenges(p: &ChallengeParams<'_>) -> Vec<String> {
    p.algorithms
        .iter()
        .map(|alg| {
            let mut v = String::with_capacity(160);
            v.push_str("Digest ");
            v.push_str(&header::quoted_param("realm", p.realm));
            let _ = write!(
                v,
                ", {}, {}, algorithm={}, qop=\"auth\"",
                header::quoted_param("nonce", p.nonce),
                header::quoted_param("opaque", p.opaque),
                alg.name()
            );
            if p.stale {
                v.push_str(", stale=true");
            }
            v
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::process::Command;

    /// A Digest response computed by Python's hashlib, independently of this
    /// module: `alg` is hashlib's name (`md5`, `sha256`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn python_response(
        alg: &str,
        sess: bool,
        user: &str,
        realm: &str,
        password: &str,
        method: &str,
        uri: &str,
        nonce: &str,
        qop: Option<(&str, &str)>,
    ) -> String {
        let (nc, cnonce) = qop.unwrap_or(("", ""));
        let script = r#"
import hashlib, sys
alg, sess, user, realm, pw, method, uri, nonce, nc, cnonce = sys.argv[1:]
H = lambda s: hashlib.new(alg, s.encode()).hexdigest()
ha1 = H(f"{user}:{realm}:{pw}")
if sess == "1":
    ha1 = H(f"{ha1}:{nonce}:{cnonce}")
ha2 = H(f"{method}:{uri}")
if nc:
    print(H(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}"))
else:
    print(H(f"{ha1}:{nonce}:{ha2}"))
"#;
        let out = Command::new("python3")
            .args(["-c", script, alg, if sess { "1" } else { "0" }])
            .args([user, realm, password, method, uri, nonce, nc, cnonce])
            .output()
            .expect("python3 runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    fn key() -> NonceKey {
        NonceKey::new([7; 32], 0, true)
    }

    const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));

    // RFC 7616 section 3.9.1: the same request answered with MD5 and SHA-256.
    const RFC7616_COMMON: &str = r#"username="Mufasa", realm="http-auth@example.org", uri="/dir/index.html", qop=auth, nc=00000001, cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#;

    #[test]
    fn rfc7616_md5_and_sha256_examples() {
        let md5 = parse(&format!(
            "Digest {RFC7616_COMMON}, algorithm=MD5, response=\"8ca523f5e9506fed4657c9700eebdbec\""
        ))
        .unwrap();
        let ha1 = ha1(Hash::Md5, "Mufasa", "http-auth@example.org", "Circle of Life");
        assert!(md5.proves("GET", &ha1));
        assert!(!md5.proves("POST", &ha1));

        let sha = parse(&format!(
            "Digest {RFC7616_COMMON}, algorithm=SHA-256, \
             response=\"753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1\""
        ))
        .unwrap();
        assert_eq!(sha.algorithm, Algorithm::Sha256);
        let ha1 = super::ha1(Hash::Sha256, "Mufasa", "http-auth@example.org", "Circle of Life");
        assert!(sha.proves("GET", &ha1));
        let wrong = super::ha1(Hash::Sha256, "Mufasa", "http-auth@example.org", "Circle of life");
        assert!(!sha.proves("GET", &wrong));
    }

    #[test]
    fn rfc2617_example() {
        // RFC 2617 section 3.5 (note "Circle Of Life" there).
        let r = parse(
            r#"Digest username="Mufasa", realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html", qop=auth, nc=00000001, cnonce="0a4f113b", response="6629fae49393a05397450978507c4ef1", opaque="5ccc069c403ebaf9f0171e9517f40e41""#,
        )
        .unwrap();
        assert!(r.proves("GET", &ha1(Hash::Md5, "Mufasa", "testrealm@host.com", "Circle Of Life")));
    }

    #[test]
    fn ha1_matches_python() {
        for (alg, hash) in [("md5", Hash::Md5), ("sha256", Hash::Sha256)] {
            let script = format!("import hashlib; print(hashlib.{alg}(b'bob:Streamalot:p\\xc3\\xa4ss').hexdigest())");
            let out = Command::new("python3").args(["-c", &script]).output().unwrap();
            let expected = String::from_utf8(out.stdout).unwrap().trim().to_owned();
            assert_eq!(ha1(hash, "bob", "Streamalot", "päss"), expected);
        }
    }

    #[test]
    fn every_algorithm_against_python() {
        let nonce = key().mint(5_000, 0, CLIENT);
        let uri = "rtsp://127.0.0.1:8554/sub/movie.mp4?x=1";
        for (alg, py, sess) in [
            (Algorithm::Md5, "md5", false),
            (Algorithm::Md5Sess, "md5", true),
            (Algorithm::Sha256, "sha256", false),
            (Algorithm::Sha256Sess, "sha256", true),
        ] {
            let resp = python_response(
                py,
                sess,
                "alice",
                "Streamalot",
                "s3cret",
                "DESCRIBE",
                uri,
                &nonce,
                Some(("0000000a", "abc")),
            );
            let value = format!(
                "Digest username=\"alice\",realm=\"Streamalot\",nonce=\"{nonce}\",uri=\"{uri}\",\
                 response=\"{resp}\",algorithm={},qop=\"auth\",cnonce=\"abc\",nc=0000000a",
                alg.name()
            );
            let r = parse(&value).unwrap();
            assert_eq!(r.algorithm, alg);
            assert_eq!(r.qop.as_ref().unwrap().value, 10);
            let stored = ha1(alg.hash(), "alice", "Streamalot", "s3cret");
            assert!(r.proves("DESCRIBE", &stored), "{alg:?}");
            assert!(!r.proves("SETUP", &stored), "{alg:?}");
        }
    }

    #[test]
    fn rfc2069_answer_as_gstreamer_sends_it() {
        let nonce = key().mint(1, 0, CLIENT);
        let uri = "rtsp://127.0.0.1:8554/movie.mp4";
        let resp = python_response("md5", false, "bob", "Streamalot", "pw", "DESCRIBE", uri, &nonce, None);
        // gstrtspconnection.c's exact layout, plus the opaque it echoes.
        let value = format!(
            "Digest username=\"bob\", realm=\"Streamalot\", nonce=\"{nonce}\", uri=\"{uri}\", \
             response=\"{resp}\", opaque=\"abc\""
        );
        let r = parse(&value).unwrap();
        assert_eq!(
            (r.algorithm, r.qop.clone(), r.opaque.as_deref()),
            (Algorithm::Md5, None, Some("abc"))
        );
        assert!(r.proves("DESCRIBE", &ha1(Hash::Md5, "bob", "Streamalot", "pw")));
    }

    #[test]
    fn malformed_answers_are_typed_errors() {
        let ok = r#"username="u", realm="r", nonce="n", uri="/a", response="00000000000000000000000000000000""#;
        assert!(parse(&format!("Digest {ok}")).is_ok());
        assert_eq!(parse(&format!("Basic {ok}")), Err(DigestError::NotDigest));
        for missing in ["username", "realm", "nonce", "uri", "response"] {
            let without: Vec<&str> = ok.split(", ").filter(|p| !p.starts_with(missing)).collect();
            let err = parse(&format!("Digest {}", without.join(", "))).unwrap_err();
            assert_eq!(err, DigestError::Missing(missing), "{missing}");
        }
        let with = |extra: &str| parse(&format!("Digest {ok}, {extra}"));
        assert_eq!(with("qop=auth"), Err(DigestError::Missing("nc")));
        assert_eq!(with("qop=auth, nc=00000001"), Err(DigestError::Missing("cnonce")));
        assert_eq!(with("qop=auth, nc=0, cnonce=x"), Err(DigestError::Bad("nc")));
        assert_eq!(with("qop=auth, nc=xyz, cnonce=x"), Err(DigestError::Bad("nc")));
        assert_eq!(with("qop=auth, nc=123456789, cnonce=x"), Err(DigestError::Bad("nc")));
        assert_eq!(with("qop=auth, nc=+1, cnonce=x"), Err(DigestError::Bad("nc")));
        assert_eq!(
            with("qop=auth-int, nc=1, cnonce=x"),
            Err(DigestError::UnsupportedQop("auth-int".into()))
        );
        assert_eq!(
            with("algorithm=SHA-512"),
            Err(DigestError::UnknownAlgorithm("SHA-512".into()))
        );
        assert_eq!(with("algorithm=MD5-sess"), Err(DigestError::SessWithoutQop("MD5-sess")));
        assert_eq!(with("algorithm=SHA-256"), Err(DigestError::Bad("response")));
        assert_eq!(with("userhash=true"), Err(DigestError::Userhash));
        assert_eq!(with("username*=UTF-8''x"), Err(DigestError::TwoUsernames));
        assert!(matches!(
            with("uri=\"/b\""),
            Err(DigestError::Header(HeaderError::DuplicateParam(_)))
        ));
        let huge = format!("Digest {ok}, opaque=\"{}\"", "o".repeat(600));
        assert_eq!(parse(&huge), Err(DigestError::Bad("opaque")));
        assert_eq!(
            parse(r#"Digest username="u", realm="r", nonce="n", uri="/a", response="zz""#),
            Err(DigestError::Bad("response"))
        );
        // Uppercase hex from a client is fine.
        let upper = parse(&format!(
            "Digest {}",
            ok.replace("00000000000000000000000000000000", &"AB".repeat(16))
        ));
        assert_eq!(upper.unwrap().response, "ab".repeat(16));
    }

    #[test]
    fn extended_username() {
        let r = parse(r#"Digest username*=UTF-8''J%C3%A4s%C3%B8n%20Doe, realm="r", nonce="n", uri="/a", response="00000000000000000000000000000000""#).unwrap();
        assert_eq!(r.username, "Jäsøn Doe");
        let bad = parse(
            r#"Digest username*=latin1''x, realm="r", nonce="n", uri="/a", response="00000000000000000000000000000000""#,
        );
        assert_eq!(bad, Err(DigestError::Bad("username*")));
    }

    #[test]
    fn uri_forms_clients_send() {
        let req = "rtsp://h:8554/a/b.mp4?t=1";
        assert!(uri_matches(req, req));
        assert!(uri_matches("rtsp://h:8554/a/b.mp4", req));
        assert!(uri_matches("/a/b.mp4?t=1", req));
        assert!(uri_matches("/a/b.mp4", req));
        assert!(!uri_matches("rtsp://h:8554/a/c.mp4", req));
        assert!(!uri_matches("/a/b.mp4?t=2", req));
        assert!(!uri_matches("rtsp://h:8554/a/b.mp4?t=1", "rtsp://h:8554/a/b.mp4"));
        assert!(!uri_matches("rtsp://other:8554/a/b.mp4?t=1", req));
        assert!(!uri_matches("/a", req));
    }

    #[test]
    fn nonces_are_bound_to_key_issuer_address_and_time() {
        let k = key();
        let n = k.mint(10_000, 0, CLIENT);
        assert_eq!(n.len(), 36);
        assert_ne!(n, k.mint(10_000, 1, CLIENT));
        assert!(matches!(
            k.check(&n, 10_000, CLIENT, 1000),
            NonceState::Fresh { ms: 10_000, .. }
        ));
        assert!(matches!(k.check(&n, 11_000, CLIENT, 1000), NonceState::Fresh { .. }));
        assert_eq!(k.check(&n, 11_001, CLIENT, 1000), NonceState::Expired);
        assert_eq!(k.check(&n, 9_999, CLIENT, 1000), NonceState::Foreign);
        let other = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 11));
        assert_eq!(k.check(&n, 10_000, other, 1000), NonceState::Foreign);
        // The IPv4-mapped IPv6 form of the same client is the same client.
        let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 10).to_ipv6_mapped());
        assert!(matches!(k.check(&n, 10_000, mapped, 1000), NonceState::Fresh { .. }));
        assert_eq!(
            NonceKey::new([8; 32], 0, true).check(&n, 10_000, CLIENT, 1000),
            NonceState::Foreign
        );
        assert_eq!(
            NonceKey::new([7; 32], 1, true).check(&n, 10_000, CLIENT, 1000),
            NonceState::Foreign
        );
        let unbound = NonceKey::new([7; 32], 0, false);
        let n2 = unbound.mint(10_000, 0, CLIENT);
        assert!(matches!(
            unbound.check(&n2, 10_000, other, 1000),
            NonceState::Fresh { .. }
        ));
        for junk in ["", "x", "!!!!", &"A".repeat(36), &"A".repeat(400), &n[..35]] {
            assert_eq!(k.check(junk, 10_000, CLIENT, 1000), NonceState::Foreign, "{junk}");
        }
        let mut flipped = n.into_bytes();
        flipped[20] = if flipped[20] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            k.check(std::str::from_utf8(&flipped).unwrap(), 10_000, CLIENT, 1000),
            NonceState::Foreign
        );
        assert_ne!(k.opaque(), NonceKey::new([7; 32], 1, true).opaque());
        let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
        assert_eq!(k.check(&k.mint(5, 0, v6), 5, CLIENT, 10), NonceState::Foreign);
    }

    fn id(b: u8) -> [u8; NONCE_BYTES] {
        [b; NONCE_BYTES]
    }

    #[test]
    fn replay_table_refuses_reused_counts() {
        let mut t = ReplayTable::new(8);
        assert_eq!(t.record(100, id(1), 1, 0), Ok(()));
        assert_eq!(t.record(100, id(1), 2, 0), Ok(()));
        assert_eq!(t.record(100, id(1), 2, 0), Err(Replay::Reused { got: 2, seen: 2 }));
        assert_eq!(t.record(100, id(1), 1, 0), Err(Replay::Reused { got: 1, seen: 2 }));
        // Counts may skip (pipelined requests answered out of order are not
        // a thing in RTSP, but a client may drop one).
        assert_eq!(t.record(100, id(1), 9, 0), Ok(()));
        assert_eq!(t.record(100, id(2), 1, 0), Ok(()));
        assert_eq!(t.len(), 2);
        // Entries older than the oldest live nonce go first.
        assert_eq!(t.record(200, id(3), 1, 150), Ok(()));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn replay_table_is_bounded_and_never_forgets_into_a_replay() {
        let mut t = ReplayTable::new(3);
        for i in 0..3u8 {
            t.record(u64::from(i), id(i), 5, 0).unwrap();
        }
        // A fourth nonce evicts the oldest (time 0)...
        t.record(3, id(3), 1, 0).unwrap();
        assert_eq!(t.len(), 3);
        // ...whose counts can then not be replayed: it is refused as stale.
        assert_eq!(t.record(0, id(0), 1, 0), Err(Replay::Forgotten));
        assert_eq!(t.record(0, id(0), 6, 0), Err(Replay::Forgotten));
        // Newer nonces still work, and a flood keeps the table at capacity.
        for i in 10..200u8 {
            t.record(u64::from(i), id(i), 1, 0).unwrap();
            assert!(t.len() <= 3);
        }
        assert_eq!(t.record(150, id(150), 2, 0), Err(Replay::Forgotten));
        assert_eq!(t.record(199, id(199), 2, 0), Ok(()));
    }

    #[test]
    fn challenges_parse_back_and_order_sha256_first() {
        let cs = challenges(&ChallengeParams {
            realm: "Stream \"alot\"",
            nonce: "abc",
            opaque: "op",
            algorithms: &[Algorithm::Sha256, Algorithm::Md5],
            stale: true,
        });
        assert_eq!(cs.len(), 2);
        assert!(
            cs[0].contains("algorithm=SHA-256") && cs[1].contains("algorithm=MD5"),
            "{cs:?}"
        );
        for c in &cs {
            let (scheme, rest) = header::split_scheme(c).unwrap();
            assert_eq!(scheme, "Digest");
            let params = header::parse_params(rest).unwrap();
            let get = |n: &str| params.iter().find(|p| p.name == n).unwrap().value.clone();
            assert_eq!(get("realm"), "Stream \"alot\"");
            assert_eq!(
                (get("nonce"), get("opaque"), get("qop"), get("stale")),
                ("abc".into(), "op".into(), "auth".into(), "true".into())
            );
        }
    }
}
