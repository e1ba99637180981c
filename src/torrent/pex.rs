//! Peer exchange (BEP 11, `ut_pex`): what we tell each peer about our other
//! peers, and what we take from theirs. Never for a private torrent (BEP
//! 27): it does not register `ut_pex`, sends nothing and ignores anything
//! that claims to be a `ut_pex` message (a magnet torrent counts as public
//! until its metadata says otherwise, see [`Torrent::set_private`]).
//!
//! Sending, per peer: the first message [`FIRST_DELAY`] after we see its
//! extension handshake (libtorrent sends its first at once), then at most
//! one every `cfg.pex_interval` (60 s by default, as BEP 11 asks), and only
//! when something changed. A message holds the peers connected since the
//! last one to that peer (`added`, at most [`MAX_ADDED`], with flags) and
//! those gone since (`dropped`, at most [`MAX_DROPPED`]). Only peers whose
//! listen address we know are told: the address we dialed, or an incoming
//! peer's IP with the port of its extension handshake (`p`).
//!
//! Receiving, the bounds: a peer's messages closer together than
//! [`min_receive_gap`] are ignored unread; from one message at most
//! [`MAX_ADDED`] added addresses are looked at (the codec reads at most
//! [`ut_pex::MAX_ENTRIES`] per list anyway); a torrent takes at most
//! [`TORRENT_BUDGET`] addresses per [`BUDGET_WINDOW`] from all its peers
//! together, and holds at most [`MAX_LEARNT`] until the shell moves them
//! into its candidate table (itself capped, oldest evicted).
//!
//! Per-peer state: the addresses told to that peer, at most [`MAX_TOLD`].

#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

use super::Torrent;
use crate::ids::PeerKey;
use crate::peer::{Peer, Phase};
use crate::ut_pex::{self, Pex, flags};
use log::{debug, trace};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Most added peers per message, sent or taken (BEP 11).
pub const MAX_ADDED: usize = 50;
/// Most dropped peers per message sent (BEP 11).
pub const MAX_DROPPED: usize = 50;
/// Most addresses remembered as told, per peer.
pub const MAX_TOLD: usize = 200;
/// Most learnt addresses waiting for the shell.
pub const MAX_LEARNT: usize = 200;
/// Most addresses a torrent takes from peer exchange per [`BUDGET_WINDOW`].
pub const TORRENT_BUDGET: usize = 200;
/// See [`TORRENT_BUDGET`].
pub const BUDGET_WINDOW: Duration = Duration::from_secs(60);
/// The first message to a peer goes this long after its extension
/// handshake is seen (or after `cfg.pex_interval`, if shorter).
pub const FIRST_DELAY: Duration = Duration::from_secs(3);
/// A peer's `ut_pex` messages are taken at most once per this long,
/// however short `cfg.pex_interval` is set ([`min_receive_gap`]).
pub const MAX_RECEIVE_GAP: Duration = Duration::from_secs(30);

/// The shortest gap between two messages of one peer that are both read:
/// half our own sending interval, at most [`MAX_RECEIVE_GAP`].
pub fn min_receive_gap(pex_interval: Duration) -> Duration {
    (pex_interval / 2).min(MAX_RECEIVE_GAP)
}

/// One peer's peer-exchange state.
#[derive(Debug, Default)]
pub struct PeerPex {
    /// When our next message to it is due (set once it names `ut_pex`).
    next_send: Option<Instant>,
    /// Listen addresses we told it about, sorted, at most [`MAX_TOLD`].
    told: Vec<SocketAddr>,
    /// When we last read one of its messages.
    last_taken: Option<Instant>,
}

/// Counters, for tests and log lines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PexStats {
    /// Messages sent.
    pub sent: u64,
    /// Messages read.
    pub received: u64,
    /// Messages ignored: too frequent, malformed, or for a private torrent.
    pub ignored: u64,
    /// Added addresses offered in messages read (before any cap).
    pub offered: u64,
    /// Addresses taken as candidates.
    pub taken: u64,
}

