//! Who may watch and who may publish what: DSS's per-folder `qtaccess`
//! files, the same rules in the TOML config, and the rule that the nearest
//! one up the tree from the requested file wins.
//!
//! # `qtaccess` syntax (as DSS's QTAccessFile.cpp reads it)
//! ```text
//! # comment
//! AuthName "Members only"          realm for Basic (Digest uses the users file's)
//! AuthScheme digest                basic, digest or none
//! AuthUserFile /etc/streaming/qtusers
//! AuthGroupFile /etc/streaming/qtgroups
//! require user alice bob
//! require group staff
//! require valid-user               any user who logs in
//! require any-user                 anyone, without logging in
//! <Limit WRITE>                    what follows applies to publishing...
//! require group publishers
//! </Limit>                         ...until here
//! ```
//! As in DSS, lines outside a `<Limit>` block apply to **READ** (watching)
//! only, so a folder's file says nothing about publishing unless it has a
//! `<Limit WRITE>` (or `<Limit READ WRITE>`) block; and once a folder has a
//! file, an action its `require` lines do not cover is refused. Publishing
//! under no file at all needs a valid user (DSS's reflector did the same);
//! watching under no file is open to anyone.
//!
//! # Where Streamalot differs from DSS, and why
//! - A line DSS would skip (an unknown directive, `require` with an unknown
//!   word or no names, `<Limit GET>`, an unclosed `<Limit>`) is an error that
//!   names the file and line, and the folder it governs is closed to
//!   everyone until it is fixed: a misspelt rule must not leave it open.
//! - Directive names and `READ`/`WRITE` are matched without regard to case
//!   (DSS wanted exact case; Apache habits write `Require`).
//! - Relative `AuthUserFile`/`AuthGroupFile` paths are relative to the
//!   folder of the `qtaccess` file (DSS used the server's working
//!   directory).
//! - `AuthScheme none` means no challenge is sent: only what `require
//!   any-user` allows is allowed (DSS only knew basic and digest here).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use super::files::{FileCache, FileSource};
use super::users::{self, check_realm, file_error, valid_name, FileError, Groups, LineError};
use crate::source::Nanos;

/// The file name DSS used (its `qtaccessfilename` preference).
pub const DEFAULT_FILE_NAME: &str = "qtaccess";

/// What a request wants to do with a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Watching: OPTIONS, DESCRIBE, SETUP, PLAY, ... of a movie or stream.
    Read,
    /// Publishing: ANNOUNCE and RECORD (and SETUP with `mode=record`).
    Write,
    /// The admin API. Only config rules speak of it: `qtaccess` files are
    /// about media folders and never grant it.
    Admin,
}

/// A set of actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Actions(u8);

impl Actions {
    pub const READ: Actions = Actions(1);
    pub const WRITE: Actions = Actions(2);
    pub const BOTH: Actions = Actions(3);
    pub const ADMIN: Actions = Actions(4);

    pub fn contains(self, a: Action) -> bool {
        self.0 & Actions::from(a).0 != 0
    }
}

impl From<Action> for Actions {
    fn from(a: Action) -> Actions {
        match a {
            Action::Read => Actions::READ,
            Action::Write => Actions::WRITE,
            Action::Admin => Actions::ADMIN,
        }
    }
}

/// How credentials are asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    Basic,
    Digest,
    /// Send no challenge: only anonymous access is possible.
    None,
}

impl Scheme {
    pub fn parse(s: &str) -> Option<Scheme> {
        Some(match s.to_ascii_lowercase().as_str() {
            "basic" => Scheme::Basic,
            "digest" => Scheme::Digest,
            "none" => Scheme::None,
            _ => return None,
        })
    }
}

/// One `require` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Require {
    AnyUser,
    ValidUser,
    Users(Vec<String>),
    Groups(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Directive {
    AuthName(String),
    AuthScheme(Scheme),
    AuthUserFile(PathBuf),
    AuthGroupFile(PathBuf),
    Require(Require),
}

/// A parsed `qtaccess` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessFile {
    pub path: PathBuf,
    directives: Vec<(Actions, Directive)>,
}

/// Where a [`Policy`] came from, for logs and 403 reasons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    /// A `[[access_rule]]` of the config, by its path prefix.
    Config(String),
    /// No file or rule: the built-in default for the action.
    Default,
}

