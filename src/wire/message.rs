//! BEP 3 length-prefixed messages: `len:u32be id:u8 payload[len-1]`, and
//! `len = 0` for keep-alive.

#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

use super::DecodeError;

/// Largest frame length (the value of the prefix, excluding the prefix itself)
/// we accept: 1 MiB, room for the bitfield of a torrent with about 8 million
/// pieces, and far more than a 16 KiB block plus its 9-byte header.
pub const MAX_FRAME: u32 = 1 << 20;

/// Message ids from BEP 3 (`port` from BEP 5, 13–17 from BEP 6).
mod id {
    pub const CHOKE: u8 = 0;
    pub const UNCHOKE: u8 = 1;
    pub const INTERESTED: u8 = 2;
    pub const NOT_INTERESTED: u8 = 3;
    pub const HAVE: u8 = 4;
    pub const BITFIELD: u8 = 5;
    pub const REQUEST: u8 = 6;
    pub const PIECE: u8 = 7;
    pub const CANCEL: u8 = 8;
    pub const PORT: u8 = 9;
    pub const SUGGEST: u8 = 0x0d;
    pub const HAVE_ALL: u8 = 0x0e;
    pub const HAVE_NONE: u8 = 0x0f;
    pub const REJECT: u8 = 0x10;
    pub const ALLOWED_FAST: u8 = 0x11;
}

/// The extension protocol's message id (BEP 10); extended message 0 inside
/// it is the extension handshake.
pub const EXTENDED_ID: u8 = 20;

/// Bytes in the `piece` header after the id: index and begin.
const PIECE_HEADER: u32 = 8;

/// One peer-wire message, borrowing its variable-length payload from the
/// receive buffer it was decoded from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// Zero-length frame; keeps the connection open.
    KeepAlive,
    /// The sender will not serve our requests.
    Choke,
    /// The sender will serve our requests.
    Unchoke,
    /// The sender wants pieces we have.
    Interested,
    /// The sender wants nothing from us.
    NotInterested,
    /// The sender has completed (and verified) `piece`.
    Have {
        /// Piece index (not yet checked against the torrent).
        piece: u32,
    },
    /// The sender's pieces, high bit of byte 0 first. Unvalidated: check it
    /// with `Bitfield::from_wire` against the piece count.
    Bitfield(&'a [u8]),
    /// Ask for `len` bytes at `begin` inside `piece`.
    Request {
        /// Piece index.
        piece: u32,
        /// Byte offset inside the piece.
        begin: u32,
        /// Number of bytes.
        len: u32,
    },
    /// Block data: `data` at `begin` inside `piece`. `data` points into the
    /// receive buffer; copy it once into its final place.
    Piece {
        /// Piece index.
        piece: u32,
        /// Byte offset inside the piece.
        begin: u32,
        /// The block's bytes.
        data: &'a [u8],
    },
    /// Withdraw an earlier `Request` with the same fields.
    Cancel {
        /// Piece index.
        piece: u32,
        /// Byte offset inside the piece.
        begin: u32,
        /// Number of bytes.
        len: u32,
    },
    /// The sender's DHT port (BEP 5).
    Port(u16),
    /// Fast extension (BEP 6): the sender suggests we download `piece`.
    Suggest {
        /// Piece index (not yet checked against the torrent).
        piece: u32,
    },
    /// Fast extension: the sender has every piece (in place of a bitfield).
    HaveAll,
    /// Fast extension: the sender has no piece (in place of a bitfield).
    HaveNone,
    /// Fast extension: the sender will not serve this earlier `Request`.
    Reject {
        /// Piece index.
        piece: u32,
        /// Byte offset inside the piece.
        begin: u32,
        /// Number of bytes.
        len: u32,
    },
    /// Fast extension: the sender serves requests for `piece` even while it
    /// chokes us.
    AllowedFast {
        /// Piece index (not yet checked against the torrent).
        piece: u32,
    },
    /// Any other id, e.g. extension messages (id 20, BEP 10); the engine
    /// hands them to the extension layer or ignores them.
    Unknown {
        /// The message id.
        id: u8,
        /// Everything after the id byte.
        payload: &'a [u8],
    },
}

