//! The password file (`--users FILE`), the groups file (`--groups FILE`),
//! the check of a Basic password, and the edit behind `streamalot passwd`.
//!
//! # The users file
//! ```text
//! # comments and blank lines anywhere
//! realm Streamalot
//! alice:$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaA...:<md5 HA1>:<sha-256 HA1>
//! ```
//! The first line that is not a comment names the realm, as in DSS's
//! `qtusers`; each user line then holds the Basic password as an Argon2 PHC
//! string and the Digest secrets `H(user:realm:password)` for MD5 and
//! SHA-256, which is all Digest needs (DSS's `qtusers` kept the MD5 one the
//! same way). Any field may be empty, which disables that way of logging in.
//! DSS `qtusers` lines (`user:crypt:md5-HA1`) load too: their Digest MD5
//! works; their crypt(3) Basic hashes are not supported, so Basic fails for
//! those users until `streamalot passwd` sets their password again.
//!
//! # Why Argon2id
//! Basic sends the password with every request, so its check must be both
//! slow for a guesser and cheap enough per login. At the OWASP minimum
//! settings (Argon2id m=19 MiB, t=2, p=1, versus scrypt N=2^17, r=8, p=1 and
//! PBKDF2-SHA-256 at 600,000 rounds) a check took 34 ms with the `argon2`
//! crate on this project's 2-core machines, against 346 ms for scrypt and
//! 58 ms for PBKDF2 (which is not memory-hard); all three crates build in
//! under two seconds. A verified (user, password) pair is then remembered
//! for a short while ([`BasicCache`]), because some clients send Basic on
//! every request, keep-alives included.
//!
//! # The groups file
//! DSS's `qtgroups` syntax: `group: user user ...`, one group a line; a group
//! named on several lines gets the union.
//!
//! Any line that does not parse makes the whole file fail with its path and
//! line number, and a file that fails lets no one in: a typo must not open a
//! folder, nor silently drop a user's restrictions.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use hmac::{KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::digest::{self, Hash};

/// Longest user or group name.
pub const MAX_NAME_BYTES: usize = 255;
/// Largest users or groups file read.
pub const MAX_FILE_BYTES: usize = 16 * 1024 * 1024;

/// The Argon2id settings new passwords get (OWASP's minimum).
pub const ARGON2_M_KIB: u32 = 19 * 1024;
pub const ARGON2_T: u32 = 2;
pub const ARGON2_P: u32 = 1;
/// Bounds on settings read from a file, so one line cannot make each login
/// allocate gigabytes or spin for minutes.
const MAX_ARGON2_M_KIB: u32 = 256 * 1024;
const MAX_ARGON2_T: u32 = 16;
const MAX_ARGON2_P: u32 = 16;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    #[error("not an Argon2 PHC string ($argon2id$v=19$m=..,t=..,p=..$salt$hash)")]
    NotPhc,
    #[error("unsupported password hash {0:?} (only argon2id, argon2i, argon2d)")]
    Algorithm(String),
    #[error("Argon2 parameter {0}")]
    Param(String),
    #[error("Argon2 salt or hash is not valid base64")]
    Base64,
}

/// A parsed Argon2 password hash.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash {
    algorithm: argon2::Algorithm,
    version: argon2::Version,
    m: u32,
    t: u32,
    p: u32,
    salt: Vec<u8>,
    hash: Vec<u8>,
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PasswordHash({} m={} t={} p={})",
            self.algorithm, self.m, self.t, self.p
        )
    }
}

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD_NO_PAD;

impl PasswordHash {
    /// Hashes `password` with a fresh `salt` at the default settings.
    pub fn new(password: &str, salt: &[u8; 16]) -> PasswordHash {
        let mut h = PasswordHash {
            algorithm: argon2::Algorithm::Argon2id,
            version: argon2::Version::V0x13,
            m: ARGON2_M_KIB,
            t: ARGON2_T,
            p: ARGON2_P,
            salt: salt.to_vec(),
            hash: vec![0; 32],
        };
        let mut out = vec![0; 32];
        h.compute(password, &mut out)
            .expect("default Argon2 settings are valid");
        h.hash = out;
        h
    }