/// The rules that govern one action on one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub source: Source,
    /// `AuthName`: the realm Basic challenges name.
    pub realm: Option<String>,
    pub scheme: Option<Scheme>,
    pub users_file: Option<PathBuf>,
    pub groups_file: Option<PathBuf>,
    pub requires: Vec<Require>,
}

impl Policy {
    fn default_for(action: Action) -> Policy {
        Policy {
            source: Source::Default,
            realm: None,
            scheme: None,
            users_file: None,
            groups_file: None,
            requires: match action {
                Action::Read => vec![Require::AnyUser],
                Action::Write => vec![Require::ValidUser],
                // The caller knows the admin group; on its own, nobody.
                Action::Admin => Vec::new(),
            },
        }
    }

    /// Whether anyone may, without logging in.
    pub fn allows_anonymous(&self) -> bool {
        self.requires.contains(&Require::AnyUser)
    }

    /// Whether some logged-in user could be allowed: if not, asking for
    /// credentials is pointless and the answer is 403.
    pub fn admits_someone(&self) -> bool {
        self.requires.iter().any(|r| match r {
            Require::AnyUser | Require::ValidUser => true,
            Require::Users(u) => !u.is_empty(),
            Require::Groups(g) => !g.is_empty(),
        })
    }

    /// Whether `user`, logged in, is allowed.
    pub fn admits(&self, user: &str, groups: Option<&Groups>) -> bool {
        self.requires.iter().any(|r| match r {
            Require::AnyUser | Require::ValidUser => true,
            Require::Users(names) => names.iter().any(|n| n == user),
            Require::Groups(names) => groups.is_some_and(|g| names.iter().any(|n| g.contains(n, user))),
        })
    }
}

fn unquote(s: &str) -> &str {
    let s = s.trim();
    s.strip_prefix('"').and_then(|s| s.strip_suffix('"')).unwrap_or(s)
}

