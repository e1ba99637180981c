//! The public entry points: download or seed one torrent, or run the
//! tracker, each on one event loop. The CLI and the tests call these.

use crate::config::Config;
use crate::error::Error;
use crate::event_loop::{Outcome, Session, SessionOptions, StopHandle, TorrentOptions};
use crate::metainfo::Metainfo;
use crate::peer::make_peer_id;
use crate::storage::{Disk, FileSlot, Layout, OpenMode, recheck};
use crate::torrent::{Torrent, TorrentParts};
use crate::tracker::ServerConfig;
use log::info;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Everything a download or seed needs.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    pub torrent: PathBuf,
    /// Further torrents run in the same session (same folder, port, peers
    /// and limits; the cache budget is shared).
    pub more: Vec<PathBuf>,
    /// Keep every .torrent in this folder running (see [`watch_folder`]).
    pub watch: Option<PathBuf>,
    /// Folder the torrent's data lives in (downloaded to, or seeded from).
    pub dir: PathBuf,
    /// Download missing pieces (else: seed what is on disk).
    pub download: bool,
    /// After downloading, keep seeding (until stopped, ratio or time).
    pub keep_seeding: bool,
    /// Where to accept peers.
    pub listen: SocketAddr,
    pub bind_ip: Option<IpAddr>,
    pub peers: Vec<SocketAddr>,
    /// Do not announce to the torrent's trackers.
    pub no_tracker: bool,
    /// Also run the built-in tracker on this port.
    pub tracker_port: Option<u16>,
    pub seed_ratio: Option<f64>,
    pub seed_time: Option<Duration>,
    pub progress: crate::progress::ProgressMode,
    pub config: Config,
}

impl ClientOptions {
    /// Defaults for a torrent file and a data folder.
    pub fn new(
        torrent: impl Into<PathBuf>,
        dir: impl Into<PathBuf>,
        download: bool,
    ) -> ClientOptions {
        ClientOptions {
            torrent: torrent.into(),
            more: Vec::new(),
            watch: None,
            dir: dir.into(),
            download,
            keep_seeding: false,
            listen: SocketAddr::from(([0, 0, 0, 0], 6881)),
            bind_ip: None,
            peers: Vec::new(),
            no_tracker: false,
            tracker_port: None,
            seed_ratio: None,
            seed_time: None,
            progress: crate::progress::ProgressMode::Off,
            config: Config::default(),
        }
    }
}

/// The file layout of a torrent: the files that are stored. Padding and
/// symbolic links (BEP 47) are left out, so their paths are never joined to
/// the download folder; padding is the layout's zeros.
pub fn layout_of(meta: &Metainfo) -> Layout {
    let files = meta
        .info
        .files
        .iter()
        .enumerate()
        .filter(|(_, f)| f.is_stored())
        .map(|(i, f)| FileSlot {
            path: meta.file_rel_path(i),
            offset: f.offset,
            len: f.length,
            executable: f.attr.executable,
        })
        .collect();
    Layout::with_padding(files, meta.info.total_len)
}

fn seed_from_clock() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ ((std::process::id() as u64) << 32) ^ 0x9e37_79b9_7f4a_7c15
}

/// Load a torrent, open and re-check its data: a core ready to join a
/// session, and its trackers.
fn load_torrent(
    path: &Path,
    opts: &ClientOptions,
    config: Config,
    our_id: [u8; 20],
    seed: u64,
) -> Result<(Torrent, Vec<Vec<String>>), Error> {
    let meta = Metainfo::load(path).map_err(|e| Error::Input(e.to_string()))?;
    let geometry = meta.geometry();
    let mode = if opts.download {
        OpenMode::Create
    } else {
        OpenMode::ReadOnly
    };
    let disk =
        Disk::open(&opts.dir, layout_of(&meta), mode).map_err(|e| Error::Runtime(e.to_string()))?;
    let t0 = Instant::now();
    let have = recheck(&disk, &geometry, &meta.info.pieces);
    info!(
        "{}: {} of {} pieces already verified on disk (checked in {:.2?})",
        meta.info.name,
        have.count(),
        geometry.num_pieces,
        t0.elapsed()
    );
    if !opts.download && !have.is_full() {
        log::warn!(
            "seeding {} with {} of {} pieces present in {}",
            meta.info.name,
            have.count(),
            geometry.num_pieces,
            opts.dir.display()
        );
    }
    let parts = TorrentParts {
        info_hash: meta.info_hash,
        our_id,
        geometry,
        hashes: meta.info.pieces.clone(),
        disk,
        have,
    };
    Ok((
        Torrent::new(parts, config, seed, Instant::now()),
        meta.tracker_tiers(),
    ))
}

