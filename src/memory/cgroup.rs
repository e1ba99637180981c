//! Where the process's memory cgroup is, and what its limit says: pure
//! functions over the text of `/proc/self/cgroup`, `/proc/self/mountinfo`
//! and the limit files.
//!
//! ```text
//!  /proc/self/cgroup  "4:memory:/a/b"  (v1)  or  "0::/a/b"  (v2)
//!  /proc/self/mountinfo  ".. <root> <mount point> .. - cgroup(2) .. <super options>"
//!        │ the path below the mount's root, joined to its mount point
//!        ▼
//!  <mp>/a/b, <mp>/a, <mp>  (innermost first: a limit anywhere above applies too)
//!        │ v1: memory.limit_in_bytes   v2: memory.max, memory.high
//!        ▼
//!  the smallest limit, and the file it came from
//! ```

use std::path::{Path, PathBuf};

/// Which cgroup interface the limit came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupVersion {
    V1,
    V2,
}

/// The process's memory cgroup directory and every ancestor up to the
/// mount point, innermost first, for one cgroup interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupDirs {
    pub version: CgroupVersion,
    pub dirs: Vec<PathBuf>,
}

impl CgroupDirs {
    /// The limit files of each directory, innermost first.
    pub fn limit_files(&self) -> Vec<PathBuf> {
        let names: &[&str] = match self.version {
            CgroupVersion::V1 => &["memory.limit_in_bytes"],
            CgroupVersion::V2 => &["memory.max", "memory.high"],
        };
        self.dirs
            .iter()
            .flat_map(|d| names.iter().map(move |n| d.join(n)))
            .collect()
    }
}

/// Where cgroup file systems are usually mounted, for when
/// `/proc/self/mountinfo` names none.
pub const V1_MEMORY_MOUNT: &str = "/sys/fs/cgroup/memory";
pub const V2_MOUNT: &str = "/sys/fs/cgroup";

/// A limit at or above this (v1 writes "unlimited" as 2^63 less a page) is
/// no limit.
const UNLIMITED: u64 = 1 << 60;

/// One cgroup mount from `/proc/self/mountinfo`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupMount {
    /// The cgroup path the mount shows (`/` unless it is a bind mount of a
    /// sub-tree, as in a container without a cgroup namespace).
    pub root: String,
    pub mount_point: PathBuf,
    pub version: CgroupVersion,
    /// For v1: the memory controller is in this hierarchy.
    pub memory: bool,
}

/// The cgroup mounts in the text of `/proc/self/mountinfo`. Lines that do
/// not parse are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<CgroupMount> {
    let mut out = Vec::new();
    for line in text.lines() {
        // id parent major:minor root mount-point options [optional...] - fstype source super-options
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mut l = left.split(' ');
        let (Some(root), Some(mount_point)) = (l.nth(3), l.next()) else {
            continue;
        };
        let mut r = right.split(' ');
        let (fstype, super_opts) = (r.next().unwrap_or(""), r.nth(1).unwrap_or(""));
        let version = match fstype {
            "cgroup2" => CgroupVersion::V2,
            "cgroup" => CgroupVersion::V1,
            _ => continue,
        };
        out.push(CgroupMount {
            root: unescape(root),
            mount_point: PathBuf::from(unescape(mount_point)),
            version,
            memory: super_opts.split(',').any(|o| o == "memory"),
        });
    }
    out
}

