//! Bencode: a validating, non-recursive tokenizer that guards serde_bencode,
//! and a small writer.
//!
//! serde_bencode has no nesting limit (a few KiB of `l` overflow the stack)
//! and accepts non-canonical input, so nothing from outside reaches it before
//! [`validate`] has passed. [`decode`] does both steps.
//!
//! # What [`validate`] enforces
//!
//! - exactly one value, no trailing bytes;
//! - input length, nesting depth and token count within [`Limits`], checked
//!   with an explicit stack (never recursion), so hostile nesting costs at
//!   most `max_depth` stack frames on the heap;
//! - canonical integers: no leading zeros (`i03e`), no `i-0e`, no empty
//!   `ie`, and the value fits an `i64`;
//! - canonical string lengths: no leading zeros, no overflow, data present;
//! - dictionary keys are strings and never repeat;
//! - key order according to [`KeyOrder`].
//!
//! # Key order: lenient by default
//!
//! BEP 3 says dictionary keys are sorted, and some real-world torrent files
//! (and trackers) get it wrong. Unsorted keys are harmless to us: the
//! info-hash is taken over the raw bytes of the `info` value, never over a
//! re-encoding, so accepting them changes nothing about which swarm we join.
//! Duplicate keys are *not* harmless (two readers may pick different
//! values), so they are rejected in every mode. [`Limits::TORRENT`] and
//! [`Limits::TRACKER`] therefore use [`KeyOrder::Any`];
//! [`Limits::canonical`] turns strict ordering on.

#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

use std::fmt;
use std::ops::Range;

/// Largest .torrent file we read: 10 MiB.
pub const MAX_TORRENT_LEN: usize = 10 * 1024 * 1024;

/// How strictly dictionary key order is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyOrder {
    /// Keys must be in strictly increasing byte order (canonical bencode).
    Sorted,
    /// Any order is accepted; duplicates are still rejected.
    Any,
}

/// Bounds on a document, checked before and during tokenizing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most nested lists/dicts (the top-level container counts as 1).
    pub max_depth: usize,
    /// Most values (ints, strings including dict keys, lists, dicts).
    pub max_tokens: usize,
    /// Most bytes in the whole document.
    pub max_len: usize,
    /// Whether dictionary keys must be sorted.
    pub key_order: KeyOrder,
}

impl Limits {
    /// For .torrent files: depth 64, 4 M tokens, 10 MiB, unsorted keys accepted.
    pub const TORRENT: Limits = Limits {
        max_depth: 64,
        max_tokens: 4_000_000,
        max_len: MAX_TORRENT_LEN,
        key_order: KeyOrder::Any,
    };
    /// For tracker responses: depth 16, 100 000 tokens, 1 MiB, unsorted keys accepted.
    pub const TRACKER: Limits = Limits {
        max_depth: 16,
        max_tokens: 100_000,
        max_len: 1024 * 1024,
        key_order: KeyOrder::Any,
    };

    /// The same limits, but requiring canonical (sorted) dictionary keys.
    pub const fn canonical(self) -> Limits {
        Limits {
            key_order: KeyOrder::Sorted,
            ..self
        }
    }
}

/// Why a document was rejected. Each variant carries the byte offset where
/// the problem was found. `Copy` and allocation free.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BencodeError {
    /// The input ended inside a value (or was empty).
    Truncated(usize),
    /// Nesting deeper than [`Limits::max_depth`].
    TooDeep(usize),
    /// More values than [`Limits::max_tokens`].
    TooManyTokens(usize),
    /// The document is longer than [`Limits::max_len`] (offset = the limit).
    TooLong(usize),
    /// A malformed or non-canonical integer, or one that does not fit `i64`.
    BadInt(usize),
    /// A malformed, non-canonical or overflowing string length prefix.
    BadStringLength(usize),
    /// A dictionary key not greater than the previous one (canonical mode).
    UnsortedKeys(usize),
    /// A dictionary key that already appeared in the same dictionary.
    DuplicateKey(usize),
    /// A dictionary key that is not a byte string.
    KeyNotString(usize),
    /// Bytes after the end of the single top-level value.
    TrailingBytes(usize),
    /// A byte that cannot start a value here (including a stray `e`).
    UnexpectedByte(usize),
    /// The top-level value is not a dictionary where one is required.
    NotADict(usize),
}