/// Load the torrents, open and re-check their data, bind, and return a
/// session ready to `run`. Several torrents share one session: one listen
/// port, one peer id, one connection cap, and the cache budget split
/// between them.
pub fn prepare(opts: &ClientOptions) -> Result<Session, Error> {
    let seed = seed_from_clock();
    let our_id = make_peer_id(seed);
    // An empty first path means none (a watched folder brings them).
    let paths: Vec<&PathBuf> = std::iter::once(&opts.torrent)
        .filter(|p| !p.as_os_str().is_empty())
        .chain(&opts.more)
        .collect();
    let mut config = opts.config.clone();
    config.cache_bytes /= paths.len().max(1);
    // Rate limits are the session's, shared by all torrents.
    config.upload_limit = None;
    config.download_limit = None;
    let mut torrents = Vec::with_capacity(paths.len());
    for (i, path) in paths.iter().enumerate() {
        torrents.push(load_torrent(
            path,
            opts,
            config.clone(),
            our_id,
            seed ^ (i as u64).wrapping_mul(0x9e37_79b9),
        )?);
    }
    let tracker_server = opts.tracker_port.map(|port| {
        let ip = opts.bind_ip.unwrap_or(IpAddr::from([0, 0, 0, 0]));
        (SocketAddr::new(ip, port), ServerConfig::default())
    });
    let mut listen = opts.listen;
    if let Some(ip) = opts.bind_ip {
        listen.set_ip(ip);
    }
    let sopts = SessionOptions {
        listen: Some(listen),
        bind_ip: opts.bind_ip,
        tracker_server,
        progress: opts.progress,
        limits: opts.config.clone(),
        keep_running: opts.watch.is_some(),
    };
    let mut session = Session::new(sopts)
        .map_err(|e| Error::Runtime(format!("cannot listen on {listen}: {e}")))?;
    for (t, tiers) in torrents {
        let topts = torrent_options(opts, tiers);
        if let Err(t) = session.add_torrent(t, topts) {
            return Err(Error::Input(format!(
                "the same torrent twice (info-hash {})",
                t.info_hash
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            )));
        }
    }
    Ok(session)
}

/// How a torrent of these options runs in the session.
fn torrent_options(opts: &ClientOptions, tiers: Vec<Vec<String>>) -> TorrentOptions {
    TorrentOptions {
        peers: opts.peers.clone(),
        tracker_tiers: if opts.no_tracker { Vec::new() } else { tiers },
        exit_when_done: opts.download && !opts.keep_seeding && opts.watch.is_none(),
        seed_ratio: opts.seed_ratio,
        seed_time: opts.seed_time,
    }
}

/// Download or seed until done or stopped (with a watched folder: until
/// stopped).
pub fn run(opts: &ClientOptions) -> Result<Outcome, Error> {
    let mut session = prepare(opts)?;
    let watcher = opts.watch.clone().map(|dir| {
        let handle = session.handle();
        let stop = Arc::new(AtomicBool::new(false));
        let (o, s) = (opts.clone(), stop.clone());
        let join = std::thread::spawn(move || watch_folder(&dir, &o, &handle, &s));
        (stop, join)
    });
    let outcome = session
        .run()
        .map_err(|e| Error::Runtime(format!("event loop failed: {e}")));
    if let Some((stop, join)) = watcher {
        stop.store(true, Ordering::SeqCst);
        let _ = join.join();
    }
    outcome
}

