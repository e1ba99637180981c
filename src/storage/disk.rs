//! The only module that touches the torrent's files: positioned reads and
//! writes (`pread`/`pwrite`) over the spans a [`Layout`] gives.
//!
//! Padding (BEP 47 pad files) has no file: writes skip it and reads fill it
//! with zeros, so pad files are never created, written or read.

#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

use super::layout::{Layout, Span};
use std::cell::RefCell;
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Largest single `pwrite`. Writes of verified pieces come in runs of
/// megabytes; handing the kernel at most this much per call keeps its
/// page-cache allocations small. Measured on the development VM (Linux
/// 6.18, ext4, 1 GiB written after freeing memory): 2.4–3.3 s of system
/// time with 1–4 MiB writes, 0.24–0.5 s with 64–128 KiB writes — large
/// writes get large folios, taken from the high-order free blocks the
/// hypervisor's free-page reporting has reclaimed and must fault back in.
/// A few thousand more syscalls per GiB cost milliseconds.
pub const WRITE_CHUNK: usize = 128 * 1024;

/// A storage failure: which operation, which file, and the OS error.
#[derive(Debug)]
pub struct StorageError {
    pub op: &'static str,
    pub path: PathBuf,
    pub source: io::Error,
}

impl std::fmt::Display for StorageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.op, self.path.display(), self.source)
    }
}

impl std::error::Error for StorageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// How the files are opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    /// Downloading: create folders and files at full length, their space
    /// reserved as [`Allocation`] says.
    Create,
    /// Seeding existing data: open read-only; missing files are not created.
    ReadOnly,
}

/// How a file being created (or grown) gets its disk space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Allocation {
    /// Reserve the whole length up front with `fallocate` where the file
    /// system supports it (ext4, XFS, btrfs, tmpfs): a disk too small is
    /// known at the start, and the download costs less CPU. On ext4 each
    /// write into a hole pays for delayed allocation (about 0.2 CPU s per
    /// GiB on the development VM). Where `fallocate` is not supported the
    /// file is sparse; where space runs out a warning says so and the file
    /// is sparse too (writes then wait for space, as with `Sparse`).
    #[default]
    Reserve,
    /// Leave the file sparse: space is taken as data arrives.
    Sparse,
}

/// Most files held open at once, whatever the torrent's file count (a
/// quarter of the process's descriptor limit, between 8 and 128). Others
/// are opened when needed; the least recently used is closed first.
pub fn max_open_files() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct we pass.
    let cur = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        lim.rlim_cur as usize
    } else {
        1024
    };
    (cur / 4).clamp(8, 128)
}

/// Files held open by every `Disk` of the process together.
static OPEN_FILES: AtomicUsize = AtomicUsize::new(0);

/// The torrent's files: a bounded pool of open handles over the layout.
pub struct Disk {
    root: PathBuf,
    /// The output folder, opened once: every file is reached from it one
    /// component at a time, never through a symbolic link. `None` when
    /// seeding from a folder that does not exist (every file is missing).
    root_dir: Option<File>,
    layout: Layout,
    mode: OpenMode,
    /// Which files had data before we opened them (worth re-checking).
    existed: Vec<bool>,
    pool: RefCell<FilePool>,
    /// Ranges written lately, `(file, offset, len)`, oldest first: once
    /// [`DROP_BEHIND`] bytes were written after one, its pages (written
    /// back by then, or on their way) leave the page cache.
    written: RefCell<DropBehind>,
}

/// The ranges [`Disk::drop_behind`] remembers, and their bytes.
#[derive(Default)]
struct DropBehind {
    ranges: std::collections::VecDeque<(usize, u64, u64)>,
    bytes: u64,
}

/// How far behind the newest write the page cache is asked to let go of
/// what we wrote (see [`Disk::write_at`]).
pub const DROP_BEHIND: u64 = 32 << 20;

/// Most ranges remembered for [`DROP_BEHIND`] (tiny files make tiny
/// ranges): beyond, the oldest is let go early.
const DROP_BEHIND_RANGES: usize = 4096;

/// Open files, least recently used first out.
struct FilePool {
    cap: usize,
    /// `(file index, handle, last use)`.
    open: Vec<(usize, File, u64)>,
    clock: u64,
}

