//! RTSP 1.0 (RFC 2326) without IO: messages on a byte stream and the header
//! fields with structure.

pub mod header;
pub mod message;
