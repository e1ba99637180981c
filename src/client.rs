//! The public entry points: download or seed one torrent, or run the
//! tracker, each on one event loop. The CLI and the tests call these.

use crate::config::Config;
use crate::error::Error;
use crate::event_loop::{Outcome, Session, SessionOptions, StopHandle};
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

/// Load the torrent, open and re-check its data, bind, and return a
/// session ready to `run`.
pub fn prepare(opts: &ClientOptions) -> Result<Session, Error> {
    let meta = Metainfo::load(&opts.torrent).map_err(|e| Error::Input(e.to_string()))?;
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
    let seed = seed_from_clock();
    let our_id = make_peer_id(seed);
    let parts = TorrentParts {
        info_hash: meta.info_hash,
        our_id,
        geometry,
        hashes: meta.info.pieces.clone(),
        disk,
        have,
    };
    let torrent = Torrent::new(parts, opts.config.clone(), seed, Instant::now());
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
        peers: opts.peers.clone(),
        tracker_tiers: if opts.no_tracker {
            Vec::new()
        } else {
            meta.tracker_tiers()
        },
        tracker_server,
        exit_when_done: opts.download && !opts.keep_seeding,
        seed_ratio: opts.seed_ratio,
        seed_time: opts.seed_time,
        progress: opts.progress,
    };
    Session::new(Some(torrent), sopts)
        .map_err(|e| Error::Runtime(format!("cannot listen on {listen}: {e}")))
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
    Session::new(None, sopts)
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
