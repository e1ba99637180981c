//! Stream-level tests: whole connections' worth of bytes through a `RecvBuf`,
//! split at every offset, fed byte by byte, and random garbage.

use std::io;

use super::*;

/// A deterministic xorshift64* generator, enough for fuzzing.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn fill(&mut self, out: &mut [u8]) {
        for b in out {
            *b = self.next() as u8;
        }
    }
}

/// A reader serving `chunks` in order, at most `max_read` bytes per call,
/// answering `WouldBlock` once at every chunk boundary, then EOF.
struct Chunks<'a> {
    chunks: Vec<&'a [u8]>,
    max_read: usize,
    blocked: bool,
}

impl io::Read for Chunks<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.chunks.first().is_some_and(|c| c.is_empty()) {
            self.chunks.remove(0);
            if !std::mem::replace(&mut self.blocked, true) {
                return Err(io::ErrorKind::WouldBlock.into());
            }
        }
        self.blocked = false;
        let Some(chunk) = self.chunks.first_mut() else {
            return Ok(0);
        };
        let n = chunk.len().min(out.len()).min(self.max_read);
        out[..n].copy_from_slice(&chunk[..n]);
        *chunk = &chunk[n..];
        Ok(n)
    }
}

/// What a connection decoded: the handshake, every message re-encoded, the
/// message count, and how many bytes of an incomplete frame were left at EOF.
#[derive(Debug, PartialEq, Eq)]
struct Decoded {
    handshake: Option<Handshake>,
    reencoded: Vec<u8>,
    messages: usize,
    leftover: usize,
}

/// Run the engine's read loop over `r`: read into a `RecvBuf` of `cap`
/// bytes, decode the handshake then frames, growing for big frames and
/// shrinking back when drained.
fn drive(r: &mut impl io::Read, cap: usize) -> Result<Decoded, DecodeError> {
    let mut rb = RecvBuf::new(cap);
    let mut d = Decoded {
        handshake: None,
        reencoded: Vec::new(),
        messages: 0,
        leftover: 0,
    };
    loop {
        match rb.read_from(r) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("read: {e}"),
        }
        rb.check_invariants();
        if d.handshake.is_none() {
            match Handshake::decode(rb.data())? {
                Some(h) => {
                    d.handshake = Some(h);
                    rb.consume(HANDSHAKE_LEN);
                }
                None => continue,
            }
        }
        loop {
            match decode_frame(rb.data(), MAX_FRAME)? {
                Some((m, used)) => {
                    assert_eq!(used, m.encoded_len());
                    m.encode(&mut d.reencoded);
                    d.messages += 1;
                    rb.consume(used);
                }
                None => {
                    if let Some(total) = frame_len_hint(rb.data()) {
                        rb.reserve_frame(total);
                    }
                    break;
                }
            }
        }
        rb.shrink_if_empty(cap);
        rb.check_invariants();
    }
    d.leftover = rb.len();
    Ok(d)
}

fn handshake() -> Handshake {
    Handshake {
        reserved: [0, 0, 0, 0, 0, 0x10, 0, 0],
        info_hash: *b"0123456789abcdefghij",
        peer_id: *b"-PM0001-zyxwvutsrqpo",
    }
}

