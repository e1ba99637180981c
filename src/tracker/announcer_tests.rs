use super::*;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn ok(interval: u32) -> AnnounceResponse {
    AnnounceResponse {
        interval,
        min_interval: None,
        peers: Vec::new(),
        warning: None,
        complete: None,
        incomplete: None,
        tracker_id: None,
    }
}

fn tiers(spec: &[&[&str]]) -> Vec<Vec<String>> {
    spec.iter()
        .map(|t| t.iter().map(|s| s.to_string()).collect())
        .collect()
}

/// An announcer with one tracker that has already accepted `started` at
/// `t0`, with interval 1800.
fn started(t0: Instant) -> Announcer {
    let mut a = Announcer::new(tiers(&[&["http://a/"]]), t0);
    let (url, ev) = a.poll_announce(t0).unwrap();
    assert_eq!(ev, Event::Started);
    a.on_success(t0, &url, &ok(1800));
    a
}

#[test]
fn first_announce_is_started_then_regular_at_interval() {
    let t0 = Instant::now();
    let mut a = Announcer::new(tiers(&[&["http://a/"]]), t0);
    assert_eq!(a.poll_timeout(), Some(t0));
    assert_eq!(
        a.poll_announce(t0),
        Some(("http://a/".to_string(), Event::Started))
    );
    assert_eq!(a.poll_announce(t0), None, "one in flight at a time");
    assert_eq!(a.poll_timeout(), None);
    a.on_success(t0 + secs(1), "http://a/", &ok(900));
    assert_eq!(a.poll_timeout(), Some(t0 + secs(901)));
    assert_eq!(a.poll_announce(t0 + secs(900)), None);
    assert_eq!(
        a.poll_announce(t0 + secs(901)),
        Some(("http://a/".to_string(), Event::None))
    );
}

#[test]
fn min_interval_is_respected_when_longer_than_interval() {
    let t0 = Instant::now();
    let mut a = Announcer::new(tiers(&[&["http://a/"]]), t0);
    a.poll_announce(t0).unwrap();
    let mut r = ok(60);
    r.min_interval = Some(120);
    a.on_success(t0, "http://a/", &r);
    assert_eq!(a.poll_timeout(), Some(t0 + secs(120)));
}

#[test]
fn failure_tries_next_url_then_next_tier_promptly() {
    let t0 = Instant::now();
    let mut a = Announcer::new(tiers(&[&["http://a1/", "http://a2/"], &["http://b/"]]), t0);
    let (u, _) = a.poll_announce(t0).unwrap();
    assert_eq!(u, "http://a1/");
    a.on_failure(t0, &u, &TrackerError::Timeout);
    let (u, _) = a.poll_announce(t0).unwrap();
    assert_eq!(u, "http://a2/");
    a.on_failure(t0, &u, &TrackerError::Failure("nope".into()));
    let (u, ev) = a.poll_announce(t0).unwrap();
    assert_eq!(u, "http://b/");
    assert_eq!(ev, Event::Started);
    a.on_success(t0, &u, &ok(1800));
    // The next round starts again from the first tier (BEP 12).
    let (u, ev) = a.poll_announce(t0 + secs(1800)).unwrap();
    assert_eq!(u, "http://a1/");
    assert_eq!(ev, Event::Started, "a1 never accepted started");
}

#[test]
fn successful_url_moves_to_front_of_its_tier() {
    let t0 = Instant::now();
    let mut a = Announcer::new(tiers(&[&["http://a1/", "http://a2/", "http://a3/"]]), t0);
    let (u, _) = a.poll_announce(t0).unwrap();
    a.on_failure(t0, &u, &TrackerError::Io("refused".into()));
    let (u, _) = a.poll_announce(t0).unwrap();
    a.on_failure(t0, &u, &TrackerError::Io("refused".into()));
    let (u, _) = a.poll_announce(t0).unwrap();
    assert_eq!(u, "http://a3/");
    a.on_success(t0, &u, &ok(1800));
    assert_eq!(a.tiers()[0], ["http://a3/", "http://a1/", "http://a2/"]);
    let (u, ev) = a.poll_announce(t0 + secs(1800)).unwrap();
    assert_eq!((u.as_str(), ev), ("http://a3/", Event::None));
}

