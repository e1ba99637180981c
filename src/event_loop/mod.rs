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

mod dht;
mod encryption;
mod net;
mod peer_conns;
mod resolver;
mod scrape;
mod slot;
mod tls;
mod tracker_conns;
mod udp;
mod warnings;

pub use dht::{DhtOptions, ROUTERS_ENV, default_routers, state_file_in};
pub use net::{bind_udp, connect_from, install_stop_handler, random_bytes, stop_requested};
pub use resolver::{Lookup, LookupFn, Resolver};
pub use scrape::scrape_trackers;
pub use tls::{client_config as tls_client_config, tls_error_text};

use crate::config::Config;
use crate::ids::{ConnToken, PeerKey};
use crate::peer::PeerError;
use crate::progress::Progress;
use crate::rate::TokenBucket;
use crate::storage::Disk;
use crate::torrent::{Status, Torrent, Totals};
use crate::tracker::{ServerConfig, Tracker, UdpServer, UdpServerConfig};
use crate::wire::SendBuf;
use log::{info, warn};
use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;
use slot::Slot;
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

/// How often the torrents' end conditions are looked at.
const FINISH_CHECK: Duration = Duration::from_millis(50);

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
    /// How the resolver thread turns host names into addresses (None:
    /// the system resolver).
    pub lookup: Option<LookupFn>,
    /// TLS for `https://` trackers (None: the system's CAs, set up on
    /// first use; see [`tls_client_config`] for `--ca-file`).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Run a DHT node (BEP 5) in the loop (None: no DHT).
    pub dht: Option<DhtOptions>,
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
            lookup: None,
            tls: None,
            dht: None,
        }
    }
}

/// How one torrent of a session runs.
#[derive(Clone, Debug, Default)]
pub struct TorrentOptions {
    /// The torrent's name, for log lines (empty: its info-hash).
    pub name: String,
    /// Peers to connect to directly.
    pub peers: Vec<SocketAddr>,
    /// Peers given by host name (a magnet link's `x.pe`), as `(host,
    /// port)`: looked up on the resolver thread when the torrent is
    /// added, then dialed like `peers` (at most [`MAX_PEER_NAMES`] are
    /// looked up, so that a link cannot fill the resolver's queue).
    pub peer_names: Vec<(String, u16)>,
    /// Trackers, by tier (BEP 12).
    pub tracker_tiers: Vec<Vec<String>>,
    /// Where to leave resume data on a clean stop
    /// ([`crate::storage::resume`]): the verified pieces, once written and
    /// synced, and how the files stood.
    pub resume_file: Option<std::path::PathBuf>,
    /// Finished once every piece is verified and written.
    pub exit_when_done: bool,
    /// While seeding, finished at this upload/size ratio.
    pub seed_ratio: Option<f64>,
    /// While seeding, finished after this long.
    pub seed_time: Option<Duration>,
    /// A seed: when the check of its data finds none of it, the torrent
    /// is dropped with this message (in [`TorrentOutcome::error`]).
    pub nothing_to_seed: Option<String>,
    /// A torrent started from a magnet link: what to do once its metadata
    /// is fetched.
    pub magnet: Option<MagnetStart>,
}

/// Most host names of [`TorrentOptions::peer_names`] looked up per torrent.
pub const MAX_PEER_NAMES: usize = 8;

/// Most addresses taken from one peer name's answer.
const ADDRS_PER_PEER_NAME: usize = 4;

/// A peer host name being looked up for a torrent.
#[derive(Debug)]
struct PeerName {
    tid: TorrentId,
    /// The torrent's info-hash: its id may be reused once it is removed.
    hash: [u8; 20],
    host: String,
}

/// Opens a magnet link's data once its metadata is known: its files, and
/// the pieces known to be there already (`None`: check them).
pub type OpenData = Arc<
    dyn Fn(&crate::metainfo::Metainfo) -> Result<(Disk, Option<crate::bitfield::Bitfield>), String>
        + Send
        + Sync,
>;

/// What a torrent started from a magnet link does once its metadata is
/// fetched and verified.
#[derive(Clone)]
pub struct MagnetStart {
    /// The link's trackers, written into the `.torrent` made of the
    /// metadata ([`TorrentOutcome::torrent_file`]).
    pub tiers: Vec<Vec<String>>,
    /// Open the data and download; `None`: stop there (`info magnet:…`).
    pub open: Option<OpenData>,
}

