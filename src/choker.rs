//! Who we upload to: unchoke slots by rate plus one optimistic unchoke.
//!
//! Every [`ROUND`] the [`Choker`] ranks the peers that are interested in us
//! by rate (what they gave us while we leech, what we gave them while we
//! seed; the caller decides which) and unchokes the best `slots` of them.
//! One more peer, chosen at random among the rest, gets the optimistic
//! unchoke, so newcomers get a chance to show their rate; it moves on every
//! [`OPTIMISTIC_ROTATION`]. Everybody else is choked. Only changes are
//! reported. Peers that have every piece never want data from us, so they
//! never take a slot.

#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

use std::time::{Duration, Instant};

use crate::picker::PeerKey;

/// Time between choke rounds.
pub const ROUND: Duration = Duration::from_secs(10);
/// How long one peer keeps the optimistic unchoke (every third round).
pub const OPTIMISTIC_ROTATION: Duration = Duration::from_secs(30);

/// What the choker needs to know about one connected peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChokeCandidate {
    /// The peer's slab key.
    pub key: PeerKey,
    /// The peer is interested in our pieces.
    pub interested: bool,
    /// Bytes per second: what they gave us while we leech, what we gave
    /// them while we seed.
    pub rate: u64,
    /// The peer has every piece.
    pub is_seed: bool,
    /// We currently choke the peer.
    pub choked: bool,
}

/// Decides, once per round, which peers we unchoke.
#[derive(Debug)]
pub struct Choker {
    slots: usize,
    rng: crate::rng::Rng,
    next_round: Instant,
    last_round: Instant,
    optimistic: Option<PeerKey>,
    optimistic_since: Instant,
    /// Scratch: eligible peers as `(rate, random tie-break, key)`.
    ranked: Vec<(u64, u64, PeerKey)>,
}

impl Choker {
    /// A choker with `slots` regular unchoke slots (4 is customary); the
    /// first round runs at `now`. `seed` drives the random choices.
    pub fn new(slots: usize, seed: u64, now: Instant) -> Self {
        Choker {
            slots,
            rng: crate::rng::Rng::new(seed),
            next_round: now,
            last_round: now,
            optimistic: None,
            optimistic_since: now,
            ranked: Vec::new(),
        }
    }

    /// When the next round is due.
    pub fn poll_timeout(&self) -> Instant {
        self.next_round
    }

    /// The peer holding the optimistic unchoke, if any.
    pub fn optimistic(&self) -> Option<PeerKey> {
        self.optimistic
    }

    /// Run a round if one is due: append `(key, choke)` to `out` for every
    /// peer in `peers` whose choke state must change (`true` = choke it).
    pub fn tick(&mut self, now: Instant, peers: &[ChokeCandidate], out: &mut Vec<(PeerKey, bool)>) {
        if now < self.next_round {
            return;
        }
        self.last_round = now;
        self.next_round = now + ROUND;

        let mut ranked = std::mem::take(&mut self.ranked);
        ranked.clear();
        for p in peers {
            if p.interested && !p.is_seed {
                let tie = self.next_rand();
                ranked.push((p.rate, tie, p.key));
            }
        }
        // Highest rate first; equal rates in random order.
        ranked.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        // No slots at all (the hidden `--choke-all`): no optimistic
        // unchoke either.
        if self.slots == 0 {
            ranked.clear();
        }
        let split = self.slots.min(ranked.len());
        let (best, rest) = ranked.split_at(split);
        let current_ok = self
            .optimistic
            .is_some_and(|k| rest.iter().any(|r| r.2 == k));
        let due = now.saturating_duration_since(self.optimistic_since) >= OPTIMISTIC_ROTATION;
        if !current_ok || due {
            // Rotate to somebody else when we can; keep the current one if
            // it is the only candidate left.
            let others = rest.iter().filter(|r| Some(r.2) != self.optimistic).count();
            if others > 0 {
                let pick = (self.next_rand() % others as u64) as usize;
                let current = self.optimistic;
                let chosen = rest
                    .iter()
                    .filter(|r| Some(r.2) != current)
                    .nth(pick)
                    .map(|r| r.2);
                self.optimistic = chosen;
                self.optimistic_since = now;
            } else if !current_ok {
                self.optimistic = None;
            }
        }

        for p in peers {
            let unchoke = best.iter().any(|b| b.2 == p.key) || self.optimistic == Some(p.key);
            if unchoke == p.choked {
                out.push((p.key, !unchoke));
            }
        }
        self.ranked = ranked;
    }

