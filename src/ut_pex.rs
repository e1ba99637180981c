//! The `ut_pex` extension (BEP 11, peer exchange): the codec only. What we
//! send and what we take is decided by the torrent (`torrent/pex.rs`).
//!
//! A message is one bencoded dictionary of compact address strings:
//! `added` (6 bytes each: IPv4 + port), `added.f` (one flag byte per
//! `added` entry), `dropped`, and the IPv6 forms `added6` (18 bytes each),
//! `added6.f`, `dropped6`. Every key is optional.
//!
//! Bounds: the dictionary is validated with the tracker-body limits (at
//! most 1 MiB, which the wire's frame limit already implies); the parsed
//! [`Pex`] borrows the payload and allocates nothing, and its iterators
//! stop at [`MAX_ENTRIES`] entries per list, whatever the strings hold. A
//! string whose length is not a whole number of entries is read up to its
//! last whole entry; a flags string of the wrong length is treated as
//! absent (flags 0), since the addresses are still good.

#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

use crate::bencode::string_body;
use crate::bencode::{self, Limits, Writer};
use std::net::SocketAddr;

/// The extension's name in the BEP 10 `m` dictionary.
pub const NAME: &str = "ut_pex";

/// Most entries read from one list of one message (BEP 11 asks senders
/// for at most 50 added and 50 dropped; libtorrent sends up to 100).
pub const MAX_ENTRIES: usize = 100;

/// Flag bits of an `added.f` / `added6.f` byte (BEP 11).
pub mod flags {
    /// The peer prefers encryption.
    pub const ENCRYPTION: u8 = 0x01;
    /// The peer is a seed (upload only).
    pub const SEED: u8 = 0x02;
    /// The peer supports uTP.
    pub const UTP: u8 = 0x04;
    /// The peer supports `ut_holepunch`.
    pub const HOLEPUNCH: u8 = 0x08;
    /// The sender connected to the peer: it is reachable.
    pub const REACHABLE: u8 = 0x10;
}

/// A parsed `ut_pex` message: the raw compact strings, borrowed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pex<'a> {
    added: &'a [u8],
    added_f: &'a [u8],
    dropped: &'a [u8],
    added6: &'a [u8],
    added6_f: &'a [u8],
    dropped6: &'a [u8],
}

impl<'a> Pex<'a> {
    /// Read a message (the payload after the extended message id). `None`
    /// for anything that is not a well-formed dictionary; bytes after the
    /// dictionary are ignored; a key whose value is not a byte string is
    /// treated as absent.
    pub fn parse(payload: &'a [u8]) -> Option<Pex<'a>> {
        let end = bencode::value_len(payload)?;
        let dict = payload.get(..end)?;
        bencode::validate_dict(dict, &Limits::TRACKER).ok()?;
        let get = |key: &[u8]| -> &'a [u8] {
            bencode::dict_value_span(dict, key)
                .and_then(|span| dict.get(span))
                .and_then(string_body)
                .unwrap_or(&[])
        };
        Some(Pex {
            added: get(b"added"),
            added_f: get(b"added.f"),
            dropped: get(b"dropped"),
            added6: get(b"added6"),
            added6_f: get(b"added6.f"),
            dropped6: get(b"dropped6"),
        })
    }

    /// How many added addresses the message claims (IPv4 and IPv6), before
    /// any cap: for counting what a flood offered.
    pub fn added_len(&self) -> usize {
        self.added.len() / 6 + self.added6.len() / 18
    }

    /// The added peers with their flags: IPv4 first, then IPv6, at most
    /// [`MAX_ENTRIES`] of each.
    pub fn added(&self) -> impl Iterator<Item = (SocketAddr, u8)> + 'a {
        let f4 = flags_for(self.added_f, self.added.len() / 6);
        let f6 = flags_for(self.added6_f, self.added6.len() / 18);
        v4_entries(self.added)
            .zip(f4)
            .chain(v6_entries(self.added6).zip(f6))
    }

    /// The dropped peers: IPv4 first, then IPv6, at most [`MAX_ENTRIES`]
    /// of each.
    pub fn dropped(&self) -> impl Iterator<Item = SocketAddr> + 'a {
        v4_entries(self.dropped).chain(v6_entries(self.dropped6))
    }
}

/// The flags of `n` entries: the flags string when it has one byte per
/// entry, else zeros.
fn flags_for(f: &[u8], n: usize) -> impl Iterator<Item = u8> + '_ {
    let ok = f.len() == n;
    let given = if ok { f } else { &[] };
    given
        .iter()
        .copied()
        .chain(std::iter::repeat_n(0, if ok { 0 } else { n }))
}

fn v4_entries(s: &[u8]) -> impl Iterator<Item = SocketAddr> + '_ {
    crate::compact::records(s, false).take(MAX_ENTRIES)
}

fn v6_entries(s: &[u8]) -> impl Iterator<Item = SocketAddr> + '_ {
    crate::compact::records(s, true).take(MAX_ENTRIES)
}

