//! Access control without IO: who may watch, who may publish and who may
//! administer, decided for the front door from the client's address, the
//! request and the clock.
//!
//! # Driving it
//! One [`Access`] per core that runs the door (it holds that core's nonce
//! replay table and rate-limit state; give each core its own `issuer`):
//!
//! 1. On a new connection, before reading a byte: [`Access::admit`]. Deny
//!    rules and the connection rate limit act here, so a refused address
//!    never gets a request parsed.
//! 2. For each request that names a resource: [`Access::decide`] with the
//!    method's [`Class`], the request path and URI, every `Authorization`
//!    value and the time. Answer what the [`Decision`] says: go on, 401 with
//!    the given `WWW-Authenticate` values (after holding the answer for its
//!    `delay`), 403, or 503 with `Retry-After`.
//!
//! Nothing here blocks on IO except reading `qtaccess`, users, groups and
//! token-secret files through the [`files::FileSource`] the caller gives
//! (cached; a `stat` per folder level at most once per recheck interval).
//! One Basic login that misses the cache costs an Argon2 run (tens of
//! milliseconds); a global budget bounds how many run per second.

pub mod addr;
pub mod basic;
pub mod digest;
pub mod files;
pub mod header;
pub mod qtaccess;
pub mod token;
pub mod users;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hmac::{KeyInit, Mac};
use serde::Deserialize;
use sha2::Sha256;

use crate::source::Nanos;
use addr::{rate_key, AddrRules, AddrVerdict, Limiter, Purpose, RateSettings, RateVerdict};
use digest::{Algorithm, NonceKey, NonceState, Replay, ReplayTable};
use files::{FileCache, FileSource};
use qtaccess::{AccessTree, Action, Policy, RuleSettings, Scheme, Source};
use token::{TokenError, TokenKey};
use users::{BasicCache, BasicCheck, FileError, Groups, Users};

pub const DEFAULT_REALM: &str = "Streamalot";
pub const DEFAULT_NONCE_LIFETIME_SECS: u64 = 300;
pub const DEFAULT_BASIC_CACHE_SECS: u64 = 60;
pub const DEFAULT_ADMIN_GROUP: &str = "admin";
/// How often a cached access, users or groups file is `stat`ed again.
pub const FILE_RECHECK_NS: Nanos = 1_000_000_000;
/// Nonces whose counts are remembered at once (per core).
pub const REPLAY_TABLE_ENTRIES: usize = 16_384;
/// Addresses whose rate-limit state is remembered at once (per limiter).
pub const RATE_TABLE_ENTRIES: usize = 8_192;

/// What a request wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// Watching: DESCRIBE, SETUP, PLAY, PAUSE, TEARDOWN, GET_PARAMETER, an
    /// Icecast GET, a tunnel's RTSP requests.
    Read,
    /// Publishing: ANNOUNCE, RECORD, SETUP with `mode=record`, an Icecast
    /// SOURCE or PUT.
    Write,
    /// The admin API.
    Admin,
}

impl Class {
    /// The class of an RTSP request by its method. `record` is whether the
    /// request is a SETUP whose Transport says `mode=record`, or belongs to
    /// a session that records: a publisher's keep-alives and TEARDOWN are
    /// publishing, and must not be judged by the folder's READ rules.
    pub fn of_rtsp(method: &str, record: bool) -> Class {
        match method {
            "ANNOUNCE" | "RECORD" => Class::Write,
            _ if record => Class::Write,
            _ => Class::Read,
        }
    }

    fn purpose(self) -> Purpose {
        match self {
            Class::Read => Purpose::Watch,
            Class::Write => Purpose::Publish,
            Class::Admin => Purpose::Admin,
        }
    }

    fn action(self) -> Action {
        match self {
            Class::Read => Action::Read,
            Class::Write => Action::Write,
            Class::Admin => Action::Admin,
        }
    }
}

