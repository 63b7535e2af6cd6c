//! What the benchmarks share: the machine facts and levers they need
//! ([`os`]), the long hinted movie they run on ([`movie_maker`]), and a
//! loopback receiver that drains what a sender under test sends
//! ([`receiver`]), a shard's send path with its raw limit ([`shard`]), what
//! /proc says of a server under test ([`process`]), the servers under test
//! themselves ([`servers`]), SVG charts ([`plot`]), the raw io_uring send
//! loop ([`uring`]), and a client behind a link of its own ([`netns`]).

pub mod movie_maker;
pub mod netns;
pub mod os;
pub mod plot;
pub mod process;
pub mod receiver;
pub mod run;
pub mod servers;
pub mod shard;
pub mod uring;
