//! Real swarms on loopback: the built-in tracker, one seeder, leechers;
//! every byte compared.

mod common;
use common::*;
use std::time::Duration;

#[test]
fn seeder_and_three_leechers_through_the_tracker_on_awkward_files() {
    let tmp = TempDir::new("swarm");
    let seed_dir = tmp.join("seed");
    write_files(&seed_dir, AWKWARD);
    let tport = free_port();
    let announce = format!("http://127.0.0.1:{tport}/announce");
    // 64 KiB pieces: file boundaries fall inside pieces; the last piece is short.
    let torrent = make_torrent(
        &seed_dir.join("awkward"),
        &tmp.join("awkward.torrent"),
        &[announce],
        65536,
    );
    let t = torrent.to_str().unwrap();
    let logs = tmp.path();
    let tp = tport.to_string();
    let _tracker = Proc::start(
        "tracker",
        logs,
        &[
            "tracker",
            "--bind",
            "127.0.0.1",
            "--port",
            &tp,
            "--interval",
            "2",
        ],
        logs,
    );
    // The seeder is slowed down so that leechers must trade pieces.
    let mut seeder = Proc::start(
        "seeder",
        &seed_dir,
        &[
            "seed",
            t,
            "--bind",
            "127.0.0.1",
            "--port",
            "0",
            "--upload-limit",
            "2M",
            "--verbose",
        ],
        logs,
    );
    let mut leechers: Vec<Proc> = (1..=3)
        .map(|i| {
            let dir = tmp.join(&format!("leech{i}"));
            std::fs::create_dir_all(&dir).unwrap();
            Proc::start(
                &format!("leech{i}"),
                &dir,
                &[
                    "download",
                    t,
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    "0",
                    "--seed",
                    "--verbose",
                ],
                logs,
            )
        })
        .collect();
    for l in leechers.iter_mut() {
        l.wait_for(Duration::from_secs(120), "complete download", |s| {
            s.num > 0 && s.have == s.num
        });
    }
    let total: u64 = AWKWARD.iter().map(|f| f.1 as u64).sum();
    let mut downloaded = 0;
    for (i, l) in leechers.iter_mut().enumerate() {
        assert_eq!(
            l.terminate(Duration::from_secs(10)),
            0,
            "leecher exit code; log:\n{}",
            l.log_text()
        );
        assert_same_files(&seed_dir, &tmp.join(&format!("leech{}", i + 1)), AWKWARD);
        let st = l.status();
        assert!(st.done, "leecher printed its totals");
        assert!(
            st.downloaded >= total,
            "downloaded {} < {total}",
            st.downloaded
        );
        downloaded += st.downloaded;
    }
    assert_eq!(seeder.terminate(Duration::from_secs(10)), 0);
    let up = seeder.status().uploaded;
    // Leechers traded: the seeder sent clearly less than they received.
    assert!(
        (up as f64) < 0.9 * downloaded as f64,
        "seeder uploaded {up} of {downloaded} bytes the leechers received"
    );
    assert!(up > 0);
}

#[test]
fn one_process_seeds_and_tracks_its_own_swarm() {
    let tmp = TempDir::new("embedded-tracker");
    let seed_dir = tmp.join("seed");
    const FILES: &[(&str, usize)] = &[("one.bin", 2_000_000)];
    write_files(&seed_dir, FILES);
    let tport = free_port();
    let announce = format!("http://127.0.0.1:{tport}/announce");
    let torrent = make_torrent(
        &seed_dir.join("one.bin"),
        &tmp.join("one.torrent"),
        &[announce],
        32768,
    );
    let t = torrent.to_str().unwrap();
    let tp = tport.to_string();
    // No separate tracker: the seeder runs it in its own loop.
    let mut seeder = Proc::start(
        "seeder",
        &seed_dir,
        &[
            "seed",
            t,
            "--bind",
            "127.0.0.1",
            "--port",
            "0",
            "--tracker-port",
            &tp,
            "--verbose",
        ],
        tmp.path(),
    );
    let out = tmp.join("out");
    let mut leech = Proc::start(
        "leech",
        tmp.path(),
        &[
            "download",
            t,
            "-o",
            out.to_str().unwrap(),
            "--bind",
            "127.0.0.1",
            "--port",
            "0",
            "--verbose",
        ],
        tmp.path(),
    );
    assert_eq!(
        leech.wait(Duration::from_secs(60)),
        0,
        "leech log:\n{}\nseeder log:\n{}",
        leech.log_text(),
        seeder.log_text()
    );
    assert_same_files(&seed_dir, &out, FILES);
    assert!(
        leech.log_text().contains("tracker http://127.0.0.1"),
        "{}",
        leech.log_text()
    );
    assert_eq!(seeder.terminate(Duration::from_secs(5)), 0);
}
