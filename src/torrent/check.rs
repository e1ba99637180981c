//! Checking the data already on disk, a slice at a time between loop turns.

#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

use super::*;

/// The state of a check of data on disk run between loop turns.
pub(super) struct Check {
    /// The next piece to check.
    pub(super) next: u32,
    have: Bitfield,
    seed: u64,
    started: Instant,
}

impl Check {
    pub(super) fn new(num_pieces: u32, seed: u64, now: Instant) -> Check {
        Check {
            next: 0,
            have: Bitfield::new(num_pieces),
            seed,
            started: now,
        }
    }
}

impl Torrent {
    /// A torrent whose data on disk is still to be checked: it hands out
    /// pieces to check ([`Torrent::next_check`]) that the shell checks a
    /// slice at a time between loop turns ([`jobs::check_slice`]), so adding
    /// a big torrent never freezes the others. `parts.have` is ignored: the
    /// check finds what is there.
    pub fn new_checking(parts: TorrentParts, cfg: Config, seed: u64, now: Instant) -> Torrent {
        let n = parts.geometry.num_pieces;
        let mut t = Torrent::new(
            TorrentParts {
                have: Bitfield::new(n),
                ..parts
            },
            cfg,
            seed,
            now,
        );
        t.checking = Some(Check::new(n, seed, now));
        t
    }

    /// Data on disk is still being checked (no peers meanwhile).
    pub fn is_checking(&self) -> bool {
        self.checking.is_some()
    }

    /// The next piece to check, or `None` once every piece was handed out
    /// (then [`Torrent::finish_check`]).
    pub fn next_check(&mut self) -> Option<PieceIndex> {
        let c = self.checking.as_mut()?;
        if c.next >= self.geometry.num_pieces {
            return None;
        }
        c.next += 1;
        Some(PieceIndex(c.next - 1))
    }

    /// The shell checked `piece`: its data is there and its hash matches.
    pub fn checked(&mut self, piece: PieceIndex, ok: bool) {
        if let Some(c) = &mut self.checking
            && ok
            && self.geometry.contains(piece)
        {
            c.have.set(piece);
        }
    }

    /// Every piece was checked: the torrent knows what it has and can take
    /// peers.
    pub fn finish_check(&mut self, now: Instant) {
        let Some(c) = self.checking.take() else {
            return;
        };
        debug!(
            "{} of {} pieces verified (checked in {:.2?})",
            c.have.count(),
            self.geometry.num_pieces,
            now.duration_since(c.started)
        );
        self.picker = picker_for(&self.cache, &c.have, c.seed);
        self.left = left_of(&self.geometry, &c.have);
        self.flushed = c.have;
        // A magnet link's torrent checks with its peers connected.
        self.rejoin_peers(now);
    }

    /// The pieces' SHA-1 hashes (for checking them).
    pub fn piece_hashes(&self) -> &[[u8; 20]] {
        self.cache.hashes()
    }
}
