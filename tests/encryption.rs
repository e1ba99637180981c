//! Message Stream Encryption between piecemeal processes on loopback:
//! `require` on both sides moves the data over RC4, `prefer` falls back to
//! plaintext for a peer with encryption off, `require` refuses plaintext
//! and `off` refuses MSE (closed, nothing transferred, a log line saying
//! why), and a peer that floods the exchange without a sync marker is cut
//! off at the spec's limit. (Against libtorrent and Transmission:
//! `tests/interop.rs`.)

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

const FILES: &[(&str, usize)] = &[("file.bin", 3_000_000)];

/// The seeder's folder and torrent, and a seeder with `mode` running.
fn seeder(tmp: &TempDir, mode: &str) -> (Proc, String, String) {
    let (seed_dir, torrent) = seed_data(tmp, FILES, "file.bin", &[], 65536);
    let (seeder, port) = start_seeder(
        tmp,
        &seed_dir,
        &torrent,
        &["--encryption", mode, "--no-tracker", "--verbose"],
    );
    (seeder, port, torrent)
}

fn leecher(tmp: &TempDir, torrent: &str, port: &str, mode: &str) -> Proc {
    let out = tmp.join("dl");
    let mut args = download_args(torrent, &out, port);
    args.extend(["--encryption", mode, "--no-tracker"]);
    Proc::start("leecher", tmp.path(), &args, tmp.path())
}

#[test]
fn require_on_both_sides_moves_the_data_over_rc4() {
    let tmp = TempDir::new("mse-require");
    let (seeder, port, torrent) = seeder(&tmp, "require");
    let mut dl = leecher(&tmp, &torrent, &port, "require");
    assert_eq!(dl.wait(Duration::from_secs(60)), 0, "{}", dl.log_text());
    assert_same_files(&tmp.join("seed"), &tmp.join("dl"), FILES);
    let (dl_log, seed_log) = (dl.log_text(), seeder.log_text());
    assert!(dl_log.contains("MSE done, RC4"), "{dl_log}");
    assert!(seed_log.contains("MSE done, RC4"), "{seed_log}");
    assert!(!dl_log.contains("plaintext"), "{dl_log}");
}

#[test]
fn prefer_falls_back_to_plaintext_for_a_peer_with_encryption_off() {
    let tmp = TempDir::new("mse-fallback");
    let (seeder, port, torrent) = seeder(&tmp, "off");
    let mut dl = leecher(&tmp, &torrent, &port, "prefer");
    assert_eq!(dl.wait(Duration::from_secs(60)), 0, "{}", dl.log_text());
    assert_same_files(&tmp.join("seed"), &tmp.join("dl"), FILES);
    let dl_log = dl.log_text();
    assert!(dl_log.contains("connecting (MSE)"), "{dl_log}");
    assert!(dl_log.contains("MSE failed; trying plaintext"), "{dl_log}");
    assert!(dl_log.contains("connecting (plaintext)"), "{dl_log}");
    let seed_log = seeder.log_text();
    assert!(
        seed_log.contains("encrypted handshake refused (--encryption off)"),
        "{seed_log}"
    );
}

#[test]
fn prefer_on_both_sides_obfuscates_the_handshake_and_sends_the_payload_in_the_clear() {
    let tmp = TempDir::new("mse-prefer");
    let (seeder, port, torrent) = seeder(&tmp, "prefer");
    let mut dl = leecher(&tmp, &torrent, &port, "prefer");
    assert_eq!(dl.wait(Duration::from_secs(60)), 0, "{}", dl.log_text());
    assert_same_files(&tmp.join("seed"), &tmp.join("dl"), FILES);
    assert!(
        dl.log_text().contains("connecting (MSE)"),
        "{}",
        dl.log_text()
    );
    assert!(
        dl.log_text().contains("MSE done, plaintext"),
        "{}",
        dl.log_text()
    );
    assert!(seeder.log_text().contains("MSE done, plaintext"));
}

/// A plaintext handshake (as a raw socket sends it): closed without a
/// byte of answer.
fn plaintext_is_closed_unanswered(port: &str, info_hash: [u8; 20]) {
    let mut s = TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap())).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let hs = handshake_bytes(&info_hash, b"-XX0001-plaintexttst");
    s.write_all(&hs).unwrap();
    let mut buf = [0u8; 256];
    match s.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("expected the connection closed unanswered, got {other:?}"),
    }
}

