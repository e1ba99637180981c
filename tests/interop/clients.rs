//! The programs a scenario runs on the lab's hosts: piecemeal itself,
//! libtorrent-rasterbar through `lt_driver.py`, `transmission-daemon`
//! (driven with `transmission-remote`), `aria2c` (watched through its
//! JSON-RPC) and `opentracker`. Each one is killed on drop and has its log
//! watched by the lab.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::{BIN, Proc};
use crate::lab::{Host, Lab};

/// Debian's interpreter: `python3-libtorrent` is installed for it, not for
/// a python3 that may come first on PATH.
pub const PYTHON: &str = "/usr/bin/python3";
pub const LT_DRIVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/lt_driver.py");
const TR_SETTINGS: &str = include_str!("settings.json.in");

/// Ports used on every host (each host has its own address).
pub const PM_PORT: u16 = 6881;
pub const LT_PORT: u16 = 6882;
pub const TR_PORT: u16 = 51413;
pub const ARIA2_PORT: u16 = 6883;
/// aria2's JSON-RPC, on the host's loopback.
const ARIA2_RPC_PORT: u16 = 6800;
pub const TRACKER_PORT: u16 = 6969;

/// `piecemeal ARGS --machine` on `host`.
pub fn piecemeal(lab: &Lab, host: &Host, name: &str, args: &[&str]) -> Proc {
    let mut cmd = host.command(BIN);
    cmd.args(args).arg("--machine").current_dir(lab.path());
    let p = Proc::spawn(name, cmd, lab.path());
    lab.watch_log(&format!("{name} (piecemeal on {})", host.ip), &p.log);
    p
}

/// Wait for a piecemeal download to exit 0 with every piece verified.
pub fn wait_piecemeal_done(lab: &Lab, p: &mut Proc, timeout: Duration) -> Duration {
    let took = lab.wait_until(timeout, &format!("{} finishes", p.name), || {
        match p.child.try_wait().unwrap() {
            None => Ok(false),
            Some(st) if st.success() => Ok(true),
            Some(st) => Err(format!("exited with {st}")),
        }
    });
    std::thread::sleep(Duration::from_millis(100));
    let st = p.status();
    if !(st.done && st.num > 0 && st.have == st.num) {
        lab.fail(&format!("{}: exited 0 but status says {st:?}", p.name));
    }
    took
}

/// libtorrent-rasterbar through `lt_driver.py`.
pub struct Lt {
    pub proc: Proc,
}

/// Fields of the driver's `@status STATE PPM DOWN UP PEERS` line.
#[derive(Debug, Default)]
#[allow(dead_code)] // Read through Debug in failure messages.
pub struct LtStatus {
    pub state: String,
    pub ppm: u64,
    pub downloaded: u64,
    pub uploaded: u64,
    pub peers: u64,
}

impl Lt {
    /// `lt_driver.py MODE TORRENT DIR --listen HOST:LT_PORT ARGS...`.
    pub fn start(
        lab: &Lab,
        host: &Host,
        name: &str,
        mode: &str,
        torrent: &Path,
        dir: &Path,
        args: &[&str],
    ) -> Lt {
        let mut cmd = host.command(PYTHON);
        cmd.arg(LT_DRIVER)
            .arg(mode)
            .arg(torrent)
            .arg(dir)
            .arg("--listen")
            .arg(host.addr(LT_PORT))
            .args(args);
        let proc = Proc::spawn(name, cmd, lab.path());
        lab.watch_log(&format!("{name} (libtorrent on {})", host.ip), &proc.log);
        Lt { proc }
    }

    pub fn status(&self) -> LtStatus {
        let line = self.proc.last_line();
        let f: Vec<&str> = line.split_whitespace().collect();
        let n = |i: usize| f.get(i).and_then(|v| v.parse().ok()).unwrap_or(0);
        match f.first() {
            Some(&"@status") => LtStatus {
                state: f.get(1).unwrap_or(&"").to_string(),
                ppm: n(2),
                downloaded: n(3),
                uploaded: n(4),
                peers: n(5),
            },
            Some(&"@done") => LtStatus {
                state: "done".into(),
                ppm: 1_000_000,
                downloaded: n(1),
                uploaded: n(2),
                peers: 0,
            },
            _ => LtStatus::default(),
        }
    }

    /// Whether the driver has said `@done` (every piece verified).
    pub fn done(&self) -> bool {
        self.proc.status().done
    }

    /// Wait until the torrent is seeding (files checked).
    pub fn wait_seeding(&mut self, lab: &Lab, timeout: Duration) {
        let what = format!("{} seeds", self.proc.name);
        lab.wait_until(timeout, &what, || {
            if let Some(st) = self.proc.child.try_wait().unwrap() {
                return Err(format!("exited with {st}"));
            }
            Ok(self.status().state == "seeding")
        });
    }

