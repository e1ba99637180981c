//! The write-behind piece cache, under one memory budget.
//!
//! Blocks of a piece being downloaded are copied (once) into buffers of one
//! *segment* each: the whole piece, or for pieces too large for the budget a
//! fixed run of blocks ([`segment_len`]). SHA-1 is fed incrementally: every
//! time the contiguous prefix of received blocks grows, the new bytes are
//! hashed while still hot in the CPU cache, so each piece is hashed exactly
//! once and never read back from disk to be verified. A verified piece moves
//! to the write queue; [`Cache::flush`] writes queued segments with
//! positioned writes. Written buffers are kept as a small read cache for
//! seeding, or returned to the pool.
//!
//! ```text
//!  block ─copy─► Assembly{segments, received, hash cursor} ─verified─► pending ─pwrite─► disk
//!                       │ hash mismatch                                  │
//!                       ▼                                                ▼
//!                 dropped, re-requested                  read cache (LRU) ◄─pread── disk
//! ```
//!
//! A large piece (several segments) hands each segment to the write queue as
//! soon as the hash cursor has passed it, before the piece is verified: the
//! piece is marked written only with its last segment, after its hash
//! matched, so data on disk is never taken for verified unless it was. A
//! failed piece's queued segments are dropped; what was already written is
//! overwritten when the piece is fetched again (and fails a recheck until
//! then).
//!
//! Memory: at most `max_buffers` segment buffers exist at once, whatever the
//! torrent size, piece size or run time. The picker only requests blocks
//! whose segment has a buffer to come ([`Cache::assembly_budget`]), so a
//! requested block always has room.

#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

use super::{Storage, StorageError};
use crate::geometry::{BLOCK_LEN, BlockRef, Geometry};
use crate::ids::PieceIndex;
use sha1::{Digest, Sha1};
use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::BuildHasher;
use std::io;
use std::path::PathBuf;

/// Fewest segment buffers the cache works with, even with `--cache 0`.
pub const MIN_BUFFERS: usize = 4;

/// Pieces up to this size are always held whole.
pub const WHOLE_PIECE_MAX: u32 = 1 << 20;

/// What one read for seeding takes from disk at most: the block asked for
/// and the rest of its aligned 128 KiB (modest read-ahead; the kernel's
/// page cache holds the rest). 128 KiB rather than 256: the seeder's peak
/// RSS fell from 7.7-8.0 to 6.9-7.1 MiB (8 entries of half the size), with
/// the same rate and seeder CPU (1 GiB on loopback, 4 alternating runs).
pub const READ_UNIT: u32 = 128 * 1024;

/// The budget large pieces are split for when `--cache` is smaller.
const MIN_SPLIT_BUDGET: usize = 4 << 20;

/// The buffer unit for a torrent: the whole piece when [`MIN_BUFFERS`] of
/// them fit the budget (or the piece is at most [`WHOLE_PIECE_MAX`]);
/// otherwise the largest power of two of blocks that gives at least eight
/// buffers in the budget (at least 4 MiB of it).
pub fn segment_len(piece_len: u32, budget: usize) -> u32 {
    let piece = piece_len.max(1);
    if piece <= WHOLE_PIECE_MAX || (piece as usize).saturating_mul(MIN_BUFFERS) <= budget {
        return piece;
    }
    let target = budget.max(MIN_SPLIT_BUDGET) / 8;
    let mut seg = BLOCK_LEN;
    while (seg as usize) * 2 <= target && seg * 2 < piece {
        seg *= 2;
    }
    seg
}