#[test]
fn require_refuses_plaintext_peers_and_sends_them_nothing() {
    let tmp = TempDir::new("mse-refuse");
    let (seeder, port, torrent) = seeder(&tmp, "require");
    let info_hash = piecemeal::metainfo::Metainfo::load(std::path::Path::new(&torrent))
        .unwrap()
        .info_hash;
    plaintext_is_closed_unanswered(&port, info_hash);
    seeder.wait_log(
        "plaintext handshake refused (--encryption require)",
        Duration::from_secs(5),
    );
    // A piecemeal with encryption off gets nothing either.
    let mut dl = leecher(&tmp, &torrent, &port, "off");
    std::thread::sleep(Duration::from_secs(4));
    assert!(dl.child.try_wait().unwrap().is_none(), "{}", dl.log_text());
    let st = dl.status();
    assert_eq!((st.have, st.downloaded), (0, 0), "{st:?}");
    let refused = seeder
        .log_text()
        .matches("plaintext handshake refused")
        .count();
    assert!(refused >= 2, "{}", seeder.log_text());
    dl.terminate(Duration::from_secs(10));
    // The seeder still serves encrypted peers.
    let mut ok = leecher(&tmp, &torrent, &port, "require");
    assert_eq!(ok.wait(Duration::from_secs(60)), 0, "{}", ok.log_text());
}

#[test]
fn off_refuses_encrypted_peers() {
    let tmp = TempDir::new("mse-off");
    let (seeder, port, torrent) = seeder(&tmp, "off");
    let mut dl = leecher(&tmp, &torrent, &port, "require");
    seeder.wait_log(
        "encrypted handshake refused (--encryption off)",
        Duration::from_secs(10),
    );
    let st = dl.status();
    assert_eq!((st.have, st.downloaded), (0, 0), "{st:?}");
    assert!(dl.child.try_wait().unwrap().is_none(), "{}", dl.log_text());
    dl.terminate(Duration::from_secs(10));
}

#[test]
fn an_exchange_without_sync_marker_is_cut_off_at_the_padding_limit() {
    let tmp = TempDir::new("mse-flood");
    let (seeder, port, _torrent) = seeder(&tmp, "prefer");
    let mut s = TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap())).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // A key that is not a plaintext handshake (below P), then junk.
    let mut key = [0x42u8; 96];
    key[0] = 0x10;
    s.write_all(&key).unwrap();
    // The answer: Yb and 0-512 bytes of padding.
    let mut yb = [0u8; 96];
    s.read_exact(&mut yb).unwrap();
    let junk = vec![0x5Au8; 1 << 20];
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    // Writing stops with an error once the connection is closed (or the
    // kernel's buffers fill: then the read below tells).
    for chunk in junk.chunks(4096) {
        if s.write(chunk).is_err() {
            break;
        }
    }
    let mut rest = Vec::new();
    match s.read_to_end(&mut rest) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("connection not closed: {e}"),
    }
    assert!(rest.len() <= 512, "{} bytes of padding", rest.len());
    seeder.wait_log(
        "MSE: no sync marker within the padding limit",
        Duration::from_secs(5),
    );
}

/// A plaintext-only peer that answers whatever arrives with a plaintext
/// handshake (as some do, instead of closing): the dialing side, with
/// `prefer`, gives up on MSE at once and redials in plaintext, and the
/// second connection starts with a plaintext handshake.
#[test]
fn a_plaintext_answer_to_our_key_makes_prefer_redial_in_plaintext() {
    use std::net::TcpListener;
    use std::sync::mpsc;
    let tmp = TempDir::new("mse-plain-answer");
    let (_seed_dir, torrent) = seed_data(&tmp, FILES, "file.bin", &[], 65536);
    let info_hash = piecemeal::metainfo::Metainfo::load(std::path::Path::new(&torrent))
        .unwrap()
        .info_hash;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming().take(2) {
            let Ok(mut s) = conn else { return };
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut first = [0u8; 20];
            if s.read_exact(&mut first).is_err() {
                return;
            }
            let _ = tx.send(first);
            let hs = handshake_bytes(&info_hash, b"-XX0001-plainanswer!");
            let _ = s.write_all(&hs);
            // Hold the connection open until the other side closes it.
            let mut sink = [0u8; 4096];
            while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
        }
    });
    let dl = leecher(&tmp, &torrent, &port, "prefer");
    let first = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_ne!(
        &first[..],
        b"\x13BitTorrent protocol",
        "first dial was not MSE"
    );
    // Well within MSE's 10 s time-out: the answer itself gave it away.
    let second = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(&second[..], b"\x13BitTorrent protocol");
    let log = dl.log_text();
    assert!(
        log.contains("MSE: peer answered with a plaintext handshake"),
        "{log}"
    );
    assert!(log.contains("MSE failed; trying plaintext"), "{log}");
}
