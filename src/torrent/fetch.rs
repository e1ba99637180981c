//! Fetching the metadata of a torrent started from a magnet link (BEP 9):
//! the raw `info` dictionary, in 16 KiB pieces, from the peers whose
//! extension handshake offers `ut_metadata` with a `metadata_size`.
//!
//! Sans-IO: the torrent tells it which peers offer what and what they
//! answer; it says which piece to request from whom, and hands back the
//! metadata once its SHA-1 equals the info-hash.
//!
//! - One attempt at a time, at one size (the first offering peer's); peers
//!   offering another size wait as alternates for the next attempt.
//! - At most [`PER_PEER`] pieces in flight to a peer, each piece asked of
//!   one peer at a time; a piece unanswered after [`REQUEST_TIMEOUT`], or
//!   rejected, goes to another peer, and that peer rests [`REST`].
//! - A `data` message of the wrong size, for a piece we did not ask that
//!   peer for, or with another `total_size`, charges the peer: it is
//!   dropped ([`FetchError`]).
//! - Metadata that does not hash: if one peer sent all of it, that peer is
//!   dropped. Otherwise every contributor is marked and the next attempts
//!   take every piece from a single peer, so a failure names its sender.
//!
//! Bounds: sizes over [`MAX_METADATA_LEN`] are refused (the `.torrent`
//! limit), so the buffer is at most that; peers are those of the torrent
//! (its connection cap); per peer a few counters.

#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

use crate::ids::PeerKey;
use crate::ut_metadata::{MAX_METADATA_LEN, PIECE_LEN, num_pieces};
use sha1::{Digest, Sha1};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Pieces in flight to one peer at once.
pub const PER_PEER: usize = 2;

/// A request unanswered this long goes to another peer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A peer that rejected a request or let it time out is not asked again
/// for this long.
pub const REST: Duration = Duration::from_secs(30);

/// Why a peer is dropped by the fetch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FetchError {
    /// A piece of the wrong length, or a `total_size` other than stated.
    WrongSize,
    /// A piece it was not asked for.
    Unrequested,
    /// It alone sent metadata whose SHA-1 is not the info-hash.
    BadHash,
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FetchError::WrongSize => "metadata piece of the wrong size",
            FetchError::Unrequested => "metadata piece we did not ask it for",
            FetchError::BadHash => "its metadata does not match the info-hash",
        })
    }
}

/// What a peer offers and how it has done.
#[derive(Clone, Debug)]
struct Source {
    size: usize,
    inflight: usize,
    rest_until: Option<Instant>,
    /// Contributed to metadata that did not hash (with others).
    suspect: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Piece {
    Missing,
    Asked { from: PeerKey, at: Instant },
    Got { from: PeerKey },
}

/// One attempt: metadata of one size being assembled.
#[derive(Debug)]
struct Attempt {
    size: usize,
    buf: Vec<u8>,
    pieces: Vec<Piece>,
}

/// The metadata fetch of one torrent.
#[derive(Debug)]
pub struct MetadataFetch {
    info_hash: [u8; 20],
    sources: HashMap<PeerKey, Source>,
    attempt: Option<Attempt>,
    /// After metadata from several peers failed to hash: take each attempt
    /// from this one peer.
    single: Option<PeerKey>,
    single_mode: bool,
    /// Verified metadata, until taken.
    done: Option<Arc<[u8]>>,
    /// Attempts that failed the hash check.
    pub failures: u32,
}

impl MetadataFetch {
    pub fn new(info_hash: [u8; 20]) -> MetadataFetch {
        MetadataFetch {
            info_hash,
            sources: HashMap::new(),
            attempt: None,
            single: None,
            single_mode: false,
            done: None,
            failures: 0,
        }
    }