/// A piece being assembled from blocks.
struct Assembly {
    /// Which assembly this is ([`Cache::next_assembly`]): a block read
    /// straight into its place names the assembly it was placed in, so a
    /// piece dropped and started again is never written by a reader that
    /// began in the old one.
    id: u64,
    /// One buffer per segment, present from its first block until the hash
    /// cursor has passed it.
    segs: Vec<Option<Vec<u8>>>,
    received: Vec<bool>,
    num_received: u32,
    /// Bytes `[0, hashed)` have been fed to `hasher`.
    hashed: u32,
    hasher: Sha1,
    /// Per-block fingerprints of the hashed prefix, for a piece under audit
    /// assembled in segments (see [`crate::blame`]).
    fps: Option<Vec<u64>>,
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

/// A block being read straight into its place in its piece's buffer
/// ([`Cache::begin_direct`]): the block and the assembly it was placed in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirectBlock {
    pub block: BlockRef,
    assembly: u64,
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
    seg_len: u32,
    max_buffers: usize,
    allocated: usize,
    max_read_segs: usize,
    pool: Vec<Vec<u8>>,
    partial: HashMap<PieceIndex, Assembly>,
    /// The id the next assembly gets.
    next_assembly: u64,
    pending: VecDeque<WriteJob>,
    pending_bytes: usize,
    /// Written segments of verified pieces: `(piece, begin, bytes)`.
    read: VecDeque<ReadEntry>,
    /// Pieces whose blocks are fingerprinted as they complete (at most
    /// [`crate::blame::MAX_SUSPECTS`] are asked for at once).
    audit: HashSet<PieceIndex>,
    /// Fingerprints of the last piece that completed, if taken.
    fingerprints: Option<Vec<u64>>,
    /// The per-process key of block fingerprints.
    fp_key: RandomState,
    pub stats: CacheStats,
}

impl Cache {
    /// A cache of `budget` bytes for a torrent of this geometry. `budget` 0
    /// keeps no read cache and only [`MIN_BUFFERS`] assembly buffers.
    pub fn new(geometry: Geometry, hashes: Vec<[u8; 20]>, budget: usize) -> Cache {
        let seg_len = segment_len(geometry.piece_len, budget);
        let max_buffers = (budget / seg_len as usize).max(MIN_BUFFERS);
        Cache {
            geometry,
            hashes,
            seg_len,
            max_buffers,
            allocated: 0,
            max_read_segs: read_entries(budget, max_buffers),
            pool: Vec::new(),
            partial: HashMap::new(),
            next_assembly: 0,
            pending: VecDeque::new(),
            pending_bytes: 0,
            read: VecDeque::new(),
            audit: HashSet::new(),
            fingerprints: None,
            fp_key: RandomState::new(),
            stats: CacheStats::default(),
        }
    }

    /// Fingerprint the blocks of `piece` when it next completes (a failed
    /// copy of it is being compared with the next one).
    pub fn audit(&mut self, piece: PieceIndex) {
        if self.audit.len() < crate::blame::MAX_SUSPECTS * 2 {
            self.audit.insert(piece);
        }
    }

    /// The fingerprints of the last piece that completed: always for a
    /// failed piece held whole, and for any piece under audit.
    pub fn take_fingerprints(&mut self) -> Option<Vec<u64>> {
        self.fingerprints.take()
    }

    /// Change the budget (the session shares one among its torrents). The
    /// segment size stays; buffers beyond the new count are given back at
    /// once when idle (the pool, then the read cache), the rest as they
    /// free up. Open segments already promised keep their place: the
    /// picker only opens fewer from now on.
    pub fn set_budget(&mut self, budget: usize) {
        self.max_buffers = (budget / self.seg_len as usize).max(MIN_BUFFERS);
        self.max_read_segs = read_entries(budget, self.max_buffers);
        self.shed();
    }

    /// Give back buffers nobody uses: the pool, and read-cache entries
    /// beyond the budget.
    fn shed(&mut self) {
        while self.allocated > self.max_buffers && self.pool.pop().is_some() {
            self.allocated -= 1;
        }
        while self.allocated > self.max_buffers && self.read.pop_front().is_some() {
            self.allocated -= 1;
        }
        self.trim_reads();
    }

    /// Nothing is being assembled or waits to be written: free the spare
    /// buffers (an idle torrent holds none but its read cache).
    pub fn release_idle(&mut self) {
        if self.partial.is_empty() && self.pending.is_empty() {
            self.allocated -= self.pool.len();
            self.pool.clear();
            self.pool.shrink_to_fit();
        }
    }

    /// The torrent's shape.
    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// The pieces' SHA-1 hashes.
    pub fn hashes(&self) -> &[[u8; 20]] {
        &self.hashes
    }

