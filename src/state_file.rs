//! Small state files piecemeal keeps beside the data or in `--state-dir`
//! (the DHT's state, resume data): read with a size cap and written
//! through a fresh temporary file, never through a symbolic link — the
//! folder may hold links planted by someone else, and a link to a device
//! that never ends must not be read without end.

#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The file at `path`, if it is a regular file of at most `cap` bytes
/// (opened without following a symbolic link). `Ok(None)` if there is
/// none; anything else that is not such a file is an error.
pub fn read(path: &Path, cap: u64) -> io::Result<Option<Vec<u8>>> {
    let m = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if !m.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a regular file",
        ));
    }
    if m.len() > cap {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} bytes, more than such a file holds", m.len()),
        ));
    }
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    let mut data = Vec::new();
    f.take(cap + 1).read_to_end(&mut data)?;
    if data.len() as u64 > cap {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "grew past its size",
        ));
    }
    Ok(Some(data))
}

/// Replace the file at `path` with `bytes`: written to `tmp` (removed
/// first and made anew with `O_EXCL`, so a link planted there is never
/// written through), then renamed over `path` (a half-written file is
/// never read as one).
pub fn write(path: &Path, tmp: &Path, bytes: &[u8]) -> io::Result<()> {
    match std::fs::remove_file(tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(tmp)?
        .write_all(bytes)?;
    std::fs::rename(tmp, path)
}
