//! Tracker host names are resolved off the loop (`event_loop/resolver.rs`).
//!
//! - A name from `/etc/hosts` of a test network namespace: the leecher
//!   runs in its own namespace (`interop/lab.rs`) with a hosts file
//!   bind-mounted over `/etc/hosts` (`unshare --mount`), and finds its
//!   seeder through a tracker named only there. Needs root.
//! - A slow resolver (a lookup function that sleeps 3 s for one name) does
//!   not hold the loop: another torrent of the same session announces and
//!   downloads while the name is pending, and the waiting announce goes on
//!   when the answer comes.

mod common;
#[allow(dead_code)]
#[path = "interop/lab.rs"]
mod lab;

use common::*;
use piecemeal::event_loop::LookupFn;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const NAME: &str = "tracker.piecemeal.test";

#[test]
fn a_tracker_named_in_etc_hosts_of_a_namespace_is_found() {
    let lab = lab::Lab::new("res", 2);
    let (h1, h2) = (lab.host(1).clone(), lab.host(2).clone());
    let tport = 7070u16;
    let files = [("data.bin", 600_000usize)];
    let seed_dir = lab.dir("seed");
    write_files(&seed_dir, &files);
    // One info-hash, two announce URLs: the seeder's by address, the
    // leecher's by name.
    let by_ip = make_torrent(
        &seed_dir.join("data.bin"),
        &lab.path().join("ip.torrent"),
        &[format!("http://{}/announce", h1.addr(tport))],
        32 * 1024,
    );
    let by_name = make_torrent(
        &seed_dir.join("data.bin"),
        &lab.path().join("name.torrent"),
        &[format!("http://{NAME}:{tport}/announce")],
        32 * 1024,
    );
    let hosts = lab.path().join("hosts");
    std::fs::write(&hosts, format!("127.0.0.1 localhost\n{} {NAME}\n", h1.ip)).unwrap();

    let mut cmd = h1.command(BIN);
    cmd.args(["tracker", "--bind", &h1.ip.to_string()]).args([
        "--port",
        &tport.to_string(),
        "--interval",
        "30",
    ]);
    let tracker = Proc::spawn("tracker", cmd, lab.path());
    lab.watch_log("tracker", &tracker.log);
    let mut cmd = h1.command(BIN);
    cmd.args(["seed", by_ip.to_str().unwrap(), "--port", "6881"])
        .args(["--bind", &h1.ip.to_string(), "--verbose", "--machine"])
        .current_dir(&seed_dir);
    let seeder = Proc::spawn("seeder", cmd, lab.path());
    lab.watch_log("seeder", &seeder.log);
    // The tracker knows the seeder before the leecher asks.
    let answered = format!("tracker http://{}/announce: 0 peers", h1.addr(tport));
    lab.wait_until(Duration::from_secs(20), "seeder announce", || {
        Ok(seeder.log_text().contains(&answered))
    });

    let out = lab.dir("out");
    let script = format!(
        "mount --bind {} /etc/hosts && exec {BIN} download {} -o {} --port 6881 --bind {} --verbose --machine",
        hosts.display(),
        by_name.display(),
        out.display(),
        h2.ip
    );
    let mut cmd = h2.command("unshare");
    cmd.args(["--mount", "sh", "-c", &script]);
    let mut leecher = Proc::spawn("leecher", cmd, lab.path());
    lab.watch_log("leecher", &leecher.log);
    let code = leecher.wait(Duration::from_secs(60));
    let log = leecher.log_text();
    if code != 0 {
        lab.fail(&format!("leecher exited with {code}"));
    }
    assert!(
        log.contains(&format!("announcing to http://{NAME}:{tport}/announce")),
        "the leecher announced to the name:\n{log}"
    );
    assert!(
        log.contains(&format!("tracker http://{NAME}:{tport}/announce: 1 peers")),
        "the tracker gave the seeder:\n{log}"
    );
    assert_same_files(&seed_dir, &out, &files);
    // The namespace's hosts file was the leecher's alone.
    let ours = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    assert!(
        !ours.contains(NAME),
        "/etc/hosts of the test machine changed"
    );
    drop((tracker, seeder));
}

/// When the slow lookup started and ended, and every name asked.
#[derive(Default)]
struct Seen {
    names: Vec<String>,
    slow: Option<(Instant, Instant)>,
}

