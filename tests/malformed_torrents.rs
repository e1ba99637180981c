//! Malformed `.torrent` files, as a table: every file in
//! `tests/data/malformed/` is listed in `tests/data/malformed/EXPECTED` with
//! a piece of the error message it must produce. Each is refused by the
//! library and by the real binary (`info`, `download`, and the original
//! `-t FILE -d` form) with exit code 2, that message on stderr, no panic,
//! and nothing written anywhere.
//!
//! The files are made by [`cases`], each from a valid base torrent with
//! exactly one defect. `committed_files_match_the_generator` keeps the
//! committed bytes and the generator in step; to re-make the files after
//! changing [`cases`]:
//!
//! ```text
//! cargo test --release --test malformed_torrents -- --ignored regenerate
//! ```
//!
//! Big inputs (nesting 10^6 deep, files over the 10 MiB cap) are made in
//! the tests instead of being committed.

mod common;
use common::*;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use piecemeal::bencode::MAX_TORRENT_LEN;
use piecemeal::metainfo::Metainfo;
use sha1::{Digest, Sha1};

/// Expected text for a file that is deliberately accepted.
const ACCEPTED: &str = "<accepted>";

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/malformed")
}

// ---------------------------------------------------------------------------
// The generator: tiny bencode helpers, valid bases, one defect per case.

/// A byte string.
fn s(b: impl AsRef<[u8]>) -> Vec<u8> {
    let b = b.as_ref();
    let mut out = format!("{}:", b.len()).into_bytes();
    out.extend_from_slice(b);
    out
}

/// An integer.
fn i(n: i64) -> Vec<u8> {
    format!("i{n}e").into_bytes()
}

/// A list of already-encoded items.
fn l(items: &[Vec<u8>]) -> Vec<u8> {
    let mut out = vec![b'l'];
    items.iter().for_each(|x| out.extend_from_slice(x));
    out.push(b'e');
    out
}

