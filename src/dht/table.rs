//! The routing table: k-buckets (k = 8) split around our own id (BEP 5).
//!
//! Bucket `i` (for `i` below the last) holds nodes whose id shares exactly
//! `i` leading bits with ours; the last bucket holds everything closer.
//! Only the last bucket splits, so the table covers the whole id space
//! with fine detail near us and at most [`MAX_BUCKETS`] buckets.
//!
//! Node states are those of the BEP: *good* (answered us within
//! [`GOOD_FOR`], or answered us once and queried us within it), *bad*
//! (failed [`MAX_FAILS`] queries in a row) and *questionable* (the rest).
//! Only nodes that have answered one of our queries enter a bucket; a
//! node heard only through its queries waits in the bucket's replacement
//! list until a ping confirms it. A full bucket takes a newcomer only in
//! place of a bad node; otherwise the newcomer becomes a replacement, and
//! the maintenance pass pings the stalest questionable node so that a
//! dead one turns bad and is replaced.
//!
//! # Bound
//! At most [`MAX_BUCKETS`] × ([`K`] entries + [`K`] replacements) = 2,560
//! entries (about 200 KiB). One IP address holds at most one entry per
//! bucket (when `restrict_ips`), so one host cannot fill a bucket.

use super::NodeId;
use crate::rng::Rng;
use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

/// Nodes per bucket (and replacements per bucket).
pub const K: usize = 8;
/// Most buckets: one per bit of the id space.
pub const MAX_BUCKETS: usize = 160;
/// Unanswered queries in a row that make a node bad.
pub const MAX_FAILS: u8 = 2;
/// How long an answer (or a query after one) keeps a node good.
pub const GOOD_FOR: Duration = Duration::from_secs(15 * 60);
/// A bucket untouched this long is refreshed with a lookup.
pub const REFRESH_AFTER: Duration = Duration::from_secs(15 * 60);
/// A node (or replacement) pinged by maintenance is not pinged again for this long.
pub const PING_AGAIN_AFTER: Duration = Duration::from_secs(60);

/// A node's state (BEP 5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeState {
    Good,
    Questionable,
    Bad,
}

/// One known node.
#[derive(Clone, Debug)]
pub struct Entry {
    pub id: NodeId,
    pub addr: SocketAddrV4,
    /// When it last answered one of our queries.
    pub last_reply: Option<Instant>,
    /// When it last queried us.
    pub last_query: Option<Instant>,
    /// Queries unanswered in a row.
    pub fails: u8,
    /// When maintenance last pinged it.
    pub pinged: Option<Instant>,
}

impl Entry {
    fn new(id: NodeId, addr: SocketAddrV4) -> Entry {
        Entry {
            id,
            addr,
            last_reply: None,
            last_query: None,
            fails: 0,
            pinged: None,
        }
    }

    /// Its state at `now`.
    pub fn state(&self, now: Instant) -> NodeState {
        let recent =
            |t: Option<Instant>| t.is_some_and(|t| now.saturating_duration_since(t) < GOOD_FOR);
        if self.fails >= MAX_FAILS {
            NodeState::Bad
        } else if recent(self.last_reply) || (self.last_reply.is_some() && recent(self.last_query))
        {
            NodeState::Good
        } else {
            NodeState::Questionable
        }
    }

    fn last_seen(&self) -> Option<Instant> {
        self.last_reply.max(self.last_query)
    }
}

#[derive(Clone, Debug)]
struct Bucket {
    /// At most [`K`]; only nodes that answered us once.
    nodes: Vec<Entry>,
    /// At most [`K`]; the oldest is evicted for a newcomer.
    replacements: Vec<Entry>,
    last_changed: Instant,
}

impl Bucket {
    fn new(now: Instant) -> Bucket {
        Bucket {
            nodes: Vec::new(),
            replacements: Vec::new(),
            last_changed: now,
        }
    }
}

/// How we heard from a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Heard {
    /// It answered one of our queries.
    Reply,
    /// It sent us a query.
    Query,
}

/// What maintenance wants done.
#[derive(Debug, Default)]
pub struct Maintenance {
    /// Nodes to ping.
    pub pings: Vec<(NodeId, SocketAddrV4)>,
    /// Targets to look up (stale buckets).
    pub refresh: Vec<NodeId>,
}

/// The routing table: see the module docs.
#[derive(Clone, Debug)]
pub struct RoutingTable {
    own: NodeId,
    buckets: Vec<Bucket>,
    /// One entry per IP address per bucket.
    restrict_ips: bool,
}

impl RoutingTable {
    pub fn new(own: NodeId, restrict_ips: bool, now: Instant) -> RoutingTable {
        RoutingTable {
            own,
            buckets: vec![Bucket::new(now)],
            restrict_ips,
        }
    }

    pub fn own_id(&self) -> NodeId {
        self.own
    }

    fn index(&self, id: &NodeId) -> usize {
        self.own.common_prefix(id).min(self.buckets.len() - 1)
    }

