//! Helpers for the loopback integration tests: temp folders, test data,
//! torrents, and `piecemeal` child processes whose `@status` lines are read.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_piecemeal");

/// A folder removed on drop (kept when the test fails, for the logs).
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("pm-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Deterministic pseudo-random bytes.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Write files (relative path, length) under `root`.
pub fn write_files(root: &Path, files: &[(&str, usize)]) {
    for (i, (path, len)) in files.iter().enumerate() {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, pseudo_random(*len, i as u64 + 1)).unwrap();
    }
}

/// The awkward multi-file layout: zero-length files, a file smaller than a
/// block, boundaries in the middle of pieces, a short last piece.
pub const AWKWARD: &[(&str, usize)] = &[
    ("awkward/a/empty", 0),
    ("awkward/a/tiny", 100),
    ("awkward/b/mid", 50_000),
    ("awkward/b/empty2", 0),
    ("awkward/c/big", 3_000_001),
    ("awkward/c/small", 16_383),
    ("awkward/d/last", 1_000_000),
];

/// Make a .torrent for `path` with the library, return its path.
pub fn make_torrent(path: &Path, out: &Path, trackers: &[String], piece_len: u32) -> PathBuf {
    let bytes = piecemeal::metainfo::create(
        path,
        &piecemeal::metainfo::CreateOptions {
            trackers: trackers.to_vec(),
            piece_len: Some(piece_len),
            private: false,
            comment: None,
            created_by: None,
            creation_date: None,
        },
    )
    .unwrap();
    std::fs::write(out, bytes).unwrap();
    out.to_path_buf()
}

/// A free TCP port on loopback (bound and released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Numbers from a child's latest `@status` / `@done` line.
#[derive(Clone, Debug, Default)]
pub struct Status {
    pub have: u64,
    pub num: u64,
    pub downloaded: u64,
    pub uploaded: u64,
    pub done: bool,
}

/// A running `piecemeal` child. Killed on drop.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub status: Arc<Mutex<Status>>,
    pub last_line: Arc<Mutex<String>>,
    pub log: PathBuf,
}

impl Proc {
    /// Start `piecemeal ARGS` in `cwd` with `--machine` status lines.
    pub fn start(name: &str, cwd: &Path, args: &[&str], log_dir: &Path) -> Proc {
        let mut cmd = Command::new(BIN);
        cmd.args(args).arg("--machine").current_dir(cwd);
        Proc::spawn(name, cmd, log_dir)
    }

