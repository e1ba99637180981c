//! The DHT's socket in the loop: one UDP socket (by default on the peer
//! listener's port number), registered in the slab as `Conn::Dht`, read
//! with a per-turn bound ([`READS_PER_TURN`]) and written without waiting
//! (a datagram the kernel cannot take now is dropped; the node's time-outs
//! and retries cover it). Everything else is the sans-IO
//! [`crate::dht::Node`]: this file moves datagrams, feeds `now`, turns the
//! node's peers into the torrents' candidates, and keeps the torrents'
//! announces in step (public torrents only: a private one never reaches
//! the DHT, BEP 27).
//!
//! Bootstrap: the state file's nodes, `--dht-node` addresses (host names
//! resolved off the loop by the session's resolver), and peers' `port`
//! messages. The state file is written on exit.

use super::{Conn, Session, TorrentId, net};
use crate::dht::state::{self, SavedState};
use crate::dht::{DhtConfig, DhtEvent, Node, NodeId};
use crate::dns::Answer;
use crate::dns::Ticket;
use log::{debug, info, warn};
use mio::{Interest, Poll, Token};
use slab::Slab;
use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Most datagrams read from the DHT socket per turn.
const READS_PER_TURN: usize = 512;
/// Receive buffer: one byte over the longest message decoded.
const RECV_BUF: usize = crate::dht::krpc::MAX_MESSAGE_LEN + 1;
/// Torrents and announces are brought in step with the node this often.
const SYNC_EVERY: Duration = Duration::from_secs(1);
/// Saved nodes pinged at start (besides the first few used as bootstrap).
const SAVED_PINGS: usize = 64;
/// Saved nodes used as bootstrap addresses.
const SAVED_BOOTSTRAP: usize = 8;
/// The public routers used when no `--dht-node` is given.
pub const DEFAULT_ROUTERS: &[&str] = &[
    "router.bittorrent.com:6881",
    "dht.transmissionbt.com:6881",
    "router.utorrent.com:6881",
];
/// Set to `none` (or a comma-separated HOST:PORT list), this replaces
/// [`DEFAULT_ROUTERS`]: the test suite sets it (`.cargo/config.toml`) so
/// that no test ever resolves or contacts a public router.
pub const ROUTERS_ENV: &str = "PIECEMEAL_DHT_ROUTERS";

/// How the session's DHT runs.
#[derive(Clone, Debug, Default)]
pub struct DhtOptions {
    /// UDP port (None: the peer listener's port, or any when there is none).
    pub port: Option<u16>,
    /// Bootstrap nodes, `HOST:PORT` (the command line gives
    /// [`default_routers`] when no `--dht-node` is given).
    pub bootstrap: Vec<String>,
    /// Where the node's state is kept between runs (None: not kept).
    pub state_file: Option<PathBuf>,
    /// Print a line with the table size and traffic this often (the
    /// stand-alone `piecemeal dht`).
    pub stats_every: Option<Duration>,
    /// The stats lines start with `@dht ` (for `--machine`) instead of `dht: `.
    pub stats_machine: bool,
    pub config: DhtConfig,
}

/// The routers to bootstrap from when none is given: [`DEFAULT_ROUTERS`]
/// unless [`ROUTERS_ENV`] says otherwise.
pub fn default_routers() -> Vec<String> {
    match std::env::var(ROUTERS_ENV) {
        Ok(v) if v.trim() == "none" || v.trim().is_empty() => Vec::new(),
        Ok(v) => v.split(',').map(|s| s.trim().to_string()).collect(),
        Err(_) => DEFAULT_ROUTERS.iter().map(|s| s.to_string()).collect(),
    }
}

/// What the session keeps for its DHT.
pub(super) struct DhtState {
    pub(super) node: Node,
    token: usize,
    port: u16,
    opts: DhtOptions,
    /// Names still to resolve (taken on the first turn).
    names: Vec<String>,
    /// Resolver tickets of bootstrap names -> port.
    resolving: HashMap<Ticket, u16>,
    /// Info-hashes we announce (public torrents that run).
    announced: HashSet<[u8; 20]>,
    last_sync: Option<Instant>,
    last_stats: Instant,
    buf: Vec<u8>,
}

