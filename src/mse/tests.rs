#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests may panic

use super::*;

const HASH: [u8; 20] = [7; 20];

fn secret(b: u8) -> [u8; SECRET_LEN] {
    let mut s = [b; SECRET_LEN];
    s[0] = 0x5a;
    s
}

fn ours(req2: &[u8; 20]) -> Option<[u8; 20]> {
    (*req2 == req2_hash(&HASH)).then_some(HASH)
}

/// Run both sides against each other, moving `step` bytes at a time each
/// way, until both are done or one fails. Returns the two results and the
/// bytes of payload each side saw after its exchange.
fn run(
    a: &mut Handshake,
    b: &mut Handshake,
    step: usize,
) -> (Result<(), MseError>, Result<(), MseError>) {
    let mut to_b: Vec<u8> = Vec::new();
    let mut to_a: Vec<u8> = Vec::new();
    for _ in 0..100_000 {
        if let Some(o) = a.poll_transmit() {
            to_b.extend(o);
        }
        if let Some(o) = b.poll_transmit() {
            to_a.extend(o);
        }
        if a.is_done() && b.is_done() && to_a.is_empty() && to_b.is_empty() {
            return (Ok(()), Ok(()));
        }
        if a.is_done() && b.is_done() {
            // Leftover bytes would be payload; none is expected here.
            panic!("bytes left over: {} to A, {} to B", to_a.len(), to_b.len());
        }
        let mut moved = false;
        if !to_b.is_empty() && !b.is_done() {
            let n = step.min(to_b.len());
            match b.handle_input(&to_b[..n], ours) {
                Ok(k) => {
                    to_b.drain(..k);
                    moved |= k > 0;
                }
                Err(e) => return (Ok(()), Err(e)),
            }
        }
        if !to_a.is_empty() && !a.is_done() {
            let n = step.min(to_a.len());
            match a.handle_input(&to_a[..n], |_| panic!("initiator looked up")) {
                Ok(k) => {
                    to_a.drain(..k);
                    moved |= k > 0;
                }
                Err(e) => return (Err(e), Ok(())),
            }
        }
        if !moved && a.poll_transmit_peek() == 0 && b.poll_transmit_peek() == 0 {
            panic!("stalled: a {a:?}, b {b:?}");
        }
    }
    panic!("did not finish");
}

impl Handshake {
    fn poll_transmit_peek(&self) -> usize {
        self.out.len()
    }
}

fn pair(pad_a: usize, pad_b: usize, pa: Policy, pb: Policy) -> (Handshake, Handshake) {
    let now = Instant::now();
    let a = Handshake::initiator(HASH, pa, secret(1), &vec![0xAA; pad_a], now);
    let b = Handshake::responder(pb, secret(2), &vec![0xBB; pad_b], now);
    (a, b)
}

/// Both sides finished: check they agree and their ciphers pair up.
fn check_done(a: Handshake, b: Handshake, method: Method, ia: &[u8]) {
    let mut da = a.finish().unwrap();
    let mut db = b.finish().unwrap();
    assert_eq!(da.method, method);
    assert_eq!(db.method, method);
    assert_eq!(db.info_hash, HASH);
    assert_eq!(db.initial, ia);
    assert!(da.initial.is_empty());
    let mut msg = *b"hello, encrypted world";
    da.enc.apply(&mut msg);
    assert_ne!(&msg, b"hello, encrypted world");
    db.dec.apply(&mut msg);
    assert_eq!(&msg, b"hello, encrypted world");
    db.enc.apply(&mut msg);
    da.dec.apply(&mut msg);
    assert_eq!(&msg, b"hello, encrypted world");
}

