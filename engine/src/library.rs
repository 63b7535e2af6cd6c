//! The media library: the movies under one directory, opened on demand by
//! request path and cached.
//!
//! A request path comes from the network, so turning it into a file is where
//! a server gets tricked into serving `/etc/passwd`. The rules, in order:
//!
//! 1. The path must start with `/`. It is split on `/` *before* decoding, so
//!    an encoded slash (`%2F`) cannot make a separator appear after the
//!    checks; since no file name can contain a slash, `%2F` is refused.
//! 2. Each segment is percent-decoded. Invalid escapes, non-UTF-8 names,
//!    NUL and other control characters, and backslashes (raw or encoded) are
//!    refused: no legitimate movie name needs them, and some of them mean
//!    something to other layers (C strings, Windows paths, terminals).
//! 3. Segments `.` and `..` (raw or encoded, like `%2e%2e`) and empty segments
//!    (`//etc/passwd`) are refused. A single trailing `/` is tolerated, since
//!    clients append one to aggregate URLs.
//! 4. The segments are joined onto the canonical root and the result is
//!    canonicalized. If it lies outside the root (a symlink pointing out),
//!    the answer is 404, the same as for a missing file, so a client cannot
//!    probe what exists elsewhere. Symlinks that stay inside the root are
//!    followed: operators use them to alias movies.
//! 5. Only regular files are opened. Directories, FIFOs and devices are 404
//!    (opening a FIFO would block the control core forever).
//!
//! Between the check and the open, someone who can write to the library
//! could swap a directory for a symlink; the library directory is trusted to
//! be writable only by its operator.
//!
//! # One library for every core
//!
//! The server has one `Library`, shared by the control core and every shard
//! (`Arc<Library>`; the cache is behind a mutex held only for map lookups),
//! so each file is mapped and indexed once, whichever core asks first.
//! Opened movies are cached by canonical path together with the file's
//! identity (device, inode, size, modification time), re-read with one
//! `stat` on every lookup: that check is cheap and runs on the caller's
//! core. A file replaced by rename or rewritten is opened again; sessions
//! already playing keep the old `Arc<Movie>` (and its mapping of the old
//! file) until they end. Files that fail to open as a movie are cached the
//! same way, so a damaged file is parsed and warned about once per version,
//! not on every request.
//!
//! Indexing a movie is not cheap (about 25 ms for a cold two-hour movie), so
//! [`Library::lookup`] never does it: a movie not indexed yet comes back as a
//! [`Parse`] to run where blocking does no harm (the server runs it on a
//! thread of glommio's blocking pool, which it places on the control core's
//! CPU, away from the pacing shards). Concurrent lookups of one file version
//! share one `Parse` slot: the first to run it indexes the file, the others
//! wait for that result.
//!
//! [`Library::prune`], which the control core calls on a timer, drops the
//! entries of files that are gone or changed, and of movies no session holds
//! and nobody asked for in a while, so that their mappings and indexes are
//! released.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use loader::mp3::Mp3;
use loader::Movie;
use tracing::{debug, warn};