impl std::fmt::Debug for MagnetStart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MagnetStart")
            .field("tiers", &self.tiers)
            .field("download", &self.open.is_some())
            .finish()
    }
}

/// How one torrent ended.
#[derive(Clone, Debug)]
pub struct TorrentOutcome {
    pub info_hash: [u8; 20],
    pub status: Status,
    pub banned: usize,
    /// All pieces verified and written at the end.
    pub complete: bool,
    /// Why the torrent was dropped (nothing to seed).
    pub error: Option<String>,
    /// For a torrent started from a magnet link: its `.torrent` file, made
    /// of the fetched metadata and the link's trackers, once known.
    pub torrent_file: Option<Vec<u8>>,
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
    /// Most bytes all torrents' piece caches held at once (the shared
    /// budget, `--cache`, bounds it).
    pub peak_cache: usize,
    /// Loop turns (poll wake-ups) in all.
    pub turns: u64,
}

enum Conn {
    PeerListener(TcpListener),
    /// Accepted; its handshake will say which torrent it is for (after
    /// an MSE exchange, when its first bytes are not a plaintext one).
    Incoming {
        sock: TcpStream,
        addr: SocketAddr,
        /// The handshake so far, plaintext (decrypted after MSE).
        buf: Vec<u8>,
        since: Instant,
        crypt: encryption::Crypt,
        /// MSE bytes to send (at most a key, padding and step 4).
        out: Vec<u8>,
        writable: bool,
    },
    Peer {
        sock: TcpStream,
        tid: TorrentId,
        key: PeerKey,
        connecting: bool,
        writable: bool,
        /// The MSE exchange of a connection we dial, until it is done.
        mse: Option<Box<crate::mse::Handshake>>,
        /// MSE bytes written before anything of the send buffer.
        pre: Vec<u8>,
    },
    TrackerListener(TcpListener),
    TrackerServer(ServerConn),
    Announce(AnnounceConn),
    /// The session's one socket for UDP tracker announces (all torrents,
    /// all trackers).
    Udp(UdpSocket),
    /// The built-in tracker's BEP 15 socket.
    TrackerUdp(UdpSocket),
    /// The DHT node's socket (BEP 5).
    Dht(UdpSocket),
}

/// What another thread asks of a running session.
enum Command {
    Add(Box<(Torrent, Disk)>, TorrentOptions),
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
    pub fn add(&self, torrent: Torrent, disk: Disk, opts: TorrentOptions) {
        self.send(Command::Add(Box::new((torrent, disk)), opts));
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

/// One event loop: any number of torrents, plus optionally the built-in
/// tracker.
pub struct Session {
    poll: Poll,
    conns: Slab<Conn>,
    torrents: slot::Torrents,
    by_hash: HashMap<[u8; 20], TorrentId>,
    /// `HASH('req2', info_hash)` of each torrent, to its info-hash: how an
    /// incoming MSE exchange names its torrent.
    by_req2: HashMap<[u8; 20], [u8; 20]>,
    /// How dialed peers were last reached (MSE with `--encryption prefer`
    /// falls back to plaintext for those that need it); capped.
    dial_methods: encryption::DialMethods,
    /// Torrents in the order they were added (for outcomes and status).
    order: Vec<TorrentId>,
    tracker: Option<Tracker>,
    opts: SessionOptions,
    listen_addr: Option<SocketAddr>,
    tracker_addr: Option<SocketAddr>,
    /// Addresses that turned out to be ourselves (through a NAT, a proxy
    /// or another local address): never dialed again.
    own_addrs: HashSet<SocketAddr>,
    /// Tokens with unread data left (read budget hit).
    carry: Vec<ConnToken>,
    /// Incoming connections for a torrent still checking its data, routed
    /// when a check ends (at most the connection cap; the handshake
    /// time-out closes those that wait too long).
    parked: Vec<ConnToken>,
    /// Peers not read because a download limit ran out of tokens: read
    /// again when the buckets refill.
    throttled: Vec<ConnToken>,
    /// The session's download limit (all torrents together).
    down: TokenBucket,
    /// The session's upload limit, shared out to the torrents' buckets.
    up_limit: Option<u64>,
    close: Vec<(ConnToken, PeerError)>,
    handle: SessionHandle,
    started: Instant,
    progress: Progress,
    /// Last time a connected peer had a piece we lack (or the start).
    last_useful: Instant,
    accept_paused_until: Option<Instant>,
    /// A descriptor held in reserve, released to refuse connections
    /// cleanly when the process runs out of descriptors.
    spare_fd: Option<std::fs::File>,
    last_tick: Instant,
    /// Loop turns so far (for tests and `docs/performance.md`).
    turns: u64,
    /// Outcomes of torrents removed while running.
    removed: Vec<TorrentOutcome>,
    /// Most bytes the piece caches held together so far.
    peak_cache: usize,
    /// Some torrent may be checking its data on disk.
    checking: bool,
    /// When the end conditions were last looked at.
    last_finish_check: Option<Instant>,
    /// Something that may end a torrent happened (a download completed,
    /// an awaited announce answered, a magnet torrent stopped): the end
    /// conditions are looked at once, not at the next 50 ms check.
    finish_due: bool,
    /// UDP trackers: the client (its socket bound on first use) and the
    /// built-in tracker's BEP 15 side.
    udp: udp::UdpState,
    /// Host names to addresses, off the loop (its thread wakes the poll
    /// through the session's waker).
    resolver: Resolver,
    /// Announces waiting for their tracker's address, by ticket.
    resolving: HashMap<crate::dns::Ticket, tracker_conns::Resolving>,
    /// Peer host names being looked up (at most [`MAX_PEER_NAMES`] per
    /// torrent; answered or refused within the resolver's time-out).
    peer_names: HashMap<crate::dns::Ticket, PeerName>,
    /// Tracker messages shown to the user already.
    tracker_notes: warnings::TrackerNotes,
    /// The DHT node, its socket and the torrents it announces.
    dht: Option<dht::DhtState>,
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
    /// The built-in tracker's UDP socket (BEP 15); when `None` while
    /// `tracker` is given, one is bound on `tracker`'s address and port.
    pub tracker_udp: Option<UdpSocket>,
}

/// Bind a listening socket the way the session does (non-blocking,
/// `SO_REUSEADDR`).
pub fn bind_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr)
}

