//! Streamalot's engine: the protocol logic of the server, without IO, and
//! (as it lands) the thin runtime layer that drives it.

pub mod playback;
pub mod rtsp;
pub mod session;