    /// Peer `key` offers metadata of `size` bytes. False (and ignored) for
    /// a size of 0 or over [`MAX_METADATA_LEN`].
    pub fn add_source(&mut self, key: PeerKey, size: u64) -> bool {
        let Ok(size) = usize::try_from(size) else {
            return false;
        };
        if size == 0 || size > MAX_METADATA_LEN {
            return false;
        }
        self.sources.insert(
            key,
            Source {
                size,
                inflight: 0,
                rest_until: None,
                suspect: false,
            },
        );
        true
    }

    /// Peers that offer metadata.
    pub fn source_count(&self) -> usize {
        self.sources.len()
    }

    /// The peer is gone: what it was asked for goes to others.
    pub fn remove_peer(&mut self, key: PeerKey) {
        if self.sources.remove(&key).is_none() {
            return;
        }
        if let Some(a) = &mut self.attempt {
            for p in &mut a.pieces {
                if matches!(*p, Piece::Asked { from, .. } if from == key) {
                    *p = Piece::Missing;
                }
            }
        }
        if self.single == Some(key) {
            self.single = None;
            // Pieces it sent cannot be told from another's: start over.
            self.attempt = None;
        }
    }

    /// (pieces received, pieces in all) of the current attempt.
    pub fn progress(&self) -> (u32, u32) {
        match &self.attempt {
            Some(a) => {
                let got = a
                    .pieces
                    .iter()
                    .filter(|p| matches!(p, Piece::Got { .. }))
                    .count();
                (got as u32, a.pieces.len() as u32)
            }
            None => (0, 0),
        }
    }

    /// Verified metadata, once (then the fetch is over).
    pub fn take_done(&mut self) -> Option<Arc<[u8]>> {
        self.done.take()
    }

    pub fn is_done(&self) -> bool {
        self.done.is_some()
    }

    fn usable(&self, key: PeerKey, now: Instant) -> bool {
        self.sources.get(&key).is_some_and(|s| {
            s.inflight < PER_PEER
                && s.rest_until.is_none_or(|t| now >= t)
                && self.attempt.as_ref().is_none_or(|a| a.size == s.size)
        })
    }

    /// Start an attempt if none runs, at the size of a usable peer (in
    /// single-source mode: the least suspect one, which then sends all).
    fn start_attempt(&mut self, now: Instant) {
        if self.attempt.is_some() || self.done.is_some() {
            return;
        }
        let mut keys: Vec<PeerKey> = self
            .sources
            .iter()
            .filter(|(_, s)| s.rest_until.is_none_or(|t| now >= t))
            .map(|(&k, _)| k)
            .collect();
        // Deterministic: lowest key first, the unsuspected before others.
        keys.sort_unstable_by_key(|k| (self.sources.get(k).is_some_and(|s| s.suspect), *k));
        let Some(&first) = keys.first() else {
            return;
        };
        let Some(size) = self.sources.get(&first).map(|s| s.size) else {
            return;
        };
        if self.single_mode {
            self.single = Some(first);
        }
        self.attempt = Some(Attempt {
            size,
            buf: vec![0; size],
            pieces: vec![Piece::Missing; num_pieces(size)],
        });
    }

