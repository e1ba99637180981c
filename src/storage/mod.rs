//! Storage: where pieces live (layout), the only file I/O (disk), the
//! write-behind cache with incremental SHA-1 (cache), and the start-up
//! re-check of data already on disk.

#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

pub mod cache;
pub mod disk;
pub mod layout;
pub mod resume;

pub use cache::{Cache, Insert, ReadJob, WriteJob};
pub use disk::{Allocation, Disk, OpenMode, StorageError};
pub use layout::{FileSlot, Layout};

use crate::bitfield::Bitfield;
use crate::geometry::Geometry;
use crate::ids::PieceIndex;
use sha1::{Digest, Sha1};

/// Where a torrent's bytes live: [`Disk`] (its files), or [`MemStorage`]
/// for tests that drive a torrent with no files. Only the shell (the event
/// loop, and the job loops in [`crate::torrent::jobs`]) calls it: a
/// `Torrent` asks for storage work as jobs.
pub trait Storage {
    /// Fill `buf` from torrent offset `offset`.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), StorageError>;
    /// Write `data` at torrent offset `offset`.
    fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), StorageError>;
    /// Could the range hold data from before this run (worth hashing)?
    fn may_have_data(&self, _offset: u64, _len: usize) -> bool {
        true
    }
}

impl Storage for Disk {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), StorageError> {
        Disk::read_at(self, offset, buf)
    }
    fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), StorageError> {
        Disk::write_at(self, offset, data)
    }
    fn may_have_data(&self, offset: u64, len: usize) -> bool {
        Disk::may_have_data(self, offset, len)
    }
}

/// A torrent's bytes in memory (tests and fuzzing): reads past what was
/// written fail like a short file.
#[derive(Default)]
pub struct MemStorage {
    pub bytes: std::cell::RefCell<Vec<u8>>,
}

impl MemStorage {
    /// Storage holding `bytes` (a seeder's data).
    pub fn with(bytes: Vec<u8>) -> MemStorage {
        MemStorage {
            bytes: std::cell::RefCell::new(bytes),
        }
    }
}

impl Storage for MemStorage {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), StorageError> {
        let bytes = self.bytes.borrow();
        let src = usize::try_from(offset)
            .ok()
            .and_then(|o| bytes.get(o..o.checked_add(buf.len())?));
        match src {
            Some(src) => {
                buf.copy_from_slice(src);
                Ok(())
            }
            None => Err(StorageError {
                op: "read",
                path: "memory".into(),
                source: std::io::ErrorKind::UnexpectedEof.into(),
            }),
        }
    }
    fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), StorageError> {
        let mut bytes = self.bytes.borrow_mut();
        let start = usize::try_from(offset).map_err(|_| StorageError {
            op: "write",
            path: "memory".into(),
            source: std::io::ErrorKind::InvalidInput.into(),
        })?;
        let end = start + data.len();
        if bytes.len() < end {
            bytes.resize(end, 0);
        }
        if let Some(dest) = bytes.get_mut(start..end) {
            dest.copy_from_slice(data);
        }
        Ok(())
    }
}

/// Bytes read at a time when checking pieces, so that checking a torrent of
/// large pieces needs no piece-sized buffer.
const CHECK_CHUNK: usize = 1 << 20;

/// Verify the data already on disk, piece by piece, and return the pieces
/// that are present and correct. Pieces in files that did not exist (or were
/// empty) before are skipped without reading. Unreadable pieces (missing or
/// short files) simply count as missing. Memory: one buffer of at most
/// [`CHECK_CHUNK`] bytes, whatever the piece size.
pub fn recheck(disk: &impl Storage, geometry: &Geometry, hashes: &[[u8; 20]]) -> Bitfield {
    recheck_with(disk, geometry, hashes, |_| true)
}

/// [`recheck`], telling `progress` the bytes checked so far after each
/// piece; when it answers `false` the check stops there (the pieces not
/// checked count as missing).
pub fn recheck_with(
    disk: &impl Storage,
    geometry: &Geometry,
    hashes: &[[u8; 20]],
    mut progress: impl FnMut(u64) -> bool,
) -> Bitfield {
    let mut have = Bitfield::new(geometry.num_pieces);
    let mut buf = check_buffer(geometry);
    for piece in geometry.pieces() {
        if !progress(geometry.piece_offset(piece)) {
            break;
        }
        if check_piece(disk, geometry, hashes, piece, &mut buf) {
            have.set(piece);
        }
    }
    have
}

/// The buffer [`check_piece`] reads into.
pub fn check_buffer(geometry: &Geometry) -> Vec<u8> {
    vec![0u8; (geometry.piece_len as usize).min(CHECK_CHUNK)]
}

/// Is `piece` on disk and correct? Reads it in `buf`-sized chunks (none
/// when its files were created empty by this run).
pub fn check_piece(
    disk: &impl Storage,
    geometry: &Geometry,
    hashes: &[[u8; 20]],
    piece: PieceIndex,
    buf: &mut [u8],
) -> bool {
    let size = geometry.piece_size(piece) as usize;
    let offset = geometry.piece_offset(piece);
    if buf.is_empty() || !disk.may_have_data(offset, size) {
        return false;
    }
    let mut hasher = Sha1::new();
    let mut done = 0;
    while done < size {
        let n = (size - done).min(buf.len());
        let Some(chunk) = buf.get_mut(..n) else {
            return false; // never: `n` is at most `buf.len()`
        };
        if disk.read_at(offset + done as u64, chunk).is_err() {
            return false;
        }
        hasher.update(&*chunk);
        done += n;
    }
    let digest: [u8; 20] = hasher.finalize().into();
    hashes.get(piece.index()) == Some(&digest)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests may panic
mod tests;
