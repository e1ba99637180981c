//! What runs on the clock: the one-second tick (rates, pipeline depth,
//! time-outs, keep-alives), when it is next needed, and choke rounds.

#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

use super::*;

impl Torrent {
    /// Periodic work (about once a second): rates, pipeline depth, time-outs,
    /// keep-alives, choking. Adds the event-loop tokens of peers to close,
    /// with the reason, to `close`.
    pub fn tick(
        &mut self,
        now: Instant,
        dt: std::time::Duration,
        close: &mut Vec<(ConnToken, PeerError)>,
    ) {
        let complete = self.is_complete();
        for (key, peer) in self.peers.iter_mut() {
            peer.down.tick(dt);
            peer.up.tick(dt);
            if peer.phase == Phase::Handshaking {
                if now.duration_since(peer.connected_at) > self.cfg.handshake_timeout {
                    close.push((peer.token, PeerError::Timeout("handshake")));
                }
                continue;
            }
            if now.duration_since(peer.last_recv) > self.cfg.idle_timeout {
                close.push((peer.token, PeerError::Timeout("idle connection")));
                continue;
            }
            if complete && peer.has.is_full() {
                close.push((peer.token, PeerError::BothSeeds));
                continue;
            }
            // Enough requests in flight to cover about a second at the
            // measured rate, within bounds. The last second's own rate
            // counts when higher, so a window that limits the rate doubles
            // each tick rather than creeping up with the smoothed figure
            // (Transmission answers a window about twice a second).
            let rate = peer.down.rate().max(peer.down.last());
            let per_sec = (rate / crate::geometry::BLOCK_LEN as u64) as usize;
            // A snubbed peer keeps only a few requests in flight until it
            // delivers again.
            peer.pipeline = if peer.snubbed {
                self.cfg.pipeline_min
            } else {
                per_sec.clamp(self.cfg.pipeline_start, self.cfg.pipeline_max)
            };
            // A window that shrank (the peer slowed down) gives back what
            // it no longer covers, newest first, so one slow peer cannot sit
            // on every open piece until its requests drain.
            if peer.inflight.len() > 2 * peer.pipeline {
                let mut released = 0;
                while peer.inflight.len() > peer.pipeline {
                    let Some(r) = peer.inflight.pop_back() else {
                        break;
                    };
                    self.picker.on_block_dropped(key, r.block);
                    Message::Cancel {
                        piece: r.block.piece.0,
                        begin: r.block.begin,
                        len: r.block.len,
                    }
                    .encode(peer.send.buf_mut());
                    released += 1;
                }
                debug!(
                    "{} slowed down: {released} requests cancelled",
                    peer.label()
                );
                self.dirty.push(key);
            }
            peer.stray_cancels = 0;
            if peer.fast.rejected > 0 {
                debug!(
                    "{} rejected {} of our requests",
                    peer.label(),
                    peer.fast.rejected
                );
            }
            peer.fast.tick();
            if !peer.inflight.is_empty()
                && now.duration_since(peer.last_block) > self.cfg.request_timeout
            {
                debug!(
                    "{} snubbed: no block for {:?}",
                    peer.label(),
                    self.cfg.request_timeout
                );
                peer.snubbed = true;
                peer.pipeline = self.cfg.pipeline_min;
                for r in peer.inflight.drain(..) {
                    self.picker.on_block_dropped(key, r.block);
                }
            }
            // An idle connection gives back what a burst (serving, a big
            // bitfield) made its send queue grow to: at most once a second,
            // so a busy peer's buffer is not reallocated on every drain.
            if peer.requests.is_empty() {
                peer.send.shrink_if_empty(SEND_IDLE_CAP);
            }
            // A receive buffer that saw nothing for a second goes back to
            // its idle size.
            if peer.down.last() == 0 && peer.inflight.is_empty() {
                peer.recv.shrink_if_empty(RECV_IDLE_CAP);
            }
            if now.duration_since(peer.last_sent) > self.cfg.keepalive_interval {
                Message::KeepAlive.encode(peer.send.buf_mut());
                self.dirty.push(key);
            }
        }
        self.choke_round(now);
        self.fetch_requests(now);
        self.pex_tick(now);
        let keys: Vec<PeerKey> = self.peers.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.request_more(key, now);
        }
    }

    /// When this torrent next needs the clock: in a second while anything
    /// moves (requests in flight or queued, bytes in the last seconds,
    /// output waiting, a handshake pending), else its peers' idle and
    /// keep-alive deadlines and the next choke round. `None`: no peers.
    pub fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        let mut at: Option<Instant> = None;
        let soon = |at: &mut Option<Instant>, t: Instant| {
            *at = Some(at.map_or(t, |a| a.min(t)));
        };
        // Metadata requests time out on the one-second tick.
        if self.fetch.as_ref().is_some_and(|f| f.source_count() > 0) {
            return Some(now + std::time::Duration::from_secs(1));
        }
        for (_, p) in self.peers.iter() {
            let moving = p.phase == Phase::Handshaking
                || !p.inflight.is_empty()
                || !p.requests.is_empty()
                || !p.send.is_empty()
                || p.down.rate() > 0
                || p.up.rate() > 0
                || p.down.last() > 0
                || p.up.last() > 0;
            if moving {
                return Some(now + std::time::Duration::from_secs(1));
            }
            soon(&mut at, p.last_recv + self.cfg.idle_timeout);
            soon(&mut at, p.last_sent + self.cfg.keepalive_interval);
        }
        if at.is_some() {
            soon(&mut at, self.choker.poll_timeout());
        }
        if let Some(t) = self.pex_next_due(now) {
            soon(&mut at, t);
        }
        at
    }

    /// Run a choke round if one is due (every 10 s, or at once when an
    /// interested peer waits for a free slot). Cheap when none is due.
    pub fn choke_round(&mut self, now: Instant) {
        if now < self.choker.poll_timeout() {
            return;
        }
        let seeding = self.is_complete();
        let candidates: Vec<ChokeCandidate> = self
            .peers
            .iter()
            .filter(|(_, p)| p.phase == Phase::Active)
            .map(|(key, p)| ChokeCandidate {
                key,
                interested: p.peer_interested,
                rate: if seeding { p.up.rate() } else { p.down.rate() },
                is_seed: p.has.is_full(),
                choked: p.am_choking,
            })
            .collect();
        let mut changes = std::mem::take(&mut self.choke_buf);
        changes.clear();
        self.choker.tick(now, &candidates, &mut changes);
        for &(key, choke) in &changes {
            let Some(peer) = self.peers.get_mut(key) else {
                continue;
            };
            peer.am_choking = choke;
            // Requests that cross our choke on the wire are normal: count
            // them afresh after each change, so a long-lived peer choked
            // many times is never taken for a flood.
            peer.choked_requests = 0;
            if choke {
                Message::Choke.encode(peer.send.buf_mut());
                // Choking discards the peer's pending requests (BEP 3); a
                // fast peer gets a reject for each (BEP 6).
                fast::drop_requests_on_choke(peer, &self.cfg);
            } else {
                Message::Unchoke.encode(peer.send.buf_mut());
            }
            self.dirty.push(key);
        }
        self.choke_buf = changes;
    }
}
