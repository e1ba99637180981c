//! Message Stream Encryption in the shell: the incoming exchange before a
//! connection is routed, the exchange of a connection we dial, and what is
//! remembered about which peers need plaintext. The exchange itself is
//! [`crate::mse::Handshake`]; after it, the cipher lives in the peer's
//! `RecvBuf` / `SendBuf` and works in place.

use super::{Conn, Session, random_bytes};
use crate::ids::ConnToken;
use crate::mse::{self, Cipher, Handshake, MAX_PAD, Method, Policy, SECRET_LEN};
use crate::peer::PeerError;
use log::debug;
use mio::net::TcpStream;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::Instant;

/// Most addresses [`DialMethods`] remembers.
pub(super) const MAX_DIAL_METHODS: usize = 4096;

/// Where an incoming connection stands before it is routed.
pub(super) enum Crypt {
    /// Its first bytes may still be a plaintext handshake.
    Undecided,
    /// A plaintext BitTorrent handshake.
    Plain,
    /// An MSE exchange under way.
    Mse(Box<Handshake>),
    /// The MSE exchange is done; the stream is `method`.
    Done(Box<Settled>),
}

/// A finished incoming exchange, kept until the connection is routed.
pub(super) struct Settled {
    pub method: Method,
    pub info_hash: [u8; 20],
    pub enc: Cipher,
    pub dec: Cipher,
}

/// How to dial an address next time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Dial {
    /// An MSE exchange worked (whatever method it chose).
    Mse,
    /// An MSE exchange failed once connected; a plaintext one is tried.
    Plaintext,
}

/// How each dialed address should be dialed, as learnt: MSE or plaintext.
/// At most [`MAX_DIAL_METHODS`] entries; when full, an arbitrary one is
/// dropped (forgetting costs one failed MSE attempt at worst).
#[derive(Default)]
pub(super) struct DialMethods(HashMap<SocketAddr, Dial>);

impl DialMethods {
    pub fn note(&mut self, addr: SocketAddr, how: Dial) {
        if self.0.len() >= MAX_DIAL_METHODS
            && !self.0.contains_key(&addr)
            && let Some(&old) = self.0.keys().next()
        {
            self.0.remove(&old);
        }
        self.0.insert(addr, how);
    }

    pub fn get(&self, addr: &SocketAddr) -> Option<Dial> {
        self.0.get(addr).copied()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.len()
    }
}

/// A fresh private key and 0–512 random padding bytes.
fn randomness() -> ([u8; SECRET_LEN], Vec<u8>) {
    let mut secret = [0u8; SECRET_LEN];
    random_bytes(&mut secret);
    let mut len = [0u8; 2];
    random_bytes(&mut len);
    let mut pad = vec![0u8; usize::from(u16::from_le_bytes(len)) % (MAX_PAD + 1)];
    random_bytes(&mut pad);
    (secret, pad)
}

/// The exchange for a connection we dial to the torrent `info_hash`.
pub(super) fn dial(info_hash: [u8; 20], policy: Policy, now: Instant) -> Box<Handshake> {
    let (secret, pad) = randomness();
    Box::new(Handshake::initiator(info_hash, policy, secret, &pad, now))
}

