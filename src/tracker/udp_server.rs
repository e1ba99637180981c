//! The built-in tracker over UDP (BEP 15), sans-IO: a datagram and its
//! source go in, at most one answer comes out. It feeds the same
//! [`Tracker`] tables as the HTTP side (allow-list, expiry, caps and
//! per-address quotas) through [`Tracker::announce_parsed`].
//!
//! # Spoofing and amplification
//!
//! A UDP source address is only a claim. The BEP 15 connect step proves
//! it: a connect answer carries a connection id that only a sender
//! receiving at that address learns, and every announce and scrape must
//! bring one back.
//!
//! - **Connection ids are keyed hashes, nothing stored per requester**:
//!   the first 8 bytes of SHA-1(secret ‖ minute ‖ source IP), with a
//!   32-byte secret drawn from the OS at start. The current and the
//!   previous minute are accepted, so an id lives 60–120 s. It cannot be
//!   forged without the secret, and a copy is worthless from any other
//!   address or after two minutes. The IP alone is hashed (not the port),
//!   as opentracker does, so a NAT that moves the port keeps it valid.
//! - **No amplification**: the only answer to an unauthenticated datagram
//!   is the connect answer, 16 bytes for a 16-byte (or longer) request.
//!   Announces and scrapes with a wrong or expired id, and anything
//!   malformed, get no answer at all (not even an error). Announce and
//!   scrape answers, the only larger ones, go to addresses that proved
//!   themselves.
//! - **Rate limit per address**: every datagram from an address (IPv4, or
//!   an IPv6 /64; the tracker's own host is exempt, as in the quotas)
//!   takes a token from a bucket of [`UdpServerConfig::burst`] tokens
//!   refilled at [`UdpServerConfig::per_second`]; an empty bucket drops
//!   the datagram unread. The buckets are a fixed table of
//!   [`RATE_SLOTS`] indexed by a keyed hash of the address (addresses
//!   that collide share one — conservative, and not aimable without the
//!   key): memory stays the same whatever the number of senders.

#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use sha1::{Digest, Sha1};

use super::server::{AnnounceRequest, PeerFamily, Tracker, canonical, quota_key};
use super::udp_wire::{
    ScrapeCounts, UdpRequest, announce_response_head, connect_response, decode_request,
    error_response, scrape_record, scrape_response_head,
};

/// Buckets of the per-address rate limit.
pub const RATE_SLOTS: usize = 4096;
/// How long one connection-id window lasts.
pub const ID_WINDOW: Duration = Duration::from_secs(60);

/// Settings of the UDP side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpServerConfig {
    /// Datagrams an address may send per second, sustained.
    pub per_second: u32,
    /// Datagrams an address may send at once.
    pub burst: u32,
}

impl Default for UdpServerConfig {
    /// 20 datagrams a second, bursts of 100: a client announcing 50
    /// torrents at start (a connect, then 50 announces within a minute on
    /// one connection id) passes; a flood from one address is cut to 20
    /// answers a second.
    fn default() -> Self {
        UdpServerConfig {
            per_second: 20,
            burst: 100,
        }
    }
}

/// What the UDP side has seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UdpServerStats {
    pub connects: u64,
    pub announces: u64,
    pub scrapes: u64,
    /// Error answers (to authenticated requests only).
    pub errors: u64,
    /// Not a request (short, long, ragged, unknown action or event, no
    /// protocol id): dropped without an answer.
    pub malformed: u64,
    /// An announce or scrape whose connection id is wrong or expired:
    /// dropped without an answer.
    pub bad_connection_id: u64,
    /// Over its address's rate: dropped unread.
    pub rate_limited: u64,
}

/// One rate-limit bucket: milli-tokens and the last refill, in ms since
/// the server started.
#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    milli: u64,
    at_ms: u64,
    used: bool,
}

/// The UDP front of a [`Tracker`]. See the module docs.
#[derive(Debug)]
pub struct UdpServer {
    secret: [u8; 32],
    /// Connection-id windows and bucket times count from here.
    epoch: Instant,
    cfg: UdpServerConfig,
    buckets: Vec<Bucket>,
    /// Key of the bucket index hash (from the secret).
    slot_key: u64,
    /// Scratch: the peers of the answer being built.
    peers: Vec<SocketAddr>,
    stats: UdpServerStats,
}

impl UdpServer {
    /// A UDP front whose connection ids are keyed by `secret` (draw it from
    /// the OS: whoever knows it can forge ids).
    pub fn new(secret: [u8; 32], cfg: UdpServerConfig, now: Instant) -> UdpServer {
        let digest = Sha1::new()
            .chain_update(b"rate-slots")
            .chain_update(secret)
            .finalize();
        let slot_key = digest
            .first_chunk::<8>()
            .map_or(0, |b| u64::from_le_bytes(*b));
        UdpServer {
            secret,
            epoch: now,
            cfg,
            buckets: vec![Bucket::default(); RATE_SLOTS],
            slot_key,
            peers: Vec::new(),
            stats: UdpServerStats::default(),
        }
    }

    pub fn stats(&self) -> UdpServerStats {
        self.stats
    }

    fn window(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_secs() / ID_WINDOW.as_secs()
    }

