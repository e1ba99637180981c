//! The UDP sockets. One socket carries every UDP tracker announce of the
//! session, for every torrent and tracker: bound on first use like the
//! peer listener (the `--bind` address, or `[::]` dual-stack / `0.0.0.0`,
//! any port), registered in the slab as `Conn::Udp`; answers are matched
//! to their exchange by [`UdpClient`] (transaction id and source). When
//! the built-in tracker runs, `Conn::TrackerUdp` is its BEP 15 socket, on
//! the same address and port number as its HTTP listener.
//!
//! Reads are bounded per turn ([`CLIENT_READS_PER_TURN`],
//! [`SERVER_READS_PER_TURN`]); a socket with more waiting is carried to
//! the next turn (readiness is edge-triggered). Sends never wait: a
//! datagram the kernel cannot take now is lost, and the client's
//! retransmission (or the remote client's) covers it.

use super::TorrentId;
use super::{Conn, Session, net};
use crate::ids::ConnToken;
use crate::tracker::{
    AnnounceParams, BEP15_MAX_N, ExchangeId, TrackerError, UdpAnswer, UdpClientStats, UdpUrl,
};
use log::{debug, trace};
use mio::{Interest, Token};
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Most datagrams read from the client socket per turn.
const CLIENT_READS_PER_TURN: usize = 256;
/// Most datagrams read from the built-in tracker's socket per turn.
const SERVER_READS_PER_TURN: usize = 1024;
/// Receive buffer: one byte over the longest datagram either side
/// accepts, so a longer one shows as too long instead of being cut.
const RECV_BUF: usize = crate::tracker::udp_wire::MAX_RESPONSE_LEN + 1;
/// Retransmissions of an announce when the torrent has other trackers to
/// try: the BEP's full schedule (about two hours) would hold the tier
/// walk; after 15 s and 30 s (45 s in all) the next tracker is tried.
/// A torrent's only tracker gets the BEP's n = 8.
const MAX_N_WITH_OTHERS: u32 = 1;
/// Dropped datagrams are logged at most this often.
const DROP_LOG_EVERY: Duration = Duration::from_secs(5);

/// What the session keeps for its UDP sockets.
pub(super) struct UdpState {
    pub(super) client: crate::tracker::UdpClient,
    /// The client socket's token, once bound.
    token: Option<usize>,
    /// The client socket is IPv6 (dual-stack): IPv4 trackers are written
    /// as `::ffff:a.b.c.d`.
    v6: bool,
    /// Exchange -> (torrent, announce URL).
    pub(super) pending: std::collections::HashMap<ExchangeId, (TorrentId, String)>,
    /// The built-in tracker's BEP 15 side.
    pub(super) server: Option<crate::tracker::UdpServer>,
    buf: Vec<u8>,
    out: Vec<u8>,
    logged: (UdpClientStats, Option<Instant>),
}

impl UdpState {
    pub(super) fn new() -> UdpState {
        UdpState {
            client: crate::tracker::UdpClient::new(net::random_u64()),
            token: None,
            v6: false,
            pending: std::collections::HashMap::new(),
            server: None,
            buf: Vec::new(),
            out: Vec::new(),
            logged: (UdpClientStats::default(), None),
        }
    }

    /// Torrents with a UDP announce in flight.
    pub(super) fn busy(&self) -> impl Iterator<Item = TorrentId> + '_ {
        self.pending.values().map(|(tid, _)| *tid)
    }
}

impl Session {
    /// The client socket's token, binding it on first use.
    fn udp_socket(&mut self) -> io::Result<usize> {
        if let Some(t) = self.udp.token {
            return Ok(t);
        }
        let (mut sock, v6) = match self.opts.bind_ip {
            Some(ip) => (net::bind_udp(SocketAddr::new(ip, 0))?, ip.is_ipv6()),
            None => match net::bind_udp_dual_stack() {
                Ok(s) => (s, true),
                Err(e) => {
                    debug!("no dual-stack UDP socket ({e}); using IPv4 only");
                    (net::bind_udp(SocketAddr::from(([0, 0, 0, 0], 0)))?, false)
                }
            },
        };
        let entry = self.conns.vacant_entry();
        let token = entry.key();
        self.poll
            .registry()
            .register(&mut sock, Token(token), Interest::READABLE)?;
        debug!(
            "UDP tracker socket on {}",
            sock.local_addr()
                .map_or_else(|_| "?".to_string(), |a| a.to_string())
        );
        entry.insert(Conn::Udp(sock));
        self.udp.token = Some(token);
        self.udp.v6 = v6;
        if self.udp.buf.len() < RECV_BUF {
            self.udp.buf = vec![0; RECV_BUF];
        }
        Ok(token)
    }

    /// Start a UDP announce for torrent `tid` to the first of `addrs` (the
    /// tracker's, resolved) the socket can reach.
    pub(super) fn start_udp_announce(
        &mut self,
        tid: TorrentId,
        url: &str,
        parsed: &UdpUrl,
        addrs: &[SocketAddr],
        params: AnnounceParams,
        now: Instant,
    ) -> Result<(), TrackerError> {
        self.udp_socket()
            .map_err(|e| TrackerError::Io(format!("UDP socket: {e}")))?;
        let v6 = self.udp.v6;
        let addr = *addrs
            .iter()
            .find(|a| v6 || a.is_ipv4())
            .ok_or_else(|| TrackerError::Io(format!("no usable address for {}", parsed.host)))?;
        let others = self
            .torrents
            .get(tid)
            .and_then(|s| s.announcer.as_ref())
            .is_some_and(|a| a.tiers().iter().map(Vec::len).sum::<usize>() > 1);
        let max_n = if params.event == crate::tracker::Event::Stopped {
            0
        } else if others {
            MAX_N_WITH_OTHERS
        } else {
            BEP15_MAX_N
        };
        debug!("announcing to {url} ({:?}) over UDP", params.event);
        let id = self
            .udp
            .client
            .start_announce(tid.0, addr, params, max_n, now)?;
        self.udp.pending.insert(id, (tid, url.to_string()));
        self.udp_flush(now);
        Ok(())
    }

