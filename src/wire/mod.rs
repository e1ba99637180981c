//! The BEP 3 peer wire protocol: bytes <-> frames, pure and bounded.
//!
//! Bytes from a socket land in a [`RecvBuf`]; [`decode_frame`] borrows the
//! next complete frame from it without copying (a piece message's payload is
//! a slice into the buffer, copied exactly once, into the piece cache).
//!
//! ```text
//!  RecvBuf:  [ consumed | unread frames ...      | free tail          ]
//!            0        start                      end                 cap
//!  invariants: start <= end <= buf.len(); when start == end both are 0
//! ```
//!
//! Every length prefix is checked against [`MAX_FRAME`] as soon as its four
//! bytes are visible, before anything is buffered for it; fixed-size
//! messages must have exactly their size. Nothing here panics on input.

mod handshake;
mod message;
mod recv_buf;
mod send_buf;

pub use handshake::{HANDSHAKE_LEN, Handshake};
pub use message::{MAX_FRAME, Message, decode_frame, encode_piece_header, frame_len_hint};
pub use recv_buf::RecvBuf;
pub use send_buf::SendBuf;

/// Why bytes from a peer are not a valid frame. `Copy` and allocation free.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The length prefix is above the limit.
    FrameTooLong { len: u32, max: u32 },
    /// A message whose length does not fit its id.
    BadLength { id: u8, len: u32 },
    /// The handshake's protocol string is not "BitTorrent protocol".
    BadHandshake,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::FrameTooLong { len, max } => {
                write!(f, "frame of {len} bytes exceeds the {max}-byte limit")
            }
            DecodeError::BadLength { id, len } => {
                write!(f, "message id {id} with wrong length {len}")
            }
            DecodeError::BadHandshake => write!(f, "not a BitTorrent handshake"),
        }
    }
}

impl std::error::Error for DecodeError {}

#[cfg(test)]
mod tests;
