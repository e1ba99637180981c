//! `.torrent` files: read, validate, describe and create (BEP 3, BEP 12,
//! BEP 47 file attributes, the v1 side of BEP 52 hybrid torrents).
//!
//! # Reading
//!
//! [`Metainfo::from_bytes`] runs the bytes through [`bencode::validate`]
//! (depth, size, canonical integers, no trailing bytes, no duplicate keys)
//! and then through serde_bencode into small serde structs whose fields are
//! [`Value`]s, so every type check is ours and can say in one line which
//! field is wrong. Unknown keys are skipped by serde without being stored.
//!
//! The info-hash is SHA-1 over the exact bytes of the `info` value as they
//! appear in the file (found with [`bencode::dict_value_span`]), never over
//! a re-encoding. That is why unsorted dictionary keys are accepted here:
//! they cannot change the hash, and some real torrents have them.
//!
//! Everything in a torrent is untrusted. Validation guarantees, for an `Ok`
//! result:
//! - `0 < piece_len <= 64 MiB` (a piece is held in memory);
//! - `total_len > 0`, the sum of file lengths (padding included) without
//!   overflow, and exactly `ceil(total_len / piece_len)` piece hashes, so
//!   [`Metainfo::geometry`] cannot fail; `content_len > 0` (not only padding);
//! - the name and every path component are non-empty, not `.` or `..`, and
//!   contain no `/`, `\` or NUL, and do not start with a drive letter
//!   (`C:`), so [`Metainfo::file_rel_path`] always stays below the target
//!   directory;
//! - no two stored files share a path, and no stored file is also a
//!   directory of another (padding and symbolic links are not stored, and
//!   libtorrent names its pad files `.pad/<length>`, so those repeat).
//!
//! Not checked (documented limits): case-insensitive or Unicode-normalising
//! file systems may still fold two distinct names together, and Windows
//! reserved names (`CON`, `NUL`) are allowed.
//!
//! # File attributes (BEP 47)
//!
//! A file's `attr` string is read character by character (unknown ones are
//! ignored), see [`FileAttr`]:
//! - `p`, padding: zeros that keep the next file piece-aligned. They stay in
//!   the byte stream (the piece hashes cover them) but are never created,
//!   written or read, and are not listed or counted as content. Pad files
//!   without `attr` are recognised by name too: a path whose first component
//!   is `.pad` (libtorrent's names, `.pad/<length>`), or whose last
//!   component starts with `_____padding_file_` (BitComet's).
//! - `l`, symbolic link: never created (a torrent must not be able to point
//!   a path anywhere). Its `length` may be missing and must be 0 otherwise;
//!   its `symlink path` is not read.
//! - `x`, executable: the file is created with execute permission.
//! - `h`, hidden: shown by `info`; no effect on Unix.
//!
//! # Hybrid torrents (BEP 52)
//!
//! A hybrid torrent has both v1 keys (`pieces`, `files` or `length`) and v2
//! keys (`meta version` 2, `file tree`). It is read and downloaded as v1;
//! its v2 info-hash (SHA-256 of the same `info` bytes) is shown, not used,
//! and the v2 keys are not checked against the v1 ones. BitTorrent
//! v2-only torrents (no `pieces`) are refused with a clear message.
//!
//! # Creating
//!
//! [`create`] hashes a file or a folder into canonical bencode with the
//! same info keys as mktorrent and libtorrent (`files`/`length`, `name`,
//! `piece length`, `pieces`, `private`), so the same data and piece length
//! give the same info-hash. Folder contents are sorted by path components;
//! symbolic links inside a folder are skipped (following them could leave
//! the folder or loop), while a symbolic link given as the root is followed.

#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_bencode::value::Value;
use sha1::{Digest, Sha1};
use sha2::Sha256;

use crate::bencode::{self, BencodeError, Limits, MAX_TORRENT_LEN, Writer};
use crate::geometry::Geometry;

/// Largest piece length we accept: 64 MiB (a whole piece is held in memory).
pub const MAX_PIECE_LEN: u32 = 64 * 1024 * 1024;

/// Smallest piece length [`create`] accepts: 16 KiB, one block.
pub const MIN_CREATE_PIECE_LEN: u32 = 16 * 1024;

/// Size of the reads [`create`] makes while hashing.
const READ_CHUNK: usize = 1024 * 1024;

/// A parsed and validated `.torrent` file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metainfo {
    /// SHA-1 of the raw bytes of the `info` dictionary.
    pub info_hash: [u8; 20],
    /// For a hybrid v1+v2 torrent (BEP 52): its v2 info-hash, SHA-256 of
    /// the same bytes. Shown by `info`; the swarm is joined with the v1 hash.
    pub v2_info_hash: Option<[u8; 32]>,
    /// The `info` dictionary.
    pub info: Info,
    /// The raw bytes of the `info` dictionary (what `info_hash` hashes),
    /// served to peers that fetch the metadata (BEP 9); shared, not copied.
    pub info_bytes: std::sync::Arc<[u8]>,
    /// The `announce` URL, if present and UTF-8.
    pub announce: Option<String>,
    /// The BEP 12 `announce-list` tiers (empty tiers and non-string entries dropped).
    pub announce_list: Vec<Vec<String>>,
    /// Free-form `comment`.
    pub comment: Option<String>,
    /// `created by`: the program that made the torrent.
    pub created_by: Option<String>,
    /// `creation date`, seconds since the Unix epoch.
    pub creation_date: Option<i64>,
}

