//! When to announce, to which tracker, with which event (BEP 3, BEP 12).
//!
//! The [`Announcer`] is a pure scheduler: the shell asks
//! [`poll_announce`](Announcer::poll_announce) for the next announce, performs
//! it (see [`super::build_announce_request`]) and reports the outcome with
//! [`on_success`](Announcer::on_success) or
//! [`on_failure`](Announcer::on_failure). At most one announce is in flight.
//!
//! Tiers (BEP 12): each round starts at the first URL of the first tier and
//! walks forward on failure, URL by URL, tier by tier, without waiting. A
//! URL that answers moves to the front of its tier, so the next round starts
//! with it. When every URL of a round failed, the next round waits a back-off
//! of 15 s, 30 s, 60 s, … capped at 30 min.
//!
//! Events: a tracker that has not yet accepted an announce from us in this
//! session gets `started`; after [`set_completed`](Announcer::set_completed)
//! the next announce (sent at once) is `completed`; after
//! [`stop`](Announcer::stop) a single `stopped` goes to the first tracker (in
//! tier order) that knows us, and nothing else is sent.

#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

use std::collections::HashSet;
use std::time::{Duration, Instant};

use super::{AnnounceResponse, Event, TrackerError};

/// First back-off after a round in which every tracker failed.
pub const BACKOFF_FLOOR: Duration = Duration::from_secs(15);
/// Longest back-off.
pub const BACKOFF_CAP: Duration = Duration::from_secs(30 * 60);
/// Shortest time between two announces asked for by
/// [`Announcer::want_peers_now`] when the tracker gave no `min interval`.
pub const DEFAULT_MIN_INTERVAL: Duration = Duration::from_secs(60);

/// The announce handed out by `poll_announce` and not yet answered.
#[derive(Debug, Clone)]
struct InFlight {
    url: String,
    event: Event,
}

/// BEP 12 announce scheduler for one torrent. See the module docs.
#[derive(Debug, Clone)]
pub struct Announcer {
    /// Tiers of URLs, in the order they are tried (no empty tier, no URL
    /// twice).
    tiers: Vec<Vec<String>>,
    /// The URL to try next in this round: `tiers[cursor.0][cursor.1]`
    /// (always valid when `tiers` is not empty).
    cursor: (usize, usize),
    /// When the next regular announce is due.
    next_at: Instant,
    /// The latest `now` seen (lets `set_completed`/`stop` schedule "now").
    last_now: Instant,
    in_flight: Option<InFlight>,
    /// URLs that accepted an announce in this session (they have had
    /// `started`).
    known_by: HashSet<String>,
    /// Rounds in a row in which every URL failed (0 = not backing off).
    failed_rounds: u32,
    /// Time of the last successful announce.
    last_success: Option<Instant>,
    /// The last tracker's `min interval`.
    min_interval: Option<Duration>,
    completed_pending: bool,
    stopping: bool,
    /// The `stopped` announce has been handed out (or none is needed).
    stop_sent: bool,
    /// The `stopped` announce has been answered, failed, or is not needed.
    stop_done: bool,
    tracker_id: Option<Vec<u8>>,
    /// Why the last announce failed (cleared by a success).
    last_error: Option<String>,
    /// xorshift state for back-off jitter; 0 = no jitter.
    rng: u64,
}

impl Announcer {
    /// A scheduler for `tiers` (the metainfo's `announce-list`, or one tier
    /// holding `announce`), with the first (`started`) announce due at `now`.
    /// URLs keep their order; empty tiers and repeated URLs are dropped.
    pub fn new(tiers: Vec<Vec<String>>, now: Instant) -> Self {
        let mut seen = HashSet::new();
        let tiers: Vec<Vec<String>> = tiers
            .into_iter()
            .map(|tier| {
                tier.into_iter()
                    .filter(|url| seen.insert(url.clone()))
                    .collect::<Vec<_>>()
            })
            .filter(|tier| !tier.is_empty())
            .collect();
        Announcer {
            tiers,
            cursor: (0, 0),
            next_at: now,
            last_now: now,
            in_flight: None,
            known_by: HashSet::new(),
            failed_rounds: 0,
            last_success: None,
            min_interval: None,
            completed_pending: false,
            stopping: false,
            stop_sent: false,
            stop_done: false,
            tracker_id: None,
            last_error: None,
            rng: 0,
        }
    }

