//! Two torrents wired back to back through their buffers (no sockets): the
//! whole protocol path, deterministic and fast.

use super::*;
use crate::ids::PieceIndex as P;
use crate::storage::{Disk, FileSlot, Layout, MemStorage, OpenMode, Storage};
use sha1::{Digest, Sha1};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::wire::tests::Readv as Socket;

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pm-torrent-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

struct Fixture {
    geometry: Geometry,
    hashes: Vec<[u8; 20]>,
    data: Vec<u8>,
    layout: Layout,
}

fn fixture(total: u64, piece_len: u32) -> Fixture {
    let geometry = Geometry::new(total, piece_len).unwrap();
    let data: Vec<u8> = (0..total).map(|i| (i * 13 % 253) as u8).collect();
    let hashes = (0..geometry.num_pieces)
        .map(|p| {
            let o = geometry.piece_offset(P(p)) as usize;
            Sha1::digest(&data[o..o + geometry.piece_size(P(p)) as usize]).into()
        })
        .collect();
    let half = total / 3;
    let layout = Layout::new(vec![
        FileSlot {
            path: "x/a".into(),
            offset: 0,
            len: half,
            executable: false,
        },
        FileSlot {
            path: "x/b".into(),
            offset: half,
            len: total - half,
            executable: false,
        },
    ]);
    Fixture {
        geometry,
        hashes,
        data,
        layout,
    }
}

/// A torrent core and the storage its jobs are carried out on (what the
/// event loop's slot holds).
struct Node<S: Storage = Disk> {
    t: Torrent,
    store: S,
}

impl<S: Storage> std::ops::Deref for Node<S> {
    type Target = Torrent;
    fn deref(&self) -> &Torrent {
        &self.t
    }
}

impl<S: Storage> std::ops::DerefMut for Node<S> {
    fn deref_mut(&mut self) -> &mut Torrent {
        &mut self.t
    }
}

impl<S: Storage> Node<S> {
    /// Write what is verified, as the loop does.
    fn flush(&mut self, max: usize, now: Instant) -> Result<usize, StorageError> {
        jobs::write_pending(&mut self.t, &self.store, max, now)
    }

    /// Serve a peer and do the reads that takes, as the loop does.
    fn serve(&mut self, key: PeerKey) -> Result<(), PeerError> {
        let token = self.t.peers.get(key).map(|p| p.token);
        self.t.serve(key)?;
        jobs::read_pending(&mut self.t, &self.store, 64);
        match self.t.to_close.iter().position(|(t, _)| Some(*t) == token) {
            Some(i) => Err(self.t.to_close.remove(i).1),
            None => Ok(()),
        }
    }
}

fn torrent(f: &Fixture, dir: &Path, seed: bool, id: u8, now: Instant) -> Node {
    torrent_with_cache(f, dir, seed, id, now, 256 * 1024)
}

fn torrent_with_cache(
    f: &Fixture,
    dir: &Path,
    seed: bool,
    id: u8,
    now: Instant,
    cache_bytes: usize,
) -> Node {
    let mode = if seed {
        OpenMode::ReadOnly
    } else {
        OpenMode::Create
    };
    if seed {
        std::fs::create_dir_all(dir.join("x")).unwrap();
        let half = f.layout.files[1].offset as usize;
        std::fs::write(dir.join("x/a"), &f.data[..half]).unwrap();
        std::fs::write(dir.join("x/b"), &f.data[half..]).unwrap();
    }
    let disk = Disk::open(dir, f.layout.clone(), mode).unwrap();
    let have = crate::storage::recheck(&disk, &f.geometry, &f.hashes);
    assert_eq!(have.is_full(), seed);
    let parts = TorrentParts {
        info_hash: [9; 20],
        our_id: [id; 20],
        geometry: f.geometry,
        hashes: f.hashes.clone(),
        have,
        metadata: None,
        private: false,
    };
    let t = Torrent::new(
        parts,
        Config {
            cache_bytes,
            ..Config::default()
        },
        id as u64,
        now,
    );
    Node { t, store: disk }
}

/// A peer's handshake bytes; `ext` sets the BEP 10 bit.
fn handshake(info_hash: [u8; 20], peer_id: [u8; 20], ext: bool) -> Vec<u8> {
    let mut reserved = [0; 8];
    if ext {
        reserved[5] = 0x10;
    }
    let mut out = Vec::new();
    Handshake {
        reserved,
        info_hash,
        peer_id,
    }
    .encode(&mut out);
    out
}

/// Hand `bytes` from the peer `k` to `t`, a bufferful at a time.
fn feed(t: &mut Torrent, k: PeerKey, bytes: &[u8], now: Instant) -> Result<(), PeerError> {
    // As the loop does: read what fits, hand it over, until all is in.
    let mut src = bytes;
    loop {
        t.read_peer_from(k, &mut src).unwrap().unwrap();
        t.on_readable(k, now)?;
        if src.is_empty() {
            return Ok(());
        }
    }
}

/// Move every queued byte from `from`'s peer `fk` into `to`'s peer `tk`.
fn pump<A: Storage, B: Storage>(
    from: &mut Node<A>,
    fk: PeerKey,
    to: &mut Node<B>,
    tk: PeerKey,
    now: Instant,
) -> usize {
    pump_counting(from, fk, to, tk, now).0
}

/// [`pump`], in reads of at most 50,000 bytes (`readv` semantics); also
/// how many reads left a block being read in place.
fn pump_counting<A: Storage, B: Storage>(
    from: &mut Node<A>,
    fk: PeerKey,
    to: &mut Node<B>,
    tk: PeerKey,
    now: Instant,
) -> (usize, usize) {
    let mut wire = Vec::new();
    // Serve queued requests until nothing more comes out.
    loop {
        from.serve(fk).unwrap();
        let n = from.peers[fk].send.write_to(&mut wire).unwrap();
        if n == 0 {
            break;
        }
    }
    let (mut moved, mut in_place) = (0, 0);
    let mut src = Socket {
        bytes: &wire[..],
        max: 50_000,
    };
    while !src.bytes.is_empty() {
        if to.peers[tk].recv.is_full() {
            to.on_readable(tk, now).unwrap();
            continue;
        }
        moved += to.read_peer_from(tk, &mut src).unwrap().unwrap();
        to.on_readable(tk, now).unwrap();
        in_place += usize::from(to.peers[tk].direct.is_some());
    }
    (moved, in_place)
}

/// Pump both ways (the seeder choking as usual, the leecher writing what
/// verifies) until the leecher is done, 10 ms a turn; the time then.
fn exchange_until_done<A: Storage, B: Storage>(
    leecher: &mut Node<A>,
    lk: PeerKey,
    seeder: &mut Node<B>,
    sk: PeerKey,
    mut now: Instant,
) -> Instant {
    let mut turns = 0;
    while !leecher.is_done() {
        turns += 1;
        assert!(turns < 1000, "no progress: {:?}", leecher.status());
        pump(leecher, lk, seeder, sk, now);
        seeder.choke_round(now);
        pump(seeder, sk, leecher, lk, now);
        leecher.flush(usize::MAX, now).unwrap();
        now += Duration::from_millis(10);
    }
    now
}

/// A torrent core on memory: no files at all.
fn mem_torrent(
    f: &Fixture,
    seed: bool,
    id: u8,
    cache_bytes: usize,
    now: Instant,
) -> Node<MemStorage> {
    let store = if seed {
        MemStorage::with(f.data.clone())
    } else {
        MemStorage::default()
    };
    let mut t = Torrent::new_checking(
        TorrentParts {
            info_hash: [9; 20],
            our_id: [id; 20],
            geometry: f.geometry,
            hashes: f.hashes.clone(),
            have: Bitfield::new(f.geometry.num_pieces),
            metadata: None,
            private: false,
        },
        Config {
            cache_bytes,
            ..Config::default()
        },
        id as u64,
        now,
    );
    // The check runs as jobs too: one piece at a time, as many slices as
    // it takes.
    let mut buf = Vec::new();
    let mut slices = 0;
    while !jobs::check_slice(
        &mut t,
        &store,
        &mut buf,
        1,
        now + Duration::from_secs(60),
        now,
    ) {
        slices += 1;
    }
    assert_eq!(slices, f.geometry.num_pieces, "one piece per slice");
    assert_eq!(t.is_done(), seed);
    Node { t, store }
}

