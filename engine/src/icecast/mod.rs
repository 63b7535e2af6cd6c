//! MP3 over HTTP the way Icecast and SHOUTcast serve it: the protocol pieces
//! that need no socket and no clock. [`icy`] frames a listener's stream with
//! ICY metadata (and reads such a stream back). The MP3 files themselves are
//! indexed by the loader (`loader::mp3`), which says which frames are due at
//! which media time.

pub mod icy;
