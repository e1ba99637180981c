use super::*;
use crate::torrent::Totals;

const MIB: u64 = 1 << 20;

fn view(phase: Phase) -> View {
    View {
        phase,
        done: 460 * MIB,
        total: 1024 * MIB,
        have: 460,
        num_pieces: 1024,
        down_rate: 52 * MIB,
        up_rate: 1200 * 1024,
        downloaded: 460 * MIB,
        uploaded: 20 * MIB,
        peers: 3,
        seeds: 1,
        elapsed: Duration::from_secs(12),
        ratio_goal: None,
        warnings: Vec::new(),
        dht_nodes: None,
        metadata: None,
    }
}

fn cols(s: &str) -> usize {
    s.chars().count()
}

#[test]
fn a_download_line_shows_bytes_rates_peers_elapsed_and_eta_when_wide() {
    let line = render(&view(Phase::Downloading), Some(160));
    for part in [
        " 44.9%",
        "460.0 MiB/1.0 GiB",
        "down 52.0 MiB/s",
        "up 1.2 MiB/s",
        "3 peers (1 seed)",
        "elapsed 12s",
        "eta 10s",
    ] {
        assert!(line.contains(part), "{part:?} missing: {line}");
    }
    // A bar, filled to the percentage.
    let bar = line.split('[').nth(1).unwrap().split(']').next().unwrap();
    assert!(bar.len() >= BAR_MIN && bar.len() <= BAR_MAX, "{line}");
    let filled = bar.chars().filter(|&c| c == '#').count();
    assert_eq!(
        filled,
        (bar.len() as f64 * 0.449).floor() as usize,
        "{line}"
    );
    assert!(cols(&line) < 160);
}

#[test]
fn every_width_fits_without_wrapping_and_keeps_the_essentials() {
    let mut v = view(Phase::Downloading);
    for width in [20, 40, 60, 80, 100, 120, 200] {
        let line = render(&v, Some(width));
        assert!(
            cols(&line) <= width - 3,
            "{width}: {line:?} is {} columns",
            cols(&line)
        );
        if width >= 60 {
            assert!(line.contains("44.9%"), "{width}: {line}");
            assert!(line.contains("down 52.0 MiB/s"), "{width}: {line}");
            assert!(line.contains("eta 10s"), "{width}: {line}");
        }
    }
    // At 80 columns: no bar, but the peers and the bytes.
    let line = render(&v, Some(80));
    assert!(!line.contains('['), "{line}");
    assert!(line.contains("3 peers (1 seed)"), "{line}");
    // With a warning, it is shown (cut to fit if it must be).
    v.warnings = vec!["peer 127.0.0.1:7190 refuses connections; retrying".into()];
    for width in [80, 120] {
        let line = render(&v, Some(width));
        assert!(cols(&line) <= width - 3, "{line}");
        assert!(
            line.contains("! peer 127.0.0.1:7190 refuses"),
            "{width}: {line}"
        );
    }
    assert!(render(&v, Some(160)).ends_with("refuses connections; retrying"));
}

#[test]
fn a_pipe_gets_everything_and_no_bar() {
    let mut v = view(Phase::Downloading);
    v.warnings = vec!["a".into(), "b".into()];
    let line = render(&v, None);
    assert!(!line.contains('['), "{line}");
    assert!(
        line.contains("elapsed 12s") && line.ends_with("! a; b"),
        "{line}"
    );
}

#[test]
fn singular_and_plural() {
    let mut v = view(Phase::Downloading);
    v.peers = 1;
    v.seeds = 0;
    assert!(render(&v, None).contains("1 peer (0 seeds)"));
    v.peers = 2;
    v.seeds = 1;
    assert!(render(&v, None).contains("2 peers (1 seed)"));
    v.phase = Phase::Seeding;
    v.peers = 1;
    assert!(
        render(&v, None).contains("  1 peer  "),
        "{}",
        render(&v, None)
    );
}