/// The validated `info` dictionary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Info {
    /// Suggested file name (single-file) or directory name (multi-file).
    pub name: String,
    /// Bytes per piece (the last piece may be shorter).
    pub piece_len: u32,
    /// SHA-1 of every piece, in order.
    pub pieces: Vec<[u8; 20]>,
    /// The files, in torrent order, padding included; a single-file torrent
    /// has one entry.
    pub files: Vec<FileEntry>,
    /// Length of the byte stream the pieces cover: all file lengths,
    /// padding included; always > 0.
    pub total_len: u64,
    /// Bytes of content: `total_len` without padding; always > 0.
    pub content_len: u64,
    /// `private` = 1: peers come from the trackers only (BEP 27).
    pub private: bool,
    /// The torrent used the `files` form (a directory named `name`).
    pub multi_file: bool,
}

/// One file of a torrent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileEntry {
    /// Components below the torrent name; empty for a single-file torrent.
    pub path: Vec<String>,
    /// Length in bytes (may be 0).
    pub length: u64,
    /// Where the file starts within the torrent's concatenated data.
    pub offset: u64,
    /// BEP 47 attributes (and the older padding conventions).
    pub attr: FileAttr,
}

impl FileEntry {
    /// Does the file go on disk? Padding and symbolic links do not.
    pub fn is_stored(&self) -> bool {
        !self.attr.padding && !self.attr.symlink
    }
}

/// A file's BEP 47 attributes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileAttr {
    /// `p`: zeros that are never stored (also set for the older `.pad/`
    /// and `_____padding_file_` names).
    pub padding: bool,
    /// `l`: a symbolic link; never created.
    pub symlink: bool,
    /// `x`: created with execute permission.
    pub executable: bool,
    /// `h`: hidden; shown, no effect on Unix.
    pub hidden: bool,
}

impl FileAttr {
    /// The attributes of a file from its `attr` value (anything but a
    /// string counts as none) and its path components.
    fn parse(attr: Option<&Value>, path: &[String]) -> FileAttr {
        let flags: &[u8] = match attr {
            Some(Value::Bytes(b)) => b,
            _ => &[],
        };
        let legacy_padding = (path.len() >= 2 && path.first().is_some_and(|c| c == ".pad"))
            || path
                .last()
                .is_some_and(|c| c.starts_with("_____padding_file_"));
        FileAttr {
            padding: flags.contains(&b'p') || legacy_padding,
            symlink: flags.contains(&b'l'),
            executable: flags.contains(&b'x'),
            hidden: flags.contains(&b'h'),
        }
    }
}

/// Why a torrent could not be read or created. `Display` is one line.
#[derive(Debug)]
pub enum MetainfoError {
    /// Reading or hashing a file failed.
    Io(PathBuf, io::Error),
    /// The `.torrent` file is larger than [`MAX_TORRENT_LEN`] bytes.
    TooLarge(u64),
    /// The bytes are not acceptable bencode.
    Bencode(BencodeError),
    /// A required field is absent.
    Missing(&'static str),
    /// A field is present but wrong or unsafe.
    Invalid(String),
    /// [`create`] was given something it cannot turn into a torrent.
    Create(String),
}

impl fmt::Display for MetainfoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetainfoError::Io(path, e) => write!(f, "{}: {e}", path.display()),
            MetainfoError::TooLarge(n) => write!(
                f,
                "torrent file is {n} bytes, more than the limit of {MAX_TORRENT_LEN} bytes"
            ),
            MetainfoError::Bencode(e) => write!(f, "not a valid torrent file: {e}"),
            MetainfoError::Missing(field) => {
                write!(f, "invalid torrent: required field `{field}` is missing")
            }
            MetainfoError::Invalid(why) => write!(f, "invalid torrent: {why}"),
            MetainfoError::Create(why) => write!(f, "cannot create torrent: {why}"),
        }
    }
}

impl std::error::Error for MetainfoError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            MetainfoError::Io(_, e) => Some(e),
            MetainfoError::Bencode(e) => Some(e),
            _ => None,
        }
    }
}

fn invalid(why: impl Into<String>) -> MetainfoError {
    MetainfoError::Invalid(why.into())
}

/// Top-level keys we read. `info` is decoded separately from its raw span.
#[derive(Deserialize)]
struct RawTop {
    announce: Option<Value>,
    #[serde(rename = "announce-list")]
    announce_list: Option<Value>,
    comment: Option<Value>,
    #[serde(rename = "created by")]
    created_by: Option<Value>,
    #[serde(rename = "creation date")]
    creation_date: Option<Value>,
}

/// The `info` keys we read.
#[derive(Deserialize)]
struct RawInfo {
    name: Option<Value>,
    #[serde(rename = "name.utf-8")]
    name_utf8: Option<Value>,
    #[serde(rename = "piece length")]
    piece_length: Option<Value>,
    pieces: Option<Value>,
    length: Option<Value>,
    files: Option<Vec<RawFile>>,
    private: Option<Value>,
    attr: Option<Value>,
    #[serde(rename = "meta version")]
    meta_version: Option<Value>,
}

