//! Scripted hostile UDP trackers (BEP 15) on 127.0.0.1, the torrent's
//! only tracker. Whatever the tracker does, piecemeal drops what does not
//! fit (and counts it), or reports the tracker's error, keeps running, and
//! the download completes from the peer given with `--peer`. The
//! retransmission schedule itself is checked with a fake clock in
//! `src/tracker/udp_client_tests.rs`; here the first retransmission is
//! watched on the real one.

mod common;
use common::*;
use piecemeal::tracker::udp_wire;
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const FILES: &[(&str, usize)] = &[("file.bin", 1_000_000)];

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    /// Well-formed connect answers with another transaction id.
    WrongTxn,
    /// The first 7 bytes of a connect answer.
    Short,
    /// A connect answer with 1,000 bytes after it, and a 9,000-byte one.
    Long,
    /// `error` (action 3) with a message.
    ConnectError,
    /// Never answers.
    Silent,
}

/// One datagram the tracker received: when, and its bytes.
type Seen = Arc<Mutex<Vec<(Instant, Vec<u8>, SocketAddr)>>>;

/// A tracker on a loopback UDP port behaving as `mode`; what it received.
fn hostile_udp_tracker(mode: Mode) -> (Arc<UdpSocket>, u16, Seen) {
    let sock = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
    let port = sock.local_addr().unwrap().port();
    let seen: Seen = Arc::default();
    let (s, log) = (sock.clone(), seen.clone());
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        loop {
            let Ok((n, from)) = s.recv_from(&mut buf) else {
                return;
            };
            let req = buf[..n].to_vec();
            log.lock()
                .unwrap()
                .push((Instant::now(), req.clone(), from));
            if n < 16 {
                continue;
            }
            let txn = u32::from_be_bytes(req[12..16].try_into().unwrap());
            let good = udp_wire::connect_response(txn, 0x0102_0304_0506_0708);
            let answers: Vec<Vec<u8>> = match mode {
                Mode::WrongTxn => vec![
                    udp_wire::connect_response(txn ^ 0x5A5A, 1).to_vec(),
                    udp_wire::connect_response(txn.wrapping_add(1), 1).to_vec(),
                ],
                Mode::Short => vec![good[..7].to_vec(), good[..15].to_vec()],
                Mode::Long => {
                    let mut long = good.to_vec();
                    long.extend_from_slice(&[0; 1000]);
                    let mut huge = good.to_vec();
                    huge.resize(9000, 0xEE);
                    vec![long, huge]
                }
                Mode::ConnectError => {
                    let mut e = Vec::new();
                    udp_wire::error_response(txn, "go away", &mut e);
                    vec![e]
                }
                Mode::Silent => vec![],
            };
            for a in answers {
                let _ = s.send_to(&a, from);
            }
        }
    });
    (sock, port, seen)
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A leecher of an honest seeder (`--peer`) whose torrent names only the
/// hostile tracker, still running (`extra` decides for how long).
fn leecher(tmp: &TempDir, port: u16, extra: &[&str]) -> (Proc, Proc, String) {
    let url = format!("udp://127.0.0.1:{port}/announce");
    let (seed_dir, t) = seed_data(tmp, FILES, "file.bin", std::slice::from_ref(&url), 32768);
    let (seeder, sp) = start_seeder(tmp, &seed_dir, &t, &["--no-tracker"]);
    let out = tmp.join("out");
    let mut args = download_args(&t, &out, &sp);
    args.extend_from_slice(extra);
    let mut leech = Proc::start("leech", tmp.path(), &args, tmp.path());
    leech.wait_for(Duration::from_secs(30), "all pieces", |s| {
        s.num > 0 && s.have == s.num
    });
    assert_same_files(&seed_dir, &out, FILES);
    (leech, seeder, url)
}

/// The answers are dropped and counted; nothing reaches the announcer.
fn dropped(mode: Mode, name: &str) {
    let tmp = TempDir::new(name);
    let (_sock, port, seen) = hostile_udp_tracker(mode);
    let (mut leech, _seeder, url) = leecher(&tmp, port, &["--seed"]);
    leech.wait_log("udp trackers: dropped ", Duration::from_secs(10));
    assert_eq!(leech.terminate(Duration::from_secs(10)), 0);
    let log = leech.log_text();
    assert!(!log.contains("panicked"), "{log}");
    assert!(
        !log.contains(&format!("tracker {url}: ")),
        "{mode:?}: {log}"
    );
    let seen = seen.lock().unwrap();
    assert!(!seen.is_empty());
    assert!(seen.iter().all(|(_, d, _)| d.len() == 16), "connects only");
}