#[test]
fn eta_without_a_rate_is_a_dash_and_a_finished_download_says_done() {
    let mut v = view(Phase::Downloading);
    v.down_rate = 0;
    assert!(render(&v, None).contains("eta -"));
    v.done = v.total;
    let line = render(&v, Some(120));
    assert!(line.starts_with("100.0%"), "{line}");
    assert!(
        line.contains("1.0 GiB/1.0 GiB") && line.contains("done"),
        "{line}"
    );
}

#[test]
fn seeding_shows_uploaded_and_ratio_with_its_goal() {
    let mut v = view(Phase::Seeding);
    v.done = v.total;
    v.uploaded = 1536 * MIB;
    let line = render(&v, None);
    assert!(line.starts_with("seeding  "), "{line}");
    assert!(line.contains("uploaded 1.5 GiB"), "{line}");
    assert!(line.contains("ratio 1.50"), "{line}");
    assert!(!line.contains('%'), "complete: no percentage: {line}");
    v.ratio_goal = Some(2.0);
    assert!(render(&v, None).contains("ratio 1.50 of 2.00"));
    // Seeding part of the data shows how much.
    v.done = v.total / 2;
    assert!(render(&v, None).contains(" 50.0%"));
}

#[test]
fn checking_shows_how_far() {
    let mut v = view(Phase::Checking);
    v.done = 256 * MIB;
    let line = render(&v, Some(100));
    assert!(line.starts_with("checking   25.0%  ["), "{line}");
    assert!(line.contains("256.0 MiB/1.0 GiB"), "{line}");
}

#[test]
fn rates_cover_the_last_seconds_not_the_last_instant() {
    let t0 = Instant::now();
    let mut w = RateWindow::default();
    assert_eq!(w.rates(), (0, 0));
    w.add(t0, 0, 0);
    assert_eq!(w.rates(), (0, 0));
    // 1 MiB every 250 ms, in bursts: 4 MiB/s whatever the sampling.
    for i in 1..=8u64 {
        w.add(t0 + Duration::from_millis(250 * i), i * MIB, 0);
    }
    assert_eq!(w.rates().0, 4 * MIB);
    // A quiet 250 ms does not read as 0 B/s.
    w.add(t0 + Duration::from_millis(250 * 9), 8 * MIB, 0);
    let (down, _) = w.rates();
    assert!(down > 3 * MIB, "{down}");
    // Only the last few seconds count: after 10 s of silence, 0.
    w.add(t0 + Duration::from_secs(12), 8 * MIB, 5 * MIB);
    w.add(t0 + Duration::from_secs(13), 8 * MIB, 6 * MIB);
    let (down, up) = w.rates();
    assert_eq!(down, 0);
    assert!(up > 0 && up <= 6 * MIB, "{up}");
    // Samples every 5 s (plain lines) still give a rate.
    let mut w = RateWindow::default();
    w.add(t0, 0, 0);
    w.add(t0 + Duration::from_secs(5), 50 * MIB, 0);
    assert_eq!(w.rates().0, 10 * MIB);
    w.add(t0 + Duration::from_secs(10), 60 * MIB, 0);
    assert_eq!(w.rates().0, 2 * MIB);
}

fn status(left: u64, received: u64, uploaded: u64) -> Status {
    Status {
        have: ((1024 * MIB - left) / MIB) as u32,
        num_pieces: 1024,
        left,
        total_len: 1024 * MIB,
        down_rate: 0,
        up_rate: 0,
        peers: 2,
        seeds: 1,
        totals: Totals {
            downloaded: received,
            uploaded,
            received,
            ..Totals::default()
        },
        warnings: Warnings::default(),
        checking: None,
        fetching: None,
    }
}

