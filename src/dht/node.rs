//! The DHT node: serving queries and running lookups, sans-IO.
//!
//! Input: [`Node::handle_datagram`] (bytes from an address),
//! [`Node::handle_timeout`] (when [`Node::poll_timeout`] is due), and the
//! commands [`Node::add_bootstrap`], [`Node::ping`], [`Node::announce`],
//! [`Node::stop_announce`]. Output: [`Node::poll_transmit`] (datagrams to
//! send) and [`Node::poll_event`] (peers found, lookups done). Every
//! method takes `now`; nothing here reads the clock or owns a socket.
//!
//! # Serving
//! Each query is charged to the source's rate limit ([`super::ratelimit`])
//! before anything else; an answer is never more than
//! [`DhtConfig::max_amplification`] times the size of its query (nodes
//! and values are trimmed to fit), so a spoofed query cannot turn us into
//! an amplifier. `announce_peer` needs a token we issued to the source
//! address ([`super::tokens`]); stored peers live in the capped
//! [`super::store`].
//!
//! # Bounds
//! In-flight queries: [`DhtConfig::max_inflight`]; lookups:
//! [`DhtConfig::max_lookups`]; our own announces: [`MAX_ANNOUNCES`];
//! output queue: [`MAX_OUT`] datagrams; event queue: [`MAX_EVENTS`];
//! external-address votes: [`MAX_VOTERS`] addresses.

use super::NodeId;
use super::krpc::{self, Body, OutQuery, OutResponse, Query};
use super::lookup::{self, Kind, Lookup};
use super::ratelimit::RateLimiter;
use super::store::{PeerStore, StoreCaps};
use super::table::{Heard, K, RoutingTable};
use super::tokens::Tokens;
use crate::rng::Rng;
use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

/// Datagrams queued for sending (the shell drains them every turn).
pub const MAX_OUT: usize = 1024;
/// Events queued for the shell.
pub const MAX_EVENTS: usize = 1024;
/// Info-hashes we announce ourselves.
pub const MAX_ANNOUNCES: usize = 1024;
/// Addresses whose BEP 42 `ip` votes we count.
pub const MAX_VOTERS: usize = 64;
/// Bootstrap addresses remembered for re-bootstrapping.
pub const MAX_BOOTSTRAP: usize = 32;
/// Peers per event.
const PEERS_PER_EVENT: usize = 200;

/// The node's knobs.
#[derive(Clone, Debug)]
pub struct DhtConfig {
    /// One routing-table entry per IP address per bucket (off only for
    /// tests that run many nodes on one address).
    pub restrict_ips: bool,
    /// A query unanswered this long is retried or failed.
    pub query_timeout: Duration,
    /// Retransmissions of an unanswered query.
    pub retries: u8,
    /// Queries per second answered per source address.
    pub per_ip_rate: u32,
    /// Queries per second answered in all.
    pub global_rate: u32,
    /// An answer is at most this many times its query's size.
    pub max_amplification: usize,
    pub store: StoreCaps,
    /// Our queries awaiting an answer.
    pub max_inflight: usize,
    /// Lookups running at once.
    pub max_lookups: usize,
    /// Routing-table maintenance (pings, refreshes) interval.
    pub maintenance_every: Duration,
    /// Re-announce interval: a random time in this range.
    pub announce_every: (Duration, Duration),
    /// BEP 43: we do not answer queries.
    pub read_only: bool,
}

impl Default for DhtConfig {
    fn default() -> DhtConfig {
        DhtConfig {
            restrict_ips: true,
            query_timeout: Duration::from_secs(2),
            retries: 1,
            per_ip_rate: 20,
            global_rate: 2000,
            max_amplification: 4,
            store: StoreCaps::default(),
            max_inflight: 512,
            max_lookups: 64,
            maintenance_every: Duration::from_secs(20),
            announce_every: (Duration::from_secs(15 * 60), Duration::from_secs(30 * 60)),
            read_only: false,
        }
    }
}

