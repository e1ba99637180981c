//! Magnet links on loopback: downloads that start from an info-hash (peers
//! from `x.pe` or a tracker), `info` fetching the metadata, the links the
//! command line refuses, and peers that lie about the metadata.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const FILES: &[(&str, usize)] = &[("m.bin", 3 << 20)];

fn info_hash_hex(torrent: &str) -> String {
    piecemeal::metainfo::Metainfo::load(std::path::Path::new(torrent))
        .unwrap()
        .info_hash_hex()
}

/// `download LINK` into `tmp/out`: it must exit 0 with the seeder's files.
fn download_ok(tmp: &TempDir, link: &str, seed_dir: &std::path::Path) -> Proc {
    let out = tmp.join("out");
    let mut dl = Proc::start(
        "leecher",
        tmp.path(),
        &["download", link, "-o", out.to_str().unwrap(), "--port", "0"],
        tmp.path(),
    );
    assert_eq!(dl.wait(Duration::from_secs(60)), 0, "{}", dl.log_text());
    assert_same_files(seed_dir, &out, FILES);
    dl
}

#[test]
fn a_magnet_link_with_a_peer_downloads_from_a_piecemeal_seeder() {
    let tmp = TempDir::new("magnet-xpe");
    // 16 KiB pieces: a metadata of several 16 KiB pieces.
    let (seed_dir, torrent) = seed_data(&tmp, FILES, "m.bin", &[], 16384);
    let (_seeder, port) = start_seeder(&tmp, &seed_dir, &torrent, &["--no-tracker"]);
    let link = format!(
        "magnet:?xt=urn:btih:{}&dn=m.bin&x.pe=127.0.0.1:{port}",
        info_hash_hex(&torrent)
    );
    let dl = download_ok(&tmp, &link, &seed_dir);
    assert!(dl.log_text().contains("metadata received: m.bin"));
}

#[test]
fn a_magnet_link_peer_given_by_host_name_is_looked_up_and_dialed() {
    // `localhost` comes from /etc/hosts: no DNS server is asked.
    let tmp = TempDir::new("magnet-xpe-name");
    let (seed_dir, torrent) = seed_data(&tmp, FILES, "m.bin", &[], 65536);
    let (_seeder, port) = start_seeder(&tmp, &seed_dir, &torrent, &["--no-tracker"]);
    let link = format!(
        "magnet:?xt=urn:btih:{}&x.pe=localhost:{port}",
        info_hash_hex(&torrent)
    );
    download_ok(&tmp, &link, &seed_dir);
}

#[test]
fn a_magnet_link_with_only_a_tracker_finds_the_seeder() {
    let tmp = TempDir::new("magnet-tr");
    let (_tracker, tport) = start_tracker(&tmp);
    let url = format!("http://127.0.0.1:{tport}/announce");
    let (seed_dir, torrent) = seed_data(&tmp, FILES, "m.bin", std::slice::from_ref(&url), 65536);
    let (seeder, _port) = start_seeder(&tmp, &seed_dir, &torrent, &[]);
    seeder.wait_log("announce", Duration::from_secs(20));
    // `tr` percent-encoded, as links carry it.
    let link = format!(
        "magnet:?xt=urn:btih:{}&tr={}",
        info_hash_hex(&torrent),
        url.replace(':', "%3A").replace('/', "%2F")
    );
    download_ok(&tmp, &link, &seed_dir);
}

