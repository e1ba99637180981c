//! The fast extension (BEP 6), pure parts: the allowed-fast set we offer a
//! peer, and what one peer's fast messages have told us (bounded lists).
//! The torrent's handling of the messages is in `torrent/fast.rs`.

#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

use crate::ids::PieceIndex;
use sha1::{Digest, Sha1};
use std::net::IpAddr;

/// Pieces in the allowed-fast set we offer a choked peer (BEP 6's `k`;
/// libtorrent offers 5).
pub const ALLOWED_FAST_SET: u32 = 10;

/// Most `allowed fast` pieces we remember from one peer. More are
/// ignored (and counted as junk): honest peers offer 5–10.
pub const MAX_ALLOWED_IN: usize = 2 * ALLOWED_FAST_SET as usize;

/// Most `suggest piece` hints kept per peer; a new one evicts the oldest.
pub const MAX_SUGGESTED: usize = 16;

/// Bytes of rejects that may wait in a peer's send queue beyond what serving
/// fills it to (the watermark and one block). A peer that keeps requesting
/// without reading our answers is closed as a request flood at that point,
/// so its queue stays bounded.
pub const REJECT_ROOM: usize = 64 * 1024;

/// Our requests a peer may reject in one second before we stop asking it
/// until the next tick (so a peer that rejects everything cannot make us
/// re-request in a tight loop).
pub const REJECTS_BEFORE_PAUSE: u32 = 64;

/// Most SHA-1 rounds when computing an allowed-fast set: a safety net for
/// tiny torrents where the set cannot fill (each round yields 5 indices).
const MAX_ROUNDS: u32 = 64;

/// The allowed-fast set of BEP 6 for a peer at `ip`: up to `k` distinct
/// piece indices below `num_pieces` (all of them when `k >= num_pieces`).
///
/// IPv4 (and IPv4-mapped IPv6): the address masked to its /24, followed by
/// the info-hash, is hashed with SHA-1; each digest gives five big-endian
/// `u32`s taken modulo the piece count, and the digest is hashed again
/// until `k` distinct pieces are found (the BEP's canonical algorithm).
/// IPv6: BEP 6 says nothing; we mask to the /48 (one site, like the /24
/// for IPv4: a peer cannot get a fresh set by moving inside its network)
/// and hash its 16 bytes the same way. The set is the same for every
/// connection from that network, so nothing is gained by reconnecting.
pub fn allowed_fast_set(
    ip: IpAddr,
    info_hash: &[u8; 20],
    num_pieces: u32,
    k: u32,
) -> Vec<PieceIndex> {
    let mut out = Vec::new();
    if num_pieces == 0 || k == 0 {
        return out;
    }
    if k >= num_pieces {
        out.extend((0..num_pieces).map(PieceIndex));
        return out;
    }
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    let mut seed = Vec::with_capacity(36);
    match ip {
        IpAddr::V4(v4) => {
            let masked = u32::from(v4) & 0xffff_ff00;
            seed.extend_from_slice(&masked.to_be_bytes());
        }
        IpAddr::V6(v6) => {
            let mut o = v6.octets();
            for b in o.iter_mut().skip(6) {
                *b = 0;
            }
            seed.extend_from_slice(&o);
        }
    }
    seed.extend_from_slice(info_hash);
    let mut x: [u8; 20] = Sha1::digest(&seed).into();
    for _ in 0..MAX_ROUNDS {
        for word in x.chunks_exact(4) {
            let mut w = [0u8; 4];
            w.copy_from_slice(word);
            let piece = PieceIndex(u32::from_be_bytes(w) % num_pieces);
            if !out.contains(&piece) {
                out.push(piece);
                if out.len() as u32 >= k {
                    return out;
                }
            }
        }
        x = Sha1::digest(x).into();
    }
    out
}

/// What one peer's fast extension state is. Every list is bounded (see the
/// constants above).
#[derive(Clone, Debug, Default)]
pub struct PeerFast {
    /// Both sides set the fast bit in their handshakes.
    pub enabled: bool,
    /// Pieces the peer lets us request while it chokes us (at most
    /// [`MAX_ALLOWED_IN`], all in range).
    pub allowed_in: Vec<PieceIndex>,
    /// Pieces we let it request while we choke it (our allowed-fast set for
    /// its address, at most [`ALLOWED_FAST_SET`]); empty until sent.
    pub allowed_out: Vec<PieceIndex>,
    /// We sent our allowed-fast set (once per connection).
    pub sent_allowed: bool,
    /// It said `have all` while the piece count was not known (a magnet
    /// link's metadata being fetched): its bitfield once it is.
    pub early_have_all: bool,
    /// Pieces it suggested, oldest first (at most [`MAX_SUGGESTED`]).
    pub suggested: Vec<PieceIndex>,
    /// Fast messages this second that we ignored: rejects for blocks we
    /// never asked for (or no longer wait for), out-of-range or surplus
    /// `allowed fast` and `suggest`. Reset every tick.
    pub junk: u32,
    /// Our requests it rejected this second (see [`REJECTS_BEFORE_PAUSE`]).
    pub rejected: u32,
    /// Requests for allowed-fast pieces we accepted while choking it (over
    /// the connection; capped in `torrent/fast.rs`).
    pub choked_served: u32,
    /// Rejects we sent this second (requests over the queue limit or for
    /// pieces we cannot serve; choked ones count in `choked_requests`).
    pub rejects_sent: u32,
}

