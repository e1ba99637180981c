//! Interop with libtorrent-rasterbar 2.0 (Debian's `python3-libtorrent`,
//! driven by `tests/interop/lt_driver.py`), Transmission 3.00
//! (`transmission-daemon` + `transmission-remote`) and aria2 1.36 (`aria2c`,
//! watched through its JSON-RPC), plus `opentracker` and `mktorrent`. Every
//! scenario runs on its own private network of network namespaces (see
//! `interop/lab.rs`); every download is compared byte for byte with the
//! seeder's files; a scenario that does not finish in time fails with the
//! logs of every side. `docs/interop.md` has the matrix.
//!
//! Needs root (for `ip netns`) and the Debian packages that `.ci/run`
//! installs. A missing tool is a failure, never a skip.

#[path = "interop/clients.rs"]
mod clients;
mod common;
#[path = "interop/lab.rs"]
mod lab;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use clients::*;
use common::{AWKWARD, make_torrent, write_files};
use lab::{Host, Lab};

/// Bound for one transfer. Transmission's choke/interest timers leave the
/// first seconds of a connection idle, so this is generous.
const TRANSFER: Duration = Duration::from_secs(120);
const STARTUP: Duration = Duration::from_secs(60);
const MIB: usize = 1 << 20;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Lt,
    Tr,
    Aria2,
}

/// What a scenario shares: files under `seed_root`, their `.torrent`.
struct Data {
    seed_root: PathBuf,
    files: Vec<(String, usize)>,
    torrent: PathBuf,
}

#[derive(Clone, Copy)]
enum Set {
    /// One 64 MiB file, 256 KiB pieces.
    Big,
    /// One 12 MiB file, 64 KiB pieces (swarms and tracker scenarios).
    Medium,
    /// `common::AWKWARD`: zero-length files, a file smaller than a block,
    /// file boundaries inside pieces, a short last piece; 64 KiB pieces.
    Awkward,
}

fn make_data(lab: &Lab, set: Set, trackers: &[String]) -> Data {
    let seed_root = lab.dir("seed");
    let torrent = lab.path().join("t.torrent");
    let files: Vec<(String, usize)> = match set {
        Set::Big | Set::Medium => {
            let (name, len, piece) = match set {
                Set::Big => ("big.bin", 64 * MIB, 256 * 1024),
                _ => ("medium.bin", 12 * MIB, 64 * 1024),
            };
            write_files(&seed_root, &[(name, len)]);
            make_torrent(&seed_root.join(name), &torrent, trackers, piece);
            vec![(name.to_string(), len)]
        }
        Set::Awkward => {
            write_files(&seed_root, AWKWARD);
            make_torrent(&seed_root.join("awkward"), &torrent, trackers, 65536);
            AWKWARD.iter().map(|(p, l)| (p.to_string(), *l)).collect()
        }
    };
    Data {
        seed_root,
        files,
        torrent,
    }
}

/// How a downloader's zero-length files are judged.
#[derive(Clone, Copy, PartialEq)]
enum Empty {
    /// They must exist (and be empty).
    Required,
    /// Transmission 3.00 never creates them: absent is accepted, anything
    /// else than absent or empty is not.
    MayBeMissing,
}

/// Compare every file of `data` under `got_root` with the seeder's. Retries
/// for a few seconds: a client may still be flushing its cache when it says
/// it is complete.
fn verify(lab: &Lab, data: &Data, got_root: &Path, empty: Empty) {
    let check = || -> Result<(), String> {
        for (path, len) in &data.files {
            let got = got_root.join(path);
            if *len == 0 {
                match std::fs::metadata(&got) {
                    Ok(m) if m.len() == 0 => continue,
                    Ok(m) => return Err(format!("{path}: {} bytes, expected 0", m.len())),
                    Err(_) if empty == Empty::MayBeMissing => continue,
                    Err(e) => return Err(format!("zero-length {path} not created: {e}")),
                }
            }
            same_bytes(&data.seed_root.join(path), &got)?;
        }
        Ok(())
    };
    let mut last = Ok(());
    for _ in 0..50 {
        last = check();
        if last.is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    lab.fail(&format!(
        "download differs from the seed: {}",
        last.unwrap_err()
    ));
}

/// Zero-length files of `data` that are missing under `got_root`.
fn missing_empty_files(data: &Data, got_root: &Path) -> Vec<String> {
    data.files
        .iter()
        .filter(|(p, l)| *l == 0 && !got_root.join(p).exists())
        .map(|(p, _)| p.clone())
        .collect()
}

/// Another client, seeding or downloading.
enum Other {
    Lt(Lt),
    Tr(Transmission),
    Aria2(Aria2),
}

impl Other {
    /// Start `kind` seeding `data` on `host` (`up_limit` in bytes/s).
    /// Returns once it has checked the files and seeds.
    fn seed(kind: Kind, lab: &Lab, host: &Host, data: &Data, up_limit: Option<u32>) -> Other {
        match kind {
            Kind::Lt => {
                let limit = up_limit.map(|l| l.to_string());
                let mut args = vec![];
                if let Some(l) = &limit {
                    args = vec!["--upload-limit", l.as_str()];
                }
                let mut lt = Lt::start(
                    lab,
                    host,
                    "lt-seed",
                    "seed",
                    &data.torrent,
                    &data.seed_root,
                    &args,
                );
                lt.wait_seeding(lab, STARTUP);
                Other::Lt(lt)
            }
            Kind::Tr => {
                let mut tr = Transmission::start(
                    lab,
                    host,
                    "tr-seed",
                    &data.seed_root,
                    up_limit.map(|l| l / 1024),
                );
                tr.add(lab, &data.torrent);
                tr.wait_complete(lab, STARTUP);
                Other::Tr(tr)
            }
            Kind::Aria2 => {
                let mut a = Aria2::start(
                    lab,
                    host,
                    "aria2-seed",
                    &data.torrent,
                    &data.seed_root,
                    true,
                    up_limit,
                );
                a.wait_complete(lab, STARTUP);
                Other::Aria2(a)
            }
        }
    }

    /// Start `kind` downloading `data` into `dir` on `host`. libtorrent
    /// dials `peers`; Transmission and aria2 cannot be told of a peer (see
    /// `dials_given_peers`).
    fn download(
        kind: Kind,
        lab: &Lab,
        host: &Host,
        data: &Data,
        dir: &Path,
        peers: &[String],
    ) -> Other {
        match kind {
            Kind::Lt => {
                let mut args = vec!["--seed"];
                for p in peers {
                    args.push("--peer");
                    args.push(p);
                }
                Other::Lt(Lt::start(
                    lab,
                    host,
                    "lt-leech",
                    "download",
                    &data.torrent,
                    dir,
                    &args,
                ))
            }
            Kind::Tr => {
                let tr = Transmission::start(lab, host, "tr-leech", dir, None);
                tr.add(lab, &data.torrent);
                Other::Tr(tr)
            }
            Kind::Aria2 => Other::Aria2(Aria2::start(
                lab,
                host,
                "aria2-leech",
                &data.torrent,
                dir,
                false,
                None,
            )),
        }
    }

    /// Whether `kind` can be told to dial a peer. Transmission's RPC has no
    /// call for it and aria2 1.36 no option: they learn peers from a tracker
    /// or from incoming connections, so piecemeal dials them.
    fn dials_given_peers(kind: Kind) -> bool {
        kind == Kind::Lt
    }

    /// Its listening address.
    fn addr(kind: Kind, host: &Host) -> String {
        host.addr(match kind {
            Kind::Lt => LT_PORT,
            Kind::Tr => TR_PORT,
            Kind::Aria2 => ARIA2_PORT,
        })
    }

    fn wait_done(&mut self, lab: &Lab, timeout: Duration) -> Duration {
        match self {
            Other::Lt(lt) => lt.wait_done(lab, timeout),
            Other::Tr(tr) => tr.wait_complete(lab, timeout),
            Other::Aria2(a) => a.wait_complete(lab, timeout),
        }
    }

    /// Whether the download is complete, without waiting.
    fn is_done(&mut self, lab: &Lab) -> Result<bool, String> {
        match self {
            Other::Lt(lt) => {
                if let Some(st) = lt.proc.child.try_wait().unwrap() {
                    return Err(format!("{} exited with {st}", lt.proc.name));
                }
                Ok(lt.done())
            }
            Other::Tr(tr) => {
                if let Some(st) = tr.proc.child.try_wait().unwrap() {
                    return Err(format!("{} exited with {st}", tr.name));
                }
                Ok(tr.info(lab).percent_done >= 100.0)
            }
            Other::Aria2(a) => Ok(a.check()?.complete()),
        }
    }

    /// Payload bytes it has uploaded (approximate for Transmission).
    fn uploaded(&self, lab: &Lab) -> u64 {
        match self {
            Other::Lt(lt) => lt.status().uploaded,
            Other::Tr(tr) => tr.info(lab).uploaded as u64,
            Other::Aria2(a) => a.status().map(|s| s.uploaded).unwrap_or(0),
        }
    }

    fn empty_files(kind: Kind) -> Empty {
        match kind {
            Kind::Lt | Kind::Aria2 => Empty::Required,
            Kind::Tr => Empty::MayBeMissing,
        }
    }
}

fn name(kind: Kind) -> &'static str {
    match kind {
        Kind::Lt => "libtorrent",
        Kind::Tr => "transmission",
        Kind::Aria2 => "aria2",
    }
}

