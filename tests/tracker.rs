//! The built-in tracker over real sockets: announce, scrape, hostile
//! requests, many idle connections.

mod common;
use common::*;
use piecemeal::tracker::{ResponseReader, parse_announce_body};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

fn pct(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("%{b:02X}")).collect()
}

fn announce(
    port: u16,
    hash: [u8; 20],
    id: &[u8; 20],
    peer_port: u16,
    left: u64,
    extra: &str,
) -> Vec<u8> {
    let req = format!(
        "GET /announce?info_hash={}&peer_id={}&port={peer_port}&uploaded=0&downloaded=0&left={left}&compact=1{extra} HTTP/1.1\r\nHost: x\r\n\r\n",
        pct(&hash),
        pct(id)
    );
    let raw = http_exchange(port, req.as_bytes(), Duration::from_secs(5));
    let mut r = ResponseReader::new();
    match r.feed(&raw).unwrap() {
        Some(body) => body,
        None => r.eof().unwrap(),
    }
}

#[test]
fn announces_return_other_peers_and_scrape_counts_them() {
    let tmp = TempDir::new("tracker-basic");
    let (_t, port) = start_tracker(&tmp);
    let hash = [7u8; 20];
    let body = announce(
        port,
        hash,
        b"-PM0100-aaaaaaaaaaaa",
        5001,
        0,
        "&event=started",
    );
    let first = parse_announce_body(&body).unwrap();
    assert!(first.peers.is_empty(), "never returns the requester itself");
    assert_eq!(first.interval, 30);
    let body = announce(
        port,
        hash,
        b"-PM0100-bbbbbbbbbbbb",
        5002,
        1000,
        "&event=started",
    );
    let second = parse_announce_body(&body).unwrap();
    assert_eq!(second.peers, vec!["127.0.0.1:5001".parse().unwrap()]);
    assert_eq!((second.complete, second.incomplete), (Some(1), Some(1)));
    // Dict form on request.
    let body = announce(
        port,
        hash,
        b"-PM0100-cccccccccccc",
        5003,
        1000,
        "&compact=0",
    );
    let third = parse_announce_body(&body).unwrap();
    assert_eq!(third.peers.len(), 2);
    // Scrape, for this hash and for all.
    let raw = http_exchange(
        port,
        format!("GET /scrape?info_hash={} HTTP/1.1\r\n\r\n", pct(&hash)).as_bytes(),
        Duration::from_secs(5),
    );
    let text = String::from_utf8_lossy(&raw);
    assert!(text.contains("8:completei1e"), "{text}");
    assert!(text.contains("10:incompletei2e"), "{text}");
    // Stopped removes the peer.
    announce(
        port,
        hash,
        b"-PM0100-aaaaaaaaaaaa",
        5001,
        0,
        "&event=stopped",
    );
    let body = announce(port, hash, b"-PM0100-bbbbbbbbbbbb", 5002, 1000, "");
    let after = parse_announce_body(&body).unwrap();
    assert_eq!(after.complete, Some(0));
    assert!(!after.peers.contains(&"127.0.0.1:5001".parse().unwrap()));
}

#[test]
fn bad_and_hostile_requests_get_errors_and_the_tracker_keeps_serving() {
    let tmp = TempDir::new("tracker-hostile");
    let (_t, port) = start_tracker(&tmp);
    // A short info_hash: a bencoded failure reason.
    let raw = http_exchange(
        port,
        b"GET /announce?info_hash=abc&peer_id=-PM0100-aaaaaaaaaaaa&port=1 HTTP/1.1\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(
        String::from_utf8_lossy(&raw).contains("failure reason"),
        "{}",
        String::from_utf8_lossy(&raw)
    );
    // A huge request line: refused, connection closed.
    let mut huge = b"GET /announce?".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 100_000));
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(&huge);
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    assert!(!String::from_utf8_lossy(&resp).contains("200 OK"));
    // Truncated requests and many idle connections.
    let mut idle = Vec::new();
    for i in 0..300 {
        let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        if i % 2 == 0 {
            let _ = c.write_all(b"GET /announce?info_hash=");
        }
        idle.push(c);
    }
    // Still answers a real announce promptly.
    let body = announce(port, [9u8; 20], b"-PM0100-dddddddddddd", 6000, 5, "");
    assert!(parse_announce_body(&body).is_ok());
    drop(idle);
    let raw = http_exchange(
        port,
        b"GET /nothing HTTP/1.1\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(
        String::from_utf8_lossy(&raw).starts_with("HTTP/1.1 404"),
        "{}",
        String::from_utf8_lossy(&raw)
    );
}

