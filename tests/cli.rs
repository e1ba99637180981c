//! The command line as a user meets it: create, info, bad input.

mod common;
use common::*;
use std::process::Command;

fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let o = Command::new(BIN).args(args).output().unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn create_then_info_shows_the_torrent() {
    let tmp = TempDir::new("cli-create");
    write_files(tmp.path(), AWKWARD);
    let out = tmp.join("x.torrent");
    let (code, stdout, stderr) = run(&[
        "create",
        tmp.join("awkward").to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--tracker",
        "http://127.0.0.1:6969/announce",
        "--piece-length",
        "32K",
        "--comment",
        "hello",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    let meta = piecemeal::metainfo::Metainfo::load(&out).unwrap();
    assert!(stdout.contains(&meta.info_hash_hex()));
    let (code, info, _) = run(&["info", out.to_str().unwrap()]);
    assert_eq!(code, Some(0));
    assert!(info.contains("awkward"));
    assert!(info.contains(&meta.info_hash_hex()));
    assert!(info.contains("http://127.0.0.1:6969/announce"));
    assert!(info.contains("c/big") || info.contains("c\\big"), "{info}");
    assert_eq!(meta.info.piece_len, 32768);
    assert_eq!(meta.info.files.len(), AWKWARD.len());
}

/// `info` on a hybrid torrent with BEP 47 pad files (as libtorrent makes
/// them): the real files only, their total, "hybrid" and the v2 info-hash.
#[test]
fn info_on_a_hybrid_torrent_with_pad_files_lists_only_the_real_files() {
    use sha2::{Digest, Sha256};
    let tmp = TempDir::new("cli-pad");
    write_files(tmp.path(), AWKWARD);
    let bytes = padded_hybrid_torrent(tmp.path(), "awkward", AWKWARD, 65536);
    let out = tmp.join("lt-like.torrent");
    std::fs::write(&out, &bytes).unwrap();
    let info_span = piecemeal::bencode::dict_value_span(&bytes, b"info").unwrap();
    let v2: String = Sha256::digest(&bytes[info_span])
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let meta = piecemeal::metainfo::Metainfo::from_bytes(&bytes).unwrap();
    assert!(
        meta.info.files.len() > AWKWARD.len(),
        "the torrent has pads"
    );

    let (code, info, stderr) = run(&["info", out.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!info.contains(".pad"), "{info}");
    assert!(
        info.contains(&format!("files ({}):", AWKWARD.len())),
        "{info}"
    );
    for (path, _) in AWKWARD {
        assert!(info.contains(path), "{path} missing:\n{info}");
    }
    let content: usize = AWKWARD.iter().map(|(_, len)| len).sum();
    assert!(info.contains(&format!("({content} bytes)")), "{info}");
    assert!(info.contains("hybrid"), "{info}");
    assert!(info.contains(&meta.info_hash_hex()), "{info}");
    assert!(info.contains(&v2), "v2 info-hash {v2} missing:\n{info}");
}

#[test]
fn bad_torrents_and_usage_exit_2_with_one_clear_line() {
    let tmp = TempDir::new("cli-bad");
    let garbage = tmp.join("garbage.torrent");
    std::fs::write(&garbage, b"d4:infoi3ee").unwrap();
    for args in [
        vec!["info", garbage.to_str().unwrap()],
        vec!["-t", garbage.to_str().unwrap(), "-d"],
        vec!["info", tmp.join("missing.torrent").to_str().unwrap()],
        vec!["download", garbage.to_str().unwrap(), "--port", "0"],
    ] {
        let (code, _, stderr) = run(&args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        let line = stderr
            .lines()
            .find(|l| l.starts_with("piecemeal: "))
            .unwrap_or_else(|| panic!("{stderr}"));
        assert!(line.len() > 20, "message too vague: {line}");
    }
    let (code, _, _) = run(&["--no-such-flag"]);
    assert_eq!(code, Some(2));
    let (code, _, stderr) = run(&[]);
    assert_eq!(code, Some(2), "{stderr}");
}

#[test]
fn demo_runs_a_small_swarm_and_checks_every_copy() {
    let tmp = TempDir::new("demo");
    let (code, stdout, stderr) = run(&[
        "demo",
        "--size",
        "3M",
        "--leechers",
        "2",
        "--dir",
        tmp.path().to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("all 2 copies match the original byte for byte"),
        "{stdout}"
    );
    assert!(stdout.contains("leecher2"), "{stdout}");
}

#[test]
fn a_closed_stdout_is_not_a_panic() {
    // `piecemeal info T | head -1`, with the reader gone before the first
    // write: the write fails with EPIPE, which must end the command quietly.
    let tmp = TempDir::new("cli-pipe");
    write_files(tmp.path(), AWKWARD);
    let t = tmp.join("p.torrent");
    let (code, _, stderr) = run(&[
        "create",
        tmp.join("awkward").to_str().unwrap(),
        "-o",
        t.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    for args in [
        vec!["info", t.to_str().unwrap()],
        vec![
            "create",
            tmp.join("awkward").to_str().unwrap(),
            "-o",
            tmp.join("q.torrent").to_str().unwrap(),
        ],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let o = Command::new(BIN)
            .args(&args)
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(o.status.code(), Some(0), "{args:?}: {stderr}");
    }
}

#[test]
fn escapes_from_a_torrent_never_reach_the_terminal() {
    // A name and an announce URL holding ESC and BEL: printed by `info`,
    // logged by `download --verbose` (the tracker's address, the file).
    let tmp = TempDir::new("cli-escapes");
    let name = "evil\u{1b}]0;pwned\u{7}\u{1b}[2J.bin";
    let src = tmp.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join(name), pseudo_random(100_000, 3)).unwrap();
    let t = tmp.join("e.torrent");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/a\u{1b}[31m\u{7}");
    let (code, _, stderr) = run(&[
        "create",
        src.join(name).to_str().unwrap(),
        "-o",
        t.to_str().unwrap(),
        "--tracker",
        &url,
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    let o = Command::new(BIN)
        .args(["info", t.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stdout).contains("pwned"));
    let (seed_dir, _) = (src.clone(), ());
    let (mut seeder, sp) = start_seeder(&tmp, &seed_dir, t.to_str().unwrap(), &["--verbose"]);
    let out = tmp.join("out");
    let o = Command::new(BIN)
        .args(download_args(t.to_str().unwrap(), &out, &sp))
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        o.stderr.windows(5).any(|w| w == b"pwned"),
        "the name is logged"
    );
    seeder.terminate(std::time::Duration::from_secs(10));
    for (what, bytes) in [
        (
            "info",
            Command::new(BIN)
                .args(["info", t.to_str().unwrap()])
                .output()
                .unwrap()
                .stdout,
        ),
        ("download log", o.stderr.clone()),
        (
            "seeder log",
            std::fs::read(tmp.path().join("seeder.log")).unwrap_or_default(),
        ),
    ] {
        assert!(
            !bytes.iter().any(|&b| b == 0x1b || b == 0x07),
            "{what} carries a raw escape: {}",
            String::from_utf8_lossy(&bytes)
        );
    }
}