/// What an open does when components are missing.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Create {
    /// Create folders and the file.
    Yes,
    /// Open what exists, for reading and writing.
    No,
    /// Open what exists, read-only.
    ReadOnly,
}

impl Disk {
    /// Open (and with [`OpenMode::Create`], create) every file of `layout`
    /// under `root`. Files created or grown get their space reserved
    /// ([`Allocation::Reserve`]) and are sized with `set_len`. Existing data is kept; a file longer
    /// than the torrent says is refused rather than cut (it is not ours).
    /// No path is followed through a symbolic link inside `root`.
    pub fn open(root: &Path, layout: Layout, mode: OpenMode) -> Result<Disk, StorageError> {
        Disk::open_with(root, layout, mode, false, Allocation::Reserve)
    }

    /// [`open`](Self::open) with a choice of [`Allocation`] for the files
    /// it creates or grows.
    pub fn open_allocating(
        root: &Path,
        layout: Layout,
        mode: OpenMode,
        alloc: Allocation,
    ) -> Result<Disk, StorageError> {
        Disk::open_with(root, layout, mode, false, alloc)
    }

    /// [`open`](Self::open) with [`OpenMode::Create`] that cuts files
    /// longer than the torrent's instead of refusing them: the user said
    /// to overwrite what is there (`--overwrite`).
    pub fn open_overwriting(
        root: &Path,
        layout: Layout,
        alloc: Allocation,
    ) -> Result<Disk, StorageError> {
        Disk::open_with(root, layout, OpenMode::Create, true, alloc)
    }

