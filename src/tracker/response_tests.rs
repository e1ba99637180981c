use super::*;

/// Feed `input` in one go, then (if still unfinished) signal EOF.
fn whole(input: &[u8]) -> Result<Vec<u8>, TrackerError> {
    let mut r = ResponseReader::new();
    match r.feed(input)? {
        Some(body) => Ok(body),
        None => r.eof(),
    }
}

/// Feed `input` split at `cut`, then EOF if unfinished.
fn split_at(input: &[u8], cut: usize) -> Result<Vec<u8>, TrackerError> {
    let mut r = ResponseReader::new();
    let (a, b) = input.split_at(cut);
    if let Some(body) = r.feed(a)? {
        return Ok(body);
    }
    match r.feed(b)? {
        Some(body) => Ok(body),
        None => r.eof(),
    }
}

/// Feed `input` one byte at a time, then EOF if unfinished.
fn bytewise(input: &[u8]) -> Result<Vec<u8>, TrackerError> {
    let mut r = ResponseReader::new();
    for b in input {
        if let Some(body) = r.feed(std::slice::from_ref(b))? {
            return Ok(body);
        }
    }
    r.eof()
}

/// The same body whichever way the stream is cut.
fn assert_body_everywhere(input: &[u8], expected: &[u8]) {
    assert_eq!(whole(input).unwrap(), expected);
    assert_eq!(bytewise(input).unwrap(), expected);
    for cut in 0..=input.len() {
        assert_eq!(split_at(input, cut).unwrap(), expected, "cut at {cut}");
    }
}

#[test]
fn reads_content_length_body_and_ignores_what_follows() {
    let input =
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhelloEXTRA";
    assert_body_everywhere(input, b"hello");
}

#[test]
fn zero_content_length_and_204_complete_with_the_head() {
    let mut r = ResponseReader::new();
    assert_eq!(
        r.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            .unwrap(),
        Some(Vec::new())
    );
    let mut r = ResponseReader::new();
    assert_eq!(
        r.feed(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap(),
        Some(Vec::new())
    );
}

#[test]
fn reads_chunked_body_whole_and_byte_by_byte() {
    let input = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
        5\r\nhello\r\n1;ext=1\r\n \r\nA\r\n0123456789\r\n0\r\nX-Trailer: y\r\n\r\nGARBAGE";
    assert_body_everywhere(input, b"hello 0123456789");
}

#[test]
fn reads_to_eof_when_no_length_is_given() {
    let input = b"HTTP/1.0 200 OK\r\nServer: x\r\n\r\nd8:intervali60ee";
    assert_body_everywhere(input, b"d8:intervali60ee");
    let mut r = ResponseReader::new();
    assert_eq!(r.feed(input).unwrap(), None, "not complete before EOF");
    assert_eq!(r.eof().unwrap(), b"d8:intervali60ee");
}

#[test]
fn accepts_bare_lf_line_endings_in_the_head() {
    let input = b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok";
    assert_body_everywhere(input, b"ok");
}

#[test]
fn skips_interim_100_continue() {
    let input = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    assert_body_everywhere(input, b"ok");
}

#[test]
fn eof_before_the_end_is_truncated() {
    for input in [
        &b""[..],
        b"HTTP/1.1 200 OK\r\nContent-Le",
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n",
    ] {
        assert_eq!(whole(input), Err(TrackerError::Truncated), "{input:?}");
    }
}

#[test]
fn huge_content_length_is_too_large() {
    for len in ["1048577", "99999999999999999999999999"] {
        let input = format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n");
        assert_eq!(whole(input.as_bytes()), Err(TrackerError::TooLarge));
    }
    let ok = format!("HTTP/1.1 200 OK\r\nContent-Length: {MAX_BODY}\r\n\r\n");
    let mut r = ResponseReader::new();
    assert_eq!(r.feed(ok.as_bytes()).unwrap(), None);
}

#[test]
fn huge_chunk_sizes_are_too_large_before_buffering() {
    for size in ["ffffffffffffffff", "100001", "fffffffffffffff"] {
        let input = format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{size}\r\n");
        assert_eq!(
            whole(input.as_bytes()),
            Err(TrackerError::TooLarge),
            "{size}"
        );
    }
    // Many chunks that add up to more than the cap.
    let mut input = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    let chunk = vec![b'x'; 0x10000];
    for _ in 0..17 {
        input.extend_from_slice(b"10000\r\n");
        input.extend_from_slice(&chunk);
        input.extend_from_slice(b"\r\n");
    }
    assert_eq!(whole(&input), Err(TrackerError::TooLarge));
}

#[test]
fn read_to_eof_body_is_capped() {
    let mut r = ResponseReader::new();
    assert_eq!(r.feed(b"HTTP/1.1 200 OK\r\n\r\n").unwrap(), None);
    let block = vec![b'x'; 64 * 1024];
    let mut result = Ok(None);
    for _ in 0..17 {
        result = r.feed(&block);
        if result.is_err() {
            break;
        }
    }
    assert_eq!(result, Err(TrackerError::TooLarge));
}

#[test]
fn head_over_the_cap_is_too_large() {
    let mut input = b"HTTP/1.1 200 OK\r\n".to_vec();
    while input.len() <= MAX_HEAD {
        input.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    assert_eq!(whole(&input), Err(TrackerError::TooLarge));
    assert_eq!(bytewise(&input), Err(TrackerError::TooLarge));
}

#[test]
fn non_2xx_status_is_an_error_with_the_status_line() {
    let input = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(
        whole(input),
        Err(TrackerError::Http("HTTP/1.1 404 Not Found".into()))
    );
    let input = b"HTTP/1.0 302 Found\r\nLocation: http://elsewhere/\r\n\r\n";
    assert_eq!(
        whole(input),
        Err(TrackerError::Http("HTTP/1.0 302 Found".into()))
    );
}

#[test]
fn malformed_framing_is_an_error() {
    for input in [
        &b"SPDY/3 200 OK\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabX",
    ] {
        assert!(
            matches!(whole(input), Err(TrackerError::Http(_))),
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
    let gz = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 1\r\n\r\nx";
    assert!(matches!(whole(gz), Err(TrackerError::Unsupported(_))));
}

#[test]
fn errors_are_sticky() {
    let mut r = ResponseReader::new();
    let e = r.feed(b"HTTP/1.1 500 Oops\r\n\r\n").unwrap_err();
    assert_eq!(r.feed(b"more").unwrap_err(), e);
    assert_eq!(r.eof().unwrap_err(), e);
}

#[test]
fn interim_heads_are_skipped_but_only_a_few() {
    let real = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nde";
    let cont = b"HTTP/1.1 100 Continue\r\n\r\n";
    let mut ok = cont.repeat(MAX_INTERIM as usize);
    ok.extend_from_slice(real);
    assert_eq!(
        ResponseReader::new().feed(&ok).unwrap(),
        Some(b"de".to_vec())
    );
    let mut r = ResponseReader::new();
    let endless = cont.repeat(1000);
    assert!(matches!(
        r.feed(&endless),
        Err(TrackerError::BadResponse(_))
    ));
    // Sticky: whatever follows is the same error.
    assert!(r.feed(real).is_err());
}