    /// Requests to send now, as (peer, piece), appended to `out`; also
    /// returns to the pool pieces whose request timed out.
    pub fn poll_requests(&mut self, now: Instant, out: &mut Vec<(PeerKey, u32)>) {
        if self.done.is_some() {
            return;
        }
        // Time-outs first.
        if let Some(a) = &mut self.attempt {
            for p in &mut a.pieces {
                if let Piece::Asked { from, at } = *p
                    && now.duration_since(at) >= REQUEST_TIMEOUT
                {
                    *p = Piece::Missing;
                    if let Some(s) = self.sources.get_mut(&from) {
                        s.inflight = s.inflight.saturating_sub(1);
                        s.rest_until = Some(now + REST);
                    }
                }
            }
        }
        // An attempt whose size nobody offers any more is dropped.
        if let Some(a) = &self.attempt
            && !self.sources.values().any(|s| s.size == a.size)
        {
            self.attempt = None;
        }
        self.start_attempt(now);
        let Some(a) = &self.attempt else {
            return;
        };
        let mut peers: Vec<PeerKey> = match self.single {
            Some(k) => vec![k],
            None if self.single_mode => Vec::new(),
            None => self.sources.keys().copied().collect(),
        };
        peers.sort_unstable();
        peers.retain(|&k| self.usable(k, now));
        let mut missing: Vec<u32> = a
            .pieces
            .iter()
            .enumerate()
            .filter(|(_, p)| **p == Piece::Missing)
            .filter_map(|(i, _)| u32::try_from(i).ok())
            .collect();
        missing.reverse();
        let Some(a) = &mut self.attempt else {
            return;
        };
        // Round robin over the peers with room.
        'outer: loop {
            let mut any = false;
            for &k in &peers {
                let Some(s) = self.sources.get_mut(&k) else {
                    continue;
                };
                if s.inflight >= PER_PEER {
                    continue;
                }
                let Some(piece) = missing.pop() else {
                    break 'outer;
                };
                if let Some(p) = a.pieces.get_mut(piece as usize) {
                    *p = Piece::Asked { from: k, at: now };
                }
                s.inflight += 1;
                out.push((k, piece));
                any = true;
            }
            if !any {
                break;
            }
        }
    }

    /// The peer will not send `piece`.
    pub fn on_reject(&mut self, key: PeerKey, piece: u32, now: Instant) {
        let Some(s) = self.sources.get_mut(&key) else {
            return;
        };
        let Some(a) = &mut self.attempt else {
            return;
        };
        if let Some(p) = a.pieces.get_mut(piece as usize)
            && matches!(*p, Piece::Asked { from, .. } if from == key)
        {
            *p = Piece::Missing;
            s.inflight = s.inflight.saturating_sub(1);
            s.rest_until = Some(now + REST);
        }
    }

    /// Piece `piece` of metadata `total_size` bytes long, from `key`.
    /// `Ok(true)` once the metadata is complete and verified
    /// ([`MetadataFetch::take_done`]); an error names a peer to drop. A
    /// `data` for a piece already in hand (a late answer to a request that
    /// timed out) is ignored.
    pub fn on_data(
        &mut self,
        key: PeerKey,
        piece: u32,
        total_size: u64,
        data: &[u8],
    ) -> Result<bool, FetchError> {
        let Some(a) = &mut self.attempt else {
            return Ok(false);
        };
        let Some(slot) = a.pieces.get_mut(piece as usize) else {
            return Err(FetchError::Unrequested);
        };
        match *slot {
            Piece::Asked { from, .. } if from == key => {}
            // Late: asked of it before, answered by another since.
            Piece::Got { .. } => return Ok(false),
            // Asked again elsewhere after a time-out: take it anyway, if
            // this peer offers the same size.
            Piece::Asked { .. } | Piece::Missing
                if self.sources.get(&key).is_some_and(|s| s.size == a.size) =>
            {
                return Ok(false);
            }
            _ => return Err(FetchError::Unrequested),
        }
        let start = piece as usize * PIECE_LEN;
        let want = a.size.saturating_sub(start).min(PIECE_LEN);
        if total_size != a.size as u64 || data.len() != want {
            return Err(FetchError::WrongSize);
        }
        if let Some(dst) = a.buf.get_mut(start..start + want) {
            dst.copy_from_slice(data);
        }
        *slot = Piece::Got { from: key };
        if let Some(s) = self.sources.get_mut(&key) {
            s.inflight = s.inflight.saturating_sub(1);
        }
        if a.pieces.iter().all(|p| matches!(p, Piece::Got { .. })) {
            return self.finish();
        }
        Ok(false)
    }

