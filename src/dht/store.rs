//! Peers announced to us (`announce_peer`), per info-hash, with expiry.
//!
//! # Bound
//! At most [`StoreCaps::max_swarms`] info-hashes, [`StoreCaps::max_peers_per_swarm`]
//! peers each and [`StoreCaps::max_total`] peers in all; one source IP
//! address holds at most [`StoreCaps::max_per_source`] entries (more are
//! ignored). With the defaults: 20,000 peers and 2,000 info-hashes,
//! about 1.3 MiB ([`PeerStore::memory`] measures it).
//!
//! # Eviction
//! A new info-hash when the table is full evicts the smallest of 8
//! swarms picked at random (a flood of one-peer swarms mostly evicts
//! itself); a full swarm replaces a random entry; a full store drops one
//! entry of a random swarm. Entries expire [`PEER_TTL`] after their last
//! announce.

use super::NodeId;
use crate::rng::Rng;
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

/// An announced peer is forgotten this long after its last announce.
pub const PEER_TTL: Duration = Duration::from_secs(30 * 60);

/// The store's caps.
#[derive(Clone, Copy, Debug)]
pub struct StoreCaps {
    pub max_swarms: usize,
    pub max_peers_per_swarm: usize,
    pub max_total: usize,
    pub max_per_source: u32,
}

