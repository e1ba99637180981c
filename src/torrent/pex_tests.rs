//! Peer exchange driven through a torrent core's buffers (no sockets).

use super::*;
use crate::bitfield::Bitfield;
use crate::config::Config;
use crate::geometry::Geometry;
use crate::ids::ConnToken;
use crate::torrent::TorrentParts;
use crate::wire::{self, Handshake, Message};

const THEIR_PEX_ID: u8 = 5;

fn core(private: bool, now: Instant) -> Torrent {
    core_having(private, Bitfield::new(4), now)
}

/// A core of 4 pieces that has `have` of them.
fn core_having(private: bool, have: Bitfield, now: Instant) -> Torrent {
    let geometry = Geometry::new(4 * 16384, 16384).unwrap();
    Torrent::new(
        TorrentParts {
            info_hash: [9; 20],
            our_id: [1; 20],
            geometry,
            hashes: vec![[0; 20]; 4],
            have,
            metadata: None,
            private,
        },
        Config::default(),
        1,
        now,
    )
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A peer past both handshakes; `ext` is the dictionary of its extension
/// handshake. Our output to it so far is thrown away.
fn connect(
    t: &mut Torrent,
    n: usize,
    at: SocketAddr,
    outgoing: bool,
    ext: &[u8],
    now: Instant,
) -> PeerKey {
    let k = t.add_peer(ConnToken(n), at, outgoing, now);
    let mut bytes = Vec::new();
    Handshake {
        reserved: [0, 0, 0, 0, 0, 0x10, 0, 0],
        info_hash: [9; 20],
        peer_id: [n as u8 + 100; 20],
    }
    .encode(&mut bytes);
    let mut payload = vec![0];
    payload.extend_from_slice(ext);
    Message::Unknown {
        id: wire::EXTENDED_ID,
        payload: &payload,
    }
    .encode(&mut bytes);
    feed(t, k, &bytes, now);
    sent_pex(t, k);
    k
}

fn feed(t: &mut Torrent, k: PeerKey, bytes: &[u8], now: Instant) {
    let mut src = bytes;
    loop {
        t.read_peer_from(k, &mut src).unwrap().unwrap();
        t.on_readable(k, now).unwrap();
        if src.is_empty() {
            return;
        }
    }
}

/// A peer that speaks `ut_pex` (id [`THEIR_PEX_ID`]).
fn pex_ext() -> Vec<u8> {
    format!("d1:md6:ut_pexi{THEIR_PEX_ID}eee").into_bytes()
}

/// The `ut_pex` messages queued to peer `k`, as (added, dropped); the
/// rest of its output is thrown away.
type Sent = Vec<(Vec<(SocketAddr, u8)>, Vec<SocketAddr>)>;
fn sent_pex(t: &mut Torrent, k: PeerKey) -> Sent {
    let mut out = Vec::new();
    t.peers[k].send.write_to(&mut out).unwrap();
    let mut rest = match out.first() {
        Some(19) => &out[wire::HANDSHAKE_LEN..],
        _ => &out[..],
    };
    let mut msgs = Vec::new();
    while let Some((msg, n)) = wire::decode_frame(rest, wire::MAX_FRAME).unwrap() {
        if let Message::Unknown { id: 20, payload } = msg
            && payload[0] == THEIR_PEX_ID
        {
            let p = Pex::parse(&payload[1..]).unwrap();
            msgs.push((p.added().collect(), p.dropped().collect()));
        }
        rest = &rest[n..];
    }
    msgs
}

fn pex_frame(our_id: u8, added: &[SocketAddr]) -> Vec<u8> {
    let added: Vec<(SocketAddr, u8)> = added.iter().map(|&a| (a, 0)).collect();
    let mut out = Vec::new();
    ut_pex::encode(our_id, &added, &[], &mut out);
    out
}

fn tick(t: &mut Torrent, now: Instant) {
    let mut close = Vec::new();
    t.tick(now, Duration::from_secs(1), &mut close);
}

#[test]
fn we_offer_ut_pex_unless_private() {
    let now = Instant::now();
    assert_eq!(core(false, now).extensions.local_id(ut_pex::NAME), Some(1));
    assert_eq!(core(true, now).extensions.local_id(ut_pex::NAME), None);
}

#[test]
fn peers_with_known_listen_addresses_are_sent_then_only_changes() {
    let t0 = Instant::now();
    let mut t = core(false, t0);
    let a = connect(&mut t, 1, addr("10.0.0.1:6881"), true, &pex_ext(), t0);
    let _b = connect(&mut t, 2, addr("10.0.0.2:6881"), true, b"de", t0);
    // Incoming, with its listen port: told with that port, not "reachable".
    let _c = connect(&mut t, 3, addr("10.0.0.3:50000"), false, b"d1:pi7000ee", t0);
    // Incoming without one: never told.
    let _d = connect(&mut t, 4, addr("10.0.0.4:50001"), false, b"de", t0);
    tick(&mut t, t0);
    assert_eq!(sent_pex(&mut t, a), [], "the first waits FIRST_DELAY");
    let t1 = t0 + FIRST_DELAY;
    tick(&mut t, t1);
    assert_eq!(
        sent_pex(&mut t, a),
        [(
            vec![
                (addr("10.0.0.2:6881"), flags::REACHABLE),
                (addr("10.0.0.3:7000"), 0)
            ],
            vec![]
        )]
    );
    // Nothing changed: nothing sent, even when due.
    tick(&mut t, t1 + Duration::from_secs(61));
    assert_eq!(sent_pex(&mut t, a), []);
    // B leaves, E comes: both wait for the interval.
    let b = t
        .peers
        .iter()
        .find(|(_, p)| p.token == ConnToken(2))
        .unwrap()
        .0;
    t.remove_peer(b, &crate::peer::PeerError::Eof);
    let t2 = t1 + Duration::from_secs(70);
    let _e = connect(&mut t, 5, addr("[2001:db8::5]:6881"), true, b"de", t2);
    tick(&mut t, t2);
    assert_eq!(sent_pex(&mut t, a), []);
    tick(&mut t, t1 + Duration::from_secs(122));
    assert_eq!(
        sent_pex(&mut t, a),
        [(
            vec![(addr("[2001:db8::5]:6881"), flags::REACHABLE)],
            vec![addr("10.0.0.2:6881")]
        )]
    );
    assert_eq!(t.pex_stats().sent, 2);
}

#[test]
fn at_most_50_added_go_in_one_message() {
    let t0 = Instant::now();
    let mut t = core(false, t0);
    let a = connect(&mut t, 1, addr("10.0.0.1:6881"), true, &pex_ext(), t0);
    for i in 0..60 {
        connect(
            &mut t,
            10 + i,
            addr(&format!("10.0.1.{i}:6881")),
            true,
            b"de",
            t0,
        );
    }
    tick(&mut t, t0);
    tick(&mut t, t0 + FIRST_DELAY);
    let first = sent_pex(&mut t, a);
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].0.len(), MAX_ADDED);
    let interval = t.cfg.pex_interval;
    tick(&mut t, t0 + FIRST_DELAY + interval);
    let second = sent_pex(&mut t, a);
    assert_eq!(second[0].0.len(), 10, "the rest a minute later");
}

