use super::*;
use crate::ids::PieceIndex as P;

/// Fake piece hashes: `n` distinct 20-byte values.
fn fake_pieces(n: usize) -> Vec<u8> {
    (0..n).flat_map(|i| [i as u8; 20]).collect()
}

/// A single-file info dict.
fn single_info(name: &[u8], len: i64, piece_len: i64, pieces: &[u8]) -> Vec<u8> {
    let mut w = Writer::new();
    w.dict()
        .str("length")
        .int(len)
        .str("name")
        .bytes(name)
        .str("piece length")
        .int(piece_len)
        .str("pieces")
        .bytes(pieces)
        .end();
    w.finish()
}

/// A multi-file info dict; piece hashes are sized to fit the lengths.
fn multi_info(name: &[u8], files: &[(i64, &[&[u8]])], piece_len: i64) -> Vec<u8> {
    let total: i64 = files
        .iter()
        .map(|f| f.0.max(0))
        .fold(0, i64::saturating_add);
    let n = if piece_len > 0 {
        (total as u64).div_ceil(piece_len as u64)
    } else {
        0
    };
    let mut w = Writer::new();
    w.dict().str("files").list();
    for (len, path) in files {
        w.dict().str("length").int(*len).str("path").list();
        for c in *path {
            w.bytes(c);
        }
        w.end().end();
    }
    w.end()
        .str("name")
        .bytes(name)
        .str("piece length")
        .int(piece_len)
        .str("pieces")
        .bytes(&fake_pieces(n.min(1000) as usize))
        .end();
    w.finish()
}

/// Wrap an info dict into a torrent with one tracker.
fn torrent(info: &[u8]) -> Vec<u8> {
    let mut w = Writer::new();
    w.dict()
        .str("announce")
        .str("http://tracker.example/announce")
        .str("info")
        .raw(info)
        .end();
    w.finish()
}

fn parse(info: &[u8]) -> Result<Metainfo, MetainfoError> {
    Metainfo::from_bytes(&torrent(info))
}

