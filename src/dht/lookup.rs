//! One iterative lookup (`find_node` or `get_peers`, BEP 5 / Kademlia).
//!
//! Candidates are kept sorted by distance to the target (bootstrap
//! addresses, whose ids are unknown, sort first). At most [`ALPHA`]
//! queries are in flight; a query goes only to a fresh candidate among
//! the [`K`] closest that have not failed. The lookup is done when those
//! `K` have all answered (converged), when no candidate is left, or when
//! it has sent [`MAX_QUERIES`] queries.
//!
//! # Bound
//! At most [`MAX_CANDIDATES`] candidates (the farthest are dropped), at
//! most [`MAX_SEEN`] addresses remembered as already tried, at most
//! [`MAX_PEERS`] peers collected, and [`MAX_QUERIES`] queries.

use super::NodeId;
use super::table::K;
use std::collections::HashSet;
use std::net::SocketAddrV4;
use std::time::Instant;

/// Queries in flight per lookup.
pub const ALPHA: usize = 4;
/// Candidates kept, closest first.
pub const MAX_CANDIDATES: usize = 64;
/// Addresses remembered as seen (a node is queried at most once).
pub const MAX_SEEN: usize = 512;
/// Peers collected by a `get_peers` lookup.
pub const MAX_PEERS: usize = 500;
/// Nodes taken from one answer.
pub const MAX_NODES_PER_ANSWER: usize = 16;
/// Queries one lookup may send (retransmissions included).
pub const MAX_QUERIES: u32 = 150;