#[test]
fn received_addresses_are_capped_per_message_per_peer_and_per_torrent() {
    let t0 = Instant::now();
    let mut t = core(false, t0);
    let ours = t.extensions.local_id(ut_pex::NAME).unwrap();
    let a = connect(&mut t, 1, addr("10.0.0.1:6881"), true, &pex_ext(), t0);
    // A flood of 100,000 addresses: at most MAX_ADDED taken.
    let flood: Vec<SocketAddr> = (0..100_000u32)
        .map(|i| SocketAddr::from(((0x0b00_0000 + i).to_be_bytes(), 6881)))
        .collect();
    feed(&mut t, a, &pex_frame(ours, &flood), t0);
    let got: Vec<SocketAddr> = t.drain_pex_peers().collect();
    assert_eq!(got, flood[..MAX_ADDED]);
    assert_eq!(t.pex_stats().offered, 100_000);
    // Again at once: ignored unread.
    feed(
        &mut t,
        a,
        &pex_frame(ours, &flood[1000..]),
        t0 + Duration::from_secs(1),
    );
    assert_eq!(t.drain_pex_peers().count(), 0);
    assert_eq!(t.pex_stats().ignored, 1);
    // After the minimum gap, read again.
    let t1 = t0 + min_receive_gap(t.cfg.pex_interval);
    feed(&mut t, a, &pex_frame(ours, &flood[1000..]), t1);
    assert_eq!(t.drain_pex_peers().count(), MAX_ADDED);
    // Many peers, each within its own limits: the torrent's budget holds.
    let mut total = 2 * MAX_ADDED;
    for i in 0..10 {
        let k = connect(
            &mut t,
            10 + i,
            addr(&format!("10.0.1.{i}:6881")),
            true,
            &pex_ext(),
            t1,
        );
        let from = 2000 + i * 100;
        feed(&mut t, k, &pex_frame(ours, &flood[from..from + 100]), t1);
        total += t.drain_pex_peers().count();
    }
    assert_eq!(total, TORRENT_BUDGET);
    // A new window, a new budget.
    let k = connect(&mut t, 30, addr("10.0.2.1:6881"), true, &pex_ext(), t1);
    feed(
        &mut t,
        k,
        &pex_frame(ours, &flood[5000..5010]),
        t0 + BUDGET_WINDOW,
    );
    assert_eq!(t.drain_pex_peers().count(), 10);
}

