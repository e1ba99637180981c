//! Incremental, bounded framing of one HTTP/1.x response (the tracker's
//! answer to an announce).
//!
//! ```text
//!  Head ──(head parsed, 2xx)──► Length(n) ──(n bytes)──────────────► Done
//!    │                          Chunked ──(0-size chunk + trailers)─► Done
//!    │                          ToEof ──(eof())─────────────────────► Done
//!    └──(non-2xx / malformed / over a cap)──► Failed
//! ```
//!
//! The head is buffered (at most [`MAX_HEAD`] bytes) and parsed with httparse
//! only once its blank line has arrived. Body bytes are appended to the body
//! as they come, so feeding byte by byte costs no more than feeding at once.
//! Every size the server sends is checked against [`MAX_BODY`] before
//! anything is buffered.

#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

use super::{TrackerError, printable};

/// Largest response head accepted (status line plus headers).
pub const MAX_HEAD: usize = 16 * 1024;
/// Largest body accepted, and largest single chunk of a chunked body.
pub const MAX_BODY: usize = 1024 * 1024;
/// Longest chunk-size line (size plus extensions) accepted.
const MAX_CHUNK_LINE: usize = 1024;
/// Most bytes of trailers accepted after the last chunk.
const MAX_TRAILERS: usize = 16 * 1024;
/// Most headers in a response head.
const MAX_HEADERS: usize = 64;
/// Most interim (1xx) heads before the real one: a tracker that sends an
/// endless stream of `100 Continue` is an error, not a loop.
pub const MAX_INTERIM: u32 = 4;

/// Where in a chunked body we are.
#[derive(Debug)]
enum Chunk {
    /// Collecting a chunk-size line (bytes so far, up to its `\n`).
    Size(Vec<u8>),
    /// Inside chunk data, this many bytes to go.
    Data(usize),
    /// After chunk data: expecting `\r\n` (`seen_cr` once the `\r` arrived).
    DataEnd { seen_cr: bool },
    /// After the last chunk: trailer lines until an empty one. `line` is the
    /// length of the current line so far, `total` counts all trailer bytes.
    Trailers { line: usize, total: usize },
}

/// Phase of the response.
#[derive(Debug)]
enum State {
    /// Collecting the head; `buf` holds everything received so far (at most
    /// `MAX_HEAD + 1` bytes) and `buf[..scanned]` holds no blank line that
    /// completes a head.
    Head { buf: Vec<u8>, scanned: usize },
    /// `Content-Length` body: this many bytes to go.
    Length(usize),
    /// `Transfer-Encoding: chunked` body.
    Chunked(Chunk),
    /// Body delimited by the connection closing.
    ToEof,
    /// The body has been handed out; later bytes are ignored.
    Done,
    /// An error was returned; it is returned again for any later call.
    Failed(TrackerError),
}

/// Incremental HTTP/1.x response reader for one tracker exchange.
///
/// Feed it every byte read from the socket with [`feed`](Self::feed); when
/// the peer closes, call [`eof`](Self::eof). Exactly one of them returns the
/// body; errors are sticky.
#[derive(Debug)]
pub struct ResponseReader {
    state: State,
    /// Interim (1xx) heads skipped so far: at most [`MAX_INTERIM`].
    interim: u32,
    /// The body collected so far (never longer than [`MAX_BODY`]).
    body: Vec<u8>,
}

impl Default for ResponseReader {
    fn default() -> Self {
        Self::new()
    }
}

/// How the head says the body is delimited.
enum Framing {
    Length(usize),
    Chunked,
    ToEof,
}

impl ResponseReader {
    /// A reader waiting for the status line.
    pub fn new() -> Self {
        ResponseReader {
            interim: 0,
            state: State::Head {
                buf: Vec::new(),
                scanned: 0,
            },
            body: Vec::new(),
        }
    }

    /// Consume more bytes from the server. `Ok(Some(body))` once the body is
    /// complete (bytes after it are ignored: we sent `Connection: close`),
    /// `Ok(None)` when more is needed (or the body was already returned).
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Option<Vec<u8>>, TrackerError> {
        match self.step(bytes) {
            Ok(done) => Ok(done),
            Err(e) => {
                self.state = State::Failed(e.clone());
                Err(e)
            }
        }
    }

    /// The server closed the connection. Completes a read-to-EOF body;
    /// anything else unfinished is [`TrackerError::Truncated`].
    pub fn eof(&mut self) -> Result<Vec<u8>, TrackerError> {
        match std::mem::replace(&mut self.state, State::Done) {
            State::ToEof => Ok(std::mem::take(&mut self.body)),
            State::Failed(e) => {
                self.state = State::Failed(e.clone());
                Err(e)
            }
            State::Done => Err(TrackerError::Http("response already complete".into())),
            _ => {
                self.state = State::Failed(TrackerError::Truncated);
                Err(TrackerError::Truncated)
            }
        }
    }

    /// True while no response head has been parsed yet.
    pub fn awaiting_head(&self) -> bool {
        matches!(self.state, State::Head { .. })
    }

