//! Host names to addresses, the sans-IO half: a cache of answers, the
//! table of names being looked up, and the tickets handed to whoever
//! asked. The lookups themselves run on the session's resolver thread
//! (`event_loop/resolver.rs`), which feeds the answers back through
//! [`Dns::on_answer`].
//!
//! Bounds (a tracker list or, later, DHT bootstrap nodes come from
//! strangers' torrents):
//! - at most [`MAX_PENDING`] names are looked up or queued at once; a
//!   request for another new name fails at once ([`Step::Answer`] with an
//!   error) instead of queueing without end. Asking for a name that is
//!   already pending joins it and takes no slot;
//! - at most [`CACHE_CAP`] answers are kept. A success is kept for
//!   [`OK_TTL`], a failure for [`FAIL_TTL`] (a typo is not asked again on
//!   every announce, a DNS hiccup is soon forgotten). When the cache is
//!   full, expired answers go first, then the one that would expire
//!   soonest.
//!
//! IP literals (`10.0.0.1`, `::1`, `[::1]`) are answered at once and never
//! cached or queued.

#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Most names looked up or waiting for the resolver thread at once.
pub const MAX_PENDING: usize = 64;
/// Most answers kept.
pub const CACHE_CAP: usize = 256;
/// Most requests waiting for one pending name (a lookup that never
/// returns would otherwise gather one per retry for ever).
pub const MAX_WAITERS: usize = 256;
/// How long a successful answer is used.
pub const OK_TTL: Duration = Duration::from_secs(5 * 60);
/// How long a failed lookup is remembered (and not asked again).
pub const FAIL_TTL: Duration = Duration::from_secs(30);

/// Names one answer to a [`Dns::lookup`] that could not be given at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ticket(pub u64);

/// The outcome of a lookup: the addresses (with the port asked for), or a
/// one-line reason naming the host.
pub type Answer = Result<Vec<SocketAddr>, String>;

/// What [`Dns::lookup`] says to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Known now (a literal, a cached answer, or a refusal: queue full).
    Answer(Answer),
    /// The name is being looked up already; the answer will carry this
    /// ticket.
    Wait(Ticket),
    /// Look `host` up (send it to the resolver thread); the answer will
    /// carry this ticket.
    Ask(Ticket, String),
}

struct Cached {
    /// Addresses without ports, or the failure.
    ips: Result<Vec<IpAddr>, String>,
    expires: Instant,
}

/// The cache, the pending names and the tickets. See the module docs.
#[derive(Default)]
pub struct Dns {
    /// Lower-case name -> answer. At most [`CACHE_CAP`] entries.
    cache: HashMap<String, Cached>,
    /// Lower-case name -> who waits for it (ticket, port). At most
    /// [`MAX_PENDING`] names.
    pending: HashMap<String, Vec<(Ticket, u16)>>,
    next: u64,
}

/// `host` as an IP address, if it is a literal (IPv6 with or without
/// brackets).
pub fn ip_literal(host: &str) -> Option<IpAddr> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse().ok()
}

impl Dns {
    pub fn new() -> Dns {
        Dns::default()
    }

    /// Where the addresses of `host` come from, with `port` on each.
    pub fn lookup(&mut self, host: &str, port: u16, now: Instant) -> Step {
        if let Some(ip) = ip_literal(host) {
            return Step::Answer(Ok(vec![SocketAddr::new(ip, port)]));
        }
        let key = host.to_ascii_lowercase();
        if let Some(c) = self.cache.get(&key) {
            if c.expires > now {
                return Step::Answer(with_port(&c.ips, port));
            }
            self.cache.remove(&key);
        }
        let ticket = Ticket(self.next);
        if let Some(waiting) = self.pending.get_mut(&key) {
            if waiting.len() >= MAX_WAITERS {
                return Step::Answer(Err(format!(
                    "cannot resolve {host}: still waiting for an earlier lookup"
                )));
            }
            self.next += 1;
            waiting.push((ticket, port));
            return Step::Wait(ticket);
        }
        if self.pending.len() >= MAX_PENDING {
            return Step::Answer(Err(format!(
                "cannot resolve {host}: resolver busy ({MAX_PENDING} names pending)"
            )));
        }
        self.next += 1;
        self.pending.insert(key.clone(), vec![(ticket, port)]);
        Step::Ask(ticket, key)
    }

