//! The BEP 10 extension protocol in one place: a registry of the
//! extensions we speak (each gets a local message id), the extension
//! handshake that advertises them, what a peer's handshake says, and the
//! dispatch of incoming extended messages to the extension they belong to.
//!
//! The magnet (`ut_metadata`) and peer-exchange (`ut_pex`) work registers
//! its extensions here; the torrent routes [`Extended::Message`] to them by
//! name and sends theirs with the id the peer chose ([`PeerExtensions::id_of`]).
//!
//! Bounds: a peer's handshake is decoded with the tracker-body limits
//! (nesting, length); only the names we registered are kept from its `m`
//! dictionary; its client name is cut to [`MAX_CLIENT_NAME`] characters.

#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

use crate::wire::EXTENDED_ID;
use std::collections::BTreeMap;

/// Longest client name (`v`) kept from a peer's handshake.
pub const MAX_CLIENT_NAME: usize = 64;

/// The extensions we speak, in registration order: local id = index + 1
/// (id 0 is the handshake).
#[derive(Clone, Debug, Default)]
pub struct Registry {
    names: Vec<&'static str>,
}

/// An extended message, as routed by [`Registry::dispatch`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extended<'a> {
    /// The extension handshake (id 0): its bencoded dictionary.
    Handshake(&'a [u8]),
    /// A message of one of our extensions.
    Message {
        name: &'static str,
        payload: &'a [u8],
    },
    /// An id we never gave out: ignored.
    Unknown(u8),
}

/// Append one extended message (BEP 10): the length prefix, id 20, the
/// extension's id as the peer chose it (0: the handshake), the bencoded
/// `dict`, then `tail` (a `ut_metadata` piece's bytes).
pub fn put_frame(ext_id: u8, dict: &[u8], tail: &[u8], out: &mut Vec<u8>) {
    let body = 2 + dict.len() + tail.len();
    out.reserve(4 + body);
    out.extend_from_slice(&u32::try_from(body).unwrap_or(u32::MAX).to_be_bytes());
    out.push(EXTENDED_ID);
    out.push(ext_id);
    out.extend_from_slice(dict);
    out.extend_from_slice(tail);
}

/// What our extension handshake states besides the extensions.
#[derive(Clone, Copy, Debug)]
pub struct OurHandshake<'a> {
    /// Requests we queue per peer (`reqq`).
    pub reqq: u32,
    /// Our client name (`v`).
    pub client: &'a str,
    /// The size of the metadata we serve (`metadata_size`).
    pub metadata_size: Option<usize>,
    /// The port we accept peers on (`p`).
    pub listen_port: Option<u16>,
}

/// What a peer's extension handshake says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerExtensions {
    /// Our extensions the peer speaks, with the id it wants them sent with.
    ids: Vec<(&'static str, u8)>,
    /// How many requests it queues (`reqq`), when stated and positive.
    pub reqq: Option<usize>,
    /// Its client name (`v`), cut to [`MAX_CLIENT_NAME`] characters.
    pub client: Option<String>,
    /// The port it listens on (`p`), when stated.
    pub listen_port: Option<u16>,
    /// The size of the metadata it offers (`metadata_size`, BEP 9), when
    /// stated and positive; whoever fetches checks it against a limit.
    pub metadata_size: Option<u64>,
}

impl PeerExtensions {
    /// The id to send extension `name`'s messages with, if the peer
    /// speaks it.
    pub fn id_of(&self, name: &str) -> Option<u8> {
        self.ids.iter().find(|(n, _)| *n == name).map(|&(_, id)| id)
    }
}

