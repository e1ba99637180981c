//! Serving blocks to peers: filling send buffers from their queued requests
//! within the upload bucket.

#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

use super::*;

impl Torrent {
    /// Fill the peer's send buffer from its queued requests, up to the
    /// watermark. Called after messages and whenever its socket drains.
    pub fn serve(&mut self, key: usize) -> Result<(), PeerError> {
        let Some(peer) = self.peers.get_mut(key) else {
            return Ok(());
        };
        let mut served = false;
        while peer.send.len() < self.cfg.send_watermark && self.up_bucket.available() > 0 {
            let Some(b) = peer.requests.pop_front() else {
                break;
            };
            self.up_bucket.take(b.len as usize);
            let out = peer.send.buf_mut();
            wire::encode_piece_header(b.piece, b.begin, b.len, out);
            if let Err(e) = self.cache.read_block(&self.disk, b, out) {
                warn!("cannot read piece {} to serve it: {e}", b.piece);
                self.storage_error = Some(e.to_string());
                return Err(PeerError::Storage);
            }
            peer.up.add(b.len as u64);
            self.totals.uploaded += b.len as u64;
            served = true;
        }
        if served {
            self.dirty.push(key);
        }
        Ok(())
    }

    /// With an upload limit: add this turn's allowance (at most one second's
    /// worth banked) and serve peers that were waiting for it.
    pub fn refill_upload(&mut self, now: Instant) {
        self.down_bucket.refill(now);
        if self.up_bucket.rate().is_none() {
            return;
        }
        self.up_bucket.refill(now);
        if self.up_bucket.available() == 0 {
            return;
        }
        let waiting: Vec<usize> = self
            .peers
            .iter()
            .filter(|(_, p)| !p.requests.is_empty() && p.send.len() < self.cfg.send_watermark)
            .map(|(k, _)| k)
            .collect();
        for key in waiting {
            if self.serve(key).is_err() {
                break;
            }
        }
    }
}
