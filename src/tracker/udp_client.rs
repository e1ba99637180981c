//! The UDP tracker client (BEP 15), sans-IO, one per session: every
//! torrent's UDP announces and scrapes go through it, over one socket.
//!
//! The shell starts an exchange ([`UdpClient::start_announce`],
//! [`UdpClient::start_scrape`]), sends what [`UdpClient::poll_transmit`]
//! hands out, feeds every datagram the socket receives to
//! [`UdpClient::handle_datagram`], calls [`UdpClient::handle_timeout`] when
//! [`UdpClient::poll_timeout`] says, and takes outcomes from
//! [`UdpClient::poll_event`]. Nothing here reads the clock or owns a socket.
//!
//! One exchange walks these phases:
//!
//! ```text
//!  Connecting ──connect answer──► Requesting ──announce / scrape answer──► done (Ok)
//!      ▲  (skipped while the tracker's connection id is under a minute old)
//!      └── a retransmit finds the connection id over a minute old
//!  any phase: `error` answer ──► done (TrackerError::Failure)
//!             no answer after 15·2ⁿ s, n = max_n ──► done (TrackerError::Timeout)
//! ```
//!
//! Retransmission follows BEP 15: a request unanswered for 15·2ⁿ s is sent
//! again, n = 0, 1, … up to `max_n` (8 in the BEP: 15 s, 30 s, … 3,840 s,
//! about two hours in all); an unanswered request after the last one ends
//! the exchange. The counter runs over the whole exchange (a connect answer
//! does not reset it), so a tracker that answers connects but never
//! announces cannot keep an exchange alive for ever.
//!
//! Datagrams are matched by transaction id (random, 32 bits, never two
//! alike in flight) *and* source address; anything else — unknown or
//! stale transaction ids, another sender, a wrong action for the phase,
//! short, long or ragged layouts — is dropped and counted in
//! [`UdpClientStats`]: it never ends an exchange and allocates nothing.

#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::udp_wire::{
    self, ScrapeCounts, UdpResponse, announce_request, connect_request, decode_response,
    scrape_records, scrape_request,
};
use super::{AnnounceParams, AnnounceResponse, MAX_INTERVAL, MIN_INTERVAL, TrackerError};

/// A connection id may be used for this long after it was received.
pub const CONNECTION_ID_TTL: Duration = Duration::from_secs(60);
/// The first retransmission time-out; it doubles with every retransmission.
pub const RETRANSMIT_BASE: Duration = Duration::from_secs(15);
/// BEP 15's largest `n` in 15·2ⁿ s.
pub const BEP15_MAX_N: u32 = 8;
/// Most exchanges in flight at once (one announce per torrent, plus
/// scrapes); `start_*` refuses more.
pub const MAX_EXCHANGES: usize = 4096;
/// Most trackers whose connection id is remembered; the oldest goes.
pub const MAX_CONNECTION_IDS: usize = 1024;

/// One exchange of a [`UdpClient`] (never reused within a client).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExchangeId(pub u64);

/// What an exchange asks the tracker.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Request {
    Announce(Box<AnnounceParams>),
    Scrape(Vec<[u8; 20]>),
}

/// What the tracker answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UdpAnswer {
    Announce(AnnounceResponse),
    /// One record per info-hash asked, in order (a tracker may send fewer).
    Scrape(Vec<ScrapeCounts>),
}

/// The end of an exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpEvent {
    pub id: ExchangeId,
    /// The `owner` given when the exchange started (the shell's torrent).
    pub owner: usize,
    pub outcome: Result<UdpAnswer, TrackerError>,
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub id: ExchangeId,
    pub dest: SocketAddr,
    pub payload: Vec<u8>,
}

/// Datagrams dropped, by reason. None of them changed any state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UdpClientStats {
    /// Short, long, ragged, an unknown action, or an action that is not
    /// the one the exchange waits for.
    pub malformed: u64,
    /// No exchange waits for its transaction id, or it came from another
    /// address than the exchange's tracker.
    pub unsolicited: u64,
}

