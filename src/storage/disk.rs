//! The only module that touches the torrent's files: positioned reads and
//! writes (`pread`/`pwrite`) over the spans a [`Layout`] gives.
//!
//! Padding (BEP 47 pad files) has no file: writes skip it and reads fill it
//! with zeros, so pad files are never created, written or read.

#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

use super::layout::{Layout, Span};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};

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
    /// Downloading: create folders and files (sparse, at full length).
    Create,
    /// Seeding existing data: open read-only; missing files are not created.
    ReadOnly,
}

/// The torrent's open files.
pub struct Disk {
    root: PathBuf,
    layout: Layout,
    files: Vec<Option<File>>,
    /// Which files had data before we opened them (worth re-checking).
    existed: Vec<bool>,
}

impl Disk {
    /// Open (and with [`OpenMode::Create`], create) every file of `layout`
    /// under `root`. Files are sized with `set_len`, which leaves holes: the
    /// data is sparse until written. Existing data is kept.
    pub fn open(root: &Path, layout: Layout, mode: OpenMode) -> Result<Disk, StorageError> {
        let mut files = Vec::with_capacity(layout.files.len());
        let mut existed = Vec::with_capacity(layout.files.len());
        for slot in &layout.files {
            let path = root.join(&slot.path);
            let err = |op, source| StorageError {
                op,
                path: path.clone(),
                source,
            };
            let file = match mode {
                OpenMode::Create => {
                    if let Some(parent) = path.parent() {
                        std::fs::create_dir_all(parent).map_err(|e| err("create folder for", e))?;
                    }
                    let f = OpenOptions::new()
                        .read(true)
                        .write(true)
                        .create(true)
                        .truncate(false)
                        .open(&path)
                        .map_err(|e| err("open", e))?;
                    let meta = f.metadata().map_err(|e| err("stat", e))?;
                    existed.push(meta.len() > 0);
                    if meta.len() != slot.len {
                        f.set_len(slot.len).map_err(|e| err("resize", e))?;
                    }
                    if slot.executable {
                        // Execute wherever read is allowed (0644 -> 0755).
                        let mode = meta.permissions().mode();
                        let with_x = mode | ((mode & 0o444) >> 2);
                        if with_x != mode {
                            f.set_permissions(std::fs::Permissions::from_mode(with_x))
                                .map_err(|e| err("make executable", e))?;
                        }
                    }
                    Some(f)
                }
                OpenMode::ReadOnly => match File::open(&path) {
                    Ok(f) => {
                        existed.push(true);
                        Some(f)
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        existed.push(false);
                        None
                    }
                    Err(e) => return Err(err("open", e)),
                },
            };
            files.push(file);
        }
        Ok(Disk {
            root: root.to_path_buf(),
            layout,
            files,
            existed,
        })
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

    /// The open handle of file `file`, if it exists and is open.
    fn file(&self, file: usize) -> Option<&File> {
        self.files.get(file).and_then(Option::as_ref)
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
            let file = self.file(file_index).ok_or_else(|| StorageError {
                op: "write",
                path: self.path(file_index),
                source: io::Error::new(io::ErrorKind::NotFound, "file is not open for writing"),
            })?;
            for part in chunk.chunks(WRITE_CHUNK) {
                file.write_all_at(part, at_in_file)
                    .map_err(|source| StorageError {
                        op: "write",
                        path: self.path(file_index),
                        source,
                    })?;
                at_in_file += part.len() as u64;
            }
        }
        Ok(())
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
            let path = || self.path(file_index);
            let file = self.file(file_index).ok_or_else(|| StorageError {
                op: "read",
                path: path(),
                source: io::Error::new(io::ErrorKind::NotFound, "file is missing"),
            })?;
            file.read_exact_at(chunk, file_offset)
                .map_err(|source| StorageError {
                    op: "read",
                    path: path(),
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

    /// Push written data to stable storage (on shutdown).
    pub fn sync(&self) -> Result<(), StorageError> {
        for (i, f) in self.files.iter().enumerate() {
            if let Some(f) = f {
                f.sync_data().map_err(|source| StorageError {
                    op: "sync",
                    path: self.path(i),
                    source,
                })?;
            }
        }
        Ok(())
    }
}
