//! One peer connection's protocol state (no socket): handshake phase,
//! choke/interest flags, the pieces it has, our requests to it and its
//! requests to us, rates, and why it was dropped.

#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

use crate::bitfield::{Bitfield, BitfieldError};
use crate::geometry::BlockRef;
use crate::ids::{ConnToken, PeerKey};
use crate::wire::{DecodeError, RecvBuf, SendBuf};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The protocol phase of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for the peer's handshake.
    Handshaking,
    /// Handshakes exchanged: messages flow.
    Active,
}

/// Why a peer connection was closed. Never fatal to the engine.
#[derive(Debug, PartialEq, Eq)]
pub enum PeerError {
    /// The peer closed the connection.
    Eof,
    /// A socket error (with the operation that failed).
    Io(&'static str, std::io::ErrorKind),
    /// Malformed bytes on the wire.
    Decode(DecodeError),
    /// The handshake named a torrent we do not serve.
    WrongInfoHash,
    /// We connected to ourselves.
    OwnPeerId,
    /// Already connected to this peer id.
    Duplicate,
    /// The peer is banned (bad data).
    Banned,
    /// A bitfield of the wrong size or with spare bits set, or sent late.
    BadBitfield(String),
    /// A `have` for a piece that does not exist.
    BadHave(u32),
    /// A message that is not allowed in this phase.
    Unexpected(&'static str),
    /// Too many queued requests from the peer.
    RequestFlood,
    /// Thousands of cancels a second for requests it never queued.
    CancelFlood,
    /// A piece we never asked for, at an impossible place.
    BadPiece,
    /// A time-out (which one).
    Timeout(&'static str),
    /// Both sides are seeds: nothing to exchange.
    BothSeeds,
    /// Reading our data to serve it failed.
    Storage,
    /// Closed to make room for a newcomer: it moved no data and neither
    /// side was interested.
    Evicted,
    /// Too many connections from its address.
    PerAddressLimit,
    /// The engine is shutting down.
    Shutdown,
    /// Metadata (BEP 9) that was wrong.
    BadMetadata(crate::torrent::fetch::FetchError),
    /// Fast extension (BEP 6) misuse: a fast message from a peer that did
    /// not set the bit, or a flood of ones it had no cause to send.
    Fast(&'static str),
    /// The Message Stream Encryption handshake failed.
    Mse(crate::mse::MseError),
    /// A plaintext handshake while we require encryption.
    PlaintextRefused,
    /// An encrypted (MSE) handshake while encryption is off.
    EncryptedRefused,
}

impl std::fmt::Display for PeerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerError::Eof => write!(f, "peer closed the connection"),
            PeerError::Io(op, kind) => write!(f, "{op} failed: {kind}"),
            PeerError::Decode(e) => write!(f, "malformed message: {e}"),
            PeerError::WrongInfoHash => write!(f, "handshake for another torrent"),
            PeerError::OwnPeerId => write!(f, "connected to ourselves"),
            PeerError::Duplicate => write!(f, "already connected to this peer"),
            PeerError::Banned => write!(f, "peer is banned"),
            PeerError::BadBitfield(e) => write!(f, "bad bitfield: {e}"),
            PeerError::BadHave(p) => write!(f, "have for piece {p}, which does not exist"),
            PeerError::Unexpected(what) => write!(f, "unexpected {what}"),
            PeerError::RequestFlood => write!(f, "too many requests queued"),
            PeerError::CancelFlood => write!(f, "too many cancels for requests it never made"),
            PeerError::BadPiece => write!(f, "piece message for a block that does not exist"),
            PeerError::Timeout(what) => write!(f, "{what} timed out"),
            PeerError::BothSeeds => write!(f, "both sides are seeds"),
            PeerError::Storage => write!(f, "could not read the data it asked for"),
            PeerError::Evicted => write!(f, "idle and useless; closed to make room"),
            PeerError::PerAddressLimit => write!(f, "too many connections from its address"),
            PeerError::Shutdown => write!(f, "shutting down"),
            PeerError::BadMetadata(e) => write!(f, "{e}"),
            PeerError::Fast(what) => write!(f, "fast extension: {what}"),
            PeerError::Mse(e) => write!(f, "{e}"),
            PeerError::PlaintextRefused => {
                write!(f, "plaintext handshake refused (--encryption require)")
            }
            PeerError::EncryptedRefused => {
                write!(f, "encrypted handshake refused (--encryption off)")
            }
        }
    }
}

impl std::error::Error for PeerError {}

impl From<DecodeError> for PeerError {
    fn from(e: DecodeError) -> PeerError {
        PeerError::Decode(e)
    }
}

impl From<BitfieldError> for PeerError {
    fn from(e: BitfieldError) -> PeerError {
        PeerError::BadBitfield(e.to_string())
    }
}

/// A byte rate, smoothed over a few seconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct RateMeter {
    total: u64,
    window: u64,
    rate: f64,
    /// The unsmoothed rate of the last tick.
    last: f64,
}

