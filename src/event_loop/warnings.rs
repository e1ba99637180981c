//! The status the loop shows: the torrents' (summed), plus the warnings
//! only the loop can see (no source of peers, a `--peer` that cannot be
//! reached, every tracker failing, nobody left with the missing pieces).

use super::{Session, aggregate};
use crate::peer::Phase;
use crate::progress::Warnings;
use crate::torrent::Status;
use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

/// Most (tracker, message) pairs remembered as shown.
const MAX_NOTES: usize = 256;

/// The `failure reason`s and `warning message`s shown to the user so
/// far, by (tracker URL, text): each is shown once, not on every
/// re-announce. At most [`MAX_NOTES`]; the oldest is forgotten first (a
/// tracker that makes up a new text each time gets a line per announce,
/// minutes apart).
#[derive(Default)]
pub(super) struct TrackerNotes {
    seen: HashSet<(String, String)>,
    order: VecDeque<(String, String)>,
}

impl TrackerNotes {
    /// Remember (url, text); true the first time.
    pub(super) fn first_time(&mut self, url: &str, text: &str) -> bool {
        let key = (url.to_string(), text.to_string());
        if self.seen.contains(&key) {
            return false;
        }
        if self.order.len() >= MAX_NOTES
            && let Some(old) = self.order.pop_front()
        {
            self.seen.remove(&old);
        }
        self.seen.insert(key.clone());
        self.order.push_back(key);
        true
    }
}

/// Without a connected peer that has a piece we lack for this long, the
/// download counts as stalled.
const STALL_AFTER: Duration = Duration::from_secs(5);

impl Session {
    /// The torrents' status with the loop's warnings (`None` without a
    /// torrent: the stand-alone tracker).
    pub(super) fn status(&mut self, now: Instant) -> Option<Status> {
        let slots: Vec<&super::Slot> = self
            .order
            .iter()
            .filter_map(|&id| self.torrents.get(id))
            .collect();
        let statuses: Vec<Status> = slots.iter().map(|s| s.t.status()).collect();
        let mut s = aggregate(&statuses)?;
        let useful = slots.iter().any(|slot| {
            let t = &slot.t;
            t.peers()
                .any(|(_, p)| p.phase == Phase::Active && t.picker.is_interesting(&p.has))
        });
        if useful || s.left == 0 || s.checking.is_some() {
            self.last_useful = now;
        }
        let mut w = Warnings {
            // The DHT is a peer source for public torrents once it knows a node.
            no_peer_source: slots.iter().all(|slot| {
                slot.announcer.is_none()
                    && slot.opts.peers.is_empty()
                    && (self.dht_nodes().is_none_or(|n| n == 0) || slot.t.is_private())
            }),
            dht_nodes: self.dht_nodes(),
            stalled: now.duration_since(self.last_useful) >= STALL_AFTER,
            ..Warnings::default()
        };
        // `--peer`s we are not connected to whose last dial failed.
        let mut failing = slots.iter().flat_map(|slot| {
            slot.opts
                .peers
                .iter()
                .filter(|a| !slot.t.is_connected_to(a))
                .filter_map(|a| slot.dial_errors.get(a).map(|&refused| (*a, refused)))
        });
        if let Some(first) = failing.next() {
            w.unreachable_peer = Some(first);
            w.more_unreachable = failing.count();
        }
        let failing: Vec<&crate::tracker::Announcer> = slots
            .iter()
            .filter_map(|slot| slot.announcer.as_ref())
            .filter(|a| a.failed_rounds() > 0)
            .collect();
        let failing_trackers: usize = failing
            .iter()
            .map(|a| a.tiers().iter().map(Vec::len).sum::<usize>())
            .sum();
        if failing_trackers > 0 {
            w.trackers_failing = Some(failing_trackers);
            if let Some(e) = failing.iter().find_map(|a| a.last_error()) {
                w.last_tracker_error = crate::progress::Note::new(e);
            }
        }
        s.warnings = w;
        Some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_tracker_message_is_new_once_and_the_table_is_capped() {
        let mut n = TrackerNotes::default();
        assert!(n.first_time("http://a/", "go away"));
        assert!(!n.first_time("http://a/", "go away"));
        assert!(n.first_time("http://b/", "go away"));
        assert!(n.first_time("http://a/", "come back"));
        for i in 0..MAX_NOTES {
            n.first_time("http://flood/", &format!("text {i}"));
        }
        assert_eq!(n.order.len(), MAX_NOTES);
        assert_eq!(n.seen.len(), MAX_NOTES);
        // The oldest were forgotten.
        assert!(n.first_time("http://a/", "go away"));
    }
}