// ---------------------------------------------------------------------------
// 1. They seed, piecemeal downloads.

fn they_seed_piecemeal_downloads(kind: Kind, set: Set, tag: &str) {
    let lab = Lab::new(tag, 2);
    let data = make_data(&lab, set, &[]);
    let (h1, h2) = (lab.host(1).clone(), lab.host(2).clone());
    let _seeder = Other::seed(kind, &lab, &h1, &data, None);
    let dl = lab.dir("dl");
    let peer = Other::addr(kind, &h1);
    let mut pm = piecemeal(
        &lab,
        &h2,
        "pm-leech",
        &[
            "download",
            data.torrent.to_str().unwrap(),
            "-o",
            dl.to_str().unwrap(),
            "--bind",
            &h2.ip.to_string(),
            "--port",
            &PM_PORT.to_string(),
            "--peer",
            &peer,
            "--no-tracker",
            "--verbose",
        ],
    );
    let took = wait_piecemeal_done(&lab, &mut pm, TRANSFER);
    verify(&lab, &data, &dl, Empty::Required);
    eprintln!("{} seeds, piecemeal downloads: {took:?}", name(kind));
}

#[test]
fn libtorrent_seeds_64mib_piecemeal_downloads() {
    they_seed_piecemeal_downloads(Kind::Lt, Set::Big, "1lb");
}

#[test]
fn libtorrent_seeds_awkward_files_piecemeal_downloads() {
    they_seed_piecemeal_downloads(Kind::Lt, Set::Awkward, "1la");
}

#[test]
fn transmission_seeds_64mib_piecemeal_downloads() {
    they_seed_piecemeal_downloads(Kind::Tr, Set::Big, "1tb");
}

#[test]
fn transmission_seeds_awkward_files_piecemeal_downloads() {
    they_seed_piecemeal_downloads(Kind::Tr, Set::Awkward, "1ta");
}

#[test]
fn aria2_seeds_64mib_piecemeal_downloads() {
    they_seed_piecemeal_downloads(Kind::Aria2, Set::Big, "1ab");
}

#[test]
fn aria2_seeds_awkward_files_piecemeal_downloads() {
    they_seed_piecemeal_downloads(Kind::Aria2, Set::Awkward, "1aa");
}

// ---------------------------------------------------------------------------
// 2. Piecemeal seeds, they download.

fn piecemeal_seeds_they_download(kind: Kind, set: Set, tag: &str) {
    let lab = Lab::new(tag, 2);
    let data = make_data(&lab, set, &[]);
    let (h1, h2) = (lab.host(1).clone(), lab.host(2).clone());
    let dl = lab.dir("dl");
    // libtorrent dials piecemeal; piecemeal dials Transmission and aria2.
    let pm_addr = h1.addr(PM_PORT);
    let mut other = Other::download(kind, &lab, &h2, &data, &dl, &[pm_addr]);
    let other_addr = Other::addr(kind, &h2);
    let ip = h1.ip.to_string();
    let port = PM_PORT.to_string();
    let mut args = vec![
        "seed",
        data.torrent.to_str().unwrap(),
        "-o",
        data.seed_root.to_str().unwrap(),
        "--bind",
        &ip,
        "--port",
        &port,
        "--no-tracker",
        "--verbose",
    ];
    if !Other::dials_given_peers(kind) {
        args.extend(["--peer", &other_addr]);
    }
    let _pm = piecemeal(&lab, &h1, "pm-seed", &args);
    let took = other.wait_done(&lab, TRANSFER);
    verify(&lab, &data, &dl, Other::empty_files(kind));
    eprintln!("piecemeal seeds, {} downloads: {took:?}", name(kind));
    let missing = missing_empty_files(&data, &dl);
    if !missing.is_empty() {
        eprintln!(
            "note: {} did not create the zero-length files {missing:?}",
            name(kind)
        );
    }
}

#[test]
fn piecemeal_seeds_64mib_libtorrent_downloads() {
    piecemeal_seeds_they_download(Kind::Lt, Set::Big, "2lb");
}

#[test]
fn piecemeal_seeds_awkward_files_libtorrent_downloads() {
    piecemeal_seeds_they_download(Kind::Lt, Set::Awkward, "2la");
}

#[test]
fn piecemeal_seeds_64mib_transmission_downloads() {
    piecemeal_seeds_they_download(Kind::Tr, Set::Big, "2tb");
}

/// Transmission 3.00 does not create zero-length files: the other files are
/// compared byte for byte, the empty ones must be absent or empty, and the
/// test says which were missing.
#[test]
fn piecemeal_seeds_awkward_files_transmission_downloads() {
    piecemeal_seeds_they_download(Kind::Tr, Set::Awkward, "2ta");
}

#[test]
fn piecemeal_seeds_64mib_aria2_downloads() {
    piecemeal_seeds_they_download(Kind::Aria2, Set::Big, "2ab");
}

#[test]
fn piecemeal_seeds_awkward_files_aria2_downloads() {
    piecemeal_seeds_they_download(Kind::Aria2, Set::Awkward, "2aa");
}

/// A libtorrent user with only a magnet link (the info-hash and piecemeal's
/// address in `x.pe`) fetches the metadata from a piecemeal seeder over
/// `ut_metadata` (BEP 9), then the data. 16 KiB pieces make the `info`
/// dictionary about 25 KiB: two metadata pieces, the last one short.
#[test]
fn libtorrent_with_a_magnet_link_fetches_metadata_and_data_from_piecemeal() {
    let lab = Lab::new("2lm", 2);
    let seed_root = lab.dir("seed");
    let torrent = lab.path().join("t.torrent");
    let files = [("magnet.bin", 20 * MIB)];
    write_files(&seed_root, &files);
    make_torrent(&seed_root.join("magnet.bin"), &torrent, &[], 16384);
    let meta = piecemeal::metainfo::Metainfo::load(&torrent).unwrap();
    let info_len = meta.info_bytes.len();
    assert!(info_len > 16384, "two metadata pieces: {info_len} bytes");
    let data = Data {
        seed_root,
        files: files.iter().map(|(p, l)| (p.to_string(), *l)).collect(),
        torrent,
    };
    let (h1, h2) = (lab.host(1).clone(), lab.host(2).clone());
    let pm_addr = h1.addr(PM_PORT);
    let (ip, port) = (h1.ip.to_string(), PM_PORT.to_string());
    let _pm = piecemeal(
        &lab,
        &h1,
        "pm-seed",
        &[
            "seed",
            data.torrent.to_str().unwrap(),
            "-o",
            data.seed_root.to_str().unwrap(),
            "--bind",
            &ip,
            "--port",
            &port,
            "--no-tracker",
            "--verbose",
        ],
    );
    let link = format!(
        "magnet:?xt=urn:btih:{}&dn=magnet.bin&x.pe={pm_addr}",
        meta.info_hash_hex()
    );
    let dl = lab.dir("dl");
    let mut lt = Lt::start(
        &lab,
        &h2,
        "lt-magnet",
        "download",
        Path::new(&link),
        &dl,
        &["--magnet", "--seed", "--peer", &pm_addr],
    );
    let took = lt.wait_done(&lab, TRANSFER);
    // The metadata it got is the seeder's `info` dictionary, whole.
    let want = format!("@metadata {info_len}\n");
    if !lt.proc.log_text().contains(&want) {
        lab.fail(&format!("libtorrent did not report {want:?}"));
    }
    verify(&lab, &data, &dl, Empty::Required);
    eprintln!("libtorrent from a magnet link, piecemeal seeds: {took:?}");
}

/// A magnet link for `data`: its info-hash and name, plus `extra`
/// (`&x.pe=…`, `&tr=…`).
fn magnet_of(data: &Data, extra: &str) -> String {
    let name = &data.files[0].0;
    format!(
        "magnet:?xt=urn:btih:{}&dn={name}{extra}",
        info_hash_of(&data.torrent)
    )
}

