//! The shell's way into a peer's buffers: it hands the torrent its socket as
//! a `Read` or `Write` and the bytes move straight between the socket and the
//! peer's `RecvBuf` / `SendBuf` (no copy beyond the one `read` / `write`
//! makes). The shell never holds a peer's buffers itself.

#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

use super::*;
use crate::mse::Cipher;
use std::io;

impl Torrent {
    /// A peer, to look at (its address, phase, token...).
    pub fn peer(&self, key: PeerKey) -> Option<&Peer> {
        self.peers.get(key)
    }

    /// Every peer, to look at.
    pub fn peers(&self) -> impl Iterator<Item = (PeerKey, &Peer)> {
        self.peers.iter()
    }

    /// How many peers (handshaking ones too).
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// One `read` from `src` into the peer's receive buffer (decrypted there
    /// when a cipher is set): see [`wire::RecvBuf::read_from`]. `None` if
    /// there is no such peer. The caller hands what was read to
    /// [`Torrent::on_readable`].
    pub fn read_peer_from(
        &mut self,
        key: PeerKey,
        src: &mut impl io::Read,
    ) -> Option<io::Result<usize>> {
        let peer = self.peers.get_mut(key)?;
        // A block being read in place: the rest of its data first, then
        // what follows into the receive buffer, in one `readv`.
        if let Some(d) = peer.direct.as_mut().filter(|d| !d.lost) {
            match self.cache.direct_dest(d.place) {
                Some(dest) => {
                    let rest = dest.get_mut(d.got as usize..).unwrap_or_default();
                    return Some(peer.recv.read_with(src, rest).map(|(a, b)| {
                        // `a` is at most the rest of a block (u32).
                        d.got += a as u32;
                        a + b
                    }));
                }
                None => d.lost = true,
            }
        }
        Some(peer.recv.read_from(src))
    }

    /// Write the peer's queued output to `dst` until it is empty or `dst`
    /// would block: see [`wire::SendBuf::write_to`]. `None` if there is no
    /// such peer. The caller reports progress with [`Torrent::on_sent`].
    pub fn write_peer_to(
        &mut self,
        key: PeerKey,
        dst: &mut impl io::Write,
    ) -> Option<io::Result<usize>> {
        Some(self.peers.get_mut(key)?.send.write_to(dst))
    }

    /// Bytes that belong to the peer's stream but were read before it was
    /// the torrent's (with the MSE exchange or the handshake): into its
    /// receive buffer as if read from the socket, decrypted when a cipher is
    /// set. The buffer grows to a frame's size if they do not fit.
    pub fn feed_peer(&mut self, key: PeerKey, mut bytes: &[u8]) {
        let Some(p) = self.peers.get_mut(key) else {
            return;
        };
        while !bytes.is_empty() {
            if p.recv.is_full() {
                p.recv.reserve_frame(p.recv.len() + bytes.len());
            }
            match p.recv.read_from(&mut bytes) {
                Ok(n) if n > 0 => {}
                _ => return,
            }
        }
    }

    /// The MSE exchange chose RC4: from here on what the peer sends is
    /// decrypted with `dec` as it is read, and what we send (from what is
    /// queued but not yet sealed) is encrypted with `enc`.
    pub fn set_peer_ciphers(&mut self, key: PeerKey, dec: Cipher, enc: Cipher) {
        if let Some(p) = self.peers.get_mut(key) {
            p.recv.set_cipher(dec);
            p.send.set_cipher(enc);
        }
    }
}
