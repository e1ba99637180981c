use super::*;
use crate::geometry::BLOCK_LEN;
use crate::ids::PieceIndex as P;
use std::collections::{BTreeMap as HashMap, BTreeSet as HashSet};

/// Two blocks per piece keeps fixtures small.
const PIECE_LEN: u32 = 2 * BLOCK_LEN;

/// A picker whose piece `i` is available from `avail[i]` peers (one digit
/// per piece, libtorrent style: "2223333") and already verified where
/// `have` has a '1' (or nothing when `have` is empty). Returns the picker
/// and the peers' bitfields; peer `k` has piece `i` iff `avail[i] > k`.
fn setup(avail: &str, have: &str, seed: u64) -> (Picker, Vec<Bitfield>) {
    let n = avail.len() as u32;
    let g = Geometry::new(n as u64 * PIECE_LEN as u64, PIECE_LEN).unwrap();
    setup_with(g, avail, have, seed)
}

fn setup_with(g: Geometry, avail: &str, have: &str, seed: u64) -> (Picker, Vec<Bitfield>) {
    let n = g.num_pieces;
    assert_eq!(avail.len() as u32, n);
    let counts: Vec<u32> = avail.bytes().map(|c| (c - b'0') as u32).collect();
    let mut have_bf = Bitfield::new(n);
    for (i, c) in have.bytes().enumerate() {
        if c == b'1' {
            have_bf.set(P(i as u32));
        }
    }
    let mut picker = Picker::new(g, &have_bf, seed);
    let peers_n = counts.iter().copied().max().unwrap_or(0);
    let mut peers = Vec::new();
    for k in 0..peers_n {
        let mut bf = Bitfield::new(n);
        for (i, &c) in counts.iter().enumerate() {
            if c > k {
                bf.set(P(i as u32));
            }
        }
        picker.peer_has_all(&bf);
        peers.push(bf);
    }
    picker.check_invariants();
    (picker, peers)
}

fn pick(p: &mut Picker, peer: PeerKey, has: &Bitfield, max: usize) -> Vec<BlockRef> {
    let mut out = Vec::new();
    p.pick(peer, has, max, &mut out);
    p.check_invariants();
    out
}

fn pieces(blocks: &[BlockRef]) -> Vec<u32> {
    let mut v: Vec<u32> = blocks.iter().map(|b| b.piece.0).collect();
    v.dedup();
    v
}

/// Receive and verify every block in `blocks` from `peer`.
fn complete(p: &mut Picker, peer: PeerKey, blocks: &[BlockRef]) {
    let mut others = Vec::new();
    for &b in blocks {
        assert_eq!(p.on_block(peer, b, &mut others), BlockOutcome::New);
        if p.is_piece_received(b.piece) {
            p.on_piece_verified(b.piece);
        }
    }
    p.check_invariants();
}

#[test]
fn prefers_rarer_pieces() {
    // Pieces 0..4 are verified, so rarest-first applies.
    let (mut p, peers) = setup("4444333312", "1111", 1);
    let all = &peers[0];
    let got = pick(&mut p, PeerKey(7), all, 2);
    assert_eq!(pieces(&got), vec![8], "availability 1 first");
    let got = pick(&mut p, PeerKey(7), all, 2);
    assert_eq!(pieces(&got), vec![9], "then availability 2");
    let got = pick(&mut p, PeerKey(7), all, 8);
    let mut ps = pieces(&got);
    ps.sort();
    assert_eq!(ps, vec![4, 5, 6, 7], "then availability 3");
    assert!(pick(&mut p, PeerKey(7), all, 8).is_empty());
}

#[test]
fn rarest_first_only_among_pieces_the_peer_has() {
    let (mut p, peers) = setup("4444333312", "1111", 1);
    // Peer 2 lacks pieces 8 and 9 (availability 1 and 2).
    let got = pick(&mut p, PeerKey(2), &peers[2], 2);
    assert!((4..8).contains(&got[0].piece.0));
}

#[test]
fn ties_are_broken_randomly() {
    let mut first = HashSet::new();
    for seed in 0..40 {
        let (mut p, peers) = setup("11112222222222", "1111", seed);
        let got = pick(&mut p, PeerKey(0), &peers[0], 1);
        first.insert(got[0].piece.0);
    }
    assert!(first.iter().all(|&x| (4..14).contains(&x)));
    assert!(first.len() >= 4, "only {first:?} ever picked first");
}