    /// Bytes per buffer segment.
    pub fn segment_len(&self) -> u32 {
        self.seg_len
    }

    /// Most segment buffers that exist at once.
    pub fn max_buffers(&self) -> usize {
        self.max_buffers
    }

    /// Blocks per buffer segment (for [`crate::picker::Picker::set_segment_blocks`]).
    pub fn segment_blocks(&self) -> u32 {
        self.seg_len.div_ceil(BLOCK_LEN)
    }

    /// How many segments partial pieces may hold open now: every buffer
    /// not holding a segment that waits to be written. The picker keeps its
    /// open segments within this, so an assembly always finds a buffer.
    pub fn assembly_budget(&self) -> usize {
        self.max_buffers.saturating_sub(self.pending.len())
    }

    /// True when enough verified data waits to be written to make a batch
    /// worth it (4 MiB, or half the buffers). Writing every piece the turn it
    /// verifies measured slower (4.2 s against 2.5 s per GiB here): the loop
    /// alternated between small writes and socket reads. The event loop also
    /// writes whatever is pending once a second, so a killed process loses at
    /// most about a second of verified pieces (re-fetched on restart).
    pub fn should_flush(&self) -> bool {
        self.pending_bytes >= 4 << 20 || self.pending.len() * 2 >= self.max_buffers
    }

    /// Number of segments waiting to be written.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Every buffer holds a segment waiting to be written: nothing can be
    /// assembled until a flush.
    pub fn is_full(&self) -> bool {
        self.pending.len() >= self.max_buffers
    }

    /// Bytes held in segment buffers right now.
    pub fn memory(&self) -> usize {
        self.allocated * self.seg_len as usize
    }

    fn take_buffer(&mut self) -> Option<Vec<u8>> {
        if let Some(b) = self.pool.pop() {
            return Some(b);
        }
        if self.allocated < self.max_buffers {
            self.allocated += 1;
            return Some(Vec::with_capacity(self.seg_len as usize));
        }
        // Steal the oldest read-cache buffer (block-sized ones never stay).
        self.read.pop_front().map(|e| e.data)
    }

    fn give_back(&mut self, buf: Vec<u8>) {
        self.pool.push(buf);
    }

    /// Size of segment `seg` of `piece`.
    fn seg_size(&self, piece: PieceIndex, seg: u32) -> u32 {
        seg_size_of(self.geometry.piece_size(piece), seg, self.seg_len)
    }

    fn queue_write(&mut self, piece: PieceIndex, begin: u32, data: Vec<u8>, completes: bool) {
        self.pending_bytes += data.len();
        self.pending.push_back(WriteJob {
            offset: self.geometry.piece_offset(piece) + begin as u64,
            data,
            piece,
            begin,
            completes,
        });
    }

    /// Copy a received block into its piece and advance the piece's hash.
    /// `b` must be a block of this torrent ([`Geometry::is_block`]).
    pub fn insert_block(&mut self, b: BlockRef, data: &[u8]) -> Insert {
        debug_assert_eq!(data.len(), b.len as usize);
        if let Err(why) = self.place(b) {
            return why;
        }
        match self.dest(b) {
            Some(dest) if dest.len() == data.len() => dest.copy_from_slice(data),
            // `b` is a block of this geometry (debug-asserted in `place`),
            // so its place exists; if not, the data is ignored.
            _ => return Insert::Duplicate,
        }
        self.commit(b)
    }

    /// Make a place for block `b` to be read straight into (its piece's
    /// assembly started, its segment's buffer taken), as
    /// [`insert_block`](Self::insert_block) would for a copy. `None` if the
    /// block is already here or no buffer is free: then it is received the
    /// usual way. The bytes go to [`direct_dest`](Self::direct_dest) and
    /// count once [`commit_direct`](Self::commit_direct) is called.
    pub fn begin_direct(&mut self, b: BlockRef) -> Option<DirectBlock> {
        self.place(b).ok()?;
        let assembly = self.partial.get(&b.piece)?.id;
        Some(DirectBlock { block: b, assembly })
    }

