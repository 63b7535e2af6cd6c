//! Streamalot's protocols without IO, each a parser and an emitter over
//! bytes:
//!
//! - [`rtsp`]: RTSP 1.0 messages with limits ([`rtsp::message`]), header
//!   fields with structure such as `Transport` and `Range`
//!   ([`rtsp::header`]), status codes ([`rtsp::status`]) and URLs
//!   ([`rtsp::url`]);
//! - [`sdp`]: session descriptions (RFC 8866), parsed and emitted;
//! - [`rtp`]: a checked view of an RTP packet and its header, parsed and
//!   emitted;
//! - [`rtcp`]: the RTCP packets of a compound datagram, built and parsed;
//! - [`interleaved`]: `$` frames of media on an RTSP connection;
//! - [`keyframe`]: which RTP payloads carry (the start of) a key frame, per
//!   codec (H.264, H.265, MPEG-4 Part 2), for a server starting a viewer and
//!   a client timing its first picture;
//! - [`rtx`]: RTP retransmission packets and their SDP parameters (RFC 4588);
//! - [`qtss`]: QuickTime's RTCP APP packets: reliable-UDP acks, client
//!   reports and server information, as Darwin Streaming Server spoke them;
//! - [`http`]: HTTP/1.x requests (heads, bodies, keep-alive) and responses,
//!   and telling HTTP from RTSP by a connection's first line;
//! - [`tunnel`]: RTSP over HTTP (QuickTime's GET/POST pair): which leg a
//!   request opens, its cookie, and the POST body's streaming base64.
//!
//! Nothing here touches a socket, a file, a clock or a thread (no glommio,
//! no libc): time, where it matters, is a value the caller passes. The
//! server, the load client and the tests all use it; what a server or a
//! client decides (which methods to answer, which media to play) stays with
//! them.

pub mod http;
pub mod interleaved;
pub mod keyframe;
pub mod qtss;
pub mod rtcp;
pub mod rtp;
pub mod rtsp;
pub mod rtx;
pub mod sdp;
pub mod tunnel;

#[cfg(test)]
mod test_rng;
