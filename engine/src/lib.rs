//! Streamalot's engine: the protocol logic of the server, without IO, and
//! (as it lands) the thin runtime layer that drives it.

pub mod access_log;
pub mod admission;
pub mod config;
pub mod door;
pub mod library;
pub mod pacer;
pub mod random;
pub mod rtsp;
pub mod server;
pub mod session;
pub mod shard;
pub mod source;
pub mod stats;
