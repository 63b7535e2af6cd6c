//! rtpload: the RTSP/RTP load client bundled with Streamalot.
//!
//! It runs many RTSP sessions against any RTSP server, each playing a movie
//! over UDP or interleaved TCP for a set time, and measures what a viewer
//! would feel: loss, duplicates and reordering, RFC 3550 jitter, how late
//! packets arrive against their own timestamps, the time from PLAY to the
//! first packet, and RTSP response times, as HdrHistograms.
//!
//! The protocol logic has no IO and no clock ([`session`], [`reception`],
//! [`sdp`], [`repair`]); it is driven by bytes and times and tested
//! with a fake clock. One thin layer ([`worker`], [`sys`]) owns the sockets
//! and threads: one worker per core, each owning its sessions. [`run`] ties
//! the workers together and writes what they measured ([`output`], [`plot`],
//! [`progress`]). With `--publish`, [`publish`] feeds a live stream first.

pub mod cli;
pub mod metrics;
pub mod output;
pub mod plot;
pub mod progress;
pub mod publish;
pub mod reception;
pub mod repair;
pub mod run;
pub mod sdp;
pub mod session;
pub mod sys;
pub mod worker;
