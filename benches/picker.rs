//! Picker hot path: a 10,000-piece torrent (256 KiB pieces, 16 blocks each)
//! with 50 peers holding 50–90% of the pieces.
//!
//! - `pick32_and_complete`: the steady-state loop of one peer turn: pick 32
//!   blocks, receive every one of them, verify each piece as it completes.
//!   Once 90% of the torrent is verified the picker is reset (untimed).
//! - `peer_has_all_then_gone`: a peer with a 70% bitfield connects and leaves.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use piecemeal::bitfield::Bitfield;
use piecemeal::geometry::Geometry;
use piecemeal::ids::PieceIndex;
use piecemeal::picker::{PeerKey, Picker};

const PIECES: u32 = 10_000;
const PIECE_LEN: u32 = 256 * 1024;
const PEERS: usize = 50;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// A bitfield with each piece set with probability `percent`%.
fn random_bitfield(rng: &mut Rng, percent: u64) -> Bitfield {
    let mut bf = Bitfield::new(PIECES);
    for p in 0..PIECES {
        if rng.next() % 100 < percent {
            bf.set(PieceIndex(p));
        }
    }
    bf
}

fn swarm() -> (Picker, Vec<Bitfield>) {
    let g = Geometry::new(PIECES as u64 * PIECE_LEN as u64, PIECE_LEN).unwrap();
    let mut picker = Picker::new(g, &Bitfield::new(PIECES), 42);
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let peers: Vec<Bitfield> = (0..PEERS)
        .map(|_| {
            let percent = 50 + rng.next() % 41;
            random_bitfield(&mut rng, percent)
        })
        .collect();
    for bf in &peers {
        picker.peer_has_all(bf);
    }
    (picker, peers)
}

fn pick_and_complete(c: &mut Criterion) {
    let (fresh, peers) = swarm();
    c.bench_function("pick32_and_complete", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut out = Vec::with_capacity(64);
            let mut others = Vec::new();
            let mut done = 0;
            while done < iters {
                let mut picker = fresh.clone();
                let start = Instant::now();
                while done < iters && picker.have().count() < PIECES * 9 / 10 {
                    let k = done as usize % PEERS;
                    out.clear();
                    let key = PeerKey::from_raw(k);
                    picker.pick(key, &peers[k], 32, &mut out);
                    for &blk in &out {
                        black_box(picker.on_block(key, blk, &mut others));
                        if picker.is_piece_received(blk.piece) {
                            picker.on_piece_verified(blk.piece);
                        }
                    }
                    done += 1;
                }
                total += start.elapsed();
            }
            total
        })
    });
}

fn has_all_and_gone(c: &mut Criterion) {
    let (mut picker, _) = swarm();
    let bf = random_bitfield(&mut Rng(99), 70);
    c.bench_function("peer_has_all_then_gone", |b| {
        b.iter(|| {
            picker.peer_has_all(black_box(&bf));
            picker.peer_gone(black_box(&bf));
        })
    });
}

criterion_group!(benches, pick_and_complete, has_all_and_gone);
criterion_main!(benches);