/// piecemeal is given only a magnet link: the seeder's address in `x.pe`
/// (`via_tracker` false), or only a tracker in `tr` (opentracker, which the
/// seeder announces to). It fetches the metadata from the other client
/// over `ut_metadata` (BEP 9), then the data from the same peer.
fn piecemeal_downloads_a_magnet_link(kind: Kind, tag: &str, via_tracker: bool) {
    let lab = Lab::new(tag, 3);
    let (h1, h2, h3) = (
        lab.host(1).clone(),
        lab.host(2).clone(),
        lab.host(3).clone(),
    );
    let trackers = if via_tracker {
        vec![announce_url(&h3)]
    } else {
        Vec::new()
    };
    let data = make_data(&lab, Set::Medium, &trackers);
    let ih = info_hash_of(&data.torrent);
    let _tracker = via_tracker.then(|| opentracker(&lab, &h3, &[&ih]));
    let _seed = Other::seed(kind, &lab, &h1, &data, None);
    let extra = if via_tracker {
        lab.wait_until(STARTUP, "the seed is on opentracker", || {
            Ok(scrape(&h3, &ih).map(|(c, _)| c >= 1).unwrap_or(false))
        });
        format!("&tr={}", announce_url(&h3))
    } else {
        format!("&x.pe={}", Other::addr(kind, &h1))
    };
    let link = magnet_of(&data, &extra);
    let dl = lab.dir("dl");
    let mut pm = piecemeal(
        &lab,
        &h2,
        "pm-magnet",
        &[
            "download",
            &link,
            "-o",
            dl.to_str().unwrap(),
            "--bind",
            &h2.ip.to_string(),
            "--port",
            &PM_PORT.to_string(),
            "--verbose",
        ],
    );
    let took = wait_piecemeal_done(&lab, &mut pm, TRANSFER);
    verify(&lab, &data, &dl, Empty::Required);
    if !pm.log_text().contains("metadata received") {
        lab.fail("piecemeal did not say it received the metadata");
    }
    eprintln!(
        "piecemeal from a magnet link ({}), {} seeds: {took:?}",
        if via_tracker { "tracker" } else { "x.pe" },
        name(kind)
    );
}

#[test]
fn piecemeal_with_a_magnet_link_and_x_pe_fetches_from_libtorrent() {
    piecemeal_downloads_a_magnet_link(Kind::Lt, "2ml", false);
}

#[test]
fn piecemeal_with_a_magnet_link_and_a_tracker_fetches_from_libtorrent() {
    piecemeal_downloads_a_magnet_link(Kind::Lt, "2mo", true);
}

#[test]
fn piecemeal_with_a_magnet_link_and_x_pe_fetches_from_transmission() {
    piecemeal_downloads_a_magnet_link(Kind::Tr, "2mt", false);
}

#[test]
fn piecemeal_with_a_magnet_link_and_a_tracker_fetches_from_transmission() {
    piecemeal_downloads_a_magnet_link(Kind::Tr, "2mu", true);
}

/// Transmission given only a magnet link with piecemeal's built-in
/// tracker (on the seeder) fetches the metadata and the data from
/// piecemeal.
#[test]
fn transmission_with_a_magnet_link_fetches_metadata_and_data_from_piecemeal() {
    let lab = Lab::new("2tm", 2);
    let (h1, h2) = (lab.host(1).clone(), lab.host(2).clone());
    let url = announce_url(&h1);
    let data = make_data(&lab, Set::Medium, std::slice::from_ref(&url));
    let _pm = piecemeal(
        &lab,
        &h1,
        "pm-seed",
        &[
            "seed",
            data.torrent.to_str().unwrap(),
            "-o",
            data.seed_root.to_str().unwrap(),
            "--bind",
            &h1.ip.to_string(),
            "--port",
            &PM_PORT.to_string(),
            "--tracker-port",
            &TRACKER_PORT.to_string(),
            "--verbose",
        ],
    );
    let ih = info_hash_of(&data.torrent);
    lab.wait_until(STARTUP, "piecemeal's seeder is on its tracker", || {
        Ok(scrape(&h1, &ih).map(|(c, _)| c >= 1).unwrap_or(false))
    });
    let dl = lab.dir("dl");
    let mut tr = Transmission::start(&lab, &h2, "tr-magnet", &dl, None);
    let link = magnet_of(&data, &format!("&tr={url}"));
    tr.add(&lab, Path::new(&link));
    let took = tr.wait_complete(&lab, TRANSFER);
    verify(&lab, &data, &dl, Other::empty_files(Kind::Tr));
    eprintln!("transmission from a magnet link, piecemeal seeds: {took:?}");
}

// ---------------------------------------------------------------------------
// 3. A mixed swarm: one client seeds (slowly), piecemeal and the other
//    client leech together, found through piecemeal's tracker, and trade.

fn mixed_swarm(seeder: Kind, other_leech: Kind, tag: &str) {
    let lab = Lab::new(tag, 4);
    let (h1, h2, h3, h4) = (
        lab.host(1).clone(),
        lab.host(2).clone(),
        lab.host(3).clone(),
        lab.host(4).clone(),
    );
    let data = make_data(&lab, Set::Medium, &[announce_url(&h4)]);
    let _tracker = piecemeal_tracker(&lab, &h4);
    // 12 MiB at 512 KiB/s: the leechers must trade to finish in time.
    let _seed = Other::seed(seeder, &lab, &h1, &data, Some(512 * 1024));
    let pm_dl = lab.dir("pm-dl");
    let other_dl = lab.dir("other-dl");
    let mut other = Other::download(other_leech, &lab, &h3, &data, &other_dl, &[]);
    let mut pm = piecemeal(
        &lab,
        &h2,
        "pm-leech",
        &[
            "download",
            data.torrent.to_str().unwrap(),
            "-o",
            pm_dl.to_str().unwrap(),
            "--bind",
            &h2.ip.to_string(),
            "--port",
            &PM_PORT.to_string(),
            "--seed",
            "--verbose",
        ],
    );
    // Both leechers at once, each timed from here.
    let start = Instant::now();
    let (mut t_pm, mut t_other) = (None, None);
    lab.wait_until(TRANSFER, "both leechers complete", || {
        if let Some(st) = pm.child.try_wait().unwrap() {
            return Err(format!("pm-leech exited with {st}"));
        }
        let s = pm.status();
        if t_pm.is_none() && s.num > 0 && s.have == s.num {
            t_pm = Some(start.elapsed());
        }
        if t_other.is_none() && other.is_done(&lab)? {
            t_other = Some(start.elapsed());
        }
        Ok(t_pm.is_some() && t_other.is_some())
    });
    let (t_pm, t_other) = (t_pm.unwrap(), t_other.unwrap());
    verify(&lab, &data, &pm_dl, Empty::Required);
    verify(&lab, &data, &other_dl, Empty::Required);
    std::thread::sleep(Duration::from_secs(1));
    let pm_up = pm.status().uploaded;
    let other_up = other.uploaded(&lab);
    eprintln!(
        "{} seeds; piecemeal done in {t_pm:?} (uploaded {pm_up}), {} done in {t_other:?} \
         (uploaded {other_up})",
        name(seeder),
        name(other_leech)
    );
    if pm_up == 0 || other_up == 0 {
        lab.fail(&format!(
            "the leechers did not trade: piecemeal uploaded {pm_up}, {} uploaded {other_up}",
            name(other_leech)
        ));
    }
}

#[test]
fn mixed_swarm_libtorrent_seeds_piecemeal_and_transmission_trade() {
    mixed_swarm(Kind::Lt, Kind::Tr, "3l");
}

#[test]
fn mixed_swarm_transmission_seeds_piecemeal_and_libtorrent_trade() {
    mixed_swarm(Kind::Tr, Kind::Lt, "3t");
}

/// aria2 leeching beside piecemeal announces pieces with `have`s and, when
/// a bitfield is shorter than the `have`s it would send, with a bitfield
/// again.
#[test]
fn mixed_swarm_libtorrent_seeds_piecemeal_and_aria2_trade() {
    mixed_swarm(Kind::Lt, Kind::Aria2, "3la");
}

// ---------------------------------------------------------------------------
// 4. Trackers: their tracker clients against piecemeal's tracker; piecemeal
//    against opentracker.

fn piecemeal_tracker(lab: &Lab, host: &Host) -> common::Proc {
    piecemeal(
        lab,
        host,
        "pm-tracker",
        &[
            "tracker",
            "--bind",
            &host.ip.to_string(),
            "--port",
            &TRACKER_PORT.to_string(),
            "--interval",
            "5",
            "--verbose",
        ],
    )
}

/// GET `path` from `host:TRACKER_PORT`, from inside the host's namespace.
fn http_get(host: &Host, path: &str) -> Result<Vec<u8>, String> {
    let addr = host.addr(TRACKER_PORT);
    host.exchange(
        &addr,
        format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes(),
    )
}

/// (complete, incomplete) for the torrent from the tracker's /scrape.
fn scrape(host: &Host, info_hash_hex: &str) -> Result<(u64, u64), String> {
    let mut q = String::new();
    for i in 0..20 {
        q.push('%');
        q.push_str(&info_hash_hex[2 * i..2 * i + 2]);
    }
    let body = http_get(host, &format!("/scrape?info_hash={q}"))?;
    let text = String::from_utf8_lossy(&body);
    let num = |key: &str| -> Option<u64> {
        let i = text.find(key)? + key.len();
        text[i..].split('e').next()?.parse().ok()
    };
    match (num("8:completei"), num("10:incompletei")) {
        (Some(c), Some(i)) => Ok((c, i)),
        _ => Err(format!("unexpected scrape answer: {text}")),
    }
}

fn info_hash_of(torrent: &Path) -> String {
    piecemeal::metainfo::Metainfo::load(torrent)
        .unwrap()
        .info_hash_hex()
}

/// Piecemeal seeds and runs the tracker; the other client finds it only
/// through the tracker (no peer named), downloads, and is counted complete.
fn their_tracker_client_against_piecemeal_tracker(kind: Kind, tag: &str) {
    against_piecemeal_tracker(kind, tag, false);
}

