//! The only IO the access modules do: reading `qtaccess`, users and groups
//! files, behind [`FileSource`] so the rules unit-test on an in-memory tree
//! ([`MemoryFs`]), with a cache that notices when a file changes.
//!
//! A cached file is checked again (one `stat`) at most once per `recheck`
//! interval, and read again only when its size, modification time or inode
//! changed: an edit in place and a replacement by rename are both noticed.
//! A file that changes while it is being read is not trusted to be whole:
//! it is parsed (a half-written file usually fails to parse, which fails
//! closed) but read again at the next check.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::users::{file_error, FileError, LineError, MAX_FILE_BYTES};
use crate::source::Nanos;

/// What identifies one version of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub len: u64,
    pub modified_ns: i128,
    pub inode: u64,
}

/// Where access files come from.
pub trait FileSource {
    /// The file's stamp, or `None` when there is no regular file there.
    fn stamp(&self, path: &Path) -> io::Result<Option<Stamp>>;
    /// The file's bytes, up to `limit` (more is an error).
    fn read(&self, path: &Path, limit: usize) -> io::Result<Vec<u8>>;
}

/// The real file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealFs;

impl FileSource for RealFs {
    fn stamp(&self, path: &Path) -> io::Result<Option<Stamp>> {
        use std::os::unix::fs::MetadataExt as _;
        match std::fs::metadata(path) {
            Ok(m) if m.is_file() => Ok(Some(Stamp {
                len: m.len(),
                modified_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
                inode: m.ino(),
            })),
            Ok(_) => Ok(None),
            Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn read(&self, path: &Path, limit: usize) -> io::Result<Vec<u8>> {
        use std::io::Read as _;
        let mut bytes = Vec::new();
        std::fs::File::open(path)?
            .take(limit as u64 + 1)
            .read_to_end(&mut bytes)?;
        if bytes.len() > limit {
            return Err(io::Error::other(format!("larger than {limit} bytes")));
        }
        Ok(bytes)
    }
}

/// Files in memory, for tests (and for callers that keep rules elsewhere).
/// Each `put` is a new version.
#[derive(Debug, Clone, Default)]
pub struct MemoryFs {
    files: HashMap<PathBuf, (Vec<u8>, u64)>,
    versions: u64,
}

impl MemoryFs {
    pub fn put(&mut self, path: impl Into<PathBuf>, bytes: impl Into<Vec<u8>>) {
        self.versions += 1;
        self.files.insert(path.into(), (bytes.into(), self.versions));
    }

    pub fn remove(&mut self, path: &Path) {
        self.files.remove(path);
    }
}

impl FileSource for MemoryFs {
    fn stamp(&self, path: &Path) -> io::Result<Option<Stamp>> {
        Ok(self.files.get(path).map(|(b, v)| Stamp {
            len: b.len() as u64,
            modified_ns: i128::from(*v),
            inode: 1,
        }))
    }

    fn read(&self, path: &Path, limit: usize) -> io::Result<Vec<u8>> {
        match self.files.get(path) {
            Some((b, _)) if b.len() <= limit => Ok(b.clone()),
            Some(_) => Err(io::Error::other(format!("larger than {limit} bytes"))),
            None => Err(io::ErrorKind::NotFound.into()),
        }
    }
}

/// A file as the cache last saw it.
pub type Loaded<T> = Option<Result<Arc<T>, Arc<FileError>>>;

struct Entry<T> {
    stamp: Option<Stamp>,
    checked: Nanos,
    value: Loaded<T>,
}

/// Parsed files by path, rechecked at most every `recheck_ns`, at most
/// `capacity` of them (requests for many different folders cannot grow it
/// without bound: when full, the cache starts over).
pub struct FileCache<T> {
    entries: HashMap<PathBuf, Entry<T>>,
    recheck_ns: Nanos,
    capacity: usize,
    parse: fn(&Path, &[u8]) -> Result<T, FileError>,
}

impl<T> FileCache<T> {
    pub fn new(recheck_ns: Nanos, capacity: usize, parse: fn(&Path, &[u8]) -> Result<T, FileError>) -> FileCache<T> {
        FileCache {
            entries: HashMap::new(),
            recheck_ns,
            capacity: capacity.max(1),
            parse,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The file at `path`: `None` when there is none, else what parsing it
    /// gave. An IO error other than "not there" is an error of the file
    /// (line 0), so it fails closed like a parse error.
    pub fn get(&mut self, fs: &dyn FileSource, path: &Path, now: Nanos) -> Loaded<T> {
        if let Some(e) = self.entries.get(path) {
            if now.saturating_sub(e.checked) < self.recheck_ns {
                return e.value.clone();
            }
        }
        let io_error = |e: io::Error| Some(Err(Arc::new(file_error(path, 0, LineError::Io(e.to_string())))));
        let stamp = match fs.stamp(path) {
            Ok(s) => s,
            Err(e) => return io_error(e),
        };
        if let Some(e) = self.entries.get_mut(path) {
            if e.stamp == stamp && stamp.is_some() || stamp.is_none() && e.value.is_none() {
                e.checked = now;
                return e.value.clone();
            }
        }
        let (value, stamp) = match stamp {
            None => (None, None),
            Some(before) => {
                let value = match fs.read(path, MAX_FILE_BYTES) {
                    Ok(bytes) => Some((self.parse)(path, &bytes).map(Arc::new).map_err(Arc::new)),
                    Err(e) => io_error(e),
                };
                // Changed while read: keep the result, but not as this version.
                let after = fs.stamp(path).ok().flatten();
                (value, (after == Some(before)).then_some(before))
            }
        };
        if self.entries.len() >= self.capacity && !self.entries.contains_key(path) {
            self.entries.clear();
        }
        self.entries.insert(
            path.to_owned(),
            Entry {
                stamp,
                checked: now,
                value: value.clone(),
            },
        );
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_lines(_: &Path, b: &[u8]) -> Result<usize, FileError> {
        if b.starts_with(b"bad") {
            return Err(file_error(Path::new("f"), 1, LineError::Syntax("bad".into())));
        }
        Ok(b.split(|&c| c == b'\n').count())
    }

    #[test]
    fn notices_changes_after_the_recheck_interval() {
        let mut fs = MemoryFs::default();
        let p = Path::new("/m/qtaccess");
        let mut c = FileCache::new(100, 8, parse_lines);
        assert!(c.get(&fs, p, 0).is_none());
        fs.put(p, "a\nb");
        // Within the interval the cached absence stands.
        assert!(c.get(&fs, p, 50).is_none());
        assert_eq!(*c.get(&fs, p, 100).unwrap().unwrap(), 2);
        fs.put(p, "a\nb\nc");
        assert_eq!(*c.get(&fs, p, 150).unwrap().unwrap(), 2);
        assert_eq!(*c.get(&fs, p, 200).unwrap().unwrap(), 3);
        fs.put(p, "bad");
        let e = c.get(&fs, p, 300).unwrap().unwrap_err();
        assert_eq!(e.line, 1);
        fs.remove(p);
        assert!(c.get(&fs, p, 400).is_none());
    }

    #[test]
    fn stays_bounded() {
        let fs = MemoryFs::default();
        let mut c = FileCache::new(1_000, 16, parse_lines);
        for i in 0..1000 {
            c.get(&fs, Path::new(&format!("/m/{i}/qtaccess")), 0);
            assert!(c.len() <= 16);
        }
    }

    #[test]
    fn real_files_and_their_changes() {
        let dir = std::env::temp_dir().join(format!("streamalot-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("qtaccess");
        let mut c = FileCache::new(0, 8, parse_lines);
        assert!(c.get(&RealFs, &p, 0).is_none());
        // A directory is not a file; a path through a file is not either.
        assert!(c.get(&RealFs, &dir, 0).is_none());
        std::fs::write(&p, "a\nb").unwrap();
        assert!(c.get(&RealFs, &p.join("x"), 0).is_none());
        assert_eq!(*c.get(&RealFs, &p, 1).unwrap().unwrap(), 2);
        // Replaced by rename with the same size: the inode tells.
        let tmp = dir.join("tmp");
        std::fs::write(&tmp, "abc").unwrap();
        std::fs::rename(&tmp, &p).unwrap();
        assert_eq!(*c.get(&RealFs, &p, 2).unwrap().unwrap(), 1);
        std::fs::write(&p, vec![b'x'; MAX_FILE_BYTES + 1]).unwrap();
        let e = c.get(&RealFs, &p, 3).unwrap().unwrap_err();
        assert!(matches!(e.kind, LineError::Io(_)), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
