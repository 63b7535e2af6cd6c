//! RTSP 1.0 (RFC 2326) without IO: messages on a byte stream and the header
//! fields with structure.

pub mod header;
pub mod message;

/// The methods the server implements, for `Public` and `Allow`.
pub const PUBLIC_METHODS: &str = "OPTIONS, DESCRIBE, SETUP, PLAY, PAUSE, TEARDOWN, GET_PARAMETER, SET_PARAMETER";