#[test]
fn progress_views_use_the_window_and_a_fake_clock() {
    let t0 = Instant::now();
    let mut p = Progress::new(ProgressMode::Off).with_ratio_goal(Some(1.5));
    let v = p.view(&status(1000 * MIB, 24 * MIB, 0), t0, false);
    assert_eq!(
        (v.phase, v.down_rate, v.elapsed),
        (Phase::Downloading, 0, Duration::ZERO)
    );
    let v = p.view(
        &status(900 * MIB, 124 * MIB, 0),
        t0 + Duration::from_secs(2),
        false,
    );
    assert_eq!(v.down_rate, 50 * MIB);
    assert_eq!(v.elapsed, Duration::from_secs(2));
    assert_eq!(v.ratio_goal, Some(1.5));
    // The last view of a finished download is still the download's 100 %.
    let v = p.view(&status(0, 1024 * MIB, 0), t0 + Duration::from_secs(4), true);
    assert_eq!(
        (v.phase, v.done, v.total),
        (Phase::Downloading, v.total, 1024 * MIB)
    );
    assert!(render(&v, Some(100)).starts_with("100.0%"));
    // Seeding on after it (`--seed`): the seeding line.
    let v = p.view(
        &status(0, 1024 * MIB, 0),
        t0 + Duration::from_secs(5),
        false,
    );
    assert_eq!(v.phase, Phase::Seeding);
    // `seed` shows seeding, to the end.
    let mut p = Progress::new(ProgressMode::Off).seeding_only(true);
    let v = p.view(&status(0, 0, 0), t0, true);
    assert_eq!(v.phase, Phase::Seeding);
    // `seed` of part of the data is seeding too, not a download.
    let mut p = Progress::new(ProgressMode::Off).seeding_only(true);
    assert_eq!(
        p.view(&status(5 * MIB, 0, 0), t0, false).phase,
        Phase::Seeding
    );
}

#[test]
fn progress_is_due_at_its_interval() {
    let t0 = Instant::now();
    let mut p = Progress::new(ProgressMode::Json);
    assert!(p.due(t0));
    p.last = Some(t0);
    assert!(!p.due(t0 + Duration::from_millis(999)));
    assert!(p.due(t0 + Duration::from_secs(1)));
    assert!(!Progress::new(ProgressMode::Off).due(t0));
}

#[test]
fn warnings_say_why_nothing_happens() {
    let addr: SocketAddr = "127.0.0.1:7190".parse().unwrap();
    let w = Warnings {
        unreachable_peer: Some((addr, true)),
        more_unreachable: 2,
        ..Warnings::default()
    };
    let m = w.messages(true, 0);
    assert_eq!(
        m[0].1,
        "peer 127.0.0.1:7190 refuses connections (and 2 more); retrying"
    );
    let w = Warnings {
        unreachable_peer: Some((addr, false)),
        ..Warnings::default()
    };
    assert_eq!(
        w.messages(true, 0)[0].1,
        "cannot connect to peer 127.0.0.1:7190; retrying"
    );
    let one = Warnings {
        trackers_failing: Some(1),
        ..Warnings::default()
    };
    assert_eq!(one.messages(false, 0)[0].1, "tracker failing; retrying");
    let three = Warnings {
        trackers_failing: Some(3),
        last_tracker_error: Note::new("certificate expired"),
        ..Warnings::default()
    };
    assert_eq!(
        three.messages(true, 0)[0].1,
        "trackers: all 3 failing (last: certificate expired); retrying"
    );
    let alone = Warnings {
        no_peer_source: true,
        stalled: true,
        ..Warnings::default()
    };
    let m = alone.messages(true, 0);
    assert_eq!(m.len(), 1, "the stall is explained already: {m:?}");
    assert!(m[0].1.starts_with("no tracker and no --peer"), "{m:?}");
    // A seeder does not wait for pieces.
    assert!(alone.messages(false, 0).is_empty());
    let gone = Warnings {
        stalled: true,
        ..Warnings::default()
    };
    assert_eq!(
        gone.messages(true, 1)[0].1,
        "the connected peer has none of the missing pieces; waiting for a seeder"
    );
    assert!(
        gone.messages(true, 2)[0]
            .1
            .starts_with("none of the 2 connected peers")
    );
    assert!(
        gone.messages(true, 0)[0]
            .1
            .starts_with("no peers connected")
    );
    assert!(Warnings::default().messages(true, 0).is_empty());
    // While data flows, nothing is waiting: no warning takes the room.
    let flowing = Warnings {
        trackers_failing: Some(1),
        unreachable_peer: Some((addr, true)),
        ..Warnings::default()
    };
    assert!(flowing.messages(true, 2).is_empty());
    assert!(flowing.messages(false, 2).is_empty());
    assert_eq!(flowing.messages(false, 0).len(), 2);
}