#[test]
fn a_slow_lookup_does_not_hold_another_torrents_announce_and_download() {
    let tmp = TempDir::new("resolver-slow");
    let (_tracker, tport) = start_tracker(&tmp);
    let seed_dir = tmp.join("seed");
    let files = [("x.bin", 700_000usize), ("y.bin", 900_000)];
    write_files(&seed_dir, &files);
    let by_ip = [format!("http://127.0.0.1:{tport}/announce")];
    let slow_name = "slow.piecemeal.test";
    let by_name = [format!("http://{slow_name}:{tport}/announce")];
    let t = |name: &str, trackers: &[String], file: &str| {
        make_torrent(&seed_dir.join(file), &tmp.join(name), trackers, 32 * 1024)
    };
    let x_seed = t("x-seed.torrent", &by_ip, "x.bin");
    let y = t("y.torrent", &by_ip, "y.bin");
    // The leecher's copy of x names its tracker by the slow name.
    let x_slow = t("x-slow.torrent", &by_name, "x.bin");

    let sport = free_port().to_string();
    let mut seeder = Proc::start(
        "seeder",
        &seed_dir,
        &[
            "seed",
            x_seed.to_str().unwrap(),
            y.to_str().unwrap(),
            "--port",
            &sport,
            "--bind",
            "127.0.0.1",
            "--verbose",
            // y takes about 1.5 s, so its download overlaps the 3 s lookup
            // whichever torrent's check ends first.
            "--upload-limit",
            "600K",
        ],
        tmp.path(),
    );
    let answered = format!("tracker http://127.0.0.1:{tport}/announce: 0 peers");
    let end = Instant::now() + Duration::from_secs(20);
    while seeder.log_text().matches(&answered).count() < 2 {
        assert!(
            Instant::now() < end,
            "seeder did not announce:\n{}",
            seeder.log_text()
        );
        assert!(seeder.child.try_wait().unwrap().is_none(), "seeder exited");
        std::thread::sleep(Duration::from_millis(20));
    }

    let seen = Arc::new(Mutex::new(Seen::default()));
    let s = seen.clone();
    let lookup = LookupFn(Arc::new(move |host: &str| {
        s.lock().unwrap().names.push(host.to_string());
        if host == slow_name {
            let start = Instant::now();
            std::thread::sleep(Duration::from_secs(3));
            s.lock().unwrap().slow = Some((start, Instant::now()));
            return Ok(vec![IpAddr::from([127, 0, 0, 1])]);
        }
        Err(std::io::Error::other("unknown test name"))
    }));
    let out = tmp.join("out");
    let mut o = piecemeal::client::ClientOptions::new(&x_slow, &out, true);
    o.more = vec![y.clone()];
    o.listen = "127.0.0.1:0".parse().unwrap();
    o.bind_ip = Some(IpAddr::from([127, 0, 0, 1]));
    o.lookup = Some(lookup);
    let mut session = piecemeal::client::prepare(&o).unwrap();
    let started = Instant::now();
    let run = std::thread::spawn(move || session.run().unwrap());

    // y arrives whole while x's tracker name is still being looked up.
    let want_y = std::fs::read(seed_dir.join("y.bin")).unwrap();
    let y_done = loop {
        if std::fs::read(out.join("y.bin")).is_ok_and(|got| got == want_y) {
            break Instant::now();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "y never completed"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let outcome = run.join().unwrap();
    assert!(outcome.complete, "both torrents complete: {outcome:?}");
    assert_same_files(&seed_dir, &out, &files);
    let seen = seen.lock().unwrap();
    let (slow_start, slow_end) = seen.slow.expect("the slow name was looked up");
    assert!(
        slow_start < y_done && y_done < slow_end,
        "y finished {:?} after the slow lookup began, which took {:?}",
        y_done.saturating_duration_since(slow_start),
        slow_end - slow_start
    );
    // The IP literal never went to the resolver; the name went once.
    assert_eq!(seen.names, vec![slow_name.to_string()]);
    drop(seeder);
}

#[test]
fn an_announce_waiting_for_a_hung_lookup_times_out_and_the_next_tier_is_tried() {
    let tmp = TempDir::new("resolver-hung");
    let (_tracker, tport) = start_tracker(&tmp);
    let by_ip = format!("http://127.0.0.1:{tport}/announce");
    let (seed_dir, torrent) = seed_data(
        &tmp,
        &[("z.bin", 300_000)],
        "z.bin",
        std::slice::from_ref(&by_ip),
        32 * 1024,
    );
    let (seeder, _) = start_seeder(&tmp, &seed_dir, &torrent, &["--verbose"]);
    let answered = format!("tracker {by_ip}: 0 peers");
    seeder.wait_log(&answered, Duration::from_secs(20));
    // The leecher's copy names a tracker whose lookup never comes back
    // (in time) first, the working one in the second tier.
    let hung = "hung.piecemeal.test";
    let leech_torrent = make_torrent(
        &seed_dir.join("z.bin"),
        &tmp.join("hung.torrent"),
        &[format!("http://{hung}:{tport}/announce"), by_ip],
        32 * 1024,
    );
    let calls = Arc::new(Mutex::new(0usize));
    let c = calls.clone();
    let lookup = LookupFn(Arc::new(move |host: &str| {
        assert_eq!(host, hung);
        *c.lock().unwrap() += 1;
        std::thread::sleep(Duration::from_secs(60));
        Ok(vec![IpAddr::from([127, 0, 0, 1])])
    }));
    let out = tmp.join("out");
    let mut o = piecemeal::client::ClientOptions::new(&leech_torrent, &out, true);
    o.listen = "127.0.0.1:0".parse().unwrap();
    o.bind_ip = Some(IpAddr::from([127, 0, 0, 1]));
    o.lookup = Some(lookup);
    let mut session = piecemeal::client::prepare(&o).unwrap();
    let started = Instant::now();
    let outcome = session.run().unwrap();
    let took = started.elapsed();
    assert!(outcome.complete, "{outcome:?}");
    assert_same_files(&seed_dir, &out, &[("z.bin", 300_000)]);
    // The 15 s announce time-out ran while the name was pending.
    assert!(
        took >= Duration::from_secs(15) && took < Duration::from_secs(40),
        "took {took:?}"
    );
    assert_eq!(*calls.lock().unwrap(), 1);
    drop(seeder);
}
