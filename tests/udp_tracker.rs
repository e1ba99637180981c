//! UDP trackers (BEP 15) over loopback: our UDP client against our
//! tracker (stand-alone, and run by a seeder with `--tracker-port`), and
//! the tracker's UDP side spoken to byte by byte.

mod common;
use common::*;
use piecemeal::tracker::udp_wire::{self, UdpResponse, decode_response};
use piecemeal::tracker::{AnnounceParams, Event, ScrapeCounts};
use std::net::UdpSocket;
use std::time::Duration;

const FILES: &[(&str, usize)] = &[("file.bin", 1_000_000)];

/// Send `req` to the tracker on loopback `port`; its answer, if one comes
/// within `wait`.
fn exchange(sock: &UdpSocket, port: u16, req: &[u8], wait: Duration) -> Option<Vec<u8>> {
    sock.set_read_timeout(Some(wait)).unwrap();
    sock.send_to(req, ("127.0.0.1", port)).unwrap();
    let mut buf = [0u8; 9000];
    match sock.recv_from(&mut buf) {
        Ok((n, _)) => Some(buf[..n].to_vec()),
        Err(_) => None,
    }
}

fn connect(sock: &UdpSocket, port: u16) -> u64 {
    let answer = exchange(
        sock,
        port,
        &udp_wire::connect_request(0x5151),
        Duration::from_secs(5),
    )
    .expect("a connect answer");
    assert_eq!(answer.len(), 16, "16 bytes for 16");
    match decode_response(&answer).unwrap() {
        UdpResponse::Connect {
            txn: 0x5151,
            conn_id,
        } => conn_id,
        other => panic!("{other:?}"),
    }
}

/// (seeders, completed, leechers) of `hash`, asked over UDP.
fn udp_scrape(port: u16, hash: [u8; 20]) -> ScrapeCounts {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let cid = connect(&sock, port);
    let answer = exchange(
        &sock,
        port,
        &udp_wire::scrape_request(cid, 77, &[hash]),
        Duration::from_secs(5),
    )
    .expect("a scrape answer");
    match decode_response(&answer).unwrap() {
        UdpResponse::Scrape { txn: 77, records } => udp_wire::scrape_records(records)
            .next()
            .expect("one record"),
        other => panic!("{other:?}"),
    }
}

fn info_hash(torrent: &str) -> [u8; 20] {
    piecemeal::metainfo::Metainfo::load(std::path::Path::new(torrent))
        .unwrap()
        .info_hash
}

