use super::*;
use serde_bencode::value::Value;

fn ok(doc: &[u8]) -> Result<(), BencodeError> {
    validate(doc, &Limits::TORRENT)
}

fn strict(doc: &[u8]) -> Result<(), BencodeError> {
    validate(doc, &Limits::TORRENT.canonical())
}

/// Tiny deterministic PRNG for the random-input tests.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn accepts_well_formed_documents() {
    for doc in [
        &b"i0e"[..],
        b"i-1e",
        b"i42e",
        b"i9223372036854775807e",
        b"i-9223372036854775808e",
        b"0:",
        b"4:spam",
        b"le",
        b"de",
        b"l4:spami42ee",
        b"d3:bar4:spam3:fooi42ee",
        b"d1:ad1:bl1:ci1eeee",
        b"lldeleee",
    ] {
        assert_eq!(strict(doc), Ok(()), "{}", String::from_utf8_lossy(doc));
    }
}

#[test]
fn rejects_non_canonical_and_malformed_integers() {
    for (doc, at) in [
        (&b"i03e"[..], 0),
        (b"i-0e", 0),
        (b"ie", 0),
        (b"i-e", 0),
        (b"i00e", 0),
        (b"i+1e", 0),
        (b"i1.5e", 0),
        (b"i9223372036854775808e", 0),
        (b"i-9223372036854775809e", 0),
        (b"li1ei99999999999999999999ee", 4),
    ] {
        assert_eq!(
            ok(doc),
            Err(BencodeError::BadInt(at)),
            "{}",
            String::from_utf8_lossy(doc)
        );
    }
}

#[test]
fn rejects_bad_string_lengths() {
    assert_eq!(ok(b"03:abc"), Err(BencodeError::BadStringLength(0)));
    assert_eq!(ok(b"00:"), Err(BencodeError::BadStringLength(0)));
    assert_eq!(ok(b"3x:abc"), Err(BencodeError::BadStringLength(0)));
    assert_eq!(
        ok(b"99999999999999999999999999:x"),
        Err(BencodeError::BadStringLength(0))
    );
}

#[test]
fn reports_truncation_with_offset() {
    assert_eq!(ok(b""), Err(BencodeError::Truncated(0)));
    assert_eq!(ok(b"i12"), Err(BencodeError::Truncated(3)));
    assert_eq!(ok(b"5:abc"), Err(BencodeError::Truncated(5)));
    assert_eq!(ok(b"l4:spam"), Err(BencodeError::Truncated(7)));
    assert_eq!(ok(b"d3:foo"), Err(BencodeError::Truncated(6)));
    assert_eq!(ok(b"12"), Err(BencodeError::Truncated(2)));
}

#[test]
fn rejects_trailing_bytes_and_stray_bytes() {
    assert_eq!(ok(b"i1ei2e"), Err(BencodeError::TrailingBytes(3)));
    assert_eq!(ok(b"dee"), Err(BencodeError::TrailingBytes(2)));
    assert_eq!(ok(b"e"), Err(BencodeError::UnexpectedByte(0)));
    assert_eq!(ok(b"x"), Err(BencodeError::UnexpectedByte(0)));
    assert_eq!(ok(b"lxe"), Err(BencodeError::UnexpectedByte(1)));
    // A dict value may not be missing: `e` where a value belongs.
    assert_eq!(ok(b"d1:ae"), Err(BencodeError::UnexpectedByte(4)));
}

#[test]
fn dictionary_keys_must_be_strings() {
    assert_eq!(ok(b"di1ei2ee"), Err(BencodeError::KeyNotString(1)));
    assert_eq!(ok(b"dlei2ee"), Err(BencodeError::KeyNotString(1)));
}

#[test]
fn duplicate_keys_are_rejected_in_every_mode() {
    assert_eq!(ok(b"d1:ai1e1:ai2ee"), Err(BencodeError::DuplicateKey(7)));
    assert_eq!(
        strict(b"d1:ai1e1:ai2ee"),
        Err(BencodeError::DuplicateKey(7))
    );
    // Unsorted and duplicated, not adjacent: found when the dict closes.
    assert_eq!(
        ok(b"d1:bi1e1:ai2e1:bi3ee"),
        Err(BencodeError::DuplicateKey(13))
    );
}

#[test]
fn unsorted_keys_are_accepted_leniently_and_rejected_canonically() {
    let doc = b"d1:bi1e1:ai2e1:cd1:zi0e1:yi0eee";
    assert_eq!(ok(doc), Ok(()));
    assert_eq!(strict(doc), Err(BencodeError::UnsortedKeys(7)));
    // Keys of nested dicts do not interfere with the outer one.
    assert_eq!(strict(b"d1:ad1:zi0ee1:bi0ee"), Ok(()));
}

