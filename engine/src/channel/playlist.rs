//! Playlist files: DSS's `*PLAY-LIST*` format and M3U/M3U8, read into an
//! owned [`Playlist`].
//!
//! # DSS playlists
//!
//! As DSS's PlaylistBroadcaster read them (`PickerFromFile.cpp`):
//!
//! ```text
//! *PLAY-LIST*
//! # comments start with '#'
//! /music/jazz/take5.mov 2
//! news/morning.mov
//! "/music/jazz/ice cream love.mov" 9
//! + funk/funk.ply
//! ```
//!
//! - The first line starts with `*PLAY-LIST*` (leading white space allowed).
//! - One movie a line: a path, in double quotes when it holds spaces (`""`
//!   inside quotes is one quote), then an optional weight from 1 to 10, the
//!   default 10. Weights only matter to `weighted_random`.
//! - `+ PATH` includes another playlist there. Includes nest; one that would
//!   include a list already being read is a loop and is refused.
//! - Relative paths, of movies and of included lists, are relative to the
//!   directory of the list that names them.
//! - A path naming a directory stands for the movies in it and in its
//!   subdirectories, in name order (DSS took them in `readdir` order).
//!
//! Where DSS stopped reading at some errors (a weight it could not use ended
//! the list), a broken line here is reported with its file and line number
//! and skipped, and the rest of the list is read. A list whose first line is
//! not the header is refused as a whole, as DSS refused it.
//!
//! # M3U
//!
//! A file whose first line is `#EXTM3U`, or whose name ends in `.m3u` or
//! `.m3u8`, is an M3U list: one path (or `file://` URL) a line, lines
//! starting with `#` are comments or directives. `#EXTINF:SECONDS,TITLE` is
//! accepted and its title kept for the next entry; its duration is not used
//! (the movie's own is). Entries have the default weight.
//!
//! Both formats tolerate a UTF-8 byte-order mark, CRLF line ends and blank
//! lines. Paths are taken as bytes, so names that are not UTF-8 still work.

use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// The weight of an entry that gives none, as in DSS.
pub const DEFAULT_WEIGHT: u8 = 10;
/// DSS's weights run from 1 to 10.
pub const MAX_WEIGHT: u8 = 10;
/// How deep `+` includes may nest. DSS had no limit; a chain of symbolic
/// links can make a loop that path comparison does not see, and this ends it.
pub const MAX_INCLUDE_DEPTH: usize = 16;
/// Largest playlist file read: a list of a hundred thousand movies is a few
/// megabytes; anything far larger is not a playlist.
pub const MAX_LIST_BYTES: u64 = 16 * 1024 * 1024;

/// File extensions taken from a directory named in a playlist (compared
/// without regard to case). DSS took every file; movie folders usually hold
/// `.sdp` files and such as well, and each would be a skipped movie logged
/// on every pass.
pub const MOVIE_EXTENSIONS: &[&str] = &["mov", "mp4", "m4v", "m4a", "3gp", "3g2", "mp3"];

/// Where an entry or a problem was written.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    pub file: PathBuf,
    /// 1-based.
    pub line: u32,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// One movie of a playlist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Resolved against the directory of the list that named it; relative
    /// only when that list's own path was.
    pub path: PathBuf,
    /// 1 to 10.
    pub weight: u8,
    /// From an M3U `#EXTINF` line.
    pub title: Option<String>,
    /// The line that named it; `None` for a movie inserted by a command.
    pub origin: Option<Origin>,
}

impl Entry {
    /// An entry not read from a list (a movie inserted to play next).
    pub fn new(path: impl Into<PathBuf>) -> Entry {
        Entry {
            path: path.into(),
            weight: DEFAULT_WEIGHT,
            title: None,
            origin: None,
        }
    }
}

/// The format of a list file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// DSS's `*PLAY-LIST*` format.
    Dss,
    M3u,
    /// A directory standing for the movies in it.
    Directory,
}

/// A playlist and every list it includes, flattened, with what was wrong in
/// them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Playlist {
    /// The top-level list's path as given.
    pub path: PathBuf,
    pub format: Format,
    /// In play order.
    pub entries: Vec<Entry>,
    /// Lines that were skipped or only partly understood, in reading order.
    pub problems: Vec<Problem>,
}

/// Why a whole list could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PlaylistError {
    #[error("cannot read playlist {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "{}: not a playlist: its first line must be *PLAY-LIST* (or #EXTM3U for M3U; files named .m3u or .m3u8 need no header)",
        path.display()
    )]
    NoHeader { path: PathBuf },
}

