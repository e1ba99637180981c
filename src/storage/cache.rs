//! The write-behind piece cache, under one memory budget.
//!
//! Blocks of a piece being downloaded are copied (once) into that piece's
//! buffer. SHA-1 is fed incrementally: every time the contiguous prefix of
//! received blocks grows, the new bytes are hashed while still hot in the CPU
//! cache, so each piece is hashed exactly once and never read back from disk
//! to be verified. A verified piece moves to the write queue; [`Cache::flush`]
//! writes queued pieces whole, with positioned writes. Written buffers are
//! kept as a small read cache for seeding, or returned to the pool.
//!
//! ```text
//!  block ─copy─► Assembly{buf, received, hash cursor} ─verified─► pending ─pwrite─► disk
//!                       │ hash mismatch                                │
//!                       ▼                                              ▼
//!                 dropped, re-requested                      read cache (LRU) ◄─pread── disk
//! ```
//!
//! Memory: at most `max_buffers` piece-sized buffers exist at once, whatever
//! the torrent size or run time. When none is free (the disk is slower than
//! the network, or full), [`Cache::is_full`] tells the event loop to stop
//! reading from peers until a flush frees one.

#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

use super::disk::{Disk, StorageError};
use crate::geometry::{BLOCK_LEN, BlockRef, Geometry};
use sha1::{Digest, Sha1};
use std::collections::{HashMap, VecDeque};
use std::io;
use std::path::PathBuf;

/// Fewest piece buffers the cache works with, even with `--cache 0`.
pub const MIN_BUFFERS: usize = 4;

/// A piece being assembled from blocks.
struct Assembly {
    buf: Vec<u8>,
    received: Vec<bool>,
    num_received: u32,
    /// Bytes `[0, hashed)` have been fed to `hasher`.
    hashed: u32,
    hasher: Sha1,
}

/// What happened to a block handed to [`Cache::insert_block`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Insert {
    /// Stored; the piece is not complete yet.
    Stored,
    /// Already had this block (endgame duplicate); data ignored.
    Duplicate,
    /// The piece is complete and its SHA-1 matches: queued for writing.
    Verified,
    /// The piece is complete and its SHA-1 does not match: dropped.
    Failed,
    /// No buffer is free: the block was not stored.
    NoBuffer,
}

/// Counters for the status line and the benchmarks.
#[derive(Clone, Copy, Debug, Default)]
pub struct CacheStats {
    pub bytes_written: u64,
    pub bytes_read_disk: u64,
    pub read_hits: u64,
    pub read_misses: u64,
}

/// The piece cache. See the module docs.
pub struct Cache {
    geometry: Geometry,
    hashes: Vec<[u8; 20]>,
    max_buffers: usize,
    allocated: usize,
    max_read_pieces: usize,
    pool: Vec<Vec<u8>>,
    partial: HashMap<u32, Assembly>,
    pending: VecDeque<(u32, Vec<u8>)>,
    read: VecDeque<(u32, Vec<u8>)>,
    pub stats: CacheStats,
}

impl Cache {
    /// A cache of `budget` bytes for a torrent of this geometry. `budget` 0
    /// keeps no read cache and only [`MIN_BUFFERS`] assembly buffers.
    pub fn new(geometry: Geometry, hashes: Vec<[u8; 20]>, budget: usize) -> Cache {
        let piece = (geometry.piece_len as usize).max(1);
        let max_buffers = (budget / piece).max(MIN_BUFFERS);
        Cache {
            geometry,
            hashes,
            max_buffers,
            allocated: 0,
            max_read_pieces: if budget == 0 { 0 } else { max_buffers },
            pool: Vec::new(),
            partial: HashMap::new(),
            pending: VecDeque::new(),
            read: VecDeque::new(),
            stats: CacheStats::default(),
        }
    }

    /// How many pieces may be partial at once (for the picker), leaving room
    /// for pieces waiting to be written and for the read cache.
    pub fn max_partial(&self) -> usize {
        (self.max_buffers - self.max_buffers / 4).max(2)
    }