#[test]
fn enforces_length_and_token_limits() {
    let limits = Limits {
        max_depth: 8,
        max_tokens: 3,
        max_len: 10,
        key_order: KeyOrder::Any,
    };
    assert_eq!(validate(b"li1ei2ee", &limits), Ok(()));
    assert_eq!(
        validate(b"li1ei2ei3ee", &limits),
        Err(BencodeError::TooLong(10))
    );
    assert_eq!(validate(b"llleee", &limits), Ok(()));
    assert_eq!(
        validate(b"lllleeee", &limits),
        Err(BencodeError::TooManyTokens(3))
    );
}

#[test]
fn depth_limit_counts_the_top_level_container() {
    let limits = Limits {
        max_depth: 2,
        ..Limits::TRACKER
    };
    assert_eq!(validate(b"llee", &limits), Ok(()));
    assert_eq!(validate(b"llleee", &limits), Err(BencodeError::TooDeep(2)));
    assert_eq!(
        validate(b"dd1:ad1:ai0eeee", &limits),
        Err(BencodeError::KeyNotString(1))
    );
    assert_eq!(
        validate(b"d1:ad1:ad1:ai0eeee", &limits),
        Err(BencodeError::TooDeep(8))
    );
}

/// Run `f` on a thread with a deliberately small stack: recursion over a
/// million levels would overflow it.
fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap()
}

#[test]
fn million_deep_nesting_is_too_deep_without_stack_growth() {
    let result = on_small_stack(|| {
        let doc = vec![b'l'; 1_000_000];
        validate(&doc, &Limits::TORRENT)
    });
    assert_eq!(result, Err(BencodeError::TooDeep(64)));
}

#[test]
fn million_deep_nesting_validates_iteratively_when_allowed() {
    let result = on_small_stack(|| {
        let mut doc = vec![b'l'; 1_000_000];
        doc.extend(std::iter::repeat_n(b'e', 1_000_000));
        let limits = Limits {
            max_depth: usize::MAX,
            max_tokens: usize::MAX,
            max_len: usize::MAX,
            key_order: KeyOrder::Sorted,
        };
        (
            validate(&doc, &limits),
            dict_value_span(&doc, b"x"),
            skip_value(&doc, 0),
        )
    });
    assert_eq!(result, (Ok(()), None, Some(2_000_000)));
}

#[test]
fn dict_value_span_finds_raw_value_bytes() {
    let doc = b"d8:announce3:url4:infod6:lengthi5e4:name1:xe3:zzzi1ee";
    validate(doc, &Limits::TORRENT).unwrap();
    let span = dict_value_span(doc, b"info").unwrap();
    assert_eq!(&doc[span], b"d6:lengthi5e4:name1:xe");
    let span = dict_value_span(doc, b"zzz").unwrap();
    assert_eq!(&doc[span], b"i1e");
    assert_eq!(dict_value_span(doc, b"missing"), None);
    assert_eq!(dict_value_span(b"li1ee", b"a"), None);
    // Unsorted outer dict: still found.
    let doc = b"d4:infod1:ai1ee1:ai0ee";
    assert_eq!(&doc[dict_value_span(doc, b"info").unwrap()], b"d1:ai1ee");
    // A key only nested deeper is not a match.
    assert_eq!(dict_value_span(b"d1:ad4:infoi1eee", b"info"), None);
}

#[test]
fn list_item_spans_splits_a_list() {
    let doc = b"li1e3:abcld1:ai1eeee";
    let items: Vec<&[u8]> = list_item_spans(doc).into_iter().map(|r| &doc[r]).collect();
    assert_eq!(items, vec![&b"i1e"[..], b"3:abc", b"ld1:ai1eee"]);
    assert!(list_item_spans(b"de").is_empty());
    assert!(list_item_spans(b"li1").is_empty());
}

#[test]
fn validate_dict_requires_a_dictionary() {
    assert_eq!(validate_dict(b"de", &Limits::TORRENT), Ok(()));
    assert_eq!(
        validate_dict(b"le", &Limits::TORRENT),
        Err(BencodeError::NotADict(0))
    );
    assert_eq!(
        validate_dict(b"dx", &Limits::TORRENT),
        Err(BencodeError::KeyNotString(1))
    );
}

#[test]
fn decode_validates_before_serde() {
    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Resp {
        interval: i64,
    }
    let r: Resp = decode(b"d8:intervali1800ee", &Limits::TRACKER).unwrap();
    assert_eq!(r, Resp { interval: 1800 });
    assert_eq!(
        decode::<Resp>(b"d8:intervali1800eeXX", &Limits::TRACKER),
        Err(DecodeError::Bencode(BencodeError::TrailingBytes(18)))
    );
    assert_eq!(
        decode::<Resp>(b"d8:intervali01ee", &Limits::TRACKER),
        Err(DecodeError::Bencode(BencodeError::BadInt(11)))
    );
    let deep = vec![b'l'; 20_000];
    assert_eq!(
        decode::<Value>(&deep, &Limits::TRACKER),
        Err(DecodeError::Bencode(BencodeError::TooDeep(16)))
    );
    assert!(matches!(
        decode::<Resp>(b"d8:interval3:abce", &Limits::TRACKER),
        Err(DecodeError::Shape(_))
    ));
}