#[test]
fn a_note_keeps_short_text_and_cuts_long_text_at_a_character() {
    assert_eq!(Note::new("go away").as_str(), "go away");
    assert!(Note::default().is_empty());
    let long = "é".repeat(100);
    let n = Note::new(&long);
    assert!(n.as_str().len() <= Note::CAP, "{}", n.as_str().len());
    assert!(n.as_str().ends_with('…'));
    assert!(n.as_str().starts_with("ééé"));
    let exact = "x".repeat(Note::CAP);
    assert_eq!(Note::new(&exact).as_str(), exact);
}

#[test]
fn json_objects_are_one_line_with_every_field() {
    let mut v = view(Phase::Downloading);
    v.warnings = vec!["say \"hi\"\n".into()];
    let o = json_object("status", &v, &[]);
    assert!(!o.contains('\n'));
    for field in [
        "\"event\":\"status\"",
        "\"state\":\"downloading\"",
        "\"elapsed\":12.0",
        "\"percent\":44.9",
        "\"bytes_done\":482344960",
        "\"bytes_total\":1073741824",
        "\"pieces_done\":460",
        "\"pieces_total\":1024",
        "\"downloaded\":482344960",
        "\"uploaded\":20971520",
        "\"down_rate\":54525952",
        "\"up_rate\":1228800",
        "\"peers\":3",
        "\"seeds\":1",
        "\"ratio\":0.020",
        "\"eta\":10",
        "\"dht_nodes\":null",
        "\"warnings\":[\"say \\\"hi\\\"\\u000a\"]",
    ] {
        assert!(o.contains(field), "{field} missing: {o}");
    }
    assert!(o.starts_with('{') && o.ends_with('}'));
    let done = json_object("done", &v, &[("complete", "true".into())]);
    assert!(done.ends_with(",\"complete\":true}"), "{done}");
    v.down_rate = 0;
    assert!(json_object("status", &v, &[]).contains("\"eta\":null"));
    v.dht_nodes = Some(87);
    assert!(json_object("status", &v, &[]).contains("\"dht_nodes\":87,"));
}

#[test]
fn the_line_shows_the_dht_node_count_when_wide() {
    let mut v = view(Phase::Downloading);
    v.dht_nodes = Some(87);
    assert!(render(&v, None).contains("dht 87"), "{}", render(&v, None));
    assert!(!render(&view(Phase::Downloading), None).contains("dht"));
}

#[test]
fn a_magnet_link_waiting_for_its_metadata_says_so() {
    let mut v = view(Phase::Downloading);
    v.done = 0;
    v.total = 0;
    v.num_pieces = 0;
    v.metadata = Some((1, 3, 2));
    let line = render(&v, Some(160));
    for part in [
        "fetching metadata",
        "1/3 pieces",
        "2 peers offer it",
        "3 peers",
    ] {
        assert!(line.contains(part), "{part:?} in {line:?}");
    }
    assert!(
        !line.contains('%'),
        "no percentage of an unknown size: {line}"
    );
    // Nothing offered yet: no piece count.
    v.metadata = Some((0, 0, 0));
    let line = render(&v, Some(160));
    assert!(
        line.contains("0 peers offer it") && !line.contains("pieces"),
        "{line}"
    );
}