/// Append a whole `ut_pex` extended frame, sent with the peer's id for
/// `ut_pex`: `added` with flags, and `dropped`, each split by address
/// family. Keys are written in sorted order, empty lists left out. The
/// caller bounds the lists (the torrent sends at most 50 of each).
pub fn encode(peer_id: u8, added: &[(SocketAddr, u8)], dropped: &[SocketAddr], out: &mut Vec<u8>) {
    let mut a4 = Vec::new();
    let mut f4 = Vec::new();
    let mut a6 = Vec::new();
    let mut f6 = Vec::new();
    for &(addr, f) in added {
        let (a, flags) = if addr.is_ipv6() {
            (&mut a6, &mut f6)
        } else {
            (&mut a4, &mut f4)
        };
        crate::compact::put(addr, a);
        flags.push(f);
    }
    let mut d4 = Vec::new();
    let mut d6 = Vec::new();
    for &addr in dropped {
        crate::compact::put(addr, if addr.is_ipv6() { &mut d6 } else { &mut d4 });
    }
    let mut w = Writer::new();
    w.dict();
    // Sorted keys: "added" < "added.f" < "added6" < "added6.f" <
    // "dropped" < "dropped6".
    for (key, v) in [
        ("added", &a4),
        ("added.f", &f4),
        ("added6", &a6),
        ("added6.f", &f6),
        ("dropped", &d4),
        ("dropped6", &d6),
    ] {
        if !v.is_empty() {
            w.str(key).bytes(v);
        }
    }
    w.end();
    crate::extension::put_frame(peer_id, &w.finish(), &[], out);
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::wire::{self, Message};

    fn payload_of(out: &[u8]) -> (u8, Vec<u8>) {
        let (msg, n) = wire::decode_frame(out, wire::MAX_FRAME).unwrap().unwrap();
        assert_eq!(n, out.len());
        let Message::Unknown { id: 20, payload } = msg else {
            panic!("{msg:?}")
        };
        (payload[0], payload[1..].to_vec())
    }

    #[test]
    fn messages_round_trip_in_both_address_families() {
        let a: SocketAddr = "10.0.0.1:6881".parse().unwrap();
        let b: SocketAddr = "[2001:db8::7]:51413".parse().unwrap();
        let c: SocketAddr = "192.168.1.9:1".parse().unwrap();
        let d: SocketAddr = "[::1]:2".parse().unwrap();
        let mut out = Vec::new();
        encode(
            3,
            &[(a, flags::REACHABLE), (b, flags::SEED)],
            &[c, d],
            &mut out,
        );
        let (id, payload) = payload_of(&out);
        assert_eq!(id, 3);
        let p = Pex::parse(&payload).unwrap();
        assert_eq!(
            p.added().collect::<Vec<_>>(),
            [(a, flags::REACHABLE), (b, flags::SEED)]
        );
        assert_eq!(p.dropped().collect::<Vec<_>>(), [c, d]);
        assert_eq!(p.added_len(), 2);
        // The exact bytes of a one-peer message.
        let mut out = Vec::new();
        encode(1, &[(a, 0x12)], &[], &mut out);
        assert_eq!(
            payload_of(&out).1,
            b"d5:added6:\x0a\x00\x00\x01\x1a\xe17:added.f1:\x12e"
        );
        // Nothing to say: an empty dictionary.
        let mut out = Vec::new();
        encode(1, &[], &[], &mut out);
        assert_eq!(payload_of(&out).1, b"de");
    }

    #[test]
    fn libtorrents_shape_is_read() {
        // libtorrent 2.0.8's first message (`lt.bencode` of its entry):
        // every key, empty ones included.
        let msg = b"d5:added6:\nc\x00\x01\x1a\xe27:added.f1:\x016:added60:8:added6.f0:\
7:dropped0:8:dropped60:e";
        let p = Pex::parse(msg).unwrap();
        assert_eq!(
            p.added().collect::<Vec<_>>(),
            [("10.99.0.1:6882".parse().unwrap(), flags::ENCRYPTION)]
        );
        assert_eq!(p.dropped().count(), 0);
    }

    #[test]
    fn odd_lengths_and_missing_flags_are_read_leniently() {
        // 7 bytes of `added`: one whole entry; no flags: zeros.
        let p = Pex::parse(b"d5:added7:\x01\x02\x03\x04\x00\x50Xe").unwrap();
        assert_eq!(
            p.added().collect::<Vec<_>>(),
            [("1.2.3.4:80".parse().unwrap(), 0)]
        );
        // Flags of the wrong length: zeros.
        let p = Pex::parse(b"d5:added6:\x01\x02\x03\x04\x00\x507:added.f2:\x01\x01e").unwrap();
        assert_eq!(p.added().map(|(_, f)| f).collect::<Vec<_>>(), [0]);
        // A key of the wrong type is absent; unknown keys are ignored.
        let p = Pex::parse(b"d5:addedi5e1:xle7:dropped6:\x01\x02\x03\x04\x00\x50e").unwrap();
        assert_eq!(p.added().count(), 0);
        assert_eq!(p.dropped().count(), 1);
    }

    #[test]
    fn malformed_messages_are_ignored() {
        for bad in [
            &b""[..],
            b"le",
            b"d5:added",
            b"d5:added6:abcdef5:added6:abcdefe", // duplicate key
            b"i3e",
            b"5:added",
        ] {
            assert_eq!(Pex::parse(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn a_huge_list_yields_at_most_max_entries() {
        let mut added = Vec::new();
        for i in 0..100_000u32 {
            added.extend_from_slice(&i.to_be_bytes());
            added.extend_from_slice(&6881u16.to_be_bytes());
        }
        let mut w = Writer::new();
        w.dict().str("added").bytes(&added).str("added.f");
        w.bytes(&vec![0u8; 100_000]).end();
        let msg = w.finish();
        let p = Pex::parse(&msg).unwrap();
        assert_eq!(p.added_len(), 100_000);
        assert_eq!(p.added().count(), MAX_ENTRIES);
    }

    #[test]
    fn string_bodies_must_match_their_length() {
        assert_eq!(string_body(b"3:abc"), Some(&b"abc"[..]));
        assert_eq!(string_body(b"0:"), Some(&b""[..]));
        for bad in [&b"3:ab"[..], b"3:abcd", b":abc", b"x:a", b"i3e", b""] {
            assert_eq!(string_body(bad), None);
        }
    }
}