    /// The lookup of `host` (as given by [`Step::Ask`]) finished: cache
    /// it and give each waiting ticket its answer. An answer nobody asked
    /// for is dropped.
    pub fn on_answer(
        &mut self,
        host: &str,
        ips: Result<Vec<IpAddr>, String>,
        now: Instant,
    ) -> Vec<(Ticket, Answer)> {
        let Some(waiting) = self.pending.remove(host) else {
            return Vec::new();
        };
        let ips = match ips {
            Ok(v) if v.is_empty() => Err(format!("cannot resolve {host}: no address")),
            Ok(v) => Ok(v),
            Err(e) => Err(format!("cannot resolve {host}: {e}")),
        };
        let out = waiting
            .into_iter()
            .map(|(t, port)| (t, with_port(&ips, port)))
            .collect();
        let ttl = if ips.is_ok() { OK_TTL } else { FAIL_TTL };
        self.insert(host.to_string(), ips, now + ttl, now);
        out
    }

    fn insert(
        &mut self,
        key: String,
        ips: Result<Vec<IpAddr>, String>,
        expires: Instant,
        now: Instant,
    ) {
        if !self.cache.contains_key(&key) && self.cache.len() >= CACHE_CAP {
            self.cache.retain(|_, c| c.expires > now);
            if self.cache.len() >= CACHE_CAP
                && let Some(soonest) = self
                    .cache
                    .iter()
                    .min_by_key(|(_, c)| c.expires)
                    .map(|(k, _)| k.clone())
            {
                self.cache.remove(&soonest);
            }
        }
        self.cache.insert(key, Cached { ips, expires });
    }

    /// Names being looked up or queued.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Answers cached (some may have expired).
    pub fn cached(&self) -> usize {
        self.cache.len()
    }

    /// Tests: the bounds hold.
    pub fn check_invariants(&self) {
        assert!(self.pending.len() <= MAX_PENDING);
        assert!(self.cache.len() <= CACHE_CAP);
        assert!(
            self.pending
                .values()
                .all(|w| !w.is_empty() && w.len() <= MAX_WAITERS)
        );
    }
}

