//! Message Stream Encryption (MSE, also called Protocol Encryption): the
//! obfuscated handshake that comes before the BitTorrent handshake, and the
//! RC4 stream cipher that may follow it.
//!
//! Sans-IO: a [`Handshake`] is fed bytes ([`Handshake::handle_input`]) and
//! gives bytes to send ([`Handshake::poll_transmit`]); randomness (the
//! private key and the padding) comes in from the caller and the clock as
//! `now`. The exchange, A the side that dials and B the side that accepts:
//!
//! ```text
//! 1 A->B  Ya, PadA                                   (96 bytes, 0-512 random)
//! 2 B->A  Yb, PadB
//! 3 A->B  HASH('req1', S), HASH('req2', SKEY) xor HASH('req3', S),
//!         ENCRYPT(VC, crypto_provide, len(PadC), PadC, len(IA)), ENCRYPT(IA)
//! 4 B->A  ENCRYPT(VC, crypto_select, len(PadD), PadD), ENCRYPT2(payload)
//! 5 A->B  ENCRYPT2(payload)
//! ```
//!
//! Y = 2^X mod P (768-bit prime P), S = Y_other^X mod P, both 96 bytes big
//! endian; SKEY is the info-hash; HASH is SHA-1; VC is eight zero bytes.
//! ENCRYPT is RC4 keyed with `HASH('keyA', S, SKEY)` from A to B and
//! `HASH('keyB', S, SKEY)` from B to A, the first 1024 bytes of keystream
//! discarded. ENCRYPT2 is the same RC4 stream when RC4 was selected, nothing
//! when plaintext was.
//!
//! Everything is bounded: a side looks for the other's sync marker
//! (`HASH('req1', S)` or the encrypted VC) only within 512 bytes of padding
//! after the 96-byte key, PadC and PadD are at most 512 bytes, IA at most
//! 65,535 (its 2-byte length), and the whole exchange has a deadline
//! ([`TIMEOUT`]). We send PadC, PadD and IA empty: our BitTorrent
//! handshake follows step 4 (or 5) in the payload stream.

#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

use num_bigint::BigUint;
use rc4::{KeyInit, Rc4, StreamCipher};
use sha1::{Digest, Sha1};
use std::fmt;
use std::time::{Duration, Instant};

/// The 768-bit prime of the key exchange (the generator is 2).
const PRIME: [u8; 96] = [
    0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xC9, 0x0F, 0xDA, 0xA2, 0x21, 0x68, 0xC2, 0x34,
    0xC4, 0xC6, 0x62, 0x8B, 0x80, 0xDC, 0x1C, 0xD1, 0x29, 0x02, 0x4E, 0x08, 0x8A, 0x67, 0xCC, 0x74,
    0x02, 0x0B, 0xBE, 0xA6, 0x3B, 0x13, 0x9B, 0x22, 0x51, 0x4A, 0x08, 0x79, 0x8E, 0x34, 0x04, 0xDD,
    0xEF, 0x95, 0x19, 0xB3, 0xCD, 0x3A, 0x43, 0x1B, 0x30, 0x2B, 0x0A, 0x6D, 0xF2, 0x5F, 0x14, 0x37,
    0x4F, 0xE1, 0x35, 0x6D, 0x6D, 0x51, 0xC2, 0x45, 0xE4, 0x85, 0xB5, 0x76, 0x62, 0x5E, 0x7E, 0xC6,
    0xF4, 0x4C, 0x42, 0xE9, 0xA6, 0x3A, 0x36, 0x21, 0x00, 0x00, 0x00, 0x00, 0x00, 0x09, 0x05, 0x63,
];

/// Bytes of a public key (and of the shared secret S).
pub const KEY_LEN: usize = 96;
/// Most padding in PadA, PadB, PadC and PadD.
pub const MAX_PAD: usize = 512;
/// Bytes of the private key X we use (the spec asks for at least 128 bits).
pub const SECRET_LEN: usize = 20;
/// The whole exchange must finish within this long.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// `crypto_provide` / `crypto_select` bit: plaintext after the handshake.
pub const CRYPTO_PLAIN: u32 = 0x01;
/// `crypto_provide` / `crypto_select` bit: RC4 after the handshake.
pub const CRYPTO_RC4: u32 = 0x02;

/// Verification constant: eight zero bytes, encrypted.
const VC: [u8; 8] = [0; 8];
/// The start of a plaintext BitTorrent handshake.
const PSTR: &[u8] = b"\x13BitTorrent protocol";
/// Keystream bytes thrown away after keying RC4.
const DISCARD: usize = 1024;