    /// Parses a PHC string as the reference `argon2 -e` and most libraries
    /// write it. The `v=` field may be missing (version 0x10, as old
    /// libraries wrote); the parameters come in any order.
    pub fn parse(s: &str) -> Result<PasswordHash, HashError> {
        let parts: Vec<&str> = s.split('$').collect();
        let (alg, rest) = match parts.as_slice() {
            ["", alg, rest @ ..] => (*alg, rest),
            _ => return Err(HashError::NotPhc),
        };
        let algorithm = match alg {
            "argon2id" => argon2::Algorithm::Argon2id,
            "argon2i" => argon2::Algorithm::Argon2i,
            "argon2d" => argon2::Algorithm::Argon2d,
            other => return Err(HashError::Algorithm(other.chars().take(32).collect())),
        };
        let (version, params, salt, hash) = match rest {
            [v, params, salt, hash] => {
                let v = v.strip_prefix("v=").ok_or(HashError::NotPhc)?;
                let version = match v {
                    "19" => argon2::Version::V0x13,
                    "16" => argon2::Version::V0x10,
                    other => return Err(HashError::Param(format!("v={other} is not 16 or 19"))),
                };
                (version, *params, *salt, *hash)
            }
            [params, salt, hash] => (argon2::Version::V0x10, *params, *salt, *hash),
            _ => return Err(HashError::NotPhc),
        };
        let (mut m, mut t, mut p) = (None, None, None);
        for kv in params.split(',') {
            let (k, v) = kv.split_once('=').ok_or(HashError::NotPhc)?;
            let slot = match k {
                "m" => &mut m,
                "t" => &mut t,
                "p" => &mut p,
                other => return Err(HashError::Param(format!("{other:?} is unknown"))),
            };
            if slot.is_some() {
                return Err(HashError::Param(format!("{k} given twice")));
            }
            *slot = Some(
                v.parse::<u32>()
                    .map_err(|_| HashError::Param(format!("{k}={v} is not a number")))?,
            );
        }
        let (Some(m), Some(t), Some(p)) = (m, t, p) else {
            return Err(HashError::Param("m, t and p are all needed".into()));
        };
        if m > MAX_ARGON2_M_KIB || t > MAX_ARGON2_T || p > MAX_ARGON2_P {
            return Err(HashError::Param(format!(
                "m={m},t={t},p={p} is beyond m={MAX_ARGON2_M_KIB},t={MAX_ARGON2_T},p={MAX_ARGON2_P}"
            )));
        }
        let salt = B64.decode(salt).map_err(|_| HashError::Base64)?;
        let hash = B64.decode(hash).map_err(|_| HashError::Base64)?;
        if !(8..=64).contains(&salt.len()) || !(16..=64).contains(&hash.len()) {
            return Err(HashError::Param("salt must be 8-64 bytes and hash 16-64".into()));
        }
        let h = PasswordHash {
            algorithm,
            version,
            m,
            t,
            p,
            salt,
            hash,
        };
        h.argon2().map_err(|e| HashError::Param(e.to_string()))?;
        Ok(h)
    }

    fn argon2(&self) -> Result<argon2::Argon2<'static>, argon2::Error> {
        let params = argon2::Params::new(self.m, self.t, self.p, Some(self.hash.len()))?;
        Ok(argon2::Argon2::new(self.algorithm, self.version, params))
    }

    fn compute(&self, password: &str, out: &mut [u8]) -> Result<(), argon2::Error> {
        self.argon2()?.hash_password_into(password.as_bytes(), &self.salt, out)
    }

    /// Whether `password` is the one hashed: a full Argon2 run (tens of
    /// milliseconds), compared in constant time.
    pub fn verify(&self, password: &str) -> bool {
        let mut out = vec![0; self.hash.len()];
        self.compute(password, &mut out).is_ok() && bool::from(out.ct_eq(&self.hash))
    }

    /// The PHC string.
    pub fn to_phc(&self) -> String {
        let v = match self.version {
            argon2::Version::V0x10 => 16,
            argon2::Version::V0x13 => 19,
        };
        format!(
            "${}$v={v}$m={},t={},p={}${}${}",
            self.algorithm,
            self.m,
            self.t,
            self.p,
            B64.encode(&self.salt),
            B64.encode(&self.hash)
        )
    }
}

/// How one user may log in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    /// `None`: Basic is not possible for this user.
    pub basic: Option<PasswordHash>,
    /// The line came from DSS (`user:crypt:md5`), whose crypt(3) hash is not
    /// supported.
    pub legacy_crypt: bool,
    /// Lowercase hex `H(user:realm:password)`.
    pub ha1_md5: Option<String>,
    pub ha1_sha256: Option<String>,
}

impl User {
    pub fn ha1(&self, hash: Hash) -> Option<&str> {
        match hash {
            Hash::Md5 => self.ha1_md5.as_deref(),
            Hash::Sha256 => self.ha1_sha256.as_deref(),
        }
    }
}

/// A loaded users file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Users {
    pub path: PathBuf,
    pub realm: String,
    users: HashMap<String, User>,
}