/// The settings; each field is a proposed config key of the same name (and
/// flag, `--users`, `--failed-auth-rate`, ...).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The server-wide users file (`--users`), for paths whose `qtaccess`
    /// names none.
    pub users: Option<PathBuf>,
    /// The server-wide groups file (`--groups`).
    pub groups: Option<PathBuf>,
    /// The realm of the users files `streamalot passwd` creates [default:
    /// Streamalot]. Challenges name the realm of the users file that
    /// governs the path (for Basic, the `AuthName` when there is one), as
    /// DSS did, since a Digest secret is only good for its own realm.
    pub auth_realm: Option<String>,
    /// `digest` (the default), `basic` or `none`, where no `AuthScheme` says.
    pub auth_scheme: Option<Scheme>,
    /// Digest algorithms offered, one challenge each, in this order
    /// [default: SHA-256, MD5]. ffmpeg and GStreamer answer the last one and
    /// only do MD5, so leaving MD5 out (or not last) locks them out.
    pub digest_algorithms: Option<Vec<String>>,
    /// Accept Digest answers without `qop` (RFC 2069), as GStreamer and
    /// QuickTime-era clients send them [default: true].
    pub digest_rfc2069: Option<bool>,
    /// Seconds a Digest nonce is good for [default: 300].
    pub nonce_lifetime: Option<u64>,
    /// Bind each nonce to the address it was sent to [default: true].
    pub nonce_per_address: Option<bool>,
    /// Name of the per-folder access files; empty turns them off
    /// [default: qtaccess].
    pub qtaccess_name: Option<String>,
    /// The group whose members may use the admin API where no
    /// `[[access_rule]]` with `methods = ["admin"]` says otherwise
    /// [default: admin, as DSS].
    pub admin_group: Option<String>,
    /// Users who may use the admin API where no `[[access_rule]]` with
    /// `methods = ["admin"]` says otherwise, besides the admin group's
    /// members (`--admin-user`). Naming any turns the admin API's users-file
    /// logins on.
    #[serde(default)]
    pub admin_users: Vec<String>,
    /// A file holding the URL-token secret (at least 32 bytes); tokens are
    /// off without one.
    pub token_secret_file: Option<PathBuf>,
    /// Seconds a verified Basic login is remembered; 0 for never
    /// [default: 60].
    pub basic_cache: Option<u64>,
    /// New connections per client address [default: no limit].
    pub connection_rate: Option<RateSettings>,
    /// Failed logins per client address [default: 30 a minute, bursts of 5,
    /// then delayed up to 4 s, then refused]; `per_minute = 0` for no limit.
    pub failed_auth_rate: Option<RateSettings>,
    /// Basic password checks that miss the cache, per second, server-wide
    /// [default: 20]; 0 for no limit.
    pub password_checks_per_second: Option<u32>,
    /// CIDR blocks for every purpose, then for each (see [`addr`]).
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub deny: Vec<String>,
    #[serde(default)]
    pub watch_allow: Vec<String>,
    #[serde(default)]
    pub watch_deny: Vec<String>,
    #[serde(default)]
    pub publish_allow: Vec<String>,
    #[serde(default)]
    pub publish_deny: Vec<String>,
    #[serde(default)]
    pub admin_allow: Vec<String>,
    #[serde(default)]
    pub admin_deny: Vec<String>,
    /// `[[access.rule]]` tables: `qtaccess` rules in TOML.
    #[serde(default, rename = "rule", alias = "access_rule")]
    pub access_rule: Vec<RuleSettings>,
}

pub const DEFAULT_FAILED_AUTH_RATE: RateSettings = RateSettings {
    per_minute: 30,
    burst: 5,
    max_delay_ms: addr::DEFAULT_MAX_DELAY_MS,
};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    #[error("auth_realm {0:?}: {1}")]
    Realm(String, String),
    #[error("digest_algorithms: {0:?} is not MD5, MD5-sess, SHA-256 or SHA-256-sess")]
    Algorithm(String),
    #[error("digest_algorithms must name at least one algorithm")]
    NoAlgorithm,
    #[error("nonce_lifetime must be at least 1 second")]
    NonceLifetime,
    #[error("admin_group {0:?} is not a valid group name")]
    AdminGroup(String),
    #[error("admin_users: {0:?} is not a valid user name")]
    AdminUser(String),
    #[error("qtaccess_name {0:?} must be a plain file name")]
    FileName(String),
    #[error(transparent)]
    Address(#[from] addr::AddrSettingsError),
    #[error(transparent)]
    Rule(#[from] qtaccess::RuleError),
    #[error("token_secret_file {}: {why}", path.display())]
    TokenSecret { path: PathBuf, why: String },
}

/// Who a request is allowed as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// `None` for anonymous and token access.
    pub user: Option<String>,
    pub via: Via,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    Anonymous,
    Basic,
    Digest(Algorithm),
    /// A URL token for this prefix.
    Token(String),
}