/// What the lookup is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    FindNode,
    /// Collect peers; announce to the closest answering nodes when
    /// `announce` holds (port, implied_port).
    GetPeers {
        announce: Option<(u16, bool)>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CState {
    Fresh,
    InFlight,
    Responded,
    Failed,
}

#[derive(Clone, Debug)]
struct Candidate {
    id: Option<NodeId>,
    addr: SocketAddrV4,
    state: CState,
    /// The write token it gave (get_peers).
    token: Option<Vec<u8>>,
    /// Answers between the start and this candidate.
    hop: u8,
}

/// See the module docs.
#[derive(Clone, Debug)]
pub struct Lookup {
    pub target: NodeId,
    pub kind: Kind,
    pub started: Instant,
    /// Queries sent (retransmissions counted by the node).
    pub queries: u32,
    pub responses: u32,
    candidates: Vec<Candidate>,
    seen: HashSet<SocketAddrV4>,
    peers: HashSet<SocketAddrV4>,
    in_flight: usize,
}

impl Lookup {
    /// A lookup for `target`, starting from `seeds` (own id excluded by the caller).
    pub fn new(
        target: NodeId,
        kind: Kind,
        seeds: impl IntoIterator<Item = (Option<NodeId>, SocketAddrV4)>,
        now: Instant,
    ) -> Lookup {
        let mut l = Lookup {
            target,
            kind,
            started: now,
            queries: 0,
            responses: 0,
            candidates: Vec::new(),
            seen: HashSet::new(),
            peers: HashSet::new(),
            in_flight: 0,
        };
        for (id, addr) in seeds {
            l.add(id, addr, 0);
        }
        l.sort();
        l
    }

    fn add(&mut self, id: Option<NodeId>, addr: SocketAddrV4, hop: u8) {
        if addr.port() == 0 || self.seen.len() >= MAX_SEEN || !self.seen.insert(addr) {
            return;
        }
        self.candidates.push(Candidate {
            id,
            addr,
            state: CState::Fresh,
            token: None,
            hop,
        });
    }

    fn sort(&mut self) {
        let t = self.target;
        self.candidates
            .sort_by_key(|c| c.id.map_or([0u8; 20], |id| id.distance(&t)));
        // Drop the farthest, but never one in flight (its answer is awaited).
        while self.candidates.len() > MAX_CANDIDATES {
            match self
                .candidates
                .iter()
                .rposition(|c| c.state != CState::InFlight)
            {
                Some(i) => {
                    self.candidates.remove(i);
                }
                None => break,
            }
        }
    }

    /// The next node to query, marked in flight; `None` when the window
    /// of [`ALPHA`] is full or nothing is left to ask.
    pub fn next_query(&mut self) -> Option<(Option<NodeId>, SocketAddrV4)> {
        if self.in_flight >= ALPHA || self.queries >= MAX_QUERIES {
            return None;
        }
        let mut live = 0;
        for c in &mut self.candidates {
            if c.state == CState::Failed {
                continue;
            }
            live += 1;
            if live > K {
                break;
            }
            if c.state == CState::Fresh {
                c.state = CState::InFlight;
                self.in_flight += 1;
                self.queries += 1;
                return Some((c.id, c.addr));
            }
        }
        None
    }

    /// A query could not be sent after [`Lookup::next_query`] chose it.
    pub fn unsend(&mut self, addr: SocketAddrV4) {
        if let Some(c) = self.candidates.iter_mut().find(|c| c.addr == addr)
            && c.state == CState::InFlight
        {
            c.state = CState::Fresh;
            self.in_flight -= 1;
            self.queries -= 1;
        }
    }

    /// A retransmission to a candidate in flight.
    pub fn count_retry(&mut self) {
        self.queries += 1;
    }

    /// `addr` answered with `id`; `nodes` are its closer nodes, `values`
    /// peers. Returns the peers not seen before.
    pub fn on_response(
        &mut self,
        addr: SocketAddrV4,
        id: NodeId,
        own: &NodeId,
        nodes: impl Iterator<Item = (NodeId, SocketAddrV4)>,
        values: impl Iterator<Item = SocketAddrV4>,
        token: Option<&[u8]>,
    ) -> Vec<SocketAddrV4> {
        let Some(c) = self.candidates.iter_mut().find(|c| c.addr == addr) else {
            return Vec::new();
        };
        if c.state != CState::InFlight {
            return Vec::new();
        }
        c.state = CState::Responded;
        c.id = Some(id);
        c.token = token.map(<[u8]>::to_vec);
        let hop = c.hop.saturating_add(1);
        self.in_flight -= 1;
        self.responses += 1;
        for (nid, naddr) in nodes.take(MAX_NODES_PER_ANSWER) {
            if nid != *own && nid != id {
                self.add(Some(nid), naddr, hop);
            }
        }
        self.sort();
        let mut new = Vec::new();
        if matches!(self.kind, Kind::GetPeers { .. }) {
            for p in values.take(MAX_PEERS) {
                if p.port() != 0 && self.peers.len() < MAX_PEERS && self.peers.insert(p) {
                    new.push(p);
                }
            }
        }
        new
    }

    /// The query to `addr` failed (time-out or error answer).
    pub fn on_failure(&mut self, addr: SocketAddrV4) {
        if let Some(c) = self.candidates.iter_mut().find(|c| c.addr == addr)
            && c.state == CState::InFlight
        {
            c.state = CState::Failed;
            self.in_flight -= 1;
        }
    }

    /// Converged (the `K` closest candidates that have not failed have
    /// all answered), exhausted, or out of queries; and no answer is
    /// awaited (a straggler just outside the closest `K` often holds
    /// peers too).
    pub fn is_done(&self) -> bool {
        if self.in_flight > 0 {
            return false;
        }
        if self.queries >= MAX_QUERIES {
            return true;
        }
        !self
            .candidates
            .iter()
            .filter(|c| c.state != CState::Failed)
            .take(K)
            .any(|c| c.state == CState::Fresh)
    }

    /// The `K` closest nodes that answered, with their tokens.
    pub fn closest_responded(&self) -> Vec<(NodeId, SocketAddrV4, Option<&[u8]>)> {
        self.candidates
            .iter()
            .filter(|c| c.state == CState::Responded)
            .filter_map(|c| Some((c.id?, c.addr, c.token.as_deref())))
            .take(K)
            .collect()
    }

    /// Answers on the longest path to one of the closest answering nodes.
    pub fn hops(&self) -> u8 {
        self.candidates
            .iter()
            .filter(|c| c.state == CState::Responded)
            .take(K)
            .map(|c| c.hop + 1)
            .max()
            .unwrap_or(0)
    }

    pub fn peers_found(&self) -> usize {
        self.peers.len()
    }

    pub fn memory(&self) -> usize {
        std::mem::size_of::<Lookup>()
            + self.candidates.capacity() * (std::mem::size_of::<Candidate>() + 24)
            + self.seen.capacity() * (std::mem::size_of::<SocketAddrV4>() + 1)
            + self.peers.capacity() * (std::mem::size_of::<SocketAddrV4>() + 1)
    }
}