/// Why a request path does not lead to a movie. [`LibraryError::status`] is
/// the RTSP status to answer with; `Display` is meant for logs and escapes
/// whatever the client sent.
#[derive(Debug, thiserror::Error)]
pub enum LibraryError {
    /// 400: the path is malformed or tries to leave the library.
    #[error("bad request path {}: {why}", Escaped(path))]
    BadPath { path: String, why: &'static str },
    /// 404: nothing streamable by that name inside the library.
    #[error("not found: {}: {why}", Escaped(path))]
    NotFound { path: String, why: &'static str },
    /// 403: the file exists in the library but the server may not read it.
    #[error("permission denied: {}", Escaped(path))]
    Forbidden { path: String },
    /// 415: the file is not a movie the server can stream: not hinted,
    /// not a QuickTime/ISO file at all, or damaged.
    #[error("cannot stream {}: {source}", Escaped(path))]
    Unsupported {
        path: String,
        #[source]
        source: Arc<loader::Error>,
    },
    /// 415: the file was asked for as MP3 (an Icecast listener's request)
    /// but is not MPEG audio: no run of frames, or free format.
    #[error("cannot stream {} as MP3: {source}", Escaped(path))]
    NotMp3 {
        path: String,
        #[source]
        source: Arc<loader::mp3::Error>,
    },
    /// 500: the file system failed in a way that is not the client's doing.
    #[error("cannot read {}: {source}", Escaped(path))]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
}

impl LibraryError {
    /// The RTSP status code to answer with.
    ///
    /// Files that are not hinted, or that do not parse, are 415 Unsupported
    /// Media Type, as DSS answered: the resource exists but is not something
    /// this server can stream, and retrying will not help (a 5xx invites
    /// retries). The operator learns of damaged files from the warning the
    /// library logs once per file version. 500 is kept for failures of the
    /// machine itself (I/O errors, mapping failures).
    pub fn status(&self) -> u16 {
        match self {
            LibraryError::BadPath { .. } => 400,
            LibraryError::Forbidden { .. } => 403,
            LibraryError::NotFound { .. } => 404,
            LibraryError::Unsupported { .. } | LibraryError::NotMp3 { .. } => 415,
            LibraryError::Io { .. } => 500,
        }
    }

    /// Whether the file is a well-formed movie that simply has no RTP hint
    /// tracks (so a hint to run a hinter is in order).
    pub fn is_not_hinted(&self) -> bool {
        matches!(self, LibraryError::Unsupported { source, .. } if matches!(**source, loader::Error::NoHintTracks))
    }
}

/// Displays a client-supplied string for a log line: quoted, with control
/// characters, quotes and non-ASCII escaped, and cut short if long.
struct Escaped<'a>(&'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MAX: usize = 256;
        let mut end = self.0.len().min(MAX);
        while !self.0.is_char_boundary(end) {
            end -= 1;
        }
        write!(f, "\"{}", self.0[..end].escape_default())?;
        if end < self.0.len() {
            f.write_str("...")?;
        }
        f.write_str("\"")
    }
}

/// What identifies one version of a file, cheaply: a rename over it changes
/// the inode, a rewrite changes the size or the modification time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: Option<SystemTime>,
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Stamp {
        #[cfg(unix)]
        let (dev, ino) = {
            use std::os::unix::fs::MetadataExt;
            (meta.dev(), meta.ino())
        };
        #[cfg(not(unix))]
        let (dev, ino) = (0, 0);
        Stamp {
            dev,
            ino,
            len: meta.len(),
            mtime: meta.modified().ok(),
        }
    }
}

/// A kind of file the library opens and caches: movies, and MP3 files for
/// Icecast listeners. Each kind has a cache of its own, with the same rules.
pub trait Media: Sized + Send + Sync + 'static {
    type Error: std::error::Error + Send + Sync + 'static;
    /// Maps and indexes the file (blocking).
    fn open(file: &Path) -> Result<Self, Self::Error>;
    /// The file system's error, when that is why `open` failed: such
    /// failures are not cached.
    fn io_error(e: &Self::Error) -> Option<&io::Error>;
    /// The error for a request path whose file is not of this kind.
    fn unsupported(path: String, source: Arc<Self::Error>) -> LibraryError;
}

impl Media for Movie {
    type Error = loader::Error;

    fn open(file: &Path) -> Result<Movie, loader::Error> {
        Movie::open(file)
    }

    fn io_error(e: &loader::Error) -> Option<&io::Error> {
        match e {
            loader::Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }

    fn unsupported(path: String, source: Arc<loader::Error>) -> LibraryError {
        LibraryError::Unsupported { path, source }
    }
}

impl Media for Mp3 {
    type Error = loader::mp3::Error;

    fn open(file: &Path) -> Result<Mp3, loader::mp3::Error> {
        let mp3 = Mp3::open(file)?;
        // Damage that was stepped over is the operator's to know about, once
        // per file version; the file still plays.
        for p in mp3.problems() {
            warn!(file = %file.display(), problem = %p, "damaged MP3 file");
        }
        Ok(mp3)
    }