    /// Wait until the download is complete (`@done`).
    pub fn wait_done(&mut self, lab: &Lab, timeout: Duration) -> Duration {
        let what = format!("{} finishes", self.proc.name);
        lab.wait_until(timeout, &what, || {
            if self.done() {
                return Ok(true);
            }
            match self.proc.child.try_wait().unwrap() {
                // Exited: let the reader thread catch the last lines.
                Some(st) if st.success() => {
                    std::thread::sleep(Duration::from_millis(100));
                    Ok(self.done())
                }
                Some(st) => Err(format!("exited with {st}")),
                None => Ok(false),
            }
        })
    }
}

/// Run the driver's one-shot commands (`create`, `infohash`): its stdout.
pub fn lt_tool(args: &[&str]) -> String {
    run_tool(Command::new(PYTHON).arg(LT_DRIVER).args(args))
}

/// Run a command to completion; panic with its output when it fails.
pub fn run_tool(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `transmission-daemon` in the foreground, its RPC on the host's loopback.
pub struct Transmission {
    pub proc: Proc,
    pub host: Host,
    pub name: String,
}

/// What `transmission-remote -t 1 -i` says.
#[derive(Debug, Default)]
#[allow(dead_code)] // Read through Debug in failure messages.
pub struct TrInfo {
    pub percent_done: f64,
    pub state: String,
    /// Approximate (transmission prints "12.3 MB").
    pub uploaded: f64,
    pub downloaded: f64,
    pub peers: String,
}

impl Transmission {
    /// Start a daemon whose data folder is `download_dir`; `up_limit_kib`
    /// caps its upload rate.
    pub fn start(
        lab: &Lab,
        host: &Host,
        name: &str,
        download_dir: &Path,
        up_limit_kib: Option<u32>,
    ) -> Transmission {
        Transmission::start_with(lab, host, name, download_dir, up_limit_kib, 1)
    }

    /// [`Transmission::start`] with its `encryption` setting: 0 prefer
    /// plaintext, 1 prefer encryption (the default), 2 require it.
    pub fn start_with(
        lab: &Lab,
        host: &Host,
        name: &str,
        download_dir: &Path,
        up_limit_kib: Option<u32>,
        encryption: u8,
    ) -> Transmission {
        let cfg = lab.dir(&format!("{name}-config"));
        let settings = TR_SETTINGS
            .replace("@BIND@", &host.ip.to_string())
            .replace("@PEER_PORT@", &TR_PORT.to_string())
            .replace("@DOWNLOAD_DIR@", download_dir.to_str().unwrap())
            .replace("@CACHE_MB@", "4")
            .replace("@UP_KBPS@", &up_limit_kib.unwrap_or(0).to_string())
            .replace("@UP_LIMITED@", &up_limit_kib.is_some().to_string())
            .replace("@ENCRYPTION@", &encryption.to_string());
        std::fs::write(cfg.join("settings.json"), settings).unwrap();
        let mut cmd = host.command("transmission-daemon");
        cmd.arg("-f").arg("-g").arg(&cfg);
        let proc = Proc::spawn(name, cmd, lab.path());
        lab.watch_log(&format!("{name} (transmission on {})", host.ip), &proc.log);
        let mut tr = Transmission {
            proc,
            host: host.clone(),
            name: name.into(),
        };
        lab.wait_until(
            Duration::from_secs(20),
            &format!("{name}'s RPC answers"),
            || {
                if let Some(st) = tr.proc.child.try_wait().unwrap() {
                    return Err(format!("exited with {st}"));
                }
                Ok(tr.remote_raw(&["-l"]).is_ok())
            },
        );
        tr
    }

    fn remote_raw(&self, args: &[&str]) -> Result<String, String> {
        let out = self
            .host
            .command("transmission-remote")
            .arg(format!("127.0.0.1:{}", 9091))
            .args(args)
            .output()
            .map_err(|e| format!("cannot run transmission-remote: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "transmission-remote {}: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// `transmission-remote ARGS`; the scenario fails when it does.
    pub fn remote(&self, lab: &Lab, args: &[&str]) -> String {
        self.remote_raw(args).unwrap_or_else(|e| lab.fail(&e))
    }

    /// Add a torrent (it gets id 1 in a fresh daemon) and start it.
    pub fn add(&self, lab: &Lab, torrent: &Path) {
        let out = self.remote(lab, &["-a", torrent.to_str().unwrap()]);
        if !out.contains("success") {
            lab.fail(&format!("{}: adding the torrent: {out}", self.name));
        }
    }

    pub fn info(&self, lab: &Lab) -> TrInfo {
        let out = self.remote(lab, &["-t", "1", "-i"]);
        TrInfo {
            percent_done: field(&out, "Percent Done:")
                .trim_end_matches('%')
                .parse()
                .unwrap_or(0.0),
            state: field(&out, "State:"),
            uploaded: bytes(&field(&out, "Uploaded:")),
            downloaded: bytes(&field(&out, "Downloaded:")),
            peers: field(&out, "Peers:"),
        }
    }

    /// Wait until torrent 1 is complete: every piece verified (by a check
    /// of the files or by downloading them). The state then is "Seeding",
    /// or "Idle" while no peer is connected.
    pub fn wait_complete(&mut self, lab: &Lab, timeout: Duration) -> Duration {
        // The latest `-i` answer is kept in a file that failures print.
        let status_file = lab.path().join(format!("{}-status.txt", self.name));
        lab.watch_log(
            &format!("{} (last transmission-remote -i)", self.name),
            &status_file,
        );
        lab.wait_until(timeout, &format!("{} completes", self.name), || {
            if let Some(st) = self.proc.child.try_wait().unwrap() {
                return Err(format!("exited with {st}"));
            }
            let i = self.info(lab);
            let _ = std::fs::write(&status_file, format!("{i:#?}\n"));
            Ok(i.percent_done >= 100.0 && !i.state.contains("Verif"))
        })
    }
}

/// The value after `key` on the first line that has it.
fn field(text: &str, key: &str) -> String {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(key))
        .map(|v| v.trim().to_string())
        .unwrap_or_default()
}

/// "12.3 MB" → bytes (transmission 3.00 prints SI units); "None" → 0.
fn bytes(v: &str) -> f64 {
    let mut f = v.split_whitespace();
    let n: f64 = f.next().and_then(|n| n.parse().ok()).unwrap_or(0.0);
    let unit = match f.next().unwrap_or("") {
        "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "TB" => 1e12,
        _ => 1.0,
    };
    n * unit
}

/// `aria2c` with one torrent, its JSON-RPC on the host's loopback.
pub struct Aria2 {
    pub proc: Proc,
    pub host: Host,
}

/// What aria2's `tellStatus` says about the torrent.
#[derive(Debug, Default)]
#[allow(dead_code)] // Read through Debug in failure messages.
pub struct Aria2Status {
    /// "active" (also while seeding), "complete", "error", ...
    pub status: String,
    pub completed: u64,
    pub total: u64,
    pub uploaded: u64,
    pub seeder: bool,
    /// Present only while `--check-integrity` reads the files.
    pub verified: Option<u64>,
    pub error: String,
}

impl Aria2Status {
    /// Every piece verified (downloaded, or found by the check).
    pub fn complete(&self) -> bool {
        self.status == "complete"
            || (self.total > 0
                && self.completed == self.total
                && self.seeder
                && self.verified.is_none())
    }
}

/// The GID aria2 is told to give the torrent, so that RPC can name it.
const ARIA2_GID: &str = "a2a2a2a2a2a2a2a2";

impl Aria2 {
    /// `aria2c TORRENT` on `host` with its data in `dir`: with `seed`, it
    /// checks the files there first (`--check-integrity`). Either way it
    /// seeds once complete, until killed. DHT, local peer discovery and PEX
    /// are off; it uses no tracker unless the torrent names one, and it
    /// cannot be given a peer: the other side dials it.
    pub fn start(
        lab: &Lab,
        host: &Host,
        name: &str,
        torrent: &Path,
        dir: &Path,
        seed: bool,
        up_limit: Option<u32>,
    ) -> Aria2 {
        let log = lab.path().join(format!("{name}-aria2.log"));
        let mut args = vec![
            "--no-conf".to_string(),
            format!("--dir={}", dir.display()),
            format!("--listen-port={ARIA2_PORT}"),
            "--enable-dht=false".into(),
            "--enable-dht6=false".into(),
            "--bt-enable-lpd=false".into(),
            "--enable-peer-exchange=false".into(),
            // 0.0: seed without end.
            "--seed-ratio=0.0".into(),
            format!("--check-integrity={seed}"),
            format!("--max-upload-limit={}", up_limit.unwrap_or(0)),
            "--enable-rpc".into(),
            format!("--rpc-listen-port={ARIA2_RPC_PORT}"),
            format!("--gid={ARIA2_GID}"),
            format!("--stop-with-process={}", std::process::id()),
            format!("--log={}", log.display()),
            // Info: one line per message sent or received.
            "--log-level=info".into(),
            "--console-log-level=notice".into(),
            "--show-console-readout=false".into(),
            "--summary-interval=0".into(),
            "--enable-color=false".into(),
        ];
        args.push(torrent.to_str().unwrap().into());
        // aria2 prints on stdout, which `Proc` reads for `@` lines; its
        // console messages (and option errors) go to the watched log.
        let mut cmd = host.command("sh");
        cmd.args(["-c", "exec \"$@\" >&2", "sh", "aria2c"])
            .args(&args);
        let proc = Proc::spawn(name, cmd, lab.path());
        lab.watch_log(&format!("{name} (aria2 console on {})", host.ip), &proc.log);
        lab.watch_log(&format!("{name} (aria2 log on {})", host.ip), &log);
        Aria2 {
            proc,
            host: host.clone(),
        }
    }

    /// `aria2.tellStatus` over JSON-RPC.
    pub fn status(&self) -> Result<Aria2Status, String> {
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":"t","method":"aria2.tellStatus","params":["{ARIA2_GID}",["status","completedLength","totalLength","uploadLength","seeder","verifiedLength","errorMessage"]]}}"#
        );
        let addr = format!("127.0.0.1:{ARIA2_RPC_PORT}");
        let request = format!(
            "POST /jsonrpc HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let answer = self.host.exchange(&addr, request.as_bytes())?;
        let text = String::from_utf8_lossy(&answer);
        if !text.contains("\"result\"") {
            return Err(format!("aria2 RPC: {text}"));
        }
        let num = |k: &str| json_str(&text, k).and_then(|v| v.parse().ok());
        Ok(Aria2Status {
            status: json_str(&text, "status").unwrap_or_default().into(),
            completed: num("completedLength").unwrap_or(0),
            total: num("totalLength").unwrap_or(0),
            uploaded: num("uploadLength").unwrap_or(0),
            seeder: json_str(&text, "seeder") == Some("true"),
            verified: num("verifiedLength"),
            error: json_str(&text, "errorMessage").unwrap_or_default().into(),
        })
    }

    /// The status, or why there is none: it exited, or the torrent failed.
    pub fn check(&mut self) -> Result<Aria2Status, String> {
        if let Some(st) = self.proc.child.try_wait().unwrap() {
            return Err(format!("{} exited with {st}", self.proc.name));
        }
        // RPC listens a moment after the start: no answer is "not yet".
        let Ok(s) = self.status() else {
            return Ok(Aria2Status::default());
        };
        if s.status == "error" || s.status == "removed" {
            return Err(format!("{}: {s:?}", self.proc.name));
        }
        Ok(s)
    }

    /// Wait until the torrent is complete: every piece verified, by the
    /// check of the files or by downloading them.
    pub fn wait_complete(&mut self, lab: &Lab, timeout: Duration) -> Duration {
        let status_file = lab.path().join(format!("{}-status.txt", self.proc.name));
        lab.watch_log(
            &format!("{} (last aria2 tellStatus)", self.proc.name),
            &status_file,
        );
        let what = format!("{} completes", self.proc.name);
        lab.wait_until(timeout, &what, || {
            let s = self.check()?;
            let _ = std::fs::write(&status_file, format!("{s:#?}\n"));
            Ok(s.complete())
        })
    }
}

/// The string value of `"key":"..."` in a flat JSON object (aria2 gives
/// every number as a string).
fn json_str<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("\"{key}\":\"");
    let start = text.find(&pat)? + pat.len();
    let len = text[start..].find('"')?;
    Some(&text[start..start + len])
}

/// `opentracker` on `host`, whitelisting `info_hashes` (Debian builds it
/// in whitelist mode). It chroots into its own folder.
pub fn opentracker(lab: &Lab, host: &Host, info_hashes: &[&str]) -> Proc {
    let dir = lab.dir("opentracker");
    std::fs::write(dir.join("whitelist"), info_hashes.join("\n") + "\n").unwrap();
    let port = TRACKER_PORT.to_string();
    let mut cmd = host.command("opentracker");
    cmd.args(["-i", &host.ip.to_string(), "-p", &port, "-P", &port])
        // Read after the chroot into -d.
        .args(["-w", "/whitelist", "-d"])
        .arg(&dir);
    let p = Proc::spawn("opentracker", cmd, lab.path());
    lab.watch_log(&format!("opentracker on {}", host.ip), &p.log);
    p
}

/// `http://HOST:TRACKER_PORT/announce`.
pub fn announce_url(host: &Host) -> String {
    format!("http://{}/announce", host.addr(TRACKER_PORT))
}

/// Files whose contents the scenario compares.
pub fn same_bytes(a: &Path, b: &Path) -> Result<(), String> {
    let x = std::fs::read(a).map_err(|e| format!("{}: {e}", a.display()))?;
    let y = std::fs::read(b).map_err(|e| format!("{}: {e}", b.display()))?;
    if x.len() != y.len() {
        return Err(format!(
            "{}: {} bytes, expected {}",
            b.display(),
            y.len(),
            x.len()
        ));
    }
    match x.iter().zip(&y).position(|(p, q)| p != q) {
        Some(i) => Err(format!("{}: differs at byte {i}", b.display())),
        None => Ok(()),
    }
}
