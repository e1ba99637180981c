//! The built-in HTTP tracker, sans-IO: a request head goes in, a complete
//! HTTP response comes out.
//!
//! The shell accumulates a connection's bytes, asks [`frame_request`] whether
//! the head is complete (at most [`MAX_REQUEST_HEAD`] bytes, `GET` only),
//! then passes the head to [`Tracker::handle`], writes the returned bytes and
//! closes the connection. [`Tracker::expire`] runs on a timer. The UDP side
//! (`udp_server.rs`, BEP 15) feeds the same tables through
//! [`Tracker::announce_parsed`] and [`Tracker::scrape_counts`].
//!
//! Peers are keyed by `(info_hash, peer_id)`. The address handed to other
//! peers is the connection's remote IP with the announced port; the `ip`
//! parameter is honoured only when the request comes from a loopback address
//! (so local test swarms can advertise another local address) and is
//! ignored otherwise, because it would let anyone point a swarm at a third
//! party. A `stopped` from an IP other than the one stored for that peer id
//! is ignored for the same reason.
//!
//! # Bounds and quotas
//!
//! Strangers fill these tables, so each has a cap, an eviction rule and a
//! per-address quota (addresses are IPv4 addresses and IPv6 /64 prefixes;
//! the tracker's own host, 127.0.0.1 and ::1, has no quota):
//!
//! | table | cap (default) | when full | per address |
//! |---|---|---|---|
//! | torrents | `max_torrents` (1,000) | the stalest torrent is dropped | in at most `max_torrents_per_ip` (64) |
//! | peers of a torrent | `max_peers_per_torrent` (2,000) | the stalest peer is dropped | at most `max_peers_per_ip` (8) per torrent; its stalest entry makes room |
//! | peers in all | `max_total_peers` (50,000) | the stalest peer of the largest torrent is dropped | — |
//!
//! A peer id held by a fresh entry from another address is refused, so an id
//! cannot be squatted to move or silence an honest peer.
//!
//! Memory at the caps: about 120 bytes per peer (the entry, its index slot,
//! quota counts) and a few hundred per torrent, so at most about 8 MiB
//! (`memory_bound_at_the_caps_is_well_below_16_mib` checks the counts).

#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::bencode::Writer;

use super::Event;
use super::http::{BadEscape, split_query};

/// Largest request head accepted.
pub const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// Most headers in a request head (more is answered like an over-long head).
const MAX_HEADERS: usize = 64;
/// Most query parameters in one request.
const MAX_PARAMS: usize = 128;
/// Decoded parameter names are compared up to this length (longer names
/// are none of ours).
const NAME_CAP: usize = 16;
/// Decoded announce values are kept up to this many bytes. Every value we
/// accept is shorter (20-byte ids, 20-digit numbers, 45-character IPs), and
/// each check gives the same verdict on the first 64 bytes of a longer value
/// as on the whole, so cutting changes no answer.
const VALUE_CAP: usize = 64;

/// Settings of the built-in tracker.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// `interval` sent to clients, in seconds.
    pub interval: u32,
    /// `min interval` sent to clients, in seconds.
    pub min_interval: u32,
    /// A peer not heard from for this long is dropped by `expire`.
    pub peer_ttl: Duration,
    /// Most peers returned by one announce.
    pub max_numwant: u32,
    /// Peers returned when the client sends no `numwant`.
    pub default_numwant: u32,
    /// Most torrents tracked at once; a new torrent beyond it replaces the
    /// stalest one.
    pub max_torrents: usize,
    /// Most peers per torrent; a new peer beyond it replaces the stalest.
    pub max_peers_per_torrent: usize,
    /// Most peers in all torrents together.
    pub max_total_peers: usize,
    /// Most entries one address may hold in one torrent.
    pub max_peers_per_ip: usize,
    /// Most torrents one address may be present in.
    pub max_torrents_per_ip: usize,
    /// When set, only these info-hashes are tracked.
    pub allow: Option<HashSet<[u8; 20]>>,
}

/// libtorrent never re-announces sooner than this (its `min_announce_interval`
/// setting, 300 s by default), whatever `interval` the tracker sends.
pub const CLIENT_MIN_REANNOUNCE_SECS: u32 = 300;

impl ServerConfig {
    /// Defaults, with this announce `interval`: `min interval` is half of
    /// it, and a peer is kept for two announces it may really make (at
    /// least [`CLIENT_MIN_REANNOUNCE_SECS`] apart) plus 30 s.
    pub fn with_interval(interval: u32) -> ServerConfig {
        let reannounce = u64::from(interval.max(CLIENT_MIN_REANNOUNCE_SECS));
        ServerConfig {
            interval,
            min_interval: interval.div_ceil(2),
            peer_ttl: Duration::from_secs(2 * reannounce + 30),
            ..ServerConfig::default()
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            interval: 60,
            min_interval: 30,
            peer_ttl: Duration::from_secs(2 * u64::from(CLIENT_MIN_REANNOUNCE_SECS) + 30),
            max_numwant: 200,
            default_numwant: 50,
            max_torrents: 1000,
            max_peers_per_torrent: 2000,
            max_total_peers: 50_000,
            max_peers_per_ip: 8,
            max_torrents_per_ip: 64,
            allow: None,
        }
    }
}

