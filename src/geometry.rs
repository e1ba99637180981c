//! Piece and block arithmetic, in one place.
//!
//! A torrent is `total_len` bytes cut into pieces of `piece_len` bytes (the
//! last one may be shorter), and each piece into blocks of [`BLOCK_LEN`]
//! bytes (the last block of a piece may be shorter). Everything that turns
//! an index into a length or an offset goes through [`Geometry`], so the
//! edge cases (short last piece, short last block) live here only.

#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

use crate::ids::PieceIndex;

/// The block size every client requests: 16 KiB.
pub const BLOCK_LEN: u32 = 16 * 1024;

/// A block: `len` bytes at `begin` inside piece `piece`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockRef {
    pub piece: PieceIndex,
    pub begin: u32,
    pub len: u32,
}

impl BlockRef {
    /// Index of the block within its piece.
    pub const fn index(&self) -> u32 {
        self.begin / BLOCK_LEN
    }
}

/// The shape of a torrent's data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub total_len: u64,
    pub piece_len: u32,
    pub num_pieces: u32,
}

impl Geometry {
    /// `piece_len` must be > 0; `total_len` must need at most `u32::MAX` pieces.
    /// Returns `None` otherwise.
    pub fn new(total_len: u64, piece_len: u32) -> Option<Geometry> {
        if piece_len == 0 {
            return None;
        }
        let n = total_len.div_ceil(piece_len as u64);
        let num_pieces = u32::try_from(n).ok()?;
        Some(Geometry {
            total_len,
            piece_len,
            num_pieces,
        })
    }

    /// Every piece, in order.
    pub fn pieces(&self) -> impl Iterator<Item = PieceIndex> + use<> {
        (0..self.num_pieces).map(PieceIndex)
    }

    /// Is `piece` one of this torrent's pieces?
    pub const fn contains(&self, piece: PieceIndex) -> bool {
        piece.0 < self.num_pieces
    }

    /// Byte offset of the start of `piece` in the whole torrent.
    pub const fn piece_offset(&self, piece: PieceIndex) -> u64 {
        piece.0 as u64 * self.piece_len as u64
    }

    /// Length of `piece` (the last one may be short). 0 if out of range.
    pub const fn piece_size(&self, piece: PieceIndex) -> u32 {
        if !self.contains(piece) {
            return 0;
        }
        let start = self.piece_offset(piece);
        let rest = self.total_len - start;
        if rest < self.piece_len as u64 {
            rest as u32
        } else {
            self.piece_len
        }
    }

    /// Number of blocks in `piece`.
    pub const fn blocks_in_piece(&self, piece: PieceIndex) -> u32 {
        self.piece_size(piece).div_ceil(BLOCK_LEN)
    }

    /// Most blocks any piece has.
    pub const fn max_blocks_per_piece(&self) -> u32 {
        self.piece_len.div_ceil(BLOCK_LEN)
    }

    /// The `index`-th block of `piece`.
    pub const fn block(&self, piece: PieceIndex, index: u32) -> BlockRef {
        let size = self.piece_size(piece);
        let begin = index * BLOCK_LEN;
        let len = if size - begin < BLOCK_LEN {
            size - begin
        } else {
            BLOCK_LEN
        };
        BlockRef { piece, begin, len }
    }

    /// Is `(piece, begin, len)` a block request we would ever make or serve:
    /// in range, non-empty, within the piece, at most `max_len` bytes.
    /// All arithmetic is checked, so hostile values cannot wrap.
    pub fn request_in_range(&self, piece: PieceIndex, begin: u32, len: u32, max_len: u32) -> bool {
        if !self.contains(piece) || len == 0 || len > max_len {
            return false;
        }
        match begin.checked_add(len) {
            Some(end) => end <= self.piece_size(piece),
            None => false,
        }
    }

    /// Is this exactly one of the blocks we request (aligned, full length)?
    pub fn is_block(&self, piece: PieceIndex, begin: u32, len: u32) -> bool {
        self.contains(piece)
            && begin.is_multiple_of(BLOCK_LEN)
            && begin < self.piece_size(piece)
            && self.block(piece, begin / BLOCK_LEN).len == len
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests may panic
mod tests {
    use super::*;
    use crate::ids::PieceIndex as P;

    #[test]
    fn short_last_piece_and_block() {
        let g = Geometry::new(3 * 32768 + 100, 32768).unwrap();
        assert_eq!(g.num_pieces, 4);
        assert_eq!(g.piece_size(P(3)), 100);
        assert_eq!(g.piece_size(P(4)), 0);
        assert_eq!(g.blocks_in_piece(P(0)), 2);
        assert_eq!(g.blocks_in_piece(P(3)), 1);
        assert_eq!(g.block(P(3), 0).len, 100);
        let g = Geometry::new(20000, 20000).unwrap();
        assert_eq!(
            g.block(P(0), 1),
            BlockRef {
                piece: P(0),
                begin: 16384,
                len: 3616
            }
        );
    }

    #[test]
    fn empty_torrent_and_zero_piece_len() {
        assert!(Geometry::new(10, 0).is_none());
        let g = Geometry::new(0, 16384).unwrap();
        assert_eq!(g.num_pieces, 0);
    }

    #[test]
    fn hostile_requests_are_out_of_range() {
        let g = Geometry::new(100_000, 32768).unwrap();
        assert!(g.request_in_range(P(0), 0, 16384, 16384));
        assert!(!g.request_in_range(P(0), u32::MAX, 2, 16384));
        assert!(!g.request_in_range(P(0), 32768 - 10, 16384, 16384));
        assert!(!g.request_in_range(P(4), 0, 1, 16384));
        assert!(!g.request_in_range(P(0), 0, 0, 16384));
        assert!(!g.request_in_range(P(0), 0, 16385, 16384));
        assert!(g.request_in_range(P(3), 0, 100_000 - 3 * 32768, 16384));
        assert!(g.is_block(P(3), 0, 100_000 - 3 * 32768));
        assert!(!g.is_block(P(3), 0, 16384));
    }

    #[test]
    fn matches_u128_reference() {
        for &(total, plen) in &[(1u64, 1u32), (1 << 40, 1 << 22), (12345678, 16384 * 3 + 7)] {
            let g = Geometry::new(total, plen).unwrap();
            let sum = (g.num_pieces as u128 - 1) * plen as u128
                + g.piece_size(P(g.num_pieces - 1)) as u128;
            assert_eq!(sum, total as u128);
        }
    }
}
