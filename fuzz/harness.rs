//! The fuzz harnesses, shared by the cargo-fuzz targets (`fuzz_targets/*.rs`)
//! and by the corpus replay test of the main crate (`tests/fuzz_corpus.rs`),
//! so a crash found by the fuzzer is replayed by plain `cargo test`.
//!
//! Each function feeds arbitrary bytes to one parser and panics only when a
//! property fails (the parser itself must never panic).
#![allow(dead_code)]

use piecemeal::bencode::{self, Limits};
use piecemeal::ids::{ConnToken, PieceIndex};
use piecemeal::metainfo::Metainfo;
use piecemeal::tracker::{
    AnnounceParams, Event, HeadStatus, ResponseReader, ServerConfig, Tracker, TrackerError,
    UdpAnswer, UdpClient, UdpServer, UdpServerConfig, frame_request, parse_announce_body, udp_wire,
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
    ("paths", paths),
    ("geometry", geometry),
    ("peer_session", peer_session),
    ("extension", extension),
    ("udp_tracker_response", udp_tracker_response),
    ("udp_tracker_request", udp_tracker_request),
    ("mse", mse),
    ("magnet", magnet),
    ("krpc", krpc),
    ("ut_pex", ut_pex),
    ("ut_metadata", ut_metadata),
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
    assert!(0 < m.info.content_len && m.info.content_len <= m.info.total_len);
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

/// `body` framed three ways: with `Content-Length`, chunked (chunk sizes
/// from `seed`, hex digits in either case, sometimes a chunk extension),
/// and read to EOF.
fn framings(body: &[u8], seed: u8) -> [Vec<u8>; 3] {
    let mut with_len =
        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    with_len.extend_from_slice(body);
    let mut chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    let mut sizes = Chunks(u32::from(seed) << 9 | 3);
    let mut rest = body;
    while !rest.is_empty() {
        let n = sizes.next(300).min(rest.len());
        let head = match sizes.next(3) {
            1 => format!("{n:x}\r\n"),
            2 => format!("{n:X}\r\n"),
            _ => format!("{n:x};ext=1\r\n"),
        };
        chunked.extend_from_slice(head.as_bytes());
        chunked.extend_from_slice(&rest[..n]);
        chunked.extend_from_slice(b"\r\n");
        rest = &rest[n..];
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let mut to_eof = b"HTTP/1.0 200 OK\r\n\r\n".to_vec();
    to_eof.extend_from_slice(body);
    [with_len, chunked, to_eof]
}

/// HTTP response framing (whole vs. split: the same outcome), then the
/// announce body; the raw bytes are also parsed as a body, and framed as
/// a body three ways (length, chunked, to EOF), which must all give it
/// back unchanged.
pub fn tracker_response(data: &[u8]) {
    let _ = parse_announce_body(data);
    let Some((&seed, resp)) = data.split_first() else {
        return;
    };
    if resp.len() <= piecemeal::tracker::MAX_BODY {
        for (i, framed) in framings(resp, seed).iter().enumerate() {
            let mut chunks = Chunks(u32::from(seed) << 4 | 5);
            for split in [None, Some(&mut chunks)] {
                assert_eq!(
                    read_response(framed, split).as_deref(),
                    Ok(resp),
                    "framing {i} changed the body"
                );
            }
        }
    }
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

/// Torrent metadata from fuzz bytes: `0xFF` separates files, `0xFE` path
/// components; the first segment is the name. Whatever `Metainfo` accepts
/// must map every file to a relative path of plain names (so it stays below
/// the download folder), and every stored file to a distinct path that is
/// no other stored file's folder.
pub fn paths(data: &[u8]) {
    let mut segments = data.split(|&b| b == 0xFF);
    let name = segments.next().unwrap_or_default();
    let files: Vec<Vec<&[u8]>> = segments
        .map(|f| f.split(|&b| b == 0xFE).collect())
        .collect();
    let mut w = bencode::Writer::new();
    w.dict().bytes(b"info").dict();
    if files.is_empty() {
        w.bytes(b"length").int(1);
    } else {
        w.bytes(b"files").list();
        for comps in &files {
            w.dict().bytes(b"length").int(1).bytes(b"path").list();
            for c in comps {
                w.bytes(c);
            }
            w.end().end();
        }
        w.end();
    }
    w.bytes(b"name").bytes(name);
    w.bytes(b"piece length").int(16384);
    w.bytes(b"pieces").bytes(&[0u8; 20]);
    w.end().end();
    let torrent = w.finish();
    let Ok(m) = Metainfo::from_bytes(&torrent) else {
        return;
    };
    // Every path is safe; only stored files (not padding, which libtorrent
    // names `.pad/<length>` and so repeats) must be distinct.
    let all: Vec<std::path::PathBuf> = (0..m.info.files.len())
        .map(|i| m.file_rel_path(i))
        .collect();
    let rels: Vec<&std::path::PathBuf> = all
        .iter()
        .zip(&m.info.files)
        .filter(|(_, f)| f.is_stored())
        .map(|(p, _)| p)
        .collect();
    for rel in &all {
        assert!(rel.is_relative(), "{rel:?} is absolute");
        let mut depth = 0;
        for c in rel.components() {
            let std::path::Component::Normal(c) = c else {
                panic!("{rel:?} has a {c:?} component");
            };
            let c = c.to_string_lossy();
            assert!(!c.contains(['\\', '\0']), "{rel:?}: component {c:?}");
            let b = c.as_bytes();
            assert!(
                !(b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':'),
                "{rel:?}: drive letter"
            );
            depth += 1;
        }
        assert!(depth >= 1, "{rel:?} is the download folder itself");
    }
    for (i, a) in rels.iter().enumerate() {
        for b in &rels[i + 1..] {
            assert_ne!(a, b, "two files map to one path");
            assert!(
                !a.starts_with(b) && !b.starts_with(a),
                "{a:?} and {b:?}: a file is another's folder"
            );
        }
    }
}

/// Reads little-endian numbers and byte strings off a fuzz input; past the
/// end everything reads as zero.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    fn byte(&mut self) -> u8 {
        let Some((&b, rest)) = self.0.split_first() else {
            return 0;
        };
        self.0 = rest;
        b
    }
    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }
    fn u32(&mut self) -> u32 {
        let mut v = [0u8; 4];
        let b = self.bytes(4);
        v[..b.len()].copy_from_slice(b);
        u32::from_le_bytes(v)
    }
    fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | u64::from(self.u32()) << 32
    }
}