    /// Where the bytes of a direct block go: its whole place in the piece.
    /// `None` once they are no longer wanted there: the block arrived
    /// whole from another peer, or its piece completed, failed or was
    /// dropped (and perhaps started again, in other buffers). The caller
    /// then reads the rest of the block into nothing.
    pub fn direct_dest(&mut self, d: DirectBlock) -> Option<&mut [u8]> {
        let a = self.partial.get(&d.block.piece)?;
        if a.id != d.assembly || a.received.get(d.block.index() as usize) != Some(&false) {
            return None;
        }
        self.dest(d.block)
    }

    /// Every byte of a direct block is in its place: count it, as
    /// [`insert_block`](Self::insert_block) counts a copied one. A block no
    /// longer wanted there ([`direct_dest`](Self::direct_dest) is `None`) is
    /// [`Insert::Duplicate`], and nothing changes.
    pub fn commit_direct(&mut self, d: DirectBlock) -> Insert {
        if self.direct_dest(d).is_none() {
            return Insert::Duplicate;
        }
        self.commit(d.block)
    }

    /// Start `b`'s piece's assembly and take a buffer for its segment if
    /// need be. `Err` if the block is here already or no buffer is free.
    fn place(&mut self, b: BlockRef) -> Result<(), Insert> {
        debug_assert!(self.geometry.is_block(b.piece, b.begin, b.len));
        let size = self.geometry.piece_size(b.piece);
        let seg_len = self.seg_len;
        let seg = b.begin / seg_len;
        if !self.partial.contains_key(&b.piece) {
            let n = self.geometry.blocks_in_piece(b.piece) as usize;
            let nsegs = size.div_ceil(seg_len) as usize;
            let id = self.next_assembly;
            self.next_assembly += 1;
            self.partial.insert(
                b.piece,
                Assembly {
                    id,
                    segs: (0..nsegs).map(|_| None).collect(),
                    received: vec![false; n],
                    num_received: 0,
                    hashed: 0,
                    hasher: Sha1::new(),
                    fps: (nsegs > 1 && self.audit.contains(&b.piece)).then(Vec::new),
                },
            );
        }
        let seg_size = self.seg_size(b.piece, seg);
        let needs_buffer = match self.partial.get(&b.piece) {
            Some(a) => {
                if a.received.get(b.index() as usize) != Some(&false) {
                    return Err(Insert::Duplicate);
                }
                matches!(a.segs.get(seg as usize), Some(None))
            }
            None => return Err(Insert::NoBuffer),
        };
        if !needs_buffer {
            return Ok(());
        }
        let Some(mut buf) = self.take_buffer() else {
            return Err(Insert::NoBuffer);
        };
        // Every byte is overwritten by a block before it is hashed, so a
        // recycled buffer is not cleared (only its length is set).
        buf.resize(seg_size as usize, 0);
        match self
            .partial
            .get_mut(&b.piece)
            .and_then(|a| a.segs.get_mut(seg as usize))
        {
            Some(slot) => *slot = Some(buf),
            None => self.give_back(buf),
        }
        Ok(())
    }

    /// Block `b`'s place in its segment buffer (which must be there).
    fn dest(&mut self, b: BlockRef) -> Option<&mut [u8]> {
        let seg = b.begin / self.seg_len;
        let start = (b.begin - seg * self.seg_len) as usize;
        self.partial
            .get_mut(&b.piece)?
            .segs
            .get_mut(seg as usize)?
            .as_mut()?
            .get_mut(start..start + b.len as usize)
    }