#[test]
fn back_off_grows_from_a_floor_to_a_cap_and_resets_on_success() {
    let t0 = Instant::now();
    let mut a = Announcer::new(tiers(&[&["http://a/"], &["http://b/"]]), t0);
    let mut now = t0;
    let mut waits = Vec::new();
    for _ in 0..10 {
        for _ in 0..2 {
            let (u, _) = a.poll_announce(now).expect("due");
            a.on_failure(now, &u, &TrackerError::Timeout);
        }
        let next = a.poll_timeout().unwrap();
        waits.push(next - now);
        assert_eq!(a.poll_announce(next - Duration::from_millis(1)), None);
        now = next;
    }
    assert_eq!(
        waits,
        [15, 30, 60, 120, 240, 480, 960, 1800, 1800, 1800].map(secs)
    );
    let (u, _) = a.poll_announce(now).unwrap();
    a.on_success(now, &u, &ok(600));
    let (u, _) = a.poll_announce(now + secs(600)).unwrap();
    a.on_failure(now + secs(600), &u, &TrackerError::Timeout);
    let (u, _) = a.poll_announce(now + secs(600)).unwrap();
    a.on_failure(now + secs(600), &u, &TrackerError::Timeout);
    assert_eq!(a.poll_timeout(), Some(now + secs(615)), "back to the floor");
}

#[test]
fn jittered_back_off_stays_within_a_quarter_above_base() {
    let t0 = Instant::now();
    let mut a = Announcer::with_seed(tiers(&[&["http://a/"]]), t0, 42);
    let (u, _) = a.poll_announce(t0).unwrap();
    a.on_failure(t0, &u, &TrackerError::Timeout);
    let wait = a.poll_timeout().unwrap() - t0;
    assert!(
        wait >= secs(15) && wait <= Duration::from_millis(18_750),
        "{wait:?}"
    );
}

#[test]
fn shuffle_keeps_every_url_in_its_tier() {
    let t0 = Instant::now();
    let spec = tiers(&[&["1", "2", "3", "4", "5"], &["6", "7"]]);
    let a = Announcer::with_seed(spec.clone(), t0, 7);
    for (shuffled, original) in a.tiers().iter().zip(&spec) {
        let mut s = shuffled.clone();
        s.sort();
        assert_eq!(&s, original);
    }
}

#[test]
fn completed_is_sent_promptly_once() {
    let t0 = Instant::now();
    let mut a = started(t0);
    let t1 = t0 + secs(100);
    assert_eq!(a.poll_announce(t1), None);
    a.set_completed();
    assert!(a.poll_timeout().unwrap() <= t1);
    let (u, ev) = a.poll_announce(t1).unwrap();
    assert_eq!(ev, Event::Completed);
    a.on_success(t1, &u, &ok(1800));
    let (_, ev) = a.poll_announce(t1 + secs(1800)).unwrap();
    assert_eq!(ev, Event::None);
}

#[test]
fn completed_is_retried_after_a_failure() {
    let t0 = Instant::now();
    let mut a = started(t0);
    a.set_completed();
    let (u, ev) = a.poll_announce(t0 + secs(1)).unwrap();
    assert_eq!(ev, Event::Completed);
    a.on_failure(t0 + secs(1), &u, &TrackerError::Timeout);
    let (_, ev) = a.poll_announce(t0 + secs(16)).unwrap();
    assert_eq!(ev, Event::Completed);
}

