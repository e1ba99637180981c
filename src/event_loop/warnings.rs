//! The status the loop shows: the torrents' (summed), plus the warnings
//! only the loop can see (no source of peers, a `--peer` that cannot be
//! reached, every tracker failing, nobody left with the missing pieces).

use super::{Session, aggregate};
use crate::peer::Phase;
use crate::progress::Warnings;
use crate::torrent::Status;
use std::time::{Duration, Instant};

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
            t.peers
                .iter()
                .any(|(_, p)| p.phase == Phase::Active && t.picker.is_interesting(&p.has))
        });
        if useful || s.left == 0 || s.checking.is_some() {
            self.last_useful = now;
        }
        let mut w = Warnings {
            no_peer_source: slots
                .iter()
                .all(|slot| slot.announcer.is_none() && slot.opts.peers.is_empty()),
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
        let failing_trackers: usize = slots
            .iter()
            .filter_map(|slot| slot.announcer.as_ref())
            .filter(|a| a.failed_rounds() > 0)
            .map(|a| a.tiers().iter().map(Vec::len).sum::<usize>())
            .sum();
        if failing_trackers > 0 {
            w.trackers_failing = Some(failing_trackers);
        }
        s.warnings = w;
        Some(s)
    }
}