impl DhtState {
    /// Bind the socket and set up the node (with the saved state).
    pub(super) fn start(
        poll: &Poll,
        conns: &mut Slab<Conn>,
        opts: &DhtOptions,
        bind_ip: Option<IpAddr>,
        listen: Option<SocketAddr>,
        now: Instant,
    ) -> io::Result<DhtState> {
        let ip = match bind_ip {
            Some(IpAddr::V4(ip)) => ip,
            _ => Ipv4Addr::UNSPECIFIED,
        };
        let want = opts.port.or(listen.map(|a| a.port())).unwrap_or(0);
        let mut sock = match net::bind_udp(SocketAddr::from((ip, want))) {
            Ok(s) => s,
            Err(e) if opts.port.is_none() && want != 0 => {
                warn!("DHT: UDP port {want} is taken ({e}); using another");
                net::bind_udp(SocketAddr::from((ip, 0)))?
            }
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("DHT UDP port {want}: {e}"),
                ));
            }
        };
        let port = sock.local_addr()?.port();
        let entry = conns.vacant_entry();
        let token = entry.key();
        poll.registry()
            .register(&mut sock, Token(token), Interest::READABLE)?;
        entry.insert(Conn::Dht(sock));
        let saved = opts
            .state_file
            .as_ref()
            .and_then(|p| {
                crate::state_file::read(p, state::MAX_FILE_LEN)
                    .ok()
                    .flatten()
            })
            .and_then(|b| SavedState::decode(&b))
            .unwrap_or_default();
        let mut rng = crate::rng::Rng::new(net::random_u64());
        let id = match (saved.external_ip, saved.id) {
            // BEP 42: keep a saved id that fits the saved address, else make one.
            (Some(ip), Some(id)) if id.bep42_valid_for(ip) => id,
            (Some(ip), _) => NodeId::bep42(ip, &mut rng),
            (None, Some(id)) => id,
            (None, None) => NodeId::random(&mut rng),
        };
        let mut node = Node::new(id, opts.config.clone(), net::random_u64(), now);
        for (i, (_, addr)) in saved
            .nodes
            .iter()
            .enumerate()
            .take(SAVED_BOOTSTRAP + SAVED_PINGS)
        {
            if i < SAVED_BOOTSTRAP {
                node.add_bootstrap(*addr, now);
            } else {
                node.ping(*addr, now);
            }
        }
        let names = opts.bootstrap.clone();
        info!(
            "DHT node {:?} on UDP port {port}: {} saved nodes, {} bootstrap addresses",
            id,
            saved.nodes.len(),
            names.len()
        );
        Ok(DhtState {
            node,
            token,
            port,
            opts: opts.clone(),
            names,
            resolving: HashMap::new(),
            announced: HashSet::new(),
            last_sync: None,
            last_stats: now,
            buf: vec![0; RECV_BUF],
        })
    }

    /// Write the state file (our id, the external address we were told,
    /// the table's nodes).
    pub(super) fn save(&self) {
        let Some(path) = &self.opts.state_file else {
            return;
        };
        // Nothing learnt (no bootstrap node, say): no file is written.
        if self.node.table().is_empty() && self.node.external_ip().is_none() {
            return;
        }
        let s = SavedState {
            id: Some(self.node.id()),
            external_ip: self.node.external_ip(),
            nodes: self.node.saved_nodes(),
        };
        let tmp = path.with_extension("tmp");
        let r = crate::state_file::write(path, &tmp, &s.encode());
        match r {
            Ok(()) => debug!(
                "DHT state ({} nodes) saved to {}",
                s.nodes.len(),
                path.display()
            ),
            Err(e) => warn!("could not save the DHT state to {}: {e}", path.display()),
        }
    }

    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        let t = self.node.poll_timeout();
        match self.last_sync {
            Some(s) => t.map(|t| t.min(s + SYNC_EVERY)),
            None => Some(Instant::now()),
        }
    }

    /// Nodes in the routing table.
    pub fn nodes(&self) -> usize {
        self.node.table().len()
    }
}

