//! Attacks on the storage path, played over loopback against the binary:
//! read amplification on large pieces, and writing through symlinks.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

/// Bytes the process has read through read(2)/pread(2) so far.
fn rchar(pid: u32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap();
    io.lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn frame(id: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = (1 + payload.len() as u32).to_be_bytes().to_vec();
    out.push(id);
    out.extend_from_slice(payload);
    out
}

fn read_frame(s: &mut TcpStream) -> Vec<u8> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).unwrap();
    body
}

#[test]
fn one_block_of_each_of_many_large_pieces_reads_little_more_than_it_serves() {
    // 8 pieces of 16 MiB. The peer asks for one 16 KiB block of each in
    // turn, at scattered offsets: the seeder used to read the whole piece
    // for each block (1024 times what it served).
    let tmp = TempDir::new("amplify");
    let seed_dir = tmp.join("seed");
    std::fs::create_dir_all(&seed_dir).unwrap();
    let data = pseudo_random(8 << 24, 5);
    std::fs::write(seed_dir.join("big.bin"), &data).unwrap();
    let torrent = make_torrent(
        &seed_dir.join("big.bin"),
        &tmp.join("big.torrent"),
        &[],
        16 << 20,
    );
    let t = torrent.to_str().unwrap();
    let info_hash = piecemeal::metainfo::Metainfo::load(&torrent)
        .unwrap()
        .info_hash;
    let (seeder, port) = start_seeder(&tmp, &seed_dir, t, &[]);
    let mut s = TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap())).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let hs = handshake_bytes(&info_hash, b"-XX0001-amplifier000");
    s.write_all(&hs).unwrap();
    let mut back = [0u8; 68];
    s.read_exact(&mut back).unwrap();
    s.write_all(&frame(2, &[])).unwrap(); // interested
    let end = Instant::now() + Duration::from_secs(10);
    while read_frame(&mut s).first() != Some(&1) {
        assert!(Instant::now() < end, "never unchoked");
    }
    let before = rchar(seeder.child.id());
    let mut served = 0u64;
    for round in 0..12u32 {
        for piece in 0..8u32 {
            let begin = ((round * 97 + piece * 31) % 1024) * 16384;
            let mut p = Vec::new();
            for v in [piece, begin, 16384] {
                p.extend_from_slice(&v.to_be_bytes());
            }
            s.write_all(&frame(6, &p)).unwrap();
            let got = loop {
                let f = read_frame(&mut s);
                if f.first() == Some(&7) {
                    break f;
                }
            };
            let at = (piece as usize) * (16 << 20) + begin as usize;
            assert!(got[9..] == data[at..at + 16384], "wrong bytes served");
            served += 16384;
        }
    }
    let read = rchar(seeder.child.id()) - before;
    assert!(
        // At most one 128 KiB read unit per 16 KiB block served, plus 1 MiB
        // of slack for the process's other reads (`rchar` counts sockets).
        read <= 8 * served + (1 << 20),
        "read {read} bytes to serve {served}"
    );
}

#[test]
fn a_symlink_in_the_output_folder_is_never_written_through() {
    let tmp = TempDir::new("symlink-out");
    let seed_dir = tmp.join("seed");
    write_files(&seed_dir, &[("tree/inner/f.bin", 200_000)]);
    let torrent = make_torrent(&seed_dir.join("tree"), &tmp.join("t.torrent"), &[], 32768);
    let (_seeder, sp) = start_seeder(&tmp, &seed_dir, torrent.to_str().unwrap(), &[]);
    // The output folder holds `tree/inner` as a link to a folder elsewhere
    // that holds a file of the same name.
    let out = tmp.join("out");
    let outside = tmp.join("outside");
    std::fs::create_dir_all(out.join("tree")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("f.bin"), b"precious").unwrap();
    std::os::unix::fs::symlink(&outside, out.join("tree/inner")).unwrap();
    let o = Command::new(BIN)
        .args(download_args(torrent.to_str().unwrap(), &out, &sp))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_ne!(o.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("symbolic link"), "{stderr}");
    assert_eq!(std::fs::read(outside.join("f.bin")).unwrap(), b"precious");
}
