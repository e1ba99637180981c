//! Fitting the box: how much memory this process may really use, and a
//! piece-cache budget, per-peer buffers and connection cap that fit it.
//!
//! With no `--cache` given, the CLI sizes memory from the tightest of:
//!
//! | limit | where | the process plans to use |
//! |---|---|---|
//! | memory cgroup | v1 `memory.limit_in_bytes`, v2 `memory.max` / `memory.high`, its own cgroup and every ancestor | half: page cache of our writes counts against the limit too |
//! | `RLIMIT_AS`, `RLIMIT_DATA` | `getrlimit` | half: allocator slack, mappings, growth |
//! | `MemAvailable` | `/proc/meminfo` | a quarter: the machine is shared |
//!
//! From that *target* [`plan`] takes the fixed memory ([`FIXED`]: mapped
//! binary and libraries, heap, tables) and splits the rest: three quarters
//! for the piece cache (at most the default 16 MiB), the remainder (at
//! least a quarter) for per-peer buffers. When the peers' quarter cannot hold the default
//! connection cap at the default buffer sizes, the send watermark drops to
//! [`SMALL_SEND_WATERMARK`] and the cap to what fits (at least
//! [`MIN_PEERS`]). The receive buffer stays at 64 KiB: at 32 KiB a 1 GiB
//! download in a 16 MiB cgroup took 3.5 s instead of 1.9 s (48 KiB: 20 %
//! slower), to save 32 KiB a peer. The defaults (16 MiB cache, 50 peers with
//! 64 KiB / 128 KiB buffers) need a target of 37.2 MiB: a cgroup of 75 MiB,
//! or 149 MiB available; on a larger box nothing changes.
//!
//! Discovery is pure ([`discover`] reads through a function it is given, so
//! tests hand it sample files); [`probe`] gives it the real files.

mod cgroup;
mod probe;
#[cfg(test)]
mod tests;

pub use cgroup::{
    CgroupDirs, CgroupMount, CgroupVersion, cgroup_limit, memory_cgroup_dirs, parse_limit,
    parse_meminfo, parse_mountinfo, parse_proc_cgroup,
};
pub use probe::probe;

use crate::config::Config;
use crate::progress::human_bytes;
use std::fmt;
use std::path::{Path, PathBuf};

/// Memory the process uses whatever the budget: mapped pages of the binary
/// and its libraries (about 3 MiB resident), heap and stack at start, the
/// picker's and the candidates' tables (measured: see `docs/architecture.md`,
/// *Memory*).
pub const FIXED: u64 = 4 << 20;

/// The send watermark under a tight budget (measured as fast as 128 KiB
/// for a seeder in a 16 MiB cgroup).
pub const SMALL_SEND_WATERMARK: usize = 64 * 1024;

/// Fewest peer connections a plan allows.
pub const MIN_PEERS: usize = 4;

/// The cache budget is a multiple of this (a tidier log line).
const CACHE_GRAIN: u64 = 256 << 10;

/// What bounds the process's memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A memory cgroup's limit file.
    Cgroup {
        version: CgroupVersion,
        file: PathBuf,
    },
    /// `RLIMIT_AS`.
    AddressSpace,
    /// `RLIMIT_DATA`.
    Data,
    /// `MemAvailable` in `/proc/meminfo`.
    Available,
}

impl Source {
    /// The part of this limit the process plans to use, as (numerator,
    /// denominator).
    fn share(&self) -> (u64, u64) {
        match self {
            Source::Cgroup { .. } | Source::AddressSpace | Source::Data => (1, 2),
            Source::Available => (1, 4),
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Cgroup { version, file } => {
                let v = match version {
                    CgroupVersion::V1 => "v1",
                    CgroupVersion::V2 => "v2",
                };
                write!(f, "cgroup {v} {}", file.display())
            }
            Source::AddressSpace => f.write_str("RLIMIT_AS"),
            Source::Data => f.write_str("RLIMIT_DATA"),
            Source::Available => f.write_str("MemAvailable"),
        }
    }
}

/// One limit on the process's memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limit {
    pub bytes: u64,
    pub source: Source,
}

impl Limit {
    /// The memory the process plans to use under this limit.
    pub fn target(&self) -> u64 {
        let (n, d) = self.source.share();
        self.bytes / d * n
    }
}

/// Every limit found (absent: none found, or unlimited).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    pub cgroup: Option<Limit>,
    pub address_space: Option<u64>,
    pub data: Option<u64>,
    pub available: Option<u64>,
}

impl Limits {
    /// Every limit found, as [`Limit`]s.
    pub fn all(&self) -> Vec<Limit> {
        let mut v: Vec<Limit> = self.cgroup.iter().cloned().collect();
        let mut add = |bytes: Option<u64>, source| {
            if let Some(bytes) = bytes {
                v.push(Limit { bytes, source });
            }
        };
        add(self.address_space, Source::AddressSpace);
        add(self.data, Source::Data);
        add(self.available, Source::Available);
        v
    }

    /// The limit that leaves the process the least.
    pub fn tightest(&self) -> Option<Limit> {
        self.all().into_iter().min_by_key(Limit::target)
    }
}

