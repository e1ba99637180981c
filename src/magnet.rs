//! Magnet links (BEP 9): `magnet:?xt=urn:btih:<hash>&dn=…&tr=…&x.pe=…`.
//!
//! Pure: a string in, a [`Magnet`] or a [`MagnetError`] out. The info-hash
//! is 40 hex digits or 32 base32 characters (either case); every `tr` is a
//! tracker tier of its own, in the order given; `x.pe` gives peers to dial
//! (`host:port`, `[v6]:port`); keys we do not know are ignored. A v2-only
//! link (`urn:btmh:` alone) is refused with its own message.
//!
//! Bounds: a link longer than [`MAX_MAGNET_LEN`] bytes is refused before it
//! is read; at most [`MAX_TRACKERS`] trackers and [`MAX_PEERS`] peers are
//! kept (the rest are dropped).

#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

use std::fmt;

/// Longest magnet link accepted, in bytes.
pub const MAX_MAGNET_LEN: usize = 8 * 1024;

/// Most trackers (`tr`) kept from one link.
pub const MAX_TRACKERS: usize = 32;

/// Most peers (`x.pe`) kept from one link.
pub const MAX_PEERS: usize = 64;

/// A parsed magnet link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Magnet {
    /// The v1 info-hash (`xt=urn:btih:`).
    pub info_hash: [u8; 20],
    /// The display name (`dn`), if any: a hint until the metadata arrives.
    pub name: Option<String>,
    /// Tracker URLs (`tr`), in order; each is its own BEP 12 tier.
    pub trackers: Vec<String>,
    /// Peers to dial (`x.pe`).
    pub peers: Vec<PeerHint>,
}

/// A peer address from `x.pe`: a host name or IP literal, and a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerHint {
    /// Host name or IP literal (an IPv6 one without its brackets).
    pub host: String,
    pub port: u16,
}

impl PeerHint {
    /// The address, when the host is an IP literal.
    pub fn socket_addr(&self) -> Option<std::net::SocketAddr> {
        let ip: std::net::IpAddr = self.host.parse().ok()?;
        Some(std::net::SocketAddr::new(ip, self.port))
    }
}

/// Why a magnet link was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MagnetError {
    /// Longer than [`MAX_MAGNET_LEN`] bytes.
    TooLong(usize),
    /// Does not start with `magnet:?`.
    NotMagnet,
    /// No `xt=urn:btih:` (and no `urn:btmh:` either).
    NoInfoHash,
    /// Only a v2 info-hash (`urn:btmh:`).
    V2Only,
    /// The `btih` value is neither 40 hex digits nor 32 base32 characters.
    BadInfoHash(String),
    /// Two `btih` values that differ.
    ConflictingInfoHashes,
    /// A `%` not followed by two hex digits, at this byte offset of the link.
    BadEscape(usize),
    /// A value that is not UTF-8 once decoded (the key is named).
    NotUtf8(&'static str),
    /// An `x.pe` value that is not `host:port`.
    BadPeer(String),
}

impl fmt::Display for MagnetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MagnetError::TooLong(n) => write!(
                f,
                "magnet link is {n} bytes, more than the limit of {MAX_MAGNET_LEN} bytes"
            ),
            MagnetError::NotMagnet => {
                f.write_str("not a magnet link (it must start with `magnet:?`)")
            }
            MagnetError::NoInfoHash => {
                f.write_str("magnet link has no info-hash (`xt=urn:btih:…`)")
            }
            MagnetError::V2Only => f.write_str("v2 magnet links are not supported yet"),
            MagnetError::BadInfoHash(why) => write!(f, "bad info-hash in magnet link: {why}"),
            MagnetError::ConflictingInfoHashes => {
                f.write_str("magnet link has two different info-hashes")
            }
            MagnetError::BadEscape(at) => write!(
                f,
                "bad percent escape at byte {at} of the magnet link (`%` must be followed by two hex digits)"
            ),
            MagnetError::NotUtf8(key) => write!(f, "magnet link's `{key}` is not UTF-8"),
            MagnetError::BadPeer(p) => {
                write!(f, "bad peer address `{p}` in magnet link (want host:port)")
            }
        }
    }
}

impl std::error::Error for MagnetError {}

/// Does `s` look like a magnet link (rather than a file name)?
pub fn is_magnet(s: &str) -> bool {
    s.get(..7)
        .is_some_and(|p| p.eq_ignore_ascii_case("magnet:"))
}