#[test]
fn continues_partial_pieces_first() {
    let (mut p, peers) = setup("9999999991", "1111", 3);
    // Peer 1 starts the rarest piece (9) and gets only one of its blocks.
    let got = pick(&mut p, PeerKey(1), &peers[0], 1);
    assert_eq!(got[0].piece, P(9));
    // Peer 2 continues piece 9 before starting anything else.
    let got = pick(&mut p, PeerKey(2), &peers[0], 3);
    assert_eq!(
        got[0],
        BlockRef {
            piece: P(9),
            begin: BLOCK_LEN,
            len: BLOCK_LEN
        }
    );
    assert_ne!(got[1].piece, P(9));
}

#[test]
fn most_advanced_partial_piece_is_continued_first() {
    let g = Geometry::new(8 * 4 * BLOCK_LEN as u64, 4 * BLOCK_LEN).unwrap();
    let (mut p, peers) = setup_with(g, "33333333", "1111", 5);
    let a = pick(&mut p, PeerKey(1), &peers[0], 1); // one block of piece A requested
    let b = pick(&mut p, PeerKey(1), &peers[0], 4); // the rest of A, then B starts
    assert_eq!(b.iter().filter(|x| x.piece == a[0].piece).count(), 3);
    let piece_b = b[3].piece;
    // Drop A's last three requests; A has 1 block out, B has 1 block out.
    for x in &b[..3] {
        p.on_block_dropped(PeerKey(1), *x);
    }
    // Receive another block of B from peer 9 (unrequested but welcome).
    let mut others = Vec::new();
    let extra = g.block(piece_b, 3);
    assert_eq!(
        p.on_block(PeerKey(9), extra, &mut others),
        BlockOutcome::New
    );
    let got = pick(&mut p, PeerKey(2), &peers[0], 2);
    assert_eq!(pieces(&got), vec![piece_b.0], "B has fewer missing blocks");
}

#[test]
fn random_first_pieces() {
    // The rarest piece is 0, but with nothing verified the pick is random.
    let mut first = HashSet::new();
    for seed in 0..40 {
        let (mut p, peers) = setup("1999999999", "", seed);
        first.insert(pick(&mut p, PeerKey(0), &peers[0], 1)[0].piece);
    }
    assert!(first.len() >= 4, "only {first:?} ever picked first");
    // Once four pieces are verified, rarest-first takes over.
    for seed in 0..10 {
        let (mut p, peers) = setup("1999999999", "", seed);
        while p.have().count() < RANDOM_FIRST_PIECES {
            let got = pick(&mut p, PeerKey(0), &peers[0], 2);
            if got[0].piece == P(0) {
                // The random pick happened to find the rare piece: fine,
                // but then this seed tells us nothing.
                break;
            }
            complete(&mut p, PeerKey(0), &got);
        }
        if p.have().count() == RANDOM_FIRST_PIECES {
            assert_eq!(pick(&mut p, PeerKey(0), &peers[0], 1)[0].piece, P(0));
        }
    }
}

#[test]
fn respects_max_partial() {
    let (mut p, peers) = setup("3333333333", "1111", 2);
    p.set_max_partial(2);
    let got = pick(&mut p, PeerKey(0), &peers[0], 100);
    assert_eq!(got.len(), 4, "two pieces of two blocks");
    assert_eq!(p.num_partial(), 2);
    assert!(pick(&mut p, PeerKey(1), &peers[0], 100).is_empty());
    assert!(!p.in_endgame(), "unstarted pieces remain");
    // Finishing one piece frees a slot.
    complete(&mut p, PeerKey(0), &got[..2]);
    assert_eq!(p.num_partial(), 1);
    let more = pick(&mut p, PeerKey(1), &peers[0], 100);
    assert_eq!(more.len(), 2);
    assert_eq!(p.num_partial(), 2);
    // A late block for an unstarted piece is refused while the budget is full.
    let mut others = Vec::new();
    let unstarted = (4..10)
        .find(|&x| p.blocks_of(P(x)).iter().all(|s| *s == BlockState::Missing))
        .unwrap();
    let b = p.geometry.block(P(unstarted), 0);
    assert_eq!(
        p.on_block(PeerKey(3), b, &mut others),
        BlockOutcome::Unexpected
    );
}