/// One entry of `info.files`.
#[derive(Deserialize)]
struct RawFile {
    length: Option<Value>,
    path: Option<Value>,
    #[serde(rename = "path.utf-8")]
    path_utf8: Option<Value>,
    attr: Option<Value>,
}

impl Metainfo {
    /// Parse and validate a `.torrent` file's bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Metainfo, MetainfoError> {
        if bytes.len() > MAX_TORRENT_LEN {
            return Err(MetainfoError::TooLarge(bytes.len() as u64));
        }
        bencode::validate_dict(bytes, &Limits::TORRENT).map_err(MetainfoError::Bencode)?;
        let info_span =
            bencode::dict_value_span(bytes, b"info").ok_or(MetainfoError::Missing("info"))?;
        // The span comes from a validated document, so it is in bounds.
        let info_bytes = bytes.get(info_span).ok_or(MetainfoError::Missing("info"))?;
        if info_bytes.first() != Some(&b'd') {
            return Err(invalid("`info` is not a dictionary"));
        }
        let info_hash: [u8; 20] = Sha1::digest(info_bytes).into();
        let info = parse_info(info_bytes)?;
        // `parse_info` refused v2-only torrents; v1 keys are present.
        let v2_info_hash = is_hybrid(info_bytes).then(|| Sha256::digest(info_bytes).into());

