//! Checking the data already on disk, a slice at a time between loop turns.

#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

use super::*;

/// The state of a check of data on disk run between loop turns.
pub(super) struct Check {
    /// The next piece to check.
    pub(super) next: u32,
    have: Bitfield,
    buf: Vec<u8>,
    seed: u64,
    started: Instant,
}

impl Torrent {
    /// A torrent whose data on disk is still to be checked
    /// ([`Torrent::check_some`], a slice at a time between loop turns, so
    /// adding a big torrent never freezes the others). `parts.have` is
    /// ignored: the check finds what is there.
    pub fn new_checking(parts: TorrentParts, cfg: Config, seed: u64, now: Instant) -> Torrent {
        let n = parts.geometry.num_pieces;
        let buf = crate::storage::check_buffer(&parts.geometry);
        let mut t = Torrent::new(
            TorrentParts {
                have: Bitfield::new(n),
                ..parts
            },
            cfg,
            seed,
            now,
        );
        t.checking = Some(Check {
            next: 0,
            have: Bitfield::new(n),
            buf,
            seed,
            started: now,
        });
        t
    }

    /// Data on disk is still being checked (no peers meanwhile).
    pub fn is_checking(&self) -> bool {
        self.checking.is_some()
    }

    /// Check pieces on disk until about `max_bytes` were read (at least
    /// one piece). True once every piece is checked: the torrent then
    /// knows what it has and can take peers.
    pub fn check_some(&mut self, max_bytes: usize, now: Instant) -> bool {
        let Some(c) = &mut self.checking else {
            return true;
        };
        let mut read = 0;
        while c.next < self.geometry.num_pieces && (read == 0 || read < max_bytes) {
            let p = c.next;
            if crate::storage::check_piece(
                &self.disk,
                &self.geometry,
                self.cache.hashes(),
                p,
                &mut c.buf,
            ) {
                c.have.set(p);
            }
            read += self.geometry.piece_size(p) as usize;
            c.next += 1;
        }
        if c.next < self.geometry.num_pieces {
            return false;
        }
        let Some(c) = self.checking.take() else {
            return true;
        };
        info!(
            "{} of {} pieces already verified on disk (checked in {:.2?})",
            c.have.count(),
            self.geometry.num_pieces,
            now.duration_since(c.started)
        );
        self.picker = picker_for(&self.cache, &c.have, c.seed);
        self.left = left_of(&self.geometry, &c.have);
        self.flushed = c.have;
        true
    }
}