/// What went wrong on one line of a users, groups or access file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}: {kind}", path.display())]
pub struct FileError {
    pub path: PathBuf,
    /// 1-based; 0 for the file as a whole.
    pub line: usize,
    pub kind: LineError,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("cannot read the file: {0}")]
    Io(String),
    #[error("the file is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the line is not UTF-8")]
    NotUtf8,
    #[error("the first line that is not a comment must be `realm NAME`")]
    NoRealm,
    #[error("bad realm: {0}")]
    BadRealm(String),
    #[error("a second `realm` line")]
    RealmTwice,
    #[error("expected `user:argon2-hash:md5-ha1:sha256-ha1` (or DSS's `user:crypt:md5-ha1`)")]
    Fields,
    #[error("bad name {0:?}: 1-255 bytes, no ':', whitespace or control characters")]
    BadName(String),
    #[error("user {0:?} is defined twice")]
    DuplicateUser(String),
    #[error("password hash: {0}")]
    Hash(HashError),
    #[error("the {0} HA1 must be {1} hex digits")]
    Ha1(&'static str, usize),
    #[error("expected `group: user user ...`")]
    GroupLine,
    #[error("{0}")]
    Syntax(String),
}

/// Splits a file into numbered lines (1-based), without line ends, checking
/// size and UTF-8. Shared by every file the access modules read.
pub(crate) fn lines<'a>(path: &Path, bytes: &'a [u8]) -> Result<Vec<(usize, &'a str)>, FileError> {
    if bytes.len() > MAX_FILE_BYTES {
        return Err(file_error(path, 0, LineError::TooLarge(MAX_FILE_BYTES)));
    }
    bytes
        .split(|&b| b == b'\n')
        .enumerate()
        .map(|(i, line)| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            std::str::from_utf8(line)
                .map(|s| (i + 1, s))
                .map_err(|_| file_error(path, i + 1, LineError::NotUtf8))
        })
        .collect()
}

pub(crate) fn file_error(path: &Path, line: usize, kind: LineError) -> FileError {
    FileError {
        path: path.to_owned(),
        line,
        kind,
    }
}

fn is_comment_or_blank(line: &str) -> bool {
    let t = line.trim_start();
    t.is_empty() || t.starts_with('#')
}

/// A user or group name: what the files, `require user` and the groups file
/// can all hold unambiguously.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && !name.chars().any(|c| c == ':' || c.is_whitespace() || c.is_control())
}

/// A realm that can be written in a quoted string and a `realm` line.
pub fn check_realm(realm: &str) -> Result<(), String> {
    if realm.is_empty() || realm.len() > 128 {
        return Err("must be 1-128 bytes".into());
    }
    if realm.chars().any(|c| c.is_control() || c == '"' || c == '\\') {
        return Err("must not hold control characters, '\"' or '\\'".into());
    }
    if realm != realm.trim() {
        return Err("must not start or end with whitespace".into());
    }
    Ok(())
}

/// The `realm NAME` line, if `line` is one.
fn realm_of(line: &str) -> Option<&str> {
    let t = line.trim_start();
    let rest = t.strip_prefix("realm")?;
    rest.starts_with([' ', '\t']).then(|| rest.trim())
}

fn ha1_field(field: &str, hash: Hash, name: &'static str) -> Result<Option<String>, LineError> {
    if field.is_empty() {
        return Ok(None);
    }
    if field.len() != hash.hex_len() || !field.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(LineError::Ha1(name, hash.hex_len()));
    }
    Ok(Some(field.to_ascii_lowercase()))
}

impl Users {
    /// Parses a users file read from `path`.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Users, FileError> {
        let mut realm = None;
        let mut users = HashMap::new();
        for (n, line) in lines(path, bytes)? {
            if is_comment_or_blank(line) {
                continue;
            }
            let err = |kind| file_error(path, n, kind);
            if let Some(r) = realm_of(line) {
                if realm.is_some() {
                    return Err(err(LineError::RealmTwice));
                }
                check_realm(r).map_err(|why| err(LineError::BadRealm(why)))?;
                realm = Some(r.to_owned());
                continue;
            }
            if realm.is_none() {
                return Err(err(LineError::NoRealm));
            }
            let user = parse_user_line(line.trim()).map_err(err)?;
            if users.contains_key(&user.name) {
                return Err(err(LineError::DuplicateUser(user.name)));
            }
            users.insert(user.name.clone(), user);
        }
        let realm = realm.ok_or_else(|| file_error(path, 0, LineError::NoRealm))?;
        Ok(Users {
            path: path.to_owned(),
            realm,
            users,
        })
    }

    pub fn get(&self, name: &str) -> Option<&User> {
        self.users.get(name)
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Checks a Basic password. Unknown users cost a hash run too, so the
    /// time taken does not tell which names exist.
    pub fn verify_basic(&self, name: &str, password: &str) -> BasicCheck {
        match self.users.get(name) {
            Some(User { basic: Some(h), .. }) => {
                if h.verify(password) {
                    BasicCheck::Valid
                } else {
                    BasicCheck::WrongPassword
                }
            }
            Some(_) => BasicCheck::NoBasicHash,
            None => {
                let _ = dummy_hash().verify(password);
                BasicCheck::UnknownUser
            }
        }
    }
}