/// Wait until `cond` holds (checked every 50 ms), or fail with `what`.
fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let end = std::time::Instant::now() + timeout;
    while !cond() {
        assert!(std::time::Instant::now() < end, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_tracker_answers_bep15_on_its_port_and_only_proven_addresses_get_more_than_16_bytes() {
    let tmp = TempDir::new("udp-raw");
    let (tracker, port) = start_tracker(&tmp);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let cid = connect(&sock, port);
    let p = AnnounceParams {
        info_hash: [3; 20],
        peer_id: *b"-XX0001-abcdefghijkl",
        port: 4242,
        uploaded: 0,
        downloaded: 0,
        left: 0,
        event: Event::Started,
        numwant: 10,
        key: 1,
        tracker_id: None,
    };
    // A forged connection id: no answer at all.
    let forged = udp_wire::announce_request(cid ^ 0xFFFF, 9, &p);
    assert_eq!(
        exchange(&sock, port, &forged, Duration::from_millis(500)),
        None
    );
    // Short, and not a request: nothing either.
    assert_eq!(
        exchange(&sock, port, &[0; 15], Duration::from_millis(300)),
        None
    );
    let answer = exchange(
        &sock,
        port,
        &udp_wire::announce_request(cid, 9, &p),
        Duration::from_secs(5),
    )
    .expect("an announce answer");
    match decode_response(&answer).unwrap() {
        UdpResponse::Announce {
            txn: 9,
            interval: 30,
            seeders: 1,
            leechers: 0,
            peers,
        } => assert!(peers.is_empty()),
        other => panic!("{other:?}"),
    }
    // A second peer gets the first, as 6 bytes.
    let mut q = p.clone();
    q.peer_id[19] ^= 1;
    q.port = 4343;
    q.left = 5;
    let answer = exchange(
        &sock,
        port,
        &udp_wire::announce_request(cid, 10, &q),
        Duration::from_secs(5),
    )
    .unwrap();
    let UdpResponse::Announce { peers, .. } = decode_response(&answer).unwrap() else {
        panic!()
    };
    assert_eq!(peers, [127, 0, 0, 1, 0x10, 0x92]);
    assert_eq!(
        udp_scrape(port, [3; 20]),
        ScrapeCounts {
            seeders: 1,
            completed: 0,
            leechers: 1
        }
    );
    // The HTTP side sees the same swarm.
    let raw = http_exchange(
        port,
        format!(
            "GET /scrape?info_hash={} HTTP/1.1\r\n\r\n",
            "%03".repeat(20)
        )
        .as_bytes(),
        Duration::from_secs(5),
    );
    let text = String::from_utf8_lossy(&raw);
    assert!(
        text.contains("8:completei1e10:downloadedi0e10:incompletei1e"),
        "{text}"
    );
    assert!(
        tracker.log_text().contains("udp://127.0.0.1:"),
        "{}",
        tracker.log_text()
    );
}

/// Seed and download a torrent whose only tracker is
/// `udp://127.0.0.1:PORT/announce`, with no `--peer`: the leecher can
/// only find the seeder through the tracker. When the leecher exits, its
/// `completed` and `stopped` have reached the tracker.
fn download_through_udp(tmp: &TempDir, port: u16, seeder_extra: &[&str]) -> String {
    let url = format!("udp://127.0.0.1:{port}/announce");
    let (seed_dir, t) = seed_data(tmp, FILES, "file.bin", std::slice::from_ref(&url), 32768);
    let hash = info_hash(&t);
    let (_seeder, _) = start_seeder(tmp, &seed_dir, &t, seeder_extra);
    wait_until(
        "the seeder is on the tracker",
        Duration::from_secs(20),
        || udp_scrape(port, hash).seeders == 1,
    );
    let out = tmp.join("out");
    let mut leech = Proc::start(
        "leech",
        tmp.path(),
        &[
            "download",
            &t,
            "-o",
            out.to_str().unwrap(),
            "--port",
            "0",
            "--bind",
            "127.0.0.1",
            "--verbose",
        ],
        tmp.path(),
    );
    assert_eq!(
        leech.wait(Duration::from_secs(60)),
        0,
        "log:\n{}",
        leech.log_text()
    );
    assert_same_files(&seed_dir, &out, FILES);
    let log = leech.log_text();
    assert!(log.contains(&format!("tracker {url}: 1 peers")), "{log}");
    assert!(log.contains("over UDP"), "{log}");
    // `completed` counted; `stopped` took the leecher out again.
    assert_eq!(
        udp_scrape(port, hash),
        ScrapeCounts {
            seeders: 1,
            completed: 1,
            leechers: 0
        },
        "{log}"
    );
    log
}

#[test]
fn a_download_whose_only_tracker_is_udp_finds_the_seeder_through_our_tracker() {
    let tmp = TempDir::new("udp-loopback");
    let (_tracker, port) = start_tracker(&tmp);
    download_through_udp(&tmp, port, &[]);
}

#[test]
fn a_seeder_with_tracker_port_answers_udp_too() {
    let tmp = TempDir::new("udp-tracker-port");
    let port = free_port();
    download_through_udp(&tmp, port, &["--tracker-port", &port.to_string()]);
}

/// `piecemeal scrape` asks every tracker of the torrent, UDP and HTTP
/// alike, and says which did not answer.
#[test]
fn scrape_prints_the_counts_of_each_tracker() {
    let tmp = TempDir::new("udp-scrape-cli");
    let (_tracker, port) = start_tracker(&tmp);
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let urls = [
        format!("udp://127.0.0.1:{port}/announce"),
        format!("http://127.0.0.1:{port}/announce"),
        format!("udp://127.0.0.1:{}", silent.local_addr().unwrap().port()),
    ];
    let (seed_dir, t) = seed_data(&tmp, FILES, "file.bin", &urls, 32768);
    let hash = info_hash(&t);
    let (_seeder, _) = start_seeder(&tmp, &seed_dir, &t, &[]);
    wait_until(
        "the seeder is on the tracker",
        Duration::from_secs(20),
        || udp_scrape(port, hash).seeders == 1,
    );
    let out = std::process::Command::new(BIN)
        .args(["scrape", &t, "--timeout", "2"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            format!("{}: 1 seeders, 0 leechers, 0 completed", urls[0]),
            format!("{}: 1 seeders, 0 leechers, 0 completed", urls[1]),
            format!("{}: tracker timed out", urls[2]),
        ]
    );
    // No tracker answers: exit code 1.
    let none = TempDir::new("udp-scrape-cli-none");
    let (_, lone) = seed_data(&none, FILES, "file.bin", &urls[2..], 32768);
    let out = std::process::Command::new(BIN)
        .args(["scrape", &lone, "--timeout", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}