#[test]
fn info_fetches_a_magnet_links_metadata_and_saves_it_as_a_torrent() {
    let tmp = TempDir::new("magnet-info");
    let (seed_dir, torrent) = seed_data(&tmp, FILES, "m.bin", &[], 16384);
    let (_seeder, port) = start_seeder(&tmp, &seed_dir, &torrent, &["--no-tracker"]);
    let hash = info_hash_hex(&torrent);
    let link = format!("magnet:?xt=urn:btih:{hash}&tr=udp://127.0.0.1:9/x");
    let saved = tmp.join("saved.torrent");
    let (code, stdout, stderr) = run(&[
        "info",
        &link,
        "--peer",
        &format!("127.0.0.1:{port}"),
        "--port",
        "0",
        "--no-tracker",
        "--save",
        saved.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains(&hash), "{stdout}");
    assert!(stdout.contains("m.bin"), "{stdout}");
    // The saved file is the same torrent, with the link's tracker.
    let m = piecemeal::metainfo::Metainfo::load(&saved).unwrap();
    assert_eq!(m.info_hash_hex(), hash);
    assert_eq!(
        m.tracker_tiers(),
        vec![vec!["udp://127.0.0.1:9/x".to_string()]]
    );
    let original = piecemeal::metainfo::Metainfo::load(std::path::Path::new(&torrent)).unwrap();
    assert_eq!(m.info_bytes, original.info_bytes);
}

#[test]
fn bad_magnet_links_exit_2_with_one_clear_line() {
    let tmp = TempDir::new("magnet-bad");
    let seed_dir = tmp.join("seed");
    std::fs::create_dir_all(&seed_dir).unwrap();
    let ok = format!("magnet:?xt=urn:btih:{}", "ab".repeat(20));
    for (args, want) in [
        (vec!["download", "magnet:?xt=urn:btih:1234"], "info-hash"),
        (vec!["download", "magnet:?dn=x"], "btih"),
        (vec!["info", "magnet:?xt=urn:btmh:1220aaaa"], "v2"),
        (
            vec!["seed", &ok, "-o", seed_dir.to_str().unwrap()],
            "not seeded",
        ),
    ] {
        let mut args = args.clone();
        args.extend(["--port", "0"]);
        let (code, _, stderr) = run(&args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        let line = stderr
            .lines()
            .find(|l| l.starts_with("piecemeal: "))
            .unwrap_or_else(|| panic!("{stderr}"));
        assert!(line.contains(want), "{args:?}: {line}");
    }
}

/// A scripted peer offering metadata over `ut_metadata`: `size` is the
/// `metadata_size` it states; each request is answered with the piece of
/// `metadata` (when given). Counts the requests it gets.
fn scripted_metadata_peer(
    info_hash: [u8; 20],
    size: u64,
    metadata: Option<Vec<u8>>,
) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let requests = Arc::new(AtomicUsize::new(0));
    let count = requests.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().take(8) {
            let Ok(mut s) = conn else { return };
            let count = count.clone();
            let metadata = metadata.clone();
            std::thread::spawn(move || {
                let _ = serve_metadata(&mut s, info_hash, size, metadata.as_deref(), &count);
            });
        }
    });
    (port, requests)
}

fn serve_metadata(
    s: &mut TcpStream,
    info_hash: [u8; 20],
    size: u64,
    metadata: Option<&[u8]>,
    requests: &AtomicUsize,
) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut hs = [0u8; 68];
    s.read_exact(&mut hs)?;
    let mut ours = handshake_bytes(&info_hash, &[b'S'; 20]);
    ours[25] |= 0x10; // BEP 10
    s.write_all(&ours)?;
    let ext = format!("d1:md11:ut_metadatai3ee13:metadata_sizei{size}ee");
    write_extended(s, 0, ext.as_bytes())?;
    let mut their_id = 0u8;
    loop {
        let mut len = [0u8; 4];
        s.read_exact(&mut len)?;
        let mut msg = vec![0u8; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut msg)?;
        if msg.first() != Some(&20) || msg.len() < 2 {
            continue;
        }
        let body = String::from_utf8_lossy(&msg[2..]).into_owned();
        if msg[1] == 0 {
            // Its handshake: the id it wants ut_metadata sent with.
            if let Some(i) = body.find("11:ut_metadatai") {
                let rest = &body[i + 15..];
                their_id = rest[..rest.find('e').unwrap()].parse().unwrap();
            }
            continue;
        }
        requests.fetch_add(1, Ordering::SeqCst);
        let (Some(m), Some(i)) = (metadata, body.find("5:piecei")) else {
            continue;
        };
        let rest = &body[i + 8..];
        let piece: usize = rest[..rest.find('e').unwrap()].parse().unwrap();
        let start = piece * 16384;
        let data = &m[start..m.len().min(start + 16384)];
        let mut out =
            format!("d8:msg_typei1e5:piecei{piece}e10:total_sizei{}ee", m.len()).into_bytes();
        out.extend_from_slice(data);
        write_extended(s, their_id, &out)?;
    }
}

