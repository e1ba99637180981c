//! The fuzz harnesses, shared by the cargo-fuzz targets (`fuzz_targets/*.rs`)
//! and by the corpus replay test of the main crate (`tests/fuzz_corpus.rs`),
//! so a crash found by the fuzzer is replayed by plain `cargo test`.
//!
//! Each function feeds arbitrary bytes to one parser and panics only when a
//! property fails (the parser itself must never panic).
#![allow(dead_code)]

use piecemeal::bencode::{self, Limits};
use piecemeal::metainfo::Metainfo;
use piecemeal::tracker::{
    HeadStatus, ResponseReader, ServerConfig, Tracker, TrackerError, frame_request,
    parse_announce_body,
};
use piecemeal::wire::{self, Handshake, RecvBuf};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A harness: arbitrary bytes in, a panic only on a broken property.
pub type Harness = fn(&[u8]);

/// The fuzz targets, by name (the folder names under `corpus/` and
/// `artifacts/`).
pub const TARGETS: &[(&str, Harness)] = &[
    ("bencode", bencode_validate),
    ("metainfo", metainfo),
    ("wire", wire_stream),
    ("tracker_response", tracker_response),
    ("tracker_server", tracker_server),
];

/// Chunk sizes 1..=max from a tiny generator seeded by one input byte.
struct Chunks(u32);

impl Chunks {
    fn next(&mut self, max: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        1 + (self.0 as usize) % max.max(1)
    }
}

/// The bencode validator under every limit set; spans of a valid document
/// lie inside it.
pub fn bencode_validate(data: &[u8]) {
    for limits in [
        Limits::TORRENT,
        Limits::TRACKER,
        Limits::TORRENT.canonical(),
    ] {
        let _ = bencode::validate(data, &limits);
        let _ = bencode::validate_dict(data, &limits);
    }
    for key in [&b"info"[..], b"peers", b""] {
        if let Some(r) = bencode::dict_value_span(data, key) {
            assert!(r.start <= r.end && r.end <= data.len(), "span {r:?}");
        }
    }
    for r in bencode::list_item_spans(data) {
        assert!(r.start <= r.end && r.end <= data.len(), "span {r:?}");
    }
}

/// A .torrent from arbitrary bytes; when it parses, everything derived from
/// it is consistent.
pub fn metainfo(data: &[u8]) {
    let Ok(m) = Metainfo::from_bytes(data) else {
        return;
    };
    let g = m.geometry();
    assert_eq!(g.num_pieces as usize, m.info.pieces.len());
    assert_eq!(g.total_len, m.info.total_len);
    let _ = m.describe();
    let _ = m.tracker_tiers();
    for i in 0..m.info.files.len() {
        let _ = m.file_rel_path(i);
    }
}

/// What a peer stream decodes to: the messages, then how it ended.
fn decode_whole(stream: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut at = match Handshake::decode(stream) {
        Ok(Some(h)) => {
            out.push(format!("{h:?}"));
            wire::HANDSHAKE_LEN
        }
        Ok(None) => {
            out.push("need more".into());
            return out;
        }
        Err(e) => {
            out.push(format!("error {e}"));
            return out;
        }
    };
    loop {
        match wire::decode_frame(&stream[at..], wire::MAX_FRAME) {
            Ok(Some((m, n))) => {
                assert!(n >= 4 && n <= stream.len() - at, "used {n}");
                out.push(format!("{m:?}"));
                at += n;
            }
            Ok(None) => {
                out.push("need more".into());
                return out;
            }
            Err(e) => {
                out.push(format!("error {e}"));
                return out;
            }
        }
    }
}

