//! A small, non-recursive bencode validator that guards serde_bencode.
//!
//! serde_bencode recurses without a limit (a few KiB of `l` overflow the
//! stack), accepts non-canonical integers and ignores trailing bytes. This
//! check runs first and rejects all of that.
//!
//! TODO: switch to crate::bencode::validate(bytes, &Limits::TRACKER) once it
//! lands; this file then goes away.

use super::TrackerError;

/// Deepest nesting of lists and dictionaries accepted.
pub(crate) const MAX_DEPTH: usize = 16;
/// Most values (of any kind, counting dictionary keys) in one document. It
/// bounds the memory serde_bencode spends on tiny values (`le` costs two
/// bytes on the wire but a whole `Value` in memory).
pub(crate) const MAX_ITEMS: usize = 100_000;

/// What the enclosing container expects next.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Frame {
    List,
    /// A dictionary waiting for a key (or its end).
    DictKey,
    /// A dictionary that has read a key and waits for its value.
    DictValue,
}

fn err(msg: &str, at: usize) -> TrackerError {
    TrackerError::Bencode(format!("{msg} at byte {at}"))
}

/// Check that `body` is exactly one canonical bencoded value: integers
/// without leading zeros or `-0` that fit an `i64`, string lengths without
/// leading zeros, dictionary keys that are strings, nesting at most
/// [`MAX_DEPTH`], at most [`MAX_ITEMS`] values, nothing after the end.
///
/// Dictionary key order is not checked: some trackers emit unsorted keys,
/// and decoding does not depend on it.
// TODO: switch to crate::bencode::validate
pub(crate) fn check_bencode(body: &[u8]) -> Result<(), TrackerError> {
    let mut stack: Vec<Frame> = Vec::with_capacity(MAX_DEPTH);
    let mut pos = 0usize;
    let mut items = 0usize;
    loop {
        let Some(&b) = body.get(pos) else {
            return Err(err("unexpected end", pos));
        };
        // A dictionary end or a list end closes the current container.
        if b == b'e' {
            match stack.pop() {
                Some(Frame::List) | Some(Frame::DictKey) => {
                    pos += 1;
                    if stack.is_empty() {
                        return finish(body, pos);
                    }
                    continue;
                }
                Some(Frame::DictValue) => return Err(err("dictionary key without value", pos)),
                None => return Err(err("unexpected 'e'", pos)),
            }
        }
        items += 1;
        if items > MAX_ITEMS {
            return Err(err("too many values", pos));
        }
        let wants_key = stack.last() == Some(&Frame::DictKey);
        match b {
            b'i' if !wants_key => {
                pos = check_int(body, pos + 1)?;
            }
            b'0'..=b'9' => {
                pos = check_string(body, pos)?;
            }
            b'l' | b'd' if !wants_key => {
                if stack.len() >= MAX_DEPTH {
                    return Err(err("nesting too deep", pos));
                }
                // The container itself fills the slot it sits in; mark the
                // parent's slot as used before descending.
                if let Some(top) = stack.last_mut()
                    && *top == Frame::DictValue
                {
                    *top = Frame::DictKey;
                }
                stack.push(if b == b'l' {
                    Frame::List
                } else {
                    Frame::DictKey
                });
                pos += 1;
                continue;
            }
            _ if wants_key => return Err(err("dictionary key is not a string", pos)),
            _ => return Err(err("unexpected byte", pos)),
        }
        // A scalar value (or key) was read.
        if let Some(top) = stack.last_mut() {
            match *top {
                Frame::DictKey => {
                    *top = Frame::DictValue;
                    continue;
                }
                Frame::DictValue => *top = Frame::DictKey,
                Frame::List => {}
            }
            continue;
        }
        return finish(body, pos);
    }
}

/// The top-level value ended at `pos`: the document must end there too.
fn finish(body: &[u8], pos: usize) -> Result<(), TrackerError> {
    if pos == body.len() {
        Ok(())
    } else {
        Err(err("trailing bytes", pos))
    }
}

/// Check an integer body starting just after `i`; returns the position after
/// its `e`.
fn check_int(body: &[u8], start: usize) -> Result<usize, TrackerError> {
    let mut pos = start;
    let negative = body.get(pos) == Some(&b'-');
    if negative {
        pos += 1;
    }
    let digits_start = pos;
    let mut value: i64 = 0;
    while let Some(&d) = body.get(pos) {
        if !d.is_ascii_digit() {
            break;
        }
        let digit = i64::from(d - b'0');
        value = value
            .checked_mul(10)
            .and_then(|v| {
                if negative {
                    v.checked_sub(digit)
                } else {
                    v.checked_add(digit)
                }
            })
            .ok_or_else(|| err("integer out of range", pos))?;
        pos += 1;
    }
    let digits = &body[digits_start..pos];
    if digits.is_empty() {
        return Err(err("integer without digits", pos));
    }
    if digits.len() > 1 && digits[0] == b'0' {
        return Err(err("integer with leading zero", digits_start));
    }
    if negative && digits == b"0" {
        return Err(err("negative zero", digits_start));
    }
    if body.get(pos) != Some(&b'e') {
        return Err(err("unterminated integer", pos));
    }
    Ok(pos + 1)
}