impl PeerFast {
    /// Remember an `allowed fast` piece (already checked in range); false
    /// when the list is full (the piece is ignored).
    pub fn allow(&mut self, piece: PieceIndex) -> bool {
        if self.allowed_in.contains(&piece) {
            return true;
        }
        if self.allowed_in.len() >= MAX_ALLOWED_IN {
            return false;
        }
        self.allowed_in.push(piece);
        true
    }

    /// Remember a suggested piece (already checked in range), evicting the
    /// oldest when full.
    pub fn suggest(&mut self, piece: PieceIndex) {
        if self.suggested.contains(&piece) {
            return;
        }
        if self.suggested.len() >= MAX_SUGGESTED {
            self.suggested.remove(0);
        }
        self.suggested.push(piece);
    }

    /// `piece` verified: its `allowed fast` and `suggest` entries are
    /// spent (picks stop being narrowed to it).
    pub fn forget_piece(&mut self, piece: PieceIndex) {
        self.allowed_in.retain(|&p| p != piece);
        self.suggested.retain(|&p| p != piece);
    }

    /// Do we let it request `piece` while we choke it?
    pub fn allowed_for_them(&self, piece: PieceIndex) -> bool {
        self.allowed_out.contains(&piece)
    }

    /// The per-second counters start again.
    pub fn tick(&mut self) {
        self.junk = 0;
        self.rejected = 0;
        self.rejects_sent = 0;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn a_verified_piece_is_forgotten_from_the_hints() {
        let mut f = PeerFast::default();
        f.allow(PieceIndex(3));
        f.allow(PieceIndex(4));
        f.suggest(PieceIndex(3));
        f.forget_piece(PieceIndex(3));
        assert_eq!(f.allowed_in, [PieceIndex(4)]);
        assert!(f.suggested.is_empty());
    }

    /// The wire numbers of a set, to compare with the BEP's.
    fn nums(set: Vec<PieceIndex>) -> Vec<u32> {
        set.into_iter().map(u32::from).collect()
    }

    #[test]
    fn the_allowed_fast_set_matches_the_bep_6_example() {
        // BEP 6: peer 80.4.4.200, info-hash 0xaa * 20, 1313 pieces.
        let ip: IpAddr = "80.4.4.200".parse().unwrap();
        let set = nums(allowed_fast_set(ip, &[0xaa; 20], 1313, 7));
        assert_eq!(set, [1059, 431, 808, 1217, 287, 376, 1188]);
        let set = nums(allowed_fast_set(ip, &[0xaa; 20], 1313, 9));
        assert_eq!(set, [1059, 431, 808, 1217, 287, 376, 1188, 353, 508]);
        // The whole /24 gets the same set; another /24 another one.
        let same: IpAddr = "80.4.4.1".parse().unwrap();
        assert_eq!(nums(allowed_fast_set(same, &[0xaa; 20], 1313, 9)), set);
        let mapped: IpAddr = "::ffff:80.4.4.200".parse().unwrap();
        assert_eq!(nums(allowed_fast_set(mapped, &[0xaa; 20], 1313, 9)), set);
        let other: IpAddr = "80.4.5.200".parse().unwrap();
        assert_ne!(nums(allowed_fast_set(other, &[0xaa; 20], 1313, 9)), set);
    }

    #[test]
    fn small_torrents_allow_every_piece_and_sets_are_distinct_and_in_range() {
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(nums(allowed_fast_set(ip, &[1; 20], 4, 10)), [0, 1, 2, 3]);
        assert!(allowed_fast_set(ip, &[1; 20], 0, 10).is_empty());
        for n in [11, 12, 20, 1000, u32::MAX] {
            let set = nums(allowed_fast_set(ip, &[1; 20], n, 10));
            assert_eq!(set.len(), 10, "{n} pieces");
            assert!(set.iter().all(|&p| p < n));
            let mut d = set.clone();
            d.sort_unstable();
            d.dedup();
            assert_eq!(d.len(), 10);
        }
    }

    #[test]
    fn ipv6_sets_depend_on_the_48_bit_prefix_only() {
        let a: IpAddr = "2001:db8:1:2::5".parse().unwrap();
        let b: IpAddr = "2001:db8:1:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:2::5".parse().unwrap();
        let set = allowed_fast_set(a, &[3; 20], 5000, 10);
        assert_eq!(set.len(), 10);
        assert_eq!(allowed_fast_set(b, &[3; 20], 5000, 10), set);
        assert_ne!(allowed_fast_set(c, &[3; 20], 5000, 10), set);
    }

    #[test]
    fn peer_lists_are_bounded() {
        let mut f = PeerFast::default();
        for p in 0..100 {
            let kept = f.allow(PieceIndex(p));
            assert_eq!(kept, (p as usize) < MAX_ALLOWED_IN);
            f.suggest(PieceIndex(p));
        }
        assert_eq!(f.allowed_in.len(), MAX_ALLOWED_IN);
        assert_eq!(f.suggested.len(), MAX_SUGGESTED);
        assert_eq!(f.suggested[0], PieceIndex(100 - MAX_SUGGESTED as u32));
        assert!(
            f.allow(PieceIndex(0)),
            "a piece already allowed stays allowed"
        );
    }
}
