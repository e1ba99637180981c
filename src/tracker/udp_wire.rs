//! BEP 15 datagrams, both directions: fixed big-endian layouts, encoded
//! into arrays and decoded from borrowed slices without allocating.
//!
//! ```text
//! connect request    16 B  protocol id (0x41727101980) | action 0 | txn
//! connect response   16 B  action 0 | txn | connection id
//! announce request   98 B  connection id | action 1 | txn | info_hash | peer_id
//!                          | downloaded | left | uploaded | event | ip | key
//!                          | num_want | port                 (BEP 41 options may follow)
//! announce response  20 B + 6 or 18 B a peer  action 1 | txn | interval | leechers
//!                          | seeders | peers (by the address family of the socket)
//! scrape request     16 B + 20 B a hash       connection id | action 2 | txn | hashes
//! scrape response    8 B + 12 B a hash        action 2 | txn | (seeders, completed, leechers)…
//! error response     8 B + message            action 3 | txn | text
//! ```
//!
//! Decoding checks every length against the layout before reading a field:
//! a datagram that is shorter, longer (where the layout is fixed) or not a
//! whole number of records is a [`UdpDecodeError`], never a partial answer.

#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

use std::fmt;

use super::{AnnounceParams, Event};

/// The magic constant of a connect request.
pub const PROTOCOL_ID: u64 = 0x0417_2710_1980;
/// `action` values.
pub const ACTION_CONNECT: u32 = 0;
pub const ACTION_ANNOUNCE: u32 = 1;
pub const ACTION_SCRAPE: u32 = 2;
pub const ACTION_ERROR: u32 = 3;
/// Length of a connect request and of a connect response.
pub const CONNECT_LEN: usize = 16;
/// Length of an announce request (without BEP 41 options).
pub const ANNOUNCE_REQUEST_LEN: usize = 98;
/// Length of an announce response before its peers.
pub const ANNOUNCE_RESPONSE_HEAD: usize = 20;
/// Length of a scrape request before its info-hashes.
pub const SCRAPE_REQUEST_HEAD: usize = 16;
/// Length of a scrape response before its records.
pub const SCRAPE_RESPONSE_HEAD: usize = 8;
/// Most info-hashes in one scrape (what fits in a common MTU, as BEP 15
/// says).
pub const MAX_SCRAPE_HASHES: usize = 74;
/// Largest answer the client accepts: an announce with 454 IPv6 or 1,362
/// IPv4 peers (trackers send at most a few hundred). Longer is dropped.
pub const MAX_RESPONSE_LEN: usize = 8192;
/// Largest request the built-in tracker reads: a scrape of
/// [`MAX_SCRAPE_HASHES`] is 1,496 bytes; an announce with BEP 41 options
/// a few hundred. Longer is dropped.
pub const MAX_REQUEST_LEN: usize = 2048;
/// Longest error text kept from (or sent in) an `error` datagram.
pub const MAX_ERROR_TEXT: usize = 256;

/// Why a datagram was not understood. `Copy`, allocation free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UdpDecodeError {
    /// Shorter than its layout.
    Short,
    /// Longer than its layout, or than the cap of its direction.
    Long,
    /// A variable part that is not a whole number of records.
    Ragged,
    /// An `action` not valid in this direction.
    Action(u32),
    /// A connect request without the protocol id.
    ProtocolId,
    /// An announce `event` outside 0–3.
    Event(u32),
}

impl fmt::Display for UdpDecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UdpDecodeError::Short => f.write_str("datagram too short"),
            UdpDecodeError::Long => f.write_str("datagram too long"),
            UdpDecodeError::Ragged => f.write_str("datagram is not a whole number of records"),
            UdpDecodeError::Action(a) => write!(f, "unexpected action {a}"),
            UdpDecodeError::ProtocolId => f.write_str("connect request without the protocol id"),
            UdpDecodeError::Event(e) => write!(f, "bad event {e}"),
        }
    }
}

impl std::error::Error for UdpDecodeError {}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(*b.get(at..)?.first_chunk::<4>()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(*b.get(at..)?.first_chunk::<8>()?))
}