    /// Like [`new`](Self::new), but shuffles each tier (as BEP 12 asks) and
    /// adds up to 25 % jitter to back-offs, both driven by `seed`.
    pub fn with_seed(tiers: Vec<Vec<String>>, now: Instant, seed: u64) -> Self {
        let mut a = Self::new(tiers, now);
        // Any non-zero state works for xorshift.
        a.rng = seed | 1;
        let mut tiers = std::mem::take(&mut a.tiers);
        for tier in &mut tiers {
            // Fisher-Yates: `j <= i < tier.len()`.
            for i in (1..tier.len()).rev() {
                let j = (a.next_random() % (i as u64 + 1)) as usize;
                tier.swap(i, j);
            }
        }
        a.tiers = tiers;
        a
    }

    /// The tiers in their current order (successful URLs move to the front).
    pub fn tiers(&self) -> &[Vec<String>] {
        &self.tiers
    }

    /// The announce to make now, if one is due and none is in flight:
    /// `(url, event)`. The shell must report its outcome with `on_success`
    /// or `on_failure` (passing the same URL).
    pub fn poll_announce(&mut self, now: Instant) -> Option<(String, Event)> {
        self.last_now = now;
        if self.in_flight.is_some() || self.tiers.is_empty() {
            return None;
        }
        if self.stopping {
            if self.stop_sent {
                return None;
            }
            self.stop_sent = true;
            let url = self
                .tiers
                .iter()
                .flatten()
                .find(|url| self.known_by.contains(*url))?
                .clone();
            return Some(self.hand_out(url, Event::Stopped));
        }
        if now < self.next_at {
            return None;
        }
        // The cursor always names a URL (tiers are never empty).
        let (t, i) = self.cursor;
        let url = self.tiers.get(t).and_then(|tier| tier.get(i))?.clone();
        let event = if !self.known_by.contains(&url) {
            Event::Started
        } else if self.completed_pending {
            Event::Completed
        } else {
            Event::None
        };
        Some(self.hand_out(url, event))
    }

    fn hand_out(&mut self, url: String, event: Event) -> (String, Event) {
        self.in_flight = Some(InFlight {
            url: url.clone(),
            event,
        });
        (url, event)
    }

    /// Take the in-flight announce if it is for `url`; reports about
    /// anything else (stale, or abandoned by `stop`) are ignored.
    fn take_in_flight(&mut self, url: &str) -> Option<InFlight> {
        if self.in_flight.as_ref().is_some_and(|f| f.url == url) {
            self.in_flight.take()
        } else {
            None
        }
    }

    /// The tracker at `url` answered. Schedules the next announce after its
    /// interval (at least its `min interval`), moves `url` to the front of
    /// its tier, ends any back-off and remembers its `tracker id`.
    pub fn on_success(&mut self, now: Instant, url: &str, resp: &AnnounceResponse) {
        self.last_now = now;
        let Some(done) = self.take_in_flight(url) else {
            return;
        };
        self.known_by.insert(done.url.clone());
        if let Some(id) = &resp.tracker_id {
            self.tracker_id = Some(id.clone());
        }
        match done.event {
            Event::Stopped => {
                self.stop_done = true;
                return;
            }
            Event::Completed => self.completed_pending = false,
            Event::Started | Event::None => {}
        }
        let (t, i) = self.cursor;
        if let Some(tier) = self.tiers.get_mut(t)
            && tier.get(i).is_some_and(|u| *u == url)
        {
            let moved = tier.remove(i);
            tier.insert(0, moved);
        }
        self.cursor = (0, 0);
        self.failed_rounds = 0;
        self.last_error = None;
        self.last_success = Some(now);
        self.min_interval = resp.min_interval.map(|s| Duration::from_secs(s.into()));
        let wait = resp.interval.max(resp.min_interval.unwrap_or(0));
        self.next_at = now + Duration::from_secs(wait.into());
    }

