use super::*;
use crate::tracker::udp_wire::{self, CONNECT_LEN, PROTOCOL_ID, UdpResponse, decode_response};
use crate::tracker::{AnnounceParams, Event, ServerConfig, percent_encode};

const HASH: [u8; 20] = [0xAB; 20];
const SECRET: [u8; 32] = [7; 32];

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn pid(n: u8) -> [u8; 20] {
    let mut id = *b"-PM0001-000000000000";
    id[19] = n;
    id
}

fn setup(t0: Instant) -> (UdpServer, Tracker) {
    (
        UdpServer::new(SECRET, UdpServerConfig::default(), t0),
        Tracker::new(ServerConfig::default()),
    )
}

fn connect_request(txn: u32) -> Vec<u8> {
    udp_wire::connect_request(txn).to_vec()
}

/// Connect from `from`; the connection id.
fn connect(s: &mut UdpServer, t: &mut Tracker, from: SocketAddr, now: Instant) -> u64 {
    let mut out = Vec::new();
    assert!(s.handle(t, from, &connect_request(1), now, &mut out));
    match decode_response(&out).unwrap() {
        UdpResponse::Connect { txn: 1, conn_id } => conn_id,
        other => panic!("{other:?}"),
    }
}

fn params(id: [u8; 20], port: u16, left: u64, event: Event) -> AnnounceParams {
    AnnounceParams {
        info_hash: HASH,
        peer_id: id,
        port,
        uploaded: 0,
        downloaded: 0,
        left,
        event,
        numwant: 50,
        key: 1,
        tracker_id: None,
    }
}

/// An announce with connection id `cid`; the answer, if any.
fn announce(
    s: &mut UdpServer,
    t: &mut Tracker,
    from: SocketAddr,
    cid: u64,
    p: &AnnounceParams,
    now: Instant,
) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let req = udp_wire::announce_request(cid, 2, p);
    s.handle(t, from, &req, now, &mut out).then_some(out)
}

/// Connect, then announce; the decoded answer's (leechers, seeders, peers).
fn join(
    s: &mut UdpServer,
    t: &mut Tracker,
    from: &str,
    p: &AnnounceParams,
    now: Instant,
) -> (u32, u32, Vec<u8>) {
    let from = addr(from);
    let cid = connect(s, t, from, now);
    let out = announce(s, t, from, cid, p, now).unwrap();
    match decode_response(&out).unwrap() {
        UdpResponse::Announce {
            txn: 2,
            interval,
            leechers,
            seeders,
            peers,
        } => {
            assert_eq!(interval, t.config().interval);
            (leechers, seeders, peers.to_vec())
        }
        other => panic!("{other:?}"),
    }
}

fn error_text(out: &[u8]) -> String {
    match decode_response(out).unwrap() {
        UdpResponse::Error { message, .. } => String::from_utf8(message.to_vec()).unwrap(),
        other => panic!("not an error: {other:?}"),
    }
}

#[test]
fn a_connect_gets_16_bytes_for_16_with_its_transaction_id() {
    let t0 = Instant::now();
    let (mut s, mut t) = setup(t0);
    let mut out = Vec::new();
    for extra in [0, 1, 84] {
        let mut req = connect_request(0xCAFE);
        req.extend(std::iter::repeat_n(0, extra));
        assert!(s.handle(&mut t, addr("10.0.0.1:5000"), &req, t0, &mut out));
        assert_eq!(out.len(), CONNECT_LEN);
        assert!(out.len() <= req.len());
        assert_eq!(
            decode_response(&out).unwrap(),
            UdpResponse::Connect {
                txn: 0xCAFE,
                conn_id: s.connection_id("10.0.0.1".parse().unwrap(), t0)
            }
        );
    }
    // 15 bytes, or no protocol id: nothing.
    let req = connect_request(1);
    assert!(!s.handle(&mut t, addr("10.0.0.1:5000"), &req[..15], t0, &mut out));
    let mut wrong = req.clone();
    wrong[0] ^= 1;
    assert!(!s.handle(&mut t, addr("10.0.0.1:5000"), &wrong, t0, &mut out));
    assert!(out.is_empty());
    assert_eq!(s.stats().malformed, 2);
    assert_eq!(s.stats().connects, 3);
}