/// The same, with `udp://` as the torrent's only tracker when `udp`: both
/// clients announce over BEP 15; the counts are read over HTTP (one
/// table behind both).
fn against_piecemeal_tracker(kind: Kind, tag: &str, udp: bool) {
    let lab = Lab::new(tag, 3);
    let (h1, h2, h3) = (
        lab.host(1).clone(),
        lab.host(2).clone(),
        lab.host(3).clone(),
    );
    let url = if udp {
        format!("udp://{}/announce", h3.addr(TRACKER_PORT))
    } else {
        announce_url(&h3)
    };
    let data = make_data(&lab, Set::Medium, &[url]);
    let ih = info_hash_of(&data.torrent);
    let _tracker = piecemeal_tracker(&lab, &h3);
    let _pm = piecemeal(
        &lab,
        &h1,
        "pm-seed",
        &[
            "seed",
            data.torrent.to_str().unwrap(),
            "-o",
            data.seed_root.to_str().unwrap(),
            "--bind",
            &h1.ip.to_string(),
            "--port",
            &PM_PORT.to_string(),
            "--verbose",
        ],
    );
    lab.wait_until(STARTUP, "piecemeal's seeder is on the tracker", || {
        Ok(scrape(&h3, &ih).map(|(c, _)| c >= 1).unwrap_or(false))
    });
    let dl = lab.dir("dl");
    let mut other = Other::download(kind, &lab, &h2, &data, &dl, &[]);
    let took = other.wait_done(&lab, TRANSFER);
    verify(&lab, &data, &dl, Other::empty_files(kind));
    // The completed announce makes it a seed on the tracker too.
    lab.wait_until(
        Duration::from_secs(30),
        "the tracker counts two seeds",
        || Ok(scrape(&h3, &ih).map(|(c, _)| c >= 2).unwrap_or(false)),
    );
    eprintln!("{} via piecemeal's tracker: {took:?}", name(kind));
}

#[test]
fn libtorrent_finds_piecemeal_through_piecemeal_tracker() {
    their_tracker_client_against_piecemeal_tracker(Kind::Lt, "4lp");
}

#[test]
fn transmission_finds_piecemeal_through_piecemeal_tracker() {
    their_tracker_client_against_piecemeal_tracker(Kind::Tr, "4tp");
}

#[test]
fn libtorrent_finds_piecemeal_through_piecemeal_tracker_over_udp() {
    against_piecemeal_tracker(Kind::Lt, "4lu", true);
}

/// The one scenario where aria2 dials piecemeal: it tries an encrypted
/// (MSE) handshake first, which piecemeal refuses, then a plain one.
#[test]
fn aria2_finds_piecemeal_through_piecemeal_tracker() {
    their_tracker_client_against_piecemeal_tracker(Kind::Aria2, "4ap");
}

/// The other client seeds through opentracker; piecemeal finds it only
/// through opentracker.
fn piecemeal_against_opentracker(kind: Kind, tag: &str) {
    let lab = Lab::new(tag, 3);
    let (h1, h2, h3) = (
        lab.host(1).clone(),
        lab.host(2).clone(),
        lab.host(3).clone(),
    );
    let data = make_data(&lab, Set::Medium, &[announce_url(&h3)]);
    let ih = info_hash_of(&data.torrent);
    let _tracker = opentracker(&lab, &h3, &[&ih]);
    let _seed = Other::seed(kind, &lab, &h1, &data, None);
    // opentracker's interval is half an hour: piecemeal must find the seed
    // in its first answer.
    lab.wait_until(STARTUP, "the seed is on opentracker", || {
        Ok(scrape(&h3, &ih).map(|(c, _)| c >= 1).unwrap_or(false))
    });
    let dl = lab.dir("dl");
    let mut pm = piecemeal(
        &lab,
        &h2,
        "pm-leech",
        &[
            "download",
            data.torrent.to_str().unwrap(),
            "-o",
            dl.to_str().unwrap(),
            "--bind",
            &h2.ip.to_string(),
            "--port",
            &PM_PORT.to_string(),
            "--verbose",
        ],
    );
    let took = wait_piecemeal_done(&lab, &mut pm, TRANSFER);
    verify(&lab, &data, &dl, Empty::Required);
    eprintln!("piecemeal via opentracker from {}: {took:?}", name(kind));
}

#[test]
fn piecemeal_finds_libtorrent_through_opentracker() {
    piecemeal_against_opentracker(Kind::Lt, "4lo");
}

#[test]
fn piecemeal_finds_transmission_through_opentracker() {
    piecemeal_against_opentracker(Kind::Tr, "4to");
}

#[test]
fn piecemeal_finds_aria2_through_opentracker() {
    piecemeal_against_opentracker(Kind::Aria2, "4ao");
}

/// (seeders, leechers, completed) from `piecemeal scrape` run on `host`:
/// our UDP scrape, when the torrent's only tracker is `udp://`.
fn pm_scrape(host: &Host, torrent: &Path) -> Result<(u64, u64, u64), String> {
    let out = host
        .command(common::BIN)
        .args(["scrape", torrent.to_str().unwrap(), "--timeout", "3"])
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let nums: Vec<u64> = text
        .split_once(": ")
        .map(|(_, rest)| rest)
        .unwrap_or("")
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    match nums[..] {
        [s, l, c] => Ok((s, l, c)),
        _ => Err(format!("unexpected scrape output: {text}")),
    }
}

/// Piecemeal against opentracker over UDP only (the torrent names
/// `udp://h3:6969/announce` and nothing else): the leecher starts alone,
/// hears of no other peer, and announces again a minute later (no min interval
/// over UDP; a fresh connect, the connection id being a minute old); the
/// seeder arrives and the download completes; `completed` makes the
/// leecher a seed on the tracker, `stopped` takes it off. Every count is
/// read with piecemeal's own UDP scrape and checked against opentracker's
/// HTTP scrape.
#[test]
fn piecemeal_announces_and_scrapes_over_udp_with_opentracker() {
    let lab = Lab::new("4uo", 3);
    let (h1, h2, h3) = (
        lab.host(1).clone(),
        lab.host(2).clone(),
        lab.host(3).clone(),
    );
    let url = format!("udp://{}/announce", h3.addr(TRACKER_PORT));
    let data = make_data(&lab, Set::Medium, std::slice::from_ref(&url));
    let ih = info_hash_of(&data.torrent);
    let _tracker = opentracker(&lab, &h3, &[&ih]);
    // A scrape that gets no answer (opentracker still starting) is tried
    // again.
    let counts = |want: (u64, u64, u64)| {
        if pm_scrape(&h1, &data.torrent).ok() != Some(want) {
            return Ok(false);
        }
        // opentracker's HTTP scrape says the same.
        Ok(scrape(&h3, &ih).ok() == Some((want.0, want.1)))
    };
    let dl = lab.dir("dl");
    let mut leech = piecemeal(
        &lab,
        &h2,
        "pm-leech",
        &[
            "download",
            data.torrent.to_str().unwrap(),
            "-o",
            dl.to_str().unwrap(),
            "--bind",
            &h2.ip.to_string(),
            "--port",
            &PM_PORT.to_string(),
            "--seed",
            "--verbose",
        ],
    );
    let log = || std::fs::read_to_string(&leech.log).unwrap_or_default();
    lab.wait_until(STARTUP, "the leecher is on opentracker", || {
        counts((0, 1, 0))
    });
    // (opentracker lists the leecher itself: piecemeal finds out it is
    // itself, and goes on waiting.)
    let answered = format!("tracker {url}: ");
    lab.wait_until(
        Duration::from_secs(90),
        "the leecher announces again, over UDP",
        || {
            let l = log();
            Ok(l.contains(&format!("announcing to {url} (None) over UDP"))
                && l.matches(&answered).count() >= 2)
        },
    );
    let _seed = piecemeal(
        &lab,
        &h1,
        "pm-seed",
        &[
            "seed",
            data.torrent.to_str().unwrap(),
            "-o",
            data.seed_root.to_str().unwrap(),
            "--bind",
            &h1.ip.to_string(),
            "--port",
            &PM_PORT.to_string(),
            "--verbose",
        ],
    );
    // The seeder dials the leecher it hears of, or the leecher's next
    // announce finds the seeder; either way the download completes.
    let took = lab.wait_until(
        Duration::from_secs(90) + TRANSFER,
        "the download completes and the leecher announces completed",
        || counts((2, 0, 1)),
    );
    verify(&lab, &data, &dl, Empty::Required);
    let want = format!("announcing to {url} (Completed) over UDP");
    if !log().contains(&want) {
        lab.fail(&format!("no {want:?} in the leecher's log"));
    }
    if leech.terminate(Duration::from_secs(10)) != 0 {
        lab.fail("the leecher did not stop cleanly");
    }
    lab.wait_until(
        Duration::from_secs(10),
        "stopped takes the leecher off",
        || counts((1, 0, 1)),
    );
    eprintln!("piecemeal over UDP via opentracker: {took:?} from the seeder's start");
}

