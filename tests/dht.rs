//! The DHT over real sockets: a private DHT of 32 `piecemeal dht` nodes,
//! each on its own loopback address (127.77.0.N, all on one port), a
//! seeder that knows only one of them and announces its torrent, some
//! nodes that leave (the seeder's own bootstrap node among them), and a
//! downloader with a magnet link (the info-hash alone) that knows another
//! node and no peer and no tracker: it finds the seeder through the DHT,
//! fetches the metadata from it and downloads. No test here, or anywhere,
//! bootstraps from the public routers (`--dht-node` is always given).

mod common;

use common::{Proc, TempDir, assert_same_files, free_port, make_torrent, write_files};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const NODES: usize = 32;

struct Kill(Vec<Child>);

impl Drop for Kill {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn ip(i: usize) -> String {
    format!("127.77.0.{}", i + 1)
}

/// The last `dht: N nodes` figure a node printed.
fn table_size(out: &std::path::Path) -> usize {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("dht: ")?.split(' ').next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn thirty_two_nodes_converge_and_a_magnet_download_finds_the_seeder_after_nodes_leave() {
    let tmp = TempDir::new("dht-32");
    let port = free_port();
    let mut nodes = Kill(Vec::new());
    for i in 0..NODES {
        let boot = format!("{}:{port}", ip(if i == 0 { 1 } else { 0 }));
        let out = std::fs::File::create(tmp.join(&format!("node{i}.out"))).unwrap();
        let err = std::fs::File::create(tmp.join(&format!("node{i}.log"))).unwrap();
        let child = Command::new(common::BIN)
            .args(["dht", "--bind", &ip(i), "--port", &port.to_string()])
            .args(["--dht-node", &boot, "--stats-every", "1", "--verbose"])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap();
        nodes.0.push(child);
    }
    // Converge: every table holds at least K = 8 nodes.
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let sizes: Vec<usize> = (0..NODES)
            .map(|i| table_size(&tmp.join(&format!("node{i}.out"))))
            .collect();
        if sizes.iter().all(|&s| s >= 8) {
            println!("tables: {sizes:?}");
            break;
        }
        assert!(Instant::now() < end, "tables did not fill: {sizes:?}");
        std::thread::sleep(Duration::from_millis(500));
    }

    let files = [("dht-data/file", 3_000_000usize)];
    let seed_dir = tmp.join("seed");
    write_files(&seed_dir, &files);
    let torrent = make_torrent(
        &seed_dir.join("dht-data"),
        &tmp.join("t.torrent"),
        &[],
        65536,
    );
    let torrent = torrent.to_str().unwrap();
    let seed_port = free_port().to_string();
    let boot5 = format!("{}:{port}", ip(5));
    let mut seeder = Proc::start(
        "seeder",
        &seed_dir,
        &[
            "seed",
            torrent,
            "--bind",
            "127.77.1.1",
            "--port",
            &seed_port,
            "--dht-node",
            &boot5,
            "--verbose",
        ],
        tmp.path(),
    );
    // Its announce reaches the nodes closest to the info-hash.
    seeder.wait_log("DHT lookup", Duration::from_secs(30));
    // Nodes leave, the seeder's bootstrap node among them.
    for i in [5, 6, 7, 8] {
        let _ = nodes.0[i].kill();
    }
    // The downloader has a magnet link with the info-hash alone.
    let meta = piecemeal::metainfo::Metainfo::load(std::path::Path::new(torrent)).unwrap();
    let link = format!("magnet:?xt=urn:btih:{}", meta.info_hash_hex());
    let dl = tmp.join("dl");
    let dl_port = free_port().to_string();
    let boot20 = format!("{}:{port}", ip(20));
    let mut leecher = Proc::start(
        "leecher",
        tmp.path(),
        &[
            "download",
            &link,
            "-o",
            dl.to_str().unwrap(),
            "--bind",
            "127.77.1.2",
            "--port",
            &dl_port,
            "--dht-node",
            &boot20,
            "--verbose",
        ],
        tmp.path(),
    );
    let code = leecher.wait(Duration::from_secs(90));
    assert_eq!(code, 0, "download failed:\n{}", leecher.log_text());
    assert_same_files(&seed_dir, &dl, &files);
    assert!(
        leecher.log_text().contains("new peers for torrent"),
        "peers came from the DHT"
    );
    // The state file was saved beside the data.
    assert!(dl.join(".piecemeal-dht.state").exists());
    seeder.terminate(Duration::from_secs(10));
}

#[test]
fn private_torrents_never_reach_the_dht() {
    let tmp = TempDir::new("dht-off");
    let files = [("p/file", 200_000usize)];
    let seed_dir = tmp.join("seed");
    write_files(&seed_dir, &files);
    let bytes = piecemeal::metainfo::create(
        &seed_dir.join("p"),
        &piecemeal::metainfo::CreateOptions {
            trackers: Vec::new(),
            piece_len: Some(65536),
            private: true,
            comment: None,
            created_by: None,
            creation_date: None,
        },
    )
    .unwrap();
    std::fs::write(tmp.join("p.torrent"), bytes).unwrap();
    let port = free_port();
    // A DHT node that counts what reaches it.
    let mut node = Kill(vec![
        Command::new(common::BIN)
            .args([
                "dht",
                "--bind",
                "127.78.0.1",
                "--port",
                &port.to_string(),
                "--stats-every",
                "1",
            ])
            .stdout(std::fs::File::create(tmp.join("node.out")).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    ]);
    let boot = format!("127.78.0.1:{port}");
    let seed_port = free_port().to_string();
    let mut seeder = Proc::start(
        "private-seeder",
        &seed_dir,
        &[
            "seed",
            tmp.join("p.torrent").to_str().unwrap(),
            "--bind",
            "127.78.0.2",
            "--port",
            &seed_port,
            "--dht-node",
            &boot,
            "--verbose",
        ],
        tmp.path(),
    );
    std::thread::sleep(Duration::from_secs(4));
    seeder.terminate(Duration::from_secs(10));
    let _ = node.0[0].kill();
    let out = std::fs::read_to_string(tmp.join("node.out")).unwrap();
    let last = out.lines().last().unwrap_or("").to_string();
    assert!(
        last.contains("0 stored peers"),
        "a private torrent reached the DHT: {last}"
    );
    assert!(
        !seeder.log_text().contains("DHT lookup"),
        "{}",
        seeder.log_text()
    );
}

#[test]
fn a_restarted_node_bootstraps_from_its_saved_table() {
    let tmp = TempDir::new("dht-restart");
    let port = free_port();
    let ip = |i: usize| format!("127.79.0.{}", i + 1);
    let mut nodes = Kill(Vec::new());
    for i in 0..12 {
        nodes.0.push(
            Command::new(common::BIN)
                .args(["dht", "--bind", &ip(i), "--port", &port.to_string()])
                .args([
                    "--dht-node",
                    &format!("{}:{port}", ip(0)),
                    "--stats-every",
                    "1",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
    }
    let state = tmp.join("state");
    std::fs::create_dir_all(&state).unwrap();
    let run = |name: &str, boot: Option<String>| {
        let out = tmp.join(&format!("{name}.out"));
        let mut cmd = Command::new(common::BIN);
        cmd.args(["dht", "--bind", "127.79.1.1", "--port", &port.to_string()])
            .args(["--state-dir", state.to_str().unwrap(), "--stats-every", "1"]);
        if let Some(b) = boot {
            cmd.args(["--dht-node", &b]);
        }
        let child = cmd
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(tmp.join(&format!("{name}.log"))).unwrap())
            .spawn()
            .unwrap();
        (child, out)
    };
    let wait_table = |out: &std::path::Path, what: &str| {
        let end = Instant::now() + Duration::from_secs(45);
        while table_size(out) < 8 {
            assert!(Instant::now() < end, "{what}: table {}", table_size(out));
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    // Let the 12 find each other first.
    std::thread::sleep(Duration::from_secs(3));
    let (mut first, out1) = run("first", Some(format!("{}:{port}", ip(3))));
    wait_table(&out1, "first run");
    // A polite stop (SIGTERM) saves the state file.
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(first.id() as i32, libc::SIGTERM) };
    let _ = first.wait();
    assert!(state.join(".piecemeal-dht.state").exists());
    // No --dht-node this time: the saved nodes are the only way in.
    let (second, out2) = run("second", None);
    let mut second = Kill(vec![second]);
    wait_table(&out2, "restart from the state file");
    let _ = second.0[0].kill();
}
