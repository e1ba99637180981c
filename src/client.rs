//! The public entry points: download or seed one torrent, or run the
//! tracker, each on one event loop. The CLI and the tests call these.

use crate::bitfield::Bitfield;
use crate::config::Config;
use crate::error::Error;
use crate::event_loop::{
    Listeners, MagnetStart, Outcome, Session, SessionOptions, StopHandle, TorrentOptions,
    bind_listener, bind_udp, stop_requested,
};
use crate::ids::PieceIndex;
use crate::metainfo::{Metainfo, MetainfoError};
use crate::output::plain_io;
use crate::peer::make_peer_id;
use crate::progress::Progress;
use crate::storage::{
    Allocation, Disk, FileSlot, Layout, OpenMode, StorageError, recheck_with, resume,
};
use crate::torrent::{Torrent, TorrentParts};
use crate::tracker::ServerConfig;
use log::info;
use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The peer port used when none is given, and the ports tried after it
/// when it is taken.
pub const DEFAULT_PORTS: std::ops::RangeInclusive<u16> = 6881..=6889;

/// Everything a download or seed needs.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// The torrent (an empty path: none, a watched folder brings them).
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
    /// When `listen`'s port is taken, try the others of [`DEFAULT_PORTS`]
    /// (for the default port; a port the user chose is not changed).
    pub port_fallback: bool,
    /// Files in the way (another size, none of the torrent's data) are
    /// overwritten instead of refused.
    pub overwrite: bool,
    /// How downloaded files get their disk space (`--sparse`).
    pub allocation: Allocation,
    /// Folder of the resume files (`--state-dir`; `None`: the data's
    /// folder). See [`crate::storage::resume`].
    pub resume_dir: Option<PathBuf>,
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
    /// How tracker host names are resolved (None: the system resolver).
    pub lookup: Option<crate::event_loop::LookupFn>,
    /// CA certificates (PEM files) trusted for `https://` trackers besides
    /// the system's (`--ca-file`).
    pub ca_files: Vec<PathBuf>,
    /// Run a DHT node for the public torrents (None: no DHT).
    pub dht: Option<crate::event_loop::DhtOptions>,
    /// A magnet link's torrent stops once its metadata is known (`info`).
    pub metadata_only: bool,
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
            port_fallback: false,
            overwrite: false,
            allocation: Allocation::Reserve,
            resume_dir: None,
            bind_ip: None,
            peers: Vec::new(),
            no_tracker: false,
            tracker_port: None,
            seed_ratio: None,
            seed_time: None,
            progress: crate::progress::ProgressMode::Off,
            config: Config::default(),
            lookup: None,
            ca_files: Vec::new(),
            dht: None,
            metadata_only: false,
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

/// Read a .torrent, with errors that name the file and say what is wrong
/// in plain words. Magnet links (which `download`, `info` and `scrape` take
/// before this) and URLs are refused.
pub fn load_torrent(path: &Path) -> Result<Metainfo, Error> {
    let shown = path.display();
    let text = path.to_string_lossy();
    if text.starts_with("magnet:") {
        return Err(Error::Input(
            "a magnet link is not a .torrent file: give the path of one (download, info and \
             scrape take magnet links)"
                .into(),
        ));
    }
    if let Some((scheme, _)) = text.split_once("://")
        && !scheme.is_empty()
        && scheme.chars().all(|c| c.is_ascii_alphabetic())
    {
        return Err(Error::Input(format!(
            "URLs are not supported yet: download {shown} and give the path of the .torrent file"
        )));
    }
    match Metainfo::load(path) {
        Ok(m) => Ok(m),
        Err(MetainfoError::Io(_, e)) => Err(Error::Input(match e.kind() {
            io::ErrorKind::IsADirectory => format!("{shown} is a folder, not a .torrent file"),
            _ => format!("cannot read {shown}: {}", plain_io(&e)),
        })),
        Err(e @ MetainfoError::Bencode(_)) => {
            let mut first = [0u8; 1];
            let read = std::fs::File::open(path)
                .and_then(|mut f| std::io::Read::read(&mut f, &mut first))
                .unwrap_or(0);
            Err(Error::Input(match (read, first[0]) {
                (0, _) => format!("{shown} is empty, not a .torrent file ({e})"),
                // Every torrent is a bencoded dictionary: `d...e`.
                (_, b'd') => format!("{shown}: {e}"),
                _ => format!("{shown} does not look like a .torrent file ({e})"),
            }))
        }
        Err(e) => Err(Error::Input(format!("{shown}: {e}"))),
    }
}

