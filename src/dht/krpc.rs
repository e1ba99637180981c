//! KRPC messages (BEP 5): bencoded dictionaries over UDP, decoded
//! without allocating and encoded with [`crate::bencode::Writer`].
//!
//! Decoding first runs the validating tokenizer under [`LIMITS`] (a
//! datagram is at most [`MAX_MESSAGE_LEN`] bytes, nesting at most 4, at
//! most 512 tokens), so a hostile datagram costs a bounded walk and
//! nothing is allocated for it; then the few keys KRPC uses are read
//! with a flat cursor. Every error is a [`KrpcError`] (`Copy`); the node
//! counts and drops, and answers a query it cannot parse with a
//! `203 Protocol Error` only when the transaction id could be read.

use super::NodeId;
use crate::bencode::{self, KeyOrder, Limits, Writer};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};

/// Longest datagram decoded (longer ones are dropped unread). Real KRPC
/// messages are a few hundred bytes; a full `get_peers` answer fits.
pub const MAX_MESSAGE_LEN: usize = 1500;
/// Tokenizer bounds for one datagram.
pub const LIMITS: Limits = Limits {
    max_depth: 4,
    max_tokens: 512,
    max_len: MAX_MESSAGE_LEN,
    key_order: KeyOrder::Any,
};
/// Longest transaction id accepted (echoed back in answers).
pub const MAX_TID_LEN: usize = 16;
/// Longest write token accepted.
pub const MAX_TOKEN_LEN: usize = 64;
/// Compact node info: 20-byte id, 4-byte IPv4, 2-byte port.
pub const COMPACT_NODE_LEN: usize = 26;
/// Our client version (`v`): "PM" and a two-byte version.
pub const VERSION: &[u8; 4] = b"PM\x00\x01";

/// KRPC error codes (BEP 5).
pub mod code {
    pub const GENERIC: i64 = 201;
    pub const SERVER: i64 = 202;
    pub const PROTOCOL: i64 = 203;
    pub const METHOD_UNKNOWN: i64 = 204;
}

/// Why a datagram was not a KRPC message we accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KrpcError {
    /// Longer than [`MAX_MESSAGE_LEN`].
    TooLong,
    /// Not valid bencode within [`LIMITS`] (depth, tokens, canonical form).
    Bencode,
    /// Valid bencode, but not a dictionary.
    NotDict,
    /// A required key is absent.
    Missing(&'static str),
    /// A key has the wrong type or length.
    Bad(&'static str),
}

impl fmt::Display for KrpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KrpcError::TooLong => write!(f, "datagram longer than {MAX_MESSAGE_LEN} bytes"),
            KrpcError::Bencode => f.write_str("not valid bencode within the KRPC limits"),
            KrpcError::NotDict => f.write_str("not a dictionary"),
            KrpcError::Missing(k) => write!(f, "missing key {k}"),
            KrpcError::Bad(k) => write!(f, "bad value for key {k}"),
        }
    }
}

impl std::error::Error for KrpcError {}

/// One decoded message, borrowing from the datagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message<'a> {
    /// Transaction id (at most [`MAX_TID_LEN`] bytes).
    pub tid: &'a [u8],
    pub body: Body<'a>,
    /// BEP 42: our address as the sender sees it (in answers).
    pub ip: Option<SocketAddrV4>,
    /// BEP 43: the sender does not answer queries.
    pub read_only: bool,
}

/// Query, response or error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body<'a> {
    Query { sender: NodeId, query: Query<'a> },
    Response(Response<'a>),
    Error { code: i64, message: &'a [u8] },
}

/// The queries of BEP 5.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Query<'a> {
    Ping,
    FindNode {
        target: NodeId,
    },
    GetPeers {
        info_hash: NodeId,
    },
    AnnouncePeer {
        info_hash: NodeId,
        port: u16,
        implied_port: bool,
        token: &'a [u8],
    },
    /// A method we do not know. BEP 5 asks that one carrying a `target`
    /// or `info_hash` be answered like `find_node`.
    Other {
        method: &'a [u8],
        target: Option<NodeId>,
    },
}

/// A response's `r` dictionary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response<'a> {
    pub id: NodeId,
    /// Compact node infos, a multiple of [`COMPACT_NODE_LEN`] bytes.
    pub nodes: &'a [u8],
    /// The raw bencoded `values` list (empty when absent); see [`Response::values`].
    pub values: &'a [u8],
    pub token: Option<&'a [u8]>,
}