impl Default for StoreCaps {
    fn default() -> StoreCaps {
        StoreCaps {
            max_swarms: 2000,
            max_peers_per_swarm: 100,
            max_total: 20_000,
            max_per_source: 32,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Stored {
    addr: SocketAddrV4,
    source: Ipv4Addr,
    expires: Instant,
}

#[derive(Clone, Debug)]
struct Swarm {
    info_hash: NodeId,
    peers: Vec<Stored>,
}

/// See the module docs.
#[derive(Clone, Debug)]
pub struct PeerStore {
    caps: StoreCaps,
    swarms: Vec<Swarm>,
    index: HashMap<NodeId, usize>,
    /// Entries per source address; its size is bounded by `max_total`.
    per_source: HashMap<Ipv4Addr, u32>,
    total: usize,
}

impl PeerStore {
    pub fn new(caps: StoreCaps) -> PeerStore {
        PeerStore {
            caps,
            swarms: Vec::new(),
            index: HashMap::new(),
            per_source: HashMap::new(),
            total: 0,
        }
    }

    pub fn swarms(&self) -> usize {
        self.swarms.len()
    }

    pub fn peers(&self) -> usize {
        self.total
    }

    /// Approximate heap bytes held.
    pub fn memory(&self) -> usize {
        self.swarms.capacity() * std::mem::size_of::<Swarm>()
            + self
                .swarms
                .iter()
                .map(|s| s.peers.capacity() * std::mem::size_of::<Stored>())
                .sum::<usize>()
            + self.index.capacity() * (std::mem::size_of::<(NodeId, usize)>() + 1)
            + self.per_source.capacity() * (std::mem::size_of::<(Ipv4Addr, u32)>() + 1)
    }

    /// The most this store can hold with its caps, in the units of [`PeerStore::memory`]
    /// (hash maps at their worst load factor, vectors at twice their length).
    pub fn memory_bound(caps: &StoreCaps) -> usize {
        2 * caps.max_swarms * std::mem::size_of::<Swarm>()
            + 2 * caps.max_total.max(caps.max_peers_per_swarm) * std::mem::size_of::<Stored>()
            + 2 * caps.max_swarms * (std::mem::size_of::<(NodeId, usize)>() + 1)
            + 2 * caps.max_total * (std::mem::size_of::<(Ipv4Addr, u32)>() + 1)
    }

    /// Record `addr` as a peer of `info_hash`, announced from `source`.
    pub fn announce(
        &mut self,
        info_hash: NodeId,
        addr: SocketAddrV4,
        source: Ipv4Addr,
        now: Instant,
        rng: &mut Rng,
    ) {
        let expires = now + PEER_TTL;
        if let Some(&i) = self.index.get(&info_hash)
            && let Some(p) = self.swarms[i].peers.iter_mut().find(|p| p.addr == addr)
        {
            p.expires = expires;
            return;
        }
        if self.per_source.get(&source).copied().unwrap_or(0) >= self.caps.max_per_source {
            return;
        }
        let i = match self.index.get(&info_hash) {
            Some(&i) => i,
            None => {
                if self.swarms.len() >= self.caps.max_swarms {
                    self.evict_swarm(rng);
                }
                self.swarms.push(Swarm {
                    info_hash,
                    peers: Vec::new(),
                });
                let i = self.swarms.len() - 1;
                self.index.insert(info_hash, i);
                i
            }
        };
        if self.swarms[i].peers.len() >= self.caps.max_peers_per_swarm {
            let victim = (rng.next_u64() as usize) % self.swarms[i].peers.len();
            let old = self.swarms[i].peers.swap_remove(victim);
            self.forget(old.source);
        } else if self.total >= self.caps.max_total {
            self.evict_one(rng, i);
        }
        self.swarms[i].peers.push(Stored {
            addr,
            source,
            expires,
        });
        self.total += 1;
        *self.per_source.entry(source).or_insert(0) += 1;
    }

    /// Up to `n` live peers of `info_hash` (a random sample when more).
    pub fn get(
        &self,
        info_hash: &NodeId,
        n: usize,
        now: Instant,
        rng: &mut Rng,
    ) -> Vec<SocketAddrV4> {
        let Some(&i) = self.index.get(info_hash) else {
            return Vec::new();
        };
        let live: Vec<SocketAddrV4> = self.swarms[i]
            .peers
            .iter()
            .filter(|p| p.expires > now)
            .map(|p| p.addr)
            .collect();
        if live.len() <= n {
            return live;
        }
        let mut live = live;
        for k in 0..n {
            let j = k + (rng.next_u64() as usize) % (live.len() - k);
            live.swap(k, j);
        }
        live.truncate(n);
        live
    }

    /// Drop expired entries and empty swarms (walks at most `max_total` entries).
    pub fn expire(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.swarms.len() {
            let mut gone = Vec::new();
            self.swarms[i].peers.retain(|p| {
                let keep = p.expires > now;
                if !keep {
                    gone.push(p.source);
                }
                keep
            });
            for s in gone {
                self.forget(s);
            }
            if self.swarms[i].peers.is_empty() {
                self.remove_swarm(i);
            } else {
                i += 1;
            }
        }
    }

    fn forget(&mut self, source: Ipv4Addr) {
        self.total -= 1;
        if let Some(c) = self.per_source.get_mut(&source) {
            *c -= 1;
            if *c == 0 {
                self.per_source.remove(&source);
            }
        }
    }

    fn remove_swarm(&mut self, i: usize) {
        let s = self.swarms.swap_remove(i);
        self.index.remove(&s.info_hash);
        for p in &s.peers {
            self.forget(p.source);
        }
        if let Some(moved) = self.swarms.get(i) {
            self.index.insert(moved.info_hash, i);
        }
    }

    fn evict_swarm(&mut self, rng: &mut Rng) {
        let n = self.swarms.len();
        if n == 0 {
            return;
        }
        let victim = (0..8)
            .map(|_| (rng.next_u64() as usize) % n)
            .min_by_key(|&i| self.swarms[i].peers.len())
            .unwrap_or(0);
        self.remove_swarm(victim);
    }

    /// Drop one entry of a random swarm other than `keep` (when possible).
    fn evict_one(&mut self, rng: &mut Rng, keep: usize) {
        let n = self.swarms.len();
        for _ in 0..8 {
            let i = (rng.next_u64() as usize) % n;
            if i != keep && !self.swarms[i].peers.is_empty() {
                let p = self.swarms[i].peers.swap_remove(0);
                self.forget(p.source);
                if self.swarms[i].peers.is_empty() {
                    self.remove_swarm(i);
                }
                return;
            }
        }
        if !self.swarms[keep].peers.is_empty() {
            let p = self.swarms[keep].peers.swap_remove(0);
            self.forget(p.source);
        }
    }
}