/// Result of [`frame_request`] on the bytes received so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadStatus {
    /// The head is not complete yet.
    Partial,
    /// The head is complete and is this many bytes long.
    Complete(usize),
}

/// Why a request cannot be served; the shell closes the connection (after
/// sending [`RequestError::response`] if it likes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestError {
    /// The head is longer than [`MAX_REQUEST_HEAD`].
    TooLarge,
    /// The head is not valid HTTP/1.x.
    Malformed,
    /// The method is not `GET`.
    Method,
}

impl RequestError {
    /// A complete HTTP response reporting this error.
    pub fn response(self) -> Vec<u8> {
        match self {
            RequestError::TooLarge => http_response(431, "Request Header Fields Too Large", b""),
            RequestError::Malformed => http_response(400, "Bad Request", b""),
            RequestError::Method => http_response(405, "Method Not Allowed", b""),
        }
    }
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RequestError::TooLarge => "request head too large",
            RequestError::Malformed => "malformed request",
            RequestError::Method => "method not allowed",
        })
    }
}

impl std::error::Error for RequestError {}

/// Is there a complete request head at the start of `buf`? It must fit in
/// [`MAX_REQUEST_HEAD`] bytes and use `GET`. Bytes after the head are not
/// looked at.
pub fn frame_request(buf: &[u8]) -> Result<HeadStatus, RequestError> {
    let window = buf.get(..MAX_REQUEST_HEAD).unwrap_or(buf);
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(window) {
        Ok(httparse::Status::Complete(n)) => {
            if req.method != Some("GET") {
                return Err(RequestError::Method);
            }
            Ok(HeadStatus::Complete(n))
        }
        Ok(httparse::Status::Partial) => {
            if let Some(m) = req.method
                && m != "GET"
            {
                return Err(RequestError::Method);
            }
            if buf.len() >= MAX_REQUEST_HEAD {
                Err(RequestError::TooLarge)
            } else {
                Ok(HeadStatus::Partial)
            }
        }
        Err(httparse::Error::TooManyHeaders) => Err(RequestError::TooLarge),
        Err(_) => Err(RequestError::Malformed),
    }
}

/// A complete HTTP/1.1 response with a `text/plain` body.
fn http_response(code: u16, reason: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    http_response_into(&mut out, code, reason, body);
    out
}