#[test]
fn both_sides_agree_byte_by_byte_at_the_padding_extremes() {
    for (pad_a, pad_b) in [(0, 0), (512, 512), (0, 512), (512, 0), (17, 300)] {
        // Both allow plaintext: the payload goes in the clear (the
        // handshake was obfuscated all the same); RC4 when required.
        for (policy, method) in [
            (Policy::Prefer, Method::Plain),
            (Policy::Require, Method::Rc4),
        ] {
            let (mut a, mut b) = pair(pad_a, pad_b, policy, policy);
            assert_eq!(run(&mut a, &mut b, 1), (Ok(()), Ok(())));
            check_done(a, b, method, b"");
        }
    }
}

#[test]
fn both_sides_agree_in_any_chunk_size() {
    for step in [2, 3, 7, 20, 95, 96, 97, 500, 4096] {
        let (mut a, mut b) = pair(200, 100, Policy::Require, Policy::Prefer);
        assert_eq!(run(&mut a, &mut b, step), (Ok(()), Ok(())));
        check_done(a, b, Method::Rc4, b"");
    }
}

#[test]
fn padding_over_512_is_cut_to_the_limit() {
    let (mut a, mut b) = pair(2000, 2000, Policy::Prefer, Policy::Prefer);
    assert_eq!(a.poll_transmit_peek(), KEY_LEN + MAX_PAD);
    assert_eq!(run(&mut a, &mut b, 64), (Ok(()), Ok(())));
}

#[test]
fn initial_payload_reaches_the_responder_decrypted() {
    let hs = [0x13u8; 68];
    for step in [1, 50, 4096] {
        let (a, mut b) = pair(5, 5, Policy::Prefer, Policy::Require);
        let mut a = a.with_initial_payload(&hs);
        assert_eq!(run(&mut a, &mut b, step), (Ok(()), Ok(())));
        check_done(a, b, Method::Rc4, &hs);
    }
}

#[test]
fn unknown_info_hash_is_a_clear_error() {
    let now = Instant::now();
    let mut a = Handshake::initiator([9; 20], Policy::Prefer, secret(1), &[], now);
    let mut b = Handshake::responder(Policy::Prefer, secret(2), &[], now);
    let (ra, rb) = run(&mut a, &mut b, 1);
    assert_eq!(ra, Ok(()));
    assert_eq!(rb, Err(MseError::UnknownInfoHash));
    assert!(MseError::UnknownInfoHash.to_string().contains("info-hash"));
    // Failed stays failed.
    assert_eq!(
        b.handle_input(&[0; 10], ours),
        Err(MseError::UnknownInfoHash)
    );
    assert!(b.finish().is_none());
}

#[test]
fn prefer_chooses_plaintext_when_offered_and_require_only_rc4() {
    assert_eq!(
        Policy::Prefer.select(CRYPTO_RC4 | CRYPTO_PLAIN),
        Some(Method::Plain)
    );
    assert_eq!(Policy::Prefer.select(CRYPTO_RC4), Some(Method::Rc4));
    assert_eq!(
        Policy::Require.select(CRYPTO_RC4 | CRYPTO_PLAIN),
        Some(Method::Rc4)
    );
    assert_eq!(Policy::Prefer.select(CRYPTO_PLAIN), Some(Method::Plain));
    assert_eq!(Policy::Require.select(CRYPTO_PLAIN), None);
    assert_eq!(Policy::Require.select(CRYPTO_RC4 | 0xF0), Some(Method::Rc4));
    assert_eq!(Policy::Prefer.select(0x100), None);
    assert_eq!(Policy::Require.provide(), CRYPTO_RC4);
    assert_eq!(Policy::Prefer.provide(), CRYPTO_RC4 | CRYPTO_PLAIN);
}