/// A torrent's peer-exchange state.
#[derive(Debug, Default)]
pub struct TorrentPex {
    private: bool,
    /// Learnt addresses the shell has not drained yet (at most
    /// [`MAX_LEARNT`]).
    learnt: Vec<SocketAddr>,
    /// Start of the current budget window, and what was taken in it.
    window: Option<Instant>,
    taken_in_window: usize,
    pub stats: PexStats,
}

impl TorrentPex {
    pub fn new(private: bool) -> TorrentPex {
        TorrentPex {
            private,
            ..TorrentPex::default()
        }
    }
}

/// Where `p` accepts connections, if we know: the address we dialed, or
/// its IP with the port its extension handshake gave.
fn listen_addr(p: &Peer) -> Option<SocketAddr> {
    if p.outgoing {
        Some(p.addr)
    } else {
        p.extensions
            .listen_port
            .map(|port| SocketAddr::new(p.addr.ip(), port))
    }
}

/// Is `addr`, heard from a peer at `from`, worth dialing? No port 0, no
/// unspecified, multicast or broadcast address; a loopback address only
/// from a loopback peer.
fn plausible(addr: SocketAddr, from: IpAddr) -> bool {
    let ip = addr.ip();
    let broadcast = matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
    addr.port() != 0
        && !ip.is_unspecified()
        && !ip.is_multicast()
        && !broadcast
        && (!ip.is_loopback() || from.is_loopback())
}

impl Torrent {
    /// Whether this torrent is private (BEP 27). A torrent made from a
    /// magnet link learns it with its metadata: once private, it sends no
    /// more peer exchange and ignores what peers send.
    pub fn set_private(&mut self, private: bool) {
        self.pex.private = private;
        if private {
            self.pex.learnt.clear();
        }
    }

    pub fn is_private(&self) -> bool {
        self.pex.private
    }