/// Piece and block arithmetic against a u128 reference: a shape and a few
/// queries (piece, begin, len, max) per input.
pub fn geometry(data: &[u8]) {
    use piecemeal::geometry::{BLOCK_LEN, Geometry};
    let mut c = Cursor(data);
    // Mostly small shapes (interesting edges), sometimes raw 64-bit sizes.
    let flags = c.byte();
    let total = if flags & 1 == 0 {
        u64::from(c.u32() % 2_000_000)
    } else {
        c.u64()
    };
    let piece_len = if flags & 2 == 0 {
        c.u32() % 300_000
    } else {
        c.u32()
    };
    let reference_pieces = if piece_len == 0 {
        None
    } else {
        let n = u128::from(total).div_ceil(u128::from(piece_len));
        u32::try_from(n).ok()
    };
    let Some(g) = Geometry::new(total, piece_len) else {
        assert_eq!(reference_pieces, None, "{total} / {piece_len} refused");
        return;
    };
    assert_eq!(Some(g.num_pieces), reference_pieces);
    let size_ref = |p: u32| -> u128 {
        if p >= g.num_pieces {
            return 0;
        }
        let start = u128::from(p) * u128::from(piece_len);
        (u128::from(total) - start).min(u128::from(piece_len))
    };
    if g.num_pieces > 0 {
        let last = g.num_pieces - 1;
        assert_eq!(
            u128::from(g.piece_offset(PieceIndex(last)))
                + u128::from(g.piece_size(PieceIndex(last))),
            u128::from(total)
        );
    }
    while !c.is_empty() {
        let pick = c.byte();
        let p = match pick % 4 {
            0 => g.num_pieces.saturating_sub(1),
            1 => c.u32() % g.num_pieces.saturating_add(2).max(1),
            2 => g.num_pieces,
            _ => c.u32(),
        };
        let size = size_ref(p);
        assert_eq!(u128::from(g.piece_size(PieceIndex(p))), size, "piece {p}");
        let blocks = size.div_ceil(u128::from(BLOCK_LEN));
        assert_eq!(
            u128::from(g.blocks_in_piece(PieceIndex(p))),
            blocks,
            "piece {p}"
        );
        if p < g.num_pieces {
            assert_eq!(
                u128::from(g.piece_offset(PieceIndex(p))),
                u128::from(p) * u128::from(piece_len)
            );
            // The first, a middle and the last block tile the piece.
            let nb = g.blocks_in_piece(PieceIndex(p));
            for i in [0, nb / 2, nb.saturating_sub(1)] {
                if i >= nb {
                    continue;
                }
                let b = g.block(PieceIndex(p), i);
                let begin = u128::from(i) * u128::from(BLOCK_LEN);
                assert_eq!(u128::from(b.begin), begin);
                assert_eq!(u128::from(b.len), (size - begin).min(u128::from(BLOCK_LEN)));
                assert_eq!(b.index(), i);
                assert!(g.is_block(PieceIndex(p), b.begin, b.len));
            }
        }
        let (begin, len, max) = (c.u32(), c.u32(), c.u32());
        let begin = if pick & 0x10 != 0 {
            begin % (BLOCK_LEN * 4)
        } else {
            begin
        };
        let len = if pick & 0x20 != 0 {
            len % (BLOCK_LEN * 2)
        } else {
            len
        };
        let in_range = p < g.num_pieces
            && len > 0
            && len <= max
            && u128::from(begin) + u128::from(len) <= size;
        assert_eq!(
            g.request_in_range(PieceIndex(p), begin, len, max),
            in_range,
            "request {p} {begin} {len} max {max}"
        );
        let is_block = p < g.num_pieces
            && begin % BLOCK_LEN == 0
            && u128::from(begin) < size
            && u128::from(len) == (size - u128::from(begin)).min(u128::from(BLOCK_LEN));
        assert_eq!(
            g.is_block(PieceIndex(p), begin, len),
            is_block,
            "block {p} {begin} {len}"
        );
    }
}

/// The torrent a peer session runs on: 6 pieces of 32 KiB (the last one
/// 1000 bytes) in two files split inside piece 1.
struct SessionWorld {
    geometry: piecemeal::geometry::Geometry,
    data: Vec<u8>,
    hashes: Vec<[u8; 20]>,
    layout: piecemeal::storage::Layout,
    /// Holds the whole torrent, never written to (the session opens it
    /// read-only).
    seed_dir: std::path::PathBuf,
    /// Rewritten before every partial session: even pieces right, odd
    /// pieces zero.
    partial_dir: std::path::PathBuf,
}

fn session_root() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("piecemeal-fuzz-session-{}", std::process::id()))
}

/// Remove the files `peer_session` made (the replay test calls it).
pub fn peer_session_cleanup() {
    let _ = std::fs::remove_dir_all(session_root());
}

const SESSION_INFO_HASH: [u8; 20] = [0x1b; 20];
const SESSION_OUR_ID: [u8; 20] = [0x2c; 20];

fn session_world() -> &'static SessionWorld {
    use piecemeal::geometry::Geometry;
    use piecemeal::storage::{FileSlot, Layout};
    use sha1::{Digest, Sha1};
    static WORLD: std::sync::OnceLock<SessionWorld> = std::sync::OnceLock::new();
    WORLD.get_or_init(|| {
        let geometry = Geometry::new(5 * 32768 + 1000, 32768).unwrap();
        let data: Vec<u8> = (0..geometry.total_len)
            .map(|i| (i * 131 % 251) as u8)
            .collect();
        let hashes = (0..geometry.num_pieces)
            .map(|p| {
                let o = geometry.piece_offset(PieceIndex(p)) as usize;
                Sha1::digest(&data[o..o + geometry.piece_size(PieceIndex(p)) as usize]).into()
            })
            .collect();
        let split = 50_000;
        let layout = Layout::new(vec![
            FileSlot {
                path: "a".into(),
                offset: 0,
                len: split,
                executable: false,
            },
            FileSlot {
                path: "sub/b".into(),
                offset: split,
                len: geometry.total_len - split,
                executable: false,
            },
        ]);
        let root = session_root();
        let seed_dir = root.join("seed");
        std::fs::create_dir_all(seed_dir.join("sub")).unwrap();
        std::fs::write(seed_dir.join("a"), &data[..split as usize]).unwrap();
        std::fs::write(seed_dir.join("sub/b"), &data[split as usize..]).unwrap();
        SessionWorld {
            geometry,
            data,
            hashes,
            layout,
            seed_dir,
            partial_dir: root.join("partial"),
        }
    })
}