fn hash_at(b: &[u8], at: usize) -> Option<[u8; 20]> {
    Some(*b.get(at..)?.first_chunk::<20>()?)
}

/// The BEP 15 number of an announce event.
pub fn event_code(e: Event) -> u32 {
    match e {
        Event::None => 0,
        Event::Completed => 1,
        Event::Started => 2,
        Event::Stopped => 3,
    }
}

fn event_from_code(c: u32) -> Option<Event> {
    match c {
        0 => Some(Event::None),
        1 => Some(Event::Completed),
        2 => Some(Event::Started),
        3 => Some(Event::Stopped),
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// Client → tracker

/// A connect request.
pub fn connect_request(txn: u32) -> [u8; CONNECT_LEN] {
    let mut b = [0u8; CONNECT_LEN];
    let (id, rest) = b.split_at_mut(8);
    id.copy_from_slice(&PROTOCOL_ID.to_be_bytes());
    let (action, t) = rest.split_at_mut(4);
    action.copy_from_slice(&ACTION_CONNECT.to_be_bytes());
    t.copy_from_slice(&txn.to_be_bytes());
    b
}

/// Writes big-endian fields one after the other into a fixed buffer.
struct Put<'a>(&'a mut [u8]);

impl Put<'_> {
    fn bytes(&mut self, v: &[u8]) -> &mut Self {
        let buf = std::mem::take(&mut self.0);
        let (head, tail) = buf.split_at_mut(v.len().min(buf.len()));
        head.copy_from_slice(v.get(..head.len()).unwrap_or_default());
        self.0 = tail;
        self
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes(&v.to_be_bytes())
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes(&v.to_be_bytes())
    }
}

/// An announce request. `numwant` is sent as is (the tracker's default
/// when it is `u32::MAX`, i.e. -1); the IP field is 0 (the tracker uses
/// the datagram's source).
pub fn announce_request(conn_id: u64, txn: u32, p: &AnnounceParams) -> [u8; ANNOUNCE_REQUEST_LEN] {
    let mut b = [0u8; ANNOUNCE_REQUEST_LEN];
    Put(&mut b)
        .u64(conn_id)
        .u32(ACTION_ANNOUNCE)
        .u32(txn)
        .bytes(&p.info_hash)
        .bytes(&p.peer_id)
        .u64(p.downloaded)
        .u64(p.left)
        .u64(p.uploaded)
        .u32(event_code(p.event))
        .u32(0)
        .u32(p.key)
        .u32(p.numwant)
        .bytes(&p.port.to_be_bytes());
    b
}

/// A scrape request for at most [`MAX_SCRAPE_HASHES`] info-hashes (the
/// rest are left out).
pub fn scrape_request(conn_id: u64, txn: u32, hashes: &[[u8; 20]]) -> Vec<u8> {
    let hashes = hashes.get(..MAX_SCRAPE_HASHES).unwrap_or(hashes);
    let mut b = Vec::with_capacity(SCRAPE_REQUEST_HEAD + 20 * hashes.len());
    b.extend_from_slice(&conn_id.to_be_bytes());
    b.extend_from_slice(&ACTION_SCRAPE.to_be_bytes());
    b.extend_from_slice(&txn.to_be_bytes());
    for h in hashes {
        b.extend_from_slice(h);
    }
    b
}

/// A tracker's answer, as far as its layout goes (the client checks that
/// it is the answer it waits for).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UdpResponse<'a> {
    Connect {
        txn: u32,
        conn_id: u64,
    },
    Announce {
        txn: u32,
        interval: u32,
        leechers: u32,
        seeders: u32,
        /// Compact peers; their record size depends on the socket's
        /// address family, which only the client knows.
        peers: &'a [u8],
    },
    Scrape {
        txn: u32,
        /// Records of 12 bytes (seeders, completed, leechers), in the
        /// order of the request; a whole number of them.
        records: &'a [u8],
    },
    Error {
        txn: u32,
        /// The message, raw (make it printable before showing it).
        message: &'a [u8],
    },
}

