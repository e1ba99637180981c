//! The fast extension (BEP 6) in the torrent: `have all` / `have none`,
//! `reject request` both ways, the allowed-fast set both ways, and
//! `suggest piece` as a hint. Active only when both handshakes set the bit
//! (`Peer::fast.enabled`); a fast message from any other peer closes it.

#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

use super::*;
use crate::fast::{ALLOWED_FAST_SET, REJECT_ROOM, REJECTS_BEFORE_PAUSE};
use crate::peer::Peer;

impl Torrent {
    /// A fast message (suggest, have all, have none, reject, allowed fast).
    pub(super) fn on_fast_message(
        &mut self,
        key: PeerKey,
        msg: Message<'_>,
    ) -> Result<(), PeerError> {
        let n = self.geometry.num_pieces;
        let junk_limit = junk_limit(&self.cfg);
        let Some(peer) = self.peers.get_mut(key) else {
            return Ok(());
        };
        if !peer.fast.enabled {
            // As libtorrent: the bit is the only licence to send these.
            return Err(PeerError::Fast("fast message without the fast bit"));
        }
        if self.fetch.is_some() {
            // The piece count is not known yet (a magnet link): `have all`
            // is kept for later; piece numbers cannot be checked, and we
            // request nothing, so hints and rejects are ignored.
            match msg {
                Message::HaveAll => peer.fast.early_have_all = true,
                Message::Reject { .. } => count_junk(peer, junk_limit)?,
                _ => {}
            }
            return Ok(());
        }
        match msg {
            Message::HaveAll => {
                debug!("{} has every piece (have all)", peer.label());
                self.add_bitfield(key, Bitfield::full(n));
            }
            Message::HaveNone => {
                debug!("{} has no piece (have none)", peer.label());
                // A bitfield never takes pieces away; nothing to count.
                self.update_interest(key);
            }
            Message::Reject { piece, begin, len } => {
                let piece = PieceIndex(piece);
                let b = BlockRef { piece, begin, len };
                if peer.take_inflight(b) {
                    trace!("{} rejected {b:?}", peer.label());
                    self.picker.on_block_dropped(key, b);
                    peer.fast.rejected = peer.fast.rejected.saturating_add(1);
                    if peer.peer_choking {
                        // An allowed-fast piece it will no longer serve.
                        peer.fast.allowed_in.retain(|&p| p != piece);
                    }
                } else {
                    // A reject for a request we never made, or one we
                    // cancelled (a fast peer rejects those): ignored.
                    count_junk(peer, junk_limit)?;
                }
            }
            Message::AllowedFast { piece } => {
                let piece = PieceIndex(piece);
                if !self.geometry.contains(piece) {
                    debug!("{} allowed fast piece {piece}: out of range", peer.label());
                    count_junk(peer, junk_limit)?;
                } else if self.picker.have().get(piece) {
                    // Nothing to fetch.
                } else if peer.fast.allow(piece) {
                    debug!("{} allows piece {piece} while choking", peer.label());
                } else {
                    count_junk(peer, junk_limit)?;
                }
            }
            Message::Suggest { piece } => {
                let piece = PieceIndex(piece);
                if !self.geometry.contains(piece) {
                    count_junk(peer, junk_limit)?;
                } else if !self.picker.have().get(piece) {
                    trace!("{} suggests piece {piece}", peer.label());
                    peer.fast.suggest(piece);
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Our first answer after the handshakes to a fast peer: `have all`
    /// when we have everything, `have none` when nothing, else the bitfield.
    /// True when something was queued.
    pub(super) fn send_have_state(&mut self, key: PeerKey) -> bool {
        let have = self.picker.have();
        let Some(peer) = self.peers.get_mut(key) else {
            return false;
        };
        let out = peer.send.buf_mut();
        if have.count() == 0 {
            if !peer.fast.enabled {
                return false;
            }
            Message::HaveNone.encode(out);
        } else if peer.fast.enabled && have.is_full() {
            Message::HaveAll.encode(out);
        } else {
            Message::Bitfield(have.as_bytes()).encode(out);
        }
        self.dirty.push(key);
        true
    }

    /// A fast peer became interested: send it our allowed-fast set (once a
    /// connection, as libtorrent does, and only the pieces it lacks). We
    /// serve those pieces even while we choke it.
    pub(super) fn send_allowed_fast(&mut self, key: PeerKey) {
        let Some(peer) = self.peers.get_mut(key) else {
            return;
        };
        if !peer.fast.enabled || peer.fast.sent_allowed {
            return;
        }
        peer.fast.sent_allowed = true;
        let set = crate::fast::allowed_fast_set(
            peer.addr.ip(),
            &self.info_hash,
            self.geometry.num_pieces,
            ALLOWED_FAST_SET,
        );
        for &piece in &set {
            if !peer.has.get(piece) {
                Message::AllowedFast { piece: piece.0 }.encode(peer.send.buf_mut());
            }
        }
        debug!("{} may fetch pieces {set:?} while choked", peer.label());
        peer.fast.allowed_out = set;
        self.dirty.push(key);
    }
}

/// Fast messages a peer may send in one second that we ignore (stray
/// rejects, out-of-range or surplus hints) before it is closed: as many as
/// stray cancels (each costs at most a scan of our in-flight list).
fn junk_limit(cfg: &Config) -> u32 {
    u32::try_from(cfg.max_peer_requests.saturating_mul(4)).unwrap_or(u32::MAX)
}

fn count_junk(peer: &mut Peer, limit: u32) -> Result<(), PeerError> {
    peer.fast.junk = peer.fast.junk.saturating_add(1);
    if peer.fast.junk > limit {
        return Err(PeerError::Fast(
            "too many rejects or hints it had no cause to send",
        ));
    }
    Ok(())
}

/// We will not serve `b`: a fast peer is told with a `reject request`; a
/// peer without the extension gets nothing (BEP 3 has no way to say it).
/// A peer that keeps requesting without reading our answers is closed
/// once the rejects waiting in its send queue pass [`REJECT_ROOM`], or
/// after four times the queue limit in rejects within a second.
pub(super) fn refuse(
    peer: &mut Peer,
    key: PeerKey,
    b: BlockRef,
    cfg: &Config,
    dirty: &mut Vec<PeerKey>,
) -> Result<(), PeerError> {
    if !peer.fast.enabled {
        return Ok(());
    }
    peer.fast.rejects_sent = peer.fast.rejects_sent.saturating_add(1);
    if peer.fast.rejects_sent > junk_limit(cfg) || peer.send.len() >= reject_room(cfg) {
        return Err(PeerError::RequestFlood);
    }
    Message::Reject {
        piece: b.piece.0,
        begin: b.begin,
        len: b.len,
    }
    .encode(peer.send.buf_mut());
    dirty.push(key);
    Ok(())
}

/// Send-queue bytes beyond which no reject is queued: what serving fills it
/// to (the watermark and a block) plus [`REJECT_ROOM`].
fn reject_room(cfg: &Config) -> usize {
    cfg.send_watermark
        .saturating_add(crate::geometry::BLOCK_LEN as usize)
        .saturating_add(REJECT_ROOM)
}

/// We choke a fast peer: its queued requests are rejected, except those
/// for pieces of its allowed-fast set (BEP 6: with the extension a choke
/// no longer discards requests silently). A peer without the extension
/// loses them silently (BEP 3).
pub(super) fn drop_requests_on_choke(peer: &mut Peer, cfg: &Config) {
    let Peer {
        requests,
        send,
        fast,
        ..
    } = peer;
    if !fast.enabled {
        requests.clear();
        return;
    }
    // A peer that does not read its queue gets no more rejects beyond the
    // room (its requests are dropped silently, as BEP 3 would).
    let room = reject_room(cfg);
    requests.retain(|b| {
        if fast.allowed_for_them(b.piece) {
            return true;
        }
        if send.len() >= room {
            return false;
        }
        Message::Reject {
            piece: b.piece.0,
            begin: b.begin,
            len: b.len,
        }
        .encode(send.buf_mut());
        false
    });
}

/// Does the peer's request for `piece` get served while we choke it? Only
/// for its allowed-fast set, and at most three times each piece's blocks
/// over the connection (as libtorrent), so a choked peer cannot fetch the
/// same pieces forever.
pub(super) fn serve_while_choked(
    peer: &mut Peer,
    piece: PieceIndex,
    blocks_per_piece: u32,
) -> bool {
    if !peer.fast.enabled || !peer.fast.allowed_for_them(piece) {
        return false;
    }
    let cap = blocks_per_piece
        .saturating_mul(3)
        .saturating_mul(ALLOWED_FAST_SET);
    if peer.fast.choked_served >= cap {
        return false;
    }
    peer.fast.choked_served += 1;
    true
}

/// Blocks to ask `peer` for, appended to `out`. Choked by a fast peer: only
/// pieces of its allowed-fast set. Unchoked: pieces it suggested first (a
/// hint, among the pieces it has and we lack), then the usual order. A peer
/// that rejected many requests this second gets none until the next tick.
pub(super) fn pick_blocks(
    picker: &mut Picker,
    key: PeerKey,
    peer: &Peer,
    want: usize,
    out: &mut Vec<BlockRef>,
) {
    if peer.fast.rejected >= REJECTS_BEFORE_PAUSE {
        return;
    }
    if peer.peer_choking {
        if peer.fast.enabled && !peer.fast.allowed_in.is_empty() {
            let only = restrict(&peer.has, &peer.fast.allowed_in);
            picker.pick(key, &only, want, out);
        }
        return;
    }
    if !peer.fast.suggested.is_empty() {
        let only = restrict(&peer.has, &peer.fast.suggested);
        picker.pick(key, &only, want, out);
    }
    let left = want.saturating_sub(out.len());
    if left > 0 {
        picker.pick(key, &peer.has, left, out);
    }
}

/// The pieces of `pieces` that `has` holds, as a bitfield of its size.
fn restrict(has: &Bitfield, pieces: &[PieceIndex]) -> Bitfield {
    let mut only = Bitfield::new(has.len());
    for &p in pieces {
        if has.get(p) {
            only.set(p);
        }
    }
    only
}