    /// True when enough verified pieces wait to be written to make a batch
    /// worth it (4 MiB, or half the buffers). Writing every piece the turn it
    /// verifies measured slower (4.2 s against 2.5 s per GiB here): the loop
    /// alternated between small writes and socket reads. The event loop also
    /// writes whatever is pending once a second, so a killed process loses at
    /// most about a second of verified pieces (re-fetched on restart).
    pub fn should_flush(&self) -> bool {
        let bytes = self.pending.len() * self.geometry.piece_len as usize;
        bytes >= 4 << 20 || self.pending.len() * 2 >= self.max_buffers
    }

    /// Number of verified pieces not yet written.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// No buffer can be had without a flush: the event loop stops reading
    /// from peers until [`Cache::flush`] succeeds.
    pub fn is_full(&self) -> bool {
        self.allocated >= self.max_buffers
            && self.pool.is_empty()
            && self.read.is_empty()
            && !self.pending.is_empty()
    }

    /// Bytes held in piece buffers right now.
    pub fn memory(&self) -> usize {
        self.allocated * self.geometry.piece_len as usize
    }

    fn take_buffer(&mut self) -> Option<Vec<u8>> {
        if let Some(b) = self.pool.pop() {
            return Some(b);
        }
        if self.allocated < self.max_buffers {
            self.allocated += 1;
            return Some(Vec::with_capacity(self.geometry.piece_len as usize));
        }
        self.read.pop_front().map(|(_, b)| b)
    }

    fn give_back(&mut self, buf: Vec<u8>) {
        self.pool.push(buf);
    }

    /// Copy a received block into its piece and advance the piece's hash.
    /// `b` must be a block of this torrent ([`Geometry::is_block`]).
    pub fn insert_block(&mut self, b: BlockRef, data: &[u8]) -> Insert {
        debug_assert!(self.geometry.is_block(b.piece, b.begin, b.len));
        debug_assert_eq!(data.len(), b.len as usize);
        let size = self.geometry.piece_size(b.piece);
        if !self.partial.contains_key(&b.piece) {
            let Some(mut buf) = self.take_buffer() else {
                return Insert::NoBuffer;
            };
            // Every byte is overwritten by a block before it is hashed, so a
            // recycled buffer is not cleared (only its length is set).
            buf.resize(size as usize, 0);
            let n = self.geometry.blocks_in_piece(b.piece) as usize;
            self.partial.insert(
                b.piece,
                Assembly {
                    buf,
                    received: vec![false; n],
                    num_received: 0,
                    hashed: 0,
                    hasher: Sha1::new(),
                },
            );
        }
        let Some(a) = self.partial.get_mut(&b.piece) else {
            return Insert::NoBuffer;
        };
        // `b` is a block of this geometry (debug-asserted above), so both
        // lookups succeed; if not, the data is ignored like a duplicate.
        let start = b.begin as usize;
        let (Some(seen), Some(dest)) = (
            a.received.get_mut(b.index() as usize),
            a.buf.get_mut(start..start + data.len()),
        ) else {
            return Insert::Duplicate;
        };
        if *seen {
            return Insert::Duplicate;
        }
        dest.copy_from_slice(data);
        *seen = true;
        a.num_received += 1;
        // Feed SHA-1 every block the contiguous prefix now covers.
        while a.hashed < size && a.received.get((a.hashed / BLOCK_LEN) as usize) == Some(&true) {
            let from = a.hashed as usize;
            let to = (from + BLOCK_LEN as usize).min(size as usize);
            let Some(bytes) = a.buf.get(from..to) else {
                break;
            };
            a.hasher.update(bytes);
            a.hashed = to as u32;
        }
        if a.num_received as usize != a.received.len() {
            return Insert::Stored;
        }
        let Some(a) = self.partial.remove(&b.piece) else {
            return Insert::Stored;
        };
        debug_assert_eq!(a.hashed, size);
        let digest: [u8; 20] = a.hasher.finalize().into();
        if self.hashes.get(b.piece as usize) == Some(&digest) {
            self.pending.push_back((b.piece, a.buf));
            Insert::Verified
        } else {
            self.give_back(a.buf);
            Insert::Failed
        }
    }

    /// Forget a partial piece (all of its blocks), e.g. when giving up on it.
    pub fn drop_partial(&mut self, piece: u32) {
        if let Some(a) = self.partial.remove(&piece) {
            self.give_back(a.buf);
        }
    }