fn dummy_hash() -> &'static PasswordHash {
    static DUMMY: std::sync::OnceLock<PasswordHash> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| PasswordHash::new("", &[0x5a; 16]))
}

/// The result of a Basic password check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BasicCheck {
    Valid,
    WrongPassword,
    UnknownUser,
    /// The user exists but has no Basic hash (Digest only, or a DSS line).
    NoBasicHash,
}

fn parse_user_line(line: &str) -> Result<User, LineError> {
    let fields: Vec<&str> = line.split(':').collect();
    let name = fields[0];
    if !valid_name(name) {
        return Err(LineError::BadName(name.chars().take(64).collect()));
    }
    match fields.as_slice() {
        [_, basic, md5, sha256] => Ok(User {
            name: name.to_owned(),
            basic: if basic.is_empty() {
                None
            } else {
                Some(PasswordHash::parse(basic).map_err(LineError::Hash)?)
            },
            legacy_crypt: false,
            ha1_md5: ha1_field(md5, Hash::Md5, "MD5")?,
            ha1_sha256: ha1_field(sha256, Hash::Sha256, "SHA-256")?,
        }),
        [_, _crypt, md5] => Ok(User {
            name: name.to_owned(),
            basic: None,
            legacy_crypt: true,
            ha1_md5: ha1_field(md5, Hash::Md5, "MD5")?,
            ha1_sha256: None,
        }),
        _ => Err(LineError::Fields),
    }
}

/// A loaded groups file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Groups {
    members: HashMap<String, HashSet<String>>,
}

impl Groups {
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Groups, FileError> {
        let mut members: HashMap<String, HashSet<String>> = HashMap::new();
        for (n, line) in lines(path, bytes)? {
            if is_comment_or_blank(line) {
                continue;
            }
            let err = |kind| file_error(path, n, kind);
            let (group, users) = line.split_once(':').ok_or_else(|| err(LineError::GroupLine))?;
            let group = group.trim();
            if !valid_name(group) {
                return Err(err(LineError::BadName(group.chars().take(64).collect())));
            }
            let set = members.entry(group.to_owned()).or_default();
            for user in users.split_whitespace() {
                if !valid_name(user) {
                    return Err(err(LineError::BadName(user.chars().take(64).collect())));
                }
                set.insert(user.to_owned());
            }
        }
        Ok(Groups { members })
    }

    pub fn contains(&self, group: &str, user: &str) -> bool {
        self.members.get(group).is_some_and(|m| m.contains(user))
    }
}

/// Remembers (user, password) pairs that passed a Basic check, for `ttl`,
/// in bounded memory. Keys are an HMAC of the pair with a per-process key
/// and the user's stored hash, so the cache holds no password and a
/// password change (a new hash) misses it at once.
pub struct BasicCache {
    key: [u8; 32],
    ttl_ns: u64,
    capacity: usize,
    expires: HashMap<[u8; 32], u64>,
    order: VecDeque<([u8; 32], u64)>,
}

impl fmt::Debug for BasicCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicCache")
            .field("ttl_ns", &self.ttl_ns)
            .field("len", &self.expires.len())
            .finish_non_exhaustive()
    }
}

