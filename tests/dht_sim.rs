//! The DHT node core in a deterministic simulated network: no sockets,
//! one process, a priority queue of datagrams with latency, loss and
//! churn. The run's seed is printed (`DHT_SIM_SEED=<seed>` replays it);
//! `DHT_SIM_NODES` changes the network size (default 10,000).
//!
//! Phases: nodes join one by one through 3 random earlier nodes; the
//! network settles; some nodes announce info-hashes; lookups run from
//! random nodes while nodes leave and new ones join (churn); then the
//! network rests and its background traffic is counted.
//!
//! Run it in release (`cargo test --release --test dht_sim -- --nocapture`)
//! for the figures (`DHT_SIM_REST_MIN=15` for the at-rest traffic over a
//! whole ping cycle); in a debug build it runs a 500-node network.

use piecemeal::dht::{DhtConfig, DhtEvent, Node, NodeId};
use piecemeal::rng::Rng;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

const LOSS_PERCENT: u64 = 5;
const PORT: u16 = 6881;

enum Ev {
    Deliver {
        to: SocketAddrV4,
        from: SocketAddrV4,
        data: Vec<u8>,
    },
    Timer(usize),
}

struct SimNode {
    node: Node,
    addr: SocketAddrV4,
    alive: bool,
    /// One-way latency contribution of this node's link.
    latency_ms: u64,
    /// The timer we have queued for it (lazy: a newer one may replace it).
    timer_at: Option<u64>,
    /// Not churned: it announces a torrent.
    announcer: bool,
}

struct Sim {
    rng: Rng,
    base: Instant,
    now_ms: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64, usize)>>,
    events: Vec<Option<Ev>>,
    free: Vec<usize>,
    nodes: Vec<SimNode>,
    by_addr: HashMap<SocketAddrV4, usize>,
    next_ip: u32,
    sent: u64,
    lost: u64,
    reports: Vec<(usize, piecemeal::dht::LookupReport)>,
    found: HashMap<(usize, NodeId), usize>,
    boot: HashMap<usize, usize>,
}

impl Sim {
    fn new(seed: u64) -> Sim {
        Sim {
            rng: Rng::new(seed),
            base: Instant::now(),
            now_ms: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            events: Vec::new(),
            free: Vec::new(),
            nodes: Vec::new(),
            by_addr: HashMap::new(),
            next_ip: 0x0a00_0001,
            sent: 0,
            lost: 0,
            reports: Vec::new(),
            found: HashMap::new(),
            boot: HashMap::new(),
        }
    }

    fn now(&self) -> Instant {
        self.base + Duration::from_millis(self.now_ms)
    }