    /// A peer disconnected; if it held the optimistic unchoke, a new one is
    /// chosen at the next round.
    pub fn on_peer_gone(&mut self, key: PeerKey) {
        if self.optimistic == Some(key) {
            self.optimistic = None;
        }
    }

    /// Make the next [`Self::tick`] run a round at once (for example when a
    /// newly interested peer could take a free slot). The following rounds
    /// are again [`ROUND`] apart.
    pub fn round_now(&mut self) {
        self.next_round = self.last_round;
    }

    fn next_rand(&mut self) -> u64 {
        self.rng.next_u64()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests may panic
mod tests {
    use super::*;

    fn peer(key: PeerKey, rate: u64) -> ChokeCandidate {
        ChokeCandidate {
            key,
            interested: true,
            rate,
            is_seed: false,
            choked: true,
        }
    }

    /// Run a round at `now` and apply its changes to `peers`.
    fn round(c: &mut Choker, now: Instant, peers: &mut [ChokeCandidate]) -> Vec<(PeerKey, bool)> {
        let mut out = Vec::new();
        c.tick(now, peers, &mut out);
        for &(k, choke) in &out {
            let p = peers.iter_mut().find(|p| p.key == k).unwrap();
            assert_ne!(p.choked, choke, "emitted a non-change for {k}");
            p.choked = choke;
        }
        out
    }

    fn unchoked(peers: &[ChokeCandidate]) -> Vec<PeerKey> {
        let mut v: Vec<_> = peers.iter().filter(|p| !p.choked).map(|p| p.key).collect();
        v.sort();
        v
    }

    #[test]
    fn best_four_by_rate_unchoked() {
        let t0 = Instant::now();
        let mut c = Choker::new(4, 1, t0);
        // Keys 0..8 with rates 0, 100, ..., 700.
        let mut peers: Vec<_> = (0..8).map(|k| peer(PeerKey(k), k as u64 * 100)).collect();
        round(&mut c, t0, &mut peers);
        let on = unchoked(&peers);
        assert_eq!(on.len(), 5);
        assert!([4, 5, 6, 7].iter().all(|&k| on.contains(&PeerKey(k))));
        let opt = c.optimistic().unwrap();
        assert!(opt < PeerKey(4) && on.contains(&opt));
    }

    #[test]
    fn seeds_take_no_slot_and_ties_are_random() {
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..20 {
            let t0 = Instant::now();
            let mut c = Choker::new(1, seed, t0);
            let mut peers: Vec<_> = (0..4).map(|k| peer(PeerKey(k), 50)).collect();
            peers.push(ChokeCandidate {
                is_seed: true,
                ..peer(PeerKey(9), 1000)
            });
            round(&mut c, t0, &mut peers);
            assert!(peers[4].choked, "a seed got a slot");
            let on = unchoked(&peers);
            assert_eq!(on.len(), 2);
            seen.insert(on.into_iter().find(|&k| Some(k) != c.optimistic()).unwrap());
        }
        assert!(seen.len() > 1, "equal rates always favoured {seen:?}");
    }

    #[test]
    fn uninterested_peers_not_given_slots() {
        let t0 = Instant::now();
        let mut c = Choker::new(4, 2, t0);
        let mut peers: Vec<_> = (0..6).map(|k| peer(PeerKey(k), 10 + k as u64)).collect();
        for p in &mut peers[3..] {
            p.interested = false;
            p.rate = 1_000_000;
        }
        peers[5].choked = false; // unchoked earlier, no longer interested
        let out = round(&mut c, t0, &mut peers);
        assert_eq!(unchoked(&peers), vec![PeerKey(0), PeerKey(1), PeerKey(2)]);
        assert!(out.contains(&(PeerKey(5), true)));
        assert_eq!(c.optimistic(), None, "nobody left for the optimistic slot");
    }

    #[test]
    fn optimistic_rotates_every_30s_and_is_outside_the_best_four() {
        let t0 = Instant::now();
        let mut c = Choker::new(4, 3, t0);
        let mut peers: Vec<_> = (0..10).map(|k| peer(PeerKey(k), 1000 - k as u64)).collect();
        let mut history = Vec::new();
        for r in 0..10u64 {
            round(&mut c, t0 + ROUND * r as u32, &mut peers);
            let opt = c.optimistic().unwrap();
            assert!(
                opt >= PeerKey(4),
                "optimistic {opt} is one of the best four"
            );
            assert_eq!(unchoked(&peers).len(), 5);
            history.push(opt);
        }
        for r in 1..10 {
            if r % 3 == 0 {
                assert_ne!(history[r], history[r - 1], "no rotation at round {r}");
            } else {
                assert_eq!(history[r], history[r - 1], "early rotation at round {r}");
            }
        }
        assert_eq!(c.poll_timeout(), t0 + ROUND * 10);
    }

    #[test]
    fn only_changes_emitted() {
        let t0 = Instant::now();
        let mut c = Choker::new(4, 4, t0);
        let mut peers: Vec<_> = (0..7).map(|k| peer(PeerKey(k), k as u64)).collect();
        let first = round(&mut c, t0, &mut peers);
        assert_eq!(first.len(), 5);
        assert!(first.iter().all(|&(_, choke)| !choke));
        // Nothing happens before the round is due.
        let mut out = Vec::new();
        c.tick(t0 + ROUND / 2, &peers, &mut out);
        assert!(out.is_empty());
        assert!(round(&mut c, t0 + ROUND, &mut peers).is_empty());
        // A peer speeds up: exactly one swap in the regular slots.
        peers[0].rate = 100;
        let opt = c.optimistic().unwrap();
        let out = round(&mut c, t0 + ROUND * 2, &mut peers);
        if opt == PeerKey(0) {
            // Peer 0 moves from optimistic to a regular slot; peer 3 drops
            // out of the best four and a new optimistic is chosen.
            assert!(out.iter().all(|&(k, _)| k != PeerKey(0)));
        } else {
            assert!(out.contains(&(PeerKey(0), false)));
            assert!(out.contains(&(PeerKey(3), true)) || c.optimistic() == Some(PeerKey(3)));
        }
    }

    #[test]
    fn gone_optimistic_replaced() {
        let t0 = Instant::now();
        let mut c = Choker::new(2, 5, t0);
        let mut peers: Vec<_> = (0..6).map(|k| peer(PeerKey(k), 100 - k as u64)).collect();
        round(&mut c, t0, &mut peers);
        let opt = c.optimistic().unwrap();
        c.on_peer_gone(opt);
        peers.retain(|p| p.key != opt);
        let out = round(&mut c, t0 + ROUND, &mut peers);
        let new = c.optimistic().unwrap();
        assert_ne!(new, opt);
        assert!(new >= PeerKey(2));
        assert_eq!(out, vec![(new, false)]);
    }

    #[test]
    fn round_now_runs_the_next_tick_at_once() {
        let t0 = Instant::now();
        let mut c = Choker::new(4, 6, t0);
        let mut peers = vec![peer(PeerKey(1), 10)];
        round(&mut c, t0, &mut peers);
        peers.push(peer(PeerKey(2), 20));
        assert!(round(&mut c, t0 + ROUND / 5, &mut peers).is_empty());
        c.round_now();
        assert!(c.poll_timeout() <= t0 + ROUND / 5);
        let out = round(&mut c, t0 + ROUND / 5, &mut peers);
        assert_eq!(out, vec![(PeerKey(2), false)]);
        assert_eq!(c.poll_timeout(), t0 + ROUND / 5 + ROUND);
    }
}
