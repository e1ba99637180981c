//! Compact peer addresses, as trackers (BEP 23, BEP 7, BEP 15), peer
//! exchange (BEP 11) and the DHT (BEP 5) write them: the address's bytes
//! (4 for IPv4, 16 for IPv6), then the port, big-endian.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Bytes of one record: 6 (IPv4) or 18 (IPv6).
pub const fn record_len(v6: bool) -> usize {
    if v6 { 18 } else { 6 }
}

/// Append `addr` as one compact record.
pub fn put(addr: SocketAddr, out: &mut Vec<u8>) {
    match addr {
        SocketAddr::V4(a) => out.extend_from_slice(&a.ip().octets()),
        SocketAddr::V6(a) => out.extend_from_slice(&a.ip().octets()),
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
}

/// The records of `bytes`, all IPv4 or all IPv6; a partial record at the
/// end is left out (callers that must refuse one check the length with
/// [`record_len`]). Port 0 is given as it is.
pub fn records(bytes: &[u8], v6: bool) -> impl Iterator<Item = SocketAddr> + '_ {
    bytes.chunks_exact(record_len(v6)).filter_map(move |r| {
        let (ip, port) = r.split_at(r.len() - 2);
        let port = u16::from_be_bytes([*port.first()?, *port.get(1)?]);
        let ip = if v6 {
            IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(ip).ok()?))
        } else {
            IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(ip).ok()?))
        };
        Some(SocketAddr::new(ip, port))
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_in_both_families() {
        let addrs: [SocketAddr; 2] = [
            "10.1.2.3:6881".parse().unwrap(),
            "[2001:db8::7]:51413".parse().unwrap(),
        ];
        for a in addrs {
            let mut out = Vec::new();
            put(a, &mut out);
            assert_eq!(out.len(), record_len(a.is_ipv6()));
            out.push(9); // a partial record is left out
            assert_eq!(records(&out, a.is_ipv6()).collect::<Vec<_>>(), [a]);
        }
    }
}
