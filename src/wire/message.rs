//! Length-prefixed messages: `len:u32be [id:u8 payload]`.

use super::DecodeError;

/// The largest frame (length prefix value) we accept: a bitfield for 8M
/// pieces, or a piece message of up to 1 MiB.
pub const MAX_FRAME: u32 = 1 << 20;

/// One peer wire message. Payload slices borrow the receive buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message<'a> {
    KeepAlive,
    Choke,
    Unchoke,
    Interested,
    NotInterested,
    Have { piece: u32 },
    Bitfield(&'a [u8]),
    Request { piece: u32, begin: u32, len: u32 },
    Piece { piece: u32, begin: u32, data: &'a [u8] },
    Cancel { piece: u32, begin: u32, len: u32 },
    /// BEP 5 DHT port; we do not run DHT and ignore it.
    Port(u16),
    /// Any other id (extension messages...), ignored by the engine.
    Unknown { id: u8, payload: &'a [u8] },
}

fn be32(b: &[u8], at: usize) -> u32 {
    match b.get(at..at + 4) {
        Some(s) => u32::from_be_bytes([s[0], s[1], s[2], s[3]]),
        None => 0,
    }
}

/// Total bytes (prefix included) the next frame needs, once its length
/// prefix is visible, so the buffer can make room for a large frame.
pub fn frame_len_hint(buf: &[u8]) -> Option<usize> {
    let p = buf.get(..4)?;
    let len = u32::from_be_bytes([p[0], p[1], p[2], p[3]]);
    Some(4 + len as usize)
}

/// Decode the frame at the start of `buf`: `Ok(None)` if it is not all
/// there yet, else the message and the bytes it took. The length prefix is
/// checked against `max_frame` from its four bytes alone.
pub fn decode_frame(buf: &[u8], max_frame: u32) -> Result<Option<(Message<'_>, usize)>, DecodeError> {
    let Some(p) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([p[0], p[1], p[2], p[3]]);
    if len > max_frame {
        return Err(DecodeError::FrameTooLong { len, max: max_frame });
    }
    if len == 0 {
        return Ok(Some((Message::KeepAlive, 4)));
    }
    let total = 4 + len as usize;
    // The id is visible before the body: check fixed sizes early too.
    if let Some(&id) = buf.get(4) {
        let fixed = match id {
            0..=3 => Some(1),
            4 => Some(5),
            6 | 8 => Some(13),
            9 => Some(3),
            _ => None,
        };
        if fixed.is_some_and(|f| f != len) || (id == 7 && len < 9) {
            return Err(DecodeError::BadLength { id, len });
        }
    }
    let Some(frame) = buf.get(4..total) else {
        return Ok(None);
    };
    let (id, body) = match frame.split_first() {
        Some((&id, body)) => (id, body),
        None => return Ok(None),
    };
    let msg = match id {
        0 => Message::Choke,
        1 => Message::Unchoke,
        2 => Message::Interested,
        3 => Message::NotInterested,
        4 => Message::Have { piece: be32(body, 0) },
        5 => Message::Bitfield(body),
        6 => Message::Request {
            piece: be32(body, 0),
            begin: be32(body, 4),
            len: be32(body, 8),
        },
        7 => Message::Piece {
            piece: be32(body, 0),
            begin: be32(body, 4),
            data: body.get(8..).unwrap_or(&[]),
        },
        8 => Message::Cancel {
            piece: be32(body, 0),
            begin: be32(body, 4),
            len: be32(body, 8),
        },
        9 => Message::Port(match body {
            [a, b] => u16::from_be_bytes([*a, *b]),
            _ => 0,
        }),
        _ => Message::Unknown { id, payload: body },
    };
    Ok(Some((msg, total)))
}

/// Append the 13-byte header of a piece message whose `data_len` bytes of
/// data the caller appends next.
pub fn encode_piece_header(piece: u32, begin: u32, data_len: u32, out: &mut Vec<u8>) {
    out.extend_from_slice(&(9 + data_len).to_be_bytes());
    out.push(7);
    out.extend_from_slice(&piece.to_be_bytes());
    out.extend_from_slice(&begin.to_be_bytes());
}

impl Message<'_> {
    /// Append the framed message.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let simple = |out: &mut Vec<u8>, id: u8| {
            out.extend_from_slice(&1u32.to_be_bytes());
            out.push(id);
        };
        let three = |out: &mut Vec<u8>, id: u8, a: u32, b: u32, c: u32| {
            out.extend_from_slice(&13u32.to_be_bytes());
            out.push(id);
            out.extend_from_slice(&a.to_be_bytes());
            out.extend_from_slice(&b.to_be_bytes());
            out.extend_from_slice(&c.to_be_bytes());
        };
        match *self {
            Message::KeepAlive => out.extend_from_slice(&[0; 4]),
            Message::Choke => simple(out, 0),
            Message::Unchoke => simple(out, 1),
            Message::Interested => simple(out, 2),
            Message::NotInterested => simple(out, 3),
            Message::Have { piece } => {
                out.extend_from_slice(&5u32.to_be_bytes());
                out.push(4);
                out.extend_from_slice(&piece.to_be_bytes());
            }
            Message::Bitfield(b) => {
                out.extend_from_slice(&(1 + b.len() as u32).to_be_bytes());
                out.push(5);
                out.extend_from_slice(b);
            }
            Message::Request { piece, begin, len } => three(out, 6, piece, begin, len),
            Message::Piece { piece, begin, data } => {
                encode_piece_header(piece, begin, data.len() as u32, out);
                out.extend_from_slice(data);
            }
            Message::Cancel { piece, begin, len } => three(out, 8, piece, begin, len),
            Message::Port(p) => {
                out.extend_from_slice(&3u32.to_be_bytes());
                out.push(9);
                out.extend_from_slice(&p.to_be_bytes());
            }
            Message::Unknown { id, payload } => {
                out.extend_from_slice(&(1 + payload.len() as u32).to_be_bytes());
                out.push(id);
                out.extend_from_slice(payload);
            }
        }
    }
}
