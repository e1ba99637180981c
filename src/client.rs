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
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Everything a download or seed needs.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    pub torrent: PathBuf,
    /// Further torrents run in the same session (same folder, port, peers
    /// and limits; the cache budget is shared).
    pub more: Vec<PathBuf>,
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
    let paths: Vec<&PathBuf> = std::iter::once(&opts.torrent).chain(&opts.more).collect();
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
        keep_running: false,
    };
    let mut session = Session::new(sopts)
        .map_err(|e| Error::Runtime(format!("cannot listen on {listen}: {e}")))?;
    for (t, tiers) in torrents {
        let topts = TorrentOptions {
            peers: opts.peers.clone(),
            tracker_tiers: if opts.no_tracker { Vec::new() } else { tiers },
            exit_when_done: opts.download && !opts.keep_seeding,
            seed_ratio: opts.seed_ratio,
            seed_time: opts.seed_time,
        };
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

/// Download or seed until done or stopped.
pub fn run(opts: &ClientOptions) -> Result<Outcome, Error> {
    let mut session = prepare(opts)?;
    session
        .run()
        .map_err(|e| Error::Runtime(format!("event loop failed: {e}")))
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
