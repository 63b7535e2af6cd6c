//! MP3 over HTTP the way Icecast and SHOUTcast serve it, without IO.
//! [`icy`] frames a listener's stream with ICY metadata (and reads such a
//! stream back); [`listener`] says which bytes of a file a listener is due
//! at a time, as slices of the file's mapping; [`files`] is the HTTP
//! handler that answers `GET /x.mp3` and hands the listener to a shard.
//! The MP3 files themselves are indexed by the loader (`loader::mp3`),
//! which says which frames are due at which media time.

pub mod files;
pub mod frames;
pub mod icy;
pub mod listener;
pub mod metadata;
pub mod mount;
pub mod radio;
pub mod relay;
pub mod source;
