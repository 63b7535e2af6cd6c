//! Skip protection and Instant-On: sending packets again, sending ahead of
//! real time, and sending less when a client cannot keep up. Logic only,
//! driven by packets, feedback and `now`; the shard that owns a stream
//! calls into it.
//!
//! - [`history`]: what a stream sent, kept without copying payload, to
//!   send again.
//! - [`nack`]: answering RTCP generic NACKs (RFC 4585) from the history,
//!   with duplicate and rate limits, for RTX retransmission (RFC 4588).
//! - [`reliable`]: Darwin Streaming Server's reliable UDP: acks in RTCP APP
//!   `qtak` packets, resends on a retransmission timeout, a congestion
//!   window with slow start.
//! - [`burst`]: how far ahead of real time a session may be sent.
//! - [`thinning`]: which frames to leave out when a client falls behind.

pub mod burst;
pub mod history;
pub mod nack;
pub mod reliable;
pub mod thinning;

/// A monotonic instant in nanoseconds, from whoever drives the logic (the
/// shard's clock, or a test's).
pub type Nanos = u64;
