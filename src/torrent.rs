//! One torrent: routes what peers say to the picker, cache and choker, and
//! queues what we say back. The event loop moves bytes between sockets and
//! each peer's buffers; everything in between happens here.

#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

use crate::bitfield::Bitfield;
use crate::blame::Blame;
use crate::choker::{ChokeCandidate, Choker};
use crate::config::Config;
use crate::extension::{Extended, Registry};
use crate::geometry::{BlockRef, Geometry};
use crate::ids::{ConnToken, PieceIndex};
use crate::peer::{Inflight, Peer, PeerError, Peers, Phase};
use crate::picker::{BlockOutcome, PeerKey, Picker};
use crate::rate::TokenBucket;
use crate::storage::{Cache, Insert, ReadJob, StorageError, WriteJob};
use crate::wire::{self, Handshake, Message};

mod buffers;
mod check;
mod fast;
pub mod fetch;
pub mod jobs;
mod magnet;
mod metadata;
pub mod pex;
mod pieces;
mod timers;
mod upload;

use check::Check;
use log::{debug, info, trace, warn};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Instant;

/// Longest a verified piece waits in memory before it is written.
pub const FLUSH_AGE: std::time::Duration = std::time::Duration::from_millis(100);

/// Most reads for seeding queued at once (each at most a 256 KiB read
/// unit); peers beyond wait for one of them to complete.
pub const MAX_READ_JOBS: usize = 16;

/// Receive-buffer bytes a new or idle peer holds: it grows to
/// `cfg.recv_buf` once a read fills it, and shrinks back after a quiet
/// second, so a thousand mostly idle peers cost little.
pub const RECV_IDLE_CAP: usize = 4096;

/// Send-queue bytes an idle peer keeps allocated.
pub const SEND_IDLE_CAP: usize = 4096;
/// DHT nodes from `port` messages held for the shell between turns.
pub const MAX_DHT_NODES: usize = 64;

/// Our client name (`v`) in extension handshakes.
pub const CLIENT_NAME: &str = concat!("piecemeal/", env!("CARGO_PKG_VERSION"));

/// Totals for the status line and the tracker.
#[derive(Clone, Copy, Debug, Default)]
pub struct Totals {
    /// Payload bytes received in verified pieces.
    pub downloaded: u64,
    /// Payload bytes sent.
    pub uploaded: u64,
    /// Payload bytes thrown away (duplicates, failed pieces).
    pub wasted: u64,
    pub hash_failures: u32,
    /// Payload bytes received, verified or not (for rates).
    pub received: u64,
}

/// What the torrent says about itself, for progress output.
#[derive(Clone, Copy, Debug)]
pub struct Status {
    pub have: u32,
    pub num_pieces: u32,
    pub left: u64,
    pub total_len: u64,
    pub down_rate: u64,
    pub up_rate: u64,
    /// Connected peers past the handshake, and how many of them are seeds.
    pub peers: usize,
    pub seeds: usize,
    pub totals: Totals,
    /// While data on disk is being checked: pieces checked, of all.
    pub checking: Option<(u32, u32)>,
    /// While the metadata is fetched (a magnet link): pieces of it
    /// received, of all, and peers offering it.
    pub fetching: Option<(u32, u32, usize)>,
    /// Why nothing may be happening; the event loop fills it.
    pub warnings: crate::progress::Warnings,
}

/// What a torrent is made of: identity, shape, piece hashes and the pieces
/// already verified in its storage (which the shell holds: see
/// [`jobs`]).
pub struct TorrentParts {
    pub info_hash: [u8; 20],
    pub our_id: [u8; 20],
    pub geometry: Geometry,
    pub hashes: Vec<[u8; 20]>,
    pub have: Bitfield,
    /// The raw `info` dictionary, served to peers over `ut_metadata` (BEP
    /// 9); `None` offers no metadata (a private torrent: like libtorrent,
    /// we do not hand out a BEP 27 torrent's metadata).
    pub metadata: Option<std::sync::Arc<[u8]>>,
    /// A private torrent (BEP 27): no peer exchange.
    pub private: bool,
}

impl TorrentParts {
    /// The parts of a torrent from its metainfo, with `have` the pieces
    /// verified in its storage. A private torrent offers no metadata.
    pub fn of(meta: &crate::metainfo::Metainfo, have: Bitfield, our_id: [u8; 20]) -> TorrentParts {
        TorrentParts {
            info_hash: meta.info_hash,
            our_id,
            geometry: meta.geometry(),
            hashes: meta.info.pieces.clone(),
            have,
            metadata: (!meta.info.private).then(|| meta.info_bytes.clone()),
            private: meta.info.private,
        }
    }
}