    fn open_with(
        root: &Path,
        layout: Layout,
        mode: OpenMode,
        cut_longer: bool,
        alloc: Allocation,
    ) -> Result<Disk, StorageError> {
        let err = |op, path: &Path, source| StorageError {
            op,
            path: path.to_path_buf(),
            source,
        };
        if mode == OpenMode::Create {
            std::fs::create_dir_all(root).map_err(|e| err("create folder", root, e))?;
        }
        let root_dir = match File::open(root) {
            Ok(f) if f.metadata().is_ok_and(|m| m.is_dir()) => Some(f),
            Ok(_) => {
                let e = io::Error::new(io::ErrorKind::NotADirectory, "not a folder");
                return Err(err("open", root, e));
            }
            // Seeding from a folder that is not there: every file is missing.
            Err(e) if e.kind() == io::ErrorKind::NotFound && mode == OpenMode::ReadOnly => None,
            Err(e) => return Err(err("open", root, e)),
        };
        let root_missing = root_dir.is_none();
        let mut disk = Disk {
            root: root.to_path_buf(),
            root_dir,
            layout,
            mode,
            existed: Vec::new(),
            pool: RefCell::new(FilePool {
                cap: max_open_files(),
                open: Vec::new(),
                clock: 0,
            }),
            written: RefCell::new(DropBehind::default()),
        };
        let n = disk.layout.files.len();
        let mut existed = Vec::with_capacity(n);
        for i in 0..n {
            let Some(slot) = disk.layout.files.get(i) else {
                break;
            };
            let (len, executable) = (slot.len, slot.executable);
            let path = disk.path(i);
            if root_missing {
                existed.push(false);
                continue;
            }
            let how = match mode {
                OpenMode::Create => Create::Yes,
                OpenMode::ReadOnly => Create::ReadOnly,
            };
            let f = match disk.open_file(i, how) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound && mode == OpenMode::ReadOnly => {
                    existed.push(false);
                    continue;
                }
                Err(e) => return Err(err("open", &path, e)),
            };
            let meta = f.metadata().map_err(|e| err("stat", &path, e))?;
            existed.push(meta.len() > 0);
            if mode == OpenMode::Create {
                if meta.len() > len && cut_longer {
                    f.set_len(len).map_err(|e| err("cut", &path, e))?;
                } else if meta.len() > len {
                    return Err(err(
                        "open",
                        &path,
                        io::Error::new(
                            io::ErrorKind::AlreadyExists,
                            format!(
                                "exists and is longer ({} bytes) than the torrent's file \
                                 ({len} bytes); not cutting a file piecemeal did not make \
                                 (move it away, or choose another output folder)",
                                meta.len()
                            ),
                        ),
                    ));
                }
                if meta.len() < len {
                    if alloc == Allocation::Reserve {
                        reserve(&f, &path, meta.len(), len);
                    }
                    f.set_len(len).map_err(|e| err("resize", &path, e))?;
                }
                if executable {
                    // Execute wherever read is allowed (0644 -> 0755).
                    let mode = meta.permissions().mode();
                    let with_x = mode | ((mode & 0o444) >> 2);
                    if with_x != mode {
                        f.set_permissions(std::fs::Permissions::from_mode(with_x))
                            .map_err(|e| err("make executable", &path, e))?;
                    }
                }
            }
            disk.keep_open(i, f);
        }
        disk.existed = existed;
        Ok(disk)
    }

    /// Open file `index` from the output folder, one component at a time
    /// with `O_NOFOLLOW`: a symbolic link anywhere on the way (planted in
    /// the folder, or a file replaced by one) is an error, never followed.
    fn open_file(&self, index: usize, how: Create) -> io::Result<File> {
        use std::os::fd::{AsRawFd, FromRawFd};
        use std::os::unix::ffi::OsStrExt;
        let Some(slot) = self.layout.files.get(index) else {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no such file"));
        };
        let comps: Vec<&std::ffi::OsStr> = slot.path.iter().collect();
        let Some((name, dirs)) = comps.split_last() else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty path"));
        };
        let cstr = |c: &std::ffi::OsStr| {
            std::ffi::CString::new(c.as_bytes())
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a path"))
        };
        let no_link = |e: io::Error| {
            if e.raw_os_error() == Some(libc::ELOOP) || e.raw_os_error() == Some(libc::ENOTDIR) {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a symbolic link (or a file) stands where a folder or file of the \
                     torrent goes; not following it",
                )
            } else {
                e
            }
        };
        let Some(root_dir) = &self.root_dir else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "the folder is missing",
            ));
        };
        let mut dir: Option<File> = None;
        for comp in dirs {
            let c = cstr(comp)?;
            let at = dir.as_ref().unwrap_or(root_dir).as_raw_fd();
            let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
            // SAFETY: `c` is a valid C string; `at` is an open directory.
            let mut fd = unsafe { libc::openat(at, c.as_ptr(), flags) };
            if fd < 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::NotFound || how != Create::Yes {
                    return Err(no_link(e));
                }
                // SAFETY: as above.
                if unsafe { libc::mkdirat(at, c.as_ptr(), 0o755) } < 0 {
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::AlreadyExists {
                        return Err(e);
                    }
                }
                // SAFETY: as above.
                fd = unsafe { libc::openat(at, c.as_ptr(), flags) };
                if fd < 0 {
                    return Err(no_link(io::Error::last_os_error()));
                }
            }
            // SAFETY: `fd` was just opened and is owned by nobody else.
            dir = Some(unsafe { File::from_raw_fd(fd) });
        }
        let c = cstr(name)?;
        let at = dir.as_ref().unwrap_or(root_dir).as_raw_fd();
        let mut flags = libc::O_NOFOLLOW | libc::O_CLOEXEC;
        flags |= match how {
            Create::Yes => libc::O_RDWR | libc::O_CREAT,
            Create::No => libc::O_RDWR,
            Create::ReadOnly => libc::O_RDONLY,
        };
        // SAFETY: `c` is a valid C string; `at` is an open directory.
        let fd = unsafe { libc::openat(at, c.as_ptr(), flags, 0o644 as libc::c_uint) };
        if fd < 0 {
            return Err(no_link(io::Error::last_os_error()));
        }
        // SAFETY: `fd` was just opened and is owned by nobody else.
        let f = unsafe { File::from_raw_fd(fd) };
        if !f.metadata()?.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        Ok(f)
    }

    /// Put an open handle in the pool, closing the least recently used one
    /// if it is full.
    /// The bound is process-wide: many torrents (many `Disk`s) share it,
    /// so a `Disk` that finds it reached closes its own least recently used
    /// file first, or does not keep this one (it is closed after use).
    fn keep_open(&self, index: usize, f: File) {
        let mut pool = self.pool.borrow_mut();
        pool.clock += 1;
        let now = pool.clock;
        let full = pool.open.len() >= pool.cap || OPEN_FILES.load(Ordering::Relaxed) >= pool.cap;
        if full {
            let lru = pool
                .open
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.2)
                .map(|(i, _)| i);
            match lru {
                Some(i) => {
                    pool.open.swap_remove(i);
                    OPEN_FILES.fetch_sub(1, Ordering::Relaxed);
                }
                None => return, // `f` is closed here
            }
        }
        pool.open.push((index, f, now));
        OPEN_FILES.fetch_add(1, Ordering::Relaxed);
    }

    /// Run `op` on file `index`, opening it if it is not in the pool.
    fn with_file<T>(&self, index: usize, op: impl FnOnce(&File) -> io::Result<T>) -> io::Result<T> {
        {
            let mut pool = self.pool.borrow_mut();
            pool.clock += 1;
            let now = pool.clock;
            if let Some(e) = pool.open.iter_mut().find(|e| e.0 == index) {
                e.2 = now;
                return op(&e.1);
            }
        }
        let how = match self.mode {
            OpenMode::Create => Create::No,
            OpenMode::ReadOnly => Create::ReadOnly,
        };
        let f = self.open_file(index, how)?;
        let r = op(&f);
        self.keep_open(index, f);
        r
    }

    /// Files open right now (for tests; at most [`max_open_files`] in all
    /// the process's `Disk`s).
    pub fn open_count(&self) -> usize {
        self.pool.borrow().open.len()
    }

    /// Could the byte range hold data from before this run? False when a
    /// non-empty file it touches was created empty just now (no need to hash
    /// holes on a fresh download). A range of padding alone always holds its
    /// data: zeros.
    pub fn may_have_data(&self, offset: u64, len: usize) -> bool {
        self.layout.spans(offset, len).iter().all(|s| match *s {
            Span::File { file, .. } => self.existed.get(file).copied().unwrap_or(true),
            Span::Padding { .. } => true,
        })
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    fn path(&self, file: usize) -> PathBuf {
        match self.layout.files.get(file) {
            Some(slot) => self.root.join(&slot.path),
            None => self.root.clone(),
        }
    }

    /// Write `data` at torrent offset `offset`, across file boundaries.
    /// Bytes that fall on padding are dropped (they are zeros in a torrent
    /// that follows BEP 47; a warning says when they are not).
    pub fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), StorageError> {
        // The spans cover at most `data.len()` bytes, in order.
        let mut rest = data;
        let mut pos = offset;
        for span in self.layout.spans(offset, data.len()) {
            let Some((chunk, after)) = rest.split_at_checked(span.len()) else {
                break;
            };
            rest = after;
            let at = pos;
            pos += chunk.len() as u64;
            let (file_index, mut at_in_file) = match span {
                Span::File {
                    file, file_offset, ..
                } => (file, file_offset),
                Span::Padding { .. } => {
                    if chunk.iter().any(|&b| b != 0) {
                        log::warn!(
                            "{}: the torrent's padding at byte {at} is not zeros; \
                             it is not stored, so this piece cannot be served or re-checked",
                            self.root.display()
                        );
                    }
                    continue;
                }
            };
            if self.mode == OpenMode::ReadOnly {
                return Err(StorageError {
                    op: "write",
                    path: self.path(file_index),
                    source: io::Error::new(io::ErrorKind::PermissionDenied, "opened read-only"),
                });
            }
            let start = at_in_file;
            self.with_file(file_index, |file| {
                for part in chunk.chunks(WRITE_CHUNK) {
                    file.write_all_at(part, at_in_file)?;
                    at_in_file += part.len() as u64;
                }
                // Start writing it back now (the pages stay until clean).
                advise_dontneed(file, start, chunk.len() as u64);
                Ok(())
            })
            .map_err(|source| StorageError {
                op: "write",
                path: self.path(file_index),
                source,
            })?;
            self.drop_behind(file_index, start, chunk.len() as u64);
        }
        Ok(())
    }

    /// Remember a range just written; ask the kernel to drop the pages of
    /// ranges written [`DROP_BEHIND`] bytes ago. A download then reuses
    /// page-cache pages instead of taking fresh ones for every byte (on a
    /// virtual machine, first-touched memory is what the write path spends
    /// most of its time on), and leaves the page cache as it found it.
    fn drop_behind(&self, file: usize, offset: u64, len: u64) {
        let mut w = self.written.borrow_mut();
        w.ranges.push_back((file, offset, len));
        w.bytes += len;
        while w.bytes > DROP_BEHIND || w.ranges.len() > DROP_BEHIND_RANGES {
            let Some((f, o, l)) = w.ranges.pop_front() else {
                break;
            };
            w.bytes -= l;
            let _ = self.with_open_file(f, |file| advise_dontneed(file, o, l));
        }
    }

    /// Ranges remembered for dropping, and their bytes (for tests).
    pub fn drop_behind_backlog(&self) -> (usize, u64) {
        let w = self.written.borrow();
        (w.ranges.len(), w.bytes)
    }

    /// Run `op` on file `index` if it is open now (never opens it).
    fn with_open_file(&self, index: usize, op: impl FnOnce(&File)) -> Option<()> {
        let pool = self.pool.borrow();
        let e = pool.open.iter().find(|e| e.0 == index)?;
        op(&e.1);
        Some(())
    }

    /// Fill `buf` from torrent offset `offset`. Padding reads as zeros. A
    /// missing or short file is an error: no zero-filled data is ever
    /// returned for file bytes that are not there.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), StorageError> {
        let mut pos = 0;
        let mut rest = &mut *buf;
        for span in self.layout.spans(offset, rest.len()) {
            let Some((chunk, after)) = std::mem::take(&mut rest).split_at_mut_checked(span.len())
            else {
                break;
            };
            rest = after;
            pos += chunk.len();
            let (file_index, file_offset) = match span {
                Span::File {
                    file, file_offset, ..
                } => (file, file_offset),
                Span::Padding { .. } => {
                    chunk.fill(0);
                    continue;
                }
            };
            self.with_file(file_index, |file| file.read_exact_at(chunk, file_offset))
                .map_err(|source| StorageError {
                    op: "read",
                    path: self.path(file_index),
                    source,
                })?;
        }
        if pos != buf.len() {
            return Err(StorageError {
                op: "read",
                path: self.root.clone(),
                source: io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end"),
            });
        }
        Ok(())
    }

    /// How each file stands now (for resume data); `None` if one is
    /// missing.
    pub fn stamps(&self) -> Option<Vec<super::resume::Stamp>> {
        super::resume::stamps(&self.root, &self.layout)
    }

    /// Push written data to stable storage (on shutdown): the output
    /// folder's whole file system, which covers files already closed by
    /// the pool.
    pub fn sync(&self) -> Result<(), StorageError> {
        use std::os::fd::AsRawFd;
        let Some(root_dir) = &self.root_dir else {
            return Ok(());
        };
        if self.mode == OpenMode::ReadOnly {
            return Ok(());
        }
        // SAFETY: `root_dir` is an open descriptor.
        if unsafe { libc::syncfs(root_dir.as_raw_fd()) } < 0 {
            return Err(StorageError {
                op: "sync",
                path: self.root.clone(),
                source: io::Error::last_os_error(),
            });
        }
        Ok(())
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        let n = self.pool.borrow().open.len();
        OPEN_FILES.fetch_sub(n, Ordering::Relaxed);
    }
}