#[test]
fn a_torrent_core_runs_on_storage_jobs_with_no_files() {
    // Both ends on memory, with a cache too small to keep what is read
    // (`--cache 0`): every block served goes through a read job.
    let f = fixture(20 * 32768 + 1000, 32768);
    let mut now = Instant::now();
    let mut seeder = mem_torrent(&f, true, 1, 0, now);
    let mut leecher = mem_torrent(&f, false, 2, 0, now);
    let sk = seeder.add_peer(ConnToken(1), "127.0.0.1:1".parse().unwrap(), false, now);
    let lk = leecher.add_peer(ConnToken(1), "127.0.0.1:2".parse().unwrap(), true, now);
    let mut turns = 0;
    while !leecher.is_done() {
        turns += 1;
        assert!(turns < 1000, "no progress: {:?}", leecher.status());
        pump(&mut leecher, lk, &mut seeder, sk, now);
        seeder.choke_round(now);
        pump(&mut seeder, sk, &mut leecher, lk, now);
        // Writes wait for the shell: nothing is on "disk" until it runs
        // the jobs.
        let before = leecher.store.bytes.borrow().len();
        if leecher.has_pending_writes() {
            assert_eq!(before, leecher.store.bytes.borrow().len());
        }
        leecher.flush(usize::MAX, now).unwrap();
        now += Duration::from_millis(10);
    }
    assert!(
        *leecher.store.bytes.borrow() == f.data,
        "downloaded bytes differ"
    );
    assert_eq!(seeder.totals.uploaded, f.geometry.total_len);
    assert!(!seeder.has_read_jobs(), "every read job was carried out");
    // The seeder read every byte it served, and not much more (read units).
    assert!(seeder.cache_stats().bytes_read_disk >= f.geometry.total_len);
}

#[test]
fn a_read_that_fails_closes_the_peers_waiting_for_it() {
    let f = fixture(8 * 32768, 32768);
    let now = Instant::now();
    let mut seeder = mem_torrent(&f, true, 1, 0, now);
    // The data goes away after the check (a file cut short under us).
    seeder.store.bytes.borrow_mut().truncate(32768);
    let k = seeder.add_peer(ConnToken(1), "127.0.0.1:1".parse().unwrap(), false, now);
    let mut bytes = handshake([9; 20], [6; 20], false);
    Message::Interested.encode(&mut bytes);
    feed(&mut seeder, k, &bytes, now).unwrap();
    seeder.choke_round(now);
    let mut reqs = Vec::new();
    Message::Request {
        piece: 0,
        begin: 0,
        len: 16384,
    }
    .encode(&mut reqs);
    Message::Request {
        piece: 5,
        begin: 0,
        len: 16384,
    }
    .encode(&mut reqs);
    feed(&mut seeder, k, &reqs, now).unwrap();
    assert!(seeder.has_read_jobs(), "a miss is a job, not a read");
    assert!(matches!(seeder.serve(k), Err(PeerError::Storage)));
    assert!(seeder.storage_error.is_some());
    // Piece 0 was served before piece 5's read failed.
    assert_eq!(seeder.totals.uploaded, 16384);
}

#[test]
fn two_torrents_exchange_a_whole_torrent_through_their_buffers() {
    let f = fixture(300_000, 32768);
    let (sd, ld) = (temp_dir("seed"), temp_dir("leech"));
    let mut now = Instant::now();
    let mut seeder = torrent(&f, &sd, true, 1, now);
    let mut leecher = torrent(&f, &ld, false, 2, now);
    let sk = seeder.add_peer(ConnToken(1), "127.0.0.1:1".parse().unwrap(), false, now);
    let lk = leecher.add_peer(ConnToken(1), "127.0.0.1:2".parse().unwrap(), true, now);
    now = exchange_until_done(&mut leecher, lk, &mut seeder, sk, now);
    let mut got = std::fs::read(ld.join("x/a")).unwrap();
    got.extend(std::fs::read(ld.join("x/b")).unwrap());
    assert!(got == f.data, "downloaded bytes differ");
    assert_eq!(leecher.totals.downloaded, f.geometry.total_len);
    assert_eq!(
        seeder.totals.uploaded, f.geometry.total_len,
        "no block was sent twice"
    );
    assert_eq!(leecher.totals.hash_failures, 0);
    // Both are seeds now: the next tick drops the connection.
    let mut close = Vec::new();
    seeder.tick(now, Duration::from_secs(1), &mut close);
    pump(&mut leecher, lk, &mut seeder, sk, now);
    seeder.tick(now, Duration::from_secs(1), &mut close);
    assert!(
        close
            .iter()
            .any(|(tok, why)| *tok == ConnToken(1) && *why == PeerError::BothSeeds),
        "{close:?}"
    );
    std::fs::remove_dir_all(sd).unwrap();
    std::fs::remove_dir_all(ld).unwrap();
}