/// How often a watched folder is listed.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// Keep the session's torrents in step with the `.torrent` files of `dir`
/// until `stop`: a file that appears is loaded, its data opened, and handed
/// to the session, which checks the data in slices between loop turns; a
/// file that disappears has its torrent removed; a file that is not a valid
/// torrent is reported once (until it changes) and skipped. Runs on its own
/// thread, so loading and opening files never block the loop; the folder is
/// polled every [`WATCH_INTERVAL`].
pub fn watch_folder(dir: &Path, opts: &ClientOptions, handle: &StopHandle, stop: &AtomicBool) {
    let mut running: HashMap<PathBuf, [u8; 20]> = HashMap::new();
    let mut broken: HashMap<PathBuf, Option<std::time::SystemTime>> = HashMap::new();
    let seed = seed_from_clock();
    while !stop.load(Ordering::SeqCst) {
        let mut seen = HashSet::new();
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) => {
                log::warn!("cannot list the watched folder {}: {e}", dir.display());
                sleep_unless(stop, WATCH_INTERVAL);
                continue;
            }
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "torrent") {
                continue;
            }
            seen.insert(path.clone());
            if running.contains_key(&path) {
                continue;
            }
            let mtime = entry.metadata().ok().and_then(|m| m.modified().ok());
            if broken.get(&path) == Some(&mtime) {
                continue;
            }
            match load_for_session(&path, opts, seed) {
                Ok((t, tiers)) => {
                    info!("watch: adding {}", path.display());
                    running.insert(path.clone(), t.info_hash);
                    broken.remove(&path);
                    handle.add(t, torrent_options(opts, tiers));
                }
                Err(e) => {
                    log::warn!("watch: skipping {}: {e}", path.display());
                    broken.insert(path, mtime);
                }
            }
        }
        running.retain(|path, hash| {
            let keep = seen.contains(path);
            if !keep {
                info!("watch: {} is gone; removing its torrent", path.display());
                handle.remove(*hash);
            }
            keep
        });
        broken.retain(|path, _| seen.contains(path));
        sleep_unless(stop, WATCH_INTERVAL);
    }
}

/// Sleep for `d`, waking early once `stop` is set.
fn sleep_unless(stop: &AtomicBool, d: Duration) {
    let end = Instant::now() + d;
    while !stop.load(Ordering::SeqCst) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Load a torrent and open its data for a running session: the data is
/// checked by the session, in slices.
fn load_for_session(
    path: &Path,
    opts: &ClientOptions,
    seed: u64,
) -> Result<(Torrent, Vec<Vec<String>>), Error> {
    let meta = Metainfo::load(path).map_err(|e| Error::Input(e.to_string()))?;
    let mode = if opts.download {
        OpenMode::Create
    } else {
        OpenMode::ReadOnly
    };
    let disk =
        Disk::open(&opts.dir, layout_of(&meta), mode).map_err(|e| Error::Runtime(e.to_string()))?;
    let mut config = opts.config.clone();
    config.upload_limit = None;
    config.download_limit = None;
    let geometry = meta.geometry();
    let parts = TorrentParts {
        info_hash: meta.info_hash,
        our_id: make_peer_id(seed),
        geometry,
        hashes: meta.info.pieces.clone(),
        disk,
        have: crate::bitfield::Bitfield::new(geometry.num_pieces),
    };
    let seed = seed ^ u64::from_le_bytes(meta.info_hash[..8].try_into().unwrap_or([0; 8]));
    Ok((
        Torrent::new_checking(parts, config, seed, Instant::now()),
        meta.tracker_tiers(),
    ))
}

/// Options of the stand-alone tracker.
#[derive(Clone, Debug)]
pub struct TrackerOptions {
    pub listen: SocketAddr,
    pub config: ServerConfig,
}

/// Bind the stand-alone tracker; `run` it on the returned session.
pub fn prepare_tracker(opts: &TrackerOptions) -> Result<Session, Error> {
    let sopts = SessionOptions {
        tracker_server: Some((opts.listen, opts.config.clone())),
        ..SessionOptions::default()
    };
    Session::new(sopts)
        .map_err(|e| Error::Runtime(format!("cannot listen on {}: {e}", opts.listen)))
}

/// Read the info-hashes of torrent files (for the tracker's allow-list).
pub fn info_hashes(paths: &[PathBuf]) -> Result<Vec<[u8; 20]>, Error> {
    paths
        .iter()
        .map(|p: &PathBuf| {
            Metainfo::load(Path::new(p))
                .map(|m| m.info_hash)
                .map_err(|e| Error::Input(e.to_string()))
        })
        .collect()
}

/// Stop handle re-export for callers that run sessions on threads.
pub type Stopper = StopHandle;
