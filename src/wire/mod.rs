//! The BEP 3 peer wire: bytes <-> handshake and messages (pure, no I/O).
//!
//! Socket bytes land in a [`RecvBuf`]; [`Handshake::decode`] and
//! [`decode_frame`] borrow from its unread bytes, so a `piece` message's data
//! is a slice of the receive buffer and the engine copies it exactly once,
//! into its cache. Outgoing messages are encoded straight onto a [`SendBuf`].
//!
//! # Framing rules
//! - Incremental: `Ok(None)` means "need more bytes" and consumes nothing.
//! - Bounded: a length prefix above the limit ([`MAX_FRAME`]) is refused from
//!   its four bytes alone, and a length that does not suit its message id
//!   from five bytes, before any body is buffered. Nothing is allocated from
//!   a peer-supplied length; the receive buffer grows (to at most
//!   `MAX_FRAME + 4`) only after the decoder has accepted the prefix.
//! - Never panics on any input; errors are the `Copy` [`DecodeError`].
//!
//! # `RecvBuf` cursors
//! ```text
//!  0            start                     end               capacity
//!  ├────────────┼─────────────────────────┼─────────────────┤
//!  │  consumed  │  unread = data()        │  free tail      │
//!  └────────────┴─────────────────────────┴─────────────────┘
//!                consume(n): start += n    read_from(): end += bytes read
//!
//!  compaction (before a read when the tail is small, or in reserve_frame):
//!  ├─────────────────────────┼──────────────────────────────────────┤
//!  0 = start                 end
//! ```
//! Invariants, checked by `check_invariants()`:
//! - `0 <= start <= end <= capacity`;
//! - empty means both cursors are 0 (`consume` resets them, so a drained
//!   buffer never needs compacting);
//! - `MIN_RECV_CAPACITY <= capacity <= MAX_FRAME + 4`; the capacity changes
//!   only in `reserve_frame` (up) and `shrink_if_empty` (down).
//!
//! `SendBuf` is the mirror image: `[pos, len)` is queued, appends go at the
//! back, writes drain from `pos`, and it resets/compacts as it drains.
//!
//! # A read turn
//! ```
//! use piecemeal::wire::{decode_frame, frame_len_hint, Message, RecvBuf, MAX_FRAME};
//!
//! let mut wire = Vec::new();
//! Message::Have { piece: 3 }.encode(&mut wire);
//! Message::Piece { piece: 3, begin: 0, data: &[7; 100] }.encode(&mut wire);
//! let mut socket = &wire[..];
//!
//! let mut rb = RecvBuf::new(64); // too small for the piece: it grows on request
//! let mut blocks = 0;
//! while rb.read_from(&mut socket)? > 0 {
//!     loop {
//!         match decode_frame(rb.data(), MAX_FRAME)? {
//!             Some((msg, used)) => {
//!                 if let Message::Piece { data, .. } = msg {
//!                     blocks += data.len(); // the one copy would happen here
//!                 }
//!                 rb.consume(used);
//!             }
//!             None => {
//!                 if let Some(total) = frame_len_hint(rb.data()) {
//!                     rb.reserve_frame(total);
//!                 }
//!                 break;
//!             }
//!         }
//!     }
//! }
//! assert_eq!(blocks, 100);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

mod error;
mod handshake;
mod message;
mod recv_buf;
mod send_buf;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests may panic
pub(crate) mod tests;

pub use error::DecodeError;
pub use handshake::{DHT_BIT, HANDSHAKE_LEN, Handshake, OUR_RESERVED};
pub use message::{
    EXTENDED_ID, MAX_FRAME, Message, PIECE_HEADER_LEN, decode_frame, encode_piece_header,
    frame_len_hint, piece_header,
};
pub use recv_buf::{MAX_RECV_CAPACITY, MIN_RECV_CAPACITY, RecvBuf};
pub use send_buf::SendBuf;