#[test]
fn answers_with_a_wrong_transaction_id_are_dropped() {
    dropped(Mode::WrongTxn, "udp-wrong-txn");
}

#[test]
fn short_answers_are_dropped() {
    dropped(Mode::Short, "udp-short");
}

#[test]
fn long_answers_are_dropped() {
    dropped(Mode::Long, "udp-long");
}

#[test]
fn an_error_answer_to_connect_is_reported_and_backed_off() {
    let tmp = TempDir::new("udp-error");
    let (_sock, port, seen) = hostile_udp_tracker(Mode::ConnectError);
    let (mut leech, _seeder, url) = leecher(&tmp, port, &["--seed"]);
    leech.wait_log(
        "no tracker answered; backing off for ",
        Duration::from_secs(10),
    );
    assert_eq!(leech.terminate(Duration::from_secs(10)), 0);
    let log = leech.log_text();
    assert!(
        log.contains(&format!("tracker {url}: tracker failure: go away")),
        "{log}"
    );
    assert_eq!(seen.lock().unwrap().len(), 1, "one connect, then back-off");
}

#[test]
fn a_silent_tracker_gets_the_same_connect_again_after_15_s() {
    let tmp = TempDir::new("udp-silent");
    let (_sock, port, seen) = hostile_udp_tracker(Mode::Silent);
    let (mut leech, _seeder, _) = leecher(&tmp, port, &["--seed", "--seed-time", "18"]);
    assert_eq!(
        leech.wait(Duration::from_secs(40)),
        0,
        "{}",
        leech.log_text()
    );
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2, "a connect and one retransmission in 18 s");
    let gap = seen[1].0 - seen[0].0;
    assert!(
        gap >= Duration::from_millis(14_900) && gap < Duration::from_millis(16_000),
        "{gap:?}"
    );
    assert_eq!(
        seen[0].1, seen[1].1,
        "the same request, same transaction id"
    );
    assert_eq!(seen[0].2, seen[1].2, "from the one UDP socket");
}

/// 600,000 datagrams nobody asked for — from the tracker's address with
/// wrong transaction ids, and from another address — while the leecher
/// seeds: its memory stays flat and it stops cleanly.
#[test]
fn a_flood_of_unsolicited_datagrams_leaves_memory_flat() {
    let tmp = TempDir::new("udp-flood");
    let (sock, port, seen) = hostile_udp_tracker(Mode::Silent);
    let (mut leech, _seeder, _) = leecher(&tmp, port, &["--seed"]);
    let end = Instant::now() + Duration::from_secs(10);
    let client = loop {
        if let Some((_, _, from)) = seen.lock().unwrap().first() {
            break *from;
        }
        assert!(Instant::now() < end, "no connect arrived");
        std::thread::sleep(Duration::from_millis(20));
    };
    let other = UdpSocket::bind("127.0.0.1:0").unwrap();
    let flood = |n: u32| {
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut buf = [0u8; 1500];
        for i in 0..n {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 1500) as usize;
            buf[..8].copy_from_slice(&x.to_be_bytes());
            let d: &[u8] = if i % 3 == 0 {
                &udp_wire::connect_response(x as u32, x)
            } else {
                &buf[..len]
            };
            let from = if i % 2 == 0 { &*sock } else { &other };
            let _ = from.send_to(d, client);
            if i % 2000 == 0 {
                // Let the receiver keep up now and then (a socket buffer
                // that is always full only measures the kernel).
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    };
    let pid = leech.child.id();
    flood(100_000);
    std::thread::sleep(Duration::from_millis(500));
    let before = rss_kib(pid);
    flood(500_000);
    std::thread::sleep(Duration::from_millis(500));
    let after = rss_kib(pid);
    // The last count is logged when it stops.
    assert_eq!(leech.terminate(Duration::from_secs(10)), 0);
    let log = leech.log_text();
    let most = log
        .lines()
        .filter_map(|l| {
            l.split("dropped ")
                .nth(1)?
                .split(' ')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .max()
        .unwrap();
    assert!(most >= 10_000, "only {most} datagrams reached it:\n{log}");
    assert!(
        after <= before + 512,
        "RSS grew from {before} KiB to {after} KiB"
    );
    eprintln!("flood: RSS {before} -> {after} KiB; {most} datagrams dropped (last count logged)");
}