/// Find the limits. `read` gives the text of a file (`None` if it cannot be
/// read): `/proc/self/cgroup`, `/proc/self/mountinfo`, `/proc/meminfo` and
/// cgroup limit files are asked for. `address_space` and `data` are the
/// soft `RLIMIT_AS` / `RLIMIT_DATA` (`None`: unlimited).
pub fn discover(
    read: &mut dyn FnMut(&Path) -> Option<String>,
    address_space: Option<u64>,
    data: Option<u64>,
) -> Limits {
    let proc_cgroup = read(Path::new("/proc/self/cgroup")).unwrap_or_default();
    let mountinfo = read(Path::new("/proc/self/mountinfo")).unwrap_or_default();
    let candidates = memory_cgroup_dirs(&proc_cgroup, &mountinfo);
    let cgroup = cgroup_limit(&candidates, read).map(|(bytes, version, file)| Limit {
        bytes,
        source: Source::Cgroup { version, file },
    });
    let available = read(Path::new("/proc/meminfo")).and_then(|t| parse_meminfo(&t));
    Limits {
        cgroup,
        address_space,
        data,
        available,
    }
}

/// A peer's memory besides its buffers: the requests it queued with us at
/// their cap (2,048 × 12 bytes), ours in flight to it (32 bytes each; under
/// a tight budget the cache's buffers bound them: 4 MiB is 256 blocks), its
/// bitfield and state.
pub const PEER_STATE: u64 = 32 << 10;

/// Worst-case bytes of one peer: the receive buffer, a send buffer filled
/// to just under the watermark plus a block (its vector doubling: up to
/// twice the watermark with 16 KiB requests), and [`PEER_STATE`].
pub fn peer_bytes(recv_buf: usize, send_watermark: usize) -> u64 {
    (recv_buf + 2 * send_watermark) as u64 + PEER_STATE
}

/// The memory sizes chosen for this process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The limit the sizes come from (`None`: no limit found; defaults).
    pub limit: Option<Limit>,
    pub cache_bytes: usize,
    pub max_peers: usize,
    pub send_watermark: usize,
    /// The limit leaves room for the defaults (nothing was lowered).
    pub defaults_fit: bool,
}

/// Size the piece cache, per-peer buffers and connection cap from the
/// tightest limit (see the module docs for the rule). `base` holds the
/// defaults, which are never exceeded.
pub fn plan(limits: &Limits, base: &Config) -> Plan {
    let mut p = Plan {
        limit: limits.tightest(),
        cache_bytes: base.cache_bytes,
        max_peers: base.max_peers,
        send_watermark: base.send_watermark,
        defaults_fit: true,
    };
    let Some(limit) = &p.limit else {
        return p;
    };
    let spare = limit.target().saturating_sub(FIXED);
    let cache = (spare / 4 * 3).min(base.cache_bytes as u64) / CACHE_GRAIN * CACHE_GRAIN;
    let for_peers = spare - cache;
    p.cache_bytes = usize::try_from(cache).unwrap_or(base.cache_bytes);
    p.defaults_fit = p.cache_bytes == base.cache_bytes;
    if for_peers >= base.max_peers as u64 * peer_bytes(base.recv_buf, base.send_watermark) {
        return p;
    }
    p.defaults_fit = false;
    p.send_watermark = base.send_watermark.min(SMALL_SEND_WATERMARK);
    let fit = for_peers / peer_bytes(base.recv_buf, p.send_watermark);
    p.max_peers = usize::try_from(fit)
        .unwrap_or(usize::MAX)
        .clamp(MIN_PEERS.min(base.max_peers), base.max_peers);
    p
}

impl Plan {
    /// Put the sizes into `cfg`.
    pub fn apply(&self, cfg: &mut Config) {
        cfg.cache_bytes = self.cache_bytes;
        cfg.max_peers = self.max_peers;
        cfg.max_half_open = cfg.max_half_open.min(self.max_peers);
        cfg.send_watermark = self.send_watermark;
    }

    /// One line for the log: the sizes in `cfg` (this plan, perhaps with
    /// flags given on top) and why.
    pub fn describe(&self, cfg: &Config) -> String {
        let sizes = format!(
            "memory: piece cache {}, up to {} peers with {} receive / {} send buffers",
            human_bytes(cfg.cache_bytes as u64),
            cfg.max_peers,
            human_bytes(cfg.recv_buf as u64),
            human_bytes(cfg.send_watermark as u64),
        );
        let Some(l) = &self.limit else {
            return format!("{sizes} (defaults: no memory limit found)");
        };
        let (n, d) = l.source.share();
        let part = if (n, d) == (1, 2) {
            "half"
        } else {
            "a quarter"
        };
        let (what, file) = match &l.source {
            Source::Cgroup { version, file } => (
                format!(
                    "the cgroup {} limit",
                    if *version == CgroupVersion::V1 {
                        "v1"
                    } else {
                        "v2"
                    }
                ),
                format!(" ({})", file.display()),
            ),
            other => (other.to_string(), String::new()),
        };
        let (bytes, target) = (human_bytes(l.bytes), human_bytes(l.target()));
        if self.defaults_fit {
            format!(
                "{sizes}; the defaults fit the tightest limit, {what}, {bytes}{file}: {part} of it is {target}"
            )
        } else {
            format!(
                "{sizes}; from the tightest limit, {what}, {bytes}{file}: {part} of it ({target}) less {} fixed, split 3:1 between cache and peers",
                human_bytes(FIXED)
            )
        }
    }
}