#[test]
fn an_announce_registers_the_peer_and_returns_the_others() {
    let t0 = Instant::now();
    let (mut s, mut t) = setup(t0);
    let (leechers, seeders, peers) = join(
        &mut s,
        &mut t,
        "10.0.0.1:5000",
        &params(pid(1), 6881, 0, Event::Started),
        t0,
    );
    assert_eq!((leechers, seeders), (0, 1));
    assert!(peers.is_empty(), "never the requester itself");
    let (leechers, seeders, peers) = join(
        &mut s,
        &mut t,
        "10.0.0.2:5000",
        &params(pid(2), 6882, 100, Event::Started),
        t0,
    );
    assert_eq!((leechers, seeders), (1, 1));
    assert_eq!(peers, [10, 0, 0, 1, 0x1A, 0xE1], "the announced port");
    assert_eq!(t.num_peers(), 2);
    assert_eq!(s.stats().announces, 2);
}

#[test]
fn announces_and_scrapes_without_a_valid_connection_id_get_no_answer() {
    let t0 = Instant::now();
    let (mut s, mut t) = setup(t0);
    let me = addr("10.0.0.1:5000");
    let cid = connect(&mut s, &mut t, me, t0);
    let p = params(pid(1), 6881, 0, Event::Started);
    // Made up, or another address's (a copy seen on the wire).
    for (from, id) in [(me, cid ^ 1), (me, 0), (addr("10.0.0.2:5000"), cid)] {
        assert!(announce(&mut s, &mut t, from, id, &p, t0).is_none());
        let mut out = Vec::new();
        let scrape = udp_wire::scrape_request(id, 3, &[HASH]);
        assert!(!s.handle(&mut t, from, &scrape, t0, &mut out));
    }
    assert_eq!(s.stats().bad_connection_id, 6);
    assert_eq!(t.num_peers(), 0, "nothing registered");
    // The same address on another port keeps its id (NATs move ports).
    assert!(announce(&mut s, &mut t, addr("10.0.0.1:5001"), cid, &p, t0).is_some());
}

#[test]
fn a_connection_id_lives_one_to_two_minutes() {
    let t0 = Instant::now();
    let (mut s, mut t) = setup(t0);
    let me = addr("10.0.0.1:5000");
    let p = params(pid(1), 6881, 0, Event::None);
    let cid = connect(&mut s, &mut t, me, t0 + Duration::from_secs(59));
    for (at, ok) in [
        (59, true),
        (60, true),
        (119, true),
        (120, false),
        (600, false),
    ] {
        let got = announce(&mut s, &mut t, me, cid, &p, t0 + Duration::from_secs(at));
        assert_eq!(got.is_some(), ok, "at {at} s");
    }
    // Obtained at 60 s (the second window): good until 179 s.
    let cid = connect(&mut s, &mut t, me, t0 + Duration::from_secs(60));
    assert!(announce(&mut s, &mut t, me, cid, &p, t0 + Duration::from_secs(179)).is_some());
    assert!(announce(&mut s, &mut t, me, cid, &p, t0 + Duration::from_secs(180)).is_none());
}

#[test]
fn connection_ids_are_keyed_by_the_secret_and_the_address() {
    let t0 = Instant::now();
    let a = UdpServer::new([1; 32], UdpServerConfig::default(), t0);
    let b = UdpServer::new([2; 32], UdpServerConfig::default(), t0);
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let x = a.connection_id(ip("10.0.0.1"), t0);
    assert_ne!(x, b.connection_id(ip("10.0.0.1"), t0));
    assert_ne!(x, a.connection_id(ip("10.0.0.2"), t0));
    assert_ne!(x, a.connection_id(ip("10.0.0.1"), t0 + ID_WINDOW));
    assert_eq!(x, a.connection_id(ip("::ffff:10.0.0.1"), t0));
    assert_ne!(x, PROTOCOL_ID);
}

