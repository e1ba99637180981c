//! The 68-byte handshake: `19 "BitTorrent protocol" reserved[8] info_hash peer_id`.

use super::DecodeError;

/// Bytes in a handshake.
pub const HANDSHAKE_LEN: usize = 68;
const PSTR: &[u8; 19] = b"BitTorrent protocol";

/// A peer's handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handshake {
    pub reserved: [u8; 8],
    pub info_hash: [u8; 20],
    pub peer_id: [u8; 20],
}

impl Handshake {
    /// Append the 68 bytes.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(19);
        out.extend_from_slice(PSTR);
        out.extend_from_slice(&self.reserved);
        out.extend_from_slice(&self.info_hash);
        out.extend_from_slice(&self.peer_id);
    }

    /// `Ok(None)` until 68 bytes are there; an error as soon as the visible
    /// prefix cannot be a handshake (the first byte, then the protocol
    /// string byte by byte).
    pub fn decode(buf: &[u8]) -> Result<Option<Handshake>, DecodeError> {
        let visible = buf.len().min(1 + PSTR.len());
        if let Some((&first, rest)) = buf[..visible].split_first() {
            if first != 19 || rest != &PSTR[..rest.len()] {
                return Err(DecodeError::BadHandshake);
            }
        }
        let Some(b) = buf.get(..HANDSHAKE_LEN) else {
            return Ok(None);
        };
        let mut h = Handshake {
            reserved: [0; 8],
            info_hash: [0; 20],
            peer_id: [0; 20],
        };
        h.reserved.copy_from_slice(&b[20..28]);
        h.info_hash.copy_from_slice(&b[28..48]);
        h.peer_id.copy_from_slice(&b[48..68]);
        Ok(Some(h))
    }
}