/// A storage failure as a fatal error, in plain words.
fn storage_error(e: StorageError) -> Error {
    Error::Runtime(format!(
        "cannot {} {}: {}",
        e.op,
        e.path.display(),
        plain_io(&e.source)
    ))
}

/// Bind the peer port (trying the rest of [`DEFAULT_PORTS`] when the
/// default one is taken) and the built-in tracker's port, before anything
/// slow happens; each error names its port.
fn bind_ports(opts: &ClientOptions) -> Result<Listeners, Error> {
    let mut addr = opts.listen;
    if let Some(ip) = opts.bind_ip {
        addr.set_ip(ip);
    }
    let peer = match bind_listener(addr) {
        Ok(l) => l,
        Err(e) if e.kind() == io::ErrorKind::AddrInUse && opts.port_fallback => {
            let taken = addr.port();
            let next = DEFAULT_PORTS.filter(|&p| p != taken).find_map(|p| {
                let a = SocketAddr::new(addr.ip(), p);
                bind_listener(a).ok().map(|l| (p, l))
            });
            let Some((port, l)) = next else {
                return Err(Error::Runtime(format!(
                    "cannot listen for peers: ports {}-{} are all in use; choose one with \
                     --port (0 = any free port)",
                    DEFAULT_PORTS.start(),
                    DEFAULT_PORTS.end()
                )));
            };
            info!("port {taken} is in use; listening for peers on port {port} instead");
            l
        }
        Err(e) => {
            return Err(Error::Runtime(format!(
                "cannot listen for peers on {addr}: {}",
                plain_io(&e)
            )));
        }
    };
    let tracker = match opts.tracker_port {
        Some(port) => {
            let a = SocketAddr::new(addr.ip(), port);
            Some(bind_listener(a).map_err(|e| {
                Error::Runtime(format!(
                    "cannot run the tracker on {a} (--tracker-port {port}): {}",
                    plain_io(&e)
                ))
            })?)
        }
        None => None,
    };
    // The built-in tracker also answers UDP (BEP 15) on the same port.
    let tracker_udp = match &tracker {
        Some(l) => {
            let a = l.local_addr().map_err(|e| Error::Runtime(plain_io(&e)))?;
            Some(bind_udp(a).map_err(|e| {
                Error::Runtime(format!(
                    "cannot run the UDP tracker on {a} (--tracker-port {}): {}",
                    a.port(),
                    plain_io(&e)
                ))
            })?)
        }
        None => None,
    };
    Ok(Listeners {
        peer: Some(peer),
        tracker,
        tracker_udp,
    })
}

/// Files of `layout` already in `dir` with a size other than the
/// torrent's, as `(index, size)`. Only looks (no file is opened).
fn odd_sized(dir: &Path, layout: &Layout) -> Vec<(usize, u64)> {
    layout
        .files
        .iter()
        .enumerate()
        .filter_map(|(i, f)| {
            let m = std::fs::symlink_metadata(dir.join(&f.path)).ok()?;
            (m.is_file() && m.len() > 0 && m.len() != f.len).then_some((i, m.len()))
        })
        .collect()
}

