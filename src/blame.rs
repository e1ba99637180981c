//! Who sent the bad data: blame for pieces that fail their hash check.
//!
//! A piece assembled from one peer's blocks that fails convicts that peer.
//! A piece with several senders proves only that *someone* lied, and
//! charging all of them lets a liar frame every honest peer it shares
//! pieces with. So, as libtorrent's "smart ban" does, a failed piece with
//! several senders becomes a *suspect*: we keep, per block, who sent it and a
//! fingerprint of the bad bytes. When the piece later verifies, each block
//! of the good copy is fingerprinted too, and exactly the peers whose block
//! differed are convicted. Honest peers are never charged for a piece they
//! shared with a liar.
//!
//! Fingerprints are a keyed 64-bit hash (SipHash with a per-process random
//! key, so a peer cannot craft a block that collides with the good one). The
//! engine fingerprints a piece's blocks when it completes (from the piece
//! buffer) or, for pieces assembled in segments, as the hash cursor passes
//! each block of a piece marked for audit ([`Blame::is_suspect`]); a first
//! failure of a large piece without fingerprints makes it a suspect, and
//! the next failed copy supplies them.
//!
//! Bounds: senders are kept per open piece (one small index per block,
//! freed when the piece verifies or fails); at most [`MAX_SUSPECTS`] suspect
//! pieces are kept, the oldest evicted.

#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

use crate::ids::PieceIndex;
use std::collections::{HashMap, VecDeque};

/// Who a peer is, for blame: its IP address and its peer id together. A
/// peer id alone can be squatted (anyone may claim an honest peer's id
/// and get it banned); an address alone is shared (NAT, loopback).
pub type PeerId = (std::net::IpAddr, [u8; 20]);

/// Most failed pieces kept for comparison with their good copy.
pub const MAX_SUSPECTS: usize = 64;

/// Who sent which block of an open piece.
#[derive(Debug, Default)]
struct Senders {
    ids: Vec<PeerId>,
    /// Per block: index into `ids`, or `NONE`.
    by_block: Vec<u8>,
}

const NONE: u8 = u8::MAX;

/// A failed piece awaiting its good copy: `(block, sender, fingerprint)`.
#[derive(Debug)]
struct Suspect {
    piece: PieceIndex,
    blocks: Vec<(u32, PeerId, u64)>,
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct Blame {
    open: HashMap<PieceIndex, Senders>,
    suspects: VecDeque<Suspect>,
}

impl Blame {
    pub fn new() -> Blame {
        Blame::default()
    }

    /// `peer` sent block `block` (of `num_blocks`) of `piece`, and it was kept.
    pub fn on_block(&mut self, piece: PieceIndex, block: u32, num_blocks: u32, peer: PeerId) {
        let s = self.open.entry(piece).or_default();
        if s.by_block.len() != num_blocks as usize {
            s.by_block = vec![NONE; num_blocks as usize];
        }
        let idx = match s.ids.iter().position(|id| *id == peer) {
            Some(i) => i,
            None => {
                // Past 255 senders of one piece (more than any peer cap),
                // a block is simply not attributed.
                if s.ids.len() >= NONE as usize {
                    return;
                }
                s.ids.push(peer);
                s.ids.len() - 1
            }
        };
        if let Some(slot) = s.by_block.get_mut(block as usize) {
            *slot = idx as u8;
        }
    }

    /// The distinct peers that sent blocks of open `piece`.
    pub fn senders(&self, piece: PieceIndex) -> &[PeerId] {
        self.open.get(&piece).map_or(&[], |s| &s.ids)
    }

    /// Did `peer` send any block of open `piece`?
    pub fn sent_to(&self, piece: PieceIndex, peer: &PeerId) -> bool {
        self.senders(piece).contains(peer)
    }

    /// A previous copy of `piece` failed: fingerprint the next one.
    pub fn is_suspect(&self, piece: PieceIndex) -> bool {
        self.suspects.iter().any(|s| s.piece == piece)
    }

    /// Forget the open state of `piece` (started again after a ban).
    pub fn forget(&mut self, piece: PieceIndex) {
        self.open.remove(&piece);
    }

