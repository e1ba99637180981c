//! The tracker sockets: our announces (HTTP client; UDP ones go through
//! `udp.rs`) and, when the built-in tracker runs, its incoming HTTP
//! connections.

use super::Lookup;
use super::TorrentId;
use super::{
    ADDRS_PER_PEER_NAME, Conn, PeerName, ReadStop, Session, connect_from, read_into, write_out,
};
use crate::dns::{Answer, Ticket};
use crate::ids::ConnToken;
use crate::tracker::{
    AnnounceParams, AnnounceResponse, Event, ResponseReader, TrackerError, TrackerUrl, UdpUrl,
    build_announce_request, parse_announce_body, parse_tracker_url,
};
use crate::tracker::{HeadStatus, frame_request};
use crate::wire::SendBuf;
use log::{debug, info, warn};
use mio::net::TcpStream;
use mio::{Interest, Token};
use std::collections::HashSet;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Give up on an announce after this long.
const ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(15);
/// Close a tracker-server client that has not sent its request by then.
const SERVER_CONN_TIMEOUT: Duration = Duration::from_secs(10);
/// Most simultaneous clients of the built-in tracker.
const MAX_SERVER_CONNS: usize = 512;
/// Most built-in tracker connections from one IP address at once.
const MAX_SERVER_CONNS_PER_IP: usize = 16;
/// The head time-out of built-in tracker connections when the table is
/// over half full.
const SERVER_CONN_TIMEOUT_BUSY: Duration = Duration::from_secs(2);
/// Largest request head the built-in tracker reads.
const MAX_REQUEST: usize = 8 * 1024;

/// One announce in flight.
pub(super) struct AnnounceConn {
    pub sock: TcpStream,
    /// The torrent it announces.
    pub tid: TorrentId,
    pub url: String,
    out: SendBuf,
    reader: ResponseReader,
    started: Instant,
    connecting: bool,
    /// The last read stopped at its budget with bytes still waiting.
    more: bool,
    /// `https://`: the TLS session over `sock` (`out` is its plaintext).
    tls: Option<Box<super::tls::Tls>>,
}

/// An announce waiting for its tracker's address (the announce time-out
/// runs from `started`).
pub(super) struct Resolving {
    tid: TorrentId,
    url: String,
    target: Target,
    started: Instant,
}

/// Where an announce goes once its host name is resolved.
enum Target {
    /// The request, ready to send; the TLS server name for `https://`.
    Http(Vec<u8>, Event, Option<String>),
    Udp(UdpUrl, AnnounceParams),
}

/// One client of the built-in tracker.
pub(super) struct ServerConn {
    pub sock: TcpStream,
    remote: SocketAddr,
    inbuf: Vec<u8>,
    out: SendBuf,
    started: Instant,
    answered: bool,
}

impl Session {
    /// Start the announces that are due (one in flight per torrent).
    pub(super) fn maybe_announce(&mut self, now: Instant) {
        let mut busy: HashSet<TorrentId> = self
            .conns
            .iter()
            .filter_map(|(_, c)| match c {
                Conn::Announce(a) => Some(a.tid),
                _ => None,
            })
            .collect();
        busy.extend(self.udp.busy());
        busy.extend(self.resolving.values().map(|r| r.tid));
        let ids: Vec<TorrentId> = self.torrents.iter().map(|(id, _)| id).collect();
        for id in ids {
            if busy.contains(&id) {
                continue;
            }
            let Some(s) = self.torrents.get_mut(id) else {
                continue;
            };
            // A paused torrent announces nothing, unless it is being
            // removed (its `stopped`).
            if (s.paused && s.removing.is_none()) || s.t.is_checking() {
                continue;
            }
            let Some(a) = &mut s.announcer else {
                continue;
            };
            let Some((url, event)) = a.poll_announce(now) else {
                continue;
            };
            if let Err(e) = self.start_announce(id, &url, event, now)
                && let Some(a) = self.torrents.get_mut(id).and_then(|s| s.announcer.as_mut())
            {
                warn!("tracker {url}: {e}");
                a.on_failure(now, &url, &e);
            }
        }
    }