        // Every field is a `Value`, so the only possible shape error is a
        // non-dict top level, which `validate_dict` already excluded.
        let top: RawTop =
            bencode::decode(bytes, &Limits::TORRENT).map_err(|e| invalid(e.to_string()))?;
        let announce = top
            .announce
            .as_ref()
            .and_then(utf8)
            .filter(|s| !s.is_empty());
        let announce_list = match &top.announce_list {
            Some(Value::List(tiers)) => tiers
                .iter()
                .filter_map(|tier| match tier {
                    Value::List(urls) => Some(
                        urls.iter()
                            .filter_map(utf8)
                            .filter(|s| !s.is_empty())
                            .collect::<Vec<_>>(),
                    ),
                    _ => None,
                })
                .filter(|tier| !tier.is_empty())
                .collect(),
            _ => Vec::new(),
        };
        Ok(Metainfo {
            info_hash,
            v2_info_hash,
            info,
            info_bytes: info_bytes.into(),
            announce,
            announce_list,
            comment: top.comment.as_ref().and_then(lossy),
            created_by: top.created_by.as_ref().and_then(lossy),
            creation_date: match top.creation_date {
                Some(Value::Int(t)) => Some(t),
                _ => None,
            },
        })
    }

    /// A `.torrent` file's bytes around a raw `info` dictionary (metadata
    /// fetched for a magnet link) and tracker tiers: `announce` (the first
    /// URL), `announce-list` (every tier) and `info`, as written by
    /// `piecemeal info --save`. Parse it with [`Metainfo::from_bytes`], the
    /// same validating parser as any file.
    pub fn file_bytes(info: &[u8], tiers: &[Vec<String>]) -> Vec<u8> {
        let mut w = bencode::Writer::new();
        w.dict();
        if let Some(first) = tiers.iter().flatten().next() {
            w.str("announce").str(first);
            w.str("announce-list").list();
            for tier in tiers.iter().filter(|t| !t.is_empty()) {
                w.list();
                for url in tier {
                    w.str(url);
                }
                w.end();
            }
            w.end();
        }
        w.str("info").raw(info).end();
        w.finish()
    }

    /// Read and parse a `.torrent` file. Files larger than
    /// [`MAX_TORRENT_LEN`] are refused before they are read.
    pub fn load(path: &Path) -> Result<Metainfo, MetainfoError> {
        let io_err = |e| MetainfoError::Io(path.to_path_buf(), e);
        let file = File::open(path).map_err(io_err)?;
        let len = file.metadata().map_err(io_err)?.len();
        if len > MAX_TORRENT_LEN as u64 {
            return Err(MetainfoError::TooLarge(len));
        }
        // `take` also bounds files whose metadata lies (pipes, /dev/zero, growth).
        let mut bytes = Vec::with_capacity(len as usize);
        file.take(MAX_TORRENT_LEN as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(io_err)?;
        if bytes.len() > MAX_TORRENT_LEN {
            return Err(MetainfoError::TooLarge(bytes.len() as u64));
        }
        Metainfo::from_bytes(&bytes)
    }

    /// Piece and block arithmetic for this torrent.
    ///
    /// # Panics
    /// Only if `info` was built by hand with `piece_len == 0` or more than
    /// `u32::MAX` pieces; a parsed `Metainfo` is validated against both.
    pub fn geometry(&self) -> Geometry {
        Geometry::new(self.info.total_len, self.info.piece_len)
            .expect("metainfo geometry is validated when parsed")
    }

    /// Tracker tiers per BEP 12: `announce-list` if it has any URL, else
    /// `[[announce]]`, else none. The order is the file's; shuffling within
    /// tiers (as BEP 12 asks) is the tracker client's job.
    pub fn tracker_tiers(&self) -> Vec<Vec<String>> {
        if !self.announce_list.is_empty() {
            self.announce_list.clone()
        } else if let Some(url) = &self.announce {
            vec![vec![url.clone()]]
        } else {
            Vec::new()
        }
    }

    /// Where file `i` goes, relative to the download directory: `name` for a
    /// single-file torrent, `name/comp/.../comp` for a multi-file one.
    ///
    /// An out-of-range `i` gives `name` alone.
    pub fn file_rel_path(&self, i: usize) -> PathBuf {
        let mut p = PathBuf::from(&self.info.name);
        for comp in self.info.files.get(i).into_iter().flat_map(|f| &f.path) {
            p.push(comp);
        }
        p
    }

    /// The info-hash as 40 lowercase hex digits.
    pub fn info_hash_hex(&self) -> String {
        hex(&self.info_hash)
    }

    /// A hybrid v1+v2 torrent (BEP 52), read as v1.
    pub fn is_hybrid(&self) -> bool {
        self.v2_info_hash.is_some()
    }

    /// A human-readable summary for `piecemeal info`. Control and
    /// bidirectional-override characters from the torrent are escaped, so a
    /// hostile name cannot drive the terminal.
    pub fn describe(&self) -> String {
        use std::fmt::Write as _;
        let info = &self.info;
        let mut s = String::new();
        let _ = writeln!(s, "name:          {}", printable(&info.name));
        let _ = writeln!(s, "info-hash:     {}", self.info_hash_hex());
        if let Some(v2) = &self.v2_info_hash {
            let _ = writeln!(s, "info-hash v2:  {}", hex(v2));
            let _ = writeln!(s, "format:        hybrid v1 + v2 (BEP 52), used as v1");
        }
        let _ = writeln!(
            s,
            "total size:    {} ({} bytes)",
            human_size(info.content_len),
            info.content_len
        );
        let pads = info.files.iter().filter(|f| f.attr.padding).count();
        if pads > 0 {
            let padding = info.total_len - info.content_len;
            let _ = writeln!(
                s,
                "padding:       {} in {pads} pad files (zeros, never stored)",
                human_size(padding),
            );
        }
        let _ = writeln!(
            s,
            "pieces:        {} x {} ({} bytes)",
            info.pieces.len(),
            human_size(u64::from(info.piece_len)),
            info.piece_len
        );
        let _ = writeln!(
            s,
            "private:       {}",
            if info.private { "yes" } else { "no" }
        );
        if let Some(c) = &self.comment {
            let _ = writeln!(s, "comment:       {}", printable(c));
        }
        if let Some(c) = &self.created_by {
            let _ = writeln!(s, "created by:    {}", printable(c));
        }
        if let Some(t) = self.creation_date {
            let _ = writeln!(s, "creation date: {} ({t})", utc_date(t));
        }
        let tiers = self.tracker_tiers();
        if tiers.is_empty() {
            let _ = writeln!(s, "trackers:      none");
        } else {
            let _ = writeln!(s, "trackers:");
            for (i, tier) in tiers.iter().enumerate() {
                for url in tier {
                    let _ = writeln!(s, "  tier {}: {}", i + 1, printable(url));
                }
            }
        }
        let listed = || {
            info.files
                .iter()
                .enumerate()
                .filter(|(_, f)| !f.attr.padding)
        };
        let _ = writeln!(s, "files ({}):", listed().count());
        for (i, f) in listed() {
            let path = self.file_rel_path(i);
            let mut notes = String::new();
            for (set, note) in [
                (f.attr.symlink, "  (symbolic link, not created)"),
                (f.attr.executable, "  (executable)"),
                (f.attr.hidden, "  (hidden)"),
            ] {
                if set {
                    notes.push_str(note);
                }
            }
            let _ = writeln!(
                s,
                "  {:>10}  {}{notes}",
                human_size(f.length),
                printable(&path.to_string_lossy())
            );
        }
        s
    }
}

/// Bytes as a UTF-8 string, or `None` (wrong type or not UTF-8).
fn utf8(v: &Value) -> Option<String> {
    match v {
        Value::Bytes(b) => String::from_utf8(b.clone()).ok(),
        _ => None,
    }
}

/// Bytes as a string, invalid UTF-8 replaced; `None` if not bytes.
fn lossy(v: &Value) -> Option<String> {
    match v {
        Value::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    }
}

/// Text of a name: the plain key if it is UTF-8, else its `.utf-8` twin if
/// that is, else the plain key with invalid bytes replaced.
fn pick_text(plain: &[u8], alt: Option<&Value>) -> String {
    if let Ok(s) = std::str::from_utf8(plain) {
        return s.to_owned();
    }
    if let Some(s) = alt.and_then(utf8) {
        return s;
    }
    String::from_utf8_lossy(plain).into_owned()
}

