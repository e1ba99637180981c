//! Downloads without a tracker, straight from a peer given on the command
//! line — including the original interface, run as a user would.

mod common;
use common::*;
use std::process::Command;
use std::time::Duration;

const FILES: &[(&str, usize)] = &[("single.bin", 5_000_000)];

#[test]
fn original_command_line_downloads_from_a_given_peer() {
    let tmp = TempDir::new("legacy");
    let seed_dir = tmp.join("seed");
    write_files(&seed_dir, FILES);
    let torrent = make_torrent(
        &seed_dir.join("single.bin"),
        &tmp.join("single.torrent"),
        &[],
        32768,
    );
    let t = torrent.to_str().unwrap();
    let sp = free_port().to_string();
    // Seed: the original form without -d seeds the data in the current folder.
    let mut seeder = Proc::start("seeder", &seed_dir, &["-t", t, "-sp", &sp], tmp.path());
    std::thread::sleep(Duration::from_millis(300));
    let leech_dir = tmp.join("leech");
    std::fs::create_dir_all(&leech_dir).unwrap();
    let lp = free_port().to_string();
    let out = Command::new(BIN)
        .args(["-t", t, "-d", "-sp", &lp, "-pp", &sp, "--verbose"])
        .current_dir(&leech_dir)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "leecher failed:\n{log}");
    assert!(log.contains("complete"), "summary line missing:\n{log}");
    assert_same_files(&seed_dir, &leech_dir, FILES);
    // The seeder drops the finished leecher (both are seeds now) and keeps
    // serving newcomers.
    std::thread::sleep(Duration::from_millis(1500));
    // (Into a sparse file this time: --sparse reserves no space up front.)
    let second = tmp.join("second");
    let out = Command::new(BIN)
        .args([
            "download",
            t,
            "-o",
            second.to_str().unwrap(),
            "--peer",
            &sp,
            "--port",
            "0",
            "--sparse",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_same_files(&seed_dir, &second, FILES);
    assert_eq!(seeder.terminate(Duration::from_secs(5)), 0);
}

#[test]
fn download_subcommand_with_write_through_cache() {
    let tmp = TempDir::new("cache0");
    let seed_dir = tmp.join("seed");
    write_files(&seed_dir, AWKWARD);
    let torrent = make_torrent(
        &seed_dir.join("awkward"),
        &tmp.join("a.torrent"),
        &[],
        16384,
    );
    let t = torrent.to_str().unwrap();
    let (mut seeder, sp) = start_seeder(&tmp, &seed_dir, t, &[]);
    let out_dir = tmp.join("out");
    let mut leech = Proc::start(
        "leech",
        tmp.path(),
        &[
            "download",
            t,
            "-o",
            out_dir.to_str().unwrap(),
            "--peer",
            &format!("127.0.0.1:{sp}"),
            "--cache",
            "0",
            "--port",
            "0",
        ],
        tmp.path(),
    );
    assert_eq!(
        leech.wait(Duration::from_secs(60)),
        0,
        "log:\n{}",
        leech.log_text()
    );
    assert_same_files(&seed_dir, &out_dir, AWKWARD);
    assert!(leech.status().done);
    assert_eq!(seeder.terminate(Duration::from_secs(5)), 0);
}