/// Does any verified piece hold bytes of `file`?
fn any_piece_of(file: &FileSlot, have: &Bitfield, piece_len: u64) -> bool {
    if file.len == 0 || piece_len == 0 {
        return false;
    }
    let first = file.offset / piece_len;
    let last = (file.offset + file.len - 1) / piece_len;
    (first..=last).any(|p| u32::try_from(p).is_ok_and(|p| have.get(PieceIndex(p))))
}

/// Open the data folder of a download where files of other sizes are in
/// the way (`odd`, from [`odd_sized`]): check first without changing
/// anything (drawing the check's progress), so that a file is resumed only
/// if some of it is the torrent's data, and refuse the others (unless
/// `--overwrite`) before anything is created or resized.
fn open_in_the_way(
    opts: &ClientOptions,
    meta: &Metainfo,
    odd: &[(usize, u64)],
    progress: &mut Progress,
) -> Result<(Disk, Bitfield), Error> {
    let geometry = meta.geometry();
    let layout = layout_of(meta);
    let have = {
        let disk =
            Disk::open(&opts.dir, layout.clone(), OpenMode::ReadOnly).map_err(storage_error)?;
        let total = geometry.total_len;
        let have = recheck_with(&disk, &geometry, &meta.info.pieces, |done| {
            let now = Instant::now();
            if progress.due(now) {
                progress.checking(done, total, geometry.num_pieces, now);
            }
            !stop_requested()
        });
        if stop_requested() {
            return Err(Error::Stopped(
                "stopped while checking the data on disk".into(),
            ));
        }
        have
    };
    let in_the_way: Vec<(&FileSlot, u64)> = odd
        .iter()
        .filter_map(|&(i, size)| {
            let f = layout.files.get(i)?;
            let longer = size > f.len;
            let foreign = !any_piece_of(f, &have, u64::from(geometry.piece_len));
            (longer || foreign).then_some((f, size))
        })
        .collect();
    if let Some(&(f, size)) = in_the_way.first()
        && !opts.overwrite
    {
        let path = opts.dir.join(&f.path);
        let what = if any_piece_of(f, &have, u64::from(geometry.piece_len)) {
            "is longer than the torrent's file"
        } else {
            "has another size than the torrent's file and none of its data"
        };
        let more = match in_the_way.len() - 1 {
            0 => String::new(),
            1 => " (and 1 more file)".to_string(),
            n => format!(" (and {n} more files)"),
        };
        return Err(Error::Input(format!(
            "{} ({size} bytes) {what} ({} bytes){more}: not overwriting it. Move it away, \
             choose another folder with -o, or give --overwrite",
            path.display(),
            f.len
        )));
    }
    for (f, size) in &in_the_way {
        log::warn!(
            "overwriting {} ({size} bytes; the torrent's file has {} bytes)",
            opts.dir.join(&f.path).display(),
            f.len
        );
    }
    let disk = if opts.overwrite {
        Disk::open_overwriting(&opts.dir, layout, opts.allocation)
    } else {
        Disk::open_allocating(&opts.dir, layout, OpenMode::Create, opts.allocation)
    }
    .map_err(storage_error)?;
    // Creating only resized files (zeros past their old end, or cut past
    // the torrent's end): the pieces verified above are still there.
    Ok((disk, have))
}

/// A torrent ready to join a session: its core (which checks its data in
/// the loop, a slice at a time), its files, trackers, and for a seed the
/// message that drops it when none of its data is there.
struct Loaded {
    name: String,
    t: Torrent,
    disk: Disk,
    tiers: Vec<Vec<String>>,
    nothing_to_seed: Option<String>,
    /// Peers named by the source itself (a magnet link's `x.pe`).
    peers: Vec<SocketAddr>,
    /// The same, by host name (looked up by the session).
    peer_names: Vec<(String, u16)>,
    /// Where its resume data goes on a clean stop (`None`: a magnet link).
    resume_file: Option<PathBuf>,
    magnet: Option<MagnetStart>,
}