    fn step(&mut self, mut input: &[u8]) -> Result<Option<Vec<u8>>, TrackerError> {
        loop {
            match &mut self.state {
                State::Failed(e) => return Err(e.clone()),
                State::Done => return Ok(None),
                State::Head { buf, scanned } => {
                    let room = (MAX_HEAD + 1).saturating_sub(buf.len());
                    buf.extend_from_slice(take_prefix(&mut input, room));
                    // Only parse once a blank line may have arrived: scan the
                    // new bytes (and the 3 before them) for "\n\r\n" / "\n\n".
                    let from = scanned.saturating_sub(3);
                    // `scanned <= buf.len()`; scanning all of `buf` is the
                    // (never taken) safe fallback.
                    let parsed = if has_blank_line(buf.get(from..).unwrap_or(buf)) {
                        parse_head(buf)?
                    } else {
                        None
                    };
                    let Some((head_len, framing)) = parsed else {
                        *scanned = buf.len();
                        if buf.len() > MAX_HEAD {
                            return Err(TrackerError::TooLarge);
                        }
                        return Ok(None);
                    };
                    let Some(framing) = framing else {
                        // An interim 1xx response: drop it, read the next head.
                        self.interim += 1;
                        if self.interim > MAX_INTERIM {
                            return Err(TrackerError::BadResponse(format!(
                                "more than {MAX_INTERIM} interim (1xx) responses"
                            )));
                        }
                        buf.drain(..head_len);
                        *scanned = 0;
                        continue;
                    };
                    // Body bytes already in `buf` come first, then the rest
                    // of `input`.
                    let in_buf = buf.split_off(head_len);
                    self.state = match framing {
                        Framing::Length(n) => State::Length(n),
                        Framing::Chunked => State::Chunked(Chunk::Size(Vec::new())),
                        Framing::ToEof => State::ToEof,
                    };
                    if let Some(done) = self.body_bytes(&in_buf)? {
                        return Ok(Some(done));
                    }
                    return self.body_bytes(input);
                }
                _ => return self.body_bytes(input),
            }
        }
    }

    /// Consume body bytes in any body state.
    fn body_bytes(&mut self, mut input: &[u8]) -> Result<Option<Vec<u8>>, TrackerError> {
        loop {
            match &mut self.state {
                State::Length(left) => {
                    let data = take_prefix(&mut input, *left);
                    self.body.extend_from_slice(data);
                    *left -= data.len();
                    if *left == 0 {
                        self.state = State::Done;
                        return Ok(Some(std::mem::take(&mut self.body)));
                    }
                    return Ok(None);
                }
                State::ToEof => {
                    if self.body.len() + input.len() > MAX_BODY {
                        return Err(TrackerError::TooLarge);
                    }
                    self.body.extend_from_slice(input);
                    return Ok(None);
                }
                State::Chunked(chunk) => {
                    if input.is_empty() {
                        return Ok(None);
                    }
                    match chunk {
                        Chunk::Size(line) => {
                            let nl = input.iter().position(|&b| b == b'\n');
                            let take = nl.map_or(input.len(), |i| i + 1);
                            if line.len() + take > MAX_CHUNK_LINE {
                                return Err(TrackerError::Http("chunk-size line too long".into()));
                            }
                            line.extend_from_slice(take_prefix(&mut input, take));
                            if nl.is_none() {
                                return Ok(None);
                            }
                            let size = chunk_size(line)?;
                            let total = self.body.len().checked_add(size);
                            if size > MAX_BODY || total.is_none_or(|t| t > MAX_BODY) {
                                return Err(TrackerError::TooLarge);
                            }
                            *chunk = if size == 0 {
                                Chunk::Trailers { line: 0, total: 0 }
                            } else {
                                Chunk::Data(size)
                            };
                        }
                        Chunk::Data(left) => {
                            let data = take_prefix(&mut input, *left);
                            self.body.extend_from_slice(data);
                            *left -= data.len();
                            if *left == 0 {
                                *chunk = Chunk::DataEnd { seen_cr: false };
                            }
                        }
                        Chunk::DataEnd { seen_cr } => {
                            let Some((&b, rest)) = input.split_first() else {
                                return Ok(None);
                            };
                            input = rest;
                            match (b, *seen_cr) {
                                (b'\r', false) => *seen_cr = true,
                                (b'\n', true) => *chunk = Chunk::Size(Vec::new()),
                                _ => {
                                    return Err(TrackerError::Http(
                                        "missing CRLF after chunk data".into(),
                                    ));
                                }
                            }
                        }
                        Chunk::Trailers { line, total } => {
                            let Some((&b, rest)) = input.split_first() else {
                                return Ok(None);
                            };
                            input = rest;
                            *total += 1;
                            if *total > MAX_TRAILERS {
                                return Err(TrackerError::TooLarge);
                            }
                            if b == b'\n' {
                                // "\r\n" or "\n" alone ends the trailers.
                                if *line <= 1 {
                                    self.state = State::Done;
                                    return Ok(Some(std::mem::take(&mut self.body)));
                                }
                                *line = 0;
                            } else {
                                *line += 1;
                            }
                        }
                    }
                }
                State::Done => return Ok(None),
                State::Failed(e) => return Err(e.clone()),
                State::Head { .. } => {
                    return Err(TrackerError::Http("internal: body before head".into()));
                }
            }
        }
    }
}

