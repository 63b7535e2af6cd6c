//! The IO layer for UDP: the only module that makes socket system calls.
//!
//! Everything above this module is sans-IO. Here live the socket setup of a
//! shard's RTP/RTCP pair ([`bind_pair`]), the batched sender that turns one
//! tick's packets into one `sendmmsg` whose iovecs point into the mapped
//! movie files ([`SendBatch`]), and the batched receiver for RTCP
//! ([`recv_batch`]), which can also say when the kernel received each
//! datagram ([`recv_batch_timestamped`]), as a load client measuring
//! arrival times needs; and the descriptor limit every socket counts against
//! ([`raise_fd_limit`]).
//!
//! The unsafe code of the engine is confined to this module; each block says
//! why it is sound. The rule that makes the sender safe to call: iovecs are
//! only ever handed to the kernel from a live [`Batch<'a>`], and everything
//! they point at either borrows for `'a` or belongs to the batch itself.

mod addr;
mod recv;
mod send;
mod socket;
mod tcp;

pub use recv::{enable_timestamps, recv_batch, recv_batch_timestamped, Datagram, RecvBufs};
pub use send::{Batch, Flushed, SendBatch, MAX_IOVECS, RTP_HEADER_LEN};
pub use socket::{bind_pair, raise_fd_limit, set_recv_buffer, UdpPair, RTCP_RECV_BUFFER_BYTES, SEND_BUFFER_BYTES};
pub use tcp::{bind_tcp_listener, LISTEN_BACKLOG};