/// Load a torrent and open its data. The data is checked by the session,
/// between loop turns, so the torrents of a run start one by one as their
/// checks end instead of all waiting for the last; only a download with
/// files of other sizes in the way is checked first (here, drawing the
/// check's progress), to decide whether they may be resized.
fn load(
    path: &Path,
    opts: &ClientOptions,
    config: Config,
    our_id: [u8; 20],
    seed: u64,
    progress: &mut Progress,
) -> Result<Loaded, Error> {
    if let Some(link) = path.to_str().filter(|s| crate::magnet::is_magnet(s)) {
        return load_magnet(link, opts, config, our_id, seed);
    }
    let meta = load_torrent(path)?;
    if !opts.download && !opts.dir.exists() {
        return Err(Error::Input(format!(
            "nothing to seed: {} does not exist (give the folder that holds {} with -o)",
            opts.dir.display(),
            meta.info.name
        )));
    }
    let geometry = meta.geometry();
    let layout = layout_of(&meta);
    let seed = seed ^ u64::from_le_bytes(meta.info_hash[..8].try_into().unwrap_or([0; 8]));
    let odd = if opts.download {
        odd_sized(&opts.dir, &layout)
    } else {
        Vec::new()
    };
    let now = Instant::now();
    let resume_file = resume::file_in(
        opts.resume_dir.as_deref().unwrap_or(&opts.dir),
        &meta.info_hash,
    );
    // Read (and removed) before any file is opened: a download's may be
    // resized. Files in the way of other sizes never match it.
    let resumed = resume::take(
        &resume_file,
        &meta.info_hash,
        geometry.num_pieces,
        &opts.dir,
        &layout,
    );
    let (t, disk) = if odd.is_empty() {
        let mode = if opts.download {
            OpenMode::Create
        } else {
            OpenMode::ReadOnly
        };
        let disk = Disk::open_allocating(&opts.dir, layout, mode, opts.allocation)
            .map_err(storage_error)?;
        match resumed {
            Ok(Some(have)) => {
                info!(
                    "{}: {} of {} pieces taken from the resume data of the last clean stop \
                     (files unchanged since; not checked again)",
                    meta.info.name,
                    have.count(),
                    geometry.num_pieces
                );
                (
                    Torrent::new(TorrentParts::of(&meta, have, our_id), config, seed, now),
                    disk,
                )
            }
            other => {
                if let Err(why) = other {
                    info!("{}: resume data not used ({why}): checking", meta.info.name);
                }
                let parts = TorrentParts::of(&meta, Bitfield::new(geometry.num_pieces), our_id);
                (Torrent::new_checking(parts, config, seed, now), disk)
            }
        }
    } else {
        let (disk, have) = open_in_the_way(opts, &meta, &odd, progress)?;
        info!(
            "{}: {} of {} pieces already verified on disk (checked in {:.2?})",
            meta.info.name,
            have.count(),
            geometry.num_pieces,
            now.elapsed()
        );
        let parts = TorrentParts::of(&meta, have, our_id);
        (Torrent::new(parts, config, seed, now), disk)
    };
    let nothing_to_seed = (!opts.download).then(|| {
        format!(
            "nothing to seed: none of {}'s data is in {} (0 of {} pieces verified); give the \
             folder that holds it with -o",
            meta.info.name,
            opts.dir.display(),
            geometry.num_pieces
        )
    });
    Ok(Loaded {
        name: meta.info.name.clone(),
        t,
        disk,
        tiers: meta.tracker_tiers(),
        nothing_to_seed,
        peers: Vec::new(),
        peer_names: Vec::new(),
        // A seed's folder is not ours to write in: its resume data goes
        // only to a --state-dir.
        resume_file: (opts.download || opts.resume_dir.is_some()).then_some(resume_file),
        magnet: None,
    })
}

