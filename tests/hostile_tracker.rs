//! Scripted hostile HTTP trackers on 127.0.0.1, named in the torrent's
//! `announce`. Whatever the tracker does, piecemeal logs why the announce
//! failed, backs off (logged), keeps running, and the download still
//! completes from the peer given with `--peer`.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const FILES: &[(&str, usize)] = &[("file.bin", 1_000_000)];

#[derive(Clone, Copy, Debug)]
enum Mode {
    /// Nothing listens on the port.
    Refused,
    /// A bencoded `failure reason`.
    Failure,
    /// Not HTTP at all.
    GarbageHead,
    /// HTTP, but the body is not bencode.
    GarbageBody,
    /// A 5 MB body announced by `Content-Length`.
    HugeLength,
    /// A 5 MB body read to the end of the connection.
    HugeToEof,
    /// A chunk size of `ffffffffffffffff`.
    HugeChunk,
    /// Compact peers of length 7.
    Peers7,
    /// The answer dribbles in, one byte every half second.
    Dribble,
    /// An endless stream of `100 Continue` heads, as fast as it goes.
    EndlessContinue,
    /// 170,000 compact peers (127.x.y.z, port 1: nothing listens).
    HugePeerList,
}

fn answer(mode: Mode, s: &mut TcpStream) {
    let body = |b: &[u8]| {
        let mut r = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", b.len()).into_bytes();
        r.extend_from_slice(b);
        r
    };
    let _ = match mode {
        Mode::Refused => Ok(()),
        Mode::Failure => s.write_all(&body(b"d14:failure reason11:go away nowe")),
        Mode::GarbageHead => s.write_all(b"\x00\x01 this is not HTTP \xff\r\n\r\nat all"),
        Mode::GarbageBody => s.write_all(&body(b"<html>not bencode</html>")),
        Mode::HugeLength => {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5000000\r\n\r\n");
            s.write_all(&vec![b'x'; 5_000_000])
        }
        Mode::HugeToEof => {
            let _ = s.write_all(b"HTTP/1.0 200 OK\r\n\r\nd5:peers");
            s.write_all(&vec![b'1'; 5_000_000])
        }
        Mode::HugeChunk => s.write_all(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\nd8:intervali60ee",
        ),
        Mode::Peers7 => s.write_all(&body(b"d8:intervali60e5:peers7:abcdefge")),
        Mode::HugePeerList => {
            let mut peers = Vec::with_capacity(170_000 * 6);
            for i in 0..170_000u32 {
                peers.extend_from_slice(&[127, (i >> 16) as u8 + 1, (i >> 8) as u8, i as u8, 0, 1]);
            }
            let mut b = format!("d8:intervali1800e5:peers{}:", peers.len()).into_bytes();
            b.extend_from_slice(&peers);
            b.push(b'e');
            s.write_all(&body(&b))
        }
        Mode::EndlessContinue => loop {
            if s.write_all(&b"HTTP/1.1 100 Continue\r\n\r\n".repeat(64)).is_err() {
                break Ok(());
            }
        },
        Mode::Dribble => {
            for &b in b"HTTP/1.1 200 OK\r\nX-Slow: ".iter().chain([b'z'; 10_000].iter()) {
                if s.write_all(&[b]).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            Ok(())
        }
    };
}

/// Serve `mode` to every announce; count the announces.
fn hostile_tracker(mode: Mode) -> (u16, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    if let Mode::Refused = mode {
        return (free_port(), hits);
    }
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let h = hits.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut s) = conn else { return };
            let h = h.clone();
            std::thread::spawn(move || {
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 16384 {
                    if !matches!(s.read(&mut b), Ok(1)) {
                        return;
                    }
                    head.push(b[0]);
                }
                assert!(head.starts_with(b"GET /announce?"), "{head:?}");
                h.fetch_add(1, Ordering::SeqCst);
                answer(mode, &mut s);
            });
        }
    });
    (port, hits)
}

