//! Where each byte of a torrent lives on disk: the map from a torrent-wide
//! byte range to (file, offset, length) spans. Pure arithmetic.
//!
//! Padding (BEP 47 pad files) is not a file here: it is a gap between the
//! files, or after the last one, that stands for zeros. Its bytes are part
//! of the torrent's byte stream (piece hashes cover them) but live nowhere
//! on disk, so a pad file's path can never be joined to the download folder.

#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

use std::path::PathBuf;

/// One file of the torrent, placed at `offset` in the torrent's byte stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileSlot {
    /// Path relative to the download folder.
    pub path: PathBuf,
    /// First byte of this file in the torrent's byte stream.
    pub offset: u64,
    pub len: u64,
    /// BEP 47 `x`: give the file execute permission when it is created.
    pub executable: bool,
}

/// A piece of a torrent-wide byte range: bytes of one file, or padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Span {
    /// `len` bytes of file `file`, from `file_offset`.
    File {
        file: usize,
        file_offset: u64,
        len: usize,
    },
    /// `len` bytes of padding: zeros that are never read or written.
    Padding { len: usize },
}

impl Span {
    pub fn len(&self) -> usize {
        match *self {
            Span::File { len, .. } | Span::Padding { len } => len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The files of a torrent, in torrent order, and the padding between them.
#[derive(Clone, Debug)]
pub struct Layout {
    /// The files that live on disk, by increasing offset, not overlapping.
    pub files: Vec<FileSlot>,
    /// Length of the torrent's byte stream, padding included.
    pub total_len: u64,
}

impl Layout {
    /// Files without padding: each one starts where the previous ended.
    pub fn new(files: Vec<FileSlot>) -> Layout {
        debug_assert!(
            files
                .windows(2)
                .all(|w| matches!(w, [a, b] if a.offset + a.len == b.offset))
        );
        let total_len = files.last().map(|f| f.offset + f.len).unwrap_or(0);
        Layout::with_padding(files, total_len)
    }

    /// Files in a stream of `total_len` bytes: what no file covers (between
    /// files or after the last) is padding. Files must be in stream order
    /// and must not overlap or reach past `total_len`.
    pub fn with_padding(files: Vec<FileSlot>, total_len: u64) -> Layout {
        debug_assert!(
            files
                .windows(2)
                .all(|w| matches!(w, [a, b] if a.offset + a.len <= b.offset))
        );
        debug_assert!(files.last().is_none_or(|f| f.offset + f.len <= total_len));
        Layout { files, total_len }
    }

    /// The spans covering `len` bytes at torrent offset `offset`, in order;
    /// their lengths add up to the range. Zero-length files are skipped. A
    /// range past the end is cut short.
    pub fn spans(&self, offset: u64, len: usize) -> Vec<Span> {
        let mut out = Vec::new();
        let end = offset.saturating_add(len as u64).min(self.total_len);
        // First file whose end is past `offset`.
        let first = self.files.partition_point(|f| f.offset + f.len <= offset);
        let mut pos = offset;
        for (i, f) in self.files.iter().enumerate().skip(first) {
            if pos >= end || f.offset >= end {
                break;
            }
            let file_end = f.offset + f.len;
            if f.len == 0 || pos >= file_end {
                continue;
            }
            if pos < f.offset {
                out.push(Span::Padding {
                    len: (f.offset - pos) as usize,
                });
                pos = f.offset;
            }
            let take = (end.min(file_end) - pos) as usize;
            out.push(Span::File {
                file: i,
                file_offset: pos - f.offset,
                len: take,
            });
            pos += take as u64;
        }
        if pos < end {
            out.push(Span::Padding {
                len: (end - pos) as usize,
            });
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests may panic
mod tests {
    use super::*;

    /// Files of `lens`, back to back; a negative length is that much padding.
    fn layout(lens: &[i64]) -> Layout {
        let mut off = 0;
        let mut files = Vec::new();
        for (i, &len) in lens.iter().enumerate() {
            if len >= 0 {
                files.push(FileSlot {
                    path: PathBuf::from(format!("f{i}")),
                    offset: off,
                    len: len as u64,
                    executable: false,
                });
            }
            off += len.unsigned_abs();
        }
        Layout::with_padding(files, off)
    }

    fn file(file: usize, file_offset: u64, len: usize) -> Span {
        Span::File {
            file,
            file_offset,
            len,
        }
    }

    #[test]
    fn range_crossing_files_and_skipping_empty_ones() {
        let l = layout(&[10, 0, 5, 100]);
        let s = l.spans(8, 10);
        assert_eq!(s, vec![file(0, 8, 2), file(2, 0, 5), file(3, 0, 3)]);
        assert_eq!(s.iter().map(Span::len).sum::<usize>(), 10);
    }

    #[test]
    fn range_inside_one_file_and_past_the_end() {
        let l = layout(&[10, 20]);
        assert_eq!(l.spans(12, 4), vec![file(1, 2, 4)]);
        assert_eq!(l.spans(25, 100), vec![file(1, 15, 5)]);
        assert!(l.spans(30, 1).is_empty());
    }

    #[test]
    fn padding_is_a_span_of_its_own_and_never_a_file() {
        // a (10) | pad 6 | b (16) | pad 16 | empty | c (5) | pad 3 at the end
        let l = layout(&[10, -6, 16, -16, 0, 5, -3]);
        assert_eq!(l.total_len, 56);
        assert_eq!(
            l.files
                .iter()
                .map(|f| f.path.to_str().unwrap())
                .collect::<Vec<_>>(),
            ["f0", "f2", "f4", "f5"]
        );
        assert_eq!(
            l.spans(0, 56),
            vec![
                file(0, 0, 10),
                Span::Padding { len: 6 },
                file(1, 0, 16),
                Span::Padding { len: 16 },
                file(3, 0, 5),
                Span::Padding { len: 3 },
            ]
        );
        // Starting and ending inside padding.
        assert_eq!(
            l.spans(12, 16),
            vec![Span::Padding { len: 4 }, file(1, 0, 12)]
        );
        assert_eq!(l.spans(34, 4), vec![Span::Padding { len: 4 }]);
        assert_eq!(l.spans(54, 10), vec![Span::Padding { len: 2 }]);
    }

    #[test]
    fn every_byte_maps_to_exactly_one_place() {
        for lens in [
            &[1i64, 0, 16383, 16385, 0, 7, 40000][..],
            &[-5, 1, -16383, 16385, 0, -7, 0, 40000, -1][..],
        ] {
            let l = layout(lens);
            let total: u64 = lens.iter().map(|l| l.unsigned_abs()).sum();
            let padding: Vec<bool> = lens
                .iter()
                .flat_map(|&len| std::iter::repeat_n(len < 0, len.unsigned_abs() as usize))
                .collect();
            for start in (0..total).step_by(97) {
                for len in [1usize, 100, 16384, 70000] {
                    let spans = l.spans(start, len);
                    let want = (total - start).min(len as u64) as usize;
                    assert_eq!(spans.iter().map(Span::len).sum::<usize>(), want);
                    let mut pos = start;
                    for s in spans {
                        assert!(!s.is_empty());
                        match s {
                            Span::File {
                                file,
                                file_offset,
                                len,
                            } => {
                                assert_eq!(l.files[file].offset + file_offset, pos);
                                assert!(file_offset + len as u64 <= l.files[file].len);
                                assert!(!padding[pos as usize]);
                            }
                            Span::Padding { len } => {
                                assert!(
                                    padding[pos as usize..pos as usize + len].iter().all(|&p| p)
                                );
                            }
                        }
                        pos += s.len() as u64;
                    }
                }
            }
        }
    }
}
