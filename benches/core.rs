//! The torrent core's two hot paths, with no sockets and no files: a
//! seeding core and a downloading core on `MemStorage` exchange 64 MiB
//! (1 MiB pieces) through in-memory "sockets", as the event loop drives
//! them.
//!
//! - `core/receive_64MiB`: the downloader's side only. Bytes come in reads
//!   of at most 64 KiB (vectored reads fill each buffer in turn, as
//!   `readv` does); framing, the peer state machine, the picker, copying
//!   (or reading in place) into piece buffers, SHA-1, and the writes to
//!   memory. SHA-1 alone is `cache`'s `sha1_only`: compare with it.
//! - `core/serve_64MiB`: the seeder's side only: answering requests, the
//!   read jobs, and framing `piece` messages into the send buffer.
//!
//! Each iteration is one whole download; the time of the other side is
//! not counted (`iter_custom`).

use std::hint::black_box;
use std::io;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use piecemeal::bitfield::Bitfield;
use piecemeal::config::Config;
use piecemeal::geometry::Geometry;
use piecemeal::ids::{ConnToken, PieceIndex};
use piecemeal::picker::PeerKey;
use piecemeal::storage::{MemStorage, Storage};
use piecemeal::torrent::{Torrent, TorrentParts, jobs};
use sha1::{Digest, Sha1};

const SIZE: usize = 64 << 20;
const PIECE: u32 = 1 << 20;
const MAX_READ: usize = 64 * 1024;

/// In-memory socket bytes: at most `MAX_READ` a read, vectored reads
/// filling their buffers in turn.
struct Socket<'a>(&'a [u8]);

impl io::Read for Socket<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        self.read_vectored(&mut [io::IoSliceMut::new(out)])
    }

    fn read_vectored(&mut self, bufs: &mut [io::IoSliceMut<'_>]) -> io::Result<usize> {
        let mut n = 0;
        for b in bufs {
            let take = b.len().min(MAX_READ - n).min(self.0.len());
            b[..take].copy_from_slice(&self.0[..take]);
            self.0 = &self.0[take..];
            n += take;
        }
        Ok(n)
    }
}

struct Fixture {
    data: Vec<u8>,
    geometry: Geometry,
    hashes: Vec<[u8; 20]>,
}

fn fixture() -> Fixture {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let data: Vec<u8> = (0..SIZE)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let geometry = Geometry::new(SIZE as u64, PIECE).expect("geometry");
    let hashes = data
        .chunks(PIECE as usize)
        .map(|c| Sha1::digest(c).into())
        .collect();
    Fixture {
        data,
        geometry,
        hashes,
    }
}

fn core(f: &Fixture, seed: bool, id: u8, now: Instant) -> Torrent {
    let n = f.geometry.num_pieces;
    let parts = TorrentParts {
        info_hash: [9; 20],
        our_id: [id; 20],
        geometry: f.geometry,
        hashes: f.hashes.clone(),
        have: if seed {
            Bitfield::full(n)
        } else {
            Bitfield::new(n)
        },
        metadata: None,
        private: false,
    };
    Torrent::new(parts, Config::default(), u64::from(id), now)
}

/// Move what `from` has queued for its peer into `to`'s peer; the time
/// spent on each side.
fn pump(
    from: (&mut Torrent, &MemStorage, PeerKey),
    to: (&mut Torrent, &MemStorage, PeerKey),
    wire: &mut Vec<u8>,
    now: Instant,
) -> (Duration, Duration) {
    let (ft, fs, fk) = from;
    let (tt, ts, tk) = to;
    wire.clear();
    let start = Instant::now();
    loop {
        ft.serve(fk).expect("serve");
        jobs::read_pending(ft, fs, 64);
        let n = ft.write_peer_to(fk, wire).expect("peer").expect("write");
        if n == 0 {
            break;
        }
    }
    ft.on_sent(fk, now);
    let sending = start.elapsed();
    let start = Instant::now();
    let mut src = Socket(&wire[..]);
    while !src.0.is_empty() {
        tt.read_peer_from(tk, &mut src)
            .expect("peer")
            .expect("read");
        tt.on_readable(tk, now).expect("readable");
    }
    jobs::write_pending(tt, ts, usize::MAX, now).expect("write");
    (sending, start.elapsed())
}

/// One whole download; the seeder's and the downloader's time. The
/// stores are made once: the downloader's is overwritten each time, so
/// its memory is not first touched inside the measurement.
fn download(
    f: &Fixture,
    seed_store: &MemStorage,
    leech_store: &MemStorage,
) -> (Duration, Duration) {
    let now = Instant::now();
    let mut seeder = core(f, true, 1, now);
    let mut leecher = core(f, false, 2, now);
    let sk = seeder.add_peer(
        ConnToken(1),
        "127.0.0.1:1".parse().expect("addr"),
        false,
        now,
    );
    let lk = leecher.add_peer(
        ConnToken(1),
        "127.0.0.1:2".parse().expect("addr"),
        true,
        now,
    );
    let (mut serving, mut receiving) = (Duration::ZERO, Duration::ZERO);
    let mut wire = Vec::with_capacity(8 << 20);
    let mut turns = 0;
    while !leecher.is_done() {
        turns += 1;
        assert!(turns < 100_000, "no progress");
        let (l_send, s_recv) = pump(
            (&mut leecher, leech_store, lk),
            (&mut seeder, seed_store, sk),
            &mut wire,
            now,
        );
        seeder.choke_round(now);
        let (s_send, l_recv) = pump(
            (&mut seeder, seed_store, sk),
            (&mut leecher, leech_store, lk),
            &mut wire,
            now,
        );
        serving += s_recv + s_send;
        receiving += l_send + l_recv;
    }
    let mut check = vec![0u8; 16];
    leech_store
        .read_at(f.geometry.piece_offset(PieceIndex(3)), &mut check)
        .expect("read back");
    assert_eq!(check[..], f.data[3 << 20..(3 << 20) + 16]);
    black_box(&leecher);
    (serving, receiving)
}

fn bench_core(c: &mut Criterion) {
    let f = fixture();
    let seed_store = MemStorage::with(f.data.clone());
    let leech_store = MemStorage::with(vec![0; SIZE]);
    let mut group = c.benchmark_group("core");
    group.throughput(Throughput::Bytes(SIZE as u64));
    group.sample_size(10);
    group.bench_function("receive_64MiB", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| download(&f, &seed_store, &leech_store).1)
                .sum()
        })
    });
    group.bench_function("serve_64MiB", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| download(&f, &seed_store, &leech_store).0)
                .sum()
        })
    });
    group.finish();
}

criterion_group!(benches, bench_core);
criterion_main!(benches);