impl BasicCache {
    pub fn new(key: [u8; 32], ttl_ns: u64, capacity: usize) -> BasicCache {
        BasicCache {
            key,
            ttl_ns,
            capacity: capacity.max(1),
            expires: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    fn slot(&self, hash: &PasswordHash, user: &str, password: &str) -> [u8; 32] {
        let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(&self.key).expect("any key length");
        mac.update(hash.to_phc().as_bytes());
        mac.update(&[0]);
        mac.update(user.as_bytes());
        mac.update(&[0]);
        mac.update(password.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Whether this pair passed a check less than `ttl` ago.
    pub fn hit(&self, hash: &PasswordHash, user: &str, password: &str, now: u64) -> bool {
        self.ttl_ns > 0
            && self
                .expires
                .get(&self.slot(hash, user, password))
                .is_some_and(|&e| e > now)
    }

    pub fn insert(&mut self, hash: &PasswordHash, user: &str, password: &str, now: u64) {
        if self.ttl_ns == 0 {
            return;
        }
        while let Some(&(k, e)) = self.order.front() {
            if e > now && self.expires.len() < self.capacity {
                break;
            }
            self.order.pop_front();
            if self.expires.get(&k) == Some(&e) {
                self.expires.remove(&k);
            }
        }
        let slot = self.slot(hash, user, password);
        let e = now.saturating_add(self.ttl_ns);
        self.expires.insert(slot, e);
        self.order.push_back((slot, e));
    }

    pub fn len(&self) -> usize {
        self.expires.len()
    }

    pub fn is_empty(&self) -> bool {
        self.expires.is_empty()
    }
}

/// What `passwd` does to one user.
#[derive(Clone, PartialEq, Eq)]
pub enum PasswdAction {
    /// Add the user, or replace its password.
    Set(String),
    Delete,
}

impl fmt::Debug for PasswdAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PasswdAction::Set(_) => f.write_str("Set(<password>)"),
            PasswdAction::Delete => f.write_str("Delete"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswdOutcome {
    Added,
    Replaced,
    Deleted,
    NotFound,
}

#[derive(Debug, thiserror::Error)]
pub enum PasswdError {
    #[error("bad user name {0:?}: 1-255 bytes, no ':', whitespace or control characters")]
    BadName(String),
    #[error("the password is empty or holds control characters")]
    BadPassword,
    #[error("bad realm {0:?}: {1}")]
    BadRealm(String, String),
    #[error("{0} has no `realm NAME` line, so the Digest secrets cannot be computed")]
    NoRealm(PathBuf),
    #[error("{} is not UTF-8", .0.display())]
    NotUtf8(PathBuf),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The users-file line for `user` with `password` in `realm`.
pub fn user_line(user: &str, password: &str, realm: &str, salt: &[u8; 16]) -> String {
    format!(
        "{user}:{}:{}:{}",
        PasswordHash::new(password, salt).to_phc(),
        digest::ha1(Hash::Md5, user, realm, password),
        digest::ha1(Hash::Sha256, user, realm, password)
    )
}

/// Applies `action` for `user` to the text of a users file (`None` when the
/// file does not exist yet, which then starts with a `realm` line for
/// `new_realm`). Comments, blank lines and other users' lines are kept as
/// they are, in place; every earlier line of `user` is replaced by one.
pub fn edit(
    path: &Path,
    text: Option<&str>,
    new_realm: &str,
    user: &str,
    action: &PasswdAction,
    salt: &[u8; 16],
) -> Result<(String, PasswdOutcome), PasswdError> {
    if !valid_name(user) {
        return Err(PasswdError::BadName(user.chars().take(64).collect()));
    }
    if let PasswdAction::Set(pw) = action {
        if pw.is_empty() || pw.chars().any(char::is_control) {
            return Err(PasswdError::BadPassword);
        }
    }
    let fresh;
    let text = match text {
        Some(t) => t,
        None => {
            check_realm(new_realm).map_err(|why| PasswdError::BadRealm(new_realm.into(), why))?;
            fresh = format!(
                "# Streamalot users: user:argon2id-hash:md5-ha1:sha256-ha1\n\
                 # Edit with `streamalot passwd --file FILE USER PASSWORD`.\n\
                 realm {new_realm}\n"
            );
            &fresh
        }
    };
    let realm = text
        .lines()
        .filter(|l| !is_comment_or_blank(l))
        .find_map(realm_of)
        .ok_or_else(|| PasswdError::NoRealm(path.to_owned()))?;
    let is_users_line = |l: &str| !is_comment_or_blank(l) && l.trim_start().split(':').next() == Some(user);
    let mut out = String::with_capacity(text.len() + 256);
    let mut found = false;
    for line in text.split_inclusive('\n') {
        let bare = line.strip_suffix('\n').unwrap_or(line);
        let bare = bare.strip_suffix('\r').unwrap_or(bare);
        if !is_users_line(bare) {
            out.push_str(line);
            continue;
        }
        if !found {
            if let PasswdAction::Set(pw) = action {
                out.push_str(&user_line(user, pw, realm, salt));
                out.push('\n');
            }
        }
        found = true;
    }
    let outcome = match (action, found) {
        (PasswdAction::Set(pw), false) => {
            if !out.is_empty() && !out.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(&user_line(user, pw, realm, salt));
            out.push('\n');
            PasswdOutcome::Added
        }
        (PasswdAction::Set(_), true) => PasswdOutcome::Replaced,
        (PasswdAction::Delete, true) => PasswdOutcome::Deleted,
        (PasswdAction::Delete, false) => PasswdOutcome::NotFound,
    };
    Ok((out, outcome))
}

/// `streamalot passwd --file FILE USER PASSWORD` (and its delete form):
/// edits the users file with [`edit`] and replaces it atomically, a
/// temporary file in the same directory renamed over it, so a server reading
/// it sees the old file or the new one and never half of one. A new file is
/// made readable by its owner only; an existing one keeps its permissions.
pub fn passwd(path: &Path, user: &str, action: &PasswdAction, new_realm: &str) -> Result<PasswdOutcome, PasswdError> {
    let io_err = |source| PasswdError::Io {
        path: path.to_owned(),
        source,
    };
    let old = match std::fs::read(path) {
        Ok(bytes) => Some(String::from_utf8(bytes).map_err(|_| PasswdError::NotUtf8(path.to_owned()))?),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_err(e)),
    };
    let mut salt = [0u8; 16];
    getrandom::getrandom(&mut salt).map_err(|e| io_err(io::Error::other(e.to_string())))?;
    let (text, outcome) = edit(path, old.as_deref(), new_realm, user, action, &salt)?;
    if outcome == PasswdOutcome::NotFound {
        return Ok(outcome);
    }
    write_atomically(path, text.as_bytes()).map_err(io_err)?;
    Ok(outcome)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::other("the path names no file"))?;
    let tmp = dir.join(format!(".{}.{}.tmp", name.to_string_lossy(), std::process::id()));
    let mode = std::fs::metadata(path).map(|m| m.permissions().mode()).unwrap_or(0o600);
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // The rename is durable once the directory is.
        std::fs::File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    const SALT: [u8; 16] = *b"0123456789abcdef";

    /// Made by the reference implementation (Debian's `argon2` package):
    /// `echo -n 'Circle of Life' | argon2 somesaltvalue -id -t 2 -k 19456 -p 1 -l 32 -e`.
    const REFERENCE_PHC: &str =
        "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHR2YWx1ZQ$ffkhVjOyzGfqn+9qfUAVZme5Kr5Ttp73XyvcT/ed2r8";

    #[test]
    fn verifies_a_hash_from_the_reference_implementation() {
        let h = PasswordHash::parse(REFERENCE_PHC).unwrap();
        assert!(h.verify("Circle of Life"));
        assert!(!h.verify("Circle of life"));
        assert_eq!(h.to_phc(), REFERENCE_PHC);
    }

    #[test]
    fn new_hashes_round_trip() {
        let h = PasswordHash::new("päss:word", &SALT);
        let phc = h.to_phc();
        assert!(
            phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$MDEyMzQ1Njc4OWFiY2RlZg$"),
            "{phc}"
        );
        let back = PasswordHash::parse(&phc).unwrap();
        assert!(back.verify("päss:word"));
        assert!(!back.verify("päss:wor"));
    }

    #[test]
    fn bad_hashes_are_typed_errors() {
        let bad = |s: &str| PasswordHash::parse(s).unwrap_err();
        assert_eq!(bad("plaintext"), HashError::NotPhc);
        assert_eq!(bad("$scrypt$ln=15$x$y"), HashError::Algorithm("scrypt".into()));
        assert_eq!(
            bad("$argon2id$v=19$m=19456,t=2$c29tZXNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"),
            HashError::Param("m, t and p are all needed".into())
        );
        assert!(matches!(
            bad("$argon2id$v=19$m=99999999,t=2,p=1$c29tZXNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"),
            HashError::Param(_)
        ));
        assert!(matches!(
            bad("$argon2id$v=19$m=19456,t=2,p=1,t=3$c29tZXNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"),
            HashError::Param(_)
        ));
        assert!(matches!(
            bad("$argon2id$v=20$m=19456,t=2,p=1$c29tZXNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"),
            HashError::Param(_)
        ));
        assert_eq!(bad("$argon2id$v=19$m=19456,t=2,p=1$!!$aGFzaA"), HashError::Base64);
        assert!(matches!(
            bad("$argon2id$v=19$m=19456,t=2,p=1$c2E$aGFzaGhhc2hoYXNoaGFzaA"),
            HashError::Param(_)
        ));
        // Old libraries leave out v= (version 16).
        let v16 = PasswordHash::parse("$argon2i$m=4096,t=3,p=1$c29tZXNhbHQ$aGFzaGhhc2hoYXNoaGFzaA").unwrap();
        assert!(v16.to_phc().starts_with("$argon2i$v=16$"));
    }

    fn users_text() -> String {
        let md5 = digest::ha1(Hash::Md5, "dss", "Streamalot", "old");
        format!(
            "# a comment\n\n   # indented comment\nrealm Streamalot\n{}\n\
             digestonly:::{}\ndss:XXq2wKiyI43A2:{md5}\r\n",
            user_line("alice", "wonder", "Streamalot", &SALT),
            digest::ha1(Hash::Sha256, "digestonly", "Streamalot", "x"),
        )
    }

    #[test]
    fn users_file_loads_every_kind_of_line() {
        let u = Users::parse(Path::new("users"), users_text().as_bytes()).unwrap();
        assert_eq!(u.realm, "Streamalot");
        assert_eq!(u.len(), 3);
        let alice = u.get("alice").unwrap();
        assert_eq!(
            alice.ha1(Hash::Md5).unwrap(),
            digest::ha1(Hash::Md5, "alice", "Streamalot", "wonder")
        );
        assert_eq!(u.verify_basic("alice", "wonder"), BasicCheck::Valid);
        assert_eq!(u.verify_basic("alice", "wander"), BasicCheck::WrongPassword);
        assert_eq!(u.verify_basic("nobody", "wonder"), BasicCheck::UnknownUser);
        assert_eq!(u.verify_basic("digestonly", "x"), BasicCheck::NoBasicHash);
        let dss = u.get("dss").unwrap();
        assert!(dss.legacy_crypt && dss.basic.is_none() && dss.ha1_sha256.is_none());
        assert_eq!(u.verify_basic("dss", "old"), BasicCheck::NoBasicHash);
        assert_eq!(u.get("digestonly").unwrap().ha1(Hash::Md5), None);
    }

    #[test]
    fn broken_users_files_name_file_and_line() {
        let p = Path::new("/etc/streamalot/users");
        let err = |text: &str| Users::parse(p, text.as_bytes()).unwrap_err();
        let e = err("alice:::\n");
        assert_eq!((e.line, &e.kind), (1, &LineError::NoRealm));
        assert_eq!(
            e.to_string(),
            "/etc/streamalot/users:1: the first line that is not a comment must be `realm NAME`"
        );
        assert_eq!(err("# only comments\n").kind, LineError::NoRealm);
        assert_eq!(err("realm a\nrealm b\n").kind, LineError::RealmTwice);
        assert!(matches!(err("realm a\"b\n").kind, LineError::BadRealm(_)));
        assert_eq!(err("realm R\nalice\n").kind, LineError::Fields);
        assert_eq!(err("realm R\nalice:a:b:c:d\n").kind, LineError::Fields);
        let e = err("realm R\n\n# c\nal ice:::\n");
        assert_eq!((e.line, e.kind), (4, LineError::BadName("al ice".into())));
        assert_eq!(err("realm R\n:::\n").kind, LineError::BadName(String::new()));
        assert_eq!(err("realm R\na:::\na:::\n").kind, LineError::DuplicateUser("a".into()));
        assert!(matches!(
            err("realm R\na:nothash::\n").kind,
            LineError::Hash(HashError::NotPhc)
        ));
        assert_eq!(err("realm R\na::abc:\n").kind, LineError::Ha1("MD5", 32));
        assert_eq!(
            err(&format!("realm R\na::{}:\n", "g".repeat(32))).kind,
            LineError::Ha1("MD5", 32)
        );
        assert_eq!(
            err(&format!("realm R\na:::{}\n", "0".repeat(32))).kind,
            LineError::Ha1("SHA-256", 64)
        );
        let e = Users::parse(p, b"realm R\n\xff\xfe:::\n").unwrap_err();
        assert_eq!((e.line, e.kind), (2, LineError::NotUtf8));
    }

    #[test]
    fn groups_file() {
        let g = Groups::parse(
            Path::new("g"),
            b"# c\nadmin: alice bob\nstaff:\tcarol\nadmin: dave\nempty:\n",
        )
        .unwrap();
        assert!(g.contains("admin", "alice") && g.contains("admin", "dave") && g.contains("staff", "carol"));
        assert!(!g.contains("staff", "alice") && !g.contains("nogroup", "alice") && !g.contains("empty", ""));
        let e = Groups::parse(Path::new("g"), b"admin: a\nno colon here\n").unwrap_err();
        assert_eq!((e.line, e.kind), (2, LineError::GroupLine));
        let e = Groups::parse(Path::new("g"), b"bad group: a\n").unwrap_err();
        assert_eq!(e.kind, LineError::BadName("bad group".into()));
    }

    #[test]
    fn basic_cache_expires_forgets_on_password_change_and_stays_bounded() {
        let h = PasswordHash::new("pw", &SALT);
        let mut c = BasicCache::new([1; 32], 1_000, 4);
        assert!(!c.hit(&h, "u", "pw", 0));
        c.insert(&h, "u", "pw", 0);
        assert!(c.hit(&h, "u", "pw", 999));
        assert!(!c.hit(&h, "u", "pw", 1_000));
        assert!(!c.hit(&h, "u", "other", 10));
        assert!(!c.hit(&h, "v", "pw", 10));
        let changed = PasswordHash::new("pw", &[9; 16]);
        assert!(!c.hit(&changed, "u", "pw", 10));
        for i in 0..100 {
            c.insert(&h, &format!("u{i}"), "pw", 10);
            assert!(c.len() <= 4);
        }
        assert!(c.hit(&h, "u99", "pw", 11));
        let off = BasicCache::new([1; 32], 0, 4);
        assert!(!off.hit(&h, "u", "pw", 0));
    }

    #[test]
    fn edit_adds_replaces_and_deletes_keeping_other_lines() {
        let p = Path::new("users");
        let (text, o) = edit(p, None, "Streamalot", "alice", &PasswdAction::Set("one".into()), &SALT).unwrap();
        assert_eq!(o, PasswdOutcome::Added);
        let u = Users::parse(p, text.as_bytes()).unwrap();
        assert_eq!(u.verify_basic("alice", "one"), BasicCheck::Valid);

        let with_others = format!("{text}# keep me\nbob:::\n  # and me\n");
        let (text, o) = edit(
            p,
            Some(&with_others),
            "ignored",
            "alice",
            &PasswdAction::Set("two".into()),
            &SALT,
        )
        .unwrap();
        assert_eq!(o, PasswdOutcome::Replaced);
        assert!(text.contains("# keep me\nbob:::\n  # and me\n"), "{text}");
        let u = Users::parse(p, text.as_bytes()).unwrap();
        assert_eq!(u.verify_basic("alice", "two"), BasicCheck::Valid);
        assert_eq!(u.verify_basic("alice", "one"), BasicCheck::WrongPassword);
        assert_eq!(
            u.get("alice").unwrap().ha1_sha256.as_deref(),
            Some(digest::ha1(Hash::Sha256, "alice", "Streamalot", "two").as_str())
        );
        // alice stays where she was: before the comment.
        assert!(text.find("alice:").unwrap() < text.find("# keep me").unwrap());

        let (text, o) = edit(p, Some(&text), "x", "bob", &PasswdAction::Delete, &SALT).unwrap();
        assert_eq!(o, PasswdOutcome::Deleted);
        assert!(!text.contains("bob:") && text.contains("# keep me"));
        let (_, o) = edit(p, Some(&text), "x", "bob", &PasswdAction::Delete, &SALT).unwrap();
        assert_eq!(o, PasswdOutcome::NotFound);

        // Duplicates (which the server refuses) collapse into one line.
        let dup = "realm R\ncarol:::\nx:::\ncarol:::\n";
        let (text, o) = edit(p, Some(dup), "x", "carol", &PasswdAction::Set("c".into()), &SALT).unwrap();
        assert_eq!(o, PasswdOutcome::Replaced);
        assert_eq!(text.matches("carol:").count(), 1);
        assert!(Users::parse(p, text.as_bytes()).is_ok());
        // A file without a final newline gets one before the new line.
        let (text, _) = edit(
            p,
            Some("realm R\nx:::"),
            "x",
            "d",
            &PasswdAction::Set("d".into()),
            &SALT,
        )
        .unwrap();
        assert!(text.starts_with("realm R\nx:::\nd:"));
    }

    #[test]
    fn edit_refuses_what_the_file_could_not_hold() {
        let p = Path::new("users");
        let set = PasswdAction::Set("pw".into());
        assert!(matches!(
            edit(p, None, "R", "a:b", &set, &SALT),
            Err(PasswdError::BadName(_))
        ));
        assert!(matches!(
            edit(p, None, "R", "a b", &set, &SALT),
            Err(PasswdError::BadName(_))
        ));
        assert!(matches!(
            edit(p, None, "R", "a", &PasswdAction::Set(String::new()), &SALT),
            Err(PasswdError::BadPassword)
        ));
        assert!(matches!(
            edit(p, None, "R", "a", &PasswdAction::Set("a\nb".into()), &SALT),
            Err(PasswdError::BadPassword)
        ));
        assert!(matches!(
            edit(p, None, "bad\"realm", "a", &set, &SALT),
            Err(PasswdError::BadRealm(..))
        ));
        assert!(matches!(
            edit(p, Some("# no realm\na:::\n"), "R", "a", &set, &SALT),
            Err(PasswdError::NoRealm(_))
        ));
    }

    #[test]
    fn passwd_writes_the_file_atomically() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("streamalot-passwd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("users");
        let _ = std::fs::remove_file(&path);
        let set = |pw: &str| PasswdAction::Set(pw.into());
        assert_eq!(
            passwd(&path, "alice", &set("one"), "Streamalot").unwrap(),
            PasswdOutcome::Added
        );
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(
            passwd(&path, "bob", &set("two"), "ignored").unwrap(),
            PasswdOutcome::Added
        );
        assert_eq!(
            passwd(&path, "alice", &set("three"), "ignored").unwrap(),
            PasswdOutcome::Replaced
        );
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o640);
        let u = Users::parse(&path, &std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(u.realm, "Streamalot");
        assert_eq!(u.verify_basic("alice", "three"), BasicCheck::Valid);
        assert_eq!(u.verify_basic("bob", "two"), BasicCheck::Valid);
        assert_eq!(
            passwd(&path, "bob", &PasswdAction::Delete, "x").unwrap(),
            PasswdOutcome::Deleted
        );
        assert_eq!(
            passwd(&path, "bob", &PasswdAction::Delete, "x").unwrap(),
            PasswdOutcome::NotFound
        );
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("users")]);
        // A directory that cannot be written leaves the file as it was.
        let missing = dir.join("no/such/dir/users");
        assert!(matches!(
            passwd(&missing, "a", &set("x"), "R"),
            Err(PasswdError::Io { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