impl UdpClientStats {
    pub fn dropped(&self) -> u64 {
        self.malformed + self.unsolicited
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connecting,
    /// The connection id and when it was received.
    Requesting {
        conn_id: u64,
        since: Instant,
    },
}

#[derive(Debug, Clone)]
struct Exchange {
    owner: usize,
    tracker: SocketAddr,
    request: Request,
    phase: Phase,
    txn: u32,
    /// Time-outs so far (the `n` of 15·2ⁿ).
    n: u32,
    max_n: u32,
    /// When the request in flight times out; `None` while a send is queued.
    deadline: Option<Instant>,
}

/// The session's UDP tracker client. See the module docs.
#[derive(Debug)]
pub struct UdpClient {
    exchanges: HashMap<ExchangeId, Exchange>,
    /// Transaction id -> exchange, for every exchange (one each).
    by_txn: HashMap<u32, ExchangeId>,
    /// Tracker -> (connection id, when received); at most
    /// [`MAX_CONNECTION_IDS`].
    conn_ids: HashMap<SocketAddr, (u64, Instant)>,
    /// Exchanges with a datagram to send, in order.
    to_send: VecDeque<ExchangeId>,
    events: VecDeque<UdpEvent>,
    next_id: u64,
    /// xorshift64* state (never 0).
    rng: u64,
    stats: UdpClientStats,
}

/// An IPv4-mapped IPv6 address as plain IPv4 (a dual-stack socket reports
/// IPv4 senders that way).
pub(crate) fn canonical_addr(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => a,
        },
        v4 => v4,
    }
}

impl UdpClient {
    /// A client whose transaction ids come from `seed` (give it real
    /// randomness: the ids are what keeps off-path senders from answering
    /// in the tracker's name).
    pub fn new(seed: u64) -> UdpClient {
        UdpClient {
            exchanges: HashMap::new(),
            by_txn: HashMap::new(),
            conn_ids: HashMap::new(),
            to_send: VecDeque::new(),
            events: VecDeque::new(),
            next_id: 0,
            rng: seed | 1,
            stats: UdpClientStats::default(),
        }
    }

    fn random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A transaction id no exchange uses.
    fn fresh_txn(&mut self) -> u32 {
        loop {
            let t = (self.random() >> 32) as u32;
            if !self.by_txn.contains_key(&t) {
                return t;
            }
        }
    }

    /// Announce `params` to the tracker at `tracker` for `owner`, giving up
    /// after `max_n` retransmissions ([`BEP15_MAX_N`] for the BEP's
    /// schedule). Connects first unless a connection id under a minute old
    /// is known.
    pub fn start_announce(
        &mut self,
        owner: usize,
        tracker: SocketAddr,
        params: AnnounceParams,
        max_n: u32,
        now: Instant,
    ) -> Result<ExchangeId, TrackerError> {
        self.start(
            owner,
            tracker,
            Request::Announce(Box::new(params)),
            max_n,
            now,
        )
    }

    /// Scrape up to [`udp_wire::MAX_SCRAPE_HASHES`] info-hashes (the rest
    /// are left out).
    pub fn start_scrape(
        &mut self,
        owner: usize,
        tracker: SocketAddr,
        hashes: &[[u8; 20]],
        max_n: u32,
        now: Instant,
    ) -> Result<ExchangeId, TrackerError> {
        let hashes = hashes.get(..udp_wire::MAX_SCRAPE_HASHES).unwrap_or(hashes);
        self.start(owner, tracker, Request::Scrape(hashes.to_vec()), max_n, now)
    }

    fn start(
        &mut self,
        owner: usize,
        tracker: SocketAddr,
        request: Request,
        max_n: u32,
        now: Instant,
    ) -> Result<ExchangeId, TrackerError> {
        if self.exchanges.len() >= MAX_EXCHANGES {
            return Err(TrackerError::Io("too many UDP tracker exchanges".into()));
        }
        let tracker = canonical_addr(tracker);
        let phase = match self.conn_ids.get(&tracker) {
            Some(&(conn_id, since)) if now.saturating_duration_since(since) < CONNECTION_ID_TTL => {
                Phase::Requesting { conn_id, since }
            }
            _ => Phase::Connecting,
        };
        let id = ExchangeId(self.next_id);
        self.next_id += 1;
        let txn = self.fresh_txn();
        self.by_txn.insert(txn, id);
        self.exchanges.insert(
            id,
            Exchange {
                owner,
                tracker,
                request,
                phase,
                txn,
                n: 0,
                max_n: max_n.min(BEP15_MAX_N),
                deadline: None,
            },
        );
        self.to_send.push_back(id);
        Ok(id)
    }

    /// Forget an exchange (its torrent paused or went); a late answer is
    /// then unsolicited.
    pub fn cancel(&mut self, id: ExchangeId) {
        if let Some(ex) = self.exchanges.remove(&id) {
            self.by_txn.remove(&ex.txn);
        }
        self.to_send.retain(|&x| x != id);
    }