#[test]
fn wrong_info_hash_and_own_id_are_refused() {
    let f = fixture(50_000, 16384);
    let dir = temp_dir("refuse");
    let now = Instant::now();
    let mut t = torrent(&f, &dir, false, 3, now);
    let k = t.add_peer(ConnToken(7), "127.0.0.1:3".parse().unwrap(), false, now);
    let mut hs = Vec::new();
    hs.extend(handshake([8; 20], [4; 20], false));
    t.read_peer_from(k, &mut &hs[..]).unwrap().unwrap();
    assert_eq!(t.on_readable(k, now), Err(PeerError::WrongInfoHash));
    let k = t.add_peer(ConnToken(8), "127.0.0.1:4".parse().unwrap(), false, now);
    let mut hs = Vec::new();
    hs.extend(handshake([9; 20], [3; 20], false));
    t.read_peer_from(k, &mut &hs[..]).unwrap().unwrap();
    assert_eq!(t.on_readable(k, now), Err(PeerError::OwnPeerId));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn requests_out_of_range_are_ignored_and_floods_close() {
    let f = fixture(50_000, 16384);
    let dir = temp_dir("flood");
    let now = Instant::now();
    let mut t = torrent(&f, &dir, true, 5, now);
    let k = t.add_peer(ConnToken(1), "127.0.0.1:5".parse().unwrap(), false, now);
    let mut bytes = Vec::new();
    bytes.extend(handshake([9; 20], [6; 20], false));
    Message::Interested.encode(&mut bytes);
    feed(&mut t, k, &bytes, now).unwrap();
    t.choke_round(now);
    assert!(
        !t.peers[k].am_choking,
        "an interested peer gets a free slot"
    );
    // Wrapping, oversized, out-of-range: ignored, nothing queued.
    let mut bad = Vec::new();
    for (piece, begin, len) in [(0, u32::MAX, 2), (0, 0, 1 << 20), (99, 0, 16384), (0, 0, 0)] {
        Message::Request { piece, begin, len }.encode(&mut bad);
    }
    feed(&mut t, k, &bad, now).unwrap();
    assert!(t.peers[k].requests.is_empty());
    // A flood of valid requests without reading the answers closes it.
    let mut flood = Vec::new();
    for _ in 0..t.cfg.max_peer_requests + 100 {
        Message::Request {
            piece: 0,
            begin: 0,
            len: 16384,
        }
        .encode(&mut flood);
    }
    let mut result = Ok(());
    let mut src = &flood[..];
    while !src.is_empty() && result.is_ok() {
        t.read_peer_from(k, &mut src).unwrap().unwrap();
        result = t.on_readable(k, now);
    }
    assert_eq!(result, Err(PeerError::RequestFlood));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn extension_handshake_offers_reqq_and_may_precede_the_bitfield() {
    let f = fixture(50_000, 16384);
    let dir = temp_dir("ltep");
    let now = Instant::now();
    let mut t = torrent(&f, &dir, false, 7, now);
    let k = t.add_peer(ConnToken(1), "127.0.0.1:7".parse().unwrap(), false, now);
    // Transmission's order: handshake, extension handshake, bitfield.
    let mut bytes = Vec::new();
    bytes.extend(handshake([9; 20], [8; 20], true));
    let ext = b"\x00d1:md6:ut_pexi1ee4:reqqi512ee";
    Message::Unknown {
        id: wire::EXTENDED_ID,
        payload: ext,
    }
    .encode(&mut bytes);
    Message::Bitfield(&[0xf0]).encode(&mut bytes);
    assert_eq!(t.peers[k].max_requests, crate::peer::DEFAULT_REQQ);
    feed(&mut t, k, &bytes, now).unwrap();
    assert!(t.peers[k].has.is_full());
    // Its reqq, less one, caps how many requests we keep in flight to it
    // (Transmission 3.00 silently drops the reqq-th).
    assert_eq!(t.peers[k].max_requests, 511);
    // Our answer: a handshake with the BEP 10 bit, then our limit.
    let mut out = Vec::new();
    t.peers[k].send.write_to(&mut out).unwrap();
    let hs = Handshake::decode(&out).unwrap().unwrap();
    assert!(hs.supports_extensions());
    let (msg, _) = wire::decode_frame(&out[wire::HANDSHAKE_LEN..], wire::MAX_FRAME)
        .unwrap()
        .unwrap();
    let want = format!(
        "\x00d1:md6:ut_pexi1ee4:reqqi{}e1:v{}:piecemeal/{}e",
        t.cfg.max_peer_requests,
        "piecemeal/".len() + env!("CARGO_PKG_VERSION").len(),
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(
        msg,
        Message::Unknown {
            id: wire::EXTENDED_ID,
            payload: want.as_bytes()
        }
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn peers_without_the_extension_bit_get_no_extension_handshake() {
    let f = fixture(50_000, 16384);
    let dir = temp_dir("no-ltep");
    let now = Instant::now();
    let mut t = torrent(&f, &dir, false, 9, now);
    let k = t.add_peer(ConnToken(1), "127.0.0.1:9".parse().unwrap(), false, now);
    let mut bytes = Vec::new();
    bytes.extend(handshake([9; 20], [8; 20], false));
    feed(&mut t, k, &bytes, now).unwrap();
    let mut out = Vec::new();
    t.peers[k].send.write_to(&mut out).unwrap();
    assert_eq!(
        out.len(),
        wire::HANDSHAKE_LEN,
        "a handshake and nothing else"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_huge_request_limit_does_not_wrap_and_close_choked_requesters() {
    let f = fixture(50_000, 16384);
    let dir = temp_dir("huge-reqq");
    let now = Instant::now();
    let mut t = torrent(&f, &dir, true, 9, now);
    // 2^30 * 4 wrapped to 0 in `u32` before: the first request while
    // choked closed the connection as a flood.
    t.cfg.max_peer_requests = 1 << 30;
    let k = t.add_peer(ConnToken(1), "127.0.0.1:9".parse().unwrap(), false, now);
    let mut bytes = Vec::new();
    bytes.extend(handshake([9; 20], [8; 20], false));
    for _ in 0..3 {
        Message::Request {
            piece: 0,
            begin: 0,
            len: 16384,
        }
        .encode(&mut bytes);
    }
    t.read_peer_from(k, &mut &bytes[..]).unwrap().unwrap();
    assert!(t.peers[k].am_choking);
    t.on_readable(k, now).unwrap();
    assert_eq!(t.peers[k].choked_requests, 3);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn pieces_holding_a_banned_peers_blocks_charge_no_one_else() {
    let f = fixture(4 * 32768, 32768);
    let dir = temp_dir("banned-blocks");
    let now = Instant::now();
    let mut t = torrent(&f, &dir, false, 7, now);
    let ip = std::net::IpAddr::from([127, 0, 0, 1]);
    let (bad, honest, other) = ((ip, [0xbb; 20]), (ip, [0x11; 20]), (ip, [0x22; 20]));
    let sent = |t: &mut Torrent, piece: u32, who: &[crate::blame::PeerId]| {
        for (j, id) in who.iter().enumerate() {
            t.blame.on_block(P(piece), j as u32, 2, *id);
        }
    };
    // The bad peer alone spoiled piece 0: banned at once.
    sent(&mut t, 0, &[bad, bad]);
    t.on_piece_failed(P(0));
    assert!(t.banned_ids.contains(&bad));
    // Pieces it had started and honest peers finished fail too: that is
    // the banned peer's doing, not theirs.
    for piece in 1..3 {
        sent(&mut t, piece, &[bad, honest]);
        t.on_piece_failed(P(piece));
    }
    assert!(!t.banned_ids.contains(&honest));
    // Without a banned sender, a shared bad piece charges nobody yet: it is
    // fetched again from a single peer and compared.
    sent(&mut t, 3, &[honest, other]);
    t.on_piece_failed(P(3));
    assert!(!t.banned_ids.contains(&honest) && !t.banned_ids.contains(&other));
    assert!(t.blame.is_suspect(P(3)));
    std::fs::remove_dir_all(dir).unwrap();
}

/// A leecher torrent of 64 pieces of 32 KiB whose peer `k` has everything
/// and has unchoked us; our first requests are queued in its send buffer.
fn unchoked_leecher(name: &str, now: Instant) -> (Node, PeerKey, PathBuf) {
    let f = fixture(64 * 32768, 32768);
    let dir = temp_dir(name);
    // Room for every piece at once: the window, not the cache, limits.
    let mut t = torrent_with_cache(&f, &dir, false, 5, now, 64 * 32768);
    let k = t.add_peer(ConnToken(1), "127.0.0.1:5".parse().unwrap(), false, now);
    let mut bytes = handshake([9; 20], [6; 20], false);
    Message::Bitfield(&[0xff; 8]).encode(&mut bytes);
    Message::Unchoke.encode(&mut bytes);
    feed(&mut t, k, &bytes, now).unwrap();
    (t, k, dir)
}

/// Every frame after the handshake in the peer's send buffer.
fn sent_frames(t: &Torrent, k: PeerKey) -> Vec<String> {
    let mut buf = &t.peers[k].send.pending()[wire::HANDSHAKE_LEN..];
    let mut out = Vec::new();
    while let Some((m, n)) = wire::decode_frame(buf, wire::MAX_FRAME).unwrap() {
        out.push(format!("{m:?}"));
        buf = &buf[n..];
    }
    out
}

#[test]
fn a_window_that_shrinks_cancels_what_it_no_longer_covers() {
    let now = Instant::now();
    let (mut t, k, dir) = unchoked_leecher("shrink", now);
    assert_eq!(t.peers[k].inflight.len(), t.cfg.pipeline_start);
    // Nothing arrives for a second and the floor drops to 4: the 28 newest
    // requests go back to the picker, each with a cancel.
    t.cfg.pipeline_start = 4;
    let later = now + Duration::from_secs(1);
    t.tick(later, Duration::from_secs(1), &mut Vec::new());
    assert_eq!(t.peers[k].inflight.len(), 4);
    let frames = sent_frames(&t, k);
    assert_eq!(
        frames.iter().filter(|m| m.starts_with("Cancel")).count(),
        28
    );
    // The oldest four are the ones kept.
    let kept: Vec<String> = t.peers[k]
        .inflight
        .iter()
        .map(|r| {
            let (piece, begin, len) = (r.block.piece.0, r.block.begin, r.block.len);
            format!("{:?}", Message::Request { piece, begin, len })
        })
        .collect();
    let first: Vec<&String> = frames
        .iter()
        .filter(|m| m.starts_with("Request"))
        .take(4)
        .collect();
    assert_eq!(kept.iter().collect::<Vec<_>>(), first);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn unrequested_blocks_do_not_count_towards_the_rate() {
    let now = Instant::now();
    let (mut t, k, dir) = unchoked_leecher("unasked-rate", now);
    // A block of the last piece, which we have not asked for.
    let data = vec![0u8; 16384];
    let mut bytes = Vec::new();
    Message::Piece {
        piece: 63,
        begin: 16384,
        data: &data,
    }
    .encode(&mut bytes);
    feed(&mut t, k, &bytes, now).unwrap();
    assert_eq!(t.peers[k].down.total(), 0);
    assert_eq!(t.totals.wasted, 16384);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn thousands_of_stray_cancels_a_second_close_the_connection() {
    let f = fixture(50_000, 16384);
    let dir = temp_dir("cancels");
    let now = Instant::now();
    let mut t = torrent(&f, &dir, true, 9, now);
    let k = t.add_peer(ConnToken(1), "127.0.0.1:9".parse().unwrap(), false, now);
    let mut bytes = handshake([9; 20], [8; 20], false);
    feed(&mut t, k, &bytes, now).unwrap();
    let limit = 4 * t.cfg.max_peer_requests;
    let cancel = |n: usize| {
        let mut out = Vec::new();
        for _ in 0..n {
            Message::Cancel {
                piece: 0,
                begin: 0,
                len: 16384,
            }
            .encode(&mut out);
        }
        out
    };
    let feed = |t: &mut Torrent, bytes: &[u8]| {
        let mut src = bytes;
        let mut result = Ok(());
        while !src.is_empty() && result.is_ok() {
            t.read_peer_from(k, &mut src).unwrap().unwrap();
            result = t.on_readable(k, now);
        }
        result
    };
    // Up to the limit within a second is tolerated, and the count starts
    // again every second.
    assert_eq!(feed(&mut t, &cancel(limit)), Ok(()));
    t.tick(
        now + Duration::from_secs(1),
        Duration::from_secs(1),
        &mut Vec::new(),
    );
    assert_eq!(feed(&mut t, &cancel(limit)), Ok(()));
    bytes = cancel(1);
    assert_eq!(feed(&mut t, &bytes), Err(PeerError::CancelFlood));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_ban_starts_again_the_open_pieces_holding_the_banned_peers_blocks() {
    let f = fixture(4 * 32768, 32768);
    let dir = temp_dir("ban-reset");
    let now = Instant::now();
    let mut t = torrent(&f, &dir, false, 7, now);
    let ip = std::net::IpAddr::from([127, 0, 0, 1]);
    let (bad, honest) = ((ip, [0xbb; 20]), (ip, [0x11; 20]));
    t.blame.on_block(P(1), 0, 2, bad);
    t.blame.on_block(P(1), 1, 2, honest);
    t.blame.on_block(P(2), 0, 2, honest);
    t.ban(bad);
    assert!(
        t.blame.senders(P(1)).is_empty(),
        "piece 1 kept the banned peer's blocks"
    );
    assert_eq!(t.blame.senders(P(2)), &[honest]);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_late_or_repeated_bitfield_is_merged_not_refused() {
    // aria2's order: handshake, extension handshake, `have`s for pieces it
    // verified meanwhile, keep-alives, and only then its bitfield.
    let f = fixture(64 * 32768, 32768);
    let dir = temp_dir("late-bitfield");
    let now = Instant::now();
    let mut t = torrent(&f, &dir, false, 5, now);
    let k = t.add_peer(ConnToken(1), "127.0.0.1:5".parse().unwrap(), false, now);
    let mut bytes = handshake([9; 20], [6; 20], true);
    Message::Unknown {
        id: wire::EXTENDED_ID,
        payload: b"\x00d1:md11:ut_metadatai2ee4:reqqi255ee",
    }
    .encode(&mut bytes);
    Message::Have { piece: 63 }.encode(&mut bytes);
    Message::KeepAlive.encode(&mut bytes);
    Message::Bitfield(&[0xf0, 0, 0, 0, 0, 0, 0, 0]).encode(&mut bytes);
    Message::Bitfield(&[0x0f, 0, 0, 0, 0, 0, 0, 0]).encode(&mut bytes);
    feed(&mut t, k, &bytes, now).unwrap();
    let has: Vec<u32> = t.peers[k].has.iter_set().map(u32::from).collect();
    assert_eq!(has, vec![0, 1, 2, 3, 4, 5, 6, 7, 63]);
    for p in [0, 7, 63] {
        assert_eq!(t.picker.availability(P(p)), 1, "piece {p}");
    }
    assert_eq!(t.picker.availability(P(8)), 0);
    assert!(t.peers[k].am_interested);
    // Leaving uncounts exactly what was counted.
    t.remove_peer(k, &PeerError::Eof);
    assert_eq!(t.picker.availability(P(63)), 0);
    assert_eq!(t.picker.availability(P(0)), 0);
    std::fs::remove_dir_all(dir).unwrap();
}

/// Seeder and leecher back to back; `flush_from` is the first turn on which
/// the leecher writes to disk. Returns the leecher and the most cache memory
/// it held.
fn exchange_with_held_back_flushes(
    name: &str,
    f: &Fixture,
    cache_bytes: usize,
    flush_from: u32,
) -> (Node, usize, PathBuf, PathBuf) {
    let (sd, ld) = (
        temp_dir(&format!("{name}-s")),
        temp_dir(&format!("{name}-l")),
    );
    let mut now = Instant::now();
    let mut seeder = torrent(f, &sd, true, 1, now);
    let mut leecher = torrent_with_cache(f, &ld, false, 2, now, cache_bytes);
    let sk = seeder.add_peer(ConnToken(1), "127.0.0.1:1".parse().unwrap(), false, now);
    let lk = leecher.add_peer(ConnToken(1), "127.0.0.1:2".parse().unwrap(), true, now);
    let mut peak = 0;
    let mut turn = 0;
    while !leecher.is_done() {
        turn += 1;
        assert!(
            turn < flush_from + 2000,
            "no progress after {turn} turns: {:?}",
            leecher.status()
        );
        pump(&mut leecher, lk, &mut seeder, sk, now);
        seeder.choke_round(now);
        pump(&mut seeder, sk, &mut leecher, lk, now);
        leecher.picker.check_invariants();
        peak = peak.max(leecher.cache_memory());
        if turn >= flush_from {
            leecher.flush(usize::MAX, now).unwrap();
        }
        now += Duration::from_millis(10);
    }
    (leecher, peak, sd, ld)
}

fn assert_downloaded(f: &Fixture, ld: &Path) {
    let mut got = std::fs::read(ld.join("x/a")).unwrap();
    got.extend(std::fs::read(ld.join("x/b")).unwrap());
    assert!(got == f.data, "downloaded bytes differ");
}

#[test]
fn blocks_arriving_while_flushes_are_held_back_are_never_lost() {
    // Four buffers (`--cache 0`) and no writes for 300 turns: every buffer
    // fills with verified pieces, and then nothing more may be requested
    // (before, blocks kept coming, found no buffer and were lost for good).
    let f = fixture(64 * 32768, 32768);
    let (leecher, peak, sd, ld) = exchange_with_held_back_flushes("held", &f, 0, 300);
    assert_eq!(leecher.totals.hash_failures, 0);
    assert_eq!(leecher.totals.wasted, 0, "no block was thrown away");
    assert!(peak <= 4 * 32768, "cache held {peak} bytes");
    assert_downloaded(&f, &ld);
    std::fs::remove_dir_all(sd).unwrap();
    std::fs::remove_dir_all(ld).unwrap();
}

#[test]
fn pieces_larger_than_the_cache_download_in_segments() {
    // 4 MiB pieces, a 1 MiB budget: buffers of 512 KiB, four of them, so a
    // piece is never held whole; writes are held back for a while too.
    let f = fixture(10 * 1024 * 1024 + 5000, 4 << 20);
    let (leecher, peak, sd, ld) = exchange_with_held_back_flushes("large", &f, 1 << 20, 50);
    assert_eq!(leecher.totals.hash_failures, 0);
    assert!(peak <= 4 * 512 * 1024, "cache held {peak} bytes");
    assert_downloaded(&f, &ld);
    std::fs::remove_dir_all(sd).unwrap();
    std::fs::remove_dir_all(ld).unwrap();
}

#[test]
fn pieces_verified_while_a_dialed_peer_handshakes_are_in_its_bitfield() {
    let f = fixture(64 * 32768, 32768);
    let (sd, ld) = (temp_dir("have-s"), temp_dir("have-l"));
    let now = Instant::now();
    let mut seeder = torrent(&f, &sd, true, 1, now);
    let mut leecher = torrent(&f, &ld, false, 2, now);
    // We dial a third peer; it has not answered yet.
    let dialed = leecher.add_peer(ConnToken(9), "127.0.0.1:9".parse().unwrap(), true, now);
    assert_eq!(leecher.peers[dialed].send.len(), wire::HANDSHAKE_LEN);
    // Meanwhile pieces verify from the seeder.
    let sk = seeder.add_peer(ConnToken(1), "127.0.0.1:1".parse().unwrap(), false, now);
    let lk = leecher.add_peer(ConnToken(1), "127.0.0.1:2".parse().unwrap(), true, now);
    for _ in 0..3 {
        pump(&mut leecher, lk, &mut seeder, sk, now);
        seeder.choke_round(now);
        pump(&mut seeder, sk, &mut leecher, lk, now);
    }
    let have = leecher.picker.have().clone();
    assert!(have.count() > 0);
    // Its handshake arrives: our bitfield, sent now, holds every one.
    let hs = handshake([9; 20], [7; 20], false);
    leecher
        .read_peer_from(dialed, &mut &hs[..])
        .unwrap()
        .unwrap();
    leecher.on_readable(dialed, now).unwrap();
    let out = leecher.peers[dialed].send.pending();
    let (msg, _) = wire::decode_frame(&out[wire::HANDSHAKE_LEN..], wire::MAX_FRAME)
        .unwrap()
        .unwrap();
    assert_eq!(msg, Message::Bitfield(have.as_bytes()));
    std::fs::remove_dir_all(sd).unwrap();
    std::fs::remove_dir_all(ld).unwrap();
}

#[test]
fn requests_crossing_many_chokes_are_not_taken_for_a_flood() {
    let f = fixture(50_000, 16384);
    let dir = temp_dir("choke-cycles");
    let mut now = Instant::now();
    let mut t = torrent(&f, &dir, true, 5, now);
    let k = t.add_peer(ConnToken(1), "127.0.0.1:5".parse().unwrap(), false, now);
    let mut bytes = handshake([9; 20], [6; 20], false);
    Message::Interested.encode(&mut bytes);
    feed(&mut t, k, &bytes, now).unwrap();
    // Twenty choke cycles; after each choke a full queue of requests that
    // were already on the wire arrives (more than the flood limit in all).
    let per_cycle = t.cfg.max_peer_requests;
    for cycle in 0..20 {
        // It loses interest for a moment: the next round chokes it.
        let mut m = Vec::new();
        Message::NotInterested.encode(&mut m);
        feed(&mut t, k, &m, now).unwrap();
        now += Duration::from_secs(11);
        t.choke_round(now);
        assert!(t.peers[k].am_choking, "cycle {cycle}: choked");
        let mut late = Vec::new();
        for _ in 0..per_cycle {
            Message::Request {
                piece: 0,
                begin: 0,
                len: 16384,
            }
            .encode(&mut late);
        }
        let mut src = &late[..];
        while !src.is_empty() {
            t.read_peer_from(k, &mut src).unwrap().unwrap();
            assert_eq!(t.on_readable(k, now), Ok(()), "cycle {cycle}");
        }
        let mut m = Vec::new();
        Message::Interested.encode(&mut m);
        feed(&mut t, k, &m, now).unwrap();
        t.choke_round(now);
        assert!(!t.peers[k].am_choking, "cycle {cycle}: unchoked");
        t.peers[k].requests.clear();
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn an_idle_peers_send_queue_shrinks_after_a_burst() {
    let f = fixture(50 * 16384, 16384);
    let dir = temp_dir("shrink-send");
    let now = Instant::now();
    let mut t = torrent(&f, &dir, true, 5, now);
    let k = t.add_peer(ConnToken(1), "127.0.0.1:5".parse().unwrap(), false, now);
    let mut bytes = handshake([9; 20], [6; 20], false);
    Message::Interested.encode(&mut bytes);
    feed(&mut t, k, &bytes, now).unwrap();
    t.choke_round(now);
    let mut reqs = Vec::new();
    for piece in 0..20 {
        Message::Request {
            piece,
            begin: 0,
            len: 16384,
        }
        .encode(&mut reqs);
    }
    feed(&mut t, k, &reqs, now).unwrap();
    let mut sink = Vec::new();
    while !t.peers[k].send.is_empty() || !t.peers[k].requests.is_empty() {
        t.serve(k).unwrap();
        t.peers[k].send.write_to(&mut sink).unwrap();
    }
    assert!(t.peers[k].send.capacity() > 100_000);
    t.tick(now, Duration::from_secs(1), &mut Vec::new());
    assert!(t.peers[k].send.capacity() <= SEND_IDLE_CAP);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_liar_sharing_pieces_with_an_honest_seeder_is_banned_alone() {
    // The framing attack: one bad block in each of two pieces the honest
    // seeder also sends blocks of, then a choke.
    let f = fixture(64 * 32768, 32768);
    let (sd, ld) = (temp_dir("frame-s"), temp_dir("frame-l"));
    let now = Instant::now();
    let mut seeder = torrent(&f, &sd, true, 1, now);
    let mut t = torrent_with_cache(&f, &ld, false, 2, now, 64 * 32768);
    let liar_id = [0x66; 20];
    let li = t.add_peer(ConnToken(7), "127.0.0.1:7".parse().unwrap(), false, now);
    let mut bytes = handshake([9; 20], liar_id, false);
    Message::Bitfield(&[0xff; 8]).encode(&mut bytes);
    Message::Unchoke.encode(&mut bytes);
    feed(&mut t, li, &bytes, now).unwrap();
    let asked: Vec<BlockRef> = t.peers[li].inflight.iter().map(|r| r.block).collect();
    let mut pieces: Vec<PieceIndex> = asked.iter().map(|b| b.piece).collect();
    pieces.dedup();
    let mut lies = Vec::new();
    for &p in &pieces[..2] {
        let b = *asked.iter().find(|b| b.piece == p).unwrap();
        Message::Piece {
            piece: b.piece.0,
            begin: b.begin,
            data: &vec![0xee; b.len as usize],
        }
        .encode(&mut lies);
    }
    Message::Choke.encode(&mut lies);
    feed(&mut t, li, &lies, now).unwrap();
    // The honest seeder does the rest.
    let sk = seeder.add_peer(ConnToken(1), "127.0.0.1:1".parse().unwrap(), false, now);
    let hk = t.add_peer(ConnToken(1), "127.0.0.1:2".parse().unwrap(), true, now);
    let mut turns = 0;
    while !t.is_done() {
        turns += 1;
        assert!(turns < 1000, "no progress: {:?}", t.status());
        pump(&mut t, hk, &mut seeder, sk, now);
        seeder.choke_round(now);
        pump(&mut seeder, sk, &mut t, hk, now);
        t.flush(usize::MAX, now).unwrap();
    }
    assert_eq!(t.totals.hash_failures, 2, "both framed pieces failed once");
    let ip = std::net::IpAddr::from([127, 0, 0, 1]);
    assert!(t.banned_ids.contains(&(ip, liar_id)), "the liar is banned");
    assert!(
        !t.banned_ids.contains(&(ip, [1; 20])),
        "the honest seeder is not"
    );
    assert_eq!(t.banned_count(), 1);
    assert_downloaded(&f, &ld);
    std::fs::remove_dir_all(sd).unwrap();
    std::fs::remove_dir_all(ld).unwrap();
}

#[test]
fn a_second_connection_under_an_id_that_delivered_data_is_a_duplicate() {
    let now = Instant::now();
    let (mut t, k, dir) = unchoked_leecher("dup-useful", now);
    // Peer `k` ([6; 20]) has not delivered anything: the same id is let in.
    let k2 = t.add_peer(ConnToken(2), "127.0.0.1:6".parse().unwrap(), false, now);
    let hs = handshake([9; 20], [6; 20], false);
    t.read_peer_from(k2, &mut &hs[..]).unwrap().unwrap();
    assert_eq!(t.on_readable(k2, now), Ok(()));
    // Once `k` delivers a block we asked for, a third is refused.
    let b = t.peers[k].inflight[0].block;
    let f = fixture(64 * 32768, 32768);
    let off = (b.piece.0 * 32768 + b.begin) as usize;
    let mut bytes = Vec::new();
    Message::Piece {
        piece: b.piece.0,
        begin: b.begin,
        data: &f.data[off..off + b.len as usize],
    }
    .encode(&mut bytes);
    feed(&mut t, k, &bytes, now).unwrap();
    let k3 = t.add_peer(ConnToken(3), "127.0.0.1:7".parse().unwrap(), false, now);
    t.read_peer_from(k3, &mut &hs[..]).unwrap().unwrap();
    assert_eq!(t.on_readable(k3, now), Err(PeerError::Duplicate));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_dialed_peer_gets_our_bitfield_only_after_its_handshake() {
    // aria2 1.36 closes a connection whose first bytes hold more than
    // the 68-byte handshake: nothing may follow ours until it answers.
    let f = fixture(64 * 32768, 32768);
    let dir = temp_dir("dial-order");
    let now = Instant::now();
    let mut t = torrent(&f, &dir, true, 5, now);
    let k = t.add_peer(ConnToken(1), "127.0.0.1:5".parse().unwrap(), true, now);
    assert_eq!(
        t.peers[k].send.pending().len(),
        wire::HANDSHAKE_LEN,
        "our handshake and nothing else"
    );
    let bytes = handshake([9; 20], [6; 20], true);
    feed(&mut t, k, &bytes, now).unwrap();
    let frames = sent_frames(&t, k);
    assert_eq!(frames.len(), 2, "{frames:?}");
    assert!(frames[0].starts_with("Bitfield"), "{frames:?}");
    assert!(frames[1].starts_with("Unknown { id: 20"), "{frames:?}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_slot_freed_by_a_peer_that_loses_interest_or_leaves_goes_to_a_waiting_peer_at_once() {
    // A seed with seven interested peers: four slots and the optimistic
    // unchoke leave two waiting. When an unchoked peer no longer wants
    // anything (it completed), or disconnects, a waiting one gets its slot
    // without waiting for the next 10 s round.
    let f = fixture(50_000, 16384);
    let dir = temp_dir("slot-freed");
    let now = Instant::now();
    let mut t = torrent(&f, &dir, true, 5, now);
    let keys: Vec<PeerKey> = (0..7u8)
        .map(|i| {
            let k = t.add_peer(
                ConnToken(10 + i as usize),
                format!("127.0.0.{}:5", i + 2).parse().unwrap(),
                false,
                now,
            );
            let mut bytes = handshake([9; 20], [0x40 + i; 20], false);
            Message::Interested.encode(&mut bytes);
            feed(&mut t, k, &bytes, now).unwrap();
            k
        })
        .collect();
    t.choke_round(now);
    let unchoked = |t: &Torrent| {
        keys.iter()
            .filter(|&&k| t.peers.get(k).is_some_and(|p| !p.am_choking))
            .count()
    };
    assert_eq!(unchoked(&t), 5);
    // One of the unchoked loses interest: same instant, one more round.
    let done = *keys.iter().find(|&&k| !t.peers[k].am_choking).unwrap();
    let mut m = Vec::new();
    Message::NotInterested.encode(&mut m);
    feed(&mut t, done, &m, now).unwrap();
    t.choke_round(now);
    assert!(
        t.peers[done].am_choking,
        "the peer that wants nothing gave its slot back"
    );
    assert_eq!(unchoked(&t), 5, "a waiting peer took it");
    // An unchoked peer leaves: its slot is given at once too.
    let gone = *keys.iter().find(|&&k| !t.peers[k].am_choking).unwrap();
    t.remove_peer(gone, &PeerError::Eof);
    t.choke_round(now);
    assert_eq!(unchoked(&t), 5);
    std::fs::remove_dir_all(dir).unwrap();
}

/// A core serving `metadata` (nothing on disk: only `ut_metadata` is used).
fn metadata_server(f: &Fixture, metadata: Option<&[u8]>, now: Instant) -> Torrent {
    Torrent::new(
        TorrentParts {
            info_hash: [9; 20],
            our_id: [1; 20],
            geometry: f.geometry,
            hashes: f.hashes.clone(),
            have: Bitfield::new(f.geometry.num_pieces),
            metadata: metadata.map(Into::into),
            private: metadata.is_none(),
        },
        Config::default(),
        1,
        now,
    )
}

/// The extended frames queued to peer `k` (after our handshake, if it is
/// still queued), as (id, payload).
fn extended_sent(t: &mut Torrent, k: PeerKey) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    t.peers[k].send.write_to(&mut out).unwrap();
    let mut rest = match out.first() {
        Some(19) => &out[wire::HANDSHAKE_LEN..],
        _ => &out[..],
    };
    let mut frames = Vec::new();
    while let Some((msg, n)) = wire::decode_frame(rest, wire::MAX_FRAME).unwrap() {
        if let Message::Unknown { id, payload } = msg {
            frames.push((id, payload.to_vec()));
        }
        rest = &rest[n..];
    }
    assert!(rest.is_empty());
    frames
}

fn metadata_request(their_id_for_us: u8, piece: u32) -> Vec<u8> {
    let mut out = Vec::new();
    crate::ut_metadata::Msg::Request { piece }.encode(their_id_for_us, &mut out);
    out
}

#[test]
fn metadata_is_served_in_16_kib_pieces_and_out_of_range_pieces_are_rejected() {
    use crate::ut_metadata::Msg;
    let f = fixture(50_000, 16384);
    let now = Instant::now();
    let meta: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    let mut t = metadata_server(&f, Some(&meta), now);
    let k = t.add_peer(ConnToken(1), "127.0.0.1:7".parse().unwrap(), false, now);
    let mut bytes = handshake([9; 20], [8; 20], true);
    // It wants `ut_metadata` sent with id 3.
    Message::Unknown {
        id: wire::EXTENDED_ID,
        payload: b"\x00d1:md11:ut_metadatai3eee",
    }
    .encode(&mut bytes);
    feed(&mut t, k, &bytes, now).unwrap();
    // Our extension handshake names `ut_metadata` (and `ut_pex`) and the metadata's size.
    let frames = extended_sent(&mut t, k);
    assert_eq!(frames.len(), 1);
    let hs = &frames[0].1;
    let ours = t.extensions.local_id("ut_metadata").unwrap();
    assert!(
        hs.starts_with(
            format!("\x00d1:md11:ut_metadatai{ours}e6:ut_pexi2ee13:metadata_sizei20000e")
                .as_bytes()
        ),
        "{}",
        String::from_utf8_lossy(hs)
    );
    // Pieces 0 and 1 (the last, short), then 2, which does not exist.
    let mut reqs = Vec::new();
    for piece in [0, 1, 2] {
        reqs.extend(metadata_request(ours, piece));
    }
    feed(&mut t, k, &reqs, now).unwrap();
    let frames = extended_sent(&mut t, k);
    assert_eq!(frames.len(), 3);
    for (id, payload) in &frames {
        assert_eq!(
            (*id, payload[0]),
            (wire::EXTENDED_ID, 3),
            "sent with its id"
        );
    }
    let got: Vec<Msg> = frames
        .iter()
        .map(|(_, p)| Msg::parse(&p[1..]).unwrap())
        .collect();
    assert_eq!(
        got,
        [
            Msg::Data {
                piece: 0,
                total_size: 20_000,
                data: &meta[..16384]
            },
            Msg::Data {
                piece: 1,
                total_size: 20_000,
                data: &meta[16384..]
            },
            Msg::Reject { piece: 2 }
        ]
    );
}

#[test]
fn a_peer_asking_for_metadata_far_too_often_is_rejected_then_dropped() {
    use crate::ut_metadata::Msg;
    use metadata::REQUESTS_PER_PIECE;
    let f = fixture(50_000, 16384);
    let now = Instant::now();
    let meta = vec![b'x'; 100];
    let mut t = metadata_server(&f, Some(&meta), now);
    let k = t.add_peer(ConnToken(1), "127.0.0.1:7".parse().unwrap(), false, now);
    let mut bytes = handshake([9; 20], [8; 20], true);
    Message::Unknown {
        id: wire::EXTENDED_ID,
        payload: b"\x00d1:md11:ut_metadatai2eee",
    }
    .encode(&mut bytes);
    feed(&mut t, k, &bytes, now).unwrap();
    extended_sent(&mut t, k);
    let ours = t.extensions.local_id("ut_metadata").unwrap();
    // One piece: its budget is REQUESTS_PER_PIECE × 1 + REQUESTS_PER_PIECE.
    let budget = 2 * REQUESTS_PER_PIECE;
    let mut answers = Vec::new();
    for _ in 0..budget + 1 {
        feed(&mut t, k, &metadata_request(ours, 0), now).unwrap();
        for (_, p) in extended_sent(&mut t, k) {
            answers.push(matches!(Msg::parse(&p[1..]), Some(Msg::Data { .. })));
        }
    }
    assert_eq!(answers.len(), budget + 1);
    assert!(
        answers[..budget].iter().all(|&d| d),
        "answered within budget"
    );
    assert!(!answers[budget], "rejected beyond it");
    // Asking on regardless closes the connection.
    let mut rest = Vec::new();
    for _ in 0..budget {
        rest.extend(metadata_request(ours, 0));
    }
    assert_eq!(feed(&mut t, k, &rest, now), Err(PeerError::RequestFlood));
}

#[test]
fn a_torrent_without_metadata_to_serve_does_not_offer_ut_metadata() {
    let f = fixture(50_000, 16384);
    let now = Instant::now();
    // A private torrent's parts carry no metadata.
    let mut t = metadata_server(&f, None, now);
    let k = t.add_peer(ConnToken(1), "127.0.0.1:7".parse().unwrap(), false, now);
    let mut bytes = handshake([9; 20], [8; 20], true);
    Message::Unknown {
        id: wire::EXTENDED_ID,
        payload: b"\x00d1:md11:ut_metadatai3eee",
    }
    .encode(&mut bytes);
    // A request for id 1 (which we never gave out) is ignored.
    bytes.extend(metadata_request(1, 0));
    feed(&mut t, k, &bytes, now).unwrap();
    let frames = extended_sent(&mut t, k);
    assert_eq!(frames.len(), 1, "the extension handshake alone");
    assert!(frames[0].1.starts_with(b"\x00d1:mde4:reqq"));
}

/// A seeding core on memory for a torrent whose info-hash is the SHA-1
/// of `metadata` (served over `ut_metadata`).
fn mem_metadata_seed(f: &Fixture, metadata: &[u8], now: Instant) -> Node<MemStorage> {
    let mut t = Torrent::new(
        TorrentParts {
            info_hash: Sha1::digest(metadata).into(),
            our_id: [1; 20],
            geometry: f.geometry,
            hashes: f.hashes.clone(),
            have: Bitfield::full(f.geometry.num_pieces),
            metadata: Some(metadata.into()),
            private: false,
        },
        Config::default(),
        1,
        now,
    );
    t.flushed = Bitfield::full(f.geometry.num_pieces);
    Node {
        t,
        store: MemStorage::with(f.data.clone()),
    }
}

/// A magnet link's core: only the info-hash.
fn mem_magnet(info_hash: [u8; 20], now: Instant) -> Node<MemStorage> {
    Node {
        t: Torrent::new_magnet(info_hash, [2; 20], Config::default(), 2, now),
        store: MemStorage::default(),
    }
}

#[test]
fn a_magnet_torrent_fetches_its_metadata_then_the_data_from_the_same_peers() {
    let f = fixture(10 * 32768 + 77, 32768);
    // Three metadata pieces, the last short.
    let metadata: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
    let hash: [u8; 20] = Sha1::digest(&metadata).into();
    let now = Instant::now();
    let mut seeder = mem_metadata_seed(&f, &metadata, now);
    let mut leecher = mem_magnet(hash, now);
    assert!(!leecher.has_metadata());
    assert!(!leecher.is_done() && !leecher.is_complete());
    assert!(leecher.left() > 0, "trackers must not take it for a seed");
    let sk = seeder.add_peer(ConnToken(1), "127.0.0.1:1".parse().unwrap(), false, now);
    let lk = leecher.add_peer(ConnToken(1), "127.0.0.1:2".parse().unwrap(), true, now);
    let mut fetched = None;
    for _ in 0..20 {
        pump(&mut leecher, lk, &mut seeder, sk, now);
        pump(&mut seeder, sk, &mut leecher, lk, now);
        if let Some(m) = leecher.take_fetched_metadata() {
            fetched = Some(m);
            break;
        }
        let st = leecher.status();
        assert_eq!((st.num_pieces, st.total_len), (0, 0));
        assert!(st.fetching.is_some());
    }
    let fetched = fetched.expect("metadata fetched");
    assert_eq!(&*fetched, &metadata[..]);
    // The seeder's `have all` (both speak BEP 6; a bitfield otherwise)
    // came before the piece count was known: kept.
    assert!(leecher.peers[lk].fast.early_have_all);
    let n = f.geometry.num_pieces;
    leecher.set_metainfo(
        TorrentParts {
            info_hash: hash,
            our_id: [2; 20],
            geometry: f.geometry,
            hashes: f.hashes.clone(),
            have: Bitfield::new(n),
            metadata: Some(fetched),
            private: false,
        },
        false,
        2,
        now,
    );
    assert!(leecher.has_metadata());
    assert!(
        leecher.peers[lk].has.is_full(),
        "early bits became its bitfield"
    );
    assert_eq!(leecher.left(), f.geometry.total_len);
    exchange_until_done(&mut leecher, lk, &mut seeder, sk, now);
    assert!(
        *leecher.store.bytes.borrow() == f.data,
        "downloaded bytes differ"
    );
    assert!(leecher.to_close.is_empty(), "{:?}", leecher.to_close);
}

#[test]
fn early_bits_past_the_last_piece_close_the_peer_once_the_count_is_known() {
    let f = fixture(4 * 32768, 32768);
    let metadata = b"d4:name1:xe".to_vec();
    let hash: [u8; 20] = Sha1::digest(&metadata).into();
    let now = Instant::now();
    let mut t = mem_magnet(hash, now);
    let honest = t.add_peer(ConnToken(1), "127.0.0.1:1".parse().unwrap(), false, now);
    let liar = t.add_peer(ConnToken(2), "127.0.0.1:2".parse().unwrap(), false, now);
    let mut bytes = handshake(hash, [5; 20], true);
    Message::Have { piece: 3 }.encode(&mut bytes);
    Message::Bitfield(&[0b1100_0000]).encode(&mut bytes);
    feed(&mut t, honest, &bytes, now).unwrap();
    let mut bytes = handshake(hash, [6; 20], true);
    Message::Have { piece: 9 }.encode(&mut bytes);
    feed(&mut t, liar, &bytes, now).unwrap();
    // A have past anything a torrent's metadata may name is refused now.
    let mut huge = Vec::new();
    Message::Have { piece: 10_000_000 }.encode(&mut huge);
    assert_eq!(
        feed(&mut t, liar, &huge, now),
        Err(PeerError::BadHave(10_000_000))
    );
    t.set_metainfo(
        TorrentParts {
            info_hash: hash,
            our_id: [2; 20],
            geometry: f.geometry,
            hashes: f.hashes.clone(),
            have: Bitfield::new(4),
            metadata: None,
            private: false,
        },
        false,
        2,
        now,
    );
    let has: Vec<u32> = t.peers[honest].has.iter_set().map(u32::from).collect();
    assert_eq!(has, [0, 1, 3]);
    assert_eq!(t.to_close, [(ConnToken(2), PeerError::BadHave(9))]);
}

#[test]
fn metadata_that_does_not_hash_drops_its_sender_and_another_peers_is_used() {
    let metadata: Vec<u8> = (0..20_000u32).map(|i| (i % 13) as u8).collect();
    let forged: Vec<u8> = metadata.iter().map(|b| b ^ 0xff).collect();
    let hash: [u8; 20] = Sha1::digest(&metadata).into();
    let f = fixture(4 * 32768, 32768);
    let now = Instant::now();
    // The liar serves other bytes of the same size under the same hash.
    let mut liar = mem_metadata_seed(&f, &forged, now);
    liar.t.info_hash = hash;
    let mut honest = mem_metadata_seed(&f, &metadata, now);
    let mut t = mem_magnet(hash, now);
    let lk = t.add_peer(ConnToken(1), "127.0.0.1:1".parse().unwrap(), true, now);
    let sk = liar.add_peer(ConnToken(1), "127.0.0.1:9".parse().unwrap(), false, now);
    let mut dropped = None;
    for _ in 0..10 {
        pump(&mut t, lk, &mut liar, sk, now);
        let mut wire = Vec::new();
        liar.serve(sk).unwrap();
        liar.peers[sk].send.write_to(&mut wire).unwrap();
        if let Err(e) = feed(&mut t, lk, &wire, now) {
            dropped = Some(e);
            break;
        }
    }
    assert_eq!(
        dropped,
        Some(PeerError::BadMetadata(fetch::FetchError::BadHash))
    );
    t.remove_peer(lk, &PeerError::Eof);
    assert!(t.is_banned(&"127.0.0.1:1".parse().unwrap()));
    let hk = t.add_peer(ConnToken(2), "127.0.0.1:2".parse().unwrap(), true, now);
    let sk = honest.add_peer(ConnToken(1), "127.0.0.1:9".parse().unwrap(), false, now);
    for _ in 0..10 {
        pump(&mut t, hk, &mut honest, sk, now);
        pump(&mut honest, sk, &mut t, hk, now);
    }
    assert_eq!(&*t.take_fetched_metadata().unwrap(), &metadata[..]);
}

#[test]
fn a_magnet_torrent_rejects_metadata_requests_until_it_has_the_metadata() {
    let now = Instant::now();
    let mut t = mem_magnet([4; 20], now);
    let k = t.add_peer(ConnToken(1), "127.0.0.1:1".parse().unwrap(), false, now);
    let mut bytes = handshake([4; 20], [5; 20], true);
    Message::Unknown {
        id: wire::EXTENDED_ID,
        payload: b"\x00d1:md11:ut_metadatai3eee",
    }
    .encode(&mut bytes);
    feed(&mut t, k, &bytes, now).unwrap();
    let ours = t.extensions.local_id("ut_metadata").unwrap();
    // A peer that also starts from a magnet link asks again and again:
    // each gets its reject, and the connection stays.
    for _ in 0..100 {
        feed(&mut t, k, &metadata_request(ours, 0), now).unwrap();
    }
    let sent = extended_sent(&mut t, k);
    let rejects = sent.iter().filter(|(_, p)| p[0] == 3).count();
    assert_eq!(rejects, 100);
    let last = sent.last().unwrap();
    assert_eq!((last.0, last.1[0]), (wire::EXTENDED_ID, 3));
    assert_eq!(
        crate::ut_metadata::Msg::parse(&last.1[1..]),
        Some(crate::ut_metadata::Msg::Reject { piece: 0 })
    );
}

#[path = "torrent/fast_tests.rs"]
mod fast_tests;

/// A `piece` message for block `b` of `f`, then `after`.
fn piece_then(f: &Fixture, b: BlockRef, after: Message<'_>) -> Vec<u8> {
    let off = f.geometry.piece_offset(b.piece) as usize + b.begin as usize;
    let mut out = Vec::new();
    Message::Piece {
        piece: b.piece.0,
        begin: b.begin,
        data: &f.data[off..off + b.len as usize],
    }
    .encode(&mut out);
    after.encode(&mut out);
    out
}

#[test]
fn a_block_split_across_reads_is_read_into_its_place() {
    let f = fixture(64 * 32768, 32768);
    let now = Instant::now();
    let (mut t, k, dir) = unchoked_leecher("in-place", now);
    let b = t.peers[k].inflight[0].block;
    let msg = piece_then(&f, b, Message::Interested);
    // A read that stops 100 bytes into the block's data: those 100 go to
    // the block's place and the receive buffer is left empty.
    t.read_peer_from(k, &mut &msg[..13 + 100]).unwrap().unwrap();
    t.on_readable(k, now).unwrap();
    let d = t.peers[k].direct.expect("read in place");
    assert_eq!((d.place.block, d.got, d.lost), (b, 100, false));
    assert!(t.peers[k].recv.is_empty());
    // One vectored read brings the rest of the block and the next frame.
    let mut rest = Socket {
        bytes: &msg[113..],
        max: usize::MAX,
    };
    let n = t.read_peer_from(k, &mut rest).unwrap().unwrap();
    assert_eq!(n, msg.len() - 113);
    assert_eq!(t.peers[k].recv.len(), 5, "only the next frame is buffered");
    t.on_readable(k, now).unwrap();
    assert!(t.peers[k].direct.is_none());
    assert!(t.peers[k].peer_interested, "the frame after it was read");
    assert_eq!(t.totals.received, b.len as u64);
    assert_eq!(t.totals.wasted, 0);
    assert!(!t.peers[k].inflight.iter().any(|r| r.block == b));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_block_whose_place_is_lost_mid_read_is_skipped_and_fetched_again() {
    let f = fixture(64 * 32768, 32768);
    let (sd, ld) = (temp_dir("lost-s"), temp_dir("lost-l"));
    let now = Instant::now();
    let mut seeder = torrent(&f, &sd, true, 1, now);
    let mut t = torrent_with_cache(&f, &ld, false, 2, now, 64 * 32768);
    let a = t.add_peer(ConnToken(7), "127.0.0.1:7".parse().unwrap(), false, now);
    let mut bytes = handshake([9; 20], [0x77; 20], false);
    Message::Bitfield(&[0xff; 8]).encode(&mut bytes);
    Message::Unchoke.encode(&mut bytes);
    feed(&mut t, a, &bytes, now).unwrap();
    let b = t.peers[a].inflight[0].block;
    let msg = piece_then(&f, b, Message::Interested);
    t.read_peer_from(a, &mut &msg[..13 + 100]).unwrap().unwrap();
    t.on_readable(a, now).unwrap();
    assert!(t.peers[a].direct.is_some());
    // Its piece starts over (as when a banned peer's blocks were in it):
    // the place the block was being read into is gone.
    t.cache.drop_partial(b.piece);
    let mut rest = Socket {
        bytes: &msg[113..],
        max: 1000,
    };
    while !rest.bytes.is_empty() {
        t.read_peer_from(a, &mut rest).unwrap().unwrap();
        t.on_readable(a, now).unwrap();
    }
    assert!(t.peers[a].direct.is_none());
    assert!(t.peers[a].peer_interested, "the framing survived");
    assert_eq!(t.totals.wasted, b.len as u64, "the block was dropped");
    // The peer goes quiet; an honest seeder brings everything, that block
    // included, and every byte on disk is right.
    let mut choke = Vec::new();
    Message::Choke.encode(&mut choke);
    feed(&mut t, a, &choke, now).unwrap();
    let sk = seeder.add_peer(ConnToken(1), "127.0.0.1:1".parse().unwrap(), false, now);
    let hk = t.add_peer(ConnToken(1), "127.0.0.1:2".parse().unwrap(), true, now);
    exchange_until_done(&mut t, hk, &mut seeder, sk, now);
    assert_eq!(t.totals.hash_failures, 0);
    assert_downloaded(&f, &ld);
    std::fs::remove_dir_all(sd).unwrap();
    std::fs::remove_dir_all(ld).unwrap();
}

#[test]
fn a_whole_download_in_odd_sized_reads_goes_through_blocks_read_in_place() {
    // Reads of 50,000 bytes end inside most piece messages: those blocks
    // are finished in place. The data must come out exact.
    let f = fixture(64 * 32768, 32768);
    let (sd, ld) = (temp_dir("odd-s"), temp_dir("odd-l"));
    let now = Instant::now();
    let mut seeder = torrent(&f, &sd, true, 1, now);
    let mut t = torrent(&f, &ld, false, 2, now);
    let sk = seeder.add_peer(ConnToken(1), "127.0.0.1:1".parse().unwrap(), false, now);
    let lk = t.add_peer(ConnToken(1), "127.0.0.1:2".parse().unwrap(), true, now);
    let mut in_place = 0;
    let mut now = now;
    while !t.is_done() {
        pump(&mut t, lk, &mut seeder, sk, now);
        seeder.choke_round(now);
        in_place += pump_counting(&mut seeder, sk, &mut t, lk, now).1;
        t.flush(usize::MAX, now).unwrap();
        now += Duration::from_millis(10);
    }
    assert!(in_place > 10, "only {in_place} blocks were read in place");
    assert_eq!((t.totals.hash_failures, t.totals.wasted), (0, 0));
    assert_downloaded(&f, &ld);
    std::fs::remove_dir_all(sd).unwrap();
    std::fs::remove_dir_all(ld).unwrap();
}
