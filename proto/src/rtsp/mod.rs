//! RTSP 1.0 (RFC 2326) without IO: messages on a byte stream, the header
//! fields with structure, status codes, and URLs.

pub mod header;
pub mod message;
pub mod quicktime;
pub mod status;
pub mod url;