    /// Start any prepared command: stderr goes to `LOG_DIR/NAME.log`, stdout
    /// is read for `@status` / `@done` lines (the latest `@` line is kept
    /// whole in `last_line` for programs with other fields).
    pub fn spawn(name: &str, mut cmd: Command, log_dir: &Path) -> Proc {
        let log = log_dir.join(format!("{name}.log"));
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: cannot start {cmd:?}: {e}"));
        let status = Arc::new(Mutex::new(Status::default()));
        let last_line = Arc::new(Mutex::new(String::new()));
        let out = child.stdout.take().unwrap();
        let s = status.clone();
        let last = last_line.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let mut f = line.split_whitespace();
                let tag = f.next().unwrap_or("");
                let n: Vec<u64> = f.filter_map(|v| v.parse().ok()).collect();
                if (tag == "@status" || tag == "@done") && n.len() >= 7 {
                    let mut st = s.lock().unwrap();
                    st.have = n[0];
                    st.num = n[1];
                    st.downloaded = n[2];
                    st.uploaded = n[3];
                    st.done |= tag == "@done";
                }
                if tag.starts_with('@') {
                    *last.lock().unwrap() = line.clone();
                    if tag == "@done" {
                        s.lock().unwrap().done = true;
                    }
                }
            }
        });
        Proc {
            name: name.into(),
            child,
            status,
            last_line,
            log,
        }
    }

    pub fn status(&self) -> Status {
        self.status.lock().unwrap().clone()
    }

    /// The latest line on stdout that starts with `@`.
    pub fn last_line(&self) -> String {
        self.last_line.lock().unwrap().clone()
    }

    pub fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Wait for exit; panic with the log after `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> i32 {
        let end = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                // Let the reader thread see the last lines.
                std::thread::sleep(Duration::from_millis(50));
                return st.code().unwrap_or(-1);
            }
            if Instant::now() > end {
                panic!(
                    "{} did not exit within {timeout:?}; log:\n{}",
                    self.name,
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait until `cond` holds for the status; panic with the log after `timeout`.
    pub fn wait_for(&mut self, timeout: Duration, what: &str, cond: impl Fn(&Status) -> bool) {
        let end = Instant::now() + timeout;
        while !cond(&self.status()) {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!(
                    "{} exited ({st}) before {what}; log:\n{}",
                    self.name,
                    self.log_text()
                );
            }
            if Instant::now() > end {
                panic!(
                    "{}: no {what} within {timeout:?}; log:\n{}",
                    self.name,
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then wait.
    /// Wait until the log holds `needle`; fails the test with the log
    /// after `timeout`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) {
        let end = Instant::now() + timeout;
        while !self.log_text().contains(needle) {
            assert!(
                Instant::now() < end,
                "{}: no {needle:?} in the log within {timeout:?}:\n{}",
                self.name,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn terminate(&mut self, timeout: Duration) -> i32 {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        self.wait(timeout)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every file under `a` has an identical twin under `b`.
pub fn assert_same_files(a: &Path, b: &Path, files: &[(&str, usize)]) {
    for (path, len) in files {
        let x = std::fs::read(a.join(path))
            .unwrap_or_else(|e| panic!("{}: {e}", a.join(path).display()));
        let y = std::fs::read(b.join(path))
            .unwrap_or_else(|e| panic!("{}: {e}", b.join(path).display()));
        assert_eq!(x.len(), *len, "{path}: length");
        assert!(x == y, "{path}: contents differ");
    }
}

/// Send raw bytes to a loopback port and read the whole answer (until close
/// or `timeout`).
pub fn http_exchange(port: u16, request: &[u8], timeout: Duration) -> Vec<u8> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(timeout)).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

/// Start `piecemeal seed TORRENT` on a free loopback port with `extra`
/// arguments, from `seed_dir`, and wait until it accepts connections.
/// Returns the seeder and its port (as the string the CLI takes).
pub fn start_seeder(
    tmp: &TempDir,
    seed_dir: &Path,
    torrent: &str,
    extra: &[&str],
) -> (Proc, String) {
    let port = free_port().to_string();
    let mut args = vec!["seed", torrent, "--port", &port, "--bind", "127.0.0.1"];
    args.extend_from_slice(extra);
    let mut seeder = Proc::start("seeder", seed_dir, &args, tmp.path());
    let end = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap())).is_err() {
        if let Ok(Some(st)) = seeder.child.try_wait() {
            panic!("seeder exited ({st}):\n{}", seeder.log_text());
        }
        assert!(
            Instant::now() < end,
            "seeder did not listen:\n{}",
            seeder.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (seeder, port)
}

/// Pieces the start-up re-check found on disk, from a `--verbose` or
/// default log ("N of M pieces already verified on disk").
pub fn verified_at_start(log: &str) -> Option<u64> {
    let line = log
        .lines()
        .find(|l| l.contains("pieces already verified on disk"))?;
    let after = line.split(": ").last()?;
    after.split_whitespace().next()?.parse().ok()
}

/// Start `piecemeal tracker` (30 s interval) on a free loopback port and
/// wait until it accepts connections.
pub fn start_tracker(tmp: &TempDir) -> (Proc, u16) {
    let port = free_port();
    let p = Proc::start(
        "tracker",
        tmp.path(),
        &[
            "tracker",
            "--bind",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--interval",
            "30",
        ],
        tmp.path(),
    );
    for _ in 0..250 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return (p, port);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("tracker did not start: {}", p.log_text());
}

/// `files` written under `tmp/seed` and a torrent of `seed/<root>` (a file
/// or a folder) with `trackers`, as `tmp/t.torrent`. Returns the seed folder
/// and the torrent's path as the CLI takes it.
pub fn seed_data(
    tmp: &TempDir,
    files: &[(&str, usize)],
    root: &str,
    trackers: &[String],
    piece_len: u32,
) -> (PathBuf, String) {
    let seed_dir = tmp.join("seed");
    write_files(&seed_dir, files);
    let torrent = make_torrent(
        &seed_dir.join(root),
        &tmp.join("t.torrent"),
        trackers,
        piece_len,
    );
    (seed_dir, torrent.to_str().unwrap().to_string())
}

/// `download TORRENT -o OUT --peer PEER --port 0 --verbose`: a leecher of
/// one given peer, with a debug log.
pub fn download_args<'a>(torrent: &'a str, out: &'a Path, peer: &'a str) -> Vec<&'a str> {
    vec![
        "download",
        torrent,
        "-o",
        out.to_str().unwrap(),
        "--peer",
        peer,
        "--port",
        "0",
        "--verbose",
    ]
}

/// A hybrid v1+v2 torrent of the folder `root/name`, shaped the way
/// libtorrent makes them (its default): after every non-empty file that
/// does not end on a piece boundary, the last one included, a BEP 47 pad
/// file (`attr` `p`, path `.pad/<length>`; two pads of one length share a
/// path). `files` are paths below `root`, each starting with `name/`, in
/// torrent order. The v1 piece hashes cover the pads as zeros. The v2 side
/// is `meta version` 2 and a `file tree` whose `pieces root`s are
/// placeholders: piecemeal reads only the v1 side.
pub fn padded_hybrid_torrent(
    root: &Path,
    name: &str,
    files: &[(&str, usize)],
    piece_len: u32,
) -> Vec<u8> {
    use piecemeal::bencode::Writer;
    use sha1::{Digest, Sha1};
    use std::collections::BTreeMap;

    enum Node {
        Dir(BTreeMap<String, Node>),
        File(u64),
    }
    fn write_tree(w: &mut Writer, dir: &BTreeMap<String, Node>) {
        w.dict();
        for (k, node) in dir {
            w.str(k);
            match node {
                Node::Dir(d) => write_tree(w, d),
                Node::File(len) => {
                    w.dict().str("").dict().str("length").int(*len as i64);
                    if *len > 0 {
                        w.str("pieces root").bytes(&[0xab; 32]);
                    }
                    w.end().end();
                }
            }
        }
        w.end();
    }

    let piece = piece_len as usize;
    let mut stream = Vec::new();
    // (attr, length, path)
    let mut entries: Vec<(&str, usize, Vec<String>)> = Vec::new();
    let mut tree = BTreeMap::new();
    for (path, len) in files {
        let data = std::fs::read(root.join(path)).unwrap();
        assert_eq!(data.len(), *len, "{path}");
        let comps: Vec<String> = path
            .strip_prefix(&format!("{name}/"))
            .unwrap_or_else(|| panic!("{path} is not below {name}/"))
            .split('/')
            .map(String::from)
            .collect();
        let mut dir = &mut tree;
        let (file, parents) = comps.split_last().unwrap();
        for c in parents {
            let Node::Dir(d) = dir
                .entry(c.clone())
                .or_insert_with(|| Node::Dir(BTreeMap::new()))
            else {
                panic!("{c} is a file")
            };
            dir = d;
        }
        dir.insert(file.clone(), Node::File(*len as u64));
        stream.extend_from_slice(&data);
        entries.push(("", *len, comps));
        let pad = (piece - stream.len() % piece) % piece;
        if *len > 0 && pad > 0 {
            stream.resize(stream.len() + pad, 0);
            entries.push(("p", pad, vec![".pad".into(), pad.to_string()]));
        }
    }
    let pieces: Vec<u8> = stream
        .chunks(piece)
        .flat_map(|c| Sha1::digest(c).to_vec())
        .collect();

    let mut w = Writer::new();
    w.dict().str("info").dict();
    w.str("file tree");
    write_tree(&mut w, &tree);
    w.str("files").list();
    for (attr, len, comps) in &entries {
        w.dict();
        if !attr.is_empty() {
            w.str("attr").str(attr);
        }
        w.str("length").int(*len as i64).str("path").list();
        for c in comps {
            w.str(c);
        }
        w.end().end();
    }
    w.end();
    w.str("meta version").int(2);
    w.str("name").str(name);
    w.str("piece length").int(i64::from(piece_len));
    w.str("pieces").bytes(&pieces);
    w.end().end();
    w.finish()
}

/// Every file and folder below `dir`, as paths relative to it with `/`
/// (piecemeal's `.piecemeal-*` state files at the top left out).
pub fn tree_of(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            // piecemeal's own state beside the data (resume data, the
            // DHT's state) is not part of the torrent's tree.
            if d == dir
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(".piecemeal-"))
            {
                continue;
            }
            out.push(
                p.strip_prefix(dir)
                    .unwrap()
                    .to_string_lossy()
                    .replace('\\', "/"),
            );
            if p.is_dir() {
                todo.push(p);
            }
        }
    }
    out.sort();
    out
}

/// A seeder's files, its torrent and what a scripted peer needs to know.
pub struct SeedFixture {
    pub tmp: TempDir,
    pub seed_dir: PathBuf,
    pub torrent: String,
    pub info_hash: [u8; 20],
    pub num_pieces: u32,
    pub data: Vec<u8>,
}

/// `files` written under `tmp/seed` (a fresh temp folder called `name`)
/// and the torrent of `seed/<root>` with `piece_len`-byte pieces; `data`
/// is the first file's bytes.
pub fn seed_fixture(
    name: &str,
    files: &[(&str, usize)],
    root: &str,
    piece_len: u32,
) -> SeedFixture {
    let tmp = TempDir::new(name);
    let seed_dir = tmp.join("seed");
    write_files(&seed_dir, files);
    let torrent = make_torrent(&seed_dir.join(root), &tmp.join("f.torrent"), &[], piece_len);
    let meta = piecemeal::metainfo::Metainfo::load(&torrent).unwrap();
    let data = std::fs::read(seed_dir.join(files[0].0)).unwrap();
    SeedFixture {
        info_hash: meta.info_hash,
        num_pieces: meta.geometry().num_pieces,
        torrent: torrent.to_str().unwrap().to_string(),
        tmp,
        seed_dir,
        data,
    }
}

/// Run `piecemeal ARGS` to the end: (exit code, stdout, stderr).
pub fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let o = Command::new(BIN).args(args).output().unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A plaintext BitTorrent handshake (no extension bits), as a scripted peer
/// sends it.
pub fn handshake_bytes(info_hash: &[u8; 20], peer_id: &[u8; 20]) -> Vec<u8> {
    let mut out = vec![19];
    out.extend_from_slice(b"BitTorrent protocol");
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(info_hash);
    out.extend_from_slice(peer_id);
    out
}