/// Whatever arrives, an answer to a datagram without a valid connection
/// id is never larger than the datagram.
#[test]
fn no_answer_to_an_unauthenticated_datagram_is_larger_than_it() {
    let t0 = Instant::now();
    let (mut s, mut t) = setup(t0);
    let from = addr("127.0.0.1:5000"); // no rate limit
    let valid = s.connection_id(from.ip(), t0);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut out = Vec::new();
    let mut answered = 0;
    for i in 0..100_000u32 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = [8, 15, 16, 17, 20, 97, 98, 99, 116, 1496][i as usize % 10];
        let mut d: Vec<u8> = (0..len)
            .map(|j| (x >> (j % 8 * 8)) as u8 ^ j as u8)
            .collect();
        // Valid actions and connect magic often enough to get past decoding.
        if len >= 16 {
            d[8..12].copy_from_slice(&(i % 4).to_be_bytes());
            if i % 4 == 0 && i % 8 == 0 {
                d[..8].copy_from_slice(&PROTOCOL_ID.to_be_bytes());
            }
            if i % 4 == 2 {
                d.truncate(16 + (d.len() - 16) / 20 * 20);
            }
        }
        if s.handle(&mut t, from, &d, t0, &mut out) {
            answered += 1;
            let authenticated = d.len() >= 8 && d[..8] == valid.to_be_bytes();
            assert!(
                authenticated || out.len() <= d.len(),
                "{} bytes for {}",
                out.len(),
                d.len()
            );
        }
    }
    assert!(answered > 1000, "the connect path was exercised");
    assert_eq!(t.num_peers(), 0);
}

#[test]
fn udp_and_http_share_one_swarm() {
    let t0 = Instant::now();
    let (mut s, mut t) = setup(t0);
    join(
        &mut s,
        &mut t,
        "10.0.0.1:5000",
        &params(pid(1), 6881, 0, Event::Started),
        t0,
    );
    // An HTTP announce sees the UDP peer.
    let mut target = String::from("/announce?info_hash=");
    percent_encode(&HASH, &mut target);
    target.push_str("&peer_id=");
    percent_encode(&pid(2), &mut target);
    target.push_str("&port=7000&left=5&compact=1");
    let head = format!("GET {target} HTTP/1.1\r\n\r\n");
    let resp = t.handle(head.as_bytes(), addr("10.0.0.2:4000"), t0);
    assert!(
        resp.windows(6).any(|w| w == [10, 0, 0, 1, 0x1A, 0xE1]),
        "{}",
        String::from_utf8_lossy(&resp)
    );
    // A UDP scrape counts both, and the completed event.
    join(
        &mut s,
        &mut t,
        "10.0.0.2:4000",
        &params(pid(2), 7000, 0, Event::Completed),
        t0,
    );
    let from = addr("10.0.0.3:1");
    let cid = connect(&mut s, &mut t, from, t0);
    let req = udp_wire::scrape_request(cid, 9, &[HASH, [0; 20]]);
    let mut out = Vec::new();
    assert!(s.handle(&mut t, from, &req, t0, &mut out));
    assert!(out.len() < req.len());
    let UdpResponse::Scrape { txn: 9, records } = decode_response(&out).unwrap() else {
        panic!()
    };
    let counts: Vec<ScrapeCounts> = udp_wire::scrape_records(records).collect();
    assert_eq!(
        counts,
        [
            ScrapeCounts {
                seeders: 2,
                completed: 1,
                leechers: 0
            },
            ScrapeCounts::default()
        ]
    );
}

#[test]
fn the_allow_list_refuses_unknown_hashes_with_an_error_answer() {
    let t0 = Instant::now();
    let mut s = UdpServer::new(SECRET, UdpServerConfig::default(), t0);
    let mut t = Tracker::new(ServerConfig {
        allow: Some([[1u8; 20]].into_iter().collect()),
        ..ServerConfig::default()
    });
    let from = addr("10.0.0.1:5000");
    let cid = connect(&mut s, &mut t, from, t0);
    let p = params(pid(1), 6881, 0, Event::Started);
    let out = announce(&mut s, &mut t, from, cid, &p, t0).unwrap();
    assert_eq!(error_text(&out), "unknown info_hash");
    assert_eq!(t.num_peers(), 0);
    assert_eq!(s.stats().errors, 1);
}