    fn start_announce(
        &mut self,
        tid: TorrentId,
        url: &str,
        event: Event,
        now: Instant,
    ) -> Result<(), TrackerError> {
        let Some(slot) = self.torrents.get(tid) else {
            return Ok(());
        };
        let t = &slot.t;
        let parsed = parse_tracker_url(url)?;
        let s = t.status();
        let peer_id = t.our_id;
        let params = AnnounceParams {
            info_hash: t.info_hash,
            peer_id,
            port: self.listen_addr.map_or(6881, |a| a.port()),
            uploaded: s.totals.uploaded,
            downloaded: s.totals.downloaded,
            left: s.left,
            event,
            numwant: 50,
            key: u32::from_le_bytes([peer_id[16], peer_id[17], peer_id[18], peer_id[19]]),
            tracker_id: slot
                .announcer
                .as_ref()
                .and_then(|a| a.tracker_id().map(|t| t.to_vec())),
        };
        let (host, port, target) = match parsed {
            TrackerUrl::Udp(u) => (u.host.clone(), u.port, Target::Udp(u, params)),
            TrackerUrl::Http(h) => (
                h.host.clone(),
                h.port,
                Target::Http(
                    build_announce_request(&h, &params),
                    event,
                    h.tls.then(|| h.host.clone()),
                ),
            ),
        };
        match self.resolver.resolve(&host, port, now) {
            Lookup::Ready(addrs) => self.announce_to(tid, url, target, addrs, now),
            Lookup::Pending(ticket) => {
                debug!("announce to {url} waits for {host} to resolve");
                self.resolving.insert(
                    ticket,
                    Resolving {
                        tid,
                        url: url.to_string(),
                        target,
                        started: now,
                    },
                );
                Ok(())
            }
        }
    }

    /// Answers from the resolver: the announces that waited for them go
    /// on (or fail, as any announce does).
    pub(super) fn resolved(&mut self, now: Instant) {
        for (ticket, addrs) in self.resolver.drain(now) {
            if let Some(name) = self.peer_names.remove(&ticket) {
                self.peer_name_resolved(name, addrs, now);
                continue;
            }
            let Some(r) = self.resolving.remove(&ticket) else {
                self.dht_resolved(ticket, addrs, now);
                continue;
            };
            if let Err(e) = self.announce_to(r.tid, &r.url, r.target, addrs, now) {
                self.on_announce_response(r.tid, &r.url, Err(e), now);
            }
        }
    }

    /// A peer host name's answer: its addresses (a few) join the torrent's
    /// peers to dial, and are dialed now.
    pub(super) fn peer_name_resolved(&mut self, name: PeerName, answer: Answer, now: Instant) {
        let Some(s) = self
            .torrents
            .get_mut(name.tid)
            .filter(|s| s.t.info_hash == name.hash)
        else {
            return;
        };
        match answer {
            Ok(addrs) => {
                for a in addrs.into_iter().take(ADDRS_PER_PEER_NAME) {
                    debug!("peer {}: {a}", name.host);
                    if !s.opts.peers.contains(&a) {
                        s.opts.peers.push(a);
                    }
                    s.candidates.push(a, now);
                }
                self.connect_more(now);
            }
            Err(e) => warn!("peer {}: {e}", name.host),
        }
    }

    /// Forget the announces of torrent `tid` that wait for an address;
    /// their URLs, for the announcer.
    pub(super) fn resolving_forget(&mut self, tid: TorrentId) -> Vec<String> {
        let mut urls = Vec::new();
        self.resolving.retain(|_, r| {
            if r.tid == tid {
                urls.push(std::mem::take(&mut r.url));
            }
            r.tid != tid
        });
        urls
    }

