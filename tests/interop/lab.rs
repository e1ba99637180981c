//! A private test network: one network namespace per test host, all joined
//! by a bridge in a hub namespace. Hosts get 10.99.0.N/24 on `eth0`; the
//! namespaces have no other link, so nothing can leave the machine.
//!
//! ```text
//!   pmPID-TAG-h1 (10.99.0.1) eth0 ─┐
//!   pmPID-TAG-h2 (10.99.0.2) eth0 ─┼─ vN ── br0  [pmPID-TAG-hub]
//!   pmPID-TAG-h3 (10.99.0.3) eth0 ─┘
//! ```
//!
//! Every lab is its own set of namespaces, so two labs (tests run in
//! parallel) may use the same addresses and ports. The namespaces are
//! deleted on drop, also when the test panics; start processes after the
//! lab so that they are dropped (killed) first.

use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::common::TempDir;

/// Prefix of every namespace name the suite makes: `pmi<PID>-`.
const PREFIX: &str = "pmi";

pub struct Lab {
    pub name: String,
    pub hosts: Vec<Host>,
    pub tmp: TempDir,
    namespaces: Vec<String>,
    /// (label, path) of every log a failure should print.
    logs: Mutex<Vec<(String, PathBuf)>>,
}

/// One test host: a namespace with one address.
#[derive(Clone, Debug)]
pub struct Host {
    pub ns: String,
    pub ip: Ipv4Addr,
}

impl Host {
    /// `PROGRAM` run inside this host's namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns]).arg(program);
        c
    }

    /// `IP:PORT` on this host.
    pub fn addr(&self, port: u16) -> String {
        format!("{}:{port}", self.ip)
    }

    /// Send `request` to `addr` from inside this host's namespace and read
    /// the answer until the server closes (at most 5 s). For HTTP/1.0
    /// exchanges with the trackers and aria2's RPC.
    pub fn exchange(&self, addr: &str, request: &[u8]) -> Result<Vec<u8>, String> {
        let ns = self.ns.clone();
        let addr = addr.to_string();
        let request = request.to_vec();
        std::thread::spawn(move || -> Result<Vec<u8>, String> {
            let f =
                std::fs::File::open(format!("/var/run/netns/{ns}")).map_err(|e| e.to_string())?;
            // This thread only: it joins the namespace and ends.
            let rc =
                unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) };
            if rc != 0 {
                return Err(format!("setns: {}", std::io::Error::last_os_error()));
            }
            let mut s = std::net::TcpStream::connect(&addr).map_err(|e| format!("{addr}: {e}"))?;
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.write_all(&request).map_err(|e| e.to_string())?;
            let mut out = Vec::new();
            s.read_to_end(&mut out).map_err(|e| e.to_string())?;
            Ok(out)
        })
        .join()
        .unwrap()
    }
}

/// Run `ip ARGS`; panic with its stderr when it fails.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("cannot run `ip` (iproute2 missing?)");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Lab {
    /// A lab named `tag` (short, unique among the suite's tests) with `n`
    /// hosts.
    pub fn new(tag: &str, n: usize) -> Lab {
        assert!(n < 200);
        remove_stale_namespaces();
        let pid = std::process::id();
        let name = format!("{PREFIX}{pid}-{tag}");
        let mut lab = Lab {
            name: name.clone(),
            hosts: Vec::new(),
            tmp: TempDir::new(&format!("interop-{tag}")),
            namespaces: Vec::new(),
            logs: Mutex::new(Vec::new()),
        };
        let hub = format!("{name}-hub");
        lab.add_namespace(&hub);
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &hub, "link", "set", "br0", "up"]);
        for i in 1..=n {
            let ns = format!("{name}-h{i}");
            lab.add_namespace(&ns);
            let port = format!("v{i}");
            // Both ends are made inside their namespaces: no name in the
            // root namespace is ever taken.
            ip(&[
                "link", "add", "eth0", "netns", &ns, "type", "veth", "peer", "name", &port,
                "netns", &hub,
            ]);
            ip(&["-n", &hub, "link", "set", &port, "master", "br0"]);
            ip(&["-n", &hub, "link", "set", &port, "up"]);
            let addr = Ipv4Addr::new(10, 99, 0, i as u8);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
            lab.hosts.push(Host { ns, ip: addr });
        }
        lab
    }

    fn add_namespace(&mut self, ns: &str) {
        ip(&["netns", "add", ns]);
        self.namespaces.push(ns.to_string());
        ip(&["-n", ns, "link", "set", "lo", "up"]);
    }

    /// Host `i`, counted from 1 like the addresses.
    pub fn host(&self, i: usize) -> &Host {
        &self.hosts[i - 1]
    }

    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// A folder inside the lab's temp folder (made if missing).
    pub fn dir(&self, name: &str) -> PathBuf {
        let d = self.tmp.join(name);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// Print this log (its tail) when the scenario fails.
    pub fn watch_log(&self, label: &str, path: &Path) {
        self.logs
            .lock()
            .unwrap()
            .push((label.to_string(), path.to_path_buf()));
    }

    /// The tail of every watched log.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for (label, path) in self.logs.lock().unwrap().iter() {
            let mut text = String::new();
            if let Ok(mut f) = std::fs::File::open(path) {
                let _ = f.read_to_string(&mut text);
            }
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(150);
            out.push_str(&format!(
                "\n===== {label} ({}; last {} of {} lines) =====\n",
                path.display(),
                lines.len() - from,
                lines.len()
            ));
            for l in &lines[from..] {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    /// Fail the scenario: `what`, then the logs of every side.
    pub fn fail(&self, what: &str) -> ! {
        panic!("[{}] {what}\n{}", self.name, self.logs())
    }

    /// Poll `cond` every 200 ms until it returns `Ok(true)`; fail with the
    /// logs after `timeout` or on `Err` (e.g. a process exited). Returns the
    /// time it took.
    pub fn wait_until(
        &self,
        timeout: Duration,
        what: &str,
        mut cond: impl FnMut() -> Result<bool, String>,
    ) -> Duration {
        let start = Instant::now();
        loop {
            match cond() {
                Ok(true) => return start.elapsed(),
                Ok(false) => {}
                Err(e) => self.fail(&format!("{what}: {e}")),
            }
            if start.elapsed() > timeout {
                self.fail(&format!("{what}: not within {timeout:?}"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// Delete namespaces left by suite runs whose process is gone (a run that
/// was killed before its drops ran).
fn remove_stale_namespaces() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let ns = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = ns.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}