/// Whether we speak MSE (a session-wide setting: `--encryption`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Policy {
    /// Dial with MSE (offering RC4 and plaintext, choosing RC4 when offered)
    /// and fall back to a plaintext connection when the peer does not
    /// answer it; accept both.
    #[default]
    Prefer,
    /// RC4 only, both ways: plaintext handshakes (incoming or as a
    /// peer's choice) are refused.
    Require,
    /// Plaintext only: dial in plaintext, refuse incoming MSE.
    Off,
}

impl Policy {
    /// The `crypto_provide` bits we send when dialing.
    pub const fn provide(self) -> u32 {
        match self {
            Policy::Require => CRYPTO_RC4,
            Policy::Prefer | Policy::Off => CRYPTO_RC4 | CRYPTO_PLAIN,
        }
    }

    /// What we choose from a peer's `crypto_provide`. With `prefer`,
    /// plaintext when offered (the handshake is still obfuscated; the
    /// payload is not run through RC4, which costs about 2 CPU seconds per
    /// GiB on each side — libtorrent's default makes the same choice), RC4
    /// when it is all the peer takes; with `require`, RC4 only.
    pub const fn select(self, provide: u32) -> Option<Method> {
        match self {
            Policy::Require if provide & CRYPTO_RC4 != 0 => Some(Method::Rc4),
            Policy::Require => None,
            _ if provide & CRYPTO_PLAIN != 0 => Some(Method::Plain),
            _ if provide & CRYPTO_RC4 != 0 => Some(Method::Rc4),
            _ => None,
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Policy::Prefer => "prefer",
            Policy::Require => "require",
            Policy::Off => "off",
        })
    }
}

/// How the payload stream travels after the handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Plain,
    Rc4,
}

impl Method {
    const fn bits(self) -> u32 {
        match self {
            Method::Plain => CRYPTO_PLAIN,
            Method::Rc4 => CRYPTO_RC4,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Method::Plain => "plaintext",
            Method::Rc4 => "RC4",
        })
    }
}

/// One direction of an RC4 stream, keyed and past the discarded bytes.
/// Boxed: a plaintext connection's `Option<Cipher>` stays one word.
pub struct Cipher(Box<Rc4>);

impl Cipher {
    /// RC4 keyed with `key`, the first [`DISCARD`] keystream bytes dropped
    /// (public for benches; connections get theirs from [`Done`]).
    pub fn new(key: &[u8; 20]) -> Cipher {
        // A 20-byte key is within RC4's 1..=256 byte range.
        let mut rc4 = match Rc4::new_from_slice(key) {
            Ok(r) => r,
            Err(_) => unreachable!("20-byte RC4 key"),
        };
        let mut junk = [0u8; DISCARD];
        rc4.apply_keystream(&mut junk);
        Cipher(Box::new(rc4))
    }

    /// Encrypt or decrypt `data` in place (the same operation).
    pub fn apply(&mut self, data: &mut [u8]) {
        self.0.apply_keystream(data);
    }
}

impl fmt::Debug for Cipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Cipher(RC4)")
    }
}

/// Why an MSE exchange failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MseError {
    /// The other side's public key is 0, 1, P-1 or not below P.
    BadKey,
    /// No sync marker within the padding limit after the public key.
    NoSync,
    /// `HASH('req2', SKEY)` matches no torrent of ours.
    UnknownInfoHash,
    /// The decrypted verification constant is not zeros (wrong key).
    BadVc,
    /// The peer offers no method we accept (e.g. plaintext only while we
    /// require RC4).
    NoCommonMethod,
    /// The peer selected a method we did not offer, or several.
    BadSelect,
    /// A padding length over 512.
    PadTooLong,
    /// The exchange did not finish within [`TIMEOUT`].
    Timeout,
    /// The peer we dialed answered our key with a plaintext BitTorrent
    /// handshake: it does not speak MSE.
    PlaintextAnswer,
}

impl fmt::Display for MseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MseError::BadKey => "MSE: invalid public key",
            MseError::NoSync => "MSE: no sync marker within the padding limit",
            MseError::UnknownInfoHash => "MSE: info-hash (SKEY) of no torrent we serve",
            MseError::BadVc => "MSE: bad verification constant",
            MseError::NoCommonMethod => "MSE: no common encryption method",
            MseError::BadSelect => "MSE: peer selected a method we did not offer",
            MseError::PadTooLong => "MSE: padding longer than 512 bytes",
            MseError::Timeout => "MSE: handshake timed out",
            MseError::PlaintextAnswer => "MSE: peer answered with a plaintext handshake",
        })
    }
}

