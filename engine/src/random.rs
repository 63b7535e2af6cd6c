//! Randomness for protocol identifiers: SSRCs, initial sequence numbers and
//! timestamps (RFC 3550 section 5.1 asks for random ones) and session IDs.
//!
//! The seed comes from the standard library's per-process random hash keys
//! (drawn from the operating system); a xorshift generator stretches it.
//! Session IDs are all a client needs to control a session, so each one
//! takes a fresh OS-seeded value rather than the generator's next.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

/// A fresh random 64-bit value seeded by the operating system.
pub fn u64() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(0x5354_5245_414d_414c);
    h.finish()
}

/// A small, fast generator (xorshift64*) for per-stream values.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new() -> Rng {
        Rng(u64() | 1)
    }

    /// A generator that gives the same values every time: for tests and
    /// simulations that must repeat.
    pub fn from_seed(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

impl Default for Rng {
    fn default() -> Self {
        Rng::new()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn values_differ() {
        assert_ne!(super::u64(), super::u64());
        let mut r = super::Rng::new();
        let a = r.next_u64();
        assert_ne!(a, r.next_u64());
    }
}
