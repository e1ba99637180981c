//! Peer addresses to dial: from trackers, the command line and retries.
//!
//! Bound: at most [`MAX_CANDIDATES`] addresses. A tracker may answer with
//! a hundred thousand peers; each is checked against the table in O(1) (a
//! set beside the queue), at most [`MAX_PER_ANSWER`] are taken from one
//! answer, and when the table is full the oldest entry is evicted (newer
//! answers describe the swarm better). Entries older than [`MAX_AGE`] are
//! trimmed. Addresses given on the command line are retried by the session
//! on their own schedule, so evicting them loses nothing.

#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Most addresses kept.
pub const MAX_CANDIDATES: usize = 400;
/// Most addresses taken from one tracker answer.
pub const MAX_PER_ANSWER: usize = 200;
/// Addresses not dialed within this long are dropped.
pub const MAX_AGE: Duration = Duration::from_secs(30 * 60);

/// See the module docs.
#[derive(Debug, Default)]
pub struct Candidates {
    queue: VecDeque<(SocketAddr, Instant)>,
    set: HashSet<SocketAddr>,
}

impl Candidates {
    pub fn new() -> Candidates {
        Candidates::default()
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn contains(&self, addr: &SocketAddr) -> bool {
        self.set.contains(addr)
    }

    /// Add `addr` at the back unless it is already queued; evicts the
    /// oldest entry when full. Returns whether it was added.
    pub fn push(&mut self, addr: SocketAddr, now: Instant) -> bool {
        if self.set.contains(&addr) {
            return false;
        }
        if self.queue.len() >= MAX_CANDIDATES
            && let Some((old, _)) = self.queue.pop_front()
        {
            self.set.remove(&old);
        }
        self.set.insert(addr);
        self.queue.push_back((addr, now));
        true
    }

    /// Add the peers of one tracker answer (at most [`MAX_PER_ANSWER`]).
    /// Returns how many were new.
    pub fn extend_from_answer(&mut self, peers: &[SocketAddr], now: Instant) -> usize {
        peers
            .iter()
            .take(MAX_PER_ANSWER)
            .filter(|&&p| self.push(p, now))
            .count()
    }

    /// The next address to dial (the oldest).
    pub fn pop(&mut self) -> Option<SocketAddr> {
        let (addr, _) = self.queue.pop_front()?;
        self.set.remove(&addr);
        Some(addr)
    }

    /// Drop entries queued more than [`MAX_AGE`] ago.
    pub fn trim(&mut self, now: Instant) {
        while let Some(&(addr, at)) = self.queue.front() {
            if now.duration_since(at) < MAX_AGE {
                break;
            }
            self.queue.pop_front();
            self.set.remove(&addr);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn addr(i: u32) -> SocketAddr {
        SocketAddr::from(([127, (i >> 16) as u8, (i >> 8) as u8, i as u8], 6881))
    }

    #[test]
    fn a_huge_answer_is_capped_and_duplicates_are_ignored() {
        let now = Instant::now();
        let mut c = Candidates::new();
        let flood: Vec<SocketAddr> = (0..175_000).map(addr).collect();
        assert_eq!(c.extend_from_answer(&flood, now), MAX_PER_ANSWER);
        assert_eq!(c.extend_from_answer(&flood, now), 0, "all known");
        for i in 0..10 * MAX_CANDIDATES as u32 {
            c.push(addr(1_000_000 + i), now);
        }
        assert_eq!(c.len(), MAX_CANDIDATES);
        assert_eq!(c.set.len(), MAX_CANDIDATES);
        // The oldest went first: the newest are kept.
        assert!(c.contains(&addr(1_000_000 + 10 * MAX_CANDIDATES as u32 - 1)));
        assert!(!c.contains(&addr(0)));
    }

    #[test]
    fn pop_is_oldest_first_and_old_entries_age_out() {
        let now = Instant::now();
        let mut c = Candidates::new();
        c.push(addr(1), now);
        c.push(addr(2), now + Duration::from_secs(60));
        assert_eq!(c.pop(), Some(addr(1)));
        assert!(!c.contains(&addr(1)));
        c.push(addr(3), now + Duration::from_secs(120));
        c.trim(now + MAX_AGE + Duration::from_secs(90));
        assert_eq!(c.pop(), Some(addr(3)));
        assert_eq!(c.pop(), None);
    }
}
