//! The only code that touches mio: one `Poll`, one `Slab<Conn>` whose keys
//! are the mio tokens, and the loop that moves bytes between sockets and the
//! sans-IO cores (torrents, tracker announcers, the tracker server).
//!
//! A [`Session`] holds any number of torrents, keyed by info-hash, on one
//! listen port: an accepted connection is routed by the info-hash of its
//! handshake (an unknown one is closed). Torrents can be added, paused,
//! resumed and removed while the loop runs, from another thread, through a
//! [`SessionHandle`] (a command queue and a `mio::Waker`).
//!
//! One turn: poll until the nearest deadline (the cores say when they next
//! need the clock; an idle session sleeps up to [`MAX_SLEEP`]); read every
//! ready socket until `WouldBlock` into its buffer and hand the bytes to its
//! core; write every connection with queued output until `WouldBlock`, with
//! `WRITABLE` interest only while output is pending; flush verified pieces
//! under a per-turn byte budget; run the one-second timers when due
//! (time-outs, keep-alives, choking, connects, re-announces); close what
//! must close after the batch.

mod net;
mod tracker_conns;

pub use net::{connect_from, install_stop_handler, stop_requested};

use crate::candidates::Candidates;
use crate::config::Config;
use crate::peer::PeerError;
use crate::progress::Progress;
use crate::rate::TokenBucket;
use crate::torrent::{Status, Torrent, Totals};
use crate::tracker::Announcer;
use crate::tracker::{ServerConfig, Tracker};
use crate::wire::{self, SendBuf};
use log::{debug, info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;
use std::collections::{HashMap, HashSet};
use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracker_conns::{AnnounceConn, ServerConn};

/// Most bytes read from one peer per readiness event before moving on to
/// the others (the rest is read next turn: fairness between peers).
const READ_BUDGET: usize = 1 << 20;

/// Longest a finished download that exits waits for its `completed`
/// announce to be answered.
const COMPLETED_WAIT: Duration = Duration::from_secs(5);

/// Longest the loop sleeps when nothing is due (an idle session wakes about
/// twice a minute).
pub const MAX_SLEEP: Duration = Duration::from_secs(30);

/// Time given to checking data on disk per loop turn.
const CHECK_SLICE: Duration = Duration::from_millis(20);

/// The token of the session's waker (never a slab key).
const WAKER: Token = Token(usize::MAX);

/// Bytes of a handshake up to and including the info-hash: enough to route
/// an incoming connection to its torrent.
const ROUTE_LEN: usize = 48;

/// A torrent of a session (its slab key).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TorrentId(pub usize);

/// How the session as a whole is set up.
#[derive(Clone, Debug)]
pub struct SessionOptions {
    /// Where to accept peers (None: do not listen).
    pub listen: Option<SocketAddr>,
    /// Local address for outgoing peer and tracker connections.
    pub bind_ip: Option<IpAddr>,
    /// Run the built-in tracker on this address too.
    pub tracker_server: Option<(SocketAddr, ServerConfig)>,
    /// How to show progress.
    pub progress: crate::progress::ProgressMode,
    /// Session-wide connection limits: `max_peers` (all torrents together),
    /// `max_half_open`, `max_per_ip`, `evict_after`, `handshake_timeout`,
    /// `connect_timeout`.
    pub limits: Config,
    /// Keep running when every torrent has finished (or none is left):
    /// for sessions that take torrents at run time.
    pub keep_running: bool,
}

impl Default for SessionOptions {
    fn default() -> SessionOptions {
        SessionOptions {
            listen: None,
            bind_ip: None,
            tracker_server: None,
            progress: crate::progress::ProgressMode::Off,
            limits: Config::default(),
            keep_running: false,
        }
    }
}

/// How one torrent of a session runs.
#[derive(Clone, Debug, Default)]
pub struct TorrentOptions {
    /// Peers to connect to directly.
    pub peers: Vec<SocketAddr>,
    /// Trackers, by tier (BEP 12).
    pub tracker_tiers: Vec<Vec<String>>,
    /// Finished once every piece is verified and written.
    pub exit_when_done: bool,
    /// While seeding, finished at this upload/size ratio.
    pub seed_ratio: Option<f64>,
    /// While seeding, finished after this long.
    pub seed_time: Option<Duration>,
}

/// How one torrent ended.
#[derive(Clone, Copy, Debug)]
pub struct TorrentOutcome {
    pub info_hash: [u8; 20],
    pub status: Status,
    pub banned: usize,
    /// All pieces verified and written at the end.
    pub complete: bool,
}

/// How a session ended.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// All torrents together (None without torrents).
    pub status: Option<Status>,
    pub elapsed: Duration,
    pub banned: usize,
    /// Every torrent was complete at the end.
    pub complete: bool,
    /// Each torrent, in the order they were added.
    pub torrents: Vec<TorrentOutcome>,
}

enum Conn {
    PeerListener(TcpListener),
    /// Accepted; its handshake will say which torrent it is for.
    Incoming {
        sock: TcpStream,
        addr: SocketAddr,
        buf: Vec<u8>,
        since: Instant,
    },
    Peer {
        sock: TcpStream,
        tid: usize,
        key: usize,
        connecting: bool,
        writable: bool,
    },
    TrackerListener(TcpListener),
    TrackerServer(ServerConn),
    Announce(AnnounceConn),
}

