//! Where each byte of a torrent lives on disk: the map from a torrent-wide
//! byte range to (file, offset, length) spans. Pure arithmetic.

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
}

/// A piece of a file touched by a torrent-wide byte range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub file: usize,
    pub file_offset: u64,
    pub len: usize,
}

/// The files of a torrent, in torrent order.
#[derive(Clone, Debug)]
pub struct Layout {
    pub files: Vec<FileSlot>,
    pub total_len: u64,
}

impl Layout {
    /// Files must be contiguous: each one starts where the previous ended.
    pub fn new(files: Vec<FileSlot>) -> Layout {
        let total_len = files.last().map(|f| f.offset + f.len).unwrap_or(0);
        debug_assert!(
            files
                .windows(2)
                .all(|w| matches!(w, [a, b] if a.offset + a.len == b.offset))
        );
        Layout { files, total_len }
    }

    /// The spans covering `len` bytes at torrent offset `offset`, in order.
    /// Zero-length files are skipped. A range past the end is cut short.
    pub fn spans(&self, offset: u64, len: usize) -> Vec<Span> {
        let mut out = Vec::new();
        let end = offset.saturating_add(len as u64).min(self.total_len);
        // First file whose end is past `offset`.
        let first = self.files.partition_point(|f| f.offset + f.len <= offset);
        let mut pos = offset;
        for (i, f) in self.files.iter().enumerate().skip(first) {
            if pos >= end {
                break;
            }
            let file_end = f.offset + f.len;
            if f.len > 0 && pos < file_end {
                let take = (end.min(file_end) - pos) as usize;
                out.push(Span {
                    file: i,
                    file_offset: pos - f.offset,
                    len: take,
                });
                pos += take as u64;
            }
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests may panic
mod tests {
    use super::*;

    fn layout(lens: &[u64]) -> Layout {
        let mut off = 0;
        let files = lens
            .iter()
            .enumerate()
            .map(|(i, &len)| {
                let f = FileSlot {
                    path: PathBuf::from(format!("f{i}")),
                    offset: off,
                    len,
                };
                off += len;
                f
            })
            .collect();
        Layout::new(files)
    }

    #[test]
    fn range_crossing_files_and_skipping_empty_ones() {
        let l = layout(&[10, 0, 5, 100]);
        let s = l.spans(8, 10);
        assert_eq!(
            s,
            vec![
                Span {
                    file: 0,
                    file_offset: 8,
                    len: 2
                },
                Span {
                    file: 2,
                    file_offset: 0,
                    len: 5
                },
                Span {
                    file: 3,
                    file_offset: 0,
                    len: 3
                },
            ]
        );
        assert_eq!(s.iter().map(|s| s.len).sum::<usize>(), 10);
    }

    #[test]
    fn range_inside_one_file_and_past_the_end() {
        let l = layout(&[10, 20]);
        assert_eq!(
            l.spans(12, 4),
            vec![Span {
                file: 1,
                file_offset: 2,
                len: 4
            }]
        );
        assert_eq!(
            l.spans(25, 100),
            vec![Span {
                file: 1,
                file_offset: 15,
                len: 5
            }]
        );
        assert!(l.spans(30, 1).is_empty());
    }

    #[test]
    fn every_byte_maps_to_exactly_one_place() {
        let lens = [1u64, 0, 16383, 16385, 0, 7, 40000];
        let l = layout(&lens);
        let total: u64 = lens.iter().sum();
        for start in (0..total).step_by(97) {
            for len in [1usize, 100, 16384, 70000] {
                let spans = l.spans(start, len);
                let want = (total - start).min(len as u64) as usize;
                assert_eq!(spans.iter().map(|s| s.len).sum::<usize>(), want);
                let mut pos = start;
                for s in spans {
                    assert_eq!(l.files[s.file].offset + s.file_offset, pos);
                    assert!(s.file_offset + s.len as u64 <= l.files[s.file].len);
                    pos += s.len as u64;
                }
            }
        }
    }
}
