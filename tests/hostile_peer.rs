//! A scripted peer that serves corrupt data: the pieces it sent are caught
//! by SHA-1, fetched again from an honest seeder, and it is banned.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

const FILES: &[(&str, usize)] = &[("file.bin", 3_000_000)];

/// Accepts connections, completes the handshake, claims every piece, and
/// answers every request with garbage of the right length.
fn corrupt_peer(listener: TcpListener, info_hash: [u8; 20], num_pieces: u32) {
    for conn in listener.incoming() {
        let Ok(mut s) = conn else { return };
        std::thread::spawn(move || {
            let mut hs = [0u8; 68];
            if s.read_exact(&mut hs).is_err() || hs[28..48] != info_hash {
                return;
            }
            let mut out = handshake_bytes(&info_hash, b"-XX0001-corruptpeer!");
            let bf_len = (num_pieces as usize).div_ceil(8);
            let mut bf = vec![0xffu8; bf_len];
            let spare = bf_len * 8 - num_pieces as usize;
            if spare > 0 {
                bf[bf_len - 1] = 0xff << spare;
            }
            out.extend_from_slice(&(1 + bf_len as u32).to_be_bytes());
            out.push(5);
            out.extend_from_slice(&bf);
            out.extend_from_slice(&[0, 0, 0, 1, 1]); // unchoke
            if s.write_all(&out).is_err() {
                return;
            }
            loop {
                let mut len = [0u8; 4];
                if s.read_exact(&mut len).is_err() {
                    return;
                }
                let len = u32::from_be_bytes(len) as usize;
                let mut body = vec![0u8; len];
                if s.read_exact(&mut body).is_err() {
                    return;
                }
                if len == 13 && body[0] == 6 {
                    let blen = u32::from_be_bytes(body[9..13].try_into().unwrap());
                    let mut m = Vec::new();
                    m.extend_from_slice(&(9 + blen).to_be_bytes());
                    m.push(7);
                    m.extend_from_slice(&body[1..9]);
                    m.extend(std::iter::repeat_n(0xAB, blen as usize));
                    if s.write_all(&m).is_err() {
                        return;
                    }
                }
            }
        });
    }
}

#[test]
fn corrupt_peer_is_caught_refetched_elsewhere_and_banned() {
    let tmp = TempDir::new("corrupt");
    let seed_dir = tmp.join("seed");
    write_files(&seed_dir, FILES);
    let torrent = make_torrent(
        &seed_dir.join("file.bin"),
        &tmp.join("f.torrent"),
        &[],
        32768,
    );
    let meta = piecemeal::metainfo::Metainfo::load(&torrent).unwrap();
    let t = torrent.to_str().unwrap();
    let bad = TcpListener::bind("127.0.0.1:0").unwrap();
    let bad_port = bad.local_addr().unwrap().port();
    let (ih, n) = (meta.info_hash, meta.geometry().num_pieces);
    std::thread::spawn(move || corrupt_peer(bad, ih, n));
    // The honest seeder is slow, so the corrupt peer surely gets requests.
    let (_seeder, sp) = start_seeder(&tmp, &seed_dir, t, &["--upload-limit", "1M"]);
    let out = tmp.join("out");
    let mut leech = Proc::start(
        "leech",
        tmp.path(),
        &[
            "download",
            t,
            "-o",
            out.to_str().unwrap(),
            "--peer",
            &bad_port.to_string(),
            "--peer",
            &sp,
            "--port",
            "0",
            // The corrupt peer speaks plaintext only (no MSE first try).
            "--encryption",
            "off",
        ],
        tmp.path(),
    );
    assert_eq!(
        leech.wait(Duration::from_secs(60)),
        0,
        "log:\n{}",
        leech.log_text()
    );
    let log = leech.log_text();
    assert!(
        log.contains("failed its hash check"),
        "no hash failure seen:\n{log}"
    );
    assert!(log.contains("banning"), "corrupt peer not banned:\n{log}");
    assert!(log.contains(&format!("127.0.0.1:{bad_port}")), "{log}");
    assert_same_files(&seed_dir, &out, FILES);
}
