//! A torrent started from a magnet link: it exists with its info-hash only
//! while its metadata is fetched from peers ([`fetch`](super::fetch)), then
//! takes its shape from the verified metadata ([`Torrent::set_metainfo`])
//! and goes on as one started from a `.torrent`.
//!
//! Before the metadata: peers connect and handshake as usual; their
//! bitfields and `have`s are kept as raw bits ([`Peer::early_has`], at
//! most [`MAX_EARLY_BYTES`]) and checked against the piece count once it
//! is known (a bit past the last piece closes that peer). Nothing is
//! requested or served but metadata.

#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

use super::fetch::{FetchError, MetadataFetch};
use super::*;
use crate::ut_metadata::{self, Msg};

/// Most bytes of early piece bits kept per peer: one bit for each piece
/// that metadata within [`ut_metadata::MAX_METADATA_LEN`] can name (20
/// bytes of hash per piece).
pub const MAX_EARLY_BYTES: usize = ut_metadata::MAX_METADATA_LEN / 20 / 8 + 1;

/// What `left` says to trackers before the size is known: not 0, which
/// would announce a seed.
const LEFT_UNKNOWN: u64 = crate::geometry::BLOCK_LEN as u64;

impl Torrent {
    /// A torrent with only its info-hash (a magnet link): it fetches its
    /// metadata from peers that offer it.
    pub fn new_magnet(
        info_hash: [u8; 20],
        our_id: [u8; 20],
        cfg: Config,
        seed: u64,
        now: Instant,
    ) -> Torrent {
        let geometry = Geometry::new(0, crate::geometry::BLOCK_LEN).unwrap_or(Geometry {
            total_len: 0,
            piece_len: crate::geometry::BLOCK_LEN,
            num_pieces: 0,
        });
        let parts = TorrentParts {
            info_hash,
            our_id,
            geometry,
            hashes: Vec::new(),
            have: Bitfield::new(0),
            metadata: None,
            // Public until the metadata says otherwise (`set_metainfo`).
            private: false,
        };
        let mut t = Torrent::new(parts, cfg, seed, now);
        t.extensions = Registry::new(&[ut_metadata::NAME, crate::ut_pex::NAME]);
        t.fetch = Some(Box::new(MetadataFetch::new(info_hash)));
        t.left = LEFT_UNKNOWN;
        t
    }

    /// The torrent knows its metadata (always, unless started from a
    /// magnet link whose metadata has not arrived yet).
    pub fn has_metadata(&self) -> bool {
        self.fetch.is_none()
    }

    /// While fetching metadata: (pieces received, pieces in all, peers
    /// offering it).
    pub fn metadata_progress(&self) -> Option<(u32, u32, usize)> {
        let f = self.fetch.as_ref()?;
        let (got, all) = f.progress();
        Some((got, all, f.source_count()))
    }

    /// The verified metadata, once fetched: the shell parses it, opens the
    /// files and calls [`Torrent::set_metainfo`].
    pub fn take_fetched_metadata(&mut self) -> Option<std::sync::Arc<[u8]>> {
        self.fetch.as_mut()?.take_done()
    }

