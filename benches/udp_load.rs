//! BEP 15 load generator for `benches/udp_tracker_load.sh`: announces
//! (and optionally scrapes) to one UDP tracker from many client sockets,
//! and counts the answers.
//!
//! ```text
//! cargo bench --bench udp_load -- --target 127.0.0.1:6969 [options]
//! ```
//!
//! Each client socket connects (BEP 15 connect, a connection id), then
//! keeps `--window` requests outstanding: every answer is matched by
//! transaction id and checked for its action and layout, and a new request
//! goes out in its place. A request unanswered after `--timeout-ms` is
//! counted as a time-out and dropped, not sent again (on loopback a loss
//! is a full socket buffer, and a fresh request tells as much); the socket
//! then connects again, in case its connection id is what was refused.
//! Connection ids are renewed after 50 s (trackers keep them 60–120 s).
//! The default window of 2 (128 requests in flight from 64 sockets) loses
//! nothing on loopback; with 4, the bursts overflow a tracker socket's
//! default receive buffer (212,992 bytes holds about 160 small datagrams)
//! and some requests time out.
//!
//! Announces pick one of `--hashes` info-hashes (`ih` + 18 digits, as
//! `benches/tracker_load.sh` writes them into opentracker's whitelist).
//! With probability `--new` a new peer joins (`started`, a random peer id
//! and key, its own port so that trackers keying peers by address and
//! port count it too); otherwise a peer this socket announced before
//! re-announces (no event; a `--seeders` share of them with `left` 0).
//! numwant is `--numwant`. `--scrape` is the share of scrapes (1–4
//! hashes) among requests.
//!
//! Sources: `--sources 1` binds every socket to 127.0.0.1; `--sources N`
//! (N > 1) spreads them over N addresses from 127.0.0.2 up (all loopback
//! on Linux), for trackers that limit by address.
//!
//! After `--warmup` seconds the counters run for `--duration` seconds;
//! one line of `key=value` results is printed at the end. Without
//! `--target` it does nothing and exits 0, so that `cargo test
//! --all-targets` (which runs benches once, with no arguments) passes at
//! once.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::Sub;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use piecemeal::rng::Rng;
use piecemeal::tracker::udp_wire::{self, UdpResponse};
use piecemeal::tracker::{AnnounceParams, Event};

/// A connection id is used this long, then renewed.
const CONN_ID_USE: Duration = Duration::from_secs(50);
/// Peers remembered per socket for re-announces (a random one is
/// replaced when full).
const KNOWN_PEERS: usize = 4096;

#[derive(Debug, Clone)]
struct Settings {
    target: SocketAddr,
    sockets: usize,
    sources: u32,
    window: usize,
    hashes: u32,
    new: f64,
    seeders: f64,
    scrape: f64,
    numwant: u32,
    warmup: Duration,
    duration: Duration,
    timeout: Duration,
    threads: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            target: SocketAddr::from(([127, 0, 0, 1], 6969)),
            sockets: 64,
            sources: 1,
            window: 2,
            hashes: 500,
            new: 0.1,
            seeders: 0.25,
            scrape: 0.0,
            numwant: 50,
            warmup: Duration::from_secs(2),
            duration: Duration::from_secs(10),
            timeout: Duration::from_millis(1000),
            threads: 1,
        }
    }
}