impl Magnet {
    /// Parse a magnet link.
    pub fn parse(link: &str) -> Result<Magnet, MagnetError> {
        if link.len() > MAX_MAGNET_LEN {
            return Err(MagnetError::TooLong(link.len()));
        }
        let prefix = "magnet:?";
        let query = match link.get(..prefix.len()) {
            Some(p) if p.eq_ignore_ascii_case(prefix) => link.get(prefix.len()..).unwrap_or(""),
            _ => return Err(MagnetError::NotMagnet),
        };
        let mut info_hash: Option<[u8; 20]> = None;
        let mut v2 = false;
        let mut name = None;
        let mut trackers = Vec::new();
        let mut peers = Vec::new();
        // Byte offset of each parameter in `link`, for error messages.
        let mut at = prefix.len();
        for param in query.split('&') {
            let start = at;
            at += param.len() + 1;
            let Some((key, value)) = param.split_once('=') else {
                continue;
            };
            let value_at = start + key.len() + 1;
            match key {
                "xt" => {
                    let v = decode(value, value_at, false)?;
                    let v = String::from_utf8(v).map_err(|_| MagnetError::NotUtf8("xt"))?;
                    if let Some(h) = strip_prefix_ci(&v, "urn:btih:") {
                        let h = parse_hash(h)?;
                        if info_hash.is_some_and(|old| old != h) {
                            return Err(MagnetError::ConflictingInfoHashes);
                        }
                        info_hash = Some(h);
                    } else if strip_prefix_ci(&v, "urn:btmh:").is_some() {
                        v2 = true;
                    }
                }
                "dn" => {
                    let v = decode(value, value_at, true)?;
                    name = Some(String::from_utf8_lossy(&v).into_owned());
                }
                _ if key == "tr" || is_numbered(key, "tr.") => {
                    let v = decode(value, value_at, false)?;
                    let v = String::from_utf8(v).map_err(|_| MagnetError::NotUtf8("tr"))?;
                    if !v.is_empty() && trackers.len() < MAX_TRACKERS && !trackers.contains(&v) {
                        trackers.push(v);
                    }
                }
                _ if key == "x.pe" || is_numbered(key, "x.pe.") => {
                    let v = decode(value, value_at, false)?;
                    let v = String::from_utf8(v).map_err(|_| MagnetError::NotUtf8("x.pe"))?;
                    let p = parse_peer(&v).ok_or_else(|| MagnetError::BadPeer(v.clone()))?;
                    if peers.len() < MAX_PEERS && !peers.contains(&p) {
                        peers.push(p);
                    }
                }
                _ => {}
            }
        }
        let info_hash = match (info_hash, v2) {
            (Some(h), _) => h,
            (None, true) => return Err(MagnetError::V2Only),
            (None, false) => return Err(MagnetError::NoInfoHash),
        };
        Ok(Magnet {
            info_hash,
            name,
            trackers,
            peers,
        })
    }

    /// The trackers as BEP 12 tiers: one tier per `tr`, in order.
    pub fn tracker_tiers(&self) -> Vec<Vec<String>> {
        self.trackers.iter().map(|t| vec![t.clone()]).collect()
    }
}

/// `tr.1`, `x.pe.2`: a key with a numeric suffix after `prefix`.
fn is_numbered(key: &str, prefix: &str) -> bool {
    key.strip_prefix(prefix)
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    match s.get(..prefix.len()) {
        Some(p) if p.eq_ignore_ascii_case(prefix) => s.get(prefix.len()..),
        _ => None,
    }
}

/// Percent-decode `s` (which starts at byte `at` of the link); with
/// `plus_is_space`, `+` becomes a space (as form encoding writes names).
fn decode(s: &str, at: usize, plus_is_space: bool) -> Result<Vec<u8>, MagnetError> {
    crate::tracker::percent_decode_at(s.as_bytes(), plus_is_space)
        .map_err(|i| MagnetError::BadEscape(at + i))
}

/// 40 hex digits or 32 base32 characters (RFC 4648 alphabet), either case.
fn parse_hash(h: &str) -> Result<[u8; 20], MagnetError> {
    let mut out = [0u8; 20];
    match h.len() {
        40 => {
            for (o, pair) in out.iter_mut().zip(h.as_bytes().chunks_exact(2)) {
                let (Some(hi), Some(lo)) = (
                    pair.first().and_then(|&c| crate::tracker::hex_value(c)),
                    pair.get(1).and_then(|&c| crate::tracker::hex_value(c)),
                ) else {
                    return Err(MagnetError::BadInfoHash(
                        "40 characters but not all hex digits".into(),
                    ));
                };
                *o = hi << 4 | lo;
            }
        }
        32 => {
            // 32 × 5 bits = 160 bits: no padding, no leftover.
            let mut acc: u64 = 0;
            let mut bits = 0;
            let mut n = 0;
            for c in h.bytes() {
                let v = match c.to_ascii_uppercase() {
                    c @ b'A'..=b'Z' => c - b'A',
                    c @ b'2'..=b'7' => c - b'2' + 26,
                    _ => {
                        return Err(MagnetError::BadInfoHash(
                            "32 characters but not all base32 (A-Z, 2-7)".into(),
                        ));
                    }
                };
                acc = acc << 5 | u64::from(v);
                bits += 5;
                if bits >= 8 {
                    bits -= 8;
                    if let Some(o) = out.get_mut(n) {
                        *o = (acc >> bits) as u8;
                    }
                    n += 1;
                    acc &= (1 << bits) - 1;
                }
            }
        }
        n => {
            return Err(MagnetError::BadInfoHash(format!(
                "{n} characters (want 40 hex digits or 32 base32 characters)"
            )));
        }
    }
    Ok(out)
}

