//! Cache hot path per piece size: copy blocks in, SHA-1 as the prefix
//! grows, verify, and flush whole pieces to a real file with pwrite.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use piecemeal::geometry::Geometry;
use piecemeal::storage::{Cache, Disk, FileSlot, Insert, Layout, OpenMode};
use sha1::{Digest, Sha1};

fn bench_cache(c: &mut Criterion) {
    let mut group = c.benchmark_group("cache_insert_hash_flush");
    let dir = std::env::temp_dir().join(format!("pm-bench-cache-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for piece_len in [256u32 << 10, 1 << 20, 4 << 20] {
        let pieces = 16u32;
        let total = piece_len as u64 * pieces as u64;
        let g = Geometry::new(total, piece_len).unwrap();
        let data: Vec<u8> = (0..total).map(|i| (i * 31 % 251) as u8).collect();
        let hashes: Vec<[u8; 20]> = g
            .pieces()
            .map(|p| {
                let o = g.piece_offset(p) as usize;
                Sha1::digest(&data[o..o + piece_len as usize]).into()
            })
            .collect();
        let layout = Layout::new(vec![FileSlot {
            path: format!("f{piece_len}").into(),
            offset: 0,
            len: total,
            executable: false,
        }]);
        let disk = Disk::open(&dir, layout, OpenMode::Create).unwrap();
        group.throughput(Throughput::Bytes(total));
        group.bench_with_input(
            BenchmarkId::from_parameter(format!("{}K", piece_len >> 10)),
            &piece_len,
            |b, _| {
                let mut cache = Cache::new(g, hashes.clone(), 16 << 20);
                let mut written = Vec::new();
                b.iter(|| {
                    for p in g.pieces() {
                        for i in 0..g.blocks_in_piece(p) {
                            let blk = g.block(p, i);
                            let o = (g.piece_offset(p) + blk.begin as u64) as usize;
                            let r = cache.insert_block(blk, &data[o..o + blk.len as usize]);
                            assert_ne!(r, Insert::Failed);
                        }
                        written.clear();
                        cache.flush(&disk, usize::MAX, &mut written).unwrap();
                    }
                });
            },
        );
    }
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The floor under the cache: SHA-1 alone over the same bytes.
fn bench_sha1(c: &mut Criterion) {
    let data = vec![0x5au8; 4 << 20];
    let mut group = c.benchmark_group("sha1_only");
    group.throughput(Throughput::Bytes(data.len() as u64));
    group.bench_function("4M", |b| b.iter(|| Sha1::digest(&data)));
    group.finish();
}

criterion_group!(benches, bench_cache, bench_sha1);
criterion_main!(benches);
