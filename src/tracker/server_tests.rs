use super::*;
use crate::tracker::percent_encode;
use serde_bencode::value::Value;

const HASH: [u8; 20] = [0xAB; 20];

fn pid(n: u8) -> [u8; 20] {
    let mut id = *b"-PM0001-000000000000";
    id[19] = n;
    id
}

fn remote(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn get(target: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: t\r\n\r\n").into_bytes()
}

fn announce_target(hash: &[u8], peer: &[u8], port: u16, left: u64, extra: &str) -> String {
    let mut t = String::from("/announce?info_hash=");
    percent_encode(hash, &mut t);
    t.push_str("&peer_id=");
    percent_encode(peer, &mut t);
    t.push_str(&format!(
        "&port={port}&uploaded=0&downloaded=0&left={left}{extra}"
    ));
    t
}

/// Split a response into status code and body, checking the framing.
fn split(resp: &[u8]) -> (u16, Vec<u8>) {
    let mut headers = [httparse::EMPTY_HEADER; 8];
    let mut r = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(n) = r.parse(resp).unwrap() else {
        panic!("partial response");
    };
    let len: usize = r
        .headers
        .iter()
        .find(|h| h.name == "Content-Length")
        .map(|h| std::str::from_utf8(h.value).unwrap().parse().unwrap())
        .unwrap();
    assert!(
        r.headers
            .iter()
            .any(|h| h.name == "Connection" && h.value == b"close")
    );
    assert!(
        r.headers
            .iter()
            .any(|h| h.name == "Content-Type" && h.value == b"text/plain")
    );
    assert_eq!(resp.len() - n, len);
    (r.code.unwrap(), resp[n..].to_vec())
}

fn dict(body: &[u8]) -> HashMap<Vec<u8>, Value> {
    crate::bencode::validate(body, &crate::bencode::Limits::TRACKER.canonical())
        .expect("canonical bencode");
    match serde_bencode::from_bytes(body).unwrap() {
        Value::Dict(d) => d,
        other => panic!("not a dict: {other:?}"),
    }
}

fn int(d: &HashMap<Vec<u8>, Value>, k: &str) -> i64 {
    match d.get(k.as_bytes()) {
        Some(Value::Int(i)) => *i,
        other => panic!("{k}: {other:?}"),
    }
}

fn bytes<'a>(d: &'a HashMap<Vec<u8>, Value>, k: &str) -> &'a [u8] {
    match d.get(k.as_bytes()) {
        Some(Value::Bytes(b)) => b,
        other => panic!("{k}: {other:?}"),
    }
}

fn failure_reason(resp: &[u8]) -> String {
    let (code, body) = split(resp);
    assert_eq!(code, 200);
    String::from_utf8(bytes(&dict(&body), "failure reason").to_vec()).unwrap()
}

/// Announce and return the parsed body, asserting it is not a failure.
fn announce(
    t: &mut Tracker,
    peer: u8,
    from: &str,
    left: u64,
    extra: &str,
    now: Instant,
) -> HashMap<Vec<u8>, Value> {
    let from = remote(from);
    let target = announce_target(&HASH, &pid(peer), from.port(), left, extra);
    let (code, body) = split(&t.handle(&get(&target), from, now));
    assert_eq!(code, 200);
    let d = dict(&body);
    assert!(
        !d.contains_key(&b"failure reason"[..]),
        "{}",
        String::from_utf8_lossy(&body)
    );
    d
}

fn compact_addrs(d: &HashMap<Vec<u8>, Value>) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for c in bytes(d, "peers").chunks(6) {
        out.push(SocketAddr::from((
            [c[0], c[1], c[2], c[3]],
            u16::from_be_bytes([c[4], c[5]]),
        )));
    }
    if let Some(Value::Bytes(six)) = d.get(&b"peers6"[..]) {
        for c in six.chunks(18) {
            let ip: [u8; 16] = c[..16].try_into().unwrap();
            out.push(SocketAddr::from((ip, u16::from_be_bytes([c[16], c[17]]))));
        }
    }
    out.sort();
    out
}

