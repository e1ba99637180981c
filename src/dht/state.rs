//! The node's state file: our id, the external address we were told,
//! and the nodes of our routing table, so a restart bootstraps from
//! known nodes. A bencoded dictionary:
//! `{"id": 20 bytes, "ip": 4 bytes (optional), "nodes": 26 bytes each}`.
//! At most [`MAX_SAVED`] nodes are read or written.

use super::NodeId;
use super::krpc::{self, COMPACT_NODE_LEN};
use crate::bencode::{self, KeyOrder, Limits, Writer};
use std::net::{Ipv4Addr, SocketAddrV4};

/// Most nodes kept in the file.
pub const MAX_SAVED: usize = 512;

/// File name inside the state folder.
pub const FILE_NAME: &str = "dht.state";

/// What the file holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SavedState {
    pub id: Option<NodeId>,
    pub external_ip: Option<Ipv4Addr>,
    pub nodes: Vec<(NodeId, SocketAddrV4)>,
}

/// Longest state file read (a longer one is not ours).
pub const MAX_FILE_LEN: u64 = (64 + MAX_SAVED * COMPACT_NODE_LEN) as u64;

const LIMITS: Limits = Limits {
    max_depth: 2,
    max_tokens: 16,
    max_len: MAX_FILE_LEN as usize,
    key_order: KeyOrder::Any,
};

impl SavedState {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.dict();
        if let Some(id) = self.id {
            w.str("id").bytes(&id.0);
        }
        if let Some(ip) = self.external_ip {
            w.str("ip").bytes(&ip.octets());
        }
        let mut nodes = Vec::new();
        for (id, addr) in self.nodes.iter().take(MAX_SAVED) {
            krpc::write_compact_node(&mut nodes, id, *addr);
        }
        w.str("nodes").bytes(&nodes);
        w.end();
        w.finish()
    }

    /// Parse a state file; `None` when it is not one (it is then ignored).
    pub fn decode(data: &[u8]) -> Option<SavedState> {
        bencode::validate_dict(data, &LIMITS).ok()?;
        let get = |k: &[u8]| -> Option<&[u8]> {
            let span = bencode::dict_value_span(data, k)?;
            bencode::string_body(data.get(span)?)
        };
        let id = get(b"id").and_then(NodeId::from_slice);
        let external_ip = get(b"ip")
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(Ipv4Addr::from);
        let nodes = get(b"nodes")
            .unwrap_or(b"")
            .chunks_exact(COMPACT_NODE_LEN)
            .take(MAX_SAVED)
            .filter_map(|c| {
                Some((
                    NodeId::from_slice(c.get(..20)?)?,
                    krpc::compact_addr(c.get(20..)?)?,
                ))
            })
            .collect();
        Some(SavedState {
            id,
            external_ip,
            nodes,
        })
    }
}