/// Why the credentials a request carried did not log it in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    #[error("malformed Authorization: {0}")]
    Malformed(String),
    #[error("more than one {0} Authorization value")]
    Duplicate(&'static str),
    #[error("unknown user {0:?}")]
    UnknownUser(String),
    #[error("wrong password for {0:?}")]
    WrongPassword(String),
    #[error("user {0:?} has no password for {1}")]
    NoSecret(String, &'static str),
    #[error("user {0:?} has only a DSS crypt(3) password, which Basic cannot check")]
    LegacyCrypt(String),
    #[error("Digest realm {0:?} is not this server's")]
    WrongRealm(String),
    #[error("Digest uri {digest:?} is not the request URI {request:?}")]
    UriMismatch { digest: String, request: String },
    #[error("Digest algorithm {0} is not offered")]
    AlgorithmNotOffered(&'static str),
    #[error("Digest without qop (RFC 2069) is not accepted")]
    Rfc2069Refused,
    #[error("Digest nonce count reused: {0}")]
    Replayed(Replay),
    #[error("URL token: {0}")]
    Token(TokenError),
}

/// Why a right Digest answer still gets a new nonce (`stale=true`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Staleness {
    Expired,
    /// Minted by another process or core, or for another address.
    Foreign,
    /// The opaque is not this server's.
    Opaque,
    /// The nonce count was reused (also counted as a failed login).
    Replayed(Replay),
}

/// A 401 to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// `WWW-Authenticate` values, one header each, in this order.
    pub www_authenticate: Vec<String>,
    /// Hold the answer this long first (repeated failed logins).
    pub delay: Nanos,
    /// Why the credentials sent, if any, failed; for the log.
    pub failure: Option<Failure>,
    pub stale: Option<Staleness>,
}

/// Why a 403.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Forbidden {
    #[error("address {0}")]
    Address(String),
    #[error("request path is not inside the media root")]
    BadPath,
    #[error("access file error, failing closed: {0}")]
    BrokenFile(Arc<FileError>),
    #[error("users file {} does not exist", .0.display())]
    NoUsersFile(PathBuf),
    #[error("no users file governs this path")]
    NoUsers,
    #[error("the rules ({0}) admit no one for this")]
    NoOneAdmitted(String),
    #[error("the rules ({0}) allow only anonymous access (AuthScheme none)")]
    AnonymousOnly(String),
    #[error("user {user:?} is not admitted by {rules}")]
    NotPermitted { user: String, rules: String },
}

/// What to answer a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow(Grant),
    /// 401 Unauthorized.
    Challenge(Challenge),
    /// 403 Forbidden.
    Forbidden(Forbidden),
    /// 503 Service Unavailable with `Retry-After` (seconds, rounded up):
    /// too many failed logins from this address, or the server-wide budget
    /// of password checks is spent.
    SlowDown {
        retry_after: Nanos,
    },
}

impl Decision {
    /// The status code to answer with, when not allowed.
    pub fn status(&self) -> Option<u16> {
        match self {
            Decision::Allow(_) => None,
            Decision::Challenge(_) => Some(401),
            Decision::Forbidden(_) => Some(403),
            Decision::SlowDown { .. } => Some(503),
        }
    }
}

/// What to do with a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Admit,
    /// Admit, but read nothing from it for this long.
    Delay(Nanos),
    /// Close it at once; nothing is read.
    RefuseAddress(AddrVerdict),
    RefuseRate {
        retry_after: Nanos,
    },
}

/// One request, as the door has it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub client: IpAddr,
    pub class: Class,
    /// The method as on the request line (`DESCRIBE`): Digest hashes it.
    pub method: &'a str,
    /// The request URI as the client wrote it: Digest's `uri` must match it,
    /// and a URL token rides in its query.
    pub uri: &'a str,
    /// The resource's absolute path, percent-decoded, without query:
    /// `/sub/movie.mp4` (a track's `/trackID=1` may stay on), or the admin
    /// API path.
    pub path: &'a str,
    /// Every `Authorization` value of the request.
    pub authorization: &'a [&'a str],
    /// The caller's monotonic clock.
    pub now: Nanos,
    /// Unix time in seconds, for URL tokens.
    pub unix_time: u64,
}