/// What another thread asks of a running session.
enum Command {
    Add(Box<Torrent>, TorrentOptions),
    /// Session-wide (download, upload) limits in bytes/s.
    Limits(Option<u64>, Option<u64>),
    /// One torrent's (download, upload) limits in bytes/s.
    TorrentLimits([u8; 20], Option<u64>, Option<u64>),
    Pause([u8; 20]),
    Resume([u8; 20]),
    Remove([u8; 20]),
}

/// Drives a running session from another thread (tests, the demo, a
/// watched folder): stop it, add, pause, resume or remove torrents.
#[derive(Clone)]
pub struct SessionHandle {
    stop: Arc<AtomicBool>,
    commands: Arc<Mutex<Vec<Command>>>,
    waker: Arc<Waker>,
}

/// The old name of [`SessionHandle`].
pub type StopHandle = SessionHandle;

impl SessionHandle {
    /// Stop the session (like Ctrl-C).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
    }
    fn is_set(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
    fn send(&self, c: Command) {
        if let Ok(mut q) = self.commands.lock() {
            q.push(c);
        }
        let _ = self.waker.wake();
    }
    /// Add a torrent (refused, with a log line, if its info-hash is there).
    pub fn add(&self, torrent: Torrent, opts: TorrentOptions) {
        self.send(Command::Add(Box::new(torrent), opts));
    }
    /// Close the torrent's connections and stop announcing it.
    pub fn pause(&self, info_hash: [u8; 20]) {
        self.send(Command::Pause(info_hash));
    }
    pub fn resume(&self, info_hash: [u8; 20]) {
        self.send(Command::Resume(info_hash));
    }
    /// Flush, close, announce `stopped` and forget the torrent.
    pub fn remove(&self, info_hash: [u8; 20]) {
        self.send(Command::Remove(info_hash));
    }
    /// Change the session-wide download and upload limits (bytes/s;
    /// None: unlimited).
    pub fn set_rate_limits(&self, download: Option<u64>, upload: Option<u64>) {
        self.send(Command::Limits(download, upload));
    }
    /// Change one torrent's download and upload limits (bytes/s; None:
    /// unlimited; the session's limits apply too).
    pub fn set_torrent_rate_limits(
        &self,
        info_hash: [u8; 20],
        download: Option<u64>,
        upload: Option<u64>,
    ) {
        self.send(Command::TorrentLimits(info_hash, download, upload));
    }
}

/// One torrent and what the shell keeps for it.
struct Slot {
    t: Torrent,
    opts: TorrentOptions,
    announcer: Option<Announcer>,
    /// Peer addresses to try, from the trackers and the command line.
    candidates: Candidates,
    /// Dialed peers that closed or failed, and when to try them again.
    retry: Vec<(Instant, SocketAddr)>,
    /// Consecutive failed attempts per dialed address.
    failures: HashMap<SocketAddr, u32>,
    flush_retry_at: Option<Instant>,
    flush_backoff: Duration,
    was_done: bool,
    seeding_since: Option<Instant>,
    paused: bool,
    /// Reached its end (done, ratio or time); kept until the session ends.
    finished: bool,
    /// Being removed: its `stopped` announce is on the way.
    removing: Option<Instant>,
    /// This torrent's own upload limit (its bucket gets the lower of this
    /// and its share of the session's).
    up_limit: Option<u64>,
}

impl Slot {
    fn new(t: Torrent, opts: TorrentOptions, now: Instant) -> Slot {
        let announcer = (!opts.tracker_tiers.is_empty()).then(|| {
            // BEP 12: each tier shuffled; back-offs jittered.
            let seed = t
                .our_id
                .iter()
                .chain(t.info_hash.iter())
                .fold(0u64, |h, &b| h.rotate_left(8) ^ b as u64);
            Announcer::with_seed(opts.tracker_tiers.clone(), now, seed)
        });
        let mut candidates = Candidates::new();
        for &p in &opts.peers {
            candidates.push(p, now);
        }
        let was_done = t.is_done();
        let t_up_limit = t.up_bucket.rate();
        Slot {
            t,
            opts,
            announcer,
            candidates,
            retry: Vec::new(),
            failures: HashMap::new(),
            flush_retry_at: None,
            flush_backoff: Duration::from_secs(1),
            was_done,
            seeding_since: was_done.then_some(now),
            paused: false,
            finished: false,
            removing: None,
            up_limit: t_up_limit,
        }
    }

    /// Check the end conditions; true once the torrent has reached one.
    fn check_finished(&mut self, now: Instant) -> bool {
        if self.finished {
            return true;
        }
        if !self.t.is_done() {
            return false;
        }
        if !self.was_done {
            self.was_done = true;
            self.seeding_since = Some(now);
            info!("download complete: every piece verified and written");
            if let Some(a) = &mut self.announcer {
                a.set_completed();
            }
        }
        if self.opts.exit_when_done {
            // Tell the trackers first (at most COMPLETED_WAIT).
            let waiting = self.announcer.as_ref().is_some_and(|a| a.completed_owed())
                && self
                    .seeding_since
                    .is_some_and(|s| now.duration_since(s) < COMPLETED_WAIT);
            self.finished = !waiting;
        } else if let Some(ratio) = self.opts.seed_ratio
            // Counters only: this runs every loop turn.
            && self.t.totals.uploaded as f64 >= ratio * self.t.geometry.total_len as f64
        {
            info!("seed ratio {ratio} reached");
            self.finished = true;
        } else if let (Some(limit), Some(since)) = (self.opts.seed_time, self.seeding_since)
            && now.duration_since(since) >= limit
        {
            info!("seed time reached");
            self.finished = true;
        }
        self.finished
    }