#[test]
fn never_requests_same_block_twice_outside_endgame() {
    let (mut p, peers) = setup("1234567899876543211234", "", 11);
    let mut seen = HashSet::new();
    let mut rng = 1u64;
    while !p.in_endgame() {
        rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1);
        let k = (rng >> 33) as usize % peers.len();
        let got = pick(&mut p, PeerKey(k), &peers[k], 1 + (rng >> 40) as usize % 5);
        if got.is_empty() {
            continue;
        }
        for b in got {
            assert!(peers[k].get(b.piece), "picked a piece the peer lacks");
            // Only the pick that requests the last missing block may go on
            // to hand out endgame duplicates.
            assert!(seen.insert(b) || p.in_endgame(), "{b:?} requested twice");
        }
    }
    assert_eq!(seen.len(), 2 * 22, "every block requested once");
}

#[test]
fn endgame_duplicates_and_reports_cancels() {
    let (mut p, peers) = setup("3333", "", 4);
    let all = &peers[0];
    let a = pick(&mut p, PeerKey(1), all, 100);
    assert_eq!(a.len(), 8);
    assert!(p.in_endgame());
    // Peer 2 takes two duplicates, peer 3 then prefers the untouched ones.
    let b = pick(&mut p, PeerKey(2), all, 2);
    assert_eq!(b.len(), 2);
    let c = pick(&mut p, PeerKey(3), all, 6);
    assert_eq!(c.len(), 6);
    assert!(b.iter().all(|x| !c.contains(x)), "fewest requesters first");
    // Peer 2 never gets the same block twice.
    let b2 = pick(&mut p, PeerKey(2), all, 100);
    assert_eq!(b2.len(), 6);
    assert!(b2.iter().all(|x| !b.contains(x)));
    assert!(pick(&mut p, PeerKey(2), all, 100).is_empty());
    assert_eq!(
        p.blocks_of(b[0].piece)[b[0].index() as usize],
        BlockState::Requested { requesters: 2 }
    );
    // Peer 3 delivers a block that 1 and 2 also requested: cancel theirs.
    let mut others = Vec::new();
    assert_eq!(
        p.on_block(PeerKey(3), b2[0], &mut others),
        BlockOutcome::New
    );
    others.sort();
    assert_eq!(others, vec![PeerKey(1), PeerKey(2)]);
    assert_eq!(
        p.on_block(PeerKey(1), b2[0], &mut others),
        BlockOutcome::Duplicate
    );
    assert!(others.is_empty());
    p.check_invariants();
}

#[test]
fn endgame_ignores_pieces_nobody_has() {
    let (mut p, peers) = setup("1110", "", 4);
    let got = pick(&mut p, PeerKey(1), &peers[0], 100);
    assert_eq!(got.len(), 6);
    assert!(
        p.in_endgame(),
        "piece 3 has no source, the rest is requested"
    );
    assert_eq!(pick(&mut p, PeerKey(2), &peers[0], 100).len(), 6);
}

#[test]
fn dropped_requests_return_to_pool() {
    let (mut p, peers) = setup("2222", "1100", 4);
    let a = pick(&mut p, PeerKey(1), &peers[0], 1);
    p.on_block_dropped(PeerKey(1), a[0]);
    p.check_invariants();
    assert_eq!(
        p.num_partial(),
        0,
        "an untouched piece gives up its block state"
    );
    let again = pick(&mut p, PeerKey(2), &peers[0], 100);
    assert!(again.contains(&a[0]));
    assert_eq!(again.len(), 4);
    // Dropping a request the peer never made changes nothing.
    p.on_block_dropped(PeerKey(1), again[0]);
    assert_eq!(
        p.blocks_of(again[0].piece)[0],
        BlockState::Requested { requesters: 1 }
    );
    // A dropped block of a partial piece with data stays partial.
    let mut others = Vec::new();
    let (x, y) = (again[0], again[1]);
    assert_eq!(x.piece, y.piece);
    assert_eq!(p.on_block(PeerKey(2), x, &mut others), BlockOutcome::New);
    p.on_block_dropped(PeerKey(2), y);
    p.check_invariants();
    assert_eq!(
        p.blocks_of(y.piece),
        vec![BlockState::Received, BlockState::Missing]
    );
    assert_eq!(pick(&mut p, PeerKey(3), &peers[0], 1), vec![y]);
}

#[test]
fn dropping_first_endgame_requester_keeps_the_others() {
    let (mut p, peers) = setup("22", "", 4);
    let a = pick(&mut p, PeerKey(1), &peers[0], 100);
    let b = pick(&mut p, PeerKey(2), &peers[0], 100);
    assert_eq!(a.len(), 4);
    assert_eq!(b.len(), 4);
    p.on_block_dropped(PeerKey(1), a[0]);
    p.check_invariants();
    assert_eq!(
        p.blocks_of(a[0].piece)[0],
        BlockState::Requested { requesters: 1 }
    );
    let mut others = Vec::new();
    assert_eq!(p.on_block(PeerKey(2), a[0], &mut others), BlockOutcome::New);
    assert!(others.is_empty(), "peer 1 no longer has it requested");
}