    /// Every piece is in: check the hash.
    fn finish(&mut self) -> Result<bool, FetchError> {
        let Some(a) = self.attempt.take() else {
            return Ok(false);
        };
        let hash: [u8; 20] = Sha1::digest(&a.buf).into();
        if hash == self.info_hash {
            self.done = Some(a.buf.into());
            return Ok(true);
        }
        self.failures += 1;
        let mut senders: Vec<PeerKey> = a
            .pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Got { from } => Some(*from),
                _ => None,
            })
            .collect();
        senders.sort_unstable();
        senders.dedup();
        if let [only] = senders[..] {
            self.sources.remove(&only);
            if self.single == Some(only) {
                self.single = None;
            }
            return Err(FetchError::BadHash);
        }
        // Several sent it: none can be named yet. From now on one peer
        // sends every piece of an attempt.
        for k in senders {
            if let Some(s) = self.sources.get_mut(&k) {
                s.suspect = true;
            }
        }
        self.single_mode = true;
        self.single = None;
        Ok(false)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn meta(len: usize) -> (Vec<u8>, [u8; 20]) {
        let m: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        let h = Sha1::digest(&m).into();
        (m, h)
    }

    fn k(n: usize) -> PeerKey {
        PeerKey::from_raw(n)
    }

    fn piece(m: &[u8], i: u32) -> &[u8] {
        crate::ut_metadata::piece_of(m, i).unwrap()
    }

    #[test]
    fn fetches_from_several_peers_and_verifies() {
        let (m, h) = meta(40_000); // 3 pieces
        let mut f = MetadataFetch::new(h);
        let now = Instant::now();
        assert!(f.add_source(k(1), m.len() as u64));
        assert!(f.add_source(k(2), m.len() as u64));
        let mut out = Vec::new();
        f.poll_requests(now, &mut out);
        assert_eq!(out.len(), 3);
        // Spread over both peers, each piece once.
        assert!(out.iter().any(|r| r.0 == k(1)) && out.iter().any(|r| r.0 == k(2)));
        let mut pieces: Vec<u32> = out.iter().map(|r| r.1).collect();
        pieces.sort_unstable();
        assert_eq!(pieces, [0, 1, 2]);
        let mut done = false;
        for &(p, i) in &out {
            done = f.on_data(p, i, m.len() as u64, piece(&m, i)).unwrap();
        }
        assert!(done);
        assert_eq!(&*f.take_done().unwrap(), &m[..]);
    }

    #[test]
    fn refuses_huge_or_empty_sizes() {
        let mut f = MetadataFetch::new([0; 20]);
        assert!(!f.add_source(k(1), 2 << 30));
        assert!(!f.add_source(k(1), 0));
        assert!(!f.add_source(k(1), MAX_METADATA_LEN as u64 + 1));
        let mut out = Vec::new();
        f.poll_requests(Instant::now(), &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn wrong_sizes_and_unrequested_pieces_charge_the_peer() {
        let (m, h) = meta(20_000);
        let mut f = MetadataFetch::new(h);
        let now = Instant::now();
        f.add_source(k(1), m.len() as u64);
        f.add_source(k(2), 99);
        let mut out = Vec::new();
        f.poll_requests(now, &mut out);
        assert_eq!(out, [(k(1), 0), (k(1), 1)]);
        // Short first piece.
        assert_eq!(
            f.on_data(k(1), 0, m.len() as u64, &m[..100]),
            Err(FetchError::WrongSize)
        );
        // Another total size.
        assert_eq!(
            f.on_data(k(1), 1, 5, piece(&m, 1)),
            Err(FetchError::WrongSize)
        );
        // A piece that does not exist, and one from a peer of another size.
        assert_eq!(
            f.on_data(k(1), 7, m.len() as u64, &m[..10]),
            Err(FetchError::Unrequested)
        );
        assert_eq!(
            f.on_data(k(2), 0, m.len() as u64, piece(&m, 0)),
            Err(FetchError::Unrequested)
        );
    }

    #[test]
    fn timeouts_and_rejects_move_pieces_to_other_peers() {
        let (m, h) = meta(10_000);
        let mut f = MetadataFetch::new(h);
        let t0 = Instant::now();
        f.add_source(k(1), m.len() as u64);
        let mut out = Vec::new();
        f.poll_requests(t0, &mut out);
        assert_eq!(out, [(k(1), 0)]);
        f.add_source(k(2), m.len() as u64);
        out.clear();
        f.poll_requests(t0 + Duration::from_secs(1), &mut out);
        assert!(out.is_empty(), "piece 0 is asked already");
        f.poll_requests(t0 + REQUEST_TIMEOUT, &mut out);
        assert_eq!(out, [(k(2), 0)]);
        f.on_reject(k(2), 0, t0 + REQUEST_TIMEOUT);
        out.clear();
        // Both rest now.
        f.poll_requests(t0 + REQUEST_TIMEOUT, &mut out);
        assert!(out.is_empty());
        f.poll_requests(t0 + REQUEST_TIMEOUT + REST, &mut out);
        assert_eq!(out.len(), 1);
        // A late answer from the first is taken if it is the same size.
        let (p, i) = out[0];
        assert!(f.on_data(p, i, m.len() as u64, piece(&m, i)).unwrap());
    }

    #[test]
    fn a_sole_liar_is_dropped_and_another_peer_is_used() {
        let (m, h) = meta(20_000);
        let bad: Vec<u8> = m.iter().map(|b| b ^ 1).collect();
        let mut f = MetadataFetch::new(h);
        let now = Instant::now();
        f.add_source(k(1), m.len() as u64);
        let mut out = Vec::new();
        f.poll_requests(now, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(
            f.on_data(k(1), 0, m.len() as u64, piece(&bad, 0)),
            Ok(false)
        );
        assert_eq!(
            f.on_data(k(1), 1, m.len() as u64, piece(&bad, 1)),
            Err(FetchError::BadHash)
        );
        assert_eq!(f.source_count(), 0);
        f.add_source(k(2), m.len() as u64);
        out.clear();
        f.poll_requests(now, &mut out);
        assert_eq!(out, [(k(2), 0), (k(2), 1)]);
        f.on_data(k(2), 0, m.len() as u64, piece(&m, 0)).unwrap();
        assert!(f.on_data(k(2), 1, m.len() as u64, piece(&m, 1)).unwrap());
    }

    #[test]
    fn a_liar_among_several_is_found_by_single_source_attempts() {
        let (m, h) = meta(40_000);
        let bad: Vec<u8> = m.iter().map(|b| b ^ 1).collect();
        let mut f = MetadataFetch::new(h);
        let now = Instant::now();
        f.add_source(k(1), m.len() as u64); // the liar
        f.add_source(k(2), m.len() as u64);
        let mut dropped = Vec::new();
        let mut done = false;
        for _round in 0..6 {
            let mut out = Vec::new();
            f.poll_requests(now, &mut out);
            for (p, i) in out {
                let src = if p == k(1) { &bad } else { &m };
                match f.on_data(p, i, m.len() as u64, piece(src, i)) {
                    Ok(true) => done = true,
                    Ok(false) => {}
                    Err(e) => {
                        assert_eq!(e, FetchError::BadHash);
                        dropped.push(p);
                        f.remove_peer(p);
                    }
                }
            }
            if done {
                break;
            }
        }
        assert!(done);
        assert!(dropped.iter().all(|&p| p == k(1)), "{dropped:?}");
        assert_eq!(&*f.take_done().unwrap(), &m[..]);
    }

    #[test]
    fn a_departed_peer_frees_its_pieces() {
        let (m, h) = meta(10_000);
        let mut f = MetadataFetch::new(h);
        let now = Instant::now();
        f.add_source(k(1), m.len() as u64);
        f.add_source(k(2), m.len() as u64);
        let mut out = Vec::new();
        f.poll_requests(now, &mut out);
        assert_eq!(out, [(k(1), 0)]);
        f.remove_peer(k(1));
        out.clear();
        f.poll_requests(now, &mut out);
        assert_eq!(out, [(k(2), 0)]);
    }
}