#[test]
fn stop_sends_one_stopped_and_abandons_in_flight() {
    let t0 = Instant::now();
    let mut a = started(t0);
    let t1 = t0 + secs(1800);
    a.poll_announce(t1).unwrap();
    a.stop();
    assert!(!a.is_stopped_sent());
    assert_eq!(a.poll_timeout(), Some(t1));
    let (u, ev) = a.poll_announce(t1).unwrap();
    assert_eq!((u.as_str(), ev), ("http://a/", Event::Stopped));
    assert!(a.is_stopped_sent());
    assert!(!a.is_finished());
    assert_eq!(a.poll_announce(t1), None);
    a.on_failure(t1, &u, &TrackerError::Timeout);
    assert!(a.is_finished());
    assert_eq!(a.poll_announce(t1 + secs(10_000)), None);
    assert_eq!(a.poll_timeout(), None);
}

#[test]
fn stop_before_any_success_sends_nothing() {
    let t0 = Instant::now();
    let mut a = Announcer::new(tiers(&[&["http://a/"]]), t0);
    let (u, _) = a.poll_announce(t0).unwrap();
    a.stop();
    // The abandoned announce's late report is ignored.
    a.on_success(t0, &u, &ok(1800));
    assert!(a.is_stopped_sent());
    assert!(a.is_finished());
    assert_eq!(a.poll_announce(t0), None);
}

#[test]
fn want_peers_now_respects_min_interval() {
    let t0 = Instant::now();
    let mut a = Announcer::new(tiers(&[&["http://a/"]]), t0);
    a.poll_announce(t0).unwrap();
    let mut r = ok(1800);
    r.min_interval = Some(300);
    a.on_success(t0, "http://a/", &r);
    a.want_peers_now(t0 + secs(10));
    assert_eq!(a.poll_timeout(), Some(t0 + secs(300)));
    a.want_peers_now(t0 + secs(400));
    assert_eq!(a.poll_timeout(), Some(t0 + secs(300)));
    let (_, ev) = a.poll_announce(t0 + secs(400)).unwrap();
    assert_eq!(ev, Event::None);
}

#[test]
fn tracker_id_is_remembered_and_stale_reports_are_ignored() {
    let t0 = Instant::now();
    let mut a = Announcer::new(tiers(&[&["http://a/"]]), t0);
    let (u, _) = a.poll_announce(t0).unwrap();
    a.on_failure(t0, "http://other/", &TrackerError::Timeout);
    assert!(a.in_flight(), "report for another URL is ignored");
    let mut r = ok(1800);
    r.tracker_id = Some(b"xyz".to_vec());
    a.on_success(t0, &u, &r);
    assert_eq!(a.tracker_id(), Some(&b"xyz"[..]));
    a.on_success(t0, &u, &ok(30));
    assert_eq!(
        a.poll_timeout(),
        Some(t0 + secs(1800)),
        "duplicate report ignored"
    );
}

#[test]
fn no_trackers_means_nothing_to_do() {
    let t0 = Instant::now();
    let mut a = Announcer::new(vec![vec![], vec![]], t0);
    assert_eq!(a.poll_announce(t0), None);
    assert_eq!(a.poll_timeout(), None);
    a.stop();
    assert!(a.is_finished());
}

#[test]
fn the_last_error_is_kept_until_a_success() {
    let t0 = Instant::now();
    let mut a = Announcer::new(tiers(&[&["http://a/"], &["http://b/"]]), t0);
    assert_eq!(a.last_error(), None);
    let (url, _) = a.poll_announce(t0).unwrap();
    a.on_failure(t0, &url, &TrackerError::Failure("go away".into()));
    assert_eq!(a.last_error(), Some("tracker failure: go away"));
    let (url, _) = a.poll_announce(t0).unwrap();
    a.on_failure(t0, &url, &TrackerError::Timeout);
    assert_eq!(a.last_error(), Some("tracker timed out"));
    assert_eq!(a.failed_rounds(), 1);
    let (url, _) = a.poll_announce(t0 + secs(3600)).unwrap();
    a.on_success(t0 + secs(3600), &url, &ok(60));
    assert_eq!(a.last_error(), None);
}
