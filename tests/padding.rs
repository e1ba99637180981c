//! BEP 47 padding end to end: a hybrid torrent with pad files (shaped as
//! libtorrent makes them) is seeded from the original files, with no pad
//! file on disk, and downloaded by another piecemeal, which creates none.

mod common;
use common::*;
use piecemeal::metainfo::Metainfo;
use std::time::Duration;

const PIECE: u32 = 32768;

/// Pads after every file but the empty ones and the aligned one; `tiny` and
/// `tiny2` get pads of the same length, so two pad files share one path.
const FILES: &[(&str, usize)] = &[
    ("padded/a/empty", 0),
    ("padded/a/tiny", 100),
    ("padded/a/tiny2", 100),
    ("padded/b/mid", 50_000),
    ("padded/c/aligned", 65_536),
    ("padded/c/big", 300_001),
    ("padded/d/last", 40_000),
];

/// The files and folders a download of `FILES` must leave, and nothing else.
fn expected_tree() -> Vec<String> {
    let mut want: Vec<String> = FILES.iter().map(|(p, _)| p.to_string()).collect();
    for (p, _) in FILES {
        let mut dir = std::path::Path::new(p);
        while let Some(parent) = dir.parent().filter(|d| !d.as_os_str().is_empty()) {
            want.push(parent.to_string_lossy().into_owned());
            dir = parent;
        }
    }
    want.sort();
    want.dedup();
    want
}

#[test]
fn seed_without_pad_files_verifies_every_piece_and_download_creates_none() {
    let tmp = TempDir::new("padding");
    let seed_dir = tmp.join("seed");
    write_files(&seed_dir, FILES);
    let bytes = padded_hybrid_torrent(&seed_dir, "padded", FILES, PIECE);
    let meta = Metainfo::from_bytes(&bytes).unwrap();
    let num = meta.info.pieces.len() as u64;
    let pads = meta.info.files.iter().filter(|f| f.attr.padding).count();
    assert_eq!(pads, 5, "the fixture has the pads it means to have");
    let torrent = tmp.join("t.torrent");
    std::fs::write(&torrent, &bytes).unwrap();
    let t = torrent.to_str().unwrap();

    let (seeder, port) = start_seeder(&tmp, &seed_dir, t, &[]);
    assert_eq!(
        verified_at_start(&seeder.log_text()),
        Some(num),
        "the seeder must verify every piece without pad files on disk; log:\n{}",
        seeder.log_text()
    );

    let out = tmp.join("out");
    let peer = format!("127.0.0.1:{port}");
    let mut leech = Proc::start(
        "leech",
        tmp.path(),
        &download_args(t, &out, &peer),
        tmp.path(),
    );
    assert_eq!(
        leech.wait(Duration::from_secs(60)),
        0,
        "log:\n{}",
        leech.log_text()
    );
    assert_eq!(leech.status().have, num);
    assert_same_files(&seed_dir, &out, FILES);
    assert_eq!(tree_of(&out), expected_tree(), "only the real files");
    assert_eq!(tree_of(&seed_dir), expected_tree(), "the seeder made none");
}