/// Download from an honest seeder while the torrent's only tracker is
/// hostile. Returns the leecher's log and the number of announces.
fn download_with(mode: Mode, name: &str, extra: &[&str]) -> (String, usize) {
    let tmp = TempDir::new(name);
    let (tport, hits) = hostile_tracker(mode);
    let url = format!("http://127.0.0.1:{tport}/announce");
    let (seed_dir, t) = seed_data(&tmp, FILES, "file.bin", std::slice::from_ref(&url), 32768);
    let (_seeder, sp) = start_seeder(&tmp, &seed_dir, &t, &["--no-tracker"]);
    let out = tmp.join("out");
    let mut args = download_args(&t, &out, &sp);
    args.push("--seed");
    args.extend_from_slice(extra);
    let mut leech = Proc::start("leech", tmp.path(), &args, tmp.path());
    // The download completes while the tracker misbehaves.
    leech.wait_for(Duration::from_secs(30), "all pieces", |s| {
        s.num > 0 && s.have == s.num
    });
    // The download may finish before the tracker's answer is judged: wait
    // for the verdict (and the back-off) before stopping the leecher.
    let end = std::time::Instant::now() + Duration::from_secs(30);
    while !(leech.log_text().contains(&format!("tracker {url}: "))
        && leech
            .log_text()
            .contains("no tracker answered; backing off for "))
    {
        if std::time::Instant::now() > end || leech.child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let code = if leech.child.try_wait().unwrap().is_some() {
        leech.wait(Duration::from_secs(1))
    } else if extra.contains(&"--seed-time") {
        leech.wait(Duration::from_secs(60))
    } else {
        leech.terminate(Duration::from_secs(10))
    };
    assert_eq!(code, 0, "log:\n{}", leech.log_text());
    assert_same_files(&seed_dir, &out, FILES);
    let log = leech.log_text();
    assert!(!log.contains("panicked"), "{log}");
    assert!(
        log.contains(&format!("tracker {url}: ")),
        "no tracker error logged:\n{log}"
    );
    assert!(
        log.contains("no tracker answered; backing off for "),
        "no back-off:\n{log}"
    );
    (log, hits.load(Ordering::SeqCst))
}

/// The failed announce is logged with `why`, and the back-off means one
/// announce only during the download.
fn check(mode: Mode, name: &str, why: &str) {
    let (log, hits) = download_with(mode, name, &[]);
    assert!(log.contains(why), "{mode:?}: no {why:?} in:\n{log}");
    if !matches!(mode, Mode::Refused) {
        assert_eq!(hits, 1, "{mode:?}: announces during back-off:\n{log}");
    }
}

#[test]
fn refused() {
    check(Mode::Refused, "trk-refused", "tracker I/O error");
}

#[test]
fn failure_reason() {
    check(Mode::Failure, "trk-failure", "tracker failure: go away now");
}

#[test]
fn garbage_head() {
    check(Mode::GarbageHead, "trk-garbage-head", "HTTP error");
}

#[test]
fn garbage_body() {
    check(
        Mode::GarbageBody,
        "trk-garbage-body",
        "invalid bencode from tracker",
    );
}

#[test]
fn five_megabyte_body_with_length() {
    check(
        Mode::HugeLength,
        "trk-huge-len",
        "tracker response too large",
    );
}

#[test]
fn five_megabyte_body_to_eof() {
    check(
        Mode::HugeToEof,
        "trk-huge-eof",
        "tracker response too large",
    );
}

#[test]
fn chunk_size_ffffffffffffffff() {
    check(
        Mode::HugeChunk,
        "trk-huge-chunk",
        "tracker response too large",
    );
}

#[test]
fn compact_peers_of_length_7() {
    check(Mode::Peers7, "trk-peers7", "bad tracker response");
}

#[test]
fn dribbling_response_times_out_without_blocking_the_download() {
    // Keep seeding long enough for the 15 s announce time-out to fire.
    let (log, hits) = download_with(Mode::Dribble, "trk-dribble", &["--seed-time", "18"]);
    assert!(log.contains("no answer in 15s"), "{log}");
    assert_eq!(hits, 1, "{log}");
}

/// The first tier answers garbage; the second is a working tracker where the
/// seeder registered: the download finds the seeder there (no `--peer`).
#[test]
fn a_broken_first_tier_falls_through_to_the_next() {
    let tmp = TempDir::new("trk-tiers");
    let (bad, hits) = hostile_tracker(Mode::GarbageBody);
    let (_tracker, good) = start_tracker(&tmp);
    let bad_url = format!("http://127.0.0.1:{bad}/announce");
    let urls = [bad_url.clone(), format!("http://127.0.0.1:{good}/announce")];
    let (seed_dir, t) = seed_data(&tmp, FILES, "file.bin", &urls, 32768);
    let t = t.as_str();
    let (_seeder, _) = start_seeder(&tmp, &seed_dir, t, &[]);
    let out = tmp.join("out");
    let mut leech = Proc::start(
        "leech",
        tmp.path(),
        &[
            "download",
            t,
            "-o",
            out.to_str().unwrap(),
            "--port",
            "0",
            "--verbose",
        ],
        tmp.path(),
    );
    assert_eq!(
        leech.wait(Duration::from_secs(60)),
        0,
        "log:\n{}",
        leech.log_text()
    );
    assert_same_files(&seed_dir, &out, FILES);
    let log = leech.log_text();
    assert!(
        log.contains(&format!("tracker {bad_url}: invalid bencode from tracker")),
        "{log}"
    );
    // Both the seeder and the leecher tried the broken tier first.
    assert!(hits.load(Ordering::SeqCst) >= 2);
}

#[test]
fn endless_100_continue() {
    // It used to hold the loop at 100% CPU: no peer traffic, no time-out,
    // no SIGTERM. Now the fifth interim head is an error.
    check(
        Mode::EndlessContinue,
        "trk-continue",
        "more than 4 interim (1xx) responses",
    );
}

#[test]
fn an_answer_with_170000_peers_is_capped() {
    let tmp = TempDir::new("trk-huge-peers");
    let (tport, hits) = hostile_tracker(Mode::HugePeerList);
    let url = format!("http://127.0.0.1:{tport}/announce");
    let (seed_dir, t) = seed_data(&tmp, FILES, "file.bin", std::slice::from_ref(&url), 32768);
    let (_seeder, sp) = start_seeder(&tmp, &seed_dir, &t, &["--no-tracker"]);
    let out = tmp.join("out");
    let args = download_args(&t, &out, &sp);
    let mut leech = Proc::start("leech", tmp.path(), &args, tmp.path());
    assert_eq!(
        leech.wait(Duration::from_secs(60)),
        0,
        "{}",
        leech.log_text()
    );
    assert_same_files(&seed_dir, &out, FILES);
    let log = leech.log_text();
    assert!(log.contains("170000 peers"), "{log}");
    assert!(hits.load(Ordering::SeqCst) >= 1);
    // At most 200 of them were taken (and dialed, some retried).
    let dials = log.lines().filter(|l| l.ends_with(" connecting")).count();
    assert!(dials <= 3 * 200 + 10, "{dials} connection attempts");
}