impl BencodeError {
    /// Byte offset in the input where the problem was found.
    pub const fn offset(&self) -> usize {
        match *self {
            BencodeError::Truncated(o)
            | BencodeError::TooDeep(o)
            | BencodeError::TooManyTokens(o)
            | BencodeError::TooLong(o)
            | BencodeError::BadInt(o)
            | BencodeError::BadStringLength(o)
            | BencodeError::UnsortedKeys(o)
            | BencodeError::DuplicateKey(o)
            | BencodeError::KeyNotString(o)
            | BencodeError::TrailingBytes(o)
            | BencodeError::UnexpectedByte(o)
            | BencodeError::NotADict(o) => o,
        }
    }
}

impl fmt::Display for BencodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self {
            BencodeError::Truncated(_) => "input ends in the middle of a value",
            BencodeError::TooDeep(_) => "lists/dictionaries nested too deeply",
            BencodeError::TooManyTokens(_) => "too many values",
            BencodeError::TooLong(_) => "document too long",
            BencodeError::BadInt(_) => "malformed or non-canonical integer",
            BencodeError::BadStringLength(_) => "malformed string length",
            BencodeError::UnsortedKeys(_) => "dictionary keys not in sorted order",
            BencodeError::DuplicateKey(_) => "duplicate dictionary key",
            BencodeError::KeyNotString(_) => "dictionary key is not a string",
            BencodeError::TrailingBytes(_) => "unexpected data after the end of the document",
            BencodeError::UnexpectedByte(_) => "unexpected byte",
            BencodeError::NotADict(_) => "expected a dictionary",
        };
        write!(f, "{what} at byte {}", self.offset())
    }
}

impl std::error::Error for BencodeError {}

/// Why [`decode`] failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The bytes are not acceptable bencode (see [`validate`]).
    Bencode(BencodeError),
    /// Well-formed bencode of the wrong shape for the target type
    /// (serde_bencode's message).
    Shape(String),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Bencode(e) => write!(f, "invalid bencode: {e}"),
            DecodeError::Shape(msg) => write!(f, "unexpected bencode structure: {msg}"),
        }
    }
}

impl std::error::Error for DecodeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DecodeError::Bencode(e) => Some(e),
            DecodeError::Shape(_) => None,
        }
    }
}

impl From<BencodeError> for DecodeError {
    fn from(e: BencodeError) -> DecodeError {
        DecodeError::Bencode(e)
    }
}

/// Validate, then deserialize with serde_bencode.
pub fn decode<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    limits: &Limits,
) -> Result<T, DecodeError> {
    validate(bytes, limits)?;
    serde_bencode::from_bytes(bytes).map_err(|e| DecodeError::Shape(e.to_string()))
}

/// One open container on the explicit stack.
enum Frame {
    List,
    Dict {
        /// Index into the key stack where this dict's keys start.
        first_key: usize,
        /// Keys seen so far are in increasing order.
        sorted: bool,
        /// The next item is a key (else a value).
        want_key: bool,
    },
}