    /// Nodes in buckets (not counting replacements).
    pub fn len(&self) -> usize {
        self.buckets.iter().map(|b| b.nodes.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Good nodes at `now`.
    pub fn good(&self, now: Instant) -> usize {
        self.buckets
            .iter()
            .flat_map(|b| &b.nodes)
            .filter(|e| e.state(now) == NodeState::Good)
            .count()
    }

    pub fn bucket_count(&self) -> usize {
        self.buckets.len()
    }

    /// Every bucket entry (for saving and tests).
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.buckets.iter().flat_map(|b| &b.nodes)
    }

    /// The entry for `id`, if in a bucket.
    pub fn get(&self, id: &NodeId) -> Option<&Entry> {
        self.buckets[self.index(id)]
            .nodes
            .iter()
            .find(|e| e.id == *id)
    }

    /// Approximate heap bytes held.
    pub fn memory(&self) -> usize {
        self.buckets.capacity() * std::mem::size_of::<Bucket>()
            + self
                .buckets
                .iter()
                .map(|b| {
                    (b.nodes.capacity() + b.replacements.capacity()) * std::mem::size_of::<Entry>()
                })
                .sum::<usize>()
    }

    /// Record that `id` at `addr` answered us or queried us. Returns
    /// whether the node is now in a bucket.
    pub fn heard(&mut self, id: NodeId, addr: SocketAddrV4, how: Heard, now: Instant) -> bool {
        if id == self.own {
            return false;
        }
        // Bounded: each split moves the last bucket one bit deeper.
        for _ in 0..=MAX_BUCKETS {
            let i = self.index(&id);
            let last = i + 1 == self.buckets.len();
            let restrict = self.restrict_ips;
            let b = &mut self.buckets[i];
            if let Some(e) = b.nodes.iter_mut().find(|e| e.id == id) {
                if e.addr != addr {
                    // Keep the address we know; a spoofer cannot move it.
                    return true;
                }
                match how {
                    Heard::Reply => {
                        e.last_reply = Some(now);
                        e.fails = 0;
                        b.last_changed = now;
                    }
                    Heard::Query => e.last_query = Some(now),
                }
                return true;
            }
            if restrict && b.nodes.iter().any(|e| e.addr.ip() == addr.ip()) {
                return false;
            }
            if how == Heard::Query {
                remember_replacement(b, id, addr, None, now);
                return false;
            }
            let mut entry = Entry::new(id, addr);
            entry.last_reply = Some(now);
            b.replacements.retain(|e| e.id != id);
            if b.nodes.len() < K {
                b.nodes.push(entry);
                b.last_changed = now;
                return true;
            }
            if let Some(bad) = b.nodes.iter_mut().find(|e| e.state(now) == NodeState::Bad) {
                *bad = entry;
                b.last_changed = now;
                return true;
            }
            if last && self.buckets.len() < MAX_BUCKETS {
                self.split(now);
                continue;
            }
            remember_replacement(&mut self.buckets[i], id, addr, Some(now), now);
            return false;
        }
        false
    }

    /// Whether a node heard only through its query (now a replacement)
    /// should be pinged at once: its bucket has room (or a bad node, or
    /// can split) and it was not pinged within [`PING_AGAIN_AFTER`].
    /// Marks it pinged.
    pub fn should_verify(&mut self, id: &NodeId, now: Instant) -> bool {
        let i = self.index(id);
        let splittable = i + 1 == self.buckets.len() && self.buckets.len() < MAX_BUCKETS;
        let b = &mut self.buckets[i];
        let room = splittable
            || b.nodes.len() < K
            || b.nodes.iter().any(|e| e.state(now) == NodeState::Bad);
        if !room {
            return false;
        }
        match b.replacements.iter_mut().find(|e| e.id == *id) {
            Some(e)
                if e.pinged
                    .is_none_or(|p| now.saturating_duration_since(p) >= PING_AGAIN_AFTER) =>
            {
                e.pinged = Some(now);
                true
            }
            _ => false,
        }
    }

    /// A query to `id` at `addr` went unanswered.
    pub fn failed(&mut self, id: &NodeId, addr: SocketAddrV4, now: Instant) {
        let i = self.index(id);
        let b = &mut self.buckets[i];
        if let Some(pos) = b.nodes.iter().position(|e| e.id == *id && e.addr == addr) {
            let e = &mut b.nodes[pos];
            e.fails = e.fails.saturating_add(1);
            if e.state(now) == NodeState::Bad {
                // The freshest verified replacement takes its place.
                if let Some(r) = (0..b.replacements.len())
                    .rev()
                    .find(|&r| b.replacements[r].last_reply.is_some())
                {
                    let mut rep = b.replacements.remove(r);
                    rep.fails = 0;
                    b.nodes[pos] = rep;
                    b.last_changed = now;
                }
            }
        } else if let Some(pos) = b.replacements.iter().position(|e| e.id == *id) {
            b.replacements.remove(pos);
        }
    }

    /// Drop `id` from its bucket (it gave a wrong id or garbage).
    pub fn remove(&mut self, id: &NodeId) {
        let i = self.index(id);
        let b = &mut self.buckets[i];
        b.nodes.retain(|e| e.id != *id);
        b.replacements.retain(|e| e.id != *id);
    }

    fn split(&mut self, now: Instant) {
        let depth = self.buckets.len() - 1;
        let own = self.own;
        let old = self.buckets.last_mut().expect("a table has a bucket");
        let mut new = Bucket::new(now);
        let (stay, go): (Vec<Entry>, Vec<Entry>) = old
            .nodes
            .drain(..)
            .partition(|e| own.common_prefix(&e.id) == depth);
        old.nodes = stay;
        new.nodes = go;
        let (stay, go): (Vec<Entry>, Vec<Entry>) = old
            .replacements
            .drain(..)
            .partition(|e| own.common_prefix(&e.id) == depth);
        old.replacements = stay;
        new.replacements = go;
        self.buckets.push(new);
    }

    /// The `n` closest non-bad nodes to `target`, closest first.
    pub fn closest(&self, target: &NodeId, n: usize, now: Instant) -> Vec<(NodeId, SocketAddrV4)> {
        // Distances computed once, as integers (compared without memcmp).
        let key = |id: &NodeId| {
            let d = id.distance(target);
            let hi = u128::from_be_bytes(d[..16].try_into().expect("16 bytes"));
            let lo = u32::from_be_bytes(d[16..].try_into().expect("4 bytes"));
            (hi, lo)
        };
        let mut all: Vec<((u128, u32), NodeId, SocketAddrV4)> = Vec::with_capacity(self.len());
        all.extend(
            self.buckets
                .iter()
                .flat_map(|b| &b.nodes)
                .filter(|e| e.state(now) != NodeState::Bad)
                .map(|e| (key(&e.id), e.id, e.addr)),
        );
        if all.len() > n && n > 0 {
            all.select_nth_unstable_by_key(n - 1, |e| e.0);
            all.truncate(n);
        }
        all.sort_unstable_by_key(|e| e.0);
        all.truncate(n);
        all.into_iter().map(|(_, id, a)| (id, a)).collect()
    }

    /// Random targets in every bucket that has fewer than [`K`] nodes
    /// (looked up once after bootstrap, so far buckets fill at once
    /// rather than after the first 15-minute refresh).
    pub fn underfull_targets(&mut self, now: Instant, rng: &mut Rng) -> Vec<NodeId> {
        let own = self.own;
        let mut out = Vec::new();
        for (depth, b) in self.buckets.iter_mut().enumerate() {
            if b.nodes.len() < K {
                b.last_changed = now;
                out.push(own.random_in_bucket(depth, rng));
            }
        }
        out
    }

    /// Pings and refreshes due at `now` (bounded: one ping per bucket and
    /// one refresh per bucket per call).
    pub fn maintenance(&mut self, now: Instant, rng: &mut Rng) -> Maintenance {
        let mut m = Maintenance::default();
        let own = self.own;
        let due = |p: Option<Instant>| {
            p.is_none_or(|p| now.saturating_duration_since(p) >= PING_AGAIN_AFTER)
        };
        for (depth, b) in self.buckets.iter_mut().enumerate() {
            if now.saturating_duration_since(b.last_changed) >= REFRESH_AFTER {
                b.last_changed = now;
                m.refresh.push(own.random_in_bucket(depth, rng));
            }
            // The stalest questionable node, so a dead one turns bad.
            let stalest = b
                .nodes
                .iter_mut()
                .filter(|e| e.state(now) == NodeState::Questionable && due(e.pinged))
                .min_by_key(|e| e.last_seen());
            if let Some(e) = stalest {
                e.pinged = Some(now);
                m.pings.push((e.id, e.addr));
                continue;
            }
            // Room (or a bad node) and an unconfirmed replacement: ping it.
            let room = b.nodes.len() < K || b.nodes.iter().any(|e| e.state(now) == NodeState::Bad);
            if room && let Some(r) = b.replacements.iter_mut().rev().find(|e| due(e.pinged)) {
                r.pinged = Some(now);
                m.pings.push((r.id, r.addr));
            }
        }
        m
    }
}

/// Put `(id, addr)` among the bucket's replacements (evicting the oldest).
fn remember_replacement(
    b: &mut Bucket,
    id: NodeId,
    addr: SocketAddrV4,
    reply: Option<Instant>,
    now: Instant,
) {
    if let Some(e) = b.replacements.iter_mut().find(|e| e.id == id) {
        if e.addr == addr {
            if reply.is_some() {
                e.last_reply = reply;
            } else {
                e.last_query = Some(now);
            }
        }
        return;
    }
    if b.replacements.len() >= K {
        b.replacements.remove(0);
    }
    let mut e = Entry::new(id, addr);
    e.last_reply = reply;
    if reply.is_none() {
        e.last_query = Some(now);
    }
    b.replacements.push(e);
}
