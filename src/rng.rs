//! A tiny xorshift64 generator for tie-breaks, shuffles, jitter and peer
//! ids. Not for anything secret.

/// xorshift64 state (never zero).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// Any seed works; it is mixed so that 0 is not a stuck state.
    pub const fn new(seed: u64) -> Rng {
        let s = seed ^ 0x9E37_79B9_7F4A_7C15;
        Rng(if s == 0 { 1 } else { s })
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}
