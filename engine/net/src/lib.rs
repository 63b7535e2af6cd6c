//! The platform socket layer: the Linux system calls behind Streamalot's
//! UDP media path, kept apart from the protocols (as `quinn-udp` is from
//! `quinn-proto`) so the server and the load client share them and nothing
//! else needs `unsafe` for sockets.
//!
//! - Sending: [`SendBatch`] turns one round's RTP packets into one
//!   `sendmmsg`, with UDP GSO for runs of equal-size packets to one
//!   destination, its iovecs pointing straight at the payload bytes (spans
//!   of a mapped movie) after a copied 12-byte header; or the same messages
//!   as `IORING_OP_SENDMSG` entries on a small io_uring of its own
//!   ([`SendBatch::use_io_uring`], [`SendPath`]). [`OwnedBatch`] is the
//!   same batch filled over time, holding its payloads' `Bytes` owners.
//! - Receiving: [`recv_batch`] drains a socket with `recvmmsg` into reused
//!   [`RecvBufs`]; [`recv_batch_timestamped`] adds each datagram's kernel
//!   receive time ([`enable_timestamps`]), which a load client measuring
//!   arrival needs. With [`enable_gro`] the kernel hands over runs of
//!   datagrams coalesced, and both split them again.
//! - Setup: [`bind_pair`] binds an RTP/RTCP pair (even port, odd port) with
//!   big buffers; [`set_recv_buffer`] asks for more room past the sysctl cap
//!   where allowed; [`bind_tcp_listener`] binds an RTSP port, shared with
//!   `SO_REUSEPORT` only when asked; [`raise_fd_limit`] lifts the open-file
//!   limit every connection counts against.
//!
//! Nothing here knows RTSP, sessions or time: callers hand in addresses and
//! byte slices and get counts and datagrams back. Each `unsafe` block says
//! why it is sound; the rule that makes the sender sound is that iovecs are
//! only ever handed to the kernel from a live [`Batch<'a>`] or from an
//! [`OwnedBatch`], and everything they point at either borrows for `'a`,
//! is held by the `OwnedBatch`, or belongs to the batch itself.

mod addr;
mod owned;
mod recv;
mod send;
mod socket;
mod tcp;
mod uring;

pub use owned::OwnedBatch;
pub use recv::{
    enable_gro, enable_timestamps, recv_batch, recv_batch_timestamped, Datagram, RecvBufs, GRO_BUFFER_BYTES,
};
pub use send::{Batch, Flushed, SendBatch, SendPath, MAX_IOVECS, RTP_HEADER_LEN};
pub use socket::{bind_pair, raise_fd_limit, set_recv_buffer, UdpPair, RTCP_RECV_BUFFER_BYTES, SEND_BUFFER_BYTES};
pub use tcp::{bind_tcp_listener, LISTEN_BACKLOG};
pub use uring::RING_ENTRIES;