impl UdpResponse<'_> {
    /// The transaction id it answers.
    pub fn txn(&self) -> u32 {
        match *self {
            UdpResponse::Connect { txn, .. }
            | UdpResponse::Announce { txn, .. }
            | UdpResponse::Scrape { txn, .. }
            | UdpResponse::Error { txn, .. } => txn,
        }
    }
}

/// Decode a datagram from a tracker. A connect answer is exactly 16 bytes;
/// a scrape answer a whole number of 12-byte records; nothing may exceed
/// [`MAX_RESPONSE_LEN`].
pub fn decode_response(b: &[u8]) -> Result<UdpResponse<'_>, UdpDecodeError> {
    if b.len() > MAX_RESPONSE_LEN {
        return Err(UdpDecodeError::Long);
    }
    let (Some(action), Some(txn)) = (u32_at(b, 0), u32_at(b, 4)) else {
        return Err(UdpDecodeError::Short);
    };
    match action {
        ACTION_CONNECT => {
            let conn_id = u64_at(b, 8).ok_or(UdpDecodeError::Short)?;
            if b.len() > CONNECT_LEN {
                return Err(UdpDecodeError::Long);
            }
            Ok(UdpResponse::Connect { txn, conn_id })
        }
        ACTION_ANNOUNCE => {
            let (Some(interval), Some(leechers), Some(seeders), Some(peers)) = (
                u32_at(b, 8),
                u32_at(b, 12),
                u32_at(b, 16),
                b.get(ANNOUNCE_RESPONSE_HEAD..),
            ) else {
                return Err(UdpDecodeError::Short);
            };
            Ok(UdpResponse::Announce {
                txn,
                interval,
                leechers,
                seeders,
                peers,
            })
        }
        ACTION_SCRAPE => {
            let records = b.get(SCRAPE_RESPONSE_HEAD..).unwrap_or_default();
            if !records.len().is_multiple_of(12) {
                return Err(UdpDecodeError::Ragged);
            }
            Ok(UdpResponse::Scrape { txn, records })
        }
        ACTION_ERROR => Ok(UdpResponse::Error {
            txn,
            message: b.get(8..).unwrap_or_default(),
        }),
        other => Err(UdpDecodeError::Action(other)),
    }
}

/// One scrape record: the swarm as the tracker counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ScrapeCounts {
    pub seeders: u32,
    pub completed: u32,
    pub leechers: u32,
}

/// The records of a scrape answer (checked to be a whole number by
/// [`decode_response`]).
pub fn scrape_records(records: &[u8]) -> impl Iterator<Item = ScrapeCounts> + '_ {
    records.chunks_exact(12).map(|r| ScrapeCounts {
        seeders: u32_at(r, 0).unwrap_or(0),
        completed: u32_at(r, 4).unwrap_or(0),
        leechers: u32_at(r, 8).unwrap_or(0),
    })
}

// ---------------------------------------------------------------------------
// Tracker → client (the built-in tracker)

/// An announce as the built-in tracker reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpAnnounce {
    pub info_hash: [u8; 20],
    pub peer_id: [u8; 20],
    pub downloaded: u64,
    pub left: u64,
    pub uploaded: u64,
    pub event: Event,
    /// The IP field (0: use the source address).
    pub ip: u32,
    pub key: u32,
    /// -1 (or any negative number): the tracker's default.
    pub num_want: i32,
    pub port: u16,
}

/// A request to the built-in tracker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UdpRequest<'a> {
    Connect {
        txn: u32,
    },
    Announce {
        conn_id: u64,
        txn: u32,
        announce: UdpAnnounce,
    },
    Scrape {
        conn_id: u64,
        txn: u32,
        /// Info-hashes, 20 bytes each; at most [`MAX_SCRAPE_HASHES`].
        hashes: &'a [u8],
    },
}

impl UdpRequest<'_> {
    pub fn txn(&self) -> u32 {
        match *self {
            UdpRequest::Connect { txn }
            | UdpRequest::Announce { txn, .. }
            | UdpRequest::Scrape { txn, .. } => txn,
        }
    }
}

