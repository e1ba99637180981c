use super::*;
use crate::ids::PieceIndex as P;
use crate::storage::{Disk, FileSlot, Layout, OpenMode, recheck};
use std::path::PathBuf;

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("piecemeal-cache-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Deterministic test data and its piece hashes.
fn data_and_hashes(g: &Geometry) -> (Vec<u8>, Vec<[u8; 20]>) {
    let data: Vec<u8> = (0..g.total_len).map(|i| (i * 7 % 251) as u8).collect();
    let hashes = (0..g.num_pieces)
        .map(|p| {
            let o = g.piece_offset(P(p)) as usize;
            Sha1::digest(&data[o..o + g.piece_size(P(p)) as usize]).into()
        })
        .collect();
    (data, hashes)
}

fn two_file_disk(dir: &std::path::Path, lens: [u64; 2], mode: OpenMode) -> Disk {
    let layout = Layout::new(vec![
        FileSlot {
            path: "a/one".into(),
            offset: 0,
            len: lens[0],
            executable: false,
        },
        FileSlot {
            path: "a/two".into(),
            offset: lens[0],
            len: lens[1],
            executable: false,
        },
    ]);
    Disk::open(dir, layout, mode).unwrap()
}

fn block_data<'a>(g: &Geometry, data: &'a [u8], b: BlockRef) -> &'a [u8] {
    let o = (g.piece_offset(b.piece) + b.begin as u64) as usize;
    &data[o..o + b.len as usize]
}