impl RateMeter {
    pub fn add(&mut self, n: u64) {
        self.total += n;
        self.window += n;
    }
    /// Fold the bytes of the last `dt` into the smoothed rate.
    pub fn tick(&mut self, dt: Duration) {
        let secs = dt.as_secs_f64();
        if secs <= 0.0 {
            return;
        }
        let now = self.window as f64 / secs;
        self.last = now;
        self.rate = if self.rate == 0.0 {
            now
        } else {
            0.6 * self.rate + 0.4 * now
        };
        self.window = 0;
    }
    /// Bytes per second.
    pub fn rate(&self) -> u64 {
        self.rate as u64
    }
    /// The rate of the last tick alone: quicker to follow a rise than
    /// [`RateMeter::rate`].
    pub fn last(&self) -> u64 {
        self.last as u64
    }
    pub fn total(&self) -> u64 {
        self.total
    }
}

/// A request we sent, and when.
#[derive(Clone, Copy, Debug)]
pub struct Inflight {
    pub block: BlockRef,
    pub sent: Instant,
}

/// Requests a peer is assumed to take at once before it states its `reqq`
/// in a BEP 10 handshake (the figure BEP 10 gives for libtorrent's default).
pub const DEFAULT_REQQ: usize = 250;

/// One peer connection's state. The socket lives in the event loop.
pub struct Peer {
    /// The event loop's token for this connection.
    pub token: ConnToken,
    pub addr: SocketAddr,
    pub outgoing: bool,
    pub phase: Phase,
    pub peer_id: [u8; 20],
    pub recv: RecvBuf,
    pub send: SendBuf,
    /// Pieces the peer has.
    pub has: Bitfield,
    pub am_choking: bool,
    pub am_interested: bool,
    pub peer_choking: bool,
    pub peer_interested: bool,
    /// Our requests to the peer, oldest first (blocks usually arrive in
    /// order, so taking one is a `pop_front`).
    pub inflight: VecDeque<Inflight>,
    /// Most requests we keep in flight to the peer: its BEP 10 `reqq` less
    /// one (Transmission drops the `reqq`-th), or [`DEFAULT_REQQ`] until it
    /// says.
    pub max_requests: usize,
    /// How many requests we keep in flight to this peer.
    pub pipeline: usize,
    /// The peer's requests to us, oldest first.
    pub requests: VecDeque<BlockRef>,
    /// Requests received while we were choking it.
    pub choked_requests: u32,
    /// Cancels this second that matched no queued request.
    pub stray_cancels: u32,
    /// `ut_metadata` requests it made (BEP 9), answered or not.
    pub metadata_requests: u32,
    /// Peer exchange with it (BEP 11).
    pub pex: crate::torrent::pex::PeerPex,
    pub down: RateMeter,
    pub up: RateMeter,
    pub connected_at: Instant,
    pub last_recv: Instant,
    pub last_sent: Instant,
    /// Last time a block we asked for arrived (or when requests started).
    pub last_block: Instant,
    pub snubbed: bool,
    /// Chosen for eviction (closed at the end of the turn).
    pub evicted: bool,
    /// What its BEP 10 extension handshake said.
    pub extensions: crate::extension::PeerExtensions,
    /// We sent it our extension handshake (it set the BEP 10 bit).
    pub extended: bool,
    /// Its bitfield and `have`s as raw bits, while the piece count is not
    /// known (a magnet link's metadata is being fetched).
    pub early_has: Vec<u8>,
    /// The fast extension (BEP 6): whether both sides speak it, and what
    /// its fast messages told us.
    pub fast: crate::fast::PeerFast,
    /// The `piece` message being read straight into its piece's buffer,
    /// if any (its header is consumed; its data comes next on the wire).
    pub direct: Option<DirectRead>,
}

/// A block read straight from the socket into its place in the piece
/// buffer: what remained of it when a read stopped inside its `piece`
/// message is read with the next `readv`, not through the receive buffer.
/// Every block byte is then copied once in user space, never moved twice.
#[derive(Clone, Copy, Debug)]
pub struct DirectRead {
    pub place: crate::storage::cache::DirectBlock,
    /// Data bytes read so far.
    pub got: u32,
    /// The place is no longer ours (the block came whole from another
    /// peer, or its piece was dropped): the rest of the data is read into
    /// the receive buffer and skipped.
    pub lost: bool,
}

