//! Live broadcasts: a publisher pushes RTP in (RTSP ANNOUNCE and RECORD,
//! RFC 2326 sections 10.3 and 10.11), and the reflector fans it out to every
//! viewer on every shard. No IO here: bytes and `now` in, values out.
//!
//! # How a broadcast travels
//!
//! 1. **Publishing.** The door lets ANNOUNCE, a SETUP with `mode=record` and
//!    RECORD through only for a path a [`publish::Rules`] entry allows, with
//!    its credential (Digest or Basic). The control core's [`Registry`]
//!    takes the announced SDP ([`describe`]: checked, each stream numbered
//!    `trackID=N` for viewers), the record SETUPs (interleaved channels or a
//!    UDP pair of the server's) and RECORD, after which the broadcast is on
//!    the air at its path.
//! 2. **Ingest.** Each RTP packet the publisher sends is checked and parsed
//!    once ([`ingest::Ingest`]: version, payload type, one SSRC per stream,
//!    a byte budget against floods, where key frames start) and copied once
//!    into a [`Bytes`]: that buffer is the only copy of the payload there
//!    will ever be. Sender reports are read for the viewers' timing.
//! 3. **Fan-out.** The control core hands every packet ([`ToShard::Packet`])
//!    to every shard over a bounded cross-core channel; only the `Bytes`
//!    handle travels. A shard that cannot keep up loses packets at the
//!    channel (counted), and never slows the publisher or another shard.
//! 4. **Reflection.** Each shard keeps a [`Replica`] of the broadcast's recent
//!    packets: the current group of pictures and a bounded buffer by time
//!    and bytes. A viewer is a cursor into its shard's replica
//!    ([`crate::source::LiveSource`]) with its own SSRC, sequence numbers and
//!    timestamp offset, so only the 12-byte header is written per viewer;
//!    its payload is a span of the publisher's packet. A new viewer starts at
//!    the replica's latest key frame and is sent what lies between it and
//!    the live edge as fast as its transport takes it, then follows live.
//! 5. **The end.** TEARDOWN, the publisher's connection closing, or silence
//!    past [`SILENCE_TIMEOUT`] ends the broadcast: the shards are told
//!    ([`ToShard::End`]), each viewer gets what is left, then its BYE.

use std::sync::Arc;

use bytes::Bytes;
use loader::Span;

use crate::source::Nanos;

pub mod describe;
pub mod ingest;
pub mod publish;
pub mod registry;
pub mod relay;
pub mod replica;
pub mod sdp_source;

pub use describe::{DescribeError, Description, Track};
pub use keyframe::Codec;
/// Where a viewer may start, per codec: shared with the load client, which
/// times a joining viewer's first key frame by the same rules.
pub use proto::keyframe;
pub use registry::Registry;
pub use replica::Replica;

/// A broadcast's number, unique in the process: a publisher that comes back
/// to the same path is a new broadcast.
pub type BroadcastId = u64;

const MS: Nanos = 1_000_000;

/// A broadcast whose publisher sent nothing for this long is over.
pub const SILENCE_TIMEOUT: Nanos = 10_000 * MS;
/// How far back a replica keeps packets before the current group of
/// pictures: a few seconds, as a joining viewer needs at most one GOP.
pub const BUFFER_AGE: Nanos = 4_000 * MS;
/// How many payload bytes a replica keeps at most (the `Bytes` are shared
/// by every shard's replica, so this is memory once per broadcast).
pub const BUFFER_BYTES: usize = 8 << 20;

/// One RTP packet of a broadcast, as the publisher sent it: parsed once on
/// ingest, shared by every shard and viewer.
#[derive(Debug, Clone)]
pub struct LivePacket {
    /// The whole datagram, RTP header included: the owner of the payload
    /// span every viewer's packet points into.
    pub data: Bytes,
    /// The payload inside `data`: after the header, CSRCs and extension,
    /// before any padding.
    pub payload: Span,
    /// Index of the stream in the broadcast's [`Description::tracks`].
    pub track: u8,
    pub payload_type: u8,
    pub marker: bool,
    pub timestamp: u32,
    /// The first packet of a frame (its stream's previous packet had the
    /// marker bit), where a viewer may start or resume.
    pub frame_start: bool,
    /// Part of a key frame (an H.264 IDR, an H.265 IRAP, an MPEG-4 I-VOP;
    /// every audio frame), by [`keyframe`].
    pub key: bool,
}

impl LivePacket {
    pub fn payload_len(&self) -> usize {
        self.payload.len as usize
    }
}

/// What the control core tells a shard about the broadcasts, in order, over
/// the shard's live channel.
#[derive(Debug)]
pub enum ToShard {
    /// A broadcast went on the air.
    Start(Arc<Description>),
    Packet {
        id: BroadcastId,
        packet: LivePacket,
    },
    /// A sender report from the publisher for stream `track`: its NTP time
    /// and the RTP timestamp that goes with it, received at `at`.
    Report {
        id: BroadcastId,
        track: u8,
        ntp: u64,
        rtp_ts: u32,
        at: Nanos,
    },
    /// The broadcast is over: viewers get what is left, then a BYE.
    End {
        id: BroadcastId,
    },
    /// News of an Icecast mount (its frames, its title, its end), which
    /// rides the same channel so that a shard gets it in order.
    Mount(crate::icecast::mount::MountNews),
}
