//! The thin shell of [`super::discover`]: the real files and `getrlimit`.
//! The only I/O of the `memory` module.

use super::{Limits, discover};
use std::path::Path;

/// The limits this process runs under (empty where the system has no
/// `/proc` or cgroups).
pub fn probe() -> Limits {
    let mut read = |p: &Path| std::fs::read_to_string(p).ok();
    discover(
        &mut read,
        soft_rlimit(libc::RLIMIT_AS),
        soft_rlimit(libc::RLIMIT_DATA),
    )
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
type Resource = libc::__rlimit_resource_t;
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
type Resource = libc::c_int;

/// The soft limit of `resource`, `None` when unlimited or unknown.
fn soft_rlimit(resource: Resource) -> Option<u64> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit(2) writes one `rlimit` through a valid pointer.
    if unsafe { libc::getrlimit(resource, &mut r) } != 0 || r.rlim_cur == libc::RLIM_INFINITY {
        return None;
    }
    #[allow(clippy::unnecessary_cast)] // `rlim_t` is 32 bits on some targets
    Some(r.rlim_cur as u64)
}