/// Decodes what we sent to the scripted peer, as far as it is complete, and
/// checks every block: in range, and exactly the torrent's data (so only
/// verified pieces are ever served, never zeros or unverified bytes).
struct SentChecker {
    bytes: Vec<u8>,
    at: usize,
    handshake_seen: bool,
}

impl SentChecker {
    fn check(&mut self, w: &SessionWorld, max_len: u32) {
        if !self.handshake_seen {
            match Handshake::decode(&self.bytes) {
                Ok(Some(h)) => {
                    assert_eq!(h.info_hash, SESSION_INFO_HASH);
                    assert_eq!(h.peer_id, SESSION_OUR_ID);
                    self.at = wire::HANDSHAKE_LEN;
                    self.handshake_seen = true;
                }
                Ok(None) => return,
                Err(e) => panic!("we sent a bad handshake: {e}"),
            }
        }
        loop {
            let rest = &self.bytes[self.at..];
            match wire::decode_frame(rest, wire::MAX_FRAME) {
                Ok(Some((m, n))) => {
                    if let wire::Message::Piece { piece, begin, data } = m {
                        let len = u32::try_from(data.len()).unwrap();
                        assert!(
                            w.geometry
                                .request_in_range(PieceIndex(piece), begin, len, max_len),
                            "sent a block out of range: {piece} {begin} {len}"
                        );
                        let o = (w.geometry.piece_offset(PieceIndex(piece)) + u64::from(begin))
                            as usize;
                        assert!(
                            data == &w.data[o..o + data.len()],
                            "sent wrong data for piece {piece} at {begin}"
                        );
                    }
                    self.at += n;
                }
                Ok(None) => return,
                Err(e) => panic!("we sent an undecodable frame: {e}"),
            }
        }
    }
}

