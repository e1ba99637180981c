//! Limit discovery from sample `/proc` and cgroup files, and the sizing rule.

use super::*;
use std::collections::HashMap;

const MIB: u64 = 1 << 20;

/// A fake file system: path → contents.
struct Files(HashMap<PathBuf, String>);

impl Files {
    fn new(files: &[(&str, &str)]) -> Files {
        Files(
            files
                .iter()
                .map(|(p, t)| (PathBuf::from(p), t.to_string()))
                .collect(),
        )
    }
    fn discover(&self) -> Limits {
        discover(&mut |p: &Path| self.0.get(p).cloned(), None, None)
    }
}

/// This project's test machine: cgroup v1 (hybrid, with a v2 mount that
/// has no memory controller), the shell in a nested memory cgroup.
const V1_PROC_CGROUP: &str = "9:name=systemd:/
8:pids:/
4:memory:/process_api/e924f1f9
3:cpuset:/
1:cpu:/
0::/
";
const V1_MOUNTINFO: &str = "\
23 1 253:0 / / rw,relatime - ext4 /dev/vda rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
const V1_UNLIMITED: &str = "9223372036854771712\n";

/// A systemd machine on cgroup v2 only.
const V2_PROC_CGROUP: &str = "0::/user.slice/user-1000.slice/session-2.scope\n";
const V2_MOUNTINFO: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 24 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

const MEMINFO: &str = "MemTotal:       24683808 kB
MemFree:        20695908 kB
MemAvailable:   24174808 kB
Buffers:           81236 kB
Cached:          3541592 kB
";

#[test]
fn v1_nested_limit_is_found_at_its_level() {
    let f = Files::new(&[
        ("/proc/self/cgroup", V1_PROC_CGROUP),
        ("/proc/self/mountinfo", V1_MOUNTINFO),
        (
            "/sys/fs/cgroup/memory/process_api/e924f1f9/memory.limit_in_bytes",
            V1_UNLIMITED,
        ),
        (
            "/sys/fs/cgroup/memory/process_api/memory.limit_in_bytes",
            "16777216\n",
        ),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", V1_UNLIMITED),
        ("/proc/meminfo", MEMINFO),
    ]);
    let l = f.discover();
    assert_eq!(
        l.cgroup,
        Some(Limit {
            bytes: 16 * MIB,
            source: Source::Cgroup {
                version: CgroupVersion::V1,
                file: "/sys/fs/cgroup/memory/process_api/memory.limit_in_bytes".into(),
            },
        })
    );
    assert_eq!(l.available, Some(24174808 * 1024));
    assert_eq!(l.tightest().unwrap().source, l.cgroup.unwrap().source);
}

#[test]
fn v1_unlimited_everywhere_is_no_limit() {
    let f = Files::new(&[
        ("/proc/self/cgroup", V1_PROC_CGROUP),
        ("/proc/self/mountinfo", V1_MOUNTINFO),
        (
            "/sys/fs/cgroup/memory/process_api/e924f1f9/memory.limit_in_bytes",
            V1_UNLIMITED,
        ),
        (
            "/sys/fs/cgroup/memory/process_api/memory.limit_in_bytes",
            V1_UNLIMITED,
        ),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", V1_UNLIMITED),
        ("/proc/meminfo", MEMINFO),
    ]);
    let l = f.discover();
    assert_eq!(l.cgroup, None);
    assert_eq!(l.tightest().unwrap().source, Source::Available);
}

#[test]
fn v2_nested_takes_the_smallest_of_max_and_high_on_the_way_up() {
    let f = Files::new(&[
        ("/proc/self/cgroup", V2_PROC_CGROUP),
        ("/proc/self/mountinfo", V2_MOUNTINFO),
        (
            "/sys/fs/cgroup/user.slice/user-1000.slice/session-2.scope/memory.max",
            "max\n",
        ),
        (
            "/sys/fs/cgroup/user.slice/user-1000.slice/session-2.scope/memory.high",
            "max\n",
        ),
        (
            "/sys/fs/cgroup/user.slice/user-1000.slice/memory.max",
            "536870912\n",
        ),
        (
            "/sys/fs/cgroup/user.slice/user-1000.slice/memory.high",
            "max\n",
        ),
        ("/sys/fs/cgroup/user.slice/memory.max", "max\n"),
        ("/sys/fs/cgroup/user.slice/memory.high", "268435456\n"),
    ]);
    let l = f.discover();
    let c = l.cgroup.unwrap();
    assert_eq!(c.bytes, 256 * MIB);
    assert_eq!(
        c.source,
        Source::Cgroup {
            version: CgroupVersion::V2,
            file: "/sys/fs/cgroup/user.slice/memory.high".into()
        }
    );
    assert_eq!(l.available, None);
}

