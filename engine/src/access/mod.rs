//! Access control without IO: who may watch, publish and administer.

pub mod addr;
pub mod basic;
pub mod digest;
pub mod files;
pub mod header;
pub mod qtaccess;
pub mod token;
pub mod users;