    fn id_for(&self, ip: IpAddr, window: u64) -> u64 {
        let ip16 = match canonical(ip) {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        };
        let d = Sha1::new()
            .chain_update(self.secret)
            .chain_update(window.to_be_bytes())
            .chain_update(ip16)
            .finalize();
        d.first_chunk::<8>().map_or(0, |b| u64::from_be_bytes(*b))
    }

    /// The connection id a connect from `ip` gets now.
    pub fn connection_id(&self, ip: IpAddr, now: Instant) -> u64 {
        self.id_for(ip, self.window(now))
    }

    /// Was `id` given to `ip` in this minute or the one before?
    fn id_valid(&self, id: u64, ip: IpAddr, now: Instant) -> bool {
        let w = self.window(now);
        id == self.id_for(ip, w) || (w > 0 && id == self.id_for(ip, w - 1))
    }

    /// Take a token for a datagram from `ip`; false when its bucket is
    /// empty.
    fn admit(&mut self, ip: IpAddr, now: Instant) -> bool {
        let Some(key) = quota_key(canonical(ip)) else {
            return true;
        };
        let octets = match key {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        };
        let mut h = self.slot_key;
        for b in octets {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        h ^= h >> 29;
        h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h ^= h >> 32;
        let now_ms = u64::try_from(now.saturating_duration_since(self.epoch).as_millis())
            .unwrap_or(u64::MAX);
        let full = u64::from(self.cfg.burst) * 1000;
        let rate = u64::from(self.cfg.per_second);
        let Some(b) = self.buckets.get_mut(h as usize % RATE_SLOTS) else {
            return true;
        };
        if !b.used {
            *b = Bucket {
                milli: full,
                at_ms: now_ms,
                used: true,
            };
        }
        let elapsed = now_ms.saturating_sub(b.at_ms);
        b.milli = b
            .milli
            .saturating_add(elapsed.saturating_mul(rate))
            .min(full);
        b.at_ms = now_ms;
        if b.milli < 1000 {
            return false;
        }
        b.milli -= 1000;
        true
    }

    /// Handle one datagram from `from`. When it deserves an answer, the
    /// answer is appended to `out` (cleared first) and `true` returned.
    pub fn handle(
        &mut self,
        tracker: &mut Tracker,
        from: SocketAddr,
        data: &[u8],
        now: Instant,
        out: &mut Vec<u8>,
    ) -> bool {
        out.clear();
        if !self.admit(from.ip(), now) {
            self.stats.rate_limited += 1;
            return false;
        }
        let req = match decode_request(data) {
            Ok(r) => r,
            Err(_) => {
                self.stats.malformed += 1;
                return false;
            }
        };
        let txn = req.txn();
        match req {
            UdpRequest::Connect { .. } => {
                self.stats.connects += 1;
                out.extend_from_slice(&connect_response(txn, self.connection_id(from.ip(), now)));
                true
            }
            UdpRequest::Announce {
                conn_id, announce, ..
            } => {
                if !self.id_valid(conn_id, from.ip(), now) {
                    self.stats.bad_connection_id += 1;
                    return false;
                }
                self.stats.announces += 1;
                if announce.port == 0 {
                    self.stats.errors += 1;
                    error_response(txn, "missing or bad port", out);
                    return true;
                }
                let req = AnnounceRequest {
                    info_hash: announce.info_hash,
                    peer_id: announce.peer_id,
                    port: announce.port,
                    left: announce.left,
                    event: announce.event,
                    numwant: u32::try_from(announce.num_want).ok(),
                    ip: (announce.ip != 0).then(|| IpAddr::V4(Ipv4Addr::from(announce.ip))),
                };
                let v6 = canonical(from.ip()).is_ipv6();
                let family = if v6 { PeerFamily::V6 } else { PeerFamily::V4 };
                match tracker.announce_parsed(&req, from, now, family, &mut self.peers) {
                    Ok(counts) => {
                        let c32 = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
                        announce_response_head(
                            txn,
                            tracker.config().interval,
                            c32(counts.incomplete),
                            c32(counts.complete),
                            out,
                        );
                        for p in self.peers.iter().filter(|p| p.is_ipv6() == v6) {
                            crate::compact::put(*p, out);
                        }
                    }
                    Err(reason) => {
                        self.stats.errors += 1;
                        error_response(txn, reason, out);
                    }
                }
                true
            }
            UdpRequest::Scrape {
                conn_id, hashes, ..
            } => {
                if !self.id_valid(conn_id, from.ip(), now) {
                    self.stats.bad_connection_id += 1;
                    return false;
                }
                self.stats.scrapes += 1;
                scrape_response_head(txn, out);
                let allow = tracker.config().allow.as_ref();
                for h in hashes.chunks_exact(20) {
                    let Ok(h) = <[u8; 20]>::try_from(h) else {
                        continue; // never: chunks_exact(20)
                    };
                    let counts = if allow.is_some_and(|a| !a.contains(&h)) {
                        ScrapeCounts::default()
                    } else {
                        let (seeders, completed, leechers) = tracker.scrape_counts(&h);
                        ScrapeCounts {
                            seeders: u32::try_from(seeders).unwrap_or(u32::MAX),
                            completed: u32::try_from(completed).unwrap_or(u32::MAX),
                            leechers: u32::try_from(leechers).unwrap_or(u32::MAX),
                        }
                    };
                    scrape_record(counts, out);
                }
                true
            }
        }
    }
}

#[cfg(test)]
#[path = "udp_server_tests.rs"]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests may panic
mod tests;