/// Play the initiator by hand up to step 3, with our own crypto_provide,
/// PadC and IA lengths; returns the responder's result.
fn responder_sees_step3(provide: u32, pad_c: u16, vc: [u8; 8]) -> Result<Handshake, MseError> {
    let now = Instant::now();
    let mut b = Handshake::responder(Policy::Require, secret(2), &[], now);
    let a = Handshake::initiator(HASH, Policy::Prefer, secret(1), &[], now);
    let ya = a.public_key();
    b.handle_input(&ya, ours)?;
    let yb = b.poll_transmit().unwrap();
    let mut a2 = Handshake::initiator(HASH, Policy::Prefer, secret(1), &[], now);
    a2.poll_transmit();
    a2.handle_input(&yb, |_| None)?;
    let s = a2.s;
    let mut msg = Vec::new();
    msg.extend_from_slice(&hash(&[b"req1", &s]));
    msg.extend_from_slice(&xor20(&hash(&[b"req2", &HASH]), &hash(&[b"req3", &s])));
    let mut tail = Vec::new();
    tail.extend_from_slice(&vc);
    tail.extend_from_slice(&provide.to_be_bytes());
    tail.extend_from_slice(&pad_c.to_be_bytes());
    tail.extend(std::iter::repeat_n(0, usize::from(pad_c).min(600)));
    tail.extend_from_slice(&0u16.to_be_bytes());
    Cipher::new(&hash(&[b"keyA", &s, &HASH])).apply(&mut tail);
    msg.extend(tail);
    b.handle_input(&msg, ours)?;
    Ok(b)
}

#[test]
fn require_refuses_a_plaintext_only_offer() {
    assert_eq!(
        responder_sees_step3(CRYPTO_PLAIN, 0, VC).unwrap_err(),
        MseError::NoCommonMethod
    );
    let b = responder_sees_step3(CRYPTO_RC4, 0, VC).unwrap();
    assert!(b.is_done());
    assert_eq!(b.finish().unwrap().method, Method::Rc4);
}

#[test]
fn wrong_verification_constant_and_long_padding_are_refused() {
    assert_eq!(
        responder_sees_step3(CRYPTO_RC4, 0, [1; 8]).unwrap_err(),
        MseError::BadVc
    );
    assert_eq!(
        responder_sees_step3(CRYPTO_RC4, 513, VC).unwrap_err(),
        MseError::PadTooLong
    );
    assert!(responder_sees_step3(CRYPTO_RC4, 512, VC).unwrap().is_done());
}

#[test]
fn a_flood_without_sync_marker_fails_at_the_limit_with_bounded_memory() {
    let now = Instant::now();
    let mut b = Handshake::responder(Policy::Prefer, secret(2), &[], now);
    let flood = vec![0xABu8; 1 << 20];
    let mut fed = 0;
    let err = loop {
        // Byte by byte up to a point, then in big chunks.
        let n = if fed < 700 { 1 } else { 65536 };
        match b.handle_input(&flood[fed..fed + n], ours) {
            Ok(k) => {
                assert!(b.buffered() <= MAX_PAD + 20, "buffered {}", b.buffered());
                fed += k;
                assert!(fed < flood.len(), "never failed");
            }
            Err(e) => break e,
        }
    };
    assert_eq!(err, MseError::NoSync);
    // Ya, then the marker may start at most 512 bytes in.
    assert!(fed <= KEY_LEN + MAX_PAD + 20, "took {fed} bytes");

    // The initiator is bounded the same way.
    let mut a = Handshake::initiator(HASH, Policy::Prefer, secret(1), &[], now);
    let yb = Handshake::responder(Policy::Prefer, secret(2), &[], now).public_key();
    a.handle_input(&yb, |_| None).unwrap();
    let err = a.handle_input(&flood, |_| None).unwrap_err();
    assert_eq!(err, MseError::NoSync);
}