/// Total bytes (prefix included) of the frame at the start of `buf`, once its
/// 4-byte length prefix is visible; `None` before that.
///
/// When [`decode_frame`] says "need more bytes" and this exceeds the receive
/// buffer's capacity, grow the buffer (`RecvBuf::reserve_frame`) so one big
/// but allowed frame can fit. The value is unchecked against any maximum:
/// [`decode_frame`] has already refused a frame that is too long.
pub fn frame_len_hint(buf: &[u8]) -> Option<usize> {
    let len = be_u32(buf, 0)?;
    usize::try_from(len).ok()?.checked_add(4)
}

/// Decode the frame at the start of `buf`.
///
/// Returns `Ok(None)` when more bytes are needed (nothing is consumed), or the
/// message with the number of bytes it used. Checks, in order and as soon as
/// the bytes are visible:
/// 1. the length prefix against `max_frame` (4 bytes are enough to refuse),
/// 2. the length against the id's rules (5 bytes are enough): fixed-size
///    messages must have exactly their size, `piece` at least its header,
/// 3. only then waits for the body.
pub fn decode_frame(
    buf: &[u8],
    max_frame: u32,
) -> Result<Option<(Message<'_>, usize)>, DecodeError> {
    let Some(len) = be_u32(buf, 0) else {
        return Ok(None);
    };
    if len > max_frame {
        return Err(DecodeError::FrameTooLong {
            len,
            max: max_frame,
        });
    }
    if len == 0 {
        return Ok(Some((Message::KeepAlive, 4)));
    }
    let Some(&id) = buf.get(4) else {
        return Ok(None);
    };
    check_len(id, len)?;
    let total = usize::try_from(len)
        .ok()
        .and_then(|l| l.checked_add(4))
        .ok_or(DecodeError::FrameTooLong {
            len,
            max: max_frame,
        })?;
    let Some(payload) = buf.get(5..total) else {
        return Ok(None);
    };
    let msg = parse_payload(id, payload).ok_or(DecodeError::BadLength { id, len })?;
    Ok(Some((msg, total)))
}

/// Is `len` (id byte plus payload) a legal length for message `id`?
fn check_len(id: u8, len: u32) -> Result<(), DecodeError> {
    let ok = match id {
        id::CHOKE | id::UNCHOKE | id::INTERESTED | id::NOT_INTERESTED => len == 1,
        id::HAVE | id::SUGGEST | id::ALLOWED_FAST => len == 5,
        id::HAVE_ALL | id::HAVE_NONE => len == 1,
        id::REQUEST | id::CANCEL | id::REJECT => len == 13,
        id::PIECE => len > PIECE_HEADER,
        id::PORT => len == 3,
        // Bitfield and unknown messages: any length up to the frame limit.
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(DecodeError::BadLength { id, len })
    }
}

