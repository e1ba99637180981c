//! `piecemeal demo`: a whole swarm on this machine. It writes a random file,
//! makes its torrent (announcing to a built-in tracker on a free loopback
//! port), starts the tracker, one seeder and N leechers as child processes of
//! this same binary, shows every peer's progress live, checks every copy
//! byte for byte, and prints a summary table.

use crate::error::Error;
use crate::metainfo::{CreateOptions, create};
use crate::progress::{count, fit, human_bytes};
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Give up if the swarm has not finished by then.
const DEADLINE: Duration = Duration::from_secs(300);

/// What a child last reported.
#[derive(Clone, Debug, Default)]
struct Report {
    have: u64,
    num: u64,
    down: u64,
    up: u64,
    down_rate: u64,
    up_rate: u64,
    peers: u64,
    done_ms: Option<u64>,
    finished_at: Option<Duration>,
}

struct Node {
    name: String,
    child: Child,
    report: Arc<Mutex<Report>>,
    dir: PathBuf,
}

fn free_port() -> Result<u16, Error> {
    let l = TcpListener::bind("127.0.0.1:0")
        .map_err(|e| Error::Runtime(format!("no free port: {e}")))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| Error::Runtime(e.to_string()))
}

fn write_random_file(path: &Path, size: u64) -> Result<(), Error> {
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(path)
            .map_err(|e| Error::Runtime(format!("{}: {e}", path.display())))?,
    );
    let mut rng = crate::rng::Rng::new(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
    );
    let mut left = size;
    let mut buf = vec![0u8; 1 << 16];
    while left > 0 {
        for chunk in buf.chunks_mut(8) {
            let b = rng.next_u64().to_le_bytes();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n])
            .map_err(|e| Error::Runtime(e.to_string()))?;
        left -= n as u64;
    }
    f.flush().map_err(|e| Error::Runtime(e.to_string()))
}

fn spawn(name: &str, args: &[String], dir: PathBuf, started: Instant) -> Result<Node, Error> {
    let exe = std::env::current_exe().map_err(|e| Error::Runtime(e.to_string()))?;
    let log = std::fs::File::create(dir.with_extension("log"))
        .map_err(|e| Error::Runtime(e.to_string()))?;
    let mut child = Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .map_err(|e| Error::Runtime(format!("cannot start {name}: {e}")))?;
    let report = Arc::new(Mutex::new(Report::default()));
    if let Some(out) = child.stdout.take() {
        let r = report.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let mut f = line.split_whitespace();
                let tag = f.next().unwrap_or("");
                let nums: Vec<u64> = f.filter_map(|v| v.parse().ok()).collect();
                if (tag == "@status" || tag == "@done") && nums.len() >= 7 {
                    let mut rep = r.lock().unwrap_or_else(|p| p.into_inner());
                    rep.have = nums[0];
                    rep.num = nums[1];
                    rep.down = nums[2];
                    rep.up = nums[3];
                    rep.down_rate = nums[4];
                    rep.up_rate = nums[5];
                    rep.peers = nums[6];
                    if rep.have == rep.num && rep.finished_at.is_none() {
                        rep.finished_at = Some(started.elapsed());
                    }
                    if tag == "@done" {
                        rep.done_ms = nums.get(7).copied();
                    }
                }
            }
        });
    }
    Ok(Node {
        name: name.to_string(),
        child,
        report,
        dir,
    })
}

/// The live board: one line per peer (the seeder first), each fitted to
/// `width` when drawn on a terminal. A leecher shows its progress, rates
/// and peers; the seeder its upload rate and total.
fn board(names: &[&str], reports: &[Report], width: Option<usize>) -> Vec<String> {
    let name_w = names.iter().map(|n| n.len()).max().unwrap_or(6);
    names
        .iter()
        .zip(reports)
        .enumerate()
        .map(|(i, (name, r))| {
            let peers = count(r.peers as usize, "peer", "peers");
            let line = if i == 0 {
                format!(
                    "{name:<name_w$}  seeding {:>13}  up {:>11}/s  uploaded {:>10}  {peers}",
                    "",
                    human_bytes(r.up_rate),
                    human_bytes(r.up)
                )
            } else {
                let pct = if r.num == 0 {
                    0.0
                } else {
                    100.0 * r.have as f64 / r.num as f64
                };
                let bar_w = 12;
                let filled = ((pct / 100.0) * bar_w as f64).floor() as usize;
                let bar = format!(
                    "[{}{}]",
                    "#".repeat(filled.min(bar_w)),
                    "-".repeat(bar_w - filled.min(bar_w))
                );
                format!(
                    "{name:<name_w$}  {bar} {pct:5.1}%  down {:>11}/s  up {:>11}/s  {peers}",
                    human_bytes(r.down_rate),
                    human_bytes(r.up_rate)
                )
            };
            match width {
                Some(w) => fit(&line, w.saturating_sub(1)),
                None => line,
            }
        })
        .collect()
}

