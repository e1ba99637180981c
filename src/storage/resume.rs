//! Resume data: which pieces were verified and on stable storage when a
//! torrent stopped cleanly, and how its files stood then (length and
//! modification time). A restart that finds every file as it was takes
//! the pieces from here instead of hashing all the data again; anything
//! else — no resume file, another torrent's, a damaged one, a file missing,
//! resized or modified since — means the usual check.
//!
//! The file is consumed when read: it describes the moment of one clean
//! stop (written after the output's `syncfs`), and the run that reads it
//! is about to change the files. A run that is killed leaves none, so the
//! next start checks. Only what was verified and synced is ever claimed.
//!
//! A bencoded dictionary: `{"files": [[length, mtime s, mtime ns], …],
//! "have": bitfield, "info-hash": 20 bytes, "pieces": count}`.

#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

use super::layout::Layout;
use crate::bencode::{self, KeyOrder, Limits, Writer};
use crate::bitfield::Bitfield;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// How a file stood: length, and modification time (seconds, nanoseconds).
pub type Stamp = (u64, i64, i64);

/// The resume file of torrent `info_hash` in `dir`.
pub fn file_in(dir: &Path, info_hash: &[u8; 20]) -> PathBuf {
    dir.join(format!(
        ".piecemeal-{}.resume",
        crate::metainfo::hex(info_hash)
    ))
}

/// How each file of `layout` under `root` stands now; `None` if one is
/// missing or not a regular file (a symbolic link is not followed).
pub fn stamps(root: &Path, layout: &Layout) -> Option<Vec<Stamp>> {
    layout
        .files
        .iter()
        .map(|f| {
            let m = std::fs::symlink_metadata(root.join(&f.path)).ok()?;
            m.is_file().then(|| (m.len(), m.mtime(), m.mtime_nsec()))
        })
        .collect()
}

/// The resume file's bytes.
pub fn encode(info_hash: &[u8; 20], have: &Bitfield, files: &[Stamp]) -> Vec<u8> {
    let mut w = Writer::new();
    w.dict();
    w.str("files").list();
    for &(len, s, ns) in files {
        w.list()
            .int(i64::try_from(len).unwrap_or(i64::MAX))
            .int(s)
            .int(ns)
            .end();
    }
    w.end();
    w.str("have").bytes(have.as_bytes());
    w.str("info-hash").bytes(info_hash);
    w.str("pieces").int(i64::from(have.len()));
    w.end();
    w.finish()
}

/// What a resume file says, if it is one for this torrent (`num_pieces`
/// pieces, `num_files` files): the pieces and the files' stamps.
pub fn decode(
    data: &[u8],
    info_hash: &[u8; 20],
    num_pieces: u32,
    num_files: usize,
) -> Option<(Bitfield, Vec<Stamp>)> {
    let limits = Limits {
        max_depth: 3,
        max_tokens: 16 + 5 * num_files,
        max_len: 256 + num_pieces as usize / 8 + 64 * num_files,
        key_order: KeyOrder::Any,
    };
    bencode::validate_dict(data, &limits).ok()?;
    let value = |k: &[u8]| data.get(bencode::dict_value_span(data, k)?);
    if bencode::string_body(value(b"info-hash")?)? != info_hash {
        return None;
    }
    if int(value(b"pieces")?)? != i64::from(num_pieces) {
        return None;
    }
    let have = Bitfield::from_wire(bencode::string_body(value(b"have")?)?, num_pieces).ok()?;
    let files = value(b"files")?;
    let items = bencode::list_item_spans(files);
    if items.len() != num_files {
        return None;
    }
    let stamps = items
        .into_iter()
        .map(|span| {
            let item = files.get(span)?;
            let parts: Vec<i64> = bencode::list_item_spans(item)
                .into_iter()
                .map(|s| int(item.get(s)?))
                .collect::<Option<_>>()?;
            match parts.as_slice() {
                &[len, s, ns] => Some((u64::try_from(len).ok()?, s, ns)),
                _ => None,
            }
        })
        .collect::<Option<Vec<Stamp>>>()?;
    Some((have, stamps))
}

/// A bencoded integer's value.
fn int(v: &[u8]) -> Option<i64> {
    std::str::from_utf8(v.strip_prefix(b"i")?.strip_suffix(b"e")?)
        .ok()?
        .parse()
        .ok()
}

