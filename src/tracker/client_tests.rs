use super::*;
use crate::bencode::Writer;

fn url(host: &str, port: u16, path: &str) -> HttpUrl {
    HttpUrl {
        tls: false,
        host: host.into(),
        port,
        path: path.into(),
    }
}

#[test]
fn parses_http_urls_with_default_and_explicit_ports() {
    assert_eq!(
        parse_http_url("http://tracker.example.org/announce").unwrap(),
        url("tracker.example.org", 80, "/announce")
    );
    assert_eq!(
        parse_http_url("HTTP://Tracker.Example.org:6969/a/announce?passkey=x%20y#frag").unwrap(),
        url("tracker.example.org", 6969, "/a/announce?passkey=x%20y")
    );
    assert_eq!(
        parse_http_url("http://10.0.0.1:8080").unwrap(),
        url("10.0.0.1", 8080, "/")
    );
    assert_eq!(
        parse_http_url("http://h?x=1").unwrap(),
        url("h", 80, "/?x=1")
    );
}

#[test]
fn parses_ipv6_literals() {
    let u = parse_http_url("http://[::1]:6969/announce").unwrap();
    assert_eq!(u, url("::1", 6969, "/announce"));
    assert_eq!(u.host_header(), "[::1]:6969");
    let u = parse_http_url("http://[2001:db8::2]/ann").unwrap();
    assert_eq!(u, url("2001:db8::2", 80, "/ann"));
}

#[test]
fn rejects_other_schemes_as_unsupported() {
    for s in [
        "udp://tracker.example:80/announce",
        "ftp://t.example/announce",
    ] {
        assert!(
            matches!(parse_http_url(s), Err(TrackerError::Unsupported(_))),
            "{s}"
        );
    }
}

#[test]
fn rejects_malformed_urls() {
    for s in [
        "tracker.example/announce",
        "http://",
        "http://:80/",
        "http://h:0/",
        "http://h:65536/",
        "http://h:/",
        "http://h:+80/",
        "http://[::1/",
        "http://[zz]/",
        "http://[::1]x/",
        "http://::1/",
        "http://user@h/",
        "http://h/a b",
        "http://h/a\r\nX-Injected: 1",
        "http://h\r\n/",
    ] {
        assert!(
            matches!(parse_http_url(s), Err(TrackerError::BadUrl(_))),
            "{s:?} -> {:?}",
            parse_http_url(s)
        );
    }
}

#[test]
fn percent_encodes_non_ascii_path_bytes() {
    let u = parse_http_url("http://h/annonce-é").unwrap();
    assert_eq!(u.path, "/annonce-%C3%A9");
}

fn params() -> AnnounceParams {
    let mut info_hash = [0u8; 20];
    for (i, b) in info_hash.iter_mut().enumerate() {
        *b = i as u8 * 13;
    }
    AnnounceParams {
        info_hash,
        peer_id: *b"-PM0001-abcdef~12.45",
        port: 6881,
        uploaded: 1,
        downloaded: 2,
        left: 3,
        event: Event::Started,
        numwant: 50,
        key: 0xdead_beef,
        tracker_id: None,
    }
}

#[test]
fn builds_announce_request_with_encoded_binary_fields() {
    let req = build_announce_request(&url("t.example", 6969, "/announce"), &params());
    let text = String::from_utf8(req).unwrap();
    let expected = "GET /announce?info_hash=%00%0D%1A%274AN%5Bhu%82%8F%9C%A9%B6%C3%D0%DD%EA%F7\
        &peer_id=-PM0001-abcdef~12.45&port=6881&uploaded=1&downloaded=2&left=3&compact=1\
        &numwant=50&key=deadbeef&event=started HTTP/1.1\r\n\
        Host: t.example:6969\r\nUser-Agent: piecemeal/0.1\r\nAccept-Encoding: identity\r\n\
        Connection: close\r\n\r\n";
    assert_eq!(text, expected);
}