    fn push(&mut self, at: u64, ev: Ev) {
        let slot = match self.free.pop() {
            Some(s) => {
                self.events[s] = Some(ev);
                s
            }
            None => {
                self.events.push(Some(ev));
                self.events.len() - 1
            }
        };
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, slot)));
    }

    /// A new node, bootstrapping through random live nodes (if any).
    fn join(&mut self, announcer: bool) -> usize {
        let ip = Ipv4Addr::from(self.next_ip);
        self.next_ip += 1;
        let addr = SocketAddrV4::new(ip, PORT);
        let id = NodeId::random(&mut self.rng);
        let node = Node::new(id, DhtConfig::default(), self.rng.next_u64(), self.now());
        let latency_ms = 5 + self.rng.next_u64() % 95;
        let i = self.nodes.len();
        self.nodes.push(SimNode {
            node,
            addr,
            alive: true,
            latency_ms,
            timer_at: None,
            announcer,
        });
        self.by_addr.insert(addr, i);
        // Up to 3 bootstrap nodes (a client knows a few routers and its
        // saved table).
        for _ in 0..3.min(i) {
            for _ in 0..8 {
                let j = (self.rng.next_u64() as usize) % i;
                if self.nodes[j].alive {
                    let to = self.nodes[j].addr;
                    let now = self.now();
                    self.nodes[i].node.add_bootstrap(to, now);
                    self.boot.insert(i, j);
                    break;
                }
            }
        }
        self.after(i);
        i
    }

    /// Move node `i`'s output to the queue and (re)arm its timer.
    fn after(&mut self, i: usize) {
        let now_ms = self.now_ms;
        while let Some(t) = self.nodes[i].node.poll_transmit() {
            self.sent += 1;
            if self.rng.next_u64() % 100 < LOSS_PERCENT {
                self.lost += 1;
                continue;
            }
            let to_lat = self
                .by_addr
                .get(&t.to)
                .map_or(50, |&j| self.nodes[j].latency_ms);
            let at = now_ms + self.nodes[i].latency_ms + to_lat + self.rng.next_u64() % 10;
            let from = self.nodes[i].addr;
            self.push(
                at,
                Ev::Deliver {
                    to: t.to,
                    from,
                    data: t.data,
                },
            );
        }
        while let Some(e) = self.nodes[i].node.poll_event() {
            match e {
                DhtEvent::LookupDone(r) => self.reports.push((i, r)),
                DhtEvent::Peers { info_hash, peers } => {
                    *self.found.entry((i, info_hash)).or_insert(0) += peers.len();
                }
            }
        }
        if let Some(t) = self.nodes[i].node.poll_timeout() {
            let at = t.saturating_duration_since(self.base).as_millis() as u64;
            let at = at.max(now_ms);
            if self.nodes[i].timer_at.is_none_or(|q| at < q || q < now_ms) {
                self.nodes[i].timer_at = Some(at);
                self.push(at, Ev::Timer(i));
            }
        }
    }

    /// Run until simulated time `until_ms`.
    fn run_until(&mut self, until_ms: u64) {
        while let Some(&Reverse((at, _, slot))) = self.queue.peek() {
            if at > until_ms {
                break;
            }
            self.queue.pop();
            self.now_ms = self.now_ms.max(at);
            let ev = self.events[slot].take().expect("queued event");
            self.free.push(slot);
            match ev {
                Ev::Deliver { to, from, data } => {
                    let Some(&j) = self.by_addr.get(&to) else {
                        continue;
                    };
                    if !self.nodes[j].alive {
                        continue;
                    }
                    let now = self.now();
                    self.nodes[j]
                        .node
                        .handle_datagram(SocketAddr::V4(from), &data, now);
                    self.after(j);
                }
                Ev::Timer(i) => {
                    if self.nodes[i].timer_at != Some(at) {
                        continue;
                    }
                    self.nodes[i].timer_at = None;
                    if !self.nodes[i].alive {
                        continue;
                    }
                    let now = self.now();
                    self.nodes[i].node.handle_timeout(now);
                    self.after(i);
                }
            }
        }
        self.now_ms = self.now_ms.max(until_ms);
    }

    fn random_alive(&mut self, exclude_announcers: bool) -> usize {
        loop {
            let i = (self.rng.next_u64() as usize) % self.nodes.len();
            if self.nodes[i].alive && !(exclude_announcers && self.nodes[i].announcer) {
                return i;
            }
        }
    }

    fn alive(&self) -> usize {
        self.nodes.iter().filter(|n| n.alive).count()
    }

    fn datagrams_out(&self) -> u64 {
        self.nodes
            .iter()
            .filter(|n| n.alive)
            .map(|n| n.node.stats().datagrams_out)
            .sum()
    }
}