/// Counters, for the statistics report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub allowed: u64,
    pub challenged: u64,
    pub forbidden: u64,
    pub slowed_down: u64,
    pub failed_logins: u64,
    pub stale_nonces: u64,
    pub connections_refused: u64,
    pub connections_delayed: u64,
    pub password_checks: u64,
    pub basic_cache_hits: u64,
}

/// The access state of one core.
pub struct Access {
    fs: Box<dyn FileSource + Send>,
    default_realm: String,
    default_scheme: Scheme,
    algorithms: Vec<Algorithm>,
    rfc2069: bool,
    nonce_lifetime_ms: u64,
    admin_group: String,
    admin_users: Vec<String>,
    default_users: Option<PathBuf>,
    default_groups: Option<PathBuf>,
    tree: AccessTree,
    addresses: AddrRules,
    nonces: NonceKey,
    opaque: String,
    nonce_seq: u32,
    replay: ReplayTable,
    basic_cache: BasicCache,
    users: FileCache<Users>,
    groups: FileCache<Groups>,
    tokens: Option<TokenKey>,
    connections: Option<Limiter>,
    failures: Option<Limiter>,
    password_budget: Option<Limiter>,
    pub stats: Stats,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// A key for one use, derived from the process secret.
fn subkey(secret: &[u8; 32], label: &str) -> [u8; 32] {
    let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("any key length");
    mac.update(label.as_bytes());
    mac.finalize().into_bytes().into()
}

/// The outcome of checking credentials.
enum Login {
    User(String, Via),
    Failed(Failure),
    Stale(Staleness, Option<Failure>),
    /// No credentials of the scheme asked for.
    Absent,
    /// The password-check budget is spent.
    Busy(Nanos),
}

impl Access {
    /// A fresh random process secret (from the OS).
    pub fn random_secret() -> std::io::Result<[u8; 32]> {
        let mut s = [0; 32];
        getrandom::getrandom(&mut s).map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(s)
    }