/// One remote peer, scripted by the fuzz input, against a real `Torrent`
/// core (seeding, or half done) with real files. Opcodes send well-formed
/// or raw messages, move the clock, drain our output, flush to disk. After
/// every step the per-peer queues stay within their caps; everything we
/// send decodes, and every block we send is in range and carries the
/// torrent's true bytes. At the end, every piece marked written is right
/// on disk.
pub fn peer_session(data: &[u8]) {
    use piecemeal::config::Config;
    use piecemeal::storage::{Disk, OpenMode};
    use piecemeal::torrent::{Torrent, TorrentParts, jobs};
    use piecemeal::wire::Message;

    let w = session_world();
    let g = w.geometry;
    let mut c = Cursor(data);
    let mode = c.byte();
    let seeding = mode & 1 == 0;
    let (dir, open_mode) = if seeding {
        (&w.seed_dir, OpenMode::ReadOnly)
    } else {
        // Even pieces right, odd pieces zero (so unverified bytes on disk
        // would show up as wrong data if ever served).
        let mut bytes = w.data.clone();
        for p in (1..g.num_pieces).step_by(2) {
            let o = g.piece_offset(PieceIndex(p)) as usize;
            bytes[o..o + g.piece_size(PieceIndex(p)) as usize].fill(0);
        }
        let split = w.layout.files[1].offset as usize;
        std::fs::create_dir_all(w.partial_dir.join("sub")).unwrap();
        std::fs::write(w.partial_dir.join("a"), &bytes[..split]).unwrap();
        std::fs::write(w.partial_dir.join("sub/b"), &bytes[split..]).unwrap();
        (&w.partial_dir, OpenMode::Create)
    };
    let disk = Disk::open(dir, w.layout.clone(), open_mode).unwrap();
    let mut have = piecemeal::bitfield::Bitfield::new(g.num_pieces);
    for p in 0..g.num_pieces {
        if seeding || p % 2 == 0 {
            have.set(PieceIndex(p));
        }
    }
    let cfg = Config {
        cache_bytes: if mode & 2 == 0 { 64 * 1024 } else { 0 },
        upload_limit: (mode & 4 != 0).then_some(64 * 1024),
        ..Config::default()
    };
    let mut now = Instant::now();
    let mut t = Torrent::new(
        TorrentParts {
            info_hash: SESSION_INFO_HASH,
            our_id: SESSION_OUR_ID,
            geometry: g,
            hashes: w.hashes.clone(),
            have,
            // Three `ut_metadata` pieces to serve (extended id 1).
            metadata: Some(vec![b'd'; 40_000].into()),
            private: false,
        },
        cfg.clone(),
        u64::from(mode),
        now,
    );
    let token = ConnToken(7);
    let outgoing = mode & 8 != 0;
    let key = t.add_peer(token, "127.0.0.1:6881".parse().unwrap(), outgoing, now);
    let mut sent = SentChecker {
        bytes: Vec::new(),
        at: 0,
        handshake_seen: false,
    };
    let mut alive = true;
    let mut wire_out = Vec::new();
    while alive && !c.is_empty() {
        wire_out.clear();
        let inflight_before = t.peer(key).map_or(0, |p| p.inflight.len());
        let op = c.byte();
        // A block reference: mostly a real block, sometimes raw numbers.
        let block = |c: &mut Cursor, raw: bool| {
            if raw {
                (c.u32(), c.u32(), c.u32())
            } else {
                let p = u32::from(c.byte()) % g.num_pieces;
                let i = u32::from(c.byte()) % g.blocks_in_piece(PieceIndex(p));
                let b = g.block(PieceIndex(p), i);
                (b.piece.0, b.begin, b.len)
            }
        };
        match op % 14 {
            0 => {
                let id = if c.byte() == 0 {
                    SESSION_OUR_ID
                } else {
                    [0x33; 20]
                };
                // The fast bit (BEP 6) unless the op's high bit is set.
                let fast = if op & 0x80 == 0 { 0x04 } else { 0 };
                let hs = Handshake {
                    reserved: [0, 0, 0, 0, 0, 0x10, 0, fast],
                    info_hash: SESSION_INFO_HASH,
                    peer_id: id,
                };
                hs.encode(&mut wire_out);
            }
            1 => {
                let n = usize::from(c.byte() % 4);
                Message::Bitfield(c.bytes(n)).encode(&mut wire_out);
            }
            2 => {
                let piece = if op & 0x80 != 0 {
                    c.u32()
                } else {
                    u32::from(c.byte() % 8)
                };
                // Have, or the fast extension's per-piece messages.
                if op & 0x40 != 0 {
                    Message::AllowedFast { piece }.encode(&mut wire_out);
                } else if op & 0x20 != 0 {
                    Message::Suggest { piece }.encode(&mut wire_out);
                } else {
                    Message::Have { piece }.encode(&mut wire_out);
                }
            }
            3 => [
                Message::Choke,
                Message::Unchoke,
                Message::Interested,
                Message::NotInterested,
                Message::KeepAlive,
                Message::HaveAll,
                Message::HaveNone,
            ][usize::from(c.byte() % 7)]
            .encode(&mut wire_out),
            4 | 5 => {
                let (piece, begin, len) = block(&mut c, op & 0x80 != 0);
                let count = 1 + usize::from(c.byte() % 16);
                for _ in 0..count {
                    if op % 14 == 4 {
                        Message::Request { piece, begin, len }.encode(&mut wire_out);
                    } else if op & 0x40 != 0 {
                        Message::Reject { piece, begin, len }.encode(&mut wire_out);
                    } else {
                        Message::Cancel { piece, begin, len }.encode(&mut wire_out);
                    }
                }
            }
            6 => {
                // The true bytes of a real block.
                let (piece, begin, len) = block(&mut c, false);
                let o = (g.piece_offset(PieceIndex(piece)) + u64::from(begin)) as usize;
                let data = &w.data[o..o + len as usize];
                Message::Piece { piece, begin, data }.encode(&mut wire_out);
            }
            7 => {
                // Wrong bytes, for a real block or at raw numbers.
                let (piece, begin, len) = block(&mut c, op & 0x80 != 0);
                let len = (len as usize).min(20_000);
                let data = vec![c.byte(); len];
                Message::Piece {
                    piece,
                    begin,
                    data: &data,
                }
                .encode(&mut wire_out);
            }
            8 => {
                let n = usize::from(c.byte());
                wire_out.extend_from_slice(c.bytes(n));
            }
            9 => {
                let id = c.byte();
                let n = usize::from(c.byte() % 64);
                Message::Unknown {
                    id,
                    payload: c.bytes(n),
                }
                .encode(&mut wire_out);
            }
            10 => {
                let dt = Duration::from_millis(u64::from(c.byte()) * 250);
                now += dt;
                let mut close = Vec::new();
                t.refill_upload(now);
                t.tick(now, dt, &mut close);
                if close.iter().any(|(tok, _)| *tok == token) {
                    alive = false;
                }
            }
            11 => {
                // The socket takes some of our output.
                let room = (usize::from(c.byte()) + 1) * 1024;
                let mut sink = Vec::new();
                if t.write_peer_to(key, &mut LimitedWriter(&mut sink, room))
                    .is_none()
                {
                    break;
                }
                sent.bytes.extend_from_slice(&sink);
                t.on_sent(key, now);
                if t.serve(key).is_err() {
                    alive = false;
                }
                jobs::read_pending(&mut t, &disk, 64);
            }
            12 => {
                jobs::write_pending(&mut t, &disk, usize::MAX, now).unwrap();
            }
            _ => {
                t.request_more(key, now);
            }
        }
        // Deliver the bytes the way the loop does: read what fits, decode.
        let mut src = &wire_out[..];
        let mut stuck = 0;
        while alive && !src.is_empty() {
            let Some(peer) = t.peer(key) else {
                alive = false;
                break;
            };
            if peer.recv_is_full() {
                stuck += 1;
                assert!(stuck < 3, "receive buffer full and nothing decodes");
            } else {
                stuck = 0;
                t.read_peer_from(key, &mut src).unwrap().unwrap();
            }
            if t.on_readable(key, now).is_err() {
                alive = false;
            }
        }
        // The shell's reads, as after every loop turn.
        jobs::read_pending(&mut t, &disk, 64);
        if t.to_close.iter().any(|(tok, _)| *tok == token) {
            alive = false;
        }
        if let Some(peer) = t.peer(key) {
            assert!(
                peer.requests.len() <= cfg.max_peer_requests,
                "request queue"
            );
            // Requests are only added while below the peer's cap (its
            // reqq less one); a later, lower cap only stops new ones.
            assert!(
                peer.inflight.len() <= inflight_before.max(peer.max_requests),
                "{} in flight, cap {}",
                peer.inflight.len(),
                peer.max_requests
            );
            assert!(
                peer.inflight.len() <= cfg.pipeline_max,
                "in-flight requests"
            );
            assert!(
                peer.send.len()
                    <= cfg.send_watermark
                        + cfg.max_request_len as usize
                        + 4096
                        + piecemeal::fast::REJECT_ROOM,
                "send buffer at {} bytes",
                peer.send.len()
            );
            assert!(peer.recv.capacity() <= wire::MAX_RECV_CAPACITY);
            peer.recv.check_invariants();
            peer.send.check_invariants();
        }
        // The cache's budget: `cache_bytes`, but never fewer than 4 piece
        // buffers (`--cache 0`).
        assert!(t.cache_memory() <= cfg.cache_bytes.max(4 * g.piece_len as usize));
        // What was sent so far is well-formed and true.
        sent.check(w, cfg.max_request_len);
    }
    // Whatever remains queued for the peer is well-formed and true too.
    if let Some(peer) = t.peer(key) {
        sent.bytes.extend_from_slice(peer.send.pending());
        sent.check(w, cfg.max_request_len);
    }
    // Pieces marked written are right on disk.
    jobs::write_pending(&mut t, &disk, usize::MAX, now).unwrap();
    if !seeding {
        let disk = Disk::open(&w.partial_dir, w.layout.clone(), OpenMode::ReadOnly).unwrap();
        for p in 0..g.num_pieces {
            if t.flushed.get(PieceIndex(p)) {
                let o = g.piece_offset(PieceIndex(p));
                let mut buf = vec![0; g.piece_size(PieceIndex(p)) as usize];
                disk.read_at(o, &mut buf).unwrap();
                assert!(
                    buf == w.data[o as usize..o as usize + buf.len()],
                    "piece {p} on disk"
                );
            }
        }
    }
}