/// A dictionary written in the given key order (so a case can break it).
type Dict = Vec<(&'static str, Vec<u8>)>;

fn d(entries: &Dict) -> Vec<u8> {
    let mut out = vec![b'd'];
    for (k, v) in entries {
        out.extend_from_slice(&s(k));
        out.extend_from_slice(v);
    }
    out.push(b'e');
    out
}

/// `n` distinct fake SHA-1 hashes.
fn hashes(n: usize) -> Vec<u8> {
    (0..n * 20).map(|k| (k / 20) as u8 ^ (k as u8)).collect()
}

/// A whole torrent around raw `info` bytes.
fn torrent(info: Vec<u8>) -> Vec<u8> {
    d(&vec![
        ("announce", s("http://127.0.0.1:9/announce")),
        ("info", info),
    ])
}

/// Valid single-file `info`: 100 000 bytes in 4 pieces of 32 KiB.
fn single() -> Dict {
    vec![
        ("length", i(100_000)),
        ("name", s("ok.bin")),
        ("piece length", i(32_768)),
        ("pieces", s(hashes(4))),
    ]
}

/// `dict` with `key` set to `value` (replaced in place, or inserted in
/// sorted position).
fn set(mut dict: Dict, key: &'static str, value: Vec<u8>) -> Dict {
    match dict.iter_mut().find(|(k, _)| *k == key) {
        Some(e) => e.1 = value,
        None => {
            let at = dict
                .iter()
                .position(|(k, _)| *k > key)
                .unwrap_or(dict.len());
            dict.insert(at, (key, value));
        }
    }
    dict
}

fn without(mut dict: Dict, key: &str) -> Dict {
    dict.retain(|(k, _)| *k != key);
    dict
}

/// One `info.files` entry with a raw length and raw path list.
fn file_entry(length: Vec<u8>, path: Vec<u8>) -> Vec<u8> {
    d(&vec![("length", length), ("path", path)])
}

/// One `info.files` entry with a BEP 47 `attr` string.
fn attr_entry(attr: &str, length: i64, comps: &[&[u8]]) -> Vec<u8> {
    d(&vec![
        ("attr", s(attr)),
        ("length", i(length)),
        ("path", path(comps)),
    ])
}

/// A path list of plain components.
fn path(comps: &[&[u8]]) -> Vec<u8> {
    l(&comps.iter().map(s).collect::<Vec<_>>())
}

/// Valid multi-file `info` named `dir` with pieces of 16 KiB and exactly
/// the right number of hashes (or one, if the lengths cannot be summed).
fn multi(files: &[(i64, &[&[u8]])]) -> Dict {
    let total = files
        .iter()
        .try_fold(0u64, |acc, (n, _)| acc.checked_add(u64::try_from(*n).ok()?));
    let n = total.map_or(1, |t| t.div_ceil(16_384) as usize);
    multi_raw(
        files
            .iter()
            .map(|(len, p)| file_entry(i(*len), path(p)))
            .collect(),
        n,
    )
}

fn multi_raw(entries: Vec<Vec<u8>>, num_hashes: usize) -> Dict {
    vec![
        ("files", l(&entries)),
        ("name", s("dir")),
        ("piece length", i(16_384)),
        ("pieces", s(hashes(num_hashes))),
    ]
}

/// A valid multi-file base: `dir/a/b.txt` (10 bytes) and `dir/c.txt` (20).
fn multi_ok() -> Dict {
    multi(&[(10, &[b"a", b"b.txt"]), (20, &[b"c.txt"])])
}

/// Multi-file `info` whose first file has `comps` as its path.
fn hostile_path(comps: &[&[u8]]) -> Vec<u8> {
    torrent(d(&multi(&[(10, comps), (20, &[b"c.txt"])])))
}

/// Single-file `info` named `name`.
fn hostile_name(name: &[u8]) -> Vec<u8> {
    torrent(d(&set(single(), "name", s(name))))
}

/// Replace the first occurrence of `from` in `bytes` by `to`.
fn patch(bytes: Vec<u8>, from: &[u8], to: &[u8]) -> Vec<u8> {
    let at = bytes
        .windows(from.len())
        .position(|w| w == from)
        .unwrap_or_else(|| panic!("{:?} not found", String::from_utf8_lossy(from)));
    let mut out = bytes[..at].to_vec();
    out.extend_from_slice(to);
    out.extend_from_slice(&bytes[at + from.len()..]);
    out
}

/// Every committed case: file name (without `.torrent`) and bytes.
fn cases() -> Vec<(&'static str, Vec<u8>)> {
    let ok = torrent(d(&single()));
    let one_hash = |dict: Dict| set(dict, "pieces", s(hashes(1)));
    vec![
        // --- piece length ---
        (
            "piece_length_zero",
            torrent(d(&set(single(), "piece length", i(0)))),
        ),
        (
            "piece_length_negative",
            torrent(d(&set(single(), "piece length", i(-32_768)))),
        ),
        (
            "piece_length_huge",
            torrent(d(&one_hash(set(single(), "piece length", i(1 << 40))))),
        ),
        (
            "piece_length_just_over_limit",
            torrent(d(&one_hash(set(
                single(),
                "piece length",
                i((64 << 20) + 1),
            )))),
        ),
        (
            "piece_length_not_integer",
            torrent(d(&set(single(), "piece length", s("32768")))),
        ),
        (
            "piece_length_missing",
            torrent(d(&without(single(), "piece length"))),
        ),
        // --- lengths ---
        (
            "length_negative",
            torrent(d(&set(single(), "length", i(-1)))),
        ),
        (
            "length_exceeds_i64",
            torrent(d(&set(
                single(),
                "length",
                b"i9223372036854775808e".to_vec(),
            ))),
        ),
        (
            "length_zero",
            torrent(d(&set(set(single(), "length", i(0)), "pieces", s("")))),
        ),
        (
            "file_length_negative",
            torrent(d(&multi_raw(
                vec![
                    file_entry(i(-5), path(&[b"a"])),
                    file_entry(i(20), path(&[b"b"])),
                ],
                1,
            ))),
        ),
        (
            "length_overflow_u64",
            torrent(d(&multi(&[
                (i64::MAX, &[b"a"]),
                (i64::MAX, &[b"b"]),
                (i64::MAX, &[b"c"]),
            ]))),
        ),
        // --- pieces ---
        (
            "pieces_short",
            torrent(d(&set(single(), "pieces", s(hashes(3))))),
        ),
        (
            "pieces_too_long",
            torrent(d(&set(single(), "pieces", s(hashes(5))))),
        ),
        (
            "pieces_not_multiple_of_20",
            torrent(d(&set(single(), "pieces", s(&hashes(4)[..79])))),
        ),
        ("pieces_empty", torrent(d(&set(single(), "pieces", s(""))))),
        ("pieces_missing", torrent(d(&without(single(), "pieces")))),
        (
            "pieces_not_string",
            torrent(d(&set(single(), "pieces", l(&[s(hashes(4))])))),
        ),
        // --- hostile paths in `files` ---
        ("path_dotdot", hostile_path(&[b"..", b"x"])),
        (
            "path_a_dotdot_dotdot_x",
            hostile_path(&[b"a", b"..", b"..", b"x"]),
        ),
        ("path_dot", hostile_path(&[b".", b"x"])),
        ("path_empty_component", hostile_path(&[b"a", b"", b"b"])),
        ("path_absolute_split", hostile_path(&[b"", b"etc", b"x"])),
        ("path_empty_list", hostile_path(&[])),
        ("path_absolute", hostile_path(&[b"/etc/x"])),
        ("path_slash_dotdot", hostile_path(&[b"a/../../x"])),
        ("path_windows_absolute", hostile_path(&[b"C:\\x"])),
        ("path_drive_letter", hostile_path(&[b"C:x"])),
        ("path_backslash_dotdot", hostile_path(&[b"a\\..\\b"])),
        ("path_nul", hostile_path(&[b"a\0b"])),
        (
            "path_utf8_twin_dotdot",
            torrent(d(&multi_raw(
                vec![
                    d(&vec![
                        ("length", i(10)),
                        ("path", path(&[b"\xff"])),
                        ("path.utf-8", path(&[b"..", b"x"])),
                    ]),
                    file_entry(i(20), path(&[b"c.txt"])),
                ],
                1,
            ))),
        ),
        (
            "path_component_not_string",
            torrent(d(&multi_raw(
                vec![file_entry(i(10), l(&[s("a"), i(1)]))],
                1,
            ))),
        ),
        // --- hostile names ---
        ("name_dotdot_slash_dotdot", hostile_name(b"../..")),
        ("name_dotdot", hostile_name(b"..")),
        ("name_dot", hostile_name(b".")),
        ("name_empty", hostile_name(b"")),
        ("name_absolute", hostile_name(b"/etc/x")),
        ("name_backslash_dotdot", hostile_name(b"..\\x")),
        ("name_nul", hostile_name(b"x\0")),
        ("name_drive_letter", hostile_name(b"C:x")),
        (
            "name_utf8_twin_dotdot",
            torrent(d(&set(
                set(single(), "name", s(b"\xff")),
                "name.utf-8",
                s(".."),
            ))),
        ),
        ("name_missing", torrent(d(&without(single(), "name")))),
        // --- layout ---
        (
            "files_same_path",
            torrent(d(&multi(&[(10, &[b"a", b"b"]), (20, &[b"a", b"b"])]))),
        ),
        (
            "files_same_path_apart",
            torrent(d(&multi(&[(10, &[b"a"]), (20, &[b"b"]), (30, &[b"a"])]))),
        ),
        (
            "file_dir_clash",
            torrent(d(&multi(&[(10, &[b"a"]), (20, &[b"a", b"b"])]))),
        ),
        (
            "file_dir_clash_reversed",
            torrent(d(&multi(&[(20, &[b"a", b"b"]), (10, &[b"a"])]))),
        ),
        (
            "length_and_files",
            torrent(d(&set(multi_ok(), "length", i(30)))),
        ),
        (
            "no_length_no_files",
            torrent(d(&without(single(), "length"))),
        ),
        (
            "files_not_list",
            torrent(d(&set(multi_ok(), "files", d(&vec![("a", i(1))])))),
        ),
        (
            "files_entry_not_dict",
            torrent(d(&set(multi_ok(), "files", l(&[i(10)])))),
        ),
        (
            "v2_only",
            torrent(d(&vec![
                (
                    "file tree",
                    d(&vec![("a", d(&vec![("", d(&vec![("length", i(10))]))]))]),
                ),
                ("meta version", i(2)),
                ("name", s("v2")),
                ("piece length", i(16_384)),
            ])),
        ),
        // --- BEP 47 attributes ---
        (
            "only_padding",
            torrent(d(&multi_raw(
                vec![attr_entry("p", 10, &[b".pad", b"10"])],
                1,
            ))),
        ),
        (
            "single_file_padding",
            torrent(d(&set(single(), "attr", s("p")))),
        ),
        (
            "symlink_with_bytes",
            torrent(d(&multi_raw(
                vec![
                    attr_entry("l", 10, &[b"a"]),
                    file_entry(i(20), path(&[b"c.txt"])),
                ],
                1,
            ))),
        ),
        (
            "pad_paths_repeat",
            torrent(d(&multi_raw(
                vec![
                    file_entry(i(10), path(&[b"a"])),
                    attr_entry("p", 16_374, &[b".pad", b"16374"]),
                    file_entry(i(10), path(&[b"b"])),
                    attr_entry("p", 16_374, &[b".pad", b"16374"]),
                    file_entry(i(10), path(&[b"c"])),
                ],
                3,
            ))),
        ),
        // --- the `info` value itself ---
        ("info_not_dict", torrent(i(3))),
        ("info_is_list", torrent(l(&[d(&single())]))),
        (
            "missing_info",
            d(&vec![("announce", s("http://127.0.0.1:9/announce"))]),
        ),
        // --- bencode ---
        (
            "int_leading_zero",
            torrent(d(&set(single(), "piece length", b"i032768e".to_vec()))),
        ),
        (
            "int_negative_zero",
            torrent(d(&set(single(), "private", b"i-0e".to_vec()))),
        ),
        (
            "int_empty",
            torrent(d(&set(single(), "private", b"ie".to_vec()))),
        ),
        (
            "string_length_leading_zero",
            patch(ok.clone(), b"6:ok.bin", b"06:ok.bin"),
        ),
        (
            "string_length_overflow",
            patch(ok.clone(), b"6:ok.bin", b"99999999999999999999999:ok.bin"),
        ),
        (
            "string_length_past_end",
            patch(ok.clone(), b"6:ok.bin", b"100000:ok.bin"),
        ),
        (
            "duplicate_keys",
            torrent(d(&{
                let mut info = single();
                info.insert(1, ("length", i(100_000)));
                info
            })),
        ),
        (
            "duplicate_keys_unsorted",
            torrent(d(&{
                let mut info = single();
                info.push(("length", i(100_000)));
                info
            })),
        ),
        (
            "duplicate_info",
            d(&vec![
                ("announce", s("http://127.0.0.1:9/announce")),
                ("info", d(&single())),
                ("info", d(&set(single(), "name", s("other.bin")))),
            ]),
        ),
        (
            "unsorted_keys",
            torrent(d(&{
                let mut info = single();
                info.reverse();
                info
            })),
        ),
        (
            "key_not_string",
            patch(ok.clone(), b"6:lengthi100000e", b"i1ei100000e"),
        ),
        (
            "nested_too_deep",
            d(&vec![
                ("announce", s("http://127.0.0.1:9/announce")),
                ("info", d(&single())),
                ("x-deep", {
                    let mut v = vec![b'l'; 100];
                    v.extend(vec![b'e'; 100]);
                    v
                }),
            ]),
        ),
        ("trailing_garbage", [ok.as_slice(), b"garbage"].concat()),
        ("trailing_second_dict", [ok.as_slice(), b"de"].concat()),
        ("truncated", ok[..ok.len() / 2].to_vec()),
        ("empty_file", Vec::new()),
        (
            "not_bencode",
            b"<html><body>404 Not Found</body></html>\n".to_vec(),
        ),
        ("stray_end", b"e".to_vec()),
        ("top_level_list", l(&[s("info"), d(&single())])),
        ("top_level_string", s("d4:infoe")),
    ]
}

/// Write every case to `tests/data/malformed/` (and nothing else). Run
/// after changing [`cases`], then update `EXPECTED`.
#[test]
#[ignore]
fn regenerate() {
    let dir = data_dir();
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in cases() {
        std::fs::write(dir.join(format!("{name}.torrent")), bytes).unwrap();
    }
}

#[test]
fn the_bases_the_cases_start_from_are_valid() {
    let m = Metainfo::from_bytes(&torrent(d(&single()))).unwrap();
    assert_eq!((m.info.total_len, m.info.pieces.len()), (100_000, 4));
    let m = Metainfo::from_bytes(&torrent(d(&multi_ok()))).unwrap();
    assert_eq!(m.file_rel_path(0), PathBuf::from("dir/a/b.txt"));
    assert_eq!(m.info.pieces.len(), 1);
    // Names and paths that look a little like the hostile ones but are fine.
    for comps in [&[b"a..b".as_slice()][..], &[b"...", b".x"], &[b"1:x"]] {
        Metainfo::from_bytes(&hostile_path(comps)).unwrap_or_else(|e| panic!("{comps:?}: {e}"));
    }
    // A file ".." would be refused by name: the same layout with a safe
    // name is accepted, so each case isolates its one defect.
    Metainfo::from_bytes(&torrent(d(&multi(&[(10, &[b"a"]), (20, &[b"b", b"a"])])))).unwrap();
}

// ---------------------------------------------------------------------------
// The table.

/// `EXPECTED` as (file name, expected text), in file order.
fn table() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(data_dir().join("EXPECTED")).unwrap();
    let mut rows = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (file, expected) = line
            .split_once('\t')
            .unwrap_or_else(|| panic!("EXPECTED line {}: no tab: {line:?}", n + 1));
        assert!(!expected.is_empty(), "EXPECTED line {}: empty text", n + 1);
        rows.push((file.to_owned(), expected.to_owned()));
    }
    rows
}