/// A torrent from a magnet link: it fetches its metadata from peers (the
/// link's trackers and `x.pe` peers, `--peer`), then opens its files in
/// `opts.dir` as a download of a `.torrent` would; `opts.download` false:
/// it stops once the metadata is known (`info`).
fn load_magnet(
    link: &str,
    opts: &ClientOptions,
    config: Config,
    our_id: [u8; 20],
    seed: u64,
) -> Result<Loaded, Error> {
    let m = crate::magnet::Magnet::parse(link).map_err(|e| Error::Input(e.to_string()))?;
    if !opts.download && !opts.metadata_only {
        return Err(Error::Input(
            "a magnet link can be downloaded, not seeded: seeding needs the data and its \
             .torrent file"
                .into(),
        ));
    }
    let mut peers = Vec::new();
    let mut peer_names = Vec::new();
    for p in &m.peers {
        match p.socket_addr() {
            Some(a) => peers.push(a),
            None if peer_names.len() < crate::event_loop::MAX_PEER_NAMES => {
                peer_names.push((p.host.clone(), p.port));
            }
            None => log::warn!(
                "magnet link peer {}:{}: only the first {} host names are looked up",
                p.host,
                p.port,
                crate::event_loop::MAX_PEER_NAMES
            ),
        }
    }
    let seed = seed ^ u64::from_le_bytes(m.info_hash[..8].try_into().unwrap_or([0; 8]));
    let t = Torrent::new_magnet(m.info_hash, our_id, config, seed, Instant::now());
    // No files until the metadata says which.
    let disk = Disk::open(
        &opts.dir,
        Layout::with_padding(Vec::new(), 0),
        OpenMode::ReadOnly,
    )
    .map_err(storage_error)?;
    let tiers = m.tracker_tiers();
    Ok(Loaded {
        name: m
            .name
            .clone()
            .unwrap_or_else(|| crate::metainfo::hex(&m.info_hash)),
        t,
        disk,
        tiers: tiers.clone(),
        nothing_to_seed: None,
        peers,
        peer_names,
        resume_file: None,
        magnet: Some(MagnetStart {
            tiers,
            open: opts.download.then(|| open_data(opts)),
        }),
    })
}

/// How a magnet link's data is opened once its metadata is known: as a
/// download of the `.torrent` would be (files of other sizes in the way
/// are checked, then resumed or refused); files already there with data
/// are checked in the loop, an empty folder is not.
fn open_data(opts: &ClientOptions) -> crate::event_loop::OpenData {
    let opts = opts.clone();
    Arc::new(move |meta: &Metainfo| {
        let layout = layout_of(meta);
        let odd = odd_sized(&opts.dir, &layout);
        if !odd.is_empty() {
            let mut quiet = Progress::new(crate::progress::ProgressMode::Off);
            let (disk, have) =
                open_in_the_way(&opts, meta, &odd, &mut quiet).map_err(|e| e.to_string())?;
            return Ok((disk, Some(have)));
        }
        let existing = layout.files.iter().any(|f| {
            std::fs::symlink_metadata(opts.dir.join(&f.path))
                .is_ok_and(|m| m.is_file() && m.len() > 0)
        });
        let disk = Disk::open_allocating(&opts.dir, layout, OpenMode::Create, opts.allocation)
            .map_err(|e| storage_error(e).to_string())?;
        let have = (!existing).then(|| Bitfield::new(meta.geometry().num_pieces));
        Ok((disk, have))
    })
}

/// The torrents' configuration: rate limits and the cache budget are the
/// session's, shared by all (the session gives each torrent its share).
fn torrent_config(opts: &ClientOptions) -> Config {
    let mut config = opts.config.clone();
    config.upload_limit = None;
    config.download_limit = None;
    config
}

