//! An output queue: encoded messages are appended, the socket drains it.

use std::io::{self, Write};

/// Bytes `[pos, buf.len())` are still to be written.
#[derive(Debug, Default)]
pub struct SendBuf {
    buf: Vec<u8>,
    pos: usize,
}

impl SendBuf {
    pub fn new() -> SendBuf {
        SendBuf::default()
    }

    /// Append encoded messages here.
    pub fn buf_mut(&mut self) -> &mut Vec<u8> {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        &mut self.buf
    }

    /// Bytes waiting to be written.
    pub fn len(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Write until the queue is empty or the writer would block. Returns the
    /// bytes written; `WouldBlock` is not an error.
    pub fn write_to<W: Write>(&mut self, w: &mut W) -> io::Result<usize> {
        let mut written = 0;
        while self.pos < self.buf.len() {
            match w.write(&self.buf[self.pos..]) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "socket accepted nothing")),
                Ok(n) => {
                    self.pos += n;
                    written += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
            if self.buf.capacity() > 1 << 20 {
                self.buf.shrink_to(256 << 10);
            }
        } else if self.pos > 64 * 1024 && self.pos * 2 > self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        Ok(written)
    }

    /// Test helper: the cursor is within the buffer.
    pub fn check_invariants(&self) {
        assert!(self.pos <= self.buf.len());
    }
}