#[test]
fn frames_request_heads() {
    assert_eq!(frame_request(b""), Ok(HeadStatus::Partial));
    assert_eq!(frame_request(b"GET /announce HT"), Ok(HeadStatus::Partial));
    let req = b"GET /announce?x=1 HTTP/1.1\r\nHost: a\r\n\r\nbody";
    assert_eq!(frame_request(req), Ok(HeadStatus::Complete(req.len() - 4)));
    assert_eq!(
        frame_request(b"POST /announce HTTP/1.1\r\n\r\n"),
        Err(RequestError::Method)
    );
    assert_eq!(frame_request(b"POST /ann"), Err(RequestError::Method));
    assert_eq!(
        frame_request(b"\x00\x01 garbage\r\n\r\n"),
        Err(RequestError::Malformed)
    );
}

#[test]
fn over_long_head_is_refused() {
    let mut req = b"GET /announce HTTP/1.1\r\nX-Pad: ".to_vec();
    req.resize(MAX_REQUEST_HEAD + 10, b'a');
    assert_eq!(frame_request(&req), Err(RequestError::TooLarge));
    assert_eq!(
        frame_request(&req[..MAX_REQUEST_HEAD - 1]),
        Ok(HeadStatus::Partial)
    );
    req.extend_from_slice(b"\r\n\r\n");
    assert_eq!(frame_request(&req), Err(RequestError::TooLarge));
    let mut t = Tracker::new(ServerConfig::default());
    let (code, _) = split(&t.handle(&req, remote("1.1.1.1:1"), Instant::now()));
    assert_eq!(code, 431);
    let mut many = b"GET /announce HTTP/1.1\r\n".to_vec();
    for i in 0..100 {
        many.extend_from_slice(format!("X-{i}: 1\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    assert_eq!(frame_request(&many), Err(RequestError::TooLarge));
}

#[test]
fn unknown_paths_get_404_and_garbage_gets_400() {
    let mut t = Tracker::new(ServerConfig::default());
    let now = Instant::now();
    let (code, _) = split(&t.handle(&get("/index.html"), remote("1.1.1.1:1"), now));
    assert_eq!(code, 404);
    let (code, _) = split(&t.handle(b"nonsense", remote("1.1.1.1:1"), now));
    assert_eq!(code, 400);
}

#[test]
fn announce_returns_other_peers_compact_never_the_requester() {
    let mut t = Tracker::new(ServerConfig::default());
    let now = Instant::now();
    let d = announce(&mut t, 1, "10.0.0.1:1001", 100, "&event=started", now);
    assert_eq!(bytes(&d, "peers"), b"", "alone in the swarm");
    assert_eq!(int(&d, "interval"), 60);
    assert_eq!(int(&d, "min interval"), 30);
    announce(&mut t, 2, "10.0.0.2:1002", 100, "", now);
    let d = announce(&mut t, 3, "[2001:db8::3]:1003", 100, "", now);
    assert_eq!(
        compact_addrs(&d),
        vec![remote("10.0.0.1:1001"), remote("10.0.0.2:1002")]
    );
    let d = announce(&mut t, 1, "10.0.0.1:1001", 100, "", now);
    assert_eq!(
        compact_addrs(&d),
        vec![remote("10.0.0.2:1002"), remote("[2001:db8::3]:1003")]
    );
    assert_eq!(bytes(&d, "peers6").len(), 18);
    assert_eq!((t.num_torrents(), t.num_peers()), (1, 3));
}

#[test]
fn compact_zero_gives_dictionary_peers() {
    let mut t = Tracker::new(ServerConfig::default());
    let now = Instant::now();
    announce(&mut t, 1, "10.0.0.1:1001", 100, "", now);
    let d = announce(&mut t, 2, "10.0.0.2:1002", 100, "&compact=0", now);
    let Some(Value::List(peers)) = d.get(&b"peers"[..]) else {
        panic!("peers is not a list");
    };
    assert_eq!(peers.len(), 1);
    let Value::Dict(p) = &peers[0] else {
        panic!("peer is not a dict")
    };
    assert_eq!(bytes(p, "ip"), b"10.0.0.1");
    assert_eq!(bytes(p, "peer id"), pid(1));
    assert_eq!(int(p, "port"), 1001);
    let d = announce(
        &mut t,
        2,
        "10.0.0.2:1002",
        100,
        "&compact=0&no_peer_id=1",
        now,
    );
    let Some(Value::List(peers)) = d.get(&b"peers"[..]) else {
        panic!()
    };
    let Value::Dict(p) = &peers[0] else { panic!() };
    assert!(!p.contains_key(&b"peer id"[..]));
}

#[test]
fn numwant_limits_and_rotates_the_selection() {
    let cfg = ServerConfig {
        max_numwant: 5,
        ..ServerConfig::default()
    };
    let mut t = Tracker::new(cfg);
    let now = Instant::now();
    for i in 1..=10u8 {
        announce(&mut t, i, &format!("10.0.0.{i}:1000"), 100, "", now);
    }
    let d = announce(&mut t, 1, "10.0.0.1:1000", 100, "&numwant=3", now);
    let first = compact_addrs(&d);
    assert_eq!(first.len(), 3);
    let d = announce(&mut t, 1, "10.0.0.1:1000", 100, "&numwant=3", now);
    let second = compact_addrs(&d);
    assert_eq!(second.len(), 3);
    assert_ne!(first, second, "selection rotates");
    let d = announce(&mut t, 1, "10.0.0.1:1000", 100, "&numwant=1000", now);
    assert_eq!(compact_addrs(&d).len(), 5, "capped at max_numwant");
    let d = announce(&mut t, 1, "10.0.0.1:1000", 100, "&numwant=-1", now);
    assert_eq!(compact_addrs(&d).len(), 5, "default 50, capped at 5");
    let d = announce(&mut t, 1, "10.0.0.1:1000", 100, "&numwant=0", now);
    assert_eq!(compact_addrs(&d).len(), 0);
}

#[test]
fn counts_seeders_and_leechers_and_seeders_get_only_leechers() {
    let mut t = Tracker::new(ServerConfig::default());
    let now = Instant::now();
    announce(&mut t, 1, "10.0.0.1:1", 0, "", now);
    announce(&mut t, 2, "10.0.0.2:2", 0, "", now);
    let d = announce(&mut t, 3, "10.0.0.3:3", 50, "", now);
    assert_eq!((int(&d, "complete"), int(&d, "incomplete")), (2, 1));
    let d = announce(&mut t, 1, "10.0.0.1:1", 0, "", now);
    assert_eq!(compact_addrs(&d), vec![remote("10.0.0.3:3")]);
    // The leecher finishes.
    let d = announce(&mut t, 3, "10.0.0.3:3", 0, "&event=completed", now);
    assert_eq!((int(&d, "complete"), int(&d, "incomplete")), (3, 0));
}

#[test]
fn stopped_removes_the_peer_and_empty_torrent() {
    let mut t = Tracker::new(ServerConfig::default());
    let now = Instant::now();
    announce(&mut t, 1, "10.0.0.1:1", 10, "", now);
    announce(&mut t, 2, "10.0.0.2:2", 10, "", now);
    // A stopped from another IP does not remove peer 1.
    let target = announce_target(&HASH, &pid(1), 1, 10, "&event=stopped");
    t.handle(&get(&target), remote("10.6.6.6:1"), now);
    assert_eq!(t.num_peers(), 2);
    let d = announce(&mut t, 1, "10.0.0.1:1", 10, "&event=stopped", now);
    assert_eq!(int(&d, "incomplete"), 1);
    assert_eq!(bytes(&d, "peers"), b"");
    assert_eq!(t.num_peers(), 1);
    let d = announce(&mut t, 2, "10.0.0.2:2", 10, "&event=stopped", now);
    assert_eq!(int(&d, "incomplete"), 0);
    assert_eq!((t.num_torrents(), t.num_peers()), (0, 0));
}

#[test]
fn expire_drops_silent_peers_and_empty_torrents() {
    let cfg = ServerConfig {
        peer_ttl: Duration::from_secs(100),
        ..ServerConfig::default()
    };
    let mut t = Tracker::new(cfg);
    let t0 = Instant::now();
    announce(&mut t, 1, "10.0.0.1:1", 10, "", t0);
    announce(
        &mut t,
        2,
        "10.0.0.2:2",
        10,
        "",
        t0 + Duration::from_secs(50),
    );
    t.expire(t0 + Duration::from_secs(99));
    assert_eq!(t.num_peers(), 2);
    t.expire(t0 + Duration::from_secs(100));
    assert_eq!(t.num_peers(), 1);
    t.expire(t0 + Duration::from_secs(150));
    assert_eq!((t.num_torrents(), t.num_peers()), (0, 0));
}

#[test]
fn short_intervals_still_keep_peers_that_reannounce_every_five_minutes() {
    // libtorrent announces every 300 s at most, even when told 5 s.
    let mut t = Tracker::new(ServerConfig::with_interval(5));
    let t0 = Instant::now();
    let d = announce(&mut t, 1, "10.0.0.1:1", 0, "", t0);
    assert_eq!(int(&d, "interval"), 5);
    for n in 1..=3 {
        let at = t0 + Duration::from_secs(300 * n);
        t.expire(at);
        assert_eq!(t.num_peers(), 1, "dropped before announce {n}");
        announce(&mut t, 1, "10.0.0.1:1", 0, "", at);
    }
    t.expire(t0 + Duration::from_secs(900 + 2 * 300 + 30));
    assert_eq!(t.num_peers(), 0, "a silent peer still goes");
}

fn scrape(t: &mut Tracker, hashes: &[[u8; 20]]) -> HashMap<Vec<u8>, Value> {
    let mut target = String::from("/scrape");
    for (i, h) in hashes.iter().enumerate() {
        target.push(if i == 0 { '?' } else { '&' });
        target.push_str("info_hash=");
        percent_encode(h, &mut target);
    }
    let (code, body) = split(&t.handle(&get(&target), remote("1.1.1.1:1"), Instant::now()));
    assert_eq!(code, 200);
    match dict(&body).remove(&b"files"[..]) {
        Some(Value::Dict(files)) => files,
        other => panic!("files: {other:?}"),
    }
}

#[test]
fn scrape_one_several_or_all() {
    let mut t = Tracker::new(ServerConfig::default());
    let now = Instant::now();
    let other = [0x01; 20];
    announce(&mut t, 1, "10.0.0.1:1", 0, "", now);
    announce(&mut t, 2, "10.0.0.2:2", 5, "", now);
    announce(&mut t, 2, "10.0.0.2:2", 0, "&event=completed", now);
    announce(&mut t, 3, "10.0.0.3:3", 5, "", now);
    let target = announce_target(&other, &pid(9), 9, 5, "");
    t.handle(&get(&target), remote("10.0.0.9:9"), now);

    let one = scrape(&mut t, &[HASH]);
    assert_eq!(one.len(), 1);
    let Some(Value::Dict(s)) = one.get(&HASH[..]) else {
        panic!()
    };
    assert_eq!(
        (
            int(s, "complete"),
            int(s, "incomplete"),
            int(s, "downloaded")
        ),
        (2, 1, 1)
    );
    let several = scrape(&mut t, &[HASH, other, [0x77; 20]]);
    assert_eq!(several.len(), 2, "unknown hashes are left out");
    let all = scrape(&mut t, &[]);
    assert_eq!(all.len(), 2);
    let Some(Value::Dict(s)) = all.get(&other[..]) else {
        panic!()
    };
    assert_eq!(int(s, "incomplete"), 1);
}

#[test]
fn bad_parameters_get_a_failure_reason() {
    let mut t = Tracker::new(ServerConfig::default());
    let now = Instant::now();
    let from = remote("10.0.0.1:1");
    let cases = [
        (announce_target(&[1; 19], &pid(1), 1, 0, ""), "info_hash"),
        (announce_target(&[1; 21], &pid(1), 1, 0, ""), "info_hash"),
        (announce_target(&HASH, &[1; 5], 1, 0, ""), "peer_id"),
        (announce_target(&HASH, &pid(1), 0, 0, ""), "port"),
        (
            announce_target(&HASH, &pid(1), 1, 0, "").replace("&port=1", ""),
            "port",
        ),
        (
            announce_target(&HASH, &pid(1), 1, 0, "").replace("&port=1", "&port=65536"),
            "port",
        ),
        (
            announce_target(&HASH, &pid(1), 1, 0, "").replace("left=0", "left=-1"),
            "left",
        ),
        (
            announce_target(&HASH, &pid(1), 1, 0, "&event=bogus"),
            "event",
        ),
        (
            announce_target(&HASH, &pid(1), 1, 0, "&numwant=x"),
            "numwant",
        ),
        ("/announce?info_hash=%zz".to_string(), "query"),
        ("/scrape?info_hash=short".to_string(), "info_hash"),
    ];
    for (target, word) in cases {
        let reason = failure_reason(&t.handle(&get(&target), from, now));
        assert!(reason.contains(word), "{target}: {reason}");
    }
    assert_eq!(t.num_peers(), 0);
}

#[test]
fn allow_list_refuses_unknown_hashes() {
    let cfg = ServerConfig {
        allow: Some([HASH].into_iter().collect()),
        ..ServerConfig::default()
    };
    let mut t = Tracker::new(cfg);
    let now = Instant::now();
    announce(&mut t, 1, "10.0.0.1:1", 0, "", now);
    let target = announce_target(&[0x02; 20], &pid(1), 1, 0, "");
    let reason = failure_reason(&t.handle(&get(&target), remote("10.0.0.1:1"), now));
    assert!(reason.contains("unknown"), "{reason}");
    assert_eq!(t.num_torrents(), 1);
}

#[test]
fn full_tables_drop_their_stalest_entries_instead_of_refusing() {
    let cfg = ServerConfig {
        max_torrents: 1,
        max_peers_per_torrent: 2,
        peer_ttl: Duration::from_secs(100),
        ..ServerConfig::default()
    };
    let mut t = Tracker::new(cfg);
    let t0 = Instant::now();
    announce(&mut t, 1, "10.0.0.1:1", 0, "", t0);
    announce(&mut t, 2, "10.0.0.2:2", 0, "", t0 + Duration::from_secs(1));
    // A third peer takes the place of the stalest (peer 1).
    let d = announce(&mut t, 3, "10.0.0.3:3", 10, "", t0 + Duration::from_secs(2));
    assert_eq!(t.num_peers(), 2);
    assert_eq!(compact_addrs(&d), vec![remote("10.0.0.2:2")]);
    // A new torrent takes the place of the stalest torrent.
    let target = announce_target(&[0x02; 20], &pid(1), 1, 0, "");
    let (code, body) = split(&t.handle(&get(&target), remote("10.0.0.1:1"), t0));
    assert_eq!(code, 200);
    assert!(!dict(&body).contains_key(&b"failure reason"[..]));
    assert_eq!(t.num_torrents(), 1);
    assert_eq!(t.num_peers(), 1);
}

fn announce_for(
    t: &mut Tracker,
    hash: [u8; 20],
    id: [u8; 20],
    from: &str,
    now: Instant,
) -> Vec<u8> {
    let from = remote(from);
    let target = announce_target(&hash, &id, from.port(), 10, "");
    t.handle(&get(&target), from, now)
}

#[test]
fn one_address_cannot_lock_others_out() {
    // 1,000 made-up info-hashes and 5,000 made-up peer ids from one
    // address, in a burst: honest peers from other addresses still get in.
    let mut t = Tracker::new(ServerConfig::default());
    let now = Instant::now();
    let attacker = "10.9.9.9:6881";
    for i in 0..1000u32 {
        let mut h = [0u8; 20];
        h[..4].copy_from_slice(&i.to_be_bytes());
        announce_for(&mut t, h, pid(1), attacker, now);
    }
    assert!(
        t.num_torrents() <= 64,
        "{} torrents from one address",
        t.num_torrents()
    );
    for i in 0..5000u32 {
        let mut id = [7u8; 20];
        id[..4].copy_from_slice(&i.to_be_bytes());
        announce_for(&mut t, HASH, id, attacker, now);
    }
    let d = announce(&mut t, 1, "10.0.0.1:1", 10, "", now);
    let peers = compact_addrs(&d);
    assert!(peers.len() <= 8, "{} entries from one address", peers.len());
    let d = announce(&mut t, 2, "10.0.0.2:2", 10, "", now);
    assert!(compact_addrs(&d).contains(&remote("10.0.0.1:1")));
    // A new torrent from an honest address is tracked too.
    let (code, body) = split(&announce_for(&mut t, [0xEE; 20], pid(3), "10.0.0.3:3", now));
    assert_eq!(code, 200);
    assert!(!dict(&body).contains_key(&b"failure reason"[..]));
}

#[test]
fn a_fresh_peer_id_cannot_be_taken_over_from_another_address() {
    let mut t = Tracker::new(ServerConfig::default());
    let now = Instant::now();
    announce(&mut t, 1, "10.0.0.1:1", 10, "", now);
    let target = announce_target(&HASH, &pid(1), 9, 10, "");
    let reason = failure_reason(&t.handle(&get(&target), remote("10.6.6.6:9"), now));
    assert!(reason.contains("another address"), "{reason}");
    let d = announce(&mut t, 2, "10.0.0.2:2", 10, "", now);
    assert_eq!(compact_addrs(&d), vec![remote("10.0.0.1:1")]);
}

#[test]
fn memory_bound_at_the_caps_is_well_below_16_mib() {
    // Floods from many addresses into many torrents: the tables stay at
    // their caps, whose memory is stated in the module docs.
    let cfg = ServerConfig::default();
    let mut t = Tracker::new(cfg.clone());
    let now = Instant::now();
    for i in 0..120_000u32 {
        let mut h = [0u8; 20];
        h[..2].copy_from_slice(&((i % 1500) as u16).to_be_bytes());
        let mut id = [1u8; 20];
        id[..4].copy_from_slice(&i.to_be_bytes());
        let from = format!("10.{}.{}.{}:1", (i >> 16) & 255, (i >> 8) & 255, i & 255);
        announce_for(&mut t, h, id, &from, now);
    }
    assert!(t.num_torrents() <= cfg.max_torrents);
    assert!(t.num_peers() <= cfg.max_total_peers);
    assert!(t.presence.len() <= cfg.max_total_peers);
    // About 120 bytes a peer: the entry, its index slot, its quota count.
    let per_peer = std::mem::size_of::<Peer>() + 2 * (20 + 8) + 2 * (16 + 4);
    let bound = cfg.max_total_peers * per_peer + cfg.max_torrents * 512;
    assert!(bound < 16 << 20, "{bound} bytes");
}

#[test]
fn ip_parameter_is_honoured_only_from_loopback() {
    let mut t = Tracker::new(ServerConfig::default());
    let now = Instant::now();
    announce(&mut t, 1, "127.0.0.1:1", 0, "&ip=127.0.0.5", now);
    announce(&mut t, 2, "10.0.0.2:2", 0, "&ip=8.8.8.8", now);
    let d = announce(&mut t, 3, "[::ffff:10.0.0.3]:3", 10, "", now);
    assert_eq!(
        compact_addrs(&d),
        vec![remote("10.0.0.2:2"), remote("127.0.0.5:1")]
    );
    assert!(!d.contains_key(&b"peers6"[..]), "mapped IPv4 stays IPv4");
}

#[test]
fn announce_query_is_read_without_allocating_like_split_query() {
    let now = Instant::now();
    let from = remote("10.0.0.1:6881");
    let mut t = Tracker::new(ServerConfig::default());
    // Escaped names count; the last of a repeated parameter wins; a long
    // negative numwant means the default; unknown parameters are skipped.
    let long_neg = format!("-{}", "9".repeat(100));
    let target = format!(
        "{}&info%5Fhash=x&junk={}&numwant={long_neg}",
        announce_target(&[0x11; 20], &pid(1), 6881, 5, "&info_hash=y"),
        "z".repeat(300)
    );
    let fixed = target.replacen(
        "info_hash=y",
        &{
            let mut s = String::from("info_hash=");
            percent_encode(&HASH, &mut s);
            s
        },
        1,
    );
    assert_eq!(
        failure_reason(&t.handle(&get(&target), from, now)),
        "info_hash must be 20 bytes"
    );
    let fixed = fixed.replace("&info%5Fhash=x", "");
    let (code, body) = split(&t.handle(&get(&fixed), from, now));
    assert_eq!(code, 200);
    assert_eq!(int(&dict(&body), "incomplete"), 1);
    assert_eq!(t.num_torrents(), 1);
    // A bad escape anywhere fails the query, even in a parameter we skip
    // or on a path we do not serve.
    let bad = format!("{fixed}&junk=%zz");
    assert_eq!(
        failure_reason(&t.handle(&get(&bad), from, now)),
        "malformed query string"
    );
    assert_eq!(
        failure_reason(&t.handle(&get("/nope?a=%4"), from, now)),
        "malformed query string"
    );
    let (code, _) = split(&t.handle(&get("/nope?a=%41"), from, now));
    assert_eq!(code, 404);
    // More than MAX_PARAMS pairs.
    let many = format!("{fixed}{}", "&a=1".repeat(MAX_PARAMS));
    assert_eq!(
        failure_reason(&t.handle(&get(&many), from, now)),
        "malformed query string"
    );
}

#[test]
fn an_address_in_its_quota_of_torrents_joins_no_other_existing_one_either() {
    // Another address made 70 swarms; one address joins them one by one:
    // it is present in at most 64, whether the swarm is new or not.
    let mut t = Tracker::new(ServerConfig::default());
    let now = Instant::now();
    let hash = |i: u32| {
        let mut h = [0u8; 20];
        h[..4].copy_from_slice(&i.to_be_bytes());
        h
    };
    for i in 0..70u32 {
        announce_for(&mut t, hash(i), pid(1), &format!("10.0.{}.1:1", i + 1), now);
    }
    let mut refused = 0;
    for i in 0..70u32 {
        let resp = announce_for(&mut t, hash(i), pid(2), "10.9.9.9:6881", now);
        let d = dict(&split(&resp).1);
        if d.contains_key(&b"failure reason"[..]) {
            refused += 1;
        }
    }
    assert_eq!(refused, 6);
    assert_eq!(t.num_peers(), 70 + 64);
    // Already present, it may re-announce in the ones it is in.
    let resp = announce_for(&mut t, hash(0), pid(2), "10.9.9.9:6881", now);
    assert!(!dict(&split(&resp).1).contains_key(&b"failure reason"[..]));
}

#[test]
fn a_full_peer_table_takes_room_from_the_largest_swarm() {
    // 10 peers in all: a swarm of 8 and one of 2. New peers of the small
    // swarm take their room from the large one, never from their own, and
    // the total stays at the cap.
    let cfg = ServerConfig {
        max_total_peers: 10,
        ..ServerConfig::default()
    };
    let mut t = Tracker::new(cfg);
    let now = Instant::now();
    let (big, small) = ([0x01; 20], [0x02; 20]);
    for i in 0..8u8 {
        announce_for(&mut t, big, pid(i), &format!("10.0.0.{}:1", i + 1), now);
    }
    for i in 0..2u8 {
        announce_for(
            &mut t,
            small,
            pid(100 + i),
            &format!("10.1.0.{}:1", i + 1),
            now,
        );
    }
    assert_eq!(t.num_peers(), 10);
    for i in 2..5u8 {
        let resp = announce_for(
            &mut t,
            small,
            pid(100 + i),
            &format!("10.1.0.{}:1", i + 1),
            now,
        );
        assert!(!dict(&split(&resp).1).contains_key(&b"failure reason"[..]));
        assert_eq!(t.num_peers(), 10);
    }
    assert_eq!(t.swarms.get(&small).map(|sw| sw.peers.len()), Some(5));
    assert_eq!(t.swarms.get(&big).map(|sw| sw.peers.len()), Some(5));
}