/// Check a byte string starting at its length prefix; returns the position
/// after its last byte.
fn check_string(body: &[u8], start: usize) -> Result<usize, TrackerError> {
    let mut pos = start;
    let mut len: usize = 0;
    while let Some(&d) = body.get(pos) {
        if !d.is_ascii_digit() {
            break;
        }
        len = len
            .checked_mul(10)
            .and_then(|v| v.checked_add(usize::from(d - b'0')))
            .ok_or_else(|| err("string length out of range", pos))?;
        pos += 1;
    }
    if pos - start > 1 && body.get(start) == Some(&b'0') {
        return Err(err("string length with leading zero", start));
    }
    if body.get(pos) != Some(&b':') {
        return Err(err("string length without ':'", pos));
    }
    let end = (pos + 1)
        .checked_add(len)
        .filter(|&end| end <= body.len())
        .ok_or_else(|| err("string runs past the end", pos))?;
    Ok(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &[u8]) -> bool {
        check_bencode(s).is_ok()
    }

    #[test]
    fn accepts_canonical_documents() {
        assert!(ok(b"i0e"));
        assert!(ok(b"i-42e"));
        assert!(ok(b"i9223372036854775807e"));
        assert!(ok(b"i-9223372036854775808e"));
        assert!(ok(b"0:"));
        assert!(ok(b"4:spam"));
        assert!(ok(b"le"));
        assert!(ok(b"de"));
        assert!(ok(b"l4:spami3ee"));
        assert!(ok(b"d3:cow3:moo4:spaml1:a1:bee"));
        assert!(ok(b"d1:ad1:bld1:ci1eeeee"));
        assert!(ok(b"d8:intervali1800e5:peers0:e"));
    }

    #[test]
    fn rejects_non_canonical_integers() {
        for bad in [
            &b"i03e"[..],
            b"i-0e",
            b"ie",
            b"i-e",
            b"i1",
            b"i1xe",
            b"i9223372036854775808e",
            b"i-9223372036854775809e",
            b"i+1e",
        ] {
            assert!(!ok(bad), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn rejects_bad_strings() {
        assert!(!ok(b"04:spam"));
        assert!(!ok(b"5:spam"));
        assert!(!ok(b"4spam"));
        assert!(!ok(b"99999999999999999999999:x"));
        assert!(!ok(b"18446744073709551615:x"));
    }

    #[test]
    fn rejects_trailing_bytes_and_truncation() {
        assert!(!ok(b"i1ei2e"));
        assert!(!ok(b"dex"));
        assert!(!ok(b"4:spamx"));
        assert!(!ok(b""));
        assert!(!ok(b"l"));
        assert!(!ok(b"d1:a"));
        assert!(!ok(b"e"));
        assert!(!ok(b"lee"));
    }

    #[test]
    fn rejects_bad_dictionaries() {
        assert!(!ok(b"di1ei2ee"), "integer key");
        assert!(!ok(b"dlee1:ae"), "list key");
        assert!(!ok(b"d1:ae"), "key without value");
        assert!(ok(b"d1:bi1e1:ai2ee"), "unsorted keys are tolerated");
    }

    #[test]
    fn caps_nesting_depth_without_recursing() {
        let mut at_cap = vec![b'l'; MAX_DEPTH];
        at_cap.extend(vec![b'e'; MAX_DEPTH]);
        assert!(ok(&at_cap));
        let mut over = vec![b'l'; MAX_DEPTH + 1];
        over.extend(vec![b'e'; MAX_DEPTH + 1]);
        assert!(!ok(&over));
        // Far deeper than any stack would survive if we recursed.
        let mut huge = vec![b'l'; 1_000_000];
        huge.extend(vec![b'e'; 1_000_000]);
        assert!(!ok(&huge));
        let mut dicts = b"d1:a".repeat(MAX_DEPTH + 1);
        dicts.extend(b"i0e");
        dicts.extend(vec![b'e'; MAX_DEPTH + 1]);
        assert!(!ok(&dicts));
    }

    #[test]
    fn caps_number_of_values() {
        let mut many = b"l".to_vec();
        many.extend(b"i0e".repeat(MAX_ITEMS));
        many.push(b'e');
        assert!(!ok(&many), "{} values plus the list", MAX_ITEMS);
        let mut fewer = b"l".to_vec();
        fewer.extend(b"i0e".repeat(MAX_ITEMS - 1));
        fewer.push(b'e');
        assert!(ok(&fewer));
    }
}
