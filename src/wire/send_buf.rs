//! The per-connection queue of encoded bytes waiting for the socket.

#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

use crate::mse::Cipher;
use std::io;

/// A byte queue with a write cursor: messages are appended at the back,
/// [`write_to`](SendBuf::write_to) drains from the front.
///
/// Bytes `[pos, buf.len())` are queued. When the queue drains completely both
/// go back to zero (keeping the allocation); when the written prefix is at
/// least as long as what is still queued, the rest is moved to the front, so
/// each byte is moved at most about once on average.
///
/// With a [`Cipher`] set (an MSE connection), bytes are encrypted in place
/// just before they are written: `[pos, sealed)` is ciphertext,
/// `[sealed, buf.len())` still plaintext that callers may append to.
#[derive(Debug, Default)]
pub struct SendBuf {
    /// Encoded bytes; the first `pos` have been written already.
    buf: Vec<u8>,
    /// Write cursor.
    pos: usize,
    /// Encrypts what is written, when set.
    cipher: Option<Cipher>,
    /// End of the bytes already encrypted (only meaningful with `cipher`).
    sealed: usize,
}

impl SendBuf {
    /// An empty queue.
    pub fn new() -> Self {
        SendBuf::default()
    }

    /// The queue's backing vector, to append encoded messages to (e.g.
    /// `msg.encode(sb.buf_mut())`). Only append: truncating it would drop
    /// bytes that are already promised to the peer.
    pub fn buf_mut(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// The bytes still to be written.
    pub fn pending(&self) -> &[u8] {
        self.buf.get(self.pos..).unwrap_or_default()
    }

    /// Number of bytes queued.
    pub fn len(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// Bytes allocated for the queue.
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// True when nothing is queued (the socket's `WRITABLE` interest can go).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Encrypt everything not yet written, and all that is queued later,
    /// with `cipher`.
    pub fn set_cipher(&mut self, cipher: Cipher) {
        self.sealed = self.pos;
        self.cipher = Some(cipher);
    }

    /// True when the bytes are encrypted on their way out.
    pub fn is_encrypted(&self) -> bool {
        self.cipher.is_some()
    }

    /// Write queued bytes until the queue is empty or the writer says
    /// `WouldBlock`. Returns the bytes written by this call; `WouldBlock` is
    /// not an error. `Interrupted` is retried; a writer that accepts 0 bytes
    /// is `WriteZero`; other errors pass through (the connection is dead, so
    /// the count of bytes written before it does not matter).
    pub fn write_to<W: io::Write>(&mut self, w: &mut W) -> io::Result<usize> {
        if let Some(c) = self.cipher.as_mut() {
            c.apply(self.buf.get_mut(self.sealed..).unwrap_or_default());
            self.sealed = self.buf.len();
        }
        let mut written = 0;
        let result = loop {
            let pending = self.pending();
            if pending.is_empty() {
                break Ok(written);
            }
            match w.write(pending) {
                Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    let n = n.min(pending.len());
                    self.pos += n;
                    written += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(written),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => break Err(e),
            }
        };
        self.compact();
        result
    }

    /// If nothing is queued and the allocation exceeds `cap` bytes, release
    /// the excess (after a burst, e.g. a large bitfield or many blocks).
    pub fn shrink_if_empty(&mut self, cap: usize) {
        if self.is_empty() && self.buf.capacity() > cap {
            self.buf.clear();
            self.pos = 0;
            self.sealed = 0;
            self.buf.shrink_to(cap);
        }
    }

    /// Assert the cursor invariants (for tests and debug checks).
    pub fn check_invariants(&self) {
        assert!(
            self.pos <= self.buf.len(),
            "write cursor {} past the end {}",
            self.pos,
            self.buf.len()
        );
        assert!(
            self.pos == 0 || self.pos < self.buf.len(),
            "drained queue not reset"
        );
        if self.cipher.is_some() {
            assert!(
                self.pos <= self.sealed && self.sealed <= self.buf.len(),
                "encrypted up to {} outside [{}, {}]",
                self.sealed,
                self.pos,
                self.buf.len()
            );
        }
    }

    /// Reset when drained; move the tail to the front once the written prefix
    /// is at least as long as the tail.
    fn compact(&mut self) {
        let queued = self.len();
        if queued == 0 {
            self.buf.clear();
            self.pos = 0;
            self.sealed = 0;
        } else if self.pos >= queued {
            self.buf.copy_within(self.pos.., 0);
            self.buf.truncate(queued);
            self.sealed -= self.pos.min(self.sealed);
            self.pos = 0;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests may panic
mod tests {
    use super::*;
    use crate::wire::Message;

    /// A writer that accepts at most `chunk` bytes per call and says
    /// `WouldBlock` once every `block_every` calls.
    struct Stingy {
        out: Vec<u8>,
        chunk: usize,
        block_every: usize,
        calls: usize,
    }

    impl io::Write for Stingy {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            self.calls += 1;
            if self.calls.is_multiple_of(self.block_every) {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = self.chunk.min(data.len());
            self.out.extend_from_slice(&data[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn small_writes_and_would_block_deliver_everything_in_order() {
        let mut w = Stingy {
            out: Vec::new(),
            chunk: 7,
            block_every: 4,
            calls: 0,
        };
        let mut sb = SendBuf::new();
        let mut expect = Vec::new();
        for i in 0..500u32 {
            let m = Message::Have { piece: i };
            m.encode(sb.buf_mut());
            m.encode(&mut expect);
            sb.check_invariants();
            if i % 2 == 0 {
                let before = sb.len();
                let n = sb.write_to(&mut w).unwrap();
                assert_eq!(sb.len(), before - n);
                sb.check_invariants();
            }
        }
        while !sb.is_empty() {
            sb.write_to(&mut w).unwrap();
            sb.check_invariants();
        }
        assert_eq!(w.out, expect);
        // Compaction kept the queue from growing with everything ever sent.
        assert!(sb.buf_mut().capacity() < expect.len());
    }

    #[test]
    fn would_block_returns_what_was_written_so_far() {
        let mut w = Stingy {
            out: Vec::new(),
            chunk: 3,
            block_every: 3,
            calls: 0,
        };
        let mut sb = SendBuf::new();
        sb.buf_mut().extend_from_slice(b"0123456789");
        assert_eq!(sb.write_to(&mut w).unwrap(), 6);
        assert_eq!(sb.len(), 4);
        assert_eq!(sb.pending(), b"6789");
        sb.check_invariants();
    }

    #[test]
    fn write_zero_and_hard_errors_are_errors() {
        struct Zero;
        impl io::Write for Zero {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Ok(0)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut sb = SendBuf::new();
        sb.buf_mut().push(1);
        assert_eq!(
            sb.write_to(&mut Zero).unwrap_err().kind(),
            io::ErrorKind::WriteZero
        );
        assert_eq!(sb.len(), 1);
        struct Reset;
        impl io::Write for Reset {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::ConnectionReset.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        assert_eq!(
            sb.write_to(&mut Reset).unwrap_err().kind(),
            io::ErrorKind::ConnectionReset
        );
    }

    #[test]
    fn a_cipher_encrypts_queued_and_later_bytes_exactly_once() {
        let (mut enc, mut dec) = crate::mse::test_ciphers();
        let mut w = Stingy {
            out: Vec::new(),
            chunk: 5,
            block_every: 3,
            calls: 0,
        };
        let mut sb = SendBuf::new();
        let mut expect = Vec::new();
        sb.buf_mut().extend_from_slice(b"queued before the cipher");
        expect.extend_from_slice(b"queued before the cipher");
        sb.set_cipher(enc.take().unwrap());
        assert!(sb.is_encrypted());
        for i in 0..300u32 {
            let m = Message::Have { piece: i };
            m.encode(sb.buf_mut());
            m.encode(&mut expect);
            if i % 3 == 0 {
                sb.write_to(&mut w).unwrap();
                sb.check_invariants();
            }
        }
        while !sb.is_empty() {
            sb.write_to(&mut w).unwrap();
            sb.check_invariants();
        }
        assert_ne!(w.out, expect);
        dec.as_mut().unwrap().apply(&mut w.out);
        assert_eq!(w.out, expect);
    }

    #[test]
    fn empty_queue_writes_nothing_and_shrinks_on_request() {
        let mut sb = SendBuf::new();
        let mut out = Vec::new();
        assert_eq!(sb.write_to(&mut out).unwrap(), 0);
        sb.buf_mut().resize(100_000, 7);
        assert_eq!(sb.write_to(&mut out).unwrap(), 100_000);
        assert!(sb.is_empty());
        sb.shrink_if_empty(1024);
        assert!(sb.buf_mut().capacity() <= 1024);
        sb.check_invariants();
    }
}