fn block(seed: u8) -> Vec<u8> {
    (0..16 * 1024u32)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// A valid conversation: handshake, then every message type including three
/// 16 KiB blocks. Returns (stream, bytes after the handshake, message count).
fn sample_stream() -> (Vec<u8>, Vec<u8>, usize) {
    let blocks = [block(1), block(2), block(3)];
    let bits = [0xffu8; 40];
    let msgs = [
        Message::Bitfield(&bits),
        Message::Unknown {
            id: 20,
            payload: b"\x00d1:md6:ut_pexi1eee",
        },
        Message::Port(6881),
        Message::KeepAlive,
        Message::Interested,
        Message::Unchoke,
        Message::Request {
            piece: 0,
            begin: 0,
            len: 16384,
        },
        Message::Piece {
            piece: 0,
            begin: 0,
            data: &blocks[0],
        },
        Message::Have { piece: 9 },
        Message::Piece {
            piece: 0,
            begin: 16384,
            data: &blocks[1],
        },
        Message::Cancel {
            piece: 0,
            begin: 32768,
            len: 16384,
        },
        Message::Have { piece: 10 },
        Message::Piece {
            piece: 1,
            begin: 0,
            data: &blocks[2],
        },
        Message::Piece {
            piece: 1,
            begin: 16384,
            data: b"short last block",
        },
        Message::NotInterested,
        Message::Choke,
        Message::KeepAlive,
    ];
    let mut stream = Vec::new();
    handshake().encode(&mut stream);
    let mut body = Vec::new();
    for m in &msgs {
        m.encode(&mut body);
    }
    stream.extend_from_slice(&body);

    // Sanity: decoding the whole body in place yields exactly `msgs`.
    let mut rest = &body[..];
    for want in &msgs {
        let (got, used) = decode_frame(rest, MAX_FRAME).unwrap().unwrap();
        assert_eq!(&got, want);
        rest = &rest[used..];
    }
    assert!(rest.is_empty());
    (stream, body, msgs.len())
}

#[test]
fn stream_in_one_piece_decodes_to_the_same_messages() {
    let (stream, body, count) = sample_stream();
    let mut r = Chunks {
        chunks: vec![&stream],
        max_read: usize::MAX,
        blocked: false,
    };
    let d = drive(&mut r, 64 * 1024).unwrap();
    assert_eq!(d.handshake, Some(handshake()));
    assert_eq!(d.messages, count);
    assert_eq!(d.reencoded, body);
    assert_eq!(d.leftover, 0);
}

#[test]
fn stream_split_at_every_offset_decodes_to_the_same_messages() {
    let (stream, body, count) = sample_stream();
    let want = Decoded {
        handshake: Some(handshake()),
        reencoded: body,
        messages: count,
        leftover: 0,
    };
    for split in 0..=stream.len() {
        let (a, b) = stream.split_at(split);
        let mut r = Chunks {
            chunks: vec![a, b],
            max_read: usize::MAX,
            blocked: false,
        };
        // A 16 KiB buffer is smaller than a block frame, so this also
        // exercises growing for a big frame and shrinking back.
        let d = drive(&mut r, 16 * 1024).unwrap();
        assert!(d == want, "split at {split}");
    }
}

#[test]
fn stream_fed_one_byte_at_a_time_decodes_to_the_same_messages() {
    let (stream, body, count) = sample_stream();
    let mut r = Chunks {
        chunks: vec![&stream],
        max_read: 1,
        blocked: false,
    };
    let d = drive(&mut r, 1024).unwrap();
    assert_eq!(d.handshake, Some(handshake()));
    assert_eq!(d.messages, count);
    assert_eq!(d.reencoded, body);
    assert_eq!(d.leftover, 0);
}

#[test]
fn stream_in_random_chunks_decodes_to_the_same_messages() {
    let (stream, body, count) = sample_stream();
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for _ in 0..200 {
        let mut chunks = Vec::new();
        let mut rest = &stream[..];
        while !rest.is_empty() {
            let n = (rng.below(6000) as usize + 1).min(rest.len());
            chunks.push(&rest[..n]);
            rest = &rest[n..];
        }
        let mut r = Chunks {
            chunks,
            max_read: rng.below(20_000) as usize + 1,
            blocked: false,
        };
        let cap = rng.below(40_000) as usize;
        let d = drive(&mut r, cap).unwrap();
        assert_eq!(d.messages, count);
        assert_eq!(d.reencoded, body);
        assert_eq!(d.leftover, 0);
    }
}

#[test]
fn largest_allowed_frame_grows_the_buffer_and_decodes() {
    let bits = vec![0xa5u8; MAX_FRAME as usize - 1];
    let mut stream = Vec::new();
    handshake().encode(&mut stream);
    Message::Have { piece: 1 }.encode(&mut stream);
    let body_start = stream.len() - 9;
    Message::Bitfield(&bits).encode(&mut stream);
    Message::Unchoke.encode(&mut stream);
    let mut r = Chunks {
        chunks: vec![&stream],
        max_read: 64 * 1024,
        blocked: false,
    };
    let d = drive(&mut r, 16 * 1024).unwrap();
    assert_eq!(d.messages, 3);
    assert_eq!(d.leftover, 0);
    assert_eq!(d.reencoded, &stream[body_start..]);
}

#[test]
fn hostile_length_stops_the_stream_before_the_body_arrives() {
    let mut stream = Vec::new();
    handshake().encode(&mut stream);
    Message::Have { piece: 1 }.encode(&mut stream);
    stream.extend_from_slice(&(MAX_FRAME + 1).to_be_bytes());
    // No body follows: the error must come from the prefix alone.
    let mut r = Chunks {
        chunks: vec![&stream],
        max_read: 1,
        blocked: false,
    };
    assert_eq!(
        drive(&mut r, 256),
        Err(DecodeError::FrameTooLong {
            len: MAX_FRAME + 1,
            max: MAX_FRAME
        })
    );
}

#[test]
fn random_bytes_never_panic_and_accepted_frames_re_encode_exactly() {
    let mut rng = XorShift(0x1234_5678_9abc_def1);
    let mut buf = [0u8; 64];
    let mut accepted = 0;
    for _ in 0..300_000 {
        let len = rng.below(buf.len() as u64 + 1) as usize;
        let bytes = &mut buf[..len];
        rng.fill(bytes);
        match rng.below(3) {
            // A plausible small length prefix and a known or nearby id.
            0 if len >= 5 => {
                let frame = rng.below(24) as u32;
                bytes[..4].copy_from_slice(&frame.to_be_bytes());
                bytes[4] = rng.below(22) as u8;
            }
            // Something that starts like a handshake.
            1 if len >= 1 => {
                let mut hs = Vec::new();
                handshake().encode(&mut hs);
                let keep = len.min(hs.len());
                bytes[..keep].copy_from_slice(&hs[..keep]);
                if rng.below(2) == 0 {
                    let at = rng.below(keep as u64) as usize;
                    bytes[at] ^= 1 << rng.below(8);
                }
            }
            _ => {}
        }
        let bytes = &buf[..len];
        let max = if rng.below(2) == 0 {
            MAX_FRAME
        } else {
            rng.below(32) as u32
        };
        match decode_frame(bytes, max) {
            Ok(Some((m, used))) => {
                accepted += 1;
                assert!(used <= bytes.len());
                assert_eq!(frame_len_hint(bytes), Some(used));
                let mut again = Vec::new();
                m.encode(&mut again);
                assert_eq!(again, &bytes[..used]);
            }
            Ok(None) => {
                assert!(frame_len_hint(bytes).is_none_or(|t| t > bytes.len()));
            }
            Err(DecodeError::FrameTooLong { len, max: m }) => {
                assert!(len > m);
                assert_eq!(m, max);
            }
            Err(DecodeError::BadLength { id, .. }) => assert_eq!(bytes.get(4), Some(&id)),
            Err(DecodeError::BadHandshake) => panic!("frames never report a bad handshake"),
        }
        match Handshake::decode(bytes) {
            Ok(Some(h)) => {
                let mut again = Vec::new();
                h.encode(&mut again);
                assert_eq!(again, &bytes[..HANDSHAKE_LEN]);
            }
            Ok(None) => assert!(bytes.len() < HANDSHAKE_LEN),
            Err(e) => assert_eq!(e, DecodeError::BadHandshake),
        }
    }
    // The generator must actually reach the message parser.
    assert!(accepted > 10_000, "only {accepted} frames accepted");
}

#[test]
fn random_streams_through_recv_buf_never_panic() {
    let mut rng = XorShift(0xdead_beef_cafe_f00d);
    let mut stream = Vec::new();
    let mut hs = Vec::new();
    handshake().encode(&mut hs);
    for _ in 0..3000 {
        stream.clear();
        stream.extend_from_slice(&hs);
        // Random frames with small declared lengths, sometimes mismatched.
        for _ in 0..rng.below(12) {
            let body = rng.below(30) as usize;
            let declared = if rng.below(4) == 0 {
                rng.below(40) as u32
            } else {
                body as u32
            };
            stream.extend_from_slice(&declared.to_be_bytes());
            let start = stream.len();
            stream.resize(start + body, 0);
            rng.fill(&mut stream[start..]);
            if body > 0 {
                stream[start] = rng.below(22) as u8;
            }
        }
        let cut = rng.below(stream.len() as u64 + 1) as usize;
        let mut r = Chunks {
            chunks: vec![&stream[..cut], &stream[cut..]],
            max_read: rng.below(64) as usize + 1,
            blocked: false,
        };
        // A clean decode (perhaps with a partial frame left at EOF) or a
        // decode error; anything else is a panic and fails the test.
        if let Ok(d) = drive(&mut r, 128) {
            assert!(d.leftover < stream.len());
        }
    }
}

/// Bytes in memory read as from a socket: at most `max` bytes a call,
/// and a vectored read fills its buffers in turn, as `readv` does (the
/// default `read_vectored` fills only the first). Tests of the torrent
/// core read through it too.
pub(crate) struct Readv<'a> {
    pub bytes: &'a [u8],
    pub max: usize,
}