impl AccessFile {
    /// Parses a `qtaccess` file read from `path`.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<AccessFile, FileError> {
        let dir = path.parent().unwrap_or(Path::new(""));
        let mut directives = Vec::new();
        let mut open_limit: Option<(usize, Actions)> = None;
        for (n, line) in users::lines(path, bytes)? {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |why: String| file_error(path, n, LineError::Syntax(why));
            let (word, rest) = line.split_once([' ', '\t']).unwrap_or((line, ""));
            let rest = rest.trim();
            let current = open_limit.map_or(Actions::READ, |(_, a)| a);
            match word.to_ascii_lowercase().as_str() {
                "<limit" | "<limit>" => {
                    if open_limit.is_some() {
                        return Err(err("a <Limit> inside a <Limit>".into()));
                    }
                    let inner = rest
                        .strip_suffix('>')
                        .ok_or_else(|| err("expected `<Limit READ WRITE>`, with READ and/or WRITE".into()))?;
                    let mut actions = Actions::default();
                    for w in inner.split_whitespace() {
                        actions.0 |= match w.to_ascii_uppercase().as_str() {
                            "READ" => Actions::READ.0,
                            "WRITE" => Actions::WRITE.0,
                            _ => return Err(err(format!("<Limit {w}>: only READ and WRITE are known"))),
                        };
                    }
                    if actions == Actions::default() {
                        return Err(err("<Limit> names no action (READ, WRITE)".into()));
                    }
                    open_limit = Some((n, actions));
                }
                "</limit>" => {
                    if open_limit.take().is_none() || !rest.is_empty() {
                        return Err(err("</Limit> without a <Limit>".into()));
                    }
                }
                "authname" => {
                    let realm = unquote(rest);
                    check_realm(realm).map_err(|why| err(format!("AuthName {why}")))?;
                    directives.push((current, Directive::AuthName(realm.to_owned())));
                }
                "authscheme" => {
                    let s = Scheme::parse(unquote(rest))
                        .ok_or_else(|| err(format!("AuthScheme {rest:?}: expected basic, digest or none")))?;
                    directives.push((current, Directive::AuthScheme(s)));
                }
                "authuserfile" | "authgroupfile" => {
                    let p = unquote(rest);
                    if p.is_empty() {
                        return Err(err(format!("{word} names no file")));
                    }
                    let p = dir.join(p);
                    directives.push((
                        current,
                        if word.eq_ignore_ascii_case("authuserfile") {
                            Directive::AuthUserFile(p)
                        } else {
                            Directive::AuthGroupFile(p)
                        },
                    ));
                }
                "require" => {
                    let mut words = rest.split_whitespace();
                    let kind = words.next().unwrap_or("");
                    let names: Vec<String> = words.map(str::to_owned).collect();
                    if let Some(bad) = names.iter().find(|n| !valid_name(n)) {
                        return Err(err(format!("require: bad name {bad:?}")));
                    }
                    let r = match (kind.to_ascii_lowercase().as_str(), names.is_empty()) {
                        ("any-user", true) => Require::AnyUser,
                        ("valid-user", true) => Require::ValidUser,
                        ("user", false) => Require::Users(names),
                        ("group", false) => Require::Groups(names),
                        ("user" | "group", true) => return Err(err(format!("require {kind} names no one"))),
                        ("any-user" | "valid-user", false) => {
                            return Err(err(format!("require {kind} takes no names")));
                        }
                        _ => {
                            return Err(err(format!(
                                "require {kind:?}: expected user, group, valid-user or any-user"
                            )))
                        }
                    };
                    directives.push((current, Directive::Require(r)));
                }
                _ => {
                    return Err(err(format!(
                        "unknown directive {:?} (known: AuthName, AuthScheme, AuthUserFile, AuthGroupFile, \
                         require, <Limit>)",
                        word.chars().take(40).collect::<String>()
                    )))
                }
            }
        }
        if let Some((n, _)) = open_limit {
            return Err(file_error(path, n, LineError::Syntax("<Limit> is never closed".into())));
        }
        Ok(AccessFile {
            path: path.to_owned(),
            directives,
        })
    }

    /// The rules this file sets for `action`. For each of `AuthName`,
    /// `AuthScheme` and the files, the last line wins, as in DSS.
    pub fn policy(&self, action: Action) -> Policy {
        let mut p = Policy {
            source: Source::File(self.path.clone()),
            realm: None,
            scheme: None,
            users_file: None,
            groups_file: None,
            requires: Vec::new(),
        };
        for (actions, d) in &self.directives {
            if !actions.contains(action) {
                continue;
            }
            match d {
                Directive::AuthName(r) => p.realm = Some(r.clone()),
                Directive::AuthScheme(s) => p.scheme = Some(*s),
                Directive::AuthUserFile(f) => p.users_file = Some(f.clone()),
                Directive::AuthGroupFile(f) => p.groups_file = Some(f.clone()),
                Directive::Require(r) => p.requires.push(r.clone()),
            }
        }
        p
    }
}

/// One `[[access.rule]]` of the config file (`[[access.access_rule]]` is
/// read too): the `qtaccess` rules for a path prefix, in TOML.
///
/// ```toml
/// [[access.rule]]
/// path = "/private"            # this folder (or file) and everything under it
/// methods = ["read"]           # read, write, admin; read and write when left out
/// users = ["alice"]
/// groups = ["staff"]
/// valid = false                # any user who logs in
/// any = false                  # anyone, without logging in
/// scheme = "digest"            # basic, digest, none
/// realm = "Members only"       # the Basic realm (AuthName)
/// ```
/// Unlike a `qtaccess` file, a rule counts only for the methods it lists: a
/// write-only rule leaves watching to whatever governs it otherwise.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RuleSettings {
    pub path: String,
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub valid: bool,
    #[serde(default)]
    pub any: bool,
    pub scheme: Option<Scheme>,
    pub realm: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("access rule for {path:?}: {why}")]
pub struct RuleError {
    pub path: String,
    pub why: String,
}

/// A checked config rule.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ConfigRule {
    prefix: String,
    segments: Vec<String>,
    actions: Actions,
    policy: Policy,
}

