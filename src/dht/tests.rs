use super::krpc::{self, Body, OutQuery, OutResponse, Query};
use super::store::{PeerStore, StoreCaps};
use super::table::{Heard, K, NodeState, RoutingTable};
use super::*;
use crate::rng::Rng;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

fn addr(i: u32, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::from(0x0a00_0000 + i), port)
}

fn id_with_prefix(first: u8, rest: u8) -> NodeId {
    let mut b = [rest; 20];
    b[0] = first;
    NodeId(b)
}

#[test]
fn bep42_test_vectors() {
    // The BEP's examples: address, salt byte, expected leading bytes.
    let cases = [
        ("124.31.75.21", 1u8, [0x5f, 0xbf, 0xbf]),
        ("21.75.31.124", 86, [0x5a, 0x3c, 0xe9]),
        ("65.23.51.170", 22, [0xa5, 0xd4, 0x32]),
        ("84.124.73.14", 65, [0x1b, 0x03, 0x21]),
        ("43.213.53.83", 90, [0xe5, 0x6f, 0x6c]),
    ];
    for (ip, r, want) in cases {
        let ip: Ipv4Addr = ip.parse().unwrap();
        let mut id = NodeId([0; 20]);
        id.0[19] = r;
        id.0[0] = want[0];
        id.0[1] = want[1];
        id.0[2] = want[2];
        assert!(id.bep42_valid_for(ip), "{ip}");
        id.0[0] ^= 1;
        assert!(!id.bep42_valid_for(ip), "{ip}");
    }
    let mut rng = Rng::new(5);
    let ip: Ipv4Addr = "124.31.75.21".parse().unwrap();
    for _ in 0..20 {
        assert!(NodeId::bep42(ip, &mut rng).bep42_valid_for(ip));
    }
    assert_eq!(id::crc32c(b"123456789"), 0xe306_9283);
}

#[test]
fn random_in_bucket_has_the_asked_prefix() {
    let mut rng = Rng::new(1);
    let own = NodeId::random(&mut rng);
    for p in [0, 1, 7, 8, 63, 159] {
        let t = own.random_in_bucket(p, &mut rng);
        assert_eq!(own.common_prefix(&t), p);
    }
}

