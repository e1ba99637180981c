use super::*;
use crate::tracker::Event;
use crate::tracker::udp_wire::{self, PROTOCOL_ID};

const OWNER: usize = 7;

fn tracker() -> SocketAddr {
    "10.0.0.1:6969".parse().unwrap()
}

fn params(event: Event) -> AnnounceParams {
    AnnounceParams {
        info_hash: [0xAB; 20],
        peer_id: *b"-PM0001-123456789012",
        port: 6881,
        uploaded: 3,
        downloaded: 2,
        left: 1,
        event,
        numwant: 50,
        key: 0xDEAD_BEEF,
        tracker_id: None,
    }
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

/// The transaction id of a request we sent.
fn txn_of(req: &[u8]) -> u32 {
    be32(req, 12)
}

fn announce_answer(txn: u32, interval: u32, leechers: u32, seeders: u32, peers: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    udp_wire::announce_response_head(txn, interval, leechers, seeders, &mut b);
    b.extend_from_slice(peers);
    b
}

fn error_answer(txn: u32, msg: &str) -> Vec<u8> {
    let mut b = Vec::new();
    udp_wire::error_response(txn, msg, &mut b);
    b
}

/// A client with one announce started at `t0` and its connect sent.
fn connecting(t0: Instant, max_n: u32) -> (UdpClient, ExchangeId, Transmit) {
    let mut c = UdpClient::new(42);
    let id = c
        .start_announce(OWNER, tracker(), params(Event::Started), max_n, t0)
        .unwrap();
    let tx = c.poll_transmit(t0).unwrap();
    assert!(c.poll_transmit(t0).is_none());
    (c, id, tx)
}

/// A client whose connect was answered (connection id 0x1122…) at `t0`,
/// with the announce sent.
fn requesting(t0: Instant, max_n: u32) -> (UdpClient, ExchangeId, Transmit) {
    let (mut c, id, tx) = connecting(t0, max_n);
    c.handle_datagram(
        tracker(),
        &udp_wire::connect_response(txn_of(&tx.payload), 0x1122_3344_5566_7788),
        t0,
    );
    let tx = c.poll_transmit(t0).unwrap();
    assert_eq!(tx.payload.len(), 98);
    (c, id, tx)
}

#[test]
fn announce_connects_first_then_announces_and_reports_the_peers() {
    let t0 = Instant::now();
    let (mut c, id, tx) = connecting(t0, BEP15_MAX_N);
    assert_eq!(tx.dest, tracker());
    assert_eq!(tx.id, id);
    assert_eq!(tx.payload.len(), 16);
    assert_eq!(be64(&tx.payload, 0), PROTOCOL_ID);
    assert_eq!(be32(&tx.payload, 8), 0, "action connect");
    let connect_txn = txn_of(&tx.payload);

    c.handle_datagram(
        tracker(),
        &udp_wire::connect_response(connect_txn, 0x1122_3344_5566_7788),
        t0,
    );
    let a = c.poll_transmit(t0).unwrap().payload;
    assert_eq!(a.len(), 98);
    assert_eq!(be64(&a, 0), 0x1122_3344_5566_7788, "connection id");
    assert_eq!(be32(&a, 8), 1, "action announce");
    let txn = txn_of(&a);
    assert_ne!(txn, connect_txn, "a new transaction id for the announce");
    assert_eq!(&a[16..36], &[0xAB; 20]);
    assert_eq!(&a[36..56], b"-PM0001-123456789012");
    assert_eq!(be64(&a, 56), 2, "downloaded");
    assert_eq!(be64(&a, 64), 1, "left");
    assert_eq!(be64(&a, 72), 3, "uploaded");
    assert_eq!(be32(&a, 80), 2, "event started");
    assert_eq!(be32(&a, 84), 0, "ip: the source's");
    assert_eq!(be32(&a, 88), 0xDEAD_BEEF, "key");
    assert_eq!(be32(&a, 92), 50, "num_want");
    assert_eq!(&a[96..98], &6881u16.to_be_bytes());

    let peers = [10, 0, 0, 2, 0x1A, 0xE1, 10, 0, 0, 3, 0x1A, 0xE2];
    c.handle_datagram(tracker(), &announce_answer(txn, 1800, 4, 5, &peers), t0);
    let ev = c.poll_event().unwrap();
    assert_eq!((ev.id, ev.owner), (id, OWNER));
    let Ok(UdpAnswer::Announce(r)) = ev.outcome else {
        panic!("{:?}", ev.outcome);
    };
    assert_eq!(
        r.peers,
        vec![
            "10.0.0.2:6881".parse().unwrap(),
            "10.0.0.3:6882".parse().unwrap()
        ]
    );
    assert_eq!(
        (r.interval, r.incomplete, r.complete),
        (1800, Some(4), Some(5))
    );
    assert_eq!(c.in_flight(), 0);
    assert!(c.poll_timeout().is_none());
    assert_eq!(c.stats(), UdpClientStats::default());
}

#[test]
fn every_event_has_its_bep15_number() {
    for (event, code) in [
        (Event::None, 0),
        (Event::Completed, 1),
        (Event::Started, 2),
        (Event::Stopped, 3),
    ] {
        let a = udp_wire::announce_request(1, 2, &params(event));
        assert_eq!(be32(&a, 80), code, "{event:?}");
    }
}

#[test]
fn unanswered_requests_are_sent_again_after_15_30_60_s_up_to_n_8_then_time_out() {
    let t0 = Instant::now();
    let (mut c, _, first) = connecting(t0, BEP15_MAX_N);
    let mut at = t0;
    let mut gaps = Vec::new();
    loop {
        let due = c.poll_timeout().unwrap();
        // Nothing happens a moment before the deadline.
        c.handle_timeout(due - Duration::from_millis(1));
        assert!(c.poll_transmit(due).is_none());
        assert!(c.poll_event().is_none());
        gaps.push((due - at).as_secs());
        at = due;
        c.handle_timeout(due);
        if let Some(ev) = c.poll_event() {
            assert_eq!(ev.outcome, Err(TrackerError::Timeout));
            break;
        }
        let again = c.poll_transmit(due).unwrap();
        assert_eq!(again.payload, first.payload, "the same connect, same txn");
    }
    assert_eq!(
        gaps,
        [15, 30, 60, 120, 240, 480, 960, 1920, 3840],
        "15·2ⁿ s for n = 0..=8"
    );
    assert_eq!((at - t0).as_secs(), 7665);
    assert_eq!(c.in_flight(), 0);
}

#[test]
fn a_smaller_max_n_gives_up_sooner() {
    let t0 = Instant::now();
    let (mut c, _, _) = connecting(t0, 1);
    c.handle_timeout(t0 + Duration::from_secs(15));
    assert!(c.poll_transmit(t0 + Duration::from_secs(15)).is_some());
    c.handle_timeout(t0 + Duration::from_secs(44));
    assert!(c.poll_event().is_none());
    c.handle_timeout(t0 + Duration::from_secs(45));
    assert_eq!(c.poll_event().unwrap().outcome, Err(TrackerError::Timeout));
}

#[test]
fn the_connection_id_serves_for_a_minute_then_a_new_connect_is_made() {
    let t0 = Instant::now();
    let (mut c, _, tx) = requesting(t0, BEP15_MAX_N);
    c.handle_datagram(
        tracker(),
        &announce_answer(txn_of(&tx.payload), 60, 0, 0, &[]),
        t0,
    );
    assert!(c.poll_event().unwrap().outcome.is_ok());

    let t = t0 + Duration::from_secs(59);
    c.start_announce(OWNER, tracker(), params(Event::None), BEP15_MAX_N, t)
        .unwrap();
    let a = c.poll_transmit(t).unwrap().payload;
    assert_eq!(a.len(), 98, "announces at once");
    assert_eq!(be64(&a, 0), 0x1122_3344_5566_7788);
    c.handle_datagram(tracker(), &announce_answer(txn_of(&a), 60, 0, 0, &[]), t);
    assert!(c.poll_event().unwrap().outcome.is_ok());

    let t = t0 + Duration::from_secs(60);
    c.start_announce(OWNER, tracker(), params(Event::None), BEP15_MAX_N, t)
        .unwrap();
    let again = c.poll_transmit(t).unwrap().payload;
    assert_eq!(again.len(), 16, "connects again after 60 s");
    assert_eq!(be64(&again, 0), PROTOCOL_ID);
}

#[test]
fn a_retransmit_after_the_connection_id_expired_connects_again() {
    let t0 = Instant::now();
    let (mut c, _, a) = requesting(t0, BEP15_MAX_N);
    let announce_txn = txn_of(&a.payload);
    // 15 s and 45 s: the id is still good, the announce is sent again.
    for at in [15, 45] {
        let t = t0 + Duration::from_secs(at);
        c.handle_timeout(t);
        let again = c.poll_transmit(t).unwrap().payload;
        assert_eq!(again, a.payload, "at {at} s");
    }
    // 105 s: the id is 105 s old.
    let t = t0 + Duration::from_secs(105);
    c.handle_timeout(t);
    let connect = c.poll_transmit(t).unwrap().payload;
    assert_eq!(connect.len(), 16);
    assert_ne!(txn_of(&connect), announce_txn);
    // A late answer to the old announce is no longer wanted.
    c.handle_datagram(tracker(), &announce_answer(announce_txn, 60, 0, 0, &[]), t);
    assert!(c.poll_event().is_none());
    assert_eq!(c.stats().unsolicited, 1);
    // The retransmission count goes on: the next time-out is 15·2³ s away.
    assert_eq!(c.poll_timeout(), Some(t + Duration::from_secs(120)));
}

#[test]
fn an_answer_with_a_wrong_transaction_id_is_ignored_and_counted() {
    let t0 = Instant::now();
    let (mut c, _, tx) = connecting(t0, BEP15_MAX_N);
    let txn = txn_of(&tx.payload);
    c.handle_datagram(tracker(), &udp_wire::connect_response(txn ^ 1, 5), t0);
    c.handle_datagram(tracker(), &error_answer(txn.wrapping_add(1), "nope"), t0);
    assert!(c.poll_event().is_none());
    assert!(c.poll_transmit(t0).is_none(), "still connecting");
    assert_eq!(c.stats().unsolicited, 2);
    // The real answer still works.
    c.handle_datagram(tracker(), &udp_wire::connect_response(txn, 5), t0);
    assert_eq!(c.poll_transmit(t0).unwrap().payload.len(), 98);
}

#[test]
fn an_answer_from_another_address_is_ignored() {
    let t0 = Instant::now();
    let (mut c, _, tx) = connecting(t0, BEP15_MAX_N);
    let answer = udp_wire::connect_response(txn_of(&tx.payload), 5);
    for from in ["10.0.0.9:6969", "10.0.0.1:6970", "[2001:db8::1]:6969"] {
        c.handle_datagram(from.parse().unwrap(), &answer, t0);
    }
    assert!(c.poll_transmit(t0).is_none());
    assert_eq!(c.stats().unsolicited, 3);
    // A dual-stack socket reports the tracker as ::ffff:10.0.0.1: the same.
    c.handle_datagram("[::ffff:10.0.0.1]:6969".parse().unwrap(), &answer, t0);
    assert!(c.poll_transmit(t0).is_some());
}

#[test]
fn short_long_and_ragged_datagrams_are_dropped_and_counted() {
    let t0 = Instant::now();
    let (mut c, _, tx) = connecting(t0, BEP15_MAX_N);
    let good = udp_wire::connect_response(txn_of(&tx.payload), 5);
    let mut dropped = 0;
    for n in 0..good.len() {
        c.handle_datagram(tracker(), &good[..n], t0);
        dropped += 1;
    }
    let mut long = good.to_vec();
    long.push(0);
    c.handle_datagram(tracker(), &long, t0);
    dropped += 1;
    c.handle_datagram(tracker(), &vec![0u8; udp_wire::MAX_RESPONSE_LEN + 1], t0);
    dropped += 1;
    let mut unknown = good.to_vec();
    unknown[3] = 9;
    c.handle_datagram(tracker(), &unknown, t0);
    dropped += 1;
    // An announce answer while connecting: the wrong action for the phase.
    c.handle_datagram(
        tracker(),
        &announce_answer(txn_of(&tx.payload), 60, 0, 0, &[]),
        t0,
    );
    dropped += 1;
    assert_eq!(c.stats().malformed, dropped);
    assert!(c.poll_event().is_none());
    assert!(c.poll_transmit(t0).is_none());

    // Now announcing: peers not a whole number of 6-byte records.
    c.handle_datagram(tracker(), &good, t0);
    let a = c.poll_transmit(t0).unwrap().payload;
    let txn = txn_of(&a);
    c.handle_datagram(tracker(), &announce_answer(txn, 60, 0, 0, &[1; 7]), t0);
    c.handle_datagram(
        tracker(),
        &announce_answer(txn, 60, 0, 0, &[1; 18])[..19],
        t0,
    );
    assert_eq!(c.stats().malformed, dropped + 2);
    assert!(c.poll_event().is_none());
    c.handle_datagram(tracker(), &announce_answer(txn, 60, 0, 0, &[1; 12]), t0);
    assert!(c.poll_event().unwrap().outcome.is_ok());
}

#[test]
fn an_error_answer_to_connect_ends_the_exchange_with_its_message() {
    let t0 = Instant::now();
    let (mut c, id, tx) = connecting(t0, BEP15_MAX_N);
    c.handle_datagram(
        tracker(),
        &error_answer(txn_of(&tx.payload), "go away\n\x1b[31m"),
        t0,
    );
    let ev = c.poll_event().unwrap();
    assert_eq!(ev.id, id);
    assert_eq!(
        ev.outcome,
        Err(TrackerError::Failure("go away??[31m".into())),
        "control characters are made printable"
    );
    assert_eq!(c.in_flight(), 0);
    assert!(c.poll_timeout().is_none());
}

#[test]
fn an_error_answer_to_announce_ends_it_and_forgets_the_connection_id() {
    let t0 = Instant::now();
    let (mut c, _, a) = requesting(t0, BEP15_MAX_N);
    c.handle_datagram(tracker(), &error_answer(txn_of(&a.payload), ""), t0);
    assert_eq!(
        c.poll_event().unwrap().outcome,
        Err(TrackerError::Failure("(no message)".into()))
    );
    c.start_announce(OWNER, tracker(), params(Event::None), 8, t0)
        .unwrap();
    assert_eq!(c.poll_transmit(t0).unwrap().payload.len(), 16, "connects");
}

#[test]
fn an_ipv6_tracker_answers_with_18_byte_peers() {
    let t0 = Instant::now();
    let v6: SocketAddr = "[2001:db8::1]:6969".parse().unwrap();
    let mut c = UdpClient::new(1);
    c.start_announce(OWNER, v6, params(Event::None), 8, t0)
        .unwrap();
    let tx = c.poll_transmit(t0).unwrap();
    c.handle_datagram(v6, &udp_wire::connect_response(txn_of(&tx.payload), 9), t0);
    let txn = txn_of(&c.poll_transmit(t0).unwrap().payload);
    // 6-byte records from an IPv6 tracker do not fit.
    c.handle_datagram(v6, &announce_answer(txn, 60, 0, 0, &[1; 12]), t0);
    assert_eq!(c.stats().malformed, 1);
    let mut peer = "2001:db8::2"
        .parse::<std::net::Ipv6Addr>()
        .unwrap()
        .octets()
        .to_vec();
    peer.extend_from_slice(&51413u16.to_be_bytes());
    c.handle_datagram(v6, &announce_answer(txn, 60, 0, 0, &peer), t0);
    let Ok(UdpAnswer::Announce(r)) = c.poll_event().unwrap().outcome else {
        panic!()
    };
    assert_eq!(r.peers, vec!["[2001:db8::2]:51413".parse().unwrap()]);
}

#[test]
fn intervals_are_clamped_and_port_zero_peers_skipped() {
    let t0 = Instant::now();
    for (sent, kept) in [
        (0, MIN_INTERVAL),
        (5, MIN_INTERVAL),
        (u32::MAX, MAX_INTERVAL),
    ] {
        let (mut c, _, a) = requesting(t0, 8);
        let peers = [10, 0, 0, 2, 0, 0, 10, 0, 0, 3, 0, 1];
        c.handle_datagram(
            tracker(),
            &announce_answer(txn_of(&a.payload), sent, 0, 0, &peers),
            t0,
        );
        let Ok(UdpAnswer::Announce(r)) = c.poll_event().unwrap().outcome else {
            panic!()
        };
        assert_eq!(r.interval, kept);
        assert_eq!(r.peers, vec!["10.0.0.3:1".parse().unwrap()]);
    }
}

#[test]
fn scrape_sends_the_hashes_and_reads_one_record_each() {
    let t0 = Instant::now();
    let mut c = UdpClient::new(3);
    let hashes = [[1u8; 20], [2u8; 20]];
    c.start_scrape(OWNER, tracker(), &hashes, 8, t0).unwrap();
    let tx = c.poll_transmit(t0).unwrap();
    c.handle_datagram(
        tracker(),
        &udp_wire::connect_response(txn_of(&tx.payload), 77),
        t0,
    );
    let s = c.poll_transmit(t0).unwrap().payload;
    assert_eq!(s.len(), 16 + 40);
    assert_eq!(be64(&s, 0), 77);
    assert_eq!(be32(&s, 8), 2, "action scrape");
    assert_eq!(&s[16..36], &[1u8; 20]);
    assert_eq!(&s[36..56], &[2u8; 20]);
    let txn = txn_of(&s);
    let answer = |n: u32| {
        let mut b = Vec::new();
        udp_wire::scrape_response_head(txn, &mut b);
        for i in 0..n {
            udp_wire::scrape_record(
                ScrapeCounts {
                    seeders: i,
                    completed: 10 + i,
                    leechers: 20 + i,
                },
                &mut b,
            );
        }
        b
    };
    // More records than hashes asked: not an answer to this request.
    c.handle_datagram(tracker(), &answer(3), t0);
    assert_eq!(c.stats().malformed, 1);
    c.handle_datagram(tracker(), &answer(2), t0);
    let ev = c.poll_event().unwrap();
    assert_eq!(
        ev.outcome,
        Ok(UdpAnswer::Scrape(vec![
            ScrapeCounts {
                seeders: 0,
                completed: 10,
                leechers: 20
            },
            ScrapeCounts {
                seeders: 1,
                completed: 11,
                leechers: 21
            },
        ]))
    );
}

#[test]
fn a_scrape_asks_for_at_most_74_hashes() {
    let t0 = Instant::now();
    let mut c = UdpClient::new(3);
    let hashes = vec![[9u8; 20]; 100];
    c.start_scrape(OWNER, tracker(), &hashes, 8, t0).unwrap();
    let tx = c.poll_transmit(t0).unwrap();
    c.handle_datagram(
        tracker(),
        &udp_wire::connect_response(txn_of(&tx.payload), 1),
        t0,
    );
    assert_eq!(c.poll_transmit(t0).unwrap().payload.len(), 16 + 20 * 74);
}

#[test]
fn transaction_ids_are_random_and_never_shared() {
    let t0 = Instant::now();
    let mut c = UdpClient::new(99);
    let mut seen = std::collections::HashSet::new();
    for _ in 0..1000 {
        c.start_announce(OWNER, tracker(), params(Event::None), 8, t0)
            .unwrap();
        let tx = c.poll_transmit(t0).unwrap();
        assert!(seen.insert(txn_of(&tx.payload)));
    }
    // Not a counter.
    let mut v: Vec<u32> = seen.into_iter().collect();
    v.sort_unstable();
    assert!(v.windows(2).filter(|w| w[1] == w[0] + 1).count() < 10);
    // Another seed, other ids.
    let mut d = UdpClient::new(100);
    d.start_announce(OWNER, tracker(), params(Event::None), 8, t0)
        .unwrap();
    let mut e = UdpClient::new(99);
    e.start_announce(OWNER, tracker(), params(Event::None), 8, t0)
        .unwrap();
    assert_ne!(d.poll_transmit(t0).unwrap(), e.poll_transmit(t0).unwrap());
}

#[test]
fn a_cancelled_exchange_is_forgotten_and_its_answer_unsolicited() {
    let t0 = Instant::now();
    let (mut c, id, tx) = connecting(t0, 8);
    c.cancel(id);
    assert_eq!(c.in_flight(), 0);
    assert!(c.poll_timeout().is_none());
    c.handle_datagram(
        tracker(),
        &udp_wire::connect_response(txn_of(&tx.payload), 1),
        t0,
    );
    assert_eq!(c.stats().unsolicited, 1);
    assert!(c.poll_event().is_none());

    c.start_announce(1, tracker(), params(Event::None), 8, t0)
        .unwrap();
    c.start_announce(2, tracker(), params(Event::None), 8, t0)
        .unwrap();
    c.cancel_owner(1);
    assert!(!c.has_owner(1) && c.has_owner(2));
    let tx = c.poll_transmit(t0).unwrap();
    assert!(
        c.poll_transmit(t0).is_none(),
        "the cancelled one sends nothing"
    );
    assert_eq!(c.exchanges[&tx.id].owner, 2);
}

#[test]
fn a_send_error_ends_the_exchange() {
    let t0 = Instant::now();
    let (mut c, id, _) = connecting(t0, 8);
    c.on_send_error(id, "network unreachable".into());
    assert_eq!(
        c.poll_event().unwrap().outcome,
        Err(TrackerError::Io("network unreachable".into()))
    );
    assert_eq!(c.in_flight(), 0);
}

#[test]
fn a_flood_of_unsolicited_datagrams_changes_nothing_and_keeps_no_state() {
    let t0 = Instant::now();
    let (mut c, _, tx) = connecting(t0, 8);
    let txn = txn_of(&tx.payload);
    let mut x: u64 = 0x1234_5678;
    let mut buf = [0u8; 64];
    let n = 200_000;
    for i in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = (x % 64) as usize;
        for (j, b) in buf.iter_mut().enumerate() {
            *b = (x >> (j % 8 * 8)) as u8;
        }
        // Well-formed answers with other ids, and random bytes.
        let d: Vec<u8> = if i % 2 == 0 {
            let t = (x as u32).max(1).wrapping_add(txn);
            udp_wire::connect_response(t, x).to_vec()
        } else {
            buf[..len].to_vec()
        };
        c.handle_datagram(tracker(), &d, t0);
    }
    assert_eq!(c.stats().dropped(), n);
    assert!(c.poll_event().is_none());
    assert!(c.poll_transmit(t0).is_none());
    assert_eq!(c.in_flight(), 1);
    assert!(c.conn_ids.is_empty() && c.by_txn.len() == 1);
    // And the exchange still completes.
    c.handle_datagram(tracker(), &udp_wire::connect_response(txn, 1), t0);
    assert!(c.poll_transmit(t0).is_some());
}
