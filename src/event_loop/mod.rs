//! The only code that touches mio: one `Poll`, one `Slab<Conn>` whose keys
//! are the mio tokens, and the loop that moves bytes between sockets and the
//! sans-IO cores (torrent, tracker announcer, tracker server).
//!
//! One turn: poll (time-out = the nearest deadline, at most 200 ms); read
//! every ready socket until `WouldBlock` into its buffer and hand the bytes
//! to its core; write every connection with queued output until
//! `WouldBlock`, with `WRITABLE` interest only while output is pending;
//! flush verified pieces under a per-turn byte budget; once a second, run
//! timers (time-outs, keep-alives, choking, connects, re-announces); close
//! what must close after the batch.

mod net;
mod tracker_conns;
mod warnings;

pub use net::{connect_from, install_stop_handler, stop_requested};

use crate::candidates::Candidates;
use crate::peer::PeerError;
use crate::progress::Progress;
use crate::torrent::{Status, Torrent};
use crate::tracker::Announcer;
use crate::tracker::{ServerConfig, Tracker};
use crate::wire::SendBuf;
use log::{debug, info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use std::collections::{HashMap, HashSet};
use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tracker_conns::{AnnounceConn, ServerConn};

/// Most bytes read from one peer per readiness event before moving on to
/// the others (the rest is read next turn: fairness between peers).
const READ_BUDGET: usize = 1 << 20;

/// Longest a finished download that exits waits for its `completed`
/// announce to be answered.
const COMPLETED_WAIT: Duration = Duration::from_secs(5);

/// How a session is set up.
#[derive(Clone, Debug)]
pub struct SessionOptions {
    /// Where to accept peers (None: do not listen).
    pub listen: Option<SocketAddr>,
    /// Local address for outgoing peer and tracker connections.
    pub bind_ip: Option<IpAddr>,
    /// Peers to connect to directly.
    pub peers: Vec<SocketAddr>,
    /// Trackers, by tier (BEP 12).
    pub tracker_tiers: Vec<Vec<String>>,
    /// Run the built-in tracker on this address too.
    pub tracker_server: Option<(SocketAddr, ServerConfig)>,
    /// Stop once every piece is verified and written.
    pub exit_when_done: bool,
    /// While seeding, stop at this upload/size ratio.
    pub seed_ratio: Option<f64>,
    /// While seeding, stop after this long.
    pub seed_time: Option<Duration>,
    /// How to show progress.
    pub progress: crate::progress::ProgressMode,
}

impl Default for SessionOptions {
    fn default() -> SessionOptions {
        SessionOptions {
            listen: None,
            bind_ip: None,
            peers: Vec::new(),
            tracker_tiers: Vec::new(),
            tracker_server: None,
            exit_when_done: false,
            seed_ratio: None,
            seed_time: None,
            progress: crate::progress::ProgressMode::Off,
        }
    }
}

/// How a session ended.
#[derive(Clone, Copy, Debug)]
pub struct Outcome {
    pub status: Option<Status>,
    pub elapsed: Duration,
    pub banned: usize,
    /// The torrent was complete (all pieces verified and written) at the end.
    pub complete: bool,
}

enum Conn {
    PeerListener(TcpListener),
    Peer {
        sock: TcpStream,
        key: usize,
        connecting: bool,
        writable: bool,
    },
    TrackerListener(TcpListener),
    TrackerServer(ServerConn),
    Announce(AnnounceConn),
}

/// A handle to stop a running session from another thread (tests, demo).
#[derive(Clone, Default)]
pub struct StopHandle(Arc<AtomicBool>);

impl StopHandle {
    pub fn stop(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// One event loop: at most one torrent, plus optionally the built-in tracker.
pub struct Session {
    poll: Poll,
    conns: Slab<Conn>,
    torrent: Option<Torrent>,
    announcer: Option<Announcer>,
    tracker: Option<Tracker>,
    opts: SessionOptions,
    listen_addr: Option<SocketAddr>,
    tracker_addr: Option<SocketAddr>,
    /// Peer addresses to try, from the tracker and the command line.
    candidates: Candidates,
    /// Dialed peers that closed or failed, and when to try them again.
    retry: Vec<(Instant, SocketAddr)>,
    /// Consecutive failed attempts per dialed address.
    failures: HashMap<SocketAddr, u32>,
    /// Addresses that turned out to be ourselves (through a NAT, a proxy
    /// or another local address): never dialed again.
    own_addrs: HashSet<SocketAddr>,
    /// Tokens with unread data left (read budget hit, or cache full).
    carry: Vec<usize>,
    close: Vec<(usize, PeerError)>,
    stop: StopHandle,
    started: Instant,
    progress: Progress,
    /// Peers given on the command line whose last dial failed before the
    /// handshake, and whether they refused (for the status line's warning).
    dial_errors: HashMap<SocketAddr, bool>,
    /// Last time a connected peer had a piece we lack (or the start).
    last_useful: Instant,
    accept_paused_until: Option<Instant>,
    /// A descriptor held in reserve, released to refuse connections
    /// cleanly when the process runs out of descriptors.
    spare_fd: Option<std::fs::File>,
    last_tick: Instant,
    flush_retry_at: Option<Instant>,
    flush_backoff: Duration,
    was_done: bool,
    seeding_since: Option<Instant>,
    peer_id: [u8; 20],
}

/// Listening sockets bound before the session is built: the client binds
/// its ports before the (possibly long) check of the data on disk, so a
/// busy port is reported at once, naming the port.
#[derive(Default)]
pub struct Listeners {
    /// For peers (used instead of binding `SessionOptions::listen`).
    pub peer: Option<TcpListener>,
    /// For the built-in tracker (instead of binding the address in
    /// `SessionOptions::tracker_server`, whose configuration is used).
    pub tracker: Option<TcpListener>,
}

/// Bind a listening socket the way the session does (non-blocking,
/// `SO_REUSEADDR`).
pub fn bind_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr)
}

impl Session {
    /// Bind the listeners and set up the cores. Nothing is sent until `run`.
    pub fn new(torrent: Option<Torrent>, opts: SessionOptions) -> io::Result<Session> {
        let peer = opts.listen.map(bind_listener).transpose()?;
        let tracker = match &opts.tracker_server {
            Some((addr, _)) => Some(bind_listener(*addr)?),
            None => None,
        };
        Session::with_listeners(torrent, opts, Listeners { peer, tracker })
    }

    /// Set up the cores around listeners bound already.
    pub fn with_listeners(
        torrent: Option<Torrent>,
        opts: SessionOptions,
        listeners: Listeners,
    ) -> io::Result<Session> {
        let poll = Poll::new()?;
        let mut conns = Slab::new();
        let mut listen_addr = None;
        if let Some(mut l) = listeners.peer {
            listen_addr = Some(l.local_addr()?);
            let e = conns.vacant_entry();
            poll.registry()
                .register(&mut l, Token(e.key()), Interest::READABLE)?;
            e.insert(Conn::PeerListener(l));
        }
        let mut tracker = None;
        let mut tracker_addr = None;
        if let Some(mut l) = listeners.tracker {
            let addr = l.local_addr()?;
            tracker_addr = Some(addr);
            let e = conns.vacant_entry();
            poll.registry()
                .register(&mut l, Token(e.key()), Interest::READABLE)?;
            e.insert(Conn::TrackerListener(l));
            let cfg = opts
                .tracker_server
                .as_ref()
                .map(|(_, cfg)| cfg.clone())
                .unwrap_or_default();
            tracker = Some(Tracker::new(cfg));
            info!("tracker listening on http://{addr}/announce");
        }
        let now = Instant::now();
        let announcer = match &torrent {
            Some(_) if !opts.tracker_tiers.is_empty() => {
                // BEP 12: each tier shuffled; back-offs jittered.
                let seed = torrent.as_ref().map_or(0, |t| {
                    t.our_id
                        .iter()
                        .fold(0u64, |h, &b| h.rotate_left(8) ^ b as u64)
                });
                Some(Announcer::with_seed(opts.tracker_tiers.clone(), now, seed))
            }
            _ => None,
        };
        let peer_id = torrent.as_ref().map(|t| t.our_id).unwrap_or([0; 20]);
        let mut candidates = Candidates::new();
        for &p in &opts.peers {
            candidates.push(p, now);
        }
        Ok(Session {
            poll,
            conns,
            torrent,
            announcer,
            tracker,
            listen_addr,
            tracker_addr,
            candidates,
            retry: Vec::new(),
            failures: HashMap::new(),
            own_addrs: HashSet::new(),
            carry: Vec::new(),
            close: Vec::new(),
            stop: StopHandle::default(),
            started: now,
            progress: Progress::new(opts.progress).with_ratio_goal(opts.seed_ratio),
            dial_errors: HashMap::new(),
            last_useful: now,
            accept_paused_until: None,
            spare_fd: std::fs::File::open("/dev/null").ok(),
            last_tick: now,
            flush_retry_at: None,
            flush_backoff: Duration::from_secs(1),
            was_done: false,
            seeding_since: None,
            peer_id,
            opts,
        })
    }

    /// Show progress with `p` (set up by the caller, which may have drawn
    /// the start-up check with it already) instead of the default.
    pub fn set_progress(&mut self, p: Progress) {
        self.progress = p;
    }

    /// The address peers can reach us on (after binding port 0, the real port).
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.listen_addr
    }

    /// The built-in tracker's address, when it runs.
    pub fn tracker_addr(&self) -> Option<SocketAddr> {
        self.tracker_addr
    }

    /// A handle that stops `run` (like Ctrl-C).
    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    pub fn torrent(&self) -> Option<&Torrent> {
        self.torrent.as_ref()
    }

    /// Run until done (when asked to exit then), or until stopped.
    pub fn run(&mut self) -> io::Result<Outcome> {
        let mut events = Events::with_capacity(256);
        self.started = Instant::now();
        // Timers run at once: connect to given peers, announce.
        self.last_tick = self.started - Duration::from_secs(1);
        if let Some(t) = &self.torrent {
            self.was_done = t.is_done();
            if self.was_done {
                self.seeding_since = Some(self.started);
            }
        }
        loop {
            if self.stop.is_set() || stop_requested() {
                info!("stopping");
                break;
            }
            if self.finished() {
                break;
            }
            let timeout = if self.carry.is_empty() {
                Duration::from_millis(200)
            } else {
                Duration::ZERO
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let now = Instant::now();
            for ev in events.iter() {
                self.on_event(
                    ev.token().0,
                    ev.is_readable() || ev.is_read_closed(),
                    ev.is_writable() || ev.is_error(),
                    now,
                );
            }
            let carry = std::mem::take(&mut self.carry);
            for token in carry {
                self.on_event(token, true, false, now);
            }
            self.after_batch(now);
        }
        self.shutdown();
        let status = self.torrent.as_ref().map(|t| t.status());
        Ok(Outcome {
            status,
            elapsed: self.started.elapsed(),
            banned: self.torrent.as_ref().map_or(0, |t| t.banned_count()),
            complete: self.torrent.as_ref().is_some_and(|t| t.is_done()),
        })
    }

    fn finished(&mut self) -> bool {
        let Some(t) = &self.torrent else {
            return false;
        };
        if !t.is_done() {
            return false;
        }
        if !self.was_done {
            self.was_done = true;
            self.seeding_since = Some(Instant::now());
            info!("download complete: every piece verified and written");
            if let Some(a) = &mut self.announcer {
                a.set_completed();
            }
        }
        if self.opts.exit_when_done {
            // Tell the trackers first (at most COMPLETED_WAIT).
            let now = Instant::now();
            if self.announcer.as_ref().is_some_and(|a| a.completed_owed())
                && self
                    .seeding_since
                    .is_some_and(|s| now.duration_since(s) < COMPLETED_WAIT)
            {
                self.maybe_announce(now);
                return false;
            }
            return true;
        }
        if let (Some(ratio), Some(t)) = (self.opts.seed_ratio, &self.torrent) {
            // Counters only: this runs every loop turn.
            if t.totals.uploaded as f64 >= ratio * t.geometry.total_len as f64 {
                info!("seed ratio {ratio} reached");
                return true;
            }
        }
        if let (Some(limit), Some(since)) = (self.opts.seed_time, self.seeding_since)
            && since.elapsed() >= limit
        {
            info!("seed time reached");
            return true;
        }
        false
    }

    fn on_event(&mut self, token: usize, readable: bool, writable: bool, now: Instant) {
        let Some(conn) = self.conns.get_mut(token) else {
            return;
        };
        match conn {
            Conn::PeerListener(_) => self.accept_peers(token, now),
            Conn::TrackerListener(_) => self.accept_tracker_clients(token, now),
            Conn::Peer { .. } => {
                if writable {
                    self.peer_writable(token, now);
                }
                if readable {
                    self.peer_readable(token, now);
                }
            }
            Conn::TrackerServer(_) => self.server_conn_event(token, now),
            Conn::Announce(_) => self.announce_event(token, now),
        }
    }

    fn accept_peers(&mut self, token: usize, now: Instant) {
        if self.accept_paused_until.is_some_and(|t| now < t) {
            return;
        }
        loop {
            let Some(Conn::PeerListener(l)) = self.conns.get(token) else {
                return;
            };
            match l.accept() {
                Ok((mut sock, addr)) => {
                    let Some(t) = &mut self.torrent else {
                        continue;
                    };
                    if !addr.ip().is_loopback() && t.peers_from(addr.ip()) >= t.cfg.max_per_ip {
                        debug!("refusing {addr}: {}", PeerError::PerAddressLimit);
                        continue;
                    }
                    if t.peers.len() >= t.cfg.max_peers {
                        match t.evict_one(now) {
                            Some(victim) => self.close.push((victim, PeerError::Evicted)),
                            None => {
                                debug!("refusing {addr}: connection limit reached");
                                continue;
                            }
                        }
                    }
                    let entry = self.conns.vacant_entry();
                    let tok = entry.key();
                    if let Err(e) =
                        self.poll
                            .registry()
                            .register(&mut sock, Token(tok), Interest::READABLE)
                    {
                        warn!("cannot register accepted socket: {e}");
                        continue;
                    }
                    let key = t.add_peer(tok, addr, false, now);
                    debug!("peer#{tok} {addr} connected to us");
                    entry.insert(Conn::Peer {
                        sock,
                        key,
                        connecting: false,
                        writable: false,
                    });
                    // Data may already be waiting.
                    self.carry.push(tok);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of file descriptors, most likely. Give back the
                    // spare descriptor, accept the waiting connection and
                    // close it at once (so the backlog drains instead of
                    // holding stale connections), take the spare again, and
                    // pause accepting for a moment rather than spin.
                    warn!("accept failed: {e}; refusing new peers for 500 ms");
                    if self.spare_fd.take().is_some() {
                        if let Some(Conn::PeerListener(l)) = self.conns.get(token) {
                            while let Ok((sock, addr)) = l.accept() {
                                debug!("refused {addr}: out of file descriptors");
                                drop(sock);
                            }
                        }
                        self.spare_fd = std::fs::File::open("/dev/null").ok();
                    }
                    self.accept_paused_until = Some(now + Duration::from_millis(500));
                    return;
                }
            }
        }
    }

    fn peer_readable(&mut self, token: usize, now: Instant) {
        let Some(Conn::Peer {
            sock,
            key,
            connecting,
            ..
        }) = self.conns.get_mut(token)
        else {
            return;
        };
        if *connecting {
            return;
        }
        let key = *key;
        let Some(t) = &mut self.torrent else {
            return;
        };
        // No back-pressure is needed for the cache: the picker requests a
        // block only when a buffer is free for it, so whatever a peer sends
        // is either stored or (unrequested) dropped.
        let mut total = 0;
        loop {
            let Some(peer) = t.peers.get_mut(key) else {
                return;
            };
            match peer.recv.read_from(sock) {
                Ok(0) => {
                    // Handle what is buffered, then close, for the reason
                    // the last bytes gave if they gave one.
                    let why = t.on_readable(key, now).err().unwrap_or(PeerError::Eof);
                    self.close.push((token, why));
                    return;
                }
                Ok(n) => {
                    total += n;
                    if peer.recv.is_full() || total >= READ_BUDGET {
                        if let Err(e) = t.on_readable(key, now) {
                            self.close.push((token, e));
                            return;
                        }
                        if total >= READ_BUDGET {
                            self.carry.push(token);
                            return;
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.close.push((token, PeerError::Io("read", e.kind())));
                    return;
                }
            }
        }
        if let Err(e) = t.on_readable(key, now) {
            self.close.push((token, e));
        }
    }

    fn peer_writable(&mut self, token: usize, now: Instant) {
        let Some(Conn::Peer {
            sock, connecting, ..
        }) = self.conns.get_mut(token)
        else {
            return;
        };
        if *connecting {
            // Confirm the connect: an error, or a peer address once connected.
            match sock.take_error() {
                Ok(Some(e)) | Err(e) => {
                    self.close.push((token, PeerError::Io("connect", e.kind())));
                    return;
                }
                Ok(None) => {}
            }
            match sock.peer_addr() {
                Ok(_) => {
                    *connecting = false;
                }
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => {
                    self.close.push((token, PeerError::Io("connect", e.kind())));
                    return;
                }
            }
            // Anything that arrived with the connect.
            self.carry.push(token);
        }
        self.write_peer(token, now);
    }

    /// Write queued output (refilling from queued requests) until the socket
    /// would block or nothing is left; keep `WRITABLE` interest exactly while
    /// output is pending.
    fn write_peer(&mut self, token: usize, now: Instant) {
        let Some(Conn::Peer {
            sock,
            key,
            connecting,
            writable,
        }) = self.conns.get_mut(token)
        else {
            return;
        };
        if *connecting {
            return;
        }
        let key = *key;
        let Some(t) = &mut self.torrent else {
            return;
        };
        let mut wrote = false;
        loop {
            let Some(peer) = t.peers.get_mut(key) else {
                return;
            };
            if peer.send.is_empty() {
                if peer.requests.is_empty() {
                    break;
                }
                if let Err(e) = t.serve(key) {
                    self.close.push((token, e));
                    return;
                }
                if t.peers.get(key).is_none_or(|p| p.send.is_empty()) {
                    break; // out of upload allowance
                }
                continue;
            }
            match peer.send.write_to(sock) {
                Ok(n) => {
                    if n > 0 {
                        wrote = true;
                    }
                    if !peer.send.is_empty() {
                        break; // would block
                    }
                }
                Err(e) => {
                    self.close.push((token, PeerError::Io("write", e.kind())));
                    return;
                }
            }
        }
        if wrote {
            t.on_sent(key, now);
        }
        let pending = t.peers.get(key).is_some_and(|p| !p.send.is_empty());
        if pending != *writable {
            let interest = if pending {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if self
                .poll
                .registry()
                .reregister(sock, Token(token), interest)
                .is_ok()
            {
                *writable = pending;
            }
        }
    }

    /// Open outgoing connections to candidates, within the limits.
    fn connect_more(&mut self, now: Instant) {
        let Some(t) = &mut self.torrent else {
            return;
        };
        if t.is_done() && self.opts.exit_when_done {
            return;
        }
        let mut half_open = self
            .conns
            .iter()
            .filter(|(_, c)| {
                matches!(
                    c,
                    Conn::Peer {
                        connecting: true,
                        ..
                    }
                )
            })
            .count();
        while t.peers.len() < t.cfg.max_peers && half_open < t.cfg.max_half_open {
            let Some(addr) = self.candidates.pop() else {
                break;
            };
            if Some(addr) == self.listen_addr
                || self.listen_addr.is_some_and(|l| {
                    l.port() == addr.port() && (l.ip().is_unspecified() && addr.ip().is_loopback())
                })
                || self.own_addrs.contains(&addr)
                || t.is_connected_to(&addr)
                || t.is_banned(&addr)
            {
                continue;
            }
            let mut sock = match connect_from(self.opts.bind_ip, addr) {
                Ok(s) => s,
                Err(e) => {
                    debug!("connect to {addr} failed: {e}");
                    continue;
                }
            };
            let entry = self.conns.vacant_entry();
            let tok = entry.key();
            if let Err(e) = self.poll.registry().register(
                &mut sock,
                Token(tok),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                warn!("cannot register socket: {e}");
                continue;
            }
            let key = t.add_peer(tok, addr, true, now);
            debug!("peer#{tok} {addr} connecting");
            entry.insert(Conn::Peer {
                sock,
                key,
                connecting: true,
                writable: true,
            });
            half_open += 1;
        }
    }

    fn after_batch(&mut self, now: Instant) {
        // Flush verified pieces (bounded per turn), unless a recent failure
        // (disk full) says to wait.
        if self.flush_retry_at.is_none_or(|at| now >= at)
            && self.torrent.as_ref().is_some_and(|t| {
                t.should_flush(now) || (t.is_complete() && t.has_pending_writes()) || t.cache_full()
            })
        {
            self.flush(now);
        }
        if let Some(t) = &mut self.torrent {
            self.close.append(&mut t.to_close);
            t.refill_upload(now);
            t.choke_round(now);
        }
        // Write everything that has output queued.
        if let Some(t) = &mut self.torrent {
            let mut dirty = std::mem::take(&mut t.dirty);
            dirty.sort_unstable();
            dirty.dedup();
            let tokens: Vec<usize> = dirty
                .iter()
                .filter_map(|&k| t.peers.get(k).map(|p| p.token))
                .collect();
            for token in tokens {
                self.write_peer(token, now);
            }
        }
        if now.duration_since(self.last_tick) >= Duration::from_secs(1) {
            let dt = now.duration_since(self.last_tick);
            self.last_tick = now;
            self.tick(now, dt);
        }
        self.close_pending();
        if self.torrent.is_some()
            && self.progress.due(now)
            && let Some(s) = self.status(now)
        {
            self.progress.update(&s, now);
        }
    }

    /// Write verified data under the per-turn budget. After a failure
    /// (a full disk) the next try waits: 1 s, doubling up to 8 s, so a
    /// disk that stays full costs a few wake-ups, not a spinning loop.
    fn flush(&mut self, now: Instant) {
        let Some(t) = &mut self.torrent else {
            return;
        };
        match t.flush(t.cfg.flush_per_turn, now) {
            Ok(_) => {
                self.flush_retry_at = None;
                self.flush_backoff = Duration::from_secs(1);
            }
            Err(_) => {
                self.flush_retry_at = Some(now + self.flush_backoff);
                self.flush_backoff = (self.flush_backoff * 2).min(Duration::from_secs(8));
            }
        }
    }

    fn tick(&mut self, now: Instant, dt: Duration) {
        if self.accept_paused_until.is_some_and(|t| now >= t) {
            self.accept_paused_until = None;
            let listeners: Vec<usize> = self
                .conns
                .iter()
                .filter(|(_, c)| matches!(c, Conn::PeerListener(_)))
                .map(|(k, _)| k)
                .collect();
            for l in listeners {
                self.accept_peers(l, now);
            }
        }
        // Write what verified in the last second, even below a batch.
        if self.flush_retry_at.is_none_or(|at| now >= at)
            && self
                .torrent
                .as_ref()
                .is_some_and(|t| t.has_pending_writes())
        {
            self.flush(now);
        }
        if let Some(t) = &mut self.torrent {
            t.tick(now, dt, &mut self.close);
            let timeout = t.cfg.connect_timeout;
            for (tok, c) in &self.conns {
                if let Conn::Peer {
                    connecting: true,
                    key,
                    ..
                } = c
                    && t.peers
                        .get(*key)
                        .is_some_and(|p| now.duration_since(p.connected_at) > timeout)
                {
                    self.close.push((tok, PeerError::Timeout("connect")));
                }
            }
        }
        if let Some(tr) = &mut self.tracker {
            tr.expire(now);
        }
        self.tracker_conns_tick(now);
        let mut i = 0;
        while i < self.retry.len() {
            if self.retry[i].0 <= now {
                let (_, addr) = self.retry.swap_remove(i);
                self.candidates.push(addr, now);
            } else {
                i += 1;
            }
        }
        self.candidates.trim(now);
        // Failure counts outlive their retries only while few: a stream of
        // new tracker peers must not grow the table without bound.
        if self.failures.len() > 4 * crate::candidates::MAX_CANDIDATES {
            let waiting: HashSet<SocketAddr> = self.retry.iter().map(|&(_, a)| a).collect();
            self.failures.retain(|a, _| waiting.contains(a));
        }
        self.connect_more(now);
        // Running low on peers with nobody left to try: ask the tracker
        // early (the announcer still respects `min interval`).
        if let (Some(a), Some(t)) = (&mut self.announcer, &self.torrent)
            && self.candidates.is_empty()
            && t.peers.len() < 5
            && !t.is_complete()
        {
            a.want_peers_now(now);
        }
    }

    fn close_pending(&mut self) {
        let close = std::mem::take(&mut self.close);
        for (token, why) in close {
            self.close_conn(token, &why);
        }
    }

    fn close_conn(&mut self, token: usize, why: &PeerError) {
        let Some(conn) = self.conns.try_remove(token) else {
            return;
        };
        match conn {
            Conn::Peer { mut sock, key, .. } => {
                if matches!(why, PeerError::OwnPeerId) {
                    // Our handshake is queued (see `Torrent::on_handshake`):
                    // the dialing side learns it reached itself and stops.
                    if let Some(p) = self.torrent.as_mut().and_then(|t| t.peers.get_mut(key)) {
                        let _ = write_out(&mut sock, &mut p.send);
                    }
                    // Closing with unread bytes would send a reset, which
                    // can overtake the handshake: read what is waiting (a
                    // bounded amount) so the close is a plain FIN.
                    let mut sink = [0u8; 4096];
                    for _ in 0..64 {
                        if !matches!(sock.read(&mut sink), Ok(n) if n > 0) {
                            break;
                        }
                    }
                }
                let _ = self.poll.registry().deregister(&mut sock);
                let gone = self.torrent.as_mut().and_then(|t| t.remove_peer(key, why));
                if let Some((addr, true, active)) = gone {
                    self.schedule_retry(addr, active, why);
                }
            }
            Conn::TrackerServer(mut c) => {
                let _ = self.poll.registry().deregister(&mut c.sock);
            }
            Conn::Announce(mut c) => {
                let _ = self.poll.registry().deregister(&mut c.sock);
            }
            Conn::PeerListener(mut l) | Conn::TrackerListener(mut l) => {
                let _ = self.poll.registry().deregister(&mut l);
            }
        }
    }

    /// Try a dialed peer again later: peers given on the command line until
    /// we are done, tracker peers a few times, with growing back-off.
    fn schedule_retry(&mut self, addr: SocketAddr, was_active: bool, why: &PeerError) {
        if matches!(why, PeerError::OwnPeerId) {
            info!("{addr} is ourselves; not dialing it again");
            self.own_addrs.insert(addr);
            return;
        }
        if matches!(
            why,
            PeerError::Shutdown
                | PeerError::Banned
                | PeerError::WrongInfoHash
                | PeerError::Duplicate
                | PeerError::BothSeeds
        ) {
            return;
        }
        let n = self.failures.entry(addr).or_insert(0);
        if was_active {
            *n = 0;
        }
        *n += 1;
        let direct = self.opts.peers.contains(&addr);
        if direct {
            if was_active {
                self.dial_errors.remove(&addr);
            } else {
                let refused = matches!(
                    why,
                    PeerError::Io("connect", io::ErrorKind::ConnectionRefused)
                );
                self.dial_errors.insert(addr, refused);
            }
        }
        if !direct && *n > 5 {
            return;
        }
        let delay = Duration::from_secs(2u64.saturating_pow((*n).min(8)).min(300));
        self.retry.push((Instant::now() + delay, addr));
    }

    /// Flush verified pieces, tell the tracker we stop, close everything.
    fn shutdown(&mut self) {
        let status = self.status(Instant::now());
        self.progress.finish(status.as_ref(), Instant::now());
        if let Some(t) = &mut self.torrent {
            while t.has_pending_writes() {
                if let Err(e) = t.flush(usize::MAX, Instant::now()) {
                    warn!("could not write every verified piece before exit: {e}");
                    break;
                }
            }
            if let Err(e) = t.sync() {
                warn!("sync failed: {e}");
            }
        }
        let peers: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| matches!(c, Conn::Peer { .. }))
            .map(|(k, _)| k)
            .collect();
        for tok in peers {
            self.close_conn(tok, &PeerError::Shutdown);
        }
        self.announce_stopped();
    }
}

/// A connection's queued output, written until `WouldBlock`. Returns false
/// on a socket error.
fn write_out(sock: &mut TcpStream, out: &mut SendBuf) -> bool {
    out.write_to(sock).is_ok()
}

/// Why [`read_into`] stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReadStop {
    WouldBlock,
    Eof,
    /// `buf` reached the cap; more may be waiting.
    Cap,
}

/// Read what is available into `buf`, up to `cap` bytes in total.
fn read_into(sock: &mut TcpStream, buf: &mut Vec<u8>, cap: usize) -> io::Result<ReadStop> {
    let mut chunk = [0u8; 4096];
    loop {
        let room = cap.saturating_sub(buf.len()).min(chunk.len());
        if room == 0 {
            return Ok(ReadStop::Cap);
        }
        match sock.read(&mut chunk[..room]) {
            Ok(0) => return Ok(ReadStop::Eof),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(ReadStop::WouldBlock),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}