#[test]
fn request_round_trips_through_a_request_parser() {
    let mut p = params();
    p.event = Event::None;
    p.tracker_id = Some(b"id &=?".to_vec());
    let req = build_announce_request(&url("::1", 80, "/a?passkey=k"), &p);
    let mut headers = [httparse::EMPTY_HEADER; 8];
    let mut parsed = httparse::Request::new(&mut headers);
    assert_eq!(
        parsed.parse(&req).unwrap(),
        httparse::Status::Complete(req.len())
    );
    let target = parsed.path.unwrap();
    let (path, query) = target.split_once('?').unwrap();
    assert_eq!(path, "/a");
    let pairs = crate::tracker::split_query(query.as_bytes(), 64).unwrap();
    let get = |n: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == n.as_bytes())
            .map(|(_, v)| v.clone())
    };
    assert_eq!(get("passkey").unwrap(), b"k");
    assert_eq!(get("info_hash").unwrap(), p.info_hash);
    assert_eq!(get("peer_id").unwrap(), p.peer_id);
    assert_eq!(get("trackerid").unwrap(), b"id &=?");
    assert_eq!(get("event"), None, "no event parameter for Event::None");
    assert_eq!(parsed.headers[0].name, "Host");
    assert_eq!(parsed.headers[0].value, b"[::1]:80");
}

#[test]
fn appends_after_existing_query_separator() {
    let mut p = params();
    p.event = Event::Completed;
    let req = build_announce_request(&url("h", 80, "/a?"), &p);
    assert!(req.starts_with(b"GET /a?info_hash="));
    let req = build_announce_request(&url("h", 80, "/a?x=1&"), &p);
    assert!(req.starts_with(b"GET /a?x=1&info_hash="));
    assert!(
        String::from_utf8(req)
            .unwrap()
            .contains("&event=completed ")
    );
}

fn body(build: impl FnOnce(&mut Writer)) -> Vec<u8> {
    let mut w = Writer::new();
    w.dict();
    build(&mut w);
    w.end();
    w.finish()
}

#[test]
fn parses_compact_peers() {
    let b = body(|w| {
        w.str("complete")
            .int(5)
            .str("incomplete")
            .int(7)
            .str("interval")
            .int(900)
            .str("min interval")
            .int(60)
            .str("peers")
            .bytes(&[10, 0, 0, 1, 0x1a, 0xe1, 192, 168, 1, 2, 0, 80])
            .str("tracker id")
            .str("tid")
            .str("warning message")
            .str("be nice");
    });
    let r = parse_announce_body(&b).unwrap();
    assert_eq!(r.interval, 900);
    assert_eq!(r.min_interval, Some(60));
    assert_eq!(r.complete, Some(5));
    assert_eq!(r.incomplete, Some(7));
    assert_eq!(r.tracker_id.as_deref(), Some(&b"tid"[..]));
    assert_eq!(r.warning.as_deref(), Some("be nice"));
    assert_eq!(
        r.peers,
        vec![
            "10.0.0.1:6881".parse().unwrap(),
            "192.168.1.2:80".parse().unwrap()
        ]
    );
}

#[test]
fn parses_dictionary_peers_and_skips_unusable_entries() {
    let b = body(|w| {
        w.str("interval").int(1800).str("peers").list();
        w.dict()
            .str("ip")
            .str("1.2.3.4")
            .str("peer id")
            .bytes(&[0; 20])
            .str("port")
            .int(1000)
            .end();
        w.dict().str("ip").str("::1").str("port").int(2000).end();
        w.dict()
            .str("ip")
            .str("host.example")
            .str("port")
            .int(1)
            .end();
        w.dict()
            .str("ip")
            .str("1.1.1.1")
            .str("port")
            .int(70000)
            .end();
        w.dict().str("ip").str("1.1.1.1").str("port").int(0).end();
        w.dict().str("ip").str("1.1.1.1").end();
        w.int(5);
        w.end();
    });
    let r = parse_announce_body(&b).unwrap();
    assert_eq!(
        r.peers,
        vec![
            "1.2.3.4:1000".parse().unwrap(),
            "[::1]:2000".parse().unwrap()
        ]
    );
}

