//! Wire decode of a piece-heavy stream, fed through a RecvBuf in 64 KiB reads.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use piecemeal::wire::{MAX_FRAME, Message, RecvBuf, decode_frame, frame_len_hint};
use std::io::Read;

fn piece_stream(bytes: usize) -> Vec<u8> {
    let data = vec![0x5au8; 16384];
    let mut out = Vec::with_capacity(bytes + bytes / 1000);
    let mut i = 0u32;
    while out.len() < bytes {
        Message::Piece { piece: i / 16, begin: (i % 16) * 16384, data: &data }.encode(&mut out);
        if i % 4 == 0 {
            Message::Have { piece: i }.encode(&mut out);
        }
        i += 1;
    }
    out
}

struct Src<'a>(&'a [u8], usize);

impl Read for Src<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = out.len().min(65536).min(self.0.len() - self.1);
        out[..n].copy_from_slice(&self.0[self.1..self.1 + n]);
        self.1 += n;
        Ok(n)
    }
}

fn bench_decode(c: &mut Criterion) {
    let stream = piece_stream(64 << 20);
    let mut g = c.benchmark_group("wire");
    g.throughput(Throughput::Bytes(stream.len() as u64));
    g.bench_function("decode_piece_stream_64MiB", |b| {
        b.iter(|| {
            let mut src = Src(&stream, 0);
            let mut rb = RecvBuf::new(64 * 1024);
            let mut sum = 0u64;
            loop {
                match rb.read_from(&mut src) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) => panic!("{e}"),
                }
                while let Some((m, n)) = decode_frame(rb.data(), MAX_FRAME).unwrap() {
                    if let Message::Piece { data, .. } = m {
                        sum += data[0] as u64;
                    }
                    rb.consume(n);
                }
                if let Some(need) = frame_len_hint(rb.data()) {
                    rb.reserve_frame(need);
                }
            }
            sum
        })
    });
    g.finish();
}

criterion_group!(benches, bench_decode);
criterion_main!(benches);