#[test]
fn every_file_is_in_the_table_and_every_row_has_a_file() {
    let rows = table();
    let listed: BTreeSet<String> = rows.iter().map(|(f, _)| f.clone()).collect();
    assert_eq!(
        listed.len(),
        rows.len(),
        "a file is listed twice in EXPECTED"
    );
    let on_disk: BTreeSet<String> = std::fs::read_dir(data_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != "EXPECTED")
        .collect();
    assert_eq!(
        on_disk.difference(&listed).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "files not in EXPECTED"
    );
    assert_eq!(
        listed.difference(&on_disk).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "EXPECTED rows without a file"
    );
}

#[test]
fn committed_files_match_the_generator() {
    let generated: BTreeMap<String, Vec<u8>> = cases()
        .into_iter()
        .map(|(n, b)| (format!("{n}.torrent"), b))
        .collect();
    let listed: BTreeSet<String> = table().into_iter().map(|(f, _)| f).collect();
    assert_eq!(
        generated.keys().cloned().collect::<BTreeSet<_>>(),
        listed,
        "generator and EXPECTED list different files"
    );
    for (name, bytes) in &generated {
        let committed = std::fs::read(data_dir().join(name)).unwrap();
        assert!(
            &committed == bytes,
            "{name} differs from the generator; run \
             `cargo test --test malformed_torrents -- --ignored regenerate`"
        );
    }
}