    fn io_error(e: &loader::mp3::Error) -> Option<&io::Error> {
        match e {
            loader::mp3::Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }

    fn unsupported(path: String, source: Arc<loader::mp3::Error>) -> LibraryError {
        LibraryError::NotMp3 { path, source }
    }
}

struct Entry<T: Media> {
    stamp: Stamp,
    slot: Arc<Slot<T>>,
    /// When a lookup last asked for it.
    last_used: Instant,
}

/// One version of one file: indexed once, by whoever runs its [`Parse`]
/// first.
struct Slot<T: Media> {
    file: PathBuf,
    opened: OnceLock<Result<Arc<T>, Failure<T::Error>>>,
}

/// Why a file version could not be opened.
enum Failure<E> {
    /// Not a file of its kind this server can stream: cached, answered 415.
    Unsupported(Arc<E>),
    /// The file system failed (the file vanished between the `stat` and the
    /// open, say): not cached, the next lookup tries again. Kept as its
    /// error code to be rebuilt for every waiter.
    Io(io::ErrorKind, Option<i32>),
}

impl<T: Media> Slot<T> {
    fn failed_io(&self) -> bool {
        matches!(self.opened.get(), Some(Err(Failure::Io(..))))
    }
}

/// What a lookup found.
pub enum Lookup<T: Media = Movie> {
    /// The movie (or MP3 file), indexed.
    Ready(Arc<T>),
    /// A file version not indexed yet: [`Parse::run`] indexes it (or waits
    /// for the lookup that got there first to finish), blocking.
    Parse(Parse<T>),
}

/// A file to index before it can be served. Send it where blocking is
/// harmless and run it there.
pub struct Parse<T: Media = Movie> {
    slot: Arc<Slot<T>>,
    path: String,
}

impl<T: Media> Parse<T> {
    /// Indexes the file, or waits for the parse already under way for this
    /// version, and returns it or why there is none.
    pub fn run(self) -> Result<Arc<T>, LibraryError> {
        let slot = &self.slot;
        let opened = slot.opened.get_or_init(|| match T::open(&slot.file) {
            Ok(m) => Ok(Arc::new(m)),
            Err(e) => match T::io_error(&e) {
                Some(source) => Err(Failure::Io(source.kind(), source.raw_os_error())),
                None => {
                    warn!(file = %slot.file.display(), error = %e, "cannot stream this file");
                    Err(Failure::Unsupported(Arc::new(e)))
                }
            },
        });
        answer(&self.path, opened)
    }
}

fn answer<T: Media>(path: &str, opened: &Result<Arc<T>, Failure<T::Error>>) -> Result<Arc<T>, LibraryError> {
    match opened {
        Ok(m) => Ok(m.clone()),
        Err(Failure::Unsupported(source)) => Err(T::unsupported(path.to_owned(), source.clone())),
        Err(Failure::Io(kind, code)) => {
            let e = code.map_or_else(|| io::Error::from(*kind), io::Error::from_raw_os_error);
            Err(fs_error(path, e))
        }
    }
}

type Cache<T> = Mutex<HashMap<PathBuf, Entry<T>>>;

/// The media files under one directory, shared by every core.
pub struct Library {
    root: PathBuf,
    cache: Cache<Movie>,
    mp3s: Cache<Mp3>,
}

/// A cache. A panic while it was held leaves nothing half-done in it (every
/// change is one map operation), so a poisoned lock is used as is.
fn lock<T: Media>(cache: &Cache<T>) -> MutexGuard<'_, HashMap<PathBuf, Entry<T>>> {
    cache.lock().unwrap_or_else(|e| e.into_inner())
}

impl Library {
    /// A library rooted at `root`, which must be an existing directory.
    pub fn new(root: PathBuf) -> io::Result<Library> {
        let root = std::fs::canonicalize(&root)?;
        if !root.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a directory", root.display()),
            ));
        }
        Ok(Library {
            root,
            cache: Mutex::new(HashMap::new()),
            mp3s: Mutex::new(HashMap::new()),
        })
    }

    /// The canonical root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// How many file versions are cached (movies, MP3 files and failures,
    /// indexed or being indexed).
    pub fn cached(&self) -> usize {
        lock(&self.cache).len() + lock(&self.mp3s).len()
    }

    /// The movie at a request path such as `/sample.mp4` or
    /// `/dir/clip%20one.mov` (the URL's path, without scheme, host, query or
    /// track suffix), indexing it here if it is not yet: for callers that may
    /// block (tools, tests). The server uses [`lookup`](Self::lookup).
    pub fn open(&self, path: &str) -> Result<Arc<Movie>, LibraryError> {
        match self.lookup(path)? {
            Lookup::Ready(m) => Ok(m),
            Lookup::Parse(p) => p.run(),
        }
    }

    /// The file at a request path, by the same rules as a movie's (inside
    /// the root, a regular file), for files the library does not index
    /// itself: a broadcast's `.sdp`.
    pub fn file(&self, path: &str) -> Result<PathBuf, LibraryError> {
        let relative = decode_path(path).map_err(|why| LibraryError::BadPath {
            path: path.to_owned(),
            why,
        })?;
        let canonical = std::fs::canonicalize(self.root.join(&relative)).map_err(|e| fs_error(path, e))?;
        let meta = std::fs::metadata(&canonical).map_err(|e| fs_error(path, e))?;
        if !canonical.starts_with(&self.root) || !meta.is_file() {
            return Err(LibraryError::NotFound {
                path: path.to_owned(),
                why: "no such file",
            });
        }
        Ok(canonical)
    }

    /// Finds the movie at a request path without indexing anything: checks
    /// the path, `stat`s the file and looks the version up. A version not
    /// indexed yet comes back as a [`Parse`] to run off the pacing cores; a
    /// file that changed since it was cached is a new version.
    pub fn lookup(&self, path: &str) -> Result<Lookup, LibraryError> {
        self.lookup_in(&self.cache, path)
    }

    /// As [`lookup`](Self::lookup), for an MP3 file (MPEG audio), indexed
    /// by `loader::mp3`: what an Icecast listener asks for. A file that is
    /// not MPEG audio is [`LibraryError::NotMp3`].
    pub fn lookup_mp3(&self, path: &str) -> Result<Lookup<Mp3>, LibraryError> {
        self.lookup_in(&self.mp3s, path)
    }

    /// As [`lookup`](Self::lookup), for a movie named by its file rather
    /// than by a request path: a channel's playlist names files by the
    /// operator's configuration, inside the media folder or not. The movie
    /// shares the cache with the request paths' (one mapping for a channel
    /// and the VoD sessions of the same file), so [`check_files`]
    /// (Self::check_files) watches it and a changed file is a new version.
    pub fn lookup_file(&self, file: &Path) -> Result<Lookup, LibraryError> {
        let shown = file.display().to_string();
        let canonical = std::fs::canonicalize(file).map_err(|e| fs_error(&shown, e))?;
        self.lookup_version(&self.cache, canonical, &shown)
    }

    fn lookup_in<T: Media>(&self, cache: &Cache<T>, path: &str) -> Result<Lookup<T>, LibraryError> {
        let relative = decode_path(path).map_err(|why| LibraryError::BadPath {
            path: path.to_owned(),
            why,
        })?;
        let candidate = self.root.join(&relative);
        let canonical = match std::fs::canonicalize(&candidate) {
            Ok(c) => c,
            Err(e) => {
                // Gone: let go of the old mapping so the disk space is freed.
                // (The key is canonical; with no symlinks on the way the
                // candidate is that key.)
                lock(cache).remove(&candidate);
                return Err(fs_error(path, e));
            }
        };
        if !canonical.starts_with(&self.root) {
            debug!(path = %Escaped(path), target = %canonical.display(), "request path resolves outside the library");
            return Err(LibraryError::NotFound {
                path: path.to_owned(),
                why: "no such movie",
            });
        }
        self.lookup_version(cache, canonical, path)
    }

    /// The cached version of `canonical` (a file's canonical path), or the
    /// [`Parse`] that indexes it; `path` names it in errors.
    fn lookup_version<T: Media>(
        &self,
        cache: &Cache<T>,
        canonical: PathBuf,
        path: &str,
    ) -> Result<Lookup<T>, LibraryError> {
        let meta = match std::fs::metadata(&canonical) {
            Ok(m) => m,
            Err(e) => {
                lock(cache).remove(&canonical);
                return Err(fs_error(path, e));
            }
        };
        if !meta.is_file() {
            return Err(LibraryError::NotFound {
                path: path.to_owned(),
                why: "not a regular file",
            });
        }
        let stamp = Stamp::of(&meta);
        let now = Instant::now();
        let slot = {
            let mut cache = lock(cache);
            match cache.get_mut(&canonical) {
                Some(entry) if entry.stamp == stamp && !entry.slot.failed_io() => {
                    entry.last_used = now;
                    entry.slot.clone()
                }
                _ => {
                    // Stat before open: if the file changes in between, the
                    // stored stamp is stale and the next lookup opens it again.
                    let slot = Arc::new(Slot {
                        file: canonical.clone(),
                        opened: OnceLock::new(),
                    });
                    let entry = Entry {
                        stamp,
                        slot: slot.clone(),
                        last_used: now,
                    };
                    cache.insert(canonical, entry);
                    slot
                }
            }
        };
        match slot.opened.get() {
            Some(opened) => answer(path, opened).map(Lookup::Ready),
            None => Ok(Lookup::Parse(Parse {
                slot,
                path: path.to_owned(),
            })),
        }
    }

    /// Looks for movies whose file changed under their mapping (truncated or
    /// rewritten in place, rather than replaced by rename) and marks them
    /// damaged, so that their sessions end before they read what is gone;
    /// returns the paths newly found so. Each opened movie costs one `stat`,
    /// made without the lock. The next lookup of such a path sees a new
    /// file version and indexes it afresh.
    pub fn check_files(&self) -> Vec<PathBuf> {
        let movies: Vec<Arc<Movie>> = lock(&self.cache)
            .values()
            .filter_map(|e| match e.slot.opened.get() {
                Some(Ok(movie)) if !movie.is_damaged() => Some(movie.clone()),
                _ => None,
            })
            .collect();
        movies
            .into_iter()
            .filter(|m| m.check_file())
            .filter_map(|m| m.path().map(Path::to_path_buf))
            .collect()
    }

    /// Drops the cached entries whose file is gone or has changed, and those
    /// of files that no session or listener holds and no lookup has asked
    /// for since `now - unused_for`, releasing their mappings and indexes.
    /// Returns how many were dropped. Each entry costs one `stat`, made
    /// without the lock.
    pub fn prune(&self, now: Instant, unused_for: Duration) -> usize {
        prune(&self.cache, now, unused_for) + prune(&self.mp3s, now, unused_for)
    }
}

