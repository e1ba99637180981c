//! The command line as a user meets it: create, info, bad input.

mod common;
use common::*;
use std::process::Command;

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

// ---- Issue 11: the command line as people use it ----

/// A child whose stdout lines are collected (for `--json`), stderr to a file.
struct Watched {
    child: std::process::Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    log: std::path::PathBuf,
}

impl Watched {
    fn start(tmp: &TempDir, name: &str, args: &[&str]) -> Watched {
        use std::io::BufRead;
        let log = tmp.join(&format!("{name}.log"));
        let mut child = Command::new(BIN)
            .args(args)
            .current_dir(tmp.path())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let l = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                l.lock().unwrap().push(line);
            }
        });
        Watched { child, lines, log }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait until a stdout line contains `needle`; panic after `secs`.
    fn wait_line(&mut self, needle: &str, secs: u64) -> String {
        let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            if let Some(l) = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
            {
                return l.clone();
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("exited ({st}) before {needle:?}:\n{}", self.log_text());
            }
            assert!(
                std::time::Instant::now() < end,
                "no {needle:?} within {secs} s; stdout {:?}\nlog:\n{}",
                self.lines.lock().unwrap(),
                self.log_text()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// SIGTERM, then the exit code.
    fn stop(&mut self) -> Option<i32> {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                std::thread::sleep(std::time::Duration::from_millis(50));
                return st.code();
            }
            assert!(std::time::Instant::now() < end, "did not stop");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The one `piecemeal: ` line of a failed command's stderr.
fn error_line(stderr: &str) -> String {
    stderr
        .lines()
        .find(|l| l.starts_with("piecemeal: "))
        .unwrap_or_else(|| panic!("no error line in:\n{stderr}"))
        .to_string()
}

#[test]
fn info_names_the_file_and_says_what_is_wrong_in_plain_words() {
    let tmp = TempDir::new("cli-words");
    std::fs::write(tmp.join("file.bin"), pseudo_random(5000, 1)).unwrap();
    std::fs::write(tmp.join("empty"), b"").unwrap();
    let p = |n: &str| tmp.join(n).to_str().unwrap().to_string();
    for (arg, expect) in [
        (p("file.bin"), "does not look like a .torrent file"),
        (p("empty"), "is empty, not a .torrent file"),
        (p("missing.torrent"), "no such file or folder"),
        (tmp.path().to_str().unwrap().to_string(), "is a folder"),
        (
            "https://example.org/x.torrent".into(),
            "URLs are not supported yet",
        ),
    ] {
        for cmd in ["info", "download"] {
            let (code, _, stderr) =
                run(&[cmd, &arg, "--port", "0"][..if cmd == "info" { 2 } else { 4 }]);
            assert_eq!(code, Some(2), "{cmd} {arg}: {stderr}");
            let line = error_line(&stderr);
            assert!(line.contains(expect), "{cmd} {arg}: {line}");
            assert!(!stderr.contains("os error"), "{stderr}");
            if !arg.contains(':') {
                assert!(line.contains(&arg), "the file is named: {line}");
            }
        }
    }
}

#[test]
fn output_pointing_at_a_file_says_so() {
    let tmp = TempDir::new("cli-ofile");
    let (seed_dir, t) = seed_data(&tmp, &[("f.bin", 40_000)], "f.bin", &[], 16384);
    let f = seed_dir.join("f.bin");
    for cmd in ["download", "seed"] {
        let (code, _, stderr) = run(&[cmd, &t, "-o", f.to_str().unwrap(), "--port", "0"]);
        assert_eq!(code, Some(2), "{stderr}");
        let line = error_line(&stderr);
        assert!(line.contains("is a file"), "{line}");
        assert!(line.contains(f.to_str().unwrap()), "{line}");
    }
}

#[test]
fn seeding_none_of_the_data_is_refused() {
    let tmp = TempDir::new("cli-seed-nothing");
    let (_seed_dir, t) = seed_data(&tmp, &[("f.bin", 40_000)], "f.bin", &[], 16384);
    let empty = tmp.join("elsewhere");
    std::fs::create_dir_all(&empty).unwrap();
    for dir in [empty.clone(), tmp.join("no-such-folder")] {
        let (code, _, stderr) = run(&["seed", &t, "-o", dir.to_str().unwrap(), "--port", "0"]);
        assert_eq!(code, Some(2), "{stderr}");
        let line = error_line(&stderr);
        assert!(line.contains("nothing to seed"), "{line}");
        assert!(line.contains("-o"), "says how to proceed: {line}");
    }
    // The original form (seed without -d) too.
    let o = Command::new(BIN)
        .args(["-t", &t, "-sp", "0"])
        .current_dir(&empty)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn an_interrupted_download_exits_3_and_a_finished_one_0() {
    let tmp = TempDir::new("cli-exit3");
    let (seed_dir, t) = seed_data(&tmp, &[("f.bin", 3_000_000)], "f.bin", &[], 32768);
    let out = tmp.join("out");
    let mut dl = Watched::start(
        &tmp,
        "leech",
        &[
            "download",
            &t,
            "-o",
            out.to_str().unwrap(),
            "--port",
            "0",
            "--no-tracker",
            "--json",
        ],
    );
    // Nobody to download from: the status says why, then a stop is exit 3.
    let line = dl.wait_line("no tracker and no --peer", 10);
    assert!(line.starts_with("{\"event\":\"status\""), "{line}");
    assert_eq!(dl.stop(), Some(3), "{}", dl.log_text());
    let last = dl.lines.lock().unwrap().last().cloned().unwrap();
    assert!(last.starts_with("{\"event\":\"done\""), "{last}");
    assert!(
        last.contains("\"complete\":false") && last.contains("\"exit_code\":3"),
        "{last}"
    );
    assert!(
        dl.log_text().contains("stopped before complete"),
        "{}",
        dl.log_text()
    );
    // The same command with a seeder completes: 0, and -q prints nothing.
    let (mut seeder, sp) = start_seeder(&tmp, &seed_dir, &t, &[]);
    let o = Command::new(BIN)
        .args([
            "download",
            &t,
            "-o",
            out.to_str().unwrap(),
            "--port",
            "0",
            "--peer",
            &sp,
        ])
        .arg("-q")
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        o.stderr.is_empty(),
        "-q: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_same_files(&seed_dir, &out, &[("f.bin", 3_000_000)]);
    seeder.terminate(std::time::Duration::from_secs(10));
}

#[test]
fn waiting_for_a_peer_that_refuses_or_a_tracker_that_fails_is_shown() {
    let tmp = TempDir::new("cli-waiting");
    let dead = free_port();
    let url = format!("http://127.0.0.1:{}/announce", free_port());
    let (_seed_dir, t) = seed_data(&tmp, &[("f.bin", 100_000)], "f.bin", &[url], 16384);
    let out = tmp.join("out");
    let o = out.to_str().unwrap();
    let peer = dead.to_string();
    let mut dl = Watched::start(
        &tmp,
        "refused",
        &[
            "download",
            &t,
            "-o",
            o,
            "--port",
            "0",
            "--no-tracker",
            "--peer",
            &peer,
            "--json",
        ],
    );
    dl.wait_line(&format!("peer 127.0.0.1:{dead} refuses connections"), 10);
    assert!(dl.log_text().contains("refuses connections"), "logged too");
    assert_eq!(dl.stop(), Some(3));
    let mut dl = Watched::start(
        &tmp,
        "tracker",
        &["download", &t, "-o", o, "--port", "0", "--json"],
    );
    dl.wait_line("tracker failing (last: ", 10);
    assert_eq!(dl.stop(), Some(3));
    assert!(!dl.log_text().contains("os error"), "{}", dl.log_text());
}

#[test]
fn the_only_seeder_leaving_is_shown() {
    let tmp = TempDir::new("cli-seeder-gone");
    let (seed_dir, t) = seed_data(&tmp, &[("f.bin", 2_000_000)], "f.bin", &[], 16384);
    let (mut seeder, sp) = start_seeder(&tmp, &seed_dir, &t, &["--upload-limit", "200K"]);
    let out = tmp.join("out");
    let mut dl = Watched::start(
        &tmp,
        "leech",
        &[
            "download",
            &t,
            "-o",
            out.to_str().unwrap(),
            "--port",
            "0",
            "--peer",
            &sp,
            "--json",
        ],
    );
    dl.wait_line("\"seeds\":1", 10);
    seeder.terminate(std::time::Duration::from_secs(10));
    let line = dl.wait_line("refuses connections", 15);
    assert!(line.contains("\"peers\":0"), "{line}");
    assert_eq!(dl.stop(), Some(3));
}

#[test]
fn a_file_in_the_way_is_not_overwritten_without_overwrite() {
    let tmp = TempDir::new("cli-overwrite");
    let (seed_dir, t) = seed_data(&tmp, &[("f.bin", 300_000)], "f.bin", &[], 16384);
    let out = tmp.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let theirs = pseudo_random(123_456, 99);
    let o = out.to_str().unwrap();
    for (len, what) in [(123_456, "shorter"), (400_000, "longer")] {
        let theirs = pseudo_random(len, 99);
        std::fs::write(out.join("f.bin"), &theirs).unwrap();
        let (code, _, stderr) = run(&["download", &t, "-o", o, "--port", "0", "--no-tracker"]);
        assert_eq!(code, Some(2), "{what}: {stderr}");
        let line = error_line(&stderr);
        assert!(
            line.contains("f.bin") && line.contains("--overwrite"),
            "{line}"
        );
        assert_eq!(
            std::fs::read(out.join("f.bin")).unwrap(),
            theirs,
            "{what}: untouched"
        );
    }
    // A file of the right size is resumed (checked), a shorter one that is
    // the start of the data too.
    std::fs::write(
        out.join("f.bin"),
        &std::fs::read(seed_dir.join("f.bin")).unwrap()[..100_000],
    )
    .unwrap();
    let (mut seeder, sp) = start_seeder(&tmp, &seed_dir, &t, &[]);
    let (code, _, stderr) = run(&["download", &t, "-o", o, "--port", "0", "--peer", &sp]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(verified_at_start(&stderr), Some(6), "{stderr}");
    assert_same_files(&seed_dir, &out, &[("f.bin", 300_000)]);
    // --overwrite replaces what is there.
    std::fs::write(out.join("f.bin"), &theirs).unwrap();
    let (code, _, stderr) = run(&[
        "download",
        &t,
        "-o",
        o,
        "--port",
        "0",
        "--peer",
        &sp,
        "--overwrite",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_same_files(&seed_dir, &out, &[("f.bin", 300_000)]);
    std::fs::write(out.join("f.bin"), pseudo_random(400_000, 7)).unwrap();
    let (code, _, stderr) = run(&[
        "download",
        &t,
        "-o",
        o,
        "--port",
        "0",
        "--peer",
        &sp,
        "--overwrite",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_same_files(&seed_dir, &out, &[("f.bin", 300_000)]);
    seeder.terminate(std::time::Duration::from_secs(10));
}

#[test]
fn busy_ports_are_named_and_bound_before_the_check() {
    let tmp = TempDir::new("cli-ports");
    let (seed_dir, t) = seed_data(&tmp, &[("f.bin", 100_000)], "f.bin", &[], 16384);
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = held.local_addr().unwrap().port().to_string();
    let sd = seed_dir.to_str().unwrap();
    let base = ["seed", &t, "-o", sd, "--bind", "127.0.0.1"];
    for (extra, names) in [
        (
            vec!["--port", "0", "--tracker-port", &busy],
            "--tracker-port",
        ),
        (vec!["--port", &busy], "for peers"),
    ] {
        let args: Vec<&str> = base.iter().copied().chain(extra).collect();
        let (code, _, stderr) = run(&args);
        assert_eq!(code, Some(1), "{stderr}");
        let line = error_line(&stderr);
        assert!(line.contains(&format!("127.0.0.1:{busy}")), "{line}");
        assert!(line.contains(names) && line.contains("in use"), "{line}");
        assert!(
            !stderr.contains("verified on disk"),
            "bound before the check:\n{stderr}"
        );
    }
}

#[test]
fn the_default_port_falls_back_to_the_next_free_one() {
    let tmp = TempDir::new("cli-fallback");
    let (seed_dir, t) = seed_data(&tmp, &[("f.bin", 100_000)], "f.bin", &[], 16384);
    // 6881 taken (by us, or by someone else already).
    let _held = std::net::TcpListener::bind("127.0.0.1:6881");
    let mut seeder = Watched::start(
        &tmp,
        "seeder",
        &[
            "seed",
            &t,
            "-o",
            seed_dir.to_str().unwrap(),
            "--bind",
            "127.0.0.1",
            "--json",
        ],
    );
    seeder.wait_line("\"event\":\"status\"", 10);
    let log = seeder.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("port 6881 is in use; listening for peers on port "))
        .unwrap_or_else(|| panic!("{log}"));
    let port: u16 = line
        .rsplit("port ")
        .next()
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!((6882..=6889).contains(&port), "{line}");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    assert_eq!(seeder.stop(), Some(0));
}

#[test]
fn create_checks_urls_keeps_existing_files_and_names_the_output() {
    let tmp = TempDir::new("cli-create-safe");
    write_files(tmp.path(), AWKWARD);
    let src = tmp.join("awkward");
    let s = src.to_str().unwrap();
    for bad in [
        "notaurl",
        "ftp://x/announce",
        "udp://tracker.example/announce",
    ] {
        let (code, _, stderr) = run(&["create", s, "--tracker", bad, "-o", "/dev/null/x"]);
        assert_eq!(code, Some(2), "{bad}: {stderr}");
        assert!(
            stderr.contains("http, https or udp") || stderr.contains("port"),
            "{stderr}"
        );
    }
    // -o defaults to NAME.torrent in the current folder.
    let o = Command::new(BIN)
        .args(["create", s, "--tracker", "udp://127.0.0.1:6969"])
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let made = tmp.join("awkward.torrent");
    let first = std::fs::read(&made).unwrap();
    // A second time: refused without --force, the file untouched.
    let again = Command::new(BIN)
        .args(["create", s, "--comment", "new"])
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(error_line(&stderr).contains("--force"), "{stderr}");
    assert_eq!(std::fs::read(&made).unwrap(), first);
    let forced = Command::new(BIN)
        .args(["create", s, "--comment", "new", "--force"])
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert_eq!(forced.status.code(), Some(0));
    assert_ne!(std::fs::read(&made).unwrap(), first);
}

#[test]
fn help_completions_and_man_page() {
    let (code, help, _) = run(&["seed", "--help"]);
    assert_eq!(code, Some(0));
    assert!(!help.contains("--seed "), "{help}");
    assert!(!help.contains("--overwrite"), "{help}");
    assert!(
        help.contains("at most 16M") && help.contains("[default: 50"),
        "{help}"
    );
    assert!(help.contains("default: 6881"), "{help}");
    let (_, help, _) = run(&["download", "--help"]);
    assert!(help.contains("--seed") && help.contains("--overwrite") && help.contains("--json"));
    let (code, _, stderr) = run(&["tracker", "-p", "0", "--help"]);
    assert_eq!(code, Some(0), "{stderr}");
    for shell in ["bash", "zsh", "fish"] {
        let (code, script, _) = run(&["completions", shell]);
        assert_eq!(code, Some(0));
        assert!(
            script.contains("download") && script.contains("--seed-ratio"),
            "{shell}"
        );
    }
    let (code, man, _) = run(&["manpage"]);
    assert_eq!(code, Some(0));
    assert!(
        man.contains(".TH piecemeal") && man.contains("download"),
        "{man}"
    );
    let tmp = TempDir::new("cli-man");
    let (code, _, _) = run(&["manpage", "--dir", tmp.path().to_str().unwrap()]);
    assert_eq!(code, Some(0));
    assert!(tmp.join("piecemeal-download.1").exists());
    // Options of the original form are not mixed with a subcommand.
    let (code, _, stderr) = run(&["-t", "x.torrent", "info", "y.torrent"]);
    assert_eq!(code, Some(2), "{stderr}");
}