    /// Forget every exchange of `owner`.
    pub fn cancel_owner(&mut self, owner: usize) {
        let ids: Vec<ExchangeId> = self
            .exchanges
            .iter()
            .filter(|(_, ex)| ex.owner == owner)
            .map(|(&id, _)| id)
            .collect();
        for id in ids {
            self.cancel(id);
        }
    }

    /// Forget every exchange.
    pub fn cancel_all(&mut self) {
        self.exchanges.clear();
        self.by_txn.clear();
        self.to_send.clear();
    }

    /// Exchanges in flight.
    pub fn in_flight(&self) -> usize {
        self.exchanges.len()
    }

    /// Does `owner` have an exchange in flight?
    pub fn has_owner(&self, owner: usize) -> bool {
        self.exchanges.values().any(|ex| ex.owner == owner)
    }

    /// Dropped datagrams so far.
    pub fn stats(&self) -> UdpClientStats {
        self.stats
    }

    /// The next datagram to send, if any. Its time-out starts now: send it
    /// at once (a send that fails with `WouldBlock` may be treated as lost;
    /// it is retransmitted).
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        while let Some(id) = self.to_send.pop_front() {
            let Some(ex) = self.exchanges.get_mut(&id) else {
                continue;
            };
            let payload = match (&ex.phase, &ex.request) {
                (Phase::Connecting, _) => connect_request(ex.txn).to_vec(),
                (Phase::Requesting { conn_id, .. }, Request::Announce(p)) => {
                    announce_request(*conn_id, ex.txn, p).to_vec()
                }
                (Phase::Requesting { conn_id, .. }, Request::Scrape(h)) => {
                    scrape_request(*conn_id, ex.txn, h)
                }
            };
            ex.deadline = Some(now + retransmit_after(ex.n));
            return Some(Transmit {
                id,
                dest: ex.tracker,
                payload,
            });
        }
        None
    }

    /// Sending for `id` failed (not `WouldBlock`): the exchange ends with
    /// this error.
    pub fn on_send_error(&mut self, id: ExchangeId, err: String) {
        self.finish(id, Err(TrackerError::Io(err)));
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next needed: the
    /// earliest time-out of a request in flight (a queued datagram has
    /// none: the shell sends those at once, see
    /// [`wants_transmit`](Self::wants_transmit)).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.exchanges.values().filter_map(|ex| ex.deadline).min()
    }

    /// Anything waiting in `poll_transmit`?
    pub fn wants_transmit(&self) -> bool {
        !self.to_send.is_empty()
    }

    /// Retransmit every request whose time-out has passed (reconnecting
    /// first when its connection id is over a minute old), or end the
    /// exchange when it was the last try.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<ExchangeId> = self
            .exchanges
            .iter()
            .filter(|(_, ex)| ex.deadline.is_some_and(|d| d <= now))
            .map(|(&id, _)| id)
            .collect();
        for id in due {
            let Some(ex) = self.exchanges.get(&id) else {
                continue;
            };
            if ex.n >= ex.max_n {
                self.finish(id, Err(TrackerError::Timeout));
                continue;
            }
            let stale = match ex.phase {
                Phase::Requesting { since, .. } => {
                    now.saturating_duration_since(since) >= CONNECTION_ID_TTL
                }
                Phase::Connecting => false,
            };
            let txn = stale.then(|| self.fresh_txn());
            let Some(ex) = self.exchanges.get_mut(&id) else {
                continue;
            };
            ex.n += 1;
            ex.deadline = None;
            if let Some(txn) = txn {
                ex.phase = Phase::Connecting;
                let old = std::mem::replace(&mut ex.txn, txn);
                self.by_txn.remove(&old);
                self.by_txn.insert(txn, id);
            }
            self.to_send.push_back(id);
        }
    }

    /// A datagram from `from`. Answers move their exchange on; everything
    /// else is counted and dropped.
    pub fn handle_datagram(&mut self, from: SocketAddr, data: &[u8], now: Instant) {
        let resp = match decode_response(data) {
            Ok(r) => r,
            Err(_) => {
                self.stats.malformed += 1;
                return;
            }
        };
        let Some(&id) = self.by_txn.get(&resp.txn()) else {
            self.stats.unsolicited += 1;
            return;
        };
        let Some(ex) = self.exchanges.get(&id) else {
            self.stats.unsolicited += 1;
            return;
        };
        if canonical_addr(from) != ex.tracker {
            self.stats.unsolicited += 1;
            return;
        }
        match (ex.phase, &ex.request, resp) {
            (_, _, UdpResponse::Error { message, .. }) => {
                // The connection id may be what it refuses.
                let tracker = ex.tracker;
                self.conn_ids.remove(&tracker);
                let text = super::printable(message, udp_wire::MAX_ERROR_TEXT);
                let text = if text.is_empty() {
                    "(no message)".to_string()
                } else {
                    text
                };
                self.finish(id, Err(TrackerError::Failure(text)));
            }
            (Phase::Connecting, _, UdpResponse::Connect { conn_id, .. }) => {
                let tracker = ex.tracker;
                self.remember_conn_id(tracker, conn_id, now);
                let txn = self.fresh_txn();
                let Some(ex) = self.exchanges.get_mut(&id) else {
                    return;
                };
                ex.phase = Phase::Requesting {
                    conn_id,
                    since: now,
                };
                let old = std::mem::replace(&mut ex.txn, txn);
                ex.deadline = None;
                self.by_txn.remove(&old);
                self.by_txn.insert(txn, id);
                self.to_send.push_back(id);
            }
            (
                Phase::Requesting { .. },
                Request::Announce(_),
                UdpResponse::Announce {
                    interval,
                    leechers,
                    seeders,
                    peers,
                    ..
                },
            ) => {
                let Some(peers) = compact_peers(peers, ex.tracker.is_ipv6()) else {
                    self.stats.malformed += 1;
                    return;
                };
                let resp = AnnounceResponse {
                    interval: interval.clamp(MIN_INTERVAL, MAX_INTERVAL),
                    min_interval: None,
                    peers,
                    warning: None,
                    complete: Some(seeders),
                    incomplete: Some(leechers),
                    tracker_id: None,
                };
                self.finish(id, Ok(UdpAnswer::Announce(resp)));
            }
            (Phase::Requesting { .. }, Request::Scrape(h), UdpResponse::Scrape { records, .. }) => {
                if records.len() / 12 > h.len() {
                    self.stats.malformed += 1;
                    return;
                }
                let counts = scrape_records(records).collect();
                self.finish(id, Ok(UdpAnswer::Scrape(counts)));
            }
            _ => self.stats.malformed += 1,
        }
    }

    fn remember_conn_id(&mut self, tracker: SocketAddr, conn_id: u64, now: Instant) {
        if self.conn_ids.len() >= MAX_CONNECTION_IDS && !self.conn_ids.contains_key(&tracker) {
            self.conn_ids
                .retain(|_, (_, since)| now.saturating_duration_since(*since) < CONNECTION_ID_TTL);
            if self.conn_ids.len() >= MAX_CONNECTION_IDS
                && let Some(oldest) = self
                    .conn_ids
                    .iter()
                    .min_by_key(|(_, (_, since))| *since)
                    .map(|(a, _)| *a)
            {
                self.conn_ids.remove(&oldest);
            }
        }
        self.conn_ids.insert(tracker, (conn_id, now));
    }

    fn finish(&mut self, id: ExchangeId, outcome: Result<UdpAnswer, TrackerError>) {
        let Some(ex) = self.exchanges.remove(&id) else {
            return;
        };
        self.by_txn.remove(&ex.txn);
        self.to_send.retain(|&x| x != id);
        self.events.push_back(UdpEvent {
            id,
            owner: ex.owner,
            outcome,
        });
    }

    /// The next finished exchange.
    pub fn poll_event(&mut self) -> Option<UdpEvent> {
        self.events.pop_front()
    }
}

/// 15·2ⁿ s.
pub fn retransmit_after(n: u32) -> Duration {
    RETRANSMIT_BASE.saturating_mul(1u32 << n.min(BEP15_MAX_N))
}

/// Compact peers of an announce answer: 6-byte IPv4 records from an IPv4
/// tracker, 18-byte IPv6 records from an IPv6 one; `None` when the length
/// is not a whole number of records. Port 0 is skipped.
fn compact_peers(b: &[u8], v6: bool) -> Option<Vec<SocketAddr>> {
    if !b.len().is_multiple_of(crate::compact::record_len(v6)) {
        return None;
    }
    Some(
        crate::compact::records(b, v6)
            .filter(|a| a.port() != 0)
            .collect(),
    )
}

#[cfg(test)]
#[path = "udp_client_tests.rs"]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests may panic
mod tests;
