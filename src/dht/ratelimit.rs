//! Per-address and global rate limits on the queries we answer.
//!
//! Per address: a token bucket in a fixed direct-mapped array of
//! [`SLOTS`] slots, indexed by a keyed hash of the IP address. A new
//! address takes over its slot, so spoofing many addresses costs no
//! memory (the array never grows) and is caught by the global bucket,
//! which caps answers per second whatever the source.
//!
//! # Bound
//! [`SLOTS`] × 24 bytes (24 KiB), allocated once.

use std::net::Ipv4Addr;
use std::time::Instant;

/// Slots in the per-address table.
pub const SLOTS: usize = 1024;

#[derive(Clone, Copy, Debug)]
struct Slot {
    ip: u32,
    allowance: f32,
    last: Option<Instant>,
}

/// Token buckets; see the module docs.
#[derive(Clone, Debug)]
pub struct RateLimiter {
    slots: Vec<Slot>,
    key: u64,
    per_ip_rate: f32,
    per_ip_burst: f32,
    global_rate: f32,
    global_burst: f32,
    global: f32,
    global_last: Option<Instant>,
}

impl RateLimiter {
    /// `per_ip` queries per second (burst of 4 s worth) per address, and
    /// `global` per second in all (burst of 1 s worth).
    pub fn new(per_ip: u32, global: u32, key: u64) -> RateLimiter {
        RateLimiter {
            slots: vec![
                Slot {
                    ip: 0,
                    allowance: 0.0,
                    last: None,
                };
                SLOTS
            ],
            key: key | 1,
            per_ip_rate: per_ip as f32,
            per_ip_burst: (per_ip * 4) as f32,
            global_rate: global as f32,
            global_burst: global as f32,
            global: global as f32,
            global_last: None,
        }
    }

    /// Whether a query from `ip` at `now` may be answered (and charge it).
    pub fn allow(&mut self, ip: Ipv4Addr, now: Instant) -> bool {
        let ipn = u32::from(ip);
        let h = (u64::from(ipn).wrapping_mul(self.key) >> 52) as usize % SLOTS;
        let (rate, burst) = (self.per_ip_rate, self.per_ip_burst);
        let s = &mut self.slots[h];
        if s.ip != ipn || s.last.is_none() {
            *s = Slot {
                ip: ipn,
                allowance: burst,
                last: Some(now),
            };
        } else if let Some(last) = s.last {
            let dt = now.saturating_duration_since(last).as_secs_f32();
            s.allowance = (s.allowance + dt * rate).min(burst);
            s.last = Some(now);
        }
        if s.allowance < 1.0 {
            return false;
        }
        if let Some(last) = self.global_last {
            let dt = now.saturating_duration_since(last).as_secs_f32();
            self.global = (self.global + dt * self.global_rate).min(self.global_burst);
        }
        self.global_last = Some(now);
        if self.global < 1.0 {
            return false;
        }
        self.global -= 1.0;
        s.allowance -= 1.0;
        true
    }

    pub fn memory(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Slot>()
    }
}