impl std::error::Error for MseError {}

/// A finished exchange: how the stream continues.
#[derive(Debug)]
pub struct Done {
    pub method: Method,
    /// The torrent: given to the initiator, found by the responder.
    pub info_hash: [u8; 20],
    /// Encrypts what we send (used only when `method` is RC4).
    pub enc: Cipher,
    /// Decrypts what we receive (used only when `method` is RC4).
    pub dec: Cipher,
    /// The initiator's initial payload, decrypted (responder only; empty
    /// for the initiator).
    pub initial: Vec<u8>,
}

/// Which side of the exchange we are, and what that side still waits for.
#[derive(Debug)]
enum State {
    /// A: waiting for Yb (96 bytes).
    AwaitYb,
    /// A: looking for ENCRYPT(VC) after PadB.
    SyncVc { marker: [u8; 8] },
    /// A: crypto_select and len(PadD) (6 encrypted bytes).
    AwaitSelect,
    /// A: PadD.
    AwaitPadD { len: usize, method: Method },
    /// B: waiting for Ya (96 bytes).
    AwaitYa,
    /// B: looking for HASH('req1', S) after PadA.
    SyncReq1 { marker: [u8; 20] },
    /// B: HASH('req2', SKEY) xor HASH('req3', S).
    AwaitSkey,
    /// B: VC, crypto_provide, len(PadC) (14 encrypted bytes).
    AwaitProvide,
    /// B: PadC.
    AwaitPadC { len: usize, method: Method },
    /// B: len(IA).
    AwaitIaLen { method: Method },
    /// B: IA.
    AwaitIa { len: usize, method: Method },
    /// Finished; [`Handshake::finish`] gives the result.
    Done { method: Method },
    /// Failed; every later input gives the same error.
    Failed(MseError),
}

/// One MSE exchange, either side.
pub struct Handshake {
    state: State,
    policy: Policy,
    secret: BigUint,
    /// Shared secret, once the other key is known.
    s: [u8; KEY_LEN],
    info_hash: [u8; 20],
    enc: Option<Cipher>,
    dec: Option<Cipher>,
    /// Input taken but not yet used (bounded: the sync window at most).
    buf: Vec<u8>,
    /// Sync positions before this one are ruled out.
    searched: usize,
    /// Bytes to send.
    out: Vec<u8>,
    /// The responder's PadB, sent after its key.
    pad: Vec<u8>,
    initial: Vec<u8>,
    deadline: Instant,
}

impl fmt::Debug for Handshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handshake")
            .field("state", &self.state)
            .field("buffered", &self.buf.len())
            .finish_non_exhaustive()
    }
}

impl Handshake {
    /// The dialing side, for the torrent `info_hash`: step 1 (Ya and `pad`,
    /// at most 512 bytes of it) is queued at once. `secret` is the private
    /// key X (random).
    pub fn initiator(
        info_hash: [u8; 20],
        policy: Policy,
        secret: [u8; SECRET_LEN],
        pad: &[u8],
        now: Instant,
    ) -> Handshake {
        let mut h = Handshake::new(State::AwaitYb, policy, secret, now);
        h.info_hash = info_hash;
        h.out.extend_from_slice(&h.public_key());
        h.out
            .extend_from_slice(pad.get(..pad.len().min(MAX_PAD)).unwrap_or_default());
        h
    }

    /// Send `ia` (at most 65,535 bytes) as the initial payload of step 3.
    /// We never do (our handshake follows the exchange), but other clients
    /// do, and the tests play them.
    pub fn with_initial_payload(mut self, ia: &[u8]) -> Handshake {
        self.initial = ia
            .get(..ia.len().min(usize::from(u16::MAX)))
            .unwrap_or_default()
            .to_vec();
        self
    }

    /// The accepting side. `pad` (at most 512 bytes of it) follows our
    /// public key once the peer's has arrived.
    pub fn responder(
        policy: Policy,
        secret: [u8; SECRET_LEN],
        pad: &[u8],
        now: Instant,
    ) -> Handshake {
        let mut h = Handshake::new(State::AwaitYa, policy, secret, now);
        h.pad = pad
            .get(..pad.len().min(MAX_PAD))
            .unwrap_or_default()
            .to_vec();
        h
    }