    /// Block `b` is in its place: mark it received, advance the piece's
    /// hash over what is now contiguous, queue the segments the hash has
    /// passed, and check the piece once it is whole.
    fn commit(&mut self, b: BlockRef) -> Insert {
        let size = self.geometry.piece_size(b.piece);
        let seg_len = self.seg_len;
        let Some(a) = self.partial.get_mut(&b.piece) else {
            return Insert::Duplicate;
        };
        let Some(seen) = a.received.get_mut(b.index() as usize) else {
            return Insert::Duplicate;
        };
        if *seen {
            return Insert::Duplicate;
        }
        *seen = true;
        a.num_received += 1;
        // Feed SHA-1 every block the contiguous prefix now covers; a segment
        // the cursor leaves behind goes to the write queue.
        let mut done_segs = Vec::new();
        while a.hashed < size && a.received.get((a.hashed / BLOCK_LEN) as usize) == Some(&true) {
            let s = a.hashed / seg_len;
            let from = (a.hashed - s * seg_len) as usize;
            let to = (from + BLOCK_LEN as usize).min(seg_size_of(size, s, seg_len) as usize);
            let Some(bytes) = a
                .segs
                .get(s as usize)
                .and_then(|o| o.as_ref())
                .and_then(|buf| buf.get(from..to))
            else {
                break;
            };
            a.hasher.update(bytes);
            if let Some(fps) = &mut a.fps {
                fps.push(self.fp_key.hash_one(bytes));
            }
            a.hashed = s * seg_len + to as u32;
            if to as u32 == seg_size_of(size, s, seg_len)
                && a.hashed < size
                && let Some(buf) = a.segs.get_mut(s as usize).and_then(Option::take)
            {
                done_segs.push((s * seg_len, buf));
            }
        }
        let complete = a.num_received as usize == a.received.len();
        for (begin, buf) in done_segs {
            self.queue_write(b.piece, begin, buf, false);
        }
        if !complete {
            return Insert::Stored;
        }
        let Some(a) = self.partial.remove(&b.piece) else {
            return Insert::Stored;
        };
        debug_assert_eq!(a.hashed, size);
        let digest: [u8; 20] = a.hasher.finalize().into();
        let verified = self.hashes.get(b.piece.index()) == Some(&digest);
        let audited = self.audit.remove(&b.piece);
        let last = size.div_ceil(seg_len).saturating_sub(1);
        self.fingerprints = match (&a.fps, a.segs.as_slice()) {
            (Some(fps), _) => Some(fps.clone()),
            // A piece held whole: fingerprint from its buffer.
            (None, [Some(buf)]) if !verified || audited => Some(
                buf.chunks(BLOCK_LEN as usize)
                    .map(|c| self.fp_key.hash_one(c))
                    .collect(),
            ),
            _ => None,
        };
        for (s, buf) in (0u32..).zip(a.segs) {
            let Some(buf) = buf else { continue };
            if verified && s == last {
                self.queue_write(b.piece, s * seg_len, buf, true);
            } else {
                self.give_back(buf);
            }
        }
        if verified {
            Insert::Verified
        } else {
            self.drop_queued(b.piece);
            Insert::Failed
        }
    }

    /// Drop the queued (not yet verified) segments of `piece`.
    fn drop_queued(&mut self, piece: PieceIndex) {
        let mut kept = VecDeque::with_capacity(self.pending.len());
        for w in std::mem::take(&mut self.pending) {
            if w.piece == piece && !w.completes {
                self.pending_bytes -= w.data.len();
                self.give_back(w.data);
            } else {
                kept.push_back(w);
            }
        }
        self.pending = kept;
    }

    /// Forget a partial piece (all of its blocks), e.g. when giving up on it.
    pub fn drop_partial(&mut self, piece: PieceIndex) {
        if let Some(a) = self.partial.remove(&piece) {
            for buf in a.segs.into_iter().flatten() {
                self.give_back(buf);
            }
            self.drop_queued(piece);
        }
    }

    /// Take the oldest queued segment out of the write queue, for the
    /// shell to write ([`WriteJob::offset`], [`WriteJob::data`]) and hand
    /// back with [`Cache::write_done`].
    pub fn next_write(&mut self) -> Option<WriteJob> {
        let w = self.pending.pop_front()?;
        self.pending_bytes -= w.data.len();
        Some(w)
    }

    /// A write job came back. Written: its buffer moves to the read cache
    /// (a verified piece's last segment) or back to the pool, and the piece
    /// it completes is returned. Failed (a full disk): it goes back to the
    /// front of the queue, nothing is lost.
    pub fn write_done(&mut self, w: WriteJob, ok: bool) -> Option<PieceIndex> {
        if !ok {
            self.pending_bytes += w.data.len();
            self.pending.push_front(w);
            return None;
        }
        self.stats.bytes_written += w.data.len() as u64;
        if w.completes {
            let piece = w.piece;
            self.keep_for_reading(w.piece, w.begin, w.data, true);
            self.trim_reads();
            Some(piece)
        } else {
            // Written before its piece verified: never served from here.
            self.give_back(w.data);
            None
        }
    }

