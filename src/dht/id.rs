//! Node ids and info-hashes (160-bit), XOR distance, and BEP 42 ids.

use std::fmt;
use std::net::Ipv4Addr;

/// A 160-bit DHT key: a node id or an info-hash.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct NodeId(pub [u8; 20]);

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0[..4] {
            write!(f, "{b:02x}")?;
        }
        f.write_str("…")
    }
}

impl NodeId {
    /// From a 20-byte slice; `None` for any other length.
    pub fn from_slice(b: &[u8]) -> Option<NodeId> {
        Some(NodeId(b.try_into().ok()?))
    }

    /// `self XOR other`, the Kademlia distance (compare as big-endian).
    pub fn distance(&self, other: &NodeId) -> [u8; 20] {
        let mut d = [0u8; 20];
        for (i, x) in d.iter_mut().enumerate() {
            *x = self.0[i] ^ other.0[i];
        }
        d
    }

    /// Length of the common bit prefix of `self` and `other` (160 when equal).
    pub fn common_prefix(&self, other: &NodeId) -> usize {
        for i in 0..20 {
            let x = self.0[i] ^ other.0[i];
            if x != 0 {
                return i * 8 + x.leading_zeros() as usize;
            }
        }
        160
    }

    /// A random id from 160 random bits.
    pub fn random(rng: &mut crate::rng::Rng) -> NodeId {
        let mut id = [0u8; 20];
        for c in id.chunks_mut(8) {
            let r = rng.next_u64().to_be_bytes();
            c.copy_from_slice(&r[..c.len()]);
        }
        NodeId(id)
    }

    /// A random id that shares exactly the first `prefix` bits with `self`
    /// and differs at bit `prefix` (when `prefix` < 160): a target inside
    /// the bucket at depth `prefix`.
    pub fn random_in_bucket(&self, prefix: usize, rng: &mut crate::rng::Rng) -> NodeId {
        let mut r = NodeId::random(rng);
        for bit in 0..prefix.min(160) {
            set_bit(&mut r.0, bit, get_bit(&self.0, bit));
        }
        if prefix < 160 {
            set_bit(&mut r.0, prefix, !get_bit(&self.0, prefix));
        }
        r
    }

    /// BEP 42: an id for external address `ip`, with random low bits
    /// (`r` picks the 3 salt bits and the last byte).
    pub fn bep42(ip: Ipv4Addr, rng: &mut crate::rng::Rng) -> NodeId {
        let mut id = NodeId::random(rng);
        let r = (rng.next_u64() & 0xff) as u8;
        let prefix = bep42_prefix(ip, r);
        id.0[0] = prefix[0];
        id.0[1] = prefix[1];
        id.0[2] = (prefix[2] & 0xf8) | (id.0[2] & 0x07);
        id.0[19] = r;
        id
    }

    /// Whether this id is valid for `ip` under BEP 42 (local and private
    /// addresses are exempt, as the BEP says).
    pub fn bep42_valid_for(&self, ip: Ipv4Addr) -> bool {
        if ip.is_private() || ip.is_loopback() || ip.is_link_local() || ip.is_unspecified() {
            return true;
        }
        let p = bep42_prefix(ip, self.0[19]);
        self.0[0] == p[0] && self.0[1] == p[1] && (self.0[2] & 0xf8) == (p[2] & 0xf8)
    }
}

fn get_bit(b: &[u8; 20], i: usize) -> bool {
    b[i / 8] & (0x80 >> (i % 8)) != 0
}

fn set_bit(b: &mut [u8; 20], i: usize, v: bool) {
    if v {
        b[i / 8] |= 0x80 >> (i % 8);
    } else {
        b[i / 8] &= !(0x80 >> (i % 8));
    }
}

/// The first 21 bits of a BEP 42 id: CRC-32C of the masked address with
/// the 3 salt bits of `r` on top.
fn bep42_prefix(ip: Ipv4Addr, r: u8) -> [u8; 3] {
    let mut b = ip.octets();
    for (x, m) in b.iter_mut().zip([0x03u8, 0x0f, 0x3f, 0xff]) {
        *x &= m;
    }
    b[0] |= (r & 0x07) << 5;
    let c = crc32c(&b).to_be_bytes();
    [c[0], c[1], c[2]]
}

/// CRC-32C (Castagnoli), bit by bit: it runs once per id check.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0x82F6_3B78 & mask);
        }
    }
    !crc
}
