//! The per-connection receive buffer that socket bytes land in.
//!
//! See the module docs of [`crate::wire`] for the cursor diagram.

#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

use crate::mse::Cipher;
use std::io;

use super::MAX_FRAME;

/// Smallest capacity [`RecvBuf::new`] hands out: room for a handshake and a
/// few small frames, so a read can always make progress.
pub const MIN_RECV_CAPACITY: usize = 128;

/// Largest capacity a [`RecvBuf`] ever has: one frame of [`MAX_FRAME`] bytes
/// plus its length prefix.
pub const MAX_RECV_CAPACITY: usize = MAX_FRAME as usize + 4;

/// Below this many unread bytes, compacting before a read is always worth it.
const CHEAP_MOVE: usize = 512;

/// A fixed-capacity byte buffer with read (`start`) and write (`end`) cursors.
///
/// Bytes `[start, end)` are unread; `[end, capacity)` is the free tail that
/// the next [`read_from`](RecvBuf::read_from) fills. Decoders borrow from
/// [`data`](RecvBuf::data) and the caller [`consume`](RecvBuf::consume)s what
/// they used. The capacity only changes on request: [`reserve_frame`]
/// grows it (up to [`MAX_RECV_CAPACITY`]) so one big frame fits, and
/// [`shrink_if_empty`](RecvBuf::shrink_if_empty) gives the memory back.
///
/// [`reserve_frame`]: RecvBuf::reserve_frame
#[derive(Debug)]
pub struct RecvBuf {
    /// Storage; `buf.len()` is the capacity (the bytes are always initialised).
    buf: Vec<u8>,
    /// First unread byte.
    start: usize,
    /// One past the last unread byte.
    end: usize,
    /// Decrypts each read's new bytes in place (an MSE connection).
    cipher: Option<Cipher>,
}

impl RecvBuf {
    /// An empty buffer of `cap` bytes, clamped to
    /// [`MIN_RECV_CAPACITY`]`..=`[`MAX_RECV_CAPACITY`].
    pub fn new(cap: usize) -> Self {
        RecvBuf {
            buf: vec![0; clamp_cap(cap)],
            start: 0,
            end: 0,
            cipher: None,
        }
    }

    /// An empty, unallocated buffer: a placeholder while the real one is
    /// taken out to be decoded (no allocation in the hot path).
    pub const fn placeholder() -> Self {
        RecvBuf {
            buf: Vec::new(),
            start: 0,
            end: 0,
            cipher: None,
        }
    }

    /// The unread bytes.
    pub fn data(&self) -> &[u8] {
        // start <= end <= buf.len() is an invariant; `get` keeps this panic-free.
        self.buf.get(self.start..self.end).unwrap_or_default()
    }

    /// Number of unread bytes.
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// True when there are no unread bytes.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Current capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// True when the unread bytes fill the whole capacity, so no read can be
    /// made even after compaction. If the frame at the front is incomplete,
    /// [`reserve_frame`](RecvBuf::reserve_frame) is the way out.
    pub fn is_full(&self) -> bool {
        self.len() == self.buf.len()
    }