    /// Write queued segments to `store`, oldest first, until `max_bytes`
    /// have been written or the queue is empty (the job loop in one call,
    /// for tests and benchmarks). Adds the pieces now whole on disk to
    /// `written`. On an error the failing segment stays queued.
    pub fn flush(
        &mut self,
        store: &impl Storage,
        max_bytes: usize,
        written: &mut Vec<PieceIndex>,
    ) -> Result<(), StorageError> {
        let mut bytes = 0;
        while bytes < max_bytes {
            let Some(w) = self.next_write() else {
                break;
            };
            bytes += w.data.len();
            let r = store.write_at(w.offset, &w.data);
            let ok = r.is_ok();
            written.extend(self.write_done(w, ok));
            r?;
        }
        Ok(())
    }

    fn keep_for_reading(&mut self, piece: PieceIndex, begin: u32, data: Vec<u8>, pooled: bool) {
        self.read.push_back(ReadEntry {
            piece,
            begin,
            data,
            pooled,
        });
    }

    /// Evict read-cache entries beyond the budget (oldest first) and every
    /// block-sized one (those only carry a read to the peers waiting for it).
    pub fn trim_reads(&mut self) {
        let mut kept = 0;
        let mut i = self.read.len();
        while i > 0 {
            i -= 1;
            let keep = self.read.get(i).is_some_and(|e| e.pooled) && kept < self.max_read_segs;
            if keep {
                kept += 1;
            } else if let Some(e) = self.read.remove(i)
                && e.pooled
            {
                self.give_back(e.data);
            }
        }
    }

    /// Append the bytes of block `b` (of a verified piece) to `out` if they
    /// are in memory (a segment waiting to be written, or the read cache).
    /// `Ok(false)`: not in memory; ask for [`Cache::read_job`].
    pub fn copy_block(&mut self, b: BlockRef, out: &mut Vec<u8>) -> Result<bool, StorageError> {
        let seg_begin = b.begin / self.seg_len * self.seg_len;
        let end = b.begin + b.len;
        // `b` passed `Geometry::request_in_range`; a block outside its piece
        // is an error all the same, never a panic.
        if let Some(w) = self
            .pending
            .iter()
            .find(|w| w.piece == b.piece && w.begin == seg_begin)
        {
            copy_range(
                &w.data,
                (b.begin - w.begin) as usize..(end - w.begin) as usize,
                b,
                out,
            )?;
            self.stats.read_hits += 1;
            return Ok(true);
        }
        let Some(pos) = self.read.iter().position(|e| e.covers(b)) else {
            return Ok(false);
        };
        // Move to the back: most recently used.
        if let Some(e) = self.read.remove(pos) {
            let range = (b.begin - e.begin) as usize..(end - e.begin) as usize;
            let copied = copy_range(&e.data, range, b, out);
            self.read.push_back(e);
            copied?;
        }
        self.stats.read_hits += 1;
        Ok(true)
    }

    /// The read that brings block `b` into memory: the aligned
    /// [`READ_UNIT`] around it (never more) in a cache buffer, or the block
    /// alone when no buffer is free. A peer asking for one block in each of
    /// many large pieces makes us read at most 16 times what it gets, not
    /// whole pieces.
    pub fn read_job(&mut self, b: BlockRef) -> ReadJob {
        self.stats.read_misses += 1;
        let unit = self.seg_len.min(READ_UNIT);
        let unit_begin = b.begin / unit * unit;
        let piece_size = self.geometry.piece_size(b.piece);
        let offset = self.geometry.piece_offset(b.piece);
        let spare = self.pool.pop().or_else(|| {
            (self.allocated < self.max_buffers).then(|| {
                self.allocated += 1;
                Vec::with_capacity(self.seg_len as usize)
            })
        });
        match spare {
            Some(mut data) => {
                let size = piece_size.min(unit_begin + unit).saturating_sub(unit_begin);
                data.resize(size as usize, 0); // filled by the read
                ReadJob {
                    offset: offset + unit_begin as u64,
                    data,
                    piece: b.piece,
                    begin: unit_begin,
                    pooled: true,
                }
            }
            None => ReadJob {
                offset: offset + b.begin as u64,
                data: vec![0; b.len as usize],
                piece: b.piece,
                begin: b.begin,
                pooled: false,
            },
        }
    }