/// A writer that accepts at most `.1` more bytes, then would block.
struct LimitedWriter<'a, W: std::io::Write>(&'a mut W, usize);

impl<W: std::io::Write> std::io::Write for LimitedWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.1 == 0 {
            return Err(std::io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(self.1);
        self.1 -= n;
        self.0.write(&buf[..n])
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The BEP 10 layer: any payload of an extended message is dispatched
/// without panicking; a handshake dictionary reads back only ids of our
/// extensions (never 0), a positive `reqq`, a bounded client name; and
/// what we advertise reads back as what we registered.
pub fn extension(data: &[u8]) {
    use piecemeal::extension::{Extended, MAX_CLIENT_NAME, Registry};
    let names = ["ut_metadata", "ut_pex", "lt_donthave"];
    let r = Registry::new(&names);
    match r.dispatch(data) {
        None => assert!(data.is_empty()),
        Some(Extended::Handshake(dict)) => {
            let p = r.parse_handshake(dict);
            for n in names {
                assert_ne!(p.id_of(n), Some(0));
            }
            assert!(p.reqq.is_none_or(|q| q > 0));
            assert!(
                p.client
                    .as_ref()
                    .is_none_or(|c| c.chars().count() <= MAX_CLIENT_NAME)
            );
        }
        Some(Extended::Message { name, .. }) => assert!(names.contains(&name)),
        Some(Extended::Unknown(id)) => assert!(usize::from(id) > names.len()),
    }
    // Our own handshake, with the input as the client name, round-trips.
    let client = String::from_utf8_lossy(data.get(..64).unwrap_or(data)).into_owned();
    let mut out = Vec::new();
    let ours = piecemeal::extension::OurHandshake {
        reqq: u32::from(data.first().copied().unwrap_or(1)).max(1),
        client: &client,
        metadata_size: None,
        listen_port: data.get(1..3).map(|b| u16::from_be_bytes([b[0], b[1]])),
    };
    r.encode_handshake(&ours, &mut out);
    let (msg, n) = wire::decode_frame(&out, wire::MAX_FRAME).unwrap().unwrap();
    assert_eq!(n, out.len());
    let wire::Message::Unknown { payload, .. } = msg else {
        panic!("not an extended message")
    };
    let Some(Extended::Handshake(dict)) = r.dispatch(payload) else {
        panic!("not a handshake")
    };
    let back = r.parse_handshake(dict);
    for n in names {
        assert_eq!(back.id_of(n), r.local_id(n), "{n}");
    }
    assert_eq!(back.listen_port, ours.listen_port.filter(|&p| p != 0));
}
/// A UDP tracker client with four exchanges waiting, one in each phase
/// that reads an answer: connecting; announcing to an IPv4 tracker;
/// announcing to an IPv6 one; scraping two hashes. Returns the client and,
/// per exchange, its tracker, the transaction id it waits on and the
/// record size of the answer it waits for.
fn udp_client_waiting(now: Instant) -> (UdpClient, Vec<(SocketAddr, u32, usize)>) {
    let v4: SocketAddr = "10.0.0.1:6969".parse().unwrap();
    let v6: SocketAddr = "[2001:db8::1]:6969".parse().unwrap();
    let params = AnnounceParams {
        info_hash: [1; 20],
        peer_id: [2; 20],
        port: 6881,
        uploaded: 0,
        downloaded: 0,
        left: 1,
        event: Event::Started,
        numwant: 50,
        key: 3,
        tracker_id: None,
    };
    let mut c = UdpClient::new(0x5eed);
    c.start_announce(0, v4, params.clone(), 8, now).unwrap();
    c.start_announce(1, v4, params.clone(), 8, now).unwrap();
    c.start_announce(2, v6, params, 8, now).unwrap();
    c.start_scrape(3, v4, &[[4; 20], [5; 20]], 8, now).unwrap();
    let txn = |p: &[u8]| u32::from_be_bytes(p[12..16].try_into().unwrap());
    let mut waiting = Vec::new();
    let mut sent = Vec::new();
    while let Some(tx) = c.poll_transmit(now) {
        sent.push(tx);
    }
    // Connect exchanges 1-3 (exchange 0 stays connecting).
    for tx in &sent[1..] {
        c.handle_datagram(
            tx.dest,
            &udp_wire::connect_response(txn(&tx.payload), 9),
            now,
        );
    }
    waiting.push((sent[0].dest, txn(&sent[0].payload), 0));
    let sizes = [6, 18, 12];
    let mut i = 0;
    while let Some(tx) = c.poll_transmit(now) {
        waiting.push((tx.dest, txn(&tx.payload), sizes[i]));
        i += 1;
    }
    assert_eq!(waiting.len(), 4);
    assert_eq!(c.stats().dropped(), 0);
    (c, waiting)
}

/// Answers to the UDP tracker client: the datagram as is, and with its
/// transaction id set to each waiting exchange's, from the right and a
/// wrong address. Each datagram either moves exactly one exchange on or is
/// counted as dropped and changes nothing; an accepted announce holds a
/// whole number of peer records of the tracker's address family.
pub fn udp_tracker_response(data: &[u8]) {
    let decoded = udp_wire::decode_response(data);
    if let Ok(r) = decoded {
        assert!(data.len() <= udp_wire::MAX_RESPONSE_LEN);
        if let udp_wire::UdpResponse::Connect { .. } = r {
            assert_eq!(data.len(), udp_wire::CONNECT_LEN);
        }
    }
    let now = Instant::now();
    let stranger: SocketAddr = "10.9.9.9:6969".parse().unwrap();
    let (_, waiting) = udp_client_waiting(now);
    let mut variants: Vec<(Vec<u8>, Option<usize>)> = vec![(data.to_vec(), None)];
    if data.len() >= 8 {
        for (i, (_, txn, _)) in waiting.iter().enumerate() {
            let mut d = data.to_vec();
            d[4..8].copy_from_slice(&txn.to_be_bytes());
            variants.push((d, Some(i)));
        }
    }
    for (d, target) in variants {
        for from_right in [true, false] {
            let (mut c, waiting) = udp_client_waiting(now);
            let from = match target {
                Some(i) if from_right => waiting[i].0,
                _ => stranger,
            };
            c.handle_datagram(from, &d, now);
            let dropped = c.stats().dropped();
            let event = c.poll_event();
            let next = c.poll_transmit(now);
            let moved = usize::from(event.is_some()) + usize::from(next.is_some());
            assert!(
                dropped + moved as u64 == 1,
                "dropped {dropped}, moved {moved}"
            );
            if target.is_none() || !from_right {
                assert_eq!(dropped, 1, "an answer nobody waits for was taken");
            }
            if let Some(ev) = event {
                let (_, _, size) = waiting[ev.owner];
                if let Ok(UdpAnswer::Announce(a)) = &ev.outcome {
                    assert_eq!((d.len() - 20) % size, 0);
                    assert!(a.peers.len() <= (d.len() - 20) / size);
                    assert!(a.interval >= 30);
                }
                if let Ok(UdpAnswer::Scrape(s)) = &ev.outcome {
                    assert!(s.len() <= 2);
                }
            }
        }
    }
}

/// Requests to the built-in tracker's UDP side, from loopback, IPv4 and
/// IPv6: a datagram without a valid connection id gets at most a 16-byte
/// connect answer, never more bytes than it has; with the valid id patched
/// in, an announce or scrape gets an answer of its own kind (or an error)
/// with its transaction id.
pub fn udp_tracker_request(data: &[u8]) {
    let now = Instant::now();
    let mut t = Tracker::new(ServerConfig::default());
    let mut s = UdpServer::new([7; 32], UdpServerConfig::default(), now);
    let mut out = Vec::new();
    let remotes: [SocketAddr; 3] = [
        "127.0.0.1:40000".parse().unwrap(),
        "10.0.0.1:40001".parse().unwrap(),
        "[2001:db8::1]:40002".parse().unwrap(),
    ];
    let decoded = udp_wire::decode_request(data).ok();
    for remote in remotes {
        let valid = s.connection_id(remote.ip(), now);
        if s.handle(&mut t, remote, data, now, &mut out) {
            let authenticated = data.len() >= 8 && data[..8] == valid.to_be_bytes();
            assert!(authenticated || out.len() <= data.len(), "amplification");
            let r = udp_wire::decode_response(&out).expect("a well-formed answer");
            assert_eq!(Some(r.txn()), decoded.map(|d| d.txn()));
        } else {
            assert!(out.is_empty());
        }
        if data.len() >= 16 && data[8..12] != [0, 0, 0, 0] {
            let mut d = data.to_vec();
            d[..8].copy_from_slice(&valid.to_be_bytes());
            if s.handle(&mut t, remote, &d, now, &mut out) {
                let req = udp_wire::decode_request(&d).unwrap();
                let r = udp_wire::decode_response(&out).expect("a well-formed answer");
                assert_eq!(r.txn(), req.txn());
                match (req, r) {
                    (
                        udp_wire::UdpRequest::Scrape { hashes, .. },
                        udp_wire::UdpResponse::Scrape { records, .. },
                    ) => {
                        assert_eq!(records.len() / 12, hashes.len() / 20);
                        assert!(out.len() < d.len());
                    }
                    (
                        udp_wire::UdpRequest::Announce { .. },
                        udp_wire::UdpResponse::Announce { peers, .. },
                    ) => {
                        let size = if remote.is_ipv6() { 18 } else { 6 };
                        assert_eq!(peers.len() % size, 0);
                    }
                    (_, udp_wire::UdpResponse::Error { .. }) => {}
                    (req, r) => panic!("{req:?} answered with {r:?}"),
                }
            }
        }
    }
    t.expire(now + Duration::from_secs(3600));
}

/// The MSE responder fed arbitrary bytes in arbitrary chunks. The first
/// byte picks the policy, the chunking and the mode: raw input (a key and
/// whatever follows), or, with its top bit set, a real initiator's steps 1
/// and 3 with the rest of the input XORed into step 3 from the SKEY hash
/// on (so the fuzzer steers the decrypted VC, crypto_provide, padding and
/// IA lengths). Properties: no byte past what was offered is taken, at
/// most the sync window (or an IA) is buffered, an error stays, and a
/// finished exchange names the one torrent the lookup knows.
pub fn mse(data: &[u8]) {
    use piecemeal::mse::{self, Handshake, KEY_LEN, MAX_PAD, Policy};
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let hash = [7u8; 20];
    let known = mse::req2_hash(&hash);
    let lookup = |h: &[u8; 20]| (*h == known).then_some(hash);
    let now = Instant::now();
    let policy = match mode % 3 {
        0 => Policy::Prefer,
        1 => Policy::Require,
        _ => Policy::Off,
    };
    let secret_b = [3u8; 20];
    let input: Vec<u8> = if mode & 0x80 == 0 {
        rest.to_vec()
    } else {
        let mut a = Handshake::initiator(hash, Policy::Prefer, [1; 20], &[], now);
        let step1 = a.poll_transmit().unwrap_or_default();
        let mut peer = Handshake::responder(policy, secret_b, &[], now);
        peer.handle_input(&step1, lookup).unwrap();
        let yb = peer.poll_transmit().unwrap_or_default();
        a.handle_input(&yb, |_| None).unwrap();
        let mut step3 = a.poll_transmit().unwrap_or_default();
        for (i, &x) in rest.iter().enumerate() {
            match step3.get_mut(20 + i) {
                Some(b) => *b ^= x,
                None => step3.push(x),
            }
        }
        let mut v = step1;
        v.extend(step3);
        v
    };
    let mut b = Handshake::responder(policy, secret_b, &[], now);
    let mut chunks = Chunks(u32::from(mode) | 0x100);
    let mut at = 0;
    while at < input.len() {
        let n = chunks.next(700).min(input.len() - at);
        let chunk = &input[at..at + n];
        match b.handle_input(chunk, lookup) {
            Ok(k) => {
                assert!(k <= n, "took {k} of {n}");
                at += k;
                assert!(
                    b.buffered() <= (MAX_PAD + 20).max(usize::from(u16::MAX)),
                    "buffered {}",
                    b.buffered()
                );
                let _ = b.poll_transmit();
                if b.is_done() {
                    break;
                }
                if k == 0 {
                    // Only a finished exchange refuses bytes.
                    panic!("stalled at {at} of {}", input.len());
                }
            }
            Err(e) => {
                assert_eq!(b.handle_input(b"more", lookup), Err(e));
                // Raw input (no real key exchange) never gets past the
                // sync search: it fails within a key, the padding limit
                // and the marker.
                if mode & 0x80 == 0 {
                    assert!(at <= KEY_LEN + MAX_PAD + 20, "failed only after {at}");
                }
                return;
            }
        }
    }
    if b.is_done() {
        let d = b.finish().unwrap();
        assert_eq!(d.info_hash, hash);
        assert!(d.initial.len() <= usize::from(u16::MAX));
    }
}

/// A magnet link from arbitrary bytes (as UTF-8, lossily): it parses or
/// is refused, never panics; what parses keeps within the caps, and its
/// peers carry a port.
pub fn magnet(data: &[u8]) {
    use piecemeal::magnet::{MAX_MAGNET_LEN, MAX_PEERS, MAX_TRACKERS, Magnet};
    let text = String::from_utf8_lossy(data);
    // Also as a link's query, so the fuzzer need not find the prefix.
    for link in [text.to_string(), format!("magnet:?{text}")] {
        let Ok(m) = Magnet::parse(&link) else {
            continue;
        };
        assert!(link.len() <= MAX_MAGNET_LEN);
        assert!(m.trackers.len() <= MAX_TRACKERS && m.peers.len() <= MAX_PEERS);
        assert!(m.peers.iter().all(|p| p.port > 0 && !p.host.is_empty()));
        assert!(m.trackers.iter().all(|t| !t.is_empty()));
    }
}

/// KRPC (BEP 5): decoding never panics; what decodes is within the
/// limits and re-encodes to the same message; a DHT node fed the bytes
/// answers with at most `max_amplification` times their size.
pub fn krpc(data: &[u8]) {
    use piecemeal::dht::krpc::{self, Body, OutQuery, Query};
    use piecemeal::dht::{DhtConfig, Node, NodeId};
    let now = Instant::now();
    let from: SocketAddr = "10.1.2.3:6881".parse().unwrap();
    let mut node = Node::new(NodeId([7; 20]), DhtConfig::default(), 1, now);
    node.handle_datagram(from, data, now);
    while let Some(t) = node.poll_transmit() {
        assert!(
            t.data.len() <= (data.len() * 4).max(128),
            "answer too large"
        );
        assert!(krpc::decode(&t.data).is_ok(), "our answer does not decode");
    }
    let Ok(m) = krpc::decode(data) else {
        return;
    };
    assert!(data.len() <= krpc::MAX_MESSAGE_LEN && m.tid.len() <= krpc::MAX_TID_LEN);
    match m.body {
        Body::Response(r) => {
            assert_eq!(r.nodes.len() % krpc::COMPACT_NODE_LEN, 0);
            assert!(r.nodes().count() * krpc::COMPACT_NODE_LEN == r.nodes.len());
            assert!(r.values().count() <= data.len() / 8);
        }
        Body::Query { sender, query } => {
            let q = match query {
                Query::Ping => OutQuery::Ping,
                Query::FindNode { target } => OutQuery::FindNode(target),
                Query::GetPeers { info_hash } => OutQuery::GetPeers(info_hash),
                Query::AnnouncePeer {
                    info_hash,
                    port,
                    implied_port,
                    token,
                } => OutQuery::AnnouncePeer(info_hash, port, implied_port, token),
                Query::Other { .. } => return,
            };
            let again = krpc::encode_query(m.tid, &sender, &q, m.read_only);
            let m2 = krpc::decode(&again).expect("our encoding decodes");
            assert_eq!(m2.tid, m.tid);
            match m2.body {
                Body::Query {
                    sender: s2,
                    query: q2,
                } => {
                    assert_eq!(s2, sender);
                    assert_eq!(q2, query);
                }
                other => panic!("re-encoded query decodes as {other:?}"),
            }
        }
        Body::Error { .. } => {}
    }
}
/// `ut_pex` payloads (BEP 11): the codec reads at most
/// `ut_pex::MAX_ENTRIES` addresses per list, and what it read encodes and
/// reads back the same; a public torrent core fed the payload as a peer's
/// message takes at most `MAX_ADDED` addresses, none with port 0, and its
/// next message to the peer is a well-formed `ut_pex` message.
pub fn ut_pex(data: &[u8]) {
    use piecemeal::torrent::pex::{MAX_ADDED, MAX_DROPPED};
    use piecemeal::ut_pex::{MAX_ENTRIES, Pex, encode};
    if let Some(p) = Pex::parse(data) {
        let added: Vec<(SocketAddr, u8)> = p.added().collect();
        let dropped: Vec<SocketAddr> = p.dropped().collect();
        assert!(added.len() <= 2 * MAX_ENTRIES && dropped.len() <= 2 * MAX_ENTRIES);
        assert!(added.len() <= p.added_len());
        let mut out = Vec::new();
        encode(1, &added, &dropped, &mut out);
        let (msg, n) = wire::decode_frame(&out, wire::MAX_FRAME).unwrap().unwrap();
        assert_eq!(n, out.len());
        let wire::Message::Unknown { payload, .. } = msg else {
            panic!("not an extended message")
        };
        let back = Pex::parse(&payload[1..]).expect("our own message reads back");
        assert_eq!(back.added().collect::<Vec<_>>(), added);
        assert_eq!(back.dropped().collect::<Vec<_>>(), dropped);
    }
    // The core: a peer that speaks ut_pex sends `data` as its message.
    let now = Instant::now();
    let (mut t, key) = extension_core(b"d1:md6:ut_pexi3ee1:pi7000ee", now);
    let ours = 2; // ut_metadata is 1
    let mut frame = Vec::new();
    let len = u32::try_from(2 + data.len()).unwrap();
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&[wire::EXTENDED_ID, ours]);
    frame.extend_from_slice(data);
    t.feed_peer(key, &frame);
    // A frame over the wire limit closes the connection; anything else is
    // taken or ignored.
    let r = t.on_readable(key, now);
    assert!(r.is_ok() || frame.len() > wire::MAX_FRAME as usize + 4);
    let learnt: Vec<SocketAddr> = t.drain_pex_peers().collect();
    assert!(learnt.len() <= MAX_ADDED);
    assert!(learnt.iter().all(|a| a.port() != 0));
    assert!(t.pex_stats().taken as usize <= MAX_ADDED);
    // A second peer, and the first is told about it.
    if r.is_ok() {
        let other = t.add_peer(ConnToken(8), "10.1.1.1:6881".parse().unwrap(), true, now);
        let mut hs = Vec::new();
        Handshake {
            reserved: [0; 8],
            info_hash: SESSION_INFO_HASH,
            peer_id: [0x44; 20],
        }
        .encode(&mut hs);
        t.feed_peer(other, &hs);
        t.on_readable(other, now).unwrap();
        // The first tick schedules the message, a later one sends it.
        let mut close = Vec::new();
        for s in [1, 5] {
            t.tick(
                now + Duration::from_secs(s),
                Duration::from_secs(1),
                &mut close,
            );
        }
        let mut out = Vec::new();
        t.write_peer_to(key, &mut out).unwrap().unwrap();
        let mut rest = &out[..];
        let mut pex = 0;
        while let Some((msg, n)) = wire::decode_frame(rest, wire::MAX_FRAME).unwrap() {
            if let wire::Message::Unknown { id: 20, payload } = msg
                && payload.first() == Some(&3)
            {
                let p = Pex::parse(&payload[1..]).unwrap();
                assert!(p.added().count() <= MAX_ADDED && p.dropped().count() <= MAX_DROPPED);
                let other: SocketAddr = "10.1.1.1:6881".parse().unwrap();
                assert!(p.added().any(|(a, _)| a == other));
                pex += 1;
            }
            rest = &rest[n..];
        }
        assert_eq!(pex, 1);
    }
}

/// `ut_metadata` payloads (BEP 9): the codec never panics, what it reads
/// encodes and reads back the same; a core serving metadata answers a
/// peer's message with at most one `data` or `reject`, or closes it as a
/// flood, never anything else.
pub fn ut_metadata(data: &[u8]) {
    use piecemeal::ut_metadata::Msg;
    if let Some(m) = Msg::parse(data) {
        let mut out = Vec::new();
        m.encode(4, &mut out);
        let (msg, n) = wire::decode_frame(&out, wire::MAX_FRAME).unwrap().unwrap();
        assert_eq!(n, out.len());
        let wire::Message::Unknown { payload, .. } = msg else {
            panic!("not an extended message")
        };
        assert_eq!(payload[0], 4);
        assert_eq!(Msg::parse(&payload[1..]), Some(m));
    }
    let now = Instant::now();
    let (mut t, key) = extension_core(b"d1:md11:ut_metadatai3eee", now);
    let mut frame = Vec::new();
    let len = u32::try_from(2 + data.len()).unwrap();
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&[wire::EXTENDED_ID, 1]);
    frame.extend_from_slice(data);
    t.feed_peer(key, &frame);
    if t.on_readable(key, now).is_err() {
        return;
    }
    let mut out = Vec::new();
    t.write_peer_to(key, &mut out).unwrap().unwrap();
    let mut rest = &out[..];
    let mut answers = 0;
    while let Some((msg, n)) = wire::decode_frame(rest, wire::MAX_FRAME).unwrap() {
        if let wire::Message::Unknown { id: 20, payload } = msg {
            assert_eq!(payload.first(), Some(&3), "sent with the peer's id");
            assert!(matches!(
                Msg::parse(&payload[1..]),
                Some(Msg::Data { .. } | Msg::Reject { .. })
            ));
            answers += 1;
        }
        rest = &rest[n..];
    }
    assert!(answers <= 1);
}