/// Append a complete HTTP/1.1 response with a `text/plain` body to `out`.
fn http_response_into(out: &mut Vec<u8>, code: u16, reason: &str, body: &[u8]) {
    out.reserve(100 + body.len());
    // Writing to a Vec cannot fail.
    let _ = write!(
        out,
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    out.extend_from_slice(body);
}

/// A 200 response whose body is a bencoded `failure reason`.
fn failure(reason: &str) -> Vec<u8> {
    let mut w = Writer::new();
    w.dict().str("failure reason").str(reason).end();
    http_response(200, "OK", &w.finish())
}

/// Decode the `%XX` escapes of `src` (as `percent_decode`, `+` stays `+`)
/// into `dst`, keeping at most `dst.len()` bytes but checking every escape.
/// Returns the whole decoded length.
fn decode_capped(src: &[u8], dst: &mut [u8]) -> Result<usize, BadEscape> {
    let hex = |b: Option<&u8>| b.copied().and_then(super::http::hex_value).ok_or(BadEscape);
    let mut n = 0;
    let mut i = 0;
    while let Some(&b) = src.get(i) {
        let byte = if b == b'%' {
            let v = (hex(src.get(i + 1))? << 4) | hex(src.get(i + 2))?;
            i += 3;
            v
        } else {
            i += 1;
            b
        };
        if let Some(slot) = dst.get_mut(n) {
            *slot = byte;
        }
        n += 1;
    }
    Ok(n)
}

/// Call `f` with each raw (still escaped) `(name, value)` pair of a query,
/// split as `split_query` does: empty pieces skipped, a piece without `=`
/// has an empty value, more than [`MAX_PARAMS`] pairs is an error.
fn for_each_pair(
    query: &[u8],
    mut f: impl FnMut(&[u8], &[u8]) -> Result<(), BadEscape>,
) -> Result<(), BadEscape> {
    let pieces = query.split(|&b| b == b'&').filter(|p| !p.is_empty());
    for (count, piece) in pieces.enumerate() {
        if count >= MAX_PARAMS {
            return Err(BadEscape);
        }
        let mut halves = piece.splitn(2, |&b| b == b'=');
        let name = halves.next().unwrap_or_default();
        let value = halves.next().unwrap_or_default();
        f(name, value)?;
    }
    Ok(())
}

/// Check every escape of a query without keeping anything.
fn check_query(query: &[u8]) -> Result<(), BadEscape> {
    let mut sink = [0u8; 0];
    for_each_pair(query, |name, value| {
        decode_capped(name, &mut sink)?;
        decode_capped(value, &mut sink)?;
        Ok(())
    })
}

/// One peer of one torrent.
#[derive(Debug, Clone)]
struct Peer {
    id: [u8; 20],
    addr: SocketAddr,
    /// Who announced it (the quota key of the connection's address).
    source: IpAddr,
    seeder: bool,
    last_seen: Instant,
}

/// The quota key of an address: IPv4 as is, IPv6 by its /64; `None` for
/// the tracker's own host (no quota).
pub(super) fn quota_key(ip: IpAddr) -> Option<IpAddr> {
    match ip {
        IpAddr::V4(v4) if v4 == std::net::Ipv4Addr::LOCALHOST => None,
        IpAddr::V6(v6) if v6.is_loopback() => None,
        IpAddr::V4(v4) => Some(IpAddr::V4(v4)),
        IpAddr::V6(v6) => {
            let mut o = v6.octets();
            if let Some(host) = o.get_mut(8..) {
                host.fill(0);
            }
            Some(IpAddr::V6(o.into()))
        }
    }
}

/// The swarm of one info-hash.
#[derive(Debug, Default)]
struct Swarm {
    /// Peers in no particular order (removal swaps the last one in).
    peers: Vec<Peer>,
    /// Peer id -> index in `peers`.
    index: HashMap<[u8; 20], usize>,
    /// How many of `peers` are seeders.
    seeders: usize,
    /// `completed` events seen (scrape's `downloaded`).
    downloaded: u64,
    /// Where the next peer selection starts, so successive announces see
    /// different peers.
    rotate: usize,
    /// Entries per announcing address (quota key).
    per_ip: HashMap<IpAddr, u32>,
    /// Last announce of any of its peers.
    last_active: Option<Instant>,
}

impl Swarm {
    /// Add `p` (its id must not be in the swarm). Returns whether its
    /// source address is new to this swarm.
    fn add(&mut self, p: Peer) -> bool {
        let mut new_ip = false;
        if let Some(k) = quota_key(p.source) {
            let n = self.per_ip.entry(k).or_insert(0);
            new_ip = *n == 0;
            *n += 1;
        }
        if p.seeder {
            self.seeders += 1;
        }
        self.index.insert(p.id, self.peers.len());
        self.peers.push(p);
        new_ip
    }

    /// Remove the peer `id`. Returns the quota key of its address when that
    /// address has no entry left in this swarm.
    fn remove(&mut self, id: &[u8; 20]) -> Option<IpAddr> {
        let i = self.index.remove(id)?;
        let gone = self.peers.swap_remove(i);
        if gone.seeder {
            self.seeders -= 1;
        }
        if let Some(moved) = self.peers.get(i) {
            self.index.insert(moved.id, i);
        }
        let k = quota_key(gone.source)?;
        let n = self.per_ip.get_mut(&k)?;
        *n = n.saturating_sub(1);
        if *n == 0 {
            self.per_ip.remove(&k);
            return Some(k);
        }
        None
    }

    /// Drop peers not heard from for `ttl`; addresses that left the swarm
    /// go to `left`.
    fn expire(&mut self, now: Instant, ttl: Duration, left: &mut Vec<IpAddr>) {
        let mut i = 0;
        while let Some(p) = self.peers.get(i) {
            if now.saturating_duration_since(p.last_seen) >= ttl {
                let id = p.id;
                left.extend(self.remove(&id));
            } else {
                i += 1;
            }
        }
    }

    /// The peer heard from least recently, among those from `source` when
    /// given.
    fn stalest(&self, source: Option<IpAddr>) -> Option<[u8; 20]> {
        self.peers
            .iter()
            .filter(|p| source.is_none_or(|k| quota_key(p.source) == Some(k)))
            .min_by_key(|p| p.last_seen)
            .map(|p| p.id)
    }

    /// Up to `want` peers other than `me` of `family`, starting at the
    /// rotation cursor; a seeder only gets leechers.
    /// The indices go to `picked` (cleared first).
    fn select(
        &mut self,
        me: &[u8; 20],
        me_seeder: bool,
        want: usize,
        family: PeerFamily,
        picked: &mut Vec<usize>,
    ) {
        picked.clear();
        let n = self.peers.len();
        if n == 0 || want == 0 {
            return;
        }
        let start = self.rotate % n;
        let mut looked = 0;
        while looked < n && picked.len() < want {
            let i = (start + looked) % n;
            looked += 1;
            let Some(p) = self.peers.get(i) else {
                continue; // never: `i < n`
            };
            if &p.id == me || (me_seeder && p.seeder) || !family.admits(p.addr) {
                continue;
            }
            picked.push(i);
        }
        self.rotate = (start + looked) % n;
    }

    fn check_invariants(&self) {
        debug_assert_eq!(self.peers.len(), self.index.len());
        debug_assert_eq!(
            self.per_ip.values().map(|&n| n as usize).sum::<usize>(),
            self.peers
                .iter()
                .filter(|p| quota_key(p.source).is_some())
                .count()
        );
        debug_assert_eq!(self.seeders, self.peers.iter().filter(|p| p.seeder).count());
        for (i, p) in self.peers.iter().enumerate() {
            debug_assert_eq!(self.index.get(&p.id), Some(&i));
        }
    }
}

/// An announce, whichever protocol carried it (HTTP query or BEP 15
/// datagram), parsed and checked: what [`Tracker`]'s tables are fed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnnounceRequest {
    pub info_hash: [u8; 20],
    pub peer_id: [u8; 20],
    /// The peer's listening port (not 0).
    pub port: u16,
    /// Bytes it still misses (0: a seeder).
    pub left: u64,
    pub event: Event,
    /// Peers wanted; `None` for the default.
    pub numwant: Option<u32>,
    /// The address it asks to be listed under: honoured only from
    /// loopback (see the module docs).
    pub ip: Option<IpAddr>,
}