fn prune<T: Media>(cache: &Cache<T>, now: Instant, unused_for: Duration) -> usize {
    let files: Vec<(PathBuf, Stamp)> = lock(cache).iter().map(|(p, e)| (p.clone(), e.stamp)).collect();
    let changed: Vec<PathBuf> = files
        .into_iter()
        .filter(|(path, stamp)| !std::fs::metadata(path).is_ok_and(|m| m.is_file() && Stamp::of(&m) == *stamp))
        .map(|(path, _)| path)
        .collect();
    let mut cache = lock(cache);
    let before = cache.len();
    for path in &changed {
        cache.remove(path);
    }
    cache.retain(|_, e| {
        let recent = now.saturating_duration_since(e.last_used) < unused_for;
        let held = match e.slot.opened.get() {
            Some(Ok(file)) => Arc::strong_count(file) > 1,
            Some(Err(_)) => false,
            // Being indexed: someone is waiting for it.
            None => true,
        };
        recent || held
    });
    before - cache.len()
}

fn fs_error(path: &str, e: io::Error) -> LibraryError {
    let path = path.to_owned();
    if e.kind() == io::ErrorKind::PermissionDenied {
        return LibraryError::Forbidden { path };
    }
    let why = match e.raw_os_error() {
        _ if e.kind() == io::ErrorKind::NotFound => "no such movie",
        Some(libc::ENOTDIR) => "no such movie",
        Some(libc::ENAMETOOLONG) => "name too long",
        // A symlink loop is the library's misconfiguration but, like a
        // symlink pointing out, nothing the client may learn about.
        Some(libc::ELOOP) => "symlink loop",
        _ => return LibraryError::Io { path, source: e },
    };
    LibraryError::NotFound { path, why }
}