#[test]
fn v2_unlimited_is_no_limit() {
    let f = Files::new(&[
        ("/proc/self/cgroup", V2_PROC_CGROUP),
        ("/proc/self/mountinfo", V2_MOUNTINFO),
        (
            "/sys/fs/cgroup/user.slice/user-1000.slice/session-2.scope/memory.max",
            "max\n",
        ),
        ("/sys/fs/cgroup/user.slice/memory.max", "max"),
    ]);
    assert_eq!(f.discover(), Limits::default());
}

#[test]
fn v2_container_with_its_own_cgroup_namespace() {
    // Docker on cgroup v2: the container's cgroup is the namespace's root.
    let f = Files::new(&[
        ("/proc/self/cgroup", "0::/\n"),
        (
            "/proc/self/mountinfo",
            "612 600 0:27 / /sys/fs/cgroup ro,nosuid - cgroup2 cgroup rw\n",
        ),
        ("/sys/fs/cgroup/memory.max", "33554432\n"),
        ("/sys/fs/cgroup/memory.high", "max\n"),
    ]);
    assert_eq!(f.discover().cgroup.unwrap().bytes, 32 * MIB);
}

#[test]
fn v1_container_mounts_its_own_cgroup_as_the_root() {
    // Docker on cgroup v1 without a cgroup namespace: the path names the
    // container's cgroup, which is bind-mounted at the usual place.
    let f = Files::new(&[
        ("/proc/self/cgroup", "11:memory:/docker/0123abcd\n0::/\n"),
        (
            "/proc/self/mountinfo",
            "700 690 0:40 /docker/0123abcd /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory\n",
        ),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "67108864"),
    ]);
    let c = f.discover().cgroup.unwrap();
    assert_eq!(c.bytes, 64 * MIB);
}

#[test]
fn without_mountinfo_the_usual_mount_points_are_tried() {
    let f = Files::new(&[
        ("/proc/self/cgroup", "0::/a/b\n"),
        ("/sys/fs/cgroup/a/b/memory.max", "max"),
        ("/sys/fs/cgroup/a/memory.max", "20971520"),
    ]);
    assert_eq!(f.discover().cgroup.unwrap().bytes, 20 * MIB);
}

#[test]
fn a_v1_line_without_memory_files_falls_back_to_v2() {
    // A hybrid machine whose memory controller is on the v2 side.
    let f = Files::new(&[
        ("/proc/self/cgroup", "4:memory:/x\n0::/y\n"),
        ("/proc/self/mountinfo", V2_MOUNTINFO),
        ("/sys/fs/cgroup/y/memory.max", "10485760"),
    ]);
    let c = f.discover().cgroup.unwrap();
    assert_eq!(c.bytes, 10 * MIB);
    assert!(matches!(
        c.source,
        Source::Cgroup {
            version: CgroupVersion::V2,
            ..
        }
    ));
}

#[test]
fn no_proc_at_all_is_no_limit() {
    assert_eq!(Files::new(&[]).discover(), Limits::default());
}

#[test]
fn dirs_run_from_the_process_cgroup_up_to_the_mount() {
    let c = memory_cgroup_dirs(V1_PROC_CGROUP, V1_MOUNTINFO);
    assert_eq!(
        c[0],
        CgroupDirs {
            version: CgroupVersion::V1,
            dirs: vec![
                "/sys/fs/cgroup/memory/process_api/e924f1f9".into(),
                "/sys/fs/cgroup/memory/process_api".into(),
                "/sys/fs/cgroup/memory".into(),
            ],
        }
    );
    // The v2 mount of this hybrid machine is tried after the v1 hierarchy.
    assert_eq!(c[1].version, CgroupVersion::V2);
    assert_eq!(c[1].dirs, vec![PathBuf::from("/sys/fs/cgroup/unified")]);
}

#[test]
fn mountinfo_parses_escapes_and_comounted_controllers() {
    let m = parse_mountinfo(
        "40 31 0:37 / /sys/fs/cgroup/cpu,memory rw - cgroup cgroup rw,cpu,memory\n\
         41 31 0:38 /a\\040b /mnt/my\\040cgroups rw shared:9 - cgroup2 cgroup2 rw\n\
         not a mountinfo line\n",
    );
    assert_eq!(m.len(), 2);
    assert!(m[0].memory && m[0].version == CgroupVersion::V1);
    assert_eq!(m[1].root, "/a b");
    assert_eq!(m[1].mount_point, PathBuf::from("/mnt/my cgroups"));
    assert_eq!(
        parse_proc_cgroup("5:cpu,memory:/x/y\n"),
        (Some("/x/y".into()), None)
    );
}

