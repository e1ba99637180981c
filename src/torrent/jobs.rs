//! Carrying out a torrent's storage jobs: the only code that touches a
//! torrent's [`Storage`]. The event loop calls these with the files
//! ([`crate::storage::Disk`]) and decides when they run; tests call them
//! with [`crate::storage::MemStorage`] to drive a torrent with no files.
//!
//! A `Torrent` never reads or writes itself: it queues verified segments to
//! write, reads to serve peers, and pieces to check, and learns the
//! outcome from `write_done`, `read_done` and `checked`.

#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

use super::Torrent;
use crate::storage::{Storage, StorageError};
use std::time::Instant;

/// Write queued verified segments, oldest first, until about `max_bytes`
/// were written or none is left. Returns the bytes written; the first
/// error stops the batch (the segment stays queued).
pub fn write_pending(
    t: &mut Torrent,
    store: &impl Storage,
    max_bytes: usize,
    now: Instant,
) -> Result<usize, StorageError> {
    let mut bytes = 0;
    while bytes < max_bytes {
        let Some(job) = t.next_write() else {
            break;
        };
        let len = job.data.len();
        let r = store.write_at(job.offset, &job.data);
        t.write_done(job, r.as_ref().map(|_| ()));
        if let Err(e) = r {
            t.after_writes(now);
            return Err(e);
        }
        bytes += len;
    }
    t.after_writes(now);
    Ok(bytes)
}

/// Do the reads queued for seeding, at most `max_jobs` of them (each
/// completion may queue the next read of a waiting peer). Returns how many
/// were done.
pub fn read_pending(t: &mut Torrent, store: &impl Storage, max_jobs: usize) -> usize {
    let mut done = 0;
    while done < max_jobs {
        let Some(mut job) = t.next_read() else {
            break;
        };
        let r = store.read_at(job.offset, &mut job.data);
        t.read_done(job, r);
        done += 1;
    }
    done
}

/// Check pieces until about `max_bytes` were read (at least one piece) or
/// `deadline` passed, hashing into `buf`
/// ([`crate::storage::check_buffer`]). True once the check is over.
pub fn check_slice(
    t: &mut Torrent,
    store: &impl Storage,
    buf: &mut Vec<u8>,
    max_bytes: usize,
    deadline: Instant,
    now: Instant,
) -> bool {
    if !t.is_checking() {
        return true;
    }
    if buf.is_empty() {
        *buf = crate::storage::check_buffer(&t.geometry);
    }
    let mut read = 0;
    while read == 0 || (read < max_bytes && Instant::now() < deadline) {
        let Some(p) = t.next_check() else {
            t.finish_check(now);
            *buf = Vec::new();
            return true;
        };
        let ok = crate::storage::check_piece(store, &t.geometry, t.piece_hashes(), p, buf);
        t.checked(p, ok);
        read += t.geometry.piece_size(p) as usize;
    }
    false
}