/// The settings; `None` without `--target` (nothing to do).
fn parse_args() -> Result<Option<Settings>, String> {
    let mut s = Settings::default();
    let mut has_target = false;
    let mut args = std::env::args().skip(1);
    let secs = |v: &str| -> Result<Duration, String> {
        v.parse::<f64>()
            .ok()
            .filter(|x| x.is_finite() && *x >= 0.0)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| format!("bad number of seconds {v:?}"))
    };
    fn num<T: std::str::FromStr>(k: &str, v: &str) -> Result<T, String> {
        v.parse().map_err(|_| format!("bad value {v:?} for {k}"))
    }
    while let Some(k) = args.next() {
        if k == "--bench" {
            continue; // added by `cargo bench`
        }
        if k == "-h" || k == "--help" {
            return Err(String::new());
        }
        let v = args.next().ok_or_else(|| format!("{k} needs a value"))?;
        match k.as_str() {
            "--target" => {
                s.target = num(&k, &v)?;
                has_target = true;
            }
            "--sockets" => s.sockets = num(&k, &v)?,
            "--sources" => s.sources = num(&k, &v)?,
            "--window" => s.window = num(&k, &v)?,
            "--hashes" => s.hashes = num(&k, &v)?,
            "--new" => s.new = num(&k, &v)?,
            "--seeders" => s.seeders = num(&k, &v)?,
            "--scrape" => s.scrape = num(&k, &v)?,
            "--numwant" => s.numwant = num(&k, &v)?,
            "--warmup" => s.warmup = secs(&v)?,
            "--duration" => s.duration = secs(&v)?,
            "--timeout-ms" => s.timeout = Duration::from_millis(num(&k, &v)?),
            "--threads" => s.threads = num(&k, &v)?,
            _ => return Err(format!("unknown option {k}")),
        }
    }
    if s.sockets == 0 || s.window == 0 || s.hashes == 0 || s.sources == 0 || s.threads == 0 {
        return Err("--sockets, --window, --hashes, --sources and --threads must be > 0".into());
    }
    s.threads = s.threads.min(s.sockets);
    Ok(has_target.then_some(s))
}

const USAGE: &str = "usage: udp_load --target 127.0.0.1:6969 [--sockets 64] [--sources 1] \
[--window 2] [--hashes 500] [--new 0.1] [--seeders 0.25] [--scrape 0] [--numwant 50] \
[--warmup 2] [--duration 10] [--timeout-ms 1000] [--threads 1]";

/// What came back (or did not).
#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    sent: u64,
    connects: u64,
    announces: u64,
    scrapes: u64,
    /// `error` answers (action 3).
    errors: u64,
    /// No answer within the time-out.
    timeouts: u64,
    /// An answer whose transaction id is not outstanding (late, after its
    /// time-out, or never sent).
    unmatched: u64,
    /// Not a BEP 15 answer, the wrong action for its request, peers not in
    /// whole 6-byte records, or the wrong number of scrape records.
    bad: u64,
    /// Sends the kernel refused (tried again later).
    send_blocked: u64,
    /// Peers received in announce answers.
    peers: u64,
    /// Sum of announce round trips, µs.
    rtt_us: u64,
}

impl Sub for Counts {
    type Output = Counts;
    fn sub(self, o: Counts) -> Counts {
        Counts {
            sent: self.sent - o.sent,
            connects: self.connects - o.connects,
            announces: self.announces - o.announces,
            scrapes: self.scrapes - o.scrapes,
            errors: self.errors - o.errors,
            timeouts: self.timeouts - o.timeouts,
            unmatched: self.unmatched - o.unmatched,
            bad: self.bad - o.bad,
            send_blocked: self.send_blocked - o.send_blocked,
            peers: self.peers - o.peers,
            rtt_us: self.rtt_us - o.rtt_us,
        }
    }
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        self.sent += o.sent;
        self.connects += o.connects;
        self.announces += o.announces;
        self.scrapes += o.scrapes;
        self.errors += o.errors;
        self.timeouts += o.timeouts;
        self.unmatched += o.unmatched;
        self.bad += o.bad;
        self.send_blocked += o.send_blocked;
        self.peers += o.peers;
        self.rtt_us += o.rtt_us;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Connect,
    Announce,
    /// With the number of hashes asked.
    Scrape(usize),
}

#[derive(Debug, Clone, Copy)]
struct Outstanding {
    txn: u32,
    kind: Kind,
    sent: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Peer {
    hash: u32,
    id: [u8; 20],
    key: u32,
    port: u16,
}

struct Client {
    sock: UdpSocket,
    conn: Option<(u64, Instant)>,
    outstanding: Vec<Outstanding>,
    peers: Vec<Peer>,
}

/// One thread's share of the sockets.
struct Worker<'a> {
    s: &'a Settings,
    rng: Rng,
    next_txn: u32,
    next_port: u32,
    clients: Vec<Client>,
    counts: Counts,
    printed_errors: u32,
}