    fn new(state: State, policy: Policy, secret: [u8; SECRET_LEN], now: Instant) -> Handshake {
        Handshake {
            state,
            policy,
            secret: BigUint::from_bytes_be(&secret),
            s: [0; KEY_LEN],
            info_hash: [0; 20],
            enc: None,
            dec: None,
            buf: Vec::new(),
            searched: 0,
            out: Vec::new(),
            pad: Vec::new(),
            initial: Vec::new(),
            deadline: now + TIMEOUT,
        }
    }

    /// Our public key Y = 2^X mod P.
    fn public_key(&self) -> [u8; KEY_LEN] {
        let y = BigUint::from(2u32).modpow(&self.secret, &BigUint::from_bytes_be(&PRIME));
        to_key_bytes(&y)
    }

    /// Take the other side's public key; compute S.
    fn agree(&mut self, other: &[u8]) -> Result<(), MseError> {
        let p = BigUint::from_bytes_be(&PRIME);
        let y = BigUint::from_bytes_be(other);
        let one = BigUint::from(1u32);
        if y <= one || y >= &p - &one {
            return Err(MseError::BadKey);
        }
        self.s = to_key_bytes(&y.modpow(&self.secret, &p));
        Ok(())
    }

    /// Feed bytes from the peer. Returns how many were taken: the exchange
    /// takes no byte past its own end, so what is left of `input` once
    /// [`is_done`](Handshake::is_done) is the payload stream (still
    /// encrypted when the method is RC4). `lookup` maps
    /// `HASH('req2', info_hash)` to the info-hash of a torrent we serve
    /// (the responder asks it once).
    pub fn handle_input(
        &mut self,
        input: &[u8],
        mut lookup: impl FnMut(&[u8; 20]) -> Option<[u8; 20]>,
    ) -> Result<usize, MseError> {
        let mut taken = 0;
        loop {
            if let State::Failed(e) = self.state {
                return Err(e);
            }
            if matches!(self.state, State::Done { .. }) {
                return Ok(taken);
            }
            let want = self.want();
            if self.buf.len() < want {
                let rest = input.get(taken..).unwrap_or_default();
                let n = (want - self.buf.len()).min(rest.len());
                self.buf
                    .extend_from_slice(rest.get(..n).unwrap_or_default());
                taken += n;
            }
            match self.step(&mut lookup) {
                Ok(true) => {}
                Ok(false) => return Ok(taken),
                Err(e) => {
                    self.state = State::Failed(e);
                    self.buf = Vec::new();
                    return Err(e);
                }
            }
        }
    }

    /// Bytes the current state wants in `buf` (the sync states: up to the
    /// end of the marker at the next offset not yet ruled out).
    fn want(&self) -> usize {
        match self.state {
            State::AwaitYb | State::AwaitYa => KEY_LEN,
            // One byte past the earliest place the marker may end: the
            // exchange never takes a byte beyond its own end.
            State::SyncVc { marker } => self.searched + marker.len(),
            State::SyncReq1 { marker } => self.searched + marker.len(),
            State::AwaitSelect => 6,
            State::AwaitSkey => 20,
            State::AwaitProvide => 14,
            State::AwaitIaLen { .. } => 2,
            State::AwaitPadD { len, .. } | State::AwaitPadC { len, .. } => len,
            State::AwaitIa { len, .. } => len,
            State::Done { .. } | State::Failed(_) => 0,
        }
    }