/// Which peers an answer can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerFamily {
    /// Both (HTTP: `peers` and `peers6`).
    Any,
    /// IPv4 only (a BEP 15 answer over IPv4: 6-byte records).
    V4,
    /// IPv6 only (a BEP 15 answer over IPv6: 18-byte records).
    V6,
}

impl PeerFamily {
    fn admits(self, a: SocketAddr) -> bool {
        match self {
            PeerFamily::Any => true,
            PeerFamily::V4 => a.is_ipv4(),
            PeerFamily::V6 => a.is_ipv6(),
        }
    }
}

/// The swarm as an announce leaves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SwarmCounts {
    /// Seeders.
    pub complete: usize,
    /// Leechers.
    pub incomplete: usize,
}

/// An HTTP announce: the shared parameters plus the answer's form.
struct Announce {
    req: AnnounceRequest,
    compact: bool,
    no_peer_id: bool,
}

/// The counts and form of an announce answer.
struct Reply {
    complete: usize,
    incomplete: usize,
    compact: bool,
    no_peer_id: bool,
}

impl Reply {
    /// Append the HTTP response with `peers[i]` for each `i` of `picked` to
    /// `out`; `body` is scratch space.
    fn write(
        &self,
        cfg: &ServerConfig,
        peers: &[Peer],
        picked: &[usize],
        body: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) {
        body.clear();
        // Keys in sorted order; writing to a Vec cannot fail.
        let _ = write!(
            body,
            "d8:completei{}e10:incompletei{}e8:intervali{}e12:min intervali{}e",
            to_i64(self.complete),
            to_i64(self.incomplete),
            cfg.interval,
            cfg.min_interval
        );
        // `picked` holds indices into `peers` (from `Swarm::select`).
        let chosen = || picked.iter().filter_map(|&i| peers.get(i));
        if self.compact {
            let v4 = chosen().filter(|p| p.addr.is_ipv4()).count();
            let _ = write!(body, "5:peers{}:", v4 * 6);
            for p in chosen().filter(|p| p.addr.is_ipv4()) {
                crate::compact::put(p.addr, body);
            }
            let v6 = chosen().filter(|p| p.addr.is_ipv6()).count();
            if v6 > 0 {
                let _ = write!(body, "6:peers6{}:", v6 * 18);
                for p in chosen().filter(|p| p.addr.is_ipv6()) {
                    crate::compact::put(p.addr, body);
                }
            }
        } else {
            let mut w = Writer::new();
            w.str("peers").list();
            for p in chosen() {
                w.dict().str("ip").str(&p.addr.ip().to_string());
                if !self.no_peer_id {
                    w.str("peer id").bytes(&p.id);
                }
                w.str("port").int(p.addr.port().into()).end();
            }
            w.end();
            body.extend_from_slice(&w.finish());
        }
        body.push(b'e');
        http_response_into(out, 200, "OK", body);
    }
}

/// The in-memory tracker. See the module docs.
#[derive(Debug)]
pub struct Tracker {
    cfg: ServerConfig,
    swarms: HashMap<[u8; 20], Swarm>,
    /// Peers in all swarms.
    total_peers: usize,
    /// Per address (quota key): the swarms it has an entry in.
    presence: HashMap<IpAddr, u32>,
    /// The swarm that gives up peers while the peer table is full, and how
    /// many more it gives before the largest is looked for again.
    shrinking: Option<([u8; 20], u32)>,
    /// Scratch: the body of the answer being built.
    body: Vec<u8>,
    /// Scratch: indices of the peers picked for an answer.
    picked: Vec<usize>,
}

/// Peers one swarm gives up, while the peer table is full, before the
/// largest swarm is looked for again (it stays among the largest: at most
/// this many below the largest at the time it was found).
const SHRINK_RUN: u32 = 64;
impl Tracker {
    /// An empty tracker.
    pub fn new(cfg: ServerConfig) -> Self {
        Tracker {
            cfg,
            swarms: HashMap::new(),
            total_peers: 0,
            presence: HashMap::new(),
            shrinking: None,
            body: Vec::new(),
            picked: Vec::new(),
        }
    }