impl DhtConfig {
    /// The most heap one node can hold with this configuration, in bytes
    /// (the figure stated in the module docs; the hostile tests check it).
    pub fn memory_bound(&self) -> usize {
        let entry = std::mem::size_of::<super::table::Entry>();
        let table = super::table::MAX_BUCKETS * (2 * K * entry + 64);
        let pending = self.max_inflight * 2 * (std::mem::size_of::<Pending>() + 8 + 128);
        let lookups = self.max_lookups
            * (std::mem::size_of::<Lookup>()
                + 2 * lookup::MAX_CANDIDATES * 128
                + 2 * lookup::MAX_SEEN * 8
                + 2 * lookup::MAX_PEERS * 8);
        let out = MAX_OUT * (krpc::MAX_MESSAGE_LEN / 2 + 32);
        table
            + pending
            + lookups
            + out
            + PeerStore::memory_bound(&self.store)
            + super::ratelimit::SLOTS * 32
    }
}

/// A datagram to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    pub to: SocketAddrV4,
    pub data: Vec<u8>,
}

/// What the node tells the shell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DhtEvent {
    /// Peers for one of our announced info-hashes.
    Peers {
        info_hash: NodeId,
        peers: Vec<SocketAddrV4>,
    },
    /// A lookup finished.
    LookupDone(LookupReport),
}

/// Figures of a finished lookup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LookupReport {
    pub target: NodeId,
    pub get_peers: bool,
    pub queries: u32,
    pub responses: u32,
    pub hops: u8,
    pub peers: usize,
    /// Closest answering nodes found (at most K).
    pub closest: Vec<(NodeId, SocketAddrV4)>,
    /// announce_peer queries sent.
    pub announced: usize,
    pub elapsed: Duration,
}

/// Counters (traffic, drops).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DhtStats {
    pub datagrams_in: u64,
    pub bytes_in: u64,
    pub datagrams_out: u64,
    pub bytes_out: u64,
    pub queries_in: u64,
    pub answers_in: u64,
    pub errors_in: u64,
    /// Datagrams that were not KRPC we accept.
    pub malformed: u64,
    /// Queries dropped by the rate limits.
    pub rate_limited: u64,
    /// announce_peer with a token we did not issue.
    pub bad_tokens: u64,
    /// Answers matching no query of ours (late, spoofed, from the wrong address).
    pub unexpected: u64,
    /// Our queries that timed out (after retries).
    pub timeouts: u64,
    /// Datagrams or events dropped because a queue was full.
    pub dropped_out: u64,
    pub lookups_done: u64,
}

#[derive(Clone, Debug)]
struct Pending {
    addr: SocketAddrV4,
    id: Option<NodeId>,
    data: Vec<u8>,
    deadline: Instant,
    tries: u8,
    lookup: Option<u64>,
}

#[derive(Clone, Debug)]
struct Announce {
    port: u16,
    implied: bool,
    next: Instant,
    running: bool,
}

/// A DHT node; see the module docs.
pub struct Node {
    id: NodeId,
    config: DhtConfig,
    table: RoutingTable,
    tokens: Tokens,
    store: PeerStore,
    limiter: RateLimiter,
    rng: Rng,
    /// Transaction id -> query awaiting an answer (at most `max_inflight`).
    inflight: HashMap<u32, Pending>,
    /// Deadlines in send order (every query has the same time-out, so
    /// this is sorted); entries whose query was answered are skipped.
    deadlines: VecDeque<(Instant, u32)>,
    lookups: Vec<(u64, Lookup)>,
    next_lookup: u64,
    announces: HashMap<NodeId, Announce>,
    bootstrap: Vec<SocketAddrV4>,
    bootstrap_lookup: Option<u64>,
    /// A bootstrap lookup got answers from at least `K` nodes.
    bootstrapped: bool,
    last_bootstrap: Option<Instant>,
    votes: HashMap<Ipv4Addr, Ipv4Addr>,
    out: VecDeque<Transmit>,
    events: VecDeque<DhtEvent>,
    next_maintenance: Instant,
    next_expiry: Instant,
    next_rotation: Instant,
    stats: DhtStats,
}

