//! Read-only file mappings, shared by every kind of media file.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;

/// Maps the file at `path` read-only, as one `Bytes` that owns the mapping;
/// `error` makes the caller's error from the path and what went wrong.
///
/// The mapping is shared for the owner's life. If another process truncates
/// the file meanwhile, reading the lost pages raises SIGBUS: replace media
/// files by renaming new ones into place, never by rewriting them.
pub(crate) fn map<E>(path: &Path, error: impl FnOnce(PathBuf, io::Error) -> E) -> Result<Bytes, E> {
    map_file(path).map_err(|e| error(path.to_owned(), e))
}

fn map_file(path: &Path) -> io::Result<Bytes> {
    let file = File::open(path)?;
    if file.metadata()?.len() == 0 {
        return Ok(Bytes::new());
    }
    // SAFETY: the mapping is read-only and private to this process's view;
    // the file is only read through it. Concurrent truncation by another
    // process is the documented hazard above.
    let map = unsafe { memmap2::Mmap::map(&file) }?;
    Ok(Bytes::from_owner(map))
}
