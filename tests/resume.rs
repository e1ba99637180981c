//! A download killed with SIGKILL at any moment and restarted finishes with
//! correct data, without fetching again the pieces already verified on disk.

mod common;
use common::*;
use std::process::Command;
use std::time::Duration;

const PIECE: u64 = 65536;
const FILES: &[(&str, usize)] = &[("data.bin", 12 << 20)];

#[test]
fn killed_download_resumes_without_refetching_verified_pieces() {
    let tmp = TempDir::new("resume");
    let (seed_dir, t) = seed_data(&tmp, FILES, "data.bin", &[], PIECE as u32);
    let (_seeder, sp) = start_seeder(&tmp, &seed_dir, &t, &["--upload-limit", "4M"]);
    let out = tmp.join("out");
    let args = download_args(&t, &out, &sp);
    let total = FILES[0].1 as u64;
    let num = total / PIECE;
    // Kill it three times at growing progress, then let it finish.
    for (round, frac) in [0.15, 0.4, 0.7].into_iter().enumerate() {
        let mut l = Proc::start(&format!("leech-{round}"), tmp.path(), &args, tmp.path());
        let want = (num as f64 * frac) as u64;
        l.wait_for(Duration::from_secs(60), "progress", |s| {
            s.num > 0 && s.have >= want
        });
        // Verified pieces are written within FLUSH_AGE (100 ms); the seeder's
        // first burst can verify many at once, so give them time to land
        // (the download is still going: 12 MB at 4 MB/s).
        std::thread::sleep(Duration::from_millis(300));
        l.child.kill().unwrap(); // SIGKILL: no flush, no goodbye
        l.child.wait().unwrap();
        if round > 0 {
            let found = verified_at_start(&l.log_text()).expect("re-check line");
            assert!(
                found > 0,
                "round {round}: nothing kept from the previous run"
            );
        }
    }
    let mut last = Proc::start("leech-final", tmp.path(), &args, tmp.path());
    assert_eq!(
        last.wait(Duration::from_secs(60)),
        0,
        "log:\n{}",
        last.log_text()
    );
    let found = verified_at_start(&last.log_text()).expect("re-check line");
    assert!(found >= num / 4, "only {found} pieces survived the kills");
    let st = last.status();
    // Exactly the missing pieces were downloaded: nothing verified on disk twice.
    assert_eq!(
        st.downloaded,
        total - found * PIECE,
        "log:\n{}",
        last.log_text()
    );
    assert_same_files(&seed_dir, &out, FILES);
    // And a run on complete data downloads nothing at all.
    let again = Command::new(BIN)
        .args(args)
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(0));
    let log = String::from_utf8_lossy(&again.stderr);
    assert!(
        log.contains(&format!("{num} of {num} pieces already verified")),
        "{log}"
    );
}
