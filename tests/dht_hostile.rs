//! The DHT node core against a hostile world, driven with real KRPC
//! datagrams and a fake clock (no sockets): malformed, huge and deeply
//! nested messages, forged tokens, a flood of a million announced
//! info-hashes, queries spoofed from many addresses, and nodes that answer
//! every lookup with themselves or with garbage.

use piecemeal::dht::krpc::{self, Body, OutQuery};
use piecemeal::dht::{DhtConfig, DhtEvent, Node, NodeId};
use piecemeal::rng::Rng;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

fn v4(ip: u32, port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), port))
}

fn drain(n: &mut Node) -> Vec<(SocketAddrV4, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some(t) = n.poll_transmit() {
        out.push((t.to, t.data));
    }
    out
}

#[test]
fn malformed_huge_and_nested_messages_are_dropped_and_counted() {
    let now = Instant::now();
    let mut n = Node::new(NodeId([1; 20]), DhtConfig::default(), 1, now);
    let mut rng = Rng::new(7);
    let valid = krpc::encode_query(
        b"aa",
        &NodeId([2; 20]),
        &OutQuery::FindNode(NodeId([3; 20])),
        false,
    );
    let mut sent = 0u64;
    // Every truncation of a valid query, random bytes, bit flips.
    for cut in 0..valid.len() {
        n.handle_datagram(v4(0x0a00_0001, 1), &valid[..cut], now);
        sent += 1;
    }
    for i in 0..20_000u32 {
        let len = (rng.next_u64() % 300) as usize;
        let junk: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        n.handle_datagram(v4(0x0b00_0000 + i, 1), &junk, now);
        let mut flipped = valid.clone();
        let at = (rng.next_u64() as usize) % flipped.len();
        flipped[at] ^= 1 << (rng.next_u64() % 8);
        n.handle_datagram(v4(0x0c00_0000 + i, 1), &flipped, now);
        sent += 2;
    }
    // Huge and deeply nested.
    let huge = [
        &b"d1:t2:aa1:y1:q1:q4:ping1:ad2:id20:aaaaaaaaaaaaaaaaaaaa3:pad"[..],
        b"100000:",
        &vec![b'x'; 100_000],
        b"ee",
    ]
    .concat();
    n.handle_datagram(v4(0x0d00_0001, 1), &huge, now);
    let nested = [&b"d1:a"[..], &vec![b'l'; 700], &vec![b'e'; 700], b"e"].concat();
    n.handle_datagram(v4(0x0d00_0002, 1), &nested, now);
    sent += 2;
    let st = n.stats();
    assert_eq!(st.datagrams_in, sent);
    assert!(st.malformed > 0);
    // Whatever was answered decodes and is small.
    for (_, d) in drain(&mut n) {
        assert!(krpc::decode(&d).is_ok());
        assert!(d.len() <= 1500);
    }
    assert!(n.memory() <= DhtConfig::default().memory_bound());
}

#[test]
fn announce_peer_with_forged_tokens_stores_nothing() {
    let now = Instant::now();
    let mut n = Node::new(NodeId([1; 20]), DhtConfig::default(), 1, now);
    let h = NodeId([9; 20]);
    // A token issued to one address is useless from another.
    let q = krpc::encode_query(b"t1", &NodeId([2; 20]), &OutQuery::GetPeers(h), false);
    n.handle_datagram(v4(0x0a00_0001, 1000), &q, now);
    let answer = drain(&mut n).remove(0).1;
    let Body::Response(r) = krpc::decode(&answer).unwrap().body else {
        panic!("no answer")
    };
    let token = r.token.unwrap().to_vec();
    for (from, tok) in [
        (0x0a00_0002, token.clone()),
        (0x0a00_0001, b"forged!!".to_vec()),
        (0x0a00_0001, Vec::new()),
        (0x0a00_0001, vec![0; 64]),
    ] {
        let q = krpc::encode_query(
            b"t2",
            &NodeId([2; 20]),
            &OutQuery::AnnouncePeer(h, 7000, false, &tok),
            false,
        );
        n.handle_datagram(v4(from, 1000), &q, now);
    }
    assert_eq!(n.stats().bad_tokens, 4);
    assert_eq!(n.store().peers(), 0);
    // The right token from the right address is accepted, for 5–10 minutes.
    let q = krpc::encode_query(
        b"t3",
        &NodeId([2; 20]),
        &OutQuery::AnnouncePeer(h, 7000, false, &token),
        false,
    );
    n.handle_datagram(v4(0x0a00_0001, 1000), &q, now + Duration::from_secs(299));
    assert_eq!(n.store().peers(), 1);
}