#[test]
fn stopped_removes_the_peer() {
    let t0 = Instant::now();
    let (mut s, mut t) = setup(t0);
    join(
        &mut s,
        &mut t,
        "10.0.0.1:5000",
        &params(pid(1), 6881, 0, Event::Started),
        t0,
    );
    assert_eq!(t.num_peers(), 1);
    let (leechers, seeders, peers) = join(
        &mut s,
        &mut t,
        "10.0.0.1:5000",
        &params(pid(1), 6881, 0, Event::Stopped),
        t0,
    );
    assert_eq!((leechers, seeders, peers.len()), (0, 0, 0));
    assert_eq!(t.num_peers(), 0);
}

#[test]
fn ipv4_requesters_get_6_byte_peers_and_ipv6_ones_18_byte_peers() {
    let t0 = Instant::now();
    let (mut s, mut t) = setup(t0);
    join(
        &mut s,
        &mut t,
        "10.0.0.1:5000",
        &params(pid(1), 6881, 0, Event::Started),
        t0,
    );
    join(
        &mut s,
        &mut t,
        "[2001:db8::1]:5000",
        &params(pid(2), 6882, 0, Event::Started),
        t0,
    );
    let (_, _, v4) = join(
        &mut s,
        &mut t,
        "10.0.0.3:5000",
        &params(pid(3), 6883, 9, Event::Started),
        t0,
    );
    assert_eq!(v4, [10, 0, 0, 1, 0x1A, 0xE1]);
    let (_, _, v6) = join(
        &mut s,
        &mut t,
        "[2001:db8::4]:5000",
        &params(pid(4), 6884, 9, Event::Started),
        t0,
    );
    let mut want = "2001:db8::1"
        .parse::<std::net::Ipv6Addr>()
        .unwrap()
        .octets()
        .to_vec();
    want.extend_from_slice(&6882u16.to_be_bytes());
    assert_eq!(v6, want);
}

#[test]
fn one_address_is_held_to_its_rate_and_others_are_not() {
    let t0 = Instant::now();
    let (mut s, mut t) = setup(t0);
    let cfg = UdpServerConfig::default();
    let flood = addr("10.0.0.1:5000");
    let mut out = Vec::new();
    let mut served = 0;
    for _ in 0..1000 {
        served += u32::from(s.handle(&mut t, flood, &connect_request(1), t0, &mut out));
    }
    assert_eq!(served, cfg.burst);
    assert_eq!(s.stats().rate_limited, u64::from(1000 - cfg.burst));
    // Another address (and a port of the same /64 or IPv4 address is the
    // same address).
    assert!(s.handle(
        &mut t,
        addr("10.0.0.2:5000"),
        &connect_request(1),
        t0,
        &mut out
    ));
    assert!(!s.handle(
        &mut t,
        addr("10.0.0.1:6000"),
        &connect_request(1),
        t0,
        &mut out
    ));
    // A second later, `per_second` more.
    let t1 = t0 + Duration::from_secs(1);
    let mut later = 0;
    for _ in 0..100 {
        later += u32::from(s.handle(&mut t, flood, &connect_request(1), t1, &mut out));
    }
    assert_eq!(later, cfg.per_second);
    // IPv6: the /64 is one address.
    for _ in 0..cfg.burst {
        assert!(s.handle(
            &mut t,
            addr("[2001:db8::1]:1"),
            &connect_request(1),
            t0,
            &mut out
        ));
    }
    assert!(!s.handle(
        &mut t,
        addr("[2001:db8::2]:1"),
        &connect_request(1),
        t0,
        &mut out
    ));
    // The tracker's own host is not limited.
    for _ in 0..1000 {
        assert!(s.handle(
            &mut t,
            addr("127.0.0.1:1"),
            &connect_request(1),
            t0,
            &mut out
        ));
    }
}