/// A line of a list that was skipped, or read with part of it ignored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {kind}")]
pub struct Problem {
    pub origin: Origin,
    pub kind: ProblemKind,
}

/// What was wrong with a line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProblemKind {
    #[error("weight `{0}` is not a whole number from 1 to 10, line skipped (quote a path that holds spaces)")]
    BadWeight(String),
    #[error("unterminated quote, line skipped")]
    UnterminatedQuote,
    #[error("`+` names no playlist to include")]
    EmptyInclude,
    #[error("not including {}: it is already being read (an include loop)", .0.display())]
    IncludeLoop(PathBuf),
    #[error("not including {}: includes nest deeper than {MAX_INCLUDE_DEPTH} lists", .0.display())]
    TooDeep(PathBuf),
    #[error("not including {}: {reason}", path.display())]
    Include { path: PathBuf, reason: String },
    #[error("cannot list directory {}: {reason}", path.display())]
    Directory { path: PathBuf, reason: String },
    #[error("directory {} holds no movies", .0.display())]
    EmptyDirectory(PathBuf),
    #[error("`{0}` is a URL; a channel plays movie files on this machine, line skipped")]
    Url(String),
    /// A warning: the entry is kept.
    #[error("ignored text after the entry: `{0}`")]
    TrailingText(String),
    /// A warning: the list is included.
    #[error("an included playlist takes no weight; `{0}` ignored")]
    IncludeWeight(String),
}

/// The file system as the parser sees it, so tests and callers can supply
/// lists from memory.
pub trait Files {
    /// The bytes of the file at `path`.
    fn read(&mut self, path: &Path) -> io::Result<Vec<u8>>;
    /// The entries of `path` when it is a directory (full paths, any order),
    /// `None` when it is not one.
    fn list_dir(&mut self, path: &Path) -> Option<io::Result<Vec<PathBuf>>>;
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct Disk;

impl Files for Disk {
    fn read(&mut self, path: &Path) -> io::Result<Vec<u8>> {
        // Only regular files: opening a FIFO for reading would block until a
        // writer came, and a device could be endless.
        let meta = std::fs::metadata(path)?;
        if !meta.is_file() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"));
        }
        if meta.len() > MAX_LIST_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} bytes is too large for a playlist", meta.len()),
            ));
        }
        std::fs::read(path)
    }

    fn list_dir(&mut self, path: &Path) -> Option<io::Result<Vec<PathBuf>>> {
        if !std::fs::metadata(path).is_ok_and(|m| m.is_dir()) {
            return None;
        }
        Some(std::fs::read_dir(path).and_then(|dir| dir.map(|e| e.map(|e| e.path())).collect()))
    }
}

impl Playlist {
    /// Reads the list (or directory) at `path` and everything it includes.
    pub fn load(path: impl AsRef<Path>, files: &mut dyn Files) -> Result<Playlist, PlaylistError> {
        let path = path.as_ref();
        if let Some(listing) = files.list_dir(path) {
            let origin = Origin {
                file: path.to_owned(),
                line: 0,
            };
            let listing = listing.map_err(|source| PlaylistError::Read {
                path: path.to_owned(),
                source,
            })?;
            let mut list = Playlist::empty(path, Format::Directory);
            let mut reader = Reader {
                files,
                out: &mut list,
                stack: Vec::new(),
            };
            reader.directory(path, Some(Ok(listing)), DEFAULT_WEIGHT, &origin);
            return Ok(list);
        }
        let bytes = files.read(path).map_err(|source| PlaylistError::Read {
            path: path.to_owned(),
            source,
        })?;
        Playlist::parse(path, &bytes, files)
    }

    /// Parses the list `bytes`, read from `path`; includes and directories it
    /// names are read through `files`.
    pub fn parse(path: impl AsRef<Path>, bytes: &[u8], files: &mut dyn Files) -> Result<Playlist, PlaylistError> {
        let path = path.as_ref();
        let format = detect(path, bytes).ok_or_else(|| PlaylistError::NoHeader { path: path.to_owned() })?;
        let mut list = Playlist::empty(path, format);
        let mut reader = Reader {
            files,
            out: &mut list,
            stack: Vec::new(),
        };
        reader.list(path, bytes, format);
        Ok(list)
    }

    fn empty(path: &Path, format: Format) -> Playlist {
        Playlist {
            path: path.to_owned(),
            format,
            entries: Vec::new(),
            problems: Vec::new(),
        }
    }
}