#[test]
fn the_library_refuses_each_file_with_the_expected_message() {
    for (file, expected) in table() {
        let path = data_dir().join(&file);
        let bytes = std::fs::read(&path).unwrap();
        let from_bytes = Metainfo::from_bytes(&bytes);
        let loaded = Metainfo::load(&path);
        if expected == ACCEPTED {
            let m = loaded.unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_eq!(m, from_bytes.unwrap(), "{file}");
            continue;
        }
        let e = match from_bytes {
            Ok(m) => panic!("{file}: accepted as {m:?}"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains(&expected), "{file}: {e:?} lacks {expected:?}");
        assert!(!e.contains('\n'), "{file}: more than one line: {e:?}");
        let e2 = loaded.map(|_| ()).unwrap_err().to_string();
        assert_eq!(e, e2, "{file}: load and from_bytes disagree");
    }
}

/// Unsorted keys are accepted on purpose (see `src/bencode.rs`): the
/// info-hash is SHA-1 over the bytes as written, never a re-encoding.
#[test]
fn unsorted_keys_are_accepted_and_hashed_as_written() {
    let bytes = std::fs::read(data_dir().join("unsorted_keys.torrent")).unwrap();
    let m = Metainfo::from_bytes(&bytes).unwrap();
    let info = d(&{
        let mut info = single();
        info.reverse();
        info
    });
    assert_eq!(m.info_hash, <[u8; 20]>::from(Sha1::digest(&info)));
    assert_ne!(m.info_hash, <[u8; 20]>::from(Sha1::digest(d(&single()))));
}

// ---------------------------------------------------------------------------
// The binary.

/// Run `piecemeal ARGS` in `cwd`; (exit code, stdout, stderr). Killed
/// after 20 s (exit code `None`): a malformed file accepted by `download`
/// would wait for peers forever.
fn run_bin<S: AsRef<OsStr>>(args: &[S], cwd: &Path) -> (Option<i32>, String, String) {
    let child = Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let (out, killed) = match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(out) => (out, false),
        Err(_) => {
            // The child has not been reaped (its waiter is still blocked),
            // so the pid is still ours.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
            (rx.recv().unwrap(), true)
        }
    };
    let out = out.unwrap();
    let mut stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if killed {
        stderr.push_str("\n[still running after 20 s: killed]");
    }
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr,
    )
}