impl<'a> Response<'a> {
    /// The compact nodes, in order.
    pub fn nodes(&self) -> impl Iterator<Item = (NodeId, SocketAddrV4)> + 'a {
        self.nodes.chunks_exact(COMPACT_NODE_LEN).filter_map(|c| {
            Some((
                NodeId::from_slice(c.get(..20)?)?,
                compact_addr(c.get(20..)?)?,
            ))
        })
    }

    /// The peers in `values` (6-byte compact strings; others are skipped).
    pub fn values(&self) -> impl Iterator<Item = SocketAddrV4> + 'a {
        ListIter {
            b: self.values,
            pos: 1,
        }
        .filter_map(|v| compact_addr(as_bytes(v)?))
    }
}

/// Decode one datagram. Never panics; allocation free.
pub fn decode(data: &[u8]) -> Result<Message<'_>, KrpcError> {
    if data.len() > MAX_MESSAGE_LEN {
        return Err(KrpcError::TooLong);
    }
    bencode::validate(data, &LIMITS).map_err(|_| KrpcError::Bencode)?;
    if data.first() != Some(&b'd') {
        return Err(KrpcError::NotDict);
    }
    let (mut tid, mut y, mut q, mut a, mut r, mut e, mut ip, mut ro) =
        (None, None, None, None, None, None, None, false);
    for (k, v) in DictIter::new(data) {
        match k {
            b"t" => tid = Some(as_bytes(v).ok_or(KrpcError::Bad("t"))?),
            b"y" => y = Some(as_bytes(v).ok_or(KrpcError::Bad("y"))?),
            b"q" => q = Some(as_bytes(v).ok_or(KrpcError::Bad("q"))?),
            b"a" => a = Some(v),
            b"r" => r = Some(v),
            b"e" => e = Some(v),
            b"ip" => ip = as_bytes(v).and_then(compact_addr),
            b"ro" => ro = as_int(v) == Some(1),
            _ => {}
        }
    }
    let tid = tid.ok_or(KrpcError::Missing("t"))?;
    if tid.len() > MAX_TID_LEN {
        return Err(KrpcError::Bad("t"));
    }
    let body = match y.ok_or(KrpcError::Missing("y"))? {
        b"q" => decode_query(
            q.ok_or(KrpcError::Missing("q"))?,
            a.ok_or(KrpcError::Missing("a"))?,
        )?,
        b"r" => Body::Response(decode_response(r.ok_or(KrpcError::Missing("r"))?)?),
        b"e" => {
            let e = e.ok_or(KrpcError::Missing("e"))?;
            let mut it = ListIter { b: e, pos: 1 };
            if e.first() != Some(&b'l') {
                return Err(KrpcError::Bad("e"));
            }
            let code = it.next().and_then(as_int).ok_or(KrpcError::Bad("e"))?;
            let message = it.next().and_then(as_bytes).unwrap_or(b"");
            Body::Error { code, message }
        }
        _ => return Err(KrpcError::Bad("y")),
    };
    Ok(Message {
        tid,
        body,
        ip,
        read_only: ro,
    })
}

/// Read the transaction id of a datagram that failed [`decode`] for a
/// reason past the tokenizer (so an error answer can be matched).
pub fn tid_of(data: &[u8]) -> Option<&[u8]> {
    if data.len() > MAX_MESSAGE_LEN || bencode::validate(data, &LIMITS).is_err() {
        return None;
    }
    if data.first() != Some(&b'd') {
        return None;
    }
    DictIter::new(data)
        .find(|(k, _)| *k == b"t")
        .and_then(|(_, v)| as_bytes(v))
        .filter(|t| t.len() <= MAX_TID_LEN)
}