    /// Checks `settings` and builds the state of one core. `media_root` is
    /// where `qtaccess` files are looked for; `secret` should be the same
    /// on every core (see [`Access::random_secret`]) and `issuer` different.
    /// Relative paths in `settings` must already be resolved by the caller.
    pub fn new(
        settings: &Settings,
        media_root: PathBuf,
        fs: Box<dyn FileSource + Send>,
        secret: [u8; 32],
        issuer: u8,
    ) -> Result<Access, SettingsError> {
        let default_realm = settings.auth_realm.clone().unwrap_or_else(|| DEFAULT_REALM.into());
        users::check_realm(&default_realm).map_err(|why| SettingsError::Realm(default_realm.clone(), why))?;
        let algorithms = match &settings.digest_algorithms {
            None => vec![Algorithm::Sha256, Algorithm::Md5],
            Some(names) => names
                .iter()
                .map(|n| Algorithm::parse(n).ok_or_else(|| SettingsError::Algorithm(n.clone())))
                .collect::<Result<Vec<_>, _>>()?,
        };
        if algorithms.is_empty() {
            return Err(SettingsError::NoAlgorithm);
        }
        let lifetime = settings.nonce_lifetime.unwrap_or(DEFAULT_NONCE_LIFETIME_SECS);
        if lifetime == 0 {
            return Err(SettingsError::NonceLifetime);
        }
        let admin_group = settings
            .admin_group
            .clone()
            .unwrap_or_else(|| DEFAULT_ADMIN_GROUP.into());
        if !users::valid_name(&admin_group) {
            return Err(SettingsError::AdminGroup(admin_group));
        }
        if let Some(bad) = settings.admin_users.iter().find(|u| !users::valid_name(u)) {
            return Err(SettingsError::AdminUser(bad.clone()));
        }
        let file_name = settings
            .qtaccess_name
            .clone()
            .unwrap_or_else(|| qtaccess::DEFAULT_FILE_NAME.into());
        if file_name.contains('/') || file_name == "." || file_name == ".." {
            return Err(SettingsError::FileName(file_name));
        }
        let addresses = AddrRules::new(settings)?;
        let tree = AccessTree::new(media_root, &file_name, &settings.access_rule, FILE_RECHECK_NS)?;
        let tokens = match &settings.token_secret_file {
            None => None,
            Some(path) => {
                let err = |why: String| SettingsError::TokenSecret {
                    path: path.clone(),
                    why,
                };
                let bytes = fs.read(path, 4096).map_err(|e| err(e.to_string()))?;
                Some(TokenKey::new(bytes.trim_ascii()).map_err(|e| err(e.to_string()))?)
            }
        };
        let nonces = NonceKey::new(
            subkey(&secret, "digest nonce"),
            issuer,
            settings.nonce_per_address.unwrap_or(true),
        );
        let budget = settings.password_checks_per_second.unwrap_or(20);
        Ok(Access {
            fs,
            default_realm,
            default_scheme: settings.auth_scheme.unwrap_or(Scheme::Digest),
            algorithms,
            rfc2069: settings.digest_rfc2069.unwrap_or(true),
            nonce_lifetime_ms: lifetime * 1000,
            admin_group,
            admin_users: settings.admin_users.clone(),
            default_users: settings.users.clone(),
            default_groups: settings.groups.clone(),
            tree,
            addresses,
            opaque: nonces.opaque(),
            nonces,
            nonce_seq: 0,
            replay: ReplayTable::new(REPLAY_TABLE_ENTRIES),
            basic_cache: BasicCache::new(
                subkey(&secret, "basic cache"),
                settings.basic_cache.unwrap_or(DEFAULT_BASIC_CACHE_SECS) * 1_000_000_000,
                4096,
            ),
            users: FileCache::new(FILE_RECHECK_NS, 64, Users::parse),
            groups: FileCache::new(FILE_RECHECK_NS, 64, Groups::parse),
            tokens,
            connections: settings
                .connection_rate
                .and_then(|r| Limiter::new(r, RATE_TABLE_ENTRIES)),
            failures: Limiter::new(
                settings.failed_auth_rate.unwrap_or(DEFAULT_FAILED_AUTH_RATE),
                RATE_TABLE_ENTRIES,
            ),
            password_budget: Limiter::new(
                RateSettings {
                    per_minute: budget.saturating_mul(60),
                    burst: budget,
                    max_delay_ms: 0,
                },
                1,
            ),
            stats: Stats::default(),
        })
    }

    /// What to do with a new connection from `client`, before reading it.
    pub fn admit(&mut self, client: IpAddr, now: Nanos) -> Admission {
        if let Some(v) = self.addresses.refuses_connection(client) {
            self.stats.connections_refused += 1;
            return Admission::RefuseAddress(v);
        }
        match self.connections.as_mut().map(|l| l.charge(rate_key(client), now)) {
            None | Some(RateVerdict::Allow) => Admission::Admit,
            Some(RateVerdict::Delay(d)) => {
                self.stats.connections_delayed += 1;
                Admission::Delay(d)
            }
            Some(RateVerdict::Refuse { retry_after }) => {
                self.stats.connections_refused += 1;
                Admission::RefuseRate { retry_after }
            }
        }
    }

    /// Decides one request.
    pub fn decide(&mut self, req: &Request<'_>) -> Decision {
        let d = self.decide_inner(req);
        match &d {
            Decision::Allow(_) => self.stats.allowed += 1,
            Decision::Challenge(_) => self.stats.challenged += 1,
            Decision::Forbidden(_) => self.stats.forbidden += 1,
            Decision::SlowDown { .. } => self.stats.slowed_down += 1,
        }
        d
    }