    /// Serve one request head (as framed by [`frame_request`]) from `remote`.
    /// Returns a complete HTTP/1.1 response: `GET /announce` and
    /// `GET /scrape` (BEP 48) answer 200 with a bencoded body (a `failure
    /// reason` for bad parameters); other paths get 404, other methods 405,
    /// an unparsable head 400.
    pub fn handle(&mut self, head: &[u8], remote: SocketAddr, now: Instant) -> Vec<u8> {
        let mut out = Vec::new();
        self.handle_into(head, remote, now, &mut out);
        out
    }

    /// [`Tracker::handle`], appending the response to `out`.
    pub fn handle_into(
        &mut self,
        head: &[u8],
        remote: SocketAddr,
        now: Instant,
        out: &mut Vec<u8>,
    ) {
        let resp = self.respond(head, remote, now, out);
        if !resp.is_empty() {
            out.extend_from_slice(&resp);
        }
    }

    /// Answer `head`: announces are written to `out` (the common case, with
    /// no allocation of their own); anything else is returned.
    fn respond(
        &mut self,
        head: &[u8],
        remote: SocketAddr,
        now: Instant,
        out: &mut Vec<u8>,
    ) -> Vec<u8> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        let window = head.get(..MAX_REQUEST_HEAD).unwrap_or(head);
        match req.parse(window) {
            Ok(httparse::Status::Complete(_)) => {}
            Ok(httparse::Status::Partial) if head.len() >= MAX_REQUEST_HEAD => {
                return RequestError::TooLarge.response();
            }
            Err(httparse::Error::TooManyHeaders) => return RequestError::TooLarge.response(),
            _ => return RequestError::Malformed.response(),
        }
        if req.method != Some("GET") {
            return RequestError::Method.response();
        }
        let target = req.path.unwrap_or("").as_bytes();
        let target = target.split(|&b| b == b'#').next().unwrap_or(b"");
        let mut halves = target.splitn(2, |&b| b == b'?');
        let path = halves.next().unwrap_or_default();
        let query = halves.next().unwrap_or_default();
        match path {
            b"/announce" => self.announce(query, remote, now, out),
            b"/scrape" => match split_query(query, MAX_PARAMS) {
                Ok(params) => self.scrape(&params),
                Err(_) => failure("malformed query string"),
            },
            _ => match check_query(query) {
                Ok(()) => http_response(404, "Not Found", b"not found"),
                Err(_) => failure("malformed query string"),
            },
        }
    }

    /// Serve an announce: the response goes to `out`, or is returned when
    /// it is a failure.
    fn announce(
        &mut self,
        query: &[u8],
        remote: SocketAddr,
        now: Instant,
        out: &mut Vec<u8>,
    ) -> Vec<u8> {
        let a = match parse_announce(query) {
            Ok(a) => a,
            Err(reason) => return failure(reason),
        };
        let counts = match self.register(&a.req, remote, now, PeerFamily::Any) {
            Ok(c) => c,
            Err(reason) => return failure(reason),
        };
        let reply = Reply {
            complete: counts.complete,
            incomplete: counts.incomplete,
            compact: a.compact,
            no_peer_id: a.no_peer_id,
        };
        let peers = self
            .swarms
            .get(&a.req.info_hash)
            .map_or(&[][..], |sw| &sw.peers[..]);
        reply.write(&self.cfg, peers, &self.picked, &mut self.body, out);
        Vec::new()
    }

    /// Serve an announce from another protocol (the BEP 15 side): the
    /// same tables, quotas, caps and allow-list as HTTP. The addresses of
    /// the peers picked for the answer (of `family` only) go to `peers`
    /// (cleared first); `Err` is the failure reason.
    pub fn announce_parsed(
        &mut self,
        a: &AnnounceRequest,
        remote: SocketAddr,
        now: Instant,
        family: PeerFamily,
        peers: &mut Vec<SocketAddr>,
    ) -> Result<SwarmCounts, &'static str> {
        peers.clear();
        let counts = self.register(a, remote, now, family)?;
        if let Some(sw) = self.swarms.get(&a.info_hash) {
            peers.extend(
                self.picked
                    .iter()
                    .filter_map(|&i| sw.peers.get(i))
                    .map(|p| p.addr),
            );
        }
        Ok(counts)
    }

    /// Seeders, `completed` events seen and leechers of `info_hash` (zeros
    /// for a torrent not tracked).
    pub fn scrape_counts(&self, info_hash: &[u8; 20]) -> (usize, u64, usize) {
        self.swarms.get(info_hash).map_or((0, 0, 0), |s| {
            (s.seeders, s.downloaded, s.peers.len() - s.seeders)
        })
    }

    /// Record an announce in the tables and pick the peers to answer with
    /// (their indices into the swarm's peers go to `self.picked`; none for
    /// `stopped`). `Err` is the failure reason.
    fn register(
        &mut self,
        a: &AnnounceRequest,
        remote: SocketAddr,
        now: Instant,
        family: PeerFamily,
    ) -> Result<SwarmCounts, &'static str> {
        self.picked.clear();
        if let Some(allow) = &self.cfg.allow
            && !allow.contains(&a.info_hash)
        {
            return Err("unknown info_hash");
        }
        let remote_ip = canonical(remote.ip());
        let ip = match a.ip {
            Some(ip) if remote_ip.is_loopback() => canonical(ip),
            _ => remote_ip,
        };
        let addr = SocketAddr::new(ip, a.port);

        let source = remote_ip;
        let key = quota_key(source);

        if a.event == Event::Stopped {
            let same_ip = self
                .swarms
                .get(&a.info_hash)
                .and_then(|sw| sw.index.get(&a.peer_id).and_then(|&i| sw.peers.get(i)))
                .is_some_and(|p| p.addr.ip() == ip);
            if same_ip {
                self.remove_peer(&a.info_hash, &a.peer_id);
            }
            let (complete, incomplete) = self.counts(&a.info_hash);
            return Ok(SwarmCounts {
                complete,
                incomplete,
            });
        }

        if !self.swarms.contains_key(&a.info_hash) {
            if key.is_some_and(|k| {
                self.presence.get(&k).copied().unwrap_or(0) as usize >= self.cfg.max_torrents_per_ip
            }) {
                return Err("too many torrents from your address");
            }
            if self.swarms.len() >= self.cfg.max_torrents {
                self.evict_stalest_swarm();
            }
        }
        let seeder = a.left == 0;
        let existing = self
            .swarms
            .get(&a.info_hash)
            .and_then(|sw| sw.index.get(&a.peer_id).and_then(|&i| sw.peers.get(i)))
            .map(|p| (p.source, p.last_seen, p.seeder));
        if let Some((old_source, last_seen, was_seeder)) = existing {
            // The id is held by a live entry from another address: an id
            // alone proves nothing, so it is not taken over.
            let fresh = now.saturating_duration_since(last_seen)
                < Duration::from_secs(u64::from(self.cfg.interval));
            if old_source != source && fresh {
                return Err("peer id in use from another address");
            }
            if old_source != source {
                self.remove_peer(&a.info_hash, &a.peer_id);
            } else if let Some(swarm) = self.swarms.get_mut(&a.info_hash)
                && let Some(p) = swarm
                    .index
                    .get(&a.peer_id)
                    .copied()
                    .and_then(|i| swarm.peers.get_mut(i))
            {
                if a.event == Event::Completed && !was_seeder {
                    swarm.downloaded += 1;
                }
                p.seeder = seeder;
                p.addr = addr;
                p.last_seen = now;
                if was_seeder != seeder {
                    if seeder {
                        swarm.seeders += 1;
                    } else {
                        swarm.seeders -= 1;
                    }
                }
            }
        }
        let present = self
            .swarms
            .get(&a.info_hash)
            .is_some_and(|sw| sw.index.contains_key(&a.peer_id));
        if !present {
            // An address present in `max_torrents_per_ip` torrents joins
            // no other, new or existing.
            if let Some(k) = key
                && self
                    .swarms
                    .get(&a.info_hash)
                    .is_some_and(|sw| !sw.per_ip.contains_key(&k))
                && self.presence.get(&k).copied().unwrap_or(0) as usize
                    >= self.cfg.max_torrents_per_ip
            {
                return Err("too many torrents from your address");
            }
            self.make_room(&a.info_hash, key, now);
            let swarm = self.swarms.entry(a.info_hash).or_default();
            if a.event == Event::Completed {
                swarm.downloaded += 1;
            }
            let new_ip = swarm.add(Peer {
                id: a.peer_id,
                addr,
                source,
                seeder,
                last_seen: now,
            });
            self.total_peers += 1;
            if new_ip && let Some(k) = key {
                *self.presence.entry(k).or_insert(0) += 1;
            }
        }
        let Some(swarm) = self.swarms.get_mut(&a.info_hash) else {
            return Err("internal error");
        };
        swarm.last_active = Some(now);
        swarm.check_invariants();
        let want = a
            .numwant
            .unwrap_or(self.cfg.default_numwant)
            .min(self.cfg.max_numwant) as usize;
        let counts = SwarmCounts {
            complete: swarm.seeders,
            incomplete: swarm.peers.len() - swarm.seeders,
        };
        swarm.select(&a.peer_id, seeder, want, family, &mut self.picked);
        Ok(counts)
    }

    /// Before a new peer from `key` joins `info_hash`: keep every quota and
    /// cap by dropping the stalest entries (never by refusing the newcomer).
    fn make_room(&mut self, info_hash: &[u8; 20], key: Option<IpAddr>, now: Instant) {
        let (cap, ttl) = (self.cfg.max_peers_per_torrent, self.cfg.peer_ttl);
        let mut victims = Vec::new();
        if let Some(sw) = self.swarms.get_mut(info_hash) {
            // Its own stalest entry makes room within its quota.
            if let Some(k) = key
                && sw.per_ip.get(&k).copied().unwrap_or(0) as usize >= self.cfg.max_peers_per_ip
            {
                victims.extend(sw.stalest(Some(k)));
            }
            if sw.peers.len() >= cap {
                let mut left = Vec::new();
                let before = sw.peers.len();
                sw.expire(now, ttl, &mut left);
                self.total_peers -= before - sw.peers.len();
                for k in left {
                    forget_presence(&mut self.presence, k);
                }
                if sw.peers.len() >= cap {
                    victims.extend(sw.stalest(None));
                }
            }
        }
        for id in victims {
            self.remove_peer(info_hash, &id);
        }
        if self.total_peers >= self.cfg.max_total_peers {
            // The largest swarm gives up its stalest peer. Finding it walks
            // every swarm, so the one found gives up to SHRINK_RUN peers
            // before the next search (with the table full, every new peer
            // evicts one: the walk was a fifth of the tracker's CPU).
            let h = match self.shrinking {
                Some((h, left)) if left > 0 && self.swarms.contains_key(&h) => {
                    self.shrinking = Some((h, left - 1));
                    Some(h)
                }
                _ => {
                    let h = self
                        .swarms
                        .iter()
                        .max_by_key(|(_, sw)| sw.peers.len())
                        .map(|(h, _)| *h);
                    self.shrinking = h.map(|h| (h, SHRINK_RUN - 1));
                    h
                }
            };
            if let Some(h) = h
                && let Some(id) = self.swarms.get(&h).and_then(|sw| sw.stalest(None))
            {
                self.remove_peer(&h, &id);
            }
        }
    }

    /// Remove one peer, keeping the counts; a swarm left empty goes too.
    fn remove_peer(&mut self, info_hash: &[u8; 20], id: &[u8; 20]) {
        let Some(sw) = self.swarms.get_mut(info_hash) else {
            return;
        };
        let before = sw.peers.len();
        let left = sw.remove(id);
        self.total_peers -= before - sw.peers.len();
        if let Some(k) = left {
            forget_presence(&mut self.presence, k);
        }
        if sw.peers.is_empty() {
            self.swarms.remove(info_hash);
        }
    }

    /// Drop the swarm announced to least recently, with all its peers.
    fn evict_stalest_swarm(&mut self) {
        let Some(h) = self
            .swarms
            .iter()
            .min_by_key(|(_, sw)| sw.last_active)
            .map(|(h, _)| *h)
        else {
            return;
        };
        if let Some(sw) = self.swarms.remove(&h) {
            self.total_peers -= sw.peers.len();
            for k in sw.per_ip.keys() {
                forget_presence(&mut self.presence, *k);
            }
        }
    }

    /// Peers in all swarms (for tests and the memory bound).
    pub fn num_peers(&self) -> usize {
        self.total_peers
    }

    fn counts(&self, info_hash: &[u8; 20]) -> (usize, usize) {
        self.swarms
            .get(info_hash)
            .map_or((0, 0), |s| (s.seeders, s.peers.len() - s.seeders))
    }

    fn scrape(&self, params: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
        let mut hashes: Vec<[u8; 20]> = Vec::new();
        let mut any = false;
        for (name, value) in params {
            if name == b"info_hash" {
                any = true;
                let Ok(h) = <[u8; 20]>::try_from(value.as_slice()) else {
                    return failure("info_hash must be 20 bytes");
                };
                hashes.push(h);
            }
        }
        if !any {
            hashes = self.swarms.keys().copied().collect();
        }
        hashes.sort_unstable();
        hashes.dedup();
        let mut w = Writer::new();
        w.dict().str("files").dict();
        for h in &hashes {
            let Some(s) = self.swarms.get(h) else {
                continue;
            };
            // Keys in sorted order.
            w.bytes(h)
                .dict()
                .str("complete")
                .int(to_i64(s.seeders))
                .str("downloaded")
                .int(i64::try_from(s.downloaded).unwrap_or(i64::MAX))
                .str("incomplete")
                .int(to_i64(s.peers.len() - s.seeders))
                .end();
        }
        w.end().end();
        http_response(200, "OK", &w.finish())
    }

    /// Drop peers not heard from for `peer_ttl`, and torrents left empty.
    pub fn expire(&mut self, now: Instant) {
        let ttl = self.cfg.peer_ttl;
        let mut left = Vec::new();
        let mut removed = 0;
        self.swarms.retain(|_, s| {
            let before = s.peers.len();
            s.expire(now, ttl, &mut left);
            removed += before - s.peers.len();
            s.check_invariants();
            !s.peers.is_empty()
        });
        self.total_peers -= removed;
        for k in left {
            forget_presence(&mut self.presence, k);
        }
    }

    /// The tracker's settings.
    pub fn config(&self) -> &ServerConfig {
        &self.cfg
    }

    /// Torrents currently tracked.
    pub fn num_torrents(&self) -> usize {
        self.swarms.len()
    }
}

fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// An address has no entry left in one swarm.
fn forget_presence(presence: &mut HashMap<IpAddr, u32>, k: IpAddr) {
    if let Some(n) = presence.get_mut(&k) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            presence.remove(&k);
        }
    }
}

/// An IPv4-mapped IPv6 address becomes plain IPv4.
pub(super) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// A decimal number without sign.
fn parse_u64(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 20 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// The query parameters an announce looks at, in [`AnnounceValues`] order.
const ANNOUNCE_PARAMS: [&[u8]; 11] = [
    b"info_hash",
    b"peer_id",
    b"port",
    b"uploaded",
    b"downloaded",
    b"left",
    b"event",
    b"numwant",
    b"compact",
    b"no_peer_id",
    b"ip",
];

/// The last value of each of [`ANNOUNCE_PARAMS`], decoded and cut to
/// [`VALUE_CAP`] bytes, without allocating.
struct AnnounceValues {
    buf: [[u8; VALUE_CAP]; ANNOUNCE_PARAMS.len()],
    len: [Option<usize>; ANNOUNCE_PARAMS.len()],
}

impl AnnounceValues {
    fn collect(query: &[u8]) -> Result<Self, BadEscape> {
        let mut v = AnnounceValues {
            buf: [[0; VALUE_CAP]; ANNOUNCE_PARAMS.len()],
            len: [None; ANNOUNCE_PARAMS.len()],
        };
        let mut name_buf = [0u8; NAME_CAP];
        let mut skip = [0u8; 0];
        for_each_pair(query, |name, value| {
            let n = decode_capped(name, &mut name_buf)?;
            // A name longer than NAME_CAP is no known one (`get` says None).
            let slot = name_buf.get(..n).and_then(|name| {
                ANNOUNCE_PARAMS
                    .iter()
                    .zip(v.buf.iter_mut().zip(&mut v.len))
                    .find_map(|(&p, slot)| (p == name).then_some(slot))
            });
            match slot {
                Some((buf, len)) => {
                    let m = decode_capped(value, buf)?;
                    *len = Some(m.min(VALUE_CAP));
                }
                None => {
                    decode_capped(value, &mut skip)?;
                }
            }
            Ok(())
        })?;
        Ok(v)
    }

    fn get(&self, name: &[u8]) -> Option<&[u8]> {
        let (_, (buf, len)) = ANNOUNCE_PARAMS
            .iter()
            .zip(self.buf.iter().zip(&self.len))
            .find(|(p, _)| **p == name)?;
        buf.get(..(*len)?)
    }
}

/// Pull the announce parameters out of the query; `Err` is the failure
/// reason. The last occurrence of a repeated parameter wins.
fn parse_announce(query: &[u8]) -> Result<Announce, &'static str> {
    let values = AnnounceValues::collect(query).map_err(|_| "malformed query string")?;
    let get = |name: &[u8]| values.get(name);
    let info_hash = get(b"info_hash")
        .and_then(|v| <[u8; 20]>::try_from(v).ok())
        .ok_or("info_hash must be 20 bytes")?;
    let peer_id = get(b"peer_id")
        .and_then(|v| <[u8; 20]>::try_from(v).ok())
        .ok_or("peer_id must be 20 bytes")?;
    let port = get(b"port")
        .and_then(parse_u64)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|&p| p != 0)
        .ok_or("missing or bad port")?;
    for name in [&b"uploaded"[..], b"downloaded"] {
        if get(name).is_some_and(|v| parse_u64(v).is_none()) {
            return Err("bad uploaded/downloaded");
        }
    }
    let left = get(b"left")
        .and_then(parse_u64)
        .ok_or("missing or bad left")?;
    let event = match get(b"event") {
        None | Some(b"") | Some(b"paused") => Event::None,
        Some(b"started") => Event::Started,
        Some(b"completed") => Event::Completed,
        Some(b"stopped") => Event::Stopped,
        Some(_) => return Err("bad event"),
    };
    // Some clients send numwant=-1 for "the default".
    let numwant = match get(b"numwant") {
        None => None,
        Some(v) if v.first() == Some(&b'-') => None,
        Some(v) => Some(
            parse_u64(v)
                .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
                .ok_or("bad numwant")?,
        ),
    };
    let compact = get(b"compact") != Some(b"0");
    let no_peer_id = get(b"no_peer_id") == Some(b"1");
    let ip = get(b"ip")
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|s| s.parse::<IpAddr>().ok());
    Ok(Announce {
        req: AnnounceRequest {
            info_hash,
            peer_id,
            port,
            left,
            event,
            numwant,
            ip,
        },
        compact,
        no_peer_id,
    })
}

#[cfg(test)]
#[path = "server_tests.rs"]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests may panic
mod tests;