    /// A bitfield or `have`s before the piece count is known: kept as raw
    /// bits.
    pub(super) fn early_bits(&mut self, key: PeerKey, msg: &Message<'_>) -> Result<(), PeerError> {
        let Some(peer) = self.peers.get_mut(key) else {
            return Ok(());
        };
        match *msg {
            Message::Have { piece } => {
                let byte = piece as usize / 8;
                if byte >= MAX_EARLY_BYTES {
                    return Err(PeerError::BadHave(piece));
                }
                if peer.early_has.len() <= byte {
                    peer.early_has.resize(byte + 1, 0);
                }
                if let Some(b) = peer.early_has.get_mut(byte) {
                    *b |= 0x80 >> (piece % 8);
                }
            }
            Message::Bitfield(bytes) => {
                if bytes.len() > MAX_EARLY_BYTES {
                    return Err(PeerError::BadBitfield(format!(
                        "{} bytes, more than any torrent's metadata allows",
                        bytes.len()
                    )));
                }
                if peer.early_has.len() < bytes.len() {
                    peer.early_has.resize(bytes.len(), 0);
                }
                for (d, s) in peer.early_has.iter_mut().zip(bytes) {
                    *d |= s;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// A peer's extension handshake while fetching: a peer offering
    /// metadata becomes a source.
    pub(super) fn fetch_source(&mut self, key: PeerKey, now: Instant) {
        let Some(peer) = self.peers.get(key) else {
            return;
        };
        let Some(fetch) = &mut self.fetch else {
            return;
        };
        match (
            peer.extensions.id_of(ut_metadata::NAME),
            peer.extensions.metadata_size,
        ) {
            (Some(_), Some(size)) => {
                if fetch.add_source(key, size) {
                    debug!("{} offers {size} bytes of metadata", peer.label());
                } else {
                    debug!(
                        "{} offers {size} bytes of metadata: over the {} byte limit, not used",
                        peer.label(),
                        ut_metadata::MAX_METADATA_LEN
                    );
                }
                self.fetch_requests(now);
            }
            _ => trace!("{} offers no metadata", peer.label()),
        }
    }

    /// Send the metadata requests due now (new sources, time-outs).
    pub(super) fn fetch_requests(&mut self, now: Instant) {
        let Some(fetch) = &mut self.fetch else {
            return;
        };
        let mut out = std::mem::take(&mut self.fetch_buf);
        out.clear();
        fetch.poll_requests(now, &mut out);
        for &(key, piece) in &out {
            let Some(peer) = self.peers.get_mut(key) else {
                continue;
            };
            let Some(id) = peer.extensions.id_of(ut_metadata::NAME) else {
                continue;
            };
            trace!("{}: asking for metadata piece {piece}", peer.label());
            Msg::Request { piece }.encode(id, peer.send.buf_mut());
            self.dirty.push(key);
        }
        self.fetch_buf = out;
    }

    /// A `data` or `reject` answer to our metadata requests.
    pub(super) fn on_metadata_answer(
        &mut self,
        key: PeerKey,
        msg: Msg<'_>,
        now: Instant,
    ) -> Result<(), PeerError> {
        let Some(fetch) = &mut self.fetch else {
            // Not fetching (any more): a late answer.
            return Ok(());
        };
        match msg {
            Msg::Reject { piece } => fetch.on_reject(key, piece, now),
            Msg::Data {
                piece,
                total_size,
                data,
            } => match fetch.on_data(key, piece, total_size, data) {
                Ok(true) => debug!(
                    "metadata verified ({} bytes; {} peer(s) offered it)",
                    total_size,
                    fetch.source_count()
                ),
                Ok(false) => {}
                Err(e) => {
                    if e == FetchError::BadHash {
                        warn!(
                            "{}: its metadata does not hash to the info-hash; dropped",
                            self.peers.get(key).map(|p| p.label()).unwrap_or_default()
                        );
                        if let Some(p) = self.peers.get(key) {
                            self.banned_addrs.insert(p.addr);
                        }
                    }
                    return Err(PeerError::BadMetadata(e));
                }
            },
            Msg::Request { .. } => {}
        }
        self.fetch_requests(now);
        Ok(())
    }

    /// The metadata is known: take the torrent's shape from `parts` (the
    /// verified metadata, parsed, and what is on disk: `parts.have`, or a
    /// check of the data when `check`). Peers stay connected; their early
    /// bits become their bitfields, and a peer whose bits name pieces
    /// past the last is closed.
    pub fn set_metainfo(&mut self, parts: TorrentParts, check: bool, seed: u64, now: Instant) {
        let TorrentParts {
            info_hash,
            geometry,
            hashes,
            have,
            metadata,
            private,
            ..
        } = parts;
        // A private torrent (BEP 27) stops peer exchange from here on.
        self.set_private(private);
        debug_assert_eq!(info_hash, self.info_hash);
        self.fetch = None;
        self.geometry = geometry;
        let n = geometry.num_pieces;
        self.cache = Cache::new(geometry, hashes, self.cfg.cache_bytes);
        self.metadata = metadata.filter(|m| m.len() <= ut_metadata::MAX_METADATA_LEN);
        let have = if check { Bitfield::new(n) } else { have };
        self.left = left_of(&geometry, &have);
        self.picker = picker_for(&self.cache, &have, seed);
        self.flushed = have;
        if check {
            self.checking = Some(check::Check::new(n, seed, now));
        }
        // Peers' early bits become bitfields.
        let keys: Vec<PeerKey> = self.peers.keys().collect();
        for key in keys {
            let Some(peer) = self.peers.get_mut(key) else {
                continue;
            };
            let early = std::mem::take(&mut peer.early_has);
            let mut bf = Bitfield::new(n);
            let mut past_end = None;
            for (i, &byte) in early.iter().enumerate() {
                for bit in 0..8u32 {
                    if byte & (0x80 >> bit) != 0 {
                        let piece = (i as u32).saturating_mul(8).saturating_add(bit);
                        if piece < n {
                            bf.set(PieceIndex(piece));
                        } else {
                            past_end = Some(piece);
                        }
                    }
                }
            }
            if let Some(piece) = past_end {
                self.to_close.push((peer.token, PeerError::BadHave(piece)));
                continue;
            }
            // A fast peer's `have all` (BEP 6), kept as a flag.
            if peer.fast.early_have_all {
                bf = Bitfield::full(n);
            }
            peer.has = bf;
        }
        self.rejoin_peers(now);
        // Tell the peers that took our extension handshake the size of
        // the metadata we can now serve.
        if self.metadata.is_some() {
            let keys: Vec<PeerKey> = self
                .peers
                .iter()
                .filter(|(_, p)| p.phase == Phase::Active && p.extended)
                .map(|(k, _)| k)
                .collect();
            for key in keys {
                self.send_extension_handshake(key);
            }
        }
    }

    /// After the picker was rebuilt (the metadata arrived, a check ended)
    /// with peers connected: count their pieces again, tell them ours,
    /// and ask for blocks.
    pub(super) fn rejoin_peers(&mut self, now: Instant) {
        let keys: Vec<PeerKey> = self.peers.keys().collect();
        let have: Vec<PieceIndex> = self.picker.have().iter_set().collect();
        for key in keys {
            let Some(peer) = self.peers.get_mut(key) else {
                continue;
            };
            if peer.phase != Phase::Active {
                continue;
            }
            self.picker.peer_has_all(&peer.has);
            for &piece in &have {
                Message::Have { piece: piece.0 }.encode(peer.send.buf_mut());
            }
            if !have.is_empty() {
                self.dirty.push(key);
            }
            self.update_interest(key);
            self.request_more(key, now);
        }
    }
}