    /// A read job came back: the bytes join the read cache (call
    /// [`Cache::trim_reads`] once the peers waiting for them were served);
    /// a failed read gives its buffer back.
    pub fn read_done(&mut self, job: ReadJob, ok: bool) {
        if ok {
            self.stats.bytes_read_disk += job.data.len() as u64;
            self.keep_for_reading(job.piece, job.begin, job.data, job.pooled);
        } else if job.pooled {
            self.give_back(job.data);
        }
    }

    /// [`Cache::copy_block`], reading from `store` on a miss (the job loop
    /// in one call, for tests and benchmarks).
    pub fn read_block(
        &mut self,
        store: &impl Storage,
        b: BlockRef,
        out: &mut Vec<u8>,
    ) -> Result<(), StorageError> {
        if self.copy_block(b, out)? {
            return Ok(());
        }
        let mut job = self.read_job(b);
        let r = store.read_at(job.offset, &mut job.data);
        let ok = r.is_ok();
        self.read_done(job, ok);
        r?;
        let copied = self.copy_block(b, out);
        self.trim_reads();
        match copied? {
            true => Ok(()),
            false => Err(not_in_piece(b)),
        }
    }
}

/// A read-cache entry: bytes of a verified piece from `begin`.
struct ReadEntry {
    piece: PieceIndex,
    begin: u32,
    data: Vec<u8>,
    /// A cache buffer (else a block-sized one, dropped after use).
    pooled: bool,
}

impl ReadEntry {
    fn covers(&self, b: BlockRef) -> bool {
        span_covers(self.piece, self.begin, self.data.len(), b)
    }
}

/// Do `len` bytes of `piece` from `begin` hold block `b`?
fn span_covers(piece: PieceIndex, begin: u32, len: usize, b: BlockRef) -> bool {
    piece == b.piece && begin <= b.begin && (b.begin + b.len) as usize <= begin as usize + len
}

/// A segment to write: `data` at torrent offset `offset`. See
/// [`Cache::next_write`].
pub struct WriteJob {
    pub offset: u64,
    pub data: Vec<u8>,
    piece: PieceIndex,
    /// Offset of the segment in its piece.
    begin: u32,
    /// The piece is verified and this is its last write: once it is on disk,
    /// so is the piece.
    completes: bool,
}

/// A read for seeding: fill `data` from torrent offset `offset`. See
/// [`Cache::read_job`].
pub struct ReadJob {
    pub offset: u64,
    pub data: Vec<u8>,
    piece: PieceIndex,
    begin: u32,
    pooled: bool,
}

impl ReadJob {
    /// The piece it reads from.
    pub fn piece(&self) -> PieceIndex {
        self.piece
    }

    /// Does this read bring block `b` into memory?
    pub fn covers(&self, b: BlockRef) -> bool {
        span_covers(self.piece, self.begin, self.data.len(), b)
    }
}

/// Most read-cache entries kept for seeding: none with `--cache 0`,
/// otherwise at most [`MAX_READ_ENTRIES`] (the kernel's page cache holds
/// the data anyway; these only save `pread`s for a peer reading a unit
/// block by block).
fn read_entries(budget: usize, max_buffers: usize) -> usize {
    if budget == 0 {
        0
    } else {
        max_buffers.min(MAX_READ_ENTRIES)
    }
}

/// See [`read_entries`].
pub const MAX_READ_ENTRIES: usize = 8;

/// Size of segment `s` of a piece of `size` bytes.
fn seg_size_of(size: u32, s: u32, seg_len: u32) -> u32 {
    size.saturating_sub(s * seg_len).min(seg_len)
}

/// Append `piece[range]` (block `b`) to `out`.
fn copy_range(
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
