//! Peer-wire decode throughput: a piece-heavy stream read through a `RecvBuf`.
//!
//! 64 MiB of 16 KiB `piece` messages, each followed by a `have`, are read
//! from memory in 64 KiB reads (as from a socket) into a 64 KiB receive
//! buffer and decoded; the only copy of block data is the read itself.
//! The `_rc4` variant reads the same stream encrypted, decrypted in place
//! by the buffer (an MSE connection): the cost of RC4 on the receive path.

use std::hint::black_box;
use std::io;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use piecemeal::mse::Cipher;
use piecemeal::wire::{MAX_FRAME, Message, RecvBuf, decode_frame, encode_piece_header};

const BLOCK: u32 = 16 * 1024;
const STREAM_BYTES: usize = 64 << 20;
const READ_LEN: usize = 64 * 1024;

/// An in-memory "socket" returning at most `READ_LEN` bytes per read.
struct Socket<'a>(&'a [u8]);

impl io::Read for Socket<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = out.len().min(READ_LEN).min(self.0.len());
        out[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

fn piece_stream() -> Vec<u8> {
    let data: Vec<u8> = (0..BLOCK).map(|i| i as u8).collect();
    let mut out = Vec::with_capacity(STREAM_BYTES + STREAM_BYTES / 1000);
    let mut n = 0u32;
    while out.len() < STREAM_BYTES {
        encode_piece_header(n / 16, (n % 16) * BLOCK, BLOCK, &mut out);
        out.extend_from_slice(&data);
        Message::Have { piece: n / 16 }.encode(&mut out);
        n += 1;
    }
    out
}

/// Read and decode the whole stream; returns (block bytes, messages).
fn decode_all(stream: &[u8], rb: &mut RecvBuf) -> (u64, u64) {
    let mut sock = Socket(stream);
    let (mut block_bytes, mut messages) = (0u64, 0u64);
    while rb.read_from(&mut sock).expect("in-memory read") > 0 {
        while let Some((msg, used)) = decode_frame(rb.data(), MAX_FRAME).expect("valid stream") {
            if let Message::Piece { data, .. } = msg {
                block_bytes += black_box(data).len() as u64;
            }
            messages += 1;
            rb.consume(used);
        }
    }
    (block_bytes, messages)
}

fn bench_decode(c: &mut Criterion) {
    let stream = piece_stream();
    let mut group = c.benchmark_group("wire");
    group.throughput(Throughput::Bytes(stream.len() as u64));
    group.sample_size(20);
    group.bench_function("decode_piece_stream_64MiB", |b| {
        let mut rb = RecvBuf::new(64 * 1024);
        b.iter(|| {
            let (bytes, msgs) = decode_all(black_box(&stream), &mut rb);
            assert!(rb.is_empty());
            black_box((bytes, msgs))
        })
    });
    let key = [0x5au8; 20];
    let mut encrypted = stream.clone();
    Cipher::new(&key).apply(&mut encrypted);
    group.bench_function("decode_piece_stream_64MiB_rc4", |b| {
        b.iter(|| {
            let mut rb = RecvBuf::new(64 * 1024);
            rb.set_cipher(Cipher::new(&key));
            let (bytes, msgs) = decode_all(black_box(&encrypted), &mut rb);
            assert!(rb.is_empty());
            black_box((bytes, msgs))
        })
    });
    group.finish();
}

criterion_group!(benches, bench_decode);
criterion_main!(benches);
