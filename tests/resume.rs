//! A download killed with SIGKILL at any moment and restarted finishes with
//! correct data, without fetching again the pieces already verified on disk.
//! A download stopped cleanly leaves resume data: the next start takes its
//! pieces without checking them, unless the files changed since.

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
    // And a run on complete data downloads nothing at all: the clean exit
    // left resume data, so it does not even check.
    let run_again = || {
        let again = Command::new(BIN)
            .args(&args)
            .current_dir(tmp.path())
            .output()
            .unwrap();
        assert_eq!(again.status.code(), Some(0));
        String::from_utf8_lossy(&again.stderr).into_owned()
    };
    let log = run_again();
    assert!(
        log.contains(&format!("{num} of {num} pieces taken from the resume data")),
        "{log}"
    );
    // Without it (the run that read it consumed it; this one left a new
    // one, removed here), the data is checked.
    let resume = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "resume"))
        .expect("a resume file after a clean exit");
    std::fs::remove_file(resume).unwrap();
    let log = run_again();
    assert!(
        log.contains(&format!("{num} of {num} pieces already verified")),
        "{log}"
    );
}

#[test]
fn a_clean_stop_resumes_without_a_check_and_a_changed_file_is_checked() {
    let tmp = TempDir::new("resume-data");
    let (seed_dir, t) = seed_data(&tmp, FILES, "data.bin", &[], PIECE as u32);
    let (_seeder, sp) = start_seeder(&tmp, &seed_dir, &t, &["--upload-limit", "4M"]);
    let out = tmp.join("out");
    let state = tmp.join("state");
    std::fs::create_dir_all(&state).unwrap();
    let mut args = download_args(&t, &out, &sp);
    args.extend(["--state-dir", state.to_str().unwrap(), "--no-dht"]);
    let num = FILES[0].1 as u64 / PIECE;
    // Stopped cleanly (SIGTERM) a third of the way.
    let mut first = Proc::start("leech-1", tmp.path(), &args, tmp.path());
    first.wait_for(Duration::from_secs(60), "progress", |s| {
        s.num > 0 && s.have >= num / 3
    });
    assert_eq!(
        first.terminate(Duration::from_secs(20)),
        3,
        "{}",
        first.log_text()
    );
    let had = first.status().have;
    let resume: Vec<_> = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "resume"))
        .collect();
    assert_eq!(resume.len(), 1, "one resume file in --state-dir");
    // Restarted: its pieces are taken as they are, nothing is checked, and
    // the file is consumed.
    let mut second = Proc::start("leech-2", tmp.path(), &args, tmp.path());
    second.wait_log("taken from the resume data", Duration::from_secs(20));
    assert!(!resume[0].exists(), "consumed when read");
    let log = second.log_text();
    let taken: u64 = log
        .lines()
        .find(|l| l.contains("pieces taken from the resume data"))
        .and_then(|l| {
            l.split(": ")
                .last()?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .expect("resume line");
    // At least what the last status line showed (the stop writes every
    // verified piece first), and not all of it.
    assert!(
        taken >= had && taken < num,
        "{taken} of {num}, had {had}: {log}"
    );
    assert!(!log.contains("already verified on disk"), "{log}");
    assert_eq!(second.terminate(Duration::from_secs(20)), 3, "{log}");
    // The bytes of a piece the new resume data claims are changed behind
    // its back: the file's time moves, so the resume data is not used, and
    // the check finds every claimed piece but that one.
    let info_hash = piecemeal::metainfo::Metainfo::load(std::path::Path::new(&t))
        .unwrap()
        .info_hash;
    let saved = std::fs::read(&resume[0]).expect("resume data of the second stop");
    let (claimed, _) =
        piecemeal::storage::resume::decode(&saved, &info_hash, num as u32, 1).expect("ours");
    let spoilt = (0..num as u32)
        .find(|&p| claimed.get(piecemeal::ids::PieceIndex(p)))
        .expect("a claimed piece");
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(out.join("data.bin"))
            .unwrap();
        f.write_all_at(&[0xEE; 100], u64::from(spoilt) * PIECE + 10)
            .unwrap();
    }
    let mut third = Proc::start("leech-3", tmp.path(), &args, tmp.path());
    assert_eq!(
        third.wait(Duration::from_secs(60)),
        0,
        "{}",
        third.log_text()
    );
    let log = third.log_text();
    assert!(
        log.contains("resume data not used (the files changed since)"),
        "{log}"
    );
    let found = verified_at_start(&log).expect("check line");
    assert_eq!(found, claimed.count() as u64 - 1, "{log}");
    assert_same_files(&seed_dir, &out, FILES);
}
