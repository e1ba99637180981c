//! URL encoding and query-string parsing shared by the tracker client and
//! server.

#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

use std::fmt;

/// Append `bytes` to `out` %-encoded: RFC 3986 unreserved characters
/// (`A-Z a-z 0-9 - . _ ~`) stay literal, every other byte becomes `%XX`
/// with upper-case hex digits.
pub fn percent_encode(bytes: &[u8], out: &mut String) {
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            // A nibble is always a base-16 digit: `from_digit` never says `None`.
            for nibble in [b >> 4, b & 0x0f] {
                out.extend(char::from_digit(u32::from(nibble), 16).map(|c| c.to_ascii_uppercase()));
            }
        }
    }
}

/// A `%` not followed by two hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadEscape;

impl fmt::Display for BadEscape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("bad %-escape")
    }
}

impl std::error::Error for BadEscape {}

/// The value of one hex digit.
pub(crate) fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decode `%XX` escapes. `+` is kept as a literal `+` (not a space): in
/// announce URLs it only appears where a client forgot to escape it, and a
/// space would corrupt a binary info-hash.
pub fn percent_decode(s: &[u8]) -> Result<Vec<u8>, BadEscape> {
    percent_decode_at(s, false).map_err(|_| BadEscape)
}

/// [`percent_decode`], with `+` as a space when `plus_is_space` (form
/// encoding, as magnet links write names); the error is the byte offset of
/// the bad escape.
pub(crate) fn percent_decode_at(s: &[u8], plus_is_space: bool) -> Result<Vec<u8>, usize> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while let Some(&b) = s.get(i) {
        match b {
            b'%' => {
                let hi = s.get(i + 1).copied().and_then(hex_value).ok_or(i)?;
                let lo = s.get(i + 2).copied().and_then(hex_value).ok_or(i)?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// Decoded `(name, value)` pairs of a query string, in order.
pub type QueryPairs = Vec<(Vec<u8>, Vec<u8>)>;

/// Split a query string (the part after `?`, without any `#fragment`) into
/// decoded `(name, value)` pairs, in order; empty pieces (`a=1&&b=2`) are
/// skipped and a piece without `=` has an empty value. Fails on a bad escape
/// or when there are more than `max_pairs` pairs.
pub fn split_query(query: &[u8], max_pairs: usize) -> Result<QueryPairs, BadEscape> {
    let mut pairs = Vec::new();
    for piece in query.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        if pairs.len() >= max_pairs {
            return Err(BadEscape);
        }
        let mut halves = piece.splitn(2, |&b| b == b'=');
        let name = halves.next().unwrap_or_default();
        let value = halves.next().unwrap_or_default();
        pairs.push((percent_decode(name)?, percent_decode(value)?));
    }
    Ok(pairs)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests may panic
mod tests {
    use super::*;

    #[test]
    fn encodes_unreserved_literally_and_the_rest_as_upper_hex() {
        let mut s = String::new();
        percent_encode(b"aZ09-._~ /+%\x00\xff", &mut s);
        assert_eq!(s, "aZ09-._~%20%2F%2B%25%00%FF");
    }

    #[test]
    fn decode_inverts_encode_for_every_byte() {
        let all: Vec<u8> = (0..=255).collect();
        let mut s = String::new();
        percent_encode(&all, &mut s);
        assert_eq!(percent_decode(s.as_bytes()).unwrap(), all);
        assert_eq!(percent_decode(b"%2b%2B+").unwrap(), b"+++");
    }

    #[test]
    fn decode_rejects_truncated_or_non_hex_escapes() {
        assert_eq!(percent_decode(b"%"), Err(BadEscape));
        assert_eq!(percent_decode(b"%4"), Err(BadEscape));
        assert_eq!(percent_decode(b"%zz"), Err(BadEscape));
        assert_eq!(percent_decode(b"ab%"), Err(BadEscape));
    }

    #[test]
    fn splits_query_pairs_in_order() {
        let q = split_query(b"a=1&&b=%41&flag&c=x=y", 10).unwrap();
        assert_eq!(
            q,
            vec![
                (b"a".to_vec(), b"1".to_vec()),
                (b"b".to_vec(), b"A".to_vec()),
                (b"flag".to_vec(), b"".to_vec()),
                (b"c".to_vec(), b"x=y".to_vec()),
            ]
        );
        assert!(split_query(b"a&b&c", 2).is_err());
        assert!(split_query(b"", 0).unwrap().is_empty());
    }
}