#[test]
fn limit_values() {
    assert_eq!(parse_limit("max\n"), None);
    assert_eq!(parse_limit(V1_UNLIMITED), None);
    assert_eq!(parse_limit("16777216\n"), Some(16 * MIB));
    assert_eq!(parse_limit("garbage"), None);
    assert_eq!(parse_meminfo(MEMINFO), Some(24174808 * 1024));
    // Before MemAvailable existed: free plus page cache.
    assert_eq!(
        parse_meminfo("MemFree: 1000 kB\nCached: 24 kB\n"),
        Some(1024 * 1024)
    );
    assert_eq!(parse_meminfo(""), None);
}

fn cgroup(bytes: u64) -> Limits {
    Limits {
        cgroup: Some(Limit {
            bytes,
            source: Source::Cgroup {
                version: CgroupVersion::V2,
                file: "/sys/fs/cgroup/t/memory.max".into(),
            },
        }),
        available: Some(20 << 30),
        ..Limits::default()
    }
}

#[test]
fn a_16_mib_cgroup_gets_a_3_mib_cache_and_4_peers() {
    let base = Config::default();
    let p = plan(&cgroup(16 * MIB), &base);
    // Half of 16 MiB, less 4 MiB fixed: 4 MiB; 3 for the cache, 1 for peers.
    assert_eq!(p.cache_bytes, 3 << 20);
    assert_eq!(p.send_watermark, SMALL_SEND_WATERMARK);
    assert_eq!(p.max_peers, 4);
    assert!(!p.defaults_fit);
    let mut cfg = base.clone();
    p.apply(&mut cfg);
    assert_eq!(cfg.cache_bytes, 3 << 20);
    assert_eq!(cfg.max_half_open, 4);
    let line = p.describe(&cfg);
    assert!(line.contains("piece cache 3.0 MiB"), "{line}");
    assert!(line.contains("up to 4 peers"), "{line}");
    assert!(
        line.contains("the cgroup v2 limit, 16.0 MiB (/sys/fs/cgroup/t/memory.max)"),
        "{line}"
    );
}

#[test]
fn a_32_mib_cgroup_gets_a_9_mib_cache() {
    let p = plan(&cgroup(32 * MIB), &Config::default());
    assert_eq!(p.cache_bytes, 9 << 20);
    assert_eq!(p.max_peers, 13);
}

#[test]
fn a_tiny_cgroup_keeps_the_minimum_cache_and_four_peers() {
    let p = plan(&cgroup(6 * MIB), &Config::default());
    assert_eq!(p.cache_bytes, 0);
    assert_eq!(p.max_peers, MIN_PEERS);
}

#[test]
fn sizes_never_exceed_the_defaults_and_grow_with_the_limit() {
    let base = Config::default();
    let mut last = plan(&cgroup(0), &base);
    for mib in 1..200 {
        let p = plan(&cgroup(mib * MIB), &base);
        assert!(p.cache_bytes <= base.cache_bytes && p.max_peers <= base.max_peers);
        assert!(p.cache_bytes >= last.cache_bytes && p.max_peers >= last.max_peers);
        assert!(p.send_watermark >= last.send_watermark);
        // Everything planned fits the target.
        let used = FIXED
            + p.cache_bytes as u64
            + p.max_peers as u64 * peer_bytes(base.recv_buf, p.send_watermark);
        assert!(
            p.max_peers == MIN_PEERS || used <= mib * MIB / 2,
            "{mib} MiB"
        );
        last = p;
    }
    assert!(last.defaults_fit);
    assert_eq!(last.cache_bytes, base.cache_bytes);
    // The defaults need a 75 MiB cgroup (a target of 37.2 MiB).
    assert!(!plan(&cgroup(74 * MIB), &base).defaults_fit);
    assert!(plan(&cgroup(75 * MIB), &base).defaults_fit);
}

#[test]
fn a_big_machine_keeps_the_defaults() {
    let limits = Limits {
        available: Some(20 << 30),
        ..Limits::default()
    };
    let base = Config::default();
    let p = plan(&limits, &base);
    assert!(p.defaults_fit);
    assert_eq!(
        (p.cache_bytes, p.max_peers, p.send_watermark),
        (base.cache_bytes, base.max_peers, base.send_watermark)
    );
    assert!(p.describe(&base).contains("MemAvailable, 20.0 GiB"));
    // No limit found at all: defaults.
    let none = plan(&Limits::default(), &base);
    assert_eq!(none.limit, None);
    assert!(none.describe(&base).contains("no memory limit found"));
}

#[test]
fn the_tightest_share_wins() {
    // A quarter of 40 MiB available (10) is less than half a 32 MiB cgroup (16).
    let limits = Limits {
        available: Some(40 * MIB),
        address_space: Some(1 << 30),
        ..cgroup(32 * MIB)
    };
    assert_eq!(limits.tightest().unwrap().source, Source::Available);
    let limits = Limits {
        data: Some(16 * MIB),
        ..limits
    };
    assert_eq!(limits.tightest().unwrap().source, Source::Data);
    assert_eq!(plan(&limits, &Config::default()).cache_bytes, 3 << 20);
}