    fn decide_inner(&mut self, req: &Request<'_>) -> Decision {
        match self.addresses.verdict(req.class.purpose(), req.client) {
            AddrVerdict::Allowed => {}
            AddrVerdict::Denied(c) => return Decision::Forbidden(Forbidden::Address(format!("denied by {c}"))),
            AddrVerdict::NotListed => return Decision::Forbidden(Forbidden::Address("not in the allow list".into())),
        }
        let policy = match self.policy(req) {
            Ok(p) => p,
            Err(f) => return Decision::Forbidden(f),
        };
        if policy.allows_anonymous() {
            return Decision::Allow(Grant {
                user: None,
                via: Via::Anonymous,
            });
        }
        let mut token_failure = None;
        if let (Class::Read, Some(key)) = (req.class, &self.tokens) {
            match token::from_uri(req.uri).and_then(|t| t.map(|t| key.verify(t, req.path, req.unix_time)).transpose()) {
                Ok(Some(grant)) => {
                    return Decision::Allow(Grant {
                        user: None,
                        via: Via::Token(grant.prefix),
                    })
                }
                Ok(None) => {}
                Err(e) => token_failure = Some(Failure::Token(e)),
            }
        }
        let rules = describe(&policy.source);
        let mut scheme = policy.scheme.unwrap_or(self.default_scheme);
        // The admin API takes HTTP Basic where no rule names a scheme,
        // whatever the media's default: `curl -u` and scripts send it
        // unasked, and the API answers only its allowed addresses.
        if req.class == Class::Admin
            && policy.scheme.is_none()
            && scheme == Scheme::Digest
            && req
                .authorization
                .iter()
                .any(|a| header::split_scheme(a).is_ok_and(|(s, _)| s.eq_ignore_ascii_case("Basic")))
        {
            scheme = Scheme::Basic;
        }
        if scheme == Scheme::None {
            return Decision::Forbidden(Forbidden::AnonymousOnly(rules));
        }
        if !policy.admits_someone() {
            return Decision::Forbidden(Forbidden::NoOneAdmitted(rules));
        }
        let Some(users_path) = policy.users_file.clone().or_else(|| self.default_users.clone()) else {
            return Decision::Forbidden(Forbidden::NoUsers);
        };
        let users = match self.users.get(&*self.fs, &users_path, req.now) {
            None => return Decision::Forbidden(Forbidden::NoUsersFile(users_path)),
            Some(Err(e)) => return Decision::Forbidden(Forbidden::BrokenFile(e)),
            Some(Ok(u)) => u,
        };
        let key = rate_key(req.client);
        let has_credentials = !req.authorization.is_empty() || token_failure.is_some();
        if has_credentials {
            if let Some(RateVerdict::Refuse { retry_after }) = self.failures.as_ref().map(|l| l.peek(key, req.now)) {
                return Decision::SlowDown { retry_after };
            }
        }
        let login = match scheme {
            Scheme::Digest => self.digest_login(req, &users),
            Scheme::Basic => self.basic_login(req, &users),
            Scheme::None => unreachable!("refused above"),
        };
        let realm = match scheme {
            Scheme::Basic => policy.realm.clone().unwrap_or_else(|| users.realm.clone()),
            _ => users.realm.clone(),
        };
        let (failure, stale) = match login {
            Login::User(user, via) => return self.authorize(&policy, user, via, rules, req.now),
            Login::Busy(retry_after) => return Decision::SlowDown { retry_after },
            Login::Absent => (token_failure, None),
            Login::Failed(f) => (Some(f), None),
            Login::Stale(s, f) => {
                self.stats.stale_nonces += 1;
                (f, Some(s))
            }
        };
        let mut delay = 0;
        if failure.is_some() {
            self.stats.failed_logins += 1;
            match self.failures.as_mut().map(|l| l.charge(key, req.now)) {
                Some(RateVerdict::Delay(d)) => delay = d,
                Some(RateVerdict::Refuse { retry_after }) => return Decision::SlowDown { retry_after },
                _ => {}
            }
        }
        Decision::Challenge(Challenge {
            www_authenticate: self.challenges(scheme, &realm, req, stale.is_some()),
            delay,
            failure,
            stale,
        })
    }

    fn policy(&mut self, req: &Request<'_>) -> Result<Policy, Forbidden> {
        let mut policy = self
            .tree
            .policy(&*self.fs, req.path, req.class.action(), req.now)
            .map_err(|e| match e {
                qtaccess::PolicyError::BadPath(_) => Forbidden::BadPath,
                qtaccess::PolicyError::File(f) => Forbidden::BrokenFile(f),
            })?;
        if req.class == Class::Admin && policy.source == Source::Default {
            policy.requires = vec![qtaccess::Require::Groups(vec![self.admin_group.clone()])];
            if !self.admin_users.is_empty() {
                policy.requires.push(qtaccess::Require::Users(self.admin_users.clone()));
            }
        }
        Ok(policy)
    }