#[test]
fn failed_piece_is_rerequested() {
    let (mut p, peers) = setup("22222", "1111", 4);
    let got = pick(&mut p, PeerKey(1), &peers[0], 100);
    assert_eq!(pieces(&got), vec![4]);
    let mut others = Vec::new();
    for &b in &got {
        assert_eq!(p.on_block(PeerKey(1), b, &mut others), BlockOutcome::New);
    }
    assert!(p.is_piece_received(P(4)));
    p.on_piece_failed(P(4));
    p.check_invariants();
    assert_eq!(p.blocks_of(P(4)), vec![BlockState::Missing; 2]);
    assert!(!p.have().get(P(4)));
    assert_eq!(pick(&mut p, PeerKey(2), &peers[0], 100), got);
    complete(&mut p, PeerKey(2), &got);
    assert!(p.is_complete());
}

#[test]
fn unexpected_and_duplicate_blocks() {
    let (mut p, peers) = setup("2222", "1000", 4);
    let mut others = Vec::new();
    let g = p.geometry;
    // A piece we have.
    assert_eq!(
        p.on_block(PeerKey(1), g.block(P(0), 0), &mut others),
        BlockOutcome::Unexpected
    );
    // Not a block of ours: misaligned, wrong length, out of range.
    let b = g.block(P(1), 0);
    let bad = [
        BlockRef { begin: 1, ..b },
        BlockRef { len: 100, ..b },
        BlockRef { piece: P(4), ..b },
        BlockRef {
            begin: PIECE_LEN,
            ..b
        },
        BlockRef {
            piece: P(u32::MAX),
            begin: u32::MAX,
            len: u32::MAX,
        },
    ];
    for x in bad {
        assert_eq!(
            p.on_block(PeerKey(1), x, &mut others),
            BlockOutcome::Unexpected,
            "{x:?}"
        );
        p.on_block_dropped(PeerKey(1), x);
    }
    let got = pick(&mut p, PeerKey(1), &peers[0], 1);
    assert_eq!(
        p.on_block(PeerKey(1), got[0], &mut others),
        BlockOutcome::New
    );
    assert_eq!(
        p.on_block(PeerKey(1), got[0], &mut others),
        BlockOutcome::Duplicate
    );
    assert_eq!(
        p.on_block(PeerKey(2), got[0], &mut others),
        BlockOutcome::Duplicate
    );
    // Out-of-range piece numbers elsewhere are ignored too.
    p.on_piece_verified(P(99));
    p.on_piece_failed(P(99));
    p.peer_has_piece(P(99));
    assert!(p.blocks_of(P(99)).is_empty());
    p.check_invariants();
}

#[test]
fn short_last_piece_blocks_correct() {
    let total = 2 * 3 * BLOCK_LEN as u64 + BLOCK_LEN as u64 + 100;
    let g = Geometry::new(total, 3 * BLOCK_LEN).unwrap();
    let (mut p, peers) = setup_with(g, "111", "", 9);
    let got = pick(&mut p, PeerKey(1), &peers[0], 100);
    assert_eq!(got.len(), 3 + 3 + 2);
    let last: Vec<_> = got.iter().filter(|b| b.piece == P(2)).copied().collect();
    assert_eq!(
        last,
        vec![
            BlockRef {
                piece: P(2),
                begin: 0,
                len: BLOCK_LEN
            },
            BlockRef {
                piece: P(2),
                begin: BLOCK_LEN,
                len: 100
            },
        ]
    );
    assert_eq!(got.iter().map(|b| b.len as u64).sum::<u64>(), total);
    complete(&mut p, PeerKey(1), &got);
    assert!(p.is_complete());
}

#[test]
fn peer_gone_decreases_availability() {
    let (mut p, peers) = setup("1222", "", 4);
    assert_eq!(p.availability(P(0)), 1);
    assert_eq!(p.availability(P(1)), 2);
    p.peer_gone(&peers[1]);
    p.check_invariants();
    assert_eq!(p.availability(P(1)), 1);
    p.peer_gone(&peers[0]);
    p.check_invariants();
    assert_eq!(
        (0..4).map(|x| p.availability(P(x))).collect::<Vec<_>>(),
        vec![0; 4]
    );
    assert!(!p.is_interesting(&Bitfield::new(4)));
    assert!(!p.in_endgame());
}