/// Reserve the space of `file` from `from` to `len` (its new length) with
/// `fallocate`: allocated, read as zeros, no data written. Never emulated
/// by writing zeros (the raw call, not `posix_fallocate`). A file system
/// without it is left to `set_len` in silence; running out of space is
/// a warning, and the file is then sparse past what was reserved.
fn reserve(file: &File, path: &Path, from: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(off), Ok(n)) = (
        libc::off_t::try_from(from),
        libc::off_t::try_from(len - from),
    ) else {
        return;
    };
    // SAFETY: a plain syscall on a descriptor we own; no memory is passed.
    if unsafe { libc::fallocate(file.as_raw_fd(), 0, off, n) } == 0 {
        return;
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EOPNOTSUPP | libc::ENOSYS) => {
            log::debug!("{}: space not reserved: {e}", path.display());
        }
        _ => log::warn!(
            "{}: cannot reserve its {len} bytes up front ({e}); downloading into a \
             sparse file, writes wait for space if it runs out",
            path.display()
        ),
    }
}

/// `posix_fadvise(POSIX_FADV_DONTNEED)` on a file range: starts writing
/// back dirty pages and drops clean ones. Advice only: errors are ignored.
fn advise_dontneed(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(off), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return;
    };
    // SAFETY: a plain syscall on a descriptor we own; no memory is passed.
    unsafe {
        libc::posix_fadvise(file.as_raw_fd(), off, len, libc::POSIX_FADV_DONTNEED);
    }
}