#[test]
fn a_download_that_exits_when_done_announces_completed_first() {
    let tmp = TempDir::new("tracker-completed");
    let (_tracker, tport) = start_tracker(&tmp);
    let announce = format!("http://127.0.0.1:{tport}/announce");
    let (seed_dir, t) = seed_data(&tmp, &[("c.bin", 300_000)], "c.bin", &[announce], 32768);
    let (_seeder, _sp) = start_seeder(&tmp, &seed_dir, &t, &[]);
    let out = tmp.join("out");
    let mut leech = Proc::start(
        "leech",
        tmp.path(),
        &[
            "download",
            &t,
            "-o",
            out.to_str().unwrap(),
            "--bind",
            "127.0.0.1",
            "--port",
            "0",
            "--verbose",
        ],
        tmp.path(),
    );
    assert_eq!(
        leech.wait(Duration::from_secs(60)),
        0,
        "{}",
        leech.log_text()
    );
    assert_same_files(&seed_dir, &out, &[("c.bin", 300_000)]);
    // The swarm learnt of the completion (scrape's `downloaded`) before
    // the leecher said `stopped`.
    let hash = piecemeal::metainfo::Metainfo::load(std::path::Path::new(&t))
        .unwrap()
        .info_hash;
    let raw = http_exchange(
        tport,
        format!("GET /scrape?info_hash={} HTTP/1.1\r\n\r\n", pct(&hash)).as_bytes(),
        Duration::from_secs(5),
    );
    let text = String::from_utf8_lossy(&raw);
    assert!(text.contains("10:downloadedi1e"), "{text}");
    let log = leech.log_text();
    let completed = log.find("(Completed)").expect("a completed announce");
    let stopped = log.find("(Stopped)").expect("a stopped announce");
    assert!(completed < stopped, "{log}");
}

/// A blocking connection to the tracker on 127.0.0.1:`port` from `ip` (any
/// 127.x.y.z: another host, as the tracker sees it).
fn connect_from(ip: [u8; 4], port: u16) -> Option<TcpStream> {
    use std::os::fd::{FromRawFd, IntoRawFd};
    let s = piecemeal::event_loop::connect_from(
        Some(std::net::IpAddr::from(ip)),
        std::net::SocketAddr::from(([127, 0, 0, 1], port)),
    )
    .ok()?;
    // SAFETY: the descriptor moves from the mio stream to the std one.
    let s = unsafe { TcpStream::from_raw_fd(s.into_raw_fd()) };
    s.set_nonblocking(false).ok()?;
    // Wait for the connect to finish (a write would fail until then).
    let end = std::time::Instant::now() + Duration::from_secs(5);
    while s.peer_addr().is_err() {
        if std::time::Instant::now() > end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Some(s)
}

#[test]
fn half_sent_requests_from_one_address_do_not_shut_honest_peers_out() {
    // Slowloris: 600 connections from 127.0.0.2, each with half a request.
    let tmp = TempDir::new("tracker-slowloris");
    let (_tracker, port) = start_tracker(&tmp);
    let mut held = Vec::new();
    for _ in 0..600 {
        if let Some(mut s) = connect_from([127, 0, 0, 2], port) {
            let _ = s.write_all(b"GET /announce?info_hash=");
            held.push(s);
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    // Honest announces from another address are answered, not reset.
    for n in 0..20u8 {
        let mut id = *b"-PM0100-honest000000";
        id[19] = n;
        let body = announce(port, [0x33; 20], &id, 7000 + n as u16, 100, "");
        assert!(
            body.starts_with(b"d8:complete"),
            "{}",
            String::from_utf8_lossy(&body)
        );
    }
    drop(held);
}

#[test]
fn made_up_torrents_and_peers_from_one_address_lock_no_one_out() {
    let tmp = TempDir::new("tracker-lockout");
    let (_tracker, port) = start_tracker(&tmp);
    let send = |from: [u8; 4], hash: [u8; 20], id: [u8; 20]| {
        let mut s = connect_from(from, port).expect("connect");
        let req = format!(
            "GET /announce?info_hash={}&peer_id={}&port=6881&uploaded=0&downloaded=0&left=5&compact=1 HTTP/1.1\r\n\r\n",
            pct(&hash),
            pct(&id)
        );
        s.write_all(req.as_bytes()).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        out
    };
    // 1,000 made-up info-hashes, then 2,000 made-up peer ids in one swarm.
    for i in 0..1000u32 {
        let mut h = [0u8; 20];
        h[..4].copy_from_slice(&i.to_be_bytes());
        send([127, 0, 0, 2], h, *b"-XX0001-attacker0000");
    }
    for i in 0..2000u32 {
        let mut id = *b"-XX0001-attacker0000";
        id[16..].copy_from_slice(&i.to_be_bytes());
        send([127, 0, 0, 2], [0x44; 20], id);
    }
    // A new torrent from another address is tracked, and its peers see
    // each other rather than the flood.
    let a = announce(port, [0x55; 20], b"-PM0100-honestaaaaaa", 7001, 100, "");
    let b = announce(port, [0x55; 20], b"-PM0100-honestbbbbbb", 7002, 100, "");
    assert!(
        parse_announce_body(&a).is_ok(),
        "{}",
        String::from_utf8_lossy(&a)
    );
    let resp = parse_announce_body(&b).unwrap();
    assert_eq!(resp.peers, vec!["127.0.0.1:7001".parse().unwrap()]);
    // In the flooded swarm an honest peer still gets in; at most 8 entries
    // come from the flooding address.
    let c = announce(
        port,
        [0x44; 20],
        b"-PM0100-honestcccccc",
        7003,
        100,
        "&numwant=200",
    );
    let resp = parse_announce_body(&c).unwrap();
    assert!(resp.peers.len() <= 8, "{:?}", resp.peers);
}
