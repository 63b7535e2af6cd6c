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
//! - [`rtx`]: RTP retransmission packets and their SDP parameters (RFC 4588);
//! - [`qtss`]: QuickTime's RTCP APP packets: reliable-UDP acks, client
//!   reports and server information, as Darwin Streaming Server spoke them.
//!
//! Nothing here touches a socket, a file, a clock or a thread (no glommio,
//! no libc): time, where it matters, is a value the caller passes. The
//! server, the load client and the tests all use it; what a server or a
//! client decides (which methods to answer, which media to play) stays with
//! them.

pub mod interleaved;
pub mod qtss;
pub mod rtcp;
pub mod rtp;
pub mod rtsp;
pub mod rtx;
pub mod sdp;

#[cfg(test)]
mod test_rng;