    /// Addresses learnt through peer exchange since the last call, for the
    /// shell's candidate table (at most [`MAX_LEARNT`]).
    pub fn drain_pex_peers(&mut self) -> std::vec::Drain<'_, SocketAddr> {
        self.pex.learnt.drain(..)
    }

    pub fn pex_stats(&self) -> PexStats {
        self.pex.stats
    }

    /// A `ut_pex` message from peer `key`.
    pub(super) fn on_ut_pex(&mut self, key: PeerKey, payload: &[u8], now: Instant) {
        let gap = min_receive_gap(self.cfg.pex_interval);
        let Some(peer) = self.peers.get_mut(key) else {
            return;
        };
        if self.pex.private {
            trace!("{}: ut_pex ignored: private torrent", peer.label());
            self.pex.stats.ignored += 1;
            return;
        }
        if peer
            .pex
            .last_taken
            .is_some_and(|t| now.duration_since(t) < gap)
        {
            trace!("{}: ut_pex ignored: too frequent", peer.label());
            self.pex.stats.ignored += 1;
            return;
        }
        peer.pex.last_taken = Some(now);
        let from = peer.addr.ip();
        let label = peer.label();
        let Some(msg) = Pex::parse(payload) else {
            debug!("{label}: malformed ut_pex message ignored");
            self.pex.stats.ignored += 1;
            return;
        };
        self.pex.stats.received += 1;
        let offered = msg.added_len();
        self.pex.stats.offered = self.pex.stats.offered.saturating_add(offered as u64);
        if self
            .pex
            .window
            .is_none_or(|w| now.duration_since(w) >= BUDGET_WINDOW)
        {
            self.pex.window = Some(now);
            self.pex.taken_in_window = 0;
        }
        let mut taken = 0;
        // A seed has nothing to gain from other seeds (a magnet torrent
        // still fetching its metadata is no seed, whatever its picker says).
        let seeding = self.fetch.is_none() && self.picker.is_complete();
        for (addr, f) in msg.added().take(MAX_ADDED) {
            if self.pex.learnt.len() >= MAX_LEARNT || self.pex.taken_in_window >= TORRENT_BUDGET {
                break;
            }
            if (seeding && f & flags::SEED != 0)
                || !plausible(addr, from)
                || self.pex.learnt.contains(&addr)
                || self
                    .peers
                    .iter()
                    .any(|(_, p)| p.addr == addr || listen_addr(p) == Some(addr))
            {
                continue;
            }
            self.pex.learnt.push(addr);
            self.pex.taken_in_window += 1;
            taken += 1;
        }
        self.pex.stats.taken += taken as u64;
        debug!(
            "{label}: ut_pex: {offered} added ({taken} new taken), {} dropped",
            msg.dropped().count()
        );
    }

    /// Send each peer that speaks `ut_pex` its due message (from the
    /// one-second tick).
    pub(super) fn pex_tick(&mut self, now: Instant) {
        if self.pex.private || self.extensions.local_id(ut_pex::NAME).is_none() {
            return;
        }
        let interval = self.cfg.pex_interval;
        // Our active peers' listen addresses, sorted (at most one per peer).
        let mut current: Vec<(SocketAddr, PeerKey, u8)> = self
            .peers
            .iter()
            .filter(|(_, p)| p.phase == Phase::Active)
            .filter_map(|(k, p)| {
                let mut f = 0;
                if p.outgoing {
                    f |= flags::REACHABLE;
                }
                if p.has.is_full() {
                    f |= flags::SEED;
                }
                Some((listen_addr(p)?, k, f))
            })
            .collect();
        current.sort_unstable();
        current.dedup_by_key(|e| e.0);
        let mut added = Vec::new();
        let mut dropped = Vec::new();
        for (key, peer) in self.peers.iter_mut() {
            if peer.phase != Phase::Active {
                continue;
            }
            let Some(their_id) = peer.extensions.id_of(ut_pex::NAME) else {
                continue;
            };
            let due = *peer
                .pex
                .next_send
                .get_or_insert(now + FIRST_DELAY.min(interval));
            if now < due {
                continue;
            }
            peer.pex.next_send = Some(now + interval);
            let own = listen_addr(peer);
            added.clear();
            dropped.clear();
            let told = &mut peer.pex.told;
            for &(addr, k, f) in &current {
                if added.len() >= MAX_ADDED || told.len() + added.len() >= MAX_TOLD {
                    break;
                }
                if k != key
                    && Some(addr) != own
                    && addr != peer.addr
                    && told.binary_search(&addr).is_err()
                {
                    added.push((addr, f));
                }
            }
            for &addr in told.iter() {
                if dropped.len() >= MAX_DROPPED {
                    break;
                }
                if current.binary_search_by_key(&addr, |e| e.0).is_err() {
                    dropped.push(addr);
                }
            }
            if added.is_empty() && dropped.is_empty() {
                continue;
            }
            told.retain(|a| !dropped.contains(a));
            told.extend(added.iter().map(|&(a, _)| a));
            told.sort_unstable();
            trace!(
                "{}: ut_pex sent: {} added, {} dropped",
                peer.label(),
                added.len(),
                dropped.len()
            );
            ut_pex::encode(their_id, &added, &dropped, peer.send.buf_mut());
            self.pex.stats.sent += 1;
            self.dirty.push(key);
        }
    }

    /// When the next peer-exchange message is due, if any (a peer that
    /// named `ut_pex` but has no schedule yet: now).
    pub(super) fn pex_next_due(&self, now: Instant) -> Option<Instant> {
        if self.pex.private || self.extensions.local_id(ut_pex::NAME).is_none() {
            return None;
        }
        self.peers
            .iter()
            .filter(|(_, p)| p.phase == Phase::Active && p.extensions.id_of(ut_pex::NAME).is_some())
            .map(|(_, p)| p.pex.next_send.unwrap_or(now))
            .min()
    }
}

#[cfg(test)]
#[path = "pex_tests.rs"]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests;