    fn authorize(&mut self, policy: &Policy, user: String, via: Via, rules: String, now: Nanos) -> Decision {
        let needs_groups = !policy.admits(&user, None);
        let mut groups = None;
        if needs_groups {
            if let Some(path) = policy.groups_file.clone().or_else(|| self.default_groups.clone()) {
                match self.groups.get(&*self.fs, &path, now) {
                    None => {}
                    Some(Ok(g)) => groups = Some(g),
                    Some(Err(e)) => return Decision::Forbidden(Forbidden::BrokenFile(e)),
                }
            }
        }
        if policy.admits(&user, groups.as_deref()) {
            Decision::Allow(Grant { user: Some(user), via })
        } else {
            Decision::Forbidden(Forbidden::NotPermitted { user, rules })
        }
    }

    /// The one `Authorization` value of `scheme`, if any.
    fn credential<'a>(req: &Request<'a>, scheme: &'static str) -> Result<Option<&'a str>, Failure> {
        let mut found = None;
        for v in req.authorization {
            match header::split_scheme(v) {
                Ok((s, _)) if s.eq_ignore_ascii_case(scheme) => {
                    if found.is_some() {
                        return Err(Failure::Duplicate(scheme));
                    }
                    found = Some(*v);
                }
                Ok(_) => {}
                Err(e) => return Err(Failure::Malformed(e.to_string())),
            }
        }
        Ok(found)
    }

    fn digest_login(&mut self, req: &Request<'_>, users: &Users) -> Login {
        let value = match Access::credential(req, "Digest") {
            Ok(Some(v)) => v,
            Ok(None) => return Login::Absent,
            Err(f) => return Login::Failed(f),
        };
        let r = match digest::parse(value) {
            Ok(r) => r,
            Err(e) => return Login::Failed(Failure::Malformed(e.to_string())),
        };
        if r.realm != users.realm {
            return Login::Failed(Failure::WrongRealm(r.realm.chars().take(128).collect()));
        }
        if !self.algorithms.contains(&r.algorithm) {
            return Login::Failed(Failure::AlgorithmNotOffered(r.algorithm.name()));
        }
        if r.qop.is_none() && !self.rfc2069 {
            return Login::Failed(Failure::Rfc2069Refused);
        }
        if !digest::uri_matches(&r.uri, req.uri) {
            return Login::Failed(Failure::UriMismatch {
                digest: r.uri.chars().take(200).collect(),
                request: req.uri.chars().take(200).collect(),
            });
        }
        let Some(user) = users.get(&r.username) else {
            return Login::Failed(Failure::UnknownUser(r.username.chars().take(64).collect()));
        };
        let Some(ha1) = user.ha1(r.algorithm.hash()) else {
            return Login::Failed(Failure::NoSecret(user.name.clone(), r.algorithm.name()));
        };
        if !r.proves(req.method, ha1) {
            return Login::Failed(Failure::WrongPassword(user.name.clone()));
        }
        // The answer is right; is its nonce still good?
        let now_ms = req.now / 1_000_000;
        let (ms, id) = match self.nonces.check(&r.nonce, now_ms, req.client, self.nonce_lifetime_ms) {
            NonceState::Fresh { ms, id } => (ms, id),
            NonceState::Expired => return Login::Stale(Staleness::Expired, None),
            NonceState::Foreign => return Login::Stale(Staleness::Foreign, None),
        };
        if r.opaque.as_deref().is_some_and(|o| o != self.opaque) {
            return Login::Stale(Staleness::Opaque, None);
        }
        if let Some(nc) = &r.qop {
            let oldest_live = now_ms.saturating_sub(self.nonce_lifetime_ms);
            if let Err(replay) = self.replay.record(ms, id, nc.value, oldest_live) {
                let counted = matches!(replay, Replay::Reused { .. }).then_some(Failure::Replayed(replay));
                return Login::Stale(Staleness::Replayed(replay), counted);
            }
        }
        Login::User(user.name.clone(), Via::Digest(r.algorithm))
    }