fn invalid_message(result: Result<Metainfo, MetainfoError>) -> String {
    match result {
        Err(MetainfoError::Invalid(msg)) => msg,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

/// A fresh, empty directory under the system temp dir.
fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("piecemeal-meta-{}-{tag}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn parses_single_file_torrent() {
    let m = parse(&single_info(b"a.iso", 100_000, 32768, &fake_pieces(4))).unwrap();
    assert_eq!(m.info.name, "a.iso");
    assert_eq!(m.info.piece_len, 32768);
    assert_eq!(m.info.pieces.len(), 4);
    assert_eq!(m.info.pieces[3], [3u8; 20]);
    assert_eq!(m.info.total_len, 100_000);
    assert!(!m.info.multi_file);
    assert!(!m.info.private);
    assert_eq!(
        m.info.files,
        vec![FileEntry {
            path: vec![],
            length: 100_000,
            offset: 0,
            attr: FileAttr::default(),
        }]
    );
    assert_eq!(m.file_rel_path(0), PathBuf::from("a.iso"));
    assert_eq!(
        m.tracker_tiers(),
        vec![vec!["http://tracker.example/announce".to_string()]]
    );
    let g = m.geometry();
    assert_eq!((g.num_pieces, g.piece_size(P(3))), (4, 100_000 - 3 * 32768));
}

#[test]
fn parses_multi_file_torrent_with_offsets_tiers_and_private_flag() {
    let mut w = Writer::new();
    w.dict()
        .str("files")
        .list()
        .dict()
        .str("length")
        .int(10)
        .str("path")
        .list()
        .str("sub")
        .str("a.txt")
        .end()
        .end()
        .dict()
        .str("length")
        .int(0)
        .str("path")
        .list()
        .str("empty")
        .end()
        .end()
        .dict()
        .str("length")
        .int(20)
        .str("path")
        .list()
        .str("b.bin")
        .end()
        .end()
        .end()
        .str("name")
        .str("dir")
        .str("piece length")
        .int(16)
        .str("pieces")
        .bytes(&fake_pieces(2))
        .str("private")
        .int(1)
        .end();
    let info = w.finish();
    let mut w = Writer::new();
    w.dict()
        .str("announce")
        .str("http://a/")
        .str("announce-list")
        .list()
        .list()
        .str("http://a/")
        .str("http://b/")
        .end()
        .list()
        .end()
        .list()
        .int(5)
        .str("udp://c/")
        .end()
        .end()
        .str("comment")
        .str("hi")
        .str("created by")
        .str("test")
        .str("creation date")
        .int(1_700_000_000)
        .str("info")
        .raw(&info)
        .end();
    let m = Metainfo::from_bytes(&w.finish()).unwrap();
    assert!(m.info.multi_file && m.info.private);
    assert_eq!(m.info.total_len, 30);
    let offsets: Vec<(u64, u64)> = m.info.files.iter().map(|f| (f.offset, f.length)).collect();
    assert_eq!(offsets, vec![(0, 10), (10, 0), (10, 20)]);
    assert_eq!(m.file_rel_path(0), PathBuf::from("dir/sub/a.txt"));
    assert_eq!(m.file_rel_path(2), PathBuf::from("dir/b.bin"));
    // Empty tier dropped, non-string entry skipped.
    assert_eq!(
        m.tracker_tiers(),
        vec![
            vec!["http://a/".to_string(), "http://b/".to_string()],
            vec!["udp://c/".to_string()]
        ]
    );
    assert_eq!(m.comment.as_deref(), Some("hi"));
    assert_eq!(m.created_by.as_deref(), Some("test"));
    assert_eq!(m.creation_date, Some(1_700_000_000));
}

#[test]
fn info_hash_is_sha1_of_the_raw_info_bytes_not_a_reencoding() {
    // Outer keys unsorted, info keys unsorted, an unknown info key: all
    // accepted, and the hash covers exactly the bytes as written.
    let info = b"d4:name1:x6:lengthi5e12:piece lengthi16384e6:pieces20:AAAAAAAAAAAAAAAAAAAA7:x-extra3:yese";
    let mut doc = b"d4:info".to_vec();
    doc.extend_from_slice(info);
    doc.extend_from_slice(b"8:announce9:http://t/e");
    let m = Metainfo::from_bytes(&doc).unwrap();
    let expected: [u8; 20] = Sha1::digest(info).into();
    assert_eq!(m.info_hash, expected);
    // A canonical re-encoding would hash differently.
    let canonical = single_info(b"x", 5, 16384, &[b'A'; 20]);
    let reencoded: [u8; 20] = Sha1::digest(&canonical).into();
    assert_ne!(m.info_hash, reencoded);
    assert_eq!(m.info_hash_hex(), hex(&expected));
    assert_eq!(m.announce.as_deref(), Some("http://t/"));
}

#[test]
fn rejects_hostile_paths() {
    let cases: &[&[&[u8]]] = &[
        &[b".."],
        &[b"a", b"..", b"..", b"x"],
        &[b"/etc/x"],
        &[b"/"],
        &[b"C:\\x"],
        &[b"c:"],
        &[b"a\\..\\b"],
        &[b"a/b"],
        &[b"a\0b"],
        &[b""],
        &[b"."],
        &[b"ok", b""],
    ];
    for path in cases {
        let info = multi_info(b"dir", &[(5, path)], 16384);
        let msg = invalid_message(parse(&info));
        assert!(msg.contains("unsafe path"), "{path:?}: {msg}");
    }
    // An empty path list is not a file name either.
    assert!(invalid_message(parse(&multi_info(b"dir", &[(5, &[])], 16384))).contains("is empty"));
    for name in [
        &b"../.."[..],
        b"..",
        b".",
        b"",
        b"/abs",
        b"D:evil",
        b"a\\b",
        b"x\0",
    ] {
        let msg = invalid_message(parse(&single_info(name, 5, 16384, &fake_pieces(1))));
        assert!(msg.contains("info.name"), "{name:?}: {msg}");
        let msg = invalid_message(parse(&multi_info(name, &[(5, &[b"f"])], 16384)));
        assert!(msg.contains("info.name"), "{name:?}: {msg}");
    }
}

#[test]
fn accepts_ordinary_names_with_colons_dots_and_spaces() {
    let files: &[(i64, &[&[u8]])] = &[
        (1, &[b"Episode 1: Pilot.mkv"]),
        (1, &[b"..hidden", b"a.b"]),
        (1, &[b"1:"]),
    ];
    let m = parse(&multi_info(b"Show (2020)", files, 16384)).unwrap();
    assert_eq!(m.info.files[0].path, vec!["Episode 1: Pilot.mkv"]);
}

#[test]
fn rejects_bad_piece_lengths() {
    for (pl, what) in [
        (0, "not positive"),
        (-16384, "not positive"),
        (128 * 1024 * 1024, "limit"),
    ] {
        let msg = invalid_message(parse(&single_info(b"x", 5, pl, &fake_pieces(1))));
        assert!(msg.contains(what), "{pl}: {msg}");
    }
    let huge = b"d6:lengthi5e4:name1:x12:piece lengthi99999999999999999999e6:pieces0:e";
    assert!(matches!(
        parse(huge),
        Err(MetainfoError::Bencode(BencodeError::BadInt(_)))
    ));
    let not_int = b"d6:lengthi5e4:name1:x12:piece length2:166:pieces0:e";
    assert!(invalid_message(parse(not_int)).contains("not an integer"));
}

#[test]
fn rejects_negative_and_overflowing_lengths() {
    let msg = invalid_message(parse(&single_info(b"x", -1, 16384, &fake_pieces(1))));
    assert!(msg.contains("negative"), "{msg}");
    let msg = invalid_message(parse(&multi_info(
        b"d",
        &[(5, &[b"a"]), (-5, &[b"b"])],
        16384,
    )));
    assert!(msg.contains("negative"), "{msg}");
    let max = i64::MAX;
    let msg = invalid_message(parse(&multi_info(
        b"d",
        &[(max, &[b"a"]), (max, &[b"b"]), (max, &[b"c"])],
        1 << 26,
    )));
    assert!(msg.contains("overflows"), "{msg}");
}

#[test]
fn rejects_wrong_number_of_piece_hashes() {
    // 100_000 bytes in 32 KiB pieces need 4 hashes.
    for (pieces, what) in [
        (fake_pieces(3), "has 3 hashes"),
        (fake_pieces(5), "has 5 hashes"),
        (vec![0u8; 79], "not a multiple of 20"),
        (Vec::new(), "has 0 hashes"),
    ] {
        let msg = invalid_message(parse(&single_info(b"x", 100_000, 32768, &pieces)));
        assert!(msg.contains(what), "{msg}");
    }
}

#[test]
fn rejects_duplicate_paths_and_file_directory_clashes() {
    let dup = multi_info(
        b"d",
        &[(1, &[b"a", b"b"]), (1, &[b"c"]), (1, &[b"a", b"b"])],
        16384,
    );
    assert!(invalid_message(parse(&dup)).contains("same path"));
    let clash = multi_info(
        b"d",
        &[
            (1, &[b"a", b"b", b"c"]),
            (1, &[b"a", b"z"]),
            (1, &[b"a", b"b"]),
        ],
        16384,
    );
    assert!(invalid_message(parse(&clash)).contains("both a file and a directory"));
    // Sharing a directory is fine.
    let ok = multi_info(
        b"d",
        &[(1, &[b"a", b"b"]), (1, &[b"a", b"c"]), (1, &[b"ab"])],
        16384,
    );
    assert!(parse(&ok).is_ok());
}

#[test]
fn rejects_torrents_without_data() {
    let msg = invalid_message(parse(&single_info(b"x", 0, 16384, &[])));
    assert!(msg.contains("no data"));
    let msg = invalid_message(parse(&multi_info(
        b"d",
        &[(0, &[b"a"]), (0, &[b"b"])],
        16384,
    )));
    assert!(msg.contains("no data"));
    let msg = invalid_message(parse(&multi_info(b"d", &[], 16384)));
    assert!(msg.contains("no data"));
}

#[test]
fn reports_missing_and_misshapen_fields() {
    assert!(matches!(
        Metainfo::from_bytes(b"d8:announce1:xe"),
        Err(MetainfoError::Missing("info"))
    ));
    assert!(matches!(
        Metainfo::from_bytes(b"li1ee"),
        Err(MetainfoError::Bencode(BencodeError::NotADict(0)))
    ));
    assert!(
        invalid_message(Metainfo::from_bytes(b"d4:infoi1ee"))
            .contains("`info` is not a dictionary")
    );
    assert!(matches!(
        parse(b"d4:name1:x12:piece lengthi1e6:pieces0:e"),
        Err(MetainfoError::Missing("info.length or info.files"))
    ));
    assert!(matches!(
        parse(b"d6:lengthi1e12:piece lengthi1e6:pieces20:AAAAAAAAAAAAAAAAAAAAe"),
        Err(MetainfoError::Missing("info.name"))
    ));
    assert!(matches!(
        parse(b"d6:lengthi1e4:name1:x6:pieces0:e"),
        Err(MetainfoError::Missing("info.piece length"))
    ));
    assert!(matches!(
        parse(b"d6:lengthi1e4:name1:x12:piece lengthi1ee"),
        Err(MetainfoError::Missing("info.pieces"))
    ));
    assert!(
        invalid_message(parse(b"d5:filesi1e4:name1:x12:piece lengthi1e6:pieces0:e"))
            .contains("`info.files` is not a list")
    );
    assert!(
        invalid_message(parse(
            b"d5:filesli1ee4:name1:x12:piece lengthi1e6:pieces0:e"
        ))
        .contains("`info.files[0]` is not a dictionary")
    );
    assert!(
        invalid_message(parse(b"d5:filesde4:name1:x12:piece lengthi1e6:pieces0:e"))
            .contains("not a list")
    );
    assert!(
        invalid_message(parse(
            b"d5:filesle6:lengthi1e4:name1:x12:piece lengthi1e6:pieces0:e"
        ))
        .contains("both")
    );
    assert!(
        invalid_message(parse(
            b"d5:filesld4:pathl1:aeee4:name1:x12:piece lengthi1e6:pieces0:e"
        ))
        .contains("length` is missing")
    );
    assert!(
        invalid_message(parse(
            b"d5:filesld6:lengthi1eee4:name1:x12:piece lengthi1e6:pieces0:e"
        ))
        .contains("path` is missing")
    );
    assert!(
        invalid_message(parse(
            b"d5:filesld6:lengthi1e4:pathi1eee4:name1:x12:piece lengthi1e6:pieces0:e"
        ))
        .contains("not a list")
    );
    assert!(
        invalid_message(parse(
            b"d5:filesld6:lengthi1e4:pathli1eeee4:name1:x12:piece lengthi1e6:pieces0:e"
        ))
        .contains("not a string")
    );
    assert!(
        invalid_message(parse(b"d6:lengthi1e4:namei1e12:piece lengthi1e6:pieces0:e"))
            .contains("`info.name` is not a string")
    );
    assert!(
        invalid_message(parse(
            b"d6:lengthi1e4:name1:x12:piece lengthi1e6:piecesi0ee"
        ))
        .contains("`info.pieces` is not a string")
    );
    let v2 = b"d9:file treede12:meta versioni2e4:name1:x12:piece lengthi16384ee";
    assert!(invalid_message(parse(v2)).contains("v2-only"));
}

/// A multi-file info dict whose files carry BEP 47 `attr` strings ("" for
/// none; `None` length leaves the key out), with `extra` keys (sorted, raw
/// values) after `files`. Piece hashes are sized to fit.
fn attr_info(
    files: &[(&str, Option<i64>, &[&str])],
    piece_len: i64,
    extra: &[(&str, &[u8])],
) -> Vec<u8> {
    let total: i64 = files.iter().filter_map(|f| f.1).sum();
    let n = (total as u64).div_ceil(piece_len as u64) as usize;
    let mut w = Writer::new();
    w.dict();
    for (k, v) in extra.iter().filter(|(k, _)| *k < "files") {
        w.str(k).raw(v);
    }
    w.str("files").list();
    for (attr, len, path) in files {
        w.dict();
        if !attr.is_empty() {
            w.str("attr").str(attr);
        }
        if let Some(len) = len {
            w.str("length").int(*len);
        }
        w.str("path").list();
        for c in *path {
            w.str(c);
        }
        w.end().end();
    }
    w.end();
    for (k, v) in extra.iter().filter(|(k, _)| *k > "files" && *k < "name") {
        w.str(k).raw(v);
    }
    w.str("name")
        .str("t")
        .str("piece length")
        .int(piece_len)
        .str("pieces")
        .bytes(&fake_pieces(n))
        .end();
    w.finish()
}

#[test]
fn padding_files_stay_in_the_stream_but_are_not_content() {
    let info = attr_info(
        &[
            ("", Some(100), &["a"]),
            ("p", Some(16284), &["pad-by-attr"]),
            ("", Some(100), &["b"]),
            // libtorrent's name (it predates `attr`); two pads of one
            // length share a path, which is fine for padding.
            ("", Some(16284), &[".pad", "16284"]),
            ("", Some(16484), &["c"]),
            ("", Some(16284), &[".pad", "16284"]),
            ("", Some(10), &["d"]),
            // BitComet's name.
            ("", Some(6), &["_____padding_file_0_please upgrade____"]),
            // Not padding: `.pad` only counts as the first of several
            // components, and `p` must be in `attr`.
            ("hx", Some(5), &["sub", ".pad"]),
            ("", Some(5), &[".pad"]),
        ],
        16384,
        &[],
    );
    let m = parse(&info).unwrap();
    let padding: Vec<bool> = m.info.files.iter().map(|f| f.attr.padding).collect();
    assert_eq!(
        padding,
        [
            false, true, false, true, false, true, false, true, false, false
        ]
    );
    assert_eq!(m.info.total_len, 4 * 16384 + 10 + 6 + 5 + 5);
    assert_eq!(m.info.content_len, 100 + 100 + 16484 + 10 + 5 + 5);
    assert_eq!(m.geometry().num_pieces, 5, "pieces cover the padding");
    assert_eq!(m.info.files[3].offset, 16384 + 100, "offsets too");
    assert!(m.info.files.iter().all(|f| f.is_stored() != f.attr.padding));
    let sub = m.info.files[8].attr;
    assert!(sub.hidden && sub.executable && !sub.padding && !sub.symlink);

    let text = m.describe();
    assert!(!text.contains("pad-by-attr"), "{text}");
    assert!(!text.contains(".pad/"), "{text}");
    assert!(!text.contains("padding_file"), "{text}");
    assert!(text.contains("files (6):"), "{text}");
    assert!(
        text.contains("t/sub/.pad  (executable)  (hidden)"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "total size:    16.31 KiB ({} bytes)",
            m.info.content_len
        )),
        "{text}"
    );
    assert!(text.contains("in 4 pad files"), "{text}");
    assert!(!text.contains("hybrid"), "{text}");
}

#[test]
fn only_stored_files_must_have_distinct_paths() {
    let clash = attr_info(
        &[("", Some(1), &["a"]), ("p", Some(1), &["a", "b"])],
        16384,
        &[],
    );
    assert!(parse(&clash).is_ok(), "padding is never a file on disk");
    let clash = attr_info(
        &[("", Some(1), &["a"]), ("", Some(1), &["a", "b"])],
        16384,
        &[],
    );
    assert!(invalid_message(parse(&clash)).contains("both a file and a directory"));
    // Padding paths are still checked like every path.
    let hostile = attr_info(
        &[("", Some(1), &["a"]), ("p", Some(1), &["..", "x"])],
        16384,
        &[],
    );
    assert!(invalid_message(parse(&hostile)).contains("unsafe path"));
}

#[test]
fn symbolic_links_hold_no_bytes_and_are_never_stored() {
    let info = attr_info(
        &[
            ("", Some(10), &["a"]),
            ("l", None, &["link-without-length"]),
            ("lx", Some(0), &["link"]),
        ],
        16384,
        &[],
    );
    let m = parse(&info).unwrap();
    assert_eq!((m.info.total_len, m.info.content_len), (10, 10));
    assert!(m.info.files[1].attr.symlink && !m.info.files[1].is_stored());
    assert_eq!(m.info.files[1].length, 0);
    assert!(
        m.describe()
            .contains("t/link  (symbolic link, not created)")
    );

    let with_bytes = attr_info(
        &[("", Some(10), &["a"]), ("l", Some(5), &["l"])],
        16384,
        &[],
    );
    assert!(invalid_message(parse(&with_bytes)).contains("symbolic link of 5 bytes"));
    let no_length = attr_info(&[("", Some(10), &["a"]), ("x", None, &["l"])], 16384, &[]);
    assert!(invalid_message(parse(&no_length)).contains("length` is missing"));
}

#[test]
fn torrents_of_padding_only_are_refused() {
    let pads = attr_info(
        &[("p", Some(10), &["a"]), ("", Some(0), &["b"])],
        16384,
        &[],
    );
    assert!(invalid_message(parse(&pads)).contains("only padding"));
    for attr in ["p", "l"] {
        let mut w = Writer::new();
        w.dict()
            .str("attr")
            .str(attr)
            .str("length")
            .int(10)
            .str("name")
            .str("x")
            .str("piece length")
            .int(16384)
            .str("pieces")
            .bytes(&fake_pieces(1))
            .end();
        assert!(invalid_message(parse(&w.finish())).contains("holds no data"));
    }
    let mut w = Writer::new();
    w.dict()
        .str("attr")
        .str("xh")
        .str("length")
        .int(10)
        .str("name")
        .str("x")
        .str("piece length")
        .int(16384)
        .str("pieces")
        .bytes(&fake_pieces(1))
        .end();
    let m = parse(&w.finish()).unwrap();
    assert!(m.info.files[0].attr.executable && m.info.files[0].attr.hidden);
}

#[test]
fn hybrid_torrent_shows_its_v2_info_hash() {
    let tree = b"d1:ad0:d6:lengthi10e11:pieces root32:abcdefghijklmnopqrstuvwxyz012345eee";
    let files = &[("", Some(10), &["a"][..])][..];
    let hybrid = attr_info(
        files,
        16384,
        &[("file tree", tree), ("meta version", b"i2e")],
    );
    let m = parse(&hybrid).unwrap();
    let want: [u8; 32] = Sha256::digest(&hybrid).into();
    assert_eq!(m.v2_info_hash, Some(want));
    assert!(m.is_hybrid());
    let text = m.describe();
    assert!(
        text.contains(&format!("info-hash v2:  {}", hex(&want))),
        "{text}"
    );
    assert!(text.contains("hybrid v1 + v2"), "{text}");
    assert!(text.contains(&m.info_hash_hex()), "{text}");

    // v1 alone, or `meta version` 2 without a `file tree`: not hybrid.
    for extra in [&[][..], &[("meta version", &b"i2e"[..])][..]] {
        let m = parse(&attr_info(files, 16384, extra)).unwrap();
        assert_eq!(m.v2_info_hash, None);
        assert!(!m.describe().contains("hybrid"));
    }
    // Without `pieces` it is v2-only, which stays refused.
    let v2 =
        b"d9:file treed1:ad0:d6:lengthi10eeee12:meta versioni2e4:name1:x12:piece lengthi16384ee";
    assert!(invalid_message(parse(v2)).contains("v2-only"));
}

#[test]
fn errors_display_on_one_line() {
    let errors = [
        MetainfoError::Io(
            PathBuf::from("/x.torrent"),
            io::Error::from(io::ErrorKind::NotFound),
        ),
        MetainfoError::TooLarge(20_000_000),
        MetainfoError::Bencode(BencodeError::TooDeep(64)),
        MetainfoError::Missing("info.pieces"),
        MetainfoError::Invalid("piece length 0 is not positive".into()),
        MetainfoError::Create("x holds no data".into()),
    ];
    for e in &errors {
        let s = e.to_string();
        assert!(!s.contains('\n') && !s.is_empty(), "{s}");
    }
    assert_eq!(
        errors[3].to_string(),
        "invalid torrent: required field `info.pieces` is missing"
    );
    assert_eq!(
        errors[2].to_string(),
        "not a valid torrent file: lists/dictionaries nested too deeply at byte 64"
    );
}

#[test]
fn non_utf8_names_fall_back_to_utf8_twin_or_replacement() {
    let mut w = Writer::new();
    w.dict()
        .str("length")
        .int(1)
        .str("name")
        .bytes(b"caf\xe9")
        .str("name.utf-8")
        .str("café")
        .str("piece length")
        .int(16384)
        .str("pieces")
        .bytes(&fake_pieces(1))
        .end();
    assert_eq!(parse(&w.finish()).unwrap().info.name, "café");
    let m = parse(&single_info(b"caf\xe9", 1, 16384, &fake_pieces(1))).unwrap();
    assert_eq!(m.info.name, "caf\u{FFFD}");
}

#[test]
fn describe_lists_everything_and_escapes_control_characters() {
    let info = multi_info(
        b"evil\x1b[2Jname",
        &[(10, &[b"a.txt"]), (1 << 20, &[b"sub", b"b.bin"])],
        1 << 18,
    );
    let mut w = Writer::new();
    w.dict()
        .str("announce")
        .str("http://t/a")
        .str("comment")
        .str("just \u{202E}testing")
        .str("creation date")
        .int(1_700_000_000)
        .str("info")
        .raw(&info)
        .end();
    let m = Metainfo::from_bytes(&w.finish()).unwrap();
    let d = m.describe();
    assert!(!d.contains('\x1b') && !d.contains('\u{202E}'), "{d}");
    assert!(d.contains("evil\\u{1b}[2Jname"), "{d}");
    assert!(d.contains(&m.info_hash_hex()));
    assert!(d.contains("1.00 MiB (1048586 bytes)"), "{d}");
    assert!(d.contains("5 x 256.00 KiB (262144 bytes)"), "{d}");
    assert!(d.contains("tier 1: http://t/a"));
    assert!(d.contains("private:       no"));
    assert!(d.contains("2023-11-14 22:13:20 UTC"), "{d}");
    assert!(d.contains("10 B  evil\\u{1b}[2Jname/a.txt"), "{d}");
    assert!(d.contains("1.00 MiB  evil\\u{1b}[2Jname/sub/b.bin"), "{d}");
}

#[test]
fn utc_date_handles_epoch_leap_days_and_extremes() {
    assert_eq!(utc_date(0), "1970-01-01 00:00:00 UTC");
    assert_eq!(utc_date(951_782_400), "2000-02-29 00:00:00 UTC");
    assert_eq!(utc_date(-1), "1969-12-31 23:59:59 UTC");
    // Hostile values do not overflow.
    let _ = utc_date(i64::MAX);
    let _ = utc_date(i64::MIN);
}

#[test]
fn auto_piece_len_aims_at_one_to_two_thousand_pieces() {
    assert_eq!(auto_piece_len(1), 32 * 1024);
    assert_eq!(auto_piece_len(1 << 30), 1 << 20);
    assert_eq!(auto_piece_len(u64::MAX), 16 << 20);
    for shift in 0..50 {
        for total in [1u64 << shift, (1u64 << shift) + 12345, (3u64 << shift) / 2] {
            let pl = auto_piece_len(total);
            assert!(pl.is_power_of_two() && (32 * 1024..=16 << 20).contains(&pl));
            let n = total.div_ceil(u64::from(pl));
            if pl < 16 << 20 {
                assert!(n <= 2000, "{total}: {n}");
            }
            if pl > 32 * 1024 {
                assert!(n > 1000, "{total}: {n}");
            }
        }
    }
}

#[test]
fn create_single_file_matches_known_info_hash() {
    // Expected value computed independently (Python hashlib) over
    // d6:lengthi16e4:name9:hello.txt12:piece lengthi32768e6:pieces20:<sha1>e
    let dir = temp_dir("single");
    let file = dir.join("hello.txt");
    fs::write(&file, b"hello piecemeal\n").unwrap();
    let opts = CreateOptions {
        piece_len: Some(32768),
        ..CreateOptions::default()
    };
    let bytes = create(&file, &opts).unwrap();
    let m = Metainfo::from_bytes(&bytes).unwrap();
    assert_eq!(
        m.info_hash_hex(),
        "7fb7d3d115fd16596f082ab6012610999c552e36"
    );
    assert_eq!(
        hex(&m.info.pieces[0]),
        "619f86ffeb20668b17951aeb7d8a2a8b024d1ce5"
    );
    assert_eq!(
        m.created_by.as_deref(),
        Some(concat!("piecemeal/", env!("CARGO_PKG_VERSION")))
    );
    assert_eq!(
        (m.announce.clone(), m.creation_date, m.comment.clone()),
        (None, None, None)
    );
    assert!(m.tracker_tiers().is_empty());
    assert!(!m.info.multi_file && !m.info.private);
    fs::remove_dir_all(&dir).unwrap();
}

/// Deterministic file contents.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ seed)
        .collect()
}

