//! What the session keeps beside each torrent core: its announcer, the
//! peers to dial and retry, the flush back-off, and its end conditions.

use super::{COMPLETED_WAIT, TorrentId, TorrentOptions};
use crate::candidates::Candidates;
use crate::storage::{Disk, StorageError};
use crate::torrent::{Torrent, jobs};
use crate::tracker::Announcer;
use log::info;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// One torrent and what the shell keeps for it.
pub(super) struct Slot {
    pub(super) t: Torrent,
    /// The torrent's files: the shell carries out its storage jobs here.
    pub(super) disk: Disk,
    /// The buffer pieces are hashed in while the torrent checks its data.
    check_buf: Vec<u8>,
    pub(super) opts: TorrentOptions,
    pub(super) announcer: Option<Announcer>,
    /// Peer addresses to try, from the trackers and the command line.
    pub(super) candidates: Candidates,
    /// Dialed peers that closed or failed, and when to try them again.
    pub(super) retry: Vec<(Instant, SocketAddr)>,
    /// Consecutive failed attempts per dialed address.
    pub(super) failures: HashMap<SocketAddr, u32>,
    /// Peers given on the command line whose last dial failed before the
    /// handshake, and whether they refused (for the status line's warning).
    pub(super) dial_errors: HashMap<SocketAddr, bool>,
    pub(super) flush_retry_at: Option<Instant>,
    pub(super) flush_backoff: Duration,
    pub(super) was_done: bool,
    pub(super) seeding_since: Option<Instant>,
    pub(super) paused: bool,
    /// Reached its end (done, ratio or time); kept until the session ends.
    pub(super) finished: bool,
    /// Being removed: its `stopped` announce is on the way.
    pub(super) removing: Option<Instant>,
    /// Dropped: why (nothing to seed).
    pub(super) error: Option<String>,
    /// This torrent's own upload limit (its bucket gets the lower of this
    /// and its share of the session's).
    pub(super) up_limit: Option<u64>,
    /// Started from a magnet link: its `.torrent` file once the metadata
    /// is known.
    pub(super) torrent_file: Option<Vec<u8>>,
}

/// What a torrent does once its magnet link's metadata is known.
pub(super) enum Arrived {
    /// Its files are open; it downloads (after a check of what is there).
    Downloading { checking: bool },
    /// It stops: only the metadata was wanted, or it failed (`error`).
    Stop,
}

impl Slot {
    pub(super) fn new(t: Torrent, disk: Disk, opts: TorrentOptions, now: Instant) -> Slot {
        let announcer = (!opts.tracker_tiers.is_empty()).then(|| {
            // BEP 12: each tier shuffled; back-offs jittered.
            Announcer::with_seed(opts.tracker_tiers.clone(), now, seed_of(&t))
        });
        let mut candidates = Candidates::new();
        for &p in &opts.peers {
            candidates.push(p, now);
        }
        let was_done = t.is_done();
        let t_up_limit = t.up_bucket.rate();
        Slot {
            t,
            disk,
            check_buf: Vec::new(),
            opts,
            announcer,
            candidates,
            retry: Vec::new(),
            failures: HashMap::new(),
            dial_errors: HashMap::new(),
            flush_retry_at: None,
            flush_backoff: Duration::from_secs(1),
            was_done,
            seeding_since: was_done.then_some(now),
            paused: false,
            finished: false,
            removing: None,
            error: None,
            up_limit: t_up_limit,
            torrent_file: None,
        }
    }

    /// Check the end conditions; true once the torrent has reached one.
    pub(super) fn check_finished(&mut self, now: Instant) -> bool {
        if self.finished {
            return true;
        }
        if !self.t.is_done() {
            return false;
        }
        if !self.was_done {
            self.was_done = true;
            self.seeding_since = Some(now);
            info!("download complete: every piece verified and written");
            if let Some(a) = &mut self.announcer {
                a.set_completed();
            }
        }
        if self.opts.exit_when_done {
            // Tell the trackers first (at most COMPLETED_WAIT).
            let waiting = self.announcer.as_ref().is_some_and(|a| a.completed_owed())
                && self
                    .seeding_since
                    .is_some_and(|s| now.duration_since(s) < COMPLETED_WAIT);
            self.finished = !waiting;
        } else if let Some(ratio) = self.opts.seed_ratio
            // Counters only: this runs every loop turn.
            && self.t.totals.uploaded as f64 >= ratio * self.t.geometry.total_len as f64
        {
            info!("seed ratio {ratio} reached");
            self.finished = true;
        } else if let (Some(limit), Some(since)) = (self.opts.seed_time, self.seeding_since)
            && now.duration_since(since) >= limit
        {
            info!("seed time reached");
            self.finished = true;
        }
        self.finished
    }