fn with_port(ips: &Result<Vec<IpAddr>, String>, port: u16) -> Answer {
    match ips {
        Ok(v) => Ok(v.iter().map(|&ip| SocketAddr::new(ip, port)).collect()),
        Err(e) => Err(e.clone()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn ask(d: &mut Dns, host: &str, port: u16, now: Instant) -> Ticket {
        match d.lookup(host, port, now) {
            Step::Ask(t, h) => {
                assert_eq!(h, host.to_ascii_lowercase());
                t
            }
            other => panic!("expected Ask, got {other:?}"),
        }
    }

    #[test]
    fn ip_literals_are_answered_at_once_and_never_queued() {
        let mut d = Dns::new();
        let now = Instant::now();
        for (host, want) in [
            ("10.0.0.1", "10.0.0.1:80"),
            ("::1", "[::1]:80"),
            ("[::1]", "[::1]:80"),
        ] {
            assert_eq!(
                d.lookup(host, 80, now),
                Step::Answer(Ok(vec![want.parse().unwrap()]))
            );
        }
        assert_eq!((d.pending(), d.cached()), (0, 0));
    }

    #[test]
    fn one_lookup_per_name_answers_every_waiter_with_its_port() {
        let mut d = Dns::new();
        let now = Instant::now();
        let a = ask(&mut d, "Tracker.Example", 80, now);
        let Step::Wait(b) = d.lookup("tracker.example", 6969, now) else {
            panic!("second request should join the first");
        };
        assert_ne!(a, b);
        assert_eq!(d.pending(), 1);
        let answers = d.on_answer("tracker.example", Ok(vec![ip("192.0.2.7")]), now);
        assert_eq!(
            answers,
            vec![
                (a, Ok(vec!["192.0.2.7:80".parse().unwrap()])),
                (b, Ok(vec!["192.0.2.7:6969".parse().unwrap()])),
            ]
        );
        // Cached now: answered at once, any port.
        assert_eq!(
            d.lookup("TRACKER.example", 443, now + Duration::from_secs(60)),
            Step::Answer(Ok(vec!["192.0.2.7:443".parse().unwrap()]))
        );
        d.check_invariants();
    }

    #[test]
    fn successes_live_5_minutes_and_failures_30_seconds() {
        let mut d = Dns::new();
        let t0 = Instant::now();
        ask(&mut d, "good.test", 1, t0);
        ask(&mut d, "bad.test", 1, t0);
        d.on_answer("good.test", Ok(vec![ip("192.0.2.1")]), t0);
        let got = d.on_answer("bad.test", Err("no such host".into()), t0);
        assert_eq!(
            got[0].1,
            Err("cannot resolve bad.test: no such host".to_string())
        );
        let t29 = t0 + Duration::from_secs(29);
        assert!(matches!(d.lookup("bad.test", 1, t29), Step::Answer(Err(_))));
        assert!(matches!(d.lookup("good.test", 1, t29), Step::Answer(Ok(_))));
        let t31 = t0 + Duration::from_secs(31);
        assert!(matches!(d.lookup("bad.test", 1, t31), Step::Ask(..)));
        let t299 = t0 + Duration::from_secs(299);
        assert!(matches!(
            d.lookup("good.test", 1, t299),
            Step::Answer(Ok(_))
        ));
        let t301 = t0 + Duration::from_secs(301);
        assert!(matches!(d.lookup("good.test", 1, t301), Step::Ask(..)));
    }

    #[test]
    fn an_empty_answer_is_a_failure() {
        let mut d = Dns::new();
        let now = Instant::now();
        let t = ask(&mut d, "empty.test", 1, now);
        assert_eq!(
            d.on_answer("empty.test", Ok(vec![]), now),
            vec![(t, Err("cannot resolve empty.test: no address".to_string()))]
        );
    }

    #[test]
    fn past_64_pending_names_a_new_one_fails_at_once() {
        let mut d = Dns::new();
        let now = Instant::now();
        for i in 0..MAX_PENDING {
            ask(&mut d, &format!("h{i}.test"), 1, now);
        }
        match d.lookup("one-too-many.test", 1, now) {
            Step::Answer(Err(e)) => assert!(e.contains("resolver busy"), "{e}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
        // A pending name can still be joined, and a cached one answered.
        assert!(matches!(d.lookup("h3.test", 2, now), Step::Wait(_)));
        d.on_answer("h0.test", Ok(vec![ip("192.0.2.1")]), now);
        assert!(matches!(d.lookup("h0.test", 1, now), Step::Answer(Ok(_))));
        // A slot is free again.
        assert!(matches!(
            d.lookup("one-too-many.test", 1, now),
            Step::Ask(..)
        ));
        d.check_invariants();
    }

    #[test]
    fn a_name_that_never_answers_gathers_at_most_256_waiters() {
        let mut d = Dns::new();
        let now = Instant::now();
        ask(&mut d, "hung.test", 1, now);
        for _ in 1..MAX_WAITERS {
            assert!(matches!(d.lookup("hung.test", 1, now), Step::Wait(_)));
        }
        match d.lookup("hung.test", 1, now) {
            Step::Answer(Err(e)) => assert!(e.contains("still waiting"), "{e}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
        d.check_invariants();
        assert_eq!(
            d.on_answer("hung.test", Ok(vec![ip("192.0.2.9")]), now)
                .len(),
            MAX_WAITERS
        );
    }

    #[test]
    fn unasked_answers_are_dropped() {
        let mut d = Dns::new();
        let now = Instant::now();
        assert!(
            d.on_answer("nobody.test", Ok(vec![ip("192.0.2.1")]), now)
                .is_empty()
        );
        assert_eq!(d.cached(), 0);
    }

    #[test]
    fn a_full_cache_drops_expired_answers_then_the_soonest_to_expire() {
        let mut d = Dns::new();
        let t0 = Instant::now();
        // One failure (expires at 30 s), the rest successes (5 min).
        ask(&mut d, "fail.test", 1, t0);
        d.on_answer("fail.test", Err("x".into()), t0);
        for i in 1..CACHE_CAP {
            let t = t0 + Duration::from_millis(i as u64);
            ask(&mut d, &format!("h{i}.test"), 1, t);
            d.on_answer(&format!("h{i}.test"), Ok(vec![ip("192.0.2.1")]), t);
        }
        assert_eq!(d.cached(), CACHE_CAP);
        // Full, nothing expired: the failure goes first (soonest to expire).
        let t1 = t0 + Duration::from_secs(1);
        ask(&mut d, "new1.test", 1, t1);
        d.on_answer("new1.test", Ok(vec![ip("192.0.2.2")]), t1);
        assert_eq!(d.cached(), CACHE_CAP);
        assert!(matches!(d.lookup("fail.test", 1, t1), Step::Ask(..)));
        d.on_answer("fail.test", Ok(vec![ip("192.0.2.3")]), t1);
        // Then the oldest success (h1, the soonest to expire).
        assert!(matches!(d.lookup("h1.test", 1, t1), Step::Ask(..)));
        assert!(matches!(d.lookup("h2.test", 1, t1), Step::Answer(Ok(_))));
        d.on_answer("h1.test", Ok(vec![ip("192.0.2.1")]), t1);
        // Much later everything old has expired: one insert sweeps them.
        let late = t0 + Duration::from_secs(400);
        ask(&mut d, "late.test", 1, late);
        d.on_answer("late.test", Ok(vec![ip("192.0.2.4")]), late);
        assert!(d.cached() <= CACHE_CAP);
        d.check_invariants();
    }
}