impl ConfigRule {
    fn check(r: &RuleSettings) -> Result<ConfigRule, RuleError> {
        let err = |why: String| RuleError {
            path: r.path.clone(),
            why,
        };
        let segments = segments(&r.path).ok_or_else(|| err("must be an absolute path without . or ..".into()))?;
        let mut actions = if r.methods.is_empty() {
            Actions::BOTH
        } else {
            Actions::default()
        };
        for m in &r.methods {
            actions.0 |= match m.to_ascii_lowercase().as_str() {
                "read" => Actions::READ.0,
                "write" => Actions::WRITE.0,
                "admin" => Actions::ADMIN.0,
                _ => return Err(err(format!("method {m:?}: expected read, write or admin"))),
            };
        }
        if let Some(bad) = r.users.iter().chain(&r.groups).find(|n| !valid_name(n)) {
            return Err(err(format!("bad name {bad:?}")));
        }
        if let Some(realm) = &r.realm {
            check_realm(realm).map_err(|why| err(format!("realm {why}")))?;
        }
        let mut requires = Vec::new();
        if r.any {
            requires.push(Require::AnyUser);
        }
        if r.valid {
            requires.push(Require::ValidUser);
        }
        if !r.users.is_empty() {
            requires.push(Require::Users(r.users.clone()));
        }
        if !r.groups.is_empty() {
            requires.push(Require::Groups(r.groups.clone()));
        }
        Ok(ConfigRule {
            prefix: r.path.clone(),
            segments,
            actions,
            policy: Policy {
                source: Source::Config(r.path.clone()),
                realm: r.realm.clone(),
                scheme: r.scheme,
                users_file: None,
                groups_file: None,
                requires,
            },
        })
    }
}

/// The segments of an absolute request path (`/a/b.mp4` is `[a, b.mp4]`;
/// repeated slashes collapse); `None` for a relative path or one with `.`
/// or `..` segments, which the caller must have refused already.
pub fn segments(path: &str) -> Option<Vec<String>> {
    let rest = path.strip_prefix('/')?;
    let segs: Vec<String> = rest.split('/').filter(|s| !s.is_empty()).map(str::to_owned).collect();
    if segs.iter().any(|s| s == "." || s == ".." || s.contains('\0')) {
        return None;
    }
    Some(segs)
}

/// Why a request path has no policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("request path {0:?} is not an absolute path inside the media root")]
    BadPath(String),
    #[error(transparent)]
    File(Arc<FileError>),
}

/// The access rules of one media tree: its `qtaccess` files (through a
/// cache) and the config's rules.
pub struct AccessTree {
    root: PathBuf,
    file_name: String,
    rules: Vec<ConfigRule>,
    cache: FileCache<AccessFile>,
}

impl AccessTree {
    /// `file_name` is the name of the per-folder files (`qtaccess`); an empty
    /// name disables them, leaving only the config's rules.
    pub fn new(
        root: PathBuf,
        file_name: &str,
        rules: &[RuleSettings],
        recheck_ns: Nanos,
    ) -> Result<AccessTree, RuleError> {
        Ok(AccessTree {
            root,
            file_name: file_name.to_owned(),
            rules: rules.iter().map(ConfigRule::check).collect::<Result<_, _>>()?,
            cache: FileCache::new(recheck_ns, 4096, AccessFile::parse),
        })
    }

    /// The policy for `action` on `path` (the request's path, `/a/b.mp4`,
    /// without query): the deepest config rule for that action or `qtaccess`
    /// file whose folder holds the path wins, never looking above the media
    /// root; a rule and a file for the same folder: the rule. A file that
    /// does not parse is an error, which the caller turns into a refusal.
    pub fn policy(
        &mut self,
        fs: &dyn FileSource,
        path: &str,
        action: Action,
        now: Nanos,
    ) -> Result<Policy, PolicyError> {
        let segs = segments(path).ok_or_else(|| PolicyError::BadPath(path.chars().take(200).collect()))?;
        // A rule's prefix may name the file itself (depth = all segments). A
        // qtaccess is looked for there too, in case the last segment is a
        // folder (`rtsp://host/private` naming the folder itself); under a
        // file that lookup finds nothing.
        for depth in (0..=segs.len()).rev() {
            let mut found: Option<Policy> = None;
            for r in self.rules.iter().filter(|r| r.actions.contains(action)) {
                if r.segments.len() == depth && r.segments[..] == segs[..depth] {
                    match &mut found {
                        None => found = Some(r.policy.clone()),
                        // Several rules for one prefix: their requirements add up.
                        Some(p) => {
                            p.requires.extend(r.policy.requires.iter().cloned());
                            p.realm = r.policy.realm.clone().or(p.realm.take());
                            p.scheme = r.policy.scheme.or(p.scheme);
                        }
                    }
                }
            }
            if let Some(p) = found {
                return Ok(p);
            }
            if self.file_name.is_empty() || action == Action::Admin {
                continue;
            }
            let mut file = self.root.clone();
            file.extend(&segs[..depth]);
            file.push(&self.file_name);
            match self.cache.get(fs, &file, now) {
                None => {}
                Some(Ok(f)) => return Ok(f.policy(action)),
                Some(Err(e)) => return Err(PolicyError::File(e)),
            }
        }
        Ok(Policy::default_for(action))
    }