/// Exit 2, the expected text on the `piecemeal: ` line, no panic.
fn assert_refused(
    what: &str,
    (code, _stdout, stderr): &(Option<i32>, String, String),
    expected: &str,
) {
    assert!(!stderr.contains("panicked"), "{what}: panic:\n{stderr}");
    assert_eq!(*code, Some(2), "{what}: exit code; stderr:\n{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("piecemeal: "))
        .unwrap_or_else(|| panic!("{what}: no `piecemeal: ` line:\n{stderr}"));
    assert!(
        line.contains(expected),
        "{what}: {line:?} lacks {expected:?}"
    );
}

/// Every path below `root`, relative to it.
fn tree(root: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() && !p.is_symlink() {
                dirs.push(p.clone());
            }
            out.insert(p.strip_prefix(root).unwrap().to_path_buf());
        }
    }
    out
}

#[test]
fn info_refuses_each_file_with_exit_2_and_the_expected_message() {
    let tmp = TempDir::new("malformed-info");
    for (file, expected) in table() {
        let path = data_dir().join(&file);
        let out = run_bin(&[OsStr::new("info"), path.as_os_str()], tmp.path());
        if expected == ACCEPTED {
            assert_eq!(out.0, Some(0), "{file}: {}", out.2);
            assert!(out.1.contains("info-hash:"), "{file}: {}", out.1);
            continue;
        }
        assert_refused(&format!("info {file}"), &out, &expected);
    }
}

