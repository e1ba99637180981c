//! A download killed with SIGKILL at 20+ random moments (during start-up,
//! the re-check, connecting, mid-piece, mid-write) and restarted each time:
//! pieces verified on disk are never lost and never fetched again, and the
//! final data is correct.

mod common;
use common::*;
use std::time::{Duration, Instant};

const PIECE: u64 = 16384;
const FILES: &[(&str, usize)] = &[("data.bin", 20 << 20)];
const KILLS: usize = 20;

/// "N of M pieces already verified on disk", if the run got that far.
#[test]
fn twenty_kills_at_random_moments_lose_and_refetch_nothing() {
    let seed = std::env::var("PM_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
        | 1;
    eprintln!("crash loop seed {seed} (set PM_CRASH_SEED to repeat)");
    let mut rng = piecemeal::rng::Rng::new(seed);
    let tmp = TempDir::new("crash-loop");
    let (seed_dir, t) = seed_data(&tmp, FILES, "data.bin", &[], PIECE as u32);
    // 20 MiB at 1 MiB/s: the kills land while the download is under way.
    let (_seeder, sp) = start_seeder(&tmp, &seed_dir, &t, &["--upload-limit", "1M"]);
    let out = tmp.join("out");
    let args = download_args(&t, &out, &sp);
    let total = FILES[0].1 as u64;
    let num = total / PIECE;
    let mut on_disk = 0; // pieces verified on disk at the last start
    let mut kills = 0;
    let mut rounds = 0;
    while kills < KILLS {
        rounds += 1;
        assert!(
            rounds < 3 * KILLS,
            "the download kept finishing before the kill"
        );
        let mut l = Proc::start(&format!("leech-{rounds}"), tmp.path(), &args, tmp.path());
        let at = Duration::from_millis(30 + rng.next_u64() % 1000);
        let start = Instant::now();
        while start.elapsed() < at && l.child.try_wait().unwrap().is_none() {
            std::thread::sleep(Duration::from_millis(5));
        }
        if let Some(st) = l.child.try_wait().unwrap() {
            // It finished before the kill: the kills came too late.
            assert_eq!(st.code(), Some(0), "log:\n{}", l.log_text());
            panic!("download finished after {kills} kills; slow it down");
        }
        l.child.kill().unwrap(); // SIGKILL: no flush, no goodbye
        l.child.wait().unwrap();
        kills += 1;
        std::thread::sleep(Duration::from_millis(30)); // last status line
        let log = l.log_text();
        assert!(!log.contains("panicked"), "{log}");
        if let Some(found) = verified_at_start(&log) {
            // Nothing verified on disk is ever lost.
            assert!(
                found >= on_disk,
                "round {rounds}: {found} pieces on disk, {on_disk} before:\n{log}"
            );
            on_disk = found;
            // Nothing verified on disk was fetched again.
            let st = l.status();
            assert!(
                st.downloaded <= (num - found) * PIECE,
                "round {rounds}: downloaded {} with {found} of {num} on disk",
                st.downloaded
            );
        }
        eprintln!(
            "kill {kills} after {at:?}: {on_disk}/{num} pieces on disk at start, {} B this run",
            l.status().downloaded
        );
    }
    let mut last = Proc::start("leech-final", tmp.path(), &args, tmp.path());
    assert_eq!(
        last.wait(Duration::from_secs(60)),
        0,
        "log:\n{}",
        last.log_text()
    );
    let log = last.log_text();
    let found = verified_at_start(&log).unwrap();
    assert!(found >= on_disk, "{found} < {on_disk}:\n{log}");
    assert!(found > 0, "nothing survived {KILLS} kills:\n{log}");
    // Exactly the missing pieces were downloaded.
    assert_eq!(last.status().downloaded, total - found * PIECE, "{log}");
    assert_same_files(&seed_dir, &out, FILES);
}
