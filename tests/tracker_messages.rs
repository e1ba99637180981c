//! What trackers say reaches the user: a `failure reason` and a `warning
//! message` are shown once per (tracker, text), however often the tracker
//! repeats them, and a torrent whose trackers all fail says so, with the
//! last reason, on its status line. Scripted trackers on 127.0.0.1.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A tracker that answers every announce with `body`; counts them.
fn scripted_tracker(body: &'static [u8]) -> (String, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/announce", l.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let mut head = Vec::new();
            let mut b = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut b) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&b[..n]),
                }
            }
            h.fetch_add(1, Ordering::SeqCst);
            let mut r =
                format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
            r.extend_from_slice(body);
            let _ = s.write_all(&r);
        }
    });
    (url, hits)
}

/// `piecemeal download` of `n` torrents (one file each) naming `trackers`
/// (one tier each), stdout and stderr to files; no peer.
fn leecher(tmp: &TempDir, n: usize, trackers: &[String], extra: &[&str]) -> std::process::Child {
    let seed = tmp.join("seed");
    let names: Vec<String> = (0..n).map(|i| format!("f{i}.bin")).collect();
    let files: Vec<(&str, usize)> = names.iter().map(|f| (f.as_str(), 50_000)).collect();
    write_files(&seed, &files);
    let torrents: Vec<String> = names
        .iter()
        .map(|f| {
            let t = tmp.join(&format!("{f}.torrent"));
            make_torrent(&seed.join(f), &t, trackers, 16384);
            t.to_str().unwrap().to_string()
        })
        .collect();
    let out = tmp.join("out");
    Command::new(BIN)
        .arg("download")
        .args(&torrents)
        .args(["-o", out.to_str().unwrap()])
        .args(["--port", "0", "--bind", "127.0.0.1"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(tmp.join("stdout")).unwrap())
        .stderr(std::fs::File::create(tmp.join("stderr")).unwrap())
        .spawn()
        .unwrap()
}

fn read(tmp: &TempDir, name: &str) -> String {
    std::fs::read_to_string(tmp.join(name)).unwrap_or_default()
}

#[test]
fn a_failure_reason_and_a_warning_are_shown_once_over_many_announces() {
    let tmp = TempDir::new("tracker-messages-once");
    // Three torrents, each announcing to both: BEP 12 starts every round
    // with the first tier, which refuses, then falls through to the
    // second, which answers with a warning. The second round comes after
    // the 30 s interval (the shortest we accept): 6 answers from each.
    let (refuses, refused) = scripted_tracker(b"d14:failure reason11:go away nowe");
    let (warns, warned) = scripted_tracker(
        b"d8:intervali30e5:peers0:15:warning message24:be nice \x1b[31mto trackerse",
    );
    let mut child = leecher(&tmp, 3, &[refuses.clone(), warns.clone()], &[]);
    let end = Instant::now() + Duration::from_secs(60);
    while refused.load(Ordering::SeqCst) < 6 || warned.load(Ordering::SeqCst) < 6 {
        assert!(
            Instant::now() < end,
            "only {} and {} announces:\n{}",
            refused.load(Ordering::SeqCst),
            warned.load(Ordering::SeqCst),
            read(&tmp, "stderr")
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "{}",
            read(&tmp, "stderr")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Let the last answer be handled.
    std::thread::sleep(Duration::from_millis(300));
    let _ = child.kill();
    let _ = child.wait();
    let err = read(&tmp, "stderr");
    let failure: Vec<&str> = err.lines().filter(|l| l.contains("go away now")).collect();
    assert_eq!(
        failure,
        vec![format!("tracker {refuses}: tracker failure: go away now").as_str()],
        "{err}"
    );
    let warning: Vec<&str> = err.lines().filter(|l| l.contains("be nice")).collect();
    assert_eq!(warning.len(), 1, "{err}");
    // The escape character is shown, not sent to the terminal.
    assert!(
        warning[0].starts_with(&format!("tracker {warns}: warns: be nice")),
        "{err}"
    );
    assert!(!warning[0].contains('\x1b'), "{err}");
}

#[test]
fn a_torrent_whose_trackers_all_fail_says_so_on_its_status_line() {
    let tmp = TempDir::new("tracker-messages-failing");
    let (refuses, refused) = scripted_tracker(b"d14:failure reason11:go away nowe");
    let mut child = leecher(&tmp, 1, &[refuses], &["--json"]);
    let want = "tracker failing (last: tracker failure: go away now); retrying";
    let end = Instant::now() + Duration::from_secs(20);
    while !read(&tmp, "stdout").contains(want) {
        assert!(
            Instant::now() < end,
            "no {want:?} on the status:\n{}\n{}",
            read(&tmp, "stdout"),
            read(&tmp, "stderr")
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "{}",
            read(&tmp, "stderr")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(refused.load(Ordering::SeqCst), 1, "backing off after one");
    let _ = child.kill();
    let _ = child.wait();
}