/// `host:port` or `[v6]:port`, port 1..=65535.
fn parse_peer(s: &str) -> Option<PeerHint> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, port) = rest.split_once("]:")?;
        host.parse::<std::net::Ipv6Addr>().ok()?;
        (host, port)
    } else {
        let (host, port) = s.rsplit_once(':')?;
        // An unbracketed IPv6 address is ambiguous: refuse it.
        if host.is_empty() || host.contains(':') {
            return None;
        }
        (host, port)
    };
    if host.len() > 253
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b))
    {
        return None;
    }
    let port: u16 = port.parse().ok().filter(|&p| p > 0)?;
    Some(PeerHint {
        host: host.to_string(),
        port,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    const HEX: &str = "c12fe1c06bba254a9dc9f519b335aa7c1367a88a";

    fn hash() -> [u8; 20] {
        let mut h = [0u8; 20];
        for (i, b) in h.iter_mut().enumerate() {
            *b = u8::from_str_radix(&HEX[2 * i..2 * i + 2], 16).unwrap();
        }
        h
    }

    #[test]
    fn hex_and_base32_hashes_in_either_case() {
        let m = Magnet::parse(&format!("magnet:?xt=urn:btih:{HEX}")).unwrap();
        assert_eq!(m.info_hash, hash());
        assert_eq!(m.name, None);
        assert!(m.trackers.is_empty() && m.peers.is_empty());
        let upper = Magnet::parse(&format!("MAGNET:?xt=URN:BTIH:{}", HEX.to_uppercase())).unwrap();
        assert_eq!(upper.info_hash, hash());
        // The same hash in base32 (RFC 4648), upper and lower case.
        let b32 = "YEX6DQDLXISUVHOJ6UM3GNNKPQJWPKEK";
        assert_eq!(
            Magnet::parse(&format!("magnet:?xt=urn:btih:{b32}"))
                .unwrap()
                .info_hash,
            hash()
        );
        assert_eq!(
            Magnet::parse(&format!("magnet:?xt=urn:btih:{}", b32.to_lowercase()))
                .unwrap()
                .info_hash,
            hash()
        );
    }

    #[test]
    fn name_trackers_and_peers_are_read_in_order() {
        let link = format!(
            "magnet:?xt=urn:btih:{HEX}&dn=Big+Buck%20Bunny&tr=udp%3A%2F%2Ftracker.example%3A1337%2Fannounce\
&tr=http://t2.example/announce?a=1%26b=2&x.pe=10.0.0.1:6881&x.pe=%5B::1%5D:51413&x.pe=seed.example:1\
&foo=bar&xl=123&novalue&tr.1=http://t3.example/a"
        );
        let m = Magnet::parse(&link).unwrap();
        assert_eq!(m.name.as_deref(), Some("Big Buck Bunny"));
        assert_eq!(
            m.trackers,
            [
                "udp://tracker.example:1337/announce",
                "http://t2.example/announce?a=1&b=2",
                "http://t3.example/a"
            ]
        );
        assert_eq!(
            m.tracker_tiers(),
            [
                vec!["udp://tracker.example:1337/announce".to_string()],
                vec!["http://t2.example/announce?a=1&b=2".to_string()],
                vec!["http://t3.example/a".to_string()]
            ]
        );
        assert_eq!(m.peers.len(), 3);
        assert_eq!(
            m.peers[0].socket_addr(),
            Some("10.0.0.1:6881".parse().unwrap())
        );
        assert_eq!(
            m.peers[1].socket_addr(),
            Some("[::1]:51413".parse().unwrap())
        );
        assert_eq!(m.peers[2].host, "seed.example");
        assert_eq!(m.peers[2].socket_addr(), None);
    }

    #[test]
    fn malformed_links_are_refused_with_a_reason() {
        let cases: Vec<(String, MagnetError)> = vec![
            ("http://x/".into(), MagnetError::NotMagnet),
            ("magnet:".into(), MagnetError::NotMagnet),
            ("magnet:?dn=x".into(), MagnetError::NoInfoHash),
            ("magnet:?xt=urn:sha1:abc".into(), MagnetError::NoInfoHash),
            (
                format!("magnet:?xt=urn:btih:{}", &HEX[..39]),
                MagnetError::BadInfoHash(
                    "39 characters (want 40 hex digits or 32 base32 characters)".into(),
                ),
            ),
            (
                format!("magnet:?xt=urn:btih:{}g", &HEX[..39]),
                MagnetError::BadInfoHash("40 characters but not all hex digits".into()),
            ),
            (
                "magnet:?xt=urn:btih:YEX6DQDLXISUVHOJ6UM3GNNKPQJWPKE1".into(),
                MagnetError::BadInfoHash("32 characters but not all base32 (A-Z, 2-7)".into()),
            ),
            (
                format!("magnet:?xt=urn:btih:{HEX}&dn=a%2"),
                MagnetError::BadEscape(65),
            ),
            (
                format!("magnet:?xt=urn:btih:{HEX}&tr=%zz"),
                MagnetError::BadEscape(64),
            ),
            (
                format!("magnet:?xt=urn:btih:{HEX}&tr=%ff"),
                MagnetError::NotUtf8("tr"),
            ),
            (
                format!("magnet:?xt=urn:btih:{HEX}&xt=urn:btih:{}", "0".repeat(40)),
                MagnetError::ConflictingInfoHashes,
            ),
            (
                format!("magnet:?xt=urn:btih:{HEX}&x.pe=1.2.3.4"),
                MagnetError::BadPeer("1.2.3.4".into()),
            ),
            (
                format!("magnet:?xt=urn:btih:{HEX}&x.pe=::1:80"),
                MagnetError::BadPeer("::1:80".into()),
            ),
            (
                format!("magnet:?xt=urn:btih:{HEX}&x.pe=h:0"),
                MagnetError::BadPeer("h:0".into()),
            ),
            (
                format!("magnet:?xt=urn:btih:{HEX}&x.pe=h:70000"),
                MagnetError::BadPeer("h:70000".into()),
            ),
            (
                format!("magnet:?xt=urn:btih:{HEX}&x.pe=[nothex]:80"),
                MagnetError::BadPeer("[nothex]:80".into()),
            ),
        ];
        for (link, want) in cases {
            assert_eq!(Magnet::parse(&link), Err(want), "{link}");
        }
        // The offset points at the `%`.
        let link = format!("magnet:?xt=urn:btih:{HEX}&dn=a%2");
        assert_eq!(&link[65..66], "%");
    }

    #[test]
    fn v2_only_links_are_refused_and_hybrids_use_the_v1_hash() {
        let v2 = "1220caf1e1c30e81cb361b9ee167c4aa64228a7fa4fa9f6105232b28ad099f3a302e";
        let e = Magnet::parse(&format!("magnet:?xt=urn:btmh:{v2}")).unwrap_err();
        assert_eq!(e, MagnetError::V2Only);
        assert_eq!(e.to_string(), "v2 magnet links are not supported yet");
        let m = Magnet::parse(&format!("magnet:?xt=urn:btmh:{v2}&xt=urn:btih:{HEX}")).unwrap();
        assert_eq!(m.info_hash, hash());
    }

    #[test]
    fn too_long_links_are_refused_before_they_are_read() {
        let pad = "x".repeat(MAX_MAGNET_LEN);
        let link = format!("magnet:?xt=urn:btih:{HEX}&dn={pad}");
        assert_eq!(Magnet::parse(&link), Err(MagnetError::TooLong(link.len())));
        // Just under the cap is fine.
        let link = format!("magnet:?xt=urn:btih:{HEX}&dn=");
        let link = format!("{link}{}", "x".repeat(MAX_MAGNET_LEN - link.len()));
        assert!(Magnet::parse(&link).is_ok());
    }

    #[test]
    fn trackers_and_peers_are_capped_and_deduplicated() {
        let mut link = format!("magnet:?xt=urn:btih:{HEX}");
        for i in 0..100 {
            link.push_str(&format!(
                "&tr=http://t{i}/a&x.pe=10.0.0.{i}:1&tr=http://t0/a"
            ));
        }
        let m = Magnet::parse(&link).unwrap();
        assert_eq!(m.trackers.len(), MAX_TRACKERS);
        assert_eq!(m.trackers[1], "http://t1/a");
        assert_eq!(m.peers.len(), MAX_PEERS);
    }

    #[test]
    fn is_magnet_tells_links_from_paths() {
        assert!(is_magnet("magnet:?xt=x"));
        assert!(is_magnet("Magnet:?xt=x"));
        assert!(!is_magnet("magnet.torrent"));
        assert!(!is_magnet("m"));
    }
}
