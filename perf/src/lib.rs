//! What the benchmarks share: the machine facts and levers they need
//! ([`os`]), the long hinted movie they run on ([`movie_maker`]), and a
//! loopback receiver that drains what a sender under test sends
//! ([`receiver`]), and a shard's send path with its raw limit ([`shard`]).

pub mod movie_maker;
pub mod os;
pub mod receiver;
pub mod shard;
