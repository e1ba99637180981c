//! Peer connections: accepting and routing by info-hash, connecting,
//! reading (within the download limits) and writing, eviction, closing and
//! retries.

use super::TorrentId;
use super::encryption::{self, Crypt, Dial, Incoming};
use super::{Conn, READ_BUDGET, Session, connect_from, hex_short, want_writable};
use crate::ids::ConnToken;
use crate::mse::{Method, Policy};
use crate::peer::PeerError;
use crate::wire;
use log::{debug, info, warn};
use mio::{Interest, Token};
use std::io::{self, Read};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

impl Session {
    /// Connections to peers (incoming, routed or not, and outgoing).
    pub(super) fn peer_conns(&self) -> usize {
        self.conns
            .iter()
            .filter(|(_, c)| matches!(c, Conn::Incoming { .. } | Conn::Peer { .. }))
            .count()
    }

    pub(super) fn accept_peers(&mut self, token: ConnToken, now: Instant) {
        if self.accept_paused_until.is_some_and(|t| now < t) {
            return;
        }
        loop {
            let Some(Conn::PeerListener(l)) = self.conns.get(token.0) else {
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
                                    .and_then(|s| s.t.peer(*key))
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
                        crypt: Crypt::Undecided,
                        out: Vec::new(),
                        writable: false,
                    });
                    // Data may already be waiting.
                    self.carry.push(ConnToken(tok));
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
                        if let Some(Conn::PeerListener(l)) = self.conns.get(token.0) {
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
    pub(super) fn evict_one(&mut self, now: Instant) -> Option<ConnToken> {
        let after = self.opts.limits.evict_after;
        let stale_incoming = self
            .conns
            .iter()
            .filter_map(|(tok, c)| match c {
                Conn::Incoming { since, .. } if now.duration_since(*since) >= after => {
                    Some((*since, ConnToken(tok)))
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

    /// Read an incoming connection's handshake (after an MSE exchange, if
    /// it starts with one) far enough to know its torrent, then hand it
    /// over to that torrent (or close it).
    pub(super) fn incoming_readable(&mut self, token: ConnToken, now: Instant) {
        match self.read_incoming(token, now) {
            Incoming::Wait => {
                self.incoming_interest(token);
                return;
            }
            Incoming::Close(e) => {
                self.close.push((token, e));
                return;
            }
            Incoming::Route => {}
        }
        let Some(Conn::Incoming { buf, crypt, .. }) = self.conns.get(token.0) else {
            return;
        };
        if let Err(e) = wire::Handshake::check_prefix(buf) {
            self.close.push((token, PeerError::Decode(e)));
            return;
        }
        let info_hash = wire::Handshake::info_hash_of(buf).unwrap_or([0; 20]);
        if let Crypt::Done(d) = crypt
            && d.info_hash != info_hash
        {
            debug!("peer#{token}: handshake for another torrent than its MSE exchange");
            self.close.push((token, PeerError::WrongInfoHash));
            return;
        }
        // A torrent still checking its data: the connection waits (within
        // the handshake time-out) and is routed once the check ends.
        if self
            .by_hash
            .get(&info_hash)
            .and_then(|&id| self.torrents.get(id))
            .is_some_and(|s| !s.paused && s.t.is_checking())
        {
            if !self.parked.contains(&token) {
                self.parked.push(token);
            }
            return;
        }
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
            sock,
            addr,
            buf,
            crypt,
            ..
        }) = self.conns.try_remove(token.0)
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
        // (Re-registered in any case: MSE output may have left WRITABLE on.)
        if self
            .poll
            .registry()
            .reregister(&mut sock, Token(tok), Interest::READABLE)
            .is_err()
        {
            return;
        }
        let key = s.t.add_peer(ConnToken(tok), addr, false, now);
        // What came with the handshake was read (and decrypted) already:
        // it goes in before the ciphers, which apply to what follows.
        s.t.feed_peer(key, &buf);
        match crypt {
            Crypt::Done(d) => {
                if d.method == Method::Rc4 {
                    s.t.set_peer_ciphers(key, d.dec, d.enc);
                }
                debug!("peer#{tok} {addr}: MSE done, {}", d.method);
            }
            _ => debug!("peer#{tok} {addr}: plaintext handshake"),
        }
        entry.insert(Conn::Peer {
            sock,
            tid,
            key,
            connecting: false,
            writable: false,
            mse: None,
            pre: Vec::new(),
        });
        self.peer_readable(ConnToken(tok), now);
    }

    pub(super) fn peer_readable(&mut self, token: ConnToken, now: Instant) {
        if let Some(Conn::Peer {
            mse: Some(_),
            connecting: false,
            ..
        }) = self.conns.get(token.0)
        {
            match self.dial_readable(token) {
                Ok(true) => self.write_peer(token, now),
                Ok(false) => {
                    self.write_peer(token, now);
                    return;
                }
                Err(e) => {
                    self.close.push((token, e));
                    return;
                }
            }
        }
        let Some(Conn::Peer {
            sock,
            tid,
            key,
            connecting,
            ..
        }) = self.conns.get_mut(token.0)
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
            let Some(read) = t.read_peer_from(key, sock) else {
                return;
            };
            match read {
                Ok(0) => {
                    // Handle what is buffered, then close, for the reason
                    // the last bytes gave if they gave one.
                    let why = t.on_readable(key, now).err().unwrap_or(PeerError::Eof);
                    break Some(why);
                }
                Ok(n) => {
                    total += n;
                    if t.peer(key).is_some_and(|p| p.recv_is_full()) || total >= budget {
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

    pub(super) fn peer_writable(&mut self, token: ConnToken, now: Instant) {
        let Some(Conn::Peer {
            sock, connecting, ..
        }) = self.conns.get_mut(token.0)
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
    pub(super) fn write_peer(&mut self, token: ConnToken, now: Instant) {
        let Some(Conn::Peer {
            sock,
            tid,
            key,
            connecting,
            writable,
            mse,
            pre,
        }) = self.conns.get_mut(token.0)
        else {
            return;
        };
        if *connecting {
            return;
        }
        // MSE bytes go first; the send buffer waits for the exchange.
        if let Err(e) = encryption::write_raw(sock, pre) {
            self.close.push((token, PeerError::Io("write", e.kind())));
            return;
        }
        if !pre.is_empty() || mse.is_some() {
            want_writable(&self.poll, sock, token, !pre.is_empty(), writable);
            return;
        }
        let key = *key;
        let Some(s) = self.torrents.get_mut(*tid) else {
            return;
        };
        let mut wrote = false;
        loop {
            let Some(peer) = s.t.peer(key) else {
                return;
            };
            if !peer.has_output() {
                if peer.requests.is_empty() {
                    break;
                }
                if let Err(e) = s.serve(key) {
                    self.close.push((token, e));
                    return;
                }
                self.close.append(&mut s.t.to_close);
                if s.t.peer(key).is_none_or(|p| !p.has_output()) {
                    break; // out of upload allowance
                }
                continue;
            }
            match s.t.write_peer_to(key, sock) {
                None => return,
                Some(Ok(n)) => {
                    if n > 0 {
                        wrote = true;
                    }
                    if s.t.peer(key).is_some_and(|p| p.has_output()) {
                        break; // would block
                    }
                }
                Some(Err(e)) => {
                    self.close.push((token, PeerError::Io("write", e.kind())));
                    return;
                }
            }
        }
        if wrote {
            s.t.on_sent(key, now);
        }
        let pending = s.t.peer(key).is_some_and(|p| p.has_output());
        want_writable(&self.poll, sock, token, pending, writable);
    }

    /// Open outgoing connections to candidates, within the limits (the
    /// session's peer cap and half-open cap, shared by every torrent;
    /// torrents take turns).
    pub(super) fn connect_more(&mut self, now: Instant) {
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
        let ids: Vec<TorrentId> = self.order.clone();
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
                if s.t.peer_count() >= s.t.cfg.max_peers {
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
                let key = s.t.add_peer(ConnToken(tok), addr, true, now);
                let policy = self.opts.limits.encryption;
                let use_mse = match policy {
                    Policy::Off => false,
                    Policy::Require => true,
                    Policy::Prefer => self.dial_methods.get(&addr) != Some(Dial::Plaintext),
                };
                let mut mse = use_mse.then(|| encryption::dial(s.t.info_hash, policy, now));
                let pre = mse
                    .as_mut()
                    .and_then(|hs| hs.poll_transmit())
                    .unwrap_or_default();
                debug!(
                    "peer#{tok} {addr} connecting ({})",
                    if use_mse { "MSE" } else { "plaintext" }
                );
                entry.insert(Conn::Peer {
                    sock,
                    tid: id,
                    key,
                    connecting: true,
                    writable: true,
                    mse,
                    pre,
                });
                half_open += 1;
                open += 1;
            }
        }
    }

    pub(super) fn close_conn(&mut self, token: ConnToken, why: &PeerError) {
        let Some(conn) = self.conns.try_remove(token.0) else {
            return;
        };
        match conn {
            Conn::Incoming { mut sock, addr, .. } => {
                debug!("peer#{token} {addr} dropped: {why}");
                let _ = self.poll.registry().deregister(&mut sock);
            }
            Conn::Peer {
                mut sock,
                tid,
                key,
                connecting,
                mse,
                ..
            } => {
                // A dialed MSE exchange that failed once connected: with
                // `prefer`, the same peer is dialed again in plaintext.
                let fallback = mse.is_some()
                    && !connecting
                    && self.opts.limits.encryption == Policy::Prefer
                    && !matches!(why, PeerError::Shutdown);
                if matches!(why, PeerError::OwnPeerId) {
                    // Our handshake is queued (see `Torrent::on_handshake`):
                    // the dialing side learns it reached itself and stops.
                    if let Some(s) = self.torrents.get_mut(tid) {
                        let _ = s.t.write_peer_to(key, &mut sock);
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
                match gone {
                    Some((addr, true, _)) if fallback => {
                        debug!("peer#{token} {addr}: MSE failed; trying plaintext");
                        self.dial_methods.note(addr, Dial::Plaintext);
                        if let Some(s) = self.torrents.get_mut(tid) {
                            s.retry.push((Instant::now(), addr));
                        }
                    }
                    Some((addr, true, active)) => self.schedule_retry(tid, addr, active, why),
                    _ => {}
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
            Conn::Udp(mut u) | Conn::TrackerUdp(mut u) | Conn::Dht(mut u) => {
                let _ = self.poll.registry().deregister(&mut u);
            }
        }
    }

    /// Try a dialed peer again later: peers given on the command line until
    /// we are done, tracker peers a few times, with growing back-off.
    fn schedule_retry(
        &mut self,
        tid: TorrentId,
        addr: SocketAddr,
        was_active: bool,
        why: &PeerError,
    ) {
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
        if direct {
            if was_active {
                s.dial_errors.remove(&addr);
            } else {
                let refused = matches!(
                    why,
                    PeerError::Io("connect", io::ErrorKind::ConnectionRefused)
                );
                s.dial_errors.insert(addr, refused);
            }
        }
        if !direct && *n > 5 {
            return;
        }
        let delay = Duration::from_secs(2u64.saturating_pow((*n).min(8)).min(300));
        s.retry.push((Instant::now() + delay, addr));
    }
}