/// Turns a request path into a relative path of plain file names, or says
/// why it cannot be one. See the module documentation for the rules.
fn decode_path(path: &str) -> Result<PathBuf, &'static str> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err("does not start with `/`");
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Err("names no file");
    }
    let mut out = PathBuf::new();
    for raw in rest.split('/') {
        if raw.is_empty() {
            return Err("has an empty segment (`//`)");
        }
        let bytes = percent_decode(raw)?;
        if bytes.contains(&b'/') {
            return Err("has an encoded `/`");
        }
        if bytes.contains(&0) {
            return Err("has a NUL");
        }
        if bytes.contains(&b'\\') {
            return Err("has a backslash");
        }
        if bytes.iter().any(|&b| b < 0x20 || b == 0x7f) {
            return Err("has a control character");
        }
        let name = String::from_utf8(bytes).map_err(|_| "is not UTF-8")?;
        if name == "." || name == ".." {
            return Err("has a `.` or `..` segment");
        }
        if name.chars().any(char::is_control) {
            return Err("has a control character");
        }
        out.push(name);
    }
    Ok(out)
}

/// Whether the library would look `path` up at all: `false` for a path it
/// refuses outright (400: escapes, bad escapes, encoded `/`, ...).
pub fn is_plain_path(path: &str) -> bool {
    decode_path(path).is_ok()
}

