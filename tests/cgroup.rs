//! A download in a small box: the leecher, with default settings, runs in a
//! memory cgroup of 16 MiB made by the test (page cache included) and
//! fetches 256 MiB from a seeder outside it, byte for byte, without being
//! OOM-killed. It finds the limit itself (the automatic memory budget).
//!
//! Uses cgroup v2 where its memory controller is available, else v1. Needs
//! root; skipped with a message when the machine has no memory controller
//! (or the test may not create a cgroup).

mod common;
use common::*;
use piecemeal::memory::{CgroupVersion, parse_mountinfo};
use std::ffi::CString;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const LIMIT: u64 = 16 << 20;
const SIZE: usize = 256 << 20;
const PIECE: u32 = 1 << 20;

/// A memory cgroup made for the test, removed on drop.
struct MemCgroup {
    dir: PathBuf,
    version: CgroupVersion,
}

impl MemCgroup {
    /// A new cgroup `name` limited to `limit` bytes (swap included where the
    /// kernel offers a separate knob), or why none can be made.
    fn create(name: &str, limit: u64) -> Result<MemCgroup, String> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mounts = parse_mountinfo(&mountinfo);
        let limit = limit.to_string();
        // v2: a cgroup2 mount whose root offers the memory controller.
        for m in mounts.iter().filter(|m| m.version == CgroupVersion::V2) {
            let root = &m.mount_point;
            let offered = std::fs::read_to_string(root.join("cgroup.controllers"))
                .unwrap_or_default()
                .split_whitespace()
                .any(|c| c == "memory");
            if !offered {
                continue;
            }
            // Children get memory.max once the root delegates the controller.
            let _ = std::fs::write(root.join("cgroup.subtree_control"), "+memory");
            let cg = MemCgroup::make(root.join(name), CgroupVersion::V2)?;
            cg.write("memory.max", &limit)?;
            let _ = cg.write("memory.swap.max", "0");
            return Ok(cg);
        }
        if let Some(m) = mounts
            .iter()
            .find(|m| m.version == CgroupVersion::V1 && m.memory)
        {
            let cg = MemCgroup::make(m.mount_point.join(name), CgroupVersion::V1)?;
            cg.write("memory.limit_in_bytes", &limit)?;
            // Memory plus swap, where swap accounting is on (after the limit).
            let _ = cg.write("memory.memsw.limit_in_bytes", &limit);
            return Ok(cg);
        }
        Err(
            "this machine has no memory cgroup controller (no cgroup2 mount offering \
             `memory`, no v1 memory hierarchy in /proc/self/mountinfo)"
                .into(),
        )
    }

    fn make(dir: PathBuf, version: CgroupVersion) -> Result<MemCgroup, String> {
        std::fs::create_dir(&dir)
            .map_err(|e| format!("cannot create the cgroup {}: {e}", dir.display()))?;
        Ok(MemCgroup { dir, version })
    }

    fn write(&self, file: &str, value: &str) -> Result<(), String> {
        std::fs::write(self.dir.join(file), value).map_err(|e| {
            format!(
                "cannot write {value} to {file} of {}: {e}",
                self.dir.display()
            )
        })
    }

    fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.dir.join(file)).unwrap_or_default()
    }

    /// Processes the OOM killer killed in this cgroup.
    fn oom_kills(&self) -> u64 {
        let file = match self.version {
            CgroupVersion::V2 => "memory.events",
            CgroupVersion::V1 => "memory.oom_control",
        };
        self.read(file)
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Most memory charged to the cgroup at once, where the kernel says.
    fn peak(&self) -> Option<u64> {
        let file = match self.version {
            CgroupVersion::V2 => "memory.peak",
            CgroupVersion::V1 => "memory.max_usage_in_bytes",
        };
        self.read(file).trim().parse().ok()
    }

    /// Make `cmd`'s child move itself into this cgroup before it runs
    /// anything (`0` written to `cgroup.procs` moves the writer).
    fn enter_on_spawn(&self, cmd: &mut Command) {
        let procs = CString::new(self.dir.join("cgroup.procs").as_os_str().as_bytes()).unwrap();
        // SAFETY: between fork and exec the closure only calls open, write
        // and close (async-signal-safe) and allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let n = libc::write(fd, b"0".as_ptr().cast(), 1);
                let err = std::io::Error::last_os_error();
                libc::close(fd);
                if n == 1 { Ok(()) } else { Err(err) }
            });
        }
    }
}

