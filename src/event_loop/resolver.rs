//! Host names resolved off the loop: one resolver thread, started on the
//! first name that is not an IP literal or cached, runs the system
//! resolver (`ToSocketAddrs`: `/etc/hosts`, nsswitch, DNS) one name at a
//! time. Names reach it through a bounded queue ([`dns::MAX_PENDING`]);
//! answers come back through a shared list, and the thread wakes the poll
//! with the session's `mio::Waker`. The loop drains them
//! ([`Resolver::drain`]) when the waker fires. The cache, the queue bound
//! and the tickets are the sans-IO [`crate::dns::Dns`].
//!
//! One thread means one slow name delays the names queued behind it (not
//! the loop, nor anything with an IP literal or a cached answer). A lookup
//! that never returns holds the thread; the announces waiting for it time
//! out as usual.

use crate::dns::{self, Answer, Dns, Step, Ticket};
use log::debug;
use mio::Waker;
use std::io;
use std::net::{IpAddr, ToSocketAddrs};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The function that turns a host name into addresses, run on the
/// resolver thread. The default is the system resolver; tests give one
/// that sleeps or answers from a table.
#[derive(Clone)]
pub struct LookupFn(pub Arc<LookupFnInner>);

/// A host name in, its addresses out (blocking; runs on the resolver
/// thread).
pub type LookupFnInner = dyn Fn(&str) -> io::Result<Vec<IpAddr>> + Send + Sync;

impl std::fmt::Debug for LookupFn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LookupFn")
    }
}

impl LookupFn {
    /// The system resolver (`getaddrinfo` through `ToSocketAddrs`).
    pub fn system() -> LookupFn {
        LookupFn(Arc::new(|host: &str| {
            Ok((host, 0).to_socket_addrs()?.map(|a| a.ip()).collect())
        }))
    }
}

/// What [`Resolver::resolve`] gives.
#[derive(Debug)]
pub enum Lookup {
    /// Known now (a literal, a cached answer, or a refusal).
    Ready(Answer),
    /// The answer comes later through [`Resolver::drain`] with this ticket.
    Pending(Ticket),
}

type Answers = Arc<Mutex<Vec<(String, Result<Vec<IpAddr>, String>)>>>;

/// The session's resolver: see the module docs.
pub struct Resolver {
    dns: Dns,
    lookup: LookupFn,
    waker: Arc<Waker>,
    /// To the thread (bounded: [`dns::MAX_PENDING`]); None until started.
    queue: Option<SyncSender<String>>,
    answers: Answers,
}

impl Resolver {
    pub fn new(lookup: LookupFn, waker: Arc<Waker>) -> Resolver {
        Resolver {
            dns: Dns::new(),
            lookup,
            waker,
            queue: None,
            answers: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Resolve `host` for `port`: at once when it is a literal or cached,
    /// else a ticket whose answer [`drain`](Self::drain) gives later.
    pub fn resolve(&mut self, host: &str, port: u16, now: Instant) -> Lookup {
        match self.dns.lookup(host, port, now) {
            Step::Answer(a) => Lookup::Ready(a),
            Step::Wait(t) => Lookup::Pending(t),
            Step::Ask(t, name) => {
                if let Err(e) = self.send(name.clone()) {
                    // Answer through the core so the name leaves the table.
                    let mut out = self.dns.on_answer(&name, Err(e), now);
                    if let Some((_, a)) = out.pop() {
                        return Lookup::Ready(a);
                    }
                }
                debug!("resolving {name}");
                Lookup::Pending(t)
            }
        }
    }

    fn send(&mut self, name: String) -> Result<(), String> {
        if self.queue.is_none() {
            self.queue = Some(
                self.start()
                    .map_err(|e| format!("no resolver thread: {e}"))?,
            );
        }
        let Some(q) = &self.queue else {
            return Err("no resolver thread".into());
        };
        match q.try_send(name) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err("resolver queue full".into()),
            Err(TrySendError::Disconnected(_)) => {
                self.queue = None;
                Err("resolver thread gone".into())
            }
        }
    }

    fn start(&self) -> io::Result<SyncSender<String>> {
        let (tx, rx) = std::sync::mpsc::sync_channel(dns::MAX_PENDING);
        let lookup = self.lookup.clone();
        let answers = self.answers.clone();
        let waker = self.waker.clone();
        std::thread::Builder::new()
            .name("resolver".into())
            .spawn(move || resolver_thread(&rx, &lookup, &answers, &waker))?;
        Ok(tx)
    }

    /// Answers that arrived since the last call (cached on the way).
    pub fn drain(&mut self, now: Instant) -> Vec<(Ticket, Answer)> {
        let arrived = match self.answers.lock() {
            Ok(mut a) => std::mem::take(&mut *a),
            Err(_) => return Vec::new(),
        };
        let mut out = Vec::new();
        for (name, ips) in arrived {
            out.extend(self.dns.on_answer(&name, ips, now));
        }
        out
    }

    /// Names being looked up or queued.
    pub fn pending(&self) -> usize {
        self.dns.pending()
    }
}

/// Look names up until the session drops its sender.
fn resolver_thread(rx: &Receiver<String>, lookup: &LookupFn, answers: &Answers, waker: &Waker) {
    while let Ok(name) = rx.recv() {
        let ips = (lookup.0)(&name).map_err(|e| e.to_string());
        if let Ok(mut a) = answers.lock() {
            a.push((name, ips));
        }
        let _ = waker.wake();
    }
}