/// Check that `bytes` is exactly one well-formed value within `limits`.
///
/// Iterative: the nesting is tracked on a heap stack of at most
/// `limits.max_depth` frames, so hostile input cannot exhaust the call
/// stack. Runs in O(n) for sorted dictionaries, O(n log n) worst case when
/// unsorted keys must be checked for duplicates.
pub fn validate(bytes: &[u8], limits: &Limits) -> Result<(), BencodeError> {
    if bytes.len() > limits.max_len {
        return Err(BencodeError::TooLong(limits.max_len));
    }
    let mut stack: Vec<Frame> = Vec::new();
    // Ranges of the keys of every open dict, innermost last.
    let mut keys: Vec<Range<usize>> = Vec::new();
    let mut tokens = 0usize;
    let mut pos = 0usize;
    loop {
        let Some(&b) = bytes.get(pos) else {
            return Err(BencodeError::Truncated(pos));
        };
        // A dictionary waiting for a key (or its end).
        if let Some(Frame::Dict {
            first_key,
            sorted,
            want_key: want_key @ true,
        }) = stack.last_mut()
        {
            if b == b'e' {
                if !*sorted && let Some(dict_keys) = keys.get_mut(*first_key..) {
                    check_unsorted_keys(bytes, dict_keys)?;
                }
                keys.truncate(*first_key);
                stack.pop();
                pos += 1;
            } else if b.is_ascii_digit() {
                let key = parse_string(bytes, pos)?;
                count_token(&mut tokens, limits, pos)?;
                if let Some(prev) = keys.get(*first_key..).and_then(<[_]>::last) {
                    match key_bytes(bytes, prev).cmp(key_bytes(bytes, &key)) {
                        std::cmp::Ordering::Less => {}
                        std::cmp::Ordering::Equal => return Err(BencodeError::DuplicateKey(pos)),
                        std::cmp::Ordering::Greater => {
                            if limits.key_order == KeyOrder::Sorted {
                                return Err(BencodeError::UnsortedKeys(pos));
                            }
                            *sorted = false;
                        }
                    }
                }
                pos = key.end;
                keys.push(key);
                *want_key = false;
                continue;
            } else {
                return Err(BencodeError::KeyNotString(pos));
            }
        } else {
            match b {
                b'e' if matches!(stack.last(), Some(Frame::List)) => {
                    stack.pop();
                    pos += 1;
                }
                b'i' => {
                    count_token(&mut tokens, limits, pos)?;
                    pos = parse_int(bytes, pos)?.1;
                }
                b'0'..=b'9' => {
                    count_token(&mut tokens, limits, pos)?;
                    pos = parse_string(bytes, pos)?.end;
                }
                b'l' | b'd' => {
                    count_token(&mut tokens, limits, pos)?;
                    if stack.len() >= limits.max_depth {
                        return Err(BencodeError::TooDeep(pos));
                    }
                    stack.push(if b == b'l' {
                        Frame::List
                    } else {
                        Frame::Dict {
                            first_key: keys.len(),
                            sorted: true,
                            want_key: true,
                        }
                    });
                    pos += 1;
                    continue;
                }
                _ => return Err(BencodeError::UnexpectedByte(pos)),
            }
        }
        // A complete value ended at `pos`.
        match stack.last_mut() {
            None => {
                return if pos == bytes.len() {
                    Ok(())
                } else {
                    Err(BencodeError::TrailingBytes(pos))
                };
            }
            Some(Frame::Dict { want_key, .. }) => *want_key = true,
            Some(Frame::List) => {}
        }
    }
}

/// [`validate`], and also require the top-level value to be a dictionary.
pub fn validate_dict(bytes: &[u8], limits: &Limits) -> Result<(), BencodeError> {
    validate(bytes, limits)?;
    if bytes.first() == Some(&b'd') {
        Ok(())
    } else {
        Err(BencodeError::NotADict(0))
    }
}

fn count_token(tokens: &mut usize, limits: &Limits, pos: usize) -> Result<(), BencodeError> {
    *tokens += 1;
    if *tokens > limits.max_tokens {
        Err(BencodeError::TooManyTokens(pos))
    } else {
        Ok(())
    }
}

/// Duplicate check for a dictionary whose keys arrived out of order: sort
/// the key ranges by content and compare neighbours.
fn check_unsorted_keys(bytes: &[u8], keys: &mut [Range<usize>]) -> Result<(), BencodeError> {
    keys.sort_unstable_by(|a, b| {
        key_bytes(bytes, a)
            .cmp(key_bytes(bytes, b))
            .then(a.start.cmp(&b.start))
    });
    for pair in keys.windows(2) {
        if let [a, b] = pair
            && key_bytes(bytes, a) == key_bytes(bytes, b)
        {
            // Report the later of the two (by position).
            let start = a.start.max(b.start);
            return Err(BencodeError::DuplicateKey(key_header_start(bytes, start)));
        }
    }
    Ok(())
}