fn decode_query<'a>(method: &'a [u8], a: &'a [u8]) -> Result<Body<'a>, KrpcError> {
    if a.first() != Some(&b'd') {
        return Err(KrpcError::Bad("a"));
    }
    let (mut id, mut target, mut info_hash, mut port, mut implied, mut token) =
        (None, None, None, None, false, None);
    for (k, v) in DictIter::new(a) {
        match k {
            b"id" => id = Some(as_id(v).ok_or(KrpcError::Bad("id"))?),
            b"target" => target = Some(as_id(v).ok_or(KrpcError::Bad("target"))?),
            b"info_hash" => info_hash = Some(as_id(v).ok_or(KrpcError::Bad("info_hash"))?),
            b"port" => port = Some(as_int(v).ok_or(KrpcError::Bad("port"))?),
            b"implied_port" => implied = as_int(v).ok_or(KrpcError::Bad("implied_port"))? != 0,
            b"token" => token = Some(as_bytes(v).ok_or(KrpcError::Bad("token"))?),
            _ => {}
        }
    }
    let sender = id.ok_or(KrpcError::Missing("id"))?;
    let query = match method {
        b"ping" => Query::Ping,
        b"find_node" => Query::FindNode {
            target: target.ok_or(KrpcError::Missing("target"))?,
        },
        b"get_peers" => Query::GetPeers {
            info_hash: info_hash.ok_or(KrpcError::Missing("info_hash"))?,
        },
        b"announce_peer" => {
            let token = token.ok_or(KrpcError::Missing("token"))?;
            if token.len() > MAX_TOKEN_LEN {
                return Err(KrpcError::Bad("token"));
            }
            let port = match port {
                Some(p) => u16::try_from(p).map_err(|_| KrpcError::Bad("port"))?,
                None if implied => 0,
                None => return Err(KrpcError::Missing("port")),
            };
            Query::AnnouncePeer {
                info_hash: info_hash.ok_or(KrpcError::Missing("info_hash"))?,
                port,
                implied_port: implied,
                token,
            }
        }
        m => {
            if m.len() > 32 {
                return Err(KrpcError::Bad("q"));
            }
            Query::Other {
                method: m,
                target: target.or(info_hash),
            }
        }
    };
    Ok(Body::Query { sender, query })
}

fn decode_response(r: &[u8]) -> Result<Response<'_>, KrpcError> {
    if r.first() != Some(&b'd') {
        return Err(KrpcError::Bad("r"));
    }
    let (mut id, mut nodes, mut values, mut token) = (None, &b""[..], &b""[..], None);
    for (k, v) in DictIter::new(r) {
        match k {
            b"id" => id = Some(as_id(v).ok_or(KrpcError::Bad("id"))?),
            b"nodes" => {
                nodes = as_bytes(v).ok_or(KrpcError::Bad("nodes"))?;
                if nodes.len() % COMPACT_NODE_LEN != 0 {
                    return Err(KrpcError::Bad("nodes"));
                }
            }
            b"values" => {
                if v.first() != Some(&b'l') {
                    return Err(KrpcError::Bad("values"));
                }
                values = v;
            }
            b"token" => {
                let t = as_bytes(v).ok_or(KrpcError::Bad("token"))?;
                if t.len() > MAX_TOKEN_LEN {
                    return Err(KrpcError::Bad("token"));
                }
                token = Some(t);
            }
            _ => {}
        }
    }
    Ok(Response {
        id: id.ok_or(KrpcError::Missing("id"))?,
        nodes,
        values,
        token,
    })
}

/// A 6-byte compact IPv4 address and port.
pub fn compact_addr(b: &[u8]) -> Option<SocketAddrV4> {
    let b: [u8; 6] = b.try_into().ok()?;
    Some(SocketAddrV4::new(
        Ipv4Addr::new(b[0], b[1], b[2], b[3]),
        u16::from_be_bytes([b[4], b[5]]),
    ))
}

/// `addr` as 6 compact bytes.
pub fn write_compact_addr(out: &mut Vec<u8>, addr: SocketAddrV4) {
    crate::compact::put(std::net::SocketAddr::V4(addr), out);
}

/// The value at the start of `v` as a byte string.
fn as_bytes(v: &[u8]) -> Option<&[u8]> {
    bencode::string_body(v)
}

fn as_int(v: &[u8]) -> Option<i64> {
    if v.first() != Some(&b'i') {
        return None;
    }
    let end = v.iter().position(|&c| c == b'e')?;
    std::str::from_utf8(v.get(1..end)?).ok()?.parse().ok()
}

fn as_id(v: &[u8]) -> Option<NodeId> {
    NodeId::from_slice(as_bytes(v)?)
}

/// Key/value spans of a dictionary that passed validation.
struct DictIter<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> DictIter<'a> {
    fn new(b: &'a [u8]) -> DictIter<'a> {
        DictIter { b, pos: 1 }
    }
}

