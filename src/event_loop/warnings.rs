//! The status the loop shows: the torrent's, plus the warnings only the
//! loop can see (no source of peers, a `--peer` that cannot be reached,
//! every tracker failing, nobody left with the missing pieces).

use super::Session;
use crate::peer::Phase;
use crate::progress::Warnings;
use crate::torrent::Status;
use std::time::{Duration, Instant};

/// Without a connected peer that has a piece we lack for this long, the
/// download counts as stalled.
const STALL_AFTER: Duration = Duration::from_secs(5);

impl Session {
    /// The torrent's status with the loop's warnings (`None` without a
    /// torrent: the stand-alone tracker).
    pub(super) fn status(&mut self, now: Instant) -> Option<Status> {
        let t = self.torrent.as_ref()?;
        let mut s = t.status();
        let useful = t
            .peers
            .iter()
            .any(|(_, p)| p.phase == Phase::Active && t.picker.is_interesting(&p.has));
        if useful || s.left == 0 {
            self.last_useful = now;
        }
        let mut w = Warnings {
            no_peer_source: self.announcer.is_none() && self.opts.peers.is_empty(),
            stalled: now.duration_since(self.last_useful) >= STALL_AFTER,
            ..Warnings::default()
        };
        // `--peer`s we are not connected to whose last dial failed.
        let mut failing = self
            .opts
            .peers
            .iter()
            .filter(|a| !t.is_connected_to(a))
            .filter_map(|a| self.dial_errors.get(a).map(|&refused| (*a, refused)));
        if let Some(first) = failing.next() {
            w.unreachable_peer = Some(first);
            w.more_unreachable = failing.count();
        }
        if let Some(a) = &self.announcer
            && a.failed_rounds() > 0
        {
            w.trackers_failing = Some(a.tiers().iter().map(Vec::len).sum());
        }
        s.warnings = w;
        Some(s)
    }
}