/// The lines of `bytes`: BOM dropped, split on LF, a CR before it dropped.
pub(super) fn lines(bytes: &[u8]) -> impl Iterator<Item = (u32, &[u8])> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    bytes.split(|&b| b == b'\n').enumerate().map(|(i, l)| {
        let l = l.strip_suffix(b"\r").unwrap_or(l);
        (u32::try_from(i + 1).unwrap_or(u32::MAX), l)
    })
}

/// DSS's `GetWord` stops at any byte up to 0x20 (space, tab, controls).
fn is_space(b: u8) -> bool {
    b <= 0x20
}

pub(super) fn trim_start(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|&&b| is_space(b)).count();
    &s[n..]
}

pub(super) fn trim(s: &[u8]) -> &[u8] {
    let s = trim_start(s);
    let n = s.iter().rev().take_while(|&&b| is_space(b)).count();
    &s[..s.len() - n]
}

/// The first non-blank line decides: `*PLAY-LIST*` is DSS, `#EXTM3U` is
/// M3U, and otherwise a `.m3u`/`.m3u8` name is M3U.
fn detect(path: &Path, bytes: &[u8]) -> Option<Format> {
    let first = lines(bytes).map(|(_, l)| trim_start(l)).find(|l| !l.is_empty());
    match first {
        Some(l) if l.starts_with(b"*PLAY-LIST*") => return Some(Format::Dss),
        Some(l) if l.starts_with(b"#EXTM3U") => return Some(Format::M3u),
        _ => {}
    }
    let ext = path.extension().and_then(OsStr::to_str).unwrap_or("");
    (ext.eq_ignore_ascii_case("m3u") || ext.eq_ignore_ascii_case("m3u8")).then_some(Format::M3u)
}

/// Splits the first word off `s` (after leading white space): a bare word
/// ends at white space; a quoted one at its closing quote, with `""` inside
/// standing for one quote. `Err` for a quote that never closes.
pub(super) fn word(s: &[u8]) -> Result<(Vec<u8>, &[u8]), ()> {
    let s = trim_start(s);
    if s.first() != Some(&b'"') {
        let n = s.iter().take_while(|&&b| !is_space(b)).count();
        return Ok((s[..n].to_vec(), &s[n..]));
    }
    let mut out = Vec::new();
    let mut i = 1;
    while i < s.len() {
        if s[i] == b'"' {
            if s.get(i + 1) == Some(&b'"') {
                out.push(b'"');
                i += 2;
                continue;
            }
            return Ok((out, &s[i + 1..]));
        }
        out.push(s[i]);
        i += 1;
    }
    Err(())
}

/// `name` against `dir`, with `.` components and doubled separators gone so
/// that one movie named two ways is still one path (for the no-repeat
/// window). `..` is kept: only the file system knows what it means past a
/// symbolic link.
fn resolve(dir: &Path, name: &[u8]) -> PathBuf {
    let name = Path::new(OsStr::from_bytes(name));
    let joined = if name.is_absolute() {
        name.to_owned()
    } else {
        dir.join(name)
    };
    let mut out = PathBuf::new();
    for c in joined.components() {
        if c != Component::CurDir {
            out.push(c);
        }
    }
    out
}