#[test]
fn download_refuses_each_file_and_writes_nothing() {
    let tmp = TempDir::new("malformed-download");
    let escape_targets = [Path::new("/etc/x"), Path::new("/x")];
    let existed: Vec<bool> = escape_targets.iter().map(|p| p.exists()).collect();
    for (file, expected) in table() {
        if expected == ACCEPTED {
            continue;
        }
        // Deep enough that `..` components, had they been followed from
        // `out`, would land inside `case` where `tree` sees them.
        let case = tmp.join(&file);
        let out_dir = case.join("l1/l2/l3/out");
        let cwd = case.join("l1/l2/l3/cwd");
        std::fs::create_dir_all(&out_dir).unwrap();
        std::fs::create_dir_all(&cwd).unwrap();
        let before = tree(&case);
        let path = data_dir().join(&file);
        let torrent = path.to_str().unwrap();
        let out = out_dir.to_str().unwrap();
        let common = ["--port", "0", "--bind", "127.0.0.1", "--no-tracker", "-q"];
        let modern = [&["download", torrent, "--output", out][..], &common].concat();
        let legacy = [&["-t", torrent, "-d", "-o", out][..], &common].concat();
        for args in [modern, legacy] {
            let res = run_bin(&args, &cwd);
            assert_eq!(tree(&case), before, "{args:?} wrote something: {}", res.2);
            assert_refused(&format!("{args:?}"), &res, &expected);
        }
    }
    for (p, existed) in escape_targets.iter().zip(existed) {
        assert_eq!(p.exists(), existed, "{} appeared", p.display());
    }
}

// ---------------------------------------------------------------------------
// Generated in the test: too big to commit.

/// `l` x 10^6 then `e` x 10^6 under `info` (2 MB, under the size cap).
fn deep_torrent() -> Vec<u8> {
    const DEPTH: usize = 1_000_000;
    let mut v = b"d4:info".to_vec();
    v.resize(v.len() + DEPTH, b'l');
    v.resize(v.len() + DEPTH, b'e');
    v.push(b'e');
    v
}