impl Peer {
    pub fn new(
        token: ConnToken,
        addr: SocketAddr,
        outgoing: bool,
        num_pieces: u32,
        recv_cap: usize,
        pipeline: usize,
        now: Instant,
    ) -> Peer {
        Peer {
            token,
            addr,
            outgoing,
            phase: Phase::Handshaking,
            peer_id: [0; 20],
            recv: RecvBuf::new(recv_cap),
            send: SendBuf::new(),
            has: Bitfield::new(num_pieces),
            am_choking: true,
            am_interested: false,
            peer_choking: true,
            peer_interested: false,
            inflight: VecDeque::new(),
            max_requests: DEFAULT_REQQ,
            pipeline,
            requests: VecDeque::new(),
            choked_requests: 0,
            stray_cancels: 0,
            metadata_requests: 0,
            pex: Default::default(),
            down: RateMeter::default(),
            up: RateMeter::default(),
            connected_at: now,
            last_recv: now,
            last_sent: now,
            last_block: now,
            snubbed: false,
            evicted: false,
            extensions: Default::default(),
            extended: false,
            early_has: Vec::new(),
            fast: Default::default(),
            direct: None,
        }
    }

    /// Remove `block` from our in-flight list; true if it was there.
    pub fn take_inflight(&mut self, block: BlockRef) -> bool {
        match self.inflight.iter().position(|r| r.block == block) {
            Some(i) => {
                self.inflight.remove(i);
                true
            }
            None => false,
        }
    }

    /// Output is queued for the socket.
    pub fn has_output(&self) -> bool {
        !self.send.is_empty()
    }

    /// The receive buffer is full: decode before reading more.
    pub fn recv_is_full(&self) -> bool {
        self.recv.is_full()
    }

    /// A short label for log lines: `peer#KEY ADDR`.
    pub fn label(&self) -> String {
        format!("peer#{} {}", self.token, self.addr)
    }
}

/// A torrent's peers, keyed by [`PeerKey`] (a slab underneath: keys are
/// reused after a peer leaves).
#[derive(Default)]
pub struct Peers(slab::Slab<Peer>);

impl Peers {
    pub fn new() -> Peers {
        Peers(slab::Slab::new())
    }

    pub fn insert(&mut self, peer: Peer) -> PeerKey {
        PeerKey(self.0.insert(peer))
    }

    pub fn try_remove(&mut self, key: PeerKey) -> Option<Peer> {
        self.0.try_remove(key.0)
    }

    pub fn get(&self, key: PeerKey) -> Option<&Peer> {
        self.0.get(key.0)
    }

    pub fn get_mut(&mut self, key: PeerKey) -> Option<&mut Peer> {
        self.0.get_mut(key.0)
    }

    pub fn contains(&self, key: PeerKey) -> bool {
        self.0.contains(key.0)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (PeerKey, &Peer)> {
        self.0.iter().map(|(k, p)| (PeerKey(k), p))
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (PeerKey, &mut Peer)> {
        self.0.iter_mut().map(|(k, p)| (PeerKey(k), p))
    }

    pub fn keys(&self) -> impl Iterator<Item = PeerKey> + '_ {
        self.0.iter().map(|(k, _)| PeerKey(k))
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
impl std::ops::Index<PeerKey> for Peers {
    type Output = Peer;

    /// Panics if there is no such peer (tests; the core uses `get`).
    fn index(&self, key: PeerKey) -> &Peer {
        &self.0[key.0]
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
impl std::ops::IndexMut<PeerKey> for Peers {
    fn index_mut(&mut self, key: PeerKey) -> &mut Peer {
        &mut self.0[key.0]
    }
}

/// Our peer id: the Azureus-style client prefix and 12 random bytes.
pub fn make_peer_id(seed: u64) -> [u8; 20] {
    let mut id = [0u8; 20];
    id[..8].copy_from_slice(b"-PM0100-");
    let mut rng = crate::rng::Rng::new(seed);
    const ALPHABET: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    for b in &mut id[8..] {
        // `% 36` keeps the index in range; the fallback is never taken.
        let i = (rng.next_u64() % 36) as usize;
        *b = ALPHABET.get(i).copied().unwrap_or(b'0');
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_rate_follows_a_rise_the_smoothed_rate_lags() {
        let mut m = RateMeter::default();
        m.add(1000);
        m.tick(Duration::from_secs(1));
        assert_eq!((m.rate(), m.last()), (1000, 1000));
        m.add(2000);
        m.tick(Duration::from_secs(1));
        assert_eq!(m.last(), 2000);
        assert_eq!(m.rate(), 1400);
        m.tick(Duration::from_secs(1));
        assert_eq!(m.last(), 0);
        assert_eq!(m.total(), 3000);
    }
}
