//! A block arrives: the picker, the cache, and what a verified or failed
//! piece means for peers (haves, blame, bans).

#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

use super::*;

/// A block's data: bytes to copy into the cache, or already in its place
/// there (read in place: [`crate::peer::DirectRead`]).
pub(super) enum Payload<'a> {
    Bytes(&'a [u8]),
    InPlace(crate::storage::cache::DirectBlock),
}

impl Torrent {
    /// A block whose place was lost while it was read in place (see
    /// [`crate::peer::DirectRead`]): its data is gone, so it counts as
    /// wasted, and if it was still asked of this peer it is asked anew.
    pub(super) fn on_lost_block(&mut self, key: PeerKey, b: BlockRef) {
        let Some(peer) = self.peers.get_mut(key) else {
            return;
        };
        self.totals.received += b.len as u64;
        self.totals.wasted += b.len as u64;
        if peer.take_inflight(b) {
            self.picker.on_block_dropped(key, b);
        }
    }

    /// A block arrived from `key`.
    pub(super) fn on_block(
        &mut self,
        key: PeerKey,
        b: BlockRef,
        data: Payload<'_>,
        now: Instant,
    ) -> Result<(), PeerError> {
        let Some(peer) = self.peers.get_mut(key) else {
            return Ok(());
        };
        let was_requested = peer.take_inflight(b);
        self.totals.received += b.len as u64;
        if !was_requested {
            // Never asked of this peer (or already cancelled, re-assigned
            // after a choke or snub): dropped. Accepting it would let a
            // peer slip one bad block into pieces honest peers complete,
            // failing their hash checks and getting the honest peers banned.
            debug!("{} sent a block we did not ask it for", peer.label());
            self.totals.wasted += b.len as u64;
            return Ok(());
        }
        // Only blocks we asked for count towards the rate that sizes the
        // window (and earns unchokes): garbage must not open it wide.
        peer.down.add(b.len as u64);
        peer.last_block = now;
        peer.snubbed = false;
        let peer_id = (peer.addr.ip(), peer.peer_id);
        self.cancel_buf.clear();
        let mut others = std::mem::take(&mut self.cancel_buf);
        self.picker.set_segment_budget(self.cache.assembly_budget());
        let outcome = self.picker.on_block(key, b, &mut others);
        for &other in &others {
            if other == key {
                continue;
            }
            if let Some(o) = self.peers.get_mut(other)
                && o.take_inflight(b)
            {
                Message::Cancel {
                    piece: b.piece.0,
                    begin: b.begin,
                    len: b.len,
                }
                .encode(o.send.buf_mut());
                self.dirty.push(other);
            }
        }
        self.cancel_buf = others;
        if outcome != BlockOutcome::New {
            self.totals.wasted += b.len as u64;
            return Ok(());
        }
        self.blame.on_block(
            b.piece,
            b.index(),
            self.geometry.blocks_in_piece(b.piece),
            peer_id,
        );
        let inserted = match data {
            Payload::Bytes(bytes) => self.cache.insert_block(b, bytes),
            Payload::InPlace(place) => self.cache.commit_direct(place),
        };
        if self.cache.pending_len() > 0 {
            self.pending_since.get_or_insert(now);
        }
        match inserted {
            Insert::Stored => {}
            Insert::NoBuffer | Insert::Duplicate => {
                // Never expected: the picker opens a segment only when a
                // buffer is free for it, and marks a block received once.
                // Should it happen, the block is Missing again and is
                // requested anew (never left marked received with no data).
                debug_assert!(false, "block {b:?} could not be stored");
                self.picker.on_block_lost(b);
                self.totals.wasted += b.len as u64;
            }
            Insert::Verified => self.on_piece_verified(b.piece),
            Insert::Failed => self.on_piece_failed(b.piece),
        }
        Ok(())
    }

    pub(super) fn on_piece_verified(&mut self, piece: PieceIndex) {
        self.picker.on_piece_verified(piece);
        // A good copy of a piece that failed before names the liars: the
        // peers whose blocks of the bad copy differ from it.
        let fps = self.cache.take_fingerprints();
        for liar in self.blame.on_verified(piece, fps.as_deref()) {
            warn!("piece {piece}: a block sent earlier differs from the good copy");
            self.ban(liar);
        }
        let size = self.geometry.piece_size(piece) as u64;
        self.totals.downloaded += size;
        self.left = self.left.saturating_sub(size);
        trace!("piece {piece} verified");
        let keys: Vec<PeerKey> = self.peers.iter().map(|(k, _)| k).collect();
        for key in keys {
            let Some(peer) = self.peers.get_mut(key) else {
                continue;
            };
            if peer.phase != Phase::Active {
                continue;
            }
            // Its hints for this piece are spent (they would narrow every
            // later pick for nothing).
            peer.fast.forget_piece(piece);
            Message::Have { piece: piece.0 }.encode(peer.send.buf_mut());
            self.dirty.push(key);
            if peer.am_interested && peer.has.get(piece) {
                self.update_interest(key);
            }
        }
        if self.picker.is_complete() {
            info!("all {} pieces verified", self.geometry.num_pieces);
            // Now a seed: slots go by upload rate, and peers that were
            // giving to us may no longer want anything.
            self.choker.round_now();
        }
    }

    pub(super) fn on_piece_failed(&mut self, piece: PieceIndex) {
        self.picker.on_piece_failed(piece);
        self.totals.hash_failures += 1;
        self.totals.wasted += self.geometry.piece_size(piece) as u64;
        let fps = self.cache.take_fingerprints();
        let senders = self.blame.senders(piece).len();
        warn!("piece {piece} failed its hash check ({senders} peer(s) sent blocks); re-requesting");
        // Blocks from a peer already banned explain the failure (they were
        // in a partial piece when it was caught): nobody else is charged.
        if self
            .blame
            .senders(piece)
            .iter()
            .any(|id| self.banned_ids.contains(id))
        {
            debug!("piece {piece} held blocks from a banned peer; no one else is charged");
            self.blame.forget(piece);
            return;
        }
        // A sole sender is convicted at once. Several senders: the piece is
        // compared block by block with its good copy once that verifies
        // (see `blame`).
        let convicted = self.blame.on_failed(piece, fps.as_deref());
        if convicted.is_empty() {
            // Fetch it again from one peer: that copy convicts its sender
            // if bad, or exposes the liar if good.
            self.picker.set_exclusive(piece);
            self.cache.audit(piece);
        }
        for id in convicted {
            self.ban(id);
        }
    }

    pub(super) fn ban(&mut self, id: crate::blame::PeerId) {
        if !self.banned_ids.insert(id) {
            return;
        }
        for (_, peer) in self
            .peers
            .iter()
            .filter(|(_, p)| (p.addr.ip(), p.peer_id) == id)
        {
            warn!("banning {} for sending corrupt data", peer.label());
            if peer.outgoing {
                self.banned_addrs.insert(peer.addr);
            }
            self.to_close.push((peer.token, PeerError::Banned));
        }
        // Its blocks in open pieces are suspect: start those pieces again,
        // so no honest peer finishes one it spoiled (and is blamed for it).
        for piece in self.blame.pieces_from(&id) {
            debug!("piece {piece} held blocks from a banned peer; starting it again");
            self.blame.forget(piece);
            self.cache.drop_partial(piece);
            self.picker.on_piece_failed(piece);
        }
    }

    /// Number of banned peers (for tests and the summary).
    pub fn banned_count(&self) -> usize {
        self.banned_ids.len()
    }
}