    /// Send an announce to its tracker, now that its addresses are known.
    fn announce_to(
        &mut self,
        tid: TorrentId,
        url: &str,
        target: Target,
        addrs: Answer,
        now: Instant,
    ) -> Result<(), TrackerError> {
        if !self.torrents.contains(tid) {
            return Ok(());
        }
        let addrs = addrs.map_err(TrackerError::Io)?;
        let (request, event, tls_name) = match target {
            Target::Udp(u, params) => {
                return self.start_udp_announce(tid, url, &u, &addrs, params, now);
            }
            Target::Http(request, event, tls_name) => (request, event, tls_name),
        };
        let tls = match tls_name {
            Some(name) => {
                let config = self.tls_config()?;
                Some(Box::new(super::tls::Tls::new(config, &name)?))
            }
            None => None,
        };
        // With --bind, an address of the same family.
        let addr = *addrs
            .iter()
            .find(|a| self.opts.bind_ip.is_none_or(|b| b.is_ipv4() == a.is_ipv4()))
            .ok_or_else(|| TrackerError::Io("no usable address".into()))?;
        let mut out = SendBuf::new();
        out.buf_mut().extend_from_slice(&request);
        let mut sock = connect_from(self.opts.bind_ip, addr)
            .map_err(|e| TrackerError::Io(format!("connect {addr}: {e}")))?;
        let entry = self.conns.vacant_entry();
        self.poll
            .registry()
            .register(
                &mut sock,
                Token(entry.key()),
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(|e| TrackerError::Io(e.to_string()))?;
        debug!("announcing to {url} ({event:?})");
        entry.insert(Conn::Announce(AnnounceConn {
            sock,
            tid,
            url: url.to_string(),
            out,
            reader: ResponseReader::new(),
            started: now,
            connecting: true,
            more: false,
            tls,
        }));
        Ok(())
    }

    /// The TLS set-up: the session's, or the system's CAs (loaded once,
    /// on the first `https://` announce).
    fn tls_config(&mut self) -> Result<std::sync::Arc<rustls::ClientConfig>, TrackerError> {
        if let Some(c) = &self.opts.tls {
            return Ok(c.clone());
        }
        let c = super::tls::client_config(&[]).map_err(TrackerError::Tls)?;
        self.opts.tls = Some(c.clone());
        Ok(c)
    }

    pub(super) fn announce_event(&mut self, token: ConnToken, now: Instant) {
        let Some(Conn::Announce(c)) = self.conns.get_mut(token.0) else {
            return;
        };
        c.more = false;
        let result = drive_announce(c);
        let (url, tid, more) = (c.url.clone(), c.tid, c.more);
        match result {
            Ok(None) => {
                if more {
                    // Edge-triggered: nobody will tell us again.
                    self.carry.push(token);
                }
            }
            Ok(Some(body)) => {
                let _ = self.close_silently(token);
                self.on_announce_body(tid, &url, &body, now);
            }
            Err(e) => {
                let _ = self.close_silently(token);
                warn!("tracker {url}: {e}");
                if let Some(a) = self
                    .torrents
                    .get_mut(tid)
                    .and_then(|s| s.announcer.as_mut())
                {
                    a.on_failure(now, &url, &e);
                }
            }
        }
    }

    fn on_announce_body(&mut self, tid: TorrentId, url: &str, body: &[u8], now: Instant) {
        self.on_announce_response(tid, url, parse_announce_body(body), now);
    }

    /// The outcome of an announce over either protocol: the announcer
    /// learns it, and the peers become candidates.
    pub(super) fn on_announce_response(
        &mut self,
        tid: TorrentId,
        url: &str,
        result: Result<AnnounceResponse, TrackerError>,
        now: Instant,
    ) {
        if !self.torrents.contains(tid) {
            return;
        }
        // The tracker's own words reach the user once per (tracker,
        // text), whatever the log level; repeats go to the debug log.
        let said = match &result {
            Ok(resp) => resp.warning.as_ref().map(|w| (w, "warns: ")),
            Err(TrackerError::Failure(reason)) => Some((reason, "")),
            Err(_) => None,
        };
        let told = said.is_some();
        if let Some((text, how)) = said {
            if self.tracker_notes.first_time(url, text) {
                let shown = match &result {
                    Err(e) => e.to_string(),
                    Ok(_) => text.clone(),
                };
                crate::errln!(
                    "{}",
                    crate::output::escape_controls(&format!("tracker {url}: {how}{shown}"))
                );
            } else {
                debug!("tracker {url}: {how}{text} (again)");
            }
        }
        let Some(slot) = self.torrents.get_mut(tid) else {
            return;
        };
        let Some(a) = &mut slot.announcer else {
            return;
        };
        match result {
            Ok(resp) => {
                info!(
                    "tracker {url}: {} peers, next announce in {} s",
                    resp.peers.len(),
                    resp.interval
                );
                a.on_success(now, url, &resp);
                if !slot.paused {
                    slot.candidates.extend_from_answer(&resp.peers, now);
                }
                // A finished download that waited for this answer (its
                // `completed`) can end now.
                if slot.finished_waiting() {
                    self.finish_due = true;
                }
                self.connect_more(now);
            }
            Err(e) => {
                if !told {
                    warn!("tracker {url}: {e}");
                }
                a.on_failure(now, url, &e);
            }
        }
    }

    /// Close a tracker connection (announce or built-in tracker client).
    pub(super) fn close_silently(&mut self, token: ConnToken) -> Option<()> {
        if !matches!(
            self.conns.get(token.0)?,
            Conn::Announce(_) | Conn::TrackerServer(_)
        ) {
            return None;
        }
        match self.conns.remove(token.0) {
            Conn::Announce(mut c) => {
                let _ = self.poll.registry().deregister(&mut c.sock);
            }
            Conn::TrackerServer(c) => {
                // Closing the socket takes it out of the poll (epoll, kqueue);
                // no deregister call per request.
                drop(c);
            }
            _ => {}
        }
        Some(())
    }

    pub(super) fn accept_tracker_clients(&mut self, token: ConnToken, now: Instant) {
        loop {
            let Some(Conn::TrackerListener(l)) = self.conns.get(token.0) else {
                return;
            };
            match l.accept() {
                Ok((mut sock, remote)) => {
                    // Slowloris: one address holds at most a few
                    // connections; when the table is full the oldest
                    // unanswered one makes room (it is the likeliest to be
                    // a half-sent request).
                    let (mut open, mut same_ip) = (0, 0);
                    let mut oldest: Option<(Instant, usize)> = None;
                    for (tok, c) in &self.conns {
                        if let Conn::TrackerServer(s) = c {
                            open += 1;
                            if s.remote.ip() == remote.ip() {
                                same_ip += 1;
                            }
                            if !s.answered && oldest.is_none_or(|(t, _)| s.started < t) {
                                oldest = Some((s.started, tok));
                            }
                        }
                    }
                    // The host itself (127.0.0.1, ::1) is trusted, as in
                    // the tracker's quotas.
                    let own_host = matches!(remote.ip(), std::net::IpAddr::V4(v4) if v4 == std::net::Ipv4Addr::LOCALHOST)
                        || matches!(remote.ip(), std::net::IpAddr::V6(v6) if v6.is_loopback());
                    if !own_host && same_ip >= MAX_SERVER_CONNS_PER_IP {
                        debug!("tracker: refusing {remote}, too many connections from it");
                        continue;
                    }
                    if open >= MAX_SERVER_CONNS {
                        match oldest {
                            Some((_, tok)) => {
                                let _ = self.close_silently(ConnToken(tok));
                            }
                            None => {
                                debug!("tracker: refusing {remote}, too many connections");
                                continue;
                            }
                        }
                    }
                    let entry = self.conns.vacant_entry();
                    let tok = entry.key();
                    if self
                        .poll
                        .registry()
                        .register(
                            &mut sock,
                            Token(tok),
                            Interest::READABLE | Interest::WRITABLE,
                        )
                        .is_err()
                    {
                        continue;
                    }
                    entry.insert(Conn::TrackerServer(ServerConn {
                        sock,
                        remote,
                        inbuf: Vec::new(),
                        out: SendBuf::new(),
                        started: now,
                        answered: false,
                    }));
                    self.carry.push(ConnToken(tok));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    warn!("tracker accept failed: {e}");
                    return;
                }
            }
        }
    }

    pub(super) fn server_conn_event(&mut self, token: ConnToken, now: Instant) {
        let Some(Conn::TrackerServer(c)) = self.conns.get_mut(token.0) else {
            return;
        };
        let mut done = false;
        if !c.answered {
            match read_into(&mut c.sock, &mut c.inbuf, MAX_REQUEST + 1) {
                Err(_) => done = true,
                Ok(stop) => match frame_request(&c.inbuf) {
                    Ok(HeadStatus::Complete(n)) => {
                        if let Some(tr) = &mut self.tracker {
                            tr.handle_into(&c.inbuf[..n], c.remote, now, c.out.buf_mut());
                        }
                        c.answered = true;
                        c.inbuf = Vec::new();
                    }
                    Ok(HeadStatus::Partial) => done = stop == ReadStop::Eof,
                    Err(e) => {
                        debug!("tracker: bad request from {}: {e}", c.remote);
                        c.out
                            .buf_mut()
                            .extend_from_slice(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                        c.answered = true;
                    }
                },
            }
        }
        if c.answered && (!write_out(&mut c.sock, &mut c.out) || c.out.is_empty()) {
            done = true;
        }
        if done {
            let _ = self.close_silently(token);
        }
    }

    /// Time-outs of tracker connections, and announces that are due.
    pub(super) fn tracker_conns_tick(&mut self, now: Instant) {
        // Under pressure (over half the table in use) a request head must
        // arrive within 2 s, not 10.
        let serving = self
            .conns
            .iter()
            .filter(|(_, c)| matches!(c, Conn::TrackerServer(_)))
            .count();
        let server_timeout = if serving > MAX_SERVER_CONNS / 2 {
            SERVER_CONN_TIMEOUT_BUSY
        } else {
            SERVER_CONN_TIMEOUT
        };
        let mut expired = Vec::new();
        for (tok, c) in &self.conns {
            match c {
                Conn::Announce(a) if now.duration_since(a.started) > ANNOUNCE_TIMEOUT => {
                    expired.push((tok, Some((a.tid, a.url.clone()))));
                }
                Conn::TrackerServer(s) if now.duration_since(s.started) > server_timeout => {
                    expired.push((tok, None));
                }
                _ => {}
            }
        }
        let late: Vec<Ticket> = self
            .resolving
            .iter()
            .filter(|(_, r)| now.duration_since(r.started) > ANNOUNCE_TIMEOUT)
            .map(|(t, _)| *t)
            .collect();
        for t in late {
            if let Some(r) = self.resolving.remove(&t)
                && let Some(a) = self
                    .torrents
                    .get_mut(r.tid)
                    .and_then(|s| s.announcer.as_mut())
            {
                warn!("tracker {}: no address in {ANNOUNCE_TIMEOUT:?}", r.url);
                a.on_failure(now, &r.url, &TrackerError::Timeout);
            }
        }
        for (tok, who) in expired {
            let _ = self.close_silently(ConnToken(tok));
            if let Some((tid, url)) = who
                && let Some(a) = self
                    .torrents
                    .get_mut(tid)
                    .and_then(|s| s.announcer.as_mut())
            {
                warn!("tracker {url}: no answer in {ANNOUNCE_TIMEOUT:?}");
                a.on_failure(now, &url, &TrackerError::Timeout);
            }
        }
        self.maybe_announce(now);
    }

    /// Send `stopped` for every torrent, over HTTP or UDP (best effort,
    /// at most about 1.5 s in all; a UDP `stopped` is sent once, never
    /// retransmitted).
    pub(super) fn announce_stopped(&mut self) {
        // The stops replace any announce in flight (the announcers ignore
        // late answers).
        let inflight: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| matches!(c, Conn::Announce(_)))
            .map(|(k, _)| k)
            .collect();
        for tok in inflight {
            let _ = self.close_silently(ConnToken(tok));
        }
        self.udp_forget_all();
        self.resolving.clear();
        let now = Instant::now();
        let ids: Vec<TorrentId> = self.torrents.iter().map(|(id, _)| id).collect();
        let mut any = false;
        for id in ids {
            let due = self
                .torrents
                .get_mut(id)
                .and_then(|s| s.announcer.as_mut())
                .and_then(|a| {
                    a.stop();
                    a.poll_announce(now)
                });
            if let Some((url, event)) = due {
                any |= self.start_announce(id, &url, event, now).is_ok();
            }
        }
        if !any {
            return;
        }
        let deadline = now + Duration::from_millis(1500);
        let mut events = mio::Events::with_capacity(16);
        while Instant::now() < deadline
            && (!self.udp.pending.is_empty()
                || !self.resolving.is_empty()
                || self
                    .conns
                    .iter()
                    .any(|(_, c)| matches!(c, Conn::Announce(_))))
        {
            if self
                .poll
                .poll(&mut events, Some(Duration::from_millis(100)))
                .is_err()
            {
                break;
            }
            let now = Instant::now();
            let toks: Vec<usize> = events.iter().map(|e| e.token().0).collect();
            for tok in toks {
                if Token(tok) == super::WAKER {
                    self.resolved(now);
                    continue;
                }
                match self.conns.get(tok) {
                    Some(Conn::Announce(_)) => self.announce_event(ConnToken(tok), now),
                    Some(Conn::Udp(_)) => self.udp_readable(ConnToken(tok), now),
                    _ => {}
                }
            }
        }
    }
}

/// Advance one announce: finish the connect, send the request, read the
/// answer. `Ok(Some(body))` once the response is complete.
fn drive_announce(c: &mut AnnounceConn) -> Result<Option<Vec<u8>>, TrackerError> {
    if c.connecting {
        if let Ok(Some(e)) | Err(e) = c.sock.take_error() {
            return Err(TrackerError::Io(format!("connect: {e}")));
        }
        match c.sock.peer_addr() {
            Ok(_) => c.connecting = false,
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(None),
            Err(e) => return Err(TrackerError::Io(format!("connect: {e}"))),
        }
    }
    if let Some(tls) = &mut c.tls {
        if !c.out.is_empty() {
            tls.send(c.out.pending())?;
            c.out = SendBuf::new();
        }
        tls.flush(&mut c.sock)?;
    } else if !c.out.is_empty() && !write_out(&mut c.sock, &mut c.out) {
        return Err(TrackerError::Io("write failed".into()));
    }
    let mut buf = Vec::new();
    let mut total = 0;
    loop {
        buf.clear();
        let stop = match &mut c.tls {
            Some(tls) => {
                let (stop, raw) = tls.read(&mut c.sock, &mut buf, 64 * 1024)?;
                total += raw;
                stop
            }
            None => {
                let stop = read_into(&mut c.sock, &mut buf, 64 * 1024)
                    .map_err(|e| TrackerError::Io(format!("read: {e}")))?;
                total += buf.len();
                stop
            }
        };
        if !buf.is_empty()
            && let Some(body) = c.reader.feed(&buf)?
        {
            return Ok(Some(body));
        }
        match stop {
            // Bounded per turn: a tracker that never stops sending cannot
            // hold the loop (time-outs, peers and the stop flag run between
            // turns). The caller reads the rest next turn.
            ReadStop::Cap if total >= ANNOUNCE_READ_BUDGET => {
                c.more = true;
                return Ok(None);
            }
            ReadStop::Cap => continue,
            ReadStop::Eof => return c.reader.eof().map(Some),
            ReadStop::WouldBlock => return Ok(None),
        }
    }
}

/// Most bytes read from one tracker connection per loop turn.
const ANNOUNCE_READ_BUDGET: usize = 256 * 1024;
