//! The fast extension (BEP 6) in the torrent core: scripted peers against a
//! real `Torrent`, through its buffers.

use super::*;
use crate::ids::PieceIndex as P;

/// A peer's handshake with the fast bit (and the BEP 10 bit when `ext`).
fn fast_handshake(peer_id: [u8; 20], ext: bool) -> Vec<u8> {
    let mut hs = handshake([9; 20], peer_id, ext);
    hs[27] |= 0x04;
    hs
}

/// Every frame after the handshake in the peer's send buffer, decoded.
fn frames(t: &Torrent, k: PeerKey) -> Vec<Message<'_>> {
    let mut buf = &t.peers[k].send.pending()[wire::HANDSHAKE_LEN..];
    let mut out = Vec::new();
    while let Some((m, n)) = wire::decode_frame(buf, wire::MAX_FRAME).unwrap() {
        out.push(m);
        buf = &buf[n..];
    }
    out
}

fn msgs(ms: &[Message<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in ms {
        m.encode(&mut out);
    }
    out
}

fn request(piece: PieceIndex, begin: u32) -> Message<'static> {
    Message::Request {
        piece: piece.0,
        begin,
        len: 16384,
    }
}

fn reject(piece: PieceIndex, begin: u32) -> Message<'static> {
    Message::Reject {
        piece: piece.0,
        begin,
        len: 16384,
    }
}

/// A leecher (64 pieces of two blocks) connected to a fast peer that has
/// everything and `unchoke`s it or not.
fn fast_leecher(name: &str, unchoke: bool, now: Instant) -> (Node, PeerKey, PathBuf) {
    let f = fixture(64 * 32768, 32768);
    let dir = temp_dir(name);
    let mut t = torrent_with_cache(&f, &dir, false, 5, now, 64 * 32768);
    let k = t.add_peer(ConnToken(1), "127.0.0.1:5".parse().unwrap(), false, now);
    let mut bytes = fast_handshake([6; 20], false);
    Message::HaveAll.encode(&mut bytes);
    if unchoke {
        Message::Unchoke.encode(&mut bytes);
    }
    feed(&mut t, k, &bytes, now).unwrap();
    assert!(t.peers[k].fast.enabled);
    assert!(t.peers[k].has.is_full());
    (t, k, dir)
}

#[test]
fn fast_peers_get_have_all_or_have_none_instead_of_a_bitfield() {
    let f = fixture(64 * 32768, 32768);
    let (sd, ld) = (temp_dir("fast-all"), temp_dir("fast-none"));
    let now = Instant::now();
    let mut seeder = torrent(&f, &sd, true, 1, now);
    let k = seeder.add_peer(ConnToken(1), "127.0.0.1:1".parse().unwrap(), false, now);
    feed(&mut seeder, k, &fast_handshake([6; 20], true), now).unwrap();
    let sent = frames(&seeder, k);
    assert_eq!(sent[0], Message::HaveAll, "{sent:?}");
    let hs = Handshake::decode(seeder.peers[k].send.pending())
        .unwrap()
        .unwrap();
    assert!(hs.supports_fast() && hs.supports_extensions());
    // A leecher with nothing says so to a fast peer, and nothing to others.
    let mut leecher = torrent(&f, &ld, false, 2, now);
    let k = leecher.add_peer(ConnToken(1), "127.0.0.1:2".parse().unwrap(), false, now);
    feed(&mut leecher, k, &fast_handshake([6; 20], false), now).unwrap();
    assert_eq!(frames(&leecher, k), [Message::HaveNone]);
    let k = leecher.add_peer(ConnToken(2), "127.0.0.1:3".parse().unwrap(), false, now);
    feed(&mut leecher, k, &handshake([9; 20], [7; 20], false), now).unwrap();
    assert!(frames(&leecher, k).is_empty());
    std::fs::remove_dir_all(sd).unwrap();
    std::fs::remove_dir_all(ld).unwrap();
}