#[test]
fn create_folder_round_trips_and_piece_hashes_match() {
    let dir = temp_dir("folder");
    let root = dir.join("data");
    fs::create_dir_all(root.join("b/deep")).unwrap();
    fs::create_dir_all(root.join("empty-dir")).unwrap();
    let contents = [
        ("a-c.bin", pattern(40_000, 1)),
        ("b/deep/z.bin", pattern(70_000, 2)),
        ("b/empty.txt", Vec::new()),
        ("b/x.bin", pattern(16_384, 3)),
        ("c.bin", pattern(5, 4)),
    ];
    for (p, data) in &contents {
        fs::write(root.join(p), data).unwrap();
    }
    let opts = CreateOptions {
        trackers: vec![
            "http://one/announce".into(),
            " ".into(),
            "udp://two:80".into(),
        ],
        piece_len: Some(16384),
        private: true,
        comment: Some("round trip".into()),
        created_by: Some("tests".into()),
        creation_date: Some(1_600_000_000),
    };
    let bytes = create(&root, &opts).unwrap();
    // Canonical output: strict validation passes.
    bencode::validate(&bytes, &Limits::TORRENT.canonical()).unwrap();
    let m = Metainfo::from_bytes(&bytes).unwrap();
    assert_eq!(m.info.name, "data");
    assert!(m.info.multi_file && m.info.private);
    let paths: Vec<String> = m.info.files.iter().map(|f| f.path.join("/")).collect();
    // Sorted by components: "a-c.bin" < "b" < "c.bin"; empty dir not listed.
    assert_eq!(
        paths,
        vec!["a-c.bin", "b/deep/z.bin", "b/empty.txt", "b/x.bin", "c.bin"]
    );
    assert_eq!(m.info.total_len, 40_000 + 70_000 + 16_384 + 5);
    assert_eq!(
        m.tracker_tiers(),
        vec![
            vec!["http://one/announce".to_string()],
            vec!["udp://two:80".to_string()]
        ]
    );
    assert_eq!(m.comment.as_deref(), Some("round trip"));
    assert_eq!(m.created_by.as_deref(), Some("tests"));
    assert_eq!(m.creation_date, Some(1_600_000_000));
    // Re-hash the concatenation independently.
    let all: Vec<u8> = contents
        .iter()
        .flat_map(|(_, d)| d.iter().copied())
        .collect();
    let expected: Vec<[u8; 20]> = all.chunks(16384).map(|c| Sha1::digest(c).into()).collect();
    assert_eq!(m.info.pieces, expected);
    for (i, (p, data)) in contents.iter().enumerate() {
        assert_eq!(m.file_rel_path(i), PathBuf::from("data").join(p));
        assert_eq!(m.info.files[i].length, data.len() as u64);
    }
    // Same input, same bytes.
    assert_eq!(create(&root, &opts).unwrap(), bytes);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn create_single_tracker_has_no_announce_list() {
    let dir = temp_dir("one-tracker");
    let file = dir.join("f");
    fs::write(&file, pattern(100, 9)).unwrap();
    let opts = CreateOptions {
        trackers: vec!["http://t/".into()],
        ..CreateOptions::default()
    };
    let bytes = create(&file, &opts).unwrap();
    assert!(bencode::dict_value_span(&bytes, b"announce-list").is_none());
    assert_eq!(
        Metainfo::from_bytes(&bytes).unwrap().info.piece_len,
        32 * 1024
    );
    fs::remove_dir_all(&dir).unwrap();
}

#[cfg(unix)]
#[test]
fn create_skips_symlinks_inside_a_folder() {
    let dir = temp_dir("symlink");
    let root = dir.join("data");
    fs::create_dir_all(&root).unwrap();
    fs::write(root.join("real"), b"data").unwrap();
    fs::write(dir.join("outside"), b"secret").unwrap();
    std::os::unix::fs::symlink(dir.join("outside"), root.join("link")).unwrap();
    std::os::unix::fs::symlink(&root, root.join("loop")).unwrap();
    let m = Metainfo::from_bytes(&create(&root, &CreateOptions::default()).unwrap()).unwrap();
    let paths: Vec<String> = m.info.files.iter().map(|f| f.path.join("/")).collect();
    assert_eq!(paths, vec!["real"]);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn create_refuses_empty_data_and_bad_piece_lengths() {
    let dir = temp_dir("refuse");
    fs::create_dir_all(dir.join("data/sub")).unwrap();
    fs::write(dir.join("data/sub/empty"), b"").unwrap();
    assert!(
        matches!(create(&dir.join("data"), &CreateOptions::default()), Err(MetainfoError::Create(m)) if m.contains("no data"))
    );
    fs::write(dir.join("f"), b"x").unwrap();
    for pl in [0, 1000, 8192, 1 << 27] {
        let opts = CreateOptions {
            piece_len: Some(pl),
            ..CreateOptions::default()
        };
        assert!(
            matches!(create(&dir.join("f"), &opts), Err(MetainfoError::Create(m)) if m.contains("power of two"))
        );
    }
    assert!(matches!(
        create(&dir.join("missing"), &CreateOptions::default()),
        Err(MetainfoError::Io(..))
    ));
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn load_reads_files_and_refuses_oversized_ones() {
    let dir = temp_dir("load");
    let good = dir.join("good.torrent");
    fs::write(
        &good,
        torrent(&single_info(b"x", 5, 16384, &fake_pieces(1))),
    )
    .unwrap();
    assert_eq!(Metainfo::load(&good).unwrap().info.name, "x");
    let big = dir.join("big.torrent");
    File::create(&big)
        .unwrap()
        .set_len(MAX_TORRENT_LEN as u64 + 1)
        .unwrap();
    assert!(
        matches!(Metainfo::load(&big), Err(MetainfoError::TooLarge(n)) if n == MAX_TORRENT_LEN as u64 + 1)
    );
    let missing = dir.join("missing.torrent");
    let err = Metainfo::load(&missing).unwrap_err();
    assert!(matches!(err, MetainfoError::Io(ref p, _) if *p == missing));
    assert!(err.to_string().contains("missing.torrent"));
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn random_mutations_of_a_torrent_never_panic() {
    let base = torrent(&multi_info(
        b"d",
        &[(20_000, &[b"a", b"b"]), (5, &[b"c"])],
        16384,
    ));
    Metainfo::from_bytes(&base).unwrap();
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut parsed = 0;
    for _ in 0..300_000 {
        let mut doc = base.clone();
        for _ in 0..1 + next() % 3 {
            let i = (next() % doc.len() as u64) as usize;
            match next() % 3 {
                0 => doc[i] = next() as u8,
                1 => {
                    doc.remove(i);
                }
                _ => doc.insert(i, b"ilde0:9./\\"[(next() % 10) as usize]),
            }
        }
        if let Ok(m) = Metainfo::from_bytes(&doc) {
            parsed += 1;
            let _ = m.describe();
            for i in 0..m.info.files.len() {
                assert!(
                    !m.file_rel_path(i)
                        .components()
                        .any(|c| !matches!(c, std::path::Component::Normal(_)))
                );
            }
            assert_eq!(m.geometry().num_pieces as usize, m.info.pieces.len());
        }
    }
    assert!(parsed > 0);
}