    /// Write verified pieces under the per-turn budget. After a failure
    /// (a full disk) the next try waits: 1 s, doubling up to 8 s, so a
    /// disk that stays full costs a few wake-ups, not a spinning loop.
    fn flush(&mut self, now: Instant) {
        if self.flush_retry_at.is_some_and(|at| now < at) {
            return;
        }
        match self.t.flush(self.t.cfg.flush_per_turn, now) {
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
}

/// One event loop: any number of torrents, plus optionally the built-in
/// tracker.
pub struct Session {
    poll: Poll,
    conns: Slab<Conn>,
    torrents: Slab<Slot>,
    by_hash: HashMap<[u8; 20], usize>,
    /// Torrents in the order they were added (for outcomes and status).
    order: Vec<usize>,
    tracker: Option<Tracker>,
    opts: SessionOptions,
    listen_addr: Option<SocketAddr>,
    tracker_addr: Option<SocketAddr>,
    /// Addresses that turned out to be ourselves (through a NAT, a proxy
    /// or another local address): never dialed again.
    own_addrs: HashSet<SocketAddr>,
    /// Tokens with unread data left (read budget hit).
    carry: Vec<usize>,
    /// Peers not read because a download limit ran out of tokens: read
    /// again when the buckets refill.
    throttled: Vec<usize>,
    /// The session's download limit (all torrents together).
    down: TokenBucket,
    /// The session's upload limit, shared out to the torrents' buckets.
    up_limit: Option<u64>,
    close: Vec<(usize, PeerError)>,
    handle: SessionHandle,
    started: Instant,
    progress: Progress,
    accept_paused_until: Option<Instant>,
    /// A descriptor held in reserve, released to refuse connections
    /// cleanly when the process runs out of descriptors.
    spare_fd: Option<std::fs::File>,
    last_tick: Instant,
    /// Loop turns so far (for tests and `docs/performance.md`).
    turns: u64,
    /// Outcomes of torrents removed while running.
    removed: Vec<TorrentOutcome>,
}

impl Session {
    /// Bind the listeners. Torrents come with [`Session::add_torrent`] (or
    /// through the handle while running). Nothing is sent until `run`.
    pub fn new(opts: SessionOptions) -> io::Result<Session> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let mut conns = Slab::new();
        let mut listen_addr = None;
        if let Some(addr) = opts.listen {
            let mut l = TcpListener::bind(addr)?;
            listen_addr = Some(l.local_addr()?);
            let e = conns.vacant_entry();
            poll.registry()
                .register(&mut l, Token(e.key()), Interest::READABLE)?;
            e.insert(Conn::PeerListener(l));
        }
        let mut tracker = None;
        let mut tracker_addr = None;
        if let Some((addr, cfg)) = &opts.tracker_server {
            let mut l = TcpListener::bind(*addr)?;
            tracker_addr = Some(l.local_addr()?);
            let e = conns.vacant_entry();
            poll.registry()
                .register(&mut l, Token(e.key()), Interest::READABLE)?;
            e.insert(Conn::TrackerListener(l));
            tracker = Some(Tracker::new(cfg.clone()));
            info!(
                "tracker listening on http://{}/announce",
                tracker_addr.unwrap_or(*addr)
            );
        }
        let now = Instant::now();
        Ok(Session {
            poll,
            conns,
            torrents: Slab::new(),
            by_hash: HashMap::new(),
            order: Vec::new(),
            tracker,
            listen_addr,
            tracker_addr,
            own_addrs: HashSet::new(),
            carry: Vec::new(),
            throttled: Vec::new(),
            down: TokenBucket::new(opts.limits.download_limit, now),
            up_limit: opts.limits.upload_limit.filter(|&r| r > 0),
            close: Vec::new(),
            handle: SessionHandle {
                stop: Arc::new(AtomicBool::new(false)),
                commands: Arc::new(Mutex::new(Vec::new())),
                waker,
            },
            started: now,
            progress: Progress::new(opts.progress),
            accept_paused_until: None,
            spare_fd: std::fs::File::open("/dev/null").ok(),
            last_tick: now,
            turns: 0,
            removed: Vec::new(),
            opts,
        })
    }

    /// Add a torrent. Refused (given back) if a torrent with its info-hash
    /// is there.
    pub fn add_torrent(
        &mut self,
        t: Torrent,
        opts: TorrentOptions,
    ) -> Result<TorrentId, Box<Torrent>> {
        if self.by_hash.contains_key(&t.info_hash) {
            return Err(Box::new(t));
        }
        let hash = t.info_hash;
        let id = self.torrents.insert(Slot::new(t, opts, Instant::now()));
        self.by_hash.insert(hash, id);
        self.order.push(id);
        self.share_upload();
        Ok(TorrentId(id))
    }

    /// The address peers can reach us on (after binding port 0, the real port).
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.listen_addr
    }

    /// The built-in tracker's address, when it runs.
    pub fn tracker_addr(&self) -> Option<SocketAddr> {
        self.tracker_addr
    }