#[test]
fn parses_peers6() {
    let mut six = Vec::new();
    six.extend_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
    six.extend_from_slice(&6881u16.to_be_bytes());
    let b = body(|w| {
        w.str("interval")
            .int(1800)
            .str("peers")
            .bytes(b"")
            .str("peers6")
            .bytes(&six);
    });
    let r = parse_announce_body(&b).unwrap();
    assert_eq!(r.peers, vec!["[2001:db8::7]:6881".parse().unwrap()]);
    let bad = body(|w| {
        w.str("peers6").bytes(&six[..17]);
    });
    assert!(matches!(
        parse_announce_body(&bad),
        Err(TrackerError::BadResponse(_))
    ));
}

#[test]
fn compact_peers_of_odd_length_are_an_error() {
    let b = body(|w| {
        w.str("interval").int(1800).str("peers").bytes(&[1; 7]);
    });
    assert!(matches!(
        parse_announce_body(&b),
        Err(TrackerError::BadResponse(_))
    ));
}

#[test]
fn failure_reason_becomes_failure() {
    let b = body(|w| {
        w.str("failure reason").str("torrent not registered");
    });
    assert_eq!(
        parse_announce_body(&b),
        Err(TrackerError::Failure("torrent not registered".into()))
    );
    let b = body(|w| {
        w.str("failure reason").str("bad\r\nlog\x1b[31m");
    });
    assert_eq!(
        parse_announce_body(&b),
        Err(TrackerError::Failure("bad??log?[31m".into())),
        "control characters are neutralised"
    );
}

#[test]
fn clamps_interval_and_defaults_it() {
    let parse = |b: Vec<u8>| parse_announce_body(&b).unwrap();
    assert_eq!(parse(body(|_| {})).interval, DEFAULT_INTERVAL);
    assert_eq!(
        parse(body(|w| {
            w.str("interval").int(1);
        }))
        .interval,
        MIN_INTERVAL
    );
    assert_eq!(
        parse(body(|w| {
            w.str("interval").int(-5);
        }))
        .interval,
        MIN_INTERVAL
    );
    let r = parse(body(|w| {
        w.str("interval")
            .int(i64::MAX)
            .str("min interval")
            .int(i64::MAX);
    }));
    assert_eq!(r.interval, MAX_INTERVAL);
    assert_eq!(r.min_interval, Some(MAX_INTERVAL));
    let r = parse(body(|w| {
        w.str("complete").int(-1).str("incomplete").int(1 << 40);
    }));
    assert_eq!((r.complete, r.incomplete), (None, None));
}

#[test]
fn rejects_garbage_and_wrong_shapes() {
    for b in [
        &b""[..],
        b"<html>502 Bad Gateway</html>",
        b"d8:intervali1800e",
        b"d8:intervali1800eextra",
        b"d8:intervali01800ee",
        b"li1ee",
        b"i5e",
    ] {
        assert!(
            matches!(
                parse_announce_body(b),
                Err(TrackerError::Bencode(_)) | Err(TrackerError::BadResponse(_))
            ),
            "{:?}",
            String::from_utf8_lossy(b)
        );
    }
    assert!(matches!(
        parse_announce_body(b"d5:peersi3ee"),
        Err(TrackerError::BadResponse(_))
    ));
    assert!(matches!(
        parse_announce_body(b"d8:interval3:abce"),
        Err(TrackerError::BadResponse(_))
    ));
}

#[test]
fn deep_nesting_is_rejected_without_overflowing_the_stack() {
    // serde_bencode alone aborts the process on input like this.
    let mut b = b"d5:peers".to_vec();
    b.extend(vec![b'l'; 100_000]);
    b.extend(vec![b'e'; 100_000]);
    b.push(b'e');
    assert!(matches!(
        parse_announce_body(&b),
        Err(TrackerError::Bencode(_))
    ));
}

