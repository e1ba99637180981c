//! Peer exchange (BEP 11) against scripted peers and between piecemeal
//! processes, on loopback: a flood of 100,000 addresses is capped and costs
//! no memory; a private torrent takes nothing from `ut_pex`; a third
//! piecemeal finds a seeder it was never told about through a second one's
//! peer exchange.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const FILES: &[(&str, usize)] = &[("file.bin", 1_000_000)];

/// A torrent of `FILES` (written under `tmp/seed`), private or not.
fn torrent(tmp: &TempDir, private: bool) -> (std::path::PathBuf, [u8; 20]) {
    let seed_dir = tmp.join("seed");
    write_files(&seed_dir, FILES);
    let bytes = piecemeal::metainfo::create(
        &seed_dir.join("file.bin"),
        &piecemeal::metainfo::CreateOptions {
            trackers: Vec::new(),
            piece_len: Some(32768),
            private,
            comment: None,
            created_by: None,
            creation_date: None,
        },
    )
    .unwrap();
    let path = tmp.join("t.torrent");
    std::fs::write(&path, bytes).unwrap();
    let meta = piecemeal::metainfo::Metainfo::load(&path).unwrap();
    (path, meta.info_hash)
}

/// One length-prefixed frame (`None` on EOF or time-out).
fn read_frame(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let len = u32::from_be_bytes(len) as usize;
    assert!(len <= 1 << 20, "frame of {len} bytes");
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).ok()?;
    Some(body)
}

fn extended(id: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(2 + payload.len() as u32).to_be_bytes());
    out.push(20);
    out.push(id);
    out.extend_from_slice(payload);
    out
}

/// A scripted peer's side of a connection piecemeal dialed: both
/// handshakes, an extension handshake naming `ut_pex` (as id 1), and our
/// extension handshake read back. Returns the dictionary piecemeal sent.
fn greet(s: &mut TcpStream, info_hash: [u8; 20]) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut hs = [0u8; 68];
    s.read_exact(&mut hs).unwrap();
    assert_eq!(hs[28..48], info_hash);
    let mut out = handshake_bytes(&info_hash, b"-XX0001-pexflooder!!");
    out[20 + 5] = 0x10; // BEP 10
    out.extend(extended(0, b"d1:md6:ut_pexi1eee"));
    s.write_all(&out).unwrap();
    loop {
        let f = read_frame(s).expect("piecemeal's extension handshake");
        if f.len() >= 2 && f[0] == 20 && f[1] == 0 {
            return f[2..].to_vec();
        }
    }
}

/// Piecemeal's local id for `ut_pex`, from its extension handshake.
fn ut_pex_id(dict: &[u8]) -> Option<u8> {
    let text = String::from_utf8_lossy(dict);
    let at = text.find("6:ut_pexi")? + "6:ut_pexi".len();
    text[at..].split('e').next()?.parse().ok()
}

/// `n` loopback listeners, and which of them were dialed (each counts
/// once, however often it is redialed).
fn counting_listeners(n: usize) -> (Vec<SocketAddr>, Arc<Mutex<Vec<bool>>>) {
    let dialed = Arc::new(Mutex::new(vec![false; n]));
    let mut addrs = Vec::new();
    for i in 0..n {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        addrs.push(l.local_addr().unwrap());
        let dialed = dialed.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for c in l.incoming() {
                let Ok(c) = c else { return };
                dialed.lock().unwrap()[i] = true;
                held.push(c); // keep it open
            }
        });
    }
    (addrs, dialed)
}