impl Registry {
    /// A registry of `names`; each gets the next local id.
    pub fn new(names: &[&'static str]) -> Registry {
        let mut names = names.to_vec();
        names.dedup();
        names.truncate(usize::from(u8::MAX - 1));
        Registry { names }
    }

    /// Our local id of extension `name`.
    pub fn local_id(&self, name: &str) -> Option<u8> {
        let i = self.names.iter().position(|n| *n == name)?;
        u8::try_from(i + 1).ok()
    }

    /// Append our extension handshake: every registered extension in `m`,
    /// the size of the metadata we serve (`metadata_size`, BEP 9), the port
    /// we listen on (`p`: a peer that dialed us can then pass our address
    /// on through peer exchange), how many requests we queue (`reqq`), our
    /// client name (`v`).
    pub fn encode_handshake(&self, ours: &OurHandshake<'_>, out: &mut Vec<u8>) {
        let OurHandshake {
            reqq,
            client,
            metadata_size,
            listen_port,
        } = *ours;
        let mut w = crate::bencode::Writer::new();
        // Keys in sorted order, as bencode wants.
        let mut sorted: Vec<(&str, u8)> = self
            .names
            .iter()
            .filter_map(|&n| Some((n, self.local_id(n)?)))
            .collect();
        sorted.sort_unstable();
        w.dict().str("m").dict();
        for (name, id) in sorted {
            w.str(name).int(i64::from(id));
        }
        w.end();
        if let Some(n) = metadata_size {
            w.str("metadata_size")
                .int(i64::try_from(n).unwrap_or(i64::MAX));
        }
        if let Some(port) = listen_port.filter(|&p| p != 0) {
            w.str("p").int(i64::from(port));
        }
        w.str("reqq")
            .int(i64::from(reqq))
            .str("v")
            .str(client)
            .end();
        put_frame(0, &w.finish(), &[], out);
    }

    /// Route the payload of an extended message (id 20) by its first byte.
    pub fn dispatch<'a>(&self, payload: &'a [u8]) -> Option<Extended<'a>> {
        let (&id, rest) = payload.split_first()?;
        if id == 0 {
            return Some(Extended::Handshake(rest));
        }
        Some(match self.names.get(usize::from(id) - 1) {
            Some(&name) => Extended::Message {
                name,
                payload: rest,
            },
            None => Extended::Unknown(id),
        })
    }

    /// Read a peer's extension handshake. Anything malformed yields what
    /// could be read (a peer's odd handshake never closes the connection);
    /// names we do not speak and ids of 0 (disabled) are left out.
    pub fn parse_handshake(&self, dict: &[u8]) -> PeerExtensions {
        #[derive(serde::Deserialize)]
        struct Raw {
            m: Option<BTreeMap<String, serde_bencode::value::Value>>,
            reqq: Option<i64>,
            v: Option<serde_bencode::value::Value>,
            p: Option<i64>,
            metadata_size: Option<i64>,
        }
        let Ok(raw) = crate::bencode::decode::<Raw>(dict, &crate::bencode::Limits::TRACKER) else {
            return PeerExtensions::default();
        };
        let mut ids = Vec::new();
        for (name, v) in raw.m.iter().flatten() {
            let (Some(&ours), serde_bencode::value::Value::Int(id)) =
                (self.names.iter().find(|n| **n == name.as_str()), v)
            else {
                continue;
            };
            if let Ok(id) = u8::try_from(*id)
                && id != 0
            {
                ids.push((ours, id));
            }
        }
        let client = match raw.v {
            Some(serde_bencode::value::Value::Bytes(b)) => Some(
                String::from_utf8_lossy(&b)
                    .chars()
                    .take(MAX_CLIENT_NAME)
                    .collect(),
            ),
            _ => None,
        };
        PeerExtensions {
            ids,
            reqq: raw
                .reqq
                .and_then(|n| usize::try_from(n).ok())
                .filter(|&n| n > 0),
            client,
            listen_port: raw.p.and_then(|p| u16::try_from(p).ok()).filter(|&p| p > 0),
            metadata_size: raw
                .metadata_size
                .and_then(|n| u64::try_from(n).ok())
                .filter(|&n| n > 0),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::wire::{self, Message};

    /// The shape libtorrent sends: nested `m`, binary `yourip`, and more.
    const LT: &[u8] = b"d1:ei0e1:md11:ut_metadatai2e6:ut_pexi1ee13:metadata_sizei1234e1:pi6881e\
4:reqqi2000e1:v18:libtorrent 2.0.8.06:yourip4:\x7f\x00\x00\x01e";

    #[test]
    fn a_peers_handshake_gives_its_ids_for_our_extensions_only() {
        let r = Registry::new(&["ut_pex", "lt_donthave"]);
        let p = r.parse_handshake(LT);
        assert_eq!(p.id_of("ut_pex"), Some(1));
        assert_eq!(p.id_of("ut_metadata"), None, "not registered by us");
        assert_eq!(p.id_of("lt_donthave"), None, "not offered by the peer");
        assert_eq!(p.reqq, Some(2000));
        assert_eq!(p.client.as_deref(), Some("libtorrent 2.0.8.0"));
        assert_eq!(p.listen_port, Some(6881));
        assert_eq!(p.metadata_size, Some(1234));
    }

    #[test]
    fn reqq_is_read_and_nonsense_is_ignored() {
        let r = Registry::default();
        assert_eq!(r.parse_handshake(b"d1:mde4:reqqi512ee").reqq, Some(512));
        for bad in [
            &b"d1:mdee"[..],                   // no reqq
            b"d4:reqqi0ee",                    // zero
            b"d4:reqqi-5ee",                   // negative
            b"d4:reqq3:abce",                  // not an integer
            b"d4:reqqi99999999999999999999ee", // overflows
            b"l4:reqqi5ee",                    // not a dictionary
            b"d4:reqqi5e",                     // truncated
            b"",
        ] {
            assert_eq!(r.parse_handshake(bad).reqq, None, "{bad:?}");
        }
        // An id of 0 disables the extension; a non-integer id is ignored.
        let r = Registry::new(&["ut_pex", "ut_metadata"]);
        let p = r.parse_handshake(b"d1:md11:ut_metadata1:x6:ut_pexi0eee");
        assert_eq!((p.id_of("ut_pex"), p.id_of("ut_metadata")), (None, None));
    }

    #[test]
    fn our_handshake_advertises_every_registered_extension() {
        let r = Registry::new(&["ut_pex", "ut_metadata"]);
        let mut out = Vec::new();
        let mut ours = OurHandshake {
            reqq: 2048,
            client: "piecemeal/x",
            metadata_size: None,
            listen_port: None,
        };
        r.encode_handshake(&ours, &mut out);
        let (msg, n) = wire::decode_frame(&out, wire::MAX_FRAME).unwrap().unwrap();
        assert_eq!(n, out.len());
        let Message::Unknown { id: 20, payload } = msg else {
            panic!("{msg:?}");
        };
        assert_eq!(
            payload,
            &b"\x00d1:md11:ut_metadatai2e6:ut_pexi1ee4:reqqi2048e1:v11:piecemeal/xe"[..]
        );
        // What we advertise reads back as what we registered.
        let Some(Extended::Handshake(dict)) = r.dispatch(payload) else {
            panic!()
        };
        let back = r.parse_handshake(dict);
        assert_eq!(back.id_of("ut_pex"), r.local_id("ut_pex"));
        assert_eq!(back.id_of("ut_metadata"), r.local_id("ut_metadata"));
        // With metadata to serve, its size goes in too (keys in order).
        let mut out = Vec::new();
        ours.client = "p";
        ours.metadata_size = Some(31235);
        ours.listen_port = Some(6881);
        r.encode_handshake(&ours, &mut out);
        assert!(
            out.ends_with(b"ee13:metadata_sizei31235e1:pi6881e4:reqqi2048e1:v1:pe"),
            "{}",
            String::from_utf8_lossy(&out)
        );
        let Some(Extended::Handshake(dict)) = r.dispatch(&out[5..]) else {
            panic!()
        };
        assert_eq!(r.parse_handshake(dict).metadata_size, Some(31235));
    }

    #[test]
    fn extended_messages_go_to_their_extension_by_our_id() {
        let r = Registry::new(&["ut_pex", "ut_metadata"]);
        assert_eq!(
            r.dispatch(b"\x02d8:msg_typei0e5:piecei0ee"),
            Some(Extended::Message {
                name: "ut_metadata",
                payload: b"d8:msg_typei0e5:piecei0ee"
            })
        );
        assert_eq!(r.dispatch(b"\x09abc"), Some(Extended::Unknown(9)));
        assert_eq!(r.dispatch(b""), None);
    }
}