/// The error `Metainfo::from_bytes` gives for `bytes`, parsed on a thread
/// with a 256 KiB stack (a recursive parser would overflow it).
fn refusal_on_small_stack(bytes: Vec<u8>) -> String {
    std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(move || {
            Metainfo::from_bytes(&bytes)
                .map(|_| ())
                .unwrap_err()
                .to_string()
        })
        .unwrap()
        .join()
        .expect("parsing overflowed or panicked")
}

#[test]
fn nesting_a_million_deep_is_refused_on_a_256_kib_stack() {
    let bytes = deep_torrent();
    let msg = refusal_on_small_stack(bytes);
    assert!(msg.contains("nested too deeply"), "{msg}");
    // Bare nesting, not even a dictionary on top.
    let bare = [vec![b'l'; 1_000_000], vec![b'e'; 1_000_000]].concat();
    let msg = refusal_on_small_stack(bare);
    assert!(msg.contains("nested too deeply"), "{msg}");

    let tmp = TempDir::new("malformed-deep");
    let path = tmp.join("deep.torrent");
    std::fs::write(&path, deep_torrent()).unwrap();
    let out = run_bin(&[OsStr::new("info"), path.as_os_str()], tmp.path());
    assert_refused("info deep.torrent", &out, "nested too deeply");
}

#[test]
fn too_many_values_are_refused() {
    // 5 M empty lists in 10 MB: within the size cap, over the 4 M values cap.
    let mut v = b"d4:infol".to_vec();
    while v.len() < MAX_TORRENT_LEN - 2 {
        v.extend_from_slice(b"le");
    }
    v.extend_from_slice(b"ee");
    assert!(v.len() <= MAX_TORRENT_LEN);
    let msg = Metainfo::from_bytes(&v).unwrap_err().to_string();
    assert!(msg.contains("too many values"), "{msg}");
}

/// Peak resident memory, in bytes, of this process (`RUSAGE_SELF`) or of
/// the largest child waited for so far (`RUSAGE_CHILDREN`).
fn max_rss(who: libc::c_int) -> u64 {
    // SAFETY: `getrusage` only writes the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::getrusage(who, &mut ru) }, 0);
    ru.ru_maxrss as u64 * 1024
}

#[test]
fn files_over_10_mib_are_refused_from_their_size_before_reading() {
    let tmp = TempDir::new("malformed-big");
    let cap = MAX_TORRENT_LEN as u64;
    // Sparse: no data blocks are written.
    for (name, len) in [
        ("over_by_one.torrent", cap + 1),
        ("two_gib.torrent", 2 << 30),
    ] {
        let path = tmp.join(name);
        std::fs::File::create(&path).unwrap().set_len(len).unwrap();
        // The full length is known only from the metadata: a reader that
        // stopped at the cap would report `cap + 1`.
        let expected = format!("torrent file is {len} bytes, more than the limit of {cap} bytes");
        let e = Metainfo::load(&path).unwrap_err().to_string();
        assert_eq!(e, expected);
        let out = run_bin(&[OsStr::new("info"), path.as_os_str()], tmp.path());
        assert_refused(&format!("info {name}"), &out, &expected);
        let res = run_bin(
            &[
                "download",
                path.to_str().unwrap(),
                "--output",
                tmp.path().to_str().unwrap(),
                "--port",
                "0",
                "--no-tracker",
                "-q",
            ],
            tmp.path(),
        );
        assert_refused(&format!("download {name}"), &res, &expected);
    }
    // Reading the 2 GiB file would have made the resident set that large
    // (this process for `load`, a child for the binary); all stay small.
    let rss = max_rss(libc::RUSAGE_CHILDREN);
    assert!(rss < 256 << 20, "a child grew to {rss} bytes");
    let rss = max_rss(libc::RUSAGE_SELF);
    assert!(rss < 256 << 20, "the test grew to {rss} bytes");

    // Exactly at the cap it is read, and fails as bencode, not on size.
    let path = tmp.join("at_cap.torrent");
    std::fs::File::create(&path).unwrap().set_len(cap).unwrap();
    let e = Metainfo::load(&path).unwrap_err().to_string();
    assert!(e.contains("unexpected byte at byte 0"), "{e}");
}
