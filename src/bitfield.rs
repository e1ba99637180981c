//! A set of pieces, stored as the wire's bitfield (high bit of byte 0 is piece 0).

#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

use crate::ids::PieceIndex;

/// Which pieces a peer (or we) have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bitfield {
    bits: Vec<u8>,
    len: u32,
    count: u32,
}

/// Why a bitfield from the wire was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BitfieldError {
    /// The byte length is not `ceil(num_pieces / 8)`.
    WrongLength { got: usize, want: usize },
    /// A bit past the last piece is set.
    SpareBitsSet,
}

impl std::fmt::Display for BitfieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BitfieldError::WrongLength { got, want } => {
                write!(f, "bitfield is {got} bytes, expected {want}")
            }
            BitfieldError::SpareBitsSet => write!(f, "bitfield has spare bits set"),
        }
    }
}

impl Bitfield {
    /// An empty set for `len` pieces.
    pub fn new(len: u32) -> Bitfield {
        Bitfield {
            bits: vec![0; Self::byte_len(len)],
            len,
            count: 0,
        }
    }

    /// A full set for `len` pieces.
    pub fn full(len: u32) -> Bitfield {
        let mut b = Bitfield::new(len);
        for i in 0..len {
            b.set(PieceIndex(i));
        }
        b
    }

    /// Bytes a bitfield of `len` pieces takes on the wire.
    pub const fn byte_len(len: u32) -> usize {
        (len as usize).div_ceil(8)
    }

    /// Parse a bitfield message payload for a torrent of `len` pieces.
    pub fn from_wire(bytes: &[u8], len: u32) -> Result<Bitfield, BitfieldError> {
        let want = Self::byte_len(len);
        if bytes.len() != want {
            return Err(BitfieldError::WrongLength {
                got: bytes.len(),
                want,
            });
        }
        let spare = want * 8 - len as usize;
        if spare > 0 {
            let mask = (1u8 << spare) - 1;
            if bytes.last().is_some_and(|&last| last & mask != 0) {
                return Err(BitfieldError::SpareBitsSet);
            }
        }
        let count = bytes.iter().map(|b| b.count_ones()).sum();
        Ok(Bitfield {
            bits: bytes.to_vec(),
            len,
            count,
        })
    }

    /// The wire form.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bits
    }

    /// Number of pieces this set is for.
    pub fn len(&self) -> u32 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// How many pieces are set.
    pub fn count(&self) -> u32 {
        self.count
    }

    pub fn is_full(&self) -> bool {
        self.count == self.len
    }

    /// Is `piece` set? Out-of-range pieces are not.
    pub fn get(&self, piece: PieceIndex) -> bool {
        let i = piece.0;
        if i >= self.len {
            return false;
        }
        self.bits
            .get((i / 8) as usize)
            .is_some_and(|&byte| byte & (0x80 >> (i % 8)) != 0)
    }

    /// Set `piece`; returns true if it was newly set. Out of range is ignored.
    pub fn set(&mut self, piece: PieceIndex) -> bool {
        let i = piece.0;
        if i >= self.len || self.get(piece) {
            return false;
        }
        let Some(byte) = self.bits.get_mut((i / 8) as usize) else {
            return false;
        };
        *byte |= 0x80 >> (i % 8);
        self.count += 1;
        true
    }

    /// Clear `piece`; returns true if it was set.
    pub fn clear(&mut self, piece: PieceIndex) -> bool {
        let i = piece.0;
        if !self.get(piece) {
            return false;
        }
        let Some(byte) = self.bits.get_mut((i / 8) as usize) else {
            return false;
        };
        *byte &= !(0x80 >> (i % 8));
        self.count -= 1;
        true
    }

    /// Iterate over the set pieces.
    pub fn iter_set(&self) -> impl Iterator<Item = PieceIndex> + '_ {
        (0..self.len).map(PieceIndex).filter(move |&p| self.get(p))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests may panic
mod tests {
    use super::*;

    #[test]
    fn set_get_count_and_wire_round_trip() {
        let mut b = Bitfield::new(10);
        assert!(b.set(PieceIndex(0)));
        assert!(!b.set(PieceIndex(0)));
        assert!(b.set(PieceIndex(9)));
        assert!(!b.set(PieceIndex(10)));
        assert_eq!(b.count(), 2);
        assert_eq!(b.as_bytes(), &[0x80, 0x40]);
        let c = Bitfield::from_wire(b.as_bytes(), 10).unwrap();
        assert_eq!(b, c);
        assert!(b.clear(PieceIndex(9)));
        assert_eq!(b.iter_set().collect::<Vec<_>>(), vec![PieceIndex(0)]);
    }

    #[test]
    fn rejects_wrong_length_and_spare_bits() {
        assert_eq!(
            Bitfield::from_wire(&[0xff], 10),
            Err(BitfieldError::WrongLength { got: 1, want: 2 })
        );
        assert_eq!(
            Bitfield::from_wire(&[0xff, 0xe0], 10),
            Err(BitfieldError::SpareBitsSet)
        );
        assert!(Bitfield::from_wire(&[0xff, 0xc0], 10).unwrap().is_full());
        assert!(Bitfield::from_wire(&[], 0).unwrap().is_full());
    }
}