/// Parse a payload whose length [`check_len`] accepted. `None` only if the
/// two disagree (which they should not); never panics.
fn parse_payload(id: u8, p: &[u8]) -> Option<Message<'_>> {
    Some(match id {
        id::CHOKE => Message::Choke,
        id::UNCHOKE => Message::Unchoke,
        id::INTERESTED => Message::Interested,
        id::NOT_INTERESTED => Message::NotInterested,
        id::HAVE => Message::Have {
            piece: be_u32(p, 0)?,
        },
        id::BITFIELD => Message::Bitfield(p),
        id::REQUEST => Message::Request {
            piece: be_u32(p, 0)?,
            begin: be_u32(p, 4)?,
            len: be_u32(p, 8)?,
        },
        id::PIECE => Message::Piece {
            piece: be_u32(p, 0)?,
            begin: be_u32(p, 4)?,
            data: p.get(8..)?,
        },
        id::CANCEL => Message::Cancel {
            piece: be_u32(p, 0)?,
            begin: be_u32(p, 4)?,
            len: be_u32(p, 8)?,
        },
        id::PORT => Message::Port(u16::from_be_bytes(p.get(..2)?.try_into().ok()?)),
        id::SUGGEST => Message::Suggest {
            piece: be_u32(p, 0)?,
        },
        id::HAVE_ALL => Message::HaveAll,
        id::HAVE_NONE => Message::HaveNone,
        id::REJECT => Message::Reject {
            piece: be_u32(p, 0)?,
            begin: be_u32(p, 4)?,
            len: be_u32(p, 8)?,
        },
        id::ALLOWED_FAST => Message::AllowedFast {
            piece: be_u32(p, 0)?,
        },
        id => Message::Unknown { id, payload: p },
    })
}

/// The big-endian `u32` at `at`, or `None` if `buf` is too short.
fn be_u32(buf: &[u8], at: usize) -> Option<u32> {
    let bytes = buf.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes(bytes.try_into().ok()?))
}

/// Frame length (`1 + payload`) for a payload of `payload_len` bytes.
///
/// # Panics
/// If the frame could not be described by a `u32` prefix (a payload of 4 GiB
/// or more). We only encode our own messages, which are far smaller.
fn frame_len(payload_len: usize) -> u32 {
    u32::try_from(payload_len)
        .ok()
        .and_then(|n| n.checked_add(1))
        .expect("peer-wire message payload exceeds u32::MAX - 1 bytes")
}

/// Append the length prefix and id of a frame with `payload_len` payload bytes.
fn put_header(out: &mut Vec<u8>, id: u8, payload_len: usize) {
    out.extend_from_slice(&frame_len(payload_len).to_be_bytes());
    out.push(id);
}

/// Append `piece begin len` (the body of `request` and `cancel`).
fn put_triple(out: &mut Vec<u8>, a: u32, b: u32, c: u32) {
    out.extend_from_slice(&a.to_be_bytes());
    out.extend_from_slice(&b.to_be_bytes());
    out.extend_from_slice(&c.to_be_bytes());
}

/// Append the 13-byte header of a `piece` message carrying `data_len` bytes;
/// the caller appends the data itself (e.g. straight from its read cache).
///
/// # Panics
/// If `data_len + 9` overflows `u32` (a block of almost 4 GiB).
pub fn encode_piece_header(piece: u32, begin: u32, data_len: u32, out: &mut Vec<u8>) {
    let len = data_len
        .checked_add(PIECE_HEADER + 1)
        .expect("piece message length overflows u32");
    out.extend_from_slice(&len.to_be_bytes());
    out.push(id::PIECE);
    out.extend_from_slice(&piece.to_be_bytes());
    out.extend_from_slice(&begin.to_be_bytes());
}

/// Bytes before a `piece` message's data: length prefix, id, index, begin.
pub const PIECE_HEADER_LEN: usize = 13;

/// The header of a `piece` message at the front of `buf`, once its
/// [`PIECE_HEADER_LEN`] bytes are there: `(piece, begin, data_len)`.
/// `None` for any other frame, or a header not yet whole. The frame's
/// length is not checked against a limit here: [`decode_frame`] does that.
pub fn piece_header(buf: &[u8]) -> Option<(u32, u32, u32)> {
    let h = buf.get(..PIECE_HEADER_LEN)?;
    let word = |i: usize| {
        h.get(i..i + 4)
            .and_then(|w| w.try_into().ok())
            .map(u32::from_be_bytes)
    };
    if h.get(4) != Some(&id::PIECE) {
        return None;
    }
    let data_len = word(0)?.checked_sub(PIECE_HEADER + 1)?;
    Some((word(5)?, word(9)?, data_len))
}