/// Read and remove the resume file at `path`: the pieces it names, if it
/// is this torrent's and every file under `root` stands as it says.
/// `Err` explains why it was not used (for the log); no file is `Ok(None)`.
pub fn take(
    path: &Path,
    info_hash: &[u8; 20],
    num_pieces: u32,
    root: &Path,
    layout: &Layout,
) -> Result<Option<Bitfield>, String> {
    // Bounded like `decode` would: a larger file is not ours.
    let cap = 1024 + num_pieces as u64 / 8 + 64 * layout.files.len() as u64;
    let data = match crate::state_file::read(path, cap) {
        Ok(None) => return Ok(None),
        Ok(Some(data)) => Ok(data),
        Err(e) => Err(e.to_string()),
    };
    // Consumed whatever it holds: it is never trusted twice.
    let _ = std::fs::remove_file(path);
    let data = data?;
    let (have, saved) = decode(&data, info_hash, num_pieces, layout.files.len())
        .ok_or_else(|| "not this torrent's resume data".to_string())?;
    match stamps(root, layout) {
        Some(now) if now == saved => Ok(Some(have)),
        Some(_) => Err("the files changed since".into()),
        None => Err("a file is missing".into()),
    }
}

/// Write the resume file at `path` (see [`crate::state_file::write`]).
pub fn save(path: &Path, info_hash: &[u8; 20], have: &Bitfield, files: &[Stamp]) -> io::Result<()> {
    let tmp = path.with_extension("resume.tmp");
    crate::state_file::write(path, &tmp, &encode(info_hash, have, files))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::ids::PieceIndex;
    use crate::storage::FileSlot;

    fn layout() -> Layout {
        Layout::new(vec![
            FileSlot {
                path: "a".into(),
                offset: 0,
                len: 100,
                executable: false,
            },
            FileSlot {
                path: "d/b".into(),
                offset: 100,
                len: 50,
                executable: false,
            },
        ])
    }

    fn dir(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("piecemeal-resume-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("d")).unwrap();
        std::fs::write(d.join("a"), [1u8; 100]).unwrap();
        std::fs::write(d.join("d/b"), [2u8; 50]).unwrap();
        d
    }

    #[test]
    fn a_clean_stop_is_taken_back_once_while_the_files_stand_as_they_were() {
        let d = dir("once");
        let mut have = Bitfield::new(10);
        have.set(PieceIndex(0));
        have.set(PieceIndex(9));
        let path = file_in(&d, &[7; 20]);
        save(&path, &[7; 20], &have, &stamps(&d, &layout()).unwrap()).unwrap();
        let got = take(&path, &[7; 20], 10, &d, &layout()).unwrap().unwrap();
        assert_eq!(got.as_bytes(), have.as_bytes());
        assert!(!path.exists(), "consumed");
        assert_eq!(take(&path, &[7; 20], 10, &d, &layout()), Ok(None));
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn changed_files_or_another_torrent_mean_a_check() {
        let d = dir("changed");
        let have = Bitfield::full(10);
        let path = file_in(&d, &[7; 20]);
        let save_now = || save(&path, &[7; 20], &have, &stamps(&d, &layout()).unwrap()).unwrap();
        // Another torrent, or another piece count.
        save_now();
        assert!(take(&path, &[8; 20], 10, &d, &layout()).is_err());
        save_now();
        assert!(take(&path, &[7; 20], 11, &d, &layout()).is_err());
        // A file written to since (its time changes), resized, or gone.
        save_now();
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(d.join("a"))
            .unwrap();
        f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5))
            .unwrap();
        drop(f);
        assert_eq!(
            take(&path, &[7; 20], 10, &d, &layout()),
            Err("the files changed since".into())
        );
        save_now();
        std::fs::write(d.join("d/b"), [2u8; 51]).unwrap();
        assert!(take(&path, &[7; 20], 10, &d, &layout()).is_err());
        save_now();
        std::fs::remove_file(d.join("a")).unwrap();
        assert_eq!(
            take(&path, &[7; 20], 10, &d, &layout()),
            Err("a file is missing".into())
        );
        // A symbolic link in its place (to a device that never ends) is
        // not read; one where the temporary file goes is not written
        // through.
        std::os::unix::fs::symlink("/dev/zero", &path).unwrap();
        assert_eq!(
            take(&path, &[7; 20], 10, &d, &layout()),
            Err("not a regular file".into())
        );
        let victim = d.join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        std::os::unix::fs::symlink(&victim, path.with_extension("resume.tmp")).unwrap();
        save(&path, &[7; 20], &have, &[]).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        // Garbage, truncated or oversized files are refused (and removed).
        for junk in [&b"de"[..], b"d4:have", &vec![b'x'; 1 << 20]] {
            std::fs::write(&path, junk).unwrap();
            assert!(take(&path, &[7; 20], 10, &d, &layout()).is_err());
            assert!(!path.exists());
        }
        std::fs::remove_dir_all(d).unwrap();
    }
}