/// Why a name or path component is unsafe, if it is.
fn component_problem(c: &str) -> Option<&'static str> {
    if c.is_empty() {
        Some("is empty")
    } else if c == "." || c == ".." {
        Some("is `.` or `..`")
    } else if c.contains(['/', '\\']) {
        Some("contains a path separator")
    } else if c.contains('\0') {
        Some("contains a NUL byte")
    } else if let [drive, b':', ..] = c.as_bytes()
        && drive.is_ascii_alphabetic()
    {
        Some("starts with a drive letter")
    } else {
        None
    }
}

fn check_component(c: &str, field: &str) -> Result<(), MetainfoError> {
    match component_problem(c) {
        Some(why) => Err(invalid(format!("unsafe path in `{field}`: {c:?} {why}"))),
        None => Ok(()),
    }
}

fn int_field(v: Option<&Value>, field: &'static str) -> Result<i64, MetainfoError> {
    match v {
        None => Err(MetainfoError::Missing(field)),
        Some(Value::Int(n)) => Ok(*n),
        Some(_) => Err(invalid(format!("`{field}` is not an integer"))),
    }
}

fn length_field(v: Option<&Value>, field: &'static str) -> Result<u64, MetainfoError> {
    let n = int_field(v, field)?;
    u64::try_from(n).map_err(|_| invalid(format!("`{field}` is negative ({n})")))
}

/// Path components of `info.files[i]`.
fn file_path(raw: &RawFile, i: usize) -> Result<Vec<String>, MetainfoError> {
    let field = format!("info.files[{i}].path");
    let comps = match &raw.path {
        None => return Err(invalid(format!("`{field}` is missing"))),
        Some(Value::List(comps)) => comps,
        Some(_) => return Err(invalid(format!("`{field}` is not a list"))),
    };
    if comps.is_empty() {
        return Err(invalid(format!("`{field}` is empty")));
    }
    let mut plain = Vec::with_capacity(comps.len());
    for c in comps {
        match c {
            Value::Bytes(b) => plain.push(b.as_slice()),
            _ => {
                return Err(invalid(format!(
                    "`{field}` has a component that is not a string"
                )));
            }
        }
    }
    // Prefer `path.utf-8` only when the plain path is not UTF-8 and the
    // alternative is a well-formed list of UTF-8 strings of its own.
    let all_utf8 = plain.iter().all(|b| std::str::from_utf8(b).is_ok());
    let alt = match &raw.path_utf8 {
        Some(Value::List(alt)) if !all_utf8 && !alt.is_empty() => {
            alt.iter().map(utf8).collect::<Option<Vec<String>>>()
        }
        _ => None,
    };
    let path = alt.unwrap_or_else(|| {
        plain
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect()
    });
    for c in &path {
        check_component(c, &field)?;
    }
    Ok(path)
}

