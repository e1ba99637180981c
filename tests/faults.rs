//! Machine faults: a full disk, and running out of file descriptors.

mod common;
use common::*;
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn sh(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

#[test]
fn full_disk_loses_nothing_and_the_download_completes_when_space_returns() {
    let tmp = TempDir::new("diskfull");
    let seed_dir = tmp.join("seed");
    const FILES: &[(&str, usize)] = &[("big.bin", 6_000_000)];
    write_files(&seed_dir, FILES);
    let torrent = make_torrent(
        &seed_dir.join("big.bin"),
        &tmp.join("b.torrent"),
        &[],
        65536,
    );
    let t = torrent.to_str().unwrap();
    let small = tmp.join("small");
    std::fs::create_dir_all(&small).unwrap();
    // A 2 MiB file system made by the test (we run as root).
    assert!(
        sh(&format!(
            "mount -t tmpfs -o size=2m pm-test-full {}",
            small.display()
        )),
        "could not mount a tmpfs (the test needs root)"
    );
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(small.clone());
    let (_seeder, sp) = start_seeder(&tmp, &seed_dir, t, &[]);
    let mut leech = Proc::start(
        "leech",
        tmp.path(),
        &[
            "download",
            t,
            "-o",
            small.to_str().unwrap(),
            "--peer",
            &sp,
            "--port",
            "0",
        ],
        tmp.path(),
    );
    // It reports the failed write and keeps running, pieces kept in memory.
    let end = Instant::now() + Duration::from_secs(30);
    while !leech.log_text().contains("cannot write verified piece") {
        assert!(
            Instant::now() < end,
            "no disk-full error seen:\n{}",
            leech.log_text()
        );
        assert!(
            leech.child.try_wait().unwrap().is_none(),
            "exited:\n{}",
            leech.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The 6 MB file could not be reserved on a 2 MiB disk: said at the
    // start, and the download went on into a sparse file.
    assert!(
        leech
            .log_text()
            .contains("cannot reserve its 6000000 bytes up front"),
        "{}",
        leech.log_text()
    );
    // While the disk stays full the loop sleeps between write attempts
    // (it used to spin at 100% CPU, re-reading peers it could not serve).
    std::thread::sleep(Duration::from_millis(500));
    let before = cpu_ticks(leech.child.id());
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(leech.child.id()) - before;
    assert!(
        used < 50,
        "the loop spun on a full disk: {used} ticks of CPU in 2 s"
    );
    assert!(
        leech.child.try_wait().unwrap().is_none(),
        "exited on a full disk:\n{}",
        leech.log_text()
    );
    // Space returns: the download completes with correct data.
    assert!(sh(&format!(
        "mount -o remount,size=20m {}",
        small.display()
    )));
    assert_eq!(
        leech.wait(Duration::from_secs(60)),
        0,
        "log:\n{}",
        leech.log_text()
    );
    assert!(
        leech.log_text().contains("writing to disk works again"),
        "{}",
        leech.log_text()
    );
    assert_same_files(&seed_dir, &small, FILES);
}

/// Connect, send a handshake, and see whether one comes back within a second.
fn handshake_answered(port: u16, info_hash: [u8; 20]) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let hs = handshake_bytes(&info_hash, b"-XX0001-probeprobe00");
    let mut answer = [0u8; 68];
    s.write_all(&hs).is_ok() && s.read_exact(&mut answer).is_ok() && answer[28..48] == info_hash
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn out_of_file_descriptors_no_busy_loop_and_the_listener_recovers() {
    let tmp = TempDir::new("nofile");
    let seed_dir = tmp.join("seed");
    const FILES: &[(&str, usize)] = &[("f.bin", 1_000_000)];
    write_files(&seed_dir, FILES);
    let torrent = make_torrent(&seed_dir.join("f.bin"), &tmp.join("f.torrent"), &[], 32768);
    let t = torrent.to_str().unwrap();
    let sp = free_port();
    let log = tmp.join("seeder.log");
    let mut cmd = Command::new(BIN);
    cmd.args([
        "seed",
        t,
        "--port",
        &sp.to_string(),
        "--bind",
        "127.0.0.1",
        "--max-peers",
        "1000",
        "--verbose",
    ])
    .current_dir(&seed_dir)
    .stdout(Stdio::null())
    .stderr(Stdio::from(std::fs::File::create(&log).unwrap()));
    // SAFETY: setrlimit is async-signal-safe; nothing else runs in the child yet.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 64,
                rlim_max: 64,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut seeder = cmd.spawn().unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", sp)).is_err() {
        assert!(Instant::now() < end, "seeder did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    // 500 idle connections: far more than 64 descriptors.
    let conns: Vec<TcpStream> = (0..500)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", sp)).ok())
        .collect();
    assert!(conns.len() > 100);
    std::thread::sleep(Duration::from_millis(500));
    let before = cpu_ticks(seeder.id());
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(seeder.id()) - before;
    assert!(
        used < 50,
        "seeder spun on accept: {used} ticks of CPU in 2 s"
    );
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("accept failed"),
        "EMFILE never hit"
    );
    drop(conns);
    // The listener takes new peers again: a handshake gets an answer.
    let info_hash = piecemeal::metainfo::Metainfo::load(&torrent)
        .unwrap()
        .info_hash;
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(
            Instant::now() < end,
            "listener never recovered:\n{}",
            std::fs::read_to_string(&log).unwrap()
        );
        if handshake_answered(sp, info_hash) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let out_dir = tmp.join("out");
    let out = Command::new(BIN)
        .args([
            "download",
            t,
            "-o",
            out_dir.to_str().unwrap(),
            "--peer",
            &sp.to_string(),
            "--port",
            "0",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_same_files(&seed_dir, &out_dir, FILES);
    let _ = seeder.kill();
    let _ = seeder.wait();
}

/// `BIN args…` in `cwd` with at most `nofile` descriptors; stderr to `log`.
fn limited(args: &[&str], cwd: &std::path::Path, nofile: u64, log: &std::path::Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .current_dir(cwd)
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(log).unwrap()));
    // SAFETY: setrlimit is async-signal-safe; nothing else runs in the child yet.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: nofile,
                rlim_max: nofile,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

#[test]
fn fifteen_hundred_files_under_ulimit_256() {
    // Every file used to be held open: "Too many open files" at 1,024.
    let tmp = TempDir::new("manyfiles");
    let names: Vec<String> = (0..1500)
        .map(|i| format!("many/d{}/f{i}.bin", i % 10))
        .collect();
    let files: Vec<(&str, usize)> = names
        .iter()
        .map(|n| (n.as_str(), 1000 + i_len(n)))
        .collect();
    let seed_dir = tmp.join("seed");
    write_files(&seed_dir, &files);
    let torrent = make_torrent(&seed_dir.join("many"), &tmp.join("m.torrent"), &[], 16384);
    let t = torrent.to_str().unwrap();
    let sp = free_port().to_string();
    let seed_log = tmp.join("seeder.log");
    let mut seeder = limited(
        &["seed", t, "--port", &sp, "--bind", "127.0.0.1"],
        &seed_dir,
        256,
        &seed_log,
    )
    .spawn()
    .unwrap();
    let end = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", sp.parse::<u16>().unwrap())).is_err() {
        assert!(
            Instant::now() < end,
            "seeder did not listen:\n{}",
            std::fs::read_to_string(&seed_log).unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = tmp.join("out");
    let leech_log = tmp.join("leech.log");
    let status = limited(
        &[
            "download",
            t,
            "-o",
            out.to_str().unwrap(),
            "--peer",
            &sp,
            "--port",
            "0",
        ],
        tmp.path(),
        256,
        &leech_log,
    )
    .status()
    .unwrap();
    let _ = seeder.kill();
    let _ = seeder.wait();
    assert_eq!(
        status.code(),
        Some(0),
        "{}",
        std::fs::read_to_string(&leech_log).unwrap()
    );
    assert_same_files(&seed_dir, &out, &files);
}

/// A size that differs from file to file (so boundaries fall anywhere).
fn i_len(name: &str) -> usize {
    name.bytes().map(usize::from).sum::<usize>() % 700
}