    /// Write verified pieces under the per-turn budget. After a failure
    /// (a full disk) the next try waits: 1 s, doubling up to 8 s, so a
    /// disk that stays full costs a few wake-ups, not a spinning loop.
    /// Leave resume data (on a clean stop, after every verified piece is
    /// written and synced): not while its data is being checked, nor for
    /// a magnet link still without its metadata, nor when a file is gone.
    pub(super) fn save_resume(&self) {
        let Some(path) = &self.opts.resume_file else {
            return;
        };
        if self.t.is_checking() || !self.t.has_metadata() {
            return;
        }
        let Some(files) = self.disk.stamps() else {
            return;
        };
        match crate::storage::resume::save(path, &self.t.info_hash, &self.t.flushed, &files) {
            Ok(()) => log::debug!(
                "{}: resume data saved ({} pieces)",
                self.name(),
                self.t.flushed.count()
            ),
            Err(e) => log::warn!("could not save resume data to {}: {e}", path.display()),
        }
    }

    /// A download that exits when done, done, and not yet finished: it
    /// waits only for its `completed` announce.
    pub(super) fn finished_waiting(&self) -> bool {
        self.opts.exit_when_done && !self.finished && self.t.is_done()
    }

    /// True when these writes finished the download (every piece is now
    /// verified and on disk): the end conditions are then worth a look at
    /// once, not at the next periodic check.
    pub(super) fn flush(&mut self, now: Instant) -> bool {
        if self.flush_retry_at.is_some_and(|at| now < at) {
            return false;
        }
        let was_done = self.t.is_done();
        let max = self.t.cfg.flush_per_turn;
        match jobs::write_pending(&mut self.t, &self.disk, max, now) {
            Ok(_) => {
                self.flush_retry_at = None;
                self.flush_backoff = Duration::from_secs(1);
            }
            Err(_) => {
                self.flush_retry_at = Some(now + self.flush_backoff);
                self.flush_backoff = (self.flush_backoff * 2).min(Duration::from_secs(8));
            }
        }
        !was_done && self.t.is_done()
    }

    /// The check of the data on disk has ended: a seed with none of its
    /// data is dropped; one with part of it says so.
    pub(super) fn checked(&mut self, now: Instant) {
        let st = self.t.status();
        info!(
            "{}: {} of {} pieces already verified on disk",
            self.name(),
            st.have,
            st.num_pieces
        );
        if let Some(msg) = &self.opts.nothing_to_seed {
            if st.have == 0 && st.num_pieces > 0 {
                self.error = Some(msg.clone());
                self.finished = true;
                self.paused = true;
                return;
            }
            if st.have < st.num_pieces {
                log::warn!(
                    "seeding {} with {} of {} pieces present",
                    self.name(),
                    st.have,
                    st.num_pieces
                );
            }
        }
        self.was_done = self.t.is_done();
        if self.was_done {
            self.seeding_since = Some(now);
        }
    }

    /// The metadata of a magnet link's torrent was fetched and verified:
    /// parse it with the same validating parser as a `.torrent` file, then
    /// open the files and take the torrent's shape (or stop, for `info`).
    pub(super) fn metadata_arrived(&mut self, info: &[u8], now: Instant) -> Arrived {
        let Some(start) = self.opts.magnet.clone() else {
            return Arrived::Stop;
        };
        let file = crate::metainfo::Metainfo::file_bytes(info, &start.tiers);
        let meta = match crate::metainfo::Metainfo::from_bytes(&file) {
            Ok(m) => m,
            Err(e) => {
                return self.stop_with(format!(
                    "{}: the metadata is not a valid torrent: {e}",
                    self.name()
                ));
            }
        };
        info!(
            "{}: metadata received: {} ({} bytes in {} pieces)",
            crate::metainfo::hex(&self.t.info_hash),
            meta.info.name,
            meta.info.total_len,
            meta.info.pieces.len()
        );
        self.opts.name = meta.info.name.clone();
        self.torrent_file = Some(file);
        let Some(open) = &start.open else {
            self.finished = true;
            return Arrived::Stop;
        };
        match open(&meta) {
            Ok((disk, have)) => {
                self.disk = disk;
                let n = meta.geometry().num_pieces;
                let checking = have.is_none();
                let have = have.unwrap_or_else(|| crate::bitfield::Bitfield::new(n));
                let parts = crate::torrent::TorrentParts::of(&meta, have, self.t.our_id);
                self.t.set_metainfo(parts, checking, seed_of(&self.t), now);
                Arrived::Downloading { checking }
            }
            Err(msg) => self.stop_with(msg),
        }
    }