/// One torrent and its peers.
pub struct Torrent {
    pub info_hash: [u8; 20],
    pub our_id: [u8; 20],
    pub geometry: Geometry,
    pub cfg: Config,
    pub picker: Picker,
    choker: Choker,
    cache: Cache,
    /// Reads the shell is asked to do for seeding (at most
    /// [`MAX_READ_JOBS`]), and the peers waiting for them.
    reads: Vec<ReadJob>,
    read_waiters: Vec<PeerKey>,
    /// A write finished since the last [`Torrent::after_writes`].
    wrote: bool,
    peers: Peers,
    /// Pieces written to disk.
    pub flushed: Bitfield,
    /// Who sent which block, and the failed pieces under comparison.
    blame: Blame,
    /// The BEP 10 extensions we speak.
    extensions: Registry,
    /// The raw `info` dictionary we serve (see [`TorrentParts::metadata`]).
    metadata: Option<std::sync::Arc<[u8]>>,
    /// Our DHT port when the DHT runs and the torrent is public (BEP 5):
    /// the DHT bit goes in our handshake, and a `port` message to peers
    /// that set theirs.
    pub dht_port: Option<u16>,
    /// DHT nodes from peers' `port` messages, for the shell to ping
    /// (at most [`MAX_DHT_NODES`]; the shell drains it every turn).
    pub dht_nodes: Vec<SocketAddr>,
    /// Peer exchange (BEP 11): private flag, learnt addresses, counters.
    pex: pex::TorrentPex,
    /// The check of data on disk, while it runs.
    checking: Option<Check>,
    /// The port we accept peers on (`p` in our extension handshake).
    listen_port: Option<u16>,
    /// The metadata fetch of a torrent started from a magnet link, until
    /// the metadata is known.
    fetch: Option<Box<fetch::MetadataFetch>>,
    fetch_buf: Vec<(PeerKey, u32)>,
    /// Banned peers, by address and peer id (see [`crate::blame::PeerId`]).
    banned_ids: HashSet<crate::blame::PeerId>,
    banned_addrs: HashSet<SocketAddr>,
    pub totals: Totals,
    /// Bytes of the pieces not verified yet.
    left: u64,
    /// Peers that have bytes queued to send.
    pub dirty: Vec<PeerKey>,
    /// Connections (event-loop tokens) to close, with the reason, found
    /// outside `tick` (a ban). The loop drains it every turn.
    pub to_close: Vec<(ConnToken, PeerError)>,
    /// The last storage error (disk full...), for the status line.
    pub storage_error: Option<String>,
    /// When the oldest piece waiting to be written verified.
    pending_since: Option<Instant>,
    /// The upload limit (`cfg.upload_limit`, or the session's share).
    pub up_bucket: TokenBucket,
    /// The download limit: the session reads this torrent's peers only
    /// while it has tokens.
    pub down_bucket: TokenBucket,
    pick_buf: Vec<BlockRef>,
    cancel_buf: Vec<PeerKey>,
    choke_buf: Vec<(PeerKey, bool)>,
}

impl Torrent {
    pub fn new(parts: TorrentParts, cfg: Config, seed: u64, now: Instant) -> Torrent {
        let TorrentParts {
            info_hash,
            our_id,
            geometry,
            hashes,
            have,
            metadata,
            private,
        } = parts;
        // Metadata beyond the `.torrent` limit (never from a file we
        // parsed) is not offered.
        let metadata = metadata.filter(|m| m.len() <= crate::ut_metadata::MAX_METADATA_LEN);
        // `ut_metadata` keeps id 1 when both are spoken.
        let mut names = Vec::new();
        if metadata.is_some() {
            names.push(crate::ut_metadata::NAME);
        }
        if !private {
            names.push(crate::ut_pex::NAME);
        }
        let extensions = Registry::new(&names);
        let cache = Cache::new(geometry, hashes, cfg.cache_bytes);
        let up_bucket = TokenBucket::new(cfg.upload_limit, now);
        let down_bucket = TokenBucket::new(cfg.download_limit, now);
        debug!(
            "piece cache: {} buffers of {} bytes ({}-byte pieces, budget {})",
            cache.max_buffers(),
            cache.segment_len(),
            geometry.piece_len,
            cfg.cache_bytes
        );
        let left = left_of(&geometry, &have);
        let picker = picker_for(&cache, &have, seed);
        Torrent {
            info_hash,
            our_id,
            geometry,
            choker: Choker::new(cfg.upload_slots, seed ^ 0x5eed, now),
            cfg,
            picker,
            cache,
            reads: Vec::new(),
            read_waiters: Vec::new(),
            wrote: false,
            peers: Peers::new(),
            flushed: have,
            blame: Blame::new(),
            extensions,
            metadata,
            dht_port: None,
            dht_nodes: Vec::new(),
            pex: pex::TorrentPex::new(private),
            checking: None,
            fetch: None,
            fetch_buf: Vec::new(),
            listen_port: None,
            banned_ids: HashSet::new(),
            banned_addrs: HashSet::new(),
            totals: Totals::default(),
            left,
            dirty: Vec::new(),
            to_close: Vec::new(),
            storage_error: None,
            pending_since: None,
            up_bucket,
            down_bucket,
            pick_buf: Vec::new(),
            cancel_buf: Vec::new(),
            choke_buf: Vec::new(),
        }
    }

