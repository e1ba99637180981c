use super::*;
use std::io::{self, Read, Write};

fn sample_messages(data: &[u8]) -> Vec<Message<'_>> {
    vec![
        Message::Bitfield(&[0xff, 0x80]),
        Message::Unchoke,
        Message::Interested,
        Message::KeepAlive,
        Message::Have { piece: 7 },
        Message::Request { piece: 1, begin: 16384, len: 16384 },
        Message::Piece { piece: 1, begin: 0, data },
        Message::Piece { piece: 2, begin: 16384, data: &data[..100] },
        Message::Cancel { piece: 3, begin: 0, len: 16384 },
        Message::Port(6881),
        Message::Unknown { id: 20, payload: b"d1:md6:ut_pexi1eee" },
        Message::NotInterested,
        Message::Choke,
    ]
}

fn stream(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    Handshake { reserved: [0; 8], info_hash: [1; 20], peer_id: [2; 20] }.encode(&mut out);
    for m in sample_messages(data) {
        m.encode(&mut out);
    }
    out
}

/// Decode a whole stream held in `buf`: handshake, then frames.
fn decode_all(buf: &[u8]) -> (Option<Handshake>, Vec<Message<'_>>, usize) {
    let Some(hs) = Handshake::decode(buf).unwrap() else {
        return (None, Vec::new(), 0);
    };
    let mut at = HANDSHAKE_LEN;
    let mut msgs = Vec::new();
    while let Some((m, n)) = decode_frame(&buf[at..], MAX_FRAME).unwrap() {
        msgs.push(m);
        at += n;
    }
    (Some(hs), msgs, at)
}

#[test]
fn every_message_round_trips() {
    let data: Vec<u8> = (0..16384u32).map(|i| i as u8).collect();
    let bytes = stream(&data);
    let (hs, msgs, used) = decode_all(&bytes);
    assert_eq!(hs.unwrap().peer_id, [2; 20]);
    assert_eq!(msgs, sample_messages(&data));
    assert_eq!(used, bytes.len());
}

/// A reader that hands out the stream in fixed chunks, with WouldBlock
/// between them, like a non-blocking socket.
struct Chunky<'a> {
    data: &'a [u8],
    pos: usize,
    sizes: Vec<usize>,
    turn: usize,
    block_next: bool,
}

impl Read for Chunky<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.block_next {
            self.block_next = false;
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.block_next = true;
        let size = self.sizes[self.turn % self.sizes.len()];
        self.turn += 1;
        let n = size.min(out.len()).min(self.data.len() - self.pos);
        out[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Feed `bytes` through a RecvBuf with the given read sizes and collect
/// the encoded form of every decoded message.
fn via_recv_buf(bytes: &[u8], sizes: Vec<usize>, cap: usize) -> Vec<u8> {
    let mut r = Chunky { data: bytes, pos: 0, sizes, turn: 0, block_next: false };
    let mut rb = RecvBuf::new(cap);
    let mut out = Vec::new();
    let mut handshaken = false;
    loop {
        match rb.read_from(&mut r) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => panic!("{e}"),
        }
        rb.check_invariants();
        if !handshaken {
            match Handshake::decode(rb.data()).unwrap() {
                Some(h) => {
                    h.encode(&mut out);
                    rb.consume(HANDSHAKE_LEN);
                    handshaken = true;
                }
                None => continue,
            }
        }
        loop {
            match decode_frame(rb.data(), MAX_FRAME).unwrap() {
                Some((m, n)) => {
                    m.encode(&mut out);
                    rb.consume(n);
                }
                None => {
                    if let Some(need) = frame_len_hint(rb.data()) {
                        rb.reserve_frame(need);
                    }
                    break;
                }
            }
        }
        rb.check_invariants();
    }
    out
}

#[test]
fn same_messages_whatever_the_split_points() {
    let data: Vec<u8> = (0..16384u32).map(|i| (i * 7) as u8).collect();
    let bytes = stream(&data);
    for split in 0..=bytes.len() {
        let first = split.max(1);
        let out = via_recv_buf(&bytes, vec![first, bytes.len()], 32 * 1024);
        assert_eq!(out, bytes, "split at {split}");
    }
    assert_eq!(via_recv_buf(&bytes, vec![1], 32 * 1024), bytes, "one byte at a time");
    assert_eq!(via_recv_buf(&bytes, vec![3, 5, 4093], 100), bytes, "small buffer grows for big frames");
}

#[test]
fn oversized_prefix_is_refused_from_four_bytes() {
    assert_eq!(
        decode_frame(&[0xff, 0xff, 0xff, 0xff], MAX_FRAME),
        Err(DecodeError::FrameTooLong { len: u32::MAX, max: MAX_FRAME })
    );
    let over = (MAX_FRAME + 1).to_be_bytes();
    assert!(matches!(decode_frame(&over, MAX_FRAME), Err(DecodeError::FrameTooLong { .. })));
    assert_eq!(decode_frame(&MAX_FRAME.to_be_bytes(), MAX_FRAME), Ok(None));
}

#[test]
fn wrong_fixed_lengths_are_refused() {
    let cases: &[&[u8]] = &[
        &[0, 0, 0, 4, 4, 0, 0, 1],           // have with 3 bytes
        &[0, 0, 0, 12, 6],                   // request with 11
        &[0, 0, 0, 14, 6],                   // request with 13
        &[0, 0, 0, 2, 0, 9],                 // choke with payload
        &[0, 0, 0, 5, 7, 0, 0, 0, 0],        // piece without begin
        &[0, 0, 0, 2, 9, 1],                 // port with 1 byte
    ];
    for c in cases {
        assert!(matches!(decode_frame(c, MAX_FRAME), Err(DecodeError::BadLength { .. })), "{c:?}");
    }
}

#[test]
fn bad_handshake_is_refused_early() {
    assert_eq!(Handshake::decode(&[18]), Err(DecodeError::BadHandshake));
    assert_eq!(Handshake::decode(b"\x13BitTorrent protocoX"), Err(DecodeError::BadHandshake));
    assert_eq!(Handshake::decode(b"\x13BitTorr"), Ok(None));
    assert_eq!(Handshake::decode(&[]), Ok(None));
}

#[test]
fn random_bytes_never_panic() {
    let mut x: u64 = 0x1234_5678_9abc_def1;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut buf = Vec::new();
    for _ in 0..300_000 {
        buf.clear();
        let len = (next() % 40) as usize;
        for _ in 0..len {
            buf.push(next() as u8);
        }
        // Small length prefixes are more interesting.
        if len >= 4 && next() % 2 == 0 {
            buf[0] = 0;
            buf[1] = 0;
            buf[2] = 0;
        }
        let _ = Handshake::decode(&buf);
        let mut at = 0;
        while let Ok(Some((_, n))) = decode_frame(&buf[at..], MAX_FRAME) {
            at += n;
        }
    }
}

struct SlowWriter {
    got: Vec<u8>,
    room: usize,
}

impl Write for SlowWriter {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        if self.room == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = b.len().min(self.room).min(7);
        self.got.extend_from_slice(&b[..n]);
        self.room -= n;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn send_buf_drains_across_would_block() {
    let mut sb = SendBuf::new();
    let data: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
    sb.buf_mut().extend_from_slice(&data);
    let mut w = SlowWriter { got: Vec::new(), room: 0 };
    while !sb.is_empty() {
        w.room = 50_000;
        sb.write_to(&mut w).unwrap();
        sb.check_invariants();
        sb.buf_mut().len(); // appending between writes keeps order
    }
    assert_eq!(w.got, data);
}