/// The data of a string whose range [`parse_string`] returned. Such ranges
/// always lie inside `bytes` (it checks `end <= bytes.len()`), so the empty
/// fallback is never taken.
fn key_bytes<'a>(bytes: &'a [u8], range: &Range<usize>) -> &'a [u8] {
    bytes.get(range.clone()).unwrap_or_default()
}

/// Walk back from a string's data to the first digit of its length prefix.
fn key_header_start(bytes: &[u8], data_start: usize) -> usize {
    let mut p = data_start.saturating_sub(1); // the ':'
    while p > 0 && bytes.get(p - 1).is_some_and(u8::is_ascii_digit) {
        p -= 1;
    }
    p
}

/// Parse `i<digits>e` at `pos` (which holds `i`). Returns the value and the
/// offset just past the `e`.
fn parse_int(bytes: &[u8], pos: usize) -> Result<(i64, usize), BencodeError> {
    let mut p = pos + 1;
    let negative = bytes.get(p) == Some(&b'-');
    if negative {
        p += 1;
    }
    let digits_start = p;
    let mut value: i64 = 0;
    loop {
        match bytes.get(p) {
            None => return Err(BencodeError::Truncated(p)),
            Some(&d @ b'0'..=b'9') => {
                let d = i64::from(d - b'0');
                // Accumulate towards the sign so i64::MIN is representable.
                value = value
                    .checked_mul(10)
                    .and_then(|v| {
                        if negative {
                            v.checked_sub(d)
                        } else {
                            v.checked_add(d)
                        }
                    })
                    .ok_or(BencodeError::BadInt(pos))?;
                p += 1;
            }
            Some(b'e') => break,
            Some(_) => return Err(BencodeError::BadInt(pos)),
        }
    }
    // In range: the loop above stopped at an `e` at `p`; the fallback (an
    // empty slice, refused below) is never taken.
    let digits = bytes.get(digits_start..p).unwrap_or_default();
    let canonical = match digits {
        [] => false,
        [b'0'] => !negative,
        [b'0', ..] => false,
        _ => true,
    };
    if !canonical {
        return Err(BencodeError::BadInt(pos));
    }
    Ok((value, p + 1))
}

/// Parse `<len>:<data>` at `pos` (which holds a digit). Returns the range
/// of the data.
fn parse_string(bytes: &[u8], pos: usize) -> Result<Range<usize>, BencodeError> {
    let mut p = pos;
    let mut len: usize = 0;
    loop {
        match bytes.get(p) {
            None => return Err(BencodeError::Truncated(p)),
            Some(&d @ b'0'..=b'9') => {
                len = len
                    .checked_mul(10)
                    .and_then(|l| l.checked_add(usize::from(d - b'0')))
                    .ok_or(BencodeError::BadStringLength(pos))?;
                p += 1;
            }
            Some(b':') => break,
            Some(_) => return Err(BencodeError::BadStringLength(pos)),
        }
    }
    // `p > pos` here: the caller saw a digit at `pos`.
    if bytes.get(pos) == Some(&b'0') && p - pos > 1 {
        return Err(BencodeError::BadStringLength(pos));
    }
    let start = p + 1;
    match start.checked_add(len) {
        Some(end) if end <= bytes.len() => Ok(start..end),
        _ => Err(BencodeError::Truncated(bytes.len())),
    }
}