    /// Every piece is verified (never before the metadata is known).
    pub fn is_complete(&self) -> bool {
        self.fetch.is_none() && self.picker.is_complete()
    }

    /// Every piece is verified and on disk.
    pub fn is_done(&self) -> bool {
        self.fetch.is_none() && self.flushed.is_full()
    }

    /// Bytes we still need (kept as pieces verify, not counted per call).
    pub fn left(&self) -> u64 {
        self.left
    }

    pub fn status(&self) -> Status {
        let (mut down, mut up, mut peers, mut seeds) = (0, 0, 0, 0);
        for (_, p) in self.peers.iter() {
            down += p.down.rate();
            up += p.up.rate();
            if p.phase == Phase::Active {
                peers += 1;
                seeds += usize::from(p.has.is_full());
            }
        }
        Status {
            have: self.picker.have().count(),
            num_pieces: self.geometry.num_pieces,
            left: self.left(),
            total_len: self.geometry.total_len,
            down_rate: down,
            up_rate: up,
            peers,
            seeds,
            totals: self.totals,
            checking: self
                .checking
                .as_ref()
                .map(|c| (c.next, self.geometry.num_pieces)),
            fetching: self.metadata_progress(),
            warnings: crate::progress::Warnings::default(),
        }
    }

    /// Change the piece cache's budget (the session's share for this
    /// torrent); the picker opens segments within the new count from now on.
    pub fn set_cache_budget(&mut self, bytes: usize) {
        self.cache.set_budget(bytes);
        self.picker.set_segment_budget(self.cache.assembly_budget());
    }

    /// Free spare piece buffers when nothing is being assembled or written.
    pub fn release_idle_buffers(&mut self) {
        self.cache.release_idle();
    }

    pub fn is_banned(&self, addr: &SocketAddr) -> bool {
        self.banned_addrs.contains(addr)
    }

    /// Connections from `ip` now.
    pub fn peers_from(&self, ip: std::net::IpAddr) -> usize {
        self.peers.iter().filter(|(_, p)| p.addr.ip() == ip).count()
    }

    /// Pick a connection to close for a newcomer when every slot is taken:
    /// one at least `evict_after` old that is still handshaking, or that
    /// has moved no payload either way with neither side interested — the
    /// longest-connected first. Marks it, so it is chosen once; returns its
    /// event-loop token. (Slots held by idle connections from one address
    /// otherwise lock out every honest newcomer.)
    pub fn evict_one(&mut self, now: Instant) -> Option<ConnToken> {
        let min_age = self.cfg.evict_after;
        let (_, victim) = self
            .peers
            .iter_mut()
            .filter(|(_, p)| {
                !p.evicted
                    && now.duration_since(p.connected_at) >= min_age
                    && (p.phase == Phase::Handshaking
                        || (!p.peer_interested
                            && !p.am_interested
                            && p.down.total() == 0
                            && p.up.total() == 0))
            })
            .min_by_key(|(_, p)| p.connected_at)?;
        victim.evicted = true;
        Some(victim.token)
    }

    /// Is a connection to `addr` already open (or being opened)?
    pub fn is_connected_to(&self, addr: &SocketAddr) -> bool {
        self.peers.iter().any(|(_, p)| p.addr == *addr)
    }

    /// A new connection. Outgoing connections send their handshake at once
    /// (the loop flushes it once the connect completes), and nothing else
    /// until the peer's handshake arrives (see `send_handshake`).
    pub fn add_peer(
        &mut self,
        token: ConnToken,
        addr: SocketAddr,
        outgoing: bool,
        now: Instant,
    ) -> PeerKey {
        let peer = Peer::new(
            token,
            addr,
            outgoing,
            self.geometry.num_pieces,
            self.cfg.recv_buf.min(RECV_IDLE_CAP),
            self.cfg.pipeline_start,
            now,
        );
        let key = self.peers.insert(peer);
        if outgoing {
            self.send_handshake(key);
        }
        key
    }

