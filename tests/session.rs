//! Many torrents in one session: one listen port, routing by info-hash,
//! several downloads in one process, and torrents paused, resumed and
//! removed while peers are connected.

mod common;
use common::*;
use piecemeal::client::{self, ClientOptions};
use piecemeal::metainfo::Metainfo;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

const FILES: &[(&str, usize)] = &[("a.bin", 700_000), ("b.bin", 1_100_000), ("c.bin", 900_000)];

/// `tmp/seed/{a,b,c}.bin` and a torrent of each: `tmp/{a,b,c}.torrent`.
fn three_torrents(tmp: &TempDir) -> (std::path::PathBuf, Vec<String>) {
    let seed_dir = tmp.join("seed");
    write_files(&seed_dir, FILES);
    let torrents = FILES
        .iter()
        .map(|(name, _)| {
            let stem = name.trim_end_matches(".bin");
            make_torrent(
                &seed_dir.join(name),
                &tmp.join(&format!("{stem}.torrent")),
                &[],
                32768,
            )
            .to_str()
            .unwrap()
            .to_string()
        })
        .collect();
    (seed_dir, torrents)
}

fn info_hash(torrent: &str) -> [u8; 20] {
    Metainfo::load(Path::new(torrent)).unwrap().info_hash
}

fn handshake(info_hash: &[u8; 20]) -> Vec<u8> {
    handshake_bytes(info_hash, b"-XX0001-sessiontest0")
}

/// Send a handshake; true if the seeder answers with one for the same
/// torrent, false if it closes the connection.
fn answered(port: &str, info_hash: &[u8; 20]) -> bool {
    let mut s = TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap())).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&handshake(info_hash)).unwrap();
    let mut back = [0u8; 68];
    s.read_exact(&mut back).is_ok() && back[28..48] == info_hash[..]
}

