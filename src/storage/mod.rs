//! Storage: where pieces live (layout), the only file I/O (disk), the
//! write-behind cache with incremental SHA-1 (cache), and the start-up
//! re-check of data already on disk.

#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

pub mod cache;
pub mod disk;
pub mod layout;

pub use cache::{Cache, Insert};
pub use disk::{Disk, OpenMode, StorageError};
pub use layout::{FileSlot, Layout};

use crate::bitfield::Bitfield;
use crate::geometry::Geometry;
use sha1::{Digest, Sha1};

/// Verify the data already on disk, piece by piece, and return the pieces
/// that are present and correct. Pieces in files that did not exist (or were
/// empty) before are skipped without reading. Unreadable pieces (missing or
/// short files) simply count as missing.
pub fn recheck(disk: &Disk, geometry: &Geometry, hashes: &[[u8; 20]]) -> Bitfield {
    let mut have = Bitfield::new(geometry.num_pieces);
    let mut buf = vec![0u8; geometry.piece_len as usize];
    for piece in 0..geometry.num_pieces {
        let size = geometry.piece_size(piece) as usize;
        let offset = geometry.piece_offset(piece);
        if !disk.may_have_data(offset, size) {
            continue;
        }
        let Some(buf) = buf.get_mut(..size) else {
            continue; // never: a piece is at most `piece_len` bytes
        };
        if disk.read_at(offset, buf).is_err() {
            continue;
        }
        let digest: [u8; 20] = Sha1::digest(&*buf).into();
        if hashes.get(piece as usize) == Some(&digest) {
            have.set(piece);
        }
    }
    have
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests may panic
mod tests;
