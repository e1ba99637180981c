//! The fast extension (BEP 6) from outside: scripted peers (plain std
//! sockets on 127.0.0.1) against real `piecemeal seed` / `download`
//! processes, honest and hostile. The same against libtorrent is in
//! `tests/interop.rs`.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

const PIECE: u32 = 32768;
const BLOCK: u32 = 16384;
const SIZE: usize = 3_000_000;
const FILES: &[(&str, usize)] = &[("file.bin", SIZE)];

const HAVE_ALL: u8 = 0x0e;
const HAVE_NONE: u8 = 0x0f;
const SUGGEST: u8 = 0x0d;
const REJECT: u8 = 0x10;
const ALLOWED_FAST: u8 = 0x11;

use common::SeedFixture as Fixture;

/// The seeder's data and torrent (one file of `FILES`, `PIECE`-byte pieces).
fn fixture(name: &str) -> Fixture {
    seed_fixture(name, FILES, "file.bin", PIECE)
}

fn start_seeder(fx: &Fixture) -> (Proc, u16) {
    let port = free_port();
    let ps = port.to_string();
    let args = [
        "seed",
        &fx.torrent,
        "--port",
        &ps,
        "--bind",
        "127.0.0.1",
        "--verbose",
    ];
    let p = Proc::start("seeder", &fx.seed_dir, &args, fx.tmp.path());
    let end = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < end, "never listened:\n{}", p.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    (p, port)
}

/// A handshake with the fast bit (reserved byte 7, 0x04).
fn fast_handshake(info_hash: &[u8; 20], tag: &str) -> Vec<u8> {
    let mut id = *b"-XX0001-............";
    id[8..8 + tag.len().min(12)].copy_from_slice(&tag.as_bytes()[..tag.len().min(12)]);
    let mut hs = handshake_bytes(info_hash, &id);
    hs[27] |= 0x04;
    hs
}

fn frame(id: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = (1 + payload.len() as u32).to_be_bytes().to_vec();
    out.push(id);
    out.extend_from_slice(payload);
    out
}

fn triple(id: u8, piece: u32, begin: u32, len: u32) -> Vec<u8> {
    let mut p = Vec::new();
    for v in [piece, begin, len] {
        p.extend_from_slice(&v.to_be_bytes());
    }
    frame(id, &p)
}

fn read_frame(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).ok()?;
    Some(body)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

#[test]
fn a_fast_seeder_says_have_all_rejects_what_it_will_not_serve_and_offers_allowed_fast() {
    let fx = fixture("fast-seeder");
    let (mut seeder, port) = start_seeder(&fx);
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut out = fast_handshake(&fx.info_hash, "fastseed");
    out.extend(frame(HAVE_NONE, &[]));
    s.write_all(&out).unwrap();
    let mut hs = [0u8; 68];
    s.read_exact(&mut hs).unwrap();
    assert_eq!(hs[27] & 0x04, 0x04, "our handshake sets the fast bit");
    assert_eq!(
        read_frame(&mut s).unwrap(),
        [HAVE_ALL],
        "have all, no bitfield"
    );
    // Choked (never interested yet): every request is rejected, and so
    // are requests for pieces that do not exist.
    let n = fx.num_pieces;
    let asked = [(0, 0), (5, BLOCK), (n - 1, 0), (n, 0)];
    let mut out = Vec::new();
    for &(p, b) in &asked {
        out.extend(triple(6, p, b, BLOCK));
    }
    s.write_all(&out).unwrap();
    for &(p, b) in &asked {
        let f = read_frame(&mut s).unwrap();
        assert_eq!(f[0], REJECT, "{f:?}");
        assert_eq!((u32_at(&f, 1), u32_at(&f, 5), u32_at(&f, 9)), (p, b, BLOCK));
    }
    // Interested: our allowed-fast set for 127.0.0.0/24 and this torrent
    // (BEP 6's algorithm), then an unchoke.
    s.write_all(&frame(2, &[])).unwrap();
    let want: Vec<u32> = piecemeal::fast::allowed_fast_set(
        "127.0.0.1".parse().unwrap(),
        &fx.info_hash,
        n,
        piecemeal::fast::ALLOWED_FAST_SET,
    )
    .into_iter()
    .map(u32::from)
    .collect();
    let mut allowed = Vec::new();
    loop {
        let f = read_frame(&mut s).expect("closed");
        match f.first() {
            Some(&ALLOWED_FAST) => allowed.push(u32_at(&f, 1)),
            Some(&1) => break,
            _ => {}
        }
    }
    assert_eq!(allowed, want);
    // Unchoked: served with the right bytes.
    s.write_all(&triple(6, 3, BLOCK, BLOCK)).unwrap();
    let f = loop {
        let f = read_frame(&mut s).expect("closed");
        if f.first() == Some(&7) {
            break f;
        }
    };
    let at = (3 * PIECE + BLOCK) as usize;
    assert!(f[9..] == fx.data[at..at + BLOCK as usize], "wrong bytes");
    assert!(seeder.child.try_wait().unwrap().is_none());
}