    /// Act on `buf` if it holds enough; true when the state moved on.
    fn step(
        &mut self,
        lookup: &mut impl FnMut(&[u8; 20]) -> Option<[u8; 20]>,
    ) -> Result<bool, MseError> {
        match self.state {
            // A key never starts like this (2^-160): a plaintext peer.
            State::AwaitYb if self.buf.get(..PSTR.len()) == Some(PSTR) => {
                return Err(MseError::PlaintextAnswer);
            }
            State::SyncVc { marker } => return self.sync(&marker, State::AwaitSelect),
            State::SyncReq1 { marker } => return self.sync(&marker, State::AwaitSkey),
            _ => {}
        }
        let want = self.want();
        if self.buf.len() < want {
            return Ok(false);
        }
        let mut data: Vec<u8> = self.buf.drain(..want).collect();
        self.state = match self.state {
            State::AwaitYb => {
                self.agree(&data)?;
                let (mut enc, mut dec) = self.ciphers(b"keyA", b"keyB");
                self.out.extend_from_slice(&hash(&[b"req1", &self.s]));
                self.out.extend_from_slice(&xor20(
                    &hash(&[b"req2", &self.info_hash]),
                    &hash(&[b"req3", &self.s]),
                ));
                let start = self.out.len();
                self.out.extend_from_slice(&VC);
                self.out
                    .extend_from_slice(&self.policy.provide().to_be_bytes());
                self.out.extend_from_slice(&0u16.to_be_bytes()); // len(PadC)
                let ia = std::mem::take(&mut self.initial);
                let ia_len = u16::try_from(ia.len()).unwrap_or(u16::MAX);
                self.out.extend_from_slice(&ia_len.to_be_bytes());
                self.out
                    .extend_from_slice(ia.get(..usize::from(ia_len)).unwrap_or_default());
                if let Some(tail) = self.out.get_mut(start..) {
                    enc.apply(tail);
                }
                let mut marker = VC;
                dec.apply(&mut marker);
                self.enc = Some(enc);
                self.dec = Some(dec);
                State::SyncVc { marker }
            }
            State::AwaitSelect => {
                self.decrypt(&mut data);
                let select = be_u32(&data, 0);
                let method = match select {
                    CRYPTO_RC4 => Method::Rc4,
                    CRYPTO_PLAIN => Method::Plain,
                    _ => return Err(MseError::BadSelect),
                };
                if self.policy.provide() & select == 0 {
                    return Err(MseError::BadSelect);
                }
                let len = pad_len(&data, 4)?;
                State::AwaitPadD { len, method }
            }
            State::AwaitPadD { method, .. } => {
                self.decrypt(&mut data);
                State::Done { method }
            }
            State::AwaitYa => {
                self.agree(&data)?;
                self.out.extend_from_slice(&self.public_key());
                self.out.append(&mut self.pad);
                State::SyncReq1 {
                    marker: hash(&[b"req1", &self.s]),
                }
            }
            State::AwaitSkey => {
                let req2 = xor20(&first20(&data), &hash(&[b"req3", &self.s]));
                self.info_hash = lookup(&req2).ok_or(MseError::UnknownInfoHash)?;
                let (enc, dec) = self.ciphers(b"keyB", b"keyA");
                self.enc = Some(enc);
                self.dec = Some(dec);
                State::AwaitProvide
            }
            State::AwaitProvide => {
                self.decrypt(&mut data);
                if data.get(..8) != Some(&VC[..]) {
                    return Err(MseError::BadVc);
                }
                let method = self
                    .policy
                    .select(be_u32(&data, 8))
                    .ok_or(MseError::NoCommonMethod)?;
                let len = pad_len(&data, 12)?;
                State::AwaitPadC { len, method }
            }
            State::AwaitPadC { method, .. } => {
                self.decrypt(&mut data);
                State::AwaitIaLen { method }
            }
            State::AwaitIaLen { method } => {
                self.decrypt(&mut data);
                let len = usize::from(u16::from_be_bytes([
                    data.first().copied().unwrap_or(0),
                    data.get(1).copied().unwrap_or(0),
                ]));
                State::AwaitIa { len, method }
            }
            State::AwaitIa { method, .. } => {
                self.decrypt(&mut data);
                self.initial = data;
                // Step 4: VC, crypto_select, len(PadD) = 0.
                let start = self.out.len();
                self.out.extend_from_slice(&VC);
                self.out.extend_from_slice(&method.bits().to_be_bytes());
                self.out.extend_from_slice(&0u16.to_be_bytes());
                if let (Some(enc), Some(tail)) = (self.enc.as_mut(), self.out.get_mut(start..)) {
                    enc.apply(tail);
                }
                State::Done { method }
            }
            State::SyncVc { .. }
            | State::SyncReq1 { .. }
            | State::Done { .. }
            | State::Failed(_) => return Ok(false),
        };
        Ok(true)
    }

    /// Is `marker` at offset `searched` of `buf` (the padding before it
    /// having been skipped)? On a match drop everything through it and go
    /// to `next`; otherwise rule that offset out, up to the padding limit.
    fn sync(&mut self, marker: &[u8], next: State) -> Result<bool, MseError> {
        let end = self.searched + marker.len();
        let Some(candidate) = self.buf.get(self.searched..end) else {
            return Ok(false);
        };
        if candidate == marker {
            self.buf.clear();
            self.searched = 0;
            self.state = next;
            return Ok(true);
        }
        if self.searched >= MAX_PAD {
            return Err(MseError::NoSync);
        }
        self.searched += 1;
        Ok(true)
    }