    /// Drop the torrent with `msg` as its error.
    fn stop_with(&mut self, msg: String) -> Arrived {
        log::warn!("{msg}");
        self.error = Some(msg);
        self.finished = true;
        Arrived::Stop
    }

    /// The torrent's name for log lines (its info-hash when it has none).
    pub(super) fn name(&self) -> String {
        if self.opts.name.is_empty() {
            crate::metainfo::hex(&self.t.info_hash)
        } else {
            self.opts.name.clone()
        }
    }

    /// Write everything verified (pausing, removing, exiting).
    pub(super) fn write_all(&mut self, now: Instant) -> Result<(), StorageError> {
        while self.t.has_pending_writes() {
            jobs::write_pending(&mut self.t, &self.disk, usize::MAX, now)?;
        }
        Ok(())
    }

    /// Do the reads queued for seeding (bounded: each completion may queue
    /// the next read of a waiting peer).
    pub(super) fn read_pending(&mut self) {
        if self.t.has_read_jobs() {
            jobs::read_pending(&mut self.t, &self.disk, READS_PER_CALL);
        }
    }

    /// Serve a peer whose socket drained, doing the reads it needs.
    pub(super) fn serve(&mut self, key: crate::ids::PeerKey) -> Result<(), crate::peer::PeerError> {
        self.t.serve(key)?;
        self.read_pending();
        Ok(())
    }

    /// Check the torrent's data until `deadline` (about 4 MiB per call at
    /// most). True once the check is over.
    pub(super) fn check_slice(&mut self, deadline: Instant, now: Instant) -> bool {
        jobs::check_slice(
            &mut self.t,
            &self.disk,
            &mut self.check_buf,
            4 << 20,
            deadline,
            now,
        )
    }
}

/// A seed for a torrent's random choices (tracker order, the picker's
/// ties): its peer id and info-hash mixed.
fn seed_of(t: &Torrent) -> u64 {
    t.our_id
        .iter()
        .chain(t.info_hash.iter())
        .fold(0u64, |h, &b| h.rotate_left(8) ^ b as u64)
}

/// Most reads for seeding one call does: more than the torrent queues at
/// once ([`crate::torrent::MAX_READ_JOBS`]), fewer than a runaway.
const READS_PER_CALL: usize = 64;

/// The session's torrents, keyed by [`TorrentId`] (the only place that
/// makes one from a slab key).
#[derive(Default)]
pub(super) struct Torrents(slab::Slab<Slot>);

impl Torrents {
    pub(super) fn insert(&mut self, s: Slot) -> TorrentId {
        TorrentId(self.0.insert(s))
    }
    pub(super) fn get(&self, id: TorrentId) -> Option<&Slot> {
        self.0.get(id.0)
    }
    pub(super) fn get_mut(&mut self, id: TorrentId) -> Option<&mut Slot> {
        self.0.get_mut(id.0)
    }
    pub(super) fn try_remove(&mut self, id: TorrentId) -> Option<Slot> {
        self.0.try_remove(id.0)
    }
    pub(super) fn contains(&self, id: TorrentId) -> bool {
        self.0.contains(id.0)
    }
    pub(super) fn len(&self) -> usize {
        self.0.len()
    }
    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub(super) fn iter(&self) -> impl Iterator<Item = (TorrentId, &Slot)> {
        self.0.iter().map(|(k, s)| (TorrentId(k), s))
    }
    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = (TorrentId, &mut Slot)> {
        self.0.iter_mut().map(|(k, s)| (TorrentId(k), s))
    }
}
