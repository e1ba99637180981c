//! Why a peer's bytes could not be decoded.

#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

/// A framing or handshake error: the peer sent something that is not BEP 3.
///
/// `Copy` and allocation free, so the decoder can return it from the hot path
/// and the peer layer can wrap it in its own error without cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The length prefix announces a frame longer than we accept. Raised from
    /// the four prefix bytes alone, before any of the body is buffered.
    FrameTooLong {
        /// The announced length (excluding the 4-byte prefix).
        len: u32,
        /// The largest length we accept.
        max: u32,
    },
    /// A message whose length does not fit its id: a fixed-size message with
    /// the wrong size, or a `piece` too short for its header.
    BadLength {
        /// The message id.
        id: u8,
        /// The announced length (id byte plus payload).
        len: u32,
    },
    /// The handshake's protocol-string length or protocol string is wrong.
    BadHandshake,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            DecodeError::FrameTooLong { len, max } => {
                write!(f, "frame of {len} bytes exceeds the limit of {max}")
            }
            DecodeError::BadLength { id, len } => {
                write!(f, "message id {id} has invalid length {len}")
            }
            DecodeError::BadHandshake => write!(f, "not a BitTorrent protocol handshake"),
        }
    }
}

impl std::error::Error for DecodeError {}