#[test]
fn fast_messages_from_a_peer_without_the_bit_close_it() {
    let fx = fixture("fast-nobit");
    let (seeder, port) = start_seeder(&fx);
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut out = handshake_bytes(&fx.info_hash, b"-XX0001-nobit.......");
    out.extend(frame(HAVE_ALL, &[]));
    s.write_all(&out).unwrap();
    seeder.wait_log(
        "fast extension: fast message without the fast bit",
        Duration::from_secs(10),
    );
}

/// A fast peer piecemeal dials, with every piece. Before anything else it
/// sends hostile fast messages: `allowed fast` and `suggest` for pieces out
/// of range, `stray` rejects for blocks never requested. Then it unchokes
/// and serves the true bytes, except that it rejects the first request it
/// gets (the block must be asked for again at once).
fn hostile_fast_seeder(
    listener: TcpListener,
    fx_hash: [u8; 20],
    n: u32,
    data: Vec<u8>,
    stray: u32,
) {
    for conn in listener.incoming() {
        let Ok(mut s) = conn else { return };
        let data = data.clone();
        std::thread::spawn(move || {
            let mut hs = [0u8; 68];
            if s.read_exact(&mut hs).is_err() || hs[27] & 0x04 == 0 {
                return;
            }
            let mut out = fast_handshake(&fx_hash, "hostile");
            out.extend(frame(HAVE_ALL, &[]));
            for p in [n, n + 1, u32::MAX] {
                out.extend(frame(ALLOWED_FAST, &p.to_be_bytes()));
                out.extend(frame(SUGGEST, &p.to_be_bytes()));
            }
            for i in 0..stray {
                out.extend(triple(REJECT, n - 1 - i % 2, 0, BLOCK));
            }
            out.extend(frame(1, &[])); // unchoke
            if s.write_all(&out).is_err() {
                return;
            }
            let mut rejected = None;
            while let Some(f) = read_frame(&mut s) {
                if f.first() != Some(&6) {
                    continue;
                }
                let (p, b, l) = (u32_at(&f, 1), u32_at(&f, 5), u32_at(&f, 9));
                let reply = if rejected.is_none() {
                    rejected = Some((p, b));
                    triple(REJECT, p, b, l)
                } else {
                    let at = (p * PIECE + b) as usize;
                    let mut m = Vec::new();
                    m.extend_from_slice(&p.to_be_bytes());
                    m.extend_from_slice(&b.to_be_bytes());
                    m.extend_from_slice(&data[at..at + l as usize]);
                    frame(7, &m)
                };
                if s.write_all(&reply).is_err() {
                    return;
                }
            }
        });
    }
}

fn download_from(fx: &Fixture, name: &str, port: u16) -> Proc {
    let out = fx.tmp.join(name);
    let port = port.to_string();
    let args = [
        "download",
        &fx.torrent,
        "-o",
        out.to_str().unwrap(),
        "--peer",
        &port,
        "--port",
        "0",
        "--encryption",
        "off",
        "--verbose",
    ];
    Proc::start(name, fx.tmp.path(), &args, fx.tmp.path())
}

#[test]
fn hostile_fast_messages_are_ignored_and_a_rejected_block_is_asked_again() {
    let fx = fixture("fast-hostile");
    let bad = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = bad.local_addr().unwrap().port();
    let (h, n, d) = (fx.info_hash, fx.num_pieces, fx.data.clone());
    std::thread::spawn(move || hostile_fast_seeder(bad, h, n, d, 100));
    let mut l = download_from(&fx, "out", port);
    assert_eq!(l.wait(Duration::from_secs(60)), 0, "log:\n{}", l.log_text());
    assert_same_files(&fx.seed_dir, &fx.tmp.join("out"), FILES);
    let log = l.log_text();
    assert!(
        log.contains(&format!("allowed fast piece {n}: out of range")),
        "{log}"
    );
    assert!(log.contains("has every piece (have all)"), "{log}");
    // The one peer rejected a block: it came from that same peer, at once
    // (no request time-out, nobody snubbed).
    assert!(!log.contains("snubbed"), "{log}");
}

#[test]
fn a_flood_of_rejects_for_blocks_never_requested_closes_the_connection() {
    let fx = fixture("fast-reject-flood");
    let bad = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = bad.local_addr().unwrap().port();
    let (h, n, d) = (fx.info_hash, fx.num_pieces, fx.data.clone());
    // More than 4 × 2048 in one burst.
    std::thread::spawn(move || hostile_fast_seeder(bad, h, n, d, 20_000));
    let mut l = download_from(&fx, "out", port);
    l.wait_log(
        "fast extension: too many rejects or hints it had no cause to send",
        Duration::from_secs(20),
    );
    l.terminate(Duration::from_secs(10));
}