/// Undo mountinfo's octal escapes (`\040` is a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'\\'
            && let Some(oct) = b.get(i + 1..i + 4)
            && oct.iter().all(|d| (b'0'..=b'7').contains(d))
        {
            let v = oct.iter().fold(0u32, |v, d| v * 8 + u32::from(d - b'0'));
            out.push(v as u8);
            i += 4;
        } else {
            out.push(c);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The process's cgroup paths from `/proc/self/cgroup`: the v1 memory
/// hierarchy's (`N:...memory...:/path`) and the v2 one (`0::/path`).
pub fn parse_proc_cgroup(text: &str) -> (Option<String>, Option<String>) {
    let (mut v1, mut v2) = (None, None);
    for line in text.lines() {
        let mut f = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        if id == "0" && controllers.is_empty() {
            v2 = Some(path.to_string());
        } else if controllers.split(',').any(|c| c == "memory") {
            v1 = Some(path.to_string());
        }
    }
    (v1, v2)
}

/// Where to look for the process's memory limits, best first: the v1
/// memory hierarchy, then v2, each as `/proc/self/mountinfo` shows it and
/// then at the usual mount point. A caller reads the limit files of each in
/// turn and takes the first it can read any of.
pub fn memory_cgroup_dirs(proc_self_cgroup: &str, mountinfo: &str) -> Vec<CgroupDirs> {
    let (v1, v2) = parse_proc_cgroup(proc_self_cgroup);
    let mounts = parse_mountinfo(mountinfo);
    let mut out: Vec<CgroupDirs> = Vec::new();
    let mut add = |version, path: &str, found: Option<&CgroupMount>, usual: &str| {
        let dirs = match found {
            Some(m) => dirs_below(&m.mount_point, &m.root, path),
            None => dirs_below(Path::new(usual), "/", path),
        };
        let c = CgroupDirs { version, dirs };
        if !out.contains(&c) {
            out.push(c);
        }
    };
    for (version, path, usual) in [
        (CgroupVersion::V1, &v1, V1_MEMORY_MOUNT),
        (CgroupVersion::V2, &v2, V2_MOUNT),
    ] {
        let Some(path) = path else { continue };
        let fits =
            |m: &&CgroupMount| m.version == version && (version == CgroupVersion::V2 || m.memory);
        // A mount whose root holds the process's cgroup, else any.
        let found = mounts
            .iter()
            .filter(fits)
            .find(|m| strip_root(&m.root, path).is_some())
            .or_else(|| mounts.iter().find(fits));
        add(version, path, found, usual);
        if found.is_some() {
            add(version, path, None, usual);
        }
    }
    out
}

/// `path` below `root`, as a relative path (empty for `root` itself).
fn strip_root<'a>(root: &str, path: &'a str) -> Option<&'a str> {
    let root = root.trim_end_matches('/');
    let rest = path.strip_prefix(root)?;
    if rest.is_empty() || rest.starts_with('/') {
        Some(rest.trim_start_matches('/'))
    } else {
        None
    }
}

/// The cgroup directory of `path` under a mount of `root` at `mount_point`,
/// then each parent up to the mount point. A path outside the mount's root
/// (another cgroup namespace) gives the mount point alone.
fn dirs_below(mount_point: &Path, root: &str, path: &str) -> Vec<PathBuf> {
    let rel = strip_root(root, path).unwrap_or("");
    let parts: Vec<&str> = rel
        .split('/')
        .filter(|p| !p.is_empty() && *p != "." && *p != "..")
        .collect();
    (0..=parts.len())
        .rev()
        .map(|n| {
            let mut d = mount_point.to_path_buf();
            d.extend(parts.iter().take(n));
            d
        })
        .collect()
}

/// The bytes a limit file allows: `None` for `max` (v2) or a value so large
/// it means unlimited (v1), or text that is not a number.
pub fn parse_limit(text: &str) -> Option<u64> {
    let t = text.trim();
    if t == "max" {
        return None;
    }
    t.parse::<u64>().ok().filter(|&v| v < UNLIMITED)
}

/// The tightest memory limit over the directories: the smallest value of
/// any limit file, with the file it came from. `read` gives a file's text
/// (`None` when it cannot be read). Directories are tried in the order
/// [`memory_cgroup_dirs`] gives; the first where any limit file can be read
/// answers (even "unlimited").
pub fn cgroup_limit(
    candidates: &[CgroupDirs],
    read: &mut dyn FnMut(&Path) -> Option<String>,
) -> Option<(u64, CgroupVersion, PathBuf)> {
    for c in candidates {
        let mut any = false;
        let mut best: Option<(u64, PathBuf)> = None;
        for file in c.limit_files() {
            let Some(text) = read(&file) else { continue };
            any = true;
            if let Some(v) = parse_limit(&text)
                && best.as_ref().is_none_or(|(b, _)| v < *b)
            {
                best = Some((v, file));
            }
        }
        if any {
            return best.map(|(v, f)| (v, c.version, f));
        }
    }
    None
}

/// `MemAvailable` from `/proc/meminfo`, in bytes (kernels before 3.14: free
/// plus page cache).
pub fn parse_meminfo(text: &str) -> Option<u64> {
    let field = |name: &str| {
        text.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix(':')?;
            let kib: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
            kib.checked_mul(1024)
        })
    };
    field("MemAvailable").or_else(|| Some(field("MemFree")? + field("Cached").unwrap_or(0)))
}