impl Session {
    /// Datagrams waiting on the DHT socket (at most [`READS_PER_TURN`]).
    pub(super) fn dht_readable(&mut self, now: Instant) {
        let Some(d) = self.dht.as_mut() else {
            return;
        };
        let Some(Conn::Dht(sock)) = self.conns.get(d.token) else {
            return;
        };
        let mut more = false;
        for i in 0..READS_PER_TURN {
            match sock.recv_from(&mut d.buf) {
                Ok((n, from)) => d.node.handle_datagram(from, &d.buf[..n], now),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    debug!("DHT socket: {e}");
                    break;
                }
            }
            more = i + 1 == READS_PER_TURN;
        }
        if more {
            self.carry.push(crate::ids::ConnToken(d.token));
        }
        self.dht_flush(now);
    }

    /// Send what the node queued; hand found peers to their torrents.
    fn dht_flush(&mut self, now: Instant) {
        let Some(d) = self.dht.as_mut() else {
            return;
        };
        let Some(Conn::Dht(sock)) = self.conns.get(d.token) else {
            return;
        };
        while let Some(t) = d.node.poll_transmit() {
            if let Err(e) = sock.send_to(&t.data, SocketAddr::V4(t.to)) {
                debug!("DHT send to {}: {e}", t.to);
            }
        }
        let mut found: Vec<(TorrentId, Vec<SocketAddrV4>)> = Vec::new();
        while let Some(e) = d.node.poll_event() {
            match e {
                DhtEvent::Peers { info_hash, peers } => {
                    if let Some(&tid) = self.by_hash.get(&info_hash.0) {
                        found.push((tid, peers));
                    }
                }
                DhtEvent::LookupDone(r) => {
                    if r.get_peers {
                        debug!(
                            "DHT lookup {:?}: {} peers, {} queries, {} announces",
                            r.target, r.peers, r.queries, r.announced
                        );
                    }
                }
            }
        }
        // Dialed at once, as a tracker's answer is (not at the next tick).
        let any = !found.is_empty();
        for (tid, peers) in found {
            if let Some(s) = self.torrents.get_mut(tid) {
                let before = s.candidates.len();
                for p in peers {
                    let p = SocketAddr::V4(p);
                    if !self.own_addrs.contains(&p) {
                        s.candidates.push(p, now);
                    }
                }
                debug!(
                    "DHT: {} new peers for torrent {tid:?}",
                    s.candidates.len() - before
                );
            }
        }
        if any {
            self.connect_more(now);
        }
    }

    /// The DHT's share of a loop turn: timers, names resolved, the
    /// torrents' announces and `port` messages, output.
    pub(super) fn dht_turn(&mut self, now: Instant) {
        let Some(d) = self.dht.as_mut() else {
            return;
        };
        for name in std::mem::take(&mut d.names) {
            let Some((host, port)) = split_host_port(&name) else {
                warn!("--dht-node {name}: not HOST:PORT");
                continue;
            };
            match self.resolver.resolve(host, port, now) {
                super::Lookup::Ready(answer) => dht_bootstrap(d, answer, port, now),
                super::Lookup::Pending(ticket) => {
                    d.resolving.insert(ticket, port);
                }
            }
        }
        if d.node.poll_timeout().is_some_and(|t| t <= now) {
            d.node.handle_timeout(now);
        }
        if d.last_sync.is_none_or(|t| now >= t + SYNC_EVERY) {
            d.last_sync = Some(now);
            let listen_port = self.listen_addr.map(|a| a.port());
            let mut live = HashSet::new();
            for (_, s) in self.torrents.iter_mut() {
                let hash = s.t.info_hash;
                // Peers' `port` messages: ping their nodes.
                for a in s.t.dht_nodes.drain(..) {
                    if let SocketAddr::V4(a) = a {
                        d.node.ping(a, now);
                    }
                }
                let Some(port) = listen_port else {
                    continue;
                };
                if s.t.is_private() || s.paused || s.removing.is_some() {
                    s.t.dht_port = None;
                    continue;
                }
                s.t.dht_port = Some(d.port);
                live.insert(hash);
                if d.announced.insert(hash) {
                    d.node.announce(NodeId(hash), port, port == d.port, now);
                }
            }
            d.announced.retain(|h| {
                let keep = live.contains(h);
                if !keep {
                    d.node.stop_announce(&NodeId(*h));
                }
                keep
            });
            if let Some(every) = d.opts.stats_every
                && now >= d.last_stats + every
            {
                d.last_stats = now;
                let st = d.node.stats();
                println!(
                    "{}{} nodes ({} good, {} buckets), {} stored peers in {} swarms; in {} datagrams / {} bytes, out {} / {}; {} malformed, {} rate-limited",
                    if d.opts.stats_machine {
                        "@dht "
                    } else {
                        "dht: "
                    },
                    d.node.table().len(),
                    d.node.table().good(now),
                    d.node.table().bucket_count(),
                    d.node.store().peers(),
                    d.node.store().swarms(),
                    st.datagrams_in,
                    st.bytes_in,
                    st.datagrams_out,
                    st.bytes_out,
                    st.malformed,
                    st.rate_limited
                );
            }
        }
        self.dht_flush(now);
    }

    /// A bootstrap name was resolved (`false`: the ticket is not the DHT's).
    pub(super) fn dht_resolved(&mut self, ticket: Ticket, answer: Answer, now: Instant) -> bool {
        let Some(d) = self.dht.as_mut() else {
            return false;
        };
        let Some(port) = d.resolving.remove(&ticket) else {
            return false;
        };
        dht_bootstrap(d, answer, port, now);
        true
    }

    /// Nodes in the DHT's table (None: no DHT).
    pub fn dht_nodes(&self) -> Option<usize> {
        self.dht.as_ref().map(DhtState::nodes)
    }
}

fn dht_bootstrap(d: &mut DhtState, answer: Answer, port: u16, now: Instant) {
    match answer {
        Ok(addrs) => {
            for a in addrs {
                if let IpAddr::V4(ip) = a.ip() {
                    d.node.add_bootstrap(SocketAddrV4::new(ip, port), now);
                }
            }
        }
        Err(e) => warn!("DHT bootstrap node: {e}"),
    }
}

/// `host:port` (a bracketed IPv6 literal too).
fn split_host_port(s: &str) -> Option<(&str, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some((host, port.parse().ok().filter(|&p| p != 0)?)).filter(|(h, _)| !h.is_empty())
}

/// The state file for data in `dir` (or `--state-dir`).
pub fn state_file_in(dir: &std::path::Path) -> PathBuf {
    dir.join(format!(".piecemeal-{}", state::FILE_NAME))
}