    /// Write queued pieces, oldest first, until `max_bytes` have been written
    /// or the queue is empty. Returns the pieces now on disk. On an error the
    /// failing piece stays queued (nothing is lost) and the error is returned.
    pub fn flush(
        &mut self,
        disk: &Disk,
        max_bytes: usize,
        written: &mut Vec<u32>,
    ) -> Result<(), StorageError> {
        let mut bytes = 0;
        while bytes < max_bytes {
            let Some((piece, buf)) = self.pending.pop_front() else {
                break;
            };
            if let Err(e) = disk.write_at(self.geometry.piece_offset(piece), &buf) {
                self.pending.push_front((piece, buf));
                return Err(e);
            }
            bytes += buf.len();
            self.stats.bytes_written += buf.len() as u64;
            written.push(piece);
            self.keep_for_reading(piece, buf);
        }
        Ok(())
    }

    fn keep_for_reading(&mut self, piece: u32, buf: Vec<u8>) {
        if self.max_read_pieces == 0 {
            return self.give_back(buf);
        }
        if self.read.len() >= self.max_read_pieces
            && let Some((_, old)) = self.read.pop_front()
        {
            self.give_back(old);
        }
        self.read.push_back((piece, buf));
    }

    /// Append the bytes of block `b` (a verified piece) to `out`, from memory
    /// when the piece is queued or cached, else by reading the whole piece
    /// from disk into the read cache.
    pub fn read_block(
        &mut self,
        disk: &Disk,
        b: BlockRef,
        out: &mut Vec<u8>,
    ) -> Result<(), StorageError> {
        // `b` passed `Geometry::request_in_range`; a block outside its piece
        // is an error all the same, never a panic.
        let range = b.begin as usize..b.begin as usize + b.len as usize;
        if let Some((_, buf)) = self.pending.iter().find(|(p, _)| *p == b.piece) {
            copy_block(buf, range, b, out)?;
            self.stats.read_hits += 1;
            return Ok(());
        }
        if let Some(pos) = self.read.iter().position(|(p, _)| *p == b.piece) {
            // Move to the back: most recently used.
            if let Some(entry) = self.read.remove(pos) {
                let copied = copy_block(&entry.1, range, b, out);
                self.read.push_back(entry);
                copied?;
            }
            self.stats.read_hits += 1;
            return Ok(());
        }
        self.stats.read_misses += 1;
        let size = self.geometry.piece_size(b.piece) as usize;
        let offset = self.geometry.piece_offset(b.piece);
        match self.take_buffer() {
            Some(mut buf) => {
                buf.resize(size, 0); // filled by the read below
                let r = disk.read_at(offset, &mut buf);
                if let Err(e) = r {
                    self.give_back(buf);
                    return Err(e);
                }
                self.stats.bytes_read_disk += size as u64;
                let copied = copy_block(&buf, range, b, out);
                self.keep_for_reading(b.piece, buf);
                copied
            }
            None => {
                // No buffer to spare: read just the block.
                let start = out.len();
                out.resize(start + b.len as usize, 0);
                let Some(dest) = out.get_mut(start..) else {
                    return Err(not_in_piece(b)); // never: `out` was just grown
                };
                let r = disk.read_at(offset + b.begin as u64, dest);
                if r.is_err() {
                    out.truncate(start);
                }
                self.stats.bytes_read_disk += b.len as u64;
                r
            }
        }
    }
}

/// Append `piece[range]` (block `b`) to `out`.
fn copy_block(
    piece: &[u8],
    range: std::ops::Range<usize>,
    b: BlockRef,
    out: &mut Vec<u8>,
) -> Result<(), StorageError> {
    out.extend_from_slice(piece.get(range).ok_or_else(|| not_in_piece(b))?);
    Ok(())
}

/// The error for a block that does not lie inside its piece (callers check
/// requests with [`Geometry::request_in_range`] first, so this is a bug guard).
fn not_in_piece(b: BlockRef) -> StorageError {
    StorageError {
        op: "read",
        path: PathBuf::new(),
        source: io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "block {}+{} of piece {} is outside the piece",
                b.begin, b.len, b.piece
            ),
        ),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests may panic
mod tests;
