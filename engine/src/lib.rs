//! Streamalot's engine: the server. Its logic has no IO (the front door,
//! sessions, sources, the pacer, the shard core, the library's path rules,
//! the counts and limits) and is driven by one glommio layer, [`server`].
//! ARCHITECTURE.md at the repository's root is the map.

pub mod access;
pub mod access_log;
pub mod admin;
pub mod admission;
pub mod broadcast;
pub mod channel;
pub mod config;
pub mod door;
pub mod http;
pub mod icecast;
pub mod idle;
pub mod library;
pub mod live;
pub mod pacer;
pub mod random;
pub mod repair;
pub mod rtsp_client;
pub mod server;
pub mod session;
pub mod shard;
pub mod source;
pub mod stats;
