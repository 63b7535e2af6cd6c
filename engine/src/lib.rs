//! Streamalot's engine: the protocol logic of the server, without IO, and
//! (as it lands) the thin runtime layer that drives it.

pub mod access_log;
pub mod config;
pub mod icecast;
pub mod library;
pub mod net;
pub mod pacer;
pub mod playback;
pub mod random;
pub mod rtcp;
pub mod rtsp;
pub mod server;
pub mod session;
pub mod stats;