    /// Send what the client has queued, then deliver finished exchanges.
    pub(super) fn udp_flush(&mut self, now: Instant) {
        while let Some(tx) = self.udp.client.poll_transmit(now) {
            let Some(Conn::Udp(sock)) = self.udp.token.and_then(|t| self.conns.get(t)) else {
                self.udp
                    .client
                    .on_send_error(tx.id, "no UDP socket".to_string());
                continue;
            };
            let dest = match tx.dest {
                SocketAddr::V4(a) if self.udp.v6 => {
                    SocketAddr::new(a.ip().to_ipv6_mapped().into(), a.port())
                }
                d => d,
            };
            match sock.send_to(&tx.payload, dest) {
                Ok(_) => trace!("udp: {} bytes to {}", tx.payload.len(), tx.dest),
                // Lost; the retransmission covers it.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => self
                    .udp
                    .client
                    .on_send_error(tx.id, format!("send to {}: {e}", tx.dest)),
            }
        }
        while let Some(ev) = self.udp.client.poll_event() {
            let Some((tid, url)) = self.udp.pending.remove(&ev.id) else {
                continue;
            };
            match ev.outcome {
                Ok(UdpAnswer::Announce(resp)) => {
                    self.on_announce_response(tid, &url, Ok(resp), now);
                }
                Ok(UdpAnswer::Scrape(_)) => {}
                Err(e) => self.on_announce_response(tid, &url, Err(e), now),
            }
        }
    }

    /// Read the client socket (bounded), feed the datagrams to the client.
    pub(super) fn udp_readable(&mut self, token: ConnToken, now: Instant) {
        let mut buf = std::mem::take(&mut self.udp.buf);
        let mut more = false;
        for i in 0.. {
            let Some(Conn::Udp(sock)) = self.conns.get(token.0) else {
                break;
            };
            if i == CLIENT_READS_PER_TURN {
                more = true;
                break;
            }
            match sock.recv_from(&mut buf) {
                Ok((n, from)) => {
                    let data = buf.get(..n).unwrap_or_default();
                    self.udp.client.handle_datagram(from, data, now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // ICMP errors (port unreachable) surface here on some
                // systems; the exchange times out on its own.
                Err(e) => {
                    debug!("udp: receive failed: {e}");
                    break;
                }
            }
        }
        self.udp.buf = buf;
        if more {
            self.carry.push(token);
        }
        self.udp_flush(now);
    }

    /// Retransmissions and time-outs that are due; a note in the log when
    /// datagrams were dropped.
    pub(super) fn udp_timers(&mut self, now: Instant) {
        if self.udp.client.poll_timeout().is_some_and(|t| t <= now) {
            self.udp.client.handle_timeout(now);
            self.udp_flush(now);
        }
        self.udp_log_drops(now, false);
    }

    /// Say how many datagrams were dropped, when the count changed: at
    /// most every [`DROP_LOG_EVERY`], or now with `force` (at the end).
    pub(super) fn udp_log_drops(&mut self, now: Instant, force: bool) {
        let stats = self.udp.client.stats();
        let (last, at) = self.udp.logged;
        if stats != last && (force || at.is_none_or(|t| now.duration_since(t) >= DROP_LOG_EVERY)) {
            debug!(
                "udp trackers: dropped {} datagrams so far ({} malformed, {} unsolicited)",
                stats.dropped(),
                stats.malformed,
                stats.unsolicited
            );
            self.udp.logged = (stats, Some(now));
        }
    }

    /// Forget the UDP announces of torrent `tid` (paused or gone); their
    /// URLs, for the announcer.
    pub(super) fn udp_forget(&mut self, tid: TorrentId) -> Vec<String> {
        let ids: Vec<ExchangeId> = self
            .udp
            .pending
            .iter()
            .filter(|(_, (t, _))| *t == tid)
            .map(|(id, _)| *id)
            .collect();
        let mut urls = Vec::new();
        for id in ids {
            self.udp.client.cancel(id);
            if let Some((_, url)) = self.udp.pending.remove(&id) {
                urls.push(url);
            }
        }
        urls
    }

    /// Forget every UDP announce in flight.
    pub(super) fn udp_forget_all(&mut self) {
        self.udp.client.cancel_all();
        self.udp.pending.clear();
    }

    /// The built-in tracker's socket: answer what arrived (bounded).
    pub(super) fn tracker_udp_readable(&mut self, token: ConnToken, now: Instant) {
        if self.udp.buf.len() < RECV_BUF {
            self.udp.buf = vec![0; RECV_BUF];
        }
        let (Some(server), Some(tracker)) = (&mut self.udp.server, &mut self.tracker) else {
            return;
        };
        let Some(Conn::TrackerUdp(sock)) = self.conns.get(token.0) else {
            return;
        };
        for _ in 0..SERVER_READS_PER_TURN {
            match sock.recv_from(&mut self.udp.buf) {
                Ok((n, from)) => {
                    let data = self.udp.buf.get(..n).unwrap_or_default();
                    if server.handle(tracker, from, data, now, &mut self.udp.out) {
                        // Lost if the kernel cannot take it now: the
                        // client retransmits.
                        let _ = sock.send_to(&self.udp.out, from);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    debug!("tracker: UDP receive failed: {e}");
                    return;
                }
            }
        }
        self.carry.push(token);
    }
}