/// The same stream through a `RecvBuf`, arriving in chunks, decoded the way
/// the engine does it.
fn decode_split(stream: &[u8], seed: u8) -> Vec<String> {
    let mut out = Vec::new();
    let mut chunks = Chunks(0x9e37_79b9 ^ u32::from(seed) << 8 | 1);
    let max_chunk = 1 + usize::from(seed % 32);
    let mut rb = RecvBuf::new(0);
    let mut src = stream;
    let mut handshaken = false;
    loop {
        // Decode what is buffered.
        if !handshaken {
            match Handshake::decode(rb.data()) {
                Ok(Some(h)) => {
                    out.push(format!("{h:?}"));
                    rb.consume(wire::HANDSHAKE_LEN);
                    handshaken = true;
                }
                Ok(None) => {}
                Err(e) => {
                    out.push(format!("error {e}"));
                    return out;
                }
            }
        }
        if handshaken {
            loop {
                match wire::decode_frame(rb.data(), wire::MAX_FRAME) {
                    Ok(Some((m, n))) => {
                        out.push(format!("{m:?}"));
                        rb.consume(n);
                    }
                    Ok(None) => {
                        if let Some(total) = wire::frame_len_hint(rb.data()) {
                            rb.reserve_frame(total);
                        }
                        break;
                    }
                    Err(e) => {
                        out.push(format!("error {e}"));
                        return out;
                    }
                }
            }
        }
        if src.is_empty() {
            out.push("need more".into());
            return out;
        }
        let take = chunks.next(max_chunk).min(src.len());
        let mut piece = &src[..take];
        let n = rb.read_from(&mut piece).expect("the buffer has room");
        assert!(n > 0 && n <= take);
        src = &src[n..];
        rb.check_invariants();
    }
}

/// Handshake and frames: the same messages whatever the split. The first
/// byte picks the chunk sizes; the rest is the stream.
pub fn wire_stream(data: &[u8]) {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let whole = decode_whole(stream);
    let split = decode_split(stream, seed);
    assert_eq!(whole, split, "a split changed what was decoded");
}

/// Feed a tracker response to a fresh reader in the given chunks.
fn read_response(resp: &[u8], chunks: Option<&mut Chunks>) -> Result<Vec<u8>, TrackerError> {
    let mut r = ResponseReader::new();
    match chunks {
        None => {
            if let Some(body) = r.feed(resp)? {
                return Ok(body);
            }
        }
        Some(c) => {
            let mut rest = resp;
            while !rest.is_empty() {
                let n = c.next(64).min(rest.len());
                if let Some(body) = r.feed(&rest[..n])? {
                    return Ok(body);
                }
                rest = &rest[n..];
            }
        }
    }
    r.eof()
}

/// HTTP response framing (whole vs. split: the same outcome), then the
/// announce body; the raw bytes are also parsed as a body.
pub fn tracker_response(data: &[u8]) {
    let _ = parse_announce_body(data);
    let Some((&seed, resp)) = data.split_first() else {
        return;
    };
    let whole = read_response(resp, None);
    let split = read_response(resp, Some(&mut Chunks(u32::from(seed) << 4 | 1)));
    // The same body whatever the split. Which error a broken response gets
    // may depend on the split (a head whose blank line comes first is
    // re-parsed only when another blank line arrives: "malformed head" at
    // once, or "truncated" at the end), so errors need only agree on being
    // errors (artifacts/tracker_response/crash-aa7b...).
    match (&whole, &split) {
        (Err(_), Err(_)) => {}
        _ => assert_eq!(whole, split, "a split changed the response"),
    }
    if let Ok(body) = whole {
        assert!(body.len() <= piecemeal::tracker::MAX_BODY);
        if let Ok(a) = parse_announce_body(&body) {
            let _ = a.peers.len();
        }
    }
}

/// The built-in tracker: request framing, then the handler, from IPv4 and
/// IPv6 loopback; twice, so the second request sees the first one's state.
pub fn tracker_server(data: &[u8]) {
    let mut t = Tracker::new(ServerConfig::default());
    let now = Instant::now();
    let remotes: [SocketAddr; 2] = [
        "127.0.0.1:40000".parse().unwrap(),
        "[::1]:40001".parse().unwrap(),
    ];
    match frame_request(data) {
        Ok(HeadStatus::Complete(n)) => {
            assert!(n <= data.len());
            assert_eq!(frame_request(&data[..n]), Ok(HeadStatus::Complete(n)));
            for remote in remotes {
                let resp = t.handle(&data[..n], remote, now);
                assert!(resp.starts_with(b"HTTP/1."), "not an HTTP response");
            }
            t.expire(now + Duration::from_secs(3600));
        }
        Ok(HeadStatus::Partial) => {}
        Err(e) => {
            assert!(e.response().starts_with(b"HTTP/1."));
        }
    }
    // Whatever the framing says, the handler must cope with any head.
    let resp = t.handle(data, remotes[0], now);
    assert!(resp.starts_with(b"HTTP/1."), "not an HTTP response");
}