#[test]
fn malformed_requests_are_dropped_without_an_answer() {
    let t0 = Instant::now();
    let (mut s, mut t) = setup(t0);
    let from = addr("127.0.0.1:5000");
    let cid = s.connection_id(from.ip(), t0);
    let good = udp_wire::announce_request(cid, 2, &params(pid(1), 6881, 0, Event::None));
    let mut bad_event = good;
    bad_event[83] = 4;
    let mut unknown_action = good;
    unknown_action[11] = 5;
    let scrape = |n: usize| {
        let mut r = udp_wire::scrape_request(cid, 3, &[]);
        r.extend(std::iter::repeat_n(1u8, n));
        r
    };
    let cases: Vec<Vec<u8>> = vec![
        vec![],
        good[..15].to_vec(),
        good[..97].to_vec(),
        bad_event.to_vec(),
        unknown_action.to_vec(),
        scrape(0),
        scrape(19),
        scrape(41),
        scrape(20 * 75),
        vec![0; udp_wire::MAX_REQUEST_LEN + 1],
    ];
    let mut out = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        assert!(!s.handle(&mut t, from, c, t0, &mut out), "case {i}");
        assert!(out.is_empty());
    }
    assert_eq!(s.stats().malformed, cases.len() as u64);
    // BEP 41 options after the 98 bytes are ignored.
    let mut with_options = good.to_vec();
    with_options.extend_from_slice(&[2, 9, b'/', b'a', b'n', b'n', b'o', b'u', b'n', b'c', b'e']);
    assert!(s.handle(&mut t, from, &with_options, t0, &mut out));
}

#[test]
fn port_zero_gets_an_error_answer() {
    let t0 = Instant::now();
    let (mut s, mut t) = setup(t0);
    let from = addr("10.0.0.1:5000");
    let cid = connect(&mut s, &mut t, from, t0);
    let out = announce(
        &mut s,
        &mut t,
        from,
        cid,
        &params(pid(1), 0, 0, Event::None),
        t0,
    )
    .unwrap();
    assert_eq!(error_text(&out), "missing or bad port");
}

#[test]
fn the_ip_field_is_honoured_only_from_loopback() {
    let t0 = Instant::now();
    let (mut s, mut t) = setup(t0);
    let with_ip = |cid: u64| {
        let mut r = udp_wire::announce_request(cid, 2, &params(pid(1), 6881, 0, Event::None));
        r[84..88].copy_from_slice(&[127, 0, 0, 9]);
        r
    };
    let mut out = Vec::new();
    for (from, id) in [("10.0.0.1:5000", 1u8), ("127.0.0.1:5000", 2)] {
        let from = addr(from);
        let cid = connect(&mut s, &mut t, from, t0);
        let mut r = with_ip(cid);
        r[55] = id;
        assert!(s.handle(&mut t, from, &r, t0, &mut out));
    }
    let (_, _, peers) = join(
        &mut s,
        &mut t,
        "10.0.0.5:1",
        &params(pid(5), 1, 9, Event::None),
        t0,
    );
    let mut got: Vec<[u8; 6]> = peers.chunks(6).map(|c| c.try_into().unwrap()).collect();
    got.sort();
    assert_eq!(got, [[10, 0, 0, 1, 0x1A, 0xE1], [127, 0, 0, 9, 0x1A, 0xE1]]);
}

#[test]
fn one_address_keeps_within_its_quota_over_udp_too() {
    let t0 = Instant::now();
    let (mut s, mut t) = setup(t0);
    let per_ip = ServerConfig::default().max_peers_per_ip;
    for i in 0..20u8 {
        join(
            &mut s,
            &mut t,
            "10.0.0.1:5000",
            &params(pid(i), 6000 + u16::from(i), 9, Event::None),
            t0 + Duration::from_secs(u64::from(i)),
        );
    }
    assert_eq!(t.num_peers(), per_ip);
}