/// Parse and validate the raw `info` dictionary bytes.
fn parse_info(info_bytes: &[u8]) -> Result<Info, MetainfoError> {
    // Shape checks serde would report without naming the field.
    if let Some(span) = bencode::dict_value_span(info_bytes, b"files") {
        let files = info_bytes.get(span).unwrap_or_default();
        if files.first() != Some(&b'l') {
            return Err(invalid("`info.files` is not a list"));
        }
        for (i, item) in bencode::list_item_spans(files).into_iter().enumerate() {
            if files.get(item.start) != Some(&b'd') {
                return Err(invalid(format!("`info.files[{i}]` is not a dictionary")));
            }
        }
    }
    let raw: RawInfo = bencode::decode(info_bytes, &Limits::TORRENT)
        .map_err(|e| invalid(format!("`info`: {e}")))?;

    if raw.pieces.is_none()
        && (matches!(raw.meta_version, Some(Value::Int(2)))
            || bencode::dict_value_span(info_bytes, b"file tree").is_some())
    {
        return Err(invalid(
            "BitTorrent v2-only torrents (BEP 52) are not supported",
        ));
    }

    let name = match &raw.name {
        None => return Err(MetainfoError::Missing("info.name")),
        Some(Value::Bytes(b)) => pick_text(b, raw.name_utf8.as_ref()),
        Some(_) => return Err(invalid("`info.name` is not a string")),
    };
    check_component(&name, "info.name")?;

    let piece_len = int_field(raw.piece_length.as_ref(), "info.piece length")?;
    if piece_len <= 0 {
        return Err(invalid(format!("piece length {piece_len} is not positive")));
    }
    if piece_len > i64::from(MAX_PIECE_LEN) {
        return Err(invalid(format!(
            "piece length {piece_len} is larger than the limit of {MAX_PIECE_LEN} bytes"
        )));
    }
    // In 1..=MAX_PIECE_LEN, so it fits.
    let piece_len = piece_len as u32;

    let pieces_raw = match &raw.pieces {
        None => return Err(MetainfoError::Missing("info.pieces")),
        Some(Value::Bytes(b)) => b,
        Some(_) => return Err(invalid("`info.pieces` is not a string")),
    };
    if pieces_raw.len() % 20 != 0 {
        return Err(invalid(format!(
            "`info.pieces` is {} bytes, not a multiple of 20",
            pieces_raw.len()
        )));
    }

    let (files, multi_file) = match (&raw.length, &raw.files) {
        (Some(_), Some(_)) => return Err(invalid("`info` has both `length` and `files`")),
        (None, None) => return Err(MetainfoError::Missing("info.length or info.files")),
        (Some(len), None) => {
            let length = length_field(Some(len), "info.length")?;
            let attr = FileAttr::parse(raw.attr.as_ref(), &[]);
            if attr.padding || attr.symlink {
                return Err(invalid(format!(
                    "the torrent's only file is {} (`info.attr`): it holds no data",
                    if attr.padding {
                        "padding"
                    } else {
                        "a symbolic link"
                    }
                )));
            }
            (
                vec![FileEntry {
                    path: Vec::new(),
                    length,
                    offset: 0,
                    attr,
                }],
                false,
            )
        }
        (None, Some(raw_files)) => {
            let mut files = Vec::with_capacity(raw_files.len());
            let mut offset = 0u64;
            for (i, rf) in raw_files.iter().enumerate() {
                let path = file_path(rf, i)?;
                let attr = FileAttr::parse(rf.attr.as_ref(), &path);
                let length = match &rf.length {
                    // BEP 47: a symbolic link's length may be left out.
                    None if attr.symlink => 0,
                    None => return Err(invalid(format!("`info.files[{i}].length` is missing"))),
                    Some(Value::Int(n)) => u64::try_from(*n).map_err(|_| {
                        invalid(format!("`info.files[{i}].length` is negative ({n})"))
                    })?,
                    Some(_) => {
                        return Err(invalid(format!(
                            "`info.files[{i}].length` is not an integer"
                        )));
                    }
                };
                if attr.symlink && !attr.padding && length != 0 {
                    return Err(invalid(format!(
                        "`info.files[{i}]` is a symbolic link of {length} bytes (BEP 47 links hold none)"
                    )));
                }
                files.push(FileEntry {
                    path,
                    length,
                    offset,
                    attr,
                });
                offset = offset
                    .checked_add(length)
                    .ok_or_else(|| invalid("the total length of the files overflows 64 bits"))?;
            }
            check_unique_paths(&files)?;
            (files, true)
        }
    };
    let total_len = files
        .iter()
        .try_fold(0u64, |acc, f| acc.checked_add(f.length));
    let total_len =
        total_len.ok_or_else(|| invalid("the total length of the files overflows 64 bits"))?;
    if total_len == 0 {
        return Err(invalid("the torrent holds no data (total length 0)"));
    }
    // No overflow: a part of `total_len`.
    let content_len = files
        .iter()
        .filter(|f| !f.attr.padding)
        .map(|f| f.length)
        .sum();
    if content_len == 0 {
        return Err(invalid("the torrent holds no data, only padding files"));
    }

    let expected = total_len.div_ceil(u64::from(piece_len));
    let got = (pieces_raw.len() / 20) as u64;
    if got != expected {
        return Err(invalid(format!(
            "`info.pieces` has {got} hashes, but {total_len} bytes in pieces of {piece_len} need {expected}"
        )));
    }
    // `got` is at most 10 MiB / 20, so the piece count fits a u32.
    if Geometry::new(total_len, piece_len).is_none() {
        return Err(invalid("too many pieces"));
    }
    let pieces = pieces_raw
        .chunks_exact(20)
        .map(|c| {
            let mut h = [0u8; 20];
            h.copy_from_slice(c);
            h
        })
        .collect();

    let private = matches!(raw.private, Some(Value::Int(1)));
    Ok(Info {
        name,
        piece_len,
        pieces,
        files,
        total_len,
        content_len,
        private,
        multi_file,
    })
}

/// A hybrid v1+v2 torrent (BEP 52): `meta version` 2 and a `file tree`
/// dictionary beside the v1 keys (checked by the caller).
fn is_hybrid(info_bytes: &[u8]) -> bool {
    let value = |key: &[u8]| {
        bencode::dict_value_span(info_bytes, key).and_then(|span| info_bytes.get(span))
    };
    value(b"meta version") == Some(b"i2e")
        && value(b"file tree").is_some_and(|v| v.first() == Some(&b'd'))
}

/// No two stored files with the same path; no stored file that is also a
/// directory. Sorting by components puts every path directly before the
/// paths it is a prefix of, so comparing neighbours finds both problems.
fn check_unique_paths(files: &[FileEntry]) -> Result<(), MetainfoError> {
    let mut order: Vec<&Vec<String>> = files
        .iter()
        .filter(|f| f.is_stored())
        .map(|f| &f.path)
        .collect();
    order.sort_unstable();
    for pair in order.windows(2) {
        let &[a, b] = pair else { continue };
        if a == b {
            return Err(invalid(format!(
                "two files have the same path {:?}",
                a.join("/")
            )));
        }
        if b.starts_with(a) {
            return Err(invalid(format!(
                "{:?} is both a file and a directory (of {:?})",
                a.join("/"),
                b.join("/")
            )));
        }
    }
    Ok(())
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        // A nibble is always a base-16 digit: `from_digit` never says `None`.
        s.extend(char::from_digit(u32::from(b >> 4), 16));
        s.extend(char::from_digit(u32::from(b & 15), 16));
    }
    s
}

/// `1.50 MiB`, `512 B`.
fn human_size(n: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut unit = "B";
    for next in UNITS.iter().skip(1) {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = next;
    }
    format!("{v:.2} {unit}")
}