fn snapshot(n: &Node) -> Report {
    n.report.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

fn same_contents(a: &Path, b: &Path) -> bool {
    match (std::fs::read(a), std::fs::read(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

fn stop(child: &mut Child) {
    // SIGTERM: the child flushes, announces `stopped` and prints its totals.
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Run the demo; `Err` (non-zero exit) if anything fails.
pub fn run(size: u64, leechers: usize, dir: Option<PathBuf>) -> Result<(), Error> {
    if size == 0 || leechers == 0 {
        return Err(Error::Input(
            "--size and --leechers must be above zero".into(),
        ));
    }
    let (root, temporary) = match dir {
        Some(d) => (d, false),
        None => (
            std::env::temp_dir().join(format!("piecemeal-demo-{}", std::process::id())),
            true,
        ),
    };
    let _ = std::fs::remove_dir_all(root.join("seeder"));
    for i in 1..=leechers {
        let _ = std::fs::remove_dir_all(root.join(format!("leecher{i}")));
    }
    std::fs::create_dir_all(root.join("seeder"))
        .map_err(|e| Error::Runtime(format!("{}: {e}", root.display())))?;
    let result = run_in(&root, size, leechers);
    if temporary && result.is_ok() {
        let _ = std::fs::remove_dir_all(&root);
    } else {
        crate::outln!("files and logs kept in {}", root.display());
    }
    result
}

fn run_in(root: &Path, size: u64, leechers: usize) -> Result<(), Error> {
    let started = Instant::now();
    let data = root.join("seeder").join("demo.bin");
    crate::outln!(
        "writing {} of random data to {}",
        human_bytes(size),
        data.display()
    );
    write_random_file(&data, size)?;
    let tracker_port = free_port()?;
    let announce = format!("http://127.0.0.1:{tracker_port}/announce");
    let torrent_bytes = create(
        &data,
        &CreateOptions {
            trackers: vec![announce.clone()],
            piece_len: None,
            private: false,
            comment: Some("piecemeal demo".into()),
            created_by: None,
            creation_date: None,
        },
    )
    .map_err(|e| Error::Runtime(e.to_string()))?;
    let torrent = root.join("demo.torrent");
    std::fs::write(&torrent, torrent_bytes).map_err(|e| Error::Runtime(e.to_string()))?;
    crate::outln!("torrent {} announces to {announce}", torrent.display());

    let s = |v: &str| v.to_string();
    let t = torrent.display().to_string();
    let mut tracker = spawn(
        "tracker",
        &[
            s("tracker"),
            s("--bind"),
            s("127.0.0.1"),
            s("--port"),
            tracker_port.to_string(),
            s("--interval"),
            s("5"),
        ],
        root.join("tracker"),
        started,
    )?;
    std::thread::sleep(Duration::from_millis(200));
    let peer_args = |dir: &Path, cmd: &str| {
        let mut args = vec![
            s(cmd),
            t.clone(),
            s("-o"),
            dir.display().to_string(),
            s("--bind"),
            s("127.0.0.1"),
            s("--port"),
            s("0"),
            s("--machine"),
            s("--verbose"),
            // A local swarm: its peers come from the demo's tracker, and
            // nothing reaches the public DHT.
            s("--no-dht"),
        ];
        if cmd == "download" {
            // Leechers stay on to seed to each other.
            args.push(s("--seed"));
        }
        args
    };
    let mut nodes = vec![spawn(
        "seeder",
        &peer_args(&root.join("seeder"), "seed"),
        root.join("seeder"),
        started,
    )?];
    for i in 1..=leechers {
        let dir = root.join(format!("leecher{i}"));
        nodes.push(spawn(
            &format!("leecher{i}"),
            &peer_args(&dir, "download"),
            dir,
            started,
        )?);
    }
    let tty = std::io::stdout().is_terminal();
    let mut last_print = Instant::now() - Duration::from_secs(10);
    let mut drawn = 0;
    let outcome = loop {
        std::thread::sleep(Duration::from_millis(100));
        let reports: Vec<Report> = nodes.iter().map(snapshot).collect();
        let all_done = reports[1..].iter().all(|r| r.num > 0 && r.have == r.num);
        let every = if tty {
            Duration::from_millis(500)
        } else {
            Duration::from_secs(3)
        };
        if last_print.elapsed() >= every || all_done {
            last_print = Instant::now();
            let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
            let width = crate::output::terminal_width(1).unwrap_or(80);
            let lines = board(&names, &reports, tty.then_some(width));
            let mut text = String::new();
            if tty && drawn > 0 {
                // Back to the first line of the board, redrawn in place.
                text.push_str(&format!("\x1b[{drawn}A"));
            }
            for l in &lines {
                if tty {
                    text.push_str("\r\x1b[K");
                }
                text.push_str(l);
                text.push('\n');
            }
            if !tty {
                text.push('\n');
            }
            crate::out!("{text}");
            drawn = lines.len();
        }
        if all_done {
            break Ok(());
        }
        if let Some(n) = nodes
            .iter_mut()
            .find_map(|n| matches!(n.child.try_wait(), Ok(Some(_))).then_some(n))
        {
            break Err(Error::Runtime(format!(
                "{} exited early; see {}",
                n.name,
                n.dir.with_extension("log").display()
            )));
        }
        if started.elapsed() > DEADLINE {
            break Err(Error::Runtime(format!(
                "the swarm did not finish within {DEADLINE:?}"
            )));
        }
    };
    let elapsed = started.elapsed();
    for n in nodes.iter_mut() {
        stop(&mut n.child);
    }
    stop(&mut tracker.child);
    outcome?;
    std::thread::sleep(Duration::from_millis(100));
    // Every copy, byte for byte.
    let mut bad = Vec::new();
    for n in &nodes[1..] {
        if !same_contents(&data, &n.dir.join("demo.bin")) {
            bad.push(n.name.clone());
        }
    }
    let reports: Vec<Report> = nodes.iter().map(snapshot).collect();
    crate::outln!();
    crate::outln!(
        "{:<10} {:>9} {:>11} {:>11} {:>12}",
        "peer",
        "time",
        "down",
        "up",
        "avg down"
    );
    for (n, r) in nodes.iter().zip(&reports) {
        let secs = r.finished_at.map(|d| d.as_secs_f64());
        let time = match (&n.name[..], secs) {
            ("seeder", _) => "-".to_string(),
            (_, Some(s)) => format!("{s:.2} s"),
            _ => "?".to_string(),
        };
        let avg = match secs {
            Some(s) if n.name != "seeder" && s > 0.0 => {
                format!("{}/s", human_bytes((r.down as f64 / s) as u64))
            }
            _ => "-".to_string(),
        };
        crate::outln!(
            "{:<10} {:>9} {:>11} {:>11} {:>12}",
            n.name,
            time,
            human_bytes(r.down),
            human_bytes(r.up),
            avg
        );
    }
    let leeched: u64 = reports[1..].iter().map(|r| r.down).sum();
    let from_seeder = reports[0].up.min(leeched);
    let from_leechers = leeched - from_seeder;
    crate::outln!(
        "\n{} downloaded in all: {} from the seeder, {} ({:.0}%) from other leechers; wall time {:.2} s",
        human_bytes(leeched),
        human_bytes(from_seeder),
        human_bytes(from_leechers),
        if leeched == 0 {
            0.0
        } else {
            100.0 * from_leechers as f64 / leeched as f64
        },
        elapsed.as_secs_f64()
    );
    if !bad.is_empty() {
        return Err(Error::Runtime(format!(
            "copies differ from the original: {}",
            bad.join(", ")
        )));
    }
    crate::outln!("all {leechers} copies match the original byte for byte");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(have: u64, num: u64, rate: u64) -> Report {
        Report {
            have,
            num,
            down: have * 1000,
            up: 12 << 20,
            down_rate: rate,
            up_rate: rate / 3,
            peers: 3,
            ..Report::default()
        }
    }

    #[test]
    fn the_board_fits_80_columns_with_three_leechers() {
        let names = ["seeder", "leecher1", "leecher2", "leecher3"];
        let reports = vec![
            report(64, 64, 0),
            report(10, 64, 999 << 20),
            report(63, 64, 1023 << 20),
            report(0, 64, 0),
        ];
        let lines = board(&names, &reports, Some(80));
        assert_eq!(lines.len(), 4);
        for l in &lines {
            assert!(l.chars().count() < 80, "{l:?} is {} columns", l.len());
            assert!(!l.ends_with('…'), "{l:?} was cut");
        }
        // The seeder shows its upload rate, the leechers their progress.
        assert!(lines[0].contains("seeding"), "{}", lines[0]);
        assert!(lines[2].contains(" 98.4%"), "{}", lines[2]);
        assert!(lines[1].contains("3 peers"), "{}", lines[1]);
        // Narrower terminals cut lines instead of wrapping them.
        for l in board(&names, &reports, Some(40)) {
            assert!(l.chars().count() < 40, "{l:?}");
        }
    }

    #[test]
    fn the_seeder_line_shows_its_upload_rate() {
        let mut seeder = report(64, 64, 0);
        seeder.up_rate = 5 << 20;
        let lines = board(
            &["seeder", "leecher1"],
            &[seeder, report(1, 64, 1)],
            Some(80),
        );
        assert!(lines[0].contains("up     5.0 MiB/s"), "{}", lines[0]);
    }
}
