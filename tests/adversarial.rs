//! Scripted hostile peers (plain std sockets on 127.0.0.1) against real
//! `piecemeal seed` / `download` processes. Every case checks what can be
//! observed from outside: piecemeal closes the connection (a read returns 0
//! or ECONNRESET), names the reason in its `--verbose` log, and keeps
//! serving or downloading correctly afterwards.

mod common;
use common::*;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const PIECE: u32 = 32768;
const BLOCK: u32 = 16384;
/// 92 pieces: the last byte of a bitfield has 4 spare bits.
const SIZE: usize = 3_000_000;
const FILES: &[(&str, usize)] = &[("file.bin", SIZE)];

use common::SeedFixture as Fixture;

/// The seeder's data and torrent (one file of `FILES`, `PIECE`-byte pieces).
fn fixture(name: &str) -> Fixture {
    seed_fixture(name, FILES, "file.bin", PIECE)
}

/// Start `piecemeal seed --verbose` on a free port, wait until it accepts.
fn start_seeder(fx: &Fixture, extra: &[&str]) -> (Proc, u16) {
    let port = free_port();
    let ps = port.to_string();
    let mut args = vec![
        "seed",
        &fx.torrent,
        "--port",
        &ps,
        "--bind",
        "127.0.0.1",
        "--verbose",
    ];
    args.extend_from_slice(extra);
    let p = Proc::start("seeder", &fx.seed_dir, &args, fx.tmp.path());
    let end = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < end,
            "seeder never listened:\n{}",
            p.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (p, port)
}

/// Start `piecemeal download` of the fixture's torrent into `tmp/<name>`
/// with `extra` arguments; returns the process and the output folder.
fn start_download(fx: &Fixture, name: &str, extra: &[&str]) -> (Proc, PathBuf) {
    let out = fx.tmp.join(name);
    let mut args = vec!["download", &fx.torrent, "-o", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    (Proc::start(name, fx.tmp.path(), &args, fx.tmp.path()), out)
}

/// An honest leecher downloads everything from `port` and exits 0.
fn honest_download(fx: &Fixture, port: u16, name: &str) {
    let port = port.to_string();
    let (mut l, out) = start_download(fx, name, &["--peer", &port, "--port", "0"]);
    assert_eq!(l.wait(Duration::from_secs(60)), 0, "log:\n{}", l.log_text());
    assert_same_files(&fx.seed_dir, &out, FILES);
}

/// The process has not exited.
fn assert_alive(p: &mut Proc) {
    if let Ok(Some(st)) = p.child.try_wait() {
        panic!("{} exited ({st}); log:\n{}", p.name, p.log_text());
    }
}

/// Resident memory of a process, in bytes (Linux).
fn vm_rss(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = s.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

fn frame(id: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + payload.len());
    out.extend_from_slice(&(1 + payload.len() as u32).to_be_bytes());
    out.push(id);
    out.extend_from_slice(payload);
    out
}

fn request(piece: u32, begin: u32, len: u32) -> Vec<u8> {
    let mut p = Vec::with_capacity(12);
    for v in [piece, begin, len] {
        p.extend_from_slice(&v.to_be_bytes());
    }
    frame(6, &p)
}

/// A peer id for the test peers: `-XX0001-` and a tag.
fn test_id(tag: &str) -> [u8; 20] {
    let mut id = *b"-XX0001-............";
    let t = tag.as_bytes();
    id[8..8 + t.len().min(12)].copy_from_slice(&t[..t.len().min(12)]);
    id
}

/// Read one frame body (empty for a keep-alive); None when the connection
/// closed.
fn read_frame(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).ok()?;
    Some(body)
}

/// Connect to the seeder and exchange handshakes; returns the stream and
/// the seeder's bitfield.
fn connect_seeder(port: u16, fx: &Fixture, id: &[u8; 20]) -> (TcpStream, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&handshake_bytes(&fx.info_hash, id)).unwrap();
    let mut hs = [0u8; 68];
    s.read_exact(&mut hs).unwrap();
    assert_eq!(&hs[28..48], &fx.info_hash);
    let bf = read_frame(&mut s).expect("no bitfield from the seeder");
    assert_eq!(bf[0], 5, "first message is not a bitfield");
    (s, bf[1..].to_vec())
}