/// `s` with control and bidi-override characters escaped.
fn printable(s: &str) -> String {
    crate::output::escape_controls(s).into_owned()
}

/// `YYYY-MM-DD hh:mm:ss UTC` for Unix time `t` (proleptic Gregorian).
fn utc_date(t: i64) -> String {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    // Days to civil date (H. Hinnant's algorithm); |days| < 2^47, no overflow.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Options for [`create`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CreateOptions {
    /// Tracker URLs. The first becomes `announce`; with more than one, all
    /// go into `announce-list`, one tracker per tier.
    pub trackers: Vec<String>,
    /// Piece length: a power of two from 16 KiB to 64 MiB. `None`: [`auto_piece_len`].
    pub piece_len: Option<u32>,
    /// Set `private` = 1.
    pub private: bool,
    /// `comment`.
    pub comment: Option<String>,
    /// `created by`; `None` means `piecemeal/<version>`.
    pub created_by: Option<String>,
    /// `creation date` (Unix seconds); `None` leaves it out, which keeps the
    /// output reproducible. The CLI passes the current time.
    pub creation_date: Option<i64>,
}

/// A power-of-two piece length from 32 KiB to 16 MiB giving at most 2000
/// pieces (and more than 1000 unless clamped at either end).
pub fn auto_piece_len(total_len: u64) -> u32 {
    const MIN: u64 = 32 * 1024;
    const MAX: u64 = 16 * 1024 * 1024;
    let mut len = MIN;
    while len < MAX && total_len.div_ceil(len) > 2000 {
        len *= 2;
    }
    len as u32
}

/// A data file found by [`create`].
struct SourceFile {
    /// Components below the root (empty for a single-file torrent).
    components: Vec<String>,
    /// Where to read it.
    path: PathBuf,
    length: u64,
}

/// Hash `path` (a file, or a folder walked recursively) into a new
/// `.torrent` and return its bytes.
///
/// Files in a folder are ordered by their path components, compared byte
/// by byte (mktorrent compares whole path strings, which differs only for
/// names containing bytes below `/`, such as `-` or `.`, next to a
/// subdirectory). Symbolic links inside the folder, sockets and other
/// special files are skipped; empty directories cannot be represented.
/// File and directory names must be UTF-8 and pass the same safety checks
/// as a parsed torrent. The result is parsed back as a self-check.
pub fn create(path: &Path, opts: &CreateOptions) -> Result<Vec<u8>, MetainfoError> {
    let io_err = |p: &Path| {
        let p = p.to_path_buf();
        move |e| MetainfoError::Io(p, e)
    };
    let meta = fs::metadata(path).map_err(io_err(path))?;
    let name = match path.file_name() {
        Some(n) => n.to_owned(),
        None => fs::canonicalize(path)
            .map_err(io_err(path))?
            .file_name()
            .map(|n| n.to_owned())
            .ok_or_else(|| MetainfoError::Create(format!("{} has no name", path.display())))?,
    };
    let name = name
        .into_string()
        .map_err(|n| MetainfoError::Create(format!("name {n:?} is not valid UTF-8")))?;
    if let Some(why) = component_problem(&name) {
        return Err(MetainfoError::Create(format!("name {name:?} {why}")));
    }

    let mut files = Vec::new();
    let multi_file = if meta.is_file() {
        files.push(SourceFile {
            components: Vec::new(),
            path: path.to_path_buf(),
            length: meta.len(),
        });
        false
    } else if meta.is_dir() {
        walk(path, &mut files)?;
        files.sort_by(|a, b| a.components.cmp(&b.components));
        true
    } else {
        return Err(MetainfoError::Create(format!(
            "{} is not a regular file or a directory",
            path.display()
        )));
    };

    let total_len = files
        .iter()
        .try_fold(0u64, |acc, f| acc.checked_add(f.length))
        .ok_or_else(|| MetainfoError::Create("total size overflows 64 bits".into()))?;
    if total_len == 0 {
        return Err(MetainfoError::Create(format!(
            "{} holds no data",
            path.display()
        )));
    }
    let piece_len = match opts.piece_len {
        None => auto_piece_len(total_len),
        Some(n) if n.is_power_of_two() && (MIN_CREATE_PIECE_LEN..=MAX_PIECE_LEN).contains(&n) => n,
        Some(n) => {
            return Err(MetainfoError::Create(format!(
                "piece length {n} must be a power of two from {MIN_CREATE_PIECE_LEN} to {MAX_PIECE_LEN}"
            )));
        }
    };
    let num_pieces = total_len.div_ceil(u64::from(piece_len));
    if num_pieces.saturating_mul(20) > MAX_TORRENT_LEN as u64 / 2 {
        return Err(MetainfoError::Create(format!(
            "piece length {piece_len} is too small for {total_len} bytes ({num_pieces} pieces)"
        )));
    }

    let pieces = hash_files(&files, piece_len, num_pieces)?;

    let int = |n: u64| {
        i64::try_from(n)
            .map_err(|_| MetainfoError::Create(format!("size {n} does not fit bencode")))
    };
    let trackers: Vec<&str> = opts
        .trackers
        .iter()
        .map(|t| t.trim())
        .filter(|t| !t.is_empty())
        .collect();
    let mut w = Writer::new();
    w.dict();
    if let Some(first) = trackers.first() {
        w.str("announce").str(first);
    }
    if trackers.len() > 1 {
        w.str("announce-list").list();
        for t in &trackers {
            w.list().str(t).end();
        }
        w.end();
    }
    if let Some(c) = opts.comment.as_deref().filter(|c| !c.is_empty()) {
        w.str("comment").str(c);
    }
    let default_created_by = concat!("piecemeal/", env!("CARGO_PKG_VERSION"));
    let created_by = opts.created_by.as_deref().unwrap_or(default_created_by);
    if !created_by.is_empty() {
        w.str("created by").str(created_by);
    }
    if let Some(t) = opts.creation_date {
        w.str("creation date").int(t);
    }
    w.str("info").dict();
    if multi_file {
        w.str("files").list();
        for f in &files {
            w.dict()
                .str("length")
                .int(int(f.length)?)
                .str("path")
                .list();
            for c in &f.components {
                w.str(c);
            }
            w.end().end();
        }
        w.end();
    } else {
        w.str("length").int(int(total_len)?);
    }
    w.str("name").str(&name);
    w.str("piece length").int(i64::from(piece_len));
    w.str("pieces").bytes(&pieces);
    if opts.private {
        w.str("private").int(1);
    }
    w.end().end();
    let bytes = w.finish();

    Metainfo::from_bytes(&bytes)
        .map_err(|e| MetainfoError::Create(format!("the new torrent does not validate: {e}")))?;
    Ok(bytes)
}