    /// The announce to `url` failed (network error, bad response, or a
    /// `failure reason`). Moves on to the next URL at once; when the whole
    /// round failed, backs off. A failed `stopped` is not retried.
    pub fn on_failure(&mut self, now: Instant, url: &str, err: &TrackerError) {
        self.last_now = now;
        let Some(done) = self.take_in_flight(url) else {
            return;
        };
        log::debug!("announce to {url} failed: {err}");
        self.last_error = Some(err.to_string());
        if done.event == Event::Stopped {
            self.stop_done = true;
            return;
        }
        let (t, i) = self.cursor;
        if self.tiers.get(t).is_some_and(|tier| i + 1 < tier.len()) {
            self.cursor = (t, i + 1);
            self.next_at = now;
        } else if t + 1 < self.tiers.len() {
            self.cursor = (t + 1, 0);
            self.next_at = now;
        } else {
            self.cursor = (0, 0);
            self.failed_rounds = self.failed_rounds.saturating_add(1);
            let delay = self.backoff();
            log::info!("no tracker answered; backing off for {} s", delay.as_secs());
            self.next_at = now + delay;
        }
    }

    /// Why the last announce failed, unless one succeeded since.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// Rounds in a row in which every tracker failed (0: the last round
    /// reached one, or none is over yet).
    pub fn failed_rounds(&self) -> u32 {
        self.failed_rounds
    }

    /// The back-off after `failed_rounds` failed rounds, with jitter.
    fn backoff(&mut self) -> Duration {
        let doublings = self.failed_rounds.saturating_sub(1).min(16);
        let base = BACKOFF_FLOOR
            .saturating_mul(1u32 << doublings)
            .min(BACKOFF_CAP);
        if self.rng == 0 {
            return base;
        }
        let quarter_ms = (base.as_millis() / 4) as u64;
        let jitter = self.next_random() % (quarter_ms + 1);
        base + Duration::from_millis(jitter)
    }

    fn next_random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    /// We are running low on peers: announce early, but not before the
    /// tracker's `min interval` (or [`DEFAULT_MIN_INTERVAL`]) since the last
    /// success. Does nothing while backing off or stopping.
    pub fn want_peers_now(&mut self, now: Instant) {
        self.last_now = now;
        if self.stopping || self.failed_rounds > 0 {
            return;
        }
        let Some(last) = self.last_success else {
            // The first announce is already due.
            return;
        };
        let earliest = last + self.min_interval.unwrap_or(DEFAULT_MIN_INTERVAL);
        self.next_at = self.next_at.min(earliest.max(now));
    }

    /// The download finished: the next announce, made at once unless we are
    /// backing off, carries `completed`.
    pub fn set_completed(&mut self) {
        if self.completed_pending || self.stopping {
            return;
        }
        self.completed_pending = true;
        if self.failed_rounds == 0 {
            self.next_at = self.next_at.min(self.last_now);
        }
    }

    /// Forget the announce to `url` in flight, with no penalty (the torrent
    /// was paused and its connection closed).
    pub fn abandon(&mut self, url: &str) {
        self.take_in_flight(url);
    }

    /// A `completed` announce is owed and the trackers have not failed since:
    /// a process about to exit should wait a moment for it (else `stopped`
    /// follows `started` and the swarm never learns of the completion).
    pub fn completed_owed(&self) -> bool {
        self.completed_pending && !self.stopping && self.failed_rounds == 0
    }

    /// The torrent is stopping: any in-flight announce is abandoned (the
    /// shell should drop its connection; a late report is ignored), and one
    /// `stopped` announce is handed out next — if any tracker knows us.
    pub fn stop(&mut self) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        self.in_flight = None;
        if !self
            .tiers
            .iter()
            .flatten()
            .any(|u| self.known_by.contains(u))
        {
            self.stop_sent = true;
            self.stop_done = true;
        }
    }

    /// True once `stop` was called and the `stopped` announce has been
    /// handed out by `poll_announce` (or none is needed).
    pub fn is_stopped_sent(&self) -> bool {
        self.stopping && self.stop_sent
    }

    /// True once `stop` was called and the `stopped` announce has been
    /// answered or has failed (or none was needed): nothing more to do.
    pub fn is_finished(&self) -> bool {
        self.stopping && self.stop_done
    }

    /// True while an announce handed out by `poll_announce` is unanswered.
    pub fn in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    /// When `poll_announce` should next be called; `None` while an announce
    /// is in flight or there is nothing left to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.in_flight.is_some() || self.tiers.is_empty() {
            return None;
        }
        if self.stopping {
            return (!self.stop_sent).then_some(self.last_now);
        }
        Some(self.next_at)
    }

    /// The `tracker id` from the latest response that carried one, to echo
    /// in later announces.
    pub fn tracker_id(&self) -> Option<&[u8]> {
        self.tracker_id.as_deref()
    }
}

#[cfg(test)]
#[path = "announcer_tests.rs"]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests may panic
mod tests;