impl Drop for MemCgroup {
    fn drop(&mut self) {
        // The leecher has exited; its cgroup empties a moment later.
        for _ in 0..100 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("could not remove the cgroup {}", self.dir.display());
    }
}

/// `SIZE` pseudo-random bytes, written 4 MiB at a time.
fn write_data(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for i in 0..SIZE / (4 << 20) {
        std::io::Write::write_all(&mut f, &pseudo_random(4 << 20, i as u64 + 7)).unwrap();
    }
    std::io::Write::flush(&mut f).unwrap();
}

/// The two files are identical (read 1 MiB at a time).
fn assert_same_contents(a: &Path, b: &Path) {
    let (mut fa, mut fb) = (
        std::fs::File::open(a).unwrap(),
        std::fs::File::open(b).unwrap(),
    );
    assert_eq!(
        fa.metadata().unwrap().len(),
        fb.metadata().unwrap().len(),
        "lengths differ"
    );
    let (mut x, mut y) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut at = 0u64;
    loop {
        let n = fa.read(&mut x).unwrap();
        if n == 0 {
            break;
        }
        fb.read_exact(&mut y[..n]).unwrap();
        assert!(x[..n] == y[..n], "contents differ in the MiB at {at}");
        at += n as u64;
    }
}

#[test]
fn download_of_256_mib_fits_a_16_mib_memory_cgroup() {
    let cg = match MemCgroup::create(&format!("pm-test-{}", std::process::id()), LIMIT) {
        Ok(cg) => cg,
        Err(why) => {
            eprintln!("SKIPPED download_of_256_mib_fits_a_16_mib_memory_cgroup: {why}");
            return;
        }
    };
    let tmp = TempDir::new("cgroup");
    let seed_dir = tmp.join("seed");
    write_data(&seed_dir.join("big.bin"));
    let torrent = make_torrent(
        &seed_dir.join("big.bin"),
        &tmp.join("big.torrent"),
        &[],
        PIECE,
    );
    let t = torrent.to_str().unwrap();
    let (mut seeder, sp) = start_seeder(&tmp, &seed_dir, t, &[]);

    let out = tmp.join("out");
    let peer = format!("127.0.0.1:{sp}");
    let mut cmd = Command::new(BIN);
    cmd.args(download_args(t, &out, &peer))
        .args(["--bind", "127.0.0.1", "--machine"])
        .current_dir(tmp.path());
    cg.enter_on_spawn(&mut cmd);
    let mut leech = Proc::spawn("leech", cmd, tmp.path());
    let code = leech.wait(Duration::from_secs(300));
    let log = leech.log_text();
    let kills = cg.oom_kills();
    assert_eq!(kills, 0, "the leecher was OOM-killed; log:\n{log}");
    assert_eq!(code, 0, "log:\n{log}");
    assert!(leech.status().done, "no @done line; log:\n{log}");
    // It found the limit itself: the budget line names this cgroup.
    let budget = log
        .lines()
        .find(|l| l.contains("memory: piece cache"))
        .unwrap_or_else(|| panic!("no budget line; log:\n{log}"));
    assert!(
        budget.contains(cg.dir.to_str().unwrap()) && budget.contains("16.0 MiB"),
        "the budget is not from the test's cgroup: {budget}"
    );
    let peak = cg.peak();
    eprintln!(
        "{:?} cgroup {}: peak {peak:?} bytes; {budget}",
        cg.version,
        cg.dir.display()
    );
    assert!(peak.is_none_or(|p| p > 0 && p <= LIMIT), "peak {peak:?}");
    assert_same_contents(&seed_dir.join("big.bin"), &out.join("big.bin"));
    assert_eq!(seeder.terminate(Duration::from_secs(10)), 0);
}