/// Get a token as `from`, then announce `h` with it.
fn announce(n: &mut Node, from: SocketAddr, h: NodeId, now: Instant) {
    let q = krpc::encode_query(b"gp", &NodeId([2; 20]), &OutQuery::GetPeers(h), false);
    n.handle_datagram(from, &q, now);
    let mut token = None;
    for (_, d) in drain(n) {
        if let Ok(m) = krpc::decode(&d)
            && let Body::Response(r) = m.body
        {
            token = r.token.map(<[u8]>::to_vec);
        }
    }
    let Some(token) = token else { return };
    let q = krpc::encode_query(
        b"ap",
        &NodeId([2; 20]),
        &OutQuery::AnnouncePeer(h, 7000, false, &token),
        false,
    );
    n.handle_datagram(from, &q, now);
    drain(n);
}

#[test]
fn a_million_announced_info_hashes_keep_memory_at_the_bound() {
    let start = Instant::now();
    let config = DhtConfig::default();
    let bound = config.memory_bound();
    let caps = config.store;
    let mut n = Node::new(NodeId([1; 20]), config, 1, start);
    let mut rng = Rng::new(11);
    let total: u32 = if cfg!(debug_assertions) {
        100_000
    } else {
        1_000_000
    };
    let mut now = start;
    let mut peak = 0;
    for i in 0..total {
        // Spoofed from a million addresses, paced under the global limit.
        if i % 500 == 0 {
            now += Duration::from_secs(1);
            n.handle_timeout(now);
            peak = peak.max(n.memory());
        }
        let from = v4(0x1000_0000 + i, 6881);
        announce(&mut n, from, NodeId::random(&mut rng), now);
    }
    peak = peak.max(n.memory());
    println!(
        "{total} info-hashes announced: {} stored swarms, {} peers, memory {} KiB (peak {} KiB, bound {} KiB)",
        n.store().swarms(),
        n.store().peers(),
        n.memory() / 1024,
        peak / 1024,
        bound / 1024
    );
    assert!(n.store().swarms() <= caps.max_swarms);
    assert!(n.store().peers() <= caps.max_total);
    assert!(peak <= bound, "{peak} > {bound}");
}

#[test]
fn spoofed_queries_from_many_addresses_hit_the_rate_limits_without_amplification() {
    let now = Instant::now();
    let config = DhtConfig::default();
    let global = config.global_rate as u64;
    let per_ip = config.per_ip_rate as u64;
    let mut n = Node::new(NodeId([1; 20]), config, 1, now);
    // Give it a table to answer find_node with.
    let mut rng = Rng::new(3);
    for i in 0..200u32 {
        let id = NodeId::random(&mut rng);
        let from = v4(0x0a00_0000 + i, 6881);
        // It pings back each new querier; answer the ping so it enters the table.
        let q = krpc::encode_query(b"pp", &id, &OutQuery::Ping, false);
        n.handle_datagram(from, &q, now);
        for (_, d) in drain(&mut n) {
            let m = krpc::decode(&d).unwrap();
            if let Body::Query { .. } = m.body {
                let r = krpc::encode_response(
                    m.tid,
                    &id,
                    SocketAddrV4::new(Ipv4Addr::LOCALHOST, 1),
                    &Default::default(),
                );
                n.handle_datagram(from, &r, now);
            }
        }
    }
    assert!(n.table().len() >= 16);
    let (in0, out0) = (n.stats().bytes_in, n.stats().bytes_out);
    // 100,000 find_node queries in one second from 100,000 addresses.
    let later = now + Duration::from_secs(10);
    let mut answers = 0;
    for i in 0..100_000u32 {
        let q = krpc::encode_query(
            b"fn",
            &NodeId([5; 20]),
            &OutQuery::FindNode(NodeId::random(&mut rng)),
            false,
        );
        n.handle_datagram(v4(0x2000_0000 + i, 1), &q, later);
        answers += drain(&mut n).len() as u64;
    }
    assert!(answers <= global + 1, "{answers} answers in one second");
    // From one address: per-address limit.
    let mut one = 0;
    for _ in 0..10_000 {
        let q = krpc::encode_query(
            b"fn",
            &NodeId([5; 20]),
            &OutQuery::FindNode(NodeId([6; 20])),
            false,
        );
        n.handle_datagram(v4(0x3000_0001, 1), &q, later + Duration::from_secs(5));
        one += drain(&mut n).len() as u64;
    }
    assert!(one <= per_ip * 4 + 1, "{one} answers to one address");
    let (bin, bout) = (n.stats().bytes_in - in0, n.stats().bytes_out - out0);
    assert!(bout <= 4 * bin, "out {bout} vs in {bin}");
    assert!(n.stats().rate_limited > 100_000);
}