    /// The two RC4 streams: ours keyed with `ours`, theirs with `theirs`.
    fn ciphers(&self, ours: &[u8], theirs: &[u8]) -> (Cipher, Cipher) {
        let enc = Cipher::new(&hash(&[ours, &self.s, &self.info_hash]));
        let dec = Cipher::new(&hash(&[theirs, &self.s, &self.info_hash]));
        (enc, dec)
    }

    fn decrypt(&mut self, data: &mut [u8]) {
        if let Some(dec) = self.dec.as_mut() {
            dec.apply(data);
        }
    }

    /// Bytes to send now, if any.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        (!self.out.is_empty()).then(|| std::mem::take(&mut self.out))
    }

    /// When the exchange times out (call [`handle_timeout`] then).
    ///
    /// [`handle_timeout`]: Handshake::handle_timeout
    pub fn poll_timeout(&self) -> Instant {
        self.deadline
    }

    /// The time-out error once `now` has passed the deadline of an
    /// unfinished exchange.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), MseError> {
        if now >= self.deadline && !self.is_done() {
            self.state = State::Failed(MseError::Timeout);
            return Err(MseError::Timeout);
        }
        Ok(())
    }

    /// True once the exchange is complete (the output may still hold step
    /// 4 for the responder: send it before anything else).
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done { .. })
    }

    /// Bytes held while waiting for more (at most the sync window: 512
    /// bytes of padding and the marker).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The result of a finished exchange (None before).
    pub fn finish(self) -> Option<Done> {
        let State::Done { method } = self.state else {
            return None;
        };
        Some(Done {
            method,
            info_hash: self.info_hash,
            enc: self.enc?,
            dec: self.dec?,
            initial: self.initial,
        })
    }
}

/// `HASH('req2', info_hash)`: what the responder compares against.
pub fn req2_hash(info_hash: &[u8; 20]) -> [u8; 20] {
    hash(&[b"req2", info_hash])
}

/// True when `prefix` could still be the start of a plaintext BitTorrent
/// handshake (`\x13BitTorrent protocol`); anything else is taken for MSE.
pub fn could_be_plaintext(prefix: &[u8]) -> bool {
    let n = prefix.len().min(PSTR.len());
    prefix.get(..n) == PSTR.get(..n)
}

fn hash(parts: &[&[u8]]) -> [u8; 20] {
    let mut h = Sha1::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

fn xor20(a: &[u8; 20], b: &[u8; 20]) -> [u8; 20] {
    std::array::from_fn(|i| a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0))
}

fn first20(data: &[u8]) -> [u8; 20] {
    std::array::from_fn(|i| data.get(i).copied().unwrap_or(0))
}

fn be_u32(data: &[u8], at: usize) -> u32 {
    let b = |i: usize| data.get(at + i).copied().unwrap_or(0);
    u32::from_be_bytes([b(0), b(1), b(2), b(3)])
}

fn pad_len(data: &[u8], at: usize) -> Result<usize, MseError> {
    let b = |i: usize| data.get(at + i).copied().unwrap_or(0);
    let len = usize::from(u16::from_be_bytes([b(0), b(1)]));
    if len > MAX_PAD {
        return Err(MseError::PadTooLong);
    }
    Ok(len)
}

/// A number below P as exactly 96 big-endian bytes.
fn to_key_bytes(n: &BigUint) -> [u8; KEY_LEN] {
    let bytes = n.to_bytes_be();
    let mut out = [0u8; KEY_LEN];
    let skip = KEY_LEN.saturating_sub(bytes.len());
    if let Some(dst) = out.get_mut(skip..) {
        let src = bytes
            .get(bytes.len().saturating_sub(KEY_LEN)..)
            .unwrap_or_default();
        dst.copy_from_slice(src);
    }
    out
}

/// A matching (encrypting, decrypting) pair of ciphers, for the buffers'
/// tests.
#[cfg(test)]
pub(crate) fn test_ciphers() -> (Option<Cipher>, Option<Cipher>) {
    let key = hash(&[b"test"]);
    (Some(Cipher::new(&key)), Some(Cipher::new(&key)))
}

#[cfg(test)]
mod tests;