    /// Queue our handshake alone. The bitfield waits for the peer's
    /// handshake (`on_handshake`): aria2 1.36, answering a connection,
    /// reads the first bytes to tell a plain handshake from an encrypted
    /// one, and closes the connection when that read holds more than the
    /// 68 handshake bytes.
    fn send_handshake(&mut self, key: PeerKey) {
        let mut reserved = wire::OUR_RESERVED;
        if self.dht_port.is_some() {
            reserved[7] |= wire::DHT_BIT;
        }
        let hs = Handshake {
            reserved,
            info_hash: self.info_hash,
            peer_id: self.our_id,
        };
        let Some(peer) = self.peers.get_mut(key) else {
            return;
        };
        hs.encode(peer.send.buf_mut());
        self.dirty.push(key);
    }

    /// Our bitfield, sent as the handshakes complete (not when dialing): a
    /// piece verified while the connection was being set up is in it, and
    /// every later one goes out as a `have` (peers are active by then).
    /// To a fast peer (BEP 6) `have all` / `have none` instead when they
    /// fit, and always one of the three.
    fn send_bitfield(&mut self, key: PeerKey) {
        self.send_have_state(key);
    }

    /// Remove a peer: its requests go back to the picker, its pieces leave
    /// the availability counts.
    /// Returns the peer's address, whether we dialed it, and whether the
    /// handshake had completed.
    pub fn remove_peer(
        &mut self,
        key: PeerKey,
        why: &PeerError,
    ) -> Option<(SocketAddr, bool, bool)> {
        let peer = self.peers.try_remove(key)?;
        debug!("{} dropped: {}", peer.label(), why);
        if let Some(f) = &mut self.fetch {
            f.remove_peer(key);
        }
        for r in &peer.inflight {
            self.picker.on_block_dropped(key, r.block);
        }
        // Pieces only it could fetch start over.
        for piece in self.picker.release_owned(key) {
            self.cache.drop_partial(piece);
            self.blame.forget(piece);
        }
        let active = peer.phase == Phase::Active;
        if active {
            self.picker.peer_gone(&peer.has);
        }
        self.choker.on_peer_gone(key);
        if !peer.am_choking && peer.peer_interested {
            // Its slot is free: give it to a peer that waits.
            self.choker.round_now();
        }
        Some((peer.addr, peer.outgoing, active))
    }

    /// Process every complete frame in the peer's receive buffer.
    pub fn on_readable(&mut self, key: PeerKey, now: Instant) -> Result<(), PeerError> {
        let Some(peer) = self.peers.get_mut(key) else {
            return Ok(());
        };
        // `last_recv` (the idle time-out) moves only when a whole message
        // arrives, in `drain_frames`: a peer dribbling one frame a byte at a
        // time is idle.
        // Take the receive buffer out so that a decoded message can borrow
        // it while the rest of the torrent is updated; put it back after.
        // A read that filled the buffer: data flows, give it full size.
        let grow = peer.recv.is_full();
        let mut recv = std::mem::replace(&mut peer.recv, crate::wire::RecvBuf::placeholder());
        let result = self.drain_frames(key, &mut recv, now);
        // A large frame (a big bitfield) may have grown the buffer.
        recv.shrink_if_empty(self.cfg.recv_buf);
        if grow {
            recv.grow_to(self.cfg.recv_buf);
        }
        if let Some(peer) = self.peers.get_mut(key) {
            peer.recv = recv;
        }
        result?;
        self.request_more(key, now);
        self.serve(key)
    }

    fn drain_frames(
        &mut self,
        key: PeerKey,
        recv: &mut crate::wire::RecvBuf,
        now: Instant,
    ) -> Result<(), PeerError> {
        // Like the public entry points, an unknown key is a no-op.
        let Some(peer) = self.peers.get_mut(key) else {
            return Ok(());
        };
        if peer.phase == Phase::Handshaking {
            let Some(hs) = Handshake::decode(recv.data())? else {
                return Ok(());
            };
            recv.consume(wire::HANDSHAKE_LEN);
            peer.last_recv = now;
            self.on_handshake(key, hs)?;
        }
        if !self.finish_direct(key, recv, now)? {
            return Ok(());
        }
        loop {
            match wire::decode_frame(recv.data(), wire::MAX_FRAME)? {
                Some((msg, n)) => {
                    if let Some(peer) = self.peers.get_mut(key) {
                        peer.last_recv = now;
                    }
                    self.on_message(key, msg, now)?;
                    recv.consume(n);
                }
                None => {
                    if let Some(need) = wire::frame_len_hint(recv.data())
                        && !self.start_direct(key, recv)
                    {
                        recv.reserve_frame(need);
                    }
                    return Ok(());
                }
            }
        }
    }