/// Collect the regular files below `root` (iteratively: deep trees cannot
/// exhaust the stack).
fn walk(root: &Path, files: &mut Vec<SourceFile>) -> Result<(), MetainfoError> {
    let mut dirs = vec![(root.to_path_buf(), Vec::<String>::new())];
    while let Some((dir, prefix)) = dirs.pop() {
        let io_err = |e| MetainfoError::Io(dir.clone(), e);
        for entry in fs::read_dir(&dir).map_err(io_err)? {
            let entry = entry.map_err(io_err)?;
            let path = entry.path();
            // `file_type` does not follow symbolic links.
            let kind = entry
                .file_type()
                .map_err(|e| MetainfoError::Io(path.clone(), e))?;
            if kind.is_symlink() {
                log::warn!("skipping symbolic link {}", path.display());
                continue;
            }
            if !kind.is_dir() && !kind.is_file() {
                log::warn!("skipping special file {}", path.display());
                continue;
            }
            let name = entry.file_name().into_string().map_err(|n| {
                MetainfoError::Create(format!(
                    "file name {n:?} in {} is not valid UTF-8",
                    dir.display()
                ))
            })?;
            if let Some(why) = component_problem(&name) {
                return Err(MetainfoError::Create(format!(
                    "file name {} {why}",
                    path.display()
                )));
            }
            let mut components = prefix.clone();
            components.push(name);
            if kind.is_dir() {
                dirs.push((path, components));
            } else {
                let length = entry
                    .metadata()
                    .map_err(|e| MetainfoError::Io(path.clone(), e))?
                    .len();
                files.push(SourceFile {
                    components,
                    path,
                    length,
                });
            }
        }
    }
    Ok(())
}

/// SHA-1 of every piece of the concatenated files, read in large
/// sequential chunks. Each file must still have the length it had when the
/// folder was walked.
fn hash_files(
    files: &[SourceFile],
    piece_len: u32,
    num_pieces: u64,
) -> Result<Vec<u8>, MetainfoError> {
    let piece_len = u64::from(piece_len);
    let mut out = Vec::with_capacity(usize::try_from(num_pieces.saturating_mul(20)).unwrap_or(0));
    let mut sha = Sha1::new();
    let mut filled = 0u64;
    let mut buf = vec![0u8; READ_CHUNK];
    for f in files {
        let io_err = |e| MetainfoError::Io(f.path.clone(), e);
        let mut file = File::open(&f.path).map_err(io_err)?;
        let mut remaining = f.length;
        while remaining > 0 {
            let n = match file.by_ref().take(remaining).read(&mut buf) {
                Ok(0) => {
                    return Err(MetainfoError::Create(format!(
                        "{} got shorter while it was being hashed",
                        f.path.display()
                    )));
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_err(e)),
            };
            // `take` stops `read` at `remaining`, and `n <= buf.len()`.
            remaining = remaining.saturating_sub(n as u64);
            let mut data = buf.get(..n).unwrap_or_default();
            while !data.is_empty() {
                let take =
                    usize::try_from(piece_len - filled).map_or(data.len(), |r| r.min(data.len()));
                let (head, tail) = data.split_at_checked(take).unwrap_or((data, &[]));
                sha.update(head);
                filled += head.len() as u64;
                data = tail;
                if filled == piece_len {
                    out.extend_from_slice(&sha.finalize_reset());
                    filled = 0;
                }
            }
        }
    }
    if filled > 0 {
        out.extend_from_slice(&sha.finalize_reset());
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests may panic
mod tests;