/// Ask again for a bootstrap at most this often while the table is small.
const BOOTSTRAP_EVERY: Duration = Duration::from_secs(30);
/// An announce lookup that reached fewer than K nodes is retried after this.
const RETRY_UNREACHED: Duration = Duration::from_secs(15);
/// Stored peers are expired this often.
const EXPIRE_EVERY: Duration = Duration::from_secs(60);

impl Node {
    pub fn new(id: NodeId, config: DhtConfig, seed: u64, now: Instant) -> Node {
        let mut rng = Rng::new(seed);
        let tokens = Tokens::new(&mut rng, now);
        let limiter = RateLimiter::new(config.per_ip_rate, config.global_rate, rng.next_u64());
        Node {
            id,
            table: RoutingTable::new(id, config.restrict_ips, now),
            store: PeerStore::new(config.store),
            tokens,
            limiter,
            rng,
            inflight: HashMap::new(),
            deadlines: VecDeque::new(),
            lookups: Vec::new(),
            next_lookup: 1,
            announces: HashMap::new(),
            bootstrap: Vec::new(),
            bootstrap_lookup: None,
            bootstrapped: false,
            last_bootstrap: None,
            votes: HashMap::new(),
            out: VecDeque::new(),
            events: VecDeque::new(),
            next_maintenance: now + config.maintenance_every,
            next_expiry: now + EXPIRE_EVERY,
            next_rotation: now + super::tokens::ROTATE_EVERY,
            stats: DhtStats::default(),
            config,
        }
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn table(&self) -> &RoutingTable {
        &self.table
    }

    pub fn store(&self) -> &PeerStore {
        &self.store
    }

    pub fn stats(&self) -> DhtStats {
        self.stats
    }

    pub fn config(&self) -> &DhtConfig {
        &self.config
    }

    /// Lookups running now.
    pub fn lookups_running(&self) -> usize {
        self.lookups.len()
    }

    /// Approximate heap bytes held (compare with [`DhtConfig::memory_bound`]).
    pub fn memory(&self) -> usize {
        self.table.memory()
            + self.store.memory()
            + self.limiter.memory()
            + self.inflight.capacity() * (std::mem::size_of::<(u32, Pending)>() + 1)
            + self
                .inflight
                .values()
                .map(|p| p.data.capacity())
                .sum::<usize>()
            + self.deadlines.capacity() * 24
            + self.lookups.iter().map(|(_, l)| l.memory()).sum::<usize>()
            + self
                .out
                .iter()
                .map(|t| t.data.capacity() + 32)
                .sum::<usize>()
            + self.announces.capacity() * 64
            + self.votes.capacity() * 9
    }

    /// The external address most nodes that answered us report (BEP 42 `ip`).
    pub fn external_ip(&self) -> Option<Ipv4Addr> {
        let mut counts: HashMap<Ipv4Addr, usize> = HashMap::new();
        for ip in self.votes.values() {
            *counts.entry(*ip).or_insert(0) += 1;
        }
        let (ip, n) = counts.into_iter().max_by_key(|(ip, n)| (*n, *ip))?;
        (n >= 2).then_some(ip)
    }

    /// Nodes worth saving for the next start (bucket entries).
    pub fn saved_nodes(&self) -> Vec<(NodeId, SocketAddrV4)> {
        self.table.entries().map(|e| (e.id, e.addr)).collect()
    }

    /// Bootstrap from `addr` (a router, a saved node): it is asked for
    /// nodes near our id at the next [`Node::handle_timeout`] (due at
    /// once, so addresses added together start one lookup), and
    /// remembered for re-bootstrapping.
    pub fn add_bootstrap(&mut self, addr: SocketAddrV4, now: Instant) {
        if !self.bootstrap.contains(&addr) {
            if self.bootstrap.len() >= MAX_BOOTSTRAP {
                self.bootstrap.remove(0);
            }
            self.bootstrap.push(addr);
        }
        self.last_bootstrap = None;
        self.next_maintenance = self.next_maintenance.min(now);
    }

    /// Ping `addr` (a peer's BEP 5 `port` message): if it answers, it
    /// enters the table.
    pub fn ping(&mut self, addr: SocketAddrV4, now: Instant) {
        if addr.port() != 0 {
            self.send_query(addr, None, OutQuery::Ping, None, now);
        }
    }

    /// Look up peers for `info_hash` now and every 15–30 minutes, and
    /// announce that we take connections on `port` (`implied`: the port
    /// our datagrams come from). Ignored beyond [`MAX_ANNOUNCES`].
    pub fn announce(&mut self, info_hash: NodeId, port: u16, implied: bool, now: Instant) {
        if !self.announces.contains_key(&info_hash) && self.announces.len() >= MAX_ANNOUNCES {
            return;
        }
        let a = self.announces.entry(info_hash).or_insert(Announce {
            port,
            implied,
            next: now,
            running: false,
        });
        a.port = port;
        a.implied = implied;
        if !a.running {
            a.next = now;
        }
        self.start_due_announces(now);
    }

    /// Stop announcing `info_hash` (a running lookup finishes quietly).
    pub fn stop_announce(&mut self, info_hash: &NodeId) {
        self.announces.remove(info_hash);
    }

    /// Start a `find_node` lookup for `target` (tests, refreshes).
    pub fn find_node(&mut self, target: NodeId, now: Instant) -> Option<u64> {
        self.start_lookup(target, Kind::FindNode, now)
    }

    /// Start a `get_peers` lookup for `info_hash` without announcing.
    pub fn get_peers(&mut self, info_hash: NodeId, now: Instant) -> Option<u64> {
        self.start_lookup(info_hash, Kind::GetPeers { announce: None }, now)
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<DhtEvent> {
        self.events.pop_front()
    }

    /// When [`Node::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = self
            .next_maintenance
            .min(self.next_expiry)
            .min(self.next_rotation);
        if let Some(&(d, _)) = self.deadlines.front() {
            t = t.min(d);
        }
        for a in self.announces.values() {
            if !a.running {
                t = t.min(a.next);
            }
        }
        Some(t)
    }

    /// Time-outs, retries, maintenance, token rotation, expiry and
    /// re-announces due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        // Bounded by the deadlines queued (at most 4 × max_inflight).
        while let Some(&(d, tid)) = self.deadlines.front() {
            if d > now {
                break;
            }
            self.deadlines.pop_front();
            let Some(p) = self.inflight.get_mut(&tid) else {
                continue;
            };
            if p.deadline > now {
                continue;
            }
            if p.tries <= self.config.retries {
                p.tries += 1;
                p.deadline = now + self.config.query_timeout;
                let (addr, data, lookup) = (p.addr, p.data.clone(), p.lookup);
                self.deadlines
                    .push_back((now + self.config.query_timeout, tid));
                if let Some(lid) = lookup
                    && let Some((_, l)) = self.lookups.iter_mut().find(|(i, _)| *i == lid)
                {
                    l.count_retry();
                }
                self.push_out(addr, data);
                continue;
            }
            let p = self.inflight.remove(&tid).expect("checked above");
            self.stats.timeouts += 1;
            if let Some(id) = p.id {
                self.table.failed(&id, p.addr, now);
            }
            if let Some(lid) = p.lookup {
                self.lookup_failed(lid, p.addr, now);
            }
        }
        if now >= self.next_rotation {
            self.next_rotation = self.tokens.tick(now, &mut self.rng);
        }
        if now >= self.next_expiry {
            self.store.expire(now);
            self.next_expiry = now + EXPIRE_EVERY;
        }
        if now >= self.next_maintenance {
            self.next_maintenance = now + self.config.maintenance_every;
            let m = self.table.maintenance(now, &mut self.rng);
            for (id, addr) in m.pings {
                self.send_query(addr, Some(id), OutQuery::Ping, None, now);
            }
            for target in m.refresh {
                self.start_lookup(target, Kind::FindNode, now);
            }
            self.maybe_bootstrap(now);
        }
        self.start_due_announces(now);
    }