/// Offset just past the value starting at `pos`, or `None` if the bytes
/// there are not a well-formed value. Iterative: only a depth counter.
fn skip_value(bytes: &[u8], mut pos: usize) -> Option<usize> {
    let mut depth = 0usize;
    loop {
        match *bytes.get(pos)? {
            b'i' => pos = parse_int(bytes, pos).ok()?.1,
            b'0'..=b'9' => pos = parse_string(bytes, pos).ok()?.end,
            b'l' | b'd' => {
                depth += 1;
                pos += 1;
                continue;
            }
            b'e' => {
                depth = depth.checked_sub(1)?;
                pos += 1;
            }
            _ => return None,
        }
        if depth == 0 {
            return Some(pos);
        }
    }
}

/// The body of the bencoded byte string `s` (`len:body`, exactly).
pub fn string_body(s: &[u8]) -> Option<&[u8]> {
    let colon = s.iter().position(|&b| b == b':')?;
    let (digits, rest) = s.split_at_checked(colon)?;
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let body = rest.get(1..)?;
    let len: usize = std::str::from_utf8(digits).ok()?.parse().ok()?;
    (body.len() == len).then_some(body)
}

/// Length of the one value at the start of `bytes` (whatever follows it
/// is not looked at), or `None` if it is not well-formed. Never panics;
/// a caller that trusts nothing still validates the span it gets.
pub fn value_len(bytes: &[u8]) -> Option<usize> {
    skip_value(bytes, 0)
}

/// For a validated dictionary `bytes`, the byte range of the value stored
/// under `key` — e.g. the raw `info` dictionary, whose SHA-1 is the
/// info-hash. `None` if the key is absent or `bytes` is not a dictionary.
/// Never panics, even on unvalidated input.
pub fn dict_value_span(bytes: &[u8], key: &[u8]) -> Option<Range<usize>> {
    if bytes.first() != Some(&b'd') {
        return None;
    }
    let mut pos = 1;
    loop {
        match bytes.get(pos)? {
            b'0'..=b'9' => {}
            _ => return None,
        }
        let k = parse_string(bytes, pos).ok()?;
        let value_start = k.end;
        let value_end = skip_value(bytes, value_start)?;
        if bytes.get(k)? == key {
            return Some(value_start..value_end);
        }
        pos = value_end;
    }
}

/// The items of a validated list `bytes`, as byte ranges. Empty if `bytes`
/// is not a well-formed list. Never panics.
pub fn list_item_spans(bytes: &[u8]) -> Vec<Range<usize>> {
    let mut items = Vec::new();
    if bytes.first() != Some(&b'l') {
        return items;
    }
    let mut pos = 1;
    while bytes.get(pos).is_some_and(|&b| b != b'e') {
        let Some(end) = skip_value(bytes, pos) else {
            return Vec::new();
        };
        items.push(pos..end);
        pos = end;
    }
    items
}

/// Builds bencoded bytes. The caller is responsible for writing dictionary
/// keys in sorted order.
#[derive(Default, Debug)]
pub struct Writer {
    /// The bytes written so far.
    pub buf: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Writer {
        Writer::default()
    }
    /// Append an integer `i<v>e`.
    pub fn int(&mut self, v: i64) -> &mut Self {
        self.buf.push(b'i');
        self.buf.extend_from_slice(v.to_string().as_bytes());
        self.buf.push(b'e');
        self
    }
    /// Append a byte string `<len>:<v>`.
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(v.len().to_string().as_bytes());
        self.buf.push(b':');
        self.buf.extend_from_slice(v);
        self
    }
    /// Append a UTF-8 string as a byte string.
    pub fn str(&mut self, v: &str) -> &mut Self {
        self.bytes(v.as_bytes())
    }
    /// Open a list; close it with [`Writer::end`].
    pub fn list(&mut self) -> &mut Self {
        self.buf.push(b'l');
        self
    }
    /// Open a dictionary; close it with [`Writer::end`].
    pub fn dict(&mut self) -> &mut Self {
        self.buf.push(b'd');
        self
    }
    /// Close the innermost open list or dictionary.
    pub fn end(&mut self) -> &mut Self {
        self.buf.push(b'e');
        self
    }
    /// Append bytes that are already bencoded.
    pub fn raw(&mut self, v: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(v);
        self
    }
    /// The finished bytes.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests may panic
mod tests;