// ---------------------------------------------------------------------------
// 5. The same info-hash everywhere.

/// `piecemeal info`'s info-hash.
fn pm_info_hash(torrent: &Path) -> String {
    let out = run_tool(Command::new(common::BIN).arg("info").arg(torrent));
    out.lines()
        .find_map(|l| l.strip_prefix("info-hash:"))
        .unwrap_or_else(|| panic!("no info-hash in `piecemeal info`: {out}"))
        .trim()
        .to_string()
}

/// `transmission-show`'s info-hash.
fn tr_info_hash(torrent: &Path) -> String {
    let out = run_tool(Command::new("transmission-show").arg(torrent));
    out.lines()
        .find_map(|l| l.trim().strip_prefix("Hash:"))
        .unwrap_or_else(|| panic!("no Hash in transmission-show: {out}"))
        .trim()
        .to_lowercase()
}

fn lt_info_hash(torrent: &Path) -> String {
    lt_tool(&["infohash", torrent.to_str().unwrap()])
        .trim()
        .to_string()
}

/// Every program reads the same info-hash from `torrent`. Transmission 3.00
/// cannot load hybrid v1+v2 torrents ("Error parsing .torrent file"): it is
/// left out for those.
fn same_info_hash_everywhere(what: &str, torrent: &Path, with_transmission: bool) -> String {
    let pm = pm_info_hash(torrent);
    let lt = lt_info_hash(torrent);
    let tr = if with_transmission {
        tr_info_hash(torrent)
    } else {
        pm.clone()
    };
    assert_eq!(pm.len(), 40, "{what}: {pm}");
    assert!(
        pm == lt && pm == tr,
        "{what}: piecemeal {pm}, libtorrent {lt}, transmission {tr}"
    );
    pm
}

#[test]
fn torrents_have_one_info_hash_in_every_client() {
    let tmp = common::TempDir::new("interop-metainfo");
    let root = tmp.path();
    write_files(root, AWKWARD);
    write_files(root, &[("single.bin", 5 * MIB + 12345)]);
    let multi = root.join("awkward");
    let single = root.join("single.bin");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let url = "http://10.99.0.1:6969/announce";
    for (label, src) in [("single", &single), ("multi", &multi)] {
        // piecemeal create → libtorrent, transmission.
        let t = root.join(format!("pm-{label}.torrent"));
        run_tool(Command::new(common::BIN).args([
            "create",
            &s(src),
            "-o",
            &s(&t),
            "--tracker",
            url,
            "--piece-length",
            "64K",
        ]));
        same_info_hash_everywhere(&format!("piecemeal create ({label})"), &t, true);
        // mktorrent → piecemeal.
        let t = root.join(format!("mk-{label}.torrent"));
        run_tool(Command::new("mktorrent").args(["-a", url, "-l", "16", "-o", &s(&t), &s(src)]));
        same_info_hash_everywhere(&format!("mktorrent ({label})"), &t, true);
        // libtorrent, hybrid v1+v2 (its default; pad files in multi-file
        // torrents) and v1 only → piecemeal.
        for v1 in [false, true] {
            let t = root.join(format!("lt-{label}-{v1}.torrent"));
            let mut args = vec!["create", src.to_str().unwrap(), t.to_str().unwrap()];
            args.extend(["--tracker", url, "--piece-length", "65536"]);
            if v1 {
                args.push("--v1-only");
            }
            let printed = lt_tool(&args);
            let ih =
                same_info_hash_everywhere(&format!("libtorrent (v1 only: {v1}, {label})"), &t, v1);
            assert_eq!(printed.trim(), ih);
        }
        // transmission-create → piecemeal.
        let t = root.join(format!("tr-{label}.torrent"));
        run_tool(Command::new("transmission-create").args([
            "-t",
            url,
            "-s",
            "64",
            "-o",
            &s(&t),
            &s(src),
        ]));
        same_info_hash_everywhere(&format!("transmission-create ({label})"), &t, true);
    }
}

/// `AWKWARD` in the lab's `seed` folder and libtorrent's torrent of it:
/// hybrid v1+v2 (its default) with a pad file after every file that does
/// not end on a piece boundary. No pad file is on disk.
fn libtorrent_hybrid_data(lab: &Lab) -> Data {
    let seed_root = lab.dir("seed");
    write_files(&seed_root, AWKWARD);
    let torrent = lab.path().join("lt.torrent");
    lt_tool(&[
        "create",
        seed_root.join("awkward").to_str().unwrap(),
        torrent.to_str().unwrap(),
        "--piece-length",
        "65536",
    ]);
    let meta = piecemeal::metainfo::Metainfo::load(&torrent).unwrap();
    assert!(meta.is_hybrid(), "libtorrent made a v1-only torrent");
    // `info` shows the same v2 info-hash as libtorrent.
    let v2 = lt_tool(&["infohash", torrent.to_str().unwrap(), "--v2"]);
    let info = run_tool(Command::new(common::BIN).arg("info").arg(&torrent));
    assert!(
        info.contains(&format!("info-hash v2:  {}", v2.trim())),
        "libtorrent's v2 info-hash {v2} is not in `piecemeal info`:\n{info}"
    );
    assert!(
        meta.info.files.iter().any(|f| f.attr.padding),
        "libtorrent made no pad files"
    );
    Data {
        seed_root,
        files: AWKWARD.iter().map(|(p, l)| (p.to_string(), *l)).collect(),
        torrent,
    }
}

/// No `.pad` folder (libtorrent's pad file names) below `root`.
fn assert_no_pad_files(lab: &Lab, root: &Path) {
    if root.join("awkward/.pad").exists() {
        lab.fail(&format!("pad files were created in {}", root.display()));
    }
}

/// A torrent made by libtorrent (hybrid v1+v2, pad files between files)
/// seeded by libtorrent downloads in piecemeal, which creates no pad file.
#[test]
fn libtorrent_made_hybrid_torrent_with_pad_files_downloads() {
    let lab = Lab::new("5h", 2);
    let (h1, h2) = (lab.host(1).clone(), lab.host(2).clone());
    let data = libtorrent_hybrid_data(&lab);
    let _seed = Other::seed(Kind::Lt, &lab, &h1, &data, None);
    let dl = lab.dir("dl");
    let mut pm = piecemeal(
        &lab,
        &h2,
        "pm-leech",
        &[
            "download",
            data.torrent.to_str().unwrap(),
            "-o",
            dl.to_str().unwrap(),
            "--bind",
            &h2.ip.to_string(),
            "--port",
            &PM_PORT.to_string(),
            "--peer",
            &h1.addr(LT_PORT),
            "--no-tracker",
            "--verbose",
        ],
    );
    wait_piecemeal_done(&lab, &mut pm, TRANSFER);
    verify(&lab, &data, &dl, Empty::Required);
    assert_no_pad_files(&lab, &dl);
}

/// piecemeal seeds a libtorrent-made hybrid torrent with pad files from the
/// original files (no pad file on disk): every piece verifies at start, and
/// libtorrent downloads it all.
#[test]
fn piecemeal_seeds_libtorrent_made_hybrid_torrent_with_pad_files() {
    let lab = Lab::new("5i", 2);
    let (h1, h2) = (lab.host(1).clone(), lab.host(2).clone());
    let data = libtorrent_hybrid_data(&lab);
    let dl = lab.dir("dl");
    let mut lt = Other::download(Kind::Lt, &lab, &h2, &data, &dl, &[h1.addr(PM_PORT)]);
    let pm = piecemeal(
        &lab,
        &h1,
        "pm-seed",
        &[
            "seed",
            data.torrent.to_str().unwrap(),
            "-o",
            data.seed_root.to_str().unwrap(),
            "--bind",
            &h1.ip.to_string(),
            "--port",
            &PM_PORT.to_string(),
            "--no-tracker",
            "--verbose",
        ],
    );
    lt.wait_done(&lab, TRANSFER);
    let num = piecemeal::metainfo::Metainfo::load(&data.torrent)
        .unwrap()
        .info
        .pieces
        .len() as u64;
    let found = common::verified_at_start(&pm.log_text());
    if found != Some(num) {
        lab.fail(&format!(
            "piecemeal verified {found:?} of {num} pieces at start"
        ));
    }
    verify(&lab, &data, &dl, Empty::Required);
    assert_no_pad_files(&lab, &data.seed_root);
}

// ---------------------------------------------------------------------------
// 6. Encryption required on their side: libtorrent with pe_forced and RC4
//    only, Transmission with "encryption": 2. Neither accepts plaintext, so
//    a finished transfer went over MSE; piecemeal's log must say RC4.

/// Start `kind` seeding `data` with encryption required.
fn seed_encrypted(kind: Kind, lab: &Lab, host: &Host, data: &Data) -> Other {
    match kind {
        Kind::Lt => {
            let mut lt = Lt::start(
                lab,
                host,
                "lt-seed",
                "seed",
                &data.torrent,
                &data.seed_root,
                &["--encryption", "forced"],
            );
            lt.wait_seeding(lab, STARTUP);
            Other::Lt(lt)
        }
        Kind::Tr => {
            let mut tr = Transmission::start_with(lab, host, "tr-seed", &data.seed_root, None, 2);
            tr.add(lab, &data.torrent);
            tr.wait_complete(lab, STARTUP);
            Other::Tr(tr)
        }
        Kind::Aria2 => unreachable!("aria2 is not run with encryption"),
    }
}