/// Read (and discard) until a message with `id` arrives.
fn wait_for_msg(s: &mut TcpStream, id: u8) -> Vec<u8> {
    loop {
        let f = read_frame(s).unwrap_or_else(|| panic!("closed while waiting for message {id}"));
        if f.first() == Some(&id) {
            return f;
        }
    }
}

/// Read until piecemeal closes the connection (EOF or reset), discarding
/// data; panics after `timeout`. Returns how long it took.
fn expect_closed(s: &mut TcpStream, timeout: Duration) -> Duration {
    let start = Instant::now();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return start.elapsed(),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) => {
                return start.elapsed();
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("unexpected read error {e}"),
        }
        assert!(
            start.elapsed() < timeout,
            "connection still open after {timeout:?}"
        );
    }
}

/// Nothing but keep-alives arrives for `d` (the connection stays open).
fn expect_quiet(s: &mut TcpStream, d: Duration) {
    s.set_read_timeout(Some(d)).unwrap();
    let mut b = [0u8; 1];
    match s.read(&mut b) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        Ok(0) => panic!("connection closed"),
        other => panic!("unexpected data: {other:?} {b:?}"),
    }
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
}

/// Interested, then wait for the unchoke.
fn get_unchoked(s: &mut TcpStream) {
    s.write_all(&frame(2, &[])).unwrap();
    wait_for_msg(s, 1);
}

#[test]
fn bad_requests_are_ignored_and_the_seeder_keeps_serving() {
    let fx = fixture("adv-badreq");
    let (mut seeder, port) = start_seeder(&fx, &[]);
    let (mut s, _) = connect_seeder(port, &fx, &test_id("badreq"));
    get_unchoked(&mut s);
    let n = fx.num_pieces;
    let last_size = SIZE as u32 - (n - 1) * PIECE;
    let bad = [
        (n, 0, BLOCK),              // piece out of range
        (u32::MAX, 0, BLOCK),       // piece far out of range
        (0, 0, 0),                  // zero length
        (0, 0, 128 * 1024 + 1),     // over the 128 KiB cap
        (0, u32::MAX - 100, BLOCK), // begin + len wraps around u32
        (0, PIECE - 100, 16384),    // runs past the end of the piece
        (0, PIECE, 1),              // starts at the end of the piece
        (n - 1, 0, last_size + 1),  // past the short last piece
        (n - 1, last_size, BLOCK),  // starts past the short last piece
        (1, u32::MAX, u32::MAX),    // both huge
    ];
    let mut out = Vec::new();
    for _ in 0..20 {
        for &(p, b, l) in &bad {
            out.extend(request(p, b, l));
        }
    }
    // Then one good request, which must be the first thing served.
    out.extend(request(1, BLOCK, BLOCK));
    s.write_all(&out).unwrap();
    let piece = wait_for_msg(&mut s, 7);
    assert_eq!(&piece[1..5], &1u32.to_be_bytes());
    assert_eq!(&piece[5..9], &BLOCK.to_be_bytes());
    let at = (PIECE + BLOCK) as usize;
    assert!(piece[9..] == fx.data[at..at + BLOCK as usize], "wrong data");
    // The same connection still works.
    s.write_all(&request(n - 1, 0, last_size)).unwrap();
    let piece = wait_for_msg(&mut s, 7);
    assert!(
        piece[9..] == fx.data[((n - 1) * PIECE) as usize..],
        "wrong data"
    );
    seeder.wait_log("asked for a block we cannot serve", Duration::from_secs(5));
    assert_alive(&mut seeder);
    honest_download(&fx, port, "honest");
}

#[test]
fn request_flood_is_cut_off_and_memory_stays_flat() {
    let fx = fixture("adv-flood");
    let (mut seeder, port) = start_seeder(&fx, &[]);
    let before = vm_rss(seeder.child.id());
    let (mut s, _) = connect_seeder(port, &fx, &test_id("flood"));
    get_unchoked(&mut s);
    // 100,000 valid requests, and never read the answers.
    let mut out = Vec::with_capacity(100_000 * 17);
    for i in 0..100_000u32 {
        out.extend(request(
            i % fx.num_pieces,
            (i / fx.num_pieces % 2) * BLOCK,
            BLOCK,
        ));
    }
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || w.write_all(&out).is_ok());
    seeder.wait_log("too many requests queued", Duration::from_secs(20));
    let peak = vm_rss(seeder.child.id());
    expect_closed(&mut s, Duration::from_secs(20));
    let _ = writer.join();
    let after = vm_rss(seeder.child.id());
    eprintln!("seeder VmRSS: before {before}, during {peak}, after {after}");
    assert!(peak < 64 << 20, "seeder VmRSS {peak} during the flood");
    assert!(after < 64 << 20, "seeder VmRSS {after} after the flood");
    assert_alive(&mut seeder);
    honest_download(&fx, port, "honest");
}