#[test]
fn errors_display_what_and_where() {
    assert_eq!(
        BencodeError::BadInt(7).to_string(),
        "malformed or non-canonical integer at byte 7"
    );
    let e = DecodeError::Bencode(BencodeError::TooDeep(64));
    assert_eq!(
        e.to_string(),
        "invalid bencode: lists/dictionaries nested too deeply at byte 64"
    );
}

#[test]
fn writer_output_validates_canonically() {
    let mut w = Writer::new();
    w.dict()
        .str("a")
        .int(-5)
        .str("b")
        .list()
        .bytes(b"\x00\xff")
        .int(0)
        .end()
        .str("c")
        .dict()
        .end()
        .end();
    let doc = w.finish();
    assert_eq!(doc, b"d1:ai-5e1:bl2:\x00\xffi0ee1:cdee");
    assert_eq!(strict(&doc), Ok(()));
}

/// Append a random well-formed value (dict keys may come out unsorted or
/// duplicated, so the canonical and lenient checks both get exercised).
fn random_value(rng: &mut XorShift, w: &mut Writer, depth: u32) {
    match rng.below(if depth >= 4 { 2 } else { 4 }) {
        0 => {
            w.int(rng.next() as i64 >> rng.below(64));
        }
        1 => {
            let key = [b'a' + rng.below(4) as u8; 1];
            w.bytes(&key[..rng.below(2) as usize]);
        }
        2 => {
            w.list();
            for _ in 0..rng.below(4) {
                random_value(rng, w, depth + 1);
            }
            w.end();
        }
        _ => {
            w.dict();
            for _ in 0..rng.below(4) {
                w.bytes(&[b'a' + rng.below(4) as u8]);
                random_value(rng, w, depth + 1);
            }
            w.end();
        }
    }
}

/// Random inputs: uniform bytes, bytes from a bencode-ish alphabet, or a
/// well-formed document with a few random edits (which reaches the deep
/// parser states far more often).
fn random_doc(rng: &mut XorShift, buf: &mut Vec<u8>) {
    const ALPHABET: &[u8] = b"ildee0123456789:-:ab";
    buf.clear();
    match rng.below(3) {
        0 => buf.extend((0..rng.below(48)).map(|_| rng.next() as u8)),
        1 => buf.extend(
            (0..rng.below(48)).map(|_| ALPHABET[rng.below(ALPHABET.len() as u64) as usize]),
        ),
        _ => {
            let mut w = Writer::new();
            random_value(rng, &mut w, 0);
            *buf = w.finish();
            for _ in 0..rng.below(3) {
                let i = rng.below(buf.len() as u64) as usize;
                match rng.below(3) {
                    0 => buf[i] = ALPHABET[rng.below(ALPHABET.len() as u64) as usize],
                    1 => {
                        buf.remove(i);
                    }
                    _ => buf.insert(i, rng.next() as u8),
                }
            }
        }
    }
}

#[test]
fn random_inputs_never_panic_and_agree_with_serde() {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut buf = Vec::new();
    let mut accepted = 0;
    for _ in 0..300_000 {
        random_doc(&mut rng, &mut buf);
        let lenient = validate(&buf, &Limits::TRACKER);
        let canonical = validate(&buf, &Limits::TRACKER.canonical());
        let _ = dict_value_span(&buf, b"a");
        let _ = list_item_spans(&buf);
        if canonical.is_ok() {
            assert!(lenient.is_ok());
        }
        if lenient.is_ok() {
            accepted += 1;
            // Whatever we accept, serde_bencode must parse too.
            serde_bencode::from_bytes::<Value>(&buf).unwrap();
            assert_eq!(skip_value(&buf, 0), Some(buf.len()));
        }
    }
    assert!(
        accepted > 20_000,
        "only {accepted} random documents were valid"
    );
}

#[test]
fn random_mutations_of_a_valid_document_never_panic() {
    let base = b"d8:announce14:http://t/annon4:infod6:lengthi5e4:name1:x12:piece lengthi16384e6:pieces0:ee";
    assert_eq!(strict(base), Ok(()));
    let mut rng = XorShift(12345);
    let mut doc = Vec::new();
    for _ in 0..100_000 {
        doc.clear();
        doc.extend_from_slice(base);
        for _ in 0..1 + rng.below(3) {
            let i = rng.below(doc.len() as u64) as usize;
            match rng.below(3) {
                0 => doc[i] = rng.next() as u8,
                1 => {
                    doc.remove(i);
                }
                _ => doc.insert(i, b"ilde0:9"[rng.below(7) as usize]),
            }
        }
        if validate(&doc, &Limits::TORRENT).is_ok() {
            serde_bencode::from_bytes::<Value>(&doc).unwrap();
            if let Some(span) = dict_value_span(&doc, b"info") {
                assert_eq!(skip_value(&doc, span.start), Some(span.end));
            }
        }
    }
}