/// piecemeal's `--verbose` log names an RC4 connection.
fn assert_rc4(lab: &Lab, pm: &common::Proc) {
    if !pm.log_text().contains("MSE done, RC4") {
        lab.fail(&format!("{}: no RC4 connection in its log", pm.name));
    }
}

/// They seed with encryption required; piecemeal (`--encryption
/// pm_mode`) dials them and downloads.
fn encrypted_they_seed_piecemeal_downloads(kind: Kind, pm_mode: &str, tag: &str) {
    let lab = Lab::new(tag, 2);
    let data = make_data(&lab, Set::Medium, &[]);
    let (h1, h2) = (lab.host(1).clone(), lab.host(2).clone());
    let _seeder = seed_encrypted(kind, &lab, &h1, &data);
    let dl = lab.dir("dl");
    let peer = Other::addr(kind, &h1);
    let mut pm = piecemeal(
        &lab,
        &h2,
        "pm-leech",
        &[
            "download",
            data.torrent.to_str().unwrap(),
            "-o",
            dl.to_str().unwrap(),
            "--bind",
            &h2.ip.to_string(),
            "--port",
            &PM_PORT.to_string(),
            "--peer",
            &peer,
            "--no-tracker",
            "--encryption",
            pm_mode,
            "--verbose",
        ],
    );
    let took = wait_piecemeal_done(&lab, &mut pm, TRANSFER);
    verify(&lab, &data, &dl, Empty::Required);
    assert_rc4(&lab, &pm);
    eprintln!(
        "{} seeds requiring encryption, piecemeal ({pm_mode}) downloads: {took:?}",
        name(kind)
    );
}

/// piecemeal (`--encryption pm_mode`) seeds; they download with
/// encryption required (libtorrent dials piecemeal: the incoming exchange;
/// piecemeal dials Transmission).
fn piecemeal_seeds_they_download_encrypted(kind: Kind, pm_mode: &str, tag: &str) {
    let lab = Lab::new(tag, 2);
    let data = make_data(&lab, Set::Medium, &[]);
    let (h1, h2) = (lab.host(1).clone(), lab.host(2).clone());
    let dl = lab.dir("dl");
    let pm_addr = h1.addr(PM_PORT);
    let mut other = match kind {
        Kind::Lt => Other::Lt(Lt::start(
            &lab,
            &h2,
            "lt-leech",
            "download",
            &data.torrent,
            &dl,
            &["--seed", "--peer", &pm_addr, "--encryption", "forced"],
        )),
        Kind::Tr => {
            let tr = Transmission::start_with(&lab, &h2, "tr-leech", &dl, None, 2);
            tr.add(&lab, &data.torrent);
            Other::Tr(tr)
        }
        Kind::Aria2 => unreachable!("aria2 is not run with encryption"),
    };
    let other_addr = Other::addr(kind, &h2);
    let ip = h1.ip.to_string();
    let port = PM_PORT.to_string();
    let mut args = vec![
        "seed",
        data.torrent.to_str().unwrap(),
        "-o",
        data.seed_root.to_str().unwrap(),
        "--bind",
        &ip,
        "--port",
        &port,
        "--no-tracker",
        "--encryption",
        pm_mode,
        "--verbose",
    ];
    if !Other::dials_given_peers(kind) {
        args.extend(["--peer", &other_addr]);
    }
    let pm = piecemeal(&lab, &h1, "pm-seed", &args);
    let took = other.wait_done(&lab, TRANSFER);
    verify(&lab, &data, &dl, Other::empty_files(kind));
    assert_rc4(&lab, &pm);
    eprintln!(
        "piecemeal ({pm_mode}) seeds, {} downloads requiring encryption: {took:?}",
        name(kind)
    );
}

#[test]
fn libtorrent_forcing_rc4_seeds_piecemeal_requiring_it_downloads() {
    encrypted_they_seed_piecemeal_downloads(Kind::Lt, "require", "6lr");
}

#[test]
fn libtorrent_forcing_rc4_seeds_piecemeal_preferring_it_downloads() {
    encrypted_they_seed_piecemeal_downloads(Kind::Lt, "prefer", "6lp");
}

#[test]
fn piecemeal_requiring_rc4_seeds_libtorrent_forcing_it_downloads() {
    piecemeal_seeds_they_download_encrypted(Kind::Lt, "require", "6sl");
}

#[test]
fn piecemeal_preferring_rc4_seeds_libtorrent_forcing_it_downloads() {
    piecemeal_seeds_they_download_encrypted(Kind::Lt, "prefer", "6sp");
}

#[test]
fn transmission_requiring_encryption_seeds_piecemeal_downloads() {
    encrypted_they_seed_piecemeal_downloads(Kind::Tr, "require", "6tr");
}

#[test]
fn piecemeal_seeds_transmission_requiring_encryption_downloads() {
    piecemeal_seeds_they_download_encrypted(Kind::Tr, "require", "6st");
}

/// The check on the scenarios above: libtorrent set up this way really
/// refuses plaintext, so piecemeal with encryption off gets nothing.
#[test]
fn libtorrent_forcing_rc4_gives_piecemeal_without_encryption_nothing() {
    let lab = Lab::new("6lo", 2);
    let data = make_data(&lab, Set::Medium, &[]);
    let (h1, h2) = (lab.host(1).clone(), lab.host(2).clone());
    let seeder = seed_encrypted(Kind::Lt, &lab, &h1, &data);
    let dl = lab.dir("dl");
    let peer = Other::addr(Kind::Lt, &h1);
    let mut pm = piecemeal(
        &lab,
        &h2,
        "pm-leech",
        &[
            "download",
            data.torrent.to_str().unwrap(),
            "-o",
            dl.to_str().unwrap(),
            "--bind",
            &h2.ip.to_string(),
            "--port",
            &PM_PORT.to_string(),
            "--peer",
            &peer,
            "--no-tracker",
            "--encryption",
            "off",
            "--verbose",
        ],
    );
    std::thread::sleep(Duration::from_secs(6));
    if let Some(st) = pm.child.try_wait().unwrap() {
        lab.fail(&format!("pm-leech exited with {st}"));
    }
    let st = pm.status();
    if st.have != 0 || st.downloaded != 0 || seeder.uploaded(&lab) != 0 {
        lab.fail(&format!("data moved in plaintext: {st:?}"));
    }
    if !pm.log_text().contains("connecting (plaintext)") {
        lab.fail("piecemeal never dialed");
    }
}

/// Transmission requiring encryption dials piecemeal (found through
/// piecemeal's tracker): the incoming exchange, Transmission as initiator.
#[test]
fn transmission_requiring_encryption_dials_piecemeal_seeder() {
    let lab = Lab::new("6td", 3);
    let (h1, h2, h3) = (
        lab.host(1).clone(),
        lab.host(2).clone(),
        lab.host(3).clone(),
    );
    let data = make_data(&lab, Set::Medium, &[announce_url(&h3)]);
    let ih = info_hash_of(&data.torrent);
    let _tracker = piecemeal_tracker(&lab, &h3);
    let pm = piecemeal(
        &lab,
        &h1,
        "pm-seed",
        &[
            "seed",
            data.torrent.to_str().unwrap(),
            "-o",
            data.seed_root.to_str().unwrap(),
            "--bind",
            &h1.ip.to_string(),
            "--port",
            &PM_PORT.to_string(),
            "--encryption",
            "require",
            "--verbose",
        ],
    );
    lab.wait_until(STARTUP, "piecemeal's seeder is on the tracker", || {
        Ok(scrape(&h3, &ih).map(|(c, _)| c >= 1).unwrap_or(false))
    });
    let dl = lab.dir("dl");
    let mut tr = Transmission::start_with(&lab, &h2, "tr-leech", &dl, None, 2);
    tr.add(&lab, &data.torrent);
    let took = tr.wait_complete(&lab, TRANSFER);
    verify(&lab, &data, &dl, Other::empty_files(Kind::Tr));
    let log = pm.log_text();
    if log.contains("connecting (") {
        lab.fail("piecemeal dialed: this scenario is about being dialed");
    }
    if !log.contains(&format!("{}:", h2.ip)) || !log.contains("connected to us") {
        lab.fail("Transmission never dialed piecemeal");
    }
    assert_rc4(&lab, &pm);
    eprintln!("transmission (encryption required) dials piecemeal: {took:?}");
}

// ---------------------------------------------------------------------------
// 7. The fast extension (BEP 6) with libtorrent, both ways.