    /// The frame at the front of `recv` is incomplete. If it is a `piece`
    /// message bringing a block we asked this peer for, and the block has
    /// a place in its piece's buffer, copy the data here into that place
    /// and have the rest read straight into it ([`Peer::direct`]). False
    /// if not: the frame is then received whole in `recv`, as any other.
    fn start_direct(&mut self, key: PeerKey, recv: &mut crate::wire::RecvBuf) -> bool {
        let Some((piece, begin, len)) = wire::piece_header(recv.data()) else {
            return false;
        };
        let b = BlockRef {
            piece: PieceIndex(piece),
            begin,
            len,
        };
        let here = recv.len() - wire::PIECE_HEADER_LEN;
        if self.fetch.is_some()
            || !self.geometry.is_block(b.piece, begin, len)
            || here >= len as usize
        {
            return false;
        }
        let Some(peer) = self.peers.get_mut(key) else {
            return false;
        };
        if peer.direct.is_some() || !peer.inflight.iter().any(|r| r.block == b) {
            return false;
        }
        let Some(place) = self.cache.begin_direct(b) else {
            return false;
        };
        let (Some(dest), Some(data)) = (
            self.cache
                .direct_dest(place)
                .and_then(|d| d.get_mut(..here)),
            recv.data().get(wire::PIECE_HEADER_LEN..),
        ) else {
            return false;
        };
        dest.copy_from_slice(data);
        recv.consume(wire::PIECE_HEADER_LEN + here);
        peer.direct = Some(crate::peer::DirectRead {
            place,
            // `here` < `len`, a u32.
            got: here as u32,
            lost: false,
        });
        true
    }

    /// A block read in place ([`start_direct`](Self::start_direct)) that is
    /// now whole is taken like any block; one whose place was lost has its
    /// last bytes skipped in `recv`. False while its data is still coming
    /// (nothing else is in `recv` then).
    fn finish_direct(
        &mut self,
        key: PeerKey,
        recv: &mut crate::wire::RecvBuf,
        now: Instant,
    ) -> Result<bool, PeerError> {
        let Some(peer) = self.peers.get_mut(key) else {
            return Ok(false);
        };
        let Some(mut d) = peer.direct else {
            return Ok(true);
        };
        let len = d.place.block.len;
        if d.lost {
            let skip = (len - d.got).min(u32::try_from(recv.len()).unwrap_or(u32::MAX));
            recv.consume(skip as usize);
            d.got += skip;
        }
        if d.got < len {
            peer.direct = Some(d);
            return Ok(false);
        }
        peer.direct = None;
        peer.last_recv = now;
        let b = d.place.block;
        if d.lost {
            self.on_lost_block(key, b);
        } else {
            self.on_block(key, b, pieces::Payload::InPlace(d.place), now)?;
        }
        Ok(true)
    }

