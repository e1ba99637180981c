//! Disk and re-check over a layout with BEP 47 padding.

use super::*;
use crate::ids::PieceIndex as P;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const PIECE: u32 = 16384;

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("piecemeal-storage-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `a` (10000) | pad to piece 1 | `x/b` (20000) | pad to piece 3 | a whole
/// piece of padding (piece 3) | `c` (100, executable). Five pieces; the
/// stream has zeros where the padding is.
fn padded() -> (Layout, Vec<u8>, Geometry) {
    let slot = |path: &str, offset: u64, len: u64, executable| FileSlot {
        path: path.into(),
        offset,
        len,
        executable,
    };
    let layout = Layout::with_padding(
        vec![
            slot("a", 0, 10_000, false),
            slot("x/b", 16_384, 20_000, false),
            slot("c", 3 * 16_384 + 16_384, 100, true),
        ],
        4 * 16_384 + 100,
    );
    let mut stream = vec![0u8; layout.total_len as usize];
    for f in &layout.files {
        for i in f.offset..f.offset + f.len {
            stream[i as usize] = (i % 251) as u8 + 1; // never zero
        }
    }
    let g = Geometry::new(layout.total_len, PIECE).unwrap();
    (layout, stream, g)
}

fn hashes(g: &Geometry, stream: &[u8]) -> Vec<[u8; 20]> {
    (0..g.num_pieces)
        .map(|p| {
            let o = g.piece_offset(P(p)) as usize;
            Sha1::digest(&stream[o..o + g.piece_size(P(p)) as usize]).into()
        })
        .collect()
}

/// Every file and folder below `dir`, relative, sorted.
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
            if p.is_dir() {
                todo.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn writes_skip_padding_and_reads_of_padding_give_zeros() {
    let (layout, stream, _) = padded();
    let dir = temp_dir("pad-write");
    let disk = Disk::open(&dir, layout.clone(), OpenMode::Create).unwrap();
    assert_eq!(tree(&dir), ["a", "c", "x", "x/b"], "no file for padding");
    // Piece by piece, as the cache writes.
    for chunk in (0..stream.len()).step_by(PIECE as usize) {
        let end = (chunk + PIECE as usize).min(stream.len());
        disk.write_at(chunk as u64, &stream[chunk..end]).unwrap();
    }
    for f in &layout.files {
        let o = f.offset as usize;
        let on_disk = std::fs::read(dir.join(&f.path)).unwrap();
        assert!(on_disk == stream[o..o + f.len as usize], "{:?}", f.path);
    }
    assert_eq!(tree(&dir), ["a", "c", "x", "x/b"]);
    // Any range reads back as the stream, padding as zeros, whatever the
    // buffer held before.
    for (start, len) in [
        (0, 16_384),
        (9_990, 30),
        (10_000, 6_384),
        (30_000, 35_636),
        (0, 65_636),
    ] {
        let mut buf = vec![0xAA; len];
        disk.read_at(start as u64, &mut buf).unwrap();
        assert!(buf == stream[start..start + len], "{start}+{len}");
    }
    // Non-zero bytes aimed at padding are dropped, not stored anywhere.
    disk.write_at(10_000, &[0x55; 6_384]).unwrap();
    let mut buf = vec![0xAA; 6_384];
    disk.read_at(10_000, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 0));
    assert_eq!(std::fs::metadata(dir.join("a")).unwrap().len(), 10_000);
    // `x` on create.
    let mode = |p: &str| std::fs::metadata(dir.join(p)).unwrap().permissions().mode();
    assert_eq!(mode("c") & 0o100, 0o100);
    assert_eq!(mode("a") & 0o111, 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn recheck_of_original_files_without_pad_files_finds_every_piece() {
    let (layout, stream, g) = padded();
    let dir = temp_dir("pad-recheck");
    for f in &layout.files {
        let p = dir.join(&f.path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let o = f.offset as usize;
        std::fs::write(&p, &stream[o..o + f.len as usize]).unwrap();
    }
    let hashes = hashes(&g, &stream);
    let disk = Disk::open(&dir, layout.clone(), OpenMode::ReadOnly).unwrap();
    let have = recheck(&disk, &g, &hashes);
    assert!(have.is_full(), "{} of {}", have.count(), g.num_pieces);

    // One wrong byte in `x/b` spoils exactly the piece it is in.
    std::fs::write(dir.join("x/b"), {
        let mut b = stream[16_384..36_384].to_vec();
        b[19_000] ^= 1; // stream byte 35_384: piece 2
        b
    })
    .unwrap();
    let disk = Disk::open(&dir, layout, OpenMode::ReadOnly).unwrap();
    let have = recheck(&disk, &g, &hashes);
    let got: Vec<bool> = (0..g.num_pieces).map(|p| have.get(P(p))).collect();
    assert_eq!(got, [true, true, false, true, true]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn on_a_fresh_download_only_pieces_of_padding_alone_are_had() {
    let (layout, stream, g) = padded();
    let dir = temp_dir("pad-fresh");
    let disk = Disk::open(&dir, layout, OpenMode::Create).unwrap();
    let have = recheck(&disk, &g, &hashes(&g, &stream));
    let got: Vec<bool> = (0..g.num_pieces).map(|p| have.get(P(p))).collect();
    assert_eq!(got, [false, false, false, true, false]);
    let _ = std::fs::remove_dir_all(&dir);
}

fn plain(files: &[(&str, u64)]) -> Layout {
    let mut offset = 0;
    let slots = files
        .iter()
        .map(|&(path, len)| {
            let s = FileSlot {
                path: path.into(),
                offset,
                len,
                executable: false,
            };
            offset += len;
            s
        })
        .collect();
    Layout::new(slots)
}

#[test]
fn a_symlinked_folder_or_file_in_the_output_is_never_followed() {
    let dir = temp_dir("symlinks");
    let (out, outside) = (dir.join("out"), dir.join("outside"));
    std::fs::create_dir_all(&out).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("victim"), vec![7u8; 1000]).unwrap();
    // A folder of the torrent is a link to somewhere else.
    std::os::unix::fs::symlink(&outside, out.join("x")).unwrap();
    let e = Disk::open(&out, plain(&[("x/a", 10)]), OpenMode::Create)
        .err()
        .expect("refused");
    assert!(e.to_string().contains("symbolic link"), "{e}");
    assert!(!outside.join("a").exists(), "a file appeared outside");
    // A file of the torrent is a link to an outside file: not cut, not
    // written, not even opened.
    std::os::unix::fs::symlink(outside.join("victim"), out.join("f")).unwrap();
    let e = Disk::open(&out, plain(&[("f", 10)]), OpenMode::Create)
        .err()
        .expect("refused");
    assert!(e.to_string().contains("symbolic link"), "{e}");
    assert!(Disk::open(&out, plain(&[("f", 10)]), OpenMode::ReadOnly).is_err());
    assert_eq!(
        std::fs::read(outside.join("victim")).unwrap(),
        vec![7u8; 1000]
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn an_existing_longer_file_is_refused_not_cut() {
    let dir = temp_dir("longer");
    std::fs::write(dir.join("big"), vec![1u8; 5000]).unwrap();
    let e = Disk::open(&dir, plain(&[("big", 100)]), OpenMode::Create)
        .err()
        .expect("refused");
    assert!(e.to_string().contains("longer"), "{e}");
    assert_eq!(std::fs::metadata(dir.join("big")).unwrap().len(), 5000);
    // A shorter one (an interrupted download of ours) is extended.
    std::fs::write(dir.join("small"), vec![1u8; 10]).unwrap();
    Disk::open(&dir, plain(&[("small", 100)]), OpenMode::Create).unwrap();
    assert_eq!(std::fs::metadata(dir.join("small")).unwrap().len(), 100);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn many_files_are_served_through_a_bounded_pool_of_open_files() {
    let dir = temp_dir("pool");
    let names: Vec<String> = (0..500).map(|i| format!("d{}/f{i}", i % 7)).collect();
    let files: Vec<(&str, u64)> = names.iter().map(|n| (n.as_str(), 300)).collect();
    let layout = plain(&files);
    let disk = Disk::open(&dir, layout.clone(), OpenMode::Create).unwrap();
    let cap = disk::max_open_files();
    assert!(disk.open_count() <= cap);
    let total = 500 * 300;
    let data: Vec<u8> = (0..total).map(|i| (i % 253) as u8).collect();
    // Write in an order that defeats any small cache, then read back.
    for chunk in (0..total / 1000).rev() {
        disk.write_at(chunk as u64 * 1000, &data[chunk * 1000..][..1000])
            .unwrap();
        assert!(disk.open_count() <= cap);
    }
    let mut back = vec![0u8; total];
    disk.read_at(0, &mut back).unwrap();
    assert!(back == data);
    assert!(disk.open_count() <= cap);
    disk.sync().unwrap();
    drop(disk);
    let reopened = Disk::open(&dir, layout, OpenMode::ReadOnly).unwrap();
    let mut again = vec![0u8; total];
    reopened.read_at(0, &mut again).unwrap();
    assert!(again == data);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn what_was_written_long_ago_is_let_go_and_the_backlog_stays_bounded() {
    // 40 MiB in 1 MiB writes: the backlog of ranges to drop holds at most
    // DROP_BEHIND bytes; 5,000 one-byte files make 5,000 tiny ranges, of
    // which at most 4,096 are remembered.
    let dir = temp_dir("drop-behind");
    let big = Layout::new(vec![FileSlot {
        path: "big".into(),
        offset: 0,
        len: 40 << 20,
        executable: false,
    }]);
    let disk = Disk::open(&dir, big, OpenMode::Create).unwrap();
    let chunk = vec![7u8; 1 << 20];
    for i in 0..40u64 {
        disk.write_at(i << 20, &chunk).unwrap();
        assert!(disk.drop_behind_backlog().1 <= crate::storage::disk::DROP_BEHIND);
    }
    assert_eq!(disk.drop_behind_backlog(), (32, 32 << 20));
    // Dropping is advice: every byte reads back.
    let mut back = vec![0u8; 1 << 20];
    disk.read_at(0, &mut back).unwrap();
    assert!(back == chunk);
    let tiny = Layout::new(
        (0..5000u64)
            .map(|i| FileSlot {
                path: format!("t/{i}").into(),
                offset: i,
                len: 1,
                executable: false,
            })
            .collect(),
    );
    let disk = Disk::open(&dir, tiny, OpenMode::Create).unwrap();
    disk.write_at(0, &vec![1u8; 5000]).unwrap();
    let (ranges, bytes) = disk.drop_behind_backlog();
    assert_eq!(ranges, 4096);
    assert_eq!(bytes, 4096);
    std::fs::remove_dir_all(dir).unwrap();
}

/// Whether `dir`'s file system takes `fallocate` (ext4, XFS, btrfs, tmpfs
/// do; some others do not, and then there is nothing to reserve).
fn fallocate_works(dir: &Path) -> bool {
    use std::os::fd::AsRawFd;
    let probe = dir.join("probe");
    let f = std::fs::File::create(&probe).unwrap();
    // SAFETY: a plain syscall on a descriptor we own.
    let ok = unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, 4096) } == 0;
    std::fs::remove_file(probe).unwrap();
    ok
}

fn allocated(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().blocks() * 512
}

#[test]
fn new_files_have_their_space_reserved_unless_sparse_is_asked_for() {
    let dir = temp_dir("reserve");
    if !fallocate_works(&dir) {
        eprintln!("skipped: {} has no fallocate", dir.display());
        return;
    }
    const LEN: u64 = 3 << 20;
    let reserved = dir.join("reserved");
    let disk = Disk::open(
        &reserved,
        plain(&[("a", LEN), ("b/c", 1000)]),
        OpenMode::Create,
    )
    .unwrap();
    assert!(allocated(&reserved.join("a")) >= LEN);
    assert!(allocated(&reserved.join("b/c")) >= 1000);
    assert_eq!(std::fs::metadata(reserved.join("a")).unwrap().len(), LEN);
    // Reserved space reads as zeros, and writes land where they should.
    let mut buf = vec![9u8; 100];
    disk.read_at(LEN - 100, &mut buf).unwrap();
    assert_eq!(buf, vec![0u8; 100]);
    disk.write_at(5, &[1, 2, 3]).unwrap();
    let mut buf = [0u8; 3];
    disk.read_at(5, &mut buf).unwrap();
    assert_eq!(buf, [1, 2, 3]);
    drop(disk);

    let sparse = dir.join("sparse");
    let layout = plain(&[("a", LEN)]);
    Disk::open_allocating(&sparse, layout, OpenMode::Create, Allocation::Sparse).unwrap();
    assert_eq!(std::fs::metadata(sparse.join("a")).unwrap().len(), LEN);
    assert_eq!(allocated(&sparse.join("a")), 0);

    // A shorter file (an interrupted download) keeps its data; the rest
    // is reserved.
    let grown = dir.join("grown");
    std::fs::create_dir_all(&grown).unwrap();
    std::fs::write(grown.join("a"), vec![7u8; 5000]).unwrap();
    Disk::open(&grown, plain(&[("a", LEN)]), OpenMode::Create).unwrap();
    let data = std::fs::read(grown.join("a")).unwrap();
    assert_eq!(data.len() as u64, LEN);
    assert!(data[..5000].iter().all(|&b| b == 7));
    assert!(data[5000..].iter().all(|&b| b == 0));
    assert!(allocated(&grown.join("a")) >= LEN);
    std::fs::remove_dir_all(dir).unwrap();
}
