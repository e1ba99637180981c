//! The `ut_metadata` extension (BEP 9): the raw `info` dictionary, sent in
//! 16 KiB pieces over BEP 10 extended messages. This module is the message
//! codec only; the torrent answers requests (`torrent/metadata.rs`).
//!
//! A message is a bencoded dictionary (`msg_type`, `piece`, and for `data`
//! `total_size`) followed, for `data`, by the piece's bytes.
//!
//! Bounds: the dictionary is decoded with the tracker-body limits; metadata
//! larger than [`MAX_METADATA_LEN`] (the `.torrent` limit) is never offered
//! or accepted.

#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

use crate::bencode::{self, Limits, Writer};

/// The extension's name in the BEP 10 `m` dictionary.
pub const NAME: &str = "ut_metadata";

/// Bytes per metadata piece (the last may be shorter).
pub const PIECE_LEN: usize = 16 * 1024;

/// Largest metadata offered or accepted: the `.torrent` file limit.
pub const MAX_METADATA_LEN: usize = bencode::MAX_TORRENT_LEN;

/// How many pieces `len` bytes of metadata make.
pub const fn num_pieces(len: usize) -> usize {
    len.div_ceil(PIECE_LEN)
}

/// One `ut_metadata` message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Msg<'a> {
    /// `msg_type` 0: send me piece `piece`.
    Request { piece: u32 },
    /// `msg_type` 1: piece `piece` of metadata `total_size` bytes long.
    Data {
        piece: u32,
        total_size: u64,
        data: &'a [u8],
    },
    /// `msg_type` 2: the peer will not send piece `piece`.
    Reject { piece: u32 },
}

impl<'a> Msg<'a> {
    /// Read a message (the payload after the extended message id). `None`
    /// for anything malformed or of an unknown `msg_type` (BEP 9: ignored).
    pub fn parse(payload: &'a [u8]) -> Option<Msg<'a>> {
        #[derive(serde::Deserialize)]
        struct Raw {
            msg_type: i64,
            piece: i64,
            total_size: Option<i64>,
        }
        let end = bencode::value_len(payload)?;
        let (dict, rest) = payload.split_at_checked(end)?;
        bencode::validate_dict(dict, &Limits::TRACKER).ok()?;
        let raw: Raw = bencode::decode(dict, &Limits::TRACKER).ok()?;
        let piece = u32::try_from(raw.piece).ok()?;
        match raw.msg_type {
            0 if rest.is_empty() => Some(Msg::Request { piece }),
            1 => Some(Msg::Data {
                piece,
                total_size: u64::try_from(raw.total_size?).ok()?,
                data: rest,
            }),
            2 if rest.is_empty() => Some(Msg::Reject { piece }),
            _ => None,
        }
    }

    /// Append the message as a whole extended frame, sent with the peer's
    /// id for `ut_metadata`.
    pub fn encode(&self, peer_id: u8, out: &mut Vec<u8>) {
        let mut w = Writer::new();
        let data: &[u8] = match *self {
            Msg::Request { piece } => {
                w.dict()
                    .str("msg_type")
                    .int(0)
                    .str("piece")
                    .int(i64::from(piece));
                &[]
            }
            Msg::Data {
                piece,
                total_size,
                data,
            } => {
                w.dict()
                    .str("msg_type")
                    .int(1)
                    .str("piece")
                    .int(i64::from(piece))
                    .str("total_size")
                    .int(i64::try_from(total_size).unwrap_or(i64::MAX));
                data
            }
            Msg::Reject { piece } => {
                w.dict()
                    .str("msg_type")
                    .int(2)
                    .str("piece")
                    .int(i64::from(piece));
                &[]
            }
        };
        w.end();
        crate::extension::put_frame(peer_id, &w.finish(), data, out);
    }
}

/// Piece `piece` of `metadata`, if it exists.
pub fn piece_of(metadata: &[u8], piece: u32) -> Option<&[u8]> {
    let start = usize::try_from(piece).ok()?.checked_mul(PIECE_LEN)?;
    if start >= metadata.len() {
        return None;
    }
    metadata.get(start..metadata.len().min(start + PIECE_LEN))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::wire::{self, Message};

    fn frame_payload(out: &[u8]) -> (u8, &[u8]) {
        let (msg, n) = wire::decode_frame(out, wire::MAX_FRAME).unwrap().unwrap();
        assert_eq!(n, out.len());
        let Message::Unknown { id: 20, payload } = msg else {
            panic!("{msg:?}")
        };
        (payload[0], &payload[1..])
    }

    #[test]
    fn messages_round_trip_with_the_peers_id() {
        let data = [7u8; 100];
        for m in [
            Msg::Request { piece: 3 },
            Msg::Data {
                piece: 1,
                total_size: 16484,
                data: &data,
            },
            Msg::Reject { piece: 9 },
        ] {
            let mut out = Vec::new();
            m.encode(5, &mut out);
            let (id, payload) = frame_payload(&out);
            assert_eq!(id, 5);
            assert_eq!(Msg::parse(payload), Some(m));
        }
        let mut out = Vec::new();
        Msg::Request { piece: 0 }.encode(3, &mut out);
        assert_eq!(frame_payload(&out).1, b"d8:msg_typei0e5:piecei0ee");
    }

    #[test]
    fn malformed_messages_are_ignored() {
        for bad in [
            &b""[..],
            b"d8:msg_typei0ee",                        // no piece
            b"d8:msg_typei0e5:piecei-1ee",             // negative piece
            b"d8:msg_typei7e5:piecei0ee",              // unknown type
            b"d8:msg_typei1e5:piecei0ee",              // data without total_size
            b"d8:msg_typei0e5:piecei0eextra",          // trailing bytes on a request
            b"d8:msg_typei0e5:piecei0e",               // truncated
            b"d5:piecei0e8:msg_typei0e8:msg_typei0ee", // duplicate key
            b"l8:msg_typei0ee",
        ] {
            assert_eq!(Msg::parse(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn pieces_are_16_kib_and_the_last_is_short() {
        let meta = vec![1u8; PIECE_LEN * 2 + 10];
        assert_eq!(num_pieces(meta.len()), 3);
        assert_eq!(piece_of(&meta, 0).unwrap().len(), PIECE_LEN);
        assert_eq!(piece_of(&meta, 2).unwrap().len(), 10);
        assert_eq!(piece_of(&meta, 3), None);
        assert_eq!(piece_of(&meta, u32::MAX), None);
        assert_eq!(num_pieces(PIECE_LEN), 1);
    }
}