/// A tiny in-memory network: node i at 10.9.0.i:6881; `evil` nodes answer
/// every query with themselves and garbage nodes (ids near the target,
/// addresses nobody listens on).
struct Net {
    nodes: Vec<Node>,
    evil: Vec<bool>,
    rng: Rng,
    now: Instant,
}

impl Net {
    fn addr(i: usize) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::from(0x0a09_0000 + i as u32 + 1), 6881)
    }

    fn index(a: &SocketAddrV4) -> Option<usize> {
        let ip = u32::from(*a.ip());
        (ip & 0xffff_0000 == 0x0a09_0000 && a.port() == 6881).then(|| (ip - 0x0a09_0001) as usize)
    }

    fn evil_answer(&mut self, i: usize, from: SocketAddrV4, data: &[u8]) -> Option<Vec<u8>> {
        let m = krpc::decode(data).ok()?;
        let Body::Query { query, .. } = m.body else {
            return None;
        };
        let target = match query {
            krpc::Query::FindNode { target } => target,
            krpc::Query::GetPeers { info_hash } => info_hash,
            _ => NodeId([0; 20]),
        };
        let me = self.nodes[i].id();
        let mut nodes = Vec::new();
        krpc::write_compact_node(&mut nodes, &me, Net::addr(i));
        for k in 0..7 {
            let mut id = target;
            id.0[19] ^= k + 1;
            id.0[18] = self.rng.next_u64() as u8;
            let junk = SocketAddrV4::new(
                Ipv4Addr::from(0x0afe_0000 + (self.rng.next_u64() as u32 & 0xffff)),
                1 + k as u16,
            );
            krpc::write_compact_node(&mut nodes, &id, junk);
        }
        Some(krpc::encode_response(
            m.tid,
            &me,
            from,
            &krpc::OutResponse {
                nodes: &nodes,
                values: &[],
                token: Some(b"evil"),
            },
        ))
    }

    /// Deliver datagrams and fire timers for `secs` seconds, 100 ms apart.
    fn run(&mut self, secs: u64) {
        for _ in 0..secs * 10 {
            self.now += Duration::from_millis(100);
            for i in 0..self.nodes.len() {
                let now = self.now;
                self.nodes[i].handle_timeout(now);
            }
            for _ in 0..50 {
                let mut moved = false;
                for i in 0..self.nodes.len() {
                    while let Some(t) = self.nodes[i].poll_transmit() {
                        moved = true;
                        let Some(j) = Net::index(&t.to).filter(|&j| j < self.nodes.len()) else {
                            continue;
                        };
                        let from = Net::addr(i);
                        if self.evil[j] {
                            if let Some(a) = self.evil_answer(j, from, &t.data) {
                                let now = self.now;
                                self.nodes[i].handle_datagram(
                                    SocketAddr::V4(Net::addr(j)),
                                    &a,
                                    now,
                                );
                            }
                        } else {
                            let now = self.now;
                            self.nodes[j].handle_datagram(SocketAddr::V4(from), &t.data, now);
                        }
                    }
                }
                if !moved {
                    break;
                }
            }
        }
    }
}

#[test]
fn lookups_converge_despite_nodes_answering_with_themselves_and_garbage() {
    let start = Instant::now();
    let mut rng = Rng::new(99);
    let n = 60;
    let mut net = Net {
        nodes: (0..n)
            .map(|i| {
                Node::new(
                    NodeId::random(&mut rng),
                    DhtConfig::default(),
                    i as u64,
                    start,
                )
            })
            .collect(),
        // One in five answers with itself and garbage.
        evil: (0..n).map(|i| i % 5 == 4).collect(),
        rng: Rng::new(5),
        now: start,
    };
    for i in 1..n {
        let now = net.now;
        net.nodes[i].add_bootstrap(Net::addr(0), now);
        net.nodes[i].add_bootstrap(Net::addr(4), now); // an evil one
        net.run(1);
    }
    net.run(10);
    let h = NodeId::random(&mut rng);
    let now = net.now;
    net.nodes[1].announce(h, 7001, false, now);
    net.run(20);
    let mut found = 0;
    let mut lookups = 0;
    let honest: Vec<usize> = (2..n).filter(|i| !net.evil[*i]).take(20).collect();
    for i in honest {
        let now = net.now;
        net.nodes[i].get_peers(h, now);
        net.run(20);
        lookups += 1;
        while let Some(e) = net.nodes[i].poll_event() {
            match e {
                DhtEvent::Peers { peers, .. } => {
                    if peers.contains(&SocketAddrV4::new(*Net::addr(1).ip(), 7001)) {
                        found += 1;
                    }
                }
                DhtEvent::LookupDone(r) => {
                    assert!(r.queries <= piecemeal::dht::lookup::MAX_QUERIES, "{r:?}");
                }
            }
        }
    }
    assert_eq!(found, lookups, "every lookup finds the announced peer");
}