    fn basic_login(&mut self, req: &Request<'_>, users: &Users) -> Login {
        let value = match Access::credential(req, "Basic") {
            Ok(Some(v)) => v,
            Ok(None) => return Login::Absent,
            Err(f) => return Login::Failed(f),
        };
        let creds = match basic::parse(value) {
            Ok(c) => c,
            Err(e) => return Login::Failed(Failure::Malformed(e.to_string())),
        };
        if let Some(h) = users.get(&creds.user).and_then(|u| u.basic.as_ref()) {
            if self.basic_cache.hit(h, &creds.user, &creds.password, req.now) {
                self.stats.basic_cache_hits += 1;
                return Login::User(creds.user, Via::Basic);
            }
        }
        if let Some(RateVerdict::Refuse { retry_after }) = self.password_budget.as_mut().map(|l| l.charge(0, req.now)) {
            return Login::Busy(retry_after);
        }
        self.stats.password_checks += 1;
        match users.verify_basic(&creds.user, &creds.password) {
            BasicCheck::Valid => {
                if let Some(h) = users.get(&creds.user).and_then(|u| u.basic.as_ref()) {
                    self.basic_cache.insert(h, &creds.user, &creds.password, req.now);
                }
                Login::User(creds.user, Via::Basic)
            }
            BasicCheck::WrongPassword => Login::Failed(Failure::WrongPassword(creds.user)),
            BasicCheck::UnknownUser => Login::Failed(Failure::UnknownUser(creds.user.chars().take(64).collect())),
            BasicCheck::NoBasicHash if users.get(&creds.user).is_some_and(|u| u.legacy_crypt) => {
                Login::Failed(Failure::LegacyCrypt(creds.user))
            }
            BasicCheck::NoBasicHash => Login::Failed(Failure::NoSecret(creds.user, "Basic")),
        }
    }

    fn challenges(&mut self, scheme: Scheme, realm: &str, req: &Request<'_>, stale: bool) -> Vec<String> {
        match scheme {
            Scheme::Basic => vec![basic::challenge(realm)],
            _ => {
                self.nonce_seq = self.nonce_seq.wrapping_add(1);
                let nonce = self.nonces.mint(req.now / 1_000_000, self.nonce_seq, req.client);
                digest::challenges(&digest::ChallengeParams {
                    realm,
                    nonce: &nonce,
                    opaque: &self.opaque,
                    algorithms: &self.algorithms,
                    stale,
                })
            }
        }
    }

    /// Whether a `qtaccess` file's `<Limit WRITE>` or a TOML rule for
    /// writing governs publishing to `path` (decoded, as
    /// [`Request::path`]): such a path's publishers are judged here. Only the
    /// built-in default, or a file that says nothing for WRITE, is no rule.
    /// A file that does not parse counts as a rule, so that judging it
    /// fails closed (403).
    pub fn rules_writing(&mut self, path: &str, now: Nanos) -> bool {
        match self.tree.policy(&*self.fs, path, Action::Write, now) {
            Ok(p) => p.source != Source::Default && !p.requires.is_empty(),
            Err(qtaccess::PolicyError::BadPath(_)) => false,
            Err(qtaccess::PolicyError::File(_)) => true,
        }
    }

    /// The limiters' counters: connections, failed logins, password checks.
    pub fn rate_stats(&self) -> [Option<addr::RateStats>; 3] {
        [&self.connections, &self.failures, &self.password_budget].map(|l| l.as_ref().map(|l| l.stats))
    }

    /// The realm `streamalot passwd` gives a new users file.
    pub fn default_realm(&self) -> &str {
        &self.default_realm
    }
}

fn describe(source: &Source) -> String {
    match source {
        Source::File(p) => p.display().to_string(),
        Source::Config(prefix) => format!("access_rule {prefix:?}"),
        Source::Default => "the defaults".into(),
    }
}

/// Settings paths relative to `base` (the config file's folder), as the
/// config does for its other paths.
pub fn resolve_paths(settings: &mut Settings, base: &Path) {
    for p in [
        &mut settings.users,
        &mut settings.groups,
        &mut settings.token_secret_file,
    ]
    .into_iter()
    .flatten()
    {
        *p = base.join(&*p);
    }
}

#[cfg(test)]
mod tests;