    /// Mark the first `n` unread bytes as used.
    ///
    /// # Panics
    /// If `n > self.len()` — a bug in the caller, not something a peer can cause.
    pub fn consume(&mut self, n: usize) {
        assert!(
            n <= self.len(),
            "consume({n}) with only {} bytes unread",
            self.len()
        );
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Decrypt every byte read from now on (in place, as it arrives); the
    /// bytes already in the buffer stay as they are.
    pub fn set_cipher(&mut self, cipher: Cipher) {
        self.cipher = Some(cipher);
    }

    /// True when reads are decrypted.
    pub fn is_encrypted(&self) -> bool {
        self.cipher.is_some()
    }

    /// Do one `read()` into the free tail, compacting first if the tail is
    /// small. Returns the number of bytes read; `Ok(0)` means EOF. `WouldBlock`
    /// and other errors pass through (`Interrupted` is retried).
    ///
    /// Calling it on a full buffer ([`is_full`](RecvBuf::is_full)) is an
    /// error of kind `Other` rather than `Ok(0)`, so it can never be mistaken
    /// for EOF.
    pub fn read_from<R: io::Read>(&mut self, r: &mut R) -> io::Result<usize> {
        self.compact_for_read();
        let free = self.buf.get_mut(self.end..).unwrap_or_default();
        if free.is_empty() {
            return Err(io::Error::other("receive buffer is full"));
        }
        loop {
            match r.read(free) {
                Ok(n) => {
                    // A conforming reader never reports more than it was given.
                    let n = n.min(free.len());
                    if let Some(c) = self.cipher.as_mut() {
                        c.apply(free.get_mut(..n).unwrap_or_default());
                    }
                    self.end += n;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Like [`read_from`](RecvBuf::read_from), but one vectored read
    /// (`readv`) fills `first` before the free tail: the rest of a block
    /// goes straight to its place in a piece buffer, and what follows it
    /// lands here in the same call. Returns the bytes put in `first` and
    /// the bytes put here; both are decrypted (in stream order) on an MSE
    /// connection. `Ok((0, 0))` means EOF.
    pub fn read_with<R: io::Read>(
        &mut self,
        r: &mut R,
        first: &mut [u8],
    ) -> io::Result<(usize, usize)> {
        if first.is_empty() {
            return self.read_from(r).map(|n| (0, n));
        }
        self.compact_for_read();
        let free = self.buf.get_mut(self.end..).unwrap_or_default();
        loop {
            let mut bufs = [io::IoSliceMut::new(first), io::IoSliceMut::new(free)];
            match r.read_vectored(&mut bufs) {
                Ok(n) => {
                    let a = n.min(first.len());
                    let b = (n - a).min(free.len());
                    if let Some(c) = self.cipher.as_mut() {
                        c.apply(first.get_mut(..a).unwrap_or_default());
                        c.apply(free.get_mut(..b).unwrap_or_default());
                    }
                    self.end += b;
                    return Ok((a, b));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Compact before a read when the free tail is small (or moving what
    /// is unread costs next to nothing).
    fn compact_for_read(&mut self) {
        let tail = self.buf.len() - self.end;
        if self.start > 0 && (tail < self.buf.len() / 2 || self.len() <= CHEAP_MOVE) {
            self.compact();
        }
    }

    /// Make sure a frame of `total` bytes (prefix included, as given by
    /// [`frame_len_hint`](super::frame_len_hint)) starting at the read cursor
    /// fits, growing the capacity if needed. `total` is clamped to
    /// [`MAX_RECV_CAPACITY`]; the decoder refuses anything longer before this
    /// is ever called.
    pub fn reserve_frame(&mut self, total: usize) {
        let total = total.min(MAX_RECV_CAPACITY);
        if self.start + total <= self.buf.len() {
            return;
        }
        self.compact();
        if total > self.buf.len() {
            self.buf.resize(total, 0);
        }
    }

    /// Grow to `cap` (clamped like [`new`](RecvBuf::new)) if smaller: a
    /// connection starts small and grows once data flows.
    pub fn grow_to(&mut self, cap: usize) {
        let cap = clamp_cap(cap);
        if self.buf.len() < cap {
            self.buf.resize(cap, 0);
        }
    }

    /// If no bytes are unread and the capacity has grown past `cap`
    /// (clamped like [`new`](RecvBuf::new)), shrink back to it.
    pub fn shrink_if_empty(&mut self, cap: usize) {
        if !self.is_empty() {
            return;
        }
        let cap = clamp_cap(cap);
        if self.buf.len() > cap {
            self.buf.truncate(cap);
            self.buf.shrink_to_fit();
        }
    }

    /// Assert the cursor invariants (for tests and debug checks).
    pub fn check_invariants(&self) {
        assert!(
            self.start <= self.end,
            "start {} > end {}",
            self.start,
            self.end
        );
        assert!(
            self.end <= self.buf.len(),
            "end {} > capacity {}",
            self.end,
            self.buf.len()
        );
        assert!(
            self.start != self.end || self.start == 0,
            "empty buffer with cursors at {}",
            self.start
        );
        assert!(
            (MIN_RECV_CAPACITY..=MAX_RECV_CAPACITY).contains(&self.buf.len()),
            "capacity {} out of range",
            self.buf.len()
        );
    }

    /// Move the unread bytes to the front.
    fn compact(&mut self) {
        if self.start == 0 {
            return;
        }
        self.buf.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
    }
}

fn clamp_cap(cap: usize) -> usize {
    cap.clamp(MIN_RECV_CAPACITY, MAX_RECV_CAPACITY)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests may panic
mod tests {
    use super::*;

    /// A reader that serves `data` in chunks of at most `chunk` bytes, and
    /// answers `WouldBlock` on every other call.
    struct Trickle<'a> {
        data: &'a [u8],
        chunk: usize,
        block_next: bool,
        calls: usize,
    }

    impl io::Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            self.calls += 1;
            if std::mem::take(&mut self.block_next) {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.block_next = true;
            let n = self.chunk.min(out.len()).min(self.data.len());
            out[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn small_reads_and_would_block_deliver_every_byte_in_order() {
        let src = pattern(5000);
        let mut r = Trickle {
            data: &src,
            chunk: 7,
            block_next: false,
            calls: 0,
        };
        let mut rb = RecvBuf::new(200);
        let mut got = Vec::new();
        let mut would_blocks = 0;
        loop {
            match rb.read_from(&mut r) {
                Ok(0) => break,
                Ok(n) => assert!(n <= 7),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => would_blocks += 1,
                Err(e) => panic!("{e}"),
            }
            rb.check_invariants();
            // Consume in odd-sized bites, leaving partial "frames" behind.
            let take = rb.len().min(11);
            if rb.len() >= 11 || r.data.is_empty() {
                got.extend_from_slice(&rb.data()[..take]);
                rb.consume(take);
            }
            rb.check_invariants();
        }
        got.extend_from_slice(rb.data());
        assert_eq!(got, src);
        assert!(would_blocks > 100);
        assert_eq!(rb.capacity(), 200);
    }

    #[test]
    fn a_cipher_decrypts_each_read_in_place_once() {
        let (mut enc, dec) = crate::mse::test_ciphers();
        let plain = pattern(5000);
        let mut wire_bytes = plain.clone();
        let mut rb = RecvBuf::new(256);
        // The first bytes arrive before the cipher is set (plaintext).
        rb.read_from(&mut &b"abc"[..]).unwrap();
        rb.set_cipher(dec.unwrap());
        assert!(rb.is_encrypted());
        enc.as_mut().unwrap().apply(&mut wire_bytes);
        let mut src = &wire_bytes[..];
        let mut got = Vec::new();
        while got.len() < plain.len() + 3 {
            let mut chunk = &src[..src.len().min(77)];
            let n = rb.read_from(&mut chunk).unwrap();
            src = &src[n..];
            got.extend_from_slice(rb.data());
            rb.consume(rb.len());
            rb.check_invariants();
        }
        assert_eq!(&got[..3], b"abc");
        assert_eq!(&got[3..], &plain[..]);
    }

    #[test]
    fn eof_reads_zero() {
        let mut rb = RecvBuf::new(64);
        assert_eq!(rb.read_from(&mut &b""[..]).unwrap(), 0);
        assert!(rb.is_empty());
        rb.check_invariants();
    }

    #[test]
    fn full_buffer_is_an_error_not_eof() {
        let src = pattern(1000);
        let mut rb = RecvBuf::new(MIN_RECV_CAPACITY);
        let mut r = &src[..];
        assert_eq!(rb.read_from(&mut r).unwrap(), MIN_RECV_CAPACITY);
        assert!(rb.is_full());
        let err = rb.read_from(&mut r).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::Other);
        rb.check_invariants();
    }

    #[test]
    fn read_compacts_when_the_tail_is_small() {
        let src = pattern(1000);
        let mut r = &src[..];
        let mut rb = RecvBuf::new(MIN_RECV_CAPACITY);
        rb.read_from(&mut r).unwrap();
        rb.consume(100); // 28 unread at the back, no free tail
        assert_eq!(rb.read_from(&mut r).unwrap(), 100);
        assert!(rb.is_full());
        assert_eq!(rb.data(), &src[100..228]);
        rb.check_invariants();
    }

    #[test]
    fn reserve_frame_grows_to_fit_one_big_frame_and_shrinks_back() {
        let total = MAX_FRAME as usize + 4;
        let src = pattern(total + 10);
        let mut rb = RecvBuf::new(32 * 1024);
        let mut r = &src[..];
        rb.read_from(&mut r).unwrap();
        rb.consume(5);
        assert!(!rb.is_full());
        rb.reserve_frame(total);
        assert!(rb.capacity() >= total);
        while rb.len() < total {
            assert!(rb.read_from(&mut r).unwrap() > 0);
            rb.check_invariants();
        }
        assert_eq!(rb.capacity(), MAX_RECV_CAPACITY);
        assert_eq!(&rb.data()[..total], &src[5..5 + total]);
        // Asking for more than the maximum is clamped, never a panic.
        rb.reserve_frame(usize::MAX);
        assert_eq!(rb.capacity(), MAX_RECV_CAPACITY);
        // Shrinking waits until the buffer is empty.
        rb.shrink_if_empty(32 * 1024);
        assert_eq!(rb.capacity(), MAX_RECV_CAPACITY);
        rb.consume(rb.len());
        rb.shrink_if_empty(32 * 1024);
        assert_eq!(rb.capacity(), 32 * 1024);
        rb.check_invariants();
    }

    #[test]
    fn reserve_frame_compacts_when_the_frame_would_overrun_the_end() {
        let src = pattern(300);
        let mut r = &src[..];
        let mut rb = RecvBuf::new(256);
        rb.read_from(&mut r).unwrap();
        rb.consume(200);
        rb.reserve_frame(200);
        assert_eq!(rb.capacity(), 256);
        assert_eq!(rb.data(), &src[200..256]);
        rb.read_from(&mut r).unwrap();
        assert_eq!(rb.data(), &src[200..300]);
        rb.check_invariants();
    }

    #[test]
    fn a_small_buffer_grows_without_losing_unread_bytes() {
        let src = pattern(1000);
        let mut r = &src[..];
        let mut rb = RecvBuf::new(256);
        rb.read_from(&mut r).unwrap();
        rb.consume(100);
        assert!(!rb.is_full());
        rb.grow_to(1024);
        assert_eq!(rb.capacity(), 1024);
        rb.read_from(&mut r).unwrap();
        assert_eq!(rb.data(), &src[100..1000]);
        rb.grow_to(512); // never shrinks
        assert_eq!(rb.capacity(), 1024);
        rb.check_invariants();
    }

    #[test]
    fn capacity_is_clamped() {
        assert_eq!(RecvBuf::new(0).capacity(), MIN_RECV_CAPACITY);
        assert_eq!(RecvBuf::new(usize::MAX).capacity(), MAX_RECV_CAPACITY);
    }

    #[test]
    #[should_panic(expected = "consume")]
    fn consuming_more_than_unread_is_a_caller_bug() {
        RecvBuf::new(128).consume(1);
    }
}