#[test]
fn a_choked_fast_peer_is_rejected_except_for_its_allowed_fast_pieces() {
    let f = fixture(64 * 32768, 32768);
    let dir = temp_dir("fast-choked");
    let now = Instant::now();
    let mut t = torrent(&f, &dir, true, 1, now);
    let addr: SocketAddr = "10.1.2.3:6881".parse().unwrap();
    let k = t.add_peer(ConnToken(1), addr, false, now);
    let mut bytes = fast_handshake([6; 20], false);
    Message::HaveNone.encode(&mut bytes);
    Message::Interested.encode(&mut bytes);
    feed(&mut t, k, &bytes, now).unwrap();
    // Interested: our allowed-fast set for its /24 goes out.
    let set = crate::fast::allowed_fast_set(addr.ip(), &[9; 20], 64, 10);
    let sent: Vec<PieceIndex> = frames(&t, k)
        .iter()
        .filter_map(|m| match m {
            Message::AllowedFast { piece } => Some(P(*piece)),
            _ => None,
        })
        .collect();
    assert_eq!(sent, set);
    assert!(t.peers[k].am_choking, "no choke round yet");
    let allowed = set[0];
    let other = (0..64).map(P).find(|p| !set.contains(p)).unwrap();
    let before = t.peers[k].send.len();
    let bytes = msgs(&[
        request(allowed, 0),
        request(other, 0),
        request(P(99), 0),
        request(allowed, 16384),
    ]);
    feed(&mut t, k, &bytes, now).unwrap();
    // The allowed piece is queued (or already served); the others rejected.
    let mut buf = &t.peers[k].send.pending()[before..];
    let mut rejects = Vec::new();
    while let Some((m, n)) = wire::decode_frame(buf, wire::MAX_FRAME).unwrap() {
        if let Message::Reject { piece, .. } = m {
            rejects.push(P(piece));
        }
        buf = &buf[n..];
    }
    assert_eq!(rejects, [other, P(99)]);
    let queued: Vec<PieceIndex> = t.peers[k].requests.iter().map(|b| b.piece).collect();
    assert!(queued.iter().all(|&p| p == allowed), "{queued:?}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn choking_a_fast_peer_rejects_its_queued_requests_and_a_cancel_is_answered() {
    let f = fixture(64 * 32768, 32768);
    let dir = temp_dir("fast-choke-out");
    let mut now = Instant::now();
    let mut t = torrent(&f, &dir, true, 1, now);
    let k = t.add_peer(ConnToken(1), "127.0.0.1:1".parse().unwrap(), false, now);
    let mut bytes = fast_handshake([6; 20], false);
    Message::Interested.encode(&mut bytes);
    feed(&mut t, k, &bytes, now).unwrap();
    t.choke_round(now);
    assert!(!t.peers[k].am_choking);
    let allowed = t.peers[k].fast.allowed_out[0];
    let others: Vec<PieceIndex> = (0..64)
        .map(P)
        .filter(|p| !t.peers[k].fast.allowed_for_them(*p))
        .take(5)
        .collect();
    let mut reqs: Vec<Message<'_>> = others.iter().map(|&p| request(p, 0)).collect();
    reqs.push(request(allowed, 0));
    // No read is done in this test: every request stays queued.
    feed(&mut t, k, &msgs(&reqs), now).unwrap();
    assert_eq!(t.peers[k].requests.len(), 6);
    // A cancel of a queued request is answered with a reject (BEP 6).
    t.peers[k].send.write_to(&mut Vec::new()).unwrap();
    feed(
        &mut t,
        k,
        &msgs(&[Message::Cancel {
            piece: others[0].0,
            begin: 0,
            len: 16384,
        }]),
        now,
    )
    .unwrap();
    assert_eq!(t.peers[k].requests.len(), 5);
    let pending = t.peers[k].send.pending().to_vec();
    assert_eq!(
        wire::decode_frame(&pending, wire::MAX_FRAME)
            .unwrap()
            .unwrap()
            .0,
        reject(others[0], 0)
    );
    // It loses interest; the next round chokes it: every queued request
    // but the allowed-fast one is rejected.
    feed(&mut t, k, &msgs(&[Message::NotInterested]), now).unwrap();
    now += Duration::from_secs(11);
    t.peers[k].send.write_to(&mut Vec::new()).unwrap();
    t.choke_round(now);
    assert!(t.peers[k].am_choking);
    let pending = t.peers[k].send.pending().to_vec();
    let mut buf = &pending[..];
    let mut got = Vec::new();
    while let Some((m, n)) = wire::decode_frame(buf, wire::MAX_FRAME).unwrap() {
        got.push(m);
        buf = &buf[n..];
    }
    let mut want = vec![Message::Choke];
    want.extend(others[1..].iter().map(|&p| reject(p, 0)));
    assert_eq!(got, want);
    assert_eq!(t.peers[k].requests.len(), 1);
    assert_eq!(t.peers[k].requests[0].piece, allowed);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_reject_returns_the_block_to_the_picker_at_once() {
    let now = Instant::now();
    let (mut t, k, dir) = fast_leecher("fast-reject", true, now);
    let n = t.peers[k].inflight.len();
    assert!(n > 0);
    let first = t.peers[k].inflight[0].block;
    t.peers[k].send.write_to(&mut Vec::new()).unwrap();
    feed(&mut t, k, &msgs(&[reject(first.piece, first.begin)]), now).unwrap();
    // Back to the picker and, the peer being free, asked for again at once.
    assert_eq!(t.peers[k].inflight.len(), n);
    let pending = t.peers[k].send.pending().to_vec();
    assert_eq!(
        wire::decode_frame(&pending, wire::MAX_FRAME)
            .unwrap()
            .unwrap()
            .0,
        request(first.piece, first.begin)
    );
    assert_eq!(t.peers[k].fast.rejected, 1);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_peer_rejecting_everything_is_not_asked_again_until_the_next_second() {
    let mut now = Instant::now();
    let (mut t, k, dir) = fast_leecher("fast-reject-all", true, now);
    for _ in 0..crate::fast::REJECTS_BEFORE_PAUSE {
        let b = t.peers[k].inflight[0].block;
        feed(&mut t, k, &msgs(&[reject(b.piece, b.begin)]), now).unwrap();
    }
    let left = t.peers[k].inflight.len();
    let b = t.peers[k].inflight[0].block;
    feed(&mut t, k, &msgs(&[reject(b.piece, b.begin)]), now).unwrap();
    assert_eq!(
        t.peers[k].inflight.len(),
        left - 1,
        "paused: nothing re-requested"
    );
    now += Duration::from_secs(1);
    t.tick(now, Duration::from_secs(1), &mut Vec::new());
    assert!(
        t.peers[k].inflight.len() >= left,
        "asked again after the tick"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn rejects_for_blocks_never_requested_are_ignored_then_close() {
    let now = Instant::now();
    let (mut t, k, dir) = fast_leecher("fast-stray-reject", true, now);
    let n = t.peers[k].inflight.len();
    // The last piece was never asked for.
    let limit = 4 * t.cfg.max_peer_requests;
    let stray = msgs(&vec![reject(P(63), 16384); limit]);
    feed(&mut t, k, &stray, now).unwrap();
    assert_eq!(
        t.peers[k].inflight.len(),
        n,
        "nothing we asked for was touched"
    );
    assert_eq!(
        feed(&mut t, k, &msgs(&[reject(P(63), 16384)]), now),
        Err(PeerError::Fast(
            "too many rejects or hints it had no cause to send"
        ))
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_fast_choke_leaves_our_requests_standing_until_the_request_time_out() {
    let now = Instant::now();
    let (mut t, k, dir) = fast_leecher("fast-choke-in", true, now);
    let n = t.peers[k].inflight.len();
    feed(&mut t, k, &msgs(&[Message::Choke]), now).unwrap();
    assert_eq!(
        t.peers[k].inflight.len(),
        n,
        "with BEP 6 a choke voids nothing"
    );
    let later = now + t.cfg.request_timeout + Duration::from_secs(1);
    t.tick(later, Duration::from_secs(1), &mut Vec::new());
    assert!(
        t.peers[k].inflight.is_empty(),
        "the time-out takes them back"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn allowed_fast_pieces_are_fetched_while_choked_and_bad_ones_ignored() {
    let now = Instant::now();
    let (mut t, k, dir) = fast_leecher("fast-allowed-in", false, now);
    assert!(t.peers[k].inflight.is_empty(), "choked: nothing asked");
    let bytes = msgs(&[
        Message::AllowedFast { piece: 7 },
        Message::AllowedFast { piece: 64 },
        Message::AllowedFast { piece: u32::MAX },
    ]);
    feed(&mut t, k, &bytes, now).unwrap();
    assert_eq!(t.peers[k].fast.allowed_in, [P(7)]);
    assert_eq!(t.peers[k].fast.junk, 2);
    let asked: Vec<u32> = t.peers[k]
        .inflight
        .iter()
        .map(|r| r.block.piece.0)
        .collect();
    assert_eq!(asked, [7, 7], "both blocks of piece 7 and nothing else");
    // Rejected while choked: the piece is no longer taken as allowed.
    feed(
        &mut t,
        k,
        &msgs(&[reject(P(7), 0), reject(P(7), 16384)]),
        now,
    )
    .unwrap();
    assert!(t.peers[k].fast.allowed_in.is_empty());
    assert!(t.peers[k].inflight.is_empty());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn suggested_pieces_are_asked_for_first_and_bad_suggestions_ignored() {
    let now = Instant::now();
    let (mut t, k, dir) = fast_leecher("fast-suggest", false, now);
    let bytes = msgs(&[
        Message::Suggest { piece: 40 },
        Message::Suggest { piece: 1000 },
        Message::Unchoke,
    ]);
    feed(&mut t, k, &bytes, now).unwrap();
    assert_eq!(t.peers[k].fast.suggested, [P(40)]);
    let asked: Vec<u32> = t.peers[k]
        .inflight
        .iter()
        .map(|r| r.block.piece.0)
        .collect();
    assert_eq!(&asked[..2], [40, 40]);
    assert!(asked.len() > 2, "then the usual order");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn fast_messages_from_a_peer_without_the_bit_close_it() {
    let f = fixture(64 * 32768, 32768);
    let dir = temp_dir("fast-nobit");
    let now = Instant::now();
    let mut t = torrent(&f, &dir, false, 5, now);
    for (i, m) in [
        Message::HaveAll,
        Message::HaveNone,
        Message::Suggest { piece: 1 },
        reject(P(0), 0),
        Message::AllowedFast { piece: 1 },
    ]
    .into_iter()
    .enumerate()
    {
        let k = t.add_peer(ConnToken(i), "127.0.0.1:5".parse().unwrap(), false, now);
        let mut bytes = handshake([9; 20], [6 + i as u8; 20], true);
        m.encode(&mut bytes);
        assert_eq!(
            feed(&mut t, k, &bytes, now),
            Err(PeerError::Fast("fast message without the fast bit")),
            "{m:?}"
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_fast_peers_reqq_is_taken_whole() {
    let f = fixture(64 * 32768, 32768);
    let dir = temp_dir("fast-reqq");
    let now = Instant::now();
    let mut t = torrent(&f, &dir, false, 5, now);
    let ext = b"\x00d4:reqqi100ee";
    for (i, fast) in [(1, true), (2, false)] {
        let k = t.add_peer(ConnToken(i), "127.0.0.1:5".parse().unwrap(), false, now);
        let mut bytes = if fast {
            fast_handshake([i as u8; 20], true)
        } else {
            handshake([9; 20], [i as u8; 20], true)
        };
        Message::Unknown {
            id: wire::EXTENDED_ID,
            payload: ext,
        }
        .encode(&mut bytes);
        feed(&mut t, k, &bytes, now).unwrap();
        assert_eq!(t.peers[k].max_requests, if fast { 100 } else { 99 });
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_fast_requester_that_never_reads_is_closed_with_its_queue_bounded() {
    let f = fixture(64 * 32768, 32768);
    let dir = temp_dir("fast-no-read");
    let now = Instant::now();
    let mut t = torrent(&f, &dir, true, 1, now);
    let k = t.add_peer(ConnToken(1), "127.0.0.1:1".parse().unwrap(), false, now);
    feed(&mut t, k, &fast_handshake([6; 20], false), now).unwrap();
    // Choked, never reading: every request is rejected into its queue.
    let other = (0..64)
        .map(P)
        .find(|p| !t.peers[k].fast.allowed_for_them(*p))
        .unwrap();
    let flood = msgs(&vec![request(other, 0); 20_000]);
    let mut src = &flood[..];
    let mut result = Ok(());
    while !src.is_empty() && result.is_ok() {
        t.read_peer_from(k, &mut src).unwrap().unwrap();
        result = t.on_readable(k, now);
        let cap = t.cfg.send_watermark + 16384 + crate::fast::REJECT_ROOM + 17;
        assert!(t.peers[k].send.len() <= cap);
    }
    assert_eq!(result, Err(PeerError::RequestFlood));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn two_fast_torrents_exchange_a_whole_torrent() {
    // Both ends speak BEP 6: have all / have none, allowed fast, rejects.
    let f = fixture(300_000, 32768);
    let (sd, ld) = (temp_dir("fast-seed"), temp_dir("fast-leech"));
    let now = Instant::now();
    let mut seeder = torrent(&f, &sd, true, 1, now);
    let mut leecher = torrent(&f, &ld, false, 2, now);
    let sk = seeder.add_peer(ConnToken(1), "127.0.0.1:1".parse().unwrap(), false, now);
    let lk = leecher.add_peer(ConnToken(1), "127.0.0.1:2".parse().unwrap(), true, now);
    exchange_until_done(&mut leecher, lk, &mut seeder, sk, now);
    assert!(seeder.peers[sk].fast.enabled && leecher.peers[lk].fast.enabled);
    assert!(!seeder.peers[sk].fast.allowed_out.is_empty());
    assert_downloaded(&f, &ld);
    std::fs::remove_dir_all(sd).unwrap();
    std::fs::remove_dir_all(ld).unwrap();
}