#[test]
fn requests_while_choked_are_not_served_and_a_flood_closes() {
    let fx = fixture("adv-choked");
    let (mut seeder, port) = start_seeder(&fx, &[]);
    // Never interested, so never unchoked.
    let (mut s, _) = connect_seeder(port, &fx, &test_id("choked"));
    let mut out = Vec::new();
    for i in 0..10 {
        out.extend(request(i, 0, BLOCK));
    }
    s.write_all(&out).unwrap();
    expect_quiet(&mut s, Duration::from_millis(800));
    // A flood of them closes the connection.
    let mut out = Vec::new();
    for i in 0..10_000u32 {
        out.extend(request(i % fx.num_pieces, 0, BLOCK));
    }
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || w.write_all(&out).is_ok());
    let mut got_piece = false;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    while let Some(f) = read_frame(&mut s) {
        got_piece |= f.first() == Some(&7);
    }
    assert!(!got_piece, "a choked peer was served");
    let _ = writer.join();
    seeder.wait_log("too many requests queued", Duration::from_secs(5));
    assert_alive(&mut seeder);
    honest_download(&fx, port, "honest");
}

#[test]
fn slowloris_in_the_handshake_times_out() {
    let fx = fixture("adv-slow-hs");
    let (mut seeder, port) = start_seeder(&fx, &["--handshake-timeout", "2"]);
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let hs = handshake_bytes(&fx.info_hash, &test_id("slowhs"));
    let mut w = s.try_clone().unwrap();
    // One byte a second: 68 s for the whole handshake.
    std::thread::spawn(move || {
        for b in hs {
            if w.write_all(&[b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    let took = expect_closed(&mut s, Duration::from_secs(8));
    assert!(
        took >= Duration::from_millis(1500),
        "closed too early: {took:?}"
    );
    seeder.wait_log("handshake timed out", Duration::from_secs(2));
    assert_alive(&mut seeder);
    honest_download(&fx, port, "honest");
}

#[test]
fn slowloris_inside_a_frame_times_out_but_keep_alives_do_not() {
    let fx = fixture("adv-slow-frame");
    let (mut seeder, port) = start_seeder(&fx, &["--idle-timeout", "3"]);
    let (mut slow, _) = connect_seeder(port, &fx, &test_id("slowframe"));
    let (mut live, _) = connect_seeder(port, &fx, &test_id("keepalive"));
    // A 1000-byte frame (an unknown message id), one byte a second.
    let mut f = frame(20, &[0x55; 999]);
    f.truncate(100);
    let mut w = slow.try_clone().unwrap();
    std::thread::spawn(move || {
        for b in f {
            if w.write_all(&[b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    // The other peer sends a keep-alive every second.
    let mut k = live.try_clone().unwrap();
    let stop = Arc::new(AtomicUsize::new(0));
    let stop2 = stop.clone();
    let keeper = std::thread::spawn(move || {
        while stop2.load(Ordering::SeqCst) == 0 {
            if k.write_all(&[0, 0, 0, 0]).is_err() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(700));
        }
        true
    });
    let took = expect_closed(&mut slow, Duration::from_secs(10));
    assert!(took >= Duration::from_secs(2), "closed too early: {took:?}");
    seeder.wait_log("idle connection timed out", Duration::from_secs(2));
    // The peer that sends whole messages is still connected, a second later.
    std::thread::sleep(Duration::from_secs(2));
    get_unchoked(&mut live);
    live.write_all(&request(0, 0, BLOCK)).unwrap();
    let piece = wait_for_msg(&mut live, 7);
    assert!(piece[9..] == fx.data[..BLOCK as usize]);
    stop.store(1, Ordering::SeqCst);
    assert!(keeper.join().unwrap(), "keep-alive peer was closed");
    assert_alive(&mut seeder);
    honest_download(&fx, port, "honest");
}

#[test]
fn huge_length_prefixes_close_before_the_body_arrives() {
    let fx = fixture("adv-bigframe");
    let (mut seeder, port) = start_seeder(&fx, &[]);
    for (tag, prefix) in [("ffff", 0xFFFF_FFFFu32), ("mib1", (1 << 20) + 1)] {
        let (mut s, _) = connect_seeder(port, &fx, &test_id(tag));
        // Only the prefix and an id: the body never comes, yet the
        // connection is closed at once.
        let mut m = prefix.to_be_bytes().to_vec();
        m.push(7);
        s.write_all(&m).unwrap();
        let took = expect_closed(&mut s, Duration::from_secs(5));
        assert!(took < Duration::from_secs(2), "{tag}: took {took:?}");
        let rss = vm_rss(seeder.child.id());
        assert!(rss < 64 << 20, "seeder VmRSS {rss}");
    }
    seeder.wait_log(&format!("{}", 0xFFFF_FFFFu32), Duration::from_secs(2));
    seeder.wait_log(&format!("{}", (1u32 << 20) + 1), Duration::from_secs(2));
    assert!(seeder.log_text().contains("malformed message"));
    assert_alive(&mut seeder);
    honest_download(&fx, port, "honest");
}

#[test]
fn bad_bitfields_close_the_connection() {
    let fx = fixture("adv-bitfield");
    let (mut seeder, port) = start_seeder(&fx, &[]);
    let n = fx.num_pieces as usize;
    let right = n.div_ceil(8);
    assert!(!n.is_multiple_of(8), "the test needs spare bits");
    let mut spare = vec![0u8; right];
    spare[right - 1] = 1; // the last spare bit
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("short", frame(5, &vec![0u8; right - 1])),
        ("long", frame(5, &vec![0u8; right + 1])),
        ("empty", frame(5, &[])),
        ("spare", frame(5, &spare)),
    ];
    for (tag, bytes) in &cases {
        let (mut s, _) = connect_seeder(port, &fx, &test_id(tag));
        s.write_all(bytes).unwrap();
        expect_closed(&mut s, Duration::from_secs(5));
    }
    seeder.wait_log("bad bitfield", Duration::from_secs(2));
    seeder.wait_log("spare bits", Duration::from_secs(2));
    // A correct one is fine.
    let (mut s, _) = connect_seeder(port, &fx, &test_id("goodbf"));
    s.write_all(&frame(5, &vec![0u8; right])).unwrap();
    get_unchoked(&mut s);
    // So is a correct one after a keep-alive and a `have`, twice (aria2
    // sends its bitfield after `have`s): merged, the connection stays.
    let (mut s, _) = connect_seeder(port, &fx, &test_id("latebf"));
    let late = [
        vec![0, 0, 0, 0],
        frame(4, &0u32.to_be_bytes()),
        frame(5, &vec![0u8; right]),
        frame(5, &vec![0u8; right]),
    ]
    .concat();
    s.write_all(&late).unwrap();
    get_unchoked(&mut s);
    s.write_all(&request(1, 0, BLOCK)).unwrap();
    let piece = wait_for_msg(&mut s, 7);
    assert!(piece[9..] == fx.data[PIECE as usize..][..BLOCK as usize]);
    assert_alive(&mut seeder);
    honest_download(&fx, port, "honest");
}

#[test]
fn a_squatted_peer_id_does_not_lock_the_real_peer_out() {
    // The squatter learnt an honest peer's id and connects first under it,
    // idling with keep-alives. It used to hold that id's place for good:
    // the real peer was closed as a duplicate on every attempt.
    let fx = fixture("adv-dup");
    let (mut seeder, port) = start_seeder(&fx, &[]);
    let id = test_id("twin");
    let (mut squatter, _) = connect_seeder(port, &fx, &id);
    squatter.write_all(&[0, 0, 0, 0]).unwrap();
    let (mut real, _) = connect_seeder(port, &fx, &id);
    get_unchoked(&mut real);
    real.write_all(&request(2, 0, BLOCK)).unwrap();
    let piece = wait_for_msg(&mut real, 7);
    assert!(piece[9..] == fx.data[2 * PIECE as usize..][..BLOCK as usize]);
    assert!(
        !seeder.log_text().contains("already connected to this peer"),
        "{}",
        seeder.log_text()
    );
    assert_alive(&mut seeder);
    honest_download(&fx, port, "honest");
}

/// As a scripted peer that was dialed: read the handshake, answer with ours
/// (peer id from `tag`), a bitfield claiming all `n` pieces when given, and
/// an unchoke. False when the connection failed.
fn answer_handshake(s: &mut TcpStream, fx_hash: &[u8; 20], tag: &str, all_of: Option<u32>) -> bool {
    let mut hs = [0u8; 68];
    if s.read_exact(&mut hs).is_err() {
        return false;
    }
    let mut out = handshake_bytes(fx_hash, &test_id(tag));
    if let Some(n) = all_of {
        let len = n.div_ceil(8) as usize;
        let mut bf = vec![0xffu8; len];
        bf[len - 1] = 0xff << (len * 8 - n as usize); // spare bits clear
        out.extend(frame(5, &bf));
    }
    out.extend(frame(1, &[])); // unchoke
    s.write_all(&out).is_ok()
}

/// A peer the downloader dials: handshake, claims every piece, unchokes;
/// on the first requests it sends half a block and hangs up. Counts the
/// requests it got.
fn hang_up_mid_block(listener: TcpListener, fx_hash: [u8; 20], n: u32, got: Arc<AtomicUsize>) {
    for conn in listener.incoming() {
        let Ok(mut s) = conn else { return };
        if !answer_handshake(&mut s, &fx_hash, "hangup", Some(n)) {
            continue;
        }
        while let Some(f) = read_frame(&mut s) {
            if f.first() == Some(&6) {
                got.fetch_add(1, Ordering::SeqCst);
                let mut half = (9 + BLOCK).to_be_bytes().to_vec();
                half.push(7);
                half.extend_from_slice(&f[1..9]);
                half.extend(std::iter::repeat_n(0u8, BLOCK as usize / 2));
                let _ = s.write_all(&half);
                break;
            }
        }
        drop(s); // hang up mid-block
    }
}

/// A scripted bad peer (`script`, run on its own thread with a listener on
/// a free loopback port) and an honest seeder limited to `seed_rate`; a
/// verbose download from both that must complete with the right data.
/// Returns the leecher's log and the bad peer's port.
fn download_beside_bad_peer(
    fx: &Fixture,
    seed_rate: &str,
    script: impl FnOnce(TcpListener) + Send + 'static,
) -> (String, String) {
    let (_seeder, sport) = start_seeder(fx, &["--upload-limit", seed_rate]);
    let bad = TcpListener::bind("127.0.0.1:0").unwrap();
    let bad_port = bad.local_addr().unwrap().port().to_string();
    std::thread::spawn(move || script(bad));
    let sport = sport.to_string();
    // The scripted peers speak plaintext only: dialing them with MSE first
    // (the default) would spend the first connection on the fallback
    // (tests/encryption.rs) while the honest seeder delivers.
    let (mut l, out) = start_download(
        fx,
        "out",
        &[
            "--peer",
            &bad_port,
            "--peer",
            &sport,
            "--port",
            "0",
            "--encryption",
            "off",
            "--verbose",
        ],
    );
    assert_eq!(l.wait(Duration::from_secs(60)), 0, "log:\n{}", l.log_text());
    assert_same_files(&fx.seed_dir, &out, FILES);
    (l.log_text(), bad_port)
}

#[test]
fn a_peer_hanging_up_mid_block_does_not_stall_the_download() {
    let fx = fixture("adv-hangup");
    let got = Arc::new(AtomicUsize::new(0));
    let (h, n, g) = (fx.info_hash, fx.num_pieces, got.clone());
    let start = Instant::now();
    let (log, bad_port) =
        download_beside_bad_peer(&fx, "2M", move |bad| hang_up_mid_block(bad, h, n, g));
    let took = start.elapsed();
    assert!(
        got.load(Ordering::SeqCst) > 0,
        "the bad peer got no requests"
    );
    // It hung up with our requests unread: EOF or a reset.
    let dropped = format!("127.0.0.1:{bad_port} dropped: ");
    assert!(
        log.contains(&format!("{dropped}peer closed the connection"))
            || log.contains(&format!("{dropped}read failed: connection reset")),
        "{log}"
    );
    // Its requests went back to the picker at once, not after the 20 s
    // request time-out.
    assert!(took < Duration::from_secs(15), "took {took:?}:\n{log}");
    assert!(!log.contains("snubbed"), "{log}");
}

/// A peer the downloader dials: handshake, no pieces, and a stream of
/// blocks nobody asked for (garbage, one per piece).
fn unrequested_blocks(listener: TcpListener, fx_hash: [u8; 20], n: u32) {
    for conn in listener.incoming() {
        let Ok(mut s) = conn else { return };
        std::thread::spawn(move || {
            if !answer_handshake(&mut s, &fx_hash, "unasked", None) {
                return;
            }
            for round in 0..3u32 {
                for p in 0..n {
                    let mut m = Vec::new();
                    m.extend_from_slice(&p.to_be_bytes());
                    m.extend_from_slice(&((round % 2) * BLOCK).to_be_bytes());
                    m.extend(std::iter::repeat_n(0xAB, BLOCK as usize));
                    if s.write_all(&frame(7, &m)).is_err() {
                        return;
                    }
                }
            }
            // Stay connected, quietly.
            let mut sink = [0u8; 4096];
            while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
        });
    }
}

#[test]
fn unrequested_blocks_are_dropped_and_cannot_frame_honest_peers() {
    let fx = fixture("adv-unasked");
    // A slow honest seeder, so the garbage arrives before most pieces.
    let (h, n) = (fx.info_hash, fx.num_pieces);
    let (log, _) = download_beside_bad_peer(&fx, "1M", move |bad| unrequested_blocks(bad, h, n));
    assert!(log.contains("sent a block we did not ask it for"), "{log}");
    assert!(!log.contains("failed its hash check"), "{log}");
    assert!(!log.contains("banning"), "{log}");
}

/// A TCP relay on a free loopback port that forwards every connection to
/// `to`, as a NAT's hairpin would; counts the connections it relays.
fn relay(to: u16, count: Arc<AtomicUsize>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(a) = conn else { return };
            count.fetch_add(1, Ordering::SeqCst);
            let Ok(b) = TcpStream::connect(("127.0.0.1", to)) else {
                continue;
            };
            for (mut from, mut to) in [(a.try_clone().unwrap(), b.try_clone().unwrap()), (b, a)] {
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from, &mut to);
                    let _ = to.shutdown(std::net::Shutdown::Write);
                });
            }
        }
    });
    port
}

#[test]
fn dialing_ourselves_through_a_relay_is_noticed_and_not_repeated() {
    let fx = fixture("adv-self");
    let port = free_port();
    let count = Arc::new(AtomicUsize::new(0));
    let relay_port = relay(port, count.clone());
    let (relay, own) = (relay_port.to_string(), port.to_string());
    let (mut l, _) = start_download(
        &fx,
        "self",
        &[
            "--peer",
            &relay,
            "--port",
            &own,
            "--bind",
            "127.0.0.1",
            "--verbose",
        ],
    );
    // Both ends see their own id: the accepting side answers with its
    // handshake before closing, so the dialing side knows too.
    l.wait_log("connected to ourselves", Duration::from_secs(10));
    l.wait_log(
        &format!("127.0.0.1:{relay_port} is ourselves; not dialing it again"),
        Duration::from_secs(5),
    );
    // A command-line peer that merely hung up would be dialed again after
    // 2 s, then 4 s: this one never is.
    std::thread::sleep(Duration::from_secs(7));
    assert_eq!(count.load(Ordering::SeqCst), 1, "log:\n{}", l.log_text());
    assert_alive(&mut l);
    l.terminate(Duration::from_secs(10));
}

#[test]
fn a_file_truncated_while_seeding_fails_reads_and_never_sends_zeros() {
    let fx = fixture("adv-trunc");
    let (mut seeder, port) = start_seeder(&fx, &[]);
    let (mut s, _) = connect_seeder(port, &fx, &test_id("trunc"));
    get_unchoked(&mut s);
    // Served whole before the truncation.
    s.write_all(&request(60, 0, BLOCK)).unwrap();
    let piece = wait_for_msg(&mut s, 7);
    assert!(piece[9..] == fx.data[60 * PIECE as usize..][..BLOCK as usize]);
    // Cut the file to 1 MB under the running seeder (piece 61 starts at
    // 1,998,848), then ask for a block past the new end that was never read
    // (piece 60 is in the read cache, read whole while the file was intact):
    // the read fails, the connection closes, and no `piece` message (zeros
    // or otherwise) comes first.
    std::fs::OpenOptions::new()
        .write(true)
        .open(fx.seed_dir.join("file.bin"))
        .unwrap()
        .set_len(1_000_000)
        .unwrap();
    s.write_all(&request(61, 0, BLOCK)).unwrap();
    loop {
        match read_frame(&mut s) {
            None => break,
            Some(f) => assert_ne!(f.first(), Some(&7), "a block was sent from a cut file"),
        }
    }
    seeder.wait_log("cannot read piece 61", Duration::from_secs(5));
    // What is still on disk is still served, on a new connection.
    let (mut s2, _) = connect_seeder(port, &fx, &test_id("trunc2"));
    get_unchoked(&mut s2);
    s2.write_all(&request(2, 0, BLOCK)).unwrap();
    let piece = wait_for_msg(&mut s2, 7);
    assert!(piece[9..] == fx.data[2 * PIECE as usize..][..BLOCK as usize]);
    assert_alive(&mut seeder);
}

/// A peer the downloader dials that frames honest peers: claims every
/// piece, unchokes, answers the first requested block of two different
/// pieces with garbage, then chokes and stays connected.
fn framer(listener: TcpListener, fx_hash: [u8; 20], n: u32) {
    for conn in listener.incoming() {
        let Ok(mut s) = conn else { return };
        std::thread::spawn(move || {
            if !answer_handshake(&mut s, &fx_hash, "framer", Some(n)) {
                return;
            }
            let mut lied: Vec<u32> = Vec::new();
            while lied.len() < 2 {
                let Some(f) = read_frame(&mut s) else { return };
                if f.first() != Some(&6) || f.len() != 13 {
                    continue;
                }
                let piece = u32::from_be_bytes(f[1..5].try_into().unwrap());
                if lied.contains(&piece) {
                    continue;
                }
                lied.push(piece);
                let len = u32::from_be_bytes(f[9..13].try_into().unwrap());
                let mut m = f[1..9].to_vec();
                m.extend(std::iter::repeat_n(0xEE, len as usize));
                if s.write_all(&frame(7, &m)).is_err() {
                    return;
                }
            }
            let _ = s.write_all(&frame(0, &[]));
            let mut sink = [0u8; 4096];
            while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
        });
    }
}

#[test]
fn a_liar_framing_an_honest_seeder_is_banned_and_the_seeder_is_not() {
    let fx = fixture("adv-framer");
    let (h, n) = (fx.info_hash, fx.num_pieces);
    let (log, bad_port) = download_beside_bad_peer(&fx, "1M", move |bad| framer(bad, h, n));
    assert!(log.contains("failed its hash check"), "{log}");
    assert!(
        log.contains("banning peer#")
            && log.contains(&format!("127.0.0.1:{bad_port} for sending corrupt data")),
        "{log}"
    );
    // Only the liar: the honest seeder is never charged.
    assert_eq!(log.matches("for sending corrupt data").count(), 1, "{log}");
}

#[test]
fn idle_connections_filling_every_slot_make_room_for_an_honest_leecher() {
    let fx = fixture("adv-slots");
    let (mut seeder, port) = start_seeder(&fx, &[]);
    // 50 handshaken connections from one address that only keep alive:
    // every slot (the default cap is 50).
    let mut squatters: Vec<TcpStream> = (0..50)
        .map(|i| connect_seeder(port, &fx, &test_id(&format!("slot{i}"))).0)
        .collect();
    for s in &mut squatters {
        s.write_all(&[0, 0, 0, 0]).unwrap();
    }
    // Once they are a few seconds old and still useless, an honest leecher
    // gets a slot (it used to be refused: "connection limit reached").
    std::thread::sleep(Duration::from_secs(6));
    honest_download(&fx, port, "honest");
    seeder.wait_log("closed to make room", Duration::from_secs(2));
    assert_alive(&mut seeder);
}