    fn on_message(
        &mut self,
        key: PeerKey,
        msg: Message<'_>,
        now: Instant,
    ) -> Result<(), PeerError> {
        if self.fetch.is_some() && matches!(msg, Message::Have { .. } | Message::Bitfield(_)) {
            return self.early_bits(key, &msg);
        }
        let Some(peer) = self.peers.get_mut(key) else {
            return Ok(());
        };
        match msg {
            Message::KeepAlive => {}
            Message::Choke => {
                peer.peer_choking = true;
                // Our pending requests are void (BEP 3): back to the picker.
                // With the fast extension they stand until served or
                // rejected (BEP 6), or until the request time-out.
                if !peer.fast.enabled {
                    for r in peer.inflight.drain(..) {
                        self.picker.on_block_dropped(key, r.block);
                    }
                } else if !peer.inflight.is_empty() {
                    debug!(
                        "{} choked us; {} requests stand until served or rejected",
                        peer.label(),
                        peer.inflight.len()
                    );
                }
            }
            Message::Unchoke => {
                peer.peer_choking = false;
                peer.last_block = now;
            }
            Message::Interested => {
                peer.peer_interested = true;
                if peer.am_choking {
                    self.choker.round_now();
                }
                self.send_allowed_fast(key);
            }
            Message::NotInterested => {
                peer.peer_interested = false;
                // Its slot is free: give it to a peer that waits.
                if !peer.am_choking {
                    self.choker.round_now();
                }
            }
            Message::Have { piece } => {
                if piece >= self.geometry.num_pieces {
                    return Err(PeerError::BadHave(piece));
                }
                let piece = PieceIndex(piece);
                if peer.has.set(piece) {
                    self.picker.peer_has_piece(piece);
                    if !peer.am_interested && !self.picker.have().get(piece) {
                        self.update_interest(key);
                    }
                }
            }
            Message::Bitfield(bytes) => {
                let bf = Bitfield::from_wire(bytes, self.geometry.num_pieces)?;
                self.add_bitfield(key, bf);
            }
            Message::Request { piece, begin, len } => {
                let piece = PieceIndex(piece);
                let b = BlockRef { piece, begin, len };
                if !self
                    .geometry
                    .request_in_range(piece, begin, len, self.cfg.max_request_len)
                    || !self.picker.have().get(piece)
                {
                    debug!(
                        "{} asked for a block we cannot serve ({piece}, {begin}, {len})",
                        peer.label()
                    );
                    return fast::refuse(peer, key, b, &self.cfg, &mut self.dirty);
                }
                let blocks = self.geometry.blocks_in_piece(piece);
                if peer.am_choking && !fast::serve_while_choked(peer, piece, blocks) {
                    // Saturating: a large configured limit must neither wrap
                    // (closing at once) nor overflow the counter.
                    peer.choked_requests = peer.choked_requests.saturating_add(1);
                    let limit = u32::try_from(self.cfg.max_peer_requests)
                        .unwrap_or(u32::MAX)
                        .saturating_mul(4);
                    if peer.choked_requests > limit {
                        return Err(PeerError::RequestFlood);
                    }
                    return fast::refuse(peer, key, b, &self.cfg, &mut self.dirty);
                }
                if peer.requests.len() >= self.cfg.max_peer_requests {
                    // A fast peer over the limit is told so (and closed
                    // only when it floods: see `fast::refuse`).
                    if peer.fast.enabled {
                        return fast::refuse(peer, key, b, &self.cfg, &mut self.dirty);
                    }
                    return Err(PeerError::RequestFlood);
                }
                peer.requests.push_back(b);
            }
            Message::Cancel { piece, begin, len } => {
                let piece = PieceIndex(piece);
                let b = BlockRef { piece, begin, len };
                let queued = peer.requests.len();
                peer.requests.retain(|r| *r != b);
                // Each cancel scans the queue: cancels for nothing queued
                // are normal in endgame, but not thousands a second.
                if peer.requests.len() == queued {
                    peer.stray_cancels = peer.stray_cancels.saturating_add(1);
                    let limit = self.cfg.max_peer_requests.saturating_mul(4);
                    if peer.stray_cancels as usize > limit {
                        return Err(PeerError::CancelFlood);
                    }
                } else {
                    // BEP 6: every request gets a piece or a reject.
                    fast::refuse(peer, key, b, &self.cfg, &mut self.dirty)?;
                }
            }
            Message::Piece { piece, begin, data } => {
                let piece = PieceIndex(piece);
                let len = u32::try_from(data.len()).map_err(|_| PeerError::BadPiece)?;
                if !self.geometry.is_block(piece, begin, len) {
                    return Err(PeerError::BadPiece);
                }
                let b = BlockRef { piece, begin, len };
                self.on_block(key, b, pieces::Payload::Bytes(data), now)?;
            }
            Message::Unknown {
                id: wire::EXTENDED_ID,
                payload,
            } => match self.extensions.dispatch(payload) {
                Some(Extended::Handshake(dict)) => {
                    let ext = self.extensions.parse_handshake(dict);
                    // We keep one fewer request in flight than its `reqq`:
                    // Transmission queues at most `reqq - 1` and, to a peer
                    // without the fast extension, drops the next one without
                    // a word (the block then waits out the request time-out).
                    // A fast peer rejects what it will not queue: its `reqq`.
                    if let Some(n) = ext.reqq {
                        let n = if peer.fast.enabled {
                            n
                        } else {
                            n.saturating_sub(1)
                        };
                        peer.max_requests = n.clamp(1, self.cfg.pipeline_max);
                        debug!("{} takes {n} requests at once", peer.label());
                    }
                    peer.extensions = ext;
                    self.fetch_source(key, now);
                }
                Some(Extended::Message {
                    name: crate::ut_metadata::NAME,
                    payload,
                }) => self.on_ut_metadata(key, payload, now)?,
                Some(Extended::Message {
                    name: crate::ut_pex::NAME,
                    payload,
                }) => self.on_ut_pex(key, payload, now),
                Some(Extended::Message { name, .. }) => {
                    trace!("{}: {name} message ignored", peer.label());
                }
                Some(Extended::Unknown(id)) => {
                    trace!("{}: extended message {id} we never offered", peer.label());
                }
                None => {}
            },
            Message::Port(port) => {
                if self.dht_port.is_some() && port != 0 && self.dht_nodes.len() < MAX_DHT_NODES {
                    self.dht_nodes.push(SocketAddr::new(peer.addr.ip(), port));
                }
            }
            Message::Unknown { .. } => {}
            Message::Suggest { .. }
            | Message::HaveAll
            | Message::HaveNone
            | Message::Reject { .. }
            | Message::AllowedFast { .. } => self.on_fast_message(key, msg)?,
        }
        Ok(())
    }