/// Load the torrents, bind the ports, open and re-check their data, and
/// return a session ready to `run`. Several torrents share one session:
/// one listen port, one peer id, one connection cap, the cache budget
/// split between them.
pub fn prepare(opts: &ClientOptions) -> Result<Session, Error> {
    if opts.dir.exists() && !opts.dir.is_dir() {
        return Err(Error::Input(format!(
            "-o {}: is a file; give the folder the data {} in",
            opts.dir.display(),
            if opts.download { "goes" } else { "is" }
        )));
    }
    // An empty first path means none (a watched folder brings them).
    let paths: Vec<&PathBuf> = std::iter::once(&opts.torrent)
        .filter(|p| !p.as_os_str().is_empty())
        .chain(&opts.more)
        .collect();
    let listeners = bind_ports(opts)?;
    let mut progress = Progress::new(opts.progress)
        .with_ratio_goal(opts.seed_ratio)
        .seeding_only(!opts.download);
    let seed = seed_from_clock();
    let our_id = make_peer_id(seed);
    let config = torrent_config(opts);
    let mut torrents = Vec::with_capacity(paths.len());
    for (i, path) in paths.iter().enumerate() {
        torrents.push(load(
            path,
            opts,
            config.clone(),
            our_id,
            seed ^ (i as u64).wrapping_mul(0x9e37_79b9),
            &mut progress,
        )?);
    }
    let tracker_server = opts.tracker_port.map(|port| {
        let ip = opts.bind_ip.unwrap_or(IpAddr::from([0, 0, 0, 0]));
        (SocketAddr::new(ip, port), ServerConfig::default())
    });
    // A bad --ca-file is an error now, not at the first https:// announce.
    let tls = if opts.ca_files.is_empty() {
        None
    } else {
        Some(
            crate::event_loop::tls_client_config(&opts.ca_files)
                .map_err(|e| Error::Input(format!("--ca-file {e}")))?,
        )
    };
    let sopts = SessionOptions {
        listen: None,
        bind_ip: opts.bind_ip,
        tracker_server,
        progress: opts.progress,
        limits: opts.config.clone(),
        keep_running: opts.watch.is_some(),
        lookup: opts.lookup.clone(),
        tls,
        dht: opts.dht.clone(),
    };
    let mut session = Session::with_listeners(sopts, listeners)
        .map_err(|e| Error::Runtime(format!("cannot start the event loop: {}", plain_io(&e))))?;
    session.set_progress(progress);
    for l in torrents {
        let (t, disk, topts) = torrent_options(opts, l);
        if let Err(t) = session.add_torrent(t, disk, topts) {
            return Err(Error::Input(format!(
                "the same torrent twice (info-hash {})",
                crate::metainfo::hex(&t.info_hash)
            )));
        }
    }
    Ok(session)
}

/// A loaded torrent's core, files and how it runs in the session with
/// these options.
fn torrent_options(opts: &ClientOptions, l: Loaded) -> (Torrent, Disk, TorrentOptions) {
    let mut peers = l.peers;
    peers.extend(
        opts.peers
            .iter()
            .filter(|p| !peers.contains(p))
            .collect::<Vec<_>>(),
    );
    let topts = TorrentOptions {
        name: l.name,
        nothing_to_seed: l.nothing_to_seed,
        peers,
        peer_names: l.peer_names,
        resume_file: l.resume_file,
        tracker_tiers: if opts.no_tracker { Vec::new() } else { l.tiers },
        exit_when_done: opts.download && !opts.keep_seeding && opts.watch.is_none(),
        seed_ratio: opts.seed_ratio,
        seed_time: opts.seed_time,
        magnet: l.magnet,
    };
    (l.t, l.disk, topts)
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
        .map_err(|e| Error::Runtime(format!("event loop failed: {}", plain_io(&e))));
    if let Some((stop, join)) = watcher {
        stop.store(true, Ordering::SeqCst);
        let _ = join.join();
    }
    // Every torrent dropped (nothing to seed): the run failed.
    let outcome = outcome?;
    let errors: Vec<&String> = outcome
        .torrents
        .iter()
        .filter_map(|o| o.error.as_ref())
        .collect();
    if errors.len() == outcome.torrents.len()
        && let Some(e) = errors.first()
    {
        return Err(Error::Input((*e).clone()));
    }
    Ok(outcome)
}

