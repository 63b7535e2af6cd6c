//! Streamalot's protocols without IO: the RTSP codec and its header fields,
//! RTSP URLs, and the RTCP wire format.
//!
//! Nothing here touches a socket, a file, a clock or a thread: every function
//! takes bytes (and, where time matters, the time as a value) and returns
//! values or bytes. The server, the load client and the tests all use it.

pub mod interleaved;
pub mod rtcp;
pub mod rtp;
pub mod rtsp;
pub mod sdp;

#[cfg(test)]
mod test_rng;