fn write_extended(s: &mut TcpStream, id: u8, payload: &[u8]) -> std::io::Result<()> {
    let mut frame = ((payload.len() + 2) as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&[20, id]);
    frame.extend_from_slice(payload);
    s.write_all(&frame)
}

/// Two hostile peers before any honest one: one states a 2 GiB
/// `metadata_size` (never asked: over the limit), one sends metadata of
/// the right size that does not hash (dropped and banned). Then the honest
/// seeder appears, and its metadata and data are used.
#[test]
fn lying_metadata_peers_are_refused_and_an_honest_peers_metadata_is_used() {
    let tmp = TempDir::new("magnet-liars");
    let (seed_dir, torrent) = seed_data(&tmp, FILES, "m.bin", &[], 16384);
    let meta = piecemeal::metainfo::Metainfo::load(std::path::Path::new(&torrent)).unwrap();
    let forged: Vec<u8> = meta.info_bytes.iter().map(|b| b ^ 0x55).collect();
    let (huge_port, huge_requests) = scripted_metadata_peer(meta.info_hash, 2 << 30, None);
    let (liar_port, liar_requests) =
        scripted_metadata_peer(meta.info_hash, forged.len() as u64, Some(forged));
    // The seeder's port is known now; it starts once the liar is caught.
    let seed_port = free_port().to_string();
    let link = format!(
        "magnet:?xt=urn:btih:{}&x.pe=127.0.0.1:{huge_port}&x.pe=127.0.0.1:{liar_port}&x.pe=127.0.0.1:{seed_port}",
        meta.info_hash_hex()
    );
    let out = tmp.join("out");
    let mut dl = Proc::start(
        "leecher",
        tmp.path(),
        &[
            "download",
            &link,
            "-o",
            out.to_str().unwrap(),
            "--port",
            "0",
            "--verbose",
        ],
        tmp.path(),
    );
    dl.wait_log("does not hash to the info-hash", Duration::from_secs(30));
    assert!(liar_requests.load(Ordering::SeqCst) >= 1);
    let _seeder = Proc::start(
        "seeder",
        &seed_dir,
        &[
            "seed",
            &torrent,
            "--port",
            &seed_port,
            "--bind",
            "127.0.0.1",
            "--no-tracker",
        ],
        tmp.path(),
    );
    assert_eq!(dl.wait(Duration::from_secs(90)), 0, "{}", dl.log_text());
    assert_same_files(&seed_dir, &out, FILES);
    assert_eq!(
        huge_requests.load(Ordering::SeqCst),
        0,
        "a 2 GiB metadata_size is never asked for"
    );
    let log = dl.log_text();
    assert!(log.contains("over the"), "{log}");
}

/// A `.magnet` file in a watched folder is a download like a `.torrent`.
#[test]
fn a_magnet_file_in_a_watched_folder_is_downloaded() {
    let tmp = TempDir::new("magnet-watch");
    let (seed_dir, torrent) = seed_data(&tmp, FILES, "m.bin", &[], 65536);
    let (_seeder, port) = start_seeder(&tmp, &seed_dir, &torrent, &["--no-tracker"]);
    let watch = tmp.join("watch");
    std::fs::create_dir_all(&watch).unwrap();
    let out = tmp.join("out");
    let dl = Proc::start(
        "leecher",
        tmp.path(),
        &[
            "download",
            "--watch",
            watch.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--port",
            "0",
        ],
        tmp.path(),
    );
    let link = format!(
        "magnet:?xt=urn:btih:{}&x.pe=127.0.0.1:{port}\n",
        info_hash_hex(&torrent)
    );
    std::fs::write(watch.join("m.magnet"), link).unwrap();
    dl.wait_log("download complete", Duration::from_secs(60));
    assert_same_files(&seed_dir, &out, FILES);
}