#[test]
fn truncated_exchanges_wait_then_time_out() {
    let now = Instant::now();
    let (mut a, mut b) = pair(10, 10, Policy::Prefer, Policy::Prefer);
    let ya = a.poll_transmit().unwrap();
    // Half of Ya: nothing to do yet, nothing sent.
    assert_eq!(b.handle_input(&ya[..50], ours), Ok(50));
    assert!(b.poll_transmit().is_none());
    assert!(!b.is_done());
    let deadline = b.poll_timeout();
    assert!(deadline >= now + TIMEOUT);
    assert_eq!(b.handle_timeout(deadline - TIMEOUT / 2), Ok(()));
    assert_eq!(b.handle_timeout(deadline), Err(MseError::Timeout));
    assert_eq!(b.handle_input(&ya[50..], ours), Err(MseError::Timeout));
    // The initiator, given a truncated Yb, waits too.
    assert_eq!(a.handle_input(&[1; 95], |_| None), Ok(95));
    assert!(a.poll_transmit().is_none());
}

#[test]
fn garbage_keys_are_refused() {
    let now = Instant::now();
    for key in [[0u8; KEY_LEN], [0xFF; KEY_LEN], PRIME] {
        let mut b = Handshake::responder(Policy::Prefer, secret(2), &[], now);
        assert_eq!(b.handle_input(&key, ours), Err(MseError::BadKey));
        let mut a = Handshake::initiator(HASH, Policy::Prefer, secret(1), &[], now);
        assert_eq!(a.handle_input(&key, |_| None), Err(MseError::BadKey));
    }
    let mut one = [0u8; KEY_LEN];
    one[KEY_LEN - 1] = 1;
    let mut b = Handshake::responder(Policy::Prefer, secret(2), &[], now);
    assert_eq!(b.handle_input(&one, ours), Err(MseError::BadKey));
}

#[test]
fn garbage_after_a_good_key_never_panics_and_ends_in_an_error() {
    // A tiny xorshift for reproducible garbage.
    let mut x = 0x1234_5678_9abc_def0u64;
    let now = Instant::now();
    for round in 0..50 {
        let mut b = Handshake::responder(Policy::Prefer, secret(3), &[], now);
        let mut junk = vec![0u8; 2000];
        for byte in junk.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *byte = x as u8;
        }
        junk[0] = 0x10; // below P
        let r = b.handle_input(&junk[..700 + round * 20], ours);
        assert!(r.is_err() || !b.is_done(), "{r:?}");
    }
}

#[test]
fn payload_after_the_exchange_is_not_taken() {
    let (mut a, mut b) = pair(3, 3, Policy::Prefer, Policy::Prefer);
    let ya = a.poll_transmit().unwrap();
    b.handle_input(&ya, ours).unwrap();
    let yb = b.poll_transmit().unwrap();
    a.handle_input(&yb, |_| None).unwrap();
    let mut step3 = a.poll_transmit().unwrap();
    step3.extend_from_slice(b"PAYLOAD");
    let k = b.handle_input(&step3, ours).unwrap();
    assert_eq!(k, step3.len() - 7);
    assert!(b.is_done());
    let mut step4 = b.poll_transmit().unwrap();
    step4.extend_from_slice(b"MORE");
    let k = a.handle_input(&step4, |_| None).unwrap();
    assert_eq!(k, step4.len() - 4);
    assert!(a.is_done());
}

#[test]
fn plaintext_prefix_detection() {
    assert!(could_be_plaintext(b""));
    assert!(could_be_plaintext(b"\x13Bit"));
    assert!(could_be_plaintext(b"\x13BitTorrent protocol\0\0\0"));
    assert!(!could_be_plaintext(b"\x13Bat"));
    assert!(!could_be_plaintext(&[0x8f]));
}

#[test]
fn a_plaintext_answer_to_our_key_fails_at_once() {
    let now = Instant::now();
    let mut a = Handshake::initiator(HASH, Policy::Prefer, secret(1), &[], now);
    let mut hs = b"\x13BitTorrent protocol".to_vec();
    hs.extend_from_slice(&[0; 48]);
    // Nothing decided on 19 bytes; the 20th tells.
    assert_eq!(a.handle_input(&hs[..19], |_| None), Ok(19));
    assert_eq!(
        a.handle_input(&hs[19..], |_| None),
        Err(MseError::PlaintextAnswer)
    );
}