#[test]
fn one_seeder_process_serves_three_torrents_on_one_port() {
    let tmp = TempDir::new("session-three");
    let (seed_dir, t) = three_torrents(&tmp);
    let (mut seeder, sp) = start_seeder(&tmp, &seed_dir, &t[0], &[&t[1], &t[2], "--verbose"]);
    // Three leecher processes, each downloading a different torrent from
    // the same port, at the same time.
    let mut leechers: Vec<(Proc, std::path::PathBuf)> = (0..3)
        .map(|i| {
            let out = tmp.join(&format!("out{i}"));
            let args = download_args(&t[i], &out, &sp);
            (
                Proc::start(&format!("leech{i}"), tmp.path(), &args, tmp.path()),
                out,
            )
        })
        .collect();
    for (i, (l, out)) in leechers.iter_mut().enumerate() {
        assert_eq!(l.wait(Duration::from_secs(60)), 0, "{}", l.log_text());
        assert_same_files(&seed_dir, out, &FILES[i..i + 1]);
    }
    // A handshake for a torrent it does not serve is closed.
    assert!(!answered(&sp, &[0x5a; 20]));
    let end = Instant::now() + Duration::from_secs(5);
    while !seeder
        .log_text()
        .contains("handshake for a torrent we do not serve")
    {
        assert!(Instant::now() < end, "{}", seeder.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(answered(&sp, &info_hash(&t[1])));
    assert_eq!(seeder.terminate(Duration::from_secs(10)), 0);
}

#[test]
fn a_seed_with_none_of_its_data_is_dropped_and_the_others_go_on() {
    // Each torrent checks its data in the loop; one whose data is not in
    // the folder is dropped with the reason, the other is seeded.
    let tmp = TempDir::new("session-nothing");
    let (seed_dir, t) = three_torrents(&tmp);
    let elsewhere = tmp.join("elsewhere");
    write_files(&elsewhere, &[("d.bin", 300_000)]);
    let d = make_torrent(&elsewhere.join("d.bin"), &tmp.join("d.torrent"), &[], 32768);
    let d = d.to_str().unwrap();
    let (mut seeder, sp) = start_seeder(&tmp, &seed_dir, d, &[&t[0], "--verbose"]);
    let out = tmp.join("out");
    let mut l = Proc::start(
        "leech",
        tmp.path(),
        &download_args(&t[0], &out, &sp),
        tmp.path(),
    );
    assert_eq!(l.wait(Duration::from_secs(60)), 0, "{}", l.log_text());
    assert_same_files(&seed_dir, &out, &FILES[..1]);
    let log = seeder.log_text();
    assert!(
        log.contains("nothing to seed: none of d.bin's data") && log.contains("the others go on"),
        "{log}"
    );
    // Its handshakes are closed; the process still runs.
    assert!(!answered(&sp, &info_hash(d)));
    assert!(seeder.child.try_wait().unwrap().is_none());
    assert_eq!(seeder.terminate(Duration::from_secs(10)), 0);
}

#[test]
fn one_leecher_process_downloads_two_torrents_from_two_seeders() {
    let tmp = TempDir::new("session-two");
    let (seed_dir, t) = three_torrents(&tmp);
    let (_s1, p1) = start_seeder(&tmp, &seed_dir, &t[0], &[]);
    let (_s2, p2) = start_seeder(&tmp, &seed_dir, &t[1], &[]);
    let out = tmp.join("out");
    let mut l = Proc::start(
        "leech",
        tmp.path(),
        &[
            "download",
            &t[0],
            &t[1],
            "-o",
            out.to_str().unwrap(),
            "--peer",
            &p1,
            "--peer",
            &p2,
            "--port",
            "0",
            "--verbose",
        ],
        tmp.path(),
    );
    assert_eq!(l.wait(Duration::from_secs(60)), 0, "{}", l.log_text());
    assert_same_files(&seed_dir, &out, &FILES[..2]);
    let log = l.log_text();
    for name in ["a.torrent: complete", "b.torrent: complete"] {
        assert!(log.contains(name), "no '{name}' line:\n{log}");
    }
}

#[test]
fn torrents_are_paused_resumed_and_removed_while_peers_are_connected() {
    let tmp = TempDir::new("session-control");
    let (seed_dir, t) = three_torrents(&tmp);
    // An in-process seeder of a and b, slow enough to watch.
    let mut o = ClientOptions::new(&t[0], &seed_dir, false);
    o.more = vec![t[1].clone().into()];
    o.listen = "127.0.0.1:0".parse().unwrap();
    o.bind_ip = Some("127.0.0.1".parse().unwrap());
    o.config.upload_limit = Some(300_000);
    let mut session = client::prepare(&o).unwrap();
    let port = session.listen_addr().unwrap().port().to_string();
    let handle = session.handle();
    let runner = std::thread::spawn(move || session.run().unwrap());
    let (a, b) = (info_hash(&t[0]), info_hash(&t[1]));
    let out = tmp.join("out");
    let args = download_args(&t[0], &out, &port);
    let mut l = Proc::start("leech", tmp.path(), &args, tmp.path());
    l.wait_for(Duration::from_secs(20), "some progress", |s| s.have > 0);
    // Paused: the leecher is disconnected and the port no longer serves a.
    handle.pause(a);
    let end = Instant::now() + Duration::from_secs(10);
    while !l.log_text().contains("dropped") {
        assert!(Instant::now() < end, "not disconnected:\n{}", l.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!answered(&port, &a));
    assert!(answered(&port, &b), "the other torrent is not paused");
    // Resumed: the leecher's retries get in and it finishes.
    handle.resume(a);
    assert_eq!(l.wait(Duration::from_secs(60)), 0, "{}", l.log_text());
    assert_same_files(&seed_dir, &out, &FILES[..1]);
    // Removed: b is no longer served; a still is.
    handle.remove(b);
    let end = Instant::now() + Duration::from_secs(10);
    while answered(&port, &b) {
        assert!(Instant::now() < end, "b still served");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(answered(&port, &a));
    handle.stop();
    let outcome = runner.join().unwrap();
    assert_eq!(outcome.torrents.len(), 2, "a, and b as it was removed");
    assert!(outcome.torrents.iter().any(|o| o.info_hash == b));
    let up: u64 = outcome
        .torrents
        .iter()
        .map(|o| o.status.totals.uploaded)
        .sum();
    assert!(up >= FILES[0].1 as u64, "uploaded {up}");
}

#[test]
fn a_silent_peer_is_closed_at_its_idle_time_out() {
    let tmp = TempDir::new("session-idle");
    let (seed_dir, t) = three_torrents(&tmp);
    let (_seeder, sp) = start_seeder(&tmp, &seed_dir, &t[0], &["--idle-timeout", "2"]);
    let mut s = TcpStream::connect(("127.0.0.1", sp.parse::<u16>().unwrap())).unwrap();
    s.write_all(&handshake(&info_hash(&t[0]))).unwrap();
    let start = Instant::now();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut sink = [0u8; 4096];
    while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
    let took = start.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(5),
        "closed after {took:?}"
    );
}

#[test]
fn download_and_upload_limits_hold_for_all_torrents_together() {
    let tmp = TempDir::new("session-limits");
    let (seed_dir, t) = three_torrents(&tmp);
    // Download: 1.1 MB at 400 KB/s (one second's burst banked at most)
    // cannot take less than about 1.7 s.
    let (_s, sp) = start_seeder(&tmp, &seed_dir, &t[1], &[]);
    let out = tmp.join("out-down");
    let mut args = download_args(&t[1], &out, &sp);
    args.extend_from_slice(&["--download-limit", "400K"]);
    let start = Instant::now();
    let mut l = Proc::start("leech-down", tmp.path(), &args, tmp.path());
    assert_eq!(l.wait(Duration::from_secs(60)), 0, "{}", l.log_text());
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(1500), "took {took:?}");
    assert_same_files(&seed_dir, &out, &FILES[1..2]);
    // Upload: one seeder of a and c limited to 500 KB/s in all; two
    // leechers take 1.6 MB from it at once: at least about 2 s.
    let (_s2, sp2) = start_seeder(&tmp, &seed_dir, &t[0], &[&t[2], "--upload-limit", "500K"]);
    let start = Instant::now();
    let mut ls: Vec<(Proc, std::path::PathBuf, usize)> = [0usize, 2]
        .iter()
        .map(|&i| {
            let out = tmp.join(&format!("out-up{i}"));
            let args = download_args(&t[i], &out, &sp2);
            (
                Proc::start(&format!("leech-up{i}"), tmp.path(), &args, tmp.path()),
                out,
                i,
            )
        })
        .collect();
    for (l, out, i) in ls.iter_mut() {
        assert_eq!(l.wait(Duration::from_secs(60)), 0, "{}", l.log_text());
        assert_same_files(&seed_dir, out, &FILES[*i..*i + 1]);
    }
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(2000), "took {took:?}");
}

#[test]
fn a_watched_folder_adds_and_removes_torrents_and_skips_garbage() {
    let tmp = TempDir::new("session-watch");
    let (seed_dir, t) = three_torrents(&tmp);
    let watch = tmp.join("watch");
    std::fs::create_dir_all(&watch).unwrap();
    let port = free_port().to_string();
    let mut seeder = Proc::start(
        "seeder",
        tmp.path(),
        &[
            "seed",
            "--watch",
            watch.to_str().unwrap(),
            "-o",
            seed_dir.to_str().unwrap(),
            "--port",
            &port,
            "--bind",
            "127.0.0.1",
            "--verbose",
        ],
        tmp.path(),
    );
    // A torrent dropped into the folder starts; a leecher gets it.
    std::fs::copy(&t[0], watch.join("a.torrent")).unwrap();
    std::fs::write(watch.join("junk.torrent"), b"this is not bencode").unwrap();
    seeder.wait_log("pieces already verified on disk", Duration::from_secs(15));
    let out = tmp.join("out");
    let mut l = Proc::start(
        "leech",
        tmp.path(),
        &download_args(&t[0], &out, &port),
        tmp.path(),
    );
    assert_eq!(l.wait(Duration::from_secs(60)), 0, "{}", l.log_text());
    assert_same_files(&seed_dir, &out, &FILES[..1]);
    // The garbage is reported, once, and skipped.
    seeder.wait_log("watch: skipping", Duration::from_secs(15));
    assert_eq!(seeder.log_text().matches("watch: skipping").count(), 1);
    // One removed stops.
    std::fs::remove_file(watch.join("a.torrent")).unwrap();
    seeder.wait_log("removed", Duration::from_secs(15));
    assert!(!answered(&port, &info_hash(&t[0])));
    assert_eq!(seeder.terminate(Duration::from_secs(10)), 0);
}

#[test]
fn two_downloads_share_one_cache_budget() {
    // Two torrents downloading at once, in one process with a 4 MiB budget:
    // their caches together never hold more (256 KiB pieces: each torrent's
    // 2 MiB share is 8 buffers, above the floor of 4).
    let tmp = TempDir::new("session-budget");
    let seed_dir = tmp.join("seed");
    const BIG: &[(&str, usize)] = &[("x.bin", 24 << 20), ("y.bin", 20 << 20)];
    write_files(&seed_dir, BIG);
    let t: Vec<String> = ["x", "y"]
        .iter()
        .map(|n| {
            make_torrent(
                &seed_dir.join(format!("{n}.bin")),
                &tmp.join(&format!("{n}.torrent")),
                &[],
                256 * 1024,
            )
            .to_str()
            .unwrap()
            .to_string()
        })
        .collect();
    let (_s1, p1) = start_seeder(&tmp, &seed_dir, &t[0], &[]);
    let (_s2, p2) = start_seeder(&tmp, &seed_dir, &t[1], &[]);
    let out = tmp.join("out");
    let mut o = ClientOptions::new(&t[0], &out, true);
    o.more = vec![t[1].clone().into()];
    o.listen = "127.0.0.1:0".parse().unwrap();
    o.bind_ip = Some("127.0.0.1".parse().unwrap());
    o.no_tracker = true;
    o.peers = vec![
        format!("127.0.0.1:{p1}").parse().unwrap(),
        format!("127.0.0.1:{p2}").parse().unwrap(),
    ];
    o.config.cache_bytes = 4 << 20;
    let outcome = client::run(&o).unwrap();
    assert!(outcome.complete, "{outcome:?}");
    assert_same_files(&seed_dir, &out, BIG);
    assert!(
        outcome.peak_cache <= 4 << 20,
        "the caches held {} bytes together",
        outcome.peak_cache
    );
    assert!(outcome.peak_cache > 0);
}

#[test]
fn an_idle_connected_peer_does_not_wake_the_loop_every_second() {
    let tmp = TempDir::new("session-wakeups");
    let (seed_dir, t) = three_torrents(&tmp);
    let mut o = ClientOptions::new(&t[0], &seed_dir, false);
    o.listen = "127.0.0.1:0".parse().unwrap();
    o.bind_ip = Some("127.0.0.1".parse().unwrap());
    let mut session = client::prepare(&o).unwrap();
    let port = session.listen_addr().unwrap().port();
    let handle = session.handle();
    let runner = std::thread::spawn(move || session.run().unwrap());
    // A peer that handshakes and then says nothing (not interested).
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(&handshake(&info_hash(&t[0]))).unwrap();
    let mut back = [0u8; 68];
    s.read_exact(&mut back).unwrap();
    std::thread::sleep(Duration::from_secs(8));
    handle.stop();
    let outcome = runner.join().unwrap();
    // Without traffic it sleeps until the peer's choke-round or keep-alive
    // deadline (it used to wake every second: 8 or more turns).
    assert!(outcome.turns <= 6, "{} loop turns in 8 s", outcome.turns);
    drop(s);
}