/// Write `out` until it is empty or the socket would block.
pub(super) fn write_raw(sock: &mut TcpStream, out: &mut Vec<u8>) -> io::Result<()> {
    while !out.is_empty() {
        match sock.write(out) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                out.drain(..n.min(out.len()));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// What reading an incoming connection came to.
pub(super) enum Incoming {
    /// Wait for more bytes (or for the MSE output to drain).
    Wait,
    /// The handshake's routing prefix is here, in plaintext.
    Route,
    Close(PeerError),
}

impl Session {
    /// Read an incoming connection: tell a plaintext handshake from MSE,
    /// run the exchange, and gather the first [`super::ROUTE_LEN`]
    /// plaintext bytes of the BitTorrent handshake.
    pub(super) fn read_incoming(&mut self, token: ConnToken, now: Instant) -> Incoming {
        let policy = self.opts.limits.encryption;
        let by_req2 = &self.by_req2;
        let Some(Conn::Incoming {
            sock,
            buf,
            crypt,
            out,
            ..
        }) = self.conns.get_mut(token.0)
        else {
            return Incoming::Wait;
        };
        let mut chunk = [0u8; 4096];
        loop {
            // Before the exchange ends, no more than it may take; after it,
            // no more than the routing prefix (the rest is the peer's).
            let room = match crypt {
                Crypt::Mse(_) => chunk.len(),
                _ => super::ROUTE_LEN.saturating_sub(buf.len()),
            };
            if room == 0 {
                break;
            }
            let n = match sock.read(chunk.get_mut(..room).unwrap_or_default()) {
                Ok(0) => return Incoming::Close(PeerError::Eof),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Incoming::Close(PeerError::Io("read", e.kind())),
            };
            let data = chunk.get_mut(..n).unwrap_or_default();
            match crypt {
                Crypt::Undecided => {
                    buf.extend_from_slice(data);
                    if !mse::could_be_plaintext(buf) {
                        if policy == Policy::Off {
                            return Incoming::Close(PeerError::EncryptedRefused);
                        }
                        let (secret, pad) = randomness();
                        let mut hs = Handshake::responder(policy, secret, &pad, now);
                        // Fewer bytes than a key: all are taken.
                        if let Err(e) = hs.handle_input(buf, |h| by_req2.get(h).copied()) {
                            return Incoming::Close(PeerError::Mse(e));
                        }
                        buf.clear();
                        *crypt = Crypt::Mse(Box::new(hs));
                    } else if buf.len() >= 20 {
                        if policy == Policy::Require {
                            return Incoming::Close(PeerError::PlaintextRefused);
                        }
                        *crypt = Crypt::Plain;
                    }
                }
                Crypt::Plain => buf.extend_from_slice(data),
                Crypt::Done(d) => {
                    if d.method == Method::Rc4 {
                        d.dec.apply(data);
                    }
                    buf.extend_from_slice(data);
                }
                Crypt::Mse(hs) => {
                    let taken = match hs.handle_input(data, |h| by_req2.get(h).copied()) {
                        Ok(k) => k,
                        Err(e) => return Incoming::Close(PeerError::Mse(e)),
                    };
                    if let Some(o) = hs.poll_transmit() {
                        out.extend_from_slice(&o);
                    }
                    if hs.is_done() {
                        let old = std::mem::replace(crypt, Crypt::Undecided);
                        let Crypt::Mse(hs) = old else {
                            return Incoming::Wait;
                        };
                        let Some(done) = hs.finish() else {
                            return Incoming::Wait;
                        };
                        let mut settled = Settled {
                            method: done.method,
                            info_hash: done.info_hash,
                            enc: done.enc,
                            dec: done.dec,
                        };
                        *buf = done.initial;
                        let rest = data.get_mut(taken..).unwrap_or_default();
                        if settled.method == Method::Rc4 {
                            settled.dec.apply(rest);
                        }
                        buf.extend_from_slice(rest);
                        *crypt = Crypt::Done(Box::new(settled));
                    }
                }
            }
        }
        if let Err(e) = write_raw(sock, out) {
            return Incoming::Close(PeerError::Io("write", e.kind()));
        }
        let ready = matches!(crypt, Crypt::Plain | Crypt::Done(_))
            && buf.len() >= super::ROUTE_LEN
            && out.is_empty();
        if ready {
            Incoming::Route
        } else {
            Incoming::Wait
        }
    }

    /// Keep an incoming connection's `WRITABLE` interest exactly while MSE
    /// output waits.
    pub(super) fn incoming_interest(&mut self, token: ConnToken) {
        let Some(Conn::Incoming {
            sock,
            out,
            writable,
            ..
        }) = self.conns.get_mut(token.0)
        else {
            return;
        };
        super::want_writable(&self.poll, sock, token, !out.is_empty(), writable);
    }

    /// Move a dialed connection's MSE exchange along: read what the peer
    /// sent, queue our answer, and once it is done set up the ciphers and
    /// hand the bytes that followed to the peer's receive buffer. True when
    /// the exchange is over (the connection goes on as a normal peer).
    pub(super) fn dial_readable(&mut self, token: ConnToken) -> Result<bool, PeerError> {
        let Some(Conn::Peer {
            sock,
            tid,
            key,
            mse: mse_slot,
            pre,
            ..
        }) = self.conns.get_mut(token.0)
        else {
            return Ok(false);
        };
        let Some(hs) = mse_slot.as_mut() else {
            return Ok(true);
        };
        let mut chunk = [0u8; 4096];
        loop {
            let n = match sock.read(&mut chunk) {
                Ok(0) => return Err(PeerError::Eof),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(PeerError::Io("read", e.kind())),
            };
            let data = chunk.get(..n).unwrap_or_default();
            let taken = hs.handle_input(data, |_| None).map_err(PeerError::Mse)?;
            if let Some(o) = hs.poll_transmit() {
                pre.extend_from_slice(&o);
            }
            if !hs.is_done() {
                continue;
            }
            let Some(done) = mse_slot.take().and_then(|hs| hs.finish()) else {
                return Ok(true);
            };
            let Some(s) = self.torrents.get_mut(*tid) else {
                return Ok(true);
            };
            let Some(addr) = s.t.peer(*key).map(|p| p.addr) else {
                return Ok(true);
            };
            debug!("peer#{token} {addr}: MSE done, {}", done.method);
            self.dial_methods.note(addr, Dial::Mse);
            if done.method == Method::Rc4 {
                s.t.set_peer_ciphers(*key, done.dec, done.enc);
            }
            // What followed step 4 is the payload stream: into the buffer
            // (decrypted there when RC4).
            s.t.feed_peer(*key, data.get(taken..).unwrap_or_default());
            s.t.dirty.push(*key);
            return Ok(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dial_methods_stay_within_their_cap() {
        let mut m = DialMethods::default();
        for i in 0..(MAX_DIAL_METHODS as u32 + 500) {
            let addr = SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 6881));
            m.note(addr, Dial::Plaintext);
            assert_eq!(m.get(&addr), Some(Dial::Plaintext));
        }
        assert_eq!(m.len(), MAX_DIAL_METHODS);
        let a = SocketAddr::from(([10, 0, 0, 1], 6881));
        m.note(a, Dial::Mse);
        m.note(a, Dial::Mse);
        assert_eq!(m.get(&a), Some(Dial::Mse));
        assert_eq!(m.len(), MAX_DIAL_METHODS);
    }
}