impl<'a> Iterator for DictIter<'a> {
    type Item = (&'a [u8], &'a [u8]);
    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.b.get(self.pos..)?;
        if rest.first() == Some(&b'e') {
            return None;
        }
        let klen = bencode::value_len(rest)?;
        let key = as_bytes(rest.get(..klen)?)?;
        let vrest = rest.get(klen..)?;
        let vlen = bencode::value_len(vrest)?;
        self.pos += klen + vlen;
        Some((key, vrest.get(..vlen)?))
    }
}

/// Item spans of a list that passed validation (`pos` starts at 1).
struct ListIter<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for ListIter<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        let rest = self.b.get(self.pos..)?;
        if rest.first() == Some(&b'e') {
            return None;
        }
        let len = bencode::value_len(rest)?;
        self.pos += len;
        rest.get(..len)
    }
}

/// Arguments of an outgoing query (the `a` dictionary, minus `id`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutQuery<'a> {
    Ping,
    FindNode(NodeId),
    GetPeers(NodeId),
    /// info-hash, port, implied_port, token.
    AnnouncePeer(NodeId, u16, bool, &'a [u8]),
}

impl OutQuery<'_> {
    pub fn method(&self) -> &'static str {
        match self {
            OutQuery::Ping => "ping",
            OutQuery::FindNode(_) => "find_node",
            OutQuery::GetPeers(_) => "get_peers",
            OutQuery::AnnouncePeer(..) => "announce_peer",
        }
    }
}

/// Encode a query (keys in sorted order).
pub fn encode_query(tid: &[u8], our_id: &NodeId, q: &OutQuery<'_>, read_only: bool) -> Vec<u8> {
    let mut w = Writer::new();
    w.dict().str("a").dict().str("id").bytes(&our_id.0);
    match q {
        OutQuery::Ping => {}
        OutQuery::FindNode(t) => {
            w.str("target").bytes(&t.0);
        }
        OutQuery::GetPeers(h) => {
            w.str("info_hash").bytes(&h.0);
        }
        OutQuery::AnnouncePeer(h, port, implied, token) => {
            if *implied {
                w.str("implied_port").int(1);
            }
            w.str("info_hash")
                .bytes(&h.0)
                .str("port")
                .int(i64::from(*port))
                .str("token")
                .bytes(token);
        }
    }
    w.end().str("q").str(q.method());
    if read_only {
        w.str("ro").int(1);
    }
    w.str("t")
        .bytes(tid)
        .str("v")
        .bytes(VERSION)
        .str("y")
        .str("q")
        .end();
    w.finish()
}

/// What goes in a response's `r` dictionary besides our id.
#[derive(Clone, Copy, Debug, Default)]
pub struct OutResponse<'a> {
    /// Compact node infos (a multiple of 26 bytes).
    pub nodes: &'a [u8],
    pub values: &'a [SocketAddrV4],
    pub token: Option<&'a [u8]>,
}

/// Encode a response; `requester` goes in the BEP 42 `ip` key.
pub fn encode_response(
    tid: &[u8],
    our_id: &NodeId,
    requester: SocketAddrV4,
    r: &OutResponse<'_>,
) -> Vec<u8> {
    let mut w = Writer::new();
    let mut ip = Vec::with_capacity(6);
    write_compact_addr(&mut ip, requester);
    w.dict().str("ip").bytes(&ip);
    w.str("r").dict().str("id").bytes(&our_id.0);
    if !r.nodes.is_empty() {
        w.str("nodes").bytes(r.nodes);
    }
    if let Some(t) = r.token {
        w.str("token").bytes(t);
    }
    if !r.values.is_empty() {
        w.str("values").list();
        let mut c = Vec::with_capacity(6);
        for v in r.values {
            c.clear();
            write_compact_addr(&mut c, *v);
            w.bytes(&c);
        }
        w.end();
    }
    w.end()
        .str("t")
        .bytes(tid)
        .str("v")
        .bytes(VERSION)
        .str("y")
        .str("r")
        .end();
    w.finish()
}

/// Encode an error answer.
pub fn encode_error(tid: &[u8], code: i64, message: &str) -> Vec<u8> {
    let mut w = Writer::new();
    w.dict()
        .str("e")
        .list()
        .int(code)
        .str(message)
        .end()
        .str("t")
        .bytes(tid)
        .str("v")
        .bytes(VERSION)
        .str("y")
        .str("e")
        .end();
    w.finish()
}

/// Append compact node info for `(id, addr)`.
pub fn write_compact_node(out: &mut Vec<u8>, id: &NodeId, addr: SocketAddrV4) {
    out.extend_from_slice(&id.0);
    write_compact_addr(out, addr);
}