    /// One datagram from `from`.
    pub fn handle_datagram(&mut self, from: SocketAddr, data: &[u8], now: Instant) {
        self.stats.datagrams_in += 1;
        self.stats.bytes_in += data.len() as u64;
        let from = match from {
            SocketAddr::V4(a) => a,
            SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
                Some(ip) => SocketAddrV4::new(ip, a.port()),
                None => {
                    self.stats.malformed += 1;
                    return;
                }
            },
        };
        if from.port() == 0 {
            self.stats.malformed += 1;
            return;
        }
        let msg = match krpc::decode(data) {
            Ok(m) => m,
            Err(e) => {
                self.stats.malformed += 1;
                log::trace!("dht: {from}: {e}");
                // Answer a query we could not parse only when it is
                // clearly KRPC (its tid readable) and within the limits.
                if !self.config.read_only
                    && matches!(e, krpc::KrpcError::Missing(_) | krpc::KrpcError::Bad(_))
                    && let Some(tid) = krpc::tid_of(data)
                    && self.limiter.allow(*from.ip(), now)
                {
                    let tid = tid.to_vec();
                    self.push_out(
                        from,
                        krpc::encode_error(&tid, krpc::code::PROTOCOL, "bad message"),
                    );
                }
                return;
            }
        };
        match msg.body {
            Body::Query { sender, query } => {
                self.stats.queries_in += 1;
                self.on_query(from, msg.tid, sender, query, msg.read_only, data.len(), now);
            }
            Body::Response(r) => {
                let Some((tid, p)) = self.take_pending(msg.tid, from) else {
                    self.stats.unexpected += 1;
                    return;
                };
                let _ = tid;
                self.stats.answers_in += 1;
                if let Some(ip) = msg.ip
                    && (self.votes.len() < MAX_VOTERS || self.votes.contains_key(from.ip()))
                {
                    self.votes.insert(*from.ip(), *ip.ip());
                }
                if r.id == self.id {
                    // Ourselves (a loop) or a node copying our id.
                    if let Some(lid) = p.lookup {
                        self.lookup_failed(lid, from, now);
                    }
                    return;
                }
                if let Some(known) = p.id
                    && known != r.id
                {
                    self.table.remove(&known);
                }
                self.table.heard(r.id, from, Heard::Reply, now);
                if let Some(lid) = p.lookup {
                    let own = self.id;
                    let Some(pos) = self.lookups.iter().position(|(i, _)| *i == lid) else {
                        return;
                    };
                    let l = &mut self.lookups[pos].1;
                    let new = l.on_response(from, r.id, &own, r.nodes(), r.values(), r.token);
                    let target = l.target;
                    for chunk in new.chunks(PEERS_PER_EVENT) {
                        self.push_event(DhtEvent::Peers {
                            info_hash: target,
                            peers: chunk.to_vec(),
                        });
                    }
                    self.pump(lid, now);
                }
            }
            Body::Error { code, .. } => {
                let Some((_, p)) = self.take_pending(msg.tid, from) else {
                    self.stats.unexpected += 1;
                    return;
                };
                self.stats.errors_in += 1;
                log::trace!("dht: error {code} from {from}");
                if let Some(lid) = p.lookup {
                    self.lookup_failed(lid, from, now);
                }
            }
        }
    }

    fn take_pending(&mut self, tid: &[u8], from: SocketAddrV4) -> Option<(u32, Pending)> {
        let tid = u32::from_be_bytes(tid.try_into().ok()?);
        if self.inflight.get(&tid)?.addr != from {
            return None;
        }
        Some((tid, self.inflight.remove(&tid)?))
    }

    #[allow(clippy::too_many_arguments)]
    fn on_query(
        &mut self,
        from: SocketAddrV4,
        tid: &[u8],
        sender: NodeId,
        query: Query<'_>,
        read_only: bool,
        query_len: usize,
        now: Instant,
    ) {
        if self.config.read_only {
            return;
        }
        if !self.limiter.allow(*from.ip(), now) {
            self.stats.rate_limited += 1;
            return;
        }
        let verify = !read_only
            && sender != self.id
            && !self.table.heard(sender, from, Heard::Query, now)
            && self.table.should_verify(&sender, now);
        self.answer_query(from, tid, query, query_len, now);
        if verify {
            // Room for it: confirm it answers before it enters a bucket.
            self.send_query(from, Some(sender), OutQuery::Ping, None, now);
        }
    }

    fn answer_query(
        &mut self,
        from: SocketAddrV4,
        tid: &[u8],
        query: Query<'_>,
        query_len: usize,
        now: Instant,
    ) {
        let budget = query_len
            .saturating_mul(self.config.max_amplification)
            .max(128);
        let tid = tid.to_vec();
        let answer = match query {
            Query::Ping => OwnedAnswer::default(),
            Query::FindNode { target }
            | Query::Other {
                target: Some(target),
                ..
            } => OwnedAnswer {
                nodes: self.compact_closest(&target, now),
                ..OwnedAnswer::default()
            },
            Query::GetPeers { info_hash } => {
                let token = self.tokens.issue(*from.ip()).to_vec();
                let values = self.store.get(&info_hash, 100, now, &mut self.rng);
                OwnedAnswer {
                    nodes: if values.is_empty() {
                        self.compact_closest(&info_hash, now)
                    } else {
                        Vec::new()
                    },
                    values,
                    token: Some(token),
                }
            }
            Query::AnnouncePeer {
                info_hash,
                port,
                implied_port,
                token,
            } => {
                if !self.tokens.check(*from.ip(), token) {
                    self.stats.bad_tokens += 1;
                    self.push_out(
                        from,
                        krpc::encode_error(&tid, krpc::code::PROTOCOL, "bad token"),
                    );
                    return;
                }
                let port = if implied_port { from.port() } else { port };
                if port != 0 {
                    let peer = SocketAddrV4::new(*from.ip(), port);
                    self.store
                        .announce(info_hash, peer, *from.ip(), now, &mut self.rng);
                }
                OwnedAnswer::default()
            }
            Query::Other { .. } => {
                self.push_out(
                    from,
                    krpc::encode_error(&tid, krpc::code::METHOD_UNKNOWN, "method unknown"),
                );
                return;
            }
        };
        let mut answer = answer;
        // Trim to the amplification budget: values first, then nodes.
        loop {
            let data = krpc::encode_response(
                &tid,
                &self.id,
                from,
                &OutResponse {
                    nodes: &answer.nodes,
                    values: &answer.values,
                    token: answer.token.as_deref(),
                },
            );
            if data.len() <= budget || (answer.values.is_empty() && answer.nodes.is_empty()) {
                self.push_out(from, data);
                return;
            }
            let over = data.len() - budget;
            if !answer.values.is_empty() {
                let drop = over.div_ceil(8).min(answer.values.len());
                answer.values.truncate(answer.values.len() - drop);
            } else {
                let drop = over.div_ceil(krpc::COMPACT_NODE_LEN) * krpc::COMPACT_NODE_LEN;
                let keep = answer.nodes.len().saturating_sub(drop);
                answer.nodes.truncate(keep);
            }
        }
    }

    fn compact_closest(&self, target: &NodeId, now: Instant) -> Vec<u8> {
        let mut out = Vec::with_capacity(K * krpc::COMPACT_NODE_LEN);
        for (id, addr) in self.table.closest(target, K, now) {
            krpc::write_compact_node(&mut out, &id, addr);
        }
        out
    }

    fn push_out(&mut self, to: SocketAddrV4, data: Vec<u8>) {
        if self.out.len() >= MAX_OUT {
            self.stats.dropped_out += 1;
            return;
        }
        self.stats.datagrams_out += 1;
        self.stats.bytes_out += data.len() as u64;
        self.out.push_back(Transmit { to, data });
    }

    fn push_event(&mut self, e: DhtEvent) {
        if self.events.len() >= MAX_EVENTS {
            self.stats.dropped_out += 1;
            return;
        }
        self.events.push_back(e);
    }

    /// Send a query; false when the in-flight table is full.
    fn send_query(
        &mut self,
        addr: SocketAddrV4,
        id: Option<NodeId>,
        q: OutQuery<'_>,
        lookup: Option<u64>,
        now: Instant,
    ) -> bool {
        if self.inflight.len() >= self.config.max_inflight
            || self.deadlines.len() >= 4 * self.config.max_inflight
            || self.out.len() >= MAX_OUT
        {
            return false;
        }
        let mut tid = self.rng.next_u64() as u32;
        while self.inflight.contains_key(&tid) {
            tid = tid.wrapping_add(1);
        }
        let data = krpc::encode_query(&tid.to_be_bytes(), &self.id, &q, self.config.read_only);
        let deadline = now + self.config.query_timeout;
        self.inflight.insert(
            tid,
            Pending {
                addr,
                id,
                data: data.clone(),
                deadline,
                tries: 1,
                lookup,
            },
        );
        self.deadlines.push_back((deadline, tid));
        self.push_out(addr, data);
        true
    }

    fn start_lookup(&mut self, target: NodeId, kind: Kind, now: Instant) -> Option<u64> {
        if self.lookups.len() >= self.config.max_lookups {
            return None;
        }
        let mut seeds: Vec<(Option<NodeId>, SocketAddrV4)> = self
            .table
            .closest(&target, lookup::MAX_CANDIDATES / 2, now)
            .into_iter()
            .map(|(id, a)| (Some(id), a))
            .collect();
        // The bootstrap addresses join a lookup for our own id (so a node
        // that only knows a few stragglers still reaches the network) and
        // any lookup while the table is small.
        if self.table.len() < K || target == self.id {
            seeds.extend(self.bootstrap.iter().map(|a| (None, *a)));
        }
        let lid = self.next_lookup;
        self.next_lookup += 1;
        self.lookups
            .push((lid, Lookup::new(target, kind, seeds, now)));
        self.pump(lid, now);
        Some(lid)
    }

    fn lookup_failed(&mut self, lid: u64, addr: SocketAddrV4, now: Instant) {
        if let Some((_, l)) = self.lookups.iter_mut().find(|(i, _)| *i == lid) {
            l.on_failure(addr);
            self.pump(lid, now);
        }
    }

    /// Send what lookup `lid` wants sent; finish it when done.
    fn pump(&mut self, lid: u64, now: Instant) {
        let Some(pos) = self.lookups.iter().position(|(i, _)| *i == lid) else {
            return;
        };
        // Bounded by ALPHA sends per call.
        loop {
            let l = &mut self.lookups[pos].1;
            let Some((id, addr)) = l.next_query() else {
                break;
            };
            let q = match l.kind {
                Kind::FindNode => OutQuery::FindNode(l.target),
                Kind::GetPeers { .. } => OutQuery::GetPeers(l.target),
            };
            if !self.send_query(addr, id, q, Some(lid), now) {
                self.lookups[pos].1.unsend(addr);
                break;
            }
        }
        if !self.lookups[pos].1.is_done() {
            return;
        }
        let (_, l) = self.lookups.swap_remove(pos);
        self.stats.lookups_done += 1;
        let closest = l.closest_responded();
        let mut announced = 0;
        if let Kind::GetPeers {
            announce: Some((port, implied)),
        } = l.kind
        {
            for (id, addr, token) in &closest {
                if let Some(token) = token {
                    let q = OutQuery::AnnouncePeer(l.target, port, implied, token);
                    if self.send_query(*addr, Some(*id), q, None, now) {
                        announced += 1;
                    }
                }
            }
        }
        if let Some(a) = self.announces.get_mut(&l.target)
            && a.running
            && matches!(l.kind, Kind::GetPeers { .. })
        {
            a.running = false;
            if (l.responses as usize) < K {
                // The network was not reached (not bootstrapped yet, the
                // routers' names still resolving): try again soon.
                a.next = now + RETRY_UNREACHED;
            } else {
                let (lo, hi) = self.config.announce_every;
                let span = hi.saturating_sub(lo).as_millis() as u64;
                let jitter = if span == 0 {
                    0
                } else {
                    self.rng.next_u64() % span
                };
                a.next = now + lo + Duration::from_millis(jitter);
            }
        }
        if self.bootstrap_lookup == Some(lid) {
            self.bootstrap_lookup = None;
            // A lookup that reached fewer than K nodes (its first answers
            // lost, a dead router) is tried again BOOTSTRAP_EVERY later.
            if l.responses as usize >= K {
                self.bootstrapped = true;
                // At most 3: a lookup of our id already passed through the
                // others; the 15-minute refresh covers the rest.
                for target in self
                    .table
                    .underfull_targets(now, &mut self.rng)
                    .into_iter()
                    .take(3)
                {
                    self.start_lookup(target, Kind::FindNode, now);
                }
            }
        }
        let report = LookupReport {
            target: l.target,
            get_peers: matches!(l.kind, Kind::GetPeers { .. }),
            queries: l.queries,
            responses: l.responses,
            hops: l.hops(),
            peers: l.peers_found(),
            closest: closest.iter().map(|(id, a, _)| (*id, *a)).collect(),
            announced,
            elapsed: now.saturating_duration_since(l.started),
        };
        self.push_event(DhtEvent::LookupDone(report));
    }

    fn maybe_bootstrap(&mut self, now: Instant) {
        if self.bootstrap_lookup.is_some()
            || (self.bootstrapped && self.table.len() >= K)
            || self.bootstrap.is_empty()
            || self
                .last_bootstrap
                .is_some_and(|t| now.saturating_duration_since(t) < BOOTSTRAP_EVERY)
        {
            return;
        }
        self.last_bootstrap = Some(now);
        self.bootstrap_lookup = self.start_lookup(self.id, Kind::FindNode, now);
    }

    fn start_due_announces(&mut self, now: Instant) {
        let mut due: Vec<NodeId> = self
            .announces
            .iter()
            .filter(|(_, a)| !a.running && a.next <= now)
            .map(|(h, _)| *h)
            .collect();
        // Sorted, so a seeded simulation replays exactly.
        due.sort_unstable();
        for h in due {
            let Some(a) = self.announces.get(&h) else {
                continue;
            };
            let kind = Kind::GetPeers {
                announce: Some((a.port, a.implied)),
            };
            // Marked running first: a lookup with nobody to ask ends
            // inside start_lookup and schedules the next one.
            if let Some(a) = self.announces.get_mut(&h) {
                a.running = true;
            }
            if self.start_lookup(h, kind, now).is_none()
                && let Some(a) = self.announces.get_mut(&h)
            {
                // No lookup slot: try again shortly.
                a.running = false;
                a.next = now + Duration::from_secs(5);
            }
        }
    }
}

#[derive(Default)]
struct OwnedAnswer {
    nodes: Vec<u8>,
    values: Vec<SocketAddrV4>,
    token: Option<Vec<u8>>,
}