/// The indices of the listeners dialed so far.
fn dialed_ones(dialed: &Mutex<Vec<bool>>) -> Vec<usize> {
    let d = dialed.lock().unwrap();
    (0..d.len()).filter(|&i| d[i]).collect()
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A `ut_pex` message with `added` (flags 0), sent as extended id `id`.
fn pex_message(id: u8, added: &[SocketAddr]) -> Vec<u8> {
    let added: Vec<(SocketAddr, u8)> = added.iter().map(|&a| (a, 0)).collect();
    let mut out = Vec::new();
    piecemeal::ut_pex::encode(id, &added, &[], &mut out);
    out
}

/// A leecher of `torrent` that dials the scripted peer listening on `l`.
fn leecher(tmp: &TempDir, torrent: &std::path::Path, l: &TcpListener) -> Proc {
    let out = tmp.join("out");
    let peer = l.local_addr().unwrap().port().to_string();
    let args = [
        "download",
        torrent.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--peer",
        &peer,
        "--port",
        "0",
        "--verbose",
        // The scripted peer speaks plaintext only.
        "--encryption",
        "off",
    ];
    Proc::start("leech", tmp.path(), &args, tmp.path())
}

#[test]
fn a_pex_flood_of_100000_addresses_is_capped_and_memory_stays_flat() {
    let tmp = TempDir::new("pex-flood");
    let (torrent, info_hash) = torrent(&tmp, false);
    let flooder = TcpListener::bind("127.0.0.1:0").unwrap();
    let (listeners, dialed) = counting_listeners(100);
    let mut leech = leecher(&tmp, &torrent, &flooder);
    let (mut s, _) = flooder.accept().unwrap();
    let ours = ut_pex_id(&greet(&mut s, info_hash)).expect("a public torrent offers ut_pex");
    // 100 reachable addresses first, then 99,900 that lead nowhere.
    let mut flood = listeners.clone();
    flood.extend((0..99_900u32).map(|i| SocketAddr::from(((0x7f10_0000 + i).to_be_bytes(), 9))));
    let msg = pex_message(ours, &flood);
    assert!(msg.len() > 600_000);
    s.write_all(&msg).unwrap();
    // It dials what it took: some of the first 50, never one after them.
    let end = Instant::now() + Duration::from_secs(20);
    while dialed_ones(&dialed).len() < 40 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
    }
    let first = dialed_ones(&dialed);
    assert!(
        !first.is_empty() && first.iter().all(|&i| i < 50),
        "dialed {first:?}\n{}",
        leech.log_text()
    );
    // The flood goes on: thirty more at once (21 MB), the other 50
    // reachable addresses first now, ignored unread.
    let mut flood = listeners[50..].to_vec();
    flood.extend_from_slice(&listeners[..50]);
    flood.extend((0..99_900u32).map(|i| SocketAddr::from(((0x7f20_0000 + i).to_be_bytes(), 9))));
    let msg = pex_message(ours, &flood);
    let before = rss_kib(leech.child.id());
    for _ in 0..30 {
        s.write_all(&msg).unwrap();
    }
    // A keep-alive behind them, and time to read them all.
    s.write_all(&[0, 0, 0, 0]).unwrap();
    std::thread::sleep(Duration::from_secs(5));
    let after = rss_kib(leech.child.id());
    assert!(
        after < before + 4096,
        "RSS grew from {before} KiB to {after} KiB"
    );
    let all = dialed_ones(&dialed);
    assert!(
        all.iter().all(|&i| i < 50),
        "taken from a later flood: {all:?}"
    );
    assert!(
        leech.child.try_wait().unwrap().is_none(),
        "still running:\n{}",
        leech.log_text()
    );
    let log = leech.log_text();
    assert!(log.contains("ut_pex: 100000 added"), "{log}");
    leech.terminate(Duration::from_secs(5));
}

#[test]
fn pex_from_a_private_torrents_peer_is_ignored() {
    let tmp = TempDir::new("pex-private");
    let (torrent, info_hash) = torrent(&tmp, true);
    let peer = TcpListener::bind("127.0.0.1:0").unwrap();
    let (listeners, dialed) = counting_listeners(5);
    let mut leech = leecher(&tmp, &torrent, &peer);
    let (mut s, _) = peer.accept().unwrap();
    let dict = greet(&mut s, info_hash);
    assert_eq!(ut_pex_id(&dict), None, "{}", String::from_utf8_lossy(&dict));
    // Whatever id it guesses, nothing is taken.
    for id in 1..=4 {
        s.write_all(&pex_message(id, &listeners)).unwrap();
    }
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(dialed_ones(&dialed), [], "{}", leech.log_text());
    assert!(leech.child.try_wait().unwrap().is_none());
    leech.terminate(Duration::from_secs(5));
}

#[test]
fn a_third_piecemeal_finds_the_seeder_only_through_peer_exchange() {
    let tmp = TempDir::new("pex-three");
    let (torrent, _) = torrent(&tmp, false);
    let t = torrent.to_str().unwrap();
    let seed_dir = tmp.join("seed");
    // A: slow, so B stays connected to it (two seeds part) while C learns of
    // A from B.
    let (_a, a_port) = start_seeder(
        &tmp,
        &seed_dir,
        t,
        &["--pex-interval", "2", "--upload-limit", "200K"],
    );
    // B: dials A; listens where C will find it.
    let b_port = free_port().to_string();
    let b_out = tmp.join("b");
    let mut b = Proc::start(
        "b",
        tmp.path(),
        &[
            "download",
            t,
            "-o",
            b_out.to_str().unwrap(),
            "--peer",
            &a_port,
            "--port",
            &b_port,
            "--bind",
            "127.0.0.1",
            "--seed",
            "--pex-interval",
            "2",
            "--verbose",
        ],
        tmp.path(),
    );
    b.wait_log("handshake ok", Duration::from_secs(20));
    // C: told of B only.
    let c_out = tmp.join("c");
    let mut c = Proc::start(
        "c",
        tmp.path(),
        &[
            "download",
            t,
            "-o",
            c_out.to_str().unwrap(),
            "--peer",
            &b_port,
            "--port",
            "0",
            "--pex-interval",
            "2",
            "--verbose",
        ],
        tmp.path(),
    );
    let a_addr = format!("127.0.0.1:{a_port} handshake ok");
    c.wait_log(&a_addr, Duration::from_secs(30));
    assert_eq!(c.wait(Duration::from_secs(60)), 0, "{}", c.log_text());
    let log = c.log_text();
    assert!(
        log.contains("ut_pex: "),
        "no peer exchange:\n{log}\nB:\n{}",
        b.log_text()
    );
    assert!(log.contains(&a_addr), "never connected to A:\n{log}");
    assert_same_files(&seed_dir, &c_out, FILES);
    b.terminate(Duration::from_secs(5));
}