/// Decode a datagram sent to the tracker. A connect request carries the
/// protocol id (bytes after its 16 are ignored); an announce is at least 98
/// bytes (BEP 41 options after them are ignored); a scrape holds 1 to 74
/// whole info-hashes. Nothing may exceed [`MAX_REQUEST_LEN`].
pub fn decode_request(b: &[u8]) -> Result<UdpRequest<'_>, UdpDecodeError> {
    if b.len() > MAX_REQUEST_LEN {
        return Err(UdpDecodeError::Long);
    }
    let (Some(conn_id), Some(action), Some(txn)) = (u64_at(b, 0), u32_at(b, 8), u32_at(b, 12))
    else {
        return Err(UdpDecodeError::Short);
    };
    match action {
        ACTION_CONNECT => {
            if conn_id != PROTOCOL_ID {
                return Err(UdpDecodeError::ProtocolId);
            }
            Ok(UdpRequest::Connect { txn })
        }
        ACTION_ANNOUNCE => {
            let f = || -> Option<(UdpAnnounce, u32)> {
                let event = u32_at(b, 80)?;
                Some((
                    UdpAnnounce {
                        info_hash: hash_at(b, 16)?,
                        peer_id: hash_at(b, 36)?,
                        downloaded: u64_at(b, 56)?,
                        left: u64_at(b, 64)?,
                        uploaded: u64_at(b, 72)?,
                        event: event_from_code(event).unwrap_or(Event::None),
                        ip: u32_at(b, 84)?,
                        key: u32_at(b, 88)?,
                        num_want: u32_at(b, 92)? as i32,
                        port: u16::from_be_bytes(*b.get(96..)?.first_chunk::<2>()?),
                    },
                    event,
                ))
            };
            let (announce, event) = f().ok_or(UdpDecodeError::Short)?;
            if event > 3 {
                return Err(UdpDecodeError::Event(event));
            }
            Ok(UdpRequest::Announce {
                conn_id,
                txn,
                announce,
            })
        }
        ACTION_SCRAPE => {
            let hashes = b.get(SCRAPE_REQUEST_HEAD..).unwrap_or_default();
            if hashes.is_empty() {
                return Err(UdpDecodeError::Short);
            }
            if !hashes.len().is_multiple_of(20) {
                return Err(UdpDecodeError::Ragged);
            }
            if hashes.len() > 20 * MAX_SCRAPE_HASHES {
                return Err(UdpDecodeError::Long);
            }
            Ok(UdpRequest::Scrape {
                conn_id,
                txn,
                hashes,
            })
        }
        other => Err(UdpDecodeError::Action(other)),
    }
}

/// A connect answer.
pub fn connect_response(txn: u32, conn_id: u64) -> [u8; CONNECT_LEN] {
    let mut b = [0u8; CONNECT_LEN];
    Put(&mut b).u32(ACTION_CONNECT).u32(txn).u64(conn_id);
    b
}

/// Append the head of an announce answer to `out` (the peers follow).
pub fn announce_response_head(
    txn: u32,
    interval: u32,
    leechers: u32,
    seeders: u32,
    out: &mut Vec<u8>,
) {
    for v in [ACTION_ANNOUNCE, txn, interval, leechers, seeders] {
        out.extend_from_slice(&v.to_be_bytes());
    }
}

/// Append the head of a scrape answer to `out` (the records follow).
pub fn scrape_response_head(txn: u32, out: &mut Vec<u8>) {
    out.extend_from_slice(&ACTION_SCRAPE.to_be_bytes());
    out.extend_from_slice(&txn.to_be_bytes());
}

/// Append one scrape record to `out`.
pub fn scrape_record(c: ScrapeCounts, out: &mut Vec<u8>) {
    for v in [c.seeders, c.completed, c.leechers] {
        out.extend_from_slice(&v.to_be_bytes());
    }
}

/// Append an error answer to `out` (the message cut to
/// [`MAX_ERROR_TEXT`] bytes).
pub fn error_response(txn: u32, message: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(&ACTION_ERROR.to_be_bytes());
    out.extend_from_slice(&txn.to_be_bytes());
    let m = message.as_bytes();
    out.extend_from_slice(m.get(..MAX_ERROR_TEXT).unwrap_or(m));
}