fn seed() -> u64 {
    std::env::var("DHT_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
}

#[test]
fn ten_thousand_nodes_with_loss_and_churn() {
    let default_n = if cfg!(debug_assertions) { 500 } else { 10_000 };
    let n: usize = std::env::var("DHT_SIM_NODES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default_n);
    let seed = seed();
    println!("dht_sim: seed {seed} (replay with DHT_SIM_SEED={seed}), {n} nodes");
    let wall = Instant::now();
    let mut sim = Sim::new(seed);

    // Join: one node every 5 ms, each through 3 random earlier nodes.
    let announcers = 100.min(n / 10);
    for i in 0..n {
        sim.join(i < announcers);
        let t = sim.now_ms + 5;
        sim.run_until(t);
    }
    // Settle for 2 minutes (the first 15-minute bucket refreshes happen later).
    let t = sim.now_ms + 2 * 60_000;
    sim.run_until(t);
    let join_done = sim.now_ms;
    if std::env::var("DHT_SIM_DIAG").is_ok() {
        let mut ids: Vec<(NodeId, usize)> = sim
            .nodes
            .iter()
            .enumerate()
            .map(|(j, n)| (n.node.id(), j))
            .collect();
        let mut have = 0;
        for k in 0..200 {
            let i = k * (n / 200);
            let me = sim.nodes[i].node.id();
            ids.sort_by_key(|(id, _)| id.distance(&me));
            let true8: Vec<NodeId> = ids.iter().skip(1).take(8).map(|(id, _)| *id).collect();
            have += true8
                .iter()
                .filter(|id| sim.nodes[i].node.table().get(id).is_some())
                .count();
        }
        println!(
            "dht_sim: tables hold {:.1}% of their true 8 closest",
            have as f64 / 16.0
        );
    }
    println!(
        "dht_sim: join+settle wall {:.1} s",
        wall.elapsed().as_secs_f64()
    );
    let tables: Vec<usize> = sim.nodes.iter().map(|n| n.node.table().len()).collect();
    let mean_table = tables.iter().sum::<usize>() as f64 / tables.len() as f64;
    println!(
        "dht_sim: joined at {} s sim, mean table {:.1} nodes, min {}",
        join_done / 1000,
        mean_table,
        tables.iter().min().unwrap()
    );

    // Announce: the first `announcers` nodes each announce one info-hash.
    let mut hashes = Vec::new();
    for i in 0..announcers {
        let h = NodeId::random(&mut sim.rng);
        hashes.push((h, sim.nodes[i].addr));
        let now = sim.now();
        sim.nodes[i].node.announce(h, 7000, false, now);
        sim.after(i);
    }
    let t = sim.now_ms + 60_000;
    sim.run_until(t);
    sim.reports.clear();

    // Lookups under churn: every simulated second, 4 lookups start at
    // random nodes; 1% of the network leaves and as many join every minute.
    let lookups = if cfg!(debug_assertions) { 200 } else { 1000 };
    let mut started = Vec::new();
    let churn_per_min = (n / 100).max(1);
    let mut left = 0;
    for s in 0..(lookups / 4) {
        for _ in 0..4 {
            let i = sim.random_alive(true);
            let (h, seeder) = hashes[(sim.rng.next_u64() as usize) % hashes.len()];
            let now = sim.now();
            sim.nodes[i].node.get_peers(h, now);
            sim.after(i);
            started.push((i, h, seeder));
        }
        if s % 60 == 0 {
            for _ in 0..churn_per_min {
                let i = sim.random_alive(true);
                sim.nodes[i].alive = false;
                left += 1;
            }
            for _ in 0..churn_per_min {
                sim.join(false);
            }
        }
        let t = sim.now_ms + 1000;
        sim.run_until(t);
    }
    let t = sim.now_ms + 60_000;
    sim.run_until(t);

    // Results: a lookup succeeds when it found its seeder's peer address.
    let mut ok = 0;
    let mut queries = Vec::new();
    let mut hops = Vec::new();
    let mut times = Vec::new();
    let mut by_node: HashMap<(usize, NodeId), Vec<&piecemeal::dht::LookupReport>> = HashMap::new();
    for (i, r) in &sim.reports {
        by_node.entry((*i, r.target)).or_default().push(r);
    }
    for (i, h, _seeder) in &started {
        let found = sim.found.get(&(*i, *h)).copied().unwrap_or(0);
        if found > 0 {
            ok += 1;
        } else if std::env::var("DHT_SIM_DIAG").is_ok() {
            let mut alive: Vec<(NodeId, usize)> = sim
                .nodes
                .iter()
                .enumerate()
                .filter(|(_, n)| n.alive)
                .map(|(j, n)| (n.node.id(), j))
                .collect();
            alive.sort_by_key(|(id, _)| id.distance(h));
            let storing: Vec<usize> = alive
                .iter()
                .take(16)
                .map(|(_, j)| {
                    sim.nodes[*j]
                        .node
                        .store()
                        .get(h, 10, sim.now(), &mut Rng::new(1))
                        .len()
                })
                .collect();
            let true8: Vec<NodeId> = alive.iter().take(8).map(|(id, _)| *id).collect();
            let got: Vec<usize> = by_node
                .get(&(*i, *h))
                .map(|rs| {
                    rs.iter()
                        .map(|r| {
                            println!(
                                "  true cp {:?} lookup cp {:?} queries {} responses {} from node {} table {}",
                                true8.iter().map(|id| id.common_prefix(h)).collect::<Vec<_>>(),
                                r.closest.iter().map(|(id, _)| id.common_prefix(h)).collect::<Vec<_>>(),
                                r.queries, r.responses, i, sim.nodes[*i].node.table().len()
                            );
                            r.closest.iter().filter(|(id, _)| true8.contains(id)).count()
                        })
                        .collect()
                })
                .unwrap_or_default();
            println!(
                "miss: storing among 16 closest {storing:?}; lookup's closest that are in the true 8: {got:?}"
            );
        }
        if let Some(rs) = by_node.get(&(*i, *h)) {
            for r in rs.iter().filter(|r| r.get_peers) {
                queries.push(r.queries);
                hops.push(r.hops as u32);
                times.push(r.elapsed.as_millis() as u64);
            }
        }
    }
    queries.sort_unstable();
    hops.sort_unstable();
    times.sort_unstable();
    let pct = |v: &Vec<u32>, p: usize| v.get(v.len() * p / 100).copied().unwrap_or(0);
    let pct64 = |v: &Vec<u64>, p: usize| v.get(v.len() * p / 100).copied().unwrap_or(0);
    let mean = |v: &Vec<u32>| v.iter().map(|&x| x as f64).sum::<f64>() / v.len().max(1) as f64;
    let rate = ok as f64 / started.len() as f64;
    println!(
        "dht_sim: {} lookups under churn ({left} left, as many joined), {:.2}% found the seeder's peers",
        started.len(),
        rate * 100.0
    );
    println!(
        "dht_sim: queries per lookup mean {:.1}, median {}, p99 {}, max {}",
        mean(&queries),
        pct(&queries, 50),
        pct(&queries, 99),
        queries.last().copied().unwrap_or(0)
    );
    println!(
        "dht_sim: hops mean {:.1}, max {}; time per lookup median {} ms, p99 {} ms",
        mean(&hops),
        hops.last().copied().unwrap_or(0),
        pct64(&times, 50),
        pct64(&times, 99)
    );
    let mems: Vec<usize> = sim
        .nodes
        .iter()
        .filter(|n| n.alive)
        .map(|n| n.node.memory())
        .collect();
    let mem_mean = mems.iter().sum::<usize>() / mems.len();
    let bound = DhtConfig::default().memory_bound();
    println!(
        "dht_sim: memory per node mean {} KiB, max {} KiB (bound {} KiB)",
        mem_mean / 1024,
        mems.iter().max().unwrap() / 1024,
        bound / 1024
    );

    println!(
        "dht_sim: lookups wall {:.1} s",
        wall.elapsed().as_secs_f64()
    );
    // At rest (no lookups, only the network's upkeep), scaled to an hour:
    // 5 minutes by default (keeps the test short); DHT_SIM_REST_MIN=15
    // covers a whole ping cycle of the table (the figure in
    // docs/performance.md).
    let before = sim.datagrams_out();
    let rest_min: u64 = std::env::var("DHT_SIM_REST_MIN")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let t = sim.now_ms + rest_min * 60_000;
    sim.run_until(t);
    let per_hour =
        (sim.datagrams_out() - before) as f64 / sim.alive() as f64 * 60.0 / rest_min as f64;
    // Pings start when nodes turn questionable (15 minutes of silence),
    // refreshes after 15 idle minutes: a shorter window shows neither.
    let per_hour = if rest_min >= 15 {
        format!("{per_hour:.0}")
    } else {
        "(DHT_SIM_REST_MIN=15 to measure)".to_string()
    };
    println!(
        "dht_sim: at rest ({rest_min} min) {per_hour} datagrams sent per node per hour ({} alive); {} datagrams sent in all, {} lost; wall {:.1} s",
        sim.alive(),
        sim.sent,
        sim.lost,
        wall.elapsed().as_secs_f64()
    );

    assert!(
        rate >= 0.99,
        "lookup success {:.3} < 0.99 (seed {seed})",
        rate
    );
    assert!(
        queries.last().copied().unwrap_or(0) <= piecemeal::dht::lookup::MAX_QUERIES,
        "seed {seed}"
    );
    assert!(mems.iter().all(|&m| m <= bound), "seed {seed}");
}