pub(super) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `file:///a%20b.mov` to `/a b.mov`; `None` for other URLs.
fn file_url(s: &[u8]) -> Option<Vec<u8>> {
    let rest = s.strip_prefix(b"file://").or_else(|| s.strip_prefix(b"FILE://"))?;
    // `file://host/path`: only an empty host or localhost means this machine.
    let slash = rest.iter().position(|&b| b == b'/')?;
    let host = &rest[..slash];
    if !host.is_empty() && !host.eq_ignore_ascii_case(b"localhost") {
        return None;
    }
    let path = &rest[slash..];
    let mut out = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if path[i] == b'%' && i + 2 < path.len() {
            if let (Some(h), Some(l)) = (hex(path[i + 1]), hex(path[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(path[i]);
        i += 1;
    }
    Some(out)
}

/// Whether `s` looks like `scheme://...`.
fn is_url(s: &[u8]) -> bool {
    let Some(colon) = s.windows(3).position(|w| w == b"://") else {
        return false;
    };
    colon > 0
        && s[0].is_ascii_alphabetic()
        && s[..colon]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
}

struct Reader<'a> {
    files: &'a mut dyn Files,
    out: &'a mut Playlist,
    /// The lists being read, outermost first: an include of one of them is a
    /// loop. (A list included twice side by side is not one, as in DSS.)
    stack: Vec<PathBuf>,
}

impl Reader<'_> {
    fn problem(&mut self, file: &Path, line: u32, kind: ProblemKind) {
        self.out.problems.push(Problem {
            origin: Origin {
                file: file.to_owned(),
                line,
            },
            kind,
        });
    }

    fn list(&mut self, path: &Path, bytes: &[u8], format: Format) {
        self.stack.push(resolve(Path::new(""), path.as_os_str().as_bytes()));
        let dir = path.parent().unwrap_or(Path::new("")).to_owned();
        match format {
            Format::Dss => self.dss(path, &dir, bytes),
            Format::M3u => self.m3u(path, &dir, bytes),
            Format::Directory => unreachable!("directories are not parsed"),
        }
        self.stack.pop();
    }

    fn dss(&mut self, path: &Path, dir: &Path, bytes: &[u8]) {
        let mut header_seen = false;
        for (n, line) in lines(bytes) {
            let l = trim_start(line);
            if !header_seen {
                // `detect` found the header on the first non-blank line.
                header_seen = !l.is_empty();
                continue;
            }
            if l.is_empty() || l[0] == b'#' {
                continue;
            }
            if let Some(rest) = l.strip_prefix(b"+") {
                self.include_line(path, dir, n, rest);
                continue;
            }
            let Ok((name, rest)) = word(l) else {
                self.problem(path, n, ProblemKind::UnterminatedQuote);
                continue;
            };
            if name.is_empty() {
                // `""`: an empty quoted path.
                continue;
            }
            let (weight_word, rest) = word(rest).unwrap_or_default();
            let weight = if weight_word.is_empty() {
                DEFAULT_WEIGHT
            } else {
                match std::str::from_utf8(&weight_word)
                    .ok()
                    .and_then(|w| w.parse::<u8>().ok())
                {
                    Some(w) if (1..=MAX_WEIGHT).contains(&w) => w,
                    _ => {
                        self.problem(path, n, ProblemKind::BadWeight(text(&weight_word)));
                        continue;
                    }
                }
            };
            let rest = trim(rest);
            if !rest.is_empty() {
                self.problem(path, n, ProblemKind::TrailingText(text(rest)));
            }
            self.movie(path, dir, n, &name, weight, None);
        }
    }

    fn include_line(&mut self, path: &Path, dir: &Path, n: u32, rest: &[u8]) {
        let Ok((name, after)) = word(rest) else {
            self.problem(path, n, ProblemKind::UnterminatedQuote);
            return;
        };
        if name.is_empty() {
            self.problem(path, n, ProblemKind::EmptyInclude);
            return;
        }
        let after = trim(after);
        if !after.is_empty() {
            self.problem(path, n, ProblemKind::IncludeWeight(text(after)));
        }
        let target = resolve(dir, &name);
        let origin = Origin {
            file: path.to_owned(),
            line: n,
        };
        self.include(&target, &origin);
    }

    fn include(&mut self, target: &Path, origin: &Origin) {
        let problem = |kind| Problem {
            origin: origin.clone(),
            kind,
        };
        if self.stack.iter().any(|p| p == target) {
            self.out
                .problems
                .push(problem(ProblemKind::IncludeLoop(target.to_owned())));
            return;
        }
        if self.stack.len() >= MAX_INCLUDE_DEPTH {
            self.out.problems.push(problem(ProblemKind::TooDeep(target.to_owned())));
            return;
        }
        if let Some(listing) = self.files.list_dir(target) {
            self.directory(target, Some(listing), DEFAULT_WEIGHT, origin);
            return;
        }
        let reason = match self.files.read(target) {
            Ok(bytes) => match detect(target, &bytes) {
                Some(format) => return self.list(target, &bytes, format),
                None => "its first line is not *PLAY-LIST* (nor #EXTM3U)".to_owned(),
            },
            Err(e) => e.to_string(),
        };
        self.out.problems.push(problem(ProblemKind::Include {
            path: target.to_owned(),
            reason,
        }));
    }

    fn m3u(&mut self, path: &Path, dir: &Path, bytes: &[u8]) {
        let mut title = None;
        for (n, line) in lines(bytes) {
            let l = trim(line);
            if l.is_empty() {
                continue;
            }
            if let Some(info) = l.strip_prefix(b"#EXTINF:") {
                // `#EXTINF:123,Artist - Title`; the title is what follows the
                // first comma (attributes before it may hold commas in
                // quotes, which players ignore too).
                title = info
                    .iter()
                    .position(|&b| b == b',')
                    .map(|c| text(trim(&info[c + 1..])))
                    .filter(|t| !t.is_empty());
                continue;
            }
            if l[0] == b'#' {
                continue;
            }
            let name = match file_url(l) {
                Some(p) => p,
                None if is_url(l) => {
                    self.problem(path, n, ProblemKind::Url(text(l)));
                    title = None;
                    continue;
                }
                None => l.to_vec(),
            };
            self.movie(path, dir, n, &name, DEFAULT_WEIGHT, title.take());
        }
    }

    /// A movie line: a file, or a directory of them.
    fn movie(&mut self, path: &Path, dir: &Path, n: u32, name: &[u8], weight: u8, title: Option<String>) {
        let target = resolve(dir, name);
        let origin = Origin {
            file: path.to_owned(),
            line: n,
        };
        if let Some(listing) = self.files.list_dir(&target) {
            self.directory(&target, Some(listing), weight, &origin);
            return;
        }
        self.out.entries.push(Entry {
            path: target,
            weight,
            title,
            origin: Some(origin),
        });
    }

    /// The movies of directory `dir`, and of its subdirectories, in name
    /// order; names starting with `.` are skipped, as DSS skipped them.
    fn directory(&mut self, dir: &Path, listing: Option<io::Result<Vec<PathBuf>>>, weight: u8, origin: &Origin) {
        let before = self.out.entries.len();
        self.walk(dir, listing, weight, origin, 0);
        if self.out.entries.len() == before {
            self.out.problems.push(Problem {
                origin: origin.clone(),
                kind: ProblemKind::EmptyDirectory(dir.to_owned()),
            });
        }
    }

    fn walk(
        &mut self,
        dir: &Path,
        listing: Option<io::Result<Vec<PathBuf>>>,
        weight: u8,
        origin: &Origin,
        depth: usize,
    ) {
        let listing = match listing.or_else(|| self.files.list_dir(dir)) {
            Some(Ok(l)) => l,
            Some(Err(e)) => {
                self.out.problems.push(Problem {
                    origin: origin.clone(),
                    kind: ProblemKind::Directory {
                        path: dir.to_owned(),
                        reason: e.to_string(),
                    },
                });
                return;
            }
            None => return,
        };
        let mut names: Vec<PathBuf> = listing
            .into_iter()
            .filter(|p| p.file_name().is_some_and(|n| !n.as_bytes().starts_with(b".")))
            .collect();
        names.sort();
        for p in names {
            let p = resolve(Path::new(""), p.as_os_str().as_bytes());
            if let Some(sub) = self.files.list_dir(&p) {
                if depth + 1 >= MAX_INCLUDE_DEPTH {
                    self.out.problems.push(Problem {
                        origin: origin.clone(),
                        kind: ProblemKind::TooDeep(p),
                    });
                    continue;
                }
                self.walk(&p, Some(sub), weight, origin, depth + 1);
                continue;
            }
            let is_movie = p
                .extension()
                .and_then(OsStr::to_str)
                .is_some_and(|e| MOVIE_EXTENSIONS.iter().any(|m| m.eq_ignore_ascii_case(e)));
            if is_movie {
                self.out.entries.push(Entry {
                    path: p,
                    weight,
                    title: None,
                    origin: Some(origin.clone()),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Lists and directories held in memory.
    #[derive(Default)]
    struct Mem {
        files: HashMap<PathBuf, Vec<u8>>,
        dirs: HashMap<PathBuf, Vec<PathBuf>>,
    }

    impl Mem {
        fn file(mut self, path: &str, text: &str) -> Mem {
            self.files.insert(path.into(), text.as_bytes().to_vec());
            self
        }
        fn dir(mut self, path: &str, names: &[&str]) -> Mem {
            self.dirs
                .insert(path.into(), names.iter().map(|n| Path::new(path).join(n)).collect());
            self
        }
        fn load(mut self, path: &str) -> Playlist {
            Playlist::load(path, &mut self).unwrap()
        }
    }

    impl Files for Mem {
        fn read(&mut self, path: &Path) -> io::Result<Vec<u8>> {
            self.files
                .get(path)
                .cloned()
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "No such file or directory"))
        }
        fn list_dir(&mut self, path: &Path) -> Option<io::Result<Vec<PathBuf>>> {
            self.dirs.get(path).cloned().map(Ok)
        }
    }

    fn paths(list: &Playlist) -> Vec<(&str, u8)> {
        list.entries
            .iter()
            .map(|e| (e.path.to_str().unwrap(), e.weight))
            .collect()
    }

    fn problems(list: &Playlist) -> Vec<String> {
        list.problems.iter().map(ToString::to_string).collect()
    }

    /// The example from DSS's documentation, with its include.
    #[test]
    fn reads_the_dss_documentation_example() {
        let list = Mem::default()
            .file(
                "/lists/main.ply",
                "*PLAY-LIST*\n\
                 # Lines beginning with \"#\" are comments\n\
                 #\n\
                 /music/jazz/take5.mov 2\n\
                 /music/rock/freebird.mov 9\n\
                 /music/reggae/onedrop.mov 5\n\
                 + /music/classical/playlist.txt\n\
                 + funk/funkplist.txt\n\
                 \"/music/jazz/ice cream love.mov\" 9\n",
            )
            .file("/music/classical/playlist.txt", "*PLAY-LIST*\nbach.mov\n")
            .file(
                "/lists/funk/funkplist.txt",
                "*PLAY-LIST*\n  james.mov   3\n../soul.mov\n",
            )
            .load("/lists/main.ply");
        assert_eq!(list.format, Format::Dss);
        assert_eq!(
            paths(&list),
            [
                ("/music/jazz/take5.mov", 2),
                ("/music/rock/freebird.mov", 9),
                ("/music/reggae/onedrop.mov", 5),
                ("/music/classical/bach.mov", 10),
                ("/lists/funk/james.mov", 3),
                ("/lists/funk/../soul.mov", 10),
                ("/music/jazz/ice cream love.mov", 9),
            ]
        );
        assert!(list.problems.is_empty(), "{:?}", list.problems);
        let take5 = &list.entries[0];
        assert_eq!(
            take5.origin,
            Some(Origin {
                file: "/lists/main.ply".into(),
                line: 4
            })
        );
        let james = &list.entries[4];
        assert_eq!(
            james.origin.as_ref().unwrap().to_string(),
            "/lists/funk/funkplist.txt:2"
        );
    }

    #[test]
    fn broken_lines_are_reported_with_their_line_and_skipped() {
        let list = Mem::default()
            .file(
                "/l/a.ply",
                "*PLAY-LIST*\n\
                 good.mov\n\
                 My Movie.mov\n\
                 heavy.mov 11\n\
                 zero.mov 0\n\
                 \"open quote.mov 4\n\
                 after.mov 7 and more\n\
                 + \n\
                 + missing.ply\n\
                 last.mov\n",
            )
            .load("/l/a.ply");
        assert_eq!(
            paths(&list),
            [("/l/good.mov", 10), ("/l/after.mov", 7), ("/l/last.mov", 10)]
        );
        assert_eq!(
            problems(&list),
            [
                "/l/a.ply:3: weight `Movie.mov` is not a whole number from 1 to 10, line skipped (quote a path that holds spaces)",
                "/l/a.ply:4: weight `11` is not a whole number from 1 to 10, line skipped (quote a path that holds spaces)",
                "/l/a.ply:5: weight `0` is not a whole number from 1 to 10, line skipped (quote a path that holds spaces)",
                "/l/a.ply:6: unterminated quote, line skipped",
                "/l/a.ply:7: ignored text after the entry: `and more`",
                "/l/a.ply:8: `+` names no playlist to include",
                "/l/a.ply:9: not including /l/missing.ply: No such file or directory",
            ]
        );
    }

    #[test]
    fn crlf_bom_blank_lines_and_quotes() {
        let list = Mem::default()
            .file(
                "/l/win.ply",
                "\u{feff}*PLAY-LIST*   made on Windows\r\n\r\n\t\"say \"\"hi\"\".mov\"\t3\r\n   # indented comment\r\n\r\nplain.mov\r\n",
            )
            .load("/l/win.ply");
        assert_eq!(paths(&list), [("/l/say \"hi\".mov", 3), ("/l/plain.mov", 10)]);
        assert!(list.problems.is_empty(), "{:?}", list.problems);
        assert_eq!(list.entries[1].origin.as_ref().unwrap().line, 6);
    }

    #[test]
    fn a_list_without_its_header_is_refused() {
        let mut files = Mem::default().file("/l/a.ply", "movie.mov\n");
        let err = Playlist::load("/l/a.ply", &mut files).unwrap_err();
        assert!(matches!(err, PlaylistError::NoHeader { .. }), "{err}");
        assert!(err.to_string().contains("*PLAY-LIST*"), "{err}");
        // The header must come before anything else, comments included.
        let mut files = Mem::default().file("/l/b.ply", "# a list\n*PLAY-LIST*\nmovie.mov\n");
        assert!(Playlist::load("/l/b.ply", &mut files).is_err());
        let mut files = Mem::default();
        let err = Playlist::load("/l/absent.ply", &mut files).unwrap_err();
        assert!(matches!(err, PlaylistError::Read { .. }), "{err}");
    }

    #[test]
    fn include_loops_are_refused_and_diamonds_allowed() {
        let list = Mem::default()
            .file("/l/a.ply", "*PLAY-LIST*\na.mov\n+ b.ply\n+ c.ply\n+ c.ply\n")
            .file("/l/b.ply", "*PLAY-LIST*\nb.mov\n+ ./a.ply\n")
            .file("/l/c.ply", "*PLAY-LIST*\nc.mov\n+ c.ply\n")
            .load("/l/a.ply");
        assert_eq!(
            paths(&list),
            [("/l/a.mov", 10), ("/l/b.mov", 10), ("/l/c.mov", 10), ("/l/c.mov", 10)]
        );
        assert_eq!(
            problems(&list),
            [
                "/l/b.ply:3: not including /l/a.ply: it is already being read (an include loop)",
                "/l/c.ply:3: not including /l/c.ply: it is already being read (an include loop)",
                "/l/c.ply:3: not including /l/c.ply: it is already being read (an include loop)",
            ]
        );
    }

    #[test]
    fn include_depth_is_limited() {
        // l0 includes l1 includes l2 ...: distinct names, so no loop is seen.
        let mut files = Mem::default();
        for i in 0..40 {
            files = files.file(
                &format!("/d/l{i}.ply"),
                &format!("*PLAY-LIST*\nm{i}.mov\n+ l{}.ply\n", i + 1),
            );
        }
        let list = files.load("/d/l0.ply");
        assert_eq!(list.entries.len(), MAX_INCLUDE_DEPTH);
        assert_eq!(
            problems(&list),
            [format!(
                "/d/l{}.ply:3: not including /d/l{}.ply: includes nest deeper than {MAX_INCLUDE_DEPTH} lists",
                MAX_INCLUDE_DEPTH - 1,
                MAX_INCLUDE_DEPTH
            )]
        );
    }

    #[test]
    fn included_lists_are_checked_and_take_no_weight() {
        let list = Mem::default()
            .file("/l/a.ply", "*PLAY-LIST*\n+ notes.txt\n+ \"other list.m3u\" 5\n")
            .file("/l/notes.txt", "just words\n")
            .file("/l/other list.m3u", "x.mp4\n")
            .load("/l/a.ply");
        assert_eq!(paths(&list), [("/l/x.mp4", 10)]);
        assert_eq!(
            problems(&list),
            [
                "/l/a.ply:2: not including /l/notes.txt: its first line is not *PLAY-LIST* (nor #EXTM3U)",
                "/l/a.ply:3: an included playlist takes no weight; `5` ignored",
            ]
        );
    }

    #[test]
    fn m3u_and_m3u8() {
        let list = Mem::default()
            .file(
                "/tv/list.m3u8",
                "\u{feff}#EXTM3U\r\n\
                 #EXTINF:30,News at nine\r\n\
                 news.mp4\r\n\
                 \r\n\
                 # a comment\r\n\
                 /abs/with space.mov\r\n\
                 #EXTINF:-1,Remote\r\n\
                 http://example.com/live.mp4\r\n\
                 file:///srv/a%20b.mov\r\n\
                 file://otherhost/x.mov\r\n\
                 sub/../c.3gp\r\n",
            )
            .load("/tv/list.m3u8");
        assert_eq!(list.format, Format::M3u);
        assert_eq!(
            paths(&list),
            [
                ("/tv/news.mp4", 10),
                ("/abs/with space.mov", 10),
                ("/srv/a b.mov", 10),
                ("/tv/sub/../c.3gp", 10),
            ]
        );
        assert_eq!(list.entries[0].title.as_deref(), Some("News at nine"));
        assert_eq!(list.entries[1].title, None, "a title belongs to the next entry only");
        assert_eq!(
            list.entries[2].title, None,
            "the URL line took the Remote title with it"
        );
        assert_eq!(
            problems(&list),
            [
                "/tv/list.m3u8:8: `http://example.com/live.mp4` is a URL; a channel plays movie files on this machine, line skipped",
                "/tv/list.m3u8:10: `file://otherhost/x.mov` is a URL; a channel plays movie files on this machine, line skipped",
            ]
        );
        // No header needed for an .m3u name; a #EXTM3U header makes any
        // name M3U.
        let plain = Mem::default()
            .file("/a/old.m3u", "one.mp3\ntwo.mp3\n")
            .load("/a/old.m3u");
        assert_eq!(paths(&plain), [("/a/one.mp3", 10), ("/a/two.mp3", 10)]);
        let named = Mem::default()
            .file("/a/list.txt", "#EXTM3U\none.mov\n")
            .load("/a/list.txt");
        assert_eq!(named.format, Format::M3u);
        // Weights are DSS's: in M3U a trailing number is part of the name.
        let spaced = Mem::default().file("/a/w.m3u", "clip 5.mov\n").load("/a/w.m3u");
        assert_eq!(paths(&spaced), [("/a/clip 5.mov", 10)]);
    }

    #[test]
    fn directories_stand_for_their_movies() {
        let list = Mem::default()
            .file("/l/a.ply", "*PLAY-LIST*\n/media/shows 4\n+ /media/empty\n")
            .dir(
                "/media/shows",
                &["b.mp4", "a.MOV", ".hidden.mov", "notes.sdp", "season2"],
            )
            .dir("/media/shows/season2", &["e1.3gp"])
            .dir("/media/empty", &["readme.txt"])
            .load("/l/a.ply");
        assert_eq!(
            paths(&list),
            [
                ("/media/shows/a.MOV", 4),
                ("/media/shows/b.mp4", 4),
                ("/media/shows/season2/e1.3gp", 4)
            ]
        );
        assert_eq!(problems(&list), ["/l/a.ply:3: directory /media/empty holds no movies"]);
        // A directory given as the playlist itself.
        let whole = Mem::default().dir("/media/x", &["2.mp4", "1.mp4"]).load("/media/x");
        assert_eq!(whole.format, Format::Directory);
        assert_eq!(paths(&whole), [("/media/x/1.mp4", 10), ("/media/x/2.mp4", 10)]);
    }

    #[test]
    fn relative_list_paths_stay_relative() {
        let list = Mem::default()
            .file("lists/a.ply", "*PLAY-LIST*\n./x.mov\n/abs.mov\n")
            .load("lists/a.ply");
        assert_eq!(paths(&list), [("lists/x.mov", 10), ("/abs.mov", 10)]);
    }

    #[test]
    fn non_utf8_names_are_kept_as_bytes() {
        let mut files = Mem::default();
        files
            .files
            .insert("/l/a.ply".into(), b"*PLAY-LIST*\ncaf\xe9.mov 2\n".to_vec());
        let list = Playlist::load("/l/a.ply", &mut files).unwrap();
        assert_eq!(list.entries[0].path.as_os_str().as_bytes(), b"/l/caf\xe9.mov");
        assert_eq!(list.entries[0].weight, 2);
    }

    #[test]
    fn reads_real_files_and_directories() {
        let dir = crate::channel::testing::scratch("playlist-disk");
        std::fs::create_dir_all(dir.join("movies/more")).unwrap();
        for name in ["movies/b.mp4", "movies/a.mov", "movies/more/c.3gp", "movies/x.sdp"] {
            std::fs::write(dir.join(name), b"").unwrap();
        }
        std::fs::write(dir.join("main.ply"), "*PLAY-LIST*\nmovies 3\n+ sub.m3u\n").unwrap();
        std::fs::write(dir.join("sub.m3u"), "#EXTM3U\nmovies/a.mov\n").unwrap();
        let list = Playlist::load(dir.join("main.ply"), &mut Disk).unwrap();
        let names: Vec<_> = list
            .entries
            .iter()
            .map(|e| {
                (
                    e.path.strip_prefix(&dir).unwrap().to_str().unwrap().to_owned(),
                    e.weight,
                )
            })
            .collect();
        assert_eq!(
            names,
            [
                ("movies/a.mov".to_owned(), 3),
                ("movies/b.mp4".to_owned(), 3),
                ("movies/more/c.3gp".to_owned(), 3),
                ("movies/a.mov".to_owned(), 10),
            ]
        );
        assert!(list.problems.is_empty(), "{:?}", list.problems);
        // A FIFO is not read (that would block), it is reported.
        let fifo = dir.join("pipe.ply");
        let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
        // SAFETY: `c` is a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = Playlist::load(&fifo, &mut Disk).unwrap_err();
        assert!(matches!(err, PlaylistError::Read { .. }), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
