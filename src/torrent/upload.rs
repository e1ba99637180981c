//! Serving blocks to peers: filling send buffers from their queued requests
//! within the upload bucket.

#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

use super::*;

impl Torrent {
    /// Fill the peer's send buffer from its queued requests, up to the
    /// watermark. Called after messages and whenever its socket drains. A
    /// block not in memory queues a read job for the shell
    /// ([`Torrent::next_read`]); the peer is served again when it is done.
    pub fn serve(&mut self, key: PeerKey) -> Result<(), PeerError> {
        let Some(peer) = self.peers.get_mut(key) else {
            return Ok(());
        };
        let mut served = false;
        while peer.send.len() < self.cfg.send_watermark && self.up_bucket.available() > 0 {
            let Some(&b) = peer.requests.front() else {
                break;
            };
            let out = peer.send.buf_mut();
            let mark = out.len();
            wire::encode_piece_header(b.piece.0, b.begin, b.len, out);
            match self.cache.copy_block(b, out) {
                Ok(true) => {}
                Ok(false) => {
                    out.truncate(mark);
                    if !self.reads.iter().any(|j| j.covers(b)) && self.reads.len() < MAX_READ_JOBS {
                        self.reads.push(self.cache.read_job(b));
                    }
                    if !self.read_waiters.contains(&key) {
                        self.read_waiters.push(key);
                    }
                    break;
                }
                Err(e) => {
                    out.truncate(mark);
                    warn!("cannot serve piece {}: {e}", b.piece);
                    self.storage_error = Some(e.to_string());
                    return Err(PeerError::Storage);
                }
            }
            peer.requests.pop_front();
            self.up_bucket.take(b.len as usize);
            peer.up.add(b.len as u64);
            self.totals.uploaded += b.len as u64;
            served = true;
        }
        if served {
            self.dirty.push(key);
        }
        Ok(())
    }

    /// The next read for seeding the shell should do
    /// ([`jobs::read_pending`] carries it out and hands it back to
    /// [`Torrent::read_done`]).
    pub fn next_read(&mut self) -> Option<ReadJob> {
        self.reads.pop()
    }

    /// A read job came back. Its bytes join the read cache and the peers
    /// waiting are served again; a failed read (a file cut short or gone)
    /// closes the peers waiting for those bytes.
    pub fn read_done(&mut self, job: ReadJob, result: Result<(), StorageError>) {
        let mut failed_for = Vec::new();
        if let Err(e) = &result {
            warn!("cannot read piece {} to serve it: {e}", job.piece());
            self.storage_error = Some(e.to_string());
            for &k in &self.read_waiters {
                if let Some(p) = self.peers.get(k)
                    && p.requests.front().is_some_and(|&b| job.covers(b))
                {
                    failed_for.push((k, p.token));
                }
            }
        }
        self.cache.read_done(job, result.is_ok());
        let waiting = std::mem::take(&mut self.read_waiters);
        for key in waiting {
            let token = match self.peers.get(key) {
                Some(p) => p.token,
                None => continue,
            };
            if failed_for.iter().any(|&(k, _)| k == key) {
                self.to_close.push((token, PeerError::Storage));
                continue;
            }
            if let Err(e) = self.serve(key) {
                self.to_close.push((token, e));
            }
        }
        self.cache.trim_reads();
    }

    /// Reads are queued for the shell.
    pub fn has_read_jobs(&self) -> bool {
        !self.reads.is_empty()
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
        let waiting: Vec<PeerKey> = self
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