fn info_hash(i: u32) -> [u8; 20] {
    let mut h = [0u8; 20];
    h.copy_from_slice(format!("ih{i:018}").as_bytes());
    h
}

impl Worker<'_> {
    fn chance(&mut self, p: f64) -> bool {
        ((self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    fn below(&mut self, n: u32) -> u32 {
        (self.rng.next_u64() % u64::from(n)) as u32
    }

    fn txn(&mut self) -> u32 {
        self.next_txn = self.next_txn.wrapping_add(0x9E37_79B9);
        self.next_txn
    }

    /// Send on client `c` until its window is full (or the kernel pushes
    /// back). Until it has a connection id, only a connect goes out.
    fn fill(&mut self, c: usize, now: Instant) {
        loop {
            let Some(cl) = self.clients.get(c) else {
                return;
            };
            let fresh = cl
                .conn
                .filter(|(_, at)| now.duration_since(*at) < CONN_ID_USE);
            let connecting = cl.outstanding.iter().any(|o| o.kind == Kind::Connect);
            if connecting || cl.outstanding.len() >= self.s.window {
                return;
            }
            let txn = self.txn();
            let (kind, bytes): (Kind, Vec<u8>) = match fresh {
                None => (Kind::Connect, udp_wire::connect_request(txn).to_vec()),
                Some((id, _)) if self.chance(self.s.scrape) => {
                    let n = 1 + self.below(4);
                    let hashes: Vec<[u8; 20]> = (0..n)
                        .map(|_| info_hash(self.below(self.s.hashes)))
                        .collect();
                    (
                        Kind::Scrape(hashes.len()),
                        udp_wire::scrape_request(id, txn, &hashes),
                    )
                }
                Some((id, _)) => (Kind::Announce, self.announce(c, id, txn).to_vec()),
            };
            let Some(cl) = self.clients.get_mut(c) else {
                return;
            };
            match cl.sock.send_to(&bytes, self.s.target) {
                Ok(_) => {
                    self.counts.sent += 1;
                    cl.outstanding.push(Outstanding {
                        txn,
                        kind,
                        sent: now,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.counts.send_blocked += 1;
                    return;
                }
                Err(e) => {
                    eprintln!("udp_load: send: {e}");
                    self.counts.send_blocked += 1;
                    return;
                }
            }
        }
    }

    /// An announce for a new peer or a known one of client `c`.
    fn announce(&mut self, c: usize, conn_id: u64, txn: u32) -> [u8; 98] {
        let known = self.clients.get(c).map_or(0, |cl| cl.peers.len());
        let (peer, event, left) = if known == 0 || self.chance(self.s.new) {
            let mut id = *b"-UL0001-000000000000";
            for b in id.iter_mut().skip(8) {
                *b = (self.rng.next_u64() & 0xff) as u8;
            }
            self.next_port = self.next_port.wrapping_add(1);
            let p = Peer {
                hash: self.below(self.s.hashes),
                id,
                key: self.rng.next_u64() as u32,
                port: 1024 + (self.next_port % 64_000) as u16,
            };
            let slot = self.below(KNOWN_PEERS as u32) as usize;
            if let Some(cl) = self.clients.get_mut(c) {
                if cl.peers.len() < KNOWN_PEERS {
                    cl.peers.push(p);
                } else if let Some(old) = cl.peers.get_mut(slot) {
                    *old = p;
                }
            }
            (p, Event::Started, 1_000_000)
        } else {
            let i = self.below(known as u32) as usize;
            let seeder = self.chance(self.s.seeders);
            let p = self
                .clients
                .get(c)
                .and_then(|cl| cl.peers.get(i))
                .copied()
                .unwrap_or(Peer {
                    hash: 0,
                    id: [b'x'; 20],
                    key: 0,
                    port: 1024,
                });
            (p, Event::None, if seeder { 0 } else { 500_000 })
        };
        let params = AnnounceParams {
            info_hash: info_hash(peer.hash),
            peer_id: peer.id,
            port: peer.port,
            uploaded: 0,
            downloaded: 0,
            left,
            event,
            numwant: self.s.numwant,
            key: peer.key,
            tracker_id: None,
        };
        udp_wire::announce_request(conn_id, txn, &params)
    }

    /// One datagram arrived on client `c`.
    fn on_datagram(&mut self, c: usize, data: &[u8], now: Instant) {
        let Some(cl) = self.clients.get_mut(c) else {
            return;
        };
        let resp = match udp_wire::decode_response(data) {
            Ok(r) => r,
            Err(_) => {
                self.counts.bad += 1;
                return;
            }
        };
        let Some(pos) = cl.outstanding.iter().position(|o| o.txn == resp.txn()) else {
            self.counts.unmatched += 1;
            return;
        };
        let o = cl.outstanding.swap_remove(pos);
        match (o.kind, resp) {
            (Kind::Connect, UdpResponse::Connect { conn_id, .. }) => {
                self.counts.connects += 1;
                cl.conn = Some((conn_id, now));
            }
            (Kind::Announce, UdpResponse::Announce { peers, .. }) => {
                if peers.len() % 6 != 0 {
                    self.counts.bad += 1;
                } else {
                    self.counts.announces += 1;
                    self.counts.peers += (peers.len() / 6) as u64;
                    self.counts.rtt_us += now.duration_since(o.sent).as_micros() as u64;
                }
            }
            (Kind::Scrape(n), UdpResponse::Scrape { records, .. }) => {
                if records.len() == 12 * n {
                    self.counts.scrapes += 1;
                } else {
                    self.counts.bad += 1;
                }
            }
            (_, UdpResponse::Error { message, .. }) => {
                self.counts.errors += 1;
                if self.printed_errors < 3 {
                    self.printed_errors += 1;
                    eprintln!(
                        "udp_load: error answer to {:?}: {}",
                        o.kind,
                        String::from_utf8_lossy(message)
                    );
                }
            }
            _ => self.counts.bad += 1,
        }
    }

    /// Drop requests older than the time-out; a client that lost one
    /// connects again.
    fn expire(&mut self, now: Instant) {
        let timeout = self.s.timeout;
        for cl in &mut self.clients {
            let before = cl.outstanding.len();
            cl.outstanding
                .retain(|o| now.duration_since(o.sent) < timeout);
            let lost = before - cl.outstanding.len();
            if lost > 0 {
                self.counts.timeouts += lost as u64;
                cl.conn = None;
            }
        }
    }
}

/// Run one worker over `sockets` client sockets numbered from `first`;
/// the counts between `t_warm` and `t_end`.
fn run_worker(
    s: &Settings,
    first: usize,
    sockets: usize,
    t_warm: Instant,
    t_end: Instant,
) -> io::Result<Counts> {
    let mut poll = Poll::new()?;
    let mut clients = Vec::with_capacity(sockets);
    for i in first..first + sockets {
        let ip = if s.sources == 1 {
            Ipv4Addr::LOCALHOST
        } else {
            Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 0, 0, 2)) + (i as u32 % s.sources))
        };
        let mut sock = UdpSocket::bind(SocketAddr::new(IpAddr::V4(ip), 0))?;
        poll.registry()
            .register(&mut sock, Token(clients.len()), Interest::READABLE)?;
        clients.push(Client {
            sock,
            conn: None,
            outstanding: Vec::with_capacity(s.window),
            peers: Vec::new(),
        });
    }
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        ^ (u64::from(std::process::id()) << 32)
        ^ first as u64;
    let mut w = Worker {
        s,
        rng: Rng::new(seed),
        next_txn: seed as u32,
        next_port: first as u32 * 7919,
        clients,
        counts: Counts::default(),
        printed_errors: 0,
    };
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; udp_wire::MAX_RESPONSE_LEN + 1];
    let mut at_warm: Option<Counts> = None;
    let mut last_expire = Instant::now();
    let tick = Duration::from_millis(10);
    for c in 0..w.clients.len() {
        w.fill(c, Instant::now());
    }
    loop {
        poll.poll(&mut events, Some(tick))?;
        let now = Instant::now();
        if at_warm.is_none() && now >= t_warm {
            at_warm = Some(w.counts);
        }
        if now >= t_end {
            break;
        }
        for ev in &events {
            let c = ev.token().0;
            while let Some(cl) = w.clients.get(c) {
                match cl.sock.recv_from(&mut buf) {
                    Ok((n, from)) => {
                        if from != s.target {
                            w.counts.bad += 1;
                            continue;
                        }
                        let data = buf.get(..n).unwrap_or_default();
                        w.on_datagram(c, data, now);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    // ICMP port unreachable: the tracker is not there (yet).
                    Err(_) => break,
                }
            }
            w.fill(c, now);
        }
        if now.duration_since(last_expire) >= tick {
            last_expire = now;
            w.expire(now);
            for c in 0..w.clients.len() {
                w.fill(c, now);
            }
        }
    }
    Ok(w.counts - at_warm.unwrap_or_default())
}

/// This process's user + system CPU time so far (Linux `/proc`), to tell
/// when the generator rather than the tracker sets the pace.
fn own_cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are
    // fields 14 and 15 of the whole line.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let mut f = rest.split_ascii_whitespace().skip(11);
    let ticks: f64 = f.next()?.parse::<f64>().ok()? + f.next()?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| ticks / hz as f64)
}