/// Fetch a magnet link's metadata from peers (`info magnet:…`): a session
/// of one torrent that ends once the metadata is verified, or after
/// `timeout`. Returns the `.torrent` file made of the metadata and the
/// link's trackers.
pub fn fetch_metadata(opts: &ClientOptions, timeout: Duration) -> Result<Vec<u8>, Error> {
    let mut opts = opts.clone();
    opts.download = false;
    opts.metadata_only = true;
    opts.more.clear();
    let mut session = prepare(&opts)?;
    let handle = session.handle();
    let over = Arc::new(AtomicBool::new(false));
    let timer = {
        let over = over.clone();
        std::thread::spawn(move || {
            sleep_unless(&over, timeout);
            if !over.load(Ordering::SeqCst) {
                handle.stop();
            }
        })
    };
    let outcome = session.run();
    over.store(true, Ordering::SeqCst);
    let _ = timer.join();
    let outcome =
        outcome.map_err(|e| Error::Runtime(format!("event loop failed: {}", plain_io(&e))))?;
    let t = outcome
        .torrents
        .into_iter()
        .next()
        .ok_or_else(|| Error::Runtime("no torrent".into()))?;
    if let Some(e) = t.error {
        return Err(Error::Input(e));
    }
    t.torrent_file.ok_or_else(|| {
        Error::Stopped(format!(
            "no peer sent the metadata within {} s",
            timeout.as_secs()
        ))
    })
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
    // A check this thread runs (a download with files of other sizes in
    // the way) draws nothing: the session's status line is the loop's.
    let mut quiet = Progress::new(crate::progress::ProgressMode::Off);
    while !stop.load(Ordering::SeqCst) {
        let mut seen = HashSet::new();
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) => {
                log::warn!(
                    "cannot list the watched folder {}: {}",
                    dir.display(),
                    plain_io(&e)
                );
                sleep_unless(stop, WATCH_INTERVAL);
                continue;
            }
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let is_magnet = path.extension().is_some_and(|e| e == "magnet");
            if path.extension().is_none_or(|e| e != "torrent") && !is_magnet {
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
            // A `.magnet` file holds one link.
            let source = if is_magnet {
                match std::fs::read(&path) {
                    Ok(b) if b.len() <= crate::magnet::MAX_MAGNET_LEN => {
                        PathBuf::from(String::from_utf8_lossy(&b).trim())
                    }
                    _ => {
                        log::warn!("watch: skipping {}: not a magnet link", path.display());
                        broken.insert(path, mtime);
                        continue;
                    }
                }
            } else {
                path.clone()
            };
            match load(
                &source,
                opts,
                torrent_config(opts),
                make_peer_id(seed),
                seed,
                &mut quiet,
            ) {
                Ok(l) => {
                    info!("watch: adding {}", path.display());
                    running.insert(path.clone(), l.t.info_hash);
                    broken.remove(&path);
                    let (t, disk, topts) = torrent_options(opts, l);
                    handle.add(t, disk, topts);
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
    Session::new(sopts).map_err(|e| {
        Error::Runtime(format!(
            "cannot run the tracker on {}: {}",
            opts.listen,
            plain_io(&e)
        ))
    })
}

/// Read the info-hashes of torrent files (for the tracker's allow-list).
pub fn info_hashes(paths: &[PathBuf]) -> Result<Vec<[u8; 20]>, Error> {
    paths
        .iter()
        .map(|p: &PathBuf| load_torrent(p).map(|m| m.info_hash))
        .collect()
}

/// Stop handle re-export for callers that run sessions on threads.
pub type Stopper = StopHandle;
