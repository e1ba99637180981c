//! Serving our metadata (BEP 9, `ut_metadata`): a peer that joined with
//! only the info-hash (a magnet link) asks for the raw `info` dictionary in
//! 16 KiB pieces; we answer each request with the piece (`data`) or a
//! `reject`.
//!
//! Bounds, per peer: while more than [`METADATA_BACKLOG`] bytes wait in its
//! send queue (it does not read), requests are rejected; it may ask
//! [`REQUESTS_PER_PIECE`] times for each piece (retries after a lost
//! connection's worth) before it is rejected, and twice that before the
//! connection is closed as a flood.

use super::Torrent;
use crate::ids::PeerKey;
use crate::peer::PeerError;
use crate::ut_metadata::{self, Msg};
use log::{debug, trace};

/// Send-queue bytes beyond which metadata requests are rejected.
pub const METADATA_BACKLOG: usize = 256 * 1024;

/// How many times a peer may ask for each metadata piece (plus a few
/// spare) before it is rejected; twice that, and it is dropped.
pub const REQUESTS_PER_PIECE: usize = 4;

impl Torrent {
    /// A `ut_metadata` message from peer `key`.
    pub(super) fn on_ut_metadata(
        &mut self,
        key: PeerKey,
        payload: &[u8],
        now: std::time::Instant,
    ) -> Result<(), PeerError> {
        let Some(peer) = self.peers.get_mut(key) else {
            return Ok(());
        };
        let Some(msg) = Msg::parse(payload) else {
            debug!("{}: malformed ut_metadata message ignored", peer.label());
            return Ok(());
        };
        let Msg::Request { piece } = msg else {
            // An answer to our requests (a magnet link's torrent).
            return self.on_metadata_answer(key, msg, now);
        };
        // It must have told us its id for the extension to be answered.
        let Some(their_id) = peer.extensions.id_of(ut_metadata::NAME) else {
            debug!(
                "{}: ut_metadata request without a handshake naming it",
                peer.label()
            );
            return Ok(());
        };
        // While ours is being fetched, we have none to give: a `reject`
        // (a few bytes for each request, and none while its send queue is
        // long). Not counted against the flood budget, which is sized by
        // the metadata: a peer that also starts from a magnet link asks
        // again now and then for as long as both are connected.
        let Some(metadata) = &self.metadata else {
            if peer.send.len() <= METADATA_BACKLOG {
                Msg::Reject { piece }.encode(their_id, peer.send.buf_mut());
                self.dirty.push(key);
            }
            return Ok(());
        };
        peer.metadata_requests = peer.metadata_requests.saturating_add(1);
        let asked = peer.metadata_requests as usize;
        let budget = ut_metadata::num_pieces(metadata.len())
            .saturating_mul(REQUESTS_PER_PIECE)
            .saturating_add(REQUESTS_PER_PIECE);
        if asked > budget.saturating_mul(2) {
            return Err(PeerError::RequestFlood);
        }
        let answer = match ut_metadata::piece_of(metadata, piece) {
            Some(data) if asked <= budget && peer.send.len() <= METADATA_BACKLOG => Msg::Data {
                piece,
                total_size: metadata.len() as u64,
                data,
            },
            _ => Msg::Reject { piece },
        };
        let what = match answer {
            Msg::Data { .. } => "sent",
            _ => "rejected",
        };
        trace!("{}: ut_metadata piece {piece} {what}", peer.label());
        answer.encode(their_id, peer.send.buf_mut());
        self.dirty.push(key);
        Ok(())
    }
}
