//! The binary in a pseudo-terminal, as a person sees it: the live status
//! line is redrawn in place, every log line starts on a line of its own
//! (never glued to the status line), the status line never wraps, and the
//! last status line before the summary shows 100 %.

mod common;
use common::*;
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::time::Duration;

const COLS: usize = 80;

/// A pseudo-terminal of `COLS` columns: (master, slave).
fn openpty() -> (OwnedFd, OwnedFd) {
    let (mut master, mut slave) = (0, 0);
    let ws = libc::winsize {
        ws_row: 24,
        ws_col: COLS as u16,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: openpty writes two descriptors, which we then own.
    let r = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &ws,
        )
    };
    assert_eq!(r, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: fresh descriptors owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) }
}

/// The rows a terminal of `cols` columns ends up showing for `bytes`
/// (every row ever completed by a newline or a wrap, in order). Knows what
/// the program sends: text, `\r`, `\n`, erase-to-end-of-line (`ESC [ K`);
/// other escape sequences (colours) are skipped. Wrapped rows are marked.
fn rows(bytes: &[u8], cols: usize) -> Vec<(String, bool)> {
    let text = String::from_utf8_lossy(bytes);
    let mut out = Vec::new();
    let mut row: Vec<char> = Vec::new();
    let mut col = 0;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => col = 0,
            '\n' => {
                out.push((row.iter().collect(), false));
                row.clear();
                col = 0;
            }
            '\u{1b}' => {
                if chars.peek() == Some(&'[') {
                    chars.next();
                    let mut fin = ' ';
                    for d in chars.by_ref() {
                        if d.is_ascii_alphabetic() || d == '~' {
                            fin = d;
                            break;
                        }
                    }
                    if fin == 'K' {
                        row.truncate(col);
                    }
                }
            }
            c if c.is_control() => {}
            c => {
                if col >= cols {
                    out.push((row.iter().collect(), true));
                    row.clear();
                    col = 0;
                }
                if col < row.len() {
                    row[col] = c;
                } else {
                    row.resize(col, ' ');
                    row.push(c);
                }
                col += 1;
            }
        }
    }
    if !row.is_empty() {
        out.push((row.iter().collect(), false));
    }
    out
}

const LEVELS: [&str; 5] = ["[ERROR]", "[WARN]", "[INFO]", "[DEBUG]", "[TRACE]"];

fn is_log_row(r: &str) -> bool {
    LEVELS.iter().any(|l| r.contains(l))
}

fn is_status_row(r: &str) -> bool {
    r.contains("% ") && (r.contains("down ") || r.contains("checking"))
}

#[test]
fn the_emulator_sees_glued_lines_and_wraps() {
    // What the issue saw: a log line written after the status line.
    let glued = rows(
        b"\r\x1b[K 45.0%  down 1 B/s  eta 3s12:00:00 [INFO] stopping\n",
        80,
    );
    assert!(is_log_row(&glued[0].0) && is_status_row(&glued[0].0));
    // Cleared first: two clean rows.
    let clean = rows(
        b"\r\x1b[K 45.0%  down 1 B/s\r\x1b[K12:00:00 [INFO] stopping\n\x1b[32m 46.0%  down 2 B/s",
        80,
    );
    assert_eq!(clean.len(), 2);
    assert_eq!(clean[0].0, "12:00:00 [INFO] stopping");
    assert_eq!(clean[1].0, " 46.0%  down 2 B/s");
    assert!(rows(&[b'x'; 81], 80)[0].1, "a wrap is seen");
}

#[test]
fn log_lines_never_land_on_the_status_line_in_a_terminal() {
    let tmp = TempDir::new("pty");
    let (seed_dir, t) = seed_data(&tmp, &[("f.bin", 3_000_000)], "f.bin", &[], 32768);
    // A slow seeder: a few seconds of status lines, with debug log lines
    // (peers, pieces) and info lines (verified, complete) among them.
    let (mut seeder, sp) = start_seeder(&tmp, &seed_dir, &t, &["--upload-limit", "1M"]);
    let out = tmp.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let (master, slave) = openpty();
    let port = free_port().to_string();
    // The original interface, exactly.
    let mut child = Command::new(BIN)
        .args(["-t", &t, "-d", "-sp", &port, "-pp", &sp, "--verbose"])
        .current_dir(&out)
        .env("TERM", "xterm")
        .stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave))
        .spawn()
        .unwrap();
    let mut reader = std::fs::File::from(master);
    let collected = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let mut buf = [0u8; 4096];
        // EIO once the child has exited and the slave is closed.
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            bytes.extend_from_slice(&buf[..n]);
        }
        bytes
    });
    let end = std::time::Instant::now() + Duration::from_secs(60);
    let code = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st.code();
        }
        assert!(std::time::Instant::now() < end, "download did not finish");
        std::thread::sleep(Duration::from_millis(50));
    };
    let bytes = collected.join().unwrap();
    seeder.terminate(Duration::from_secs(10));
    let screen = rows(&bytes, COLS);
    let dump = || {
        screen
            .iter()
            .map(|(r, w)| format!("{}{r}", if *w { "(wrapped) " } else { "" }))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(code, Some(0), "{}", dump());
    assert_same_files(&seed_dir, &out, &[("f.bin", 3_000_000)]);
    let mut logs = 0;
    for (row, wrapped) in &screen {
        // Log lines may be long; the status line never wraps.
        assert!(
            !(*wrapped && is_status_row(row)),
            "the status line wrapped at {COLS} columns:\n{}",
            dump()
        );
        if is_log_row(row) {
            logs += 1;
            assert!(
                !is_status_row(row),
                "a log line on the status line: {row:?}\n{}",
                dump()
            );
            // A log line starts the row: `HH:MM:SS [LEVEL] ...`.
            assert!(
                row.as_bytes().get(2) == Some(&b':') && row.as_bytes().get(8) == Some(&b' '),
                "log line not at the start of its row: {row:?}\n{}",
                dump()
            );
        }
    }
    assert!(logs > 3, "debug and info lines were shown:\n{}", dump());
    let redraws = bytes.windows(4).filter(|w| w == b"\r\x1b[K").count();
    assert!(
        redraws > 5,
        "the status line is redrawn in place:\n{}",
        dump()
    );
    // The last status line says 100 % and comes right before the summary.
    let summary = screen
        .iter()
        .position(|(r, _)| r.starts_with("complete: "))
        .unwrap_or_else(|| panic!("no summary:\n{}", dump()));
    let last_status = screen[..summary]
        .iter()
        .rev()
        .find(|(r, _)| !is_log_row(r))
        .unwrap();
    assert!(
        last_status.0.starts_with("100.0%") && last_status.0.contains("done"),
        "{last_status:?}\n{}",
        dump()
    );
    // Every status line drawn while data arrived shows a rate, not 0 B/s.
    let text = String::from_utf8_lossy(&bytes);
    let drawn: Vec<&str> = text
        .split("\r\x1b[K")
        .map(|d| d.split(['\r', '\n', '\u{1b}']).next().unwrap_or(""))
        .filter(|d| is_status_row(d))
        .collect();
    let middle: Vec<&&str> = drawn
        .iter()
        .filter(|d| {
            let pct: f64 = d.trim().split('%').next().unwrap().parse().unwrap_or(0.0);
            (20.0..90.0).contains(&pct)
        })
        .collect();
    assert!(!middle.is_empty(), "{drawn:#?}");
    for d in middle {
        assert!(!d.contains("down 0 B/s"), "{d:?} in {drawn:#?}");
        assert!(d.chars().count() <= COLS - 3, "{d:?}");
    }
}