/// A request path percent-decoded as a whole, as the access rules see it;
/// `None` when it has a bad escape or is not UTF-8 (the library refuses such
/// a path anyway).
pub fn percent_decoded(path: &str) -> Option<String> {
    String::from_utf8(percent_decode(path).ok()?).ok()
}

fn percent_decode(s: &str) -> Result<Vec<u8>, &'static str> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = |c: u8| (c as char).to_digit(16);
            match (b.get(i + 1).copied().and_then(hex), b.get(i + 2).copied().and_then(hex)) {
                (Some(h), Some(l)) => out.push((h * 16 + l) as u8),
                _ => return Err("has an invalid percent escape"),
            }
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hinted sample movie every checkout has.
    fn sample() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../media/sample.mp4")
    }

    /// A fresh directory per test: `root/` is the library, `outside/` is not.
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("streamalot-library-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("root/dir")).unwrap();
        std::fs::create_dir_all(dir.join("outside")).unwrap();
        dir
    }

    fn status(lib: &Library, path: &str) -> u16 {
        match lib.open(path) {
            Ok(_) => 200,
            Err(e) => {
                // Whatever the client sent, the log line stays one line.
                let text = e.to_string();
                assert!(!text.chars().any(char::is_control), "{text:?}");
                e.status()
            }
        }
    }

    #[test]
    fn decodes_paths() {
        assert_eq!(decode_path("/sample.mp4"), Ok(PathBuf::from("sample.mp4")));
        assert_eq!(
            decode_path("/dir/clip%20one.mov"),
            Ok(PathBuf::from("dir/clip one.mov"))
        );
        assert_eq!(decode_path("/dir/caf%C3%A9.mp4/"), Ok(PathBuf::from("dir/café.mp4")));
        assert_eq!(
            decode_path("/a+b.mp4"),
            Ok(PathBuf::from("a+b.mp4")),
            "`+` is not a space in a path"
        );
        for bad in [
            "",
            "sample.mp4",
            "/",
            "//etc/passwd",
            "/a//b",
            "/../x",
            "/a/../../x",
            "/%2e%2e/x",
            "/%2E%2E",
            "/./x",
            "/%2e/x",
            "/a/%2E%2E%2Fb",
            "/a%2fb",
            "/a%00.mp4",
            "/a\0.mp4",
            "/a\\..\\b",
            "/a%5c..%5cb",
            "/a%0a.mp4",
            "/a\r\n.mp4",
            "/a%7f",
            "/a%c2%85",
            "/a%ff.mp4",
            "/a%2",
            "/a%zz",
            "/a%",
        ] {
            assert!(decode_path(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn opens_and_refuses() {
        let dir = scratch("open");
        let root = dir.join("root");
        std::fs::copy(sample(), root.join("sample.mp4")).unwrap();
        std::fs::copy(sample(), root.join("dir/clip one.mp4")).unwrap();
        std::fs::copy(sample(), dir.join("outside/secret.mp4")).unwrap();
        std::fs::write(root.join("garbage.mov"), b"\0\0\0\x08junkthis is not a movie at all").unwrap();
        std::os::unix::fs::symlink(dir.join("outside/secret.mp4"), root.join("escape.mp4")).unwrap();
        std::os::unix::fs::symlink(dir.join("outside"), root.join("out")).unwrap();
        std::os::unix::fs::symlink("sample.mp4", root.join("alias.mp4")).unwrap();
        std::os::unix::fs::symlink("loop.mp4", root.join("loop.mp4")).unwrap();

        let lib = Library::new(root.clone()).unwrap();
        assert_eq!(lib.root(), root.canonicalize().unwrap());
        assert_eq!(status(&lib, "/sample.mp4"), 200);
        assert_eq!(status(&lib, "/dir/clip%20one.mp4"), 200);
        assert_eq!(status(&lib, "/alias.mp4"), 200, "symlinks inside the root are followed");
        // One cache entry per file: the alias shares the sample's.
        assert_eq!(lib.cached(), 2);
        let a = lib.open("/sample.mp4").unwrap();
        let b = lib.open("/alias.mp4").unwrap();
        assert!(Arc::ptr_eq(&a, &b));

        assert_eq!(status(&lib, "/missing.mp4"), 404);
        assert_eq!(status(&lib, "/dir"), 404, "directories are not movies");
        assert_eq!(status(&lib, "/dir/"), 404);
        assert_eq!(status(&lib, "/sample.mp4/x"), 404);
        assert_eq!(status(&lib, "/escape.mp4"), 404, "a symlink out of the root");
        assert_eq!(
            status(&lib, "/out/secret.mp4"),
            404,
            "a directory symlink out of the root"
        );
        assert_eq!(status(&lib, "/loop.mp4"), 404);
        assert_eq!(status(&lib, "/../outside/secret.mp4"), 400);
        assert_eq!(status(&lib, "/%2e%2e/outside/secret.mp4"), 400);
        assert_eq!(status(&lib, "/dir/%2E%2E%2F%2E%2E%2Foutside/secret.mp4"), 400);
        assert_eq!(status(&lib, "//etc/passwd"), 400);
        assert_eq!(status(&lib, "/dir\\..\\sample.mp4"), 400);
        assert_eq!(status(&lib, "/sample.mp4%00.txt"), 400);
        assert_eq!(status(&lib, "/\x1b[31mred\n"), 400);

        let err = lib.open("/garbage.mov").unwrap_err();
        assert_eq!(err.status(), 415, "{err}");
        assert!(!err.is_not_hinted());
        // Failures are cached too, and answered the same.
        assert_eq!(status(&lib, "/garbage.mov"), 415);
    }

    #[cfg(unix)]
    #[test]
    fn fifos_are_not_opened() {
        let dir = scratch("fifo");
        let fifo = dir.join("root/pipe.mp4");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: `c` is a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let lib = Library::new(dir.join("root")).unwrap();
        // Would block forever if the library tried to open it.
        assert_eq!(status(&lib, "/pipe.mp4"), 404);
    }

    #[test]
    fn not_hinted_is_415() {
        let Some(plain) = unhinted_movie() else {
            eprintln!("skipped: ffmpeg is not installed");
            return;
        };
        let dir = scratch("unhinted");
        std::fs::copy(&plain, dir.join("root/plain.mp4")).unwrap();
        let _ = std::fs::remove_file(plain);
        let lib = Library::new(dir.join("root")).unwrap();
        let err = lib.open("/plain.mp4").unwrap_err();
        assert_eq!(err.status(), 415);
        assert!(err.is_not_hinted(), "{err}");
    }

    /// A tiny valid movie without hint tracks, made by ffmpeg when present.
    fn unhinted_movie() -> Option<PathBuf> {
        let out = std::env::temp_dir().join(format!("streamalot-library-{}-plain.mp4", std::process::id()));
        let ok = std::process::Command::new("ffmpeg")
            .args(["-v", "error", "-y", "-f", "lavfi", "-i", "color=c=black:s=64x64:d=0.2"])
            .args(["-c:v", "mpeg4"])
            .arg(&out)
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(out)
    }

    #[test]
    fn reopens_a_replaced_file() {
        let dir = scratch("replace");
        let root = dir.join("root");
        std::fs::copy(sample(), root.join("movie.mp4")).unwrap();
        let lib = Library::new(root.clone()).unwrap();
        let first = lib.open("/movie.mp4").unwrap();
        let again = lib.open("/movie.mp4").unwrap();
        assert!(Arc::ptr_eq(&first, &again), "unchanged: served from the cache");

        // Replace it by rename, the way a careful operator updates a movie.
        std::fs::write(dir.join("new.mp4"), b"not a movie").unwrap();
        std::fs::rename(dir.join("new.mp4"), root.join("movie.mp4")).unwrap();
        assert_eq!(lib.open("/movie.mp4").unwrap_err().status(), 415);
        // The session that had the old one still has a working movie.
        assert!(!first.sdp().is_empty());

        std::fs::copy(sample(), dir.join("new.mp4")).unwrap();
        std::fs::rename(dir.join("new.mp4"), root.join("movie.mp4")).unwrap();
        let third = lib.open("/movie.mp4").unwrap();
        assert!(!Arc::ptr_eq(&first, &third));
        assert_eq!(lib.cached(), 1);

        // Deleted: refused, and the cache lets go of it.
        std::fs::remove_file(root.join("movie.mp4")).unwrap();
        assert_eq!(status(&lib, "/movie.mp4"), 404);
        assert_eq!(lib.cached(), 0);
    }

    #[test]
    fn prune_drops_changed_files() {
        let dir = scratch("prune");
        let root = dir.join("root");
        std::fs::copy(sample(), root.join("a.mp4")).unwrap();
        std::fs::copy(sample(), root.join("b.mp4")).unwrap();
        let lib = Library::new(root.clone()).unwrap();
        lib.open("/a.mp4").unwrap();
        lib.open("/b.mp4").unwrap();
        let forever = Duration::from_secs(1 << 30);
        assert_eq!(lib.prune(Instant::now(), forever), 0);
        std::fs::remove_file(root.join("a.mp4")).unwrap();
        assert_eq!(lib.prune(Instant::now(), forever), 1);
        assert_eq!(lib.cached(), 1);
    }

    #[test]
    fn prune_evicts_movies_nobody_holds_or_asked_for_lately() {
        let dir = scratch("evict");
        let root = dir.join("root");
        for name in ["held.mp4", "idle.mp4", "asked.mp4"] {
            std::fs::copy(sample(), root.join(name)).unwrap();
        }
        std::fs::write(root.join("junk.mov"), b"not a movie").unwrap();
        let lib = Library::new(root.clone()).unwrap();
        let held = lib.open("/held.mp4").unwrap();
        lib.open("/idle.mp4").unwrap();
        assert_eq!(lib.open("/junk.mov").unwrap_err().status(), 415);
        let minute = Duration::from_secs(60);
        // Just asked for: everything stays.
        assert_eq!(lib.prune(Instant::now(), minute), 0);
        // Opened and let go of at once, like a DESCRIBE.
        lib.open("/asked.mp4").unwrap();
        // Seen from two minutes on, every entry was last asked for two
        // minutes before.
        let later = Instant::now() + 2 * minute;
        assert_eq!(lib.prune(later, 3 * minute), 0, "all within three minutes");
        assert_eq!(
            lib.prune(later, minute),
            3,
            "idle, asked and the failure go; the held one stays"
        );
        assert_eq!(lib.cached(), 1);
        let again = lib.open("/held.mp4").unwrap();
        assert!(Arc::ptr_eq(&held, &again), "the held movie was not indexed again");
        drop((held, again));
        assert_eq!(
            lib.prune(Instant::now() + 2 * minute, minute),
            1,
            "let go of, it goes too"
        );
        assert_eq!(lib.cached(), 0);
    }

    #[test]
    fn a_lookup_never_indexes_and_concurrent_opens_index_once() {
        let dir = scratch("once");
        let root = dir.join("root");
        std::fs::copy(sample(), root.join("movie.mp4")).unwrap();
        let lib = Arc::new(Library::new(root).unwrap());
        let parse = match lib.lookup("/movie.mp4").unwrap() {
            Lookup::Parse(p) => p,
            Lookup::Ready(_) => panic!("indexed by a lookup"),
        };
        // A second lookup before the first parse ran shares its slot.
        let second = match lib.lookup("/movie.mp4").unwrap() {
            Lookup::Parse(p) => p,
            Lookup::Ready(_) => panic!("indexed by a lookup"),
        };
        assert!(Arc::ptr_eq(&parse.slot, &second.slot));
        let barrier = Arc::new(std::sync::Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (lib, barrier) = (lib.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    lib.open("/movie.mp4").unwrap()
                })
            })
            .collect();
        let movies: Vec<Arc<Movie>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert!(
            movies.windows(2).all(|w| Arc::ptr_eq(&w[0], &w[1])),
            "one index for all"
        );
        assert!(Arc::ptr_eq(&parse.run().unwrap(), &movies[0]));
        assert!(matches!(lib.lookup("/movie.mp4").unwrap(), Lookup::Ready(m) if Arc::ptr_eq(&m, &movies[0])));
        assert_eq!(lib.cached(), 1);
    }

    #[test]
    fn root_must_be_a_directory() {
        let dir = scratch("root");
        assert!(Library::new(dir.join("absent")).is_err());
        std::fs::write(dir.join("file"), b"x").unwrap();
        assert!(Library::new(dir.join("file")).is_err());
    }
}