    fn on_handshake(&mut self, key: PeerKey, hs: Handshake) -> Result<(), PeerError> {
        if hs.info_hash != self.info_hash {
            return Err(PeerError::WrongInfoHash);
        }
        if hs.peer_id == self.our_id {
            // Answer an incoming handshake first: the dialing side (us,
            // perhaps through a NAT) then sees its own id and stops
            // dialing this address, rather than retrying after an EOF.
            if self.peers.get(key).is_some_and(|p| !p.outgoing) {
                self.send_handshake(key);
            }
            return Err(PeerError::OwnPeerId);
        }
        let ip = self.peers.get(key).map(|p| p.addr.ip());
        if ip.is_some_and(|ip| self.banned_ids.contains(&(ip, hs.peer_id))) {
            return Err(PeerError::Banned);
        }
        // The same id twice is refused only when the connection we have
        // proved useful (it delivered blocks we asked for): an id is no
        // proof of anything, and refusing on the id alone would let whoever
        // claims an honest peer's id first lock that peer out.
        if self.peers.iter().any(|(k, p)| {
            k != key && p.phase == Phase::Active && p.peer_id == hs.peer_id && p.down.total() > 0
        }) {
            return Err(PeerError::Duplicate);
        }
        let outgoing = {
            let Some(peer) = self.peers.get_mut(key) else {
                return Ok(());
            };
            peer.peer_id = hs.peer_id;
            peer.phase = Phase::Active;
            peer.fast.enabled = hs.supports_fast();
            debug!(
                "{} handshake ok ({})",
                peer.label(),
                String::from_utf8_lossy(&hs.peer_id[..8])
            );
            peer.outgoing
        };
        if !outgoing {
            self.send_handshake(key);
        }
        self.send_bitfield(key);
        if let Some(port) = self.dht_port
            && hs.reserved[7] & wire::DHT_BIT != 0
            && let Some(peer) = self.peers.get_mut(key)
        {
            Message::Port(port).encode(peer.send.buf_mut());
            self.dirty.push(key);
        }
        if hs.supports_extensions() {
            self.send_extension_handshake(key);
        }
        Ok(())
    }

    /// Queue our extension handshake (BEP 10) to `key`: sent once the
    /// handshakes are done, and again when the metadata size we serve
    /// changes (a magnet link's torrent got its metadata).
    fn send_extension_handshake(&mut self, key: PeerKey) {
        let Some(peer) = self.peers.get_mut(key) else {
            return;
        };
        let ours = crate::extension::OurHandshake {
            reqq: u32::try_from(self.cfg.max_peer_requests).unwrap_or(u32::MAX),
            client: CLIENT_NAME,
            metadata_size: self.metadata.as_ref().map(|m| m.len()),
            listen_port: self.listen_port,
        };
        self.extensions.encode_handshake(&ours, peer.send.buf_mut());
        peer.extended = true;
        self.dirty.push(key);
    }

    /// The port the session accepts peers on, stated in our extension
    /// handshakes (`p`).
    pub fn set_listen_port(&mut self, port: Option<u16>) {
        self.listen_port = port;
    }

    /// What a bitfield (or a `have all`) says the peer has. The first is
    /// taken whole; a late or repeated one (aria2 sends one after `have`s)
    /// is merged into what we know: a bitfield never takes pieces away
    /// (libtorrent and Transmission agree).
    fn add_bitfield(&mut self, key: PeerKey, bf: Bitfield) {
        let Some(peer) = self.peers.get_mut(key) else {
            return;
        };
        if peer.has.count() == 0 {
            self.picker.peer_has_all(&bf);
            peer.has = bf;
        } else {
            for piece in bf.iter_set() {
                if peer.has.set(piece) {
                    self.picker.peer_has_piece(piece);
                }
            }
        }
        self.update_interest(key);
    }