impl Session {
    /// Bind the listeners. Torrents come with [`Session::add_torrent`] (or
    /// through the handle while running). Nothing is sent until `run`.
    pub fn new(opts: SessionOptions) -> io::Result<Session> {
        let peer = opts.listen.map(bind_listener).transpose()?;
        let tracker = match &opts.tracker_server {
            Some((addr, _)) => Some(bind_listener(*addr)?),
            None => None,
        };
        Session::with_listeners(
            opts,
            Listeners {
                peer,
                tracker,
                tracker_udp: None,
            },
        )
    }

    /// Set up the session around listeners bound already.
    pub fn with_listeners(opts: SessionOptions, listeners: Listeners) -> io::Result<Session> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
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
        let now = Instant::now();
        let mut udp = udp::UdpState::new();
        if let Some(mut l) = listeners.tracker {
            let addr = l.local_addr()?;
            tracker_addr = Some(addr);
            let e = conns.vacant_entry();
            poll.registry()
                .register(&mut l, Token(e.key()), Interest::READABLE)?;
            e.insert(Conn::TrackerListener(l));
            let mut u = match listeners.tracker_udp {
                Some(u) => u,
                None => bind_udp(addr).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("cannot run the UDP tracker on {addr}: {e}"),
                    )
                })?,
            };
            let udp_addr = u.local_addr()?;
            let e = conns.vacant_entry();
            poll.registry()
                .register(&mut u, Token(e.key()), Interest::READABLE)?;
            e.insert(Conn::TrackerUdp(u));
            let cfg = opts
                .tracker_server
                .as_ref()
                .map(|(_, cfg)| cfg.clone())
                .unwrap_or_default();
            tracker = Some(Tracker::new(cfg));
            let mut secret = [0u8; 32];
            random_bytes(&mut secret);
            udp.server = Some(UdpServer::new(secret, UdpServerConfig::default(), now));
            info!("tracker listening on http://{addr}/announce and udp://{udp_addr}/announce");
        }
        let dht = match &opts.dht {
            Some(d) => Some(dht::DhtState::start(
                &poll,
                &mut conns,
                d,
                opts.bind_ip,
                listen_addr,
                now,
            )?),
            None => None,
        };
        Ok(Session {
            dht,
            poll,
            conns,
            torrents: slot::Torrents::default(),
            by_hash: HashMap::new(),
            by_req2: HashMap::new(),
            dial_methods: encryption::DialMethods::default(),
            order: Vec::new(),
            tracker,
            listen_addr,
            tracker_addr,
            own_addrs: HashSet::new(),
            carry: Vec::new(),
            parked: Vec::new(),
            throttled: Vec::new(),
            down: TokenBucket::new(opts.limits.download_limit, now),
            up_limit: opts.limits.upload_limit.filter(|&r| r > 0),
            close: Vec::new(),
            resolver: Resolver::new(
                opts.lookup.clone().unwrap_or_else(LookupFn::system),
                waker.clone(),
            ),
            resolving: HashMap::new(),
            peer_names: HashMap::new(),
            tracker_notes: warnings::TrackerNotes::default(),
            handle: SessionHandle {
                stop: Arc::new(AtomicBool::new(false)),
                commands: Arc::new(Mutex::new(Vec::new())),
                waker,
            },
            started: now,
            progress: Progress::new(opts.progress),
            last_useful: now,
            accept_paused_until: None,
            spare_fd: std::fs::File::open("/dev/null").ok(),
            last_tick: now,
            turns: 0,
            removed: Vec::new(),
            peak_cache: 0,
            checking: false,
            last_finish_check: None,
            finish_due: false,
            udp,
            opts,
        })
    }

    /// Add a torrent and its files (the session carries out its storage
    /// jobs on them). Refused (given back) if a torrent with its info-hash
    /// is there.
    pub fn add_torrent(
        &mut self,
        t: Torrent,
        disk: Disk,
        opts: TorrentOptions,
    ) -> Result<TorrentId, Box<Torrent>> {
        if self.by_hash.contains_key(&t.info_hash) {
            return Err(Box::new(t));
        }
        let hash = t.info_hash;
        let mut t = t;
        let mut opts = opts;
        t.set_listen_port(self.listen_addr.map(|a| a.port()));
        self.checking |= t.is_checking();
        let names = std::mem::take(&mut opts.peer_names);
        let now = Instant::now();
        let id = self.torrents.insert(Slot::new(t, disk, opts, now));
        for (host, port) in names.into_iter().take(MAX_PEER_NAMES) {
            let name = PeerName {
                tid: id,
                hash,
                host,
            };
            match self.resolver.resolve(&name.host, port, now) {
                Lookup::Ready(answer) => self.peer_name_resolved(name, answer, now),
                Lookup::Pending(ticket) => {
                    self.peer_names.insert(ticket, name);
                }
            }
        }
        self.by_hash.insert(hash, id);
        self.by_req2.insert(crate::mse::req2_hash(&hash), hash);
        self.order.push(id);
        self.share_upload();
        self.share_cache();
        Ok(id)
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

    /// Show progress with `p` (set up by the caller, which may have drawn
    /// the start-up check with it already) instead of the default.
    pub fn set_progress(&mut self, p: Progress) {
        self.progress = p;
    }

    /// A torrent by id.
    pub fn torrent_by_id(&self, id: TorrentId) -> Option<&Torrent> {
        self.torrents.get(id).map(|s| &s.t)
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
                    // Commands from the handle, answers from the resolver.
                    self.run_commands(now);
                    self.resolved(now);
                    continue;
                }
                self.on_event(
                    ConnToken(ev.token().0),
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
            peak_cache: self.peak_cache,
            turns: self.turns,
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
        if self.finish_due {
            return now;
        }
        let tick = self.last_tick + Duration::from_secs(1);
        // Connections other than routed peers (handshakes being routed,
        // connects, tracker exchanges) have one-second time-outs; routed
        // peers say when they need the clock (an idle one only at its
        // keep-alive or idle deadline); UDP sockets wait for datagrams.
        let busy_conns = self.conns.iter().any(|(_, c)| match c {
            Conn::PeerListener(_)
            | Conn::TrackerListener(_)
            | Conn::Udp(_)
            | Conn::TrackerUdp(_)
            | Conn::Dht(_) => false,
            Conn::Peer { connecting, .. } => *connecting,
            _ => true,
        });
        if busy_conns || self.accept_paused_until.is_some() || !self.resolving.is_empty() {
            at = at.min(tick);
        }
        for (_, s) in self.torrents.iter() {
            // Checking, or output or reads left from this turn.
            if s.t.is_checking() || !s.t.dirty.is_empty() || s.t.has_read_jobs() {
                return now;
            }
            if s.paused && s.removing.is_none() {
                continue;
            }
            if s.t.has_pending_writes() || !s.candidates.is_empty() {
                at = at.min(tick);
            }
            if let Some(t) = s.t.poll_timeout(now) {
                at = at.min(t.max(tick));
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
                // Soon after the last look at the end conditions.
                let next = self.last_finish_check.map_or(now, |t| t + FINISH_CHECK);
                at = at.min(next);
            }
        }
        if let Some(due) = self.progress.next_due() {
            at = at.min(due);
        }
        // UDP tracker retransmissions and time-outs, to the moment.
        if let Some(t) = self.udp.client.poll_timeout() {
            at = at.min(t);
        }
        if let Some(t) = self.dht.as_ref().and_then(dht::DhtState::poll_timeout) {
            at = at.min(t);
        }
        if !self.throttled.is_empty() {
            let mut ready = self.down.ready_at(now).unwrap_or(now);
            for (_, s) in self.torrents.iter() {
                if let Some(t) = s.t.down_bucket.ready_at(now) {
                    ready = ready.max(t.min(now + Duration::from_millis(100)));
                }
            }
            at = at.min(ready.max(now + Duration::from_millis(5)));
        }
        at
    }

    fn all_finished(&mut self, now: Instant) -> bool {
        // Looked at every 50 ms at most (not on every busy turn: it visits
        // every torrent and their announcers), or at once when something
        // that may end a torrent happened (`finish_due`).
        if !self.finish_due
            && self
                .last_finish_check
                .is_some_and(|t| now.duration_since(t) < FINISH_CHECK)
        {
            return false;
        }
        self.last_finish_check = Some(now);
        self.finish_due = false;
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
                Command::Add(added, opts) => {
                    let (t, disk) = *added;
                    let name = hex_short(&t.info_hash);
                    match self.add_torrent(t, disk, opts) {
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

    /// A magnet link's metadata was fetched and verified: the torrent takes
    /// its shape and opens its files (and checks what is there), or stops
    /// there (`info`), or is dropped with the reason.
    fn metadata_arrived(&mut self, id: TorrentId, info: Arc<[u8]>, now: Instant) {
        let Some(s) = self.torrents.get_mut(id) else {
            return;
        };
        match s.metadata_arrived(&info, now) {
            slot::Arrived::Downloading { checking } => {
                self.checking |= checking;
                self.share_cache();
            }
            slot::Arrived::Stop => {
                self.pause(id, now);
                // The end conditions are looked at next turn, not after
                // the longest sleep.
                self.finish_due = true;
            }
        }
    }

    /// Close every connection of torrent `id`, write what is verified, and
    /// stop dialing or announcing it until resumed.
    fn pause(&mut self, id: TorrentId, now: Instant) {
        let Some(s) = self.torrents.get_mut(id) else {
            return;
        };
        if !s.paused {
            info!("torrent {}: paused", hex_short(&s.t.info_hash));
        }
        s.paused = true;
        if s.write_all(now).is_err() {
            warn!(
                "torrent {}: verified pieces stay unwritten",
                hex_short(&s.t.info_hash)
            );
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
                let _ = self.close_silently(ConnToken(tok));
                if let Some(an) = self.torrents.get_mut(id).and_then(|s| s.announcer.as_mut()) {
                    an.abandon(&url);
                }
            } else {
                self.close_conn(ConnToken(tok), &PeerError::Shutdown);
            }
        }
        let mut urls = self.udp_forget(id);
        urls.extend(self.resolving_forget(id));
        for url in urls {
            if let Some(an) = self.torrents.get_mut(id).and_then(|s| s.announcer.as_mut()) {
                an.abandon(&url);
            }
        }
    }

    /// One piece-buffer budget (`--cache`) for the whole session: each
    /// torrent gets an equal share (recomputed when torrents come and go),
    /// and an idle one gives its spare buffers back.
    fn share_cache(&mut self) {
        let n = self.torrents.len().max(1);
        let share = self.opts.limits.cache_bytes / n;
        for (_, s) in self.torrents.iter_mut() {
            s.t.set_cache_budget(share);
        }
    }

    /// Give each torrent's upload bucket the lower of its own limit and an
    /// equal share of the session's among the torrents with peers.
    fn share_upload(&mut self) {
        let active = self
            .torrents
            .iter()
            .filter(|(_, s)| s.t.peer_count() > 0)
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

    fn on_event(&mut self, token: ConnToken, readable: bool, writable: bool, now: Instant) {
        let Some(conn) = self.conns.get_mut(token.0) else {
            return;
        };
        match conn {
            Conn::PeerListener(_) => self.accept_peers(token, now),
            Conn::TrackerListener(_) => self.accept_tracker_clients(token, now),
            Conn::Incoming { .. } => {
                if readable || writable {
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
            Conn::Udp(_) => self.udp_readable(token, now),
            Conn::TrackerUdp(_) => self.tracker_udp_readable(token, now),
            Conn::Dht(_) => self.dht_readable(now),
        }
    }

    /// Check data on disk for torrents that need it: one torrent at a time,
    /// in slices, for about [`CHECK_SLICE`] per turn, so the others keep
    /// running.
    fn check_some(&mut self, now: Instant) {
        if !self.checking {
            return;
        }
        let checking: Vec<TorrentId> = self
            .order
            .iter()
            .copied()
            .filter(|&id| self.torrents.get(id).is_some_and(|s| s.t.is_checking()))
            .collect();
        let Some(&id) = checking.get(self.turns as usize % checking.len().max(1)) else {
            self.checking = false;
            return;
        };
        let others = self.torrents.len() > 1;
        let Some(s) = self.torrents.get_mut(id) else {
            return;
        };
        if s.check_slice(Instant::now() + CHECK_SLICE, now) {
            s.checked(now);
            // Alone, the run ends and the client reports it; beside
            // others, it is said now.
            if let Some(msg) = &s.error
                && (others || self.opts.keep_running)
            {
                warn!("{msg} (dropped; the others go on)");
            }
            // It announces and dials its peers now, not at the next tick,
            // and those that called while it checked are routed.
            self.maybe_announce(now);
            self.connect_more(now);
            self.carry.append(&mut self.parked);
        }
    }

    fn after_batch(&mut self, now: Instant) {
        self.down.refill(now);
        self.udp_timers(now);
        self.dht_turn(now);
        self.check_some(now);
        let mut cache = 0;
        let mut fetched = Vec::new();
        let mut finished_now = false;
        for (id, s) in self.torrents.iter_mut() {
            if let Some(m) = s.t.take_fetched_metadata() {
                fetched.push((id, m));
            }
            // Flush verified pieces (bounded per turn), unless a recent
            // failure (disk full) says to wait.
            if (s.t.should_flush(now)
                || (s.t.is_complete() && s.t.has_pending_writes())
                || s.t.cache_full())
                && s.flush(now)
            {
                finished_now = true;
            }
            s.t.refill_upload(now);
            s.t.choke_round(now);
            // Reads for seeding queued by this turn's requests.
            s.read_pending();
            self.close.append(&mut s.t.to_close);
            cache += s.t.cache_memory();
        }
        self.peak_cache = self.peak_cache.max(cache);
        if finished_now {
            // A download just ended: its `completed` announce (and, for a
            // run that exits, the end) need not wait for the next
            // periodic look at the end conditions.
            self.finish_due = true;
        }
        for (id, m) in fetched {
            self.metadata_arrived(id, m, now);
        }
        // Write everything that has output queued.
        let mut tokens = Vec::new();
        for (_, s) in self.torrents.iter_mut() {
            let mut dirty = std::mem::take(&mut s.t.dirty);
            dirty.sort_unstable();
            dirty.dedup();
            tokens.extend(dirty.iter().filter_map(|&k| s.t.peer(k).map(|p| p.token)));
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
                let ready = match self.conns.get(tok.0) {
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
        if self.progress.due(now)
            && let Some(st) = self.status(now)
        {
            self.progress.update(&st, now);
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
                self.accept_peers(ConnToken(l), now);
            }
        }
        let limits = self.opts.limits.clone();
        for (tok, c) in &mut self.conns {
            match c {
                Conn::Incoming { since, .. }
                    if now.duration_since(*since) > limits.handshake_timeout =>
                {
                    self.close
                        .push((ConnToken(tok), PeerError::Timeout("handshake")));
                }
                Conn::Incoming {
                    crypt: encryption::Crypt::Mse(hs),
                    ..
                }
                | Conn::Peer { mse: Some(hs), .. } => {
                    if let Err(e) = hs.handle_timeout(now) {
                        self.close.push((ConnToken(tok), PeerError::Mse(e)));
                    }
                }
                _ => {}
            }
        }
        let mut done_removing = Vec::new();
        for (id, s) in self.torrents.iter_mut() {
            // Write what verified in the last second, even below a batch.
            if s.t.has_pending_writes() && s.flush(now) {
                self.finish_due = true;
            }
            s.t.release_idle_buffers();
            s.t.tick(now, dt, &mut self.close);
            // Peers learnt through peer exchange (BEP 11) join the
            // candidates (capped, oldest evicted).
            let paused = s.paused;
            for addr in s.t.drain_pex_peers() {
                if !paused {
                    s.candidates.push(addr, now);
                }
            }
            for (tok, c) in &self.conns {
                if let Conn::Peer {
                    connecting: true,
                    tid,
                    key,
                    ..
                } = c
                    && *tid == id
                    && s.t.peer(*key).is_some_and(|p| {
                        now.duration_since(p.connected_at) > limits.connect_timeout
                    })
                {
                    self.close
                        .push((ConnToken(tok), PeerError::Timeout("connect")));
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
                && s.t.peer_count() < 5
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
        let mut rebalance = false;
        for id in done_removing {
            self.udp_forget(id);
            self.resolving_forget(id);
            if let Some(s) = self.torrents.try_remove(id) {
                info!("torrent {}: removed", hex_short(&s.t.info_hash));
                if let Err(e) = s.disk.sync() {
                    warn!("sync failed: {e}");
                }
                self.by_hash.remove(&s.t.info_hash);
                self.by_req2.remove(&crate::mse::req2_hash(&s.t.info_hash));
                self.order.retain(|&x| x != id);
                self.removed.push(outcome_of(&s));
                rebalance = true;
            }
        }
        if rebalance {
            self.share_cache();
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

    /// Flush verified pieces, tell the trackers we stop, close everything.
    fn shutdown(&mut self) {
        let status = self.status(Instant::now());
        self.progress.finish(status.as_ref(), Instant::now());
        let now = Instant::now();
        for (_, s) in self.torrents.iter_mut() {
            if let Err(e) = s.write_all(now) {
                warn!("could not write every verified piece before exit: {e}");
                continue;
            }
            if let Err(e) = s.disk.sync() {
                warn!("sync failed: {e}");
                continue;
            }
            // Only now is what it would claim on stable storage.
            s.save_resume();
        }
        let peers: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| matches!(c, Conn::Peer { .. } | Conn::Incoming { .. }))
            .map(|(k, _)| k)
            .collect();
        for tok in peers {
            self.close_conn(ConnToken(tok), &PeerError::Shutdown);
        }
        self.announce_stopped();
        self.udp_log_drops(Instant::now(), true);
        if let Some(d) = &self.dht {
            d.save();
        }
    }
}

/// The end state of a torrent.
fn outcome_of(s: &Slot) -> TorrentOutcome {
    TorrentOutcome {
        info_hash: s.t.info_hash,
        status: s.t.status(),
        banned: s.t.banned_count(),
        complete: s.t.is_done(),
        error: s.error.clone(),
        torrent_file: s.torrent_file.clone(),
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
        st.fetching = match (st.fetching, s.fetching) {
            (Some((a, b, c)), Some((d, e, f))) => Some((a + d, b + e, c + f)),
            (x, y) => x.or(y),
        };
    }
    Some(st)
}

/// The first bytes of an info-hash, in hex, for log lines.
fn hex_short(h: &[u8; 20]) -> String {
    crate::metainfo::hex(h.get(..6).unwrap_or(h))
}

/// Keep a connection's `WRITABLE` interest exactly while output waits
/// (`pending`); `writable` is what is registered now.
fn want_writable(
    poll: &Poll,
    sock: &mut TcpStream,
    token: ConnToken,
    pending: bool,
    writable: &mut bool,
) {
    if pending == *writable {
        return;
    }
    let interest = if pending {
        Interest::READABLE | Interest::WRITABLE
    } else {
        Interest::READABLE
    };
    if poll
        .registry()
        .reregister(sock, Token(token.0), interest)
        .is_ok()
    {
        *writable = pending;
    }
}

/// A connection's queued output, written until `WouldBlock`. Returns false
/// on a socket error.
fn write_out(sock: &mut TcpStream, out: &mut SendBuf) -> bool {
    out.write_to(sock).is_ok()
}

/// Why [`read_into`] stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ReadStop {
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