#[test]
fn out_of_order_blocks_verify_write_and_read_back() {
    let g = Geometry::new(100_000, 32768).unwrap();
    let (data, hashes) = data_and_hashes(&g);
    let dir = temp_dir("order");
    let disk = two_file_disk(&dir, [40_000, 60_000], OpenMode::Create);
    let mut cache = Cache::new(g, hashes.clone(), 1 << 20);
    let mut written = Vec::new();
    for p in (0..g.num_pieces).rev() {
        let n = g.blocks_in_piece(P(p));
        for i in (0..n).rev() {
            let b = g.block(P(p), i);
            let r = cache.insert_block(b, block_data(&g, &data, b));
            assert_eq!(
                r,
                if i == 0 {
                    Insert::Verified
                } else {
                    Insert::Stored
                }
            );
        }
    }
    cache.flush(&disk, usize::MAX, &mut written).unwrap();
    assert_eq!(written, vec![P(3), P(2), P(1), P(0)]);
    let mut on_disk = std::fs::read(dir.join("a/one")).unwrap();
    on_disk.extend(std::fs::read(dir.join("a/two")).unwrap());
    assert_eq!(on_disk, data);
    // Seeding reads: from memory and from disk give the same bytes.
    let mut out = Vec::new();
    let b = g.block(P(1), 1);
    cache.read_block(&disk, b, &mut out).unwrap();
    assert_eq!(out, block_data(&g, &data, b));
    // Files created by this run are not re-hashed; re-opened ones are.
    assert_eq!(recheck(&disk, &g, &hashes).count(), 0);
    let reopened = two_file_disk(&dir, [40_000, 60_000], OpenMode::Create);
    assert_eq!(recheck(&reopened, &g, &hashes).count(), 4);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn corrupt_piece_fails_and_duplicate_is_ignored() {
    let g = Geometry::new(65536, 32768).unwrap();
    let (data, hashes) = data_and_hashes(&g);
    let mut cache = Cache::new(g, hashes, 0);
    let b0 = g.block(P(0), 0);
    assert_eq!(
        cache.insert_block(b0, block_data(&g, &data, b0)),
        Insert::Stored
    );
    assert_eq!(
        cache.insert_block(b0, block_data(&g, &data, b0)),
        Insert::Duplicate
    );
    let b1 = g.block(P(0), 1);
    let bad = vec![0u8; b1.len as usize];
    assert_eq!(cache.insert_block(b1, &bad), Insert::Failed);
    // The piece starts over and then verifies.
    assert_eq!(
        cache.insert_block(b1, block_data(&g, &data, b1)),
        Insert::Stored
    );
    assert_eq!(
        cache.insert_block(b0, block_data(&g, &data, b0)),
        Insert::Verified
    );
    assert_eq!(
        cache.pending_len(),
        1,
        "the verified piece waits to be written"
    );
}

#[test]
fn budget_caps_buffers_and_full_cache_refuses_blocks() {
    let g = Geometry::new(32768 * 10, 32768).unwrap();
    let (data, hashes) = data_and_hashes(&g);
    let mut cache = Cache::new(g, hashes, 0);
    for p in 0..MIN_BUFFERS as u32 {
        for i in 0..2 {
            let b = g.block(P(p), i);
            cache.insert_block(b, block_data(&g, &data, b));
        }
    }
    assert!(cache.is_full());
    assert_eq!(cache.memory(), MIN_BUFFERS * 32768);
    let b = g.block(P(9), 0);
    assert_eq!(
        cache.insert_block(b, block_data(&g, &data, b)),
        Insert::NoBuffer
    );
    let dir = temp_dir("full");
    let disk = two_file_disk(&dir, [32768 * 5, 32768 * 5], OpenMode::Create);
    let mut written = Vec::new();
    cache.flush(&disk, usize::MAX, &mut written).unwrap();
    assert!(!cache.is_full());
    assert_eq!(
        cache.insert_block(b, block_data(&g, &data, b)),
        Insert::Stored
    );
    assert_eq!(cache.memory(), MIN_BUFFERS * 32768);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn truncated_file_read_fails_instead_of_zero_fill() {
    let g = Geometry::new(100_000, 32768).unwrap();
    let (data, hashes) = data_and_hashes(&g);
    let dir = temp_dir("trunc");
    std::fs::create_dir_all(dir.join("a")).unwrap();
    std::fs::write(dir.join("a/one"), &data[..40_000]).unwrap();
    std::fs::write(dir.join("a/two"), &data[40_000..]).unwrap();
    let disk = two_file_disk(&dir, [40_000, 60_000], OpenMode::ReadOnly);
    assert_eq!(recheck(&disk, &g, &hashes).count(), 4);
    std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("a/two"))
        .unwrap()
        .set_len(10)
        .unwrap();
    let mut cache = Cache::new(g, hashes, 0);
    let mut out = Vec::new();
    assert!(cache.read_block(&disk, g.block(P(3), 0), &mut out).is_err());
    assert!(out.is_empty());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn segment_len_keeps_small_pieces_whole_and_splits_large_ones() {
    assert_eq!(segment_len(32768, 0), 32768);
    assert_eq!(segment_len(1 << 20, 0), 1 << 20);
    assert_eq!(segment_len(4 << 20, 16 << 20), 4 << 20);
    // 64 MiB pieces in the default 16 MiB: 2 MiB segments, eight of them.
    assert_eq!(segment_len(64 << 20, 16 << 20), 2 << 20);
    // `--cache 0`: split as if for 4 MiB.
    assert_eq!(segment_len(64 << 20, 0), 512 << 10);
    // Never more than the piece, never less than a block.
    assert_eq!(segment_len(3 << 20, 1), 512 << 10);
}

#[test]
fn a_large_piece_is_written_in_segments_and_marked_written_only_when_verified() {
    // 1 MiB + 4 blocks pieces, 512 KiB segments (the budget is 1 MiB).
    let piece_len = (1 << 20) + 4 * 16384;
    let g = Geometry::new(2 * piece_len as u64, piece_len).unwrap();
    let (data, hashes) = data_and_hashes(&g);
    let dir = temp_dir("segments");
    let disk = two_file_disk(&dir, [piece_len as u64, piece_len as u64], OpenMode::Create);
    let mut cache = Cache::new(g, hashes, 1 << 20);
    assert_eq!(cache.segment_len(), 512 << 10);
    let n = g.blocks_in_piece(P(0));
    let mut written = Vec::new();
    // Piece 0 in order: each segment the hash cursor leaves goes to the
    // write queue at once; flushing them marks nothing written.
    for i in 0..n - 1 {
        let b = g.block(P(0), i);
        assert_eq!(
            cache.insert_block(b, block_data(&g, &data, b)),
            Insert::Stored
        );
        cache.flush(&disk, usize::MAX, &mut written).unwrap();
        assert!(written.is_empty());
        assert!(
            cache.memory() <= 2 * (512 << 10),
            "one buffer in use at a time"
        );
    }
    let b = g.block(P(0), n - 1);
    assert_eq!(
        cache.insert_block(b, block_data(&g, &data, b)),
        Insert::Verified
    );
    cache.flush(&disk, usize::MAX, &mut written).unwrap();
    assert_eq!(written, vec![P(0)]);
    // Piece 1 with one corrupt block at the end: its early segments were
    // queued unverified; the failure drops what is still queued.
    for i in 0..n {
        let b = g.block(P(1), i);
        let mut d = block_data(&g, &data, b).to_vec();
        if i == n - 1 {
            d[0] ^= 1;
        }
        let r = cache.insert_block(b, &d);
        assert_eq!(
            r,
            if i == n - 1 {
                Insert::Failed
            } else {
                Insert::Stored
            }
        );
    }
    assert_eq!(cache.pending_len(), 0);
    written.clear();
    cache.flush(&disk, usize::MAX, &mut written).unwrap();
    assert!(written.is_empty());
    // Serving a block of piece 0 reads one read unit, not the piece.
    let mut cache = Cache::new(g, data_and_hashes(&g).1, 1 << 20);
    let mut out = Vec::new();
    let b = g.block(P(0), 9);
    cache.read_block(&disk, b, &mut out).unwrap();
    assert_eq!(out, block_data(&g, &data, b));
    assert_eq!(cache.stats.bytes_read_disk, READ_UNIT as u64);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn one_block_from_each_of_many_large_pieces_reads_little_more_than_asked() {
    // 16 MiB pieces, a peer asking one block of each of 8 pieces in turn,
    // at scattered offsets: whole pieces used to be read for each block
    // (1024 times what was served).
    let piece_len = 16 << 20;
    let g = Geometry::new(8 * piece_len as u64, piece_len).unwrap();
    let dir = temp_dir("amplify");
    let layout = Layout::new(vec![FileSlot {
        path: "big".into(),
        offset: 0,
        len: g.total_len,
        executable: false,
    }]);
    let disk = Disk::open(&dir, layout, OpenMode::Create).unwrap(); // sparse
    let mut cache = Cache::new(g, vec![[0; 20]; 8], 16 << 20);
    let mut served = 0u64;
    for round in 0..50u32 {
        for piece in 0..8 {
            let block = (round * 37 + piece * 11) % g.blocks_in_piece(P(piece));
            let b = g.block(P(piece), block);
            let mut out = Vec::new();
            cache.read_block(&disk, b, &mut out).unwrap();
            assert_eq!(out.len(), b.len as usize);
            served += b.len as u64;
        }
    }
    let read = cache.stats.bytes_read_disk;
    // At most one read unit (8 blocks) per block served.
    assert!(read <= 8 * served, "read {read} bytes to serve {served}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_block_read_in_place_counts_like_a_copied_one() {
    let g = Geometry::new(65536, 32768).unwrap();
    let (data, hashes) = data_and_hashes(&g);
    let mut cache = Cache::new(g, hashes, 1 << 20);
    let (b0, b1) = (g.block(P(0), 0), g.block(P(0), 1));
    let d = cache.begin_direct(b1).expect("a place");
    // Filled in two parts, as two reads from a socket would.
    let want = block_data(&g, &data, b1);
    cache.direct_dest(d).unwrap()[..100].copy_from_slice(&want[..100]);
    cache.direct_dest(d).unwrap()[100..].copy_from_slice(&want[100..]);
    assert_eq!(cache.commit_direct(d), Insert::Stored);
    // Counted once: a second commit or a copy of it is a duplicate.
    assert_eq!(cache.commit_direct(d), Insert::Duplicate);
    assert_eq!(cache.insert_block(b1, want), Insert::Duplicate);
    assert!(cache.begin_direct(b1).is_none());
    assert_eq!(
        cache.insert_block(b0, block_data(&g, &data, b0)),
        Insert::Verified
    );
}

#[test]
fn a_direct_block_overtaken_or_dropped_is_never_written_again() {
    let g = Geometry::new(65536, 32768).unwrap();
    let (data, hashes) = data_and_hashes(&g);
    let mut cache = Cache::new(g, hashes, 1 << 20);
    let (b0, b1) = (g.block(P(0), 0), g.block(P(0), 1));
    // Another peer's copy arrives whole while one is being read in place:
    // the place is no longer the reader's, and its commit changes nothing.
    let d = cache.begin_direct(b1).unwrap();
    cache.direct_dest(d).unwrap()[..10].fill(0xEE);
    assert_eq!(
        cache.insert_block(b1, block_data(&g, &data, b1)),
        Insert::Stored
    );
    assert!(cache.direct_dest(d).is_none());
    assert_eq!(cache.commit_direct(d), Insert::Duplicate);
    assert_eq!(
        cache.insert_block(b0, block_data(&g, &data, b0)),
        Insert::Verified
    );

    // The piece is dropped and started again: a reader that began in the
    // old assembly never writes into the new one.
    let (c0, c1) = (g.block(P(1), 0), g.block(P(1), 1));
    let old = cache.begin_direct(c1).unwrap();
    cache.drop_partial(P(1));
    assert!(cache.direct_dest(old).is_none());
    let new = cache.begin_direct(c1).unwrap();
    assert!(cache.direct_dest(old).is_none(), "same block, new assembly");
    assert_eq!(cache.commit_direct(old), Insert::Duplicate);
    cache
        .direct_dest(new)
        .unwrap()
        .copy_from_slice(block_data(&g, &data, c1));
    assert_eq!(cache.commit_direct(new), Insert::Stored);
    assert_eq!(
        cache.insert_block(c0, block_data(&g, &data, c0)),
        Insert::Verified
    );

    // A place is never made past the buffers there are.
    let mut tight = Cache::new(g, data_and_hashes(&g).1, 0);
    let mut placed = 0;
    for p in 0..g.num_pieces {
        for i in 0..g.blocks_in_piece(P(p)) {
            placed += usize::from(tight.begin_direct(g.block(P(p), i)).is_some());
        }
    }
    assert!(placed > 0);
    assert!(tight.memory() <= tight.max_buffers() * tight.segment_len() as usize);
}
