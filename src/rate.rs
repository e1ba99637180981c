//! Token buckets for rate limits (bytes per second), sans-IO.
//!
//! A bucket fills at its rate, holds at most one second's worth, and may go
//! below zero by what one message takes (a block is sent whole): the debt
//! is paid back before anything more passes. `None` is unlimited.

#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

use std::time::{Duration, Instant};

/// See the module docs.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    rate: Option<u64>,
    tokens: i64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(rate: Option<u64>, now: Instant) -> TokenBucket {
        TokenBucket {
            rate: rate.filter(|&r| r > 0),
            tokens: 0,
            last: now,
        }
    }

    /// The limit in bytes per second (None: unlimited).
    pub fn rate(&self) -> Option<u64> {
        self.rate
    }

    /// Change the limit; what is banked is kept within the new burst.
    pub fn set_rate(&mut self, rate: Option<u64>) {
        self.rate = rate.filter(|&r| r > 0);
        if let Some(r) = self.rate {
            self.tokens = self.tokens.min(r as i64);
        }
    }

    /// Add what `now - last` earns, up to one second's worth.
    pub fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        if let Some(r) = self.rate {
            self.tokens = (self.tokens + (r as f64 * dt) as i64).min(r as i64);
        }
    }

    /// Bytes that may pass now (`usize::MAX` when unlimited).
    pub fn available(&self) -> usize {
        match self.rate {
            None => usize::MAX,
            Some(_) => usize::try_from(self.tokens.max(0)).unwrap_or(0),
        }
    }

    /// `n` bytes passed.
    pub fn take(&mut self, n: usize) {
        if self.rate.is_some() {
            self.tokens = self
                .tokens
                .saturating_sub(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// When something may pass again, if nothing may now.
    pub fn ready_at(&self, now: Instant) -> Option<Instant> {
        let r = self.rate?;
        if self.tokens > 0 {
            return None;
        }
        // Enough to clear the debt and let a little through (~1/50 s).
        let want = (-self.tokens) as f64 + (r / 50).max(1) as f64;
        Some(now + Duration::from_secs_f64(want / r as f64))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_fills_at_its_rate_up_to_a_second_and_pays_debts_first() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(Some(1000), t0);
        assert_eq!(b.available(), 0);
        b.refill(t0 + Duration::from_millis(500));
        assert_eq!(b.available(), 500);
        b.refill(t0 + Duration::from_secs(10));
        assert_eq!(b.available(), 1000, "one second's worth at most");
        b.take(1600);
        assert_eq!(b.available(), 0);
        let at = b.ready_at(t0 + Duration::from_secs(10)).unwrap();
        assert!(at >= t0 + Duration::from_millis(10_600));
        b.refill(t0 + Duration::from_millis(10_700));
        assert_eq!(b.available(), 100);
        b.set_rate(None);
        assert_eq!(b.available(), usize::MAX);
        assert!(b.ready_at(t0).is_none());
    }
}