    /// Ask the peer for more blocks, up to its pipeline depth.
    pub fn request_more(&mut self, key: PeerKey, now: Instant) {
        let Some(peer) = self.peers.get_mut(key) else {
            return;
        };
        // Choked: only a fast peer's allowed-fast pieces (`fast::pick_blocks`).
        if peer.phase != Phase::Active
            || !peer.am_interested
            || (peer.peer_choking && peer.fast.allowed_in.is_empty())
            || self.checking.is_some()
        {
            return;
        }
        let want = peer
            .pipeline
            .min(peer.max_requests)
            .saturating_sub(peer.inflight.len());
        if want == 0 {
            return;
        }
        self.pick_buf.clear();
        self.picker.set_segment_budget(self.cache.assembly_budget());
        fast::pick_blocks(&mut self.picker, key, peer, want, &mut self.pick_buf);
        if self.pick_buf.is_empty() {
            return;
        }
        if peer.inflight.is_empty() {
            peer.last_block = now;
        }
        let out = peer.send.buf_mut();
        for &b in &self.pick_buf {
            Message::Request {
                piece: b.piece.0,
                begin: b.begin,
                len: b.len,
            }
            .encode(out);
            peer.inflight.push_back(Inflight {
                block: b,
                sent: now,
            });
        }
        trace!("{} requested {} blocks", peer.label(), self.pick_buf.len());
        self.dirty.push(key);
    }

    /// Recompute whether we are interested in `key`, telling it on change.
    fn update_interest(&mut self, key: PeerKey) {
        let Some(peer) = self.peers.get_mut(key) else {
            return;
        };
        let want = self.picker.is_interesting(&peer.has);
        if want != peer.am_interested {
            peer.am_interested = want;
            let m = if want {
                Message::Interested
            } else {
                Message::NotInterested
            };
            m.encode(peer.send.buf_mut());
            self.dirty.push(key);
        }
    }

    /// The next verified segment to write ([`jobs::write_pending`] carries
    /// it out and hands it back to [`Torrent::write_done`]).
    pub fn next_write(&mut self) -> Option<WriteJob> {
        self.cache.next_write()
    }

    /// A write job came back, written or failed (a full disk: it is queued
    /// again, nothing is lost, and the shell waits before trying again).
    pub fn write_done(&mut self, job: WriteJob, result: Result<(), &StorageError>) {
        let ok = result.is_ok();
        if let Some(p) = self.cache.write_done(job, ok) {
            self.flushed.set(p);
        }
        match result {
            Ok(()) => {
                self.wrote = true;
                if self.storage_error.take().is_some() {
                    info!("writing to disk works again");
                }
            }
            Err(e) => {
                if self.storage_error.is_none() {
                    warn!("cannot write verified piece: {e} (will retry; nothing is lost)");
                }
                self.storage_error = Some(e.to_string());
            }
        }
    }

    /// After a batch of writes: buffers are free again, so peers starved of
    /// requests get some.
    pub fn after_writes(&mut self, now: Instant) {
        if std::mem::take(&mut self.wrote) {
            let keys: Vec<PeerKey> = self.peers.iter().map(|(k, _)| k).collect();
            for key in keys {
                self.request_more(key, now);
            }
        }
        if self.cache.pending_len() == 0 {
            self.pending_since = None;
        }
    }

    /// Time to write: a batch is ready, or the oldest verified piece has
    /// waited [`FLUSH_AGE`] (so a slow download writes as it goes, and a
    /// kill loses at most that much).
    pub fn should_flush(&self, now: Instant) -> bool {
        self.cache.should_flush()
            || self
                .pending_since
                .is_some_and(|t| now.duration_since(t) >= FLUSH_AGE)
    }

    pub fn has_pending_writes(&self) -> bool {
        self.cache.pending_len() > 0
    }

    /// The cache cannot take new pieces until a flush: stop reading peers.
    pub fn cache_full(&self) -> bool {
        self.cache.is_full()
    }

    /// The cache's counters (hits, misses, bytes read and written).
    pub fn cache_stats(&self) -> crate::storage::cache::CacheStats {
        self.cache.stats
    }

    pub fn cache_memory(&self) -> usize {
        self.cache.memory()
    }

    /// Note that bytes were written to the peer's socket.
    pub fn on_sent(&mut self, key: PeerKey, now: Instant) {
        if let Some(p) = self.peers.get_mut(key) {
            p.last_sent = now;
        }
    }
}

/// Bytes of the pieces not in `have`.
fn left_of(geometry: &Geometry, have: &Bitfield) -> u64 {
    geometry
        .pieces()
        .filter(|&p| !have.get(p))
        .map(|p| geometry.piece_size(p) as u64)
        .sum()
}

/// A picker for the pieces not in `have`, opening segments within what
/// `cache` can hold.
fn picker_for(cache: &Cache, have: &Bitfield, seed: u64) -> Picker {
    let mut picker = Picker::new(cache.geometry(), have, seed);
    picker.set_segment_blocks(cache.segment_blocks());
    picker.set_segment_budget(cache.assembly_budget());
    picker
}

#[cfg(test)]
#[path = "torrent_tests.rs"]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests may panic
mod tests;