#[test]
fn have_messages_and_seeds_count_towards_availability() {
    let (mut p, _) = setup("0000", "", 4);
    let full = Bitfield::full(4);
    p.peer_has_all(&full);
    p.peer_has_piece(P(2));
    assert_eq!(p.availability(P(2)), 2);
    assert_eq!(p.availability(P(0)), 1);
    // A peer that became full through `have` messages leaves first.
    let mut grown = Bitfield::new(4);
    p.peer_has_all(&grown);
    for x in 0..4 {
        grown.set(P(x));
        p.peer_has_piece(P(x));
    }
    assert_eq!(p.availability(P(0)), 2);
    p.peer_gone(&grown);
    p.check_invariants();
    assert_eq!(
        (0..4).map(|x| p.availability(P(x))).collect::<Vec<_>>(),
        vec![1, 1, 2, 1]
    );
    p.peer_gone(&full);
    p.check_invariants();
    assert_eq!(
        (0..4).map(|x| p.availability(P(x))).collect::<Vec<_>>(),
        vec![0, 0, 1, 0]
    );
}

#[test]
fn interest_follows_what_we_lack() {
    let (mut p, _) = setup("1111111111", "1111111110", 4);
    let mut theirs = Bitfield::new(10);
    theirs.set(P(3));
    assert!(!p.is_interesting(&theirs));
    theirs.set(P(9));
    assert!(p.is_interesting(&theirs));
    p.on_piece_verified(P(9));
    assert!(!p.is_interesting(&theirs));
    assert!(p.is_complete());
    assert!(!p.in_endgame());
    p.check_invariants();
}

#[test]
fn empty_torrent_is_complete() {
    let g = Geometry::new(0, PIECE_LEN).unwrap();
    let mut p = Picker::new(g, &Bitfield::new(0), 1);
    assert!(p.is_complete());
    assert!(pick(&mut p, PeerKey(1), &Bitfield::new(0), 10).is_empty());
    p.peer_has_all(&Bitfield::new(0));
    p.peer_gone(&Bitfield::new(0));
    p.check_invariants();
}