    /// `piece` failed its hash check. `fingerprints` (one per block) are those
    /// of the bad copy, when the engine had them. Returns the peers proven
    /// to have lied (the sole sender of the piece), if any.
    pub fn on_failed(&mut self, piece: PieceIndex, fingerprints: Option<&[u64]>) -> Vec<PeerId> {
        let Some(s) = self.open.remove(&piece) else {
            return Vec::new();
        };
        if let [only] = s.ids.as_slice() {
            return vec![*only];
        }
        let blocks = match fingerprints {
            Some(fps) => (0u32..)
                .zip(&s.by_block)
                .zip(fps)
                .filter_map(|((j, &i), &fp)| Some((j, *s.ids.get(i as usize)?, fp)))
                .collect(),
            None => Vec::new(),
        };
        // A newer bad copy replaces an older one of the same piece; an old
        // one without fingerprints is replaced by one with them.
        self.suspects.retain(|x| x.piece != piece);
        if self.suspects.len() >= MAX_SUSPECTS {
            self.suspects.pop_front();
        }
        self.suspects.push_back(Suspect { piece, blocks });
        Vec::new()
    }

    /// `piece` verified. `fingerprints` (one per block) are those of the
    /// good copy when the piece was a suspect. Returns the peers whose
    /// blocks of the bad copy differed from it.
    pub fn on_verified(&mut self, piece: PieceIndex, fingerprints: Option<&[u64]>) -> Vec<PeerId> {
        self.open.remove(&piece);
        let Some(pos) = self.suspects.iter().position(|s| s.piece == piece) else {
            return Vec::new();
        };
        let Some(bad) = self.suspects.remove(pos) else {
            return Vec::new();
        };
        let Some(good) = fingerprints else {
            return Vec::new();
        };
        let mut liars: Vec<PeerId> = Vec::new();
        for (j, peer, fp) in bad.blocks {
            if good.get(j as usize).is_some_and(|g| *g != fp) && !liars.contains(&peer) {
                liars.push(peer);
            }
        }
        liars
    }

    /// Open pieces `peer` sent blocks of (to start again when it is banned).
    pub fn pieces_from(&self, peer: &PeerId) -> Vec<PieceIndex> {
        self.open
            .iter()
            .filter(|(_, s)| s.ids.contains(peer))
            .map(|(&p, _)| p)
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::ids::PieceIndex as P;

    const IP: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    const H: PeerId = (IP, [1; 20]);
    const L: PeerId = (IP, [2; 20]);

    #[test]
    fn a_sole_sender_of_a_bad_piece_is_convicted_at_once() {
        let mut b = Blame::new();
        for j in 0..4 {
            b.on_block(P(7), j, 4, L);
        }
        assert_eq!(b.on_failed(P(7), None), vec![L]);
        assert!(!b.is_suspect(P(7)));
    }

    #[test]
    fn a_shared_bad_piece_convicts_only_the_peer_whose_block_differed() {
        let mut b = Blame::new();
        b.on_block(P(3), 0, 4, L);
        for j in 1..4 {
            b.on_block(P(3), j, 4, H);
        }
        assert!(b.on_failed(P(3), Some(&[99, 11, 12, 13])).is_empty());
        assert!(b.is_suspect(P(3)));
        // The good copy, all from H: block 0 differs, H's blocks do not.
        for j in 0..4 {
            b.on_block(P(3), j, 4, H);
        }
        assert_eq!(b.on_verified(P(3), Some(&[10, 11, 12, 13])), vec![L]);
        assert!(!b.is_suspect(P(3)));
    }

    #[test]
    fn without_fingerprints_nobody_is_charged_and_the_next_copy_supplies_them() {
        let mut b = Blame::new();
        b.on_block(P(5), 0, 2, L);
        b.on_block(P(5), 1, 2, H);
        assert!(b.on_failed(P(5), None).is_empty());
        assert!(b.is_suspect(P(5)));
        b.on_block(P(5), 0, 2, L);
        b.on_block(P(5), 1, 2, H);
        assert!(b.on_failed(P(5), Some(&[66, 2])).is_empty());
        b.on_block(P(5), 0, 2, H);
        b.on_block(P(5), 1, 2, H);
        assert_eq!(b.on_verified(P(5), Some(&[1, 2])), vec![L]);
    }

    #[test]
    fn suspects_are_capped_oldest_first() {
        let mut b = Blame::new();
        for p in 0..(MAX_SUSPECTS as u32 + 10) {
            b.on_block(P(p), 0, 2, L);
            b.on_block(P(p), 1, 2, H);
            b.on_failed(P(p), Some(&[1, 2]));
        }
        assert!(!b.is_suspect(P(0)));
        assert!(b.is_suspect(P(MAX_SUSPECTS as u32 + 9)));
        assert_eq!(b.suspects.len(), MAX_SUSPECTS);
    }
}