/// The pieces a `piecemeal --verbose` log says a peer allowed it to fetch
/// while choked.
fn allowed_in_log(log: &str) -> Vec<u32> {
    let mut out: Vec<u32> = log
        .lines()
        .filter_map(|l| l.split(" allows piece ").nth(1))
        .filter_map(|r| r.split_whitespace().next()?.parse().ok())
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// libtorrent's latest `@pieces` line (the pieces it has).
fn lt_pieces(lt: &Lt) -> Vec<u32> {
    let log = lt.proc.log_text();
    let Some(line) = log.lines().rev().find(|l| l.starts_with("@pieces")) else {
        return Vec::new();
    };
    line.trim_start_matches("@pieces")
        .trim()
        .split(',')
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Whether pieces `pieces` of the one file of `data` under `got_root` hold
/// the seeder's bytes.
fn pieces_match(data: &Data, got_root: &Path, piece_len: usize, pieces: &[u32]) -> bool {
    let name = &data.files[0].0;
    let want = std::fs::read(data.seed_root.join(name)).unwrap();
    let Ok(got) = std::fs::read(got_root.join(name)) else {
        return false;
    };
    pieces.iter().all(|&p| {
        let a = p as usize * piece_len;
        let b = (a + piece_len).min(want.len());
        got.get(a..b) == want.get(a..b)
    })
}

/// libtorrent seeds but unchokes nobody, offering 6 allowed-fast pieces:
/// piecemeal (told `have all`) fetches exactly those while choked, and
/// nothing else.
#[test]
fn fast_libtorrent_choking_piecemeal_serves_its_allowed_fast_pieces() {
    let lab = Lab::new("7lc", 2);
    let data = make_data(&lab, Set::Medium, &[]);
    let (h1, h2) = (lab.host(1).clone(), lab.host(2).clone());
    let mut lt = Lt::start(
        &lab,
        &h1,
        "lt-seed",
        "seed",
        &data.torrent,
        &data.seed_root,
        &["--choke-all", "--allowed-fast", "6"],
    );
    lt.wait_seeding(&lab, STARTUP);
    let dl = lab.dir("dl");
    let mut pm = piecemeal(
        &lab,
        &h2,
        "pm-leech",
        &[
            "download",
            data.torrent.to_str().unwrap(),
            "-o",
            dl.to_str().unwrap(),
            "--bind",
            &h2.ip.to_string(),
            "--port",
            &PM_PORT.to_string(),
            "--peer",
            &h1.addr(LT_PORT),
            "--no-tracker",
            "--verbose",
        ],
    );
    let took = lab.wait_until(TRANSFER, "piecemeal has the allowed-fast pieces", || {
        let allowed = allowed_in_log(&pm.log_text());
        Ok(allowed.len() == 6 && pm.status().have == 6)
    });
    // Still choked: nothing more comes.
    std::thread::sleep(Duration::from_secs(3));
    let st = pm.status();
    let log = pm.log_text();
    if st.have != 6 {
        lab.fail(&format!("choked, yet piecemeal has {} pieces", st.have));
    }
    if !log.contains("has every piece (have all)") {
        lab.fail("libtorrent's have all was not seen");
    }
    let allowed = allowed_in_log(&log);
    pm.terminate(Duration::from_secs(10));
    if !pieces_match(&data, &dl, 64 * 1024, &allowed) {
        lab.fail(&format!(
            "the allowed-fast pieces {allowed:?} are not right on disk"
        ));
    }
    eprintln!("libtorrent choking piecemeal: allowed-fast pieces {allowed:?} in {took:?}");
}

/// piecemeal seeds but unchokes nobody (`--choke-all`): libtorrent, which
/// says `have none`, fetches exactly piecemeal's allowed-fast set (BEP 6's
/// algorithm over its /24 and the info-hash) while choked, and nothing else.
#[test]
fn fast_piecemeal_choking_libtorrent_serves_its_allowed_fast_pieces() {
    let lab = Lab::new("7pc", 2);
    let data = make_data(&lab, Set::Medium, &[]);
    let (h1, h2) = (lab.host(1).clone(), lab.host(2).clone());
    let meta = piecemeal::metainfo::Metainfo::load(&data.torrent).unwrap();
    let n = meta.geometry().num_pieces;
    let dl = lab.dir("dl");
    let pm = piecemeal(
        &lab,
        &h1,
        "pm-seed",
        &[
            "seed",
            data.torrent.to_str().unwrap(),
            "-o",
            data.seed_root.to_str().unwrap(),
            "--bind",
            &h1.ip.to_string(),
            "--port",
            &PM_PORT.to_string(),
            "--no-tracker",
            "--choke-all",
            "--verbose",
        ],
    );
    let lt = Lt::start(
        &lab,
        &h2,
        "lt-leech",
        "download",
        &data.torrent,
        &dl,
        &["--peer", &h1.addr(PM_PORT)],
    );
    let mut want: Vec<u32> = piecemeal::fast::allowed_fast_set(
        std::net::IpAddr::V4(h2.ip),
        &meta.info_hash,
        n,
        piecemeal::fast::ALLOWED_FAST_SET,
    )
    .into_iter()
    .map(u32::from)
    .collect();
    want.sort_unstable();
    let took = lab.wait_until(TRANSFER, "libtorrent has the allowed-fast pieces", || {
        Ok(lt_pieces(&lt) == want)
    });
    std::thread::sleep(Duration::from_secs(3));
    let got = lt_pieces(&lt);
    if got != want {
        lab.fail(&format!("choked, yet libtorrent has {got:?}, not {want:?}"));
    }
    if !pm.log_text().contains("has no piece (have none)") {
        lab.fail("libtorrent's have none was not seen");
    }
    if !pieces_match(&data, &dl, 64 * 1024, &want) {
        lab.fail("the allowed-fast pieces are not right on libtorrent's disk");
    }
    eprintln!("piecemeal choking libtorrent: allowed-fast pieces {want:?} in {took:?}");
}

/// libtorrent seeds at 400 kB/s, chokes everybody after 3 s (at its next
/// choke round) and unchokes again after 25 s: piecemeal's requests queued
/// there are rejected and go back to the picker at once; the download
/// completes without a request time-out.
#[test]
fn fast_libtorrent_choking_midway_rejects_and_the_download_completes() {
    let lab = Lab::new("7lr", 2);
    let data = make_data(&lab, Set::Medium, &[]);
    let (h1, h2) = (lab.host(1).clone(), lab.host(2).clone());
    let mut lt = Lt::start(
        &lab,
        &h1,
        "lt-seed",
        "seed",
        &data.torrent,
        &data.seed_root,
        &[
            "--upload-limit",
            "400000",
            "--choke-after",
            "3",
            "--unchoke-after",
            "25",
        ],
    );
    lt.wait_seeding(&lab, STARTUP);
    let dl = lab.dir("dl");
    let mut pm = piecemeal(
        &lab,
        &h2,
        "pm-leech",
        &[
            "download",
            data.torrent.to_str().unwrap(),
            "-o",
            dl.to_str().unwrap(),
            "--bind",
            &h2.ip.to_string(),
            "--port",
            &PM_PORT.to_string(),
            "--peer",
            &h1.addr(LT_PORT),
            "--no-tracker",
            "--verbose",
        ],
    );
    let took = wait_piecemeal_done(&lab, &mut pm, TRANSFER);
    verify(&lab, &data, &dl, Empty::Required);
    let log = pm.log_text();
    if !log.contains("requests stand until served or rejected") {
        lab.fail("libtorrent never choked piecemeal with requests in flight");
    }
    if !log.contains("of our requests") {
        lab.fail("libtorrent rejected none of piecemeal's requests");
    }
    if log.contains("snubbed") {
        lab.fail("a request waited out the time-out");
    }
    eprintln!("libtorrent choking midway: {took:?}");
}

// ---------------------------------------------------------------------------
// 8. Peer exchange (BEP 11): three peers, no tracker, no DHT, no LSD; the
//    third is given only the second, and finds the seeder (the first)
//    through the second's `ut_pex`. The seeder is slow (256 KiB/s), so the
//    second still downloads from it, and stays connected, while the third
//    comes.

/// 4 MiB in 64 KiB pieces, no tracker.
fn pex_data(lab: &Lab) -> Data {
    let seed_root = lab.dir("seed");
    let torrent = lab.path().join("t.torrent");
    let files = [("pex.bin", 4 * MIB)];
    write_files(&seed_root, &files);
    make_torrent(&seed_root.join("pex.bin"), &torrent, &[], 65536);
    Data {
        seed_root,
        files: files.iter().map(|(p, l)| (p.to_string(), *l)).collect(),
        torrent,
    }
}

/// The slow libtorrent seeder on `host`, seeding.
fn pex_seeder(lab: &Lab, host: &Host, data: &Data) -> Lt {
    let mut a = Lt::start(
        lab,
        host,
        "lt-a",
        "seed",
        &data.torrent,
        &data.seed_root,
        &["--upload-limit", "262144"],
    );
    a.wait_seeding(lab, STARTUP);
    a
}

/// libtorrent's PEX source bit (`peer_info.source`) of the peer at `addr`,
/// from the driver's `@peer` lines: `Some(true)` when it was learnt through
/// peer exchange.
fn lt_learnt_through_pex(lt: &Lt, addr: &str) -> Option<bool> {
    let log = lt.proc.log_text();
    let line = log
        .lines()
        .find(|l| l.starts_with(&format!("@peer {addr} ")))?;
    let source: u32 = line.rsplit(' ').next()?.parse().ok()?;
    Some(source & 4 != 0)
}

/// A: libtorrent seeds. B: piecemeal, given A. C: libtorrent, given only
/// B, must learn A from piecemeal's `ut_pex` message and dial it.
#[test]
fn libtorrent_finds_the_seeder_through_piecemeals_peer_exchange() {
    let lab = Lab::new("8pl", 3);
    let data = pex_data(&lab);
    let (h1, h2, h3) = (
        lab.host(1).clone(),
        lab.host(2).clone(),
        lab.host(3).clone(),
    );
    let a = pex_seeder(&lab, &h1, &data);
    let a_addr = h1.addr(LT_PORT);
    let b_dir = lab.dir("b");
    let b = piecemeal(
        &lab,
        &h2,
        "pm-b",
        &[
            "download",
            data.torrent.to_str().unwrap(),
            "-o",
            b_dir.to_str().unwrap(),
            "--peer",
            &a_addr,
            "--bind",
            &h2.ip.to_string(),
            "--port",
            &PM_PORT.to_string(),
            "--seed",
            "--verbose",
        ],
    );
    lab.wait_until(STARTUP, "piecemeal connects to the seeder", || {
        Ok(b.log_text().contains(&format!("{a_addr} handshake ok")))
    });
    let c_dir = lab.dir("c");
    let mut c = Lt::start(
        &lab,
        &h3,
        "lt-c",
        "download",
        &data.torrent,
        &c_dir,
        &["--peer", &h2.addr(PM_PORT)],
    );
    // piecemeal tells both: C learns A (10.99.0.1:6882) and A learns C
    // (10.99.0.3:6882, the listen port of C's extension handshake); the
    // first to dial wins, so either side may show the PEX source.
    let c_addr = h3.addr(LT_PORT);
    let took = lab.wait_until(TRANSFER, "A and C meet through piecemeal's PEX", || {
        Ok(lt_learnt_through_pex(&c, &a_addr) == Some(true)
            || lt_learnt_through_pex(&a, &c_addr) == Some(true))
    });
    eprintln!("libtorrent peers met through piecemeal's PEX in {took:?}");
    c.wait_done(&lab, TRANSFER);
    verify(&lab, &data, &c_dir, Empty::Required);
}

/// A: libtorrent seeds. B: libtorrent, given A. C: piecemeal, given only
/// B, must learn A from libtorrent's `ut_pex` message and dial it.
#[test]
fn piecemeal_finds_the_seeder_through_libtorrents_peer_exchange() {
    let lab = Lab::new("8lp", 3);
    let data = pex_data(&lab);
    let (h1, h2, h3) = (
        lab.host(1).clone(),
        lab.host(2).clone(),
        lab.host(3).clone(),
    );
    let _a = pex_seeder(&lab, &h1, &data);
    let a_addr = h1.addr(LT_PORT);
    let b_dir = lab.dir("b");
    let b = Lt::start(
        &lab,
        &h2,
        "lt-b",
        "download",
        &data.torrent,
        &b_dir,
        &["--peer", &a_addr, "--seed"],
    );
    // Data flows, so the connection is past its handshakes: libtorrent's
    // first PEX message lists only such peers (a diff follows a minute
    // later).
    lab.wait_until(STARTUP, "libtorrent downloads from the seeder", || {
        Ok(b.status().downloaded > 0)
    });
    let c_dir = lab.dir("c");
    let mut c = piecemeal(
        &lab,
        &h3,
        "pm-c",
        &[
            "download",
            data.torrent.to_str().unwrap(),
            "-o",
            c_dir.to_str().unwrap(),
            "--peer",
            &h2.addr(LT_PORT),
            "--bind",
            &h3.ip.to_string(),
            "--port",
            &PM_PORT.to_string(),
            "--verbose",
        ],
    );
    let took = lab.wait_until(TRANSFER, "piecemeal learns the seeder by PEX", || {
        let log = c.log_text();
        if log.contains("ut_pex: ") && log.contains(&format!("{a_addr} handshake ok")) {
            return Ok(true);
        }
        match c.child.try_wait().unwrap() {
            Some(st) => Err(format!("piecemeal exited ({st}) without meeting A")),
            None => Ok(false),
        }
    });
    eprintln!("piecemeal learnt the seeder through libtorrent's PEX in {took:?}");
    wait_piecemeal_done(&lab, &mut c, TRANSFER);
    verify(&lab, &data, &c_dir, Empty::Required);
}

// ---------------------------------------------------------------------------
// 9. The DHT (BEP 5): no tracker, no named peer. A piecemeal DHT node on
//    host 1 is everybody's bootstrap node; libtorrent's DHT runs with its
//    address restrictions relaxed (`lt_driver.py --dht-node`). piecemeal
//    downloads from a magnet link with the info-hash alone; the torrent
//    file libtorrent gets has no tracker.

/// `piecemeal dht` on `host` (the lab's bootstrap node).
fn piecemeal_dht_node(lab: &Lab, host: &Host) -> common::Proc {
    piecemeal(
        lab,
        host,
        "pm-dht",
        &[
            "dht",
            "--bind",
            &host.ip.to_string(),
            "--port",
            &PM_PORT.to_string(),
            "--stats-every",
            "1",
            "--verbose",
        ],
    )
}

/// Wait until the bootstrap node stores an announced peer.
fn wait_stored_peer(lab: &Lab, node: &common::Proc) {
    lab.wait_until(STARTUP, "an announce reaches the DHT node", || {
        let line = node.last_line();
        Ok(line.starts_with("@dht ") && !line.contains(" 0 stored peers"))
    });
}

#[test]
fn piecemeal_finds_a_libtorrent_seeder_through_the_dht_from_a_magnet_link() {
    let lab = Lab::new("dht1", 3);
    let data = make_data(&lab, Set::Medium, &[]);
    let (h1, h2, h3) = (
        lab.host(1).clone(),
        lab.host(2).clone(),
        lab.host(3).clone(),
    );
    let node = piecemeal_dht_node(&lab, &h1);
    let boot = h1.addr(PM_PORT);
    let _lt = Lt::start(
        &lab,
        &h2,
        "lt-seed",
        "seed",
        &data.torrent,
        &data.seed_root,
        &["--dht-node", &boot],
    );
    wait_stored_peer(&lab, &node);
    // A magnet link with the info-hash alone: no tracker, no peer.
    let meta = piecemeal::metainfo::Metainfo::load(&data.torrent).unwrap();
    let link = format!("magnet:?xt=urn:btih:{}&dn=medium.bin", meta.info_hash_hex());
    let dl = lab.dir("dl");
    let (ip, port) = (h3.ip.to_string(), PM_PORT.to_string());
    let start = Instant::now();
    let mut pm = piecemeal(
        &lab,
        &h3,
        "pm-leech",
        &[
            "download",
            &link,
            "-o",
            dl.to_str().unwrap(),
            "--bind",
            &ip,
            "--port",
            &port,
            "--dht-node",
            &boot,
            "--verbose",
        ],
    );
    let first_byte = lab.wait_until(TRANSFER, "piecemeal's first byte", || {
        Ok(pm.status().downloaded > 0)
    });
    wait_piecemeal_done(&lab, &mut pm, TRANSFER);
    let took = start.elapsed();
    verify(&lab, &data, &dl, Empty::Required);
    eprintln!(
        "DHT: piecemeal, given only a magnet link, found the libtorrent seeder: first byte after {first_byte:?}, done after {took:?}"
    );
}

#[test]
fn libtorrent_finds_a_piecemeal_seeder_through_the_dht_and_downloads() {
    let lab = Lab::new("dht2", 3);
    let data = make_data(&lab, Set::Medium, &[]);
    let (h1, h2, h3) = (
        lab.host(1).clone(),
        lab.host(2).clone(),
        lab.host(3).clone(),
    );
    let node = piecemeal_dht_node(&lab, &h1);
    let boot = h1.addr(PM_PORT);
    let (ip, port) = (h2.ip.to_string(), PM_PORT.to_string());
    let _pm = piecemeal(
        &lab,
        &h2,
        "pm-seed",
        &[
            "seed",
            data.torrent.to_str().unwrap(),
            "-o",
            data.seed_root.to_str().unwrap(),
            "--bind",
            &ip,
            "--port",
            &port,
            "--dht-node",
            &boot,
            "--verbose",
        ],
    );
    wait_stored_peer(&lab, &node);
    let dl = lab.dir("dl");
    let start = Instant::now();
    let mut lt = Lt::start(
        &lab,
        &h3,
        "lt-leech",
        "download",
        &data.torrent,
        &dl,
        &["--dht-node", &boot],
    );
    let first_byte = lab.wait_until(TRANSFER, "libtorrent's first byte", || {
        // After `@done` the driver's last line is no `@status` line.
        Ok(lt.done() || lt.status().downloaded > 0)
    });
    lt.wait_done(&lab, TRANSFER);
    let took = start.elapsed();
    verify(&lab, &data, &dl, Empty::Required);
    eprintln!(
        "DHT: libtorrent found the piecemeal seeder: first byte after {first_byte:?}, done after {took:?}"
    );
}