/// Random operations against a model of who requested what.
#[test]
fn random_operation_sequences_keep_invariants() {
    let (mut endgame_picks, mut verified, mut failed) = (0, 0, 0);
    for seed in 0..30u64 {
        let g = Geometry::new(23 * 3 * BLOCK_LEN as u64 - 5000, 3 * BLOCK_LEN).unwrap();
        let n = g.num_pieces;
        let mut p = Picker::new(g, &Bitfield::new(n), seed);
        if seed % 3 == 0 {
            p.set_max_partial(3);
        }
        // Segments of 2 blocks (pieces of 3: a full and a half segment),
        // within a budget the engine would set.
        let seg_budget = if seed % 3 == 1 {
            p.set_segment_blocks(2);
            Some(4)
        } else {
            None
        };
        if let Some(b) = seg_budget {
            p.set_segment_budget(b);
        }
        let mut rng = seed.wrapping_mul(0x2545F4914F6CDD1D) | 1;
        let mut next = move |m: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % m
        };
        let mut peers: HashMap<PeerKey, Bitfield> = HashMap::new();
        // (peer, block) -> outstanding request, per the model.
        let mut outstanding: HashSet<(PeerKey, BlockRef)> = HashSet::new();
        let mut received: HashSet<BlockRef> = HashSet::new();
        let mut next_key = 0;
        let mut others = Vec::new();
        for _ in 0..3000 {
            match next(10) {
                0 if peers.len() < 6 => {
                    let mut bf = Bitfield::new(n);
                    let full = next(4) == 0;
                    for x in 0..n {
                        if full || next(3) != 0 {
                            bf.set(P(x));
                        }
                    }
                    p.peer_has_all(&bf);
                    peers.insert(PeerKey(next_key), bf);
                    next_key += 1;
                }
                1 if !peers.is_empty() => {
                    let k = *peers.keys().nth(next(peers.len() as u64) as usize).unwrap();
                    let bf = peers.remove(&k).unwrap();
                    for (q, b) in outstanding.clone() {
                        if q == k {
                            p.on_block_dropped(k, b);
                            outstanding.remove(&(q, b));
                        }
                    }
                    p.peer_gone(&bf);
                }
                2 if !peers.is_empty() => {
                    let k = *peers.keys().nth(next(peers.len() as u64) as usize).unwrap();
                    let x = next(n as u64) as u32;
                    if peers.get_mut(&k).unwrap().set(P(x)) {
                        p.peer_has_piece(P(x));
                    }
                }
                3..=5 if !peers.is_empty() => {
                    let k = *peers.keys().nth(next(peers.len() as u64) as usize).unwrap();
                    let endgame = p.in_endgame();
                    endgame_picks += endgame as u32;
                    let mut out = Vec::new();
                    p.pick(k, &peers[&k], next(8) as usize, &mut out);
                    for b in out {
                        assert!(peers[&k].get(b.piece));
                        assert!(!received.contains(&b), "picked a received block");
                        assert!(outstanding.insert((k, b)), "same block twice to one peer");
                        let dup = outstanding.iter().any(|&(q, c)| c == b && q != k);
                        assert!(
                            !dup || endgame || p.in_endgame(),
                            "duplicate outside endgame"
                        );
                    }
                }
                6 | 7 if !outstanding.is_empty() => {
                    let &(k, b) = outstanding
                        .iter()
                        .nth(next(outstanding.len() as u64) as usize)
                        .unwrap();
                    outstanding.remove(&(k, b));
                    if next(4) == 0 {
                        p.on_block_dropped(k, b);
                        continue;
                    }
                    assert_eq!(p.on_block(k, b, &mut others), BlockOutcome::New);
                    received.insert(b);
                    for &q in &others {
                        assert!(
                            outstanding.remove(&(q, b)),
                            "cancel for a request never made"
                        );
                    }
                    assert!(
                        outstanding.iter().all(|&(_, c)| c != b),
                        "a requester was not reported"
                    );
                    if p.is_piece_received(b.piece) {
                        received.retain(|c| c.piece != b.piece);
                        if next(5) == 0 {
                            p.on_piece_failed(b.piece);
                            failed += 1;
                        } else {
                            p.on_piece_verified(b.piece);
                            verified += 1;
                        }
                    }
                }
                _ => {}
            }
            p.check_invariants();
            if let Some(b) = seg_budget {
                assert!(p.open_segments() <= b, "segment budget exceeded");
            }
            for x in 0..n {
                let want: u32 = peers.values().filter(|bf| bf.get(P(x))).count() as u32;
                assert_eq!(p.availability(P(x)), want, "availability of {x}");
            }
        }
    }
    // The sequences reach every phase.
    assert!(
        endgame_picks > 50 && verified > 100 && failed > 10,
        "{endgame_picks} {verified} {failed}"
    );
}

#[test]
fn segment_budget_bounds_the_buffers_partial_pieces_hold() {
    // Pieces of 8 blocks in segments of 2; 3 segments may be open.
    let g = Geometry::new(4 * 8 * BLOCK_LEN as u64, 8 * BLOCK_LEN).unwrap();
    let (mut p, peers) = setup_with(g, "1111", "", 7);
    p.set_segment_blocks(2);
    p.set_segment_budget(3);
    let got = pick(&mut p, PeerKey(1), &peers[0], 100);
    // One piece, its first three segments: six blocks, not more.
    assert_eq!(got.len(), 6);
    assert!(got.iter().all(|b| b.piece == got[0].piece && b.index() < 6));
    assert_eq!(p.open_segments(), 3);
    // The first segment arrives whole: the cursor leaves it, a segment is
    // free, and the next pick takes the piece's fourth segment.
    let mut others = Vec::new();
    for b in &got[..2] {
        assert_eq!(p.on_block(PeerKey(1), *b, &mut others), BlockOutcome::New);
    }
    assert_eq!(p.open_segments(), 2);
    let more = pick(&mut p, PeerKey(1), &peers[0], 100);
    assert_eq!(more.len(), 2);
    assert!(
        more.iter()
            .all(|b| b.piece == got[0].piece && b.index() >= 6)
    );
    // A block out of order holds its segment until the cursor passes it.
    assert_eq!(
        p.on_block(PeerKey(1), got[4], &mut others),
        BlockOutcome::New
    );
    assert_eq!(p.open_segments(), 3);
    // A block that could not be stored is Missing again and picked anew.
    p.on_block_lost(got[4]);
    p.check_invariants();
    assert_eq!(p.blocks_of(got[0].piece)[4], BlockState::Missing);
    let again = pick(&mut p, PeerKey(1), &peers[0], 100);
    assert_eq!(again, vec![got[4]]);
    p.check_invariants();
}