#[test]
fn implausible_or_known_addresses_are_not_taken() {
    let t0 = Instant::now();
    let mut t = core(false, t0);
    let ours = t.extensions.local_id(ut_pex::NAME).unwrap();
    let a = connect(&mut t, 1, addr("10.0.0.1:6881"), true, &pex_ext(), t0);
    let msg = pex_frame(
        ours,
        &[
            addr("10.0.0.9:0"),
            addr("0.0.0.0:6881"),
            addr("224.0.0.1:6881"),
            addr("255.255.255.255:6881"),
            addr("127.0.0.1:6881"),
            addr("10.0.0.1:6881"), // the sender itself
            addr("10.0.0.9:6881"),
            addr("10.0.0.9:6881"),
        ],
    );
    feed(&mut t, a, &msg, t0);
    assert_eq!(
        t.drain_pex_peers().collect::<Vec<_>>(),
        [addr("10.0.0.9:6881")]
    );
}

#[test]
fn a_seed_takes_no_addresses_flagged_as_seeds() {
    let t0 = Instant::now();
    let flagged = [
        (addr("10.0.0.7:6881"), ut_pex::flags::SEED),
        (addr("10.0.0.8:6881"), ut_pex::flags::REACHABLE),
    ];
    let mut msg = Vec::new();
    // Downloading: both are worth a try.
    let mut t = core(false, t0);
    let ours = t.extensions.local_id(ut_pex::NAME).unwrap();
    ut_pex::encode(ours, &flagged, &[], &mut msg);
    let a = connect(&mut t, 1, addr("10.0.0.1:6881"), true, &pex_ext(), t0);
    feed(&mut t, a, &msg, t0);
    assert_eq!(t.drain_pex_peers().count(), 2);
    // A seed skips the seed.
    let mut seed = core_having(false, Bitfield::full(4), t0);
    let a = connect(&mut seed, 1, addr("10.0.0.1:6881"), true, &pex_ext(), t0);
    feed(&mut seed, a, &msg, t0);
    assert_eq!(
        seed.drain_pex_peers().collect::<Vec<_>>(),
        [addr("10.0.0.8:6881")]
    );
}

#[test]
fn a_private_torrent_ignores_pex_and_sends_none() {
    let t0 = Instant::now();
    let mut t = core(true, t0);
    let a = connect(&mut t, 1, addr("10.0.0.1:6881"), true, &pex_ext(), t0);
    connect(&mut t, 2, addr("10.0.0.2:6881"), true, &pex_ext(), t0);
    // Whatever id it guesses for ut_pex, nothing is taken.
    for id in 0..4 {
        feed(&mut t, a, &pex_frame(id, &[addr("10.0.0.9:6881")]), t0);
    }
    assert_eq!(t.drain_pex_peers().count(), 0);
    for s in 0..100 {
        tick(&mut t, t0 + Duration::from_secs(s));
    }
    assert_eq!(sent_pex(&mut t, a), []);
    assert_eq!(t.pex_stats().sent, 0);
}

#[test]
fn a_torrent_found_private_later_stops_pex() {
    let t0 = Instant::now();
    let mut t = core(false, t0);
    let ours = t.extensions.local_id(ut_pex::NAME).unwrap();
    let a = connect(&mut t, 1, addr("10.0.0.1:6881"), true, &pex_ext(), t0);
    connect(&mut t, 2, addr("10.0.0.2:6881"), true, b"de", t0);
    feed(&mut t, a, &pex_frame(ours, &[addr("10.0.0.9:6881")]), t0);
    t.set_private(true);
    assert_eq!(t.drain_pex_peers().count(), 0, "learnt before: forgotten");
    tick(&mut t, t0 + FIRST_DELAY);
    assert_eq!(sent_pex(&mut t, a), []);
    feed(
        &mut t,
        a,
        &pex_frame(ours, &[addr("10.0.0.8:6881")]),
        t0 + Duration::from_secs(60),
    );
    assert_eq!(t.drain_pex_peers().count(), 0);
}

#[test]
fn the_next_message_is_a_deadline_for_the_loop() {
    let t0 = Instant::now();
    let mut t = core(false, t0);
    connect(&mut t, 1, addr("10.0.0.1:6881"), true, &pex_ext(), t0);
    assert_eq!(t.pex_next_due(t0), Some(t0), "not scheduled yet: now");
    tick(&mut t, t0);
    assert_eq!(t.pex_next_due(t0), Some(t0 + FIRST_DELAY));
}

#[test]
fn a_magnet_torrent_is_public_until_its_metadata_says_private() {
    let t0 = Instant::now();
    let mut t = Torrent::new_magnet([9; 20], [1; 20], Config::default(), 1, t0);
    assert!(t.extensions.local_id(ut_pex::NAME).is_some());
    assert!(!t.is_private());
    let geometry = Geometry::new(4 * 16384, 16384).unwrap();
    let parts = TorrentParts {
        info_hash: [9; 20],
        our_id: [1; 20],
        geometry,
        hashes: vec![[0; 20]; 4],
        have: Bitfield::new(4),
        metadata: None,
        private: true,
    };
    t.set_metainfo(parts, false, 1, t0);
    assert!(t.is_private());
}
