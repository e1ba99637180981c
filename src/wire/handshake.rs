//! The 68-byte BEP 3 handshake that opens every peer connection.

#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

use super::DecodeError;

/// Length of a handshake on the wire.
pub const HANDSHAKE_LEN: usize = 68;

/// The protocol string, preceded on the wire by its length (19).
const PROTOCOL: &[u8; 19] = b"BitTorrent protocol";

/// Offsets of the fields after the length byte and protocol string.
const RESERVED_AT: usize = 1 + PROTOCOL.len();
const INFO_HASH_AT: usize = RESERVED_AT + 8;
const PEER_ID_AT: usize = INFO_HASH_AT + 20;
const _: () = assert!(PEER_ID_AT + 20 == HANDSHAKE_LEN);

/// Our reserved bytes: the extension protocol (BEP 10: `reqq`,
/// `ut_metadata`) and the fast extension (BEP 6).
pub const OUR_RESERVED: [u8; 8] = [0, 0, 0, 0, 0, 0x10, 0, 0x04];
/// The DHT bit (BEP 5) in the last reserved byte, set when our DHT runs.
pub const DHT_BIT: u8 = 0x01;

/// A decoded handshake: `19 "BitTorrent protocol" reserved[8] info_hash[20] peer_id[20]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handshake {
    /// Extension bits (BEP 10 sets bit 0x10 of byte 5; BEP 6 bit 0x04 of byte 7).
    pub reserved: [u8; 8],
    /// SHA-1 of the torrent's `info` dictionary.
    pub info_hash: [u8; 20],
    /// The sender's peer id.
    pub peer_id: [u8; 20],
}

impl Handshake {
    /// Whether the sender speaks the extension protocol (BEP 10).
    pub fn supports_extensions(&self) -> bool {
        self.reserved[5] & 0x10 != 0
    }

    /// Whether the sender speaks the fast extension (BEP 6).
    pub fn supports_fast(&self) -> bool {
        self.reserved[7] & 0x04 != 0
    }

    /// Append the 68 wire bytes of this handshake to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.reserve(HANDSHAKE_LEN);
        out.push(PROTOCOL.len() as u8);
        out.extend_from_slice(PROTOCOL);
        out.extend_from_slice(&self.reserved);
        out.extend_from_slice(&self.info_hash);
        out.extend_from_slice(&self.peer_id);
    }

    /// Decode a handshake from the start of `buf`.
    ///
    /// `Ok(None)` means fewer than [`HANDSHAKE_LEN`] bytes are available and
    /// everything seen so far is plausible. A wrong length byte or a wrong
    /// protocol-string byte is an error as soon as it is visible, so a
    /// non-BitTorrent peer is dropped without waiting for 68 bytes. On success
    /// exactly [`HANDSHAKE_LEN`] bytes were used.
    pub fn decode(buf: &[u8]) -> Result<Option<Handshake>, DecodeError> {
        let Some((&pstrlen, rest)) = buf.split_first() else {
            return Ok(None);
        };
        if usize::from(pstrlen) != PROTOCOL.len() {
            return Err(DecodeError::BadHandshake);
        }
        let seen = rest.len().min(PROTOCOL.len());
        if rest.get(..seen) != PROTOCOL.get(..seen) {
            return Err(DecodeError::BadHandshake);
        }
        match (
            array_at::<8>(buf, RESERVED_AT),
            array_at::<20>(buf, INFO_HASH_AT),
            array_at::<20>(buf, PEER_ID_AT),
        ) {
            (Some(reserved), Some(info_hash), Some(peer_id)) => Ok(Some(Handshake {
                reserved,
                info_hash,
                peer_id,
            })),
            _ => Ok(None),
        }
    }
}

impl Handshake {
    /// Check the part of a handshake seen so far (length byte, protocol
    /// string): an error as soon as a byte is wrong.
    pub fn check_prefix(buf: &[u8]) -> Result<(), DecodeError> {
        Handshake::decode(buf).map(|_| ())
    }

    /// The info-hash of a handshake whose first 48 bytes are in `buf`.
    pub fn info_hash_of(buf: &[u8]) -> Option<[u8; 20]> {
        array_at::<20>(buf, INFO_HASH_AT)
    }
}

/// `N` bytes of `buf` starting at `at`, or `None` if `buf` is too short.
fn array_at<const N: usize>(buf: &[u8], at: usize) -> Option<[u8; N]> {
    let end = at.checked_add(N)?;
    buf.get(at..end)?.try_into().ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests may panic
mod tests {
    use super::*;

    fn sample() -> Handshake {
        Handshake {
            reserved: [0, 0, 0, 0, 0, 0x10, 0, 0x04],
            info_hash: [0xab; 20],
            peer_id: *b"-PM0001-abcdefghijkl",
        }
    }

    #[test]
    fn handshake_round_trips_in_68_bytes() {
        let mut out = Vec::new();
        sample().encode(&mut out);
        assert_eq!(out.len(), HANDSHAKE_LEN);
        assert_eq!(out[0], 19);
        assert_eq!(&out[1..20], b"BitTorrent protocol");
        assert_eq!(Handshake::decode(&out), Ok(Some(sample())));
    }

    #[test]
    fn trailing_bytes_after_handshake_are_left_alone() {
        let mut out = Vec::new();
        sample().encode(&mut out);
        out.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(Handshake::decode(&out), Ok(Some(sample())));
    }

    #[test]
    fn every_proper_prefix_needs_more_bytes() {
        let mut out = Vec::new();
        sample().encode(&mut out);
        for n in 0..HANDSHAKE_LEN {
            assert_eq!(Handshake::decode(&out[..n]), Ok(None), "prefix of {n}");
        }
    }

    #[test]
    fn wrong_pstrlen_fails_after_one_byte() {
        for b in [0u8, 18, 20, 255, b'G'] {
            assert_eq!(Handshake::decode(&[b]), Err(DecodeError::BadHandshake));
        }
    }

    #[test]
    fn wrong_protocol_string_fails_at_the_first_wrong_byte() {
        // An HTTP request arriving on the peer port.
        let mut bad = vec![19u8];
        bad.extend_from_slice(b"BitTorrent protocoX");
        for n in 1..bad.len() {
            assert_eq!(Handshake::decode(&bad[..n]), Ok(None), "prefix of {n}");
        }
        assert_eq!(Handshake::decode(&bad), Err(DecodeError::BadHandshake));
        assert_eq!(
            Handshake::decode(&[19, b'b']),
            Err(DecodeError::BadHandshake)
        );
    }
}
