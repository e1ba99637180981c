//! A receive buffer with a read cursor: sockets append at `end`, frames are
//! consumed from `start`.

use super::MAX_FRAME;
use std::io::{self, Read};

/// See the module docs of `wire` for the picture and the invariants.
#[derive(Debug)]
pub struct RecvBuf {
    /// Allocated lazily on the first read; its length is the capacity.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Size to allocate (and to shrink back to after a large frame).
    cap: usize,
}

impl RecvBuf {
    /// A buffer of `cap` bytes, allocated on the first read.
    pub fn new(cap: usize) -> RecvBuf {
        RecvBuf {
            buf: Vec::new(),
            start: 0,
            end: 0,
            cap,
        }
    }

    /// The unread bytes.
    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Mark `n` unread bytes as used.
    pub fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.len());
        self.start += n.min(self.len());
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.buf.len() > self.cap {
                // A large frame is gone: give its memory back.
                self.buf = vec![0; self.cap];
            }
        }
    }

    /// No free space after the unread bytes: process frames before reading more.
    pub fn is_full(&self) -> bool {
        !self.buf.is_empty() && self.end == self.buf.len()
    }

    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
    }

    /// Make sure one frame of `total` bytes (prefix included) fits. Frames
    /// above `MAX_FRAME + 4` are refused by the decoder before this is asked.
    pub fn reserve_frame(&mut self, total: usize) {
        let total = total.min(MAX_FRAME as usize + 4);
        if self.buf.len() - self.start < total {
            self.compact();
            if self.buf.len() < total {
                self.buf.resize(total, 0);
            }
        }
    }

    /// One `read` into the free tail (compacting first when the tail is
    /// small). `Ok(0)` means end of stream; `WouldBlock` passes through.
    pub fn read_from<R: Read>(&mut self, r: &mut R) -> io::Result<usize> {
        if self.buf.is_empty() {
            self.buf = vec![0; self.cap.max(64)];
        }
        if self.buf.len() - self.end < self.buf.len() / 4 {
            self.compact();
        }
        if self.end == self.buf.len() {
            return Err(io::Error::other("receive buffer full"));
        }
        let n = r.read(&mut self.buf[self.end..])?;
        self.end += n;
        Ok(n)
    }

    /// Test helper: the cursors are consistent.
    pub fn check_invariants(&self) {
        assert!(self.start <= self.end && self.end <= self.buf.len());
        if self.start == self.end {
            assert_eq!(self.start, 0);
        }
    }
}
