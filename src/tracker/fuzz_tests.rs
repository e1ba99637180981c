//! Random input through every parser: nothing may panic. Inputs are valid
//! samples with a few mutations, or fragments glued to random bytes.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::*;

/// xorshift64*, enough to spray bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Fragments that steer random strings towards interesting parser states.
const HTTP_BITS: &[&[u8]] = &[
    b"HTTP/1.1 200 OK\r\n",
    b"HTTP/1.0 100 Continue\r\n\r\n",
    b"Content-Length: ",
    b"Transfer-Encoding: chunked\r\n",
    b"\r\n",
    b"\r\n\r\n",
    b"\n",
    b"0\r\n\r\n",
    b"ffffffffffffffff\r\n",
    b"5;x=y\r\n",
    b"12",
    b"d8:intervali60e5:peers6:abcdefe",
];

const BENCODE_BITS: &[&[u8]] = &[
    b"d",
    b"l",
    b"e",
    b"i",
    b"-",
    b"0",
    b"1",
    b"9",
    b":",
    b"5:peers",
    b"6:peers6",
    b"8:interval",
    b"14:failure reason",
    b"i60e",
    b"6:abcdef",
    b"18:",
    b"2:ip",
    b"4:port",
    b"7:1.2.3.4",
];

const REQUEST_BITS: &[&[u8]] = &[
    b"GET ",
    b"POST ",
    b"/announce?",
    b"/scrape?",
    b"info_hash=",
    b"%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB",
    b"&peer_id=-PM0001-00000000000",
    b"&port=",
    b"&left=",
    b"&event=stopped",
    b"&compact=0",
    b"&numwant=",
    b"&ip=",
    b"1",
    b"0",
    b"%",
    b" HTTP/1.1\r\n",
    b"Host: x\r\n",
    b"\r\n",
];

/// Valid inputs that mutations start from.
const HTTP_SEEDS: &[&[u8]] = &[
    b"HTTP/1.1 200 OK\r\nContent-Length: 31\r\n\r\nd8:intervali60e5:peers6:abcdefe",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nd8:i\r\n1b;a=b\r\nntervali60e5:peers6:abcdefe\r\n0\r\nT: 1\r\n\r\n",
    b"HTTP/1.0 200 OK\r\nServer: x\r\n\r\nd14:failure reason3:nope",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nde",
];

const BENCODE_SEEDS: &[&[u8]] = &[
    b"d8:completei1e10:incompletei2e8:intervali60e12:min intervali30e5:peers12:abcdefghijkl6:peers618:abcdefghijklmnopqr10:tracker id2:id15:warning message2:hie",
    b"d8:intervali1800e5:peersld2:ip7:1.2.3.47:peer id20:aaaaaaaaaaaaaaaaaaaa4:porti6881eed2:ip3:::14:porti1eeee",
    b"d14:failure reason6:go awaye",
];

const REQUEST_SEEDS: &[&[u8]] = &[
    b"GET /announce?info_hash=%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB&peer_id=-PM0001-000000000000&port=6881&uploaded=0&downloaded=0&left=0&compact=1 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /announce?info_hash=%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB&peer_id=-PM0001-000000000001&port=1&left=5&event=started&compact=0&numwant=3&ip=::1 HTTP/1.1\r\n\r\n",
    b"GET /scrape?info_hash=%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB&info_hash=aaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\n\r\n",
    b"GET /scrape HTTP/1.0\r\n\r\n",
];

/// Either a valid seed with a few mutations, or fragments and random bytes
/// glued together.
fn random_input(rng: &mut Rng, seeds: &[&[u8]], bits: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    if rng.below(4) != 0 {
        out.extend_from_slice(seeds[rng.below(seeds.len())]);
        for _ in 0..rng.below(4) {
            let len = out.len();
            match rng.below(5) {
                0 if len > 0 => {
                    let i = rng.below(len);
                    out[i] = rng.next() as u8;
                }
                1 if len > 0 => {
                    let i = rng.below(len);
                    let n = rng.below(len - i + 1).min(8);
                    out.drain(i..i + n);
                }
                2 => {
                    let i = rng.below(len + 1);
                    let bit = bits[rng.below(bits.len())];
                    out.splice(i..i, bit.iter().copied());
                }
                3 if len > 0 => out.truncate(rng.below(len)),
                _ => {
                    let i = rng.below(len + 1);
                    out.insert(i, rng.next() as u8);
                }
            }
        }
        return out;
    }
    for _ in 0..rng.below(12) {
        if rng.below(2) == 0 {
            out.extend_from_slice(bits[rng.below(bits.len())]);
        } else {
            for _ in 0..rng.below(8) {
                out.push(rng.next() as u8);
            }
        }
    }
    out
}

#[test]
fn random_bytes_never_panic_any_parser() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut tracker = Tracker::new(ServerConfig {
        max_torrents: 8,
        max_peers_per_torrent: 8,
        ..ServerConfig::default()
    });
    let t0 = Instant::now();
    let (mut bodies, mut announces, mut heads) = (0u32, 0u32, 0u32);
    for round in 0..300_000u32 {
        // ResponseReader, fed in random pieces.
        let input = random_input(&mut rng, HTTP_SEEDS, HTTP_BITS);
        let mut reader = ResponseReader::new();
        let mut done = false;
        let mut rest = &input[..];
        while !rest.is_empty() && !done {
            let n = 1 + rng.below(rest.len());
            match reader.feed(&rest[..n]) {
                Ok(Some(body)) => {
                    assert!(body.len() <= MAX_BODY);
                    bodies += 1;
                    done = true;
                }
                Ok(None) => {}
                Err(_) => done = true,
            }
            rest = &rest[n..];
        }
        if !done {
            let _ = reader.eof();
        }

        // Announce bodies.
        let body = random_input(&mut rng, BENCODE_SEEDS, BENCODE_BITS);
        if parse_announce_body(&body).is_ok() {
            announces += 1;
        }

        // Server: frame, then handle whatever framed (and sometimes not).
        let req = random_input(&mut rng, REQUEST_SEEDS, REQUEST_BITS);
        let remote = SocketAddr::from(([127, 0, 0, (round % 4) as u8], 1 + (round % 3) as u16));
        let now = t0 + Duration::from_millis(u64::from(round));
        match frame_request(&req) {
            Ok(HeadStatus::Complete(n)) => {
                heads += 1;
                let resp = tracker.handle(&req[..n], remote, now);
                assert!(resp.starts_with(b"HTTP/1.1 "));
            }
            _ => {
                let resp = tracker.handle(&req, remote, now);
                assert!(resp.starts_with(b"HTTP/1.1 "));
            }
        }
        if round % 1000 == 0 {
            tracker.expire(now);
        }
        assert!(tracker.num_torrents() <= 8);
    }
    // The generators reach past the first checks of each parser.
    // (Measured: about 53k bodies, 44k announces and 90k heads.)
    assert!(
        bodies > 10_000 && announces > 10_000 && heads > 10_000,
        "{bodies} {announces} {heads}"
    );
}