#[test]
fn every_query_round_trips() {
    let me = NodeId([1; 20]);
    let h = NodeId([2; 20]);
    for q in [
        OutQuery::Ping,
        OutQuery::FindNode(h),
        OutQuery::GetPeers(h),
        OutQuery::AnnouncePeer(h, 6881, false, b"tok"),
        OutQuery::AnnouncePeer(h, 0, true, b"tok"),
    ] {
        let bytes = krpc::encode_query(b"ab", &me, &q, false);
        crate::bencode::validate(&bytes, &crate::bencode::Limits::TRACKER.canonical()).unwrap();
        let m = krpc::decode(&bytes).unwrap();
        assert_eq!(m.tid, b"ab");
        let Body::Query { sender, query } = m.body else {
            panic!("not a query")
        };
        assert_eq!(sender, me);
        match (q, query) {
            (OutQuery::Ping, Query::Ping) => {}
            (OutQuery::FindNode(a), Query::FindNode { target }) => assert_eq!(a, target),
            (OutQuery::GetPeers(a), Query::GetPeers { info_hash }) => assert_eq!(a, info_hash),
            (
                OutQuery::AnnouncePeer(a, p, i, t),
                Query::AnnouncePeer {
                    info_hash,
                    port,
                    implied_port,
                    token,
                },
            ) => {
                assert_eq!((a, p, i, t), (info_hash, port, implied_port, token));
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn responses_round_trip_with_nodes_values_and_ip() {
    let mut nodes = Vec::new();
    krpc::write_compact_node(&mut nodes, &NodeId([3; 20]), addr(1, 1000));
    krpc::write_compact_node(&mut nodes, &NodeId([4; 20]), addr(2, 2000));
    let values = [addr(5, 5000), addr(6, 6000)];
    let bytes = krpc::encode_response(
        b"xyzw",
        &NodeId([9; 20]),
        addr(7, 7000),
        &OutResponse {
            nodes: &nodes,
            values: &values,
            token: Some(b"tk"),
        },
    );
    crate::bencode::validate(&bytes, &crate::bencode::Limits::TRACKER.canonical()).unwrap();
    let m = krpc::decode(&bytes).unwrap();
    assert_eq!(m.ip, Some(addr(7, 7000)));
    let Body::Response(r) = m.body else { panic!() };
    assert_eq!(r.id, NodeId([9; 20]));
    assert_eq!(
        r.nodes().collect::<Vec<_>>(),
        [
            (NodeId([3; 20]), addr(1, 1000)),
            (NodeId([4; 20]), addr(2, 2000))
        ]
    );
    assert_eq!(r.values().collect::<Vec<_>>(), values);
    assert_eq!(r.token, Some(&b"tk"[..]));
    let e = krpc::encode_error(b"zz", 201, "oops");
    assert_eq!(
        krpc::decode(&e).unwrap().body,
        Body::Error {
            code: 201,
            message: b"oops"
        }
    );
}

#[test]
fn decoding_rejects_hostile_messages() {
    let deep = [
        vec![b'd', b'1', b':', b'a'],
        vec![b'l'; 50_000],
        vec![b'e'; 50_001],
    ]
    .concat();
    assert_eq!(krpc::decode(&deep), Err(krpc::KrpcError::TooLong));
    let nested = [&b"d1:a"[..], &[b'l'; 10], &[b'e'; 11]].concat();
    assert_eq!(krpc::decode(&nested), Err(krpc::KrpcError::Bencode));
    assert_eq!(krpc::decode(b"i5e"), Err(krpc::KrpcError::NotDict));
    assert_eq!(
        krpc::decode(b"d1:y1:qe"),
        Err(krpc::KrpcError::Missing("t"))
    );
    let long_tid = b"d1:t17:aaaaaaaaaaaaaaaaa1:y1:re";
    assert_eq!(krpc::decode(long_tid), Err(krpc::KrpcError::Bad("t")));
    let bad_nodes = b"d1:rd2:id20:aaaaaaaaaaaaaaaaaaaa5:nodes3:abce1:t2:aa1:y1:re";
    assert_eq!(krpc::decode(bad_nodes), Err(krpc::KrpcError::Bad("nodes")));
    let short_id = b"d1:ad2:id3:abce1:q4:ping1:t2:aa1:y1:qe";
    assert_eq!(krpc::decode(short_id), Err(krpc::KrpcError::Bad("id")));
    for cut in 0..long_tid.len() {
        let _ = krpc::decode(&long_tid[..cut]);
    }
}

#[test]
fn table_splits_around_own_id_and_keeps_k_per_bucket() {
    let now = Instant::now();
    let own = NodeId([0; 20]);
    let mut t = RoutingTable::new(own, true, now);
    let mut rng = Rng::new(3);
    for i in 0..2000 {
        let id = NodeId::random(&mut rng);
        t.heard(id, addr(i, 1), Heard::Reply, now);
    }
    // Far buckets are full; the table has split a dozen times or so.
    assert!(t.bucket_count() > 5, "{}", t.bucket_count());
    assert!(t.len() <= t.bucket_count() * K);
    assert!(t.len() >= (t.bucket_count() - 2) * K);
    for i in 0..t.bucket_count() {
        let _ = i;
    }
    let close = t.closest(&own, K, now);
    assert_eq!(close.len(), K);
    let d: Vec<_> = close.iter().map(|(id, _)| id.distance(&own)).collect();
    assert!(d.windows(2).all(|w| w[0] <= w[1]));
}

#[test]
fn query_only_nodes_wait_as_replacements_until_they_answer() {
    let now = Instant::now();
    let mut t = RoutingTable::new(NodeId([0; 20]), true, now);
    let n = id_with_prefix(0x80, 1);
    assert!(!t.heard(n, addr(1, 1), Heard::Query, now));
    assert_eq!(t.len(), 0);
    let mut rng = Rng::new(1);
    let m = t.maintenance(now, &mut rng);
    assert_eq!(m.pings, [(n, addr(1, 1))]);
    assert!(t.heard(n, addr(1, 1), Heard::Reply, now));
    assert_eq!(t.len(), 1);
}

#[test]
fn bad_nodes_are_replaced_and_questionable_ones_pinged() {
    let now = Instant::now();
    let own = NodeId([0; 20]);
    let mut t = RoutingTable::new(own, true, now);
    // Fill the far half (first bit 1) and force a split by adding near nodes.
    for i in 0..K as u32 {
        t.heard(
            id_with_prefix(0x80 | i as u8, 1),
            addr(i, 1),
            Heard::Reply,
            now,
        );
    }
    t.heard(id_with_prefix(0x01, 1), addr(100, 1), Heard::Reply, now);
    assert!(t.bucket_count() >= 2);
    let newcomer = id_with_prefix(0xf0, 2);
    assert!(!t.heard(newcomer, addr(200, 1), Heard::Reply, now));
    // After 16 minutes of silence the nodes are questionable and get pinged.
    let later = now + Duration::from_secs(16 * 60);
    let victim = id_with_prefix(0x80, 1);
    assert_eq!(
        t.get(&victim).unwrap().state(later),
        NodeState::Questionable
    );
    let mut rng = Rng::new(1);
    let m = t.maintenance(later, &mut rng);
    assert!(!m.pings.is_empty());
    assert!(!m.refresh.is_empty(), "stale buckets are refreshed");
    // The victim fails twice: bad, and the verified replacement takes its place.
    t.failed(&victim, addr(0, 1), later);
    assert!(t.get(&victim).is_some());
    t.failed(&victim, addr(0, 1), later);
    assert!(t.get(&victim).is_none());
    assert!(t.get(&newcomer).is_some());
}

#[test]
fn a_known_id_does_not_move_to_a_new_address() {
    let now = Instant::now();
    let mut t = RoutingTable::new(NodeId([0; 20]), true, now);
    let n = id_with_prefix(0x80, 1);
    t.heard(n, addr(1, 1), Heard::Reply, now);
    t.heard(n, addr(2, 2), Heard::Reply, now);
    assert_eq!(t.get(&n).unwrap().addr, addr(1, 1));
    // One address, one entry per bucket.
    assert!(!t.heard(id_with_prefix(0x81, 1), addr(1, 1), Heard::Reply, now));
}

#[test]
fn tokens_survive_one_rotation_not_two() {
    let mut rng = Rng::new(1);
    let now = Instant::now();
    let mut tk = tokens::Tokens::new(&mut rng, now);
    let ip = Ipv4Addr::new(1, 2, 3, 4);
    let t = tk.issue(ip);
    assert!(tk.check(ip, &t));
    assert!(!tk.check(Ipv4Addr::new(1, 2, 3, 5), &t));
    tk.tick(now + tokens::ROTATE_EVERY, &mut rng);
    assert!(tk.check(ip, &t));
    tk.tick(now + 2 * tokens::ROTATE_EVERY, &mut rng);
    assert!(!tk.check(ip, &t));
}

#[test]
fn store_caps_hold_under_a_flood_of_info_hashes() {
    let caps = StoreCaps {
        max_swarms: 100,
        max_peers_per_swarm: 10,
        max_total: 500,
        max_per_source: 5,
    };
    let mut s = PeerStore::new(caps);
    let mut rng = Rng::new(9);
    let now = Instant::now();
    for i in 0..20_000u32 {
        let h = NodeId::random(&mut rng);
        s.announce(h, addr(i, 1), Ipv4Addr::from(i), now, &mut rng);
        assert!(s.swarms() <= 100 && s.peers() <= 500);
    }
    assert!(s.memory() <= PeerStore::memory_bound(&caps));
    // One source holds at most max_per_source entries.
    let mut s = PeerStore::new(caps);
    let src = Ipv4Addr::new(6, 6, 6, 6);
    for i in 0..50u32 {
        s.announce(NodeId::random(&mut rng), addr(i, 1), src, now, &mut rng);
    }
    assert_eq!(s.peers(), 5);
    // Entries expire.
    s.expire(now + store::PEER_TTL + Duration::from_secs(1));
    assert_eq!((s.peers(), s.swarms()), (0, 0));
}

#[test]
fn store_keeps_at_most_max_peers_per_swarm() {
    let caps = StoreCaps::default();
    let mut s = PeerStore::new(caps);
    let mut rng = Rng::new(9);
    let now = Instant::now();
    let h = NodeId([1; 20]);
    for i in 0..1000u32 {
        s.announce(h, addr(i, 1), Ipv4Addr::from(i), now, &mut rng);
    }
    assert_eq!(s.peers(), caps.max_peers_per_swarm);
    assert_eq!(s.get(&h, 50, now, &mut rng).len(), 50);
}

#[test]
fn rate_limit_holds_per_address_and_globally() {
    let mut r = ratelimit::RateLimiter::new(10, 100, 77);
    let now = Instant::now();
    let ip = Ipv4Addr::new(1, 1, 1, 1);
    let allowed = (0..1000).filter(|_| r.allow(ip, now)).count();
    assert_eq!(allowed, 40, "burst of 4 s worth");
    let later = now + Duration::from_secs(1);
    assert_eq!((0..1000).filter(|_| r.allow(ip, later)).count(), 10);
    // Spoofed from many addresses: the global budget holds.
    let t = now + Duration::from_secs(10);
    let allowed = (0..100_000u32)
        .filter(|i| r.allow(Ipv4Addr::from(0x0b00_0000 + i), t))
        .count();
    assert!(allowed <= 100, "{allowed}");
}

/// Deliver every queued datagram between nodes (addresses index into `nodes`).
fn run(nodes: &mut [Node], addrs: &[SocketAddrV4], now: Instant) {
    for _ in 0..1000 {
        let mut moved = false;
        for i in 0..nodes.len() {
            nodes[i].handle_timeout(now);
            while let Some(t) = nodes[i].poll_transmit() {
                moved = true;
                if let Some(j) = addrs.iter().position(|a| *a == t.to) {
                    nodes[j].handle_datagram(SocketAddr::V4(addrs[i]), &t.data, now);
                }
            }
        }
        if !moved {
            return;
        }
    }
}

#[test]
fn a_small_network_finds_an_announced_peer() {
    let now = Instant::now();
    let mut rng = Rng::new(42);
    let addrs: Vec<SocketAddrV4> = (0..20).map(|i| addr(i + 1, 6881)).collect();
    let mut nodes: Vec<Node> = (0..20)
        .map(|i| Node::new(NodeId::random(&mut rng), DhtConfig::default(), i, now))
        .collect();
    // Nodes join one after the other, each through node 0.
    for i in 1..nodes.len() {
        nodes[i].add_bootstrap(addrs[0], now);
        run(&mut nodes, &addrs, now);
    }
    let sizes: Vec<usize> = nodes.iter().map(|n| n.table().len()).collect();
    assert!(sizes.iter().all(|&s| s >= 5), "tables {sizes:?}");
    let h = NodeId([0x55; 20]);
    nodes[3].announce(h, 7000, false, now);
    run(&mut nodes, &addrs, now);
    while nodes[3].poll_event().is_some() {}
    nodes[15].announce(h, 7001, false, now);
    run(&mut nodes, &addrs, now);
    let mut found = Vec::new();
    while let Some(e) = nodes[15].poll_event() {
        if let DhtEvent::Peers { info_hash, peers } = e {
            assert_eq!(info_hash, h);
            found.extend(peers);
        }
    }
    assert!(
        found.contains(&SocketAddrV4::new(*addrs[3].ip(), 7000)),
        "{found:?}"
    );
}

#[test]
fn announce_with_a_bad_token_is_refused_and_counted() {
    let now = Instant::now();
    let mut n = Node::new(NodeId([1; 20]), DhtConfig::default(), 1, now);
    let q = krpc::encode_query(
        b"aa",
        &NodeId([2; 20]),
        &OutQuery::AnnouncePeer(NodeId([3; 20]), 1, false, b"nope"),
        false,
    );
    n.handle_datagram(SocketAddr::V4(addr(9, 9)), &q, now);
    assert_eq!(n.stats().bad_tokens, 1);
    assert_eq!(n.store().peers(), 0);
    let t = n.poll_transmit().unwrap();
    assert!(matches!(
        krpc::decode(&t.data).unwrap().body,
        Body::Error { code: 203, .. }
    ));
}

#[test]
fn answers_are_never_much_larger_than_queries() {
    let now = Instant::now();
    let mut rng = Rng::new(1);
    let mut n = Node::new(NodeId([1; 20]), DhtConfig::default(), 1, now);
    let h = NodeId([3; 20]);
    // A full swarm to answer with.
    for i in 0..100u32 {
        let tok = {
            let q = krpc::encode_query(b"aa", &NodeId([2; 20]), &OutQuery::GetPeers(h), false);
            n.handle_datagram(SocketAddr::V4(addr(i, 9)), &q, now);
            let t = n.poll_transmit().unwrap();
            while n.poll_transmit().is_some() {}
            let m = krpc::decode(&t.data).unwrap();
            let Body::Response(r) = m.body else { panic!() };
            r.token.unwrap().to_vec()
        };
        let q = krpc::encode_query(
            b"aa",
            &NodeId::random(&mut rng),
            &OutQuery::AnnouncePeer(h, 1, false, &tok),
            false,
        );
        n.handle_datagram(SocketAddr::V4(addr(i, 9)), &q, now);
        while n.poll_transmit().is_some() {}
    }
    assert_eq!(n.store().peers(), 100);
    let q = krpc::encode_query(b"aa", &NodeId([2; 20]), &OutQuery::GetPeers(h), false);
    n.handle_datagram(SocketAddr::V4(addr(1000, 9)), &q, now);
    let t = n.poll_transmit().unwrap();
    assert!(
        t.data.len() <= 4 * q.len(),
        "{} vs {}",
        t.data.len(),
        q.len()
    );
    let Body::Response(r) = krpc::decode(&t.data).unwrap().body else {
        panic!()
    };
    assert!(r.values().count() >= 20);
}

#[test]
fn state_file_round_trips() {
    let s = state::SavedState {
        id: Some(NodeId([5; 20])),
        external_ip: Some(Ipv4Addr::new(1, 2, 3, 4)),
        nodes: vec![(NodeId([6; 20]), addr(1, 2)), (NodeId([7; 20]), addr(3, 4))],
    };
    assert_eq!(state::SavedState::decode(&s.encode()), Some(s));
    assert_eq!(state::SavedState::decode(b"garbage"), None);
}

#[test]
fn an_announce_that_reached_nobody_is_retried_soon() {
    let now = Instant::now();
    let mut n = Node::new(NodeId([1; 20]), DhtConfig::default(), 1, now);
    let h = NodeId([2; 20]);
    // No node known: the lookup ends at once, having reached nobody.
    n.announce(h, 6881, false, now);
    assert!(matches!(n.poll_event(), Some(DhtEvent::LookupDone(_))));
    let t = n.poll_timeout().unwrap();
    assert!(t <= now + Duration::from_secs(15), "{:?}", t - now);
    // A bootstrap node arrives: the next attempt goes to it.
    n.add_bootstrap(addr(1, 1), now + Duration::from_secs(1));
    n.handle_timeout(now + Duration::from_secs(16));
    let sent: Vec<_> = std::iter::from_fn(|| n.poll_transmit()).collect();
    assert!(sent.iter().any(|t| t.to == addr(1, 1)));
}