fn main() -> ExitCode {
    let s = match parse_args() {
        Ok(Some(s)) => s,
        Ok(None) => {
            eprintln!("udp_load: no --target, nothing to do (see benches/udp_tracker_load.sh)");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            if e.is_empty() {
                println!("{USAGE}"); // --help
                return ExitCode::SUCCESS;
            }
            eprintln!("udp_load: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let start = Instant::now();
    let t_warm = start + s.warmup;
    let t_end = t_warm + s.duration;
    let per = s.sockets / s.threads;
    let results: Vec<io::Result<Counts>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..s.threads)
            .map(|t| {
                let n = if t + 1 == s.threads {
                    s.sockets - per * t
                } else {
                    per
                };
                let s = &s;
                scope.spawn(move || run_worker(s, per * t, n, t_warm, t_end))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(io::Error::other("worker panicked")))
            })
            .collect()
    });
    let mut total = Counts::default();
    for r in results {
        match r {
            Ok(c) => total.add(&c),
            Err(e) => {
                eprintln!("udp_load: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let secs = s.duration.as_secs_f64().max(1e-9);
    let cpu = own_cpu_secs().map_or_else(|| "?".to_string(), |c| format!("{c:.2}"));
    let per_s = |n: u64| n as f64 / secs;
    println!(
        "udp_load target={} sockets={} sources={} window={} hashes={} new={} seeders={} \
         scrape={} numwant={} secs={:.1} announces_per_s={:.0} answers_per_s={:.0} \
         announces={} connects={} scrapes={} errors={} timeouts={} unmatched={} bad={} \
         send_blocked={} sent={} peers_per_answer={:.1} rtt_us={:.0} generator_cpu_s={}",
        s.target,
        s.sockets,
        s.sources,
        s.window,
        s.hashes,
        s.new,
        s.seeders,
        s.scrape,
        s.numwant,
        secs,
        per_s(total.announces),
        per_s(total.announces + total.connects + total.scrapes + total.errors),
        total.announces,
        total.connects,
        total.scrapes,
        total.errors,
        total.timeouts,
        total.unmatched,
        total.bad,
        total.send_blocked,
        total.sent,
        total.peers as f64 / total.announces.max(1) as f64,
        total.rtt_us as f64 / total.announces.max(1) as f64,
        cpu,
    );
    ExitCode::SUCCESS
}