    pub fn rule_prefixes(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| r.prefix.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::files::MemoryFs;

    fn parse(text: &str) -> Result<AccessFile, FileError> {
        AccessFile::parse(Path::new("/media/a/qtaccess"), text.as_bytes())
    }

    fn users(names: &[&str]) -> Require {
        Require::Users(names.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn dss_syntax_and_limit_blocks() {
        let f = parse(
            "# members\nAuthName \"Members only\"\nAuthScheme basic\nAuthUserFile users\n\
             AuthGroupFile /etc/streaming/qtgroups\nrequire user alice  bob\n\
             <Limit WRITE>\n  require group publishers\n  AuthScheme digest\n</Limit>\n\
             require valid-user\n<limit read write >\nrequire any-user\n</limit>\n",
        )
        .unwrap();
        let read = f.policy(Action::Read);
        assert_eq!(read.realm.as_deref(), Some("Members only"));
        assert_eq!(read.scheme, Some(Scheme::Basic));
        assert_eq!(read.users_file.as_deref(), Some(Path::new("/media/a/users")));
        assert_eq!(read.groups_file.as_deref(), Some(Path::new("/etc/streaming/qtgroups")));
        assert_eq!(
            read.requires,
            vec![users(&["alice", "bob"]), Require::ValidUser, Require::AnyUser]
        );
        let write = f.policy(Action::Write);
        // Outside <Limit> means READ only: the realm and files are not WRITE's.
        assert_eq!((write.realm, write.users_file), (None, None));
        assert_eq!(write.scheme, Some(Scheme::Digest));
        assert_eq!(
            write.requires,
            vec![Require::Groups(vec!["publishers".into()]), Require::AnyUser]
        );
    }

    #[test]
    fn a_file_governs_what_it_does_not_mention_by_refusing_it() {
        // Only a WRITE block: watching is covered by no require line.
        let f = parse("<Limit WRITE>\nrequire user pub\n</Limit>\n").unwrap();
        let read = f.policy(Action::Read);
        assert!(!read.admits_someone() && !read.allows_anonymous());
        assert!(f.policy(Action::Write).admits("pub", None));
    }

    #[test]
    fn policies_admit_users_and_groups() {
        let groups = Groups::parse(Path::new("g"), b"staff: carol\n").unwrap();
        let f = parse("require user alice\nrequire group staff\n").unwrap();
        let p = f.policy(Action::Read);
        assert!(p.admits("alice", None) && p.admits("carol", Some(&groups)));
        assert!(!p.admits("carol", None) && !p.admits("dave", Some(&groups)));
        assert!(!p.allows_anonymous() && p.admits_someone());
        let v = parse("require valid-user\n").unwrap().policy(Action::Read);
        assert!(v.admits("anyone", None) && !v.allows_anonymous());
    }

    #[test]
    fn broken_lines_name_file_and_line() {
        let line_of = |text: &str| {
            let e = parse(text).unwrap_err();
            assert_eq!(e.path, Path::new("/media/a/qtaccess"));
            assert!(matches!(e.kind, LineError::Syntax(_)), "{e}");
            e.line
        };
        assert_eq!(line_of("require user a\nrequire usr b\n"), 2);
        assert_eq!(line_of("# c\n\nrequire user\n"), 3);
        assert_eq!(line_of("require group\n"), 1);
        assert_eq!(line_of("require valid-user alice\n"), 1);
        assert_eq!(line_of("require user a:b\n"), 1);
        assert_eq!(line_of("require\n"), 1);
        assert_eq!(line_of("Allow from all\n"), 1);
        assert_eq!(line_of("AuthScheme ntlm\n"), 1);
        assert_eq!(line_of("AuthName\n"), 1);
        assert_eq!(line_of("AuthName \"a\"b\"\n"), 1);
        assert_eq!(line_of("AuthUserFile\n"), 1);
        assert_eq!(line_of("<Limit GET>\nrequire any-user\n</Limit>\n"), 1);
        assert_eq!(line_of("<Limit>\n</Limit>\n"), 1);
        assert_eq!(line_of("<Limit READ\n"), 1);
        assert_eq!(line_of("x\n<Limit READ>\nrequire any-user\n"), 1);
        assert_eq!(line_of("require any-user\n<Limit READ>\nrequire any-user\n"), 2);
        assert_eq!(line_of("<Limit READ>\n<Limit WRITE>\n"), 2);
        assert_eq!(line_of("</Limit>\n"), 1);
        let e = AccessFile::parse(Path::new("q"), b"require user \xff\n").unwrap_err();
        assert_eq!((e.line, e.kind), (1, LineError::NotUtf8));
    }

    fn tree(rules: &[RuleSettings]) -> AccessTree {
        AccessTree::new(PathBuf::from("/media"), DEFAULT_FILE_NAME, rules, 0).unwrap()
    }

    #[test]
    fn the_nearest_file_up_the_tree_wins_and_not_its_siblings() {
        let mut fs = MemoryFs::default();
        fs.put("/media/qtaccess", "require any-user\n");
        fs.put("/media/private/qtaccess", "require user alice\n");
        let mut t = tree(&[]);
        let pol = |t: &mut AccessTree, fs: &MemoryFs, p: &str| t.policy(fs, p, Action::Read, 0).unwrap();
        assert_eq!(pol(&mut t, &fs, "/private/movie.mp4").requires, vec![users(&["alice"])]);
        assert_eq!(
            pol(&mut t, &fs, "/private/sub/deeper/m.mp4").requires,
            vec![users(&["alice"])]
        );
        assert_eq!(
            pol(&mut t, &fs, "/private/movie.mp4/trackID=1").requires,
            vec![users(&["alice"])]
        );
        // The folder itself, with or without its trailing slash.
        assert_eq!(pol(&mut t, &fs, "/private").requires, vec![users(&["alice"])]);
        assert_eq!(pol(&mut t, &fs, "/private/").requires, vec![users(&["alice"])]);
        // A sibling folder and a name that merely starts the same are not under it.
        assert_eq!(pol(&mut t, &fs, "/public/m.mp4").requires, vec![Require::AnyUser]);
        assert_eq!(pol(&mut t, &fs, "/privateer/m.mp4").requires, vec![Require::AnyUser]);
        assert_eq!(
            pol(&mut t, &fs, "/m.mp4").source,
            Source::File("/media/qtaccess".into())
        );
        // Nothing above the media root counts.
        fs.put("/qtaccess", "require user root\n");
        fs.remove(Path::new("/media/qtaccess"));
        assert_eq!(pol(&mut t, &fs, "/m.mp4").source, Source::Default);
        // Files are noticed as they come and go.
        fs.put("/media/private/sub/qtaccess", "require user bob\n");
        assert_eq!(pol(&mut t, &fs, "/private/sub/m.mp4").requires, vec![users(&["bob"])]);
        assert!(t.policy(&fs, "relative", Action::Read, 0).is_err());
        assert!(t.policy(&fs, "/a/../b", Action::Read, 0).is_err());
    }

    #[test]
    fn defaults_open_watching_and_close_publishing() {
        let fs = MemoryFs::default();
        let mut t = tree(&[]);
        assert_eq!(
            t.policy(&fs, "/m.mp4", Action::Read, 0).unwrap().requires,
            vec![Require::AnyUser]
        );
        assert_eq!(
            t.policy(&fs, "/live/cam.sdp", Action::Write, 0).unwrap().requires,
            vec![Require::ValidUser]
        );
    }

    #[test]
    fn a_broken_file_fails_closed_for_everything_under_it() {
        let mut fs = MemoryFs::default();
        fs.put("/media/qtaccess", "require any-user\n");
        fs.put("/media/x/qtaccess", "require any-user\nrequire anyone\n");
        let mut t = tree(&[]);
        let e = t.policy(&fs, "/x/y/m.mp4", Action::Read, 0).unwrap_err();
        let PolicyError::File(e) = e else { panic!() };
        assert_eq!((e.path.as_path(), e.line), (Path::new("/media/x/qtaccess"), 2));
        assert!(t.policy(&fs, "/y/m.mp4", Action::Read, 0).is_ok());
    }

    #[test]
    fn config_rules_by_prefix_and_method() {
        let rule = |path: &str, methods: &[&str], users: &[&str]| RuleSettings {
            path: path.into(),
            methods: methods.iter().map(|s| s.to_string()).collect(),
            users: users.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        let mut fs = MemoryFs::default();
        fs.put(
            "/media/live/qtaccess",
            "require user fromfile\n<Limit WRITE>\nrequire user filepub\n</Limit>\n",
        );
        let mut t = tree(&[
            rule("/live", &["write"], &["pub"]),
            rule("/live", &["write"], &["pub2"]),
            rule("/live/cam1.sdp", &[], &["cam1"]),
            rule("/", &["read"], &["everyone"]),
        ]);
        // The write rules for /live add up, and beat the file in the same folder.
        let w = t.policy(&fs, "/live/cam2.sdp", Action::Write, 0).unwrap();
        assert_eq!(w.source, Source::Config("/live".into()));
        assert_eq!(w.requires, vec![users(&["pub"]), users(&["pub2"])]);
        // For reading, the write-only rule does not count: the file does.
        let r = t.policy(&fs, "/live/cam2.sdp", Action::Read, 0).unwrap();
        assert_eq!(r.requires, vec![users(&["fromfile"])]);
        // A rule may name one file.
        assert_eq!(
            t.policy(&fs, "/live/cam1.sdp", Action::Read, 0).unwrap().requires,
            vec![users(&["cam1"])]
        );
        assert_eq!(
            t.policy(&fs, "/other.mp4", Action::Read, 0).unwrap().requires,
            vec![users(&["everyone"])]
        );
        assert_eq!(
            t.policy(&fs, "/other.mp4", Action::Write, 0).unwrap().source,
            Source::Default
        );

        let bad = |r: RuleSettings| AccessTree::new("/m".into(), "qtaccess", &[r], 0).err().unwrap();
        assert!(bad(rule("relative", &[], &[])).why.contains("absolute"));
        assert!(bad(rule("/a/../b", &[], &[])).why.contains("absolute"));
        assert!(bad(rule("/a", &["publish"], &[])).why.contains("method"));
        assert!(bad(rule("/a", &[], &["a b"])).why.contains("bad name"));
        let toml_rules: Vec<RuleSettings> = toml::from_str::<std::collections::HashMap<String, Vec<RuleSettings>>>(
            "[[access_rule]]\npath = \"/p\"\nmethods = [\"read\"]\ngroups = [\"staff\"]\nscheme = \"basic\"\nrealm = \"R\"\n",
        )
        .unwrap()
        .remove("access_rule")
        .unwrap();
        assert_eq!(toml_rules[0].scheme, Some(Scheme::Basic));
        assert!(toml::from_str::<RuleSettings>("path = \"/p\"\nuser = [\"x\"]\n").is_err());
        let mut t = tree(&toml_rules);
        let p = t.policy(&fs, "/p/x.mp4", Action::Read, 0).unwrap();
        assert_eq!((p.realm.as_deref(), p.scheme), (Some("R"), Some(Scheme::Basic)));
    }

    #[test]
    fn admin_comes_only_from_config_rules() {
        let mut fs = MemoryFs::default();
        fs.put("/media/qtaccess", "require any-user\n");
        let mut t = tree(&[RuleSettings {
            path: "/metrics".into(),
            methods: vec!["admin".into()],
            any: true,
            ..Default::default()
        }]);
        assert!(t.policy(&fs, "/metrics", Action::Admin, 0).unwrap().allows_anonymous());
        let other = t.policy(&fs, "/api/x", Action::Admin, 0).unwrap();
        assert_eq!((other.source, other.requires), (Source::Default, vec![]));
        assert!(parse("<Limit ADMIN>\nrequire any-user\n</Limit>\n").is_err());
    }

    #[test]
    fn qtaccess_files_can_be_turned_off() {
        let mut fs = MemoryFs::default();
        fs.put("/media/qtaccess", "require user alice\n");
        let mut t = AccessTree::new("/media".into(), "", &[], 0).unwrap();
        assert_eq!(
            t.policy(&fs, "/m.mp4", Action::Read, 0).unwrap().source,
            Source::Default
        );
        let mut t = AccessTree::new("/media".into(), ".access", &[], 0).unwrap();
        fs.put("/media/.access", "require user bob\n");
        assert_eq!(
            t.policy(&fs, "/m.mp4", Action::Read, 0).unwrap().requires,
            vec![users(&["bob"])]
        );
    }
}
