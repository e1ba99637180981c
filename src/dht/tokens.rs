//! Write tokens for `announce_peer`: a keyed hash of the requester's IP
//! address, never stored per requester. The secret rotates every
//! [`ROTATE_EVERY`]; a token made with the previous secret is still
//! accepted, so a token lives 5 to 10 minutes (BEP 5 asks for up to 10).

use sha1::{Digest, Sha1};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// How often the secret changes.
pub const ROTATE_EVERY: Duration = Duration::from_secs(5 * 60);
/// Token length in bytes.
pub const TOKEN_LEN: usize = 8;

/// The current and previous secrets.
#[derive(Clone, Debug)]
pub struct Tokens {
    current: [u8; 16],
    previous: [u8; 16],
    rotated: Instant,
}

impl Tokens {
    pub fn new(rng: &mut crate::rng::Rng, now: Instant) -> Tokens {
        let current = secret(rng);
        Tokens {
            current,
            previous: current,
            rotated: now,
        }
    }

    /// Rotate when due; returns the next rotation time.
    pub fn tick(&mut self, now: Instant, rng: &mut crate::rng::Rng) -> Instant {
        if now.saturating_duration_since(self.rotated) >= ROTATE_EVERY {
            self.previous = self.current;
            self.current = secret(rng);
            self.rotated = now;
        }
        self.rotated + ROTATE_EVERY
    }

    /// The token for `ip` under the current secret.
    pub fn issue(&self, ip: Ipv4Addr) -> [u8; TOKEN_LEN] {
        make(&self.current, ip)
    }

    /// Whether `token` was issued to `ip` under the current or previous secret.
    pub fn check(&self, ip: Ipv4Addr, token: &[u8]) -> bool {
        token == make(&self.current, ip) || token == make(&self.previous, ip)
    }
}

fn secret(rng: &mut crate::rng::Rng) -> [u8; 16] {
    let mut s = [0u8; 16];
    s[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
    s[8..].copy_from_slice(&rng.next_u64().to_le_bytes());
    s
}

fn make(secret: &[u8; 16], ip: Ipv4Addr) -> [u8; TOKEN_LEN] {
    let mut h = Sha1::new();
    h.update(secret);
    h.update(ip.octets());
    let d = h.finalize();
    let mut t = [0u8; TOKEN_LEN];
    t.copy_from_slice(&d[..TOKEN_LEN]);
    t
}