impl io::Read for Readv<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        self.read_vectored(&mut [io::IoSliceMut::new(out)])
    }
    fn read_vectored(&mut self, bufs: &mut [io::IoSliceMut<'_>]) -> io::Result<usize> {
        let mut n = 0;
        for b in bufs {
            let take = b.len().min(self.max - n).min(self.bytes.len());
            b[..take].copy_from_slice(&self.bytes[..take]);
            self.bytes = &self.bytes[take..];
            n += take;
        }
        Ok(n)
    }
}

#[test]
fn read_with_fills_the_block_first_then_the_buffer_in_stream_order() {
    let stream: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
    for encrypted in [false, true] {
        let key = [3u8; 20];
        let wire: Vec<u8> = if encrypted {
            let mut w = stream.clone();
            crate::mse::Cipher::new(&key).apply(&mut w);
            w
        } else {
            stream.clone()
        };
        let mut rb = RecvBuf::new(1024);
        if encrypted {
            rb.set_cipher(crate::mse::Cipher::new(&key));
        }
        let mut r = Readv {
            bytes: &wire,
            max: 700,
        };
        // 1000 bytes of "block" first: the first read fills 700 of them.
        let mut block = vec![0u8; 1000];
        assert_eq!(rb.read_with(&mut r, &mut block).unwrap(), (700, 0));
        // The next fills the other 300 and 400 of what follows.
        assert_eq!(rb.read_with(&mut r, &mut block[700..]).unwrap(), (300, 400));
        assert_eq!(block, stream[..1000]);
        assert_eq!(rb.data(), &stream[1000..1400]);
        // Nothing left for the block: a plain read.
        assert_eq!(rb.read_with(&mut r, &mut []).unwrap(), (0, 624));
        assert_eq!(rb.data(), &stream[1000..2024]);
        rb.check_invariants();
    }
}