#[test]
fn tracker_urls_are_routed_by_scheme() {
    let udp = |host: &str, port| {
        Ok(TrackerUrl::Udp(UdpUrl {
            host: host.into(),
            port,
        }))
    };
    assert_eq!(
        parse_tracker_url("udp://Tracker.Example:1337/announce"),
        udp("tracker.example", 1337)
    );
    assert_eq!(parse_tracker_url("UDP://1.2.3.4:80"), udp("1.2.3.4", 80));
    assert_eq!(
        parse_tracker_url("udp://[::1]:6969/announce?x=1#f"),
        udp("::1", 6969)
    );
    for bad in [
        "udp://tracker.example",
        "udp://tracker.example/announce",
        "udp://[::1]",
        "udp://user@host:1",
        "udp://host:0",
        "udp://host:99999",
        "udp://:80",
    ] {
        assert!(
            matches!(parse_tracker_url(bad), Err(TrackerError::BadUrl(_))),
            "{bad}"
        );
    }
    assert!(matches!(
        parse_tracker_url("http://h:8/announce"),
        Ok(TrackerUrl::Http(HttpUrl { port: 8, .. }))
    ));
    assert!(matches!(
        parse_tracker_url("ftp://h/announce"),
        Err(TrackerError::Unsupported(_))
    ));
}

#[test]
fn https_urls_default_to_port_443_and_keep_tls_for_scrape() {
    let Ok(TrackerUrl::Http(u)) = parse_tracker_url("HTTPS://T.example/announce?x=1") else {
        panic!("https is an HTTP URL with tls");
    };
    assert_eq!(
        u,
        HttpUrl {
            tls: true,
            ..url("t.example", 443, "/announce?x=1")
        }
    );
    let u = parse_http_url("https://t.example:8443/a/announce").unwrap();
    assert_eq!((u.tls, u.port), (true, 8443));
    let s = scrape_url(&u).unwrap();
    assert_eq!((s.tls, s.port, s.path.as_str()), (true, 8443, "/a/scrape"));
    // Plain http stays plain, on port 80.
    let u = parse_http_url("http://t.example/announce").unwrap();
    assert_eq!((u.tls, u.port), (false, 80));
}

#[test]
fn scrape_urls_follow_the_bep48_convention() {
    let s = |path: &str| scrape_url(&url("t", 80, path)).map(|u| u.path);
    assert_eq!(s("/announce").as_deref(), Some("/scrape"));
    assert_eq!(
        s("/x/announce.php?k=1").as_deref(),
        Some("/x/scrape.php?k=1")
    );
    assert_eq!(
        s("/announce?passkey=a/b").as_deref(),
        Some("/scrape?passkey=a/b")
    );
    assert_eq!(s("/a"), None);
    assert_eq!(s("/announce/x"), None);
    assert_eq!(s("/x_announce"), None);
}

#[test]
fn scrape_request_carries_the_info_hash() {
    let req = build_scrape_request(&url("t", 6969, "/scrape?k=1"), &[0xAB; 20]);
    let text = String::from_utf8(req).unwrap();
    assert!(
        text.starts_with(&format!(
            "GET /scrape?k=1&info_hash={} HTTP/1.1\r\n",
            "%AB".repeat(20)
        )),
        "{text}"
    );
    assert!(text.contains("Host: t:6969\r\n"));
}

#[test]
fn scrape_body_gives_the_counts_of_the_torrent() {
    let mut w = Writer::new();
    w.dict().str("files").dict();
    w.bytes(&[0xAB; 20])
        .dict()
        .str("complete")
        .int(3)
        .str("downloaded")
        .int(10)
        .str("incomplete")
        .int(1)
        .end();
    w.end().end();
    let body = w.finish();
    assert_eq!(
        parse_scrape_body(&body, &[0xAB; 20]),
        Ok(crate::tracker::ScrapeCounts {
            seeders: 3,
            completed: 10,
            leechers: 1
        })
    );
    assert!(matches!(
        parse_scrape_body(&body, &[0xCD; 20]),
        Err(TrackerError::BadResponse(_))
    ));
    assert_eq!(
        parse_scrape_body(b"d14:failure reason4:nopee", &[0; 20]),
        Err(TrackerError::Failure("nope".into()))
    );
    assert!(matches!(
        parse_scrape_body(b"not bencode", &[0; 20]),
        Err(TrackerError::Bencode(_))
    ));
}