    /// A handle that stops the session or changes its torrents while it runs.
    pub fn handle(&self) -> SessionHandle {
        self.handle.clone()
    }

    /// A handle that stops `run` (like Ctrl-C).
    pub fn stop_handle(&self) -> SessionHandle {
        self.handle()
    }

    /// The first torrent added (the single-torrent view).
    pub fn torrent(&self) -> Option<&Torrent> {
        self.order
            .first()
            .and_then(|&id| self.torrents.get(id))
            .map(|s| &s.t)
    }

    /// A torrent by id.
    pub fn torrent_by_id(&self, id: TorrentId) -> Option<&Torrent> {
        self.torrents.get(id.0).map(|s| &s.t)
    }

    /// Loop turns so far.
    pub fn turns(&self) -> u64 {
        self.turns
    }

    /// Run until every torrent has finished (unless `keep_running`), or
    /// until stopped.
    pub fn run(&mut self) -> io::Result<Outcome> {
        let mut events = Events::with_capacity(256);
        self.started = Instant::now();
        // Timers run at once: connect to given peers, announce.
        self.last_tick = self.started - Duration::from_secs(1);
        loop {
            if self.handle.is_set() || stop_requested() {
                info!("stopping");
                break;
            }
            if self.all_finished(Instant::now()) {
                break;
            }
            let timeout = if self.carry.is_empty() {
                self.next_deadline()
                    .saturating_duration_since(Instant::now())
            } else {
                Duration::ZERO
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            self.turns += 1;
            let now = Instant::now();
            for ev in events.iter() {
                if ev.token() == WAKER {
                    self.run_commands(now);
                    continue;
                }
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
        let mut torrents: Vec<TorrentOutcome> = std::mem::take(&mut self.removed);
        torrents.extend(
            self.order
                .iter()
                .filter_map(|&id| self.torrents.get(id))
                .map(outcome_of),
        );
        let statuses: Vec<Status> = torrents.iter().map(|o| o.status).collect();
        Ok(Outcome {
            status: aggregate(&statuses),
            elapsed: self.started.elapsed(),
            banned: torrents.iter().map(|o| o.banned).sum(),
            complete: !torrents.is_empty() && torrents.iter().all(|o| o.complete),
            torrents,
        })
    }

    /// When the loop must next wake, whatever the sockets do: the
    /// one-second timers while anything is connected or pending, the
    /// announcers, retries, flush back-offs and the status line; otherwise
    /// [`MAX_SLEEP`].
    fn next_deadline(&self) -> Instant {
        let now = Instant::now();
        let mut at = now + MAX_SLEEP;
        let tick = self.last_tick + Duration::from_secs(1);
        let busy_conns = self
            .conns
            .iter()
            .any(|(_, c)| !matches!(c, Conn::PeerListener(_) | Conn::TrackerListener(_)));
        if busy_conns || self.accept_paused_until.is_some() {
            at = at.min(tick);
        }
        for (_, s) in &self.torrents {
            if s.t.is_checking() {
                return now;
            }
            if s.paused && s.removing.is_none() {
                continue;
            }
            if !s.t.peers.is_empty() || s.t.has_pending_writes() || !s.candidates.is_empty() {
                at = at.min(tick);
            }
            if let Some(a) = &s.announcer
                && let Some(t) = a.poll_timeout()
            {
                at = at.min(t.max(tick));
            }
            for &(t, _) in &s.retry {
                at = at.min(t.max(tick));
            }
            if let Some(t) = s.flush_retry_at {
                at = at.min(t);
            }
            if s.t.has_pending_writes() {
                at = at.min(now + crate::torrent::FLUSH_AGE);
            }
            if s.t.is_done() && !s.finished && (s.opts.exit_when_done || s.opts.seed_time.is_some())
            {
                at = at.min(tick);
            }
        }
        if let Some(due) = self.progress.next_due() {
            at = at.min(due);
        }
        if !self.throttled.is_empty() {
            let mut ready = self.down.ready_at(now).unwrap_or(now);
            for (_, s) in &self.torrents {
                if let Some(t) = s.t.down_bucket.ready_at(now) {
                    ready = ready.max(t.min(now + Duration::from_millis(100)));
                }
            }
            at = at.min(ready.max(now + Duration::from_millis(5)));
        }
        at
    }

    fn all_finished(&mut self, now: Instant) -> bool {
        let mut all = true;
        for (_, s) in self.torrents.iter_mut() {
            if !s.check_finished(now) {
                all = false;
            }
        }
        // A finished download may still owe its `completed` announce.
        self.maybe_announce(now);
        all && !self.opts.keep_running && !self.torrents.is_empty()
    }

    fn run_commands(&mut self, now: Instant) {
        let cmds = match self.handle.commands.lock() {
            Ok(mut q) => std::mem::take(&mut *q),
            Err(_) => return,
        };
        for c in cmds {
            match c {
                Command::Add(t, opts) => {
                    let name = hex_short(&t.info_hash);
                    match self.add_torrent(*t, opts) {
                        Ok(_) => info!("torrent {name}: added"),
                        Err(_) => warn!("torrent {name} is already in the session"),
                    }
                }
                Command::Limits(down, up) => {
                    self.down.set_rate(down);
                    self.up_limit = up.filter(|&r| r > 0);
                    self.share_upload();
                }
                Command::TorrentLimits(h, down, up) => {
                    if let Some(s) = self
                        .by_hash
                        .get(&h)
                        .and_then(|&id| self.torrents.get_mut(id))
                    {
                        s.t.down_bucket.set_rate(down);
                        s.up_limit = up.filter(|&r| r > 0);
                    }
                    self.share_upload();
                }
                Command::Pause(h) => {
                    if let Some(&id) = self.by_hash.get(&h) {
                        self.pause(id, now);
                    }
                }
                Command::Resume(h) => {
                    if let Some(s) = self
                        .by_hash
                        .get(&h)
                        .and_then(|&id| self.torrents.get_mut(id))
                        && s.paused
                        && s.removing.is_none()
                    {
                        info!("torrent {}: resumed", hex_short(&h));
                        s.paused = false;
                        for &p in &s.opts.peers {
                            s.candidates.push(p, now);
                        }
                        if let Some(a) = &mut s.announcer {
                            a.want_peers_now(now);
                        }
                    }
                }
                Command::Remove(h) => {
                    if let Some(&id) = self.by_hash.get(&h) {
                        self.pause(id, now);
                        if let Some(s) = self.torrents.get_mut(id) {
                            info!("torrent {}: removing", hex_short(&h));
                            s.removing = Some(now);
                            if let Some(a) = &mut s.announcer {
                                a.stop();
                            }
                        }
                    }
                }
            }
        }
        self.connect_more(now);
    }

    /// Close every connection of torrent `id`, write what is verified, and
    /// stop dialing or announcing it until resumed.
    fn pause(&mut self, id: usize, now: Instant) {
        let Some(s) = self.torrents.get_mut(id) else {
            return;
        };
        if !s.paused {
            info!("torrent {}: paused", hex_short(&s.t.info_hash));
        }
        s.paused = true;
        while s.t.has_pending_writes() {
            if s.t.flush(usize::MAX, now).is_err() {
                break;
            }
        }
        let toks: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                matches!(c, Conn::Peer { tid, .. } if *tid == id)
                    || matches!(c, Conn::Announce(a) if a.tid == id)
            })
            .map(|(k, _)| k)
            .collect();
        for tok in toks {
            if let Some(Conn::Announce(a)) = self.conns.get(tok) {
                let url = a.url.clone();
                let _ = self.close_silently(tok);
                if let Some(an) = self.torrents.get_mut(id).and_then(|s| s.announcer.as_mut()) {
                    an.abandon(&url);
                }
            } else {
                self.close_conn(tok, &PeerError::Shutdown);
            }
        }
    }

    /// Give each torrent's upload bucket the lower of its own limit and an
    /// equal share of the session's among the torrents with peers.
    fn share_upload(&mut self) {
        let active = self
            .torrents
            .iter()
            .filter(|(_, s)| !s.t.peers.is_empty())
            .count()
            .max(1) as u64;
        let share = self.up_limit.map(|r| (r / active).max(1));
        for (_, s) in self.torrents.iter_mut() {
            let rate = match (s.up_limit, share) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            s.t.up_bucket.set_rate(rate);
        }
    }

    fn on_event(&mut self, token: usize, readable: bool, writable: bool, now: Instant) {
        let Some(conn) = self.conns.get_mut(token) else {
            return;
        };
        match conn {
            Conn::PeerListener(_) => self.accept_peers(token, now),
            Conn::TrackerListener(_) => self.accept_tracker_clients(token, now),
            Conn::Incoming { .. } => {
                if readable {
                    self.incoming_readable(token, now);
                }
            }
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

    /// Connections to peers (incoming, routed or not, and outgoing).
    fn peer_conns(&self) -> usize {
        self.conns
            .iter()
            .filter(|(_, c)| matches!(c, Conn::Incoming { .. } | Conn::Peer { .. }))
            .count()
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
                    let limits = &self.opts.limits;
                    if !addr.ip().is_loopback() {
                        let from_ip = self
                            .conns
                            .iter()
                            .filter(|(_, c)| match c {
                                Conn::Incoming { addr: a, .. } => a.ip() == addr.ip(),
                                Conn::Peer { tid, key, .. } => self
                                    .torrents
                                    .get(*tid)
                                    .and_then(|s| s.t.peers.get(*key))
                                    .is_some_and(|p| p.addr.ip() == addr.ip()),
                                _ => false,
                            })
                            .count();
                        if from_ip >= limits.max_per_ip {
                            debug!("refusing {addr}: {}", PeerError::PerAddressLimit);
                            continue;
                        }
                    }
                    if self.peer_conns() >= limits.max_peers {
                        match self.evict_one(now) {
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
                    debug!("peer#{tok} {addr} connected to us");
                    entry.insert(Conn::Incoming {
                        sock,
                        addr,
                        buf: Vec::with_capacity(wire::HANDSHAKE_LEN),
                        since: now,
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

    /// A connection to close for a newcomer when every slot is taken: one
    /// still waiting for its handshake past `evict_after`, or a torrent's
    /// idle and useless peer (see [`Torrent::evict_one`]).
    fn evict_one(&mut self, now: Instant) -> Option<usize> {
        let after = self.opts.limits.evict_after;
        let stale_incoming = self
            .conns
            .iter()
            .filter_map(|(tok, c)| match c {
                Conn::Incoming { since, .. } if now.duration_since(*since) >= after => {
                    Some((*since, tok))
                }
                _ => None,
            })
            .filter(|(_, tok)| !self.close.iter().any(|(t, _)| t == tok))
            .min();
        if let Some((_, tok)) = stale_incoming {
            return Some(tok);
        }
        self.torrents
            .iter_mut()
            .find_map(|(_, s)| s.t.evict_one(now))
    }

    /// Read an incoming connection's handshake far enough to know its
    /// torrent, then hand it over to that torrent (or close it).
    fn incoming_readable(&mut self, token: usize, now: Instant) {
        let Some(Conn::Incoming { sock, buf, .. }) = self.conns.get_mut(token) else {
            return;
        };
        // Read no further than the routing prefix: the rest is the peer's
        // (its handshake and messages), read into its own buffer.
        let mut chunk = [0u8; ROUTE_LEN];
        let eof = loop {
            let room = ROUTE_LEN.saturating_sub(buf.len());
            if room == 0 {
                break false;
            }
            match sock.read(chunk.get_mut(..room).unwrap_or_default()) {
                Ok(0) => break true,
                Ok(n) => buf.extend_from_slice(chunk.get(..n).unwrap_or_default()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.close.push((token, PeerError::Io("read", e.kind())));
                    return;
                }
            }
        };
        if eof {
            self.close.push((token, PeerError::Eof));
            return;
        }
        if let Err(e) = wire::Handshake::check_prefix(buf) {
            self.close.push((token, PeerError::Decode(e)));
            return;
        }
        let info_hash = wire::Handshake::info_hash_of(buf).unwrap_or([0; 20]);
        let target = self.by_hash.get(&info_hash).copied().filter(|&id| {
            self.torrents
                .get(id)
                .is_some_and(|s| !s.paused && !s.t.is_checking())
        });
        let Some(tid) = target else {
            debug!(
                "peer#{token}: handshake for a torrent we do not serve ({})",
                hex_short(&info_hash)
            );
            self.close.push((token, PeerError::WrongInfoHash));
            return;
        };
        let Some(Conn::Incoming {
            sock, addr, buf, ..
        }) = self.conns.try_remove(token)
        else {
            return;
        };
        let Some(s) = self.torrents.get_mut(tid) else {
            return;
        };
        // The slab slot just freed is taken again (slab reuses the last
        // freed key first); should it differ, the socket is re-registered.
        let entry = self.conns.vacant_entry();
        let tok = entry.key();
        let mut sock = sock;
        if tok != token
            && self
                .poll
                .registry()
                .reregister(&mut sock, Token(tok), Interest::READABLE)
                .is_err()
        {
            return;
        }
        let key = s.t.add_peer(tok, addr, false, now);
        if let Some(p) = s.t.peers.get_mut(key) {
            let _ = p.recv.read_from(&mut &buf[..]);
        }
        entry.insert(Conn::Peer {
            sock,
            tid,
            key,
            connecting: false,
            writable: false,
        });
        self.peer_readable(tok, now);
    }

    fn peer_readable(&mut self, token: usize, now: Instant) {
        let Some(Conn::Peer {
            sock,
            tid,
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
        let (tid, key) = (*tid, *key);
        let Some(s) = self.torrents.get_mut(tid) else {
            return;
        };
        let t = &mut s.t;
        // No back-pressure is needed for the cache: the picker requests a
        // block only when a buffer is free for it, so whatever a peer sends
        // is either stored or (unrequested) dropped. Download limits are
        // kept here: a peer is read only while the session's and its
        // torrent's buckets hold tokens, and read again when they refill.
        let allowance = self.down.available().min(t.down_bucket.available());
        if allowance == 0 {
            self.throttled.push(token);
            return;
        }
        let budget = READ_BUDGET.min(allowance);
        let mut total = 0;
        let result = loop {
            let Some(peer) = t.peers.get_mut(key) else {
                return;
            };
            match peer.recv.read_from(sock) {
                Ok(0) => {
                    // Handle what is buffered, then close, for the reason
                    // the last bytes gave if they gave one.
                    let why = t.on_readable(key, now).err().unwrap_or(PeerError::Eof);
                    break Some(why);
                }
                Ok(n) => {
                    total += n;
                    if peer.recv.is_full() || total >= budget {
                        if let Err(e) = t.on_readable(key, now) {
                            break Some(e);
                        }
                        if total >= budget {
                            // More may wait (edge-triggered: remember it).
                            if budget < READ_BUDGET {
                                self.throttled.push(token);
                            } else {
                                self.carry.push(token);
                            }
                            break None;
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    break t.on_readable(key, now).err();
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => break Some(PeerError::Io("read", e.kind())),
            }
        };
        t.down_bucket.take(total);
        self.down.take(total);
        if let Some(e) = result {
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
            tid,
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
        let Some(s) = self.torrents.get_mut(*tid) else {
            return;
        };
        let t = &mut s.t;
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

    /// Open outgoing connections to candidates, within the limits (the
    /// session's peer cap and half-open cap, shared by every torrent;
    /// torrents take turns).
    fn connect_more(&mut self, now: Instant) {
        let limits = self.opts.limits.clone();
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
        let mut open = self.peer_conns();
        let ids: Vec<usize> = self.order.clone();
        let mut progress = true;
        while progress && open < limits.max_peers && half_open < limits.max_half_open {
            progress = false;
            for &id in &ids {
                if open >= limits.max_peers || half_open >= limits.max_half_open {
                    break;
                }
                let Some(s) = self.torrents.get_mut(id) else {
                    continue;
                };
                if s.paused
                    || s.t.is_checking()
                    || (s.t.is_done() && s.opts.exit_when_done)
                    || s.finished
                {
                    continue;
                }
                if s.t.peers.len() >= s.t.cfg.max_peers {
                    continue;
                }
                let Some(addr) = s.candidates.pop() else {
                    continue;
                };
                progress = true;
                if Some(addr) == self.listen_addr
                    || self.listen_addr.is_some_and(|l| {
                        l.port() == addr.port()
                            && (l.ip().is_unspecified() && addr.ip().is_loopback())
                    })
                    || self.own_addrs.contains(&addr)
                    || s.t.is_connected_to(&addr)
                    || s.t.is_banned(&addr)
                {
                    continue;
                }
                let mut sock = match connect_from(self.opts.bind_ip, addr) {
                    Ok(sock) => sock,
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
                let key = s.t.add_peer(tok, addr, true, now);
                debug!("peer#{tok} {addr} connecting");
                entry.insert(Conn::Peer {
                    sock,
                    tid: id,
                    key,
                    connecting: true,
                    writable: true,
                });
                half_open += 1;
                open += 1;
            }
        }
    }

    /// Check data on disk for torrents that need it: one torrent at a time,
    /// in slices, for about [`CHECK_SLICE`] per turn, so the others keep
    /// running.
    fn check_some(&mut self, now: Instant) {
        let checking: Vec<usize> = self
            .order
            .iter()
            .copied()
            .filter(|&id| self.torrents.get(id).is_some_and(|s| s.t.is_checking()))
            .collect();
        let Some(&id) = checking.get(self.turns as usize % checking.len().max(1)) else {
            return;
        };
        let Some(s) = self.torrents.get_mut(id) else {
            return;
        };
        let start = Instant::now();
        while start.elapsed() < CHECK_SLICE {
            if s.t.check_some(4 << 20, now) {
                s.was_done = s.t.is_done();
                if s.was_done {
                    s.seeding_since = Some(now);
                }
                break;
            }
        }
    }

    fn after_batch(&mut self, now: Instant) {
        self.down.refill(now);
        self.check_some(now);
        for (_, s) in self.torrents.iter_mut() {
            // Flush verified pieces (bounded per turn), unless a recent
            // failure (disk full) says to wait.
            if s.t.should_flush(now)
                || (s.t.is_complete() && s.t.has_pending_writes())
                || s.t.cache_full()
            {
                s.flush(now);
            }
            self.close.append(&mut s.t.to_close);
            s.t.refill_upload(now);
            s.t.choke_round(now);
        }
        // Write everything that has output queued.
        let mut tokens = Vec::new();
        for (_, s) in self.torrents.iter_mut() {
            let mut dirty = std::mem::take(&mut s.t.dirty);
            dirty.sort_unstable();
            dirty.dedup();
            tokens.extend(
                dirty
                    .iter()
                    .filter_map(|&k| s.t.peers.get(k).map(|p| p.token)),
            );
        }
        for token in tokens {
            self.write_peer(token, now);
        }
        if now.duration_since(self.last_tick) >= Duration::from_secs(1) {
            let dt = now.duration_since(self.last_tick);
            self.last_tick = now;
            self.tick(now, dt);
        }
        // Peers held back by a download limit are read again once both
        // buckets have tokens.
        if !self.throttled.is_empty() && self.down.available() > 0 {
            let held = std::mem::take(&mut self.throttled);
            for tok in held {
                let ready = match self.conns.get(tok) {
                    Some(Conn::Peer { tid, .. }) => self
                        .torrents
                        .get(*tid)
                        .is_some_and(|s| s.t.down_bucket.available() > 0),
                    _ => continue,
                };
                if ready {
                    self.carry.push(tok);
                } else {
                    self.throttled.push(tok);
                }
            }
        }
        self.close_pending();
        if self.progress.due(now) {
            let statuses: Vec<Status> = self
                .order
                .iter()
                .filter_map(|&id| self.torrents.get(id))
                .map(|s| s.t.status())
                .collect();
            if let Some(st) = aggregate(&statuses) {
                self.progress.update(&st, now);
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
        let limits = self.opts.limits.clone();
        for (tok, c) in &self.conns {
            if let Conn::Incoming { since, .. } = c
                && now.duration_since(*since) > limits.handshake_timeout
            {
                self.close.push((tok, PeerError::Timeout("handshake")));
            }
        }
        let mut done_removing = Vec::new();
        for (id, s) in self.torrents.iter_mut() {
            // Write what verified in the last second, even below a batch.
            if s.t.has_pending_writes() {
                s.flush(now);
            }
            s.t.tick(now, dt, &mut self.close);
            for (tok, c) in &self.conns {
                if let Conn::Peer {
                    connecting: true,
                    tid,
                    key,
                    ..
                } = c
                    && *tid == id
                    && s.t.peers.get(*key).is_some_and(|p| {
                        now.duration_since(p.connected_at) > limits.connect_timeout
                    })
                {
                    self.close.push((tok, PeerError::Timeout("connect")));
                }
            }
            let mut i = 0;
            while i < s.retry.len() {
                if s.retry.get(i).is_some_and(|r| r.0 <= now) {
                    let (_, addr) = s.retry.swap_remove(i);
                    if !s.paused {
                        s.candidates.push(addr, now);
                    }
                } else {
                    i += 1;
                }
            }
            s.candidates.trim(now);
            // Failure counts outlive their retries only while few: a stream
            // of new tracker peers must not grow the table without bound.
            if s.failures.len() > 4 * crate::candidates::MAX_CANDIDATES {
                let waiting: HashSet<SocketAddr> = s.retry.iter().map(|&(_, a)| a).collect();
                s.failures.retain(|a, _| waiting.contains(a));
            }
            // Running low on peers with nobody left to try: ask the tracker
            // early (the announcer still respects `min interval`).
            if let Some(a) = &mut s.announcer
                && !s.paused
                && s.candidates.is_empty()
                && s.t.peers.len() < 5
                && !s.t.is_complete()
            {
                a.want_peers_now(now);
            }
            if let Some(since) = s.removing {
                let announced = s.announcer.as_ref().is_none_or(|a| a.is_finished());
                if announced || now.duration_since(since) > Duration::from_secs(5) {
                    done_removing.push(id);
                }
            }
        }
        for id in done_removing {
            if let Some(s) = self.torrents.try_remove(id) {
                info!("torrent {}: removed", hex_short(&s.t.info_hash));
                if let Err(e) = s.t.sync() {
                    warn!("sync failed: {e}");
                }
                self.by_hash.remove(&s.t.info_hash);
                self.order.retain(|&x| x != id);
                self.removed.push(outcome_of(&s));
            }
        }
        self.share_upload();
        if let Some(tr) = &mut self.tracker {
            tr.expire(now);
        }
        self.tracker_conns_tick(now);
        self.connect_more(now);
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
            Conn::Incoming { mut sock, addr, .. } => {
                debug!("peer#{token} {addr} dropped: {why}");
                let _ = self.poll.registry().deregister(&mut sock);
            }
            Conn::Peer {
                mut sock, tid, key, ..
            } => {
                if matches!(why, PeerError::OwnPeerId) {
                    // Our handshake is queued (see `Torrent::on_handshake`):
                    // the dialing side learns it reached itself and stops.
                    if let Some(p) = self
                        .torrents
                        .get_mut(tid)
                        .and_then(|s| s.t.peers.get_mut(key))
                    {
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
                let gone = self
                    .torrents
                    .get_mut(tid)
                    .and_then(|s| s.t.remove_peer(key, why));
                if let Some((addr, true, active)) = gone {
                    self.schedule_retry(tid, addr, active, why);
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
    fn schedule_retry(&mut self, tid: usize, addr: SocketAddr, was_active: bool, why: &PeerError) {
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
        let Some(s) = self.torrents.get_mut(tid) else {
            return;
        };
        let n = s.failures.entry(addr).or_insert(0);
        if was_active {
            *n = 0;
        }
        *n += 1;
        let direct = s.opts.peers.contains(&addr);
        if !direct && *n > 5 {
            return;
        }
        let delay = Duration::from_secs(2u64.saturating_pow((*n).min(8)).min(300));
        s.retry.push((Instant::now() + delay, addr));
    }

    /// Flush verified pieces, tell the trackers we stop, close everything.
    fn shutdown(&mut self) {
        self.progress.finish();
        let now = Instant::now();
        for (_, s) in self.torrents.iter_mut() {
            while s.t.has_pending_writes() {
                if let Err(e) = s.t.flush(usize::MAX, now) {
                    warn!("could not write every verified piece before exit: {e}");
                    break;
                }
            }
            if let Err(e) = s.t.sync() {
                warn!("sync failed: {e}");
            }
        }
        let peers: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| matches!(c, Conn::Peer { .. } | Conn::Incoming { .. }))
            .map(|(k, _)| k)
            .collect();
        for tok in peers {
            self.close_conn(tok, &PeerError::Shutdown);
        }
        self.announce_stopped();
    }
}

/// The end state of a torrent.
fn outcome_of(s: &Slot) -> TorrentOutcome {
    TorrentOutcome {
        info_hash: s.t.info_hash,
        status: s.t.status(),
        banned: s.t.banned_count(),
        complete: s.t.is_done(),
    }
}

/// Several torrents' status as one (sums; the status line shows this).
pub fn aggregate(statuses: &[Status]) -> Option<Status> {
    let (first, rest) = statuses.split_first()?;
    let mut st = *first;
    for s in rest {
        st.have += s.have;
        st.num_pieces += s.num_pieces;
        st.left += s.left;
        st.total_len += s.total_len;
        st.down_rate += s.down_rate;
        st.up_rate += s.up_rate;
        st.peers += s.peers;
        st.totals = Totals {
            downloaded: st.totals.downloaded + s.totals.downloaded,
            uploaded: st.totals.uploaded + s.totals.uploaded,
            wasted: st.totals.wasted + s.totals.wasted,
            hash_failures: st.totals.hash_failures + s.totals.hash_failures,
            received: st.totals.received + s.totals.received,
        };
        st.checking = match (st.checking, s.checking) {
            (Some((a, b)), Some((c, d))) => Some((a + c, b + d)),
            (x, y) => x.or(y),
        };
    }
    Some(st)
}

/// The first bytes of an info-hash, in hex, for log lines.
fn hex_short(h: &[u8; 20]) -> String {
    h.iter().take(6).map(|b| format!("{b:02x}")).collect()
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