impl Message<'_> {
    /// Bytes this message takes on the wire, prefix included.
    pub fn encoded_len(&self) -> usize {
        4 + match *self {
            Message::KeepAlive => 0,
            Message::Choke
            | Message::Unchoke
            | Message::Interested
            | Message::NotInterested
            | Message::HaveAll
            | Message::HaveNone => 1,
            Message::Have { .. } | Message::Suggest { .. } | Message::AllowedFast { .. } => 5,
            Message::Bitfield(bits) => 1 + bits.len(),
            Message::Request { .. } | Message::Cancel { .. } | Message::Reject { .. } => 13,
            Message::Piece { data, .. } => 9 + data.len(),
            Message::Port(_) => 3,
            Message::Unknown { payload, .. } => 1 + payload.len(),
        }
    }

    /// Append this message's wire bytes to `out`.
    ///
    /// # Panics
    /// If a payload is 4 GiB or larger (cannot be framed).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.reserve(self.encoded_len());
        match *self {
            Message::KeepAlive => out.extend_from_slice(&0u32.to_be_bytes()),
            Message::Choke => put_header(out, id::CHOKE, 0),
            Message::Unchoke => put_header(out, id::UNCHOKE, 0),
            Message::Interested => put_header(out, id::INTERESTED, 0),
            Message::NotInterested => put_header(out, id::NOT_INTERESTED, 0),
            Message::Have { piece } => {
                put_header(out, id::HAVE, 4);
                out.extend_from_slice(&piece.to_be_bytes());
            }
            Message::Bitfield(bits) => {
                put_header(out, id::BITFIELD, bits.len());
                out.extend_from_slice(bits);
            }
            Message::Request { piece, begin, len } => {
                put_header(out, id::REQUEST, 12);
                put_triple(out, piece, begin, len);
            }
            Message::Piece { piece, begin, data } => {
                let data_len = frame_len(data.len()) - 1;
                encode_piece_header(piece, begin, data_len, out);
                out.extend_from_slice(data);
            }
            Message::Cancel { piece, begin, len } => {
                put_header(out, id::CANCEL, 12);
                put_triple(out, piece, begin, len);
            }
            Message::Port(port) => {
                put_header(out, id::PORT, 2);
                out.extend_from_slice(&port.to_be_bytes());
            }
            Message::Suggest { piece } => {
                put_header(out, id::SUGGEST, 4);
                out.extend_from_slice(&piece.to_be_bytes());
            }
            Message::HaveAll => put_header(out, id::HAVE_ALL, 0),
            Message::HaveNone => put_header(out, id::HAVE_NONE, 0),
            Message::Reject { piece, begin, len } => {
                put_header(out, id::REJECT, 12);
                put_triple(out, piece, begin, len);
            }
            Message::AllowedFast { piece } => {
                put_header(out, id::ALLOWED_FAST, 4);
                out.extend_from_slice(&piece.to_be_bytes());
            }
            Message::Unknown { id, payload } => {
                put_header(out, id, payload.len());
                out.extend_from_slice(payload);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests may panic
mod tests {
    use super::*;

    fn encoded(m: &Message<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        m.encode(&mut out);
        out
    }

    /// One of every message type (and a few edge values).
    fn every_kind<'a>(block: &'a [u8], bits: &'a [u8]) -> Vec<Message<'a>> {
        vec![
            Message::KeepAlive,
            Message::Choke,
            Message::Unchoke,
            Message::Interested,
            Message::NotInterested,
            Message::Have { piece: 0 },
            Message::Have { piece: u32::MAX },
            Message::Bitfield(bits),
            Message::Bitfield(&[]),
            Message::Request {
                piece: 7,
                begin: 16384,
                len: 16384,
            },
            Message::Piece {
                piece: 3,
                begin: 32768,
                data: block,
            },
            Message::Piece {
                piece: 1,
                begin: 0,
                data: &[],
            },
            Message::Cancel {
                piece: u32::MAX,
                begin: u32::MAX,
                len: u32::MAX,
            },
            Message::Port(6881),
            Message::Unknown {
                id: 20,
                payload: b"\x00d1:md11:ut_metadatai1eee",
            },
            Message::Unknown {
                id: 21,
                payload: &[],
            },
            Message::Suggest { piece: 4 },
            Message::HaveAll,
            Message::HaveNone,
            Message::Reject {
                piece: 1,
                begin: 16384,
                len: 16384,
            },
            Message::AllowedFast { piece: u32::MAX },
        ]
    }

    #[test]
    fn every_message_type_round_trips() {
        let block: Vec<u8> = (0..16384u32).map(|i| (i * 7) as u8).collect();
        let bits = [0xff, 0x0f, 0x80];
        for m in every_kind(&block, &bits) {
            let bytes = encoded(&m);
            assert_eq!(bytes.len(), m.encoded_len(), "{m:?}");
            assert_eq!(frame_len_hint(&bytes), Some(bytes.len()));
            assert_eq!(
                decode_frame(&bytes, MAX_FRAME),
                Ok(Some((m, bytes.len()))),
                "{m:?}"
            );
            // Every proper prefix asks for more bytes without consuming.
            for n in 0..bytes.len() {
                assert_eq!(decode_frame(&bytes[..n], MAX_FRAME), Ok(None));
            }
        }
    }

    #[test]
    fn known_encodings_match_bep3() {
        assert_eq!(encoded(&Message::KeepAlive), [0, 0, 0, 0]);
        assert_eq!(encoded(&Message::Interested), [0, 0, 0, 1, 2]);
        assert_eq!(
            encoded(&Message::Have { piece: 0x01020304 }),
            [0, 0, 0, 5, 4, 1, 2, 3, 4]
        );
        assert_eq!(encoded(&Message::Port(0x1ae1)), [0, 0, 0, 3, 9, 0x1a, 0xe1]);
    }

    #[test]
    fn known_encodings_match_bep6() {
        assert_eq!(encoded(&Message::HaveAll), [0, 0, 0, 1, 0x0e]);
        assert_eq!(encoded(&Message::HaveNone), [0, 0, 0, 1, 0x0f]);
        assert_eq!(
            encoded(&Message::Suggest { piece: 0x0102 }),
            [0, 0, 0, 5, 0x0d, 0, 0, 1, 2]
        );
        assert_eq!(
            encoded(&Message::AllowedFast { piece: 7 }),
            [0, 0, 0, 5, 0x11, 0, 0, 0, 7]
        );
        assert_eq!(
            encoded(&Message::Reject {
                piece: 1,
                begin: 2,
                len: 3
            }),
            [0, 0, 0, 13, 0x10, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3]
        );
    }

    #[test]
    fn piece_header_reads_back_what_encode_piece_header_wrote() {
        let mut out = Vec::new();
        encode_piece_header(7, 16384, 100, &mut out);
        assert_eq!(out.len(), PIECE_HEADER_LEN);
        assert_eq!(piece_header(&out), Some((7, 16384, 100)));
        assert_eq!(piece_header(&out[..12]), None, "not whole yet");
        // Another frame, or a length too short for a piece, is not one.
        let mut have = Vec::new();
        Message::Have { piece: 1 }.encode(&mut have);
        have.extend_from_slice(&[0; 8]);
        assert_eq!(piece_header(&have), None);
        let mut short = out.clone();
        short[..4].copy_from_slice(&8u32.to_be_bytes());
        assert_eq!(piece_header(&short), None);
    }

    #[test]
    fn piece_header_plus_data_equals_piece_message() {
        let data = [9u8; 100];
        let mut out = Vec::new();
        encode_piece_header(5, 200, 100, &mut out);
        assert_eq!(out.len(), 13);
        out.extend_from_slice(&data);
        let m = Message::Piece {
            piece: 5,
            begin: 200,
            data: &data,
        };
        assert_eq!(out, encoded(&m));
    }

    #[test]
    fn piece_data_borrows_from_the_input() {
        let mut bytes = Vec::new();
        encode_piece_header(0, 0, 4, &mut bytes);
        bytes.extend_from_slice(b"abcd");
        let Ok(Some((Message::Piece { data, .. }, 17))) = decode_frame(&bytes, MAX_FRAME) else {
            panic!("not a piece");
        };
        assert_eq!(data.as_ptr(), bytes[13..].as_ptr());
    }

    #[test]
    fn oversized_prefix_fails_from_the_prefix_alone() {
        let huge = [0xff, 0xff, 0xff, 0xff];
        assert_eq!(
            decode_frame(&huge, MAX_FRAME),
            Err(DecodeError::FrameTooLong {
                len: u32::MAX,
                max: MAX_FRAME
            })
        );
        let just_over = (MAX_FRAME + 1).to_be_bytes();
        assert_eq!(
            decode_frame(&just_over, MAX_FRAME),
            Err(DecodeError::FrameTooLong {
                len: MAX_FRAME + 1,
                max: MAX_FRAME
            })
        );
        // Exactly the maximum is allowed: it waits for the body.
        assert_eq!(decode_frame(&MAX_FRAME.to_be_bytes(), MAX_FRAME), Ok(None));
        assert_eq!(frame_len_hint(&huge), Some(u32::MAX as usize + 4));
    }

    #[test]
    fn smaller_limit_is_honoured() {
        let bytes = encoded(&Message::Bitfield(&[0; 32]));
        assert_eq!(
            decode_frame(&bytes[..4], 16),
            Err(DecodeError::FrameTooLong { len: 33, max: 16 })
        );
    }

    #[test]
    fn wrong_fixed_lengths_are_bad_length_from_five_bytes() {
        let cases: &[(u32, u8)] = &[
            (4, 4),   // have with 3 payload bytes
            (6, 4),   // have with 5
            (12, 6),  // request with 11
            (14, 6),  // request with 13
            (12, 8),  // cancel short
            (2, 0),   // choke with a payload byte
            (5, 1),   // unchoke with payload
            (2, 2),   // interested with payload
            (9, 3),   // not interested with payload
            (2, 9),   // port short
            (4, 9),   // port long
            (8, 7),   // piece whose header is cut short
            (1, 7),   // piece with no header at all
            (4, 13),  // suggest short
            (6, 17),  // allowed fast long
            (2, 14),  // have all with a payload byte
            (5, 15),  // have none with a payload
            (12, 16), // reject short
            (14, 16), // reject long
        ];
        for &(len, id) in cases {
            let mut bytes = len.to_be_bytes().to_vec();
            bytes.push(id);
            let want = Err(DecodeError::BadLength { id, len });
            // Refused from the prefix and id alone, and with the body present.
            assert_eq!(decode_frame(&bytes, MAX_FRAME), want, "id {id} len {len}");
            bytes.resize(4 + len as usize, 0);
            assert_eq!(decode_frame(&bytes, MAX_FRAME), want, "id {id} len {len}");
        }
    }

    #[test]
    fn keep_alive_consumes_only_its_prefix() {
        let bytes = [0, 0, 0, 0, 0, 0, 0, 1, 0];
        assert_eq!(
            decode_frame(&bytes, MAX_FRAME),
            Ok(Some((Message::KeepAlive, 4)))
        );
        assert_eq!(
            decode_frame(&bytes[4..], MAX_FRAME),
            Ok(Some((Message::Choke, 5)))
        );
    }

    #[test]
    fn errors_display_their_numbers() {
        let e = DecodeError::BadLength { id: 4, len: 4 };
        assert_eq!(e.to_string(), "message id 4 has invalid length 4");
        let e = DecodeError::FrameTooLong { len: 5, max: 4 };
        assert!(e.to_string().contains("5") && e.to_string().contains("4"));
    }
}