/// Does `bytes` contain the end of a head (`\n\r\n` or `\n\n`)?
fn has_blank_line(bytes: &[u8]) -> bool {
    bytes.windows(2).any(|w| w == b"\n\n") || bytes.windows(3).any(|w| w == b"\n\r\n")
}

/// A parsed head: its length and the body framing (`None` for an interim
/// 1xx response).
type ParsedHead = Option<(usize, Option<Framing>)>;

/// Parse the head at the start of `buf`; `Ok(None)` when httparse needs more
/// bytes.
fn parse_head(buf: &[u8]) -> Result<ParsedHead, TrackerError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(TrackerError::Http(format!("malformed response head: {e}"))),
    };
    if head_len > MAX_HEAD {
        return Err(TrackerError::TooLarge);
    }
    let code = resp.code.unwrap_or(0);
    let status_line = || {
        format!(
            "HTTP/1.{} {} {}",
            resp.version.unwrap_or(1),
            code,
            printable(resp.reason.unwrap_or("").as_bytes(), 100)
        )
    };
    if (100..200).contains(&code) {
        if code == 101 {
            return Err(TrackerError::Http(status_line()));
        }
        return Ok(Some((head_len, None)));
    }
    if !(200..300).contains(&code) {
        return Err(TrackerError::Http(status_line()));
    }
    if code == 204 {
        return Ok(Some((head_len, Some(Framing::Length(0)))));
    }
    let mut length: Option<usize> = None;
    let mut chunked = false;
    let mut has_te = false;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            has_te = true;
            // The last coding decides whether the body is chunked.
            let value = String::from_utf8_lossy(h.value);
            let codings: Vec<&str> = value
                .split(',')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect();
            chunked = codings
                .last()
                .is_some_and(|c| c.eq_ignore_ascii_case("chunked"));
            if codings
                .iter()
                .any(|c| !c.eq_ignore_ascii_case("chunked") && !c.eq_ignore_ascii_case("identity"))
            {
                return Err(TrackerError::Unsupported(format!(
                    "transfer-encoding {}",
                    printable(h.value, 40)
                )));
            }
        } else if h.name.eq_ignore_ascii_case("content-length") {
            let n = parse_content_length(h.value)?;
            if length.is_some_and(|old| old != n) {
                return Err(TrackerError::Http("conflicting Content-Length".into()));
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("content-encoding") {
            let v = h.value.trim_ascii();
            if !v.is_empty() && !v.eq_ignore_ascii_case(b"identity") {
                return Err(TrackerError::Unsupported(format!(
                    "content-encoding {}",
                    printable(v, 40)
                )));
            }
        }
    }
    let framing = if has_te {
        // Transfer-Encoding overrides Content-Length (RFC 9112 6.3).
        if chunked {
            Framing::Chunked
        } else {
            Framing::ToEof
        }
    } else {
        match length {
            Some(n) => Framing::Length(n),
            None => Framing::ToEof,
        }
    };
    Ok(Some((head_len, Some(framing))))
}

/// A Content-Length value: decimal digits only, at most [`MAX_BODY`].
fn parse_content_length(value: &[u8]) -> Result<usize, TrackerError> {
    let v = value.trim_ascii();
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return Err(TrackerError::Http("bad Content-Length".into()));
    }
    let mut n: usize = 0;
    for &d in v {
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(usize::from(d - b'0')))
            .ok_or(TrackerError::TooLarge)?;
        if n > MAX_BODY {
            return Err(TrackerError::TooLarge);
        }
    }
    Ok(n)
}

/// The size from a complete chunk-size line (ending in `\n`). Requires at
/// least one hex digit; a size that does not fit `usize` is TooLarge.
fn chunk_size(line: &[u8]) -> Result<usize, TrackerError> {
    if !line.first().is_some_and(u8::is_ascii_hexdigit) {
        return Err(TrackerError::Http("bad chunk size".into()));
    }
    match httparse::parse_chunk_size(line) {
        Ok(httparse::Status::Complete((used, size))) if used == line.len() => {
            usize::try_from(size).map_err(|_| TrackerError::TooLarge)
        }
        _ => Err(TrackerError::Http("bad chunk size".into())),
    }
}

/// Split off the first `n` bytes of `input` (all of it when shorter).
fn take_prefix<'a>(input: &mut &'a [u8], n: usize) -> &'a [u8] {
    let (head, tail) = input.split_at_checked(n).unwrap_or((*input, &[]));
    *input = tail;
    head
}

#[cfg(test)]
#[path = "response_tests.rs"]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests may panic
mod tests;