/// A public torrent core serving 40,000 bytes of metadata (`ut_metadata`
/// is our id 1, `ut_pex` 2) with one peer at 127.0.0.1:6881 (outgoing)
/// past both handshakes, whose extension handshake is `ext`; what we sent
/// it so far is thrown away.
fn extension_core(
    ext: &[u8],
    now: Instant,
) -> (piecemeal::torrent::Torrent, piecemeal::ids::PeerKey) {
    use piecemeal::bitfield::Bitfield;
    use piecemeal::config::Config;
    use piecemeal::geometry::Geometry;
    use piecemeal::torrent::{Torrent, TorrentParts};
    let g = Geometry::new(4 * 16384, 16384).unwrap();
    let mut t = Torrent::new(
        TorrentParts {
            info_hash: SESSION_INFO_HASH,
            our_id: SESSION_OUR_ID,
            geometry: g,
            hashes: vec![[0; 20]; 4],
            have: Bitfield::new(4),
            metadata: Some(vec![b'd'; 40_000].into()),
            private: false,
        },
        Config::default(),
        1,
        now,
    );
    let key = t.add_peer(ConnToken(7), "127.0.0.1:6881".parse().unwrap(), true, now);
    let mut bytes = Vec::new();
    Handshake {
        reserved: [0, 0, 0, 0, 0, 0x10, 0, 0],
        info_hash: SESSION_INFO_HASH,
        peer_id: [0x33; 20],
    }
    .encode(&mut bytes);
    let mut payload = vec![0];
    payload.extend_from_slice(ext);
    wire::Message::Unknown {
        id: wire::EXTENDED_ID,
        payload: &payload,
    }
    .encode(&mut bytes);
    t.feed_peer(key, &bytes);
    t.on_readable(key, now).unwrap();
    let mut sink = Vec::new();
    t.write_peer_to(key, &mut sink).unwrap().unwrap();
    (t, key)
}
